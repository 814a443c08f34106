//! Ledger events (E1, E2): what each committed money change did, as typed facts that a dashboard,
//! a subscriber or another system can follow without reading audit text.
//!
//! A money change lists its events in its audit entry (`AuditEntry::events`); the store writes
//! them on the audit event itself, in the change's own transaction (E1), so a refused or
//! rolled-back request has none. After the commit the audit event is given the tenant's next
//! position (1, 2, 3, ... without gaps, see `store/numbering.rs`), and only then is it published
//! on the in-process [`EventBus`] (E2). A subscriber resumes from a position with
//! [`follow::Follower`]: it reads what is stored after that position, then follows the bus.
//! A live subscriber (a GraphQL subscription) runs one through [`subscriber::subscribe`], which
//! filters its records and holds a bounded number for it.
//!
//! This module knows the shapes of events and how they travel; it knows no SurrealQL and decides
//! nothing. Which events a change produces is decided where the change is made (`commands`).

pub mod follow;
pub mod subscriber;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::ledger::invoice::InvoiceStatus as LedgerInvoiceStatus;

/// One fact about a committed money change. Closed: a new kind of change is a new variant, and
/// every consumer's match tells it so. Serialized with its kind in `type` (PAYMENT_RECORDED, ...);
/// keys are record keys (the `id` the API shows), money is a decimal string with its currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LedgerEvent {
    /// A new payment was recorded or charged: `amount` came in from `client` (P1, P2, P3).
    PaymentRecorded {
        payment: String,
        client: String,
        #[serde(with = "rust_decimal::serde::str")]
        amount: Decimal,
        currency: String,
    },
    /// Part of a payment moved onto an invoice (P3, P4, P5, P7; the invoice balance falls, M4).
    PaymentAllocated {
        allocation: String,
        payment: String,
        invoice: String,
        #[serde(with = "rust_decimal::serde::str")]
        amount: Decimal,
        currency: String,
    },
    /// An allocation was removed: its amount is the payment's again and the invoice owes it
    /// again (P6, I3).
    AllocationRemoved {
        allocation: String,
        payment: String,
        invoice: String,
        #[serde(with = "rust_decimal::serde::str")]
        amount: Decimal,
        currency: String,
    },
    /// A refund of unallocated money was made or sent to the payment's plugin (F1, F2, F3);
    /// `outcome` says whether the money went back, was declined, or is not known yet.
    PaymentRefunded {
        refund: String,
        payment: String,
        #[serde(with = "rust_decimal::serde::str")]
        amount: Decimal,
        currency: String,
        outcome: RefundOutcome,
    },
    /// A refund whose outcome was unknown got its outcome from the plugin (F3).
    RefundSettled { refund: String, payment: String, outcome: RefundOutcome },
    /// A payment was voided: out of the client's balance and of totals, no money moved (V1, V2).
    PaymentVoided { payment: String },
    /// A payment's description or external reference changed; its money did not (P9).
    PaymentUpdated { payment: String },
    /// A draft was finalized: it is OPEN and owes its total (I2). When it owes nothing it is
    /// PAID at once, and an [`LedgerEvent::InvoiceStatusChanged`] from OPEN to PAID follows (I3).
    InvoiceFinalized { invoice: String },
    /// An invoice's stored status changed other than by finalizing or voiding: OPEN to PAID when
    /// its balance reaches zero, PAID to OPEN when it rises again (I3, C4), OPEN or PAID to DRAFT
    /// when reverted (I5).
    InvoiceStatusChanged { invoice: String, from: InvoiceStatus, to: InvoiceStatus },
    /// An OPEN invoice was voided: final, out of totals (I7).
    InvoiceVoided { invoice: String },
    /// A credit note lowered its invoice's balance by `total` (C1, C2, C3).
    CreditNoteIssued {
        credit_note: String,
        invoice: String,
        #[serde(with = "rust_decimal::serde::str")]
        total: Decimal,
        currency: String,
    },
    /// A credit note was voided: its invoice owes its total again (C4).
    CreditNoteVoided { credit_note: String, invoice: String },
    /// A charge through a payment-method plugin was declined by the gateway: no payment, no
    /// balance changed (F3 for charges, P3).
    ChargeDeclined { invoice: String, reason: String },
}

impl LedgerEvent {
    /// The kind, as named in the API and in stored JSON (`type`).
    pub fn kind(&self) -> &'static str {
        match self {
            LedgerEvent::PaymentRecorded { .. } => "PAYMENT_RECORDED",
            LedgerEvent::PaymentAllocated { .. } => "PAYMENT_ALLOCATED",
            LedgerEvent::AllocationRemoved { .. } => "ALLOCATION_REMOVED",
            LedgerEvent::PaymentRefunded { .. } => "PAYMENT_REFUNDED",
            LedgerEvent::RefundSettled { .. } => "REFUND_SETTLED",
            LedgerEvent::PaymentVoided { .. } => "PAYMENT_VOIDED",
            LedgerEvent::PaymentUpdated { .. } => "PAYMENT_UPDATED",
            LedgerEvent::InvoiceFinalized { .. } => "INVOICE_FINALIZED",
            LedgerEvent::InvoiceStatusChanged { .. } => "INVOICE_STATUS_CHANGED",
            LedgerEvent::InvoiceVoided { .. } => "INVOICE_VOIDED",
            LedgerEvent::CreditNoteIssued { .. } => "CREDIT_NOTE_ISSUED",
            LedgerEvent::CreditNoteVoided { .. } => "CREDIT_NOTE_VOIDED",
            LedgerEvent::ChargeDeclined { .. } => "CHARGE_DECLINED",
        }
    }

    /// An [`LedgerEvent::InvoiceStatusChanged`], or None when the status stays the same.
    pub fn invoice_status_changed(invoice: &str, from: LedgerInvoiceStatus, to: LedgerInvoiceStatus) -> Option<LedgerEvent> {
        (from != to).then(|| LedgerEvent::InvoiceStatusChanged { invoice: invoice.to_owned(), from: from.into(), to: to.into() })
    }
}

