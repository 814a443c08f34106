//! The records a stored figure is made of, as balance explanations walk them
//! (ledger/proof.rs): which of an invoice's or a payment's records count, and what each adds.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::invoices::{date_string, parse_date};
use super::rows::{AllocationRow, CreditNoteRow, InvoiceRow, PaymentRow, RefundRow, key_of};
use super::{Store, Vars};
use crate::auth::TenantId;
use crate::error::AppResult;
use crate::ledger::proof::{Proof, ProofRecord, ProofStepKind, derive};

/// The first step of an invoice's explanations: its total, owed from its finalization.
fn invoice_total(invoice: &InvoiceRow) -> ProofRecord {
    let doc = &invoice.doc;
    ProofRecord {
        kind: ProofStepKind::InvoiceTotal,
        record: format!("invoice:{}", key_of(&invoice.id)),
        date: parse_date(&doc.issue_date),
        actor: doc.finalized_by.clone(),
        at: doc.finalized_at.unwrap_or(doc.created_at),
        amount: doc.total,
    }
}

/// The first step of a payment's explanations: its amount.
fn payment_amount(payment: &PaymentRow) -> ProofRecord {
    let doc = &payment.doc;
    ProofRecord {
        kind: ProofStepKind::PaymentAmount,
        record: format!("payment:{}", key_of(&payment.id)),
        date: parse_date(&doc.date),
        actor: doc.created_by.clone(),
        at: doc.created_at,
        amount: doc.amount,
    }
}

/// An issued credit note, taking its total off what is owed.
fn credit_note(note: &CreditNoteRow) -> ProofRecord {
    ProofRecord {
        kind: ProofStepKind::CreditNote,
        record: format!("credit_note:{}", key_of(&note.id)),
        date: parse_date(&note.date),
        actor: note.created_by.clone(),
        at: note.created_at,
        amount: -note.total,
    }
}

/// A successful or pending refund (others moved nothing), with `sign` applied to its amount.
fn refund(refund: &RefundRow, sign: Decimal) -> Option<ProofRecord> {
    let kind = match refund.outcome.as_str() {
        "SUCCEEDED" => ProofStepKind::Refund,
        "PENDING" => ProofStepKind::PendingRefund,
        _ => return None,
    };
    Some(ProofRecord {
        kind,
        record: format!("refund:{}", key_of(&refund.id)),
        date: parse_date(&refund.date),
        actor: Some(refund.created_by.clone()),
        at: refund.created_at,
        amount: sign * refund.amount,
    })
}

/// M4: an invoice's balance is its total, less each active allocation, less each issued credit
/// note; derived beside the balance the invoice shows.
pub fn invoice_balance(invoice: &InvoiceRow, allocations: &[AllocationRow], credit_notes: &[CreditNoteRow]) -> Proof {
    let mut records = vec![invoice_total(invoice)];
    records.extend(allocations.iter().filter(|a| a.active).map(allocation));
    records.extend(credit_notes.iter().filter(|n| n.status == "ISSUED").map(credit_note));
    derive(records, invoice.doc.facts().balance())
}

/// M5: a payment's unallocated amount is its amount, less each active allocation, less each
/// successful refund, less each refund still pending at a plugin (held back, F3); derived beside
/// the unallocated amount the payment shows.
pub fn payment_unallocated(payment: &PaymentRow, allocations: &[AllocationRow], refunds: &[RefundRow], stored: Decimal) -> Proof {
    let mut records = vec![payment_amount(payment)];
    records.extend(allocations.iter().filter(|a| a.active).map(allocation));
    records.extend(refunds.iter().filter_map(|r| refund(r, Decimal::NEGATIVE_ONE)));
    derive(records, stored)
}

impl Store {
    /// B1 explained, in one currency: what the client owes net of the credit they hold, from
    /// every invoice (OPEN or PAID: its total), credit note (issued), payment (not void) and
    /// refund (successful, or pending and so held back) of theirs, dated up to `as_of` when
    /// given. Allocations only move money between what is owed and what is held, so they are not
    /// steps. Beside `stored` (B1's owing less unallocated credit), which the caller gives only
    /// for the records of every date.
    pub async fn client_balance_proof(
        &self,
        tenant: &TenantId,
        client: &str,
        currency: &str,
        as_of: Option<NaiveDate>,
        stored: Decimal,
    ) -> AppResult<Proof> {
        let dated = |field: &str| if as_of.is_some() { format!(" AND {field} <= $to") } else { String::new() };
        let sql = format!(
            "SELECT * FROM invoice WHERE tenant = $tenant AND client = $client AND currency = $currency AND status IN ['OPEN', 'PAID']{};
             SELECT * FROM payment WHERE tenant = $tenant AND client = $client AND currency = $currency AND void = false{};
             SELECT * FROM refund WHERE tenant = $tenant AND client = $client AND currency = $currency AND outcome IN ['SUCCEEDED', 'PENDING']{};
             SELECT * FROM credit_note WHERE tenant = $tenant AND client = $client AND currency = $currency AND status = 'ISSUED'{};",
            dated("issue_date"),
            dated("date"),
            dated("date"),
            dated("date"),
        );
        let vars = Vars::new()
            .set("tenant", tenant.as_str().to_owned())
            .set("client", client.to_owned())
            .set("currency", currency.to_owned())
            .set("to", as_of.map(date_string));
        let mut results = self.query(&sql, vars).await?;
        let invoices: Vec<InvoiceRow> = results.rows(0)?;
        let payments: Vec<PaymentRow> = results.rows(1)?;
        let refunds: Vec<RefundRow> = results.rows(2)?;
        let credit_notes: Vec<CreditNoteRow> = results.rows(3)?;
        let mut records: Vec<ProofRecord> = invoices.iter().map(invoice_total).collect();
        records.extend(credit_notes.iter().map(credit_note));
        records.extend(payments.iter().map(|payment| ProofRecord { amount: -payment.doc.amount, ..payment_amount(payment) }));
        records.extend(refunds.iter().filter_map(|r| refund(r, Decimal::ONE)));
        Ok(derive(records, stored))
    }
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
