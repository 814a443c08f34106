//! E1, E2 through the API: every committed money change records its ledger events with its audit
//! event, a refused or repeated request records none, and a tenant's changes are positioned 1, 2,
//! 3, ... without gaps, in the order they committed, readable after any position.
//!
//! Each test reads the tenant's last position before what it checks and counts from there, so
//! the set-up (clients, invoices) may record events of its own.

use std::collections::HashMap;

use futures::future::join_all;
use serde_json::{Value, json};
use settle::auth::Role;

use crate::helpers::*;

const EVENTS_QUERY: &str = "query($first: Int, $after: String, $afterPosition: Int) {
    ledgerEvents(first: $first, after: $after, afterPosition: $afterPosition) {
        totalCount
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
        edges { cursor node { position auditEventId at actor action events {
            type
            ... on PaymentRecordedEvent { paymentId clientId amount { amount currency } }
            ... on PaymentAllocatedEvent { allocationId paymentId invoiceId amount { amount currency } }
            ... on InvoiceStatusChangedEvent { invoiceId from to }
            ... on InvoiceFinalizedEvent { invoiceId }
        } } }
    }
}";

const PAY_QUERY: &str = "mutation($id: ID!, $input: PayInvoiceInput!, $key: String!) {
    payInvoice(id: $id, input: $input, idempotencyKey: $key) { payment { id allocations { id invoiceId } } }
}";

/// A page of the caller's ledger events.
async fn events_page(caller: &Caller<'_>, variables: Value) -> Value {
    caller.ok(EVENTS_QUERY, variables).await["ledgerEvents"].clone()
}

/// Every ledger event record of the caller's tenant after `after`, walking the pages.
pub(crate) async fn records_after(caller: &Caller<'_>, after: i64) -> Vec<Value> {
    let mut records = Vec::new();
    let mut page = events_page(caller, json!({"first": 100, "afterPosition": after})).await;
    loop {
        records.extend(page["edges"].as_array().unwrap().iter().map(|edge| edge["node"].clone()));
        if page["pageInfo"]["hasNextPage"] != true {
            return records;
        }
        page = events_page(caller, json!({"first": 100, "after": page["pageInfo"]["endCursor"]})).await;
    }
}

/// The tenant's last position (0 before its first ledger event).
pub(crate) async fn last_position(caller: &Caller<'_>) -> i64 {
    let last = caller.ok("{ lastLedgerPosition }", json!({})).await["lastLedgerPosition"].as_i64().unwrap();
    // Positions have no gaps: the last is also how many there are.
    assert_eq!(last, events_page(caller, json!({"first": 1})).await["totalCount"].as_i64().unwrap());
    last
}

pub(crate) fn positions(records: &[Value]) -> Vec<i64> {
    records.iter().map(|record| record["position"].as_i64().unwrap()).collect()
}

pub(crate) fn types(record: &Value) -> Vec<&str> {
    record["events"].as_array().unwrap().iter().map(|event| event["type"].as_str().unwrap()).collect()
}

/// The id of the caller's tenant's payment method called `name`.
pub(crate) async fn method(caller: &Caller<'_>, name: &str) -> String {
    let data = caller.ok("{ paymentMethods { id name } }", json!({})).await;
    let methods = data["paymentMethods"].as_array().unwrap();
    methods.iter().find(|m| m["name"] == name).unwrap()["id"].as_str().unwrap().to_owned()
}

/// A client and a location of the caller's tenant (ADMIN).
pub(crate) async fn seed_tenant(admin: &Caller<'_>) -> (String, String) {
    let client = admin.ok("mutation { createClient(input: {name: \"Ann Lee\"}) { id } }", json!({})).await;
    let location = admin.ok("mutation { createLocation(input: {name: \"Main St Clinic\"}) { id } }", json!({})).await;
    (client["createClient"]["id"].as_str().unwrap().to_owned(), location["createLocation"]["id"].as_str().unwrap().to_owned())
}

/// An OPEN invoice of one untaxed line of `amount` for the caller's tenant; returns its id.
pub(crate) async fn open_invoice(caller: &Caller<'_>, (client, location): &(String, String), amount: &str) -> String {
    let draft = caller
        .ok(
            "mutation($input: InvoiceInput!, $key: String!) { createInvoice(input: $input, idempotencyKey: $key) { invoice { id } } }",
            json!({"input": {"clientId": client, "locationId": location, "lines": [{"description": "Consultation", "unitPrice": amount}]}, "key": new_key()}),
        )
        .await;
    let id = draft["createInvoice"]["invoice"]["id"].as_str().unwrap().to_owned();
    caller
        .ok(
            "mutation($id: ID!, $key: String!) { finalizeInvoice(id: $id, idempotencyKey: $key) { invoice { id } } }",
            json!({"id": id, "key": new_key()}),
        )
        .await;
    id
}

