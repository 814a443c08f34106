//! Numbers given right after a commit, per tenant, unique and without gaps: the positions of
//! ledger events (1, 2, 3, ...: E2), payment numbers (PAY-0001, PAY-0002, ...) and the audit
//! events' places in the tenant's chain (sequence and link: H1, `audit_chain.rs`).
//!
//! A money change takes no per-tenant counter inside its own transaction: that would make every
//! money change of a tenant write one counter record, and queue behind the others' commits. A
//! transaction that wrote an audit event queues it the moment it commits
//! ([`super::Tx::position_after_commit`]), while the mutation still holds its in-process turns,
//! so two changes of one record are queued, and positioned, in the order they committed.
//! Whoever holds the tenant's positioning turn then takes everything queued so far and, in one
//! short transaction, gives the events with ledger events their positions, numbers the payments
//! they created (each named by a PAYMENT_RECORDED event) in the same order, adds their takings
//! changes to the tenant's sums (R1), and chains every event, with or without ledger events, in
//! the same order. Under load one such transaction serves many changes, and a payment is
//! numbered exactly when its event is positioned: payment numbers follow the order payments
//! committed in.
//!
//! The practice's payment writer (`commands/pay_together.rs`) does not leave its groups to that
//! second transaction: it holds the tenant's positioning turn while it writes a group, and the
//! group's own transaction places what this process committed before (as positioning would),
//! then gives each payment its number and each audit event its sequence, link and position as it
//! creates them ([`Placing`], [`PlacingTurn`]). Each record is then written once: measured in
//! docs/performance.md, the positioning transaction was nearly half of a payInvoice's work.
//!
//! Nobody has to wait for it: the commit also schedules a task that positions the tenant's
//! queue, and a mutation that wants its events positioned (and its payment numbered) before it
//! answers calls [`Store::position_events`] once its turns are released (holding them would make
//! every writer of a hot invoice wait for a second transaction). Each batch is published on the
//! event bus after its transaction commits, while the tenant's positioning turn is still held,
//! so the bus carries a tenant's events in position order.
//!
//! An event is left without a position or a place in the chain, and its payment without a
//! number, only if the process
//! stops between the commit and positioning, or positioning failed; the sweep
//! ([`Store::number_and_position_leftovers`]) finds those, at start and after a failure, through
//! the audit events' index on `awaiting_position`. No table is scanned on this path (a queue
//! table with inserts and deletes would fill its index with tombstones that every scan must step
//! over).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use surrealdb::types::{RecordId, Value};

use super::audit_chain::{AUDIT_COUNTER, CounterRow, ToChain, chain_events};
use super::ledger_events::LedgerRow;
use super::locks::counter_lock;
use super::payments::{counter_record, next_numbers, return_numbers};
use super::reports::{add_takings_changes, takings_sums_query};
use super::rows::record;
use super::TxRef;
use super::{Store, Vars};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::ledger::audit_chain::{ChainHead, link};
use crate::ledger::reports::{TakingsChange, sum_takings_changes};

/// The counter (`counter:[tenant, 'event']`) and turn of ledger event positions; the turn is
/// also the turn of payment numbers, which are given by the same transactions.
pub(super) const EVENT_COUNTER: &str = "event";

/// The counter of payment numbers (`counter:[tenant, 'payment']`).
const PAYMENT_COUNTER: &str = "payment";

/// Payments created by requests of this process that wait to answer with their numbers: marked
/// the moment their change commits, given their number by whichever positioning transaction
/// numbers them, collected by the request.
#[derive(Default)]
pub struct PendingNumbers {
    waiting: Mutex<HashMap<String, Option<i64>>>,
}

impl PendingNumbers {
    fn wait_for(&self, payments: Vec<String>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a request that went away before collecting leaves its entry behind; those
        // still waiting then read their numbers from the store.
        if waiting.len() > 10_000 {
            waiting.clear();
        }
        waiting.extend(payments.into_iter().map(|payment| (payment, None)));
    }

    fn numbered(&self, numbers: &[(String, i64)]) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        for (payment, number) in numbers {
            if let Some(slot) = waiting.get_mut(payment) {
                *slot = Some(*number);
            }
        }
    }

    fn collect(&self, payment: &str) -> Option<i64> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(payment).flatten()
    }
}

/// Audit events committed in this process and not chained (nor, with ledger events, positioned)
/// yet, per tenant, in the order they committed.
#[derive(Default)]
pub struct PendingPositions {
    queues: Mutex<HashMap<String, PositionQueue>>,
    /// Set when positioning failed or a commit's outcome was unknown, so the next sweep looks
    /// for audit events left without a position.
    failed: AtomicBool,
}

#[derive(Default)]
struct PositionQueue {
    rows: VecDeque<LedgerRow>,
    /// Whether a task to position this queue has been started and has not taken it yet.
    scheduled: bool,
}

