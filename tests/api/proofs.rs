//! Balance explanations (issue of proofs): `invoice { balanceProof }` and
//! `payment { unallocatedProof }` walk the records a stored figure is made of, in the order they
//! happened, each with its actor and the running figure, and end at the stored figure; a stored
//! figure corrupted in the database is reported, never hidden.

use serde_json::{Value, json};

use crate::events::method;
use crate::helpers::*;
use crate::restart::{self, Practice, method_of};

const PROOF: &str = "steps { kind record date actor amount { amount } running { amount } } derived { amount } stored { amount } holds";

pub(crate) async fn record_payment(app: &TestApp, seed: &Seed, cash: &str, amount: &str) -> String {
    let data = app
        .billing()
        .ok(
            "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id } } }",
            json!({"input": {"clientId": seed.client, "locationId": seed.location, "methodId": cash, "amount": amount}, "key": new_key()}),
        )
        .await;
    data["recordPayment"]["payment"]["id"].as_str().unwrap().to_owned()
}

async fn apply(app: &TestApp, payment: &str, invoice: &str, amount: &str) -> String {
    let data = app
        .billing()
        .ok(
            "mutation($p: ID!, $i: ID!, $a: Amount!, $key: String!) { applyPayment(id: $p, invoiceId: $i, amount: $a, idempotencyKey: $key) { allocation { id } } }",
            json!({"p": payment, "i": invoice, "a": amount, "key": new_key()}),
        )
        .await;
    data["applyPayment"]["allocation"]["id"].as_str().unwrap().to_owned()
}

fn walk(proof: &Value) -> Vec<(String, String, String)> {
    proof["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["kind"].as_str().unwrap().to_owned(), s["amount"]["amount"].as_str().unwrap().to_owned(), s["running"]["amount"].as_str().unwrap().to_owned()))
        .collect()
}

fn step(kind: &str, amount: &str, running: &str) -> (String, String, String) {
    (kind.to_owned(), amount.to_owned(), running.to_owned())
}

#[tokio::test]
async fn balance_proofs_walk_the_records_of_an_invoice_and_a_payment_with_their_actors() {
    Box::pin(scenario_balance_proofs()).await
}

async fn scenario_balance_proofs() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = method(&app.viewer(), "Cash").await;
    let invoice = app.open_invoice(&seed, "100.00").await;
    let (invoice, total) = (invoice["id"].as_str().unwrap().to_owned(), invoice["total"]["amount"].as_str().unwrap().to_owned());
    assert_eq!(total, "100.00", "an invoice of one 100.00 line without tax");
    let payment = record_payment(&app, &seed, &cash, "80.00").await;
    apply(&app, &payment, &invoice, "30.00").await;
    let removed = apply(&app, &payment, &invoice, "5.00").await;
    app.billing()
        .ok("mutation($id: ID!, $key: String!) { removeAllocation(id: $id, idempotencyKey: $key) { allocation { id } } }", json!({"id": removed, "key": new_key()}))
        .await;
    app.admin()
        .ok(
            "mutation($i: ID!, $key: String!) { issueCreditNote(invoiceId: $i, idempotencyKey: $key,
                input: {reason: \"Goodwill\", lines: [{lineIndex: 0, amount: \"20.00\"}]}) { creditNote { id } } }",
            json!({"i": invoice, "key": new_key()}),
        )
        .await;
    app.billing()
        .ok(
            "mutation($id: ID!, $key: String!) { refundPayment(id: $id, idempotencyKey: $key, input: {amount: \"10.00\"}) { refund { id } } }",
            json!({"id": payment, "key": new_key()}),
        )
        .await;

    let data = app
        .viewer()
        .ok(
            &format!("query($i: ID!, $p: ID!) {{ invoice(id: $i) {{ balance {{ amount }} balanceProof {{ {PROOF} }} }}
                payment(id: $p) {{ unallocated {{ amount }} unallocatedProof {{ {PROOF} }} }} }}"),
            json!({"i": invoice, "p": payment}),
        )
        .await;
    let proof = &data["invoice"]["balanceProof"];
    assert_eq!(
        walk(proof),
        [step("INVOICE_TOTAL", "100.00", "100.00"), step("ALLOCATION", "-30.00", "70.00"), step("CREDIT_NOTE", "-20.00", "50.00")],
        "the removed allocation is not a step: {proof:#}"
    );
    assert_eq!((proof["derived"]["amount"].as_str(), proof["holds"].as_bool()), (Some("50.00"), Some(true)), "{proof:#}");
    assert_eq!(proof["stored"], data["invoice"]["balance"], "the stored figure is the balance the invoice shows");
    let actors: Vec<&str> = proof["steps"].as_array().unwrap().iter().map(|s| s["actor"].as_str().unwrap_or("none")).collect();
    assert_eq!(actors, ["test-BILLING", "test-BILLING", "test-ADMIN"], "who finalized, allocated and credited");
    assert_eq!(proof["steps"][0]["record"], format!("invoice:{invoice}"));

    let proof = &data["payment"]["unallocatedProof"];
    assert_eq!(
        walk(proof),
        [step("PAYMENT_AMOUNT", "80.00", "80.00"), step("ALLOCATION", "-30.00", "50.00"), step("REFUND", "-10.00", "40.00")],
        "{proof:#}"
    );
    assert_eq!(proof["holds"], true, "{proof:#}");
    assert_eq!(proof["stored"], data["payment"]["unallocated"]);

    // The client: owes 50.00 on the invoice and holds 40.00 of the payment, so 10.00 net.
    let data = app
        .viewer()
        .ok(
            &format!("query($c: ID!, $earlier: Date!) {{ client(id: $c) {{ balance {{ owing {{ amount }} unallocatedCredit {{ amount }} }}
                now: balanceProof {{ asOf {PROOF} }} before: balanceProof(asOf: $earlier) {{ asOf {PROOF} }} }} }}"),
            json!({"c": seed.client, "earlier": (chrono::Utc::now().date_naive() - chrono::Duration::days(2)).to_string()}),
        )
        .await;
    let proof = &data["client"]["now"];
    let mut kinds: Vec<(String, String, String)> = walk(proof);
    kinds.iter_mut().for_each(|step| step.2 = String::new());
    kinds.sort();
    assert_eq!(
        kinds,
        [step("CREDIT_NOTE", "-20.00", ""), step("INVOICE_TOTAL", "100.00", ""), step("PAYMENT_AMOUNT", "-80.00", ""), step("REFUND", "10.00", "")],
        "{proof:#}"
    );
    assert_eq!((proof["derived"]["amount"].as_str(), proof["stored"]["amount"].as_str(), proof["holds"].as_bool()), (Some("10.00"), Some("10.00"), Some(true)), "{proof:#}");
    assert_eq!(data["client"]["balance"]["owing"]["amount"], "50.00");
    let before = &data["client"]["before"];
    assert_eq!((before["steps"].as_array().unwrap().len(), before["derived"]["amount"].as_str()), (0, Some("0.00")), "nothing was dated before: {before:#}");
    assert!(before["stored"].is_null() && before["holds"].is_null(), "a past day has no stored figure to compare: {before:#}");
}

