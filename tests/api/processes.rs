//! Several Settle processes on one SurrealDB server: three real `settle serve` processes on one
//! database (SurrealDB's own server, `tools/surreal`), requests of one practice sent to each in
//! turn, and every rule checked as if there were one: P7, F1, M4, M5, unique gap-free numbers,
//! one effect per idempotency key, ledger events committed through one process delivered by
//! another, in order, none missing (E2), and settings changed through one process used by all
//! within the settings cache's bound; and a charge left pending by a process that died settled
//! once by the others' reconcilers.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use settle::auth::TokenKeys;

use crate::concurrency::{mixed_operations_keep_balances_consistent, same_key_concurrent_pay_invoice_allocates_once, same_key_twenty_times_at_once_creates_one_payment};
use crate::database_server::{ROOT_PASSWORD, ROOT_USER, SurrealServer};
use crate::events::{last_position, positions};
use crate::helpers::*;
use crate::plugins::{card_method, cards, eventually, id_of, pay_with_key, payment_count, read_invoice};
use crate::subscriptions::{SUBSCRIPTION, open, record, subscribe};

/// `count` Settle processes started at the same moment on one fresh database of one SurrealDB
/// server, sharing a data directory (and so the token signing key, made before they start).
struct Cluster {
    processes: Vec<SettleProcess>,
    /// The flags each process was started with, for [`Cluster::restart`].
    flags: Vec<Vec<&'static str>>,
    dir: tempfile::TempDir,
    server: SurrealServer,
}

impl Cluster {
    async fn start(count: usize) -> Cluster {
        Cluster::start_with(count, |_| vec!["--reconcile-interval-ms", "200"]).await
    }

    /// [`Cluster::start`] with flags of its own for each process (`flags` of its index), and
    /// card-sim's gateway shared by all of them, as a real gateway is (the file `gateway.json`
    /// in the cluster's directory).
    async fn start_with(count: usize, flags: impl Fn(usize) -> Vec<&'static str>) -> Cluster {
        let server = SurrealServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        TokenKeys::load_or_create_secret(&dir.path().join("signing.key")).unwrap();
        let flags: Vec<_> = (0..count).map(flags).collect();
        let starting = (0..count).map(|index| {
            let start = Cluster::starter(&server, dir.path(), index, flags[index].clone());
            tokio::task::spawn_blocking(start)
        });
        let processes = join_all(starting).await.into_iter().map(|started| started.expect("a process started")).collect();
        Cluster { processes, flags, dir, server }
    }

    /// What starts the process `index` on `server`, with `own` flags.
    fn starter(server: &SurrealServer, dir: &std::path::Path, index: usize, own: Vec<&'static str>) -> impl FnOnce() -> SettleProcess + use<> {
        let (data_dir, log) = (dir.to_path_buf(), dir.join(format!("settle-{index}.log")));
        let address = server.address.clone();
        move || {
            let mut flags = vec!["--database", &address, "--db-user", ROOT_USER, "--db-password", ROOT_PASSWORD, "--db-name", "cluster"];
            flags.extend(own);
            let gateway = data_dir.join("gateway.json");
            SettleProcess::start_with_env(&data_dir, log, &flags, &[(settle_plugin_card_sim_core::GATEWAY_FILE_VAR, gateway.as_os_str())])
        }
    }

    /// Starts the process `index` again (after it was killed), with its flags.
    async fn restart(&mut self, index: usize) {
        let start = Cluster::starter(&self.server, self.dir.path(), index, self.flags[index].clone());
        self.processes[index] = tokio::task::spawn_blocking(start).await.expect("the process started again");
    }

    /// One test app per process, all acting for one new practice.
    fn practice(&self) -> Vec<TestApp> {
        let tenant = format!("t{}", uuid::Uuid::new_v4().simple());
        (0..self.processes.len()).map(|index| self.attach(index, &tenant)).collect()
    }

