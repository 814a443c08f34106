//! The tamper-evident audit log (H1): a practice's audit events form one hash chain, also under
//! concurrent payments; `auditVerify` and `settle audit verify` find an edited, deleted or
//! reordered event (changed straight in the database, behind Settle's back) and a chain cut
//! short at its end; `auditHead` is the last link; the chain goes on across a restart.

use std::path::Path;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::restart::{self, Practice, method_of, open_invoice};

const VERIFY: &str = "{ auditVerify { status checked headSequence headHash pending canonicalFormVersion
    firstBreak { sequence auditEventId problem detail } } auditHead { sequence hash auditEventId at } }";

/// `auditVerify` and `auditHead` once no committed event awaits its place in the chain.
pub(crate) async fn verified(http: &reqwest::Client, url: &str, token: &str) -> Value {
    for _ in 0..100 {
        let data = restart::gql(http, url, token, VERIFY, json!({})).await;
        if data["auditVerify"]["pending"] == 0 {
            return data;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("audit events stay pending");
}

/// `settle audit verify --tenant clinic` on the database under `dir`: exit code and output.
pub(crate) fn cli_verify(dir: &Path) -> (Option<i32>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_settle"))
        .args(["audit", "verify", "--tenant", "clinic", "--data-dir"])
        .arg(dir)
        .env_remove("SETTLE_DATABASE")
        .output()
        .expect("settle runs");
    (output.status.code(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The id of the tenant's audit event at `sequence`, read straight from the database.
async fn event_at(store: &settle::store::Store, sequence: i64) -> Value {
    let mut found = store
        .query(
            "SELECT VALUE record::id(id) FROM audit_event WHERE tenant = 'clinic' AND sequence = $s",
            settle::store::Vars::new().set("s", sequence),
        )
        .await
        .unwrap();
    found.first::<String>(0).unwrap().map_or(Value::Null, Value::from)
}

#[tokio::test]
async fn h1_the_audit_chain_holds_and_every_tampering_is_found() {
    Box::pin(scenario_tampering()).await
}

async fn scenario_tampering() {
    let Practice { dir, http, mut server, token, client, location, methods } = Practice::start().await;
    let url = server.url.clone();
    let cash = method_of(&methods, "Cash");
    // Payments of one invoice and one client at once: their events still form one chain.
    let invoice = open_invoice(&http, &url, &token, &client, &location, 0).await;
    let pay = "mutation($id: ID!, $m: ID!, $key: String!) { payInvoice(id: $id, input: {methodId: $m, amount: \"5.00\"}, idempotencyKey: $key) { payment { id } } }";
    let record = "mutation($c: ID!, $l: ID!, $m: ID!, $key: String!) { recordPayment(idempotencyKey: $key,
        input: {clientId: $c, locationId: $l, methodId: $m, amount: \"7.00\"}) { payment { id } } }";
    let payments = (0..8).map(|i| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        let (invoice, cash, client, location) = (invoice.clone(), cash.clone(), client.clone(), location.clone());
        async move {
            if i % 2 == 0 {
                restart::gql(&http, &url, &token, pay, json!({"id": invoice, "m": cash, "key": format!("pay-{i}")})).await
            } else {
                restart::gql(&http, &url, &token, record, json!({"c": client, "l": location, "m": cash, "key": format!("record-{i}")})).await
            }
        }
    });
    futures::future::join_all(payments).await;
    restart::gql(&http, &url, &token, r#"mutation { createClient(input: {name: "Cy"}) { id } }"#, json!({})).await;

    // 2 set-up events, create and finalize, 8 payments, a client.
    let data = verified(&http, &url, &token).await;
    let verify = &data["auditVerify"];
    assert_eq!((verify["status"].as_str(), verify["checked"].as_i64(), verify["headSequence"].as_i64()), (Some("OK"), Some(13), Some(13)), "{data:#}");
    assert!(verify["firstBreak"].is_null(), "{data:#}");
    assert_eq!(verify["canonicalFormVersion"], 1);
    let head = &data["auditHead"];
    assert_eq!((&head["sequence"], &head["hash"]), (&verify["headSequence"], &verify["headHash"]), "{data:#}");

    // The CLI refuses a database a server holds, and says why.
    let (code, said) = cli_verify(dir.path());
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("held by a running Settle server"), "{said}");
    server.stop("-TERM");

    // The head is the last event's link, as stored.
    let store = restart::open_store(dir.path()).await;
    let mut last = store
        .query("SELECT VALUE chain FROM audit_event WHERE tenant = 'clinic' AND sequence = 13", settle::store::Vars::new())
        .await
        .unwrap();
    assert_eq!(last.first::<String>(0).unwrap().as_deref(), head["hash"].as_str(), "auditHead is the last link");
    assert_eq!(event_at(&store, 13).await, head["auditEventId"]);
    store.close().await;
    let (code, said) = cli_verify(dir.path());
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("13 events checked") && said.contains("ok: the chain holds"), "{said}");

    // Each change behind Settle's back, on a copy of the stopped database: (what, SurrealQL that
    // reads $third and $fourth (the events at sequences 3 and 4), sequence, event, problem).
    let cases: [(&str, &str, i64, &str, &str); 5] = [
        ("a field edited", "UPDATE $third SET reason = 'nothing happened' RETURN NONE", 3, "third", "CONTENT_CHANGED"),
        ("its time moved by a nanosecond", "UPDATE $fourth SET at = at + 1ns RETURN NONE", 4, "fourth", "CONTENT_CHANGED"),
        ("an event deleted", "DELETE $third", 3, "fourth", "SEQUENCE_GAP"),
        ("two events swapped", "UPDATE $third SET sequence = 4 RETURN NONE; UPDATE $fourth SET sequence = 3 RETURN NONE;", 3, "fourth", "LINK_BROKEN"),
        ("the last event deleted", "DELETE audit_event WHERE tenant = 'clinic' AND sequence = 13", 13, "twelfth", "HEAD_MISMATCH"),
    ];
    for (what, sql, sequence, event, problem) in cases {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let store = restart::open_store(copy.path()).await;
        let events = [("third", event_at(&store, 3).await), ("fourth", event_at(&store, 4).await), ("twelfth", event_at(&store, 12).await)];
        let id = |name: &str| events.iter().find(|(n, _)| *n == name).unwrap().1.as_str().unwrap().to_owned();
        let vars = settle::store::Vars::new()
            .set("third", settle::store::rows::record("audit_event", &id("third")))
            .set("fourth", settle::store::rows::record("audit_event", &id("fourth")));
        store.query(sql, vars).await.unwrap();
        store.close().await;

        let (code, said) = cli_verify(copy.path());
        assert_eq!(code, Some(1), "{what}: {said}");
        let expected = format!("BROKEN at sequence {sequence} ({}), audit event {}", pascal(problem), id(event));
        assert!(said.contains(&expected), "{what}: expected {expected:?} in {said}");
        if problem == "CONTENT_CHANGED" && sequence == 3 {
            // The same through the API of a server on the changed database.
            let mut changed = restart::start(copy.path());
            let data = restart::gql(&http, &changed.url, &token, VERIFY, json!({})).await;
            let found = &data["auditVerify"];
            assert_eq!(found["status"], "BROKEN", "{what}: {data:#}");
            assert_eq!((found["checked"].as_i64(), &found["firstBreak"]["sequence"]), (Some(2), &json!(3)), "{what}: {data:#}");
            assert_eq!((found["firstBreak"]["problem"].as_str(), found["firstBreak"]["auditEventId"].as_str()), (Some(problem), Some(id(event).as_str())), "{what}: {data:#}");
            changed.stop("-TERM");
        }
    }

    // After a restart the chain goes on from its head.
    let mut server = restart::start(dir.path());
    let url = server.url.clone();
    restart::gql(&http, &url, &token, record, json!({"c": client, "l": location, "m": cash, "key": "after-restart"})).await;
    let data = verified(&http, &url, &token).await;
    assert_eq!((data["auditVerify"]["status"].as_str(), data["auditVerify"]["checked"].as_i64()), (Some("OK"), Some(14)), "{data:#}");
    assert_eq!(data["auditHead"]["sequence"], 14, "{data:#}");
    assert_ne!(data["auditHead"]["hash"], head["hash"]);
    server.stop("-TERM");
}

/// How the CLI prints a problem (its Rust name).
fn pascal(code: &str) -> String {
    code.split('_').map(|word| word[..1].to_owned() + &word[1..].to_lowercase()).collect()
}

/// Only an ADMIN checks the chain or reads its head (A2).
#[tokio::test]
async fn h1_only_an_admin_verifies_the_audit_chain() {
    let app = TestApp::spawn().await;
    for query in ["{ auditVerify { status } }", "{ auditHead { sequence } }"] {
        app.billing().fails(query, json!({}), "FORBIDDEN").await;
        app.viewer().fails(query, json!({}), "FORBIDDEN").await;
    }
    let data = app.admin().ok("{ auditVerify { status checked headSequence } auditHead { sequence } }", json!({})).await;
    assert_eq!(data["auditVerify"], json!({"status": "OK", "checked": 0, "headSequence": 0}), "a new practice has an empty chain");
    assert!(data["auditHead"].is_null());
}
