//! The tamper-evident audit log (H1): `auditVerify` walks the practice's chain of audit events
//! and reports the first broken link; `auditHead` gives the head to publish. Both ADMIN.

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::context::{caller, state};
use crate::auth::Role;
use crate::ledger::audit_chain::{CANONICAL_FORM_VERSION, ChainBreak, ChainProblem};
use crate::store::audit_chain::{AuditHead as StoredHead, ChainReport};

/// Whether the chain holds.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AuditChainStatus {
    /// Every chained event hashes to what was written with it, links to the one before, and the
    /// chain ends at the recorded head.
    Ok,
    /// See `firstBreak`.
    Broken,
}

/// What is wrong at a broken link.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AuditChainProblem {
    /// The event's fields no longer hash to the content hash written with it: it was edited.
    ContentChanged,
    /// The event's link does not follow from the link before it: an event before it was
    /// removed, replaced or reordered, or the link itself was edited.
    LinkBroken,
    /// No event has this sequence number: one was deleted.
    SequenceGap,
    /// Two events have this sequence number.
    SequenceRepeated,
    /// The chain does not end at the recorded head: events at its end were deleted or added, or
    /// the head was edited.
    HeadMismatch,
}

impl From<ChainProblem> for AuditChainProblem {
    fn from(problem: ChainProblem) -> Self {
        match problem {
            ChainProblem::ContentChanged => AuditChainProblem::ContentChanged,
            ChainProblem::LinkBroken => AuditChainProblem::LinkBroken,
            ChainProblem::SequenceGap => AuditChainProblem::SequenceGap,
            ChainProblem::SequenceRepeated => AuditChainProblem::SequenceRepeated,
            ChainProblem::HeadMismatch => AuditChainProblem::HeadMismatch,
        }
    }
}

/// The first broken link of the chain.
#[derive(SimpleObject)]
pub struct AuditChainBreak {
    /// Where the chain breaks.
    sequence: i64,
    /// The audit event found there, if any.
    audit_event_id: Option<ID>,
    problem: AuditChainProblem,
    /// What was expected and what was found.
    detail: String,
}

impl From<ChainBreak> for AuditChainBreak {
    fn from(found: ChainBreak) -> Self {
        AuditChainBreak { sequence: found.sequence, audit_event_id: found.event.map(ID), problem: found.problem.into(), detail: found.detail }
    }
}

/// What a check of the practice's audit chain found.
#[derive(SimpleObject)]
pub struct AuditVerification {
    status: AuditChainStatus,
    /// Events that hold, from sequence 1 up to the break or the head.
    checked: i64,
    /// The head the check walked to (sequence 0 before the first event).
    head_sequence: i64,
    head_hash: String,
    first_break: Option<AuditChainBreak>,
    /// Events committed moments ago and not chained yet: never a break; the next check covers
    /// them.
    pending: i64,
    /// The version of the canonical form events are hashed in (docs/rules.md).
    canonical_form_version: i64,
}

impl From<ChainReport> for AuditVerification {
    fn from(report: ChainReport) -> Self {
        AuditVerification {
            status: if report.broken.is_some() { AuditChainStatus::Broken } else { AuditChainStatus::Ok },
            checked: report.checked,
            head_sequence: report.head.sequence,
            head_hash: report.head.chain,
            first_break: report.broken.map(Into::into),
            pending: report.pending,
            canonical_form_version: CANONICAL_FORM_VERSION,
        }
    }
}

/// The head of the practice's audit chain: publish it (daily, say) so that a chain rewritten
/// later no longer ends where it was published.
#[derive(SimpleObject)]
pub struct AuditHead {
    /// The sequence number of the last chained audit event.
    sequence: i64,
    /// Its link: SHA-256 (hex) over every event up to it.
    hash: String,
    /// The audit event at the head and when it happened; null if it is missing (auditVerify
    /// reports that).
    audit_event_id: Option<ID>,
    at: Option<DateTime<Utc>>,
}

impl From<StoredHead> for AuditHead {
    fn from(head: StoredHead) -> Self {
        let (audit_event_id, at) = head.event.map_or((None, None), |(id, at)| (Some(ID(id)), Some(at)));
        AuditHead { sequence: head.sequence, hash: head.chain, audit_event_id, at }
    }
}

#[derive(Default)]
pub struct AuditChainQuery;

#[Object]
impl AuditChainQuery {
    /// Walks the practice's chain of audit events and reports the first broken link (ADMIN).
    /// Reads the whole history, a page at a time.
    async fn audit_verify(&self, ctx: &Context<'_>) -> Result<AuditVerification> {
        let request = caller(ctx, Role::Admin)?;
        Ok(state(ctx).store.verify_audit_chain(&request.principal.tenant).await?.into())
    }

    /// The head of the practice's audit chain, to publish (ADMIN); null before the first event.
    async fn audit_head(&self, ctx: &Context<'_>) -> Result<Option<AuditHead>> {
        let request = caller(ctx, Role::Admin)?;
        Ok(state(ctx).store.audit_head(&request.principal.tenant).await?.map(Into::into))
    }
}
