//! Checks that every text input passes at the edge: trimmed, within its length, free of control
//! characters; and decimals that are not money (quantities, percentages).

use rust_decimal::Decimal;

use crate::error::{AppError, AppResult};
use crate::ledger::money::parse_decimal;

/// Longest name (client, contact, location, tax rate) accepted.
pub const NAME_MAX_CHARS: usize = 200;
/// Longest free text (line description, practitioner, reason) accepted.
pub const TEXT_MAX_CHARS: usize = 1000;
/// Longest invoice notes accepted.
pub const NOTES_MAX_CHARS: usize = 4000;

/// Trims and checks a required text field.
pub fn required_text(field: &str, value: &str, max: usize) -> AppResult<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(AppError::invalid(format!("{field} is required")));
    }
    checked_length(field, value, max)
}

/// Trims an optional text field; blank means absent.
pub fn optional_text(field: &str, value: Option<&str>, max: usize) -> AppResult<Option<String>> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(value) => checked_length(field, value, max).map(Some),
    }
}

fn checked_length(field: &str, value: &str, max: usize) -> AppResult<String> {
    if value.chars().count() > max {
        return Err(AppError::invalid(format!("{field} is longer than {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(AppError::invalid(format!("{field} contains control characters")));
    }
    Ok(value.to_owned())
}

/// A decimal that is not money: a quantity or a percentage.
pub fn plain_decimal(field: &str, value: &str) -> AppResult<Decimal> {
    parse_decimal(value.trim()).map_err(|_| AppError::invalid(format!("{field} must be a decimal such as 1.5, not {value:?}")))
}
