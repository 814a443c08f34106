//! Invoices (I1-I8): their inputs, queries and mutations, including finalizing with a payment.
//! The Invoice type itself is in invoices_and_payments.rs.

use async_graphql::{Context, Enum, ID, InputObject, Object, Result};
use rust_decimal::Decimal;
use serde::Serialize;

use super::preview::{PreviewOut, answer, payload};
use crate::store::preview::Applied;
use super::context::{caller, mutation, state, tenant, today};
use super::invoices_and_payments::{DiscountType, Invoice, InvoiceStatus};
use super::pagination::{Page, connection_types, wants_total};
use super::payments::PayInvoiceInput;
use super::scalars::{Amount, Date};
use super::text::{NAME_MAX_CHARS, NOTES_MAX_CHARS, TEXT_MAX_CHARS, optional_text, plain_decimal, required_text};
use crate::auth::Role;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::ledger::money::parse_decimal;
use crate::store::invoices::{DiscountDraft, InvoiceDraft, InvoiceFilter, LineDraft};
use crate::store::rows::key_of;

connection_types!(Invoice, InvoiceConnection, InvoiceEdge);

/// Most lines on one invoice.
pub const LINES_MAX: usize = 200;

/// Which invoices to list; all conditions must hold.
#[derive(InputObject, Default)]
pub struct InvoiceFilterInput {
    /// The status a person sees; OVERDUE selects open invoices past their due date, OPEN the rest.
    pub status: Option<InvoiceStatus>,
    pub client_id: Option<ID>,
    pub location_id: Option<ID>,
    /// Issue date on or after.
    pub issued_from: Option<Date>,
    /// Issue date on or before.
    pub issued_to: Option<Date>,
}

#[derive(InputObject, Serialize)]
pub struct DiscountInput {
    #[graphql(name = "type")]
    pub kind: DiscountType,
    /// An amount ("5.00") or a percentage ("10").
    pub value: String,
}

#[derive(InputObject, Serialize)]
pub struct LineItemInput {
    pub description: String,
    pub item_code: Option<String>,
    /// Decimal quantity such as "1" or "0.5"; 1 when left out.
    pub quantity: Option<String>,
    pub unit_price: Amount,
    pub discount: Option<DiscountInput>,
    pub tax_rate_id: Option<ID>,
}

/// An invoice's fields and lines. On update, the lines given replace all lines.
#[derive(InputObject, Serialize)]
pub struct InvoiceInput {
    pub client_id: ID,
    /// A contact to address the invoice to.
    pub bill_to_id: Option<ID>,
    pub location_id: ID,
    pub practitioner: Option<String>,
    /// Today in the practice's timezone when left out.
    pub issue_date: Option<Date>,
    /// Issue date + the practice's payment terms when left out.
    pub due_date: Option<Date>,
    /// The practice's currency when left out.
    pub currency: Option<String>,
    pub notes: Option<String>,
    #[graphql(default)]
    pub lines: Vec<LineItemInput>,
}

impl InvoiceInput {
    pub fn parse(&self, today: chrono::NaiveDate) -> AppResult<InvoiceDraft> {
        if self.lines.len() > LINES_MAX {
            return Err(AppError::invalid(format!("an invoice has at most {LINES_MAX} lines")));
        }
        let currency = match &self.currency {
            None => None,
            Some(code) => Some(crate::ledger::Currency::parse(code.trim())?.code().to_owned()),
        };
        let lines = self
            .lines
            .iter()
            .enumerate()
            .map(|(index, line)| {
                let at = |e: AppError| AppError::new(e.code, format!("line {}: {}", index + 1, e.message));
                let discount = match &line.discount {
                    None => None,
                    // A fixed discount is money: it is parsed like every amount (M1).
                    Some(d) if d.kind == DiscountType::Amount => {
                        Some(DiscountDraft::Amount(parse_decimal(d.value.trim()).map_err(|e| at(e.into()))?))
                    }
                    Some(d) => Some(DiscountDraft::Percent(plain_decimal("discount", &d.value).map_err(at)?)),
                };
                Ok(LineDraft {
                    description: required_text("description", &line.description, TEXT_MAX_CHARS).map_err(at)?,
                    item_code: optional_text("item code", line.item_code.as_deref(), 64).map_err(at)?,
                    quantity: match &line.quantity {
                        None => Decimal::ONE,
                        Some(q) => plain_decimal("quantity", q).map_err(at)?,
                    },
                    unit_price: line.unit_price.0,
                    discount,
                    tax_rate: line.tax_rate_id.as_ref().map(|id| id.0.clone()),
                })
            })
            .collect::<AppResult<Vec<_>>>()?;
        Ok(InvoiceDraft {
            client: self.client_id.0.clone(),
            contact: self.bill_to_id.as_ref().map(|id| id.0.clone()),
            location: self.location_id.0.clone(),
            practitioner: optional_text("practitioner", self.practitioner.as_deref(), NAME_MAX_CHARS)?,
            issue_date: self.issue_date.map_or(today, |d| d.0),
            due_date: self.due_date.map(|d| d.0),
            currency,
            notes: optional_text("notes", self.notes.as_deref(), NOTES_MAX_CHARS)?,
            lines,
        })
    }
}

