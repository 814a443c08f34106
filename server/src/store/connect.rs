//! Opening the database named by an address: `mem://`, `surrealkv://path` or `ws(s)://host:port`.
//!
//! The embedded engines are opened through the datastore builder rather than the SDK's
//! connection string, because SurrealKV sizes its block cache (half the machine's RAM) and its
//! memtable (up to 1 GiB) from the machine unless told otherwise, and the connection string cannot
//! reach those two settings. Commits stay synced to disk on every commit (`sync=every`).
//!
//! Statements run on SurrealDB's compute executor (`PlannerStrategy::ComputeOnly`), which all
//! writes use anyway. Its newer streaming executor, the default for reads, loads and decodes
//! every field definition of a table again in each transaction that reads it (SurrealDB 3.3),
//! which made a third of a payment's cost: with the compute executor, which caches them across
//! transactions, payInvoice went from about 710 to about 1,080 per second
//! (docs/performance.md). The compute executor walks an index in order only when the index leads
//! with the ordered field, hence the `page_key` indexes in schema.surql.

use std::sync::Arc;

use surrealdb::Surreal;
use surrealdb::engine::local::Db;
use surrealdb::opt::auth::Root;
use surrealdb::opt::capabilities::{Capabilities, PlannerStrategy};
use surrealdb_cnf::ConfigMap;
use surrealdb_engine_local::Datastore;

use super::Conn;

/// Where the data lives and how the store behaves.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `mem://`, `surrealkv://path` or `ws://host:port` (`wss://` for TLS).
    pub address: String,
    pub namespace: String,
    pub database: String,
    /// Root credentials for a SurrealDB server; unused by the embedded engines.
    pub username: Option<String>,
    pub password: Option<String>,
    /// How long one call to a SurrealDB server may take (a server that stops answering:
    /// DATABASE_UNAVAILABLE after it); calls to an embedded database have no limit.
    pub remote_timeout: std::time::Duration,
    /// SurrealKV block cache, in MiB.
    pub block_cache_mib: u64,
    /// SurrealKV memtable (write buffer) size, in MiB.
    pub memtable_mib: u64,
    /// How often one transaction is retried after write conflicts.
    pub transaction_retries_max: u32,
}

pub(super) async fn open(settings: &StoreSettings) -> anyhow::Result<Conn> {
    let address = settings.address.as_str();
    let conn = if address.starts_with("ws://") || address.starts_with("wss://") {
        let db = surrealdb::engine::any::connect(address).await?;
        if let (Some(username), Some(password)) = (&settings.username, &settings.password) {
            db.signin(Root { username: username.clone(), password: password.clone() }).await?;
        }
        use_database_of_server(&db, settings).await?;
        Conn::Remote(db)
    } else if address.starts_with("mem://") || address.starts_with("surrealkv://") {
        let (db, datastore) = open_embedded(address, settings).await?;
        db.use_ns(&settings.namespace).use_db(&settings.database).await?;
        Conn::Local(db, datastore)
    } else {
        anyhow::bail!("unsupported database address {address:?}: use mem://, surrealkv://PATH or ws://HOST:PORT");
    };
    Ok(conn)
}

/// Selects the namespace and database on a SurrealDB server. The server defines them on first
/// use, so processes starting at once against a fresh server can meet a write conflict there;
/// it is run again a few times.
async fn use_database_of_server(db: &surrealdb::Surreal<surrealdb::engine::any::Any>, settings: &StoreSettings) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match db.use_ns(&settings.namespace).use_db(&settings.database).await {
            Ok(_) => return Ok(()),
            // Told apart as a commit's conflict is (`commit_error`): the engine keeps only its text.
            Err(error) if attempt < 10 && super::commit_error(error.clone()).code == crate::error::ErrorCode::TransactionConflict => {
                attempt += 1;
                tokio::time::sleep(super::backoff(attempt)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

async fn open_embedded(address: &str, settings: &StoreSettings) -> anyhow::Result<(Surreal<Db>, Arc<Datastore>)> {
    const MIB: u64 = 1024 * 1024;
    let path = if let Some(dir) = address.strip_prefix("surrealkv://") {
        let dir = dir.split('?').next().unwrap_or(dir);
        std::fs::create_dir_all(dir)?;
        address.to_owned()
    } else {
        "memory".to_owned()
    };
    let config = ConfigMap::empty()
        .with_key_value("surrealkv_block_cache_capacity", (settings.block_cache_mib * MIB).to_string())
        .with_key_value("surrealkv_max_memtable_size", (settings.memtable_mib * MIB).to_string())
        .with_key_value("datastore_sync", "every");
    // The same order the SDK's own embedded connect uses: the version check and bootstrap must
    // run before the maintenance tasks write anything.
    let datastore: Arc<Datastore> = Datastore::builder()
        .with_config(config)
        .with_capabilities(Capabilities::new().with_planner_strategy(PlannerStrategy::ComputeOnly).into())
        .without_maintenance_tasks()
        .build_with_path(&path)
        .await?;
    datastore.check_version().await?;
    datastore.bootstrap().await?;
    datastore.start_maintenance_tasks();
    let db = Surreal::<Db>::unstable_from_datastore(Arc::clone(&datastore), None).await?;
    Ok((db, datastore))
}
