//! Payment-method plugins: which are there, and calling them safely.
//!
//! Three backends sit behind one calling path, [`Plugin::invoke`]. Built-in plugins (manual and
//! card-sim, linked into the binary so a fresh install can take payments) are plain trait objects
//! called in the server's process: they are Settle's own code, trusted like the rest of it.
//! Library plugins are shared libraries loaded from the configured plugin directory only, spoken
//! to through the settle-plugin C ABI (see [`library`]); by default each runs in a child process
//! of its own (`settle plugin-host`, see [`process`] and [`child`]), so that an abort, a segfault,
//! a runaway allocation or a spin in a plugin kills at most that child. An operator can move any
//! plugin either way by id ([`Isolation`]). A library whose manifest names the id of a built-in
//! replaces it, so a practice can update a shipped plugin without rebuilding Settle.
//!
//! Every call runs on a blocking thread, under a concurrency limit and a timeout, never inside a
//! database transaction. A panic, a hang, a dead child or an answer that is not the promised JSON
//! becomes an error for that one request and a fault on the plugin; after repeated faults the
//! plugin is marked unhealthy and refused for a cool-down, then tried again. Nothing a plugin does
//! can take the server down: panics are caught on both sides of the boundary, and what cannot be
//! caught happens in another process.

pub mod check;
pub mod child;
pub mod library;
pub mod process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use settle_plugin::abi::dispatch;
use settle_plugin::{ChargeRequest, Manifest, Outcome, PaymentMethodPlugin, PluginError, RefundRequest, StatusRequest};

/// What the API shows of a plugin: its capabilities and the method types a plugin may handle,
/// as the SDK defines them.
pub use settle_plugin::{Capability, METHOD_TYPES};
use tokio::sync::Semaphore;

use self::library::{Entry, PluginLibrary};
use self::process::{Launch, ProcessPlugin};
use crate::metrics::Metrics;

/// Consecutive faults after which a plugin is marked unhealthy.
pub const FAULTS_BEFORE_UNHEALTHY: u32 = 3;

/// Why a plugin call did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The plugin answered with an error of its own (bad details or configuration, ...).
    Plugin(PluginError),
    /// The plugin panicked; the panic was caught.
    Panic(String),
    /// The plugin answered with something that is not the promised JSON.
    Malformed(String),
    /// The plugin did not answer in time; what it did is unknown.
    Timeout,
    /// The plugin's process died (or was killed) while serving the call; what it did is unknown.
    Crashed(String),
    /// The plugin's process is not running (restarting after a death, or it did not start); the
    /// call never reached the plugin.
    Unavailable(String),
    /// The plugin is marked unhealthy after repeated faults.
    Unhealthy,
    /// Every plugin call slot is taken.
    Busy,
    /// No plugin with this id is installed.
    NotFound(String),
}

impl CallError {
    /// Faults count against a plugin's health; its own errors and refusals do not.
    fn is_fault(&self) -> bool {
        matches!(self, CallError::Panic(_) | CallError::Malformed(_) | CallError::Timeout | CallError::Crashed(_))
    }

    /// Whether the plugin answered at all (its own error counts): refusals before the call
    /// (busy, unhealthy, restarting) say nothing about its health either way.
    fn answered(&self) -> bool {
        matches!(self, CallError::Plugin(_))
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Plugin(error) => write!(f, "{}: {}", error.code, error.message),
            CallError::Panic(message) => write!(f, "the plugin panicked: {message}"),
            CallError::Malformed(message) => write!(f, "{message}"),
            CallError::Timeout => write!(f, "the plugin did not answer in time"),
            CallError::Crashed(reason) => write!(f, "{reason}"),
            CallError::Unavailable(reason) => write!(f, "the plugin is not running: {reason}"),
            CallError::Unhealthy => write!(f, "the plugin is unhealthy after repeated faults"),
            CallError::Busy => write!(f, "every plugin call slot is busy"),
            CallError::NotFound(id) => write!(f, "no plugin '{id}' is installed"),
        }
    }
}

/// Where a plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    BuiltIn,
    /// A library in the plugin directory, by file name.
    Library(String),
}

enum Backend {
    BuiltIn(Arc<dyn PaymentMethodPlugin>),
    Library(Arc<PluginLibrary>),
    /// A built-in or a library served by a `settle plugin-host` child.
    Process(ProcessPlugin),
}

