//! New payments (P1, P2, P3, I2): a standalone recorded payment, and paying an invoice with a new
//! payment, recorded for a method whose plugin only records and charged through the plugin for
//! any other (never above the balance).
//!
//! A recorded payment is decided twice: once before the transaction, because the method's plugin
//! checks the payment's details (a cheque number) for the decided amount and a plugin is never
//! called inside a transaction; and again inside the transaction, on the facts it commits against.

use std::future::Future;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::{Claimed, Commands, events};
use crate::error::{AppError, AppResult};
use crate::events::LedgerEvent;
use crate::ledger::{Currency, Money};
use crate::ledger::invoice::{InvoiceFacts, InvoiceStatus};
use crate::ledger::payment::{self as rules};
use crate::store::TxRef;
use crate::store::audit::{AuditEntry, Mutation};
use crate::store::locks::{record_lock, tenant_lock};
use crate::store::payments::{NewPayment, NewRecordedPayment, Written, new_payment_row, payment_entry, payment_summary};
use crate::store::preview::Applied;
use crate::store::rows::{InvoiceRow, PaymentDoc, PaymentMethodRow, PaymentRow, key_of};

/// A payment for one invoice, as requested.
#[derive(Debug, Clone)]
pub struct PayInvoice {
    pub method: String,
    /// The invoice balance when not given; more than the balance stays as the client's credit.
    pub amount: Option<Decimal>,
    pub date: NaiveDate,
    /// The invoice's location when not given.
    pub location: Option<String>,
    pub description: Option<String>,
    /// Details for the method's plugin: a card number, a cheque number.
    pub details: serde_json::Value,
}

impl PayInvoice {
    fn recorded(&self, invoice: &InvoiceRow, external_reference: Option<String>) -> NewRecordedPayment {
        NewRecordedPayment {
            location: self.location.clone().unwrap_or_else(|| invoice.doc.location.clone()),
            date: self.date,
            description: self.description.clone(),
            external_reference,
        }
    }
}

/// A standalone payment, as requested (P1, P2), with allocations to make at once.
#[derive(Debug, Clone)]
pub struct RecordPayment {
    pub client: String,
    pub location: String,
    pub method: String,
    pub date: NaiveDate,
    pub amount: Decimal,
    /// The tenant's currency when not given.
    pub currency: Option<String>,
    pub description: Option<String>,
    /// (invoice key, amount) to allocate in the same transaction.
    pub allocations: Vec<(String, Decimal)>,
    /// Details for the method's plugin: a cheque number.
    pub details: serde_json::Value,
}

impl Commands {
    /// recordPayment: a standalone payment with a method that only records (P1, P2), allocated
    /// to invoices in the same transaction when asked (P5). Returns the payment's key, and the
    /// record as written when this request wrote it.
    pub async fn record_payment(&self, mutation: &Mutation<'_>, request: RecordPayment) -> AppResult<Applied<NewPayment>> {
        let attempt = async {
            let method = self.method(mutation, &request.method).await?;
            let settings = self.store.tenant(mutation.tenant).await?;
            let currency = Currency::parse(request.currency.as_deref().unwrap_or(&settings.currency))?;
            // Decided before the plugin sees the details (it needs the amount); again in the
            // transaction.
            let amount = rules::new_recorded_payment(&method.facts(), request.amount, currency)?;
            let reference = self.checked_details(mutation, &method, amount, &request.details).await?;
            let locks: Vec<String> = request.allocations.iter().map(|(invoice, _)| record_lock("invoice", invoice)).collect();
            let (request, reference) = (&request, &reference);
            let paid = self.new_payment(mutation, &locks, |tx| async move {
                let currency = self.store.currency_in(&tx, mutation.tenant, request.currency.as_deref()).await?;
                let method = self.store.payment_records(&tx, mutation.tenant, &request.method, &request.client, &request.location).await?;
                let amount = rules::new_recorded_payment(&method.facts(), request.amount, currency)?;
                let new = NewRecordedPayment {
                    location: request.location.clone(),
                    date: request.date,
                    description: request.description.clone(),
                    external_reference: reference.clone(),
                };
                let mut payment = new_payment_row(mutation, &request.client, &method, new, amount.amount(), currency.code());
                let mut allocated = Vec::new();
                let mut events = Vec::new();
                for (invoice_key, amount) in &request.allocations {
                    let invoice = self.store.load_invoice(&tx, mutation.tenant, invoice_key).await?;
                    let amount = Money::positive_in(*amount, &invoice.doc.currency)?;
                    let effect =
                        rules::allocate(&payment.doc.facts()?, &invoice.doc.facts(), &invoice.doc.client, amount.currency(), amount.amount())?;
                    let allocation = self.store.write_allocation(&tx, mutation, &mut payment, &invoice, &effect, request.date).await?;
                    events.extend(events::allocated(&allocation, &payment, &invoice, effect.invoice_status));
                    allocated.push(allocation);
                }
                self.store.create_payment_record(&tx, &mut payment).await?;
                events.insert(0, events::payment_recorded(&payment));
                let entry = AuditEntry { events, ..payment_entry("payment.record", &payment, &allocated) };
                Ok((payment, entry))
            })
            .await?;
            Ok(paid.without_asking(&method.plugin))
        }
        .await;
        self.payment_or_replay(mutation, attempt).await
    }

