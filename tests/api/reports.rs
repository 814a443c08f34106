//! Reports (R1, B1 for every client) checked against figures computed here from the records
//! each test created, and the cost of nested look-ups (a page of invoices with their clients,
//! allocations and payments reads the database the same number of times for 10 rows or 100).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use settle::auth::Role;

use crate::helpers::{Caller, TestApp, new_key};

// Each test runs its scenario boxed: a #[tokio::test] keeps the test's future on the test
// thread's stack, which the server under test shares, and these scenarios' futures are large
// enough in a debug build to leave a money mutation too little of it (docs/development.md).

const TAKINGS: &str = "query($from: Date!, $to: Date!, $by: TakingsGroupBy!) { takings(from: $from, to: $to, groupBy: $by) {
    rows { day method { id } location { id } currency received { amount currency } refunded { amount } net { amount } paymentCount refundCount }
    totals { day method { id } currency received { amount currency } refunded { amount } net { amount } paymentCount refundCount } } }";

const BUCKETS: &str = "current { amount currency } days1To30 { amount } days31To60 { amount } days61To90 { amount } over90 { amount } total { amount } invoiceCount";

fn aged_query() -> String {
    format!(
        "query($asOf: Date, $currency: String, $first: Int, $after: String) {{ agedReceivables(asOf: $asOf, currency: $currency) {{
            asOf currency total {{ {BUCKETS} }}
            clients(first: $first, after: $after) {{ totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ client {{ id }} buckets {{ {BUCKETS} }} }} }} }} }} }}"
    )
}

const ACCOUNTS: &str = "query($order: ClientAccountOrder!, $first: Int, $after: String, $currency: String) {
    clientAccounts(orderBy: $order, first: $first, after: $after, currency: $currency) {
        totalCount pageInfo { hasNextPage endCursor } edges { node { client { id } owing { amount currency } unallocatedCredit { amount } } } } }";

