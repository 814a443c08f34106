//! The double-entry journal (J1) and the trial balance as of a moment (T1): every money change is
//! entries whose debits equal their credits; accounts receivable is what OPEN invoices still owe
//! and client credit what payments still hold, as the API reports them; a past trial balance is
//! what it was then; the Xero CSV is the import layout and balances journal by journal.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::events::method;
use crate::helpers::*;
use crate::proofs::record_payment;

const RECEIVABLE: &str = "1200";
const CLIENT_CREDIT: &str = "2100";
const TAX: &str = "2200";
const SALES: &str = "4000";

const TRIAL_BALANCE: &str = "query($asOf: DateTime) { trialBalance(asOf: $asOf) { asOf
    rows { account { code name kind methodId } currency debit { amount } credit { amount } balance { amount } }
    totals { currency debit { amount } credit { amount } } } }";

const JOURNAL: &str = "query($after: String, $from: DateTime, $to: DateTime) { journal(first: 100, after: $after, from: $from, to: $to) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { id kind at auditEventId records description currency lines { account { code } debit { amount } credit { amount } } } } } }";

fn cents(amount: &Value) -> i64 {
    let text = amount.as_str().unwrap_or_else(|| panic!("an amount: {amount}"));
    let (whole, fraction) = text.split_once('.').expect("two decimals");
    let value = whole.trim_start_matches('-').parse::<i64>().unwrap() * 100 + fraction.parse::<i64>().unwrap();
    if text.starts_with('-') { -value } else { value }
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Runs a money mutation (its `$key` filled in) and returns the response, refused or not.
pub(crate) async fn change(caller: &Caller<'_>, query: &str, mut variables: Value) -> Gql {
    variables["key"] = json!(new_key());
    caller.post(query, variables).await
}

/// Every entry of the journal in the period, page by page.
async fn all_entries(caller: &Caller<'_>, from: Option<&str>, to: Option<&str>) -> Vec<Value> {
    let (mut entries, mut after) = (Vec::new(), Value::Null);
    loop {
        let data = caller.ok(JOURNAL, json!({"after": after, "from": from, "to": to})).await;
        let page = &data["journal"];
        entries.extend(page["edges"].as_array().unwrap().iter().map(|edge| edge["node"].clone()));
        if page["pageInfo"]["hasNextPage"] != true {
            assert_eq!(page["totalCount"].as_u64(), Some(entries.len() as u64), "totalCount counts every entry of the period");
            return entries;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
}

/// The trial balance's balances by account code (debits less credits, in cents), checking that
/// its debits equal its credits; the moment it is as of.
async fn balances(caller: &Caller<'_>, as_of: Option<&str>) -> (BTreeMap<String, i64>, String) {
    let data = caller.ok(TRIAL_BALANCE, json!({"asOf": as_of})).await;
    let trial = &data["trialBalance"];
    for total in trial["totals"].as_array().unwrap() {
        assert_eq!(total["debit"], total["credit"], "J1: debits equal credits in {}: {trial:#}", total["currency"]);
    }
    let rows = trial["rows"].as_array().unwrap();
    let by_code = rows
        .iter()
        .map(|row| {
            assert_eq!(cents(&row["debit"]["amount"]) - cents(&row["credit"]["amount"]), cents(&row["balance"]["amount"]), "{row}");
            (row["account"]["code"].as_str().unwrap().to_owned(), cents(&row["balance"]["amount"]))
        })
        .collect();
    (by_code, trial["asOf"].as_str().unwrap().to_owned())
}

/// What the API says is owed on OPEN invoices and held by non-void payments, in cents.
async fn owed_and_held(caller: &Caller<'_>) -> (i64, i64) {
    let data = caller
        .ok(
            "{ invoices(first: 100) { pageInfo { hasNextPage } edges { node { status balance { amount } } } }
               payments(first: 100) { pageInfo { hasNextPage } edges { node { status unallocated { amount } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["invoices"]["pageInfo"]["hasNextPage"], false, "the test keeps to one page");
    assert_eq!(data["payments"]["pageInfo"]["hasNextPage"], false, "the test keeps to one page");
    let nodes = |list: &str| data[list]["edges"].as_array().unwrap().iter().map(|e| e["node"].clone()).collect::<Vec<_>>();
    let owed = nodes("invoices").iter().filter(|i| i["status"] == "OPEN" || i["status"] == "OVERDUE").map(|i| cents(&i["balance"]["amount"])).sum();
    let held = nodes("payments").iter().filter(|p| p["status"] != "VOID").map(|p| cents(&p["unallocated"]["amount"])).sum();
    (owed, held)
}

/// The ids and figures the random changes draw from.
#[derive(Default)]
pub(crate) struct Known {
    pub invoices: Vec<String>,
    pub payments: Vec<String>,
    pub allocations: Vec<String>,
    pub credit_notes: Vec<String>,
}

/// What the random changes are made in: the seed's location and tax rate, payment methods, the
/// clients billed (the seed's alone unless more are given) and how many days back invoices and
/// payments may be dated (0: today, the practice's default).
pub(crate) struct Practice {
    pub seed: Seed,
    pub methods: Vec<String>,
    pub clients: Vec<String>,
    pub days_back: i64,
}

impl Practice {
    /// A client to bill; the same random draws as before when there is one.
    fn client(&self, rng: &mut StdRng) -> String {
        if self.clients.len() <= 1 { self.seed.client.clone() } else { pick(rng, &self.clients).unwrap().to_owned() }
    }

    /// A day up to `days_back` before today in the practice's timezone, or None (today) when
    /// changes are not back-dated.
    fn day(&self, rng: &mut StdRng) -> Option<chrono::NaiveDate> {
        let today = chrono::Utc::now().with_timezone(&chrono_tz::Australia::Sydney).date_naive();
        (self.days_back > 0).then(|| today - chrono::Duration::days(rng.random_range(0..=self.days_back)))
    }
}

const CREATE: &str = "mutation($input: InvoiceInput!, $key: String!) { createInvoice(input: $input, idempotencyKey: $key) { invoice { id } } }";
const UPDATE: &str = "mutation($id: ID!, $input: InvoiceInput!, $key: String!) { updateInvoice(id: $id, input: $input, idempotencyKey: $key) { invoice { id } } }";
pub(crate) const FINALIZE: &str = "mutation($id: ID!, $key: String!) { finalizeInvoice(id: $id, idempotencyKey: $key) { invoice { id } } }";
const RECORD: &str = "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id } } }";
pub(crate) const PAY: &str = "mutation($id: ID!, $m: ID!, $a: Amount, $key: String!) { payInvoice(id: $id, input: {methodId: $m, amount: $a}, idempotencyKey: $key) {
    payment { id allocations { id } } } }";
const APPLY: &str = "mutation($id: ID!, $i: ID!, $a: Amount!, $key: String!) { applyPayment(id: $id, invoiceId: $i, amount: $a, idempotencyKey: $key) { allocation { id } } }";
pub(crate) const UNAPPLY: &str = "mutation($id: ID!, $key: String!) { removeAllocation(id: $id, idempotencyKey: $key) { allocation { id } } }";
const REFUND: &str = "mutation($id: ID!, $a: Amount!, $key: String!) { refundPayment(id: $id, input: {amount: $a}, idempotencyKey: $key) { refund { id } } }";
const VOID_PAYMENT: &str = "mutation($id: ID!, $key: String!) { voidPayment(id: $id, idempotencyKey: $key) { payment { id } } }";
const CREDIT: &str = "mutation($i: ID!, $a: Amount!, $key: String!) { issueCreditNote(invoiceId: $i, idempotencyKey: $key,
    input: {reason: \"Goodwill\", lines: [{lineIndex: 0, amount: $a}]}) { creditNote { id } } }";
const VOID_CREDIT: &str = "mutation($id: ID!, $key: String!) { voidCreditNote(id: $id, idempotencyKey: $key) { creditNote { id } } }";
const VOID_INVOICE: &str = "mutation($id: ID!, $key: String!) { voidInvoice(id: $id, idempotencyKey: $key) { invoice { id } } }";
pub(crate) const REVERT: &str = "mutation($id: ID!, $key: String!) { revertInvoiceToDraft(id: $id, idempotencyKey: $key) { invoice { id } } }";

fn pick<'a>(rng: &mut StdRng, ids: &'a [String]) -> Option<&'a str> {
    (!ids.is_empty()).then(|| ids[rng.random_range(0..ids.len())].as_str())
}

/// The newest id half of the time: voids need a record nothing else has touched yet.
fn pick_recent<'a>(rng: &mut StdRng, ids: &'a [String]) -> Option<&'a str> {
    if rng.random_bool(0.5) { ids.last().map(String::as_str) } else { pick(rng, ids) }
}

/// A figure of a record as the API shows it now, in cents.
async fn figure(caller: &Caller<'_>, query: &str, id: &str, path: [&str; 2]) -> i64 {
    let data = caller.ok(query, json!({"id": id})).await;
    cents(&data[path[0]][path[1]]["amount"])
}

async fn unallocated(caller: &Caller<'_>, payment: &str) -> i64 {
    figure(caller, "query($id: ID!) { payment(id: $id) { unallocated { amount } } }", payment, ["payment", "unallocated"]).await
}

async fn balance(caller: &Caller<'_>, invoice: &str) -> i64 {
    figure(caller, "query($id: ID!) { invoice(id: $id) { balance { amount } } }", invoice, ["invoice", "balance"]).await
}

/// One random money change; a refusal by the ledger (an invoice no longer open, a payment with
/// allocations, a payment of another client) is part of the game, an INTERNAL error is not.
pub(crate) async fn random_change(app: &TestApp, practice: &Practice, known: &mut Known, rng: &mut StdRng) {
    let billing = app.billing();
    let amount = |rng: &mut StdRng, max: i64| money(rng.random_range(1..=max.max(1)));
    let draft = |rng: &mut StdRng| {
        let mut line = json!({"description": "Consultation", "unitPrice": amount(rng, 20_000), "quantity": rng.random_range(1..=3).to_string()});
        if rng.random_bool(0.7) {
            line["taxRateId"] = json!(practice.seed.gst);
        }
        let mut input = json!({"clientId": practice.client(rng), "locationId": practice.seed.location, "lines": [line]});
        if let Some(issued) = practice.day(rng) {
            input["issueDate"] = json!(issued.to_string());
            input["dueDate"] = json!((issued + chrono::Duration::days(rng.random_range(0..=30))).to_string());
        }
        input
    };
    let response = match rng.random_range(0..12) {
        0 | 1 => {
            let input = draft(rng);
            let created = change(&billing, CREATE, json!({"input": input})).await;
            let id = created.data()["createInvoice"]["invoice"]["id"].as_str().expect("a draft").to_owned();
            known.invoices.push(id.clone());
            change(&billing, FINALIZE, json!({"id": id})).await
        }
        2 => {
            let method = pick(rng, &practice.methods).unwrap();
            let mut input = json!({"clientId": practice.client(rng), "locationId": practice.seed.location, "methodId": method, "amount": amount(rng, 30_000)});
            if let Some(date) = practice.day(rng) {
                input["date"] = json!(date.to_string());
            }
            let response = change(&billing, RECORD, json!({"input": input})).await;
            known.payments.extend(response.data()["recordPayment"]["payment"]["id"].as_str().map(str::to_owned));
            response
        }
        3 => {
            let Some(invoice) = pick(rng, &known.invoices) else { return };
            let method = pick(rng, &practice.methods).unwrap();
            // Sometimes more than the balance: the excess stays as credit (P3).
            let response = change(&billing, PAY, json!({"id": invoice, "m": method, "a": amount(rng, 25_000)})).await;
            let payment = &response.data()["payInvoice"]["payment"];
            known.payments.extend(payment["id"].as_str().map(str::to_owned));
            known.allocations.extend(payment["allocations"].as_array().into_iter().flatten().filter_map(|a| a["id"].as_str().map(str::to_owned)));
            response
        }
        4 | 5 => {
            let (Some(payment), Some(invoice)) = (pick(rng, &known.payments), pick(rng, &known.invoices)) else { return };
            let most = unallocated(&billing, payment).await.min(balance(&billing, invoice).await);
            let response = change(&billing, APPLY, json!({"id": payment, "i": invoice, "a": amount(rng, most)})).await;
            known.allocations.extend(response.data()["applyPayment"]["allocation"]["id"].as_str().map(str::to_owned));
            response
        }
        6 => {
            let Some(allocation) = pick(rng, &known.allocations) else { return };
            change(&billing, UNAPPLY, json!({"id": allocation})).await
        }
        7 => {
            let Some(payment) = pick(rng, &known.payments) else { return };
            let most = unallocated(&billing, payment).await;
            change(&billing, REFUND, json!({"id": payment, "a": amount(rng, most)})).await
        }
        8 => {
            let Some(payment) = pick_recent(rng, &known.payments) else { return };
            change(&billing, VOID_PAYMENT, json!({"id": payment})).await
        }
        9 => {
            let Some(invoice) = pick(rng, &known.invoices) else { return };
            let most = balance(&billing, invoice).await;
            let response = change(&billing, CREDIT, json!({"i": invoice, "a": amount(rng, most)})).await;
            known.credit_notes.extend(response.data()["issueCreditNote"]["creditNote"]["id"].as_str().map(str::to_owned));
            response
        }
        10 => {
            let Some(note) = pick(rng, &known.credit_notes) else { return };
            change(&billing, VOID_CREDIT, json!({"id": note})).await
        }
        _ => {
            let Some(invoice) = pick_recent(rng, &known.invoices).map(str::to_owned) else { return };
            if rng.random_bool(0.5) {
                change(&billing, VOID_INVOICE, json!({"id": invoice})).await
            } else {
                // Reverted to draft and finalized again, edited in between or not: the revert and
                // the finalization are changes of the journal, and an edit leaves what the
                // finalization it replaced posted as it was (T1 at the snapshot).
                let reverted = change(&billing, REVERT, json!({"id": invoice})).await;
                if reverted.error_code().is_none() && rng.random_bool(0.7) {
                    if rng.random_bool(0.5) {
                        let edited = change(&billing, UPDATE, json!({"id": invoice, "input": draft(rng)})).await;
                        assert_eq!(edited.error_code(), None, "{:#}", edited.body);
                    }
                    change(&billing, FINALIZE, json!({"id": invoice})).await
                } else {
                    reverted
                }
            }
        }
    };
    assert!(!matches!(response.error_code(), Some("INTERNAL" | "TRANSACTION_CONFLICT")), "{:#}", response.body);
}

/// J1 and T1 over random sequences of money changes: after each sequence the trial balance's
/// debits equal its credits, accounts receivable is the sum of OPEN invoice balances and client
/// credit the sum of non-void payments' unallocated amounts, as the API reports them; the
/// journal's entries each balance and add up to the trial balance; and the trial balance as of a
/// moment taken mid-sequence is the one read at that moment.
#[tokio::test]
async fn j1_t1_the_journal_balances_and_follows_the_records_over_random_changes() {
    Box::pin(scenario_random_changes()).await
}

async fn scenario_random_changes() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let viewer = app.viewer();
    let methods = vec![method(&viewer, "Cash").await, method(&viewer, "EFTPOS").await, method(&viewer, "Cheque").await];
    let practice = Practice { seed, methods, clients: Vec::new(), days_back: 0 };
    let first_seed: u64 = std::env::var("JOURNAL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let mut known = Known::default();
    for round in 0..6u64 {
        let seed = first_seed.wrapping_add(round);
        println!("journal property round {round}: seed {seed} (JOURNAL_SEED={first_seed} repeats the test)");
        let mut rng = StdRng::seed_from_u64(seed);
        let steps = 30;
        let snapshot_at = rng.random_range(1..steps);
        let mut snapshot = None;
        for step in 0..steps {
            if step == snapshot_at {
                snapshot = Some(balances(&viewer, None).await);
            }
            random_change(&app, &practice, &mut known, &mut rng).await;
        }
        let (now, _) = balances(&viewer, None).await;
        let (owed, held) = owed_and_held(&viewer).await;
        let account = |code: &str| now.get(code).copied().unwrap_or(0);
        assert_eq!(account(RECEIVABLE), owed, "seed {seed}: accounts receivable is what OPEN invoices owe: {now:?}");
        assert_eq!(-account(CLIENT_CREDIT), held, "seed {seed}: client credit held is what payments hold unallocated: {now:?}");

        let entries = all_entries(&viewer, None, None).await;
        let mut summed: BTreeMap<String, i64> = BTreeMap::new();
        for entry in &entries {
            let lines = entry["lines"].as_array().unwrap();
            let side = |name: &str| lines.iter().map(|l| cents(&l[name]["amount"])).sum::<i64>();
            assert_eq!(side("debit"), side("credit"), "seed {seed}: J1, an entry balances: {entry:#}");
            for line in lines {
                *summed.entry(line["account"]["code"].as_str().unwrap().to_owned()).or_default() += cents(&line["debit"]["amount"]) - cents(&line["credit"]["amount"]);
            }
        }
        let ats: Vec<&str> = entries.iter().map(|e| e["at"].as_str().unwrap()).collect();
        assert!(ats.windows(2).all(|w| chrono_at(w[0]) <= chrono_at(w[1])), "seed {seed}: the journal is in time order");
        assert_eq!(summed, now, "seed {seed}: the journal's entries add up to the trial balance");

        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        entries.iter().for_each(|e| *kinds.entry(e["kind"].as_str().unwrap()).or_default() += 1);
        println!("after round {round}: {} entries {kinds:?}", entries.len());

        let (then, as_of) = snapshot.expect("a snapshot mid-sequence");
        let (asked, asked_as_of) = balances(&viewer, Some(&as_of)).await;
        assert_eq!(asked_as_of, as_of);
        assert_eq!(asked, then, "seed {seed}: T1, the trial balance as of {as_of} is the one read then");
    }
}

/// A practice with a client and a location; its Cash method's id.
async fn practice_with_cash() -> (TestApp, Seed, String) {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = method(&app.viewer(), "Cash").await;
    (app, seed, cash)
}

/// A finalized invoice of one line of `price` with GST; its id.
async fn taxed_invoice(app: &TestApp, seed: &Seed, price: &str) -> String {
    let line = json!({"description": "Consultation", "unitPrice": price, "taxRateId": seed.gst});
    let draft = app.draft_invoice(seed, json!([line])).await;
    app.finalize(draft["id"].as_str().unwrap()).await["id"].as_str().unwrap().to_owned()
}

/// GET of the journal CSV with a VIEWER token.
async fn csv(app: &TestApp, url: &str) -> reqwest::Response {
    app.http.get(url).bearer_auth(app.token(settle::auth::Role::Viewer)).send().await.unwrap()
}

fn chrono_at(text: &str) -> chrono::DateTime<chrono::Utc> {
    text.parse().unwrap_or_else(|_| panic!("a time: {text}"))
}

/// The entries of one life: an invoice with tax, a payment with more than it owes, a credit note,
/// a refund of the excess, and the voids that take them back, each with its lines.
#[tokio::test]
async fn j1_each_change_posts_its_lines() {
    Box::pin(scenario_each_change()).await
}

async fn scenario_each_change() {
    let (app, seed, cash) = practice_with_cash().await;
    let billing = app.billing();
    let invoice = taxed_invoice(&app, &seed, "100.00").await;
    let paid = change(&billing, PAY, json!({"id": invoice, "m": cash, "a": "150.00"})).await;
    let payment = paid.data()["payInvoice"]["payment"]["id"].as_str().unwrap().to_owned();
    let allocation = paid.data()["payInvoice"]["payment"]["allocations"][0]["id"].as_str().unwrap().to_owned();
    change(&billing, REFUND, json!({"id": payment, "a": "40.00"})).await;
    change(&billing, UNAPPLY, json!({"id": allocation})).await;
    let note = change(&billing, CREDIT, json!({"i": invoice, "a": "22.00"})).await;
    let note = note.data()["issueCreditNote"]["creditNote"]["id"].as_str().unwrap().to_owned();
    change(&billing, VOID_CREDIT, json!({"id": note})).await;
    assert_eq!(change(&billing, VOID_INVOICE, json!({"id": invoice})).await.error_code(), None);
    change(&billing, REFUND, json!({"id": payment, "a": "10.00"})).await;
    // V1: a payment with a refund cannot be voided; another one is.
    let other = record_payment(&app, &seed, &cash, "25.00").await;
    assert_eq!(change(&billing, VOID_PAYMENT, json!({"id": other})).await.error_code(), None);

    let entries = all_entries(&app.viewer(), None, None).await;
    let walk: Vec<(String, Vec<(String, String, String)>)> = entries
        .iter()
        .map(|e| {
            let lines = e["lines"].as_array().unwrap().iter().map(|l| {
                (l["account"]["code"].as_str().unwrap().to_owned(), l["debit"]["amount"].as_str().unwrap().to_owned(), l["credit"]["amount"].as_str().unwrap().to_owned())
            });
            (e["kind"].as_str().unwrap().to_owned(), lines.collect())
        })
        .collect();
    let cash_code = entries[1]["lines"][0]["account"]["code"].as_str().unwrap().to_owned();
    let l = |code: &str, debit: &str, credit: &str| (code.to_owned(), debit.to_owned(), credit.to_owned());
    let expected = vec![
        ("INVOICE_FINALIZED", vec![l(RECEIVABLE, "110.00", "0.00"), l(SALES, "0.00", "100.00"), l(TAX, "0.00", "10.00")]),
        ("PAYMENT_RECEIVED", vec![l(&cash_code, "150.00", "0.00"), l(CLIENT_CREDIT, "0.00", "150.00")]),
        ("PAYMENT_ALLOCATED", vec![l(CLIENT_CREDIT, "110.00", "0.00"), l(RECEIVABLE, "0.00", "110.00")]),
        ("REFUND_PAID", vec![l(CLIENT_CREDIT, "40.00", "0.00"), l(&cash_code, "0.00", "40.00")]),
        ("ALLOCATION_REMOVED", vec![l(RECEIVABLE, "110.00", "0.00"), l(CLIENT_CREDIT, "0.00", "110.00")]),
        ("CREDIT_NOTE_ISSUED", vec![l("4100", "20.00", "0.00"), l(TAX, "2.00", "0.00"), l(RECEIVABLE, "0.00", "22.00")]),
        ("CREDIT_NOTE_VOIDED", vec![l("4100", "0.00", "20.00"), l(TAX, "0.00", "2.00"), l(RECEIVABLE, "22.00", "0.00")]),
        ("INVOICE_VOIDED", vec![l(RECEIVABLE, "0.00", "110.00"), l(SALES, "100.00", "0.00"), l(TAX, "10.00", "0.00")]),
        ("REFUND_PAID", vec![l(CLIENT_CREDIT, "10.00", "0.00"), l(&cash_code, "0.00", "10.00")]),
        ("PAYMENT_RECEIVED", vec![l(&cash_code, "25.00", "0.00"), l(CLIENT_CREDIT, "0.00", "25.00")]),
        ("PAYMENT_VOIDED", vec![l(CLIENT_CREDIT, "25.00", "0.00"), l(&cash_code, "0.00", "25.00")]),
    ];
    let expected: Vec<(String, Vec<(String, String, String)>)> = expected.into_iter().map(|(kind, lines)| (kind.to_owned(), lines)).collect();
    assert_eq!(walk, expected, "{entries:#?}");
    assert_eq!(entries[0]["description"], "Invoice INV-0001 finalized");
    assert_eq!(entries[0]["records"], json!([format!("invoice:{invoice}")]));
    assert!(entries[2]["description"].as_str().unwrap().starts_with("Payment PAY-0001 applied to invoice INV-0001"), "{:#}", entries[2]);

    // The journal of a period: the changes from the refund (included) to the credit note's void
    // (left out).
    let (from, to) = (entries[3]["at"].as_str().unwrap(), entries[6]["at"].as_str().unwrap());
    let period = all_entries(&app.viewer(), Some(from), Some(to)).await;
    let kinds: Vec<&str> = period.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["REFUND_PAID", "ALLOCATION_REMOVED", "CREDIT_NOTE_ISSUED"]);
    let refused = app.viewer().fails(JOURNAL, json!({"from": to, "to": from}), "INVALID_INPUT").await;
    assert!(refused.body["errors"][0]["message"].as_str().unwrap().contains("before"), "{:#}", refused.body);
    app.viewer().fails(JOURNAL, json!({"after": "bm90IGEgY3Vyc29y"}), "INVALID_INPUT").await;
    app.with_token(None).fails("{ trialBalance { asOf } }", json!({}), "UNAUTHENTICATED").await;
}

