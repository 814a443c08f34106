//! Persistence in SurrealDB: connecting, the schema, transactions with bounded retries, and the
//! queries of each record kind. Nothing outside this module knows SurrealQL.
//!
//! Every money mutation runs in one transaction (X1): it reads what the ledger needs, the ledger
//! decides, and the effects, the audit event (X3) and the idempotency record (X2) are written
//! before the single commit. SurrealDB transactions are optimistic (snapshot isolation, write-write
//! conflicts only), so each transaction writes the record whose state it relies on, and a conflict
//! is retried a bounded number of times with jitter.

pub mod accounts;
pub mod audit;
pub mod charges;
pub mod credit_notes;
mod connect;
pub mod directory;
pub mod invoices;
pub mod journal;
pub mod audit_chain;
pub mod ledger_events;
pub mod locks;
pub mod methods;
pub mod numbering;
pub mod payments;
pub mod preview;
pub mod proofs;
pub mod reports;
pub mod rows;
mod setup;
pub mod tenants;
mod upgrade;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use surrealdb::Surreal;
use surrealdb::engine::any::Any;
use surrealdb::engine::local::Db;
use surrealdb::method::Transaction;
use surrealdb::types::{Object, QueryError, RecordId, SurrealValue, Value, Variables};

pub use connect::StoreSettings;

use crate::auth::TenantId;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::events::EventBus;
use crate::ledger::reports::TakingsChange;
use crate::metrics::Metrics;

/// The schema, applied when the database's recorded version or schema hash differs from this
/// release's (setup.rs); each statement is idempotent.
const SCHEMA: &str = include_str!("schema.surql");
/// Bumped whenever schema.surql changes meaning; recorded in the database.
pub const SCHEMA_VERSION: i64 = 8;

/// How long /healthz waits for the database before it reports it unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a subscriber on a shared database looks for events other processes positioned: the
/// bound on how late they reach it (docs/architecture.md).
const OTHER_PROCESSES_POLL: Duration = Duration::from_millis(250);

/// The transaction a body works in; shared so the body's future can own its handle.
pub type TxRef = Arc<Tx>;

enum Conn {
    /// Embedded SurrealKV or memory, opened by Settle with capped caches; the datastore is kept to
    /// be shut down cleanly.
    Local(Surreal<Db>, Arc<surrealdb_engine_local::Datastore>),
    /// A SurrealDB server reached over WebSocket.
    Remote(Surreal<Any>),
}

/// Sessions of a SurrealDB server given back by finished transactions, for the next ones to
/// begin on. A new handle (`Surreal::clone`) is a new session, which on a server replays the
/// connection's sign-in: an Argon2 password hash on the server for every transaction, two
/// thirds of the server's CPU under load. A committed or cancelled transaction gives its handle
/// back instead; a failed one's is dropped. Embedded sessions cost nothing to open, and reusing
/// them measured slower (docs/performance.md), so they are not kept.
#[derive(Default)]
struct IdleSessions(std::sync::Mutex<Vec<Surreal<Any>>>);

/// Idle sessions kept at most; more are dropped (closed) when given back.
const IDLE_SESSIONS_MAX: usize = 128;

impl IdleSessions {
    fn take(&self) -> Option<Surreal<Any>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn give_back(&self, session: Surreal<Any>) {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_SESSIONS_MAX {
            idle.push(session);
        }
    }
}

/// The handle every request uses; cheap to share.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    conn: Conn,
    retries_max: u32,
    /// How long one call to a SurrealDB server may take, in ms ([`StoreSettings::remote_timeout`]);
    /// unbounded while the database is set up at start, which is no request and may take long.
    remote_timeout_ms: std::sync::atomic::AtomicU64,
    /// Sessions for the next transactions (see [`IdleSessions`]).
    idle_sessions: Arc<IdleSessions>,
    /// A newer Settle has moved the database's schema past this release's
    /// ([`Store::check_schema_is_ours`]): no transaction is opened any more.
    schema_moved_on: std::sync::atomic::AtomicBool,
    metrics: Metrics,
    /// Queues writers of one hot record inside this process (see [`locks`]).
    pub locks: locks::KeyedLocks,
    /// Payments waiting for their number (see [`numbering`]).
    pending_numbers: numbering::PendingNumbers,
    /// Audit events with ledger events waiting for their position (see [`numbering`]).
    pending_positions: numbering::PendingPositions,
    /// Where positioned ledger events are published (see [`crate::events`]).
    events: EventBus,
    /// Tenant settings read recently (see [`Store::tenant`]).
    tenant_cache: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, rows::TenantRow)>>,
}

/// Query parameters. Money is always bound as a Decimal parameter, never written into SurrealQL.
#[derive(Default)]
pub struct Vars(Variables);

impl Vars {
    pub fn new() -> Self {
        Vars(Variables::new())
    }

    pub fn set(mut self, name: &str, value: impl SurrealValue) -> Self {
        self.0.insert(name, value);
        self
    }
}

/// The conditions of a list's filter: fixed SurrealQL text, each with its value bound as a
/// parameter, so no value is ever written into the query. Every list starts with its tenant.
pub(crate) struct ListFilter {
    conditions: Vec<&'static str>,
    vars: Vars,
}

impl ListFilter {
    pub fn of_tenant(tenant: &TenantId) -> Self {
        ListFilter { conditions: vec!["tenant = $tenant"], vars: Vars::new().set("tenant", tenant.as_str().to_owned()) }
    }

