//! Mutation inputs and their parsing into validated values, done once, at the edge.

use async_graphql::{Enum, ID, InputObject};
use rust_decimal::Decimal;
use serde::Serialize;

use super::scalars::{Amount, Date};
use super::types::{DiscountType, TaxMode};
use crate::error::{AppError, AppResult};
use crate::ledger::money::parse_decimal;
use crate::store::directory::{LocationFields, PartyFields};
use crate::store::invoices::{DiscountDraft, InvoiceDraft, LineDraft};

/// Longest name (client, contact, location, tax rate) accepted.
pub const NAME_MAX_CHARS: usize = 200;
/// Longest free text (line description, practitioner, reason) accepted.
pub const TEXT_MAX_CHARS: usize = 1000;
/// Longest invoice notes accepted.
pub const NOTES_MAX_CHARS: usize = 4000;
/// Most lines on one invoice.
pub const LINES_MAX: usize = 200;

/// Trims and checks a required text field.
pub fn required_text(field: &str, value: &str, max: usize) -> AppResult<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(AppError::invalid(format!("{field} is required")));
    }
    checked_length(field, value, max)
}

/// Trims an optional text field; blank means absent.
pub fn optional_text(field: &str, value: Option<&str>, max: usize) -> AppResult<Option<String>> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(value) => checked_length(field, value, max).map(Some),
    }
}

