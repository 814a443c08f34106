//! Live updates: GraphQL subscriptions over a WebSocket at /graphql (GET with `Upgrade:
//! websocket`), in the graphql-transport-ws protocol, or the older subscriptions-transport-ws,
//! whichever the client names first in `Sec-WebSocket-Protocol` (`graphql-transport-ws` or
//! `graphql-ws`). async-graphql speaks both; this module admits connections and closes them.
//!
//! - A browser cannot send headers with a WebSocket, so the token comes in the `connection_init`
//!   payload: `{"Authorization": "Bearer <token>"}` (or `authorization`), or `{"token":
//!   "<token>"}`, and is verified as on HTTP (A1). A connection without a valid token, or one
//!   more than its tenant may hold open, is refused: closed with 4403 (UNAUTHENTICATED) or 4429
//!   (TOO_MANY_CONNECTIONS) and the reason "CODE: message" (the older protocol gets a
//!   `connection_error` first). Every role may subscribe: VIEWER reads everything of its
//!   tenant. A connection that sends no `connection_init` within [`INIT_TIMEOUT`] is closed with
//!   4408, and one that subscribes before it with 4401, as graphql-transport-ws asks.
//! - An admitted connection is closed with 4403 when its token expires (when HTTP would start
//!   refusing it), and with 1001 when the server stops: the client reconnects and resumes.
//! - Only subscriptions are served here. Queries and mutations go by HTTP, where every money
//!   change has its request id, logs and metrics; one path for them is easier to reason about.
//!
//! Errors inside the protocol (a refused subscription, SUBSCRIBER_TOO_SLOW) have the same shape
//! as on HTTP: `extensions.code`, `retryable`, `requestId` (the id of the upgrade request).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols, WsMessage};
use async_graphql::{Data, Executor};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use poem::http::{StatusCode, header};
use poem::web::websocket::{Message, WebSocket, WebSocketConfig, WebSocketStream};
use poem::{FromRequest, IntoResponse, Request, Response};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{HttpState, bearer_token, error_response};
use crate::auth::{Principal, TOKEN_LEEWAY_SECONDS, TenantId};
use crate::config::Limits;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::graphql::SettleSchema;
use crate::graphql::context::{ConnectionSubscriptions, RequestContext};
use crate::graphql::errors::finish_errors;
use crate::metrics::Metrics;

/// How long a new connection has to send `connection_init`.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Close codes (graphql-transport-ws where it has one).
const CLOSE_UNAUTHORIZED: u16 = 4401;
const CLOSE_FORBIDDEN: u16 = 4403;
const CLOSE_TOO_MANY: u16 = 4429;
const CLOSE_INIT_TIMEOUT: u16 = 4408;
const CLOSE_GOING_AWAY: u16 = 1001;

/// The WebSocket side of the server: open connections per tenant, and the signal that the server
/// is stopping.
pub struct Live {
    connections: Arc<TenantConnections>,
    stopping: watch::Sender<bool>,
}

impl Live {
    pub fn new(limits: &Limits, metrics: &Metrics) -> Live {
        Live {
            connections: Arc::new(TenantConnections {
                open: Mutex::default(),
                max: limits.websocket_connections_per_tenant_max as usize,
                gauge: metrics.websocket_connections.clone(),
            }),
            stopping: watch::channel(false).0,
        }
    }

    /// Closes every connection (1001) and refuses none after: the server is stopping.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }
}

/// Open connections per tenant, each counted from its admission to its end.
struct TenantConnections {
    open: Mutex<HashMap<TenantId, usize>>,
    max: usize,
    /// Every tenant's connections together, for /metrics.
    gauge: prometheus::IntGauge,
}

/// One admitted connection's place in its tenant's count.
struct Admitted {
    connections: Arc<TenantConnections>,
    tenant: TenantId,
}

