//! The double-entry journal (J1, T1): every money change as journal lines on a small chart of
//! accounts, whose debits equal their credits, and the trial balance those lines add up to as of
//! a moment (docs/rules.md, "Journal").
//!
//! The journal is derived, never stored: the store hands over the tenant's money changes in the
//! order they happened, each with the amounts its records hold ([`Change`]), and [`derive`]
//! replays them. A reversal (an invoice voided or reverted to draft, a credit note voided, a
//! payment voided) takes back exactly what the journal posted for that record, so it balances
//! whatever the record says now. This module knows no SurrealQL and reads no clock.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

/// An account of the chart. Each money change moves money between two or three of these.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Account {
    /// Money received through one payment method (its key): the till, the bank or the card
    /// gateway's settlement, less what was refunded through it. One account per method.
    MoneyReceived(String),
    /// What clients owe on finalized invoices (M4: the sum of OPEN invoice balances).
    Receivable,
    /// Payment money not on any invoice yet: the clients' unallocated credit (M5), which Settle
    /// owes back to them until it is applied or refunded. A liability.
    ClientCredit,
    /// Tax charged on invoices, less tax credited back: owed to the tax authority.
    TaxPayable,
    /// Invoiced revenue, net of tax.
    Sales,
    /// Revenue given back by credit notes, net of tax: a contra-revenue account.
    CreditNotes,
}

/// Which side of the balance sheet or income statement an account is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    Asset,
    Liability,
    Revenue,
    /// Revenue given back; its balance is a debit.
    ContraRevenue,
}

impl Account {
    pub fn kind(&self) -> AccountKind {
        match self {
            Account::MoneyReceived(_) | Account::Receivable => AccountKind::Asset,
            Account::ClientCredit | Account::TaxPayable => AccountKind::Liability,
            Account::Sales => AccountKind::Revenue,
            Account::CreditNotes => AccountKind::ContraRevenue,
        }
    }

    /// The method of a money-received account.
    pub fn method(&self) -> Option<&str> {
        match self {
            Account::MoneyReceived(method) => Some(method),
            _ => None,
        }
    }
}

/// The tenant's chart of accounts: the fixed accounts and one money-received account per
/// payment method, with the codes an accounting package is given (docs/rules.md, "Journal").
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// Payment methods as (key, name), in the order they were created: a method's place gives
    /// its account code, and methods are archived, never deleted, so a code never changes.
    methods: Vec<(String, String)>,
}

/// The code of the first money-received account; method n (from 1) has 1100 + n.
const MONEY_RECEIVED_CODE: u32 = 1100;

impl Chart {
    /// `methods` as (key, name) in creation order.
    pub fn new(methods: Vec<(String, String)>) -> Chart {
        Chart { methods }
    }

    /// The account's code: 1101, 1102, ... for the payment methods in the order they were
    /// created, then 1200 receivable, 2100 client credit, 2200 tax, 4000 sales, 4100 credit notes.
    pub fn code(&self, account: &Account) -> String {
        match account {
            Account::MoneyReceived(method) => {
                let place = self.methods.iter().position(|(key, _)| key == method).map_or(0, |at| at as u32 + 1);
                (MONEY_RECEIVED_CODE + place).to_string()
            }
            Account::Receivable => "1200".into(),
            Account::ClientCredit => "2100".into(),
            Account::TaxPayable => "2200".into(),
            Account::Sales => "4000".into(),
            Account::CreditNotes => "4100".into(),
        }
    }

    pub fn name(&self, account: &Account) -> String {
        match account {
            Account::MoneyReceived(method) => {
                let name = self.methods.iter().find(|(key, _)| key == method).map_or("unknown method", |(_, name)| name.as_str());
                format!("Money received: {name}")
            }
            Account::Receivable => "Accounts receivable".into(),
            Account::ClientCredit => "Client credit held".into(),
            Account::TaxPayable => "Tax payable".into(),
            Account::Sales => "Sales".into(),
            Account::CreditNotes => "Credit notes".into(),
        }
    }
}

