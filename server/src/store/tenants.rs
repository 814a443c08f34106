//! Tenants (practices): provisioned on first use with defaults, and their settings.

use chrono::Utc;
use rust_decimal::Decimal;

use super::rows::{TenantRow, new_key, record};
use super::{Store, TxRef, Vars};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult};

/// A new tenant's settings (decided): Australian dollars, prices exclusive of tax, 14 days to pay,
/// Sydney time, invoices numbered from 1.
pub const DEFAULT_CURRENCY: &str = "AUD";
pub const DEFAULT_TAX_MODE: &str = "EXCLUSIVE";
pub const DEFAULT_PAYMENT_TERMS_DAYS: i64 = 14;
pub const DEFAULT_TIMEZONE: &str = "Australia/Sydney";

/// The system tax rates every tenant starts with (decided): GST at 10% and GST-free.
const SYSTEM_TAX_RATES: [(&str, i64); 2] = [("GST", 10), ("GST-free", 0)];

/// The payment methods every tenant starts with: (name, type, plugin, configuration). The card
/// method starts on the card-sim test gateway with test credentials, so a new practice can try a
/// charge at once; an ADMIN reconfigures it for a real gateway.
const DEFAULT_PAYMENT_METHODS: [(&str, &str, &str, &str); 5] = [
    ("Credit card", "CARD", "card-sim", r#"{"merchant_id":"settle-test","api_key":"sk_test_settle"}"#),
    ("EFTPOS", "EFTPOS", "manual", "{}"),
    ("Cash", "CASH", "manual", "{}"),
    ("Direct deposit", "DIRECT_DEPOSIT", "manual", "{}"),
    ("Cheque", "CHEQUE", "manual", "{}"),
];

/// How long settings read outside a transaction may be reused: they decide defaults and what
/// "today" is, never a balance or a number.
pub const SETTINGS_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// Settings to change; `None` leaves a setting as it is. Values are already validated.
#[derive(Debug, Clone, Default)]
pub struct SettingsChange {
    pub currency: Option<String>,
    pub tax_mode: Option<String>,
    pub payment_terms_days: Option<i64>,
    pub next_invoice_number: Option<i64>,
    pub timezone: Option<String>,
}

impl Store {
    /// The tenant's settings, creating the tenant with defaults and system tax rates on first use.
    /// Settings read here are at most [`SETTINGS_CACHE_TTL`] old (a change made through this
    /// process is seen at once); every transaction that depends on them (numbering, pricing)
    /// reads them again inside itself.
    pub async fn tenant(&self, tenant: &TenantId) -> AppResult<TenantRow> {
        if let Some(row) = self.cached_tenant(tenant) {
            return Ok(row);
        }
        let row = self.load_tenant(tenant).await?;
        self.cache_tenant(tenant, &row);
        Ok(row)
    }

    fn cached_tenant(&self, tenant: &TenantId) -> Option<TenantRow> {
        let cache = self.tenant_cache().lock().unwrap_or_else(|p| p.into_inner());
        cache.get(tenant.as_str()).filter(|(at, _)| at.elapsed() < SETTINGS_CACHE_TTL).map(|(_, row)| row.clone())
    }

    fn cache_tenant(&self, tenant: &TenantId, row: &TenantRow) {
        let mut cache = self.tenant_cache().lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(tenant.as_str().to_owned(), (std::time::Instant::now(), row.clone()));
    }

    pub(crate) fn forget_tenant(&self, tenant: &TenantId) {
        self.tenant_cache().lock().unwrap_or_else(|p| p.into_inner()).remove(tenant.as_str());
    }

    /// The tenant's settings as stored now, bypassing the cache (the `settings` query).
    pub async fn tenant_now(&self, tenant: &TenantId) -> AppResult<TenantRow> {
        let row = self.load_tenant(tenant).await?;
        self.cache_tenant(tenant, &row);
        Ok(row)
    }

    async fn load_tenant(&self, tenant: &TenantId) -> AppResult<TenantRow> {
        if let Some(row) = self.find_tenant(tenant).await? {
            return Ok(row);
        }
        // Two first requests at once both try to create it; the loser retries, finds it, returns.
        self.transaction(|tx| async move {
            if let Some(row) = read_tenant(&tx, tenant).await? {
                return Ok(row);
            }
            tx.query(
                "CREATE $id SET currency = $currency, tax_mode = $tax_mode, payment_terms_days = $terms,
                    next_invoice_number = 1, timezone = $timezone, created_at = time::now()",
                Vars::new()
                    .set("id", record("tenant", tenant.as_str()))
                    .set("currency", DEFAULT_CURRENCY.to_owned())
                    .set("tax_mode", DEFAULT_TAX_MODE.to_owned())
                    .set("terms", DEFAULT_PAYMENT_TERMS_DAYS)
                    .set("timezone", DEFAULT_TIMEZONE.to_owned()),
            )
            .await?;
            for (name, percent) in SYSTEM_TAX_RATES {
                tx.query(
                    "CREATE $id SET tenant = $tenant, name = $name, percent = $percent, system = true,
                        archived = false, created_at = time::now()",
                    Vars::new()
                        .set("id", record("tax_rate", &new_key()))
                        .set("tenant", tenant.as_str().to_owned())
                        .set("name", name.to_owned())
                        .set("percent", Decimal::from(percent)),
                )
                .await?;
            }
            for (name, kind, plugin, config) in DEFAULT_PAYMENT_METHODS {
                tx.query(
                    "CREATE $id SET tenant = $tenant, name = $name, type = $type, plugin = $plugin, config = $config,
                        archived = false, created_at = time::now()",
                    Vars::new()
                        .set("id", record("payment_method", &new_key()))
                        .set("tenant", tenant.as_str().to_owned())
                        .set("name", name.to_owned())
                        .set("type", kind.to_owned())
                        .set("plugin", plugin.to_owned())
                        .set("config", config.to_owned()),
                )
                .await?;
            }
            read_tenant(&tx, tenant).await?.ok_or_else(|| AppError::internal("tenant vanished after creation"))
        })
        .await
    }

    async fn find_tenant(&self, tenant: &TenantId) -> AppResult<Option<TenantRow>> {
        let mut results =
            self.query("SELECT * FROM ONLY $id", Vars::new().set("id", record("tenant", tenant.as_str()))).await?;
        results.first(0)
    }

    /// An issued invoice number at or above `next`, if any (for the settings rule of
    /// [`crate::ledger::invoice::check_next_number`]), read in the caller's transaction.
    pub(crate) async fn load_invoice_number_from(&self, tx: &TxRef, tenant: &TenantId, next: i64) -> AppResult<Option<i64>> {
        let mut used = tx
            .query(
                "SELECT VALUE number FROM invoice WHERE tenant = $tenant AND number != NONE AND number >= $next LIMIT 1",
                Vars::new().set("tenant", tenant.as_str().to_owned()).set("next", next),
            )
            .await?;
        Ok(used.rows::<i64>(0)?.first().copied())
    }

    /// The tenant's settings, read in the caller's transaction.
    pub(crate) async fn settings_in(&self, tx: &TxRef, tenant: &TenantId) -> AppResult<TenantRow> {
        read_tenant(tx, tenant).await?.ok_or_else(|| AppError::not_found("tenant"))
    }

    /// Writes changed settings; returns them before and after, for the audit event.
    pub(crate) async fn write_settings(&self, tx: &TxRef, tenant: &TenantId, change: &SettingsChange) -> AppResult<(serde_json::Value, serde_json::Value)> {
        let before = self.settings_in(tx, tenant).await?;
        tx.query(
            "UPDATE $id SET currency = $currency ?? currency, tax_mode = $tax_mode ?? tax_mode,
                payment_terms_days = $terms ?? payment_terms_days,
                next_invoice_number = $next ?? next_invoice_number, timezone = $timezone ?? timezone RETURN NONE",
            Vars::new()
                .set("id", record("tenant", tenant.as_str()))
                .set("currency", change.currency.clone())
                .set("tax_mode", change.tax_mode.clone())
                .set("terms", change.payment_terms_days)
                .set("next", change.next_invoice_number)
                .set("timezone", change.timezone.clone()),
        )
        .await?;
        let after = self.settings_in(tx, tenant).await?;
        Ok((settings_json(&before), settings_json(&after)))
    }
}

pub(super) async fn read_tenant(tx: &TxRef, tenant: &TenantId) -> AppResult<Option<TenantRow>> {
    let mut results = tx.query("SELECT * FROM ONLY $id", Vars::new().set("id", record("tenant", tenant.as_str()))).await?;
    results.first(0)
}

fn settings_json(row: &TenantRow) -> serde_json::Value {
    serde_json::json!({
        "currency": row.currency,
        "taxMode": row.tax_mode,
        "paymentTermsDays": row.payment_terms_days,
        "nextInvoiceNumber": row.next_invoice_number,
        "timezone": row.timezone,
        "at": Utc::now(),
    })
}
