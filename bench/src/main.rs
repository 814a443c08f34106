//! `settle-bench`: drives a real Settle server over HTTP with concurrent clients and prints
//! figures: throughput and p50/p95/p99 latency per operation (the reports among them: takings
//! over 30 days and aged receivables), server memory, and two baselines
//! measured in the same run on the same filesystem:
//!
//! - store: the same pay-an-invoice transaction run directly against the embedded store (the
//!   settle library's `Store`), without HTTP and GraphQL; API / store is what the API costs;
//! - disk: a write-plus-fdatasync loop at the same concurrency, the physical limit of a durable
//!   commit; API / disk is how close Settle comes to it.
//!
//! Storage is durable SurrealKV (sync on every commit) in a fresh directory. The server is the
//! `settle` binary built beside this one (same profile), started as a child process.
//!
//! With `--database ws://HOST:PORT` the server uses that SurrealDB server instead (a fresh
//! database on it, named `bench_<uuid>`), and `--processes N` starts N settle processes on it,
//! each client's requests going to them in turn; the baselines and the card-sim phase, which
//! measure the embedded store, are then skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use settle::auth::{Role, TenantId, TokenKeys};
use settle::charging::Charging;
use settle::commands::Commands;
use settle::commands::payments::PayInvoice;
use settle::metrics::Metrics;
use settle::store::audit::{IdempotencyKey, Mutation};
use settle::store::directory::{LocationFields, PartyFields, PartyKind};
use settle::store::invoices::{InvoiceDraft, LineDraft};
use settle::store::Store;
use settle::store::preview::Applied;

#[derive(Parser, Clone)]
#[command(about = "Settle load generator and baselines")]
struct Args {
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Payments that exist before the measured phases (the scale the figures are taken at).
    #[arg(long, default_value_t = 10_000)]
    payments: usize,
    /// Clients paying one hot invoice at once.
    #[arg(long, default_value_t = 16)]
    hot_clients: usize,
    /// Where the databases and the fsync files go (a fresh temporary directory inside it).
    #[arg(long, default_value = "target/bench-data")]
    dir: PathBuf,
    /// The settle binary; default: the one next to this program.
    #[arg(long)]
    server: Option<PathBuf>,
    /// Run only the HTTP phases (skip the disk and store baselines).
    #[arg(long)]
    api_only: bool,
    /// After the phases, run the clinic-day mix this many minutes more, printing throughput and
    /// the server's memory every minute (a soak for memory growth).
    #[arg(long, default_value_t = 0)]
    soak_minutes: u64,
    /// A SurrealDB server (ws://HOST:PORT) to run Settle on instead of the embedded store.
    #[arg(long)]
    database: Option<String>,
    /// The SurrealDB server's user (with --database).
    #[arg(long, default_value = "root")]
    db_user: String,
    /// The SurrealDB server's password (with --database).
    #[arg(long, default_value = "root")]
    db_password: String,
    /// Settle processes on the SurrealDB server (with --database), sharing the load.
    #[arg(long, default_value_t = 1)]
    processes: usize,
}

/// Latencies of one operation.
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    errors: u64,
}

impl Samples {
    fn percentile(sorted: &[Duration], p: f64) -> Duration {
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[index]
    }