/// An invoice's stored status, as events name it (OVERDUE is derived, never an event: I4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InvoiceStatus {
    Draft,
    Open,
    Paid,
    Void,
}

impl From<LedgerInvoiceStatus> for InvoiceStatus {
    fn from(status: LedgerInvoiceStatus) -> Self {
        match status {
            LedgerInvoiceStatus::Draft => InvoiceStatus::Draft,
            LedgerInvoiceStatus::Open => InvoiceStatus::Open,
            LedgerInvoiceStatus::Paid => InvoiceStatus::Paid,
            LedgerInvoiceStatus::Void => InvoiceStatus::Void,
        }
    }
}

/// How a refund ended, or that it has not yet (F3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundOutcome {
    Succeeded,
    Declined,
    Pending,
}

impl RefundOutcome {
    /// From the text stored on a refund (SUCCEEDED, DECLINED, PENDING).
    pub fn parse(stored: &str) -> Option<RefundOutcome> {
        match stored {
            "SUCCEEDED" => Some(RefundOutcome::Succeeded),
            "DECLINED" => Some(RefundOutcome::Declined),
            "PENDING" => Some(RefundOutcome::Pending),
            _ => None,
        }
    }
}

/// One positioned audit event with its ledger events: what the store gives back and what the
/// bus carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEventRecord {
    pub tenant: String,
    /// The tenant's order of changes: 1, 2, 3, ... without gaps (E2).
    pub position: i64,
    /// The key of the audit event the events are stored on.
    pub audit_event: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    /// The audit event's action, e.g. payment.pay_invoice.
    pub action: String,
    pub events: Vec<LedgerEvent>,
}

/// Events as stored on an audit event: JSON text of the list.
pub fn to_stored(events: &[LedgerEvent]) -> Option<String> {
    if events.is_empty() {
        return None;
    }
    // A list of plain enums of strings and decimals always serializes.
    serde_json::to_string(events).ok()
}

/// Events read back from an audit event.
pub fn from_stored(text: Option<&str>) -> Result<Vec<LedgerEvent>, serde_json::Error> {
    match text {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text),
    }
}

/// How many published records the bus holds for a subscriber that has not read them yet; one
/// that falls further behind is told it lagged and reads the rest from the store.
pub const BUS_CAPACITY: usize = 4096;

/// The in-process bus of positioned ledger events, every tenant's, in position order per tenant.
/// Nothing is sent before its change and its position have committed. Cheap to clone.
///
/// Only this process's positioning is published here; with several Settle processes on one
/// database a subscriber sees a gap in positions and fills it from the store ([`follow`]).
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<LedgerEventRecord>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(BUS_CAPACITY)
    }
}

impl EventBus {
    pub fn new(capacity: usize) -> EventBus {
        EventBus { sender: broadcast::channel(capacity.max(1)).0 }
    }

    /// Sends a record to every current subscriber; with none, it is dropped (it is stored).
    pub fn publish(&self, record: LedgerEventRecord) {
        let _ = self.sender.send(Arc::new(record));
    }

    /// Receives what is published from now on. Use [`follow::Follower`] to resume from a
    /// position: it subscribes first, then reads the store, so nothing falls in between.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LedgerEventRecord>> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e1_events_are_stored_as_tagged_json_with_money_as_strings() {
        let events = vec![
            LedgerEvent::PaymentRecorded { payment: "p".into(), client: "c".into(), amount: Decimal::new(12050, 2), currency: "AUD".into() },
            LedgerEvent::InvoiceStatusChanged { invoice: "i".into(), from: InvoiceStatus::Open, to: InvoiceStatus::Paid },
            LedgerEvent::CreditNoteVoided { credit_note: "n".into(), invoice: "i".into() },
        ];
        let stored = to_stored(&events).unwrap();
        let json: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"type": "PAYMENT_RECORDED", "payment": "p", "client": "c", "amount": "120.50", "currency": "AUD"},
                {"type": "INVOICE_STATUS_CHANGED", "invoice": "i", "from": "OPEN", "to": "PAID"},
                {"type": "CREDIT_NOTE_VOIDED", "credit_note": "n", "invoice": "i"},
            ])
        );
        assert_eq!(from_stored(Some(&stored)).unwrap(), events);
        for event in &events {
            assert_eq!(serde_json::to_value(event).unwrap()["type"], event.kind(), "kind() names the serialized type");
        }
        assert_eq!(to_stored(&[]), None, "an audit event without ledger events stores none");
        assert_eq!(from_stored(None).unwrap(), Vec::new());
    }

    #[test]
    fn an_unchanged_invoice_status_is_no_event() {
        assert_eq!(LedgerEvent::invoice_status_changed("i", LedgerInvoiceStatus::Open, LedgerInvoiceStatus::Open), None);
        assert_eq!(
            LedgerEvent::invoice_status_changed("i", LedgerInvoiceStatus::Open, LedgerInvoiceStatus::Paid),
            Some(LedgerEvent::InvoiceStatusChanged { invoice: "i".into(), from: InvoiceStatus::Open, to: InvoiceStatus::Paid })
        );
    }
}