/// How a finalized invoice is to be paid (I2).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Serialize, Default)]
pub enum PaymentOption {
    /// Send the invoice; it stays OPEN until paid.
    #[default]
    RequestPayment,
    /// Record a new manual payment and allocate it to the invoice.
    ApplyPayment,
    /// Charge through a plugin-backed payment method.
    Charge,
}

/// The payment taken at finalize with APPLY_PAYMENT (a manual method) or CHARGE (a method whose
/// plugin charges).
#[derive(InputObject, Serialize)]
pub struct FinalizePaymentInput {
    pub method_id: ID,
    /// Details for the method's plugin, e.g. {"card_number": "4242424242424242"}.
    pub details: Option<async_graphql::Json<serde_json::Value>>,
    /// The invoice balance when left out.
    pub amount: Option<Amount>,
    pub date: Option<Date>,
    pub location_id: Option<ID>,
    pub description: Option<String>,
}

#[derive(InputObject, Serialize, Default)]
pub struct FinalizeInvoiceInput {
    #[graphql(default)]
    pub payment_option: PaymentOption,
    /// Required with APPLY_PAYMENT and CHARGE.
    pub payment: Option<FinalizePaymentInput>,
}

#[derive(Default)]
pub struct InvoiceQuery;

#[Object]
impl InvoiceQuery {
    #[graphql(complexity = "10 + child_complexity")]
    async fn invoice(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Invoice>> {
        let request = caller(ctx, Role::Viewer)?;
        let today = today(tenant(ctx).await?);
        let row = state(ctx).store.invoice(&request.principal.tenant, &id).await?;
        Ok(row.map(|row| Invoice { row, today }))
    }

    /// Invoices, newest first.
    #[graphql(complexity = "25 + first.unwrap_or(20).max(0) as usize * child_complexity")]
    async fn invoices(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<InvoiceFilterInput>,
    ) -> Result<InvoiceConnection> {
        let request = caller(ctx, Role::Viewer)?;
        let today = today(tenant(ctx).await?);
        let page = Page::parse(first, after, "invoice", state(ctx).limits.page_size_max)?;
        let filter = filter.unwrap_or_default();
        let filter = InvoiceFilter {
            status: filter.status.map(Into::into),
            client: filter.client_id.map(|id| id.0),
            location: filter.location_id.map(|id| id.0),
            issued_from: filter.issued_from.map(|d| d.0),
            issued_to: filter.issued_to.map(|d| d.0),
        };
        let (rows, total) = state(ctx)
            .store
            .invoices(&request.principal.tenant, &filter, today, page.after.clone(), page.fetch_limit(), wants_total(ctx))
            .await?;
        Ok(page.connection(rows.into_iter().map(|row| (key_of(&row.id), Invoice { row, today })).collect(), total.unwrap_or(0)))
    }
}

async fn load_invoice(ctx: &Context<'_>, key: &str) -> AppResult<Invoice> {
    let request = caller(ctx, Role::Viewer)?;
    let today = today(tenant(ctx).await?);
    let row = state(ctx).store.invoice(&request.principal.tenant, key).await?.ok_or_else(|| AppError::not_found("invoice"))?;
    Ok(Invoice { row, today })
}

payload!(CreateInvoicePayload, invoice: Invoice, "createInvoice");
payload!(UpdateInvoicePayload, invoice: Invoice, "updateInvoice");
payload!(FinalizeInvoicePayload, invoice: Invoice, "finalizeInvoice");
payload!(RevertInvoiceToDraftPayload, invoice: Invoice, "revertInvoiceToDraft");
payload!(VoidInvoicePayload, invoice: Invoice, "voidInvoice");
payload!(DeleteInvoicePayload, deleted_invoice_id: ID, "deleteInvoice");

/// The invoice a mutation wrote, for its payload.
async fn invoice_payload<P: From<(Option<Invoice>, Option<PreviewOut>)>>(ctx: &Context<'_>, applied: Applied<String>) -> Result<P> {
    Ok(answer(ctx, applied, |key| async move { Ok(load_invoice(ctx, &key).await?) }).await?.into())
}

#[derive(Default)]
pub struct InvoiceMutation;

#[Object]
impl InvoiceMutation {
    /// Creates a DRAFT invoice (I1) (BILLING).
    async fn create_invoice(
        &self,
        ctx: &Context<'_>,
        input: InvoiceInput,
        idempotency_key: String,
        #[graphql(default, desc = "Answer what the request would do, and change nothing (D1).")] dry_run: bool,
    ) -> Result<CreateInvoicePayload> {
        let m = mutation(ctx, Role::Billing, "createInvoice", Some(idempotency_key), &input).await?.dry_run(dry_run);
        let draft = input.parse(today(tenant(ctx).await?))?;
        invoice_payload(ctx, state(ctx).commands.create_invoice(&m, draft).await?).await
    }

