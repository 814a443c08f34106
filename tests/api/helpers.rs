//! The test harness: a real Settle server on a free port over real HTTP, built by the same
//! `Application::build` that `settle serve` uses, with a fresh in-memory SurrealDB per test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use settle::auth::{Role, TenantId, TokenKeys};
use settle::config::Settings;
use settle::startup::Application;

pub struct TestApp {
    pub base_url: String,
    pub http: reqwest::Client,
    pub keys: TokenKeys,
    /// A fresh tenant per test app.
    pub tenant: String,
    /// The directory the server loads plugin libraries from.
    pub plugin_dir: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _data_dir: tempfile::TempDir,
}

/// Settings for a test server: port 0, in-memory database, a temporary data directory.
pub fn test_settings(data_dir: &std::path::Path) -> Settings {
    let mut settings = Settings::defaults();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.data_dir = data_dir.to_path_buf();
    settings.database = Some("mem://".into());
    // Plugin processes run the settle binary, not this test binary.
    settings.plugin_host_program = Some(env!("CARGO_BIN_EXE_settle").into());
    settings
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(|_| {}).await
    }

    /// Spawns with adjusted settings.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut settings = test_settings(data_dir.path());
        adjust(&mut settings);
        let secret = settle::startup::secret_path(&settings);
        let plugin_dir = settings.plugin_dir();
        let app = Application::build(settings).await.expect("the application builds");
        let base_url = format!("http://{}", app.address());
        // The key the server verifies with (an RS256/ES256 server ignores it).
        let keys = TokenKeys::load_or_create_secret(&secret).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        TestApp {
            base_url,
            http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
            keys,
            tenant: format!("t{}", uuid::Uuid::new_v4().simple()),
            plugin_dir,
            stop: Some(stop),
            _data_dir: data_dir,
        }
    }

    /// A test app for a Settle process started apart (a [`SettleProcess`]) at `base_url`, whose
    /// tokens are signed with `keys`, acting for `tenant`; stopping it is the process's business.
    pub fn attach(base_url: &str, keys: TokenKeys, tenant: &str, plugin_dir: PathBuf) -> TestApp {
        TestApp {
            base_url: base_url.to_owned(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
            keys,
            tenant: tenant.to_owned(),
            plugin_dir,
            stop: None,
            _data_dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A token for this app's tenant with one role.
    pub fn token(&self, role: Role) -> String {
        self.token_for(&self.tenant, role)
    }

    pub fn token_for(&self, tenant: &str, role: Role) -> String {
        let tenant = TenantId::parse(tenant).unwrap();
        self.keys.mint(&format!("test-{role}"), &tenant, &[role], chrono::Duration::hours(1)).unwrap()
    }

    /// A caller of this app's tenant with `role`.
    pub fn as_role(&self, role: Role) -> Caller<'_> {
        Caller { app: self, token: Some(self.token(role)) }
    }

    /// A caller presenting an arbitrary bearer token (or none).
    pub fn with_token(&self, token: Option<String>) -> Caller<'_> {
        Caller { app: self, token }
    }

    pub fn admin(&self) -> Caller<'_> {
        self.as_role(Role::Admin)
    }

    pub fn billing(&self) -> Caller<'_> {
        self.as_role(Role::Billing)
    }

    pub fn viewer(&self) -> Caller<'_> {
        self.as_role(Role::Viewer)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Creates a client and a location for invoices; returns (client id, location id).
    pub async fn seed(&self) -> Seed {
        let admin = self.admin();
        let client = admin
            .ok("mutation { createClient(input: {name: \"Ann Lee\", email: \"ann@example.com\"}) { id } }", json!({}))
            .await;
        let location = admin.ok("mutation { createLocation(input: {name: \"Main St Clinic\"}) { id } }", json!({})).await;
        let rates = admin.ok("{ taxRates { id name } }", json!({})).await;
        let gst = rates["taxRates"].as_array().unwrap().iter().find(|r| r["name"] == "GST").unwrap()["id"].clone();
        Seed {
            client: client["createClient"]["id"].as_str().unwrap().to_owned(),
            location: location["createLocation"]["id"].as_str().unwrap().to_owned(),
            gst: gst.as_str().unwrap().to_owned(),
        }
    }

    /// Creates a draft invoice with the given lines (JSON LineItemInput values); returns its JSON.
    pub async fn draft_invoice(&self, seed: &Seed, lines: Value) -> Value {
        let data = self
            .billing()
            .ok(
                &format!("mutation($input: InvoiceInput!, $key: String!) {{ createInvoice(input: $input, idempotencyKey: $key) {{ invoice {{ {INVOICE_FIELDS} }} }} }}"),
                json!({"input": {"clientId": seed.client, "locationId": seed.location, "lines": lines}, "key": new_key()}),
            )
            .await;
        data["createInvoice"]["invoice"].clone()
    }

    /// Creates and finalizes an invoice of one untaxed line of `amount`; returns its JSON.
    pub async fn open_invoice(&self, seed: &Seed, amount: &str) -> Value {
        let draft = self.draft_invoice(seed, json!([{"description": "Consultation", "unitPrice": amount}])).await;
        self.finalize(draft["id"].as_str().unwrap()).await
    }

    pub async fn finalize(&self, id: &str) -> Value {
        let data = self
            .billing()
            .ok(
                &format!("mutation($id: ID!, $key: String!) {{ finalizeInvoice(id: $id, idempotencyKey: $key) {{ invoice {{ {INVOICE_FIELDS} }} }} }}"),
                json!({"id": id, "key": new_key()}),
            )
            .await;
        data["finalizeInvoice"]["invoice"].clone()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the real `settle` binary on `data_dir` (SurrealKV under it) and a free port, with its
/// stderr going to `stderr`. Returns the child and the base URL it printed, or None when it did
/// not print one within 60 s.
pub fn start_settle(data_dir: &std::path::Path, stderr: std::process::Stdio) -> (std::process::Child, Option<String>) {
    start_settle_with(data_dir, &[], &[], stderr)
}

/// [`start_settle`] with more flags of `settle serve` (such as `--database ws://...`).
pub fn start_settle_with(
    data_dir: &std::path::Path,
    flags: &[&str],
    envs: &[(&str, &std::ffi::OsStr)],
    stderr: std::process::Stdio,
) -> (std::process::Child, Option<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_settle"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(flags)
        .env_remove("SETTLE_DATABASE")
        // Settle's own malloc setting, unless a test sets another.
        .env_remove("MALLOC_ARENA_MAX")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("settle starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    // Reads the address, then keeps draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("Settle is listening on ") {
                let _ = sender.send(url.trim().to_owned());
            }
        }
    });
    let url = receiver.recv_timeout(Duration::from_secs(60)).ok();
    (child, url)
}

