//! `settle plugin check PATH`: loads a plugin library the way the server does and runs the plugin
//! contract against it, so an author can test a plugin before installing it.

use std::path::Path;

use rust_decimal::Decimal;
use settle_plugin::{Capability, ChargeRequest, Manifest, Operation, Outcome, RefundRequest, StatusRequest};

use super::library::{Entry, PluginLibrary};
use super::{CallError, check_manifest};

/// Inputs for the round trip: the plugin's configuration and the details of a charge that
/// should succeed.
pub struct CheckInput {
    pub config: serde_json::Value,
    pub details: serde_json::Value,
    pub method_type: Option<String>,
    pub currency: String,
}

/// One step of the check and how it went.
pub struct Step {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

fn call<T: serde::de::DeserializeOwned>(library: &PluginLibrary, entry: Entry, input: &impl serde::Serialize) -> Result<T, CallError> {
    let bytes = serde_json::to_vec(input).map_err(|e| CallError::Malformed(e.to_string()))?;
    let value = library.call(entry, &bytes)?;
    serde_json::from_value(value).map_err(|e| CallError::Malformed(format!("answer of the wrong shape: {e}")))
}

/// Runs every step it can; a step that cannot run after an earlier failure is skipped.
pub fn run(path: &Path, input: &CheckInput) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut step = |name: &'static str, result: Result<String, String>| {
        let passed = result.is_ok();
        steps.push(Step { name, passed, detail: result.unwrap_or_else(|e| e) });
        passed
    };
    let library = match PluginLibrary::load(path) {
        Ok(library) => {
            step("loads, ABI version and symbols", Ok(format!("{}", path.display())));
            library
        }
        Err(reason) => {
            step("loads, ABI version and symbols", Err(reason));
            return steps;
        }
    };
    let manifest: Manifest = match call::<Manifest>(&library, Entry::Manifest, &serde_json::Value::Null)
        .map_err(|e| e.to_string())
        .and_then(|m| check_manifest(&m).map(|()| m))
    {
        Ok(manifest) => {
            step("manifest", Ok(format!("{} {} ({})", manifest.id, manifest.version, manifest.name)));
            manifest
        }
        Err(reason) => {
            step("manifest", Err(reason));
            return steps;
        }
    };
    step(
        "accepts the given configuration",
        call::<serde_json::Value>(&library, Entry::ValidateConfig, &input.config).map(|_| "accepted".into()).map_err(|e| e.to_string()),
    );
    step(
        "refuses a nonsense configuration without panicking",
        match call::<serde_json::Value>(&library, Entry::ValidateConfig, &serde_json::json!(["not", "a", "config"])) {
            Err(CallError::Plugin(error)) => Ok(format!("refused: {}", error.code)),
            Ok(_) => Ok("accepted (the plugin takes any configuration)".into()),
            Err(other) => Err(other.to_string()),
        },
    );
    step(
        "answers malformed input with an error, not a crash",
        match library.call(Entry::Charge, b"{not json") {
            Err(CallError::Plugin(error)) => Ok(format!("refused: {}", error.code)),
            Err(other) => Err(format!("expected a plugin error, got: {other}")),
            Ok(_) => Err("accepted malformed input".into()),
        },
    );
    if !manifest.capabilities.contains(&Capability::Charge) {
        return steps;
    }
    let key = format!("settle-plugin-check-{}", uuid::Uuid::new_v4());
    let charge = ChargeRequest {
        tenant: "plugin-check".into(),
        idempotency_key: key.clone(),
        amount: Decimal::new(1000, 2),
        currency: input.currency.clone(),
        method_type: input.method_type.clone().or_else(|| manifest.method_types.first().cloned()).unwrap_or_default(),
        config: input.config.clone(),
        details: input.details.clone(),
        description: Some("settle plugin check".into()),
    };
    let first = call::<Outcome>(&library, Entry::Charge, &charge);
    let charged = matches!(first, Ok(Outcome::Succeeded { .. }));
    step("charge 10.00 succeeds", match &first {
        Ok(outcome @ Outcome::Succeeded { .. }) => Ok(format!("{outcome:?}")),
        Ok(other) => Err(format!("{other:?} (give --details of a charge that succeeds)")),
        Err(error) => Err(error.to_string()),
    });
    if !charged {
        return steps;
    }
    step("the same idempotency key gives the same outcome", match call::<Outcome>(&library, Entry::Charge, &charge) {
        Ok(again) if Ok(&again) == first.as_ref() => Ok("same outcome".into()),
        Ok(again) => Err(format!("first {first:?}, then {again:?}")),
        Err(error) => Err(error.to_string()),
    });
    if manifest.capabilities.contains(&Capability::Status) {
        let status = StatusRequest { tenant: charge.tenant.clone(), idempotency_key: key.clone(), operation: Operation::Charge, config: input.config.clone() };
        step("status look-up reports the charge", match call::<Outcome>(&library, Entry::Status, &status) {
            Ok(outcome) if Ok(&outcome) == first.as_ref() => Ok(format!("{outcome:?}")),
            Ok(outcome) => Err(format!("charge said {first:?}, status says {outcome:?}")),
            Err(error) => Err(error.to_string()),
        });
    }
    if manifest.capabilities.contains(&Capability::Refund) {
        let reference = match &first {
            Ok(Outcome::Succeeded { reference }) => reference.clone().unwrap_or_default(),
            _ => String::new(),
        };
        let refund = RefundRequest {
            tenant: charge.tenant.clone(),
            idempotency_key: format!("{key}-refund"),
            amount: Decimal::new(400, 2),
            currency: input.currency.clone(),
            charge_reference: reference,
            config: input.config.clone(),
        };
        step("refund 4.00 of the charge succeeds", match call::<Outcome>(&library, Entry::Refund, &refund) {
            Ok(outcome @ Outcome::Succeeded { .. }) => Ok(format!("{outcome:?}")),
            Ok(other) => Err(format!("{other:?}")),
            Err(error) => Err(error.to_string()),
        });
    }
    steps
}
