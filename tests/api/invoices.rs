//! I1-I8, M1-M4, X2, X3 through the invoice API.

use std::collections::HashSet;

use serde_json::{Value, json};
use settle::auth::Role;

use crate::helpers::*;

#[tokio::test]
async fn i1_new_invoice_is_draft_and_m3_totals() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let invoice = app
        .draft_invoice(&seed, json!([
            {"description": "Consult", "unitPrice": "100.00", "taxRateId": seed.gst},
            {"description": "Dressing", "quantity": "3", "unitPrice": "33.33", "discount": {"type": "PERCENT", "value": "10"}}
        ]))
        .await;
    assert_eq!(invoice["status"], "DRAFT");
    assert_eq!(invoice["number"], serde_json::Value::Null);
    assert_eq!(invoice["total"]["amount"], "199.99");
    assert_eq!(invoice["taxTotal"]["amount"], "10.00");
    assert_eq!(invoice["balance"]["amount"], "199.99");
}

// ---------------------------------------------------------------------------------------------
// Local helpers: the invoice operations as a client sends them.
// ---------------------------------------------------------------------------------------------

fn create_query() -> String {
    format!(
        "mutation($input: InvoiceInput!, $key: String!) {{ createInvoice(input: $input, idempotencyKey: $key) {{ invoice {{ {INVOICE_FIELDS} }} }} }}"
    )
}

fn update_query() -> String {
    format!(
        "mutation($id: ID!, $input: InvoiceInput!, $key: String!) {{ updateInvoice(id: $id, input: $input, idempotencyKey: $key) {{ invoice {{ {INVOICE_FIELDS} taxMode }} }} }}"
    )
}

fn finalize_query() -> String {
    format!(
        "mutation($id: ID!, $input: FinalizeInvoiceInput!, $key: String!) {{ finalizeInvoice(id: $id, input: $input, idempotencyKey: $key) {{ invoice {{ {INVOICE_FIELDS} }} }} }}"
    )
}

fn revert_query() -> String {
    format!(
        "mutation($id: ID!, $key: String!) {{ revertInvoiceToDraft(id: $id, idempotencyKey: $key) {{ invoice {{ {INVOICE_FIELDS} }} }} }}"
    )
}

fn void_query() -> String {
    format!(
        "mutation($id: ID!, $reason: String, $key: String!) {{ voidInvoice(id: $id, reason: $reason, idempotencyKey: $key) {{ invoice {{ {INVOICE_FIELDS} voidReason voidedAt }} }} }}"
    )
}

const DELETE: &str = "mutation($id: ID!, $key: String!) { deleteInvoice(id: $id, idempotencyKey: $key) { deletedInvoiceId } }";

/// An InvoiceInput for the seed's client and location, with `extra` fields merged in.
fn input(seed: &Seed, lines: Value, extra: Value) -> Value {
    let mut input = json!({"clientId": seed.client, "locationId": seed.location, "lines": lines});
    if let Value::Object(extra) = extra {
        input.as_object_mut().unwrap().extend(extra);
    }
    input
}

fn one_line(price: &str) -> Value {
    json!([{"description": "Consultation", "unitPrice": price}])
}

fn id_of(invoice: &Value) -> String {
    invoice["id"].as_str().expect("an invoice id").to_owned()
}

async fn create(app: &TestApp, input: Value) -> Gql {
    app.billing().post(&create_query(), json!({"input": input, "key": new_key()})).await
}

async fn create_ok(app: &TestApp, input: Value) -> Value {
    let response = create(app, input).await;
    assert!(response.body["errors"].is_null(), "createInvoice failed: {:#}", response.body);
    response.data()["createInvoice"]["invoice"].clone()
}

async fn update(app: &TestApp, id: &str, input: Value) -> Gql {
    app.billing().post(&update_query(), json!({"id": id, "input": input, "key": new_key()})).await
}

async fn finalize_with(app: &TestApp, id: &str, finalize_input: Value) -> Gql {
    app.billing().post(&finalize_query(), json!({"id": id, "input": finalize_input, "key": new_key()})).await
}

async fn finalize_raw(app: &TestApp, id: &str) -> Gql {
    finalize_with(app, id, json!({})).await
}

async fn revert(app: &TestApp, id: &str) -> Gql {
    app.billing().post(&revert_query(), json!({"id": id, "key": new_key()})).await
}

async fn void(app: &TestApp, id: &str, reason: Option<&str>) -> Gql {
    app.billing().post(&void_query(), json!({"id": id, "reason": reason, "key": new_key()})).await
}

async fn delete(app: &TestApp, id: &str) -> Gql {
    app.billing().post(DELETE, json!({"id": id, "key": new_key()})).await
}

/// The invoice as `invoice(id)` returns it (null when it does not exist).
async fn read(app: &TestApp, id: &str) -> Value {
    let query = format!("query($id: ID!) {{ invoice(id: $id) {{ {INVOICE_FIELDS} taxMode voidReason }} }}");
    app.viewer().ok(&query, json!({"id": id})).await["invoice"].clone()
}

/// How many invoices the tenant has, of any status.
async fn invoice_count(app: &TestApp) -> i64 {
    app.viewer().ok("{ invoices { totalCount } }", json!({})).await["invoices"]["totalCount"].as_i64().unwrap()
}

async fn settings(app: &TestApp) -> Value {
    app.viewer().ok("{ settings { currency taxMode paymentTermsDays nextInvoiceNumber timezone } }", json!({})).await["settings"].clone()
}

async fn update_settings(app: &TestApp, change: Value) -> Gql {
    app.admin()
        .post(
            "mutation($input: SettingsInput!) { updateSettings(input: $input) { currency taxMode nextInvoiceNumber timezone } }",
            json!({"input": change}),
        )
        .await
}

async fn update_settings_ok(app: &TestApp, change: Value) {
    let response = update_settings(app, change.clone()).await;
    assert!(response.body["errors"].is_null(), "updateSettings({change}) failed: {:#}", response.body);
}

/// Audit events of one invoice, oldest first.
async fn audit_events(app: &TestApp, id: &str) -> Vec<Value> {
    let data = app
        .viewer()
        .ok(
            "query($r: String) { auditEvents(recordId: $r, first: 100) { totalCount edges { node { actor action records idempotencyKey before after reason } } } }",
            json!({"r": format!("invoice:{id}")}),
        )
        .await;
    let mut events: Vec<Value> =
        data["auditEvents"]["edges"].as_array().unwrap().iter().map(|e| e["node"].clone()).collect();
    assert_eq!(data["auditEvents"]["totalCount"].as_i64().unwrap() as usize, events.len());
    events.reverse();
    events
}

async fn audit_actions(app: &TestApp, id: &str) -> Vec<String> {
    audit_events(app, id).await.iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect()
}

/// Ids of the invoices a filter selects, newest first.
async fn filtered_ids(app: &TestApp, filter: Value) -> Vec<String> {
    let data = app
        .viewer()
        .ok(
            "query($f: InvoiceFilterInput) { invoices(first: 100, filter: $f) { totalCount edges { node { id } } } }",
            json!({"f": filter}),
        )
        .await;
    let ids: Vec<String> = data["invoices"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(data["invoices"]["totalCount"].as_i64().unwrap() as usize, ids.len(), "totalCount for {filter}");
    ids
}

async fn create_tax_rate(app: &TestApp, name: &str, percent: &str) -> String {
    let data = app
        .admin()
        .ok(
            "mutation($input: TaxRateInput!) { createTaxRate(input: $input) { id system archived } }",
            json!({"input": {"name": name, "percent": percent}}),
        )
        .await;
    assert_eq!(data["createTaxRate"]["system"], false);
    data["createTaxRate"]["id"].as_str().unwrap().to_owned()
}

/// The tenant's "today": the issue date of a draft that gives none.
async fn tenant_today(app: &TestApp, seed: &Seed) -> chrono::NaiveDate {
    let draft = create_ok(app, input(seed, json!([]), json!({}))).await;
    let today = chrono::NaiveDate::parse_from_str(draft["issueDate"].as_str().unwrap(), "%Y-%m-%d").unwrap();
    delete(app, &id_of(&draft)).await;
    today
}

fn date(d: chrono::NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

// ---------------------------------------------------------------------------------------------
// M1, M2: amounts are exact decimal strings, never rounded.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn m1_amounts_must_be_decimal_strings() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    // (unitPrice as sent, expected code, why)
    let cases = [
        (json!(10), "INVALID_AMOUNT", "a JSON integer is not an amount"),
        (json!(10.5), "INVALID_AMOUNT", "a JSON float is not an amount"),
        (json!("1e3"), "INVALID_AMOUNT", "exponent notation is refused"),
        (json!("abc"), "INVALID_AMOUNT", "not a number at all"),
        (json!("1,000.00"), "INVALID_AMOUNT", "thousands separators are refused"),
        (json!(" 10.00"), "INVALID_AMOUNT", "spaces are refused"),
        (json!(".5"), "INVALID_AMOUNT", "a leading digit is required"),
        (json!(""), "INVALID_AMOUNT", "empty string"),
        (json!("99999999999999999"), "INVALID_AMOUNT", "above the largest amount (10^16)"),
    ];
    for (price, code, why) in cases {
        let response =
            create(&app, input(&seed, json!([{"description": "Consult", "unitPrice": price}]), json!({}))).await;
        assert_eq!(response.error_code(), Some(code), "{why}: unitPrice {price}: {:#}", response.body);
    }
    // The same refusal when the number is written into the query text instead of a variable.
    let query = format!(
        "mutation {{ createInvoice(idempotencyKey: \"{}\", input: {{clientId: \"{}\", locationId: \"{}\", lines: [{{description: \"Consult\", unitPrice: 10.50}}]}}) {{ invoice {{ id }} }} }}",
        new_key(),
        seed.client,
        seed.location
    );
    app.billing().fails(&query, json!({}), "INVALID_AMOUNT").await;
    assert_eq!(invoice_count(&app).await, 0, "no refused amount created an invoice");
}

#[tokio::test]
async fn m2_over_precise_amounts_are_refused_not_rounded() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    // (lines, currency, why)
    let cases = [
        (json!([{"description": "Consult", "unitPrice": "10.005"}]), None, "AUD has 2 decimal places"),
        (json!([{"description": "Consult", "unitPrice": "0.001"}]), None, "a tenth of a cent"),
        (
            json!([{"description": "Consult", "unitPrice": "10.00", "discount": {"type": "AMOUNT", "value": "1.005"}}]),
            None,
            "a fixed discount is money too",
        ),
        (json!([{"description": "Consult", "unitPrice": "100.5"}]), Some("JPY"), "JPY has no minor unit"),
    ];
    for (lines, currency, why) in cases {
        let response = create(&app, input(&seed, lines.clone(), json!({"currency": currency}))).await;
        assert_eq!(response.error_code(), Some("AMOUNT_TOO_PRECISE"), "{why}: {lines}: {:#}", response.body);
        let message = response.body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("line 1"), "{why}: the message names the line: {message}");
    }
    assert_eq!(invoice_count(&app).await, 0, "M2/X1: nothing created by a refused amount");

    // Trailing zeros carry no extra precision.
    let invoice = create_ok(&app, input(&seed, one_line("10.500"), json!({}))).await;
    assert_eq!(invoice["total"]["amount"], "10.50");
}

