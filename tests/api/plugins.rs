//! Payment-method plugins through the API, with real plugin libraries: installing and refusing
//! libraries, charges, declines, timeouts and the reconciler, refunds through the plugin (F3),
//! faulty plugins, payment-method administration with write-only secrets, and `settle plugin
//! check` against every shipped library.
//!
//! The libraries are built by the tests themselves (see [`plugin_libraries`]), in the target
//! directory the tests were built in, and each test copies the ones it needs into its own plugin
//! directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use settle::auth::Role;

use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// The plugin libraries, built once per test binary.
// ---------------------------------------------------------------------------------------------

pub(crate) const CARD_SIM: &str = "libsettle_plugin_card_sim.so";
const MANUAL: &str = "libsettle_plugin_manual.so";
const PANICKY: &str = "libsettle_test_plugin_panicky.so";
pub(crate) const MISBEHAVING: &str = "libsettle_test_plugin_misbehaving.so";
const BAD_ABI: &str = "libsettle_test_plugin_bad_abi.so";
const NO_VTABLE: &str = "libsettle_test_plugin_no_vtable.so";

/// card-sim's test card numbers (plugins/README.md).
pub(crate) mod cards {
    pub(crate) const SUCCEEDS: &str = "4242424242424242";
    pub(crate) const INSUFFICIENT_FUNDS: &str = "4000000000009995";
    pub(crate) const EXPIRED: &str = "4000000000000069";
    /// Records a success at once, then sleeps `details.hang_ms` before answering.
    pub(crate) const NEVER_ANSWERS: &str = "4000000000000259";
}

/// The packages of an ordinary build that leaves the shipped plugin libraries: the server and
/// both plugins in one cargo invocation, as `cargo build --workspace` does, so that whatever cargo
/// unifies across one build (features, dependencies) is shared by the server and the libraries.
const ORDINARY_BUILD: [&str; 3] = ["settle-server", "settle-plugin-manual", "settle-plugin-card-sim"];

/// The deliberately broken libraries of `tests/plugins`.
const TEST_PLUGINS: [&str; 4] =
    ["settle-test-plugin-panicky", "settle-test-plugin-bad-abi", "settle-test-plugin-no-vtable", "settle-test-plugin-misbehaving"];

/// Builds the plugin libraries from the workspace, once per test binary, and returns the
/// directory holding them.
///
/// They are the shipped libraries exactly as [`ORDINARY_BUILD`] leaves them, plus the test
/// plugins: [`shipped_plugins_from_an_ordinary_build_pass_plugin_check`] runs that build again
/// meanwhile, and because it builds the shipped libraries with the same features, cargo finds
/// them fresh and leaves the files alone while other tests copy them.
pub(crate) fn plugin_libraries() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    static BUILDING: Mutex<()> = Mutex::new(());
    if let Some(dir) = BUILT.get() {
        return dir;
    }
    // One build at a time; a build that failed (and poisoned the lock) is tried again.
    let _building = BUILDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    BUILT.get_or_init(|| {
        let dir = cargo_build_libraries(&[&ORDINARY_BUILD[..], &TEST_PLUGINS[..]].concat());
        for file in [CARD_SIM, MANUAL, PANICKY, BAD_ABI, NO_VTABLE, MISBEHAVING] {
            assert!(dir.join(file).is_file(), "the build left no {file} in {}", dir.display());
        }
        dir
    })
}

/// Runs `cargo build --lib` for `packages` in one invocation and returns the directory it leaves
/// the libraries in. `--lib` leaves the `settle` binary alone, which other tests are running
/// meanwhile.
fn cargo_build_libraries(packages: &[&str]) -> PathBuf {
    let args: Vec<&str> = std::iter::once("--lib").chain(packages.iter().flat_map(|package| ["-p", *package])).collect();
    cargo_build(&args)
}

/// A plugin directory for one test, holding copies of `files`.
pub(crate) fn plugin_dir(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for file in files {
        copy_library(dir.path(), file);
    }
    dir
}

/// Copies the built library `file` into `dir` under its own name.
pub(crate) fn copy_library(dir: &Path, file: &str) {
    copy_library_as(dir, file, file);
}

fn copy_library_as(dir: &Path, file: &str, name: &str) {
    let from = plugin_libraries().join(file);
    std::fs::copy(&from, dir.join(name)).unwrap_or_else(|e| panic!("copying {} into {}: {e}", from.display(), dir.display()));
}

/// A server loading plugins from `dir`, with a 1 s plugin call timeout and a reconciler that runs
/// every 200 ms (it settles an attempt 1 s after the call timeout, i.e. 2 s after it started).
async fn spawn_app(dir: &Path) -> TestApp {
    spawn_app_reconciling_every(dir, 200).await
}

/// The same with another reconciler interval. The fault tests stretch it: the panicky plugin's
/// status look-up sleeps 10 s, so a reconciler asking it about their pending charges would add
/// timeouts to the faults they count, at moments that depend on the machine's speed.
async fn spawn_app_reconciling_every(dir: &Path, interval_ms: u64) -> TestApp {
    let dir = dir.to_path_buf();
    TestApp::spawn_with(move |s| {
        s.plugin_dir = Some(dir);
        s.limits.plugin_call_timeout_ms = 1000;
        s.reconcile_interval_ms = interval_ms;
    })
    .await
}

/// A reconciler interval no fault test lasts: it runs once at start, on nothing.
const RECONCILER_IDLE_MS: u64 = 600_000;

// ---------------------------------------------------------------------------------------------
// Requests, as a client sends them.
// ---------------------------------------------------------------------------------------------

pub(crate) const PLUGIN_FIELDS: &str =
    "id name version protocolVersion capabilities currencies methodTypes configSchema source outOfProcess restarts healthy calls faults lastFault";

const PAYMENT_FIELDS: &str = "id number amount { amount currency } allocated { amount } refunded { amount } \
    unallocated { amount } status allocationState externalReference method { id name plugin } \
    allocations { id invoiceId amount { amount } active } refunds { id amount { amount } outcome outcomeReason }";

const METHOD_FIELDS: &str = "id name type plugin archived configuration secretFieldsSet";

const REFUND_FIELDS: &str = "id paymentId amount { amount currency } outcome outcomeReason externalReference";

fn install_query() -> String {
    format!("mutation($file: String!) {{ installPlugin(file: $file) {{ {PLUGIN_FIELDS} }} }}")
}

fn pay_query() -> String {
    format!(
        "mutation($invoice: ID!, $input: PayInvoiceInput!, $key: String!) {{ payInvoice(id: $invoice, input: $input, idempotencyKey: $key) {{ payment {{ {PAYMENT_FIELDS} }} }} }}"
    )
}

fn refund_query() -> String {
    format!(
        "mutation($payment: ID!, $input: RefundInput!, $key: String!) {{ refundPayment(id: $payment, input: $input, idempotencyKey: $key) {{ refund {{ {REFUND_FIELDS} }} }} }}"
    )
}

fn create_method_query() -> String {
    format!("mutation($input: PaymentMethodInput!) {{ createPaymentMethod(input: $input) {{ {METHOD_FIELDS} }} }}")
}

fn update_method_query() -> String {
    format!("mutation($id: ID!, $input: PaymentMethodChange!) {{ updatePaymentMethod(id: $id, input: $input) {{ {METHOD_FIELDS} }} }}")
}

pub(crate) fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_else(|| panic!("no id in {value:#}")).to_owned()
}

/// `value[field].amount` as a string.
pub(crate) fn amount<'v>(value: &'v Value, field: &str) -> &'v str {
    value[field]["amount"].as_str().unwrap_or_else(|| panic!("no {field}.amount in {value:#}"))
}

/// The first error's message.
pub(crate) fn message(response: &Gql) -> String {
    response.body["errors"][0]["message"].as_str().unwrap_or_default().to_owned()
}

/// The installed plugins as an ADMIN sees them.
pub(crate) async fn plugins(app: &TestApp) -> Vec<Value> {
    let data = app.admin().ok(&format!("{{ plugins {{ {PLUGIN_FIELDS} }} }}"), json!({})).await;
    data["plugins"].as_array().expect("a list of plugins").clone()
}

/// One installed plugin by id.
pub(crate) async fn plugin(app: &TestApp, id: &str) -> Value {
    let all = plugins(app).await;
    all.iter().find(|p| p["id"] == id).unwrap_or_else(|| panic!("no plugin {id} in {all:#?}")).clone()
}

