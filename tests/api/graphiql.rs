//! GraphiQL (/graphiql) in a real browser: Debian's chromium driven by playwright-core
//! (tests/browser/graphiql.mjs) against the real server. A person pastes a token into the
//! Headers tab, runs a query, opens the docs (the standard introspection query, under the
//! default limits) and runs a subscription that shows a payment as it commits; each answer is
//! compared with what the API answers itself.

use serde_json::json;
use settle::auth::Role;

use crate::browser::Browser;
use crate::events::{last_position, method, pay, records_after};
use crate::helpers::*;

const VIEWER: &str = "{ viewer { tenant role } settings { currency timezone } }";

#[tokio::test]
async fn graphiql_runs_queries_shows_the_docs_and_subscriptions_with_the_token_of_its_headers_tab() {
    // Boxed: the test's future stays off the test thread's stack, which the server shares.
    Box::pin(scenario_graphiql()).await
}

async fn scenario_graphiql() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = method(&app.viewer(), "Cash").await;
    let invoice = app.open_invoice(&seed, "30.00").await["id"].as_str().unwrap().to_owned();
    let mut browser = Browser::start("graphiql.mjs").await;

    let opened = browser.run(json!({"cmd": "open", "url": app.base_url})).await;
    assert_eq!(opened["status"], 200, "{opened}");
    assert!(opened["headers"].as_str().unwrap().contains("Bearer <paste the token>"), "the Headers tab says where the token goes: {opened}");

    // Without a token the API refuses, and GraphiQL shows the refusal.
    let refused = browser.run(json!({"cmd": "run", "query": VIEWER})).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{refused:#}");

    let token = app.token(Role::Viewer);
    browser.run(json!({"cmd": "headers", "text": format!(r#"{{"Authorization": "Bearer {token}"}}"#)})).await;
    let shown = browser.run(json!({"cmd": "run", "query": VIEWER})).await;
    assert_eq!(shown["data"], app.viewer().ok(VIEWER, json!({})).await, "GraphiQL shows what the API answers: {shown:#}");

    // The docs: GraphiQL's own introspection query passes the default limits.
    let docs = browser.run(json!({"cmd": "docs"})).await;
    assert_eq!(docs["error"], "", "{docs}");
    let roots = docs["rootTypes"].as_array().unwrap();
    for root in ["Query", "Mutation", "Subscription"] {
        assert!(roots.iter().any(|r| r.as_str().unwrap().contains(root)), "the docs list the {root} root type: {docs}");
    }

    // A subscription, over the WebSocket, with the token of the Headers tab.
    let before = last_position(&app.viewer()).await;
    browser
        .run(json!({"cmd": "submit", "query": format!("subscription {{ ledgerEvents(afterPosition: {before}) {{ position action }} }}")}))
        .await;
    let paid = pay(&app.billing(), &invoice, json!({"methodId": cash}), new_key()).await;
    assert!(paid.body["errors"].is_null(), "{:#}", paid.body);
    let shown = browser.run(json!({"cmd": "result", "contains": format!("\"position\": {}", before + 1)})).await;
    let stored = records_after(&app.viewer(), before).await;
    assert_eq!(shown["data"]["ledgerEvents"]["position"], stored[0]["position"], "{shown:#}");
    assert_eq!(shown["data"]["ledgerEvents"]["action"], stored[0]["action"], "{shown:#}");

    // The console shows the refusals above (401) and nothing worse: no script error.
    let problems = browser.run(json!({"cmd": "problems"})).await;
    let errors: Vec<&str> = problems["problems"].as_array().unwrap().iter().filter_map(|p| p.as_str()).filter(|p| p.starts_with("page error")).collect();
    assert!(errors.is_empty(), "{problems}");
    browser.close().await;
}