/// The Xero manual journal CSV: the import template's header exactly, a narration and a date
/// per journal, whose signed amounts sum to zero; amounts with two decimals, a minus for credits;
/// dates as `dd mmm yyyy`.
#[tokio::test]
async fn j1_the_xero_csv_is_the_import_layout_and_each_journal_balances() {
    Box::pin(scenario_csv()).await
}

async fn scenario_csv() {
    let (app, seed, cash) = practice_with_cash().await;
    let billing = app.billing();
    let invoice = taxed_invoice(&app, &seed, "80.00").await;
    change(&billing, PAY, json!({"id": invoice, "m": cash, "a": "100.00"})).await;

    let today = chrono::Utc::now().with_timezone(&chrono_tz::Australia::Sydney).date_naive();
    let url = |query: &str| app.url(&format!("/reports/journal.csv?{query}"));
    let period = format!("from={}&to={}", today - chrono::Duration::days(1), today + chrono::Duration::days(1));
    let response = csv(&app, &url(&period)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(response.headers().get("link").is_none(), "one file holds it all");
    let text = response.text().await.unwrap();
    let rows: Vec<&str> = text.strip_suffix("\r\n").expect("CRLF line ends").split("\r\n").collect();
    assert_eq!(
        rows[0],
        "*Narration,*Date,Description,*AccountCode,*TaxRate,*Amount,TrackingName1,TrackingOption1,TrackingName2,TrackingOption2"
    );
    let mut journals: BTreeMap<(String, String), i64> = BTreeMap::new();
    let date = today.format("%d %b %Y").to_string();
    for row in &rows[1..] {
        let fields = split_csv(row);
        assert_eq!(fields.len(), 10, "{row}");
        assert_eq!(fields[1], date, "the day in the practice's timezone, dd mmm yyyy: {row}");
        assert_eq!(fields[4], "BAS Excluded", "{row}");
        let amount = &fields[5];
        let digits = amount.strip_prefix('-').unwrap_or(amount);
        assert!(digits.split_once('.').is_some_and(|(w, f)| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) && f.len() == 2), "{amount}");
        assert!(!amount.starts_with("-0.00") && amount != "0.00", "no zero lines: {row}");
        *journals.entry((fields[0].clone(), fields[1].clone())).or_default() += cents(&json!(amount));
    }
    assert_eq!(rows.len() - 1, 3 + 2 + 2, "finalized (3 lines), received (2), allocated (2)");
    assert_eq!(journals.len(), 3, "{journals:?}");
    assert!(journals.values().all(|sum| *sum == 0), "each journal balances: {journals:?}");
    assert!(rows.iter().any(|row| row.contains(",1200,BAS Excluded,88.00,")), "{text}");
    assert!(rows.iter().any(|row| row.contains(",4000,BAS Excluded,-80.00,")), "{text}");
    assert!(rows.iter().any(|row| row.contains(",2200,BAS Excluded,-8.00,")), "{text}");

    // Another tax rate name; a day without changes is a file of the header alone.
    let other = csv(&app, &url(&format!("{period}&taxRate=No+GST"))).await;
    assert!(other.text().await.unwrap().contains(",No GST,"));
    let empty = csv(&app, &url("from=2020-01-01&to=2020-01-31")).await;
    assert_eq!(empty.text().await.unwrap(), format!("{}\r\n", rows[0]));

    // Refusals, in the API's error shape.
    for (query, token, status, code) in [
        (period.as_str(), None, 401, "UNAUTHENTICATED"),
        ("from=2026-11-30&to=2026-11-01", Some(settle::auth::Role::Viewer), 400, "INVALID_INPUT"),
        ("to=2026-11-01", Some(settle::auth::Role::Viewer), 400, "INVALID_INPUT"),
        ("from=2026-11-01&to=2026-11-30&currency=XYZ", Some(settle::auth::Role::Viewer), 400, "UNKNOWN_CURRENCY"),
    ] {
        let mut request = app.http.get(url(query));
        if let Some(role) = token {
            request = request.bearer_auth(app.token(role));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], code, "{query}: {body:#}");
    }
}

