//! Invoices and payments as a client sees them, with the allocations that link them and the
//! credit notes of invoices: object types only. These types name each other (an invoice lists its allocations, an allocation names its
//! invoice and its payment, a payment lists its allocations), and an object type names the types
//! of its fields, so they share this file rather than make invoices.rs and payments.rs import
//! each other. The queries, mutations and inputs of each are in those two files.

use super::proofs::BalanceProof;
use crate::store::proofs;
use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::context::{caller, tenant, today};
use super::directory::{Client, Contact, Location};
use super::errors::unknown_state;
use super::loader;
use super::methods::PaymentMethod;
use super::money::Money;
use super::practice::TaxMode;
use super::scalars::Date;
use crate::auth::Role;
use crate::error::AppError;
use crate::ledger::invoice::{self as invoice_rules, DisplayStatus};
use crate::ledger::numbering::format_number;
use crate::ledger::payment as payment_rules;
use crate::store::invoices::parse_status;
use crate::store::rows::{AllocationRow, CreditNoteRow, InvoiceRow, LineRow, PaymentRow, RefundRow, key_of};

/// The status a person sees. OVERDUE is derived: OPEN with a due date before today in the
/// practice's timezone (I4).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum InvoiceStatus {
    Draft,
    Open,
    Overdue,
    Paid,
    Void,
}

impl From<DisplayStatus> for InvoiceStatus {
    fn from(status: DisplayStatus) -> Self {
        match status {
            DisplayStatus::Draft => InvoiceStatus::Draft,
            DisplayStatus::Open => InvoiceStatus::Open,
            DisplayStatus::Overdue => InvoiceStatus::Overdue,
            DisplayStatus::Paid => InvoiceStatus::Paid,
            DisplayStatus::Void => InvoiceStatus::Void,
        }
    }
}

impl From<InvoiceStatus> for DisplayStatus {
    fn from(status: InvoiceStatus) -> Self {
        match status {
            InvoiceStatus::Draft => DisplayStatus::Draft,
            InvoiceStatus::Open => DisplayStatus::Open,
            InvoiceStatus::Overdue => DisplayStatus::Overdue,
            InvoiceStatus::Paid => DisplayStatus::Paid,
            InvoiceStatus::Void => DisplayStatus::Void,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, serde::Serialize)]
pub enum DiscountType {
    /// A fixed amount off the line.
    Amount,
    /// A percentage of quantity x unit price.
    Percent,
}

/// One line of an invoice with its computed totals.
pub struct LineItem {
    row: LineRow,
    currency: String,
}

#[Object]
impl LineItem {
    async fn description(&self) -> &str {
        &self.row.description
    }
    async fn item_code(&self) -> Option<&str> {
        self.row.item_code.as_deref()
    }
    /// Exact decimal quantity, e.g. "1.5".
    async fn quantity(&self) -> String {
        self.row.quantity.normalize().to_string()
    }
    async fn unit_price(&self) -> Money {
        Money::of(self.row.unit_price, &self.currency)
    }
    async fn discount_type(&self) -> Option<DiscountType> {
        match self.row.discount_kind.as_deref() {
            Some("AMOUNT") => Some(DiscountType::Amount),
            Some("PERCENT") => Some(DiscountType::Percent),
            _ => None,
        }
    }
    /// The discount as entered: an amount or a percentage.
    async fn discount_value(&self) -> Option<String> {
        self.row.discount_value.map(|v| v.normalize().to_string())
    }
    /// The discount taken off this line.
    async fn discount(&self) -> Money {
        Money::of(self.row.discount, &self.currency)
    }
    async fn tax_rate_id(&self) -> Option<ID> {
        self.row.tax_rate.clone().map(ID)
    }
    /// Tax rate name and percent as they were when the line was saved.
    async fn tax_rate_name(&self) -> Option<&str> {
        self.row.tax_name.as_deref()
    }
    async fn tax_percent(&self) -> Option<String> {
        self.row.tax_percent.map(|p| p.normalize().to_string())
    }
    /// Amount excluding tax.
    async fn subtotal(&self) -> Money {
        Money::of(self.row.subtotal, &self.currency)
    }
    async fn tax(&self) -> Money {
        Money::of(self.row.tax, &self.currency)
    }
    async fn total(&self) -> Money {
        Money::of(self.row.total, &self.currency)
    }
}

/// An invoice. Its number is given when it is first finalized.
pub struct Invoice {
    pub row: InvoiceRow,
    /// Today in the tenant's timezone, for the derived OVERDUE status.
    pub today: NaiveDate,
}

impl Invoice {
    fn money(&self, amount: Decimal) -> Money {
        Money::of(amount, &self.row.doc.currency)
    }