/// A stored figure that its records do not add up to (written behind Settle's back, straight
/// into the database) is reported: `holds` false, with both figures.
#[tokio::test]
async fn a_stored_figure_corrupted_in_the_database_is_reported_by_its_proof() {
    let Practice { dir, http, mut server, token, client, location, methods } = Practice::start().await;
    let gql = |query: &'static str, variables: Value| {
        let (http, url, token) = (http.clone(), server.url.clone(), token.clone());
        async move { restart::gql(&http, &url, &token, query, variables).await }
    };
    let created = gql(
        "mutation($c: ID!, $l: ID!) { createInvoice(idempotencyKey: \"i\", input: {clientId: $c, locationId: $l, lines: [{description: \"Visit\", unitPrice: \"60.00\"}]}) { invoice { id } } }",
        json!({"c": client, "l": location}),
    )
    .await;
    let invoice = created["createInvoice"]["invoice"]["id"].clone();
    gql("mutation($id: ID!) { finalizeInvoice(id: $id, idempotencyKey: \"f\") { invoice { id } } }", json!({"id": invoice})).await;
    let cash = method_of(&methods, "Cash");
    let paid = gql(
        "mutation($id: ID!, $m: ID!) { payInvoice(id: $id, idempotencyKey: \"p\", input: {methodId: $m, amount: \"25.00\"}) { payment { id } } }",
        json!({"id": invoice, "m": cash}),
    )
    .await;
    let payment = paid["payInvoice"]["payment"]["id"].clone();
    const PROOFS: &str = "query($i: ID!, $p: ID!, $c: ID!) { invoice(id: $i) { balanceProof { derived { amount } stored { amount } holds } }
        payment(id: $p) { unallocatedProof { derived { amount } stored { amount } holds } } client(id: $c) { balanceProof { holds } } }";
    let before = gql(PROOFS, json!({"i": invoice, "p": payment, "c": client})).await;
    assert_eq!(before["client"]["balanceProof"]["holds"], true, "{before:#}");
    assert_eq!(before["invoice"]["balanceProof"]["holds"], true, "{before:#}");
    assert_eq!(before["payment"]["unallocatedProof"]["holds"], true, "{before:#}");
    server.stop("-TERM");

    // Behind Settle's back: the invoice's amount paid and the payment's allocated sum.
    let store = restart::open_store(dir.path()).await;
    store
        .query(
            "UPDATE invoice SET paid = 20.00dec RETURN NONE; UPDATE payment SET allocated = 15.00dec RETURN NONE;",
            settle::store::Vars::new(),
        )
        .await
        .unwrap();
    store.close().await;

    let mut server = restart::start(dir.path());
    let body = restart::gql(&http, &server.url, &token, PROOFS, json!({"i": invoice, "p": payment, "c": client})).await;
    let body = json!({"data": body});
    let invoice_proof = &body["data"]["invoice"]["balanceProof"];
    assert_eq!(invoice_proof["holds"], false, "{body:#}");
    assert_eq!((invoice_proof["derived"]["amount"].as_str(), invoice_proof["stored"]["amount"].as_str()), (Some("35.00"), Some("40.00")), "{body:#}");
    let payment_proof = &body["data"]["payment"]["unallocatedProof"];
    assert_eq!(payment_proof["holds"], false, "{body:#}");
    assert_eq!((payment_proof["derived"]["amount"].as_str(), payment_proof["stored"]["amount"].as_str()), (Some("0.00"), Some("10.00")), "{body:#}");
    assert_eq!(body["data"]["client"]["balanceProof"]["holds"], false, "the client's balance rests on the corrupted figures: {body:#}");
    server.stop("-TERM");
}
