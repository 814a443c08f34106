//! Settle on a real SurrealDB server (`--database ws://...`), the way several Settle processes
//! share one database. The server is SurrealDB's own (`tools/surreal`, built from crates.io on
//! first use into this test binary's target directory), never a stand-in.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use settle::auth::{Role, TenantId};
use settle::config::Settings;

use crate::helpers::*;

/// The `surreal` binary, built once per test binary.
fn surreal_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    static BUILDING: Mutex<()> = Mutex::new(());
    let _building = BUILDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    BUILT.get_or_init(|| {
        let binary = cargo_build(&["-p", "settle-surreal", "--bin", "surreal"]).join("surreal");
        assert!(binary.is_file(), "the build left no {}", binary.display());
        binary
    })
}

/// `surreal start` on a free port, with root credentials; killed when dropped.
pub(crate) struct SurrealServer {
    child: Option<Child>,
    /// `ws://127.0.0.1:PORT`
    pub address: String,
    port: u16,
    /// `memory`, or `surrealkv://DIR` for a server that keeps its data over a stop.
    storage: String,
}

pub(crate) const ROOT_USER: &str = "root";
pub(crate) const ROOT_PASSWORD: &str = "settle-test-root";

impl SurrealServer {
    /// A server keeping its data in memory.
    pub(crate) async fn start() -> SurrealServer {
        SurrealServer::start_with("memory".to_owned()).await
    }

    /// A server keeping its data on disk under `dir`, so that it can be stopped and started again.
    pub(crate) async fn start_on_disk(dir: &Path) -> SurrealServer {
        SurrealServer::start_with(format!("surrealkv://{}", dir.join("surreal").display())).await
    }

    async fn start_with(storage: String) -> SurrealServer {
        // A port the system just gave out and took back; SurrealDB binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = SurrealServer { child: None, address: format!("ws://127.0.0.1:{port}"), port, storage };
        server.start_again().await;
        server
    }

