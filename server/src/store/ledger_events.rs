//! Reading a tenant's ledger events in position order (E2). They are stored on their audit
//! events (`audit.rs`) and positioned after commit (`numbering.rs`); this file reads them back.

use chrono::{DateTime, Utc};
use surrealdb::types::{Array, RecordId, RecordIdKey, SurrealValue, Value};

use super::rows::key_of;
use super::{Store, Vars};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::events::{LedgerEvent, LedgerEventRecord, from_stored};

/// An audit event as ledger events and the audit chain need it.
#[derive(Debug, Clone, SurrealValue)]
pub(crate) struct LedgerRow {
    pub id: RecordId,
    pub tenant: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub events: Option<String>,
    /// The change's takings changes (R1), as JSON: added to the tenant's takings sums in the
    /// transaction that positions the event.
    pub takings: Option<String>,
    pub position: Option<i64>,
    /// The hash of the event's canonical content (H1), which its link in the tenant's chain,
    /// given by the same transaction as its position, is made of.
    pub content_hash: Option<String>,
}

impl LedgerRow {
    /// The payments this change created: each has a PAYMENT_RECORDED event, and is numbered in
    /// the transaction that positions the event (`numbering.rs`). An event that cannot be read
    /// names none here; positioning and publishing report it.
    pub(crate) fn new_payments(&self) -> Vec<String> {
        let events = from_stored(self.events.as_deref()).unwrap_or_default();
        events
            .into_iter()
            .filter_map(|event| match event {
                LedgerEvent::PaymentRecorded { payment, .. } => Some(payment),
                _ => None,
            })
            .collect()
    }

    /// The record at `position` (or the row's own).
    pub(crate) fn into_record(self, position: Option<i64>) -> AppResult<LedgerEventRecord> {
        let key = key_of(&self.id);
        let position = position.or(self.position).ok_or_else(|| AppError::internal(format!("audit event {key} has no position")))?;
        let events = from_stored(self.events.as_deref())
            .map_err(|error| AppError::internal(format!("the ledger events of audit event {key}: {error}")))?;
        Ok(LedgerEventRecord { tenant: self.tenant, position, audit_event: key, at: self.at, actor: self.actor, action: self.action, events })
    }
}

/// The tenant's counter of positions, `counter:[tenant, 'event']` (the sequence
/// `next_numbers(tx, tenant, "event", n)` takes from).
fn event_counter(tenant: &TenantId) -> RecordId {
    let parts = Array::from(vec![Value::String(tenant.as_str().to_owned()), Value::String("event".to_owned())]);
    RecordId::new("counter", RecordIdKey::Array(parts))
}

impl Store {
    /// The tenant's positioned ledger events after position `after`, in position order, at most
    /// `limit`. Positions have no gaps, so these are the positions after+1 ..= after+limit: the
    /// read looks those up through the index on (tenant, position) and touches nothing else,
    /// however many events the tenant has.
    pub async fn ledger_events_after(&self, tenant: &TenantId, after: i64, limit: usize) -> AppResult<Vec<LedgerEventRecord>> {
        let after = after.max(0);
        let last = after.saturating_add(limit as i64);
        let mut found = self
            .query(
                "SELECT id, tenant, at, actor, action, events, position FROM audit_event
                    WHERE tenant = $tenant AND position > $after AND position <= $last ORDER BY position",
                Vars::new().set("tenant", tenant.as_str().to_owned()).set("after", after).set("last", last),
            )
            .await?;
        let rows: Vec<LedgerRow> = found.rows(0)?;
        rows.into_iter().map(|row| row.into_record(None)).collect()
    }

    /// How many ledger events the tenant has positioned: its last position, since positions
    /// start at 1 and have no gaps.
    pub async fn ledger_event_count(&self, tenant: &TenantId) -> AppResult<i64> {
        let mut found = self
            .query("SELECT VALUE next FROM ONLY $id", Vars::new().set("id", event_counter(tenant)))
            .await?;
        Ok(match found.value(0)? {
            Value::Number(number) => number.to_int().unwrap_or(1) - 1,
            _ => 0,
        })
    }
}

/// A fresh in-memory store, for the tests of ledger events here and in `events`.
#[cfg(test)]
pub(crate) async fn memory_store() -> Store {
    Store::open(&super::test_settings("mem://", 8), crate::metrics::Metrics::new()).await.expect("a memory store opens")
}

/// Writes an audit event with one ledger event straight into the table, as a change committed
/// by another process (or before a stop) would have left it: with `position`, or awaiting one.
#[cfg(test)]
pub(crate) async fn write_raw_event(store: &Store, tenant: &TenantId, payment: &str, position: Option<i64>) -> String {
    let key = super::rows::new_key();
    let events = crate::events::to_stored(&[crate::events::LedgerEvent::PaymentVoided { payment: payment.to_owned() }]);
    store
        .query(
            "CREATE $id SET tenant = $tenant, key = $key, page_key = $page_key, at = time::now(), actor = 'elsewhere',
                action = 'payment.void', records = [], events = $events, position = $position,
                awaiting_position = IF $position = NONE { true } ELSE { NONE } RETURN NONE",
            Vars::new()
                .set("id", super::rows::record("audit_event", &key))
                .set("tenant", tenant.as_str().to_owned())
                .set("key", key.clone())
                .set("page_key", super::rows::page_key(tenant.as_str(), &key))
                .set("events", events)
                .set("position", position),
        )
        .await
        .expect("a raw audit event is written");
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page read is a bounded range of the (tenant, position) index, not a walk of the
    /// tenant's events; the sweep finds events awaiting a position through their own index.
    #[tokio::test]
    async fn e2_reads_of_events_go_through_their_indexes() {
        let store = memory_store().await;
        let plan = |sql: &'static str| {
            let store = store.clone();
            async move { format!("{:?}", store.query(sql, Vars::new()).await.unwrap().value(0).unwrap()) }
        };
        let page = plan(
            "SELECT id, tenant, at, actor, action, events, position FROM audit_event
                WHERE tenant = 't' AND position > 3 AND position <= 9 ORDER BY position EXPLAIN",
        )
        .await;
        for part in ["Iterate Index", "audit_tenant_position", "prefix", "ranges"] {
            assert!(page.contains(part), "the page is a range of the (tenant, position) index ({part}): {page}");
        }
        let sweep = plan("SELECT id, tenant FROM audit_event WHERE awaiting_position = true ORDER BY id EXPLAIN").await;
        for part in ["Iterate Index", "audit_awaiting_position"] {
            assert!(sweep.contains(part), "the sweep reads only events awaiting a position ({part}): {sweep}");
        }
    }
}
