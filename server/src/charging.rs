//! Every call Settle makes to a payment-method plugin, for payments and refunds alike: checking a
//! recorded payment's details, charging, refunding, and looking up an outcome left unknown.
//!
//! This module only talks to plugins and turns their answers into [`Answer`]s; it reads and
//! writes nothing. The commands call it outside any database transaction: a charge or refund is
//! written PENDING first, the plugin is called here, and the command then commits the outcome
//! (see commands/charges.rs and commands/refunds.rs).

use std::sync::Arc;

use settle_plugin::{Capability, ChargeRequest, Operation, Outcome, RefundRequest, StatusRequest};

use crate::error::{AppError, AppResult, ErrorCode};
use crate::ledger::Money;
use crate::plugins::{CallError, PluginHost};
use crate::store::audit::Mutation;
use crate::store::charges::Settlement;
use crate::store::rows::{ChargeAttemptRow, PaymentMethodRow, PaymentRow, RefundRow};

#[derive(Clone)]
pub struct Charging {
    host: Arc<PluginHost>,
}

/// What a plugin's answer to a charge or refund means for its record.
#[derive(Debug)]
pub enum Answer {
    /// Settle the record with this outcome.
    Settled(Settlement),
    /// Nothing was charged or refunded: settle the record as failed, then answer `error`.
    Failed(Settlement, AppError),
    /// The plugin may have acted: the record stays PENDING until a status look-up settles it.
    Unknown,
}

fn json(text: Option<&str>) -> serde_json::Value {
    text.and_then(|t| serde_json::from_str(t).ok()).unwrap_or(serde_json::Value::Object(Default::default()))
}

/// Maps a plugin call error of a request that may have reached the gateway.
fn unavailable(error: &CallError) -> AppError {
    AppError::new(ErrorCode::PluginUnavailable, format!("the payment plugin is unavailable: {error}"))
}

impl Charging {
    pub fn new(host: Arc<PluginHost>) -> Charging {
        Charging { host }
    }

    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    /// The plugin `plugin` is installed and has `capability`.
    pub fn check_capability(&self, plugin: &str, capability: Capability) -> AppResult<()> {
        let installed = self
            .host
            .plugin(plugin)
            .ok_or_else(|| AppError::new(ErrorCode::PluginUnavailable, format!("the plugin '{plugin}' is not installed")))?;
        if !installed.manifest.capabilities.contains(&capability) {
            let what = match capability {
                Capability::Charge => "charge",
                Capability::Refund => "refund",
                _ => "do this",
            };
            return Err(AppError::new(ErrorCode::InvalidInput, format!("the plugin '{plugin}' cannot {what}")));
        }
        Ok(())
    }

    /// Has a plugin check a payment method's configuration; returns it as JSON text, or
    /// INVALID_CONFIG with the plugin's reason.
    pub async fn validate_config(&self, plugin: &str, config: &serde_json::Value) -> AppResult<String> {
        match self.host.validate_config(plugin, config).await {
            Ok(()) => Ok(config.to_string()),
            Err(CallError::Plugin(error)) => Err(AppError::new(ErrorCode::InvalidConfig, error.message)),
            Err(CallError::NotFound(id)) => Err(AppError::new(ErrorCode::PluginUnavailable, format!("the plugin '{id}' is not installed"))),
            Err(other) => Err(AppError::new(ErrorCode::PluginUnavailable, other.to_string())),
        }
    }

    /// Charges an attempt written PENDING through its plugin.
    pub async fn charge(&self, attempt: &ChargeAttemptRow, method: &PaymentMethodRow) -> Answer {
        let request = ChargeRequest {
            tenant: attempt.tenant.clone(),
            idempotency_key: attempt.idempotency_key.clone(),
            amount: attempt.amount,
            currency: attempt.currency.clone(),
            method_type: attempt.method_type.clone(),
            config: json(method.config.as_deref()),
            details: json(Some(&attempt.details)),
            description: attempt.description.clone(),
        };
        match self.host.charge(&attempt.plugin, &request).await {
            Ok(Outcome::Succeeded { reference }) => Answer::Settled(Settlement::Succeeded { reference }),
            Ok(Outcome::Declined { reason }) => Answer::Settled(Settlement::Declined { reason }),
            Ok(Outcome::Pending { .. } | Outcome::Unknown) => Answer::Unknown,
            Err(CallError::Plugin(error)) => Answer::Failed(
                Settlement::Failed { reason: error.message.clone() },
                AppError::new(ErrorCode::PluginRejected, format!("{}: {}", error.code, error.message)),
            ),
            // Nothing reached the plugin: the attempt fails and the same request may try again.
            Err(error @ (CallError::Unhealthy | CallError::Busy | CallError::NotFound(_) | CallError::Unavailable(_))) => {
                Answer::Failed(Settlement::Failed { reason: error.to_string() }, unavailable(&error))
            }
            // The plugin may have charged (its process may have died after the gateway took the
            // card): the reconciler finds out.
            Err(error @ (CallError::Timeout | CallError::Panic(_) | CallError::Malformed(_) | CallError::Crashed(_))) => {
                tracing::warn!(plugin = %attempt.plugin, %error, "charge outcome unknown; left for the reconciler");
                Answer::Unknown
            }
        }
    }

