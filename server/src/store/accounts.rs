//! A client's account: loading what its balance (B1) and statement (B2) are made of; the
//! rules are ledger/account.rs.

use chrono::NaiveDate;

use super::invoices::{date_string, parse_date};
use super::rows::{AllocationRow, CreditNoteRow, InvoiceRow, PaymentRow, RefundRow, key_of};
use super::{Store, Vars};
use crate::auth::TenantId;
use crate::error::AppResult;
use crate::ledger::account::{
    self, ClientBalance, Statement, StatementAllocation, StatementCreditNote, StatementInvoice, StatementPayment, StatementRecords, StatementRefund,
};
use crate::ledger::invoice::InvoiceFacts;
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
        let records = StatementRecords {
            invoices: invoices
                .iter()
                .map(|i| StatementInvoice {
                    key: key_of(&i.id),
                    number: i.doc.number.map(|n| format_number("INV", n)).unwrap_or_default(),
                    issue_date: parse_date(&i.doc.issue_date),
                    total: i.doc.total,
                })
                .collect(),
            payments: payments
                .iter()
                .map(|p| StatementPayment {
                    key: key_of(&p.id),
                    number: p.doc.display_number().unwrap_or_default(),
                    method_name: p.doc.method_name.clone(),
                    date: parse_date(&p.doc.date),
                    amount: p.doc.amount,
                })
                .collect(),
            allocations: allocations
                .iter()
                .map(|a| StatementAllocation {
                    key: key_of(&a.id),
                    payment: a.payment.clone(),
                    invoice: a.invoice.clone(),
                    sequence: a.sequence,
                    date: parse_date(&a.date),
                    amount: a.amount,
                })
                .collect(),
            refunds: refunds
                .iter()
                .map(|r| StatementRefund { key: key_of(&r.id), payment: r.payment.clone(), date: parse_date(&r.date), amount: r.amount })
                .collect(),
            credit_notes: credit_notes
                .iter()
                .map(|n| StatementCreditNote {
                    key: key_of(&n.id),
                    number: format_number("CN", n.number),
                    reason: n.reason.clone(),
                    date: parse_date(&n.date),
                    total: n.total,
                })
                .collect(),
        };
        Ok(records.statement(currency, from))
    }
}
