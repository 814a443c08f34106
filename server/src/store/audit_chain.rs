//! The tamper-evident audit log in the database (H1): giving audit events their place in the
//! tenant's chain right after commit, reading the chain back to check it, and the tenant's head.
//! What is hashed, how links are made and what counts as a break is decided in
//! `ledger/audit_chain.rs`; this file only reads and writes.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use surrealdb::types::{RecordId, SurrealValue};

use super::numbering::EVENT_COUNTER;
use super::payments::counter_record;
use super::rows::{AuditRow, key_of};
use super::{Store, TxRef, Vars};
use crate::auth::TenantId;
use crate::error::AppResult;
use crate::ledger::audit_chain::{AuditContent, ChainBreak, ChainHead, ChainWalk, ChainedEvent, GENESIS, link};

/// The counter of audit event sequences, `counter:[tenant, 'audit']`; its record also holds the
/// head (the last link).
pub(super) const AUDIT_COUNTER: &str = "audit";

/// Events read per page while checking a chain.
const CHECK_PAGE: i64 = 500;

/// An audit event to chain: its id, the content hash written with it (None for an event
/// written without one, which the check then reports as changed), and whether it takes a ledger
/// position too (it carries ledger events, E2).
pub(crate) struct ToChain<'a> {
    pub id: &'a RecordId,
    pub content_hash: Option<&'a str>,
    pub positioned: bool,
}

/// The audit counter as stored: the next sequence and the head's link.
#[derive(SurrealValue)]
pub(super) struct CounterRow {
    next: i64,
    head: Option<String>,
}

impl CounterRow {
    pub(super) fn head(self) -> ChainHead {
        ChainHead { sequence: self.next - 1, chain: self.head.unwrap_or_else(|| GENESIS.to_owned()) }
    }
}

#[derive(SurrealValue)]
struct Placed {
    id: RecordId,
    sequence: Option<i64>,
    position: Option<i64>,
}

