//! Taking money through payment-method plugins: charges, refunds, and the reconciler.
//!
//! A charge is three steps, and a plugin is never called inside a database transaction: the
//! attempt is written PENDING (with every check done), the plugin is called, the outcome is
//! committed. When the outcome is unknown (a timeout, a panic, a crash between the call and the
//! commit) the attempt stays PENDING and the reconciler asks the plugin's status look-up later,
//! on start and periodically. An attempt is settled once, so a charge is never recorded twice.
//! Refunds through a plugin follow the same three steps, with the amount reserved on the payment
//! while the outcome is unknown.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rust_decimal::Decimal;
use settle_plugin::{Capability, ChargeRequest, Operation, Outcome, RefundRequest, StatusRequest};

use crate::auth::TenantId;
use crate::ledger::Money;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::plugins::{CallError, PluginHost};
use crate::store::Store;
use crate::store::audit::Mutation;
use crate::store::charges::{ChargeCheck, ChargeDraft, ChargeStart, Settled, Settlement};
use crate::store::payments::MANUAL_PLUGIN;
use crate::store::rows::PaymentMethodRow;

/// Who settles attempts found by the reconciler, in audit events.
const RECONCILER: &str = "settle-reconciler";

#[derive(Clone)]
pub struct Charging {
    store: Store,
    host: Arc<PluginHost>,
}

/// The method's plugin must be installed, able to charge, and handle the method's type.
struct PluginCanCharge<'a> {
    host: &'a PluginHost,
}

impl ChargeCheck for PluginCanCharge<'_> {
    fn check(&self, method: &PaymentMethodRow) -> AppResult<()> {
        if method.plugin == MANUAL_PLUGIN {
            return Err(AppError::new(
                ErrorCode::InvalidInput,
                format!("'{}' only records payments; record the payment instead of charging", method.name),
            ));
        }
        let plugin = self.host.plugin(&method.plugin).ok_or_else(|| {
            AppError::new(ErrorCode::PluginUnavailable, format!("the plugin '{}' is not installed", method.plugin))
        })?;
        if !plugin.manifest.capabilities.contains(&Capability::Charge) {
            return Err(AppError::new(ErrorCode::InvalidInput, format!("the plugin '{}' cannot charge", method.plugin)));
        }
        Ok(())
    }
}

fn json(text: Option<&str>) -> serde_json::Value {
    text.and_then(|t| serde_json::from_str(t).ok()).unwrap_or(serde_json::Value::Object(Default::default()))
}

fn declined(reason: &str) -> AppError {
    AppError::new(ErrorCode::PaymentDeclined, format!("the payment was declined: {reason}"))
}

fn outcome_unknown() -> AppError {
    AppError::new(
        ErrorCode::ChargePending,
        "the gateway has not confirmed the charge yet; Settle will settle it by asking the gateway. \
         Send the same request with the same idempotency key to see the outcome; do not charge again with a new key",
    )
}

/// Maps a plugin call error of a request that may have reached the gateway.
fn unavailable(error: &CallError) -> AppError {
    AppError::new(ErrorCode::PluginUnavailable, format!("the payment plugin is unavailable: {error}"))
}

