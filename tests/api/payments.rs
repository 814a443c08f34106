//! P1-P9, F1-F4, V1-V2, C1-C4, I5/I7/I8, M4-M6, B1-B2, X1-X3 and A2 through the payments API:
//! payments, allocations, refunds, voids, credit notes and client accounts.

use serde_json::{Value, json};
use settle::auth::Role;

use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// Local helpers: the payment operations as a client sends them.
// ---------------------------------------------------------------------------------------------

/// The payment fields the tests read.
const PAYMENT_FIELDS: &str = "id number client { id } location { id name } method { id name type plugin } methodName date \
    amount { amount currency } allocated { amount } refunded { amount } unallocated { amount } \
    status allocationState currency description externalReference voidedAt voidReason \
    allocations { id number paymentId invoiceId amount { amount } active createdBy removedAt removedBy } \
    refunds { id paymentId amount { amount } date description outcome }";

const ALLOCATION_FIELDS: &str = "id number paymentId invoiceId amount { amount currency } active createdBy removedAt removedBy";

const REFUND_FIELDS: &str = "id paymentId amount { amount currency } date description outcome outcomeReason externalReference";

const CREDIT_NOTE_FIELDS: &str = "id number invoiceId date reason status \
    lines { lineIndex description quantity subtotal { amount } tax { amount } total { amount } } \
    subtotal { amount } tax { amount } total { amount } voidedAt voidReason";

const NO_SUCH_ID: &str = "0190f0a0-0000-7000-8000-000000000000";

fn record_query() -> String {
    format!(
        "mutation($input: RecordPaymentInput!, $key: String!) {{ recordPayment(input: $input, idempotencyKey: $key) {{ payment {{ {PAYMENT_FIELDS} }} }} }}"
    )
}

fn pay_query() -> String {
    format!(
        "mutation($invoice: ID!, $input: PayInvoiceInput!, $key: String!) {{ payInvoice(id: $invoice, input: $input, idempotencyKey: $key) {{ payment {{ {PAYMENT_FIELDS} }} }} }}"
    )
}

fn apply_query() -> String {
    format!(
        "mutation($payment: ID!, $invoice: ID!, $amount: Amount!, $key: String!) {{ applyPayment(id: $payment, invoiceId: $invoice, amount: $amount, idempotencyKey: $key) {{ allocation {{ {ALLOCATION_FIELDS} }} }} }}"
    )
}

fn remove_query() -> String {
    format!(
        "mutation($allocation: ID!, $key: String!) {{ removeAllocation(id: $allocation, idempotencyKey: $key) {{ allocation {{ {ALLOCATION_FIELDS} }} }} }}"
    )
}

fn refund_query() -> String {
    format!(
        "mutation($payment: ID!, $input: RefundInput!, $key: String!) {{ refundPayment(id: $payment, input: $input, idempotencyKey: $key) {{ refund {{ {REFUND_FIELDS} }} }} }}"
    )
}

fn void_payment_query() -> String {
    format!(
        "mutation($payment: ID!, $reason: String, $key: String!) {{ voidPayment(id: $payment, reason: $reason, idempotencyKey: $key) {{ payment {{ {PAYMENT_FIELDS} }} }} }}"
    )
}

fn update_payment_query() -> String {
    format!(
        "mutation($payment: ID!, $description: String, $reference: String, $key: String!) {{ updatePayment(id: $payment, description: $description, externalReference: $reference, idempotencyKey: $key) {{ payment {{ {PAYMENT_FIELDS} }} }} }}"
    )
}

fn issue_credit_query() -> String {
    format!(
        "mutation($invoice: ID!, $input: CreditNoteInput!, $key: String!) {{ issueCreditNote(invoiceId: $invoice, input: $input, idempotencyKey: $key) {{ creditNote {{ {CREDIT_NOTE_FIELDS} }} }} }}"
    )
}

fn void_credit_query() -> String {
    format!(
        "mutation($note: ID!, $reason: String, $key: String!) {{ voidCreditNote(id: $note, reason: $reason, idempotencyKey: $key) {{ creditNote {{ {CREDIT_NOTE_FIELDS} }} }} }}"
    )
}

fn finalize_query() -> String {
    format!(
        "mutation($id: ID!, $input: FinalizeInvoiceInput!, $key: String!) {{ finalizeInvoice(id: $id, input: $input, idempotencyKey: $key) {{ invoice {{ {INVOICE_FIELDS} }} }} }}"
    )
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_else(|| panic!("no id in {value:#}")).to_owned()
}

/// `value[field].amount` as a string.
fn amount<'v>(value: &'v Value, field: &str) -> &'v str {
    value[field]["amount"].as_str().unwrap_or_else(|| panic!("no {field}.amount in {value:#}"))
}

/// Merges the fields of `extra` into `base`.
fn merged(mut base: Value, extra: Value) -> Value {
    if let Value::Object(extra) = extra {
        base.as_object_mut().unwrap().extend(extra);
    }
    base
}

/// The id of the tenant's payment method called `name`.
async fn method_id(app: &TestApp, name: &str) -> String {
    let data = app.viewer().ok("{ paymentMethods { id name plugin } }", json!({})).await;
    let methods = data["paymentMethods"].as_array().unwrap();
    let method = methods.iter().find(|m| m["name"] == name).unwrap_or_else(|| panic!("no method {name}: {data:#}"));
    id_of(method)
}

async fn cash_method(app: &TestApp) -> String {
    method_id(app, "Cash").await
}

/// The seeded "Credit card" method, handled by the card-sim plugin.
async fn card_method(app: &TestApp) -> String {
    let data = app.viewer().ok("{ paymentMethods { id name plugin } }", json!({})).await;
    let card = data["paymentMethods"].as_array().unwrap().iter().find(|m| m["name"] == "Credit card").unwrap().clone();
    assert_eq!(card["plugin"], "card-sim", "the seeded card method is plugin-backed");
    id_of(&card)
}

/// Another client of the same tenant.
async fn second_client(app: &TestApp) -> String {
    let data = app.billing().ok("mutation { createClient(input: {name: \"Bo Chen\"}) { id } }", json!({})).await;
    data["createClient"]["id"].as_str().unwrap().to_owned()
}

/// Creates and finalizes an invoice of `lines` with extra InvoiceInput fields (client, dates,
/// currency ...); returns its JSON.
async fn open_invoice_with(app: &TestApp, seed: &Seed, lines: Value, extra: Value) -> Value {
    let input = merged(json!({"clientId": seed.client, "locationId": seed.location, "lines": lines}), extra);
    let data = app
        .billing()
        .ok(
            &format!("mutation($input: InvoiceInput!, $key: String!) {{ createInvoice(input: $input, idempotencyKey: $key) {{ invoice {{ id }} }} }}"),
            json!({"input": input, "key": new_key()}),
        )
        .await;
    app.finalize(data["createInvoice"]["invoice"]["id"].as_str().unwrap()).await
}

fn one_line(price: &str) -> Value {
    json!([{"description": "Consultation", "unitPrice": price}])
}

/// A RecordPaymentInput for the seed's client and location.
fn payment_input(seed: &Seed, method: &str, amount: &str, extra: Value) -> Value {
    merged(json!({"clientId": seed.client, "locationId": seed.location, "methodId": method, "amount": amount}), extra)
}

async fn record(app: &TestApp, input: Value) -> Gql {
    app.billing().post(&record_query(), json!({"input": input, "key": new_key()})).await
}

async fn record_ok(app: &TestApp, input: Value) -> Value {
    let response = record(app, input).await;
    assert!(response.body["errors"].is_null(), "recordPayment failed: {:#}", response.body);
    response.data()["recordPayment"]["payment"].clone()
}

/// A standalone cash payment of `amount` for the seed's client.
async fn record_payment(app: &TestApp, seed: &Seed, amount: &str) -> Value {
    let cash = cash_method(app).await;
    record_ok(app, payment_input(seed, &cash, amount, json!({}))).await
}

async fn pay(app: &TestApp, invoice: &str, input: Value) -> Gql {
    app.billing().post(&pay_query(), json!({"invoice": invoice, "input": input, "key": new_key()})).await
}

/// Pays an invoice in cash; `amount` None pays the balance.
async fn pay_invoice(app: &TestApp, invoice: &str, amount: Option<&str>) -> Value {
    let cash = cash_method(app).await;
    let mut input = json!({"methodId": cash});
    if let Some(amount) = amount {
        input["amount"] = json!(amount);
    }
    let response = pay(app, invoice, input).await;
    assert!(response.body["errors"].is_null(), "payInvoice failed: {:#}", response.body);
    response.data()["payInvoice"]["payment"].clone()
}

async fn apply(app: &TestApp, payment: &str, invoice: &str, amount: &str) -> Gql {
    app.billing().post(&apply_query(), json!({"payment": payment, "invoice": invoice, "amount": amount, "key": new_key()})).await
}

async fn apply_ok(app: &TestApp, payment: &str, invoice: &str, amount: &str) -> Value {
    let response = apply(app, payment, invoice, amount).await;
    assert!(response.body["errors"].is_null(), "applyPayment failed: {:#}", response.body);
    response.data()["applyPayment"]["allocation"].clone()
}

async fn remove(app: &TestApp, allocation: &str) -> Gql {
    app.billing().post(&remove_query(), json!({"allocation": allocation, "key": new_key()})).await
}

async fn remove_ok(app: &TestApp, allocation: &str) -> Value {
    let response = remove(app, allocation).await;
    assert!(response.body["errors"].is_null(), "removeAllocation failed: {:#}", response.body);
    response.data()["removeAllocation"]["allocation"].clone()
}

async fn refund(app: &TestApp, payment: &str, amount: &str, date: Option<&str>) -> Gql {
    let mut input = json!({"amount": amount});
    if let Some(date) = date {
        input["date"] = json!(date);
    }
    app.billing().post(&refund_query(), json!({"payment": payment, "input": input, "key": new_key()})).await
}

async fn refund_ok(app: &TestApp, payment: &str, amount: &str) -> Value {
    let response = refund(app, payment, amount, None).await;
    assert!(response.body["errors"].is_null(), "refundPayment failed: {:#}", response.body);
    response.data()["refundPayment"]["refund"].clone()
}

async fn void_payment(app: &TestApp, payment: &str, reason: Option<&str>) -> Gql {
    app.billing().post(&void_payment_query(), json!({"payment": payment, "reason": reason, "key": new_key()})).await
}

async fn void_payment_ok(app: &TestApp, payment: &str) -> Value {
    let response = void_payment(app, payment, Some("entered twice")).await;
    assert!(response.body["errors"].is_null(), "voidPayment failed: {:#}", response.body);
    response.data()["voidPayment"]["payment"].clone()
}

async fn update_payment(app: &TestApp, payment: &str, description: Option<&str>, reference: Option<&str>) -> Gql {
    app.billing()
        .post(&update_payment_query(), json!({"payment": payment, "description": description, "reference": reference, "key": new_key()}))
        .await
}

async fn issue_credit(app: &TestApp, invoice: &str, input: Value) -> Gql {
    app.billing().post(&issue_credit_query(), json!({"invoice": invoice, "input": input, "key": new_key()})).await
}

async fn issue_credit_ok(app: &TestApp, invoice: &str, input: Value) -> Value {
    let response = issue_credit(app, invoice, input).await;
    assert!(response.body["errors"].is_null(), "issueCreditNote failed: {:#}", response.body);
    response.data()["issueCreditNote"]["creditNote"].clone()
}

/// A credit note of `amount` (including tax) on line 0.
async fn credit_amount(app: &TestApp, invoice: &str, amount: &str) -> Value {
    issue_credit_ok(app, invoice, json!({"reason": "goodwill", "lines": [{"lineIndex": 0, "amount": amount}]})).await
}

async fn void_credit(app: &TestApp, note: &str) -> Gql {
    app.billing().post(&void_credit_query(), json!({"note": note, "reason": "issued in error", "key": new_key()})).await
}

async fn void_invoice(app: &TestApp, invoice: &str) -> Gql {
    app.billing()
        .post(
            "mutation($id: ID!, $key: String!) { voidInvoice(id: $id, reason: \"wrong client\", idempotencyKey: $key) { invoice { id status } } }",
            json!({"id": invoice, "key": new_key()}),
        )
        .await
}

async fn finalize_with(app: &TestApp, invoice: &str, input: Value) -> Gql {
    app.billing().post(&finalize_query(), json!({"id": invoice, "input": input, "key": new_key()})).await
}

/// The payment as `payment(id)` returns it.
async fn read_payment(app: &TestApp, id: &str) -> Value {
    let query = format!("query($id: ID!) {{ payment(id: $id) {{ {PAYMENT_FIELDS} }} }}");
    app.viewer().ok(&query, json!({"id": id})).await["payment"].clone()
}

/// The invoice as `invoice(id)` returns it, with its allocations and credit notes.
async fn read_invoice(app: &TestApp, id: &str) -> Value {
    let query = format!(
        "query($id: ID!) {{ invoice(id: $id) {{ {INVOICE_FIELDS} allocations {{ {ALLOCATION_FIELDS} }} creditNotes {{ id number status total {{ amount }} }} }} }}"
    );
    app.viewer().ok(&query, json!({"id": id})).await["invoice"].clone()
}

async fn read_credit_note(app: &TestApp, id: &str) -> Value {
    let query = format!("query($id: ID!) {{ creditNote(id: $id) {{ {CREDIT_NOTE_FIELDS} }} }}");
    app.viewer().ok(&query, json!({"id": id})).await["creditNote"].clone()
}

async fn read_allocation(app: &TestApp, id: &str) -> Value {
    let query = format!("query($id: ID!) {{ allocation(id: $id) {{ {ALLOCATION_FIELDS} }} }}");
    app.viewer().ok(&query, json!({"id": id})).await["allocation"].clone()
}

/// The client's balance (B1): (owing, unallocatedCredit, overdue).
async fn client_balance(app: &TestApp, client: &str) -> (String, String, String) {
    let data = app
        .viewer()
        .ok(
            "query($id: ID!) { client(id: $id) { balance { owing { amount currency } unallocatedCredit { amount } overdue { amount } } } }",
            json!({"id": client}),
        )
        .await;
    let balance = &data["client"]["balance"];
    (amount(balance, "owing").to_owned(), amount(balance, "unallocatedCredit").to_owned(), amount(balance, "overdue").to_owned())
}

/// How many payments the tenant has, void ones included.
async fn payment_count(app: &TestApp) -> i64 {
    app.viewer().ok("{ payments { totalCount } }", json!({})).await["payments"]["totalCount"].as_i64().unwrap()
}

/// Numbers of the payments `payments(filter)` lists, in its order, checked against totalCount.
async fn payment_numbers(app: &TestApp, filter: Value) -> Vec<String> {
    let data = app
        .viewer()
        .ok(
            "query($filter: PaymentFilterInput) { payments(first: 100, filter: $filter) { totalCount edges { node { number } } } }",
            json!({"filter": filter}),
        )
        .await;
    let numbers: Vec<String> =
        data["payments"]["edges"].as_array().unwrap().iter().map(|e| e["node"]["number"].as_str().unwrap().to_owned()).collect();
    assert_eq!(data["payments"]["totalCount"].as_i64().unwrap(), numbers.len() as i64, "totalCount of {filter}");
    numbers
}

/// Actions of the audit events touching `record` ("payment:ID"), newest first.
async fn audit_actions(app: &TestApp, record: &str) -> Vec<String> {
    let data = app
        .viewer()
        .ok(
            "query($record: String) { auditEvents(first: 100, recordId: $record) { totalCount edges { node { action } } } }",
            json!({"record": record}),
        )
        .await;
    let actions: Vec<String> =
        data["auditEvents"]["edges"].as_array().unwrap().iter().map(|e| e["node"]["action"].as_str().unwrap().to_owned()).collect();
    assert_eq!(data["auditEvents"]["totalCount"].as_i64().unwrap(), actions.len() as i64);
    actions
}

/// All audit events of the tenant.
async fn audit_count(app: &TestApp) -> i64 {
    app.viewer().ok("{ auditEvents { totalCount } }", json!({})).await["auditEvents"]["totalCount"].as_i64().unwrap()
}

/// The actor a token of `role` shows as.
fn actor(role: Role) -> String {
    format!("test-{role}")
}

/// Asserts M5 and P7 on a payment as read: unallocated = amount - allocated - refunded, and
/// allocated + refunded <= amount.
#[track_caller]
fn assert_payment_sums(payment: &Value, why: &str) {
    let cents = |field: &str| -> i64 {
        let text = amount(payment, field);
        let (whole, fraction) = text.split_once('.').unwrap();
        whole.parse::<i64>().unwrap() * 100 + fraction.parse::<i64>().unwrap()
    };
    let (total, allocated, refunded, unallocated) = (cents("amount"), cents("allocated"), cents("refunded"), cents("unallocated"));
    assert!(allocated + refunded <= total, "P7 {why}: allocated {allocated} + refunded {refunded} > amount {total}");
    assert_eq!(unallocated, total - allocated - refunded, "M5 {why}: {payment:#}");
}

