//! The dashboard (/dashboard) in a real browser: Debian's chromium, driven by playwright-core
//! (tests/browser/dashboard.mjs), against the real server seeded through the real API. What the
//! page shows is compared with what the API answers for the same tenant at the same moment, so
//! every expected figure comes from the API, never from a constant here.
//!
//! tests/browser/setup.sh installs chromium and playwright-core when they are missing (it is
//! quick when they are there), so `cargo test` needs nothing installed by hand.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use settle::auth::Role;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::browser::{Browser, browser_dir};
use crate::events::{method, records_after};
use crate::helpers::*;

// Each test runs its scenario boxed: a #[tokio::test] keeps the test's future on the test
// thread's stack, which the server under test shares (docs/development.md).

/// The ledger event types the feed shows (dashboard.js, FEED_TYPES).
const FEED_TYPES: [&str; 6] =
    ["PAYMENT_RECORDED", "PAYMENT_REFUNDED", "REFUND_SETTLED", "PAYMENT_VOIDED", "INVOICE_VOIDED", "CREDIT_NOTE_VOIDED"];

/// How long after its commit a payment may take to appear in the live feed.
const FEED_LATENCY_MAX: Duration = Duration::from_secs(2);

/// Opens the dashboard at `url` and signs in with `token`, as a person does.
async fn open(browser: &mut Browser, url: &str, token: &str) -> Value {
    browser.run(json!({"cmd": "open", "url": url, "token": token})).await
}

/// A TCP relay in front of the server that a test can cut, as a dropped network does: the
/// browser reaches Settle only through it.
struct Relay {
    url: String,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (accepting, relayed) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    // Down: the connection is closed at once, as an unreachable server would be.
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(server).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                relayed.lock().unwrap().push(task.abort_handle());
            }
        });
        Relay { url, up, connections }
    }

    /// Drops every open connection and refuses new ones until [`Relay::restore`].
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn server_address(app: &TestApp) -> SocketAddr {
    app.base_url.trim_start_matches("http://").parse().unwrap()
}

fn dec(value: &Value) -> Decimal {
    value.as_str().unwrap_or_else(|| panic!("an amount string, not {value}")).parse().unwrap()
}

fn day(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

async fn record_payment(caller: &Caller<'_>, input: Value) -> Value {
    let data = caller
        .ok(
            "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id number date } } }",
            json!({"input": input, "key": new_key()}),
        )
        .await;
    data["recordPayment"]["payment"].clone()
}

async fn pay_invoice(caller: &Caller<'_>, invoice: &str, input: Value) -> Value {
    let data = caller
        .ok(
            "mutation($id: ID!, $input: PayInvoiceInput!, $key: String!) { payInvoice(id: $id, input: $input, idempotencyKey: $key) { payment { id number } } }",
            json!({"id": invoice, "input": input, "key": new_key()}),
        )
        .await;
    data["payInvoice"]["payment"].clone()
}

async fn refund(caller: &Caller<'_>, payment: &str, amount: &str) {
    caller
        .ok(
            "mutation($id: ID!, $amount: Amount!, $key: String!) { refundPayment(id: $id, input: {amount: $amount}, idempotencyKey: $key) { refund { id } } }",
            json!({"id": payment, "amount": amount, "key": new_key()}),
        )
        .await;
}

/// An OPEN invoice of one untaxed line of `amount` due on `due`; returns (id, number).
async fn invoice_due(app: &TestApp, client: &str, location: &str, amount: &str, due: NaiveDate) -> (String, String) {
    let data = app
        .billing()
        .ok(
            "mutation($input: InvoiceInput!, $key: String!) { createInvoice(input: $input, idempotencyKey: $key) { invoice { id } } }",
            json!({"key": new_key(), "input": {"clientId": client, "locationId": location,
                "issueDate": (due - chrono::Duration::days(7)).to_string(), "dueDate": due.to_string(),
                "lines": [{"description": "Consultation", "unitPrice": amount}]}}),
        )
        .await;
    let id = data["createInvoice"]["invoice"]["id"].as_str().unwrap().to_owned();
    let invoice = app.finalize(&id).await;
    (id, invoice["number"].as_str().unwrap().to_owned())
}

async fn create_client(app: &TestApp, name: &str) -> String {
    let data = app.admin().ok("mutation($name: String!) { createClient(input: {name: $name}) { id } }", json!({"name": name})).await;
    data["createClient"]["id"].as_str().unwrap().to_owned()
}

/// (label, currency, received, refunded, net) of takings rows as the API answers them.
fn takings_answered(rows: &Value, label: impl Fn(&Value) -> String) -> Vec<(String, String, String, String, String)> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let amount = |field: &str| row[field]["amount"].as_str().unwrap().to_owned();
            (label(row), row["currency"].as_str().unwrap().to_owned(), amount("received"), amount("refunded"), amount("net"))
        })
        .collect()
}

