//! The transport around the schema: introspection under the limits (Q1), GraphiQL served without
//! internet, CORS, response compression and automatic persisted queries.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use settle::auth::Role;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::helpers::*;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/api/fixtures/introspection")
}

/// The introspection queries of common tools, as they send them: (file name, text).
fn introspection_queries() -> Vec<(String, String)> {
    let mut queries: Vec<(String, String)> = std::fs::read_dir(fixture_dir())
        .expect("the introspection fixtures")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "graphql"))
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&path).unwrap()))
        .collect();
    queries.sort();
    assert!(queries.len() >= 6, "the fixtures are missing: {queries:?}");
    queries
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn q1_standard_introspection_queries_pass_the_default_limits() {
    let app = TestApp::spawn().await;
    for (name, query) in introspection_queries() {
        let response = app.viewer().post(&query, json!({})).await;
        assert_eq!(response.status, 200, "{name}");
        assert!(response.body.get("errors").is_none(), "{name} was refused: {:#}", response.body["errors"]);
        let schema = &response.body["data"]["__schema"];
        assert_eq!(schema["queryType"]["name"], "Query", "{name}");
        assert_eq!(schema["mutationType"]["name"], "Mutation", "{name}");
        let types = schema["types"].as_array().unwrap();
        let invoice = types.iter().find(|t| t["name"] == "Invoice").unwrap_or_else(|| panic!("{name}: no Invoice type"));
        assert!(invoice["fields"].as_array().unwrap().iter().any(|f| f["name"] == "balance"), "{name}");
    }
}

#[tokio::test]
async fn q1_introspection_has_its_own_bounds_whatever_the_api_depth_limit() {
    // A server configured far stricter than the default still answers GraphiQL's docs...
    let app = TestApp::spawn_with(|s| s.limits.query_depth_max = 3).await;
    let (_, query) = introspection_queries().into_iter().find(|(name, _)| name == "graphql-js-16-all-options.graphql").unwrap();
    app.viewer().ok(&query, json!({})).await;
    // ...but introspection does not lift the limit off the rest of the operation.
    let mixed = "{ __schema { types { name } } invoices { edges { node { client { name } } } } }";
    let response = app.viewer().fails(mixed, json!({}), "QUERY_REJECTED").await;
    assert!(response.body["errors"][0]["message"].as_str().unwrap().contains("the limit is 3"), "{:#}", response.body);
}

#[tokio::test]
async fn q1_abusive_introspection_is_refused() {
    let app = TestApp::spawn().await;
    let of_type = |levels: usize| format!("{{ __type(name: \"Invoice\") {{ {}name{} }} }}", "ofType { ".repeat(levels), " }".repeat(levels));
    let fields_and_types = |levels: usize| {
        format!("{{ __schema {{ types {{ {}name{} }} }} }}", "fields { type { ".repeat(levels), " } }".repeat(levels))
    };
    let aliases = (0..5100).map(|i| format!("a{i}:name")).collect::<Vec<_>>().join(" ");
    let fragments = "{ __schema { types { ...A } } } fragment A on __Type { fields { type { ...B } } } \
        fragment B on __Type { fields { type { ...C } } } fragment C on __Type { fields { name } }";
    let cases = [
        (of_type(50), "ofType 50 deep", "deeper than 32 levels"),
        (of_type(20), "ofType 20 deep", "the introspection query nests fields 22 deep"),
        (fields_and_types(3), "fields -> type -> fields, 4 lists nested", "nests 4 lists"),
        (fields_and_types(8), "fields -> type -> fields, 9 lists nested", "nests 9 lists"),
        (fragments.to_owned(), "the same lists through fragments", "nests 4 lists"),
        (format!("{{ __schema {{ types {{ {aliases} }} }} }}"), "5,100 aliases", "more than 5000"),
    ];
    for (query, why, message) in cases {
        let response = app.viewer().fails(&query, json!({}), "QUERY_REJECTED").await;
        let text = response.body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{why}: {text}");
    }
    // The deepest a tool needs, and lists three deep, still pass.
    app.viewer().ok(&of_type(18), json!({})).await;
    app.viewer().ok(&fields_and_types(2), json!({})).await;
}

