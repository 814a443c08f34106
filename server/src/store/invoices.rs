//! Invoices: drafts, their lines and totals, and the life-cycle transitions of I1-I8.

use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use surrealdb::types::{Array, RecordId, RecordIdKey, Value};

use super::audit::{AuditEntry, Mutation};
use super::directory::{PartyKind, read_owned};
use super::locks::tenant_lock;
use super::rows::{InvoiceDoc, InvoiceRow, LineRow, LocationRow, PartyRow, TaxRateRow, new_key, page_key, record};
use super::tenants::read_tenant;
use super::{Store, TxRef, Vars};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::ledger::invoice::{self as rules, InvoiceFacts, InvoiceStatus};
use crate::ledger::tax::{self, Discount, LineInput, TaxMode};
use crate::ledger::{Currency, Money};

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

pub(super) fn summary(doc: &InvoiceDoc) -> serde_json::Value {
    serde_json::json!({
        "status": doc.status,
        "number": doc.number,
        "total": doc.total.to_string(),
        "paid": doc.paid.to_string(),
        "credited": doc.credited.to_string(),
        "currency": doc.currency,
    })
}

pub(crate) async fn read_invoice(tx: &TxRef, store: &Store, tenant: &TenantId, key: &str) -> AppResult<InvoiceRow> {
    read_owned::<InvoiceRow>(Some(tx), store, tenant, "invoice", key)
        .await?
        .ok_or_else(|| AppError::not_found("invoice"))
}

impl Store {
    pub async fn invoice(&self, tenant: &TenantId, key: &str) -> AppResult<Option<InvoiceRow>> {
        read_owned(None, self, tenant, "invoice", key).await
    }

    /// Creates a DRAFT invoice (I1).
    pub async fn create_invoice(&self, mutation: &Mutation<'_>, draft: InvoiceDraft) -> AppResult<String> {
        let draft = &draft;
        self.mutate(mutation, |tx| async move {
            let key = new_key();
            let now = Utc::now();
            let doc = self.priced_doc(&tx, mutation.tenant, draft, None).await?;
            let doc = InvoiceDoc { page_key: page_key(mutation.tenant.as_str(), &key), key: key.clone(), created_at: now, updated_at: now, ..doc };
            tx.query("CREATE $id CONTENT $doc", Vars::new().set("id", record("invoice", &key)).set("doc", doc.clone()))
                .await?;
            let entry = AuditEntry {
                action: "invoice.create".into(),
                records: vec![format!("invoice:{key}")],
                after: Some(summary(&doc)),
                ..AuditEntry::default()
            };
            Ok((key, entry))
        })
        .await
    }

    /// Replaces a DRAFT invoice's fields and lines (I1, I7, I8).
    pub async fn update_invoice(&self, mutation: &Mutation<'_>, key: &str, draft: InvoiceDraft) -> AppResult<String> {
        let draft = &draft;
        self.mutate(mutation, |tx| async move {
            let before = read_invoice(&tx, self, mutation.tenant, key).await?;
            rules::check_edit(&before.doc.facts())?;
            let priced = self.priced_doc(&tx, mutation.tenant, draft, Some(&before.doc)).await?;
            let doc = InvoiceDoc {
                key: before.doc.key.clone(),
                page_key: before.doc.page_key.clone(),
                number: before.doc.number,
                created_at: before.doc.created_at,
                updated_at: Utc::now(),
                ..priced
            };
            tx.query("UPDATE $id CONTENT $doc", Vars::new().set("id", before.id.clone()).set("doc", doc.clone())).await?;
            let entry = AuditEntry {
                action: "invoice.update".into(),
                records: vec![format!("invoice:{key}")],
                before: Some(summary(&before.doc)),
                after: Some(summary(&doc)),
                reason: None,
                ..AuditEntry::default()
            };
            Ok((key.to_owned(), entry))
        })
        .await
    }

