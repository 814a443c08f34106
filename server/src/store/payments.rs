//! Payments, allocations, refunds and voids: each a single transaction that reads the balances it
//! relies on, lets the ledger decide, and writes every record holding those balances, so that
//! concurrent requests conflict rather than overspend (P7, F1, M4).

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use surrealdb::types::{Array, RecordId, RecordIdKey, SurrealValue, Value};

use super::audit::{AuditEntry, Mutation};
use super::directory::{Owned, read_owned};
use super::invoices::{date_string, parse_date, status_str};
use super::rows::{AllocationRow, InvoiceRow, LocationRow, PartyRow, PaymentDoc, PaymentMethodRow, PaymentRow, RefundRow, key_of, new_key, page_key, record};
use super::tenants::read_tenant;
use super::{ListFilter, Store, TxRef, Vars};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::ledger::numbering::format_number;
use crate::ledger::reports::{TakingsChange, TakingsPlace};
use crate::ledger::payment::{AllocationEffect, RemovalEffect, AllocationState, InvoicePaymentEffect, MethodFacts, PaymentFacts, PaymentStatus};
use crate::ledger::Currency;

/// The plugin that only records payments (cash, EFTPOS, cheque, direct deposit, other).
pub const MANUAL_PLUGIN: &str = "manual";

/// What a new recorded payment takes from its request, besides its method and amount.
#[derive(Debug, Clone)]
pub struct NewRecordedPayment {
    pub location: String,
    pub date: NaiveDate,
    pub description: Option<String>,
    /// What the method's plugin returned as reference (a cheque number, ...).
    pub external_reference: Option<String>,
}

/// The record of a new payment: no number yet and nothing allocated.
pub(crate) fn new_payment_row(mutation: &Mutation<'_>, client: &str, method: &PaymentMethodRow, new: NewRecordedPayment, amount: Decimal, currency: &str) -> PaymentRow {
    let tenant = mutation.tenant;
    let now = Utc::now();
    let key = new_key();
    let doc = PaymentDoc {
        tenant: tenant.as_str().to_owned(),
        page_key: page_key(tenant.as_str(), &key),
        key: key.clone(),
        number: None,
        client: client.to_owned(),
        location: new.location,
        method: key_of(&method.id),
        method_name: method.name.clone(),
        plugin: method.plugin.clone(),
        date: date_string(new.date),
        amount,
        currency: currency.to_owned(),
        description: new.description,
        external_reference: new.external_reference,
        charge_reference: None,
        allocated: Decimal::ZERO,
        refunded: Decimal::ZERO,
        refund_pending: Decimal::ZERO,
        allocation_count: 0,
        void: false,
        voided_at: None,
        void_reason: None,
        created_at: now,
        updated_at: now,
        created_by: Some(mutation.actor.to_owned()),
    };
    PaymentRow { id: record("payment", &key), doc }
}

/// A payment a mutation made: its key, and the record as this call wrote and numbered it. The
/// record is None when the request repeated an earlier one or numbering is still to happen; the
/// caller then reads the payment back.
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub key: String,
    pub row: Option<PaymentRow>,
}

/// The payment a transaction body wrote, kept across retries of the body: only the attempt that
/// committed counts, and it is the one whose key the mutation returns.
#[derive(Default)]
pub struct Written(std::sync::Mutex<Option<PaymentRow>>);

impl Written {
    pub fn set(&self, row: &PaymentRow) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(row.clone());
    }

    pub fn take(self) -> Option<PaymentRow> {
        self.0.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    fn take_for(self, key: &str) -> Option<PaymentRow> {
        self.take().filter(|row| key_of(&row.id) == key)
    }
}

/// Which allocations to list.
#[derive(Debug, Clone, Default)]
pub struct AllocationFilter {
    pub client: Option<String>,
    pub payment: Option<String>,
    pub invoice: Option<String>,
    /// true: active ones only; false: removed ones only.
    pub active: Option<bool>,
    /// The day it was made, on or after.
    pub from: Option<NaiveDate>,
    /// The day it was made, on or before.
    pub to: Option<NaiveDate>,
}

