//! HTTP: routes, bearer-token extraction, request ids, body limits, logs and metrics.
//!
//! /graphql (GET for queries, POST for everything, GET with `Upgrade: websocket` for
//! subscriptions: [`live`]), /graphiql and its assets ([`graphiql`]), /dashboard and its assets
//! ([`dashboard`]), /healthz (no token; checks the database), /metrics (Prometheus; an ADMIN token)
//! and /reports/journal.csv (the journal for Xero, [`journal_csv`]). The tenant
//! and roles of a request come only from its verified token (A1). Around the routes: CORS
//! ([`cors`]), response compression ([`compression`]); automatic persisted queries
//! ([`persisted`]) are resolved by the /graphql handler.
//!
//! Every refusal has the GraphQL error shape and a code (docs/errors.md), whoever makes it: the
//! handlers; poem's router (404 for a path Settle does not serve, 405 with `Allow` for a method a
//! path does not take), whose errors `observe` turns into that shape; and hyper, which answers a
//! URI over 65,534 bytes (414), headers too large (431) or a request it cannot parse (400) by
//! itself, with an empty body that [`parser_refusals`] replaces on the connection.

use std::sync::Arc;
use std::time::Instant;

use poem::http::{Method, StatusCode, header};
use poem::web::Data;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler};

use crate::auth::{Principal, Role, TokenKeys};
use crate::config::Limits;
use crate::error::{AppError, ErrorCode};
use crate::graphql::context::RequestContext;
use crate::graphql::errors::finish_errors;
use crate::graphql::loader::Batches;
use crate::graphql::SettleSchema;
use crate::metrics::Metrics;
use crate::store::Store;

pub mod compression;
pub mod cors;
pub mod dashboard;
pub mod graphiql;
pub mod journal_csv;
pub mod live;
pub mod persisted;
mod parser_refusals;
pub mod xero;

pub use parser_refusals::RefusalAcceptor;

use persisted::PersistedQueries;

/// What the HTTP handlers share.
pub struct HttpState {
    pub schema: SettleSchema,
    pub keys: TokenKeys,
    pub store: Store,
    pub metrics: Metrics,
    pub limits: Limits,
    pub persisted_queries: PersistedQueries,
    /// Origins allowed by CORS; none turns CORS off.
    pub cors_allowed_origins: Vec<String>,
    /// WebSocket connections for subscriptions.
    pub live: live::Live,
}

/// The request id of the request being served, set by [`observe`].
#[derive(Clone)]
struct RequestId(String);

pub fn routes(state: Arc<HttpState>) -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/graphql", get(graphql).post(graphql))
        .at("/graphiql", get(graphiql::page))
        .at("/graphiql/assets/:name", get(graphiql::asset))
        .at("/dashboard", get(dashboard::page))
        .at("/dashboard/assets/:name", get(dashboard::asset))
        .at("/healthz", get(healthz))
        .at("/metrics", get(metrics_endpoint))
        .at("/reports/journal.csv", get(journal_csv::journal_csv))
        // Boxed, so the layers around the routes hold a pointer to a request's future rather than
        // the whole future: a debug build copies a future onto the stack at every layer it passes
        // through, and the tests serve on their own thread's stack.
        .boxed()
        .with(compression::Compression)
        .data(state.clone())
        .around({
            let state = state.clone();
            move |next, request| observe(state.clone(), next, request)
        })
        // Outermost, so every answer carries its CORS headers, poem's own refusals (404, 405)
        // included once `observe` has given them their error body: a page must be able to read
        // why it was refused.
        .with(cors::Cors::new(&state.cors_allowed_origins))
}