    /// Refunds a refund written PENDING through the plugin that took its payment.
    pub async fn refund(&self, refund: &RefundRow, payment: &PaymentRow, method: Option<&PaymentMethodRow>) -> Answer {
        let request = RefundRequest {
            tenant: refund.tenant.clone(),
            idempotency_key: crate::store::rows::key_of(&refund.id),
            amount: refund.amount,
            currency: refund.currency.clone(),
            // The charge's own reference, not the editable external reference (P9).
            charge_reference: payment.doc.charge_reference.clone().unwrap_or_default(),
            config: json(method.and_then(|m| m.config.as_deref())),
        };
        match self.host.refund(&payment.doc.plugin, &request).await {
            Ok(Outcome::Succeeded { reference }) => Answer::Settled(Settlement::Succeeded { reference }),
            Ok(Outcome::Declined { reason }) => Answer::Settled(Settlement::Declined { reason }),
            Err(CallError::Plugin(error)) => Answer::Settled(Settlement::Failed { reason: format!("{}: {}", error.code, error.message) }),
            Err(error @ (CallError::Unhealthy | CallError::Busy | CallError::NotFound(_) | CallError::Unavailable(_))) => {
                Answer::Settled(Settlement::Failed { reason: error.to_string() })
            }
            // Unknown: the amount stays reserved until the reconciler settles it.
            Ok(Outcome::Pending { .. } | Outcome::Unknown) | Err(_) => Answer::Unknown,
        }
    }

    /// Asks a plugin what became of a charge or refund whose outcome is unknown; None while it is
    /// still unknown.
    pub async fn status(&self, plugin: &str, tenant: &str, idempotency_key: &str, operation: Operation, method: Option<&PaymentMethodRow>) -> Option<Settlement> {
        let request = StatusRequest {
            tenant: tenant.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
            operation,
            config: json(method.and_then(|m| m.config.as_deref())),
        };
        match self.host.status(plugin, &request).await {
            Ok(Outcome::Succeeded { reference }) => Some(Settlement::Succeeded { reference }),
            Ok(Outcome::Declined { reason }) => Some(Settlement::Declined { reason }),
            // The gateway never saw it: nothing was charged.
            Ok(Outcome::Unknown) => Some(Settlement::Failed { reason: "the gateway has no record of this request".into() }),
            Ok(Outcome::Pending { .. }) => None,
            Err(error) => {
                tracing::warn!(plugin, %error, "status look-up failed; will try again");
                None
            }
        }
    }

    /// Has the plugin of a method that only records payments check a new payment's details (a
    /// cheque needs its number); returns the reference it gives, such as the cheque number.
    pub async fn check_recorded_details(
        &self,
        mutation: &Mutation<'_>,
        method: &PaymentMethodRow,
        amount: Money,
        details: &serde_json::Value,
    ) -> AppResult<Option<String>> {
        let request = ChargeRequest {
            tenant: mutation.tenant.as_str().to_owned(),
            idempotency_key: mutation.idempotency.as_ref().map(|i| i.key.clone()).unwrap_or_default(),
            amount: amount.amount(),
            currency: amount.currency().code().to_owned(),
            method_type: method.kind.clone(),
            config: json(method.config.as_deref()),
            details: details.clone(),
            description: None,
        };
        match self.host.charge(&method.plugin, &request).await {
            Ok(Outcome::Succeeded { reference }) => Ok(reference),
            Ok(Outcome::Declined { reason }) => Err(AppError::new(ErrorCode::PluginRejected, reason)),
            Ok(_) => Ok(None),
            Err(CallError::Plugin(error)) => Err(AppError::new(ErrorCode::PluginRejected, error.message)),
            Err(other) => Err(AppError::new(ErrorCode::PluginUnavailable, other.to_string())),
        }
    }
}
