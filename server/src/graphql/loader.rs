//! The data loader of nested look-ups: the records that a page of invoices, payments or
//! allocations refers to (clients, contacts, locations, payment methods, payments, invoices), and
//! the records that belong to each row (an invoice's allocations and credit notes, a payment's
//! allocations and refunds), are read in one batch per table, not one query per row. So a page
//! costs the same number of queries whatever its size.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Wake, Waker};

use async_graphql::Context;
use async_graphql::dataloader::{DataLoader, Loader};

use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::store::Store;
use crate::store::rows::{AllocationRow, CreditNoteRow, InvoiceRow, LocationRow, PartyRow, PaymentMethodRow, PaymentRow, RefundRow, key_of};

/// Starts the request's batches only when its execution is waiting, so that a batch holds the
/// keys of every row of a list, however long the rows take to ask.
///
/// DataLoader gathers keys until its batch task runs; started on a timer, the task may run while
/// the engine is still polling the rows of a list: async-graphql resolves a list of more than 30
/// items through `FuturesOrdered`, which hands control back to the runtime after every 32 items
/// (asking to be polled again at once), and in a debug build or on a busy machine 32 rows take
/// longer than the timer. The rows after that went into further batches: a page of 100 invoices
/// cost more queries than a page of 10. Here the batch tasks are held until a poll of the
/// execution ends without it asking to be polled again: then every row that can ask for a record
/// has asked, and each batch is started with all of them.
#[derive(Clone, Default)]
pub struct Batches(Arc<std::sync::Mutex<Vec<futures::future::BoxFuture<'static, ()>>>>);

impl Batches {
    /// The request's loader of `tenant`'s records, whose batches wait for [`Batches::run`].
    pub fn loader(&self, store: Store, tenant: TenantId) -> DataLoader<RecordLoader> {
        let held = self.clone();
        DataLoader::new(RecordLoader { store, tenant }, move |batch| held.0.lock().unwrap_or_else(|p| p.into_inner()).push(batch))
            .delay(std::time::Duration::ZERO)
    }

    /// Runs the request's `execution` on a task of its own, starting the held batches whenever
    /// it waits. Its own task, because the execution's deepest stack (a money mutation in
    /// SurrealDB, in a debug build) is close to a thread's 2 MiB without the HTTP layers' frames
    /// beneath it (docs/development.md); it is cancelled if the request is dropped, as it would
    /// be were it polled in place.
    pub async fn run<T: Send + 'static>(&self, execution: impl Future<Output = T> + Send + 'static) -> T {
        let batches = self.clone();
        let task = CancelOnDrop(Some(tokio::spawn(async move {
            let mut execution = Box::pin(execution);
            std::future::poll_fn(|cx| {
                let asked = Arc::new(AskedAgain { waker: cx.waker().clone(), asked: AtomicBool::new(false) });
                let waker = Waker::from(Arc::clone(&asked));
                if let Poll::Ready(value) = execution.as_mut().poll(&mut std::task::Context::from_waker(&waker)) {
                    return Poll::Ready(value);
                }
                if !asked.asked.load(Ordering::SeqCst) {
                    let held = std::mem::take(&mut *batches.0.lock().unwrap_or_else(|p| p.into_inner()));
                    for batch in held {
                        tokio::spawn(batch);
                    }
                }
                Poll::Pending
            })
            .await
        })));
        match task.join().await {
            Ok(value) => value,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}

/// A task that is aborted when its handle is dropped unfinished.
struct CancelOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> CancelOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        let result = self.0.as_mut().expect("joined once").await;
        self.0 = None;
        result
    }
}

impl<T> Drop for CancelOnDrop<T> {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// The waker of one poll of the execution: passes every wake on, and notes one that came during
/// the poll itself (the execution handing control back and asking to go on).
struct AskedAgain {
    waker: Waker,
    asked: AtomicBool,
}

impl Wake for AskedAgain {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.asked.store(true, Ordering::SeqCst);
        self.waker.wake_by_ref();
    }
}

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

/// The records that belong to one record, loaded for all the rows of a page at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChildrenOf {
    InvoiceAllocations(String),
    InvoiceCreditNotes(String),
    PaymentAllocations(String),
    PaymentRefunds(String),
}

#[derive(Debug, Clone)]
pub enum Children {
    Allocations(Vec<AllocationRow>),
    CreditNotes(Vec<CreditNoteRow>),
    Refunds(Vec<RefundRow>),
}

impl Loader<ChildrenOf> for RecordLoader {
    type Value = Children;
    type Error = Arc<AppError>;

