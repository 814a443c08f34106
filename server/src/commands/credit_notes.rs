//! Credit notes (C1-C4): issued against one OPEN invoice, lowering only that invoice's balance,
//! and voided again.

use chrono::NaiveDate;

use super::{Commands, events};
use crate::events::LedgerEvent;
use crate::error::{AppError, AppResult};
use crate::ledger::credit_note::{self as rules, CreditRequest, CreditableLine};
use crate::ledger::{Currency, Money};
use crate::store::audit::{AuditEntry, Mutation};
use crate::store::credit_notes::creditable;
use crate::store::invoices::{status_str, summary};
use crate::store::locks::{counter_lock, record_lock};
use crate::store::preview::Applied;

impl Commands {
    /// issueCreditNote: credits chosen lines of an OPEN invoice (C1, C2); the invoice may become
    /// PAID when nothing is left owing (I3). Returns the credit note's key.
    pub async fn issue_credit_note(
        &self,
        mutation: &Mutation<'_>,
        invoice_key: &str,
        reason: String,
        requests: Vec<CreditRequest>,
        date: NaiveDate,
    ) -> AppResult<Applied<String>> {
        let store = &self.store;
        let turns = store.locks().lock_all(&[counter_lock(mutation.tenant, "credit_note"), record_lock("invoice", invoice_key)]).await;
        let (reason, requests) = (reason.trim(), &requests);
        let applied = store
            .apply(mutation, |tx| async move {
                let invoice = store.load_invoice(&tx, mutation.tenant, invoice_key).await?;
                let currency = Currency::parse(&invoice.doc.currency)?;
                for request in requests.iter() {
                    if let rules::CreditBy::Amount(amount) = request.by {
                        Money::from_decimal(amount, currency)?;
                    }
                }
                let lines: Vec<CreditableLine> = invoice.doc.lines.iter().map(creditable).collect();
                let effect = rules::issue(&invoice.doc.facts(), &lines, reason, requests, currency)?;
                let key = store.write_credit_note_issued(&tx, mutation, &invoice, reason, &effect, date).await?;
                let mut events = vec![LedgerEvent::CreditNoteIssued {
                    credit_note: key.clone(),
                    invoice: invoice_key.to_owned(),
                    total: effect.total,
                    currency: invoice.doc.currency.clone(),
                }];
                events.extend(events::status_changed(&invoice, effect.invoice_status));
                let entry = AuditEntry {
                    events,
                    action: "credit_note.issue".into(),
                    records: vec![format!("credit_note:{key}"), format!("invoice:{invoice_key}")],
                    before: Some(summary(&invoice.doc)),
                    after: Some(serde_json::json!({"total": effect.total.to_string(), "invoiceStatus": status_str(effect.invoice_status)})),
                    reason: Some(reason.to_owned()),
                    ..AuditEntry::default()
                };
                Ok((key, entry))
            })
            .await;
        drop(turns);
        self.publish(mutation.tenant).await;
        applied
    }

    /// voidCreditNote (C4): the invoice balance is restored and a PAID invoice is OPEN again.
    pub async fn void_credit_note(&self, mutation: &Mutation<'_>, key: &str, reason: Option<String>) -> AppResult<Applied<String>> {
        let store = &self.store;
        let note = store.credit_note(mutation.tenant, key).await?.ok_or_else(|| AppError::not_found("credit note"))?;
        let turn = store.locks().lock(&record_lock("invoice", &note.invoice)).await;
        let reason = &reason;
        let applied = store
            .apply(mutation, |tx| async move {
                let note = store.load_credit_note(&tx, mutation.tenant, key).await?;
                let invoice = store.load_invoice(&tx, mutation.tenant, &note.invoice).await?;
                let (credited, status) = rules::void(&invoice.doc.facts(), note.total, note.status == "VOID")?;
                store.write_credit_note_voided(&tx, &note, &invoice, credited, status, reason.clone()).await?;
                let mut events = vec![LedgerEvent::CreditNoteVoided { credit_note: key.to_owned(), invoice: note.invoice.clone() }];
                events.extend(events::status_changed(&invoice, status));
                let entry = AuditEntry {
                    events,
                    action: "credit_note.void".into(),
                    records: vec![format!("credit_note:{key}"), format!("invoice:{}", note.invoice)],
                    before: Some(summary(&invoice.doc)),
                    after: Some(serde_json::json!({"invoiceStatus": status_str(status), "credited": credited.to_string()})),
                    reason: reason.clone(),
                    ..AuditEntry::default()
                };
                Ok((key.to_owned(), entry))
            })
            .await;
        drop(turn);
        self.publish(mutation.tenant).await;
        applied
    }
}
