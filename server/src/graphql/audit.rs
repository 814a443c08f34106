//! The audit trail (X3): who changed what and when, with the state before and after.

use async_graphql::{Context, ID, Object, Result};
use chrono::{DateTime, Utc};

use super::context::{caller, state};
use super::pagination::{Page, connection_types, wants_total};
use crate::auth::Role;
use crate::store::rows::{AuditRow, key_of};

/// An immutable record of a change: who, when, what, which records, before and after.
#[derive(Clone)]
pub struct AuditEvent(pub AuditRow);

#[Object]
impl AuditEvent {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// The token subject that made the change.
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    /// e.g. invoice.finalize.
    async fn action(&self) -> &str {
        &self.0.action
    }
    /// Records touched, as "table:id".
    async fn records(&self) -> &[String] {
        &self.0.records
    }
    /// State before, as JSON text.
    async fn before(&self) -> Option<&str> {
        self.0.before.as_deref()
    }
    /// State after, as JSON text.
    async fn after(&self) -> Option<&str> {
        self.0.after.as_deref()
    }
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    async fn idempotency_key(&self) -> Option<&str> {
        self.0.idempotency_key.as_deref()
    }
    async fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }
}

connection_types!(AuditEvent, AuditEventConnection, AuditEventEdge);

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
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
