//! Reports for a practice's dashboards (VIEWER and up): takings (R1), aged receivables (R1),
//! what each client owes and holds (B1 for every client) and invoices by status. The database
//! sums (store/reports.rs), the ledger combines (ledger/reports.rs); this file checks the input
//! and shapes the answer. Takings and aged receivables can also be asked as of a past moment
//! (`at`, T1): the books replayed to that moment (ledger/as_of.rs) take the place of the sums.

use async_graphql::{Context, Enum, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::accounts::account_currency;
use super::context::{caller, day_of, past_moment, state, tenant, today};
use super::directory::{Client, Location};
use super::invoices_and_payments::InvoiceStatus;
use super::loader;
use super::methods::PaymentMethod;
use super::money::Money;
use super::pagination::{Page, connection_types};
use super::scalars::Date;
use crate::auth::Role;
use crate::error::{AppError, AppResult};
use crate::ledger::reports::{self as rules, Aging, ClientPosition, PositionOrder, TAKINGS_DAYS_MAX, Takings};
use crate::store::reports::{TakingsGroup, takings_by_group};

connection_types!(ClientAging, ClientAgingConnection, ClientAgingEdge);
connection_types!(ClientAccount, ClientAccountConnection, ClientAccountEdge);

/// What takings are grouped by (each group is also split by currency, M6).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TakingsGroupBy {
    /// The day of the payment, or of the refund (docs/rules.md, R1).
    Day,
    /// The payment method (a refund counts under its payment's method).
    Method,
    /// The location the payment was received at (a refund counts under its payment's).
    Location,
}

impl From<TakingsGroupBy> for TakingsGroup {
    fn from(group: TakingsGroupBy) -> Self {
        match group {
            TakingsGroupBy::Day => TakingsGroup::Day,
            TakingsGroupBy::Method => TakingsGroup::Method,
            TakingsGroupBy::Location => TakingsGroup::Location,
        }
    }
}

/// Takings of one group and currency (R1): payments received minus successful refunds.
pub struct TakingsRow {
    /// The group's key: a date, a payment method key or a location key; None for a total.
    group: Option<(TakingsGroupBy, String)>,
    currency: String,
    takings: Takings,
}

impl TakingsRow {
    fn key(&self, by: TakingsGroupBy) -> Option<&str> {
        self.group.as_ref().filter(|(group, _)| *group == by).map(|(_, key)| key.as_str())
    }
}

#[Object]
impl TakingsRow {
    /// The day, when grouped by DAY.
    async fn day(&self) -> Option<Date> {
        self.key(TakingsGroupBy::Day).and_then(|day| chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()).map(Date)
    }
    /// The payment method, when grouped by METHOD.
    async fn method(&self, ctx: &Context<'_>) -> Result<Option<PaymentMethod>> {
        let Some(key) = self.key(TakingsGroupBy::Method) else { return Ok(None) };
        let row = loader::payment_method(ctx, key).await?.ok_or_else(|| AppError::not_found("payment method"))?;
        Ok(Some(PaymentMethod(row)))
    }
    /// The location, when grouped by LOCATION.
    async fn location(&self, ctx: &Context<'_>) -> Result<Option<Location>> {
        let Some(key) = self.key(TakingsGroupBy::Location) else { return Ok(None) };
        let row = loader::location(ctx, key).await?.ok_or_else(|| AppError::not_found("location"))?;
        Ok(Some(Location(row)))
    }
    async fn currency(&self) -> &str {
        &self.currency
    }
    /// Sum of the payments (void ones left out).
    async fn received(&self) -> Money {
        Money::of(self.takings.received, &self.currency)
    }
    /// Sum of the successful refunds.
    async fn refunded(&self) -> Money {
        Money::of(self.takings.refunded, &self.currency)
    }
    /// received - refunded; negative when more went back than came in.
    async fn net(&self) -> Money {
        Money::of(self.takings.net(), &self.currency)
    }
    /// How many payments were received.
    async fn payment_count(&self) -> i64 {
        self.takings.payments
    }
    /// How many refunds succeeded.
    async fn refund_count(&self) -> i64 {
        self.takings.refunds
    }
}