/// The same, for an invoice: balance = total - amountPaid - amountCredited.
#[track_caller]
fn assert_invoice_sums(invoice: &Value, why: &str) {
    let cents = |field: &str| -> i64 {
        let text = amount(invoice, field);
        let (whole, fraction) = text.split_once('.').unwrap();
        whole.parse::<i64>().unwrap() * 100 + fraction.parse::<i64>().unwrap()
    };
    assert_eq!(cents("balance"), cents("total") - cents("amountPaid") - cents("amountCredited"), "M4 {why}: {invoice:#}");
}

// ---------------------------------------------------------------------------------------------
// P1: a payment needs client, location, method, date and amount; the method must be manual and
// active; amounts are positive and exact (M2).
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn p1_payment_needs_known_client_location_and_a_recordable_method() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let card = card_method(&app).await;
    // (RecordPaymentInput, expected code, why)
    let cases = [
        (payment_input(&seed, &cash, "10.00", json!({"clientId": NO_SUCH_ID})), "NOT_FOUND", "an unknown client"),
        (payment_input(&seed, &cash, "10.00", json!({"locationId": NO_SUCH_ID})), "NOT_FOUND", "an unknown location"),
        (payment_input(&seed, NO_SUCH_ID, "10.00", json!({})), "NOT_FOUND", "an unknown payment method"),
        (
            payment_input(&seed, &card, "10.00", json!({})),
            "PAYMENT_METHOD_NEEDS_CHARGE",
            "a card-sim method is charged through its plugin, never recorded by hand",
        ),
        (payment_input(&seed, &cash, "10.00", json!({"currency": "XYZ"})), "UNKNOWN_CURRENCY", "an unknown currency"),
    ];
    for (input, code, why) in cases {
        let response = record(&app, input.clone()).await;
        assert_eq!(response.error_code(), Some(code), "{why}: {input}: {:#}", response.body);
    }
    // Each required field left out is refused by the schema itself.
    for field in ["clientId", "locationId", "methodId"] {
        let mut input = payment_input(&seed, &cash, "10.00", json!({}));
        input.as_object_mut().unwrap().remove(field);
        let response = record(&app, input).await;
        assert_eq!(response.error_code(), Some("QUERY_REJECTED"), "{field} is required: {:#}", response.body);
    }
    let mut input = payment_input(&seed, &cash, "10.00", json!({}));
    input.as_object_mut().unwrap().remove("amount");
    let response = record(&app, input).await;
    assert_eq!(response.error_code(), Some("QUERY_REJECTED"), "amount is required: {:#}", response.body);

    // Paying an invoice with an unknown method: nothing is recorded, the invoice is untouched.
    let invoice = app.open_invoice(&seed, "120.00").await;
    let before = read_invoice(&app, &id_of(&invoice)).await;
    let response = pay(&app, &id_of(&invoice), json!({"methodId": NO_SUCH_ID, "amount": "10.00"})).await;
    assert_error_code(&response, "NOT_FOUND");
    assert_eq!(read_invoice(&app, &id_of(&invoice)).await, before, "a refused payment leaves the invoice as it was");
    assert_eq!(payment_count(&app).await, 0, "no refused request created a payment");

    // A complete request works and takes the first number: refusals consumed none (X1).
    let payment = record_ok(&app, payment_input(&seed, &cash, "10.00", json!({"date": "2024-03-01"}))).await;
    assert_eq!(payment["number"], "PAY-0001");
    assert_eq!(payment["date"], "2024-03-01");
    assert_eq!(payment["methodName"], "Cash");
    assert_eq!(payment["method"]["id"], json!(cash));
    assert_eq!(payment["client"]["id"], json!(seed.client));
    assert_eq!(payment["location"]["id"], json!(seed.location));
}

#[tokio::test]
async fn m2_payment_amounts_must_be_positive_and_exact() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let invoice = id_of(&app.open_invoice(&seed, "120.00").await);
    let credit = id_of(&record_payment(&app, &seed, "50.00").await);
    let payment_before = read_payment(&app, &credit).await;
    let invoice_before = read_invoice(&app, &invoice).await;
    // (amount, expected code, why)
    let cases = [
        ("0", "AMOUNT_NOT_POSITIVE", "zero"),
        ("0.00", "AMOUNT_NOT_POSITIVE", "zero with decimals"),
        ("-5.00", "AMOUNT_NOT_POSITIVE", "negative"),
        ("10.001", "AMOUNT_TOO_PRECISE", "three decimals in AUD"),
        ("1e3", "INVALID_AMOUNT", "not a plain decimal"),
    ];
    for (value, code, why) in cases {
        // New payments: zero and negative amounts are covered by
        // m2_new_payments_refuse_zero_and_negative_amounts.
        if code != "AMOUNT_NOT_POSITIVE" {
            let recorded = record(&app, payment_input(&seed, &cash, value, json!({}))).await;
            assert_eq!(recorded.error_code(), Some(code), "recordPayment {why} ({value}): {:#}", recorded.body);
            let paid = pay(&app, &invoice, json!({"methodId": cash, "amount": value})).await;
            assert_eq!(paid.error_code(), Some(code), "payInvoice {why} ({value}): {:#}", paid.body);
        }
        let applied = apply(&app, &credit, &invoice, value).await;
        assert_eq!(applied.error_code(), Some(code), "applyPayment {why} ({value}): {:#}", applied.body);
        let refunded = refund(&app, &credit, value, None).await;
        assert_eq!(refunded.error_code(), Some(code), "refundPayment {why} ({value}): {:#}", refunded.body);
        let credited = issue_credit(&app, &invoice, json!({"reason": "r", "lines": [{"lineIndex": 0, "amount": value}]})).await;
        assert_eq!(credited.error_code(), Some(code), "issueCreditNote {why} ({value}): {:#}", credited.body);
    }
    // Precision follows the currency: yen have no minor unit.
    let yen = record(&app, payment_input(&seed, &cash, "10.5", json!({"currency": "JPY"}))).await;
    assert_error_code(&yen, "AMOUNT_TOO_PRECISE");
    // A JSON number is never an amount (M1).
    let number = app
        .billing()
        .post(&record_query(), json!({"input": payment_input(&seed, &cash, "1", json!({"amount": 10})), "key": new_key()}))
        .await;
    assert_error_code(&number, "INVALID_AMOUNT");

    assert_eq!(read_payment(&app, &credit).await, payment_before, "refused amounts left the payment as it was");
    assert_eq!(read_invoice(&app, &invoice).await, invoice_before, "refused amounts left the invoice as it was");
    assert_eq!(payment_count(&app).await, 1, "no refused amount created a payment");
    let yen_ok = record_ok(&app, payment_input(&seed, &cash, "1050", json!({"currency": "JPY"}))).await;
    assert_eq!(amount(&yen_ok, "amount"), "1050");
    assert_eq!(yen_ok["currency"], "JPY");
}

#[tokio::test]
async fn m2_new_payments_refuse_zero_and_negative_amounts() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let invoice = id_of(&app.open_invoice(&seed, "120.00").await);
    let draft = id_of(&app.draft_invoice(&seed, one_line("120.00")).await);
    let invoice_before = read_invoice(&app, &invoice).await;
    let draft_before = read_invoice(&app, &draft).await;
    for (value, why) in [("0", "zero"), ("0.00", "zero with decimals"), ("-5.00", "negative")] {
        let recorded = record(&app, payment_input(&seed, &cash, value, json!({}))).await;
        assert_eq!(recorded.error_code(), Some("AMOUNT_NOT_POSITIVE"), "recordPayment {why}: {:#}", recorded.body);
        let paid = pay(&app, &invoice, json!({"methodId": cash, "amount": value})).await;
        assert_eq!(paid.error_code(), Some("AMOUNT_NOT_POSITIVE"), "payInvoice {why}: {:#}", paid.body);
        let finalized =
            finalize_with(&app, &draft, json!({"paymentOption": "APPLY_PAYMENT", "payment": {"methodId": cash, "amount": value}})).await;
        assert_eq!(finalized.error_code(), Some("AMOUNT_NOT_POSITIVE"), "finalize with APPLY_PAYMENT {why}: {:#}", finalized.body);
    }
    assert_eq!(read_invoice(&app, &invoice).await, invoice_before, "the open invoice did not change");
    assert_eq!(read_invoice(&app, &draft).await, draft_before, "the draft is still a draft without a number (X1)");
    assert_eq!(payment_count(&app).await, 0, "no refused amount created a payment");
}

// ---------------------------------------------------------------------------------------------
// P2: a standalone payment starts fully unallocated; recordPayment can allocate at once.
// ---------------------------------------------------------------------------------------------

/// M2 (decided, docs/rules.md): zeros before the first digit or after the minor unit do not
/// change an amount, so they are accepted, and Settle answers with the amount's canonical form.
#[tokio::test]
async fn m2_leading_and_trailing_zeros_are_the_same_amount() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    for (written, means) in [("000000010.00", "10.00"), ("010", "10.00"), ("10.500", "10.50"), ("0.50", "0.50")] {
        let payment = record_payment(&app, &seed, written).await;
        assert_eq!(amount(&payment, "amount"), means, "{written:?}");
    }
}

#[tokio::test]
async fn p2_standalone_payment_starts_fully_unallocated() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let payment = record_ok(&app, payment_input(&seed, &cash, "50.00", json!({"date": "2024-02-01", "description": "Deposit"}))).await;
    assert_eq!(payment["number"], "PAY-0001");
    assert_eq!(amount(&payment, "amount"), "50.00");
    assert_eq!(payment["amount"]["currency"], "AUD", "the practice's currency when none is given");
    assert_eq!(amount(&payment, "allocated"), "0.00");
    assert_eq!(amount(&payment, "refunded"), "0.00");
    assert_eq!(amount(&payment, "unallocated"), "50.00");
    assert_eq!(payment["allocationState"], "UNALLOCATED");
    assert_eq!(payment["status"], "RECEIVED");
    assert_eq!(payment["description"], "Deposit");
    assert_eq!(payment["allocations"], json!([]));
    assert_eq!(payment["refunds"], json!([]));
    assert_eq!(read_payment(&app, &id_of(&payment)).await, payment, "payment(id) reads what recordPayment returned");
    let (owing, credit, _) = client_balance(&app, &seed.client).await;
    assert_eq!((owing.as_str(), credit.as_str()), ("0.00", "50.00"), "the payment is the client's credit");
}

#[tokio::test]
async fn p2_record_payment_allocates_in_the_same_mutation() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let first = id_of(&app.open_invoice(&seed, "30.00").await);
    let second = id_of(&app.open_invoice(&seed, "50.00").await);
    let allocations = json!([{"invoiceId": first, "amount": "30.00"}, {"invoiceId": second, "amount": "20.00"}]);
    let payment = record_ok(&app, payment_input(&seed, &cash, "100.00", json!({"allocations": allocations}))).await;
    assert_eq!(amount(&payment, "allocated"), "50.00");
    assert_eq!(amount(&payment, "unallocated"), "50.00");
    assert_eq!(payment["allocationState"], "PARTIALLY_ALLOCATED");
    let allocations = payment["allocations"].as_array().unwrap();
    assert_eq!(allocations.len(), 2);
    assert_eq!((allocations[0]["number"].as_str(), amount(&allocations[0], "amount")), (Some("PAY-0001-1"), "30.00"));
    assert_eq!((allocations[1]["number"].as_str(), amount(&allocations[1], "amount")), (Some("PAY-0001-2"), "20.00"));
    assert!(allocations.iter().all(|a| a["active"] == true));
    let first = read_invoice(&app, &first).await;
    assert_eq!((first["status"].as_str(), amount(&first, "balance")), (Some("PAID"), "0.00"), "fully paid (I3)");
    let second = read_invoice(&app, &second).await;
    assert_eq!((second["status"].as_str(), amount(&second, "balance")), (Some("OPEN"), "30.00"));
}

#[tokio::test]
async fn x1_record_payment_with_a_refused_allocation_records_nothing() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let first = id_of(&app.open_invoice(&seed, "30.00").await);
    let second = id_of(&app.open_invoice(&seed, "50.00").await);
    let other_client = second_client(&app).await;
    let foreign = id_of(&open_invoice_with(&app, &seed, one_line("40.00"), json!({"clientId": other_client})).await);
    let before = (read_invoice(&app, &first).await, read_invoice(&app, &second).await, read_invoice(&app, &foreign).await);
    // The first allocation is fine; the second is refused, so the whole payment is refused.
    let cases = [
        (
            json!([{"invoiceId": first, "amount": "30.00"}, {"invoiceId": second, "amount": "50.01"}]),
            "AMOUNT_EXCEEDS_BALANCE",
            "more than the second invoice's balance",
        ),
        (
            json!([{"invoiceId": first, "amount": "30.00"}, {"invoiceId": second, "amount": "70.01"}]),
            "AMOUNT_EXCEEDS_UNALLOCATED",
            "more than the payment has left",
        ),
        (
            json!([{"invoiceId": first, "amount": "30.00"}, {"invoiceId": foreign, "amount": "10.00"}]),
            "CLIENT_MISMATCH",
            "another client's invoice",
        ),
        (json!([{"invoiceId": first, "amount": "30.00"}, {"invoiceId": NO_SUCH_ID, "amount": "10.00"}]), "NOT_FOUND", "an unknown invoice"),
        (
            json!([{"invoiceId": first, "amount": "30.00"}, {"invoiceId": second, "amount": "0"}]),
            "AMOUNT_NOT_POSITIVE",
            "a zero allocation",
        ),
    ];
    for (allocations, code, why) in cases {
        let response = record(&app, payment_input(&seed, &cash, "100.00", json!({"allocations": allocations}))).await;
        assert_eq!(response.error_code(), Some(code), "{why}: {:#}", response.body);
    }
    assert_eq!(payment_count(&app).await, 0, "no payment was left behind");
    let after = (read_invoice(&app, &first).await, read_invoice(&app, &second).await, read_invoice(&app, &foreign).await);
    assert_eq!(after, before, "no invoice kept a partial allocation");
    let payment = record_ok(&app, payment_input(&seed, &cash, "100.00", json!({}))).await;
    assert_eq!(payment["number"], "PAY-0001", "refused payments took no number");
}

// ---------------------------------------------------------------------------------------------
// P3: paying an invoice with a new manual payment; I2 finalize with a payment option.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn p3_excess_over_balance_stays_as_credit() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let invoice = app.open_invoice(&seed, "120.00").await;
    let payment = pay_invoice(&app, &id_of(&invoice), Some("150.00")).await;
    assert_eq!(amount(&payment, "amount"), "150.00");
    assert_eq!(amount(&payment, "allocated"), "120.00", "min(amount, balance) is allocated");
    assert_eq!(amount(&payment, "unallocated"), "30.00", "the excess stays on the payment");
    assert_eq!(payment["allocationState"], "PARTIALLY_ALLOCATED");
    assert_eq!(payment["status"], "RECEIVED");
    assert_eq!(payment["client"]["id"], json!(seed.client), "the invoice's client");
    assert_eq!(payment["location"]["id"], json!(seed.location), "the invoice's location when none is given");
    assert_eq!(payment["currency"], "AUD");
    let allocation = &payment["allocations"][0];
    assert_eq!((allocation["invoiceId"].as_str(), amount(allocation, "amount")), (invoice["id"].as_str(), "120.00"));
    assert_eq!(allocation["number"], "PAY-0001-1");
    let invoice = read_invoice(&app, &id_of(&invoice)).await;
    assert_eq!(invoice["status"], "PAID");
    assert_eq!(amount(&invoice, "balance"), "0.00");
    assert_eq!(amount(&invoice, "amountPaid"), "120.00");
    assert_eq!(
        client_balance(&app, &seed.client).await,
        ("0.00".into(), "30.00".into(), "0.00".into()),
        "the excess is the client's credit"
    );
}

#[tokio::test]
async fn p3_pay_invoice_without_amount_pays_the_balance() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let invoice = id_of(&app.open_invoice(&seed, "120.00").await);
    let part = pay_invoice(&app, &invoice, Some("20.00")).await;
    assert_eq!((amount(&part, "allocated"), part["allocationState"].as_str()), ("20.00", Some("ALLOCATED")));
    let after_part = read_invoice(&app, &invoice).await;
    assert_eq!(
        (after_part["status"].as_str(), amount(&after_part, "balance")),
        (Some("OPEN"), "100.00"),
        "less than the balance leaves it open"
    );
    let rest = pay_invoice(&app, &invoice, None).await;
    assert_eq!(amount(&rest, "amount"), "100.00", "no amount pays the balance");
    assert_eq!(amount(&rest, "unallocated"), "0.00");
    assert_eq!(rest["allocationState"], "ALLOCATED");
    let paid = read_invoice(&app, &invoice).await;
    assert_eq!((paid["status"].as_str(), amount(&paid, "balance"), amount(&paid, "amountPaid")), (Some("PAID"), "0.00", "120.00"));
}

