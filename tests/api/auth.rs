//! A1-A3: tokens, roles and tenants.
//!
//! Every case here is listed, with its expected result, in docs/security.md.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use settle::auth::{Role, TenantId};
use settle::config::JwtAlgorithm;

use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// Token crafting
// ---------------------------------------------------------------------------------------------

/// A throwaway 2048-bit RSA key made for these tests only (`openssl genrsa -traditional 2048`).
/// It protects nothing; it signs RS256 tokens that an HS256 server must refuse, and RS256 tokens
/// for a server started with the public half below.
const TEST_ONLY_RSA_PRIVATE_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEAzw5vJTh/wsmktty+Pe31V9hrSpeB2qOn3H4nit4/uCUOjLJE
UraH4H5PDQ8ccDVS4STRrjAj4QkUVQq/R08lRYeJLvNPrW6HTwStj5CQ9MspeYws
qJX/K13dxVZk5hawC22d62yg7DH3BMnRx9zAjTweU1rYLwJXGCIjrHGiZDTzJ49M
YstMOUMYPsFoHd7HxN5L9HluaVmQ8yw32Wp+9KyVZlJ483aSlpzYZ/9uPf7Zj0f4
2LuzFz7I8zN5r/YUwJL3LTm4PHpLPCqXbIp6WYsKzTfqFXlm645ztnYRbITxDcuO
SSHbx7dB/uZEetqyWH8MM2UVEYmdSDzwULR6wwIDAQABAoIBAFdnf3GV3RDL8BUl
L8WSurufZwMw26cA6K5CLs0HLpy8P90Sr5a+6LLSfupDU7zmNZtG4KCIP80R+RxB
Eie2+EPWiAliumK6wrGPhviQjTBYxqRBkOSFlRaoZCKWardaImxglIY57+Bk4yKJ
U13sCPhVxXNoaNPHSB6u4qI7wdJMaWvkvqI9K66jRRbi8bAUxcZBS7UDYLyZ8lOX
b/JrBSrzfoHc+p83aRZFPYyp/tQBp03EqxZgOjJpInYGm+0Puh75IfflCHWwgvFP
KPmmUtSd0/I6hhCuXDjVVb9wOgT701c+5X7/vhsG+iX6SZgIUkkVkmNKVEoky69N
uRLER/ECgYEA5kTP4gyBPZZwBcoJ+yrpr8brjFvehNpjBx1kon8/lvMoxmAkxWCJ
lx/gMC4wv0lE0Rq8cKOos51mD8jQ1PhuUUxK6anhWQWHial3owaGMmoe2YsfjMf2
+IXmTOnn+CZyHYBxdVV4+jQVVt6Kq5FpkZZ/D4P1nR6lfX2XKJYF3fsCgYEA5jGY
iUf5z5o81Wr9nismaqUFUhiENNYgPFTaESqTqRdWghrrp3ypTIJwjrSRxZl0S5YD
9ZfmQGu9tpwvYQxxvQHb1TRwpAk3pwH45lgWW6e4Sd9FnvbWLUvjxrPsHFpsb1g3
O38QAIEWa1XD724HIBjYlLtiaAmbmwU8xsWGI9kCgYEAwRIVU620d5U5nEEJGWWj
xtR9D5TAAJizy3VjubQD92cuWxal/jCxbNs3OG6iROEEKGfIdJFklCV3O+je4JLk
vJnBfiYIYoH2YQCM5U5FGuRLtY+nBn1roHl03iyJaVGjAQV/HChsZS1ibxHtJ2mn
IIEVTEcSm4jkrVGuekM/7B0CgYEA5VVL7pkynE3Bha4N9mJu55h4cI3USP97JiAz
ER8l9TQ3D2/ajwZ3dK4PjV0ATajQX+2ZDDjFQDEW1LNN0JYhSnhrl0GjZwl31H72
hiYEQFQcGhzCs9ifEImm5/Ogq666kUOF41R3kMkKmOzdQ9COcL/QJn15UMUhrZPO
NQnc1iECgYBozBFujGok6QzhtF+BbL3wB/hv6eMp3k67+AXB8ZorHt9PIVFXMdgl
EOnyvd36mGVPCYitbXEvkMQMyo8aGFlw5YBJHjCwOV6be8qL6IXXBRgGg67GxeQx
lPw0UzCBnvSbi2qGs2XYWAKFO0w6tEIhVEA58TXOshqJvV8NWS4qwA==
-----END RSA PRIVATE KEY-----
";

/// The public half of [`TEST_ONLY_RSA_PRIVATE_KEY`].
const TEST_ONLY_RSA_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAzw5vJTh/wsmktty+Pe31
V9hrSpeB2qOn3H4nit4/uCUOjLJEUraH4H5PDQ8ccDVS4STRrjAj4QkUVQq/R08l
RYeJLvNPrW6HTwStj5CQ9MspeYwsqJX/K13dxVZk5hawC22d62yg7DH3BMnRx9zA
jTweU1rYLwJXGCIjrHGiZDTzJ49MYstMOUMYPsFoHd7HxN5L9HluaVmQ8yw32Wp+
9KyVZlJ483aSlpzYZ/9uPf7Zj0f42LuzFz7I8zN5r/YUwJL3LTm4PHpLPCqXbIp6
WYsKzTfqFXlm645ztnYRbITxDcuOSSHbx7dB/uZEetqyWH8MM2UVEYmdSDzwULR6
wwIDAQAB
-----END PUBLIC KEY-----
";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a token the server should accept: tenant `tenant`, role ADMIN, valid for an hour.
fn good_claims(tenant: &str) -> Value {
    json!({"sub": "alice", "tenant": tenant, "roles": ["ADMIN"], "iat": now(), "exp": now() + 3600})
}

/// `claims` with `key` set to `value`.
fn with(claims: &Value, key: &str, value: Value) -> Value {
    let mut claims = claims.clone();
    claims[key] = value;
    claims
}

/// `claims` without `key`.
fn without(claims: &Value, key: &str) -> Value {
    let mut claims = claims.clone();
    claims.as_object_mut().unwrap().remove(key);
    claims
}

/// A token signed with an HMAC secret and `algorithm` by the jsonwebtoken crate.
fn hmac_token(algorithm: Algorithm, secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, &EncodingKey::from_secret(secret)).expect("token encodes")
}

/// An RS256 token signed with the test RSA key.
fn rs256_token(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(TEST_ONLY_RSA_PRIVATE_KEY.as_bytes()).expect("the test RSA key parses");
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).expect("token encodes")
}

/// A token assembled by hand: base64url(header).base64url(claims).signature.
fn hand_made_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
}

/// `token` with its claims replaced by `claims`, keeping the original header and signature.
fn with_swapped_claims(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS has three parts");
    format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2])
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

// ---------------------------------------------------------------------------------------------
// A server whose HS256 secret the test knows
// ---------------------------------------------------------------------------------------------

/// A test server started with `--jwt-secret-file` naming a secret this test wrote, so the test
/// can sign any token it likes, with any header, using the server's real secret.
struct KeyedApp {
    app: TestApp,
    secret: Vec<u8>,
    _secret_dir: tempfile::TempDir,
}

impl KeyedApp {
    async fn spawn() -> KeyedApp {
        let secret_dir = tempfile::tempdir().expect("temp dir");
        // 64 hex characters: a 32-byte secret.
        let secret_hex = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let path: PathBuf = secret_dir.path().join("hs256.key");
        std::fs::write(&path, &secret_hex).expect("secret written");
        let app = TestApp::spawn_with(|settings| settings.jwt_secret_file = Some(path)).await;
        KeyedApp { app, secret: hex::decode(secret_hex).unwrap(), _secret_dir: secret_dir }
    }