/// (id, source) of every installed plugin, sorted.
async fn plugin_sources(app: &TestApp) -> Vec<(String, String)> {
    let mut sources: Vec<(String, String)> = plugins(app)
        .await
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_owned(), p["source"].as_str().unwrap().to_owned()))
        .collect();
    sources.sort();
    sources
}

pub(crate) fn calls(plugin: &Value) -> i64 {
    plugin["calls"].as_i64().unwrap_or_else(|| panic!("no calls in {plugin:#}"))
}

pub(crate) fn faults(plugin: &Value) -> i64 {
    plugin["faults"].as_i64().unwrap_or_else(|| panic!("no faults in {plugin:#}"))
}

async fn install(app: &TestApp, file: &str) -> Gql {
    app.admin().post(&install_query(), json!({"file": file})).await
}

/// The id of the tenant's payment method called `name`.
pub(crate) async fn method_id(app: &TestApp, name: &str) -> String {
    let data = app.viewer().ok("{ paymentMethods(includeArchived: true) { id name plugin } }", json!({})).await;
    let methods = data["paymentMethods"].as_array().unwrap();
    id_of(methods.iter().find(|m| m["name"] == name).unwrap_or_else(|| panic!("no method {name}: {data:#}")))
}

/// The seeded "Credit card" method, bound to card-sim.
pub(crate) async fn card_method(app: &TestApp) -> String {
    method_id(app, "Credit card").await
}

async fn create_method(app: &TestApp, input: Value) -> Gql {
    app.admin().post(&create_method_query(), json!({"input": input})).await
}

pub(crate) async fn create_method_ok(app: &TestApp, input: Value) -> Value {
    let response = create_method(app, input).await;
    assert!(response.body["errors"].is_null(), "createPaymentMethod failed: {:#}", response.body);
    response.data()["createPaymentMethod"].clone()
}

pub(crate) fn card(number: &str) -> Value {
    json!({"card_number": number})
}

/// payInvoice with `input` and `key`.
pub(crate) async fn pay_with_key(app: &TestApp, invoice: &str, input: &Value, key: &str) -> Gql {
    app.billing().post(&pay_query(), json!({"invoice": invoice, "input": input, "key": key})).await
}

/// Charges `details` on the invoice with `method`, the whole balance, under a new key.
pub(crate) async fn charge(app: &TestApp, invoice: &str, method: &str, details: Value) -> Gql {
    pay_with_key(app, invoice, &json!({"methodId": method, "details": details}), &new_key()).await
}

pub(crate) async fn charge_ok(app: &TestApp, invoice: &str, method: &str, details: Value) -> Value {
    let response = charge(app, invoice, method, details).await;
    assert!(response.body["errors"].is_null(), "payInvoice failed: {:#}", response.body);
    response.data()["payInvoice"]["payment"].clone()
}

async fn refund(app: &TestApp, payment: &str, amount: &str) -> Gql {
    app.billing().post(&refund_query(), json!({"payment": payment, "input": {"amount": amount}, "key": new_key()})).await
}

pub(crate) async fn refund_ok(app: &TestApp, payment: &str, amount: &str) -> Value {
    let response = refund(app, payment, amount).await;
    assert!(response.body["errors"].is_null(), "refundPayment failed: {:#}", response.body);
    response.data()["refundPayment"]["refund"].clone()
}

async fn remove_allocation(app: &TestApp, allocation: &str) {
    app.billing()
        .ok(
            "mutation($id: ID!, $key: String!) { removeAllocation(id: $id, idempotencyKey: $key) { allocation { id active } } }",
            json!({"id": allocation, "key": new_key()}),
        )
        .await;
}

pub(crate) async fn read_payment(app: &TestApp, id: &str) -> Value {
    app.viewer().ok(&format!("query($id: ID!) {{ payment(id: $id) {{ {PAYMENT_FIELDS} }} }}"), json!({"id": id})).await["payment"]
        .clone()
}

pub(crate) async fn read_invoice(app: &TestApp, id: &str) -> Value {
    app.viewer()
        .ok(
            "query($id: ID!) { invoice(id: $id) { id number status total { amount } balance { amount } amountPaid { amount } \
             allocations { id paymentId amount { amount } active } } }",
            json!({"id": id}),
        )
        .await["invoice"]
        .clone()
}

pub(crate) async fn payment_count(app: &TestApp) -> i64 {
    app.viewer().ok("{ payments { totalCount } }", json!({})).await["payments"]["totalCount"].as_i64().unwrap()
}

/// /healthz answers 200 and a GraphQL query still works.
pub(crate) async fn assert_serving(app: &TestApp) {
    let health = app.http.get(app.url("/healthz")).send().await.expect("the server answers /healthz");
    assert_eq!(health.status().as_u16(), 200, "/healthz");
    let data = app.viewer().ok("{ paymentMethods { id } }", json!({})).await;
    assert!(!data["paymentMethods"].as_array().unwrap().is_empty(), "queries still work");
}

/// Polls `check` every 100 ms until it gives a value, for at most `limit`.
pub(crate) async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Installing plugin libraries.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn install_plugin_loads_a_library_copied_into_the_plugin_directory_and_replaces_the_built_in() {
    let dir = plugin_dir(&[]);
    let app = spawn_app(dir.path()).await;
    assert_eq!(
        plugin_sources(&app).await,
        vec![("card-sim".to_owned(), "built-in".to_owned()), ("manual".to_owned(), "built-in".to_owned())],
        "an empty plugin directory leaves the built-ins"
    );

    copy_library(dir.path(), CARD_SIM);
    let response = install(&app, CARD_SIM).await;
    assert!(response.body["errors"].is_null(), "installPlugin failed: {:#}", response.body);
    let installed = &response.data()["installPlugin"];
    assert_eq!(installed["id"], "card-sim");
    assert_eq!(installed["source"], CARD_SIM);

    let card_sim = plugin(&app, "card-sim").await;
    assert_eq!(card_sim["source"], CARD_SIM, "the library replaced the built-in: {card_sim:#}");
    assert_eq!(card_sim["healthy"], true);
    assert_eq!(card_sim["capabilities"], json!(["CHARGE", "REFUND", "STATUS"]));
    assert_eq!(card_sim["methodTypes"], json!(["CARD"]));
    assert_eq!(card_sim["protocolVersion"], 1);
    assert_eq!(card_sim["faults"], 0);
    assert!(card_sim["lastFault"].is_null());
    assert_eq!(card_sim["configSchema"]["properties"]["api_key"]["secret"], true, "the schema marks the secret");
    assert_eq!(
        plugin_sources(&app).await,
        vec![("card-sim".to_owned(), CARD_SIM.to_owned()), ("manual".to_owned(), "built-in".to_owned())],
        "one card-sim, from the library"
    );
}

#[tokio::test]
async fn only_admins_install_plugins_or_list_them() {
    let dir = plugin_dir(&[CARD_SIM]);
    let app = spawn_app(dir.path()).await;
    for role in [Role::Billing, Role::Viewer] {
        let caller = app.as_role(role);
        caller.fails(&install_query(), json!({"file": CARD_SIM}), "FORBIDDEN").await;
        caller.fails(&format!("{{ plugins {{ {PLUGIN_FIELDS} }} }}"), json!({}), "FORBIDDEN").await;
    }
    app.with_token(None).fails(&install_query(), json!({"file": CARD_SIM}), "UNAUTHENTICATED").await;
    assert_eq!(plugin(&app, "card-sim").await["calls"], 0, "the refused installs called nothing");
}