/// Gives each request an id (a sane incoming X-Request-Id, or a new one), logs it, and counts it.
async fn observe<E: Endpoint>(state: Arc<HttpState>, next: Arc<E>, mut request: Request) -> poem::Result<Response> {
    let request_id = request
        .header("x-request-id")
        .filter(|id| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(request_id.clone()));
    let route = match request.uri().path() {
        path @ ("/graphql" | "/graphiql" | "/dashboard" | "/healthz" | "/metrics" | "/reports/journal.csv") => path.to_owned(),
        path if path.starts_with("/graphiql/assets/") => "/graphiql".to_owned(),
        path if path.starts_with("/dashboard/assets/") => "/dashboard".to_owned(),
        _ => "other".to_owned(),
    };
    let method = request.method().clone();
    let started = Instant::now();
    let mut response = match next.call(request).await {
        Ok(response) => response.into_response(),
        Err(error) => poem_refusal(error, &route, &request_id, &state.metrics),
    };
    let elapsed = started.elapsed();
    let status = response.status();
    if let Ok(value) = request_id.parse() {
        response.headers_mut().insert("x-request-id", value);
    }
    state.metrics.http_requests.with_label_values(&[&route, &format!("{}xx", status.as_u16() / 100)]).inc();
    state.metrics.http_latency.with_label_values(&[&route]).observe(elapsed.as_secs_f64());
    tracing::info!(request_id = %request_id, %method, route = %route, status = status.as_u16(),
        ms = elapsed.as_secs_f64() * 1000.0, "request");
    Ok(response)
}

fn request_id(request: &Request) -> String {
    request.extensions().get::<RequestId>().map(|id| id.0.clone()).unwrap_or_default()
}

/// A GraphQL-shaped error response outside the GraphQL engine (auth, body, protocol).
fn error_response(status: StatusCode, error: AppError, request_id: &str, metrics: &Metrics) -> Response {
    let body = error_body(&error, request_id, metrics);
    Response::builder().status(status).content_type("application/json").body(body)
}

/// The JSON body of an error outside the GraphQL engine, counted by code. Also the body of the
/// refusals hyper makes before a request reaches poem ([`parser_refusals`]).
fn error_body(error: &AppError, request_id: &str, metrics: &Metrics) -> String {
    metrics.errors.with_label_values(&[error.code.as_str()]).inc();
    if let Some(cause) = &error.cause {
        tracing::warn!(request_id, code = error.code.as_str(), cause, "request refused");
    }
    serde_json::json!({
        "errors": [{
            "message": error.message,
            "extensions": { "code": error.code.as_str(), "retryable": error.code.retryable(), "requestId": request_id }
        }]
    })
    .to_string()
}

/// Poem's own refusals (a path Settle does not serve, a method a path does not take, ...) as
/// error responses with a code; the status is kept.
fn poem_refusal(error: poem::Error, route: &str, request_id: &str, metrics: &Metrics) -> Response {
    let status = error.status();
    let error = match status {
        StatusCode::NOT_FOUND => AppError::new(
            ErrorCode::NotFound,
            "no such path; Settle serves /graphql, /graphiql, /dashboard, /healthz, /metrics and /reports/journal.csv",
        ),
        StatusCode::METHOD_NOT_ALLOWED if route == "/graphql" => {
            AppError::new(ErrorCode::QueryRejected, "use GET for queries or POST for any operation on /graphql")
        }
        StatusCode::METHOD_NOT_ALLOWED => AppError::new(ErrorCode::QueryRejected, format!("{route} answers GET only")),
        StatusCode::PAYLOAD_TOO_LARGE => AppError::new(ErrorCode::RequestTooLarge, error.to_string()),
        status if status.is_client_error() => AppError::new(ErrorCode::QueryRejected, error.to_string()),
        _ => AppError::internal(error),
    };
    let mut response = error_response(status, error, request_id, metrics);
    if status == StatusCode::METHOD_NOT_ALLOWED {
        let allow = if route == "/graphql" { "GET, POST" } else { "GET" };
        response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
    }
    response
}

/// A1: the bearer token of a request, verified.
fn authenticate(request: &Request, keys: &TokenKeys) -> Result<Principal, AppError> {
    let header = request
        .header(header::AUTHORIZATION)
        .ok_or_else(|| AppError::new(ErrorCode::Unauthenticated, "send a token: Authorization: Bearer <token>"))?;
    keys.verify(bearer_token(header)?)
}

