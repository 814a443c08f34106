//! Payments, allocations, refunds and voids (P1-P9, F1-F4, V1-V2, M5, P7).
//!
//! Each function checks everything first, in a fixed precedence, and only then returns the effect
//! to write. Amounts are already exact money of the right precision when they arrive here.

use rust_decimal::Decimal;

use super::invoice::{InvoiceFacts, InvoiceStatus};
use super::money::{Currency, Money, display_amount};
use crate::error::{AppError, AppResult, ErrorCode};

/// The state of a payment the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFacts {
    pub client: String,
    pub currency: Currency,
    pub amount: Decimal,
    /// Sum of active allocations.
    pub allocated: Decimal,
    /// Sum of successful refunds.
    pub refunded: Decimal,
    /// Refunds sent to a plugin whose outcome is not known yet: reserved until settled.
    pub refund_pending: Decimal,
    pub void: bool,
}

/// Payment status (P8): what became of the money received, whatever part of it sits on
/// invoices (that is the allocation state). P8 calls the first state PAID; Settle says RECEIVED
/// (docs/rules.md, "Payments").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Received and none of it refunded.
    Received,
    PartiallyRefunded,
    Refunded,
    Void,
}

/// How much of a payment sits on invoices (P8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocationState {
    Unallocated,
    PartiallyAllocated,
    Allocated,
}

impl PaymentFacts {
    /// M5: amount - active allocations - successful refunds, never negative. Money of a refund
    /// still in flight at a plugin is held back too, so it cannot be spent twice.
    pub fn unallocated(&self) -> Decimal {
        (self.amount - self.allocated - self.refunded - self.refund_pending).max(Decimal::ZERO)
    }

    pub fn status(&self) -> PaymentStatus {
        if self.void {
            PaymentStatus::Void
        } else if self.refunded.is_zero() {
            PaymentStatus::Received
        } else if self.refunded >= self.amount {
            PaymentStatus::Refunded
        } else {
            PaymentStatus::PartiallyRefunded
        }
    }

    /// Allocation state of the money that was not refunded (F4: refunded money is gone).
    pub fn allocation_state(&self) -> AllocationState {
        let allocatable = self.amount - self.refunded;
        if self.allocated.is_zero() {
            AllocationState::Unallocated
        } else if self.allocated >= allocatable {
            AllocationState::Allocated
        } else {
            AllocationState::PartiallyAllocated
        }
    }

    fn refuse_void(&self) -> AppResult<()> {
        if self.void {
            return Err(AppError::new(ErrorCode::PaymentVoid, "the payment is void; a void payment cannot change"));
        }
        Ok(())
    }
}

fn require_positive(amount: Decimal) -> AppResult<()> {
    if amount <= Decimal::ZERO {
        return Err(AppError::new(ErrorCode::AmountNotPositive, "the amount must be greater than zero"));
    }
    Ok(())
}

/// The invoice must be OPEN to take money (P4, I7).
fn require_open(invoice: &InvoiceFacts) -> AppResult<()> {
    match invoice.status {
        InvoiceStatus::Open => Ok(()),
        InvoiceStatus::Void => Err(AppError::new(ErrorCode::InvoiceVoid, "the invoice is void")),
        InvoiceStatus::Draft => Err(AppError::new(ErrorCode::InvoiceNotOpen, "the invoice is a draft; finalize it first")),
        InvoiceStatus::Paid => Err(AppError::new(ErrorCode::InvoiceNotOpen, "the invoice is already paid")),
    }
}

/// What an allocation changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocationEffect {
    pub amount: Decimal,
    pub payment_allocated: Decimal,
    pub invoice_paid: Decimal,
    /// I3: OPEN, or PAID when the balance reaches zero.
    pub invoice_status: InvoiceStatus,
}

