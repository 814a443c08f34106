//! Prometheus metrics: requests, latencies, errors by code, transaction retries, database queries,
//! plugin health, live connections.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

/// The process's metrics; cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route and status class.
    pub http_requests: IntCounterVec,
    /// HTTP request latency in seconds, by route.
    pub http_latency: HistogramVec,
    /// GraphQL errors by `extensions.code`.
    pub errors: IntCounterVec,
    /// Transactions run again after a write conflict.
    pub transaction_retries: IntCounter,
    /// Transactions that still conflicted after every retry.
    pub transaction_conflicts_exhausted: IntCounter,
    /// Queries sent to the database (one per call, however many statements it holds): what a
    /// request costs the database, and how nested look-ups stay batched.
    pub db_queries: IntCounter,
    /// Transactions that committed a group of mutations written together (group commit), and
    /// the mutations they committed: their ratio is the mean size of a group.
    pub mutation_groups: IntCounter,
    pub grouped_mutations: IntCounter,
    /// Times a plugin's child process was started again after dying, by plugin id.
    pub plugin_restarts: IntCounterVec,
    /// 1 while a plugin is healthy, 0 after repeated faults, by plugin id.
    pub plugin_healthy: IntGaugeVec,
    /// WebSocket connections admitted (a valid `connection_init`) and still open.
    pub websocket_connections: IntGauge,
    /// WebSocket connections closed by the server, by close code (1001 stopping, 4401, 4403,
    /// 4408, 4429; docs/clients.md): refusals and timeouts an operator wants to see.
    pub websocket_closes: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("settle".into()), None).expect("valid registry prefix");
        let http_requests =
            IntCounterVec::new(Opts::new("http_requests_total", "HTTP requests"), &["route", "status"]).expect("valid metric");
        let http_latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(Opts::new("errors_total", "API errors by code"), &["code"]).expect("valid metric");
        let transaction_retries =
            IntCounter::new("transaction_retries_total", "transactions retried after a write conflict").expect("valid metric");
        let transaction_conflicts_exhausted = IntCounter::new(
            "transaction_conflicts_exhausted_total",
            "transactions that still conflicted after every retry",
        )
        .expect("valid metric");
        let db_queries = IntCounter::new("db_queries_total", "queries sent to the database").expect("valid metric");
        let mutation_groups =
            IntCounter::new("mutation_groups_total", "transactions that committed mutations written together").expect("valid metric");
        let grouped_mutations =
            IntCounter::new("grouped_mutations_total", "mutations committed in groups written together").expect("valid metric");
        let plugin_restarts = IntCounterVec::new(
            Opts::new("plugin_restarts_total", "plugin child processes started again after dying"),
            &["plugin"],
        )
        .expect("valid metric");
        let plugin_healthy =
            IntGaugeVec::new(Opts::new("plugin_healthy", "1 while a plugin is healthy, 0 after repeated faults"), &["plugin"])
                .expect("valid metric");
        let websocket_connections =
            IntGauge::new("websocket_connections", "WebSocket connections admitted and open").expect("valid metric");
        let websocket_closes =
            IntCounterVec::new(Opts::new("websocket_closes_total", "WebSocket connections closed by the server, by close code"), &["code"])
                .expect("valid metric");
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_latency.clone()),
            Box::new(errors.clone()),
            Box::new(transaction_retries.clone()),
            Box::new(transaction_conflicts_exhausted.clone()),
            Box::new(db_queries.clone()),
            Box::new(mutation_groups.clone()),
            Box::new(grouped_mutations.clone()),
            Box::new(plugin_restarts.clone()),
            Box::new(plugin_healthy.clone()),
            Box::new(websocket_connections.clone()),
            Box::new(websocket_closes.clone()),
        ] {
            registry.register(collector).expect("metric registered once");
        }
        Metrics {
            registry,
            http_requests,
            http_latency,
            errors,
            transaction_retries,
            transaction_conflicts_exhausted,
            db_queries,
            mutation_groups,
            grouped_mutations,
            plugin_restarts,
            plugin_healthy,
            websocket_connections,
            websocket_closes,
        }
    }

    /// The text exposition format served at /metrics.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("metrics are UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
