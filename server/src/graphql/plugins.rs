//! Plugins and payment methods (ADMIN): what is installed, how healthy it is, and the methods
//! bound to plugins with configurations the plugins validate. Secrets are never returned.

use async_graphql::{Context, ID, InputObject, Json, Object, Result};
use serde::Serialize;

use super::context::{caller, mutation, state};
use super::inputs::{NAME_MAX_CHARS, required_text};
use super::payments::PaymentMethod;
use crate::auth::Role;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::plugins::{CallError, Plugin, Source};
use crate::store::audit::AuditEntry;
use crate::store::methods::MethodFields;

/// An installed payment-method plugin and its health.
pub struct PluginInfo(pub std::sync::Arc<Plugin>);

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
    /// charge, refund, status.
    async fn capabilities(&self) -> Vec<String> {
        self.0
            .manifest
            .capabilities
            .iter()
            .map(|c| serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
            .collect()
    }
    /// ISO 4217 codes; empty means any.
    async fn currencies(&self) -> &[String] {
        &self.0.manifest.currencies
    }
    async fn method_types(&self) -> &[String] {
        &self.0.manifest.method_types
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
    /// False after repeated faults (panics, hangs, malformed answers); tried again after a
    /// cool-down.
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

/// A new payment method bound to a plugin.
#[derive(InputObject, Serialize)]
pub struct PaymentMethodInput {
    pub name: String,
    /// CARD, EFTPOS, CASH, DIRECT_DEPOSIT, CHEQUE or OTHER; the plugin must handle it.
    #[graphql(name = "type")]
    pub kind: String,
    /// The plugin's id, e.g. "manual" or "card-sim".
    pub plugin: String,
    /// The plugin's configuration, checked by the plugin.
    pub config: Option<Json<serde_json::Value>>,
}

/// Changes to a payment method; fields left out stay as they are. Secret configuration fields
/// left out of `config` keep their stored values.
#[derive(InputObject, Serialize)]
pub struct PaymentMethodChange {
    pub name: Option<String>,
    pub config: Option<Json<serde_json::Value>>,
}

/// Validates `config` with the plugin; maps the plugin's refusal to INVALID_CONFIG.
async fn validated_config(ctx: &Context<'_>, plugin: &str, config: serde_json::Value) -> AppResult<String> {
    match state(ctx).charging.host().validate_config(plugin, &config).await {
        Ok(()) => Ok(config.to_string()),
        Err(CallError::Plugin(error)) => Err(AppError::new(ErrorCode::InvalidConfig, error.message)),
        Err(CallError::NotFound(id)) => Err(AppError::new(ErrorCode::PluginUnavailable, format!("the plugin '{id}' is not installed"))),
        Err(other) => Err(AppError::new(ErrorCode::PluginUnavailable, other.to_string())),
    }
}

async fn load_method(ctx: &Context<'_>, key: &str) -> AppResult<PaymentMethod> {
    let request = caller(ctx, Role::Viewer)?;
    let row = state(ctx)
        .store
        .payment_method(&request.principal.tenant, key)
        .await?
        .ok_or_else(|| AppError::not_found("payment method"))?;
    Ok(PaymentMethod(row))
}

#[derive(Default)]
pub struct PluginMutation;

#[Object]
impl PluginMutation {
    /// Loads a library placed in the plugin directory by the server's operator (ADMIN). Only a
    /// plain file name inside that directory is accepted.
    async fn install_plugin(&self, ctx: &Context<'_>, file: String) -> Result<PluginInfo> {
        let m = mutation(ctx, Role::Admin, "installPlugin", None, &file).await?;
        let host = state(ctx).charging.host();
        let manifest = host.load_library(file.trim()).map_err(|reason| {
            AppError::new(ErrorCode::InvalidPlugin, format!("{} was not installed: {reason}", file.trim()))
        })?;
        tracing::info!(actor = m.actor, tenant = %m.tenant, plugin = %manifest.id, file = %file, "plugin installed");
        let entry = AuditEntry {
            action: "plugin.install".into(),
            records: vec![format!("plugin:{}", manifest.id)],
            after: Some(serde_json::json!({"file": file.trim(), "version": manifest.version})),
            ..AuditEntry::default()
        };
        state(ctx).store.record_event(&m, entry).await?;
        let plugin = host.plugin(&manifest.id).ok_or_else(|| AppError::internal("installed plugin vanished"))?;
        Ok(PluginInfo(plugin))
    }

    /// Adds a payment method bound to a plugin, with a configuration the plugin accepts (ADMIN).
    async fn create_payment_method(
        &self,
        ctx: &Context<'_>,
        input: PaymentMethodInput,
        idempotency_key: Option<String>,
    ) -> Result<PaymentMethod> {
        let m = mutation(ctx, Role::Admin, "createPaymentMethod", idempotency_key, &input).await?;
        let name = required_text("name", &input.name, NAME_MAX_CHARS)?;
        let kind = input.kind.trim().to_uppercase();
        let plugin = state(ctx).charging.host().plugin(input.plugin.trim()).ok_or_else(|| {
            AppError::new(ErrorCode::PluginUnavailable, format!("the plugin '{}' is not installed", input.plugin.trim()))
        })?;
        if !plugin.manifest.method_types.contains(&kind) {
            return Err(AppError::invalid(format!(
                "the plugin '{}' handles {}, not {kind:?}",
                plugin.manifest.id,
                plugin.manifest.method_types.join(", ")
            ))
            .into());
        }
        let config = validated_config(ctx, &plugin.manifest.id, input.config.map_or(serde_json::json!({}), |c| c.0)).await?;
        let fields = MethodFields { name, kind, plugin: plugin.manifest.id.clone(), config };
        let key = state(ctx).store.create_payment_method(&m, fields).await?;
        Ok(load_method(ctx, &key).await?)
    }

    /// Renames or reconfigures a payment method (ADMIN).
    async fn update_payment_method(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: PaymentMethodChange,
        idempotency_key: Option<String>,
    ) -> Result<PaymentMethod> {
        let m = mutation(ctx, Role::Admin, "updatePaymentMethod", idempotency_key, &(&id.0, &input)).await?;
        let current = load_method(ctx, &id).await?.0;
        let name = match &input.name {
            Some(name) => Some(required_text("name", name, NAME_MAX_CHARS)?),
            None => None,
        };
        let config = match input.config {
            None => None,
            Some(Json(mut config)) => {
                // Secrets are write-only: one left out keeps its stored value.
                let stored: serde_json::Value =
                    current.config.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
                if let (Some(plugin), Some(object)) = (state(ctx).charging.host().plugin(&current.plugin), config.as_object_mut()) {
                    for secret in plugin.manifest.secret_fields() {
                        if !object.contains_key(&secret) {
                            if let Some(value) = stored.get(&secret) {
                                object.insert(secret, value.clone());
                            }
                        }
                    }
                }
                Some(validated_config(ctx, &current.plugin, config).await?)
            }
        };
        let key = state(ctx).store.change_payment_method(&m, &id, name, config, None).await?;
        Ok(load_method(ctx, &key).await?)
    }

    /// Archives a payment method: it takes no new payments (P1) (ADMIN).
    async fn archive_payment_method(&self, ctx: &Context<'_>, id: ID, idempotency_key: Option<String>) -> Result<PaymentMethod> {
        let m = mutation(ctx, Role::Admin, "archivePaymentMethod", idempotency_key, &id.0).await?;
        let key = state(ctx).store.change_payment_method(&m, &id, None, None, Some(true)).await?;
        Ok(load_method(ctx, &key).await?)
    }

    /// Restores an archived payment method (ADMIN).
    async fn restore_payment_method(&self, ctx: &Context<'_>, id: ID, idempotency_key: Option<String>) -> Result<PaymentMethod> {
        let m = mutation(ctx, Role::Admin, "restorePaymentMethod", idempotency_key, &id.0).await?;
        let key = state(ctx).store.change_payment_method(&m, &id, None, None, Some(false)).await?;
        Ok(load_method(ctx, &key).await?)
    }
}

/// A method's configuration with its plugin's secret fields removed, and the names of those
/// that are set.
pub fn public_config(ctx: &Context<'_>, plugin: &str, config: Option<&str>) -> (serde_json::Value, Vec<String>) {
    let mut value: serde_json::Value = config.and_then(|c| serde_json::from_str(c).ok()).unwrap_or_else(|| serde_json::json!({}));
    let mut set = Vec::new();
    let secrets = state(ctx).charging.host().plugin(plugin).map(|p| p.manifest.secret_fields()).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        for secret in secrets {
            if object.remove(&secret).is_some() {
                set.push(secret);
            }
        }
    }
    (value, set)
}