#[tokio::test]
async fn m2_jpy_invoice_has_no_minor_unit() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let response = create(&app, input(&seed, one_line("100.5"), json!({"currency": "JPY"}))).await;
    assert_error_code(&response, "AMOUNT_TOO_PRECISE");
    let invoice = create_ok(&app, input(&seed, one_line("100"), json!({"currency": "JPY"}))).await;
    assert_eq!(invoice["currency"], "JPY");
    assert_eq!(invoice["total"], json!({"amount": "100", "currency": "JPY"}));
    assert_eq!(invoice["subtotal"]["amount"], "100");
    assert_eq!(invoice["taxTotal"]["amount"], "0");
    assert_eq!(invoice["balance"]["amount"], "100");
    assert_eq!(invoice["lines"][0]["total"]["amount"], "100");
    // GST on 105 yen is 10.5 yen: rounded half away from zero to 11.
    let taxed = create_ok(
        &app,
        input(
            &seed,
            json!([{"description": "Consult", "unitPrice": "105", "taxRateId": seed.gst}]),
            json!({"currency": "JPY"}),
        ),
    )
    .await;
    assert_eq!(taxed["taxTotal"]["amount"], "11");
    assert_eq!(taxed["total"]["amount"], "116");
    assert_eq!(invoice_count(&app).await, 2);
}

#[tokio::test]
async fn m2_currency_must_be_known_and_defaults_to_the_tenant() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    // (currency, why)
    for (currency, why) in [("XYZ", "not ISO 4217"), ("aud", "codes are upper case"), ("XAU", "gold is not billed in")]
    {
        let response = create(&app, input(&seed, one_line("10.00"), json!({"currency": currency}))).await;
        assert_eq!(response.error_code(), Some("UNKNOWN_CURRENCY"), "{why}: {currency}: {:#}", response.body);
    }
    assert_eq!(invoice_count(&app).await, 0);
    let invoice = create_ok(&app, input(&seed, one_line("10.00"), json!({}))).await;
    assert_eq!(invoice["currency"], "AUD", "the tenant's default currency");
    update_settings_ok(&app, json!({"currency": "NZD"})).await;
    let invoice = create_ok(&app, input(&seed, one_line("10.00"), json!({}))).await;
    assert_eq!(invoice["total"], json!({"amount": "10.00", "currency": "NZD"}), "the tenant's changed currency");
}

#[tokio::test]
async fn m2_invalid_line_values_are_invalid_input() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    // (line, why)
    let cases = [
        (json!({"description": "Consult", "unitPrice": "-10.00"}), "negative price"),
        (json!({"description": "Consult", "unitPrice": "10.00", "quantity": "0"}), "zero quantity"),
        (json!({"description": "Consult", "unitPrice": "10.00", "quantity": "-1"}), "negative quantity"),
        (json!({"description": "Consult", "unitPrice": "10.00", "quantity": "abc"}), "quantity not a number"),
        (json!({"description": "Consult", "unitPrice": "10.00", "quantity": "1.00001"}), "quantity over 4 places"),
        (
            json!({"description": "Consult", "unitPrice": "10.00", "discount": {"type": "AMOUNT", "value": "10.01"}}),
            "fixed discount above the line",
        ),
        (
            json!({"description": "Consult", "unitPrice": "10.00", "discount": {"type": "AMOUNT", "value": "-1.00"}}),
            "negative discount",
        ),
        (
            json!({"description": "Consult", "unitPrice": "10.00", "discount": {"type": "PERCENT", "value": "100.1"}}),
            "percentage above 100",
        ),
        (
            json!({"description": "Consult", "unitPrice": "10.00", "discount": {"type": "PERCENT", "value": "ten"}}),
            "percentage not a number",
        ),
        (json!({"description": "", "unitPrice": "10.00"}), "empty description"),
        (json!({"description": "   ", "unitPrice": "10.00"}), "blank description"),
    ];
    for (line, why) in cases {
        let response = create(&app, input(&seed, json!([line.clone()]), json!({}))).await;
        assert_eq!(response.error_code(), Some("INVALID_INPUT"), "{why}: {line}: {:#}", response.body);
    }
    assert_eq!(invoice_count(&app).await, 0, "no invalid line created an invoice");
}

// ---------------------------------------------------------------------------------------------
// M3: per-line tax by tax mode, rounded half away from zero.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn m3_tax_modes_through_the_api() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let gst_line = |price: &str| json!([{"description": "Consult", "unitPrice": price, "taxRateId": seed.gst}]);
    // (tax mode, lines, subtotal, tax, total, why)
    let cases = [
        ("EXCLUSIVE", gst_line("100.00"), "100.00", "10.00", "110.00", "EXCLUSIVE adds 10% GST on top"),
        ("INCLUSIVE", gst_line("110.00"), "100.00", "10.00", "110.00", "INCLUSIVE takes 1/11 out of the price"),
        ("INCLUSIVE", gst_line("10.00"), "9.09", "0.91", "10.00", "INCLUSIVE 0.909 rounds to 0.91"),
        ("NONE", gst_line("110.00"), "110.00", "0.00", "110.00", "NONE charges no tax whatever rate a line names"),
    ];
    for (mode, lines, subtotal, tax, total, why) in cases {
        update_settings_ok(&app, json!({"taxMode": mode})).await;
        let invoice = create_ok(&app, input(&seed, lines, json!({}))).await;
        assert_eq!(
            (&invoice["subtotal"]["amount"], &invoice["taxTotal"]["amount"], &invoice["total"]["amount"]),
            (&json!(subtotal), &json!(tax), &json!(total)),
            "{why}"
        );
        assert_eq!(invoice["lines"][0]["tax"]["amount"], json!(tax), "{why}: line tax");
        let saved = read(&app, &id_of(&invoice)).await;
        assert_eq!(saved["taxMode"], mode, "{why}: the invoice keeps the mode it was created under");
        assert_eq!(saved["total"]["amount"], json!(total), "{why}: read back");
    }
}

#[tokio::test]
async fn m3_rounding_discounts_and_quantities() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let gst = seed.gst.clone();
    // (lines, subtotal, discountTotal, tax, total, why)
    let cases = [
        (
            json!([
                {"description": "A", "unitPrice": "0.05", "taxRateId": gst},
                {"description": "B", "unitPrice": "0.05", "taxRateId": gst},
                {"description": "C", "unitPrice": "0.05", "taxRateId": gst}
            ]),
            "0.15",
            "0.00",
            "0.03",
            "0.18",
            "each line's 0.005 tax rounds away from zero to 0.01; the sum of rounded lines is 0.03, not round(0.015)=0.02 nor 0.17",
        ),
        (
            json!([{"description": "Sessions", "quantity": "2", "unitPrice": "50.00", "discount": {"type": "AMOUNT", "value": "20.00"}, "taxRateId": gst}]),
            "80.00",
            "20.00",
            "8.00",
            "88.00",
            "a fixed discount comes off before tax",
        ),
        (
            json!([{"description": "Hours", "quantity": "1.5", "unitPrice": "80.00", "discount": {"type": "PERCENT", "value": "10"}, "taxRateId": gst}]),
            "108.00",
            "12.00",
            "10.80",
            "118.80",
            "1.5 x 80 = 120, 10% off = 108, GST 10.80",
        ),
        (
            json!([{"description": "Hours", "quantity": "1.5", "unitPrice": "33.33"}]),
            "50.00",
            "0.00",
            "0.00",
            "50.00",
            "1.5 x 33.33 = 49.995 rounds half away from zero to 50.00",
        ),
        (
            json!([{"description": "Dressing", "quantity": "3", "unitPrice": "33.33", "taxRateId": gst}]),
            "99.99",
            "0.00",
            "10.00",
            "109.99",
            "9.999 tax rounds to 10.00",
        ),
        (
            json!([{"description": "Minutes", "quantity": "0.3333", "unitPrice": "30.00"}]),
            "10.00",
            "0.00",
            "0.00",
            "10.00",
            "0.3333 x 30 = 9.999 rounds to 10.00",
        ),
        (
            json!([{"description": "Item", "unitPrice": "0.15", "discount": {"type": "PERCENT", "value": "50"}}]),
            "0.07",
            "0.08",
            "0.00",
            "0.07",
            "a 50% discount of 0.15 is 0.075, rounded to 0.08",
        ),
    ];
    for (lines, subtotal, discount, tax, total, why) in cases {
        let invoice = create_ok(&app, input(&seed, lines, json!({}))).await;
        assert_eq!(
            (
                &invoice["subtotal"]["amount"],
                &invoice["discountTotal"]["amount"],
                &invoice["taxTotal"]["amount"],
                &invoice["total"]["amount"],
            ),
            (&json!(subtotal), &json!(discount), &json!(tax), &json!(total)),
            "{why}"
        );
        assert_eq!(invoice["balance"]["amount"], json!(total), "{why}: a new invoice owes its total");
    }
    // Line-level detail of the quantity case.
    let invoice = create_ok(
        &app,
        input(
            &seed,
            json!([{"description": "Hours", "quantity": "1.5", "unitPrice": "80.00", "taxRateId": gst}]),
            json!({}),
        ),
    )
    .await;
    assert_eq!(invoice["lines"][0]["quantity"], "1.5");
    assert_eq!(invoice["lines"][0]["subtotal"]["amount"], "120.00");
    assert_eq!(invoice["lines"][0]["tax"]["amount"], "12.00");
    assert_eq!(invoice["lines"][0]["total"]["amount"], "132.00");
}

