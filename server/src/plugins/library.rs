//! One plugin shared library: loading it safely and calling it through its C ABI.
//!
//! All `unsafe` of the plugin system lives here. The library's ABI version is checked before any
//! other symbol is touched; then its function table is read once. Buffers the plugin returns are
//! copied and handed back to the plugin's own `free_buffer`, so memory is always freed by the side
//! that allocated it. A library is never unloaded: it is leaked on purpose, because unloading code
//! that may still run (a timed-out call, thread-locals) is undefined behaviour.

use std::path::Path;

use settle_plugin::abi::{ABI_VERSION_SYMBOL, Buffer, CALL_ERROR, CALL_OK, CALL_PANIC, CallFn, PluginVTable, VTABLE_SYMBOL};
use settle_plugin::{ABI_VERSION, PluginError};

use super::CallError;

/// A loaded library and its function table, alive for the rest of the process.
pub struct PluginLibrary {
    vtable: &'static PluginVTable,
}

/// Which entry of the function table to call (named in snake_case in plugin-host frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    Manifest,
    ValidateConfig,
    Charge,
    Refund,
    Status,
}

impl PluginLibrary {
    /// Loads `path`, refusing a library with another ABI version or without the function table.
    pub fn load(path: &Path) -> Result<PluginLibrary, String> {
        // SAFETY: loading runs the library's initialisers. Only files an administrator placed in
        // the configured plugin directory are ever loaded (checked by the caller).
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| format!("cannot load the library: {e}"))?;
        // Never unloaded (see the module documentation).
        let library: &'static libloading::Library = Box::leak(Box::new(library));
        // SAFETY: the symbol is declared by the plugin ABI as `extern "C" fn() -> u32`.
        let abi_version = unsafe {
            let symbol = library
                .get::<unsafe extern "C" fn() -> u32>(ABI_VERSION_SYMBOL)
                .map_err(|_| "it exports no settle_plugin_abi_version: not a Settle plugin".to_owned())?;
            symbol()
        };
        if abi_version != ABI_VERSION {
            return Err(format!("it speaks plugin ABI version {abi_version}; this Settle speaks version {ABI_VERSION}"));
        }
        // SAFETY: with the ABI version checked, the symbol is `extern "C" fn() -> *const PluginVTable`
        // returning a pointer to a static table.
        let vtable = unsafe {
            let symbol = library
                .get::<unsafe extern "C" fn() -> *const PluginVTable>(VTABLE_SYMBOL)
                .map_err(|_| "it exports no settle_plugin_vtable".to_owned())?;
            let pointer = symbol();
            pointer.as_ref().ok_or_else(|| "its settle_plugin_vtable is null".to_owned())?
        };
        if vtable.abi_version != ABI_VERSION {
            return Err(format!("its function table is for ABI version {}", vtable.abi_version));
        }
        Ok(PluginLibrary { vtable })
    }

    /// Calls one entry with JSON `input`; returns the `ok` value of the plugin's answer.
    pub fn call(&self, entry: Entry, input: &[u8]) -> Result<serde_json::Value, CallError> {
        let (code, bytes) = self.call_raw(entry, input);
        decode_answer(code, &bytes)
    }

    /// Calls one entry and returns the return code and the answer bytes exactly as the plugin gave
    /// them (what a plugin host passes on to the server).
    pub fn call_raw(&self, entry: Entry, input: &[u8]) -> (i32, Vec<u8>) {
        let function: CallFn = match entry {
            Entry::Manifest => self.vtable.manifest,
            Entry::ValidateConfig => self.vtable.validate_config,
            Entry::Charge => self.vtable.charge,
            Entry::Refund => self.vtable.refund,
            Entry::Status => self.vtable.status,
        };
        let mut output = Buffer { ptr: std::ptr::null_mut(), len: 0, cap: 0 };
        // SAFETY: `input` outlives the call; `output` is written by the plugin with a buffer it
        // allocated, which is copied below and then released with the plugin's own free function.
        let code = unsafe { function(input.as_ptr(), input.len(), &mut output) };
        let bytes = if output.ptr.is_null() || output.len == 0 {
            Vec::new()
        } else {
            // SAFETY: the plugin promises `ptr` points at `len` initialised bytes until freed.
            unsafe { std::slice::from_raw_parts(output.ptr, output.len) }.to_vec()
        };
        if !output.ptr.is_null() {
            // SAFETY: the buffer came from this plugin and is freed exactly once, by it.
            unsafe { (self.vtable.free_buffer)(output) };
        }
        (code, bytes)
    }
}

/// Reads a plugin's answer envelope: `{"ok": value}` or `{"error": {"code", "message"}}`.
pub fn decode_answer(code: i32, bytes: &[u8]) -> Result<serde_json::Value, CallError> {
    let envelope: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| CallError::Malformed(format!("the plugin answered with bytes that are not JSON: {e}")))?;
    let error = || -> PluginError {
        serde_json::from_value(envelope["error"].clone()).unwrap_or_else(|_| PluginError {
            code: "MALFORMED".into(),
            message: "the plugin reported an error in an unknown shape".into(),
        })
    };
    match code {
        CALL_OK => match envelope.get("ok") {
            Some(value) => Ok(value.clone()),
            None => Err(CallError::Malformed("the plugin's answer has no \"ok\" value".into())),
        },
        CALL_ERROR => Err(CallError::Plugin(error())),
        CALL_PANIC => Err(CallError::Panic(error().message)),
        other => Err(CallError::Malformed(format!("the plugin returned the unknown code {other}"))),
    }
}
