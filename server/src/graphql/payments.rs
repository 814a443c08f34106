//! Payments, allocations and refunds (P1-P9, F1-F4, V1-V2): their inputs, queries and mutations.
//! The Payment, Allocation and Refund types are in invoices_and_payments.rs.

use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object, Result};
use chrono::NaiveDate;
use serde::Serialize;

use super::context::{caller, mutation, state, tenant, today};
use super::invoices_and_payments::{Allocation, AllocationState, Payment, PaymentStatus, Refund, RefundOutcome};
use super::pagination::{Page, connection_types, wants_total};
use super::scalars::{Amount, Date};
use super::text::{TEXT_MAX_CHARS, optional_text};
use crate::auth::Role;
use crate::error::{AppError, AppResult};
use super::preview::{PreviewOut, answer, payload};
use crate::store::preview::Applied;
use crate::commands::payments::{PayInvoice, RecordPayment};
use crate::store::payments::{AllocationFilter, NewPayment, PaymentFilter, RefundFilter};
use crate::store::rows::key_of;

connection_types!(Payment, PaymentConnection, PaymentEdge);
connection_types!(Refund, RefundConnection, RefundEdge);
connection_types!(Allocation, AllocationConnection, AllocationEdge);

/// Which payments to list; all conditions must hold.
#[derive(InputObject, Default)]
pub struct PaymentFilterInput {
    pub client_id: Option<ID>,
    pub method_id: Option<ID>,
    pub location_id: Option<ID>,
    pub status: Option<PaymentStatus>,
    pub allocation_state: Option<AllocationState>,
    /// Payment date on or after.
    pub from: Option<Date>,
    /// Payment date on or before.
    pub to: Option<Date>,
}

/// Which refunds to list; all conditions must hold.
#[derive(InputObject, Default)]
pub struct RefundFilterInput {
    pub client_id: Option<ID>,
    pub payment_id: Option<ID>,
    pub outcome: Option<RefundOutcome>,
    /// Refund date on or after.
    pub from: Option<Date>,
    /// Refund date on or before.
    pub to: Option<Date>,
}

/// Which allocations to list; all conditions must hold.
#[derive(InputObject, Default)]
pub struct AllocationFilterInput {
    pub client_id: Option<ID>,
    pub payment_id: Option<ID>,
    pub invoice_id: Option<ID>,
    /// true: active allocations only; false: removed ones only.
    pub active: Option<bool>,
    /// Made on or after this day (in the practice's timezone).
    pub from: Option<Date>,
    /// Made on or before this day.
    pub to: Option<Date>,
}

#[derive(Default)]
pub struct PaymentQuery;