/// Which refunds to list.
#[derive(Debug, Clone, Default)]
pub struct RefundFilter {
    pub client: Option<String>,
    pub payment: Option<String>,
    /// As stored: SUCCEEDED, DECLINED or PENDING.
    pub outcome: Option<&'static str>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

/// Which payments to list.
#[derive(Debug, Clone, Default)]
pub struct PaymentFilter {
    pub client: Option<String>,
    pub method: Option<String>,
    pub location: Option<String>,
    pub status: Option<PaymentStatus>,
    pub allocation_state: Option<AllocationState>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl PaymentDoc {
    /// Where this payment's money counts in takings (R1) on `date`: its own date, or a refund's.
    pub fn takings_place<'a>(&'a self, date: &str) -> TakingsPlace<'a> {
        TakingsPlace { date: parse_date(date), method: &self.method, location: &self.location, currency: &self.currency }
    }

    /// What the payment rules need; fails only for a currency no Settle writes.
    pub fn facts(&self) -> AppResult<PaymentFacts> {
        Ok(PaymentFacts {
            client: self.client.clone(),
            currency: Currency::parse(&self.currency)?,
            amount: self.amount,
            allocated: self.allocated,
            refunded: self.refunded,
            refund_pending: self.refund_pending,
            void: self.void,
        })
    }

    /// Whether its method's plugin only records payments (cash, cheque, ...) rather than
    /// taking them through a gateway.
    pub fn records_only(&self) -> bool {
        self.plugin == MANUAL_PLUGIN
    }

    /// PAY-0001, or None in the moment between commit and numbering.
    pub fn display_number(&self) -> Option<String> {
        self.number.map(|n| format_number("PAY", n))
    }
}

impl PaymentMethodRow {
    pub fn facts(&self) -> MethodFacts {
        MethodFacts { name: self.name.clone(), archived: self.archived, records_only: self.plugin == MANUAL_PLUGIN }
    }
}

impl Owned for PaymentRow {
    fn tenant(&self) -> &str {
        &self.doc.tenant
    }
}

