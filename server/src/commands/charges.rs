//! Charges through plugin-backed methods (P3, I2): payInvoice with a card, and finalizeInvoice
//! with CHARGE. Three steps, and a plugin is never called inside a transaction:
//!
//! 1. claim: in one transaction the request's idempotency key is claimed (the gate every money
//!    change passes), the charge is decided (never above the invoice balance) and written as a
//!    PENDING attempt. A repeated request finds its claim and goes on from the attempt's state.
//! 2. call the plugin (charging.rs).
//! 3. settle: the plugin's answer is committed once; a success creates the payment and allocates
//!    it. When the answer is unknown (a timeout, a crash) the attempt stays PENDING and the
//!    reconciler settles it later by asking the plugin (reconcile.rs).
//!
//! A dry-run makes no call: it shows what a charge the gateway accepts would do.

use settle_plugin::Capability;

use super::{Claimed, Commands, events};
use crate::events::LedgerEvent;
use super::payments::PayInvoice;
use crate::auth::TenantId;
use crate::charging::Answer;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::ledger::Currency;
use crate::ledger::invoice::InvoiceStatus;
use crate::ledger::payment as rules;
use crate::store::TxRef;
use crate::store::audit::{AuditEntry, IdempotencyKey, Mutation};
use crate::store::charges::{NewCharge, Settled, Settlement};
use crate::store::locks::{record_lock, tenant_lock};
use crate::store::payments::{Allocated, NewRecordedPayment, new_payment_row, payment_entry};
use crate::store::preview::Applied;
use crate::store::rows::{ChargeAttemptRow, PaymentRow, key_of};

/// The payment a succeeded charge made, with its allocation and ledger events.
struct Charged {
    payment: PaymentRow,
    allocated: Vec<Allocated>,
    events: Vec<LedgerEvent>,
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

/// The in-process turns a charge's transactions take: its invoice's, and the tenant's when the
/// invoice is finalized (which takes the tenant's next invoice number).
fn charge_locks(tenant: &TenantId, invoice_key: &str, finalize: bool) -> Vec<String> {
    let mut locks = vec![record_lock("invoice", invoice_key)];
    if finalize {
        locks.insert(0, tenant_lock(tenant));
    }
    locks
}

impl Commands {
    /// Charges an invoice through the method's plugin, finalizing it first when `finalize`
    /// (I2 CHARGE). Returns the payment's key.
    pub(super) async fn charge_invoice(
        &self,
        mutation: &Mutation<'_>,
        invoice_key: &str,
        request: &PayInvoice,
        finalize: bool,
    ) -> AppResult<Applied<String>> {
        let idempotency = mutation.idempotency.as_ref().ok_or_else(|| AppError::invalid("a charge needs an idempotency key"))?;
        let claimed = {
            let _turns = self.store.locks().lock_all(&charge_locks(mutation.tenant, invoice_key, finalize)).await;
            self.store
                .apply(mutation, |tx| async move {
                    let attempt = self.write_charge(&tx, mutation, idempotency, invoice_key, request, finalize).await?;
                    let mut entry = AuditEntry {
                        action: "charge.request".into(),
                        records: vec![format!("invoice:{invoice_key}")],
                        after: Some(serde_json::json!({"amount": attempt.amount.to_string(), "plugin": attempt.plugin})),
                        ..AuditEntry::default()
                    };
                    if mutation.dry_run {
                        // What a charge the gateway accepts would do; the plugin is not asked.
                        let charged = self.record_charged_payment(&tx, mutation, &attempt, None).await?;
                        let paid = payment_entry("charge.succeeded", &charged.payment, &charged.allocated).records;
                        entry.records.extend(paid.into_iter().filter(|record| !record.starts_with("invoice:")));
                        entry.events = charged.events;
                    }
                    Ok((Claimed::Charge { charge: attempt.idempotency_key.clone() }, entry))
                })
                .await?
        };
        let attempt_key = match claimed {
            Applied::Previewed(preview) => {
                let method = self.store.payment_method(mutation.tenant, &request.method).await?;
                let plugin = method.map(|m| m.plugin).unwrap_or_default();
                return Ok(Applied::Previewed(preview).without_asking(&plugin));
            }
            Applied::Done(Claimed::Record(key)) => return Ok(Applied::Done(key)),
            Applied::Done(Claimed::Charge { charge }) => charge,
        };
        let tenant = mutation.tenant;
        let mut attempt = self.store.charge_attempt(tenant, &attempt_key).await?.ok_or_else(|| AppError::not_found("charge"))?;
        match attempt.status.as_str() {
            "SUCCEEDED" => return Ok(Applied::Done(attempt.payment.clone().unwrap_or_default())),
            "DECLINED" => return Err(declined(attempt.outcome_reason.as_deref().unwrap_or_default())),
            // Nothing was charged by the earlier try: the same request may try again.
            "FAILED" => attempt = self.charge_again(mutation, idempotency, &attempt, request).await?,
            _ => {}
        }
        let method = self.store.payment_method(tenant, &attempt.method).await?.ok_or_else(|| AppError::not_found("payment method"))?;
        let (settlement, error) = match self.charging.charge(&attempt, &method).await {
            Answer::Settled(settlement) => (settlement, None),
            Answer::Failed(settlement, error) => (settlement, Some(error)),
            Answer::Unknown => return Err(outcome_unknown()),
        };
        let settled = self.settle_charge(tenant, &attempt_key, settlement, mutation.actor).await?;
        if let Some(error) = error {
            return Err(error);
        }
        match settled {
            Settled::Succeeded(payment) => Ok(Applied::Done(payment)),
            Settled::Declined(reason) => Err(declined(&reason)),
        }
    }