    /// Replaces a DRAFT invoice's fields and lines (I1, I8) (BILLING).
    async fn update_invoice(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: InvoiceInput,
        idempotency_key: String,
        #[graphql(default, desc = "Answer what the request would do, and change nothing (D1).")] dry_run: bool,
    ) -> Result<UpdateInvoicePayload> {
        let m = mutation(ctx, Role::Billing, "updateInvoice", Some(idempotency_key), &(&id.0, &input)).await?.dry_run(dry_run);
        let draft = input.parse(today(tenant(ctx).await?))?;
        invoice_payload(ctx, state(ctx).commands.update_invoice(&m, &id, draft).await?).await
    }

    /// Finalizes a DRAFT: it gets its number and becomes OPEN, or PAID when nothing is owed (I2).
    async fn finalize_invoice(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default)] input: FinalizeInvoiceInput,
        idempotency_key: String,
        #[graphql(default, desc = "Answer what the request would do, and change nothing (D1).")] dry_run: bool,
    ) -> Result<FinalizeInvoicePayload> {
        let m = mutation(ctx, Role::Billing, "finalizeInvoice", Some(idempotency_key), &(&id.0, &input)).await?.dry_run(dry_run);
        let payment = |option: &str| {
            input.payment.as_ref().map(|payment| PayInvoiceInput {
                method_id: payment.method_id.clone(),
                details: payment.details.clone(),
                amount: payment.amount,
                date: payment.date,
                location_id: payment.location_id.clone(),
                description: payment.description.clone(),
            })
            .ok_or_else(|| {
                AppError::new(ErrorCode::PaymentOptionUnavailable, format!("{option} needs payment: {{methodId, ...}}"))
            })
        };
        let today = today(tenant(ctx).await?);
        let commands = &state(ctx).commands;
        let applied = match input.payment_option {
            PaymentOption::RequestPayment => commands.finalize_invoice(&m, &id).await?,
            PaymentOption::ApplyPayment => commands.finalize_and_record(&m, &id, payment("APPLY_PAYMENT")?.request(today)?).await?,
            PaymentOption::Charge => commands.finalize_and_charge(&m, &id, payment("CHARGE")?.request(today)?).await?,
        };
        invoice_payload(ctx, applied).await
    }

    /// Returns an invoice to DRAFT; it keeps its number (I5, I8) (BILLING).
    async fn revert_invoice_to_draft(
        &self,
        ctx: &Context<'_>,
        id: ID,
        idempotency_key: String,
        #[graphql(default, desc = "Answer what the request would do, and change nothing (D1).")] dry_run: bool,
    ) -> Result<RevertInvoiceToDraftPayload> {
        let m = mutation(ctx, Role::Billing, "revertInvoiceToDraft", Some(idempotency_key), &id.0).await?.dry_run(dry_run);
        invoice_payload(ctx, state(ctx).commands.revert_invoice(&m, &id).await?).await
    }

    /// Voids an OPEN invoice with nothing allocated or credited (I7). Final (BILLING).
    async fn void_invoice(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
        idempotency_key: String,
        #[graphql(default, desc = "Answer what the request would do, and change nothing (D1).")] dry_run: bool,
    ) -> Result<VoidInvoicePayload> {
        let m = mutation(ctx, Role::Billing, "voidInvoice", Some(idempotency_key), &(&id.0, &reason)).await?.dry_run(dry_run);
        let reason = optional_text("reason", reason.as_deref(), TEXT_MAX_CHARS)?;
        invoice_payload(ctx, state(ctx).commands.void_invoice(&m, &id, reason).await?).await
    }

    /// Deletes a DRAFT that never had a number (I6) (BILLING).
    async fn delete_invoice(
        &self,
        ctx: &Context<'_>,
        id: ID,
        idempotency_key: String,
        #[graphql(default, desc = "Answer what the request would do, and change nothing (D1).")] dry_run: bool,
    ) -> Result<DeleteInvoicePayload> {
        let m = mutation(ctx, Role::Billing, "deleteInvoice", Some(idempotency_key), &id.0).await?.dry_run(dry_run);
        let applied = state(ctx).commands.delete_invoice(&m, &id).await?;
        Ok(answer(ctx, applied, |key| async move { Ok(ID(key)) }).await?.into())
    }
}