    pub(super) fn status_value(&self) -> DisplayStatus {
        let due = NaiveDate::parse_from_str(&self.row.doc.due_date, "%Y-%m-%d").unwrap_or(self.today);
        invoice_rules::display_status(parse_status(&self.row.doc.status), due, self.today)
    }
}

#[Object]
impl Invoice {
    async fn id(&self) -> ID {
        ID(key_of(&self.row.id))
    }
    /// INV-0001 style; null until the invoice is first finalized.
    async fn number(&self) -> Option<String> {
        self.row.doc.number.map(|n| format_number("INV", n))
    }
    async fn status(&self) -> InvoiceStatus {
        self.status_value().into()
    }
    /// OPEN with the due date passed (I4).
    async fn overdue(&self) -> bool {
        self.status_value() == DisplayStatus::Overdue
    }
    async fn client(&self, ctx: &Context<'_>) -> Result<Client> {
        let row = loader::client(ctx, &self.row.doc.client).await?;
        Ok(Client(row.ok_or_else(|| AppError::not_found("client"))?))
    }
    /// The third party the invoice is addressed to, if any.
    async fn bill_to(&self, ctx: &Context<'_>) -> Result<Option<Contact>> {
        let Some(contact) = &self.row.doc.contact else { return Ok(None) };
        Ok(loader::contact(ctx, contact).await?.map(Contact))
    }
    async fn location(&self, ctx: &Context<'_>) -> Result<Location> {
        let row = loader::location(ctx, &self.row.doc.location).await?;
        Ok(Location(row.ok_or_else(|| AppError::not_found("location"))?))
    }
    async fn practitioner(&self) -> Option<&str> {
        self.row.doc.practitioner.as_deref()
    }
    async fn issue_date(&self) -> Option<Date> {
        NaiveDate::parse_from_str(&self.row.doc.issue_date, "%Y-%m-%d").ok().map(Date)
    }
    async fn due_date(&self) -> Option<Date> {
        NaiveDate::parse_from_str(&self.row.doc.due_date, "%Y-%m-%d").ok().map(Date)
    }
    async fn currency(&self) -> &str {
        &self.row.doc.currency
    }
    /// The tax mode the invoice was created under.
    async fn tax_mode(&self) -> TaxMode {
        TaxMode::parse(&self.row.doc.tax_mode)
    }
    async fn notes(&self) -> Option<&str> {
        self.row.doc.notes.as_deref()
    }
    async fn lines(&self) -> Vec<LineItem> {
        self.row
            .doc
            .lines
            .iter()
            .map(|row| LineItem { row: row.clone(), currency: self.row.doc.currency.clone() })
            .collect()
    }
    /// Sum of line amounts excluding tax.
    async fn subtotal(&self) -> Money {
        self.money(self.row.doc.subtotal)
    }
    /// Sum of line discounts.
    async fn discount_total(&self) -> Money {
        self.money(self.row.doc.discount)
    }
    async fn tax_total(&self) -> Money {
        self.money(self.row.doc.tax)
    }
    async fn total(&self) -> Money {
        self.money(self.row.doc.total)
    }
    /// Sum of active allocations.
    async fn amount_paid(&self) -> Money {
        self.money(self.row.doc.paid)
    }
    /// Sum of issued credit notes.
    async fn amount_credited(&self) -> Money {
        self.money(self.row.doc.credited)
    }
    /// What is still owed: total - amount paid - amount credited, never negative (M4).
    async fn balance(&self) -> Money {
        self.money(self.row.doc.facts().balance())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.doc.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.doc.updated_at
    }
    async fn finalized_at(&self) -> Option<DateTime<Utc>> {
        self.row.doc.finalized_at
    }
    async fn voided_at(&self) -> Option<DateTime<Utc>> {
        self.row.doc.voided_at
    }
    async fn void_reason(&self) -> Option<&str> {
        self.row.doc.void_reason.as_deref()
    }
    /// Every allocation to this invoice, removed ones included.
    async fn allocations(&self, ctx: &Context<'_>) -> Result<Vec<Allocation>> {
        caller(ctx, Role::Viewer)?;
        let rows = loader::allocations_of_invoice(ctx, &key_of(&self.row.id)).await?;
        Ok(rows.into_iter().map(Allocation).collect())
    }
    /// Credit notes of this invoice, void ones included.
    async fn credit_notes(&self, ctx: &Context<'_>) -> Result<Vec<CreditNote>> {
        caller(ctx, Role::Viewer)?;
        let rows = loader::credit_notes_of(ctx, &key_of(&self.row.id)).await?;
        Ok(rows.into_iter().map(CreditNote).collect())
    }
    /// Why `balance` is what it is (M4): the total, then each active allocation and each issued
    /// credit note in the order they happened, with who wrote each and the balance after it;
    /// `holds` is false if the stored balance is not what they add up to.
    async fn balance_proof(&self, ctx: &Context<'_>) -> Result<BalanceProof> {
        caller(ctx, Role::Viewer)?;
        let key = key_of(&self.row.id);
        let allocations = loader::allocations_of_invoice(ctx, &key).await?;
        let credit_notes = loader::credit_notes_of(ctx, &key).await?;
        let proof = proofs::invoice_balance(&self.row, &allocations, &credit_notes);
        Ok(BalanceProof { proof, currency: self.row.doc.currency.clone() })
    }
}

/// What became of the money a payment received (P8). Where that money sits, on invoices or as
/// the client's credit, is the payment's `allocationState`.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum PaymentStatus {
    /// Received, none of it refunded: on invoices, held as credit, or both.
    Received,
    /// Part of the money was refunded.
    PartiallyRefunded,
    /// All of the money was refunded.
    Refunded,
    /// Voided: a record corrected, no money moved (V2).
    Void,
}

