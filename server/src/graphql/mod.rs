//! The GraphQL API: schema, types, resolvers, error mapping and data loaders.
//!
//! This layer translates: it parses inputs into validated values, checks roles, calls the store
//! (which applies the ledger's rules) and shapes records for clients. It knows no SurrealQL.

pub mod budget;
pub mod context;
pub mod errors;
pub mod inputs;
pub mod mutation;
pub mod pagination;
pub mod payments;
pub mod plugins;
pub mod query;
pub mod scalars;
pub mod types;

use async_graphql::{EmptySubscription, MergedObject, Schema};

use crate::config::Limits;

/// Every query, from the modules that define them.
#[derive(MergedObject, Default)]
pub struct Query(query::Query, payments::PaymentQuery, plugins::PluginQuery);

/// Every mutation, from the modules that define them.
#[derive(MergedObject, Default)]
pub struct Mutation(mutation::Mutation, payments::PaymentMutation, plugins::PluginMutation);

pub type SettleSchema = Schema<Query, Mutation, EmptySubscription>;

/// Builds the schema with the server's limits; `state` is shared by all requests.
pub fn build_schema(state: Option<context::AppState>, limits: &Limits) -> SettleSchema {
    // Nesting deeper than this is refused before it is walked (it guards the stack).
    const NESTING_MAX: usize = 32;
    let builder = Schema::build(Query::default(), Mutation::default(), EmptySubscription)
        .extension(budget::QueryBudget { selections_max: limits.query_selections_max as u64, nesting_max: NESTING_MAX })
        .limit_depth(limits.query_depth_max)
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