#[tokio::test]
async fn m3_a_draft_keeps_the_tax_mode_it_was_created_under() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let lines = json!([{"description": "Consult", "unitPrice": "110.00", "taxRateId": seed.gst}]);
    let draft = create_ok(&app, input(&seed, lines.clone(), json!({}))).await;
    assert_eq!(draft["total"]["amount"], "121.00");
    update_settings_ok(&app, json!({"taxMode": "INCLUSIVE"})).await;
    let response = update(&app, &id_of(&draft), input(&seed, lines, json!({}))).await;
    let updated = &response.data()["updateInvoice"]["invoice"];
    assert_eq!(updated["taxMode"], "EXCLUSIVE", "schema: the tax mode the invoice was created under");
    assert_eq!(updated["total"]["amount"], "121.00", "recomputed in the draft's own EXCLUSIVE mode");
}

// ---------------------------------------------------------------------------------------------
// M4, I3: nothing owed is PAID.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn m4_i3_zero_total_invoice_finalizes_to_paid() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    // (lines, why)
    let cases = [
        (json!([{"description": "Free check-up", "unitPrice": "0.00"}]), "a free line"),
        (
            json!([{"description": "Waived", "unitPrice": "80.00", "discount": {"type": "PERCENT", "value": "100"}, "taxRateId": seed.gst}]),
            "fully discounted",
        ),
    ];
    for (number, (lines, why)) in cases.into_iter().enumerate() {
        let draft = create_ok(&app, input(&seed, lines, json!({}))).await;
        assert_eq!(draft["total"]["amount"], "0.00", "{why}");
        let invoice = app.finalize(&id_of(&draft)).await;
        assert_eq!(invoice["status"], "PAID", "{why}: I3 a zero balance is PAID");
        assert_eq!(invoice["balance"]["amount"], "0.00", "{why}: M4");
        assert_eq!(invoice["amountPaid"]["amount"], "0.00", "{why}: nothing was allocated");
        assert_eq!(invoice["number"], format!("INV-{:04}", number + 1), "{why}: a paid invoice is still numbered");
        assert_eq!(invoice["overdue"], false, "{why}");
    }
    // A non-zero invoice finalizes to OPEN owing its total.
    let open = app.open_invoice(&seed, "120.00").await;
    assert_eq!(open["status"], "OPEN");
    assert_eq!(open["balance"]["amount"], "120.00");
    assert_eq!(filtered_ids(&app, json!({"status": "PAID"})).await.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// I1: only drafts are edited.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn i1_editing_a_draft_replaces_lines_and_recomputes_totals() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let draft = app
        .draft_invoice(
            &seed,
            json!([
                {"description": "Consult", "unitPrice": "100.00", "taxRateId": seed.gst},
                {"description": "Dressing", "unitPrice": "15.00"}
            ]),
        )
        .await;
    assert_eq!(draft["total"]["amount"], "125.00");
    let id = id_of(&draft);
    let new_lines =
        json!([{"description": "Long consult", "quantity": "2", "unitPrice": "75.00", "taxRateId": seed.gst}]);
    let response = update(
        &app,
        &id,
        input(&seed, new_lines, json!({"issueDate": "2024-03-01", "dueDate": "2024-03-31", "notes": "Second visit"})),
    )
    .await;
    let updated = response.data()["updateInvoice"]["invoice"].clone();
    assert!(response.body["errors"].is_null(), "{:#}", response.body);
    assert_eq!(updated["id"], json!(id), "the same invoice");
    assert_eq!(updated["status"], "DRAFT");
    assert_eq!(updated["lines"].as_array().unwrap().len(), 1, "the lines given replace all lines");
    assert_eq!(updated["lines"][0]["description"], "Long consult");
    assert_eq!(updated["subtotal"]["amount"], "150.00");
    assert_eq!(updated["taxTotal"]["amount"], "15.00");
    assert_eq!(updated["total"]["amount"], "165.00");
    assert_eq!(updated["balance"]["amount"], "165.00");
    assert_eq!((&updated["issueDate"], &updated["dueDate"]), (&json!("2024-03-01"), &json!("2024-03-31")));
    let saved = read(&app, &id).await;
    assert_eq!(saved["total"]["amount"], "165.00", "the edit is stored");
    assert_eq!(saved["lines"].as_array().unwrap().len(), 1);

    // An update with no lines leaves an empty draft, which cannot be finalized.
    let response = update(&app, &id, input(&seed, json!([]), json!({}))).await;
    assert_eq!(response.data()["updateInvoice"]["invoice"]["total"]["amount"], "0.00");
    assert_error_code(&finalize_raw(&app, &id).await, "INVOICE_EMPTY");
}

#[tokio::test]
async fn i1_only_drafts_can_be_edited() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let open = app.open_invoice(&seed, "120.00").await;
    let id = id_of(&open);
    let response = update(&app, &id, input(&seed, one_line("1.00"), json!({}))).await;
    assert_error_code(&response, "INVOICE_NOT_DRAFT");
    let saved = read(&app, &id).await;
    assert_eq!(saved["total"]["amount"], "120.00", "X1: the refused edit changed nothing");
    assert_eq!(saved["status"], "OPEN");

    let paid = app.open_invoice(&seed, "0.00").await;
    assert_eq!(paid["status"], "PAID");
    let response = update(&app, &id_of(&paid), input(&seed, one_line("1.00"), json!({}))).await;
    assert_error_code(&response, "INVOICE_NOT_DRAFT");

    let response = update(&app, &new_key(), input(&seed, one_line("1.00"), json!({}))).await;
    assert_error_code(&response, "NOT_FOUND");
}

// ---------------------------------------------------------------------------------------------
// I2: finalize and numbering.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn i2_finalize_numbers_invoices_in_sequence() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let first = app.open_invoice(&seed, "120.00").await;
    let second = app.open_invoice(&seed, "80.00").await;
    assert_eq!((&first["number"], &first["status"]), (&json!("INV-0001"), &json!("OPEN")));
    assert_eq!((&second["number"], &second["status"]), (&json!("INV-0002"), &json!("OPEN")));
    assert_eq!(first["balance"]["amount"], "120.00");
    assert_eq!(settings(&app).await["nextInvoiceNumber"], 3);
    let saved = app
        .viewer()
        .ok("query($id: ID!) { invoice(id: $id) { number finalizedAt } }", json!({"id": id_of(&first)}))
        .await;
    assert_eq!(saved["invoice"]["number"], "INV-0001");
    assert!(saved["invoice"]["finalizedAt"].is_string(), "finalizedAt is set");
}

#[tokio::test]
async fn i2_finalize_refusals() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;

    let empty = create_ok(&app, input(&seed, json!([]), json!({}))).await;
    assert_error_code(&finalize_raw(&app, &id_of(&empty)).await, "INVOICE_EMPTY");
    assert_eq!(read(&app, &id_of(&empty)).await["status"], "DRAFT");

    let open = app.open_invoice(&seed, "50.00").await;
    assert_error_code(&finalize_raw(&app, &id_of(&open)).await, "INVOICE_NOT_DRAFT");

    let draft = app.draft_invoice(&seed, one_line("60.00")).await;
    // (payment option, expected code, why)
    let cases = [
        ("CHARGE", "NOT_FOUND", "CHARGE with a payment method that does not exist"),
        ("APPLY_PAYMENT", "NOT_FOUND", "APPLY_PAYMENT with a payment method that does not exist"),
    ];
    for (option, code, why) in cases {
        let response =
            finalize_with(&app, &id_of(&draft), json!({"paymentOption": option, "payment": {"methodId": "x"}})).await;
        assert_eq!(response.error_code(), Some(code), "{why}: {:#}", response.body);
    }
    let after = read(&app, &id_of(&draft)).await;
    assert_eq!(
        (&after["status"], &after["number"]),
        (&json!("DRAFT"), &Value::Null),
        "X1: refused finalize changed nothing"
    );

    assert_error_code(&finalize_raw(&app, &new_key()).await, "NOT_FOUND");
    assert_eq!(settings(&app).await["nextInvoiceNumber"], 2, "only the one successful finalize took a number");
    assert_eq!(audit_actions(&app, &id_of(&draft)).await, ["invoice.create"], "X3: refusals leave no audit event");

    // REQUEST_PAYMENT given explicitly behaves as the default.
    let invoice = finalize_with(&app, &id_of(&draft), json!({"paymentOption": "REQUEST_PAYMENT"})).await;
    assert_eq!(invoice.data()["finalizeInvoice"]["invoice"]["number"], "INV-0002");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn i2_concurrent_finalizes_of_one_draft_number_it_once() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let draft = app.draft_invoice(&seed, one_line("60.00")).await;
    let id = id_of(&draft);
    let app = &app;
    let responses = futures::future::join_all((0..5).map(|_| {
        let id = id.clone();
        async move { finalize_raw(app, &id).await }
    }))
    .await;
    let won: Vec<&Gql> = responses.iter().filter(|r| r.body["errors"].is_null()).collect();
    assert_eq!(won.len(), 1, "exactly one finalize wins: {responses:#?}");
    assert_eq!(won[0].data()["finalizeInvoice"]["invoice"]["number"], "INV-0001");
    for response in responses.iter().filter(|r| !r.body["errors"].is_null()) {
        assert_error_code(response, "INVOICE_NOT_DRAFT");
    }
    assert_eq!(settings(app).await["nextInvoiceNumber"], 2);
}