    fn line(&self, name: &str, elapsed: Duration) -> String {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "{name:<28} {:>9.1}/s  p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.2} ms  ({} ok, {} errors)",
            sorted.len() as f64 / elapsed.as_secs_f64(),
            ms(Self::percentile(&sorted, 0.50)),
            ms(Self::percentile(&sorted, 0.95)),
            ms(Self::percentile(&sorted, 0.99)),
            ms(Self::percentile(&sorted, 0.999)),
            ms(sorted.last().copied().unwrap_or_default()),
            sorted.len(),
            self.errors
        )
    }

    fn throughput(&self, elapsed: Duration) -> f64 {
        self.latencies.len() as f64 / elapsed.as_secs_f64()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)?;
    let work = tempfile::tempdir_in(&args.dir)?;
    let storage = match &args.database {
        Some(database) => format!("{} settle process(es) on the SurrealDB server {database}", args.processes),
        None => format!("durable SurrealKV in {}", work.path().display()),
    };
    println!("settle-bench: {} clients, {} s per phase, {} existing payments, {storage}", args.clients, args.seconds, args.payments);
    let mut disk = None;
    let mut store = None;
    let embedded = args.database.is_none();
    if embedded && !args.api_only {
        let rate = disk_baseline(work.path(), args.clients, Duration::from_secs(args.seconds.min(10)))?;
        println!("disk baseline (write + fdatasync, {} threads): {rate:.0}/s", args.clients);
        disk = Some(rate);
        let rate = store_baseline(&work.path().join("store"), args.clients, Duration::from_secs(args.seconds)).await?;
        println!("store baseline (pay an invoice on the embedded store, {} tasks): {rate:.0}/s", args.clients);
        store = Some(rate);
    }
    let server = Server::start(&args, &work.path().join("server"), &[])?;
    let result = api_phases(&args, &server).await;
    let memory = server.memory();
    drop(server);
    let api = result?;
    println!("server memory: {memory}");
    if embedded {
        card_sim_in_and_out_of_process(&args, work.path()).await?;
    }
    if let Some(store) = store {
        println!("API / store: {:.0}%", api / store * 100.0);
    }
    if let Some(disk) = disk {
        println!("API / disk:  {:.0}%", api / disk * 100.0);
    }
    Ok(())
}

/// Each thread appends 256 bytes to its own file and fdatasyncs, as fast as it can.
fn disk_baseline(dir: &Path, threads: usize, length: Duration) -> anyhow::Result<f64> {
    use std::io::Write;
    let count = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + length;
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let path = dir.join(format!("fsync-{i}"));
            let count = count.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
                let block = [7u8; 256];
                while Instant::now() < stop {
                    file.write_all(&block)?;
                    file.sync_data()?;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                std::fs::remove_file(&path)
            })
        })
        .collect();
    for handle in handles {
        handle.join().map_err(|_| anyhow::anyhow!("fsync thread panicked"))??;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / length.as_secs_f64())
}

fn mutation<'a>(tenant: &'a TenantId, operation: &'static str) -> Mutation<'a> {
    let key = uuid::Uuid::new_v4().to_string();
    Mutation { tenant, actor: "bench", request_id: "bench", operation, idempotency: Some(IdempotencyKey { key: key.clone(), request_hash: key }), dry_run: false }
}

