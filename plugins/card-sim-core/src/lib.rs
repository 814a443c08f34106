//! The logic of Settle's `card-sim` payment-method plugin, a card gateway in test mode, as a Rust
//! type without C exports.
//!
//! It behaves like a real card gateway, with a real gateway's awkward parts (declines, a call
//! that never answers, idempotent retries, partial refunds), but moves no money and calls no
//! network: the "gateway" is in-memory state inside the plugin, kept for the life of the process,
//! or a file that several processes share (see "A gateway shared by several processes").
//!
//! # Configuration
//!
//! ```json
//! {"merchant_id": "m_123", "api_key": "sk_test_abc"}
//! ```
//!
//! `merchant_id` is a non-empty string; `api_key` is a secret (marked `"secret": true` in the
//! schema) and must be a test key, starting with `sk_test_`. No other fields are allowed.
//!
//! # Test card numbers
//!
//! Charges take `details.card_number`, 16 digits (spaces allowed between them):
//!
//! | card number | outcome |
//! |---|---|
//! | `4242424242424242` | SUCCEEDED, reference `ch_sim_<n>` |
//! | `4000000000009995` | DECLINED "insufficient funds" |
//! | `4000000000000069` | DECLINED "card expired" |
//! | `4000000000000259` | never answers: the charge is recorded as SUCCEEDED at once, then the call sleeps `details.hang_ms` milliseconds (default 60000) before answering, so the host's timeout fires; a later `status` (or a retry with the same key) answers SUCCEEDED |
//! | any other 16 digits | DECLINED "card not supported in test mode" |
//! | anything else | error INVALID_DETAILS |
//!
//! Only the `CARD` method type is served; any currency is taken; the amount must be positive.
//!
//! # Idempotency, refunds and status
//!
//! Outcomes are kept per (tenant, idempotency key), one table for charges and one for refunds: a
//! retried key returns the first outcome (declines included) without charging again, even if
//! the retry's details differ. Errors (bad config or details) are not kept, so a corrected retry
//! is decided afresh.
//!
//! A refund names a SUCCEEDED charge of the same tenant by its `ch_sim_<n>` reference and must be
//! in its currency; refunds of one charge may add up to the charged amount and no more (more is
//! DECLINED "refund exceeds charge"). Succeeded refunds have references `re_sim_<n>`.
//!
//! `status` answers the kept outcome of the charge or refund with that key, or UNKNOWN.
//!
//! All of this sits behind one mutex, so concurrent calls (the host makes them) cannot refund a
//! charge twice over; the lock is never held while a call sleeps.
//!
//! # A gateway shared by several processes
//!
//! A real gateway outlives the process that called it, and every Settle process of a practice
//! talks to the same one. With the environment variable `SETTLE_CARD_SIM_GATEWAY_FILE` set to a
//! path, card-sim keeps its memory in that JSON file instead: every call takes an exclusive lock
//! on `<path>.lock`, reads the file, and writes it back (to `<path>.tmp`, then renamed) before
//! answering. Several Settle processes started with the same path then see one gateway: a
//! charge made through one answers `status` asked by another, and it survives restarts. Without
//! the variable (the default) nothing touches the disk.
//!
//! # Why this crate has no C exports
//!
//! This is the plugin's logic, as the plain [`PaymentMethodPlugin`] value [`CardSimPlugin`]: the
//! *core* that both of its uses are built from. Settle links it into its own binary as a
//! built-in, next to other plugins; the loadable library, the `cdylib` crate
//! `settle-plugin-card-sim` (`plugins/card-sim`), only exports it over the C ABI with
//! [`settle_plugin::export_plugin!`]. The exports live there and not here because two crates that
//! define them cannot both be linked into one binary (the symbols would be duplicates).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use settle_plugin::{
    Capability, ChargeRequest, Manifest, Operation, Outcome, PROTOCOL_VERSION, PaymentMethodPlugin, PluginError,
    RefundRequest, StatusRequest,
};

/// The manifest id, which payment methods refer to.
pub const ID: &str = "card-sim";

/// The prefix every accepted `api_key` has.
pub const TEST_KEY_PREFIX: &str = "sk_test_";

/// How long the never-answering card sleeps when `details.hang_ms` is not given, in milliseconds.
pub const DEFAULT_HANG_MS: u64 = 60_000;

