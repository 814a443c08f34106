//! The double-entry journal (J1) and the trial balance (T1) as a client reads them (VIEWER and
//! up, like every report): `journal(from, to)` lists the entries of a period, oldest first, and
//! `trialBalance(asOf)` sums every entry up to a moment per account and currency. The store
//! reads the changes and the ledger derives the entries (ledger/journal.rs); this file checks
//! the input and shapes the answer (docs/rules.md, "Journal").

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::context::{caller, state};
use super::money::Money;
use super::pagination::{Page, connection_types};
use crate::auth::Role;
use crate::error::{AppError, AppResult};
use crate::ledger::journal::{self as rules, Account, AccountKind, AccountTotal, Chart, Entry, EntryKind};

/// Which side an account is on.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum JournalAccountKind {
    Asset,
    Liability,
    Revenue,
    /// Revenue given back (credit notes); its balance is a debit.
    ContraRevenue,
}

/// What a journal entry records.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum JournalEntryKind {
    /// Dr accounts receivable (total); Cr sales (net of tax), Cr tax payable (I2).
    InvoiceFinalized,
    /// The invoice's finalization taken back (I5).
    InvoiceReverted,
    /// The invoice's finalization taken back (I7).
    InvoiceVoided,
    /// Dr money received (the payment's method); Cr client credit held (P1-P3).
    PaymentReceived,
    /// Dr client credit held; Cr accounts receivable (P3-P5).
    PaymentAllocated,
    /// The allocation taken back (P6).
    AllocationRemoved,
    /// Dr client credit held; Cr money received (the payment's method) (F1-F3).
    RefundPaid,
    /// What was left of the payment taken back: Dr client credit held; Cr money received (V1, V2).
    PaymentVoided,
    /// Dr credit notes (net of tax), Dr tax payable; Cr accounts receivable (C1-C3).
    CreditNoteIssued,
    /// The credit note's entry taken back (C4).
    CreditNoteVoided,
}

impl From<EntryKind> for JournalEntryKind {
    fn from(kind: EntryKind) -> Self {
        match kind {
            EntryKind::InvoiceFinalized => JournalEntryKind::InvoiceFinalized,
            EntryKind::InvoiceReverted => JournalEntryKind::InvoiceReverted,
            EntryKind::InvoiceVoided => JournalEntryKind::InvoiceVoided,
            EntryKind::PaymentReceived => JournalEntryKind::PaymentReceived,
            EntryKind::PaymentAllocated => JournalEntryKind::PaymentAllocated,
            EntryKind::AllocationRemoved => JournalEntryKind::AllocationRemoved,
            EntryKind::RefundPaid => JournalEntryKind::RefundPaid,
            EntryKind::PaymentVoided => JournalEntryKind::PaymentVoided,
            EntryKind::CreditNoteIssued => JournalEntryKind::CreditNoteIssued,
            EntryKind::CreditNoteVoided => JournalEntryKind::CreditNoteVoided,
        }
    }
}

/// An account of the practice's chart: the fixed accounts, and one money-received account per
/// payment method.
pub struct JournalAccount {
    account: Account,
    chart: Arc<Chart>,
}

#[Object]
impl JournalAccount {
    /// The account's code, as given to an accounting package: 1101, 1102, ... money received
    /// per payment method (in the order the methods were created), 1200 accounts receivable,
    /// 2100 client credit held, 2200 tax payable, 4000 sales, 4100 credit notes.
    async fn code(&self) -> String {
        self.chart.code(&self.account)
    }
    async fn name(&self) -> String {
        self.chart.name(&self.account)
    }
    async fn kind(&self) -> JournalAccountKind {
        match self.account.kind() {
            AccountKind::Asset => JournalAccountKind::Asset,
            AccountKind::Liability => JournalAccountKind::Liability,
            AccountKind::Revenue => JournalAccountKind::Revenue,
            AccountKind::ContraRevenue => JournalAccountKind::ContraRevenue,
        }
    }
    /// The payment method of a money-received account.
    async fn method_id(&self) -> Option<ID> {
        self.account.method().map(|key| ID(key.to_owned()))
    }
}

/// An amount on one side of one account; the other side is zero.
#[derive(SimpleObject)]
pub struct JournalLine {
    pub account: JournalAccount,
    pub debit: Money,
    pub credit: Money,
}

/// One money movement of one change, in one currency, whose debits equal its credits (J1).
pub struct JournalEntry {
    entry: Entry,
    chart: Arc<Chart>,
}

#[Object]
impl JournalEntry {
    /// The change's audit event and the movement's place in it ("<auditEventId>/1").
    async fn id(&self) -> ID {
        ID(self.entry.id.clone())
    }
    async fn kind(&self) -> JournalEntryKind {
        self.entry.kind.into()
    }
    /// When the change took effect (its audit event's time).
    async fn at(&self) -> DateTime<Utc> {
        self.entry.at
    }
    /// The audit event of the change (see `auditEvents`).
    async fn audit_event_id(&self) -> ID {
        ID(self.entry.audit_event.clone())
    }
    /// The records it concerns, as "table:id", the one it is about first.
    async fn records(&self) -> Vec<ID> {
        self.entry.records.iter().cloned().map(ID).collect()
    }
    /// What happened, with the numbers people know the records by (INV-0001, PAY-0001, ...).
    async fn description(&self) -> &str {
        &self.entry.description
    }
    async fn currency(&self) -> &str {
        &self.entry.currency
    }
    async fn lines(&self) -> Vec<JournalLine> {
        let currency = &self.entry.currency;
        self.entry
            .lines
            .iter()
            .map(|line| JournalLine {
                account: JournalAccount { account: line.account.clone(), chart: self.chart.clone() },
                debit: Money::of(line.debit, currency),
                credit: Money::of(line.credit, currency),
            })
            .collect()
    }
}