/// Paying an invoice straight through the settle library's commands, without HTTP and GraphQL:
/// each task pays 1.00 at a time on its own invoice with Cash, exactly what payInvoice does inside
/// the server (including the manual plugin's check of the payment's details).
async fn store_baseline(dir: &Path, tasks: usize, length: Duration) -> anyhow::Result<f64> {
    // The server's own defaults (caches, retries, transactions at once), on a database of its own.
    let mut defaults = settle::config::Settings::defaults();
    defaults.database = Some(format!("surrealkv://{}", dir.display()));
    let settings = defaults.store_settings();
    let store = Store::open(&settings, Metrics::new()).await?;
    defaults.plugin_dir = Some(dir.join("plugins"));
    let host = settle::plugins::PluginHost::start(&settle::startup::host_settings(&defaults)?, settle::startup::built_in_plugins(), None);
    let commands = Commands::new(store.clone(), Charging::new(Arc::new(host)));
    let tenant = TenantId::parse("bench").expect("valid tenant");
    store.tenant(&tenant).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let err = |e: settle::error::AppError| anyhow::anyhow!("{e}");
    let client = store
        .create_party(&mutation(&tenant, "createClient"), PartyKind::Client, PartyFields { name: "Bench".into(), email: None, phone: None })
        .await
        .map_err(err)?;
    let location = store
        .create_location(&mutation(&tenant, "createLocation"), LocationFields { name: "Bench".into(), address: None })
        .await
        .map_err(err)?;
    let cash = store
        .payment_methods(&tenant, false)
        .await
        .map_err(err)?
        .into_iter()
        .find(|m| m.name == "Cash")
        .map(|m| settle::store::rows::key_of(&m.id))
        .ok_or_else(|| anyhow::anyhow!("no Cash method"))?;
    let today = chrono::Utc::now().date_naive();
    let mut invoices = Vec::new();
    for _ in 0..tasks {
        let draft = InvoiceDraft {
            client: client.clone(),
            contact: None,
            location: location.clone(),
            practitioner: None,
            issue_date: today,
            due_date: None,
            currency: None,
            notes: None,
            lines: vec![LineDraft {
                description: "Course of treatment".into(),
                item_code: None,
                quantity: Decimal::ONE,
                unit_price: Decimal::from(10_000_000),
                discount: None,
                tax_rate: None,
            }],
        };
        let Applied::Done(key) = commands.create_invoice(&mutation(&tenant, "createInvoice"), draft).await.map_err(err)? else {
            anyhow::bail!("a request that is not a dry-run was answered with a preview");
        };
        commands.finalize_invoice(&mutation(&tenant, "finalizeInvoice"), &key).await.map_err(err)?;
        invoices.push(key);
    }
    let count = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + length;
    let mut handles = Vec::new();
    for invoice in invoices {
        let (commands, tenant, count, cash) = (commands.clone(), tenant.clone(), count.clone(), cash.clone());
        handles.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let request = PayInvoice {
                    method: cash.clone(),
                    amount: Some(Decimal::ONE),
                    date: today,
                    location: None,
                    description: None,
                    details: json!({}),
                };
                if commands.pay_invoice(&mutation(&tenant, "payInvoice"), &invoice, request).await.is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for handle in handles {
        handle.await?;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / length.as_secs_f64())
}

/// The settle binary as a child process on its own data directory, or (with `--database`) as
/// `--processes` child processes on one SurrealDB server, sharing the data directory (and so the
/// token signing key).
struct Server {
    children: Vec<Child>,
    urls: Vec<String>,
    token: String,
}

impl Server {
    /// Starts the binary on `data_dir` with `extra` flags after the usual ones.
    fn start(args: &Args, data_dir: &Path, extra: &[&str]) -> anyhow::Result<Server> {
        let binary = match &args.server {
            Some(path) => path.clone(),
            None => std::env::current_exe()?.with_file_name("settle"),
        };
        // Made before any process starts, so that they all sign with it.
        std::fs::create_dir_all(data_dir)?;
        let keys = TokenKeys::load_or_create_secret(&data_dir.join("signing.key"))?;
        let mut database = Vec::new();
        if let Some(address) = &args.database {
            let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
            database = ["--database", address, "--db-user", &args.db_user, "--db-password", &args.db_password, "--db-name", &name]
                .map(str::to_owned)
                .to_vec();
        }
        let count = if args.database.is_some() { args.processes.max(1) } else { 1 };
        let (mut children, mut urls) = (Vec::new(), Vec::new());
        for _ in 0..count {
            let mut child = Command::new(&binary)
                .args(["serve", "--listen", "127.0.0.1:0", "--log", "error"])
                .arg("--data-dir")
                .arg(data_dir)
                .args(&database)
                .args(extra)
                .env_remove("SETTLE_DATABASE")
                .env_remove("SETTLE_PLUGINS_IN_PROCESS")
                .env_remove("SETTLE_PLUGINS_OUT_OF_PROCESS")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| anyhow::anyhow!("starting {}: {e}", binary.display()))?;
            use std::io::BufRead;
            let stdout = child.stdout.take().expect("piped stdout");
            let mut lines = std::io::BufReader::new(stdout).lines();
            let url = loop {
                let line = lines.next().ok_or_else(|| anyhow::anyhow!("settle exited before listening"))??;
                if let Some(url) = line.strip_prefix("Settle is listening on ") {
                    break url.trim().to_owned();
                }
            };
            std::thread::spawn(move || for _ in lines {});
            children.push(child);
            urls.push(url);
        }
        let tenant = TenantId::parse("bench").expect("valid tenant");
        let token = keys.mint("bench", &tenant, &[Role::Admin], chrono::Duration::hours(12))?;
        Ok(Server { children, urls, token })
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// VmRSS and VmHWM of the server processes.
    fn memory(&self) -> String {
        memory_of_all(&self.pids())
    }

    /// A client of the server, sending its requests to each process in turn.
    fn api(&self, clients: usize) -> anyhow::Result<Api> {
        Ok(Api {
            http: reqwest::Client::builder().pool_max_idle_per_host(clients * 2).build()?,
            urls: Arc::new(self.urls.clone()),
            next: Arc::new(AtomicUsize::new(0)),
            token: self.token.clone(),
            requests: Arc::new(std::sync::Mutex::new(None)),
        })
    }
}

/// VmRSS and VmHWM of each process of `pids`.
fn memory_of_all(pids: &[u32]) -> String {
    pids.iter().map(|pid| memory_of(*pid)).collect::<Vec<_>>().join("; ")
}

/// VmRSS and VmHWM of process `pid`.
fn memory_of(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find(|l| l.starts_with(name)).map(|l| l[name.len()..].trim().to_owned()).unwrap_or_else(|| "?".into())
    };
    format!("RSS {} (peak {})", field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user and system) the processes `pids` have used so far, from /proc/<pid>/stat.
fn cpu_seconds(pids: &[u32]) -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = |pid: &u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The fields after the command name (in parentheses, which may hold spaces): utime and
        // stime are the 12th and 13th of them.
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        after_name.split_whitespace().skip(11).take(2).filter_map(|n| n.parse::<u64>().ok()).sum()
    };
    pids.iter().map(ticks).sum::<u64>() as f64 / ticks_per_second
}

