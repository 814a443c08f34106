//! Hostile input (M1, M2, X2, X4, A3): tables of malformed, oversized, abusive and injected input
//! sent over HTTP. Every case asserts the stable error code (the tables are the specification),
//! that nothing changed (the records and the audit trail of the tenant and of another tenant),
//! that the answer came quickly, and that the server still answers /healthz afterwards.
//! docs/security.md ("Hostile input") lists every case with its result.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use settle::auth::Role;

use crate::helpers::*;

/// The longest any hostile request may take to be answered.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

const CREATE_INVOICE: &str =
    "mutation($input: InvoiceInput!, $key: String!) { createInvoice(input: $input, idempotencyKey: $key) { invoice { id } } }";
const RECORD_PAYMENT: &str =
    "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id } } }";
const APPLY_PAYMENT: &str = "mutation($payment: ID!, $invoice: ID!, $amount: Amount!, $key: String!) { \
    applyPayment(id: $payment, invoiceId: $invoice, amount: $amount, idempotencyKey: $key) { allocation { id } } }";
const REFUND_PAYMENT: &str = "mutation($payment: ID!, $amount: Amount!, $key: String!) { \
    refundPayment(id: $payment, input: {amount: $amount}, idempotencyKey: $key) { refund { id } } }";
const CREATE_CLIENT: &str = "mutation($name: String!, $key: String) { createClient(input: {name: $name}, idempotencyKey: $key) { id name } }";

/// Everything a tenant holds that a hostile request could touch, read in one query.
const STATE: &str = "{
    clients(first: 100) { totalCount edges { node { id name email phone } } }
    contacts(first: 100) { totalCount edges { node { id name } } }
    locations { id name address }
    invoices(first: 100) { totalCount edges { node { id number status currency total { amount } balance { amount }
        amountPaid { amount } amountCredited { amount } lines { description unitPrice { amount } } } } }
    payments(first: 100) { totalCount edges { node { id number status amount { amount } allocated { amount }
        refunded { amount } description voidedAt } } }
    auditEvents(first: 1) { totalCount }
    settings { currency taxMode paymentTermsDays nextInvoiceNumber timezone }
    taxRates(includeArchived: true) { id name percent archived }
    paymentMethods(includeArchived: true) { id name archived }
}";

/// The records the cases aim at, in this app's tenant, plus another tenant with data of its own.
struct Fixture {
    seed: Seed,
    cash: String,
    /// An OPEN invoice of 100.00.
    invoice: String,
    /// A standalone payment of 50.00, all unallocated.
    payment: String,
    other_tenant: String,
    other_invoice: String,
    other_payment: String,
}

async fn cash_method(caller: &Caller<'_>) -> String {
    let data = caller.ok("{ paymentMethods { id name } }", json!({})).await;
    let methods = data["paymentMethods"].as_array().unwrap();
    methods.iter().find(|m| m["name"] == "Cash").unwrap()["id"].as_str().unwrap().to_owned()
}

async fn record_payment(caller: &Caller<'_>, client: &str, location: &str, method: &str, amount: &str) -> String {
    let data = caller
        .ok(
            RECORD_PAYMENT,
            json!({"input": {"clientId": client, "locationId": location, "methodId": method, "amount": amount}, "key": new_key()}),
        )
        .await;
    data["recordPayment"]["payment"]["id"].as_str().unwrap().to_owned()
}

async fn fixture(app: &TestApp) -> Fixture {
    let seed = app.seed().await;
    let cash = cash_method(&app.admin()).await;
    let invoice = app.open_invoice(&seed, "100.00").await["id"].as_str().unwrap().to_owned();
    let payment = record_payment(&app.admin(), &seed.client, &seed.location, &cash, "50.00").await;

    let other_tenant = format!("{}-other", app.tenant);
    let other = app.with_token(Some(app.token_for(&other_tenant, Role::Admin)));
    let client = other.ok("mutation { createClient(input: {name: \"Other Practice Client\"}) { id } }", json!({})).await;
    let client = client["createClient"]["id"].as_str().unwrap().to_owned();
    let location = other.ok("mutation { createLocation(input: {name: \"Other Clinic\"}) { id } }", json!({})).await;
    let location = location["createLocation"]["id"].as_str().unwrap().to_owned();
    let created = other
        .ok(
            CREATE_INVOICE,
            json!({"input": {"clientId": client, "locationId": location, "lines": [{"description": "Visit", "unitPrice": "70.00"}]}, "key": new_key()}),
        )
        .await;
    let other_invoice = created["createInvoice"]["invoice"]["id"].as_str().unwrap().to_owned();
    other
        .ok(
            "mutation($id: ID!, $key: String!) { finalizeInvoice(id: $id, idempotencyKey: $key) { invoice { id } } }",
            json!({"id": other_invoice, "key": new_key()}),
        )
        .await;
    let other_cash = cash_method(&other).await;
    let other_payment = record_payment(&other, &client, &location, &other_cash, "30.00").await;
    Fixture { seed, cash, invoice, payment, other_tenant, other_invoice, other_payment }
}

/// Sends cases one by one and keeps a table of what each got; fails at the end with every
/// mismatch at once.
struct Probe<'a> {
    app: &'a TestApp,
    fx: &'a Fixture,
    token: String,
    rows: Vec<String>,
    failures: Vec<String>,
}

impl<'a> Probe<'a> {
    fn new(app: &'a TestApp, fx: &'a Fixture) -> Probe<'a> {
        Probe { app, fx, token: app.token(Role::Admin), rows: Vec::new(), failures: Vec::new() }
    }

    /// This tenant's and the other tenant's records and audit counts.
    async fn state(&self) -> Value {
        let mine = self.app.viewer().ok(STATE, json!({})).await;
        let theirs = self.app.with_token(Some(self.app.token_for(&self.fx.other_tenant, Role::Viewer))).ok(STATE, json!({})).await;
        json!({"mine": mine, "theirs": theirs})
    }

    /// A GraphQL request; `expected` is an error code or "OK". Returns the response body.
    /// A document longer than the server's query length limit: refused before parsing.
    async fn gql_too_long(&mut self, case: &str, query: &str, variables: Value) -> Value {
        assert!(query.len() > 64 * 1024, "{case}: the document must be over the limit");
        let body = serde_json::to_vec(&json!({"query": query, "variables": variables})).unwrap();
        self.send(case, body, "QUERY_REJECTED", 400).await
    }

    async fn gql(&mut self, case: &str, query: &str, variables: Value, expected: &str) -> Value {
        let status = if expected == "REQUEST_TOO_LARGE" { 413 } else { 200 };
        let body = serde_json::to_vec(&json!({"query": query, "variables": variables})).unwrap();
        self.send(case, body, expected, status).await
    }

    /// Any request body; checks code, HTTP status, time, unchanged state (unless "OK") and health.
    async fn send(&mut self, case: &str, body: Vec<u8>, expected: &str, status: u16) -> Value {
        let before = if expected == "OK" { Value::Null } else { self.state().await };
        let started = Instant::now();
        let response = self
            .app
            .http
            .post(self.app.url("/graphql"))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let (actual_status, body) = match response {
            Ok(response) => {
                let status = response.status().as_u16();
                let bytes = response.bytes().await.unwrap_or_default();
                (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
            }
            Err(error) => (0, json!({"transport error": error.to_string()})),
        };
        let elapsed = started.elapsed();
        let actual = match body["errors"][0]["extensions"]["code"].as_str() {
            Some(code) => code.to_owned(),
            None if body["data"].is_object() && body.get("errors").is_none_or(Value::is_null) => "OK".to_owned(),
            None => format!("no GraphQL answer: {}", excerpt(&body)),
        };
        let mut problems = Vec::new();
        if actual != expected {
            problems.push(format!("expected {expected}, got {actual}: {}", excerpt(&body)));
        }
        if actual_status != status {
            problems.push(format!("expected HTTP {status}, got {actual_status}"));
        }
        if elapsed > ANSWER_WITHIN {
            problems.push(format!("answered after {elapsed:?}"));
        }
        if expected != "OK" {
            let after = self.state().await;
            if after != before {
                problems.push(format!("the refused request changed data: before {before:#} after {after:#}"));
            }
        }
        let health = self.app.http.get(self.app.url("/healthz")).send().await.map(|r| r.status().as_u16());
        if !matches!(health, Ok(200)) {
            problems.push(format!("/healthz afterwards: {health:?}"));
        }
        self.rows.push(format!("{case:<60} | {expected:<20} | {actual:<20} | {actual_status} | {:>5} ms", elapsed.as_millis()));
        for problem in problems {
            self.failures.push(format!("{case}: {problem}"));
        }
        body
    }

    /// Records a failure found by a caller's own check.
    fn check(&mut self, ok: bool, case: &str, problem: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(format!("{case}: {}", problem()));
        }
    }

    fn finish(self, title: &str) {
        println!("== {title}: case | expected | actual | HTTP | time");
        for row in &self.rows {
            println!("{row}");
        }
        assert!(self.failures.is_empty(), "{title}: {} failing case(s):\n{}", self.failures.len(), self.failures.join("\n"));
    }
}

