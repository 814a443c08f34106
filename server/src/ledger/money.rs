//! Exact money (M1, M2, M6): a decimal amount tied to an ISO 4217 currency.
//!
//! Amounts are `rust_decimal::Decimal`, never floats. Parsing rejects anything the currency cannot
//! hold exactly instead of rounding it; arithmetic refuses to mix currencies.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};

/// The largest amount Settle accepts anywhere: ten thousand billion in any currency. It keeps every
/// sum of amounts far inside `Decimal`'s range, so ledger arithmetic cannot overflow.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(0x6FC1_0000, 0x0023_86F2, 0, false, 0); // 10^16

/// A currency Settle can bill in: an active ISO 4217 currency with a minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    pub const AUD: Currency = Currency(iso_currency::Currency::AUD);

    /// Parses a three-letter ISO 4217 code. Funds, precious metals and codes without a minor unit
    /// (XAU, XDR, ...) are refused: they are not money a practice bills in.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let unknown = || MoneyError::UnknownCurrency(code.chars().take(16).collect());
        let currency = iso_currency::Currency::from_code(code).ok_or_else(unknown)?;
        if currency.exponent().is_none() || currency.is_fund() || currency.is_special() {
            return Err(unknown());
        }
        Ok(Currency(currency))
    }

    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point of the currency's minor unit (2 for AUD, 0 for JPY).
    pub fn minor_unit(self) -> u32 {
        u32::from(self.0.exponent().unwrap_or(0))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("'{0}' is not a decimal amount such as 120.50")]
    Malformed(String),
    #[error("{amount} has more decimal places than {currency} allows ({places})")]
    TooPrecise { amount: String, currency: Currency, places: u32 },
    #[error("{0} has more decimal places than any currency has")]
    FarTooPrecise(String),
    #[error("amount {0} is too large")]
    TooLarge(String),
    #[error("amount must be greater than zero")]
    NotPositive,
    #[error("amount must not be negative")]
    Negative,
    #[error("'{0}' is not a currency Settle can bill in")]
    UnknownCurrency(String),
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(Currency, Currency),
}

/// An exact amount of one currency, always at most the currency's minor unit in precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Parses a decimal string such as "120.50" (M2). Exponents, spaces, thousands separators and
    /// more decimal places than the currency's minor unit are refused; nothing is rounded.
    pub fn parse(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let amount = parse_decimal(text)?;
        Money::from_decimal(amount, currency)
    }

    /// Wraps an exact decimal, refusing excess precision (M2) and absurd sizes.
    pub fn from_decimal(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        let amount = amount.normalize();
        if amount.scale() > currency.minor_unit() {
            return Err(MoneyError::TooPrecise {
                amount: amount.to_string(),
                currency,
                places: currency.minor_unit(),
            });
        }
        if amount.abs() > MAX_AMOUNT {
            return Err(MoneyError::TooLarge(amount.to_string()));
        }
        Ok(Money { amount, currency })
    }

    pub fn zero(currency: Currency) -> Money {
        Money { amount: Decimal::ZERO, currency }
    }

    pub fn amount(self) -> Decimal {
        self.amount
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn is_zero(self) -> bool {
        self.amount.is_zero()
    }

    /// A payment, refund or allocation amount in the currency named by `code`: checked for
    /// precision (M2) and sign.
    pub fn positive_in(amount: Decimal, code: &str) -> Result<Money, MoneyError> {
        Money::from_decimal(amount, Currency::parse(code)?)?.require_positive()
    }

    /// Refuses zero and negative amounts: payments, refunds, allocations and credits (M2).
    pub fn require_positive(self) -> Result<Money, MoneyError> {
        if self.amount <= Decimal::ZERO { Err(MoneyError::NotPositive) } else { Ok(self) }
    }

    pub fn require_non_negative(self) -> Result<Money, MoneyError> {
        if self.amount < Decimal::ZERO { Err(MoneyError::Negative) } else { Ok(self) }
    }

    /// Adds two amounts of the same currency (M6).
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        Ok(Money { amount: self.amount + other.amount, currency: self.currency })
    }

    /// Subtracts an amount of the same currency (M6).
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        Ok(Money { amount: self.amount - other.amount, currency: self.currency })
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch(self.currency, other.currency))
        }
    }

    /// The amount written with exactly the currency's minor unit: "120.50", never "120.5".
    pub fn to_plain_string(self) -> String {
        let mut amount = self.amount;
        amount.rescale(self.currency.minor_unit());
        amount.to_string()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_plain_string(), self.currency)
    }
}

