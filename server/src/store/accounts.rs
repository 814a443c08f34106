//! A client's account: loading what its balance (B1) and statement (B2) are made of; the
//! rules are ledger/account.rs.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::invoices::{date_string, parse_date};
use super::rows::{AllocationRow, CreditNoteRow, InvoiceRow, PaymentRow, RefundRow, key_of};
use super::{Store, Vars};
use crate::auth::TenantId;
use crate::error::AppResult;
use crate::ledger::account::{self, ClientBalance, EntryKind, Statement, StatementEntry};
use crate::ledger::invoice::InvoiceFacts;
use crate::ledger::money::display_amount;
use crate::ledger::numbering::format_number;
use crate::ledger::payment::PaymentFacts;

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
        let invoices: Vec<(InvoiceFacts, NaiveDate)> = invoices.iter().map(|i| (i.doc.facts(), parse_date(&i.doc.due_date))).collect();
        let payments: Vec<PaymentFacts> = payments.iter().map(|p| p.doc.facts()).collect::<AppResult<_>>()?;
        Ok(account::client_balance(invoices.iter().map(|(facts, due)| (facts, *due)), &payments, today))
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
            entries.push(entry(&payment.doc.date, EntryKind::Payment, "payment", &payment.id, payment.doc.display_number().unwrap_or_default(), description, payment.doc.amount));
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
            entries.push(entry(&note.date, EntryKind::CreditNote, "credit_note", &note.id, format_number("CN", note.number), description, note.total));
        }
        Ok(account::statement(entries, from))
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
        date: parse_date(date),
        kind,
        record: format!("{table}:{}", key_of(id)),
        reference,
        description,
        amount: kind.owed(amount),
        balance: Decimal::ZERO,
    }
}
