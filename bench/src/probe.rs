//! What the two storage probes (`statement-cost`, `parallel-insert`) share: the process's CPU
//! time and a payment as payInvoice writes it.

use rust_decimal::Decimal;
use settle::store::rows::{PaymentDoc, new_key, page_key};

/// CPU seconds this process has used.
pub fn cpu() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// A payment as payInvoice writes it.
pub fn doc() -> PaymentDoc {
    let key = new_key();
    let now = chrono::Utc::now();
    PaymentDoc {
        tenant: "bench".into(),
        page_key: page_key("bench", &key),
        key,
        number: Some(1),
        client: "c1".into(),
        location: "l1".into(),
        method: "m1".into(),
        method_name: "Cash".into(),
        plugin: "manual".into(),
        date: "2026-11-28".into(),
        amount: Decimal::ONE,
        currency: "AUD".into(),
        description: None,
        external_reference: None,
        charge_reference: None,
        allocated: Decimal::ONE,
        refunded: Decimal::ZERO,
        refund_pending: Decimal::ZERO,
        allocation_count: 1,
        void: false,
        voided_at: None,
        void_reason: None,
        created_at: now,
        updated_at: now,
        created_by: Some("bench".into()),
    }
}
