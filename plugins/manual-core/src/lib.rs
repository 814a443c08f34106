//! The logic of Settle's `manual` payment-method plugin, payments that are only recorded, as a
//! Rust type without C exports.
//!
//! Cash handed over the counter, an EFTPOS terminal that is not connected to Settle, a cheque, a
//! direct deposit seen on the bank statement: the money has already moved when the payment is
//! entered, so a "charge" checks the details and records them, and always succeeds. Nothing is
//! called, nothing is kept, and repeating a request gives the same outcome, which makes every
//! operation idempotent without any state.
//!
//! | method type | details | outcome reference |
//! |---|---|---|
//! | `CHEQUE` | `cheque_number`: required, 1-20 digits | the cheque number |
//! | `DIRECT_DEPOSIT` | `reference`: optional string of at most 64 characters | the reference, if given |
//! | `EFTPOS`, `CASH`, `OTHER` | ignored | none |
//!
//! The amount must be positive. The plugin takes no configuration (`{}` or `null`). Refunds are
//! recorded the same way and succeed; `status` answers UNKNOWN, because a manual payment is
//! settled the moment it is recorded and there is nothing to look up.
//!
//! # Why this crate has no C exports
//!
//! This is the plugin's logic, as the plain [`PaymentMethodPlugin`] value [`ManualPlugin`]: the
//! *core* that both of its uses are built from. Settle links it into its own binary as a
//! built-in, next to other plugins; the loadable library, the `cdylib` crate
//! `settle-plugin-manual` (`plugins/manual`), only exports it over the C ABI with
//! [`settle_plugin::export_plugin!`]. The exports live there and not here because two crates that
//! define them cannot both be linked into one binary (the symbols would be duplicates).
//!
//! Together the two crates are the smallest complete example of a plugin: the trait
//! implementation and its unit tests (which run the SDK's conformance check) here, the export
//! line there.

use rust_decimal::Decimal;
use serde_json::{Value, json};
use settle_plugin::{
    Capability, ChargeRequest, Manifest, Outcome, PROTOCOL_VERSION, PaymentMethodPlugin, PluginError, RefundRequest,
    StatusRequest,
};

/// The manifest id, which payment methods refer to.
pub const ID: &str = "manual";

/// The method types this plugin records.
pub const METHOD_TYPES: [&str; 5] = ["EFTPOS", "CASH", "DIRECT_DEPOSIT", "CHEQUE", "OTHER"];

/// The longest direct-deposit reference kept, in characters.
pub const DEPOSIT_REFERENCE_MAX_CHARS: usize = 64;

/// The longest cheque number, in digits.
pub const CHEQUE_NUMBER_MAX_DIGITS: usize = 20;

/// The plugin. It holds no state.
#[derive(Debug, Clone, Copy, Default)]
pub struct ManualPlugin;

impl PaymentMethodPlugin for ManualPlugin {
    fn manifest(&self) -> Manifest {
        Manifest {
            id: ID.to_owned(),
            name: "Manual payments".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol_version: PROTOCOL_VERSION,
            capabilities: vec![Capability::Charge, Capability::Refund],
            currencies: Vec::new(),
            method_types: METHOD_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            config_schema: json!({"type": "object", "properties": {}, "additionalProperties": false}),
        }
    }

    fn validate_config(&self, config: &Value) -> Result<(), PluginError> {
        match config {
            Value::Null => Ok(()),
            Value::Object(fields) if fields.is_empty() => Ok(()),
            Value::Object(fields) => Err(PluginError::invalid_config(format!(
                "the manual plugin takes no configuration, but got the field(s) {}",
                fields.keys().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", ")
            ))),
            _ => Err(PluginError::invalid_config("the manual plugin takes no configuration: expected {} or null")),
        }
    }

    fn charge(&self, request: ChargeRequest) -> Result<Outcome, PluginError> {
        self.validate_config(&request.config)?;
        positive(request.amount)?;
        let reference = match request.method_type.as_str() {
            "CHEQUE" => Some(cheque_number(&request.details)?),
            "DIRECT_DEPOSIT" => deposit_reference(&request.details)?,
            "EFTPOS" | "CASH" | "OTHER" => None,
            other => {
                return Err(PluginError::unsupported(format!(
                    "the manual plugin records {} payments, not {other:?}",
                    METHOD_TYPES.join(", ")
                )));
            }
        };
        Ok(Outcome::Succeeded { reference })
    }

    fn refund(&self, request: RefundRequest) -> Result<Outcome, PluginError> {
        self.validate_config(&request.config)?;
        positive(request.amount)?;
        Ok(Outcome::Succeeded { reference: None })
    }

    fn status(&self, request: StatusRequest) -> Result<Outcome, PluginError> {
        self.validate_config(&request.config)?;
        Ok(Outcome::Unknown)
    }
}

