//! GET /reports/journal.csv: the journal of a period as a file an accountant imports into Xero
//! (its manual journal layout, [`super::xero`]), with the same bearer token as /graphql (VIEWER
//! and up, like `journal`). Parameters: `from` and `to`, days of the practice's calendar, both
//! included; `currency` (the practice's unless given: a Xero manual journal has one currency);
//! `taxRate`, the Xero tax rate every line gets (BAS Excluded unless given); `after`, the id of
//! the last entry of the previous file. A file holds whole entries and at most 300 lines, as Xero
//! takes; when more follow, a `Link: <...>; rel="next"` header gives the address of the next.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use poem::http::{StatusCode, header};
use poem::web::Data;
use poem::{Request, Response, handler};

use super::{HttpState, authorize, error_response, request_id, xero};
use crate::auth::Role;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::graphql::accounts::account_currency;
use crate::graphql::journal::{after_entry, in_period};

/// The query string, as given.
#[derive(Debug, Default)]
struct Params {
    from: Option<String>,
    to: Option<String>,
    currency: Option<String>,
    tax_rate: Option<String>,
    after: Option<String>,
}

impl Params {
    fn parse(query: &str) -> AppResult<Params> {
        let mut params = Params::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = Some(decode(value)?);
            match name {
                "from" => params.from = value,
                "to" => params.to = value,
                "currency" => params.currency = value,
                "taxRate" => params.tax_rate = value,
                "after" => params.after = value,
                other => return Err(AppError::invalid(format!("unknown parameter {other:?}; use from, to, currency, taxRate and after"))),
            }
        }
        Ok(params)
    }
}

/// A query-string value with its `%XX` and `+` decoded.
fn decode(value: &str) -> AppResult<String> {
    let invalid = || AppError::invalid("a parameter is not valid percent-encoded UTF-8");
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                let hex = value.get(at + 1..at + 3).ok_or_else(invalid)?;
                decoded.push(u8::from_str_radix(hex, 16).map_err(|_| invalid())?);
                at += 3;
            }
            b'+' => {
                decoded.push(b' ');
                at += 1;
            }
            byte => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8(decoded).map_err(|_| invalid())
}

/// A value percent-encoded for a query string (everything but RFC 3986's unreserved characters).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn day(name: &str, value: Option<&str>) -> AppResult<NaiveDate> {
    let value = value.ok_or_else(|| AppError::invalid(format!("{name} is needed: a day such as 2026-11-01")))?;
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| AppError::invalid(format!("{name} is not a day such as 2026-11-01: {value:?}")))
}

/// The moment a day of the practice's calendar starts (the first moment after midnight, on a
/// day whose midnight a clock change skips).
fn start_of(day: NaiveDate, timezone: Tz) -> DateTime<Utc> {
    let midnight = day.and_time(NaiveTime::MIN);
    (0..24)
        .find_map(|hour| timezone.from_local_datetime(&(midnight + chrono::Duration::hours(hour))).earliest())
        .map_or_else(|| midnight.and_utc(), |start| start.with_timezone(&Utc))
}

/// The longest tax rate name taken: Xero's are short; this only bounds the file.
const TAX_RATE_LENGTH_MAX: usize = 100;

#[handler]
pub async fn journal_csv(request: &Request, Data(state): Data<&Arc<HttpState>>) -> Response {
    let principal = match authorize(request, state, Role::Viewer) {
        Ok(principal) => principal,
        Err(refusal) => return refusal,
    };
    match answer(request, state, &principal.tenant).await {
        Ok(response) => response,
        Err(error) => {
            let status = match error.code {
                ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::DatabaseUnavailable | ErrorCode::TransactionConflict => StatusCode::SERVICE_UNAVAILABLE,
                // Every other refusal is of the request: a parameter or a currency.
                _ => StatusCode::BAD_REQUEST,
            };
            error_response(status, error, &request_id(request), &state.metrics)
        }
    }
}

async fn answer(request: &Request, state: &HttpState, tenant: &crate::auth::TenantId) -> AppResult<Response> {
    let params = Params::parse(request.uri().query().unwrap_or_default())?;
    let (from, to) = (day("from", params.from.as_deref())?, day("to", params.to.as_deref())?);
    if to < from {
        return Err(AppError::invalid("to must not be before from"));
    }
    let tax_rate = params.tax_rate.as_deref().unwrap_or(xero::TAX_RATE_DEFAULT);
    if tax_rate.trim().is_empty() || tax_rate.chars().count() > TAX_RATE_LENGTH_MAX || tax_rate.chars().any(char::is_control) {
        return Err(AppError::invalid(format!("taxRate is a Xero tax rate's name, 1 to {TAX_RATE_LENGTH_MAX} printable characters")));
    }
    let settings = state.store.tenant(tenant).await?;
    let currency = account_currency(&settings, params.currency.clone())?;
    let timezone: Tz = settings.timezone.parse().unwrap_or(chrono_tz::UTC);
    let (chart, entries) = state.store.journal(tenant).await?;
    let end = to.succ_opt().ok_or_else(|| AppError::invalid("to is too far in the future"))?;
    let listed: Vec<_> =
        in_period(&entries, Some(start_of(from, timezone)), Some(start_of(end, timezone)))?.into_iter().filter(|e| e.currency == currency).collect();
    let rest = after_entry(&listed, params.after.as_deref())?;
    let count = xero::entries_per_file(rest);
    let body = xero::file(rest[..count].iter().copied(), &chart, tax_rate, timezone);
    let mut response = Response::builder()
        .content_type("text/csv; charset=utf-8")
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"journal-{currency}-{from}-{to}.csv\""));
    if let Some(last) = rest[..count].last().filter(|_| count < rest.len()) {
        let next = format!(
            "</reports/journal.csv?from={from}&to={to}&currency={currency}&taxRate={}&after={}>; rel=\"next\"",
            encode(tax_rate),
            encode(&last.id)
        );
        response = response.header(header::LINK, next);
    }
    Ok(response.body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_decoded_and_encoded_back() {
        let params = Params::parse("from=2026-11-01&to=2026-11-30&taxRate=BAS+Excluded%2C%20x&after=a%2F1").unwrap();
        assert_eq!(params.tax_rate.as_deref(), Some("BAS Excluded, x"));
        assert_eq!(params.after.as_deref(), Some("a/1"));
        assert_eq!(encode("BAS Excluded, x"), "BAS%20Excluded%2C%20x");
        assert!(Params::parse("from=%zz").is_err());
        assert!(Params::parse("form=2026-11-01").is_err(), "a misspelt parameter is refused, not ignored");
    }

    #[test]
    fn a_day_starts_at_the_practices_midnight() {
        let sydney = chrono_tz::Australia::Sydney;
        let day = NaiveDate::from_ymd_opt(2026, 11, 5).unwrap();
        assert_eq!(start_of(day, sydney).to_rfc3339(), "2026-11-04T13:00:00+00:00", "AEDT is UTC+11");
    }
}