    async fn load(&self, keys: &[ChildrenOf]) -> Result<HashMap<ChildrenOf, Children>, Self::Error> {
        let (store, tenant) = (&self.store, &self.tenant);
        let wanted = |kind: fn(&ChildrenOf) -> Option<&String>| keys.iter().filter_map(kind).cloned().collect::<Vec<String>>();
        let mut found = HashMap::new();
        // Every key asked for gets an answer, empty when nothing belongs to it.
        let invoices = wanted(|k| if let ChildrenOf::InvoiceAllocations(key) = k { Some(key) } else { None });
        if !invoices.is_empty() {
            let rows: Vec<AllocationRow> = store.records_of_keys("allocation", "invoice", tenant, invoices.clone()).await.map_err(Arc::new)?;
            for key in invoices {
                let of: Vec<AllocationRow> = rows.iter().filter(|row| row.invoice == key).cloned().collect();
                found.insert(ChildrenOf::InvoiceAllocations(key), Children::Allocations(of));
            }
        }
        let invoices = wanted(|k| if let ChildrenOf::InvoiceCreditNotes(key) = k { Some(key) } else { None });
        if !invoices.is_empty() {
            let rows: Vec<CreditNoteRow> = store.records_of_keys("credit_note", "invoice", tenant, invoices.clone()).await.map_err(Arc::new)?;
            for key in invoices {
                let of: Vec<CreditNoteRow> = rows.iter().filter(|row| row.invoice == key).cloned().collect();
                found.insert(ChildrenOf::InvoiceCreditNotes(key), Children::CreditNotes(of));
            }
        }
        let payments = wanted(|k| if let ChildrenOf::PaymentAllocations(key) = k { Some(key) } else { None });
        if !payments.is_empty() {
            let rows: Vec<AllocationRow> = store.records_of_keys("allocation", "payment", tenant, payments.clone()).await.map_err(Arc::new)?;
            for key in payments {
                let of: Vec<AllocationRow> = rows.iter().filter(|row| row.payment == key).cloned().collect();
                found.insert(ChildrenOf::PaymentAllocations(key), Children::Allocations(of));
            }
        }
        let payments = wanted(|k| if let ChildrenOf::PaymentRefunds(key) = k { Some(key) } else { None });
        if !payments.is_empty() {
            let rows: Vec<RefundRow> = store.records_of_keys("refund", "payment", tenant, payments.clone()).await.map_err(Arc::new)?;
            for key in payments {
                let of: Vec<RefundRow> = rows.iter().filter(|row| row.payment == key).cloned().collect();
                found.insert(ChildrenOf::PaymentRefunds(key), Children::Refunds(of));
            }
        }
        Ok(found)
    }
}

async fn children(ctx: &Context<'_>, of: ChildrenOf) -> AppResult<Option<Children>> {
    let loader = ctx.data_unchecked::<DataLoader<RecordLoader>>();
    loader.load_one(of).await.map_err(|e| (*e).clone())
}

/// An invoice's allocations, removed ones included, oldest first.
pub async fn allocations_of_invoice(ctx: &Context<'_>, invoice: &str) -> AppResult<Vec<AllocationRow>> {
    Ok(match children(ctx, ChildrenOf::InvoiceAllocations(invoice.to_owned())).await? {
        Some(Children::Allocations(rows)) => rows,
        _ => Vec::new(),
    })
}

/// A payment's allocations, removed ones included, oldest first.
pub async fn allocations_of_payment(ctx: &Context<'_>, payment: &str) -> AppResult<Vec<AllocationRow>> {
    Ok(match children(ctx, ChildrenOf::PaymentAllocations(payment.to_owned())).await? {
        Some(Children::Allocations(rows)) => rows,
        _ => Vec::new(),
    })
}

/// An invoice's credit notes, void ones included, oldest first.
pub async fn credit_notes_of(ctx: &Context<'_>, invoice: &str) -> AppResult<Vec<CreditNoteRow>> {
    Ok(match children(ctx, ChildrenOf::InvoiceCreditNotes(invoice.to_owned())).await? {
        Some(Children::CreditNotes(rows)) => rows,
        _ => Vec::new(),
    })
}

/// A payment's refunds, oldest first.
pub async fn refunds_of(ctx: &Context<'_>, payment: &str) -> AppResult<Vec<RefundRow>> {
    Ok(match children(ctx, ChildrenOf::PaymentRefunds(payment.to_owned())).await? {
        Some(Children::Refunds(rows)) => rows,
        _ => Vec::new(),
    })
}
