//! The money changes the journal is derived from (ledger/journal.rs): every audit event that
//! carries ledger events (E1), in the order the changes took effect, with the amounts of the
//! records each names. Reads only; the journal is never stored.
//!
//! Why audit events and not the records alone: a record keeps only its latest state. An invoice
//! reverted to draft (I5) and finalized again keeps one `finalized_at`, and the moment it was
//! reverted is on no record at all; the audit event of each change has its time (`at`), so the
//! journal as of any moment (T1) is the changes up to it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use surrealdb::types::{RecordId, SurrealValue};

use super::invoices::parse_date;
use super::rows::{AllocationRow, CreditNoteRow, InvoiceRow, PaymentMethodRow, PaymentRow, RefundRow, key_of};
use super::{Store, Vars};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::events::{InvoiceStatus, LedgerEvent, RefundOutcome, from_stored};
use crate::ledger::as_of::{Books, books_at};
use crate::ledger::journal::{Change, Chart, Entry, InvoiceTerms, Movement, Named, derive};
use crate::ledger::numbering::format_number;

/// An audit event as the journal reads it: a money change (with ledger events), or an edit of a
/// draft invoice (which tells that an earlier finalization's amounts are no longer the record's).
#[derive(Debug, Clone, SurrealValue)]
struct ChangeRow {
    id: RecordId,
    at: DateTime<Utc>,
    action: String,
    records: Vec<String>,
    before: Option<String>,
    events: Option<String>,
}

/// The action of an edit of a draft invoice (commands/invoices.rs).
const INVOICE_UPDATE: &str = "invoice.update";

/// The records the changes name, by key.
#[derive(Default)]
struct Records {
    invoices: HashMap<String, InvoiceRow>,
    payments: HashMap<String, PaymentRow>,
    allocations: HashMap<String, AllocationRow>,
    refunds: HashMap<String, RefundRow>,
    credit_notes: HashMap<String, CreditNoteRow>,
}

fn missing(table: &str, key: &str) -> AppError {
    AppError::internal(format!("the journal names {table}:{key}, which is not stored"))
}

fn found<'a, T>(rows: &'a HashMap<String, T>, table: &str, key: &str) -> AppResult<&'a T> {
    rows.get(key).ok_or_else(|| missing(table, key))
}

fn by_key<T>(rows: Vec<T>, id: impl Fn(&T) -> &RecordId) -> HashMap<String, T> {
    rows.into_iter().map(|row| (key_of(id(&row)), row)).collect()
}

impl Records {
    fn invoice(&self, key: &str) -> AppResult<(&InvoiceRow, Named)> {
        let invoice = found(&self.invoices, "invoice", key)?;
        let reference = invoice.doc.number.map_or_else(|| format!("invoice {key}"), |n| format_number("INV", n));
        Ok((invoice, Named { record: format!("invoice:{key}"), reference }))
    }

    fn payment(&self, key: &str) -> AppResult<(&PaymentRow, Named)> {
        let payment = found(&self.payments, "payment", key)?;
        // A payment is unnumbered only in the moment between its commit and its numbering.
        let reference = payment.doc.display_number().unwrap_or_else(|| format!("payment {key}"));
        Ok((payment, Named { record: format!("payment:{key}"), reference }))
    }

    fn allocation(&self, key: &str, payment: &Named) -> AppResult<Named> {
        let allocation = found(&self.allocations, "allocation", key)?;
        Ok(Named { record: format!("allocation:{key}"), reference: format!("{}-{}", payment.reference, allocation.sequence) })
    }

    fn credit_note(&self, key: &str) -> AppResult<(&CreditNoteRow, Named)> {
        let note = found(&self.credit_notes, "credit_note", key)?;
        Ok((note, Named { record: format!("credit_note:{key}"), reference: format_number("CN", note.number) }))
    }

    /// A refund named as the statement shows it: by its payment's number.
    fn refund(&self, refund: &str, payment: &str) -> AppResult<(&PaymentRow, Named, Named)> {
        let (row, payment) = self.payment(payment)?;
        let refund = Named { record: format!("refund:{refund}"), reference: payment.reference.clone() };
        Ok((row, refund, payment))
    }

    /// A refund that succeeded, paid back through its payment's method.
    fn refund_paid(&self, refund_key: &str, payment: &str) -> AppResult<(String, Movement)> {
        let (row, refund, payment) = self.refund(refund_key, payment)?;
        let stored = found(&self.refunds, "refund", refund_key)?;
        let (method, method_name) = (row.doc.method.clone(), row.doc.method_name.clone());
        let movement = Movement::RefundPaid { refund, payment, method, method_name, amount: stored.amount, date: parse_date(&stored.date) };
        Ok((row.doc.currency.clone(), movement))
    }
}