#[tokio::test]
async fn i2_finalize_with_apply_payment_finalizes_and_pays_in_one_step() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    // (payment input, expected status, balance, payment amount, payment unallocated, why)
    let cases = [
        (
            json!({"methodId": cash, "date": "2024-05-01", "description": "at the desk"}),
            "PAID",
            "0.00",
            "120.00",
            "0.00",
            "no amount pays the total",
        ),
        (json!({"methodId": cash, "amount": "50.00"}), "OPEN", "70.00", "50.00", "0.00", "part payment"),
        (json!({"methodId": cash, "amount": "200.00"}), "PAID", "0.00", "200.00", "80.00", "excess stays as credit (P3)"),
    ];
    let mut paid_numbers = Vec::new();
    for (payment_input, status, balance, paid, left, why) in cases {
        let draft = app.draft_invoice(&seed, one_line("120.00")).await;
        let response = finalize_with(&app, &id_of(&draft), json!({"paymentOption": "APPLY_PAYMENT", "payment": payment_input})).await;
        assert!(response.body["errors"].is_null(), "{why}: {:#}", response.body);
        let invoice = &response.data()["finalizeInvoice"]["invoice"];
        assert_eq!(invoice["status"], status, "{why}");
        assert_eq!(amount(invoice, "balance"), balance, "{why}");
        assert!(invoice["number"].as_str().unwrap().starts_with("INV-"), "{why}: finalized with a number");
        let read = read_invoice(&app, &id_of(&draft)).await;
        let allocations = read["allocations"].as_array().unwrap();
        assert_eq!(allocations.len(), 1, "{why}: one allocation");
        let payment = read_payment(&app, allocations[0]["paymentId"].as_str().unwrap()).await;
        assert_eq!(amount(&payment, "amount"), paid, "{why}");
        assert_eq!(amount(&payment, "unallocated"), left, "{why}");
        assert_eq!(payment["methodName"], "Cash");
        paid_numbers.push(payment["number"].as_str().unwrap().to_owned());
        let actions = audit_actions(&app, &format!("payment:{}", id_of(&payment))).await;
        assert_eq!(actions, ["invoice.finalize_and_pay"], "{why}: one audit event for both steps");
    }
    assert_eq!(paid_numbers, ["PAY-0001", "PAY-0002", "PAY-0003"]);
    let first = read_payment(&app, &payment_numbers_ids(&app).await[0]).await;
    assert_eq!((first["date"].as_str(), first["description"].as_str()), (Some("2024-05-01"), Some("at the desk")));
}

/// Payment ids, oldest first.
async fn payment_numbers_ids(app: &TestApp) -> Vec<String> {
    let data = app.viewer().ok("{ payments(first: 100) { edges { node { id } } } }", json!({})).await;
    let mut ids: Vec<String> =
        data["payments"]["edges"].as_array().unwrap().iter().map(|e| e["node"]["id"].as_str().unwrap().to_owned()).collect();
    ids.reverse();
    ids
}

#[tokio::test]
async fn x1_finalize_with_a_refused_payment_leaves_the_invoice_a_draft() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let card = card_method(&app).await;
    let cash = cash_method(&app).await;
    let draft = app.draft_invoice(&seed, one_line("120.00")).await;
    let id = id_of(&draft);
    let before = read_invoice(&app, &id).await;
    // (FinalizeInvoiceInput, expected code, why)
    let cases = [
        (
            json!({"paymentOption": "APPLY_PAYMENT", "payment": {"methodId": card}}),
            "PAYMENT_METHOD_NEEDS_CHARGE",
            "a card-sim method cannot be recorded",
        ),
        (json!({"paymentOption": "APPLY_PAYMENT", "payment": {"methodId": NO_SUCH_ID}}), "NOT_FOUND", "an unknown method"),
        (
            json!({"paymentOption": "APPLY_PAYMENT", "payment": {"methodId": cash, "amount": "10.001"}}),
            "AMOUNT_TOO_PRECISE",
            "an over-precise payment",
        ),
        (json!({"paymentOption": "CHARGE"}), "PAYMENT_OPTION_UNAVAILABLE", "CHARGE with no payment to charge"),
    ];
    for (input, code, why) in cases {
        let response = finalize_with(&app, &id, input).await;
        assert_eq!(response.error_code(), Some(code), "{why}: {:#}", response.body);
        let after = read_invoice(&app, &id).await;
        assert_eq!(after, before, "{why}: the invoice is still the same draft, without a number");
    }
    assert_eq!(before["status"], "DRAFT");
    assert_eq!(before["number"], Value::Null);
    assert_eq!(payment_count(&app).await, 0, "no payment was left behind");
    assert_eq!(audit_actions(&app, &format!("invoice:{id}")).await, ["invoice.create"], "refusals are not audited");
    let finalized = app.finalize(&id).await;
    assert_eq!(finalized["number"], "INV-0001", "the refused finalizes used no invoice number");
}

// ---------------------------------------------------------------------------------------------
// P4: only OPEN invoices take allocations; instalments; one payment over many invoices.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn p4_only_open_invoices_take_allocations() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let draft = id_of(&app.draft_invoice(&seed, one_line("40.00")).await);
    let paid = id_of(&app.open_invoice(&seed, "40.00").await);
    pay_invoice(&app, &paid, None).await;
    let void = id_of(&app.open_invoice(&seed, "40.00").await);
    assert!(void_invoice(&app, &void).await.body["errors"].is_null());
    let credit = id_of(&record_payment(&app, &seed, "500.00").await);
    let credit_before = read_payment(&app, &credit).await;
    let count = payment_count(&app).await;
    // (invoice, expected code, why)
    let cases = [
        (&draft, "INVOICE_NOT_OPEN", "a draft must be finalized first"),
        (&paid, "INVOICE_NOT_OPEN", "a paid invoice owes nothing"),
        (&void, "INVOICE_VOID", "a void invoice takes nothing (I7)"),
    ];
    for (invoice, code, why) in cases {
        let before = read_invoice(&app, invoice).await;
        let applied = apply(&app, &credit, invoice, "10.00").await;
        assert_eq!(applied.error_code(), Some(code), "applyPayment: {why}: {:#}", applied.body);
        let paid_now = pay(&app, invoice, json!({"methodId": cash, "amount": "10.00"})).await;
        assert_eq!(paid_now.error_code(), Some(code), "payInvoice: {why}: {:#}", paid_now.body);
        let recorded =
            record(&app, payment_input(&seed, &cash, "10.00", json!({"allocations": [{"invoiceId": invoice, "amount": "10.00"}]}))).await;
        assert_eq!(recorded.error_code(), Some(code), "recordPayment: {why}: {:#}", recorded.body);
        assert_eq!(read_invoice(&app, invoice).await, before, "{why}: the invoice did not change");
    }
    assert_eq!(read_payment(&app, &credit).await, credit_before, "the credit was not touched");
    assert_eq!(payment_count(&app).await, count, "no payment was recorded");
}

#[tokio::test]
async fn p4_instalments_several_payments_on_one_invoice() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let eftpos = method_id(&app, "EFTPOS").await;
    let invoice = id_of(&app.open_invoice(&seed, "100.00").await);
    let credit = id_of(&record_payment(&app, &seed, "40.00").await);
    pay_invoice(&app, &invoice, Some("30.00")).await;
    assert_eq!(amount(&read_invoice(&app, &invoice).await, "balance"), "70.00");
    let response = pay(&app, &invoice, json!({"methodId": eftpos, "amount": "30.00"})).await;
    assert!(response.body["errors"].is_null(), "{:#}", response.body);
    let mid = read_invoice(&app, &invoice).await;
    assert_eq!((mid["status"].as_str(), amount(&mid, "balance")), (Some("OPEN"), "40.00"));
    apply_ok(&app, &credit, &invoice, "40.00").await;
    let paid = read_invoice(&app, &invoice).await;
    assert_eq!((paid["status"].as_str(), amount(&paid, "balance"), amount(&paid, "amountPaid")), (Some("PAID"), "0.00", "100.00"));
    let amounts: Vec<&str> = paid["allocations"].as_array().unwrap().iter().map(|a| amount(a, "amount")).collect();
    assert_eq!(amounts, ["30.00", "30.00", "40.00"], "three instalments, oldest first");
    assert_eq!(read_payment(&app, &credit).await["allocationState"], "ALLOCATED");
}

#[tokio::test]
async fn p4_one_payment_over_several_invoices() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let a = id_of(&app.open_invoice(&seed, "40.00").await);
    let b = id_of(&app.open_invoice(&seed, "50.00").await);
    let c = id_of(&app.open_invoice(&seed, "30.00").await);
    let payment = id_of(&record_payment(&app, &seed, "100.00").await);
    // (invoice, amount, payment allocated, payment unallocated, allocation state, invoice status, invoice balance)
    let steps = [
        (&a, "40.00", "40.00", "60.00", "PARTIALLY_ALLOCATED", "PAID", "0.00"),
        (&b, "50.00", "90.00", "10.00", "PARTIALLY_ALLOCATED", "PAID", "0.00"),
        (&c, "10.00", "100.00", "0.00", "ALLOCATED", "OPEN", "20.00"),
    ];
    for (i, (invoice, value, allocated, left, state, status, balance)) in steps.into_iter().enumerate() {
        let allocation = apply_ok(&app, &payment, invoice, value).await;
        assert_eq!(allocation["number"], format!("PAY-0001-{}", i + 1));
        assert_eq!(allocation["invoiceId"], json!(invoice));
        assert_eq!(allocation["createdBy"], actor(Role::Billing));
        let read = read_payment(&app, &payment).await;
        assert_eq!(
            (amount(&read, "allocated"), amount(&read, "unallocated"), read["allocationState"].as_str()),
            (allocated, left, Some(state)),
            "after applying {value}"
        );
        let inv = read_invoice(&app, invoice).await;
        assert_eq!((inv["status"].as_str(), amount(&inv, "balance")), (Some(status), balance), "after applying {value}");
    }
}

// ---------------------------------------------------------------------------------------------
// P5, M6: applying an existing payment.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn p5_apply_payment_limits_and_m6_same_currency() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let big = id_of(&app.open_invoice(&seed, "200.00").await);
    let small = id_of(&app.open_invoice(&seed, "20.00").await);
    let other_client = second_client(&app).await;
    let foreign = id_of(&open_invoice_with(&app, &seed, one_line("50.00"), json!({"clientId": other_client})).await);
    let nzd = open_invoice_with(&app, &seed, one_line("50.00"), json!({"currency": "NZD"})).await;
    assert_eq!(nzd["currency"], "NZD");
    let nzd = id_of(&nzd);
    let payment = id_of(&record_payment(&app, &seed, "100.00").await);
    apply_ok(&app, &payment, &big, "70.00").await;
    // The payment has 30.00 left; the big invoice owes 130.00, the small one 20.00.
    // (payment, invoice, amount, expected code, why)
    let cases = [
        (payment.as_str(), big.as_str(), "30.01", "AMOUNT_EXCEEDS_UNALLOCATED", "more than the payment has left"),
        (payment.as_str(), small.as_str(), "25.00", "AMOUNT_EXCEEDS_BALANCE", "more than the invoice owes, though the payment has it"),
        (payment.as_str(), foreign.as_str(), "10.00", "CLIENT_MISMATCH", "another client's invoice"),
        (payment.as_str(), nzd.as_str(), "10.00", "CURRENCY_MISMATCH", "an AUD payment on an NZD invoice (M6)"),
        (NO_SUCH_ID, small.as_str(), "10.00", "NOT_FOUND", "an unknown payment"),
        (payment.as_str(), NO_SUCH_ID, "10.00", "NOT_FOUND", "an unknown invoice"),
    ];
    let ids = [&payment, &big, &small, &foreign, &nzd];
    let snapshot = || async {
        let mut all = vec![read_payment(&app, ids[0]).await];
        for invoice in &ids[1..] {
            all.push(read_invoice(&app, invoice).await);
        }
        all
    };
    let before = snapshot().await;
    for (payment, invoice, value, code, why) in cases {
        let response = apply(&app, payment, invoice, value).await;
        assert_eq!(response.error_code(), Some(code), "{why}: {:#}", response.body);
        assert_eq!(snapshot().await, before, "{why}: nothing changed");
    }
    // The limits themselves are allowed.
    apply_ok(&app, &payment, &small, "20.00").await;
    apply_ok(&app, &payment, &big, "10.00").await;
    let read = read_payment(&app, &payment).await;
    assert_eq!((amount(&read, "unallocated"), read["allocationState"].as_str()), ("0.00", Some("ALLOCATED")));
    assert_eq!(amount(&read_invoice(&app, &big).await, "balance"), "120.00");
    // An NZD payment pays the NZD invoice but not an AUD one.
    let nzd_payment = id_of(&record_ok(&app, payment_input(&seed, &cash, "60.00", json!({"currency": "NZD"}))).await);
    let refused = apply(&app, &nzd_payment, &big, "10.00").await;
    assert_error_code(&refused, "CURRENCY_MISMATCH");
    let allocation = apply_ok(&app, &nzd_payment, &nzd, "50.00").await;
    assert_eq!(allocation["amount"], json!({"amount": "50.00", "currency": "NZD"}));
    let nzd_invoice = read_invoice(&app, &nzd).await;
    assert_eq!((nzd_invoice["status"].as_str(), amount(&nzd_invoice, "balance")), (Some("PAID"), "0.00"));
    // Paying the NZD invoice records an NZD payment.
    let nzd2 = id_of(&open_invoice_with(&app, &seed, one_line("15.00"), json!({"currency": "NZD"})).await);
    let paid = pay_invoice(&app, &nzd2, None).await;
    assert_eq!(paid["amount"], json!({"amount": "15.00", "currency": "NZD"}));
}

// ---------------------------------------------------------------------------------------------
// P6: removing an allocation.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn p6_remove_allocation_returns_money_to_both_sides_and_keeps_the_record() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let invoice = id_of(&app.open_invoice(&seed, "100.00").await);
    let payment = pay_invoice(&app, &invoice, None).await;
    let payment_id = id_of(&payment);
    let allocation_id = payment["allocations"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(read_invoice(&app, &invoice).await["status"], "PAID");

    // Someone else removes it: the record names who.
    let response = app.admin().post(&remove_query(), json!({"allocation": allocation_id, "key": new_key()})).await;
    assert!(response.body["errors"].is_null(), "{:#}", response.body);
    let removed = &response.data()["removeAllocation"]["allocation"];
    assert_eq!(removed["active"], false);
    assert_eq!(removed["createdBy"], actor(Role::Billing));
    assert_eq!(removed["removedBy"], actor(Role::Admin));
    assert!(removed["removedAt"].is_string(), "removal time is kept");
    assert_eq!(amount(removed, "amount"), "100.00", "the record keeps its amount");
    assert_eq!(&read_allocation(&app, &allocation_id).await, removed);

    let payment = read_payment(&app, &payment_id).await;
    assert_eq!((amount(&payment, "allocated"), amount(&payment, "unallocated")), ("0.00", "100.00"));
    assert_eq!(payment["allocationState"], "UNALLOCATED");
    assert_eq!(payment["allocations"][0]["active"], false, "the payment still lists the removed allocation");
    let read = read_invoice(&app, &invoice).await;
    assert_eq!(read["status"], "OPEN", "a paid invoice owes again (I3)");
    assert_eq!((amount(&read, "balance"), amount(&read, "amountPaid")), ("100.00", "0.00"));
    assert_eq!(read["allocations"].as_array().unwrap().len(), 1, "the invoice still lists it");
    assert_eq!(read["allocations"][0]["active"], false);
    assert_eq!(client_balance(&app, &seed.client).await, ("100.00".into(), "100.00".into(), "0.00".into()));

    // Removing it again changes nothing.
    let again = remove(&app, &allocation_id).await;
    assert_error_code(&again, "ALLOCATION_REMOVED");
    assert_eq!(read_payment(&app, &payment_id).await, payment);
    assert_eq!(read_invoice(&app, &invoice).await, read);
    assert_error_code(&remove(&app, NO_SUCH_ID).await, "NOT_FOUND");

    // The money can go on the invoice again, as a new allocation.
    let second = apply_ok(&app, &payment_id, &invoice, "100.00").await;
    assert_eq!(second["number"], "PAY-0001-2");
    assert_eq!(read_invoice(&app, &invoice).await["status"], "PAID");
}

