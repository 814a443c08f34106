//! The C ABI between Settle and a plugin library: the only things that cross the boundary.
//!
//! # Symbols
//!
//! A plugin library exports two `extern "C"` functions (normally written by
//! [`export_plugin!`](crate::export_plugin)):
//!
//! - `settle_plugin_abi_version() -> u32` ([`ABI_VERSION_SYMBOL`]): the ABI version the library
//!   speaks. The host calls it **before touching any other symbol** and refuses the library
//!   unless it equals [`ABI_VERSION`].
//! - `settle_plugin_vtable() -> *const PluginVTable` ([`VTABLE_SYMBOL`]): a pointer to a static
//!   [`PluginVTable`], valid for the life of the process, whose `abi_version` repeats the version.
//!
//! # Calls
//!
//! Each entry of the table is a [`CallFn`]: `(input_ptr, input_len, output) -> code`.
//!
//! - The input is JSON bytes owned by the host and only borrowed for the call: nothing for
//!   `manifest` (length 0), the configuration JSON for `validate_config`, a
//!   [`ChargeRequest`](crate::ChargeRequest), [`RefundRequest`](crate::RefundRequest) or
//!   [`StatusRequest`](crate::StatusRequest) for `charge`, `refund` and `status`.
//! - The host passes `output` pointing at an empty [`Buffer`]; the plugin writes into it a buffer
//!   it allocated, holding the JSON answer. The host copies the bytes and then hands the buffer
//!   back, exactly once, to the table's `free_buffer`, so memory is always freed by the
//!   allocator that made it. An empty buffer (null pointer) needs no freeing.
//! - The return code says what the answer holds:
//!
//! | code | answer |
//! |---|---|
//! | [`CALL_OK`] = 0 | `{"ok": value}`: a [`Manifest`](crate::Manifest) for `manifest`, `null` for `validate_config`, an [`Outcome`](crate::Outcome) for `charge`, `refund`, `status` |
//! | [`CALL_ERROR`] = 1 | `{"error": {"code": "...", "message": "..."}}`: a [`PluginError`]; input that is not the expected JSON gives code `INVALID_REQUEST` |
//! | [`CALL_PANIC`] = 2 | `{"error": {"code": "PANIC", "message": "<panic text>"}}`: the plugin panicked and the panic was caught |
//!
//! Any other code, or an answer that is not this JSON, is a fault of the plugin.
//!
//! Every call is made from a host blocking thread and may run concurrently with others; no
//! panic ever unwinds across the boundary (every function body runs inside `catch_unwind`).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::ABI_VERSION;
use crate::{PaymentMethodPlugin, PluginError};

/// The name of the exported `extern "C" fn() -> u32` giving the library's ABI version, with the
/// trailing NUL that symbol look-ups want.
pub const ABI_VERSION_SYMBOL: &[u8] = b"settle_plugin_abi_version\0";

/// The name of the exported `extern "C" fn() -> *const PluginVTable`, with the trailing NUL.
pub const VTABLE_SYMBOL: &[u8] = b"settle_plugin_vtable\0";

/// The call succeeded; the output holds `{"ok": value}`.
pub const CALL_OK: i32 = 0;
/// The plugin refused; the output holds `{"error": {"code", "message"}}`.
pub const CALL_ERROR: i32 = 1;
/// The plugin panicked (caught); the output holds `{"error": {"code": "PANIC", "message"}}`.
pub const CALL_PANIC: i32 = 2;

/// Bytes allocated by the plugin and handed to the host: a `Vec<u8>` taken apart.
///
/// The empty buffer is `{ptr: null, len: 0, cap: 0}` and needs no freeing. Any other buffer must
/// go back, exactly once, to the `free_buffer` of the table it came from.
#[repr(C)]
#[derive(Debug)]
pub struct Buffer {
    /// Start of the bytes, or null when empty.
    pub ptr: *mut u8,
    /// Number of initialised bytes.
    pub len: usize,
    /// Capacity of the allocation, needed to free it.
    pub cap: usize,
}

impl Buffer {
    /// The empty buffer: null, 0, 0.
    pub const fn empty() -> Buffer {
        Buffer { ptr: std::ptr::null_mut(), len: 0, cap: 0 }
    }

    /// Takes a vector apart without freeing it; an empty vector gives the empty buffer.
    pub fn from_vec(bytes: Vec<u8>) -> Buffer {
        if bytes.is_empty() {
            return Buffer::empty();
        }
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        Buffer { ptr: bytes.as_mut_ptr(), len: bytes.len(), cap: bytes.capacity() }
    }

