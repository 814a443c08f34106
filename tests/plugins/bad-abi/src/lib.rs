//! A library that claims to be a Settle plugin of a future ABI version: a host must refuse it
//! after calling `settle_plugin_abi_version` and before touching anything else.
//!
//! It also exports a `settle_plugin_vtable` symbol, returning null, so that a host which looked
//! at the table before checking the version would be caught by its tests (it finds nothing
//! usable either way). It deliberately does not depend on the SDK.

/// An ABI version no Settle speaks.
pub const WRONG_ABI_VERSION: u32 = 999;

/// Reports the wrong ABI version.
#[unsafe(no_mangle)]
pub extern "C" fn settle_plugin_abi_version() -> u32 {
    WRONG_ABI_VERSION
}

/// Nothing usable: a null table.
#[unsafe(no_mangle)]
pub extern "C" fn settle_plugin_vtable() -> *const u8 {
    std::ptr::null()
}