pub(crate) async fn pay(caller: &Caller<'_>, invoice: &str, input: Value, key: String) -> Gql {
    caller.post(PAY_QUERY, json!({"id": invoice, "input": input, "key": key})).await
}

// ---------------------------------------------------------------------------------------------
// E1: what a change records.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn e1_pay_invoice_records_one_positioned_record_with_its_typed_events() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let invoice = app.open_invoice(&seed, "100.00").await["id"].as_str().unwrap().to_owned();
    let cash = method(&app.viewer(), "Cash").await;
    let before = last_position(&app.viewer()).await;

    let paid = pay(&app.billing(), &invoice, json!({"methodId": cash}), new_key()).await;
    assert!(paid.body["errors"].is_null(), "{:#}", paid.body);
    let payment = paid.data()["payInvoice"]["payment"]["id"].as_str().unwrap().to_owned();
    let allocation = paid.data()["payInvoice"]["payment"]["allocations"][0]["id"].as_str().unwrap().to_owned();

    // Positioned before payInvoice answered, and readable by a VIEWER.
    let records = records_after(&app.viewer(), before).await;
    assert_eq!(positions(&records), vec![before + 1], "one change, one record: {records:#?}");
    let record = &records[0];
    assert_eq!(record["action"], "payment.pay_invoice");
    assert_eq!(record["actor"], format!("test-{}", Role::Billing));
    let trail = app.viewer().ok("{ auditEvents(first: 1) { edges { node { id action } } } }", json!({})).await;
    assert_eq!(record["auditEventId"], trail["auditEvents"]["edges"][0]["node"]["id"], "stored on the change's own audit event");
    assert_eq!(
        record["events"],
        json!([
            {"type": "PAYMENT_RECORDED", "paymentId": payment, "clientId": seed.client, "amount": {"amount": "100.00", "currency": "AUD"}},
            {"type": "PAYMENT_ALLOCATED", "allocationId": allocation, "paymentId": payment, "invoiceId": invoice,
                "amount": {"amount": "100.00", "currency": "AUD"}},
            {"type": "INVOICE_STATUS_CHANGED", "invoiceId": invoice, "from": "OPEN", "to": "PAID"},
        ]),
    );

    // A part payment leaves the invoice OPEN: no status change.
    let other = app.open_invoice(&seed, "100.00").await["id"].as_str().unwrap().to_owned();
    let before = last_position(&app.viewer()).await;
    let part = pay(&app.billing(), &other, json!({"methodId": cash, "amount": "40.00"}), new_key()).await;
    assert!(part.body["errors"].is_null(), "{:#}", part.body);
    let records = records_after(&app.viewer(), before).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(types(&records[0]), ["PAYMENT_RECORDED", "PAYMENT_ALLOCATED"], "OPEN stays OPEN: {records:#?}");
}