/// A plugin's health as operators see it.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub calls: u64,
    pub faults: u64,
    pub consecutive_faults: u32,
    pub last_fault: Option<String>,
    last_fault_at: Option<Instant>,
}

impl Health {
    pub fn healthy(&self) -> bool {
        self.consecutive_faults < FAULTS_BEFORE_UNHEALTHY
    }

    /// Unhealthy plugins are refused until the cool-down has passed, then tried again.
    fn accepting(&self, cool_down: Duration) -> bool {
        self.healthy() || self.last_fault_at.is_none_or(|at| at.elapsed() >= cool_down)
    }
}

pub struct Plugin {
    pub manifest: Manifest,
    pub source: Source,
    backend: Backend,
    health: Mutex<Health>,
    /// The `settle_plugin_healthy` series of this plugin.
    healthy_metric: Option<prometheus::IntGauge>,
}

impl Plugin {
    pub fn health(&self) -> Health {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the plugin runs in a child process of its own.
    pub fn out_of_process(&self) -> bool {
        matches!(self.backend, Backend::Process(_))
    }

    /// Times its child process was started again after dying (0 for one in the server).
    pub fn restarts(&self) -> u64 {
        match &self.backend {
            Backend::Process(process) => process.restarts(),
            _ => 0,
        }
    }

    fn record<T>(&self, outcome: &Result<T, CallError>) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        health.calls += 1;
        match outcome {
            Err(error) if error.is_fault() => {
                health.faults += 1;
                health.consecutive_faults += 1;
                health.last_fault = Some(error.to_string());
                health.last_fault_at = Some(Instant::now());
                tracing::warn!(plugin = %self.manifest.id, fault = %error, "plugin fault");
            }
            Ok(_) => health.consecutive_faults = 0,
            Err(error) if error.answered() => health.consecutive_faults = 0,
            Err(_) => {}
        }
        if let Some(gauge) = &self.healthy_metric {
            gauge.set(i64::from(health.healthy()));
        }
    }

    /// Runs one call on the current (blocking) thread. Built-ins go through the SDK's own
    /// dispatcher, so they answer (and fail) exactly as a loaded library would.
    fn invoke(&self, entry: Entry, input: &[u8]) -> Result<serde_json::Value, CallError> {
        match &self.backend {
            Backend::Library(library) => library.call(entry, input),
            Backend::BuiltIn(plugin) => {
                let (code, bytes) = dispatch(|| &**plugin, child::method(entry), input);
                library::decode_answer(code, &bytes)
            }
            Backend::Process(process) => process.invoke(entry, input),
        }
    }
}

/// The installed plugins and the rules for calling them.
pub struct PluginHost {
    dir: PathBuf,
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
    permits: Arc<Semaphore>,
    call_timeout: Duration,
    cool_down: Duration,
    isolation: Isolation,
    metrics: Option<Metrics>,
}

/// How the host calls plugins.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// The only directory libraries are loaded from.
    pub dir: PathBuf,
    pub call_timeout: Duration,
    /// Plugin calls running at once, across all plugins.
    pub concurrency_max: usize,
    /// How long an unhealthy plugin is refused before it is tried again.
    pub unhealthy_cool_down: Duration,
    pub isolation: Isolation,
}

/// Which plugins run in a child process, and the limits of those children.
#[derive(Debug, Clone)]
pub struct Isolation {
    /// Plugin ids forced into the server's process (a library is then loaded there).
    pub in_process: Vec<String>,
    /// Plugin ids forced into a child process (a built-in is then served by
    /// `settle plugin-host --built-in ID`).
    pub out_of_process: Vec<String>,
    /// The `settle` binary that runs `plugin-host`.
    pub program: PathBuf,
    /// A child's address-space limit in MiB (RLIMIT_AS); 0 for none.
    pub memory_limit_mib: u64,
    /// How long a child may leave a call unanswered before it is killed (at least the call
    /// timeout).
    pub hang_limit: Duration,
    /// Calls in flight at once in one child.
    pub calls_max: usize,
}

