//! Plugins (ADMIN): which payment-method plugins are installed and how healthy they are, and
//! installing a library from the plugin directory. Payment methods bound to them are in
//! methods.rs.

use async_graphql::{Context, Enum, Json, Object, Result};
use crate::plugins::Capability;

use super::context::{caller, mutation, state};
use super::errors::unknown_state;
use super::methods::PaymentMethodType;
use crate::auth::Role;
use crate::error::AppError;
use crate::plugins::{Plugin, Source};

/// An installed payment-method plugin and its health.
pub struct PluginInfo(pub std::sync::Arc<Plugin>);

/// An operation a plugin supports.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum PluginCapability {
    /// Takes payments.
    Charge,
    /// Gives money back.
    Refund,
    /// Answers what became of an earlier charge or refund, so unknown outcomes can be settled.
    Status,
}

impl From<Capability> for PluginCapability {
    fn from(capability: Capability) -> Self {
        match capability {
            Capability::Charge => PluginCapability::Charge,
            Capability::Refund => PluginCapability::Refund,
            Capability::Status => PluginCapability::Status,
        }
    }
}

#[Object(name = "Plugin")]
impl PluginInfo {
    async fn id(&self) -> &str {
        &self.0.manifest.id
    }
    async fn name(&self) -> &str {
        &self.0.manifest.name
    }
    async fn version(&self) -> &str {
        &self.0.manifest.version
    }
    async fn protocol_version(&self) -> u32 {
        self.0.manifest.protocol_version
    }
    async fn capabilities(&self) -> Vec<PluginCapability> {
        self.0.manifest.capabilities.iter().copied().map(PluginCapability::from).collect()
    }
    /// ISO 4217 codes; empty means any.
    async fn currencies(&self) -> &[String] {
        &self.0.manifest.currencies
    }
    /// The payment method types it serves.
    async fn method_types(&self) -> Result<Vec<PaymentMethodType>> {
        let found_in = format!("the manifest of plugin {}", self.0.manifest.id);
        let types = self.0.manifest.method_types.iter().map(|kind| {
            PaymentMethodType::parse(kind).ok_or_else(|| unknown_state(&found_in, "method type", kind))
        });
        Ok(types.collect::<Result<Vec<_>, _>>()?)
    }
    /// JSON Schema of the configuration; secret properties carry "secret": true.
    async fn config_schema(&self) -> Json<serde_json::Value> {
        Json(self.0.manifest.config_schema.clone())
    }
    /// "built-in", or the library's file name in the plugin directory.
    async fn source(&self) -> String {
        match &self.0.source {
            Source::BuiltIn => "built-in".to_owned(),
            Source::Library(file) => file.clone(),
        }
    }
    /// Whether it runs in a child process of its own (a crash there cannot reach the ledger),
    /// rather than inside the server.
    async fn out_of_process(&self) -> bool {
        self.0.out_of_process()
    }
    /// Times its process was started again after dying or being killed.
    async fn restarts(&self) -> u64 {
        self.0.restarts()
    }
    /// False after repeated faults (panics, hangs, crashes, malformed answers); tried again after
    /// a cool-down.
    async fn healthy(&self) -> bool {
        self.0.health().healthy()
    }
    async fn calls(&self) -> u64 {
        self.0.health().calls
    }
    async fn faults(&self) -> u64 {
        self.0.health().faults
    }
    async fn last_fault(&self) -> Option<String> {
        self.0.health().last_fault
    }
}

#[derive(Default)]
pub struct PluginQuery;

#[Object]
impl PluginQuery {
    /// Installed plugins with manifest and health (ADMIN).
    async fn plugins(&self, ctx: &Context<'_>) -> Result<Vec<PluginInfo>> {
        caller(ctx, Role::Admin)?;
        Ok(state(ctx).charging.host().plugins().into_iter().map(PluginInfo).collect())
    }
}

#[derive(Default)]
pub struct PluginMutation;

#[Object]
impl PluginMutation {
    /// Loads a library placed in the plugin directory by the server's operator (ADMIN). Only a
    /// plain file name inside that directory is accepted.
    async fn install_plugin(&self, ctx: &Context<'_>, file: String) -> Result<PluginInfo> {
        let m = mutation(ctx, Role::Admin, "installPlugin", None, &file).await?;
        let id = state(ctx).commands.install_plugin(&m, file.trim()).await?;
        let plugin = state(ctx).charging.host().plugin(&id).ok_or_else(|| AppError::internal("installed plugin vanished"))?;
        Ok(PluginInfo(plugin))
    }
}
