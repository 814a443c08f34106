//! Loading what reports are made of (R1, B1 for every client): sums computed by the database,
//! grouped, so no report brings a tenant's records into the server. The rules that combine the
//! sums are ledger/reports.rs.
//!
//! Each read is bounded by what it asks about, not by the tenant's history (schema.surql):
//! takings read the takings sums of the days asked about (`takings_day`, kept as money changes
//! are positioned: [`add_takings_changes`]), a few rows per day; what is owed reads through
//! (tenant, status) = OPEN; credit through (tenant, credit) > 0. Only the invoice summary by
//! status reads every invoice of the tenant, as its question is about all of them.

use std::ops::Bound;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use surrealdb::types::{Array, RecordId, RecordIdKey, RecordIdKeyRange, SurrealValue, Value};

use super::invoices::{date_string, parse_date, parse_status};
use super::ledger_events::LedgerRow;
use super::rows::key_of;
use super::{Store, TxRef, Vars};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::ledger::invoice::{DisplayStatus, display_status};
use crate::ledger::reports::{GroupSum, TakingsChange, sum_takings_changes};

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

/// One row of takings sums: `takings_day:[tenant, date, method, location, currency]`.
#[derive(SurrealValue)]
struct TakingsDayRow {
    id: RecordId,
    received: Decimal,
    payments: i64,
    refunded: Decimal,
    refunds: i64,
}

/// The record of the tenant's takings sums of one day, method, location and currency.
fn takings_day(tenant: &TenantId, sum: &TakingsChange) -> RecordId {
    let key = [tenant.as_str(), &date_string(sum.date), &sum.method, &sum.location, &sum.currency];
    RecordId::new("takings_day", RecordIdKey::Array(Array::from(key.map(|part| Value::String(part.to_owned())).to_vec())))
}

/// The tenant's takings sums of the days `from` up to (not including) `until`: a range of keys.
/// A key [tenant, day, ...] sorts after [tenant, day] and before [tenant, next day].
fn takings_days(tenant: &TenantId, from: NaiveDate, until: NaiveDate) -> RecordId {
    let bound = |day: NaiveDate| RecordIdKey::Array(Array::from(vec![Value::String(tenant.as_str().to_owned()), Value::String(date_string(day))]));
    RecordId {
        table: "takings_day".into(),
        key: RecordIdKey::Range(Box::new(RecordIdKeyRange { start: Bound::Included(bound(from)), end: Bound::Excluded(bound(until)) })),
    }
}

/// (date, method, location, currency) of a takings sums record.
fn takings_day_key(id: &RecordId) -> AppResult<(String, String, String, String)> {
    let parts = match &id.key {
        RecordIdKey::Array(parts) => parts.iter().map(|part| match part {
            Value::String(text) => Some(text.clone()),
            _ => None,
        }),
        _ => return Err(AppError::internal(format!("a takings sums record with a key of the wrong shape: {id:?}"))),
    };
    match parts.collect::<Option<Vec<String>>>().as_deref() {
        Some([_, date, method, location, currency]) => Ok((date.clone(), method.clone(), location.clone(), currency.clone())),
        _ => Err(AppError::internal(format!("a takings sums record with a key of the wrong shape: {id:?}"))),
    }
}

/// Adds to the tenant's takings sums the takings changes of `rows`, audit events being
/// positioned in the caller's transaction (the one place they are added, so each is added once).
pub(super) async fn add_takings_changes(tx: &TxRef, tenant: &TenantId, rows: &[&LedgerRow]) -> AppResult<()> {
    let mut changes: Vec<TakingsChange> = Vec::new();
    for row in rows {
        if let Some(stored) = &row.takings {
            let parsed: Vec<TakingsChange> = serde_json::from_str(stored)
                .map_err(|error| AppError::internal(format!("the takings changes of audit event {}: {error}", key_of(&row.id))))?;
            changes.extend(parsed);
        }
    }
    add_takings_sums(tx, tenant, &sum_takings_changes(&changes)).await
}

