//! The tamper-evident audit log (H1 over X3): the canonical content of an audit event, its hash,
//! the link that chains it to the tenant's event before it, and the check of a run of stored
//! events against those hashes (docs/rules.md, "Tamper-evident audit log").
//!
//! Pure: the store reads the events and the tenant's head and writes what this computes; nothing
//! here knows how events are stored, and nothing reads the clock.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

/// The version of the canonical form below. It is the first element of the hashed text, so a
/// later form can never hash to what this one does; the form an event was hashed in is this one
/// for every event Settle has written so far.
pub const CANONICAL_FORM_VERSION: i64 = 1;

/// The link before a tenant's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What of an audit event is hashed: every stored field the event was written with, except its
/// place in the chain (sequence, link) and the fields given after its commit (ledger position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContent {
    pub tenant: String,
    pub key: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub records: Vec<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
    pub request_id: Option<String>,
    pub events: Option<String>,
    pub takings: Option<String>,
}

impl AuditContent {
    /// Canonical form version 1: the compact JSON array `[1, tenant, key, at, actor, action,
    /// records, before, after, reason, idempotency_key, request_id, events, takings]`, with `at`
    /// in RFC 3339, UTC ("Z") and always nine digits of fraction (the database keeps
    /// nanoseconds), and `null` for an absent field. An array has no key order to disagree on,
    /// and serde_json escapes strings one way only.
    pub fn canonical(&self) -> String {
        serde_json::json!([
            CANONICAL_FORM_VERSION,
            self.tenant,
            self.key,
            self.at.to_rfc3339_opts(SecondsFormat::Nanos, true),
            self.actor,
            self.action,
            self.records,
            self.before,
            self.after,
            self.reason,
            self.idempotency_key,
            self.request_id,
            self.events,
            self.takings,
        ])
        .to_string()
    }

    /// SHA-256 of the canonical form, in lower-case hex: computed in the change's own transaction.
    pub fn hash(&self) -> String {
        sha256_hex(self.canonical().as_bytes())
    }
}

/// The link of the event at `sequence`: SHA-256 (hex) of the link before it (or [`GENESIS`]),
/// its content hash and its sequence in decimal, concatenated. The two hashes are 64 characters
/// each, so the text splits one way only.
pub fn link(previous: &str, content_hash: &str, sequence: i64) -> String {
    sha256_hex(format!("{previous}{content_hash}{sequence}").as_bytes())
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An event as stored, for the check: its content, and what the chain wrote on it.
#[derive(Debug, Clone)]
pub struct ChainedEvent {
    /// The audit event's id.
    pub id: String,
    pub sequence: i64,
    pub content: AuditContent,
    pub content_hash: Option<String>,
    pub chain: Option<String>,
}

/// What is wrong at the first broken link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainProblem {
    /// The event's fields no longer hash to the content hash written with it: it was edited.
    ContentChanged,
    /// The event's link is not the hash of the link before it, its content hash and its
    /// sequence: an event before it was removed, replaced or reordered, or the link was edited.
    LinkBroken,
    /// A sequence number is missing: an event was deleted (or its sequence removed).
    SequenceGap,
    /// Two events claim one sequence number.
    SequenceRepeated,
    /// The chain does not end where the tenant's head (kept with its counter) says it does:
    /// events at the end were deleted or added, or the head was edited.
    HeadMismatch,
}

/// The first broken link of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The sequence number where the chain breaks.
    pub sequence: i64,
    /// The event found there (None when there is none).
    pub event: Option<String>,
    pub problem: ChainProblem,
    /// What was expected and what was found, for a person.
    pub detail: String,
}

/// The tenant's head: the last sequence number given and its link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub sequence: i64,
    pub chain: String,
}

impl ChainHead {
    /// The head of a tenant with no chained event.
    pub fn empty() -> ChainHead {
        ChainHead { sequence: 0, chain: GENESIS.to_owned() }
    }
}

/// Where a walk of the chain stands: the last event checked and its (verified) link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainWalk {
    pub head: ChainHead,
    pub last_event: Option<String>,
}

impl ChainWalk {
    pub fn start() -> ChainWalk {
        ChainWalk { head: ChainHead::empty(), last_event: None }
    }

    /// Checks the next events of the chain, in sequence order, and moves past them: each must
    /// come right after the one before, hash to its stored content hash and carry the link that
    /// follows from the one before. Stops at the first break.
    pub fn check(&mut self, events: &[ChainedEvent]) -> Result<(), ChainBreak> {
        for event in events {
            let expected = self.head.sequence + 1;
            let broken = |problem, detail: String| ChainBreak { sequence: expected, event: Some(event.id.clone()), problem, detail };
            if event.sequence < expected {
                return Err(ChainBreak { sequence: event.sequence, ..broken(ChainProblem::SequenceRepeated, format!("sequence {} is held by another event too", event.sequence)) });
            }
            if event.sequence > expected {
                return Err(broken(ChainProblem::SequenceGap, format!("no event has sequence {expected}; the next one has {}", event.sequence)));
            }
            let content_hash = event.content.hash();
            if event.content_hash.as_deref() != Some(content_hash.as_str()) {
                return Err(broken(
                    ChainProblem::ContentChanged,
                    format!("its fields hash to {content_hash}, it was written with {}", event.content_hash.as_deref().unwrap_or("no content hash")),
                ));
            }
            let chain = link(&self.head.chain, &content_hash, expected);
            if event.chain.as_deref() != Some(chain.as_str()) {
                return Err(broken(
                    ChainProblem::LinkBroken,
                    format!("the link after {} should be {chain}, it is {}", self.head.chain, event.chain.as_deref().unwrap_or("missing")),
                ));
            }
            self.head = ChainHead { sequence: expected, chain };
            self.last_event = Some(event.id.clone());
        }
        Ok(())
    }

