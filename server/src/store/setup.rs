//! Setting the database up at start: the schema, its version and the upgrades from older
//! versions, done by one process at a time and only when the database needs it.
//!
//! Why not simply apply the schema at every start: in SurrealDB 3.3 a `DEFINE INDEX ... OVERWRITE`
//! of an index that exists is a destructive replacement (the index is built again from every
//! record, and the old one's entries are queued for deletion), so a start took longer with every
//! record stored, and a second process starting next to a serving one rebuilt the indexes under
//! its writes. Now a database whose recorded version and schema hash are this release's is left
//! as it is; otherwise the process that holds the start-up lease applies the schema (indexes are
//! defined `IF NOT EXISTS`, so existing ones are kept) and the upgrades, and records the version
//! and hash, while the others wait for it.
//!
//! The lease is the record `settle_meta:startup` (holder, until): taken when absent, expired or
//! already this process's, renewed while the set-up runs, deleted when it ends. Two processes
//! taking it at once write the same record, so one of them conflicts, runs again and finds it
//! held. A holder that dies leaves a lease that expires after [`LEASE`].

use std::time::Duration;

use surrealdb::types::SurrealValue;

use super::{SCHEMA, SCHEMA_VERSION, Store, Vars, upgrade};

/// How long a start-up lease lasts unless renewed; it is renewed every third of it.
const LEASE: Duration = Duration::from_secs(30);
/// How often a process waiting for another's set-up looks again.
const WAIT_STEP: Duration = Duration::from_millis(250);

/// The schema version and schema hash the database records, if any.
#[derive(Debug, Clone, PartialEq, SurrealValue)]
struct Recorded {
    version: Option<i64>,
    schema_hash: Option<String>,
}

impl Recorded {
    fn is_current(&self) -> bool {
        self.version == Some(SCHEMA_VERSION) && self.schema_hash.as_deref() == Some(schema_hash().as_str())
    }

    /// Refuses a database written by a newer Settle, which this one must leave as it is.
    fn check_not_newer(&self) -> anyhow::Result<()> {
        match self.version {
            Some(version) if version > SCHEMA_VERSION => anyhow::bail!(
                "the database has schema version {version}, written by a newer Settle; this one knows up to {SCHEMA_VERSION}"
            ),
            _ => Ok(()),
        }
    }
}

/// SHA-256 of schema.surql, hex: a schema edited without a version bump is applied too.
fn schema_hash() -> String {
    crate::ledger::audit_chain::sha256_hex(SCHEMA.as_bytes())
}

/// Brings the database to this release's schema, unless it is there already. Safe when several
/// processes start at once, against a fresh database or an older one.
pub(super) async fn set_up(store: &Store) -> anyhow::Result<()> {
    let recorded = read_recorded(store).await?;
    recorded.check_not_newer()?;
    if recorded.is_current() {
        return Ok(());
    }
    let holder = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4());
    take_lease(store, &holder).await?;
    let renewing = {
        let (store, holder) = (store.clone(), holder.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                if let Err(error) = renew_lease(&store, &holder).await {
                    tracing::warn!(%error, "renewing the start-up lease failed");
                }
            }
        })
    };
    let outcome = set_up_holding_lease(store).await;
    renewing.abort();
    release_lease(store, &holder).await;
    outcome
}

/// Under the lease: reads again (the process that held it before may have done the work),
/// applies the schema, runs the upgrades and records the version and hash.
async fn set_up_holding_lease(store: &Store) -> anyhow::Result<()> {
    let recorded = read_recorded(store).await?;
    recorded.check_not_newer()?;
    if recorded.is_current() {
        return Ok(());
    }
    store.query(SCHEMA, Vars::new()).await.map_err(|e| anyhow::anyhow!("applying the schema: {e}"))?;
    // A new database has no version and nothing to upgrade.
    if let Some(version) = recorded.version {
        upgrade::upgrade(store, version).await.map_err(|e| anyhow::anyhow!("upgrading from schema version {version}: {e}"))?;
    }
    store
        .query(
            "UPSERT settle_meta:schema SET version = $version, schema_hash = $hash, applied_at = time::now()",
            Vars::new().set("version", SCHEMA_VERSION).set("hash", schema_hash()),
        )
        .await
        .map_err(|e| anyhow::anyhow!("recording the schema version: {e}"))?;
    tracing::info!(from = ?recorded.version, to = SCHEMA_VERSION, "the database is set up for this schema version");
    Ok(())
}