/// One line: an amount on one side of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub account: Account,
    /// Zero on a credit line.
    pub debit: Decimal,
    /// Zero on a debit line.
    pub credit: Decimal,
}

impl Line {
    fn debit(account: Account, amount: Decimal) -> Line {
        Line { account, debit: amount, credit: Decimal::ZERO }
    }

    fn credit(account: Account, amount: Decimal) -> Line {
        Line { account, debit: Decimal::ZERO, credit: amount }
    }

    /// The same amount on the other side: what takes this line back.
    fn reversed(&self) -> Line {
        Line { account: self.account.clone(), debit: self.credit, credit: self.debit }
    }
}

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    InvoiceFinalized,
    InvoiceReverted,
    InvoiceVoided,
    PaymentReceived,
    PaymentAllocated,
    AllocationRemoved,
    RefundPaid,
    PaymentVoided,
    CreditNoteIssued,
    CreditNoteVoided,
}

/// One journal entry: one movement of one money change, in one currency, whose lines balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// "<audit event key>/<n>": the change's audit event and the movement's place in it, from 1.
    pub id: String,
    pub kind: EntryKind,
    /// When the change took effect: its audit event's time.
    pub at: DateTime<Utc>,
    pub audit_event: String,
    /// The records it concerns, as "table:key", the one it is about first.
    pub records: Vec<String>,
    pub description: String,
    pub currency: String,
    pub lines: Vec<Line>,
}

impl Entry {
    pub fn debits(&self) -> Decimal {
        self.lines.iter().map(|line| line.debit).sum()
    }

    pub fn credits(&self) -> Decimal {
        self.lines.iter().map(|line| line.credit).sum()
    }
}

/// A record as a journal entry names it: "table:key" and the number a person knows it by
/// (INV-0001, PAY-0001, CN-0001, PAY-0001-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub record: String,
    pub reference: String,
}

/// Who an invoice bills and when, as of one finalization: a draft's edit can change them (I1), so
/// a finalization replaced by an edit keeps its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceTerms {
    pub client: String,
    pub issue_date: NaiveDate,
    pub due_date: NaiveDate,
}

/// One movement of money a change made, with the amounts its records hold and what the reports
/// as of a moment need to know of them (dates, client, place: ledger/as_of.rs, T1). Two kinds
/// move no money and post nothing: a refund held back while its plugin has not answered, and
/// its release when declined; they are here because the payment's unallocated amount holds
/// them back (F3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Movement {
    /// I2: the invoice owes its total. `tax` is None when Settle no longer knows the tax of this
    /// finalization: the invoice was reverted to draft and edited since, by an edit recorded
    /// before the audit trail kept the tax beside the total; the whole total is then posted to
    /// sales.
    InvoiceFinalized { invoice: Named, total: Decimal, tax: Option<Decimal>, terms: InvoiceTerms },
    /// I5: reverted to draft; what its finalization posted is taken back.
    InvoiceReverted { invoice: Named },
    /// I7: voided; what its finalization posted is taken back.
    InvoiceVoided { invoice: Named },
    /// P1-P3: money came in from `client` through `method` (its key; `method_name` for the
    /// description), dated `date`, at `location`.
    PaymentReceived { payment: Named, method: String, method_name: String, amount: Decimal, client: String, date: NaiveDate, location: String },
    /// P3-P5: part of a payment moved onto an invoice, on `date`; the payment's `sequence`th.
    PaymentAllocated { allocation: Named, payment: Named, invoice: Named, amount: Decimal, sequence: i64, date: NaiveDate },
    /// P6: an allocation removed; the money is the payment's credit again.
    AllocationRemoved { allocation: Named, payment: Named, invoice: Named, amount: Decimal },
    /// F1-F3: a refund dated `date` succeeded; the money went back out through the payment's
    /// method.
    RefundPaid { refund: Named, payment: Named, method: String, method_name: String, amount: Decimal, date: NaiveDate },
    /// F3: a refund sent to the payment's plugin, outcome unknown: `amount` is held back on the
    /// payment. Posts nothing: no money moved yet.
    RefundHeld { refund: Named, payment: Named, amount: Decimal },
    /// F3: a held refund the plugin declined: the amount is the payment's again. Posts nothing.
    RefundReleased { refund: Named, payment: Named },
    /// V1, V2: a payment voided; what is left of it is taken back.
    PaymentVoided { payment: Named },
    /// C1-C3: a credit note dated `date` lowered its invoice's balance by `total`, `tax` of it
    /// tax.
    CreditNoteIssued { credit_note: Named, invoice: Named, total: Decimal, tax: Decimal, date: NaiveDate, reason: String },
    /// C4: a credit note voided; what it posted is taken back.
    CreditNoteVoided { credit_note: Named, invoice: Named },
}