    /// payInvoice: pays an OPEN invoice with a new payment (P3), recorded for a method that only
    /// records and charged through its plugin otherwise. Returns the payment's key, and the record
    /// as written when this request wrote it.
    pub async fn pay_invoice(&self, mutation: &Mutation<'_>, invoice_key: &str, request: PayInvoice) -> AppResult<Applied<NewPayment>> {
        let (method, invoice) = self.store.payment_method_and_invoice(mutation.tenant, &request.method, invoice_key).await?;
        let method = method.ok_or_else(|| AppError::not_found("payment method"))?;
        if !method.facts().records_only {
            let charged = self.charge_invoice(mutation, invoice_key, &request, false).await?;
            return Ok(charged.map(|key| NewPayment { key, row: None }));
        }
        let attempt = async {
            let invoice = invoice.ok_or_else(|| AppError::not_found("invoice"))?;
            let reference = self.checked_invoice_details(mutation, &invoice.doc.facts(), &invoice.doc.currency, &method, &request).await?;
            if !mutation.dry_run {
                return self.pay_together(mutation, invoice_key, &method, &request, reference).await;
            }
            let (method, request, reference) = (&method, &request, &reference);
            let paid = self
                .new_payment(mutation, &[record_lock("invoice", invoice_key)], |tx| async move {
                    let invoice = self.store.load_invoice(&tx, mutation.tenant, invoice_key).await?;
                    self.pay_in(&tx, mutation, &invoice, method, request, reference.clone()).await
                })
                .await?;
            Ok(paid.without_asking(&method.plugin))
        }
        .await;
        self.payment_or_replay(mutation, attempt).await
    }

    /// finalizeInvoice with APPLY_PAYMENT (I2): finalizes a draft and pays it with a new recorded
    /// payment in the same transaction, so either both happen or neither does. Returns the
    /// invoice's key.
    pub async fn finalize_and_record(&self, mutation: &Mutation<'_>, invoice_key: &str, request: PayInvoice) -> AppResult<Applied<String>> {
        if let Some(key) = self.store.replay::<String>(mutation).await? {
            return Ok(replayed(mutation, key));
        }
        let method = self.method(mutation, &request.method).await?;
        let invoice = self.store.invoice(mutation.tenant, invoice_key).await?.ok_or_else(|| AppError::not_found("invoice"))?;
        // The finalize's own rules come first (I2); the payment is then decided on the invoice as
        // it will be once finalized: OPEN, owing its total.
        let mut facts = invoice.doc.facts();
        crate::ledger::invoice::check_finalize(&facts)?;
        facts.status = InvoiceStatus::Open;
        let reference = self.checked_invoice_details(mutation, &facts, &invoice.doc.currency, &method, &request).await?;
        let keys = [tenant_lock(mutation.tenant), record_lock("invoice", invoice_key)];
        let turns = self.store.locks().lock_all(&keys).await;
        let written = Written::default();
        let (written_ref, method_ref, request, reference) = (&written, &method, &request, &reference);
        let applied = self
            .store
            .apply(mutation, |tx| async move {
                let (invoice, entry) = self.finalize_in(&tx, mutation, invoice_key).await?;
                // A draft that owes nothing is PAID once finalized and takes no payment.
                if invoice.doc.facts().status != InvoiceStatus::Open {
                    return Ok((invoice_key.to_owned(), entry));
                }
                let (payment, paid) = self.pay_in(&tx, mutation, &invoice, method_ref, request, reference.clone()).await?;
                written_ref.set(&payment);
                let entry = AuditEntry {
                    action: "invoice.finalize_and_pay".into(),
                    records: entry.records.into_iter().chain(paid.records).collect(),
                    after: Some(serde_json::json!({"invoice": entry.after, "payment": paid.after})),
                    events: entry.events.into_iter().chain(paid.events).collect(),
                    ..entry
                };
                Ok((invoice_key.to_owned(), entry))
            })
            .await?;
        drop(turns);
        let new_payment = written.take().filter(|_| matches!(applied, Applied::Done(_)));
        self.publish_and_number(mutation.tenant, new_payment.map(|payment| key_of(&payment.id))).await;
        Ok(applied.without_asking(&method.plugin))
    }