/// The recorded version and hash. The meta table is defined first (a fresh database has none);
/// in a transaction, so that processes starting at once retry their conflicts.
async fn read_recorded(store: &Store) -> anyhow::Result<Recorded> {
    let recorded = store
        .transaction(|tx| async move {
            let mut found = tx
                .query(
                    "DEFINE TABLE IF NOT EXISTS settle_meta SCHEMALESS;
                     SELECT version, schema_hash FROM ONLY settle_meta:schema;",
                    Vars::new(),
                )
                .await?;
            found.first::<Recorded>(1)
        })
        .await
        .map_err(|e| anyhow::anyhow!("reading the schema version: {e}"))?;
    Ok(recorded.unwrap_or(Recorded { version: None, schema_hash: None }))
}

impl Store {
    /// Reads the schema version the database records now and remembers whether a newer Settle
    /// has moved it past this release's (then [`Store::begin`] refuses every write: this process
    /// would write the older form). Run by /healthz and by the reconciler on each of its turns.
    /// Returns whether the schema is still this release's.
    pub async fn check_schema_is_ours(&self) -> crate::error::AppResult<bool> {
        let mut found = self.query("SELECT VALUE version FROM ONLY settle_meta:schema", Vars::new()).await?;
        let ours = found.first::<i64>(0)?.is_none_or(|version| version <= SCHEMA_VERSION);
        if !ours && !self.schema_moved_on() {
            tracing::error!(
                this_release = SCHEMA_VERSION,
                "a newer Settle has upgraded the database's schema: this process writes nothing more; stop it and start the newer release"
            );
        }
        self.set_schema_moved_on(!ours);
        Ok(ours)
    }
}

/// Waits until this process holds the start-up lease.
async fn take_lease(store: &Store, holder: &str) -> anyhow::Result<()> {
    let mut told = false;
    loop {
        let taken = store
            .transaction(|tx| async move {
                let mut taken = tx
                    .query(
                        &format!(
                            "UPSERT settle_meta:startup SET holder = $holder, until = time::now() + {}s
                                 WHERE holder = NONE OR holder = $holder OR until < time::now() RETURN VALUE holder;",
                            LEASE.as_secs()
                        ),
                        Vars::new().set("holder", holder.to_owned()),
                    )
                    .await?;
                taken.rows::<String>(0)
            })
            .await
            .map_err(|e| anyhow::anyhow!("taking the start-up lease: {e}"))?;
        if !taken.is_empty() {
            return Ok(());
        }
        if !told {
            tracing::info!("another Settle process is setting the database up; waiting for it");
            told = true;
        }
        tokio::time::sleep(WAIT_STEP).await;
    }
}

async fn renew_lease(store: &Store, holder: &str) -> anyhow::Result<()> {
    store
        .query(
            &format!("UPDATE settle_meta:startup SET until = time::now() + {}s WHERE holder = $holder RETURN NONE", LEASE.as_secs()),
            Vars::new().set("holder", holder.to_owned()),
        )
        .await?;
    Ok(())
}

/// Ends the lease; if this fails, it expires by itself.
async fn release_lease(store: &Store, holder: &str) {
    if let Err(error) = store.query("DELETE settle_meta:startup WHERE holder = $holder", Vars::new().set("holder", holder.to_owned())).await {
        tracing::warn!(%error, "releasing the start-up lease failed; it expires by itself");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Indexes are never redefined at a start: `DEFINE INDEX ... OVERWRITE` rebuilds an index
    /// from every record (see the module's doc), so each is defined `IF NOT EXISTS`, and a
    /// changed index takes a new name.
    #[test]
    fn the_schema_never_overwrites_an_index() {
        let overwriting: Vec<&str> = SCHEMA.lines().filter(|line| line.contains("INDEX") && line.contains("OVERWRITE")).collect();
        assert!(overwriting.is_empty(), "indexes redefined at every schema application: {overwriting:#?}");
    }
}
