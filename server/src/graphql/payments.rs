//! The payments side of the API: payments, allocations, refunds, voids, credit notes, payment
//! methods and client accounts.

use async_graphql::{Context, Enum, ID, InputObject, MaybeUndefined, Object, Result, SimpleObject};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::context::{caller, mutation, state, tenant, today};
use super::inputs::{TEXT_MAX_CHARS, optional_text, required_text};
use super::pagination::{Page, PaymentConnection, wants_total};
use super::scalars::{Amount, Date};
use super::types::{Client, Invoice, Money};
use crate::auth::Role;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::ledger::credit_note::{CreditBy, CreditRequest};
use crate::ledger::numbering::format_number;
use crate::ledger::payment as rules;
use crate::store::accounts::EntryKind;
use crate::store::directory::PartyKind;
use crate::store::charges::ChargeDraft;
use crate::store::audit::Mutation;
use crate::store::payments::{AllocationOf, InvoicePaymentDraft, NewPayment, PaymentDraft, PaymentFilter, check_payable};
use crate::store::rows::{AllocationRow, CreditNoteRow, PaymentMethodRow, PaymentRow, RefundRow, key_of};

/// Payment status (P8).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum PaymentStatus {
    Paid,
    PartiallyRefunded,
    Refunded,
    Void,
}

impl From<rules::PaymentStatus> for PaymentStatus {
    fn from(status: rules::PaymentStatus) -> Self {
        match status {
            rules::PaymentStatus::Paid => PaymentStatus::Paid,
            rules::PaymentStatus::PartiallyRefunded => PaymentStatus::PartiallyRefunded,
            rules::PaymentStatus::Refunded => PaymentStatus::Refunded,
            rules::PaymentStatus::Void => PaymentStatus::Void,
        }
    }
}

impl From<PaymentStatus> for rules::PaymentStatus {
    fn from(status: PaymentStatus) -> Self {
        match status {
            PaymentStatus::Paid => rules::PaymentStatus::Paid,
            PaymentStatus::PartiallyRefunded => rules::PaymentStatus::PartiallyRefunded,
            PaymentStatus::Refunded => rules::PaymentStatus::Refunded,
            PaymentStatus::Void => rules::PaymentStatus::Void,
        }
    }
}

/// How much of a payment sits on invoices (P8).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AllocationState {
    Unallocated,
    PartiallyAllocated,
    Allocated,
}

impl From<rules::AllocationState> for AllocationState {
    fn from(state: rules::AllocationState) -> Self {
        match state {
            rules::AllocationState::Unallocated => AllocationState::Unallocated,
            rules::AllocationState::PartiallyAllocated => AllocationState::PartiallyAllocated,
            rules::AllocationState::Allocated => AllocationState::Allocated,
        }
    }
}

impl From<AllocationState> for rules::AllocationState {
    fn from(state: AllocationState) -> Self {
        match state {
            AllocationState::Unallocated => rules::AllocationState::Unallocated,
            AllocationState::PartiallyAllocated => rules::AllocationState::PartiallyAllocated,
            AllocationState::Allocated => rules::AllocationState::Allocated,
        }
    }
}

/// A way of paying, handled by a plugin.
pub struct PaymentMethod(pub PaymentMethodRow);

#[Object]
impl PaymentMethod {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// CARD, EFTPOS, CASH, DIRECT_DEPOSIT, CHEQUE or OTHER.
    #[graphql(name = "type")]
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    /// The plugin that handles it: "manual" only records payments.
    async fn plugin(&self) -> &str {
        &self.0.plugin
    }
    async fn archived(&self) -> bool {
        self.0.archived
    }
    /// The plugin configuration without its secret fields.
    async fn configuration(&self, ctx: &Context<'_>) -> async_graphql::Json<serde_json::Value> {
        async_graphql::Json(super::plugins::public_config(ctx, &self.0.plugin, self.0.config.as_deref()).0)
    }
    /// Names of the secret configuration fields that are set; their values are never returned.
    async fn secret_fields_set(&self, ctx: &Context<'_>) -> Vec<String> {
        super::plugins::public_config(ctx, &self.0.plugin, self.0.config.as_deref()).1
    }
}

