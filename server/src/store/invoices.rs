//! Invoices as stored: reading them and what they name, and writing the changes the commands
//! decide (commands/invoices.rs).

use chrono::NaiveDate;
use rust_decimal::Decimal;
use surrealdb::types::{Array, RecordId, RecordIdKey, Value};

use super::audit::Mutation;
use super::directory::{PartyKind, read_owned};
use super::rows::{InvoiceDoc, InvoiceRow, LocationRow, PartyRow, TaxRateRow, TenantRow, record};
use super::tenants::read_tenant;
use super::{ListFilter, Store, TxRef, Vars};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::ledger::invoice::{self as rules, InvoiceFacts, InvoiceStatus};
use crate::ledger::tax::TaxMode;

/// A line as entered: amounts are exact decimals still to be checked against the currency.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LineDraft {
    pub description: String,
    pub item_code: Option<String>,
    pub quantity: Decimal,
    pub unit_price: Decimal,
    pub discount: Option<DiscountDraft>,
    pub tax_rate: Option<String>,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub enum DiscountDraft {
    Amount(Decimal),
    Percent(Decimal),
}

/// An invoice as entered, for create and update.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InvoiceDraft {
    pub client: String,
    pub contact: Option<String>,
    pub location: String,
    pub practitioner: Option<String>,
    pub issue_date: NaiveDate,
    /// Issue date + the tenant's payment terms when not given.
    pub due_date: Option<NaiveDate>,
    /// The tenant's currency when not given.
    pub currency: Option<String>,
    pub notes: Option<String>,
    pub lines: Vec<LineDraft>,
}

/// Which invoices to list. `status` filters on the status a person sees, OVERDUE included (I4).
#[derive(Debug, Clone, Default)]
pub struct InvoiceFilter {
    pub status: Option<rules::DisplayStatus>,
    pub client: Option<String>,
    pub location: Option<String>,
    pub issued_from: Option<NaiveDate>,
    pub issued_to: Option<NaiveDate>,
}

pub fn status_str(status: InvoiceStatus) -> &'static str {
    match status {
        InvoiceStatus::Draft => "DRAFT",
        InvoiceStatus::Open => "OPEN",
        InvoiceStatus::Paid => "PAID",
        InvoiceStatus::Void => "VOID",
    }
}

pub fn parse_status(text: &str) -> InvoiceStatus {
    match text {
        "OPEN" => InvoiceStatus::Open,
        "PAID" => InvoiceStatus::Paid,
        "VOID" => InvoiceStatus::Void,
        _ => InvoiceStatus::Draft,
    }
}

pub fn parse_tax_mode(text: &str) -> TaxMode {
    match text {
        "INCLUSIVE" => TaxMode::Inclusive,
        "NONE" => TaxMode::None,
        _ => TaxMode::Exclusive,
    }
}

pub fn date_string(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// A stored date ("2026-11-26"); dates are written by Settle, so one that does not parse is a
/// fault, shown as the earliest date rather than hiding the record.
pub fn parse_date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap_or(NaiveDate::MIN)
}

impl InvoiceDoc {
    /// What the life-cycle rules need to know.
    pub fn facts(&self) -> InvoiceFacts {
        InvoiceFacts {
            status: parse_status(&self.status),
            numbered: self.number.is_some(),
            line_count: self.lines.len(),
            total: self.total,
            paid: self.paid,
            credited: self.credited,
            active_allocations: self.active_allocations.max(0) as usize,
            issued_credit_notes: self.issued_credit_notes.max(0) as usize,
        }
    }
}

impl super::directory::Owned for InvoiceRow {
    fn tenant(&self) -> &str {
        &self.doc.tenant
    }
}

fn number_record(tenant: &TenantId, number: i64) -> RecordId {
    let parts = Array::from(vec![Value::String(tenant.as_str().to_owned()), Value::Number(number.into())]);
    RecordId::new("invoice_number", RecordIdKey::Array(parts))
}

/// An invoice as its audit events keep it. The tax (kept since schema version 8) is there for
/// the journal: the edit that replaces a finalization (I5, then I1) is the only place left that
/// holds what that finalization made owing, tax included (store/journal.rs).
pub(crate) fn summary(doc: &InvoiceDoc) -> serde_json::Value {
    serde_json::json!({
        "status": doc.status,
        "number": doc.number,
        "total": doc.total.to_string(),
        "tax": doc.tax.to_string(),
        "paid": doc.paid.to_string(),
        "credited": doc.credited.to_string(),
        "currency": doc.currency,
        // Whom and when it bills: a draft's edit can change them, and the reports as of a
        // moment before the edit need the ones it replaced (T1).
        "client": doc.client,
        "issueDate": doc.issue_date,
        "dueDate": doc.due_date,
    })
}

