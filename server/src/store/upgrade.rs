//! Bringing a database written by an older Settle up to the current schema version, once, at
//! start-up. Each step is idempotent and runs in batches, so a crash halfway through is mended by
//! the next start (the version is recorded only after every step has finished).

use surrealdb::types::{RecordId, RecordIdKey, RecordIdKeyRange, SurrealValue};

use std::collections::{BTreeMap, HashSet};

use rust_decimal::Decimal;

use super::audit_chain::{CHAIN_FIELDS, ToChain, chain_events};
use super::invoices::parse_date;
use super::reports::add_takings_sums;
use super::{Store, Vars, rows};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::events::{LedgerEvent, from_stored};
use crate::ledger::reports::{TakingsChange, TakingsPlace, sum_takings_changes};

/// Records updated per transaction while upgrading.
const BATCH: i64 = 100;

/// Runs every step between the database's recorded schema version and the current one.
pub(super) async fn upgrade(store: &Store, from_version: i64) -> AppResult<()> {
    if from_version < 2 {
        for table in ["invoice", "payment", "audit_event"] {
            backfill_page_keys(store, table).await?;
        }
    }
    if from_version < 3 {
        for table in ["allocation", "refund", "credit_note"] {
            backfill_page_keys(store, table).await?;
        }
    }
    if from_version < 4 {
        // Version 4 also added ledger events and their positions to audit events. Changes
        // recorded before have no ledger events and so get no position: nothing to fill in.
        claim_charge_keys(store).await?;
    }
    if from_version < 5 {
        // Version 5 added the reports' indexes (built by the schema itself), each payment's
        // `credit` and each refund's `method` and `location`.
        recompute_payment_credit(store).await?;
        copy_payment_fields_to_refunds(store).await?;
    }
    if from_version < 6 {
        // Version 6 keeps takings as sums, added to as each change is positioned; the changes
        // recorded before are summed from the payments and refunds, once.
        rebuild_takings_sums(store).await?;
    }
    if from_version < 7 {
        // Version 7 chains each tenant's audit events (H1).
        chain_audit_events(store).await?;
    }
    if from_version < 8 {
        // Version 8 fills in who made the payments, credit notes and finalizations written
        // before version 6 kept it, from their audit events.
        fill_actors(store).await?;
    }
    Ok(())
}

/// The actions of the changes that create a payment, as every version of Settle recorded them:
/// each such audit event names the one payment it created.
const PAYMENT_CREATED: [&str; 4] = ["payment.record", "payment.pay_invoice", "invoice.finalize_and_pay", "charge.succeeded"];
/// The actions that always finalize the invoice they name. A charge (`charge.succeeded`)
/// finalizes only when asked to and the invoice was still a draft, which only its ledger events
/// say (since version 4).
const INVOICE_FINALIZED: [&str; 2] = ["invoice.finalize", "invoice.finalize_and_pay"];
const CREDIT_NOTE_ISSUED: &str = "credit_note.issue";
const INVOICE_REVERTED: &str = "invoice.revert";