/// The real binary serving `surrealkv://DIR/db`; killed when dropped.
pub struct SettleProcess {
    child: Option<Child>,
    pub url: String,
    log: PathBuf,
}

impl SettleProcess {
    /// Starts the binary on `data_dir`, its stderr going to the file `log`.
    pub fn start(data_dir: &Path, log: PathBuf) -> SettleProcess {
        SettleProcess::start_with(data_dir, log, &[])
    }

    /// [`SettleProcess::start`] with more flags of `settle serve`.
    pub fn start_with(data_dir: &Path, log: PathBuf, flags: &[&str]) -> SettleProcess {
        SettleProcess::start_with_env(data_dir, log, flags, &[])
    }

    /// [`SettleProcess::start_with`] with environment variables set for the process.
    pub fn start_with_env(data_dir: &Path, log: PathBuf, flags: &[&str], envs: &[(&str, &std::ffi::OsStr)]) -> SettleProcess {
        let stderr = std::fs::File::create(&log).expect("a log file");
        let (child, url) = start_settle_with(data_dir, flags, envs, Stdio::from(stderr));
        let server = SettleProcess { child: Some(child), url: url.clone().unwrap_or_default(), log };
        if url.is_none() {
            panic!("settle did not start within 60 s; its log:\n{}", server.log_tail());
        }
        server
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running server").id()
    }

    /// SIGKILL, as a crash or the OOM killer would, then waits for the process to be gone.
    pub fn sigkill(&mut self) {
        self.stop("-KILL");
    }

