//! Charge attempts and refunds through plugins, as records: an attempt (or refund) is written
//! PENDING before its plugin is called and settled after, each in its own transaction. This file
//! reads and writes those records; the decisions are the ledger's and the order of steps is the
//! commands' (commands/charges.rs, commands/refunds.rs).
//!
//! A charge attempt is keyed [tenant, idempotency key of the request]: the request's key is
//! claimed by the idempotency gate in the same transaction that writes the attempt, so a
//! repeated request finds the attempt and never charges again.

use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use surrealdb::types::{Array, RecordId, RecordIdKey, Value};

use super::audit::{IdempotencyKey, Mutation};
use super::directory::read_owned;
use super::invoices::date_string;
use super::rows::{ChargeAttemptRow, InvoiceRow, PaymentMethodRow, PaymentRow, RefundRow};
use super::{Store, TxRef, Vars};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::ledger::reports::TakingsChange;

/// What a settled charge came to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Settled {
    /// The payment the charge produced.
    Succeeded(String),
    /// Why it was declined or failed.
    Declined(String),
}

/// How a plugin answered a charge or refund, as far as records are concerned.
#[derive(Debug, Clone)]
pub enum Settlement {
    Succeeded { reference: Option<String> },
    Declined { reason: String },
    /// Nothing was charged (the plugin refused the request, or never saw it).
    Failed { reason: String },
}

impl Settlement {
    /// The stored status of an attempt settled this way.
    pub fn charge_status(&self) -> &'static str {
        match self {
            Settlement::Succeeded { .. } => "SUCCEEDED",
            Settlement::Declined { .. } => "DECLINED",
            Settlement::Failed { .. } => "FAILED",
        }
    }
}

/// A charge as the command decided it, to be written PENDING.
#[derive(Debug, Clone)]
pub struct NewCharge<'a> {
    pub invoice: &'a InvoiceRow,
    pub method: &'a PaymentMethodRow,
    pub amount: Decimal,
    pub finalize: bool,
    pub location: String,
    pub date: NaiveDate,
    pub description: Option<String>,
    pub details: &'a serde_json::Value,
}

pub(crate) fn attempt_id(tenant: &TenantId, key: &str) -> RecordId {
    let parts = Array::from(vec![Value::String(tenant.as_str().to_owned()), Value::String(key.to_owned())]);
    RecordId::new("charge_attempt", RecordIdKey::Array(parts))
}

