//! The two things every mutation shares: idempotency keys (X2) and audit events (X3), both
//! written in the mutation's own transaction, so either all of it happened or none of it did.

use std::future::Future;

use chrono::Utc;
use serde::Serialize;
use serde::de::DeserializeOwned;
use surrealdb::types::{Array, RecordId, RecordIdKey, SurrealValue, Value};

use super::ledger_events::LedgerRow;
use super::rows::{AuditRow, IdempotencyRow, new_key, page_key, record};
use super::{ListFilter, Store, TxRef, Vars};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::events::{LedgerEvent, to_stored};
use crate::ledger::audit_chain::AuditContent;

/// An idempotency key with the fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    /// SHA-256 of the operation name and its canonical input.
    pub request_hash: String,
}

/// Who changes what, and how the change can be recognised when it is sent again.
#[derive(Debug, Clone)]
pub struct Mutation<'m> {
    pub tenant: &'m TenantId,
    pub actor: &'m str,
    pub request_id: &'m str,
    pub operation: &'static str,
    pub idempotency: Option<IdempotencyKey>,
    /// Run to the point of committing, then cancel and answer what would have happened (D1).
    pub dry_run: bool,
}

/// What a mutation appends to the audit trail.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    pub action: String,
    /// The records it touched, as "table:key".
    pub records: Vec<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub reason: Option<String>,
    /// The idempotency key of the request the event belongs to, when the change commits outside
    /// that request's own transaction (a charge settled after its plugin call); otherwise the
    /// mutation's own key is recorded.
    pub idempotency_key: Option<String>,
    /// What the change did to money, as typed ledger events (E1), in the order it did it: stored
    /// on this audit event in the same transaction, then positioned and published after the
    /// commit (see [`crate::events`]). Empty for a change that moves no money; an audit event
    /// without ledger events gets no position and is never published.
    pub events: Vec<LedgerEvent>,
}

impl Mutation<'_> {
    /// The same mutation as a dry-run when `dry_run` (D1).
    pub fn dry_run(self, dry_run: bool) -> Self {
        Mutation { dry_run, ..self }
    }
}

/// An audit event as written (X3): its canonical content (H1), what pages and positions it, and
/// its hash.
#[derive(SurrealValue)]
struct AuditDoc {
    tenant: String,
    key: String,
    page_key: String,
    at: chrono::DateTime<Utc>,
    actor: String,
    action: String,
    records: Vec<String>,
    before: Option<String>,
    after: Option<String>,
    reason: Option<String>,
    idempotency_key: Option<String>,
    request_id: Option<String>,
    events: Option<String>,
    takings: Option<String>,
    content_hash: String,
    /// Given with the event when its transaction places what it writes itself; otherwise NONE
    /// until positioning, and `awaiting_position` true.
    sequence: Option<i64>,
    chain: Option<String>,
    position: Option<i64>,
    awaiting_position: Option<bool>,
}

fn idempotency_id(tenant: &TenantId, key: &str) -> RecordId {
    let parts = Array::from(vec![Value::String(tenant.as_str().to_owned()), Value::String(key.to_owned())]);
    RecordId::new("idempotency", RecordIdKey::Array(parts))
}