impl PendingPositions {
    /// Queues `row`; true when the tenant's queue needs a task to position it.
    fn push(&self, tenant: &TenantId, row: LedgerRow) -> bool {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let queue = queues.entry(tenant.as_str().to_owned()).or_default();
        queue.rows.push_back(row);
        !std::mem::replace(&mut queue.scheduled, true)
    }

    /// Everything queued for the tenant, in commit order. The tenant stays listed (a queue is
    /// small), so that closing the store finds every tenant whose positioning may be under way.
    fn take(&self, tenant: &TenantId) -> Vec<LedgerRow> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = queues.get_mut(tenant.as_str()) else { return Vec::new() };
        queue.scheduled = false;
        std::mem::take(&mut queue.rows).into()
    }

    /// Puts rows whose positioning failed back in front of anything queued since, so they keep
    /// their place.
    fn put_back(&self, tenant: &TenantId, rows: Vec<LedgerRow>) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let queue = queues.entry(tenant.as_str().to_owned()).or_default();
        for row in rows.into_iter().rev() {
            queue.rows.push_front(row);
        }
    }

    /// Every tenant this process has queued events for since it started.
    fn tenants(&self) -> Vec<TenantId> {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.keys().filter_map(|tenant| TenantId::parse(tenant)).collect()
    }
}

impl Store {
    /// The number of the payment `key`, created by a change this process committed (or by one a
    /// replay answers): positions the tenant's queued events, which numbers the payment, and
    /// returns its number; None when positioning failed (the payment is then numbered by the next
    /// try or sweep).
    pub async fn number_payment(&self, tenant: &TenantId, key: String) -> Option<i64> {
        self.position_events(tenant).await;
        if let Some(number) = self.pending_numbers().collect(&key) {
            return Some(number);
        }
        // Numbered before this request waited for it (by the sweep, or by another process), or
        // not yet: committed by another process that has not positioned it (this request is a
        // replay of one it answered), or left by a stop. Positioning what awaits in the database
        // numbers it; a guarded write, so racing that process does no harm.
        match self.payment_number(&key).await.ok().flatten() {
            Some(number) => Some(number),
            None => {
                if let Err(error) = self.position_all_pending_events(true).await {
                    tracing::warn!(%error, "positioning events awaiting in the database failed");
                }
                self.payment_number(&key).await.ok().flatten()
            }
        }
    }

    async fn payment_number(&self, key: &str) -> AppResult<Option<i64>> {
        let mut found = self.query("SELECT VALUE number FROM ONLY $id", Vars::new().set("id", record("payment", key))).await?;
        found.first::<i64>(0)
    }

    /// Positions every ledger event left without a position, numbering the payments they
    /// created ([`Store::position_all_pending_events`]), and numbers any payment an earlier
    /// version of Settle left unnumbered. Runs at start and whenever positioning failed.
    pub async fn number_and_position_leftovers(&self, at_start: bool) -> AppResult<()> {
        self.position_all_pending_events(at_start).await?;
        if at_start {
            self.number_payments_of_earlier_versions().await?;
        }
        Ok(())
    }

    /// Before version 7 payments were numbered in a transaction of their own, after their
    /// commit; one whose process stopped in between has a positioned event and no number. No
    /// index finds a missing number, so this reads every payment: it runs at starts until it has
    /// once left every payment numbered, which `settle_meta:earlier_payments_numbered` records
    /// (since version 7 a payment left without its number also awaits its position, and the
    /// positioning sweep numbers it).
    async fn number_payments_of_earlier_versions(&self) -> AppResult<()> {
        let mut done = self.query("SELECT VALUE id FROM settle_meta:earlier_payments_numbered", Vars::new()).await?;
        if done.first::<RecordId>(0)?.is_some() {
            return Ok(());
        }
        let mut results = self
            .query("SELECT id, tenant FROM payment WHERE number = NONE ORDER BY id", Vars::new())
            .await?;
        let Value::Array(rows) = results.value(0)? else { return Ok(()) };
        let mut by_tenant: HashMap<String, Vec<RecordId>> = HashMap::new();
        for row in rows.into_iter() {
            let Value::Object(row) = row else { continue };
            let (Some(Value::RecordId(id)), Some(Value::String(tenant))) = (row.get("id"), row.get("tenant")) else {
                continue;
            };
            by_tenant.entry(tenant.clone()).or_default().push(id.clone());
        }
        for (tenant, ids) in by_tenant {
            let Some(tenant) = TenantId::parse(&tenant) else { continue };
            let _turn = self.locks().lock(&counter_lock(&tenant, EVENT_COUNTER)).await;
            let ids = &ids;
            self.transaction(|tx| give_next_numbers(tx, &tenant, PAYMENT_COUNTER, "number", ids)).await?;
        }
        self.query("UPSERT settle_meta:earlier_payments_numbered SET at = time::now() RETURN NONE", Vars::new()).await?;
        Ok(())
    }
}

