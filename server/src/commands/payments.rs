//! New payments (P1, P2, P3, I2): a standalone recorded payment, and paying an invoice with a new
//! payment, recorded for a method whose plugin only records and charged through the plugin for
//! any other (never above the balance).
//!
//! A recorded payment is decided twice: once before the transaction, because the method's plugin
//! checks the payment's details (a cheque number) for the decided amount and a plugin is never
//! called inside a transaction; and again inside the transaction, on the facts it commits against.
//!
//! Each new payment records its ledger events with its audit event (E1): PAYMENT_RECORDED, then
//! for each allocation PAYMENT_ALLOCATED and, when the allocation changed the invoice's status,
//! INVOICE_STATUS_CHANGED; a finalize with APPLY_PAYMENT starts with INVOICE_FINALIZED. Once its
//! turns are released a command has its events positioned and published before it answers (E2).

use std::future::Future;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::Commands;
use crate::error::{AppError, AppResult};
use crate::events::LedgerEvent;
use crate::ledger::{Currency, Money};
use crate::ledger::invoice::{InvoiceFacts, InvoiceStatus};
use crate::ledger::payment::{self as rules};
use crate::store::TxRef;
use crate::store::audit::{AuditEntry, Mutation};
use crate::store::charges::ChargeDraft;
use crate::store::invoices::read_invoice;
use crate::store::locks::{record_lock, tenant_lock};
use crate::store::payments::{NewPayment, NewRecordedPayment, Written, new_payment_row, payment_entry};
use crate::store::rows::{InvoiceRow, PaymentMethodRow, PaymentRow, key_of};

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
    fn charge(&self, finalize: bool) -> ChargeDraft {
        ChargeDraft {
            method: self.method.clone(),
            amount: self.amount,
            date: self.date,
            location: self.location.clone(),
            description: self.description.clone(),
            details: self.details.clone(),
            finalize,
        }
    }

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
    pub async fn record_payment(&self, mutation: &Mutation<'_>, request: RecordPayment) -> AppResult<NewPayment> {
        let attempt = async {
            let method = self.method(mutation, &request.method).await?;
            let settings = self.store.tenant(mutation.tenant).await?;
            let currency = Currency::parse(request.currency.as_deref().unwrap_or(&settings.currency))?;
            // Decided before the plugin sees the details (it needs the amount); again in the
            // transaction.
            let amount = rules::new_recorded_payment(&method.facts(), request.amount, currency)?;
            let reference = self.charging.check_recorded_details(mutation, &method, amount, &request.details).await?;
            let locks: Vec<String> = request.allocations.iter().map(|(invoice, _)| record_lock("invoice", invoice)).collect();
            let (request, reference) = (&request, &reference);
            self.new_payment(mutation, &locks, |tx| async move {
                let currency = self.store.currency_in(&tx, mutation.tenant, request.currency.as_deref()).await?;
                let method = self.store.payment_records(&tx, mutation.tenant, &request.method, &request.client, &request.location).await?;
                let amount = rules::new_recorded_payment(&method.facts(), request.amount, currency)?;
                let new = NewRecordedPayment {
                    location: request.location.clone(),
                    date: request.date,
                    description: request.description.clone(),
                    external_reference: reference.clone(),
                };
                let mut payment = new_payment_row(mutation.tenant, &request.client, &method, new, amount.amount(), currency.code());
                let mut allocated = Vec::new();
                let mut made = Vec::new();
                for (invoice_key, amount) in &request.allocations {
                    let invoice = read_invoice(&tx, &self.store, mutation.tenant, invoice_key).await?;
                    let amount = Money::from_decimal(*amount, Currency::parse(&invoice.doc.currency)?)?.require_positive()?;
                    let effect =
                        rules::allocate(&payment.doc.facts(), &invoice.doc.facts(), &invoice.doc.client, &invoice.doc.currency, amount.amount())?;
                    allocated.push(self.store.write_allocation(&tx, mutation, &mut payment, &invoice, &effect, request.date).await?);
                    made.push(AllocationMade::of(&invoice, effect.amount, effect.invoice_status));
                }
                self.store.create_payment_record(&tx, &payment).await?;
                let entry = payment_entry("payment.record", &payment, &allocated);
                let events = payment_events(&payment, &entry, made)?;
                Ok((payment, AuditEntry { events, ..entry }))
            })
            .await
        }
        .await;
        self.payment_or_replay(mutation, attempt).await
    }

    /// payInvoice: pays an OPEN invoice with a new payment (P3). Returns the payment's key, and
    /// the record as written when this request wrote it.
    pub async fn pay_invoice(&self, mutation: &Mutation<'_>, invoice_key: &str, request: PayInvoice) -> AppResult<NewPayment> {
        let method = self.method(mutation, &request.method).await?;
        if !method.facts().records_only {
            let key = self.charge_invoice(mutation, invoice_key, &request, false).await?;
            return Ok(NewPayment { key, row: None });
        }
        let attempt = async {
            let invoice = self.store.invoice(mutation.tenant, invoice_key).await?.ok_or_else(|| AppError::not_found("invoice"))?;
            let reference = self.checked_details(mutation, &invoice.doc.facts(), &invoice.doc.currency, &method, &request).await?;
            let (request, reference) = (&request, &reference);
            self.new_payment(mutation, &[record_lock("invoice", invoice_key)], |tx| async move {
                let invoice = read_invoice(&tx, &self.store, mutation.tenant, invoice_key).await?;
                self.pay_in(&tx, mutation, &invoice, request, reference.clone()).await
            })
            .await
        }
        .await;
        self.payment_or_replay(mutation, attempt).await
    }

    /// finalizeInvoice with APPLY_PAYMENT (I2): finalizes a draft and pays it with a new recorded
    /// payment in the same transaction, so either both happen or neither does. Returns the
    /// invoice's key.
    pub async fn finalize_and_record(&self, mutation: &Mutation<'_>, invoice_key: &str, request: PayInvoice) -> AppResult<String> {
        if let Some(key) = self.store.replay::<String>(mutation).await? {
            return Ok(key);
        }
        let method = self.method(mutation, &request.method).await?;
        let invoice = self.store.invoice(mutation.tenant, invoice_key).await?.ok_or_else(|| AppError::not_found("invoice"))?;
        // The finalize's own rules come first (I2); the payment is then decided on the invoice as
        // it will be once finalized: OPEN, owing its total.
        let mut facts = invoice.doc.facts();
        crate::ledger::invoice::check_finalize(&facts)?;
        facts.status = InvoiceStatus::Open;
        let reference = self.checked_details(mutation, &facts, &invoice.doc.currency, &method, &request).await?;
        let keys = [tenant_lock(mutation.tenant), record_lock("invoice", invoice_key)];
        let turns = self.store.locks().lock_all(&keys).await;
        let written = Written::default();
        let (written_ref, request, reference) = (&written, &request, &reference);
        let key = self
            .store
            .mutate(mutation, |tx| async move {
                let (invoice, mut entry) = self.store.finalize_in(&tx, mutation, invoice_key).await?;
                let finalized = finalize_events(invoice_key, std::mem::take(&mut entry.events), &invoice);
                // A draft that owes nothing is PAID once finalized and takes no payment.
                if invoice.doc.facts().status != InvoiceStatus::Open {
                    return Ok((invoice_key.to_owned(), AuditEntry { events: finalized, ..entry }));
                }
                let (payment, paid) = self.pay_in(&tx, mutation, &invoice, request, reference.clone()).await?;
                written_ref.set(&payment);
                let entry = AuditEntry {
                    action: "invoice.finalize_and_pay".into(),
                    records: entry.records.into_iter().chain(paid.records).collect(),
                    after: Some(serde_json::json!({"invoice": entry.after, "payment": paid.after})),
                    events: finalized.into_iter().chain(paid.events).collect(),
                    ..entry
                };
                Ok((invoice_key.to_owned(), entry))
            })
            .await?;
        drop(turns);
        let numbered = async {
            if let Some(payment) = written.take() {
                self.store.number_payment(mutation.tenant, key_of(&payment.id)).await;
            }
        };
        tokio::join!(numbered, self.store.position_events(mutation.tenant));
        Ok(key)
    }

    /// finalizeInvoice with CHARGE (I2): charges the draft's total through the method's plugin and
    /// finalizes it when the charge succeeds. Returns the invoice's key.
    pub async fn finalize_and_charge(&self, mutation: &Mutation<'_>, invoice_key: &str, request: PayInvoice) -> AppResult<String> {
        self.charge_invoice(mutation, invoice_key, &request, true).await?;
        Ok(invoice_key.to_owned())
    }

    /// Runs `body` (load, decide and write one new payment) in one transaction after taking the
    /// in-process turns of `locks`, then numbers the payment and positions its ledger events;
    /// returns it as written.
    async fn new_payment<F, Fut>(&self, mutation: &Mutation<'_>, locks: &[String], body: F) -> AppResult<NewPayment>
    where
        F: Fn(TxRef) -> Fut,
        Fut: Future<Output = AppResult<(PaymentRow, AuditEntry)>>,
    {
        let turns = self.store.locks().lock_all(locks).await;
        // The body may run more than once (write conflicts); the attempt that committed is kept.
        let written = Written::default();
        let (written_ref, body) = (&written, &body);
        let key = self
            .store
            .mutate(mutation, |tx| async move {
                let (payment, entry) = body(tx).await?;
                written_ref.set(&payment);
                Ok((key_of(&payment.id), entry))
            })
            .await?;
        drop(turns);
        let (payment, ()) =
            tokio::join!(self.store.number_new_payment(mutation.tenant, key, written), self.store.position_events(mutation.tenant));
        Ok(payment)
    }

    /// Load, decide and write a new recorded payment of `invoice` inside the caller's transaction;
    /// returns it with its audit entry and ledger events.
    async fn pay_in(
        &self,
        tx: &TxRef,
        mutation: &Mutation<'_>,
        invoice: &InvoiceRow,
        request: &PayInvoice,
        external_reference: Option<String>,
    ) -> AppResult<(PaymentRow, AuditEntry)> {
        let new = request.recorded(invoice, external_reference);
        let method = self.store.invoice_payment_records(tx, mutation.tenant, invoice, &request.method, &new.location).await?;
        let currency = Currency::parse(&invoice.doc.currency)?;
        let effect = rules::pay_invoice(&invoice.doc.facts(), currency, &method.facts(), request.amount)?;
        let (payment, allocated) = self.store.write_invoice_payment(tx, mutation, invoice, &method, new, &effect, request.date).await?;
        // The store allocates only a positive amount (a payment of an invoice that owes nothing
        // is all credit).
        let made = if effect.allocation.amount > Decimal::ZERO {
            vec![AllocationMade::of(invoice, effect.allocation.amount, effect.allocation.invoice_status)]
        } else {
            Vec::new()
        };
        let entry = payment_entry("payment.pay_invoice", &payment, &allocated);
        let events = payment_events(&payment, &entry, made)?;
        Ok((payment, AuditEntry { events, ..entry }))
    }

    /// Decides the payment on `invoice` as it is before the transaction, then has the method's
    /// plugin check the payment's details for that amount; returns the reference the plugin
    /// gives (a cheque number).
    async fn checked_details(
        &self,
        mutation: &Mutation<'_>,
        invoice: &InvoiceFacts,
        currency: &str,
        method: &PaymentMethodRow,
        request: &PayInvoice,
    ) -> AppResult<Option<String>> {
        let effect = rules::pay_invoice(invoice, Currency::parse(currency)?, &method.facts(), request.amount)?;
        self.charging.check_recorded_details(mutation, method, effect.amount, &request.details).await
    }

    /// A charge through the method's plugin; a repeated request is answered before anything is
    /// sent.
    async fn charge_invoice(&self, mutation: &Mutation<'_>, invoice_key: &str, request: &PayInvoice, finalize: bool) -> AppResult<String> {
        if let Some(key) = self.store.replay::<String>(mutation).await? {
            return Ok(key);
        }
        self.charging.charge_invoice(mutation, invoice_key, request.charge(finalize)).await
    }

    async fn method(&self, mutation: &Mutation<'_>, key: &str) -> AppResult<PaymentMethodRow> {
        self.store.payment_method(mutation.tenant, key).await?.ok_or_else(|| AppError::not_found("payment method"))
    }

    /// The key of the payment a recorded payment made. Checks before its transaction read state
    /// that the first of two identical requests changes (an invoice's balance is 0 once paid), so
    /// when they fail, a repeat of a request that already succeeded still gets the first result
    /// (X2); a repeat that passes them gets it from the transaction's own key check.
    async fn payment_or_replay(&self, mutation: &Mutation<'_>, attempt: AppResult<NewPayment>) -> AppResult<NewPayment> {
        match attempt {
            Ok(payment) => Ok(payment),
            Err(error) => match self.store.replay::<String>(mutation).await? {
                Some(key) => Ok(NewPayment { key, row: None }),
                None => Err(error),
            },
        }
    }
}

