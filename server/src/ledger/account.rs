//! A client's account: what they owe and hold (B1), and their statement (B2).

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::invoice::{InvoiceFacts, InvoiceStatus};
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
