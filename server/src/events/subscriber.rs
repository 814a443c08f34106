//! One live subscriber of a tenant's ledger events (E2): a [`Follower`] run by a task of its own
//! into a bounded buffer, which the subscriber empties at its own pace.
//!
//! Publishing never waits for a subscriber: the bus is a broadcast channel that leaves behind a
//! receiver which does not keep up. Nor may a subscriber that reads slowly make the server hold
//! ever more for it. So each subscriber has room for `buffer_max` records. A record read from the
//! store while catching up waits for room (it stays in the store meanwhile); a live record that
//! finds no room ends the subscription: what is buffered is still delivered, then
//! SUBSCRIBER_TOO_SLOW, and the subscriber resumes after the last position it received, which
//! reads the rest from the store without gaps or repeats.
//!
//! Filters apply before the buffer, so records a subscriber did not ask for take none of its room.

use std::collections::HashSet;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::follow::Follower;
use super::{LedgerEvent, LedgerEventRecord};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::store::Store;

/// Which records a subscriber wants; an empty filter passes every record.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Kinds as [`LedgerEvent::kind`] names them: a record passes when one of its events is of
    /// one of these kinds, and is delivered whole. None: every kind.
    pub kinds: Option<HashSet<String>>,
    /// A client's key: a record passes when its change concerns that client. None: every client.
    pub client: Option<String>,
}

impl Filter {
    async fn passes(&self, store: &Store, tenant: &TenantId, record: &LedgerEventRecord) -> AppResult<bool> {
        if let Some(kinds) = &self.kinds
            && !record.events.iter().any(|event| kinds.contains(event.kind()))
        {
            return Ok(false);
        }
        match &self.client {
            None => Ok(true),
            Some(client) => Ok(client_of(store, tenant, record).await?.as_deref() == Some(client.as_str())),
        }
    }
}

/// The client a change concerns. Every money change concerns one client: a payment and the
/// invoices it is allocated to have the same client (P5), and a credit note or a charge is its
/// invoice's. So the first payment or invoice a record names tells: a payment's client never
/// changes (P9), an invoice's only while it is a draft. Read as the record is delivered.
async fn client_of(store: &Store, tenant: &TenantId, record: &LedgerEventRecord) -> AppResult<Option<String>> {
    use LedgerEvent as E;
    let Some(event) = record.events.first() else { return Ok(None) };
    match event {
        E::PaymentRecorded { client, .. } => Ok(Some(client.clone())),
        E::PaymentAllocated { payment, .. }
        | E::AllocationRemoved { payment, .. }
        | E::PaymentRefunded { payment, .. }
        | E::RefundSettled { payment, .. }
        | E::PaymentVoided { payment }
        | E::PaymentUpdated { payment } => Ok(store.payment(tenant, payment).await?.map(|row| row.doc.client)),
        E::InvoiceFinalized { invoice }
        | E::InvoiceStatusChanged { invoice, .. }
        | E::InvoiceVoided { invoice }
        | E::CreditNoteIssued { invoice, .. }
        | E::CreditNoteVoided { invoice, .. }
        | E::ChargeDeclined { invoice, .. } => Ok(store.invoice(tenant, invoice).await?.map(|row| row.doc.client)),
    }
}

type Item = AppResult<Arc<LedgerEventRecord>>;

/// The tenant's records after position `after` that pass `filter`, stored ones first, then live
/// ones as they are published, each once and in position order. At most `buffer_max` wait for the
/// subscriber; see the module's documentation for what happens when more would. The stream ends
/// after an error (a failed read of the store, or SUBSCRIBER_TOO_SLOW), or when the server stops.
/// Dropping it stops its task.
pub fn subscribe(store: Store, tenant: TenantId, after: i64, filter: Filter, buffer_max: usize) -> impl Stream<Item = Item> + Send {
    // Subscribed to the bus here, before the task runs, so nothing published from now on is missed.
    let follower = Follower::start(store.clone(), tenant.clone(), after);
    let (sender, receiver) = mpsc::channel(buffer_max.max(1));
    let (overflow, overflowed) = oneshot::channel();
    tokio::spawn(follow(follower, store, tenant, filter, sender, overflow, buffer_max));
    futures::stream::unfold((receiver, Some(overflowed)), |(mut receiver, overflowed)| async move {
        if let Some(item) = receiver.recv().await {
            return Some((item, (receiver, overflowed)));
        }
        // The task stopped and everything it buffered was delivered; after an overflow, say so.
        let error = overflowed?.await.ok()?;
        Some((Err(error), (receiver, None)))
    })
}