#[tokio::test]
async fn install_plugin_refuses_broken_libraries_and_names_outside_the_directory_and_changes_nothing() {
    // The plugin directory sits inside `root`, next to a real library that must stay unreachable.
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    copy_library(root.path(), CARD_SIM);
    std::fs::create_dir(dir.join("sub")).unwrap();
    copy_library(&dir.join("sub"), CARD_SIM);
    let app = spawn_app(&dir).await;
    let before = plugin_sources(&app).await;

    copy_library(&dir, BAD_ABI);
    copy_library(&dir, NO_VTABLE);
    copy_library_as(&dir, CARD_SIM, "libsettle_plugin_card_sim.txt");
    std::fs::write(dir.join("notalib.so"), "this is a text file, not a shared library\n").unwrap();
    std::os::unix::fs::symlink(root.path().join(CARD_SIM), dir.join("link.so")).unwrap();

    let refused = install(&app, BAD_ABI).await;
    assert_error_code(&refused, "INVALID_PLUGIN");
    assert!(message(&refused).contains("ABI version"), "names the ABI version: {:#}", refused.body);
    assert!(message(&refused).contains("999"), "says which version it speaks: {:#}", refused.body);

    let refused = install(&app, NO_VTABLE).await;
    assert_error_code(&refused, "INVALID_PLUGIN");
    assert!(message(&refused).contains("settle_plugin_vtable"), "names the missing symbol: {:#}", refused.body);

    let outside = root.path().join(CARD_SIM);
    let names = [
        format!("../{CARD_SIM}"),
        outside.to_str().unwrap().to_owned(),
        format!("sub/{CARD_SIM}"),
        format!("./{CARD_SIM}"),
        "..".to_owned(),
        "libnot_there.so".to_owned(),
        "libsettle_plugin_card_sim.txt".to_owned(),
        "libsettle_plugin_card_sim".to_owned(),
        String::new(),
        "notalib.so".to_owned(),
        "link.so".to_owned(),
    ];
    for name in &names {
        let refused = install(&app, name).await;
        assert_error_code(&refused, "INVALID_PLUGIN");
        assert!(refused.data().is_null(), "{name:?}: no plugin returned: {:#}", refused.body);
    }
    // A name with control characters is refused, and the message quotes it with escapes, never
    // with the raw characters (a terminal escape sequence, a newline that forges a log line).
    for name in ["lib\u{1b}[2Jx.so", "libx\nFAKE LOG LINE.so", "lib\u{0}x.so", "lib\rx.so"] {
        let refused = install(&app, name).await;
        assert_error_code(&refused, "INVALID_PLUGIN");
        let text = message(&refused);
        assert!(!text.contains(|c: char| c.is_control()), "{name:?}: the message carries a raw control character: {text:?}");
    }

    assert_eq!(plugin_sources(&app).await, before, "a refused library changes nothing");
    assert_eq!(plugin(&app, "card-sim").await["source"], "built-in", "not even via ../, sub/ or a symlink");
    assert_serving(&app).await;
    // And the plugins that are there still work.
    let seed = app.seed().await;
    let invoice = app.open_invoice(&seed, "25.00").await;
    let payment = charge_ok(&app, &id_of(&invoice), &card_method(&app).await, card(cards::SUCCEEDS)).await;
    assert!(payment["externalReference"].as_str().unwrap().starts_with("ch_sim_"));
}

#[tokio::test]
async fn broken_libraries_in_the_plugin_directory_at_start_are_refused_and_the_server_starts() {
    let dir = plugin_dir(&[BAD_ABI, NO_VTABLE, CARD_SIM]);
    std::fs::write(dir.path().join("notalib.so"), "not a shared library").unwrap();
    std::fs::write(dir.path().join("README.txt"), "not a library at all").unwrap();
    let app = spawn_app(dir.path()).await;
    assert_serving(&app).await;
    assert_eq!(
        plugin_sources(&app).await,
        vec![("card-sim".to_owned(), CARD_SIM.to_owned()), ("manual".to_owned(), "built-in".to_owned())],
        "the good library loaded, the broken ones did not"
    );
}

// ---------------------------------------------------------------------------------------------
// Charges through the loaded card-sim library.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn charge_through_the_card_sim_library_records_a_fully_allocated_payment_and_pays_the_invoice() {
    let dir = plugin_dir(&[CARD_SIM]);
    let app = spawn_app(dir.path()).await;
    let seed = app.seed().await;
    let invoice = app.open_invoice(&seed, "120.00").await;
    let card_method = card_method(&app).await;
    let before = plugin(&app, "card-sim").await;
    assert_eq!(before["source"], CARD_SIM, "the library loaded at start replaced the built-in");

    let payment = charge_ok(&app, &id_of(&invoice), &card_method, card(cards::SUCCEEDS)).await;
    let reference = payment["externalReference"].as_str().expect("a charge reference");
    assert!(reference.starts_with("ch_sim_"), "the gateway's charge id: {payment:#}");
    assert_eq!(amount(&payment, "amount"), "120.00");
    assert_eq!(amount(&payment, "allocated"), "120.00");
    assert_eq!(amount(&payment, "unallocated"), "0.00");
    assert_eq!(payment["allocationState"], "ALLOCATED");
    assert_eq!(payment["method"]["plugin"], "card-sim");
    assert_eq!(payment["allocations"].as_array().unwrap().len(), 1);
    assert_eq!(payment["allocations"][0]["invoiceId"], invoice["id"]);

    let invoice = read_invoice(&app, &id_of(&invoice)).await;
    assert_eq!(invoice["status"], "PAID");
    assert_eq!(amount(&invoice, "balance"), "0.00");

    let after = plugin(&app, "card-sim").await;
    assert_eq!(after["source"], CARD_SIM);
    assert!(calls(&after) > calls(&before), "the library handled the charge: {before:#} then {after:#}");
    assert_eq!(faults(&after), 0);
}

#[tokio::test]
async fn finalize_with_charge_finalizes_and_pays_a_draft_through_the_library() {
    let dir = plugin_dir(&[CARD_SIM]);
    let app = spawn_app(dir.path()).await;
    let seed = app.seed().await;
    let draft = app.draft_invoice(&seed, json!([{"description": "Consultation", "unitPrice": "90.00"}])).await;
    assert_eq!(draft["status"], "DRAFT");
    let card_method = card_method(&app).await;
    let calls_before = calls(&plugin(&app, "card-sim").await);

    let input = json!({"paymentOption": "CHARGE", "payment": {"methodId": card_method, "details": card(cards::SUCCEEDS)}});
    let data = app
        .billing()
        .ok(
            "mutation($id: ID!, $input: FinalizeInvoiceInput!, $key: String!) { finalizeInvoice(id: $id, input: $input, idempotencyKey: $key) { invoice { id number status balance { amount } amountPaid { amount } } } }",
            json!({"id": draft["id"], "input": input, "key": new_key()}),
        )
        .await;
    let invoice = &data["finalizeInvoice"]["invoice"];
    assert_eq!(invoice["status"], "PAID", "{invoice:#}");
    assert!(invoice["number"].as_str().is_some_and(|n| n.starts_with("INV-")), "finalized with a number: {invoice:#}");
    assert_eq!(amount(invoice, "amountPaid"), "90.00");

    let invoice = read_invoice(&app, &id_of(invoice)).await;
    let allocations = invoice["allocations"].as_array().unwrap();
    assert_eq!(allocations.len(), 1, "{invoice:#}");
    let payment = read_payment(&app, allocations[0]["paymentId"].as_str().unwrap()).await;
    assert!(payment["externalReference"].as_str().unwrap().starts_with("ch_sim_"), "{payment:#}");
    assert_eq!(amount(&payment, "amount"), "90.00");
    assert!(calls(&plugin(&app, "card-sim").await) > calls_before, "the library charged");
}

#[tokio::test]
async fn p3_a_charge_above_the_invoice_balance_is_refused_and_nothing_is_charged() {
    let dir = plugin_dir(&[CARD_SIM]);
    let app = spawn_app(dir.path()).await;
    let seed = app.seed().await;
    let invoice = app.open_invoice(&seed, "50.00").await;
    let card_method = card_method(&app).await;
    let calls_before = calls(&plugin(&app, "card-sim").await);

    let input = json!({"methodId": card_method, "details": card(cards::SUCCEEDS), "amount": "50.01"});
    let refused = pay_with_key(&app, &id_of(&invoice), &input, &new_key()).await;
    assert_error_code(&refused, "AMOUNT_EXCEEDS_BALANCE");
    assert!(message(&refused).contains("50.00"), "says the balance: {:#}", refused.body);

    assert_eq!(calls(&plugin(&app, "card-sim").await), calls_before, "the plugin was never called");
    assert_eq!(payment_count(&app).await, 0);
    let invoice = read_invoice(&app, &id_of(&invoice)).await;
    assert_eq!(invoice["status"], "OPEN");
    assert_eq!(amount(&invoice, "balance"), "50.00");

    // A part of the balance is fine.
    let input = json!({"methodId": card_method, "details": card(cards::SUCCEEDS), "amount": "20.00"});
    let partial = pay_with_key(&app, &id_of(&invoice), &input, &new_key()).await;
    assert!(partial.body["errors"].is_null(), "{:#}", partial.body);
    assert_eq!(amount(&read_invoice(&app, &id_of(&invoice)).await, "balance"), "30.00");
}