fn excerpt(body: &Value) -> String {
    body.to_string().chars().take(300).collect()
}

/// A short label for a hostile value.
fn label(value: &Value) -> String {
    match value {
        Value::String(s) if s.chars().count() > 24 => format!("{:?}... ({} bytes)", s.chars().take(12).collect::<String>(), s.len()),
        Value::String(s) => format!("{s:?}"),
        other => format!("JSON {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Amounts (M1, M2)
// ---------------------------------------------------------------------------------------------

/// The amount cases and the code each of createInvoice unitPrice, recordPayment amount,
/// applyPayment amount and refundPayment amount gets.
fn amount_cases() -> Vec<(Value, [&'static str; 4])> {
    const BAD: [&str; 4] = ["INVALID_AMOUNT"; 4];
    const PRECISE: [&str; 4] = ["AMOUNT_TOO_PRECISE"; 4];
    // A zero price is a free line; zero money can never move.
    const ZERO: [&str; 4] = ["OK", "AMOUNT_NOT_POSITIVE", "AMOUNT_NOT_POSITIVE", "AMOUNT_NOT_POSITIVE"];
    // A negative unit price is an invalid line value (INVALID_INPUT, pinned by
    // invoices::m2_invalid_line_values_are_invalid_input); negative money is not positive.
    const NEGATIVE: [&str; 4] = ["INVALID_INPUT", "AMOUNT_NOT_POSITIVE", "AMOUNT_NOT_POSITIVE", "AMOUNT_NOT_POSITIVE"];
    vec![
        (json!(format!("1{}", "0".repeat(40))), BAD),
        (json!("-0.01"), NEGATIVE),
        (json!("-100"), NEGATIVE),
        (json!("0"), ZERO),
        (json!("-0"), ZERO),
        (json!("0.00"), ZERO),
        (json!("NaN"), BAD),
        (json!("Infinity"), BAD),
        (json!("-Infinity"), BAD),
        (json!("1e308"), BAD),
        (json!("1E2"), BAD),
        (json!("0x10"), BAD),
        (json!(" 10"), BAD),
        (json!("10 "), BAD),
        (json!("1_000"), BAD),
        (json!("1,000.00"), BAD),
        (json!("+10"), BAD),
        (json!("10."), BAD),
        (json!(".5"), BAD),
        (json!("--1"), BAD),
        (json!("1.2.3"), BAD),
        (json!(""), BAD),
        (json!("\u{0663}"), BAD),
        (json!("\u{FF11}\u{FF10}"), BAD),
        (json!("10\u{0000}"), BAD),
        (json!("10.001"), PRECISE),
        (json!("0.001"), PRECISE),
        (json!("9".repeat(10 * 1024)), BAD),
        (json!(format!("1.{}", "0".repeat(10 * 1024))), BAD),
        (json!("10000000000000001"), BAD),
        (json!("99999999999999999.99"), BAD),
        (json!(10), BAD),
        (json!(10.5), BAD),
        (json!(1e308), BAD),
        (json!(true), BAD),
        (json!(["10"]), BAD),
        (json!({"amount": "10"}), BAD),
        (Value::Null, BAD),
    ]
}

#[tokio::test]
async fn m1_m2_hostile_amounts_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let fx = fixture(&app).await;
    let mut probe = Probe::new(&app, &fx);
    for (amount, codes) in amount_cases() {
        let name = label(&amount);
        let invoice_input = json!({"clientId": fx.seed.client, "locationId": fx.seed.location,
            "lines": [{"description": "Consultation", "unitPrice": amount}]});
        probe.gql(&format!("createInvoice unitPrice {name}"), CREATE_INVOICE, json!({"input": invoice_input, "key": new_key()}), codes[0]).await;
        let payment_input = json!({"clientId": fx.seed.client, "locationId": fx.seed.location, "methodId": fx.cash, "amount": amount});
        probe.gql(&format!("recordPayment amount {name}"), RECORD_PAYMENT, json!({"input": payment_input, "key": new_key()}), codes[1]).await;
        probe
            .gql(
                &format!("applyPayment amount {name}"),
                APPLY_PAYMENT,
                json!({"payment": fx.payment, "invoice": fx.invoice, "amount": amount, "key": new_key()}),
                codes[2],
            )
            .await;
        probe
            .gql(&format!("refundPayment amount {name}"), REFUND_PAYMENT, json!({"payment": fx.payment, "amount": amount, "key": new_key()}), codes[3])
            .await;
    }
    // Literals written into the document go through the same scalar as variables.
    for (literal, code) in [("\"NaN\"", "INVALID_AMOUNT"), ("10", "INVALID_AMOUNT"), ("\"-5\"", "AMOUNT_NOT_POSITIVE"), ("\"10.001\"", "AMOUNT_TOO_PRECISE")] {
        let query = format!(
            "mutation($key: String!) {{ applyPayment(id: \"{}\", invoiceId: \"{}\", amount: {literal}, idempotencyKey: $key) {{ allocation {{ id }} }} }}",
            fx.payment, fx.invoice
        );
        probe.gql(&format!("applyPayment literal amount {literal}"), &query, json!({"key": new_key()}), code).await;
    }
    // Precision is the currency's: one decimal is too many for yen.
    let yen = json!({"clientId": fx.seed.client, "locationId": fx.seed.location, "methodId": fx.cash, "amount": "100.5", "currency": "JPY"});
    probe.gql("recordPayment \"100.5\" JPY", RECORD_PAYMENT, json!({"input": yen, "key": new_key()}), "AMOUNT_TOO_PRECISE").await;
    probe.finish("hostile amounts");
}

/// M2: an amount with more decimal places than the currency allows is AMOUNT_TOO_PRECISE, however
/// many places it has.
#[tokio::test]
async fn m2_amount_with_more_than_twenty_decimals_is_too_precise() {
    let app = TestApp::spawn().await;
    let fx = fixture(&app).await;
    let mut probe = Probe::new(&app, &fx);
    for amount in ["10.000000000000000000001", "0.0000000000000000000001"] {
        probe
            .gql(
                &format!("applyPayment amount {amount:?}"),
                APPLY_PAYMENT,
                json!({"payment": fx.payment, "invoice": fx.invoice, "amount": amount, "key": new_key()}),
                "AMOUNT_TOO_PRECISE",
            )
            .await;
        probe.gql(&format!("refundPayment amount {amount:?}"), REFUND_PAYMENT, json!({"payment": fx.payment, "amount": amount, "key": new_key()}), "AMOUNT_TOO_PRECISE").await;
    }
    probe.finish("over-precise amounts with many decimals");
}

// ---------------------------------------------------------------------------------------------
// Currencies (M6)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn m6_hostile_currencies_are_unknown_currency() {
    let app = TestApp::spawn().await;
    let fx = fixture(&app).await;
    let mut probe = Probe::new(&app, &fx);
    let currencies = [
        String::new(),
        "XXX".into(),
        "\u{C4}\u{DC}D".into(),
        "A".repeat(10 * 1024),
        "AUD\u{0000}".into(),
        "aud".into(),
        "XAU".into(),
        "AUDD".into(),
        "AU".into(),
        "123".into(),
        "AUD; DELETE invoice".into(),
    ];
    for currency in currencies {
        let name = label(&json!(currency));
        let invoice = json!({"clientId": fx.seed.client, "locationId": fx.seed.location, "currency": currency,
            "lines": [{"description": "Consultation", "unitPrice": "10.00"}]});
        probe.gql(&format!("createInvoice currency {name}"), CREATE_INVOICE, json!({"input": invoice, "key": new_key()}), "UNKNOWN_CURRENCY").await;
        let payment = json!({"clientId": fx.seed.client, "locationId": fx.seed.location, "methodId": fx.cash, "amount": "10.00", "currency": currency});
        probe.gql(&format!("recordPayment currency {name}"), RECORD_PAYMENT, json!({"input": payment, "key": new_key()}), "UNKNOWN_CURRENCY").await;
        probe
            .gql(
                &format!("updateSettings currency {name}"),
                "mutation($currency: String!) { updateSettings(input: {currency: $currency}) { currency } }",
                json!({"currency": currency}),
                "UNKNOWN_CURRENCY",
            )
            .await;
    }
    probe.finish("hostile currencies");
}

// ---------------------------------------------------------------------------------------------
// Long strings, control characters, bodies that are not UTF-8 JSON (X4)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn x4_long_strings_control_characters_and_bad_bodies_are_refused() {
    let app = TestApp::spawn().await;
    let fx = fixture(&app).await;
    let mut probe = Probe::new(&app, &fx);
    let body_max = 1usize << 20;
    let line = |description: String| {
        json!({"input": {"clientId": fx.seed.client, "locationId": fx.seed.location,
            "lines": [{"description": description, "unitPrice": "10.00"}]}, "key": new_key()})
    };

    probe.gql("createClient name of 100 KB", CREATE_CLIENT, json!({"name": "x".repeat(100 * 1024)}), "INVALID_INPUT").await;
    probe.gql("createClient name of 201 characters", CREATE_CLIENT, json!({"name": "x".repeat(201)}), "INVALID_INPUT").await;
    probe.gql("createInvoice line description of 1 MiB - 4 KiB (body under the limit)", CREATE_INVOICE, line("x".repeat(body_max - 4096)), "INVALID_INPUT").await;
    probe.gql("createInvoice line description of 1 MiB + 10 bytes", CREATE_INVOICE, line("x".repeat(body_max + 10)), "REQUEST_TOO_LARGE").await;
    probe
        .gql(
            "createInvoice notes of 500 KB (4-byte characters)",
            CREATE_INVOICE,
            json!({"input": {"clientId": fx.seed.client, "locationId": fx.seed.location, "notes": "\u{1F600}".repeat(125 * 1024),
                "lines": [{"description": "Visit", "unitPrice": "10.00"}]}, "key": new_key()}),
            "INVALID_INPUT",
        )
        .await;

    for name in ["Ann\u{0000}Lee", "Ann\u{0007}", "\u{001B}[2J\u{001B}[H", "A\u{007F}B", "A\u{0085}B", "A\u{009B}B", "A\rB", "   ", "\r\n"] {
        probe.gql(&format!("createClient name {name:?}"), CREATE_CLIENT, json!({"name": name}), "INVALID_INPUT").await;
    }
    probe
        .gql(
            "createContact name \"Bo\\u{0}\"",
            "mutation { createContact(input: {name: \"Bo\\u0000\"}) { id } }",
            json!({}),
            "INVALID_INPUT",
        )
        .await;
    probe.gql("createClient email \"a\\u{0}@b.com\"", "mutation { createClient(input: {name: \"Ann\", email: \"a\\u0000@b.com\"}) { id } }", json!({}), "INVALID_INPUT").await;
    probe.gql("createInvoice line description \"Visit\\u{0}\"", CREATE_INVOICE, line("Visit\u{0000}".into()), "INVALID_INPUT").await;
    probe
        .gql(
            "refundPayment description \"a\\u{8}b\"",
            "mutation($payment: ID!, $key: String!) { refundPayment(id: $payment, input: {amount: \"1.00\", description: \"a\\bb\"}, idempotencyKey: $key) { refund { id } } }",
            json!({"payment": fx.payment, "key": new_key()}),
            "INVALID_INPUT",
        )
        .await;
    probe
        .gql(
            "issueCreditNote reason \"a\\u{0}b\"",
            "mutation($invoice: ID!, $key: String!) { issueCreditNote(invoiceId: $invoice, input: {reason: \"a\\u0000b\", lines: [{lineIndex: 0, amount: \"1.00\"}]}, idempotencyKey: $key) { creditNote { id } } }",
            json!({"invoice": fx.invoice, "key": new_key()}),
            "INVALID_INPUT",
        )
        .await;
    probe
        .gql(
            "updatePayment description \"\\u{1b}[31m\"",
            "mutation($payment: ID!, $key: String!) { updatePayment(id: $payment, description: \"\\u001b[31m\", idempotencyKey: $key) { payment { id } } }",
            json!({"payment": fx.payment, "key": new_key()}),
            "INVALID_INPUT",
        )
        .await;
    probe
        .gql(
            "voidPayment reason \"\\u{7}\"",
            "mutation($payment: ID!, $key: String!) { voidPayment(id: $payment, reason: \"\\u0007\", idempotencyKey: $key) { payment { id } } }",
            json!({"payment": fx.payment, "key": new_key()}),
            "INVALID_INPUT",
        )
        .await;

    // Bodies that are not UTF-8 JSON.
    let bodies: [(&str, &[u8]); 9] = [
        ("body with bytes FF FE in a variable", b"{\"query\":\"{ viewer { tenant } }\",\"variables\":{\"x\":\"\xff\xfe\"}}"),
        ("body with an overlong UTF-8 encoding (C0 AF)", b"{\"query\":\"{ viewer { tenant } }\",\"variables\":{\"x\":\"\xc0\xaf\"}}"),
        ("body with a cut UTF-8 sequence (E2 82)", b"{\"query\":\"{ viewer { tenant } }\",\"variables\":{\"x\":\"\xe2\x82\"}}"),
        ("body with byte FF inside the query text", b"{\"query\":\"{ viewer { tenant \xff } }\"}"),
        ("body with a UTF-16 surrogate encoded as UTF-8 (ED A0 80)", b"{\"query\":\"{ viewer { tenant } }\",\"variables\":{\"x\":\"\xed\xa0\x80\"}}"),
        ("body with a lone surrogate escape \\ud800", b"{\"query\":\"mutation { createClient(input: {name: \\\"\\ud800\\\"}) { id } }\"}"),
        ("body in UTF-16 with a BOM", b"\xff\xfe{\x00\"\x00q\x00\"\x00:\x00\"\x00{\x00}\x00\"\x00}\x00"),
        ("empty body", b""),
        ("body of NUL bytes", b"\x00\x00\x00\x00"),
    ];
    for (case, body) in bodies {
        probe.send(case, body.to_vec(), "QUERY_REJECTED", 400).await;
    }
    probe.finish("long strings, control characters, bad bodies");
}

// ---------------------------------------------------------------------------------------------
// Query shapes: depth, width, fragments, directives, size
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn hostile_query_shapes_are_refused_or_answered_quickly() {
    let app = TestApp::spawn().await;
    let fx = fixture(&app).await;
    let mut probe = Probe::new(&app, &fx);

    let deep = format!("{{ allocation(id: \"x\") {{ {} id {} }} }}", "payment { allocations { ".repeat(25), "} } ".repeat(25));
    probe.gql("query 50 levels deep (allocation/payment cycle)", &deep, json!({}), "QUERY_REJECTED").await;
    let nested = format!("{{ {} id {} }}", "a { ".repeat(10_000), "} ".repeat(10_000));
    probe.gql("selection sets nested 10,000 levels", &nested, json!({}), "QUERY_REJECTED").await;
    let list_type = format!("query($v: {}Int{}) {{ viewer {{ tenant }} }}", "[".repeat(10_000), "]".repeat(10_000));
    probe.gql("variable type nested 10,000 lists", &list_type, json!({}), "QUERY_REJECTED").await;
    let value = format!("{{ clients(search: {}\"x\"{}) {{ totalCount }} }}", "[".repeat(10_000), "]".repeat(10_000));
    probe.gql("argument value nested 10,000 lists", &value, json!({}), "QUERY_REJECTED").await;

    let wide = |n: usize| format!("{{ {} }}", (0..n).map(|i| format!("a{i}: viewer {{ tenant }}")).collect::<Vec<_>>().join(" "));
    let body = probe.gql("2,000 aliases a1: viewer { tenant } (complexity 4,000)", &wide(2_000), json!({}), "OK").await;
    probe.check(body["data"]["a1999"]["tenant"] == app.tenant.as_str(), "2,000 aliases", || "the last alias is missing".into());
    probe.gql_too_long("5,000 aliases a1: viewer { tenant } (over 64 KiB)", &wide(5_000), json!({})).await;
    probe.gql_too_long("10,001 aliases a1: viewer { tenant } (over 64 KiB)", &wide(10_001), json!({})).await;
    let lookups = format!("{{ {} }}", (0..2_000).map(|i| format!("a{i}: client(id: \"nope\") {{ id }}")).collect::<Vec<_>>().join(" "));
    probe.gql("2,000 aliases a1: client(id: \"nope\") { id } (lookups cost 10 each)", &lookups, json!({}), "QUERY_REJECTED").await;

    let spreads = (0..10_000).map(|i| format!("...f{i}")).collect::<Vec<_>>().join(" ");
    let definitions = (0..10_000).map(|i| format!("fragment f{i} on Query {{ __typename }}")).collect::<Vec<_>>().join(" ");
    probe.gql_too_long("10,000 fragments, each spread once", &format!("{{ {spreads} }} {definitions}"), json!({})).await;
    let chain = (0..9_999).map(|i| format!("fragment f{i} on Query {{ ...f{} }}", i + 1)).collect::<Vec<_>>().join(" ");
    probe.gql_too_long("a chain of 10,000 fragments", &format!("{{ ...f0 }} {chain} fragment f9999 on Query {{ __typename }}"), json!({})).await;
    probe
        .gql("two fragments spreading each other", "{ ...a } fragment a on Query { ...b } fragment b on Query { ...a }", json!({}), "QUERY_REJECTED")
        .await;
    let unused = (0..10_000).map(|i| format!("fragment u{i} on Query {{ __typename }}")).collect::<Vec<_>>().join(" ");
    probe.gql_too_long("10,000 unused fragments", &format!("{{ viewer {{ tenant }} }} {unused}"), json!({})).await;
    probe.gql_too_long("10,000 directives on one field", &format!("{{ viewer {} {{ tenant }} }}", "@include(if: true) ".repeat(10_000)), json!({})).await;
    probe
        .gql("10,000 unknown directives", &format!("{{ viewer {} {{ tenant }} }}", "@evil ".repeat(10_000)), json!({}), "QUERY_REJECTED")
        .await;
    let variables = (0..10_000).map(|i| format!("$v{i}: Int")).collect::<Vec<_>>().join(", ");
    probe.gql_too_long("10,000 unused variables", &format!("query({variables}) {{ viewer {{ tenant }} }}"), json!({})).await;

    let megabyte = 1usize << 20;
    probe
        .gql("query string of 1 MiB", &format!("{{ viewer {{ tenant }} }} #{}", "x".repeat(megabyte)), json!({}), "REQUEST_TOO_LARGE")
        .await;
    probe.gql_too_long("query string of 1,000,000 bytes: 95,000 __typename", &format!("{{ {}}}", "__typename ".repeat(95_000)), json!({})).await;
    probe.gql_too_long("20,000 unknown fields", &format!("{{ {}}}", "nope ".repeat(20_000)), json!({})).await;
    probe.gql_too_long("query string of 1 MB of whitespace", &format!("{}{{ viewer {{ tenant }} }}", " ".repeat(megabyte - 100)), json!({})).await;
    probe.finish("query shapes");
}

/// `query { ...F0 }` where each fragment spreads the next one twice through `spread`, ending in
/// `viewer { tenant }`: about 1 KB of text that expands to 2^levels selections.
fn doubling_fragments(levels: usize, spread: impl Fn(usize) -> String) -> String {
    let mut query = "query { ...F0 }".to_owned();
    for level in 0..levels {
        query.push_str(&format!(" fragment F{level} on Query {{ {} }}", spread(level + 1)));
    }
    query.push_str(&format!(" fragment F{levels} on Query {{ viewer {{ tenant }} }}"));
    query
}

/// Q1: documents that expand to billions of selections are refused before anything expands them,
/// in milliseconds, and the server keeps answering /healthz while they arrive together.
#[tokio::test]
async fn q1_exponential_fragment_documents_are_refused_at_once() {
    let app = TestApp::spawn().await;
    let documents = [
        ("each fragment spreads the next twice", doubling_fragments(30, |next| format!("...F{next} ...F{next}"))),
        ("the same with aliased fields beside the spreads", doubling_fragments(30, |next| format!("a: __typename ...F{next} b: __typename ...F{next}"))),
        (
            "the spreads inside inline fragments",
            doubling_fragments(30, |next| format!("... on Query {{ ...F{next} }} ... on Query {{ ...F{next} }}")),
        ),
        ("three spreads per level, 20 levels", doubling_fragments(20, |next| format!("...F{next} ...F{next} ...F{next}"))),
        ("two spreads per level, 25 levels: within the depth limit", doubling_fragments(25, |next| format!("...F{next} ...F{next}"))),
        (
            "two named operations, each spreading the chain",
            format!("{} query Other {{ ...F0 }}", doubling_fragments(30, |next| format!("...F{next} ...F{next}")).replacen("query {", "query First {", 1)),
        ),
    ];
    let viewer = app.viewer();
    for (case, document) in &documents {
        assert!(document.len() < 2_500, "{case}: the document is meant to be small ({} bytes)", document.len());
        let started = Instant::now();
        let response = viewer.post(document, json!({})).await;
        let elapsed = started.elapsed();
        assert_error_code(&response, "QUERY_REJECTED");
        let message = response.body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("more than 5000") || message.contains("deeper than 32"), "{case}: {message}");
        // Unbounded, the first document costs minutes of CPU; the bound costs a walk of its text.
        assert!(elapsed < Duration::from_millis(500), "{case}: refused after {elapsed:?}");
    }

    // Eight at once, and /healthz answers meanwhile.
    let document = &documents[0].1;
    let attacks: Vec<_> = (0..8).map(|_| viewer.post(document, json!({}))).collect();
    let health = async {
        let started = Instant::now();
        let response = app.http.get(app.url("/healthz")).timeout(Duration::from_secs(2)).send().await;
        (response.map(|r| r.status().as_u16()), started.elapsed())
    };
    let (answers, (health, health_elapsed)) = tokio::join!(futures::future::join_all(attacks), health);
    for answer in &answers {
        assert_error_code(answer, "QUERY_REJECTED");
    }
    assert_eq!(health.ok(), Some(200), "/healthz while 8 such documents arrive (after {health_elapsed:?})");
}