impl super::directory::Owned for ChargeAttemptRow {
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl super::directory::Owned for RefundRow {
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl Store {
    /// Writes a charge PENDING under the request's idempotency key, replacing a FAILED attempt
    /// of the same request (nothing was charged by it); returns the attempt as written.
    pub(crate) async fn write_charge_attempt(
        &self,
        tx: &TxRef,
        mutation: &Mutation<'_>,
        idempotency: &IdempotencyKey,
        charge: NewCharge<'_>,
    ) -> AppResult<ChargeAttemptRow> {
        let id = attempt_id(mutation.tenant, &idempotency.key);
        let now = Utc::now();
        let attempt = ChargeAttemptRow {
            id: id.clone(),
            tenant: mutation.tenant.as_str().to_owned(),
            idempotency_key: idempotency.key.clone(),
            request_hash: idempotency.request_hash.clone(),
            invoice: super::rows::key_of(&charge.invoice.id),
            finalize: charge.finalize,
            client: charge.invoice.doc.client.clone(),
            location: charge.location,
            method: super::rows::key_of(&charge.method.id),
            plugin: charge.method.plugin.clone(),
            method_type: charge.method.kind.clone(),
            amount: charge.amount,
            currency: charge.invoice.doc.currency.clone(),
            date: date_string(charge.date),
            description: charge.description,
            details: charge.details.to_string(),
            status: "PENDING".into(),
            outcome_reason: None,
            external_reference: None,
            payment: None,
            actor: mutation.actor.to_owned(),
            created_at: now,
            updated_at: now,
        };
        tx.query("UPSERT $id CONTENT $attempt RETURN NONE", Vars::new().set("id", id).set("attempt", attempt.clone())).await?;
        Ok(attempt)
    }

    /// A charge attempt by the idempotency key of its request, read in the caller's transaction.
    pub(crate) async fn load_charge_attempt(&self, tx: &TxRef, tenant: &TenantId, key: &str) -> AppResult<ChargeAttemptRow> {
        let mut found = tx.query("SELECT * FROM ONLY $id", Vars::new().set("id", attempt_id(tenant, key))).await?;
        found.first::<ChargeAttemptRow>(0)?.ok_or_else(|| AppError::not_found("charge"))
    }

    /// Records how a PENDING attempt ended: the payment it produced, or why it did not.
    pub(crate) async fn write_charge_settled(
        &self,
        tx: &TxRef,
        attempt: &ChargeAttemptRow,
        settlement: &Settlement,
        payment: Option<String>,
    ) -> AppResult<()> {
        let (reference, reason) = match settlement {
            Settlement::Succeeded { reference } => (reference.clone(), None),
            Settlement::Declined { reason } | Settlement::Failed { reason } => (None, Some(reason.clone())),
        };
        tx.query(
            "UPDATE $id SET status = $status, payment = $payment, external_reference = $reference, outcome_reason = $reason,
                updated_at = time::now() RETURN NONE",
            Vars::new()
                .set("id", attempt.id.clone())
                .set("status", settlement.charge_status().to_owned())
                .set("payment", payment)
                .set("reference", reference)
                .set("reason", reason),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn load_method(&self, tx: &TxRef, tenant: &TenantId, key: &str) -> AppResult<PaymentMethodRow> {
        read_owned::<PaymentMethodRow>(Some(tx), self, tenant, "payment_method", key)
            .await?
            .ok_or_else(|| AppError::not_found("payment method"))
    }

    pub async fn refund(&self, tenant: &TenantId, key: &str) -> AppResult<Option<RefundRow>> {
        read_owned(None, self, tenant, "refund", key).await
    }

    /// A refund of the tenant, read in the caller's transaction.
    pub(crate) async fn load_refund(&self, tx: &TxRef, tenant: &TenantId, key: &str) -> AppResult<RefundRow> {
        read_owned::<RefundRow>(Some(tx), self, tenant, "refund", key).await?.ok_or_else(|| AppError::not_found("refund"))
    }

    pub async fn charge_attempt(&self, tenant: &TenantId, key: &str) -> AppResult<Option<ChargeAttemptRow>> {
        let mut found = self.query("SELECT * FROM ONLY $id", Vars::new().set("id", attempt_id(tenant, key))).await?;
        found.first(0)
    }

    /// PENDING charge attempts last touched before `older_than`, across tenants: the reconciler's
    /// work list.
    pub async fn pending_charges(&self, older_than: chrono::DateTime<Utc>, limit: usize) -> AppResult<Vec<ChargeAttemptRow>> {
        let mut results = self
            .query(
                "SELECT * FROM charge_attempt WHERE status = 'PENDING' AND updated_at < $before LIMIT $limit",
                Vars::new().set("before", older_than).set("limit", limit as i64),
            )
            .await?;
        results.rows(0)
    }

    /// Reserves `amount` of a payment for a refund sent to its plugin, so no allocation or other
    /// refund can use that money while the outcome is unknown.
    pub(crate) async fn write_refund_reserved(&self, tx: &TxRef, payment: &PaymentRow, amount: Decimal) -> AppResult<()> {
        tx.query(
            "UPDATE $payment SET refund_pending += $amount, updated_at = time::now() RETURN NONE",
            Vars::new().set("payment", payment.id.clone()).set("amount", amount),
        )
        .await?;
        Ok(())
    }

    /// Records how a PENDING refund ended: a success moves the reserved amount to refunded; a
    /// decline or failure releases it and changes no balance (F3).
    pub(crate) async fn write_refund_settled(&self, tx: &TxRef, refund: &RefundRow, payment: &PaymentRow, settlement: &Settlement) -> AppResult<()> {
        let (outcome, reason, reference, refunded) = match settlement {
            Settlement::Succeeded { reference } => ("SUCCEEDED", None, reference.clone(), refund.amount),
            Settlement::Declined { reason } | Settlement::Failed { reason } => ("DECLINED", Some(reason.clone()), None, Decimal::ZERO),
        };
        if matches!(settlement, Settlement::Succeeded { .. }) {
            tx.takings_changed(TakingsChange::refund_succeeded(payment.doc.takings_place(&refund.date), refund.amount));
        }
        tx.query(
            "UPDATE $id SET outcome = $outcome, outcome_reason = $reason, external_reference = $reference, settled_at = time::now() RETURN NONE;
             UPDATE $payment SET refund_pending = math::max([refund_pending - $amount, 0]), refunded += $refunded,
                updated_at = time::now() RETURN NONE;",
            Vars::new()
                .set("id", refund.id.clone())
                .set("outcome", outcome.to_owned())
                .set("reason", reason)
                .set("reference", reference)
                .set("payment", payment.id.clone())
                .set("amount", refund.amount)
                .set("refunded", refunded),
        )
        .await?;
        Ok(())
    }

    /// PENDING refunds through plugins last touched before `older_than`, across tenants.
    pub async fn pending_refunds(&self, older_than: chrono::DateTime<Utc>, limit: usize) -> AppResult<Vec<RefundRow>> {
        let mut results = self
            .query(
                "SELECT * FROM refund WHERE outcome = 'PENDING' AND created_at < $before LIMIT $limit",
                Vars::new().set("before", older_than).set("limit", limit as i64),
            )
            .await?;
        results.rows(0)
    }
}
