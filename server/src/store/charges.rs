//! Charges and refunds through plugins, as records: an attempt is written before the plugin is
//! called and settled after, each in its own transaction, never with a plugin call inside one.
//!
//! A charge attempt is keyed [tenant, idempotency key]: a repeated request finds it and never
//! charges again. Settling moves an attempt out of PENDING exactly once; two settlers (a request
//! and the reconciler, or two Settle processes) conflict in the database and the second finds it
//! settled.

use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use surrealdb::types::{Array, RecordId, RecordIdKey, Value};

use super::audit::{AuditEntry, Mutation};
use super::directory::read_owned;
use super::invoices::{date_string, parse_status, read_invoice};
use super::locks::{record_lock, tenant_lock};
use super::payments::{NewRecordedPayment, new_payment_row, positive_money, read_payment};
use super::rows::{ChargeAttemptRow, InvoiceRow, PaymentMethodRow, RefundRow, key_of};
use super::{Store, TxRef, Vars};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::ledger::invoice::{self as invoice_rules, InvoiceStatus};
use crate::ledger::payment as rules;
use crate::ledger::{Currency, Money};

/// A charge as requested, before anything is written.
#[derive(Debug, Clone)]
pub struct ChargeDraft {
    pub method: String,
    /// The invoice balance (or total, when finalizing) when not given.
    pub amount: Option<Decimal>,
    pub date: NaiveDate,
    pub location: Option<String>,
    pub description: Option<String>,
    /// Method-specific details for the plugin (a card token, ...), as JSON.
    pub details: serde_json::Value,
    /// Finalize the draft invoice when the charge succeeds (I2 CHARGE).
    pub finalize: bool,
}

/// What the caller learns from starting a charge.
#[derive(Debug, Clone)]
pub enum ChargeStart {
    /// Call the plugin for this attempt.
    Call(ChargeAttemptRow, PaymentMethodRow),
    /// The request was made before and is settled: the payment it produced.
    Succeeded(String),
    /// The request was made before and declined.
    Declined(String),
}

/// What settling a charge came to.
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