impl PluginHost {
    /// A host with the built-in plugins, then every library in the plugin directory.
    /// `metrics`, when given, gets each plugin's health and restarts.
    pub fn start(settings: &HostSettings, built_ins: Vec<Arc<dyn PaymentMethodPlugin>>, metrics: Option<Metrics>) -> PluginHost {
        let host = PluginHost {
            dir: settings.dir.clone(),
            plugins: RwLock::new(BTreeMap::new()),
            permits: Arc::new(Semaphore::new(settings.concurrency_max.max(1))),
            call_timeout: settings.call_timeout,
            cool_down: settings.unhealthy_cool_down,
            isolation: settings.isolation.clone(),
            metrics,
        };
        for plugin in built_ins {
            let manifest = plugin.manifest();
            let backend = if host.isolation.out_of_process.contains(&manifest.id) {
                let args = vec!["plugin-host".into(), "--built-in".into(), manifest.id.clone().into()];
                match ProcessPlugin::start(host.launch(&manifest.id, args)) {
                    Ok(process) => Backend::Process(process),
                    Err(reason) => {
                        // The shipped plugin still works where it always did.
                        tracing::error!(plugin = %manifest.id, %reason, "cannot run the built-in plugin out of process; it runs in the server");
                        Backend::BuiltIn(plugin)
                    }
                }
            } else {
                Backend::BuiltIn(plugin)
            };
            host.register(host.plugin_of(manifest, Source::BuiltIn, backend));
        }
        for file in host.library_files() {
            match host.load_library(&file) {
                Ok(manifest) => tracing::info!(file = %file, plugin = %manifest.id, version = %manifest.version, "plugin loaded"),
                Err(reason) => tracing::warn!(file = %file, %reason, "plugin refused"),
            }
        }
        host
    }

    /// How to start the child of plugin `id` with `args`.
    fn launch(&self, id: &str, args: Vec<std::ffi::OsString>) -> Launch {
        Launch {
            label: id.to_owned(),
            program: self.isolation.program.clone(),
            args,
            memory_limit_mib: self.isolation.memory_limit_mib,
            hang_limit: self.isolation.hang_limit.max(self.call_timeout),
            start_timeout: self.call_timeout.max(Duration::from_secs(5)),
            calls_max: self.isolation.calls_max,
        }
    }

    fn plugin_of(&self, manifest: Manifest, source: Source, backend: Backend) -> Plugin {
        if let (Backend::Process(process), Some(metrics)) = (&backend, &self.metrics) {
            process.count_restarts_in(metrics.plugin_restarts.with_label_values(&[manifest.id.as_str()]));
        }
        let healthy_metric = self.metrics.as_ref().map(|m| m.plugin_healthy.with_label_values(&[manifest.id.as_str()]));
        if let Some(gauge) = &healthy_metric {
            gauge.set(1);
        }
        Plugin { manifest, source, backend, health: Mutex::new(Health::default()), healthy_metric }
    }

    fn register(&self, plugin: Plugin) {
        let mut plugins = self.plugins.write().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = plugins.get(&plugin.manifest.id) {
            tracing::info!(plugin = %plugin.manifest.id, replaced = ?previous.source, by = ?plugin.source, "plugin replaced");
        }
        plugins.insert(plugin.manifest.id.clone(), Arc::new(plugin));
    }

