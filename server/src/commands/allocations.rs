//! Allocations (P4-P7): applying part of an existing payment to an invoice, and removing an
//! allocation again.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::{Commands, events};
use crate::events::LedgerEvent;
use crate::error::{AppError, AppResult};
use crate::ledger::{Currency, Money};
use crate::ledger::payment as rules;
use crate::store::audit::{AuditEntry, Mutation};
use crate::store::invoices::{status_str, summary};
use crate::store::locks::record_lock;
use crate::store::payments::payment_summary;
use crate::store::preview::Applied;

impl Commands {
    /// applyPayment (P5): an explicit amount within the payment's unallocated amount and the
    /// invoice balance, same client and currency. Returns the allocation's key.
    pub async fn apply_payment(
        &self,
        mutation: &Mutation<'_>,
        payment_key: &str,
        invoice_key: &str,
        amount: Decimal,
        today: NaiveDate,
    ) -> AppResult<Applied<String>> {
        let store = &self.store;
        let turns = store.locks().lock_all(&[record_lock("payment", payment_key), record_lock("invoice", invoice_key)]).await;
        let applied = store
            .apply(mutation, |tx| async move {
                let mut payment = store.load_payment(&tx, mutation.tenant, payment_key).await?;
                let invoice = store.load_invoice(&tx, mutation.tenant, invoice_key).await?;
                let amount = Money::positive_in(amount, &payment.doc.currency)?.amount();
                let currency = Currency::parse(&invoice.doc.currency)?;
                let effect = rules::allocate(&payment.doc.facts()?, &invoice.doc.facts(), &invoice.doc.client, currency, amount)?;
                let allocated = store.write_allocation(&tx, mutation, &mut payment, &invoice, &effect, today).await?;
                store.write_payment_sums(&tx, &payment).await?;
                let entry = AuditEntry {
                    events: events::allocated(&allocated, &payment, &invoice, effect.invoice_status),
                    action: "allocation.create".into(),
                    records: vec![
                        format!("allocation:{}", allocated.key),
                        format!("payment:{payment_key}"),
                        format!("invoice:{invoice_key}"),
                    ],
                    before: Some(serde_json::json!({"invoice": summary(&invoice.doc)})),
                    after: Some(serde_json::json!({"amount": allocated.amount.to_string(), "payment": payment_summary(&payment.doc)})),
                    ..AuditEntry::default()
                };
                Ok((allocated.key, entry))
            })
            .await;
        drop(turns);
        self.publish(mutation.tenant).await;
        applied
    }

    /// removeAllocation (P6): its amount returns to the payment and the invoice; the record
    /// stays, marked removed with actor and time. Returns the allocation's key.
    pub async fn remove_allocation(&self, mutation: &Mutation<'_>, allocation_key: &str) -> AppResult<Applied<String>> {
        let store = &self.store;
        let allocation = store.allocation(mutation.tenant, allocation_key).await?.ok_or_else(|| AppError::not_found("allocation"))?;
        let keys = [record_lock("payment", &allocation.payment), record_lock("invoice", &allocation.invoice)];
        let turns = store.locks().lock_all(&keys).await;
        let applied = store
            .apply(mutation, |tx| async move {
                let allocation = store.load_allocation(&tx, mutation.tenant, allocation_key).await?;
                let mut payment = store.load_payment(&tx, mutation.tenant, &allocation.payment).await?;
                let invoice = store.load_invoice(&tx, mutation.tenant, &allocation.invoice).await?;
                let effect = rules::remove_allocation(&payment.doc.facts()?, &invoice.doc.facts(), allocation.amount, !allocation.active)?;
                store.write_allocation_removed(&tx, mutation, &allocation, &invoice, &effect).await?;
                payment.doc.allocated = effect.payment_allocated;
                store.write_payment_sums(&tx, &payment).await?;
                let mut events = vec![LedgerEvent::AllocationRemoved {
                    allocation: allocation_key.to_owned(),
                    payment: allocation.payment.clone(),
                    invoice: allocation.invoice.clone(),
                    amount: allocation.amount,
                    currency: allocation.currency.clone(),
                }];
                events.extend(events::status_changed(&invoice, effect.invoice_status));
                let entry = AuditEntry {
                    events,
                    action: "allocation.remove".into(),
                    records: vec![
                        format!("allocation:{allocation_key}"),
                        format!("payment:{}", allocation.payment),
                        format!("invoice:{}", allocation.invoice),
                    ],
                    before: Some(serde_json::json!({"amount": allocation.amount.to_string(), "invoice": summary(&invoice.doc)})),
                    after: Some(serde_json::json!({"payment": payment_summary(&payment.doc), "invoiceStatus": status_str(effect.invoice_status)})),
                    ..AuditEntry::default()
                };
                Ok((allocation_key.to_owned(), entry))
            })
            .await;
        drop(turns);
        self.publish(mutation.tenant).await;
        applied
    }
}
