//! The conformance checks every plugin should pass, for plugin authors' own unit tests.
//!
//! The checks call the plugin through [`abi::dispatch`], the code path
//! behind every exported entry, so they see the same JSON bytes, return codes and caught panics a
//! host would. They need no host, no network and no library loading:
//!
//! ```ignore
//! #[test]
//! fn conforms() {
//!     let sample = ConformanceSample::new(
//!         "CARD",
//!         json!({"merchant_id": "m_1", "api_key": "sk_test_1"}), // accepted
//!         json!({"merchant_id": "m_1"}),                          // rejected
//!         json!({"card_number": "4242424242424242"}),             // a charge that succeeds
//!     );
//!     settle_plugin::testing::assert_conformant(&MyPlugin::default(), &sample);
//! }
//! ```
//!
//! Settle's `settle plugin check PATH` runs the same contract against a built library.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use rust_decimal::Decimal;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::abi::{self, CALL_ERROR, CALL_OK, CALL_PANIC, Method, Reply};
use crate::{
    Capability, ChargeRequest, Manifest, Operation, Outcome, PaymentMethodPlugin, PluginError, RefundRequest,
    StatusRequest,
};

/// What the checks need to know about a plugin to exercise it.
#[derive(Debug, Clone)]
pub struct ConformanceSample {
    /// The tenant the sample operations run for.
    pub tenant: String,
    /// A method type from the manifest to charge with.
    pub method_type: String,
    /// A currency the plugin takes.
    pub currency: String,
    /// The amount to charge and then refund; positive.
    pub amount: Decimal,
    /// A configuration `validate_config` must accept; also sent with every request.
    pub good_config: Value,
    /// A configuration `validate_config` must reject with `INVALID_CONFIG`.
    pub bad_config: Value,
    /// Details with which a charge succeeds.
    pub succeeding_details: Value,
}

impl ConformanceSample {
    /// A sample charging 10.00 AUD for the tenant "conformance".
    pub fn new(method_type: &str, good_config: Value, bad_config: Value, succeeding_details: Value) -> ConformanceSample {
        ConformanceSample {
            tenant: "conformance".to_owned(),
            method_type: method_type.to_owned(),
            currency: "AUD".to_owned(),
            amount: Decimal::from_str("10.00").expect("a decimal literal"),
            good_config,
            bad_config,
            succeeding_details,
        }
    }
}

