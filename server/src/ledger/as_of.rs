//! As-of reports (T1): the books as they stood at a past moment, replayed from the money changes
//! (the same [`Change`] list the journal is derived from), so that a client's balance (B1),
//! statement (B2), aged receivables and takings (R1) as of that moment are what the live reports
//! said then (docs/rules.md, "As-of reports (T1)").
//!
//! A change counts from its audit event's time (`at`), as in the journal. The replay gives each
//! invoice its status, total and sums, each payment its sums and void state, each allocation
//! whether it is active, each refund whether it succeeded and each credit note whether it is
//! issued, as they were at that moment; the reports then hand these to the same functions the
//! live reports use (ledger/account.rs, ledger/reports.rs). Pure: no I/O, the moment is passed
//! in, and dates ("today") are the caller's.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::account::{
    self, ClientBalance, Statement, StatementAllocation, StatementCreditNote, StatementInvoice, StatementPayment, StatementRecords, StatementRefund,
};
use super::invoice::{InvoiceFacts, InvoiceStatus, status_for_balance};
use super::journal::{Change, InvoiceTerms, Movement, Named};
use super::money::Currency;
use super::payment::PaymentFacts;
use super::reports::{TakingsChange, TakingsPlace};
use crate::error::AppResult;

/// An invoice as it stood: issued (finalized at least once) and what it owed then.
#[derive(Debug, Clone)]
pub struct InvoiceAt {
    pub invoice: Named,
    pub currency: String,
    /// Whom and when its last finalization up to the moment billed.
    pub terms: InvoiceTerms,
    /// Status, total and sums at the moment. Lines are not replayed: no report reads them.
    pub facts: InvoiceFacts,
}

/// A payment as it stood: its sums and whether it was void.
#[derive(Debug, Clone)]
pub struct PaymentAt {
    pub payment: Named,
    pub method: String,
    pub method_name: String,
    pub location: String,
    pub date: NaiveDate,
    pub facts: PaymentFacts,
}

impl PaymentAt {
    /// R1: where the payment's money, and its refunds' (each on its own `date`), count.
    fn takings_place(&self, date: NaiveDate) -> TakingsPlace<'_> {
        TakingsPlace { date, method: &self.method, location: &self.location, currency: self.facts.currency.code() }
    }
}

/// An allocation made by the moment, and whether it was still active then.
#[derive(Debug, Clone)]
pub struct AllocationAt {
    pub allocation: Named,
    /// Its payment and invoice, as "table:key".
    pub payment: String,
    pub invoice: String,
    pub sequence: i64,
    pub date: NaiveDate,
    pub amount: Decimal,
    pub active: bool,
}

/// A refund that had succeeded by the moment.
#[derive(Debug, Clone)]
pub struct RefundAt {
    pub refund: Named,
    /// Its payment, as "table:key".
    pub payment: String,
    pub date: NaiveDate,
    pub amount: Decimal,
}

/// A credit note issued by the moment, and whether it was still issued (not void) then.
#[derive(Debug, Clone)]
pub struct CreditNoteAt {
    pub credit_note: Named,
    /// Its invoice, as "table:key".
    pub invoice: String,
    pub date: NaiveDate,
    pub reason: String,
    pub total: Decimal,
    pub issued: bool,
}

/// The tenant's books as they stood at a moment, records by "table:key".
#[derive(Debug, Clone, Default)]
pub struct Books {
    pub invoices: BTreeMap<String, InvoiceAt>,
    pub payments: BTreeMap<String, PaymentAt>,
    pub allocations: BTreeMap<String, AllocationAt>,
    pub refunds: BTreeMap<String, RefundAt>,
    pub credit_notes: BTreeMap<String, CreditNoteAt>,
    /// Refunds sent to a plugin and not settled at the moment, with the amount held back (F3).
    held: HashMap<String, (String, Decimal)>,
}