    /// Adds `condition`, which reads the parameter `$name`, when there is a value for it.
    pub fn with(mut self, condition: &'static str, name: &str, value: Option<impl SurrealValue>) -> Self {
        if let Some(value) = value {
            self.conditions.push(condition);
            self.vars = self.vars.set(name, value);
        }
        self
    }

    /// Adds `condition`, which reads no parameter, when `applies`.
    pub fn when(mut self, condition: &'static str, applies: bool) -> Self {
        if applies {
            self.conditions.push(condition);
        }
        self
    }

    /// Binds a parameter the conditions read.
    pub fn bind(mut self, name: &str, value: impl SurrealValue) -> Self {
        self.vars = self.vars.set(name, value);
        self
    }
}

/// One open transaction. Only [`Store::transaction`] creates it, and commits or cancels it; if
/// the request running it is dropped halfway (its client went away), the last handle to go
/// cancels it. The SDK's own handle does not: an abandoned transaction would stay open in the
/// engine for good, holding memory and keeping the storage engine from forgetting old writes.
///
/// It also carries what must happen the moment it commits: the audit events it wrote with ledger
/// events, to be queued for their positions ([`Tx::position_after_commit`]); the changes of
/// takings its writes made, until its audit event takes them ([`Tx::takings_changed`]); and the
/// metrics its queries are counted in.
pub struct Tx {
    open: Option<OpenTx>,
    awaiting_position: std::sync::Mutex<Vec<(TenantId, ledger_events::LedgerRow)>>,
    /// Set when the transaction numbers and places what it writes itself ([`numbering::Placing`]).
    placing: std::sync::Mutex<Option<numbering::Placing>>,
    /// Set when what it writes waits for its end ([`Tx::gather_writes`]).
    gathered: std::sync::Mutex<Option<Gathered>>,
    takings: std::sync::Mutex<Vec<TakingsChange>>,
    metrics: Metrics,
    /// How long one call may take when the database is a server.
    remote_timeout: Duration,
    /// Where the transaction's session goes back once it is finished.
    idle_sessions: Arc<IdleSessions>,
}

/// What a transaction that writes at its end keeps until then (see [`Tx::gather_writes`]).
#[derive(Default)]
pub(crate) struct Gathered {
    /// Records to create, by table.
    pub created: std::collections::BTreeMap<String, Vec<Value>>,
    /// Invoices as changed, by key.
    pub invoices: std::collections::HashMap<String, rows::InvoiceRow>,
    /// Invoices as read at once for the transaction's changes, by key; None until read
    /// ([`Store::load_invoice_of_group`](crate::store::Store::load_invoice_of_group)). Not a write.
    pub read_invoices: Option<std::collections::HashMap<String, rows::InvoiceRow>>,
}

impl Gathered {
    fn is_empty(&self) -> bool {
        self.created.is_empty() && self.invoices.is_empty()
    }
}

enum OpenTx {
    Local(Transaction<Db>),
    Remote(Transaction<Any>),
}

impl Tx {
    /// Runs statements inside the transaction and returns their results.
    pub async fn query(&self, sql: &str, vars: Vars) -> AppResult<Results> {
        self.metrics.db_queries.inc();
        let response = match &self.open {
            Some(OpenTx::Local(tx)) => tx.query(sql).bind(Object::from(vars.0)).await,
            Some(OpenTx::Remote(tx)) => within(self.remote_timeout, tx.query(sql).bind(Object::from(vars.0))).await?,
            None => return Err(AppError::internal("the transaction is already finished")),
        };
        Results::checked(response)
    }

    /// Queues the audit event `row` of `tenant` (as written) for its ledger position once this
    /// transaction has committed; forgotten if it does not commit.
    pub(crate) fn position_after_commit(&self, tenant: &TenantId, row: ledger_events::LedgerRow) {
        self.awaiting_position.lock().unwrap_or_else(|p| p.into_inner()).push((tenant.clone(), row));
    }