/// Runs the conformance checks and returns every problem found, in words (empty = conformant):
///
/// 1. the manifest is sane ([`Manifest::problems`]: id, name, version, protocol version,
///    capabilities, method types, currencies, schema), stable across calls, and covers the
///    sample's method type and currency;
/// 2. `validate_config` accepts `good_config` and rejects `bad_config` with `INVALID_CONFIG`;
/// 3. a charge with `succeeding_details` succeeds, and repeating it with the same idempotency
///    key returns the same outcome;
/// 4. with the refund capability, a refund of that charge succeeds, and repeating it returns the
///    same outcome;
/// 5. with the status capability, status answers the charge's (and refund's) outcome for their
///    keys, and UNKNOWN for a key never used.
///
/// Every call goes through the JSON ABI path, so a panic, a wrong return code or an answer that
/// does not parse is reported as a problem rather than failing the test outright.
pub fn check_plugin(plugin: &dyn PaymentMethodPlugin, sample: &ConformanceSample) -> Vec<String> {
    let mut problems = Vec::new();
    let caller = Caller { plugin };

    // 1. The manifest.
    let manifest: Manifest = match caller.call(Method::Manifest, None::<&()>) {
        Ok(Ok(manifest)) => manifest,
        Ok(Err(error)) => {
            problems.push(format!("manifest: returned an error: {error}"));
            return problems;
        }
        Err(problem) => {
            problems.push(format!("manifest: {problem}"));
            return problems;
        }
    };
    problems.extend(manifest.problems());
    match caller.call::<Manifest>(Method::Manifest, None::<&()>) {
        Ok(Ok(again)) if again == manifest => {}
        _ => problems.push("manifest: a second call gave a different answer".to_owned()),
    }
    if !manifest.method_types.contains(&sample.method_type) {
        problems.push(format!("manifest: method_types {:?} do not include the sample's {:?}", manifest.method_types, sample.method_type));
    }
    if !manifest.accepts_currency(&sample.currency) {
        problems.push(format!("manifest: currencies {:?} do not include the sample's {:?}", manifest.currencies, sample.currency));
    }

    // 2. Configuration.
    match caller.call::<Value>(Method::ValidateConfig, Some(&sample.good_config)) {
        Ok(Ok(Value::Null)) => {}
        Ok(Ok(other)) => problems.push(format!("validate_config: answered {other} for a good config, not null")),
        Ok(Err(error)) => problems.push(format!("validate_config: rejected the good config {}: {error}", sample.good_config)),
        Err(problem) => problems.push(format!("validate_config: {problem}")),
    }
    match caller.call::<Value>(Method::ValidateConfig, Some(&sample.bad_config)) {
        Ok(Ok(_)) => problems.push(format!("validate_config: accepted the bad config {}", sample.bad_config)),
        Ok(Err(error)) if error.code != PluginError::INVALID_CONFIG => {
            problems.push(format!("validate_config: rejected the bad config with {error}, not INVALID_CONFIG"))
        }
        Ok(Err(_)) => {}
        Err(problem) => problems.push(format!("validate_config: {problem}")),
    }

    // 3. A charge, and its retry.
    let charge = ChargeRequest {
        tenant: sample.tenant.clone(),
        idempotency_key: fresh_key("charge"),
        amount: sample.amount,
        currency: sample.currency.clone(),
        method_type: sample.method_type.clone(),
        config: sample.good_config.clone(),
        details: sample.succeeding_details.clone(),
        description: Some("Settle conformance check".to_owned()),
    };
    let charged = match caller.call::<Outcome>(Method::Charge, Some(&charge)) {
        Ok(Ok(outcome @ Outcome::Succeeded { .. })) => outcome,
        Ok(Ok(other)) => {
            problems.push(format!("charge: with the succeeding details gave {other:?}, not SUCCEEDED"));
            return problems;
        }
        Ok(Err(error)) => {
            problems.push(format!("charge: with the succeeding details failed: {error}"));
            return problems;
        }
        Err(problem) => {
            problems.push(format!("charge: {problem}"));
            return problems;
        }
    };
    match caller.call::<Outcome>(Method::Charge, Some(&charge)) {
        Ok(Ok(again)) if again == charged => {}
        Ok(Ok(again)) => problems.push(format!("charge: repeating the idempotency key gave {again:?}, the first call {charged:?}")),
        Ok(Err(error)) => problems.push(format!("charge: repeating the idempotency key failed: {error}")),
        Err(problem) => problems.push(format!("charge: repeating the idempotency key: {problem}")),
    }

    // 4. A refund of it, and its retry.
    let mut refunded = None;
    if manifest.has(Capability::Refund) {
        let reference = match &charged {
            Outcome::Succeeded { reference } => reference.clone().unwrap_or_default(),
            _ => String::new(),
        };
        let refund = RefundRequest {
            tenant: sample.tenant.clone(),
            idempotency_key: fresh_key("refund"),
            amount: sample.amount,
            currency: sample.currency.clone(),
            charge_reference: reference,
            config: sample.good_config.clone(),
        };
        match caller.call::<Outcome>(Method::Refund, Some(&refund)) {
            Ok(Ok(outcome @ Outcome::Succeeded { .. })) => {
                match caller.call::<Outcome>(Method::Refund, Some(&refund)) {
                    Ok(Ok(again)) if again == outcome => {}
                    Ok(Ok(again)) => problems.push(format!("refund: repeating the idempotency key gave {again:?}, the first call {outcome:?}")),
                    Ok(Err(error)) => problems.push(format!("refund: repeating the idempotency key failed: {error}")),
                    Err(problem) => problems.push(format!("refund: repeating the idempotency key: {problem}")),
                }
                refunded = Some((refund.idempotency_key, outcome));
            }
            Ok(Ok(other)) => problems.push(format!("refund: of the sample charge gave {other:?}, not SUCCEEDED")),
            Ok(Err(error)) => problems.push(format!("refund: of the sample charge failed: {error}")),
            Err(problem) => problems.push(format!("refund: {problem}")),
        }
    }

    // 5. Status look-ups.
    if manifest.has(Capability::Status) {
        let mut lookups = vec![(Operation::Charge, charge.idempotency_key.clone(), charged.clone())];
        if let Some((key, outcome)) = refunded {
            lookups.push((Operation::Refund, key, outcome));
        }
        lookups.push((Operation::Charge, fresh_key("never-used"), Outcome::Unknown));
        for (operation, key, expected) in lookups {
            let request = StatusRequest {
                tenant: sample.tenant.clone(),
                idempotency_key: key,
                operation,
                config: sample.good_config.clone(),
            };
            match caller.call::<Outcome>(Method::Status, Some(&request)) {
                Ok(Ok(outcome)) if outcome == expected => {}
                Ok(Ok(outcome)) => problems.push(format!(
                    "status: for {operation:?} key {} gave {outcome:?}, expected {expected:?}",
                    request.idempotency_key
                )),
                Ok(Err(error)) => problems.push(format!("status: for {operation:?} key {} failed: {error}", request.idempotency_key)),
                Err(problem) => problems.push(format!("status: {problem}")),
            }
        }
    }

    problems
}

/// [`check_plugin`], panicking with the list of problems if there are any.
pub fn assert_conformant(plugin: &dyn PaymentMethodPlugin, sample: &ConformanceSample) {
    let problems = check_plugin(plugin, sample);
    assert!(problems.is_empty(), "the plugin does not conform:\n- {}", problems.join("\n- "));
}