impl Store {
    /// Queues the audit events a transaction wrote with ledger events, the moment it committed,
    /// and starts a task for each tenant queue that has none on its way.
    pub(super) fn queue_positions(&self, committed: Vec<(TenantId, LedgerRow)>) {
        for (tenant, row) in committed {
            // Marked before anyone can number them, so the numbers reach the requests waiting.
            self.pending_numbers().wait_for(row.new_payments());
            if self.pending_positions().push(&tenant, row) {
                let store = self.clone();
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn(async move { store.position_events(&tenant).await })),
                    // No runtime to run it on: the next call of position_events or the sweep does it.
                    Err(_) => self.pending_positions().failed.store(true, Ordering::Relaxed),
                }
            }
        }
    }

    /// A commit of audit events with ledger events failed. A conflict committed nothing (the
    /// transaction runs again); any other failure may have committed, so the next sweep looks.
    pub(super) fn commit_failed_with_positions(&self, awaiting: &[(TenantId, LedgerRow)], error: &AppError) {
        if !awaiting.is_empty() && error.code != ErrorCode::TransactionConflict {
            tracing::warn!(%error, "a commit with ledger events failed; the next sweep positions them if it committed");
            self.pending_positions().failed.store(true, Ordering::Relaxed);
        }
    }

    /// Positions every ledger event of `tenant` committed in this process and not positioned yet,
    /// in the order they committed, and publishes them. A mutation calls it after its commit, once
    /// it has released its turns, to have its own events positioned and published before it
    /// answers; without that call they are positioned moments later by a task the commit started.
    /// When positioning fails the events keep their place in the queue for the next try, and the
    /// next sweep looks for them too.
    pub async fn position_events(&self, tenant: &TenantId) {
        let pending = self.pending_positions();
        let _turn = self.locks().lock(&counter_lock(tenant, EVENT_COUNTER)).await;
        let rows = pending.take(tenant);
        if rows.is_empty() {
            return;
        }
        match self.assign_positions(tenant, &rows).await {
            Ok(positions) => self.publish_positioned(rows, positions),
            Err(error) => {
                tracing::warn!(%tenant, %error, "positioning ledger events failed; they are positioned by the next try or sweep");
                pending.put_back(tenant, rows);
                pending.failed.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Positions what this process has queued and waits for positionings under way (each holds
    /// its tenant's turn), so that closing the database never cuts one short. Called by
    /// [`Store::close`] once no more requests are served.
    pub(super) async fn finish_positioning(&self) {
        for tenant in self.pending_positions().tenants() {
            self.position_events(&tenant).await;
        }
    }

    /// Gives the audit events `rows` of `tenant` that have no position yet the tenant's next
    /// positions, in the order of `rows`, in one transaction; returns (index in `rows`,
    /// position) of each positioned. The caller holds the tenant's positioning turn.
    /// The same transaction numbers the payments those events created, in the same order, and
    /// adds their takings changes to the tenant's takings sums: an event is positioned once, so
    /// its payment is numbered once and its changes are added once.
    async fn assign_positions(&self, tenant: &TenantId, rows: &[LedgerRow]) -> AppResult<Vec<(usize, i64)>> {
        let (positioned, numbered) = self.transaction(|tx| async move { place_committed(&tx, tenant, rows).await }).await?;
        self.pending_numbers().numbered(&numbered);
        Ok(positioned)
    }

    fn publish_positioned(&self, rows: Vec<LedgerRow>, positions: Vec<(usize, i64)>) {
        let mut rows: Vec<Option<LedgerRow>> = rows.into_iter().map(Some).collect();
        for (index, position) in positions {
            let Some(row) = rows.get_mut(index).and_then(Option::take) else { continue };
            self.publish_at(row, position);
        }
    }

    /// Publishes the audit event `row`, committed at `position`, on the event bus.
    fn publish_at(&self, row: LedgerRow, position: i64) {
        match row.into_record(Some(position)) {
            Ok(record) => self.events().publish(record),
            // Subscribers see the gap and read the store, which reports the same fault.
            Err(error) => tracing::error!(%error, position, "a positioned audit event's ledger events cannot be read"),
        }
    }

    /// Positions every audit event with ledger events left without a position: first those this
    /// process has queued, in the order they committed; then any other, in key order (keys are
    /// UUIDv7, so creation order): left by a stop between a commit and its positioning, by a
    /// failed positioning, or committed by another process that has not positioned them yet.
    /// Runs at start, whenever positioning failed, and on a database shared with other
    /// processes at every turn of the reconciler: a process that died between a commit and its
    /// positioning leaves the change for the others (positioning the same event twice is not
    /// possible: the positioning transaction reads each event's position first).
    pub async fn position_all_pending_events(&self, at_start: bool) -> AppResult<()> {
        let pending = self.pending_positions();
        let failed = pending.failed.swap(false, Ordering::Relaxed);
        if !at_start && !failed && self.other_processes_poll().is_none() {
            return Ok(());
        }
        for tenant in pending.tenants() {
            self.position_events(&tenant).await;
        }
        let mut found = self
            .query(
                "SELECT id, tenant, at, actor, action, events, takings, position, content_hash FROM audit_event WHERE awaiting_position = true ORDER BY id",
                Vars::new(),
            )
            .await
            .inspect_err(|_| pending.failed.store(true, Ordering::Relaxed))?;
        let mut by_tenant: Vec<(String, Vec<LedgerRow>)> = Vec::new();
        for row in found.rows::<LedgerRow>(0)? {
            match by_tenant.iter_mut().find(|(tenant, _)| *tenant == row.tenant) {
                Some((_, rows)) => rows.push(row),
                None => by_tenant.push((row.tenant.clone(), vec![row])),
            }
        }
        for (tenant, rows) in by_tenant {
            let Some(tenant) = TenantId::parse(&tenant) else { continue };
            let _turn = self.locks().lock(&counter_lock(&tenant, EVENT_COUNTER)).await;
            match self.assign_positions(&tenant, &rows).await {
                Ok(positions) => self.publish_positioned(rows, positions),
                Err(error) => {
                    pending.failed.store(true, Ordering::Relaxed);
                    return Err(error);
                }
            }
        }
        Ok(())
    }
}

/// The numbers a transaction gives its own audit events and payments as it writes them, instead
/// of a positioning transaction after its commit: the next payment number, and each audit event's
/// sequence and link in the chain and, with ledger events, its position. Taken from the counters
/// as the transaction read them at its start ([`PlacingTurn::begin`]) and written back once at its
/// end ([`PlacingTurn::finish`]); a transaction that does not commit gives none of them.
pub(crate) struct Placing {
    head: ChainHead,
    next_position: i64,
    next_payment: i64,
    /// The sequence, position and payment number as read, so that only counters that moved are
    /// written.
    read: (i64, i64, i64),
    /// The takings changes of the events placed (R1), added to the tenant's sums at the end.
    takings: Vec<TakingsChange>,
    /// The events placed with a position, to be published once the transaction commits.
    positioned: Vec<(LedgerRow, i64)>,
    /// What placing the earlier commits gave: (index in the earlier rows, position), and
    /// (payment, number).
    earlier: (Vec<(usize, i64)>, Vec<(String, i64)>),
}

/// An audit event's place, given in the transaction that writes it.
pub(crate) struct Place {
    pub sequence: i64,
    pub chain: String,
    pub position: Option<i64>,
}

impl Placing {
    /// The number of a payment this transaction creates.
    pub(crate) fn payment_number(&mut self) -> i64 {
        self.next_payment += 1;
        self.next_payment - 1
    }

    /// The place of the audit event `row` this transaction writes, with the takings changes it
    /// carries: the next link of the chain (H1) and, with ledger events, the next position (E2).
    pub(crate) fn place(&mut self, row: &LedgerRow, takings: Vec<TakingsChange>) -> Place {
        let sequence = self.head.sequence + 1;
        let chain = link(&self.head.chain, row.content_hash.as_deref().unwrap_or_default(), sequence);
        self.head = ChainHead { sequence, chain: chain.clone() };
        let position = row.events.is_some().then(|| {
            self.next_position += 1;
            self.next_position - 1
        });
        if let Some(position) = position {
            self.positioned.push((row.clone(), position));
        }
        self.takings.extend(takings);
        Place { sequence, chain, position }
    }
}

/// What a transaction placed, to be published once it committed.
pub(crate) struct Placed {
    earlier: (Vec<(usize, i64)>, Vec<(String, i64)>),
    positioned: Vec<(LedgerRow, i64)>,
}

/// The tenant's positioning turn, held by a writer whose transactions place their own audit
/// events and payments as they write them ([`Placing`]): the practice's payment writer
/// (`commands/pay_together.rs`). Holding the turn keeps every other positioning of the tenant in
/// this process out, so the counters the transaction reads are not moved under it in this
/// process (another process moving them makes it conflict and run again).
///
/// The audit events this process committed before and has not positioned yet are taken with the
/// turn and placed first, by the first transaction that commits: the order of the chain and of
/// positions stays the order of commits. When none commits they go back to the queue.
pub(crate) struct PlacingTurn<'s> {
    store: &'s Store,
    tenant: TenantId,
    earlier: Mutex<Vec<LedgerRow>>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Store {
    /// Waits for the tenant's positioning turn (see [`PlacingTurn`]).
    pub(crate) async fn placing_turn(&self, tenant: &TenantId) -> PlacingTurn<'_> {
        let turn = self.locks().lock(&counter_lock(tenant, EVENT_COUNTER)).await;
        let earlier = self.pending_positions().take(tenant);
        PlacingTurn { store: self, tenant: tenant.clone(), earlier: Mutex::new(earlier), _turn: turn }
    }
}

impl PlacingTurn<'_> {
    fn earlier(&self) -> std::sync::MutexGuard<'_, Vec<LedgerRow>> {
        self.earlier.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts placing in `tx`: places the earlier commits, then reads the tenant's counters. From
    /// then on the records `tx` creates and the invoices it changes wait for
    /// [`PlacingTurn::finish`] (`Tx::create_then`, `Tx::invoice_changed`).
    pub(crate) async fn begin(&self, tx: &TxRef) -> AppResult<()> {
        let earlier = self.earlier().clone();
        let placed_earlier = if earlier.is_empty() { Default::default() } else { place_committed(tx, &self.tenant, &earlier).await? };
        let counters = [AUDIT_COUNTER, EVENT_COUNTER, PAYMENT_COUNTER].map(|kind| counter_record(&self.tenant, kind));
        let mut found = tx
            .query(
                "SELECT next, head FROM ONLY $audit; SELECT VALUE next FROM ONLY $event; SELECT VALUE next FROM ONLY $payment;",
                Vars::new().set("audit", counters[0].clone()).set("event", counters[1].clone()).set("payment", counters[2].clone()),
            )
            .await?;
        let head = found.first::<CounterRow>(0)?.map_or_else(ChainHead::empty, CounterRow::head);
        let next_position = found.first::<i64>(1)?.unwrap_or(1);
        let next_payment = found.first::<i64>(2)?.unwrap_or(1);
        tx.gather_writes();
        tx.start_placing(Placing {
            read: (head.sequence, next_position, next_payment),
            head,
            next_position,
            next_payment,
            takings: Vec::new(),
            positioned: Vec::new(),
            earlier: placed_earlier,
        });
        Ok(())
    }

    /// Ends placing in `tx`: creates the records the transaction gathered, writes the invoices it
    /// changed, writes the counters that moved and adds the takings changes to the tenant's sums,
    /// in one round trip.
    pub(crate) async fn finish(&self, tx: &TxRef) -> AppResult<Placed> {
        let placing = tx.take_placing().ok_or_else(|| AppError::internal("a transaction ended placing it never began"))?;
        let mut sql = String::new();
        let mut vars = Vars::new();
        // The group's new records, one INSERT per table (`Tx::create_then`), and each invoice it
        // paid, once, as it stands after the group's last payment of it (`Tx::invoice_changed`).
        let gathered = tx.take_gathered();
        for (table, records) in gathered.created {
            sql.push_str(&format!("INSERT INTO {table} $new_{table} RETURN NONE;"));
            vars = vars.set(&format!("new_{table}"), records);
        }
        for (n, invoice) in gathered.invoices.into_values().enumerate() {
            sql.push_str(&format!(
                "UPDATE $invoice{n} SET paid = $paid{n}, active_allocations = $allocations{n}, status = $status{n}, updated_at = time::now() RETURN NONE;"
            ));
            vars = vars
                .set(&format!("invoice{n}"), invoice.id)
                .set(&format!("paid{n}"), invoice.doc.paid)
                .set(&format!("allocations{n}"), invoice.doc.active_allocations)
                .set(&format!("status{n}"), invoice.doc.status);
        }
        if placing.head.sequence != placing.read.0 {
            sql.push_str("UPSERT $audit SET next = $sequence, head = $head RETURN NONE;");
            vars = vars.set("audit", counter_record(&self.tenant, AUDIT_COUNTER)).set("sequence", placing.head.sequence + 1).set("head", placing.head.chain);
        }
        for (kind, read, next) in [(EVENT_COUNTER, placing.read.1, placing.next_position), (PAYMENT_COUNTER, placing.read.2, placing.next_payment)] {
            if next != read {
                sql.push_str(&format!("UPSERT ${kind} SET next = ${kind}_next RETURN NONE;"));
                vars = vars.set(kind, counter_record(&self.tenant, kind)).set(&format!("{kind}_next"), next);
            }
        }
        let (takings, vars) = takings_sums_query(&self.tenant, &sum_takings_changes(&placing.takings), vars);
        sql.push_str(&takings);
        if !sql.is_empty() {
            tx.query(&sql, vars).await?;
        }
        Ok(Placed { earlier: placing.earlier, positioned: placing.positioned })
    }

    /// After the transaction that gave `placed` committed: hands the numbers of earlier payments
    /// to the requests waiting for them and publishes, in position order, the earlier events and
    /// then the transaction's own.
    pub(crate) fn committed(&self, placed: Placed) {
        let earlier = std::mem::take(&mut *self.earlier());
        let (earlier_positions, numbered) = placed.earlier;
        self.store.pending_numbers().numbered(&numbered);
        self.store.publish_positioned(earlier, earlier_positions);
        for (row, position) in placed.positioned {
            self.store.publish_at(row, position);
        }
    }
}

impl Drop for PlacingTurn<'_> {
    /// Earlier commits no transaction placed go back to the front of the queue, for the next
    /// positioning.
    fn drop(&mut self) {
        let earlier = std::mem::take(&mut *self.earlier());
        if earlier.is_empty() {
            return;
        }
        self.store.pending_positions().put_back(&self.tenant, earlier);
        let (store, tenant) = (self.store.clone(), self.tenant.clone());
        match tokio::runtime::Handle::try_current() {
            // Waits for this turn to end.
            Ok(runtime) => drop(runtime.spawn(async move { store.position_events(&tenant).await })),
            Err(_) => self.store.pending_positions().failed.store(true, Ordering::Relaxed),
        }
    }
}

