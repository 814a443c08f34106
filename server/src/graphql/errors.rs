//! Errors as a GraphQL client sees them: `extensions.code` from [`ErrorCode`], a message a person
//! can act on, `extensions.retryable` and `extensions.requestId`.

use async_graphql::{ErrorExtensions, ServerError};

use crate::error::{AppError, ErrorCode};

impl From<AppError> for async_graphql::Error {
    fn from(error: AppError) -> Self {
        let code = error.code;
        async_graphql::Error::new(error.message).extend_with(|_, extensions| {
            extensions.set("code", code.as_str());
            extensions.set("retryable", code.retryable());
        })
    }
}

/// Messages may quote what a client sent (a file name, a field value): control characters in
/// them are written as escapes, so a message never carries a raw newline, escape sequence or NUL
/// into a client's screen or log.
fn printable(message: &str) -> String {
    message.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Gives every error of a response a code and the request id; see also [`printable`]. Errors raised by the GraphQL engine
/// itself (syntax, unknown fields, limits, input values of the wrong type) carry no code yet:
/// a malformed Amount becomes INVALID_AMOUNT, the rest QUERY_REJECTED.
pub fn finish_errors(errors: &mut [ServerError], request_id: &str) -> Vec<ErrorCode> {
    let mut codes = Vec::with_capacity(errors.len());
    for error in errors.iter_mut() {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        let code = match extensions.get("code") {
            Some(async_graphql::Value::String(code)) => {
                ErrorCode::ALL.iter().copied().find(|c| c.as_str() == code).unwrap_or(ErrorCode::Internal)
            }
            _ => {
                let code = if error.message.contains("\"Amount\"") && error.message.contains("more decimal places") {
                    ErrorCode::AmountTooPrecise
                } else if error.message.contains("\"Amount\"") {
                    ErrorCode::InvalidAmount
                } else {
                    ErrorCode::QueryRejected
                };
                extensions.set("code", code.as_str());
                extensions.set("retryable", false);
                code
            }
        };
        extensions.set("requestId", request_id);
        if error.message.contains(char::is_control) {
            error.message = printable(&error.message);
        }
        codes.push(code);
    }
    codes
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_in_messages_are_escaped() {
        assert_eq!(super::printable("lib\u{1b}[31mx\n.so\u{0}"), "lib\\u{1b}[31mx\\n.so\\u{0}");
        assert_eq!(super::printable("plain, ünïcode"), "plain, ünïcode");
    }
}
