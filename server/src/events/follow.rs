//! Resuming a tenant's ledger events from a position (E2): everything stored after it, then what
//! is published live, each position once and in order, without gaps.
//!
//! The follower subscribes to the bus before it reads the store, so an event positioned while it
//! reads is either in what it reads or waiting on the bus; it hands out only the position after
//! the last it handed out, skips what it has already handed out, and reads the store again
//! whenever the bus shows a gap (it lagged behind, or another process positioned events this
//! one never published). On a database other processes share, it also reads the store whenever
//! the bus has been quiet for [`Store::other_processes_poll`], so events another process
//! positioned reach it within that time even when this process positions none.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::LedgerEventRecord;
use crate::auth::TenantId;
use crate::error::AppResult;
use crate::store::Store;

/// How many records one read of the store returns while catching up.
pub const CATCH_UP_PAGE: usize = 100;

/// One subscriber's place in its tenant's events.
pub struct Follower {
    store: Store,
    tenant: TenantId,
    /// The last position handed out (0: none yet).
    last: i64,
    live: Receiver<Arc<LedgerEventRecord>>,
    /// Read from the store, not handed out yet.
    read: VecDeque<Arc<LedgerEventRecord>>,
    /// Whether the last read of the store reached its end.
    caught_up: bool,
    /// Whether the last record handed out came from the bus rather than from the store.
    live_last: bool,
}

impl Follower {
    /// Starts after `after` (0 or less: from the first event). Subscribes to the store's bus at
    /// once; nothing is read until [`Follower::next`].
    pub fn start(store: Store, tenant: TenantId, after: i64) -> Follower {
        let live = store.events().subscribe();
        Follower { store, tenant, last: after.max(0), live, read: VecDeque::new(), caught_up: false, live_last: false }
    }

    /// The last position handed out: where to resume after a disconnection.
    pub fn position(&self) -> i64 {
        self.last
    }

    /// Whether the last record handed out came live from the bus (it was just published) rather
    /// than from the store (the follower was catching up). A consumer may wait for a stored
    /// record, which stays where it is, but not for a live one: the bus does not wait for it.
    pub fn was_live(&self) -> bool {
        self.live_last
    }

    /// The next record: the one at position `self.position() + 1`, waiting for it if need be.
    /// None when the bus closes (the server stops). A store error is returned as it is, and the
    /// follower stays where it was, so calling again tries again.
    pub async fn next(&mut self) -> Option<AppResult<Arc<LedgerEventRecord>>> {
        loop {
            if let Some(record) = self.read.pop_front() {
                if record.position <= self.last {
                    continue;
                }
                // Positions commit in whole batches, each after the one before, so a read of the
                // store never shows a gap; if it ever did, reading again would not close it.
                if record.position > self.last + 1 {
                    tracing::error!(tenant = %self.tenant, after = self.last, found = record.position, "a gap in stored ledger event positions");
                }
                self.last = record.position;
                self.live_last = false;
                return Some(Ok(record));
            }
            if !self.caught_up {
                let page = match self.store.ledger_events_after(&self.tenant, self.last, CATCH_UP_PAGE).await {
                    Ok(page) => page,
                    Err(error) => return Some(Err(error)),
                };
                self.caught_up = page.len() < CATCH_UP_PAGE;
                self.read.extend(page.into_iter().map(Arc::new));
                continue;
            }
            let received = match self.store.other_processes_poll() {
                None => self.live.recv().await,
                Some(poll) => match tokio::time::timeout(poll, self.live.recv()).await {
                    Ok(received) => received,
                    // The bus was quiet: another process may have positioned events it never
                    // carries, and nothing here would show the gap.
                    Err(_) => {
                        self.caught_up = false;
                        continue;
                    }
                },
            };
            match received {
                Ok(record) if record.tenant != self.tenant.as_str() || record.position <= self.last => continue,
                Ok(record) if record.position == self.last + 1 => {
                    self.last = record.position;
                    self.live_last = true;
                    return Some(Ok(record));
                }
                // A gap: positions this bus did not carry (another process), or missed.
                Ok(_) | Err(RecvError::Lagged(_)) => self.caught_up = false,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::events::LedgerEvent;
    use crate::store::audit::{AuditEntry, Mutation};
    use crate::store::ledger_events::{memory_store, write_raw_event};

    async fn void(store: &Store, tenant: &TenantId, payment: &str) {
        let mutation = Mutation { tenant, actor: "tester", request_id: "r", operation: "test", idempotency: None, dry_run: false };
        let events = vec![LedgerEvent::PaymentVoided { payment: payment.to_owned() }];
        store.record_event(&mutation, AuditEntry { action: "payment.void".into(), events, ..AuditEntry::default() }).await.unwrap();
        store.position_events(tenant).await;
    }

    async fn next_position(follower: &mut Follower) -> i64 {
        let record = tokio::time::timeout(Duration::from_secs(10), follower.next()).await.expect("a record in time");
        record.expect("the bus is open").expect("the store answers").position
    }

    /// A subscriber resumes after a position: the stored events after it, then the live ones, each
    /// once and in order, skipping other tenants' and filling gaps the bus did not carry.
    #[tokio::test]
    async fn e2_a_follower_resumes_from_the_store_then_follows_live_events() {
        let store = memory_store().await;
        let tenant = TenantId::parse("follow").unwrap();
        let other = TenantId::parse("other").unwrap();
        for payment in ["a", "b", "c"] {
            void(&store, &tenant, payment).await;
        }
        let mut follower = Follower::start(store.clone(), tenant.clone(), 1);
        assert_eq!(next_position(&mut follower).await, 2);
        assert!(!follower.was_live(), "read from the store");
        assert_eq!(next_position(&mut follower).await, 3);

        // Live: another tenant's events pass by; this tenant's arrive in order.
        let writer = {
            let (store, tenant, other) = (store.clone(), tenant.clone(), other.clone());
            tokio::spawn(async move {
                void(&store, &other, "x").await;
                void(&store, &tenant, "d").await;
                void(&store, &tenant, "e").await;
            })
        };
        assert_eq!(next_position(&mut follower).await, 4);
        assert!(follower.was_live(), "taken from the bus");
        assert_eq!(next_position(&mut follower).await, 5);
        writer.await.unwrap();

        // Positions 6 and 7 committed by another process: the bus carries only 7 (as if it had
        // lagged), and the follower reads 6 from the store first.
        write_raw_event(&store, &tenant, "f", Some(6)).await;
        let seventh = write_raw_event(&store, &tenant, "g", Some(7)).await;
        let mut record = store.ledger_events_after(&tenant, 6, 1).await.unwrap().remove(0);
        assert_eq!(record.audit_event, seventh);
        store.events().publish(record.clone());
        assert_eq!(next_position(&mut follower).await, 6);
        assert_eq!(next_position(&mut follower).await, 7);
        // A repeat is never handed out again.
        store.events().publish(record.clone());
        record.position = 8;
        write_raw_event(&store, &tenant, "h", Some(8)).await;
        store.events().publish(record);
        assert_eq!(next_position(&mut follower).await, 8);
        assert_eq!(follower.position(), 8);
    }
}