fn dec(value: &Value) -> Decimal {
    value.as_str().unwrap_or_else(|| panic!("an amount string, not {value}")).parse().unwrap()
}

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn day(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

async fn methods(app: &TestApp) -> BTreeMap<String, String> {
    let data = app.admin().ok("{ paymentMethods { id name } }", json!({})).await;
    data["paymentMethods"].as_array().unwrap().iter().map(|m| (m["name"].as_str().unwrap().to_owned(), m["id"].as_str().unwrap().to_owned())).collect()
}

async fn create(app: &TestApp, mutation: &str) -> String {
    let data = app.admin().ok(mutation, json!({})).await;
    data.as_object().unwrap().values().next().unwrap()["id"].as_str().unwrap().to_owned()
}

/// A standalone payment; returns its id.
async fn record(app: &TestApp, client: &str, location: &str, method: &str, date: Option<&str>, amount: &str, currency: &str) -> String {
    let data = app
        .billing()
        .ok(
            "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id } } }",
            json!({"key": new_key(), "input": {"clientId": client, "locationId": location, "methodId": method, "date": date, "amount": amount, "currency": currency}}),
        )
        .await;
    data["recordPayment"]["payment"]["id"].as_str().unwrap().to_owned()
}

async fn refund(app: &TestApp, payment: &str, amount: &str, date: Option<&str>) {
    app.billing()
        .ok(
            "mutation($id: ID!, $input: RefundInput!, $key: String!) { refundPayment(id: $id, input: $input, idempotencyKey: $key) { refund { outcome } } }",
            json!({"id": payment, "key": new_key(), "input": {"amount": amount, "date": date}}),
        )
        .await;
}

async fn void_payment(app: &TestApp, payment: &str) {
    app.billing()
        .ok("mutation($id: ID!, $key: String!) { voidPayment(id: $id, idempotencyKey: $key) { payment { id } } }", json!({"id": payment, "key": new_key()}))
        .await;
}

/// A finalized invoice of one untaxed line; returns its id.
async fn invoice(app: &TestApp, client: &str, location: &str, amount: &str, due: NaiveDate, currency: &str) -> String {
    let id = draft(app, client, location, amount, due, currency).await;
    app.finalize(&id).await;
    id
}

async fn draft(app: &TestApp, client: &str, location: &str, amount: &str, due: NaiveDate, currency: &str) -> String {
    let issue = due - chrono::Duration::days(7);
    let data = app
        .billing()
        .ok(
            "mutation($input: InvoiceInput!, $key: String!) { createInvoice(input: $input, idempotencyKey: $key) { invoice { id } } }",
            json!({"key": new_key(), "input": {"clientId": client, "locationId": location, "currency": currency,
                "issueDate": issue.to_string(), "dueDate": due.to_string(), "lines": [{"description": "Visit", "unitPrice": amount}]}}),
        )
        .await;
    data["createInvoice"]["invoice"]["id"].as_str().unwrap().to_owned()
}

async fn pay(app: &TestApp, invoice: &str, method: &str, amount: &str, date: &str, location: Option<&str>) -> String {
    let data = app
        .billing()
        .ok(
            "mutation($id: ID!, $input: PayInvoiceInput!, $key: String!) { payInvoice(id: $id, input: $input, idempotencyKey: $key) { payment { id } } }",
            json!({"id": invoice, "key": new_key(), "input": {"methodId": method, "amount": amount, "date": date, "locationId": location}}),
        )
        .await;
    data["payInvoice"]["payment"]["id"].as_str().unwrap().to_owned()
}

async fn credit_note(app: &TestApp, invoice: &str, amount: &str) {
    app.billing()
        .ok(
            "mutation($id: ID!, $key: String!, $amount: Amount!) { issueCreditNote(invoiceId: $id, idempotencyKey: $key,
                input: {reason: \"Goodwill\", lines: [{lineIndex: 0, amount: $amount}]}) { creditNote { id } } }",
            json!({"id": invoice, "key": new_key(), "amount": amount}),
        )
        .await;
}

async fn void_invoice(app: &TestApp, invoice: &str) {
    app.billing()
        .ok("mutation($id: ID!, $key: String!) { voidInvoice(id: $id, idempotencyKey: $key) { invoice { id } } }", json!({"id": invoice, "key": new_key()}))
        .await;
}

/// Money moving on one day, as the test recorded it: what takings must add up.
struct Moved {
    date: &'static str,
    method: String,
    location: String,
    currency: &'static str,
    amount: Decimal,
    refund: bool,
}

/// (received, refunded, payments, refunds) by (group, currency), computed from what was recorded.
type Expected = BTreeMap<(String, String), (Decimal, Decimal, i64, i64)>;

fn expected_takings(moved: &[Moved], from: &str, to: &str, group: impl Fn(&Moved) -> String) -> Expected {
    let mut expected = Expected::new();
    for m in moved.iter().filter(|m| m.date >= from && m.date <= to) {
        let entry = expected.entry((group(m), m.currency.to_owned())).or_default();
        if m.refund {
            entry.1 += m.amount;
            entry.3 += 1;
        } else {
            entry.0 += m.amount;
            entry.2 += 1;
        }
    }
    expected
}

fn answered_takings(rows: &Value, group: impl Fn(&Value) -> String) -> Expected {
    let mut answered = Expected::new();
    for row in rows.as_array().unwrap() {
        let (received, refunded) = (dec(&row["received"]["amount"]), dec(&row["refunded"]["amount"]));
        assert_eq!(dec(&row["net"]["amount"]), received - refunded, "net = received - refunded: {row}");
        assert_eq!(row["received"]["currency"], row["currency"], "money is shown in the row's currency: {row}");
        let key = (group(row), row["currency"].as_str().unwrap().to_owned());
        let previous = answered.insert(key, (received, refunded, row["paymentCount"].as_i64().unwrap(), row["refundCount"].as_i64().unwrap()));
        assert!(previous.is_none(), "one row per group and currency: {rows:#}");
    }
    answered
}

#[tokio::test]
async fn r1_takings_are_payments_net_of_successful_refunds_by_day_method_and_location() {
    Box::pin(scenario_r1_takings_are_payments_net_of_successful_refunds_by_day_method_and_location()).await
}

async fn scenario_r1_takings_are_payments_net_of_successful_refunds_by_day_method_and_location() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let (a, client) = (seed.location.clone(), seed.client.clone());
    let b = create(&app, "mutation { createLocation(input: {name: \"Second St\"}) { id } }").await;
    let methods = methods(&app).await;
    let (cash, eftpos) = (methods["Cash"].clone(), methods["EFTPOS"].clone());
    let mut moved = Vec::new();
    let mut paid = |date, method: &str, location: &str, currency, amount: &str, refund| {
        moved.push(Moved { date, method: method.to_owned(), location: location.to_owned(), currency, amount: d(amount), refund })
    };

    let p1 = record(&app, &client, &a, &cash, Some("2026-03-01"), "100.00", "AUD").await;
    paid("2026-03-01", &cash, &a, "AUD", "100.00", false);
    record(&app, &client, &b, &eftpos, Some("2026-03-01"), "50.50", "AUD").await;
    paid("2026-03-01", &eftpos, &b, "AUD", "50.50", false);
    // Another currency on the same day and method: never added to AUD (M6).
    let p3 = record(&app, &client, &a, &cash, Some("2026-03-02"), "30.00", "NZD").await;
    paid("2026-03-02", &cash, &a, "NZD", "30.00", false);
    // A void payment counts for nothing (V2).
    let voided = record(&app, &client, &a, &cash, Some("2026-03-02"), "70.00", "AUD").await;
    void_payment(&app, &voided).await;
    // Received before the range, refunded inside it: the refund counts on its own day.
    let p5 = record(&app, &client, &a, &cash, Some("2026-02-28"), "200.00", "AUD").await;
    paid("2026-02-28", &cash, &a, "AUD", "200.00", false);
    refund(&app, &p5, "25.00", Some("2026-03-03")).await;
    paid("2026-03-03", &cash, &a, "AUD", "25.00", true);
    refund(&app, &p1, "10.00", Some("2026-03-02")).await;
    paid("2026-03-02", &cash, &a, "AUD", "10.00", true);
    // Refunded after the range: not in it.
    refund(&app, &p3, "5.00", Some("2026-03-05")).await;
    paid("2026-03-05", &cash, &a, "NZD", "5.00", true);
    record(&app, &client, &a, &eftpos, Some("2026-03-04"), "40.00", "AUD").await;
    paid("2026-03-04", &eftpos, &a, "AUD", "40.00", false);
    // A part payment of an invoice at the second location; a credit note on the invoice moves
    // no money and is not takings.
    let inv = invoice(&app, &client, &a, "80.00", day("2026-03-10"), "AUD").await;
    pay(&app, &inv, &eftpos, "30.00", "2026-03-03", Some(&b)).await;
    paid("2026-03-03", &eftpos, &b, "AUD", "30.00", false);
    credit_note(&app, &inv, "20.00").await;

    let viewer = app.viewer();
    let (from, to) = ("2026-03-01", "2026-03-03");
    for by in ["DAY", "METHOD", "LOCATION"] {
        let group = |m: &Moved| match by {
            "DAY" => m.date.to_owned(),
            "METHOD" => m.method.clone(),
            _ => m.location.clone(),
        };
        let answered_group = |r: &Value| match by {
            "DAY" => r["day"].as_str().unwrap().to_owned(),
            "METHOD" => r["method"]["id"].as_str().unwrap().to_owned(),
            _ => r["location"]["id"].as_str().unwrap().to_owned(),
        };
        let data = viewer.ok(TAKINGS, json!({"from": from, "to": to, "by": by})).await;
        let report = &data["takings"];
        let expected = expected_takings(&moved, from, to, &group);
        assert_eq!(answered_takings(&report["rows"], &answered_group), expected, "takings by {by}: {report:#}");
        let totals = expected_takings(&moved, from, to, |_| String::new());
        assert_eq!(answered_takings(&report["totals"], |_| String::new()), totals, "totals by currency, grouped by {by}");
        for total in report["totals"].as_array().unwrap() {
            assert!(total["day"].is_null() && total["method"].is_null(), "a total has no group: {total}");
        }
    }
    // The figures themselves, as a person would add them up.
    let data = viewer.ok(TAKINGS, json!({"from": from, "to": to, "by": "DAY"})).await;
    let aud = data["takings"]["totals"].as_array().unwrap().iter().find(|t| t["currency"] == "AUD").unwrap().clone();
    assert_eq!(dec(&aud["net"]["amount"]), d("145.50"), "100.00 + 50.50 + 30.00 - 10.00 - 25.00: {aud}");
    assert_eq!(aud["received"]["amount"], "180.50");
}

#[tokio::test]
async fn r1_takings_fall_on_the_day_of_the_practice_timezone() {
    Box::pin(scenario_r1_takings_fall_on_the_day_of_the_practice_timezone()).await
}

async fn scenario_r1_takings_fall_on_the_day_of_the_practice_timezone() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = methods(&app).await["Cash"].clone();
    let settings = "mutation($tz: String!) { updateSettings(input: {timezone: $tz}) { timezone } }";
    let today_in = |tz: &str| chrono::Utc::now().with_timezone(&tz.parse::<chrono_tz::Tz>().unwrap()).date_naive();
    // UTC+14 and UTC-11: their days never coincide, so each payment's day tells which applied.
    app.admin().ok(settings, json!({"tz": "Pacific/Kiritimati"})).await;
    let east = today_in("Pacific/Kiritimati");
    let early = record(&app, &seed.client, &seed.location, &cash, None, "11.00", "AUD").await;
    refund(&app, &early, "1.00", None).await;
    app.admin().ok(settings, json!({"tz": "Pacific/Pago_Pago"})).await;
    let west = today_in("Pacific/Pago_Pago");
    record(&app, &seed.client, &seed.location, &cash, None, "22.00", "AUD").await;
    assert!(west < east, "{west} is before {east}");

    let data = app.viewer().ok(TAKINGS, json!({"from": west.to_string(), "to": east.to_string(), "by": "DAY"})).await;
    let days: Vec<(String, Decimal)> =
        data["takings"]["rows"].as_array().unwrap().iter().map(|r| (r["day"].as_str().unwrap().to_owned(), dec(&r["net"]["amount"]))).collect();
    assert_eq!(days, vec![(west.to_string(), d("22.00")), (east.to_string(), d("10.00"))], "each on the practice's day when it was taken");
}

