//! In-process queues for hot records.
//!
//! Optimistic transactions turn a record that many requests write at once (a tenant's invoice
//! counter, one invoice, one payment) into a storm of conflicts and retries. Writers of the same
//! record therefore wait their turn here before they reach the database. This is only a traffic
//! rule for one process: correctness across processes still rests on the database's own conflict
//! check, which these locks never replace.
//!
//! The key of each queue is made by one of the functions below, so every writer of a record
//! queues under the same key whichever store file it is in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::auth::TenantId;

/// The queue of writers of a tenant's record, which holds its invoice counter and settings.
pub(crate) fn tenant_lock(tenant: &TenantId) -> String {
    format!("tenant:{tenant}")
}

/// The queue of writers of one of a tenant's counters (payment and credit note numbers).
pub fn counter_lock(tenant: &TenantId, kind: &str) -> String {
    format!("counter:{tenant}:{kind}")
}

/// The queue of writers of one record, such as an invoice or a payment.
pub(crate) fn record_lock(table: &str, key: &str) -> String {
    format!("{table}:{key}")
}

#[derive(Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Weak<AsyncMutex<()>>>>,
}

impl KeyedLocks {
    /// Waits for the turn to write `key` (e.g. "tenant:demo"); the turn ends when the guard drops.
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(existing) = locks.get(key).and_then(Weak::upgrade) {
                existing
            } else {
                // Forget locks nobody holds any more, so the map stays as small as the traffic.
                if locks.len() > 1024 {
                    locks.retain(|_, weak| weak.strong_count() > 0);
                }
                let fresh = Arc::new(AsyncMutex::new(()));
                locks.insert(key.to_owned(), Arc::downgrade(&fresh));
                fresh
            }
        };
        lock.lock_owned().await
    }
}

impl KeyedLocks {
    /// Waits for the turns of several keys, always taken in sorted order so that two requests
    /// needing the same keys cannot wait for each other.
    pub async fn lock_all(&self, keys: &[String]) -> Vec<OwnedMutexGuard<()>> {
        let mut keys: Vec<&String> = keys.iter().collect();
        keys.sort();
        keys.dedup();
        let mut guards = Vec::with_capacity(keys.len());
        for key in keys {
            guards.push(self.lock(key).await);
        }
        guards
    }
}

/// Requests that wait, per key, for one task to write them together (group commit): the first
/// to arrive while no task writes its key starts one, and that task takes whatever has queued
/// each time it gets the key's turn, until nothing waits.
pub struct Gathering<M> {
    queues: Mutex<HashMap<String, Gathered<M>>>,
}

struct Gathered<M> {
    waiting: Vec<M>,
    /// Whether a task writes this key's queue.
    writer: bool,
}

impl<M> Default for Gathering<M> {
    fn default() -> Self {
        Gathering { queues: Mutex::new(HashMap::new()) }
    }
}

impl<M> Gathering<M> {
    /// Queues `member` under `key`; true when no task writes that key's queue, and the caller
    /// must start one.
    pub fn join(&self, key: &str, member: M) -> bool {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let queue = queues.entry(key.to_owned()).or_insert_with(|| Gathered { waiting: Vec::new(), writer: false });
        queue.waiting.push(member);
        !std::mem::replace(&mut queue.writer, true)
    }

    /// Up to `max` of the members queued under `key`, oldest first. When none waits, the key's
    /// writer is done: the key is forgotten, and the next `join` starts another writer.
    pub fn take(&self, key: &str, max: usize) -> Vec<M> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = queues.get_mut(key) else { return Vec::new() };
        if queue.waiting.is_empty() {
            queues.remove(key);
            return Vec::new();
        }
        let count = queue.waiting.len().min(max);
        queue.waiting.drain(..count).collect()
    }

    /// The key's writer stopped without finishing (a fault): drops what waits, whose requests
    /// then get an error, and forgets the key so that the next `join` starts a writer.
    pub fn abandon(&self, key: &str) {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_waits_other_key_does_not() {
        let locks = KeyedLocks::default();
        let held = locks.lock("a").await;
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), locks.lock("a")).await.is_err());
        let _other = locks.lock("b").await;
        drop(held);
        let _again = locks.lock("a").await;
    }

    #[test]
    fn the_first_to_join_starts_the_writer_which_takes_in_order_until_none_waits() {
        let gathering = Gathering::default();
        assert!(gathering.join("a", 1), "nobody writes a: start a writer");
        assert!(!gathering.join("a", 2));
        assert!(!gathering.join("a", 3));
        assert!(gathering.join("b", 10), "another key has its own writer");
        assert_eq!(gathering.take("a", 2), vec![1, 2]);
        assert!(!gathering.join("a", 4), "a's writer is still at work");
        assert_eq!(gathering.take("a", 10), vec![3, 4]);
        assert_eq!(gathering.take("a", 10), Vec::<i32>::new());
        assert!(gathering.join("a", 5), "a's writer stopped when nothing waited");
        gathering.abandon("a");
        assert_eq!(gathering.take("a", 10), Vec::<i32>::new(), "an abandoned queue is dropped");
        assert!(gathering.join("a", 6));
    }
}