// ---------------------------------------------------------------------------------------------
// P7, M5: allocated + refunded <= amount, unallocated = amount - allocated - refunded.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn p7_allocated_plus_refunded_never_exceeds_the_amount() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let a = id_of(&app.open_invoice(&seed, "80.00").await);
    let b = id_of(&app.open_invoice(&seed, "80.00").await);
    let payment = id_of(&record_payment(&app, &seed, "100.00").await);
    let first = id_of(&apply_ok(&app, &payment, &a, "60.00").await);
    refund_ok(&app, &payment, "30.00").await;
    // 10.00 is left: neither a larger allocation nor a larger refund fits.
    // (step, expected code or None, unallocated after, why)
    let before = read_payment(&app, &payment).await;
    assert_eq!(amount(&before, "unallocated"), "10.00");
    assert_error_code(&apply(&app, &payment, &b, "10.01").await, "AMOUNT_EXCEEDS_UNALLOCATED");
    assert_error_code(&refund(&app, &payment, "10.01", None).await, "AMOUNT_EXCEEDS_UNALLOCATED");
    assert_eq!(read_payment(&app, &payment).await, before, "refusals changed nothing");
    assert_payment_sums(&before, "after allocating 60 and refunding 30");
    apply_ok(&app, &payment, &b, "10.00").await;
    let full = read_payment(&app, &payment).await;
    assert_payment_sums(&full, "fully used");
    assert_eq!((amount(&full, "allocated"), amount(&full, "refunded"), amount(&full, "unallocated")), ("70.00", "30.00", "0.00"));
    assert_error_code(&refund(&app, &payment, "0.01", None).await, "AMOUNT_EXCEEDS_UNALLOCATED");
    assert_error_code(&apply(&app, &payment, &b, "0.01").await, "AMOUNT_EXCEEDS_UNALLOCATED");
    remove_ok(&app, &first).await;
    let freed = read_payment(&app, &payment).await;
    assert_payment_sums(&freed, "after removing 60");
    assert_eq!(amount(&freed, "unallocated"), "60.00");
    refund_ok(&app, &payment, "50.00").await;
    assert_error_code(&apply(&app, &payment, &a, "10.01").await, "AMOUNT_EXCEEDS_UNALLOCATED");
    apply_ok(&app, &payment, &a, "10.00").await;
    let last = read_payment(&app, &payment).await;
    assert_payment_sums(&last, "at the end");
    assert_eq!((amount(&last, "allocated"), amount(&last, "refunded"), amount(&last, "unallocated")), ("20.00", "80.00", "0.00"));
}

#[tokio::test]
async fn m5_payment_unallocated_is_amount_minus_allocations_minus_refunds() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let a = id_of(&app.open_invoice(&seed, "100.00").await);
    let b = id_of(&app.open_invoice(&seed, "100.00").await);
    let payment = id_of(&record_payment(&app, &seed, "300.00").await);
    let mut allocation_on_a = String::new();
    // (step, allocated, refunded, unallocated)
    let steps: [(&str, &str, &str, &str); 6] = [
        ("apply 100 to a", "100.00", "0.00", "200.00"),
        ("apply 50 to b", "150.00", "0.00", "150.00"),
        ("refund 40", "150.00", "40.00", "110.00"),
        ("remove the allocation on a", "50.00", "40.00", "210.00"),
        ("refund 60.55", "50.00", "100.55", "149.45"),
        ("apply another 50 to b", "100.00", "100.55", "99.45"),
    ];
    for (step, allocated, refunded, left) in steps {
        match step {
            "apply 100 to a" => allocation_on_a = id_of(&apply_ok(&app, &payment, &a, "100.00").await),
            "apply 50 to b" => drop(apply_ok(&app, &payment, &b, "50.00").await),
            "refund 40" => drop(refund_ok(&app, &payment, "40.00").await),
            "remove the allocation on a" => drop(remove_ok(&app, &allocation_on_a).await),
            "refund 60.55" => drop(refund_ok(&app, &payment, "60.55").await),
            "apply another 50 to b" => drop(apply_ok(&app, &payment, &b, "50.00").await),
            _ => unreachable!(),
        }
        let read = read_payment(&app, &payment).await;
        assert_eq!(
            (amount(&read, "allocated"), amount(&read, "refunded"), amount(&read, "unallocated")),
            (allocated, refunded, left),
            "after {step}"
        );
        assert_payment_sums(&read, step);
    }
    let b = read_invoice(&app, &b).await;
    assert_eq!((b["status"].as_str(), amount(&b, "balance")), (Some("PAID"), "0.00"));
    assert_eq!(client_balance(&app, &seed.client).await.1, "99.45", "the client's credit is the unallocated amount");
}

// ---------------------------------------------------------------------------------------------
// P8: status and allocation state, and the payments filter.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn p8_status_and_allocation_state_transitions() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let invoice = id_of(&app.open_invoice(&seed, "500.00").await);
    let payment = id_of(&record_payment(&app, &seed, "100.00").await);
    let mut allocation = String::new();
    // (step, status, allocation state)
    let steps = [
        ("recorded", "RECEIVED", "UNALLOCATED"),
        ("apply 40", "RECEIVED", "PARTIALLY_ALLOCATED"),
        ("refund 60", "PARTIALLY_REFUNDED", "ALLOCATED"),
        ("remove the allocation", "PARTIALLY_REFUNDED", "UNALLOCATED"),
        ("apply 10", "PARTIALLY_REFUNDED", "PARTIALLY_ALLOCATED"),
        ("apply 30", "PARTIALLY_REFUNDED", "ALLOCATED"),
    ];
    for (step, status, state) in steps {
        match step {
            "recorded" => {}
            "apply 40" => allocation = id_of(&apply_ok(&app, &payment, &invoice, "40.00").await),
            "refund 60" => drop(refund_ok(&app, &payment, "60.00").await),
            "remove the allocation" => drop(remove_ok(&app, &allocation).await),
            "apply 10" => drop(apply_ok(&app, &payment, &invoice, "10.00").await),
            "apply 30" => drop(apply_ok(&app, &payment, &invoice, "30.00").await),
            _ => unreachable!(),
        }
        let read = read_payment(&app, &payment).await;
        assert_eq!((read["status"].as_str(), read["allocationState"].as_str()), (Some(status), Some(state)), "after {step}");
    }
    // Fully refunded, then void.
    let refunded = id_of(&record_payment(&app, &seed, "25.00").await);
    refund_ok(&app, &refunded, "10.00").await;
    assert_eq!(read_payment(&app, &refunded).await["status"], "PARTIALLY_REFUNDED");
    refund_ok(&app, &refunded, "15.00").await;
    let read = read_payment(&app, &refunded).await;
    assert_eq!((read["status"].as_str(), read["allocationState"].as_str()), (Some("REFUNDED"), Some("UNALLOCATED")));
    let voided = id_of(&record_payment(&app, &seed, "5.00").await);
    let read = void_payment_ok(&app, &voided).await;
    assert_eq!((read["status"].as_str(), read["allocationState"].as_str()), (Some("VOID"), Some("UNALLOCATED")));
}

#[tokio::test]
async fn p8_payments_filter_by_status_state_client_method_and_dates() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let eftpos = method_id(&app, "EFTPOS").await;
    let deposit = method_id(&app, "Direct deposit").await;
    let other = second_client(&app).await;
    let invoice = id_of(&app.open_invoice(&seed, "100.00").await);
    let for_other = |method: &str, amount: &str, date: &str| json!({"clientId": other, "locationId": seed.location, "methodId": method, "amount": amount, "date": date});
    // PAY-0001: cash, unallocated.
    record_ok(&app, payment_input(&seed, &cash, "10.00", json!({"date": "2024-01-10"}))).await;
    // PAY-0002: EFTPOS, partly allocated.
    let p2 = id_of(&record_ok(&app, payment_input(&seed, &eftpos, "50.00", json!({"date": "2024-02-10"}))).await);
    apply_ok(&app, &p2, &invoice, "20.00").await;
    // PAY-0003: cash, fully allocated.
    let p3 = id_of(&record_ok(&app, payment_input(&seed, &cash, "30.00", json!({"date": "2024-03-10"}))).await);
    apply_ok(&app, &p3, &invoice, "30.00").await;
    // PAY-0004: the other client, cash, partly refunded.
    let p4 = id_of(&record_ok(&app, for_other(&cash, "40.00", "2024-04-10")).await);
    refund_ok(&app, &p4, "15.00").await;
    // PAY-0005: the other client, cash, fully refunded.
    let p5 = id_of(&record_ok(&app, for_other(&cash, "5.00", "2024-05-10")).await);
    refund_ok(&app, &p5, "5.00").await;
    // PAY-0006: direct deposit, void.
    let p6 = id_of(&record_ok(&app, payment_input(&seed, &deposit, "7.00", json!({"date": "2024-06-10"}))).await);
    void_payment_ok(&app, &p6).await;

    let all = ["PAY-0006", "PAY-0005", "PAY-0004", "PAY-0003", "PAY-0002", "PAY-0001"];
    // (filter, expected numbers newest first, why)
    let cases = [
        (json!({}), all.to_vec(), "no filter: all, newest first"),
        (json!({"status": "RECEIVED"}), vec!["PAY-0003", "PAY-0002", "PAY-0001"], "not refunded, not void"),
        (json!({"status": "PARTIALLY_REFUNDED"}), vec!["PAY-0004"], "part refunded"),
        (json!({"status": "REFUNDED"}), vec!["PAY-0005"], "fully refunded"),
        (json!({"status": "VOID"}), vec!["PAY-0006"], "void"),
        (json!({"allocationState": "UNALLOCATED"}), vec!["PAY-0006", "PAY-0005", "PAY-0004", "PAY-0001"], "nothing on invoices"),
        (json!({"allocationState": "PARTIALLY_ALLOCATED"}), vec!["PAY-0002"], "some on invoices"),
        (json!({"allocationState": "ALLOCATED"}), vec!["PAY-0003"], "all on invoices"),
        (json!({"clientId": other}), vec!["PAY-0005", "PAY-0004"], "the other client's"),
        (json!({"clientId": seed.client}), vec!["PAY-0006", "PAY-0003", "PAY-0002", "PAY-0001"], "the seed client's"),
        (json!({"methodId": cash}), vec!["PAY-0005", "PAY-0004", "PAY-0003", "PAY-0001"], "cash"),
        (json!({"methodId": eftpos}), vec!["PAY-0002"], "EFTPOS"),
        (json!({"locationId": seed.location}), all.to_vec(), "the one location"),
        (json!({"from": "2024-02-10", "to": "2024-04-10"}), vec!["PAY-0004", "PAY-0003", "PAY-0002"], "both bounds inclusive"),
        (json!({"from": "2024-05-01"}), vec!["PAY-0006", "PAY-0005"], "on or after"),
        (json!({"to": "2024-01-31"}), vec!["PAY-0001"], "on or before"),
        (json!({"from": "2025-01-01"}), vec![], "nothing that late"),
        (json!({"clientId": seed.client, "status": "RECEIVED", "allocationState": "UNALLOCATED"}), vec!["PAY-0001"], "all conditions hold"),
        (json!({"clientId": other, "methodId": eftpos}), vec![], "no match for both"),
    ];
    for (filter, expected, why) in cases {
        assert_eq!(payment_numbers(&app, filter.clone()).await, expected, "{why}: {filter}");
    }
}

#[tokio::test]
async fn a_page_of_payments_names_each_payments_own_client_location_and_method() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let other_client = second_client(&app).await;
    let data = app.admin().ok("mutation { createLocation(input: {name: \"Hill St Clinic\"}) { id } }", json!({})).await;
    let other_location = data["createLocation"]["id"].as_str().unwrap().to_owned();
    let (cash, eftpos) = (cash_method(&app).await, method_id(&app, "EFTPOS").await);
    record_ok(&app, payment_input(&seed, &cash, "10.00", json!({}))).await;
    record_ok(&app, payment_input(&seed, &eftpos, "20.00", json!({"clientId": other_client, "locationId": other_location}))).await;
    record_ok(&app, payment_input(&seed, &cash, "30.00", json!({"locationId": other_location}))).await;

    let data = app
        .viewer()
        .ok(
            "{ payments(first: 10) { edges { node { number client { id name } location { id name } method { id name type } } } } }",
            json!({}),
        )
        .await;
    let rows: Vec<Value> = data["payments"]["edges"].as_array().unwrap().iter().map(|e| e["node"].clone()).collect();
    let seen: Vec<(&str, &str, &str, &str, &str)> = rows
        .iter()
        .map(|p| {
            (
                p["number"].as_str().unwrap(),
                p["client"]["name"].as_str().unwrap(),
                p["location"]["name"].as_str().unwrap(),
                p["method"]["name"].as_str().unwrap(),
                p["method"]["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("PAY-0003", "Ann Lee", "Hill St Clinic", "Cash", "CASH"),
            ("PAY-0002", "Bo Chen", "Hill St Clinic", "EFTPOS", "EFTPOS"),
            ("PAY-0001", "Ann Lee", "Main St Clinic", "Cash", "CASH"),
        ],
        "each row its own records, looked up together: {data:#}"
    );
    assert_eq!(rows[1]["client"]["id"], json!(other_client));
    assert_eq!(rows[1]["location"]["id"], json!(other_location));
    assert_eq!(rows[1]["method"]["id"], json!(eftpos));
    assert_eq!(rows[2]["location"]["id"], json!(seed.location));
}

// ---------------------------------------------------------------------------------------------
// P9: only description and external reference change.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn p9_update_payment_changes_only_description_and_reference() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let payment = record_ok(&app, payment_input(&seed, &cash, "80.00", json!({"date": "2024-07-01", "description": "desk"}))).await;
    let id = id_of(&payment);
    let response = update_payment(&app, &id, Some("Paid at front desk"), Some("rcpt-123")).await;
    assert!(response.body["errors"].is_null(), "{:#}", response.body);
    let updated = response.data()["updatePayment"]["payment"].clone();
    assert_eq!(updated["description"], "Paid at front desk");
    assert_eq!(updated["externalReference"], "rcpt-123");
    let mut expected = payment.clone();
    expected["description"] = json!("Paid at front desk");
    expected["externalReference"] = json!("rcpt-123");
    assert_eq!(updated, expected, "nothing else changed");
    assert_eq!(read_payment(&app, &id).await, expected);

    // Amount, client, method and currency are not even arguments.
    for (argument, value) in [("amount", "\"1.00\""), ("clientId", "\"x\""), ("methodId", "\"x\""), ("currency", "\"NZD\"")] {
        let query =
            format!("mutation {{ updatePayment(id: \"{id}\", {argument}: {value}, idempotencyKey: \"{}\") {{ payment {{ id }} }} }}", new_key());
        app.billing().fails(&query, json!({}), "QUERY_REJECTED").await;
    }
    assert_eq!(read_payment(&app, &id).await, expected, "refused updates changed nothing");

    // Void: no more edits (V1).
    void_payment_ok(&app, &id).await;
    let void = read_payment(&app, &id).await;
    let refused = update_payment(&app, &id, Some("changed"), None).await;
    assert_error_code(&refused, "PAYMENT_VOID");
    assert_eq!(read_payment(&app, &id).await, void, "a void payment stays as it was");
    assert_error_code(&update_payment(&app, NO_SUCH_ID, Some("x"), None).await, "NOT_FOUND");
}

#[tokio::test]
async fn p9_update_payment_keeps_a_field_that_is_left_out() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let id = id_of(&record_payment(&app, &seed, "80.00").await);
    let response = update_payment(&app, &id, Some("first"), Some("gateway-ch_123")).await;
    assert!(response.body["errors"].is_null(), "{:#}", response.body);
    // The front desk edits the description only; the gateway reference must survive.
    let response = app
        .billing()
        .post(
            &format!(
                "mutation($payment: ID!, $key: String!) {{ updatePayment(id: $payment, description: \"second\", idempotencyKey: $key) {{ payment {{ {PAYMENT_FIELDS} }} }} }}"
            ),
            json!({"payment": id, "key": new_key()}),
        )
        .await;
    assert!(response.body["errors"].is_null(), "{:#}", response.body);
    let read = read_payment(&app, &id).await;
    assert_eq!(read["description"], "second");
    assert_eq!(read["externalReference"], "gateway-ch_123", "a field left out of updatePayment stays as it is");
}

// ---------------------------------------------------------------------------------------------
// F1-F4: refunds.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn f1_only_unallocated_money_can_be_refunded() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let invoice = id_of(&app.open_invoice(&seed, "200.00").await);
    let payment = id_of(&record_payment(&app, &seed, "100.00").await);
    let allocation = id_of(&apply_ok(&app, &payment, &invoice, "70.00").await);
    let before = read_payment(&app, &payment).await;
    let invoice_before = read_invoice(&app, &invoice).await;
    let refused = refund(&app, &payment, "30.01", None).await;
    assert_error_code(&refused, "AMOUNT_EXCEEDS_UNALLOCATED");
    assert!(refused.body["errors"][0]["message"].as_str().unwrap().contains("30.00"), "the message says what is left: {:#}", refused.body);
    assert_eq!(read_payment(&app, &payment).await, before, "a refused refund changes nothing");
    assert_eq!(read_invoice(&app, &invoice).await, invoice_before, "allocated money stays on the invoice");
    assert_error_code(&refund(&app, NO_SUCH_ID, "1.00", None).await, "NOT_FOUND");
    refund_ok(&app, &payment, "30.00").await;
    // Allocated money must be unallocated first.
    remove_ok(&app, &allocation).await;
    refund_ok(&app, &payment, "70.00").await;
    let read = read_payment(&app, &payment).await;
    assert_eq!((amount(&read, "refunded"), amount(&read, "unallocated"), read["status"].as_str()), ("100.00", "0.00", Some("REFUNDED")));
}

