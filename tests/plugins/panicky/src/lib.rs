//! A Settle plugin library that misbehaves on purpose, for the server's plugin-host tests.
//!
//! Its exports are written by hand rather than with `export_plugin!`, because one of its
//! answers must be bytes that the macro would never produce. Still, no panic ever unwinds out of
//! an exported function (that would abort the host), exactly as in a real plugin.
//!
//! - `manifest`: a proper manifest, id `panicky`, capabilities charge, refund and status, method
//!   types CARD and OTHER, any currency.
//! - `validate_config`: accepts anything.
//! - `charge`: chosen by `details.mode`:
//!   - `"panic"` or absent: panics with "panicky plugin: charge panicked on purpose" (caught:
//!     return code CALL_PANIC, code `PANIC`);
//!   - `"garbage"`: returns CALL_OK with the bytes `{not json`;
//!   - `"bad_code"`: returns the undefined code 42 with `{"ok":null}`;
//!   - `"wrong_shape"`: returns CALL_OK with `{"ok":{"status":"MAYBE"}}`, valid JSON that is not
//!     an outcome.
//! - `refund`: answers SUCCEEDED (reference `re_panicky`).
//! - `status`: sleeps 10 seconds, then answers UNKNOWN: longer than any sane host timeout.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use serde_json::Value;
use settle_plugin::abi::{self, Buffer, CALL_ERROR, CALL_OK, Method, PluginVTable};
use settle_plugin::{
    Capability, ChargeRequest, Manifest, Outcome, PROTOCOL_VERSION, PaymentMethodPlugin, PluginError, RefundRequest,
    StatusRequest,
};

/// The panic message of a charge.
pub const CHARGE_PANIC: &str = "panicky plugin: charge panicked on purpose";

/// How long `status` sleeps before answering.
pub const STATUS_SLEEP: Duration = Duration::from_secs(10);

struct Panicky;

impl PaymentMethodPlugin for Panicky {
    fn manifest(&self) -> Manifest {
        Manifest {
            id: "panicky".to_owned(),
            name: "Panicky (test plugin)".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol_version: PROTOCOL_VERSION,
            capabilities: vec![Capability::Charge, Capability::Refund, Capability::Status],
            currencies: Vec::new(),
            method_types: vec!["CARD".to_owned(), "OTHER".to_owned()],
            config_schema: serde_json::json!({"type": "object"}),
        }
    }

    fn validate_config(&self, _config: &Value) -> Result<(), PluginError> {
        Ok(())
    }

    fn charge(&self, _request: ChargeRequest) -> Result<Outcome, PluginError> {
        panic!("{CHARGE_PANIC}");
    }

    fn refund(&self, _request: RefundRequest) -> Result<Outcome, PluginError> {
        Ok(Outcome::Succeeded { reference: Some("re_panicky".to_owned()) })
    }

    fn status(&self, _request: StatusRequest) -> Result<Outcome, PluginError> {
        std::thread::sleep(STATUS_SLEEP);
        Ok(Outcome::Unknown)
    }
}

static PLUGIN: Panicky = Panicky;

fn instance() -> &'static dyn PaymentMethodPlugin {
    &PLUGIN
}

unsafe extern "C" fn manifest(input: *const u8, len: usize, output: *mut Buffer) -> i32 {
    unsafe { abi::__call(instance, Method::Manifest, input, len, output) }
}

unsafe extern "C" fn validate_config(input: *const u8, len: usize, output: *mut Buffer) -> i32 {
    unsafe { abi::__call(instance, Method::ValidateConfig, input, len, output) }
}

/// The misbehaving answers `details.mode` asks for, or None to panic through the SDK path.
fn misbehaviour(input: &[u8]) -> Option<(i32, &'static [u8])> {
    let request: Value = serde_json::from_slice(input).ok()?;
    match request["details"]["mode"].as_str()? {
        "garbage" => Some((CALL_OK, b"{not json")),
        "bad_code" => Some((42, br#"{"ok":null}"#)),
        "wrong_shape" => Some((CALL_OK, br#"{"ok":{"status":"MAYBE"}}"#)),
        _ => None,
    }
}

unsafe extern "C" fn charge(input: *const u8, len: usize, output: *mut Buffer) -> i32 {
    if output.is_null() || (input.is_null() && len != 0) {
        return CALL_ERROR;
    }
    let bytes: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: the host lends `len` bytes at `input` for the length of the call.
        unsafe { std::slice::from_raw_parts(input, len) }
    };
    match catch_unwind(AssertUnwindSafe(|| misbehaviour(bytes))) {
        Ok(Some((code, answer))) => {
            // SAFETY: `output` is non-null and points at the host's buffer.
            unsafe { output.write(Buffer::from_vec(answer.to_vec())) };
            code
        }
        // "panic", no mode, or a request that does not parse: the SDK path, which panics inside
        // its catch_unwind (CALL_PANIC) or reports INVALID_REQUEST.
        _ => unsafe { abi::__call(instance, Method::Charge, input, len, output) },
    }
}

unsafe extern "C" fn refund(input: *const u8, len: usize, output: *mut Buffer) -> i32 {
    unsafe { abi::__call(instance, Method::Refund, input, len, output) }
}

unsafe extern "C" fn status(input: *const u8, len: usize, output: *mut Buffer) -> i32 {
    unsafe { abi::__call(instance, Method::Status, input, len, output) }
}

static VTABLE: PluginVTable = PluginVTable {
    abi_version: settle_plugin::ABI_VERSION,
    manifest,
    validate_config,
    charge,
    refund,
    status,
    free_buffer: abi::__free_buffer,
};

/// The ABI version, as a real plugin reports it.
#[unsafe(no_mangle)]
pub extern "C" fn settle_plugin_abi_version() -> u32 {
    settle_plugin::ABI_VERSION
}

/// The hand-written function table.
#[unsafe(no_mangle)]
pub extern "C" fn settle_plugin_vtable() -> *const PluginVTable {
    &VTABLE
}
