//! Output types: how stored records look to a client.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::scalars::Date;
use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::ledger::invoice::{self as rules, DisplayStatus};
use crate::ledger::numbering::format_number;
use crate::store::Store;
use crate::store::directory::PartyKind;
use crate::store::invoices::parse_status;
use crate::store::rows::{AuditRow, InvoiceRow, LineRow, LocationRow, PartyRow, TaxRateRow, TenantRow, key_of};

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

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, serde::Serialize)]
pub enum TaxMode {
    /// Prices exclude tax; tax is added.
    Exclusive,
    /// Prices include tax; tax is the part of the price the rate accounts for.
    Inclusive,
    /// No tax.
    None,
}

impl TaxMode {
    pub fn parse(text: &str) -> TaxMode {
        match text {
            "INCLUSIVE" => TaxMode::Inclusive,
            "NONE" => TaxMode::None,
            _ => TaxMode::Exclusive,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaxMode::Exclusive => "EXCLUSIVE",
            TaxMode::Inclusive => "INCLUSIVE",
            TaxMode::None => "NONE",
        }
    }
}

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

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Role {
    Viewer,
    Billing,
    Admin,
}

impl From<crate::auth::Role> for Role {
    fn from(role: crate::auth::Role) -> Self {
        match role {
            crate::auth::Role::Viewer => Role::Viewer,
            crate::auth::Role::Billing => Role::Billing,
            crate::auth::Role::Admin => Role::Admin,
        }
    }
}

/// The caller, as the token names them.
#[derive(SimpleObject)]
pub struct Viewer {
    pub subject: String,
    pub tenant: String,
    pub role: Role,
}

/// A practice's settings.
pub struct Settings(pub TenantRow);

#[Object]
impl Settings {
    /// Default currency of new invoices and payments (ISO 4217).
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    async fn tax_mode(&self) -> TaxMode {
        TaxMode::parse(&self.0.tax_mode)
    }
    /// Days from issue date to due date when an invoice gives no due date.
    async fn payment_terms_days(&self) -> i64 {
        self.0.payment_terms_days
    }
    /// The number the next finalized invoice gets.
    async fn next_invoice_number(&self) -> i64 {
        self.0.next_invoice_number
    }
    /// IANA timezone, e.g. Australia/Sydney: decides what "today" and "overdue" mean.
    async fn timezone(&self) -> &str {
        &self.0.timezone
    }
}

