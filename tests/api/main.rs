//! Black-box tests of Settle: a real server over real HTTP and WebSocket with real SurrealDB.
//! Every test is named after the rule it checks (shared domain rules: I1, M3, A1, ...).

mod as_of;
mod audit_chain;
mod auth;
mod browser;
mod concurrency;
mod crash;
mod dashboard;
mod database_server;
mod directory;
mod dry_run;
mod events;
mod graphiql;
mod helpers;
mod hostile;
mod invoices;
mod isolation;
mod journal;
mod limits;
mod memory;
mod payments;
mod plugins;
mod processes;
mod proofs;
mod reports;
mod restart;
mod schema;
mod subscriptions;
mod transport;
