//! What every resolver reaches for: the shared state, the verified caller, the tenant's settings
//! (loaded once per request) and the set-up of a mutation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::Context;
use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::auth::{Principal, Role};
use crate::config::Limits;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::store::Store;
use crate::store::audit::{IdempotencyKey, Mutation};
use crate::store::rows::TenantRow;

/// Shared by every request.
pub struct AppState {
    pub store: Store,
    pub charging: crate::charging::Charging,
    pub commands: crate::commands::Commands,
    /// Positioned ledger events, published after commit (E2); the store's own bus.
    pub events: crate::events::EventBus,
    pub limits: Limits,
}

/// One request's caller and caches.
pub struct RequestContext {
    pub principal: Principal,
    pub request_id: String,
    tenant: OnceCell<TenantRow>,
}

impl RequestContext {
    pub fn new(principal: Principal, request_id: String) -> Self {
        RequestContext { principal, request_id, tenant: OnceCell::new() }
    }
}

/// The subscriptions one WebSocket connection runs, counted against
/// `Limits::subscriptions_per_connection_max`. Present only in a WebSocket connection's data.
#[derive(Default)]
pub struct ConnectionSubscriptions(Arc<AtomicUsize>);

/// One running subscription's place in its connection's count, given back when it is dropped
/// (the subscription ended, was completed by the client, or its connection closed).
pub struct SubscriptionSlot(Arc<AtomicUsize>);

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ConnectionSubscriptions {
    /// A slot for one more subscription, or TOO_MANY_SUBSCRIPTIONS when `max` already run.
    pub fn take(&self, max: usize) -> AppResult<SubscriptionSlot> {
        match self.0.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |running| (running < max).then_some(running + 1)) {
            Ok(_) => Ok(SubscriptionSlot(self.0.clone())),
            Err(_) => Err(AppError::new(
                ErrorCode::TooManySubscriptions,
                format!("this connection already runs {max} subscriptions, the most one may; complete one or open another connection"),
            )),
        }
    }
}

pub fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

/// The caller, refused with FORBIDDEN below `role` (A2).
pub fn caller<'a>(ctx: &Context<'a>, role: Role) -> AppResult<&'a RequestContext> {
    let request = ctx.data_unchecked::<RequestContext>();
    request.principal.require(role)?;
    Ok(request)
}

/// The caller's tenant settings, provisioning the tenant on its first request.
pub async fn tenant<'a>(ctx: &Context<'a>) -> AppResult<&'a TenantRow> {
    let request = ctx.data_unchecked::<RequestContext>();
    request.tenant.get_or_try_init(|| state(ctx).store.tenant(&request.principal.tenant)).await
}

/// Today in the tenant's timezone (I4).
pub fn today(tenant: &TenantRow) -> NaiveDate {
    day_of(tenant, Utc::now())
}

/// The day of the moment `at` in the tenant's timezone (as it is set now).
pub fn day_of(tenant: &TenantRow, at: DateTime<Utc>) -> NaiveDate {
    let timezone: chrono_tz::Tz = tenant.timezone.parse().unwrap_or(chrono_tz::UTC);
    at.with_timezone(&timezone).date_naive()
}

/// T1: the moment a report is asked as of (`at`), refused with INVALID_INPUT when it is after
/// now: the books of a moment still to come are not known, and an answer would change before
/// that moment came (docs/rules.md, "As-of reports (T1)").
pub fn past_moment(at: Option<DateTime<Utc>>) -> AppResult<Option<DateTime<Utc>>> {
    match at {
        Some(at) if at > Utc::now() => Err(AppError::invalid(format!("at ({}) is in the future; leave it out for the books as they are now", at.to_rfc3339()))),
        at => Ok(at),
    }
}

/// Longest idempotency key accepted.
pub const IDEMPOTENCY_KEY_MAX: usize = 128;

/// Sets up a mutation: checks the role, provisions the tenant, and fingerprints the input so a
/// reused idempotency key can be told apart from a repeated request (X2).
pub async fn mutation<'a>(
    ctx: &Context<'a>,
    role: Role,
    operation: &'static str,
    idempotency_key: Option<String>,
    input: &impl serde::Serialize,
) -> AppResult<Mutation<'a>> {
    let request = caller(ctx, role)?;
    tenant(ctx).await?;
    let idempotency = match idempotency_key {
        None => None,
        Some(key) => {
            if key.is_empty() || key.chars().count() > IDEMPOTENCY_KEY_MAX || key.chars().any(char::is_control) {
                return Err(AppError::invalid(format!(
                    "an idempotency key is 1 to {IDEMPOTENCY_KEY_MAX} printable characters"
                )));
            }
            let canonical = serde_json::to_vec(&(operation, input)).map_err(AppError::internal)?;
            Some(IdempotencyKey { key, request_hash: hex::encode(Sha256::digest(&canonical)) })
        }
    };
    Ok(Mutation {
        tenant: &request.principal.tenant,
        actor: &request.principal.subject,
        request_id: &request.request_id,
        operation,
        idempotency,
        dry_run: false,
    })
}
