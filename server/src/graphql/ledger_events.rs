//! Ledger events (E1, E2) as a client reads them: the tenant's money changes in the order they
//! committed, each at its position (1, 2, 3, ... without gaps), with typed events.
//!
//! Each event is an object of its own kind (`PaymentRecordedEvent`, ...) behind the interface
//! `LedgerEvent`, whose one shared field `type` names the kind: a dashboard can list events by
//! `type` alone, and read each kind's fields with a fragment, which client code generators turn
//! into one exact type per kind. Records are named by `...Id` fields (the state of the record
//! now is one query away); money is `Money`, as everywhere.

use std::sync::Arc;

use async_graphql::resolver_utils::EnumType;
use async_graphql::{Context, Enum, ID, Interface, Object, Result, SimpleObject, Subscription};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};

use super::context::{ConnectionSubscriptions, caller, state};
use super::invoices_and_payments::{InvoiceStatus, RefundOutcome};
use super::money::Money;
use super::pagination::{PAGE_SIZE_DEFAULT, PageInfo, connection_types, wants_total};
use crate::auth::Role;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::events::subscriber::{self, Filter};
use crate::events::{self, LedgerEvent as Event};
use crate::store::directory::PartyKind;

/// The kind of a ledger event.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum LedgerEventType {
    PaymentRecorded,
    PaymentAllocated,
    AllocationRemoved,
    PaymentRefunded,
    RefundSettled,
    PaymentVoided,
    PaymentUpdated,
    InvoiceFinalized,
    InvoiceStatusChanged,
    InvoiceVoided,
    CreditNoteIssued,
    CreditNoteVoided,
    ChargeDeclined,
}

/// A new payment: `amount` came in from the client (P1-P3).
#[derive(SimpleObject)]
pub struct PaymentRecordedEvent {
    #[graphql(name = "type", owned)]
    kind: LedgerEventType,
    payment_id: ID,
    client_id: ID,
    amount: Money,
}

/// Part of a payment moved onto an invoice (P3-P5).
#[derive(SimpleObject)]
pub struct PaymentAllocatedEvent {
    #[graphql(name = "type", owned)]
    kind: LedgerEventType,
    allocation_id: ID,
    payment_id: ID,
    invoice_id: ID,
    amount: Money,
}

/// An allocation was removed: the payment has the amount back, the invoice owes it again (P6).
#[derive(SimpleObject)]
pub struct AllocationRemovedEvent {
    #[graphql(name = "type", owned)]
    kind: LedgerEventType,
    allocation_id: ID,
    payment_id: ID,
    invoice_id: ID,
    amount: Money,
}

/// A refund was made, or sent to the payment's plugin (F1-F3).
#[derive(SimpleObject)]
pub struct PaymentRefundedEvent {
    #[graphql(name = "type", owned)]
    kind: LedgerEventType,
    refund_id: ID,
    payment_id: ID,
    amount: Money,
    /// PENDING until the plugin's answer is known; then a REFUND_SETTLED event follows.
    outcome: RefundOutcome,
}

/// A refund whose outcome was unknown got it (F3).
#[derive(SimpleObject)]
pub struct RefundSettledEvent {
    #[graphql(name = "type", owned)]
    kind: LedgerEventType,
    refund_id: ID,
    payment_id: ID,
    outcome: RefundOutcome,
}

/// A payment was voided (V1, V2).
#[derive(SimpleObject)]
pub struct PaymentVoidedEvent {
    #[graphql(name = "type", owned)]
    kind: LedgerEventType,
    payment_id: ID,
}

/// A payment's description or external reference changed (P9).
#[derive(SimpleObject)]
pub struct PaymentUpdatedEvent {
    #[graphql(name = "type", owned)]
    kind: LedgerEventType,
    payment_id: ID,
}

/// A draft was finalized and is OPEN (I2); an INVOICE_STATUS_CHANGED to PAID follows in the same
/// record when it owes nothing.
#[derive(SimpleObject)]
pub struct InvoiceFinalizedEvent {
    #[graphql(name = "type", owned)]
    kind: LedgerEventType,
    invoice_id: ID,
}

