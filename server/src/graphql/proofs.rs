//! Balance explanations (`invoice { balanceProof }`, `payment { unallocatedProof }`): a stored
//! figure derived again from its records, step by step, beside the figure as stored, with whether
//! they agree. A disagreement is shown, never smoothed over (docs/rules.md, "Balance
//! explanations").

use async_graphql::{Enum, ID, Object};
use chrono::{DateTime, NaiveDate, Utc};

use super::money::Money;
use super::scalars::Date;
use crate::ledger::proof::{self, Proof};

/// What kind of record a step of a balance explanation is.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ProofStepKind {
    /// The invoice's total: what it asked for, from when it was finalized.
    InvoiceTotal,
    /// The payment's amount: what it brought in.
    PaymentAmount,
    /// An active allocation: takes its amount off the invoice's balance and the payment's
    /// unallocated amount.
    Allocation,
    /// An issued credit note: takes its total off its invoice's balance.
    CreditNote,
    /// A successful refund: takes its amount off the payment's unallocated amount.
    Refund,
    /// A refund sent to a plugin and not settled yet: its amount is held back.
    PendingRefund,
}

impl From<proof::ProofStepKind> for ProofStepKind {
    fn from(kind: proof::ProofStepKind) -> Self {
        match kind {
            proof::ProofStepKind::InvoiceTotal => ProofStepKind::InvoiceTotal,
            proof::ProofStepKind::PaymentAmount => ProofStepKind::PaymentAmount,
            proof::ProofStepKind::Allocation => ProofStepKind::Allocation,
            proof::ProofStepKind::CreditNote => ProofStepKind::CreditNote,
            proof::ProofStepKind::Refund => ProofStepKind::Refund,
            proof::ProofStepKind::PendingRefund => ProofStepKind::PendingRefund,
        }
    }
}

/// How a figure comes about, record by record, and whether the stored figure is what its records
/// add up to.
pub struct BalanceProof {
    pub proof: Proof,
    pub currency: String,
}

#[Object]
impl BalanceProof {
    /// The records, in the order they happened (date, then when each was written), each with
    /// the figure after it.
    async fn steps(&self) -> Vec<ProofStep<'_>> {
        self.proof.steps.iter().map(|step| ProofStep { step, currency: &self.currency }).collect()
    }
    /// What the records add up to.
    async fn derived(&self) -> Money {
        Money::of(self.proof.derived, &self.currency)
    }
    /// The figure as stored: what the record shows elsewhere (`balance`, `unallocated`).
    async fn stored(&self) -> Money {
        Money::of(self.proof.stored, &self.currency)
    }
    /// True when the stored figure is what its records add up to. False means the stored
    /// figure is wrong: report it (the records are the truth).
    async fn holds(&self) -> bool {
        self.proof.holds()
    }
}

/// One record of a balance explanation and the figure after it.
pub struct ProofStep<'a> {
    step: &'a proof::ProofStep,
    currency: &'a str,
}

#[Object]
impl ProofStep<'_> {
    async fn kind(&self) -> ProofStepKind {
        self.step.record.kind.into()
    }
    /// The record, as "table:id" (invoice:..., allocation:..., credit_note:..., payment:...,
    /// refund:...).
    async fn record(&self) -> ID {
        ID(self.step.record.record.clone())
    }
    /// The record's date (an invoice's issue date).
    async fn date(&self) -> Date {
        Date(self.step.record.date)
    }
    /// When it was written (an invoice's total: when it was finalized).
    async fn at(&self) -> DateTime<Utc> {
        self.step.record.at
    }
    /// Who wrote it (a token's subject); null for a record written before Settle kept it.
    async fn actor(&self) -> Option<&str> {
        self.step.record.actor.as_deref()
    }
    /// What it adds to the figure; negative when it takes away.
    async fn amount(&self) -> Money {
        Money::of(self.step.record.amount, self.currency)
    }
    /// The figure after this record.
    async fn running(&self) -> Money {
        Money::of(self.step.running, self.currency)
    }
}

/// What a client owes net of the credit they hold (B1: owing less unallocated credit; negative
/// when they hold more than they owe), explained record by record: each invoice's total, each
/// credit note, each payment and each refund, in the order they happened.
pub struct ClientBalanceProof {
    pub proof: Proof,
    pub currency: String,
    pub as_of: Option<NaiveDate>,
}

#[Object]
impl ClientBalanceProof {
    /// The day asked about; null for every record to date.
    async fn as_of(&self) -> Option<Date> {
        self.as_of.map(Date)
    }
    async fn currency(&self) -> &str {
        &self.currency
    }
    async fn steps(&self) -> Vec<ProofStep<'_>> {
        self.proof.steps.iter().map(|step| ProofStep { step, currency: &self.currency }).collect()
    }
    /// What the records add up to.
    async fn derived(&self) -> Money {
        Money::of(self.proof.derived, &self.currency)
    }
    /// Without `asOf`: the client's `balance` as stored, owing less unallocated credit. Null
    /// with `asOf`: the steps are the records dated up to that day as they stand now, which is
    /// not what the books said at any one moment (a payment voided since is left out, one dated
    /// earlier but entered later is in), so there is no figure of that day to compare them with;
    /// `balance(at:)` gives what the balance was at a past moment (T1).
    async fn stored(&self) -> Option<Money> {
        self.as_of.is_none().then(|| Money::of(self.proof.stored, &self.currency))
    }
    /// Without `asOf`: true when the stored figures are what the records add up to. Null with
    /// `asOf`.
    async fn holds(&self) -> Option<bool> {
        self.as_of.is_none().then(|| self.proof.holds())
    }
}