/// An allocation a new payment made, as its ledger events need it.
struct AllocationMade {
    invoice: String,
    amount: Decimal,
    currency: String,
    /// INVOICE_STATUS_CHANGED when the allocation changed the invoice's status (I3).
    status_changed: Option<LedgerEvent>,
}

impl AllocationMade {
    fn of(invoice: &InvoiceRow, amount: Decimal, status_after: InvoiceStatus) -> AllocationMade {
        let key = key_of(&invoice.id);
        AllocationMade {
            status_changed: LedgerEvent::invoice_status_changed(&key, invoice.doc.facts().status, status_after),
            invoice: key,
            amount,
            currency: invoice.doc.currency.clone(),
        }
    }
}

/// The ledger events of a new payment (E1): PAYMENT_RECORDED, then for each allocation
/// PAYMENT_ALLOCATED and any INVOICE_STATUS_CHANGED it caused, in the order they were written.
/// The allocations' keys are read from the audit entry's records, where the store lists them in
/// the order it wrote them.
fn payment_events(payment: &PaymentRow, entry: &AuditEntry, made: Vec<AllocationMade>) -> AppResult<Vec<LedgerEvent>> {
    let payment_key = key_of(&payment.id);
    let allocation_keys: Vec<&str> = entry.records.iter().filter_map(|record| record.strip_prefix("allocation:")).collect();
    if allocation_keys.len() != made.len() {
        return Err(AppError::internal(format!(
            "payment {payment_key}: {} allocations written, {} in its audit entry",
            made.len(),
            allocation_keys.len()
        )));
    }
    let mut events = vec![LedgerEvent::PaymentRecorded {
        payment: payment_key.clone(),
        client: payment.doc.client.clone(),
        amount: payment.doc.amount,
        currency: payment.doc.currency.clone(),
    }];
    for (allocation, made) in allocation_keys.into_iter().zip(made) {
        events.push(LedgerEvent::PaymentAllocated {
            allocation: allocation.to_owned(),
            payment: payment_key.clone(),
            invoice: made.invoice,
            amount: made.amount,
            currency: made.currency,
        });
        events.extend(made.status_changed);
    }
    Ok(events)
}

/// The ledger events of finalizing `invoice` (now finalized): INVOICE_FINALIZED, and
/// INVOICE_STATUS_CHANGED from OPEN to PAID when it owes nothing (I2, I3). `from_finalize` are
/// the events the finalize itself reported; once it reports its own, they are taken as they are.
fn finalize_events(invoice_key: &str, from_finalize: Vec<LedgerEvent>, invoice: &InvoiceRow) -> Vec<LedgerEvent> {
    if !from_finalize.is_empty() {
        return from_finalize;
    }
    let mut events = vec![LedgerEvent::InvoiceFinalized { invoice: invoice_key.to_owned() }];
    events.extend(LedgerEvent::invoice_status_changed(invoice_key, InvoiceStatus::Open, invoice.doc.facts().status));
    events
}
