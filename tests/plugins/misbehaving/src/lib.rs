//! A Settle plugin library that does what no plugin should, on request, for the server's plugin
//! isolation tests. Each misbehaviour is one that no `catch_unwind` can stop, so only a plugin
//! running in a process of its own leaves the server standing.
//!
//! - `manifest`: id `misbehaving`, capabilities charge, refund and status, method types CARD and
//!   OTHER, any currency.
//! - `validate_config`: accepts anything.
//! - `charge`: chosen by `details.misbehave`:
//!   - `"abort"`: aborts the process;
//!   - `"segfault"`: writes to an unmapped address;
//!   - `"stack_overflow"`: recurses until the stack runs out;
//!   - `"allocate"`: allocates 64 MiB after 64 MiB, without bound;
//!   - `"spin"`: spins forever, ignoring every timeout;
//!   - `"garbage"`: writes junk to standard output (descriptor 1), then charges as usual;
//!   - absent: SUCCEEDED with reference `mis_<idempotency key>`, recorded in memory.
//! - `refund`: SUCCEEDED (reference `re_mis_<idempotency key>`).
//! - `status`: the recorded outcome of a charge it answered; UNKNOWN for any other, which is
//!   every charge it died or spun on (it never got to record those) and every charge of an
//!   earlier process: its records live in memory only, like a gateway that never saw the request.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use serde_json::Value;
use settle_plugin::{
    Capability, ChargeRequest, Manifest, Operation, Outcome, PROTOCOL_VERSION, PaymentMethodPlugin, PluginError, RefundRequest,
    StatusRequest,
};

#[derive(Default)]
struct Misbehaving {
    charges: Mutex<HashMap<String, Outcome>>,
}

/// Recurses until the stack runs out, which is its purpose.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    // The array keeps each frame large and black_box keeps the recursion from being folded.
    let frame = std::hint::black_box([depth; 64]);
    recurse(depth + 1) + frame[(depth % 64) as usize]
}

fn misbehave(how: &str) {
    match how {
        "abort" => std::process::abort(),
        "segfault" => {
            // SAFETY: none, on purpose: the first page is never mapped, so this faults.
            unsafe { std::ptr::without_provenance_mut::<u8>(8).write_volatile(1) }
        }
        "stack_overflow" => {
            std::hint::black_box(recurse(0));
        }
        "allocate" => loop {
            // Zeroed memory is mapped lazily: this takes address space (which RLIMIT_AS bounds)
            // much faster than it takes the machine's memory.
            std::mem::forget(std::hint::black_box(vec![0u8; 64 << 20]));
        },
        "spin" => loop {
            std::hint::spin_loop();
            std::hint::black_box(());
        },
        "garbage" => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(b"\x00\xffgarbage {\"id\": not a frame\n{{{{{ no newline either");
            let _ = out.flush();
        }
        _ => {}
    }
}

impl PaymentMethodPlugin for Misbehaving {
    fn manifest(&self) -> Manifest {
        Manifest {
            id: "misbehaving".to_owned(),
            name: "Misbehaving (test plugin)".to_owned(),
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

    fn charge(&self, request: ChargeRequest) -> Result<Outcome, PluginError> {
        if let Some(how) = request.details["misbehave"].as_str() {
            misbehave(how);
        }
        let outcome = Outcome::Succeeded { reference: Some(format!("mis_{}", request.idempotency_key)) };
        let mut charges = self.charges.lock().unwrap_or_else(|p| p.into_inner());
        Ok(charges.entry(request.idempotency_key).or_insert(outcome).clone())
    }

    fn refund(&self, request: RefundRequest) -> Result<Outcome, PluginError> {
        Ok(Outcome::Succeeded { reference: Some(format!("re_mis_{}", request.idempotency_key)) })
    }

    fn status(&self, request: StatusRequest) -> Result<Outcome, PluginError> {
        if request.operation != Operation::Charge {
            return Ok(Outcome::Unknown);
        }
        let charges = self.charges.lock().unwrap_or_else(|p| p.into_inner());
        Ok(charges.get(&request.idempotency_key).cloned().unwrap_or(Outcome::Unknown))
    }
}

settle_plugin::export_plugin!(Misbehaving::default);