/// The `src` and `href` values of a page.
fn links(page: &str) -> Vec<String> {
    let mut links = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for (start, _) in page.match_indices(attribute) {
            let rest = &page[start + attribute.len()..];
            links.push(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    links
}

#[tokio::test]
async fn graphiql_is_served_by_settle_alone() {
    let app = TestApp::spawn().await;
    let response = app.http.get(app.url("/graphiql")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
    let page = response.text().await.unwrap();
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("//unpkg") && !page.contains("//cdn"),
        "the page names another host:\n{page}");
    assert!(page.contains(r#"defaultHeaders: '{"Authorization": "Bearer <paste the token>"}'"#), "{page}");
    assert!(page.contains("subscriptionUrl"), "{page}");

    let sums = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/graphiql/SHA256SUMS")).unwrap();
    let links = links(&page);
    assert_eq!(links.len(), 4, "{links:?}");
    for link in links {
        let name = link.strip_prefix("graphiql/assets/").unwrap_or_else(|| panic!("{link} is not a local asset"));
        // Relative to the page at /graphiql.
        let response = app.http.get(app.url(&format!("/{link}"))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{link}");
        let expected_type = if name.ends_with(".css") { "text/css; charset=utf-8" } else { "text/javascript; charset=utf-8" };
        assert_eq!(response.headers()["content-type"], expected_type, "{link}");
        assert_eq!(response.headers()["cache-control"], "public, max-age=31536000, immutable", "{link}");
        let served = sha256_hex(&response.bytes().await.unwrap());
        let committed = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/graphiql").join(name)).unwrap();
        assert_eq!(served, sha256_hex(&committed), "{link} is not the committed file");
        assert!(sums.contains(&format!("{served}  {name}")), "{name} is not in SHA256SUMS with this sum");
    }

    let response = app.http.get(app.url("/graphiql/assets/nope.js")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn dashboard_is_served_by_settle_alone() {
    let app = TestApp::spawn().await;
    let response = app.http.get(app.url("/dashboard")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-frame-options"], "DENY", "no other site may frame the page that holds a token");
    let page = response.text().await.unwrap();
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("//cdn"), "the page names another host:\n{page}");

    let sums = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/dashboard/SHA256SUMS")).unwrap();
    // The page's own links (#main) and its empty icon (data:,) ask nothing of a server.
    let links: Vec<String> = links(&page).into_iter().filter(|link| !link.starts_with('#') && !link.starts_with("data:")).collect();
    assert_eq!(links.len(), 3, "{links:?}");
    for link in links {
        let name = link.strip_prefix("dashboard/assets/").unwrap_or_else(|| panic!("{link} is not a local asset"));
        // Relative to the page at /dashboard.
        let response = app.http.get(app.url(&format!("/{link}"))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{link}");
        let expected_type = if name.ends_with(".css") { "text/css; charset=utf-8" } else { "text/javascript; charset=utf-8" };
        assert_eq!(response.headers()["content-type"], expected_type, "{link}");
        let served = response.headers()["cache-control"].to_str().unwrap().to_owned();
        let bytes = response.bytes().await.unwrap();
        let committed = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/dashboard").join(name)).unwrap();
        assert_eq!(sha256_hex(&bytes), sha256_hex(&committed), "{link} is not the committed file");
        if name.starts_with("dashboard.") {
            // The page's own script and style keep their names across versions of Settle.
            assert_eq!(served, "no-cache", "{link}");
        } else {
            assert_eq!(served, "public, max-age=31536000, immutable", "{link}");
            assert!(sums.contains(&format!("{}  {name}", sha256_hex(&bytes))), "{name} is not in SHA256SUMS with this sum");
        }
    }

    let response = app.http.get(app.url("/dashboard/assets/nope.js")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND");
}

/// A browser's preflight of a POST with a token, from `origin`.
async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.http
        .request(reqwest::Method::OPTIONS, app.url("/graphql"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap()
}

async fn post_from(app: &TestApp, origin: &str) -> reqwest::Response {
    app.http
        .post(app.url("/graphql"))
        .header("origin", origin)
        .bearer_auth(app.token(Role::Viewer))
        .json(&json!({"query": "{ viewer { tenant } }"}))
        .send()
        .await
        .unwrap()
}

fn access_control_headers(response: &reqwest::Response) -> Vec<String> {
    response.headers().keys().map(|name| name.as_str().to_owned()).filter(|name| name.starts_with("access-control-")).collect()
}

#[tokio::test]
async fn cors_is_off_unless_origins_are_configured() {
    let app = TestApp::spawn().await;
    let response = preflight(&app, "https://dash.example.com").await;
    assert_eq!(access_control_headers(&response), Vec::<String>::new());
    assert_eq!(response.status(), 405);
    let response = post_from(&app, "https://dash.example.com").await;
    assert_eq!(response.status(), 200);
    assert_eq!(access_control_headers(&response), Vec::<String>::new());
}

#[tokio::test]
async fn cors_answers_the_configured_origins_only() {
    let app = TestApp::spawn_with(|s| {
        s.cors_allowed_origins = vec!["https://dash.example.com".into(), "http://localhost:3000".into()];
    })
    .await;
    for origin in ["https://dash.example.com", "http://localhost:3000"] {
        let response = preflight(&app, origin).await;
        assert_eq!(response.status(), 204, "{origin}");
        let headers = response.headers();
        assert_eq!(headers["access-control-allow-origin"], origin);
        assert_eq!(headers["access-control-allow-methods"], "GET, POST");
        let allowed = headers["access-control-allow-headers"].to_str().unwrap();
        for header in ["authorization", "content-type", "x-request-id"] {
            assert!(allowed.contains(header), "{header} not in {allowed}");
        }
        assert_eq!(headers["access-control-max-age"], "7200");
        assert!(headers.get("access-control-allow-credentials").is_none(), "tokens, not cookies");

        let response = post_from(&app, origin).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["access-control-allow-origin"], origin);
        assert_eq!(response.headers()["access-control-expose-headers"], "x-request-id");
        assert!(response.headers().get_all("vary").iter().any(|v| v == "Origin"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["data"]["viewer"]["tenant"], app.tenant.as_str());
    }
    for origin in ["https://evil.example.com", "https://dash.example.com.evil.example", "http://dash.example.com", "null"] {
        let response = preflight(&app, origin).await;
        assert_eq!(access_control_headers(&response), Vec::<String>::new(), "{origin}");
        assert_ne!(response.status(), 204, "{origin}");
        let response = post_from(&app, origin).await;
        assert_eq!(access_control_headers(&response), Vec::<String>::new(), "{origin}");
        // Refusing is the browser's job; the response still varies by Origin for caches.
        assert!(response.headers().get_all("vary").iter().any(|v| v == "Origin"), "{origin}");
    }
    // Refusals made before GraphQL (a path Settle does not serve) are readable by the page too.
    let response = app.http.get(app.url("/no-such-path")).header("origin", "https://dash.example.com").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["access-control-allow-origin"], "https://dash.example.com");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND");
    // A request without an Origin (a mobile app, curl) is served as ever.
    let data = app.viewer().ok("{ viewer { tenant } }", json!({})).await;
    assert_eq!(data["viewer"]["tenant"], app.tenant.as_str());
}

async fn decode(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => async_compression::tokio::bufread::GzipDecoder::new(bytes).read_to_end(&mut out).await.unwrap(),
        "br" => async_compression::tokio::bufread::BrotliDecoder::new(bytes).read_to_end(&mut out).await.unwrap(),
        other => panic!("unexpected encoding {other}"),
    };
    out
}

#[tokio::test]
async fn large_responses_are_compressed_as_the_client_accepts() {
    let app = TestApp::spawn().await;
    let (_, query) = introspection_queries().into_iter().find(|(name, _)| name == "graphql-js-16-default.graphql").unwrap();
    let send = |accept: Option<&'static str>, query: String| {
        let mut request = app.http.post(app.url("/graphql")).bearer_auth(app.token(Role::Viewer)).json(&json!({"query": query}));
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        request.send()
    };
    let plain = send(None, query.clone()).await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain_bytes = plain.bytes().await.unwrap();
    let plain_json: Value = serde_json::from_slice(&plain_bytes).unwrap();
    assert!(plain_json["data"]["__schema"]["types"].as_array().unwrap().len() > 50);
    for (accept, encoding) in [("gzip", "gzip"), ("br", "br"), ("gzip, deflate, br", "br"), ("br;q=0.1, gzip", "gzip")] {
        let response = send(Some(accept), query.clone()).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-encoding"], encoding, "Accept-Encoding: {accept}");
        assert!(response.headers().get_all("vary").iter().any(|v| v == "Accept-Encoding"));
        let bytes = response.bytes().await.unwrap();
        assert!(bytes.len() * 4 < plain_bytes.len(), "{encoding}: {} of {} bytes", bytes.len(), plain_bytes.len());
        let decoded: Value = serde_json::from_slice(&decode(encoding, &bytes).await).unwrap();
        assert_eq!(decoded, plain_json, "{encoding}");
    }
    // Nothing acceptable: plain.
    let response = send(Some("deflate, zstd"), query.clone()).await.unwrap();
    assert!(response.headers().get("content-encoding").is_none());
    // A small answer is not worth compressing.
    let response = send(Some("gzip, br"), "{ viewer { tenant } }".into()).await.unwrap();
    assert!(response.headers().get("content-encoding").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["viewer"]["tenant"], app.tenant.as_str());
    // The GraphiQL assets are compressed too.
    let response = app.http.get(app.url("/graphiql/assets/graphiql-3.9.0.min.js")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let decoded = decode("gzip", &response.bytes().await.unwrap()).await;
    let committed = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/graphiql/graphiql-3.9.0.min.js")).unwrap();
    assert_eq!(sha256_hex(&decoded), sha256_hex(&committed));
}

/// Sends a GraphQL request by POST with `extensions.persistedQuery`, the query only when given.
async fn persisted_post(app: &TestApp, role: Role, query: Option<&str>, hash: &str, variables: Value) -> Gql {
    let mut body = json!({"variables": variables, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
    if let Some(query) = query {
        body["query"] = json!(query);
    }
    let response = app.http.post(app.url("/graphql")).bearer_auth(app.token(role)).json(&body).send().await.unwrap();
    Gql { status: response.status().as_u16(), body: response.json().await.unwrap() }
}

/// The same by GET, without the query, as Apollo clients send it with `useGETForHashedQueries`.
async fn persisted_get(app: &TestApp, role: Role, hash: &str, variables: Value) -> Gql {
    let extensions = json!({"persistedQuery": {"version": 1, "sha256Hash": hash}}).to_string();
    let url = reqwest::Url::parse_with_params(&app.url("/graphql"), [("extensions", extensions), ("variables", variables.to_string())]).unwrap();
    let response = app
        .http
        .get(url)
        .bearer_auth(app.token(role))
        .send()
        .await
        .unwrap();
    Gql { status: response.status().as_u16(), body: response.json().await.unwrap() }
}

#[tokio::test]
async fn persisted_queries_follow_apollos_protocol() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let query = "query Client($id: ID!) { client(id: $id) { name email } }";
    let hash = sha256_hex(query.as_bytes());
    let variables = json!({"id": seed.client});

    // Unknown hash: 200, with the message and code Apollo clients look for.
    for response in [persisted_post(&app, Role::Viewer, None, &hash, variables.clone()).await, persisted_get(&app, Role::Viewer, &hash, variables.clone()).await] {
        assert_eq!(response.status, 200);
        assert_eq!(response.body["errors"][0]["message"], "PersistedQueryNotFound");
        assert_error_code(&response, "PERSISTED_QUERY_NOT_FOUND");
        assert_eq!(response.body["errors"][0]["extensions"]["retryable"], false);
    }

    // Query and hash: runs and registers.
    let response = persisted_post(&app, Role::Viewer, Some(query), &hash, variables.clone()).await;
    assert_eq!(response.body["data"]["client"]["name"], "Ann Lee", "{:#}", response.body);

    // Hash alone now works, by POST and by GET, also with `"query": null` as some clients send it.
    let response = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(app.token(Role::Viewer))
        .json(&json!({"query": null, "variables": variables, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["client"]["name"], "Ann Lee", "{body:#}");
    for response in [persisted_post(&app, Role::Viewer, None, &hash, variables.clone()).await, persisted_get(&app, Role::Viewer, &hash, variables.clone()).await] {
        assert_eq!(response.status, 200);
        assert!(response.body.get("errors").is_none(), "{:#}", response.body);
        assert_eq!(response.body["data"]["client"]["email"], "ann@example.com");
    }
}

#[tokio::test]
async fn a_persisted_query_must_match_its_hash_and_be_valid_to_be_kept() {
    let app = TestApp::spawn().await;
    let query = "{ viewer { tenant } }";
    let wrong = sha256_hex(b"{ viewer { role } }");
    let response = persisted_post(&app, Role::Viewer, Some(query), &wrong, json!({})).await;
    assert_eq!(response.status, 400);
    assert_error_code(&response, "QUERY_REJECTED");
    assert!(response.body["errors"][0]["message"].as_str().unwrap().contains("not the SHA-256 of the query"));
    assert_error_code(&persisted_post(&app, Role::Viewer, None, &wrong, json!({})).await, "PERSISTED_QUERY_NOT_FOUND");

    let cases = [
        (json!({"version": 2, "sha256Hash": sha256_hex(query.as_bytes())}), "version 2"),
        (json!({"version": 1, "sha256Hash": "xyz"}), "a hash that is not hex"),
        (json!({"version": 1}), "no hash"),
    ];
    for (extension, why) in cases {
        let response = app
            .http
            .post(app.url("/graphql"))
            .bearer_auth(app.token(Role::Viewer))
            .json(&json!({"extensions": {"persistedQuery": extension}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{why}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], "QUERY_REJECTED", "{why}");
    }

    // A document the engine refuses is not kept.
    let invalid = "{ viewer { nope } }";
    let hash = sha256_hex(invalid.as_bytes());
    assert_error_code(&persisted_post(&app, Role::Viewer, Some(invalid), &hash, json!({})).await, "QUERY_REJECTED");
    assert_error_code(&persisted_post(&app, Role::Viewer, None, &hash, json!({})).await, "PERSISTED_QUERY_NOT_FOUND");
}

#[tokio::test]
async fn a_persisted_mutation_never_runs_over_get() {
    let app = TestApp::spawn().await;
    let mutation = "mutation { createClient(input: {name: \"By GET\"}) { id } }";
    let hash = sha256_hex(mutation.as_bytes());
    // Registered by a viewer, whom the mutation refuses: nothing is created, the query is kept.
    assert_error_code(&persisted_post(&app, Role::Viewer, Some(mutation), &hash, json!({})).await, "FORBIDDEN");
    let response = persisted_get(&app, Role::Admin, &hash, json!({})).await;
    assert_eq!(response.status, 400);
    assert_error_code(&response, "QUERY_REJECTED");
    assert!(response.body["errors"][0]["message"].as_str().unwrap().contains("POST"));
    let data = app.viewer().ok("{ clients { totalCount } }", json!({})).await;
    assert_eq!(data["clients"]["totalCount"], 0);
    // By POST the same hash runs it.
    let response = persisted_post(&app, Role::Admin, None, &hash, json!({})).await;
    assert!(response.body["data"]["createClient"]["id"].is_string(), "{:#}", response.body);
}

#[tokio::test]
async fn the_persisted_query_cache_is_bounded() {
    let app = TestApp::spawn_with(|s| s.limits.persisted_queries_max = 2).await;
    let queries = ["{ viewer { tenant } }", "{ viewer { role } }", "{ viewer { subject } }"];
    for query in queries {
        let response = persisted_post(&app, Role::Viewer, Some(query), &sha256_hex(query.as_bytes()), json!({})).await;
        assert!(response.body.get("errors").is_none(), "{:#}", response.body);
    }
    // The first is forgotten; the last two are kept.
    assert_error_code(&persisted_post(&app, Role::Viewer, None, &sha256_hex(queries[0].as_bytes()), json!({})).await, "PERSISTED_QUERY_NOT_FOUND");
    for query in &queries[1..] {
        let response = persisted_post(&app, Role::Viewer, None, &sha256_hex(query.as_bytes()), json!({})).await;
        assert!(response.body.get("errors").is_none(), "{query}: {:#}", response.body);
    }
}