/// One committed money change: its audit event, when it took effect, and its movements in the
/// order it made them, each in `currency` (one currency per change, M6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub audit_event: String,
    pub at: DateTime<Utc>,
    pub currency: String,
    pub movements: Vec<Movement>,
}

/// What the replay remembers: what each invoice's finalization and each credit note posted (to
/// take it back exactly), and each payment's credit still held with its method (to take back
/// what is left when it is voided).
#[derive(Default)]
struct Replay {
    posted: HashMap<String, Vec<Line>>,
    credit: HashMap<String, (String, Decimal)>,
}

impl Replay {
    /// The lines that take back what was posted for `record`; none when nothing was.
    fn take_back(&mut self, record: &str) -> Vec<Line> {
        self.posted.remove(record).unwrap_or_default().iter().map(Line::reversed).collect()
    }

    fn add_credit(&mut self, payment: &str, amount: Decimal) {
        if let Some((_, held)) = self.credit.get_mut(payment) {
            *held += amount;
        }
    }

    /// One movement as (kind, records, description, lines); None for a movement that posts
    /// nothing (a refund held or released).
    fn lines(&mut self, movement: &Movement) -> Option<(EntryKind, Vec<String>, String, Vec<Line>)> {
        use Account::*;
        Some(match movement {
            Movement::InvoiceFinalized { invoice, total, tax, .. } => {
                let known_tax = tax.unwrap_or(Decimal::ZERO);
                let lines = vec![Line::debit(Receivable, *total), Line::credit(Sales, total - known_tax), Line::credit(TaxPayable, known_tax)];
                self.posted.insert(invoice.record.clone(), lines.clone());
                let note = if tax.is_none() { " (its tax was not kept: reverted and edited since)" } else { "" };
                (EntryKind::InvoiceFinalized, vec![invoice.record.clone()], format!("Invoice {} finalized{note}", invoice.reference), lines)
            }
            Movement::InvoiceReverted { invoice } => {
                let lines = self.take_back(&invoice.record);
                (EntryKind::InvoiceReverted, vec![invoice.record.clone()], format!("Invoice {} reverted to draft", invoice.reference), lines)
            }
            Movement::InvoiceVoided { invoice } => {
                let lines = self.take_back(&invoice.record);
                (EntryKind::InvoiceVoided, vec![invoice.record.clone()], format!("Invoice {} voided", invoice.reference), lines)
            }
            Movement::PaymentReceived { payment, method, method_name, amount, .. } => {
                self.credit.insert(payment.record.clone(), (method.clone(), *amount));
                let lines = vec![Line::debit(MoneyReceived(method.clone()), *amount), Line::credit(ClientCredit, *amount)];
                let description = format!("Payment {} received by {method_name}", payment.reference);
                (EntryKind::PaymentReceived, vec![payment.record.clone()], description, lines)
            }
            Movement::PaymentAllocated { allocation, payment, invoice, amount, .. } => {
                self.add_credit(&payment.record, -amount);
                let lines = vec![Line::debit(ClientCredit, *amount), Line::credit(Receivable, *amount)];
                let description = format!("Payment {} applied to invoice {} ({})", payment.reference, invoice.reference, allocation.reference);
                let records = vec![allocation.record.clone(), payment.record.clone(), invoice.record.clone()];
                (EntryKind::PaymentAllocated, records, description, lines)
            }
            Movement::AllocationRemoved { allocation, payment, invoice, amount } => {
                self.add_credit(&payment.record, *amount);
                let lines = vec![Line::debit(Receivable, *amount), Line::credit(ClientCredit, *amount)];
                let description = format!("Allocation {} removed from invoice {}", allocation.reference, invoice.reference);
                let records = vec![allocation.record.clone(), payment.record.clone(), invoice.record.clone()];
                (EntryKind::AllocationRemoved, records, description, lines)
            }
            Movement::RefundPaid { refund, payment, method, method_name, amount, .. } => {
                self.add_credit(&payment.record, -amount);
                let lines = vec![Line::debit(ClientCredit, *amount), Line::credit(MoneyReceived(method.clone()), *amount)];
                let description = format!("Refund of payment {} by {method_name}", payment.reference);
                (EntryKind::RefundPaid, vec![refund.record.clone(), payment.record.clone()], description, lines)
            }
            Movement::PaymentVoided { payment } => {
                // V1: a payment is voided with no active allocation and no refund, so what is
                // left is its whole amount; it is taken from the replay all the same, so the
                // void takes back exactly what the journal holds of it.
                let lines = match self.credit.remove(&payment.record) {
                    Some((method, held)) => vec![Line::debit(ClientCredit, held), Line::credit(MoneyReceived(method), held)],
                    None => Vec::new(),
                };
                (EntryKind::PaymentVoided, vec![payment.record.clone()], format!("Payment {} voided", payment.reference), lines)
            }
            Movement::CreditNoteIssued { credit_note, invoice, total, tax, .. } => {
                let lines = vec![Line::debit(CreditNotes, total - tax), Line::debit(TaxPayable, *tax), Line::credit(Receivable, *total)];
                self.posted.insert(credit_note.record.clone(), lines.clone());
                let description = format!("Credit note {} on invoice {}", credit_note.reference, invoice.reference);
                (EntryKind::CreditNoteIssued, vec![credit_note.record.clone(), invoice.record.clone()], description, lines)
            }
            Movement::CreditNoteVoided { credit_note, invoice } => {
                let lines = self.take_back(&credit_note.record);
                let description = format!("Credit note {} on invoice {} voided", credit_note.reference, invoice.reference);
                (EntryKind::CreditNoteVoided, vec![credit_note.record.clone(), invoice.record.clone()], description, lines)
            }
            // The money stays in client credit held until the refund succeeds (docs/rules.md,
            // "Journal").
            Movement::RefundHeld { .. } | Movement::RefundReleased { .. } => return None,
        })
    }
}