/// The test card numbers and what they do (see the crate documentation).
pub mod cards {
    /// Succeeds.
    pub const SUCCEEDS: &str = "4242424242424242";
    /// Declines "insufficient funds".
    pub const INSUFFICIENT_FUNDS: &str = "4000000000009995";
    /// Declines "card expired".
    pub const EXPIRED: &str = "4000000000000069";
    /// Records a success, then does not answer for `details.hang_ms` (default 60 s).
    pub const NEVER_ANSWERS: &str = "4000000000000259";
}

/// The environment variable naming the file of a gateway shared by several processes.
pub const GATEWAY_FILE_VAR: &str = "SETTLE_CARD_SIM_GATEWAY_FILE";

/// The plugin: a simulated gateway and its memory.
#[derive(Debug, Default)]
pub struct CardSimPlugin {
    /// The gateway's memory when it is this process's own; with a shared file, only the lock
    /// that keeps this process's calls one at a time (the file lock orders the processes).
    state: Mutex<State>,
    /// The file of a gateway shared by several processes, if any.
    shared: Option<PathBuf>,
}

/// A charge's or refund's key: its tenant and idempotency key, as one string (a JSON array, so
/// no tenant and key pair can be mistaken for another).
type Key = String;

fn key(tenant: &str, idempotency_key: &str) -> Key {
    json!([tenant, idempotency_key]).to_string()
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Charge outcomes by (tenant, idempotency key).
    charges: HashMap<Key, Outcome>,
    /// Refund outcomes by (tenant, idempotency key).
    refunds: HashMap<Key, Outcome>,
    /// Succeeded charges by reference.
    ledger: HashMap<String, Charged>,
    charges_made: u64,
    refunds_made: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Charged {
    tenant: String,
    amount: Decimal,
    currency: String,
    refunded: Decimal,
}

impl CardSimPlugin {
    /// The gateway of this process, or the shared one when [`GATEWAY_FILE_VAR`] names a file.
    pub fn from_env() -> CardSimPlugin {
        match std::env::var_os(GATEWAY_FILE_VAR) {
            Some(path) if !path.is_empty() => CardSimPlugin::shared(PathBuf::from(path)),
            _ => CardSimPlugin::default(),
        }
    }

    /// A gateway whose memory is the file at `path`, shared with every process given the same.
    pub fn shared(path: PathBuf) -> CardSimPlugin {
        CardSimPlugin { state: Mutex::default(), shared: Some(path) }
    }

    /// Runs `change` on the gateway's memory, alone: no other call of this process, nor of any
    /// process sharing the file, reads or writes it meanwhile.
    fn with_state<T>(&self, change: impl FnOnce(&mut State) -> T) -> Result<T, PluginError> {
        // A panic while holding the lock leaves the maps consistent (every write is one insert),
        // so a poisoned lock is still usable.
        let mut own = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(path) = &self.shared else { return Ok(change(&mut own)) };
        with_shared_state(path, change).map_err(|e| PluginError::gateway(format!("the shared test gateway at {}: {e}", path.display())))
    }
}

/// [`CardSimPlugin::with_state`] for a shared file: the file lock is released when `lock` is
/// dropped, after the new state is in place.
fn with_shared_state<T>(path: &Path, change: impl FnOnce(&mut State) -> T) -> std::io::Result<T> {
    let suffixed = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(suffixed(".lock"))?;
    lock.lock()?;
    let mut state: State = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
        Err(e) => return Err(e),
    };
    let answer = change(&mut state);
    // Written aside and renamed, so a process killed mid-write leaves the previous state whole.
    let temporary = suffixed(".tmp");
    std::fs::write(&temporary, serde_json::to_vec(&state).map_err(std::io::Error::other)?)?;
    std::fs::rename(&temporary, path)?;
    drop(lock);
    Ok(answer)
}

impl PaymentMethodPlugin for CardSimPlugin {
    fn manifest(&self) -> Manifest {
        Manifest {
            id: ID.to_owned(),
            name: "Card gateway (test mode)".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol_version: PROTOCOL_VERSION,
            capabilities: vec![Capability::Charge, Capability::Refund, Capability::Status],
            currencies: Vec::new(),
            method_types: vec!["CARD".to_owned()],
            config_schema: json!({
                "type": "object",
                "required": ["merchant_id", "api_key"],
                "properties": {
                    "merchant_id": {
                        "type": "string",
                        "minLength": 1,
                        "title": "Merchant ID",
                        "description": "The merchant account at the gateway."
                    },
                    "api_key": {
                        "type": "string",
                        "pattern": "^sk_test_",
                        "secret": true,
                        "title": "API key",
                        "description": "A test-mode secret key, starting with sk_test_."
                    }
                },
                "additionalProperties": false
            }),
        }
    }