    fn claims(&self) -> Value {
        good_claims(&self.app.tenant)
    }

    /// A correctly signed HS256 token with `claims`.
    fn sign(&self, claims: &Value) -> String {
        hmac_token(Algorithm::HS256, &self.secret, claims)
    }

    /// A valid ADMIN token of this app's tenant.
    fn admin_token(&self) -> String {
        self.sign(&self.claims())
    }

    /// How many clients and audit events the tenant has, read with a valid token.
    async fn client_and_event_counts(&self) -> (i64, i64) {
        let data = self
            .app
            .with_token(Some(self.admin_token()))
            .ok("{ clients { totalCount } auditEvents { totalCount } }", json!({}))
            .await;
        (data["clients"]["totalCount"].as_i64().unwrap(), data["auditEvents"]["totalCount"].as_i64().unwrap())
    }

    /// Sends a mutation with each `Authorization` value (None: no header); every one must be
    /// refused with HTTP 401 and UNAUTHENTICATED, and none may create anything.
    async fn assert_all_unauthenticated(&self, cases: &[(&str, Option<String>)]) {
        for (reason, authorization) in cases {
            let response = post_raw(&self.app, authorization.as_deref(), PROBE_MUTATION, json!({})).await;
            assert_unauthenticated(&response, reason);
        }
        assert_eq!(self.client_and_event_counts().await, (0, 0), "a refused token changed nothing");
    }
}

/// What the A1 cases send: a mutation, so that a token wrongly accepted would leave a trace.
const PROBE_MUTATION: &str = r#"mutation { createClient(input: {name: "Mallory"}) { id } }"#;

/// POST /graphql with a raw `Authorization` header value (or none).
async fn post_raw(app: &TestApp, authorization: Option<&str>, query: &str, variables: Value) -> Gql {
    let mut request = app.http.post(app.url("/graphql")).json(&json!({"query": query, "variables": variables}));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.expect("a JSON body");
    Gql { status, body }
}

/// GET `path` with a bearer token (or none); returns the status and the body as text.
async fn get_raw(app: &TestApp, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = app.http.get(app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the server answers");
    (response.status().as_u16(), response.text().await.expect("a body"))
}

/// GET /graphql with the given query-string parameters.
async fn get_graphql(app: &TestApp, token: Option<&str>, params: &[(&str, &str)]) -> Gql {
    let query_string: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect();
    let (status, body) = get_raw(app, &format!("/graphql?{}", query_string.join("&")), token).await;
    Gql { status, body: serde_json::from_str(&body).unwrap_or_else(|e| panic!("a JSON body ({e}): {body}")) }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn assert_unauthenticated(response: &Gql, reason: &str) {
    assert_eq!(response.status, 401, "{reason}: expected HTTP 401, got {}: {:#}", response.status, response.body);
    assert_eq!(response.error_code(), Some("UNAUTHENTICATED"), "{reason}: {:#}", response.body);
    assert!(response.body.get("data").is_none_or(Value::is_null), "{reason}: a refused request has no data: {:#}", response.body);
}

// ---------------------------------------------------------------------------------------------
// A1: tokens
// ---------------------------------------------------------------------------------------------

/// The control for every refusal below: tokens signed with the server's secret are accepted,
/// including those just inside the 30-second leeway, and the highest known role counts.
#[tokio::test]
async fn a1_valid_token_is_accepted_within_leeway() {
    let k = KeyedApp::spawn().await;
    let claims = k.claims();
    let cases: &[(&str, Value, &str)] = &[
        ("a fresh ADMIN token", claims.clone(), "ADMIN"),
        ("expired 10 s ago: inside the 30 s leeway", with(&claims, "exp", json!(now() - 10)), "ADMIN"),
        ("nbf 10 s ahead: inside the 30 s leeway", with(&claims, "nbf", json!(now() + 10)), "ADMIN"),
        ("nbf in the past", with(&claims, "nbf", json!(now() - 60)), "ADMIN"),
        (
            "an unknown role next to VIEWER: the unknown one is ignored",
            with(&claims, "roles", json!(["AUDITOR", "VIEWER"])),
            "VIEWER",
        ),
        ("several roles: the highest counts", with(&claims, "roles", json!(["VIEWER", "ADMIN", "BILLING"])), "ADMIN"),
        (
            "roles are matched exactly: \"admin\" and \"Admin\" are unknown entries, ignored",
            with(&claims, "roles", json!(["admin", "Admin", "billing", "VIEWER"])),
            "VIEWER",
        ),
    ];
    for (reason, claims, role) in cases {
        let response =
            post_raw(&k.app, bearer(&k.sign(claims)).as_deref(), "{ viewer { subject tenant role } }", json!({})).await;
        assert_eq!(response.status, 200, "{reason}: {:#}", response.body);
        assert!(response.body.get("errors").is_none(), "{reason}: {:#}", response.body);
        assert_eq!(
            response.data()["viewer"],
            json!({"subject": "alice", "tenant": k.app.tenant, "role": role}),
            "{reason}: the caller is who the token names"
        );
    }
}

#[tokio::test]
async fn a1_missing_or_malformed_authorization_is_unauthenticated() {
    let k = KeyedApp::spawn().await;
    let valid = k.admin_token();
    k.assert_all_unauthenticated(&[
        ("no Authorization header", None),
        ("Basic scheme with user:password", Some("Basic dXNlcjpwYXNzd29yZA==".into())),
        ("Basic scheme carrying a valid token", Some(format!("Basic {valid}"))),
        ("a valid token without the Bearer scheme", Some(valid.clone())),
        ("Bearer with nothing after it", Some("Bearer".into())),
        ("Bearer with an empty token", Some("Bearer ".into())),
        ("garbage token", bearer("garbage")),
        ("three dots of garbage", bearer("a.b.c")),
        ("a valid token with a fourth segment", bearer(&format!("{valid}.xyz"))),
        ("a valid token cut short", bearer(&valid[..valid.len() - 5])),
    ])
    .await;
}

#[tokio::test]
async fn a1_expired_token_is_unauthenticated() {
    let k = KeyedApp::spawn().await;
    let claims = k.claims();
    k.assert_all_unauthenticated(&[
        ("expired 60 s ago: beyond the 30 s leeway", bearer(&k.sign(&with(&claims, "exp", json!(now() - 60))))),
        ("expired a day ago", bearer(&k.sign(&with(&claims, "exp", json!(now() - 86_400))))),
        ("exp at the epoch", bearer(&k.sign(&with(&claims, "exp", json!(0))))),
    ])
    .await;
}

#[tokio::test]
async fn a1_not_yet_valid_token_is_unauthenticated() {
    let k = KeyedApp::spawn().await;
    let claims = k.claims();
    k.assert_all_unauthenticated(&[
        ("nbf 120 s ahead: beyond the 30 s leeway", bearer(&k.sign(&with(&claims, "nbf", json!(now() + 120))))),
        (
            "nbf a day ahead",
            bearer(&k.sign(&with(&with(&claims, "nbf", json!(now() + 86_400)), "exp", json!(now() + 2 * 86_400)))),
        ),
    ])
    .await;
}

#[tokio::test]
async fn a1_wrong_signature_is_unauthenticated() {
    let k = KeyedApp::spawn().await;
    let claims = k.claims();
    let other_secret = [7u8; 32];
    let viewer_token = k.sign(&with(&claims, "roles", json!(["VIEWER"])));
    let other_tenant_token = k.sign(&with(&claims, "tenant", json!("othertenant")));
    let parts: Vec<&str> = viewer_token.split('.').collect();
    k.assert_all_unauthenticated(&[
        ("signed with another secret", bearer(&hmac_token(Algorithm::HS256, &other_secret, &claims))),
        ("VIEWER token with its roles rewritten to ADMIN", bearer(&with_swapped_claims(&viewer_token, &claims))),
        ("another tenant's token with its tenant rewritten", bearer(&with_swapped_claims(&other_tenant_token, &claims))),
        ("signature removed", bearer(&format!("{}.{}.", parts[0], parts[1]))),
        (
            "signature of another token",
            bearer(&format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2])),
        ),
        ("signature not base64url", bearer(&format!("{}.{}.!!!!", parts[0], parts[1]))),
    ])
    .await;
}

