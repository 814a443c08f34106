//! The loadable library of Settle's `card-sim` payment-method plugin,
//! `libsettle_plugin_card_sim.so`.
//!
//! Its one job is to export the plugin, [`settle_plugin_card_sim_core::CardSimPlugin`], over the
//! Settle C ABI: [`settle_plugin::export_plugin!`] defines `settle_plugin_abi_version` and
//! `settle_plugin_vtable`, the two symbols Settle looks up when it loads a library from its
//! plugin directory (and `settle plugin check` when it checks one).
//!
//! The logic lives in the rlib crate `settle-plugin-card-sim-core` because Settle also links it
//! into its own binary as a built-in, and a crate that defines these symbols cannot be linked
//! there next to another that does. Its documentation lists the test card numbers.

settle_plugin::export_plugin!(settle_plugin_card_sim_core::CardSimPlugin::from_env);

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use settle_plugin::abi::{Buffer, CALL_OK};

    use super::*;

    #[test]
    fn the_library_exports_the_card_sim_plugin_over_the_abi() {
        assert_eq!(settle_plugin_abi_version(), settle_plugin::ABI_VERSION);
        // SAFETY: the exported function returns a pointer to a static table.
        let vtable = unsafe { &*settle_plugin_vtable() };
        assert_eq!(vtable.abi_version, settle_plugin::ABI_VERSION);
        let mut output = Buffer::empty();
        // SAFETY: as a host calls it: no input for the manifest, a writable output buffer.
        let code = unsafe { (vtable.manifest)(std::ptr::null(), 0, &mut output) };
        // SAFETY: the buffer was just written by the plugin; freed once, by its own table.
        let answer: Value = serde_json::from_slice(unsafe { output.as_slice() }).unwrap();
        unsafe { (vtable.free_buffer)(output) };
        assert_eq!(code, CALL_OK);
        assert_eq!(answer["ok"]["id"], "card-sim");
        assert_eq!(answer["ok"]["capabilities"], json!(["charge", "refund", "status"]));
    }
}