/// J1: the journal of `changes`, replayed in the order given (the order they took effect).
/// Each movement is one entry whose debits equal its credits; lines of zero are left out, and so
/// is an entry left with none (an invoice that owes nothing, or a reversal of what was never
/// posted).
pub fn derive(changes: &[Change]) -> Vec<Entry> {
    let mut replay = Replay::default();
    let mut entries = Vec::new();
    for change in changes {
        for (at, movement) in change.movements.iter().enumerate() {
            let Some((kind, records, description, lines)) = replay.lines(movement) else { continue };
            let lines: Vec<Line> = lines.into_iter().filter(|line| !line.debit.is_zero() || !line.credit.is_zero()).collect();
            if lines.is_empty() {
                continue;
            }
            entries.push(Entry {
                id: format!("{}/{}", change.audit_event, at + 1),
                kind,
                at: change.at,
                audit_event: change.audit_event.clone(),
                records,
                description,
                currency: change.currency.clone(),
                lines,
            });
        }
    }
    entries
}

/// One account's sums in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountTotal {
    pub account: Account,
    pub currency: String,
    pub debit: Decimal,
    pub credit: Decimal,
}

impl AccountTotal {
    /// Debits less credits: positive for a debit balance (assets, credit notes), negative for a
    /// credit balance (client credit, tax, sales).
    pub fn balance(&self) -> Decimal {
        self.debit - self.credit
    }
}

