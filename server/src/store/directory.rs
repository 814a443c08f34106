//! Clients, contacts (bill-to parties), locations and tax rates of a tenant.

use rust_decimal::Decimal;

use super::audit::{AuditEntry, Mutation};
use super::rows::{LocationRow, PartyRow, TaxRateRow, key_of, new_key, record};
use super::{Store, TxRef, Vars};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult};

/// The two kinds of party a tenant keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartyKind {
    /// The person billed.
    Client,
    /// A third party an invoice is addressed to (insurer, plan manager).
    Contact,
}

impl PartyKind {
    pub fn table(self) -> &'static str {
        match self {
            PartyKind::Client => "client",
            PartyKind::Contact => "contact",
        }
    }

    fn label(self) -> &'static str {
        match self {
            PartyKind::Client => "client",
            PartyKind::Contact => "contact",
        }
    }
}

/// A party's fields, validated.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartyFields {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LocationFields {
    pub name: String,
    pub address: Option<String>,
}

/// Reads one record of a tenant; another tenant's record is reported as not found (A3).
pub(super) async fn read_owned<T: surrealdb::types::SurrealValue + Owned>(
    tx: Option<&TxRef>,
    store: &Store,
    tenant: &TenantId,
    table: &str,
    key: &str,
) -> AppResult<Option<T>> {
    let vars = Vars::new().set("id", record(table, key));
    let mut results = match tx {
        Some(tx) => tx.query("SELECT * FROM ONLY $id", vars).await?,
        None => store.query("SELECT * FROM ONLY $id", vars).await?,
    };
    Ok(results.first::<T>(0)?.filter(|row| row.tenant() == tenant.as_str()))
}

/// A record that belongs to one tenant.
pub trait Owned {
    fn tenant(&self) -> &str;
}