/// The server's CPU per request of a phase that ran `samples` for `elapsed`, used `cpu` seconds:
/// steadier from run to run than the throughput, which the machine's other work moves.
fn cpu_line(samples: &Samples, cpu: f64, elapsed: Duration) -> String {
    let requests = samples.latencies.len().max(1) as f64;
    format!("  server CPU {:.2} ms per request, {:.2} cores busy", cpu * 1000.0 / requests, cpu / elapsed.as_secs_f64())
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A GraphQL client of the server.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    /// The server's processes; requests go to each in turn.
    urls: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    token: String,
    /// While set, the latency of every single request, by the operation's first field
    /// (`payInvoice`, `createInvoice`, ...): an operation of the clinic-day mix sends several.
    requests: Arc<std::sync::Mutex<Option<std::collections::BTreeMap<String, Samples>>>>,
}

impl Api {
    async fn call(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let url = &self.urls[self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len()];
        let started = Instant::now();
        let data: anyhow::Result<Value> = async {
            let body: Value = self
                .http
                .post(format!("{url}/graphql"))
                .bearer_auth(&self.token)
                .json(&json!({"query": query, "variables": variables}))
                .send()
                .await?
                .json()
                .await?;
            if let Some(errors) = body.get("errors").filter(|e| !e.is_null()) {
                anyhow::bail!("{}", errors[0]["extensions"]["code"].as_str().unwrap_or("error"));
            }
            Ok(body["data"].clone())
        }
        .await;
        if let Some(requests) = self.requests.lock().expect("requests").as_mut() {
            let samples = requests.entry(first_field(query).to_owned()).or_default();
            match &data {
                Ok(_) => samples.latencies.push(started.elapsed()),
                Err(_) => samples.errors += 1,
            }
        }
        data
    }

    async fn invoice(&self, client: &str, location: &str, amount: &str) -> anyhow::Result<String> {
        let created = self
            .call(
                "mutation($input: InvoiceInput!, $key: String!) { createInvoice(input: $input, idempotencyKey: $key) { invoice { id } } }",
                json!({"key": uuid::Uuid::new_v4().to_string(), "input": {"clientId": client, "locationId": location,
                    "lines": [{"description": "Consultation", "unitPrice": amount}]}}),
            )
            .await?;
        let id = created["createInvoice"]["invoice"]["id"].as_str().unwrap_or_default().to_owned();
        self.call(
            "mutation($id: ID!, $key: String!) { finalizeInvoice(id: $id, idempotencyKey: $key) { invoice { id } } }",
            json!({"id": id, "key": uuid::Uuid::new_v4().to_string()}),
        )
        .await?;
        Ok(id)
    }
}

/// The first field an operation selects: `payInvoice` in `mutation(...) { payInvoice(...) {...} }`.
fn first_field(query: &str) -> &str {
    let body = query.split_once('{').map_or(query, |(_, body)| body);
    body.trim_start().split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or("")
}

const PAY: &str = "mutation($id: ID!, $m: ID!, $amount: Amount!, $key: String!) {
    payInvoice(id: $id, input: {methodId: $m, amount: $amount}, idempotencyKey: $key) { payment { id } } }";

