//! Records as stored: one struct per table, converted with SurrealDB's `SurrealValue`.
//!
//! For the tables of money changes (invoice, payment, allocation, refund, credit_note,
//! audit_event), which a new database defines without fields (docs/architecture.md, "Records of
//! money changes"), these structs are the definition of the record: what is written is built from
//! them, and a read that does not decode into them is an error.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use surrealdb::types::{RecordId, RecordIdKey, SurrealValue, Value};

/// A fresh record key: a UUIDv7, so keys sort in creation order.
pub fn new_key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Where a record sorts in its tenant's pages (`page_key` in schema.surql): the tenant, '/', then
/// the key with every hex digit complemented (0 <-> f), so that the newest key sorts first and a
/// page of the newest rows is a forward walk of the index from "tenant/".
pub fn page_key(tenant: &str, key: &str) -> String {
    let complemented = key.chars().map(|c| match c.to_digit(16) {
        Some(digit) if !c.is_ascii_uppercase() => char::from_digit(15 - digit, 16).unwrap_or(c),
        _ => c,
    });
    format!("{tenant}/{}", complemented.collect::<String>())
}

pub fn record(table: &str, key: &str) -> RecordId {
    RecordId::new(table, key)
}

/// The key of a record id with a string key (every Settle record but the keyed-by-array ones).
pub fn key_of(id: &RecordId) -> String {
    match &id.key {
        RecordIdKey::String(key) => key.clone(),
        other => format!("{other:?}"),
    }
}

#[derive(Debug, Clone, SurrealValue)]
pub struct TenantRow {
    pub id: RecordId,
    pub currency: String,
    pub tax_mode: String,
    pub payment_terms_days: i64,
    pub next_invoice_number: i64,
    pub timezone: String,
    pub created_at: DateTime<Utc>,
}

/// A client or a contact: a person or organisation with optional email and phone.
#[derive(Debug, Clone, SurrealValue)]
pub struct PartyRow {
    pub id: RecordId,
    pub tenant: String,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, SurrealValue)]
pub struct LocationRow {
    pub id: RecordId,
    pub tenant: String,
    pub name: String,
    pub address: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, SurrealValue)]
pub struct TaxRateRow {
    pub id: RecordId,
    pub tenant: String,
    pub name: String,
    pub percent: Decimal,
    pub system: bool,
    pub archived: bool,
    pub created_at: DateTime<Utc>,
}

/// One invoice line with its computed totals.
#[derive(Debug, Clone, PartialEq, SurrealValue)]
pub struct LineRow {
    pub description: String,
    pub item_code: Option<String>,
    pub quantity: Decimal,
    pub unit_price: Decimal,
    /// "AMOUNT" or "PERCENT" when the line has a discount.
    pub discount_kind: Option<String>,
    pub discount_value: Option<Decimal>,
    pub tax_rate: Option<String>,
    pub tax_name: Option<String>,
    pub tax_percent: Option<Decimal>,
    pub discount: Decimal,
    pub subtotal: Decimal,
    pub tax: Decimal,
    pub total: Decimal,
    /// Sum of issued credit notes' totals for this line.
    pub credited: Option<Decimal>,
}

/// An invoice's stored fields, everything but its id.
#[derive(Debug, Clone, SurrealValue)]
pub struct InvoiceDoc {
    pub tenant: String,
    /// The record key again, as a field.
    pub key: String,
    /// Where it sorts in the tenant's pages: [`page_key`].
    pub page_key: String,
    pub number: Option<i64>,
    pub client: String,
    pub contact: Option<String>,
    pub location: String,
    pub practitioner: Option<String>,
    pub issue_date: String,
    pub due_date: String,
    pub currency: String,
    pub tax_mode: String,
    pub status: String,
    pub notes: Option<String>,
    pub lines: Vec<LineRow>,
    pub discount: Decimal,
    pub subtotal: Decimal,
    pub tax: Decimal,
    pub total: Decimal,
    pub paid: Decimal,
    pub credited: Decimal,
    pub active_allocations: i64,
    pub issued_credit_notes: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    /// Who finalized it (the moment its total became owed); none for invoices finalized before
    /// Settle kept it.
    pub finalized_by: Option<String>,
    pub voided_at: Option<DateTime<Utc>>,
    pub void_reason: Option<String>,
}

#[derive(Debug, Clone, SurrealValue)]
pub struct InvoiceRow {
    pub id: RecordId,
    #[surreal(flatten)]
    pub doc: InvoiceDoc,
}

/// An audit event as stored (X3), with its place in the tenant's chain (H1) once it has one.
#[derive(Debug, Clone, SurrealValue)]
pub struct AuditRow {
    pub id: RecordId,
    pub tenant: String,
    pub key: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub records: Vec<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
    pub request_id: Option<String>,
    pub events: Option<String>,
    pub takings: Option<String>,
    pub content_hash: Option<String>,
    pub sequence: Option<i64>,
    pub chain: Option<String>,
}

#[derive(Debug, Clone, SurrealValue)]
pub struct IdempotencyRow {
    pub operation: String,
    pub request_hash: String,
    pub result: String,
    /// Always set when written; read back only to be passed over.
    pub created_at: Option<DateTime<Utc>>,
}