#[tokio::test]
async fn i2_next_invoice_number_is_configurable() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    app.open_invoice(&seed, "10.00").await; // INV-0001
    update_settings_ok(&app, json!({"nextInvoiceNumber": 1000})).await;
    let invoice = app.open_invoice(&seed, "10.00").await;
    assert_eq!(invoice["number"], "INV-1000");
    assert_eq!(settings(&app).await["nextInvoiceNumber"], 1001);

    // (next number, expected code, why)
    let cases = [
        (1000, Some("INVOICE_NUMBER_IN_USE"), "1000 is issued"),
        (1, Some("INVOICE_NUMBER_IN_USE"), "1 is issued"),
        (500, Some("INVOICE_NUMBER_IN_USE"), "a higher number (1000) is already issued"),
        (0, Some("INVALID_INPUT"), "numbers start at 1"),
        (-5, Some("INVALID_INPUT"), "numbers start at 1"),
        (1001, None, "the next free number"),
        (9999, None, "a jump forward"),
    ];
    for (next, code, why) in cases {
        let response = update_settings(&app, json!({"nextInvoiceNumber": next})).await;
        assert_eq!(response.error_code(), code, "{why}: nextInvoiceNumber {next}: {:#}", response.body);
    }
    assert_eq!(settings(&app).await["nextInvoiceNumber"], 9999);
    assert_eq!(app.open_invoice(&seed, "10.00").await["number"], "INV-9999");
    assert_eq!(app.open_invoice(&seed, "10.00").await["number"], "INV-10000", "at least 4 digits, more when needed");

    // The setting needs ADMIN.
    let response = app
        .billing()
        .post("mutation { updateSettings(input: {nextInvoiceNumber: 20000}) { nextInvoiceNumber } }", json!({}))
        .await;
    assert_error_code(&response, "FORBIDDEN");
    assert_eq!(settings(&app).await["nextInvoiceNumber"], 10001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn i2_concurrent_finalizes_take_gap_free_unique_numbers() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let mut ids = Vec::new();
    for n in 0..20 {
        let draft = app.draft_invoice(&seed, one_line(&format!("{}.00", 10 + n))).await;
        ids.push(id_of(&draft));
    }
    let app = &app;
    let responses = futures::future::join_all(ids.iter().map(|id| finalize_raw(app, id))).await;
    let mut numbers = Vec::new();
    for (id, response) in ids.iter().zip(&responses) {
        assert!(response.body["errors"].is_null(), "finalize of {id} failed: {:#}", response.body);
        let invoice = &response.data()["finalizeInvoice"]["invoice"];
        assert_eq!(invoice["id"], json!(id));
        assert_eq!(invoice["status"], "OPEN");
        numbers.push(invoice["number"].as_str().unwrap().to_owned());
    }
    numbers.sort();
    let expected: Vec<String> = (1..=20).map(|n| format!("INV-{n:04}")).collect();
    assert_eq!(numbers, expected, "exactly INV-0001..INV-0020: no gaps, no duplicates");
    assert_eq!(settings(app).await["nextInvoiceNumber"], 21);
    // What each request returned is what was stored.
    for (id, response) in ids.iter().zip(&responses) {
        assert_eq!(read(app, id).await["number"], response.data()["finalizeInvoice"]["invoice"]["number"]);
    }
}

// ---------------------------------------------------------------------------------------------
// I4: OVERDUE is derived.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn i4_overdue_is_derived_from_the_due_date() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let past =
        create_ok(&app, input(&seed, one_line("50.00"), json!({"issueDate": "2020-01-01", "dueDate": "2020-01-15"})))
            .await;
    assert_eq!((&past["status"], &past["overdue"]), (&json!("DRAFT"), &json!(false)), "a draft is never overdue");
    let past = app.finalize(&id_of(&past)).await;
    assert_eq!((&past["status"], &past["overdue"]), (&json!("OVERDUE"), &json!(true)));
    let future = app.open_invoice(&seed, "70.00").await; // issued today, due in 14 days
    assert_eq!((&future["status"], &future["overdue"]), (&json!("OPEN"), &json!(false)));

    let read_back = read(&app, &id_of(&past)).await;
    assert_eq!((&read_back["status"], &read_back["overdue"]), (&json!("OVERDUE"), &json!(true)));

    assert_eq!(filtered_ids(&app, json!({"status": "OVERDUE"})).await, [id_of(&past)]);
    assert_eq!(
        filtered_ids(&app, json!({"status": "OPEN"})).await,
        [id_of(&future)],
        "OPEN leaves out overdue invoices"
    );

    // Voiding ends it being overdue.
    let voided = void(&app, &id_of(&past), Some("billed in error")).await;
    assert_eq!(voided.data()["voidInvoice"]["invoice"]["status"], "VOID");
    assert_eq!(voided.data()["voidInvoice"]["invoice"]["overdue"], false);
    assert!(filtered_ids(&app, json!({"status": "OVERDUE"})).await.is_empty());
}

#[tokio::test]
async fn i4_due_today_is_not_yet_overdue() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let today = tenant_today(&app, &seed).await;
    let yesterday = today - chrono::Days::new(1);
    // (due date, status, why)
    let cases = [(today, "OPEN", "due today is not overdue"), (yesterday, "OVERDUE", "due yesterday is overdue")];
    for (due, status, why) in cases {
        let draft = create_ok(
            &app,
            input(&seed, one_line("10.00"), json!({"issueDate": date(yesterday), "dueDate": date(due)})),
        )
        .await;
        let invoice = app.finalize(&id_of(&draft)).await;
        assert_eq!(invoice["status"], status, "{why} (today {today})");
        assert_eq!(invoice["overdue"], status == "OVERDUE", "{why}");
    }
}

#[tokio::test]
async fn i4_overdue_uses_the_tenants_timezone() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    // UTC+14 and UTC-11 are 25 hours apart: their dates always differ by one or two days.
    update_settings_ok(&app, json!({"timezone": "Pacific/Kiritimati"})).await;
    let today_east = tenant_today(&app, &seed).await;
    let due = today_east - chrono::Days::new(1);
    let draft =
        create_ok(&app, input(&seed, one_line("10.00"), json!({"issueDate": date(due), "dueDate": date(due)}))).await;
    let invoice = app.finalize(&id_of(&draft)).await;
    assert_eq!(invoice["status"], "OVERDUE", "due yesterday in Kiritimati ({today_east})");
    update_settings_ok(&app, json!({"timezone": "Pacific/Pago_Pago"})).await;
    let invoice = read(&app, &id_of(&draft)).await;
    assert_eq!(invoice["status"], "OPEN", "in Pago Pago the due date {due} has not passed yet");
    assert_eq!(invoice["overdue"], false);
    assert_eq!(filtered_ids(&app, json!({"status": "OPEN"})).await, [id_of(&draft)]);
    assert!(filtered_ids(&app, json!({"status": "OVERDUE"})).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// I5: revert to draft.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn i5_revert_keeps_the_number_and_refinalize_reuses_it() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let invoice = app.open_invoice(&seed, "120.00").await;
    let id = id_of(&invoice);
    assert_eq!(invoice["number"], "INV-0001");

    let response = revert(&app, &id).await;
    let reverted = &response.data()["revertInvoiceToDraft"]["invoice"];
    assert_eq!((&reverted["status"], &reverted["number"]), (&json!("DRAFT"), &json!("INV-0001")));
    assert_eq!(settings(&app).await["nextInvoiceNumber"], 2);

    // A reverted draft can be edited; it keeps its number through the edit.
    let response = update(&app, &id, input(&seed, one_line("90.00"), json!({}))).await;
    let edited = &response.data()["updateInvoice"]["invoice"];
    assert_eq!(
        (&edited["number"], &edited["total"]["amount"]),
        (&json!("INV-0001"), &json!("90.00")),
        "{:#}",
        response.body
    );

    let refinalized = app.finalize(&id).await;
    assert_eq!((&refinalized["status"], &refinalized["number"]), (&json!("OPEN"), &json!("INV-0001")));
    assert_eq!(refinalized["balance"]["amount"], "90.00");
    assert_eq!(settings(&app).await["nextInvoiceNumber"], 2, "re-finalizing consumed no number");
    assert_eq!(app.open_invoice(&seed, "10.00").await["number"], "INV-0002", "the next invoice gets the next number");
}

#[tokio::test]
async fn i5_revert_refusals() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let draft = app.draft_invoice(&seed, one_line("10.00")).await;
    assert_error_code(&revert(&app, &id_of(&draft)).await, "INVOICE_NOT_OPEN");
    assert_error_code(&revert(&app, &new_key()).await, "NOT_FOUND");
    assert_eq!(audit_actions(&app, &id_of(&draft)).await, ["invoice.create"]);
    // Reverting twice: the second finds a draft.
    let open = app.open_invoice(&seed, "10.00").await;
    assert_eq!(revert(&app, &id_of(&open)).await.data()["revertInvoiceToDraft"]["invoice"]["status"], "DRAFT");
    assert_error_code(&revert(&app, &id_of(&open)).await, "INVOICE_NOT_OPEN");
}

#[tokio::test]
async fn i5_a_paid_zero_total_invoice_can_be_reverted() {
    // docs/rules.md: reverting needs an OPEN or PAID invoice (nothing allocated, nothing credited).
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let paid = app.open_invoice(&seed, "0.00").await;
    assert_eq!(paid["status"], "PAID");
    let response = revert(&app, &id_of(&paid)).await;
    let reverted = &response.data()["revertInvoiceToDraft"]["invoice"];
    assert_eq!(
        (&reverted["status"], &reverted["number"]),
        (&json!("DRAFT"), &json!("INV-0001")),
        "{:#}",
        response.body
    );
    let again = app.finalize(&id_of(&paid)).await;
    assert_eq!((&again["status"], &again["number"]), (&json!("PAID"), &json!("INV-0001")));
}

