//! The JSON contract between Settle and a plugin: manifest, requests, outcomes and errors.
//!
//! Field names are snake_case; amounts are decimal strings (`"12.50"`, never JSON numbers, so no
//! value ever passes through a float); outcome and error codes are SCREAMING_SNAKE_CASE. These
//! types know nothing of the C ABI that carries them.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::PROTOCOL_VERSION;

/// The payment method types Settle knows; a manifest's `method_types` are drawn from these.
pub const METHOD_TYPES: [&str; 6] = ["CARD", "EFTPOS", "CASH", "DIRECT_DEPOSIT", "CHEQUE", "OTHER"];

/// Who a plugin is and what it can do.
///
/// ```json
/// {
///   "id": "card-sim",
///   "name": "Card gateway (test mode)",
///   "version": "0.1.0",
///   "protocol_version": 1,
///   "capabilities": ["charge", "refund", "status"],
///   "currencies": [],
///   "method_types": ["CARD"],
///   "config_schema": {
///     "type": "object",
///     "required": ["merchant_id", "api_key"],
///     "properties": {
///       "merchant_id": {"type": "string"},
///       "api_key": {"type": "string", "secret": true}
///     }
///   }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Stable identifier that payment methods refer to: 1-64 of `a-z 0-9 - _`. A library whose id
    /// equals a built-in plugin's replaces it.
    pub id: String,
    /// Name shown to administrators.
    pub name: String,
    /// The plugin's own version, free text (semver advised).
    pub version: String,
    /// The JSON contract version the plugin speaks; must equal [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The operations the plugin supports.
    pub capabilities: Vec<Capability>,
    /// ISO 4217 codes the plugin can take; empty means any currency.
    pub currencies: Vec<String>,
    /// The payment method types it serves, from [`METHOD_TYPES`]: CARD, EFTPOS, CASH,
    /// DIRECT_DEPOSIT, CHEQUE, OTHER.
    pub method_types: Vec<String>,
    /// A JSON Schema (an object schema) for a payment method's configuration. Properties that
    /// hold secrets (API keys, passwords) carry `"secret": true`: Settle stores them but never
    /// returns them from its queries.
    pub config_schema: Value,
}

impl Manifest {
    /// Whether the plugin declares `capability`.
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    /// Whether the plugin takes `currency` (always, when `currencies` is empty).
    pub fn accepts_currency(&self, currency: &str) -> bool {
        self.currencies.is_empty() || self.currencies.iter().any(|c| c == currency)
    }

    /// The property names of [`config_schema`](Self::config_schema) marked `"secret": true`.
    pub fn secret_fields(&self) -> Vec<String> {
        self.config_schema["properties"]
            .as_object()
            .map(|properties| {
                properties
                    .iter()
                    .filter(|(_, schema)| schema["secret"].as_bool() == Some(true))
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Everything wrong with this manifest, in words; empty when Settle can work with it.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !id_ok {
            problems.push(format!("manifest id {:?} is not 1-64 of a-z 0-9 - _", self.id));
        }
        if self.name.trim().is_empty() {
            problems.push("manifest name is empty".to_owned());
        }
        if self.version.trim().is_empty() {
            problems.push("manifest version is empty".to_owned());
        }
        if self.protocol_version != PROTOCOL_VERSION {
            problems.push(format!(
                "manifest protocol_version is {}, this SDK speaks {PROTOCOL_VERSION}",
                self.protocol_version
            ));
        }
        if !self.has(Capability::Charge) {
            problems.push("manifest capabilities do not include charge".to_owned());
        }
        for (i, capability) in self.capabilities.iter().enumerate() {
            if self.capabilities[..i].contains(capability) {
                problems.push(format!("manifest capability {capability:?} is listed twice"));
            }
        }
        if self.method_types.is_empty() {
            problems.push("manifest method_types is empty".to_owned());
        }
        for method_type in &self.method_types {
            if !METHOD_TYPES.contains(&method_type.as_str()) {
                problems.push(format!("manifest method type {method_type:?} is not one of {METHOD_TYPES:?}"));
            }
        }
        for currency in &self.currencies {
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                problems.push(format!("manifest currency {currency:?} is not an ISO 4217 code such as AUD"));
            }
        }
        if !self.config_schema.is_object() {
            problems.push("manifest config_schema is not a JSON object".to_owned());
        } else if self.config_schema["type"] != "object" {
            problems.push("manifest config_schema does not describe an object (\"type\": \"object\")".to_owned());
        }
        problems
    }
}

/// An operation a plugin supports; serialized in lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Takes payments ([`PaymentMethodPlugin::charge`](crate::PaymentMethodPlugin::charge)).
    Charge,
    /// Gives money back ([`PaymentMethodPlugin::refund`](crate::PaymentMethodPlugin::refund)).
    Refund,
    /// Answers look-ups by idempotency key
    /// ([`PaymentMethodPlugin::status`](crate::PaymentMethodPlugin::status)).
    Status,
}

