//! Loading what reports are made of (R1, B1 for every client): sums computed by the database,
//! grouped, so no report brings a tenant's records into the server. The rules that combine the
//! sums are ledger/reports.rs.
//!
//! Each read goes through an index that bounds it (schema.surql, version 5): takings through
//! (tenant, date), so they cost the payments and refunds of the days asked about; what is owed
//! through (tenant, status) = OPEN; credit through (tenant, credit) > 0. Only the invoice summary
//! by status reads every invoice of the tenant, as its question is about all of them.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use surrealdb::types::SurrealValue;

use super::invoices::{date_string, parse_status};
use super::{Store, Vars};
use crate::auth::TenantId;
use crate::error::AppResult;
use crate::ledger::invoice::{DisplayStatus, display_status};
use crate::ledger::reports::GroupSum;

/// What takings are grouped by, besides currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakingsGroup {
    /// The payment's date, or the refund's.
    Day,
    /// The payment's method (a refund's is its payment's).
    Method,
    /// Where the payment was received (a refund's is its payment's).
    Location,
}

impl TakingsGroup {
    /// The field of payments and refunds that holds the group.
    fn field(self) -> &'static str {
        match self {
            TakingsGroup::Day => "date",
            TakingsGroup::Method => "method",
            TakingsGroup::Location => "location",
        }
    }
}

#[derive(SurrealValue)]
struct SumRow {
    grouped: String,
    currency: String,
    total: Decimal,
    count: i64,
}

#[derive(SurrealValue)]
struct DueRow {
    client: String,
    due_date: String,
    total: Decimal,
    count: i64,
}

#[derive(SurrealValue)]
struct ClientSumRow {
    client: String,
    total: Decimal,
}

#[derive(SurrealValue)]
struct StatusRow {
    status: String,
    currency: String,
    due_date: String,
    count: i64,
    total: Decimal,
    balance: Decimal,
}

/// Invoices of one status and currency: how many, their totals and what is still owed on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSum {
    pub status: DisplayStatus,
    pub currency: String,
    pub count: i64,
    pub total: Decimal,
    pub balance: Decimal,
}

/// A stored date; Settle writes them, so one that does not parse is a fault shown as the
/// earliest date rather than hiding the money.
fn parse_date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap_or(NaiveDate::MIN)
}

/// (group, currency) of takings.
pub type TakingsKey = (String, String);

impl Store {
    /// Sums of the tenant's non-void payments and of its successful refunds dated `from` to `to`
    /// (calendar dates of the practice), by `group` and currency, in one query of two statements.
    pub async fn takings_sums(
        &self,
        tenant: &TenantId,
        from: NaiveDate,
        to: NaiveDate,
        group: TakingsGroup,
    ) -> AppResult<(Vec<GroupSum<TakingsKey>>, Vec<GroupSum<TakingsKey>>)> {
        let field = group.field();
        let sql = format!(
            "SELECT {field} AS grouped, currency, math::sum(amount) AS total, count() AS count FROM payment
                WHERE tenant = $tenant AND date >= $from AND date <= $to AND void = false GROUP BY grouped, currency;
             SELECT {field} AS grouped, currency, math::sum(amount) AS total, count() AS count FROM refund
                WHERE tenant = $tenant AND date >= $from AND date <= $to AND outcome = 'SUCCEEDED' GROUP BY grouped, currency;"
        );
        let vars = Vars::new().set("tenant", tenant.as_str().to_owned()).set("from", date_string(from)).set("to", date_string(to));
        let mut results = self.query(&sql, vars).await?;
        let sums = |rows: Vec<SumRow>| -> Vec<GroupSum<TakingsKey>> {
            rows.into_iter().map(|row| GroupSum { group: (row.grouped, row.currency), amount: row.total, count: row.count }).collect()
        };
        let payments = sums(results.rows(0)?);
        let refunds = sums(results.rows(1)?);
        Ok((payments, refunds))
    }

    /// Balances of the tenant's OPEN invoices of `currency`, summed by (client, due date), with
    /// how many invoices each sum holds.
    pub async fn open_balances_by_due_date(&self, tenant: &TenantId, currency: &str) -> AppResult<Vec<(String, NaiveDate, Decimal, i64)>> {
        let rows: Vec<DueRow> = self
            .query(
                "SELECT client, due_date, math::sum(total - paid - credited) AS total, count() AS count FROM invoice
                    WHERE tenant = $tenant AND status = 'OPEN' AND currency = $currency GROUP BY client, due_date",
                Vars::new().set("tenant", tenant.as_str().to_owned()).set("currency", currency.to_owned()),
            )
            .await?
            .rows(0)?;
        Ok(rows.into_iter().map(|row| (row.client, parse_date(&row.due_date), row.total, row.count)).collect())
    }

    /// What each client owes on OPEN invoices of `currency` and holds as credit on non-void
    /// payments of `currency` (B1), as two lists of sums by client, in one query.
    pub async fn owing_and_credit_by_client(&self, tenant: &TenantId, currency: &str) -> AppResult<(Vec<(String, Decimal)>, Vec<(String, Decimal)>)> {
        let mut results = self
            .query(
                "SELECT client, math::sum(total - paid - credited) AS total FROM invoice
                    WHERE tenant = $tenant AND status = 'OPEN' AND currency = $currency GROUP BY client;
                 SELECT client, math::sum(credit) AS total FROM payment
                    WHERE tenant = $tenant AND credit > 0dec AND currency = $currency GROUP BY client;",
                Vars::new().set("tenant", tenant.as_str().to_owned()).set("currency", currency.to_owned()),
            )
            .await?;
        let pairs = |rows: Vec<ClientSumRow>| rows.into_iter().map(|row| (row.client, row.total)).collect::<Vec<_>>();
        let owing = pairs(results.rows(0)?);
        let credit = pairs(results.rows(1)?);
        Ok((owing, credit))
    }