    fn validate_config(&self, config: &Value) -> Result<(), PluginError> {
        let Some(fields) = config.as_object() else {
            return Err(PluginError::invalid_config("the configuration must be an object with merchant_id and api_key"));
        };
        if let Some(unknown) = fields.keys().find(|k| !["merchant_id", "api_key"].contains(&k.as_str())) {
            return Err(PluginError::invalid_config(format!("unknown configuration field {unknown:?}")));
        }
        match fields.get("merchant_id") {
            Some(Value::String(id)) if !id.trim().is_empty() => {}
            Some(Value::String(_)) => return Err(PluginError::invalid_config("merchant_id is empty")),
            Some(_) => return Err(PluginError::invalid_config("merchant_id must be a string")),
            None => return Err(PluginError::invalid_config("merchant_id is required")),
        }
        // Never echo the key itself: it is a secret.
        match fields.get("api_key") {
            Some(Value::String(key)) if key.starts_with(TEST_KEY_PREFIX) => Ok(()),
            Some(Value::String(_)) => Err(PluginError::invalid_config(format!(
                "api_key must be a test-mode key starting with {TEST_KEY_PREFIX}"
            ))),
            Some(_) => Err(PluginError::invalid_config("api_key must be a string")),
            None => Err(PluginError::invalid_config("api_key is required")),
        }
    }

    fn charge(&self, request: ChargeRequest) -> Result<Outcome, PluginError> {
        self.validate_config(&request.config)?;
        let key = key(&request.tenant, &request.idempotency_key);
        if let Some(first) = self.with_state(|state| state.charges.get(&key).cloned())? {
            return Ok(first);
        }
        if request.method_type != "CARD" {
            return Err(PluginError::unsupported(format!("card-sim takes CARD payments, not {:?}", request.method_type)));
        }
        positive(request.amount)?;
        let card = card_number(&request.details)?;
        let hang = hang_ms(&request.details)?;

        let (outcome, first_time) = self.with_state(|state| {
            // Checked again under the lock that records: a concurrent call with the same key may
            // have decided in the meantime.
            if let Some(first) = state.charges.get(&key) {
                return (first.clone(), false);
            }
            let outcome = match card.as_str() {
                cards::SUCCEEDS | cards::NEVER_ANSWERS => {
                    state.charges_made += 1;
                    let reference = format!("ch_sim_{}", state.charges_made);
                    state.ledger.insert(
                        reference.clone(),
                        Charged {
                            tenant: request.tenant.clone(),
                            amount: request.amount,
                            currency: request.currency.clone(),
                            refunded: Decimal::ZERO,
                        },
                    );
                    Outcome::Succeeded { reference: Some(reference) }
                }
                cards::INSUFFICIENT_FUNDS => declined("insufficient funds"),
                cards::EXPIRED => declined("card expired"),
                _ => declined("card not supported in test mode"),
            };
            state.charges.insert(key.clone(), outcome.clone());
            (outcome, true)
        })?;

        if first_time && card == cards::NEVER_ANSWERS {
            // The gateway took the money but the answer is lost in the network: the host times
            // out and must find out through `status`.
            std::thread::sleep(Duration::from_millis(hang));
        }
        Ok(outcome)
    }

    fn refund(&self, request: RefundRequest) -> Result<Outcome, PluginError> {
        self.validate_config(&request.config)?;
        let key = key(&request.tenant, &request.idempotency_key);
        let amount = request.amount;
        if let Some(first) = self.with_state(|state| state.refunds.get(&key).cloned())? {
            return Ok(first);
        }
        positive(amount)?;
        self.with_state(|state| {
            if let Some(first) = state.refunds.get(&key) {
                return first.clone();
            }
            let outcome = match state.ledger.get_mut(&request.charge_reference) {
                Some(charge) if charge.tenant == request.tenant => {
                    if charge.currency != request.currency {
                        declined(&format!("refund currency {} differs from the charge's {}", request.currency, charge.currency))
                    } else if charge.refunded + amount > charge.amount {
                        declined("refund exceeds charge")
                    } else {
                        charge.refunded += amount;
                        state.refunds_made += 1;
                        Outcome::Succeeded { reference: Some(format!("re_sim_{}", state.refunds_made)) }
                    }
                }
                // Another tenant's charge is as unknown as one that never happened.
                _ => declined("unknown charge reference"),
            };
            state.refunds.insert(key.clone(), outcome.clone());
            outcome
        })
    }

