//! Money as a client sees it: an amount with its currency, written out to the currency's minor
//! unit. Inputs take amounts as the `Amount` scalar (scalars.rs).

use async_graphql::SimpleObject;
use rust_decimal::Decimal;

/// An amount of one currency. `amount` always has the currency's minor unit: "120.50".
#[derive(SimpleObject, Clone)]
pub struct Money {
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
}

impl Money {
    pub fn of(amount: Decimal, currency: &str) -> Money {
        Money { amount: crate::ledger::money::display_amount(amount, currency), currency: currency.to_owned() }
    }
}