/// The same of takings rows as the page shows them.
fn takings_shown(rows: &Value, label: &str) -> Vec<(String, String, String, String, String)> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let amount = |field: &str| {
                assert_eq!(row[field]["currency"], row["currency"], "shown in the row's currency: {row}");
                row[field]["amount"].as_str().unwrap().to_owned()
            };
            let label = row[label].as_str().unwrap_or_default().to_owned();
            (label, row["currency"].as_str().unwrap().to_owned(), amount("received"), amount("refunded"), amount("net"))
        })
        .collect()
}

const TAKINGS: &str = "query($from: Date!, $to: Date!, $by: TakingsGroupBy!) { takings(from: $from, to: $to, groupBy: $by) {
    rows { day method { name } currency received { amount } refunded { amount } net { amount } }
    totals { currency received { amount } refunded { amount } net { amount } } } }";

const AGED: &str = "{ agedReceivables { asOf currency
    total { current { amount } days1To30 { amount } days31To60 { amount } days61To90 { amount } over90 { amount } total { amount } }
    clients(first: 10) { edges { node { client { id name } buckets { current { amount } total { amount } invoiceCount } } } } } }";

const CREDIT: &str = "{ clientAccounts(orderBy: CREDIT_DESC, first: 20) { edges { node { client { id name } unallocatedCredit { amount } } } } }";