/// Money received from a client.
pub struct Payment(pub PaymentRow);

impl Payment {
    fn money(&self, amount: Decimal) -> Money {
        Money::of(amount, &self.0.doc.currency)
    }
}

#[Object]
impl Payment {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    /// PAY-0001 style; null only in the moment between the payment's commit and its numbering.
    async fn number(&self) -> Option<String> {
        self.0.doc.display_number()
    }
    async fn client(&self, ctx: &Context<'_>) -> Result<Option<Client>> {
        let request = caller(ctx, Role::Viewer)?;
        Ok(state(ctx).store.party(&request.principal.tenant, PartyKind::Client, &self.0.doc.client).await?.map(Client))
    }
    async fn location_id(&self) -> ID {
        ID(self.0.doc.location.clone())
    }
    async fn method(&self, ctx: &Context<'_>) -> Result<Option<PaymentMethod>> {
        let request = caller(ctx, Role::Viewer)?;
        Ok(state(ctx).store.payment_method(&request.principal.tenant, &self.0.doc.method).await?.map(PaymentMethod))
    }
    /// The method's name when the payment was taken.
    async fn method_name(&self) -> &str {
        &self.0.doc.method_name
    }
    async fn date(&self) -> Option<Date> {
        NaiveDate::parse_from_str(&self.0.doc.date, "%Y-%m-%d").ok().map(Date)
    }
    async fn amount(&self) -> Money {
        self.money(self.0.doc.amount)
    }
    /// Sum of active allocations.
    async fn allocated(&self) -> Money {
        self.money(self.0.doc.allocated)
    }
    /// Sum of successful refunds.
    async fn refunded(&self) -> Money {
        self.money(self.0.doc.refunded)
    }
    /// amount - allocated - refunded (M5): credit the client can still use or be refunded.
    async fn unallocated(&self) -> Money {
        self.money(self.0.doc.facts().unallocated())
    }
    async fn status(&self) -> PaymentStatus {
        self.0.doc.facts().status().into()
    }
    async fn allocation_state(&self) -> AllocationState {
        self.0.doc.facts().allocation_state().into()
    }
    async fn currency(&self) -> &str {
        &self.0.doc.currency
    }
    async fn description(&self) -> Option<&str> {
        self.0.doc.description.as_deref()
    }
    /// Set by a plugin, e.g. a gateway's charge id.
    async fn external_reference(&self) -> Option<&str> {
        self.0.doc.external_reference.as_deref()
    }
    /// Every allocation of the payment, removed ones included.
    async fn allocations(&self, ctx: &Context<'_>) -> Result<Vec<Allocation>> {
        let request = caller(ctx, Role::Viewer)?;
        let rows = state(ctx).store.allocations_of(&request.principal.tenant, AllocationOf::Payment, &key_of(&self.0.id)).await?;
        Ok(rows.into_iter().map(Allocation).collect())
    }
    async fn refunds(&self, ctx: &Context<'_>) -> Result<Vec<Refund>> {
        let request = caller(ctx, Role::Viewer)?;
        let rows = state(ctx).store.refunds_of(&request.principal.tenant, &key_of(&self.0.id)).await?;
        Ok(rows.into_iter().map(Refund).collect())
    }
    async fn voided_at(&self) -> Option<DateTime<Utc>> {
        self.0.doc.voided_at
    }
    async fn void_reason(&self) -> Option<&str> {
        self.0.doc.void_reason.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.doc.created_at
    }
}

/// Part of a payment moved onto an invoice. A removed allocation stays, marked removed (P6).
pub struct Allocation(pub AllocationRow);