    /// Sends `signal` (such as "-TERM") and waits for the process to be gone.
    pub fn stop(&mut self, signal: &str) {
        let mut child = self.child.take().expect("a running server");
        let status = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
        child.wait().expect("the stopped server is reaped");
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for SettleProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Ids most invoice tests need.
pub struct Seed {
    pub client: String,
    pub location: String,
    pub gst: String,
}

/// The invoice fields the tests read.
pub const INVOICE_FIELDS: &str = "id number status overdue issueDate dueDate currency \
    total { amount currency } subtotal { amount } taxTotal { amount } discountTotal { amount } \
    balance { amount } amountPaid { amount } amountCredited { amount } \
    lines { description quantity subtotal { amount } tax { amount } total { amount } }";

/// The field of a money mutation's payload that holds the record it wrote (D1); None for the
/// other mutations, which answer the record itself.
pub fn payload_field(mutation: &str) -> Option<&'static str> {
    Some(match mutation {
        "createInvoice" | "updateInvoice" | "finalizeInvoice" | "revertInvoiceToDraft" | "voidInvoice" => "invoice",
        "deleteInvoice" => "deletedInvoiceId",
        "recordPayment" | "payInvoice" | "voidPayment" | "updatePayment" => "payment",
        "applyPayment" | "removeAllocation" => "allocation",
        "refundPayment" => "refund",
        "issueCreditNote" | "voidCreditNote" => "creditNote",
        _ => return None,
    })
}

/// What `mutation` answered in `data`: the record of a money mutation's payload, or the answer
/// of any other mutation.
pub fn answered<'a>(data: &'a Value, mutation: &str) -> &'a Value {
    match payload_field(mutation) {
        Some(field) => &data[mutation][field],
        None => &data[mutation],
    }
}

/// Runs `cargo build` with `args` in the workspace and returns the directory it leaves what it
/// built in.
///
/// The build goes to the target directory and profile this test binary was built with (where
/// the `settle` binary is), so everything already built there is reused; a test run from a clean
/// clone builds what it needs. Running cargo there from inside a test is safe: `cargo test`
/// releases the build directory's lock before it runs the test binaries.
pub fn cargo_build(args: &[&str]) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the server crate sits inside the workspace");
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_settle")).parent().expect("the settle binary is in a profile directory");
    let target_dir = profile_dir.parent().expect("the profile directory is in a target directory");
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => panic!("no profile directory name in {}", profile_dir.display()),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(&cargo);
    // Without the variables cargo sets for this test process: build scripts that read one (ring's
    // reads CARGO_MANIFEST_DIR) would otherwise run again, and everything after them be rebuilt,
    // each time a build from a shell and a build from here take turns.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_tests = ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_", "CARGO_CRATE_", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR"];
        if set_for_tests.iter().any(|prefix| name.starts_with(prefix)) {
            command.env_remove(name.as_ref());
        }
    }
    let output = command
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["build", "--profile", profile])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(output.status.success(), "cargo build {args:?} failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    profile_dir.to_path_buf()
}

pub fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Someone calling the API with one token.
pub struct Caller<'a> {
    pub app: &'a TestApp,
    pub token: Option<String>,
}

/// A GraphQL response: HTTP status and JSON body.
#[derive(Debug, Clone)]
pub struct Gql {
    pub status: u16,
    pub body: Value,
}

impl Gql {
    /// The `extensions.code` of the first error, if any.
    pub fn error_code(&self) -> Option<&str> {
        self.body["errors"][0]["extensions"]["code"].as_str()
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

impl Caller<'_> {
    pub async fn post(&self, query: &str, variables: Value) -> Gql {
        let mut request = self.app.http.post(self.app.url("/graphql")).json(&json!({"query": query, "variables": variables}));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.expect("a JSON body");
        Gql { status, body }
    }

    /// Runs an operation that must succeed; returns its `data`.
    pub async fn ok(&self, query: &str, variables: Value) -> Value {
        let response = self.post(query, variables).await;
        assert!(response.body.get("errors").is_none_or(Value::is_null), "unexpected errors: {:#}", response.body);
        response.body["data"].clone()
    }

    /// Runs an operation that must succeed as a client would: sent again with the same
    /// variables (so the same idempotency key) while it fails with a retryable error, as
    /// DATABASE_UNAVAILABLE does when a busy database server does not answer in time; at most
    /// five times. Returns its `data`.
    pub async fn ok_sending_again(&self, query: &str, variables: Value) -> Value {
        let mut attempts = 1;
        loop {
            let response = self.post(query, variables.clone()).await;
            let retryable = response.body["errors"][0]["extensions"]["retryable"] == true;
            if !retryable || attempts == 5 {
                assert!(response.body.get("errors").is_none_or(Value::is_null), "unexpected errors: {:#}", response.body);
                return response.body["data"].clone();
            }
            attempts += 1;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Runs an operation that must fail with `code`; returns the response.
    pub async fn fails(&self, query: &str, variables: Value, code: &str) -> Gql {
        let response = self.post(query, variables).await;
        assert_error_code(&response, code);
        response
    }
}

/// Asserts the first error's `extensions.code`.
#[track_caller]
pub fn assert_error_code(response: &Gql, code: &str) {
    assert_eq!(response.error_code(), Some(code), "expected {code}, got: {:#}", response.body);
}
