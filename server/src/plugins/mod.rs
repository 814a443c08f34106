//! Payment-method plugins: which are there, and calling them safely.
//!
//! Two kinds sit behind one calling path. Built-in plugins (manual and card-sim, linked into the
//! binary so a fresh install can take payments) are plain trait objects. Library plugins are
//! shared libraries loaded from the configured plugin directory only, spoken to through the
//! settle-plugin C ABI (see [`library`]); a library whose manifest names the id of a built-in
//! replaces it, so a practice can update a shipped plugin without rebuilding Settle.
//!
//! Every call runs on a blocking thread, under a concurrency limit and a timeout, never inside a
//! database transaction. A panic, a hang or an answer that is not the promised JSON becomes an
//! error for that one request and a fault on the plugin; after repeated faults the plugin is
//! marked unhealthy and refused for a cool-down, then tried again. Nothing a plugin does can take
//! the server down: panics are caught on both sides of the boundary.

pub mod check;
pub mod library;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use settle_plugin::abi::{Method, dispatch};
use settle_plugin::{ChargeRequest, Manifest, Outcome, PaymentMethodPlugin, PluginError, RefundRequest, StatusRequest};

/// What the API shows of a plugin: its capabilities and the method types a plugin may handle,
/// as the SDK defines them.
pub use settle_plugin::{Capability, METHOD_TYPES};
use tokio::sync::Semaphore;

use self::library::{Entry, PluginLibrary};

/// Consecutive faults after which a plugin is marked unhealthy.
pub const FAULTS_BEFORE_UNHEALTHY: u32 = 3;
/// How long an unhealthy plugin is refused before it is tried again.
pub const UNHEALTHY_COOL_DOWN: Duration = Duration::from_secs(30);

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
        matches!(self, CallError::Panic(_) | CallError::Malformed(_) | CallError::Timeout)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Plugin(error) => write!(f, "{}: {}", error.code, error.message),
            CallError::Panic(message) => write!(f, "the plugin panicked: {message}"),
            CallError::Malformed(message) => write!(f, "{message}"),
            CallError::Timeout => write!(f, "the plugin did not answer in time"),
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
    fn accepting(&self) -> bool {
        self.healthy() || self.last_fault_at.is_none_or(|at| at.elapsed() >= UNHEALTHY_COOL_DOWN)
    }
}

pub struct Plugin {
    pub manifest: Manifest,
    pub source: Source,
    backend: Backend,
    health: Mutex<Health>,
}

impl Plugin {
    pub fn health(&self) -> Health {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
            _ => health.consecutive_faults = 0,
        }
    }

    /// Runs one call on the current (blocking) thread. Built-ins go through the SDK's own
    /// dispatcher, so they answer (and fail) exactly as a loaded library would.
    fn invoke(&self, entry: Entry, input: &[u8]) -> Result<serde_json::Value, CallError> {
        match &self.backend {
            Backend::Library(library) => library.call(entry, input),
            Backend::BuiltIn(plugin) => {
                let method = match entry {
                    Entry::Manifest => Method::Manifest,
                    Entry::ValidateConfig => Method::ValidateConfig,
                    Entry::Charge => Method::Charge,
                    Entry::Refund => Method::Refund,
                    Entry::Status => Method::Status,
                };
                let (code, bytes) = dispatch(|| &**plugin, method, input);
                library::decode_answer(code, &bytes)
            }
        }
    }
}

/// The installed plugins and the rules for calling them.
pub struct PluginHost {
    dir: PathBuf,
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
    permits: Arc<Semaphore>,
    call_timeout: Duration,
}

/// How the host calls plugins.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// The only directory libraries are loaded from.
    pub dir: PathBuf,
    pub call_timeout: Duration,
    /// Plugin calls running at once, across all plugins.
    pub concurrency_max: usize,
}

impl PluginHost {
    /// A host with the built-in plugins, then every library in the plugin directory.
    pub fn start(settings: &HostSettings, built_ins: Vec<Arc<dyn PaymentMethodPlugin>>) -> PluginHost {
        let host = PluginHost {
            dir: settings.dir.clone(),
            plugins: RwLock::new(BTreeMap::new()),
            permits: Arc::new(Semaphore::new(settings.concurrency_max.max(1))),
            call_timeout: settings.call_timeout,
        };
        for plugin in built_ins {
            let manifest = plugin.manifest();
            host.register(Plugin {
                manifest,
                source: Source::BuiltIn,
                backend: Backend::BuiltIn(plugin),
                health: Mutex::new(Health::default()),
            });
        }
        for file in host.library_files() {
            match host.load_library(&file) {
                Ok(manifest) => tracing::info!(file = %file, plugin = %manifest.id, version = %manifest.version, "plugin loaded"),
                Err(reason) => tracing::warn!(file = %file, %reason, "plugin refused"),
            }
        }
        host
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
    pub fn load_library(&self, file: &str) -> Result<Manifest, String> {
        let path = self.path_in_dir(file)?;
        let library = PluginLibrary::load(&path)?;
        let manifest_value = library.call(Entry::Manifest, b"").map_err(|e| format!("its manifest call failed: {e}"))?;
        let manifest: Manifest =
            serde_json::from_value(manifest_value).map_err(|e| format!("its manifest is not valid: {e}"))?;
        check_manifest(&manifest)?;
        self.register(Plugin {
            manifest: manifest.clone(),
            source: Source::Library(file.to_owned()),
            backend: Backend::Library(Arc::new(library)),
            health: Mutex::new(Health::default()),
        });
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
        if !plugin.health().accepting() {
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

/// A manifest Settle can work with: the SDK's own checks, in one message.
pub fn check_manifest(manifest: &Manifest) -> Result<(), String> {
    let problems = manifest.problems();
    if problems.is_empty() { Ok(()) } else { Err(format!("its manifest is not usable: {}", problems.join("; "))) }
}