/// A document of unknown fields is refused, quickly and with a short answer.
#[tokio::test]
async fn documents_of_unknown_fields_are_refused_quickly_and_briefly() {
    let app = TestApp::spawn().await;
    let fx = fixture(&app).await;
    let mut probe = Probe::new(&app, &fx);
    let body = probe.gql_too_long("20,000 unknown fields", &format!("{{ {}}}", "nope ".repeat(20_000)), json!({})).await;
    let errors = body["errors"].as_array().map_or(0, Vec::len);
    probe.check(errors <= 100, "20,000 unknown fields", || format!("answered with {errors} errors"));
    probe.gql_too_long("190,000 unknown fields (950 KB)", &format!("{{ {}}}", "nope ".repeat(190_000)), json!({})).await;
    probe.finish("documents of unknown fields");
}

/// A paged list costs its page size in query complexity, but every alias of it is two database
/// queries (rows and count), so `first: 1` lets one request of ~450 KB run 20,000 queries.
#[tokio::test]
async fn wide_query_of_paged_lists_is_refused_or_answered_quickly() {
    let app = TestApp::spawn().await;
    let fx = fixture(&app).await;
    let mut probe = Probe::new(&app, &fx);
    let aliases = |n: usize| format!("{{ {} }}", (0..n).map(|i| format!("a{i}: invoices(first: 1) {{ totalCount }}")).collect::<Vec<_>>().join(" "));
    // Under the length limit, the cost of each paged list (25 + page x fields) refuses it.
    probe.gql("1,500 aliases a1: invoices(first: 1) { totalCount } (complexity 39,000)", &aliases(1_500), json!({}), "QUERY_REJECTED").await;
    probe.gql_too_long("10,000 aliases a1: invoices(first: 1) { totalCount } (over 64 KiB)", &aliases(10_000), json!({})).await;
    probe.finish("wide query of paged lists");
}