    /// Starts the server (again) on its port and storage, and waits until it answers.
    pub(crate) async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let binary = tokio::task::spawn_blocking(surreal_binary).await.expect("the build ran");
        let child = Command::new(binary)
            .args(["start", "--no-banner", "--log", "warn", "--user", ROOT_USER, "--pass", ROOT_PASSWORD])
            .args(["--bind", &format!("127.0.0.1:{}", self.port), &self.storage])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("surreal starts");
        self.child = Some(child);
        let health = format!("http://127.0.0.1:{}/health", self.port);
        let started = Instant::now();
        while !reqwest::get(&health).await.is_ok_and(|response| response.status().is_success()) {
            assert!(started.elapsed() < Duration::from_secs(60), "the SurrealDB server did not answer {health} within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server cleanly (SIGTERM) and waits until it is gone.
    pub(crate) fn stop(&mut self) {
        let mut child = self.child.take().expect("a running server");
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
        child.wait().expect("the stopped server is reaped");
    }

    /// Settings of a Settle process using `database` on this server.
    pub(crate) fn settings_for(&self, database: &str) -> impl FnOnce(&mut Settings) + use<> {
        let (address, database) = (self.address.clone(), database.to_owned());
        move |settings: &mut Settings| {
            settings.database = Some(address);
            settings.db_user = Some(ROOT_USER.to_owned());
            settings.db_password = Some(ROOT_PASSWORD.to_owned());
            settings.db_name = database;
        }
    }
}

impl Drop for SurrealServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const PAY: &str = "mutation($invoice: ID!, $input: PayInvoiceInput!, $key: String!) {
    payInvoice(id: $invoice, input: $input, idempotencyKey: $key) { payment { number amount { amount } } } }";

async fn cash(caller: &Caller<'_>) -> Value {
    let methods = caller.ok("{ paymentMethods { id name } }", json!({})).await;
    methods["paymentMethods"].as_array().unwrap().iter().find(|m| m["name"] == "Cash").unwrap()["id"].clone()
}

async fn pay(caller: &Caller<'_>, invoice: &Value, amount: &str) -> Value {
    let method = cash(caller).await;
    let paid = caller.ok(PAY, json!({"invoice": invoice, "input": {"methodId": method, "amount": amount}, "key": new_key()})).await;
    paid["payInvoice"]["payment"].clone()
}

/// A Settle process on a SurrealDB server sets up the schema and keeps the ledger as the embedded
/// database does; a second process on the same database reads what the first wrote, and payment
/// numbers go on from where the first left them.
#[tokio::test]
async fn settle_on_a_surrealdb_server_keeps_the_ledger_for_every_process_on_it() {
    let server = SurrealServer::start().await;
    let first = TestApp::spawn_with(server.settings_for("ledger")).await;
    let seed = first.seed().await;
    let invoice = first.open_invoice(&seed, "120.00").await;
    let billing = first.billing();
    assert_eq!(pay(&billing, &invoice["id"], "50.00").await["number"], "PAY-0001");
    assert_eq!(pay(&billing, &invoice["id"], "70.00").await["number"], "PAY-0002");

    let second = TestApp::spawn_with(server.settings_for("ledger")).await;
    let same_practice = second.with_token(Some(second.token_for(&first.tenant, Role::Billing)));
    let read = same_practice
        .ok("query($id: ID!) { invoice(id: $id) { status balance { amount } } }", json!({"id": invoice["id"]}))
        .await;
    assert_eq!(read["invoice"]["status"], "PAID", "{read:#}");
    assert_eq!(read["invoice"]["balance"]["amount"], "0.00");
    let another = first.open_invoice(&seed, "30.00").await;
    assert_eq!(pay(&same_practice, &another["id"], "30.00").await["number"], "PAY-0003", "numbers go on across processes");
}

/// A Store on `database` of `server`, behind Settle's back, to make the database look older.
async fn store_on(server: &SurrealServer, database: &str) -> (settle::store::Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    server.settings_for(database)(&mut settings);
    let store = settle::store::Store::open(&settings.store_settings(), settle::metrics::Metrics::new()).await.unwrap();
    (store, dir)
}

/// Three processes started at the same moment on a fresh database all start, and set it up once;
/// started again at the same moment on the database made to look as schema version 6 left it
/// (no audit chain), they all start and the upgrade chains the audit events once: the chain
/// verifies, with one link per event. Without the start-up lease, concurrent schema definitions
/// conflict and an upgrade run by two processes at once links events twice.
#[tokio::test]
async fn processes_starting_at_once_set_the_database_up_once() {
    let server = SurrealServer::start().await;
    let (a, b, c) = tokio::join!(
        TestApp::spawn_with(server.settings_for("shared")),
        TestApp::spawn_with(server.settings_for("shared")),
        TestApp::spawn_with(server.settings_for("shared")),
    );
    let seed = a.seed().await;
    for amount in ["10.00", "20.00", "30.00"] {
        let invoice = a.open_invoice(&seed, amount).await;
        pay(&a.billing(), &invoice["id"], amount).await;
    }
    let tenant = TenantId::parse(&a.tenant).unwrap();
    for other in [&b, &c] {
        let caller = other.with_token(Some(other.token_for(&a.tenant, Role::Viewer)));
        let read = caller.ok("{ invoices(first: 10) { totalCount } }", json!({})).await;
        assert_eq!(read["invoices"]["totalCount"], 3, "every process reads the same ledger: {read:#}");
    }
    // Every change chained before the processes stop, so none is written behind the changes below.
    let admin = a.admin();
    let started = Instant::now();
    while admin.ok("{ auditVerify { pending } }", json!({})).await["auditVerify"]["pending"] != 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "audit events still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((a, b, c));

    let (store, _dir) = store_on(&server, "shared").await;
    // The tenant is letters and digits (TestApp), safe inside the statement's text.
    let downgrade = format!(
        "REMOVE INDEX IF EXISTS audit_tenant_sequence ON audit_event; UPDATE audit_event UNSET content_hash, sequence, chain RETURN NONE;
         REMOVE FIELD IF EXISTS content_hash ON audit_event; REMOVE FIELD IF EXISTS sequence ON audit_event; REMOVE FIELD IF EXISTS chain ON audit_event;
         DELETE counter:['{tenant}', 'audit']; REMOVE FIELD IF EXISTS head ON counter;
         UPDATE settle_meta:schema SET version = 6;"
    );
    store
        .query(&downgrade, settle::store::Vars::new())
        .await
        .unwrap();
    let mut events = store
        .query("SELECT count() AS count FROM audit_event WHERE tenant = $tenant GROUP ALL", settle::store::Vars::new().set("tenant", tenant.as_str().to_owned()))
        .await
        .unwrap();
    let events = events.first::<settle::store::rows::CountRow>(0).unwrap().expect("audit events").count;

    let (mut a, mut b, mut c) = tokio::join!(
        TestApp::spawn_with(server.settings_for("shared")),
        TestApp::spawn_with(server.settings_for("shared")),
        TestApp::spawn_with(server.settings_for("shared")),
    );
    for app in [&mut a, &mut b, &mut c] {
        app.tenant = tenant.as_str().to_owned();
    }
    let mut recorded = store.query("SELECT VALUE version FROM ONLY settle_meta:schema", settle::store::Vars::new()).await.unwrap();
    assert_eq!(recorded.first::<i64>(0).unwrap(), Some(settle::store::SCHEMA_VERSION));
    for app in [&a, &b, &c] {
        let verified = app.admin().ok("{ auditVerify { status checked pending } auditHead { sequence } }", json!({})).await;
        assert_eq!(verified["auditVerify"]["status"], "OK", "{verified:#}");
        assert_eq!(verified["auditHead"]["sequence"].as_i64(), Some(events), "one link per audit event: {verified:#}");
    }
    let invoice = a.open_invoice(&seed, "40.00").await;
    assert_eq!(pay(&c.billing(), &invoice["id"], "40.00").await["number"], "PAY-0004", "{invoice:#}");
}

/// The SurrealDB server stopped and started again under a serving Settle: meanwhile /healthz
/// says the database is unreachable (503) and a mutation is refused with DATABASE_UNAVAILABLE,
/// which is retryable; once the server is back Settle serves again without a restart, the same
/// request under the same key then pays once, and everything acknowledged before is there.
#[tokio::test]
async fn settle_rides_out_a_restart_of_the_surrealdb_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = SurrealServer::start_on_disk(dir.path()).await;
    let on_server = server.settings_for("ledger");
    let app = TestApp::spawn_with(|settings| {
        on_server(settings);
        // Short enough to wait out in a test, long enough for a loaded machine's slowest call.
        settings.db_timeout_ms = 5_000;
    })
    .await;
    let seed = app.seed().await;
    let invoice = app.open_invoice(&seed, "100.00").await;
    let billing = app.billing();
    assert_eq!(pay(&billing, &invoice["id"], "30.00").await["number"], "PAY-0001");
    let healthz = || async { app.http.get(app.url("/healthz")).send().await.unwrap().status().as_u16() };
    assert_eq!(healthz().await, 200);

