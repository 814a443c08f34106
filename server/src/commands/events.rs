//! The ledger events (E1) the commands record, built from what a change wrote. Which events each
//! change records is decided in docs/rules.md, "Ledger events".

use crate::events::LedgerEvent;
use crate::ledger::invoice::InvoiceStatus;
use crate::store::payments::Allocated;
use crate::store::rows::{InvoiceRow, PaymentRow, key_of};

/// PAYMENT_RECORDED for a new payment.
pub(super) fn payment_recorded(payment: &PaymentRow) -> LedgerEvent {
    LedgerEvent::PaymentRecorded {
        payment: key_of(&payment.id),
        client: payment.doc.client.clone(),
        amount: payment.doc.amount,
        currency: payment.doc.currency.clone(),
    }
}

/// PAYMENT_ALLOCATED for an allocation just written of `payment` to `invoice` (as it was before
/// the allocation), then INVOICE_STATUS_CHANGED when the allocation changed the invoice's status
/// to `status_after` (I3).
pub(super) fn allocated(allocation: &Allocated, payment: &PaymentRow, invoice: &InvoiceRow, status_after: InvoiceStatus) -> Vec<LedgerEvent> {
    let mut events = vec![LedgerEvent::PaymentAllocated {
        allocation: allocation.key.clone(),
        payment: key_of(&payment.id),
        invoice: allocation.invoice.clone(),
        amount: allocation.amount,
        currency: invoice.doc.currency.clone(),
    }];
    events.extend(status_changed(invoice, status_after));
    events
}

/// INVOICE_STATUS_CHANGED when `invoice` (as it was before the change) ends in another status.
pub(super) fn status_changed(invoice: &InvoiceRow, status_after: InvoiceStatus) -> Option<LedgerEvent> {
    LedgerEvent::invoice_status_changed(&key_of(&invoice.id), invoice.doc.facts().status, status_after)
}
