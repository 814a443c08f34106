//! The rules of Settle (shared domain rules M*, I*, ...) as plain Rust.
//!
//! This module decides; it never performs I/O, never reads the clock and never knows how records
//! are stored or shown. Callers load what a decision needs, pass it in (with "now" or "today"),
//! and persist what comes back.

pub mod account;
pub mod as_of;
pub mod audit_chain;
pub mod credit_note;
pub mod invoice;
pub mod journal;
#[cfg(test)]
mod model_tests;
pub mod money;
pub mod numbering;
pub mod payment;
pub mod proof;
pub mod reports;
pub mod tax;
pub mod tax_rate;

pub use money::{Currency, Money, MoneyError};