/// R1's buckets, written from the rule: days past due = as-of day - due date.
fn bucket(days_past_due: i64) -> usize {
    match days_past_due {
        ..=0 => 0,
        1..=30 => 1,
        31..=60 => 2,
        61..=90 => 3,
        _ => 4,
    }
}

fn buckets_of(value: &Value) -> [Decimal; 5] {
    ["current", "days1To30", "days31To60", "days61To90", "over90"].map(|field| dec(&value[field]["amount"]))
}

#[tokio::test]
async fn r1_aged_receivables_bucket_open_balances_at_exact_boundaries_in_total_and_by_client() {
    Box::pin(scenario_r1_aged_receivables_bucket_open_balances_at_exact_boundaries_in_total_and_by_client()).await
}

async fn scenario_r1_aged_receivables_bucket_open_balances_at_exact_boundaries_in_total_and_by_client() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let (ann, loc) = (seed.client.clone(), seed.location.clone());
    let bo = create(&app, "mutation { createClient(input: {name: \"Bo\"}) { id } }").await;
    let cash = methods(&app).await["Cash"].clone();
    let as_of = day("2026-06-30");
    let due = |days_past_due: i64| as_of - chrono::Duration::days(days_past_due);
    // (client, days past due, balance left) of every OPEN AUD invoice.
    let mut open: Vec<(String, i64, Decimal)> = Vec::new();
    for days in [0i64, -3, 1, 30, 31, 60, 61, 90, 91] {
        let amount = d("100.00") + Decimal::from(days.abs());
        let id = invoice(&app, &ann, &loc, &amount.to_string(), due(days), "AUD").await;
        let left = match days {
            // A part payment and a credit note lower what is aged.
            31 => {
                pay(&app, &id, &cash, "31.00", "2026-06-01", None).await;
                amount - d("31.00")
            }
            61 => {
                credit_note(&app, &id, "61.00").await;
                amount - d("61.00")
            }
            _ => amount,
        };
        open.push((ann.clone(), days, left));
    }
    // Paid, void and draft invoices owe nothing; another currency is another report (M6).
    let paid = invoice(&app, &ann, &loc, "45.00", due(45), "AUD").await;
    pay(&app, &paid, &cash, "45.00", "2026-06-01", None).await;
    let voided = invoice(&app, &ann, &loc, "50.00", due(50), "AUD").await;
    void_invoice(&app, &voided).await;
    draft(&app, &ann, &loc, "60.00", due(70), "AUD").await;
    invoice(&app, &ann, &loc, "70.00", due(5), "NZD").await;
    for (days, amount) in [(95, "500.00"), (10, "20.00")] {
        invoice(&app, &bo, &loc, amount, due(days), "AUD").await;
        open.push((bo.clone(), days, d(amount)));
    }

    let expect = |client: Option<&str>| {
        let mut sums = [Decimal::ZERO; 5];
        for (_, days, left) in open.iter().filter(|(c, _, _)| client.is_none_or(|client| c == client)) {
            sums[bucket(*days)] += *left;
        }
        sums
    };
    let viewer = app.viewer();
    let data = viewer.ok(&aged_query(), json!({"asOf": as_of.to_string(), "first": 1})).await;
    let report = &data["agedReceivables"];
    assert_eq!((report["asOf"].as_str(), report["currency"].as_str()), (Some("2026-06-30"), Some("AUD")));
    assert_eq!(buckets_of(&report["total"]), expect(None), "{report:#}");
    assert_eq!(dec(&report["total"]["total"]["amount"]), expect(None).iter().sum::<Decimal>());
    assert_eq!(report["total"]["invoiceCount"], 11);
    // The boundaries, spelled out: 0 and -3 current; 1 and 30; 31 and 60; 61 and 90; 91.
    assert_eq!(buckets_of(&report["total"]), [d("203.00"), d("251.00"), d("260.00"), d("290.00"), d("691.00")]);

    // By client, most owed first, one per page.
    let clients = &report["clients"];
    assert_eq!((clients["totalCount"].as_i64(), clients["pageInfo"]["hasNextPage"].as_bool()), (Some(2), Some(true)));
    let first = &clients["edges"][0]["node"];
    assert_eq!((first["client"]["id"].as_str(), buckets_of(&first["buckets"])), (Some(ann.as_str()), expect(Some(&ann))));
    let next = viewer.ok(&aged_query(), json!({"asOf": as_of.to_string(), "first": 1, "after": clients["pageInfo"]["endCursor"]})).await;
    let clients = &next["agedReceivables"]["clients"];
    assert_eq!(clients["pageInfo"]["hasNextPage"], false);
    let second = &clients["edges"][0]["node"];
    assert_eq!((second["client"]["id"].as_str(), buckets_of(&second["buckets"])), (Some(bo.as_str()), expect(Some(&bo))));

    let nzd = viewer.ok(&aged_query(), json!({"asOf": as_of.to_string(), "currency": "NZD"})).await;
    assert_eq!(buckets_of(&nzd["agedReceivables"]["total"]), [Decimal::ZERO, d("70.00"), Decimal::ZERO, Decimal::ZERO, Decimal::ZERO]);
    assert_eq!(nzd["agedReceivables"]["total"]["current"]["currency"], "NZD");

    // Invoices by status: every one of them is past due today but the draft, the paid and the
    // void one; the tenant's today decides (I4).
    let data = viewer.ok("{ invoiceTotals { status currency count total { amount } balance { amount } } }", json!({})).await;
    let totals: BTreeMap<(String, String), (i64, Decimal, Decimal)> = data["invoiceTotals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| ((t["status"].as_str().unwrap().to_owned(), t["currency"].as_str().unwrap().to_owned()), (t["count"].as_i64().unwrap(), dec(&t["total"]["amount"]), dec(&t["balance"]["amount"]))))
        .collect();
    let owed: Decimal = open.iter().map(|(_, _, left)| *left).sum();
    let face: Decimal = [0i64, 3, 1, 30, 31, 60, 61, 90, 91].iter().map(|days| d("100.00") + Decimal::from(*days)).sum::<Decimal>() + d("520.00");
    let key = |status: &str, currency: &str| (status.to_owned(), currency.to_owned());
    assert_eq!(totals.get(&key("OVERDUE", "AUD")), Some(&(11, face, owed)), "{totals:?}");
    assert_eq!(totals.get(&key("OVERDUE", "NZD")), Some(&(1, d("70.00"), d("70.00"))));
    assert_eq!(totals.get(&key("PAID", "AUD")), Some(&(1, d("45.00"), Decimal::ZERO)));
    assert_eq!(totals.get(&key("VOID", "AUD")), Some(&(1, d("50.00"), Decimal::ZERO)), "a void invoice owes nothing (I7)");
    assert_eq!(totals.get(&key("DRAFT", "AUD")), Some(&(1, d("60.00"), Decimal::ZERO)));
    assert_eq!(totals.len(), 5, "{totals:?}");
}