    /// Loads what a charge needs, decides it (P3, I2, P1) and writes it PENDING.
    async fn write_charge(
        &self,
        tx: &TxRef,
        mutation: &Mutation<'_>,
        idempotency: &IdempotencyKey,
        invoice_key: &str,
        request: &PayInvoice,
        finalize: bool,
    ) -> AppResult<ChargeAttemptRow> {
        let invoice = self.store.load_invoice(tx, mutation.tenant, invoice_key).await?;
        let location = request.location.clone().unwrap_or_else(|| invoice.doc.location.clone());
        let method = self.store.invoice_payment_records(tx, mutation.tenant, &invoice, &request.method, &location).await?;
        let currency = Currency::parse(&invoice.doc.currency)?;
        let amount = rules::charge_invoice(&invoice.doc.facts(), currency, &method.facts(), request.amount, finalize)?;
        self.charging.check_capability(&method.plugin, Capability::Charge)?;
        let charge = NewCharge {
            invoice: &invoice,
            method: &method,
            amount: amount.amount(),
            finalize,
            location,
            date: request.date,
            description: request.description.clone(),
            details: &request.details,
        };
        self.store.write_charge_attempt(tx, mutation, idempotency, charge).await
    }

    /// A request repeated after its charge FAILED (nothing was charged): decided again on the
    /// invoice as it is now and written PENDING again, once.
    async fn charge_again(
        &self,
        mutation: &Mutation<'_>,
        idempotency: &IdempotencyKey,
        failed: &ChargeAttemptRow,
        request: &PayInvoice,
    ) -> AppResult<ChargeAttemptRow> {
        let _turns = self.store.locks().lock_all(&charge_locks(mutation.tenant, &failed.invoice, failed.finalize)).await;
        // The key is already claimed: this transaction passes the gate without it.
        let retry = Mutation { idempotency: None, ..mutation.clone() };
        let retry = &retry;
        self.store
            .mutate(retry, |tx| async move {
                let attempt = self.store.load_charge_attempt(&tx, mutation.tenant, &failed.idempotency_key).await?;
                if attempt.status == "FAILED" {
                    self.write_charge(&tx, retry, idempotency, &failed.invoice, request, failed.finalize).await?;
                }
                let entry = AuditEntry {
                    action: "charge.retry".into(),
                    records: vec![format!("invoice:{}", failed.invoice)],
                    idempotency_key: Some(failed.idempotency_key.clone()),
                    ..AuditEntry::default()
                };
                Ok(((), entry))
            })
            .await?;
        self.store.charge_attempt(mutation.tenant, &failed.idempotency_key).await?.ok_or_else(|| AppError::not_found("charge"))
    }

