//! Credit notes (C1-C4): credit chosen lines of one OPEN invoice, never more than it owes.
//!
//! A line is credited by quantity or by amount. By quantity, the credit is that share of the
//! line's subtotal and tax, each rounded (M3). By amount, the amount is what the client is
//! credited including tax, and its tax is the line's own share of tax in that amount, so the
//! credit follows the tax mode the line was priced under.

use rust_decimal::Decimal;

use super::invoice::{InvoiceFacts, InvoiceStatus, status_for_balance};
use super::money::{Currency, display_amount, round_to_minor_unit};
use crate::error::{AppError, AppResult, ErrorCode};

/// An invoice line as the credit rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditableLine {
    pub quantity: Decimal,
    pub subtotal: Decimal,
    pub tax: Decimal,
    pub total: Decimal,
    /// Sum of issued credit notes' totals for this line.
    pub credited: Decimal,
}

/// How much of one line to credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditBy {
    Quantity(Decimal),
    Amount(Decimal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditRequest {
    pub line: usize,
    pub by: CreditBy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditedLine {
    pub line: usize,
    pub quantity: Option<Decimal>,
    pub subtotal: Decimal,
    pub tax: Decimal,
    pub total: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditNoteEffect {
    pub lines: Vec<CreditedLine>,
    pub subtotal: Decimal,
    pub tax: Decimal,
    pub total: Decimal,
    pub invoice_credited: Decimal,
    pub invoice_status: InvoiceStatus,
}

/// C1, C2: checks and prices a credit note for `invoice`.
pub fn issue(
    invoice: &InvoiceFacts,
    lines: &[CreditableLine],
    reason: &str,
    requests: &[CreditRequest],
    currency: Currency,
) -> AppResult<CreditNoteEffect> {
    if reason.trim().is_empty() {
        return Err(AppError::new(ErrorCode::ReasonRequired, "a credit note needs a reason"));
    }
    match invoice.status {
        InvoiceStatus::Open => {}
        InvoiceStatus::Void => return Err(AppError::new(ErrorCode::InvoiceVoid, "the invoice is void")),
        InvoiceStatus::Draft | InvoiceStatus::Paid => {
            return Err(AppError::new(ErrorCode::InvoiceNotOpen, "only an open invoice can be credited"));
        }
    }
    if requests.is_empty() {
        return Err(AppError::invalid("credit at least one line"));
    }
    let mut credited_lines: Vec<CreditedLine> = Vec::with_capacity(requests.len());
    for request in requests {
        let at = |message: String| format!("line {}: {message}", request.line + 1);
        let line = lines.get(request.line).ok_or_else(|| AppError::invalid(at("the invoice has no such line".into())))?;
        if credited_lines.iter().any(|c| c.line == request.line) {
            return Err(AppError::invalid(at("credit each line once per credit note".into())));
        }
        let credited = match request.by {
            CreditBy::Quantity(quantity) => {
                if quantity <= Decimal::ZERO {
                    return Err(AppError::new(ErrorCode::AmountNotPositive, at("the quantity must be greater than zero".into())));
                }
                if quantity > line.quantity {
                    return Err(AppError::new(ErrorCode::CreditExceedsLine, at(format!("the line has quantity {}", line.quantity))));
                }
                let subtotal = round_to_minor_unit(line.subtotal * quantity / line.quantity, currency);
                let tax = round_to_minor_unit(line.tax * quantity / line.quantity, currency);
                CreditedLine { line: request.line, quantity: Some(quantity), subtotal, tax, total: subtotal + tax }
            }
            CreditBy::Amount(amount) => {
                if amount <= Decimal::ZERO {
                    return Err(AppError::new(ErrorCode::AmountNotPositive, at("the amount must be greater than zero".into())));
                }
                let tax = if line.total.is_zero() {
                    Decimal::ZERO
                } else {
                    round_to_minor_unit(amount * line.tax / line.total, currency)
                };
                CreditedLine { line: request.line, quantity: None, subtotal: amount - tax, tax, total: amount }
            }
        };
        // A sliver of a quantity can round to nothing: a credit note of 0.00 is not a credit.
        if credited.total <= Decimal::ZERO {
            return Err(AppError::new(
                ErrorCode::AmountNotPositive,
                at(format!("the credit comes to {} once rounded; credit more", display_amount(credited.total, currency.code()))),
            ));
        }
        let remaining = line.total - line.credited;
        if credited.total > remaining {
            return Err(AppError::new(
                ErrorCode::CreditExceedsLine,
                at(format!("at most {} of this line is left to credit", display_amount(remaining, currency.code()))),
            ));
        }
        credited_lines.push(credited);
    }
    let subtotal: Decimal = credited_lines.iter().map(|l| l.subtotal).sum();
    let tax: Decimal = credited_lines.iter().map(|l| l.tax).sum();
    let total = subtotal + tax;
    if total > invoice.balance() {
        return Err(AppError::new(
            ErrorCode::AmountExceedsBalance,
            format!(
                "the credit note total {} is more than the invoice balance {}",
                display_amount(total, currency.code()),
                display_amount(invoice.balance(), currency.code())
            ),
        ));
    }
    let invoice_credited = invoice.credited + total;
    let after = InvoiceFacts { credited: invoice_credited, issued_credit_notes: invoice.issued_credit_notes + 1, ..invoice.clone() };
    Ok(CreditNoteEffect { lines: credited_lines, subtotal, tax, total, invoice_credited, invoice_status: status_for_balance(&after) })
}

/// C4: voiding restores the invoice balance; a PAID invoice may become OPEN again (I3).
pub fn void(invoice: &InvoiceFacts, total: Decimal, already_void: bool) -> AppResult<(Decimal, InvoiceStatus)> {
    if already_void {
        return Err(AppError::new(ErrorCode::CreditNoteVoid, "the credit note is already void"));
    }
    let credited = (invoice.credited - total).max(Decimal::ZERO);
    let after = InvoiceFacts {
        credited,
        issued_credit_notes: invoice.issued_credit_notes.saturating_sub(1),
        ..invoice.clone()
    };
    let status = match invoice.status {
        InvoiceStatus::Open | InvoiceStatus::Paid => status_for_balance(&after),
        other => other,
    };
    Ok((credited, status))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn open_invoice(total: &str) -> InvoiceFacts {
        InvoiceFacts {
            status: InvoiceStatus::Open,
            numbered: true,
            line_count: 1,
            total: d(total),
            paid: Decimal::ZERO,
            credited: Decimal::ZERO,
            active_allocations: 0,
            issued_credit_notes: 0,
        }
    }

    fn line() -> CreditableLine {
        // 2 x 50.00 with 10% tax added: 100.00 + 10.00.
        CreditableLine { quantity: d("2"), subtotal: d("100.00"), tax: d("10.00"), total: d("110.00"), credited: Decimal::ZERO }
    }

    #[test]
    fn c2_credit_by_quantity_and_by_amount() {
        let by_quantity = issue(&open_invoice("110"), &[line()], "damaged", &[CreditRequest { line: 0, by: CreditBy::Quantity(d("1")) }], Currency::AUD).unwrap();
        assert_eq!((by_quantity.subtotal, by_quantity.tax, by_quantity.total), (d("50.00"), d("5.00"), d("55.00")));
        let by_amount = issue(&open_invoice("110"), &[line()], "goodwill", &[CreditRequest { line: 0, by: CreditBy::Amount(d("22.00")) }], Currency::AUD).unwrap();
        assert_eq!((by_amount.subtotal, by_amount.tax, by_amount.total), (d("20.00"), d("2.00"), d("22.00")));
    }

    #[test]
    fn c1_c2_refusals() {
        let one = [CreditRequest { line: 0, by: CreditBy::Amount(d("10")) }];
        let paid_down = InvoiceFacts { paid: d("105"), active_allocations: 1, ..open_invoice("110") };
        let cases = [
            (open_invoice("110"), line(), "", &one[..], ErrorCode::ReasonRequired, "C1 reason"),
            (InvoiceFacts { status: InvoiceStatus::Paid, ..open_invoice("110") }, line(), "r", &one[..], ErrorCode::InvoiceNotOpen, "C1 paid"),
            (InvoiceFacts { status: InvoiceStatus::Draft, ..open_invoice("110") }, line(), "r", &one[..], ErrorCode::InvoiceNotOpen, "C1 draft"),
            (InvoiceFacts { status: InvoiceStatus::Void, ..open_invoice("110") }, line(), "r", &one[..], ErrorCode::InvoiceVoid, "C1 void"),
            (paid_down, line(), "r", &one[..], ErrorCode::AmountExceedsBalance, "C2 balance 5"),
            (open_invoice("110"), CreditableLine { credited: d("105"), ..line() }, "r", &one[..], ErrorCode::CreditExceedsLine, "line mostly credited"),
        ];
        for (invoice, l, reason, requests, want, why) in cases {
            let got = issue(&invoice, &[l], reason, requests, Currency::AUD).err().map(|e| e.code);
            assert_eq!(got, Some(want), "{why}");
        }
    }

    #[test]
    fn c2_a_credit_that_rounds_to_nothing_is_not_positive() {
        // The line is 2 x 50.00 + 10.00 tax: a quantity of q credits 50q + 5q, each rounded (M3).
        let credit = |quantity: &str| {
            issue(&open_invoice("110"), &[line()], "r", &[CreditRequest { line: 0, by: CreditBy::Quantity(d(quantity)) }], Currency::AUD)
        };
        for (quantity, why) in [("0.0000000001", "a sliver of the quantity"), ("0.00009", "0.0045 + 0.00045, both round to 0.00")] {
            let refused = credit(quantity).unwrap_err();
            assert_eq!(refused.code, ErrorCode::AmountNotPositive, "{why}: {}", refused.message);
        }
        // Half a cent rounds away from zero, so this is a credit of 0.01.
        assert_eq!(credit("0.0001").unwrap().total, d("0.01"));
    }

    #[test]
    fn c4_void_reopens_a_paid_invoice() {
        let paid = InvoiceFacts {
            status: InvoiceStatus::Paid,
            paid: d("55"),
            credited: d("55"),
            active_allocations: 1,
            issued_credit_notes: 1,
            ..open_invoice("110")
        };
        assert_eq!(void(&paid, d("55"), false).unwrap(), (Decimal::ZERO, InvoiceStatus::Open));
        assert_eq!(void(&paid, d("55"), true).unwrap_err().code, ErrorCode::CreditNoteVoid);
    }
}