#[tokio::test]
async fn f2_several_partial_refunds_up_to_the_unallocated_amount() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let payment = id_of(&record_payment(&app, &seed, "100.00").await);
    // (amount, date, refunded after, unallocated after, status after)
    let steps = [
        ("25.00", "2024-03-01", "25.00", "75.00", "PARTIALLY_REFUNDED"),
        ("25.00", "2024-03-02", "50.00", "50.00", "PARTIALLY_REFUNDED"),
        ("49.99", "2024-03-03", "99.99", "0.01", "PARTIALLY_REFUNDED"),
        ("0.01", "2024-03-04", "100.00", "0.00", "REFUNDED"),
    ];
    for (value, date, refunded, left, status) in steps {
        let response = refund(&app, &payment, value, Some(date)).await;
        assert!(response.body["errors"].is_null(), "refund {value}: {:#}", response.body);
        let read = read_payment(&app, &payment).await;
        assert_eq!(
            (amount(&read, "refunded"), amount(&read, "unallocated"), read["status"].as_str()),
            (refunded, left, Some(status)),
            "after refunding {value}"
        );
    }
    let read = read_payment(&app, &payment).await;
    let refunds: Vec<(&str, &str)> =
        read["refunds"].as_array().unwrap().iter().map(|r| (amount(r, "amount"), r["date"].as_str().unwrap())).collect();
    assert_eq!(refunds, [("25.00", "2024-03-01"), ("25.00", "2024-03-02"), ("49.99", "2024-03-03"), ("0.01", "2024-03-04")]);
    assert_error_code(&refund(&app, &payment, "0.01", None).await, "AMOUNT_EXCEEDS_UNALLOCATED");
    assert_eq!(read_payment(&app, &payment).await, read, "nothing left to refund");
}

#[tokio::test]
async fn f3_a_manual_refund_succeeds_at_once() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let payment = id_of(&record_payment(&app, &seed, "60.00").await);
    let response = app
        .billing()
        .post(
            &refund_query(),
            json!({"payment": payment, "input": {"amount": "20.00", "date": "2024-08-01", "description": "overpaid"}, "key": new_key()}),
        )
        .await;
    assert!(response.body["errors"].is_null(), "{:#}", response.body);
    let refund = &response.data()["refundPayment"]["refund"];
    assert_eq!(refund["outcome"], "SUCCEEDED", "a manual method only records the refund");
    assert_eq!(refund["outcomeReason"], Value::Null);
    assert_eq!(refund["externalReference"], Value::Null, "no gateway was asked");
    assert_eq!(refund["amount"], json!({"amount": "20.00", "currency": "AUD"}));
    assert_eq!(refund["date"], "2024-08-01");
    assert_eq!(refund["description"], "overpaid");
    assert_eq!(refund["paymentId"], json!(payment));
    let read = read_payment(&app, &payment).await;
    assert_eq!(read["refunds"][0]["id"], refund["id"]);
    assert_eq!(client_balance(&app, &seed.client).await.1, "40.00", "the refunded money left the client's credit");
}

#[tokio::test]
async fn f4_refunded_money_cannot_be_allocated_again_but_the_rest_can() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let invoice = id_of(&app.open_invoice(&seed, "100.00").await);
    let payment = id_of(&record_payment(&app, &seed, "100.00").await);
    refund_ok(&app, &payment, "60.00").await;
    let before = read_payment(&app, &payment).await;
    let invoice_before = read_invoice(&app, &invoice).await;
    assert_error_code(&apply(&app, &payment, &invoice, "40.01").await, "AMOUNT_EXCEEDS_UNALLOCATED");
    assert_eq!(read_payment(&app, &payment).await, before);
    assert_eq!(read_invoice(&app, &invoice).await, invoice_before);
    apply_ok(&app, &payment, &invoice, "40.00").await;
    let read = read_payment(&app, &payment).await;
    assert_eq!((amount(&read, "allocated"), amount(&read, "refunded"), amount(&read, "unallocated")), ("40.00", "60.00", "0.00"));
    assert_eq!((read["status"].as_str(), read["allocationState"].as_str()), (Some("PARTIALLY_REFUNDED"), Some("ALLOCATED")));
    assert_eq!(amount(&read_invoice(&app, &invoice).await, "balance"), "60.00");
}

// ---------------------------------------------------------------------------------------------
// V1, V2: voiding payments.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v1_void_only_without_allocations_or_refunds_and_final() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let invoice = id_of(&app.open_invoice(&seed, "200.00").await);
    let allocated = id_of(&record_payment(&app, &seed, "100.00").await);
    let allocation = id_of(&apply_ok(&app, &allocated, &invoice, "40.00").await);
    let refunded = id_of(&record_payment(&app, &seed, "50.00").await);
    refund_ok(&app, &refunded, "10.00").await;
    // (payment, expected code, why)
    let cases =
        [(&allocated, "PAYMENT_HAS_ALLOCATIONS", "money is on an invoice"), (&refunded, "PAYMENT_HAS_REFUNDS", "money was refunded")];
    for (payment, code, why) in cases {
        let before = read_payment(&app, payment).await;
        let response = void_payment(&app, payment, None).await;
        assert_eq!(response.error_code(), Some(code), "{why}: {:#}", response.body);
        assert_eq!(read_payment(&app, payment).await, before, "{why}: nothing changed");
    }
    // Without active allocations it can be voided (a removed allocation does not count).
    remove_ok(&app, &allocation).await;
    let void = void_payment_ok(&app, &allocated).await;
    assert_eq!(void["status"], "VOID");
    assert_eq!(read_payment(&app, &allocated).await, void);
    let invoice_before = read_invoice(&app, &invoice).await;
    // Final: nothing changes it any more. (operation, response, why)
    let attempts = [
        (void_payment(&app, &allocated, None).await, "void twice"),
        (apply(&app, &allocated, &invoice, "10.00").await, "allocate"),
        (refund(&app, &allocated, "10.00", None).await, "refund"),
        (update_payment(&app, &allocated, Some("changed"), Some("ref")).await, "update"),
    ];
    for (response, why) in attempts {
        assert_eq!(response.error_code(), Some("PAYMENT_VOID"), "{why}: {:#}", response.body);
    }
    let after = read_payment(&app, &allocated).await;
    assert_eq!(after, void, "the void payment did not change");
    assert_eq!(after["status"], "VOID");
    assert_eq!((amount(&after, "allocated"), amount(&after, "refunded")), ("0.00", "0.00"));
    assert_eq!(after["description"], Value::Null);
    assert_eq!(after["voidReason"], "entered twice", "the first void's reason is kept");
    assert_eq!(read_invoice(&app, &invoice).await, invoice_before, "the invoice did not change");
}

#[tokio::test]
async fn v2_void_payment_leaves_the_client_balance_and_stays_readable() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let kept = id_of(&record_payment(&app, &seed, "20.00").await);
    let payment = id_of(&record_payment(&app, &seed, "50.00").await);
    assert_eq!(client_balance(&app, &seed.client).await.1, "70.00");
    let response = void_payment(&app, &payment, Some("recorded on the wrong client")).await;
    assert!(response.body["errors"].is_null(), "{:#}", response.body);
    let void = &response.data()["voidPayment"]["payment"];
    assert_eq!(void["status"], "VOID");
    assert_eq!(void["voidReason"], "recorded on the wrong client");
    assert!(void["voidedAt"].is_string());
    assert_eq!(amount(void, "amount"), "50.00", "a void moves no money: the record keeps its amount");
    assert_eq!(amount(void, "refunded"), "0.00", "a void is not a refund");
    let read = read_payment(&app, &payment).await;
    assert_eq!(&read, void, "a void payment stays readable");
    assert_eq!(client_balance(&app, &seed.client).await.1, "20.00", "it left the client's credit");
    let listed: Vec<String> = app
        .viewer()
        .ok("query($c: ID!) { unallocatedPayments(clientId: $c) { id } }", json!({"c": seed.client}))
        .await["unallocatedPayments"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(listed, [kept], "no credit left to apply from a void payment");
    assert_eq!(payment_numbers(&app, json!({"status": "VOID"})).await, ["PAY-0002"]);
}

// ---------------------------------------------------------------------------------------------
// C1-C4: credit notes.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn c1_credit_note_needs_a_reason_and_an_open_invoice() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let open = id_of(&app.open_invoice(&seed, "100.00").await);
    let draft = id_of(&app.draft_invoice(&seed, one_line("100.00")).await);
    let paid = id_of(&app.open_invoice(&seed, "100.00").await);
    pay_invoice(&app, &paid, None).await;
    let void = id_of(&app.open_invoice(&seed, "100.00").await);
    assert!(void_invoice(&app, &void).await.body["errors"].is_null());
    let line = json!([{"lineIndex": 0, "amount": "10.00"}]);
    // (invoice, reason, expected code, why)
    let cases = [
        (&open, "", "REASON_REQUIRED", "an empty reason"),
        (&open, "   ", "REASON_REQUIRED", "a blank reason"),
        (&draft, "damaged", "INVOICE_NOT_OPEN", "a draft"),
        (&paid, "damaged", "INVOICE_NOT_OPEN", "a paid invoice"),
        (&void, "damaged", "INVOICE_VOID", "a void invoice"),
        (&NO_SUCH_ID.to_owned(), "damaged", "NOT_FOUND", "an unknown invoice"),
    ];
    for (invoice, reason, code, why) in cases {
        let before = read_invoice(&app, invoice).await;
        let response = issue_credit(&app, invoice, json!({"reason": reason, "lines": line})).await;
        assert_eq!(response.error_code(), Some(code), "{why}: {:#}", response.body);
        assert_eq!(read_invoice(&app, invoice).await, before, "{why}: the invoice did not change");
    }
    let note = credit_amount(&app, &open, "10.00").await;
    assert_eq!(note["number"], "CN-0001", "refusals took no number");
    assert_eq!(note["reason"], "goodwill");
}

#[tokio::test]
async fn c2_credit_by_quantity_and_by_amount_with_tax() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    // EXCLUSIVE GST: 2 x 50.00 = 100.00 + 10.00 tax.
    let invoice = open_invoice_with(
        &app,
        &seed,
        json!([{"description": "Consult", "quantity": "2", "unitPrice": "50.00", "taxRateId": seed.gst}]),
        json!({}),
    )
    .await;
    let id = id_of(&invoice);
    assert_eq!(amount(&invoice, "total"), "110.00");
    let by_quantity = issue_credit_ok(
        &app,
        &id,
        json!({"reason": "one session cancelled", "date": "2024-03-01", "lines": [{"lineIndex": 0, "quantity": "1"}]}),
    )
    .await;
    assert_eq!(by_quantity["number"], "CN-0001");
    assert_eq!(by_quantity["status"], "ISSUED");
    assert_eq!(by_quantity["date"], "2024-03-01");
    assert_eq!(by_quantity["invoiceId"], json!(id));
    assert_eq!((amount(&by_quantity, "subtotal"), amount(&by_quantity, "tax"), amount(&by_quantity, "total")), ("50.00", "5.00", "55.00"));
    let line = &by_quantity["lines"][0];
    assert_eq!(
        (line["lineIndex"].as_i64(), line["description"].as_str(), line["quantity"].as_str()),
        (Some(0), Some("Consult"), Some("1"))
    );
    assert_eq!((amount(line, "subtotal"), amount(line, "tax"), amount(line, "total")), ("50.00", "5.00", "55.00"));
    let after_first = read_invoice(&app, &id).await;
    assert_eq!((amount(&after_first, "balance"), amount(&after_first, "amountCredited")), ("55.00", "55.00"));
    assert_eq!(after_first["status"], "OPEN");

    let by_amount = issue_credit_ok(&app, &id, json!({"reason": "goodwill", "lines": [{"lineIndex": 0, "amount": "22.00"}]})).await;
    assert_eq!(by_amount["number"], "CN-0002");
    assert_eq!((amount(&by_amount, "subtotal"), amount(&by_amount, "tax"), amount(&by_amount, "total")), ("20.00", "2.00", "22.00"));
    assert_eq!(by_amount["lines"][0]["quantity"], Value::Null);
    let after_second = read_invoice(&app, &id).await;
    assert_eq!((amount(&after_second, "balance"), amount(&after_second, "amountCredited")), ("33.00", "77.00"));
    let notes: Vec<&str> = after_second["creditNotes"].as_array().unwrap().iter().map(|n| n["number"].as_str().unwrap()).collect();
    assert_eq!(notes, ["CN-0001", "CN-0002"], "several credit notes on one invoice");
    assert_eq!(after_second["lines"], invoice["lines"], "the invoice lines themselves do not change");
    assert_eq!(read_credit_note(&app, &id_of(&by_amount)).await, by_amount);

    // Numbers run per practice, across invoices.
    let other = id_of(&app.open_invoice(&seed, "10.00").await);
    assert_eq!(credit_amount(&app, &other, "10.00").await["number"], "CN-0003");
    let other = read_invoice(&app, &other).await;
    assert_eq!((other["status"].as_str(), amount(&other, "balance")), (Some("PAID"), "0.00"), "credited in full (I3)");
}