/// A CSV row's fields, RFC 4180 quoting undone.
fn split_csv(row: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted, mut chars) = (Vec::new(), String::new(), false, row.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// An invoice reverted to draft and edited keeps, in the edit's audit summary, the total and tax
/// of the finalization the edit replaced (docs/rules.md, "Journal"): that finalization posted its
/// tax to tax payable and the rest to sales, and still does after the edit, so the trial balance
/// as of a moment between it and the revert is what it was then (T1); the revert takes back
/// exactly what it posted, and the finalization after the edit posts the new amounts.
#[tokio::test]
async fn j1_t1_a_finalization_replaced_by_an_edit_keeps_its_tax() {
    Box::pin(scenario_edited_after_revert()).await
}

async fn scenario_edited_after_revert() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let (billing, viewer) = (app.billing(), app.viewer());
    let line = |price: &str| json!([{"description": "Consultation", "unitPrice": price, "taxRateId": seed.gst}]);
    let draft = app.draft_invoice(&seed, line("100.00")).await;
    let invoice = draft["id"].as_str().unwrap().to_owned();
    app.finalize(&invoice).await;
    let (finalized, between) = balances(&viewer, None).await;
    assert_eq!((finalized[RECEIVABLE], finalized[SALES], finalized[TAX]), (11_000, -10_000, -1_000), "100.00 and 10% GST: {finalized:?}");
    assert_eq!(change(&billing, REVERT, json!({"id": invoice})).await.error_code(), None);
    let input = json!({"clientId": seed.client, "locationId": seed.location, "lines": line("200.00")});
    assert_eq!(change(&billing, UPDATE, json!({"id": invoice, "input": input})).await.error_code(), None);
    app.finalize(&invoice).await;

    let entries = all_entries(&viewer, None, None).await;
    let lines = |at: usize| -> Vec<(String, i64)> {
        entries[at]["lines"].as_array().unwrap().iter().map(|l| (l["account"]["code"].as_str().unwrap().to_owned(), cents(&l["debit"]["amount"]) - cents(&l["credit"]["amount"]))).collect()
    };
    let kinds: Vec<&str> = entries.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["INVOICE_FINALIZED", "INVOICE_REVERTED", "INVOICE_FINALIZED"]);
    assert_eq!(lines(0), [(RECEIVABLE.to_owned(), 11_000), (SALES.to_owned(), -10_000), (TAX.to_owned(), -1_000)], "{:#}", entries[0]);
    assert!(!entries[0]["description"].as_str().unwrap().contains("not kept"), "{:#}", entries[0]);
    assert_eq!(lines(1), [(RECEIVABLE.to_owned(), -11_000), (SALES.to_owned(), 10_000), (TAX.to_owned(), 1_000)], "{:#}", entries[1]);
    assert_eq!(lines(2), [(RECEIVABLE.to_owned(), 22_000), (SALES.to_owned(), -20_000), (TAX.to_owned(), -2_000)]);

    let (then, as_of) = balances(&viewer, Some(&between)).await;
    assert_eq!((as_of.as_str(), &then), (between.as_str(), &finalized), "T1: the first finalization's tax is in tax payable, not in sales");
    // `balances` checks that debits equal credits.
    let (now, _) = balances(&viewer, None).await;
    assert_eq!((now[RECEIVABLE], now[SALES], now[TAX]), (22_000, -20_000, -2_000), "{now:?}");
    assert_eq!(now[RECEIVABLE], owed_and_held(&viewer).await.0, "J1: receivable is what the OPEN invoice owes");
    let verified = app.admin().ok("{ auditVerify { status } }", json!({})).await;
    assert_eq!(verified["auditVerify"]["status"], "OK", "H1: the summaries that keep the tax are hashed like every other: {verified:#}");
}

