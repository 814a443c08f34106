//! Mutations. Each checks the caller's role (A2), parses its input at the edge, and hands the
//! validated values to the store, which runs the ledger's rules in one transaction.

use async_graphql::{Context, ID, Object, Result};

use super::context::{caller, mutation, state, tenant, today};
use super::inputs::{
    ClientInput, ContactInput, FinalizeInvoiceInput, InvoiceInput, LocationInput, PaymentOption, SettingsInput,
    TaxRateInput, TEXT_MAX_CHARS, optional_text, required_text, tax_percent, NAME_MAX_CHARS,
};
use super::types::{Client, Contact, Invoice, Location, Settings, TaxRate};
use crate::auth::Role;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::ledger::Currency;
use crate::store::directory::PartyKind;
use crate::store::tenants::SettingsChange;

#[derive(Default)]
pub struct Mutation;

async fn load_invoice(ctx: &Context<'_>, key: &str) -> AppResult<Invoice> {
    let request = caller(ctx, Role::Viewer)?;
    let today = today(tenant(ctx).await?);
    let row = state(ctx).store.invoice(&request.principal.tenant, key).await?.ok_or_else(|| AppError::not_found("invoice"))?;
    Ok(Invoice { row, today })
}

async fn load_party(ctx: &Context<'_>, kind: PartyKind, key: &str) -> AppResult<crate::store::rows::PartyRow> {
    let request = caller(ctx, Role::Viewer)?;
    state(ctx).store.party(&request.principal.tenant, kind, key).await?.ok_or_else(|| AppError::not_found(kind.table()))
}

async fn load_tax_rate(ctx: &Context<'_>, key: &str) -> AppResult<TaxRate> {
    let request = caller(ctx, Role::Viewer)?;
    let row = state(ctx).store.tax_rate(&request.principal.tenant, key).await?.ok_or_else(|| AppError::not_found("tax rate"))?;
    Ok(TaxRate(row))
}

#[Object(name = "CoreMutation")]
impl Mutation {
    /// Changes the practice's settings (ADMIN).
    async fn update_settings(&self, ctx: &Context<'_>, input: SettingsInput, idempotency_key: Option<String>) -> Result<Settings> {
        let m = mutation(ctx, Role::Admin, "updateSettings", idempotency_key, &input).await?;
        let change = SettingsChange {
            currency: match &input.currency {
                Some(code) => Some(Currency::parse(code.trim()).map_err(AppError::from)?.code().to_owned()),
                None => None,
            },
            tax_mode: input.tax_mode.map(|mode| mode.as_str().to_owned()),
            payment_terms_days: match input.payment_terms_days {
                Some(days) if !(0..=3650).contains(&days) => {
                    return Err(AppError::invalid("payment terms are 0 to 3650 days").into());
                }
                days => days.map(i64::from),
            },
            next_invoice_number: match input.next_invoice_number {
                Some(n) if n < 1 => return Err(AppError::invalid("the next invoice number is at least 1").into()),
                n => n.map(i64::from),
            },
            timezone: match &input.timezone {
                Some(zone) => match zone.trim().parse::<chrono_tz::Tz>() {
                    Ok(tz) => Some(tz.name().to_owned()),
                    Err(_) => return Err(AppError::invalid(format!("{zone:?} is not an IANA timezone such as Australia/Sydney")).into()),
                },
                None => None,
            },
        };
        state(ctx).store.update_settings(&m, change).await?;
        let request = caller(ctx, Role::Viewer)?;
        Ok(Settings(state(ctx).store.tenant_now(&request.principal.tenant).await?))
    }

    /// Adds a client (BILLING).
    async fn create_client(&self, ctx: &Context<'_>, input: ClientInput, idempotency_key: Option<String>) -> Result<Client> {
        let m = mutation(ctx, Role::Billing, "createClient", idempotency_key, &input).await?;
        let key = state(ctx).store.create_party(&m, PartyKind::Client, input.parse()?).await?;
        Ok(Client(load_party(ctx, PartyKind::Client, &key).await?))
    }

    /// Changes a client's name, email and phone (BILLING).
    async fn update_client(&self, ctx: &Context<'_>, id: ID, input: ClientInput, idempotency_key: Option<String>) -> Result<Client> {
        let m = mutation(ctx, Role::Billing, "updateClient", idempotency_key, &(&id.0, &input)).await?;
        let key = state(ctx).store.update_party(&m, PartyKind::Client, &id, input.parse()?).await?;
        Ok(Client(load_party(ctx, PartyKind::Client, &key).await?))
    }