#[tokio::test]
async fn a1_wrong_algorithm_is_unauthenticated() {
    let k = KeyedApp::spawn().await;
    let claims = k.claims();
    k.assert_all_unauthenticated(&[
        ("HS384 signed with the server's own secret", bearer(&hmac_token(Algorithm::HS384, &k.secret, &claims))),
        ("HS512 signed with the server's own secret", bearer(&hmac_token(Algorithm::HS512, &k.secret, &claims))),
        ("RS256 signed with an RSA key", bearer(&rs256_token(&claims))),
    ])
    .await;
}

#[tokio::test]
async fn a1_alg_none_token_is_unauthenticated() {
    let k = KeyedApp::spawn().await;
    let claims = k.claims();
    let real_signature = k.admin_token().rsplit('.').next().unwrap().to_owned();
    k.assert_all_unauthenticated(&[
        ("alg none, empty signature", bearer(&hand_made_token(&json!({"alg": "none", "typ": "JWT"}), &claims, ""))),
        ("alg None, empty signature", bearer(&hand_made_token(&json!({"alg": "None", "typ": "JWT"}), &claims, ""))),
        ("alg NONE, empty signature", bearer(&hand_made_token(&json!({"alg": "NONE", "typ": "JWT"}), &claims, ""))),
        (
            "alg none carrying a real HS256 signature",
            bearer(&hand_made_token(&json!({"alg": "none", "typ": "JWT"}), &claims, &real_signature)),
        ),
        ("no alg in the header", bearer(&hand_made_token(&json!({"typ": "JWT"}), &claims, &real_signature))),
        ("alg none without the trailing dot", {
            let token = hand_made_token(&json!({"alg": "none"}), &claims, "");
            bearer(token.trim_end_matches('.'))
        }),
    ])
    .await;
}

#[tokio::test]
async fn a1_token_without_known_role_is_unauthenticated() {
    let k = KeyedApp::spawn().await;
    let claims = k.claims();
    k.assert_all_unauthenticated(&[
        ("empty roles", bearer(&k.sign(&with(&claims, "roles", json!([]))))),
        ("only an unknown role", bearer(&k.sign(&with(&claims, "roles", json!(["SUPERUSER"]))))),
        ("only unknown roles", bearer(&k.sign(&with(&claims, "roles", json!(["ROOT", "OWNER", ""]))))),
        ("roles in another case only", bearer(&k.sign(&with(&claims, "roles", json!(["admin", "Billing", "viewer"]))))),
        ("a role with spaces around it", bearer(&k.sign(&with(&claims, "roles", json!([" ADMIN", "ADMIN "]))))),
        ("no roles claim", bearer(&k.sign(&without(&claims, "roles")))),
        ("roles as a string, not a list", bearer(&k.sign(&with(&claims, "roles", json!("ADMIN"))))),
        ("roles null", bearer(&k.sign(&with(&claims, "roles", Value::Null)))),
        ("a singular role claim instead of roles", bearer(&k.sign(&with(&without(&claims, "roles"), "role", json!("ADMIN"))))),
    ])
    .await;
}

#[tokio::test]
async fn a1_invalid_tenant_claim_is_unauthenticated() {
    let k = KeyedApp::spawn().await;
    let claims = k.claims();
    let tenant = |value: Value| bearer(&k.sign(&with(&claims, "tenant", value)));
    k.assert_all_unauthenticated(&[
        ("tenant with a slash", tenant(json!("a/b"))),
        ("empty tenant", tenant(json!(""))),
        ("tenant with a space", tenant(json!("a b"))),
        ("tenant with a colon (record-id syntax)", tenant(json!("tenant:x"))),
        ("tenant with a non-ASCII letter", tenant(json!("ä"))),
        ("tenant of 65 characters", tenant(json!("x".repeat(65)))),
        ("tenant as a number", tenant(json!(42))),
        ("tenant null", tenant(Value::Null)),
        ("no tenant claim", bearer(&k.sign(&without(&claims, "tenant")))),
    ])
    .await;
}

#[tokio::test]
async fn a1_token_without_exp_or_sub_is_unauthenticated() {
    let k = KeyedApp::spawn().await;
    let claims = k.claims();
    k.assert_all_unauthenticated(&[
        ("no exp claim", bearer(&k.sign(&without(&claims, "exp")))),
        ("exp not a number", bearer(&k.sign(&with(&claims, "exp", json!("tomorrow"))))),
        ("no sub claim", bearer(&k.sign(&without(&claims, "sub")))),
        ("claims not a JSON object", bearer(&hmac_token(Algorithm::HS256, &k.secret, &json!(["ADMIN"])))),
    ])
    .await;
}

/// Optional A1 case: a server verifying RS256 accepts tokens of its RSA key and refuses the
/// classic algorithm confusion (HS256 "signed" with the public key as the HMAC secret).
#[tokio::test]
async fn a1_rs256_server_refuses_algorithm_confusion() {
    let dir = tempfile::tempdir().unwrap();
    let public_key = dir.path().join("rs256.pub.pem");
    std::fs::write(&public_key, TEST_ONLY_RSA_PUBLIC_KEY).unwrap();
    let app = TestApp::spawn_with(|settings| {
        settings.jwt_algorithm = JwtAlgorithm::Rs256;
        settings.jwt_public_key_file = Some(public_key);
    })
    .await;
    let claims = good_claims(&app.tenant);

    let accepted = post_raw(&app, bearer(&rs256_token(&claims)).as_deref(), "{ viewer { tenant role } }", json!({})).await;
    assert_eq!(accepted.status, 200, "an RS256 token of the configured key: {:#}", accepted.body);
    assert_eq!(accepted.data()["viewer"], json!({"tenant": app.tenant, "role": "ADMIN"}));

    let viewer_token = rs256_token(&with(&claims, "roles", json!(["VIEWER"])));
    let cases: &[(&str, Option<String>)] = &[
        (
            "HS256 signed with the RSA public key as the secret",
            bearer(&hmac_token(Algorithm::HS256, TEST_ONLY_RSA_PUBLIC_KEY.as_bytes(), &claims)),
        ),
        ("an HS256 token from the data directory's key", bearer(&app.token(Role::Admin))),
        ("alg none", bearer(&hand_made_token(&json!({"alg": "none", "typ": "JWT"}), &claims, ""))),
        ("RS256 VIEWER token with its roles rewritten to ADMIN", bearer(&with_swapped_claims(&viewer_token, &claims))),
        ("RS256 token expired 60 s ago", bearer(&rs256_token(&with(&claims, "exp", json!(now() - 60))))),
    ];
    for (reason, authorization) in cases {
        assert_unauthenticated(&post_raw(&app, authorization.as_deref(), PROBE_MUTATION, json!({})).await, reason);
    }
    let counts = post_raw(&app, bearer(&rs256_token(&claims)).as_deref(), "{ clients { totalCount } }", json!({})).await;
    assert_eq!(counts.data()["clients"]["totalCount"], 0, "a refused token changed nothing: {:#}", counts.body);
}

