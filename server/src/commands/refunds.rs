//! Refunds (F1-F4): only unallocated money, several partial refunds up to it. A payment of a
//! method that only records has its refund recorded; a payment taken through a plugin is refunded
//! through that plugin (F3) in three steps, like a charge: the amount is reserved on the payment
//! with a PENDING refund, the plugin is called outside any transaction, and the outcome is
//! committed once. A refund the plugin declines changes no balance.
//!
//! A dry-run makes no call: it shows what a refund the plugin accepts would do.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use settle_plugin::Capability;

use super::Commands;
use crate::events::{LedgerEvent, RefundOutcome};
use crate::auth::TenantId;
use crate::charging::Answer;
use crate::error::{AppError, AppResult};
use crate::ledger::Money;
use crate::ledger::payment::{self as rules, RefundRoute};
use crate::store::audit::{AuditEntry, Mutation};
use crate::store::charges::Settlement;
use crate::store::locks::record_lock;
use crate::store::payments::payment_summary;
use crate::store::preview::Applied;

impl Commands {
    /// refundPayment (F1-F3). Returns the refund's key.
    pub async fn refund_payment(
        &self,
        mutation: &Mutation<'_>,
        payment_key: &str,
        amount: Decimal,
        date: NaiveDate,
        description: Option<String>,
    ) -> AppResult<Applied<String>> {
        let store = &self.store;
        let payment = store.payment(mutation.tenant, payment_key).await?.ok_or_else(|| AppError::not_found("payment"))?;
        let route = rules::refund_route(payment.doc.records_only());
        if route == RefundRoute::Plugin {
            self.charging.check_capability(&payment.doc.plugin, Capability::Refund)?;
        }
        let description = &description;
        let applied = {
            let _turn = store.locks().lock(&record_lock("payment", payment_key)).await;
            store
                .apply(mutation, |tx| async move {
                    let mut payment = store.load_payment(&tx, mutation.tenant, payment_key).await?;
                    let amount = Money::positive_in(amount, &payment.doc.currency)?.amount();
                    rules::check_refund(&payment.doc.facts()?, amount)?;
                    let before = payment_summary(&payment.doc);
                    let records = |key: &str| vec![format!("refund:{key}"), format!("payment:{payment_key}")];
                    if route == RefundRoute::Record {
                        let key = store.create_refund_in(&tx, mutation, &payment, amount, date, description.clone(), "SUCCEEDED").await?;
                        payment.doc.refunded += amount;
                        store.write_payment_sums(&tx, &payment).await?;
                        let entry = AuditEntry {
                            events: vec![refunded(&key, payment_key, amount, &payment.doc.currency, RefundOutcome::Succeeded)],
                            action: "refund.create".into(),
                            records: records(&key),
                            before: Some(before),
                            after: Some(payment_summary(&payment.doc)),
                            reason: description.clone(),
                            ..AuditEntry::default()
                        };
                        return Ok((key, entry));
                    }
                    let key = store.create_refund_in(&tx, mutation, &payment, amount, date, description.clone(), "PENDING").await?;
                    store.write_refund_reserved(&tx, &payment, amount).await?;
                    let mut events = vec![refunded(&key, payment_key, amount, &payment.doc.currency, RefundOutcome::Pending)];
                    if mutation.dry_run {
                        // What a refund the plugin accepts would do; the plugin is not asked.
                        let refund = store.load_refund(&tx, mutation.tenant, &key).await?;
                        store.write_refund_settled(&tx, &refund, &payment, &Settlement::Succeeded { reference: None }).await?;
                        events.push(LedgerEvent::RefundSettled { refund: key.clone(), payment: payment_key.to_owned(), outcome: RefundOutcome::Succeeded });
                    }
                    let entry = AuditEntry {
                        events,
                        action: "refund.request".into(),
                        records: records(&key),
                        after: Some(serde_json::json!({"amount": amount.to_string(), "plugin": payment.doc.plugin})),
                        reason: description.clone(),
                        ..AuditEntry::default()
                    };
                    Ok((key, entry))
                })
                .await?
        };
        self.publish(mutation.tenant).await;
        let key = match applied {
            Applied::Previewed(preview) if route == RefundRoute::Plugin => {
                return Ok(Applied::Previewed(preview).without_asking(&payment.doc.plugin));
            }
            Applied::Previewed(preview) => return Ok(Applied::Previewed(preview)),
            Applied::Done(key) if route == RefundRoute::Record => return Ok(Applied::Done(key)),
            Applied::Done(key) => key,
        };
        let refund = store.refund(mutation.tenant, &key).await?.ok_or_else(|| AppError::not_found("refund"))?;
        if refund.outcome != "PENDING" {
            return Ok(Applied::Done(key));
        }
        let method = store.payment_method(mutation.tenant, &payment.doc.method).await?;
        match self.charging.refund(&refund, &payment, method.as_ref()).await {
            Answer::Settled(settlement) | Answer::Failed(settlement, _) => {
                self.settle_refund(mutation.tenant, &key, settlement, mutation.actor).await?;
            }
            // The amount stays reserved until the reconciler settles it.
            Answer::Unknown => {}
        }
        Ok(Applied::Done(key))
    }

    /// Records a plugin's answer to a refund, once: a success moves the reserved amount to
    /// refunded; a decline or failure releases it and changes no balance (F3). Returns the
    /// refund's key.
    pub(crate) async fn settle_refund(&self, tenant: &TenantId, refund_key: &str, settlement: Settlement, actor: &str) -> AppResult<String> {
        let store = &self.store;
        let refund = store.refund(tenant, refund_key).await?.ok_or_else(|| AppError::not_found("refund"))?;
        let turn = store.locks().lock(&record_lock("payment", &refund.payment)).await;
        let request_id = format!("settle-{}", uuid::Uuid::new_v4());
        let mutation = Mutation { tenant, actor, request_id: &request_id, operation: "settleRefund", idempotency: None, dry_run: false };
        let (mutation, settlement) = (&mutation, &settlement);
        let settled = store
            .mutate(mutation, |tx| async move {
                let refund = store.load_refund(&tx, tenant, refund_key).await?;
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
                let payment = store.load_payment(&tx, tenant, &refund.payment).await?;
                store.write_refund_settled(&tx, &refund, &payment, settlement).await?;
                let (action, reason, outcome) = match settlement {
                    Settlement::Succeeded { .. } => ("refund.succeeded", None, RefundOutcome::Succeeded),
                    Settlement::Declined { reason } | Settlement::Failed { reason } => ("refund.declined", Some(reason.clone()), RefundOutcome::Declined),
                };
                let events = vec![LedgerEvent::RefundSettled { refund: refund_key.to_owned(), payment: refund.payment.clone(), outcome }];
                Ok((refund_key.to_owned(), AuditEntry { events, ..entry_for(action, reason) }))
            })
            .await;
        drop(turn);
        self.publish(tenant).await;
        settled
    }
}

/// PAYMENT_REFUNDED for a refund just written.
fn refunded(refund: &str, payment: &str, amount: Decimal, currency: &str, outcome: RefundOutcome) -> LedgerEvent {
    LedgerEvent::PaymentRefunded { refund: refund.to_owned(), payment: payment.to_owned(), amount, currency: currency.to_owned(), outcome }
}