const TAKINGS_30_DAYS: &str = "query($from: Date!, $to: Date!) { takings(from: $from, to: $to, groupBy: DAY) {
    rows { day currency net { amount } paymentCount refundCount } totals { currency net { amount } } } }";

const AGED_RECEIVABLES: &str = "{ agedReceivables { total { current { amount } days1To30 { amount } days31To60 { amount }
    days61To90 { amount } over90 { amount } total { amount } } clients(first: 50) { totalCount edges { node { client { name }
    buckets { total { amount } } } } } } }";
const PAY_CARD: &str = "mutation($id: ID!, $m: ID!, $amount: Amount!, $key: String!) {
    payInvoice(id: $id, input: {methodId: $m, amount: $amount, details: {card_number: \"4242424242424242\"}}, idempotencyKey: $key) { payment { id } } }";

/// payInvoice through card-sim, the built-in run in the server and then, on a second server of
/// its own, in a `settle plugin-host` child process (`--plugins-out-of-process card-sim`): what
/// moving a plugin out of the server costs per charge. Each client pays its own invoice.
async fn card_sim_in_and_out_of_process(args: &Args, work: &Path) -> anyhow::Result<()> {
    let length = Duration::from_secs(args.seconds);
    let mut rates = Vec::new();
    for (name, dir, extra) in [
        ("card-sim in process", "card-in", &[][..]),
        ("card-sim out of process", "card-out", &["--plugins-out-of-process", "card-sim"][..]),
    ] {
        let server = Server::start(args, &work.join(dir), extra)?;
        let api = server.api(args.clients)?;
        let id = |data: Value, field: &str| data[field]["id"].as_str().unwrap_or_default().to_owned();
        let client = id(api.call("mutation { createClient(input: {name: \"Bench Client\"}) { id } }", json!({})).await?, "createClient");
        let location = id(api.call("mutation { createLocation(input: {name: \"Bench Clinic\"}) { id } }", json!({})).await?, "createLocation");
        let methods = api.call("{ paymentMethods { id name } }", json!({})).await?;
        let card = methods["paymentMethods"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == "Credit card"))
            .and_then(|m| m["id"].as_str())
            .ok_or_else(|| anyhow::anyhow!("no Credit card method"))?
            .to_owned();
        let mut own = Vec::new();
        for _ in 0..args.clients {
            own.push(api.invoice(&client, &location, "10000000.00").await?);
        }
        let own = Arc::new(own);
        let samples = measure(args.clients, length, move |worker| {
            let (api, invoice, card) = (api.clone(), own[worker].clone(), card.clone());
            async move {
                api.call(PAY_CARD, json!({"id": invoice, "m": card, "amount": "1.00", "key": uuid::Uuid::new_v4().to_string()}))
                    .await
                    .map(drop)
            }
        })
        .await;
        println!("{}", samples.line(&format!("payInvoice, {name}"), length));
        println!("  server memory: {}", server.memory());
        rates.push(samples.throughput(length));
    }
    if let [inside, outside] = rates[..] {
        println!("card-sim out of process / in process: {:.0}%", outside / inside * 100.0);
    }
    Ok(())
}

/// Runs `workers` tasks of `op` for `length`, collecting latencies.
async fn measure<F, Fut>(workers: usize, length: Duration, op: F) -> Samples
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..workers)
        .map(|worker| {
            let (op, stop) = (op.clone(), stop.clone());
            tokio::spawn(async move {
                let mut samples = Samples::default();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    match op(worker).await {
                        Ok(()) => samples.latencies.push(started.elapsed()),
                        Err(_) => samples.errors += 1,
                    }
                }
                samples
            })
        })
        .collect();
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Samples::default();
    for handle in handles {
        if let Ok(samples) = handle.await {
            all.latencies.extend(samples.latencies);
            all.errors += samples.errors;
        }
    }
    all
}