    fn status(&self, request: StatusRequest) -> Result<Outcome, PluginError> {
        self.validate_config(&request.config)?;
        let key = key(&request.tenant, &request.idempotency_key);
        self.with_state(|state| {
            let table = match request.operation {
                Operation::Charge => &state.charges,
                Operation::Refund => &state.refunds,
            };
            table.get(&key).cloned().unwrap_or(Outcome::Unknown)
        })
    }
}

fn declined(reason: &str) -> Outcome {
    Outcome::Declined { reason: reason.to_owned() }
}

fn positive(amount: Decimal) -> Result<(), PluginError> {
    if amount > Decimal::ZERO {
        Ok(())
    } else {
        Err(PluginError::invalid_details(format!("the amount must be positive, got {amount}")))
    }
}

/// `details.card_number`: 16 digits, spaces between them ignored.
fn card_number(details: &Value) -> Result<String, PluginError> {
    let number = match details.get("card_number") {
        Some(Value::String(number)) => number.chars().filter(|c| *c != ' ').collect::<String>(),
        Some(_) => return Err(PluginError::invalid_details("details.card_number must be a string of 16 digits")),
        None => return Err(PluginError::invalid_details("a card payment needs details.card_number")),
    };
    if number.len() != 16 || !number.bytes().all(|b| b.is_ascii_digit()) {
        // Never echo a card number, even a malformed one.
        return Err(PluginError::invalid_details("details.card_number must be 16 digits"));
    }
    Ok(number)
}