#[tokio::test]
async fn b1_client_accounts_list_owing_and_credit_ordered_by_either_amount_and_paged() {
    Box::pin(scenario_b1_client_accounts_list_owing_and_credit_ordered_by_either_amount_and_paged()).await
}

async fn scenario_b1_client_accounts_list_owing_and_credit_ordered_by_either_amount_and_paged() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let loc = seed.location.clone();
    let cash = methods(&app).await["Cash"].clone();
    let mut clients = Vec::new();
    for name in ["C1", "C2", "C3", "C4"] {
        clients.push(create(&app, &format!("mutation {{ createClient(input: {{name: \"{name}\"}}) {{ id }} }}")).await);
    }
    let due = day("2026-12-31");
    // C1 owes 300 and holds nothing.
    invoice(&app, &clients[0], &loc, "300.00", due, "AUD").await;
    // C2 owes 100 (of 150, part paid) and holds 50 (80 less a 30 refund); a void payment is no credit.
    let part = invoice(&app, &clients[1], &loc, "150.00", due, "AUD").await;
    pay(&app, &part, &cash, "50.00", "2026-06-01", None).await;
    let held = record(&app, &clients[1], &loc, &cash, None, "80.00", "AUD").await;
    refund(&app, &held, "30.00", None).await;
    let voided = record(&app, &clients[1], &loc, &cash, None, "999.00", "AUD").await;
    void_payment(&app, &voided).await;
    // C3 holds 200 (250 paid onto a 50.00 invoice) and owes nothing; credit in NZD is not AUD credit.
    let small = invoice(&app, &clients[2], &loc, "50.00", due, "AUD").await;
    pay(&app, &small, &cash, "250.00", "2026-06-01", None).await;
    record(&app, &clients[2], &loc, &cash, None, "500.00", "NZD").await;
    // C4 paid exactly: neither owes nor holds, so it is not listed.
    let exact = invoice(&app, &clients[3], &loc, "10.00", due, "AUD").await;
    pay(&app, &exact, &cash, "10.00", "2026-06-01", None).await;

    let expected = [("C1", d("300.00"), Decimal::ZERO), ("C2", d("100.00"), d("50.00")), ("C3", Decimal::ZERO, d("200.00"))];
    let name_of = |id: &str| ["C1", "C2", "C3", "C4"][clients.iter().position(|c| c == id).unwrap()];
    let viewer = app.viewer();
    for (order, names) in [("OWING_DESC", ["C1", "C2", "C3"]), ("OWING_ASC", ["C3", "C2", "C1"]), ("CREDIT_DESC", ["C3", "C2", "C1"]), ("CREDIT_ASC", ["C1", "C2", "C3"])] {
        // Two pages: 2 rows, then the rest after the cursor.
        let first = viewer.ok(ACCOUNTS, json!({"order": order, "first": 2})).await;
        let connection = &first["clientAccounts"];
        assert_eq!((connection["totalCount"].as_i64(), connection["pageInfo"]["hasNextPage"].as_bool()), (Some(3), Some(true)), "{order}");
        let rest = viewer.ok(ACCOUNTS, json!({"order": order, "first": 2, "after": connection["pageInfo"]["endCursor"]})).await;
        assert_eq!(rest["clientAccounts"]["pageInfo"]["hasNextPage"], false, "{order}");
        let nodes: Vec<Value> = [connection, &rest["clientAccounts"]]
            .iter()
            .flat_map(|c| c["edges"].as_array().unwrap().iter().map(|e| e["node"].clone()).collect::<Vec<_>>())
            .collect();
        let listed: Vec<(&str, Decimal, Decimal)> =
            nodes.iter().map(|n| (name_of(n["client"]["id"].as_str().unwrap()), dec(&n["owing"]["amount"]), dec(&n["unallocatedCredit"]["amount"]))).collect();
        let wanted: Vec<(&str, Decimal, Decimal)> = names.iter().map(|name| *expected.iter().find(|e| e.0 == *name).unwrap()).collect();
        assert_eq!(listed, wanted, "ordered {order}");
    }
    let nzd = viewer.ok(ACCOUNTS, json!({"order": "CREDIT_DESC", "currency": "NZD"})).await;
    let edges = nzd["clientAccounts"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!((name_of(edges[0]["node"]["client"]["id"].as_str().unwrap()), dec(&edges[0]["node"]["unallocatedCredit"]["amount"])), ("C3", d("500.00")));
}