#[tokio::test]
async fn c2_credit_cannot_exceed_the_line_or_the_balance() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let lines = json!([
        {"description": "Consult", "quantity": "2", "unitPrice": "50.00", "taxRateId": seed.gst},
        {"description": "Dressing", "unitPrice": "30.00"}
    ]);
    let id = id_of(&open_invoice_with(&app, &seed, lines, json!({})).await);
    let credit = |lines: Value| json!({"reason": "adjustment", "lines": lines});
    // Line 0 is 110.00, line 1 is 30.00; the invoice owes 140.00.
    // (input, expected code, what the message says, why)
    let cases = [
        (credit(json!([{"lineIndex": 0, "quantity": "3"}])), "CREDIT_EXCEEDS_LINE", "quantity 2", "more quantity than the line has"),
        (credit(json!([{"lineIndex": 1, "amount": "30.01"}])), "CREDIT_EXCEEDS_LINE", "30.00", "more than the line's total"),
        (credit(json!([{"lineIndex": 0, "quantity": "0"}])), "AMOUNT_NOT_POSITIVE", "greater than zero", "a zero quantity"),
        (
            credit(json!([{"lineIndex": 0, "quantity": "0.0000000001"}])),
            "AMOUNT_NOT_POSITIVE",
            "0.00 once rounded",
            "a sliver of the quantity, whose credit rounds to 0.00",
        ),
        (credit(json!([{"lineIndex": 0, "quantity": "1", "amount": "5.00"}])), "INVALID_INPUT", "not both", "quantity and amount together"),
        (credit(json!([{"lineIndex": 0}])), "INVALID_INPUT", "a quantity or an amount", "neither quantity nor amount"),
        (credit(json!([{"lineIndex": 2, "amount": "5.00"}])), "INVALID_INPUT", "no such line", "no such line"),
        (credit(json!([])), "INVALID_INPUT", "at least one line", "no line at all"),
        (credit(json!([{"lineIndex": 1, "amount": "10.00"}, {"lineIndex": 1, "amount": "10.00"}])), "INVALID_INPUT", "once", "one line twice"),
    ];
    let before = read_invoice(&app, &id).await;
    for (input, code, says, why) in cases.iter() {
        let response = issue_credit(&app, &id, input.clone()).await;
        assert_eq!(response.error_code(), Some(*code), "{why}: {:#}", response.body);
        let error = &response.body["errors"][0];
        assert!(error["message"].as_str().unwrap_or_default().contains(says), "{why}: the message says {says:?}: {:#}", response.body);
        assert_eq!(error["extensions"]["retryable"], false, "{why}: sending it again cannot help");
        assert_eq!(read_invoice(&app, &id).await, before, "{why}: nothing changed");
    }
    // Credit 20.00 of the dressing: 10.00 of that line is left.
    issue_credit_ok(&app, &id, credit(json!([{"lineIndex": 1, "amount": "20.00"}]))).await;
    let before = read_invoice(&app, &id).await;
    let response = issue_credit(&app, &id, credit(json!([{"lineIndex": 1, "amount": "10.01"}]))).await;
    assert_error_code(&response, "CREDIT_EXCEEDS_LINE");
    assert_eq!(read_invoice(&app, &id).await, before);
    // Pay 100.00: the invoice owes 20.00; a 55.00 credit of the consult line fits the line but not the balance.
    pay_invoice(&app, &id, Some("100.00")).await;
    let before = read_invoice(&app, &id).await;
    assert_eq!(amount(&before, "balance"), "20.00");
    let response = issue_credit(&app, &id, credit(json!([{"lineIndex": 0, "quantity": "1"}]))).await;
    assert_error_code(&response, "AMOUNT_EXCEEDS_BALANCE");
    let response = issue_credit(&app, &id, credit(json!([{"lineIndex": 0, "amount": "10.00"}, {"lineIndex": 1, "amount": "10.01"}]))).await;
    assert_error_code(&response, "CREDIT_EXCEEDS_LINE");
    assert_eq!(read_invoice(&app, &id).await, before, "refused credit notes changed nothing");
    // Exactly the balance is fine; its tax is the line's share: 20.00 x 10/110 = 1.82.
    let last = issue_credit_ok(&app, &id, credit(json!([{"lineIndex": 0, "amount": "20.00"}]))).await;
    assert_eq!((amount(&last, "subtotal"), amount(&last, "tax"), amount(&last, "total")), ("18.18", "1.82", "20.00"));
    let paid = read_invoice(&app, &id).await;
    assert_eq!((paid["status"].as_str(), amount(&paid, "balance")), (Some("PAID"), "0.00"));
    assert_eq!(paid["creditNotes"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn c3_credit_note_lowers_only_its_invoice_and_is_never_money() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let invoice = id_of(&app.open_invoice(&seed, "100.00").await);
    let other = id_of(&app.open_invoice(&seed, "50.00").await);
    let payment = pay_invoice(&app, &invoice, Some("60.00")).await;
    let payment_id = id_of(&payment);
    let allocation = payment["allocations"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(client_balance(&app, &seed.client).await, ("90.00".into(), "0.00".into(), "0.00".into()));
    credit_amount(&app, &invoice, "40.00").await;
    let read = read_invoice(&app, &invoice).await;
    assert_eq!((read["status"].as_str(), amount(&read, "balance")), (Some("PAID"), "0.00"));
    assert_eq!(amount(&read_invoice(&app, &other).await, "balance"), "50.00", "the other invoice owes as before");
    assert_eq!(
        client_balance(&app, &seed.client).await,
        ("50.00".into(), "0.00".into(), "0.00".into()),
        "owing fell by the credit note; the client holds no credit from it"
    );
    assert_eq!(read_payment(&app, &payment_id).await, payment, "the payment is untouched");
    let listed = app.viewer().ok("query($c: ID!) { unallocatedPayments(clientId: $c) { id } }", json!({"c": seed.client})).await;
    assert_eq!(listed["unallocatedPayments"], json!([]), "nothing to apply elsewhere");
    // Taking the payment off again: the invoice owes 100 - 40 = 60 and only the 60.00 paid is
    // money that can be refunded, never the credit note's 40.00.
    remove_ok(&app, &allocation).await;
    assert_eq!(amount(&read_invoice(&app, &invoice).await, "balance"), "60.00");
    let before = read_payment(&app, &payment_id).await;
    assert_error_code(&refund(&app, &payment_id, "60.01", None).await, "AMOUNT_EXCEEDS_UNALLOCATED");
    assert_eq!(read_payment(&app, &payment_id).await, before);
    refund_ok(&app, &payment_id, "60.00").await;
    assert_eq!(client_balance(&app, &seed.client).await, ("110.00".into(), "0.00".into(), "0.00".into()));
}

#[tokio::test]
async fn c4_void_credit_note_restores_the_balance() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let invoice =
        open_invoice_with(&app, &seed, json!([{"description": "Consult", "quantity": "2", "unitPrice": "50.00"}]), json!({})).await;
    let id = id_of(&invoice);
    pay_invoice(&app, &id, Some("60.00")).await;
    let note = issue_credit_ok(&app, &id, json!({"reason": "cancelled", "lines": [{"lineIndex": 0, "amount": "40.00"}]})).await;
    let note_id = id_of(&note);
    assert_eq!(read_invoice(&app, &id).await["status"], "PAID", "paid off by the credit note");
    let response = void_credit(&app, &note_id).await;
    assert!(response.body["errors"].is_null(), "{:#}", response.body);
    let void = &response.data()["voidCreditNote"]["creditNote"];
    assert_eq!(void["status"], "VOID");
    assert_eq!(void["voidReason"], "issued in error");
    assert!(void["voidedAt"].is_string());
    assert_eq!(amount(void, "total"), "40.00", "the record keeps its amount");
    let read = read_invoice(&app, &id).await;
    assert_eq!(read["status"], "OPEN", "owes again (I3)");
    assert_eq!((amount(&read, "balance"), amount(&read, "amountCredited"), amount(&read, "amountPaid")), ("40.00", "0.00", "60.00"));
    assert_eq!(read["creditNotes"][0]["status"], "VOID", "the void note stays listed");
    assert_eq!(client_balance(&app, &seed.client).await.0, "40.00");
    // Twice: refused, nothing changes.
    let again = void_credit(&app, &note_id).await;
    assert_error_code(&again, "CREDIT_NOTE_VOID");
    assert_eq!(read_invoice(&app, &id).await, read);
    assert_eq!(&read_credit_note(&app, &note_id).await, void);
    assert_error_code(&void_credit(&app, NO_SUCH_ID).await, "NOT_FOUND");
    // The voided amount is creditable on the line again.
    let again = credit_amount(&app, &id, "40.00").await;
    assert_eq!(again["number"], "CN-0002");
    assert_eq!(read_invoice(&app, &id).await["status"], "PAID");
}

// ---------------------------------------------------------------------------------------------
// I5, I7, I8: allocations and credit notes hold an invoice in place.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn i8_an_issued_credit_note_blocks_edit_revert_and_void() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let id = id_of(&app.open_invoice(&seed, "100.00").await);
    let note = id_of(&credit_amount(&app, &id, "10.00").await);
    let before = read_invoice(&app, &id).await;
    let input = json!({"clientId": seed.client, "locationId": seed.location, "lines": one_line("90.00")});
    let attempts = [
        (
            app.billing()
                .post(
                    "mutation($id: ID!, $input: InvoiceInput!, $key: String!) { updateInvoice(id: $id, input: $input, idempotencyKey: $key) { invoice { id } } }",
                    json!({"id": id, "input": input, "key": new_key()}),
                )
                .await,
            "update",
        ),
        (
            app.billing()
                .post("mutation($id: ID!, $key: String!) { revertInvoiceToDraft(id: $id, idempotencyKey: $key) { invoice { id } } }", json!({"id": id, "key": new_key()}))
                .await,
            "revert",
        ),
        (void_invoice(&app, &id).await, "void"),
    ];
    for (response, why) in attempts {
        assert_eq!(response.error_code(), Some("INVOICE_HAS_CREDIT_NOTES"), "{why}: {:#}", response.body);
    }
    assert_eq!(read_invoice(&app, &id).await, before, "the invoice did not change");
    // Once the credit note is void the invoice can be voided.
    assert!(void_credit(&app, &note).await.body["errors"].is_null());
    let response = void_invoice(&app, &id).await;
    assert!(response.body["errors"].is_null(), "{:#}", response.body);
    assert_eq!(response.data()["voidInvoice"]["invoice"]["status"], "VOID");
}

#[tokio::test]
async fn i5_i7_an_active_allocation_blocks_revert_and_void() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let id = id_of(&app.open_invoice(&seed, "100.00").await);
    let payment = pay_invoice(&app, &id, Some("30.00")).await;
    let allocation = payment["allocations"][0]["id"].as_str().unwrap().to_owned();
    let before = read_invoice(&app, &id).await;
    let revert = app
        .billing()
        .post(
            "mutation($id: ID!, $key: String!) { revertInvoiceToDraft(id: $id, idempotencyKey: $key) { invoice { id } } }",
            json!({"id": id, "key": new_key()}),
        )
        .await;
    assert_error_code(&revert, "INVOICE_HAS_ALLOCATIONS");
    assert_error_code(&void_invoice(&app, &id).await, "INVOICE_HAS_ALLOCATIONS");
    assert_eq!(read_invoice(&app, &id).await, before, "the invoice did not change");
    remove_ok(&app, &allocation).await;
    let revert = app
        .billing()
        .post(
            "mutation($id: ID!, $key: String!) { revertInvoiceToDraft(id: $id, idempotencyKey: $key) { invoice { status } } }",
            json!({"id": id, "key": new_key()}),
        )
        .await;
    assert!(revert.body["errors"].is_null(), "{:#}", revert.body);
    assert_eq!(revert.data()["revertInvoiceToDraft"]["invoice"]["status"], "DRAFT", "a removed allocation no longer holds it");
}

// ---------------------------------------------------------------------------------------------
// M4: invoice balance = total - active allocations - issued credit notes.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn m4_invoice_balance_is_total_minus_allocations_minus_credit_notes() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let id = id_of(&app.open_invoice(&seed, "200.00").await);
    let credit = id_of(&record_payment(&app, &seed, "70.00").await);
    let mut first_allocation = String::new();
    let mut first_note = String::new();
    // (step, balance, amount paid, amount credited, status)
    let steps = [
        ("finalized", "200.00", "0.00", "0.00", "OPEN"),
        ("pay 50", "150.00", "50.00", "0.00", "OPEN"),
        ("credit 30", "120.00", "50.00", "30.00", "OPEN"),
        ("apply 70", "50.00", "120.00", "30.00", "OPEN"),
        ("remove the 50", "100.00", "70.00", "30.00", "OPEN"),
        ("credit 100", "0.00", "70.00", "130.00", "PAID"),
        ("void credit 30", "30.00", "70.00", "100.00", "OPEN"),
        ("pay the balance", "0.00", "100.00", "100.00", "PAID"),
    ];
    for (step, balance, paid, credited, status) in steps {
        match step {
            "finalized" => {}
            "pay 50" => first_allocation = pay_invoice(&app, &id, Some("50.00")).await["allocations"][0]["id"].as_str().unwrap().to_owned(),
            "credit 30" => first_note = id_of(&credit_amount(&app, &id, "30.00").await),
            "apply 70" => drop(apply_ok(&app, &credit, &id, "70.00").await),
            "remove the 50" => drop(remove_ok(&app, &first_allocation).await),
            "credit 100" => drop(credit_amount(&app, &id, "100.00").await),
            "void credit 30" => assert!(void_credit(&app, &first_note).await.body["errors"].is_null()),
            "pay the balance" => assert_eq!(amount(&pay_invoice(&app, &id, None).await, "amount"), "30.00"),
            _ => unreachable!(),
        }
        let read = read_invoice(&app, &id).await;
        assert_eq!(
            (amount(&read, "balance"), amount(&read, "amountPaid"), amount(&read, "amountCredited"), read["status"].as_str()),
            (balance, paid, credited, Some(status)),
            "after {step}"
        );
        assert_invoice_sums(&read, step);
    }
}

// ---------------------------------------------------------------------------------------------
// B1, B2: the client's account.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn b1_client_balance_owing_credit_and_overdue() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    // Overdue: due 2020-01-15, 30.00 paid of 100.00.
    let overdue =
        id_of(&open_invoice_with(&app, &seed, one_line("100.00"), json!({"issueDate": "2020-01-01", "dueDate": "2020-01-15"})).await);
    pay_invoice(&app, &overdue, Some("30.00")).await;
    // Current: due in the future.
    let current = id_of(&open_invoice_with(&app, &seed, one_line("50.00"), json!({"dueDate": "2099-01-31"})).await);
    // Left out: a draft, a paid, a void invoice.
    app.draft_invoice(&seed, one_line("1000.00")).await;
    let paid = id_of(&app.open_invoice(&seed, "200.00").await);
    let paid_by = pay_invoice(&app, &paid, Some("225.00")).await;
    assert_eq!(amount(&paid_by, "unallocated"), "25.00");
    let void =
        id_of(&open_invoice_with(&app, &seed, one_line("300.00"), json!({"issueDate": "2020-01-01", "dueDate": "2020-01-15"})).await);
    assert!(void_invoice(&app, &void).await.body["errors"].is_null());
    // Credit: 25.00 left from paying the paid invoice, 10.00 standalone; a void payment is left out.
    record_payment(&app, &seed, "10.00").await;
    let voided = id_of(&record_payment(&app, &seed, "40.00").await);
    void_payment_ok(&app, &voided).await;
    // Another client's records are not this client's.
    let other = second_client(&app).await;
    open_invoice_with(&app, &seed, one_line("77.00"), json!({"clientId": other, "issueDate": "2020-01-01", "dueDate": "2020-01-15"})).await;
    record_ok(&app, json!({"clientId": other, "locationId": seed.location, "methodId": cash, "amount": "5.00"})).await;

    let data = app
        .viewer()
        .ok("query($id: ID!) { client(id: $id) { balance { owing { amount currency } unallocatedCredit { amount currency } overdue { amount currency } } } }", json!({"id": seed.client}))
        .await;
    let balance = &data["client"]["balance"];
    assert_eq!(balance["owing"], json!({"amount": "120.00", "currency": "AUD"}), "70.00 overdue + 50.00 current");
    assert_eq!(balance["unallocatedCredit"], json!({"amount": "35.00", "currency": "AUD"}), "25.00 + 10.00, not the void 40.00");
    assert_eq!(balance["overdue"], json!({"amount": "70.00", "currency": "AUD"}), "only the invoice past its due date");
    assert_eq!(client_balance(&app, &other).await, ("77.00".into(), "5.00".into(), "77.00".into()));
    // Paying the overdue invoice clears the overdue amount.
    pay_invoice(&app, &overdue, None).await;
    assert_eq!(client_balance(&app, &seed.client).await, ("50.00".into(), "35.00".into(), "0.00".into()));
    let _ = current;
}

#[tokio::test]
async fn m6_client_balance_never_adds_other_currencies() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    app.open_invoice(&seed, "100.00").await;
    open_invoice_with(&app, &seed, one_line("50.00"), json!({"currency": "NZD"})).await;
    record_ok(&app, payment_input(&seed, &cash, "30.00", json!({"currency": "NZD"}))).await;
    let (owing, credit, _) = client_balance(&app, &seed.client).await;
    // The balance is stated in the practice's currency (AUD): NZD money is not AUD money.
    assert_eq!(owing, "100.00", "50.00 NZD is not 50.00 AUD owed");
    assert_eq!(credit, "0.00", "30.00 NZD is not 30.00 AUD of credit");
}

#[tokio::test]
async fn b2_statement_in_date_order_with_running_balance() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    // Before the range: invoice A 100.00 on 01-05, paid with 150.00 on 01-10, 20.00 refunded on 01-20.
    let a = id_of(&open_invoice_with(&app, &seed, one_line("100.00"), json!({"issueDate": "2024-01-05"})).await);
    let p1 = pay(&app, &a, json!({"methodId": cash, "amount": "150.00", "date": "2024-01-10"})).await;
    let p1 = id_of(&p1.data()["payInvoice"]["payment"]);
    assert!(refund(&app, &p1, "20.00", Some("2024-01-20")).await.body["errors"].is_null());
    // In the range: invoice B 80.00 on 02-01, credited 30.00 on 02-05, a 10.00 payment on 02-15.
    let b = id_of(&open_invoice_with(&app, &seed, one_line("80.00"), json!({"issueDate": "2024-02-01"})).await);
    issue_credit_ok(&app, &b, json!({"reason": "discount agreed", "date": "2024-02-05", "lines": [{"lineIndex": 0, "amount": "30.00"}]}))
        .await;
    record_ok(&app, payment_input(&seed, &cash, "10.00", json!({"date": "2024-02-15"}))).await;
    // Left out: a void invoice and a void payment in the range, and another client's payment.
    let void = id_of(&open_invoice_with(&app, &seed, one_line("999.00"), json!({"issueDate": "2024-02-10"})).await);
    assert!(void_invoice(&app, &void).await.body["errors"].is_null());
    let voided = id_of(&record_ok(&app, payment_input(&seed, &cash, "500.00", json!({"date": "2024-02-12"}))).await);
    void_payment_ok(&app, &voided).await;
    let other = second_client(&app).await;
    record_ok(&app, json!({"clientId": other, "locationId": seed.location, "methodId": cash, "amount": "5.00", "date": "2024-02-03"}))
        .await;

    let query = "query($id: ID!, $from: Date!, $to: Date!) { client(id: $id) { statement(from: $from, to: $to) { \
        from to openingBalance { amount currency } closingBalance { amount } \
        entries { date kind record reference description amount { amount } balance { amount } } } } }";
    let statement =
        app.viewer().ok(query, json!({"id": seed.client, "from": "2024-02-01", "to": "2024-02-29"})).await["client"]["statement"].clone();
    assert_eq!((statement["from"].as_str(), statement["to"].as_str()), (Some("2024-02-01"), Some("2024-02-29")));
    assert_eq!(statement["openingBalance"], json!({"amount": "-30.00", "currency": "AUD"}), "100.00 - 150.00 + 20.00 before the range");
    let entries: Vec<(&str, &str, &str, &str, &str)> = statement["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["date"].as_str().unwrap(),
                e["kind"].as_str().unwrap(),
                e["reference"].as_str().unwrap(),
                amount(e, "amount"),
                amount(e, "balance"),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("2024-02-01", "INVOICE", "INV-0002", "80.00", "50.00"),
            ("2024-02-05", "CREDIT_NOTE", "CN-0001", "-30.00", "20.00"),
            ("2024-02-15", "PAYMENT", "PAY-0002", "-10.00", "10.00"),
        ],
        "date order, running balance, no void records"
    );
    assert_eq!(amount(&statement, "closingBalance"), "10.00");
    assert_eq!(statement["entries"][0]["record"], format!("invoice:{b}"));

    // The whole history: the closing balance is what the client owes less the credit they hold.
    let whole =
        app.viewer().ok(query, json!({"id": seed.client, "from": "2024-01-01", "to": "2099-12-31"})).await["client"]["statement"].clone();
    assert_eq!(amount(&whole, "openingBalance"), "0.00");
    let whole_entries = whole["entries"].as_array().unwrap();
    let dates: Vec<&str> = whole_entries.iter().map(|e| e["date"].as_str().unwrap()).collect();
    let mut sorted = dates.clone();
    sorted.sort();
    assert_eq!(dates, sorted, "entries in date order");
    let kinds: Vec<&str> = whole_entries.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "ALLOCATION").count(), 1, "the allocation of PAY-0001 is listed: {kinds:?}");
    assert_eq!(kinds.len(), 7, "2 invoices, 2 payments, 1 refund, 1 credit note, 1 allocation: {kinds:?}");
    let allocation = whole_entries.iter().find(|e| e["kind"] == "ALLOCATION").unwrap();
    assert_eq!(amount(allocation, "amount"), "0.00", "an allocation only moves money between the two");
    assert_eq!(amount(&whole, "closingBalance"), "10.00");
    let (owing, credit, _) = client_balance(&app, &seed.client).await;
    assert_eq!((owing.as_str(), credit.as_str()), ("50.00", "40.00"), "B owes 50.00; 30.00 + 10.00 credit");
    // A range before anything happened.
    let empty =
        app.viewer().ok(query, json!({"id": seed.client, "from": "2023-01-01", "to": "2023-12-31"})).await["client"]["statement"].clone();
    assert_eq!((amount(&empty, "openingBalance"), amount(&empty, "closingBalance")), ("0.00", "0.00"));
    assert_eq!(empty["entries"], json!([]));
    // from after to is refused.
    let refused = app.viewer().post(query, json!({"id": seed.client, "from": "2024-03-01", "to": "2024-02-01"})).await;
    assert_error_code(&refused, "INVALID_INPUT");
}