fn checked_length(field: &str, value: &str, max: usize) -> AppResult<String> {
    if value.chars().count() > max {
        return Err(AppError::invalid(format!("{field} is longer than {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(AppError::invalid(format!("{field} contains control characters")));
    }
    Ok(value.to_owned())
}

fn email(value: Option<&str>) -> AppResult<Option<String>> {
    let email = optional_text("email", value, 254)?;
    if let Some(email) = &email {
        let plausible = email.split_once('@').is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
            && !email.contains(char::is_whitespace);
        if !plausible {
            return Err(AppError::invalid(format!("{email:?} is not an email address")));
        }
    }
    Ok(email)
}

/// A decimal that is not money: a quantity or a percentage.
fn plain_decimal(field: &str, value: &str) -> AppResult<Decimal> {
    parse_decimal(value.trim()).map_err(|_| AppError::invalid(format!("{field} must be a decimal such as 1.5, not {value:?}")))
}

/// A client: the person billed.
#[derive(InputObject, Serialize)]
pub struct ClientInput {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// A contact: a third party invoices can be addressed to.
#[derive(InputObject, Serialize)]
pub struct ContactInput {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

fn party_fields(name: &str, email_value: Option<&str>, phone: Option<&str>) -> AppResult<PartyFields> {
    Ok(PartyFields {
        name: required_text("name", name, NAME_MAX_CHARS)?,
        email: email(email_value)?,
        phone: optional_text("phone", phone, 40)?,
    })
}

impl ClientInput {
    pub fn parse(&self) -> AppResult<PartyFields> {
        party_fields(&self.name, self.email.as_deref(), self.phone.as_deref())
    }
}

impl ContactInput {
    pub fn parse(&self) -> AppResult<PartyFields> {
        party_fields(&self.name, self.email.as_deref(), self.phone.as_deref())
    }
}

#[derive(InputObject, Serialize)]
pub struct LocationInput {
    pub name: String,
    pub address: Option<String>,
}

impl LocationInput {
    pub fn parse(&self) -> AppResult<LocationFields> {
        Ok(LocationFields {
            name: required_text("name", &self.name, NAME_MAX_CHARS)?,
            address: optional_text("address", self.address.as_deref(), TEXT_MAX_CHARS)?,
        })
    }
}

/// Settings to change; fields left out stay as they are.
#[derive(InputObject, Serialize, Default)]
pub struct SettingsInput {
    /// ISO 4217 code for new invoices and payments.
    pub currency: Option<String>,
    pub tax_mode: Option<TaxMode>,
    pub payment_terms_days: Option<i32>,
    /// The number the next finalized invoice gets; it cannot go back to a number already issued.
    pub next_invoice_number: Option<i32>,
    /// IANA timezone such as Australia/Sydney.
    pub timezone: Option<String>,
}

/// A tax rate; `percent` is a decimal string such as "10" or "12.5".
#[derive(InputObject, Serialize)]
pub struct TaxRateInput {
    pub name: String,
    pub percent: String,
}

/// Percent of a tax rate: 0 to 100, at most 4 decimal places.
pub fn tax_percent(value: &str) -> AppResult<Decimal> {
    let percent = plain_decimal("percent", value)?;
    if percent < Decimal::ZERO || percent > Decimal::ONE_HUNDRED || percent.normalize().scale() > 4 {
        return Err(AppError::invalid("percent must be between 0 and 100 with at most 4 decimal places"));
    }
    Ok(percent.normalize())
}

#[derive(InputObject, Serialize)]
pub struct DiscountInput {
    #[graphql(name = "type")]
    pub kind: DiscountType,
    /// An amount ("5.00") or a percentage ("10").
    pub value: String,
}

#[derive(InputObject, Serialize)]
pub struct LineItemInput {
    pub description: String,
    pub item_code: Option<String>,
    /// Decimal quantity such as "1" or "0.5"; 1 when left out.
    pub quantity: Option<String>,
    pub unit_price: Amount,
    pub discount: Option<DiscountInput>,
    pub tax_rate_id: Option<ID>,
}

/// An invoice's fields and lines. On update, the lines given replace all lines.
#[derive(InputObject, Serialize)]
pub struct InvoiceInput {
    pub client_id: ID,
    /// A contact to address the invoice to.
    pub bill_to_id: Option<ID>,
    pub location_id: ID,
    pub practitioner: Option<String>,
    /// Today in the practice's timezone when left out.
    pub issue_date: Option<Date>,
    /// Issue date + the practice's payment terms when left out.
    pub due_date: Option<Date>,
    /// The practice's currency when left out.
    pub currency: Option<String>,
    pub notes: Option<String>,
    #[graphql(default)]
    pub lines: Vec<LineItemInput>,
}

impl InvoiceInput {
    pub fn parse(&self, today: chrono::NaiveDate) -> AppResult<InvoiceDraft> {
        if self.lines.len() > LINES_MAX {
            return Err(AppError::invalid(format!("an invoice has at most {LINES_MAX} lines")));
        }
        let currency = match &self.currency {
            None => None,
            Some(code) => Some(crate::ledger::Currency::parse(code.trim())?.code().to_owned()),
        };
        let lines = self
            .lines
            .iter()
            .enumerate()
            .map(|(index, line)| {
                let at = |e: AppError| AppError::new(e.code, format!("line {}: {}", index + 1, e.message));
                let discount = match &line.discount {
                    None => None,
                    // A fixed discount is money: it is parsed like every amount (M1).
                    Some(d) if d.kind == DiscountType::Amount => {
                        Some(DiscountDraft::Amount(parse_decimal(d.value.trim()).map_err(|e| at(e.into()))?))
                    }
                    Some(d) => Some(DiscountDraft::Percent(plain_decimal("discount", &d.value).map_err(at)?)),
                };
                Ok(LineDraft {
                    description: required_text("description", &line.description, TEXT_MAX_CHARS).map_err(at)?,
                    item_code: optional_text("item code", line.item_code.as_deref(), 64).map_err(at)?,
                    quantity: match &line.quantity {
                        None => Decimal::ONE,
                        Some(q) => plain_decimal("quantity", q).map_err(at)?,
                    },
                    unit_price: line.unit_price.0,
                    discount,
                    tax_rate: line.tax_rate_id.as_ref().map(|id| id.0.clone()),
                })
            })
            .collect::<AppResult<Vec<_>>>()?;
        Ok(InvoiceDraft {
            client: self.client_id.0.clone(),
            contact: self.bill_to_id.as_ref().map(|id| id.0.clone()),
            location: self.location_id.0.clone(),
            practitioner: optional_text("practitioner", self.practitioner.as_deref(), NAME_MAX_CHARS)?,
            issue_date: self.issue_date.map_or(today, |d| d.0),
            due_date: self.due_date.map(|d| d.0),
            currency,
            notes: optional_text("notes", self.notes.as_deref(), NOTES_MAX_CHARS)?,
            lines,
        })
    }
}

/// How a finalized invoice is to be paid (I2).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Serialize, Default)]
pub enum PaymentOption {
    /// Send the invoice; it stays OPEN until paid.
    #[default]
    RequestPayment,
    /// Record a new manual payment and allocate it to the invoice.
    ApplyPayment,
    /// Charge through a plugin-backed payment method.
    Charge,
}

/// The payment taken at finalize with APPLY_PAYMENT (a manual method) or CHARGE (a method whose
/// plugin charges).
#[derive(InputObject, Serialize)]
pub struct FinalizePaymentInput {
    pub method_id: ID,
    /// Details for the method's plugin, e.g. {"card_number": "4242424242424242"}.
    pub details: Option<async_graphql::Json<serde_json::Value>>,
    /// The invoice balance when left out.
    pub amount: Option<Amount>,
    pub date: Option<Date>,
    pub location_id: Option<ID>,
    pub description: Option<String>,
}

#[derive(InputObject, Serialize, Default)]
pub struct FinalizeInvoiceInput {
    #[graphql(default)]
    pub payment_option: PaymentOption,
    /// Required with APPLY_PAYMENT and CHARGE.
    pub payment: Option<FinalizePaymentInput>,
}
