//! The practice and who is asking: the caller as the token names them (viewer), the practice's
//! settings, and the limits this server enforces.

use async_graphql::{Context, Enum, InputObject, Object, Result, SimpleObject};
use serde::Serialize;

use super::context::{IDEMPOTENCY_KEY_MAX, caller, mutation, state, tenant};
use crate::auth;
use crate::error::AppError;
use crate::ledger::Currency;
use crate::store::rows::TenantRow;
use crate::store::tenants::SettingsChange;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Serialize)]
pub enum TaxMode {
    /// Prices exclude tax; tax is added.
    Exclusive,
    /// Prices include tax; tax is the part of the price the rate accounts for.
    Inclusive,
    /// No tax.
    None,
}

impl TaxMode {
    pub fn parse(text: &str) -> TaxMode {
        match text {
            "INCLUSIVE" => TaxMode::Inclusive,
            "NONE" => TaxMode::None,
            _ => TaxMode::Exclusive,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaxMode::Exclusive => "EXCLUSIVE",
            TaxMode::Inclusive => "INCLUSIVE",
            TaxMode::None => "NONE",
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Role {
    Viewer,
    Billing,
    Admin,
}

impl From<auth::Role> for Role {
    fn from(role: auth::Role) -> Self {
        match role {
            auth::Role::Viewer => Role::Viewer,
            auth::Role::Billing => Role::Billing,
            auth::Role::Admin => Role::Admin,
        }
    }
}

/// The caller, as the token names them.
#[derive(SimpleObject)]
pub struct Viewer {
    pub subject: String,
    pub tenant: String,
    pub role: Role,
}

/// A practice's settings.
pub struct Settings(pub TenantRow);

#[Object]
impl Settings {
    /// Default currency of new invoices and payments (ISO 4217).
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    async fn tax_mode(&self) -> TaxMode {
        TaxMode::parse(&self.0.tax_mode)
    }
    /// Days from issue date to due date when an invoice gives no due date.
    async fn payment_terms_days(&self) -> i64 {
        self.0.payment_terms_days
    }
    /// The number the next finalized invoice gets.
    async fn next_invoice_number(&self) -> i64 {
        self.0.next_invoice_number
    }
    /// IANA timezone, e.g. Australia/Sydney: decides what "today" and "overdue" mean.
    async fn timezone(&self) -> &str {
        &self.0.timezone
    }
}

/// The limits this server enforces, so clients can size their requests.
#[derive(SimpleObject)]
pub struct Limits {
    pub page_size_max: i32,
    pub query_depth_max: i32,
    pub query_complexity_max: i32,
    /// Most selections (fields, fragment spreads, inline fragments) a query may hold once its
    /// fragments are expanded.
    pub query_selections_max: i32,
    pub body_size_max_bytes: i32,
    pub query_length_max_bytes: i32,
    pub idempotency_key_max_chars: i32,
    /// Ledger event records held for a subscriber that reads slowly; one that falls further
    /// behind is ended with SUBSCRIBER_TOO_SLOW.
    pub subscription_buffer_max: i32,
    pub subscriptions_per_connection_max: i32,
    pub websocket_connections_per_tenant_max: i32,
}

/// Settings to change; fields left out stay as they are.
#[derive(InputObject, Serialize, Default)]
pub struct SettingsInput {
    /// ISO 4217 code for new invoices and payments.
    pub currency: Option<String>,
    pub tax_mode: Option<TaxMode>,
    pub payment_terms_days: Option<i32>,
    /// The number the next finalized invoice gets; it cannot go back to a number already issued.
    pub next_invoice_number: Option<i32>,
    /// IANA timezone such as Australia/Sydney.
    pub timezone: Option<String>,
}

#[derive(Default)]
pub struct PracticeQuery;

#[Object]
impl PracticeQuery {
    /// The caller as the token names them.
    async fn viewer(&self, ctx: &Context<'_>) -> Result<Viewer> {
        let request = caller(ctx, auth::Role::Viewer)?;
        Ok(Viewer {
            subject: request.principal.subject.clone(),
            tenant: request.principal.tenant.to_string(),
            role: request.principal.role.into(),
        })
    }

    /// The practice's settings.
    async fn settings(&self, ctx: &Context<'_>) -> Result<Settings> {
        let request = caller(ctx, auth::Role::Viewer)?;
        tenant(ctx).await?;
        Ok(Settings(state(ctx).store.tenant_now(&request.principal.tenant).await?))
    }

    /// Limits this server enforces.
    async fn limits(&self, ctx: &Context<'_>) -> Result<Limits> {
        caller(ctx, auth::Role::Viewer)?;
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
            subscription_buffer_max: clamp(limits.subscription_buffer_max as usize),
            subscriptions_per_connection_max: clamp(limits.subscriptions_per_connection_max as usize),
            websocket_connections_per_tenant_max: clamp(limits.websocket_connections_per_tenant_max as usize),
        })
    }
}

#[derive(Default)]
pub struct PracticeMutation;

#[Object]
impl PracticeMutation {
    /// Changes the practice's settings (ADMIN).
    async fn update_settings(&self, ctx: &Context<'_>, input: SettingsInput, idempotency_key: Option<String>) -> Result<Settings> {
        let m = mutation(ctx, auth::Role::Admin, "updateSettings", idempotency_key, &input).await?;
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
        state(ctx).commands.update_settings(&m, change).await?;
        let request = caller(ctx, auth::Role::Viewer)?;
        Ok(Settings(state(ctx).store.tenant_now(&request.principal.tenant).await?))
    }
}