#[tokio::test]
async fn e1_record_payment_and_finalize_with_a_payment_record_their_events() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = method(&app.viewer(), "Cash").await;
    let first = app.open_invoice(&seed, "30.00").await["id"].as_str().unwrap().to_owned();
    let second = app.open_invoice(&seed, "50.00").await["id"].as_str().unwrap().to_owned();
    let before = last_position(&app.viewer()).await;

    // A standalone payment spread over two invoices: it pays the first off, part of the second.
    let input = json!({"clientId": seed.client, "locationId": seed.location, "methodId": cash, "amount": "60.00",
        "allocations": [{"invoiceId": first, "amount": "30.00"}, {"invoiceId": second, "amount": "20.00"}]});
    let recorded = app
        .billing()
        .ok(
            "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id } } }",
            json!({"input": input, "key": new_key()}),
        )
        .await;
    let payment = recorded["recordPayment"]["payment"]["id"].as_str().unwrap().to_owned();
    let records = records_after(&app.viewer(), before).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["action"], "payment.record");
    assert_eq!(
        types(&records[0]),
        ["PAYMENT_RECORDED", "PAYMENT_ALLOCATED", "INVOICE_STATUS_CHANGED", "PAYMENT_ALLOCATED"],
        "{records:#?}"
    );
    let events = records[0]["events"].as_array().unwrap();
    assert_eq!(events[0]["amount"]["amount"], "60.00");
    assert_eq!((&events[1]["invoiceId"], &events[1]["amount"]["amount"]), (&json!(first), &json!("30.00")));
    assert_eq!((&events[2]["invoiceId"], &events[2]["to"]), (&json!(first), &json!("PAID")));
    assert_eq!((&events[3]["invoiceId"], &events[3]["amount"]["amount"]), (&json!(second), &json!("20.00")));
    assert!(events[1..].iter().step_by(2).all(|e| e["paymentId"] == payment.as_str()), "{events:#?}");

    // finalizeInvoice with APPLY_PAYMENT: one change, finalized then paid.
    let draft = app.draft_invoice(&seed, json!([{"description": "Consultation", "unitPrice": "80.00"}])).await["id"].as_str().unwrap().to_owned();
    let before = last_position(&app.viewer()).await;
    app.billing()
        .ok(
            "mutation($id: ID!, $input: FinalizeInvoiceInput!, $key: String!) { finalizeInvoice(id: $id, input: $input, idempotencyKey: $key) { invoice { id } } }",
            json!({"id": draft, "input": {"paymentOption": "APPLY_PAYMENT", "payment": {"methodId": cash}}, "key": new_key()}),
        )
        .await;
    let records = records_after(&app.viewer(), before).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["action"], "invoice.finalize_and_pay");
    assert_eq!(
        types(&records[0]),
        ["INVOICE_FINALIZED", "PAYMENT_RECORDED", "PAYMENT_ALLOCATED", "INVOICE_STATUS_CHANGED"],
        "{records:#?}"
    );
    assert_eq!(records[0]["events"][0]["invoiceId"], draft.as_str());
}

/// Runs a money mutation (BILLING) and returns the one record it added after `before`, checking
/// it is exactly one, at position `before + 1`.
async fn one_change(caller: &Caller<'_>, before: i64, query: &str, variables: Value) -> (Value, Value) {
    let data = caller.ok(query, variables).await;
    let added = records_after(caller, before).await;
    assert_eq!(positions(&added), vec![before + 1], "one positioned record for {query}: {added:#?}");
    (data, added[0].clone())
}