// ---------------------------------------------------------------------------------------------
// Batches, operation names, variables
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn hostile_batches_operation_names_and_variables_are_refused() {
    let app = TestApp::spawn().await;
    let fx = fixture(&app).await;
    let mut probe = Probe::new(&app, &fx);
    let raw = |value: Value| serde_json::to_vec(&value).unwrap();

    let queries: Vec<Value> = (0..1_000).map(|_| json!({"query": "{ viewer { tenant } }"})).collect();
    probe.send("JSON array of 1,000 queries", raw(json!(queries)), "QUERY_REJECTED", 400).await;
    let mutations: Vec<Value> =
        (0..1_000).map(|i| json!({"query": format!("mutation {{ createClient(input: {{name: \"Batch {i}\"}}) {{ id }} }}")})).collect();
    probe.send("JSON array of 1,000 createClient mutations", raw(json!(mutations)), "QUERY_REJECTED", 400).await;
    probe.send("empty JSON array", raw(json!([])), "QUERY_REJECTED", 400).await;
    probe.send("JSON null", raw(Value::Null), "QUERY_REJECTED", 400).await;
    probe.send("JSON string", raw(json!("{ viewer { tenant } }")), "QUERY_REJECTED", 400).await;
    probe.send("query is a number", raw(json!({"query": 5})), "QUERY_REJECTED", 400).await;
    probe.send("no query, only variables", raw(json!({"variables": {}})), "QUERY_REJECTED", 400).await;
    probe.send("a GraphQL document sent as the raw body", b"{ viewer { tenant } }".to_vec(), "QUERY_REJECTED", 400).await;
    probe.send("body nested 100,000 JSON arrays", format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), "QUERY_REJECTED", 400).await;
    probe
        .send(
            "variables nested 100,000 JSON objects",
            format!("{{\"query\":\"{{ viewer {{ tenant }} }}\",\"variables\":{}{}}}", "{\"a\":".repeat(100_000), "}".repeat(100_000)).into_bytes(),
            "QUERY_REJECTED",
            400,
        )
        .await;

    let two = "query A { viewer { tenant } } mutation B { createClient(input: {name: \"Sneaky\"}) { id } }";
    probe.send("operationName naming a missing operation", raw(json!({"query": two, "operationName": "Missing"})), "QUERY_REJECTED", 200).await;
    probe.send("two operations without operationName", raw(json!({"query": two})), "QUERY_REJECTED", 200).await;
    probe.send("operationName a number", raw(json!({"query": two, "operationName": 5})), "QUERY_REJECTED", 400).await;
    probe.send("operationName of 10 KB", raw(json!({"query": two, "operationName": "B".repeat(10 * 1024)})), "QUERY_REJECTED", 200).await;
    probe
        .send(
            "two mutations of the same name",
            raw(json!({"query": "mutation B { createClient(input: {name: \"One\"}) { id } } mutation B { createClient(input: {name: \"Two\"}) { id } }", "operationName": "B"})),
            "QUERY_REJECTED",
            200,
        )
        .await;

    let clients = "query($first: Int) { clients(first: $first) { totalCount } }";
    probe.gql("Int variable given \"abc\"", clients, json!({"first": "abc"}), "QUERY_REJECTED").await;
    probe.gql("Int variable given 2^40", clients, json!({"first": 1u64 << 40}), "QUERY_REJECTED").await;
    probe.gql("Int variable given 1.5", clients, json!({"first": 1.5}), "QUERY_REJECTED").await;
    probe.gql("page size 1,000,000", clients, json!({"first": 1_000_000}), "QUERY_REJECTED").await;
    probe.gql("page size 101", clients, json!({"first": 101}), "INVALID_INPUT").await;
    probe.gql("page size -1", clients, json!({"first": -1}), "INVALID_INPUT").await;
    probe.gql("required variable missing", "query($first: Int!) { clients(first: $first) { totalCount } }", json!({}), "QUERY_REJECTED").await;
    probe.send("variables a string", raw(json!({"query": clients, "variables": "x"})), "QUERY_REJECTED", 400).await;
    probe.send("variables an array", raw(json!({"query": clients, "variables": [1, 2]})), "QUERY_REJECTED", 400).await;
    probe.gql("String! idempotency key given 123", CREATE_CLIENT, json!({"name": "Ann", "key": 123}), "QUERY_REJECTED").await;
    probe.gql("String! name given an object", CREATE_CLIENT, json!({"name": {"$ne": null}}), "QUERY_REJECTED").await;
    probe
        .gql(
            "ID! given an object {\"$ne\": null}",
            REFUND_PAYMENT,
            json!({"payment": {"$ne": null}, "amount": "1.00", "key": new_key()}),
            "QUERY_REJECTED",
        )
        .await;
    probe.gql("ID! given null", REFUND_PAYMENT, json!({"payment": null, "amount": "1.00", "key": new_key()}), "QUERY_REJECTED").await;
    probe
        .gql(
            "input object with an unknown field",
            CREATE_INVOICE,
            json!({"input": {"clientId": fx.seed.client, "locationId": fx.seed.location, "tenant": "someone-else",
                "lines": [{"description": "Visit", "unitPrice": "10.00"}]}, "key": new_key()}),
            "QUERY_REJECTED",
        )
        .await;
    probe
        .gql(
            "enum value that does not exist",
            "query($status: InvoiceStatus) { invoices(filter: {status: $status}) { totalCount } }",
            json!({"status": "BOGUS"}),
            "QUERY_REJECTED",
        )
        .await;
    probe.gql("Date variable \"2026-02-30\"", "query($from: Date!) { payments(filter: {from: $from}) { totalCount } }", json!({"from": "2026-02-30"}), "QUERY_REJECTED").await;
    probe
        .gql("Date variable of 10 KB", "query($from: Date!) { payments(filter: {from: $from}) { totalCount } }", json!({"from": "2".repeat(10 * 1024)}), "QUERY_REJECTED")
        .await;
    probe
        .gql(
            "Amount variable given 12.5 (a JSON number)",
            APPLY_PAYMENT,
            json!({"payment": fx.payment, "invoice": fx.invoice, "amount": 12.5, "key": new_key()}),
            "INVALID_AMOUNT",
        )
        .await;
    probe
        .gql(
            "10,000 lines on one invoice",
            CREATE_INVOICE,
            json!({"input": {"clientId": fx.seed.client, "locationId": fx.seed.location,
                "lines": (0..10_000).map(|_| json!({"description": "V", "unitPrice": "1.00"})).collect::<Vec<_>>()}, "key": new_key()}),
            "INVALID_INPUT",
        )
        .await;
    probe.finish("batches, operation names, variables");
}

