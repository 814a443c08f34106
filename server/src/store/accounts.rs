//! A client's account: balance (B1) and statement (B2).

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::invoices::date_string;
use super::rows::{AllocationRow, CreditNoteRow, InvoiceRow, PaymentRow, RefundRow, key_of};
use super::{Store, Vars};
use crate::auth::TenantId;
use crate::error::AppResult;
use crate::ledger::money::display_amount;
use crate::ledger::numbering::format_number;

/// B1: what a client owes and holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientBalance {
    /// Sum of the balances of OPEN invoices.
    pub owing: Decimal,
    /// Sum of the unallocated amounts of non-void payments.
    pub unallocated_credit: Decimal,
    /// The part of `owing` whose due date has passed.
    pub overdue: Decimal,
}

/// One line of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementEntry {
    pub date: String,
    pub kind: EntryKind,
    /// The record, as "table:key".
    pub record: String,
    pub reference: String,
    pub description: String,
    /// What the entry adds to what the client owes: invoices and refunds add, payments and
    /// credit notes take away, allocations only move money between the two and add nothing.
    pub amount: Decimal,
    pub balance: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Invoice,
    Payment,
    Allocation,
    Refund,
    CreditNote,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub opening_balance: Decimal,
    pub entries: Vec<StatementEntry>,
    pub closing_balance: Decimal,
}

impl Store {
    /// B1, in one currency (money of different currencies is never added, M6). Void invoices and
    /// void payments are left out (I7, V2).
    pub async fn client_balance(&self, tenant: &TenantId, client: &str, currency: &str, today: NaiveDate) -> AppResult<ClientBalance> {
        let mut results = self
            .query(
                "SELECT * FROM invoice WHERE tenant = $tenant AND client = $client AND currency = $currency AND status = 'OPEN';
                 SELECT * FROM payment WHERE tenant = $tenant AND client = $client AND currency = $currency AND void = false;",
                Vars::new()
                    .set("tenant", tenant.as_str().to_owned())
                    .set("client", client.to_owned())
                    .set("currency", currency.to_owned()),
            )
            .await?;
        let invoices: Vec<InvoiceRow> = results.rows(0)?;
        let payments: Vec<PaymentRow> = results.rows(1)?;
        let today = date_string(today);
        let mut balance = ClientBalance { owing: Decimal::ZERO, unallocated_credit: Decimal::ZERO, overdue: Decimal::ZERO };
        for invoice in &invoices {
            let owing = invoice.doc.facts().balance();
            balance.owing += owing;
            if invoice.doc.due_date < today {
                balance.overdue += owing;
            }
        }
        for payment in &payments {
            balance.unallocated_credit += payment.doc.facts().unallocated();
        }
        Ok(balance)
    }