    /// The audit events waiting for this transaction's commit to be positioned.
    fn take_awaiting_position(&self) -> Vec<(TenantId, ledger_events::LedgerRow)> {
        std::mem::take(&mut *self.awaiting_position.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// From now on this transaction numbers the payments and places the audit events it writes
    /// itself, with `placing`.
    fn start_placing(&self, placing: numbering::Placing) {
        *self.placing.lock().unwrap_or_else(|p| p.into_inner()) = Some(placing);
    }

    fn take_placing(&self) -> Option<numbering::Placing> {
        self.placing.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// `give` applied to this transaction's placing; None when it places nothing itself (its
    /// audit events are then positioned after its commit).
    pub(crate) fn with_placing<R>(&self, give: impl FnOnce(&mut numbering::Placing) -> R) -> Option<R> {
        self.placing.lock().unwrap_or_else(|p| p.into_inner()).as_mut().map(give)
    }

    /// Creates `records` (id and document), then runs `sql`, in one call. In a transaction that
    /// gathers its writes ([`Tx::gather_writes`]) the records instead wait for its end, to be
    /// created with the others of their table by one INSERT ([`Tx::take_gathered`]), and only
    /// `sql` runs now: a statement costs SurrealDB about 30-50 µs besides its records
    /// (docs/performance.md, twenty-second measure). Only for records nothing reads before the
    /// transaction ends.
    pub(crate) async fn create_then(&self, records: Vec<(RecordId, Value)>, sql: &str, vars: Vars) -> AppResult<()> {
        let Some(records) = self.gather_created(records)? else {
            if !sql.is_empty() {
                self.query(sql, vars).await?;
            }
            return Ok(());
        };
        let mut statements = String::new();
        let mut vars = vars;
        for (n, (id, doc)) in records.into_iter().enumerate() {
            statements.push_str(&format!("CREATE $created_id{n} CONTENT $created_doc{n} RETURN NONE;"));
            vars = vars.set(&format!("created_id{n}"), id).set(&format!("created_doc{n}"), doc);
        }
        statements.push_str(sql);
        self.query(&statements, vars).await?;
        Ok(())
    }

    /// Keeps `records` for the end of the transaction when it gathers its writes (None); gives
    /// them back otherwise, to be created at once.
    fn gather_created(&self, records: Vec<(RecordId, Value)>) -> AppResult<Option<Vec<(RecordId, Value)>>> {
        let mut gathered = self.gathered.lock().unwrap_or_else(|p| p.into_inner());
        let Some(gathered) = gathered.as_mut() else { return Ok(Some(records)) };
        for (id, doc) in records {
            let Value::Object(mut document) = doc else {
                return Err(AppError::internal("a record to create is not a document"));
            };
            let table = id.table.to_string();
            document.insert("id", id);
            gathered.created.entry(table).or_default().push(Value::Object(document));
        }
        Ok(None)
    }

    /// The record `id` as this transaction gathered it to create and has not written yet; None
    /// when it did not, or writes at once (the record can then be read).
    pub(crate) fn gathered_record(&self, id: &RecordId) -> Option<Value> {
        let gathered = self.gathered.lock().unwrap_or_else(|p| p.into_inner());
        let created = gathered.as_ref()?.created.get(&id.table.to_string())?;
        let id = Value::RecordId(id.clone());
        created.iter().find(|document| matches!(document, Value::Object(document) if document.get("id") == Some(&id))).cloned()
    }

    /// Whether what this transaction writes waits for its end ([`Tx::gather_writes`]).
    pub(crate) fn gathers_writes(&self) -> bool {
        self.gathered.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// The invoice `key` as this transaction changed it and has not written yet
    /// ([`Tx::invoice_changed`]); None when it has not changed it, or writes at once.
    pub(crate) fn invoice_as_changed(&self, key: &str) -> Option<rows::InvoiceRow> {
        let gathered = self.gathered.lock().unwrap_or_else(|p| p.into_inner());
        gathered.as_ref().and_then(|gathered| gathered.invoices.get(key).cloned())
    }

    /// The invoice `key` as read for this transaction's changes: Some(None) when it was not
    /// there to read; None when the invoices were not read ([`Tx::keep_read_invoices`]).
    pub(crate) fn invoice_as_read(&self, key: &str) -> Option<Option<rows::InvoiceRow>> {
        let gathered = self.gathered.lock().unwrap_or_else(|p| p.into_inner());
        let read = gathered.as_ref()?.read_invoices.as_ref()?;
        Some(read.get(key).cloned())
    }

    /// Keeps `invoices`, read in this transaction at once for the changes it makes, until they
    /// are asked for ([`Tx::invoice_as_read`]). Only for a transaction that gathers its writes.
    pub(crate) fn keep_read_invoices(&self, invoices: Vec<rows::InvoiceRow>) -> AppResult<()> {
        let mut gathered = self.gathered.lock().unwrap_or_else(|p| p.into_inner());
        let Some(gathered) = gathered.as_mut() else {
            return Err(AppError::internal("invoices were kept for a transaction that writes at once"));
        };
        gathered.read_invoices = Some(invoices.into_iter().map(|invoice| (rows::key_of(&invoice.id), invoice)).collect());
        Ok(())
    }

    /// Keeps `invoice` as this transaction changed it (its sums and status), to be written once at
    /// its end, however many of its payments the transaction makes; the next read of it in the
    /// transaction is this row ([`Tx::invoice_as_changed`]). Only for a transaction that gathers
    /// its writes ([`Tx::gathers_writes`]); any other writes the invoice itself.
    pub(crate) fn invoice_changed(&self, invoice: rows::InvoiceRow) -> AppResult<()> {
        let mut gathered = self.gathered.lock().unwrap_or_else(|p| p.into_inner());
        let Some(gathered) = gathered.as_mut() else {
            return Err(AppError::internal("an invoice was kept for the end of a transaction that writes at once"));
        };
        gathered.invoices.insert(rows::key_of(&invoice.id), invoice);
        Ok(())
    }

    /// From now on what this transaction creates through [`Tx::create_then`], and the invoices it
    /// changes ([`Tx::invoice_changed`]), wait for its end.
    fn gather_writes(&self) {
        *self.gathered.lock().unwrap_or_else(|p| p.into_inner()) = Some(Gathered::default());
    }

    /// What waits to be written; the caller writes it.
    fn take_gathered(&self) -> Gathered {
        self.gathered.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default()
    }

    /// Notes what a write in this transaction changed in takings (R1). The audit event of the
    /// change takes them ([`Tx::take_takings_changes`]), and positioning it adds them to the
    /// tenant's takings sums, once (docs/rules.md, "How reports stay fast").
    pub(crate) fn takings_changed(&self, change: TakingsChange) {
        self.takings.lock().unwrap_or_else(|p| p.into_inner()).push(change);
    }

    /// The changes of takings written since the last call.
    pub(crate) fn take_takings_changes(&self) -> Vec<TakingsChange> {
        std::mem::take(&mut *self.takings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn commit(mut self) -> AppResult<()> {
        if !self.take_gathered().is_empty() {
            self.cancel().await;
            return Err(AppError::internal("writes gathered for the end of a transaction were never written"));
        }
        if !self.take_takings_changes().is_empty() {
            // Takings sums would miss them: a fault of the change's code, refused rather than
            // committed.
            self.cancel().await;
            return Err(AppError::internal("a change of takings was written without an audit event to carry it"));
        }
        match self.open.take() {
            Some(OpenTx::Local(tx)) => drop(tx.commit().await.map_err(commit_error)?),
            Some(OpenTx::Remote(tx)) => self.idle_sessions.give_back(within(self.remote_timeout, tx.commit()).await?.map_err(commit_error)?),
            None => {}
        }
        Ok(())
    }

    async fn cancel(mut self) {
        if let Some(open) = self.open.take()
            && let Some(session) = open.cancel(self.remote_timeout).await
        {
            self.idle_sessions.give_back(session);
        }
    }
}

impl OpenTx {
    /// Cancels the transaction. Gives a server's session back to be used again, unless the
    /// cancel failed or the server gave no answer within `limit`: the next transaction on a
    /// session the server has not answered would wait behind whatever the server still does there.
    async fn cancel(self, limit: Duration) -> Option<Surreal<Any>> {
        let cancelled = match self {
            OpenTx::Local(tx) => tx.cancel().await.map(|_| None).map_err(db_error),
            OpenTx::Remote(tx) => match within(limit, tx.cancel()).await {
                Ok(cancelled) => cancelled.map(Some).map_err(db_error),
                Err(timed_out) => Err(timed_out),
            },
        };
        cancelled.inspect_err(|error| tracing::warn!(%error, "cancelling a transaction failed")).ok().flatten()
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let Some(open) = self.open.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (idle_sessions, limit) = (Arc::clone(&self.idle_sessions), self.remote_timeout);
            runtime.spawn(async move {
                if let Some(session) = open.cancel(limit).await {
                    idle_sessions.give_back(session);
                }
            });
        }
    }
}

/// The results of a query, one per statement, every statement already checked for errors.
pub struct Results(surrealdb::IndexedResults);

impl Results {
    fn checked(response: surrealdb::Result<surrealdb::IndexedResults>) -> AppResult<Results> {
        let results = response.map_err(db_error)?;
        let mut results = results;
        let errors = results.take_errors();
        if let Some(error) = errors.into_values().next() {
            return Err(db_error(error));
        }
        Ok(Results(results))
    }

    /// Takes statement `index` as rows.
    pub fn rows<T: SurrealValue>(&mut self, index: usize) -> AppResult<Vec<T>> {
        self.0.take::<Vec<T>>(index).map_err(db_error)
    }

    /// Takes statement `index` as at most one row: the first of an array, a single value (from
    /// `SELECT ... FROM ONLY`), or nothing for NONE, NULL and an empty array.
    pub fn first<T: SurrealValue>(&mut self, index: usize) -> AppResult<Option<T>> {
        let value = match self.value(index)? {
            Value::Array(array) => match array.into_iter().next() {
                Some(first) => first,
                None => return Ok(None),
            },
            other => other,
        };
        if matches!(value, Value::None | Value::Null) {
            return Ok(None);
        }
        T::from_value(value).map(Some).map_err(|e| AppError::internal(format!("reading a record: {e}")))
    }

    /// Takes statement `index` as one value of any shape.
    pub fn value(&mut self, index: usize) -> AppResult<Value> {
        self.0.take::<Value>(index).map_err(db_error)
    }
}

/// Maps a database error: a write conflict is retried (TRANSACTION_CONFLICT), a database that
/// cannot be reached is DATABASE_UNAVAILABLE, and anything else is INTERNAL, which is not
/// retryable: SurrealDB reports a record refused by a schema assertion as the same kind of error
/// as a fault in its engine, and a request refused by an assertion is refused again however often
/// it is sent. The ledger checks every amount before the database sees it, so the assertions are
/// a backstop that a correct request never reaches.
///
/// Creating a record that already exists counts as a conflict too: Settle only creates records
/// with fresh keys or with keys that stand for a unique fact (an idempotency key, an invoice
/// number), so a duplicate means a concurrent request committed that fact first. Running the
/// transaction again reads it and decides anew.
///
/// Errors are told apart by their kind, never by their text; the one error whose kind the engine
/// loses, a conflict at commit, is mapped by [`commit_error`].
fn db_error(error: surrealdb::Error) -> AppError {
    if error.query_details() == Some(&QueryError::TransactionConflict) || error.is_already_exists() {
        return conflict();
    }
    if error.is_connection() {
        return AppError::new(
            ErrorCode::DatabaseUnavailable,
            "the database cannot be reached; send the same request again with the same idempotency key",
        )
        .with_cause(error);
    }
    AppError::internal(format!("database: {error}"))
}

/// Maps the error of a failed commit. The embedded engines find write conflicts at commit, and
/// surrealdb-engine-local 3.3.5 turns every error of a commit into an internal error that keeps
/// only the storage engine's message (`Engine::commit` maps it with `std_error_to_types_error`),
/// so a conflict there is known by that message alone: surrealdb-kvs's `TransactionConflict`,
/// "Transaction conflict: ... This transaction can be retried", from mem:// and surrealkv://
/// alike. Conflicts inside statements keep their kind, and `db_error` needs no text for them.
fn commit_error(error: surrealdb::Error) -> AppError {
    if error.message().contains("Transaction conflict") {
        return conflict();
    }
    db_error(error)
}

/// A call to a SurrealDB server, given at most `limit`. When the server stops answering (stopped,
/// restarted, the network cut) the SDK makes its connection again in the background and holds
/// calls until it has; a request then fails with DATABASE_UNAVAILABLE after `limit` instead of
/// waiting without end. A write whose commit is cut short this way may have committed: the
/// message says to send it again under the same idempotency key, which answers it either way (X2).
async fn within<F: std::future::IntoFuture>(limit: Duration, call: F) -> AppResult<F::Output> {
    tokio::time::timeout(limit, call).await.map_err(|_| {
        AppError::new(
            ErrorCode::DatabaseUnavailable,
            format!(
                "the database did not answer within {} ms; send the same request again with the same idempotency key",
                limit.as_millis()
            ),
        )
    })
}

fn conflict() -> AppError {
    AppError::new(ErrorCode::TransactionConflict, "the record changed concurrently; try again")
}

impl Store {
    /// Opens the database the settings name and sets it up for this release (setup.rs).
    pub async fn open(settings: &StoreSettings, metrics: Metrics) -> anyhow::Result<Store> {
        let conn = connect::open(settings).await?;
        let store = Store {
            inner: Arc::new(StoreInner {
                conn,
                retries_max: settings.transaction_retries_max,
                remote_timeout_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
                idle_sessions: Arc::default(),
                schema_moved_on: std::sync::atomic::AtomicBool::new(false),
                metrics,
                locks: locks::KeyedLocks::default(),
                pending_numbers: numbering::PendingNumbers::default(),
                pending_positions: numbering::PendingPositions::default(),
                events: EventBus::default(),
                tenant_cache: Default::default(),
            }),
        };
        setup::set_up(&store).await?;
        let limit = u64::try_from(settings.remote_timeout.as_millis()).unwrap_or(u64::MAX);
        store.inner.remote_timeout_ms.store(limit, std::sync::atomic::Ordering::Relaxed);
        Ok(store)
    }

    /// Runs statements outside any explicit transaction (each statement is its own).
    pub async fn query(&self, sql: &str, vars: Vars) -> AppResult<Results> {
        self.inner.metrics.db_queries.inc();
        let response = match &self.inner.conn {
            Conn::Local(db, _) => db.query(sql).bind(Object::from(vars.0)).await,
            Conn::Remote(db) => within(self.remote_timeout(), db.query(sql).bind(Object::from(vars.0))).await?,
        };
        Results::checked(response)
    }

    /// A page of a tenant's rows of `table`, newest first, for the rows matching `filter`,
    /// walking the index on `page_key`
    /// ([`rows::page_key`]) forwards from the cursor `after` and stopping after `limit` rows; and,
    /// when `count`, how many rows match in all (which counts their index entries).
    pub(crate) async fn page<T: SurrealValue>(
        &self,
        table: &str,
        tenant: &TenantId,
        filter: ListFilter,
        after: Option<String>,
        limit: usize,
        count: bool,
    ) -> AppResult<(Vec<T>, Option<i64>)> {
        let filter_sql = filter.conditions.join(" AND ");
        let vars = filter.vars;
        // Tenant ids are `a-z A-Z 0-9 _ -`, so "<tenant>/" sorts before exactly this tenant's page
        // keys, and "<tenant>0" ('0' follows '/') after them.
        let page_from = after.map_or_else(|| format!("{tenant}/"), |after| rows::page_key(tenant.as_str(), &after));
        let page_to = format!("{tenant}0");
        let count_sql = if count { format!("SELECT count() FROM {table} WHERE {filter_sql} GROUP ALL;") } else { String::new() };
        let sql = format!(
            "SELECT * FROM {table} WHERE page_key > $page_from AND page_key < $page_to AND {filter_sql}
                ORDER BY page_key LIMIT $limit; {count_sql}"
        );
        let vars = vars.set("page_from", page_from).set("page_to", page_to).set("limit", limit as i64);
        let mut results = self.query(&sql, vars).await?;
        let rows = results.rows(0)?;
        let total = if count { Some(results.first::<rows::CountRow>(1)?.map_or(0, |c| c.count)) } else { None };
        Ok((rows, total))
    }

    /// Records of one tenant's `table` by key, in one query (for the GraphQL data loader); keys
    /// of missing records or of another tenant's are left out.
    pub async fn records_by_keys<T: SurrealValue>(&self, table: &str, tenant: &TenantId, keys: Vec<String>) -> AppResult<Vec<T>> {
        let ids: Vec<_> = keys.iter().map(|key| rows::record(table, key)).collect();
        let vars = Vars::new().set("ids", ids).set("tenant", tenant.as_str().to_owned());
        self.query("SELECT * FROM $ids WHERE tenant = $tenant", vars).await?.rows(0)
    }

    /// Records of one tenant's `table` whose `field` (a record key such as `invoice`) is one of
    /// `keys`, in key order, in one query (for the GraphQL data loader: the allocations of a page
    /// of invoices). The (tenant, field) index answers each key.
    pub async fn records_of_keys<T: SurrealValue>(&self, table: &'static str, field: &'static str, tenant: &TenantId, keys: Vec<String>) -> AppResult<Vec<T>> {
        let sql = format!("SELECT * FROM {table} WHERE tenant = $tenant AND {field} IN $keys ORDER BY id");
        self.query(&sql, Vars::new().set("keys", keys).set("tenant", tenant.as_str().to_owned())).await?.rows(0)
    }

    /// Finishes the positioning of events this process committed, then shuts an embedded
    /// database down cleanly: what is in memory is written out and its files are released. A
    /// SurrealDB server is left running.
    pub async fn close(&self) {
        self.finish_positioning().await;
        if let Conn::Local(db, datastore) = &self.inner.conn {
            if let Err(error) = datastore.shutdown().await {
                tracing::warn!(%error, "closing the database");
            }
            // The embedded engine shuts the datastore down again once the last handle to it is
            // dropped, and that second pass finds the storage closed and logs a failure. Nothing
            // can use a closed datastore, so one handle is kept for the rest of the process.
            std::mem::forget(db.clone());
        }
    }

    /// How often a subscriber looks in the store for events other processes positioned, when
    /// the database is a server that other processes may share (E2 across processes); None for
    /// an embedded database, which only this process can open.
    pub fn other_processes_poll(&self) -> Option<Duration> {
        match self.inner.conn {
            Conn::Local(..) => None,
            Conn::Remote(_) => Some(OTHER_PROCESSES_POLL),
        }
    }

    /// How long one call to a SurrealDB server may take now.
    fn remote_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.remote_timeout_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Checks that the database answers within [`PING_TIMEOUT`], for /healthz (a load balancer's
    /// health check waits a few seconds at most), and whether its schema is still this
    /// release's.
    pub async fn ping(&self) -> AppResult<bool> {
        within(PING_TIMEOUT, self.check_schema_is_ours()).await?
    }

    fn schema_moved_on(&self) -> bool {
        self.inner.schema_moved_on.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_schema_moved_on(&self, moved_on: bool) {
        self.inner.schema_moved_on.store(moved_on, std::sync::atomic::Ordering::Relaxed);
    }

    fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn locks(&self) -> &locks::KeyedLocks {
        &self.inner.locks
    }

    fn pending_numbers(&self) -> &numbering::PendingNumbers {
        &self.inner.pending_numbers
    }

    fn pending_positions(&self) -> &numbering::PendingPositions {
        &self.inner.pending_positions
    }

    /// The bus positioned ledger events are published on, after their commit (E2).
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    fn tenant_cache(&self) -> &std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, rows::TenantRow)>> {
        &self.inner.tenant_cache
    }

    /// Runs `body` in one transaction: committed when it returns Ok, cancelled when it returns
    /// Err. A write conflict (in the body or at commit) runs the whole body again, up to the
    /// configured number of retries with growing, jittered pauses; then the caller gets
    /// TRANSACTION_CONFLICT, which is safe to retry.
    pub async fn transaction<T, F, Fut>(&self, body: F) -> AppResult<T>
    where
        F: Fn(TxRef) -> Fut,
        Fut: Future<Output = AppResult<T>>,
    {
        let mut attempt = 0;
        loop {
            match self.transaction_once(&body).await {
                Err(error) if error.code == ErrorCode::TransactionConflict && attempt < self.inner.retries_max => {
                    attempt += 1;
                    self.inner.metrics.transaction_retries.inc();
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(error) if error.code == ErrorCode::TransactionConflict => {
                    self.inner.metrics.transaction_conflicts_exhausted.inc();
                    return Err(error);
                }
                other => return other,
            }
        }
    }

    /// Runs `body` once in a transaction that is cancelled whatever it returns: a dry-run.
    pub(crate) async fn cancelled<T, F, Fut>(&self, body: F) -> AppResult<T>
    where
        F: FnOnce(TxRef) -> Fut,
        Fut: Future<Output = AppResult<T>>,
    {
        let tx = Arc::new(self.begin().await?);
        let outcome = body(Arc::clone(&tx)).await;
        match Arc::try_unwrap(tx) {
            Ok(tx) => tx.cancel().await,
            Err(_) => return Err(AppError::internal("a transaction body kept its transaction handle")),
        }
        outcome
    }

    /// Opens a transaction; [`Store::transaction`] commits or cancels it.
    async fn begin(&self) -> AppResult<Tx> {
        if self.schema_moved_on() {
            return Err(AppError::new(
                ErrorCode::DatabaseUnavailable,
                "this Settle process is older than the database's schema, which a newer release has upgraded, and writes nothing more; \
                 send the request again with the same idempotency key, to a process of the newer release",
            ));
        }
        // `begin` takes its handle by value; a clone of the connection is a new session.
        let open = match &self.inner.conn {
            Conn::Local(db, _) => OpenTx::Local(db.clone().begin().await.map_err(db_error)?),
            Conn::Remote(db) => {
                let session = self.inner.idle_sessions.take().unwrap_or_else(|| db.clone());
                OpenTx::Remote(within(self.remote_timeout(), session.begin()).await?.map_err(db_error)?)
            }
        };
        Ok(Tx {
            open: Some(open),
            awaiting_position: Default::default(),
            placing: Default::default(),
            gathered: Default::default(),
            takings: Default::default(),
            metrics: self.inner.metrics.clone(),
            remote_timeout: self.remote_timeout(),
            idle_sessions: Arc::clone(&self.inner.idle_sessions),
        })
    }

    async fn transaction_once<T, F, Fut>(&self, body: &F) -> AppResult<T>
    where
        F: Fn(TxRef) -> Fut,
        Fut: Future<Output = AppResult<T>>,
    {
        let tx = Arc::new(self.begin().await?);
        let outcome = body(Arc::clone(&tx)).await;
        let Ok(tx) = Arc::try_unwrap(tx) else {
            return Err(AppError::internal("a transaction body kept its transaction handle"));
        };
        match outcome {
            Ok(value) => {
                // Queued the moment the commit returns, before the caller's turns end (E2).
                let awaiting = tx.take_awaiting_position();
                match tx.commit().await {
                    Ok(()) => self.queue_positions(awaiting),
                    Err(error) => {
                        self.commit_failed_with_positions(&awaiting, &error);
                        return Err(error);
                    }
                }
                Ok(value)
            }
            Err(error) => {
                tx.cancel().await;
                Err(error)
            }
        }
    }
}

/// Pause before retry `attempt` (1-based): 1-2 ms doubling up to about 100 ms, with full jitter so
/// that writers which collided do not collide again.
pub(super) fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = (1u64 << attempt.min(7)).min(100);
    Duration::from_micros(rand::random_range(500..=ceiling_ms * 1000))
}

/// Settings of a store for unit tests at `address` (mem://, surrealkv://...), with small caches and
/// `retries` conflict retries.
#[cfg(test)]
pub(crate) fn test_settings(address: &str, retries: u32) -> StoreSettings {
    StoreSettings {
        address: address.to_owned(),
        namespace: "test".into(),
        database: "test".into(),
        username: None,
        password: None,
        remote_timeout: Duration::from_secs(10),
        block_cache_mib: 8,
        memtable_mib: 8,
        transaction_retries_max: retries,
    }
}

#[cfg(test)]
mod tests {
    use surrealdb::types::{AlreadyExistsError, ConnectionError, QueryError};

    use super::*;

    #[test]
    fn database_errors_say_whether_sending_again_can_help() {
        let cases = [
            (surrealdb::Error::query("conflict".into(), QueryError::TransactionConflict), ErrorCode::TransactionConflict, true),
            // A CREATE of a record a concurrent request committed first.
            (
                surrealdb::Error::already_exists(
                    "Database record `invoice_number:['t', 7]` already exists".into(),
                    AlreadyExistsError::Record { id: "invoice_number:['t', 7]".into() },
                ),
                ErrorCode::TransactionConflict,
                true,
            ),
            (surrealdb::Error::connection("gone".into(), ConnectionError::ConnectionFailed), ErrorCode::DatabaseUnavailable, true),
            // A schema assertion comes as an internal error, and fails the same way every time.
            (
                surrealdb::Error::internal("Found 0dec for field `total`, with record `credit_note:x`, but field must conform to: $value > 0".into()),
                ErrorCode::Internal,
                false,
            ),
        ];
        for (error, code, retryable) in cases {
            let mapped = db_error(error);
            assert_eq!((mapped.code, mapped.code.retryable()), (code, retryable), "{}", mapped.message);
        }

        // A conflict at commit comes from the embedded engines as an internal error with the
        // storage engine's message (see `commit_error`); that message is trusted only there.
        let at_commit = || surrealdb::Error::internal("Transaction conflict: Transaction write conflict. This transaction can be retried".into());
        assert_eq!(commit_error(at_commit()).code, ErrorCode::TransactionConflict);
        assert_eq!(db_error(at_commit()).code, ErrorCode::Internal);
        assert_eq!(commit_error(surrealdb::Error::internal("The key being inserted is too large".into())).code, ErrorCode::Internal);
        let unreachable = surrealdb::Error::connection("gone".into(), ConnectionError::ConnectionFailed);
        assert_eq!(commit_error(unreachable).code, ErrorCode::DatabaseUnavailable);
    }


    /// Every list read of the paged tables goes through an index of the schema as a new database
    /// gets it (schema.surql defines only the indexes reads use): a page (the shape `page`
    /// builds), with each filter that has an index of its own, a count of what matches, and the
    /// data loader's reads of a page's children (`records_of_keys`). Each pair names the index
    /// the plan must iterate.
    #[tokio::test]
    async fn list_reads_go_through_indexes() {
        let store = ledger_events::memory_store().await;
        let page = |table: &str, filter: &str| {
            format!("SELECT * FROM {table} WHERE page_key > 't/' AND page_key < 't0' AND tenant = 't'{filter} ORDER BY page_key LIMIT 50")
        };
        let count = |table: &str, filter: &str| format!("SELECT count() FROM {table} WHERE tenant = 't'{filter} GROUP ALL");
        let children = |table: &str, field: &str| format!("SELECT * FROM {table} WHERE tenant = 't' AND {field} IN ['a', 'b'] ORDER BY id");
        let reads = [
            (page("invoice", ""), "invoice_page"),
            (page("invoice", " AND client = 'c'"), "invoice_client"),
            (count("invoice", ""), "invoice_client"),
            (page("payment", ""), "payment_page"),
            (page("payment", " AND client = 'c'"), "payment_client"),
            (page("payment", " AND date >= '2026-01-01'"), "payment_tenant_date"),
            (count("payment", ""), "payment_client"),
            (count("payment", " AND date >= '2026-01-01' AND date <= '2026-02-01'"), "payment_tenant_date"),
            (page("allocation", ""), "allocation_page"),
            (page("allocation", " AND payment = 'p'"), "allocation_tenant_payment"),
            (page("allocation", " AND invoice = 'i'"), "allocation_tenant_invoice"),
            (count("allocation", ""), "allocation_client"),
            (children("allocation", "invoice"), "allocation_tenant_invoice"),
            (children("allocation", "payment"), "allocation_tenant_payment"),
            (page("refund", " AND payment = 'p'"), "refund_tenant_payment"),
            (count("refund", " AND date >= '2026-01-01'"), "refund_tenant_date"),
            (children("refund", "payment"), "refund_tenant_payment"),
            (page("credit_note", " AND invoice = 'i'"), "credit_note_tenant_invoice"),
            (children("credit_note", "invoice"), "credit_note_tenant_invoice"),
            (page("audit_event", ""), "audit_page"),
            (count("audit_event", ""), "audit_tenant_position"),
        ];
        for (sql, index) in reads {
            let plan = format!("{:?}", store.query(&format!("{sql} EXPLAIN"), Vars::new()).await.unwrap().value(0).unwrap());
            assert!(plan.contains("Iterate Index") && plan.contains(&format!("\"{index}\"")), "{sql}\n goes through {index}: {plan}");
            assert!(!plan.contains("Iterate Table"), "{sql}\n reads no whole table: {plan}");
        }
    }

    /// What the embedded engines of SurrealDB 3.3.5 report, as Settle maps it: a write conflict
    /// (found at commit) and a CREATE of a record that exists are both worth sending again. If an
    /// upgrade changes how either arrives, this says so before requests start failing as INTERNAL.
    #[tokio::test]
    async fn embedded_engines_report_conflicts_that_running_again_resolves() {
        let dir = tempfile::tempdir().unwrap();
        for address in ["mem://".to_owned(), format!("surrealkv://{}", dir.path().join("db").display())] {
            let store = Store::open(&test_settings(&address, 0), Metrics::new()).await.unwrap();
            store.query("DEFINE TABLE probe SCHEMALESS; CREATE probe:1 SET v = 0", Vars::new()).await.unwrap();

            let (first, second) = (store.begin().await.unwrap(), store.begin().await.unwrap());
            first.query("UPDATE probe:1 SET v = 1", Vars::new()).await.unwrap();
            second.query("UPDATE probe:1 SET v = 2", Vars::new()).await.unwrap();
            first.commit().await.unwrap();
            let error = second.commit().await.unwrap_err();
            assert_eq!(error.code, ErrorCode::TransactionConflict, "{address}: two writers of one record: {error}");

            let tx = store.begin().await.unwrap();
            let error = tx.query("CREATE probe:1 SET v = 3", Vars::new()).await.err().expect("the record exists");
            assert_eq!(error.code, ErrorCode::TransactionConflict, "{address}: CREATE of a record that exists: {error}");
            tx.cancel().await;

            // A gathered claim (`Tx::create_then`) is created by an INSERT of many records.
            let tx = store.begin().await.unwrap();
            let error = tx.query("INSERT INTO probe [{id: probe:2, v: 4}, {id: probe:1, v: 4}] RETURN NONE", Vars::new()).await.err().expect("the record exists");
            assert_eq!(error.code, ErrorCode::TransactionConflict, "{address}: INSERT of a record that exists: {error}");
            tx.cancel().await;
            store.close().await;
        }
    }

    /// Records SurrealKV has written out of its memtable into tables (SST files, each with one
    /// Bloom filter over its keys that a read by key consults first) are
    /// found again: by id, by a range read, and after the database is opened again. Settle's
    /// other tests write too little for SurrealKV to write a table at all; this one gives it a
    /// 1 MiB memtable and writes a few MB. A filter that wrongly said "not here" would lose
    /// records silently, so this guards the patched table writer in vendor/surrealkv.
    #[tokio::test]
    async fn records_in_surrealkvs_tables_are_found_by_id_and_by_range_before_and_after_reopening() {
        use surrealdb::types::RecordId;
        const RECORDS: usize = 12_000;
        // A transaction must fit in the memtable ("Memtable arena is full" otherwise).
        const BATCH: usize = 100;
        const READ_BATCH: usize = 2_000;
        let dir = tempfile::tempdir().unwrap();
        let address = format!("surrealkv://{}", dir.path().join("db").display());
        let settings = StoreSettings { memtable_mib: 1, ..test_settings(&address, 0) };
        let store = Store::open(&settings, Metrics::new()).await.unwrap();
        store.query("DEFINE TABLE probe SCHEMALESS; DEFINE INDEX probe_n ON probe FIELDS n", Vars::new()).await.unwrap();
        for start in (0..RECORDS).step_by(BATCH) {
            let rows: Vec<serde_json::Value> = (start..start + BATCH)
                .map(|n| serde_json::json!({"id": n, "n": n, "text": format!("record {n} of the probe table, long enough to fill tables quickly")}))
                .collect();
            store.query("INSERT INTO probe $rows RETURN NONE", Vars::new().set("rows", rows)).await.unwrap();
        }

        let found = |store: Store| async move {
            let mut by_id = 0;
            for start in (0..RECORDS).step_by(READ_BATCH) {
                let ids: Vec<RecordId> = (start..start + READ_BATCH).map(|n| RecordId::new("probe", n as i64)).collect();
                let values: Vec<i64> = store.query("SELECT VALUE n FROM $ids", Vars::new().set("ids", ids)).await.unwrap().rows(0).unwrap();
                assert_eq!(values, (start as i64..(start + READ_BATCH) as i64).collect::<Vec<_>>(), "records {start}.. by id");
                by_id += values.len();
            }
            let count = "SELECT VALUE count FROM (SELECT count() FROM probe WHERE n >= 0 GROUP ALL)";
            let by_index: Option<i64> = store.query(count, Vars::new()).await.unwrap().first(0).unwrap();
            (by_id, by_index.unwrap_or(0) as usize)
        };
        assert_eq!(found(store.clone()).await, (RECORDS, RECORDS));
        store.close().await;

        let tables = std::fs::read_dir(dir.path().join("db").join("sstables"))
            .map(|entries| entries.filter(|entry| entry.as_ref().is_ok_and(|entry| entry.path().extension().is_some_and(|ext| ext == "sst"))).count())
            .unwrap_or(0);
        assert!(tables > 0, "SurrealKV wrote tables (SST files), so the reads above came from them");
        let store = Store::open(&settings, Metrics::new()).await.unwrap();
        assert_eq!(found(store.clone()).await, (RECORDS, RECORDS), "after opening the database again");
        store.close().await;
    }
}
