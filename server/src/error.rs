//! The one closed list of error codes a client can see, and the error type that carries them.
//!
//! Every failure a client gets has an `extensions.code` from [`ErrorCode`], a message a person can
//! act on, and the request id. docs/errors.md has a paragraph per code; a test keeps the two in
//! step. Codes are stable: a code is never renamed or given a second meaning.

use std::fmt;

/// Stable, machine-readable error codes, in the order a request is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    InvalidInput,
    NotFound,
    IdempotencyKeyReused,
    InvalidAmount,
    AmountTooPrecise,
    AmountNotPositive,
    UnknownCurrency,
    CurrencyMismatch,
    InvoiceNotDraft,
    InvoiceNotOpen,
    InvoiceVoid,
    InvoiceEmpty,
    InvoiceNumbered,
    InvoiceHasAllocations,
    InvoiceHasCreditNotes,
    InvoiceNumberInUse,
    PaymentOptionUnavailable,
    TaxRateArchived,
    TaxRateSystem,
    TransactionConflict,
    QueryRejected,
    RequestTooLarge,
    Internal,
}

impl ErrorCode {
    /// Every code, for the documentation test.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::InvalidInput,
        ErrorCode::NotFound,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::InvalidAmount,
        ErrorCode::AmountTooPrecise,
        ErrorCode::AmountNotPositive,
        ErrorCode::UnknownCurrency,
        ErrorCode::CurrencyMismatch,
        ErrorCode::InvoiceNotDraft,
        ErrorCode::InvoiceNotOpen,
        ErrorCode::InvoiceVoid,
        ErrorCode::InvoiceEmpty,
        ErrorCode::InvoiceNumbered,
        ErrorCode::InvoiceHasAllocations,
        ErrorCode::InvoiceHasCreditNotes,
        ErrorCode::InvoiceNumberInUse,
        ErrorCode::PaymentOptionUnavailable,
        ErrorCode::TaxRateArchived,
        ErrorCode::TaxRateSystem,
        ErrorCode::TransactionConflict,
        ErrorCode::QueryRejected,
        ErrorCode::RequestTooLarge,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ErrorCode::InvalidAmount => "INVALID_AMOUNT",
            ErrorCode::AmountTooPrecise => "AMOUNT_TOO_PRECISE",
            ErrorCode::AmountNotPositive => "AMOUNT_NOT_POSITIVE",
            ErrorCode::UnknownCurrency => "UNKNOWN_CURRENCY",
            ErrorCode::CurrencyMismatch => "CURRENCY_MISMATCH",
            ErrorCode::InvoiceNotDraft => "INVOICE_NOT_DRAFT",
            ErrorCode::InvoiceNotOpen => "INVOICE_NOT_OPEN",
            ErrorCode::InvoiceVoid => "INVOICE_VOID",
            ErrorCode::InvoiceEmpty => "INVOICE_EMPTY",
            ErrorCode::InvoiceNumbered => "INVOICE_NUMBERED",
            ErrorCode::InvoiceHasAllocations => "INVOICE_HAS_ALLOCATIONS",
            ErrorCode::InvoiceHasCreditNotes => "INVOICE_HAS_CREDIT_NOTES",
            ErrorCode::InvoiceNumberInUse => "INVOICE_NUMBER_IN_USE",
            ErrorCode::PaymentOptionUnavailable => "PAYMENT_OPTION_UNAVAILABLE",
            ErrorCode::TaxRateArchived => "TAX_RATE_ARCHIVED",
            ErrorCode::TaxRateSystem => "TAX_RATE_SYSTEM",
            ErrorCode::TransactionConflict => "TRANSACTION_CONFLICT",
            ErrorCode::QueryRejected => "QUERY_REJECTED",
            ErrorCode::RequestTooLarge => "REQUEST_TOO_LARGE",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// Whether sending the same request again can succeed without changing it.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::TransactionConflict | ErrorCode::Internal)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure to report to a client: a code and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    pub code: ErrorCode,
    pub message: String,
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError { code, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        AppError::new(ErrorCode::InvalidInput, message)
    }

    pub fn not_found(what: &str) -> Self {
        AppError::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// An unexpected failure: the cause goes to the log, the client gets only the code.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        AppError::new(ErrorCode::Internal, "internal error; the request changed nothing and can be retried")
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for AppError {}

impl From<crate::ledger::MoneyError> for AppError {
    fn from(error: crate::ledger::MoneyError) -> Self {
        use crate::ledger::MoneyError as E;
        let code = match &error {
            E::Malformed(_) | E::TooLarge(_) | E::Negative => ErrorCode::InvalidAmount,
            E::TooPrecise { .. } => ErrorCode::AmountTooPrecise,
            E::NotPositive => ErrorCode::AmountNotPositive,
            E::UnknownCurrency(_) => ErrorCode::UnknownCurrency,
            E::CurrencyMismatch(..) => ErrorCode::CurrencyMismatch,
        };
        AppError::new(code, error.to_string())
    }
}

impl From<crate::ledger::tax::LineError> for AppError {
    fn from(error: crate::ledger::tax::LineError) -> Self {
        match error {
            crate::ledger::tax::LineError::Money(money) => money.into(),
            other => AppError::invalid(other.to_string()),
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;
