//! Protective limits: query depth and complexity, body size, batches, page size.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn limits_are_readable_by_clients() {
    let app = TestApp::spawn().await;
    let data = app.viewer().ok("{ limits { pageSizeMax queryDepthMax queryComplexityMax bodySizeMaxBytes idempotencyKeyMaxChars } }", json!({})).await;
    assert_eq!(data["limits"]["pageSizeMax"], 100);
    assert_eq!(data["limits"]["queryDepthMax"], 12);
    assert_eq!(data["limits"]["bodySizeMaxBytes"], 1 << 20);
}

#[tokio::test]
async fn too_deep_a_query_is_rejected() {
    let app = TestApp::spawn_with(|s| s.limits.query_depth_max = 3).await;
    let response = app
        .viewer()
        .post("{ invoices { edges { node { client { name } } } } }", json!({}))
        .await;
    assert_error_code(&response, "QUERY_REJECTED");
}

#[tokio::test]
async fn too_complex_a_query_is_rejected() {
    let app = TestApp::spawn_with(|s| s.limits.query_complexity_max = 50).await;
    let response = app
        .viewer()
        .post(&format!("{{ invoices(first: 100) {{ edges {{ node {{ {INVOICE_FIELDS} }} }} }} }}"), json!({}))
        .await;
    assert_error_code(&response, "QUERY_REJECTED");
}

#[tokio::test]
async fn oversized_body_is_refused_with_413() {
    let app = TestApp::spawn().await;
    let huge = "x".repeat(2 << 20);
    let response = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(app.token(settle::auth::Role::Viewer))
        .json(&json!({"query": "{ viewer { tenant } }", "variables": {"pad": huge}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "REQUEST_TOO_LARGE");
}

#[tokio::test]
async fn batches_and_non_json_bodies_are_rejected() {
    let app = TestApp::spawn().await;
    let token = app.token(settle::auth::Role::Viewer);
    let cases = [
        (json!([{"query": "{ viewer { tenant } }"}, {"query": "{ viewer { tenant } }"}]).to_string(), "a batch"),
        ("{not json".to_owned(), "malformed JSON"),
        (json!({"nothing": 1}).to_string(), "JSON without a query"),
    ];
    for (body, why) in cases {
        let response = app
            .http
            .post(app.url("/graphql"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{why}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], "QUERY_REJECTED", "{why}");
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(app.token(settle::auth::Role::Viewer))
        .header("x-request-id", "trace-123")
        .json(&json!({"query": "{ invoice(id: \"nope\") { id } nope }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-123");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["requestId"], "trace-123");
}