/// T1: the books as they stood at `at`: the changes that took effect up to and including that
/// moment (`changes` in the order they took effect, as the store hands them), replayed. A
/// change naming a record no earlier change introduced (money changed before ledger events were
/// recorded, schema version 4) changes nothing.
pub fn books_at(changes: &[Change], at: DateTime<Utc>) -> AppResult<Books> {
    let mut books = Books::default();
    for change in changes.iter().take_while(|change| change.at <= at) {
        for movement in &change.movements {
            books.replay(&change.currency, movement)?;
        }
    }
    Ok(books)
}

impl Books {
    /// I3: an issued invoice is PAID when its balance is zero and OPEN otherwise; a draft or a
    /// void invoice keeps its status.
    fn settle_status(&mut self, invoice: &str) {
        if let Some(at) = self.invoices.get_mut(invoice)
            && matches!(at.facts.status, InvoiceStatus::Open | InvoiceStatus::Paid)
        {
            at.facts.status = status_for_balance(&at.facts);
        }
    }

    fn payment(&mut self, payment: &str) -> Option<&mut PaymentFacts> {
        self.payments.get_mut(payment).map(|at| &mut at.facts)
    }

    fn invoice(&mut self, invoice: &str) -> Option<&mut InvoiceFacts> {
        self.invoices.get_mut(invoice).map(|at| &mut at.facts)
    }

    /// Releases what a pending refund held back on its payment, if it was held.
    fn release(&mut self, refund: &str) {
        if let Some((payment, amount)) = self.held.remove(refund)
            && let Some(facts) = self.payment(&payment)
        {
            facts.refund_pending -= amount;
        }
    }

    fn replay(&mut self, currency: &str, movement: &Movement) -> AppResult<()> {
        match movement {
            Movement::InvoiceFinalized { invoice, total, terms, .. } => {
                // I2, I5: finalized (again): it owes its total; a revert left no allocation and
                // no credit note on it, so its sums start from nothing.
                let facts = InvoiceFacts {
                    status: InvoiceStatus::Open,
                    numbered: true,
                    line_count: 0,
                    total: *total,
                    paid: Decimal::ZERO,
                    credited: Decimal::ZERO,
                    active_allocations: 0,
                    issued_credit_notes: 0,
                };
                let at = InvoiceAt { invoice: invoice.clone(), currency: currency.to_owned(), terms: terms.clone(), facts };
                self.invoices.insert(invoice.record.clone(), at);
                self.settle_status(&invoice.record);
            }
            Movement::InvoiceReverted { invoice } => {
                if let Some(facts) = self.invoice(&invoice.record) {
                    facts.status = InvoiceStatus::Draft;
                }
            }
            Movement::InvoiceVoided { invoice } => {
                if let Some(facts) = self.invoice(&invoice.record) {
                    facts.status = InvoiceStatus::Void;
                }
            }
            Movement::PaymentReceived { payment, method, method_name, amount, client, date, location } => {
                let facts = PaymentFacts {
                    client: client.clone(),
                    currency: Currency::parse(currency)?,
                    amount: *amount,
                    allocated: Decimal::ZERO,
                    refunded: Decimal::ZERO,
                    refund_pending: Decimal::ZERO,
                    void: false,
                };
                let at = PaymentAt {
                    payment: payment.clone(),
                    method: method.clone(),
                    method_name: method_name.clone(),
                    location: location.clone(),
                    date: *date,
                    facts,
                };
                self.payments.insert(payment.record.clone(), at);
            }
            Movement::PaymentAllocated { allocation, payment, invoice, amount, sequence, date } => {
                let at = AllocationAt {
                    allocation: allocation.clone(),
                    payment: payment.record.clone(),
                    invoice: invoice.record.clone(),
                    sequence: *sequence,
                    date: *date,
                    amount: *amount,
                    active: true,
                };
                self.allocations.insert(allocation.record.clone(), at);
                if let Some(facts) = self.payment(&payment.record) {
                    facts.allocated += amount;
                }
                if let Some(facts) = self.invoice(&invoice.record) {
                    facts.paid += amount;
                    facts.active_allocations += 1;
                }
                self.settle_status(&invoice.record);
            }
            Movement::AllocationRemoved { allocation, payment, invoice, amount } => {
                if let Some(at) = self.allocations.get_mut(&allocation.record) {
                    at.active = false;
                }
                if let Some(facts) = self.payment(&payment.record) {
                    facts.allocated -= amount;
                }
                if let Some(facts) = self.invoice(&invoice.record) {
                    facts.paid -= amount;
                    facts.active_allocations = facts.active_allocations.saturating_sub(1);
                }
                self.settle_status(&invoice.record);
            }
            Movement::RefundPaid { refund, payment, amount, date, .. } => {
                self.release(&refund.record);
                if let Some(facts) = self.payment(&payment.record) {
                    facts.refunded += amount;
                }
                let at = RefundAt { refund: refund.clone(), payment: payment.record.clone(), date: *date, amount: *amount };
                self.refunds.insert(refund.record.clone(), at);
            }
            Movement::RefundHeld { refund, payment, amount } => {
                if let Some(facts) = self.payment(&payment.record) {
                    facts.refund_pending += amount;
                    self.held.insert(refund.record.clone(), (payment.record.clone(), *amount));
                }
            }
            Movement::RefundReleased { refund, .. } => self.release(&refund.record),
            Movement::PaymentVoided { payment } => {
                if let Some(facts) = self.payment(&payment.record) {
                    facts.void = true;
                }
            }
            Movement::CreditNoteIssued { credit_note, invoice, total, date, reason, .. } => {
                let at = CreditNoteAt {
                    credit_note: credit_note.clone(),
                    invoice: invoice.record.clone(),
                    date: *date,
                    reason: reason.clone(),
                    total: *total,
                    issued: true,
                };
                self.credit_notes.insert(credit_note.record.clone(), at);
                if let Some(facts) = self.invoice(&invoice.record) {
                    facts.credited += total;
                    facts.issued_credit_notes += 1;
                }
                self.settle_status(&invoice.record);
            }
            Movement::CreditNoteVoided { credit_note, invoice } => {
                let Some(note) = self.credit_notes.get_mut(&credit_note.record) else { return Ok(()) };
                note.issued = false;
                let total = note.total;
                if let Some(facts) = self.invoice(&invoice.record) {
                    facts.credited -= total;
                    facts.issued_credit_notes = facts.issued_credit_notes.saturating_sub(1);
                }
                self.settle_status(&invoice.record);
            }
        }
        Ok(())
    }