    /// Checks every reference of a draft and computes its lines and totals (M1-M3).
    async fn priced_doc(
        &self,
        tx: &TxRef,
        tenant: &TenantId,
        draft: &InvoiceDraft,
        existing: Option<&InvoiceDoc>,
    ) -> AppResult<InvoiceDoc> {
        let settings = read_tenant(tx, tenant).await?.ok_or_else(|| AppError::not_found("tenant"))?;
        let currency = Currency::parse(draft.currency.as_deref().unwrap_or(&settings.currency))?;
        // A draft keeps the tax mode it was created under; a settings change affects new invoices.
        let tax_mode = existing.map_or(settings.tax_mode.clone(), |doc| doc.tax_mode.clone());
        let mode = parse_tax_mode(&tax_mode);
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
        let due_date = draft
            .due_date
            .unwrap_or_else(|| draft.issue_date + chrono::Days::new(settings.payment_terms_days.max(0) as u64));
        if due_date < draft.issue_date {
            return Err(AppError::invalid("the due date cannot be before the issue date"));
        }
        let mut lines = Vec::with_capacity(draft.lines.len());
        // Lines per archived rate so far; a rate archived after lines took it may stay on that
        // many lines, and no more.
        let mut archived_uses: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (index, line) in draft.lines.iter().enumerate() {
            let rate = match &line.tax_rate {
                None => None,
                Some(rate_key) => {
                    let rate = read_owned::<TaxRateRow>(Some(tx), self, tenant, "tax_rate", rate_key)
                        .await?
                        .ok_or_else(|| AppError::not_found("tax rate"))?;
                    // An archived rate cannot be chosen for a new line; lines that already had it
                    // before the rate was archived keep it.
                    let had_it = existing
                        .map_or(0, |doc| doc.lines.iter().filter(|l| l.tax_rate.as_deref() == Some(rate_key)).count());
                    let uses = archived_uses.entry(rate_key.as_str()).or_default();
                    *uses += 1;
                    if rate.archived && *uses > had_it {
                        return Err(AppError::new(
                            crate::error::ErrorCode::TaxRateArchived,
                            format!("line {}: tax rate '{}' is archived; choose an active rate", index + 1, rate.name),
                        ));
                    }
                    Some(rate)
                }
            };
            lines.push(price_line(index, line, rate.as_ref(), mode, currency)?);
        }
        let totals = tax::invoice_totals(lines.iter().map(|(_, totals)| totals));
        let now = Utc::now();
        Ok(InvoiceDoc {
            tenant: tenant.as_str().to_owned(),
            key: String::new(),
            page_key: String::new(),
            number: None,
            client: draft.client.clone(),
            contact: draft.contact.clone(),
            location: draft.location.clone(),
            practitioner: draft.practitioner.clone(),
            issue_date: date_string(draft.issue_date),
            due_date: date_string(due_date),
            currency: currency.code().to_owned(),
            tax_mode,
            status: status_str(InvoiceStatus::Draft).to_owned(),
            notes: draft.notes.clone(),
            lines: lines.into_iter().map(|(row, _)| row).collect(),
            discount: totals.discount,
            subtotal: totals.subtotal,
            tax: totals.tax,
            total: totals.total,
            paid: Decimal::ZERO,
            credited: Decimal::ZERO,
            active_allocations: 0,
            issued_credit_notes: 0,
            created_at: now,
            updated_at: now,
            finalized_at: None,
            voided_at: None,
            void_reason: None,
        })
    }

    /// DRAFT to OPEN, or to PAID when nothing is owed (I2, I3). The first finalize takes the
    /// tenant's next invoice number; an invoice reverted to draft keeps its number.
    pub async fn finalize_invoice(&self, mutation: &Mutation<'_>, key: &str) -> AppResult<String> {
        // Finalizes of one tenant all write its counter: queue them here rather than let them
        // collide in the database (see store::locks).
        let _turn = self.locks().lock(&tenant_lock(mutation.tenant)).await;
        self.mutate(mutation, |tx| async move {
            let (_, entry) = self.finalize_in(&tx, mutation, key).await?;
            Ok((key.to_owned(), entry))
        })
        .await
    }