impl From<payment_rules::PaymentStatus> for PaymentStatus {
    fn from(status: payment_rules::PaymentStatus) -> Self {
        match status {
            payment_rules::PaymentStatus::Received => PaymentStatus::Received,
            payment_rules::PaymentStatus::PartiallyRefunded => PaymentStatus::PartiallyRefunded,
            payment_rules::PaymentStatus::Refunded => PaymentStatus::Refunded,
            payment_rules::PaymentStatus::Void => PaymentStatus::Void,
        }
    }
}

impl From<PaymentStatus> for payment_rules::PaymentStatus {
    fn from(status: PaymentStatus) -> Self {
        match status {
            PaymentStatus::Received => payment_rules::PaymentStatus::Received,
            PaymentStatus::PartiallyRefunded => payment_rules::PaymentStatus::PartiallyRefunded,
            PaymentStatus::Refunded => payment_rules::PaymentStatus::Refunded,
            PaymentStatus::Void => payment_rules::PaymentStatus::Void,
        }
    }
}

/// How much of a payment's money (what was not refunded) sits on invoices (P8); the rest is the
/// client's credit.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum AllocationState {
    Unallocated,
    PartiallyAllocated,
    Allocated,
}

impl From<payment_rules::AllocationState> for AllocationState {
    fn from(state: payment_rules::AllocationState) -> Self {
        match state {
            payment_rules::AllocationState::Unallocated => AllocationState::Unallocated,
            payment_rules::AllocationState::PartiallyAllocated => AllocationState::PartiallyAllocated,
            payment_rules::AllocationState::Allocated => AllocationState::Allocated,
        }
    }
}

