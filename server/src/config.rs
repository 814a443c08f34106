//! Configuration: command-line flags, each also readable from a SETTLE_* environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::store::StoreSettings;

/// Everything `settle serve` needs. Tests build the same struct (see `Settings::for_tests`).
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "SETTLE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for Settle's own files (the token signing key) and the default database.
    #[arg(long, env = "SETTLE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Database address: surrealkv://PATH (embedded, durable), mem:// (embedded, in memory) or
    /// ws://HOST:PORT / wss://HOST:PORT (a SurrealDB server). Default: surrealkv://DATA_DIR/db.
    #[arg(long, env = "SETTLE_DATABASE")]
    pub database: Option<String>,

    /// SurrealDB namespace and database names.
    #[arg(long, env = "SETTLE_DB_NAMESPACE", default_value = "settle")]
    pub db_namespace: String,
    #[arg(long, env = "SETTLE_DB_NAME", default_value = "settle")]
    pub db_name: String,

    /// Root credentials for a SurrealDB server (ws:// and wss:// only).
    #[arg(long, env = "SETTLE_DB_USER")]
    pub db_user: Option<String>,
    #[arg(long, env = "SETTLE_DB_PASSWORD", hide_env_values = true)]
    pub db_password: Option<String>,

    /// How long a call to a SurrealDB server (ws://, wss://) may take, in ms: a server that stops
    /// answering makes requests fail with DATABASE_UNAVAILABLE after this, instead of waiting
    /// while the connection is made again in the background.
    #[arg(long, env = "SETTLE_DB_TIMEOUT_MS", default_value_t = 10_000)]
    pub db_timeout_ms: u64,

    /// SurrealKV block cache in MiB (it would otherwise take half the machine's memory).
    #[arg(long, env = "SETTLE_STORE_BLOCK_CACHE_MIB", default_value_t = 64)]
    pub store_block_cache_mib: u64,

    /// SurrealKV memtable (write buffer) in MiB (it would otherwise grow to 1 GiB).
    #[arg(long, env = "SETTLE_STORE_MEMTABLE_MIB", default_value_t = 64)]
    pub store_memtable_mib: u64,

    /// Token verification algorithm. HS256 uses a secret kept in the data directory (created on
    /// first start) or given by --jwt-secret-file; RS256 and ES256 verify tokens of an external
    /// identity provider with --jwt-public-key-file.
    #[arg(long, env = "SETTLE_JWT_ALGORITHM", value_enum, default_value = "hs256")]
    pub jwt_algorithm: JwtAlgorithm,

    /// File holding the HS256 secret as hex. Default: DATA_DIR/signing.key.
    #[arg(long, env = "SETTLE_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// PEM public key for RS256 or ES256.
    #[arg(long, env = "SETTLE_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Log filter (error, warn, info, debug, trace or a tracing directive). Logs go to stderr;
    /// the storage engine's own start-up chatter is kept at warn unless asked for.
    #[arg(long, env = "SETTLE_LOG", default_value = "info,surrealdb=warn,surrealkv=warn")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "SETTLE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// The only directory plugin libraries are loaded from. Default: DATA_DIR/plugins.
    #[arg(long, env = "SETTLE_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,

    /// Plugin ids that run inside the server's process, separated by commas (a library is then
    /// loaded into the server). By default only the built-ins (manual, card-sim) do.
    #[arg(long, env = "SETTLE_PLUGINS_IN_PROCESS", value_delimiter = ',')]
    pub plugins_in_process: Vec<String>,

    /// Plugin ids that run in a child process of their own, separated by commas (a built-in is
    /// then served by `settle plugin-host --built-in ID`). By default every library does.
    #[arg(long, env = "SETTLE_PLUGINS_OUT_OF_PROCESS", value_delimiter = ',')]
    pub plugins_out_of_process: Vec<String>,

    /// Address-space limit of each plugin process (RLIMIT_AS), in MiB; 0 for none. A plugin that
    /// allocates past it dies alone.
    #[arg(long, env = "SETTLE_PLUGIN_MEMORY_LIMIT_MIB", default_value_t = 2048)]
    pub plugin_memory_limit_mib: u64,

    /// How long a plugin process may leave a call unanswered before it is killed and restarted,
    /// in ms (at least the plugin call timeout, after which the caller already has its answer).
    #[arg(long, env = "SETTLE_PLUGIN_HANG_LIMIT_MS", default_value_t = 30_000)]
    pub plugin_hang_limit_ms: u64,

    /// Calls in flight at once in one plugin process.
    #[arg(long, env = "SETTLE_PLUGIN_PROCESS_CALLS_MAX", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub plugin_process_calls_max: u64,

    /// How long a plugin marked unhealthy after repeated faults is refused before it is tried
    /// again, in ms.
    #[arg(long, env = "SETTLE_PLUGIN_UNHEALTHY_COOL_DOWN_MS", default_value_t = 30_000)]
    pub plugin_unhealthy_cool_down_ms: u64,

    /// The `settle` binary that runs plugin processes (`settle plugin-host`). Default: the
    /// running executable.
    #[arg(long, env = "SETTLE_PLUGIN_HOST_PROGRAM", hide = true)]
    pub plugin_host_program: Option<PathBuf>,

    /// How often the reconciler settles charges and refunds whose outcome was not known, in ms.
    #[arg(long, env = "SETTLE_RECONCILE_INTERVAL_MS", default_value_t = 30_000)]
    pub reconcile_interval_ms: u64,

    /// Origins whose browser pages may call the API (CORS), as scheme://host[:port], separated by
    /// commas, e.g. https://dashboard.example.com,http://localhost:3000. None by default: no
    /// CORS headers at all, so browsers let only pages served by Settle itself call it.
    #[arg(long, env = "SETTLE_CORS_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_allowed_origins: Vec<String>,

    #[command(flatten)]
    pub limits: Limits,
}

