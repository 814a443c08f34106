//! Balance explanations: a stored figure derived again, record by record, from the records it
//! sums, so a person can follow it and a fault in the stored figure shows (docs/rules.md,
//! "Balance explanations"). The derivation never replaces the stored figure: both are given, and
//! whether they agree.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

/// What kind of record a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofStepKind {
    /// An invoice's total: what it asked for.
    InvoiceTotal,
    /// A payment's amount: what it brought in.
    PaymentAmount,
    /// An active allocation: lowers the invoice's balance and the payment's unallocated amount.
    Allocation,
    /// An issued credit note: lowers its invoice's balance.
    CreditNote,
    /// A successful refund: lowers its payment's unallocated amount.
    Refund,
    /// A refund sent to a plugin and not settled yet: its amount is held back from the payment.
    PendingRefund,
}

/// One record of a derivation, as given to [`derive`]: `amount` is what it adds to the figure
/// (negative to take away).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofRecord {
    pub kind: ProofStepKind,
    /// "table:key" of the record.
    pub record: String,
    pub date: NaiveDate,
    /// Who wrote it, when known.
    pub actor: Option<String>,
    /// When it was written: orders records of one day.
    pub at: DateTime<Utc>,
    pub amount: Decimal,
}

/// One step: the record and the figure after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofStep {
    pub record: ProofRecord,
    pub running: Decimal,
}

/// A figure derived from its records, beside the figure as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub steps: Vec<ProofStep>,
    /// The figure the steps arrive at.
    pub derived: Decimal,
    /// The figure as stored, which the API shows elsewhere.
    pub stored: Decimal,
}

impl Proof {
    /// The stored figure is what its records add up to.
    pub fn holds(&self) -> bool {
        self.derived == self.stored
    }
}

/// The records in the order they happened (date, then time written, then record), each with the
/// running figure, ending at the derived figure, beside `stored`.
pub fn derive(mut records: Vec<ProofRecord>, stored: Decimal) -> Proof {
    records.sort_by(|a, b| (a.date, a.at, &a.record).cmp(&(b.date, b.at, &b.record)));
    let mut running = Decimal::ZERO;
    let steps: Vec<ProofStep> = records
        .into_iter()
        .map(|record| {
            running += record.amount;
            ProofStep { record, running }
        })
        .collect();
    Proof { steps, derived: running, stored }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: ProofStepKind, key: &str, date: &str, seconds: i64, amount: &str) -> ProofRecord {
        ProofRecord {
            kind,
            record: key.to_owned(),
            date: NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap(),
            actor: Some("ann".into()),
            at: DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap(),
            amount: amount.parse().unwrap(),
        }
    }

    #[test]
    fn steps_run_in_the_order_things_happened_and_a_wrong_stored_figure_shows() {
        let d = |text: &str| text.parse::<Decimal>().unwrap();
        let records = vec![
            record(ProofStepKind::CreditNote, "credit_note:c", "2026-01-03", 0, "-10.00"),
            record(ProofStepKind::Allocation, "allocation:b", "2026-01-02", 5, "-30.00"),
            record(ProofStepKind::Allocation, "allocation:a", "2026-01-02", 1, "-20.00"),
            record(ProofStepKind::InvoiceTotal, "invoice:i", "2026-01-01", 9, "100.00"),
        ];
        let proof = derive(records.clone(), d("40.00"));
        let walk: Vec<(&str, Decimal)> = proof.steps.iter().map(|s| (s.record.record.as_str(), s.running)).collect();
        assert_eq!(
            walk,
            [("invoice:i", d("100.00")), ("allocation:a", d("80.00")), ("allocation:b", d("50.00")), ("credit_note:c", d("40.00"))]
        );
        assert!(proof.holds());
        let corrupted = derive(records, d("45.00"));
        assert!(!corrupted.holds(), "a stored figure its records do not add up to is reported");
        assert_eq!((corrupted.derived, corrupted.stored), (d("40.00"), d("45.00")));
    }
}
