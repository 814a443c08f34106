//! Durability across restarts of the real `settle` binary on embedded SurrealKV.

use crate::helpers::SettleProcess;

use serde_json::json;
use settle::auth::{Role, TenantId, TokenKeys};

/// The real binary, serving `surrealkv://DIR/db`, its log beside the database.
pub(crate) fn start(data_dir: &std::path::Path) -> SettleProcess {
    SettleProcess::start(data_dir, data_dir.join("settle.log"))
}

pub(crate) async fn gql(http: &reqwest::Client, url: &str, token: &str, query: &str, variables: serde_json::Value) -> serde_json::Value {
    let body: serde_json::Value = http
        .post(format!("{url}/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body.get("errors").is_none(), "{body:#}");
    body["data"].clone()
}

/// A practice on the real binary over embedded SurrealKV in a temporary directory, with an
/// ADMIN token of tenant "clinic", a client and a location: what the tests that stop, change
/// and start the database again begin with.
pub(crate) struct Practice {
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub server: SettleProcess,
    pub token: String,
    pub client: serde_json::Value,
    pub location: serde_json::Value,
    /// `{ paymentMethods { id name } }`: [`method_of`] picks one.
    pub methods: serde_json::Value,
}

impl Practice {
    pub async fn start() -> Practice {
        Practice::start_with_env(&[]).await
    }

    /// [`Practice::start`] with environment variables set for the server.
    pub async fn start_with_env(envs: &[(&str, &std::ffi::OsStr)]) -> Practice {
        let dir = tempfile::tempdir().unwrap();
        let http = reqwest::Client::new();
        let server = SettleProcess::start_with_env(dir.path(), dir.path().join("settle.log"), &[], envs);
        let keys = TokenKeys::load_or_create_secret(&dir.path().join("signing.key")).unwrap();
        let token = keys.mint("upgrade-test", &TenantId::parse("clinic").unwrap(), &[Role::Admin], chrono::Duration::hours(1)).unwrap();
        let setup = gql(&http, &server.url, &token, r#"mutation { createClient(input: {name: "Bo"}) { id } createLocation(input: {name: "Here"}) { id } }"#, json!({})).await;
        let methods = gql(&http, &server.url, &token, "{ paymentMethods { id name } }", json!({})).await;
        Practice { client: setup["createClient"]["id"].clone(), location: setup["createLocation"]["id"].clone(), dir, http, server, token, methods }
    }
}

/// The id of the payment method called `name` in `methods` (`{ paymentMethods { id name } }`).
pub(crate) fn method_of(methods: &serde_json::Value, name: &str) -> serde_json::Value {
    methods["paymentMethods"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap()["id"].clone()
}

/// Creates and finalizes an invoice of one 80.00 line (idempotency keys numbered by `i`); returns
/// its id.
pub(crate) async fn open_invoice(http: &reqwest::Client, url: &str, token: &str, client: &serde_json::Value, location: &serde_json::Value, i: usize) -> String {
    let created = gql(http, url, token,
        "mutation($input: InvoiceInput!, $key: String!) { createInvoice(input: $input, idempotencyKey: $key) { invoice { id } } }",
        json!({"key": format!("create-{i}"), "input": {
            "clientId": client, "locationId": location, "lines": [{"description": "Visit", "unitPrice": "80.00"}]}}),
    )
    .await;
    let id = created["createInvoice"]["invoice"]["id"].as_str().unwrap().to_owned();
    gql(http, url, token, "mutation($id: ID!, $key: String!) { finalizeInvoice(id: $id, idempotencyKey: $key) { invoice { id } } }",
        json!({"id": id, "key": format!("finalize-{i}")})).await;
    id
}

async fn restart_keeps_everything(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = start(dir.path());
    let url = server.url.clone();
    let keys = TokenKeys::load_or_create_secret(&dir.path().join("signing.key")).unwrap();
    let token = keys.mint("restart-test", &TenantId::parse("clinic").unwrap(), &[Role::Admin], chrono::Duration::hours(1)).unwrap();

    let client = gql(&http, &url, &token, r#"mutation { createClient(input: {name: "Bo"}) { id } }"#, json!({})).await;
    let location = gql(&http, &url, &token, r#"mutation { createLocation(input: {name: "Here"}) { id } }"#, json!({})).await;
    let mut invoice_ids = Vec::new();
    for i in 0..3 {
        invoice_ids.push(open_invoice(&http, &url, &token, &client["createClient"]["id"], &location["createLocation"]["id"], i).await);
    }
    server.stop(signal);

    let mut server = start(dir.path());
    let url = server.url.clone();
    let after = gql(&http, &url, &token, "{ invoices(first: 10) { totalCount edges { node { id number status total { amount } } } } auditEvents(first: 50) { totalCount } settings { nextInvoiceNumber } }", json!({})).await;
    assert_eq!(after["invoices"]["totalCount"], 3, "{after:#}");
    let numbers: Vec<&str> = after["invoices"]["edges"].as_array().unwrap().iter().map(|e| e["node"]["number"].as_str().unwrap()).collect();
    assert_eq!(numbers, ["INV-0003", "INV-0002", "INV-0001"]);
    assert_eq!(after["settings"]["nextInvoiceNumber"], 4);
    // 2 setup events + 3 creates + 3 finalizes.
    assert_eq!(after["auditEvents"]["totalCount"], 8);
    for edge in after["invoices"]["edges"].as_array().unwrap() {
        assert_eq!(edge["node"]["status"], "OPEN");
        assert_eq!(edge["node"]["total"]["amount"], "80.00");
    }
    server.stop("-TERM");
}

#[tokio::test]
async fn data_survives_a_stop_and_start() {
    restart_keeps_everything("-TERM").await;
}

/// A clean stop (SIGTERM) closes the database and says nothing alarming: before, every stop
/// logged SurrealKV's "No runtime available for closing the store correctly".
#[tokio::test]
async fn a_clean_stop_logs_no_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let keys = TokenKeys::load_or_create_secret(&dir.path().join("signing.key")).unwrap();
    let token = keys.mint("stop-test", &TenantId::parse("clinic").unwrap(), &[Role::Admin], chrono::Duration::hours(1)).unwrap();
    gql(&reqwest::Client::new(), &server.url, &token, r#"mutation { createClient(input: {name: "Bo"}) { id } }"#, json!({})).await;
    server.stop("-TERM");
    // The binary logs at warn here (start_settle), which is where the warning was.
    let log = std::fs::read_to_string(dir.path().join("settle.log")).unwrap();
    let alarming: Vec<&str> = log.lines().filter(|line| line.contains("WARN") || line.contains("ERROR")).collect();
    assert!(alarming.is_empty(), "a clean stop logged:\n{}", alarming.join("\n"));
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    restart_keeps_everything("-KILL").await;
}

/// The database under `dir`, opened in this process the way `settle serve` opens it.
pub(crate) async fn open_store(dir: &std::path::Path) -> settle::store::Store {
    let mut settings = crate::helpers::test_settings(dir);
    settings.database = None;
    settle::store::Store::open(&settings.store_settings(), settle::metrics::Metrics::new()).await.unwrap()
}

/// Runs `sql` with `vars` straight on the database under `dir`, behind Settle's back (no server
/// may hold it).
pub(crate) async fn change_stopped_database(dir: &std::path::Path, sql: &str, vars: settle::store::Vars) {
    let store = open_store(dir).await;
    store.query(sql, vars).await.unwrap();
    store.close().await;
}

/// Makes the database under `dir` look as Settle left it before schema version `version` + 1
/// added `page_key` to `tables` (table, index on page_key): none of them has the field or its
/// index, and `version` is recorded.
async fn downgrade_page_keys(dir: &std::path::Path, version: i64, tables: &[(&str, &str)]) {
    let store = open_store(dir).await;
    for (table, index) in tables {
        let sql = format!("REMOVE INDEX IF EXISTS {index} ON {table}; REMOVE FIELD IF EXISTS page_key ON {table}; UPDATE {table} UNSET page_key RETURN NONE;");
        store.query(&sql, settle::store::Vars::new()).await.unwrap();
        let sql = format!("SELECT count() FROM {table} WHERE page_key != NONE GROUP ALL");
        let mut left = store.query(&sql, settle::store::Vars::new()).await.unwrap();
        assert_eq!(left.first::<settle::store::rows::CountRow>(0).unwrap().map_or(0, |c| c.count), 0, "{table}: page keys removed");
    }
    store.query("UPDATE settle_meta:schema SET version = $version", settle::store::Vars::new().set("version", version)).await.unwrap();
    store.close().await;
}

/// Before schema version 2: no `page_key` on invoices, payments and audit events.
async fn downgrade_to_schema_version_1(dir: &std::path::Path) {
    downgrade_page_keys(dir, 1, &[("invoice", "invoice_page"), ("payment", "payment_page"), ("audit_event", "audit_page")]).await;
}

#[tokio::test]
async fn a_database_from_schema_version_1_gets_its_page_keys() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = start(dir.path());
    let url = server.url.clone();
    let keys = TokenKeys::load_or_create_secret(&dir.path().join("signing.key")).unwrap();
    let token = keys.mint("upgrade-test", &TenantId::parse("clinic").unwrap(), &[Role::Admin], chrono::Duration::hours(1)).unwrap();
    let setup = gql(&http, &url, &token, r#"mutation { createClient(input: {name: "Bo"}) { id } createLocation(input: {name: "Here"}) { id } }"#, json!({})).await;
    let methods = gql(&http, &url, &token, "{ paymentMethods { id name } }", json!({})).await;
    let cash = methods["paymentMethods"].as_array().unwrap().iter().find(|m| m["name"] == "Cash").unwrap()["id"].clone();
    // More audit events than one upgrade batch holds (100), so the upgrade runs several batches.
    for i in 0..40 {
        let id = open_invoice(&http, &url, &token, &setup["createClient"]["id"], &setup["createLocation"]["id"], i).await;
        gql(&http, &url, &token, "mutation($id: ID!, $m: ID!, $key: String!) { payInvoice(id: $id, input: {methodId: $m}, idempotencyKey: $key) { payment { id } } }",
            json!({"id": id, "m": cash, "key": format!("pay-{i}")})).await;
    }
    let lists = "{ invoices(first: 2) { totalCount edges { node { id } } pageInfo { endCursor } }
        payments(first: 10) { totalCount edges { node { id } } } auditEvents(first: 50) { totalCount edges { node { id } } } }";
    let before = gql(&http, &url, &token, lists, json!({})).await;
    server.stop("-TERM");

    downgrade_to_schema_version_1(dir.path()).await;
    let mut server = start(dir.path());
    let url = server.url.clone();
    let after = gql(&http, &url, &token, lists, json!({})).await;
    assert_eq!(after, before, "every list pages as before the upgrade");
    assert_eq!(after["invoices"]["edges"].as_array().unwrap().len(), 2);
    assert_eq!(after["payments"]["edges"].as_array().unwrap().len(), 10);
    assert_eq!(after["auditEvents"]["totalCount"], 122, "2 setup events, then 3 per invoice");
    let rest = gql(&http, &url, &token, "query($after: String) { invoices(first: 50, after: $after) { edges { node { id } } } auditEvents(first: 100) { edges { node { id } } } }",
        json!({"after": after["invoices"]["pageInfo"]["endCursor"]})).await;
    assert_eq!(rest["invoices"]["edges"].as_array().unwrap().len(), 38, "the second page holds the older invoices");
    assert_eq!(rest["auditEvents"]["edges"].as_array().unwrap().len(), 100, "audit events of both upgrade batches are listed");
    server.stop("-TERM");
}

#[tokio::test]
async fn a_database_from_schema_version_2_gets_page_keys_for_allocations_refunds_and_credit_notes() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = start(dir.path());
    let url = server.url.clone();
    let keys = TokenKeys::load_or_create_secret(&dir.path().join("signing.key")).unwrap();
    let token = keys.mint("upgrade-test", &TenantId::parse("clinic").unwrap(), &[Role::Admin], chrono::Duration::hours(1)).unwrap();
    let setup = gql(&http, &url, &token, r#"mutation { createClient(input: {name: "Bo"}) { id } createLocation(input: {name: "Here"}) { id } }"#, json!({})).await;
    let methods = gql(&http, &url, &token, "{ paymentMethods { id name } }", json!({})).await;
    let cash = methods["paymentMethods"].as_array().unwrap().iter().find(|m| m["name"] == "Cash").unwrap()["id"].clone();
    for i in 0..3 {
        let id = open_invoice(&http, &url, &token, &setup["createClient"]["id"], &setup["createLocation"]["id"], i).await;
        // 100.00 pays the 80.00 invoice and leaves 20.00 to refund.
        let paid = gql(&http, &url, &token,
            "mutation($id: ID!, $m: ID!, $key: String!) { payInvoice(id: $id, input: {methodId: $m, amount: \"100.00\"}, idempotencyKey: $key) { payment { id } } }",
            json!({"id": id, "m": cash, "key": format!("pay-{i}")})).await;
        gql(&http, &url, &token,
            "mutation($id: ID!, $key: String!) { refundPayment(id: $id, input: {amount: \"5.00\"}, idempotencyKey: $key) { refund { id } } }",
            json!({"id": paid["payInvoice"]["payment"]["id"], "key": format!("refund-{i}")})).await;
    }
    let unpaid = open_invoice(&http, &url, &token, &setup["createClient"]["id"], &setup["createLocation"]["id"], 3).await;
    for i in 0..2 {
        gql(&http, &url, &token,
            "mutation($id: ID!, $key: String!) { issueCreditNote(invoiceId: $id, input: {reason: \"goodwill\", lines: [{lineIndex: 0, amount: \"10.00\"}]}, idempotencyKey: $key) { creditNote { id } } }",
            json!({"id": unpaid, "key": format!("credit-{i}")})).await;
    }
    let lists = "{ allocations(first: 2) { totalCount edges { node { id } } pageInfo { hasNextPage } }
        refunds(first: 10) { totalCount edges { node { id } } } creditNotes(first: 10) { totalCount edges { node { id } } } }";
    let before = gql(&http, &url, &token, lists, json!({})).await;
    assert_eq!((before["allocations"]["totalCount"].as_i64(), before["refunds"]["totalCount"].as_i64(), before["creditNotes"]["totalCount"].as_i64()), (Some(3), Some(3), Some(2)), "{before:#}");
    server.stop("-TERM");

    downgrade_page_keys(dir.path(), 2, &[("allocation", "allocation_page"), ("refund", "refund_page"), ("credit_note", "credit_note_page")]).await;
    let mut server = start(dir.path());
    let url = server.url.clone();
    let after = gql(&http, &url, &token, lists, json!({})).await;
    assert_eq!(after, before, "every list pages as before the upgrade");
    assert_eq!(after["allocations"]["edges"].as_array().unwrap().len(), 2);
    assert_eq!(after["refunds"]["edges"].as_array().unwrap().len(), 3);
    assert_eq!(after["creditNotes"]["edges"].as_array().unwrap().len(), 2);
    server.stop("-TERM");
}

#[tokio::test]
async fn a_database_from_a_newer_settle_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    store.query("UPDATE settle_meta:schema SET version = 99", settle::store::Vars::new()).await.unwrap();
    store.close().await;

    // Refused twice: the first refusal left the recorded version as it was.
    for attempt in 0..2 {
        let log = dir.path().join(format!("refused-{attempt}.log"));
        let (mut child, url) = crate::helpers::start_settle(dir.path(), std::process::Stdio::from(std::fs::File::create(&log).unwrap()));
        assert!(url.is_none(), "settle serves a database it does not know");
        assert!(!child.wait().unwrap().success());
        let said = std::fs::read_to_string(&log).unwrap();
        assert!(said.contains("schema version 99, written by a newer Settle"), "{said}");
    }
}

/// Before schema version 4 a charge attempt stood for its request alone; the upgrade gives each
/// attempt the idempotency claim its request makes now, so repeating a charge made before the
/// upgrade answers its payment and never charges again (X2).
#[tokio::test]
async fn a_charge_made_before_schema_version_4_is_never_charged_again() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = start(dir.path());
    let url = server.url.clone();
    let keys = TokenKeys::load_or_create_secret(&dir.path().join("signing.key")).unwrap();
    let token = keys.mint("upgrade-test", &TenantId::parse("clinic").unwrap(), &[Role::Admin], chrono::Duration::hours(1)).unwrap();
    let setup = gql(&http, &url, &token, r#"mutation { createClient(input: {name: "Bo"}) { id } createLocation(input: {name: "Here"}) { id } }"#, json!({})).await;
    let methods = gql(&http, &url, &token, "{ paymentMethods { id name } }", json!({})).await;
    let card = methods["paymentMethods"].as_array().unwrap().iter().find(|m| m["name"] == "Credit card").unwrap()["id"].clone();
    let invoice = open_invoice(&http, &url, &token, &setup["createClient"]["id"], &setup["createLocation"]["id"], 0).await;
    let charge = "mutation($id: ID!, $m: ID!, $key: String!) { payInvoice(id: $id, input: {methodId: $m, amount: \"30.00\", details: {card_number: \"4242424242424242\"}}, idempotencyKey: $key) { payment { id } } }";
    let variables = json!({"id": invoice, "m": card, "key": "charge-before-v4"});
    let first = gql(&http, &url, &token, charge, variables.clone()).await;
    let count = "{ payments(first: 10) { totalCount } invoice: invoices(first: 1) { edges { node { balance { amount } } } } }";
    let before = gql(&http, &url, &token, count, json!({})).await;
    server.stop("-TERM");

    // The database as version 3 wrote it: the attempt, and no claim of its key.
    let store = open_store(dir.path()).await;
    store.query("DELETE idempotency:['clinic', 'charge-before-v4']", settle::store::Vars::new()).await.unwrap();
    store.query("UPDATE settle_meta:schema SET version = 3", settle::store::Vars::new()).await.unwrap();
    store.close().await;

    let mut server = start(dir.path());
    let url = server.url.clone();
    let again = gql(&http, &url, &token, charge, variables).await;
    assert_eq!(again["payInvoice"]["payment"]["id"], first["payInvoice"]["payment"]["id"], "the first payment, not a second charge");
    assert_eq!(gql(&http, &url, &token, count, json!({})).await, before, "nothing charged or recorded again");
    server.stop("-TERM");
}

/// Before schema version 5 payments had no `credit`, refunds no `method` and `location`, and the
/// reports' indexes did not exist; before version 6 there were no takings sums. The upgrade fills
/// them in, so every report reads the same as before: credit by client, and takings by method and
/// by location (with refunds).
#[tokio::test]
async fn a_database_from_schema_version_4_gets_what_reports_read() {
    let Practice { dir, http, mut server, token, client, location, methods } = Practice::start().await;
    let url = server.url.clone();
    let method = |name: &str| method_of(&methods, name);
    let record = "mutation($c: ID!, $l: ID!, $m: ID!, $amount: Amount!, $key: String!) { recordPayment(idempotencyKey: $key,
        input: {clientId: $c, locationId: $l, methodId: $m, amount: $amount, date: \"2026-02-01\"}) { payment { id } } }";
    // More payments than one upgrade batch holds (100), by two methods, three of them refunded.
    for i in 0..105 {
        let m = method(if i % 2 == 0 { "Cash" } else { "EFTPOS" });
        let paid = gql(&http, &url, &token, record, json!({"c": client, "l": location, "m": m, "amount": "10.00", "key": format!("pay-{i}")})).await;
        if i % 40 == 0 {
            gql(&http, &url, &token,
                "mutation($id: ID!, $key: String!) { refundPayment(id: $id, input: {amount: \"4.00\", date: \"2026-02-02\"}, idempotencyKey: $key) { refund { id } } }",
                json!({"id": paid["recordPayment"]["payment"]["id"], "key": format!("refund-{i}")})).await;
        }
    }
    let reports = "{ byMethod: takings(from: \"2026-02-01\", to: \"2026-02-28\", groupBy: METHOD) { rows { method { name } net { amount } refundCount } }
        byLocation: takings(from: \"2026-02-01\", to: \"2026-02-28\", groupBy: LOCATION) { rows { location { name } net { amount } refundCount } }
        clientAccounts { edges { node { client { name } unallocatedCredit { amount } } } } }";
    let before = gql(&http, &url, &token, reports, json!({})).await;
    assert_eq!(before["clientAccounts"]["edges"][0]["node"]["unallocatedCredit"]["amount"], "1038.00", "105 x 10.00 less 3 x 4.00: {before:#}");
    assert_eq!(before["byLocation"]["rows"][0]["net"]["amount"], "1038.00", "{before:#}");
    server.stop("-TERM");

    // The database as version 4 left it.
    let store = open_store(dir.path()).await;
    let vars = settle::store::Vars::new;
    store
        .query(
            "REMOVE INDEX IF EXISTS payment_tenant_credit ON payment; REMOVE INDEX IF EXISTS payment_tenant_date ON payment;
             REMOVE INDEX IF EXISTS refund_tenant_date ON refund; REMOVE INDEX IF EXISTS invoice_tenant_status ON invoice;
             REMOVE TABLE takings_day; REMOVE FIELD IF EXISTS takings ON audit_event; UPDATE audit_event UNSET takings RETURN NONE;
             REMOVE FIELD IF EXISTS credit ON payment; UPDATE payment UNSET credit RETURN NONE;
             REMOVE FIELD IF EXISTS method ON refund; REMOVE FIELD IF EXISTS location ON refund; UPDATE refund UNSET method, location RETURN NONE;
             UPDATE settle_meta:schema SET version = 4;",
            vars(),
        )
        .await
        .unwrap();
    let mut left = store
        .query("SELECT count() FROM payment WHERE credit != NONE GROUP ALL; SELECT count() FROM refund WHERE method != NONE GROUP ALL;", vars())
        .await
        .unwrap();
    for statement in 0..2 {
        assert_eq!(left.first::<settle::store::rows::CountRow>(statement).unwrap().map_or(0, |c| c.count), 0, "the version 5 fields are gone");
    }
    store.close().await;

    let mut server = start(dir.path());
    let url = server.url.clone();
    assert_eq!(gql(&http, &url, &token, reports, json!({})).await, before, "every report reads as before the upgrade");
    server.stop("-TERM");
}

/// Before schema version 6 takings were summed from the payments and refunds at every report;
/// since, they are kept as sums. The upgrade sums what was recorded before (payments on several
/// days by two methods, a void one, a refund), so takings by day and by method read the same, and
/// a payment recorded after the upgrade adds to those sums.
#[tokio::test]
async fn a_database_from_schema_version_5_gets_its_takings_summed() {
    let Practice { dir, http, mut server, token, client, location, methods } = Practice::start().await;
    let url = server.url.clone();
    let method = |name: &str| method_of(&methods, name);
    let record = "mutation($c: ID!, $l: ID!, $m: ID!, $amount: Amount!, $date: Date!, $key: String!) { recordPayment(idempotencyKey: $key,
        input: {clientId: $c, locationId: $l, methodId: $m, amount: $amount, date: $date}) { payment { id } } }";
    let mut paid = Vec::new();
    for i in 0..12 {
        let variables = json!({"c": client, "l": location, "m": method(if i % 3 == 0 { "Cash" } else { "EFTPOS" }),
            "amount": format!("{}.25", 10 + i), "date": format!("2026-03-0{}", 1 + i % 4), "key": format!("pay-{i}")});
        paid.push(gql(&http, &url, &token, record, variables).await["recordPayment"]["payment"]["id"].clone());
    }
    gql(&http, &url, &token, "mutation($id: ID!) { voidPayment(id: $id, idempotencyKey: \"void-1\") { payment { id } } }", json!({"id": paid[1]})).await;
    gql(&http, &url, &token,
        "mutation($id: ID!) { refundPayment(id: $id, input: {amount: \"4.00\", date: \"2026-03-03\"}, idempotencyKey: \"refund-1\") { refund { id } } }",
        json!({"id": paid[0]})).await;
    let reports = "{ byDay: takings(from: \"2026-03-01\", to: \"2026-03-31\", groupBy: DAY) { rows { day net { amount } paymentCount refundCount } totals { net { amount } } }
        byMethod: takings(from: \"2026-03-02\", to: \"2026-03-03\", groupBy: METHOD) { rows { method { name } received { amount } refunded { amount } paymentCount } } }";
    let before = gql(&http, &url, &token, reports, json!({})).await;
    // 12 payments of 10.25 ... 21.25 (189.00 in all), less the void 11.25, less the 4.00 refund.
    assert_eq!(before["byDay"]["totals"][0]["net"]["amount"], "173.75", "{before:#}");
    assert_eq!(before["byDay"]["rows"].as_array().unwrap().len(), 4, "{before:#}");
    server.stop("-TERM");

    // The database as version 5 left it: no takings sums, takings read through date indexes.
    change_stopped_database(
        dir.path(),
        "REMOVE TABLE takings_day; REMOVE FIELD IF EXISTS takings ON audit_event; UPDATE audit_event UNSET takings RETURN NONE;
         UPDATE settle_meta:schema SET version = 5;",
        settle::store::Vars::new(),
    )
    .await;

    let mut server = start(dir.path());
    let url = server.url.clone();
    assert_eq!(gql(&http, &url, &token, reports, json!({})).await, before, "takings read as before the upgrade");
    gql(&http, &url, &token, record,
        json!({"c": client, "l": location, "m": method("Cash"), "amount": "100.00", "date": "2026-03-02", "key": "after-upgrade"})).await;
    let after = gql(&http, &url, &token, reports, json!({})).await;
    assert_eq!(after["byDay"]["totals"][0]["net"]["amount"], "273.75", "a payment after the upgrade adds to the sums: {after:#}");
    server.stop("-TERM");
}

/// Before schema version 7 audit events were not chained. The upgrade hashes each from its
/// stored fields and chains each practice's events in key order (creation order), so the chain
/// holds from the first event written before the upgrade, and changes after it go on from there.
#[tokio::test]
async fn a_database_from_schema_version_6_gets_its_audit_events_chained() {
    let Practice { dir, http, mut server, token, client, location, methods } = Practice::start().await;
    let url = server.url.clone();
    let cash = method_of(&methods, "Cash");
    let pay = "mutation($id: ID!, $m: ID!, $key: String!) { payInvoice(id: $id, input: {methodId: $m}, idempotencyKey: $key) { payment { id } } }";
    // More audit events than one upgrade batch holds (100): 2 set-up events, then 3 per invoice.
    for i in 0..35 {
        let invoice = open_invoice(&http, &url, &token, &client, &location, i).await;
        gql(&http, &url, &token, pay, json!({"id": invoice, "m": cash, "key": format!("pay-{i}")})).await;
    }
    server.stop("-TERM");

    // The database as version 6 left it: no content hashes, sequences, links or audit counter.
    change_stopped_database(
        dir.path(),
        "REMOVE INDEX IF EXISTS audit_tenant_sequence ON audit_event; UPDATE audit_event UNSET content_hash, sequence, chain RETURN NONE;
         REMOVE FIELD IF EXISTS content_hash ON audit_event; REMOVE FIELD IF EXISTS sequence ON audit_event; REMOVE FIELD IF EXISTS chain ON audit_event;
         DELETE counter:['clinic', 'audit']; REMOVE FIELD IF EXISTS head ON counter; UPDATE settle_meta:schema SET version = 6;",
        settle::store::Vars::new(),
    )
    .await;

    let mut server = start(dir.path());
    let url = server.url.clone();
    let verify = "{ auditVerify { status checked pending firstBreak { detail } } auditHead { sequence } }";
    let after = gql(&http, &url, &token, verify, json!({})).await;
    assert_eq!(after["auditVerify"]["status"], "OK", "{after:#}");
    assert_eq!((after["auditVerify"]["checked"].as_i64(), after["auditHead"]["sequence"].as_i64()), (Some(107), Some(107)), "{after:#}");
    server.stop("-TERM");

    // Chained in key order, which is creation order.
    let store = open_store(dir.path()).await;
    let mut found = store
        .query("SELECT VALUE key FROM audit_event WHERE tenant = 'clinic' ORDER BY sequence", settle::store::Vars::new())
        .await
        .unwrap();
    let by_sequence: Vec<String> = found.rows(0).unwrap();
    let mut by_key = by_sequence.clone();
    by_key.sort();
    assert_eq!(by_sequence, by_key, "sequences follow keys");
    store.close().await;

    let mut server = start(dir.path());
    let url = server.url.clone();
    let invoice = open_invoice(&http, &url, &token, &client, &location, 99).await;
    gql(&http, &url, &token, pay, json!({"id": invoice, "m": cash, "key": "pay-after-upgrade"})).await;
    let later = gql(&http, &url, &token, verify, json!({})).await;
    // The create and finalize before the payment may still be chaining in the background.
    let chained = later["auditVerify"]["checked"].as_i64().unwrap() + later["auditVerify"]["pending"].as_i64().unwrap();
    assert_eq!((later["auditVerify"]["status"].as_str(), chained), (Some("OK"), 110), "changes after the upgrade go on from its head: {later:#}");
    server.stop("-TERM");
}

/// Before schema version 6 payments, credit notes and finalizations did not keep who made them.
/// The upgrade to version 8 copies each actor from the audit event that made the record (for an
/// invoice finalized twice, the later finalization's), fills only what is missing, and changes no
/// audit event: balance explanations name every actor again, and the audit chain verifies to the
/// same head. A start that stopped halfway through the upgrade fills the rest the next time.
#[tokio::test]
async fn a_database_from_schema_version_7_gets_the_actors_of_its_payments_credit_notes_and_finalizations() {
    let Practice { dir, http, mut server, token, client, location, methods } = Practice::start().await;
    let url = server.url.clone();
    let keys = TokenKeys::load_or_create_secret(&dir.path().join("signing.key")).unwrap();
    let second = keys.mint("second-actor", &TenantId::parse("clinic").unwrap(), &[Role::Billing], chrono::Duration::hours(1)).unwrap();
    let cash = method_of(&methods, "Cash");
    let pay = "mutation($id: ID!, $m: ID!, $key: String!) { payInvoice(id: $id, input: {methodId: $m}, idempotencyKey: $key) { payment { id } } }";
    // Finalized by upgrade-test in the upgrade's first batch of audit events and, after a revert,
    // by second-actor beyond it: the later finalization is the one that counts.
    let twice = open_invoice(&http, &url, &token, &client, &location, 0).await;
    gql(&http, &url, &token, "mutation($id: ID!) { revertInvoiceToDraft(id: $id, idempotencyKey: \"revert-twice\") { invoice { id } } }", json!({"id": twice})).await;
    // More audit events than one upgrade batch holds (100): 3 per invoice.
    for i in 1..36 {
        let invoice = open_invoice(&http, &url, &token, &client, &location, i).await;
        gql(&http, &url, &second, pay, json!({"id": invoice, "m": cash, "key": format!("pay-{i}")})).await;
    }
    gql(&http, &url, &second, "mutation($id: ID!) { finalizeInvoice(id: $id, idempotencyKey: \"finalize-twice\") { invoice { id } } }", json!({"id": twice})).await;
    let credited = open_invoice(&http, &url, &token, &client, &location, 90).await;
    gql(&http, &url, &second,
        "mutation($i: ID!) { issueCreditNote(invoiceId: $i, idempotencyKey: \"credit-1\",
            input: {reason: \"Waived\", lines: [{lineIndex: 0, amount: \"20.00\"}]}) { creditNote { id } } }",
        json!({"i": credited})).await;
    let kept = gql(&http, &url, &token,
        "mutation($c: ID!, $l: ID!, $m: ID!) { recordPayment(idempotencyKey: \"standalone\",
            input: {clientId: $c, locationId: $l, methodId: $m, amount: \"15.00\"}) { payment { id } } }",
        json!({"c": client, "l": location, "m": cash})).await["recordPayment"]["payment"]["id"].as_str().unwrap().to_owned();
    // The client's explanation has a step for every invoice total, credit note and payment.
    let actors = "query($c: ID!) { client(id: $c) { balanceProof { steps { record actor } } } }";
    let actors_of = |data: serde_json::Value| -> Vec<(String, Option<String>)> {
        data["client"]["balanceProof"]["steps"].as_array().unwrap().iter().map(|s| (s["record"].as_str().unwrap().to_owned(), s["actor"].as_str().map(str::to_owned))).collect()
    };
    let as_written = actors_of(gql(&http, &url, &token, actors, json!({"c": client})).await);
    assert_eq!(as_written.len(), 37 + 1 + 35 + 1, "37 invoices, a credit note, 36 payments: {as_written:?}");
    let actor_of = |steps: &[(String, Option<String>)], record: &str| steps.iter().find(|(r, _)| r.ends_with(record)).unwrap().1.clone();
    assert_eq!(actor_of(&as_written, &twice).as_deref(), Some("second-actor"), "the later finalization");
    let chain = crate::audit_chain::verified(&http, &url, &token).await;
    assert_eq!(chain["auditVerify"]["status"], "OK", "{chain:#}");
    server.stop("-TERM");

    // The database as version 7 left records written before version 6: no actors. The standalone
    // payment's actor stands for one the application wrote, which the upgrade must leave alone.
    let vars = || settle::store::Vars::new().set("kept", settle::store::rows::record("payment", &kept));
    let forget = "UPDATE payment SET created_by = NONE RETURN NONE; UPDATE credit_note SET created_by = NONE RETURN NONE;
        UPDATE invoice SET finalized_by = NONE RETURN NONE; UPDATE $kept SET created_by = 'written-by-settle' RETURN NONE;
        SELECT count() FROM payment WHERE created_by = NONE GROUP ALL; SELECT count() FROM credit_note WHERE created_by = NONE GROUP ALL;
        SELECT count() FROM invoice WHERE finalized_by = NONE GROUP ALL;";
    // One opening: opening a database that says version 7 upgrades it.
    let store = open_store(dir.path()).await;
    let mut left = store.query(forget, vars()).await.unwrap();
    let missing: Vec<i64> = (4..7).map(|statement| left.first::<settle::store::rows::CountRow>(statement).unwrap().map_or(0, |c| c.count)).collect();
    assert_eq!(missing, [35, 1, 37], "payments (all but the one kept), the credit note and invoices without their actors");
    store.query("UPDATE settle_meta:schema SET version = 7", settle::store::Vars::new()).await.unwrap();
    store.close().await;
    let mut expected = as_written.clone();
    expected.iter_mut().filter(|(record, _)| record.ends_with(&kept)).for_each(|(_, actor)| *actor = Some("written-by-settle".into()));

    let mut server = start(dir.path());
    let url = server.url.clone();
    assert_eq!(actors_of(gql(&http, &url, &token, actors, json!({"c": client})).await), expected, "every actor is back, the one kept as it was");
    assert_eq!(crate::audit_chain::verified(&http, &url, &token).await, chain, "no audit event changed: the chain verifies to the same head");
    server.stop("-TERM");

    // An upgrade stopped halfway: the first payments and finalizations filled, the rest not.
    let halfway = "UPDATE payment SET created_by = NONE WHERE number > 20 AND id != $kept RETURN NONE; UPDATE credit_note SET created_by = NONE RETURN NONE;
        UPDATE invoice SET finalized_by = NONE WHERE number > 20 OR id = $twice RETURN NONE; UPDATE settle_meta:schema SET version = 7;";
    change_stopped_database(dir.path(), halfway, vars().set("twice", settle::store::rows::record("invoice", &twice))).await;
    let mut server = start(dir.path());
    let url = server.url.clone();
    assert_eq!(actors_of(gql(&http, &url, &token, actors, json!({"c": client})).await), expected, "the next start fills the rest");
    assert_eq!(crate::audit_chain::verified(&http, &url, &token).await, chain);
    server.stop("-TERM");
    let (code, said) = crate::audit_chain::cli_verify(dir.path());
    assert_eq!(code, Some(0), "settle audit verify passes: {said}");
}

/// The field definitions of `table` in the stopped database under `dir` (`INFO FOR TABLE`).
async fn field_definitions(dir: &std::path::Path, table: &str) -> Vec<String> {
    let store = open_store(dir).await;
    let info = store.query(&format!("INFO FOR TABLE {table}"), settle::store::Vars::new()).await.unwrap().value(0).unwrap();
    store.close().await;
    let surrealdb::types::Value::Object(info) = info else { panic!("INFO FOR TABLE answers an object: {info:?}") };
    let Some(surrealdb::types::Value::Object(fields)) = info.get("fields") else { panic!("no fields in {info:?}") };
    fields.keys().cloned().collect()
}

/// A database created before the tables of money changes lost their field definitions (schema
/// of 2026-11-26, still version 8) keeps them: every record written before reads back, new money
/// changes are written and still checked against those definitions, and nothing is lost. A new
/// database gets only the payment's two fields that act.
#[tokio::test]
async fn a_database_created_with_field_definitions_keeps_them_and_goes_on() {
    let Practice { dir, http, mut server, token, client, location, methods } = Practice::start().await;
    let url = server.url.clone();
    let cash = method_of(&methods, "Cash");
    let pay = "mutation($id: ID!, $m: ID!, $a: Amount, $key: String!) { payInvoice(id: $id, input: {methodId: $m, amount: $a}, idempotencyKey: $key) { payment { id } } }";
    for i in 0..3 {
        let invoice = open_invoice(&http, &url, &token, &client, &location, i).await;
        gql(&http, &url, &token, pay, json!({"id": invoice, "m": cash, "a": "30.00", "key": format!("pay-{i}")})).await;
    }
    server.stop("-TERM");
    assert_eq!(field_definitions(dir.path(), "payment").await, ["credit", "refund_pending"], "a new database checks no other field");
    assert!(field_definitions(dir.path(), "invoice").await.is_empty());

    // As the release of 2026-11-26 would have left it: its schema applied, under its own hash.
    let old_schema = include_str!("fixtures/schema/version-8-with-field-definitions.surql");
    change_stopped_database(dir.path(), &format!("{old_schema}; UPDATE settle_meta:schema SET schema_hash = 'released 2026-11-26';"), settle::store::Vars::new()).await;
    let defined = field_definitions(dir.path(), "payment").await;
    assert!(defined.len() > 20 && defined.contains(&"amount".to_owned()), "{defined:?}");

    let mut server = start(dir.path());
    let url = server.url.clone();
    let before = gql(&http, &url, &token, "{ payments(first: 10) { totalCount edges { node { id number amount { amount } } } } }", json!({})).await;
    assert_eq!(before["payments"]["totalCount"], 3, "{before:#}");
    let invoice = open_invoice(&http, &url, &token, &client, &location, 3).await;
    gql(&http, &url, &token, pay, json!({"id": invoice, "m": cash, "a": "80.00", "key": "pay-3"})).await;
    let after = gql(&http, &url, &token,
        "query($id: ID!) { payments(first: 10) { totalCount edges { node { id number amount { amount } } } } invoice(id: $id) { status } }",
        json!({"id": invoice})).await;
    assert_eq!(after["payments"]["totalCount"], 4);
    assert_eq!(after["payments"]["edges"][0]["node"]["number"], "PAY-0004", "{after:#}");
    assert_eq!(after["payments"]["edges"].as_array().unwrap()[1..], before["payments"]["edges"].as_array().unwrap()[..], "the earlier payments as they were");
    assert_eq!(after["invoice"]["status"], "PAID");
    server.stop("-TERM");
    assert_eq!(field_definitions(dir.path(), "payment").await, defined, "the definitions stay, and keep checking");
}