/// A file holds at most Xero's 300 lines, whole entries only; the `Link` header gives the next
/// file, which goes on after the last entry of the one before.
#[tokio::test]
async fn j1_a_long_journal_comes_in_files_of_at_most_300_lines() {
    Box::pin(scenario_long_csv()).await
}

async fn scenario_long_csv() {
    let (app, seed, cash) = practice_with_cash().await;
    // 151 payments of 2 lines each: 302 lines.
    for _ in 0..151 {
        record_payment(&app, &seed, &cash, "1.00").await;
    }
    let today = chrono::Utc::now().with_timezone(&chrono_tz::Australia::Sydney).date_naive();
    let mut url = app.url(&format!("/reports/journal.csv?from={}&to={}", today - chrono::Duration::days(1), today));
    let mut files = Vec::new();
    loop {
        let response = csv(&app, &url).await;
        assert_eq!(response.status(), 200);
        let next = response.headers().get("link").map(|link| link.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        files.push(text.lines().count() - 1);
        let Some(link) = next else { break };
        let path = link.strip_prefix('<').and_then(|l| l.split_once(">; rel=\"next\"")).expect("a Link to the next file").0.to_owned();
        url = app.url(&path);
        assert!(files.len() < 5, "the files end");
    }
    assert_eq!(files, [300, 2], "150 entries, then the last");
}
