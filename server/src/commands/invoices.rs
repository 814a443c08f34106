//! Invoices (I1-I8, M1-M3): drafts and their pricing, and the life-cycle transitions.

use std::collections::HashMap;

use chrono::Utc;
use rust_decimal::Decimal;

use super::{Commands, events};
use crate::events::LedgerEvent;
use crate::error::{AppError, AppResult};
use crate::ledger::invoice::{self as rules, InvoiceFacts, InvoiceStatus};
use crate::ledger::tax::{self, Discount, LineInput};
use crate::ledger::tax_rate;
use crate::ledger::{Currency, Money};
use crate::store::TxRef;
use crate::store::audit::{AuditEntry, Mutation};
use crate::store::invoices::{DiscountDraft, InvoiceDraft, LineDraft, date_string, parse_tax_mode, status_str, summary};
use crate::store::locks::tenant_lock;
use crate::store::preview::Applied;
use crate::store::rows::{InvoiceDoc, InvoiceRow, LineRow, TaxRateRow, key_of, new_key, page_key};

impl Commands {
    /// createInvoice: a DRAFT invoice (I1). Returns its key.
    pub async fn create_invoice(&self, mutation: &Mutation<'_>, draft: InvoiceDraft) -> AppResult<Applied<String>> {
        let draft = &draft;
        self.store
            .apply(mutation, |tx| async move {
                let key = new_key();
                let now = Utc::now();
                let doc = self.priced_doc(&tx, mutation, draft, None).await?;
                let doc = InvoiceDoc { page_key: page_key(mutation.tenant.as_str(), &key), key: key.clone(), created_at: now, updated_at: now, ..doc };
                self.store.write_new_invoice(&tx, &key, &doc).await?;
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

    /// updateInvoice: replaces a DRAFT invoice's fields and lines (I1, I7, I8).
    pub async fn update_invoice(&self, mutation: &Mutation<'_>, key: &str, draft: InvoiceDraft) -> AppResult<Applied<String>> {
        let draft = &draft;
        self.store
            .apply(mutation, |tx| async move {
                let before = self.store.load_invoice(&tx, mutation.tenant, key).await?;
                rules::check_edit(&before.doc.facts())?;
                let priced = self.priced_doc(&tx, mutation, draft, Some(&before.doc)).await?;
                let doc = InvoiceDoc {
                    key: before.doc.key.clone(),
                    page_key: before.doc.page_key.clone(),
                    number: before.doc.number,
                    created_at: before.doc.created_at,
                    updated_at: Utc::now(),
                    ..priced
                };
                self.store.write_invoice_doc(&tx, &before, &doc).await?;
                let entry = AuditEntry {
                    action: "invoice.update".into(),
                    records: vec![format!("invoice:{key}")],
                    before: Some(summary(&before.doc)),
                    after: Some(summary(&doc)),
                    ..AuditEntry::default()
                };
                Ok((key.to_owned(), entry))
            })
            .await
    }

    /// finalizeInvoice with REQUEST_PAYMENT: DRAFT to OPEN, or to PAID when nothing is owed (I2,
    /// I3).
    pub async fn finalize_invoice(&self, mutation: &Mutation<'_>, key: &str) -> AppResult<Applied<String>> {
        // Finalizes of one tenant all write its invoice counter: queue them here rather than let
        // them collide in the database (see store::locks).
        let turn = self.store.locks().lock(&tenant_lock(mutation.tenant)).await;
        let applied = self
            .store
            .apply(mutation, |tx| async move {
                let (_, entry) = self.finalize_in(&tx, mutation, key).await?;
                Ok((key.to_owned(), entry))
            })
            .await;
        drop(turn);
        self.publish(mutation.tenant).await;
        applied
    }

    /// Finalizes inside the caller's transaction (I2): the first finalize takes the tenant's
    /// next invoice number; an invoice reverted to draft keeps its number. Returns the invoice
    /// after and the audit entry.
    pub(super) async fn finalize_in(&self, tx: &TxRef, mutation: &Mutation<'_>, key: &str) -> AppResult<(InvoiceRow, AuditEntry)> {
        let before = self.store.load_invoice(tx, mutation.tenant, key).await?;
        let facts = before.doc.facts();
        rules::check_finalize(&facts)?;
        let status = rules::status_for_balance(&facts);
        let number = self.store.write_finalized(tx, mutation, &before, status).await?;
        let after = InvoiceRow {
            id: before.id.clone(),
            doc: InvoiceDoc {
                status: status_str(status).to_owned(),
                number: Some(number),
                finalized_by: Some(mutation.actor.to_owned()),
                ..before.doc.clone()
            },
        };
        // INVOICE_FINALIZED means DRAFT to OPEN; one that owes nothing is PAID at once (I3).
        let mut events = vec![LedgerEvent::InvoiceFinalized { invoice: key.to_owned() }];
        events.extend(LedgerEvent::invoice_status_changed(key, InvoiceStatus::Open, status));
        let entry = AuditEntry {
            events,
            action: "invoice.finalize".into(),
            records: vec![format!("invoice:{key}")],
            before: Some(summary(&before.doc)),
            after: Some(summary(&after.doc)),
            ..AuditEntry::default()
        };
        Ok((after, entry))
    }

    /// revertInvoiceToDraft: back to DRAFT (I5, I8), keeping the invoice number.
    pub async fn revert_invoice(&self, mutation: &Mutation<'_>, key: &str) -> AppResult<Applied<String>> {
        self.transition(mutation, key, "invoice.revert", None, |facts| {
            rules::check_revert(facts)?;
            Ok(InvoiceStatus::Draft)
        })
        .await
    }

    /// voidInvoice: OPEN to VOID (I7, I8); final, the invoice stays readable and leaves totals.
    pub async fn void_invoice(&self, mutation: &Mutation<'_>, key: &str, reason: Option<String>) -> AppResult<Applied<String>> {
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
    ) -> AppResult<Applied<String>> {
        let (decide, reason) = (&decide, &reason);
        let applied = self
            .store
            .apply(mutation, |tx| async move {
                let before = self.store.load_invoice(&tx, mutation.tenant, key).await?;
                let status = decide(&before.doc.facts())?;
                self.store.write_invoice_status(&tx, &before, status, reason.clone()).await?;
                let after = InvoiceDoc { status: status_str(status).to_owned(), ..before.doc.clone() };
                let events = match status {
                    InvoiceStatus::Void => vec![LedgerEvent::InvoiceVoided { invoice: key.to_owned() }],
                    _ => events::status_changed(&before, status).into_iter().collect(),
                };
                let entry = AuditEntry {
                    events,
                    action: action.into(),
                    records: vec![format!("invoice:{key}")],
                    before: Some(summary(&before.doc)),
                    after: Some(summary(&after)),
                    reason: reason.clone(),
                    ..AuditEntry::default()
                };
                Ok((key.to_owned(), entry))
            })
            .await;
        self.publish(mutation.tenant).await;
        applied
    }

    /// deleteInvoice: a DRAFT that never had a number (I6), the only hard delete in Settle.
    pub async fn delete_invoice(&self, mutation: &Mutation<'_>, key: &str) -> AppResult<Applied<String>> {
        self.store
            .apply(mutation, |tx| async move {
                let before = self.store.load_invoice(&tx, mutation.tenant, key).await?;
                rules::check_delete(&before.doc.facts())?;
                self.store.write_invoice_deleted(&tx, &before).await?;
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

    /// Loads what a draft names (each must be the tenant's, A3) and prices it (M1-M3): its due
    /// date, its tax rates, its lines and totals.
    async fn priced_doc(&self, tx: &TxRef, mutation: &Mutation<'_>, draft: &InvoiceDraft, existing: Option<&InvoiceDoc>) -> AppResult<InvoiceDoc> {
        let (settings, rates) = self.store.load_invoice_references(tx, mutation.tenant, draft).await?;
        let currency = Currency::parse(draft.currency.as_deref().unwrap_or(&settings.currency))?;
        // A draft keeps the tax mode it was created under; a settings change affects new invoices.
        let tax_mode = existing.map_or(settings.tax_mode.clone(), |doc| doc.tax_mode.clone());
        let due_date = rules::due_date(draft.issue_date, draft.due_date, settings.payment_terms_days)?;
        let mut lines = Vec::with_capacity(draft.lines.len());
        // Lines per tax rate so far, to tell a line that keeps an archived rate from a new one.
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for (index, (line, rate)) in draft.lines.iter().zip(&rates).enumerate() {
            if let Some(rate) = rate {
                let rate_key = key_of(&rate.id);
                let had_it = existing.map_or(0, |doc| doc.lines.iter().filter(|l| l.tax_rate.as_deref() == Some(rate_key.as_str())).count());
                let used = uses.entry(line.tax_rate.as_deref().unwrap_or_default()).or_default();
                *used += 1;
                tax_rate::check_rate_choice(rate.archived, *used, had_it, index + 1, &rate.name)?;
            }
            lines.push(price_line(index, line, rate.as_ref(), parse_tax_mode(&tax_mode), currency)?);
        }
        let totals = tax::invoice_totals(lines.iter().map(|(_, totals)| totals));
        let now = Utc::now();
        Ok(InvoiceDoc {
            tenant: mutation.tenant.as_str().to_owned(),
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
            finalized_by: None,
            voided_at: None,
            void_reason: None,
        })
    }
}

/// Checks one line against the currency (M2) and computes its totals (M3).
fn price_line(
    index: usize,
    line: &LineDraft,
    rate: Option<&TaxRateRow>,
    mode: tax::TaxMode,
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
        tax_rate: rate.map(|r| key_of(&r.id)),
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