/// An invoice's stored status changed: OPEN to PAID and back (I3, C4), to DRAFT when reverted
/// (I5). Never OVERDUE, which is derived (I4).
#[derive(SimpleObject)]
pub struct InvoiceStatusChangedEvent {
    #[graphql(name = "type", owned)]
    kind: LedgerEventType,
    invoice_id: ID,
    from: InvoiceStatus,
    to: InvoiceStatus,
}

/// An invoice was voided (I7).
#[derive(SimpleObject)]
pub struct InvoiceVoidedEvent {
    #[graphql(name = "type", owned)]
    kind: LedgerEventType,
    invoice_id: ID,
}

/// A credit note lowered its invoice's balance by `total` (C1-C3).
#[derive(SimpleObject)]
pub struct CreditNoteIssuedEvent {
    #[graphql(name = "type", owned)]
    kind: LedgerEventType,
    credit_note_id: ID,
    invoice_id: ID,
    total: Money,
}

/// A credit note was voided; its invoice owes the amount again (C4).
#[derive(SimpleObject)]
pub struct CreditNoteVoidedEvent {
    #[graphql(name = "type", owned)]
    kind: LedgerEventType,
    credit_note_id: ID,
    invoice_id: ID,
}

/// A charge through a plugin was declined: nothing was paid.
#[derive(SimpleObject)]
pub struct ChargeDeclinedEvent {
    #[graphql(name = "type", owned)]
    kind: LedgerEventType,
    invoice_id: ID,
    /// The gateway's reason.
    reason: String,
}

/// One fact of a committed money change; `type` says which kind, and each kind is an object
/// type with its own fields.
#[derive(Interface)]
#[graphql(name = "LedgerEvent", field(name = "type", method = "kind", ty = "LedgerEventType", desc = "The kind of event."))]
pub enum LedgerEventNode {
    PaymentRecorded(PaymentRecordedEvent),
    PaymentAllocated(PaymentAllocatedEvent),
    AllocationRemoved(AllocationRemovedEvent),
    PaymentRefunded(PaymentRefundedEvent),
    RefundSettled(RefundSettledEvent),
    PaymentVoided(PaymentVoidedEvent),
    PaymentUpdated(PaymentUpdatedEvent),
    InvoiceFinalized(InvoiceFinalizedEvent),
    InvoiceStatusChanged(InvoiceStatusChangedEvent),
    InvoiceVoided(InvoiceVoidedEvent),
    CreditNoteIssued(CreditNoteIssuedEvent),
    CreditNoteVoided(CreditNoteVoidedEvent),
    ChargeDeclined(ChargeDeclinedEvent),
}

fn invoice_status(status: events::InvoiceStatus) -> InvoiceStatus {
    match status {
        events::InvoiceStatus::Draft => InvoiceStatus::Draft,
        events::InvoiceStatus::Open => InvoiceStatus::Open,
        events::InvoiceStatus::Paid => InvoiceStatus::Paid,
        events::InvoiceStatus::Void => InvoiceStatus::Void,
    }
}

