//! The data loader of nested look-ups: the clients, contacts and locations that a page of
//! invoices refers to are read in one batch per table, not one query per invoice.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;

use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::store::Store;
use crate::store::directory::PartyKind;
use crate::store::rows::{LocationRow, PartyRow, key_of};

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