/// An invoice takes at most 200 lines; a payment's allocations given at once need a bound too.
#[tokio::test]
async fn record_payment_with_thousands_of_allocations_is_refused() {
    let app = TestApp::spawn().await;
    let fx = fixture(&app).await;
    let mut probe = Probe::new(&app, &fx);
    probe
        .gql(
            "recordPayment of 50.00 with 5,000 allocations of 0.01",
            RECORD_PAYMENT,
            json!({"input": {"clientId": fx.seed.client, "locationId": fx.seed.location, "methodId": fx.cash, "amount": "50.00",
                "allocations": (0..5_000).map(|_| json!({"invoiceId": fx.invoice, "amount": "0.01"})).collect::<Vec<_>>()}, "key": new_key()}),
            "INVALID_INPUT",
        )
        .await;
    probe.finish("recordPayment with thousands of allocations");
}

// ---------------------------------------------------------------------------------------------
// Ids and injection strings (A3)
// ---------------------------------------------------------------------------------------------

/// Names and search strings shaped like SurrealQL (or SQL, or template) injection.
const INJECTIONS: [&str; 10] = [
    "\"; DELETE invoice; --",
    "' OR 1=1",
    "' OR '1'='1' --",
    "$tenant",
    "\u{27E9}; DELETE client;",
    "Robert'); DROP TABLE client;--",
    "invoice:\u{27E8}x\u{27E9}",
    "`; REMOVE TABLE payment; `",
    "{{7*7}} ${7*7}",
    "<script>alert(1)</script>",
];

