//! Payment methods (ADMIN): a name, a type, the plugin that handles it and that plugin's
//! configuration, which the plugin checks before it is stored. Secrets in a configuration are
//! write-only: one left out of a change keeps its stored value.

use super::Commands;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::store::audit::Mutation;
use crate::store::methods::MethodFields;

impl Commands {
    /// createPaymentMethod: `kind` must be a type the plugin handles.
    pub async fn create_payment_method(
        &self,
        mutation: &Mutation<'_>,
        name: String,
        kind: String,
        plugin: &str,
        config: serde_json::Value,
    ) -> AppResult<String> {
        let installed = self
            .charging
            .host()
            .plugin(plugin)
            .ok_or_else(|| AppError::new(ErrorCode::PluginUnavailable, format!("the plugin '{plugin}' is not installed")))?;
        let manifest = &installed.manifest;
        if !manifest.method_types.contains(&kind) {
            return Err(AppError::invalid(format!("the plugin '{}' handles {}, not {kind:?}", manifest.id, manifest.method_types.join(", "))));
        }
        let config = self.charging.validate_config(&manifest.id, &config).await?;
        let fields = MethodFields { name, kind, plugin: manifest.id.clone(), config };
        self.store.create_payment_method(mutation, fields).await
    }

    /// updatePaymentMethod: renames it, or gives it a configuration its plugin accepts; `None`
    /// keeps a field.
    pub async fn update_payment_method(
        &self,
        mutation: &Mutation<'_>,
        key: &str,
        name: Option<String>,
        config: Option<serde_json::Value>,
    ) -> AppResult<String> {
        let current = self.store.payment_method(mutation.tenant, key).await?.ok_or_else(|| AppError::not_found("payment method"))?;
        let config = match config {
            None => None,
            Some(mut config) => {
                let stored: serde_json::Value = current.config.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
                if let (Some(plugin), Some(object)) = (self.charging.host().plugin(&current.plugin), config.as_object_mut()) {
                    for secret in plugin.manifest.secret_fields() {
                        if !object.contains_key(&secret)
                            && let Some(value) = stored.get(&secret)
                        {
                            object.insert(secret, value.clone());
                        }
                    }
                }
                Some(self.charging.validate_config(&current.plugin, &config).await?)
            }
        };
        self.store.change_payment_method(mutation, key, name, config, None).await
    }

    /// archivePaymentMethod (`true`, P1: it takes no new payments) and restorePaymentMethod.
    pub async fn archive_payment_method(&self, mutation: &Mutation<'_>, key: &str, archived: bool) -> AppResult<String> {
        self.store.change_payment_method(mutation, key, None, None, Some(archived)).await
    }
}