#[tokio::test]
async fn a_declined_charge_records_no_payment_and_its_key_replays_the_decline_without_calling_the_plugin() {
    let dir = plugin_dir(&[CARD_SIM]);
    let app = spawn_app(dir.path()).await;
    let seed = app.seed().await;
    let invoice = app.open_invoice(&seed, "70.00").await;
    let invoice_id = id_of(&invoice);
    let card_method = card_method(&app).await;
    let payments_before = payment_count(&app).await;

    let key = new_key();
    let input = json!({"methodId": card_method, "details": card(cards::INSUFFICIENT_FUNDS)});
    let declined = pay_with_key(&app, &invoice_id, &input, &key).await;
    assert_error_code(&declined, "PAYMENT_DECLINED");
    assert!(message(&declined).contains("insufficient funds"), "gives the gateway's reason: {:#}", declined.body);
    assert!(!declined.body.to_string().contains(cards::INSUFFICIENT_FUNDS), "never echoes the card number");
    assert_eq!(payment_count(&app).await, payments_before, "no payment recorded");
    let read = read_invoice(&app, &invoice_id).await;
    assert_eq!(read["status"], "OPEN");
    assert_eq!(amount(&read, "balance"), "70.00");

    let calls_before = calls(&plugin(&app, "card-sim").await);
    let again = pay_with_key(&app, &invoice_id, &input, &key).await;
    assert_error_code(&again, "PAYMENT_DECLINED");
    assert_eq!(message(&again), message(&declined), "the same decline");
    assert_eq!(calls(&plugin(&app, "card-sim").await), calls_before, "the replay did not call the plugin");
    assert_eq!(payment_count(&app).await, payments_before);

    // Another decline reason, and a good card afterwards with a new key.
    let expired = charge(&app, &invoice_id, &card_method, card(cards::EXPIRED)).await;
    assert_error_code(&expired, "PAYMENT_DECLINED");
    assert!(message(&expired).contains("card expired"), "{:#}", expired.body);
    charge_ok(&app, &invoice_id, &card_method, card(cards::SUCCEEDS)).await;
    assert_eq!(read_invoice(&app, &invoice_id).await["status"], "PAID");
    assert_eq!(payment_count(&app).await, payments_before + 1);
}

/// X2 for charges: a charge claims its request's key in the one idempotency gate every money
/// change passes, so a repeat answers the first payment without a new charge, another request
/// under the key (a charge of another amount, or another mutation) is IDEMPOTENCY_KEY_REUSED
/// before any plugin call, and identical requests at once make one payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn x2_a_charge_passes_the_one_idempotency_gate() {
    let dir = plugin_dir(&[CARD_SIM]);
    let app = spawn_app(dir.path()).await;
    let seed = app.seed().await;
    let invoice_id = id_of(&app.open_invoice(&seed, "70.00").await);
    let card_method = card_method(&app).await;
    let cash = method_id(&app, "Cash").await;

    let key = new_key();
    let input = json!({"methodId": card_method, "amount": "10.00", "details": card(cards::SUCCEEDS)});
    let first = pay_with_key(&app, &invoice_id, &input, &key).await;
    assert!(first.body["errors"].is_null(), "{:#}", first.body);
    let payment = first.data()["payInvoice"]["payment"]["id"].clone();
    let (payments, calls_after_first) = (payment_count(&app).await, calls(&plugin(&app, "card-sim").await));

    let again = pay_with_key(&app, &invoice_id, &input, &key).await;
    assert_eq!(again.data()["payInvoice"]["payment"]["id"], payment, "a repeat answers the first payment: {:#}", again.body);
    let other_amount = json!({"methodId": card_method, "amount": "11.00", "details": card(cards::SUCCEEDS)});
    assert_error_code(&pay_with_key(&app, &invoice_id, &other_amount, &key).await, "IDEMPOTENCY_KEY_REUSED");
    let record = "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id } } }";
    let recorded = json!({"clientId": seed.client, "locationId": seed.location, "methodId": cash, "amount": "10.00"});
    assert_error_code(&app.billing().post(record, json!({"input": recorded, "key": key})).await, "IDEMPOTENCY_KEY_REUSED");
    let dry = app
        .billing()
        .post(
            "mutation($invoice: ID!, $input: PayInvoiceInput!, $key: String!) { payInvoice(id: $invoice, input: $input, idempotencyKey: $key, dryRun: true) { payment { id } preview { replay } } }",
            json!({"invoice": invoice_id, "input": input, "key": key}),
        )
        .await;
    assert_eq!(dry.data()["payInvoice"]["preview"]["replay"], true, "{:#}", dry.body);

    // A key claimed by a recorded payment refuses a charge before the plugin hears of it.
    let recorded_key = new_key();
    app.billing().ok(record, json!({"input": recorded, "key": recorded_key})).await;
    assert_error_code(&pay_with_key(&app, &invoice_id, &input, &recorded_key).await, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(calls(&plugin(&app, "card-sim").await), calls_after_first, "no refused or repeated request reached the plugin");
    assert_eq!(payment_count(&app).await, payments + 1, "only the recorded payment was added");

    // Eight identical charge requests at once: one payment, every answer names it.
    let key = new_key();
    let input = json!({"methodId": card_method, "amount": "5.00", "details": card(cards::SUCCEEDS)});
    let answers = futures::future::join_all((0..8).map(|_| pay_with_key(&app, &invoice_id, &input, &key))).await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|answer| answer.data()["payInvoice"]["payment"]["id"].as_str().unwrap_or_else(|| panic!("{:#}", answer.body)).to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "one payment for one key: {ids:?}");
    assert_eq!(payment_count(&app).await, payments + 2);
    assert_eq!(amount(&read_invoice(&app, &invoice_id).await, "balance"), "55.00", "70.00 - 10.00 - 5.00, charged once each");
}

#[tokio::test]
async fn card_details_the_plugin_cannot_read_are_rejected_and_nothing_is_charged() {
    let dir = plugin_dir(&[CARD_SIM]);
    let app = spawn_app(dir.path()).await;
    let seed = app.seed().await;
    let invoice = app.open_invoice(&seed, "15.00").await;
    let card_method = card_method(&app).await;
    let mut keys = Vec::new();
    for details in [json!({}), card("4242"), card("4242-4242-4242-4242"), card("NaN")] {
        let key = new_key();
        let input = json!({"methodId": card_method, "details": details});
        let rejected = pay_with_key(&app, &id_of(&invoice), &input, &key).await;
        assert_error_code(&rejected, "PLUGIN_REJECTED");
        assert!(message(&rejected).contains("card_number"), "{details}: {:#}", rejected.body);
        keys.push(key);
    }
    assert_eq!(payment_count(&app).await, 0);
    // Each attempt that reached the plugin is on the invoice's audit trail as charge.failed, with
    // the idempotency key of the request that made it (docs/rules.md, "Charges").
    let trail = app
        .viewer()
        .ok(
            "query($record: String) { auditEvents(first: 50, recordId: $record) { edges { node { action idempotencyKey reason } } } }",
            json!({"record": format!("invoice:{}", id_of(&invoice))}),
        )
        .await;
    let failed: Vec<&Value> = trail["auditEvents"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| &edge["node"])
        .filter(|event| event["action"] == "charge.failed")
        .collect();
    let mut recorded: Vec<&str> = failed.iter().map(|event| event["idempotencyKey"].as_str().unwrap_or("(none)")).collect();
    let mut sent: Vec<&str> = keys.iter().map(String::as_str).collect();
    recorded.sort_unstable();
    sent.sort_unstable();
    assert_eq!(recorded, sent, "one charge.failed per refused attempt, each with its request's key: {trail:#}");
    assert!(failed.iter().all(|event| event["reason"].as_str().is_some_and(|r| r.contains("card_number"))), "{trail:#}");
    let card_sim = plugin(&app, "card-sim").await;
    assert_eq!(faults(&card_sim), 0, "a plugin's own errors are not faults");
    assert_eq!(card_sim["healthy"], true);
}