impl Owned for PartyRow {
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl Owned for LocationRow {
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl Owned for TaxRateRow {
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

fn tenant_var(tenant: &TenantId) -> String {
    tenant.as_str().to_owned()
}

impl Store {
    pub async fn create_party(&self, mutation: &Mutation<'_>, kind: PartyKind, fields: PartyFields) -> AppResult<String> {
        let fields = &fields;
        self.mutate(mutation, |tx| async move {
            let key = new_key();
            tx.query(
                "CREATE $id SET tenant = $tenant, name = $name, email = $email, phone = $phone, created_at = time::now()",
                Vars::new()
                    .set("id", record(kind.table(), &key))
                    .set("tenant", tenant_var(mutation.tenant))
                    .set("name", fields.name.clone())
                    .set("email", fields.email.clone())
                    .set("phone", fields.phone.clone()),
            )
            .await?;
            let entry = AuditEntry {
                action: format!("{}.create", kind.label()),
                records: vec![format!("{}:{key}", kind.table())],
                after: Some(serde_json::to_value(fields).map_err(AppError::internal)?),
                ..AuditEntry::default()
            };
            Ok((key, entry))
        })
        .await
    }

    pub async fn update_party(
        &self,
        mutation: &Mutation<'_>,
        kind: PartyKind,
        key: &str,
        fields: PartyFields,
    ) -> AppResult<String> {
        let fields = &fields;
        self.mutate(mutation, |tx| async move {
            let before: PartyRow = read_owned(Some(&tx), self, mutation.tenant, kind.table(), key)
                .await?
                .ok_or_else(|| AppError::not_found(kind.label()))?;
            tx.query(
                "UPDATE $id SET name = $name, email = $email, phone = $phone",
                Vars::new()
                    .set("id", record(kind.table(), key))
                    .set("name", fields.name.clone())
                    .set("email", fields.email.clone())
                    .set("phone", fields.phone.clone()),
            )
            .await?;
            let entry = AuditEntry {
                action: format!("{}.update", kind.label()),
                records: vec![format!("{}:{key}", kind.table())],
                before: Some(serde_json::json!({"name": before.name, "email": before.email, "phone": before.phone})),
                after: Some(serde_json::to_value(fields).map_err(AppError::internal)?),
                ..AuditEntry::default()
            };
            Ok((key.to_owned(), entry))
        })
        .await
    }

    pub async fn party(&self, tenant: &TenantId, kind: PartyKind, key: &str) -> AppResult<Option<PartyRow>> {
        read_owned(None, self, tenant, kind.table(), key).await
    }

    /// Parties of a tenant by key order (creation order), optionally those whose name contains
    /// `search` (case-insensitive).
    pub async fn parties(
        &self,
        tenant: &TenantId,
        kind: PartyKind,
        search: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> AppResult<(Vec<PartyRow>, i64)> {
        let table = kind.table();
        let filter = "tenant = $tenant AND ($search = NONE OR string::contains(string::lowercase(name), $search))";
        let sql = format!(
            "SELECT * FROM {table} WHERE {filter} AND ($after = NONE OR id > $after) ORDER BY id LIMIT $limit;
             SELECT count() FROM {table} WHERE {filter} GROUP ALL;"
        );
        let mut results = self
            .query(
                &sql,
                Vars::new()
                    .set("tenant", tenant_var(tenant))
                    .set("search", search.map(|s| s.to_lowercase()))
                    .set("after", after.map(|key| record(table, &key)))
                    .set("limit", limit as i64),
            )
            .await?;
        let rows = results.rows(0)?;
        let total = results.first::<super::rows::CountRow>(1)?.map_or(0, |c| c.count);
        Ok((rows, total))
    }

    pub async fn create_location(&self, mutation: &Mutation<'_>, fields: LocationFields) -> AppResult<String> {
        let fields = &fields;
        self.mutate(mutation, |tx| async move {
            let key = new_key();
            tx.query(
                "CREATE $id SET tenant = $tenant, name = $name, address = $address, created_at = time::now()",
                Vars::new()
                    .set("id", record("location", &key))
                    .set("tenant", tenant_var(mutation.tenant))
                    .set("name", fields.name.clone())
                    .set("address", fields.address.clone()),
            )
            .await?;
            let entry = AuditEntry {
                action: "location.create".into(),
                records: vec![format!("location:{key}")],
                after: Some(serde_json::to_value(fields).map_err(AppError::internal)?),
                ..AuditEntry::default()
            };
            Ok((key, entry))
        })
        .await
    }

    pub async fn update_location(&self, mutation: &Mutation<'_>, key: &str, fields: LocationFields) -> AppResult<String> {
        let fields = &fields;
        self.mutate(mutation, |tx| async move {
            let before: LocationRow = read_owned(Some(&tx), self, mutation.tenant, "location", key)
                .await?
                .ok_or_else(|| AppError::not_found("location"))?;
            tx.query(
                "UPDATE $id SET name = $name, address = $address",
                Vars::new()
                    .set("id", record("location", key))
                    .set("name", fields.name.clone())
                    .set("address", fields.address.clone()),
            )
            .await?;
            let entry = AuditEntry {
                action: "location.update".into(),
                records: vec![format!("location:{key}")],
                before: Some(serde_json::json!({"name": before.name, "address": before.address})),
                after: Some(serde_json::to_value(fields).map_err(AppError::internal)?),
                ..AuditEntry::default()
            };
            Ok((key.to_owned(), entry))
        })
        .await
    }

    pub async fn location(&self, tenant: &TenantId, key: &str) -> AppResult<Option<LocationRow>> {
        read_owned(None, self, tenant, "location", key).await
    }

    pub async fn locations(&self, tenant: &TenantId) -> AppResult<Vec<LocationRow>> {
        let mut results = self
            .query("SELECT * FROM location WHERE tenant = $tenant ORDER BY id", Vars::new().set("tenant", tenant_var(tenant)))
            .await?;
        results.rows(0)
    }

    pub async fn tax_rate(&self, tenant: &TenantId, key: &str) -> AppResult<Option<TaxRateRow>> {
        read_owned(None, self, tenant, "tax_rate", key).await
    }

    pub async fn tax_rates(&self, tenant: &TenantId, include_archived: bool) -> AppResult<Vec<TaxRateRow>> {
        let mut results = self
            .query(
                "SELECT * FROM tax_rate WHERE tenant = $tenant AND ($all OR archived = false) ORDER BY id",
                Vars::new().set("tenant", tenant_var(tenant)).set("all", include_archived),
            )
            .await?;
        results.rows(0)
    }

    pub async fn create_tax_rate(&self, mutation: &Mutation<'_>, name: String, percent: Decimal) -> AppResult<String> {
        let name = &name;
        self.mutate(mutation, |tx| async move {
            let key = new_key();
            tx.query(
                "CREATE $id SET tenant = $tenant, name = $name, percent = $percent, system = false, archived = false,
                    created_at = time::now()",
                Vars::new()
                    .set("id", record("tax_rate", &key))
                    .set("tenant", tenant_var(mutation.tenant))
                    .set("name", name.clone())
                    .set("percent", percent),
            )
            .await?;
            let entry = AuditEntry {
                action: "tax_rate.create".into(),
                records: vec![format!("tax_rate:{key}")],
                after: Some(serde_json::json!({"name": name, "percent": percent.to_string()})),
                ..AuditEntry::default()
            };
            Ok((key, entry))
        })
        .await
    }

    /// Writes a tax rate's new name, percentage or archived flag; `None` keeps a field. The
    /// caller has checked that the rate may change (a rate's `system` flag never changes).
    pub async fn change_tax_rate(
        &self,
        mutation: &Mutation<'_>,
        key: &str,
        name: Option<String>,
        percent: Option<Decimal>,
        archived: Option<bool>,
    ) -> AppResult<String> {
        let name = &name;
        self.mutate(mutation, |tx| async move {
            let before: TaxRateRow = read_owned(Some(&tx), self, mutation.tenant, "tax_rate", key)
                .await?
                .ok_or_else(|| AppError::not_found("tax rate"))?;
            tx.query(
                "UPDATE $id SET name = $name ?? name, percent = $percent ?? percent, archived = $archived ?? archived",
                Vars::new()
                    .set("id", record("tax_rate", key))
                    .set("name", name.clone())
                    .set("percent", percent)
                    .set("archived", archived),
            )
            .await?;
            let action = match archived {
                Some(true) => "tax_rate.archive",
                Some(false) => "tax_rate.restore",
                None => "tax_rate.update",
            };
            let entry = AuditEntry {
                action: action.into(),
                records: vec![format!("tax_rate:{key}")],
                before: Some(serde_json::json!({"name": before.name, "percent": before.percent.to_string(), "archived": before.archived})),
                after: Some(serde_json::json!({
                    "name": name.clone().unwrap_or(before.name),
                    "percent": percent.unwrap_or(before.percent).to_string(),
                    "archived": archived.unwrap_or(before.archived),
                })),
                reason: None,
                ..AuditEntry::default()
            };
            Ok((key_of(&before.id), entry))
        })
        .await
    }
}