/// Gives the `events` of `tenant` not chained yet the tenant's next sequence numbers and links,
/// and those that take a ledger position and have none the tenant's next positions (E2), in the
/// order given, in the caller's transaction, each event by one UPDATE; records the new head and
/// the next position with their counters. Returns (index in `events`, position) of each event
/// positioned. An event chained or positioned meanwhile (by a sweep, or by another process)
/// keeps its place. The transaction reads and writes the counters, so two processes placing one
/// tenant's events conflict and one runs again: the chain and the positions have one order. With
/// `settled`, each event placed stops `awaiting_position` (positioning); the upgrade chains
/// events without positioning them and leaves the marker to the sweep.
pub(super) async fn chain_events(tx: &TxRef, tenant: &TenantId, events: &[ToChain<'_>], settled: bool) -> AppResult<Vec<(usize, i64)>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let counter = counter_record(tenant, AUDIT_COUNTER);
    let position_counter = counter_record(tenant, EVENT_COUNTER);
    let ids: Vec<RecordId> = events.iter().map(|event| event.id.clone()).collect();
    let mut found = tx
        .query(
            "SELECT next, head FROM ONLY $counter; SELECT id, sequence, position FROM $ids; SELECT VALUE next FROM ONLY $positions;",
            Vars::new().set("counter", counter.clone()).set("ids", ids).set("positions", position_counter.clone()),
        )
        .await?;
    let mut head = found.first::<CounterRow>(0)?.map_or_else(ChainHead::empty, CounterRow::head);
    let placed = found.rows::<Placed>(1)?;
    let first_position = found.first::<i64>(2)?.unwrap_or(1);
    let mut chained: HashSet<String> = placed.iter().filter(|row| row.sequence.is_some()).map(|row| key_of(&row.id)).collect();
    let mut has_position: HashSet<String> = placed.iter().filter(|row| row.position.is_some()).map(|row| key_of(&row.id)).collect();
    let settle = if settled { ", awaiting_position = NONE" } else { "" };
    let mut sql = String::new();
    let mut vars = Vars::new();
    let mut positioned = Vec::new();
    for (n, event) in events.iter().enumerate() {
        let key = key_of(event.id);
        let mut sets = Vec::new();
        if chained.insert(key.clone()) {
            let sequence = head.sequence + 1;
            head = ChainHead { sequence, chain: link(&head.chain, event.content_hash.unwrap_or_default(), sequence) };
            sets.push(format!("sequence = $s{n}, chain = $c{n}"));
            vars = vars.set(&format!("s{n}"), sequence).set(&format!("c{n}"), head.chain.clone());
        }
        if event.positioned && has_position.insert(key) {
            let position = first_position + positioned.len() as i64;
            positioned.push((n, position));
            sets.push(format!("position = $p{n}"));
            vars = vars.set(&format!("p{n}"), position);
        }
        if !sets.is_empty() {
            sql.push_str(&format!("UPDATE $e{n} SET {}{settle} RETURN NONE;", sets.join(", ")));
            vars = vars.set(&format!("e{n}"), event.id.clone());
        }
    }
    if sql.is_empty() {
        return Ok(positioned);
    }
    sql.push_str("UPSERT $counter SET next = $next, head = $head RETURN NONE;");
    if !positioned.is_empty() {
        sql.push_str("UPSERT $positions SET next = $next_position RETURN NONE;");
    }
    let vars = vars
        .set("counter", counter)
        .set("next", head.sequence + 1)
        .set("head", head.chain)
        .set("positions", position_counter)
        .set("next_position", first_position + positioned.len() as i64);
    tx.query(&sql, vars).await?;
    Ok(positioned)
}

/// The fields of an [`AuditRow`], for SELECTs.
pub(super) const CHAIN_FIELDS: &str =
    "id, tenant, key, at, actor, action, records, before, after, reason, idempotency_key, request_id, events, takings, content_hash, sequence, chain";

impl AuditRow {
    /// What of the event is hashed, as stored.
    pub fn content(&self) -> AuditContent {
        AuditContent {
            tenant: self.tenant.clone(),
            key: self.key.clone(),
            at: self.at,
            actor: self.actor.clone(),
            action: self.action.clone(),
            records: self.records.clone(),
            before: self.before.clone(),
            after: self.after.clone(),
            reason: self.reason.clone(),
            idempotency_key: self.idempotency_key.clone(),
            request_id: self.request_id.clone(),
            events: self.events.clone(),
            takings: self.takings.clone(),
        }
    }
}

/// The tenant's head as `auditHead` shows it: the last sequence number, its link, and that event.
#[derive(Debug, Clone)]
pub struct AuditHead {
    pub sequence: i64,
    pub chain: String,
    /// The audit event at the head and its time; None if it is missing (the check reports that).
    pub event: Option<(String, DateTime<Utc>)>,
}

/// What a check of a tenant's chain found.
#[derive(Debug, Clone)]
pub struct ChainReport {
    /// Events that hold, from sequence 1 up to the break or the head.
    pub checked: i64,
    /// The head recorded with the counter when the check started.
    pub head: ChainHead,
    /// The first broken link; None when the chain holds.
    pub broken: Option<ChainBreak>,
    /// Events committed and not chained yet: they get their sequence moments after their commit
    /// (or at the next start), and are never a break.
    pub pending: i64,
}

#[derive(SurrealValue)]
struct HeadEvent {
    id: RecordId,
    at: DateTime<Utc>,
}

#[derive(SurrealValue)]
struct Awaiting {
    tenant: String,
    sequence: Option<i64>,
}

impl Store {
    /// The head recorded with the tenant's counter (sequence 0 and [`GENESIS`] before the first).
    async fn recorded_chain_head(&self, tenant: &TenantId) -> AppResult<ChainHead> {
        let mut found = self.query("SELECT next, head FROM ONLY $id", Vars::new().set("id", counter_record(tenant, AUDIT_COUNTER))).await?;
        Ok(found.first::<CounterRow>(0)?.map_or_else(ChainHead::empty, CounterRow::head))
    }

    /// The tenant's head (H1), to be published so that a rewritten chain shows; None before the
    /// first chained event.
    pub async fn audit_head(&self, tenant: &TenantId) -> AppResult<Option<AuditHead>> {
        let head = self.recorded_chain_head(tenant).await?;
        if head.sequence == 0 {
            return Ok(None);
        }
        let mut found = self
            .query(
                "SELECT id, at FROM audit_event WHERE tenant = $tenant AND sequence = $sequence",
                Vars::new().set("tenant", tenant.as_str().to_owned()).set("sequence", head.sequence),
            )
            .await?;
        let event = found.first::<HeadEvent>(0)?.map(|row| (key_of(&row.id), row.at));
        Ok(Some(AuditHead { sequence: head.sequence, chain: head.chain, event }))
    }

    /// Walks the tenant's chain from sequence 1 to the head recorded when the check starts, a page
    /// at a time through the index on (tenant, sequence), and reports the first broken link (H1).
    /// Events chained after the check started are left for the next check.
    pub async fn verify_audit_chain(&self, tenant: &TenantId) -> AppResult<ChainReport> {
        // Pending first: an event chained between the two reads is then within the head, never
        // in neither.
        let pending = self.audit_events_pending_chain(tenant).await?;
        let head = self.recorded_chain_head(tenant).await?;
        let mut walk = ChainWalk::start();
        let mut broken = None;
        while walk.head.sequence < head.sequence {
            let after = walk.head.sequence;
            let sql = format!(
                "SELECT {CHAIN_FIELDS} FROM audit_event WHERE tenant = $tenant AND sequence > $after AND sequence <= $last ORDER BY sequence"
            );
            let vars = Vars::new().set("tenant", tenant.as_str().to_owned()).set("after", after).set("last", (after + CHECK_PAGE).min(head.sequence));
            let rows: Vec<AuditRow> = self.query(&sql, vars).await?.rows(0)?;
            if rows.is_empty() {
                break;
            }
            let events: Vec<ChainedEvent> = rows
                .into_iter()
                .map(|row| ChainedEvent {
                    id: key_of(&row.id),
                    sequence: row.sequence.unwrap_or_default(),
                    content: row.content(),
                    content_hash: row.content_hash,
                    chain: row.chain,
                })
                .collect();
            if let Err(found) = walk.check(&events) {
                broken = Some(found);
                break;
            }
        }
        let broken = broken.or_else(|| walk.finish(&head).err());
        Ok(ChainReport { checked: walk.head.sequence, head, broken, pending })
    }

    /// How many of the tenant's audit events await their place in the chain. Read through the
    /// index on `awaiting_position`, which holds only events committed moments ago (or left by a
    /// stop), of every tenant: never a walk of the tenant's history.
    async fn audit_events_pending_chain(&self, tenant: &TenantId) -> AppResult<i64> {
        let rows: Vec<Awaiting> = self.query("SELECT tenant, sequence FROM audit_event WHERE awaiting_position = true", Vars::new()).await?.rows(0)?;
        Ok(rows.iter().filter(|row| row.tenant == tenant.as_str() && row.sequence.is_none()).count() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::LedgerEvent;
    use crate::ledger::audit_chain::ChainProblem;
    use crate::store::audit::{AuditEntry, Mutation};
    use crate::store::ledger_events::memory_store;

    /// Events with and without ledger events are chained in commit order, re-computed from what
    /// the database gives back (its datetimes included) they hold, and an edit is the first break.
    #[tokio::test]
    async fn h1_committed_events_are_chained_and_an_edit_breaks_the_chain() {
        let store = memory_store().await;
        let tenant = TenantId::parse("chain").unwrap();
        let mutation = Mutation { tenant: &tenant, actor: "tester", request_id: "r", operation: "test", idempotency: None, dry_run: false };
        for n in 0..5 {
            let events = if n % 2 == 0 { vec![LedgerEvent::PaymentVoided { payment: format!("p{n}") }] } else { Vec::new() };
            store.record_event(&mutation, AuditEntry { action: format!("change.{n}"), events, ..AuditEntry::default() }).await.unwrap();
        }
        store.position_events(&tenant).await;
        let report = store.verify_audit_chain(&tenant).await.unwrap();
        assert_eq!((report.checked, report.broken.clone(), report.pending), (5, None, 0), "{report:?}");
        let head = store.audit_head(&tenant).await.unwrap().expect("a head");
        assert_eq!((head.sequence, &head.chain), (5, &report.head.chain));
        let mut actions = store
            .query("SELECT VALUE action FROM audit_event WHERE tenant = 'chain' ORDER BY sequence", Vars::new())
            .await
            .unwrap();
        let actions: Vec<String> = actions.rows(0).unwrap();
        assert_eq!(actions, ["change.0", "change.1", "change.2", "change.3", "change.4"], "chained in commit order");

        store.query("UPDATE audit_event SET actor = 'mallory' WHERE tenant = 'chain' AND sequence = 3", Vars::new()).await.unwrap();
        let broken = store.verify_audit_chain(&tenant).await.unwrap().broken.expect("a break");
        assert_eq!((broken.sequence, broken.problem), (3, ChainProblem::ContentChanged), "{broken:?}");
    }
}