impl From<AllocationState> for payment_rules::AllocationState {
    fn from(state: AllocationState) -> Self {
        match state {
            AllocationState::Unallocated => payment_rules::AllocationState::Unallocated,
            AllocationState::PartiallyAllocated => payment_rules::AllocationState::PartiallyAllocated,
            AllocationState::Allocated => payment_rules::AllocationState::Allocated,
        }
    }
}

/// Money received from a client.
pub struct Payment(pub PaymentRow);

impl Payment {
    fn money(&self, amount: Decimal) -> Money {
        Money::of(amount, &self.0.doc.currency)
    }
}

#[Object]
impl Payment {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    /// PAY-0001 style; null only in the moment between the payment's commit and its numbering.
    async fn number(&self) -> Option<String> {
        self.0.doc.display_number()
    }
    async fn client(&self, ctx: &Context<'_>) -> Result<Client> {
        let row = loader::client(ctx, &self.0.doc.client).await?;
        Ok(Client(row.ok_or_else(|| AppError::not_found("client"))?))
    }
    /// Where the money was received.
    async fn location(&self, ctx: &Context<'_>) -> Result<Location> {
        let row = loader::location(ctx, &self.0.doc.location).await?;
        Ok(Location(row.ok_or_else(|| AppError::not_found("location"))?))
    }
    /// The payment method as it is now; `methodName` keeps its name when the payment was taken.
    async fn method(&self, ctx: &Context<'_>) -> Result<PaymentMethod> {
        let row = loader::payment_method(ctx, &self.0.doc.method).await?;
        Ok(PaymentMethod(row.ok_or_else(|| AppError::not_found("payment method"))?))
    }
    /// The method's name when the payment was taken.
    async fn method_name(&self) -> &str {
        &self.0.doc.method_name
    }
    async fn date(&self) -> Option<Date> {
        NaiveDate::parse_from_str(&self.0.doc.date, "%Y-%m-%d").ok().map(Date)
    }
    async fn amount(&self) -> Money {
        self.money(self.0.doc.amount)
    }
    /// Sum of active allocations.
    async fn allocated(&self) -> Money {
        self.money(self.0.doc.allocated)
    }
    /// Sum of successful refunds.
    async fn refunded(&self) -> Money {
        self.money(self.0.doc.refunded)
    }
    /// amount - allocated - refunded (M5): credit the client can still use or be refunded.
    async fn unallocated(&self) -> Result<Money> {
        Ok(self.money(self.0.doc.facts()?.unallocated()))
    }
    async fn status(&self) -> Result<PaymentStatus> {
        Ok(self.0.doc.facts()?.status().into())
    }
    async fn allocation_state(&self) -> Result<AllocationState> {
        Ok(self.0.doc.facts()?.allocation_state().into())
    }
    async fn currency(&self) -> &str {
        &self.0.doc.currency
    }
    async fn description(&self) -> Option<&str> {
        self.0.doc.description.as_deref()
    }
    /// Set by a plugin, e.g. a gateway's charge id.
    async fn external_reference(&self) -> Option<&str> {
        self.0.doc.external_reference.as_deref()
    }
    /// Every allocation of the payment, removed ones included.
    async fn allocations(&self, ctx: &Context<'_>) -> Result<Vec<Allocation>> {
        caller(ctx, Role::Viewer)?;
        let rows = loader::allocations_of_payment(ctx, &key_of(&self.0.id)).await?;
        Ok(rows.into_iter().map(Allocation).collect())
    }
    async fn refunds(&self, ctx: &Context<'_>) -> Result<Vec<Refund>> {
        caller(ctx, Role::Viewer)?;
        let rows = loader::refunds_of(ctx, &key_of(&self.0.id)).await?;
        Ok(rows.into_iter().map(Refund).collect())
    }
    /// Why `unallocated` is what it is (M5): the amount, then each active allocation, each
    /// successful refund and each refund still pending, in the order they happened, with who
    /// wrote each and the figure after it; `holds` is false if the stored sums do not add up.
    async fn unallocated_proof(&self, ctx: &Context<'_>) -> Result<BalanceProof> {
        caller(ctx, Role::Viewer)?;
        let key = key_of(&self.0.id);
        let allocations = loader::allocations_of_payment(ctx, &key).await?;
        let refunds = loader::refunds_of(ctx, &key).await?;
        let proof = proofs::payment_unallocated(&self.0, &allocations, &refunds, self.0.doc.facts()?.unallocated());
        Ok(BalanceProof { proof, currency: self.0.doc.currency.clone() })
    }
    async fn voided_at(&self) -> Option<DateTime<Utc>> {
        self.0.doc.voided_at
    }
    async fn void_reason(&self) -> Option<&str> {
        self.0.doc.void_reason.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.doc.created_at
    }
}

