//! Errors as a GraphQL client sees them: `extensions.code` from [`ErrorCode`], a message a person
//! can act on, `extensions.retryable` and `extensions.requestId`.

use async_graphql::{ErrorExtensions, ServerError};

use crate::error::{AppError, ErrorCode};

/// The cause of an error, carried to [`finish_errors`] to be logged with the request id.
struct Cause(String);

impl From<AppError> for async_graphql::Error {
    fn from(error: AppError) -> Self {
        let code = error.code;
        let mut converted = async_graphql::Error::new(error.message).extend_with(|_, extensions| {
            extensions.set("code", code.as_str());
            extensions.set("retryable", code.retryable());
        });
        if let Some(cause) = error.cause {
            converted.source = Some(std::sync::Arc::new(Cause(cause)));
        }
        converted
    }
}

/// A state read from the database or a plugin's manifest that this Settle does not know. Settle
/// writes only the values its schema's ASSERTs (and the plugin SDK's manifest check) allow, so
/// another value is a defect or a database written by something else: logged with where it was
/// found, and INTERNAL for the client rather than a guess.
pub fn unknown_state(found_in: &str, field: &str, value: &str) -> AppError {
    AppError::internal(format!("{found_in} has {field} {value:?}, which this Settle does not know"))
}

/// Messages may quote what a client sent (a file name, a field value): control characters in
/// them are written as escapes, so a message never carries a raw newline, escape sequence or NUL
/// into a client's screen or log.
fn printable(message: &str) -> String {
    message.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Gives every error of a response a code, whether retrying can help, and the request id; see
/// also [`printable`]. Resolvers' errors and refused Amount values carry their code; errors
/// raised by the GraphQL engine itself (syntax, unknown fields, limits, input values of the wrong
/// type) carry none and become QUERY_REJECTED, except an Amount of the wrong JSON type.
pub fn finish_errors(errors: &mut [ServerError], request_id: &str) -> Vec<ErrorCode> {
    let mut codes = Vec::with_capacity(errors.len());
    for error in errors.iter_mut() {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        let code = match extensions.get("code") {
            Some(async_graphql::Value::String(code)) => {
                ErrorCode::ALL.iter().copied().find(|c| c.as_str() == code).unwrap_or(ErrorCode::Internal)
            }
            _ => {
                let code = if is_amount_of_wrong_type(&error.message) { ErrorCode::InvalidAmount } else { ErrorCode::QueryRejected };
                extensions.set("code", code.as_str());
                code
            }
        };
        extensions.set("retryable", code.retryable());
        extensions.set("requestId", request_id);
        if let Some(Cause(cause)) = error.source.as_deref().and_then(|source| source.downcast_ref::<Cause>()) {
            if code == ErrorCode::Internal {
                tracing::error!(request_id, code = code.as_str(), cause, "request failed");
            } else {
                tracing::warn!(request_id, code = code.as_str(), cause, "request failed");
            }
        }
        if error.message.contains(char::is_control) {
            error.message = printable(&error.message);
        }
        codes.push(code);
    }
    codes
}

/// Whether async-graphql's validation refused a value given for an Amount: a JSON number, or
/// null where an amount is required. Validation checks a scalar with its `is_valid` before any
/// parsing, and reports a value that fails as a message only (its `RuleError` has no extensions:
/// async-graphql 7.2.1, `validation/utils.rs`, `is_valid_input_value`), so this one case is known
/// by the wording async-graphql gives it: `Invalid value for argument "<path>", expected type
/// "Amount"`. An amount string that does not parse carries its code from the scalar instead.
fn is_amount_of_wrong_type(message: &str) -> bool {
    message.ends_with(", expected type \"Amount\"")
}

#[cfg(test)]
mod tests {
    /// Codes of amounts refused by validation (wrong JSON type) and by the Amount scalar, and of
    /// other refusals by the engine, as async-graphql really words and carries them. Every case
    /// fails before a resolver runs, so the schema needs no state.
    #[tokio::test]
    async fn engine_errors_get_codes_from_extensions_and_amounts_of_the_wrong_type_are_known() {
        use serde_json::json;

        use crate::error::ErrorCode;

        let schema = super::super::build_schema(None, &crate::config::Settings::defaults().limits);
        let apply = "mutation($amount: Amount!) { applyPayment(id: \"p\", invoiceId: \"i\", amount: $amount, idempotencyKey: \"k\") { allocation { id } } }";
        let discount = "mutation { createInvoice(idempotencyKey: \"k\", input: {clientId: \"c\", locationId: \"l\", lines: [{description: \"x\", unitPrice: \"1\", discount: {type: Amount, value: \"1\"}}]}) { invoice { id } } }";
        let cases = [
            (apply, json!({"amount": 10.5}), ErrorCode::InvalidAmount, "a JSON number, refused by validation"),
            (apply, json!({"amount": null}), ErrorCode::InvalidAmount, "null for a required amount, refused by validation"),
            (apply, json!({"amount": "1e3"}), ErrorCode::InvalidAmount, "a string that is not a plain decimal, refused by the scalar"),
            (apply, json!({"amount": "0.0000000000000000000001"}), ErrorCode::AmountTooPrecise, "more places than any currency, refused by the scalar"),
            (discount, json!({}), ErrorCode::QueryRejected, "an unknown enum value, although it reads \"Amount\""),
            ("query { nothing }", json!({}), ErrorCode::QueryRejected, "an unknown field"),
        ];
        for (query, variables, code, why) in cases {
            let request = async_graphql::Request::new(query).variables(async_graphql::Variables::from_json(variables));
            let mut response = schema.execute(request).await;
            let codes = super::finish_errors(&mut response.errors, "request");
            assert_eq!(codes, vec![code], "{why}: {:?}", response.errors);
            let extensions = response.errors[0].extensions.as_ref().unwrap();
            assert_eq!(extensions.get("retryable"), Some(&async_graphql::Value::Boolean(false)), "{why}");
            assert_eq!(extensions.get("requestId"), Some(&async_graphql::Value::from("request")), "{why}");
        }
    }

    #[test]
    fn control_characters_in_messages_are_escaped() {
        assert_eq!(super::printable("lib\u{1b}[31mx\n.so\u{0}"), "lib\\u{1b}[31mx\\n.so\\u{0}");
        assert_eq!(super::printable("plain, ünïcode"), "plain, ünïcode");
    }
}