/// The keys of every record the events name, per table.
fn named_keys(changes: &[(ChangeRow, Vec<LedgerEvent>)]) -> [Vec<String>; 5] {
    let [mut invoices, mut payments, mut allocations, mut refunds, mut notes] = [(); 5].map(|_| Vec::new());
    for event in changes.iter().flat_map(|(_, events)| events) {
        match event {
            LedgerEvent::PaymentRecorded { payment, .. } | LedgerEvent::PaymentVoided { payment } => payments.push(payment),
            LedgerEvent::PaymentAllocated { allocation, payment, invoice, .. } | LedgerEvent::AllocationRemoved { allocation, payment, invoice, .. } => {
                allocations.push(allocation);
                payments.push(payment);
                invoices.push(invoice);
            }
            LedgerEvent::PaymentRefunded { refund, payment, .. } | LedgerEvent::RefundSettled { refund, payment, .. } => {
                refunds.push(refund);
                payments.push(payment);
            }
            LedgerEvent::InvoiceFinalized { invoice } | LedgerEvent::InvoiceStatusChanged { invoice, .. } | LedgerEvent::InvoiceVoided { invoice } => {
                invoices.push(invoice)
            }
            LedgerEvent::CreditNoteIssued { credit_note, invoice, .. } | LedgerEvent::CreditNoteVoided { credit_note, invoice } => {
                notes.push(credit_note);
                invoices.push(invoice);
            }
            LedgerEvent::PaymentUpdated { .. } | LedgerEvent::ChargeDeclined { .. } => {}
        }
    }
    [invoices, payments, allocations, refunds, notes].map(|mut keys| {
        keys.sort();
        keys.dedup();
        keys.into_iter().cloned().collect()
    })
}

/// The total and tax an invoice had before the edit recorded in `update`'s audit summary, and
/// who it billed and when, as far as the summary keeps them: the tax since schema version 8, the
/// client and dates since as-of reports (None before: the record's are taken).
fn replaced_by_edit(update: &ChangeRow) -> AppResult<(Decimal, Option<Decimal>, Option<InvoiceTerms>)> {
    let summary: serde_json::Value = serde_json::from_str(update.before.as_deref().unwrap_or("null")).map_err(AppError::internal)?;
    let amount = |field: &str| summary[field].as_str().and_then(|amount| amount.parse().ok());
    let total = amount("total").ok_or_else(|| AppError::internal(format!("audit event {} keeps no invoice total", key_of(&update.id))))?;
    let date = |field: &str| summary[field].as_str().and_then(|text| chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok());
    let terms = match (summary["client"].as_str(), date("issueDate"), date("dueDate")) {
        (Some(client), Some(issue_date), Some(due_date)) => Some(InvoiceTerms { client: client.to_owned(), issue_date, due_date }),
        _ => None,
    };
    Ok((total, amount("tax"), terms))
}

/// What the journal needs to know of one change: its movements, in its currency.
struct ChangeBuilder<'a> {
    records: &'a Records,
    /// For each invoice, the places (in the list of changes) of the edits of it as a draft.
    edits: &'a HashMap<String, Vec<usize>>,
    rows: &'a [(ChangeRow, Vec<LedgerEvent>)],
}