/// Take a payment.
///
/// ```json
/// {
///   "tenant": "acme",
///   "idempotency_key": "pay_01J9Z3",
///   "amount": "120.00",
///   "currency": "AUD",
///   "method_type": "CARD",
///   "config": {"merchant_id": "m_1", "api_key": "sk_test_abc"},
///   "details": {"card_number": "4242424242424242"},
///   "description": "Invoice INV-0042"
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// The tenant (practice) taking the payment.
    pub tenant: String,
    /// Identifies this charge within the tenant; repeated on retries.
    pub idempotency_key: String,
    /// The amount to take, positive, as a decimal string.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// ISO 4217 code.
    pub currency: String,
    /// One of the manifest's method types.
    pub method_type: String,
    /// The payment method's configuration, as accepted by `validate_config`.
    pub config: Value,
    /// What the payer supplied for this payment (a card number, a cheque number, ...); its shape
    /// is the plugin's to define and check.
    pub details: Value,
    /// Free text for the gateway's records.
    #[serde(default)]
    pub description: Option<String>,
}

/// Give money back for an earlier charge.
///
/// ```json
/// {
///   "tenant": "acme",
///   "idempotency_key": "ref_01J9Z4",
///   "amount": "20.00",
///   "currency": "AUD",
///   "charge_reference": "ch_sim_1",
///   "config": {"merchant_id": "m_1", "api_key": "sk_test_abc"}
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// The tenant (practice) giving the money back.
    pub tenant: String,
    /// Identifies this refund within the tenant; repeated on retries.
    pub idempotency_key: String,
    /// The amount to give back, positive, as a decimal string.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// ISO 4217 code, the charge's currency.
    pub currency: String,
    /// The `reference` the charge's outcome reported.
    pub charge_reference: String,
    /// The payment method's configuration.
    pub config: Value,
}

/// Which kind of operation a [`StatusRequest`] asks about; serialized in lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// A charge.
    Charge,
    /// A refund.
    Refund,
}

/// Ask what became of the charge or refund made with an idempotency key.
///
/// ```json
/// {"tenant": "acme", "idempotency_key": "pay_01J9Z3", "operation": "charge", "config": {}}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// The tenant of the operation.
    pub tenant: String,
    /// The idempotency key the operation was requested with.
    pub idempotency_key: String,
    /// Whether the key names a charge or a refund.
    pub operation: Operation,
    /// The payment method's configuration.
    pub config: Value,
}

/// What became of a charge or refund, tagged by `status`.
///
/// ```json
/// {"status": "SUCCEEDED", "reference": "ch_sim_1"}
/// {"status": "DECLINED", "reason": "insufficient funds"}
/// {"status": "PENDING", "reference": "ch_sim_2"}
/// {"status": "UNKNOWN"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// The money moved. `reference` is the gateway's id for the operation (a refund names a
    /// charge by it), if it has one.
    Succeeded {
        /// The gateway's id for the charge or refund.
        #[serde(default)]
        reference: Option<String>,
    },
    /// The gateway refused; no money moved. `reason` is shown to the operator.
    Declined {
        /// Why, in words.
        reason: String,
    },
    /// Accepted but not final; Settle asks `status` later.
    Pending {
        /// The gateway's id for the operation, if it has one yet.
        #[serde(default)]
        reference: Option<String>,
    },
    /// Only from `status`: the plugin (or its gateway) never saw this idempotency key.
    Unknown,
}