#[tokio::test]
async fn a3_hostile_ids_and_injection_strings_find_nothing_and_change_nothing() {
    let app = TestApp::spawn().await;
    let fx = fixture(&app).await;
    let mut probe = Probe::new(&app, &fx);

    // Injection-shaped names are just names: stored and read back exactly.
    let mut names = vec!["Ann Lee".to_owned()]; // the seeded client
    for (index, name) in INJECTIONS.iter().enumerate() {
        let body = probe.gql(&format!("createClient name {name:?}"), CREATE_CLIENT, json!({"name": name, "key": format!("injection-{index}")}), "OK").await;
        let id = body["data"]["createClient"]["id"].as_str().unwrap_or_default().to_owned();
        let read = app.viewer().ok("query($id: ID!) { client(id: $id) { name } }", json!({"id": id})).await;
        probe.check(read["client"]["name"] == *name, &format!("client named {name:?}"), || format!("read back {read:#}"));
        names.push((*name).to_owned());
    }
    let draft = probe
        .gql(
            "createInvoice line description and notes with injections",
            "mutation($input: InvoiceInput!, $key: String!) { createInvoice(input: $input, idempotencyKey: $key) { invoice { id notes lines { description } } } }",
            json!({"input": {"clientId": fx.seed.client, "locationId": fx.seed.location, "notes": INJECTIONS[4],
                "lines": [{"description": INJECTIONS[0], "unitPrice": "1.00"}]}, "key": new_key()}),
            "OK",
        )
        .await;
    let draft = &draft["data"]["createInvoice"]["invoice"];
    probe.check(draft["notes"] == INJECTIONS[4] && draft["lines"][0]["description"] == INJECTIONS[0], "invoice with injections", || {
        format!("read back {draft:#}")
    });

    // Searches match text, nothing more: exactly the clients whose names contain the string.
    let search_query = "query($s: String) { clients(first: 100, search: $s) { totalCount } contacts(search: $s) { totalCount } \
        auditEvents(recordId: $s) { totalCount } invoices(filter: {clientId: $s}) { totalCount } \
        payments(filter: {clientId: $s}) { totalCount } unallocatedPayments(clientId: $s) { id } }";
    let mut searches: Vec<String> = INJECTIONS.iter().map(|s| (*s).to_owned()).collect();
    searches.extend(["*".into(), "%".into(), "_".into(), ".*".into(), "\u{0000}".into(), "a".repeat(10 * 1024)]);
    for search in &searches {
        let expected = names.iter().filter(|name| name.to_lowercase().contains(&search.to_lowercase())).count();
        let body = probe.gql(&format!("search {}", label(&json!(search))), search_query, json!({"s": search}), "OK").await;
        let data = &body["data"];
        let found = (
            data["clients"]["totalCount"].as_u64(),
            data["contacts"]["totalCount"].as_u64(),
            data["auditEvents"]["totalCount"].as_u64(),
            data["invoices"]["totalCount"].as_u64(),
            data["payments"]["totalCount"].as_u64(),
            data["unallocatedPayments"].as_array().map(Vec::len),
        );
        probe.check(found == (Some(expected as u64), Some(0), Some(0), Some(0), Some(0), Some(0)), &format!("search {search:?}"), || {
            format!("expected {expected} clients and nothing else, got {found:?}")
        });
    }

    // Ids: never found, never an error other than NOT_FOUND (or INVALID_INPUT for a cursor).
    let mut ids: Vec<String> = vec![
        "a".repeat(10 * 1024),
        "invoice:\u{27E8}x\u{27E9}".into(),
        "../".into(),
        "../../../../etc/passwd".into(),
        String::new(),
        " ".into(),
        "*".into(),
        "invoice:*".into(),
        "\u{0000}".into(),
        format!("invoice:{}", fx.invoice),
        format!("payment:{}", fx.payment),
        format!("payment:\u{27E8}{}\u{27E9}", fx.payment),
        fx.invoice.to_uppercase(),
        format!("{} ", fx.payment),
        fx.other_invoice.clone(),
        fx.other_payment.clone(),
    ];
    ids.extend(INJECTIONS.iter().map(|s| (*s).to_owned()));
    let lookups = "query($id: ID!) { invoice(id: $id) { id } payment(id: $id) { id } client(id: $id) { id } \
        contact(id: $id) { id } allocation(id: $id) { id } creditNote(id: $id) { id } }";
    for id in &ids {
        let name = label(&json!(id));
        let body = probe.gql(&format!("lookups by id {name}"), lookups, json!({"id": id}), "OK").await;
        let all_null = ["invoice", "payment", "client", "contact", "allocation", "creditNote"].iter().all(|f| body["data"][f].is_null());
        probe.check(all_null, &format!("lookups by id {name}"), || format!("found something: {}", excerpt(&body)));

        let cases: [(&str, &str, Value); 12] = [
            ("finalizeInvoice(id)", "mutation($id: ID!, $key: String!) { finalizeInvoice(id: $id, idempotencyKey: $key) { invoice { id } } }", json!({"id": id, "key": new_key()})),
            ("voidInvoice(id)", "mutation($id: ID!, $key: String!) { voidInvoice(id: $id, idempotencyKey: $key) { invoice { id } } }", json!({"id": id, "key": new_key()})),
            ("deleteInvoice(id)", "mutation($id: ID!, $key: String!) { deleteInvoice(id: $id, idempotencyKey: $key) { deletedInvoiceId } }", json!({"id": id, "key": new_key()})),
            ("applyPayment(id)", APPLY_PAYMENT, json!({"payment": id, "invoice": fx.invoice, "amount": "1.00", "key": new_key()})),
            ("applyPayment(invoiceId)", APPLY_PAYMENT, json!({"payment": fx.payment, "invoice": id, "amount": "1.00", "key": new_key()})),
            ("refundPayment(id)", REFUND_PAYMENT, json!({"payment": id, "amount": "1.00", "key": new_key()})),
            ("voidPayment(id)", "mutation($id: ID!, $key: String!) { voidPayment(id: $id, idempotencyKey: $key) { payment { id } } }", json!({"id": id, "key": new_key()})),
            (
                "payInvoice(id)",
                "mutation($id: ID!, $method: ID!, $key: String!) { payInvoice(id: $id, input: {methodId: $method, amount: \"1.00\"}, idempotencyKey: $key) { payment { id } } }",
                json!({"id": id, "method": fx.cash, "key": new_key()}),
            ),
            (
                "recordPayment(clientId)",
                RECORD_PAYMENT,
                json!({"input": {"clientId": id, "locationId": fx.seed.location, "methodId": fx.cash, "amount": "1.00"}, "key": new_key()}),
            ),
            (
                "recordPayment(methodId)",
                RECORD_PAYMENT,
                json!({"input": {"clientId": fx.seed.client, "locationId": fx.seed.location, "methodId": id, "amount": "1.00"}, "key": new_key()}),
            ),
            (
                "issueCreditNote(invoiceId)",
                "mutation($id: ID!, $key: String!) { issueCreditNote(invoiceId: $id, input: {reason: \"x\", lines: [{lineIndex: 0, amount: \"1.00\"}]}, idempotencyKey: $key) { creditNote { id } } }",
                json!({"id": id, "key": new_key()}),
            ),
            ("updateClient(id)", "mutation($id: ID!) { updateClient(id: $id, input: {name: \"Mallory\"}) { id } }", json!({"id": id})),
        ];
        for (what, query, variables) in cases {
            probe.gql(&format!("{what} {name}"), query, variables, "NOT_FOUND").await;
        }
        probe.gql(&format!("clients(after) cursor {name}"), "query($c: String) { clients(after: $c) { totalCount } }", json!({"c": id}), "INVALID_INPUT").await;
    }

    // The other tenant still has exactly its own data.
    let other = app.with_token(Some(app.token_for(&fx.other_tenant, Role::Viewer)));
    let theirs = other.ok("{ clients { totalCount edges { node { name } } } invoices { totalCount } payments { totalCount edges { node { amount { amount } unallocated { amount } } } } }", json!({})).await;
    assert_eq!(theirs["clients"]["totalCount"], 1, "{theirs:#}");
    assert_eq!(theirs["clients"]["edges"][0]["node"]["name"], "Other Practice Client");
    assert_eq!(theirs["invoices"]["totalCount"], 1);
    assert_eq!(theirs["payments"]["edges"][0]["node"]["unallocated"]["amount"], "30.00");
    probe.finish("hostile ids and injection strings");
}