impl Owned for PaymentMethodRow {
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl Owned for AllocationRow {
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

pub(super) fn counter_record(tenant: &TenantId, kind: &str) -> RecordId {
    let parts = Array::from(vec![Value::String(tenant.as_str().to_owned()), Value::String(kind.to_owned())]);
    RecordId::new("counter", RecordIdKey::Array(parts))
}

/// Takes the next number of a tenant's sequence `kind`; the counter record is written in the
/// caller's transaction, so two takers of one number conflict and one runs again.
pub(super) async fn next_number(tx: &TxRef, tenant: &TenantId, kind: &str) -> AppResult<i64> {
    next_numbers(tx, tenant, kind, 1).await
}

/// Takes `count` consecutive numbers of a sequence; returns the first.
pub(super) async fn next_numbers(tx: &TxRef, tenant: &TenantId, kind: &str, count: i64) -> AppResult<i64> {
    // One statement reads and advances the counter: a sequence that has not started yet starts
    // at 1.
    let mut found = tx
        .query(
            "UPSERT ONLY $id SET next = (next ?? 1) + $count RETURN VALUE $before.next",
            Vars::new().set("id", counter_record(tenant, kind)).set("count", count),
        )
        .await?;
    Ok(match found.value(0)? {
        Value::Number(number) => number.to_int().unwrap_or(1),
        _ => 1,
    })
}

/// Sets the tenant's sequence `kind` back so that `next` is the next number it gives, in the
/// caller's transaction: numbers taken by that transaction and not used are given again.
pub(super) async fn return_numbers(tx: &TxRef, tenant: &TenantId, kind: &str, next: i64) -> AppResult<()> {
    tx.query("UPSERT $id SET next = $next RETURN NONE", Vars::new().set("id", counter_record(tenant, kind)).set("next", next)).await?;
    Ok(())
}

pub(crate) fn payment_summary(doc: &PaymentDoc) -> serde_json::Value {
    serde_json::json!({
        "number": doc.display_number(),
        "amount": doc.amount.to_string(),
        "allocated": doc.allocated.to_string(),
        "refunded": doc.refunded.to_string(),
        "currency": doc.currency,
        "void": doc.void,
    })
}


/// A new allocation's stored fields, as written.
#[derive(SurrealValue)]
struct AllocationDoc {
    tenant: String,
    page_key: String,
    sequence: i64,
    payment: String,
    invoice: String,
    client: String,
    amount: Decimal,
    currency: String,
    date: String,
    active: bool,
    created_at: DateTime<Utc>,
    created_by: String,
}

/// One allocation made inside a transaction, for the audit trail.
pub struct Allocated {
    pub key: String,
    pub invoice: String,
    pub amount: Decimal,
}

impl Store {
    /// The records a standalone payment names, read in the caller's transaction in one round
    /// trip: its method (returned), client and location, each the tenant's (A3).
    pub(crate) async fn payment_records(
        &self,
        tx: &TxRef,
        tenant: &TenantId,
        method_key: &str,
        client_key: &str,
        location_key: &str,
    ) -> AppResult<PaymentMethodRow> {
        let mut found = tx
            .query(
                "SELECT * FROM ONLY $method; SELECT * FROM ONLY $client; SELECT * FROM ONLY $location;",
                Vars::new()
                    .set("method", record("payment_method", method_key))
                    .set("client", record("client", client_key))
                    .set("location", record("location", location_key)),
            )
            .await?;
        let tenant = tenant.as_str();
        let method =
            found.first::<PaymentMethodRow>(0)?.filter(|m| m.tenant == tenant).ok_or_else(|| AppError::not_found("payment method"))?;
        found.first::<PartyRow>(1)?.filter(|c| c.tenant == tenant).ok_or_else(|| AppError::not_found("client"))?;
        found.first::<LocationRow>(2)?.filter(|l| l.tenant == tenant).ok_or_else(|| AppError::not_found("location"))?;
        Ok(method)
    }

    /// The currency of a new payment, read in the caller's transaction: the one asked for, else
    /// the tenant's.
    pub(crate) async fn currency_in(&self, tx: &TxRef, tenant: &TenantId, asked: Option<&str>) -> AppResult<Currency> {
        match asked {
            Some(code) => Ok(Currency::parse(code)?),
            None => {
                let settings = read_tenant(tx, tenant).await?.ok_or_else(|| AppError::not_found("tenant"))?;
                Ok(Currency::parse(&settings.currency)?)
            }
        }
    }

    /// The method a new payment for `invoice` names, read in the caller's transaction, and its
    /// location when that is not the invoice's own: each must be the tenant's (A3).
    pub(crate) async fn invoice_payment_records(
        &self,
        tx: &TxRef,
        tenant: &TenantId,
        invoice: &InvoiceRow,
        method_key: &str,
        location_key: &str,
    ) -> AppResult<PaymentMethodRow> {
        let mut found = tx.query("SELECT * FROM ONLY $method", Vars::new().set("method", record("payment_method", method_key))).await?;
        let method = found
            .first::<PaymentMethodRow>(0)?
            .filter(|m| m.tenant == tenant.as_str())
            .ok_or_else(|| AppError::not_found("payment method"))?;
        self.check_payment_location(tx, tenant, invoice, location_key).await?;
        Ok(method)
    }

    /// Checks, in the caller's transaction, the location a new payment for `invoice` names when
    /// it is not the invoice's own: it must be the tenant's (A3).
    pub(crate) async fn check_payment_location(&self, tx: &TxRef, tenant: &TenantId, invoice: &InvoiceRow, location_key: &str) -> AppResult<()> {
        if invoice.doc.location == location_key {
            return Ok(());
        }
        let mut found = tx.query("SELECT * FROM ONLY $location", Vars::new().set("location", record("location", location_key))).await?;
        found.first::<LocationRow>(0)?.filter(|l| l.tenant == tenant.as_str()).ok_or_else(|| AppError::not_found("location"))?;
        Ok(())
    }

    /// Writes a new payment for `invoice` as decided (P3): its allocation, the invoice's new sums
    /// and status, and the payment with its final sums, all in the caller's transaction.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn write_invoice_payment(
        &self,
        tx: &TxRef,
        mutation: &Mutation<'_>,
        invoice: &InvoiceRow,
        method: &PaymentMethodRow,
        new: NewRecordedPayment,
        effect: &InvoicePaymentEffect,
        today: NaiveDate,
    ) -> AppResult<(PaymentRow, Vec<Allocated>)> {
        let mut payment = new_payment_row(mutation, &invoice.doc.client, method, new, effect.amount.amount(), &invoice.doc.currency);
        let mut allocated = Vec::new();
        if effect.allocation.amount > Decimal::ZERO {
            allocated.push(self.write_allocation(tx, mutation, &mut payment, invoice, &effect.allocation, today).await?);
        }
        self.create_payment_record(tx, &mut payment).await?;
        Ok((payment, allocated))
    }

    /// Writes an allocation as decided: the allocation record and the invoice's new sums and
    /// status; updates `payment` in memory for the caller to write.
    pub(crate) async fn write_allocation(
        &self,
        tx: &TxRef,
        mutation: &Mutation<'_>,
        payment: &mut PaymentRow,
        invoice: &InvoiceRow,
        effect: &AllocationEffect,
        today: NaiveDate,
    ) -> AppResult<Allocated> {
        let invoice_key = key_of(&invoice.id);
        let sequence = payment.doc.allocation_count + 1;
        let key = new_key();
        let doc = AllocationDoc {
            tenant: mutation.tenant.as_str().to_owned(),
            page_key: page_key(mutation.tenant.as_str(), &key),
            sequence,
            payment: key_of(&payment.id),
            invoice: invoice_key.clone(),
            client: invoice.doc.client.clone(),
            amount: effect.amount,
            currency: invoice.doc.currency.clone(),
            date: date_string(today),
            active: true,
            created_at: Utc::now(),
            created_by: mutation.actor.to_owned(),
        };
        // The allocation as one document: SurrealDB evaluates each field of a SET on its own.
        let allocation = vec![(record("allocation", &key), doc.into_value())];
        let status = status_str(effect.invoice_status).to_owned();
        if tx.gathers_writes() {
            let mut changed = invoice.clone();
            changed.doc.paid = effect.invoice_paid;
            changed.doc.active_allocations += 1;
            changed.doc.status = status;
            tx.invoice_changed(changed)?;
            tx.create_then(allocation, "", Vars::new()).await?;
        } else {
            tx.create_then(
                allocation,
                "UPDATE $invoice_id SET paid = $paid, active_allocations += 1, status = $status, updated_at = time::now() RETURN NONE;",
                Vars::new().set("invoice_id", invoice.id.clone()).set("paid", effect.invoice_paid).set("status", status),
            )
            .await?;
        }
        payment.doc.allocated = effect.payment_allocated;
        payment.doc.allocation_count = sequence;
        Ok(Allocated { key, invoice: invoice_key, amount: effect.amount })
    }

    /// A payment of the tenant, read in the caller's transaction.
    pub(crate) async fn load_payment(&self, tx: &TxRef, tenant: &TenantId, key: &str) -> AppResult<PaymentRow> {
        read_owned::<PaymentRow>(Some(tx), self, tenant, "payment", key).await?.ok_or_else(|| AppError::not_found("payment"))
    }

    /// An allocation of the tenant, read in the caller's transaction.
    pub(crate) async fn load_allocation(&self, tx: &TxRef, tenant: &TenantId, key: &str) -> AppResult<AllocationRow> {
        read_owned::<AllocationRow>(Some(tx), self, tenant, "allocation", key).await?.ok_or_else(|| AppError::not_found("allocation"))
    }

    /// Writes a removed allocation as decided (P6): marked removed with actor and time, and the
    /// invoice's new sums and status. The caller writes the payment's sums.
    pub(crate) async fn write_allocation_removed(
        &self,
        tx: &TxRef,
        mutation: &Mutation<'_>,
        allocation: &AllocationRow,
        invoice: &InvoiceRow,
        effect: &RemovalEffect,
    ) -> AppResult<()> {
        tx.query(
            "UPDATE $id SET active = false, removed_at = time::now(), removed_by = $actor RETURN NONE;
             UPDATE $invoice SET paid = $paid, active_allocations -= 1, status = $status, updated_at = time::now() RETURN NONE;",
            Vars::new()
                .set("id", allocation.id.clone())
                .set("actor", mutation.actor.to_owned())
                .set("invoice", invoice.id.clone())
                .set("paid", effect.invoice_paid)
                .set("status", status_str(effect.invoice_status).to_owned()),
        )
        .await?;
        Ok(())
    }

    /// Marks a payment void (V1, V2), as decided.
    pub(crate) async fn write_payment_void(&self, tx: &TxRef, payment: &PaymentRow, reason: Option<String>) -> AppResult<()> {
        tx.query(
            "UPDATE $id SET void = true, voided_at = time::now(), void_reason = $reason, updated_at = time::now() RETURN NONE",
            Vars::new().set("id", payment.id.clone()).set("reason", reason),
        )
        .await?;
        if !payment.doc.void {
            tx.takings_changed(TakingsChange::payment_voided(payment.doc.takings_place(&payment.doc.date), payment.doc.amount));
        }
        Ok(())
    }

    /// Writes a payment's two editable fields (P9).
    pub(crate) async fn write_payment_details(
        &self,
        tx: &TxRef,
        payment: &PaymentRow,
        description: Option<String>,
        external_reference: Option<String>,
    ) -> AppResult<()> {
        tx.query(
            "UPDATE $id SET description = $description, external_reference = $reference, updated_at = time::now() RETURN NONE",
            Vars::new().set("id", payment.id.clone()).set("description", description).set("reference", external_reference),
        )
        .await?;
        Ok(())
    }

    /// Writes a new payment with its sums. Its number is given after the commit (see
    /// [`super::numbering`]), or now when the transaction numbers what it writes itself.
    pub(crate) async fn create_payment_record(&self, tx: &TxRef, payment: &mut PaymentRow) -> AppResult<()> {
        payment.doc.number = tx.with_placing(super::numbering::Placing::payment_number);
        tx.create_then(vec![(payment.id.clone(), payment.doc.clone().into_value())], "", Vars::new()).await?;
        if !payment.doc.void {
            tx.takings_changed(TakingsChange::payment_recorded(payment.doc.takings_place(&payment.doc.date), payment.doc.amount));
        }
        Ok(())
    }

    /// Writes a refund record of `payment` with the given outcome (SUCCEEDED for a recorded
    /// refund, PENDING for one sent to a plugin); returns its key.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn create_refund_in(
        &self,
        tx: &TxRef,
        mutation: &Mutation<'_>,
        payment: &PaymentRow,
        amount: Decimal,
        date: NaiveDate,
        description: Option<String>,
        outcome: &str,
    ) -> AppResult<String> {
        let key = new_key();
        tx.query(
            "CREATE $id SET tenant = $tenant, page_key = $page_key, payment = $payment, client = $client, amount = $amount,
                currency = $currency, date = $date, description = $description, outcome = $outcome, plugin = $plugin,
                method = $method, location = $location, created_at = time::now(), created_by = $actor",
            Vars::new()
                .set("id", record("refund", &key))
                .set("tenant", mutation.tenant.as_str().to_owned())
                .set("page_key", page_key(mutation.tenant.as_str(), &key))
                .set("payment", key_of(&payment.id))
                .set("client", payment.doc.client.clone())
                .set("amount", amount)
                .set("currency", payment.doc.currency.clone())
                .set("date", date_string(date))
                .set("description", description)
                .set("outcome", outcome.to_owned())
                .set("plugin", payment.doc.plugin.clone())
                .set("method", payment.doc.method.clone())
                .set("location", payment.doc.location.clone())
                .set("actor", mutation.actor.to_owned()),
        )
        .await?;
        if outcome == "SUCCEEDED" {
            tx.takings_changed(TakingsChange::refund_succeeded(payment.doc.takings_place(&date_string(date)), amount));
        }
        Ok(key)
    }

