//! Credit notes as stored: reading them, and writing what the commands decide
//! (commands/credit_notes.rs).

use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;

use super::audit::Mutation;
use super::directory::read_owned;
use super::invoices::{date_string, status_str};
use super::payments::next_number;
use super::rows::{CreditLineRow, CreditNoteRow, InvoiceRow, LineRow, key_of, new_key, page_key, record};
use super::{ListFilter, Store, TxRef, Vars};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::ledger::credit_note::{CreditNoteEffect, CreditableLine};
use crate::ledger::invoice::InvoiceStatus;

/// Which credit notes to list.
#[derive(Debug, Clone, Default)]
pub struct CreditNoteFilter {
    pub client: Option<String>,
    pub invoice: Option<String>,
    /// As stored: ISSUED or VOID.
    pub status: Option<&'static str>,
    /// The credit note's date, on or after.
    pub from: Option<NaiveDate>,
    /// The credit note's date, on or before.
    pub to: Option<NaiveDate>,
}

impl super::directory::Owned for CreditNoteRow {
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

/// What the credit-note rules need of an invoice line.
pub(crate) fn creditable(line: &LineRow) -> CreditableLine {
    CreditableLine {
        quantity: line.quantity,
        subtotal: line.subtotal,
        tax: line.tax,
        total: line.total,
        credited: line.credited.unwrap_or(Decimal::ZERO),
    }
}

impl Store {
    /// Writes an issued credit note as decided (C1, C2): the note with the tenant's next
    /// credit-note number, and its invoice's credited lines, sums and status. Returns its key.
    pub(crate) async fn write_credit_note_issued(
        &self,
        tx: &TxRef,
        mutation: &Mutation<'_>,
        invoice: &InvoiceRow,
        reason: &str,
        effect: &CreditNoteEffect,
        date: NaiveDate,
    ) -> AppResult<String> {
        let number = next_number(tx, mutation.tenant, "credit_note").await?;
        let mut invoice_lines = invoice.doc.lines.clone();
        let credit_lines: Vec<CreditLineRow> = effect
            .lines
            .iter()
            .map(|credited| {
                let line = &mut invoice_lines[credited.line];
                line.credited = Some(line.credited.unwrap_or(Decimal::ZERO) + credited.total);
                CreditLineRow {
                    line: credited.line as i64,
                    description: line.description.clone(),
                    quantity: credited.quantity,
                    subtotal: credited.subtotal,
                    tax: credited.tax,
                    total: credited.total,
                }
            })
            .collect();
        let key = new_key();
        tx.query(
            "CREATE $id SET tenant = $tenant, page_key = $page_key, number = $number, invoice = $invoice, client = $client,
                currency = $currency, date = $date, reason = $reason, lines = $lines, subtotal = $subtotal, tax = $tax,
                total = $total, status = 'ISSUED', created_at = time::now(), created_by = $actor RETURN NONE;
             UPDATE $invoice_id SET lines = $invoice_lines, credited = $credited, issued_credit_notes += 1,
                status = $status, updated_at = time::now() RETURN NONE;",
            Vars::new()
                .set("id", record("credit_note", &key))
                .set("tenant", mutation.tenant.as_str().to_owned())
                .set("page_key", page_key(mutation.tenant.as_str(), &key))
                .set("number", number)
                .set("invoice", key_of(&invoice.id))
                .set("client", invoice.doc.client.clone())
                .set("currency", invoice.doc.currency.clone())
                .set("date", date_string(date))
                .set("reason", reason.to_owned())
                .set("lines", credit_lines)
                .set("subtotal", effect.subtotal)
                .set("tax", effect.tax)
                .set("total", effect.total)
                .set("actor", mutation.actor.to_owned())
                .set("invoice_id", invoice.id.clone())
                .set("invoice_lines", invoice_lines)
                .set("credited", effect.invoice_credited)
                .set("status", status_str(effect.invoice_status).to_owned()),
        )
        .await?;
        Ok(key)
    }

    /// A credit note of the tenant, read in the caller's transaction.
    pub(crate) async fn load_credit_note(&self, tx: &TxRef, tenant: &TenantId, key: &str) -> AppResult<CreditNoteRow> {
        read_owned::<CreditNoteRow>(Some(tx), self, tenant, "credit_note", key).await?.ok_or_else(|| AppError::not_found("credit note"))
    }

    /// Writes a voided credit note as decided (C4): the note VOID, and its invoice's credited
    /// lines, sums and status restored.
    pub(crate) async fn write_credit_note_voided(
        &self,
        tx: &TxRef,
        note: &CreditNoteRow,
        invoice: &InvoiceRow,
        credited: Decimal,
        status: InvoiceStatus,
        reason: Option<String>,
    ) -> AppResult<()> {
        let mut invoice_lines = invoice.doc.lines.clone();
        for credited_line in &note.lines {
            if let Some(line) = invoice_lines.get_mut(credited_line.line as usize) {
                let left = line.credited.unwrap_or(Decimal::ZERO) - credited_line.total;
                line.credited = Some(left.max(Decimal::ZERO));
            }
        }
        tx.query(
            "UPDATE $id SET status = 'VOID', voided_at = $now, void_reason = $reason RETURN NONE;
             UPDATE $invoice_id SET lines = $invoice_lines, credited = $credited, issued_credit_notes -= 1,
                status = $status, updated_at = time::now() RETURN NONE;",
            Vars::new()
                .set("id", note.id.clone())
                .set("now", Utc::now())
                .set("reason", reason)
                .set("invoice_id", invoice.id.clone())
                .set("invoice_lines", invoice_lines)
                .set("credited", credited)
                .set("status", status_str(status).to_owned()),
        )
        .await?;
        Ok(())
    }

    pub async fn credit_note(&self, tenant: &TenantId, key: &str) -> AppResult<Option<CreditNoteRow>> {
        read_owned(None, self, tenant, "credit_note", key).await
    }

    /// A page of credit notes, newest first, void ones included unless the filter says
    /// otherwise, and (when `count`) how many match the filter.
    pub async fn credit_notes(
        &self,
        tenant: &TenantId,
        filter: &CreditNoteFilter,
        after: Option<String>,
        limit: usize,
        count: bool,
    ) -> AppResult<(Vec<CreditNoteRow>, Option<i64>)> {
        let filter = ListFilter::of_tenant(tenant)
            .with("client = $client", "client", filter.client.clone())
            .with("invoice = $invoice", "invoice", filter.invoice.clone())
            .with("status = $status", "status", filter.status.map(str::to_owned))
            .with("date >= $from", "from", filter.from.map(date_string))
            .with("date <= $to", "to", filter.to.map(date_string));
        self.page("credit_note", tenant, filter, after, limit, count).await
    }
}