/// The token of an Authorization value `Bearer <token>`; the scheme name is case-insensitive
/// (RFC 9110).
fn bearer_token(authorization: &str) -> Result<&str, AppError> {
    authorization
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| AppError::new(ErrorCode::Unauthenticated, "the Authorization header must be 'Bearer <token>'"))
}

#[handler]
async fn graphql(request: &Request, body: poem::Body, Data(state): Data<&Arc<HttpState>>) -> Response {
    let request_id = request_id(request);
    // Subscriptions: the same path, upgraded to a WebSocket; the token comes later, inside it.
    // (Another upgrade, such as curl's `h2c`, is ignored as HTTP allows.)
    if request.header(header::UPGRADE).is_some_and(|upgrade| upgrade.eq_ignore_ascii_case("websocket")) {
        return live::upgrade(request, state.clone(), request_id);
    }
    let principal = match authenticate(request, &state.keys) {
        Ok(principal) => principal,
        Err(error) => return error_response(StatusCode::UNAUTHORIZED, error, &request_id, &state.metrics),
    };
    let mut graphql_request = match read_graphql_request(request, body, state.limits.body_size_max_bytes).await {
        Ok(graphql_request) => graphql_request,
        Err((status, error)) => return error_response(status, error, &request_id, &state.metrics),
    };
    // A query named by its hash is filled in here, so it meets every check below like any other.
    let to_register = match state.persisted_queries.resolve(&mut graphql_request) {
        Ok(to_register) => to_register,
        // A request for the query, not a failure: some clients turn persisted queries off after a 400.
        Err(error) if error.code == ErrorCode::PersistedQueryNotFound => {
            return error_response(StatusCode::OK, error, &request_id, &state.metrics);
        }
        Err(error) => return error_response(StatusCode::BAD_REQUEST, error, &request_id, &state.metrics),
    };
    if request.method() == Method::GET && is_mutation(&graphql_request.query) {
        let error = AppError::new(ErrorCode::QueryRejected, "mutations must be sent with POST");
        return error_response(StatusCode::BAD_REQUEST, error, &request_id, &state.metrics);
    }
    // A long document costs time to parse and validate before any other limit applies.
    if graphql_request.query.len() > state.limits.query_length_max_bytes {
        let error = AppError::new(
            ErrorCode::QueryRejected,
            format!("the query is longer than {} bytes; use variables and fewer fields", state.limits.query_length_max_bytes),
        );
        return error_response(StatusCode::BAD_REQUEST, error, &request_id, &state.metrics);
    }
    // Nested look-ups are batched per request, each batch started once the rows have all asked.
    let batches = Batches::default();
    let loader = batches.loader(state.store.clone(), principal.tenant.clone());
    let graphql_request =
        graphql_request.data(RequestContext::new(principal, request_id.clone())).data(loader);
    let schema = state.schema.clone();
    let mut response = batches.run(async move { schema.execute(graphql_request).await }).await;
    // A document with thousands of mistakes gets the first few back, not thousands.
    const ERRORS_MAX: usize = 20;
    if response.errors.len() > ERRORS_MAX {
        let more = response.errors.len() - ERRORS_MAX;
        response.errors.truncate(ERRORS_MAX);
        response.errors.push(async_graphql::ServerError::new(format!("... and {more} more errors"), None));
    }
    let codes = finish_errors(&mut response.errors, &request_id);
    for code in &codes {
        state.metrics.errors.with_label_values(&[code.as_str()]).inc();
    }
    // Only a document the engine took is kept: a refused one would only crowd out good ones.
    if let Some(query) = to_register
        && !codes.contains(&ErrorCode::QueryRejected)
    {
        state.persisted_queries.register(query);
    }
    let body = serde_json::to_string(&response).unwrap_or_else(|_| "{}".to_owned());
    Response::builder().content_type("application/json").body(body)
}