// ---------------------------------------------------------------------------------------------
// I6: delete.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn i6_only_drafts_can_be_deleted() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let draft = app.draft_invoice(&seed, one_line("10.00")).await;
    let id = id_of(&draft);
    let key = new_key();
    let data = app.billing().ok(DELETE, json!({"id": id, "key": key})).await;
    assert_eq!(data["deleteInvoice"]["deletedInvoiceId"], json!(id));
    assert_eq!(read(&app, &id).await, Value::Null, "deleted for good");
    assert_eq!(invoice_count(&app).await, 0);
    let events = audit_events(&app, &id).await;
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["invoice.create", "invoice.delete"], "the audit trail outlives the invoice");
    assert_eq!(events[1]["idempotencyKey"], json!(key));
    assert_error_code(&delete(&app, &id).await, "NOT_FOUND");

    let open = app.open_invoice(&seed, "10.00").await;
    assert_error_code(&delete(&app, &id_of(&open)).await, "INVOICE_NOT_DRAFT");
    assert!(!read(&app, &id_of(&open)).await.is_null());

    let paid = app.open_invoice(&seed, "0.00").await;
    assert_error_code(&delete(&app, &id_of(&paid)).await, "INVOICE_NOT_DRAFT");

    // A reverted draft carries a number: deleting it would leave a gap in the sequence.
    let reverted = app.open_invoice(&seed, "10.00").await;
    let reverted_id = id_of(&reverted);
    revert(&app, &reverted_id).await;
    assert_error_code(&delete(&app, &reverted_id).await, "INVOICE_NUMBERED");
    assert_eq!(read(&app, &reverted_id).await["number"], reverted["number"]);
    assert_eq!(invoice_count(&app).await, 3);
}

// ---------------------------------------------------------------------------------------------
// I7: void.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn i7_void_is_final_and_stays_readable() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let open = app.open_invoice(&seed, "120.00").await;
    let id = id_of(&open);
    let response = void(&app, &id, Some("  Billed to the wrong client  ")).await;
    let voided = &response.data()["voidInvoice"]["invoice"];
    assert_eq!(voided["status"], "VOID", "{:#}", response.body);
    assert_eq!(voided["voidReason"], "Billed to the wrong client", "the reason is kept (trimmed)");
    assert!(voided["voidedAt"].is_string());
    assert_eq!(voided["number"], "INV-0001", "a void invoice keeps its number");

    let saved = read(&app, &id).await;
    assert_eq!((&saved["status"], &saved["voidReason"]), (&json!("VOID"), &json!("Billed to the wrong client")));
    assert_eq!(saved["total"]["amount"], "120.00", "still readable as it was");
    assert_eq!(filtered_ids(&app, json!({"status": "VOID"})).await, [id.clone()]);
    assert!(filtered_ids(&app, json!({"status": "OPEN"})).await.is_empty());

    // (operation, response, why)
    let attempts = [
        ("update", update(&app, &id, input(&seed, one_line("1.00"), json!({}))).await),
        ("finalize", finalize_raw(&app, &id).await),
        ("revert", revert(&app, &id).await),
        ("void", void(&app, &id, Some("again")).await),
        ("delete", delete(&app, &id).await),
    ];
    for (operation, response) in attempts {
        assert_eq!(response.error_code(), Some("INVOICE_VOID"), "I7 VOID is final: {operation}: {:#}", response.body);
    }
    assert_eq!(read(&app, &id).await["voidReason"], "Billed to the wrong client", "the second void changed nothing");
    assert_eq!(audit_actions(&app, &id).await, ["invoice.create", "invoice.finalize", "invoice.void"]);
}

#[tokio::test]
async fn i7_only_open_invoices_can_be_voided() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let draft = app.draft_invoice(&seed, one_line("10.00")).await;
    assert_error_code(&void(&app, &id_of(&draft), Some("x")).await, "INVOICE_NOT_OPEN");
    assert_eq!(read(&app, &id_of(&draft)).await["status"], "DRAFT");
    let paid = app.open_invoice(&seed, "0.00").await;
    assert_error_code(&void(&app, &id_of(&paid), None).await, "INVOICE_NOT_OPEN");
    assert_error_code(&void(&app, &new_key(), None).await, "NOT_FOUND");
    // An overdue invoice is OPEN underneath and can be voided; no reason is fine.
    let overdue =
        create_ok(&app, input(&seed, one_line("10.00"), json!({"issueDate": "2020-01-01", "dueDate": "2020-01-15"})))
            .await;
    app.finalize(&id_of(&overdue)).await;
    let response = void(&app, &id_of(&overdue), None).await;
    assert_eq!(response.data()["voidInvoice"]["invoice"]["status"], "VOID", "{:#}", response.body);
    assert_eq!(response.data()["voidInvoice"]["invoice"]["voidReason"], Value::Null);
}

// ---------------------------------------------------------------------------------------------
// Validation of an invoice's own fields and references.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn invoice_input_validation() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let missing = new_key();
    let lines = one_line("10.00");
    // (input, expected code, why)
    let cases = [
        (
            input(&seed, lines.clone(), json!({"issueDate": "2024-03-10", "dueDate": "2024-03-09"})),
            "INVALID_INPUT",
            "due date before issue date",
        ),
        (input(&seed, lines.clone(), json!({"clientId": missing})), "NOT_FOUND", "unknown client"),
        (input(&seed, lines.clone(), json!({"locationId": missing})), "NOT_FOUND", "unknown location"),
        (input(&seed, lines.clone(), json!({"billToId": missing})), "NOT_FOUND", "unknown bill-to contact"),
        (
            input(&seed, json!([{"description": "Consult", "unitPrice": "10.00", "taxRateId": missing}]), json!({})),
            "NOT_FOUND",
            "unknown tax rate",
        ),
        (input(&seed, lines.clone(), json!({"clientId": seed.location})), "NOT_FOUND", "a location id is not a client"),
        (
            input(&seed, json!([{"description": "", "unitPrice": "10.00"}]), json!({})),
            "INVALID_INPUT",
            "empty description",
        ),
        (input(&seed, lines.clone(), json!({"issueDate": "2024-02-30"})), "QUERY_REJECTED", "no such date"),
    ];
    for (input, code, why) in cases {
        let response = create(&app, input.clone()).await;
        assert_eq!(response.error_code(), Some(code), "{why}: {input}: {:#}", response.body);
    }
    assert_eq!(invoice_count(&app).await, 0, "no invalid input created an invoice");

    // Same day due is fine; no due date means issue date + payment terms (14 days by default).
    let same_day =
        create_ok(&app, input(&seed, lines.clone(), json!({"issueDate": "2024-03-10", "dueDate": "2024-03-10"}))).await;
    assert_eq!(same_day["dueDate"], "2024-03-10");
    let default_due = create_ok(&app, input(&seed, lines.clone(), json!({"issueDate": "2024-01-01"}))).await;
    assert_eq!(default_due["dueDate"], "2024-01-15");
    app.admin().ok("mutation { updateSettings(input: {paymentTermsDays: 30}) { paymentTermsDays } }", json!({})).await;
    let thirty = create_ok(&app, input(&seed, lines.clone(), json!({"issueDate": "2024-01-01"}))).await;
    assert_eq!(thirty["dueDate"], "2024-01-31");
}

#[tokio::test]
async fn a3_invoices_of_another_tenant_are_not_found() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let draft = app.draft_invoice(&seed, one_line("10.00")).await;
    let id = id_of(&draft);
    let other_tenant = format!("t{}", uuid::Uuid::new_v4().simple());
    let other = app.with_token(Some(app.token_for(&other_tenant, Role::Billing)));
    let data = other.ok("query($id: ID!) { invoice(id: $id) { id } }", json!({"id": id})).await;
    assert_eq!(data["invoice"], Value::Null);
    let finalize = finalize_query();
    other.fails(&finalize, json!({"id": id, "input": {}, "key": new_key()}), "NOT_FOUND").await;
    other.fails(DELETE, json!({"id": id, "key": new_key()}), "NOT_FOUND").await;
    // Nor can this tenant use another tenant's tax rate.
    let other_rates = other.ok("{ taxRates { id name } }", json!({})).await;
    let other_gst =
        other_rates["taxRates"].as_array().unwrap().iter().find(|r| r["name"] == "GST").unwrap()["id"].clone();
    assert_ne!(other_gst, json!(seed.gst));
    let response = create(
        &app,
        input(&seed, json!([{"description": "Consult", "unitPrice": "1.00", "taxRateId": other_gst}]), json!({})),
    )
    .await;
    assert_error_code(&response, "NOT_FOUND");
    // Nor can another tenant bill this tenant's client.
    let response = other
        .post(&create_query(), json!({"input": input(&seed, one_line("1.00"), json!({})), "key": new_key()}))
        .await;
    assert_error_code(&response, "NOT_FOUND");
    assert_eq!(read(&app, &id).await["status"], "DRAFT");
    assert_eq!(invoice_count(&app).await, 1);
}

// ---------------------------------------------------------------------------------------------
// Tax rates: custom rates are archived and restored; system rates are fixed.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tax_rates_archived_custom_rate_cannot_be_used_on_new_lines() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let levy = create_tax_rate(&app, "Levy", "5").await;
    let levy_line = json!([{"description": "Consult", "unitPrice": "100.00", "taxRateId": levy}]);
    let with_levy = create_ok(&app, input(&seed, levy_line.clone(), json!({}))).await;
    assert_eq!(with_levy["taxTotal"]["amount"], "5.00");

    let archived =
        app.admin().ok("mutation($id: ID!) { archiveTaxRate(id: $id) { archived } }", json!({"id": levy})).await;
    assert_eq!(archived["archiveTaxRate"]["archived"], true);
    let response = create(&app, input(&seed, levy_line.clone(), json!({}))).await;
    assert_error_code(&response, "TAX_RATE_ARCHIVED");
    let other_draft = app.draft_invoice(&seed, one_line("100.00")).await;
    assert_error_code(
        &update(&app, &id_of(&other_draft), input(&seed, levy_line.clone(), json!({}))).await,
        "TAX_RATE_ARCHIVED",
    );
    // A draft that already had the rate keeps it when edited.
    let response = update(&app, &id_of(&with_levy), input(&seed, levy_line.clone(), json!({}))).await;
    assert_eq!(response.data()["updateInvoice"]["invoice"]["taxTotal"]["amount"], "5.00", "{:#}", response.body);

    // Listed only when archived ones are asked for.
    let names = |data: &Value| -> Vec<(String, bool)> {
        data["taxRates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["name"].as_str().unwrap().to_owned(), r["archived"].as_bool().unwrap()))
            .collect()
    };
    let active = app.viewer().ok("{ taxRates { name archived } }", json!({})).await;
    assert!(!names(&active).iter().any(|(n, _)| n == "Levy"), "archived rates are hidden by default: {active}");
    let all = app.viewer().ok("{ taxRates(includeArchived: true) { name archived } }", json!({})).await;
    assert!(names(&all).contains(&("Levy".to_owned(), true)), "includeArchived lists it: {all}");

    let restored =
        app.admin().ok("mutation($id: ID!) { restoreTaxRate(id: $id) { archived } }", json!({"id": levy})).await;
    assert_eq!(restored["restoreTaxRate"]["archived"], false);
    let invoice = create_ok(&app, input(&seed, levy_line, json!({}))).await;
    assert_eq!(invoice["taxTotal"]["amount"], "5.00", "a restored rate can be chosen again");
}