    /// Library files in the plugin directory, in name order.
    fn library_files(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut files: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| is_library_name(name))
            .collect();
        files.sort();
        files
    }

    /// Loads and registers the library `file` from the plugin directory (ADMIN installPlugin).
    /// Refuses names that leave the directory, libraries with another ABI version or a missing
    /// symbol, and invalid manifests; a refused library changes nothing.
    ///
    /// The library is loaded in a child process first, so that not even its initialisers or its
    /// manifest run in the server; only a library whose id an operator forced in-process is then
    /// loaded into the server itself.
    pub fn load_library(&self, file: &str) -> Result<Manifest, String> {
        let path = self.path_in_dir(file)?;
        let process = ProcessPlugin::start(self.launch(file, vec!["plugin-host".into(), path.clone().into_os_string()]))?;
        let manifest = read_manifest(|| process.invoke(Entry::Manifest, b""))?;
        let backend = if self.isolation.in_process.contains(&manifest.id) {
            drop(process);
            let library = PluginLibrary::load(&path)?;
            let in_server = read_manifest(|| library.call(Entry::Manifest, b""))?;
            if in_server.id != manifest.id {
                return Err(format!("its manifest named {} in a plugin host and {} in the server", manifest.id, in_server.id));
            }
            Backend::Library(Arc::new(library))
        } else {
            Backend::Process(process)
        };
        self.register(self.plugin_of(manifest.clone(), Source::Library(file.to_owned()), backend));
        Ok(manifest)
    }

    /// `dir/file`, refusing anything that is not a plain library file name inside the directory
    /// (no separators, no "..", no symbolic link pointing elsewhere).
    fn path_in_dir(&self, file: &str) -> Result<PathBuf, String> {
        if !is_library_name(file) || file.contains(['/', '\\']) || file.starts_with('.') || file.contains("..") {
            return Err(format!("{file:?} is not a library file name such as libmy_plugin.so"));
        }
        let dir = self.dir.canonicalize().map_err(|e| format!("the plugin directory {} is not usable: {e}", self.dir.display()))?;
        let path = dir.join(file).canonicalize().map_err(|_| format!("{file} is not in the plugin directory"))?;
        if path.parent() != Some(dir.as_path()) {
            return Err(format!("{file} leads outside the plugin directory"));
        }
        Ok(path)
    }

    pub fn plugin(&self, id: &str) -> Option<Arc<Plugin>> {
        self.plugins.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.plugins.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Calls a plugin and decodes its answer into `O`; the call counts once towards the plugin's
    /// health, with its final result (an answer of the wrong shape is a fault).
    async fn call_typed<I: Serialize, O: DeserializeOwned>(&self, id: &str, entry: Entry, input: &I) -> Result<O, CallError> {
        let plugin = self.plugin(id).ok_or_else(|| CallError::NotFound(id.to_owned()))?;
        if !plugin.health().accepting(self.cool_down) {
            return Err(CallError::Unhealthy);
        }
        let bytes = serde_json::to_vec(input).map_err(|e| CallError::Malformed(e.to_string()))?;
        let answer = self.call(&plugin, entry, bytes).await;
        let outcome = answer.and_then(|value| {
            serde_json::from_value::<O>(value)
                .map_err(|e| CallError::Malformed(format!("the plugin's answer has the wrong shape: {e}")))
        });
        plugin.record(&outcome);
        outcome
    }

    /// Runs one call on a blocking thread under the concurrency limit and the timeout.
    async fn call(&self, plugin: &Arc<Plugin>, entry: Entry, input: Vec<u8>) -> Result<serde_json::Value, CallError> {
        let permit = tokio::time::timeout(self.call_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| CallError::Busy)?
            .map_err(|_| CallError::Busy)?;
        let worker = plugin.clone();
        // The permit travels with the call: a plugin that hangs keeps its slot until it returns,
        // so hung calls can never pile up beyond the concurrency limit.
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            worker.invoke(entry, &input)
        });
        match tokio::time::timeout(self.call_timeout, task).await {
            Err(_) => Err(CallError::Timeout),
            Ok(Err(join_error)) => Err(CallError::Panic(join_error.to_string())),
            Ok(Ok(answer)) => answer,
        }
    }

    pub async fn validate_config(&self, id: &str, config: &serde_json::Value) -> Result<(), CallError> {
        let _: serde_json::Value = self.call_typed(id, Entry::ValidateConfig, config).await?;
        Ok(())
    }

    pub async fn charge(&self, id: &str, request: &ChargeRequest) -> Result<Outcome, CallError> {
        self.call_typed(id, Entry::Charge, request).await
    }

    pub async fn refund(&self, id: &str, request: &RefundRequest) -> Result<Outcome, CallError> {
        self.call_typed(id, Entry::Refund, request).await
    }

    pub async fn status(&self, id: &str, request: &StatusRequest) -> Result<Outcome, CallError> {
        self.call_typed(id, Entry::Status, request).await
    }
}

fn is_library_name(name: &str) -> bool {
    [".so", ".dylib", ".dll"].iter().any(|ext| name.len() > ext.len() && name.ends_with(ext))
}

/// Asks for a manifest and checks it.
fn read_manifest(call: impl FnOnce() -> Result<serde_json::Value, CallError>) -> Result<Manifest, String> {
    let value = call().map_err(|e| format!("its manifest call failed: {e}"))?;
    let manifest: Manifest = serde_json::from_value(value).map_err(|e| format!("its manifest is not valid: {e}"))?;
    check_manifest(&manifest)?;
    Ok(manifest)
}

/// A manifest Settle can work with: the SDK's own checks, in one message.
pub fn check_manifest(manifest: &Manifest) -> Result<(), String> {
    let problems = manifest.problems();
    if problems.is_empty() { Ok(()) } else { Err(format!("its manifest is not usable: {}", problems.join("; "))) }
}
