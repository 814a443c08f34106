//! What one record costs SurrealDB to create, by what its table defines: CPU per record of
//! payment-shaped documents created in transactions of PER_TX records, one CREATE per call or
//! one INSERT of the whole array, on the embedded SurrealKV store Settle runs on.
//!
//!     statement-cost DIR [PER_TX] TABLE...
//!
//! Tables: `bare` (nothing defined), `index1` (the page index), `index4` (payment's four
//! indexes, with `allocated` where payment indexes `credit`, which needs its field definition), `fields4` (four plain typed fields), `payment_fields` (payment's two field
//! definitions: `refund_pending` with a default and an assertion, the computed `credit`), each of
//! those alone (`pending_only`, `credit_only`), and
//! `payment` (the real table, as schema.surql defines it). Five rounds, the tables in turn within
//! each, so a machine whose speed moves affects them alike; prints the median and every round.
//! Measured in docs/performance.md (twenty-second measure).

use settle::store::rows::{PaymentDoc, record};
use settle::store::{Store, Vars};

#[path = "../probe.rs"]
mod probe;
use probe::{cpu, doc};

/// What `table` defines (nothing for `bare`; `payment` is defined by the store itself).
fn setup(table: &str) -> &'static str {
    match table {
        "index4" => "DEFINE TABLE index4 SCHEMALESS; DEFINE INDEX i1 ON index4 FIELDS page_key; DEFINE INDEX i2 ON index4 FIELDS tenant, client; DEFINE INDEX i3 ON index4 FIELDS tenant, date; DEFINE INDEX i4 ON index4 FIELDS tenant, allocated;",
        "index1" => "DEFINE TABLE index1 SCHEMALESS; DEFINE INDEX i1 ON index1 FIELDS page_key;",
        "payment_fields" => "DEFINE TABLE payment_fields SCHEMALESS; DEFINE FIELD refund_pending ON payment_fields TYPE decimal DEFAULT 0 ASSERT $value >= 0; DEFINE FIELD credit ON payment_fields TYPE decimal VALUE IF void { 0dec } ELSE { amount - allocated - refunded - (refund_pending ?? 0dec) };",
        "credit_only" => "DEFINE TABLE credit_only SCHEMALESS; DEFINE FIELD credit ON credit_only TYPE decimal VALUE IF void { 0dec } ELSE { amount - allocated - refunded - (refund_pending ?? 0dec) };",
        "pending_only" => "DEFINE TABLE pending_only SCHEMALESS; DEFINE FIELD refund_pending ON pending_only TYPE decimal DEFAULT 0 ASSERT $value >= 0;",
        "fields4" => "DEFINE TABLE fields4 SCHEMALESS; DEFINE FIELD tenant ON fields4 TYPE string; DEFINE FIELD client ON fields4 TYPE string; DEFINE FIELD date ON fields4 TYPE string; DEFINE FIELD amount ON fields4 TYPE decimal;",
        _ => "",
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(std::env::args().nth(1).unwrap_or_else(|| "/tmp".into()))?;
    let per_tx: usize = std::env::args().nth(2).and_then(|n| n.parse().ok()).unwrap_or(30);
    let tables: Vec<String> = std::env::args().skip(3).collect();
    let mut defaults = settle::config::Settings::defaults();
    defaults.database = Some(format!("surrealkv://{}", dir.path().display()));
    let store = Store::open(&defaults.store_settings(), settle::metrics::Metrics::new()).await?;
    for table in &tables {
        if !setup(table).is_empty() {
            store.query(setup(table), Vars::new()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    let txs = 40;
    let mut results: std::collections::BTreeMap<(String, usize), Vec<f64>> = Default::default();
    for _round in 0..5 {
        for table in &tables {
            let table = table.as_str();
            for variant in [0usize, 2] {
                let cpu0 = cpu();
                for _ in 0..txs {
                    let docs: Vec<PaymentDoc> = (0..per_tx).map(|_| doc()).collect();
                    let docs = &docs;
                    store
                        .transaction(|tx| async move {
                            if variant == 0 {
                                for doc in docs {
                                    tx.query("CREATE $id CONTENT $doc RETURN NONE", Vars::new().set("id", record(table, &doc.key)).set("doc", doc.clone())).await?;
                                }
                            } else {
                                tx.query(&format!("INSERT INTO {table} $docs RETURN NONE"), Vars::new().set("docs", docs.clone())).await?;
                            }
                            Ok(())
                        })
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                results.entry((table.to_owned(), variant)).or_default().push((cpu() - cpu0) / (txs * per_tx) as f64 * 1e6);
            }
        }
    }
    for ((table, variant), mut runs) in results {
        runs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let name = if variant == 0 { "CREATE per call" } else { "INSERT array" };
        println!("{table:<8} {name:<16} median {:>6.1} us CPU per record; runs {:?}", runs[runs.len() / 2], runs.iter().map(|r| r.round()).collect::<Vec<_>>());
    }
    Ok(())
}
