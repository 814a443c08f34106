//! Payment methods of a tenant (ADMIN): name, type, the plugin that handles it, and that
//! plugin's configuration, stored as JSON text. The configuration is validated by the plugin
//! before it reaches the store; secrets in it are never returned by queries.

use super::audit::{AuditEntry, Mutation};
use super::directory::read_owned;
use super::rows::{PaymentMethodRow, key_of, new_key, record};
use super::{Store, Vars};
use crate::error::{AppError, AppResult};

/// A payment method's fields, already checked against its plugin.
#[derive(Debug, Clone)]
pub struct MethodFields {
    pub name: String,
    pub kind: String,
    pub plugin: String,
    /// The plugin configuration as JSON text.
    pub config: String,
}

impl Store {
    pub async fn create_payment_method(&self, mutation: &Mutation<'_>, fields: MethodFields) -> AppResult<String> {
        let fields = &fields;
        self.mutate(mutation, |tx| async move {
            let key = new_key();
            tx.query(
                "CREATE $id SET tenant = $tenant, name = $name, type = $type, plugin = $plugin, config = $config,
                    archived = false, created_at = time::now()",
                Vars::new()
                    .set("id", record("payment_method", &key))
                    .set("tenant", mutation.tenant.as_str().to_owned())
                    .set("name", fields.name.clone())
                    .set("type", fields.kind.clone())
                    .set("plugin", fields.plugin.clone())
                    .set("config", fields.config.clone()),
            )
            .await?;
            let entry = AuditEntry {
                action: "payment_method.create".into(),
                records: vec![format!("payment_method:{key}")],
                // The configuration may hold secrets: the audit trail records only that it changed.
                after: Some(serde_json::json!({"name": fields.name, "type": fields.kind, "plugin": fields.plugin})),
                ..AuditEntry::default()
            };
            Ok((key, entry))
        })
        .await
    }

    /// Renames, reconfigures, archives or restores a method; `None` keeps a field as it is.
    pub async fn change_payment_method(
        &self,
        mutation: &Mutation<'_>,
        key: &str,
        name: Option<String>,
        config: Option<String>,
        archived: Option<bool>,
    ) -> AppResult<String> {
        let (name, config) = (&name, &config);
        self.mutate(mutation, |tx| async move {
            let before: PaymentMethodRow = read_owned(Some(&tx), self, mutation.tenant, "payment_method", key)
                .await?
                .ok_or_else(|| AppError::not_found("payment method"))?;
            tx.query(
                "UPDATE $id SET name = $name ?? name, config = $config ?? config, archived = $archived ?? archived",
                Vars::new()
                    .set("id", before.id.clone())
                    .set("name", name.clone())
                    .set("config", config.clone())
                    .set("archived", archived),
            )
            .await?;
            let action = match (archived, config.is_some()) {
                (Some(true), _) => "payment_method.archive",
                (Some(false), _) => "payment_method.restore",
                (None, true) => "payment_method.configure",
                (None, false) => "payment_method.rename",
            };
            let entry = AuditEntry {
                action: action.into(),
                records: vec![format!("payment_method:{key}")],
                before: Some(serde_json::json!({"name": before.name, "archived": before.archived})),
                after: Some(serde_json::json!({
                    "name": name.clone().unwrap_or(before.name.clone()),
                    "archived": archived.unwrap_or(before.archived),
                    "configChanged": config.is_some(),
                })),
                reason: None,
                ..AuditEntry::default()
            };
            Ok((key_of(&before.id), entry))
        })
        .await
    }
}