impl From<Event> for LedgerEventNode {
    fn from(event: Event) -> Self {
        use LedgerEventType as T;
        match event {
            Event::PaymentRecorded { payment, client, amount, currency } => LedgerEventNode::PaymentRecorded(PaymentRecordedEvent {
                kind: T::PaymentRecorded,
                payment_id: ID(payment),
                client_id: ID(client),
                amount: Money::of(amount, &currency),
            }),
            Event::PaymentAllocated { allocation, payment, invoice, amount, currency } => {
                LedgerEventNode::PaymentAllocated(PaymentAllocatedEvent {
                    kind: T::PaymentAllocated,
                    allocation_id: ID(allocation),
                    payment_id: ID(payment),
                    invoice_id: ID(invoice),
                    amount: Money::of(amount, &currency),
                })
            }
            Event::AllocationRemoved { allocation, payment, invoice, amount, currency } => {
                LedgerEventNode::AllocationRemoved(AllocationRemovedEvent {
                    kind: T::AllocationRemoved,
                    allocation_id: ID(allocation),
                    payment_id: ID(payment),
                    invoice_id: ID(invoice),
                    amount: Money::of(amount, &currency),
                })
            }
            Event::PaymentRefunded { refund, payment, amount, currency, outcome } => LedgerEventNode::PaymentRefunded(PaymentRefundedEvent {
                kind: T::PaymentRefunded,
                refund_id: ID(refund),
                payment_id: ID(payment),
                amount: Money::of(amount, &currency),
                outcome: RefundOutcome::from(outcome),
            }),
            Event::RefundSettled { refund, payment, outcome } => LedgerEventNode::RefundSettled(RefundSettledEvent {
                kind: T::RefundSettled,
                refund_id: ID(refund),
                payment_id: ID(payment),
                outcome: RefundOutcome::from(outcome),
            }),
            Event::PaymentVoided { payment } => {
                LedgerEventNode::PaymentVoided(PaymentVoidedEvent { kind: T::PaymentVoided, payment_id: ID(payment) })
            }
            Event::PaymentUpdated { payment } => {
                LedgerEventNode::PaymentUpdated(PaymentUpdatedEvent { kind: T::PaymentUpdated, payment_id: ID(payment) })
            }
            Event::InvoiceFinalized { invoice } => {
                LedgerEventNode::InvoiceFinalized(InvoiceFinalizedEvent { kind: T::InvoiceFinalized, invoice_id: ID(invoice) })
            }
            Event::InvoiceStatusChanged { invoice, from, to } => LedgerEventNode::InvoiceStatusChanged(InvoiceStatusChangedEvent {
                kind: T::InvoiceStatusChanged,
                invoice_id: ID(invoice),
                from: invoice_status(from),
                to: invoice_status(to),
            }),
            Event::InvoiceVoided { invoice } => {
                LedgerEventNode::InvoiceVoided(InvoiceVoidedEvent { kind: T::InvoiceVoided, invoice_id: ID(invoice) })
            }
            Event::CreditNoteIssued { credit_note, invoice, total, currency } => LedgerEventNode::CreditNoteIssued(CreditNoteIssuedEvent {
                kind: T::CreditNoteIssued,
                credit_note_id: ID(credit_note),
                invoice_id: ID(invoice),
                total: Money::of(total, &currency),
            }),
            Event::CreditNoteVoided { credit_note, invoice } => LedgerEventNode::CreditNoteVoided(CreditNoteVoidedEvent {
                kind: T::CreditNoteVoided,
                credit_note_id: ID(credit_note),
                invoice_id: ID(invoice),
            }),
            Event::ChargeDeclined { invoice, reason } => {
                LedgerEventNode::ChargeDeclined(ChargeDeclinedEvent { kind: T::ChargeDeclined, invoice_id: ID(invoice), reason })
            }
        }
    }
}

pub struct LedgerEventRecord(pub events::LedgerEventRecord);

/// One committed money change of the practice at its place in the practice's order: the audit
/// event it was recorded with and the ledger events it consists of.
#[Object]
impl LedgerEventRecord {
    /// The practice's order of money changes: 1, 2, 3, ... without gaps. Resume after the last
    /// position you have seen to get each later change exactly once.
    async fn position(&self) -> i64 {
        self.0.position
    }
    /// The audit event of the change (see `auditEvents`).
    async fn audit_event_id(&self) -> ID {
        ID(self.0.audit_event.clone())
    }
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// The token subject that made the change.
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    /// The audit event's action, e.g. payment.pay_invoice.
    async fn action(&self) -> &str {
        &self.0.action
    }
    /// What the change did, in the order it did it.
    async fn events(&self) -> Vec<LedgerEventNode> {
        self.0.events.iter().cloned().map(LedgerEventNode::from).collect()
    }
}

connection_types!(LedgerEventRecord, LedgerEventRecordConnection, LedgerEventRecordEdge);