/// A1: only /healthz is open; /metrics needs a token with the ADMIN role.
#[tokio::test]
async fn a1_healthz_is_open_and_metrics_needs_admin() {
    let app = TestApp::spawn().await;

    let (status, body) = get_raw(&app, "/healthz", None).await;
    assert_eq!(status, 200, "/healthz needs no token: {body}");
    assert!(body.contains("\"ok\""), "{body}");
    let (status, _) = get_raw(&app, "/healthz", Some("garbage")).await;
    assert_eq!(status, 200, "/healthz ignores a bad token");

    let cases: &[(&str, Option<String>, u16, &str)] = &[
        ("no token", None, 401, "UNAUTHENTICATED"),
        ("garbage token", Some("garbage".into()), 401, "UNAUTHENTICATED"),
        ("expired ADMIN token", Some(expired_admin_token(&app)), 401, "UNAUTHENTICATED"),
        ("VIEWER token", Some(app.token(Role::Viewer)), 403, "FORBIDDEN"),
        ("BILLING token", Some(app.token(Role::Billing)), 403, "FORBIDDEN"),
    ];
    for (reason, token, status, code) in cases {
        let (got, body) = get_raw(&app, "/metrics", token.as_deref()).await;
        assert_eq!(got, *status, "/metrics with {reason}: {body}");
        let json: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("/metrics with {reason}: not JSON ({e}): {body}"));
        assert_eq!(json["errors"][0]["extensions"]["code"], *code, "/metrics with {reason}: {body}");
        assert!(!body.contains("settle_http_requests_total"), "/metrics with {reason} shows no metrics");
    }

    let (status, body) = get_raw(&app, "/metrics", Some(&app.token(Role::Admin))).await;
    assert_eq!(status, 200, "/metrics with an ADMIN token: {body}");
    assert!(body.contains("settle_http_requests_total"), "{body}");
    assert!(!body.contains(&app.tenant), "metrics hold no tenant data");
}

fn expired_admin_token(app: &TestApp) -> String {
    let tenant = TenantId::parse(&app.tenant).unwrap();
    app.keys.mint("late", &tenant, &[Role::Admin], chrono::Duration::minutes(-5)).unwrap()
}

