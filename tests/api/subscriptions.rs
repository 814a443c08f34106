//! Live updates (E2) over a real WebSocket to the real server: `subscription { ledgerEvents }` at
//! /graphql in graphql-transport-ws, the token in `connection_init`, the tenant's events after
//! commit and in position order, filters, resuming, a stalled subscriber, caps and refusals.
//!
//! Every subscription starts after a position read first (`afterPosition`), as a client resumes,
//! so a test never races the moment its subscription starts.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use settle::auth::{Role, TenantId, TokenKeys};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::events::{last_position, method, open_invoice, pay, positions, records_after, seed_tenant, types};
use crate::helpers::*;

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) const SUBSCRIPTION: &str = "subscription($after: Int, $types: [LedgerEventType!], $client: ID) {
    ledgerEvents(afterPosition: $after, types: $types, clientId: $client) {
        position auditEventId action events {
            type
            ... on PaymentRecordedEvent { paymentId clientId amount { amount currency } }
            ... on PaymentAllocatedEvent { allocationId paymentId invoiceId amount { amount currency } }
            ... on InvoiceStatusChangedEvent { invoiceId from to }
        }
    }
}";

/// What the server sent: a protocol message, or the close frame (code, reason).
#[derive(Debug)]
enum Frame {
    Json(Value),
    Closed(u16, String),
}

fn ws_url(app: &TestApp) -> String {
    format!("{}/graphql", app.base_url.replacen("http://", "ws://", 1))
}

/// A WebSocket to /graphql asking for `protocol`, which the server must accept.
async fn connect(app: &TestApp, protocol: &str) -> Socket {
    let mut request = ws_url(app).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(protocol).unwrap());
    let (socket, response) = tokio::time::timeout(Duration::from_secs(30), tokio_tungstenite::connect_async(request))
        .await
        .expect("connected in time")
        .expect("the upgrade is accepted");
    assert_eq!(response.headers()["sec-websocket-protocol"], protocol, "the server speaks the protocol asked for");
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket.send(Message::text(message.to_string())).await.expect("the message is sent");
}

/// The next message or the close frame (30 s at most).
async fn receive(socket: &mut Socket) -> Frame {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next()).await.expect("the server answers in time");
        match message {
            Some(Ok(Message::Text(text))) => return Frame::Json(serde_json::from_str(&text).expect("JSON")),
            Some(Ok(Message::Close(frame))) => {
                return match frame {
                    Some(frame) => Frame::Closed(u16::from(frame.code), frame.reason.to_string()),
                    None => Frame::Closed(1005, String::new()),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("unexpected from the server: {other:?}"),
        }
    }
}

/// Connects (graphql-transport-ws) and sends `connection_init` with `payload`; the first answer.
async fn init(app: &TestApp, payload: Value) -> (Socket, Frame) {
    let mut socket = connect(app, "graphql-transport-ws").await;
    send(&mut socket, json!({"type": "connection_init", "payload": payload})).await;
    let answer = receive(&mut socket).await;
    (socket, answer)
}

/// A connection admitted with `token` sent as the Authorization entry.
async fn open_with(app: &TestApp, token: &str) -> Socket {
    let (socket, answer) = init(app, json!({"Authorization": format!("Bearer {token}")})).await;
    match answer {
        Frame::Json(ack) if ack["type"] == "connection_ack" => socket,
        other => panic!("expected connection_ack, got {other:?}"),
    }
}

/// A connection admitted for this app's tenant as VIEWER (the lowest role that may subscribe).
pub(crate) async fn open(app: &TestApp) -> Socket {
    open_with(app, &app.token(Role::Viewer)).await
}

pub(crate) async fn subscribe(socket: &mut Socket, id: &str, query: &str, variables: Value) {
    send(socket, json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}})).await;
}

/// One `next` or `complete` of subscription `id`; messages of other subscriptions are not
/// expected here.
async fn next_of(socket: &mut Socket, id: &str) -> Value {
    match receive(socket).await {
        Frame::Json(message) if message["id"] == id => message,
        other => panic!("expected a message of subscription {id}, got {other:?}"),
    }
}

