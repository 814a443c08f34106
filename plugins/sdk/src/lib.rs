//! The SDK for Settle payment-method plugins.
//!
//! A plugin is a shared library (a Rust `cdylib`) that Settle loads at run time from its plugin
//! directory. It implements [`PaymentMethodPlugin`] (manifest, validate_config, charge, refund,
//! status) and exports it with [`export_plugin!`]:
//!
//! ```ignore
//! #[derive(Default)]
//! struct MyPlugin;
//!
//! impl settle_plugin::PaymentMethodPlugin for MyPlugin { /* ... */ }
//!
//! settle_plugin::export_plugin!(MyPlugin::default);
//! ```
//!
//! # Why JSON over a tiny C ABI
//!
//! Rust has no stable ABI. A plugin is built by another `rustc`, perhaps another version, with
//! its own copy of `std`, its own allocator and its own panic runtime, so nothing Rust-shaped may
//! cross the library boundary: no trait objects, no `String`, `Vec` or `Box`, no panics. What
//! crosses is deliberately small (see [`abi`]):
//!
//! - **No Rust types cross.** Two exported `extern "C"` functions and one `#[repr(C)]` table of
//!   `extern "C"` function pointers; every call takes JSON bytes in and gives JSON bytes back in
//!   a `#[repr(C)]` [`abi::Buffer`]. The JSON shapes are the serde types of this crate, so the
//!   host and the plugin agree on data even when they were compiled apart, and a field added
//!   later does not move anything in memory.
//! - **Each side frees what it allocated.** The host lends its input bytes for the length of one
//!   call; the plugin's output buffer is allocated by the plugin and handed back to the plugin's
//!   own `free_buffer` once the host has copied it.
//! - **The ABI version is checked first.** The host calls `settle_plugin_abi_version` before it
//!   touches any other symbol, and refuses a library that speaks another [`ABI_VERSION`]. The
//!   JSON contract has its own [`PROTOCOL_VERSION`], carried in the [`Manifest`].
//! - **Panics never cross.** Since Rust 1.81 a panic that unwinds out of an `extern "C"` function
//!   aborts the process; every exported function therefore runs its body (including building the
//!   plugin instance) inside `catch_unwind` and reports a panic as [`abi::CALL_PANIC`]. Plugins
//!   must be built with `panic = "unwind"` (the default) for this to work.
//!
//! The cost is one JSON encode and decode per call, which is nothing next to a payment gateway's
//! network round trip.
//!
//! # What a plugin may assume and must do
//!
//! See [`PaymentMethodPlugin`]: calls are synchronous, arrive on blocking threads, perhaps
//! concurrently, and are timed out by the host; every charge and refund carries an idempotency
//! key that the plugin must honour. [`testing::check_plugin`] runs the conformance checks that
//! every plugin should pass, from the plugin's own unit tests.

#![warn(missing_docs)]

pub mod abi;
pub mod testing;
mod types;

pub use rust_decimal::Decimal;
pub use serde_json::Value;
pub use types::{
    Capability, ChargeRequest, METHOD_TYPES, Manifest, Operation, Outcome, PluginError, RefundRequest, StatusRequest,
};

/// The version of the C ABI (the exported symbols, [`abi::PluginVTable`], [`abi::Buffer`] and
/// the return codes). The host refuses a library whose `settle_plugin_abi_version` differs.
pub const ABI_VERSION: u32 = 1;

/// The version of the JSON contract (the request, outcome and manifest shapes). A plugin names
/// the version it speaks in [`Manifest::protocol_version`]; the host refuses another.
pub const PROTOCOL_VERSION: u32 = 1;

/// A payment method: what Settle calls to take and give back money.
///
/// # Calling model
///
/// - Every method is **synchronous**. Settle calls it on a blocking thread (never on an async
///   executor thread), with a timeout, under a host-wide concurrency limit.
/// - Calls may arrive **concurrently**, from several threads at once, for the same or different
///   tenants: keep shared state behind a `Mutex` or similar (hence `Send + Sync`).
/// - **Do not start async work that outlives the call**: no `tokio::spawn`, no background
///   threads the host does not know about. A plugin library has its own copy of `std` and of any
///   async runtime; the host's runtime is not reachable from inside it, and thread-locals are not
///   shared. A blocking HTTP client, or a small runtime created and driven inside the call, is
///   fine.
/// - A call that **hangs** is timed out by the host: the host stops waiting, treats the result as
///   unknown, and later asks [`status`](PaymentMethodPlugin::status) with the same idempotency
///   key. The hung thread is not killed, so a plugin should still bound its own network waits.
/// - A **panic** is caught at the boundary and reported to the host as a fault; repeated faults
///   mark the plugin unhealthy for a while. Return a [`PluginError`] instead whenever possible.
///
/// # Idempotency
///
/// Every charge, refund and status request carries the tenant and an idempotency key chosen by
/// Settle. The pair identifies one operation: repeating a charge or refund with a key already
/// seen must return the first outcome without moving money again (pass the key on to the gateway
/// if it supports one), and `status` answers for the operation with that key. Keys of different
/// tenants never refer to the same operation.
///
/// # Errors versus outcomes
///
/// An [`Outcome`] is the gateway's answer about money: succeeded, declined, pending or unknown.
/// A [`PluginError`] means the request could not be put to the gateway at all (bad
/// configuration, bad details, unsupported operation, gateway unreachable); no money moved.
pub trait PaymentMethodPlugin: Send + Sync + 'static {
    /// Who the plugin is and what it can do. Called once when the library is loaded, and may be
    /// called again at any time: it must be cheap and always give the same answer.
    fn manifest(&self) -> Manifest;

    /// Checks a payment method's configuration (the JSON object an administrator saves, shaped
    /// by [`Manifest::config_schema`]) before Settle stores it. Return
    /// [`PluginError::invalid_config`] with a message naming the field at fault.
    fn validate_config(&self, config: &Value) -> Result<(), PluginError>;

    /// Takes a payment. See the trait documentation for idempotency and timeouts.
    fn charge(&self, request: ChargeRequest) -> Result<Outcome, PluginError>;

    /// Gives money back for an earlier charge, named by the reference the charge reported.
    /// Plugins without [`Capability::Refund`] return [`PluginError::unsupported`].
    fn refund(&self, request: RefundRequest) -> Result<Outcome, PluginError>;

    /// The outcome of the charge or refund made with this tenant and idempotency key, or
    /// [`Outcome::Unknown`] when the plugin (or its gateway) never saw the key. Settle asks this
    /// after a timeout and for pending payments.
    fn status(&self, request: StatusRequest) -> Result<Outcome, PluginError>;
}

