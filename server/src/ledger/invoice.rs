//! Invoice life cycle (I1-I8): which transitions are allowed, checked in a fixed order.
//!
//! Each check returns the first rule the invoice breaks, in this precedence: VOID is final (I7),
//! an issued credit note blocks changes (I8), active allocations block changes (I5, I7), then the
//! status the action needs (I1, I2, I6, I7).

use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::error::{AppError, AppResult, ErrorCode};

/// The stored status. OVERDUE is never stored: see [`DisplayStatus`] (I4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceStatus {
    Draft,
    Open,
    Paid,
    Void,
}

/// The status a person sees: the stored one, with OPEN shown as OVERDUE once the due date has
/// passed in the tenant's timezone (I4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayStatus {
    Draft,
    Open,
    Overdue,
    Paid,
    Void,
}

/// What the invoice rules need to know about one invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceFacts {
    pub status: InvoiceStatus,
    pub numbered: bool,
    pub line_count: usize,
    pub total: Decimal,
    /// Sum of active allocations.
    pub paid: Decimal,
    /// Sum of issued credit notes.
    pub credited: Decimal,
    pub active_allocations: usize,
    pub issued_credit_notes: usize,
}

impl InvoiceFacts {
    /// M4: total - active allocations - issued credit notes, never negative.
    pub fn balance(&self) -> Decimal {
        (self.total - self.paid - self.credited).max(Decimal::ZERO)
    }

    fn refuse_void(&self) -> AppResult<()> {
        if self.status == InvoiceStatus::Void {
            return Err(AppError::new(ErrorCode::InvoiceVoid, "the invoice is void; a void invoice cannot change"));
        }
        Ok(())
    }

    fn refuse_credit_notes(&self) -> AppResult<()> {
        if self.issued_credit_notes > 0 {
            return Err(AppError::new(
                ErrorCode::InvoiceHasCreditNotes,
                "the invoice has an issued credit note; void the credit note first",
            ));
        }
        Ok(())
    }

    fn refuse_allocations(&self) -> AppResult<()> {
        if self.active_allocations > 0 {
            return Err(AppError::new(
                ErrorCode::InvoiceHasAllocations,
                "payments are allocated to the invoice; remove the allocations first",
            ));
        }
        Ok(())
    }
}

fn not_draft() -> AppError {
    AppError::new(ErrorCode::InvoiceNotDraft, "only a draft invoice can be changed; revert it to draft first")
}

/// I1, I7, I8: only a DRAFT invoice can be edited.
pub fn check_edit(invoice: &InvoiceFacts) -> AppResult<()> {
    invoice.refuse_void()?;
    invoice.refuse_credit_notes()?;
    if invoice.status != InvoiceStatus::Draft {
        return Err(not_draft());
    }
    Ok(())
}

/// I2: finalize moves a DRAFT with at least one line to OPEN (or PAID when nothing is owed).
pub fn check_finalize(invoice: &InvoiceFacts) -> AppResult<()> {
    invoice.refuse_void()?;
    if invoice.status != InvoiceStatus::Draft {
        return Err(AppError::new(ErrorCode::InvoiceNotDraft, "the invoice is already finalized"));
    }
    if invoice.line_count == 0 {
        return Err(AppError::new(ErrorCode::InvoiceEmpty, "add at least one line item before finalizing"));
    }
    Ok(())
}

/// I3: the status an issued invoice has for its balance.
pub fn status_for_balance(invoice: &InvoiceFacts) -> InvoiceStatus {
    if invoice.balance().is_zero() { InvoiceStatus::Paid } else { InvoiceStatus::Open }
}

/// I5, I8: back to DRAFT only without active allocations or issued credit notes.
pub fn check_revert(invoice: &InvoiceFacts) -> AppResult<()> {
    invoice.refuse_void()?;
    invoice.refuse_credit_notes()?;
    invoice.refuse_allocations()?;
    if invoice.status == InvoiceStatus::Draft {
        return Err(AppError::new(ErrorCode::InvoiceNotOpen, "the invoice is already a draft"));
    }
    Ok(())
}