    /// Whether the payment named `record` ("payment:key") is `client`'s, in `currency`.
    fn pays(&self, record: &str, client: &str, currency: &str) -> bool {
        self.payments.get(record).is_some_and(|at| at.facts.client == client && at.facts.currency.code() == currency)
    }

    /// Whether the invoice named `record` ("invoice:key") billed `client`, in `currency`.
    fn bills(&self, record: &str, client: &str, currency: &str) -> bool {
        self.invoices.get(record).is_some_and(|at| at.terms.client == client && at.currency == currency)
    }

    /// B1 as it stood, in `currency`: `today` is the moment's day in the practice's timezone.
    pub fn client_balance(&self, client: &str, currency: &str, today: NaiveDate) -> ClientBalance {
        let invoices = self.invoices.values().filter(|at| at.terms.client == client && at.currency == currency).map(|at| (&at.facts, at.terms.due_date));
        let payments = self.payments.values().filter(|at| at.facts.client == client && at.facts.currency.code() == currency).map(|at| &at.facts);
        account::client_balance(invoices, payments, today)
    }

    /// B2 as it stood: the client's records of `currency` dated up to `to`, as the statement
    /// lists them (OPEN or PAID invoices, payments not void, active allocations, succeeded
    /// refunds, issued credit notes), from `from` on.
    pub fn statement(&self, client: &str, currency: &str, from: NaiveDate, to: NaiveDate) -> Statement {
        let records = StatementRecords {
            invoices: self
                .invoices
                .values()
                .filter(|at| matches!(at.facts.status, InvoiceStatus::Open | InvoiceStatus::Paid))
                .filter(|at| at.terms.client == client && at.currency == currency && at.terms.issue_date <= to)
                .map(|at| StatementInvoice { key: key(&at.invoice.record), number: at.invoice.reference.clone(), issue_date: at.terms.issue_date, total: at.facts.total })
                .collect(),
            payments: self
                .payments
                .values()
                .filter(|at| !at.facts.void && at.facts.client == client && at.facts.currency.code() == currency && at.date <= to)
                .map(|at| StatementPayment {
                    key: key(&at.payment.record),
                    number: at.payment.reference.clone(),
                    method_name: at.method_name.clone(),
                    date: at.date,
                    amount: at.facts.amount,
                })
                .collect(),
            allocations: self
                .allocations
                .values()
                .filter(|at| at.active && at.date <= to && self.pays(&at.payment, client, currency))
                .map(|at| StatementAllocation {
                    key: key(&at.allocation.record),
                    payment: key(&at.payment),
                    invoice: key(&at.invoice),
                    sequence: at.sequence,
                    date: at.date,
                    amount: at.amount,
                })
                .collect(),
            refunds: self
                .refunds
                .values()
                .filter(|at| at.date <= to && self.pays(&at.payment, client, currency))
                .map(|at| StatementRefund { key: key(&at.refund.record), payment: key(&at.payment), date: at.date, amount: at.amount })
                .collect(),
            credit_notes: self
                .credit_notes
                .values()
                .filter(|at| at.issued && at.date <= to && self.bills(&at.invoice, client, currency))
                .map(|at| StatementCreditNote {
                    key: key(&at.credit_note.record),
                    number: at.credit_note.reference.clone(),
                    reason: at.reason.clone(),
                    date: at.date,
                    total: at.total,
                })
                .collect(),
        };
        records.statement(currency, from)
    }