/// The subscriber's task: follows the tenant's events into the buffer until the subscriber goes
/// away, an error, an overflow, or the bus closes.
async fn follow(
    mut follower: Follower,
    store: Store,
    tenant: TenantId,
    filter: Filter,
    sender: mpsc::Sender<Item>,
    overflow: oneshot::Sender<AppError>,
    buffer_max: usize,
) {
    loop {
        let next = tokio::select! {
            () = sender.closed() => return,
            next = follower.next() => next,
        };
        let record = match next {
            None => return,
            Some(Ok(record)) => record,
            Some(Err(error)) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        };
        match filter.passes(&store, &tenant, &record).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        }
        if !follower.was_live() {
            if sender.send(Ok(record)).await.is_err() {
                return;
            }
            continue;
        }
        match sender.try_send(Ok(record)) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => return,
            Err(TrySendError::Full(_)) => {
                let _ = overflow.send(AppError::new(
                    ErrorCode::SubscriberTooSlow,
                    format!(
                        "this subscription fell more than {buffer_max} records behind the ledger and was ended; \
                         subscribe again with afterPosition set to the last position you received"
                    ),
                ));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;
    use crate::store::ledger_events::{memory_store, write_raw_event};

    /// Publishes a stored record as this process's positioning would.
    async fn publish(store: &Store, tenant: &TenantId, payment: &str, position: i64) {
        write_raw_event(store, tenant, payment, Some(position)).await;
        let record = store.ledger_events_after(tenant, position - 1, 1).await.unwrap().remove(0);
        store.events().publish(record);
    }

    async fn next(stream: &mut (impl Stream<Item = Item> + Unpin)) -> Option<Item> {
        tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("an answer in time")
    }

    /// A subscriber that does not read while live records come gets the ones its buffer held,
    /// then SUBSCRIBER_TOO_SLOW, then nothing; publishing never waited for it. Stored records
    /// wait for room instead.
    #[tokio::test]
    async fn e2_a_subscriber_that_falls_behind_live_records_is_ended_after_its_buffer() {
        let store = memory_store().await;
        let tenant = TenantId::parse("slow").unwrap();
        for position in 1..=5 {
            write_raw_event(&store, &tenant, "stored", Some(position)).await;
        }
        let mut stream = Box::pin(subscribe(store.clone(), tenant.clone(), 0, Filter::default(), 2));
        // Five stored records through a buffer of two: they wait for room.
        for position in 1..=5 {
            assert_eq!(next(&mut stream).await.unwrap().unwrap().position, position);
        }
        // Now live: ten records published without reading; the buffer holds two.
        for position in 6..=15 {
            publish(&store, &tenant, "live", position).await;
        }
        let mut delivered = Vec::new();
        let error = loop {
            match next(&mut stream).await.expect("an error before the end") {
                Ok(record) => delivered.push(record.position),
                Err(error) => break error,
            }
        };
        assert_eq!(error.code, ErrorCode::SubscriberTooSlow, "{error}");
        assert!(!delivered.is_empty() && delivered.len() <= 3, "the buffer's records, in order: {delivered:?}");
        assert_eq!(delivered, (6..6 + delivered.len() as i64).collect::<Vec<_>>());
        assert!(next(&mut stream).await.is_none(), "the stream ends after the error");
    }

    /// Filters pass records with an event of the asked kinds, or of the asked client.
    #[tokio::test]
    async fn e2_filters_pass_records_by_kind_and_by_client() {
        let store = memory_store().await;
        let tenant = TenantId::parse("filters").unwrap();
        let record = |events: Vec<LedgerEvent>| LedgerEventRecord {
            tenant: tenant.as_str().to_owned(),
            position: 1,
            audit_event: "a".into(),
            at: chrono::Utc::now(),
            actor: "tester".into(),
            action: "test".into(),
            events,
        };
        let recorded = record(vec![LedgerEvent::PaymentRecorded {
            payment: "p".into(),
            client: "c1".into(),
            amount: rust_decimal::Decimal::ONE,
            currency: "AUD".into(),
        }]);
        let kinds = |names: &[&str]| Filter { kinds: Some(names.iter().map(|n| n.to_string()).collect()), client: None };
        assert!(kinds(&["PAYMENT_RECORDED", "PAYMENT_VOIDED"]).passes(&store, &tenant, &recorded).await.unwrap());
        assert!(!kinds(&["PAYMENT_VOIDED"]).passes(&store, &tenant, &recorded).await.unwrap());
        let client = |key: &str| Filter { kinds: None, client: Some(key.to_owned()) };
        assert!(client("c1").passes(&store, &tenant, &recorded).await.unwrap());
        assert!(!client("c2").passes(&store, &tenant, &recorded).await.unwrap());
        // A payment this tenant does not have concerns no client.
        let voided = record(vec![LedgerEvent::PaymentVoided { payment: "unknown".into() }]);
        assert!(!client("c1").passes(&store, &tenant, &voided).await.unwrap());
        assert!(Filter::default().passes(&store, &tenant, &voided).await.unwrap());
    }
}
