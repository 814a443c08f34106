//! What a money mutation answers: a payload with the record it wrote, or, for a dry-run
//! (`dryRun: true`), a preview of what it would do (D1) with the record left null. A dry-run that
//! would fail answers the same error, with the same code, as the real request.

use std::future::Future;

use async_graphql::{Context, ID, Object, Result};
use chrono::NaiveDate;

use super::context::{tenant, today};
use super::invoices_and_payments::{AllocationState, Invoice, InvoiceStatus, PaymentStatus};
use super::ledger_events::LedgerEventNode;
use super::money::Money;
use crate::store::preview::{Applied, Change, Preview};
use crate::store::rows::{InvoiceRow, PaymentRow};

/// What a request would do, found by running it to the point of committing and then cancelling
/// it: the same checks in the same order, and the same records written, as the real request at
/// that moment. No plugin is asked: a charge or a refund through a plugin is shown as the
/// gateway accepting it, and a recorded payment's details (a cheque number) are not checked.
pub struct PreviewOut {
    preview: Preview,
    today: NaiveDate,
}

#[Object(name = "Preview")]
impl PreviewOut {
    /// True when this idempotency key already made this same change: sending the request would
    /// answer the first result and change nothing.
    async fn replay(&self) -> bool {
        self.preview.replay
    }
    /// The audit event's action the change would record, such as "payment.pay_invoice"; null for
    /// a replay.
    async fn action(&self) -> Option<&str> {
        self.preview.entry.as_ref().map(|entry| entry.action.as_str())
    }
    /// The payment-method plugin the request would call, which a dry-run does not ask: a charge
    /// or refund through a gateway is shown as the gateway accepting it, and a recorded payment's
    /// details (a cheque number) are not checked. Null when the request calls no plugin.
    async fn plugin_not_asked(&self) -> Option<&str> {
        self.preview.plugin_not_asked.as_deref()
    }
    /// The ledger events the change would record (E1), in order; none for a replay or a change
    /// that moves no money.
    async fn events(&self) -> Vec<LedgerEventNode> {
        self.preview.entry.as_ref().map_or_else(Vec::new, |entry| entry.events.iter().cloned().map(LedgerEventNode::from).collect())
    }
    /// The records the change would touch, as "table:id" (the audit event's records).
    async fn records(&self) -> Vec<&str> {
        self.preview.entry.as_ref().map_or_else(Vec::new, |entry| entry.records.iter().map(String::as_str).collect())
    }
    /// Every invoice the change would touch, before and after.
    async fn invoices(&self) -> Vec<InvoiceChange> {
        self.preview.invoices.iter().map(|change| InvoiceChange { change: change.clone(), today: self.today }).collect()
    }
    /// Every payment the change would touch, new ones included, before and after.
    async fn payments(&self) -> Vec<PaymentChange> {
        self.preview.payments.iter().map(|change| PaymentChange(change.clone())).collect()
    }
}

/// One invoice before and after a change; a `...Before` field is null for an invoice the change
/// would create, an `...After` field null for one it would delete. The id of an invoice the
/// change would create is the dry-run's own: the real request gives the invoice another.
pub struct InvoiceChange {
    change: Change<InvoiceRow>,
    today: NaiveDate,
}

impl InvoiceChange {
    fn status(&self, row: &Option<InvoiceRow>) -> Option<InvoiceStatus> {
        row.clone().map(|row| Invoice { row, today: self.today }.status_value().into())
    }

    fn money(row: &Option<InvoiceRow>, amount: impl Fn(&InvoiceRow) -> rust_decimal::Decimal) -> Option<Money> {
        row.as_ref().map(|row| Money::of(amount(row), &row.doc.currency))
    }
}

#[Object]
impl InvoiceChange {
    async fn invoice_id(&self) -> ID {
        ID(self.change.key.clone())
    }
    /// INV-0001 style, after the change (a finalize shows the number it would take).
    async fn number(&self) -> Option<String> {
        let row = self.change.after.as_ref().or(self.change.before.as_ref())?;
        row.doc.number.map(|n| crate::ledger::numbering::format_number("INV", n))
    }
    /// Sum of active allocations, before.
    async fn paid_before(&self) -> Option<Money> {
        Self::money(&self.change.before, |row| row.doc.paid)
    }
    /// Sum of active allocations, after.
    async fn paid_after(&self) -> Option<Money> {
        Self::money(&self.change.after, |row| row.doc.paid)
    }
    /// Sum of issued credit notes, before.
    async fn credited_before(&self) -> Option<Money> {
        Self::money(&self.change.before, |row| row.doc.credited)
    }
    /// Sum of issued credit notes, after.
    async fn credited_after(&self) -> Option<Money> {
        Self::money(&self.change.after, |row| row.doc.credited)
    }
    async fn status_before(&self) -> Option<InvoiceStatus> {
        self.status(&self.change.before)
    }
    async fn status_after(&self) -> Option<InvoiceStatus> {
        self.status(&self.change.after)
    }
    async fn total_before(&self) -> Option<Money> {
        Self::money(&self.change.before, |row| row.doc.total)
    }
    async fn total_after(&self) -> Option<Money> {
        Self::money(&self.change.after, |row| row.doc.total)
    }
    /// What is owed before (M4).
    async fn balance_before(&self) -> Option<Money> {
        Self::money(&self.change.before, |row| row.doc.facts().balance())
    }
    /// What would be owed after (M4).
    async fn balance_after(&self) -> Option<Money> {
        Self::money(&self.change.after, |row| row.doc.facts().balance())
    }
}

