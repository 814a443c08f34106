//! G1: no plugin fault stops the ledger or another tenant's payments. Plugin libraries run in a
//! `settle plugin-host` child process of their own; these tests drive a plugin that aborts,
//! segfaults, overflows its stack, allocates without bound, spins past every timeout or writes
//! junk to its standard output, through the real API, and check that the server goes on, that
//! the charge cut short is settled by the reconciler (P7, X1: nothing recorded twice, nothing
//! lost), that repeated deaths make the plugin unhealthy and refused with a retryable code, and
//! that the operator's placement of plugins (in or out of process) is obeyed.
//!
//! The test plugin (tests/plugins/misbehaving) records the charges it answers in memory only, so
//! after its process died its status look-up answers UNKNOWN for the charge it died on: the
//! gateway never took it, and the reconciler settles the attempt as failed.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use settle::auth::Role;
use settle::config::Settings;

use crate::helpers::*;
use crate::plugins::{
    MISBEHAVING, amount, assert_serving, card, card_method, cards, charge, charge_ok, create_method_ok, eventually, id_of,
    method_id, pay_with_key, payment_count, plugin, plugin_dir, read_invoice,
};

/// A server loading plugins from `dir` with short limits: a 1 s call timeout, a plugin process
/// killed after leaving a call 2 s unanswered, a 2 s cool-down for unhealthy plugins, and a
/// reconciler every 200 ms (it settles an attempt 1 s after the call timeout).
async fn spawn_isolated(dir: &Path, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = dir.to_path_buf();
    TestApp::spawn_with(move |s| {
        s.plugin_dir = Some(dir);
        s.limits.plugin_call_timeout_ms = 1000;
        s.plugin_hang_limit_ms = 2000;
        s.plugin_unhealthy_cool_down_ms = 2000;
        s.reconcile_interval_ms = 200;
        adjust(s);
    })
    .await
}

/// The tenant's payment method bound to the misbehaving plugin.
async fn misbehaving_method(app: &TestApp) -> String {
    id_of(&create_method_ok(app, json!({"name": "Flaky gateway", "type": "OTHER", "plugin": "misbehaving", "config": {}})).await)
}

/// The charge.failed audit event the reconciler wrote for the attempt of `key` on `invoice`.
async fn failed_charge_event(app: &TestApp, invoice: &str, key: &str) -> Option<Value> {
    let trail = app
        .viewer()
        .ok(
            "query($record: String) { auditEvents(first: 50, recordId: $record) { edges { node { action actor idempotencyKey reason } } } }",
            json!({"record": format!("invoice:{invoice}")}),
        )
        .await;
    trail["auditEvents"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["node"].clone())
        .find(|event| event["action"] == "charge.failed" && event["idempotencyKey"] == key)
}