    /// Records a plugin's answer to a charge, once: a success creates the payment (finalizing
    /// the invoice first when asked) and allocates it to the invoice, at most its balance now; a
    /// decline or failure records why and moves no money. Settling an attempt that is no longer
    /// PENDING changes nothing and returns what it became.
    pub(crate) async fn settle_charge(&self, tenant: &TenantId, attempt_key: &str, settlement: Settlement, actor: &str) -> AppResult<Settled> {
        let store = &self.store;
        let attempt = store.charge_attempt(tenant, attempt_key).await?.ok_or_else(|| AppError::not_found("charge"))?;
        let turns = store.locks().lock_all(&[tenant_lock(tenant), record_lock("invoice", &attempt.invoice)]).await;
        let request_id = format!("settle-{}", uuid::Uuid::new_v4());
        let mutation = Mutation { tenant, actor, request_id: &request_id, operation: "settleCharge", idempotency: None, dry_run: false };
        let (mutation, settlement) = (&mutation, &settlement);
        let written = crate::store::payments::Written::default();
        let written_ref = &written;
        let settled = store
            .mutate(mutation, |tx| async move {
                let attempt = store.load_charge_attempt(&tx, tenant, attempt_key).await?;
                let records = vec![format!("invoice:{}", attempt.invoice)];
                let already = AuditEntry { action: "charge.already_settled".into(), records: records.clone(), ..AuditEntry::default() };
                match attempt.status.as_str() {
                    "SUCCEEDED" => return Ok((Settled::Succeeded(attempt.payment.clone().unwrap_or_default()), already)),
                    "DECLINED" => return Ok((Settled::Declined(attempt.outcome_reason.clone().unwrap_or_default()), already)),
                    _ => {}
                }
                match settlement {
                    Settlement::Succeeded { reference } => {
                        let Charged { payment, allocated, events } = self.record_charged_payment(&tx, mutation, &attempt, reference.clone()).await?;
                        written_ref.set(&payment);
                        let payment_key = key_of(&payment.id);
                        store.write_charge_settled(&tx, &attempt, settlement, Some(payment_key.clone())).await?;
                        let paid = payment_entry("charge.succeeded", &payment, &allocated);
                        let entry = AuditEntry {
                            events,
                            records: records.into_iter().chain(paid.records).collect(),
                            after: Some(serde_json::json!({"amount": attempt.amount.to_string(), "reference": reference, "plugin": attempt.plugin})),
                            idempotency_key: Some(attempt.idempotency_key.clone()),
                            ..paid
                        };
                        Ok((Settled::Succeeded(payment_key), entry))
                    }
                    Settlement::Declined { reason } | Settlement::Failed { reason } => {
                        store.write_charge_settled(&tx, &attempt, settlement, None).await?;
                        // A gateway's decline is a fact about the client's money; a request that
                        // never reached the gateway (FAILED) is not.
                        let events = match settlement {
                            Settlement::Declined { reason } => vec![LedgerEvent::ChargeDeclined { invoice: attempt.invoice.clone(), reason: reason.clone() }],
                            _ => Vec::new(),
                        };
                        let entry = AuditEntry {
                            events,
                            action: format!("charge.{}", settlement.charge_status().to_lowercase()),
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
        let new_payment = match &settled {
            Settled::Succeeded(payment) if written.take().is_some() => Some(payment.clone()),
            _ => None,
        };
        self.publish_and_number(tenant, new_payment).await;
        Ok(settled)
    }

    /// The payment of a succeeded charge, written in the caller's transaction: the invoice is
    /// finalized first if asked and still a draft, then the payment is created and allocates
    /// min(amount, balance) (P3; a balance lowered meanwhile by another payment leaves the rest as
    /// the client's credit).
    async fn record_charged_payment(
        &self,
        tx: &TxRef,
        mutation: &Mutation<'_>,
        attempt: &ChargeAttemptRow,
        reference: Option<String>,
    ) -> AppResult<Charged> {
        let store = &self.store;
        let mut invoice = store.load_invoice(tx, mutation.tenant, &attempt.invoice).await?;
        let mut events = Vec::new();
        if attempt.finalize && invoice.doc.facts().status == InvoiceStatus::Draft {
            let (finalized, entry) = self.finalize_in(tx, mutation, &attempt.invoice).await?;
            invoice = finalized;
            events = entry.events;
        }
        let method = store.load_method(tx, mutation.tenant, &attempt.method).await?;
        let date = chrono::NaiveDate::parse_from_str(&attempt.date, "%Y-%m-%d").unwrap_or_else(|_| chrono::Utc::now().date_naive());
        let new = NewRecordedPayment {
            location: attempt.location.clone(),
            date,
            description: attempt.description.clone(),
            external_reference: reference.clone(),
        };
        let mut payment = new_payment_row(mutation, &attempt.client, &method, new, attempt.amount, &attempt.currency);
        // The plugin that took the money, and its charge id for refunds (never edited, P9).
        payment.doc.plugin = attempt.plugin.clone();
        payment.doc.charge_reference = reference;
        let facts = invoice.doc.facts();
        let mut allocated = Vec::new();
        let mut allocation_events = Vec::new();
        if facts.status == InvoiceStatus::Open {
            let amount = rules::allocation_for_new_payment(attempt.amount, &facts);
            if !amount.is_zero() {
                let effect = rules::allocate(&payment.doc.facts()?, &facts, &invoice.doc.client, Currency::parse(&invoice.doc.currency)?, amount)?;
                let allocation = store.write_allocation(tx, mutation, &mut payment, &invoice, &effect, date).await?;
                allocation_events = events::allocated(&allocation, &payment, &invoice, effect.invoice_status);
                allocated.push(allocation);
            }
        }
        store.create_payment_record(tx, &mut payment).await?;
        events.push(events::payment_recorded(&payment));
        events.extend(allocation_events);
        Ok(Charged { payment, allocated, events })
    }
}
