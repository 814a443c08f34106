//! The export macro as a plugin crate uses it, called the way a host calls a loaded library:
//! through the exported functions, the table's raw `extern "C"` entries and its `free_buffer`.

use std::str::FromStr;

use serde_json::{Value, json};
use settle_plugin::abi::{Buffer, CALL_ERROR, CALL_OK, CALL_PANIC, CallFn, PluginVTable, Reply};
use settle_plugin::{
    ABI_VERSION, Capability, ChargeRequest, Decimal, Manifest, Outcome, PROTOCOL_VERSION, PaymentMethodPlugin, PluginError,
    RefundRequest, StatusRequest,
};

#[derive(Default)]
struct Echo;

impl PaymentMethodPlugin for Echo {
    fn manifest(&self) -> Manifest {
        Manifest {
            id: "echo".into(),
            name: "Echo".into(),
            version: "0.0.1".into(),
            protocol_version: PROTOCOL_VERSION,
            capabilities: vec![Capability::Charge],
            currencies: vec!["AUD".into()],
            method_types: vec!["OTHER".into()],
            config_schema: json!({"type": "object"}),
        }
    }
    fn validate_config(&self, config: &Value) -> Result<(), PluginError> {
        if config.is_object() { Ok(()) } else { Err(PluginError::invalid_config("config must be an object")) }
    }
    fn charge(&self, request: ChargeRequest) -> Result<Outcome, PluginError> {
        if request.details["panic"] == json!(true) {
            panic!("echo was told to panic");
        }
        Ok(Outcome::Succeeded { reference: Some(format!("{}:{}", request.idempotency_key, request.amount)) })
    }
    fn refund(&self, _: RefundRequest) -> Result<Outcome, PluginError> {
        Err(PluginError::unsupported("echo does not refund"))
    }
    fn status(&self, _: StatusRequest) -> Result<Outcome, PluginError> {
        Ok(Outcome::Unknown)
    }
}

settle_plugin::export_plugin!(Echo::default);

fn vtable() -> &'static PluginVTable {
    // SAFETY: the macro returns a pointer to a static table.
    unsafe { &*settle_plugin_vtable() }
}

/// Calls one entry as a host does: empty output buffer in, copy out, free with the table's own
/// `free_buffer`.
fn call(entry: CallFn, input: &[u8]) -> (i32, Value) {
    let mut output = Buffer::empty();
    // SAFETY: input is alive for the call; output points at a writable buffer.
    let code = unsafe { entry(input.as_ptr(), input.len(), &mut output) };
    // SAFETY: the buffer was just written by the plugin.
    let bytes = unsafe { output.as_slice() }.to_vec();
    // SAFETY: freed once, by the table it came from.
    unsafe { (vtable().free_buffer)(output) };
    (code, serde_json::from_slice(&bytes).expect("every answer is JSON"))
}

fn charge_json(details: Value) -> Vec<u8> {
    serde_json::to_vec(&ChargeRequest {
        tenant: "t".into(),
        idempotency_key: "k1".into(),
        amount: Decimal::from_str("12.30").unwrap(),
        currency: "AUD".into(),
        method_type: "OTHER".into(),
        config: json!({}),
        details,
        description: None,
    })
    .unwrap()
}

#[test]
fn the_abi_version_is_exported_and_repeated_in_the_table() {
    assert_eq!(settle_plugin_abi_version(), ABI_VERSION);
    assert_eq!(vtable().abi_version, ABI_VERSION);
    assert_eq!(settle_plugin_vtable(), settle_plugin_vtable(), "one static table");
}

#[test]
fn manifest_takes_no_input_and_answers_ok() {
    let (code, answer) = call(vtable().manifest, b"");
    assert_eq!(code, CALL_OK);
    let manifest: Reply<Manifest> = serde_json::from_value(answer).unwrap();
    assert_eq!(manifest.into_result().unwrap().id, "echo");
}

#[test]
fn validate_config_answers_null_or_an_error() {
    assert_eq!(call(vtable().validate_config, b"{}"), (CALL_OK, json!({"ok": null})));
    assert_eq!(
        call(vtable().validate_config, b"[1]"),
        (CALL_ERROR, json!({"error": {"code": "INVALID_CONFIG", "message": "config must be an object"}}))
    );
}

#[test]
fn charge_answers_an_outcome_with_the_amount_as_a_string() {
    let (code, answer) = call(vtable().charge, &charge_json(json!({})));
    assert_eq!(code, CALL_OK);
    assert_eq!(answer, json!({"ok": {"status": "SUCCEEDED", "reference": "k1:12.30"}}));
}

#[test]
fn plugin_errors_come_back_as_call_error() {
    let refund = json!({"tenant": "t", "idempotency_key": "r", "amount": "1.00", "currency": "AUD", "charge_reference": "x", "config": {}});
    let (code, answer) = call(vtable().refund, refund.to_string().as_bytes());
    assert_eq!(code, CALL_ERROR);
    assert_eq!(answer["error"]["code"], "UNSUPPORTED");
}

#[test]
fn malformed_input_is_invalid_request() {
    for input in [&b"{not json"[..], b"", br#"{"tenant": "t"}"#, br#"{"tenant":"t","idempotency_key":"k","amount":12.3,"currency":"AUD","method_type":"OTHER","config":{},"details":{}}"#] {
        let (code, answer) = call(vtable().charge, input);
        assert_eq!(code, CALL_ERROR, "input {:?}", String::from_utf8_lossy(input));
        assert_eq!(answer["error"]["code"], "INVALID_REQUEST", "input {:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn a_panic_is_caught_and_reported() {
    let (code, answer) = call(vtable().charge, &charge_json(json!({"panic": true})));
    assert_eq!(code, CALL_PANIC);
    assert_eq!(answer, json!({"error": {"code": "PANIC", "message": "echo was told to panic"}}));
    // The plugin still answers afterwards.
    assert_eq!(call(vtable().charge, &charge_json(json!({}))).0, CALL_OK);
}

#[test]
fn a_null_output_pointer_is_refused_without_writing() {
    let input = b"{}";
    // SAFETY: a null output is part of the contract: refused, nothing written.
    let code = unsafe { (vtable().validate_config)(input.as_ptr(), input.len(), std::ptr::null_mut()) };
    assert_eq!(code, CALL_ERROR);
}

#[test]
fn a_null_input_pointer_with_a_length_is_invalid_request() {
    let mut output = Buffer::empty();
    // SAFETY: the plugin must not read through a null pointer.
    let code = unsafe { (vtable().charge)(std::ptr::null(), 10, &mut output) };
    let bytes = unsafe { output.as_slice() }.to_vec();
    unsafe { (vtable().free_buffer)(output) };
    assert_eq!(code, CALL_ERROR);
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer["error"]["code"], "INVALID_REQUEST");
}

#[test]
fn freeing_the_empty_buffer_is_harmless() {
    // SAFETY: the empty buffer needs no freeing and may be passed anyway.
    unsafe { (vtable().free_buffer)(Buffer::empty()) };
}

#[test]
fn calls_from_many_threads_at_once() {
    let handles: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(|| (0..50).all(|_| call(vtable().charge, &charge_json(json!({}))).0 == CALL_OK)))
        .collect();
    assert!(handles.into_iter().all(|h| h.join().unwrap()));
}