/// I6: only a DRAFT can be deleted, and (decided) only one that never had a number, so the
/// sequence of issued numbers stays gap-free; a numbered draft is finalized and voided instead.
pub fn check_delete(invoice: &InvoiceFacts) -> AppResult<()> {
    invoice.refuse_void()?;
    if invoice.status != InvoiceStatus::Draft {
        return Err(AppError::new(ErrorCode::InvoiceNotDraft, "only a draft invoice can be deleted; void it instead"));
    }
    if invoice.numbered {
        return Err(AppError::new(
            ErrorCode::InvoiceNumbered,
            "this draft already has an invoice number; finalize and void it so the number stays accounted for",
        ));
    }
    Ok(())
}

/// I7, I8: void only an OPEN invoice with no active allocations and no issued credit notes.
pub fn check_void(invoice: &InvoiceFacts) -> AppResult<()> {
    invoice.refuse_void()?;
    invoice.refuse_credit_notes()?;
    invoice.refuse_allocations()?;
    if invoice.status != InvoiceStatus::Open {
        return Err(AppError::new(ErrorCode::InvoiceNotOpen, "only an open invoice can be voided"));
    }
    Ok(())
}

/// The due date of an invoice: the one given, else the issue date plus the practice's payment
/// terms in days; never before the issue date (decided, docs/rules.md).
pub fn due_date(issue_date: NaiveDate, given: Option<NaiveDate>, terms_days: i64) -> AppResult<NaiveDate> {
    let due = given.unwrap_or_else(|| issue_date + chrono::Days::new(terms_days.max(0) as u64));
    if due < issue_date {
        return Err(AppError::invalid("the due date cannot be before the issue date"));
    }
    Ok(due)
}

/// The next invoice number is configurable (Tenant settings); it may be lowered only while no
/// invoice carries that number or a higher one, so numbers stay unique. `taken` is an issued
/// number at or above `next`, if there is one.
pub fn check_next_number(taken: Option<i64>) -> AppResult<()> {
    if let Some(taken) = taken {
        return Err(AppError::new(
            ErrorCode::InvoiceNumberInUse,
            format!("invoice number {taken} is already issued; the next number must be higher"),
        ));
    }
    Ok(())
}