// ---------------------------------------------------------------------------------------------
// Idempotency keys (X2)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn x2_hostile_idempotency_keys_are_invalid_input() {
    let app = TestApp::spawn().await;
    let fx = fixture(&app).await;
    let mut probe = Probe::new(&app, &fx);
    let keys = [
        "k".repeat(10 * 1024),
        "x".repeat(129),
        String::new(),
        "a\u{0000}b".into(),
        "a\u{0007}".into(),
        "line\nbreak".into(),
        "tab\there".into(),
        "\u{007F}".into(),
        "\u{0085}".into(),
        "a\u{009F}b".into(),
        "\u{001B}[2J".into(),
    ];
    for key in keys {
        let name = label(&json!(key));
        let invoice = json!({"clientId": fx.seed.client, "locationId": fx.seed.location, "lines": [{"description": "Visit", "unitPrice": "10.00"}]});
        probe.gql(&format!("createInvoice key {name}"), CREATE_INVOICE, json!({"input": invoice, "key": key}), "INVALID_INPUT").await;
        let payment = json!({"clientId": fx.seed.client, "locationId": fx.seed.location, "methodId": fx.cash, "amount": "10.00"});
        probe.gql(&format!("recordPayment key {name}"), RECORD_PAYMENT, json!({"input": payment, "key": key}), "INVALID_INPUT").await;
        probe.gql(&format!("refundPayment key {name}"), REFUND_PAYMENT, json!({"payment": fx.payment, "amount": "1.00", "key": key}), "INVALID_INPUT").await;
        probe.gql(&format!("createClient (optional key) key {name}"), CREATE_CLIENT, json!({"name": "Keyed", "key": key}), "INVALID_INPUT").await;
    }
    // The longest key accepted is 128 characters (limits.idempotencyKeyMaxChars), counted in characters.
    let invoice = json!({"clientId": fx.seed.client, "locationId": fx.seed.location, "lines": [{"description": "Visit", "unitPrice": "10.00"}]});
    probe.gql("createInvoice key of 128 characters", CREATE_INVOICE, json!({"input": invoice, "key": "x".repeat(128)}), "OK").await;
    probe.gql("createInvoice key of 128 four-byte characters", CREATE_INVOICE, json!({"input": invoice, "key": "\u{1F511}".repeat(128)}), "OK").await;
    probe.finish("hostile idempotency keys");
}

// ---------------------------------------------------------------------------------------------
// Refusals before a request reaches Settle's handlers
// ---------------------------------------------------------------------------------------------

/// Checks that a refusal is a GraphQL error: JSON, the status, the code, a request id, a message.
#[track_caller]
fn assert_refusal(case: &str, status: u16, content_type: Option<&str>, body: &[u8], expected: (u16, &str)) -> Value {
    assert_eq!(status, expected.0, "{case}: HTTP status; body {:?}", String::from_utf8_lossy(body));
    assert_eq!(content_type, Some("application/json"), "{case}: content-type");
    let body: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{case}: not JSON ({e}): {:?}", String::from_utf8_lossy(body)));
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["code"], expected.1, "{case}: {body:#}");
    assert_eq!(error["extensions"]["retryable"], false, "{case}: {body:#}");
    assert!(error["extensions"]["requestId"].as_str().is_some_and(|id| !id.is_empty()), "{case}: {body:#}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{case}: {body:#}");
    body
}