/// The next record of subscription `id`, which must come without errors.
pub(crate) async fn record(socket: &mut Socket, id: &str) -> Value {
    let message = next_of(socket, id).await;
    assert_eq!(message["type"], "next", "{message:#}");
    assert!(message["payload"]["errors"].is_null(), "{message:#}");
    message["payload"]["data"]["ledgerEvents"].clone()
}

/// The error that ends subscription `id`: its first error's `extensions`, after which the
/// subscription completes.
async fn refusal(socket: &mut Socket, id: &str) -> Value {
    let message = next_of(socket, id).await;
    assert_eq!(message["type"], "next", "{message:#}");
    let extensions = message["payload"]["errors"][0]["extensions"].clone();
    assert!(extensions.is_object(), "an error with extensions: {message:#}");
    let complete = next_of(socket, id).await;
    assert_eq!(complete["type"], "complete", "{complete:#}");
    extensions
}

/// The next `count` records, of whichever subscriptions, as (subscription id, position) sorted by
/// id: which subscriptions are running and what each got.
async fn running(socket: &mut Socket, count: usize) -> Vec<(String, i64)> {
    let mut got = Vec::new();
    for _ in 0..count {
        let message = match receive(socket).await {
            Frame::Json(message) => message,
            other => panic!("expected a record, got {other:?}"),
        };
        assert!(message["payload"]["errors"].is_null(), "{message:#}");
        let position = message["payload"]["data"]["ledgerEvents"]["position"].as_i64().expect("a position");
        got.push((message["id"].as_str().unwrap().to_owned(), position));
    }
    got.sort();
    got
}

/// The close frame, skipping nothing: it must be the next thing the server sends.
async fn closed(socket: &mut Socket) -> (u16, String) {
    match receive(socket).await {
        Frame::Closed(code, reason) => (code, reason),
        other => panic!("expected the connection to close, got {other:?}"),
    }
}

/// The record at `position` of the HTTP list, to compare with what a subscriber got.
fn by_http<'a>(records: &'a [Value], position: i64) -> &'a Value {
    records.iter().find(|record| record["position"] == position).expect("the position is listed")
}

#[tokio::test]
async fn e2_a_subscriber_gets_a_payments_events_after_commit_in_position_order() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = method(&app.viewer(), "Cash").await;
    let first = app.open_invoice(&seed, "100.00").await["id"].as_str().unwrap().to_owned();
    let before = last_position(&app.viewer()).await;

    let mut socket = open(&app).await;
    subscribe(&mut socket, "1", SUBSCRIPTION, json!({"after": before})).await;
    let part = pay(&app.billing(), &first, json!({"methodId": cash, "amount": "40.00"}), new_key()).await;
    assert!(part.body["errors"].is_null(), "{:#}", part.body);
    let rest = pay(&app.billing(), &first, json!({"methodId": cash}), new_key()).await;
    assert!(rest.body["errors"].is_null(), "{:#}", rest.body);

    let got = [record(&mut socket, "1").await, record(&mut socket, "1").await];
    assert_eq!(positions(&got), [before + 1, before + 2], "in position order, each once: {got:#?}");
    assert_eq!(types(&got[0]), ["PAYMENT_RECORDED", "PAYMENT_ALLOCATED"], "{got:#?}");
    assert_eq!(types(&got[1]), ["PAYMENT_RECORDED", "PAYMENT_ALLOCATED", "INVOICE_STATUS_CHANGED"], "{got:#?}");
    assert_eq!(got[1]["events"][2]["to"], "PAID");
    assert_eq!(got[0]["events"][0]["paymentId"], part.data()["payInvoice"]["payment"]["id"]);
    assert_eq!(got[0]["events"][1]["invoiceId"], first.as_str());
    assert_eq!(got[0]["events"][1]["amount"], json!({"amount": "40.00", "currency": "AUD"}));
    // The same records as the committed list shows.
    let listed = records_after(&app.viewer(), before).await;
    for record in &got {
        let position = record["position"].as_i64().unwrap();
        assert_eq!(record["auditEventId"], by_http(&listed, position)["auditEventId"], "{record:#}");
        assert_eq!(record["events"], by_http(&listed, position)["events"], "{record:#}");
    }
}