// ---------------------------------------------------------------------------------------------
// A charge whose answer never comes: CHARGE_PENDING, then the reconciler.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_that_times_out_is_pending_then_settled_once_by_the_reconciler() {
    let dir = plugin_dir(&[CARD_SIM]);
    let app = spawn_app(dir.path()).await;
    let seed = app.seed().await;
    let invoice = app.open_invoice(&seed, "80.00").await;
    let invoice_id = id_of(&invoice);
    let card_method = card_method(&app).await;

    let key = new_key();
    let input = json!({"methodId": card_method, "details": {"card_number": cards::NEVER_ANSWERS, "hang_ms": 3000}});
    let started = Instant::now();
    let pending = pay_with_key(&app, &invoice_id, &input, &key).await;
    let waited = started.elapsed();
    assert_error_code(&pending, "CHARGE_PENDING");
    assert!(waited >= Duration::from_millis(900), "the call timeout fired after about 1 s, not {waited:?}");
    assert!(waited < Duration::from_millis(2900), "the request did not wait for the hung plugin: {waited:?}");
    // The reconciler leaves an attempt alone until 1 s after the call timeout (2 s after it
    // started), so until then nothing may be recorded; a slower machine only shortens the window.
    let (count, status) = (payment_count(&app).await, read_invoice(&app, &invoice_id).await["status"].clone());
    if started.elapsed() < Duration::from_millis(1900) {
        assert_eq!(count, 0, "no payment while the outcome is unknown");
        assert_eq!(status, "OPEN");
    }

    let paid = eventually(Duration::from_secs(10), "the reconciler settles the charge", || async {
        let invoice = read_invoice(&app, &invoice_id).await;
        (invoice["status"] == "PAID").then_some(invoice)
    })
    .await;
    let allocations = paid["allocations"].as_array().unwrap();
    assert_eq!(allocations.len(), 1, "one allocation: {paid:#}");
    assert_eq!(amount(&allocations[0], "amount"), "80.00");
    let payment_id = allocations[0]["paymentId"].as_str().unwrap().to_owned();
    let payment = read_payment(&app, &payment_id).await;
    assert!(payment["externalReference"].as_str().unwrap().starts_with("ch_sim_"), "the sim charge: {payment:#}");
    assert_eq!(amount(&payment, "amount"), "80.00");

    // The same request with the same key learns the outcome: that payment.
    let retry = pay_with_key(&app, &invoice_id, &input, &key).await;
    assert!(retry.body["errors"].is_null(), "the retry returns the payment: {:#}", retry.body);
    assert_eq!(retry.data()["payInvoice"]["payment"]["id"], json!(payment_id));

    // Once the hung call has finally answered, still exactly one payment.
    tokio::time::sleep((started + Duration::from_millis(3500)).saturating_duration_since(Instant::now())).await;
    assert_eq!(payment_count(&app).await, 1, "never recorded twice");
    let invoice = read_invoice(&app, &invoice_id).await;
    assert_eq!(invoice["allocations"].as_array().unwrap().len(), 1);
    assert_eq!(amount(&invoice, "amountPaid"), "80.00");

    let card_sim = plugin(&app, "card-sim").await;
    assert_eq!(faults(&card_sim), 1, "the timeout is a fault: {card_sim:#}");
    assert!(card_sim["lastFault"].as_str().unwrap_or_default().contains("in time"), "{card_sim:#}");
    assert_eq!(card_sim["healthy"], true, "one fault does not make it unhealthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_pending_charge_with_its_key_settles_it_and_the_reconciler_does_not_record_it_again() {
    let dir = plugin_dir(&[CARD_SIM]);
    let app = spawn_app(dir.path()).await;
    let seed = app.seed().await;
    let invoice = app.open_invoice(&seed, "45.00").await;
    let invoice_id = id_of(&invoice);
    let key = new_key();
    let input = json!({"methodId": card_method(&app).await, "details": {"card_number": cards::NEVER_ANSWERS, "hang_ms": 3000}});
    let started = Instant::now();
    assert_error_code(&pay_with_key(&app, &invoice_id, &input, &key).await, "CHARGE_PENDING");

    // At once, before the reconciler may touch it: the gateway knows the key and answers.
    let retry = pay_with_key(&app, &invoice_id, &input, &key).await;
    assert!(retry.body["errors"].is_null(), "the retry settles the charge: {:#}", retry.body);
    let payment = retry.data()["payInvoice"]["payment"].clone();
    assert!(payment["externalReference"].as_str().unwrap().starts_with("ch_sim_"));
    assert_eq!(amount(&payment, "allocated"), "45.00");

    // Past the reconciler's grace and the hung call's end: nothing more was recorded.
    tokio::time::sleep((started + Duration::from_millis(3500)).saturating_duration_since(Instant::now())).await;
    assert_eq!(payment_count(&app).await, 1);
    let invoice = read_invoice(&app, &invoice_id).await;
    assert_eq!(invoice["status"], "PAID");
    assert_eq!(invoice["allocations"].as_array().unwrap().len(), 1);
    let again = pay_with_key(&app, &invoice_id, &input, &key).await;
    assert_eq!(again.data()["payInvoice"]["payment"]["id"], payment["id"], "{:#}", again.body);
}

// ---------------------------------------------------------------------------------------------
// Refunds through the plugin (F3).
// ---------------------------------------------------------------------------------------------

/// Charges an invoice of `total` with a good card and removes the allocation, leaving the whole
/// payment unallocated; returns the payment.
async fn unallocated_card_payment(app: &TestApp, seed: &Seed, total: &str) -> Value {
    let invoice = app.open_invoice(seed, total).await;
    let payment = charge_ok(app, &id_of(&invoice), &card_method(app).await, card(cards::SUCCEEDS)).await;
    let allocation = payment["allocations"][0]["id"].as_str().expect("an allocation").to_owned();
    remove_allocation(app, &allocation).await;
    let payment = read_payment(app, &id_of(&payment)).await;
    assert_eq!(amount(&payment, "unallocated"), total, "{payment:#}");
    payment
}

#[tokio::test]
async fn f3_a_refund_of_a_card_payment_goes_through_the_plugin() {
    let dir = plugin_dir(&[CARD_SIM]);
    let app = spawn_app(dir.path()).await;
    let seed = app.seed().await;
    let payment = unallocated_card_payment(&app, &seed, "100.00").await;
    let payment_id = id_of(&payment);
    let calls_before = calls(&plugin(&app, "card-sim").await);

    let first = refund_ok(&app, &payment_id, "40.00").await;
    assert_eq!(first["outcome"], "SUCCEEDED", "{first:#}");
    assert_eq!(amount(&first, "amount"), "40.00");
    let gateway_refund = first["externalReference"].as_str().unwrap_or_default();
    assert!(gateway_refund.starts_with("re_sim_"), "the gateway's refund id, not the charge's: {first:#}");
    assert!(calls(&plugin(&app, "card-sim").await) > calls_before, "the plugin refunded");
    let read = read_payment(&app, &payment_id).await;
    assert_eq!(amount(&read, "refunded"), "40.00");
    assert_eq!(amount(&read, "unallocated"), "60.00");
    assert_eq!(read["status"], "PARTIALLY_REFUNDED");

    // F1: no more than what is unallocated; the plugin is not asked.
    let calls_before = calls(&plugin(&app, "card-sim").await);
    let refused = refund(&app, &payment_id, "60.01").await;
    assert_error_code(&refused, "AMOUNT_EXCEEDS_UNALLOCATED");
    assert_eq!(calls(&plugin(&app, "card-sim").await), calls_before);
    assert_eq!(amount(&read_payment(&app, &payment_id).await, "refunded"), "40.00");

    // The rest, in full.
    assert_eq!(refund_ok(&app, &payment_id, "60.00").await["outcome"], "SUCCEEDED");
    let read = read_payment(&app, &payment_id).await;
    assert_eq!(amount(&read, "refunded"), "100.00");
    assert_eq!(amount(&read, "unallocated"), "0.00");
    assert_eq!(read["status"], "REFUNDED");
}