#[tokio::test]
async fn e1_every_kind_of_money_change_records_its_events_once() {
    let app = TestApp::spawn().await;
    let (admin, billing) = (app.admin(), app.billing());
    let seed = seed_tenant(&admin).await;
    let cash = method(&billing, "Cash").await;
    let card = method(&billing, "Credit card").await;
    let invoice = open_invoice(&billing, &seed, "100.00").await;
    let credited = open_invoice(&billing, &seed, "40.00").await;
    let charged = open_invoice(&billing, &seed, "30.00").await;
    let mut at = last_position(&billing).await;

    let record = "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id } } }";
    let input = json!({"clientId": seed.0, "locationId": seed.1, "methodId": cash, "amount": "50.00"});
    let (data, change) = one_change(&billing, at, record, json!({"input": input, "key": new_key()})).await;
    let payment = data["recordPayment"]["payment"]["id"].as_str().unwrap().to_owned();
    assert_eq!(types(&change), ["PAYMENT_RECORDED"], "recordPayment: {change:#?}");
    at += 1;

    let apply = "mutation($p: ID!, $i: ID!, $key: String!) { applyPayment(id: $p, invoiceId: $i, amount: \"50.00\", idempotencyKey: $key) { allocation { id } } }";
    let (data, change) = one_change(&billing, at, apply, json!({"p": payment, "i": invoice, "key": new_key()})).await;
    let allocation = data["applyPayment"]["allocation"]["id"].as_str().unwrap().to_owned();
    assert_eq!(types(&change), ["PAYMENT_ALLOCATED"], "applyPayment: {change:#?}");
    at += 1;

    let remove = "mutation($a: ID!, $key: String!) { removeAllocation(id: $a, idempotencyKey: $key) { allocation { id } } }";
    let (_, change) = one_change(&billing, at, remove, json!({"a": allocation, "key": new_key()})).await;
    assert_eq!(types(&change), ["ALLOCATION_REMOVED"], "removeAllocation: {change:#?}");
    at += 1;

    let refund = "mutation($p: ID!, $key: String!) { refundPayment(id: $p, input: {amount: \"10.00\"}, idempotencyKey: $key) { refund { id } } }";
    let (_, change) = one_change(&billing, at, refund, json!({"p": payment, "key": new_key()})).await;
    assert_eq!(types(&change), ["PAYMENT_REFUNDED"], "refundPayment: {change:#?}");
    at += 1;

    let update = "mutation($p: ID!, $key: String!) { updatePayment(id: $p, description: \"Paid at the desk\", idempotencyKey: $key) { payment { id } } }";
    let (_, change) = one_change(&billing, at, update, json!({"p": payment, "key": new_key()})).await;
    assert_eq!(types(&change), ["PAYMENT_UPDATED"], "updatePayment: {change:#?}");
    at += 1;

    let (_, change) = one_change(&billing, at, PAY_QUERY, json!({"id": invoice, "input": {"methodId": cash}, "key": new_key()})).await;
    assert_eq!(types(&change), ["PAYMENT_RECORDED", "PAYMENT_ALLOCATED", "INVOICE_STATUS_CHANGED"], "payInvoice: {change:#?}");
    at += 1;

    let issue = "mutation($i: ID!, $key: String!) { issueCreditNote(invoiceId: $i, input: {reason: \"Goodwill\", lines: [{lineIndex: 0, amount: \"40.00\"}]}, idempotencyKey: $key) { creditNote { id } } }";
    let (data, change) = one_change(&billing, at, issue, json!({"i": credited, "key": new_key()})).await;
    let note = data["issueCreditNote"]["creditNote"]["id"].as_str().unwrap().to_owned();
    assert_eq!(types(&change), ["CREDIT_NOTE_ISSUED", "INVOICE_STATUS_CHANGED"], "issueCreditNote: {change:#?}");
    at += 1;

    let void_note = "mutation($n: ID!, $key: String!) { voidCreditNote(id: $n, idempotencyKey: $key) { creditNote { id } } }";
    let (_, change) = one_change(&billing, at, void_note, json!({"n": note, "key": new_key()})).await;
    assert_eq!(types(&change), ["CREDIT_NOTE_VOIDED", "INVOICE_STATUS_CHANGED"], "voidCreditNote: {change:#?}");
    at += 1;

    let void_invoice = "mutation($i: ID!, $key: String!) { voidInvoice(id: $i, idempotencyKey: $key) { invoice { id } } }";
    let (_, change) = one_change(&billing, at, void_invoice, json!({"i": credited, "key": new_key()})).await;
    assert_eq!(types(&change), ["INVOICE_VOIDED"], "voidInvoice: {change:#?}");
    at += 1;

    let input = json!({"clientId": seed.0, "locationId": seed.1, "methodId": cash, "amount": "5.00"});
    let (data, _) = one_change(&billing, at, record, json!({"input": input, "key": new_key()})).await;
    at += 1;
    let void_payment = "mutation($p: ID!, $key: String!) { voidPayment(id: $p, idempotencyKey: $key) { payment { id } } }";
    let (_, change) = one_change(&billing, at, void_payment, json!({"p": data["recordPayment"]["payment"]["id"], "key": new_key()})).await;
    assert_eq!(types(&change), ["PAYMENT_VOIDED"], "voidPayment: {change:#?}");
    at += 1;

    // Drafts move no money: creating one records nothing; finalizing and reverting it do.
    let draft = billing
        .ok(
            "mutation($input: InvoiceInput!, $key: String!) { createInvoice(input: $input, idempotencyKey: $key) { invoice { id } } }",
            json!({"input": {"clientId": seed.0, "locationId": seed.1, "lines": [{"description": "Review", "unitPrice": "20.00"}]}, "key": new_key()}),
        )
        .await;
    let draft = draft["createInvoice"]["invoice"]["id"].as_str().unwrap().to_owned();
    assert_eq!(last_position(&billing).await, at, "a draft records no ledger events");
    let finalize = "mutation($i: ID!, $key: String!) { finalizeInvoice(id: $i, idempotencyKey: $key) { invoice { id } } }";
    let (_, change) = one_change(&billing, at, finalize, json!({"i": draft, "key": new_key()})).await;
    assert_eq!(types(&change), ["INVOICE_FINALIZED"], "finalizeInvoice: {change:#?}");
    at += 1;
    let revert = "mutation($i: ID!, $key: String!) { revertInvoiceToDraft(id: $i, idempotencyKey: $key) { invoice { id } } }";
    let (_, change) = one_change(&billing, at, revert, json!({"i": draft, "key": new_key()})).await;
    assert_eq!(types(&change), ["INVOICE_STATUS_CHANGED"], "revertInvoiceToDraft: {change:#?}");
    at += 1;

    // A charge the gateway declines is a fact about the client's money; one it accepts is the
    // payment's events.
    let declined = pay(&billing, &charged, json!({"methodId": card, "details": {"card_number": "4000000000009995"}}), new_key()).await;
    assert_error_code(&declined, "PAYMENT_DECLINED");
    let added = records_after(&billing, at).await;
    assert_eq!(added.iter().map(types).collect::<Vec<_>>(), vec![vec!["CHARGE_DECLINED"]], "a declined charge: {added:#?}");
    at += 1;
    let card_payment = json!({"id": charged, "input": {"methodId": card, "details": {"card_number": "4242424242424242"}}, "key": new_key()});
    let (_, change) = one_change(&billing, at, PAY_QUERY, card_payment).await;
    assert_eq!(types(&change), ["PAYMENT_RECORDED", "PAYMENT_ALLOCATED", "INVOICE_STATUS_CHANGED"], "a charge: {change:#?}");
    at += 1;

    // A dry-run previews the events and records none.
    let dry = billing
        .ok(
            "mutation($p: ID!, $key: String!) { refundPayment(id: $p, input: {amount: \"1.00\"}, idempotencyKey: $key, dryRun: true) { refund { id } preview { events { type } } } }",
            json!({"p": payment, "key": new_key()}),
        )
        .await;
    assert_eq!(dry["refundPayment"]["preview"]["events"], json!([{"type": "PAYMENT_REFUNDED"}]), "{dry:#?}");
    assert_eq!(last_position(&billing).await, at, "a dry-run records no ledger events");
}