/// Part of a payment moved onto an invoice. A removed allocation stays, marked removed (P6).
pub struct Allocation(pub AllocationRow);

#[Object]
impl Allocation {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    /// The payment's number and the allocation's place on it: PAY-0007-2.
    async fn number(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let payment = loader::payment(ctx, &self.0.payment).await?;
        Ok(payment.and_then(|p| p.doc.display_number()).map(|number| format!("{number}-{}", self.0.sequence)))
    }
    async fn payment_id(&self) -> ID {
        ID(self.0.payment.clone())
    }
    async fn invoice_id(&self) -> ID {
        ID(self.0.invoice.clone())
    }
    async fn payment(&self, ctx: &Context<'_>) -> Result<Option<Payment>> {
        Ok(loader::payment(ctx, &self.0.payment).await?.map(Payment))
    }
    async fn invoice(&self, ctx: &Context<'_>) -> Result<Option<Invoice>> {
        let today = today(tenant(ctx).await?);
        Ok(loader::invoice(ctx, &self.0.invoice).await?.map(|row| Invoice { row, today }))
    }
    async fn amount(&self) -> Money {
        Money::of(self.0.amount, &self.0.currency)
    }
    async fn active(&self) -> bool {
        self.0.active
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn created_by(&self) -> &str {
        &self.0.created_by
    }
    async fn removed_at(&self) -> Option<DateTime<Utc>> {
        self.0.removed_at
    }
    async fn removed_by(&self) -> Option<&str> {
        self.0.removed_by.as_deref()
    }
}

// Stored as text on the refund; converted here and nowhere else.
/// How a refund ended, as the payment method's plugin reported it (F3).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum RefundOutcome {
    /// The money went back to the client.
    Succeeded,
    /// The plugin refused the refund; no balance changed.
    Declined,
    /// Sent to the plugin and not settled yet; the amount is held back on the payment.
    Pending,
}

impl From<crate::events::RefundOutcome> for RefundOutcome {
    fn from(outcome: crate::events::RefundOutcome) -> Self {
        use crate::events::RefundOutcome as Known;
        match outcome {
            Known::Succeeded => RefundOutcome::Succeeded,
            Known::Declined => RefundOutcome::Declined,
            Known::Pending => RefundOutcome::Pending,
        }
    }
}

impl RefundOutcome {
    pub fn parse(stored: &str) -> Option<RefundOutcome> {
        crate::events::RefundOutcome::parse(stored).map(RefundOutcome::from)
    }

    /// The text the store keeps.
    pub fn as_stored(self) -> &'static str {
        match self {
            RefundOutcome::Succeeded => "SUCCEEDED",
            RefundOutcome::Declined => "DECLINED",
            RefundOutcome::Pending => "PENDING",
        }
    }
}

/// Money returned to a client from a payment's unallocated amount.
pub struct Refund(pub RefundRow);