    /// Adds a contact, a third party invoices can be addressed to (BILLING).
    async fn create_contact(&self, ctx: &Context<'_>, input: ContactInput, idempotency_key: Option<String>) -> Result<Contact> {
        let m = mutation(ctx, Role::Billing, "createContact", idempotency_key, &input).await?;
        let key = state(ctx).store.create_party(&m, PartyKind::Contact, input.parse()?).await?;
        Ok(Contact(load_party(ctx, PartyKind::Contact, &key).await?))
    }

    async fn update_contact(&self, ctx: &Context<'_>, id: ID, input: ContactInput, idempotency_key: Option<String>) -> Result<Contact> {
        let m = mutation(ctx, Role::Billing, "updateContact", idempotency_key, &(&id.0, &input)).await?;
        let key = state(ctx).store.update_party(&m, PartyKind::Contact, &id, input.parse()?).await?;
        Ok(Contact(load_party(ctx, PartyKind::Contact, &key).await?))
    }

    /// Adds a location (ADMIN).
    async fn create_location(&self, ctx: &Context<'_>, input: LocationInput, idempotency_key: Option<String>) -> Result<Location> {
        let m = mutation(ctx, Role::Admin, "createLocation", idempotency_key, &input).await?;
        let key = state(ctx).store.create_location(&m, input.parse()?).await?;
        let request = caller(ctx, Role::Viewer)?;
        let row = state(ctx).store.location(&request.principal.tenant, &key).await?.ok_or_else(|| AppError::not_found("location"))?;
        Ok(Location(row))
    }

    async fn update_location(&self, ctx: &Context<'_>, id: ID, input: LocationInput, idempotency_key: Option<String>) -> Result<Location> {
        let m = mutation(ctx, Role::Admin, "updateLocation", idempotency_key, &(&id.0, &input)).await?;
        let key = state(ctx).store.update_location(&m, &id, input.parse()?).await?;
        let request = caller(ctx, Role::Viewer)?;
        let row = state(ctx).store.location(&request.principal.tenant, &key).await?.ok_or_else(|| AppError::not_found("location"))?;
        Ok(Location(row))
    }

    /// Adds a custom tax rate (ADMIN).
    async fn create_tax_rate(&self, ctx: &Context<'_>, input: TaxRateInput, idempotency_key: Option<String>) -> Result<TaxRate> {
        let m = mutation(ctx, Role::Admin, "createTaxRate", idempotency_key, &input).await?;
        let name = required_text("name", &input.name, NAME_MAX_CHARS)?;
        let key = state(ctx).store.create_tax_rate(&m, name, tax_percent(&input.percent)?).await?;
        Ok(load_tax_rate(ctx, &key).await?)
    }

    /// Edits a custom tax rate (ADMIN). Invoices already saved keep the rate they were saved with.
    async fn update_tax_rate(&self, ctx: &Context<'_>, id: ID, input: TaxRateInput, idempotency_key: Option<String>) -> Result<TaxRate> {
        let m = mutation(ctx, Role::Admin, "updateTaxRate", idempotency_key, &(&id.0, &input)).await?;
        let name = required_text("name", &input.name, NAME_MAX_CHARS)?;
        let percent = tax_percent(&input.percent)?;
        let key = state(ctx).store.change_tax_rate(&m, &id, Some(name), Some(percent), None).await?;
        Ok(load_tax_rate(ctx, &key).await?)
    }

    /// Archives a custom tax rate: it can no longer be chosen for new lines (ADMIN).
    async fn archive_tax_rate(&self, ctx: &Context<'_>, id: ID, idempotency_key: Option<String>) -> Result<TaxRate> {
        let m = mutation(ctx, Role::Admin, "archiveTaxRate", idempotency_key, &id.0).await?;
        let key = state(ctx).store.change_tax_rate(&m, &id, None, None, Some(true)).await?;
        Ok(load_tax_rate(ctx, &key).await?)
    }

    /// Restores an archived custom tax rate (ADMIN).
    async fn restore_tax_rate(&self, ctx: &Context<'_>, id: ID, idempotency_key: Option<String>) -> Result<TaxRate> {
        let m = mutation(ctx, Role::Admin, "restoreTaxRate", idempotency_key, &id.0).await?;
        let key = state(ctx).store.change_tax_rate(&m, &id, None, None, Some(false)).await?;
        Ok(load_tax_rate(ctx, &key).await?)
    }