#[tokio::test]
async fn e1_refused_requests_record_no_events() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = method(&app.viewer(), "Cash").await;
    let card = method(&app.viewer(), "Credit card").await;
    let draft = app.draft_invoice(&seed, json!([{"description": "Consultation", "unitPrice": "50.00"}])).await["id"].as_str().unwrap().to_owned();
    let open = app.open_invoice(&seed, "50.00").await["id"].as_str().unwrap().to_owned();
    let before = last_position(&app.viewer()).await;

    // (invoice, input, code, why)
    let cases = [
        (&draft, json!({"methodId": cash}), "INVOICE_NOT_OPEN", "a draft takes no payment"),
        (&open, json!({"methodId": cash, "amount": "0.00"}), "AMOUNT_NOT_POSITIVE", "a zero payment"),
        (&open, json!({"methodId": cash, "amount": "10.001"}), "AMOUNT_TOO_PRECISE", "more decimals than the currency has"),
        (
            &open,
            json!({"methodId": card, "amount": "50.01", "details": {"card_number": "4242424242424242"}}),
            "AMOUNT_EXCEEDS_BALANCE",
            "a card payment above the balance",
        ),
        (&open, json!({"methodId": "0190f0a0-0000-7000-8000-000000000000"}), "NOT_FOUND", "an unknown method"),
    ];
    for (invoice, input, code, why) in cases {
        let response = pay(&app.billing(), invoice, input, new_key()).await;
        assert_eq!(response.error_code(), Some(code), "{why}: {:#}", response.body);
        assert_eq!(records_after(&app.viewer(), before).await, Vec::<Value>::new(), "{why}: refused, so no ledger event");
    }
    let refused = app
        .billing()
        .post(
            "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id } } }",
            json!({"input": {"clientId": seed.client, "locationId": seed.location, "methodId": cash, "amount": "10.00",
                "allocations": [{"invoiceId": draft, "amount": "10.00"}]}, "key": new_key()}),
        )
        .await;
    assert_error_code(&refused, "INVOICE_NOT_OPEN");
    assert_eq!(records_after(&app.viewer(), before).await, Vec::<Value>::new(), "a payment refused for its allocation records nothing");
    assert_eq!(last_position(&app.viewer()).await, before, "no position was taken");
}

#[tokio::test]
async fn e1_a_repeated_request_records_no_more_events() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = method(&app.viewer(), "Cash").await;
    let invoice = app.open_invoice(&seed, "70.00").await["id"].as_str().unwrap().to_owned();
    let before = last_position(&app.viewer()).await;
    let key = new_key();
    let first = pay(&app.billing(), &invoice, json!({"methodId": cash}), key.clone()).await;
    assert!(first.body["errors"].is_null(), "{:#}", first.body);
    for attempt in 0..3 {
        let again = pay(&app.billing(), &invoice, json!({"methodId": cash}), key.clone()).await;
        assert_eq!(again.data()["payInvoice"]["payment"]["id"], first.data()["payInvoice"]["payment"]["id"], "attempt {attempt}: the first result");
    }
    let records = records_after(&app.viewer(), before).await;
    assert_eq!(positions(&records), vec![before + 1], "one change, however often it is sent: {records:#?}");
}