/// Takings from `from` to `to` (R1).
#[derive(SimpleObject)]
pub struct TakingsReport {
    pub from: Date,
    pub to: Date,
    pub group_by: TakingsGroupBy,
    /// One row per group and currency, in order of the group's key (day, or record key), then
    /// currency.
    pub rows: Vec<TakingsRow>,
    /// One row per currency: the sums of all groups.
    pub totals: Vec<TakingsRow>,
}

/// Balances of OPEN invoices by days past their due date (R1), in one currency.
#[derive(SimpleObject)]
pub struct AgingBuckets {
    /// Not past due.
    pub current: Money,
    pub days_1_to_30: Money,
    pub days_31_to_60: Money,
    pub days_61_to_90: Money,
    pub over_90: Money,
    pub total: Money,
    /// OPEN invoices counted.
    pub invoice_count: i64,
}

impl AgingBuckets {
    fn of(aging: &Aging, currency: &str) -> AgingBuckets {
        AgingBuckets {
            current: Money::of(aging.current, currency),
            days_1_to_30: Money::of(aging.days_1_to_30, currency),
            days_31_to_60: Money::of(aging.days_31_to_60, currency),
            days_61_to_90: Money::of(aging.days_61_to_90, currency),
            over_90: Money::of(aging.over_90, currency),
            total: Money::of(aging.total(), currency),
            invoice_count: aging.invoices,
        }
    }
}

/// One client's aged receivables.
pub struct ClientAging {
    client: String,
    aging: Aging,
    currency: String,
}

#[Object]
impl ClientAging {
    async fn client(&self, ctx: &Context<'_>) -> Result<Client> {
        Ok(Client(loader::client(ctx, &self.client).await?.ok_or_else(|| AppError::not_found("client"))?))
    }
    async fn buckets(&self) -> AgingBuckets {
        AgingBuckets::of(&self.aging, &self.currency)
    }
}

/// Aged receivables as of a day, in one currency (R1).
pub struct AgedReceivables {
    as_of: chrono::NaiveDate,
    currency: String,
    total: Aging,
    /// Clients with the most owed first.
    clients: Vec<(String, Aging)>,
}

#[Object]
impl AgedReceivables {
    async fn as_of(&self) -> Date {
        Date(self.as_of)
    }
    async fn currency(&self) -> &str {
        &self.currency
    }
    /// All OPEN invoices of the currency.
    async fn total(&self) -> AgingBuckets {
        AgingBuckets::of(&self.total, &self.currency)
    }
    /// Each client that owes, the most owed first.
    async fn clients(&self, ctx: &Context<'_>, first: Option<i32>, after: Option<String>) -> Result<ClientAgingConnection> {
        let page = Page::parse_ordered(first, after, "clientAging", state(ctx).limits.page_size_max)?;
        let ordered = self.clients.iter().map(|(client, aging)| (client.clone(), aging.total(), aging.clone()));
        let (rows, total) = page_by_amount(&page, ordered, false)?;
        let rows = rows.into_iter().map(|(cursor, (client, aging))| (cursor, ClientAging { client, aging, currency: self.currency.clone() })).collect();
        Ok(page.connection(rows, total))
    }
}

/// How client accounts are ordered.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ClientAccountOrder {
    /// Most owed first.
    OwingDesc,
    OwingAsc,
    /// Most unallocated credit first.
    CreditDesc,
    CreditAsc,
}

/// What one client owes and holds, in one currency (B1).
pub struct ClientAccount {
    client: String,
    position: ClientPosition,
    currency: String,
}

#[Object]
impl ClientAccount {
    async fn client(&self, ctx: &Context<'_>) -> Result<Client> {
        Ok(Client(loader::client(ctx, &self.client).await?.ok_or_else(|| AppError::not_found("client"))?))
    }
    /// Sum of the client's OPEN invoice balances.
    async fn owing(&self) -> Money {
        Money::of(self.position.owing, &self.currency)
    }
    /// Sum of the unallocated amounts of the client's non-void payments.
    async fn unallocated_credit(&self) -> Money {
        Money::of(self.position.credit, &self.currency)
    }
}

/// Invoices of one status and currency.
#[derive(SimpleObject)]
pub struct InvoiceStatusTotal {
    /// The status a person sees (OVERDUE: OPEN and past due today, I4).
    pub status: InvoiceStatus,
    pub currency: String,
    pub count: i64,
    /// Sum of the invoices' totals.
    pub total: Money,
    /// What is still owed on them: only OPEN and OVERDUE invoices owe; a draft, paid or void
    /// invoice owes nothing.
    pub balance: Money,
}

