//! Tax rates (Entities: Tax rate): which rates a line may take, and which rates may change.

use crate::error::{AppError, AppResult, ErrorCode};

/// Tax rates: an archived rate cannot be chosen for a new line; a line that had it before the
/// rate was archived keeps it. `uses` counts the lines of the draft with this rate so far (this
/// one included) and `had_it` the lines that had it before the edit; `line` is 1-based.
pub fn check_rate_choice(archived: bool, uses: usize, had_it: usize, line: usize, name: &str) -> AppResult<()> {
    if archived && uses > had_it {
        return Err(AppError::new(ErrorCode::TaxRateArchived, format!("line {line}: tax rate '{name}' is archived; choose an active rate")));
    }
    Ok(())
}

/// Tax rates: system rates cannot be edited or archived; custom ones can.
pub fn check_rate_change(system: bool) -> AppResult<()> {
    if system {
        return Err(AppError::new(ErrorCode::TaxRateSystem, "system tax rates cannot be edited or archived; create a custom rate instead"));
    }
    Ok(())
}