/// The HTTP phases; returns the payInvoice throughput on distinct invoices.
async fn api_phases(args: &Args, server: &Server) -> anyhow::Result<f64> {
    let api = server.api(args.clients)?;
    let client = api.call("mutation { createClient(input: {name: \"Bench Client\"}) { id } }", json!({})).await?["createClient"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let location = api.call("mutation { createLocation(input: {name: \"Bench Clinic\"}) { id } }", json!({})).await?["createLocation"]
        ["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let methods = api.call("{ paymentMethods { id name } }", json!({})).await?;
    let cash = methods["paymentMethods"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "Cash"))
        .and_then(|m| m["id"].as_str())
        .unwrap_or_default()
        .to_owned();

    // Existing payments, so the figures are taken at a known scale.
    let seeding = Instant::now();
    let seeded = Arc::new(AtomicU64::new(0));
    let target = args.payments as u64;
    let seeders: Vec<_> = (0..args.clients)
        .map(|_| {
            let (api, client, location, cash, seeded) = (api.clone(), client.clone(), location.clone(), cash.clone(), seeded.clone());
            tokio::spawn(async move {
                loop {
                    let n = seeded.fetch_add(1, Ordering::Relaxed);
                    if n >= target {
                        break;
                    }
                    // Dated over the last year, so a report of 30 days reads a twelfth of them.
                    let date = chrono::Utc::now().date_naive() - chrono::Duration::days((n % 365) as i64);
                    let _ = api
                        .call(
                            "mutation($c: ID!, $l: ID!, $m: ID!, $key: String!, $date: Date!) { recordPayment(idempotencyKey: $key,
                                input: {clientId: $c, locationId: $l, methodId: $m, amount: \"25.00\", date: $date}) { payment { id } } }",
                            json!({"c": client, "l": location, "m": cash, "key": uuid::Uuid::new_v4().to_string(), "date": date.to_string()}),
                        )
                        .await;
                }
            })
        })
        .collect();
    // A long seeding is also a sustained write load: show its pace and the server's memory.
    let progress = {
        let (seeded, pids) = (seeded.clone(), server.pids());
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let done = seeded.load(Ordering::Relaxed).min(target);
                println!(
                    "  seeding: {done} payments after {:.0} min, {:.0}/s in the last minute, server {}",
                    seeding.elapsed().as_secs_f64() / 60.0,
                    (done - last) as f64 / 60.0,
                    memory_of_all(&pids)
                );
                last = done;
            }
        })
    };
    for seeder in seeders {
        seeder.await?;
    }
    progress.abort();
    println!("seeded {} payments in {:.1} s", args.payments, seeding.elapsed().as_secs_f64());

    let length = Duration::from_secs(args.seconds);
    // payInvoice, each client on its own invoice.
    let mut own = Vec::new();
    for _ in 0..args.clients {
        own.push(api.invoice(&client, &location, "10000000.00").await?);
    }
    let own = Arc::new(own);
    let cpu_before = cpu_seconds(&server.pids());
    let pay = {
        let (api, own, cash) = (api.clone(), own.clone(), cash.clone());
        measure(args.clients, length, move |worker| {
            let (api, invoice, cash) = (api.clone(), own[worker].clone(), cash.clone());
            async move {
                api.call(PAY, json!({"id": invoice, "m": cash, "amount": "1.00", "key": uuid::Uuid::new_v4().to_string()})).await.map(drop)
            }
        })
        .await
    };
    let cpu = cpu_seconds(&server.pids()) - cpu_before;
    println!("{}", pay.line("payInvoice (distinct)", length));
    println!("{}", cpu_line(&pay, cpu, length));

    // One hot invoice, many payers: no update may be lost.
    let hot = api.invoice(&client, &location, "10000000.00").await?;
    let cpu_before = cpu_seconds(&server.pids());
    let hot_pay = {
        let (api, hot, cash) = (api.clone(), hot.clone(), cash.clone());
        measure(args.hot_clients, length, move |_| {
            let (api, hot, cash) = (api.clone(), hot.clone(), cash.clone());
            async move { api.call(PAY, json!({"id": hot, "m": cash, "amount": "1.00", "key": uuid::Uuid::new_v4().to_string()})).await.map(drop) }
        })
        .await
    };
    let paid = api.call("query($id: ID!) { invoice(id: $id) { amountPaid { amount } } }", json!({"id": hot})).await?;
    let paid: Decimal = paid["invoice"]["amountPaid"]["amount"].as_str().unwrap_or("0").parse().unwrap_or_default();
    let lost = Decimal::from(hot_pay.latencies.len() as u64) - paid;
    let cpu = cpu_seconds(&server.pids()) - cpu_before;
    println!("{}  lost updates: {lost}", hot_pay.line(&format!("payInvoice (1 hot, {} clients)", args.hot_clients), length));
    println!("{}", cpu_line(&hot_pay, cpu, length));

    // A dashboard alone: one page of 50 invoices at a time, nothing else running.
    let page_alone = measure(1, Duration::from_secs(args.seconds.min(5)), {
        let api = api.clone();
        move |_| {
            let api = api.clone();
            async move { clinic_op(&api, PAGE_OF_50, "", "", "").await }
        }
    })
    .await;
    println!("{}", page_alone.line("invoices page of 50, alone", Duration::from_secs(args.seconds.min(5))));

    let ids = Ids { client, location, cash };
    *api.requests.lock().expect("requests") = Some(Default::default());
    let cpu_before = cpu_seconds(&server.pids());
    let (per_op, elapsed) = clinic_day(&api, &ids, args.clients, length).await;
    let cpu = cpu_seconds(&server.pids()) - cpu_before;
    let requests = api.requests.lock().expect("requests").take().unwrap_or_default();
    println!("clinic day mix ({} clients):", args.clients);
    for (name, samples) in MIX.iter().zip(&per_op) {
        println!("  {}", samples.line(name, elapsed));
    }
    // The mix's operations send one to four requests each; the 250 ms bound is for one request.
    println!("  the mix's single requests:");
    for (name, samples) in &requests {
        println!("    {}", samples.line(name, elapsed));
    }
    let all = Samples { latencies: requests.values().flat_map(|samples| samples.latencies.iter().copied()).collect(), errors: 0 };
    println!("  {}", cpu_line(&all, cpu, elapsed).trim_start());

    // Reports alone, after the clinic day left open invoices, refunds and credit notes behind.
    let report_length = Duration::from_secs(args.seconds.min(5));
    let takings = measure(1, report_length, {
        let api = api.clone();
        move |_| {
            let api = api.clone();
            async move {
                let to = chrono::Utc::now().date_naive();
                let from = to - chrono::Duration::days(29);
                api.call(TAKINGS_30_DAYS, json!({"from": from.to_string(), "to": to.to_string()})).await.map(drop)
            }
        }
    })
    .await;
    println!("{}", takings.line("takings, 30 days by day", report_length));
    let aged = measure(1, report_length, {
        let api = api.clone();
        move |_| {
            let api = api.clone();
            async move { api.call(AGED_RECEIVABLES, json!({})).await.map(drop) }
        }
    })
    .await;
    println!("{}", aged.line("aged receivables", report_length));

    if args.soak_minutes > 0 {
        println!("soak: the clinic-day mix for {} minutes ({} clients), server {}", args.soak_minutes, args.clients, server.memory());
        for minute in 1..=args.soak_minutes {
            let (per_op, elapsed) = clinic_day(&api, &ids, args.clients, Duration::from_secs(60)).await;
            let done: usize = per_op.iter().map(|s| s.latencies.len()).sum();
            let errors: u64 = per_op.iter().map(|s| s.errors).sum();
            println!(
                "  minute {minute:>3}: {:.0} operations/s ({errors} errors), server {}",
                done as f64 / elapsed.as_secs_f64(),
                server.memory()
            );
        }
    }
    Ok(pay.throughput(length))
}

