//! Payment numbers: PAY-0001, PAY-0002, ... per tenant, unique and without gaps.
//!
//! A payment commits without a number, so that payments of one tenant never queue behind each
//! other's commits; right after, before the mutation answers, it is numbered. Requests waiting
//! to number their payments are served together: whoever holds the tenant's numbering turn takes
//! every payment queued so far and numbers them all in one short transaction, so under load one
//! commit numbers many. No table is scanned on this path (a queue table with inserts and deletes
//! would fill its index with tombstones that every scan must step over).
//!
//! A payment is left unnumbered only if the process stops between its commit and its numbering,
//! or numbering failed; [`Store::number_all_pending_payments`] finds those (at start, and after a
//! failure) through the payment table's index on (tenant, number).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use surrealdb::types::{RecordId, Value};

use super::locks::counter_lock;
use super::rows::{key_of, record};
use super::{Store, Vars};
use crate::auth::TenantId;
use crate::error::AppResult;

/// Payments committed but not numbered yet, per tenant, in this process.
#[derive(Default)]
pub struct PendingNumbers {
    queued: Mutex<HashMap<String, Vec<String>>>,
    /// Numbers given by one request's batch to payments of other waiting requests, until each
    /// of those requests collects its own.
    given: Mutex<HashMap<String, i64>>,
    /// Set when numbering failed, so the next sweep looks for what was left unnumbered.
    failed: AtomicBool,
}

impl PendingNumbers {
    fn push(&self, tenant: &TenantId, key: String) {
        let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        queued.entry(tenant.as_str().to_owned()).or_default().push(key);
    }

    fn take(&self, tenant: &TenantId) -> Vec<String> {
        let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys = queued.remove(tenant.as_str()).unwrap_or_default();
        // Keys are UUIDv7: their order is the order the payments were created in.
        keys.sort();
        keys
    }
}

impl Store {
    /// Numbers the payment `key` just committed, together with any others waiting; returns its
    /// number, or None when numbering failed (the payment is then numbered by the next sweep).
    pub async fn number_payment(&self, tenant: &TenantId, key: String) -> Option<i64> {
        let pending = self.pending_numbers();
        pending.push(tenant, key.clone());
        let _turn = self.locks().lock(&counter_lock(tenant, "payment")).await;
        let keys = pending.take(tenant);
        if !keys.is_empty() {
            match self.assign_numbers(tenant, &keys).await {
                Ok(numbers) => pending.given.lock().unwrap_or_else(|p| p.into_inner()).extend(numbers),
                Err(error) => {
                    tracing::warn!(%tenant, %error, "numbering payments failed; they are numbered by the next sweep");
                    pending.failed.store(true, Ordering::Relaxed);
                }
            }
        }
        // Numbered by this batch or by the request that held the turn before.
        pending.given.lock().unwrap_or_else(|p| p.into_inner()).remove(&key)
    }

    /// Gives `keys` (payments without a number) the next numbers of the tenant, in one
    /// transaction; returns the numbers given.
    async fn assign_numbers(&self, tenant: &TenantId, keys: &[String]) -> AppResult<Vec<(String, i64)>> {
        self.transaction(|tx| async move {
            // A payment is numbered once: those numbered meanwhile (by a sweep) are left out, so
            // no number is taken without being used.
            let ids: Vec<RecordId> = keys.iter().map(|key| record("payment", key)).collect();
            let mut unnumbered = tx
                .query("SELECT VALUE id FROM $ids WHERE number = NONE ORDER BY id", Vars::new().set("ids", ids))
                .await?;
            let ids: Vec<RecordId> = unnumbered.rows(0)?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let first = super::payments::next_numbers(&tx, tenant, "payment", ids.len() as i64).await?;
            let mut sql = String::new();
            let mut vars = Vars::new();
            let mut given = Vec::with_capacity(ids.len());
            for (i, id) in ids.into_iter().enumerate() {
                let number = first + i as i64;
                sql.push_str(&format!("UPDATE $p{i} SET number = $n{i} RETURN NONE;"));
                given.push((key_of(&id), number));
                vars = vars.set(&format!("p{i}"), id).set(&format!("n{i}"), number);
            }
            tx.query(&sql, vars).await?;
            Ok(given)
        })
        .await
    }

    /// Numbers every payment left without a number (after a stop between a payment's commit and
    /// its numbering, or a failed numbering). Runs at start and whenever numbering failed.
    pub async fn number_all_pending_payments(&self, at_start: bool) -> AppResult<()> {
        if !at_start && !self.pending_numbers().failed.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let mut results = self
            .query("SELECT id, tenant FROM payment WHERE number = NONE ORDER BY id", Vars::new())
            .await?;
        let Value::Array(rows) = results.value(0)? else { return Ok(()) };
        let mut by_tenant: HashMap<String, Vec<String>> = HashMap::new();
        for row in rows.into_iter() {
            let Value::Object(row) = row else { continue };
            let (Some(Value::RecordId(id)), Some(Value::String(tenant))) = (row.get("id"), row.get("tenant")) else {
                continue;
            };
            let id: &RecordId = id;
            by_tenant.entry(tenant.clone()).or_default().push(key_of(id));
        }
        for (tenant, keys) in by_tenant {
            let Some(tenant) = TenantId::parse(&tenant) else { continue };
            let _turn = self.locks().lock(&counter_lock(&tenant, "payment")).await;
            self.assign_numbers(&tenant, &keys).await?;
        }
        Ok(())
    }
}