/// Pages a list ordered by an amount (most first unless `ascending`, then by key): the cursor
/// holds the amount and the key of the last row shown, so a page goes on after it even when rows
/// before it changed. Returns the rows of the page with their cursor text and the list's length.
fn page_by_amount<T>(
    page: &Page,
    rows: impl Iterator<Item = (String, Decimal, T)>,
    ascending: bool,
) -> AppResult<(Vec<(String, (String, T))>, i64)> {
    // Ascending order of this key is the list's order.
    let order_key = |amount: Decimal, key: &str| (if ascending { amount } else { -amount }, key.to_owned());
    let after = match &page.after {
        None => None,
        Some(text) => {
            let invalid = || AppError::invalid("after is not a cursor from this list");
            let (amount, key) = text.split_once('/').ok_or_else(invalid)?;
            Some(order_key(amount.parse::<Decimal>().map_err(|_| invalid())?, key))
        }
    };
    let rows: Vec<(String, Decimal, T)> = rows.collect();
    let total = rows.len() as i64;
    let page_rows = rows
        .into_iter()
        .filter(|(key, amount, _)| after.as_ref().is_none_or(|after| order_key(*amount, key.as_str()) > *after))
        .take(page.fetch_limit())
        .map(|(key, amount, row)| (format!("{amount}/{key}"), (key, row)))
        .collect();
    Ok((page_rows, total))
}

#[derive(Default)]
pub struct ReportQuery;

#[Object]
impl ReportQuery {
    /// Takings from `from` to `to` (at most 366 days, both included), grouped by day, payment
    /// method or location and split by currency (R1): payments received (void ones left out)
    /// minus successful refunds. A payment counts on its payment date and a refund on its refund
    /// date, both days of the practice's calendar (docs/rules.md, R1).
    ///
    /// With `at`, takings as they stood at that past moment (T1): the payments recorded and not
    /// yet void, and the refunds succeeded, by then (a change counts from its audit event's
    /// `at`). An `at` after now is INVALID_INPUT.
    async fn takings(
        &self,
        ctx: &Context<'_>,
        from: Date,
        to: Date,
        #[graphql(default_with = "TakingsGroupBy::Day")] group_by: TakingsGroupBy,
        at: Option<DateTime<Utc>>,
    ) -> Result<TakingsReport> {
        let request = caller(ctx, Role::Viewer)?;
        if to < from {
            return Err(AppError::invalid("to must not be before from").into());
        }
        let days = (to.0 - from.0).num_days() + 1;
        if days > TAKINGS_DAYS_MAX {
            return Err(AppError::invalid(format!("a takings report covers at most {TAKINGS_DAYS_MAX} days; this range has {days}")).into());
        }
        let store = &state(ctx).store;
        let tenant = &request.principal.tenant;
        let (payments, refunds) = match past_moment(at)? {
            None => store.takings_sums(tenant, from.0, to.0, group_by.into()).await?,
            Some(at) => takings_by_group(&store.books_at(tenant, at).await?.takings(from.0, to.0), group_by.into()),
        };
        let groups = rules::takings(payments, refunds);
        let mut totals: Vec<(String, Takings)> = Vec::new();
        for ((_, currency), takings) in &groups {
            let at = match totals.iter().position(|(c, _)| c == currency) {
                Some(at) => at,
                None => {
                    totals.push((currency.clone(), Takings::default()));
                    totals.len() - 1
                }
            };
            let sum = &mut totals[at].1;
            sum.received += takings.received;
            sum.refunded += takings.refunded;
            sum.payments += takings.payments;
            sum.refunds += takings.refunds;
        }
        totals.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(TakingsReport {
            from,
            to,
            group_by,
            rows: groups.into_iter().map(|((key, currency), takings)| TakingsRow { group: Some((group_by, key)), currency, takings }).collect(),
            totals: totals.into_iter().map(|(currency, takings)| TakingsRow { group: None, currency, takings }).collect(),
        })
    }