/// A1 transport: GET /graphql runs queries but refuses mutations; it needs a token like POST.
#[tokio::test]
async fn a1_get_graphql_runs_queries_and_refuses_mutations() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin);

    let response = get_graphql(&app, Some(&app.token(Role::Viewer)), &[("query", "{ viewer { tenant role } }")]).await;
    assert_eq!(response.status, 200, "{:#}", response.body);
    assert_eq!(response.data()["viewer"], json!({"tenant": app.tenant, "role": "VIEWER"}));

    let with_variables = get_graphql(
        &app,
        Some(&admin),
        &[("query", "query($s: String) { clients(search: $s) { totalCount } }"), ("variables", r#"{"s": "x"}"#)],
    )
    .await;
    assert_eq!(with_variables.data()["clients"]["totalCount"], 0, "GET with variables: {:#}", with_variables.body);

    assert_unauthenticated(&get_graphql(&app, None, &[("query", "{ viewer { tenant } }")]).await, "GET without a token");

    let create = r#"mutation { createClient(input: {name: "Via GET"}) { id } }"#;
    let cases: &[(&str, Vec<(&str, &str)>)] = &[
        ("an anonymous mutation", vec![("query", create)]),
        ("a named mutation", vec![("query", r#"mutation Sneak { createClient(input: {name: "Via GET"}) { id } }"#)]),
        (
            "a query and a mutation, operationName choosing the mutation",
            vec![
                ("query", r#"query Q { viewer { tenant } } mutation M { createClient(input: {name: "Via GET"}) { id } }"#),
                ("operationName", "M"),
            ],
        ),
        (
            "a query and a mutation, operationName choosing the query",
            vec![
                ("query", r#"query Q { viewer { tenant } } mutation M { createClient(input: {name: "Via GET"}) { id } }"#),
                ("operationName", "Q"),
            ],
        ),
    ];
    for (reason, params) in cases {
        let response = get_graphql(&app, Some(&admin), params).await;
        assert_eq!(response.status, 400, "GET with {reason}: {:#}", response.body);
        assert_error_code(&response, "QUERY_REJECTED");
    }
    let counts = app.admin().ok("{ clients { totalCount } auditEvents { totalCount } }", json!({})).await;
    assert_eq!(counts["clients"]["totalCount"], 0, "no mutation ran through GET");
    assert_eq!(counts["auditEvents"]["totalCount"], 0, "no mutation ran through GET");
}

/// A1: the tenant comes from the token and nothing else: headers, the URL, variables and
/// request extensions naming another tenant change nothing.
#[tokio::test]
async fn a1_tenant_comes_only_from_the_token() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    app.open_invoice(&seed, "100.00").await;
    let tenant_a = app.tenant.clone();
    let tenant_b = format!("b{}", uuid::Uuid::new_v4().simple());
    let token_b = app.token_for(&tenant_b, Role::Admin);
    let query = "{ viewer { tenant } clients { totalCount } invoices { totalCount } auditEvents { totalCount } }";
    let body = json!({"query": query});

    let requests: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("no hint", app.http.post(app.url("/graphql")).json(&body)),
        ("X-Tenant header", app.http.post(app.url("/graphql")).header("x-tenant", &tenant_a).json(&body)),
        ("X-Tenant-Id header", app.http.post(app.url("/graphql")).header("x-tenant-id", &tenant_a).json(&body)),
        ("X-Settle-Tenant header", app.http.post(app.url("/graphql")).header("x-settle-tenant", &tenant_a).json(&body)),
        ("Tenant header", app.http.post(app.url("/graphql")).header("tenant", &tenant_a).json(&body)),
        ("?tenant= in the URL", app.http.post(app.url(&format!("/graphql?tenant={tenant_a}"))).json(&body)),
        (
            "tenant in the variables",
            app.http.post(app.url("/graphql")).json(&json!({"query": query, "variables": {"tenant": tenant_a}})),
        ),
        (
            "tenant in the request extensions",
            app.http.post(app.url("/graphql")).json(&json!({"query": query, "extensions": {"tenant": tenant_a}})),
        ),
    ];
    for (reason, request) in requests {
        let body: Value = request.bearer_auth(&token_b).send().await.unwrap().json().await.unwrap();
        assert!(body.get("errors").is_none(), "{reason}: {body:#}");
        assert_eq!(
            body["data"],
            json!({"viewer": {"tenant": tenant_b}, "clients": {"totalCount": 0}, "invoices": {"totalCount": 0}, "auditEvents": {"totalCount": 0}}),
            "{reason}: the caller stays in the token's tenant"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures for A2 and A3: records of every kind, and one call of every mutation
// ---------------------------------------------------------------------------------------------

/// Records of one tenant that every mutation in [`mutation_cases`] can act on.
struct Records {
    seed: Seed,
    contact: String,
    custom_rate: String,
    archived_rate: String,
    /// A draft (never numbered): updated, then finalized.
    draft: String,
    /// A draft (never numbered): deleted.
    spare_draft: String,
    /// An OPEN invoice: reverted to draft.
    open: String,
    /// An OPEN invoice: voided.
    open_to_void: String,
    /// The Cash payment method.
    cash: String,
    /// An OPEN invoice: paid with payInvoice.
    to_pay: String,
    /// A payment of 100.00 with 70.00 unallocated: applied, refunded.
    credit: String,
    /// An OPEN invoice: takes part of `credit`.
    to_apply: String,
    /// An active allocation of `credit`: removed.
    allocation: String,
    /// An unallocated payment: voided, then updated.
    to_void: String,
    /// An OPEN invoice: credited.
    to_credit: String,
    /// An issued credit note: voided.
    credit_note: String,
    /// A payment method: updated, archived, then restored.
    method: String,
}

async fn records(app: &TestApp) -> Records {
    let seed = app.seed().await;
    let admin = app.admin();
    let id = |data: &Value, field: &str| data[field]["id"].as_str().unwrap().to_owned();
    let contact = id(
        &admin.ok(r#"mutation { createContact(input: {name: "Harbour Insurance"}) { id } }"#, json!({})).await,
        "createContact",
    );
    let custom_rate = id(
        &admin.ok(r#"mutation { createTaxRate(input: {name: "Levy", percent: "5"}) { id } }"#, json!({})).await,
        "createTaxRate",
    );
    let archived_rate = id(
        &admin.ok(r#"mutation { createTaxRate(input: {name: "Old levy", percent: "2.5"}) { id } }"#, json!({})).await,
        "createTaxRate",
    );
    admin.ok("mutation($id: ID!) { archiveTaxRate(id: $id) { id } }", json!({"id": archived_rate})).await;
    let line = json!([{"description": "Consultation", "unitPrice": "80.00"}]);
    let draft = app.draft_invoice(&seed, line.clone()).await["id"].as_str().unwrap().to_owned();
    let spare_draft = app.draft_invoice(&seed, line).await["id"].as_str().unwrap().to_owned();
    let open = app.open_invoice(&seed, "120.00").await["id"].as_str().unwrap().to_owned();
    let open_to_void = app.open_invoice(&seed, "60.00").await["id"].as_str().unwrap().to_owned();
    let methods = admin.ok("{ paymentMethods { id name } }", json!({})).await;
    let cash = methods["paymentMethods"].as_array().unwrap().iter().find(|m| m["name"] == "Cash").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let record = |amount: &str| {
        json!({"input": {"clientId": seed.client, "locationId": seed.location, "methodId": cash, "amount": amount}, "key": new_key()})
    };
    let record_query = "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id } } }";
    let credit = id(&admin.ok(record_query, record("100.00")).await["recordPayment"], "payment");
    let to_void = id(&admin.ok(record_query, record("15.00")).await["recordPayment"], "payment");
    let to_pay = app.open_invoice(&seed, "40.00").await["id"].as_str().unwrap().to_owned();
    let to_apply = app.open_invoice(&seed, "50.00").await["id"].as_str().unwrap().to_owned();
    let allocation_target = app.open_invoice(&seed, "30.00").await["id"].as_str().unwrap().to_owned();
    let allocation = id(
        &admin
            .ok(
                "mutation($p: ID!, $i: ID!, $key: String!) { applyPayment(id: $p, invoiceId: $i, amount: \"30.00\", idempotencyKey: $key) { allocation { id } } }",
                json!({"p": credit, "i": allocation_target, "key": new_key()}),
            )
            .await["applyPayment"],
        "allocation",
    );
    let to_credit = app.open_invoice(&seed, "90.00").await["id"].as_str().unwrap().to_owned();
    let credited = app.open_invoice(&seed, "70.00").await["id"].as_str().unwrap().to_owned();
    let credit_note = id(
        &admin
            .ok(
                "mutation($i: ID!, $key: String!) { issueCreditNote(invoiceId: $i, idempotencyKey: $key,
                    input: {reason: \"Missed appointment waived\", lines: [{lineIndex: 0, amount: \"20.00\"}]}) { creditNote { id } } }",
                json!({"i": credited, "key": new_key()}),
            )
            .await["issueCreditNote"],
        "creditNote",
    );
    let method = id(
        &admin
            .ok(r#"mutation { createPaymentMethod(input: {name: "Bank cheque", type: CHEQUE, plugin: "manual"}) { id } }"#, json!({}))
            .await,
        "createPaymentMethod",
    );
    // installPlugin loads a library placed in the plugin directory by the operator.
    crate::plugins::copy_library(&app.plugin_dir, crate::plugins::CARD_SIM);
    Records {
        seed,
        contact,
        custom_rate,
        archived_rate,
        draft,
        spare_draft,
        open,
        open_to_void,
        cash,
        to_pay,
        credit,
        to_apply,
        allocation,
        to_void,
        to_credit,
        credit_note,
        method,
    }
}

/// One call of a mutation, and the lowest role that may make it (A2).
struct Case {
    name: &'static str,
    needs: Role,
    query: &'static str,
    variables: Value,
}

/// Every mutation of the schema once, with valid input naming `r`'s records, in an order in
/// which all of them succeed for a caller with the role.
fn mutation_cases(r: &Records) -> Vec<Case> {
    let invoice_input = json!({
        "clientId": r.seed.client,
        "locationId": r.seed.location,
        "lines": [{"description": "Follow-up", "unitPrice": "55.00", "taxRateId": r.seed.gst}],
    });
    let case = |name, needs, query, variables| Case { name, needs, query, variables };
    vec![
        case(
            "updateSettings",
            Role::Admin,
            r#"mutation { updateSettings(input: {paymentTermsDays: 45, timezone: "Australia/Perth"}) { paymentTermsDays } }"#,
            json!({}),
        ),
        case("createClient", Role::Billing, r#"mutation { createClient(input: {name: "Bo Client"}) { id } }"#, json!({})),
        case(
            "updateClient",
            Role::Billing,
            r#"mutation($id: ID!) { updateClient(id: $id, input: {name: "Ann Renamed"}) { id } }"#,
            json!({"id": r.seed.client}),
        ),
        case("createContact", Role::Billing, r#"mutation { createContact(input: {name: "Bo Contact"}) { id } }"#, json!({})),
        case(
            "updateContact",
            Role::Billing,
            r#"mutation($id: ID!) { updateContact(id: $id, input: {name: "Harbour Renamed"}) { id } }"#,
            json!({"id": r.contact}),
        ),
        case("createLocation", Role::Admin, r#"mutation { createLocation(input: {name: "Second Clinic"}) { id } }"#, json!({})),
        case(
            "updateLocation",
            Role::Admin,
            r#"mutation($id: ID!) { updateLocation(id: $id, input: {name: "Renamed Clinic"}) { id } }"#,
            json!({"id": r.seed.location}),
        ),
        case(
            "createTaxRate",
            Role::Admin,
            r#"mutation { createTaxRate(input: {name: "New levy", percent: "7"}) { id } }"#,
            json!({}),
        ),
        case(
            "updateTaxRate",
            Role::Admin,
            r#"mutation($id: ID!) { updateTaxRate(id: $id, input: {name: "Levy renamed", percent: "6"}) { id } }"#,
            json!({"id": r.custom_rate}),
        ),
        case(
            "archiveTaxRate",
            Role::Admin,
            "mutation($id: ID!) { archiveTaxRate(id: $id) { id } }",
            json!({"id": r.custom_rate}),
        ),
        case(
            "restoreTaxRate",
            Role::Admin,
            "mutation($id: ID!) { restoreTaxRate(id: $id) { id } }",
            json!({"id": r.archived_rate}),
        ),
        case(
            "createInvoice",
            Role::Billing,
            "mutation($input: InvoiceInput!, $key: String!) { createInvoice(input: $input, idempotencyKey: $key) { invoice { id } } }",
            json!({"input": invoice_input, "key": new_key()}),
        ),
        case(
            "updateInvoice",
            Role::Billing,
            "mutation($id: ID!, $input: InvoiceInput!, $key: String!) { updateInvoice(id: $id, input: $input, idempotencyKey: $key) { invoice { id } } }",
            json!({"id": r.draft, "input": invoice_input, "key": new_key()}),
        ),
        case(
            "finalizeInvoice",
            Role::Billing,
            "mutation($id: ID!, $key: String!) { finalizeInvoice(id: $id, idempotencyKey: $key) { invoice { id } } }",
            json!({"id": r.draft, "key": new_key()}),
        ),
        case(
            "revertInvoiceToDraft",
            Role::Billing,
            "mutation($id: ID!, $key: String!) { revertInvoiceToDraft(id: $id, idempotencyKey: $key) { invoice { id } } }",
            json!({"id": r.open, "key": new_key()}),
        ),
        case(
            "voidInvoice",
            Role::Billing,
            "mutation($id: ID!, $key: String!) { voidInvoice(id: $id, reason: \"Entered twice\", idempotencyKey: $key) { invoice { id } } }",
            json!({"id": r.open_to_void, "key": new_key()}),
        ),
        case(
            "deleteInvoice",
            Role::Billing,
            "mutation($id: ID!, $key: String!) { deleteInvoice(id: $id, idempotencyKey: $key) { deletedInvoiceId } }",
            json!({"id": r.spare_draft, "key": new_key()}),
        ),
        case(
            "recordPayment",
            Role::Billing,
            "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id } } }",
            json!({"input": {"clientId": r.seed.client, "locationId": r.seed.location, "methodId": r.cash, "amount": "12.00"}, "key": new_key()}),
        ),
        case(
            "payInvoice",
            Role::Billing,
            "mutation($id: ID!, $m: ID!, $key: String!) { payInvoice(id: $id, input: {methodId: $m}, idempotencyKey: $key) { payment { id } } }",
            json!({"id": r.to_pay, "m": r.cash, "key": new_key()}),
        ),
        case(
            "applyPayment",
            Role::Billing,
            "mutation($p: ID!, $i: ID!, $key: String!) { applyPayment(id: $p, invoiceId: $i, amount: \"10.00\", idempotencyKey: $key) { allocation { id } } }",
            json!({"p": r.credit, "i": r.to_apply, "key": new_key()}),
        ),
        case(
            "removeAllocation",
            Role::Billing,
            "mutation($a: ID!, $key: String!) { removeAllocation(id: $a, idempotencyKey: $key) { allocation { id } } }",
            json!({"a": r.allocation, "key": new_key()}),
        ),
        case(
            "refundPayment",
            Role::Billing,
            "mutation($p: ID!, $key: String!) { refundPayment(id: $p, input: {amount: \"5.00\"}, idempotencyKey: $key) { refund { id } } }",
            json!({"p": r.credit, "key": new_key()}),
        ),
        case(
            "voidPayment",
            Role::Billing,
            "mutation($p: ID!, $key: String!) { voidPayment(id: $p, reason: \"Entered twice\", idempotencyKey: $key) { payment { id } } }",
            json!({"p": r.to_void, "key": new_key()}),
        ),
        case(
            "updatePayment",
            Role::Billing,
            "mutation($p: ID!, $key: String!) { updatePayment(id: $p, description: \"Paid at reception\", idempotencyKey: $key) { payment { id } } }",
            json!({"p": r.credit, "key": new_key()}),
        ),
        case(
            "issueCreditNote",
            Role::Billing,
            "mutation($i: ID!, $key: String!) { issueCreditNote(invoiceId: $i, idempotencyKey: $key,
                input: {reason: \"Goodwill\", lines: [{lineIndex: 0, amount: \"10.00\"}]}) { creditNote { id } } }",
            json!({"i": r.to_credit, "key": new_key()}),
        ),
        case(
            "voidCreditNote",
            Role::Billing,
            "mutation($c: ID!, $key: String!) { voidCreditNote(id: $c, idempotencyKey: $key) { creditNote { id } } }",
            json!({"c": r.credit_note, "key": new_key()}),
        ),
        case(
            "installPlugin",
            Role::Admin,
            "mutation($file: String!) { installPlugin(file: $file) { id } }",
            json!({"file": crate::plugins::CARD_SIM}),
        ),
        case(
            "createPaymentMethod",
            Role::Admin,
            r#"mutation { createPaymentMethod(input: {name: "Gift voucher", type: OTHER, plugin: "manual"}) { id } }"#,
            json!({}),
        ),
        case(
            "updatePaymentMethod",
            Role::Admin,
            r#"mutation($id: ID!) { updatePaymentMethod(id: $id, input: {name: "Bank cheque (old)"}) { id } }"#,
            json!({"id": r.method}),
        ),
        case(
            "archivePaymentMethod",
            Role::Admin,
            "mutation($id: ID!) { archivePaymentMethod(id: $id) { id } }",
            json!({"id": r.method}),
        ),
        case(
            "restorePaymentMethod",
            Role::Admin,
            "mutation($id: ID!) { restorePaymentMethod(id: $id) { id } }",
            json!({"id": r.method}),
        ),
    ]
}

/// Everything a tenant holds that the mutations above could change, read by `caller`.
async fn snapshot(caller: &Caller<'_>) -> Value {
    caller
        .ok(
            "{ settings { currency taxMode paymentTermsDays nextInvoiceNumber timezone }
               clients(first: 50) { totalCount edges { node { id name email phone } } }
               contacts(first: 50) { totalCount edges { node { id name email phone } } }
               locations { id name address }
               taxRates(includeArchived: true) { id name percent system archived }
               invoices(first: 50) { totalCount edges { node { id number status updatedAt total { amount } lines { description } } } }
               auditEvents(first: 1) { totalCount } }",
            json!({}),
        )
        .await
}

fn assert_forbidden(response: &Gql, case: &Case, role: &str) {
    assert_eq!(
        response.error_code(),
        Some("FORBIDDEN"),
        "{role} may not run {} (it needs {}): {:#}",
        case.name,
        case.needs,
        response.body
    );
    assert!(
        response.data().is_null() || response.data()[case.name].is_null(),
        "{role} {} returned data: {:#}",
        case.name,
        response.body
    );
}

// ---------------------------------------------------------------------------------------------
// A2: roles
// ---------------------------------------------------------------------------------------------

/// The role matrix below must name every mutation the schema has, no more, no fewer.
#[tokio::test]
async fn a2_role_matrix_covers_every_mutation_of_the_schema() {
    let app = TestApp::spawn().await;
    let data = app.viewer().ok("{ __schema { mutationType { fields { name } } } }", json!({})).await;
    let mut in_schema: Vec<String> = data["__schema"]["mutationType"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    in_schema.sort();
    let dummy = Records {
        seed: Seed { client: "c".into(), location: "l".into(), gst: "g".into() },
        contact: "x".into(),
        custom_rate: "x".into(),
        archived_rate: "x".into(),
        draft: "x".into(),
        spare_draft: "x".into(),
        open: "x".into(),
        open_to_void: "x".into(),
        cash: "x".into(),
        to_pay: "x".into(),
        credit: "x".into(),
        to_apply: "x".into(),
        allocation: "x".into(),
        to_void: "x".into(),
        to_credit: "x".into(),
        credit_note: "x".into(),
        method: "x".into(),
    };
    let mut in_matrix: Vec<String> = mutation_cases(&dummy).iter().map(|c| c.name.to_owned()).collect();
    in_matrix.sort();
    assert_eq!(in_matrix, in_schema, "tests/api/auth.rs mutation_cases must cover every mutation of the schema");
}

#[tokio::test]
async fn a2_viewer_may_run_every_query() {
    let app = TestApp::spawn().await;
    let r = records(&app).await;
    let viewer = app.viewer();
    let data = viewer
        .ok(
            "query($client: ID!, $contact: ID!, $invoice: ID!, $record: String) {
               viewer { tenant role }
               settings { currency }
               limits { pageSizeMax }
               client(id: $client) { name }
               clients { totalCount }
               contact(id: $contact) { name }
               contacts { totalCount }
               locations { name }
               taxRates(includeArchived: true) { name }
               invoice(id: $invoice) { status }
               invoices { totalCount }
               auditEvents(recordId: $record) { totalCount }
               payments { totalCount }
               refunds { totalCount }
               allocations { totalCount }
               creditNotes { totalCount } }",
            json!({"client": r.seed.client, "contact": r.contact, "invoice": r.open, "record": format!("invoice:{}", r.open)}),
        )
        .await;
    assert_eq!(data["viewer"], json!({"tenant": app.tenant, "role": "VIEWER"}));
    assert_eq!(data["client"]["name"], "Ann Lee");
    assert_eq!(data["contact"]["name"], "Harbour Insurance");
    assert_eq!(data["invoice"]["status"], "OPEN");
    assert_eq!(data["clients"]["totalCount"], 1);
    assert_eq!(data["contacts"]["totalCount"], 1);
    assert_eq!(data["invoices"]["totalCount"], 9);
    assert!(data["auditEvents"]["totalCount"].as_i64().unwrap() >= 1, "{data:#}");
    for list in ["payments", "refunds", "allocations", "creditNotes"] {
        assert!(data[list]["totalCount"].is_i64(), "{list}: {data:#}");
    }
    assert!(data["taxRates"].as_array().unwrap().len() >= 3, "{data:#}");
    assert_eq!(data["locations"], json!([{"name": "Main St Clinic"}]));
    assert!(data["limits"]["pageSizeMax"].as_i64().unwrap() > 0);
}

/// A2: VIEWER reads only: every mutation is FORBIDDEN and changes nothing, not even the
/// idempotency key it carried.
#[tokio::test]
async fn a2_viewer_may_not_run_any_mutation() {
    let app = TestApp::spawn().await;
    let r = records(&app).await;
    let admin = app.admin();
    let viewer = app.viewer();
    let before = snapshot(&admin).await;
    let cases = mutation_cases(&r);
    for case in &cases {
        let response = viewer.post(case.query, case.variables.clone()).await;
        assert_forbidden(&response, case, "VIEWER");
        assert_eq!(snapshot(&admin).await, before, "VIEWER's refused {} changed nothing", case.name);
    }
    // The key of the refused createInvoice was not recorded: BILLING can use it for other input.
    let create = cases.iter().find(|c| c.name == "createInvoice").unwrap();
    let mut variables = create.variables.clone();
    variables["input"]["lines"][0]["unitPrice"] = json!("99.00");
    app.billing().ok(create.query, variables).await;
}

/// A2: BILLING creates and changes clients, contacts and invoices; settings, locations and tax
/// rates are FORBIDDEN to it and stay as they were.
#[tokio::test]
async fn a2_billing_may_not_run_admin_mutations() {
    let app = TestApp::spawn().await;
    let r = records(&app).await;
    let admin = app.admin();
    let billing = app.billing();
    let before = snapshot(&admin).await;
    let cases = mutation_cases(&r);
    let (admin_only, billing_cases): (Vec<&Case>, Vec<&Case>) = cases.iter().partition(|c| c.needs == Role::Admin);
    assert_eq!(
        admin_only.iter().map(|c| c.name).collect::<Vec<_>>(),
        [
            "updateSettings",
            "createLocation",
            "updateLocation",
            "createTaxRate",
            "updateTaxRate",
            "archiveTaxRate",
            "restoreTaxRate",
            "installPlugin",
            "createPaymentMethod",
            "updatePaymentMethod",
            "archivePaymentMethod",
            "restorePaymentMethod"
        ]
    );
    for case in &admin_only {
        let response = billing.post(case.query, case.variables.clone()).await;
        assert_forbidden(&response, case, "BILLING");
        assert_eq!(snapshot(&admin).await, before, "BILLING's refused {} changed nothing", case.name);
    }
    for case in &billing_cases {
        let response = billing.post(case.query, case.variables.clone()).await;
        assert!(response.body.get("errors").is_none(), "BILLING may run {}: {:#}", case.name, response.body);
        assert!(!answered(response.data(), case.name).is_null(), "BILLING {}: {:#}", case.name, response.body);
    }
}

#[tokio::test]
async fn a2_admin_may_run_every_mutation() {
    let app = TestApp::spawn().await;
    let r = records(&app).await;
    let admin = app.admin();
    let events_before = snapshot(&admin).await["auditEvents"]["totalCount"].as_i64().unwrap();
    let cases = mutation_cases(&r);
    for case in &cases {
        let response = admin.post(case.query, case.variables.clone()).await;
        assert!(response.body.get("errors").is_none(), "ADMIN may run {}: {:#}", case.name, response.body);
        assert!(!answered(response.data(), case.name).is_null(), "ADMIN {}: {:#}", case.name, response.body);
    }
    let after = snapshot(&admin).await;
    assert_eq!(after["settings"]["paymentTermsDays"], 45, "updateSettings took effect");
    assert!(
        after["auditEvents"]["totalCount"].as_i64().unwrap() >= events_before + cases.len() as i64,
        "every mutation left an audit event: {after:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// A3: tenants
// ---------------------------------------------------------------------------------------------

/// A3: tenant B's queries never show tenant A's records: by id they are null, lists are empty.
#[tokio::test]
async fn a3_other_tenants_records_are_invisible() {
    let app = TestApp::spawn().await;
    let r = records(&app).await;
    let tenant_b = format!("b{}", uuid::Uuid::new_v4().simple());
    let rates_a: Vec<Value> =
        snapshot(&app.admin()).await["taxRates"].as_array().unwrap().iter().map(|t| t["id"].clone()).collect();
    for role in [Role::Viewer, Role::Billing, Role::Admin] {
        let b = app.with_token(Some(app.token_for(&tenant_b, role)));
        let data = b
            .ok(
                "query($client: ID!, $contact: ID!, $open: ID!, $draft: ID!, $record: String) {
                   client(id: $client) { id name }
                   contact(id: $contact) { id name }
                   open: invoice(id: $open) { id status }
                   draft: invoice(id: $draft) { id status }
                   clients { totalCount edges { node { id } } }
                   contacts { totalCount edges { node { id } } }
                   invoices { totalCount edges { node { id } } }
                   byClient: invoices(filter: {clientId: $client}) { totalCount }
                   locations { id }
                   taxRates(includeArchived: true) { id }
                   auditEvents { totalCount }
                   recordEvents: auditEvents(recordId: $record) { totalCount }
                   payments { totalCount }
                   refunds { totalCount }
                   allocations { totalCount }
                   creditNotes { totalCount } }",
                json!({
                    "client": r.seed.client, "contact": r.contact, "open": r.open, "draft": r.draft,
                    "record": format!("invoice:{}", r.open),
                }),
            )
            .await;
        let why = format!("tenant B with {role}");
        for field in ["client", "contact", "open", "draft"] {
            assert!(data[field].is_null(), "{why}: A's {field} is not visible: {data:#}");
        }
        for field in ["clients", "contacts", "invoices", "byClient", "auditEvents", "recordEvents", "payments", "refunds", "allocations", "creditNotes"] {
            assert_eq!(data[field]["totalCount"], 0, "{why}: A's {field} are not listed: {data:#}");
        }
        assert_eq!(data["locations"], json!([]), "{why}: A's location is not listed");
        for rate in data["taxRates"].as_array().unwrap() {
            assert!(!rates_a.contains(&rate["id"]), "{why}: A's tax rate {rate} is not listed");
        }
    }
}

/// A3: every mutation of tenant B naming one of tenant A's records fails with NOT_FOUND (never
/// FORBIDDEN), exactly as for an id that exists nowhere, and A's records stay as they were.
#[tokio::test]
async fn a3_other_tenants_records_are_not_found_by_mutations() {
    let app = TestApp::spawn().await;
    let r = records(&app).await;
    let admin_a = app.admin();
    let before = snapshot(&admin_a).await;
    let tenant_b = format!("b{}", uuid::Uuid::new_v4().simple());
    let admin_b = app.with_token(Some(app.token_for(&tenant_b, Role::Admin)));
    let billing_b = app.with_token(Some(app.token_for(&tenant_b, Role::Billing)));

    let cases = mutation_cases(&r);
    // The variables that name one of A's records, in the order the server looks them up.
    const RECORD_VARIABLES: [&str; 5] = ["id", "p", "a", "c", "i"];
    let record_variable = |case: &Case| RECORD_VARIABLES.into_iter().find(|name| case.variables.get(*name).is_some());
    let targeted: Vec<&Case> = cases.iter().filter(|c| record_variable(c).is_some()).collect();
    assert_eq!(
        targeted.iter().map(|c| c.name).collect::<Vec<_>>(),
        [
            "updateClient",
            "updateContact",
            "updateLocation",
            "updateTaxRate",
            "archiveTaxRate",
            "restoreTaxRate",
            "updateInvoice",
            "finalizeInvoice",
            "revertInvoiceToDraft",
            "voidInvoice",
            "deleteInvoice",
            "payInvoice",
            "applyPayment",
            "removeAllocation",
            "refundPayment",
            "voidPayment",
            "updatePayment",
            "issueCreditNote",
            "voidCreditNote",
            "updatePaymentMethod",
            "archivePaymentMethod",
            "restorePaymentMethod",
        ],
        "every mutation that names a record"
    );
    for case in &targeted {
        let callers: Vec<(&str, &Caller)> = if case.needs == Role::Admin {
            vec![("ADMIN", &admin_b)]
        } else {
            vec![("BILLING", &billing_b), ("ADMIN", &admin_b)]
        };
        for (role, b) in callers {
            let response = b.post(case.query, case.variables.clone()).await;
            assert_eq!(
                response.error_code(),
                Some("NOT_FOUND"),
                "tenant B ({role}) {} on tenant A's record is NOT_FOUND: {:#}",
                case.name,
                response.body
            );
            let mut missing = case.variables.clone();
            missing[record_variable(case).expect("targeted")] = json!("doesnotexist");
            if missing.get("key").is_some() {
                missing["key"] = json!(new_key());
            }
            let nowhere = b.post(case.query, missing).await;
            assert_eq!(
                (nowhere.error_code(), &nowhere.body["errors"][0]["message"]),
                (response.error_code(), &response.body["errors"][0]["message"]),
                "tenant B ({role}) {}: A's record answers exactly like a record that does not exist",
                case.name
            );
        }
    }

    // Creating with A's records as references: B's own client and location exist.
    let client_b = admin_b.ok(r#"mutation { createClient(input: {name: "B client"}) { id } }"#, json!({})).await["createClient"]
        ["id"]
        .clone();
    let location_b =
        admin_b.ok(r#"mutation { createLocation(input: {name: "B clinic"}) { id } }"#, json!({})).await["createLocation"]["id"]
            .clone();
    let create = "mutation($input: InvoiceInput!, $key: String!) { createInvoice(input: $input, idempotencyKey: $key) { invoice { id } } }";
    let line = json!({"description": "Consult", "unitPrice": "10.00"});
    let inputs = [
        ("A's client and location", json!({"clientId": r.seed.client, "locationId": r.seed.location, "lines": [line]})),
        ("A's client", json!({"clientId": r.seed.client, "locationId": location_b, "lines": [line]})),
        ("A's location", json!({"clientId": client_b, "locationId": r.seed.location, "lines": [line]})),
        (
            "A's contact as bill-to",
            json!({"clientId": client_b, "billToId": r.contact, "locationId": location_b, "lines": [line]}),
        ),
        (
            "A's custom tax rate on a line",
            json!({"clientId": client_b, "locationId": location_b,
                   "lines": [{"description": "Consult", "unitPrice": "10.00", "taxRateId": r.custom_rate}]}),
        ),
    ];
    for (reason, input) in inputs {
        let response = billing_b.post(create, json!({"input": input, "key": new_key()})).await;
        assert_eq!(response.error_code(), Some("NOT_FOUND"), "tenant B creating an invoice with {reason}: {:#}", response.body);
    }
    let b_invoices = billing_b.ok("{ invoices { totalCount } }", json!({})).await;
    assert_eq!(b_invoices["invoices"]["totalCount"], 0, "no invoice was created in B with A's records");

    assert_eq!(snapshot(&admin_a).await, before, "tenant A's records are unchanged by tenant B");
}

/// A3: idempotency keys belong to one tenant: B reusing A's key gets its own new record.
#[tokio::test]
async fn a3_idempotency_keys_are_per_tenant() {
    let app = TestApp::spawn().await;
    let tenant_b = format!("b{}", uuid::Uuid::new_v4().simple());
    let a = app.billing();
    let b = app.with_token(Some(app.token_for(&tenant_b, Role::Billing)));
    let create = "mutation($key: String) { createClient(input: {name: \"Same Name\"}, idempotencyKey: $key) { id name } }";
    let key = json!({"key": "shared-key-1"});

    let in_a = a.ok(create, key.clone()).await["createClient"].clone();
    let in_b = b.ok(create, key.clone()).await["createClient"].clone();
    assert_ne!(in_a["id"], in_b["id"], "B's request with A's key made B's own client");
    assert_eq!(a.ok(create, key.clone()).await["createClient"], in_a, "A's replay still returns A's client");

    let seen_by_b = b
        .ok(
            "query($a: ID!, $b: ID!) { a: client(id: $a) { id } b: client(id: $b) { name } clients { totalCount } }",
            json!({"a": in_a["id"], "b": in_b["id"]}),
        )
        .await;
    assert!(seen_by_b["a"].is_null(), "B does not see A's client: {seen_by_b:#}");
    assert_eq!(seen_by_b["b"]["name"], "Same Name");
    assert_eq!(seen_by_b["clients"]["totalCount"], 1);
    assert_eq!(a.ok("{ clients { totalCount } }", json!({})).await["clients"]["totalCount"], 1);
}
