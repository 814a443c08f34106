//! The data loader of nested look-ups: the records that a page of invoices, payments or
//! allocations refers to (clients, contacts, locations, payment methods, payments, invoices) are
//! read in one batch per table, not one query per row.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::Context;
use async_graphql::dataloader::{DataLoader, Loader};

use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::store::Store;
use crate::store::rows::{InvoiceRow, LocationRow, PartyRow, PaymentMethodRow, PaymentRow, key_of};

/// The tables nested fields refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Table {
    Client,
    Contact,
    Location,
    PaymentMethod,
    Payment,
    Invoice,
}

impl Table {
    const ALL: [Table; 6] = [Table::Client, Table::Contact, Table::Location, Table::PaymentMethod, Table::Payment, Table::Invoice];

    fn name(self) -> &'static str {
        match self {
            Table::Client => "client",
            Table::Contact => "contact",
            Table::Location => "location",
            Table::PaymentMethod => "payment_method",
            Table::Payment => "payment",
            Table::Invoice => "invoice",
        }
    }
}

/// A record a nested field refers to, loaded in batches per request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    table: Table,
    key: String,
}

#[derive(Debug, Clone)]
pub enum Record {
    Party(PartyRow),
    Location(LocationRow),
    PaymentMethod(PaymentMethodRow),
    Payment(PaymentRow),
    Invoice(InvoiceRow),
}

/// Loads records of one tenant, a batch per table; another tenant's are not found (A3).
pub struct RecordLoader {
    pub store: Store,
    pub tenant: TenantId,
}

impl Loader<RecordKey> for RecordLoader {
    type Value = Record;
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[RecordKey]) -> Result<HashMap<RecordKey, Record>, Self::Error> {
        let mut found = HashMap::new();
        for table in Table::ALL {
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
    async fn load_table(&self, table: Table, keys: Vec<String>) -> AppResult<Vec<(String, Record)>> {
        let (store, tenant, name) = (&self.store, &self.tenant, table.name());
        Ok(match table {
            Table::Client | Table::Contact => {
                let rows: Vec<PartyRow> = store.records_by_keys(name, tenant, keys).await?;
                rows.into_iter().map(|row| (key_of(&row.id), Record::Party(row))).collect()
            }
            Table::Location => {
                let rows: Vec<LocationRow> = store.records_by_keys(name, tenant, keys).await?;
                rows.into_iter().map(|row| (key_of(&row.id), Record::Location(row))).collect()
            }
            Table::PaymentMethod => {
                let rows: Vec<PaymentMethodRow> = store.records_by_keys(name, tenant, keys).await?;
                rows.into_iter().map(|row| (key_of(&row.id), Record::PaymentMethod(row))).collect()
            }
            Table::Payment => {
                let rows: Vec<PaymentRow> = store.records_by_keys(name, tenant, keys).await?;
                rows.into_iter().map(|row| (key_of(&row.id), Record::Payment(row))).collect()
            }
            Table::Invoice => {
                let rows: Vec<InvoiceRow> = store.records_by_keys(name, tenant, keys).await?;
                rows.into_iter().map(|row| (key_of(&row.id), Record::Invoice(row))).collect()
            }
        })
    }
}

/// One record through the request's loader: batched with the other look-ups of the moment.
async fn load(ctx: &Context<'_>, table: Table, key: &str) -> AppResult<Option<Record>> {
    let loader = ctx.data_unchecked::<DataLoader<RecordLoader>>();
    loader.load_one(RecordKey { table, key: key.to_owned() }).await.map_err(|e| (*e).clone())
}

pub async fn client(ctx: &Context<'_>, key: &str) -> AppResult<Option<PartyRow>> {
    Ok(match load(ctx, Table::Client, key).await? {
        Some(Record::Party(row)) => Some(row),
        _ => None,
    })
}

pub async fn contact(ctx: &Context<'_>, key: &str) -> AppResult<Option<PartyRow>> {
    Ok(match load(ctx, Table::Contact, key).await? {
        Some(Record::Party(row)) => Some(row),
        _ => None,
    })
}

pub async fn location(ctx: &Context<'_>, key: &str) -> AppResult<Option<LocationRow>> {
    Ok(match load(ctx, Table::Location, key).await? {
        Some(Record::Location(row)) => Some(row),
        _ => None,
    })
}

pub async fn payment_method(ctx: &Context<'_>, key: &str) -> AppResult<Option<PaymentMethodRow>> {
    Ok(match load(ctx, Table::PaymentMethod, key).await? {
        Some(Record::PaymentMethod(row)) => Some(row),
        _ => None,
    })
}

pub async fn payment(ctx: &Context<'_>, key: &str) -> AppResult<Option<PaymentRow>> {
    Ok(match load(ctx, Table::Payment, key).await? {
        Some(Record::Payment(row)) => Some(row),
        _ => None,
    })
}

pub async fn invoice(ctx: &Context<'_>, key: &str) -> AppResult<Option<InvoiceRow>> {
    Ok(match load(ctx, Table::Invoice, key).await? {
        Some(Record::Invoice(row)) => Some(row),
        _ => None,
    })
}