    /// Balances of OPEN invoices in `currency` (the practice's when left out) by days past their
    /// due date as of `asOf` (today in the practice's timezone when left out): current, 1-30,
    /// 31-60, 61-90 and over 90 days (R1). The balances are today's; `asOf` sets the day they are
    /// aged from.
    ///
    /// With `at`, the balances (and which invoices were OPEN) are those of that past moment
    /// (T1: a change counts from its audit event's `at`), aged from `asOf`, or when it is left
    /// out from `at`'s day in the practice's timezone. An `at` after now is INVALID_INPUT.
    async fn aged_receivables(
        &self,
        ctx: &Context<'_>,
        as_of: Option<Date>,
        currency: Option<String>,
        at: Option<DateTime<Utc>>,
    ) -> Result<AgedReceivables> {
        let request = caller(ctx, Role::Viewer)?;
        let at = past_moment(at)?;
        let settings = tenant(ctx).await?;
        let currency = account_currency(settings, currency)?;
        let as_of = as_of.map_or_else(|| day_of(settings, at.unwrap_or_else(Utc::now)), |d| d.0);
        let store = &state(ctx).store;
        let balances = match at {
            None => store.open_balances_by_due_date(&request.principal.tenant, &currency).await?,
            Some(at) => store.books_at(&request.principal.tenant, at).await?.open_balances(&currency),
        };
        let (total, clients) = rules::aged_receivables(balances, as_of);
        Ok(AgedReceivables { as_of, currency, total, clients })
    }

    /// What each client owes on OPEN invoices and holds as unallocated credit (B1), in `currency`
    /// (the practice's when left out); clients with neither are left out.
    async fn client_accounts(
        &self,
        ctx: &Context<'_>,
        currency: Option<String>,
        #[graphql(default_with = "ClientAccountOrder::OwingDesc")] order_by: ClientAccountOrder,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<ClientAccountConnection> {
        let request = caller(ctx, Role::Viewer)?;
        let page = Page::parse_ordered(first, after, "clientAccount", state(ctx).limits.page_size_max)?;
        let settings = tenant(ctx).await?;
        let currency = account_currency(settings, currency)?;
        let (owing, credit) = state(ctx).store.owing_and_credit_by_client(&request.principal.tenant, &currency).await?;
        let (order, ascending) = match order_by {
            ClientAccountOrder::OwingDesc => (PositionOrder::Owing, false),
            ClientAccountOrder::OwingAsc => (PositionOrder::Owing, true),
            ClientAccountOrder::CreditDesc => (PositionOrder::Credit, false),
            ClientAccountOrder::CreditAsc => (PositionOrder::Credit, true),
        };
        let positions = rules::client_positions(owing, credit, order, ascending);
        let ordered = positions.into_iter().map(|(client, position)| {
            let amount = match order {
                PositionOrder::Owing => position.owing,
                PositionOrder::Credit => position.credit,
            };
            (client, amount, position)
        });
        let (rows, total) = page_by_amount(&page, ordered, ascending)?;
        let rows = rows.into_iter().map(|(cursor, (client, position))| (cursor, ClientAccount { client, position, currency: currency.clone() })).collect();
        Ok(page.connection(rows, total))
    }

    /// Invoices by the status a person sees and currency: how many, their totals and what is
    /// still owed on them. Each status is its own row; void invoices are counted in their own
    /// row and never added to another (I7).
    async fn invoice_totals(&self, ctx: &Context<'_>) -> Result<Vec<InvoiceStatusTotal>> {
        let request = caller(ctx, Role::Viewer)?;
        let settings = tenant(ctx).await?;
        let mut sums = state(ctx).store.invoice_sums_by_status(&request.principal.tenant, today(settings)).await?;
        let rank = |status: InvoiceStatus| [InvoiceStatus::Draft, InvoiceStatus::Open, InvoiceStatus::Overdue, InvoiceStatus::Paid, InvoiceStatus::Void].iter().position(|s| *s == status);
        sums.sort_by(|a, b| (rank(a.status.into()), &a.currency).cmp(&(rank(b.status.into()), &b.currency)));
        Ok(sums
            .into_iter()
            .map(|sum| InvoiceStatusTotal {
                status: sum.status.into(),
                total: Money::of(sum.total, &sum.currency),
                balance: Money::of(sum.balance, &sum.currency),
                count: sum.count,
                currency: sum.currency,
            })
            .collect())
    }
}
