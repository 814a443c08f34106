//! A library that speaks the right Settle plugin ABI version but exports no function table
//! (`settle_plugin_vtable`): a host must refuse it with a clear reason, not crash.

/// Reports the right ABI version, and that is all this library does.
#[unsafe(no_mangle)]
pub extern "C" fn settle_plugin_abi_version() -> u32 {
    settle_plugin::ABI_VERSION
}