    /// R1 as it stood: balances of OPEN invoices of `currency`, each as (client, due date,
    /// balance, 1 invoice), for `reports::aged_receivables`.
    pub fn open_balances(&self, currency: &str) -> Vec<(String, NaiveDate, Decimal, i64)> {
        self.invoices
            .values()
            .filter(|at| at.facts.status == InvoiceStatus::Open && at.currency == currency)
            .map(|at| (at.terms.client.clone(), at.terms.due_date, at.facts.balance(), 1))
            .collect()
    }

    /// R1 as it stood: what each payment not void and each succeeded refund adds to takings,
    /// dated `from` to `to`: a payment on its date, a refund on its own at its payment's method
    /// and location.
    pub fn takings(&self, from: NaiveDate, to: NaiveDate) -> Vec<TakingsChange> {
        let mut changes = Vec::new();
        for at in self.payments.values().filter(|at| !at.facts.void && (from..=to).contains(&at.date)) {
            changes.push(TakingsChange::payment_recorded(at.takings_place(at.date), at.facts.amount));
        }
        for refund in self.refunds.values().filter(|refund| (from..=to).contains(&refund.date)) {
            if let Some(payment) = self.payments.get(&refund.payment) {
                changes.push(TakingsChange::refund_succeeded(payment.takings_place(refund.date), refund.amount));
            }
        }
        changes
    }
}

