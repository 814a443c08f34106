//! `surreal`: SurrealDB's own server, exactly as its binary starts it (`surrealdb-server`'s
//! `init` is the `surreal` command line), so that Settle can be run and tested against a real
//! SurrealDB server: `surreal start --user root --pass root --bind 127.0.0.1:8000 memory`.
//! Built only when asked for (`cargo build -p settle-surreal`): it is not a default member of the
//! workspace, so `cargo serve` and everyday builds never wait for it.

// The server's query types nest deeply enough to need it (as SurrealDB's own binary does).
#![recursion_limit = "256"]

use std::process::ExitCode;

use surrealdb_core::CommunityComposer;

fn main() -> ExitCode {
    surrealdb_server::init(CommunityComposer())
}