/// Asserts that every figure the page shows equals what the API answers now; returns the API's
/// net takings of today, for later checks.
async fn assert_figures_match_the_api(viewer: &Caller<'_>, shown: &Value, today: NaiveDate) -> String {
    assert_eq!(shown["loadError"], "", "the page loaded its figures: {shown:#}");
    assert_eq!(shown["day"], today.to_string(), "today in the practice's timezone");

    // Today's takings by method, with the totals.
    let data = viewer.ok(TAKINGS, json!({"from": today.to_string(), "to": today.to_string(), "by": "METHOD"})).await;
    let answered = takings_answered(&data["takings"]["rows"], |row| row["method"]["name"].as_str().unwrap().to_owned());
    assert!(answered.len() >= 2, "the scenario takes money by two methods today: {answered:?}");
    assert_eq!(takings_shown(&shown["today"], "method"), answered, "today's takings by method");
    let totals = takings_answered(&data["takings"]["totals"], |_| String::new());
    assert_eq!(takings_shown(&shown["todayTotals"], "none"), totals, "today's totals");
    let today_net = totals[0].4.clone();

    // The last 30 days, by day: the table and the chart.
    let from = today - chrono::Duration::days(29);
    let data = viewer.ok(TAKINGS, json!({"from": from.to_string(), "to": today.to_string(), "by": "DAY"})).await;
    let answered = takings_answered(&data["takings"]["rows"], |row| row["day"].as_str().unwrap().to_owned());
    assert!(answered.len() >= 3, "the scenario takes money on several days: {answered:?}");
    assert_eq!(takings_shown(&shown["trend"], "day"), answered, "takings by day over 30 days");
    let bars = shown["trendBars"][0].as_array().expect("the chart of 30 days is drawn");
    assert_eq!(bars.len(), 30, "one bar a day: {bars:?}");
    for (day_text, _, _, _, net) in &answered {
        let index = (day(day_text) - from).num_days() as usize;
        assert_eq!(bars[index].as_f64().unwrap(), net.parse::<f64>().unwrap(), "the bar of {day_text}");
    }

    // Aged receivables: the buckets, the chart and the clients who owe most.
    let data = viewer.ok(AGED, json!({})).await;
    let aged = &data["agedReceivables"];
    assert_eq!(shown["agedAsOf"], aged["asOf"]);
    let buckets = ["current", "days1To30", "days31To60", "days61To90", "over90", "total"];
    for (index, bucket) in buckets.iter().enumerate() {
        assert_eq!(shown["aged"][bucket]["amount"], aged["total"][bucket]["amount"], "aged receivables, {bucket}: {shown:#}");
        assert_eq!(shown["aged"][bucket]["currency"], aged["currency"]);
        if *bucket != "total" {
            assert_eq!(shown["agedBars"][index].as_f64().unwrap(), dec(&aged["total"][bucket]["amount"]).to_string().parse::<f64>().unwrap());
        }
    }
    let nonzero = buckets[..5].iter().filter(|bucket| !dec(&aged["total"][**bucket]["amount"]).is_zero()).count();
    assert!(nonzero >= 4, "the scenario fills most buckets: {aged:#}");
    let answered: Vec<Value> = aged["clients"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| {
            let node = &edge["node"];
            let past_due = dec(&node["buckets"]["total"]["amount"]) - dec(&node["buckets"]["current"]["amount"]);
            json!([node["client"]["id"], node["client"]["name"], node["buckets"]["total"]["amount"], past_due, node["buckets"]["invoiceCount"]])
        })
        .collect();
    let owing: Vec<Value> = shown["owing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| json!([row["clientId"], row["name"], row["owing"]["amount"], dec(&row["pastDue"]["amount"]), row["invoices"]]))
        .collect();
    assert!(answered.len() >= 3, "several clients owe: {answered:?}");
    assert_eq!(owing, answered, "the clients who owe most, most first (id, name, owing, past due, invoices)");

    // Clients holding unallocated credit.
    let data = viewer.ok(CREDIT, json!({})).await;
    let answered: Vec<Value> = data["clientAccounts"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|edge| !dec(&edge["node"]["unallocatedCredit"]["amount"]).is_zero())
        .map(|edge| json!([edge["node"]["client"]["id"], edge["node"]["client"]["name"], edge["node"]["unallocatedCredit"]["amount"]]))
        .collect();
    let credit: Vec<Value> =
        shown["credit"].as_array().unwrap().iter().map(|row| json!([row["clientId"], row["name"], row["credit"]["amount"]])).collect();
    assert!(!answered.is_empty(), "someone holds credit");
    assert_eq!(credit, answered, "clients with unallocated credit, most first");
    today_net
}

/// The positions of the tenant's changes the feed is to show, newest first, as the API lists them.
async fn feed_positions_answered(viewer: &Caller<'_>) -> Vec<i64> {
    let mut positions: Vec<i64> = records_after(viewer, 0)
        .await
        .iter()
        .filter(|record| record["events"].as_array().unwrap().iter().any(|event| FEED_TYPES.contains(&event["type"].as_str().unwrap())))
        .map(|record| record["position"].as_i64().unwrap())
        .collect();
    positions.reverse();
    positions
}

fn feed_positions_shown(feed: &Value) -> Vec<i64> {
    feed.as_array().unwrap().iter().map(|item| item["position"].as_i64().unwrap()).collect()
}

const PAYMENT_DETAIL: &str = "query($id: ID!, $record: String!) {
    payment(id: $id) { amount { amount } unallocated { amount } status
        allocations { id active amount { amount } } refunds { id outcome amount { amount } } }
    auditEvents(first: 50, recordId: $record) { edges { node { id } } } }";

const INVOICE_DETAIL: &str = "query($id: ID!, $record: String!) {
    invoice(id: $id) { balance { amount } allocations { id active amount { amount } } creditNotes { id status total { amount } } }
    auditEvents(first: 50, recordId: $record) { edges { node { id } } } }";

fn audit_ids(data: &Value) -> Value {
    Value::Array(data["auditEvents"]["edges"].as_array().unwrap().iter().map(|edge| edge["node"]["id"].clone()).collect())
}

