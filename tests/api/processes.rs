//! Several Settle processes on one SurrealDB server: three real `settle serve` processes on one
//! database (SurrealDB's own server, `tools/surreal`), requests of one practice sent to each in
//! turn, and every rule checked as if there were one: P7, F1, M4, M5, unique gap-free numbers,
//! one effect per idempotency key, ledger events committed through one process delivered by
//! another, in order, none missing (E2), and settings changed through one process used by all
//! within the settings cache's bound.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use settle::auth::TokenKeys;

use crate::concurrency::{mixed_operations_keep_balances_consistent, same_key_concurrent_pay_invoice_allocates_once, same_key_twenty_times_at_once_creates_one_payment};
use crate::database_server::{ROOT_PASSWORD, ROOT_USER, SurrealServer};
use crate::events::{last_position, positions};
use crate::helpers::*;
use crate::subscriptions::{SUBSCRIPTION, open, record, subscribe};

/// `count` Settle processes started at the same moment on one fresh database of one SurrealDB
/// server, sharing a data directory (and so the token signing key, made before they start).
struct Cluster {
    processes: Vec<SettleProcess>,
    dir: tempfile::TempDir,
    _server: SurrealServer,
}

impl Cluster {
    async fn start(count: usize) -> Cluster {
        let server = SurrealServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        TokenKeys::load_or_create_secret(&dir.path().join("signing.key")).unwrap();
        let starting = (0..count).map(|index| {
            let (data_dir, log) = (dir.path().to_path_buf(), dir.path().join(format!("settle-{index}.log")));
            let address = server.address.clone();
            tokio::task::spawn_blocking(move || {
                let flags = ["--database", &address, "--db-user", ROOT_USER, "--db-password", ROOT_PASSWORD, "--db-name", "cluster", "--reconcile-interval-ms", "200"];
                SettleProcess::start_with(&data_dir, log, &flags)
            })
        });
        let processes = join_all(starting).await.into_iter().map(|started| started.expect("a process started")).collect();
        Cluster { processes, dir, _server: server }
    }

    /// One test app per process, all acting for one new practice.
    fn practice(&self) -> Vec<TestApp> {
        let tenant = format!("t{}", uuid::Uuid::new_v4().simple());
        self.processes
            .iter()
            .map(|process| {
                let keys = TokenKeys::load_or_create_secret(&self.dir.path().join("signing.key")).unwrap();
                TestApp::attach(&process.url, keys, &tenant, PathBuf::from(self.dir.path()).join("plugins"))
            })
            .collect()
    }
}

fn each(apps: &[TestApp]) -> Vec<&TestApp> {
    apps.iter().collect()
}

/// Ledger events of the practice received by a subscriber of `app`, from the first, collected in
/// the background so that the subscriber never falls behind.
async fn subscriber(app: &TestApp) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
    let mut socket = open(app).await;
    subscribe(&mut socket, "all", SUBSCRIPTION, json!({"after": 0})).await;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            // Until the test has what it waited for and drops the receiver.
            let received = tokio::select! {
                () = sender.closed() => return,
                received = record(&mut socket, "all") => received,
            };
            if sender.send(received).is_err() {
                return;
            }
        }
    });
    receiver
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_on_one_database_keep_every_rule_of_one_ledger() {
    let cluster = Cluster::start(3).await;

    // The mixed burst (applies, refunds, voids, removals on the same payments and invoices), each
    // request to the next process, with a subscriber on the third from the first event.
    let practice = cluster.practice();
    let mut delivered = subscriber(&practice[2]).await;
    mixed_operations_keep_balances_consistent(&each(&practice)).await;
    let last = last_position(&practice[0].viewer()).await;
    let mut got = Vec::new();
    while got.len() < last as usize {
        let next = tokio::time::timeout(Duration::from_secs(30), delivered.recv()).await;
        got.push(next.expect("every committed event is delivered within 30 s").expect("the subscriber runs"));
    }
    drop(delivered);
    assert_eq!(positions(&got), (1..=last).collect::<Vec<_>>(), "delivered by the third process in order, none missing, none repeated");

    // Numbers: 30 payments recorded at once through three processes are PAY-0001 to PAY-0030.
    let practice = cluster.practice();
    let seed = practice[0].seed().await;
    let methods = practice[0].viewer().ok("{ paymentMethods { id name } }", json!({})).await;
    let cash = methods["paymentMethods"].as_array().unwrap().iter().find(|m| m["name"] == "Cash").unwrap()["id"].clone();
    let recorded = join_all((0..30).map(|index| {
        let (app, cash, seed) = (&practice[index % 3], &cash, &seed);
        async move {
            let input = json!({"clientId": seed.client, "locationId": seed.location, "methodId": cash, "amount": "5.00"});
            let paid = app
                .billing()
                .ok(
                    "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { number } } }",
                    json!({"input": input, "key": new_key()}),
                )
                .await;
            paid["recordPayment"]["payment"]["number"].as_str().unwrap().to_owned()
        }
    }))
    .await;
    let mut numbers = recorded;
    numbers.sort();
    let expected: Vec<String> = (1..=30).map(|n| format!("PAY-{n:04}")).collect();
    assert_eq!(numbers, expected, "unique and gap-free across processes");

    // Settings: a change made through one process is used by every process once
    // SETTINGS_CACHE_TTL has passed, though each had the old settings cached.
    let practice = cluster.practice();
    let seed = practice[0].seed().await;
    let terms = |invoice: &Value| {
        let date = |field: &str| chrono::NaiveDate::parse_from_str(invoice[field].as_str().unwrap(), "%Y-%m-%d").unwrap();
        (date("dueDate") - date("issueDate")).num_days()
    };
    let line = json!([{"description": "Consultation", "unitPrice": "10.00"}]);
    let before = practice[0].admin().ok("{ settings { paymentTermsDays } }", json!({})).await["settings"]["paymentTermsDays"].as_i64().unwrap();
    for app in &practice {
        assert_eq!(terms(&app.draft_invoice(&seed, line.clone()).await), before);
    }
    let changed = before + 17;
    practice[0]
        .admin()
        .ok("mutation($days: Int!) { updateSettings(input: {paymentTermsDays: $days}) { paymentTermsDays } }", json!({"days": changed}))
        .await;
    tokio::time::sleep(settle::store::tenants::SETTINGS_CACHE_TTL).await;
    for app in &practice {
        assert_eq!(terms(&app.draft_invoice(&seed, line.clone()).await), changed, "every process uses the new terms after the cache's bound");
    }

    // X2 across processes: one key sent to all three at once has one effect.
    same_key_twenty_times_at_once_creates_one_payment(&each(&cluster.practice())).await;
    same_key_concurrent_pay_invoice_allocates_once(&each(&cluster.practice())).await;
}