// ---------------------------------------------------------------------------------------------
// unallocatedPayments: what the front desk picks from when applying credit.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn p5_unallocated_payments_lists_money_left_oldest_first() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let invoice = id_of(&app.open_invoice(&seed, "500.00").await);
    let p1 = id_of(&record_payment(&app, &seed, "100.00").await);
    let p2 = id_of(&record_payment(&app, &seed, "50.00").await);
    apply_ok(&app, &p2, &invoice, "50.00").await;
    let p3 = id_of(&record_payment(&app, &seed, "30.00").await);
    refund_ok(&app, &p3, "10.00").await;
    let p4 = id_of(&record_payment(&app, &seed, "20.00").await);
    void_payment_ok(&app, &p4).await;
    let p5 = id_of(&record_payment(&app, &seed, "40.00").await);
    refund_ok(&app, &p5, "40.00").await;
    let p6 = id_of(&record_payment(&app, &seed, "15.00").await);
    apply_ok(&app, &p6, &invoice, "5.00").await;
    let other = second_client(&app).await;
    record_ok(&app, json!({"clientId": other, "locationId": seed.location, "methodId": cash, "amount": "9.00"})).await;
    let data = app
        .viewer()
        .ok("query($c: ID!) { unallocatedPayments(clientId: $c) { id number unallocated { amount } } }", json!({"c": seed.client}))
        .await;
    let listed: Vec<(String, &str)> =
        data["unallocatedPayments"].as_array().unwrap().iter().map(|p| (id_of(p), amount(p, "unallocated"))).collect();
    assert_eq!(
        listed,
        [(p1, "100.00"), (p3, "20.00"), (p6, "10.00")],
        "not the fully allocated, void, fully refunded or other client's payments"
    );
}

// ---------------------------------------------------------------------------------------------
// X2, X3: idempotency keys and the audit trail.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn x2_payment_idempotency_keys() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let invoice = id_of(&app.open_invoice(&seed, "100.00").await);
    let billing = app.billing();

    // recordPayment: same key, same input → the same payment, once.
    let key = new_key();
    let input = payment_input(&seed, &cash, "80.00", json!({"date": "2024-01-01"}));
    let first = billing.ok(&record_query(), json!({"input": input, "key": key})).await["recordPayment"]["payment"].clone();
    let second = billing.ok(&record_query(), json!({"input": input, "key": key})).await["recordPayment"]["payment"].clone();
    assert_eq!(second["id"], first["id"]);
    assert_eq!(payment_count(&app).await, 1);
    let changed = payment_input(&seed, &cash, "81.00", json!({"date": "2024-01-01"}));
    billing.fails(&record_query(), json!({"input": changed, "key": key}), "IDEMPOTENCY_KEY_REUSED").await;
    assert_eq!(payment_count(&app).await, 1, "the reused key recorded nothing");
    let payment = id_of(&first);

    // applyPayment: the same allocation, allocated once.
    let key = new_key();
    let vars = json!({"payment": payment, "invoice": invoice, "amount": "30.00", "key": key});
    let a1 = billing.ok(&apply_query(), vars.clone()).await["applyPayment"]["allocation"].clone();
    let a2 = billing.ok(&apply_query(), vars).await["applyPayment"]["allocation"].clone();
    assert_eq!(a1["id"], a2["id"]);
    billing
        .fails(&apply_query(), json!({"payment": payment, "invoice": invoice, "amount": "31.00", "key": key}), "IDEMPOTENCY_KEY_REUSED")
        .await;
    assert_eq!(amount(&read_payment(&app, &payment).await, "allocated"), "30.00");

    // refundPayment: the same refund, refunded once.
    let key = new_key();
    let vars = json!({"payment": payment, "input": {"amount": "5.00"}, "key": key});
    let r1 = billing.ok(&refund_query(), vars.clone()).await["refundPayment"]["refund"].clone();
    let r2 = billing.ok(&refund_query(), vars).await["refundPayment"]["refund"].clone();
    assert_eq!(r1["id"], r2["id"]);
    assert_eq!(amount(&read_payment(&app, &payment).await, "refunded"), "5.00");

    // payInvoice: the same payment, paid once.
    let key = new_key();
    let vars = json!({"invoice": invoice, "input": {"methodId": cash, "amount": "20.00"}, "key": key});
    let p1 = billing.ok(&pay_query(), vars.clone()).await["payInvoice"]["payment"].clone();
    let p2 = billing.ok(&pay_query(), vars).await["payInvoice"]["payment"].clone();
    assert_eq!(p1["id"], p2["id"]);
    assert_eq!(amount(&read_invoice(&app, &invoice).await, "amountPaid"), "50.00");

    // removeAllocation: sent again it answers as the first time, not ALLOCATION_REMOVED.
    let key = new_key();
    let vars = json!({"allocation": a1["id"], "key": key});
    let removed = billing.ok(&remove_query(), vars.clone()).await["removeAllocation"]["allocation"].clone();
    let again = billing.ok(&remove_query(), vars).await["removeAllocation"]["allocation"].clone();
    assert_eq!((removed["id"].clone(), again["active"].clone()), (a1["id"].clone(), json!(false)));
    assert_eq!(amount(&read_invoice(&app, &invoice).await, "amountPaid"), "20.00", "removed once");

    // issueCreditNote: one credit note.
    let key = new_key();
    let vars = json!({"invoice": invoice, "input": {"reason": "r", "lines": [{"lineIndex": 0, "amount": "5.00"}]}, "key": key});
    let c1 = billing.ok(&issue_credit_query(), vars.clone()).await["issueCreditNote"]["creditNote"].clone();
    let c2 = billing.ok(&issue_credit_query(), vars).await["issueCreditNote"]["creditNote"].clone();
    assert_eq!((c1["id"].clone(), c2["number"].clone()), (c2["id"].clone(), json!("CN-0001")));
    assert_eq!(amount(&read_invoice(&app, &invoice).await, "amountCredited"), "5.00");

    // voidPayment: sent again it returns the void payment, not PAYMENT_VOID.
    let standalone = id_of(&record_payment(&app, &seed, "9.00").await);
    let key = new_key();
    let vars = json!({"payment": standalone, "reason": null, "key": key});
    billing.ok(&void_payment_query(), vars.clone()).await;
    let again = billing.ok(&void_payment_query(), vars).await["voidPayment"]["payment"].clone();
    assert_eq!(again["status"], "VOID");

    // A key belongs to one operation: used for another one it is refused.
    let response = billing.post(&refund_query(), json!({"payment": payment, "input": {"amount": "1.00"}, "key": key})).await;
    assert_error_code(&response, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(amount(&read_payment(&app, &payment).await, "refunded"), "5.00");
    assert_eq!(audit_actions(&app, &format!("payment:{payment}")).await.len(), 4, "record, apply, refund, remove: one event each");
}

#[tokio::test]
async fn x2_repeated_pay_invoice_of_the_whole_balance_returns_the_first_payment() {
    // Without an amount, payInvoice pays the balance; sent again after it paid the invoice, the
    // balance is 0 and only the key tells that this is the same request.
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let invoice = id_of(&app.open_invoice(&seed, "100.00").await);
    let billing = app.billing();
    let vars = json!({"invoice": invoice, "input": {"methodId": cash}, "key": new_key()});
    let first = billing.ok(&pay_query(), vars.clone()).await["payInvoice"]["payment"].clone();
    let again = billing.ok(&pay_query(), vars).await["payInvoice"]["payment"].clone();
    assert_eq!((&again["id"], &again["number"]), (&first["id"], &first["number"]));
    assert_eq!(amount(&first, "amount"), "100.00");
    assert_eq!(amount(&read_invoice(&app, &invoice).await, "amountPaid"), "100.00", "paid once");
    assert_eq!(payment_count(&app).await, 1);
    // A new key is a new request: the paid invoice refuses it.
    let response = billing.post(&pay_query(), json!({"invoice": invoice, "input": {"methodId": cash}, "key": new_key()})).await;
    assert_eq!(response.error_code(), Some("INVOICE_NOT_OPEN"), "a paid invoice takes no second payment: {}", response.body);
    assert_eq!(payment_count(&app).await, 1);
}

#[tokio::test]
async fn x3_each_money_mutation_appends_exactly_one_audit_event() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let invoice = id_of(&app.open_invoice(&seed, "100.00").await);
    let payment = id_of(&record_payment(&app, &seed, "100.00").await);
    let record = format!("payment:{payment}");
    let mut expected = vec!["payment.record".to_owned()];
    assert_eq!(audit_actions(&app, &record).await, expected);
    let mut allocation = String::new();
    // (step, action it appends, or None for a refused step that appends nothing)
    let steps = [
        ("apply", Some("allocation.create")),
        ("remove", Some("allocation.remove")),
        ("refund", Some("refund.create")),
        ("update", Some("payment.update")),
        ("refused refund", None),
        ("refused apply", None),
        ("refused void", None),
    ];
    for (step, action) in steps {
        let total_before = audit_count(&app).await;
        match step {
            "apply" => allocation = id_of(&apply_ok(&app, &payment, &invoice, "40.00").await),
            "remove" => drop(remove_ok(&app, &allocation).await),
            "refund" => drop(refund_ok(&app, &payment, "10.00").await),
            "update" => assert!(update_payment(&app, &payment, Some("note"), None).await.body["errors"].is_null()),
            "refused refund" => assert_error_code(&refund(&app, &payment, "90.01", None).await, "AMOUNT_EXCEEDS_UNALLOCATED"),
            "refused apply" => assert_error_code(&apply(&app, &payment, &invoice, "100.01").await, "AMOUNT_EXCEEDS_UNALLOCATED"),
            "refused void" => assert_error_code(&void_payment(&app, &payment, None).await, "PAYMENT_HAS_REFUNDS"),
            _ => unreachable!(),
        }
        if let Some(action) = action {
            expected.insert(0, action.to_owned());
        }
        assert_eq!(audit_actions(&app, &record).await, expected, "after {step}");
        let appended = if action.is_some() { 1 } else { 0 };
        assert_eq!(audit_count(&app).await, total_before + appended, "{step} appends {appended} event(s) in all");
    }
    // The event names who, which records and the key.
    let key = new_key();
    let other = id_of(&record_payment(&app, &seed, "5.00").await);
    app.billing().ok(&void_payment_query(), json!({"payment": other, "reason": "duplicate", "key": key})).await;
    let data = app
        .viewer()
        .ok(
            "query($r: String) { auditEvents(recordId: $r) { edges { node { action actor records reason idempotencyKey before after } } } }",
            json!({"r": format!("payment:{other}")}),
        )
        .await;
    let void = &data["auditEvents"]["edges"][0]["node"];
    assert_eq!(void["action"], "payment.void");
    assert_eq!(void["actor"], actor(Role::Billing));
    assert_eq!(void["reason"], "duplicate");
    assert_eq!(void["idempotencyKey"], json!(key));
    assert!(void["records"].as_array().unwrap().contains(&json!(format!("payment:{other}"))));
    assert_eq!(data["auditEvents"]["edges"][1]["node"]["action"], "payment.record");

    // payInvoice and recordPayment with allocations: one event each, on the payment and the invoice.
    let second = id_of(&app.open_invoice(&seed, "50.00").await);
    let paid = id_of(&pay_invoice(&app, &second, Some("20.00")).await);
    assert_eq!(audit_actions(&app, &format!("payment:{paid}")).await, ["payment.pay_invoice"]);
    let cash = cash_method(&app).await;
    let recorded = id_of(
        &record_ok(&app, payment_input(&seed, &cash, "30.00", json!({"allocations": [{"invoiceId": second, "amount": "30.00"}]}))).await,
    );
    assert_eq!(audit_actions(&app, &format!("payment:{recorded}")).await, ["payment.record"]);
    assert_eq!(
        audit_actions(&app, &format!("invoice:{second}")).await,
        ["payment.record", "payment.pay_invoice", "invoice.finalize", "invoice.create"]
    );

    // Credit notes.
    let note = id_of(&credit_amount(&app, &invoice, "10.00").await);
    assert_eq!(audit_actions(&app, &format!("credit_note:{note}")).await, ["credit_note.issue"]);
    assert_error_code(
        &issue_credit(&app, &invoice, json!({"reason": "", "lines": [{"lineIndex": 0, "amount": "1.00"}]})).await,
        "REASON_REQUIRED",
    );
    assert!(void_credit(&app, &note).await.body["errors"].is_null());
    assert_error_code(&void_credit(&app, &note).await, "CREDIT_NOTE_VOID");
    assert_eq!(audit_actions(&app, &format!("credit_note:{note}")).await, ["credit_note.void", "credit_note.issue"]);
}

// ---------------------------------------------------------------------------------------------
// A2: a VIEWER reads but changes nothing.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a2_viewer_cannot_change_payments_or_credit_notes() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let invoice = id_of(&app.open_invoice(&seed, "100.00").await);
    let payment = pay_invoice(&app, &invoice, Some("30.00")).await;
    let payment_id = id_of(&payment);
    let allocation = payment["allocations"][0]["id"].as_str().unwrap().to_owned();
    let credit = id_of(&record_payment(&app, &seed, "50.00").await);
    let note = id_of(&credit_amount(&app, &invoice, "10.00").await);
    let draft = id_of(&app.draft_invoice(&seed, one_line("10.00")).await);
    let snapshot = || async {
        (
            read_payment(&app, &payment_id).await,
            read_payment(&app, &credit).await,
            read_invoice(&app, &invoice).await,
            read_invoice(&app, &draft).await,
            read_credit_note(&app, &note).await,
            audit_count(&app).await,
        )
    };
    let before = snapshot().await;
    let viewer = app.viewer();
    // (query, variables, why)
    let attempts = [
        (record_query(), json!({"input": payment_input(&seed, &cash, "1.00", json!({})), "key": new_key()}), "recordPayment"),
        (pay_query(), json!({"invoice": invoice, "input": {"methodId": cash}, "key": new_key()}), "payInvoice"),
        (apply_query(), json!({"payment": credit, "invoice": invoice, "amount": "1.00", "key": new_key()}), "applyPayment"),
        (remove_query(), json!({"allocation": allocation, "key": new_key()}), "removeAllocation"),
        (refund_query(), json!({"payment": credit, "input": {"amount": "1.00"}, "key": new_key()}), "refundPayment"),
        (void_payment_query(), json!({"payment": credit, "reason": null, "key": new_key()}), "voidPayment"),
        (update_payment_query(), json!({"payment": credit, "description": "x", "reference": null, "key": new_key()}), "updatePayment"),
        (
            issue_credit_query(),
            json!({"invoice": invoice, "input": {"reason": "r", "lines": [{"lineIndex": 0, "amount": "1.00"}]}, "key": new_key()}),
            "issueCreditNote",
        ),
        (void_credit_query(), json!({"note": note, "reason": null, "key": new_key()}), "voidCreditNote"),
        (
            finalize_query(),
            json!({"id": draft, "input": {"paymentOption": "APPLY_PAYMENT", "payment": {"methodId": cash}}, "key": new_key()}),
            "finalizeInvoice with APPLY_PAYMENT",
        ),
    ];
    for (query, variables, why) in attempts {
        let response = viewer.post(&query, variables).await;
        assert_eq!(response.error_code(), Some("FORBIDDEN"), "{why}: {:#}", response.body);
    }
    assert_eq!(snapshot().await, before, "nothing changed and nothing was audited");
    assert_eq!(payment_count(&app).await, 2);
}