#[Object]
impl PaymentQuery {
    #[graphql(complexity = "10 + child_complexity")]
    async fn payment(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Payment>> {
        let request = caller(ctx, Role::Viewer)?;
        Ok(state(ctx).store.payment(&request.principal.tenant, &id).await?.map(Payment))
    }

    /// Payments, newest first.
    #[graphql(complexity = "25 + first.unwrap_or(20).max(0) as usize * child_complexity")]
    async fn payments(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<PaymentFilterInput>,
    ) -> Result<PaymentConnection> {
        let request = caller(ctx, Role::Viewer)?;
        let page = Page::parse(first, after, "payment", state(ctx).limits.page_size_max)?;
        let filter = filter.unwrap_or_default();
        let filter = PaymentFilter {
            client: filter.client_id.map(|id| id.0),
            method: filter.method_id.map(|id| id.0),
            location: filter.location_id.map(|id| id.0),
            status: filter.status.map(Into::into),
            allocation_state: filter.allocation_state.map(Into::into),
            from: filter.from.map(|d| d.0),
            to: filter.to.map(|d| d.0),
        };
        let (rows, total) =
            state(ctx).store.payments(&request.principal.tenant, &filter, page.after.clone(), page.fetch_limit(), wants_total(ctx)).await?;
        Ok(page.connection(rows.into_iter().map(|row| (key_of(&row.id), Payment(row))).collect(), total.unwrap_or(0)))
    }

    /// A client's payments with money left to apply, oldest first.
    #[graphql(complexity = "10 + 10 * child_complexity")]
    async fn unallocated_payments(&self, ctx: &Context<'_>, client_id: ID) -> Result<Vec<Payment>> {
        let request = caller(ctx, Role::Viewer)?;
        let rows = state(ctx).store.unallocated_payments(&request.principal.tenant, &client_id).await?;
        Ok(rows.into_iter().map(Payment).collect())
    }

    #[graphql(complexity = "10 + child_complexity")]
    async fn refund(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Refund>> {
        let request = caller(ctx, Role::Viewer)?;
        Ok(state(ctx).store.refund(&request.principal.tenant, &id).await?.map(Refund))
    }

    /// Refunds, newest first, whatever their outcome unless the filter says.
    #[graphql(complexity = "25 + first.unwrap_or(20).max(0) as usize * child_complexity")]
    async fn refunds(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<RefundFilterInput>,
    ) -> Result<RefundConnection> {
        let request = caller(ctx, Role::Viewer)?;
        let page = Page::parse(first, after, "refund", state(ctx).limits.page_size_max)?;
        let filter = filter.unwrap_or_default();
        let filter = RefundFilter {
            client: filter.client_id.map(|id| id.0),
            payment: filter.payment_id.map(|id| id.0),
            outcome: filter.outcome.map(RefundOutcome::as_stored),
            from: filter.from.map(|d| d.0),
            to: filter.to.map(|d| d.0),
        };
        let (rows, total) =
            state(ctx).store.refunds(&request.principal.tenant, &filter, page.after.clone(), page.fetch_limit(), wants_total(ctx)).await?;
        Ok(page.connection(rows.into_iter().map(|row| (key_of(&row.id), Refund(row))).collect(), total.unwrap_or(0)))
    }
}

/// Looks up and lists allocations. A query object of its own only so that the schema keeps
/// listing `allocation` after `paymentMethods` (see `Query` in mod.rs).
#[derive(Default)]
pub struct AllocationQuery;

#[Object]
impl AllocationQuery {
    #[graphql(complexity = "10 + child_complexity")]
    async fn allocation(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Allocation>> {
        let request = caller(ctx, Role::Viewer)?;
        Ok(state(ctx).store.allocation(&request.principal.tenant, &id).await?.map(Allocation))
    }

    /// Allocations, newest first, removed ones included unless the filter says otherwise.
    #[graphql(complexity = "25 + first.unwrap_or(20).max(0) as usize * child_complexity")]
    async fn allocations(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<AllocationFilterInput>,
    ) -> Result<AllocationConnection> {
        let request = caller(ctx, Role::Viewer)?;
        let page = Page::parse(first, after, "allocation", state(ctx).limits.page_size_max)?;
        let filter = filter.unwrap_or_default();
        let filter = AllocationFilter {
            client: filter.client_id.map(|id| id.0),
            payment: filter.payment_id.map(|id| id.0),
            invoice: filter.invoice_id.map(|id| id.0),
            active: filter.active,
            from: filter.from.map(|d| d.0),
            to: filter.to.map(|d| d.0),
        };
        let (rows, total) = state(ctx)
            .store
            .allocations(&request.principal.tenant, &filter, page.after.clone(), page.fetch_limit(), wants_total(ctx))
            .await?;
        Ok(page.connection(rows.into_iter().map(|row| (key_of(&row.id), Allocation(row))).collect(), total.unwrap_or(0)))
    }
}

/// Most allocations one recordPayment may make.
pub const ALLOCATIONS_MAX: usize = 200;

#[derive(InputObject, Serialize)]
pub struct AllocationInput {
    pub invoice_id: ID,
    pub amount: Amount,
}

/// A standalone payment (P1, P2), optionally allocated to invoices at once.
#[derive(InputObject, Serialize)]
pub struct RecordPaymentInput {
    pub client_id: ID,
    pub location_id: ID,
    pub method_id: ID,
    /// Today in the practice's timezone when left out.
    pub date: Option<Date>,
    pub amount: Amount,
    /// The practice's currency when left out.
    pub currency: Option<String>,
    pub description: Option<String>,
    /// Details for the method's plugin, e.g. {"cheque_number": "000123"} for a cheque.
    pub details: Option<async_graphql::Json<serde_json::Value>>,
    #[graphql(default)]
    pub allocations: Vec<AllocationInput>,
}

/// A payment for one invoice (P3): recorded for a manual method, charged through the plugin
/// otherwise (never above the balance).
#[derive(InputObject, Serialize)]
pub struct PayInvoiceInput {
    pub method_id: ID,
    /// Details for the method's plugin: {"card_number": ...} for card-sim, {"cheque_number": ...}
    /// for a cheque.
    pub details: Option<async_graphql::Json<serde_json::Value>>,
    /// The invoice balance when left out; more than the balance stays as the client's credit.
    pub amount: Option<Amount>,
    pub date: Option<Date>,
    /// The invoice's location when left out.
    pub location_id: Option<ID>,
    pub description: Option<String>,
}

impl PayInvoiceInput {
    pub fn request(&self, today: NaiveDate) -> AppResult<PayInvoice> {
        Ok(PayInvoice {
            method: self.method_id.0.clone(),
            amount: self.amount.map(|a| a.0),
            date: self.date.map_or(today, |d| d.0),
            location: self.location_id.as_ref().map(|id| id.0.clone()),
            description: optional_text("description", self.description.as_deref(), TEXT_MAX_CHARS)?,
            details: self.details.as_ref().map_or(serde_json::json!({}), |d| d.0.clone()),
        })
    }
}

#[derive(InputObject, Serialize)]
pub struct RefundInput {
    pub amount: Amount,
    pub date: Option<Date>,
    pub description: Option<String>,
}

#[derive(Default)]
pub struct PaymentMutation;

/// The payment a mutation produced, with its number: a repeated request can arrive while the
/// first one is still numbering the payment, and then waits for that number.
async fn load_payment(ctx: &Context<'_>, key: &str) -> AppResult<Payment> {
    let request = caller(ctx, Role::Viewer)?;
    let store = &state(ctx).store;
    let mut row = store.payment(&request.principal.tenant, key).await?.ok_or_else(|| AppError::not_found("payment"))?;
    if row.doc.number.is_none() {
        store.number_payment(&request.principal.tenant, key.to_owned()).await;
        row = store.payment(&request.principal.tenant, key).await?.ok_or_else(|| AppError::not_found("payment"))?;
    }
    Ok(Payment(row))
}

payload!(RecordPaymentPayload, payment: Payment, "recordPayment");
payload!(PayInvoicePayload, payment: Payment, "payInvoice");
payload!(ApplyPaymentPayload, allocation: Allocation, "applyPayment");
payload!(RemoveAllocationPayload, allocation: Allocation, "removeAllocation");
payload!(RefundPaymentPayload, refund: Refund, "refundPayment");
payload!(VoidPaymentPayload, payment: Payment, "voidPayment");
payload!(UpdatePaymentPayload, payment: Payment, "updatePayment");

/// The payload of a mutation that makes a new payment: the payment as this request wrote and
/// numbered it, or read back (a repeated request, or one whose numbering is still to happen).
async fn new_payment_payload<P: From<(Option<Payment>, Option<PreviewOut>)>>(ctx: &Context<'_>, applied: Applied<NewPayment>) -> Result<P> {
    let load = |payment: NewPayment| async move {
        Ok(match payment {
            NewPayment { row: Some(row), .. } => Payment(row),
            NewPayment { key, row: None } => load_payment(ctx, &key).await?,
        })
    };
    Ok(answer(ctx, applied, load).await?.into())
}

async fn payment_payload<P: From<(Option<Payment>, Option<PreviewOut>)>>(ctx: &Context<'_>, applied: Applied<String>) -> Result<P> {
    Ok(answer(ctx, applied, |key| async move { Ok(load_payment(ctx, &key).await?) }).await?.into())
}

async fn allocation_payload<P: From<(Option<Allocation>, Option<PreviewOut>)>>(ctx: &Context<'_>, applied: Applied<String>) -> Result<P> {
    Ok(answer(ctx, applied, |key| async move { load_allocation(ctx, &key).await }).await?.into())
}

#[Object]
impl PaymentMutation {
    /// Records a standalone payment (P1, P2) and any allocations given, in one transaction.
    async fn record_payment(
        &self,
        ctx: &Context<'_>,
        input: RecordPaymentInput,
        idempotency_key: String,
        #[graphql(default, desc = "Answer what the request would do, and change nothing (D1).")] dry_run: bool,
    ) -> Result<RecordPaymentPayload> {
        let m = mutation(ctx, Role::Billing, "recordPayment", Some(idempotency_key), &input).await?.dry_run(dry_run);
        let settings = tenant(ctx).await?;
        if input.allocations.len() > ALLOCATIONS_MAX {
            return Err(AppError::invalid(format!("a payment takes at most {ALLOCATIONS_MAX} allocations at once")).into());
        }
        let request = RecordPayment {
            client: input.client_id.0.clone(),
            location: input.location_id.0.clone(),
            method: input.method_id.0.clone(),
            date: input.date.map_or_else(|| today(settings), |d| d.0),
            amount: input.amount.0,
            currency: input.currency.as_deref().map(str::trim).map(str::to_owned),
            description: optional_text("description", input.description.as_deref(), TEXT_MAX_CHARS)?,
            allocations: input.allocations.iter().map(|a| (a.invoice_id.0.clone(), a.amount.0)).collect(),
            details: input.details.as_ref().map_or(serde_json::json!({}), |d| d.0.clone()),
        };
        new_payment_payload(ctx, state(ctx).commands.record_payment(&m, request).await?).await
    }

    /// Pays an OPEN invoice with a new payment (P3): recorded for a method that only records,
    /// charged through its plugin otherwise (never above the balance).
    async fn pay_invoice(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "id", desc = "The invoice to pay.")] invoice_id: ID,
        input: PayInvoiceInput,
        idempotency_key: String,
        #[graphql(default, desc = "Answer what the request would do, and change nothing (D1).")] dry_run: bool,
    ) -> Result<PayInvoicePayload> {
        let m = mutation(ctx, Role::Billing, "payInvoice", Some(idempotency_key), &(&invoice_id.0, &input)).await?.dry_run(dry_run);
        let request = input.request(today(tenant(ctx).await?))?;
        new_payment_payload(ctx, state(ctx).commands.pay_invoice(&m, &invoice_id, request).await?).await
    }

    /// Applies part of an existing payment to an invoice (P5).
    async fn apply_payment(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "id", desc = "The payment to apply.")] payment_id: ID,
        #[graphql(desc = "The invoice it is applied to.")] invoice_id: ID,
        amount: Amount,
        idempotency_key: String,
        #[graphql(default, desc = "Answer what the request would do, and change nothing (D1).")] dry_run: bool,
    ) -> Result<ApplyPaymentPayload> {
        let m = mutation(ctx, Role::Billing, "applyPayment", Some(idempotency_key), &(&payment_id.0, &invoice_id.0, amount)).await?.dry_run(dry_run);
        let today = today(tenant(ctx).await?);
        allocation_payload(ctx, state(ctx).commands.apply_payment(&m, &payment_id, &invoice_id, amount.0, today).await?).await
    }

    /// Removes an allocation (P6); it stays on record, marked removed.
    async fn remove_allocation(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "id")] allocation_id: ID,
        idempotency_key: String,
        #[graphql(default, desc = "Answer what the request would do, and change nothing (D1).")] dry_run: bool,
    ) -> Result<RemoveAllocationPayload> {
        let m = mutation(ctx, Role::Billing, "removeAllocation", Some(idempotency_key), &allocation_id.0).await?.dry_run(dry_run);
        allocation_payload(ctx, state(ctx).commands.remove_allocation(&m, &allocation_id).await?).await
    }

    /// Refunds unallocated money of a payment (F1-F4).
    async fn refund_payment(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "id")] payment_id: ID,
        input: RefundInput,
        idempotency_key: String,
        #[graphql(default, desc = "Answer what the request would do, and change nothing (D1).")] dry_run: bool,
    ) -> Result<RefundPaymentPayload> {
        let m = mutation(ctx, Role::Billing, "refundPayment", Some(idempotency_key), &(&payment_id.0, &input)).await?.dry_run(dry_run);
        let today = today(tenant(ctx).await?);
        let description = optional_text("description", input.description.as_deref(), TEXT_MAX_CHARS)?;
        let applied = state(ctx).commands.refund_payment(&m, &payment_id, input.amount.0, input.date.map_or(today, |d| d.0), description).await?;
        let load = |key: String| async move {
            let request = caller(ctx, Role::Viewer)?;
            let refund = state(ctx).store.refund(&request.principal.tenant, &key).await?.ok_or_else(|| AppError::not_found("refund"))?;
            Ok(Refund(refund))
        };
        Ok(answer(ctx, applied, load).await?.into())
    }

    /// Voids a payment with no allocations and no refunds (V1, V2).
    async fn void_payment(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "id")] payment_id: ID,
        reason: Option<String>,
        idempotency_key: String,
        #[graphql(default, desc = "Answer what the request would do, and change nothing (D1).")] dry_run: bool,
    ) -> Result<VoidPaymentPayload> {
        let m = mutation(ctx, Role::Billing, "voidPayment", Some(idempotency_key), &(&payment_id.0, &reason)).await?.dry_run(dry_run);
        let reason = optional_text("reason", reason.as_deref(), TEXT_MAX_CHARS)?;
        payment_payload(ctx, state(ctx).commands.void_payment(&m, &payment_id, reason).await?).await
    }

    /// Changes a payment's description and external reference, the only editable fields (P9).
    async fn update_payment(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "id")] payment_id: ID,
        #[graphql(desc = "Left out: unchanged; null: cleared.")] description: MaybeUndefined<String>,
        #[graphql(desc = "Left out: unchanged; null: cleared.")] external_reference: MaybeUndefined<String>,
        idempotency_key: String,
        #[graphql(default, desc = "Answer what the request would do, and change nothing (D1).")] dry_run: bool,
    ) -> Result<UpdatePaymentPayload> {
        let fingerprint = (&payment_id.0, description.as_opt_ref(), description.is_undefined(), external_reference.as_opt_ref(), external_reference.is_undefined());
        let m = mutation(ctx, Role::Billing, "updatePayment", Some(idempotency_key), &fingerprint).await?.dry_run(dry_run);
        let change = |field: &str, value: MaybeUndefined<String>, max: usize| -> AppResult<Option<Option<String>>> {
            Ok(match value {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(text) => Some(optional_text(field, Some(&text), max)?),
            })
        };
        let description = change("description", description, TEXT_MAX_CHARS)?;
        let external_reference = change("external reference", external_reference, 200)?;
        payment_payload(ctx, state(ctx).commands.update_payment(&m, &payment_id, description, external_reference).await?).await
    }
}

async fn load_allocation(ctx: &Context<'_>, key: &str) -> Result<Allocation> {
    let request = caller(ctx, Role::Viewer)?;
    let row = state(ctx).store.allocation(&request.principal.tenant, key).await?.ok_or_else(|| AppError::not_found("allocation"))?;
    Ok(Allocation(row))
}