/// P4, P5, P7, M6, F4: allocate `amount` of a payment to an invoice of the same client and
/// currency, at most the payment's unallocated amount and at most the invoice balance.
pub fn allocate(
    payment: &PaymentFacts,
    invoice: &InvoiceFacts,
    invoice_client: &str,
    invoice_currency: Currency,
    amount: Decimal,
) -> AppResult<AllocationEffect> {
    require_positive(amount)?;
    payment.refuse_void()?;
    require_open(invoice)?;
    if payment.currency != invoice_currency {
        return Err(AppError::new(
            ErrorCode::CurrencyMismatch,
            format!("the payment is in {} and the invoice in {}", payment.currency.code(), invoice_currency.code()),
        ));
    }
    if payment.client != invoice_client {
        return Err(AppError::new(ErrorCode::ClientMismatch, "the payment and the invoice belong to different clients"));
    }
    if amount > payment.unallocated() {
        return Err(AppError::new(
            ErrorCode::AmountExceedsUnallocated,
            format!("the payment has only {} unallocated", display_amount(payment.unallocated(), payment.currency.code())),
        ));
    }
    if amount > invoice.balance() {
        return Err(AppError::new(
            ErrorCode::AmountExceedsBalance,
            format!("the invoice balance is only {}", display_amount(invoice.balance(), invoice_currency.code())),
        ));
    }
    let paid = invoice.paid + amount;
    let after = InvoiceFacts { paid, active_allocations: invoice.active_allocations + 1, ..invoice.clone() };
    Ok(AllocationEffect {
        amount,
        payment_allocated: payment.allocated + amount,
        invoice_paid: paid,
        invoice_status: super::invoice::status_for_balance(&after),
    })
}

/// P3: a new manual payment against an invoice allocates min(amount, balance); the rest stays on
/// the payment as unallocated credit.
pub fn allocation_for_new_payment(amount: Decimal, invoice: &InvoiceFacts) -> Decimal {
    amount.min(invoice.balance())
}

/// What the rules need to know of a payment method (P1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodFacts {
    pub name: String,
    pub archived: bool,
    /// Whether its plugin only records payments (cash, cheque, ...) rather than charging them.
    pub records_only: bool,
}

/// P1: a payment is recorded with an active method whose plugin only records; a method whose
/// plugin charges (a card gateway) takes its payments by charging.
pub fn check_recording_method(method: &MethodFacts) -> AppResult<()> {
    if method.archived {
        return Err(AppError::new(ErrorCode::PaymentMethodArchived, format!("the payment method '{}' is archived", method.name)));
    }
    if !method.records_only {
        return Err(AppError::new(
            ErrorCode::PaymentMethodNeedsCharge,
            format!("'{}' takes payments by charging through its plugin, not by recording them", method.name),
        ));
    }
    Ok(())
}

/// P1, M2: a new recorded payment of `amount` in `currency`, checked in this order: the method
/// (P1), the amount's precision (M2), its sign.
pub fn new_recorded_payment(method: &MethodFacts, amount: Decimal, currency: Currency) -> AppResult<Money> {
    check_recording_method(method)?;
    Ok(Money::from_decimal(amount, currency)?.require_positive()?)
}

/// What paying an invoice with a new recorded payment does (P3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvoicePaymentEffect {
    /// The new payment's amount.
    pub amount: Money,
    /// Its allocation to the invoice: min(amount, balance); the rest stays as the client's credit.
    pub allocation: AllocationEffect,
}

/// P3: pays an OPEN invoice with a new recorded payment of `amount`, the invoice balance when not
/// given. Checked in this order: the invoice takes payments (I7, P4), the method records (P1),
/// the amount (M2, positive).
pub fn pay_invoice(
    invoice: &InvoiceFacts,
    currency: Currency,
    method: &MethodFacts,
    amount: Option<Decimal>,
) -> AppResult<InvoicePaymentEffect> {
    require_open(invoice)?;
    let amount = new_recorded_payment(method, amount.unwrap_or_else(|| invoice.balance()), currency)?;
    let to_allocate = allocation_for_new_payment(amount.amount(), invoice);
    let after = InvoiceFacts { paid: invoice.paid + to_allocate, active_allocations: invoice.active_allocations + 1, ..invoice.clone() };
    let allocation = AllocationEffect {
        amount: to_allocate,
        payment_allocated: to_allocate,
        invoice_paid: after.paid,
        invoice_status: super::invoice::status_for_balance(&after),
    };
    Ok(InvoicePaymentEffect { amount, allocation })
}