impl Charging {
    pub fn new(store: Store, host: Arc<PluginHost>) -> Charging {
        Charging { store, host }
    }

    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    /// Charges an invoice through its method's plugin (payInvoice or finalize with CHARGE); never
    /// above the balance (P3). Returns the payment's key.
    pub async fn charge_invoice(&self, mutation: &Mutation<'_>, invoice_key: &str, draft: ChargeDraft) -> AppResult<String> {
        let check = PluginCanCharge { host: &self.host };
        let (attempt, method) = match self.store.begin_charge(mutation, invoice_key, &draft, &check).await? {
            ChargeStart::Succeeded(payment) => return Ok(payment),
            ChargeStart::Declined(reason) => return Err(declined(&reason)),
            ChargeStart::Call(attempt, method) => (attempt, method),
        };
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
        let settlement = match self.host.charge(&attempt.plugin, &request).await {
            Ok(Outcome::Succeeded { reference }) => Settlement::Succeeded { reference },
            Ok(Outcome::Declined { reason }) => Settlement::Declined { reason },
            Ok(Outcome::Pending { .. } | Outcome::Unknown) => return Err(outcome_unknown()),
            Err(CallError::Plugin(error)) => {
                self.store
                    .settle_charge(mutation.tenant, &attempt.idempotency_key, Settlement::Failed { reason: error.message.clone() }, mutation.actor)
                    .await?;
                return Err(AppError::new(ErrorCode::PluginRejected, format!("{}: {}", error.code, error.message)));
            }
            // Nothing reached the plugin: the attempt fails and the same request may try again.
            Err(error @ (CallError::Unhealthy | CallError::Busy | CallError::NotFound(_))) => {
                self.store
                    .settle_charge(mutation.tenant, &attempt.idempotency_key, Settlement::Failed { reason: error.to_string() }, mutation.actor)
                    .await?;
                return Err(unavailable(&error));
            }
            // The plugin may have charged: the reconciler finds out.
            Err(error @ (CallError::Timeout | CallError::Panic(_) | CallError::Malformed(_))) => {
                tracing::warn!(plugin = %attempt.plugin, %error, "charge outcome unknown; left for the reconciler");
                return Err(outcome_unknown());
            }
        };
        match self.store.settle_charge(mutation.tenant, &attempt.idempotency_key, settlement, mutation.actor).await? {
            Settled::Succeeded(payment) => Ok(payment),
            Settled::Declined(reason) => Err(declined(&reason)),
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

    /// Refunds a payment (F1-F3): a manual method only records the refund; a plugin-backed one
    /// goes through its plugin, and a decline changes no balance. Returns the refund's key.
    pub async fn refund(
        &self,
        mutation: &Mutation<'_>,
        payment_key: &str,
        amount: Decimal,
        date: chrono::NaiveDate,
        description: Option<String>,
    ) -> AppResult<String> {
        let payment = self.store.payment(mutation.tenant, payment_key).await?.ok_or_else(|| AppError::not_found("payment"))?;
        if payment.doc.plugin == MANUAL_PLUGIN {
            return self.store.refund_payment(mutation, payment_key, amount, date, description).await;
        }
        let plugin = self.host.plugin(&payment.doc.plugin).ok_or_else(|| {
            AppError::new(ErrorCode::PluginUnavailable, format!("the plugin '{}' is not installed", payment.doc.plugin))
        })?;
        if !plugin.manifest.capabilities.contains(&Capability::Refund) {
            return Err(AppError::new(ErrorCode::InvalidInput, format!("the plugin '{}' cannot refund", payment.doc.plugin)));
        }
        let refund_key = self.store.begin_plugin_refund(mutation, payment_key, amount, date, description).await?;
        let refund = self.store.refund(mutation.tenant, &refund_key).await?.ok_or_else(|| AppError::not_found("refund"))?;
        if refund.outcome != "PENDING" {
            return Ok(refund_key);
        }
        let method = self.store.payment_method(mutation.tenant, &payment.doc.method).await?;
        let request = RefundRequest {
            tenant: mutation.tenant.as_str().to_owned(),
            idempotency_key: refund_key.clone(),
            amount: refund.amount,
            currency: refund.currency.clone(),
            // The charge's own reference, not the editable external reference (P9).
            charge_reference: payment.doc.charge_reference.clone().unwrap_or_default(),
            config: json(method.as_ref().and_then(|m| m.config.as_deref())),
        };
        let settlement = match self.host.refund(&payment.doc.plugin, &request).await {
            Ok(Outcome::Succeeded { reference }) => Settlement::Succeeded { reference },
            Ok(Outcome::Declined { reason }) => Settlement::Declined { reason },
            Err(CallError::Plugin(error)) => Settlement::Failed { reason: format!("{}: {}", error.code, error.message) },
            Err(error @ (CallError::Unhealthy | CallError::Busy | CallError::NotFound(_))) => {
                Settlement::Failed { reason: error.to_string() }
            }
            // Unknown: the amount stays reserved until the reconciler settles it.
            Ok(Outcome::Pending { .. } | Outcome::Unknown) | Err(_) => return Ok(refund_key),
        };
        self.store.settle_refund(mutation.tenant, &refund_key, settlement, mutation.actor).await
    }

    /// Settles every PENDING charge and refund older than `grace` by asking its plugin. Returns
    /// how many it settled.
    pub async fn reconcile_once(&self, grace: Duration, first_run: bool) -> usize {
        let before = Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
        let mut settled = 0;
        // Payments left unnumbered by a stop between their commit and their numbering (looked
        // for at start), or by a failed numbering.
        if let Err(error) = self.store.number_all_pending_payments(first_run).await {
            tracing::warn!(%error, "numbering pending payments failed");
        }
        match self.store.pending_charges(before, 100).await {
            Ok(attempts) => {
                for attempt in attempts {
                    let Some(tenant) = TenantId::parse(&attempt.tenant) else { continue };
                    let method = self.store.payment_method(&tenant, &attempt.method).await.ok().flatten();
                    let request = StatusRequest {
                        tenant: attempt.tenant.clone(),
                        idempotency_key: attempt.idempotency_key.clone(),
                        operation: Operation::Charge,
                        config: json(method.as_ref().and_then(|m| m.config.as_deref())),
                    };
                    let Some(settlement) = self.settlement_from_status(&attempt.plugin, &request).await else { continue };
                    match self.store.settle_charge(&tenant, &attempt.idempotency_key, settlement, RECONCILER).await {
                        Ok(_) => settled += 1,
                        Err(error) => tracing::warn!(%error, "reconciling a charge failed"),
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "listing pending charges failed"),
        }
        match self.store.pending_refunds(before, 100).await {
            Ok(refunds) => {
                for refund in refunds {
                    let Some(tenant) = TenantId::parse(&refund.tenant) else { continue };
                    let Some(plugin) = refund.plugin.clone() else { continue };
                    let key = crate::store::rows::key_of(&refund.id);
                    let payment = self.store.payment(&tenant, &refund.payment).await.ok().flatten();
                    let method = match &payment {
                        Some(p) => self.store.payment_method(&tenant, &p.doc.method).await.ok().flatten(),
                        None => None,
                    };
                    let request = StatusRequest {
                        tenant: refund.tenant.clone(),
                        idempotency_key: key.clone(),
                        operation: Operation::Refund,
                        config: json(method.as_ref().and_then(|m| m.config.as_deref())),
                    };
                    let Some(settlement) = self.settlement_from_status(&plugin, &request).await else { continue };
                    match self.store.settle_refund(&tenant, &key, settlement, RECONCILER).await {
                        Ok(_) => settled += 1,
                        Err(error) => tracing::warn!(%error, "reconciling a refund failed"),
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "listing pending refunds failed"),
        }
        settled
    }

    /// What a status look-up says about an attempt, or None when it is still unknown.
    async fn settlement_from_status(&self, plugin: &str, request: &StatusRequest) -> Option<Settlement> {
        match self.host.status(plugin, request).await {
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

    /// Runs the reconciler now and then every `interval`, for the life of the process.
    pub fn spawn_reconciler(self, interval: Duration, grace: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut first_run = true;
            loop {
                let settled = self.reconcile_once(grace, first_run).await;
                first_run = false;
                if settled > 0 {
                    tracing::info!(settled, "reconciler settled pending charges and refunds");
                }
                tokio::time::sleep(interval).await;
            }
        })
    }
}