    /// Puts the vector back together, to be dropped by the allocator that made it.
    ///
    /// # Safety
    ///
    /// The buffer is empty, or came from [`Buffer::from_vec`] **in this same library** (the same
    /// allocator) and has not been turned back into a vector before.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        if self.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: by the caller's promise, these are the parts of a live Vec<u8> of this allocator.
        unsafe { Vec::from_raw_parts(self.ptr, self.len, self.cap) }
    }

    /// The bytes, borrowed.
    ///
    /// # Safety
    ///
    /// The buffer is empty, or `ptr` points at `len` initialised bytes that stay alive and
    /// unchanged while the slice is used (until the buffer is freed).
    pub unsafe fn as_slice(&self) -> &[u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: by the caller's promise.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// One entry of the table: JSON in (borrowed from the host), JSON out (allocated by the plugin,
/// written to `*output`), a return code ([`CALL_OK`], [`CALL_ERROR`] or [`CALL_PANIC`]).
pub type CallFn = unsafe extern "C" fn(input_ptr: *const u8, input_len: usize, output: *mut Buffer) -> i32;

/// Frees a buffer that one of the same table's calls wrote.
pub type FreeFn = unsafe extern "C" fn(buffer: Buffer);

/// The plugin's function table, a static in the plugin library.
#[repr(C)]
pub struct PluginVTable {
    /// Repeats [`ABI_VERSION`]; the host checks it as well as the exported function.
    pub abi_version: u32,
    /// Input: nothing. Answer: a [`Manifest`](crate::Manifest).
    pub manifest: CallFn,
    /// Input: the configuration JSON. Answer: `null`.
    pub validate_config: CallFn,
    /// Input: a [`ChargeRequest`](crate::ChargeRequest). Answer: an [`Outcome`](crate::Outcome).
    pub charge: CallFn,
    /// Input: a [`RefundRequest`](crate::RefundRequest). Answer: an [`Outcome`](crate::Outcome).
    pub refund: CallFn,
    /// Input: a [`StatusRequest`](crate::StatusRequest). Answer: an [`Outcome`](crate::Outcome).
    pub status: CallFn,
    /// Frees any buffer the calls above wrote.
    pub free_buffer: FreeFn,
}

// The layout both sides rely on, for 64-bit targets (the only ones Settle ships for).
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<Buffer>() == 24);
    assert!(align_of::<Buffer>() == 8);
    assert!(offset_of!(Buffer, ptr) == 0);
    assert!(offset_of!(Buffer, len) == 8);
    assert!(offset_of!(Buffer, cap) == 16);
    assert!(size_of::<CallFn>() == 8);
    assert!(size_of::<FreeFn>() == 8);
    assert!(size_of::<PluginVTable>() == 56);
    assert!(align_of::<PluginVTable>() == 8);
    assert!(offset_of!(PluginVTable, abi_version) == 0);
    assert!(offset_of!(PluginVTable, manifest) == 8);
    assert!(offset_of!(PluginVTable, validate_config) == 16);
    assert!(offset_of!(PluginVTable, charge) == 24);
    assert!(offset_of!(PluginVTable, refund) == 32);
    assert!(offset_of!(PluginVTable, status) == 40);
    assert!(offset_of!(PluginVTable, free_buffer) == 48);
};

/// The answer envelope every call writes: `{"ok": value}` or `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply<T> {
    /// The call's value.
    Ok(T),
    /// Why the call failed.
    Error(PluginError),
}

impl<T> Reply<T> {
    /// As a `Result`.
    pub fn into_result(self) -> Result<T, PluginError> {
        match self {
            Reply::Ok(value) => Ok(value),
            Reply::Error(error) => Err(error),
        }
    }
}

/// Which entry of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `manifest`.
    Manifest,
    /// `validate_config`.
    ValidateConfig,
    /// `charge`.
    Charge,
    /// `refund`.
    Refund,
    /// `status`.
    Status,
}

/// What one call through the table does, in plain Rust: builds the plugin with `instance`, runs
/// `method` on the JSON `input`, and gives the return code and the answer's JSON bytes. Nothing
/// escapes: a panic in `instance` or in the plugin becomes [`CALL_PANIC`].
///
/// [`export_plugin!`](crate::export_plugin) uses it for every entry, and
/// [`testing::check_plugin`](crate::testing::check_plugin) calls plugins through it, so tests see
/// exactly the bytes a host would.
pub fn dispatch<'a>(instance: impl FnOnce() -> &'a dyn PaymentMethodPlugin, method: Method, input: &[u8]) -> (i32, Vec<u8>) {
    match catch_unwind(AssertUnwindSafe(|| run(instance(), method, input))) {
        Ok(answer) => answer,
        Err(payload) => {
            let message = panic_message(&*payload);
            // A payload whose own Drop panics must not unwind out of here either.
            if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
                std::mem::forget(again);
            }
            (CALL_PANIC, encode(&Reply::<()>::Error(PluginError::new(PluginError::PANIC, message))))
        }
    }
}