    /// B2 in one currency: invoices, payments, allocations, refunds and credit notes dated `from`
    /// to `to`, in date order, with a running balance that starts from everything dated before
    /// `from`.
    pub async fn statement(&self, tenant: &TenantId, client: &str, currency: &str, from: NaiveDate, to: NaiveDate) -> AppResult<Statement> {
        let mut results = self
            .query(
                "SELECT * FROM invoice WHERE tenant = $tenant AND client = $client AND currency = $currency
                    AND status IN ['OPEN', 'PAID'] AND issue_date <= $to;
                 SELECT * FROM payment WHERE tenant = $tenant AND client = $client AND currency = $currency AND void = false AND date <= $to;
                 SELECT * FROM allocation WHERE tenant = $tenant AND client = $client AND currency = $currency AND active = true AND date <= $to;
                 SELECT * FROM refund WHERE tenant = $tenant AND client = $client AND currency = $currency AND outcome = 'SUCCEEDED' AND date <= $to;
                 SELECT * FROM credit_note WHERE tenant = $tenant AND client = $client AND currency = $currency AND status = 'ISSUED' AND date <= $to;",
                Vars::new()
                    .set("tenant", tenant.as_str().to_owned())
                    .set("client", client.to_owned())
                    .set("currency", currency.to_owned())
                    .set("to", date_string(to)),
            )
            .await?;
        let invoices: Vec<InvoiceRow> = results.rows(0)?;
        let payments: Vec<PaymentRow> = results.rows(1)?;
        let allocations: Vec<AllocationRow> = results.rows(2)?;
        let refunds: Vec<RefundRow> = results.rows(3)?;
        let credit_notes: Vec<CreditNoteRow> = results.rows(4)?;

        let payment_numbers: std::collections::HashMap<String, String> =
            payments.iter().map(|p| (key_of(&p.id), p.doc.display_number().unwrap_or_default())).collect();
        let invoice_numbers: std::collections::HashMap<String, String> = invoices
            .iter()
            .map(|i| (key_of(&i.id), i.doc.number.map(|n| format_number("INV", n)).unwrap_or_default()))
            .collect();
        let mut entries = Vec::new();
        for invoice in &invoices {
            let number = invoice_numbers[&key_of(&invoice.id)].clone();
            entries.push(entry(&invoice.doc.issue_date, EntryKind::Invoice, "invoice", &invoice.id, number, "Invoice".into(), invoice.doc.total));
        }
        for payment in &payments {
            let description = format!("Payment ({})", payment.doc.method_name);
            entries.push(entry(&payment.doc.date, EntryKind::Payment, "payment", &payment.id, payment.doc.display_number().unwrap_or_default(), description, -payment.doc.amount));
        }
        for allocation in &allocations {
            let description = format!(
                "{} of {} applied to {}",
                display_amount(allocation.amount, &allocation.currency),
                payment_numbers.get(&allocation.payment).cloned().unwrap_or_default(),
                invoice_numbers.get(&allocation.invoice).cloned().unwrap_or_default()
            );
            let reference = format!("{}-{}", payment_numbers.get(&allocation.payment).cloned().unwrap_or_default(), allocation.sequence);
            entries.push(entry(&allocation.date, EntryKind::Allocation, "allocation", &allocation.id, reference, description, Decimal::ZERO));
        }
        for refund in &refunds {
            let reference = payment_numbers.get(&refund.payment).cloned().unwrap_or_default();
            entries.push(entry(&refund.date, EntryKind::Refund, "refund", &refund.id, reference, "Refund".into(), refund.amount));
        }
        for note in &credit_notes {
            let description = format!("Credit note: {}", note.reason);
            entries.push(entry(&note.date, EntryKind::CreditNote, "credit_note", &note.id, format_number("CN", note.number), description, -note.total));
        }
        // Same-day entries in the order money moves: charges, then credits, then allocations.
        let rank = |kind: EntryKind| match kind {
            EntryKind::Invoice => 0,
            EntryKind::Payment => 1,
            EntryKind::CreditNote => 2,
            EntryKind::Allocation => 3,
            EntryKind::Refund => 4,
        };
        entries.sort_by(|a, b| (&a.date, rank(a.kind), &a.record).cmp(&(&b.date, rank(b.kind), &b.record)));
        let from = date_string(from);
        let opening_balance: Decimal = entries.iter().filter(|e| e.date < from).map(|e| e.amount).sum();
        let mut running = opening_balance;
        let mut in_range: Vec<StatementEntry> = entries.into_iter().filter(|e| e.date >= from).collect();
        for entry in &mut in_range {
            running += entry.amount;
            entry.balance = running;
        }
        Ok(Statement { opening_balance, entries: in_range, closing_balance: running })
    }
}

fn entry(
    date: &str,
    kind: EntryKind,
    table: &str,
    id: &surrealdb::types::RecordId,
    reference: String,
    description: String,
    amount: Decimal,
) -> StatementEntry {
    StatementEntry {
        date: date.to_owned(),
        kind,
        record: format!("{table}:{}", key_of(id)),
        reference,
        description,
        amount,
        balance: Decimal::ZERO,
    }
}