/// Version 6 began to keep the actor (the token's subject) of each payment (`created_by`),
/// credit note (`created_by`) and finalization (`finalized_by`), which balance explanations show.
/// Those written before have it only on the audit event that made them, written in the same
/// transaction (X3), so it is copied from there; audit events are read, never changed (their
/// hashes chain them, H1).
///
/// A field is filled only while it is NONE, so an actor the application wrote is never replaced
/// and a start interrupted halfway fills the rest at the next start. An invoice finalized more
/// than once was reverted to draft in between (I5), and takes the actor of its latest
/// finalization: those invoices are found first (reverts are rare), and their latest finalizer
/// is written after the walk has seen every finalization; every other invoice was finalized at
/// most once. An invoice edited since its finalization has no `finalized_at` and, as the
/// application does on an edit, no finalizer either.
async fn fill_actors(store: &Store) -> AppResult<()> {
    let reverted: Vec<Vec<String>> = store
        .query("SELECT VALUE records FROM audit_event WHERE action = $action", Vars::new().set("action", INVOICE_REVERTED.to_owned()))
        .await?
        .rows(0)?;
    let reverted: HashSet<String> = reverted.iter().flatten().filter_map(|record| record.strip_prefix("invoice:")).map(str::to_owned).collect();
    let latest = std::sync::Mutex::new(BTreeMap::<String, String>::new());
    let (reverted, latest_ref) = (&reverted, &latest);
    in_batches(store, "audit_event", "id, actor, action, records, events", |batch: Vec<ActorRow>| async move {
        let mut fills = ActorFills::default();
        for row in &batch {
            if PAYMENT_CREATED.contains(&row.action.as_str()) {
                fills.payments.extend(row.named("payment").iter().map(|key| ActorFill::new("payment", key, &row.actor)));
            }
            if row.action == CREDIT_NOTE_ISSUED {
                fills.credit_notes.extend(row.named("credit_note").iter().map(|key| ActorFill::new("credit_note", key, &row.actor)));
            }
            for invoice in row.finalized()? {
                if reverted.contains(&invoice) {
                    latest_ref.lock().unwrap_or_else(|p| p.into_inner()).insert(invoice, row.actor.clone());
                } else {
                    fills.invoices.push(ActorFill::new("invoice", &invoice, &row.actor));
                }
            }
        }
        fills.write(store).await
    })
    .await?;
    let latest: Vec<ActorFill> =
        latest.into_inner().unwrap_or_else(|p| p.into_inner()).iter().map(|(invoice, actor)| ActorFill::new("invoice", invoice, actor)).collect();
    for batch in latest.chunks(BATCH as usize) {
        ActorFills { invoices: batch.to_vec(), ..ActorFills::default() }.write(store).await?;
    }
    Ok(())
}

#[derive(SurrealValue)]
struct ActorRow {
    id: RecordId,
    actor: String,
    action: String,
    records: Vec<String>,
    events: Option<String>,
}

impl HasId for ActorRow {
    fn id(&self) -> &RecordId {
        &self.id
    }
}

