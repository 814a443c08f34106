//! Line and invoice totals (M3): quantity x price, less discount, then tax by the tax mode.
//!
//! Every amount is rounded per line, half away from zero, to the currency's minor unit; invoice
//! totals are sums of rounded lines, so a printed invoice always adds up.

use rust_decimal::Decimal;

use super::money::{Currency, Money, MoneyError, round_to_minor_unit};

/// How a practice's prices relate to tax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaxMode {
    /// Prices exclude tax; tax is added on top.
    Exclusive,
    /// Prices include tax; the tax is the part of the price the rate accounts for.
    Inclusive,
    /// No tax is charged, whatever rate a line names.
    None,
}

/// A discount on one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discount {
    /// A fixed amount off the line, in the invoice currency.
    Amount(Decimal),
    /// A percentage (0 to 100) of quantity x price.
    Percent(Decimal),
}

/// What a line needs for its totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineInput {
    pub quantity: Decimal,
    pub unit_price: Decimal,
    pub discount: Option<Discount>,
    /// Tax rate in percent (10 for 10%), when the line is taxable.
    pub tax_percent: Option<Decimal>,
}

/// A line's totals, each rounded to the minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTotals {
    /// quantity x unit price.
    pub gross: Decimal,
    /// The discount taken off `gross`.
    pub discount: Decimal,
    /// Amount excluding tax.
    pub subtotal: Decimal,
    pub tax: Decimal,
    /// What the client pays for this line.
    pub total: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("quantity must be greater than zero")]
    QuantityNotPositive,
    #[error("quantity may have at most 4 decimal places")]
    QuantityTooPrecise,
    #[error("unit price must not be negative")]
    PriceNegative,
    #[error("a discount must be between 0 and the line amount (percentages: 0 to 100)")]
    DiscountOutOfRange,
    #[error("tax rate must be between 0 and 100 percent")]
    TaxRateOutOfRange,
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// Most decimal places a quantity may have (0.25 hours, 1.5 ml, ...).
pub const QUANTITY_PLACES: u32 = 4;
/// Largest quantity on one line; keeps quantity x price inside money's range.
const MAX_QUANTITY: i64 = 1_000_000;

/// Computes one line's totals (M3). `unit_price` and a fixed discount must already be valid money
/// of `currency`.
pub fn line_totals(line: &LineInput, mode: TaxMode, currency: Currency) -> Result<LineTotals, LineError> {
    if line.quantity <= Decimal::ZERO || line.quantity > Decimal::from(MAX_QUANTITY) {
        return Err(LineError::QuantityNotPositive);
    }
    if line.quantity.normalize().scale() > QUANTITY_PLACES {
        return Err(LineError::QuantityTooPrecise);
    }
    if line.unit_price < Decimal::ZERO {
        return Err(LineError::PriceNegative);
    }
    let gross = round_to_minor_unit(line.quantity * line.unit_price, currency);
    let discount = match line.discount {
        None => Decimal::ZERO,
        Some(Discount::Amount(amount)) => amount,
        Some(Discount::Percent(percent)) => {
            if percent < Decimal::ZERO || percent > Decimal::ONE_HUNDRED {
                return Err(LineError::DiscountOutOfRange);
            }
            round_to_minor_unit(gross * percent / Decimal::ONE_HUNDRED, currency)
        }
    };
    if discount < Decimal::ZERO || discount > gross {
        return Err(LineError::DiscountOutOfRange);
    }
    let net = gross - discount;
    let rate = match line.tax_percent {
        Some(rate) if rate < Decimal::ZERO || rate > Decimal::ONE_HUNDRED => {
            return Err(LineError::TaxRateOutOfRange);
        }
        Some(rate) if mode != TaxMode::None => rate,
        _ => Decimal::ZERO,
    };
    let (subtotal, tax) = match mode {
        TaxMode::Exclusive => (net, round_to_minor_unit(net * rate / Decimal::ONE_HUNDRED, currency)),
        TaxMode::Inclusive => {
            let tax = round_to_minor_unit(net * rate / (Decimal::ONE_HUNDRED + rate), currency);
            (net - tax, tax)
        }
        TaxMode::None => (net, Decimal::ZERO),
    };
    let totals = LineTotals { gross, discount, subtotal, tax, total: subtotal + tax };
    Money::from_decimal(totals.total, currency)?;
    Ok(totals)
}