#[tokio::test]
async fn tax_rates_edits_do_not_touch_saved_lines() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let levy = create_tax_rate(&app, "Levy", "5").await;
    let draft = create_ok(
        &app,
        input(&seed, json!([{"description": "Consult", "unitPrice": "100.00", "taxRateId": levy}]), json!({})),
    )
    .await;
    let updated = app
        .admin()
        .ok(
            "mutation($id: ID!) { updateTaxRate(id: $id, input: {name: \"Levy 2\", percent: \"12.5\"}) { name percent } }",
            json!({"id": levy}),
        )
        .await;
    assert_eq!(updated["updateTaxRate"], json!({"name": "Levy 2", "percent": "12.5"}));
    let line = app
        .viewer()
        .ok(
            "query($id: ID!) { invoice(id: $id) { taxTotal { amount } lines { taxRateName taxPercent } } }",
            json!({"id": id_of(&draft)}),
        )
        .await;
    assert_eq!(line["invoice"]["taxTotal"]["amount"], "5.00", "saved lines keep the rate they were saved with");
    assert_eq!(line["invoice"]["lines"][0], json!({"taxRateName": "Levy", "taxPercent": "5"}));
    let fresh = create_ok(
        &app,
        input(&seed, json!([{"description": "Consult", "unitPrice": "100.00", "taxRateId": levy}]), json!({})),
    )
    .await;
    assert_eq!(fresh["taxTotal"]["amount"], "12.50", "new lines use the edited rate");
}

#[tokio::test]
async fn tax_rates_system_rates_cannot_be_changed() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let admin = app.admin();
    admin
        .fails(
            "mutation($id: ID!) { updateTaxRate(id: $id, input: {name: \"GST\", percent: \"15\"}) { id } }",
            json!({"id": seed.gst}),
            "TAX_RATE_SYSTEM",
        )
        .await;
    admin
        .fails("mutation($id: ID!) { archiveTaxRate(id: $id) { id } }", json!({"id": seed.gst}), "TAX_RATE_SYSTEM")
        .await;
    admin
        .fails("mutation($id: ID!) { restoreTaxRate(id: $id) { id } }", json!({"id": seed.gst}), "TAX_RATE_SYSTEM")
        .await;
    let rates =
        app.viewer().ok("{ taxRates(includeArchived: true) { id name percent system archived } }", json!({})).await;
    let gst = rates["taxRates"].as_array().unwrap().iter().find(|r| r["id"] == json!(seed.gst)).unwrap().clone();
    assert_eq!(gst, json!({"id": seed.gst, "name": "GST", "percent": "10", "system": true, "archived": false}));
    // Tax-rate management needs ADMIN.
    app.billing()
        .fails("mutation { createTaxRate(input: {name: \"X\", percent: \"1\"}) { id } }", json!({}), "FORBIDDEN")
        .await;
}

// ---------------------------------------------------------------------------------------------
// X2: idempotency keys.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn x2_same_key_same_input_returns_the_first_invoice() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let key = new_key();
    let invoice_input = input(&seed, one_line("120.00"), json!({}));
    let query = create_query();
    let first = app.billing().ok(&query, json!({"input": invoice_input, "key": key})).await;
    let second = app.billing().ok(&query, json!({"input": invoice_input, "key": key})).await;
    assert_eq!(first["createInvoice"]["invoice"]["id"], second["createInvoice"]["invoice"]["id"]);
    assert_eq!(second["createInvoice"]["invoice"]["total"]["amount"], "120.00");
    assert_eq!(invoice_count(&app).await, 1, "the repeat created nothing");
    let id = id_of(&first["createInvoice"]["invoice"]);
    assert_eq!(audit_actions(&app, &id).await, ["invoice.create"], "the repeat appended no audit event");

    // Same key, different input.
    let changed = input(&seed, one_line("121.00"), json!({}));
    app.billing().fails(&query, json!({"input": changed, "key": key}), "IDEMPOTENCY_KEY_REUSED").await;
    // Same key, another operation.
    app.billing().fails(&finalize_query(), json!({"id": id, "input": {}, "key": key}), "IDEMPOTENCY_KEY_REUSED").await;
    assert_eq!(invoice_count(&app).await, 1);
    assert_eq!(read(&app, &id).await["status"], "DRAFT");

    // A repeated finalize returns the first result and takes no second number.
    let finalize_key = new_key();
    let once = app.billing().ok(&finalize_query(), json!({"id": id, "input": {}, "key": finalize_key})).await;
    let twice = app.billing().ok(&finalize_query(), json!({"id": id, "input": {}, "key": finalize_key})).await;
    assert_eq!(once["finalizeInvoice"]["invoice"]["number"], "INV-0001");
    assert_eq!(twice["finalizeInvoice"]["invoice"]["number"], "INV-0001");
    assert_eq!(settings(&app).await["nextInvoiceNumber"], 2);
    assert_eq!(audit_actions(&app, &id).await, ["invoice.create", "invoice.finalize"]);
}

#[tokio::test]
async fn x2_a_failed_request_does_not_burn_its_key() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let key = new_key();
    let query = create_query();
    app.billing()
        .fails(&query, json!({"input": input(&seed, one_line("10.005"), json!({})), "key": key}), "AMOUNT_TOO_PRECISE")
        .await;
    // X1: the failure recorded nothing, not even the key, so the corrected request goes through.
    let data = app.billing().ok(&query, json!({"input": input(&seed, one_line("10.05"), json!({})), "key": key})).await;
    assert_eq!(data["createInvoice"]["invoice"]["total"]["amount"], "10.05");
    assert_eq!(invoice_count(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn x2_concurrent_requests_with_one_key_create_one_invoice() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let key = new_key();
    let query = create_query();
    let variables = json!({"input": input(&seed, one_line("75.00"), json!({})), "key": key});
    let app = &app;
    let responses = futures::future::join_all((0..10).map(|_| {
        let (query, variables) = (&query, &variables);
        async move { app.billing().post(query, variables.clone()).await }
    }))
    .await;
    let mut ids = HashSet::new();
    for response in &responses {
        assert!(response.body["errors"].is_null(), "every repeat succeeds: {:#}", response.body);
        ids.insert(response.data()["createInvoice"]["invoice"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "all 10 responses carry the same invoice: {ids:?}");
    assert_eq!(invoice_count(app).await, 1, "exactly one invoice exists");
    let id = ids.into_iter().next().unwrap();
    assert_eq!(audit_actions(app, &id).await, ["invoice.create"], "one audit event");
}

#[tokio::test]
async fn x2_keys_are_per_tenant() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let key = new_key();
    let first = app
        .billing()
        .ok(&create_query(), json!({"input": input(&seed, one_line("10.00"), json!({})), "key": key}))
        .await;

    let other_tenant = format!("t{}", uuid::Uuid::new_v4().simple());
    let other = app.with_token(Some(app.token_for(&other_tenant, Role::Admin)));
    let client = other.ok("mutation { createClient(input: {name: \"Bo Chen\"}) { id } }", json!({})).await;
    let location = other.ok("mutation { createLocation(input: {name: \"North\"}) { id } }", json!({})).await;
    let other_input = json!({
        "clientId": client["createClient"]["id"],
        "locationId": location["createLocation"]["id"],
        "lines": one_line("10.00"),
    });
    let second = other.ok(&create_query(), json!({"input": other_input, "key": key})).await;
    assert_ne!(second["createInvoice"]["invoice"]["id"], first["createInvoice"]["invoice"]["id"], "another tenant's key is another key");
}

// ---------------------------------------------------------------------------------------------
// X3: every invoice mutation appends one audit event.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn x3_each_invoice_mutation_appends_one_audit_event() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let subject = app.billing().ok("{ viewer { subject } }", json!({})).await["viewer"]["subject"].clone();
    assert_eq!(subject, "test-BILLING");

    let mut keys = Vec::new();
    let mut run = async |query: String, variables: Value| {
        let key = new_key();
        let mut variables = variables;
        variables["key"] = json!(key);
        keys.push(key);
        app.billing().ok(&query, variables).await
    };
    let created = run(create_query(), json!({"input": input(&seed, one_line("100.00"), json!({}))})).await;
    let id = id_of(&created["createInvoice"]["invoice"]);
    run(update_query(), json!({"id": id, "input": input(&seed, one_line("120.00"), json!({}))})).await;
    run(finalize_query(), json!({"id": id, "input": {}})).await;
    run(revert_query(), json!({"id": id})).await;
    run(finalize_query(), json!({"id": id, "input": {}})).await;
    run(void_query(), json!({"id": id, "reason": "duplicate"})).await;

    // Failed mutations append nothing.
    assert_error_code(&finalize_raw(&app, &id).await, "INVOICE_VOID");
    assert_error_code(&void(&app, &id, None).await, "INVOICE_VOID");
    assert_error_code(&update(&app, &id, input(&seed, one_line("1.00"), json!({}))).await, "INVOICE_VOID");

    let events = audit_events(&app, &id).await;
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["invoice.create", "invoice.update", "invoice.finalize", "invoice.revert", "invoice.finalize", "invoice.void"]
    );
    for (event, key) in events.iter().zip(&keys) {
        assert_eq!(event["actor"], subject, "the token subject is the actor: {event}");
        assert_eq!(event["idempotencyKey"], json!(key), "the key is recorded: {event}");
        assert_eq!(event["records"], json!([format!("invoice:{id}")]));
    }
    let state = |text: &Value| -> Value { serde_json::from_str(text.as_str().expect("JSON text")).unwrap() };
    let amount = |v: &Value| -> rust_decimal::Decimal { v.as_str().expect("a decimal string").parse().unwrap() };
    let created_after = state(&events[0]["after"]);
    assert_eq!(created_after["status"], "DRAFT");
    assert_eq!(amount(&created_after["total"]), rust_decimal::Decimal::from(100));
    let updated = (state(&events[1]["before"]), state(&events[1]["after"]));
    assert_eq!(amount(&updated.0["total"]), rust_decimal::Decimal::from(100), "update records the old total");
    assert_eq!(amount(&updated.1["total"]), rust_decimal::Decimal::from(120), "and the new one");
    let finalized = (state(&events[2]["before"]), state(&events[2]["after"]));
    assert_eq!(
        (&finalized.0["status"], &finalized.1["status"], &finalized.1["number"]),
        (&json!("DRAFT"), &json!("OPEN"), &json!(1))
    );
    assert_eq!(events[5]["reason"], "duplicate");
    assert_eq!(state(&events[5]["after"])["status"], "VOID");
}