    pub(crate) async fn write_payment_sums(&self, tx: &TxRef, payment: &PaymentRow) -> AppResult<()> {
        tx.query(
            "UPDATE $id SET allocated = $allocated, refunded = $refunded, allocation_count = $count, updated_at = time::now() RETURN NONE",
            Vars::new()
                .set("id", payment.id.clone())
                .set("allocated", payment.doc.allocated)
                .set("refunded", payment.doc.refunded)
                .set("count", payment.doc.allocation_count),
        )
        .await?;
        Ok(())
    }

    /// Numbers a payment just committed (see [`super::numbering`]) and gives it back as written.
    pub(crate) async fn number_new_payment(&self, tenant: &TenantId, key: String, written: Written) -> NewPayment {
        let written = written.take_for(&key);
        if let Some(row) = written.as_ref().filter(|row| row.doc.number.is_some()) {
            // Numbered in its own transaction, and its events published with the commit.
            return NewPayment { key, row: Some(row.clone()) };
        }
        let number = self.number_payment(tenant, key.clone()).await;
        let row = written.zip(number).map(|(mut row, number)| {
            row.doc.number = Some(number);
            row
        });
        NewPayment { key, row }
    }

    pub async fn payment(&self, tenant: &TenantId, key: &str) -> AppResult<Option<PaymentRow>> {
        read_owned(None, self, tenant, "payment", key).await
    }