/// An invoice's totals: sums of its rounded lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InvoiceTotals {
    pub discount: Decimal,
    pub subtotal: Decimal,
    pub tax: Decimal,
    pub total: Decimal,
}

pub fn invoice_totals<'a>(lines: impl IntoIterator<Item = &'a LineTotals>) -> InvoiceTotals {
    lines.into_iter().fold(InvoiceTotals::default(), |sum, line| InvoiceTotals {
        discount: sum.discount + line.discount,
        subtotal: sum.subtotal + line.subtotal,
        tax: sum.tax + line.tax,
        total: sum.total + line.total,
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn line(qty: &str, price: &str, discount: Option<Discount>, tax: Option<&str>) -> LineInput {
        LineInput { quantity: d(qty), unit_price: d(price), discount, tax_percent: tax.map(d) }
    }

    fn totals(l: &LineInput, mode: TaxMode) -> (String, String, String) {
        let t = line_totals(l, mode, Currency::AUD).unwrap();
        (t.subtotal.to_string(), t.tax.to_string(), t.total.to_string())
    }

    #[test]
    fn m3_tax_modes_table() {
        // (line, mode, subtotal, tax, total, why)
        let cases = [
            (line("1", "100", None, Some("10")), TaxMode::Exclusive, "100", "10.00", "110.00", "tax added on top"),
            (line("1", "110", None, Some("10")), TaxMode::Inclusive, "100.00", "10.00", "110.00", "tax taken out"),
            (line("1", "110", None, Some("10")), TaxMode::None, "110", "0", "110", "no tax in NONE"),
            (line("3", "33.33", None, Some("10")), TaxMode::Exclusive, "99.99", "10.00", "109.99", "9.999 rounds up"),
            (line("1", "0.05", None, Some("10")), TaxMode::Exclusive, "0.05", "0.01", "0.06", "0.005 rounds away from zero"),
            (line("1.5", "80", Some(Discount::Percent(d("10"))), Some("10")), TaxMode::Exclusive, "108.0", "10.80", "118.80", "percent discount before tax"),
            (line("2", "50", Some(Discount::Amount(d("20"))), None), TaxMode::Exclusive, "80", "0", "80", "fixed discount, untaxed"),
            (line("1", "10", None, Some("15")), TaxMode::Inclusive, "8.70", "1.30", "10.00", "inclusive 15%: 1.304 rounds down"),
        ];
        for (l, mode, subtotal, tax, total, why) in cases {
            let (s, t, tot) = totals(&l, mode);
            assert_eq!(
                (d(&s), d(&t), d(&tot)),
                (d(subtotal), d(tax), d(total)),
                "{why}: {l:?} in {mode:?}"
            );
        }
    }

    #[test]
    fn m3_invoice_total_is_sum_of_rounded_lines() {
        let l = line("1", "0.05", None, Some("10"));
        let each = line_totals(&l, TaxMode::Exclusive, Currency::AUD).unwrap();
        let sum = invoice_totals([&each, &each, &each]);
        // Rounding the sum (0.165 tax -> 0.17) would differ from the sum of rounded lines (0.03).
        assert_eq!(sum.tax, d("0.03"));
        assert_eq!(sum.total, d("0.18"));
    }

    #[test]
    fn rejects_bad_lines() {
        let bad = [
            (line("0", "10", None, None), "zero quantity"),
            (line("-1", "10", None, None), "negative quantity"),
            (line("1.00001", "10", None, None), "over-precise quantity"),
            (line("1", "-10", None, None), "negative price"),
            (line("1", "10", Some(Discount::Amount(d("11"))), None), "discount above the line"),
            (line("1", "10", Some(Discount::Percent(d("101"))), None), "discount above 100%"),
            (line("1", "10", None, Some("-1")), "negative tax rate"),
        ];
        for (l, why) in bad {
            assert!(line_totals(&l, TaxMode::Exclusive, Currency::AUD).is_err(), "{why}");
        }
    }
}
