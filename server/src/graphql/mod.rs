//! The GraphQL API: schema, types, resolvers, error mapping and data loaders.
//!
//! This layer translates: it parses inputs into validated values, checks roles, calls the store
//! (which applies the ledger's rules) and shapes records for clients. It knows no SurrealQL.

pub mod context;
pub mod errors;
pub mod inputs;
pub mod mutation;
pub mod pagination;
pub mod query;
pub mod scalars;
pub mod types;

use async_graphql::{EmptySubscription, Schema};

use crate::config::Limits;

pub type SettleSchema = Schema<query::Query, mutation::Mutation, EmptySubscription>;

/// Builds the schema with the server's limits; `state` is shared by all requests.
pub fn build_schema(state: Option<context::AppState>, limits: &Limits) -> SettleSchema {
    let builder = Schema::build(query::Query, mutation::Mutation, EmptySubscription)
        .limit_depth(limits.query_depth_max)
        .limit_complexity(limits.query_complexity_max)
        .limit_recursive_depth(32)
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