/// Places the committed audit events `rows` of `tenant` in the caller's transaction: chains each
/// that is not chained yet, positions each with ledger events that has no position yet, numbers
/// the payments those events created and adds their takings changes, all in the order of `rows`.
/// Returns (index in `rows`, position) of each positioned and (payment, number) of each numbered.
async fn place_committed(tx: &TxRef, tenant: &TenantId, rows: &[LedgerRow]) -> AppResult<(Vec<(usize, i64)>, Vec<(String, i64)>)> {
    // Every audit event takes its place in the chain (H1); only changes with ledger events take a
    // position (E2): both in one write of each event.
    let events: Vec<ToChain> =
        rows.iter().map(|row| ToChain { id: &row.id, content_hash: row.content_hash.as_deref(), positioned: row.events.is_some() }).collect();
    let positioned = chain_events(tx, tenant, &events, true).await?;
    let created: Vec<&LedgerRow> = positioned.iter().map(|&(index, _)| &rows[index]).collect();
    let payments: Vec<String> = created.iter().flat_map(|row| row.new_payments()).collect();
    let payment_ids: Vec<RecordId> = payments.iter().map(|key| record("payment", key)).collect();
    let numbers = give_next_numbers(tx.clone(), tenant, PAYMENT_COUNTER, "number", &payment_ids).await?;
    let numbered: Vec<(String, i64)> = numbers.into_iter().map(|(index, number)| (payments[index].clone(), number)).collect();
    add_takings_changes(tx, tenant, &created).await?;
    Ok((positioned, numbered))
}

