//! The practice's own records: settings, clients and contacts, locations, tax rates, and the
//! audit event of a plugin installed. Most of these changes have no rule beyond the input checks
//! the API makes, so their command is the store's write in one transaction with its audit event
//! and idempotency key; the ones with a rule decide it here, through the ledger.

use rust_decimal::Decimal;

use super::Commands;
use crate::error::{AppError, AppResult, ErrorCode};
use crate::ledger::{invoice, tax_rate};
use crate::store::audit::{AuditEntry, Mutation};
use crate::store::directory::{LocationFields, PartyFields, PartyKind};
use crate::store::locks::tenant_lock;
use crate::store::tenants::SettingsChange;

impl Commands {
    /// updateSettings (ADMIN). The next invoice number may be lowered only while no invoice
    /// carries that number or a higher one, so numbers stay unique.
    pub async fn update_settings(&self, mutation: &Mutation<'_>, change: SettingsChange) -> AppResult<()> {
        let store = &self.store;
        store.tenant(mutation.tenant).await?;
        // Finalizes take numbers under the same turn.
        let _turn = store.locks().lock(&tenant_lock(mutation.tenant)).await;
        let change = &change;
        let result = store
            .mutate(mutation, |tx| async move {
                if let Some(next) = change.next_invoice_number {
                    invoice::check_next_number(store.load_invoice_number_from(&tx, mutation.tenant, next).await?)?;
                }
                let (before, after) = store.write_settings(&tx, mutation.tenant, change).await?;
                let entry = AuditEntry {
                    action: "settings.update".into(),
                    records: vec![format!("tenant:{}", mutation.tenant)],
                    before: Some(before),
                    after: Some(after),
                    ..AuditEntry::default()
                };
                Ok(((), entry))
            })
            .await;
        store.forget_tenant(mutation.tenant);
        result
    }

    pub async fn create_party(&self, mutation: &Mutation<'_>, kind: PartyKind, fields: PartyFields) -> AppResult<String> {
        self.store.create_party(mutation, kind, fields).await
    }

    pub async fn update_party(&self, mutation: &Mutation<'_>, kind: PartyKind, key: &str, fields: PartyFields) -> AppResult<String> {
        self.store.update_party(mutation, kind, key, fields).await
    }

    pub async fn create_location(&self, mutation: &Mutation<'_>, fields: LocationFields) -> AppResult<String> {
        self.store.create_location(mutation, fields).await
    }

    pub async fn update_location(&self, mutation: &Mutation<'_>, key: &str, fields: LocationFields) -> AppResult<String> {
        self.store.update_location(mutation, key, fields).await
    }

    pub async fn create_tax_rate(&self, mutation: &Mutation<'_>, name: String, percent: Decimal) -> AppResult<String> {
        self.store.create_tax_rate(mutation, name, percent).await
    }

    /// Edits, archives or restores a custom tax rate; system rates refuse every change. Invoices
    /// keep the name and percentage their lines were saved with.
    pub async fn change_tax_rate(
        &self,
        mutation: &Mutation<'_>,
        key: &str,
        name: Option<String>,
        percent: Option<Decimal>,
        archived: Option<bool>,
    ) -> AppResult<String> {
        let rate = self.store.tax_rate(mutation.tenant, key).await?.ok_or_else(|| AppError::not_found("tax rate"))?;
        tax_rate::check_rate_change(rate.system)?;
        self.store.change_tax_rate(mutation, key, name, percent, archived).await
    }

    /// installPlugin (ADMIN): loads a library the server's operator placed in the plugin
    /// directory (a plain file name inside it) and records that in the audit trail; returns the
    /// installed plugin's id.
    pub async fn install_plugin(&self, mutation: &Mutation<'_>, file: &str) -> AppResult<String> {
        // Loading starts the library's process and waits for its manifest: a blocking wait, kept
        // off the async threads (and off the deep stack of a resolver).
        let (charging, name) = (self.charging.clone(), file.to_owned());
        let manifest = tokio::task::spawn_blocking(move || charging.host().load_library(&name))
            .await
            .map_err(AppError::internal)?
            .map_err(|reason| AppError::new(ErrorCode::InvalidPlugin, format!("{file} was not installed: {reason}")))?;
        tracing::info!(actor = mutation.actor, tenant = %mutation.tenant, plugin = %manifest.id, file, "plugin installed");
        let entry = AuditEntry {
            action: "plugin.install".into(),
            records: vec![format!("plugin:{}", manifest.id)],
            after: Some(serde_json::json!({"file": file, "version": manifest.version})),
            ..AuditEntry::default()
        };
        self.store.record_event(mutation, entry).await?;
        Ok(manifest.id)
    }
}
