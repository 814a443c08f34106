//! Clients, contacts (bill-to parties), locations and tax rates of a practice: their types,
//! inputs, queries and mutations.

use async_graphql::{Context, ID, InputObject, Object, Result};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::accounts::{ClientBalance, Statement, client_balance, client_balance_proof, client_statement};
use super::proofs::ClientBalanceProof;
use super::context::{caller, mutation, state, tenant};
use super::pagination::{Page, connection_types};
use super::scalars::Date;
use super::text::{NAME_MAX_CHARS, TEXT_MAX_CHARS, optional_text, plain_decimal, required_text};
use crate::auth::Role;
use crate::error::{AppError, AppResult};
use crate::store::directory::{LocationFields, PartyFields, PartyKind};
use crate::store::rows::{LocationRow, PartyRow, TaxRateRow, key_of};

/// Declares a party type (clients and contacts share their fields) with any extra fields.
macro_rules! party_object {
    ($(#[$meta:meta])* $name:ident { $($extra:tt)* }) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name(pub PartyRow);

        #[Object]
        impl $name {
            async fn id(&self) -> ID {
                ID(key_of(&self.0.id))
            }
            async fn name(&self) -> &str {
                &self.0.name
            }
            async fn email(&self) -> Option<&str> {
                self.0.email.as_deref()
            }
            async fn phone(&self) -> Option<&str> {
                self.0.phone.as_deref()
            }
            async fn created_at(&self) -> DateTime<Utc> {
                self.0.created_at
            }
            $($extra)*
        }
    };
}

party_object!(
    /// A person billed by the practice.
    Client {
        /// What the client owes and the credit they hold (B1), in `currency` (the practice's
        /// currency when left out). With `at`, as it stood at that past moment (T1): the money
        /// changes up to and including it count (a change counts from its audit event's `at`),
        /// and overdue is measured against that moment's day in the practice's timezone. An
        /// `at` after now is INVALID_INPUT.
        async fn balance(&self, ctx: &Context<'_>, currency: Option<String>, at: Option<DateTime<Utc>>) -> Result<ClientBalance> {
            Ok(client_balance(ctx, &key_of(&self.0.id), currency, at).await?)
        }
        /// The client's account from `from` to `to` with a running balance (B2), in `currency`
        /// (the practice's currency when left out). With `at`, as it stood at that past moment
        /// (T1): the records and their states as the money changes up to and including it left
        /// them. An `at` after now is INVALID_INPUT.
        async fn statement(
            &self,
            ctx: &Context<'_>,
            from: Date,
            to: Date,
            currency: Option<String>,
            at: Option<DateTime<Utc>>,
        ) -> Result<Statement> {
            Ok(client_statement(ctx, &key_of(&self.0.id), from, to, currency, at).await?)
        }
        /// Why the client's balance is what it is: what they owe net of the credit they hold
        /// (owing less unallocated credit), from each invoice, credit note, payment and refund
        /// of theirs in `currency` (the practice's when left out), in the order they happened.
        /// Without `asOf`, every record, beside the stored figures (`holds`); with it, the
        /// records dated up to that day, as they stand now.
        async fn balance_proof(&self, ctx: &Context<'_>, as_of: Option<Date>, currency: Option<String>) -> Result<ClientBalanceProof> {
            Ok(client_balance_proof(ctx, &key_of(&self.0.id), as_of, currency).await?)
        }
    }
);

party_object!(
    /// A third party invoices can be addressed to ("bill to"): an insurer, a plan manager.
    Contact {}
);

/// Where a service is given or money received.
#[derive(Clone)]
pub struct Location(pub LocationRow);

#[Object]
impl Location {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn address(&self) -> Option<&str> {
        self.0.address.as_deref()
    }
}

/// A tax rate. System rates cannot be edited or archived; archived rates cannot be chosen for
/// new lines.
pub struct TaxRate(pub TaxRateRow);

#[Object]
impl TaxRate {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Percent, e.g. "10" for 10%.
    async fn percent(&self) -> String {
        self.0.percent.normalize().to_string()
    }
    async fn system(&self) -> bool {
        self.0.system
    }
    async fn archived(&self) -> bool {
        self.0.archived
    }
}

connection_types!(Client, ClientConnection, ClientEdge);
connection_types!(Contact, ContactConnection, ContactEdge);

fn email(value: Option<&str>) -> AppResult<Option<String>> {
    let email = optional_text("email", value, 254)?;
    if let Some(email) = &email {
        let plausible = email.split_once('@').is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
            && !email.contains(char::is_whitespace);
        if !plausible {
            return Err(AppError::invalid(format!("{email:?} is not an email address")));
        }
    }
    Ok(email)
}

/// A client: the person billed.
#[derive(InputObject, Serialize)]
pub struct ClientInput {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// A contact: a third party invoices can be addressed to.
#[derive(InputObject, Serialize)]
pub struct ContactInput {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

fn party_fields(name: &str, email_value: Option<&str>, phone: Option<&str>) -> AppResult<PartyFields> {
    Ok(PartyFields {
        name: required_text("name", name, NAME_MAX_CHARS)?,
        email: email(email_value)?,
        phone: optional_text("phone", phone, 40)?,
    })
}

impl ClientInput {
    pub fn parse(&self) -> AppResult<PartyFields> {
        party_fields(&self.name, self.email.as_deref(), self.phone.as_deref())
    }
}

impl ContactInput {
    pub fn parse(&self) -> AppResult<PartyFields> {
        party_fields(&self.name, self.email.as_deref(), self.phone.as_deref())
    }
}

#[derive(InputObject, Serialize)]
pub struct LocationInput {
    pub name: String,
    pub address: Option<String>,
}

impl LocationInput {
    pub fn parse(&self) -> AppResult<LocationFields> {
        Ok(LocationFields {
            name: required_text("name", &self.name, NAME_MAX_CHARS)?,
            address: optional_text("address", self.address.as_deref(), TEXT_MAX_CHARS)?,
        })
    }
}

/// A tax rate; `percent` is a decimal string such as "10" or "12.5".
#[derive(InputObject, Serialize)]
pub struct TaxRateInput {
    pub name: String,
    pub percent: String,
}

/// Percent of a tax rate: 0 to 100, at most 4 decimal places.
pub fn tax_percent(value: &str) -> AppResult<Decimal> {
    let percent = plain_decimal("percent", value)?;
    if percent < Decimal::ZERO || percent > Decimal::ONE_HUNDRED || percent.normalize().scale() > 4 {
        return Err(AppError::invalid("percent must be between 0 and 100 with at most 4 decimal places"));
    }
    Ok(percent.normalize())
}

#[derive(Default)]
pub struct DirectoryQuery;

#[Object]
impl DirectoryQuery {
    #[graphql(complexity = "10 + child_complexity")]
    async fn client(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Client>> {
        let request = caller(ctx, Role::Viewer)?;
        Ok(state(ctx).store.party(&request.principal.tenant, PartyKind::Client, &id).await?.map(Client))
    }

    /// Clients in the order they were added; `search` matches part of the name.
    #[graphql(complexity = "25 + first.unwrap_or(20).max(0) as usize * child_complexity")]
    async fn clients(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        search: Option<String>,
    ) -> Result<ClientConnection> {
        let request = caller(ctx, Role::Viewer)?;
        let page = Page::parse(first, after, "client", state(ctx).limits.page_size_max)?;
        let (rows, total) = state(ctx)
            .store
            .parties(&request.principal.tenant, PartyKind::Client, search, page.after.clone(), page.fetch_limit())
            .await?;
        Ok(page.connection(rows.into_iter().map(|row| (key_of(&row.id), Client(row))).collect(), total))
    }

    #[graphql(complexity = "10 + child_complexity")]
    async fn contact(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Contact>> {
        let request = caller(ctx, Role::Viewer)?;
        Ok(state(ctx).store.party(&request.principal.tenant, PartyKind::Contact, &id).await?.map(Contact))
    }

    #[graphql(complexity = "25 + first.unwrap_or(20).max(0) as usize * child_complexity")]
    async fn contacts(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        search: Option<String>,
    ) -> Result<ContactConnection> {
        let request = caller(ctx, Role::Viewer)?;
        let page = Page::parse(first, after, "contact", state(ctx).limits.page_size_max)?;
        let (rows, total) = state(ctx)
            .store
            .parties(&request.principal.tenant, PartyKind::Contact, search, page.after.clone(), page.fetch_limit())
            .await?;
        Ok(page.connection(rows.into_iter().map(|row| (key_of(&row.id), Contact(row))).collect(), total))
    }

    #[graphql(complexity = "10 + 10 * child_complexity")]
    async fn locations(&self, ctx: &Context<'_>) -> Result<Vec<Location>> {
        let request = caller(ctx, Role::Viewer)?;
        Ok(state(ctx).store.locations(&request.principal.tenant).await?.into_iter().map(Location).collect())
    }

    /// Tax rates; archived ones only when asked for.
    #[graphql(complexity = "10 + 10 * child_complexity")]
    async fn tax_rates(&self, ctx: &Context<'_>, #[graphql(default = false)] include_archived: bool) -> Result<Vec<TaxRate>> {
        let request = caller(ctx, Role::Viewer)?;
        tenant(ctx).await?;
        let rows = state(ctx).store.tax_rates(&request.principal.tenant, include_archived).await?;
        Ok(rows.into_iter().map(TaxRate).collect())
    }
}

async fn load_party(ctx: &Context<'_>, kind: PartyKind, key: &str) -> AppResult<PartyRow> {
    let request = caller(ctx, Role::Viewer)?;
    state(ctx).store.party(&request.principal.tenant, kind, key).await?.ok_or_else(|| AppError::not_found(kind.table()))
}

async fn load_tax_rate(ctx: &Context<'_>, key: &str) -> AppResult<TaxRate> {
    let request = caller(ctx, Role::Viewer)?;
    let row = state(ctx).store.tax_rate(&request.principal.tenant, key).await?.ok_or_else(|| AppError::not_found("tax rate"))?;
    Ok(TaxRate(row))
}

#[derive(Default)]
pub struct DirectoryMutation;

#[Object]
impl DirectoryMutation {
    /// Adds a client (BILLING).
    async fn create_client(&self, ctx: &Context<'_>, input: ClientInput, idempotency_key: Option<String>) -> Result<Client> {
        let m = mutation(ctx, Role::Billing, "createClient", idempotency_key, &input).await?;
        let key = state(ctx).commands.create_party(&m, PartyKind::Client, input.parse()?).await?;
        Ok(Client(load_party(ctx, PartyKind::Client, &key).await?))
    }

    /// Changes a client's name, email and phone (BILLING).
    async fn update_client(&self, ctx: &Context<'_>, id: ID, input: ClientInput, idempotency_key: Option<String>) -> Result<Client> {
        let m = mutation(ctx, Role::Billing, "updateClient", idempotency_key, &(&id.0, &input)).await?;
        let key = state(ctx).commands.update_party(&m, PartyKind::Client, &id, input.parse()?).await?;
        Ok(Client(load_party(ctx, PartyKind::Client, &key).await?))
    }

    /// Adds a contact, a third party invoices can be addressed to (BILLING).
    async fn create_contact(&self, ctx: &Context<'_>, input: ContactInput, idempotency_key: Option<String>) -> Result<Contact> {
        let m = mutation(ctx, Role::Billing, "createContact", idempotency_key, &input).await?;
        let key = state(ctx).commands.create_party(&m, PartyKind::Contact, input.parse()?).await?;
        Ok(Contact(load_party(ctx, PartyKind::Contact, &key).await?))
    }

    async fn update_contact(&self, ctx: &Context<'_>, id: ID, input: ContactInput, idempotency_key: Option<String>) -> Result<Contact> {
        let m = mutation(ctx, Role::Billing, "updateContact", idempotency_key, &(&id.0, &input)).await?;
        let key = state(ctx).commands.update_party(&m, PartyKind::Contact, &id, input.parse()?).await?;
        Ok(Contact(load_party(ctx, PartyKind::Contact, &key).await?))
    }

    /// Adds a location (ADMIN).
    async fn create_location(&self, ctx: &Context<'_>, input: LocationInput, idempotency_key: Option<String>) -> Result<Location> {
        let m = mutation(ctx, Role::Admin, "createLocation", idempotency_key, &input).await?;
        let key = state(ctx).commands.create_location(&m, input.parse()?).await?;
        let request = caller(ctx, Role::Viewer)?;
        let row = state(ctx).store.location(&request.principal.tenant, &key).await?.ok_or_else(|| AppError::not_found("location"))?;
        Ok(Location(row))
    }

    async fn update_location(&self, ctx: &Context<'_>, id: ID, input: LocationInput, idempotency_key: Option<String>) -> Result<Location> {
        let m = mutation(ctx, Role::Admin, "updateLocation", idempotency_key, &(&id.0, &input)).await?;
        let key = state(ctx).commands.update_location(&m, &id, input.parse()?).await?;
        let request = caller(ctx, Role::Viewer)?;
        let row = state(ctx).store.location(&request.principal.tenant, &key).await?.ok_or_else(|| AppError::not_found("location"))?;
        Ok(Location(row))
    }

    /// Adds a custom tax rate (ADMIN).
    async fn create_tax_rate(&self, ctx: &Context<'_>, input: TaxRateInput, idempotency_key: Option<String>) -> Result<TaxRate> {
        let m = mutation(ctx, Role::Admin, "createTaxRate", idempotency_key, &input).await?;
        let name = required_text("name", &input.name, NAME_MAX_CHARS)?;
        let key = state(ctx).commands.create_tax_rate(&m, name, tax_percent(&input.percent)?).await?;
        Ok(load_tax_rate(ctx, &key).await?)
    }

    /// Edits a custom tax rate (ADMIN). Invoices already saved keep the rate they were saved with.
    async fn update_tax_rate(&self, ctx: &Context<'_>, id: ID, input: TaxRateInput, idempotency_key: Option<String>) -> Result<TaxRate> {
        let m = mutation(ctx, Role::Admin, "updateTaxRate", idempotency_key, &(&id.0, &input)).await?;
        let name = required_text("name", &input.name, NAME_MAX_CHARS)?;
        let percent = tax_percent(&input.percent)?;
        let key = state(ctx).commands.change_tax_rate(&m, &id, Some(name), Some(percent), None).await?;
        Ok(load_tax_rate(ctx, &key).await?)
    }

    /// Archives a custom tax rate: it can no longer be chosen for new lines (ADMIN).
    async fn archive_tax_rate(&self, ctx: &Context<'_>, id: ID, idempotency_key: Option<String>) -> Result<TaxRate> {
        let m = mutation(ctx, Role::Admin, "archiveTaxRate", idempotency_key, &id.0).await?;
        let key = state(ctx).commands.change_tax_rate(&m, &id, None, None, Some(true)).await?;
        Ok(load_tax_rate(ctx, &key).await?)
    }

    /// Restores an archived custom tax rate (ADMIN).
    async fn restore_tax_rate(&self, ctx: &Context<'_>, id: ID, idempotency_key: Option<String>) -> Result<TaxRate> {
        let m = mutation(ctx, Role::Admin, "restoreTaxRate", idempotency_key, &id.0).await?;
        let key = state(ctx).commands.change_tax_rate(&m, &id, None, None, Some(false)).await?;
        Ok(load_tax_rate(ctx, &key).await?)
    }
}