#[tokio::test]
async fn a2_a3_viewers_read_reports_and_another_tenant_sees_nothing_of_them() {
    Box::pin(scenario_a2_a3_viewers_read_reports_and_another_tenant_sees_nothing_of_them()).await
}

async fn scenario_a2_a3_viewers_read_reports_and_another_tenant_sees_nothing_of_them() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = methods(&app).await["Cash"].clone();
    let today = chrono::Utc::now().date_naive();
    record(&app, &seed.client, &seed.location, &cash, Some("2026-01-05"), "10.00", "AUD").await;
    invoice(&app, &seed.client, &seed.location, "40.00", day("2026-01-01"), "AUD").await;
    let queries = [
        (TAKINGS.to_owned(), json!({"from": "2026-01-01", "to": "2026-01-31", "by": "DAY"})),
        (aged_query(), json!({"asOf": today.to_string()})),
        (ACCOUNTS.to_owned(), json!({"order": "OWING_DESC"})),
        ("{ invoiceTotals { status count } }".to_owned(), json!({})),
    ];
    let viewer = app.viewer();
    let ours: Vec<Value> = futures::future::join_all(queries.iter().map(|(q, v)| viewer.ok(q, v.clone()))).await;
    assert_eq!(ours[0]["takings"]["rows"].as_array().unwrap().len(), 1);
    assert_eq!(dec(&ours[1]["agedReceivables"]["total"]["over90"]["amount"]), d("40.00"));
    assert_eq!(dec(&ours[1]["agedReceivables"]["total"]["total"]["amount"]), d("40.00"));
    assert_eq!(ours[2]["clientAccounts"]["totalCount"], 1);
    assert_eq!(ours[3]["invoiceTotals"].as_array().unwrap().len(), 1);

    let stranger = Caller { app: &app, token: Some(app.token_for(&format!("other{}", uuid::Uuid::new_v4().simple()), Role::Viewer)) };
    let theirs: Vec<Value> = futures::future::join_all(queries.iter().map(|(q, v)| stranger.ok(q, v.clone()))).await;
    assert_eq!(theirs[0]["takings"]["rows"], json!([]));
    assert_eq!(theirs[0]["takings"]["totals"], json!([]));
    assert_eq!(dec(&theirs[1]["agedReceivables"]["total"]["total"]["amount"]), Decimal::ZERO);
    assert_eq!(theirs[1]["agedReceivables"]["clients"]["totalCount"], 0);
    assert_eq!(theirs[2]["clientAccounts"]["totalCount"], 0);
    assert_eq!(theirs[3]["invoiceTotals"], json!([]));
}