fn positive(amount: Decimal) -> Result<(), PluginError> {
    if amount > Decimal::ZERO {
        Ok(())
    } else {
        Err(PluginError::invalid_details(format!("the amount must be positive, got {amount}")))
    }
}

/// `details.cheque_number`: a string of 1-20 digits (surrounding spaces ignored).
fn cheque_number(details: &Value) -> Result<String, PluginError> {
    let invalid = |what: &str| {
        PluginError::invalid_details(format!(
            "a cheque payment needs details.cheque_number, a string of 1 to {CHEQUE_NUMBER_MAX_DIGITS} digits; {what}"
        ))
    };
    let number = match details.get("cheque_number") {
        None | Some(Value::Null) => return Err(invalid("it is missing")),
        Some(Value::String(number)) => number.trim(),
        Some(other) => return Err(invalid(&format!("got {other}"))),
    };
    if number.is_empty() {
        return Err(invalid("it is empty"));
    }
    if !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(&format!("{number:?} has characters that are not digits")));
    }
    if number.len() > CHEQUE_NUMBER_MAX_DIGITS {
        return Err(invalid(&format!("{number:?} has {} digits", number.len())));
    }
    Ok(number.to_owned())
}

/// `details.reference`: optional; a string of at most 64 characters (surrounding spaces ignored,
/// blank means none).
fn deposit_reference(details: &Value) -> Result<Option<String>, PluginError> {
    match details.get("reference") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(reference)) => {
            let reference = reference.trim();
            if reference.chars().count() > DEPOSIT_REFERENCE_MAX_CHARS {
                Err(PluginError::invalid_details(format!(
                    "details.reference of a direct deposit is at most {DEPOSIT_REFERENCE_MAX_CHARS} characters, got {}",
                    reference.chars().count()
                )))
            } else if reference.is_empty() {
                Ok(None)
            } else {
                Ok(Some(reference.to_owned()))
            }
        }
        Some(other) => Err(PluginError::invalid_details(format!(
            "details.reference of a direct deposit must be a string, got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use settle_plugin::Operation;
    use settle_plugin::testing::{ConformanceSample, assert_conformant};

    use super::*;

    fn charge(method_type: &str, amount: &str, details: Value) -> Result<Outcome, PluginError> {
        ManualPlugin.charge(ChargeRequest {
            tenant: "acme".into(),
            idempotency_key: "k1".into(),
            amount: Decimal::from_str(amount).unwrap(),
            currency: "AUD".into(),
            method_type: method_type.into(),
            config: json!({}),
            details,
            description: None,
        })
    }

    fn succeeded(reference: Option<&str>) -> Result<Outcome, PluginError> {
        Ok(Outcome::Succeeded { reference: reference.map(str::to_owned) })
    }

    #[test]
    fn conforms_for_every_method_type() {
        let details = [
            ("CHEQUE", json!({"cheque_number": "000123"})),
            ("DIRECT_DEPOSIT", json!({"reference": "INV-0042"})),
            ("EFTPOS", json!({})),
            ("CASH", json!(null)),
            ("OTHER", json!({"note": "voucher"})),
        ];
        for (method_type, details) in details {
            let sample = ConformanceSample::new(method_type, json!({}), json!({"api_key": "x"}), details);
            assert_conformant(&ManualPlugin, &sample);
        }
    }

    #[test]
    fn null_config_is_accepted_like_an_empty_object() {
        let sample = ConformanceSample::new("CASH", Value::Null, json!([]), json!({}));
        assert_conformant(&ManualPlugin, &sample);
    }

    #[test]
    fn config_other_than_empty_is_invalid_config() {
        for config in [json!({"x": 1}), json!([]), json!("none"), json!(0), json!(false)] {
            let error = ManualPlugin.validate_config(&config).unwrap_err();
            assert_eq!(error.code, "INVALID_CONFIG", "config {config}");
        }
    }

    #[test]
    fn a_cheque_needs_1_to_20_digits() {
        let cases = [
            (json!({"cheque_number": "1"}), Some("1"), "one digit"),
            (json!({"cheque_number": "00001234"}), Some("00001234"), "leading zeros are kept"),
            (json!({"cheque_number": " 4567 "}), Some("4567"), "surrounding spaces ignored"),
            (json!({"cheque_number": "12345678901234567890"}), Some("12345678901234567890"), "twenty digits"),
            (json!({"cheque_number": "123456789012345678901"}), None, "twenty-one digits"),
            (json!({"cheque_number": ""}), None, "empty"),
            (json!({"cheque_number": "   "}), None, "blank"),
            (json!({"cheque_number": "12a4"}), None, "a letter"),
            (json!({"cheque_number": "12-34"}), None, "a dash"),
            (json!({"cheque_number": "１２３"}), None, "non-ASCII digits"),
            (json!({"cheque_number": 1234}), None, "a JSON number"),
            (json!({"cheque_number": null}), None, "null"),
            (json!({}), None, "missing"),
            (json!(null), None, "no details"),
        ];
        for (details, expected, why) in cases {
            let outcome = charge("CHEQUE", "10.00", details);
            match expected {
                Some(number) => assert_eq!(outcome, succeeded(Some(number)), "{why}"),
                None => {
                    let error = outcome.expect_err(why);
                    assert_eq!(error.code, "INVALID_DETAILS", "{why}");
                    assert!(error.message.contains("cheque_number"), "{why}: the message names the field: {}", error.message);
                }
            }
        }
    }

    #[test]
    fn a_direct_deposit_reference_is_optional_and_at_most_64_characters() {
        let long_ok = "é".repeat(64);
        let cases = [
            (json!({"reference": "SMITH J INV42"}), Ok(Some("SMITH J INV42")), "a reference"),
            (json!({"reference": long_ok}), Ok(Some(long_ok.as_str())), "64 characters (not bytes)"),
            (json!({"reference": "x".repeat(65)}), Err("at most 64"), "65 characters"),
            (json!({"reference": 42}), Err("must be a string"), "a number"),
            (json!({"reference": "  "}), Ok(None), "blank is none"),
            (json!({"reference": null}), Ok(None), "null is none"),
            (json!({}), Ok(None), "missing is none"),
        ];
        for (details, expected, why) in cases {
            let outcome = charge("DIRECT_DEPOSIT", "10.00", details);
            match expected {
                Ok(reference) => assert_eq!(outcome, succeeded(reference), "{why}"),
                Err(text) => {
                    let error = outcome.expect_err(why);
                    assert_eq!(error.code, "INVALID_DETAILS", "{why}");
                    assert!(error.message.contains(text), "{why}: {}", error.message);
                }
            }
        }
    }

    #[test]
    fn other_types_record_without_a_reference() {
        for method_type in ["EFTPOS", "CASH", "OTHER"] {
            assert_eq!(charge(method_type, "0.01", json!({"anything": true})), succeeded(None), "{method_type}");
        }
    }

    #[test]
    fn a_non_positive_amount_is_invalid_details() {
        for amount in ["0", "0.00", "-5.00"] {
            let error = charge("CASH", amount, json!({})).unwrap_err();
            assert_eq!(error.code, "INVALID_DETAILS", "amount {amount}");
            assert!(error.message.contains("positive"), "{}", error.message);
        }
    }

    #[test]
    fn card_payments_are_not_manual() {
        assert_eq!(charge("CARD", "10.00", json!({})).unwrap_err().code, "UNSUPPORTED");
    }

    #[test]
    fn refunds_succeed_and_status_is_unknown() {
        let refund = RefundRequest {
            tenant: "acme".into(),
            idempotency_key: "r1".into(),
            amount: Decimal::from_str("5.00").unwrap(),
            currency: "AUD".into(),
            charge_reference: String::new(),
            config: json!({}),
        };
        assert_eq!(ManualPlugin.refund(refund.clone()), succeeded(None));
        let zero = RefundRequest { amount: Decimal::ZERO, ..refund };
        assert_eq!(ManualPlugin.refund(zero).unwrap_err().code, "INVALID_DETAILS");
        for operation in [Operation::Charge, Operation::Refund] {
            let status = StatusRequest { tenant: "acme".into(), idempotency_key: "k1".into(), operation, config: json!({}) };
            assert_eq!(ManualPlugin.status(status), Ok(Outcome::Unknown));
        }
    }
}