/// Whether `query` holds a mutation; GET must not change anything. A query that does not parse
/// is left to the engine to report.
fn is_mutation(query: &str) -> bool {
    async_graphql::parser::parse_query(query).is_ok_and(|document| {
        document.operations.iter().any(|(_, op)| op.node.ty == async_graphql::parser::types::OperationType::Mutation)
    })
}

/// Reads one GraphQL request: GET with query parameters, or POST with a JSON body no larger than
/// the limit. Batches are refused. The query may be left out when `extensions.persistedQuery`
/// names it by hash.
async fn read_graphql_request(
    request: &Request,
    body: poem::Body,
    body_size_max: usize,
) -> Result<async_graphql::Request, (StatusCode, AppError)> {
    let rejected = |message: String| (StatusCode::BAD_REQUEST, AppError::new(ErrorCode::QueryRejected, message));
    if request.method() == Method::GET {
        let query = request.uri().query().unwrap_or_default();
        return async_graphql::http::parse_query_string(query).map_err(|e| rejected(format!("bad query string: {e}")));
    }
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            AppError::new(ErrorCode::RequestTooLarge, format!("the request body is larger than {body_size_max} bytes")),
        )
    };
    if request
        .header(header::CONTENT_LENGTH)
        .and_then(|length| length.parse::<usize>().ok())
        .is_some_and(|length| length > body_size_max)
    {
        return Err(too_large());
    }
    let bytes = body.into_bytes_limit(body_size_max).await.map_err(|_| too_large())?;
    let mut value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| rejected(format!("the body is not JSON: {e}")))?;
    if value.is_array() {
        return Err(rejected("batched requests are not accepted; send one operation per request".into()));
    }
    let by_hash = value.get("query").is_none_or(serde_json::Value::is_null)
        && value.pointer("/extensions/persistedQuery").is_some();
    if !by_hash && !value.get("query").is_some_and(serde_json::Value::is_string) {
        return Err(rejected("the body needs a \"query\" string (or extensions.persistedQuery naming one)".into()));
    }
    if by_hash && let Some(fields) = value.as_object_mut() {
        // Some clients send `"query": null` beside the hash.
        fields.remove("query");
    }
    serde_json::from_value(value).map_err(|e| rejected(format!("the body is not a GraphQL request: {e}")))
}

/// Liveness and readiness: 200 when the database answers, 503 when it does not, or when a newer
/// Settle has upgraded its schema (this process no longer writes). No token needed.
#[handler]
async fn healthz(Data(state): Data<&Arc<HttpState>>) -> Response {
    let unavailable = |database: &str| {
        Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .content_type("application/json")
            .body(format!(r#"{{"status":"unavailable","database":"{database}"}}"#))
    };
    match state.store.ping().await {
        Ok(true) => Response::builder().content_type("application/json").body(r#"{"status":"ok","database":"ok"}"#),
        Ok(false) => unavailable("newer-schema"),
        Err(_) => unavailable("unreachable"),
    }
}

/// Prometheus metrics, for a token with the ADMIN role. They hold counts and timings only, never
/// tenant data.
#[handler]
fn metrics_endpoint(request: &Request, Data(state): Data<&Arc<HttpState>>) -> Response {
    match authorize(request, state, Role::Admin) {
        Ok(_) => Response::builder().content_type("text/plain; version=0.0.4").body(state.metrics.render()),
        Err(refusal) => refusal,
    }
}

/// A1, A2 for a route outside GraphQL: the caller with at least `role`, or the refusal to answer
/// (401 without a token that verifies, 403 below the role).
fn authorize(request: &Request, state: &HttpState, role: Role) -> Result<Principal, Response> {
    authenticate(request, &state.keys).and_then(|principal| principal.require(role).map(|()| principal)).map_err(|error| {
        let status = if error.code == ErrorCode::Forbidden { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
        error_response(status, error, &request_id(request), &state.metrics)
    })
}