/// P3, I2: what a charge through a plugin-backed method takes: `amount`, or the invoice balance
/// when not given, and never more than the balance. With `finalize` (finalizeInvoice with CHARGE)
/// the invoice is a draft to be finalized and owes its balance once OPEN. Checked in this order:
/// the invoice (I2 or P4, I7), the method is active and charges (P1), the amount (M2, positive,
/// P3).
pub fn charge_invoice(
    invoice: &InvoiceFacts,
    currency: Currency,
    method: &MethodFacts,
    amount: Option<Decimal>,
    finalize: bool,
) -> AppResult<Money> {
    if finalize {
        super::invoice::check_finalize(invoice)?;
    } else {
        require_open(invoice)?;
    }
    if method.archived {
        return Err(AppError::new(ErrorCode::PaymentMethodArchived, format!("the payment method '{}' is archived", method.name)));
    }
    if method.records_only {
        return Err(AppError::new(
            ErrorCode::InvalidInput,
            format!("'{}' only records payments; record the payment instead of charging", method.name),
        ));
    }
    let owed = invoice.balance();
    let amount = Money::from_decimal(amount.unwrap_or(owed), currency)?.require_positive()?;
    if amount.amount() > owed {
        return Err(AppError::new(
            ErrorCode::AmountExceedsBalance,
            format!("a charge can never exceed the invoice balance ({})", display_amount(owed, currency.code())),
        ));
    }
    Ok(amount)
}

/// How a refund is made (F3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundRoute {
    /// A payment of a method that only records: the refund is recorded and succeeds at once.
    Record,
    /// A payment taken through a plugin: the plugin gives the money back (the gateway refunds
    /// the card), and a refund it declines changes no balance.
    Plugin,
}

/// F3: how a refund of a payment is made, by whether its method's plugin only records.
pub fn refund_route(records_only: bool) -> RefundRoute {
    if records_only { RefundRoute::Record } else { RefundRoute::Plugin }
}

/// What removing an allocation changes (P6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemovalEffect {
    pub payment_allocated: Decimal,
    pub invoice_paid: Decimal,
    pub invoice_status: InvoiceStatus,
}

/// P6: the amount returns to the payment's unallocated amount and to the invoice balance; a PAID
/// invoice becomes OPEN again (I3). Allocations on void invoices cannot exist (I7), and a void
/// payment has none (V1).
pub fn remove_allocation(
    payment: &PaymentFacts,
    invoice: &InvoiceFacts,
    amount: Decimal,
    already_removed: bool,
) -> AppResult<RemovalEffect> {
    if already_removed {
        return Err(AppError::new(ErrorCode::AllocationRemoved, "the allocation was already removed"));
    }
    payment.refuse_void()?;
    if invoice.status == InvoiceStatus::Void {
        return Err(AppError::new(ErrorCode::InvoiceVoid, "the invoice is void"));
    }
    let paid = (invoice.paid - amount).max(Decimal::ZERO);
    let after = InvoiceFacts {
        paid,
        active_allocations: invoice.active_allocations.saturating_sub(1),
        ..invoice.clone()
    };
    let invoice_status = match invoice.status {
        InvoiceStatus::Draft => InvoiceStatus::Draft,
        _ => super::invoice::status_for_balance(&after),
    };
    Ok(RemovalEffect { payment_allocated: (payment.allocated - amount).max(Decimal::ZERO), invoice_paid: paid, invoice_status })
}

/// F1, F2: a refund is at most the unallocated amount; several partial refunds are fine.
pub fn check_refund(payment: &PaymentFacts, amount: Decimal) -> AppResult<()> {
    require_positive(amount)?;
    payment.refuse_void()?;
    if amount > payment.unallocated() {
        return Err(AppError::new(
            ErrorCode::AmountExceedsUnallocated,
            format!(
                "only unallocated money can be refunded: {} is unallocated; remove allocations first",
                display_amount(payment.unallocated(), payment.currency.code())
            ),
        ));
    }
    Ok(())
}