/// `details.hang_ms`: how long the never-answering card sleeps; a non-negative integer.
fn hang_ms(details: &Value) -> Result<u64, PluginError> {
    match details.get("hang_ms") {
        None | Some(Value::Null) => Ok(DEFAULT_HANG_MS),
        Some(value) => value
            .as_u64()
            .ok_or_else(|| PluginError::invalid_details("details.hang_ms must be a whole number of milliseconds")),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::sync::Arc;
    use std::time::Instant;

    use settle_plugin::testing::{ConformanceSample, assert_conformant};

    use super::*;

    fn config() -> Value {
        json!({"merchant_id": "m_1", "api_key": "sk_test_123"})
    }

    fn dec(amount: &str) -> Decimal {
        Decimal::from_str(amount).unwrap()
    }

    fn charge_request(tenant: &str, key: &str, amount: &str, details: Value) -> ChargeRequest {
        ChargeRequest {
            tenant: tenant.into(),
            idempotency_key: key.into(),
            amount: dec(amount),
            currency: "AUD".into(),
            method_type: "CARD".into(),
            config: config(),
            details,
            description: None,
        }
    }

    fn card(number: &str) -> Value {
        json!({"card_number": number})
    }

    fn refund_request(tenant: &str, key: &str, amount: &str, reference: &str) -> RefundRequest {
        RefundRequest {
            tenant: tenant.into(),
            idempotency_key: key.into(),
            amount: dec(amount),
            currency: "AUD".into(),
            charge_reference: reference.into(),
            config: config(),
        }
    }

    fn status(plugin: &CardSimPlugin, tenant: &str, key: &str, operation: Operation) -> Outcome {
        plugin
            .status(StatusRequest { tenant: tenant.into(), idempotency_key: key.into(), operation, config: config() })
            .unwrap()
    }

    fn succeeded(reference: &str) -> Outcome {
        Outcome::Succeeded { reference: Some(reference.into()) }
    }

    #[test]
    fn conforms() {
        let sample = ConformanceSample::new("CARD", config(), json!({"merchant_id": "m_1"}), card(cards::SUCCEEDS));
        let plugin = CardSimPlugin::default();
        assert_conformant(&plugin, &sample);
        assert_conformant(&plugin, &sample); // twice on one instance: fresh keys, fresh charges
    }

    #[test]
    fn config_needs_a_merchant_and_a_test_key() {
        let plugin = CardSimPlugin::default();
        assert_eq!(plugin.validate_config(&config()), Ok(()));
        let cases = [
            (json!(null), "an object"),
            (json!({"api_key": "sk_test_1"}), "merchant_id is required"),
            (json!({"merchant_id": " ", "api_key": "sk_test_1"}), "merchant_id is empty"),
            (json!({"merchant_id": 7, "api_key": "sk_test_1"}), "merchant_id must be a string"),
            (json!({"merchant_id": "m"}), "api_key is required"),
            (json!({"merchant_id": "m", "api_key": "sk_live_SECRET"}), "test-mode key"),
            (json!({"merchant_id": "m", "api_key": 1}), "api_key must be a string"),
            (json!({"merchant_id": "m", "api_key": "sk_test_1", "region": "au"}), "unknown configuration field"),
        ];
        for (config, text) in cases {
            let error = plugin.validate_config(&config).unwrap_err();
            assert_eq!(error.code, "INVALID_CONFIG", "{config}");
            assert!(error.message.contains(text), "{config}: {}", error.message);
            assert!(!error.message.contains("SECRET"), "a key is never echoed: {}", error.message);
        }
        let mut request = charge_request("t", "k", "1.00", card(cards::SUCCEEDS));
        request.config = json!({"merchant_id": "m", "api_key": "nope"});
        assert_eq!(plugin.charge(request).unwrap_err().code, "INVALID_CONFIG", "charges check the config too");
    }

    #[test]
    fn the_api_key_is_marked_secret() {
        assert_eq!(CardSimPlugin::default().manifest().secret_fields(), vec!["api_key".to_owned()]);
    }

    #[test]
    fn each_test_card_gives_its_documented_outcome() {
        let plugin = CardSimPlugin::default();
        let cases = [
            (cards::SUCCEEDS, succeeded("ch_sim_1")),
            ("4242 4242 4242 4242", succeeded("ch_sim_2")),
            (cards::INSUFFICIENT_FUNDS, declined("insufficient funds")),
            (cards::EXPIRED, declined("card expired")),
            ("5555555555554444", declined("card not supported in test mode")),
            ("0000000000000000", declined("card not supported in test mode")),
        ];
        for (i, (number, expected)) in cases.into_iter().enumerate() {
            let outcome = plugin.charge(charge_request("t", &format!("k{i}"), "10.00", card(number))).unwrap();
            assert_eq!(outcome, expected, "card {number}");
        }
    }

    #[test]
    fn malformed_details_are_invalid_details() {
        let plugin = CardSimPlugin::default();
        let cases = [
            json!({}),
            json!(null),
            card("424242424242424"),
            card("42424242424242424"),
            card("4242-4242-4242-4242"),
            card("abcdabcdabcdabcd"),
            json!({"card_number": 4242424242424242u64}),
            json!({"card_number": cards::NEVER_ANSWERS, "hang_ms": -1}),
            json!({"card_number": cards::NEVER_ANSWERS, "hang_ms": "soon"}),
        ];
        for (i, details) in cases.into_iter().enumerate() {
            let error = plugin.charge(charge_request("t", &format!("k{i}"), "10.00", details.clone())).unwrap_err();
            assert_eq!(error.code, "INVALID_DETAILS", "{details}");
            assert_eq!(status(&plugin, "t", &format!("k{i}"), Operation::Charge), Outcome::Unknown, "errors are not kept");
        }
        for amount in ["0", "-1.00"] {
            let error = plugin.charge(charge_request("t", "amount", amount, card(cards::SUCCEEDS))).unwrap_err();
            assert_eq!(error.code, "INVALID_DETAILS", "amount {amount}");
        }
        let mut eftpos = charge_request("t", "eftpos", "1.00", card(cards::SUCCEEDS));
        eftpos.method_type = "EFTPOS".into();
        assert_eq!(plugin.charge(eftpos).unwrap_err().code, "UNSUPPORTED");
    }

    #[test]
    fn a_retried_key_returns_the_first_outcome_without_charging_again() {
        let plugin = CardSimPlugin::default();
        let first = plugin.charge(charge_request("t", "k", "10.00", card(cards::SUCCEEDS))).unwrap();
        let retry = plugin.charge(charge_request("t", "k", "99.00", card(cards::EXPIRED))).unwrap();
        assert_eq!(retry, first, "same key, first outcome, even with other details");
        let declined_first = plugin.charge(charge_request("t", "d", "10.00", card(cards::EXPIRED))).unwrap();
        let declined_retry = plugin.charge(charge_request("t", "d", "10.00", card(cards::SUCCEEDS))).unwrap();
        assert_eq!(declined_retry, declined_first, "a decline is kept too");
        let other_tenant = plugin.charge(charge_request("u", "k", "10.00", card(cards::SUCCEEDS))).unwrap();
        assert_eq!(other_tenant, succeeded("ch_sim_2"), "keys are per tenant; only two charges were made");
    }

    #[test]
    fn concurrent_retries_of_one_key_charge_once() {
        let plugin = Arc::new(CardSimPlugin::default());
        let outcomes: Vec<Outcome> = (0..8)
            .map(|_| {
                let plugin = plugin.clone();
                std::thread::spawn(move || plugin.charge(charge_request("t", "same", "10.00", card(cards::SUCCEEDS))).unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert!(outcomes.iter().all(|o| *o == succeeded("ch_sim_1")), "{outcomes:?}");
        assert_eq!(plugin.with_state(|state| state.charges_made).unwrap(), 1);
    }

    #[test]
    fn gateways_sharing_a_file_are_one_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.json");
        // Two processes' gateways; each a separate open of the file, as across processes.
        let (one, two) = (Arc::new(CardSimPlugin::shared(path.clone())), Arc::new(CardSimPlugin::shared(path.clone())));
        let outcomes: Vec<Outcome> = (0..8)
            .map(|i| {
                let plugin = if i % 2 == 0 { one.clone() } else { two.clone() };
                std::thread::spawn(move || plugin.charge(charge_request("t", "same", "100.00", card(cards::SUCCEEDS))).unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert!(outcomes.iter().all(|o| *o == succeeded("ch_sim_1")), "one charge across both: {outcomes:?}");
        assert_eq!(status(&two, "t", "same", Operation::Charge), succeeded("ch_sim_1"), "the other process knows it");

        // Refunds of one charge add up to its amount across both, and no more.
        let refund = |plugin: &CardSimPlugin, key: &str, amount: &str| {
            plugin
                .refund(RefundRequest {
                    tenant: "t".into(),
                    idempotency_key: key.into(),
                    charge_reference: "ch_sim_1".into(),
                    amount: dec(amount),
                    currency: "AUD".into(),
                    config: config(),
                })
                .unwrap()
        };
        assert_eq!(refund(&one, "r1", "60.00"), Outcome::Succeeded { reference: Some("re_sim_1".into()) });
        assert_eq!(refund(&two, "r2", "60.00"), declined("refund exceeds charge"));
        assert_eq!(status(&one, "t", "r2", Operation::Refund), declined("refund exceeds charge"));

        // A gateway started later on the same file remembers all of it.
        let restarted = CardSimPlugin::shared(path);
        assert_eq!(restarted.with_state(|state| (state.charges_made, state.refunds_made)).unwrap(), (1, 1));
        assert_eq!(restarted.charge(charge_request("t", "next", "5.00", card(cards::SUCCEEDS))).unwrap(), succeeded("ch_sim_2"));
    }

    #[test]
    fn the_never_answering_card_is_known_to_status_while_it_hangs() {
        let plugin = Arc::new(CardSimPlugin::default());
        let details = json!({"card_number": cards::NEVER_ANSWERS, "hang_ms": 3000});
        let hanging = {
            let plugin = plugin.clone();
            let details = details.clone();
            std::thread::spawn(move || plugin.charge(charge_request("t", "hang", "10.00", details)).unwrap())
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while status(&plugin, "t", "hang", Operation::Charge) == Outcome::Unknown {
            assert!(Instant::now() < deadline, "the charge was never recorded");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!hanging.is_finished(), "the charge is still hanging");
        assert_eq!(status(&plugin, "t", "hang", Operation::Charge), succeeded("ch_sim_1"));
        let started = Instant::now();
        let retry = plugin.charge(charge_request("t", "hang", "10.00", details)).unwrap();
        assert_eq!(retry, succeeded("ch_sim_1"));
        assert!(started.elapsed() < Duration::from_secs(1), "a retry answers at once from the record");
        assert_eq!(hanging.join().unwrap(), succeeded("ch_sim_1"), "when it finally answers, it is the same outcome");
    }

    #[test]
    fn the_never_answering_card_sleeps_for_hang_ms() {
        let plugin = CardSimPlugin::default();
        let started = Instant::now();
        let details = json!({"card_number": cards::NEVER_ANSWERS, "hang_ms": 200});
        assert_eq!(plugin.charge(charge_request("t", "k", "1.00", details)).unwrap(), succeeded("ch_sim_1"));
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn refunds_add_up_to_the_charge_and_no_more() {
        let plugin = CardSimPlugin::default();
        plugin.charge(charge_request("t", "c", "100.00", card(cards::SUCCEEDS))).unwrap();
        let steps = [
            ("r1", "60.00", succeeded("re_sim_1")),
            ("r2", "40.01", declined("refund exceeds charge")),
            ("r3", "40.00", succeeded("re_sim_2")),
            ("r4", "0.01", declined("refund exceeds charge")),
        ];
        for (key, amount, expected) in steps {
            assert_eq!(plugin.refund(refund_request("t", key, amount, "ch_sim_1")).unwrap(), expected, "refund {key} of {amount}");
        }
        assert_eq!(plugin.with_state(|state| state.ledger["ch_sim_1"].refunded).unwrap(), dec("100.00"));
    }

    #[test]
    fn a_refund_needs_a_succeeded_charge_of_the_tenant_in_its_currency() {
        let plugin = CardSimPlugin::default();
        plugin.charge(charge_request("t", "c", "10.00", card(cards::SUCCEEDS))).unwrap();
        plugin.charge(charge_request("t", "d", "10.00", card(cards::EXPIRED))).unwrap();
        let unknown = declined("unknown charge reference");
        assert_eq!(plugin.refund(refund_request("t", "r1", "1.00", "ch_sim_9")).unwrap(), unknown, "never made");
        assert_eq!(plugin.refund(refund_request("t", "r2", "1.00", "")).unwrap(), unknown, "declined charges have none");
        assert_eq!(plugin.refund(refund_request("u", "r3", "1.00", "ch_sim_1")).unwrap(), unknown, "another tenant's");
        let mut nzd = refund_request("t", "r4", "1.00", "ch_sim_1");
        nzd.currency = "NZD".into();
        assert_eq!(plugin.refund(nzd).unwrap(), declined("refund currency NZD differs from the charge's AUD"));
        assert_eq!(plugin.refund(refund_request("t", "r5", "0", "ch_sim_1")).unwrap_err().code, "INVALID_DETAILS");
        assert_eq!(plugin.refund(refund_request("t", "r6", "10.00", "ch_sim_1")).unwrap(), succeeded("re_sim_1"));
    }

    #[test]
    fn refunds_are_idempotent_and_known_to_status() {
        let plugin = CardSimPlugin::default();
        plugin.charge(charge_request("t", "c", "10.00", card(cards::SUCCEEDS))).unwrap();
        let first = plugin.refund(refund_request("t", "r", "10.00", "ch_sim_1")).unwrap();
        let retry = plugin.refund(refund_request("t", "r", "10.00", "ch_sim_1")).unwrap();
        assert_eq!((first.clone(), retry), (succeeded("re_sim_1"), succeeded("re_sim_1")), "not refunded twice");
        assert_eq!(status(&plugin, "t", "r", Operation::Refund), first);
        assert_eq!(status(&plugin, "t", "r", Operation::Charge), Outcome::Unknown, "charges and refunds are apart");
        assert_eq!(status(&plugin, "t", "c", Operation::Charge), succeeded("ch_sim_1"));
        assert_eq!(status(&plugin, "u", "c", Operation::Charge), Outcome::Unknown, "keys are per tenant");
    }

    #[test]
    fn concurrent_refunds_never_exceed_the_charge() {
        let plugin = Arc::new(CardSimPlugin::default());
        plugin.charge(charge_request("t", "c", "10.00", card(cards::SUCCEEDS))).unwrap();
        let succeeded = (0..16)
            .map(|i| {
                let plugin = plugin.clone();
                std::thread::spawn(move || plugin.refund(refund_request("t", &format!("r{i}"), "1.00", "ch_sim_1")).unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|o| matches!(o, Outcome::Succeeded { .. }))
            .count();
        assert_eq!(succeeded, 10, "ten refunds of 1.00 fit into 10.00");
    }
}