    pub async fn allocation(&self, tenant: &TenantId, key: &str) -> AppResult<Option<AllocationRow>> {
        read_owned(None, self, tenant, "allocation", key).await
    }

    pub async fn payment_method(&self, tenant: &TenantId, key: &str) -> AppResult<Option<PaymentMethodRow>> {
        read_owned(None, self, tenant, "payment_method", key).await
    }

    /// A payment method and an invoice of the tenant, read together: what paying an invoice
    /// decides on before its transaction (one read instead of two; each read costs a snapshot
    /// of its own).
    pub async fn payment_method_and_invoice(
        &self,
        tenant: &TenantId,
        method_key: &str,
        invoice_key: &str,
    ) -> AppResult<(Option<PaymentMethodRow>, Option<InvoiceRow>)> {
        let vars = Vars::new().set("method", record("payment_method", method_key)).set("invoice", record("invoice", invoice_key));
        let mut found = self.query("SELECT * FROM ONLY $method; SELECT * FROM ONLY $invoice;", vars).await?;
        let method = found.first::<PaymentMethodRow>(0)?.filter(|row| row.tenant() == tenant.as_str());
        let invoice = found.first::<InvoiceRow>(1)?.filter(|row| row.tenant() == tenant.as_str());
        Ok((method, invoice))
    }