// ---------------------------------------------------------------------------------------------
// E2: positions.
// ---------------------------------------------------------------------------------------------

/// Concurrent payments of two tenants: each tenant's changes get positions 1..=N after where it
/// stood, unique and without gaps, independently of the other tenant's; and changes of one
/// invoice are positioned in the order they committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2_concurrent_payments_are_positioned_without_gaps_per_tenant_in_commit_order() {
    const INVOICES: usize = 6;
    const PAYMENTS_PER_INVOICE: usize = 4;
    let app = TestApp::spawn().await;
    let tenant_b = format!("t{}", uuid::Uuid::new_v4().simple());
    let tenants = [
        (app.admin(), app.billing()),
        (
            Caller { app: &app, token: Some(app.token_for(&tenant_b, Role::Admin)) },
            Caller { app: &app, token: Some(app.token_for(&tenant_b, Role::Billing)) },
        ),
    ];
    let mut plans = Vec::new();
    for (admin, billing) in &tenants {
        let seed = seed_tenant(admin).await;
        let cash = method(billing, "Cash").await;
        let mut invoices = Vec::new();
        for _ in 0..INVOICES {
            invoices.push(open_invoice(billing, &seed, &format!("{}.00", 10 * PAYMENTS_PER_INVOICE)).await);
        }
        plans.push((last_position(billing).await, cash, invoices));
    }

    // Every invoice is paid off by PAYMENTS_PER_INVOICE payments of 10.00, all sent at once,
    // both tenants interleaved.
    let mut requests = Vec::new();
    for round in 0..PAYMENTS_PER_INVOICE {
        for i in 0..INVOICES {
            for (t, (billing, (_, cash, invoices))) in tenants.iter().map(|(_, b)| b).zip(&plans).enumerate() {
                requests.push((t, round, pay(billing, &invoices[i], json!({"methodId": cash, "amount": "10.00"}), new_key())));
            }
        }
    }
    let tags: Vec<(usize, usize)> = requests.iter().map(|(t, round, _)| (*t, *round)).collect();
    let responses = join_all(requests.into_iter().map(|(_, _, request)| request)).await;
    let mut paid: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for ((t, _), response) in tags.iter().zip(&responses) {
        assert!(response.body["errors"].is_null(), "every payment fits: {:#}", response.body);
        paid[*t].push(response.data()["payInvoice"]["payment"]["id"].as_str().unwrap().to_owned());
    }

    for (t, (billing, (before, _, invoices))) in tenants.iter().map(|(_, b)| b).zip(&plans).enumerate() {
        let records = records_after(billing, *before).await;
        let n = (INVOICES * PAYMENTS_PER_INVOICE) as i64;
        assert_eq!(positions(&records), (before + 1..=before + n).collect::<Vec<_>>(), "tenant {t}: 1..=N after where it stood, no gaps");
        assert_eq!(last_position(billing).await, before + n, "tenant {t}: totalCount is the last position");
        // One record per payment that answered, and nothing else.
        let mut recorded: Vec<String> = records.iter().map(|r| r["events"][0]["paymentId"].as_str().unwrap().to_owned()).collect();
        recorded.sort();
        paid[t].sort();
        assert_eq!(recorded, paid[t], "tenant {t}: the payments that answered are the ones positioned");

        // Per invoice: the payment that paid it off (the only one changing its status) committed
        // last of its PAYMENTS_PER_INVOICE, so it has the highest position of them.
        let mut by_invoice: HashMap<&str, Vec<(i64, bool)>> = HashMap::new();
        for record in &records {
            let events = record["events"].as_array().unwrap();
            let invoice = events[1]["invoiceId"].as_str().unwrap();
            let paid_off = events.iter().any(|e| e["type"] == "INVOICE_STATUS_CHANGED");
            by_invoice.entry(invoice).or_default().push((record["position"].as_i64().unwrap(), paid_off));
        }
        assert_eq!(by_invoice.len(), invoices.len());
        for (invoice, mut changes) in by_invoice {
            changes.sort();
            let flags: Vec<bool> = changes.iter().map(|(_, paid_off)| *paid_off).collect();
            let mut expected = vec![false; PAYMENTS_PER_INVOICE - 1];
            expected.push(true);
            assert_eq!(flags, expected, "tenant {t}, invoice {invoice}: positioned in commit order: {changes:?}");
        }
    }
}

