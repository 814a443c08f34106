//! The one closed list of error codes a client can see, and the error type that carries them.
//!
//! Every failure a client gets has an `extensions.code` from [`ErrorCode`], a message a person can
//! act on, and the request id. docs/errors.md has a paragraph per code; a test keeps the two in
//! step. Codes are stable: a code is never renamed or given a second meaning.

use std::fmt;

/// Declares the codes once: the enum, the list of all codes and their wire names.
macro_rules! error_codes {
    ($($variant:ident => $name:literal,)*) => {
        /// Stable, machine-readable error codes, in the order a request is checked.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, for the documentation test.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }
        }
    };
}

error_codes! {
    Unauthenticated => "UNAUTHENTICATED",
    Forbidden => "FORBIDDEN",
    QueryRejected => "QUERY_REJECTED",
    RequestTooLarge => "REQUEST_TOO_LARGE",
    PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
    TooManyConnections => "TOO_MANY_CONNECTIONS",
    TooManySubscriptions => "TOO_MANY_SUBSCRIPTIONS",
    InvalidInput => "INVALID_INPUT",
    InvalidAmount => "INVALID_AMOUNT",
    AmountTooPrecise => "AMOUNT_TOO_PRECISE",
    AmountNotPositive => "AMOUNT_NOT_POSITIVE",
    UnknownCurrency => "UNKNOWN_CURRENCY",
    NotFound => "NOT_FOUND",
    IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
    CurrencyMismatch => "CURRENCY_MISMATCH",
    ClientMismatch => "CLIENT_MISMATCH",
    InvoiceNotDraft => "INVOICE_NOT_DRAFT",
    InvoiceNotOpen => "INVOICE_NOT_OPEN",
    InvoiceVoid => "INVOICE_VOID",
    InvoiceEmpty => "INVOICE_EMPTY",
    InvoiceNumbered => "INVOICE_NUMBERED",
    InvoiceHasAllocations => "INVOICE_HAS_ALLOCATIONS",
    InvoiceHasCreditNotes => "INVOICE_HAS_CREDIT_NOTES",
    InvoiceNumberInUse => "INVOICE_NUMBER_IN_USE",
    PaymentOptionUnavailable => "PAYMENT_OPTION_UNAVAILABLE",
    PaymentMethodArchived => "PAYMENT_METHOD_ARCHIVED",
    PaymentMethodNeedsCharge => "PAYMENT_METHOD_NEEDS_CHARGE",
    PaymentVoid => "PAYMENT_VOID",
    PaymentHasAllocations => "PAYMENT_HAS_ALLOCATIONS",
    PaymentHasRefunds => "PAYMENT_HAS_REFUNDS",
    AmountExceedsUnallocated => "AMOUNT_EXCEEDS_UNALLOCATED",
    AmountExceedsBalance => "AMOUNT_EXCEEDS_BALANCE",
    AllocationRemoved => "ALLOCATION_REMOVED",
    ReasonRequired => "REASON_REQUIRED",
    CreditExceedsLine => "CREDIT_EXCEEDS_LINE",
    CreditNoteVoid => "CREDIT_NOTE_VOID",
    PaymentDeclined => "PAYMENT_DECLINED",
    ChargePending => "CHARGE_PENDING",
    PluginRejected => "PLUGIN_REJECTED",
    PluginUnavailable => "PLUGIN_UNAVAILABLE",
    InvalidPlugin => "INVALID_PLUGIN",
    InvalidConfig => "INVALID_CONFIG",
    TaxRateArchived => "TAX_RATE_ARCHIVED",
    TaxRateSystem => "TAX_RATE_SYSTEM",
    SubscriberTooSlow => "SUBSCRIBER_TOO_SLOW",
    TransactionConflict => "TRANSACTION_CONFLICT",
    DatabaseUnavailable => "DATABASE_UNAVAILABLE",
    Internal => "INTERNAL",
}

impl ErrorCode {
    /// Whether sending the same request again, unchanged, can succeed. Listed code by code, so a
    /// new code has to be decided here.
    pub fn retryable(self) -> bool {
        use ErrorCode::*;
        match self {
            // Something outside the request was busy or away; the same request may pass later.
            TransactionConflict | DatabaseUnavailable | ChargePending | PluginUnavailable => true,
            // The subscription fell behind and was ended; subscribing again after the last
            // position received goes on where it stopped.
            SubscriberTooSlow => true,
            // The request itself is refused, or met a defect that it will meet again.
            // PERSISTED_QUERY_NOT_FOUND: the same request cannot pass; the one with the query can.
            // TOO_MANY_CONNECTIONS, TOO_MANY_SUBSCRIPTIONS: only once the client has ended another.
            Unauthenticated | Forbidden | QueryRejected | RequestTooLarge | PersistedQueryNotFound | TooManyConnections
            | TooManySubscriptions | InvalidInput | InvalidAmount | AmountTooPrecise
            | AmountNotPositive | UnknownCurrency | NotFound | IdempotencyKeyReused | CurrencyMismatch | ClientMismatch
            | InvoiceNotDraft | InvoiceNotOpen | InvoiceVoid | InvoiceEmpty | InvoiceNumbered | InvoiceHasAllocations
            | InvoiceHasCreditNotes | InvoiceNumberInUse | PaymentOptionUnavailable | PaymentMethodArchived
            | PaymentMethodNeedsCharge | PaymentVoid | PaymentHasAllocations | PaymentHasRefunds | AmountExceedsUnallocated
            | AmountExceedsBalance | AllocationRemoved | ReasonRequired | CreditExceedsLine | CreditNoteVoid | PaymentDeclined
            | PluginRejected | InvalidPlugin | InvalidConfig | TaxRateArchived | TaxRateSystem | Internal => false,
        }
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
    /// What the client reads.
    pub message: String,
    /// What went wrong underneath, for the log only (never sent to a client): logged with the
    /// request id where the error leaves Settle.
    pub cause: Option<String>,
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError { code, message: message.into(), cause: None }
    }

    /// The same error, keeping `cause` for the log.
    pub fn with_cause(self, cause: impl fmt::Display) -> Self {
        AppError { cause: Some(cause.to_string()), ..self }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        AppError::new(ErrorCode::InvalidInput, message)
    }

    pub fn not_found(what: &str) -> Self {
        AppError::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// An unexpected failure: the cause goes to the log, the client gets only the code.
    pub fn internal(cause: impl fmt::Display) -> Self {
        AppError::new(ErrorCode::Internal, "internal error; the request was not applied; report the request id").with_cause(cause)
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        match &self.cause {
            Some(cause) => write!(f, " ({cause})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for AppError {}

impl From<crate::ledger::MoneyError> for AppError {
    fn from(error: crate::ledger::MoneyError) -> Self {
        use crate::ledger::MoneyError as E;
        let code = match &error {
            E::Malformed(_) | E::TooLarge(_) | E::Negative => ErrorCode::InvalidAmount,
            E::TooPrecise { .. } | E::FarTooPrecise(_) => ErrorCode::AmountTooPrecise,
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