fn allocations_answered(record: &Value) -> Value {
    Value::Array(
        record["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| json!({"id": a["id"], "active": a["active"], "amount": a["amount"]["amount"]}))
            .collect(),
    )
}

fn allocations_shown(detail: &Value) -> Value {
    Value::Array(
        detail["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| json!({"id": a["id"], "active": a["active"], "amount": a["amount"]["amount"]}))
            .collect(),
    )
}

const PREVIEW: &str = "preview { invoices { invoiceId balanceBefore { amount } balanceAfter { amount } }
    payments { paymentId unallocatedBefore { amount } unallocatedAfter { amount } } }";

/// A preview's changes as (record id, before, after) in the API's order.
fn preview_answered(preview: &Value) -> Vec<(String, String, String)> {
    let invoices = preview["invoices"].as_array().unwrap().iter().map(|i| {
        (i["invoiceId"].as_str().unwrap().to_owned(), i["balanceBefore"]["amount"].to_string(), i["balanceAfter"]["amount"].to_string())
    });
    let payments = preview["payments"].as_array().unwrap().iter().map(|p| {
        (p["paymentId"].as_str().unwrap().to_owned(), p["unallocatedBefore"]["amount"].to_string(), p["unallocatedAfter"]["amount"].to_string())
    });
    invoices.chain(payments).collect()
}

fn preview_shown(shown: &Value) -> Vec<(String, String, String)> {
    let invoices = shown["invoices"].as_array().unwrap().iter().map(|i| {
        (i["invoiceId"].as_str().unwrap().to_owned(), i["balanceBefore"].to_string(), i["balanceAfter"].to_string())
    });
    let payments = shown["payments"].as_array().unwrap().iter().map(|p| {
        (p["paymentId"].as_str().unwrap().to_owned(), p["unallocatedBefore"].to_string(), p["unallocatedAfter"].to_string())
    });
    invoices.chain(payments).collect()
}

#[tokio::test]
async fn dashboard_shows_the_apis_figures_and_a_new_payment_within_2_seconds() {
    Box::pin(scenario_dashboard_shows_the_apis_figures_and_a_new_payment_within_2_seconds()).await
}

async fn scenario_dashboard_shows_the_apis_figures_and_a_new_payment_within_2_seconds() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let (billing, viewer) = (app.billing(), app.viewer());
    let (cash, eftpos) = (method(&viewer, "Cash").await, method(&viewer, "EFTPOS").await);
    let ann = seed.client.clone();
    let (bob, cara, dev) = (create_client(&app, "Bob Stone").await, create_client(&app, "Cara Diaz").await, create_client(&app, "Dev Patel").await);
    let location = seed.location.clone();

    // Money of today (the practice's today: a payment without a date takes it), of earlier days,
    // refunded, voided, held as credit; invoices in every age bucket, one with a credit note.
    let first = record_payment(&billing, json!({"clientId": bob, "locationId": location, "methodId": cash, "amount": "120.00"})).await;
    let today = day(first["date"].as_str().unwrap());
    refund(&billing, first["id"].as_str().unwrap(), "20.00").await;
    let (ann_current, _) = invoice_due(&app, &ann, &location, "300.00", today + chrono::Duration::days(10)).await;
    let (ann_overdue, ann_overdue_number) = invoice_due(&app, &ann, &location, "220.00", today - chrono::Duration::days(70)).await;
    invoice_due(&app, &bob, &location, "150.00", today - chrono::Duration::days(20)).await;
    let (cara_invoice, cara_invoice_number) = invoice_due(&app, &cara, &location, "480.00", today - chrono::Duration::days(45)).await;
    invoice_due(&app, &dev, &location, "90.00", today - chrono::Duration::days(120)).await;
    // Ann pays more than her current invoice: an allocation, then credit, part of it refunded.
    let ann_payment = pay_invoice(&billing, &ann_current, json!({"methodId": eftpos, "amount": "350.00"})).await;
    let ann_payment_id = ann_payment["id"].as_str().unwrap().to_owned();
    refund(&billing, &ann_payment_id, "10.00").await;
    pay_invoice(&billing, &cara_invoice, json!({"methodId": cash, "amount": "80.00", "date": (today - chrono::Duration::days(2)).to_string()})).await;
    billing
        .ok(
            "mutation($id: ID!, $key: String!) { issueCreditNote(invoiceId: $id, idempotencyKey: $key, input: {reason: \"Goodwill\", lines: [{lineIndex: 0, amount: \"30.00\"}]}) { creditNote { id } } }",
            json!({"id": cara_invoice, "key": new_key()}),
        )
        .await;
    record_payment(&billing, json!({"clientId": dev, "locationId": location, "methodId": eftpos, "amount": "75.25", "date": (today - chrono::Duration::days(5)).to_string()})).await;
    let voided = record_payment(&billing, json!({"clientId": cara, "locationId": location, "methodId": eftpos, "amount": "60.00"})).await;
    billing
        .ok("mutation($id: ID!, $key: String!) { voidPayment(id: $id, idempotencyKey: $key) { payment { id } } }", json!({"id": voided["id"], "key": new_key()}))
        .await;

    let mut browser = Browser::start("dashboard.mjs").await;
    // BILLING, so the dry-run previews are allowed; the page changes nothing all the same.
    let token = app.token(Role::Billing);
    let opened = open(&mut browser, &app.base_url, &token).await;
    assert_eq!(opened["status"], 200);
    assert_eq!(opened["signInVisible"], true, "the page asks for a token first: {opened}");
    assert_eq!(opened["focusedAtStart"], "token", "the token field has the keyboard focus: {opened}");
    assert_eq!(opened["tokenInSessionStorage"], true, "the token is kept in the tab's session storage: {opened}");
    assert_eq!(opened["localStorageEntries"], 0, "and nowhere that outlives the tab: {opened}");

    let shown = browser.run(json!({"cmd": "figures"})).await;
    let today_net = assert_figures_match_the_api(&viewer, &shown, today).await;

    // The live feed: what it shows after sign-in is the API's list of such changes.
    let answered = feed_positions_answered(&viewer).await;
    browser.run(json!({"cmd": "waitFeedPosition", "position": answered[0]})).await;
    let feed = browser.run(json!({"cmd": "feed"})).await;
    assert_eq!(feed_positions_shown(&feed), answered, "the feed's changes, newest first: {feed:#}");

    // A payment recorded through the API appears in the feed within 2 s of its commit, and
    // today's takings follow without a reload. The page notes when it showed the payment, so
    // the time the test takes to ask the browser is not counted.
    browser.run(json!({"cmd": "watchFeed"})).await;
    let live = record_payment(&billing, json!({"clientId": cara, "locationId": location, "methodId": cash, "amount": "42.00"})).await;
    let committed = unix_millis_now();
    let number = live["number"].as_str().unwrap();
    let seen = browser.run(json!({"cmd": "waitFeed", "paymentId": live["id"], "timeoutMs": 10000})).await;
    let shown_at = seen["shownAt"].as_i64().unwrap_or_else(|| panic!("the page noted when it showed {number}: {seen}"));
    let latency = Duration::from_millis(shown_at.saturating_sub(committed).max(0) as u64);
    assert!(latency < FEED_LATENCY_MAX, "{number} appeared in the feed {latency:?} after its commit");
    browser.run(json!({"cmd": "waitFeed", "paymentNumber": number})).await;
    let feed = browser.run(json!({"cmd": "feed"})).await;
    assert_eq!(feed[0]["payments"][0], number, "the newest item first: {feed:#}");
    assert_eq!(feed[0]["amounts"][0], "42.00");
    let expected_net = (dec(&json!(today_net)) + Decimal::new(4200, 2)).to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = browser.run(json!({"cmd": "figures"})).await;
        if shown["todayTotals"][0]["net"]["amount"] == expected_net.as_str() {
            assert_figures_match_the_api(&viewer, &shown, today).await;
            break;
        }
        assert!(Instant::now() < deadline, "today's net takings did not become {expected_net}: {shown:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A payment's panel, opened from its link in the feed: allocations, refunds, audit events.
    let ann_number = ann_payment["number"].as_str().unwrap();
    let detail = browser.run(json!({"cmd": "openDetail", "kind": "payment", "number": ann_number})).await;
    let answered = viewer.ok(PAYMENT_DETAIL, json!({"id": ann_payment_id, "record": format!("payment:{ann_payment_id}")})).await;
    let payment = &answered["payment"];
    assert_eq!(detail["facts"]["amount"]["amount"], payment["amount"]["amount"], "{detail:#}");
    assert_eq!(detail["facts"]["unallocated"]["amount"], payment["unallocated"]["amount"], "{detail:#}");
    assert_eq!(detail["facts"]["status"], payment["status"]);
    assert_eq!(allocations_shown(&detail), allocations_answered(payment), "the payment's allocations");
    let refunds: Vec<Value> = payment["refunds"].as_array().unwrap().iter().map(|r| json!([r["id"], r["outcome"], r["amount"]["amount"]])).collect();
    let refunds_shown: Vec<Value> =
        detail["refunds"].as_array().unwrap().iter().map(|r| json!([r["id"], r["outcome"], r["amount"]["amount"]])).collect();
    assert!(!refunds.is_empty());
    assert_eq!(refunds_shown, refunds, "the payment's refunds");
    assert_eq!(Value::Array(detail["auditEvents"].as_array().unwrap().clone()), audit_ids(&answered), "the payment's audit events");
    assert_eq!(detail["forms"], json!(["refund", "apply"]), "previews of a refund and of applying the payment's credit");

    // Its dry-run previews show what the API's dry-run answers, and change nothing.
    let shown = browser.run(json!({"cmd": "preview", "form": "refund", "amount": "15.00"})).await;
    assert_eq!(shown["state"], "done", "{shown:#}");
    let data = billing
        .ok(
            &format!("mutation($id: ID!, $key: String!) {{ refundPayment(id: $id, input: {{amount: \"15.00\"}}, idempotencyKey: $key, dryRun: true) {{ {PREVIEW} }} }}"),
            json!({"id": ann_payment_id, "key": new_key()}),
        )
        .await;
    assert_eq!(preview_shown(&shown), preview_answered(&data["refundPayment"]["preview"]), "the refund preview: {shown:#}");
    let shown = browser.run(json!({"cmd": "preview", "form": "apply"})).await;
    assert_eq!(shown["state"], "done", "{shown:#}");
    assert_eq!(shown["choice"], ann_overdue.as_str(), "Ann's one open invoice is offered: {shown:#}");
    let data = billing
        .ok(
            &format!("mutation($id: ID!, $invoice: ID!, $amount: Amount!, $key: String!) {{ applyPayment(id: $id, invoiceId: $invoice, amount: $amount, idempotencyKey: $key, dryRun: true) {{ {PREVIEW} }} }}"),
            json!({"id": ann_payment_id, "invoice": ann_overdue, "amount": shown["amount"], "key": new_key()}),
        )
        .await;
    assert_eq!(shown["amount"], payment["unallocated"]["amount"], "the most the payment can give: all of its credit");
    assert_eq!(preview_shown(&shown), preview_answered(&data["applyPayment"]["preview"]), "the apply preview: {shown:#}");
    let after = viewer.ok(PAYMENT_DETAIL, json!({"id": ann_payment_id, "record": format!("payment:{ann_payment_id}")})).await;
    assert_eq!(after, answered, "previews changed nothing");
    let overdue = viewer.ok("query($id: ID!) { invoice(id: $id) { number balance { amount } } }", json!({"id": ann_overdue})).await;
    assert_eq!(overdue["invoice"]["number"], ann_overdue_number.as_str());
    assert_eq!(overdue["invoice"]["balance"]["amount"], "220.00", "previews changed nothing");
    let screenshots = browser_dir().join("screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let path = screenshots.join("dashboard-payment-panel.png");
    browser.run(json!({"cmd": "screenshot", "path": path, "width": 1280, "height": 900})).await;
    browser.run(json!({"cmd": "closeDetail"})).await;

    // An invoice's panel: allocations, credit notes, audit events.
    let detail = browser.run(json!({"cmd": "openDetail", "kind": "invoice", "number": cara_invoice_number})).await;
    let answered = viewer.ok(INVOICE_DETAIL, json!({"id": cara_invoice, "record": format!("invoice:{cara_invoice}")})).await;
    let invoice = &answered["invoice"];
    assert_eq!(detail["facts"]["balance"]["amount"], invoice["balance"]["amount"], "{detail:#}");
    assert_eq!(allocations_shown(&detail), allocations_answered(invoice), "the invoice's allocations");
    let notes: Vec<Value> = invoice["creditNotes"].as_array().unwrap().iter().map(|c| json!([c["id"], c["status"], c["total"]["amount"]])).collect();
    let notes_shown: Vec<Value> = detail["creditNotes"].as_array().unwrap().iter().map(|c| json!([c["id"], c["status"], c["total"]["amount"]])).collect();
    assert!(!notes.is_empty());
    assert_eq!(notes_shown, notes, "the invoice's credit notes");
    assert_eq!(Value::Array(detail["auditEvents"].as_array().unwrap().clone()), audit_ids(&answered), "the invoice's audit events");
    let closed = browser.run(json!({"cmd": "closeDetail"})).await;
    assert_eq!(closed["hash"], "", "closing the panel leaves its address: {closed}");

    // Accessible basics, and the page fits a desktop and a phone without sideways scrolling.
    let checked = browser.run(json!({"cmd": "accessibility"})).await;
    assert_eq!(checked["unlabelled"], json!([]), "every control has a label: {checked:#}");
    assert_eq!(checked["lowContrast"], json!([]), "all text meets WCAG AA contrast: {checked:#}");
    assert_eq!(checked["unnamedButtons"], json!([]), "every button has a name: {checked:#}");
    assert_eq!(checked["chartsWithoutText"], json!([]), "every chart has a text alternative: {checked:#}");
    for (name, width, height) in [("dashboard-desktop.png", 1280, 900), ("dashboard-phone.png", 390, 844)] {
        let path = screenshots.join(name);
        let taken = browser.run(json!({"cmd": "screenshot", "path": path, "width": width, "height": height})).await;
        assert_eq!(taken["overflowX"], 0, "the page is no wider than a {width} px window: {taken}");
        assert!(std::fs::metadata(&path).is_ok_and(|meta| meta.len() > 10_000), "{} was written", path.display());
    }
    let problems = browser.run(json!({"cmd": "problems"})).await;
    assert_eq!(problems["problems"], json!([]), "no errors in the page's console: {problems:#}");
    browser.close().await;
}

#[tokio::test]
async fn dashboard_feed_reconnects_by_itself_and_resumes_after_its_last_position() {
    Box::pin(scenario_dashboard_feed_reconnects_by_itself_and_resumes_after_its_last_position()).await
}

async fn scenario_dashboard_feed_reconnects_by_itself_and_resumes_after_its_last_position() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let (billing, viewer) = (app.billing(), app.viewer());
    let cash = method(&viewer, "Cash").await;
    let payment = |amount: &str| json!({"clientId": seed.client, "locationId": seed.location, "methodId": cash, "amount": amount});
    let before = record_payment(&billing, payment("10.00")).await;
    let relay = Relay::start(server_address(&app)).await;

    // A VIEWER: everything but the previews.
    let mut browser = Browser::start("dashboard.mjs").await;
    open(&mut browser, &relay.url, &app.token(Role::Viewer)).await;
    browser.run(json!({"cmd": "waitFeed", "paymentNumber": before["number"]})).await;

    // The network drops; money moves meanwhile.
    relay.cut();
    let status = browser.run(json!({"cmd": "waitFeedStatus", "status": "reconnecting"})).await;
    assert!(status["text"].as_str().unwrap().contains("Reconnecting"), "the page says it lost the feed: {status}");
    let missed = record_payment(&billing, payment("20.00")).await;
    refund(&billing, before["id"].as_str().unwrap(), "5.00").await;
    let last = record_payment(&billing, payment("30.00")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    relay.restore();

    // It comes back by itself and shows what it missed, each change once, in order.
    browser.run(json!({"cmd": "waitFeed", "paymentNumber": last["number"], "timeoutMs": 20000})).await;
    browser.run(json!({"cmd": "waitFeedStatus", "status": "live"})).await;
    let feed = browser.run(json!({"cmd": "feed"})).await;
    assert_eq!(feed_positions_shown(&feed), feed_positions_answered(&viewer).await, "every change once, newest first: {feed:#}");
    let shown: Vec<&str> = feed.as_array().unwrap().iter().flat_map(|item| item["payments"].as_array().unwrap()).map(|n| n.as_str().unwrap()).collect();
    assert!(shown.contains(&missed["number"].as_str().unwrap()), "the payment made while disconnected: {feed:#}");
    let refunds = feed.as_array().unwrap().iter().filter(|item| item["kinds"].as_array().unwrap().contains(&json!("refund"))).count();
    assert_eq!(refunds, 1, "the refund made while disconnected, once: {feed:#}");

    // A VIEWER's preview is refused by the API, and the page says why.
    browser.run(json!({"cmd": "openDetail", "kind": "payment", "number": before["number"]})).await;
    let shown = browser.run(json!({"cmd": "preview", "form": "refund", "amount": "1.00"})).await;
    assert_eq!(shown["state"], "refused", "{shown:#}");
    assert_eq!(shown["code"], "FORBIDDEN", "{shown:#}");
    let problems = browser.run(json!({"cmd": "problems"})).await;
    // The dropped connection is the only trouble the console may report.
    for problem in problems["problems"].as_array().unwrap() {
        let problem = problem.as_str().unwrap();
        assert!(problem.contains("WebSocket") || problem.contains("Failed to load resource") || problem.contains("ERR_"), "{problem}");
    }
    browser.close().await;
}

/// Now, in milliseconds since 1970: the clock the page's `Date.now()` reads too.
fn unix_millis_now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("a clock after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit in i64")
}