    /// finalizeInvoice with CHARGE (I2): charges the draft's total through the method's plugin and
    /// finalizes it when the charge succeeds. Returns the invoice's key.
    pub async fn finalize_and_charge(&self, mutation: &Mutation<'_>, invoice_key: &str, request: PayInvoice) -> AppResult<Applied<String>> {
        let charged = self.charge_invoice(mutation, invoice_key, &request, true).await?;
        Ok(charged.map(|_| invoice_key.to_owned()))
    }

    /// voidPayment: a payment with no active allocations and no refunds (V1). Final; it moves no
    /// money and leaves balances and totals (V2), but stays readable.
    pub async fn void_payment(&self, mutation: &Mutation<'_>, payment_key: &str, reason: Option<String>) -> AppResult<Applied<String>> {
        let store = &self.store;
        let turn = store.locks().lock(&record_lock("payment", payment_key)).await;
        let reason = &reason;
        let applied = store
            .apply(mutation, |tx| async move {
                let payment = store.load_payment(&tx, mutation.tenant, payment_key).await?;
                rules::check_void(&payment.doc.facts()?)?;
                store.write_payment_void(&tx, &payment, reason.clone()).await?;
                let after = PaymentDoc { void: true, ..payment.doc.clone() };
                let entry = AuditEntry {
                    events: vec![LedgerEvent::PaymentVoided { payment: payment_key.to_owned() }],
                    action: "payment.void".into(),
                    records: vec![format!("payment:{payment_key}")],
                    before: Some(payment_summary(&payment.doc)),
                    after: Some(payment_summary(&after)),
                    reason: reason.clone(),
                    ..AuditEntry::default()
                };
                Ok((payment_key.to_owned(), entry))
            })
            .await?;
        drop(turn);
        // Answers once the void is positioned, so the caller's next takings report leaves the
        // payment out (R1), as after every other payment change.
        self.publish(mutation.tenant).await;
        Ok(applied)
    }

    /// updatePayment: only the description and external reference change (P9); `None` keeps a
    /// field, `Some(None)` clears it.
    pub async fn update_payment(
        &self,
        mutation: &Mutation<'_>,
        payment_key: &str,
        description: Option<Option<String>>,
        external_reference: Option<Option<String>>,
    ) -> AppResult<Applied<String>> {
        let store = &self.store;
        let _turn = store.locks().lock(&record_lock("payment", payment_key)).await;
        let (description, external_reference) = (&description, &external_reference);
        store
            .apply(mutation, |tx| async move {
                let payment = store.load_payment(&tx, mutation.tenant, payment_key).await?;
                rules::check_update(&payment.doc.facts()?)?;
                let description = description.clone().unwrap_or_else(|| payment.doc.description.clone());
                let external_reference = external_reference.clone().unwrap_or_else(|| payment.doc.external_reference.clone());
                store.write_payment_details(&tx, &payment, description.clone(), external_reference.clone()).await?;
                let entry = AuditEntry {
                    events: vec![LedgerEvent::PaymentUpdated { payment: payment_key.to_owned() }],
                    action: "payment.update".into(),
                    records: vec![format!("payment:{payment_key}")],
                    before: Some(serde_json::json!({"description": payment.doc.description, "externalReference": payment.doc.external_reference})),
                    after: Some(serde_json::json!({"description": description, "externalReference": external_reference})),
                    ..AuditEntry::default()
                };
                Ok((payment_key.to_owned(), entry))
            })
            .await
    }