impl ChangeBuilder<'_> {
    /// I2: what finalizing `key` at place `at` made it owe, and whom. The invoice's total, tax,
    /// client and dates as stored are those of its last finalization unless it was edited after
    /// this one (reverted to draft first, I5); then the edit's audit summary has the total it
    /// replaced, and its tax (since schema version 8), client and dates (since as-of reports).
    fn finalized(&self, key: &str, at: usize) -> AppResult<(String, Movement)> {
        let (row, invoice) = self.records.invoice(key)?;
        let stored_terms =
            || InvoiceTerms { client: row.doc.client.clone(), issue_date: parse_date(&row.doc.issue_date), due_date: parse_date(&row.doc.due_date) };
        let next_edit = self.edits.get(key).and_then(|places| places.iter().find(|place| **place > at));
        let (total, tax, terms) = match next_edit {
            None => (row.doc.total, Some(row.doc.tax), stored_terms()),
            Some(place) => {
                let (total, tax, terms) = replaced_by_edit(&self.rows[*place].0)?;
                (total, tax, terms.unwrap_or_else(stored_terms))
            }
        };
        Ok((row.doc.currency.clone(), Movement::InvoiceFinalized { invoice, total, tax, terms }))
    }

    /// The movement of one ledger event at place `at`, with its currency; None for an event
    /// that changes no amount (a status change between OPEN and PAID, which follows from the
    /// balance (I3), a refund declined at once, a payment's description edited, a declined
    /// charge).
    fn movement(&self, event: &LedgerEvent, at: usize) -> AppResult<Option<(String, Movement)>> {
        let records = self.records;
        Ok(Some(match event {
            LedgerEvent::InvoiceFinalized { invoice } => self.finalized(invoice, at)?,
            LedgerEvent::InvoiceStatusChanged { invoice, to: InvoiceStatus::Draft, .. } => {
                let (row, invoice) = records.invoice(invoice)?;
                (row.doc.currency.clone(), Movement::InvoiceReverted { invoice })
            }
            LedgerEvent::InvoiceVoided { invoice } => {
                let (row, invoice) = records.invoice(invoice)?;
                (row.doc.currency.clone(), Movement::InvoiceVoided { invoice })
            }
            LedgerEvent::PaymentRecorded { payment, amount, currency, .. } => {
                let (row, payment) = records.payment(payment)?;
                let doc = &row.doc;
                let movement = Movement::PaymentReceived {
                    payment,
                    method: doc.method.clone(),
                    method_name: doc.method_name.clone(),
                    amount: *amount,
                    client: doc.client.clone(),
                    date: parse_date(&doc.date),
                    location: doc.location.clone(),
                };
                (currency.clone(), movement)
            }
            LedgerEvent::PaymentAllocated { allocation: key, payment, invoice, amount, currency } => {
                let ((_, payment), (_, invoice)) = (records.payment(payment)?, records.invoice(invoice)?);
                let allocation = records.allocation(key, &payment)?;
                let row = found(&records.allocations, "allocation", key)?;
                let (sequence, date) = (row.sequence, parse_date(&row.date));
                (currency.clone(), Movement::PaymentAllocated { allocation, payment, invoice, amount: *amount, sequence, date })
            }
            LedgerEvent::AllocationRemoved { allocation, payment, invoice, amount, currency } => {
                let ((_, payment), (_, invoice)) = (records.payment(payment)?, records.invoice(invoice)?);
                let allocation = records.allocation(allocation, &payment)?;
                (currency.clone(), Movement::AllocationRemoved { allocation, payment, invoice, amount: *amount })
            }
            LedgerEvent::PaymentRefunded { refund, payment, outcome: RefundOutcome::Succeeded, .. }
            | LedgerEvent::RefundSettled { refund, payment, outcome: RefundOutcome::Succeeded } => records.refund_paid(refund, payment)?,
            LedgerEvent::PaymentRefunded { refund, payment, amount, currency, outcome: RefundOutcome::Pending } => {
                let (_, refund, payment) = records.refund(refund, payment)?;
                (currency.clone(), Movement::RefundHeld { refund, payment, amount: *amount })
            }
            LedgerEvent::RefundSettled { refund, payment, outcome: RefundOutcome::Declined } => {
                let (row, refund, payment) = records.refund(refund, payment)?;
                (row.doc.currency.clone(), Movement::RefundReleased { refund, payment })
            }
            LedgerEvent::PaymentVoided { payment } => {
                let (row, payment) = records.payment(payment)?;
                (row.doc.currency.clone(), Movement::PaymentVoided { payment })
            }
            LedgerEvent::CreditNoteIssued { credit_note, invoice, .. } => {
                let ((note, credit_note), (_, invoice)) = (records.credit_note(credit_note)?, records.invoice(invoice)?);
                let (date, reason) = (parse_date(&note.date), note.reason.clone());
                (note.currency.clone(), Movement::CreditNoteIssued { credit_note, invoice, total: note.total, tax: note.tax, date, reason })
            }
            LedgerEvent::CreditNoteVoided { credit_note, invoice } => {
                let ((note, credit_note), (_, invoice)) = (records.credit_note(credit_note)?, records.invoice(invoice)?);
                (note.currency.clone(), Movement::CreditNoteVoided { credit_note, invoice })
            }
            LedgerEvent::InvoiceStatusChanged { .. }
            | LedgerEvent::PaymentRefunded { .. }
            | LedgerEvent::RefundSettled { .. }
            | LedgerEvent::PaymentUpdated { .. }
            | LedgerEvent::ChargeDeclined { .. } => return Ok(None),
        }))
    }

    /// The change recorded at place `at`, or None when it moved no money.
    fn change(&self, at: usize) -> AppResult<Option<Change>> {
        let (row, events) = &self.rows[at];
        let mut currency: Option<String> = None;
        let mut movements = Vec::new();
        for event in events {
            let Some((money, movement)) = self.movement(event, at)? else { continue };
            if currency.as_ref().is_some_and(|c| *c != money) {
                // M6: one change moves money of one currency; anything else is a fault to show.
                return Err(AppError::internal(format!("audit event {} moves money of two currencies", key_of(&row.id))));
            }
            currency = Some(money);
            movements.push(movement);
        }
        Ok(currency.map(|currency| Change { audit_event: key_of(&row.id), at: row.at, currency, movements }))
    }
}