/// An origin as browsers send it in the Origin header: scheme://host[:port], no path, in
/// lowercase. A trailing slash is dropped; anything else is refused at start-up rather than
/// silently never matching.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let origin = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let refused = || format!("{text:?} is not an origin like https://app.example.com or http://localhost:3000");
    let (scheme, rest) = origin.split_once("://").ok_or_else(refused)?;
    let host_and_port_only = !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !matches!(scheme, "http" | "https") || !host_and_port_only {
        return Err(refused());
    }
    Ok(origin)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    Hs256,
    Rs256,
    Es256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Limits that protect the server; clients can read them through the `limits` query.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Largest page a connection returns.
    #[arg(long, env = "SETTLE_PAGE_SIZE_MAX", default_value_t = 100)]
    pub page_size_max: usize,
    /// Deepest GraphQL query accepted.
    #[arg(long, env = "SETTLE_QUERY_DEPTH_MAX", default_value_t = 12)]
    pub query_depth_max: usize,
    /// Most complex GraphQL query accepted: one point per field, times page sizes; a paged list
    /// costs 25 more, a record looked up by id 10 more, a list without pages 10 per item.
    #[arg(long, env = "SETTLE_QUERY_COMPLEXITY_MAX", default_value_t = 20000)]
    pub query_complexity_max: usize,
    /// Most selections (fields, fragment spreads, inline fragments) a GraphQL document may hold
    /// once its fragments are expanded; counted before any other check (Q1).
    #[arg(long, env = "SETTLE_QUERY_SELECTIONS_MAX", default_value_t = 5000)]
    pub query_selections_max: usize,
    /// Longest GraphQL document (the query text), in bytes.
    #[arg(long, env = "SETTLE_QUERY_LENGTH_MAX_BYTES", default_value_t = 64 * 1024)]
    pub query_length_max_bytes: usize,
    /// Queries kept for automatic persisted queries (the least recently used is forgotten first);
    /// each is at most --query-length-max-bytes.
    #[arg(long, env = "SETTLE_PERSISTED_QUERIES_MAX", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub persisted_queries_max: u64,
    /// Largest request body, in bytes.
    #[arg(long, env = "SETTLE_BODY_SIZE_MAX_BYTES", default_value_t = 1 << 20)]
    pub body_size_max_bytes: usize,
    /// Longest wait for one plugin call before its outcome counts as unknown.
    #[arg(long, env = "SETTLE_PLUGIN_CALL_TIMEOUT_MS", default_value_t = 10_000)]
    pub plugin_call_timeout_ms: u64,
    /// Plugin calls running at once, across all plugins.
    #[arg(long, env = "SETTLE_PLUGIN_CONCURRENCY_MAX", default_value_t = 8)]
    pub plugin_concurrency_max: usize,
    /// Times one transaction is retried after write conflicts before TRANSACTION_CONFLICT.
    #[arg(long, env = "SETTLE_TRANSACTION_RETRIES_MAX", default_value_t = 24)]
    pub transaction_retries_max: u32,
    /// WebSocket connections (live updates) one tenant may hold open at once; one more is
    /// refused with TOO_MANY_CONNECTIONS.
    #[arg(long, env = "SETTLE_WEBSOCKET_CONNECTIONS_PER_TENANT_MAX", default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub websocket_connections_per_tenant_max: u32,
    /// Subscriptions one WebSocket connection may run at once; one more is refused with
    /// TOO_MANY_SUBSCRIPTIONS.
    #[arg(long, env = "SETTLE_SUBSCRIPTIONS_PER_CONNECTION_MAX", default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub subscriptions_per_connection_max: u32,
    /// Ledger event records held for one subscriber that reads more slowly than they come; when
    /// it falls further behind, its subscription ends with SUBSCRIBER_TOO_SLOW.
    #[arg(long, env = "SETTLE_SUBSCRIPTION_BUFFER_MAX", default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub subscription_buffer_max: u32,
}

