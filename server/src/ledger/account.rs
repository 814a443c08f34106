//! A client's account: what they owe and hold (B1), and their statement (B2), from the records
//! as they are now or as they stood at a past moment (T1, ledger/as_of.rs): both hand the same
//! functions the same facts.

use std::collections::HashMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::invoice::{InvoiceFacts, InvoiceStatus};
use super::money::display_amount;
use super::payment::PaymentFacts;

/// B1: what a client owes and holds, in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientBalance {
    /// Sum of the balances of OPEN invoices.
    pub owing: Decimal,
    /// Sum of the unallocated amounts of non-void payments.
    pub unallocated_credit: Decimal,
    /// The part of `owing` whose due date has passed (I4).
    pub overdue: Decimal,
}

/// B1: a client's balance from their invoices (with due dates) and payments of one currency
/// (money of different currencies is never added, M6). Void invoices and void payments count for
/// nothing (I7, V2); only OPEN invoices owe.
pub fn client_balance<'a>(
    invoices: impl IntoIterator<Item = (&'a InvoiceFacts, NaiveDate)>,
    payments: impl IntoIterator<Item = &'a PaymentFacts>,
    today: NaiveDate,
) -> ClientBalance {
    let mut balance = ClientBalance { owing: Decimal::ZERO, unallocated_credit: Decimal::ZERO, overdue: Decimal::ZERO };
    for (invoice, due_date) in invoices {
        if invoice.status != InvoiceStatus::Open {
            continue;
        }
        balance.owing += invoice.balance();
        if due_date < today {
            balance.overdue += invoice.balance();
        }
    }
    for payment in payments.into_iter().filter(|p| !p.void) {
        balance.unallocated_credit += payment.unallocated();
    }
    balance
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Invoice,
    Payment,
    Allocation,
    Refund,
    CreditNote,
}

impl EntryKind {
    /// What an entry of this kind and amount adds to what the client owes: invoices and refunds
    /// add, payments and credit notes take away, allocations only move money between the two and
    /// add nothing.
    pub fn owed(self, amount: Decimal) -> Decimal {
        match self {
            EntryKind::Invoice | EntryKind::Refund => amount,
            EntryKind::Payment | EntryKind::CreditNote => -amount,
            EntryKind::Allocation => Decimal::ZERO,
        }
    }

    /// Same-day entries in the order money moves: charges, then credits, then allocations, then
    /// refunds.
    fn rank(self) -> u8 {
        match self {
            EntryKind::Invoice => 0,
            EntryKind::Payment => 1,
            EntryKind::CreditNote => 2,
            EntryKind::Allocation => 3,
            EntryKind::Refund => 4,
        }
    }
}

/// One line of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementEntry {
    pub date: NaiveDate,
    pub kind: EntryKind,
    /// The record, as "table:key"; orders entries of one day and kind.
    pub record: String,
    pub reference: String,
    pub description: String,
    /// What the entry adds to what the client owes ([`EntryKind::owed`]).
    pub amount: Decimal,
    /// What the client owes after this entry.
    pub balance: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub opening_balance: Decimal,
    pub entries: Vec<StatementEntry>,
    pub closing_balance: Decimal,
}

/// What a statement shows of each record it lists (B2): the client's invoices (OPEN or PAID),
/// payments (not void), allocations (active), refunds (succeeded) and credit notes (issued) of
/// one currency, dated up to the end of the range. Records by key; `number` is what a person
/// knows the record by (INV-0001, PAY-0001, CN-0001), empty when it has none.
#[derive(Debug, Clone, Default)]
pub struct StatementRecords {
    pub invoices: Vec<StatementInvoice>,
    pub payments: Vec<StatementPayment>,
    pub allocations: Vec<StatementAllocation>,
    pub refunds: Vec<StatementRefund>,
    pub credit_notes: Vec<StatementCreditNote>,
}

#[derive(Debug, Clone)]
pub struct StatementInvoice {
    pub key: String,
    pub number: String,
    pub issue_date: NaiveDate,
    pub total: Decimal,
}