/// The records the clinic-day operations use.
struct Ids {
    client: String,
    location: String,
    cash: String,
}

/// The operations of a clinic day and how often each comes up.
const MIX: [&str; 7] = ["create+finalize", "payInvoice", "recordPayment", "applyPayment", "refund", "creditNote", "invoices page of 50"];
const WEIGHTS: [usize; 7] = [3, 3, 1, 1, 1, 1, 4];
const PAGE_OF_50: usize = 6;

/// A clinic day for `length`: `clients` clients doing a weighted mix of what a front desk and
/// its dashboards do; returns the samples of each operation and the time taken.
async fn clinic_day(api: &Api, ids: &Ids, clients: usize, length: Duration) -> (Vec<Samples>, Duration) {
    let per_op: Arc<Vec<std::sync::Mutex<Samples>>> = Arc::new(MIX.iter().map(|_| std::sync::Mutex::new(Samples::default())).collect());
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    measure(clients, length, {
        let (api, client, location, cash, per_op, counter) =
            (api.clone(), ids.client.clone(), ids.location.clone(), ids.cash.clone(), per_op.clone(), counter.clone());
        move |_| {
            let (api, client, location, cash, per_op) = (api.clone(), client.clone(), location.clone(), cash.clone(), per_op.clone());
            let n = counter.fetch_add(1, Ordering::Relaxed) as usize;
            async move {
                let total: usize = WEIGHTS.iter().sum();
                let mut pick = (n.wrapping_mul(2654435761)) % total;
                let mut op = 0;
                while pick >= WEIGHTS[op] {
                    pick -= WEIGHTS[op];
                    op += 1;
                }
                let t = Instant::now();
                let result = clinic_op(&api, op, &client, &location, &cash).await;
                let mut samples = per_op[op].lock().expect("samples");
                match result {
                    Ok(()) => samples.latencies.push(t.elapsed()),
                    Err(_) => samples.errors += 1,
                }
                Ok(())
            }
        }
    })
    .await;
    let elapsed = started.elapsed();
    let per_op = Arc::try_unwrap(per_op).map_or_else(|_| Vec::new(), |v| v.into_iter().map(|m| m.into_inner().expect("samples")).collect());
    (per_op, elapsed)
}

