//! Tenant settings, clients, contacts and locations.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn new_tenant_starts_with_documented_defaults() {
    let app = TestApp::spawn().await;
    let data = app
        .viewer()
        .ok("{ settings { currency taxMode paymentTermsDays nextInvoiceNumber timezone } taxRates { name percent system archived } }", json!({}))
        .await;
    assert_eq!(
        data["settings"],
        json!({"currency": "AUD", "taxMode": "EXCLUSIVE", "paymentTermsDays": 14, "nextInvoiceNumber": 1, "timezone": "Australia/Sydney"})
    );
    assert_eq!(
        data["taxRates"],
        json!([
            {"name": "GST", "percent": "10", "system": true, "archived": false},
            {"name": "GST-free", "percent": "0", "system": true, "archived": false}
        ])
    );
}

#[tokio::test]
async fn settings_change_and_bad_values_are_refused() {
    let app = TestApp::spawn().await;
    let admin = app.admin();
    let data = admin
        .ok(
            "mutation { updateSettings(input: {currency: \"NZD\", taxMode: INCLUSIVE, paymentTermsDays: 30, timezone: \"Pacific/Auckland\"}) { currency taxMode paymentTermsDays timezone } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["updateSettings"],
        json!({"currency": "NZD", "taxMode": "INCLUSIVE", "paymentTermsDays": 30, "timezone": "Pacific/Auckland"})
    );
    let bad = [
        ("{currency: \"XYZ\"}", "UNKNOWN_CURRENCY", "not an ISO 4217 currency"),
        ("{currency: \"XAU\"}", "UNKNOWN_CURRENCY", "gold is not billed"),
        ("{timezone: \"Mars/Base\"}", "INVALID_INPUT", "not an IANA timezone"),
        ("{paymentTermsDays: -1}", "INVALID_INPUT", "negative terms"),
        ("{nextInvoiceNumber: 0}", "INVALID_INPUT", "numbers start at 1"),
    ];
    for (input, code, why) in bad {
        let response = admin.post(&format!("mutation {{ updateSettings(input: {input}) {{ currency }} }}"), json!({})).await;
        assert_eq!(response.error_code(), Some(code), "{why}: {:#}", response.body);
    }
    let after = admin.ok("{ settings { currency timezone paymentTermsDays nextInvoiceNumber } }", json!({})).await;
    assert_eq!(after["settings"]["currency"], "NZD", "refused changes change nothing");
    assert_eq!(after["settings"]["nextInvoiceNumber"], 1);
}

#[tokio::test]
async fn clients_are_created_updated_searched_and_paged() {
    let app = TestApp::spawn().await;
    let billing = app.billing();
    let mut ids = Vec::new();
    for name in ["Ann Lee", "Bob Stone", "Annabel Cho"] {
        let data = billing
            .ok("mutation($name: String!) { createClient(input: {name: $name}) { id name } }", json!({"name": name}))
            .await;
        ids.push(data["createClient"]["id"].as_str().unwrap().to_owned());
    }
    let data = billing
        .ok(
            "mutation($id: ID!) { updateClient(id: $id, input: {name: \"Bob Stone\", email: \"bob@example.com\", phone: \"0400 000 000\"}) { name email phone } }",
            json!({"id": ids[1]}),
        )
        .await;
    assert_eq!(data["updateClient"], json!({"name": "Bob Stone", "email": "bob@example.com", "phone": "0400 000 000"}));

    let found = billing.ok("{ clients(search: \"ann\") { totalCount edges { node { name } } } }", json!({})).await;
    assert_eq!(found["clients"]["totalCount"], 2);
    let names: Vec<&str> = found["clients"]["edges"].as_array().unwrap().iter().map(|e| e["node"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Ann Lee", "Annabel Cho"]);

    let first = billing.ok("{ clients(first: 2) { edges { node { id } } pageInfo { hasNextPage endCursor } } }", json!({})).await;
    assert_eq!(first["clients"]["pageInfo"]["hasNextPage"], true);
    let rest = billing
        .ok(
            "query($after: String) { clients(first: 2, after: $after) { edges { node { id } } pageInfo { hasNextPage } } }",
            json!({"after": first["clients"]["pageInfo"]["endCursor"]}),
        )
        .await;
    assert_eq!(rest["clients"]["edges"][0]["node"]["id"], ids[2].as_str());
    assert_eq!(rest["clients"]["pageInfo"]["hasNextPage"], false);
}

#[tokio::test]
async fn party_input_is_validated() {
    let app = TestApp::spawn().await;
    let billing = app.billing();
    let long_name = "n".repeat(201);
    let cases = [
        (json!({"name": "   "}), "blank name"),
        (json!({"name": long_name}), "name over 200 characters"),
        (json!({"name": "Ann", "email": "not-an-email"}), "email without @"),
        (json!({"name": "Ann\u{0007}"}), "control character"),
    ];
    for (input, why) in cases {
        let response = billing.post("mutation($input: ClientInput!) { createClient(input: $input) { id } }", json!({"input": input})).await;
        assert_eq!(response.error_code(), Some("INVALID_INPUT"), "{why}: {:#}", response.body);
    }
    let count = billing.ok("{ clients { totalCount } }", json!({})).await;
    assert_eq!(count["clients"]["totalCount"], 0, "nothing was created");
}

#[tokio::test]
async fn contacts_are_bill_to_parties_of_invoices() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let contact = app
        .billing()
        .ok("mutation { createContact(input: {name: \"HealthCo Insurance\", email: \"claims@healthco.example\"}) { id name } }", json!({}))
        .await;
    let contact_id = contact["createContact"]["id"].as_str().unwrap();
    let invoice = app
        .billing()
        .ok(
            "mutation($input: InvoiceInput!) { createInvoice(input: $input, idempotencyKey: \"c1\") { invoice { billTo { name } client { name } location { name } } } }",
            json!({"input": {"clientId": seed.client, "locationId": seed.location, "billToId": contact_id,
                "lines": [{"description": "Physio", "unitPrice": "90.00"}]}}),
        )
        .await;
    assert_eq!(
        invoice["createInvoice"]["invoice"],
        json!({"billTo": {"name": "HealthCo Insurance"}, "client": {"name": "Ann Lee"}, "location": {"name": "Main St Clinic"}})
    );
}

#[tokio::test]
async fn locations_are_managed_by_admins() {
    let app = TestApp::spawn().await;
    let admin = app.admin();
    let created = admin.ok("mutation { createLocation(input: {name: \"North\", address: \"1 High St\"}) { id } }", json!({})).await;
    let id = created["createLocation"]["id"].as_str().unwrap();
    admin.ok("mutation($id: ID!) { updateLocation(id: $id, input: {name: \"North Clinic\"}) { id } }", json!({"id": id})).await;
    let list = app.viewer().ok("{ locations { name address } }", json!({})).await;
    assert_eq!(list["locations"], json!([{"name": "North Clinic", "address": null}]));
}