const CURSOR_PREFIX: &str = "ledger_event:";

fn encode_cursor(position: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{position}"))
}

fn decode_cursor(cursor: &str) -> AppResult<i64> {
    let invalid = || AppError::invalid("after is not a cursor from this list");
    let bytes = URL_SAFE_NO_PAD.decode(cursor.as_bytes()).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let position = text.strip_prefix(CURSOR_PREFIX).ok_or_else(invalid)?;
    position.parse::<i64>().ok().filter(|p| *p >= 0).ok_or_else(invalid)
}

/// Where a page starts: after a cursor of this list, or after a position; 0 when neither.
fn start_after(after: Option<String>, after_position: Option<i64>) -> AppResult<i64> {
    match (after, after_position) {
        (Some(_), Some(_)) => Err(AppError::invalid("give after or afterPosition, not both")),
        (Some(cursor), None) => decode_cursor(&cursor),
        (None, Some(position)) if position < 0 => Err(AppError::invalid(format!("afterPosition must be 0 or more, not {position}"))),
        (None, position) => Ok(position.unwrap_or(0)),
    }
}

#[derive(Default)]
pub struct LedgerEventQuery;

#[Object]
impl LedgerEventQuery {
    /// The practice's money changes in the order they committed, oldest first, each with its
    /// position and typed ledger events. Start after a cursor of this list (`after`) or after a
    /// position you were given (`afterPosition`, e.g. the last one you processed); each change
    /// appears once, and a page never skips one.
    #[graphql(complexity = "25 + first.unwrap_or(20).max(0) as usize * child_complexity")]
    async fn ledger_events(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        after_position: Option<i64>,
    ) -> Result<LedgerEventRecordConnection> {
        let request = caller(ctx, Role::Viewer)?;
        let page_size_max = state(ctx).limits.page_size_max;
        let size = match first {
            None => PAGE_SIZE_DEFAULT.min(page_size_max),
            Some(n) if n >= 1 && (n as usize) <= page_size_max => n as usize,
            Some(n) => return Err(AppError::invalid(format!("first must be between 1 and {page_size_max}, not {n}")).into()),
        };
        let after = start_after(after, after_position)?;
        let tenant = &request.principal.tenant;
        let store = &state(ctx).store;
        let mut records = store.ledger_events_after(tenant, after, size + 1).await?;
        let total = if wants_total(ctx) { store.ledger_event_count(tenant).await? } else { 0 };
        let has_next_page = records.len() > size;
        records.truncate(size);
        let edges: Vec<(String, LedgerEventRecord)> =
            records.into_iter().map(|record| (encode_cursor(record.position), LedgerEventRecord(record))).collect();
        let page_info = PageInfo {
            has_next_page,
            has_previous_page: after > 0,
            start_cursor: edges.first().map(|(cursor, _)| cursor.clone()),
            end_cursor: edges.last().map(|(cursor, _)| cursor.clone()),
        };
        Ok(<LedgerEventRecord as super::pagination::Connected>::connection(edges, page_info, total))
    }

    /// The position of the practice's latest money change, 0 before the first (VIEWER).
    /// Positions have no gaps, so it is also how many there are. A client that wants only what
    /// happens from now on subscribes with `afterPosition` set to it.
    async fn last_ledger_position(&self, ctx: &Context<'_>) -> Result<i64> {
        let request = caller(ctx, Role::Viewer)?;
        Ok(state(ctx).store.ledger_event_count(&request.principal.tenant).await?)
    }
}

#[derive(Default)]
pub struct LedgerEventSubscription;