pub(crate) async fn read_invoice(tx: &TxRef, store: &Store, tenant: &TenantId, key: &str) -> AppResult<InvoiceRow> {
    read_owned::<InvoiceRow>(Some(tx), store, tenant, "invoice", key)
        .await?
        .ok_or_else(|| AppError::not_found("invoice"))
}

impl Store {
    /// An invoice of the tenant, read in the caller's transaction.
    pub(crate) async fn load_invoice(&self, tx: &TxRef, tenant: &TenantId, key: &str) -> AppResult<InvoiceRow> {
        // An invoice the transaction changed and writes at its end is read as it changed it.
        if let Some(changed) = tx.invoice_as_changed(key).filter(|invoice| invoice.doc.tenant == tenant.as_str()) {
            return Ok(changed);
        }
        read_invoice(tx, self, tenant, key).await
    }

    /// An invoice of the tenant, read in the caller's transaction, which gathers its writes and
    /// pays the invoices `group` (keys, this one among them): the first call reads all of them in
    /// one statement, which costs SurrealDB about as much as reading one (a statement's own cost
    /// is 30-50 µs, docs/performance.md, twenty-second measure). Later calls take the invoice as
    /// read, or as the transaction changed it.
    pub(crate) async fn load_invoice_of_group<'k>(
        &self,
        tx: &TxRef,
        tenant: &TenantId,
        key: &str,
        group: impl Iterator<Item = &'k str>,
    ) -> AppResult<InvoiceRow> {
        if let Some(changed) = tx.invoice_as_changed(key).filter(|invoice| invoice.doc.tenant == tenant.as_str()) {
            return Ok(changed);
        }
        let read = match tx.invoice_as_read(key) {
            Some(read) => read,
            None => {
                let keys: std::collections::BTreeSet<&str> = group.collect();
                let ids: Vec<RecordId> = keys.into_iter().map(|key| record("invoice", key)).collect();
                let invoices: Vec<InvoiceRow> = tx.query("SELECT * FROM $ids", Vars::new().set("ids", ids)).await?.rows(0)?;
                tx.keep_read_invoices(invoices)?;
                tx.invoice_as_read(key).flatten()
            }
        };
        read.filter(|invoice| invoice.doc.tenant == tenant.as_str()).ok_or_else(|| AppError::not_found("invoice"))
    }

    pub async fn invoice(&self, tenant: &TenantId, key: &str) -> AppResult<Option<InvoiceRow>> {
        read_owned(None, self, tenant, "invoice", key).await
    }

    /// Writes a new invoice.
    pub(crate) async fn write_new_invoice(&self, tx: &TxRef, key: &str, doc: &InvoiceDoc) -> AppResult<()> {
        tx.query("CREATE $id CONTENT $doc RETURN NONE", Vars::new().set("id", record("invoice", key)).set("doc", doc.clone())).await?;
        Ok(())
    }

    /// Replaces an invoice's document.
    pub(crate) async fn write_invoice_doc(&self, tx: &TxRef, invoice: &InvoiceRow, doc: &InvoiceDoc) -> AppResult<()> {
        tx.query("UPDATE $id CONTENT $doc RETURN NONE", Vars::new().set("id", invoice.id.clone()).set("doc", doc.clone())).await?;
        Ok(())
    }

    /// What a draft names, read in the caller's transaction: the tenant's settings, and the tax
    /// rate of each line (None for a line without one). The client, contact, location and rates
    /// must be the tenant's (A3).
    pub(crate) async fn load_invoice_references(
        &self,
        tx: &TxRef,
        tenant: &TenantId,
        draft: &InvoiceDraft,
    ) -> AppResult<(TenantRow, Vec<Option<TaxRateRow>>)> {
        let settings = read_tenant(tx, tenant).await?.ok_or_else(|| AppError::not_found("tenant"))?;
        read_owned::<PartyRow>(Some(tx), self, tenant, PartyKind::Client.table(), &draft.client)
            .await?
            .ok_or_else(|| AppError::not_found("client"))?;
        if let Some(contact) = &draft.contact {
            read_owned::<PartyRow>(Some(tx), self, tenant, PartyKind::Contact.table(), contact)
                .await?
                .ok_or_else(|| AppError::not_found("contact"))?;
        }
        read_owned::<LocationRow>(Some(tx), self, tenant, "location", &draft.location)
            .await?
            .ok_or_else(|| AppError::not_found("location"))?;
        let mut rates = Vec::with_capacity(draft.lines.len());
        for line in &draft.lines {
            rates.push(match &line.tax_rate {
                None => None,
                Some(rate) => Some(
                    read_owned::<TaxRateRow>(Some(tx), self, tenant, "tax_rate", rate).await?.ok_or_else(|| AppError::not_found("tax rate"))?,
                ),
            });
        }
        Ok((settings, rates))
    }

    /// Writes a finalized invoice with `status`, giving it the tenant's next invoice number when
    /// it has none yet (the counter is written in this transaction, so two finalizes taking one
    /// number conflict); returns its number.
    pub(crate) async fn write_finalized(&self, tx: &TxRef, mutation: &Mutation<'_>, invoice: &InvoiceRow, status: InvoiceStatus) -> AppResult<i64> {
        let tenant = mutation.tenant;
        let number = match invoice.doc.number {
            Some(number) => number,
            None => {
                let settings = read_tenant(tx, tenant).await?.ok_or_else(|| AppError::not_found("tenant"))?;
                let number = settings.next_invoice_number;
                tx.query(
                    "CREATE $number SET invoice = $invoice RETURN NONE; UPDATE $tenant SET next_invoice_number = $next RETURN NONE;",
                    Vars::new()
                        .set("number", number_record(tenant, number))
                        .set("invoice", super::rows::key_of(&invoice.id))
                        .set("tenant", record("tenant", tenant.as_str()))
                        .set("next", number + 1),
                )
                .await?;
                number
            }
        };
        tx.query(
            "UPDATE $id SET status = $status, number = $number, finalized_at = time::now(), finalized_by = $actor, updated_at = time::now() RETURN NONE",
            Vars::new()
                .set("id", invoice.id.clone())
                .set("status", status_str(status).to_owned())
                .set("number", number)
                .set("actor", mutation.actor.to_owned()),
        )
        .await?;
        Ok(number)
    }

    /// Writes an invoice's new status; a VOID one also gets its time and reason.
    pub(crate) async fn write_invoice_status(&self, tx: &TxRef, invoice: &InvoiceRow, status: InvoiceStatus, reason: Option<String>) -> AppResult<()> {
        tx.query(
            "UPDATE $id SET status = $status, updated_at = time::now(),
                voided_at = IF $voided THEN time::now() ELSE voided_at END,
                void_reason = IF $voided THEN $reason ELSE void_reason END RETURN NONE",
            Vars::new()
                .set("id", invoice.id.clone())
                .set("status", status_str(status).to_owned())
                .set("voided", status == InvoiceStatus::Void)
                .set("reason", reason),
        )
        .await?;
        Ok(())
    }

    /// Deletes an invoice: the only hard delete in Settle (I6).
    pub(crate) async fn write_invoice_deleted(&self, tx: &TxRef, invoice: &InvoiceRow) -> AppResult<()> {
        tx.query("DELETE $id", Vars::new().set("id", invoice.id.clone())).await?;
        Ok(())
    }

    /// A page of invoices, newest first, and (when `count`) how many match the filter. The page
    /// walks the index (tenant, key) from the cursor and stops after `limit` rows; the count
    /// reads every matching invoice, so it is only made when asked for.
    pub async fn invoices(
        &self,
        tenant: &TenantId,
        filter: &InvoiceFilter,
        today: NaiveDate,
        after: Option<String>,
        limit: usize,
        count: bool,
    ) -> AppResult<(Vec<InvoiceRow>, Option<i64>)> {
        use rules::DisplayStatus as S;
        let status = filter.status;
        let filter = ListFilter::of_tenant(tenant)
            .bind("today", date_string(today))
            .when("status = 'OPEN' AND due_date < $today", status == Some(S::Overdue))
            .when("status = 'OPEN' AND due_date >= $today", status == Some(S::Open))
            .when("status = 'DRAFT'", status == Some(S::Draft))
            .when("status = 'PAID'", status == Some(S::Paid))
            .when("status = 'VOID'", status == Some(S::Void))
            .with("client = $client", "client", filter.client.clone())
            .with("location = $location", "location", filter.location.clone())
            .with("issue_date >= $from", "from", filter.issued_from.map(date_string))
            .with("issue_date <= $to", "to", filter.issued_to.map(date_string));
        self.page("invoice", tenant, filter, after, limit, count).await
    }
}