    /// A test app acting for `tenant` through the process `index`.
    fn attach(&self, index: usize, tenant: &str) -> TestApp {
        let keys = TokenKeys::load_or_create_secret(&self.dir.path().join("signing.key")).unwrap();
        TestApp::attach(&self.processes[index].url, keys, tenant, PathBuf::from(self.dir.path()).join("plugins"))
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

    // Numbers: 30 payments recorded at once through three processes are PAY-0001 to PAY-0030
    // (one the database server was too busy to answer in time is sent again with its key).
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
                .ok_sending_again(
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

/// A charge whose process was killed while the gateway's answer was on its way is left PENDING in
/// the database; the reconcilers of the two other processes, running every 200 ms, both find it,
/// ask the (shared) gateway, and settle it exactly once: one payment, one allocation, one
/// charge.succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_charge_left_pending_by_a_process_that_died_is_settled_once_by_another() {
    // The first process waits 20 s for a plugin and does not reconcile; the others settle an
    // attempt 2 s after it started (their call timeout of 1 s, and 1 s).
    let mut cluster = Cluster::start_with(3, |index| match index {
        0 => vec!["--plugin-call-timeout-ms", "20000", "--reconcile-interval-ms", "600000"],
        _ => vec!["--plugin-call-timeout-ms", "1000", "--reconcile-interval-ms", "200"],
    })
    .await;
    let practice = cluster.practice();
    let seed = practice[0].seed().await;
    let invoice = practice[0].open_invoice(&seed, "80.00").await;
    let invoice_id = id_of(&invoice);
    let input = json!({"methodId": card_method(&practice[0]).await, "details": {"card_number": cards::NEVER_ANSWERS, "hang_ms": 30000}});
    let charging = {
        let app = cluster.attach(0, &practice[0].tenant);
        let (invoice_id, input) = (invoice_id.clone(), input.clone());
        tokio::spawn(async move { pay_with_key(&app, &invoice_id, &input, &new_key()).await })
    };

    // The gateway has taken the money; the first process dies before hearing so.
    let gateway = cluster.dir.path().join("gateway.json");
    eventually(Duration::from_secs(20), "the gateway records the charge", || async {
        let state: Value = serde_json::from_slice(&std::fs::read(&gateway).ok()?).ok()?;
        (state["charges_made"] == 1).then_some(())
    })
    .await;
    cluster.processes[0].sigkill();
    charging.abort();

    let paid = eventually(Duration::from_secs(30), "another process's reconciler settles the charge", || async {
        let invoice = read_invoice(&practice[1], &invoice_id).await;
        (invoice["status"] == "PAID").then_some(invoice)
    })
    .await;
    // Both reconcilers have had many turns at it by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(paid["allocations"].as_array().unwrap().len(), 1, "{paid:#}");
    assert_eq!(payment_count(&practice[2]).await, 1, "recorded once");
    let trail = practice[2]
        .viewer()
        .ok(
            "query($record: String) { auditEvents(first: 50, recordId: $record) { edges { node { action actor } } } }",
            json!({"record": format!("invoice:{invoice_id}")}),
        )
        .await;
    let succeeded: Vec<Value> =
        trail["auditEvents"]["edges"].as_array().unwrap().iter().map(|edge| edge["node"].clone()).filter(|event| event["action"] == "charge.succeeded").collect();
    assert_eq!(succeeded.len(), 1, "one charge.succeeded: {trail:#}");
    assert_eq!(succeeded[0]["actor"], "settle-reconciler");
    let invoice = read_invoice(&practice[1], &invoice_id).await;
    assert_eq!(invoice["status"], "PAID");
    assert_eq!(invoice["amountPaid"]["amount"], "80.00");
}

/// 16 clients recording payments through the process `index` of `cluster` until it is killed,
/// `delay` after 16 payments have been acknowledged; returns the acknowledged payments (id,
/// number).
async fn burst_then_kill(cluster: &mut Cluster, index: usize, tenant: &str, seed: &Seed, cash: &str, delay: Duration) -> Vec<(Value, Value)> {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let last_refusal = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let burst: Vec<_> = (0..16)
        .map(|_| {
            let app = cluster.attach(index, tenant);
            let (count, last_refusal) = (count.clone(), last_refusal.clone());
            let input = json!({"clientId": seed.client, "locationId": seed.location, "methodId": cash, "amount": "5.00"});
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let query = "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id number } } }";
                loop {
                    // Sent by hand: the kill cuts requests off, which the test helpers take as a failure.
                    let sent = app
                        .http
                        .post(app.url("/graphql"))
                        .bearer_auth(app.token(settle::auth::Role::Billing))
                        .json(&json!({"query": query, "variables": {"input": input, "key": new_key()}}))
                        .send()
                        .await;
                    let refused = |why: String| *last_refusal.lock().unwrap() = Some(why);
                    let response = match sent {
                        Ok(response) => response,
                        Err(error) => {
                            refused(format!("not sent: {error}"));
                            return acknowledged;
                        }
                    };
                    let body = match response.json::<Value>().await {
                        Ok(body) => body,
                        Err(error) => {
                            refused(format!("no JSON answer: {error}"));
                            return acknowledged;
                        }
                    };
                    match body["data"]["recordPayment"]["payment"].as_object() {
                        Some(payment) => {
                            acknowledged.push((payment["id"].clone(), payment["number"].clone()));
                            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        None => {
                            refused(body.to_string());
                            return acknowledged;
                        }
                    }
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count.load(std::sync::atomic::Ordering::Relaxed) < 16 {
        let (got, ended) = (count.load(std::sync::atomic::Ordering::Relaxed), burst.iter().filter(|task| task.is_finished()).count());
        let log = || cluster.processes[index].log_tail();
        let refusal = last_refusal.lock().unwrap().clone();
        assert!(std::time::Instant::now() < deadline, "16 payments acknowledged within 60 s: {got}, {ended} of 16 clients ended, the last on {refusal:?}; the process's log:\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Acknowledgments come in batches, just after a positioning: the kill falls elsewhere.
    tokio::time::sleep(delay).await;
    cluster.processes[index].sigkill();
    join_all(burst).await.into_iter().flat_map(|task| task.expect("a client ran")).collect()
}

/// A process killed in the middle of a burst of payments leaves changes committed but not yet
/// numbered or positioned (the kill is repeated, the process started again in between, until
/// one leaves some, at most five times). The other processes finish them at their reconciler's
/// next turn, without any restart: nothing stays pending, every payment has a number and the
/// numbers are gap-free, every acknowledged payment is there with the number it was given, and a
/// subscriber of another process receives every event, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_a_killed_process_left_unpositioned_are_finished_by_the_others() {
    // Reconcilers turn every 5 s, so that what a kill left is seen pending before they do.
    let mut cluster = Cluster::start_with(3, |_| vec!["--reconcile-interval-ms", "5000"]).await;
    let practice = cluster.practice();
    let seed = practice[0].seed().await;
    let cash = crate::events::method(&practice[0].viewer(), "Cash").await;
    let mut delivered = subscriber(&practice[2]).await;
    let admin = practice[1].admin();
    let pending = || async { admin.ok("{ auditVerify { pending } }", json!({})).await["auditVerify"]["pending"].as_i64().unwrap() };

    let mut acknowledged = Vec::new();
    for round in 1..=5 {
        if round > 1 {
            cluster.restart(0).await;
        }
        let delay = Duration::from_millis(30 + 45 * round);
        acknowledged.extend(burst_then_kill(&mut cluster, 0, &practice[0].tenant, &seed, &cash, delay).await);
        let left = pending().await;
        eprintln!("kill {round}: {} payments acknowledged so far; {left} audit events left pending", acknowledged.len());
        if left > 0 {
            break;
        }
    }

    eventually(Duration::from_secs(20), "the other processes finish what the killed one left", || async {
        (pending().await == 0).then_some(())
    })
    .await;
    let listed = practice[1].viewer().ok("{ payments(first: 100) { totalCount edges { node { id number } } } }", json!({})).await;
    let total = listed["payments"]["totalCount"].as_i64().unwrap();
    let mut stored: Vec<(Value, Value)> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = practice[1]
            .viewer()
            .ok("query($after: String) { payments(first: 100, after: $after) { edges { node { id number } } pageInfo { hasNextPage endCursor } } }", json!({"after": after}))
            .await;
        for edge in page["payments"]["edges"].as_array().unwrap() {
            stored.push((edge["node"]["id"].clone(), edge["node"]["number"].clone()));
        }
        if page["payments"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["payments"]["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(stored.len() as i64, total);
    let mut numbers: Vec<String> = stored.iter().map(|(_, number)| number.as_str().expect("every payment has its number").to_owned()).collect();
    numbers.sort();
    assert_eq!(numbers, (1..=total).map(|n| format!("PAY-{n:04}")).collect::<Vec<_>>(), "unique and gap-free");
    for payment in &acknowledged {
        assert!(stored.contains(payment), "acknowledged {payment:?} is stored with the number it was given");
    }

    let last = last_position(&practice[1].viewer()).await;
    let mut got = Vec::new();
    while got.len() < last as usize {
        let next = tokio::time::timeout(Duration::from_secs(30), delivered.recv()).await;
        got.push(next.expect("every committed event is delivered within 30 s").expect("the subscriber runs"));
    }
    assert_eq!(positions(&got), (1..=last).collect::<Vec<_>>(), "delivered by the third process in order, none missing, none repeated");
}