#[tokio::test]
async fn e2_a_subscriber_receives_nothing_of_another_tenant() {
    let app = TestApp::spawn().await;
    let other = format!("{}b", app.tenant);
    let other_admin = app.with_token(Some(app.token_for(&other, Role::Admin)));
    let other_seed = seed_tenant(&other_admin).await;
    let other_invoice = open_invoice(&other_admin, &other_seed, "10.00").await;
    let other_cash = method(&other_admin, "Cash").await;
    let other_before = last_position(&other_admin).await;

    let seed = app.seed().await;
    let invoice = app.open_invoice(&seed, "50.00").await["id"].as_str().unwrap().to_owned();
    let cash = method(&app.viewer(), "Cash").await;

    let mut socket = open_with(&app, &app.token_for(&other, Role::Viewer)).await;
    subscribe(&mut socket, "other", SUBSCRIPTION, json!({"after": other_before})).await;
    // This tenant pays; then the other tenant makes one change, which must be the first (and
    // only) thing its subscriber gets.
    let paid = pay(&app.billing(), &invoice, json!({"methodId": cash}), new_key()).await;
    assert!(paid.body["errors"].is_null(), "{:#}", paid.body);
    let own = pay(&other_admin, &other_invoice, json!({"methodId": other_cash}), new_key()).await;
    assert!(own.body["errors"].is_null(), "{:#}", own.body);

    let got = record(&mut socket, "other").await;
    assert_eq!(got["position"], other_before + 1, "{got:#}");
    assert_eq!(got["events"][0]["paymentId"], own.data()["payInvoice"]["payment"]["id"], "the other tenant's own payment: {got:#}");
}

#[tokio::test]
async fn e1_refused_requests_and_dry_runs_publish_nothing() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = method(&app.viewer(), "Cash").await;
    let invoice = app.open_invoice(&seed, "30.00").await["id"].as_str().unwrap().to_owned();
    let before = last_position(&app.viewer()).await;
    let mut socket = open(&app).await;
    subscribe(&mut socket, "1", SUBSCRIPTION, json!({"after": before})).await;

    let billing = app.billing();
    let zero = pay(&billing, &invoice, json!({"methodId": cash, "amount": "0.00"}), new_key()).await;
    assert_error_code(&zero, "AMOUNT_NOT_POSITIVE");
    let apply = "mutation($i: ID!, $key: String!) { applyPayment(id: \"0190f0a0-0000-7000-8000-000000000000\", invoiceId: $i, amount: \"5.00\", idempotencyKey: $key) { allocation { id } } }";
    billing.fails(apply, json!({"i": invoice, "key": new_key()}), "NOT_FOUND").await;
    let dry = billing
        .ok(
            "mutation($id: ID!, $input: PayInvoiceInput!, $key: String!) { payInvoice(id: $id, input: $input, idempotencyKey: $key, dryRun: true) { payment { id } preview { action } } }",
            json!({"id": invoice, "input": {"methodId": cash}, "key": new_key()}),
        )
        .await;
    assert_eq!(dry["payInvoice"]["preview"]["action"], "payment.pay_invoice", "{dry:#}");
    // A real payment: the first record the subscriber gets.
    let paid = pay(&billing, &invoice, json!({"methodId": cash}), new_key()).await;
    assert!(paid.body["errors"].is_null(), "{:#}", paid.body);

    let got = record(&mut socket, "1").await;
    assert_eq!(got["position"], before + 1, "{got:#}");
    assert_eq!(got["events"][0]["paymentId"], paid.data()["payInvoice"]["payment"]["id"], "{got:#}");
    assert_eq!(got["action"], "payment.pay_invoice");
}