#[Object]
impl Refund {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    async fn payment_id(&self) -> ID {
        ID(self.0.payment.clone())
    }
    async fn amount(&self) -> Money {
        Money::of(self.0.amount, &self.0.currency)
    }
    async fn date(&self) -> Option<Date> {
        NaiveDate::parse_from_str(&self.0.date, "%Y-%m-%d").ok().map(Date)
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// As the payment method's plugin reported.
    async fn outcome(&self) -> Result<RefundOutcome> {
        let found_in = format!("refund:{}", key_of(&self.0.id));
        Ok(RefundOutcome::parse(&self.0.outcome).ok_or_else(|| unknown_state(&found_in, "outcome", &self.0.outcome))?)
    }
    async fn outcome_reason(&self) -> Option<&str> {
        self.0.outcome_reason.as_deref()
    }
    /// The gateway's id of the refund, given by the plugin when the refund succeeds; null for a
    /// refund that is only recorded (a manual method) or did not succeed.
    async fn external_reference(&self) -> Option<&str> {
        self.0.external_reference.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

#[cfg(test)]
mod tests {
    use super::RefundOutcome;

    #[test]
    fn refund_outcomes_round_trip_through_their_stored_text() {
        for outcome in [RefundOutcome::Succeeded, RefundOutcome::Declined, RefundOutcome::Pending] {
            assert_eq!(RefundOutcome::parse(outcome.as_stored()), Some(outcome));
        }
        assert_eq!(RefundOutcome::parse("FAILED"), None, "a charge attempt's status is not a refund outcome");
    }
}

/// A credit against one invoice: it lowers that invoice's balance only (C3).
pub struct CreditNote(pub CreditNoteRow);

// Stored as text on the credit note; converted here and nowhere else.
/// Whether a credit note counts against its invoice (C4).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum CreditNoteStatus {
    /// Lowers its invoice's balance.
    Issued,
    /// Voided: its invoice owes the amount again.
    Void,
}

impl CreditNoteStatus {
    pub fn parse(stored: &str) -> Option<CreditNoteStatus> {
        match stored {
            "ISSUED" => Some(CreditNoteStatus::Issued),
            "VOID" => Some(CreditNoteStatus::Void),
            _ => None,
        }
    }

    /// The text the store keeps.
    pub fn as_stored(self) -> &'static str {
        match self {
            CreditNoteStatus::Issued => "ISSUED",
            CreditNoteStatus::Void => "VOID",
        }
    }
}

#[derive(SimpleObject)]
pub struct CreditNoteLine {
    /// Index of the credited invoice line, from 0.
    pub line_index: i32,
    pub description: String,
    pub quantity: Option<String>,
    pub subtotal: Money,
    pub tax: Money,
    pub total: Money,
}

#[Object]
impl CreditNote {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    /// CN-0001 style.
    async fn number(&self) -> String {
        format_number("CN", self.0.number)
    }
    async fn invoice_id(&self) -> ID {
        ID(self.0.invoice.clone())
    }
    async fn date(&self) -> Option<Date> {
        NaiveDate::parse_from_str(&self.0.date, "%Y-%m-%d").ok().map(Date)
    }
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    async fn status(&self) -> Result<CreditNoteStatus> {
        let found_in = format!("credit_note:{}", key_of(&self.0.id));
        Ok(CreditNoteStatus::parse(&self.0.status).ok_or_else(|| unknown_state(&found_in, "status", &self.0.status))?)
    }
    async fn lines(&self) -> Vec<CreditNoteLine> {
        let currency = &self.0.currency;
        self.0
            .lines
            .iter()
            .map(|line| CreditNoteLine {
                line_index: line.line as i32,
                description: line.description.clone(),
                quantity: line.quantity.map(|q| q.normalize().to_string()),
                subtotal: Money::of(line.subtotal, currency),
                tax: Money::of(line.tax, currency),
                total: Money::of(line.total, currency),
            })
            .collect()
    }
    async fn subtotal(&self) -> Money {
        Money::of(self.0.subtotal, &self.0.currency)
    }
    async fn tax(&self) -> Money {
        Money::of(self.0.tax, &self.0.currency)
    }
    async fn total(&self) -> Money {
        Money::of(self.0.total, &self.0.currency)
    }
    async fn voided_at(&self) -> Option<DateTime<Utc>> {
        self.0.voided_at
    }
    async fn void_reason(&self) -> Option<&str> {
        self.0.void_reason.as_deref()
    }
}