/// One payment before and after a change; a `...Before` field is null for a payment the change
/// would create. The id of a payment the change would create is the dry-run's own: the real
/// request gives the payment another, and its number.
pub struct PaymentChange(Change<PaymentRow>);

impl PaymentChange {
    fn facts(row: &Option<PaymentRow>) -> Result<Option<crate::ledger::payment::PaymentFacts>> {
        Ok(row.as_ref().map(|row| row.doc.facts()).transpose()?)
    }

    fn money(row: &Option<PaymentRow>, amount: impl Fn(&PaymentRow) -> rust_decimal::Decimal) -> Option<Money> {
        row.as_ref().map(|row| Money::of(amount(row), &row.doc.currency))
    }
}

#[Object]
impl PaymentChange {
    async fn payment_id(&self) -> ID {
        ID(self.0.key.clone())
    }
    async fn amount(&self) -> Option<Money> {
        Self::money(self.0.after.as_ref().map_or(&self.0.before, |_| &self.0.after), |row| row.doc.amount)
    }
    async fn status_before(&self) -> Result<Option<PaymentStatus>> {
        Ok(Self::facts(&self.0.before)?.map(|facts| facts.status().into()))
    }
    async fn status_after(&self) -> Result<Option<PaymentStatus>> {
        Ok(Self::facts(&self.0.after)?.map(|facts| facts.status().into()))
    }
    async fn allocation_state_before(&self) -> Result<Option<AllocationState>> {
        Ok(Self::facts(&self.0.before)?.map(|facts| facts.allocation_state().into()))
    }
    async fn allocation_state_after(&self) -> Result<Option<AllocationState>> {
        Ok(Self::facts(&self.0.after)?.map(|facts| facts.allocation_state().into()))
    }
    /// Credit the client could still use or be refunded, before (M5).
    async fn unallocated_before(&self) -> Result<Option<Money>> {
        Ok(Self::facts(&self.0.before)?.map(|facts| Money::of(facts.unallocated(), facts.currency.code())))
    }
    /// Credit the client could still use or be refunded, after (M5).
    async fn unallocated_after(&self) -> Result<Option<Money>> {
        Ok(Self::facts(&self.0.after)?.map(|facts| Money::of(facts.unallocated(), facts.currency.code())))
    }
    /// Sum of active allocations, before.
    async fn allocated_before(&self) -> Option<Money> {
        Self::money(&self.0.before, |row| row.doc.allocated)
    }
    /// Sum of active allocations, after.
    async fn allocated_after(&self) -> Option<Money> {
        Self::money(&self.0.after, |row| row.doc.allocated)
    }
    async fn refunded_before(&self) -> Option<Money> {
        Self::money(&self.0.before, |row| row.doc.refunded)
    }
    async fn refunded_after(&self) -> Option<Money> {
        Self::money(&self.0.after, |row| row.doc.refunded)
    }
}

/// The two parts of a payload: the record a real request wrote (read with `load`), or the
/// preview of a dry-run.
pub async fn answer<K, R, F, Fut>(ctx: &Context<'_>, applied: Applied<K>, load: F) -> Result<(Option<R>, Option<PreviewOut>)>
where
    F: FnOnce(K) -> Fut,
    Fut: Future<Output = Result<R>>,
{
    match applied {
        Applied::Done(key) => Ok((Some(load(key).await?), None)),
        Applied::Previewed(preview) => Ok((None, Some(PreviewOut { preview, today: today(tenant(ctx).await?) }))),
    }
}

/// A mutation's payload type: the record it acts on, named by its type, and the preview.
macro_rules! payload {
    ($name:ident, $field:ident: $record:ty, $mutation:literal) => {
        #[doc = concat!("What ", $mutation, " answers: the record as written, or for a dry-run what the request would do.")]
        #[derive(async_graphql::SimpleObject)]
        pub struct $name {
            /// The record as written; null for a dry-run.
            pub $field: Option<$record>,
            /// What the request would do; null unless it was a dry-run.
            pub preview: Option<$crate::graphql::preview::PreviewOut>,
        }

        impl From<(Option<$record>, Option<$crate::graphql::preview::PreviewOut>)> for $name {
            fn from(($field, preview): (Option<$record>, Option<$crate::graphql::preview::PreviewOut>)) -> Self {
                $name { $field, preview }
            }
        }
    };
}
pub(crate) use payload;