impl Settings {
    pub fn database_address(&self) -> String {
        self.database.clone().unwrap_or_else(|| format!("surrealkv://{}", self.data_dir.join("db").display()))
    }

    pub fn store_settings(&self) -> StoreSettings {
        StoreSettings {
            address: self.database_address(),
            namespace: self.db_namespace.clone(),
            database: self.db_name.clone(),
            username: self.db_user.clone(),
            password: self.db_password.clone(),
            remote_timeout: std::time::Duration::from_millis(self.db_timeout_ms.max(1)),
            block_cache_mib: self.store_block_cache_mib,
            memtable_mib: self.store_memtable_mib,
            transaction_retries_max: self.limits.transaction_retries_max,
        }
    }

    /// Refuses a plugin id named both in and out of process.
    pub fn check_plugin_isolation(&self) -> Result<(), String> {
        match self.plugins_in_process.iter().find(|id| self.plugins_out_of_process.contains(id)) {
            Some(id) => Err(format!("plugin {id:?} is named in both --plugins-in-process and --plugins-out-of-process")),
            None => Ok(()),
        }
    }

    pub fn plugin_dir(&self) -> PathBuf {
        self.plugin_dir.clone().unwrap_or_else(|| self.data_dir.join("plugins"))
    }

    /// Defaults as `settle serve` has them, from the flags' own defaults.
    pub fn defaults() -> Settings {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            settings: Settings,
        }
        <Only as clap::Parser>::parse_from(["settle"]).settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_checked_at_start_up() {
        assert_eq!(parse_origin("https://App.Example.com/"), Ok("https://app.example.com".to_owned()));
        assert_eq!(parse_origin("http://localhost:3000"), Ok("http://localhost:3000".to_owned()));
        assert_eq!(parse_origin("http://[::1]:8080"), Ok("http://[::1]:8080".to_owned()));
        for refused in ["*", "app.example.com", "https://app.example.com/path", "ftp://host", "https://", "https://a b"] {
            assert!(parse_origin(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn cors_origins_come_as_a_comma_separated_list() {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            settings: Settings,
        }
        let parse = |args: &[&str]| <Only as clap::Parser>::try_parse_from(args).map(|only| only.settings);
        let settings = parse(&["settle", "--cors-allowed-origins", "https://a.example.com,http://localhost:3000/"]).unwrap();
        assert_eq!(settings.cors_allowed_origins, ["https://a.example.com", "http://localhost:3000"]);
        assert!(Settings::defaults().cors_allowed_origins.is_empty());
        assert!(parse(&["settle", "--cors-allowed-origins", "https://a.example.com,*"]).is_err());
        assert!(parse(&["settle", "--persisted-queries-max", "0"]).is_err());
    }

    #[test]
    fn plugins_are_placed_by_id_lists_and_an_id_in_both_is_refused() {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            settings: Settings,
        }
        let parse = |args: &[&str]| <Only as clap::Parser>::try_parse_from(args).map(|only| only.settings).unwrap();
        let settings = parse(&["settle", "--plugins-out-of-process", "card-sim,manual", "--plugins-in-process", "acme"]);
        assert_eq!(settings.plugins_out_of_process, ["card-sim", "manual"]);
        assert_eq!(settings.plugins_in_process, ["acme"]);
        assert_eq!(settings.check_plugin_isolation(), Ok(()));
        let both = parse(&["settle", "--plugins-out-of-process", "card-sim", "--plugins-in-process", "card-sim"]);
        assert!(both.check_plugin_isolation().unwrap_err().contains("card-sim"));
        let defaults = Settings::defaults();
        assert!(defaults.plugins_in_process.is_empty() && defaults.plugins_out_of_process.is_empty());
    }
}