// ---------------------------------------------------------------------------------------------
// Listing: pagination and filters.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn invoices_pagination_follows_cursors() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let mut created = Vec::new();
    for n in 1..=5 {
        created.push(id_of(&app.draft_invoice(&seed, one_line(&format!("{n}.00"))).await));
    }
    let query = "query($first: Int, $after: String) { invoices(first: $first, after: $after) { totalCount edges { cursor node { id } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }";
    let mut after: Option<String> = None;
    let mut seen = Vec::new();
    let mut page_sizes = Vec::new();
    loop {
        let data = app.viewer().ok(query, json!({"first": 2, "after": after})).await;
        let connection = &data["invoices"];
        assert_eq!(connection["totalCount"], 5, "totalCount counts every page");
        let edges = connection["edges"].as_array().unwrap();
        page_sizes.push(edges.len());
        seen.extend(edges.iter().map(|e| e["node"]["id"].as_str().unwrap().to_owned()));
        let info = &connection["pageInfo"];
        assert_eq!(info["hasPreviousPage"], after.is_some());
        assert_eq!(info["endCursor"], edges.last().unwrap()["cursor"]);
        if info["hasNextPage"] == false {
            break;
        }
        after = Some(info["endCursor"].as_str().unwrap().to_owned());
        assert!(page_sizes.len() < 10, "paging terminates");
    }
    assert_eq!(page_sizes, [2, 2, 1]);
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first, "every invoice once, newest first");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 5, "no duplicates");

    // After the last invoice: an empty page that still counts everything.
    let last = app.viewer().ok(query, json!({"first": 2, "after": app_cursor_of_last(&app, query).await})).await;
    assert_eq!(last["invoices"]["edges"], json!([]));
    assert_eq!(last["invoices"]["totalCount"], 5);
    assert_eq!(last["invoices"]["pageInfo"]["hasNextPage"], false);
    assert_eq!(last["invoices"]["pageInfo"]["endCursor"], Value::Null);

    // Paging a filtered list: the cursor walks only the matching invoices.
    let later = created[3..].to_vec(); // the two newest are finalized
    for id in &later {
        app.finalize(id).await;
    }
    let filtered = "query($after: String) { invoices(first: 1, after: $after, filter: {status: OPEN}) { totalCount edges { node { id } } pageInfo { hasNextPage endCursor } } }";
    let mut after: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let data = app.viewer().ok(filtered, json!({"after": after})).await;
        assert_eq!(data["invoices"]["totalCount"], 2);
        seen.extend(
            data["invoices"]["edges"].as_array().unwrap().iter().map(|e| e["node"]["id"].as_str().unwrap().to_owned()),
        );
        if data["invoices"]["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = Some(data["invoices"]["pageInfo"]["endCursor"].as_str().unwrap().to_owned());
        assert!(seen.len() < 10, "paging terminates");
    }
    assert_eq!(seen, later.iter().rev().cloned().collect::<Vec<_>>());
}