    let method = cash(&billing).await;
    server.stop();
    assert_eq!(healthz().await, 503, "the database is away");
    let variables = json!({"invoice": invoice["id"], "input": {"methodId": method, "amount": "20.00"}, "key": new_key()});
    let refused = billing.post(PAY, variables.clone()).await;
    let error = &refused.body["errors"][0];
    assert_eq!(error["extensions"]["code"], "DATABASE_UNAVAILABLE", "{:#}", refused.body);
    assert_eq!(error["extensions"]["retryable"], true, "{:#}", refused.body);

    server.start_again().await;
    let started = Instant::now();
    while healthz().await != 200 {
        assert!(started.elapsed() < Duration::from_secs(60), "Settle did not see the database back within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let paid = billing.ok(PAY, variables.clone()).await;
    assert_eq!(paid["payInvoice"]["payment"]["number"], "PAY-0002", "{paid:#}");
    let again = billing.ok(PAY, variables).await;
    assert_eq!(again, paid, "the same key answers the same payment");
    let read = app.viewer().ok("query($id: ID!) { invoice(id: $id) { balance { amount } } }", json!({"id": invoice["id"]})).await;
    assert_eq!(read["invoice"]["balance"]["amount"], "50.00", "30.00 before the stop, 20.00 after, once: {read:#}");
}

/// A newer Settle upgrading the schema under a running older process (a rolling upgrade done out
/// of order): the older process notices at its reconciler's next turn or health check, answers
/// /healthz with 503 "newer-schema" so that a load balancer takes it out, refuses every write
/// with DATABASE_UNAVAILABLE (retryable: sent again, it reaches a newer process), writes nothing,
/// and still answers reads. A schema put back to its release (a restored backup) lets it write
/// again.
#[tokio::test]
async fn a_process_older_than_the_database_schema_stops_writing() {
    let server = SurrealServer::start().await;
    let on_server = server.settings_for("upgraded");
    let app = TestApp::spawn_with(|settings| {
        on_server(settings);
        settings.reconcile_interval_ms = 200;
    })
    .await;
    let seed = app.seed().await;
    let invoice = app.open_invoice(&seed, "50.00").await;
    let billing = app.billing();
    let healthz = || async {
        let response = app.http.get(app.url("/healthz")).send().await.unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(healthz().await.0, 200);

    let (store, _dir) = store_on(&server, "upgraded").await;
    let set_version = |version: i64| store.query("UPDATE settle_meta:schema SET version = $version", settle::store::Vars::new().set("version", version));
    set_version(settle::store::SCHEMA_VERSION + 1).await.unwrap();
    let method = cash(&billing).await;
    let started = Instant::now();
    let (refused, variables) = loop {
        let variables = json!({"invoice": invoice["id"], "input": {"methodId": method, "amount": "1.00"}, "key": new_key()});
        let answer = billing.post(PAY, variables.clone()).await;
        if !answer.body["errors"].is_null() {
            break (answer, variables);
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the older process still writes after 5 s: {:#}", answer.body);
        // Written before the reconciler's turn: that payment stands, the next key is tried.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = &refused.body["errors"][0];
    assert_eq!(error["extensions"]["code"], "DATABASE_UNAVAILABLE", "{:#}", refused.body);
    assert_eq!(error["extensions"]["retryable"], true);
    assert!(error["message"].as_str().unwrap().contains("newer release"), "{:#}", refused.body);
    assert_eq!(healthz().await, (503, json!({"status": "unavailable", "database": "newer-schema"})));
    let read = app.viewer().ok("query($id: ID!) { invoice(id: $id) { balance { amount } } }", json!({"id": invoice["id"]})).await;
    let balance = read["invoice"]["balance"]["amount"].clone();
    let dry = billing.post(PAY.replace("idempotencyKey: $key)", "idempotencyKey: $key, dryRun: true)").as_str(), variables.clone()).await;
    assert_eq!(dry.body["errors"][0]["extensions"]["code"], "DATABASE_UNAVAILABLE", "{:#}", dry.body);

    set_version(settle::store::SCHEMA_VERSION).await.unwrap();
    assert_eq!(healthz().await.0, 200);
    let paid = billing.ok(PAY, variables).await;
    assert_eq!(paid["payInvoice"]["payment"]["amount"]["amount"], "1.00");
    let read = app.viewer().ok("query($id: ID!) { invoice(id: $id) { balance { amount } } }", json!({"id": invoice["id"]})).await;
    let before: rust_decimal::Decimal = balance.as_str().unwrap().parse().unwrap();
    let after: rust_decimal::Decimal = read["invoice"]["balance"]["amount"].as_str().unwrap().parse().unwrap();
    assert_eq!(before - after, rust_decimal::Decimal::ONE, "the refused request wrote nothing; sent again it paid once");
}