/// A normal query still answers on `app`.
async fn still_answers(app: &TestApp) {
    let data = app.viewer().ok("{ viewer { tenant } }", json!({})).await;
    assert_eq!(data["viewer"]["tenant"], app.tenant.as_str());
}

/// Poem's refusals: a method /graphql does not take, and a path Settle does not serve.
#[tokio::test]
async fn every_refusal_on_graphql_has_a_code() {
    let app = TestApp::spawn().await;
    let token = app.token(Role::Viewer);
    for method in [reqwest::Method::PUT, reqwest::Method::DELETE, reqwest::Method::PATCH] {
        let response = app
            .http
            .request(method.clone(), app.url("/graphql"))
            .bearer_auth(&token)
            .json(&json!({"query": "{ viewer { tenant } }"}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
        let body = assert_refusal(&format!("{method} /graphql"), status, content_type, &response.bytes().await.unwrap(), (405, "QUERY_REJECTED"));
        assert_eq!(headers.get("allow").and_then(|v| v.to_str().ok()), Some("GET, POST"), "{method} /graphql");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("POST"), "{body:#}");
        assert_eq!(headers["x-request-id"].to_str().unwrap(), body["errors"][0]["extensions"]["requestId"]);
    }
    for path in ["/nope", "/graphql/", "/"] {
        let response = app.http.get(app.url(path)).bearer_auth(&token).send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = assert_refusal(&format!("GET {path}"), status, content_type.as_deref(), &response.bytes().await.unwrap(), (404, "NOT_FOUND"));
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("/graphql"), "{body:#}");
    }
    let response = app.http.post(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET"));
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_refusal("POST /healthz", response.status().as_u16(), content_type.as_deref(), &response.bytes().await.unwrap(), (405, "QUERY_REJECTED"));
    still_answers(&app).await;
}

/// An HTTP/1.1 connection driven byte for byte, for requests no HTTP client would send (reqwest
/// refuses a URI over 65,534 bytes before sending it).
struct RawConnection {
    reader: tokio::net::tcp::OwnedReadHalf,
    /// The write half, or the write in progress that gives it back.
    writer: tokio::task::JoinHandle<Option<tokio::net::tcp::OwnedWriteHalf>>,
    read: Vec<u8>,
}

/// A response read from a [`RawConnection`].
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

impl RawConnection {
    async fn open(app: &TestApp) -> RawConnection {
        let stream = tokio::net::TcpStream::connect(app.base_url.trim_start_matches("http://")).await.unwrap();
        let (reader, writer) = stream.into_split();
        RawConnection { reader, writer: tokio::spawn(async move { Some(writer) }), read: Vec::new() }
    }

    /// Sends `request` (in the background: the server may stop reading it) and reads one response.
    async fn exchange(&mut self, request: Vec<u8>) -> RawResponse {
        use tokio::io::AsyncWriteExt;
        let previous = std::mem::replace(&mut self.writer, tokio::spawn(async { None }));
        self.writer = tokio::spawn(async move {
            let mut writer = previous.await.unwrap()?;
            writer.write_all(&request).await.ok()?;
            Some(writer)
        });
        tokio::time::timeout(ANSWER_WITHIN, self.read_response()).await.expect("an answer in time")
    }

    async fn read_response(&mut self) -> RawResponse {
        let head_end = loop {
            if let Some(at) = self.read.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(self.fill().await, "the connection closed before a response head: {:?}", String::from_utf8_lossy(&self.read));
        };
        let head = String::from_utf8(self.read[..head_end].to_vec()).expect("an ASCII head");
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let length: usize = headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v.parse().unwrap()).expect("content-length");
        while self.read.len() < head_end + length {
            assert!(self.fill().await, "the connection closed inside a body");
        }
        let body = self.read[head_end..head_end + length].to_vec();
        self.read.drain(..head_end + length);
        RawResponse { status, headers, body }
    }

    /// Reads more; false at the end of the stream (or a reset).
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 16 * 1024];
        match self.reader.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.read.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }
}

/// Refusals hyper makes itself, before poem or Settle see the request: a URI too long, headers
/// too large or too many, a request line or header that is not HTTP.
#[tokio::test]
async fn requests_the_http_parser_refuses_have_a_code() {
    let app = TestApp::spawn().await;
    let token = app.token(Role::Viewer);
    let long_query = format!("/graphql?query={}", "%7B%20viewer%20%7B%20tenant%20%7D%20%7D%20".repeat(70_000 / 42 + 1));
    assert!(long_query.len() >= 70_000);
    // reqwest cannot send it: the URI type it builds on refuses more than 65,534 bytes.
    assert!(app.http.get(app.url(&long_query)).bearer_auth(&token).send().await.is_err());
    let many_headers: String = (0..101).map(|i| format!("X-Header-{i}: {i}\r\n")).collect();
    let cases: [(&str, Vec<u8>, (u16, &str)); 6] = [
        (
            "GET /graphql with a query string of 70,000 bytes",
            format!("GET {long_query} HTTP/1.1\r\nHost: settle\r\nAuthorization: Bearer {token}\r\n\r\n").into_bytes(),
            (414, "REQUEST_TOO_LARGE"),
        ),
        (
            "101 headers",
            format!("GET /graphql?query=%7Bviewer%7Btenant%7D%7D HTTP/1.1\r\nHost: settle\r\n{many_headers}\r\n").into_bytes(),
            (431, "REQUEST_TOO_LARGE"),
        ),
        (
            "a header of 1 MB",
            format!("GET /graphql HTTP/1.1\r\nHost: settle\r\nCookie: {}\r\n\r\n", "c".repeat(1 << 20)).into_bytes(),
            (431, "REQUEST_TOO_LARGE"),
        ),
        ("a method that is not a token", b"G(T /graphql HTTP/1.1\r\nHost: settle\r\n\r\n".to_vec(), (400, "QUERY_REJECTED")),
        ("a request line with a fourth part", b"GET /graphql HTTP/1.1 extra\r\nHost: settle\r\n\r\n".to_vec(), (400, "QUERY_REJECTED")),
        ("a header name with a space", b"GET /graphql HTTP/1.1\r\nHost: settle\r\nBad Header: x\r\n\r\n".to_vec(), (400, "QUERY_REJECTED")),
    ];
    for (case, request, expected) in cases {
        let mut connection = RawConnection::open(&app).await;
        let response = connection.exchange(request).await;
        let body = assert_refusal(case, response.status, response.header("content-type"), &response.body, expected);
        assert_eq!(response.header("connection"), Some("close"), "{case}");
        assert_eq!(response.header("x-request-id"), body["errors"][0]["extensions"]["requestId"].as_str(), "{case}");
    }

    // The same on a connection that already served a request.
    let mut connection = RawConnection::open(&app).await;
    let healthz = connection.exchange(b"GET /healthz HTTP/1.1\r\nHost: settle\r\n\r\n".to_vec()).await;
    assert_eq!((healthz.status, healthz.body.as_slice()), (200, br#"{"status":"ok","database":"ok"}"#.as_slice()));
    let response = connection.exchange(format!("GET {long_query} HTTP/1.1\r\nHost: settle\r\n\r\n").into_bytes()).await;
    assert_refusal("a long query string after a kept-alive request", response.status, response.header("content-type"), &response.body, (414, "REQUEST_TOO_LARGE"));

    still_answers(&app).await;
}
