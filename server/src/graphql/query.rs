//! Queries. Every one needs at least the VIEWER role (A2) and sees only the caller's tenant (A3).

use async_graphql::{Context, ID, InputObject, Object, Result};

use super::context::{IDEMPOTENCY_KEY_MAX, caller, state, tenant, today};
use super::pagination::{AuditEventConnection, ClientConnection, ContactConnection, InvoiceConnection, Page, wants_total};
use super::scalars::Date;
use super::types::{
    AuditEvent, Client, Contact, Invoice, InvoiceStatus, Limits, Location, Settings, TaxRate, Viewer,
};
use crate::auth::Role;
use crate::store::directory::PartyKind;
use crate::store::invoices::InvoiceFilter;
use crate::store::rows::key_of;

#[derive(Default)]
pub struct Query;

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

#[Object(name = "CoreQuery")]
impl Query {
    /// The caller as the token names them.
    async fn viewer(&self, ctx: &Context<'_>) -> Result<Viewer> {
        let request = caller(ctx, Role::Viewer)?;
        Ok(Viewer {
            subject: request.principal.subject.clone(),
            tenant: request.principal.tenant.to_string(),
            role: request.principal.role.into(),
        })
    }

    /// The practice's settings.
    async fn settings(&self, ctx: &Context<'_>) -> Result<Settings> {
        let request = caller(ctx, Role::Viewer)?;
        tenant(ctx).await?;
        Ok(Settings(state(ctx).store.tenant_now(&request.principal.tenant).await?))
    }

    /// Limits this server enforces.
    async fn limits(&self, ctx: &Context<'_>) -> Result<Limits> {
        caller(ctx, Role::Viewer)?;
        let limits = &state(ctx).limits;
        let clamp = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        Ok(Limits {
            page_size_max: clamp(limits.page_size_max),
            query_depth_max: clamp(limits.query_depth_max),
            query_complexity_max: clamp(limits.query_complexity_max),
            query_selections_max: clamp(limits.query_selections_max),
            body_size_max_bytes: clamp(limits.body_size_max_bytes),
            query_length_max_bytes: clamp(limits.query_length_max_bytes),
            idempotency_key_max_chars: clamp(IDEMPOTENCY_KEY_MAX),
        })
    }

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

    /// The audit trail, newest first; `recordId` ("invoice:ID") narrows it to one record.
    #[graphql(complexity = "25 + first.unwrap_or(20).max(0) as usize * child_complexity")]
    async fn audit_events(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        record_id: Option<String>,
    ) -> Result<AuditEventConnection> {
        let request = caller(ctx, Role::Viewer)?;
        let page = Page::parse(first, after, "audit_event", state(ctx).limits.page_size_max)?;
        let (rows, total) = state(ctx)
            .store
            .audit_events(&request.principal.tenant, record_id, page.after.clone(), page.fetch_limit(), wants_total(ctx))
            .await?;
        Ok(page.connection(rows.into_iter().map(|row| (key_of(&row.id), AuditEvent(row))).collect(), total.unwrap_or(0)))
    }
}