/// An idempotency key no earlier check (in this process) used.
fn fresh_key(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("conformance-{what}-{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

struct Caller<'a> {
    plugin: &'a dyn PaymentMethodPlugin,
}

impl Caller<'_> {
    /// One call through the ABI path. The outer error is a protocol problem (panic, wrong code,
    /// unreadable answer); the inner one is the plugin's own error.
    fn call<T: DeserializeOwned>(&self, method: Method, input: Option<&impl Serialize>) -> Result<Result<T, PluginError>, String> {
        let input = match input {
            Some(input) => serde_json::to_vec(input).map_err(|e| format!("the request could not be encoded: {e}"))?,
            None => Vec::new(),
        };
        let (code, bytes) = abi::dispatch(|| self.plugin, method, &input);
        let text = String::from_utf8_lossy(&bytes);
        let reply: Reply<Value> =
            serde_json::from_slice(&bytes).map_err(|e| format!("answered {text:?}, which is not the answer envelope: {e}"))?;
        match (code, reply) {
            (CALL_OK, Reply::Ok(value)) => serde_json::from_value(value.clone())
                .map(Ok)
                .map_err(|e| format!("answered {value}, which is not the expected shape: {e}")),
            (CALL_ERROR, Reply::Error(error)) => Ok(Err(error)),
            (CALL_PANIC, Reply::Error(error)) => Err(format!("panicked: {}", error.message)),
            (code, _) => Err(format!("returned code {code} with the answer {text}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::PROTOCOL_VERSION;

    /// A small, correct plugin: remembers outcomes by key.
    #[derive(Default)]
    struct Good {
        charges: Mutex<HashMap<(String, String), Outcome>>,
    }

    impl PaymentMethodPlugin for Good {
        fn manifest(&self) -> Manifest {
            Manifest {
                id: "good".into(),
                name: "Good".into(),
                version: "1.0.0".into(),
                protocol_version: PROTOCOL_VERSION,
                capabilities: vec![Capability::Charge, Capability::Refund, Capability::Status],
                currencies: vec![],
                method_types: vec!["OTHER".into()],
                config_schema: json!({"type": "object"}),
            }
        }
        fn validate_config(&self, config: &Value) -> Result<(), PluginError> {
            if config.get("ok") == Some(&json!(true)) { Ok(()) } else { Err(PluginError::invalid_config("ok must be true")) }
        }
        fn charge(&self, request: ChargeRequest) -> Result<Outcome, PluginError> {
            let mut charges = self.charges.lock().unwrap();
            let n = charges.len();
            Ok(charges
                .entry((request.tenant, request.idempotency_key))
                .or_insert_with(|| Outcome::Succeeded { reference: Some(format!("g_{n}")) })
                .clone())
        }
        fn refund(&self, _: RefundRequest) -> Result<Outcome, PluginError> {
            Ok(Outcome::Succeeded { reference: None })
        }
        fn status(&self, request: StatusRequest) -> Result<Outcome, PluginError> {
            let charges = self.charges.lock().unwrap();
            Ok(match request.operation {
                Operation::Charge => charges.get(&(request.tenant, request.idempotency_key)).cloned().unwrap_or(Outcome::Unknown),
                Operation::Refund => Outcome::Succeeded { reference: None },
            })
        }
    }

    fn sample() -> ConformanceSample {
        ConformanceSample::new("OTHER", json!({"ok": true}), json!({"ok": false}), json!({}))
    }

    #[test]
    fn a_correct_plugin_conforms() {
        assert_conformant(&Good::default(), &sample());
    }

    /// A plugin that forgets idempotency keys: every charge is new.
    struct Forgetful(Good);

    impl PaymentMethodPlugin for Forgetful {
        fn manifest(&self) -> Manifest {
            self.0.manifest()
        }
        fn validate_config(&self, _: &Value) -> Result<(), PluginError> {
            Ok(())
        }
        fn charge(&self, mut request: ChargeRequest) -> Result<Outcome, PluginError> {
            request.idempotency_key.push_str(&fresh_key("x"));
            self.0.charge(request)
        }
        fn refund(&self, _: RefundRequest) -> Result<Outcome, PluginError> {
            panic!("refund is broken")
        }
        fn status(&self, request: StatusRequest) -> Result<Outcome, PluginError> {
            self.0.status(request)
        }
    }

    #[test]
    fn a_broken_plugin_gets_each_fault_named() {
        let problems = check_plugin(&Forgetful(Good::default()), &sample());
        let expect = [
            ("validate_config: accepted the bad config", "bad config accepted"),
            ("charge: repeating the idempotency key gave", "idempotency not kept"),
            ("refund: panicked: refund is broken", "panic reported, not propagated"),
            ("status: for Charge key", "status does not know the charge"),
        ];
        for (needle, why) in expect {
            assert!(problems.iter().any(|p| p.contains(needle)), "{why}: no problem containing {needle:?} in {problems:#?}");
        }
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    }
}