/// Adds `sums` (one per key) to the tenant's takings sums, in the caller's transaction.
pub(super) async fn add_takings_sums(tx: &TxRef, tenant: &TenantId, sums: &[TakingsChange]) -> AppResult<()> {
    if sums.is_empty() {
        return Ok(());
    }
    let (sql, vars) = takings_sums_query(tenant, sums, Vars::new());
    tx.query(&sql, vars).await?;
    Ok(())
}

/// The statements that add `sums` (one per key) to the tenant's takings sums, with their
/// parameters added to `vars`: for a caller that sends them with statements of its own.
pub(super) fn takings_sums_query(tenant: &TenantId, sums: &[TakingsChange], mut vars: Vars) -> (String, Vars) {
    let mut sql = String::new();
    for (n, sum) in sums.iter().enumerate() {
        sql.push_str(&format!(
            "UPSERT $day{n} SET received = (received ?? 0dec) + $received{n}, payments = (payments ?? 0) + $payments{n},
                refunded = (refunded ?? 0dec) + $refunded{n}, refunds = (refunds ?? 0) + $refunds{n} RETURN NONE;"
        ));
        vars = vars
            .set(&format!("day{n}"), takings_day(tenant, sum))
            .set(&format!("received{n}"), sum.received)
            .set(&format!("payments{n}"), sum.payments)
            .set(&format!("refunded{n}"), sum.refunded)
            .set(&format!("refunds{n}"), sum.refunds);
    }
    (sql, vars)
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

/// (group, currency) of takings.
pub type TakingsKey = (String, String);

/// Takings sums (of payments, and of refunds) by `group` and currency, from sums by day, method,
/// location and currency: those kept by positioning, or those of the books as of a moment (T1).
pub fn takings_by_group(sums: &[TakingsChange], group: TakingsGroup) -> (Vec<GroupSum<TakingsKey>>, Vec<GroupSum<TakingsKey>>) {
    let mut payments = Vec::new();
    let mut refunds = Vec::new();
    for sum in sums {
        let grouped = match group {
            TakingsGroup::Day => date_string(sum.date),
            TakingsGroup::Method => sum.method.clone(),
            TakingsGroup::Location => sum.location.clone(),
        };
        if sum.payments != 0 {
            payments.push(GroupSum { group: (grouped.clone(), sum.currency.clone()), amount: sum.received, count: sum.payments });
        }
        if sum.refunds != 0 {
            refunds.push(GroupSum { group: (grouped, sum.currency.clone()), amount: sum.refunded, count: sum.refunds });
        }
    }
    (payments, refunds)
}

impl Store {
    /// Sums of the tenant's non-void payments and of its successful refunds dated `from` to `to`
    /// (calendar dates of the practice), by `group` and currency: the takings sums of those days,
    /// one range of record keys.
    pub async fn takings_sums(
        &self,
        tenant: &TenantId,
        from: NaiveDate,
        to: NaiveDate,
        group: TakingsGroup,
    ) -> AppResult<(Vec<GroupSum<TakingsKey>>, Vec<GroupSum<TakingsKey>>)> {
        let until = to.succ_opt().unwrap_or(NaiveDate::MAX);
        let rows: Vec<TakingsDayRow> = self
            .query(
                "SELECT id, received, payments, refunded, refunds FROM $days",
                Vars::new().set("days", takings_days(tenant, from, until)),
            )
            .await?
            .rows(0)?;
        let mut sums = Vec::with_capacity(rows.len());
        for row in rows {
            let (date, method, location, currency) = takings_day_key(&row.id)?;
            let (received, payments, refunded, refunds) = (row.received, row.payments, row.refunded, row.refunds);
            sums.push(TakingsChange { date: parse_date(&date), method, location, currency, received, payments, refunded, refunds });
        }
        Ok(takings_by_group(&sums, group))
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
    use crate::ledger::reports::TakingsPlace;

    async fn plan(store: &Store, sql: &str) -> String {
        format!("{:?}", store.query(sql, Vars::new()).await.unwrap().value(0).unwrap())
    }

    /// The reads that must not grow with a tenant's records outside what is asked go through
    /// their indexes: the OPEN invoices, the payments holding credit.
    #[tokio::test]
    async fn report_reads_are_bounded_by_their_indexes() {
        let store = memory_store().await;
        let open = plan(&store, "SELECT client, math::sum(total - paid - credited) AS total FROM invoice
            WHERE tenant = 't' AND status = 'OPEN' AND currency = 'AUD' GROUP BY client EXPLAIN").await;
        assert!(open.contains("invoice_tenant_status"), "only OPEN invoices are read: {open}");
        let credit = plan(&store, "SELECT client, math::sum(credit) AS total FROM payment
            WHERE tenant = 't' AND credit > 0dec AND currency = 'AUD' GROUP BY client EXPLAIN").await;
        assert!(credit.contains("payment_tenant_credit"), "only payments holding credit are read: {credit}");
    }

    /// R1: takings read the sums of exactly the days asked about, both ends included, of the
    /// tenant asked about only (another tenant whose name starts with this one's included), and
    /// the changes of several audit events add up.
    #[tokio::test]
    async fn r1_takings_read_the_sums_of_the_days_asked_about_only() {
        let store = memory_store().await;
        let d = |text: &str| text.parse::<Decimal>().unwrap();
        let day = |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap();
        let place = |date: &'static str, method: &'static str| TakingsPlace { date: day(date), method, location: "main", currency: "AUD" };
        let row = |tenant: &str, changes: Vec<TakingsChange>| LedgerRow {
            id: super::super::rows::record("audit_event", &super::super::rows::new_key()),
            tenant: tenant.to_owned(),
            at: chrono::Utc::now(),
            actor: "test".into(),
            action: "test".into(),
            events: None,
            takings: Some(serde_json::to_string(&changes).unwrap()),
            position: None,
            content_hash: None,
        };
        let ours = vec![
            row("t", vec![TakingsChange::payment_recorded(place("2025-12-31", "cash"), d("1.00"))]),
            row("t", vec![TakingsChange::payment_recorded(place("2026-01-01", "cash"), d("10.00")), TakingsChange::payment_recorded(place("2026-01-01", "card"), d("20.00"))]),
            row("t", vec![TakingsChange::payment_recorded(place("2026-01-01", "cash"), d("5.00")), TakingsChange::refund_succeeded(place("2026-01-30", "card"), d("3.00"))]),
            row("t", vec![TakingsChange::payment_recorded(place("2026-01-31", "cash"), d("100.00"))]),
        ];
        let theirs = vec![row("t2", vec![TakingsChange::payment_recorded(place("2026-01-15", "cash"), d("7.00"))])];
        let (tenant, other) = (TenantId::parse("t").unwrap(), TenantId::parse("t2").unwrap());
        for (tenant, rows) in [(&tenant, &ours), (&other, &theirs)] {
            store
                .transaction(|tx| async move { add_takings_changes(&tx, tenant, &rows.iter().collect::<Vec<_>>()).await })
                .await
                .unwrap();
        }
        let (payments, refunds) = store.takings_sums(&tenant, day("2026-01-01"), day("2026-01-30"), TakingsGroup::Day).await.unwrap();
        let sums = |sums: Vec<GroupSum<TakingsKey>>| sums.into_iter().map(|s| (s.group.0, s.amount, s.count)).collect::<Vec<_>>();
        let mut payments = sums(payments);
        payments.sort();
        assert_eq!(payments, [("2026-01-01".to_owned(), d("15.00"), 2), ("2026-01-01".to_owned(), d("20.00"), 1)], "cash and card of the first day");
        assert_eq!(sums(refunds), [("2026-01-30".to_owned(), d("3.00"), 1)], "the last day is included");
        let (by_method, _) = store.takings_sums(&tenant, day("2026-01-01"), day("2026-01-30"), TakingsGroup::Method).await.unwrap();
        let mut by_method = sums(by_method);
        by_method.sort();
        assert_eq!(by_method, [("card".to_owned(), d("20.00"), 1), ("cash".to_owned(), d("15.00"), 2)]);
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