#[derive(Debug, Clone)]
pub struct StatementPayment {
    pub key: String,
    pub number: String,
    pub method_name: String,
    pub date: NaiveDate,
    pub amount: Decimal,
}

#[derive(Debug, Clone)]
pub struct StatementAllocation {
    pub key: String,
    pub payment: String,
    pub invoice: String,
    /// Its place among its payment's allocations (PAY-0001-2 is the second).
    pub sequence: i64,
    pub date: NaiveDate,
    pub amount: Decimal,
}

#[derive(Debug, Clone)]
pub struct StatementRefund {
    pub key: String,
    pub payment: String,
    pub date: NaiveDate,
    pub amount: Decimal,
}

#[derive(Debug, Clone)]
pub struct StatementCreditNote {
    pub key: String,
    pub number: String,
    pub reason: String,
    pub date: NaiveDate,
    pub total: Decimal,
}

impl StatementRecords {
    /// B2: the statement of these records in `currency` from `from` on (see [`statement`]). An
    /// allocation and a refund are named by their payment's number, and an allocation's
    /// description names its invoice's, when the statement lists them.
    pub fn statement(&self, currency: &str, from: NaiveDate) -> Statement {
        let payment_numbers: HashMap<&str, &str> = self.payments.iter().map(|p| (p.key.as_str(), p.number.as_str())).collect();
        let invoice_numbers: HashMap<&str, &str> = self.invoices.iter().map(|i| (i.key.as_str(), i.number.as_str())).collect();
        let number = |numbers: &HashMap<&str, &str>, key: &str| numbers.get(key).copied().unwrap_or_default().to_owned();
        let mut entries = Vec::new();
        for invoice in &self.invoices {
            entries.push(entry(invoice.issue_date, EntryKind::Invoice, "invoice", &invoice.key, invoice.number.clone(), "Invoice".into(), invoice.total));
        }
        for payment in &self.payments {
            let description = format!("Payment ({})", payment.method_name);
            entries.push(entry(payment.date, EntryKind::Payment, "payment", &payment.key, payment.number.clone(), description, payment.amount));
        }
        for allocation in &self.allocations {
            let payment = number(&payment_numbers, &allocation.payment);
            let description =
                format!("{} of {} applied to {}", display_amount(allocation.amount, currency), payment, number(&invoice_numbers, &allocation.invoice));
            let reference = format!("{payment}-{}", allocation.sequence);
            entries.push(entry(allocation.date, EntryKind::Allocation, "allocation", &allocation.key, reference, description, Decimal::ZERO));
        }
        for refund in &self.refunds {
            let reference = number(&payment_numbers, &refund.payment);
            entries.push(entry(refund.date, EntryKind::Refund, "refund", &refund.key, reference, "Refund".into(), refund.amount));
        }
        for note in &self.credit_notes {
            let description = format!("Credit note: {}", note.reason);
            entries.push(entry(note.date, EntryKind::CreditNote, "credit_note", &note.key, note.number.clone(), description, note.total));
        }
        statement(entries, from)
    }
}

fn entry(date: NaiveDate, kind: EntryKind, table: &str, key: &str, reference: String, description: String, amount: Decimal) -> StatementEntry {
    StatementEntry { date, kind, record: format!("{table}:{key}"), reference, description, amount: kind.owed(amount), balance: Decimal::ZERO }
}

/// B2: the entries dated `from` onwards in date order with a running balance that starts from
/// everything dated before `from`. `entries` are every entry of the client up to the end of the
/// range, in any order.
pub fn statement(mut entries: Vec<StatementEntry>, from: NaiveDate) -> Statement {
    entries.sort_by(|a, b| (a.date, a.kind.rank(), &a.record).cmp(&(b.date, b.kind.rank(), &b.record)));
    let opening_balance: Decimal = entries.iter().filter(|e| e.date < from).map(|e| e.amount).sum();
    let mut running = opening_balance;
    let mut in_range: Vec<StatementEntry> = entries.into_iter().filter(|e| e.date >= from).collect();
    for entry in &mut in_range {
        running += entry.amount;
        entry.balance = running;
    }
    Statement { opening_balance, entries: in_range, closing_balance: running }
}