    /// Creates a DRAFT invoice (I1) (BILLING).
    async fn create_invoice(&self, ctx: &Context<'_>, input: InvoiceInput, idempotency_key: String) -> Result<Invoice> {
        let m = mutation(ctx, Role::Billing, "createInvoice", Some(idempotency_key), &input).await?;
        let draft = input.parse(today(tenant(ctx).await?))?;
        let key = state(ctx).store.create_invoice(&m, draft).await?;
        Ok(load_invoice(ctx, &key).await?)
    }

    /// Replaces a DRAFT invoice's fields and lines (I1, I8) (BILLING).
    async fn update_invoice(&self, ctx: &Context<'_>, id: ID, input: InvoiceInput, idempotency_key: String) -> Result<Invoice> {
        let m = mutation(ctx, Role::Billing, "updateInvoice", Some(idempotency_key), &(&id.0, &input)).await?;
        let draft = input.parse(today(tenant(ctx).await?))?;
        let key = state(ctx).store.update_invoice(&m, &id, draft).await?;
        Ok(load_invoice(ctx, &key).await?)
    }

    /// Finalizes a DRAFT: it gets its number and becomes OPEN, or PAID when nothing is owed (I2).
    async fn finalize_invoice(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default)] input: FinalizeInvoiceInput,
        idempotency_key: String,
    ) -> Result<Invoice> {
        let m = mutation(ctx, Role::Billing, "finalizeInvoice", Some(idempotency_key.clone()), &(&id.0, &input)).await?;
        if let Some(key) = state(ctx).store.replay::<String>(&m).await? {
            return Ok(load_invoice(ctx, &key).await?);
        }
        let payment = |option: &str| {
            input.payment.as_ref().map(|payment| super::payments::PayInvoiceInput {
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
        let key = match input.payment_option {
            PaymentOption::RequestPayment => state(ctx).store.finalize_invoice(&m, &id).await?,
            PaymentOption::ApplyPayment => {
                let payment = payment("APPLY_PAYMENT")?;
                let mut draft = payment.parse(today)?;
                if let Some(method) = super::payments::manual_method(ctx, &payment.method_id).await? {
                    let request = caller(ctx, Role::Viewer)?;
                    let invoice = state(ctx).store.invoice(&request.principal.tenant, &id).await?.ok_or_else(|| AppError::not_found("invoice"))?;
                    let amount = payment.amount.map_or(invoice.doc.total, |a| a.0);
                    draft.external_reference = super::payments::checked_manual_details(
                        ctx,
                        &method,
                        amount,
                        &invoice.doc.currency,
                        payment.details.as_ref().map(|d| &d.0),
                        &idempotency_key,
                    )
                    .await?;
                }
                state(ctx).store.finalize_and_pay(&m, &id, draft, today).await?
            }
            PaymentOption::Charge => {
                let draft = payment("CHARGE")?.charge_draft(today, true)?;
                state(ctx).charging.charge_invoice(&m, &id, draft).await?;
                id.0.clone()
            }
        };
        Ok(load_invoice(ctx, &key).await?)
    }

    /// Returns an invoice to DRAFT; it keeps its number (I5, I8) (BILLING).
    async fn revert_invoice_to_draft(&self, ctx: &Context<'_>, id: ID, idempotency_key: String) -> Result<Invoice> {
        let m = mutation(ctx, Role::Billing, "revertInvoiceToDraft", Some(idempotency_key), &id.0).await?;
        let key = state(ctx).store.revert_invoice(&m, &id).await?;
        Ok(load_invoice(ctx, &key).await?)
    }

    /// Voids an OPEN invoice with nothing allocated or credited (I7). Final (BILLING).
    async fn void_invoice(&self, ctx: &Context<'_>, id: ID, reason: Option<String>, idempotency_key: String) -> Result<Invoice> {
        let m = mutation(ctx, Role::Billing, "voidInvoice", Some(idempotency_key), &(&id.0, &reason)).await?;
        let reason = optional_text("reason", reason.as_deref(), TEXT_MAX_CHARS)?;
        let key = state(ctx).store.void_invoice(&m, &id, reason).await?;
        Ok(load_invoice(ctx, &key).await?)
    }

    /// Deletes a DRAFT that never had a number (I6); returns its id (BILLING).
    async fn delete_invoice(&self, ctx: &Context<'_>, id: ID, idempotency_key: String) -> Result<ID> {
        let m = mutation(ctx, Role::Billing, "deleteInvoice", Some(idempotency_key), &id.0).await?;
        Ok(ID(state(ctx).store.delete_invoice(&m, &id).await?))
    }
}