    /// Checks that the walk ended where the tenant's recorded head is.
    pub fn finish(&self, recorded: &ChainHead) -> Result<(), ChainBreak> {
        if self.head == *recorded {
            return Ok(());
        }
        Err(ChainBreak {
            sequence: recorded.sequence.max(self.head.sequence),
            event: self.last_event.clone(),
            problem: ChainProblem::HeadMismatch,
            detail: format!(
                "the chain ends at sequence {} with {}; the recorded head is sequence {} with {}",
                self.head.sequence, self.head.chain, recorded.sequence, recorded.chain
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(key: &str) -> AuditContent {
        AuditContent {
            tenant: "clinic".into(),
            key: key.into(),
            at: DateTime::parse_from_rfc3339("2026-11-26T10:00:00.123456789Z").unwrap().with_timezone(&Utc),
            actor: "ana".into(),
            action: "payment.record".into(),
            records: vec!["payment:p1".into()],
            before: None,
            after: Some("{\"amount\":\"10.00\"}".into()),
            reason: None,
            idempotency_key: Some("k".into()),
            request_id: Some("r".into()),
            events: None,
            takings: None,
        }
    }

    fn chain_of(keys: &[&str]) -> Vec<ChainedEvent> {
        let mut previous = GENESIS.to_owned();
        keys.iter()
            .enumerate()
            .map(|(i, key)| {
                let content = content(key);
                let hash = content.hash();
                previous = link(&previous, &hash, i as i64 + 1);
                ChainedEvent { id: key.to_string(), sequence: i as i64 + 1, content, content_hash: Some(hash), chain: Some(previous.clone()) }
            })
            .collect()
    }

    #[test]
    fn h1_the_canonical_form_is_fixed() {
        assert_eq!(
            content("e1").canonical(),
            r#"[1,"clinic","e1","2026-11-26T10:00:00.123456789Z","ana","payment.record",["payment:p1"],null,"{\"amount\":\"10.00\"}",null,"k","r",null,null]"#
        );
        let whole_second = AuditContent { at: DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z").unwrap().with_timezone(&Utc), ..content("e1") };
        assert!(whole_second.canonical().contains("\"2026-11-26T10:00:00.000000000Z\""), "always nine digits of fraction");
        assert_eq!(link(GENESIS, &"a".repeat(64), 1).len(), 64);
    }

    #[test]
    fn h1_an_intact_chain_holds_to_its_head() {
        let events = chain_of(&["a", "b", "c"]);
        let mut walk = ChainWalk::start();
        walk.check(&events[..2]).unwrap();
        walk.check(&events[2..]).unwrap();
        let head = ChainHead { sequence: 3, chain: events[2].chain.clone().unwrap() };
        assert_eq!(walk.finish(&head), Ok(()));
        assert_eq!(ChainWalk::start().finish(&ChainHead::empty()), Ok(()), "an empty chain holds");
    }

    #[test]
    fn h1_each_kind_of_tampering_is_the_first_break() {
        let intact = chain_of(&["a", "b", "c", "d"]);
        let head = ChainHead { sequence: 4, chain: intact[3].chain.clone().unwrap() };
        let edited = {
            let mut events = intact.clone();
            events[1].content.actor = "mallory".into();
            events
        };
        let relinked = {
            // Edited and hashed again, but the links after it are the old ones.
            let mut events = edited.clone();
            events[1].content_hash = Some(events[1].content.hash());
            events
        };
        let deleted = [&intact[..1], &intact[2..]].concat();
        let swapped = {
            let mut events = intact.clone();
            events.swap(1, 2);
            events[1].sequence = 2;
            events[2].sequence = 3;
            events
        };
        let repeated = {
            let mut events = intact.clone();
            events[2].sequence = 2;
            events
        };
        let cases: [(&str, Vec<ChainedEvent>, i64, &str, ChainProblem); 6] = [
            ("an edited field", edited, 2, "b", ChainProblem::ContentChanged),
            ("an edit hashed again", relinked, 2, "b", ChainProblem::LinkBroken),
            ("a deleted event", deleted, 2, "c", ChainProblem::SequenceGap),
            ("two events swapped", swapped, 2, "c", ChainProblem::LinkBroken),
            ("a repeated sequence", repeated, 2, "c", ChainProblem::SequenceRepeated),
            ("the last event deleted", intact[..3].to_vec(), 4, "c", ChainProblem::HeadMismatch),
        ];
        for (what, events, sequence, event, problem) in cases {
            let mut walk = ChainWalk::start();
            let found = walk.check(&events).and_then(|()| walk.finish(&head)).expect_err(what);
            assert_eq!((found.sequence, found.event.as_deref(), found.problem), (sequence, Some(event), problem), "{what}: {}", found.detail);
        }
    }
}
