//! Payment methods: each bound to a plugin, with a configuration that plugin validates; only an
//! ADMIN changes them. Secret configuration fields are never returned.

use async_graphql::{Context, Enum, ID, InputObject, Json, Object, Result};
use serde::Serialize;

use super::context::{caller, mutation, state, tenant};
use super::errors::unknown_state;
use super::text::{NAME_MAX_CHARS, required_text};
use crate::auth::Role;
use crate::error::{AppError, AppResult};
use crate::store::rows::{PaymentMethodRow, key_of};

/// A way of paying, handled by a plugin.
pub struct PaymentMethod(pub PaymentMethodRow);

// Stored as text on the method and named as text in plugin manifests (the plugin SDK's
// `METHOD_TYPES`); converted here and nowhere else.
/// The kind of a payment method.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Serialize)]
// Spelled as the text the input was before it was an enum, so a request's fingerprint for its
// idempotency key stays the same.
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentMethodType {
    Card,
    Eftpos,
    Cash,
    DirectDeposit,
    Cheque,
    Other,
}

impl PaymentMethodType {
    pub fn parse(stored: &str) -> Option<PaymentMethodType> {
        match stored {
            "CARD" => Some(PaymentMethodType::Card),
            "EFTPOS" => Some(PaymentMethodType::Eftpos),
            "CASH" => Some(PaymentMethodType::Cash),
            "DIRECT_DEPOSIT" => Some(PaymentMethodType::DirectDeposit),
            "CHEQUE" => Some(PaymentMethodType::Cheque),
            "OTHER" => Some(PaymentMethodType::Other),
            _ => None,
        }
    }

    /// The text the store keeps and plugins use.
    pub fn as_stored(self) -> &'static str {
        match self {
            PaymentMethodType::Card => "CARD",
            PaymentMethodType::Eftpos => "EFTPOS",
            PaymentMethodType::Cash => "CASH",
            PaymentMethodType::DirectDeposit => "DIRECT_DEPOSIT",
            PaymentMethodType::Cheque => "CHEQUE",
            PaymentMethodType::Other => "OTHER",
        }
    }
}

#[Object]
impl PaymentMethod {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    #[graphql(name = "type")]
    async fn kind(&self) -> Result<PaymentMethodType> {
        let found_in = format!("payment_method:{}", key_of(&self.0.id));
        Ok(PaymentMethodType::parse(&self.0.kind).ok_or_else(|| unknown_state(&found_in, "type", &self.0.kind))?)
    }
    /// The plugin that handles it: "manual" only records payments.
    async fn plugin(&self) -> &str {
        &self.0.plugin
    }
    async fn archived(&self) -> bool {
        self.0.archived
    }
    /// The plugin configuration without its secret fields.
    async fn configuration(&self, ctx: &Context<'_>) -> Json<serde_json::Value> {
        Json(public_config(ctx, &self.0.plugin, self.0.config.as_deref()).0)
    }
    /// Names of the secret configuration fields that are set; their values are never returned.
    async fn secret_fields_set(&self, ctx: &Context<'_>) -> Vec<String> {
        public_config(ctx, &self.0.plugin, self.0.config.as_deref()).1
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

/// A new payment method bound to a plugin.
#[derive(InputObject, Serialize)]
pub struct PaymentMethodInput {
    pub name: String,
    /// One of the types the plugin handles (its `methodTypes`).
    #[graphql(name = "type")]
    pub kind: PaymentMethodType,
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
pub struct MethodQuery;

#[Object]
impl MethodQuery {
    #[graphql(complexity = "10 + 10 * child_complexity")]
    async fn payment_methods(&self, ctx: &Context<'_>, #[graphql(default = false)] include_archived: bool) -> Result<Vec<PaymentMethod>> {
        let request = caller(ctx, Role::Viewer)?;
        tenant(ctx).await?;
        let rows = state(ctx).store.payment_methods(&request.principal.tenant, include_archived).await?;
        Ok(rows.into_iter().map(PaymentMethod).collect())
    }
}

#[derive(Default)]
pub struct MethodMutation;

#[Object]
impl MethodMutation {
    /// Adds a payment method bound to a plugin, with a configuration the plugin accepts (ADMIN).
    async fn create_payment_method(
        &self,
        ctx: &Context<'_>,
        input: PaymentMethodInput,
        idempotency_key: Option<String>,
    ) -> Result<PaymentMethod> {
        let m = mutation(ctx, Role::Admin, "createPaymentMethod", idempotency_key, &input).await?;
        let name = required_text("name", &input.name, NAME_MAX_CHARS)?;
        let kind = input.kind.as_stored().to_owned();
        let config = input.config.map_or(serde_json::json!({}), |c| c.0);
        let key = state(ctx).commands.create_payment_method(&m, name, kind, input.plugin.trim(), config).await?;
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
        let name = match &input.name {
            Some(name) => Some(required_text("name", name, NAME_MAX_CHARS)?),
            None => None,
        };
        let key = state(ctx).commands.update_payment_method(&m, &id, name, input.config.map(|c| c.0)).await?;
        Ok(load_method(ctx, &key).await?)
    }

    /// Archives a payment method: it takes no new payments (P1) (ADMIN).
    async fn archive_payment_method(&self, ctx: &Context<'_>, id: ID, idempotency_key: Option<String>) -> Result<PaymentMethod> {
        let m = mutation(ctx, Role::Admin, "archivePaymentMethod", idempotency_key, &id.0).await?;
        let key = state(ctx).commands.archive_payment_method(&m, &id, true).await?;
        Ok(load_method(ctx, &key).await?)
    }

    /// Restores an archived payment method (ADMIN).
    async fn restore_payment_method(&self, ctx: &Context<'_>, id: ID, idempotency_key: Option<String>) -> Result<PaymentMethod> {
        let m = mutation(ctx, Role::Admin, "restorePaymentMethod", idempotency_key, &id.0).await?;
        let key = state(ctx).commands.archive_payment_method(&m, &id, false).await?;
        Ok(load_method(ctx, &key).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::PaymentMethodType;

    /// The API's types are exactly the plugin SDK's, which manifests are checked against.
    #[test]
    fn payment_method_types_are_the_plugin_sdks_and_round_trip_through_their_text() {
        use PaymentMethodType::*;
        let types = [Card, Eftpos, Cash, DirectDeposit, Cheque, Other];
        assert_eq!(types.map(PaymentMethodType::as_stored), crate::plugins::METHOD_TYPES);
        for kind in types {
            assert_eq!(PaymentMethodType::parse(kind.as_stored()), Some(kind));
        }
        assert_eq!(PaymentMethodType::parse("cash"), None, "stored text is matched exactly");
        assert_eq!(serde_json::to_value(DirectDeposit).unwrap(), "DIRECT_DEPOSIT", "fingerprinted as the text it was");
    }
}