#[tokio::test]
async fn e2_a_subscriber_that_reconnects_after_its_last_position_gets_exactly_what_it_missed() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = method(&app.viewer(), "Cash").await;
    let invoice = app.open_invoice(&seed, "100.00").await["id"].as_str().unwrap().to_owned();
    let billing = app.billing();
    let pay_one = async || {
        let paid = pay(&billing, &invoice, json!({"methodId": cash, "amount": "1.00"}), new_key()).await;
        assert!(paid.body["errors"].is_null(), "{:#}", paid.body);
    };
    let before = last_position(&app.viewer()).await;

    let mut socket = open(&app).await;
    subscribe(&mut socket, "1", SUBSCRIPTION, json!({"after": before})).await;
    pay_one().await;
    pay_one().await;
    let mut got = vec![record(&mut socket, "1").await, record(&mut socket, "1").await];
    let last = got[1]["position"].as_i64().unwrap();
    socket.close(None).await.expect("closed");
    drop(socket);

    // Three payments while away, then reconnect after the last position received.
    for _ in 0..3 {
        pay_one().await;
    }
    let mut socket = open(&app).await;
    subscribe(&mut socket, "again", SUBSCRIPTION, json!({"after": last})).await;
    for _ in 0..3 {
        got.push(record(&mut socket, "again").await);
    }
    // And live again.
    pay_one().await;
    got.push(record(&mut socket, "again").await);

    assert_eq!(positions(&got), (before + 1..=before + 6).collect::<Vec<_>>(), "none missing, none repeated: {got:#?}");
    let listed = records_after(&app.viewer(), before).await;
    assert_eq!(positions(&listed), positions(&got), "what committed is what was delivered");
    for record in &got {
        let position = record["position"].as_i64().unwrap();
        assert_eq!(record["auditEventId"], by_http(&listed, position)["auditEventId"], "{record:#}");
    }
}

#[tokio::test]
async fn e2_a_stalled_subscriber_does_not_slow_payments_and_is_ended_when_it_falls_behind() {
    const BUFFER: u32 = 4;
    const PAYMENTS: i64 = 200;
    let app = TestApp::spawn_with(|settings| settings.limits.subscription_buffer_max = BUFFER).await;
    let seed = app.seed().await;
    let cash = method(&app.viewer(), "Cash").await;
    let invoice = app.open_invoice(&seed, "1000.00").await["id"].as_str().unwrap().to_owned();
    let billing = app.billing();
    let pay_one = async || {
        let started = Instant::now();
        let paid = pay(&billing, &invoice, json!({"methodId": cash, "amount": "1.00"}), new_key()).await;
        assert!(paid.body["errors"].is_null(), "{:#}", paid.body);
        started.elapsed()
    };
    // How long a payment takes here with nobody subscribed.
    let mut alone = Duration::ZERO;
    for _ in 0..20 {
        alone += pay_one().await;
    }
    let alone = alone / 20;

    // A subscriber whose records are large (each about 70 KB: 1,500 aliases of a 36-character id),
    // so that the socket's buffers fill after a few dozen, and which then reads nothing.
    let aliases: String = (0..1500).map(|n| format!("a{n}: auditEventId ")).collect();
    let heavy = format!("subscription($after: Int) {{ ledgerEvents(afterPosition: $after) {{ position {aliases} }} }}");
    let mut stalled = open(&app).await;
    let start = last_position(&app.viewer()).await;
    subscribe(&mut stalled, "stalled", &heavy, json!({"after": start})).await;
    // One record read shows the subscription has caught up with the store and follows live
    // records; from here on it reads nothing.
    pay_one().await;
    let first = next_of(&mut stalled, "stalled").await;
    assert_eq!(first["payload"]["data"]["ledgerEvents"]["position"], start + 1, "{first:#}");
    let before = start + 1;

    let mut with_stalled = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(300);
    for _ in 0..PAYMENTS {
        with_stalled += pay_one().await;
        assert!(Instant::now() < deadline, "payments must not wait for a subscriber");
    }
    let with_stalled = with_stalled / PAYMENTS as u32;
    assert!(
        with_stalled < alone * 5 + Duration::from_millis(20),
        "a stalled subscriber slowed payments: {with_stalled:?} each against {alone:?} with nobody subscribed"
    );

    // Now it reads: what was buffered for it, in order, then SUBSCRIBER_TOO_SLOW; not all of them.
    let mut received = Vec::new();
    let extensions = loop {
        let message = next_of(&mut stalled, "stalled").await;
        assert_eq!(message["type"], "next", "an error comes before the end: {message:#}");
        if !message["payload"]["errors"].is_null() {
            let complete = next_of(&mut stalled, "stalled").await;
            assert_eq!(complete["type"], "complete", "{complete:#}");
            break message["payload"]["errors"][0]["extensions"].clone();
        }
        received.push(message["payload"]["data"]["ledgerEvents"]["position"].as_i64().unwrap());
    };
    assert_eq!(extensions["code"], "SUBSCRIBER_TOO_SLOW", "{extensions:#}");
    assert_eq!(extensions["retryable"], true);
    assert_eq!(received, (before + 1..=before + received.len() as i64).collect::<Vec<_>>(), "in order, without gaps");
    assert!((received.len() as i64) < PAYMENTS, "the subscriber fell behind and was ended early: {} records", received.len());

    // Resuming after the last position received gets exactly the rest.
    let last = received.last().copied().unwrap_or(before);
    subscribe(&mut stalled, "resumed", SUBSCRIPTION, json!({"after": last})).await;
    for position in last + 1..=before + PAYMENTS {
        assert_eq!(record(&mut stalled, "resumed").await["position"], position);
    }
}