impl Store {
    /// The tenant's records of `table` with these keys; no query when there are none.
    async fn named_records<T: SurrealValue>(&self, table: &str, tenant: &TenantId, keys: Vec<String>) -> AppResult<Vec<T>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.records_by_keys(table, tenant, keys).await
    }

    /// J1: the tenant's chart of accounts and journal, every money change to date in the order
    /// the changes took effect (their audit events' time, then key). Reads every audit event of
    /// the tenant and the records their events name: the journal is derived each time, never
    /// kept.
    pub async fn journal(&self, tenant: &TenantId) -> AppResult<(Chart, Vec<Entry>)> {
        let (chart, changes) = self.money_changes(tenant).await?;
        Ok((chart, derive(&changes)))
    }

    /// T1: the tenant's books as they stood at `at` (ledger/as_of.rs), replayed from the money
    /// changes up to that moment. Reads the tenant's whole history, as the journal does.
    pub async fn books_at(&self, tenant: &TenantId, at: DateTime<Utc>) -> AppResult<Books> {
        let (_, changes) = self.money_changes(tenant).await?;
        books_at(&changes, at)
    }

    /// The tenant's chart of accounts and every money change to date, in the order the changes
    /// took effect (their audit events' time, then key), each with what its records say: what
    /// the journal (J1) and the reports as of a moment (T1, ledger/as_of.rs) replay.
    pub async fn money_changes(&self, tenant: &TenantId) -> AppResult<(Chart, Vec<Change>)> {
        let mut found = self
            .query(
                "SELECT id, at, action, records, before, events FROM audit_event
                    WHERE tenant = $tenant AND (events != NONE OR action = $update) ORDER BY at, id;
                 SELECT * FROM payment_method WHERE tenant = $tenant ORDER BY id;",
                Vars::new().set("tenant", tenant.as_str().to_owned()).set("update", INVOICE_UPDATE.to_owned()),
            )
            .await?;
        let rows: Vec<ChangeRow> = found.rows(0)?;
        let methods: Vec<PaymentMethodRow> = found.rows(1)?;
        let chart = Chart::new(methods.into_iter().map(|method| (key_of(&method.id), method.name)).collect());
        let rows: Vec<(ChangeRow, Vec<LedgerEvent>)> = rows
            .into_iter()
            .map(|row| {
                let events = from_stored(row.events.as_deref())
                    .map_err(|error| AppError::internal(format!("the ledger events of audit event {}: {error}", key_of(&row.id))))?;
                Ok((row, events))
            })
            .collect::<AppResult<_>>()?;
        let mut edits: HashMap<String, Vec<usize>> = HashMap::new();
        for (place, (row, _)) in rows.iter().enumerate().filter(|(_, (row, _))| row.action == INVOICE_UPDATE) {
            for invoice in row.records.iter().filter_map(|record| record.strip_prefix("invoice:")) {
                edits.entry(invoice.to_owned()).or_default().push(place);
            }
        }
        let [invoices, payments, allocations, refunds, notes] = named_keys(&rows);
        let records = Records {
            invoices: by_key(self.named_records("invoice", tenant, invoices).await?, |row: &InvoiceRow| &row.id),
            payments: by_key(self.named_records("payment", tenant, payments).await?, |row: &PaymentRow| &row.id),
            allocations: by_key(self.named_records("allocation", tenant, allocations).await?, |row: &AllocationRow| &row.id),
            refunds: by_key(self.named_records("refund", tenant, refunds).await?, |row: &RefundRow| &row.id),
            credit_notes: by_key(self.named_records("credit_note", tenant, notes).await?, |row: &CreditNoteRow| &row.id),
        };
        let builder = ChangeBuilder { records: &records, edits: &edits, rows: &rows };
        let mut changes = Vec::new();
        for at in 0..rows.len() {
            changes.extend(builder.change(at)?);
        }
        Ok((chart, changes))
    }
}