    /// Invoices of the tenant by the status a person sees (OVERDUE derived as of `today`, I4) and
    /// currency: count, totals and balances.
    pub async fn invoice_sums_by_status(&self, tenant: &TenantId, today: NaiveDate) -> AppResult<Vec<StatusSum>> {
        // Grouped by due date too, so that OVERDUE is told from OPEN by the ledger's own rule.
        let rows: Vec<StatusRow> = self
            .query(
                "SELECT status, currency, due_date, count() AS count, math::sum(total) AS total,
                    math::sum(IF status = 'OPEN' { total - paid - credited } ELSE { 0dec }) AS balance FROM invoice
                    WHERE tenant = $tenant GROUP BY status, currency, due_date",
                Vars::new().set("tenant", tenant.as_str().to_owned()),
            )
            .await?
            .rows(0)?;
        let mut sums: Vec<StatusSum> = Vec::new();
        for row in rows {
            let status = display_status(parse_status(&row.status), parse_date(&row.due_date), today);
            match sums.iter_mut().find(|s| s.status == status && s.currency == row.currency) {
                Some(sum) => {
                    sum.count += row.count;
                    sum.total += row.total;
                    sum.balance += row.balance;
                }
                None => sums.push(StatusSum { status, currency: row.currency, count: row.count, total: row.total, balance: row.balance }),
            }
        }
        Ok(sums)
    }
}

#[cfg(test)]
mod tests {
    use super::super::ledger_events::memory_store;
    use super::*;

    async fn plan(store: &Store, sql: &str) -> String {
        format!("{:?}", store.query(sql, Vars::new()).await.unwrap().value(0).unwrap())
    }

    /// The reads that must not grow with a tenant's records outside what is asked go through
    /// their indexes: a range of days, the OPEN invoices, the payments holding credit.
    #[tokio::test]
    async fn report_reads_are_bounded_by_their_indexes() {
        let store = memory_store().await;
        let payments = plan(&store, "SELECT date AS grouped, currency, math::sum(amount) AS total FROM payment
            WHERE tenant = 't' AND date >= '2026-01-01' AND date <= '2026-01-30' AND void = false GROUP BY grouped, currency EXPLAIN").await;
        assert!(payments.contains("payment_tenant_date"), "takings read a range of the (tenant, date) index: {payments}");
        let refunds = plan(&store, "SELECT date AS grouped, currency, math::sum(amount) AS total FROM refund
            WHERE tenant = 't' AND date >= '2026-01-01' AND date <= '2026-01-30' AND outcome = 'SUCCEEDED' GROUP BY grouped, currency EXPLAIN").await;
        assert!(refunds.contains("refund_tenant_date") || refunds.contains("refund_outcome"), "refunds are read through an index: {refunds}");
        let open = plan(&store, "SELECT client, math::sum(total - paid - credited) AS total FROM invoice
            WHERE tenant = 't' AND status = 'OPEN' AND currency = 'AUD' GROUP BY client EXPLAIN").await;
        assert!(open.contains("invoice_tenant_status"), "only OPEN invoices are read: {open}");
        let credit = plan(&store, "SELECT client, math::sum(credit) AS total FROM payment
            WHERE tenant = 't' AND credit > 0dec AND currency = 'AUD' GROUP BY client EXPLAIN").await;
        assert!(credit.contains("payment_tenant_credit"), "only payments holding credit are read: {credit}");
    }

    /// M5 kept by the database: a payment's `credit` follows every write of its sums, and is 0
    /// once it is void.
    #[tokio::test]
    async fn m5_payment_credit_follows_every_write() {
        let store = memory_store().await;
        let credit = |sql: &'static str| {
            let store = store.clone();
            async move {
                store.query(sql, Vars::new()).await.unwrap();
                let mut found = store.query("SELECT VALUE credit FROM ONLY payment:p", Vars::new()).await.unwrap();
                found.first::<Decimal>(0).unwrap().unwrap()
            }
        };
        let created = credit(
            "CREATE payment:p SET tenant = 't', client = 'c', location = 'l', method = 'm', method_name = 'Cash', plugin = 'manual',
                date = '2026-01-01', amount = 100.00dec, currency = 'AUD', allocated = 0dec, refunded = 0dec, allocation_count = 0,
                void = false, created_at = time::now(), updated_at = time::now(), key = 'p', page_key = 't/p' RETURN NONE",
        )
        .await;
        let d = |text: &str| text.parse::<Decimal>().unwrap();
        assert_eq!(created, d("100.00"));
        assert_eq!(credit("UPDATE payment:p SET allocated = 30.00dec, refunded = 20.00dec RETURN NONE").await, d("50.00"));
        assert_eq!(credit("UPDATE payment:p SET refund_pending = 5.00dec RETURN NONE").await, d("45.00"));
        assert_eq!(credit("UPDATE payment:p SET allocated = 0dec, refunded = 0dec, refund_pending = 0dec, void = true RETURN NONE").await, Decimal::ZERO);
    }
}