/// T1: the trial balance of `entries` (those up to the moment asked about): each account's
/// debits and credits per currency, ordered by currency then account. Currencies are never added
/// together (M6).
pub fn trial_balance<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<AccountTotal> {
    let mut sums: HashMap<(String, Account), (Decimal, Decimal)> = HashMap::new();
    for entry in entries {
        for line in &entry.lines {
            let sum = sums.entry((entry.currency.clone(), line.account.clone())).or_default();
            sum.0 += line.debit;
            sum.1 += line.credit;
        }
    }
    let mut totals: Vec<AccountTotal> =
        sums.into_iter().map(|((currency, account), (debit, credit))| AccountTotal { account, currency, debit, credit }).collect();
    totals.sort_by(|a, b| (&a.currency, &a.account).cmp(&(&b.currency, &b.account)));
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
    }

    fn terms() -> InvoiceTerms {
        InvoiceTerms { client: "c".into(), issue_date: day(), due_date: day() }
    }

    fn named(record: &str, reference: &str) -> Named {
        Named { record: record.into(), reference: reference.into() }
    }

    fn change(n: i64, movement: Movement) -> Change {
        Change {
            audit_event: format!("a{n}"),
            at: DateTime::from_timestamp(1_800_000_000 + n, 0).unwrap(),
            currency: "AUD".into(),
            movements: vec![movement],
        }
    }

    fn balance_of(totals: &[AccountTotal], account: &Account) -> Decimal {
        totals.iter().filter(|t| &t.account == account).map(AccountTotal::balance).sum()
    }

    /// J1: the life of one invoice and one payment; every entry balances, and the receivable and
    /// client credit accounts are what the invoice still owes and the payment still holds.
    #[test]
    fn j1_every_entry_balances_and_the_accounts_follow_the_records() {
        let (invoice, payment) = (named("invoice:i", "INV-0001"), named("payment:p", "PAY-0001"));
        let allocation = named("allocation:a", "PAY-0001-1");
        let note = named("credit_note:c", "CN-0001");
        let changes = vec![
            change(1, Movement::InvoiceFinalized { invoice: invoice.clone(), total: d("110.00"), tax: Some(d("10.00")), terms: terms() }),
            change(2, Movement::PaymentReceived { payment: payment.clone(), method: "cash".into(), method_name: "Cash".into(), amount: d("80.00"), client: "c".into(), date: day(), location: "l".into() }),
            change(3, Movement::PaymentAllocated { allocation: allocation.clone(), payment: payment.clone(), invoice: invoice.clone(), amount: d("50.00"), sequence: 1, date: day() }),
            change(4, Movement::CreditNoteIssued { credit_note: note.clone(), invoice: invoice.clone(), total: d("22.00"), tax: d("2.00"), date: day(), reason: "Goodwill".into() }),
            change(5, Movement::RefundPaid { refund: named("refund:r", ""), payment: payment.clone(), method: "cash".into(), method_name: "Cash".into(), amount: d("10.00"), date: day() }),
            change(6, Movement::AllocationRemoved { allocation, payment: payment.clone(), invoice: invoice.clone(), amount: d("50.00") }),
            change(7, Movement::CreditNoteVoided { credit_note: note, invoice: invoice.clone() }),
        ];
        let entries = derive(&changes);
        assert_eq!(entries.len(), 7);
        for entry in &entries {
            assert_eq!(entry.debits(), entry.credits(), "{entry:?}");
        }
        let totals = trial_balance(&entries);
        // Owes its total again: the allocation was removed and the credit note voided.
        assert_eq!(balance_of(&totals, &Account::Receivable), d("110.00"));
        // 80 in, 10 refunded: 70 held, as a credit balance.
        assert_eq!(balance_of(&totals, &Account::ClientCredit), d("-70.00"));
        assert_eq!(balance_of(&totals, &Account::MoneyReceived("cash".into())), d("70.00"));
        assert_eq!((balance_of(&totals, &Account::Sales), balance_of(&totals, &Account::TaxPayable)), (d("-100.00"), d("-10.00")));
        assert_eq!(balance_of(&totals, &Account::CreditNotes), Decimal::ZERO);

        // Voiding the invoice and the payment takes back exactly what they posted.
        let mut later = changes.clone();
        later.push(change(8, Movement::InvoiceVoided { invoice }));
        later.push(change(9, Movement::PaymentVoided { payment }));
        let totals = trial_balance(&derive(&later));
        assert!(totals.iter().all(|t| t.balance().is_zero()), "everything taken back: {totals:?}");
    }

    /// An invoice that owes nothing posts no entry; a finalization whose tax was not kept posts
    /// its total to sales, and its reversal takes back exactly that.
    #[test]
    fn empty_entries_are_left_out_and_a_reversal_takes_back_what_was_posted() {
        let invoice = named("invoice:i", "INV-0002");
        let entries = derive(&[
            change(1, Movement::InvoiceFinalized { invoice: named("invoice:z", "INV-0001"), total: Decimal::ZERO, tax: Some(Decimal::ZERO), terms: terms() }),
            change(2, Movement::InvoiceFinalized { invoice: invoice.clone(), total: d("55.00"), tax: None, terms: terms() }),
            change(3, Movement::InvoiceReverted { invoice: invoice.clone() }),
            change(4, Movement::InvoiceFinalized { invoice: invoice.clone(), total: d("66.00"), tax: Some(d("6.00")), terms: terms() }),
        ]);
        let kinds: Vec<(EntryKind, usize)> = entries.iter().map(|e| (e.kind, e.lines.len())).collect();
        assert_eq!(kinds, [(EntryKind::InvoiceFinalized, 2), (EntryKind::InvoiceReverted, 2), (EntryKind::InvoiceFinalized, 3)]);
        assert_eq!(entries[0].lines, [Line::debit(Account::Receivable, d("55.00")), Line::credit(Account::Sales, d("55.00"))]);
        assert!(entries[0].description.contains("not kept"), "{}", entries[0].description);
        assert_eq!(entries[1].lines, [Line::credit(Account::Receivable, d("55.00")), Line::debit(Account::Sales, d("55.00"))]);
        assert_eq!(entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a2/1", "a3/1", "a4/1"]);
        let totals = trial_balance(&entries);
        assert_eq!(balance_of(&totals, &Account::Receivable), d("66.00"));
    }

    #[test]
    fn accounts_have_fixed_codes_and_one_per_method_in_creation_order() {
        let chart = Chart::new(vec![("m1".into(), "Credit card".into()), ("m2".into(), "Cash".into())]);
        let codes: Vec<(String, String)> = [
            Account::MoneyReceived("m1".into()),
            Account::MoneyReceived("m2".into()),
            Account::Receivable,
            Account::ClientCredit,
            Account::TaxPayable,
            Account::Sales,
            Account::CreditNotes,
        ]
        .iter()
        .map(|account| (chart.code(account), chart.name(account)))
        .collect();
        let expected = [
            ("1101", "Money received: Credit card"),
            ("1102", "Money received: Cash"),
            ("1200", "Accounts receivable"),
            ("2100", "Client credit held"),
            ("2200", "Tax payable"),
            ("4000", "Sales"),
            ("4100", "Credit notes"),
        ];
        assert_eq!(codes, expected.map(|(code, name)| (code.to_owned(), name.to_owned())));
    }
}
