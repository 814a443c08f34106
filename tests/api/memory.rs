//! How the server holds memory.

use std::ffi::OsStr;

use serde_json::json;

use crate::restart::{Practice, gql, open_invoice};

/// The server allocates with mimalloc (main.rs), whose figures under load are the ones
/// docs/performance.md gives. mimalloc prints its options at start when told to be verbose,
/// so a server running on glibc's malloc instead says nothing of the kind. The server then
/// serves a busy practice as usual.
#[tokio::test]
async fn the_server_allocates_with_mimalloc() {
    let practice = Practice::start_with_env(&[("MIMALLOC_VERBOSE", OsStr::new("1"))]).await;
    let log = std::fs::read_to_string(practice.dir.path().join("settle.log")).expect("the server's log");
    assert!(log.lines().any(|line| line.starts_with("mimalloc: ")), "mimalloc said nothing at start:\n{}", practice.server.log_tail());

    let tasks = (0..32).map(|task| {
        let (http, url, token) = (practice.http.clone(), practice.server.url.clone(), practice.token.clone());
        let (client, location) = (practice.client.clone(), practice.location.clone());
        tokio::spawn(async move {
            for i in 0..4 {
                open_invoice(&http, &url, &token, &client, &location, task * 100 + i).await;
            }
        })
    });
    for task in tasks {
        task.await.unwrap();
    }
    let listed = gql(&practice.http, &practice.server.url, &practice.token, "{ invoices(first: 1) { totalCount } }", json!({})).await;
    assert_eq!(listed["invoices"]["totalCount"], 128, "every invoice the busy clients created");
}