/// A `count()` row.
#[derive(Debug, Clone, SurrealValue)]
pub struct CountRow {
    pub count: i64,
}

#[derive(Debug, Clone, SurrealValue)]
pub struct PaymentMethodRow {
    pub id: RecordId,
    pub tenant: String,
    pub name: String,
    #[surreal(rename = "type")]
    pub kind: String,
    pub plugin: String,
    pub config: Option<String>,
    pub archived: bool,
    pub created_at: DateTime<Utc>,
}

/// A payment's stored fields, everything but its id.
#[derive(Debug, Clone, SurrealValue)]
pub struct PaymentDoc {
    pub tenant: String,
    /// The record key again, as a field.
    pub key: String,
    /// Where it sorts in the tenant's pages: [`page_key`].
    pub page_key: String,
    /// None only between the payment's commit and its numbering.
    pub number: Option<i64>,
    pub client: String,
    pub location: String,
    pub method: String,
    pub method_name: String,
    pub plugin: String,
    pub date: String,
    pub amount: Decimal,
    pub currency: String,
    pub description: Option<String>,
    pub external_reference: Option<String>,
    /// The gateway's id of the charge that took the payment; unlike the external reference it is
    /// never edited, and refunds go to it.
    pub charge_reference: Option<String>,
    pub allocated: Decimal,
    pub refunded: Decimal,
    /// Refunds sent to a plugin and not settled yet.
    pub refund_pending: Decimal,
    pub allocation_count: i64,
    pub void: bool,
    pub voided_at: Option<DateTime<Utc>>,
    pub void_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Who recorded it; none for payments recorded before Settle kept it.
    pub created_by: Option<String>,
}

#[derive(Debug, Clone, SurrealValue)]
pub struct PaymentRow {
    pub id: RecordId,
    #[surreal(flatten)]
    pub doc: PaymentDoc,
}

#[derive(Debug, Clone, SurrealValue)]
pub struct AllocationRow {
    pub id: RecordId,
    pub tenant: String,
    /// The allocation's place on its payment, from 1.
    pub sequence: i64,
    pub payment: String,
    pub invoice: String,
    pub client: String,
    pub amount: Decimal,
    pub currency: String,
    pub date: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub removed_at: Option<DateTime<Utc>>,
    pub removed_by: Option<String>,
}

#[derive(Debug, Clone, SurrealValue)]
pub struct RefundRow {
    pub id: RecordId,
    pub tenant: String,
    pub payment: String,
    pub client: String,
    pub amount: Decimal,
    pub currency: String,
    pub date: String,
    pub description: Option<String>,
    pub outcome: String,
    pub outcome_reason: Option<String>,
    pub external_reference: Option<String>,
    pub plugin: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, SurrealValue)]
pub struct CreditLineRow {
    /// Index of the credited invoice line, from 0.
    pub line: i64,
    pub description: String,
    pub quantity: Option<Decimal>,
    pub subtotal: Decimal,
    pub tax: Decimal,
    pub total: Decimal,
}

#[derive(Debug, Clone, SurrealValue)]
pub struct CreditNoteRow {
    pub id: RecordId,
    pub tenant: String,
    pub number: i64,
    pub invoice: String,
    pub client: String,
    pub currency: String,
    pub date: String,
    pub reason: String,
    pub lines: Vec<CreditLineRow>,
    pub subtotal: Decimal,
    pub tax: Decimal,
    pub total: Decimal,
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// Who issued it; none for credit notes issued before Settle kept it.
    pub created_by: Option<String>,
    pub voided_at: Option<DateTime<Utc>>,
    pub void_reason: Option<String>,
}

#[derive(Debug, Clone, SurrealValue)]
pub struct ChargeAttemptRow {
    pub id: RecordId,
    pub tenant: String,
    pub idempotency_key: String,
    pub request_hash: String,
    pub invoice: String,
    pub finalize: bool,
    pub client: String,
    pub location: String,
    pub method: String,
    pub plugin: String,
    pub method_type: String,
    pub amount: Decimal,
    pub currency: String,
    pub date: String,
    pub description: Option<String>,
    pub details: String,
    pub status: String,
    pub outcome_reason: Option<String>,
    pub external_reference: Option<String>,
    pub payment: Option<String>,
    pub actor: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::page_key;

    #[test]
    fn page_keys_sort_newest_first_and_stay_within_their_tenant() {
        let mut keys: Vec<String> = (0..500).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        keys.extend((0..500).map(|_| uuid::Uuid::now_v7().to_string()));
        keys.sort();
        keys.dedup();
        let page_keys: Vec<String> = keys.iter().map(|k| page_key("clinic", k)).collect();
        assert!(page_keys.windows(2).all(|w| w[0] > w[1]), "a later key sorts first");
        for (tenant, inside) in [("clinic", true), ("clinic-2", false), ("clinic0", false), ("clini", false)] {
            let key = page_key(tenant, &keys[0]);
            assert_eq!(key.as_str() > "clinic/" && key.as_str() < "clinic0", inside, "{tenant}: {key}");
        }
    }
}