#[tokio::test]
async fn e2_subscriptions_filter_by_kind_and_by_client() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = method(&app.viewer(), "Cash").await;
    let other = app.admin().ok("mutation { createClient(input: {name: \"Bo Chen\"}) { id } }", json!({})).await["createClient"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_seed = (other.clone(), seed.location.clone());
    let billing = app.billing();
    let ann_invoice = app.open_invoice(&seed, "50.00").await["id"].as_str().unwrap().to_owned();
    let bo_first = open_invoice(&billing, &other_seed, "20.00").await;
    let bo_second = open_invoice(&billing, &other_seed, "20.00").await;
    let before = last_position(&app.viewer()).await;

    let mut socket = open(&app).await;
    subscribe(&mut socket, "status", SUBSCRIPTION, json!({"after": before, "types": ["INVOICE_STATUS_CHANGED"]})).await;
    subscribe(&mut socket, "bo", SUBSCRIPTION, json!({"after": before, "client": other})).await;
    let paying = [
        (&ann_invoice, Some("20.00")), // Ann, part: no status change
        (&bo_first, None),             // Bo, paid off
        (&ann_invoice, None),          // Ann, paid off
        (&bo_second, None),            // Bo, paid off
    ];
    for (invoice, amount) in paying {
        let mut input = json!({"methodId": cash});
        if let Some(amount) = amount {
            input["amount"] = json!(amount);
        }
        let paid = pay(&billing, invoice, input, new_key()).await;
        assert!(paid.body["errors"].is_null(), "{:#}", paid.body);
    }

    // Each subscription's records come in order; the two are interleaved on the connection.
    let (mut status, mut bo) = (Vec::new(), Vec::new());
    while status.len() < 3 || bo.len() < 2 {
        let message = match receive(&mut socket).await {
            Frame::Json(message) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(message["type"], "next", "{message:#}");
        assert!(message["payload"]["errors"].is_null(), "{message:#}");
        let record = message["payload"]["data"]["ledgerEvents"].clone();
        match message["id"].as_str() {
            Some("status") => status.push(record),
            Some("bo") => bo.push(record),
            other => panic!("unknown subscription {other:?}"),
        }
    }
    assert_eq!(positions(&status), [before + 2, before + 3, before + 4], "changes with a status change: {status:#?}");
    assert!(status.iter().all(|r| types(r).contains(&"INVOICE_STATUS_CHANGED")), "{status:#?}");
    assert_eq!(positions(&bo), [before + 2, before + 4], "Bo's changes only: {bo:#?}");
    assert!(bo.iter().all(|r| r["events"][0]["clientId"] == other.as_str()), "{bo:#?}");
    assert_eq!(types(&bo[0]), ["PAYMENT_RECORDED", "PAYMENT_ALLOCATED", "INVOICE_STATUS_CHANGED"], "delivered whole");

    // Filters and positions that cannot be served are refused, each with its code.
    let last = before + 4;
    let refused = [
        (json!({"after": last, "types": []}), "INVALID_INPUT", "an empty list of types"),
        (json!({"after": last, "client": "0190f0a0-0000-7000-8000-000000000000"}), "NOT_FOUND", "an unknown client"),
        (json!({"after": -1}), "INVALID_INPUT", "a negative position"),
        (json!({"after": last + 1}), "INVALID_INPUT", "a position the practice has not reached"),
    ];
    for (n, (variables, code, why)) in refused.into_iter().enumerate() {
        let id = format!("refused-{n}");
        subscribe(&mut socket, &id, SUBSCRIPTION, variables).await;
        let extensions = refusal(&mut socket, &id).await;
        assert_eq!(extensions["code"], code, "{why}: {extensions:#}");
    }
}

#[tokio::test]
async fn a1_connection_init_without_a_valid_token_is_refused() {
    let app = TestApp::spawn().await;
    let foreign = TokenKeys::hs256(vec![9; 32])
        .mint("intruder", &TenantId::parse(&app.tenant).unwrap(), &[Role::Admin], chrono::Duration::hours(1))
        .unwrap();
    let refused = [
        (Value::Null, "no payload"),
        (json!({}), "no token"),
        (json!({"Authorization": "Bearer not-a-token"}), "a malformed token"),
        (json!({"Authorization": app.token(Role::Viewer)}), "a token without Bearer"),
        (json!({"Authorization": format!("Bearer {foreign}")}), "a token signed with another key"),
        (json!({"token": foreign}), "a bare token signed with another key"),
    ];
    for (payload, why) in refused {
        let (_socket, answer) = init(&app, payload).await;
        match answer {
            Frame::Closed(code, reason) => {
                assert_eq!(code, 4403, "{why}: {reason}");
                assert!(reason.starts_with("UNAUTHENTICATED: "), "{why}: {reason}");
            }
            other => panic!("{why}: expected a 4403 close, got {other:?}"),
        }
    }

    // The other spellings are accepted.
    for payload in [json!({"authorization": format!("Bearer {}", app.token(Role::Viewer))}), json!({"token": app.token(Role::Viewer)})] {
        let (_socket, answer) = init(&app, payload.clone()).await;
        assert!(matches!(&answer, Frame::Json(ack) if ack["type"] == "connection_ack"), "{payload}: {answer:?}");
    }

    // Subscribing before connection_init: the protocol's 4401.
    let mut socket = connect(&app, "graphql-transport-ws").await;
    subscribe(&mut socket, "1", SUBSCRIPTION, json!({})).await;
    assert_eq!(closed(&mut socket).await.0, 4401);

    // The older protocol (subprotocol graphql-ws): a connection_error, then the same close.
    let mut socket = connect(&app, "graphql-ws").await;
    send(&mut socket, json!({"type": "connection_init", "payload": {"Authorization": "Bearer not-a-token"}})).await;
    match receive(&mut socket).await {
        Frame::Json(error) => {
            assert_eq!(error["type"], "connection_error", "{error:#}");
            assert!(error["payload"]["message"].as_str().unwrap().starts_with("UNAUTHENTICATED: "), "{error:#}");
        }
        other => panic!("expected connection_error, got {other:?}"),
    }
    assert_eq!(closed(&mut socket).await.0, 4403);

    // Without a subprotocol the upgrade itself is refused.
    let error = tokio_tungstenite::connect_async(ws_url(&app)).await.expect_err("refused");
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => assert_eq!(response.status(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }

    // A token that expires while connected closes the connection: it verifies until 30 s after
    // its exp, so one that expired 25 s ago is admitted and closed about 5 s later.
    let expiring = app
        .keys
        .mint("test-expiring", &TenantId::parse(&app.tenant).unwrap(), &[Role::Viewer], chrono::Duration::seconds(-25))
        .unwrap();
    let mut socket = open_with(&app, &expiring).await;
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, 4403, "{reason}");
    assert!(reason.contains("expired"), "{reason}");
}

#[tokio::test]
async fn subscriptions_per_connection_and_connections_per_tenant_are_capped() {
    let app = TestApp::spawn_with(|settings| {
        settings.limits.subscriptions_per_connection_max = 2;
        settings.limits.websocket_connections_per_tenant_max = 2;
    })
    .await;
    let limits = app
        .viewer()
        .ok("{ limits { subscriptionsPerConnectionMax websocketConnectionsPerTenantMax subscriptionBufferMax } }", json!({}))
        .await;
    assert_eq!(
        limits["limits"],
        json!({"subscriptionsPerConnectionMax": 2, "websocketConnectionsPerTenantMax": 2, "subscriptionBufferMax": 256}),
        "clients can read the caps"
    );
    let seed = app.seed().await;
    let cash = method(&app.viewer(), "Cash").await;
    let invoice = app.open_invoice(&seed, "10.00").await["id"].as_str().unwrap().to_owned();
    let before = last_position(&app.viewer()).await;

    // Two subscriptions run on one connection; a third is refused, and runs once one completes.
    // Subscriptions start concurrently on the server, so the test first sees both running (each
    // gets the first payment) before it asks for the third.
    let mut socket = open(&app).await;
    subscribe(&mut socket, "1", SUBSCRIPTION, json!({"after": before})).await;
    subscribe(&mut socket, "2", SUBSCRIPTION, json!({"after": before})).await;
    let part = pay(&app.billing(), &invoice, json!({"methodId": cash, "amount": "4.00"}), new_key()).await;
    assert!(part.body["errors"].is_null(), "{:#}", part.body);
    assert_eq!(running(&mut socket, 2).await, [("1".to_owned(), before + 1), ("2".to_owned(), before + 1)]);
    subscribe(&mut socket, "3", SUBSCRIPTION, json!({"after": before})).await;
    let extensions = refusal(&mut socket, "3").await;
    assert_eq!(extensions["code"], "TOO_MANY_SUBSCRIPTIONS", "{extensions:#}");
    assert_eq!(extensions["retryable"], false);
    send(&mut socket, json!({"id": "1", "type": "complete"})).await;
    assert_eq!(next_of(&mut socket, "1").await["type"], "complete");
    subscribe(&mut socket, "4", SUBSCRIPTION, json!({"after": before + 1})).await;
    // Queries and mutations go by HTTP: refused here.
    subscribe(&mut socket, "query", "{ viewer { tenant } }", json!({})).await;
    let extensions = refusal(&mut socket, "query").await;
    assert_eq!(extensions["code"], "QUERY_REJECTED", "{extensions:#}");
    // Both running subscriptions get the next change.
    let paid = pay(&app.billing(), &invoice, json!({"methodId": cash}), new_key()).await;
    assert!(paid.body["errors"].is_null(), "{:#}", paid.body);
    assert_eq!(running(&mut socket, 2).await, [("2".to_owned(), before + 2), ("4".to_owned(), before + 2)]);

    // A second connection of the tenant is admitted, a third refused; another tenant's is not
    // counted against this one.
    let second = open(&app).await;
    let (_third, answer) = init(&app, json!({"Authorization": format!("Bearer {}", app.token(Role::Viewer))})).await;
    match answer {
        Frame::Closed(code, reason) => {
            assert_eq!(code, 4429, "{reason}");
            assert!(reason.starts_with("TOO_MANY_CONNECTIONS: "), "{reason}");
        }
        other => panic!("expected a 4429 close, got {other:?}"),
    }
    let _other_tenant = open_with(&app, &app.token_for(&format!("{}b", app.tenant), Role::Viewer)).await;

    // Closing one makes room again; the server counts it out once its side has finished.
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_socket, answer) = init(&app, json!({"Authorization": format!("Bearer {}", app.token(Role::Viewer))})).await;
        match answer {
            Frame::Json(ack) if ack["type"] == "connection_ack" => break,
            Frame::Closed(4429, _) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("expected a connection once one closed, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_stopping_server_closes_live_connections_so_clients_reconnect_and_resume() {
    let app = TestApp::spawn().await;
    let before = last_position(&app.viewer()).await;
    let mut socket = open(&app).await;
    subscribe(&mut socket, "1", SUBSCRIPTION, json!({"after": before})).await;
    drop(app);
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, 1001, "going away: {reason}");
}

/// GraphiQL's subscriptions carry the token: the page gives its fetcher the WebSocket address,
/// and the pinned GraphiQL bundle sends the headers of its Headers tab as the `connection_init`
/// payload (merged into `wsConnectionParams`), which is what Settle reads. A GraphiQL upgrade that
/// changed this would fail here.
#[tokio::test]
async fn graphiql_sends_its_headers_as_the_connection_init_payload() {
    let app = TestApp::spawn().await;
    let page = app.http.get(app.url("/graphiql")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("subscriptionUrl: subscriptionUrl.href"), "the fetcher knows the WebSocket address");
    assert!(page.contains(r#"defaultHeaders: '{"Authorization": "Bearer <paste the token>"}'"#), "the token goes in the headers");
    let bundle = app.http.get(app.url("/graphiql/assets/graphiql-3.9.0.min.js")).send().await.unwrap().text().await.unwrap();
    assert!(
        bundle.contains("connectionParams:t})") && bundle.contains("e.wsConnectionParams),null==t?void 0:t.headers)"),
        "GraphiQL's WebSocket client gets the request's headers as its connection params"
    );
}

/// The value of the metric line starting with `name` (labels included) on /metrics, 0 when absent.
async fn metric(app: &TestApp, name: &str) -> i64 {
    let body = app.http.get(app.url("/metrics")).bearer_auth(app.token(Role::Admin)).send().await.unwrap().text().await.unwrap();
    body.lines().find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0)
}

/// A connection that never sends `connection_init` is closed with 4408 once its time is up
/// (graphql-transport-ws), and /metrics counts the connections admitted and open, and the closes
/// by code.
#[tokio::test]
async fn a_connection_without_connection_init_is_closed_with_4408_and_metrics_count_connections() {
    let app = TestApp::spawn().await;
    assert_eq!(metric(&app, "settle_websocket_connections ").await, 0);
    let admitted = open(&app).await;
    assert_eq!(metric(&app, "settle_websocket_connections ").await, 1, "an admitted connection is counted");

    let mut silent = connect(&app, "graphql-transport-ws").await;
    let started = Instant::now();
    let (code, reason) = closed(&mut silent).await;
    assert_eq!(code, 4408, "{reason}");
    assert!(started.elapsed() >= Duration::from_secs(9), "closed after the time to initialise, not before: {:?}", started.elapsed());
    assert_eq!(metric(&app, "settle_websocket_closes_total{code=\"4408\"}").await, 1);
    assert_eq!(metric(&app, "settle_websocket_connections ").await, 1, "one never admitted is not counted");

    drop(admitted);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&app, "settle_websocket_connections ").await != 0 {
        assert!(Instant::now() < deadline, "a closed connection is counted out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
