//! Settle on a real SurrealDB server (`--database ws://...`), the way several Settle processes
//! share one database. The server is SurrealDB's own (`tools/surreal`, built from crates.io on
//! first use into this test binary's target directory), never a stand-in.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use settle::auth::Role;
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

/// `surreal start` in memory on a free port, with root credentials; killed when dropped.
pub(crate) struct SurrealServer {
    child: Child,
    /// `ws://127.0.0.1:PORT`
    pub address: String,
}

pub(crate) const ROOT_USER: &str = "root";
pub(crate) const ROOT_PASSWORD: &str = "settle-test-root";

impl SurrealServer {
    pub(crate) async fn start() -> SurrealServer {
        let binary = tokio::task::spawn_blocking(surreal_binary).await.expect("the build ran");
        // A port the system just gave out and took back; SurrealDB binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(binary)
            .args(["start", "--no-banner", "--log", "warn", "--user", ROOT_USER, "--pass", ROOT_PASSWORD])
            .args(["--bind", &format!("127.0.0.1:{port}"), "memory"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("surreal starts");
        let server = SurrealServer { child, address: format!("ws://127.0.0.1:{port}") };
        let health = format!("http://127.0.0.1:{port}/health");
        let started = Instant::now();
        while !reqwest::get(&health).await.is_ok_and(|response| response.status().is_success()) {
            assert!(started.elapsed() < Duration::from_secs(60), "the SurrealDB server did not answer {health} within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
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
        let _ = self.child.kill();
        let _ = self.child.wait();
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
