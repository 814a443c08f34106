//! Bringing a database written by an older Settle up to the current schema version, once, at
//! start-up. Each step is idempotent and runs in batches, so a crash halfway through is mended by
//! the next start (the version is recorded only after every step has finished).

use surrealdb::types::{RecordId, RecordIdKey, RecordIdKeyRange};

use super::{Store, Vars};
use crate::error::AppResult;

/// Records updated per transaction while upgrading.
const BATCH: i64 = 100;

/// Runs every step between the database's recorded schema version and the current one.
pub(super) async fn upgrade(store: &Store, from_version: i64) -> AppResult<()> {
    if from_version < 2 {
        for table in ["invoice", "payment", "audit_event"] {
            backfill_page_keys(store, table).await?;
        }
    }
    Ok(())
}

/// Version 2 added `page_key` (the tenant, '/', the key) to the tables that page. Records written
/// before it lack the field and so would be missing from every page. The field's VALUE clause
/// computes it on any update; the batches walk the table in key order.
async fn backfill_page_keys(store: &Store, table: &str) -> AppResult<()> {
    let mut start = std::ops::Bound::Unbounded;
    loop {
        let range = RecordId {
            table: table.into(),
            key: RecordIdKey::Range(Box::new(RecordIdKeyRange { start: start.clone(), end: std::ops::Bound::Unbounded })),
        };
        let mut found = store.query("SELECT VALUE id FROM $range LIMIT $batch", Vars::new().set("range", range).set("batch", BATCH)).await?;
        let ids: Vec<RecordId> = found.rows(0)?;
        let Some(last) = ids.last().cloned() else { return Ok(()) };
        store
            .query(
                "UPDATE $ids SET page_key = tenant + '/' + key WHERE page_key = NONE RETURN NONE",
                Vars::new().set("ids", ids.clone()),
            )
            .await?;
        if (ids.len() as i64) < BATCH {
            return Ok(());
        }
        start = std::ops::Bound::Excluded(last.key);
    }
}