/// Declares a party type (clients and contacts share their fields) with any extra fields.
macro_rules! party_object {
    ($(#[$meta:meta])* $name:ident { $($extra:tt)* }) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name(pub PartyRow);

        #[Object]
        impl $name {
            async fn id(&self) -> ID {
                ID(key_of(&self.0.id))
            }
            async fn name(&self) -> &str {
                &self.0.name
            }
            async fn email(&self) -> Option<&str> {
                self.0.email.as_deref()
            }
            async fn phone(&self) -> Option<&str> {
                self.0.phone.as_deref()
            }
            async fn created_at(&self) -> DateTime<Utc> {
                self.0.created_at
            }
            $($extra)*
        }
    };
}

party_object!(
    /// A person billed by the practice.
    Client {
        /// What the client owes and the credit they hold (B1), in `currency` (the practice's
        /// currency when left out).
        async fn balance(&self, ctx: &Context<'_>, currency: Option<String>) -> async_graphql::Result<super::payments::ClientBalance> {
            Ok(super::payments::client_balance(ctx, &key_of(&self.0.id), currency).await?)
        }
        /// The client's account from `from` to `to` with a running balance (B2), in `currency`
        /// (the practice's currency when left out).
        async fn statement(
            &self,
            ctx: &Context<'_>,
            from: Date,
            to: Date,
            currency: Option<String>,
        ) -> async_graphql::Result<super::payments::Statement> {
            Ok(super::payments::client_statement(ctx, &key_of(&self.0.id), from, to, currency).await?)
        }
    }
);

party_object!(
    /// A third party invoices can be addressed to ("bill to"): an insurer, a plan manager.
    Contact {}
);

/// Where a service is given or money received.
#[derive(Clone)]
pub struct Location(pub LocationRow);

#[Object]
impl Location {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn address(&self) -> Option<&str> {
        self.0.address.as_deref()
    }
}

/// A tax rate. System rates cannot be edited or archived; archived rates cannot be chosen for
/// new lines.
pub struct TaxRate(pub TaxRateRow);

#[Object]
impl TaxRate {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Percent, e.g. "10" for 10%.
    async fn percent(&self) -> String {
        self.0.percent.normalize().to_string()
    }
    async fn system(&self) -> bool {
        self.0.system
    }
    async fn archived(&self) -> bool {
        self.0.archived
    }
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

    fn status_value(&self) -> DisplayStatus {
        let due = NaiveDate::parse_from_str(&self.row.doc.due_date, "%Y-%m-%d").unwrap_or(self.today);
        rules::display_status(parse_status(&self.row.doc.status), due, self.today)
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
    async fn client(&self, ctx: &Context<'_>) -> async_graphql::Result<Client> {
        let loader = ctx.data_unchecked::<DataLoader<RecordLoader>>();
        let row = loader.load_one(RecordKey::client(&self.row.doc.client)).await.map_err(|e| (*e).clone())?;
        match row {
            Some(Record::Party(row)) => Ok(Client(row)),
            _ => Err(AppError::not_found("client").into()),
        }
    }
    /// The third party the invoice is addressed to, if any.
    async fn bill_to(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Contact>> {
        let Some(contact) = &self.row.doc.contact else { return Ok(None) };
        let loader = ctx.data_unchecked::<DataLoader<RecordLoader>>();
        match loader.load_one(RecordKey::contact(contact)).await.map_err(|e| (*e).clone())? {
            Some(Record::Party(row)) => Ok(Some(Contact(row))),
            _ => Ok(None),
        }
    }
    async fn location(&self, ctx: &Context<'_>) -> async_graphql::Result<Location> {
        let loader = ctx.data_unchecked::<DataLoader<RecordLoader>>();
        match loader.load_one(RecordKey::location(&self.row.doc.location)).await.map_err(|e| (*e).clone())? {
            Some(Record::Location(row)) => Ok(Location(row)),
            _ => Err(AppError::not_found("location").into()),
        }
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
    async fn allocations(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<super::payments::Allocation>> {
        let request = super::context::caller(ctx, crate::auth::Role::Viewer)?;
        let rows = super::context::state(ctx)
            .store
            .allocations_of(&request.principal.tenant, crate::store::payments::AllocationOf::Invoice, &key_of(&self.row.id))
            .await?;
        Ok(rows.into_iter().map(super::payments::Allocation).collect())
    }
    /// Credit notes of this invoice, void ones included.
    async fn credit_notes(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<super::payments::CreditNote>> {
        let request = super::context::caller(ctx, crate::auth::Role::Viewer)?;
        let rows = super::context::state(ctx).store.credit_notes_of(&request.principal.tenant, &key_of(&self.row.id)).await?;
        Ok(rows.into_iter().map(super::payments::CreditNote).collect())
    }
}

/// An immutable record of a change: who, when, what, which records, before and after.
#[derive(Clone)]
pub struct AuditEvent(pub AuditRow);

#[Object]
impl AuditEvent {
    async fn id(&self) -> ID {
        ID(key_of(&self.0.id))
    }
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// The token subject that made the change.
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    /// e.g. invoice.finalize.
    async fn action(&self) -> &str {
        &self.0.action
    }
    /// Records touched, as "table:id".
    async fn records(&self) -> &[String] {
        &self.0.records
    }
    /// State before, as JSON text.
    async fn before(&self) -> Option<&str> {
        self.0.before.as_deref()
    }
    /// State after, as JSON text.
    async fn after(&self) -> Option<&str> {
        self.0.after.as_deref()
    }
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    async fn idempotency_key(&self) -> Option<&str> {
        self.0.idempotency_key.as_deref()
    }
    async fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }
}

/// The limits this server enforces, so clients can size their requests.
#[derive(SimpleObject)]
pub struct Limits {
    pub page_size_max: i32,
    pub query_depth_max: i32,
    pub query_complexity_max: i32,
    /// Most selections (fields, fragment spreads, inline fragments) a query may hold once its
    /// fragments are expanded.
    pub query_selections_max: i32,
    pub body_size_max_bytes: i32,
    pub query_length_max_bytes: i32,
    pub idempotency_key_max_chars: i32,
}

/// A record a nested field refers to, loaded in batches per request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    table: &'static str,
    key: String,
}

impl RecordKey {
    pub fn client(key: &str) -> Self {
        RecordKey { table: PartyKind::Client.table(), key: key.to_owned() }
    }
    pub fn contact(key: &str) -> Self {
        RecordKey { table: PartyKind::Contact.table(), key: key.to_owned() }
    }
    pub fn location(key: &str) -> Self {
        RecordKey { table: "location", key: key.to_owned() }
    }
}

#[derive(Debug, Clone)]
pub enum Record {
    Party(PartyRow),
    Location(LocationRow),
}

/// Loads clients, contacts and locations of one tenant, a batch per table.
pub struct RecordLoader {
    pub store: Store,
    pub tenant: TenantId,
}

impl Loader<RecordKey> for RecordLoader {
    type Value = Record;
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[RecordKey]) -> Result<HashMap<RecordKey, Record>, Self::Error> {
        let mut found = HashMap::new();
        for table in ["client", "contact", "location"] {
            let wanted: Vec<String> = keys.iter().filter(|k| k.table == table).map(|k| k.key.clone()).collect();
            if wanted.is_empty() {
                continue;
            }
            let records = self.load_table(table, wanted).await.map_err(Arc::new)?;
            for (key, record) in records {
                found.insert(RecordKey { table, key }, record);
            }
        }
        Ok(found)
    }
}

impl RecordLoader {
    async fn load_table(&self, table: &'static str, keys: Vec<String>) -> AppResult<Vec<(String, Record)>> {
        if table == "location" {
            let rows = self.store.locations_by_keys(&self.tenant, keys).await?;
            Ok(rows.into_iter().map(|row| (key_of(&row.id), Record::Location(row))).collect())
        } else {
            let kind = if table == "client" { PartyKind::Client } else { PartyKind::Contact };
            let rows = self.store.parties_by_keys(&self.tenant, kind, keys).await?;
            Ok(rows.into_iter().map(|row| (key_of(&row.id), Record::Party(row))).collect())
        }
    }
}
