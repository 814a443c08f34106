//! Builds the whole application in one place, for `settle serve` and for the tests alike.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::Server;
use poem::listener::{Acceptor, Listener, TcpListener};

use settle_plugin::PaymentMethodPlugin;

use crate::auth::TokenKeys;
use crate::charging::Charging;
use crate::commands::Commands;
use crate::plugins::{HostSettings, Isolation, PluginHost};
use crate::config::{JwtAlgorithm, Settings};
use crate::graphql::context::AppState;
use crate::graphql::build_schema;
use crate::http::persisted::PersistedQueries;
use crate::http::{HttpState, RefusalAcceptor, routes};
use crate::metrics::Metrics;
use crate::store::Store;

/// A built application: the database is open and the port is bound.
pub struct Application {
    address: SocketAddr,
    acceptor: RefusalAcceptor<poem::listener::TcpAcceptor>,
    state: Arc<HttpState>,
    /// Tells the reconciler to stop, and its task, awaited before the database closes.
    reconciler: (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>),
    /// Whether this start created the token signing key (a first start).
    pub created_signing_key: bool,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let (keys, created_signing_key) = load_keys(&settings)?;
        let metrics = Metrics::new();
        let store = Store::open(&settings.store_settings(), metrics.clone()).await?;
        settings.check_plugin_isolation().map_err(|e| anyhow::anyhow!(e))?;
        let host = Arc::new(PluginHost::start(&host_settings(&settings)?, built_in_plugins(), Some(metrics.clone())));
        let charging = Charging::new(host);
        let commands = Commands::new(store.clone(), charging.clone());
        // Settles charges and refunds left unknown by a timeout or a crash: now, then periodically.
        let grace = Duration::from_millis(settings.limits.plugin_call_timeout_ms) + Duration::from_secs(1);
        let (stop_reconciler, stop) = tokio::sync::watch::channel(false);
        let reconciler = commands.clone().spawn_reconciler(Duration::from_millis(settings.reconcile_interval_ms.max(100)), grace, stop);
        let schema = build_schema(
            Some(AppState {
                store: store.clone(),
                commands,
                charging,
                events: store.events().clone(),
                limits: settings.limits.clone(),
            }),
            &settings.limits,
        );
        let tcp = TcpListener::bind(settings.listen).into_acceptor().await?;
        // hyper's own refusals (a URI or headers too long, a request line it cannot parse) get the
        // JSON error shape like every other refusal.
        let acceptor = RefusalAcceptor::new(tcp, metrics.clone());
        let persisted_queries_max = usize::try_from(settings.limits.persisted_queries_max)
            .ok()
            .and_then(std::num::NonZeroUsize::new)
            .ok_or_else(|| anyhow::anyhow!("--persisted-queries-max must be at least 1"))?;
        let live = crate::http::live::Live::new(&settings.limits, &metrics);
        let state = Arc::new(HttpState {
            schema,
            keys,
            store,
            metrics,
            limits: settings.limits.clone(),
            persisted_queries: PersistedQueries::new(persisted_queries_max),
            cors_allowed_origins: settings.cors_allowed_origins.clone(),
            live,
        });
        let address = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().copied())
            .ok_or_else(|| anyhow::anyhow!("the listener has no socket address"))?;
        Ok(Application { address, acceptor, state, reconciler: (stop_reconciler, reconciler), created_signing_key })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.state.keys
    }

    /// Serves until `stop` completes, then finishes requests in flight (up to 10 seconds), lets
    /// the reconciler finish its run, and closes the database.
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let store = self.state.store.clone();
        // WebSocket connections never finish by themselves: told to close when the server stops,
        // so that the shutdown does not wait for them.
        let state = self.state.clone();
        let stop = async move {
            stop.await;
            state.live.stop();
        };
        let served = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(routes(self.state), stop, Some(Duration::from_secs(10)))
            .await;
        let (stop_reconciler, reconciler) = self.reconciler;
        let _ = stop_reconciler.send(true);
        if let Err(error) = reconciler.await {
            tracing::warn!(%error, "the reconciler stopped abnormally");
        }
        store.close().await;
        served
    }
}

/// The token keys: an RS256/ES256 public key if configured, else the HS256 secret (created in the
/// data directory on first start). Returns whether a new secret was created.
fn load_keys(settings: &Settings) -> anyhow::Result<(TokenKeys, bool)> {
    match settings.jwt_algorithm {
        JwtAlgorithm::Hs256 => {
            let path = secret_path(settings);
            let existed = path.exists();
            Ok((TokenKeys::load_or_create_secret(&path)?, !existed))
        }
        algorithm @ (JwtAlgorithm::Rs256 | JwtAlgorithm::Es256) => {
            let path = settings
                .jwt_public_key_file
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("--jwt-public-key-file is required with {algorithm:?}"))?;
            let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let algorithm = match algorithm {
                JwtAlgorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
                _ => jsonwebtoken::Algorithm::ES256,
            };
            Ok((TokenKeys::public_key_pem(algorithm, &pem)?, false))
        }
    }
}

/// The plugins linked into the binary, so a fresh install can take payments; libraries in the
/// plugin directory with the same id replace them.
pub fn built_in_plugins() -> Vec<Arc<dyn PaymentMethodPlugin>> {
    vec![
        Arc::new(settle_plugin_manual_core::ManualPlugin::default()),
        Arc::new(settle_plugin_card_sim_core::CardSimPlugin::from_env()),
    ]
}

/// How the plugin host runs, from the settings: the one place the plugin flags become
/// [`HostSettings`].
pub fn host_settings(settings: &Settings) -> anyhow::Result<HostSettings> {
    let dir = settings.plugin_dir();
    if let Err(error) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), %error, "cannot create the plugin directory");
    }
    let program = match &settings.plugin_host_program {
        Some(program) => program.clone(),
        None => std::env::current_exe().map_err(|e| anyhow::anyhow!("cannot find the settle executable for plugin processes: {e}"))?,
    };
    Ok(HostSettings {
        dir,
        call_timeout: Duration::from_millis(settings.limits.plugin_call_timeout_ms.max(1)),
        concurrency_max: settings.limits.plugin_concurrency_max,
        unhealthy_cool_down: Duration::from_millis(settings.plugin_unhealthy_cool_down_ms),
        isolation: Isolation {
            in_process: settings.plugins_in_process.clone(),
            out_of_process: settings.plugins_out_of_process.clone(),
            program,
            memory_limit_mib: settings.plugin_memory_limit_mib,
            hang_limit: Duration::from_millis(settings.plugin_hang_limit_ms),
            calls_max: usize::try_from(settings.plugin_process_calls_max).unwrap_or(usize::MAX),
        },
    })
}

/// Where the HS256 secret lives.
pub fn secret_path(settings: &Settings) -> std::path::PathBuf {
    settings.jwt_secret_file.clone().unwrap_or_else(|| settings.data_dir.join("signing.key"))
}