    /// Finalizes inside a caller's transaction; returns the invoice after and the audit entry.
    pub(crate) async fn finalize_in(&self, tx: &TxRef, mutation: &Mutation<'_>, key: &str) -> AppResult<(InvoiceRow, AuditEntry)> {
        let before = read_invoice(tx, self, mutation.tenant, key).await?;
        let facts = before.doc.facts();
        rules::check_finalize(&facts)?;
        let number = match before.doc.number {
            Some(number) => number,
            None => {
                let settings = read_tenant(tx, mutation.tenant).await?.ok_or_else(|| AppError::not_found("tenant"))?;
                let number = settings.next_invoice_number;
                tx.query(
                    "CREATE $number SET invoice = $invoice; UPDATE $tenant SET next_invoice_number = $next;",
                    Vars::new()
                        .set("number", number_record(mutation.tenant, number))
                        .set("invoice", key.to_owned())
                        .set("tenant", record("tenant", mutation.tenant.as_str()))
                        .set("next", number + 1),
                )
                .await?;
                number
            }
        };
        let status = rules::status_for_balance(&facts);
        tx.query(
            "UPDATE $id SET status = $status, number = $number, finalized_at = time::now(), updated_at = time::now()",
            Vars::new().set("id", before.id.clone()).set("status", status_str(status).to_owned()).set("number", number),
        )
        .await?;
        let after = InvoiceRow {
            id: before.id.clone(),
            doc: InvoiceDoc { status: status_str(status).to_owned(), number: Some(number), ..before.doc.clone() },
        };
        let entry = AuditEntry {
            action: "invoice.finalize".into(),
            records: vec![format!("invoice:{key}")],
            before: Some(summary(&before.doc)),
            after: Some(summary(&after.doc)),
            reason: None,
            ..AuditEntry::default()
        };
        Ok((after, entry))
    }

    /// Back to DRAFT (I5, I8), keeping the invoice number.
    pub async fn revert_invoice(&self, mutation: &Mutation<'_>, key: &str) -> AppResult<String> {
        self.transition(mutation, key, "invoice.revert", None, |facts| {
            rules::check_revert(facts)?;
            Ok(InvoiceStatus::Draft)
        })
        .await
    }

    /// OPEN to VOID (I7, I8): final; the invoice stays readable and leaves totals.
    pub async fn void_invoice(&self, mutation: &Mutation<'_>, key: &str, reason: Option<String>) -> AppResult<String> {
        self.transition(mutation, key, "invoice.void", reason, |facts| {
            rules::check_void(facts)?;
            Ok(InvoiceStatus::Void)
        })
        .await
    }

    async fn transition(
        &self,
        mutation: &Mutation<'_>,
        key: &str,
        action: &'static str,
        reason: Option<String>,
        decide: impl Fn(&InvoiceFacts) -> AppResult<InvoiceStatus>,
    ) -> AppResult<String> {
        let decide = &decide;
        let reason = &reason;
        self.mutate(mutation, |tx| async move {
            let before = read_invoice(&tx, self, mutation.tenant, key).await?;
            let status = decide(&before.doc.facts())?;
            let voided = status == InvoiceStatus::Void;
            tx.query(
                "UPDATE $id SET status = $status, updated_at = time::now(),
                    voided_at = IF $voided THEN time::now() ELSE voided_at END,
                    void_reason = IF $voided THEN $reason ELSE void_reason END",
                Vars::new()
                    .set("id", before.id.clone())
                    .set("status", status_str(status).to_owned())
                    .set("voided", voided)
                    .set("reason", reason.clone()),
            )
            .await?;
            let after = InvoiceDoc { status: status_str(status).to_owned(), ..before.doc.clone() };
            let entry = AuditEntry {
                action: action.into(),
                records: vec![format!("invoice:{key}")],
                before: Some(summary(&before.doc)),
                after: Some(summary(&after)),
                reason: reason.clone(),
                ..AuditEntry::default()
            };
            Ok((key.to_owned(), entry))
        })
        .await
    }

