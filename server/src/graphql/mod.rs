//! The GraphQL API: schema, types, resolvers, error mapping and data loaders.
//!
//! This layer translates: it parses inputs into validated values, checks roles, calls the store
//! (which applies the ledger's rules) and shapes records for clients. It knows no SurrealQL.
//!
//! Dependencies point one way. At the bottom are the building blocks every subject uses:
//! `scalars` (Amount, Date), `money`, `pagination`, `text` (checks of text inputs), `context`,
//! `errors`, `budget` and `loader`. Above them, one file per subject holds its types, inputs,
//! queries and mutations: `practice`, `directory`, `accounts`, `audit`, `audit_chain`,
//! `ledger_events`, `methods`, `plugins`, `credit_notes`, `invoices`, `payments`, `reports` and
//! `journal`; the object types
//! of invoices, payments and allocations, which name each other, share `invoices_and_payments`.
//! This file merges the subjects' queries, mutations and subscriptions into one schema.

pub mod accounts;
pub mod audit;
pub mod audit_chain;
pub mod budget;
pub mod context;
pub mod credit_notes;
pub mod directory;
pub mod errors;
pub mod invoices;
pub mod invoices_and_payments;
pub mod journal;
pub mod ledger_events;
pub mod loader;
pub mod methods;
pub mod money;
pub mod pagination;
pub mod payments;
pub mod plugins;
pub mod preview;
pub mod proofs;
pub mod practice;
pub mod reports;
pub mod scalars;
pub mod text;

use async_graphql::{MergedObject, MergedSubscription, Schema};

use crate::config::Limits;

// The schema lists the fields of Query and Mutation in the order of their parts here, so the
// order keeps schema.graphql as it is. (Their doc comments are descriptions in the schema too.)

/// Every query, from the modules that define them.
#[derive(MergedObject, Default)]
pub struct Query(
    practice::PracticeQuery,
    directory::DirectoryQuery,
    invoices::InvoiceQuery,
    audit::AuditQuery,
    audit_chain::AuditChainQuery,
    payments::PaymentQuery,
    methods::MethodQuery,
    payments::AllocationQuery,
    credit_notes::CreditNoteQuery,
    plugins::PluginQuery,
    ledger_events::LedgerEventQuery,
    reports::ReportQuery,
    journal::JournalQuery,
);

/// Every mutation, from the modules that define them.
#[derive(MergedObject, Default)]
pub struct Mutation(
    practice::PracticeMutation,
    directory::DirectoryMutation,
    invoices::InvoiceMutation,
    payments::PaymentMutation,
    credit_notes::CreditNoteMutation,
    plugins::PluginMutation,
    methods::MethodMutation,
);

/// Every subscription, served over a WebSocket at /graphql (graphql-transport-ws).
#[derive(MergedSubscription, Default)]
pub struct Subscription(ledger_events::LedgerEventSubscription);

pub type SettleSchema = Schema<Query, Mutation, Subscription>;

/// Builds the schema with the server's limits; `state` is shared by all requests.
pub fn build_schema(state: Option<context::AppState>, limits: &Limits) -> SettleSchema {
    // Nesting deeper than this is refused before it is walked (it guards the stack).
    const NESTING_MAX: usize = 32;
    let builder = Schema::build(Query::default(), Mutation::default(), Subscription::default())
        // Depth is checked by the budget, which holds introspection to bounds of its own.
        .extension(budget::QueryBudget {
            selections_max: limits.query_selections_max as u64,
            nesting_max: NESTING_MAX,
            depth_max: limits.query_depth_max,
        })
        .limit_complexity(limits.query_complexity_max)
        .limit_recursive_depth(NESTING_MAX)
        .limit_directives(16);
    match state {
        Some(state) => builder.data(state).finish(),
        None => builder.finish(),
    }
}

/// The schema in SDL, as checked in at schema.graphql.
pub fn sdl() -> String {
    build_schema(None, &crate::config::Settings::defaults().limits).sdl()
}