/// The cursor of the oldest invoice (the last one listed).
async fn app_cursor_of_last(app: &TestApp, query: &str) -> String {
    let data = app.viewer().ok(query, json!({"first": 100})).await;
    data["invoices"]["pageInfo"]["endCursor"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn invoices_pagination_refuses_bad_arguments() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    app.draft_invoice(&seed, one_line("1.00")).await;
    let max = app.viewer().ok("{ limits { pageSizeMax } }", json!({})).await["limits"]["pageSizeMax"].as_i64().unwrap();
    assert_eq!(max, 100);
    let query = "query($first: Int, $after: String) { invoices(first: $first, after: $after) { totalCount } }";
    let audit_cursor = {
        let data = app.viewer().ok("{ auditEvents(first: 1) { pageInfo { endCursor } } }", json!({})).await;
        data["auditEvents"]["pageInfo"]["endCursor"].as_str().unwrap().to_owned()
    };
    // (first, after, why)
    let cases = [
        (json!(0), Value::Null, "first: 0"),
        (json!(-1), Value::Null, "negative first"),
        (json!(max + 1), Value::Null, "first above pageSizeMax"),
        (json!(2), json!("garbage"), "a garbage cursor"),
        (json!(2), json!(""), "an empty cursor"),
        (json!(2), json!(audit_cursor), "a cursor of another list"),
    ];
    for (first, after, why) in cases {
        let response = app.viewer().post(query, json!({"first": first, "after": after})).await;
        assert_eq!(response.error_code(), Some("INVALID_INPUT"), "{why}: {:#}", response.body);
    }
    let data = app.viewer().ok(query, json!({"first": max})).await;
    assert_eq!(data["invoices"]["totalCount"], 1, "first: pageSizeMax is allowed");
}

#[tokio::test]
async fn invoices_filters() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let admin = app.admin();
    let client2 =
        admin.ok("mutation { createClient(input: {name: \"Bo Chen\"}) { id } }", json!({})).await["createClient"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let location2 = admin.ok("mutation { createLocation(input: {name: \"North Clinic\"}) { id } }", json!({})).await
        ["createLocation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let jan = id_of(&create_ok(&app, input(&seed, one_line("1.00"), json!({"issueDate": "2024-01-10"}))).await);
    let feb = id_of(
        &create_ok(&app, input(&seed, one_line("2.00"), json!({"issueDate": "2024-02-15", "clientId": client2}))).await,
    );
    let mar = id_of(
        &create_ok(&app, input(&seed, one_line("3.00"), json!({"issueDate": "2024-03-31", "locationId": location2})))
            .await,
    );
    app.finalize(&feb).await;

    // (filter, expected ids newest first, why)
    let cases = [
        (json!({}), vec![&mar, &feb, &jan], "no filter"),
        (json!({"clientId": seed.client}), vec![&mar, &jan], "the seed client's"),
        (json!({"clientId": client2}), vec![&feb], "the second client's"),
        (json!({"locationId": location2}), vec![&mar], "the second location's"),
        (json!({"locationId": seed.location}), vec![&feb, &jan], "the seed location's"),
        (json!({"issuedFrom": "2024-02-15"}), vec![&mar, &feb], "issuedFrom is inclusive"),
        (json!({"issuedTo": "2024-02-15"}), vec![&feb, &jan], "issuedTo is inclusive"),
        (json!({"issuedFrom": "2024-02-01", "issuedTo": "2024-02-29"}), vec![&feb], "a date range"),
        (json!({"issuedFrom": "2024-04-01"}), vec![], "nothing after March"),
        (json!({"clientId": seed.client, "issuedTo": "2024-01-31"}), vec![&jan], "conditions combine"),
        (json!({"clientId": client2, "status": "DRAFT"}), vec![], "the second client's invoice is not a draft"),
        (json!({"status": "DRAFT"}), vec![&mar, &jan], "drafts"),
        (json!({"clientId": new_key()}), vec![], "an unknown client has no invoices"),
    ];
    for (filter, expected, why) in cases {
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(filtered_ids(&app, filter.clone()).await, expected, "{why}: {filter}");
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrency, roles and limits around the invoice mutations.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn i1_i2_concurrent_edit_and_finalize_stay_consistent() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let app = &app;
    for round in 0..10 {
        let draft = app.draft_invoice(&seed, one_line("10.00")).await;
        let id = id_of(&draft);
        let zero = input(&seed, one_line("0.00"), json!({}));
        // Alternate which request is sent first so either can win.
        let (edited, finalized) = if round % 2 == 0 {
            futures::future::join(update(app, &id, zero), finalize_raw(app, &id)).await
        } else {
            let (finalized, edited) = futures::future::join(finalize_raw(app, &id), update(app, &id, zero)).await;
            (edited, finalized)
        };
        assert!(finalized.body["errors"].is_null(), "round {round}: finalize always succeeds: {:#}", finalized.body);
        let stored = read(app, &id).await;
        if edited.body["errors"].is_null() {
            // The edit came first: the finalize saw a zero total and made it PAID.
            assert_eq!(
                (&stored["status"], &stored["total"]["amount"]),
                (&json!("PAID"), &json!("0.00")),
                "round {round}: edit then finalize"
            );
        } else {
            assert_error_code(&edited, "INVOICE_NOT_DRAFT");
            assert_eq!(
                (&stored["status"], &stored["total"]["amount"]),
                (&json!("OPEN"), &json!("10.00")),
                "round {round}: finalize then a refused edit"
            );
        }
        assert_eq!(stored["number"], format!("INV-{:04}", round + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn x2_concurrent_finalizes_with_one_key_finalize_once() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let draft = app.draft_invoice(&seed, one_line("60.00")).await;
    let id = id_of(&draft);
    let key = new_key();
    let query = finalize_query();
    let variables = json!({"id": id, "input": {}, "key": key});
    let app = &app;
    let responses = futures::future::join_all((0..8).map(|_| {
        let (query, variables) = (&query, &variables);
        async move { app.billing().post(query, variables.clone()).await }
    }))
    .await;
    for response in &responses {
        assert!(response.body["errors"].is_null(), "a repeat returns the first result: {:#}", response.body);
        assert_eq!(response.data()["finalizeInvoice"]["invoice"]["number"], "INV-0001");
    }
    assert_eq!(settings(app).await["nextInvoiceNumber"], 2, "one number taken");
    assert_eq!(audit_actions(app, &id).await, ["invoice.create", "invoice.finalize"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn x2_concurrent_different_inputs_with_one_key_create_one_invoice() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let key = new_key();
    let query = create_query();
    let app = &app;
    let responses = futures::future::join_all((1..=6).map(|n| {
        let (query, key, seed) = (&query, &key, &seed);
        async move {
            app.billing()
                .post(query, json!({"input": input(seed, one_line(&format!("{n}.00")), json!({})), "key": key}))
                .await
        }
    }))
    .await;
    let won: Vec<&Gql> = responses.iter().filter(|r| r.body["errors"].is_null()).collect();
    assert_eq!(won.len(), 1, "one request owns the key: {responses:#?}");
    for response in responses.iter().filter(|r| !r.body["errors"].is_null()) {
        assert_error_code(response, "IDEMPOTENCY_KEY_REUSED");
    }
    assert_eq!(invoice_count(app).await, 1);
}

#[tokio::test]
async fn x2_idempotency_key_is_required_and_bounded() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let query = create_query();
    let body = input(&seed, one_line("10.00"), json!({}));
    // (key, why)
    let cases = [
        (json!(""), "empty key"),
        (json!("k".repeat(129)), "longer than 128 characters"),
        (json!("a\u{7}b"), "control character"),
    ];
    for (key, why) in cases {
        let response = app.billing().post(&query, json!({"input": body, "key": key})).await;
        assert_eq!(response.error_code(), Some("INVALID_INPUT"), "{why}: {:#}", response.body);
    }
    let response = app.billing().post(&query, json!({"input": body})).await;
    assert_eq!(response.error_code(), Some("QUERY_REJECTED"), "the key is a required argument: {:#}", response.body);
    assert_eq!(invoice_count(&app).await, 0);
    app.billing().ok(&query, json!({"input": body, "key": "k".repeat(128)})).await;
    assert_eq!(invoice_count(&app).await, 1, "128 characters is allowed");
}

#[tokio::test]
async fn a2_viewers_cannot_change_invoices() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let draft = app.draft_invoice(&seed, one_line("10.00")).await;
    let id = id_of(&draft);
    let viewer = app.viewer();
    let body = input(&seed, one_line("20.00"), json!({}));
    // (operation, query, variables)
    let cases = [
        ("create", create_query(), json!({"input": body, "key": new_key()})),
        ("update", update_query(), json!({"id": id, "input": body, "key": new_key()})),
        ("finalize", finalize_query(), json!({"id": id, "input": {}, "key": new_key()})),
        ("revert", revert_query(), json!({"id": id, "key": new_key()})),
        ("void", void_query(), json!({"id": id, "reason": null, "key": new_key()})),
        ("delete", DELETE.to_owned(), json!({"id": id, "key": new_key()})),
    ];
    for (operation, query, variables) in cases {
        let response = viewer.post(&query, variables).await;
        assert_eq!(response.error_code(), Some("FORBIDDEN"), "A2 VIEWER only reads: {operation}: {:#}", response.body);
    }
    let saved = read(&app, &id).await;
    assert_eq!((&saved["status"], &saved["total"]["amount"]), (&json!("DRAFT"), &json!("10.00")));
    assert_eq!(invoice_count(&app).await, 1);
    assert_eq!(audit_actions(&app, &id).await, ["invoice.create"]);
}

#[tokio::test]
async fn invoice_text_and_line_limits() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let line = json!({"description": "Consult", "unitPrice": "1.00"});
    let many = |n: usize| Value::Array(vec![line.clone(); n]);
    // (input, expected code, why)
    let cases = [
        (input(&seed, many(201), json!({})), Some("INVALID_INPUT"), "more than 200 lines"),
        (input(&seed, many(200), json!({})), None, "200 lines"),
        (
            input(&seed, json!([{"description": "x".repeat(1001), "unitPrice": "1.00"}]), json!({})),
            Some("INVALID_INPUT"),
            "a description over 1000 characters",
        ),
        (
            input(&seed, json!([{"description": "bad\u{0}text", "unitPrice": "1.00"}]), json!({})),
            Some("INVALID_INPUT"),
            "a control character in a description",
        ),
        (
            input(&seed, json!([line]), json!({"notes": "n".repeat(4001)})),
            Some("INVALID_INPUT"),
            "notes over 4000 characters",
        ),
        (
            input(&seed, json!([{"description": "Bulk", "quantity": "1000001", "unitPrice": "1.00"}]), json!({})),
            Some("INVALID_INPUT"),
            "quantity above 1,000,000",
        ),
    ];
    for (input, code, why) in cases {
        let response = create(&app, input).await;
        assert_eq!(response.error_code(), code, "{why}: {:#}", response.body["errors"]);
    }
    let invoices = app.viewer().ok("{ invoices { totalCount edges { node { total { amount } } } } }", json!({})).await;
    assert_eq!(invoices["invoices"]["totalCount"], 1, "only the 200-line invoice exists");
    assert_eq!(invoices["invoices"]["edges"][0]["node"]["total"]["amount"], "200.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn i6_concurrent_delete_and_finalize_leave_no_gap() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let app = &app;
    let mut survivors = Vec::new();
    for round in 0..12 {
        let id = id_of(&app.draft_invoice(&seed, one_line("10.00")).await);
        let (deleted, finalized) = if round % 2 == 0 {
            futures::future::join(delete(app, &id), finalize_raw(app, &id)).await
        } else {
            let (finalized, deleted) = futures::future::join(finalize_raw(app, &id), delete(app, &id)).await;
            (deleted, finalized)
        };
        let stored = read(app, &id).await;
        if deleted.body["errors"].is_null() {
            assert_error_code(&finalized, "NOT_FOUND");
            assert_eq!(stored, Value::Null, "round {round}: deleted, and not brought back by the finalize");
        } else {
            assert_error_code(&deleted, "INVOICE_NOT_DRAFT");
            assert!(finalized.body["errors"].is_null(), "round {round}: {:#}", finalized.body);
            assert_eq!(stored["status"], "OPEN", "round {round}");
            survivors.push(stored["number"].as_str().unwrap().to_owned());
        }
    }
    let expected: Vec<String> = (1..=survivors.len()).map(|n| format!("INV-{n:04}")).collect();
    assert_eq!(survivors, expected, "numbers went only to finalized invoices, in order, without gaps");
    assert_eq!(settings(app).await["nextInvoiceNumber"], json!(survivors.len() + 1));
    assert_eq!(invoice_count(app).await as usize, survivors.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn i7_concurrent_void_and_revert_exactly_one_wins() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let app = &app;
    for round in 0..12 {
        let id = id_of(&app.open_invoice(&seed, "10.00").await);
        let (voided, reverted) = if round % 2 == 0 {
            futures::future::join(void(app, &id, Some("x")), revert(app, &id)).await
        } else {
            let (reverted, voided) = futures::future::join(revert(app, &id), void(app, &id, Some("x"))).await;
            (voided, reverted)
        };
        let stored = read(app, &id).await;
        if voided.body["errors"].is_null() {
            assert_error_code(&reverted, "INVOICE_VOID");
            assert_eq!(stored["status"], "VOID", "round {round}");
        } else {
            assert_error_code(&voided, "INVOICE_NOT_OPEN");
            assert_eq!(stored["status"], "DRAFT", "round {round}");
        }
        assert_eq!(audit_actions(app, &id).await.len(), 3, "round {round}: create, finalize and the one winner");
    }
}

#[tokio::test]
async fn m1_a_fixed_discount_is_an_amount() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    // The schema calls an AMOUNT discount's value 'An amount ("5.00")', and the server already
    // treats it as money for precision (AMOUNT_TOO_PRECISE) and size (INVALID_AMOUNT); a value that
    // is not a plain decimal must then be INVALID_AMOUNT like any other amount (docs/errors.md).
    // (value, code, why): the value field is a string, so a JSON number is a malformed request.
    let cases = [
        (json!("1e3"), "INVALID_AMOUNT", "exponent notation"),
        (json!("abc"), "INVALID_AMOUNT", "not a number"),
        (json!("1,000"), "INVALID_AMOUNT", "a thousands separator"),
        (json!(5), "QUERY_REJECTED", "a JSON number where a string is declared"),
    ];
    for (value, code, why) in cases {
        let line =
            json!([{"description": "Consult", "unitPrice": "10.00", "discount": {"type": "AMOUNT", "value": value}}]);
        let response = create(&app, input(&seed, line, json!({}))).await;
        assert_eq!(response.error_code(), Some(code), "{why}: {value}: {:#}", response.body["errors"]);
    }
}

#[tokio::test]
async fn tax_rates_archived_rate_cannot_be_added_to_new_lines_of_an_old_draft() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let levy = create_tax_rate(&app, "Levy", "5").await;
    let draft = create_ok(
        &app,
        input(&seed, json!([{"description": "Consult", "unitPrice": "100.00", "taxRateId": levy}]), json!({})),
    )
    .await;
    app.admin().ok("mutation($id: ID!) { archiveTaxRate(id: $id) { archived } }", json!({"id": levy})).await;
    // The existing line keeps the rate; a second, new line must not choose the archived rate.
    let lines = json!([
        {"description": "Consult", "unitPrice": "100.00", "taxRateId": levy},
        {"description": "Follow-up", "unitPrice": "50.00", "taxRateId": levy}
    ]);
    let response = update(&app, &id_of(&draft), input(&seed, lines, json!({}))).await;
    assert_error_code(&response, "TAX_RATE_ARCHIVED");
    assert_eq!(read(&app, &id_of(&draft)).await["taxTotal"]["amount"], "5.00", "the refused edit changed nothing");
}