/// The key of a record named "table:key", as the statement names records.
fn key(record: &str) -> String {
    record.split_once(':').map_or(record, |(_, key)| key).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn day(n: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, n).unwrap()
    }

    fn named(record: &str, reference: &str) -> Named {
        Named { record: record.into(), reference: reference.into() }
    }

    fn moment(n: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + n, 0).unwrap()
    }

    fn change(n: i64, movement: Movement) -> Change {
        Change { audit_event: format!("a{n}"), at: moment(n), currency: "AUD".into(), movements: vec![movement] }
    }

    /// One invoice and one payment through allocations, a held refund, a credit note and their
    /// undoing: at each moment the figures are those the changes up to it leave.
    #[test]
    fn t1_the_books_at_a_moment_are_the_changes_up_to_it() {
        let (invoice, payment) = (named("invoice:i", "INV-0001"), named("payment:p", "PAY-0001"));
        let (allocation, refund, note) = (named("allocation:a", "PAY-0001-1"), named("refund:r", "PAY-0001"), named("credit_note:c", "CN-0001"));
        let terms = InvoiceTerms { client: "c".into(), issue_date: day(1), due_date: day(10) };
        let changes = vec![
            change(1, Movement::InvoiceFinalized { invoice: invoice.clone(), total: d("110.00"), tax: Some(d("10.00")), terms }),
            change(2, Movement::PaymentReceived {
                payment: payment.clone(),
                method: "cash".into(),
                method_name: "Cash".into(),
                amount: d("150.00"),
                client: "c".into(),
                date: day(2),
                location: "l".into(),
            }),
            change(3, Movement::PaymentAllocated { allocation: allocation.clone(), payment: payment.clone(), invoice: invoice.clone(), amount: d("110.00"), sequence: 1, date: day(2) }),
            change(4, Movement::RefundHeld { refund: refund.clone(), payment: payment.clone(), amount: d("15.00") }),
            change(5, Movement::RefundReleased { refund: refund.clone(), payment: payment.clone() }),
            change(6, Movement::AllocationRemoved { allocation, payment: payment.clone(), invoice: invoice.clone(), amount: d("110.00") }),
            change(7, Movement::CreditNoteIssued { credit_note: note.clone(), invoice: invoice.clone(), total: d("110.00"), tax: d("10.00"), date: day(3), reason: "Goodwill".into() }),
            change(8, Movement::CreditNoteVoided { credit_note: note, invoice: invoice.clone() }),
            change(9, Movement::InvoiceVoided { invoice: invoice.clone() }),
        ];
        let at = |n: i64| books_at(&changes, moment(n)).unwrap();
        let figures = |books: &Books| {
            let (i, p) = (&books.invoices["invoice:i"].facts, &books.payments["payment:p"].facts);
            (i.status, i.balance(), p.unallocated())
        };
        assert!(at(0).invoices.is_empty() && at(0).payments.is_empty(), "nothing before the first change");
        assert_eq!(figures(&at(2)), (InvoiceStatus::Open, d("110.00"), d("150.00")));
        assert_eq!(figures(&at(3)), (InvoiceStatus::Paid, d("0.00"), d("40.00")), "I3: paid off");
        assert_eq!(figures(&at(4)), (InvoiceStatus::Paid, d("0.00"), d("25.00")), "F3: a pending refund is held back");
        assert_eq!(figures(&at(5)), (InvoiceStatus::Paid, d("0.00"), d("40.00")), "a declined refund is released");
        assert_eq!(figures(&at(6)), (InvoiceStatus::Open, d("110.00"), d("150.00")), "P6: owed again");
        assert_eq!(figures(&at(7)), (InvoiceStatus::Paid, d("0.00"), d("150.00")), "C3: credited off");
        assert_eq!(figures(&at(8)), (InvoiceStatus::Open, d("110.00"), d("150.00")), "C4: owed again");
        assert_eq!(figures(&at(9)).0, InvoiceStatus::Void);

        let balance = at(6).client_balance("c", "AUD", day(11));
        assert_eq!((balance.owing, balance.unallocated_credit, balance.overdue), (d("110.00"), d("150.00"), d("110.00")), "B1, overdue after day 10");
        assert_eq!(at(9).client_balance("c", "AUD", day(11)).owing, Decimal::ZERO, "I7: a void invoice owes nothing");
        assert_eq!(at(3).statement("c", "AUD", day(1), day(30)).entries.len(), 3, "invoice, payment, allocation");
        assert_eq!(at(6).statement("c", "AUD", day(1), day(30)).entries.len(), 2, "the removed allocation is not listed");
        assert_eq!(at(6).open_balances("AUD"), vec![("c".to_owned(), day(10), d("110.00"), 1)]);
        let takings = at(9).takings(day(1), day(30));
        assert_eq!(takings.iter().map(|t| (t.date, t.received, t.refunded)).collect::<Vec<_>>(), vec![(day(2), d("150.00"), Decimal::ZERO)]);
    }
}