connection_types!(JournalEntry, JournalEntryConnection, JournalEntryEdge);

/// One account's sums in one currency, as of the trial balance's moment.
pub struct TrialBalanceRow {
    total: AccountTotal,
    chart: Arc<Chart>,
}

#[Object]
impl TrialBalanceRow {
    async fn account(&self) -> JournalAccount {
        JournalAccount { account: self.total.account.clone(), chart: self.chart.clone() }
    }
    async fn currency(&self) -> &str {
        &self.total.currency
    }
    /// Sum of the account's debits.
    async fn debit(&self) -> Money {
        Money::of(self.total.debit, &self.total.currency)
    }
    /// Sum of the account's credits.
    async fn credit(&self) -> Money {
        Money::of(self.total.credit, &self.total.currency)
    }
    /// debit - credit: positive for a debit balance (money received, receivable, credit notes),
    /// negative for a credit balance (client credit held, tax payable, sales).
    async fn balance(&self) -> Money {
        Money::of(self.total.balance(), &self.total.currency)
    }
}

/// The sums of all accounts of one currency: debits equal credits (J1).
#[derive(SimpleObject)]
pub struct TrialBalanceTotal {
    pub currency: String,
    pub debit: Money,
    pub credit: Money,
}

/// Every account's debits, credits and balance as of a moment (T1), per currency (M6).
#[derive(SimpleObject)]
pub struct TrialBalance {
    pub as_of: DateTime<Utc>,
    /// Accounts that have had an entry, by currency then code.
    pub rows: Vec<TrialBalanceRow>,
    /// One row per currency.
    pub totals: Vec<TrialBalanceTotal>,
}

/// The entries of a period: `from` included, `to` left out, so consecutive periods neither
/// overlap nor leave a gap. `to` before `from` is INVALID_INPUT.
pub fn in_period(entries: &[Entry], from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> AppResult<Vec<&Entry>> {
    if let (Some(from), Some(to)) = (from, to)
        && to < from
    {
        return Err(AppError::invalid("to must not be before from"));
    }
    Ok(entries.iter().filter(|e| from.is_none_or(|from| e.at >= from) && to.is_none_or(|to| e.at < to)).collect())
}

/// The entries after the entry `after` (all when None); an id not in the list is INVALID_INPUT.
pub fn after_entry<'a, 'e>(entries: &'a [&'e Entry], after: Option<&str>) -> AppResult<&'a [&'e Entry]> {
    match after {
        None => Ok(entries),
        Some(id) => {
            let at = entries.iter().position(|e| e.id == id).ok_or_else(|| AppError::invalid("after is not a cursor from this list"))?;
            Ok(&entries[at + 1..])
        }
    }
}

#[derive(Default)]
pub struct JournalQuery;

#[Object]
impl JournalQuery {
    /// The journal (J1): every money change as entries whose debits equal their credits, oldest
    /// first, for the changes that took effect from `from` (included) to `to` (left out); every
    /// change when both are left out. Pages like every list.
    async fn journal(
        &self,
        ctx: &Context<'_>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<JournalEntryConnection> {
        let request = caller(ctx, Role::Viewer)?;
        let page = Page::parse_ordered(first, after, "journal_entry", state(ctx).limits.page_size_max)?;
        let (chart, entries) = state(ctx).store.journal(&request.principal.tenant).await?;
        let chart = Arc::new(chart);
        let listed = in_period(&entries, from, to)?;
        let rows = after_entry(&listed, page.after.as_deref())?
            .iter()
            .take(page.fetch_limit())
            .map(|entry| (entry.id.clone(), JournalEntry { entry: (*entry).clone(), chart: chart.clone() }))
            .collect();
        Ok(page.connection(rows, listed.len() as i64))
    }

    /// The trial balance as of `asOf` (now when left out): every account's debits, credits and
    /// balance from the entries that took effect up to and including that moment, per currency
    /// (T1: what it was at that moment).
    async fn trial_balance(&self, ctx: &Context<'_>, as_of: Option<DateTime<Utc>>) -> Result<TrialBalance> {
        let request = caller(ctx, Role::Viewer)?;
        let as_of = as_of.unwrap_or_else(Utc::now);
        let (chart, entries) = state(ctx).store.journal(&request.principal.tenant).await?;
        let chart = Arc::new(chart);
        let sums = rules::trial_balance(entries.iter().filter(|entry| entry.at <= as_of));
        let mut totals: Vec<(String, Decimal, Decimal)> = Vec::new();
        for sum in &sums {
            match totals.iter_mut().find(|(currency, ..)| *currency == sum.currency) {
                Some(total) => {
                    total.1 += sum.debit;
                    total.2 += sum.credit;
                }
                None => totals.push((sum.currency.clone(), sum.debit, sum.credit)),
            }
        }
        Ok(TrialBalance {
            as_of,
            rows: sums.into_iter().map(|total| TrialBalanceRow { total, chart: chart.clone() }).collect(),
            totals: totals
                .into_iter()
                .map(|(currency, debit, credit)| TrialBalanceTotal { debit: Money::of(debit, &currency), credit: Money::of(credit, &currency), currency })
                .collect(),
        })
    }
}
