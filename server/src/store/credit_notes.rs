//! Credit notes (C1-C4): issued against one OPEN invoice, lowering only that invoice's balance.

use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;

use super::audit::{AuditEntry, Mutation};
use super::directory::read_owned;
use super::invoices::{date_string, read_invoice, status_str, summary};
use super::locks::{counter_lock, record_lock};
use super::payments::next_number;
use super::rows::{CreditLineRow, CreditNoteRow, LineRow, new_key, page_key, record};
use super::{Store, Vars};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::ledger::credit_note::{self as rules, CreditRequest, CreditableLine};
use crate::ledger::{Currency, Money};

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

fn creditable(line: &LineRow) -> CreditableLine {
    CreditableLine {
        quantity: line.quantity,
        subtotal: line.subtotal,
        tax: line.tax,
        total: line.total,
        credited: line.credited.unwrap_or(Decimal::ZERO),
    }
}

impl Store {
    /// Issues a credit note for chosen lines of an OPEN invoice (C1, C2); the invoice may become
    /// PAID when nothing is left owing (I3).
    pub async fn issue_credit_note(
        &self,
        mutation: &Mutation<'_>,
        invoice_key: &str,
        reason: String,
        requests: Vec<CreditRequest>,
        date: NaiveDate,
    ) -> AppResult<String> {
        let keys = [counter_lock(mutation.tenant, "credit_note"), record_lock("invoice", invoice_key)];
        let _turns = self.locks().lock_all(&keys).await;
        let (reason, requests) = (&reason, &requests);
        self.mutate(mutation, |tx| async move {
            let invoice = read_invoice(&tx, self, mutation.tenant, invoice_key).await?;
            let currency = Currency::parse(&invoice.doc.currency)?;
            for request in requests.iter() {
                if let rules::CreditBy::Amount(amount) = request.by {
                    Money::from_decimal(amount, currency)?;
                }
            }
            let lines: Vec<CreditableLine> = invoice.doc.lines.iter().map(creditable).collect();
            let effect = rules::issue(&invoice.doc.facts(), &lines, reason, requests, currency)?;
            let number = next_number(&tx, mutation.tenant, "credit_note").await?;
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
                    total = $total, status = 'ISSUED', created_at = time::now();
                 UPDATE $invoice_id SET lines = $invoice_lines, credited = $credited, issued_credit_notes += 1,
                    status = $status, updated_at = time::now();",
                Vars::new()
                    .set("id", record("credit_note", &key))
                    .set("tenant", mutation.tenant.as_str().to_owned())
                    .set("page_key", page_key(mutation.tenant.as_str(), &key))
                    .set("number", number)
                    .set("invoice", invoice_key.to_owned())
                    .set("client", invoice.doc.client.clone())
                    .set("currency", invoice.doc.currency.clone())
                    .set("date", date_string(date))
                    .set("reason", reason.trim().to_owned())
                    .set("lines", credit_lines)
                    .set("subtotal", effect.subtotal)
                    .set("tax", effect.tax)
                    .set("total", effect.total)
                    .set("invoice_id", invoice.id.clone())
                    .set("invoice_lines", invoice_lines)
                    .set("credited", effect.invoice_credited)
                    .set("status", status_str(effect.invoice_status).to_owned()),
            )
            .await?;
            let entry = AuditEntry {
                action: "credit_note.issue".into(),
                records: vec![format!("credit_note:{key}"), format!("invoice:{invoice_key}")],
                before: Some(summary(&invoice.doc)),
                after: Some(serde_json::json!({"total": effect.total.to_string(), "invoiceStatus": status_str(effect.invoice_status)})),
                reason: Some(reason.trim().to_owned()),
                ..AuditEntry::default()
            };
            Ok((key, entry))
        })
        .await
    }

    /// Voids a credit note (C4): the invoice balance is restored and a PAID invoice is OPEN again.
    pub async fn void_credit_note(&self, mutation: &Mutation<'_>, key: &str, reason: Option<String>) -> AppResult<String> {
        let note = self.credit_note(mutation.tenant, key).await?.ok_or_else(|| AppError::not_found("credit note"))?;
        let _turn = self.locks().lock(&record_lock("invoice", &note.invoice)).await;
        let reason = &reason;
        self.mutate(mutation, |tx| async move {
            let note = read_owned::<CreditNoteRow>(Some(&tx), self, mutation.tenant, "credit_note", key)
                .await?
                .ok_or_else(|| AppError::not_found("credit note"))?;
            let invoice = read_invoice(&tx, self, mutation.tenant, &note.invoice).await?;
            let (credited, status) = rules::void(&invoice.doc.facts(), note.total, note.status == "VOID")?;
            let mut invoice_lines = invoice.doc.lines.clone();
            for credited_line in &note.lines {
                if let Some(line) = invoice_lines.get_mut(credited_line.line as usize) {
                    let left = line.credited.unwrap_or(Decimal::ZERO) - credited_line.total;
                    line.credited = Some(left.max(Decimal::ZERO));
                }
            }
            tx.query(
                "UPDATE $id SET status = 'VOID', voided_at = $now, void_reason = $reason;
                 UPDATE $invoice_id SET lines = $invoice_lines, credited = $credited, issued_credit_notes -= 1,
                    status = $status, updated_at = time::now();",
                Vars::new()
                    .set("id", note.id.clone())
                    .set("now", Utc::now())
                    .set("reason", reason.clone())
                    .set("invoice_id", invoice.id.clone())
                    .set("invoice_lines", invoice_lines)
                    .set("credited", credited)
                    .set("status", status_str(status).to_owned()),
            )
            .await?;
            let entry = AuditEntry {
                action: "credit_note.void".into(),
                records: vec![format!("credit_note:{key}"), format!("invoice:{}", note.invoice)],
                before: Some(summary(&invoice.doc)),
                after: Some(serde_json::json!({"invoiceStatus": status_str(status), "credited": credited.to_string()})),
                reason: reason.clone(),
                ..AuditEntry::default()
            };
            Ok((key.to_owned(), entry))
        })
        .await
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
        let mut conditions = vec!["tenant = $tenant"];
        if filter.client.is_some() {
            conditions.push("client = $client");
        }
        if filter.invoice.is_some() {
            conditions.push("invoice = $invoice");
        }
        if filter.status.is_some() {
            conditions.push("status = $status");
        }
        if filter.from.is_some() {
            conditions.push("date >= $from");
        }
        if filter.to.is_some() {
            conditions.push("date <= $to");
        }
        let vars = Vars::new()
            .set("tenant", tenant.as_str().to_owned())
            .set("client", filter.client.clone())
            .set("invoice", filter.invoice.clone())
            .set("status", filter.status.map(str::to_owned))
            .set("from", filter.from.map(date_string))
            .set("to", filter.to.map(date_string));
        self.page("credit_note", tenant, &conditions.join(" AND "), after, limit, count, vars).await
    }

    pub async fn credit_notes_of(&self, tenant: &TenantId, invoice_key: &str) -> AppResult<Vec<CreditNoteRow>> {
        let mut results = self
            .query(
                "SELECT * FROM credit_note WHERE invoice = $invoice AND tenant = $tenant ORDER BY id",
                Vars::new().set("invoice", invoice_key.to_owned()).set("tenant", tenant.as_str().to_owned()),
            )
            .await?;
        results.rows(0)
    }
}