#[tokio::test]
async fn reports_refuse_bad_input_with_a_stable_code() {
    Box::pin(scenario_reports_refuse_bad_input_with_a_stable_code()).await
}

async fn scenario_reports_refuse_bad_input_with_a_stable_code() {
    let app = TestApp::spawn().await;
    let viewer = app.viewer();
    let cases = [
        (TAKINGS.to_owned(), json!({"from": "2026-03-02", "to": "2026-03-01", "by": "DAY"}), "INVALID_INPUT", "to before from"),
        (TAKINGS.to_owned(), json!({"from": "2025-01-01", "to": "2026-01-02", "by": "DAY"}), "INVALID_INPUT", "367 days"),
        (aged_query(), json!({"currency": "XYZ"}), "UNKNOWN_CURRENCY", "a currency that does not exist"),
        (aged_query(), json!({"after": "bm90IGEgY3Vyc29y"}), "INVALID_INPUT", "a cursor from nowhere"),
        (ACCOUNTS.to_owned(), json!({"order": "OWING_DESC", "first": 0}), "INVALID_INPUT", "an empty page"),
        (ACCOUNTS.to_owned(), json!({"order": "OWING_DESC", "after": "Y2xpZW50QWNjb3VudDp4L3k"}), "INVALID_INPUT", "a cursor without an amount"),
    ];
    for (query, variables, code, why) in cases {
        let response = viewer.post(&query, variables).await;
        assert_eq!(response.error_code(), Some(code), "{why}: {:#}", response.body);
    }
    // A year, leap day included, is the longest range.
    viewer.ok(TAKINGS, json!({"from": "2024-01-01", "to": "2024-12-31", "by": "DAY"})).await;
}