/// Why a request could not be put to the gateway; no money moved.
///
/// ```json
/// {"code": "INVALID_DETAILS", "message": "cheque_number must be 1 to 20 digits"}
/// ```
///
/// The codes a plugin returns are the constants below; the ABI layer adds `INVALID_REQUEST`
/// (the request bytes were not the expected JSON) and `PANIC` (the plugin panicked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginError {
    /// A stable SCREAMING_SNAKE_CASE code.
    pub code: String,
    /// What went wrong, for the operator; never include secrets.
    pub message: String,
}

impl PluginError {
    /// The payment method's configuration is wrong.
    pub const INVALID_CONFIG: &'static str = "INVALID_CONFIG";
    /// The payer's details (card number, cheque number, amount, ...) are wrong.
    pub const INVALID_DETAILS: &'static str = "INVALID_DETAILS";
    /// The plugin does not do this (an operation, a method type or a currency).
    pub const UNSUPPORTED: &'static str = "UNSUPPORTED";
    /// The gateway could not be reached or failed; nothing is known to have moved.
    pub const GATEWAY_ERROR: &'static str = "GATEWAY_ERROR";
    /// Set by the ABI layer: the request bytes were not the expected JSON.
    pub const INVALID_REQUEST: &'static str = "INVALID_REQUEST";
    /// Set by the ABI layer: the plugin panicked; the message is the panic's.
    pub const PANIC: &'static str = "PANIC";