/// Gives the records `ids` of `tenant` that have no `field` yet the next numbers of the tenant's
/// sequence `kind`, in the order of `ids`, in the caller's transaction; returns (index in `ids`, number) of each numbered. A record numbered meanwhile (by a
/// sweep, or by another process) is left as it is, and the others are numbered again so that no
/// number goes unused. Each record is read once, by its own guarded UPDATE: there is no read
/// before the writes.
async fn give_next_numbers(tx: TxRef, tenant: &TenantId, kind: &str, field: &str, ids: &[RecordId]) -> AppResult<Vec<(usize, i64)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let first = next_numbers(&tx, tenant, kind, ids.len() as i64).await?;
    let write = |indexes: &[usize], guarded: bool| {
        let mut sql = String::new();
        let mut vars = Vars::new();
        for (n, &index) in indexes.iter().enumerate() {
            let guard = if guarded { format!(" WHERE {field} = NONE") } else { String::new() };
            sql.push_str(&format!("UPDATE $r{n} SET {field} = $n{n}{guard} RETURN VALUE id;"));
            vars = vars.set(&format!("r{n}"), ids[index].clone()).set(&format!("n{n}"), first + n as i64);
        }
        (sql, vars)
    };
    let all: Vec<usize> = (0..ids.len()).collect();
    let (sql, vars) = write(&all, true);
    let mut written = tx.query(&sql, vars).await?;
    let mut numbered = Vec::with_capacity(ids.len());
    for index in all {
        if !written.rows::<RecordId>(index)?.is_empty() {
            numbered.push(index);
        }
    }
    if numbered.len() < ids.len() {
        if !numbered.is_empty() {
            let (sql, vars) = write(&numbered, false);
            tx.query(&sql, vars).await?;
        }
        return_numbers(&tx, tenant, kind, first + numbered.len() as i64).await?;
    }
    Ok(numbered.into_iter().enumerate().map(|(n, index)| (index, first + n as i64)).collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::events::LedgerEvent;
    use crate::store::audit::{AuditEntry, Mutation};
    use crate::store::ledger_events::{memory_store, write_raw_event};

    fn voided(payment: &str) -> Vec<LedgerEvent> {
        vec![LedgerEvent::PaymentVoided { payment: payment.to_owned() }]
    }

    async fn position_of(store: &Store, key: &str) -> Option<i64> {
        let mut found =
            store.query("SELECT VALUE position FROM ONLY $id", Vars::new().set("id", record("audit_event", key))).await.unwrap();
        found.first::<i64>(0).unwrap()
    }

    /// The audit event `key` as a committing transaction queues it.
    async fn row_of(store: &Store, key: &str) -> LedgerRow {
        let mut found = store
            .query("SELECT id, tenant, at, actor, action, events, position FROM ONLY $id", Vars::new().set("id", record("audit_event", key)))
            .await
            .unwrap();
        found.first::<LedgerRow>(0).unwrap().expect("the audit event exists")
    }

    /// A payment an earlier version left without its number is numbered at the next start; once a
    /// start has left none, later starts no longer read every payment looking for one.
    #[tokio::test]
    async fn payments_an_earlier_version_left_unnumbered_are_looked_for_until_none_is_left() {
        let store = memory_store().await;
        let unnumbered = |key: &str| {
            format!("CREATE payment:{key} SET tenant = 't', amount = 10dec, allocated = 0dec, refunded = 0dec, void = false RETURN NONE")
        };
        let number_of = |key: &'static str| {
            let store = store.clone();
            async move {
                let mut found = store.query("SELECT VALUE number FROM ONLY $id", Vars::new().set("id", record("payment", key))).await.unwrap();
                found.first::<i64>(0).unwrap()
            }
        };
        store.query(&unnumbered("a"), Vars::new()).await.unwrap();
        store.number_and_position_leftovers(true).await.unwrap();
        assert_eq!(number_of("a").await, Some(1));

        // Written here only to be seen: no release since version 7 leaves a payment so.
        store.query(&unnumbered("b"), Vars::new()).await.unwrap();
        store.number_and_position_leftovers(true).await.unwrap();
        assert_eq!(number_of("b").await, None, "the payments were not read again");
    }

    /// Two changes of one record are positioned in the order they committed, which is the order
    /// they were queued in, whatever their keys.
    #[tokio::test]
    async fn e2_queued_events_are_positioned_in_commit_order_not_key_order() {
        let store = memory_store().await;
        let tenant = TenantId::parse("order").unwrap();
        let keys = [
            write_raw_event(&store, &tenant, "a", None).await,
            write_raw_event(&store, &tenant, "b", None).await,
            write_raw_event(&store, &tenant, "c", None).await,
        ];
        let mut bus = store.events().subscribe();
        for key in [&keys[2], &keys[0], &keys[1]] {
            store.pending_positions().push(&tenant, row_of(&store, key).await);
        }
        store.position_events(&tenant).await;
        assert_eq!(position_of(&store, &keys[2]).await, Some(1));
        assert_eq!(position_of(&store, &keys[0]).await, Some(2));
        assert_eq!(position_of(&store, &keys[1]).await, Some(3));
        let published: Vec<(i64, String)> = (0..3)
            .map(|_| bus.try_recv().expect("published"))
            .map(|record| (record.position, record.audit_event.clone()))
            .collect();
        assert_eq!(published, vec![(1, keys[2].clone()), (2, keys[0].clone()), (3, keys[1].clone())], "published after commit, in position order");

        // The sweep finds those left without a position (a stop before positioning), in key order.
        let left = [write_raw_event(&store, &tenant, "d", None).await, write_raw_event(&store, &tenant, "e", None).await];
        store.position_all_pending_events(true).await.unwrap();
        assert_eq!(position_of(&store, &left[0]).await, Some(4));
        assert_eq!(position_of(&store, &left[1]).await, Some(5));
        assert_eq!(store.ledger_event_count(&tenant).await.unwrap(), 5);
        // Queued again after the sweep: positioned once only.
        store.pending_positions().push(&tenant, row_of(&store, &left[0]).await);
        store.position_events(&tenant).await;
        assert_eq!(store.ledger_event_count(&tenant).await.unwrap(), 5, "no position taken twice");
        // Queued with one positioned meanwhile: the others still take the next positions, in order.
        let later = [write_raw_event(&store, &tenant, "f", None).await, write_raw_event(&store, &tenant, "g", None).await];
        for key in [&later[1], &left[1], &later[0]] {
            store.pending_positions().push(&tenant, row_of(&store, key).await);
        }
        store.position_events(&tenant).await;
        assert_eq!((position_of(&store, &later[1]).await, position_of(&store, &later[0]).await), (Some(6), Some(7)));
        assert_eq!(position_of(&store, &left[1]).await, Some(5), "a position is never changed");
        assert_eq!(store.ledger_event_count(&tenant).await.unwrap(), 7);
    }

    /// A committed change with ledger events is positioned without anyone waiting for it; one
    /// without, or one that rolled back, is not.
    #[tokio::test]
    async fn e1_only_committed_changes_with_events_are_positioned() {
        let store = memory_store().await;
        let tenant = TenantId::parse("commit").unwrap();
        let mutation = Mutation { tenant: &tenant, actor: "tester", request_id: "r", operation: "test", idempotency: None, dry_run: false };
        store.record_event(&mutation, AuditEntry { action: "payment.void".into(), events: voided("p1"), ..AuditEntry::default() }).await.unwrap();
        store.record_event(&mutation, AuditEntry { action: "client.create".into(), ..AuditEntry::default() }).await.unwrap();
        let refused: AppResult<()> = store
            .mutate(&mutation, |_tx| async move {
                Err::<((), AuditEntry), _>(AppError::invalid("refused"))
            })
            .await;
        assert!(refused.is_err());
        store.record_event(&mutation, AuditEntry { action: "payment.void".into(), events: voided("p2"), ..AuditEntry::default() }).await.unwrap();

        // Positioned by the task the commit started.
        let mut records = Vec::new();
        for _ in 0..100 {
            records = store.ledger_events_after(&tenant, 0, 10).await.unwrap();
            if records.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let positioned: Vec<(i64, Vec<LedgerEvent>)> = records.into_iter().map(|r| (r.position, r.events.clone())).collect();
        assert_eq!(positioned, vec![(1, voided("p1")), (2, voided("p2"))]);
        let mut unpositioned = store
            .query("SELECT VALUE action FROM audit_event WHERE tenant = 'commit' AND position = NONE", Vars::new())
            .await
            .unwrap();
        assert_eq!(unpositioned.rows::<String>(0).unwrap(), vec!["client.create".to_owned()], "no ledger events, no position");
    }

    /// A group that places what it writes (the practice's payment writer) places this process's
    /// earlier commits first, in the order they were queued, then its own events, and publishes
    /// them in that order. A group of which nothing commits places nothing and gives the earlier
    /// commits back to the queue, which is then positioned without anyone asking.
    #[tokio::test]
    async fn e2_a_group_places_earlier_commits_first_and_gives_them_back_when_nothing_commits() {
        let store = memory_store().await;
        let tenant = TenantId::parse("group").unwrap();
        let mutation = Mutation { tenant: &tenant, actor: "tester", request_id: "r", operation: "test", idempotency: None, dry_run: false };
        let mut bus = store.events().subscribe();
        let queue = |keys: Vec<String>| {
            let (store, tenant) = (store.clone(), tenant.clone());
            async move {
                for key in keys {
                    store.pending_positions().push(&tenant, row_of(&store, &key).await);
                }
            }
        };

        let earlier = vec![write_raw_event(&store, &tenant, "a", None).await, write_raw_event(&store, &tenant, "b", None).await];
        queue(vec![earlier[1].clone(), earlier[0].clone()]).await;
        let refused: Vec<AppResult<()>> = store
            .mutate_together(&[mutation.clone()], |_tx, _n| async move { Err::<((), AuditEntry), _>(AppError::invalid("refused")) })
            .await;
        assert!(refused[0].is_err());
        for _ in 0..100 {
            if position_of(&store, &earlier[0]).await.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!((position_of(&store, &earlier[1]).await, position_of(&store, &earlier[0]).await), (Some(1), Some(2)), "given back in queue order");

        let more = vec![write_raw_event(&store, &tenant, "c", None).await, write_raw_event(&store, &tenant, "d", None).await];
        queue(more.clone()).await;
        let written: Vec<AppResult<()>> = store
            .mutate_together(&[mutation.clone(), mutation.clone()], |_tx, n| async move {
                Ok(((), AuditEntry { action: "payment.void".into(), events: voided(&format!("g{n}")), ..AuditEntry::default() }))
            })
            .await;
        assert!(written.iter().all(Result::is_ok), "{written:?}");
        assert_eq!((position_of(&store, &more[0]).await, position_of(&store, &more[1]).await), (Some(3), Some(4)), "earlier commits first");
        let mut awaiting = store
            .query("SELECT VALUE position FROM audit_event WHERE tenant = 'group' AND awaiting_position = true", Vars::new())
            .await
            .unwrap();
        assert!(awaiting.rows::<Option<i64>>(0).unwrap().is_empty(), "the group's own events never await a position");
        let published: Vec<(i64, Vec<LedgerEvent>)> = (0..6).map(|_| bus.try_recv().expect("published")).map(|r| (r.position, r.events.clone())).collect();
        let expected: Vec<(i64, Vec<LedgerEvent>)> =
            ["b", "a", "c", "d", "g0", "g1"].iter().enumerate().map(|(n, payment)| (n as i64 + 1, voided(payment))).collect();
        assert_eq!(published, expected, "published in position order");
        assert_eq!(store.ledger_event_count(&tenant).await.unwrap(), 6);
    }
}