/// The database queries the server has sent so far, from /metrics.
async fn db_queries(app: &TestApp) -> u64 {
    let text = app.http.get(app.url("/metrics")).bearer_auth(app.token(Role::Admin)).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with("settle_db_queries_total ")).unwrap_or_else(|| panic!("no query counter in:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_page_of_invoices_with_clients_allocations_and_payments_costs_the_same_queries_for_10_or_100() {
    Box::pin(scenario_a_page_of_invoices_with_clients_allocations_and_payments_costs_the_same_queries_for_10_or_100()).await
}

async fn scenario_a_page_of_invoices_with_clients_allocations_and_payments_costs_the_same_queries_for_10_or_100() {
    // No reconciler sweep during the measurements.
    let app = TestApp::spawn_with(|settings| settings.reconcile_interval_ms = 3_600_000).await;
    let seed = app.seed().await;
    let cash = methods(&app).await["Cash"].clone();
    let other = create(&app, "mutation { createClient(input: {name: \"Other\"}) { id } }").await;
    // 100 invoices of two clients, each finalized with a part payment; every tenth also has a
    // credit note and a second payment, part of it refunded.
    for i in 0..100 {
        let client = if i % 2 == 0 { &seed.client } else { &other };
        let id = draft(&app, client, &seed.location, "40.00", day("2026-12-31"), "AUD").await;
        let finalized = app
            .billing()
            .ok(
                "mutation($id: ID!, $input: FinalizeInvoiceInput!, $key: String!) { finalizeInvoice(id: $id, input: $input, idempotencyKey: $key) {
                    invoice { allocations { paymentId } } } }",
                json!({"id": id, "key": new_key(), "input": {"paymentOption": "APPLY_PAYMENT", "payment": {"methodId": cash, "amount": "30.00"}}}),
            )
            .await;
        assert!(finalized["finalizeInvoice"]["invoice"]["allocations"][0]["paymentId"].is_string(), "{finalized}");
        if i % 10 == 0 {
            // 40.00 less 30.00 paid and 5.00 credited leaves 5.00: a payment of 10.00 keeps
            // 5.00 as credit, of which 1.00 is refunded.
            credit_note(&app, &id, "5.00").await;
            let second = pay(&app, &id, &cash, "10.00", "2026-06-01", None).await;
            refund(&app, &second, "1.00", None).await;
        }
    }

    let page = "query($n: Int!) { invoices(first: $n) { edges { node { number client { name } location { name } balance { amount }
        allocations { number amount { amount } payment { number client { name } method { name } location { name }
            allocations { amount { amount } } refunds { amount { amount } } } }
        creditNotes { number } } } } }";
    let viewer = app.viewer();
    let mut cost = BTreeMap::new();
    for n in [10, 100, 10, 100] {
        let before = db_queries(&app).await;
        let data = viewer.ok(page, json!({"n": n})).await;
        let after = db_queries(&app).await;
        let edges = data["invoices"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), n as usize);
        assert!(edges.iter().all(|e| e["node"]["allocations"][0]["payment"]["method"]["name"] == "Cash"), "the page reads through to the payments' methods");
        if n == 100 {
            assert_eq!(edges.iter().filter(|e| e["node"]["creditNotes"].as_array().unwrap().len() == 1).count(), 10);
            assert_eq!(edges.iter().filter(|e| e["node"]["allocations"].as_array().unwrap().len() == 2).count(), 10);
        }
        // The fewest of the runs: a run may also read the tenant's settings once they are stale.
        let least = cost.entry(n).or_insert(u64::MAX);
        *least = (*least).min(after - before);
    }
    assert_eq!(cost[&10], cost[&100], "queries for 10 and for 100 invoices: {cost:?}");
    assert!(cost[&100] <= 20, "a page costs a few queries, not one per row: {cost:?}");
}