/// A refund the gateway declines: the charge was taken by the built-in card-sim, whose memory the
/// card-sim library installed afterwards does not share, so the library declines "unknown charge
/// reference" (as a gateway would after losing a charge).
#[tokio::test]
async fn f3_a_refund_the_plugin_declines_changes_no_balance() {
    let dir = plugin_dir(&[]);
    let app = spawn_app(dir.path()).await;
    let seed = app.seed().await;
    let payment = unallocated_card_payment(&app, &seed, "100.00").await;
    let payment_id = id_of(&payment);
    copy_library(dir.path(), CARD_SIM);
    let installed = install(&app, CARD_SIM).await;
    assert!(installed.body["errors"].is_null(), "{:#}", installed.body);

    let declined = refund_ok(&app, &payment_id, "30.00").await;
    assert_eq!(declined["outcome"], "DECLINED", "{declined:#}");
    assert_eq!(declined["externalReference"], Value::Null, "a declined refund has no gateway refund id");
    assert!(declined["outcomeReason"].as_str().unwrap_or_default().contains("unknown charge reference"), "{declined:#}");
    let read = read_payment(&app, &payment_id).await;
    assert_eq!(amount(&read, "refunded"), "0.00", "F3: a declined refund changes no balance");
    assert_eq!(amount(&read, "unallocated"), "100.00");
    assert_eq!(read["status"], "RECEIVED");
    assert_eq!(read["refunds"].as_array().unwrap().len(), 1, "the declined refund stays on record");
    assert_eq!(read["refunds"][0]["outcome"], "DECLINED");

    // Nothing stays reserved: the whole amount can still be asked for (and is declined again).
    let whole = refund_ok(&app, &payment_id, "100.00").await;
    assert_eq!(whole["outcome"], "DECLINED", "{whole:#}");
    let listed = app
        .viewer()
        .ok("{ declined: refunds(filter: {outcome: DECLINED}) { totalCount } succeeded: refunds(filter: {outcome: SUCCEEDED}) { totalCount } }", json!({}))
        .await;
    assert_eq!((listed["declined"]["totalCount"].as_i64(), listed["succeeded"]["totalCount"].as_i64()), (Some(2), Some(0)), "{listed:#}");
    assert_eq!(amount(&read_payment(&app, &payment_id).await, "unallocated"), "100.00");
    // And the money can still be used.
    let invoice = app.open_invoice(&seed, "100.00").await;
    app.billing()
        .ok(
            "mutation($p: ID!, $i: ID!, $key: String!) { applyPayment(id: $p, invoiceId: $i, amount: \"100.00\", idempotencyKey: $key) { allocation { id } } }",
            json!({"p": payment_id, "i": invoice["id"], "key": new_key()}),
        )
        .await;
}

/// A payment's external reference is editable (P9), but for a charged payment it is the gateway
/// charge its refunds are sent to. Editing it must not let a refund of one payment reach another
/// payment's card.
#[tokio::test]
async fn f3_a_refund_goes_to_the_charge_that_took_the_payment_even_after_its_reference_is_edited() {
    let dir = plugin_dir(&[CARD_SIM]);
    let app = spawn_app(dir.path()).await;
    let seed = app.seed().await;
    let first = unallocated_card_payment(&app, &seed, "50.00").await;
    let second = unallocated_card_payment(&app, &seed, "50.00").await;
    let other_charge = second["externalReference"].as_str().unwrap();
    assert_ne!(first["externalReference"].as_str().unwrap(), other_charge);

    let edit = app
        .billing()
        .post(
            "mutation($p: ID!, $r: String, $key: String!) { updatePayment(id: $p, externalReference: $r, idempotencyKey: $key) { payment { id externalReference } } }",
            json!({"p": first["id"], "r": other_charge, "key": new_key()}),
        )
        .await;
    // Either the edit of a charged payment's reference is refused, or the refund still goes to
    // the first charge; in both cases the second payment can afterwards be refunded in full.
    if edit.body["errors"].is_null() {
        assert_eq!(refund_ok(&app, &id_of(&first), "50.00").await["outcome"], "SUCCEEDED");
    }
    let second_refund = refund_ok(&app, &id_of(&second), "50.00").await;
    assert_eq!(second_refund["outcome"], "SUCCEEDED", "the second card's charge was refunded by someone else: {second_refund:#}");
}

// ---------------------------------------------------------------------------------------------
// Faulty plugins: panics, garbage, hangs. The server keeps serving.
// ---------------------------------------------------------------------------------------------