/// V1: void only a payment with no active allocations and no successful refunds.
pub fn check_void(payment: &PaymentFacts) -> AppResult<()> {
    payment.refuse_void()?;
    if payment.allocated > Decimal::ZERO {
        return Err(AppError::new(
            ErrorCode::PaymentHasAllocations,
            "the payment is allocated to invoices; remove the allocations first",
        ));
    }
    if payment.refunded > Decimal::ZERO || payment.refund_pending > Decimal::ZERO {
        return Err(AppError::new(ErrorCode::PaymentHasRefunds, "a payment with refunds cannot be voided"));
    }
    Ok(())
}

/// P9: only description and external reference change, and never on a void payment.
pub fn check_update(payment: &PaymentFacts) -> AppResult<()> {
    payment.refuse_void()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(amount: i64) -> PaymentFacts {
        PaymentFacts {
            client: "c".into(),
            currency: Currency::AUD,
            amount: Decimal::from(amount),
            allocated: Decimal::ZERO,
            refunded: Decimal::ZERO,
            refund_pending: Decimal::ZERO,
            void: false,
        }
    }

    fn invoice(total: i64) -> InvoiceFacts {
        InvoiceFacts {
            status: InvoiceStatus::Open,
            numbered: true,
            line_count: 1,
            total: Decimal::from(total),
            paid: Decimal::ZERO,
            credited: Decimal::ZERO,
            active_allocations: 0,
            issued_credit_notes: 0,
        }
    }

    fn code<T>(r: AppResult<T>) -> Option<ErrorCode> {
        r.err().map(|e| e.code)
    }

    #[test]
    fn p5_allocation_checks_in_precedence() {
        let d = Decimal::from;
        let cases = [
            (payment(100), invoice(50), "c", "AUD", d(0), Some(ErrorCode::AmountNotPositive), "M2 zero"),
            (PaymentFacts { void: true, ..payment(100) }, invoice(50), "c", "AUD", d(10), Some(ErrorCode::PaymentVoid), "V1 void"),
            (payment(100), InvoiceFacts { status: InvoiceStatus::Draft, ..invoice(50) }, "c", "AUD", d(10), Some(ErrorCode::InvoiceNotOpen), "P4 draft"),
            (payment(100), invoice(50), "c", "NZD", d(10), Some(ErrorCode::CurrencyMismatch), "M6"),
            (payment(100), invoice(50), "other", "AUD", d(10), Some(ErrorCode::ClientMismatch), "P5 client"),
            (payment(100), invoice(500), "c", "AUD", d(101), Some(ErrorCode::AmountExceedsUnallocated), "P5 unallocated"),
            (payment(100), invoice(50), "c", "AUD", d(51), Some(ErrorCode::AmountExceedsBalance), "P5 balance"),
            (payment(100), invoice(50), "c", "AUD", d(50), None, "exact balance"),
        ];
        for (p, i, client, currency, amount, want, why) in cases {
            assert_eq!(code(allocate(&p, &i, client, Currency::parse(currency).unwrap(), amount)), want, "{why}");
        }
    }

    #[test]
    fn i3_full_allocation_pays_the_invoice_and_removal_reopens_it() {
        let p = payment(100);
        let i = invoice(60);
        let effect = allocate(&p, &i, "c", Currency::AUD, Decimal::from(60)).unwrap();
        assert_eq!(effect.invoice_status, InvoiceStatus::Paid);
        let paid_invoice = InvoiceFacts { paid: Decimal::from(60), active_allocations: 1, status: InvoiceStatus::Paid, ..i };
        let paid_payment = PaymentFacts { allocated: Decimal::from(60), ..p };
        let removal = remove_allocation(&paid_payment, &paid_invoice, Decimal::from(60), false).unwrap();
        assert_eq!(removal.invoice_status, InvoiceStatus::Open);
        assert_eq!(removal.payment_allocated, Decimal::ZERO);
    }

    #[test]
    fn p8_status_and_allocation_state() {
        let mut p = payment(100);
        assert_eq!((p.status(), p.allocation_state()), (PaymentStatus::Received, AllocationState::Unallocated));
        p.allocated = Decimal::from(40);
        assert_eq!(p.allocation_state(), AllocationState::PartiallyAllocated);
        p.refunded = Decimal::from(60);
        assert_eq!((p.status(), p.allocation_state()), (PaymentStatus::PartiallyRefunded, AllocationState::Allocated));
        p.allocated = Decimal::ZERO;
        p.refunded = Decimal::from(100);
        assert_eq!(p.status(), PaymentStatus::Refunded);
    }

    #[test]
    fn f1_v1_refund_and_void_checks() {
        let allocated = PaymentFacts { allocated: Decimal::from(70), ..payment(100) };
        assert_eq!(code(check_refund(&allocated, Decimal::from(31))), Some(ErrorCode::AmountExceedsUnallocated));
        assert_eq!(code(check_refund(&allocated, Decimal::from(30))), None);
        assert_eq!(code(check_void(&allocated)), Some(ErrorCode::PaymentHasAllocations));
        let refunded = PaymentFacts { refunded: Decimal::from(1), ..payment(100) };
        assert_eq!(code(check_void(&refunded)), Some(ErrorCode::PaymentHasRefunds));
        assert_eq!(code(check_void(&payment(100))), None);
    }

    #[test]
    fn p1_p3_paying_an_invoice_checks_in_precedence() {
        let cash = MethodFacts { name: "Cash".into(), archived: false, records_only: true };
        let aud = Currency::parse("AUD").unwrap();
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let cases = [
            (InvoiceFacts { status: InvoiceStatus::Void, ..invoice(50) }, MethodFacts { archived: true, ..cash.clone() }, None, Some(ErrorCode::InvoiceVoid), "I7 before all"),
            (InvoiceFacts { status: InvoiceStatus::Paid, ..invoice(50) }, cash.clone(), None, Some(ErrorCode::InvoiceNotOpen), "P4 paid"),
            (InvoiceFacts { status: InvoiceStatus::Draft, ..invoice(50) }, cash.clone(), None, Some(ErrorCode::InvoiceNotOpen), "P4 draft"),
            (invoice(50), MethodFacts { archived: true, ..cash.clone() }, Some(d("0")), Some(ErrorCode::PaymentMethodArchived), "P1 archived before the amount"),
            (invoice(50), MethodFacts { records_only: false, ..cash.clone() }, None, Some(ErrorCode::PaymentMethodNeedsCharge), "P1 a charging method"),
            (invoice(50), cash.clone(), Some(d("10.001")), Some(ErrorCode::AmountTooPrecise), "M2"),
            (invoice(50), cash.clone(), Some(d("0")), Some(ErrorCode::AmountNotPositive), "M2 zero"),
            (invoice(50), cash.clone(), Some(d("-5")), Some(ErrorCode::AmountNotPositive), "M2 negative"),
            (invoice(50), cash.clone(), None, None, "the balance by default"),
        ];
        for (i, method, amount, want, why) in cases {
            assert_eq!(code(pay_invoice(&i, aud, &method, amount)), want, "{why}");
        }
        let over = pay_invoice(&invoice(50), aud, &cash, Some(d("80"))).unwrap();
        assert_eq!((over.amount.amount(), over.allocation.amount), (d("80"), d("50")), "P3: the rest stays as credit");
        assert_eq!(over.allocation.invoice_status, InvoiceStatus::Paid);
        let part = pay_invoice(&invoice(50), aud, &cash, Some(d("20"))).unwrap();
        assert_eq!((part.allocation.invoice_paid, part.allocation.invoice_status), (d("20"), InvoiceStatus::Open));
    }

    #[test]
    fn p3_new_payment_allocates_at_most_the_balance() {
        assert_eq!(allocation_for_new_payment(Decimal::from(150), &invoice(100)), Decimal::from(100));
        assert_eq!(allocation_for_new_payment(Decimal::from(40), &invoice(100)), Decimal::from(40));
    }
}