/// Writes an amount with its currency's minor unit ("110.00"), for messages and displays; an
/// unknown currency code leaves the amount as it is.
pub fn display_amount(amount: Decimal, currency_code: &str) -> String {
    match Currency::parse(currency_code) {
        Ok(currency) => {
            let mut amount = amount;
            amount.rescale(currency.minor_unit());
            amount.to_string()
        }
        Err(_) => amount.to_string(),
    }
}

/// Rounds to the currency's minor unit, half away from zero (M3). The one rounding rule of Settle:
/// used for tax, percentage discounts and quantity x price, and nowhere else.
pub fn round_to_minor_unit(value: Decimal, currency: Currency) -> Decimal {
    value.round_dp_with_strategy(currency.minor_unit(), RoundingStrategy::MidpointAwayFromZero)
}

/// Parses a plain decimal string: optional '-', digits, optional '.' and digits. Nothing else.
pub fn parse_decimal(text: &str) -> Result<Decimal, MoneyError> {
    let malformed = || MoneyError::Malformed(text.chars().take(40).collect());
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return Err(malformed());
    }
    // Decimal holds 28 significant digits; longer input is either absurd or over-precise.
    if whole.trim_start_matches('0').len() > 20 {
        return Err(MoneyError::TooLarge(text.chars().take(40).collect()));
    }
    if fraction.map_or(0, |f| f.trim_end_matches('0').len()) > 20 {
        return Err(MoneyError::FarTooPrecise(text.chars().take(40).collect()));
    }
    if whole.len() > 40 || fraction.map_or(0, str::len) > 40 {
        return Err(malformed());
    }
    Decimal::from_str(text).map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aud(s: &str) -> Money {
        Money::parse(s, Currency::AUD).unwrap()
    }

    #[test]
    fn m2_rejects_excess_precision_instead_of_rounding() {
        assert!(matches!(Money::parse("10.005", Currency::AUD), Err(MoneyError::TooPrecise { .. })));
        let jpy = Currency::parse("JPY").unwrap();
        assert!(matches!(Money::parse("100.5", jpy), Err(MoneyError::TooPrecise { .. })));
        assert_eq!(Money::parse("100", jpy).unwrap().to_plain_string(), "100");
        // Trailing zeros beyond the minor unit carry no extra precision.
        assert_eq!(aud("10.500").to_plain_string(), "10.50");
        // Nor do leading zeros change the value (docs/rules.md, Money).
        assert_eq!(aud("000000010.00").to_plain_string(), "10.00");
        assert_eq!(aud("0.50").to_plain_string(), "0.50");
    }

    #[test]
    fn m1_parses_only_plain_decimals() {
        for bad in ["", "1e3", " 1", "1,000", "1.", ".5", "--1", "NaN", "0x10", "1.2.3", "+1"] {
            assert!(Money::parse(bad, Currency::AUD).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(aud("0.1").checked_add(aud("0.2")).unwrap(), aud("0.3"));
        assert!(Money::parse("99999999999999999999999", Currency::AUD).is_err());
    }

    #[test]
    fn m2_positive_checks() {
        assert_eq!(aud("0").require_positive(), Err(MoneyError::NotPositive));
        assert_eq!(aud("-1").require_positive(), Err(MoneyError::NotPositive));
        assert!(aud("0.01").require_positive().is_ok());
    }

    #[test]
    fn m6_refuses_mixed_currencies() {
        let nzd = Money::parse("1", Currency::parse("NZD").unwrap()).unwrap();
        assert!(matches!(aud("1").checked_add(nzd), Err(MoneyError::CurrencyMismatch(..))));
    }

    #[test]
    fn currencies_come_from_iso_4217() {
        assert_eq!(Currency::parse("KWD").unwrap().minor_unit(), 3);
        assert!(Currency::parse("XAU").is_err());
        assert!(Currency::parse("ABC").is_err());
        assert!(Currency::parse("aud").is_err());
    }

    #[test]
    fn m3_rounds_half_away_from_zero() {
        let r = |s: &str| round_to_minor_unit(Decimal::from_str(s).unwrap(), Currency::AUD).to_string();
        assert_eq!(r("0.005"), "0.01");
        assert_eq!(r("-0.005"), "-0.01");
        assert_eq!(r("0.0049"), "0.00");
        assert_eq!(r("2.675"), "2.68");
    }

    #[test]
    fn max_amount_is_ten_to_the_sixteen() {
        assert_eq!(MAX_AMOUNT, Decimal::from(10_000_000_000_000_000i64));
    }
}