    /// Runs `body` (load, decide and write one new payment) in one transaction after taking the
    /// in-process turns of `locks`, then numbers the payment; returns it as written.
    async fn new_payment<F, Fut>(&self, mutation: &Mutation<'_>, locks: &[String], body: F) -> AppResult<Applied<NewPayment>>
    where
        F: Fn(TxRef) -> Fut,
        Fut: Future<Output = AppResult<(PaymentRow, AuditEntry)>>,
    {
        let turns = self.store.locks().lock_all(locks).await;
        // The body may run more than once (write conflicts); the attempt that committed is kept.
        let written = Written::default();
        let (written_ref, body) = (&written, &body);
        let applied = self
            .store
            .apply(mutation, |tx| async move {
                let (payment, entry) = body(tx).await?;
                written_ref.set(&payment);
                Ok((Claimed::Record(key_of(&payment.id)), entry))
            })
            .await?;
        drop(turns);
        match applied {
            Applied::Previewed(preview) => Ok(Applied::Previewed(preview)),
            Applied::Done(claimed) => {
                // Positions the change's events too (see `publish`).
                Ok(Applied::Done(self.store.number_new_payment(mutation.tenant, claimed.key(), written).await))
            }
        }
    }

    /// Load, decide and write a new recorded payment of `invoice` inside the caller's transaction.
    ///
    /// `method` is the one read before the transaction: the transaction does not read it again,
    /// because a read alone would not make a concurrent archiving conflict with this payment
    /// (SurrealDB checks write against write only), so reading it again would only cost a
    /// statement (docs/rules.md, Concurrency).
    pub(super) async fn pay_in(
        &self,
        tx: &TxRef,
        mutation: &Mutation<'_>,
        invoice: &InvoiceRow,
        method: &PaymentMethodRow,
        request: &PayInvoice,
        external_reference: Option<String>,
    ) -> AppResult<(PaymentRow, AuditEntry)> {
        let new = request.recorded(invoice, external_reference);
        self.store.check_payment_location(tx, mutation.tenant, invoice, &new.location).await?;
        let currency = Currency::parse(&invoice.doc.currency)?;
        let effect = rules::pay_invoice(&invoice.doc.facts(), currency, &method.facts(), request.amount)?;
        let (payment, allocated) = self.store.write_invoice_payment(tx, mutation, invoice, method, new, &effect, request.date).await?;
        let mut events = vec![events::payment_recorded(&payment)];
        for allocation in &allocated {
            events.extend(events::allocated(allocation, &payment, invoice, effect.allocation.invoice_status));
        }
        let entry = AuditEntry { events, ..payment_entry("payment.pay_invoice", &payment, &allocated) };
        Ok((payment, entry))
    }

    /// Decides the payment on `invoice` as it is before the transaction, then has the method's
    /// plugin check the payment's details for that amount.
    async fn checked_invoice_details(
        &self,
        mutation: &Mutation<'_>,
        invoice: &InvoiceFacts,
        currency: &str,
        method: &PaymentMethodRow,
        request: &PayInvoice,
    ) -> AppResult<Option<String>> {
        let effect = rules::pay_invoice(invoice, Currency::parse(currency)?, &method.facts(), request.amount)?;
        self.checked_details(mutation, method, effect.amount, &request.details).await
    }

    /// Has the method's plugin check a recorded payment's details (a cheque needs its number);
    /// returns the reference it gives. A dry-run calls no plugin (D1) and assumes the details
    /// pass.
    async fn checked_details(&self, mutation: &Mutation<'_>, method: &PaymentMethodRow, amount: Money, details: &serde_json::Value) -> AppResult<Option<String>> {
        if mutation.dry_run {
            return Ok(None);
        }
        self.charging.check_recorded_details(mutation, method, amount, details).await
    }

    async fn method(&self, mutation: &Mutation<'_>, key: &str) -> AppResult<PaymentMethodRow> {
        self.store.payment_method(mutation.tenant, key).await?.ok_or_else(|| AppError::not_found("payment method"))
    }

    /// The payment a recorded payment made. Checks before its transaction read state that the
    /// first of two identical requests changes (an invoice's balance is 0 once paid), so when
    /// they fail, a repeat of a request that already succeeded still gets the first result (X2);
    /// a repeat that passes them gets it from the idempotency gate in the transaction.
    async fn payment_or_replay(&self, mutation: &Mutation<'_>, attempt: AppResult<Applied<NewPayment>>) -> AppResult<Applied<NewPayment>> {
        match attempt {
            Ok(payment) => Ok(payment),
            Err(error) => match self.store.replay::<Claimed>(mutation).await? {
                Some(claimed) => {
                    let key = claimed.key();
                    if !mutation.dry_run {
                        // The first request may have been answered by another process that has
                        // not numbered the payment yet; the replay answers it numbered.
                        self.store.number_payment(mutation.tenant, key.clone()).await;
                    }
                    Ok(replayed(mutation, NewPayment { key, row: None }))
                }
                None => Err(error),
            },
        }
    }
}

/// The answer to a request the idempotency gate has seen before: its first result, or for a
/// dry-run, a preview saying so.
fn replayed<T>(mutation: &Mutation<'_>, first: T) -> Applied<T> {
    if mutation.dry_run { Applied::Previewed(crate::store::preview::Preview::replay()) } else { Applied::Done(first) }
}