    pub async fn payment_methods(&self, tenant: &TenantId, include_archived: bool) -> AppResult<Vec<PaymentMethodRow>> {
        let mut results = self
            .query(
                "SELECT * FROM payment_method WHERE tenant = $tenant AND ($all OR archived = false) ORDER BY id",
                Vars::new().set("tenant", tenant.as_str().to_owned()).set("all", include_archived),
            )
            .await?;
        results.rows(0)
    }

    /// A page of payments, newest first (walking the index (tenant, key)), and (when `count`)
    /// how many match the filter.
    pub async fn payments(
        &self,
        tenant: &TenantId,
        filter: &PaymentFilter,
        after: Option<String>,
        limit: usize,
        count: bool,
    ) -> AppResult<(Vec<PaymentRow>, Option<i64>)> {
        use PaymentStatus as S;
        use AllocationState as A;
        let filter = ListFilter::of_tenant(tenant)
            .with("client = $client", "client", filter.client.clone())
            .with("method = $method", "method", filter.method.clone())
            .with("location = $location", "location", filter.location.clone())
            .with("date >= $from", "from", filter.from.map(date_string))
            .with("date <= $to", "to", filter.to.map(date_string))
            .when("void = true", filter.status == Some(S::Void))
            .when("void = false AND refunded = 0", filter.status == Some(S::Received))
            .when("void = false AND refunded > 0 AND refunded >= amount", filter.status == Some(S::Refunded))
            .when("void = false AND refunded > 0 AND refunded < amount", filter.status == Some(S::PartiallyRefunded))
            .when("allocated = 0", filter.allocation_state == Some(A::Unallocated))
            .when("allocated > 0 AND allocated >= amount - refunded", filter.allocation_state == Some(A::Allocated))
            .when("allocated > 0 AND allocated < amount - refunded", filter.allocation_state == Some(A::PartiallyAllocated));
        self.page("payment", tenant, filter, after, limit, count).await
    }