#[Object]
impl Allocation {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    /// The payment's number and the allocation's place on it: PAY-0007-2.
    async fn number(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let request = caller(ctx, Role::Viewer)?;
        let payment = state(ctx).store.payment(&request.principal.tenant, &self.0.payment).await?;
        Ok(payment.and_then(|p| p.doc.display_number()).map(|number| format!("{number}-{}", self.0.sequence)))
    }
    async fn payment_id(&self) -> ID {
        ID(self.0.payment.clone())
    }
    async fn invoice_id(&self) -> ID {
        ID(self.0.invoice.clone())
    }
    async fn payment(&self, ctx: &Context<'_>) -> Result<Option<Payment>> {
        let request = caller(ctx, Role::Viewer)?;
        Ok(state(ctx).store.payment(&request.principal.tenant, &self.0.payment).await?.map(Payment))
    }
    async fn invoice(&self, ctx: &Context<'_>) -> Result<Option<Invoice>> {
        let request = caller(ctx, Role::Viewer)?;
        let today = today(tenant(ctx).await?);
        Ok(state(ctx).store.invoice(&request.principal.tenant, &self.0.invoice).await?.map(|row| Invoice { row, today }))
    }
    async fn amount(&self) -> Money {
        Money::of(self.0.amount, &self.0.currency)
    }
    async fn active(&self) -> bool {
        self.0.active
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn created_by(&self) -> &str {
        &self.0.created_by
    }
    async fn removed_at(&self) -> Option<DateTime<Utc>> {
        self.0.removed_at
    }
    async fn removed_by(&self) -> Option<&str> {
        self.0.removed_by.as_deref()
    }
}

/// Money returned to a client from a payment's unallocated amount.
pub struct Refund(pub RefundRow);

#[Object]
impl Refund {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    async fn payment_id(&self) -> ID {
        ID(self.0.payment.clone())
    }
    async fn amount(&self) -> Money {
        Money::of(self.0.amount, &self.0.currency)
    }
    async fn date(&self) -> Option<Date> {
        NaiveDate::parse_from_str(&self.0.date, "%Y-%m-%d").ok().map(Date)
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// SUCCEEDED, DECLINED or PENDING, as the payment method's plugin reported.
    async fn outcome(&self) -> &str {
        &self.0.outcome
    }
    async fn outcome_reason(&self) -> Option<&str> {
        self.0.outcome_reason.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// A credit against one invoice: it lowers that invoice's balance only (C3).
pub struct CreditNote(pub CreditNoteRow);

#[derive(SimpleObject)]
pub struct CreditNoteLine {
    /// Index of the credited invoice line, from 0.
    pub line_index: i32,
    pub description: String,
    pub quantity: Option<String>,
    pub subtotal: Money,
    pub tax: Money,
    pub total: Money,
}

#[Object]
impl CreditNote {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    /// CN-0001 style.
    async fn number(&self) -> String {
        format_number("CN", self.0.number)
    }
    async fn invoice_id(&self) -> ID {
        ID(self.0.invoice.clone())
    }
    async fn date(&self) -> Option<Date> {
        NaiveDate::parse_from_str(&self.0.date, "%Y-%m-%d").ok().map(Date)
    }
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// ISSUED or VOID.
    async fn status(&self) -> &str {
        &self.0.status
    }
    async fn lines(&self) -> Vec<CreditNoteLine> {
        let currency = &self.0.currency;
        self.0
            .lines
            .iter()
            .map(|line| CreditNoteLine {
                line_index: line.line as i32,
                description: line.description.clone(),
                quantity: line.quantity.map(|q| q.normalize().to_string()),
                subtotal: Money::of(line.subtotal, currency),
                tax: Money::of(line.tax, currency),
                total: Money::of(line.total, currency),
            })
            .collect()
    }
    async fn subtotal(&self) -> Money {
        Money::of(self.0.subtotal, &self.0.currency)
    }
    async fn tax(&self) -> Money {
        Money::of(self.0.tax, &self.0.currency)
    }
    async fn total(&self) -> Money {
        Money::of(self.0.total, &self.0.currency)
    }
    async fn voided_at(&self) -> Option<DateTime<Utc>> {
        self.0.voided_at
    }
    async fn void_reason(&self) -> Option<&str> {
        self.0.void_reason.as_deref()
    }
}

/// B1: what a client owes and the credit they hold, in one currency (the practice's unless
/// another is asked for); money of other currencies is never added in (M6).
#[derive(SimpleObject)]
pub struct ClientBalance {
    /// Sum of open invoice balances.
    pub owing: Money,
    /// Sum of unallocated amounts of non-void payments.
    pub unallocated_credit: Money,
    /// The part of owing that is past its due date.
    pub overdue: Money,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum StatementEntryKind {
    Invoice,
    Payment,
    Allocation,
    Refund,
    CreditNote,
}

#[derive(SimpleObject)]
pub struct StatementEntry {
    pub date: Date,
    pub kind: StatementEntryKind,
    /// The record, as "table:id".
    pub record: String,
    /// INV-0001, PAY-0001, CN-0001, PAY-0001-1.
    pub reference: String,
    pub description: String,
    /// What the entry adds to what the client owes (negative for payments and credit notes).
    pub amount: Money,
    /// Running balance after this entry: owing minus credit held.
    pub balance: Money,
}

/// B2: a client's account for a date range.
#[derive(SimpleObject)]
pub struct Statement {
    pub from: Date,
    pub to: Date,
    pub opening_balance: Money,
    pub entries: Vec<StatementEntry>,
    pub closing_balance: Money,
}

/// The currency a client account is shown in: the one asked for, else the practice's.
fn account_currency(settings: &crate::store::rows::TenantRow, currency: Option<String>) -> AppResult<String> {
    match currency {
        Some(code) => Ok(crate::ledger::Currency::parse(code.trim())?.code().to_owned()),
        None => Ok(settings.currency.clone()),
    }
}

/// Client account fields, added to the Client type.
pub async fn client_balance(ctx: &Context<'_>, client_key: &str, currency: Option<String>) -> AppResult<ClientBalance> {
    let request = caller(ctx, Role::Viewer)?;
    let settings = tenant(ctx).await?;
    let currency = &account_currency(settings, currency)?;
    let balance = state(ctx).store.client_balance(&request.principal.tenant, client_key, currency, today(settings)).await?;
    Ok(ClientBalance {
        owing: Money::of(balance.owing, currency),
        unallocated_credit: Money::of(balance.unallocated_credit, currency),
        overdue: Money::of(balance.overdue, currency),
    })
}

pub async fn client_statement(ctx: &Context<'_>, client_key: &str, from: Date, to: Date, currency: Option<String>) -> AppResult<Statement> {
    let request = caller(ctx, Role::Viewer)?;
    if from > to {
        return Err(AppError::invalid("from must not be after to"));
    }
    let settings = tenant(ctx).await?;
    let currency = &account_currency(settings, currency)?;
    let statement = state(ctx).store.statement(&request.principal.tenant, client_key, currency, from.0, to.0).await?;
    let entries = statement
        .entries
        .into_iter()
        .map(|entry| StatementEntry {
            date: NaiveDate::parse_from_str(&entry.date, "%Y-%m-%d").map(Date).unwrap_or(from),
            kind: match entry.kind {
                EntryKind::Invoice => StatementEntryKind::Invoice,
                EntryKind::Payment => StatementEntryKind::Payment,
                EntryKind::Allocation => StatementEntryKind::Allocation,
                EntryKind::Refund => StatementEntryKind::Refund,
                EntryKind::CreditNote => StatementEntryKind::CreditNote,
            },
            record: entry.record,
            reference: entry.reference,
            description: entry.description,
            amount: Money::of(entry.amount, currency),
            balance: Money::of(entry.balance, currency),
        })
        .collect();
    Ok(Statement {
        from,
        to,
        opening_balance: Money::of(statement.opening_balance, currency),
        entries,
        closing_balance: Money::of(statement.closing_balance, currency),
    })
}

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

    #[graphql(complexity = "10 + 10 * child_complexity")]
    async fn payment_methods(&self, ctx: &Context<'_>, #[graphql(default = false)] include_archived: bool) -> Result<Vec<PaymentMethod>> {
        let request = caller(ctx, Role::Viewer)?;
        tenant(ctx).await?;
        let rows = state(ctx).store.payment_methods(&request.principal.tenant, include_archived).await?;
        Ok(rows.into_iter().map(PaymentMethod).collect())
    }

    #[graphql(complexity = "10 + child_complexity")]
    async fn allocation(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Allocation>> {
        let request = caller(ctx, Role::Viewer)?;
        Ok(state(ctx).store.allocation(&request.principal.tenant, &id).await?.map(Allocation))
    }

    #[graphql(complexity = "10 + child_complexity")]
    async fn credit_note(&self, ctx: &Context<'_>, id: ID) -> Result<Option<CreditNote>> {
        let request = caller(ctx, Role::Viewer)?;
        Ok(state(ctx).store.credit_note(&request.principal.tenant, &id).await?.map(CreditNote))
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
    pub fn parse(&self, today: NaiveDate) -> AppResult<InvoicePaymentDraft> {
        Ok(InvoicePaymentDraft {
            external_reference: None,
            method: self.method_id.0.clone(),
            amount: self.amount.map(|a| a.0),
            date: self.date.map_or(today, |d| d.0),
            location: self.location_id.as_ref().map(|id| id.0.clone()),
            description: optional_text("description", self.description.as_deref(), TEXT_MAX_CHARS)?,
        })
    }

    pub fn charge_draft(&self, today: NaiveDate, finalize: bool) -> AppResult<ChargeDraft> {
        Ok(ChargeDraft {
            method: self.method_id.0.clone(),
            amount: self.amount.map(|a| a.0),
            date: self.date.map_or(today, |d| d.0),
            location: self.location_id.as_ref().map(|id| id.0.clone()),
            description: optional_text("description", self.description.as_deref(), TEXT_MAX_CHARS)?,
            details: self.details.as_ref().map_or(serde_json::json!({}), |d| d.0.clone()),
            finalize,
        })
    }
}

/// The payment method, when it only records payments (manual); None when its plugin charges.
pub async fn manual_method(ctx: &Context<'_>, method_key: &str) -> AppResult<Option<PaymentMethodRow>> {
    let request = caller(ctx, Role::Viewer)?;
    let method = state(ctx)
        .store
        .payment_method(&request.principal.tenant, method_key)
        .await?
        .ok_or_else(|| AppError::not_found("payment method"))?;
    Ok((method.plugin == crate::store::payments::MANUAL_PLUGIN).then_some(method))
}

/// Asks the manual plugin to check a recorded payment's details (a cheque needs its number);
/// returns the reference it gives, such as the cheque number.
pub async fn checked_manual_details(
    ctx: &Context<'_>,
    method: &PaymentMethodRow,
    amount: Decimal,
    currency: &str,
    details: Option<&serde_json::Value>,
    idempotency_key: &str,
) -> AppResult<Option<String>> {
    let request = caller(ctx, Role::Viewer)?;
    // The ledger's own checks on the amount come first (M2), so their codes do not depend on
    // the plugin.
    let currency_code = crate::ledger::Currency::parse(currency)?;
    crate::ledger::Money::from_decimal(amount, currency_code)?.require_positive()?;
    let charge = settle_plugin::ChargeRequest {
        tenant: request.principal.tenant.to_string(),
        idempotency_key: idempotency_key.to_owned(),
        amount,
        currency: currency.to_owned(),
        method_type: method.kind.clone(),
        config: method.config.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or(serde_json::json!({})),
        details: details.cloned().unwrap_or(serde_json::json!({})),
        description: None,
    };
    match state(ctx).charging.host().charge(&method.plugin, &charge).await {
        Ok(settle_plugin::Outcome::Succeeded { reference }) => Ok(reference),
        Ok(settle_plugin::Outcome::Declined { reason }) => Err(AppError::new(ErrorCode::PluginRejected, reason)),
        Ok(_) => Ok(None),
        Err(crate::plugins::CallError::Plugin(error)) => Err(AppError::new(ErrorCode::PluginRejected, error.message)),
        Err(other) => Err(AppError::new(ErrorCode::PluginUnavailable, other.to_string())),
    }
}

#[derive(InputObject, Serialize)]
pub struct RefundInput {
    pub amount: Amount,
    pub date: Option<Date>,
    pub description: Option<String>,
}

/// One invoice line to credit: by quantity or by amount (including tax), not both.
#[derive(InputObject, Serialize)]
pub struct CreditNoteLineInput {
    /// Index of the invoice line, from 0.
    pub line_index: i32,
    /// Decimal quantity such as "1".
    pub quantity: Option<String>,
    pub amount: Option<Amount>,
}

#[derive(InputObject, Serialize)]
pub struct CreditNoteInput {
    pub reason: String,
    pub date: Option<Date>,
    pub lines: Vec<CreditNoteLineInput>,
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

/// The answer to a manual payment mutation. Its checks before the transaction read state that
/// the first of two identical requests changes (an invoice's balance is 0 once paid), so when
/// they fail, a repeat of a request that already succeeded still gets the first result (X2). A
/// repeat that passes them gets the first result from the transaction's own key check.
async fn new_payment_or_replay(ctx: &Context<'_>, m: &Mutation<'_>, attempt: AppResult<NewPayment>) -> AppResult<Payment> {
    match attempt {
        Ok(NewPayment { row: Some(row), .. }) => Ok(Payment(row)),
        Ok(NewPayment { key, row: None }) => load_payment(ctx, &key).await,
        Err(error) => match state(ctx).store.replay::<String>(m).await? {
            Some(key) => load_payment(ctx, &key).await,
            None => Err(error),
        },
    }
}

#[Object]
impl PaymentMutation {
    /// Records a standalone payment (P1, P2) and any allocations given, in one transaction.
    async fn record_payment(&self, ctx: &Context<'_>, input: RecordPaymentInput, idempotency_key: String) -> Result<Payment> {
        let m = mutation(ctx, Role::Billing, "recordPayment", Some(idempotency_key.clone()), &input).await?;
        let attempt = async {
            if input.allocations.len() > ALLOCATIONS_MAX {
                return Err(AppError::invalid(format!("a payment takes at most {ALLOCATIONS_MAX} allocations at once")));
            }
            let settings = tenant(ctx).await?;
            let today = today(settings);
            let currency = input.currency.as_deref().map_or(settings.currency.as_str(), str::trim).to_owned();
            let reference = match manual_method(ctx, &input.method_id).await? {
                Some(method) => {
                    checked_manual_details(ctx, &method, input.amount.0, &currency, input.details.as_ref().map(|d| &d.0), &idempotency_key)
                        .await?
                }
                None => None,
            };
            let draft = PaymentDraft {
                client: input.client_id.0.clone(),
                location: input.location_id.0.clone(),
                method: input.method_id.0.clone(),
                date: input.date.map_or(today, |d| d.0),
                amount: input.amount.0,
                currency: input.currency.as_deref().map(str::trim).map(str::to_owned),
                description: optional_text("description", input.description.as_deref(), TEXT_MAX_CHARS)?,
                allocations: input.allocations.iter().map(|a| (a.invoice_id.0.clone(), a.amount.0)).collect(),
                external_reference: reference,
            };
            state(ctx).store.record_payment(&m, draft, today).await
        }
        .await;
        Ok(new_payment_or_replay(ctx, &m, attempt).await?)
    }

    /// Pays an OPEN invoice with a new manual payment (P3).
    async fn pay_invoice(&self, ctx: &Context<'_>, invoice_id: ID, input: PayInvoiceInput, idempotency_key: String) -> Result<Payment> {
        let m = mutation(ctx, Role::Billing, "payInvoice", Some(idempotency_key.clone()), &(&invoice_id.0, &input)).await?;
        let today = today(tenant(ctx).await?);
        let Some(method) = manual_method(ctx, &input.method_id).await? else {
            // A charge goes to a plugin: a repeated request is answered before anything is sent.
            if let Some(key) = state(ctx).store.replay::<String>(&m).await? {
                return Ok(load_payment(ctx, &key).await?);
            }
            let key = state(ctx).charging.charge_invoice(&m, &invoice_id, input.charge_draft(today, false)?).await?;
            return Ok(load_payment(ctx, &key).await?);
        };
        let attempt = async {
            let mut draft = input.parse(today)?;
            let request = caller(ctx, Role::Viewer)?;
            let invoice = state(ctx).store.invoice(&request.principal.tenant, &invoice_id).await?.ok_or_else(|| AppError::not_found("invoice"))?;
            // Checked again in the transaction; here so that a paid invoice is reported as such
            // rather than as a payment of its balance, 0.
            check_payable(&invoice)?;
            let amount = input.amount.map_or(invoice.doc.facts().balance(), |a| a.0);
            let details = input.details.as_ref().map(|d| &d.0);
            draft.external_reference = checked_manual_details(ctx, &method, amount, &invoice.doc.currency, details, &idempotency_key).await?;
            state(ctx).store.pay_invoice(&m, &invoice_id, draft, today).await
        }
        .await;
        Ok(new_payment_or_replay(ctx, &m, attempt).await?)
    }

    /// Applies part of an existing payment to an invoice (P5); returns the allocation.
    async fn apply_payment(
        &self,
        ctx: &Context<'_>,
        payment_id: ID,
        invoice_id: ID,
        amount: Amount,
        idempotency_key: String,
    ) -> Result<Allocation> {
        let m = mutation(ctx, Role::Billing, "applyPayment", Some(idempotency_key), &(&payment_id.0, &invoice_id.0, amount)).await?;
        let today = today(tenant(ctx).await?);
        let key = state(ctx).store.apply_payment(&m, &payment_id, &invoice_id, amount.0, today).await?;
        load_allocation(ctx, &key).await
    }

    /// Removes an allocation (P6); it stays on record, marked removed.
    async fn remove_allocation(&self, ctx: &Context<'_>, allocation_id: ID, idempotency_key: String) -> Result<Allocation> {
        let m = mutation(ctx, Role::Billing, "removeAllocation", Some(idempotency_key), &allocation_id.0).await?;
        let key = state(ctx).store.remove_allocation(&m, &allocation_id).await?;
        load_allocation(ctx, &key).await
    }

    /// Refunds unallocated money of a payment (F1-F4); returns the refund.
    async fn refund_payment(&self, ctx: &Context<'_>, payment_id: ID, input: RefundInput, idempotency_key: String) -> Result<Refund> {
        let m = mutation(ctx, Role::Billing, "refundPayment", Some(idempotency_key), &(&payment_id.0, &input)).await?;
        let today = today(tenant(ctx).await?);
        let description = optional_text("description", input.description.as_deref(), TEXT_MAX_CHARS)?;
        let key = state(ctx)
            .charging
            .refund(&m, &payment_id, input.amount.0, input.date.map_or(today, |d| d.0), description)
            .await?;
        let request = caller(ctx, Role::Viewer)?;
        let refund = state(ctx).store.refund(&request.principal.tenant, &key).await?.ok_or_else(|| AppError::not_found("refund"))?;
        Ok(Refund(refund))
    }

    /// Voids a payment with no allocations and no refunds (V1, V2).
    async fn void_payment(&self, ctx: &Context<'_>, payment_id: ID, reason: Option<String>, idempotency_key: String) -> Result<Payment> {
        let m = mutation(ctx, Role::Billing, "voidPayment", Some(idempotency_key), &(&payment_id.0, &reason)).await?;
        let reason = optional_text("reason", reason.as_deref(), TEXT_MAX_CHARS)?;
        let key = state(ctx).store.void_payment(&m, &payment_id, reason).await?;
        Ok(load_payment(ctx, &key).await?)
    }

    /// Changes a payment's description and external reference, the only editable fields (P9).
    async fn update_payment(
        &self,
        ctx: &Context<'_>,
        payment_id: ID,
        #[graphql(desc = "Left out: unchanged; null: cleared.")] description: MaybeUndefined<String>,
        #[graphql(desc = "Left out: unchanged; null: cleared.")] external_reference: MaybeUndefined<String>,
        idempotency_key: String,
    ) -> Result<Payment> {
        let fingerprint = (&payment_id.0, description.as_opt_ref(), description.is_undefined(), external_reference.as_opt_ref(), external_reference.is_undefined());
        let m = mutation(ctx, Role::Billing, "updatePayment", Some(idempotency_key), &fingerprint).await?;
        let change = |field: &str, value: MaybeUndefined<String>, max: usize| -> AppResult<Option<Option<String>>> {
            Ok(match value {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(text) => Some(optional_text(field, Some(&text), max)?),
            })
        };
        let description = change("description", description, TEXT_MAX_CHARS)?;
        let external_reference = change("external reference", external_reference, 200)?;
        let key = state(ctx).store.update_payment(&m, &payment_id, description, external_reference).await?;
        Ok(load_payment(ctx, &key).await?)
    }

    /// Issues a credit note for lines of an OPEN invoice (C1, C2).
    async fn issue_credit_note(&self, ctx: &Context<'_>, invoice_id: ID, input: CreditNoteInput, idempotency_key: String) -> Result<CreditNote> {
        let m = mutation(ctx, Role::Billing, "issueCreditNote", Some(idempotency_key), &(&invoice_id.0, &input)).await?;
        let today = today(tenant(ctx).await?);
        let reason = input.reason.trim();
        let reason = if reason.is_empty() { String::new() } else { required_text("reason", reason, TEXT_MAX_CHARS)? };
        let requests = input
            .lines
            .iter()
            .map(|line| {
                let by = match (&line.quantity, line.amount) {
                    (Some(quantity), None) => CreditBy::Quantity(
                        crate::ledger::money::parse_decimal(quantity.trim())
                            .map_err(|_| AppError::invalid(format!("quantity {quantity:?} is not a decimal")))?,
                    ),
                    (None, Some(amount)) => CreditBy::Amount(amount.0),
                    (Some(_), Some(_)) => return Err(AppError::invalid("credit a line by quantity or by amount, not both")),
                    (None, None) => return Err(AppError::invalid("say how much of the line to credit: a quantity or an amount")),
                };
                let line_index = usize::try_from(line.line_index).map_err(|_| AppError::invalid("lineIndex starts at 0"))?;
                Ok(CreditRequest { line: line_index, by })
            })
            .collect::<AppResult<Vec<_>>>()?;
        let key = state(ctx)
            .store
            .issue_credit_note(&m, &invoice_id, reason, requests, input.date.map_or(today, |d| d.0))
            .await?;
        load_credit_note(ctx, &key).await
    }

    /// Voids a credit note (C4): the invoice owes its amount again.
    async fn void_credit_note(&self, ctx: &Context<'_>, credit_note_id: ID, reason: Option<String>, idempotency_key: String) -> Result<CreditNote> {
        let m = mutation(ctx, Role::Billing, "voidCreditNote", Some(idempotency_key), &(&credit_note_id.0, &reason)).await?;
        let reason = optional_text("reason", reason.as_deref(), TEXT_MAX_CHARS)?;
        let key = state(ctx).store.void_credit_note(&m, &credit_note_id, reason).await?;
        load_credit_note(ctx, &key).await
    }
}

async fn load_allocation(ctx: &Context<'_>, key: &str) -> Result<Allocation> {
    let request = caller(ctx, Role::Viewer)?;
    let row = state(ctx).store.allocation(&request.principal.tenant, key).await?.ok_or_else(|| AppError::not_found("allocation"))?;
    Ok(Allocation(row))
}

async fn load_credit_note(ctx: &Context<'_>, key: &str) -> Result<CreditNote> {
    let request = caller(ctx, Role::Viewer)?;
    let row = state(ctx).store.credit_note(&request.principal.tenant, key).await?.ok_or_else(|| AppError::not_found("credit note"))?;
    Ok(CreditNote(row))
}