/// Reading after a position returns exactly the later records, in order, whichever way the
/// reader pages; a position is never given twice or skipped.
#[tokio::test]
async fn e2_reading_after_a_position_returns_exactly_the_later_events_in_order() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = method(&app.viewer(), "Cash").await;
    for _ in 0..5 {
        let invoice = app.open_invoice(&seed, "20.00").await["id"].as_str().unwrap().to_owned();
        let response = pay(&app.billing(), &invoice, json!({"methodId": cash}), new_key()).await;
        assert!(response.body["errors"].is_null(), "{:#}", response.body);
    }
    let viewer = app.viewer();
    let all = records_after(&viewer, 0).await;
    let last = last_position(&viewer).await;
    assert!(last >= 5);
    assert_eq!(positions(&all), (1..=last).collect::<Vec<_>>(), "from the start: 1..=last");

    for k in 0..=last {
        let after = records_after(&viewer, k).await;
        assert_eq!(after, all[k as usize..].to_vec(), "after {k}: exactly the records after it, in order");
    }

    // Pages of 2 by cursor walk the same records, each once.
    let mut walked = Vec::new();
    let mut page = events_page(&viewer, json!({"first": 2})).await;
    assert_eq!(page["pageInfo"]["hasPreviousPage"], false);
    loop {
        walked.extend(page["edges"].as_array().unwrap().iter().map(|edge| edge["node"].clone()));
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        page = events_page(&viewer, json!({"first": 2, "after": page["pageInfo"]["endCursor"]})).await;
        assert_eq!(page["pageInfo"]["hasPreviousPage"], true);
    }
    assert_eq!(walked, all, "paging by cursor");
    let beyond = events_page(&viewer, json!({"afterPosition": last})).await;
    assert_eq!((beyond["edges"].as_array().unwrap().len(), &beyond["pageInfo"]["hasNextPage"]), (0, &json!(false)), "nothing after the last");

    // Other tenants see none of these.
    let stranger = Caller { app: &app, token: Some(app.token_for(&format!("t{}", uuid::Uuid::new_v4().simple()), Role::Admin)) };
    assert_eq!(records_after(&stranger, 0).await, Vec::<Value>::new(), "a tenant reads only its own events");
    assert_eq!(last_position(&stranger).await, 0);

    // Refused start points.
    let both = viewer.post(EVENTS_QUERY, json!({"after": page["pageInfo"]["endCursor"], "afterPosition": 1})).await;
    assert_error_code(&both, "INVALID_INPUT");
    let negative = viewer.post(EVENTS_QUERY, json!({"afterPosition": -1})).await;
    assert_error_code(&negative, "INVALID_INPUT");
    let foreign = app.viewer().ok("{ invoices(first: 1) { pageInfo { endCursor } } }", json!({})).await;
    let response = viewer.post(EVENTS_QUERY, json!({"after": foreign["invoices"]["pageInfo"]["endCursor"]})).await;
    assert_error_code(&response, "INVALID_INPUT");
}

// ---------------------------------------------------------------------------------------------
// E1, E2 across a crash: the real binary on SurrealKV, killed while payments commit.
// ---------------------------------------------------------------------------------------------

async fn post(http: &reqwest::Client, url: &str, token: &str, query: &str, variables: Value) -> Option<Value> {
    let response = http.post(format!("{url}/graphql")).bearer_auth(token).json(&json!({"query": query, "variables": variables})).send().await.ok()?;
    response.json::<Value>().await.ok()
}

async fn must(http: &reqwest::Client, url: &str, token: &str, query: &str, variables: Value) -> Value {
    let body = post(http, url, token, query, variables).await.expect("the server answers");
    assert!(body.get("errors").is_none_or(Value::is_null), "{body:#}");
    body["data"].clone()
}

/// Every node of `list` (a connection taking `first` and `after`).
async fn all_nodes(http: &reqwest::Client, url: &str, token: &str, list: &str, fields: &str) -> Vec<Value> {
    let query = format!("query($after: String) {{ {list}(first: 100, after: $after) {{ pageInfo {{ hasNextPage endCursor }} edges {{ node {{ {fields} }} }} }} }}");
    let mut nodes = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = must(http, url, token, &query, json!({"after": after})).await;
        nodes.extend(data[list]["edges"].as_array().unwrap().iter().map(|edge| edge["node"].clone()));
        if data[list]["pageInfo"]["hasNextPage"] != true {
            return nodes;
        }
        after = data[list]["pageInfo"]["endCursor"].clone();
    }
}

