//! The records a stored figure is made of, as balance explanations walk them
//! (ledger/proof.rs): which of an invoice's or a payment's records count, and what each adds.

use rust_decimal::Decimal;

use super::invoices::parse_date;
use super::rows::{AllocationRow, CreditNoteRow, InvoiceRow, PaymentRow, RefundRow, key_of};
use crate::ledger::proof::{Proof, ProofRecord, ProofStepKind, derive};

/// M4: an invoice's balance is its total, less each active allocation, less each issued credit
/// note; derived beside the balance the invoice shows.
pub fn invoice_balance(invoice: &InvoiceRow, allocations: &[AllocationRow], credit_notes: &[CreditNoteRow]) -> Proof {
    let doc = &invoice.doc;
    let mut records = vec![ProofRecord {
        kind: ProofStepKind::InvoiceTotal,
        record: format!("invoice:{}", key_of(&invoice.id)),
        date: parse_date(&doc.issue_date),
        actor: doc.finalized_by.clone(),
        at: doc.finalized_at.unwrap_or(doc.created_at),
        amount: doc.total,
    }];
    records.extend(allocations.iter().filter(|a| a.active).map(allocation));
    records.extend(credit_notes.iter().filter(|n| n.status == "ISSUED").map(|note| ProofRecord {
        kind: ProofStepKind::CreditNote,
        record: format!("credit_note:{}", key_of(&note.id)),
        date: parse_date(&note.date),
        actor: note.created_by.clone(),
        at: note.created_at,
        amount: -note.total,
    }));
    derive(records, doc.facts().balance())
}

/// M5: a payment's unallocated amount is its amount, less each active allocation, less each
/// successful refund, less each refund still pending at a plugin (held back, F3); derived beside
/// the unallocated amount the payment shows.
pub fn payment_unallocated(payment: &PaymentRow, allocations: &[AllocationRow], refunds: &[RefundRow], stored: Decimal) -> Proof {
    let doc = &payment.doc;
    let mut records = vec![ProofRecord {
        kind: ProofStepKind::PaymentAmount,
        record: format!("payment:{}", key_of(&payment.id)),
        date: parse_date(&doc.date),
        actor: doc.created_by.clone(),
        at: doc.created_at,
        amount: doc.amount,
    }];
    records.extend(allocations.iter().filter(|a| a.active).map(allocation));
    for refund in refunds {
        let kind = match refund.outcome.as_str() {
            "SUCCEEDED" => ProofStepKind::Refund,
            "PENDING" => ProofStepKind::PendingRefund,
            _ => continue,
        };
        records.push(ProofRecord {
            kind,
            record: format!("refund:{}", key_of(&refund.id)),
            date: parse_date(&refund.date),
            actor: Some(refund.created_by.clone()),
            at: refund.created_at,
            amount: -refund.amount,
        });
    }
    derive(records, stored)
}

/// An active allocation: it takes its amount off both its invoice and its payment.
fn allocation(allocation: &AllocationRow) -> ProofRecord {
    ProofRecord {
        kind: ProofStepKind::Allocation,
        record: format!("allocation:{}", key_of(&allocation.id)),
        date: parse_date(&allocation.date),
        actor: Some(allocation.created_by.clone()),
        at: allocation.created_at,
        amount: -allocation.amount,
    }
}
