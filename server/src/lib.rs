//! Settle: an open payments ledger for practices that bill clients.
//!
//! Dependencies point one way: `http` -> `graphql` -> (`ledger`, `store`). The ledger decides,
//! the store persists, graphql translates; nothing but the store knows SurrealQL.

pub mod auth;
pub mod charging;
pub mod commands;
pub mod config;
pub mod error;
pub mod events;
pub mod graphql;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod plugins;
pub mod startup;
pub mod store;
