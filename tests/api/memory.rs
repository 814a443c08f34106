//! How the server holds memory.

use std::ffi::OsStr;

use serde_json::json;

use crate::restart::{Practice, gql, open_invoice};

/// glibc's malloc heaps other than the main one, in `/proc/PID/maps`: each arena but the first
/// lives in heaps of 64 MiB reserved at addresses aligned to 64 MiB, anonymous mappings.
fn malloc_heaps(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("the server's memory maps");
    maps.lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let start = fields[0].split('-').next().and_then(|start| u64::from_str_radix(start, 16).ok()).unwrap_or(1);
            fields.len() < 6 && start.is_multiple_of(64 << 20)
        })
        .count()
}

/// Writes and reads from 32 clients at once, as a busy practice does, so that glibc's malloc
/// meets threads allocating at the same time.
async fn busy(practice: &Practice) {
    let tasks = (0..32).map(|task| {
        let (http, url, token) = (practice.http.clone(), practice.server.url.clone(), practice.token.clone());
        let (client, location) = (practice.client.clone(), practice.location.clone());
        tokio::spawn(async move {
            for i in 0..8 {
                open_invoice(&http, &url, &token, &client, &location, task * 100 + i).await;
                gql(&http, &url, &token, "{ invoices(first: 50) { edges { node { id total { amount } } } } }", json!({})).await;
            }
        })
    });
    for task in tasks {
        task.await.unwrap();
    }
}

/// The server limits glibc to two malloc arenas (main.rs `limit_malloc_arenas`): with glibc's
/// default, each thread that allocates while another does gets an arena of its own, kept
/// resident. The same load on a server given a higher limit shows the check can see the
/// difference.
#[tokio::test]
async fn the_server_keeps_two_malloc_arenas_unless_told_otherwise() {
    let limited = Practice::start().await;
    let many = Practice::start_with_env(&[("MALLOC_ARENA_MAX", OsStr::new("16"))]).await;
    tokio::join!(busy(&limited), busy(&many));

    let (limited_heaps, many_heaps) = (malloc_heaps(limited.server.pid()), malloc_heaps(many.server.pid()));
    assert!(many_heaps > 3, "the load made {many_heaps} heaps with MALLOC_ARENA_MAX=16, too few for the check to mean anything");
    // The second arena may chain a heap or two more as it grows past 64 MiB.
    assert!(limited_heaps <= 3, "{limited_heaps} malloc heaps, against {many_heaps} with MALLOC_ARENA_MAX=16");
}