#[Subscription]
impl LedgerEventSubscription {
    /// The practice's money changes as they commit, each once and in position order (VIEWER).
    /// Served over WebSocket at /graphql (graphql-transport-ws), with the token in
    /// `connection_init`. With `afterPosition` (the last position you processed) it starts with
    /// the changes stored after it, then goes on live, so a client that reconnects misses nothing
    /// and gets nothing twice; without it, with the changes that commit from now on. `types`
    /// keeps the changes with at least one event of those kinds (delivered whole), `clientId`
    /// the changes of one client. A subscriber that falls more than the server's buffer behind
    /// is ended with SUBSCRIBER_TOO_SLOW: subscribe again after the last position received.
    async fn ledger_events(
        &self,
        ctx: &Context<'_>,
        after_position: Option<i64>,
        types: Option<Vec<LedgerEventType>>,
        client_id: Option<ID>,
    ) -> Result<impl Stream<Item = Result<LedgerEventRecord>>> {
        let request = caller(ctx, Role::Viewer)?;
        let Some(subscriptions) = ctx.data_opt::<ConnectionSubscriptions>() else {
            return Err(AppError::new(
                ErrorCode::QueryRejected,
                "subscriptions are served over WebSocket at /graphql (graphql-transport-ws)",
            )
            .into());
        };
        let (store, limits) = (&state(ctx).store, &state(ctx).limits);
        // Taken before any work, so a refused subscription costs nothing; given back if the
        // arguments are refused below.
        let slot = subscriptions.take(limits.subscriptions_per_connection_max as usize)?;
        let tenant = &request.principal.tenant;
        let kinds = match types {
            Some(types) if types.is_empty() => {
                return Err(AppError::invalid("types must name at least one LedgerEventType, or be left out for every type").into());
            }
            Some(types) => Some(types.into_iter().map(|kind| kind_name(kind).to_owned()).collect()),
            None => None,
        };
        let client = match client_id {
            Some(id) => match store.party(tenant, PartyKind::Client, id.as_str()).await? {
                Some(_) => Some(id.0),
                None => return Err(AppError::not_found("client").into()),
            },
            None => None,
        };
        let last = store.ledger_event_count(tenant).await?;
        let after = match after_position {
            None => last,
            Some(position) if position < 0 => {
                return Err(AppError::invalid(format!("afterPosition must be 0 or more, not {position}")).into());
            }
            // A position this practice never reached is not one it gave out: refused rather than
            // waited for.
            Some(position) if position > last => {
                return Err(AppError::invalid(format!("afterPosition {position} is after the practice's last position, {last}")).into());
            }
            Some(position) => position,
        };
        let records = subscriber::subscribe(
            store.clone(),
            tenant.clone(),
            after,
            Filter { kinds, client },
            limits.subscription_buffer_max as usize,
        );
        Ok(records.map(move |record| {
            // The slot is held as long as the subscription runs.
            let _running = &slot;
            record.map(|record| LedgerEventRecord(Arc::unwrap_or_clone(record))).map_err(async_graphql::Error::from)
        }))
    }
}

/// A kind's name as the API and [`Event::kind`] spell it (PAYMENT_RECORDED, ...).
fn kind_name(kind: LedgerEventType) -> &'static str {
    LedgerEventType::items().iter().find(|item| item.value == kind).map(|item| item.name).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_the_names_of_events() {
        let event = Event::InvoiceStatusChanged { invoice: "i".into(), from: events::InvoiceStatus::Open, to: events::InvoiceStatus::Paid };
        assert_eq!(kind_name(LedgerEventType::InvoiceStatusChanged), event.kind());
        assert_eq!(kind_name(LedgerEventType::PaymentRecorded), "PAYMENT_RECORDED");
        assert_eq!(LedgerEventType::items().len(), 13, "one type per kind of LedgerEvent");
    }

    #[test]
    fn cursors_stand_for_positions_and_refuse_other_lists() {
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        let invoice_cursor = URL_SAFE_NO_PAD.encode("invoice:0190f0a0-0000-7000-8000-000000000000");
        assert!(decode_cursor(&invoice_cursor).is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("ledger_event:-1")).is_err());
        assert!(start_after(Some(encode_cursor(1)), Some(1)).is_err(), "not both");
        assert!(start_after(None, Some(-1)).is_err());
        assert_eq!(start_after(None, None).unwrap(), 0);
        assert_eq!(start_after(None, Some(7)).unwrap(), 7);
    }
}