/// A CARD method bound to the panicky test plugin.
async fn panicky_method(app: &TestApp) -> String {
    let method = create_method_ok(app, json!({"name": "Panicky", "type": "CARD", "plugin": "panicky", "config": {}})).await;
    assert_eq!(method["plugin"], "panicky");
    id_of(&method)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_is_a_fault_not_a_crash_and_is_refused_after_three() {
    let dir = plugin_dir(&[PANICKY]);
    let app = spawn_app_reconciling_every(dir.path(), RECONCILER_IDLE_MS).await;
    let seed = app.seed().await;
    let method = panicky_method(&app).await;
    let invoice = app.open_invoice(&seed, "30.00").await;
    let invoice_id = id_of(&invoice);

    let mut codes = Vec::new();
    for _ in 0..3 {
        let response = charge(&app, &invoice_id, &method, json!({"mode": "panic"})).await;
        let code = response.error_code().unwrap_or_else(|| panic!("a panic is an error: {:#}", response.body)).to_owned();
        assert!(["CHARGE_PENDING", "PLUGIN_UNAVAILABLE"].contains(&code.as_str()), "{:#}", response.body);
        assert!(response.data().is_null() || response.data()["payInvoice"].is_null(), "{:#}", response.body);
        codes.push(code);
        assert_serving(&app).await;
    }
    // The plugin may have charged before it panicked: the outcome is unknown, left to the reconciler.
    assert_eq!(codes[0], "CHARGE_PENDING", "codes: {codes:?}");
    assert_eq!(payment_count(&app).await, 0, "no payment recorded");
    assert_eq!(read_invoice(&app, &invoice_id).await["status"], "OPEN");

    let panicky = plugin(&app, "panicky").await;
    assert_eq!(panicky["healthy"], false, "{panicky:#}");
    assert!(faults(&panicky) >= 3, "{panicky:#}");
    assert!(panicky["lastFault"].as_str().is_some_and(|f| !f.is_empty()), "{panicky:#}");

    // Refused without calling it, for the cool-down.
    let calls_before = calls(&panicky);
    for _ in 0..2 {
        let refused = charge(&app, &invoice_id, &method, json!({"mode": "panic"})).await;
        assert_error_code(&refused, "PLUGIN_UNAVAILABLE");
        assert!(message(&refused).contains("unhealthy"), "{:#}", refused.body);
    }
    assert_eq!(calls(&plugin(&app, "panicky").await), calls_before, "the unhealthy plugin was not called");
    assert_eq!(payment_count(&app).await, 0);

    // Other plugins are unaffected.
    assert_serving(&app).await;
    let other = app.open_invoice(&seed, "10.00").await;
    charge_ok(&app, &id_of(&other), &card_method(&app).await, card(cards::SUCCEEDS)).await;
    assert_eq!(plugin(&app, "card-sim").await["healthy"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_look_up_that_hangs_leaves_the_charge_pending_and_the_server_serving() {
    let dir = plugin_dir(&[PANICKY]);
    let app = spawn_app(dir.path()).await;
    let seed = app.seed().await;
    let method = panicky_method(&app).await;
    let invoice = app.open_invoice(&seed, "30.00").await;
    assert_error_code(&charge(&app, &id_of(&invoice), &method, json!({"mode": "panic"})).await, "CHARGE_PENDING");
    assert_eq!(faults(&plugin(&app, "panicky").await), 1);

    // The reconciler asks the plugin's status, which sleeps 10 s: the look-up times out, is a
    // fault, and the charge stays pending.
    let panicky = eventually(Duration::from_secs(8), "the reconciler's status look-up times out", || async {
        let panicky = plugin(&app, "panicky").await;
        (faults(&panicky) >= 2).then_some(panicky)
    })
    .await;
    assert!(panicky["lastFault"].as_str().unwrap_or_default().contains("in time"), "{panicky:#}");
    assert_serving(&app).await;
    assert_eq!(payment_count(&app).await, 0, "an unknown outcome records nothing");
    let invoice = read_invoice(&app, &id_of(&invoice)).await;
    assert_eq!(invoice["status"], "OPEN");
    assert_eq!(amount(&invoice, "balance"), "30.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bad_codes_and_wrong_shaped_answers_are_faults_not_crashes() {
    let dir = plugin_dir(&[PANICKY]);
    let app = spawn_app_reconciling_every(dir.path(), RECONCILER_IDLE_MS).await;
    let seed = app.seed().await;
    let method = panicky_method(&app).await;
    let invoice = app.open_invoice(&seed, "30.00").await;

    for mode in ["garbage", "bad_code", "wrong_shape"] {
        let faults_before = faults(&plugin(&app, "panicky").await);
        let response = charge(&app, &id_of(&invoice), &method, json!({"mode": mode})).await;
        let code = response.error_code().unwrap_or_else(|| panic!("{mode}: an error: {:#}", response.body));
        assert!(["CHARGE_PENDING", "PLUGIN_UNAVAILABLE"].contains(&code), "{mode}: {:#}", response.body);
        let panicky = plugin(&app, "panicky").await;
        assert_eq!(faults(&panicky), faults_before + 1, "{mode} is one fault: {panicky:#}");
        assert!(panicky["lastFault"].as_str().is_some_and(|f| !f.is_empty()), "{mode}: {panicky:#}");
        assert_serving(&app).await;
    }
    assert_eq!(payment_count(&app).await, 0);
    assert_eq!(read_invoice(&app, &id_of(&invoice)).await["status"], "OPEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_shaped_answers_count_once_each_and_make_a_plugin_unhealthy_after_three() {
    let dir = plugin_dir(&[PANICKY]);
    let app = spawn_app_reconciling_every(dir.path(), RECONCILER_IDLE_MS).await;
    let seed = app.seed().await;
    let method = panicky_method(&app).await;
    let invoice = app.open_invoice(&seed, "30.00").await;
    let calls_before = calls(&plugin(&app, "panicky").await);
    for _ in 0..3 {
        let response = charge(&app, &id_of(&invoice), &method, json!({"mode": "wrong_shape"})).await;
        assert_error_code(&response, "CHARGE_PENDING");
    }
    let panicky = plugin(&app, "panicky").await;
    assert_eq!(calls(&panicky), calls_before + 3, "one call each: {panicky:#}");
    assert_eq!(faults(&panicky), 3, "{panicky:#}");
    assert_eq!(panicky["healthy"], false, "three faults in a row: {panicky:#}");
    assert_error_code(&charge(&app, &id_of(&invoice), &method, json!({"mode": "wrong_shape"})).await, "PLUGIN_UNAVAILABLE");
}

// ---------------------------------------------------------------------------------------------
// Payment methods (ADMIN): configurations checked by the plugin, secrets write-only.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn payment_method_secrets_are_stored_but_never_returned() {
    let dir = plugin_dir(&[CARD_SIM]);
    let app = spawn_app(dir.path()).await;
    let response = create_method(
        &app,
        json!({"name": "Visa", "type": "CARD", "plugin": "card-sim", "config": {"merchant_id": "m1", "api_key": "sk_test_123"}}),
    )
    .await;
    assert!(response.body["errors"].is_null(), "{:#}", response.body);
    assert!(!response.body.to_string().contains("sk_test_123"), "the created method shows no key: {:#}", response.body);
    let method = &response.data()["createPaymentMethod"];
    assert_eq!(method["configuration"], json!({"merchant_id": "m1"}));
    assert_eq!(method["secretFieldsSet"], json!(["api_key"]));
    assert_eq!(method["type"], "CARD");
    assert_eq!(method["archived"], false);

    for role in [Role::Viewer, Role::Billing, Role::Admin] {
        let listed = app.as_role(role).post(&format!("{{ paymentMethods(includeArchived: true) {{ {METHOD_FIELDS} }} }}"), json!({})).await;
        assert!(listed.body["errors"].is_null(), "{:#}", listed.body);
        assert!(!listed.body.to_string().contains("sk_test_123"), "{role}: the key never comes back");
        assert!(!listed.body.to_string().contains("sk_test_settle"), "{role}: nor the seeded method's key");
        let visa = listed.data()["paymentMethods"].as_array().unwrap().iter().find(|m| m["name"] == "Visa").unwrap().clone();
        assert_eq!(visa["configuration"], json!({"merchant_id": "m1"}));
        assert_eq!(visa["secretFieldsSet"], json!(["api_key"]));
    }
    let audit = app.admin().post("{ auditEvents(first: 100) { edges { node { action before after reason } } } }", json!({})).await;
    assert!(audit.body["errors"].is_null(), "{:#}", audit.body);
    assert!(!audit.body.to_string().contains("sk_test_123"), "nor is it in the audit trail: {:#}", audit.body);

    // It is used all the same: a charge with the method works.
    let seed = app.seed().await;
    let invoice = app.open_invoice(&seed, "12.00").await;
    charge_ok(&app, &id_of(&invoice), &id_of(method), card(cards::SUCCEEDS)).await;
}

#[tokio::test]
async fn payment_method_configs_and_types_are_checked_by_the_plugin_and_only_admins_manage_methods() {
    let dir = plugin_dir(&[CARD_SIM]);
    let app = spawn_app(dir.path()).await;
    let methods_before = app.viewer().ok("{ paymentMethods(includeArchived: true) { id } }", json!({})).await;

    let live = create_method(
        &app,
        json!({"name": "Visa", "type": "CARD", "plugin": "card-sim", "config": {"merchant_id": "m1", "api_key": "sk_live_x"}}),
    )
    .await;
    assert_error_code(&live, "INVALID_CONFIG");
    assert!(message(&live).contains("sk_test_"), "gives the plugin's reason: {:#}", live.body);
    assert!(!live.body.to_string().contains("sk_live_x"), "never echoes the key: {:#}", live.body);

    let missing = create_method(&app, json!({"name": "Visa", "type": "CARD", "plugin": "card-sim", "config": {"merchant_id": "m1"}})).await;
    assert_error_code(&missing, "INVALID_CONFIG");
    let no_config = create_method(&app, json!({"name": "Visa", "type": "CARD", "plugin": "card-sim"})).await;
    assert_error_code(&no_config, "INVALID_CONFIG");

    let cash = create_method(
        &app,
        json!({"name": "Visa", "type": "CASH", "plugin": "card-sim", "config": {"merchant_id": "m1", "api_key": "sk_test_1"}}),
    )
    .await;
    assert_error_code(&cash, "INVALID_INPUT");
    // A type is one of PaymentMethodType's values, spelled as the schema spells it.
    for kind in ["card", "VOUCHER"] {
        let unknown_type = create_method(&app, json!({"name": "Visa", "type": kind, "plugin": "card-sim", "config": {}})).await;
        assert_error_code(&unknown_type, "QUERY_REJECTED");
    }

    let unknown = create_method(&app, json!({"name": "Visa", "type": "CARD", "plugin": "no-such-plugin", "config": {}})).await;
    assert_error_code(&unknown, "PLUGIN_UNAVAILABLE");

    let good = json!({"name": "Visa", "type": "CARD", "plugin": "card-sim", "config": {"merchant_id": "m1", "api_key": "sk_test_1"}});
    for role in [Role::Billing, Role::Viewer] {
        app.as_role(role).fails(&create_method_query(), json!({"input": good}), "FORBIDDEN").await;
    }
    let methods_after = app.viewer().ok("{ paymentMethods(includeArchived: true) { id } }", json!({})).await;
    assert_eq!(methods_after, methods_before, "nothing refused was created");
}

#[tokio::test]
async fn updating_a_payment_method_keeps_its_stored_secret_and_archiving_stops_its_charges() {
    let dir = plugin_dir(&[CARD_SIM]);
    let app = spawn_app(dir.path()).await;
    let seed = app.seed().await;
    let method = create_method_ok(
        &app,
        json!({"name": "Visa", "type": "CARD", "plugin": "card-sim", "config": {"merchant_id": "m1", "api_key": "sk_test_123"}}),
    )
    .await;
    let method_id = id_of(&method);

    let updated = app
        .admin()
        .ok(&update_method_query(), json!({"id": method_id, "input": {"name": "Visa (gateway)", "config": {"merchant_id": "m2"}}}))
        .await;
    let updated = &updated["updatePaymentMethod"];
    assert_eq!(updated["name"], "Visa (gateway)");
    assert_eq!(updated["configuration"], json!({"merchant_id": "m2"}));
    assert_eq!(updated["secretFieldsSet"], json!(["api_key"]), "the stored key was kept");

    // A bad new key is refused and the stored configuration stays.
    let bad = app
        .admin()
        .post(&update_method_query(), json!({"id": method_id, "input": {"config": {"merchant_id": "m3", "api_key": "sk_live_x"}}}))
        .await;
    assert_error_code(&bad, "INVALID_CONFIG");
    // Role checks on the changes.
    app.billing().fails(&update_method_query(), json!({"id": method_id, "input": {"name": "Nope"}}), "FORBIDDEN").await;

    // The kept secret still works: the plugin accepts the stored configuration for a charge.
    let invoice = app.open_invoice(&seed, "20.00").await;
    let payment = charge_ok(&app, &id_of(&invoice), &method_id, card(cards::SUCCEEDS)).await;
    assert_eq!(payment["method"]["name"], "Visa (gateway)");

    let archived = app
        .admin()
        .ok(&format!("mutation($id: ID!) {{ archivePaymentMethod(id: $id) {{ {METHOD_FIELDS} }} }}"), json!({"id": method_id}))
        .await;
    assert_eq!(archived["archivePaymentMethod"]["archived"], true);
    let listed = app.viewer().ok("{ paymentMethods { id } }", json!({})).await;
    assert!(!listed["paymentMethods"].as_array().unwrap().iter().any(|m| m["id"] == json!(method_id)), "archived methods are not listed by default");

    let invoice = app.open_invoice(&seed, "20.00").await;
    let calls_before = calls(&plugin(&app, "card-sim").await);
    let refused = charge(&app, &id_of(&invoice), &method_id, card(cards::SUCCEEDS)).await;
    assert_error_code(&refused, "PAYMENT_METHOD_ARCHIVED");
    assert_eq!(calls(&plugin(&app, "card-sim").await), calls_before, "nothing was charged");
    assert_eq!(payment_count(&app).await, 1);

    let restored = app
        .admin()
        .ok(&format!("mutation($id: ID!) {{ restorePaymentMethod(id: $id) {{ {METHOD_FIELDS} }} }}"), json!({"id": method_id}))
        .await;
    assert_eq!(restored["restorePaymentMethod"]["archived"], false);
    assert_eq!(restored["restorePaymentMethod"]["secretFieldsSet"], json!(["api_key"]));
    charge_ok(&app, &id_of(&invoice), &method_id, card(cards::SUCCEEDS)).await;
    assert_eq!(read_invoice(&app, &id_of(&invoice)).await["status"], "PAID");
}

// ---------------------------------------------------------------------------------------------
// The manual plugin, loaded as a library, validates its own details.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_manual_library_requires_a_cheque_number_and_records_it_as_the_reference() {
    let dir = plugin_dir(&[MANUAL]);
    let app = spawn_app(dir.path()).await;
    let seed = app.seed().await;
    let manual = plugin(&app, "manual").await;
    assert_eq!(manual["source"], MANUAL, "the manual library replaced the built-in");
    assert_eq!(manual["capabilities"], json!(["CHARGE", "REFUND"]));
    let cheque = method_id(&app, "Cheque").await;
    let record = |details: Option<Value>| {
        let mut input = json!({"clientId": seed.client, "locationId": seed.location, "methodId": cheque, "amount": "55.00"});
        if let Some(details) = details {
            input["details"] = details;
        }
        let app = &app;
        async move {
            app.billing()
                .post(
                    "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id externalReference amount { amount } } } }",
                    json!({"input": input, "key": new_key()}),
                )
                .await
        }
    };

    for details in [None, Some(json!({})), Some(json!({"cheque_number": "12a"})), Some(json!({"cheque_number": 123}))] {
        let rejected = record(details.clone()).await;
        assert_error_code(&rejected, "PLUGIN_REJECTED");
        assert!(message(&rejected).contains("cheque_number"), "{details:?}: {:#}", rejected.body);
    }
    assert_eq!(payment_count(&app).await, 0, "nothing recorded");

    let calls_before = calls(&plugin(&app, "manual").await);
    let recorded = record(Some(json!({"cheque_number": "000123"}))).await;
    assert!(recorded.body["errors"].is_null(), "{:#}", recorded.body);
    assert_eq!(recorded.data()["recordPayment"]["payment"]["externalReference"], "000123");
    assert_eq!(payment_count(&app).await, 1);
    assert!(calls(&plugin(&app, "manual").await) > calls_before, "the library checked it");
}

// ---------------------------------------------------------------------------------------------
// `settle plugin check`: one conformance suite every plugin library runs.
// ---------------------------------------------------------------------------------------------

/// Runs the real `settle plugin check` on `library`; returns (success, stdout).
fn plugin_check(library: &Path, method_type: &str, config: Value, details: Value) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_settle"))
        .args(["plugin", "check"])
        .arg(library)
        .args(["--config", &config.to_string(), "--details", &details.to_string(), "--method-type", method_type])
        .output()
        .expect("the settle binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.success(), format!("{stdout}{}", if stderr.is_empty() { String::new() } else { format!("\n[stderr]\n{stderr}") }))
}

#[test]
fn every_shipped_plugin_library_passes_the_plugin_check() {
    let libraries = plugin_libraries();
    let shipped = [
        (MANUAL, "CASH", json!({}), json!({})),
        (MANUAL, "CHEQUE", json!({}), json!({"cheque_number": "000123"})),
        (CARD_SIM, "CARD", json!({"merchant_id": "m1", "api_key": "sk_test_123"}), card(cards::SUCCEEDS)),
    ];
    for (file, method_type, config, details) in shipped {
        let (ok, output) = plugin_check(&libraries.join(file), method_type, config, details);
        assert!(ok, "{file} ({method_type}) fails the check:\n{output}");
        let passed = output.lines().filter(|line| line.starts_with("ok")).count();
        assert!(!output.lines().any(|line| line.starts_with("FAIL")), "{file}:\n{output}");
        assert!(passed >= 6, "{file}: load, manifest, configs, malformed input, charge, idempotency at least:\n{output}");
        assert!(output.lines().any(|line| line == format!("{passed} passed, 0 failed")), "{file}: the summary line:\n{output}");
        assert!(output.contains("charge 10.00 succeeds"), "{file}: charged:\n{output}");
        assert!(output.contains("refund 4.00 of the charge succeeds"), "{file}: refunded:\n{output}");
    }
}

/// A plugin author's first try: the shipped example libraries that an ordinary build leaves
/// are loadable plugins. The server, which links the same plugins in as built-ins, is built in
/// the same cargo invocation, so a feature or dependency of the built-ins that cargo unifies into
/// the libraries (as a feature that left out the C exports once did) fails this check.
#[test]
fn shipped_plugins_from_an_ordinary_build_pass_plugin_check() {
    let libraries = cargo_build_libraries(&ORDINARY_BUILD);
    let shipped = [
        (MANUAL, "CASH", json!({}), json!({})),
        (CARD_SIM, "CARD", json!({"merchant_id": "m1", "api_key": "sk_test_123"}), card(cards::SUCCEEDS)),
    ];
    for (file, method_type, config, details) in shipped {
        let library = libraries.join(file);
        let (ok, output) = plugin_check(&library, method_type, config, details);
        assert!(ok, "{} fails the check:\n{output}", library.display());
        assert!(output.lines().any(|line| line.ends_with(" passed, 0 failed")), "{file}: the summary line:\n{output}");
    }
}

#[test]
fn the_plugin_check_fails_broken_libraries() {
    let libraries = plugin_libraries();
    let broken = [
        (BAD_ABI, "ABI version"),
        (NO_VTABLE, "settle_plugin_vtable"),
        (PANICKY, "charge 10.00 succeeds"),
    ];
    for (file, reason) in broken {
        let (ok, output) = plugin_check(&libraries.join(file), "CARD", json!({}), json!({"mode": "panic"}));
        assert!(!ok, "{file} passes the check:\n{output}");
        let fail = output.lines().find(|line| line.starts_with("FAIL")).unwrap_or_else(|| panic!("{file}: no FAIL line:\n{output}"));
        assert!(fail.contains(reason), "{file}: the failing step names {reason:?}: {fail}\n{output}");
        assert!(output.lines().any(|line| line.ends_with("passed, 1 failed")), "{file}: the summary line:\n{output}");
    }
    let not_a_library = tempfile::tempdir().unwrap();
    let path = not_a_library.path().join("fake.so");
    std::fs::write(&path, "not a shared library").unwrap();
    let (ok, output) = plugin_check(&path, "CARD", json!({}), json!({}));
    assert!(!ok && output.contains("FAIL"), "a text file is no plugin:\n{output}");
}