// ---------------------------------------------------------------------------------------------
// Lists of refunds, allocations and credit notes: newest first, paged, filtered, per tenant.
// ---------------------------------------------------------------------------------------------

/// The ids `list` (`refunds`, `allocations`, `creditNotes`) gives for `filter`, newest first, on
/// one page; its totalCount must agree.
async fn listed(caller: &Caller<'_>, list: &str, filter_type: &str, filter: Value) -> Vec<String> {
    let query = format!("query($filter: {filter_type}) {{ {list}(first: 100, filter: $filter) {{ totalCount edges {{ node {{ id }} }} }} }}");
    let data = caller.ok(&query, json!({"filter": filter})).await;
    let ids: Vec<String> = data[list]["edges"].as_array().unwrap().iter().map(|e| id_of(&e["node"])).collect();
    assert_eq!(data[list]["totalCount"].as_i64().unwrap(), ids.len() as i64, "totalCount of {list} for {filter}");
    ids
}

/// Walks `list` two rows at a time, following `endCursor`; returns the ids in the order seen.
async fn walked_two_at_a_time(app: &TestApp, list: &str) -> Vec<String> {
    let query = format!(
        "query($after: String) {{ {list}(first: 2, after: $after) {{ totalCount pageInfo {{ hasNextPage hasPreviousPage endCursor }} edges {{ node {{ id }} }} }} }}"
    );
    let (mut ids, mut after) = (Vec::new(), Value::Null);
    loop {
        let data = app.viewer().ok(&query, json!({"after": after})).await;
        let page = &data[list];
        ids.extend(page["edges"].as_array().unwrap().iter().map(|e| id_of(&e["node"])));
        assert_eq!(page["pageInfo"]["hasPreviousPage"], json!(!after.is_null()), "{list}: {page:#}");
        if page["pageInfo"]["hasNextPage"] == json!(false) {
            return ids;
        }
        assert_eq!(page["edges"].as_array().unwrap().len(), 2, "{list}: a page before the last is full: {page:#}");
        after = page["pageInfo"]["endCursor"].clone();
        assert!(ids.len() < 100, "{list}: the walk ends");
    }
}

/// Days around today, wide enough for any practice timezone and a test that crosses midnight.
fn days_from_today(days: i64) -> String {
    (chrono::Utc::now().date_naive() + chrono::Duration::days(days)).format("%Y-%m-%d").to_string()
}

#[tokio::test]
async fn refunds_list_newest_first_in_pages_and_filters_by_client_payment_outcome_and_dates() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let other = second_client(&app).await;
    let cash = cash_method(&app).await;
    let first = id_of(&record_payment(&app, &seed, "100.00").await);
    let for_other = id_of(&record_ok(&app, payment_input(&seed, &cash, "50.00", json!({"clientId": other}))).await);
    let third = id_of(&record_payment(&app, &seed, "30.00").await);
    let mut refunds = Vec::new();
    for (payment, value, date) in [(&first, "10.00", "2024-01-10"), (&first, "20.00", "2024-02-10"), (&for_other, "5.00", "2024-03-10"), (&third, "30.00", "2024-04-10")] {
        let response = refund(&app, payment, value, Some(date)).await;
        assert!(response.body["errors"].is_null(), "{:#}", response.body);
        refunds.push(id_of(&response.data()["refundPayment"]["refund"]));
    }
    let [r1, r2, r3, r4] = [0, 1, 2, 3].map(|i| refunds[i].clone());

    // (filter, expected newest first, why)
    let cases = [
        (json!({}), vec![r4.as_str(), r3.as_str(), r2.as_str(), r1.as_str()], "no filter: all, newest first"),
        (json!({"clientId": seed.client}), vec![r4.as_str(), r2.as_str(), r1.as_str()], "the seed client's"),
        (json!({"clientId": other}), vec![r3.as_str()], "the other client's"),
        (json!({"paymentId": first}), vec![r2.as_str(), r1.as_str()], "one payment's"),
        (json!({"outcome": "SUCCEEDED"}), vec![r4.as_str(), r3.as_str(), r2.as_str(), r1.as_str()], "a manual refund succeeds at once"),
        (json!({"outcome": "DECLINED"}), vec![], "none declined"),
        (json!({"outcome": "PENDING"}), vec![], "none pending"),
        (json!({"from": "2024-02-10", "to": "2024-03-10"}), vec![r3.as_str(), r2.as_str()], "both bounds inclusive"),
        (json!({"from": "2024-04-01"}), vec![r4.as_str()], "on or after"),
        (json!({"to": "2024-01-31"}), vec![r1.as_str()], "on or before"),
        (json!({"clientId": seed.client, "paymentId": for_other}), vec![], "no match for both"),
    ];
    for (filter, expected, why) in cases {
        assert_eq!(listed(&app.viewer(), "refunds", "RefundFilterInput", filter.clone()).await, expected, "{why}: {filter}");
    }
    assert_eq!(walked_two_at_a_time(&app, "refunds").await, vec![r4.clone(), r3, r2, r1], "pages of two, in order, none twice");

    let data = app
        .viewer()
        .ok("query($id: ID!) { refund(id: $id) { id paymentId outcome amount { amount } date } }", json!({"id": r4}))
        .await;
    assert_eq!(data["refund"], json!({"id": r4, "paymentId": third, "outcome": "SUCCEEDED", "amount": {"amount": "30.00"}, "date": "2024-04-10"}));
    // A cursor belongs to its list.
    let payments = app.viewer().ok("{ payments(first: 1) { pageInfo { endCursor } } }", json!({})).await;
    app.viewer()
        .fails(
            "query($after: String) { refunds(after: $after) { totalCount } }",
            json!({"after": payments["payments"]["pageInfo"]["endCursor"]}),
            "INVALID_INPUT",
        )
        .await;
}

#[tokio::test]
async fn allocations_list_newest_first_in_pages_and_filters_by_client_payment_invoice_state_and_dates() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let other = second_client(&app).await;
    let cash = cash_method(&app).await;
    let invoice_1 = id_of(&app.open_invoice(&seed, "100.00").await);
    let invoice_2 = id_of(&app.open_invoice(&seed, "50.00").await);
    let others_invoice = id_of(&open_invoice_with(&app, &seed, one_line("40.00"), json!({"clientId": other})).await);
    let credit = id_of(&record_payment(&app, &seed, "150.00").await);
    let a1 = id_of(&apply_ok(&app, &credit, &invoice_1, "100.00").await);
    let a2 = id_of(&apply_ok(&app, &credit, &invoice_2, "30.00").await);
    let others_payment = id_of(&record_ok(&app, payment_input(&seed, &cash, "40.00", json!({"clientId": other}))).await);
    let a3 = id_of(&apply_ok(&app, &others_payment, &others_invoice, "40.00").await);
    remove_ok(&app, &a2).await;
    let paid = pay_invoice(&app, &invoice_2, Some("20.00")).await;
    let a4 = id_of(&paid["allocations"][0]);

    let (before, after) = (days_from_today(-2), days_from_today(2));
    // (filter, expected newest first, why)
    let cases = [
        (json!({}), vec![a4.as_str(), a3.as_str(), a2.as_str(), a1.as_str()], "no filter: all, newest first, the removed one too"),
        (json!({"clientId": seed.client}), vec![a4.as_str(), a2.as_str(), a1.as_str()], "the seed client's"),
        (json!({"clientId": other}), vec![a3.as_str()], "the other client's"),
        (json!({"paymentId": credit}), vec![a2.as_str(), a1.as_str()], "one payment's"),
        (json!({"invoiceId": invoice_2}), vec![a4.as_str(), a2.as_str()], "one invoice's, payInvoice's allocation too"),
        (json!({"active": true}), vec![a4.as_str(), a3.as_str(), a1.as_str()], "active ones"),
        (json!({"active": false}), vec![a2.as_str()], "removed ones"),
        (json!({"paymentId": credit, "active": true}), vec![a1.as_str()], "all conditions hold"),
        (json!({"from": before, "to": after}), vec![a4.as_str(), a3.as_str(), a2.as_str(), a1.as_str()], "made around today"),
        (json!({"from": after}), vec![], "none made after today"),
        (json!({"to": before}), vec![], "none made before today"),
    ];
    for (filter, expected, why) in cases {
        assert_eq!(listed(&app.viewer(), "allocations", "AllocationFilterInput", filter.clone()).await, expected, "{why}: {filter}");
    }
    assert_eq!(walked_two_at_a_time(&app, "allocations").await, vec![a4.clone(), a3, a2, a1], "pages of two, in order, none twice");

    let data = app
        .viewer()
        .ok("{ allocations(first: 1) { edges { node { number paymentId invoiceId active payment { id } invoice { id } } } } }", json!({}))
        .await;
    let newest = &data["allocations"]["edges"][0]["node"];
    let payment_number = paid["number"].as_str().unwrap();
    assert_eq!(newest["number"], format!("{payment_number}-1"), "{newest:#}");
    assert_eq!((&newest["payment"]["id"], &newest["invoice"]["id"]), (&paid["id"], &json!(invoice_2)));
}

#[tokio::test]
async fn credit_notes_list_newest_first_in_pages_and_filters_by_client_invoice_status_and_dates() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let other = second_client(&app).await;
    let invoice_1 = id_of(&app.open_invoice(&seed, "100.00").await);
    let invoice_2 = id_of(&app.open_invoice(&seed, "100.00").await);
    let others_invoice = id_of(&open_invoice_with(&app, &seed, one_line("100.00"), json!({"clientId": other})).await);
    let mut notes = Vec::new();
    for (invoice, date) in [(&invoice_1, "2024-01-10"), (&invoice_1, "2024-02-10"), (&others_invoice, "2024-03-10"), (&invoice_2, "2024-04-10")] {
        let input = json!({"reason": "goodwill", "date": date, "lines": [{"lineIndex": 0, "amount": "10.00"}]});
        notes.push(id_of(&issue_credit_ok(&app, invoice, input).await));
    }
    let [c1, c2, c3, c4] = [0, 1, 2, 3].map(|i| notes[i].clone());
    let voided = void_credit(&app, &c2).await;
    assert!(voided.body["errors"].is_null(), "{:#}", voided.body);

    // (filter, expected newest first, why)
    let cases = [
        (json!({}), vec![c4.as_str(), c3.as_str(), c2.as_str(), c1.as_str()], "no filter: all, newest first, the void one too"),
        (json!({"clientId": seed.client}), vec![c4.as_str(), c2.as_str(), c1.as_str()], "the seed client's"),
        (json!({"clientId": other}), vec![c3.as_str()], "the other client's"),
        (json!({"invoiceId": invoice_1}), vec![c2.as_str(), c1.as_str()], "one invoice's"),
        (json!({"status": "ISSUED"}), vec![c4.as_str(), c3.as_str(), c1.as_str()], "issued ones"),
        (json!({"status": "VOID"}), vec![c2.as_str()], "void ones"),
        (json!({"from": "2024-02-10", "to": "2024-03-10"}), vec![c3.as_str(), c2.as_str()], "both bounds inclusive"),
        (json!({"from": "2024-04-01"}), vec![c4.as_str()], "on or after"),
        (json!({"to": "2024-01-31"}), vec![c1.as_str()], "on or before"),
        (json!({"invoiceId": invoice_1, "status": "VOID"}), vec![c2.as_str()], "all conditions hold"),
        (json!({"clientId": other, "invoiceId": invoice_1}), vec![], "no match for both"),
    ];
    for (filter, expected, why) in cases {
        assert_eq!(listed(&app.viewer(), "creditNotes", "CreditNoteFilterInput", filter.clone()).await, expected, "{why}: {filter}");
    }
    assert_eq!(walked_two_at_a_time(&app, "creditNotes").await, vec![c4, c3, c2.clone(), c1], "pages of two, in order, none twice");

    let data = app.viewer().ok("{ creditNotes(filter: {status: VOID}) { edges { node { id number status invoiceId } } } }", json!({})).await;
    assert_eq!(data["creditNotes"]["edges"][0]["node"], json!({"id": c2, "number": "CN-0002", "status": "VOID", "invoiceId": invoice_1}));
}

/// A3: another tenant's refunds, allocations and credit notes never appear in these lists, not
/// even when a filter names that tenant's client, payment or invoice; and that tenant's own do.
#[tokio::test]
async fn a3_lists_of_refunds_allocations_and_credit_notes_never_show_another_tenants_records() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let invoice = id_of(&app.open_invoice(&seed, "100.00").await);
    let payment = id_of(&record_payment(&app, &seed, "60.00").await);
    apply_ok(&app, &payment, &invoice, "20.00").await;
    refund_ok(&app, &payment, "10.00").await;
    credit_amount(&app, &invoice, "5.00").await;

    let tenant_b = format!("b{}", uuid::Uuid::new_v4().simple());
    let b_admin = app.with_token(Some(app.token_for(&tenant_b, Role::Admin)));
    let b_client = b_admin.ok("mutation { createClient(input: {name: \"Cy Dao\"}) { id } }", json!({})).await["createClient"]["id"].clone();
    let b_location = b_admin.ok("mutation { createLocation(input: {name: \"Elsewhere\"}) { id } }", json!({})).await["createLocation"]["id"].clone();
    let b_methods = b_admin.ok("{ paymentMethods { id name } }", json!({})).await;
    let b_cash = b_methods["paymentMethods"].as_array().unwrap().iter().find(|m| m["name"] == "Cash").unwrap()["id"].clone();
    let b_payment = b_admin
        .ok(
            &record_query(),
            json!({"input": {"clientId": b_client, "locationId": b_location, "methodId": b_cash, "amount": "8.00"}, "key": new_key()}),
        )
        .await["recordPayment"]["payment"]["id"]
        .clone();
    let b_refund = b_admin
        .ok(&refund_query(), json!({"payment": b_payment, "input": {"amount": "3.00"}, "key": new_key()}))
        .await["refundPayment"]["refund"]["id"]
        .clone();

    for role in [Role::Viewer, Role::Billing, Role::Admin] {
        let b = app.with_token(Some(app.token_for(&tenant_b, role)));
        let why = format!("tenant B with {role}");
        // (list, filter type, filter, B's own ids)
        let cases = [
            ("refunds", "RefundFilterInput", json!({}), vec![b_refund.as_str().unwrap().to_owned()]),
            ("refunds", "RefundFilterInput", json!({"clientId": seed.client}), vec![]),
            ("refunds", "RefundFilterInput", json!({"paymentId": payment}), vec![]),
            ("allocations", "AllocationFilterInput", json!({}), vec![]),
            ("allocations", "AllocationFilterInput", json!({"clientId": seed.client}), vec![]),
            ("allocations", "AllocationFilterInput", json!({"paymentId": payment}), vec![]),
            ("allocations", "AllocationFilterInput", json!({"invoiceId": invoice}), vec![]),
            ("creditNotes", "CreditNoteFilterInput", json!({}), vec![]),
            ("creditNotes", "CreditNoteFilterInput", json!({"clientId": seed.client}), vec![]),
            ("creditNotes", "CreditNoteFilterInput", json!({"invoiceId": invoice}), vec![]),
        ];
        for (list, filter_type, filter, expected) in cases {
            assert_eq!(listed(&b, list, filter_type, filter.clone()).await, expected, "{why}: {list} {filter}");
        }
        let refund_id = listed(&app.viewer(), "refunds", "RefundFilterInput", json!({})).await.remove(0);
        let data = b.ok("query($id: ID!) { refund(id: $id) { id } }", json!({"id": refund_id})).await;
        assert!(data["refund"].is_null(), "{why}: A's refund is not found by id");
    }
    // And tenant A's lists hold only A's records.
    assert_eq!(listed(&app.viewer(), "refunds", "RefundFilterInput", json!({})).await.len(), 1);
    assert_eq!(listed(&app.viewer(), "allocations", "AllocationFilterInput", json!({})).await.len(), 1);
    assert_eq!(listed(&app.viewer(), "creditNotes", "CreditNoteFilterInput", json!({})).await.len(), 1);
}