    /// Deletes a DRAFT that never had a number (I6): the only hard delete in Settle.
    pub async fn delete_invoice(&self, mutation: &Mutation<'_>, key: &str) -> AppResult<String> {
        self.mutate(mutation, |tx| async move {
            let before = read_invoice(&tx, self, mutation.tenant, key).await?;
            rules::check_delete(&before.doc.facts())?;
            tx.query("DELETE $id", Vars::new().set("id", before.id.clone())).await?;
            let entry = AuditEntry {
                action: "invoice.delete".into(),
                records: vec![format!("invoice:{key}")],
                before: Some(summary(&before.doc)),
                ..AuditEntry::default()
            };
            Ok((key.to_owned(), entry))
        })
        .await
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
        // Only fixed fragments go into the text; every value is a bound parameter.
        let mut conditions = vec!["tenant = $tenant"];
        match filter.status {
            None => {}
            Some(S::Overdue) => conditions.push("status = 'OPEN' AND due_date < $today"),
            Some(S::Open) => conditions.push("status = 'OPEN' AND due_date >= $today"),
            Some(S::Draft) => conditions.push("status = 'DRAFT'"),
            Some(S::Paid) => conditions.push("status = 'PAID'"),
            Some(S::Void) => conditions.push("status = 'VOID'"),
        }
        if filter.client.is_some() {
            conditions.push("client = $client");
        }
        if filter.location.is_some() {
            conditions.push("location = $location");
        }
        if filter.issued_from.is_some() {
            conditions.push("issue_date >= $from");
        }
        if filter.issued_to.is_some() {
            conditions.push("issue_date <= $to");
        }
        let vars = Vars::new()
            .set("tenant", tenant.as_str().to_owned())
            .set("today", date_string(today))
            .set("client", filter.client.clone())
            .set("location", filter.location.clone())
            .set("from", filter.issued_from.map(date_string))
            .set("to", filter.issued_to.map(date_string));
        self.page("invoice", tenant, &conditions.join(" AND "), after, limit, count, vars).await
    }
}

/// Checks one line against the currency (M2) and computes its totals (M3).
fn price_line(
    index: usize,
    line: &LineDraft,
    rate: Option<&TaxRateRow>,
    mode: TaxMode,
    currency: Currency,
) -> AppResult<(LineRow, tax::LineTotals)> {
    let at_line = |error: AppError| AppError::new(error.code, format!("line {}: {}", index + 1, error.message));
    let description = line.description.trim();
    if description.is_empty() {
        return Err(at_line(AppError::invalid("a line needs a description")));
    }
    let unit_price = Money::from_decimal(line.unit_price, currency).map_err(|e| at_line(e.into()))?.amount();
    let discount = match line.discount {
        None => None,
        Some(DiscountDraft::Amount(amount)) => {
            Some(Discount::Amount(Money::from_decimal(amount, currency).map_err(|e| at_line(e.into()))?.amount()))
        }
        Some(DiscountDraft::Percent(percent)) => Some(Discount::Percent(percent)),
    };
    let input = LineInput { quantity: line.quantity, unit_price, discount, tax_percent: rate.map(|r| r.percent) };
    let totals = tax::line_totals(&input, mode, currency).map_err(|e| at_line(e.into()))?;
    let (discount_kind, discount_value) = match line.discount {
        None => (None, None),
        Some(DiscountDraft::Amount(v)) => (Some("AMOUNT".to_owned()), Some(v)),
        Some(DiscountDraft::Percent(v)) => (Some("PERCENT".to_owned()), Some(v)),
    };
    let row = LineRow {
        description: description.to_owned(),
        item_code: line.item_code.clone(),
        quantity: line.quantity,
        unit_price,
        discount_kind,
        discount_value,
        tax_rate: rate.map(|r| super::rows::key_of(&r.id)),
        tax_name: rate.map(|r| r.name.clone()),
        tax_percent: rate.map(|r| r.percent),
        discount: totals.discount,
        subtotal: totals.subtotal,
        tax: totals.tax,
        total: totals.total,
        credited: None,
    };
    Ok((row, totals))
}