/// I4: OPEN with a due date before today (in the tenant's timezone) shows as OVERDUE.
pub fn display_status(status: InvoiceStatus, due_date: NaiveDate, today: NaiveDate) -> DisplayStatus {
    match status {
        InvoiceStatus::Draft => DisplayStatus::Draft,
        InvoiceStatus::Open if due_date < today => DisplayStatus::Overdue,
        InvoiceStatus::Open => DisplayStatus::Open,
        InvoiceStatus::Paid => DisplayStatus::Paid,
        InvoiceStatus::Void => DisplayStatus::Void,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: InvoiceStatus) -> InvoiceFacts {
        InvoiceFacts {
            status,
            numbered: status != InvoiceStatus::Draft,
            line_count: 1,
            total: Decimal::from(100),
            paid: Decimal::ZERO,
            credited: Decimal::ZERO,
            active_allocations: 0,
            issued_credit_notes: 0,
        }
    }

    fn code(r: AppResult<()>) -> Option<ErrorCode> {
        r.err().map(|e| e.code)
    }

    #[test]
    fn transitions_table() {
        use InvoiceStatus::*;
        let with_allocation = InvoiceFacts { active_allocations: 1, paid: Decimal::from(10), ..facts(Open) };
        let with_credit = InvoiceFacts { issued_credit_notes: 1, credited: Decimal::from(10), ..facts(Open) };
        let cases: Vec<(&str, Option<ErrorCode>, &str)> = vec![
            ("edit", code(check_edit(&facts(Draft))), "I1 draft is editable"),
            ("edit", code(check_edit(&facts(Open))), "I1 open is not editable"),
            ("edit", code(check_edit(&facts(Void))), "I7 void is final"),
            ("edit", code(check_edit(&with_credit)), "I8 credit note blocks edits"),
            ("finalize", code(check_finalize(&facts(Draft))), "I2 draft finalizes"),
            ("finalize", code(check_finalize(&InvoiceFacts { line_count: 0, ..facts(Draft) })), "I2 needs a line"),
            ("finalize", code(check_finalize(&facts(Open))), "I2 only drafts"),
            ("revert", code(check_revert(&facts(Open))), "I5 open reverts"),
            ("revert", code(check_revert(&with_allocation)), "I5 allocations block revert"),
            ("revert", code(check_revert(&with_credit)), "I8 credit note blocks revert"),
            ("revert", code(check_revert(&facts(Void))), "I7 void cannot revert"),
            ("delete", code(check_delete(&InvoiceFacts { numbered: false, ..facts(Draft) })), "I6 draft deletes"),
            ("delete", code(check_delete(&facts(Open))), "I6 only drafts"),
            ("delete", code(check_delete(&InvoiceFacts { numbered: true, ..facts(Draft) })), "numbered draft"),
            ("void", code(check_void(&facts(Open))), "I7 open voids"),
            ("void", code(check_void(&facts(Paid))), "I7 paid does not"),
            ("void", code(check_void(&with_allocation)), "I7 allocations block void"),
            ("void", code(check_void(&with_credit)), "I8 credit note blocks void"),
            ("void", code(check_void(&facts(Void))), "I7 void twice"),
        ];
        let expected = [
            None,
            Some(ErrorCode::InvoiceNotDraft),
            Some(ErrorCode::InvoiceVoid),
            Some(ErrorCode::InvoiceHasCreditNotes),
            None,
            Some(ErrorCode::InvoiceEmpty),
            Some(ErrorCode::InvoiceNotDraft),
            None,
            Some(ErrorCode::InvoiceHasAllocations),
            Some(ErrorCode::InvoiceHasCreditNotes),
            Some(ErrorCode::InvoiceVoid),
            None,
            Some(ErrorCode::InvoiceNotDraft),
            Some(ErrorCode::InvoiceNumbered),
            None,
            Some(ErrorCode::InvoiceNotOpen),
            Some(ErrorCode::InvoiceHasAllocations),
            Some(ErrorCode::InvoiceHasCreditNotes),
            Some(ErrorCode::InvoiceVoid),
        ];
        for ((action, got, why), want) in cases.into_iter().zip(expected) {
            assert_eq!(got, want, "{action}: {why}");
        }
    }

    #[test]
    fn i3_and_m4_balance() {
        let mut f = facts(InvoiceStatus::Open);
        assert_eq!(status_for_balance(&f), InvoiceStatus::Open);
        f.paid = Decimal::from(60);
        f.credited = Decimal::from(40);
        assert_eq!(f.balance(), Decimal::ZERO);
        assert_eq!(status_for_balance(&f), InvoiceStatus::Paid);
        f.paid = Decimal::from(100);
        assert_eq!(f.balance(), Decimal::ZERO, "M4: never negative");
        let zero = InvoiceFacts { total: Decimal::ZERO, ..facts(InvoiceStatus::Draft) };
        assert_eq!(status_for_balance(&zero), InvoiceStatus::Paid, "nothing owed is paid");
    }

    #[test]
    fn i4_overdue_is_derived() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(display_status(InvoiceStatus::Open, d("2026-01-01"), d("2026-01-02")), DisplayStatus::Overdue);
        assert_eq!(display_status(InvoiceStatus::Open, d("2026-01-02"), d("2026-01-02")), DisplayStatus::Open);
        assert_eq!(display_status(InvoiceStatus::Paid, d("2026-01-01"), d("2026-01-02")), DisplayStatus::Paid);
    }
}