impl TenantConnections {
    fn admit(self: &Arc<Self>, tenant: &TenantId) -> AppResult<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(tenant.clone()).or_default();
        if *count >= self.max {
            return Err(AppError::new(
                ErrorCode::TooManyConnections,
                format!("the practice already has {} live connections open, the most it may", self.max),
            ));
        }
        *count += 1;
        self.gauge.inc();
        Ok(Admitted { connections: self.clone(), tenant: tenant.clone() })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.connections.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.connections.gauge.dec();
        if let Some(count) = open.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

/// Answers a request to upgrade /graphql to a WebSocket. Not async, so that the /graphql
/// handler's future stays as small as it was (docs/development.md, the test thread's stack).
pub fn upgrade(request: &Request, state: Arc<HttpState>, request_id: String) -> Response {
    let refuse = |message: &str| {
        error_response(StatusCode::BAD_REQUEST, AppError::new(ErrorCode::QueryRejected, message), &request_id, &state.metrics)
    };
    // poem's extractor is async only in name: it reads headers and takes the connection's upgrade.
    let websocket = futures::FutureExt::now_or_never(WebSocket::from_request_without_body(request)).and_then(Result::ok);
    let Some(websocket) = websocket else {
        return refuse("a WebSocket upgrade is a GET with Connection: upgrade, Upgrade: websocket, Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key");
    };
    let protocol = request
        .header(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|protocols| protocols.split(',').find_map(|protocol| protocol.trim().parse::<WebSocketProtocols>().ok()));
    let Some(protocol) = protocol else {
        return refuse("name the subprotocol graphql-transport-ws (or the older graphql-ws) in Sec-WebSocket-Protocol");
    };
    // No client message is larger than a request body may be.
    let size_max = Some(state.limits.body_size_max_bytes);
    let config = WebSocketConfig::default().max_message_size(size_max).max_frame_size(size_max);
    websocket
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .config(config)
        .on_upgrade(move |socket| serve(state, socket, protocol, request_id))
        .into_response()
}

/// What the connection learnt at `connection_init`.
#[derive(Default)]
struct Session {
    /// Admitted: when the token stops verifying, and the connection's place in its tenant's count.
    admitted: Option<(Instant, Admitted)>,
    /// Refused: the close code and reason.
    refused: Option<(u16, String)>,
}

type SharedSession = Arc<Mutex<Session>>;

fn lock(session: &SharedSession) -> std::sync::MutexGuard<'_, Session> {
    session.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves one connection until either side closes it.
async fn serve(state: Arc<HttpState>, socket: WebSocketStream, protocol: WebSocketProtocols, request_id: String) {
    let (mut sink, incoming) = socket.split();
    let session = SharedSession::default();
    let incoming = incoming
        .take_while(|message| futures::future::ready(message.is_ok()))
        .filter_map(|message| futures::future::ready(message.ok().filter(|m| m.is_text() || m.is_binary())))
        .map(Message::into_bytes);
    let on_init = {
        let (state, session, request_id) = (state.clone(), session.clone(), request_id.clone());
        move |payload: serde_json::Value| async move { init(&state, &session, request_id, &payload) }
    };
    let executor = SubscriptionsOnly {
        schema: state.schema.clone(),
        request_id: request_id.clone().into(),
        metrics: state.metrics.clone(),
        query_length_max: state.limits.query_length_max_bytes,
    };
    let mut outgoing = std::pin::pin!(async_graphql::http::WebSocket::new(executor, incoming, protocol).on_connection_init(on_init));
    let mut stopping = state.live.stopping.subscribe();
    let init_deadline = Instant::now() + INIT_TIMEOUT;
    let close = loop {
        // Until admitted, the connection has INIT_TIMEOUT to send connection_init; then it lasts
        // as long as its token verifies.
        let (deadline, code, reason) = match &lock(&session).admitted {
            Some((expiry, _)) => (*expiry, CLOSE_FORBIDDEN, "UNAUTHENTICATED: the token expired; connect again with a new one"),
            None => (init_deadline, CLOSE_INIT_TIMEOUT, "Connection initialisation timeout"),
        };
        let message = tokio::select! {
            message = outgoing.next() => message,
            () = tokio::time::sleep_until(deadline) => break Some((code, reason.to_owned())),
            _ = stopping.wait_for(|stopping| *stopping) => {
                break Some((CLOSE_GOING_AWAY, "the server is stopping; connect again and resume after your last position".to_owned()));
            }
        };
        let refused = lock(&session).refused.clone();
        let text = match message {
            Some(WsMessage::Text(text)) => text,
            // async-graphql closes a refused connection with 1002 (the refusal says how), and one
            // that subscribes before connection_init with 1011 (graphql-transport-ws says 4401).
            Some(WsMessage::Close(code, reason)) => {
                let unadmitted = code == 1011 && lock(&session).admitted.is_none();
                let close = if unadmitted { (CLOSE_UNAUTHORIZED, "Unauthorized: send connection_init first".to_owned()) } else { (code, reason) };
                break refused.or(Some(close));
            }
            // The client went away, or the older protocol ended a refused connection.
            None => break refused,
        };
        if sink.send(Message::text(text)).await.is_err() {
            break None;
        }
    };
    if let Some((code, reason)) = close {
        state.metrics.websocket_closes.with_label_values(&[&code.to_string()]).inc();
        let _ = sink.send(Message::close_with(code, reason)).await;
    }
    let _ = sink.close().await;
}

/// `connection_init`: verifies the token and admits the connection, or refuses it.
fn init(state: &HttpState, session: &SharedSession, request_id: String, payload: &serde_json::Value) -> async_graphql::Result<Data> {
    let admitted = token_of(payload)
        .and_then(|token| state.keys.verify(token))
        .and_then(|principal| state.live.connections.admit(&principal.tenant).map(|admitted| (principal, admitted)));
    match admitted {
        Ok((principal, admitted)) => {
            lock(session).admitted = Some((expiry(&principal), admitted));
            let mut data = Data::default();
            data.insert(RequestContext::new(principal, request_id));
            data.insert(ConnectionSubscriptions::default());
            Ok(data)
        }
        Err(error) => {
            state.metrics.errors.with_label_values(&[error.code.as_str()]).inc();
            let code = if error.code == ErrorCode::TooManyConnections { CLOSE_TOO_MANY } else { CLOSE_FORBIDDEN };
            let reason = close_reason(&error);
            lock(session).refused = Some((code, reason.clone()));
            Err(async_graphql::Error::new(reason))
        }
    }
}

/// The token of a `connection_init` payload: `Authorization` (or `authorization`) as the HTTP
/// header, `Bearer <token>`, or the bare `token`.
fn token_of(payload: &serde_json::Value) -> AppResult<&str> {
    let missing = || {
        AppError::new(ErrorCode::Unauthenticated, r#"send the token in connection_init: {"Authorization": "Bearer <token>"}"#)
    };
    if let Some(authorization) = payload.get("Authorization").or_else(|| payload.get("authorization")) {
        return authorization.as_str().ok_or_else(missing).and_then(bearer_token);
    }
    payload.get("token").and_then(serde_json::Value::as_str).map(str::trim).filter(|token| !token.is_empty()).ok_or_else(missing)
}

/// When the principal's token stops verifying.
fn expiry(principal: &Principal) -> Instant {
    let now = chrono::Utc::now().timestamp();
    let left = (principal.expires_at + TOKEN_LEEWAY_SECONDS as i64 - now).max(0) as u64;
    Instant::now() + Duration::from_secs(left)
}

/// "CODE: message", cut to the 123 bytes a close frame can carry.
fn close_reason(error: &AppError) -> String {
    let mut reason = format!("{}: {}", error.code, error.message);
    if reason.len() > 123 {
        let mut end = 123;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// The schema as a WebSocket serves it: subscriptions only, no longer than HTTP takes, and every
/// error with its code, `retryable` and request id.
#[derive(Clone)]
struct SubscriptionsOnly {
    schema: SettleSchema,
    request_id: Arc<str>,
    metrics: Metrics,
    query_length_max: usize,
}

impl SubscriptionsOnly {
    fn refusal(&self, query: &str) -> Option<AppError> {
        if query.len() > self.query_length_max {
            let message = format!("the query is longer than {} bytes; use variables and fewer fields", self.query_length_max);
            return Some(AppError::new(ErrorCode::QueryRejected, message));
        }
        // A document that does not parse is left to the engine to report.
        let other_operation = async_graphql::parser::parse_query(query).is_ok_and(|document| {
            document.operations.iter().any(|(_, op)| op.node.ty != async_graphql::parser::types::OperationType::Subscription)
        });
        other_operation.then(|| {
            AppError::new(ErrorCode::QueryRejected, "a WebSocket takes subscriptions only; send queries and mutations by HTTP to /graphql")
        })
    }
}

impl Executor for SubscriptionsOnly {
    async fn execute(&self, request: async_graphql::Request) -> async_graphql::Response {
        // async-graphql's WebSocket runs everything as a stream; this is never called.
        self.schema.execute(request).await
    }

    fn execute_stream(&self, request: async_graphql::Request, session_data: Option<Arc<Data>>) -> BoxStream<'static, async_graphql::Response> {
        let responses = match self.refusal(&request.query) {
            Some(error) => {
                let mut error = async_graphql::Error::from(error).into_server_error(Default::default());
                error.locations.clear();
                futures::stream::once(futures::future::ready(async_graphql::Response::from_errors(vec![error]))).boxed()
            }
            None => Executor::execute_stream(&self.schema, request, session_data),
        };
        let (request_id, metrics) = (self.request_id.clone(), self.metrics.clone());
        responses
            .map(move |mut response| {
                for code in finish_errors(&mut response.errors, &request_id) {
                    metrics.errors.with_label_values(&[code.as_str()]).inc();
                }
                response
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_authorization_entry_or_token() {
        let cases = [
            (serde_json::json!({"Authorization": "Bearer abc"}), Some("abc")),
            (serde_json::json!({"authorization": "bearer abc "}), Some("abc")),
            (serde_json::json!({"token": "abc"}), Some("abc")),
            (serde_json::json!({"Authorization": "abc"}), None),
            (serde_json::json!({"token": ""}), None),
            (serde_json::json!({"Authorization": 7}), None),
            (serde_json::json!({}), None),
            (serde_json::Value::Null, None),
        ];
        for (payload, token) in cases {
            match token {
                Some(token) => assert_eq!(token_of(&payload).unwrap(), token, "{payload}"),
                None => assert_eq!(token_of(&payload).unwrap_err().code, ErrorCode::Unauthenticated, "{payload}"),
            }
        }
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let long = AppError::new(ErrorCode::Unauthenticated, "é".repeat(100));
        let reason = close_reason(&long);
        assert!(reason.len() <= 123 && reason.starts_with("UNAUTHENTICATED: é"), "{reason}");
        assert_eq!(close_reason(&AppError::new(ErrorCode::Forbidden, "no")), "FORBIDDEN: no");
    }
}