fn run(plugin: &dyn PaymentMethodPlugin, method: Method, input: &[u8]) -> (i32, Vec<u8>) {
    fn parse<T: DeserializeOwned>(input: &[u8]) -> Result<T, PluginError> {
        serde_json::from_slice(input).map_err(|e| PluginError::invalid_request(format!("the request is not the expected JSON: {e}")))
    }
    fn answer<T: Serialize>(result: Result<T, PluginError>) -> (i32, Vec<u8>) {
        match result {
            Ok(value) => (CALL_OK, encode(&Reply::Ok(value))),
            Err(error) => (CALL_ERROR, encode(&Reply::<()>::Error(error))),
        }
    }
    match method {
        Method::Manifest => answer(Ok(plugin.manifest())),
        Method::ValidateConfig => answer(parse(input).and_then(|config| plugin.validate_config(&config))),
        Method::Charge => answer(parse(input).and_then(|request| plugin.charge(request))),
        Method::Refund => answer(parse(input).and_then(|request| plugin.refund(request))),
        Method::Status => answer(parse(input).and_then(|request| plugin.status(request))),
    }
}

fn encode<T: Serialize>(reply: &Reply<T>) -> Vec<u8> {
    // The contract's types always serialize; the fallback only keeps this function total.
    serde_json::to_vec(reply).unwrap_or_else(|e| {
        let error = PluginError::new(PluginError::PANIC, format!("the answer could not be encoded: {e}"));
        serde_json::to_vec(&Reply::<()>::Error(error)).unwrap_or_default()
    })
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a text message".to_owned()
    }
}

/// The body of every entry that [`export_plugin!`](crate::export_plugin) generates: reads the
/// input, [`dispatch`]es, writes the answer to `*output` as a buffer of this library.
///
/// # Safety
///
/// `input_ptr` points at `input_len` readable bytes (or `input_len` is 0), and `output` is null
/// or points at a writable [`Buffer`]. A null `output` gives [`CALL_ERROR`] and writes nothing.
#[doc(hidden)]
pub unsafe fn __call(
    instance: fn() -> &'static dyn PaymentMethodPlugin,
    method: Method,
    input_ptr: *const u8,
    input_len: usize,
    output: *mut Buffer,
) -> i32 {
    if output.is_null() {
        return CALL_ERROR;
    }
    let (code, bytes) = if input_len == 0 {
        dispatch(instance, method, &[])
    } else if input_ptr.is_null() {
        let error = PluginError::invalid_request("the input pointer is null but its length is not 0");
        (CALL_ERROR, encode(&Reply::<()>::Error(error)))
    } else {
        // SAFETY: by the caller's promise; the slice is only read during this call.
        let input = unsafe { std::slice::from_raw_parts(input_ptr, input_len) };
        dispatch(instance, method, input)
    };
    // SAFETY: `output` is non-null and writable by the caller's promise; whatever it held is not
    // ours to free, so it is overwritten without being dropped.
    unsafe { output.write(Buffer::from_vec(bytes)) };
    code
}

/// The `free_buffer` entry that [`export_plugin!`](crate::export_plugin) puts in the table (also
/// usable by libraries that write their exports by hand). It runs in the plugin library, so the
/// buffer goes back to the allocator that made it.
///
/// # Safety
///
/// `buffer` is empty or was written by one of this library's calls and not freed before.
#[doc(hidden)]
pub unsafe extern "C" fn __free_buffer(buffer: Buffer) {
    // SAFETY: by the caller's promise. Dropping a Vec<u8> does not panic; the guard is for form.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(unsafe { buffer.into_vec() })));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_constructor_is_a_call_panic() {
        let (code, bytes) = dispatch(|| -> &'static dyn PaymentMethodPlugin { panic!("cannot build: {}", 42) }, Method::Manifest, b"");
        assert_eq!(code, CALL_PANIC);
        let reply: Reply<()> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(reply, Reply::Error(PluginError::new("PANIC", "cannot build: 42")));
    }

    #[test]
    fn buffers_round_trip_and_empty_is_null() {
        let empty = Buffer::from_vec(Vec::with_capacity(16));
        assert!(empty.ptr.is_null() && empty.len == 0 && empty.cap == 0);
        let buffer = Buffer::from_vec(b"{\"ok\":null}".to_vec());
        assert_eq!(unsafe { buffer.as_slice() }, b"{\"ok\":null}");
        assert_eq!(unsafe { buffer.into_vec() }, b"{\"ok\":null}");
    }
}
