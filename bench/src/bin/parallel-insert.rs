//! Whether one SurrealDB transaction can write several tables at once on several cores: the
//! INSERTs a payInvoice group ends with (one per table), run one after the other in one call,
//! or each in a call of its own on a task of its own, at the same time.
//!
//!     parallel-insert DIR [PER_TX]
//!
//! Prints wall time and process CPU per record of each way, five rounds alternating. Measured in
//! docs/performance.md (twenty-third measure).

use std::time::Instant;

use settle::store::rows::PaymentDoc;
use settle::store::{Store, Vars};

#[path = "../probe.rs"]
mod probe;
use probe::{cpu, doc};

const TABLES: [&str; 3] = ["t1", "t2", "t3"];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(std::env::args().nth(1).unwrap_or_else(|| "/tmp".into()))?;
    let per_tx: usize = std::env::args().nth(2).and_then(|n| n.parse().ok()).unwrap_or(30);
    let mut defaults = settle::config::Settings::defaults();
    defaults.database = Some(format!("surrealkv://{}", dir.path().display()));
    let store = Store::open(&defaults.store_settings(), settle::metrics::Metrics::new()).await?;
    for table in TABLES {
        store
            .query(
                &format!("DEFINE TABLE {table} SCHEMALESS; DEFINE INDEX {table}1 ON {table} FIELDS page_key; DEFINE INDEX {table}2 ON {table} FIELDS tenant, client; DEFINE INDEX {table}3 ON {table} FIELDS tenant, date; DEFINE INDEX {table}4 ON {table} FIELDS tenant, allocated;"),
                Vars::new(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let txs = 40;
    for round in 0..5 {
        for at_once in [false, true] {
            let (wall0, cpu0) = (Instant::now(), cpu());
            for _ in 0..txs {
                let docs: Vec<Vec<PaymentDoc>> = TABLES.iter().map(|_| (0..per_tx).map(|_| doc()).collect()).collect();
                let docs = &docs;
                store
                    .transaction(|tx| async move {
                        if at_once {
                            let mut tasks = Vec::new();
                            for (table, docs) in TABLES.iter().zip(docs) {
                                let (tx, docs) = (tx.clone(), docs.clone());
                                tasks.push(tokio::spawn(async move {
                                    tx.query(&format!("INSERT INTO {table} $docs RETURN NONE"), Vars::new().set("docs", docs)).await.map(drop)
                                }));
                            }
                            for task in tasks {
                                task.await.map_err(settle::error::AppError::internal)??;
                            }
                        } else {
                            let mut sql = String::new();
                            let mut vars = Vars::new();
                            for (table, docs) in TABLES.iter().zip(docs) {
                                sql.push_str(&format!("INSERT INTO {table} $docs_{table} RETURN NONE;"));
                                vars = vars.set(&format!("docs_{table}"), docs.clone());
                            }
                            tx.query(&sql, vars).await?;
                        }
                        Ok(())
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let records = (txs * per_tx * TABLES.len()) as f64;
            println!(
                "round {round} {:<10} wall {:>6.1} us per record, CPU {:>6.1} us per record",
                if at_once { "at once" } else { "in turn" },
                wall0.elapsed().as_secs_f64() / records * 1e6,
                (cpu() - cpu0) / records * 1e6
            );
        }
    }
    let mut counts = store.query("SELECT count() FROM t1 GROUP ALL; SELECT count() FROM t2 GROUP ALL; SELECT count() FROM t3 GROUP ALL;", Vars::new()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    for n in 0..3 {
        println!("{}: {:?}", TABLES[n], counts.first::<settle::store::rows::CountRow>(n).map_err(|e| anyhow::anyhow!("{e}"))?.map(|c| c.count));
    }
    Ok(())
}
