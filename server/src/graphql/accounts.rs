//! A client's account: what they owe and the credit they hold (B1), and their statement for a
//! date range (B2), now or as they stood at a past moment (T1). Both are fields of Client
//! (directory.rs).

use async_graphql::{Context, Enum, SimpleObject};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::context::{caller, day_of, past_moment, state, tenant, today};
use super::money::Money;
use super::proofs::ClientBalanceProof;
use super::scalars::Date;
use crate::auth::Role;
use crate::error::{AppError, AppResult};
use crate::ledger::account::EntryKind;

/// B1: what a client owes and the credit they hold, in one currency (the practice's unless
/// another is asked for); money of other currencies is never added in (M6).
#[derive(SimpleObject)]
pub struct ClientBalance {
    /// Sum of open invoice balances.
    pub owing: Money,
    /// Sum of unallocated amounts of non-void payments.
    pub unallocated_credit: Money,
    /// The part of owing that is past its due date.
    pub overdue: Money,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum StatementEntryKind {
    Invoice,
    Payment,
    Allocation,
    Refund,
    CreditNote,
}

#[derive(SimpleObject)]
pub struct StatementEntry {
    pub date: Date,
    pub kind: StatementEntryKind,
    /// The record, as "table:id".
    pub record: String,
    /// INV-0001, PAY-0001, CN-0001, PAY-0001-1.
    pub reference: String,
    pub description: String,
    /// What the entry adds to what the client owes (negative for payments and credit notes).
    pub amount: Money,
    /// Running balance after this entry: owing minus credit held.
    pub balance: Money,
}

/// B2: a client's account for a date range.
#[derive(SimpleObject)]
pub struct Statement {
    pub from: Date,
    pub to: Date,
    pub opening_balance: Money,
    pub entries: Vec<StatementEntry>,
    pub closing_balance: Money,
}

/// The currency a client account is shown in: the one asked for, else the practice's.
pub fn account_currency(settings: &crate::store::rows::TenantRow, currency: Option<String>) -> AppResult<String> {
    match currency {
        Some(code) => Ok(crate::ledger::Currency::parse(code.trim())?.code().to_owned()),
        None => Ok(settings.currency.clone()),
    }
}

/// Client account fields, added to the Client type. With `at`, B1 as it stood at that moment
/// (T1), overdue as of that moment's day.
pub async fn client_balance(ctx: &Context<'_>, client_key: &str, currency: Option<String>, at: Option<DateTime<Utc>>) -> AppResult<ClientBalance> {
    let request = caller(ctx, Role::Viewer)?;
    let at = past_moment(at)?;
    let settings = tenant(ctx).await?;
    let currency = &account_currency(settings, currency)?;
    let store = &state(ctx).store;
    let tenant = &request.principal.tenant;
    let balance = match at {
        None => store.client_balance(tenant, client_key, currency, today(settings)).await?,
        Some(at) => store.books_at(tenant, at).await?.client_balance(client_key, currency, day_of(settings, at)),
    };
    Ok(ClientBalance {
        owing: Money::of(balance.owing, currency),
        unallocated_credit: Money::of(balance.unallocated_credit, currency),
        overdue: Money::of(balance.overdue, currency),
    })
}

/// The client's net balance explained (B1), in `currency` (the practice's when left out), from
/// the records dated up to `as_of`, or from every record beside the stored figures.
pub async fn client_balance_proof(ctx: &Context<'_>, client_key: &str, as_of: Option<Date>, currency: Option<String>) -> AppResult<ClientBalanceProof> {
    let request = caller(ctx, Role::Viewer)?;
    let settings = tenant(ctx).await?;
    let currency = account_currency(settings, currency)?;
    let store = &state(ctx).store;
    let tenant = &request.principal.tenant;
    let stored = match as_of {
        Some(_) => Decimal::ZERO,
        None => {
            let balance = store.client_balance(tenant, client_key, &currency, today(settings)).await?;
            balance.owing - balance.unallocated_credit
        }
    };
    let proof = store.client_balance_proof(tenant, client_key, &currency, as_of.map(|d| d.0), stored).await?;
    Ok(ClientBalanceProof { proof, currency, as_of: as_of.map(|d| d.0) })
}

/// B2 from `from` to `to`; with `at`, as it stood at that moment (T1).
pub async fn client_statement(
    ctx: &Context<'_>,
    client_key: &str,
    from: Date,
    to: Date,
    currency: Option<String>,
    at: Option<DateTime<Utc>>,
) -> AppResult<Statement> {
    let request = caller(ctx, Role::Viewer)?;
    if from > to {
        return Err(AppError::invalid("from must not be after to"));
    }
    let at = past_moment(at)?;
    let settings = tenant(ctx).await?;
    let currency = &account_currency(settings, currency)?;
    let store = &state(ctx).store;
    let tenant = &request.principal.tenant;
    let statement = match at {
        None => store.statement(tenant, client_key, currency, from.0, to.0).await?,
        Some(at) => store.books_at(tenant, at).await?.statement(client_key, currency, from.0, to.0),
    };
    let entries = statement
        .entries
        .into_iter()
        .map(|entry| StatementEntry {
            date: Date(entry.date),
            kind: match entry.kind {
                EntryKind::Invoice => StatementEntryKind::Invoice,
                EntryKind::Payment => StatementEntryKind::Payment,
                EntryKind::Allocation => StatementEntryKind::Allocation,
                EntryKind::Refund => StatementEntryKind::Refund,
                EntryKind::CreditNote => StatementEntryKind::CreditNote,
            },
            record: entry.record,
            reference: entry.reference,
            description: entry.description,
            amount: Money::of(entry.amount, currency),
            balance: Money::of(entry.balance, currency),
        })
        .collect();
    Ok(Statement {
        from,
        to,
        opening_balance: Money::of(statement.opening_balance, currency),
        entries,
        closing_balance: Money::of(statement.closing_balance, currency),
    })
}