    /// A page of allocations, newest first, removed ones included unless the filter says
    /// otherwise, and (when `count`) how many match the filter.
    pub async fn allocations(
        &self,
        tenant: &TenantId,
        filter: &AllocationFilter,
        after: Option<String>,
        limit: usize,
        count: bool,
    ) -> AppResult<(Vec<AllocationRow>, Option<i64>)> {
        let filter = ListFilter::of_tenant(tenant)
            .with("client = $client", "client", filter.client.clone())
            .with("payment = $payment", "payment", filter.payment.clone())
            .with("invoice = $invoice", "invoice", filter.invoice.clone())
            .with("active = $active", "active", filter.active)
            .with("date >= $from", "from", filter.from.map(date_string))
            .with("date <= $to", "to", filter.to.map(date_string));
        self.page("allocation", tenant, filter, after, limit, count).await
    }

    /// A page of refunds, newest first, whatever their outcome unless the filter says, and (when
    /// `count`) how many match the filter.
    pub async fn refunds(
        &self,
        tenant: &TenantId,
        filter: &RefundFilter,
        after: Option<String>,
        limit: usize,
        count: bool,
    ) -> AppResult<(Vec<RefundRow>, Option<i64>)> {
        let filter = ListFilter::of_tenant(tenant)
            .with("client = $client", "client", filter.client.clone())
            .with("payment = $payment", "payment", filter.payment.clone())
            .with("outcome = $outcome", "outcome", filter.outcome.map(str::to_owned))
            .with("date >= $from", "from", filter.from.map(date_string))
            .with("date <= $to", "to", filter.to.map(date_string));
        self.page("refund", tenant, filter, after, limit, count).await
    }

    /// A client's payments with money left to apply, oldest first: what the front desk picks
    /// from when applying credit.
    pub async fn unallocated_payments(&self, tenant: &TenantId, client: &str) -> AppResult<Vec<PaymentRow>> {
        let mut results = self
            .query(
                "SELECT * FROM payment WHERE tenant = $tenant AND client = $client AND void = false
                    AND amount - allocated - refunded - refund_pending > 0 ORDER BY id",
                Vars::new().set("tenant", tenant.as_str().to_owned()).set("client", client.to_owned()),
            )
            .await?;
        results.rows(0)
    }
}

pub(crate) fn payment_entry(action: &str, payment: &PaymentRow, allocated: &[Allocated]) -> AuditEntry {
    let key = key_of(&payment.id);
    let mut records = vec![format!("payment:{key}")];
    for allocation in allocated {
        records.push(format!("allocation:{}", allocation.key));
        records.push(format!("invoice:{}", allocation.invoice));
    }
    AuditEntry {
        action: action.into(),
        records,
        before: None,
        after: Some(serde_json::json!({
            "payment": payment_summary(&payment.doc),
            "allocations": allocated.iter().map(|a| serde_json::json!({"invoice": a.invoice, "amount": a.amount.to_string()})).collect::<Vec<_>>(),
        })),
        reason: None,
        ..AuditEntry::default()
    }
}