impl ActorRow {
    /// The keys of the records of `table` the event names, each once (finalize_and_pay names its
    /// invoice again beside the allocation it made).
    fn named(&self, table: &str) -> Vec<String> {
        let mut keys: Vec<String> =
            self.records.iter().filter_map(|record| record.strip_prefix(table)?.strip_prefix(':')).map(str::to_owned).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The invoices this change finalized (I2).
    fn finalized(&self) -> AppResult<Vec<String>> {
        if INVOICE_FINALIZED.contains(&self.action.as_str()) {
            return Ok(self.named("invoice"));
        }
        if self.action != "charge.succeeded" {
            return Ok(Vec::new());
        }
        let events = from_stored(self.events.as_deref())
            .map_err(|error| AppError::internal(format!("the ledger events of audit event {}: {error}", rows::key_of(&self.id))))?;
        Ok(events.into_iter().filter_map(|event| if let LedgerEvent::InvoiceFinalized { invoice } = event { Some(invoice) } else { None }).collect())
    }
}

#[derive(Clone, SurrealValue)]
struct ActorFill {
    id: RecordId,
    actor: String,
}

impl ActorFill {
    fn new(table: &str, key: &str, actor: &str) -> ActorFill {
        ActorFill { id: rows::record(table, key), actor: actor.to_owned() }
    }
}

/// The actors one batch of audit events gives, written in one transaction.
#[derive(Default)]
struct ActorFills {
    payments: Vec<ActorFill>,
    credit_notes: Vec<ActorFill>,
    invoices: Vec<ActorFill>,
}

impl ActorFills {
    async fn write(self, store: &Store) -> AppResult<()> {
        if self.payments.is_empty() && self.credit_notes.is_empty() && self.invoices.is_empty() {
            return Ok(());
        }
        store
            .query(
                "BEGIN;
                 FOR $row IN $payments { UPDATE $row.id SET created_by = $row.actor WHERE created_by = NONE RETURN NONE; };
                 FOR $row IN $notes { UPDATE $row.id SET created_by = $row.actor WHERE created_by = NONE RETURN NONE; };
                 FOR $row IN $invoices { UPDATE $row.id SET finalized_by = $row.actor WHERE finalized_by = NONE AND finalized_at != NONE RETURN NONE; };
                 COMMIT;",
                Vars::new().set("payments", self.payments).set("notes", self.credit_notes).set("invoices", self.invoices),
            )
            .await
            .map(drop)
    }
}

/// Gives every audit event written before version 7 its content hash, computed from its stored
/// fields, and its place in its tenant's chain, in key order (UUIDv7: creation order), a batch
/// at a time. Each tenant's part of a batch is hashed and chained in one transaction, so a start
/// interrupted halfway leaves whole links, and the next start chains the rest (an event chained
/// already keeps its place). An event left awaiting its ledger position by a stop is chained
/// here too, and positioned by the sweep after the start.
async fn chain_audit_events(store: &Store) -> AppResult<()> {
    in_batches(store, "audit_event", CHAIN_FIELDS, |batch: Vec<rows::AuditRow>| async move {
        let mut by_tenant: Vec<(String, Vec<(RecordId, String)>)> = Vec::new();
        for row in batch.iter().filter(|row| row.sequence.is_none()) {
            let hashed = (row.id.clone(), row.content().hash());
            match by_tenant.iter_mut().find(|(tenant, _)| *tenant == row.tenant) {
                Some((_, rows)) => rows.push(hashed),
                None => by_tenant.push((row.tenant.clone(), vec![hashed])),
            }
        }
        for (tenant, hashed) in by_tenant {
            let Some(tenant) = TenantId::parse(&tenant) else { continue };
            let (tenant, hashed) = (&tenant, &hashed);
            store
                .transaction(|tx| async move {
                    let updates: Vec<ContentHashUpdate> =
                        hashed.iter().map(|(id, content_hash)| ContentHashUpdate { id: id.clone(), content_hash: content_hash.clone() }).collect();
                    tx.query(
                        "FOR $row IN $updates { UPDATE $row.id SET content_hash = $row.content_hash RETURN NONE; };",
                        Vars::new().set("updates", updates),
                    )
                    .await?;
                    let links: Vec<ToChain> = hashed.iter().map(|(id, content_hash)| ToChain { id, content_hash: Some(content_hash), positioned: false }).collect();
                    chain_events(&tx, tenant, &links, false).await.map(drop)
                })
                .await?;
        }
        Ok(())
    })
    .await
}

impl HasId for rows::AuditRow {
    fn id(&self) -> &RecordId {
        &self.id
    }
}

#[derive(SurrealValue)]
struct ContentHashUpdate {
    id: RecordId,
    content_hash: String,
}

/// Sums every tenant's takings (R1) from its non-void payments and successful refunds into
/// `takings_day`, replacing what is there, so that a start interrupted halfway starts again.
async fn rebuild_takings_sums(store: &Store) -> AppResult<()> {
    let mut found = store
        .query(
            "DELETE takings_day;
             SELECT tenant, date, method, location, currency, math::sum(amount) AS amount, count() AS count FROM payment
                WHERE void = false GROUP BY tenant, date, method, location, currency;
             SELECT tenant, date, method, location, currency, math::sum(amount) AS amount, count() AS count FROM refund
                WHERE outcome = 'SUCCEEDED' GROUP BY tenant, date, method, location, currency;",
            Vars::new(),
        )
        .await?;
    let mut by_tenant: BTreeMap<String, Vec<TakingsChange>> = BTreeMap::new();
    for (statement, refunds) in [(1, false), (2, true)] {
        for row in found.rows::<TakingsSumRow>(statement)? {
            let place = TakingsPlace { date: parse_date(&row.date), method: &row.method, location: &row.location, currency: &row.currency };
            let mut change = if refunds { TakingsChange::refund_succeeded(place, row.amount) } else { TakingsChange::payment_recorded(place, row.amount) };
            if refunds { change.refunds = row.count } else { change.payments = row.count }
            by_tenant.entry(row.tenant).or_default().push(change);
        }
    }
    for (tenant, changes) in by_tenant {
        let Some(tenant) = TenantId::parse(&tenant) else { continue };
        let sums = sum_takings_changes(&changes);
        for batch in sums.chunks(BATCH as usize) {
            let tenant = &tenant;
            store.transaction(|tx| async move { add_takings_sums(&tx, tenant, batch).await }).await?;
        }
    }
    Ok(())
}

#[derive(SurrealValue)]
struct TakingsSumRow {
    tenant: String,
    date: String,
    method: String,
    location: String,
    currency: String,
    amount: Decimal,
    count: i64,
}

/// Version 5 added `credit` to payments, a value the database computes on every write of a
/// payment (schema.surql). Writing each payment written before once, unchanged, computes it.
async fn recompute_payment_credit(store: &Store) -> AppResult<()> {
    in_batches(store, "payment", "id", |batch: Vec<Id>| async move {
        let ids: Vec<RecordId> = batch.into_iter().map(|row| row.id).collect();
        store.query("UPDATE $ids RETURN NONE", Vars::new().set("ids", ids)).await.map(drop)
    })
    .await
}

/// Version 5 added to each refund the method and location of its payment (never edited, P9),
/// which takings by method and location group by. A batch of refunds reads its payments in one
/// query.
async fn copy_payment_fields_to_refunds(store: &Store) -> AppResult<()> {
    in_batches(store, "refund", "id, payment", |batch: Vec<RefundOfPayment>| async move {
        let payments: Vec<RecordId> = batch.iter().map(|row| rows::record("payment", &row.payment)).collect();
        let found: Vec<PaymentPlace> =
            store.query("SELECT id, method, location FROM $ids", Vars::new().set("ids", payments)).await?.rows(0)?;
        let places: std::collections::HashMap<String, PaymentPlace> = found.into_iter().map(|p| (rows::key_of(&p.id), p)).collect();
        let mut updates = Vec::new();
        for refund in batch {
            let place = places.get(&refund.payment).ok_or_else(|| {
                crate::error::AppError::internal(format!("refund {} names payment {}, which does not exist", rows::key_of(&refund.id), refund.payment))
            })?;
            updates.push(RefundPlace { id: refund.id, method: place.method.clone(), location: place.location.clone() });
        }
        store
            .query(
                "BEGIN; FOR $row IN $updates { UPDATE $row.id SET method = $row.method, location = $row.location RETURN NONE; }; COMMIT;",
                Vars::new().set("updates", updates),
            )
            .await
            .map(drop)
    })
    .await
}

/// Runs `step` on the records of `table` (their `fields`) in batches of [`BATCH`], walking the
/// table in key order.
async fn in_batches<T, F, Fut>(store: &Store, table: &str, fields: &str, step: F) -> AppResult<()>
where
    T: SurrealValue + HasId,
    F: Fn(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = AppResult<()>>,
{
    let mut start = std::ops::Bound::Unbounded;
    loop {
        let range = RecordId {
            table: table.into(),
            key: RecordIdKey::Range(Box::new(RecordIdKeyRange { start: start.clone(), end: std::ops::Bound::Unbounded })),
        };
        let sql = format!("SELECT {fields} FROM $range LIMIT $batch");
        let batch: Vec<T> = store.query(&sql, Vars::new().set("range", range).set("batch", BATCH)).await?.rows(0)?;
        let full = batch.len() as i64 == BATCH;
        let Some(last) = batch.last().map(|row| row.id().clone()) else { return Ok(()) };
        step(batch).await?;
        if !full {
            return Ok(());
        }
        start = std::ops::Bound::Excluded(last.key);
    }
}

trait HasId {
    fn id(&self) -> &RecordId;
}

#[derive(SurrealValue)]
struct Id {
    id: RecordId,
}

impl HasId for Id {
    fn id(&self) -> &RecordId {
        &self.id
    }
}

#[derive(SurrealValue)]
struct RefundOfPayment {
    id: RecordId,
    payment: String,
}

impl HasId for RefundOfPayment {
    fn id(&self) -> &RecordId {
        &self.id
    }
}

#[derive(SurrealValue)]
struct PaymentPlace {
    id: RecordId,
    method: String,
    location: String,
}

#[derive(SurrealValue)]
struct RefundPlace {
    id: RecordId,
    method: String,
    location: String,
}

/// Version 4 made the idempotency gate the one place that knows a request was made: a charge's
/// request claims its key there, with the charge attempt as its result. Before, an attempt alone
/// stood for its request; each such attempt gets the claim its request would make now, so that a
/// repeat of an old charge request finds it and never charges again. Claims that exist are left
/// as they are.
async fn claim_charge_keys(store: &Store) -> AppResult<()> {
    let attempts: Vec<rows::ChargeAttemptRow> = store.query("SELECT * FROM charge_attempt", Vars::new()).await?.rows(0)?;
    for attempt in attempts {
        let operation = if attempt.finalize { "finalizeInvoice" } else { "payInvoice" };
        let parts = surrealdb::types::Array::from(vec![
            surrealdb::types::Value::String(attempt.tenant.clone()),
            surrealdb::types::Value::String(attempt.idempotency_key.clone()),
        ]);
        store
            .query(
                "IF (SELECT VALUE id FROM ONLY $id) = NONE {
                    CREATE $id SET operation = $operation, request_hash = $hash, result = $result, created_at = $at RETURN NONE;
                };",
                Vars::new()
                    .set("id", RecordId::new("idempotency", RecordIdKey::Array(parts)))
                    .set("operation", operation.to_owned())
                    .set("hash", attempt.request_hash.clone())
                    .set("result", serde_json::json!({ "charge": attempt.idempotency_key }).to_string())
                    .set("at", attempt.created_at),
            )
            .await?;
    }
    Ok(())
}

/// Version 2 added `page_key` ([`rows::page_key`]) to invoices, payments and audit events, and
/// version 3 to allocations, refunds and credit notes, when they got lists that page. Records
/// written before lack the field and so would be missing from every page. The batches walk the
/// table in key order; the key is the record's own (the `key` field only some tables have is the
/// same text).
async fn backfill_page_keys(store: &Store, table: &str) -> AppResult<()> {
    let mut start = std::ops::Bound::Unbounded;
    loop {
        let range = RecordId {
            table: table.into(),
            key: RecordIdKey::Range(Box::new(RecordIdKeyRange { start: start.clone(), end: std::ops::Bound::Unbounded })),
        };
        let mut found = store
            .query("SELECT id, tenant FROM $range LIMIT $batch", Vars::new().set("range", range).set("batch", BATCH))
            .await?;
        let batch: Vec<Keyed> = found.rows(0)?;
        let Some(last) = batch.last().map(|row| row.id.clone()) else { return Ok(()) };
        let updates: Vec<PageKeyUpdate> =
            batch.iter().map(|row| PageKeyUpdate { id: row.id.clone(), page_key: rows::page_key(&row.tenant, &rows::key_of(&row.id)) }).collect();
        store
            .query(
                "BEGIN; FOR $row IN $updates { UPDATE $row.id SET page_key = $row.page_key RETURN NONE; }; COMMIT;",
                Vars::new().set("updates", updates),
            )
            .await?;
        if (batch.len() as i64) < BATCH {
            return Ok(());
        }
        start = std::ops::Bound::Excluded(last.key);
    }
}

#[derive(SurrealValue)]
struct Keyed {
    id: RecordId,
    tenant: String,
}

#[derive(SurrealValue)]
struct PageKeyUpdate {
    id: RecordId,
    page_key: String,
}
