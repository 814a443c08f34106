//! Dry-runs (D1): a mutation run to the point of committing, then cancelled, with what it would
//! have changed read from inside its own transaction.
//!
//! A dry-run goes through the same code as the real request (load, decide, write, audit event),
//! so it answers exactly what that request would do at that moment, with the same error when it
//! would fail. Nothing is kept: the transaction is cancelled, the idempotency key is not claimed,
//! and no plugin is called (the commands skip plugin calls when `Mutation::dry_run` is set).

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::audit::{AuditEntry, Mutation, append_audit};
use super::rows::{InvoiceRow, PaymentRow, record};
use super::{Store, TxRef, Vars};
use crate::error::AppResult;

/// What a mutation did, or, for a dry-run, what it would have done.
#[derive(Debug, Clone)]
pub enum Applied<T> {
    Done(T),
    Previewed(Preview),
}

impl<T> Applied<T> {
    /// A dry-run's preview notes that the request would ask `plugin`, which the dry-run did not
    /// (a replay asks nothing).
    pub fn without_asking(self, plugin: &str) -> Applied<T> {
        match self {
            Applied::Previewed(preview) if !preview.replay => {
                Applied::Previewed(Preview { plugin_not_asked: Some(plugin.to_owned()), ..preview })
            }
            other => other,
        }
    }

    /// The result of a real call; a dry-run's preview otherwise.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Applied<U> {
        match self {
            Applied::Done(value) => Applied::Done(f(value)),
            Applied::Previewed(preview) => Applied::Previewed(preview),
        }
    }
}

/// One record as it is and as it would be: `before` is None for a record the request would
/// create, `after` None for one it would delete.
#[derive(Debug, Clone)]
pub struct Change<T> {
    pub key: String,
    pub before: Option<T>,
    pub after: Option<T>,
}

/// What a request would do (D1).
#[derive(Debug, Clone, Default)]
pub struct Preview {
    /// The key was already used for this same request: sending it answers the first result and
    /// changes nothing.
    pub replay: bool,
    /// The audit event the request would append, `None` for a replay.
    pub entry: Option<AuditEntry>,
    /// Every invoice the request would touch.
    pub invoices: Vec<Change<InvoiceRow>>,
    /// Every payment the request would touch, new ones included.
    pub payments: Vec<Change<PaymentRow>>,
    /// The plugin the request would call and the dry-run did not ask (a charge or refund through
    /// a gateway, or a recorded payment's details): its answer could still refuse the request.
    pub plugin_not_asked: Option<String>,
}

impl Preview {
    pub fn replay() -> Preview {
        Preview { replay: true, ..Preview::default() }
    }
}

/// The keys of `table` among an audit entry's records ("table:key").
fn keys_of<'e>(entry: &'e AuditEntry, table: &str) -> Vec<&'e str> {
    let prefix = format!("{table}:");
    let mut keys: Vec<&str> = Vec::new();
    for key in entry.records.iter().filter_map(|r| r.strip_prefix(prefix.as_str())) {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

impl Store {
    /// Runs a money change through [`Store::mutate`], or, for a dry-run, runs the same body and
    /// audit event in a transaction that is then cancelled, and answers what it would have
    /// changed (see [`super::preview`]). A dry-run claims no idempotency key; with a key already
    /// used it answers as the real request would: a replay for the same request,
    /// IDEMPOTENCY_KEY_REUSED for another.
    pub async fn apply<T, F, Fut>(&self, mutation: &Mutation<'_>, body: F) -> AppResult<Applied<T>>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(TxRef) -> Fut,
        Fut: Future<Output = AppResult<(T, AuditEntry)>>,
    {
        if !mutation.dry_run {
            return self.mutate(mutation, body).await.map(Applied::Done);
        }
        let body = &body;
        // What the records were when the request came: a snapshot taken before the body runs,
        // so a change committed meanwhile by another request shows in neither side.
        let snapshot = self.begin().await?;
        let before = &snapshot;
        let previewed = self
            .cancelled(|tx| async move {
                if self.replay::<serde_json::Value>(mutation).await?.is_some() {
                    return Ok(Applied::Previewed(Preview::replay()));
                }
                let (_, entry) = body(tx.clone()).await?;
                append_audit(&tx, mutation, entry.clone(), None).await?;
                Ok(Applied::Previewed(self.preview_of(before, &tx, entry).await?))
            })
            .await;
        snapshot.cancel().await;
        previewed
    }

    /// Reads the invoices and payments `entry` names as they were in `before` and as they are in
    /// `tx`, which wrote the change and has not committed.
    async fn preview_of(&self, before: &super::Tx, tx: &TxRef, entry: AuditEntry) -> AppResult<Preview> {
        let invoices = self.changes::<InvoiceRow>(before, tx, "invoice", &keys_of(&entry, "invoice")).await?;
        let payments = self.changes::<PaymentRow>(before, tx, "payment", &keys_of(&entry, "payment")).await?;
        Ok(Preview { replay: false, entry: Some(entry), invoices, payments, plugin_not_asked: None })
    }

    async fn changes<T: surrealdb::types::SurrealValue>(&self, before: &super::Tx, tx: &TxRef, table: &str, keys: &[&str]) -> AppResult<Vec<Change<T>>> {
        let mut changes = Vec::with_capacity(keys.len());
        for key in keys {
            let vars = || Vars::new().set("id", record(table, key));
            let before = before.query("SELECT * FROM ONLY $id", vars()).await?.first::<T>(0)?;
            let after = tx.query("SELECT * FROM ONLY $id", vars()).await?.first::<T>(0)?;
            changes.push(Change { key: (*key).to_owned(), before, after });
        }
        Ok(changes)
    }
}