/// The value of the metric line that starts with `series` in /metrics (read as ADMIN).
async fn metric(app: &TestApp, series: &str) -> Option<f64> {
    let response = app.http.get(app.url("/metrics")).bearer_auth(app.token(Role::Admin)).send().await.expect("/metrics answers");
    assert_eq!(response.status().as_u16(), 200, "/metrics");
    let text = response.text().await.unwrap();
    text.lines().find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

/// A cash payment of another tenant on the same server: their ledger goes on.
async fn other_tenant_pays_cash(app: &TestApp, tenant: &str) {
    let admin = app.with_token(Some(app.token_for(tenant, Role::Admin)));
    let client = admin.ok("mutation { createClient(input: {name: \"Bo Chen\"}) { id } }", json!({})).await["createClient"]["id"].clone();
    let location = admin.ok("mutation { createLocation(input: {name: \"North\"}) { id } }", json!({})).await["createLocation"]["id"].clone();
    let methods = admin.ok("{ paymentMethods { id name } }", json!({})).await;
    let cash = methods["paymentMethods"].as_array().unwrap().iter().find(|m| m["name"] == "Cash").unwrap()["id"].clone();
    admin
        .ok(
            "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id } } }",
            json!({"input": {"clientId": client, "locationId": location, "methodId": cash, "amount": "12.50"}, "key": new_key()}),
        )
        .await;
}

/// One misbehaviour, start to end: the charge through it answers `expected` (an error code, or
/// None for a payment), the server, card payments and another tenant go on meanwhile, the
/// attempt is settled once, and afterwards the plugin (restarted if it died) charges again.
async fn misbehaviour_is_contained(misbehave: &str, expected: Option<&str>) {
    let dir = plugin_dir(&[MISBEHAVING]);
    let app = spawn_isolated(dir.path(), |_| {}).await;
    let flaky = plugin(&app, "misbehaving").await;
    assert_eq!(flaky["outOfProcess"], true, "a library runs in its own process: {flaky:#}");
    assert_eq!(plugin(&app, "card-sim").await["outOfProcess"], false, "the built-in runs in the server");
    let seed = app.seed().await;
    let method = misbehaving_method(&app).await;
    let card_method = card_method(&app).await;
    let flaky_invoice = id_of(&app.open_invoice(&seed, "30.00").await);
    let card_invoice = id_of(&app.open_invoice(&seed, "40.00").await);
    let other_tenant = format!("o{}", uuid::Uuid::new_v4().simple());

    // The misbehaving charge, and meanwhile the rest of the ledger.
    let key = new_key();
    let bad_input = json!({"methodId": method, "details": {"misbehave": misbehave}});
    let (bad, ()) = tokio::join!(pay_with_key(&app, &flaky_invoice, &bad_input, &key), async {
        assert_serving(&app).await;
        charge_ok(&app, &card_invoice, &card_method, card(cards::SUCCEEDS)).await;
        other_tenant_pays_cash(&app, &other_tenant).await;
    });
    match expected {
        Some(code) => assert_error_code(&bad, code),
        None => assert!(bad.body["errors"].is_null(), "{misbehave}: the charge goes through: {:#}", bad.body),
    }
    assert_serving(&app).await;

    if expected == Some("CHARGE_PENDING") {
        // The reconciler asks the restarted plugin, which never took the charge: failed, no money.
        let event = eventually(Duration::from_secs(20), "the reconciler settles the charge cut short", || {
            failed_charge_event(&app, &flaky_invoice, &key)
        })
        .await;
        assert_eq!(event["actor"], "settle-reconciler", "{event:#}");
        let invoice = read_invoice(&app, &flaky_invoice).await;
        assert_eq!((invoice["status"].as_str(), amount(&invoice, "balance")), (Some("OPEN"), "30.00"), "{misbehave}: {invoice:#}");
        let after = plugin(&app, "misbehaving").await;
        assert!(after["faults"].as_i64().unwrap() >= 1, "{misbehave}: the cut call is a fault: {after:#}");
        // A proper charge through the same plugin: a new process serves it (a spinning one is
        // killed at the hang limit, which may come after the settlement; until its restart's
        // backoff has passed the charge is refused before reaching the plugin).
        let key = new_key();
        let input = json!({"methodId": method, "details": {}});
        let payment = eventually(Duration::from_secs(10), "a new process of the plugin charges", || async {
            let response = pay_with_key(&app, &flaky_invoice, &input, &key).await;
            match response.error_code() {
                None => Some(response.data()["payInvoice"]["payment"].clone()),
                Some("PLUGIN_UNAVAILABLE") => None,
                Some(_) => panic!("{misbehave}: unexpected answer: {:#}", response.body),
            }
        })
        .await;
        assert!(payment["externalReference"].as_str().unwrap().starts_with("mis_"), "{payment:#}");
        let restarts = plugin(&app, "misbehaving").await["restarts"].as_i64().unwrap();
        assert!(restarts >= 1, "{misbehave}: its process was started again: {restarts}");
        let counted = metric(&app, "settle_plugin_restarts_total{plugin=\"misbehaving\"}").await;
        assert_eq!(counted, Some(restarts as f64), "{misbehave}: /metrics counts the restarts");
    }

    // P7, X1: each invoice paid once, in full; no payment lost or doubled, in either tenant.
    for (invoice, total) in [(&flaky_invoice, "30.00"), (&card_invoice, "40.00")] {
        let read = read_invoice(&app, invoice).await;
        assert_eq!(read["status"], "PAID", "{misbehave}: {read:#}");
        let allocations = read["allocations"].as_array().unwrap();
        assert_eq!(allocations.len(), 1, "{misbehave}: one allocation: {read:#}");
        assert_eq!(amount(&allocations[0], "amount"), total);
    }
    assert_eq!(payment_count(&app).await, 2, "{misbehave}: the card payment and the plugin's one");
    let other = app.with_token(Some(app.token_for(&other_tenant, Role::Viewer)));
    assert_eq!(other.ok("{ payments { totalCount } }", json!({})).await["payments"]["totalCount"], 1);
    let after = plugin(&app, "misbehaving").await;
    assert_eq!(after["healthy"], true, "{misbehave}: one fault does not make it unhealthy: {after:#}");
    assert_eq!(metric(&app, "settle_plugin_healthy{plugin=\"misbehaving\"}").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g1_a_plugin_that_aborts_leaves_a_pending_charge_the_reconciler_settles() {
    misbehaviour_is_contained("abort", Some("CHARGE_PENDING")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g1_a_plugin_that_segfaults_leaves_a_pending_charge_the_reconciler_settles() {
    misbehaviour_is_contained("segfault", Some("CHARGE_PENDING")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g1_a_plugin_that_overflows_its_stack_leaves_a_pending_charge_the_reconciler_settles() {
    misbehaviour_is_contained("stack_overflow", Some("CHARGE_PENDING")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g1_a_plugin_that_allocates_without_bound_dies_at_its_memory_limit_and_the_reconciler_settles() {
    misbehaviour_is_contained("allocate", Some("CHARGE_PENDING")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g1_a_plugin_that_spins_past_the_timeout_is_killed_and_the_reconciler_settles() {
    misbehaviour_is_contained("spin", Some("CHARGE_PENDING")).await;
}

/// Junk a plugin writes to its standard output goes to Settle's log, never into the frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g1_junk_a_plugin_writes_to_its_standard_output_does_not_reach_the_server() {
    misbehaviour_is_contained("garbage", None).await;
    let dir = plugin_dir(&[MISBEHAVING]);
    let app = spawn_isolated(dir.path(), |_| {}).await;
    let seed = app.seed().await;
    let method = misbehaving_method(&app).await;
    for _ in 0..3 {
        let invoice = id_of(&app.open_invoice(&seed, "5.00").await);
        charge_ok(&app, &invoice, &method, json!({"misbehave": "garbage"})).await;
    }
    let after = plugin(&app, "misbehaving").await;
    assert_eq!((after["faults"].as_i64(), after["restarts"].as_i64()), (Some(0), Some(0)), "{after:#}");
}

/// Deaths in a row make the plugin unhealthy (in the `plugins` query and /metrics); its charges
/// are then refused with the retryable PLUGIN_UNAVAILABLE without reaching it, until the
/// cool-down has passed and a restarted process serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g1_repeated_deaths_make_a_plugin_unhealthy_and_refused_until_its_cool_down() {
    let dir = plugin_dir(&[MISBEHAVING]);
    // No reconciler during the test: its status look-ups, answered, would count as good calls.
    let app = spawn_isolated(dir.path(), |s| s.reconcile_interval_ms = 600_000).await;
    let seed = app.seed().await;
    let method = misbehaving_method(&app).await;
    let invoice = id_of(&app.open_invoice(&seed, "20.00").await);

    let (mut deaths, deadline) = (0, std::time::Instant::now() + Duration::from_secs(30));
    while deaths < 3 {
        assert!(std::time::Instant::now() < deadline, "three charges cut short by the plugin's death: only {deaths} in 30 s");
        let response = charge(&app, &invoice, &method, json!({"misbehave": "abort"})).await;
        match response.error_code() {
            Some("CHARGE_PENDING") => deaths += 1,
            // Between a death and the restart's backoff: refused before reaching the plugin.
            Some("PLUGIN_UNAVAILABLE") => {
                assert_eq!(response.body["errors"][0]["extensions"]["retryable"], true, "{:#}", response.body);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => panic!("unexpected answer: {:#}", response.body),
        }
    }
    let flaky = plugin(&app, "misbehaving").await;
    assert_eq!(flaky["healthy"], false, "{flaky:#}");
    assert_eq!(flaky["faults"], 3, "{flaky:#}");
    assert!(flaky["lastFault"].as_str().unwrap().contains("SIGABRT"), "says how it died: {flaky:#}");
    assert_eq!(metric(&app, "settle_plugin_healthy{plugin=\"misbehaving\"}").await, Some(0.0));
    assert!(metric(&app, "settle_plugin_restarts_total{plugin=\"misbehaving\"}").await.is_some_and(|n| n >= 2.0));
    assert_serving(&app).await;

    let calls_before = flaky["calls"].clone();
    let refused = charge(&app, &invoice, &method, json!({})).await;
    assert_error_code(&refused, "PLUGIN_UNAVAILABLE");
    assert_eq!(refused.body["errors"][0]["extensions"]["retryable"], true, "{:#}", refused.body);
    assert_eq!(plugin(&app, "misbehaving").await["calls"], calls_before, "refused without calling the plugin");
    assert_eq!(payment_count(&app).await, 0);
    // Card payments go on meanwhile.
    let card_invoice = id_of(&app.open_invoice(&seed, "15.00").await);
    charge_ok(&app, &card_invoice, &card_method(&app).await, card(cards::SUCCEEDS)).await;

    // After the cool-down (2 s here), a restarted process takes the charge and the plugin is
    // healthy again.
    let key = new_key();
    let input = json!({"methodId": method, "details": {}});
    let paid = eventually(Duration::from_secs(15), "the plugin serves again after its cool-down", || async {
        let response = pay_with_key(&app, &invoice, &input, &key).await;
        match response.error_code() {
            None => Some(response.data()["payInvoice"]["payment"].clone()),
            Some("PLUGIN_UNAVAILABLE") => None,
            Some(_) => panic!("unexpected answer: {:#}", response.body),
        }
    })
    .await;
    assert_eq!(amount(&paid, "amount"), "20.00");
    let flaky = plugin(&app, "misbehaving").await;
    assert_eq!(flaky["healthy"], true, "{flaky:#}");
    assert_eq!(metric(&app, "settle_plugin_healthy{plugin=\"misbehaving\"}").await, Some(1.0));
    assert_eq!(payment_count(&app).await, 2, "the card payment and this one");
    assert_eq!(read_invoice(&app, &invoice).await["status"], "PAID");
}

/// The operator decides where a plugin runs: card-sim, a built-in, forced into a process of its
/// own (`settle plugin-host --built-in card-sim`), and the manual library forced into the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_run_in_or_out_of_process_as_configured() {
    let dir = plugin_dir(&["libsettle_plugin_manual.so"]);
    let app = spawn_isolated(dir.path(), |s| {
        s.plugins_out_of_process = vec!["card-sim".into()];
        s.plugins_in_process = vec!["manual".into()];
    })
    .await;
    let card_sim = plugin(&app, "card-sim").await;
    assert_eq!((card_sim["source"].as_str(), card_sim["outOfProcess"].as_bool()), (Some("built-in"), Some(true)), "{card_sim:#}");
    let manual = plugin(&app, "manual").await;
    assert_eq!(
        (manual["source"].as_str(), manual["outOfProcess"].as_bool()),
        (Some("libsettle_plugin_manual.so"), Some(false)),
        "{manual:#}"
    );

    let seed = app.seed().await;
    let invoice = id_of(&app.open_invoice(&seed, "60.00").await);
    let card_method = card_method(&app).await;
    let payment = charge_ok(&app, &invoice, &card_method, card(cards::SUCCEEDS)).await;
    assert!(payment["externalReference"].as_str().unwrap().starts_with("ch_sim_"), "{payment:#}");
    let other = id_of(&app.open_invoice(&seed, "10.00").await);
    let declined = charge(&app, &other, &card_method, card(cards::INSUFFICIENT_FUNDS)).await;
    assert_error_code(&declined, "PAYMENT_DECLINED");

    let cheque = method_id(&app, "Cheque").await;
    let recorded = app
        .billing()
        .post(
            "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { externalReference } } }",
            json!({"input": {"clientId": seed.client, "locationId": seed.location, "methodId": cheque, "amount": "5.00", "details": {"cheque_number": "000777"}}, "key": new_key()}),
        )
        .await;
    assert_eq!(recorded.data()["recordPayment"]["payment"]["externalReference"], "000777", "{:#}", recorded.body);
    assert!(plugin(&app, "card-sim").await["calls"].as_i64().unwrap() >= 2);
    assert_eq!(payment_count(&app).await, 2);
}
