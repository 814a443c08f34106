//! Scalars: `Amount` (an exact decimal, always a string) and `Date` (a calendar date).
//!
//! Amounts are parsed here, at the edge, so no resolver sees a raw amount string. JSON numbers
//! are refused: a float such as 0.1 cannot be trusted to mean exactly 0.1 (M1). Precision against
//! the currency (M2) is checked by the ledger once the currency is known. A refused amount carries
//! its error code (INVALID_AMOUNT, AMOUNT_TOO_PRECISE) in the error's extensions, which
//! async-graphql keeps on its way to the response (`InputValueError::into_server_error`).

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::error::{AppError, ErrorCode};
use crate::ledger::money::parse_decimal;

/// An exact decimal amount written as a string, such as "120.50".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(pub Decimal);

/// An exact decimal amount written as a string, such as "120.50". JSON numbers are refused.
#[Scalar(name = "Amount")]
impl ScalarType for Amount {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(text) => parse_decimal(&text).map(Amount).map_err(|e| refused(AppError::from(e))),
            // Not reached through the schema: validation refuses every value but a string first,
            // by `is_valid` (see `errors::finish_errors`).
            _ => Err(refused(AppError::new(ErrorCode::InvalidAmount, "amounts are strings such as \"120.50\", never JSON numbers"))),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(_))
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

/// The parse error of an amount, with its code.
fn refused(error: AppError) -> InputValueError<Amount> {
    InputValueError::custom(error.message).with_extension("code", error.code.as_str())
}

impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.normalize().to_string())
    }
}

/// A calendar date, "YYYY-MM-DD".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date(pub NaiveDate);

/// A calendar date written "YYYY-MM-DD" (ISO 8601), with no time or timezone.
#[Scalar(name = "Date")]
impl ScalarType for Date {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) if text.len() == 10 => NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(Date)
                .map_err(|_| InputValueError::custom(format!("{text:?} is not a date such as 2026-03-31"))),
            _ => Err(InputValueError::custom("dates are strings such as \"2026-03-31\"")),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}

impl serde::Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.format("%Y-%m-%d").to_string())
    }
}