    /// An error with any code.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> PluginError {
        PluginError { code: code.into(), message: message.into() }
    }

    /// `INVALID_CONFIG`: the payment method's configuration is wrong.
    pub fn invalid_config(message: impl Into<String>) -> PluginError {
        PluginError::new(PluginError::INVALID_CONFIG, message)
    }

    /// `INVALID_DETAILS`: the payer's details or the amount are wrong.
    pub fn invalid_details(message: impl Into<String>) -> PluginError {
        PluginError::new(PluginError::INVALID_DETAILS, message)
    }

    /// `UNSUPPORTED`: the plugin does not do this.
    pub fn unsupported(message: impl Into<String>) -> PluginError {
        PluginError::new(PluginError::UNSUPPORTED, message)
    }

    /// `GATEWAY_ERROR`: the gateway could not be reached or failed.
    pub fn gateway(message: impl Into<String>) -> PluginError {
        PluginError::new(PluginError::GATEWAY_ERROR, message)
    }

    /// `INVALID_REQUEST`: the request bytes were not the expected JSON (set by the ABI layer).
    pub fn invalid_request(message: impl Into<String>) -> PluginError {
        PluginError::new(PluginError::INVALID_REQUEST, message)
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for PluginError {}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use serde_json::json;

    use super::*;

    #[test]
    fn amounts_are_decimal_strings_both_ways() {
        let request = ChargeRequest {
            tenant: "acme".into(),
            idempotency_key: "k1".into(),
            amount: Decimal::from_str("120.50").unwrap(),
            currency: "AUD".into(),
            method_type: "CARD".into(),
            config: json!({}),
            details: json!({"card_number": "4242424242424242"}),
            description: None,
        };
        let value = serde_json::to_value(&request).unwrap();
        assert_eq!(value["amount"], json!("120.50"), "scale is kept, as a string");
        let back: ChargeRequest = serde_json::from_value(value).unwrap();
        assert_eq!(back, request);
    }

    #[test]
    fn amounts_as_json_numbers_are_refused() {
        let value = json!({
            "tenant": "acme", "idempotency_key": "k", "amount": 12.5, "currency": "AUD",
            "charge_reference": "ch_1", "config": {}
        });
        assert!(serde_json::from_value::<RefundRequest>(value).is_err(), "a float must never become money");
    }

    #[test]
    fn outcomes_are_tagged_by_status() {
        let cases = [
            (Outcome::Succeeded { reference: Some("ch_1".into()) }, json!({"status": "SUCCEEDED", "reference": "ch_1"})),
            (Outcome::Declined { reason: "card expired".into() }, json!({"status": "DECLINED", "reason": "card expired"})),
            (Outcome::Pending { reference: None }, json!({"status": "PENDING", "reference": null})),
            (Outcome::Unknown, json!({"status": "UNKNOWN"})),
        ];
        for (outcome, expected) in cases {
            assert_eq!(serde_json::to_value(&outcome).unwrap(), expected);
            assert_eq!(serde_json::from_value::<Outcome>(expected).unwrap(), outcome);
        }
        let no_reference: Outcome = serde_json::from_value(json!({"status": "SUCCEEDED"})).unwrap();
        assert_eq!(no_reference, Outcome::Succeeded { reference: None }, "a missing reference reads as none");
    }

    #[test]
    fn capabilities_and_operations_are_lowercase() {
        assert_eq!(
            serde_json::to_value([Capability::Charge, Capability::Refund, Capability::Status]).unwrap(),
            json!(["charge", "refund", "status"])
        );
        let request: StatusRequest = serde_json::from_value(
            json!({"tenant": "t", "idempotency_key": "k", "operation": "refund", "config": null}),
        )
        .unwrap();
        assert_eq!(request.operation, Operation::Refund);
    }

    #[test]
    fn error_constructors_give_the_documented_codes() {
        let cases = [
            (PluginError::invalid_config("x"), "INVALID_CONFIG"),
            (PluginError::invalid_details("x"), "INVALID_DETAILS"),
            (PluginError::unsupported("x"), "UNSUPPORTED"),
            (PluginError::gateway("x"), "GATEWAY_ERROR"),
            (PluginError::invalid_request("x"), "INVALID_REQUEST"),
        ];
        for (error, code) in cases {
            assert_eq!(error.code, code);
        }
        assert_eq!(PluginError::gateway("timeout").to_string(), "GATEWAY_ERROR: timeout");
    }

    fn manifest() -> Manifest {
        Manifest {
            id: "card-sim".into(),
            name: "Card".into(),
            version: "1.0.0".into(),
            protocol_version: PROTOCOL_VERSION,
            capabilities: vec![Capability::Charge, Capability::Status],
            currencies: vec![],
            method_types: vec!["CARD".into()],
            config_schema: json!({"type": "object", "properties": {"api_key": {"type": "string", "secret": true}, "merchant_id": {"type": "string"}}}),
        }
    }

    #[test]
    fn a_sane_manifest_has_no_problems() {
        let manifest = manifest();
        assert_eq!(manifest.problems(), Vec::<String>::new());
        assert_eq!(manifest.secret_fields(), vec!["api_key".to_owned()]);
        assert!(manifest.accepts_currency("NZD"));
    }

    type Breakage = fn(&mut Manifest);

    #[test]
    fn manifest_problems_are_each_reported() {
        let cases: [(&str, Breakage); 8] = [
            ("id", |m| m.id = "Card Sim".into()),
            ("name", |m| m.name = " ".into()),
            ("version", |m| m.version.clear()),
            ("protocol_version", |m| m.protocol_version = 99),
            ("charge", |m| m.capabilities = vec![Capability::Refund]),
            ("method type", |m| m.method_types = vec!["CRYPTO".into()]),
            ("currency", |m| m.currencies = vec!["aud".into()]),
            ("config_schema", |m| m.config_schema = json!("none")),
        ];
        for (field, break_it) in cases {
            let mut manifest = manifest();
            break_it(&mut manifest);
            let problems = manifest.problems();
            assert!(problems.len() == 1 && problems[0].contains(field), "breaking {field} gave {problems:?}");
        }
    }
}