/// One operation of the clinic-day mix.
async fn clinic_op(api: &Api, op: usize, client: &str, location: &str, cash: &str) -> anyhow::Result<()> {
    let key = || uuid::Uuid::new_v4().to_string();
    match op {
        0 => api.invoice(client, location, "120.00").await.map(drop),
        1 => {
            let invoice = api.invoice(client, location, "80.00").await?;
            api.call(PAY, json!({"id": invoice, "m": cash, "amount": "80.00", "key": key()})).await.map(drop)
        }
        2 => api
            .call(
                "mutation($c: ID!, $l: ID!, $m: ID!, $key: String!) { recordPayment(idempotencyKey: $key,
                    input: {clientId: $c, locationId: $l, methodId: $m, amount: \"40.00\"}) { payment { id } } }",
                json!({"c": client, "l": location, "m": cash, "key": key()}),
            )
            .await
            .map(drop),
        3 => {
            let payment = api
                .call(
                    "mutation($c: ID!, $l: ID!, $m: ID!, $key: String!) { recordPayment(idempotencyKey: $key,
                        input: {clientId: $c, locationId: $l, methodId: $m, amount: \"30.00\"}) { payment { id } } }",
                    json!({"c": client, "l": location, "m": cash, "key": key()}),
                )
                .await?;
            let invoice = api.invoice(client, location, "30.00").await?;
            api.call(
                "mutation($p: ID!, $i: ID!, $key: String!) { applyPayment(id: $p, invoiceId: $i, amount: \"30.00\", idempotencyKey: $key) { allocation { id } } }",
                json!({"p": payment["recordPayment"]["payment"]["id"], "i": invoice, "key": key()}),
            )
            .await
            .map(drop)
        }
        4 => {
            let payment = api
                .call(
                    "mutation($c: ID!, $l: ID!, $m: ID!, $key: String!) { recordPayment(idempotencyKey: $key,
                        input: {clientId: $c, locationId: $l, methodId: $m, amount: \"50.00\"}) { payment { id } } }",
                    json!({"c": client, "l": location, "m": cash, "key": key()}),
                )
                .await?;
            api.call(
                "mutation($p: ID!, $key: String!) { refundPayment(id: $p, input: {amount: \"20.00\"}, idempotencyKey: $key) { refund { id } } }",
                json!({"p": payment["recordPayment"]["payment"]["id"], "key": key()}),
            )
            .await
            .map(drop)
        }
        5 => {
            let invoice = api.invoice(client, location, "60.00").await?;
            api.call(
                "mutation($i: ID!, $key: String!) { issueCreditNote(invoiceId: $i, idempotencyKey: $key,
                    input: {reason: \"goodwill\", lines: [{lineIndex: 0, amount: \"10.00\"}]}) { creditNote { id } } }",
                json!({"i": invoice, "key": key()}),
            )
            .await
            .map(drop)
        }
        _ => api
            .call(
                "{ invoices(first: 50) { edges { node { id number status total { amount } balance { amount } client { name } } } pageInfo { hasNextPage endCursor } } }",
                json!({}),
            )
            .await
            .map(drop),
    }
}