fn attempt_id(tenant: &TenantId, key: &str) -> RecordId {
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

/// Whether a plugin-backed method can take this charge: checked by the caller against the
/// plugin's manifest before anything is written.
pub trait ChargeCheck {
    fn check(&self, method: &PaymentMethodRow) -> AppResult<()>;
}

impl Store {
    /// Step 1: checks the charge (P3: never above the invoice balance) and writes it PENDING, or
    /// finds the earlier attempt with the same idempotency key.
    pub async fn begin_charge(
        &self,
        mutation: &Mutation<'_>,
        invoice_key: &str,
        draft: &ChargeDraft,
        check: &(dyn ChargeCheck + Sync),
    ) -> AppResult<ChargeStart> {
        let idempotency = mutation.idempotency.as_ref().ok_or_else(|| AppError::invalid("a charge needs an idempotency key"))?;
        self.transaction(|tx| async move {
            let id = attempt_id(mutation.tenant, &idempotency.key);
            let mut found = tx.query("SELECT * FROM ONLY $id", Vars::new().set("id", id.clone())).await?;
            if let Some(attempt) = found.first::<ChargeAttemptRow>(0)? {
                if attempt.request_hash != idempotency.request_hash {
                    return Err(AppError::new(
                        ErrorCode::IdempotencyKeyReused,
                        "this idempotency key was already used for a different request; use a new key",
                    ));
                }
                match attempt.status.as_str() {
                    "SUCCEEDED" => return Ok(ChargeStart::Succeeded(attempt.payment.clone().unwrap_or_default())),
                    "DECLINED" => return Ok(ChargeStart::Declined(attempt.outcome_reason.clone().unwrap_or_default())),
                    "PENDING" => {
                        let method = self.method_of(&tx, mutation.tenant, &attempt.method).await?;
                        return Ok(ChargeStart::Call(attempt, method));
                    }
                    // FAILED: nothing was charged; this request may try again.
                    _ => {}
                }
            }
            let invoice = read_invoice(&tx, self, mutation.tenant, invoice_key).await?;
            let facts = invoice.doc.facts();
            let owed = if draft.finalize {
                invoice_rules::check_finalize(&facts)?;
                facts.balance()
            } else {
                match facts.status {
                    InvoiceStatus::Open => facts.balance(),
                    InvoiceStatus::Void => return Err(AppError::new(ErrorCode::InvoiceVoid, "the invoice is void")),
                    _ => return Err(AppError::new(ErrorCode::InvoiceNotOpen, "only an open invoice can be charged")),
                }
            };
            let method = self.method_of(&tx, mutation.tenant, &draft.method).await?;
            if method.archived {
                return Err(AppError::new(ErrorCode::PaymentMethodArchived, format!("the payment method '{}' is archived", method.name)));
            }
            check.check(&method)?;
            let currency = Currency::parse(&invoice.doc.currency)?;
            let amount = Money::from_decimal(draft.amount.unwrap_or(owed), currency)?.require_positive()?.amount();
            if amount > owed {
                return Err(AppError::new(
                    ErrorCode::AmountExceedsBalance,
                    format!(
                        "a charge can never exceed the invoice balance ({})",
                        crate::ledger::money::display_amount(owed, currency.code())
                    ),
                ));
            }
            let now = Utc::now();
            let attempt = ChargeAttemptRow {
                id: id.clone(),
                tenant: mutation.tenant.as_str().to_owned(),
                idempotency_key: idempotency.key.clone(),
                request_hash: idempotency.request_hash.clone(),
                invoice: invoice_key.to_owned(),
                finalize: draft.finalize,
                client: invoice.doc.client.clone(),
                location: draft.location.clone().unwrap_or_else(|| invoice.doc.location.clone()),
                method: draft.method.clone(),
                plugin: method.plugin.clone(),
                method_type: method.kind.clone(),
                amount,
                currency: currency.code().to_owned(),
                date: date_string(draft.date),
                description: draft.description.clone(),
                details: draft.details.to_string(),
                status: "PENDING".into(),
                outcome_reason: None,
                external_reference: None,
                payment: None,
                actor: mutation.actor.to_owned(),
                created_at: now,
                updated_at: now,
            };
            tx.query("UPSERT $id CONTENT $attempt", Vars::new().set("id", id).set("attempt", attempt.clone())).await?;
            Ok(ChargeStart::Call(attempt, method))
        })
        .await
    }

    async fn method_of(&self, tx: &TxRef, tenant: &TenantId, key: &str) -> AppResult<PaymentMethodRow> {
        read_owned::<PaymentMethodRow>(Some(tx), self, tenant, "payment_method", key)
            .await?
            .ok_or_else(|| AppError::not_found("payment method"))
    }

    /// Step 3: records the plugin's answer. A success creates the payment (finalizing the invoice
    /// first when asked) and allocates it to the invoice, at most its balance now; a decline or a
    /// failure records why and moves no money. Settling an attempt that is no longer PENDING
    /// changes nothing and returns what it became.
    pub async fn settle_charge(&self, tenant: &TenantId, attempt_key: &str, settlement: Settlement, actor: &str) -> AppResult<Settled> {
        let (invoice_key, request_id) = {
            let attempt = self.charge_attempt(tenant, attempt_key).await?.ok_or_else(|| AppError::not_found("charge"))?;
            (attempt.invoice, format!("settle-{}", uuid::Uuid::new_v4()))
        };
        let keys = [tenant_lock(tenant), record_lock("invoice", &invoice_key)];
        let turns = self.locks().lock_all(&keys).await;
        let settlement = &settlement;
        let mutation = Mutation { tenant, actor, request_id: &request_id, operation: "settleCharge", idempotency: None };
        let mutation = &mutation;
        let settled = self.mutate(mutation, |tx| async move {
            let id = attempt_id(tenant, attempt_key);
            let mut found = tx.query("SELECT * FROM ONLY $id", Vars::new().set("id", id.clone())).await?;
            let attempt = found.first::<ChargeAttemptRow>(0)?.ok_or_else(|| AppError::not_found("charge"))?;
            let records = vec![format!("invoice:{}", attempt.invoice)];
            match (attempt.status.as_str(), settlement) {
                ("SUCCEEDED", _) => {
                    let entry = AuditEntry { action: "charge.already_settled".into(), records, ..AuditEntry::default() };
                    return Ok((Settled::Succeeded(attempt.payment.clone().unwrap_or_default()), entry));
                }
                ("DECLINED", _) => {
                    let entry = AuditEntry { action: "charge.already_settled".into(), records, ..AuditEntry::default() };
                    return Ok((Settled::Declined(attempt.outcome_reason.clone().unwrap_or_default()), entry));
                }
                _ => {}
            }
            match settlement {
                Settlement::Succeeded { reference } => {
                    let payment_key = self.record_charged_payment(&tx, mutation, &attempt, reference.clone()).await?;
                    tx.query(
                        "UPDATE $id SET status = 'SUCCEEDED', payment = $payment, external_reference = $reference, updated_at = time::now()",
                        Vars::new().set("id", id).set("payment", payment_key.clone()).set("reference", reference.clone()),
                    )
                    .await?;
                    let mut records = records;
                    records.push(format!("payment:{payment_key}"));
                    let entry = AuditEntry {
                        action: "charge.succeeded".into(),
                        records,
                        after: Some(serde_json::json!({"amount": attempt.amount.to_string(), "reference": reference, "plugin": attempt.plugin})),
                        idempotency_key: Some(attempt.idempotency_key.clone()),
                        ..AuditEntry::default()
                    };
                    Ok((Settled::Succeeded(payment_key), entry))
                }
                Settlement::Declined { reason } | Settlement::Failed { reason } => {
                    let status = if matches!(settlement, Settlement::Declined { .. }) { "DECLINED" } else { "FAILED" };
                    tx.query(
                        "UPDATE $id SET status = $status, outcome_reason = $reason, updated_at = time::now()",
                        Vars::new().set("id", id).set("status", status.to_owned()).set("reason", reason.clone()),
                    )
                    .await?;
                    let entry = AuditEntry {
                        action: format!("charge.{}", status.to_lowercase()),
                        records,
                        after: Some(serde_json::json!({"amount": attempt.amount.to_string(), "plugin": attempt.plugin})),
                        reason: Some(reason.clone()),
                        idempotency_key: Some(attempt.idempotency_key.clone()),
                        ..AuditEntry::default()
                    };
                    Ok((Settled::Declined(reason.clone()), entry))
                }
            }
        })
        .await?;
        drop(turns);
        if let Settled::Succeeded(payment) = &settled {
            self.number_payment(tenant, payment.clone()).await;
        }
        Ok(settled)
    }

    /// The payment of a succeeded charge: finalize first if asked and still a draft, then create
    /// the payment and allocate min(amount, balance) (P3; a balance lowered meanwhile by another
    /// payment leaves the rest as the client's credit).
    async fn record_charged_payment(
        &self,
        tx: &TxRef,
        mutation: &Mutation<'_>,
        attempt: &ChargeAttemptRow,
        reference: Option<String>,
    ) -> AppResult<String> {
        let mut invoice: InvoiceRow = read_invoice(tx, self, mutation.tenant, &attempt.invoice).await?;
        if attempt.finalize && parse_status(&invoice.doc.status) == InvoiceStatus::Draft {
            let (finalized, _) = self.finalize_in(tx, mutation, &attempt.invoice).await?;
            invoice = finalized;
        }
        let method = self.method_of(tx, mutation.tenant, &attempt.method).await?;
        let date = chrono::NaiveDate::parse_from_str(&attempt.date, "%Y-%m-%d").unwrap_or_else(|_| Utc::now().date_naive());
        let new = NewRecordedPayment {
            location: attempt.location.clone(),
            date,
            description: attempt.description.clone(),
            external_reference: reference.clone(),
        };
        let mut payment = new_payment_row(mutation.tenant, &attempt.client, &method, new, attempt.amount, &attempt.currency);
        // The plugin that took the money, and its charge id for refunds (never edited, P9).
        payment.doc.plugin = attempt.plugin.clone();
        payment.doc.charge_reference = reference;
        let facts = invoice.doc.facts();
        if facts.status == InvoiceStatus::Open {
            let amount = rules::allocation_for_new_payment(attempt.amount, &facts);
            if amount > Decimal::ZERO {
                self.allocate_in_tx(tx, mutation, &mut payment, &invoice, amount, date).await?;
            }
        }
        self.create_payment_record(tx, &payment).await?;
        Ok(key_of(&payment.id))
    }

    pub async fn refund(&self, tenant: &TenantId, key: &str) -> AppResult<Option<RefundRow>> {
        read_owned(None, self, tenant, "refund", key).await
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

    /// Step 1 of a refund through a plugin (F3): checks it (F1) and reserves the amount on the
    /// payment as a PENDING refund, so no allocation or other refund can use that money meanwhile.
    pub async fn begin_plugin_refund(
        &self,
        mutation: &Mutation<'_>,
        payment_key: &str,
        amount: Decimal,
        date: NaiveDate,
        description: Option<String>,
    ) -> AppResult<String> {
        let _turn = self.locks().lock(&record_lock("payment", payment_key)).await;
        let description = &description;
        self.mutate(mutation, |tx| async move {
            let payment = read_payment(&tx, self, mutation.tenant, payment_key).await?;
            let amount = positive_money(amount, &payment.doc.currency)?;
            rules::check_refund(&payment.doc.facts(), amount)?;
            let key = self.create_refund_in(&tx, mutation, &payment, amount, date, description.clone(), "PENDING").await?;
            tx.query(
                "UPDATE $payment SET refund_pending += $amount, updated_at = time::now()",
                Vars::new().set("payment", payment.id.clone()).set("amount", amount),
            )
            .await?;
            let entry = AuditEntry {
                action: "refund.request".into(),
                records: vec![format!("refund:{key}"), format!("payment:{payment_key}")],
                after: Some(serde_json::json!({"amount": amount.to_string(), "plugin": payment.doc.plugin})),
                reason: description.clone(),
                ..AuditEntry::default()
            };
            Ok((key, entry))
        })
        .await
    }

    /// Step 3 of a refund through a plugin: a success moves the reserved amount to refunded; a
    /// decline or failure releases it and changes no balance (F3). Settles a refund once.
    pub async fn settle_refund(&self, tenant: &TenantId, refund_key: &str, settlement: Settlement, actor: &str) -> AppResult<String> {
        let refund = read_owned::<RefundRow>(None, self, tenant, "refund", refund_key)
            .await?
            .ok_or_else(|| AppError::not_found("refund"))?;
        let _turn = self.locks().lock(&record_lock("payment", &refund.payment)).await;
        let request_id = format!("settle-{}", uuid::Uuid::new_v4());
        let mutation = Mutation { tenant, actor, request_id: &request_id, operation: "settleRefund", idempotency: None };
        let (mutation, settlement) = (&mutation, &settlement);
        self.mutate(mutation, |tx| async move {
            let refund = read_owned::<RefundRow>(Some(&tx), self, tenant, "refund", refund_key)
                .await?
                .ok_or_else(|| AppError::not_found("refund"))?;
            let entry_for = |action: &str, reason: Option<String>| AuditEntry {
                action: action.into(),
                records: vec![format!("refund:{refund_key}"), format!("payment:{}", refund.payment)],
                after: Some(serde_json::json!({"amount": refund.amount.to_string()})),
                reason,
                ..AuditEntry::default()
            };
            if refund.outcome != "PENDING" {
                return Ok((refund_key.to_owned(), entry_for("refund.already_settled", None)));
            }
            let payment = read_payment(&tx, self, tenant, &refund.payment).await?;
            let (outcome, reason, reference, refunded) = match settlement {
                Settlement::Succeeded { reference } => ("SUCCEEDED", None, reference.clone(), refund.amount),
                Settlement::Declined { reason } => ("DECLINED", Some(reason.clone()), None, Decimal::ZERO),
                Settlement::Failed { reason } => ("DECLINED", Some(reason.clone()), None, Decimal::ZERO),
            };
            tx.query(
                "UPDATE $id SET outcome = $outcome, outcome_reason = $reason, external_reference = $reference, settled_at = time::now();
                 UPDATE $payment SET refund_pending = math::max([refund_pending - $amount, 0]), refunded += $refunded,
                    updated_at = time::now();",
                Vars::new()
                    .set("id", refund.id.clone())
                    .set("outcome", outcome.to_owned())
                    .set("reason", reason.clone())
                    .set("reference", reference.clone())
                    .set("payment", payment.id.clone())
                    .set("amount", refund.amount)
                    .set("refunded", refunded),
            )
            .await?;
            Ok((refund_key.to_owned(), entry_for(&format!("refund.{}", outcome.to_lowercase()), reason)))
        })
        .await
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