/// Exports a [`PaymentMethodPlugin`] from a `cdylib` over the Settle C ABI.
///
/// Give it something callable with no arguments that builds the plugin, usually
/// `MyPlugin::default` or a closure:
///
/// ```ignore
/// settle_plugin::export_plugin!(MyPlugin::default);
/// settle_plugin::export_plugin!(|| MyPlugin::new("live"));
/// ```
///
/// It defines, at the place of use, the two exported symbols `settle_plugin_abi_version` and
/// `settle_plugin_vtable` (see [`abi`]). The plugin is built once, lazily, on the first call
/// through the table, and lives in a `static OnceLock` for the life of the process; building it
/// runs inside `catch_unwind` like every call, so a constructor that panics is reported as
/// [`abi::CALL_PANIC`] (and tried again on the next call).
///
/// Use it once per library. Because it defines `#[unsafe(no_mangle)]` symbols, two crates that
/// expand it cannot both be linked into one binary (the linker reports duplicate symbols). A
/// plugin that a host may also link statically, as a plain [`PaymentMethodPlugin`] value, is
/// therefore two crates, as Settle's shipped plugins are: an rlib crate holding the plugin type,
/// which the host depends on, and a `cdylib` crate that depends on it and holds only this line:
///
/// ```ignore
/// settle_plugin::export_plugin!(my_plugin_core::MyPlugin::default);
/// ```
///
/// Not one crate with a feature that leaves the line out: cargo unifies features across one
/// build, so a build that also builds the host would leave the exports out of the library too.
#[macro_export]
macro_rules! export_plugin {
    ($constructor:expr) => {
        /// The Settle plugin ABI version this library speaks; checked by the host first.
        #[unsafe(no_mangle)]
        pub extern "C" fn settle_plugin_abi_version() -> u32 {
            $crate::ABI_VERSION
        }

        /// The Settle plugin function table of this library.
        #[unsafe(no_mangle)]
        pub extern "C" fn settle_plugin_vtable() -> *const $crate::abi::PluginVTable {
            fn instance() -> &'static dyn $crate::PaymentMethodPlugin {
                static INSTANCE: ::std::sync::OnceLock<::std::boxed::Box<dyn $crate::PaymentMethodPlugin>> =
                    ::std::sync::OnceLock::new();
                &**INSTANCE.get_or_init(|| {
                    let plugin: ::std::boxed::Box<dyn $crate::PaymentMethodPlugin> =
                        ::std::boxed::Box::new(($constructor)());
                    plugin
                })
            }
            unsafe extern "C" fn manifest(input: *const u8, len: usize, output: *mut $crate::abi::Buffer) -> i32 {
                unsafe { $crate::abi::__call(instance, $crate::abi::Method::Manifest, input, len, output) }
            }
            unsafe extern "C" fn validate_config(input: *const u8, len: usize, output: *mut $crate::abi::Buffer) -> i32 {
                unsafe { $crate::abi::__call(instance, $crate::abi::Method::ValidateConfig, input, len, output) }
            }
            unsafe extern "C" fn charge(input: *const u8, len: usize, output: *mut $crate::abi::Buffer) -> i32 {
                unsafe { $crate::abi::__call(instance, $crate::abi::Method::Charge, input, len, output) }
            }
            unsafe extern "C" fn refund(input: *const u8, len: usize, output: *mut $crate::abi::Buffer) -> i32 {
                unsafe { $crate::abi::__call(instance, $crate::abi::Method::Refund, input, len, output) }
            }
            unsafe extern "C" fn status(input: *const u8, len: usize, output: *mut $crate::abi::Buffer) -> i32 {
                unsafe { $crate::abi::__call(instance, $crate::abi::Method::Status, input, len, output) }
            }
            static VTABLE: $crate::abi::PluginVTable = $crate::abi::PluginVTable {
                abi_version: $crate::ABI_VERSION,
                manifest,
                validate_config,
                charge,
                refund,
                status,
                free_buffer: $crate::abi::__free_buffer,
            };
            &VTABLE
        }
    };
}
