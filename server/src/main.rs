//! The `settle` command: serve, mint a token, print the schema, check a plugin, verify a
//! practice's audit chain, and (started by the server itself) host one plugin in a process of its
//! own.

use clap::{Parser, Subcommand};
use settle::auth::{Role, TenantId, TokenKeys};
use settle::config::{LogFormat, Settings};
use settle::startup::{Application, secret_path};

#[derive(Parser)]
#[command(name = "settle", version, about = "Settle: an open payments ledger for practices that bill clients")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server.
    Serve(Box<Settings>),
    /// Mint a token signed with the server's HS256 key.
    Token {
        #[arg(long)]
        tenant: String,
        /// VIEWER, BILLING or ADMIN; repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Lifetime, e.g. 30m, 12h, 30d.
        #[arg(long, default_value = "12h")]
        ttl: String,
        /// The subject recorded as actor in audit events.
        #[arg(long, default_value = "cli")]
        subject: String,
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Work with payment-method plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Work with the tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Serve one plugin to the server over stdin and stdout (the server starts this itself).
    #[command(hide = true)]
    PluginHost {
        /// The plugin library to load.
        #[arg(required_unless_present = "built_in", conflicts_with = "built_in")]
        library: Option<std::path::PathBuf>,
        /// Serve the built-in plugin with this id instead.
        #[arg(long)]
        built_in: Option<String>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load a plugin library and run the plugin contract against it.
    Check {
        /// The shared library, e.g. target/release/libmy_plugin.so.
        path: std::path::PathBuf,
        /// The plugin configuration to test with, as JSON.
        #[arg(long, default_value = "{}")]
        config: String,
        /// Details of a charge that should succeed, as JSON.
        #[arg(long, default_value = "{}")]
        details: String,
        /// The method type to charge as; the manifest's first when not given.
        #[arg(long)]
        method_type: Option<String>,
        #[arg(long, default_value = "AUD")]
        currency: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk a practice's chain of audit events and report the first broken link (H1). Opens the
    /// database as `settle serve` would: an embedded database only while no server holds it.
    Verify {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        settings: Box<Settings>,
    },
}

fn main() -> anyhow::Result<()> {
    limit_malloc_arenas();
    match Cli::parse().command {
        // No async runtime here: a plugin host is a small synchronous process.
        Command::PluginHost { library, built_in } => {
            std::process::exit(settle::plugins::child::run(library.as_deref(), built_in.as_deref(), settle::startup::built_in_plugins()))
        }
        command => tokio::runtime::Runtime::new()?.block_on(run(command)),
    }
}

/// glibc's malloc gives threads that allocate at the same time arenas of their own, up to eight per
/// core, and keeps what each one grew resident; SurrealDB's storage threads grow them with every
/// memtable and compaction. Two arenas kept the server's RSS a quarter lower at 200,000 payments,
/// with no throughput lost (docs/performance.md, "glibc's malloc arenas"). An operator's own
/// MALLOC_ARENA_MAX is left to glibc, which has read it already.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a limit glibc reads when it next creates an arena; no other
        // thread exists yet.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::PluginHost { .. } => anyhow::bail!("plugin-host runs before any async runtime starts"),
        Command::Serve(settings) => serve(*settings).await,
        Command::Token { tenant, roles, ttl, subject, settings } => {
            let tenant = TenantId::parse(&tenant).ok_or_else(|| anyhow::anyhow!("a tenant id is 1-64 of a-z A-Z 0-9 _ -"))?;
            let roles = roles
                .iter()
                .map(|r| Role::parse(&r.to_ascii_uppercase()).ok_or_else(|| anyhow::anyhow!("unknown role {r:?}: VIEWER, BILLING or ADMIN")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let keys = TokenKeys::load_or_create_secret(&secret_path(&settings))?;
            println!("{}", keys.mint(&subject, &tenant, &roles, parse_ttl(&ttl)?)?);
            Ok(())
        }
        Command::Schema => {
            print!("{}", settle::graphql::sdl());
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { tenant, settings }) => {
            let tenant = TenantId::parse(&tenant).ok_or_else(|| anyhow::anyhow!("a tenant id is 1-64 of a-z A-Z 0-9 _ -"))?;
            let intact = audit_verify(&settings, &tenant).await?;
            if !intact {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Plugin(PluginCommand::Check { path, config, details, method_type, currency }) => {
            let input = settle::plugins::check::CheckInput {
                config: serde_json::from_str(&config).map_err(|e| anyhow::anyhow!("--config is not JSON: {e}"))?,
                details: serde_json::from_str(&details).map_err(|e| anyhow::anyhow!("--details is not JSON: {e}"))?,
                method_type,
                currency,
            };
            let steps = settle::plugins::check::run(&path, &input);
            for step in &steps {
                println!("{} {:<52} {}", if step.passed { "ok  " } else { "FAIL" }, step.name, step.detail);
            }
            let failed = steps.iter().filter(|s| !s.passed).count();
            println!("{} passed, {failed} failed", steps.len() - failed);
            if failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    init_logging(&settings);
    let app = Application::build(settings.clone()).await?;
    let url = format!("http://{}", app.address());
    tracing::info!(%url, database = %settings.database_address(), "settle is listening");
    println!("Settle is listening on {url}");
    println!("GraphiQL: {url}/graphiql");
    println!("Dashboard: {url}/dashboard");
    if app.created_signing_key {
        let demo = TenantId::parse("demo").expect("valid tenant id");
        let token = app.keys().mint("demo-admin", &demo, &[Role::Admin], chrono::Duration::days(30))?;
        println!("First start: created a signing key in {}.", settings.data_dir.display());
        println!("An ADMIN token for tenant \"demo\", valid 30 days (send it as Authorization: Bearer <token>):");
        println!("{token}");
    }
    app.run_until(shutdown_signal()).await?;
    Ok(())
}

/// Opens the database, checks the tenant's audit chain and prints what it found; false when it
/// is broken.
async fn audit_verify(settings: &Settings, tenant: &TenantId) -> anyhow::Result<bool> {
    let store = match settle::store::Store::open(&settings.store_settings(), settle::metrics::Metrics::new()).await {
        Ok(store) => store,
        // SurrealKV locks its directory for one process; its error says so only in its text.
        Err(error) if error.to_string().contains("already locked") => {
            eprintln!(
                "the database {} is held by a running Settle server: stop it first, or ask that server (query auditVerify, ADMIN)",
                settings.database_address()
            );
            std::process::exit(2);
        }
        Err(error) => return Err(error),
    };
    let checked = store.verify_audit_chain(tenant).await;
    store.close().await;
    let report = checked?;
    println!("tenant {tenant}: {} events checked, head sequence {} hash {}", report.checked, report.head.sequence, report.head.chain);
    if report.pending > 0 {
        println!("{} events pending a sequence (committed moments before; chained next)", report.pending);
    }
    match &report.broken {
        None => println!("ok: the chain holds"),
        Some(found) => println!(
            "BROKEN at sequence {} ({:?}), audit event {}: {}",
            found.sequence,
            found.problem,
            found.event.as_deref().unwrap_or("none"),
            found.detail
        ),
    }
    Ok(report.broken.is_none())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match settings.log_format {
        LogFormat::Json => tracing::subscriber::set_global_default(builder.json().finish()),
        LogFormat::Text => tracing::subscriber::set_global_default(builder.finish()),
    };
    installed.expect("logging is set up once");
    // The storage engine logs through the `log` crate; its records join Settle's.
    log::set_boxed_logger(Box::new(StorageLog(tracing_log::LogTracer::new()))).expect("logging is set up once");
    log::set_max_level(tracing_log::AsLog::as_log(&tracing::level_filters::LevelFilter::current()));
}

/// Forwards the storage engine's log records to Settle's log, but one.
///
/// SurrealKV 0.21.4 warns "No runtime available for closing the store correctly" whenever a
/// clone of its tree handle is dropped on a thread without a tokio runtime. Its commit
/// coordinator runs on such a thread and drops its clone when the datastore shuts down, so every
/// clean stop logged the warning, although `Store::close` has by then flushed the write-ahead log
/// to disk and closed the files through the handle that owns them. The record says nothing true
/// about a clean stop, so it is left out; every other record of the engine is kept.
struct StorageLog(tracing_log::LogTracer);

impl log::Log for StorageLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        let spurious = record.target() == "surrealkv::lsm"
            && record.args().as_str() == Some("No runtime available for closing the store correctly");
        if !spurious {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// "30m", "12h", "30d" or plain seconds.
fn parse_ttl(text: &str) -> anyhow::Result<chrono::Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = number.parse().map_err(|_| anyhow::anyhow!("bad ttl {text:?}: use e.g. 30m, 12h or 30d"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("bad ttl {text:?}: use e.g. 30m, 12h or 30d"),
    };
    anyhow::ensure!(seconds > 0 && seconds <= 400 * 86_400, "ttl must be between 1 second and 400 days");
    Ok(chrono::Duration::seconds(seconds))
}