/// Payments commit while the server is killed: after the restart every payment that committed,
/// acknowledged or not, has exactly one positioned record, and positions run 1..=N without gaps
/// (those the kill left without a position are positioned at start); new changes continue at N+1.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2_after_a_crash_every_committed_payment_has_one_position_without_gaps() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let start = || SettleProcess::start(dir.path(), dir.path().join("settle.log"));
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().unwrap();
    let mut server = start();
    let keys = settle::auth::TokenKeys::load_or_create_secret(&dir.path().join("signing.key")).unwrap();
    let tenant = settle::auth::TenantId::parse("clinic").unwrap();
    let token = keys.mint("crash-test", &tenant, &[Role::Admin], chrono::Duration::hours(1)).unwrap();
    let url = server.url.clone();
    let setup = must(&http, &url, &token, r#"mutation { createClient(input: {name: "Bo"}) { id } createLocation(input: {name: "Here"}) { id } }"#, json!({})).await;
    let methods = must(&http, &url, &token, "{ paymentMethods { id name } }", json!({})).await;
    let cash = methods["paymentMethods"].as_array().unwrap().iter().find(|m| m["name"] == "Cash").unwrap()["id"].clone();
    let mut invoices = Vec::new();
    for _ in 0..4 {
        let created = must(&http, &url, &token,
            "mutation($input: InvoiceInput!, $key: String!) { createInvoice(input: $input, idempotencyKey: $key) { invoice { id } } }",
            json!({"key": new_key(), "input": {"clientId": setup["createClient"]["id"], "locationId": setup["createLocation"]["id"],
                "lines": [{"description": "Visit", "unitPrice": "100000.00"}]}})).await;
        let id = created["createInvoice"]["invoice"]["id"].clone();
        must(&http, &url, &token, "mutation($id: ID!, $key: String!) { finalizeInvoice(id: $id, idempotencyKey: $key) { invoice { id } } }", json!({"id": id, "key": new_key()})).await;
        invoices.push(id);
    }

    // Six clients pay 1.00 after 1.00 until the kill.
    let killed = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..6)
        .map(|task| {
            let (http, url, token, cash, killed, acknowledged) =
                (http.clone(), url.clone(), token.clone(), cash.clone(), killed.clone(), acknowledged.clone());
            let invoice = invoices[task % invoices.len()].clone();
            tokio::spawn(async move {
                while !killed.load(Ordering::Relaxed) {
                    let paid = post(&http, &url, &token, PAY_QUERY, json!({"id": invoice, "input": {"methodId": cash, "amount": "1.00"}, "key": new_key()})).await;
                    match paid.as_ref().and_then(|body| body["data"]["payInvoice"]["payment"]["id"].as_str()) {
                        Some(id) => acknowledged.lock().unwrap().push(id.to_owned()),
                        None => break,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    server.sigkill();
    killed.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(!acknowledged.is_empty(), "payments went through before the kill");

    let server = start();
    let url = server.url.clone();
    // The restarted server positions what the kill left at start; give it a moment.
    let mut payments = Vec::new();
    let mut records = Vec::new();
    for _ in 0..50 {
        payments = all_nodes(&http, &url, &token, "payments", "id number").await;
        records = all_nodes(&http, &url, &token, "ledgerEvents", "position action events { type ... on PaymentRecordedEvent { paymentId } }").await;
        let recorded = records.iter().filter(|r| r["action"] == "payment.pay_invoice").count();
        if recorded == payments.len() && payments.iter().all(|p| p["number"].is_string()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let n = records.len() as i64;
    assert_eq!(positions(&records), (1..=n).collect::<Vec<_>>(), "positions 1..=N without gaps after the crash");
    let mut recorded: Vec<String> = records
        .iter()
        .filter(|r| r["action"] == "payment.pay_invoice")
        .map(|r| r["events"][0]["paymentId"].as_str().unwrap().to_owned())
        .collect();
    let mut committed: Vec<String> = payments.iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();
    recorded.sort();
    committed.sort();
    assert_eq!(recorded, committed, "every committed payment has exactly one record (E1)");
    for id in &acknowledged {
        assert!(committed.binary_search(id).is_ok(), "acknowledged payment {id} is there");
    }

    // The order goes on where it stopped.
    let paid = must(&http, &url, &token, PAY_QUERY, json!({"id": invoices[0], "input": {"methodId": cash, "amount": "1.00"}, "key": new_key()})).await;
    let last = all_nodes(&http, &url, &token, "ledgerEvents", "position events { ... on PaymentRecordedEvent { paymentId } }").await;
    assert_eq!(last.len() as i64, n + 1);
    assert_eq!((last[n as usize]["position"].as_i64(), &last[n as usize]["events"][0]["paymentId"]), (Some(n + 1), &paid["payInvoice"]["payment"]["id"]));
}