impl Store {
    /// Runs a mutation in one transaction with its idempotency check and its audit event.
    ///
    /// With a key already used for the same operation and input, the first result is returned and
    /// nothing changes; with a key used for anything else, IDEMPOTENCY_KEY_REUSED. The key is
    /// claimed by creating its record in the mutation's transaction, and a first attempt does not
    /// look it up beforehand: a key already used makes that creation fail, the transaction runs
    /// again, and the next attempt looks the key up first and answers from it. So a new key (the
    /// common case) costs no read, and a repeated request costs one attempt that is rolled back.
    /// Two requests with one key at the same moment both try to create the key's record; the
    /// database lets one commit and the other runs again and finds the key. A mutation refused
    /// for any reason is answered from its key too when the key was used (a repeated void of a
    /// payment the first request voided is answered with the first result, not PAYMENT_VOID).
    pub async fn mutate<T, F, Fut>(&self, mutation: &Mutation<'_>, body: F) -> AppResult<T>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(TxRef) -> Fut,
        Fut: Future<Output = AppResult<(T, AuditEntry)>>,
    {
        let body = &body;
        let first_attempt = std::sync::atomic::AtomicBool::new(true);
        let first_attempt = &first_attempt;
        let outcome = self
            .transaction(|tx| async move {
                let look_up_key = !first_attempt.swap(false, std::sync::atomic::Ordering::Relaxed);
                mutate_in(tx, mutation, look_up_key, body).await
            })
            .await;
        match outcome {
            Err(refused) => self.answer_refused(mutation, refused).await,
            other => other,
        }
    }

    /// Runs several mutations in one transaction, one after the other, each deciding on what the
    /// ones before it wrote, with one commit for all (group commit); `body(tx, n)` is the body of
    /// `mutations[n]`. Each mutation passes the idempotency gate and writes its audit event as
    /// [`Store::mutate`] does, and gets its own answer, in the order of `mutations`.
    ///
    /// All of `mutations` are of one tenant. Each transaction holds the tenant's positioning turn
    /// and numbers and places what it writes itself ([`super::numbering::PlacingTurn`]): no
    /// positioning transaction follows its commit.
    ///
    /// X1 and X2 hold for each mutation alone: one refused (a broken rule, a key used for another
    /// request, any error but a write conflict) writes nothing, and does not keep the others from
    /// being written. Its refusal stops the transaction there and cancels it: the mutations
    /// before it run again without it, in a transaction of their own, and it runs again first in
    /// the next one with the mutations after it. A refusal is answered only when it came first in
    /// its transaction, so it was decided on committed facts alone, never on changes of requests
    /// that were then not written. A write conflict runs the whole transaction again; when the
    /// retries are used up every mutation of it gets TRANSACTION_CONFLICT.
    pub async fn mutate_together<T, F, Fut>(&self, mutations: &[Mutation<'_>], body: F) -> Vec<AppResult<T>>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(TxRef, usize) -> Fut,
        Fut: Future<Output = AppResult<(T, AuditEntry)>>,
    {
        let Some(tenant) = mutations.first().map(|mutation| mutation.tenant) else { return Vec::new() };
        if mutations.iter().any(|mutation| mutation.tenant != tenant) {
            return mutations.iter().map(|_| Err(AppError::internal("a group of mutations spans practices"))).collect();
        }
        // Each transaction numbers its payments and places its audit events itself: no
        // positioning transaction follows (store/numbering.rs).
        let placing_turn = self.placing_turn(tenant).await;
        let turn = &placing_turn;
        let mut answers: Vec<Option<AppResult<T>>> = mutations.iter().map(|_| None).collect();
        // Mutations still to run, by index: each group in one transaction, groups in order.
        let mut groups: std::collections::VecDeque<Vec<usize>> = std::collections::VecDeque::from([(0..mutations.len()).collect()]);
        while let Some(group) = groups.pop_front() {
            // Where the transaction stopped: the place in `group` of the mutation refused, and why.
            let stopped: std::sync::Mutex<Option<(usize, AppError)>> = std::sync::Mutex::new(None);
            let first_attempt = std::sync::atomic::AtomicBool::new(true);
            let (group_ref, stopped_ref, first_attempt, body) = (&group, &stopped, &first_attempt, &body);
            let outcome = self
                .transaction(|tx| async move {
                    let look_up_key = !first_attempt.swap(false, std::sync::atomic::Ordering::Relaxed);
                    turn.begin(&tx).await?;
                    let mut values = Vec::with_capacity(group_ref.len());
                    for (place, &member) in group_ref.iter().enumerate() {
                        match mutate_in(tx.clone(), &mutations[member], look_up_key, &|tx| body(tx, member)).await {
                            Ok(value) => values.push(value),
                            Err(conflict) if conflict.code == ErrorCode::TransactionConflict => return Err(conflict),
                            Err(refused) => {
                                *stopped_ref.lock().unwrap_or_else(|p| p.into_inner()) = Some((place, refused));
                                return Err(AppError::internal("a mutation of the group was refused"));
                            }
                        }
                    }
                    let placed = turn.finish(&tx).await?;
                    Ok((values, placed))
                })
                .await;
            let stopped = stopped.into_inner().unwrap_or_else(|p| p.into_inner());
            match (outcome, stopped) {
                (Ok((values, placed)), _) => {
                    turn.committed(placed);
                    self.metrics().mutation_groups.inc();
                    self.metrics().grouped_mutations.inc_by(values.len() as u64);
                    for (&member, value) in group.iter().zip(values) {
                        answers[member] = Some(Ok(value));
                    }
                }
                (Err(_), Some((0, refused))) => {
                    answers[group[0]] = Some(Err(refused));
                    if group.len() > 1 {
                        groups.push_front(group[1..].to_vec());
                    }
                }
                (Err(_), Some((place, _))) => {
                    groups.push_front(group[place..].to_vec());
                    groups.push_front(group[..place].to_vec());
                }
                // Conflicts after every retry, or a database that failed: the same for all.
                (Err(error), None) => {
                    for &member in &group {
                        answers[member] = Some(Err(error.clone()));
                    }
                }
            }
        }
        drop(placing_turn);
        let mut answered = Vec::with_capacity(mutations.len());
        for (mutation, answer) in mutations.iter().zip(answers) {
            answered.push(match answer {
                Some(Ok(value)) => Ok(value),
                Some(Err(refused)) => self.answer_refused(mutation, refused).await,
                None => Err(AppError::internal("a mutation of the group was not run")),
            });
        }
        answered
    }

    /// The answer to a mutation that was refused: the first result when its key was already used
    /// for the same request, IDEMPOTENCY_KEY_REUSED when for another, the refusal otherwise.
    async fn answer_refused<T: DeserializeOwned>(&self, mutation: &Mutation<'_>, refused: AppError) -> AppResult<T> {
        if mutation.idempotency.is_none() {
            return Err(refused);
        }
        match self.replay(mutation).await {
            Ok(Some(first)) => Ok(first),
            Err(reused) if reused.code == ErrorCode::IdempotencyKeyReused => Err(reused),
            // No request has used the key, or the database cannot say: the refusal stands.
            Ok(None) | Err(_) => Err(refused),
        }
    }

    /// The first result of a mutation already made with this idempotency key and input, if any;
    /// IDEMPOTENCY_KEY_REUSED if the key was used for anything else. Lets a caller answer a
    /// repeated request before checks that only make sense the first time (an amount taken from
    /// a balance that the first request already paid).
    pub async fn replay<T: DeserializeOwned>(&self, mutation: &Mutation<'_>) -> AppResult<Option<T>> {
        let Some(idempotency) = &mutation.idempotency else { return Ok(None) };
        let mut found = self
            .query("SELECT * FROM ONLY $id", Vars::new().set("id", idempotency_id(mutation.tenant, &idempotency.key)))
            .await?;
        match found.first::<IdempotencyRow>(0)? {
            None => Ok(None),
            Some(previous) => first_result(mutation, idempotency, &previous).map(Some),
        }
    }

    /// Appends an audit event for a change made outside the database (a plugin installed).
    pub async fn record_event(&self, mutation: &Mutation<'_>, entry: AuditEntry) -> AppResult<()> {
        let entry = &entry;
        self.mutate(mutation, |_tx| async move { Ok(((), entry.clone())) }).await
    }

    /// Audit events of a tenant, newest first, optionally only those touching one record, with
    /// the count of all that match.
    pub async fn audit_events(
        &self,
        tenant: &TenantId,
        record_filter: Option<String>,
        after: Option<String>,
        limit: usize,
        count: bool,
    ) -> AppResult<(Vec<AuditRow>, Option<i64>)> {
        let filter = ListFilter::of_tenant(tenant).with("$record IN records", "record", record_filter);
        self.page("audit_event", tenant, filter, after, limit, count).await
    }
}

/// One mutation's part of its transaction: the idempotency gate, the body, the claim of the key
/// and the audit event (see [`Store::mutate`]). `look_up_key` on attempts after the first: the
/// first claims the key without looking, and a key already used makes the claim conflict.
async fn mutate_in<T, F, Fut>(tx: TxRef, mutation: &Mutation<'_>, look_up_key: bool, body: &F) -> AppResult<T>
where
    T: Serialize + DeserializeOwned,
    F: Fn(TxRef) -> Fut,
    Fut: Future<Output = AppResult<(T, AuditEntry)>>,
{
    if let Some(idempotency) = &mutation.idempotency {
        let id = idempotency_id(mutation.tenant, &idempotency.key);
        // A request before this one in the same transaction claimed the key: its claim waits for
        // the transaction's end (`Tx::create_then`), and is found here.
        if let Some(claimed) = tx.gathered_record(&id) {
            let previous = IdempotencyRow::from_value(claimed).map_err(AppError::internal)?;
            return first_result(mutation, idempotency, &previous);
        }
        if look_up_key {
            let mut found = tx.query("SELECT * FROM ONLY $id", Vars::new().set("id", id)).await?;
            if let Some(previous) = found.first::<IdempotencyRow>(0)? {
                return first_result(mutation, idempotency, &previous);
            }
        }
    }
    let (value, entry) = body(tx.clone()).await?;
    let claim = match &mutation.idempotency {
        Some(idempotency) => Some((
            idempotency_id(mutation.tenant, &idempotency.key),
            IdempotencyRow {
                operation: mutation.operation.to_owned(),
                request_hash: idempotency.request_hash.clone(),
                result: serde_json::to_string(&value).map_err(AppError::internal)?,
                created_at: Some(Utc::now()),
            },
        )),
        None => None,
    };
    append_audit(&tx, mutation, entry, claim).await?;
    Ok(value)
}

/// The result a key's first request got, if `mutation` is that same request (same operation and
/// input); IDEMPOTENCY_KEY_REUSED if the key was used for anything else.
fn first_result<T: DeserializeOwned>(mutation: &Mutation<'_>, idempotency: &IdempotencyKey, previous: &IdempotencyRow) -> AppResult<T> {
    if previous.operation != mutation.operation || previous.request_hash != idempotency.request_hash {
        return Err(AppError::new(
            ErrorCode::IdempotencyKeyReused,
            "this idempotency key was already used for a different request; use a new key",
        ));
    }
    serde_json::from_str(&previous.result).map_err(AppError::internal)
}

/// Writes the audit event of a change in its transaction (X3), with the change's ledger events
/// (E1) and the hash of its canonical content (H1, `ledger/audit_chain.rs`): computed here from
/// the values written, so the transaction runs no statement more for it. Every event then waits
/// for its place in the tenant's chain, and one that carries ledger events for its position too:
/// the transaction queues it the moment it commits ([`super::Tx::position_after_commit`]), while
/// the mutation still holds its in-process turns, so changes of one record are chained and
/// positioned in the order they committed. A transaction that places what it writes itself
/// ([`super::numbering::Placing`]) writes the event with its place instead, and queues nothing.
///
/// `claim` is the idempotency record (X2) to create with it, if the mutation claims a key.
pub(super) async fn append_audit(tx: &TxRef, mutation: &Mutation<'_>, entry: AuditEntry, claim: Option<(RecordId, IdempotencyRow)>) -> AppResult<()> {
    let json = |v: Option<serde_json::Value>| v.map(|v| v.to_string());
    let key = new_key();
    let events = to_stored(&entry.events);
    let takings_changes = tx.take_takings_changes();
    if events.is_none() && !takings_changes.is_empty() {
        return Err(AppError::internal(format!("{} changed takings without recording a ledger event", entry.action)));
    }
    // Added to the tenant's takings sums when the event is positioned, exactly once.
    let takings = (!takings_changes.is_empty()).then(|| serde_json::to_string(&takings_changes)).transpose().map_err(AppError::internal)?;
    let content = AuditContent {
        tenant: mutation.tenant.as_str().to_owned(),
        key: key.clone(),
        at: Utc::now(),
        actor: mutation.actor.to_owned(),
        action: entry.action,
        records: entry.records,
        before: json(entry.before),
        after: json(entry.after),
        reason: entry.reason,
        idempotency_key: entry.idempotency_key.or_else(|| mutation.idempotency.as_ref().map(|i| i.key.clone())),
        request_id: Some(mutation.request_id.to_owned()),
        events,
        takings,
    };
    let content_hash = content.hash();
    let id = record("audit_event", &key);
    // Chained, and positioned and published when it has ledger events, from this copy: nothing is
    // read back after the commit.
    let row = LedgerRow {
        id: id.clone(),
        tenant: content.tenant.clone(),
        at: content.at,
        actor: content.actor.clone(),
        action: content.action.clone(),
        events: content.events.clone(),
        takings: content.takings.clone(),
        position: None,
        content_hash: Some(content_hash.clone()),
    };
    let place = tx.with_placing(|placing| placing.place(&row, takings_changes));
    let doc = AuditDoc {
        tenant: content.tenant,
        key: key.clone(),
        page_key: page_key(mutation.tenant.as_str(), &key),
        at: content.at,
        actor: content.actor,
        action: content.action,
        records: content.records,
        before: content.before,
        after: content.after,
        reason: content.reason,
        idempotency_key: content.idempotency_key,
        request_id: content.request_id,
        events: content.events,
        takings: content.takings,
        content_hash,
        sequence: place.as_ref().map(|place| place.sequence),
        chain: place.as_ref().map(|place| place.chain.clone()),
        position: place.as_ref().and_then(|place| place.position),
        awaiting_position: place.is_none().then_some(true),
    };
    // Whole documents rather than a SET per field: SurrealDB evaluates each SET expression on its
    // own, and those evaluations were a large part of a money change's CPU (docs/performance.md).
    // The idempotency record (X2) goes with it, and like it waits for the end of a transaction
    // that gathers its writes; a later request of that transaction with the same key finds it
    // there (`mutate_in`), and a request of another transaction that committed the key first makes
    // this one's INSERT fail as a conflict, so the transaction runs again and reads it.
    let mut records = vec![(id, doc.into_value())];
    records.extend(claim.map(|(claim, claimed)| (claim, claimed.into_value())));
    tx.create_then(records, "", Vars::new()).await?;
    if place.is_none() {
        tx.position_after_commit(mutation.tenant, row);
    }
    Ok(())
}
