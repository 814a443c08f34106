//! finalizeInvoice requests of a practice that arrive at the same moment are written together
//! (group commit), as payInvoice's are (pay_together.rs).
//!
//! Every finalize of a practice writes its invoice counter, so finalizes always took the
//! practice's numbering turn one after the other, each with its own transaction, its own commit
//! and a positioning transaction after it: at a front desk's pace of invoices the turn was the
//! queue (a finalize's p50 was about 80 ms in the clinic-day mix, a create's 12 ms). Instead, one
//! task per practice takes the finalizes waiting, takes the numbering turn once, finalizes them
//! one after the other in one transaction (each reads the counter as the one before it left it,
//! so the numbers stay consecutive and without gaps, I2) and commits once; the same transaction
//! places their audit events in the practice's chain and ledger order
//! ([`crate::store::Store::mutate_together`]). Each request is answered after that commit.
//!
//! X1 and X2 hold for each request alone: a refused finalize writes nothing and keeps no other
//! from being written, and each claims its own idempotency key. A dry-run is not gathered.

use futures::FutureExt;
use tokio::sync::oneshot;

use super::Commands;
use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::store::audit::{IdempotencyKey, Mutation};
use crate::store::locks::tenant_lock;

/// The most finalizes written in one transaction.
const TOGETHER_MAX: usize = 64;

/// A finalizeInvoice waiting for its practice's writer. Owned: the writer is a task of its own,
/// which finishes the write even when the request's client has gone away.
pub(crate) struct QueuedFinalize {
    tenant: TenantId,
    actor: String,
    request_id: String,
    operation: &'static str,
    idempotency: Option<IdempotencyKey>,
    invoice_key: String,
    answer: oneshot::Sender<AppResult<String>>,
}

impl QueuedFinalize {
    fn mutation(&self) -> Mutation<'_> {
        Mutation {
            tenant: &self.tenant,
            actor: &self.actor,
            request_id: &self.request_id,
            operation: self.operation,
            idempotency: self.idempotency.clone(),
            dry_run: false,
        }
    }
}

impl Commands {
    /// Finalizes `invoice_key` together with the practice's other finalizes that are waiting
    /// (see the module's comment); answers once it committed. Returns the invoice's key.
    pub(super) async fn finalize_together(&self, mutation: &Mutation<'_>, invoice_key: &str) -> AppResult<String> {
        let (answer, answered) = oneshot::channel();
        let queued = QueuedFinalize {
            tenant: mutation.tenant.clone(),
            actor: mutation.actor.to_owned(),
            request_id: mutation.request_id.to_owned(),
            operation: mutation.operation,
            idempotency: mutation.idempotency.clone(),
            invoice_key: invoice_key.to_owned(),
            answer,
        };
        if self.finalizing.join(mutation.tenant.as_str(), queued) {
            let (commands, tenant) = (self.clone(), mutation.tenant.clone());
            tokio::spawn(async move { commands.write_queued_finalizes(tenant).await });
        }
        answered.await.map_err(|_| {
            AppError::internal("the invoice's writer stopped before answering; send the same request again with the same idempotency key")
        })?
    }

    /// The writer of a practice's queued finalizes: takes what waits and the practice's numbering
    /// turn, writes it, and goes on until nothing waits.
    async fn write_queued_finalizes(&self, tenant: TenantId) {
        let writing = std::panic::AssertUnwindSafe(async {
            loop {
                let queued = self.finalizing.take(tenant.as_str(), TOGETHER_MAX);
                if queued.is_empty() {
                    return;
                }
                let turn = self.store.locks().lock(&tenant_lock(&tenant)).await;
                let mutations: Vec<Mutation<'_>> = queued.iter().map(QueuedFinalize::mutation).collect();
                let (queued_ref, mutations_ref) = (&queued, &mutations);
                let answers = self
                    .store
                    .mutate_together(&mutations, |tx, n| async move {
                        let key = &queued_ref[n].invoice_key;
                        let (_, entry) = self.finalize_in(&tx, &mutations_ref[n], key).await?;
                        Ok((key.clone(), entry))
                    })
                    .await;
                drop(turn);
                drop(mutations);
                for (finalize, answer) in queued.into_iter().zip(answers) {
                    // A request that went away no longer listens; its finalize stands (X2
                    // answers a retry).
                    let _ = finalize.answer.send(answer);
                }
            }
        });
        if writing.catch_unwind().await.is_err() {
            tracing::error!(tenant = tenant.as_str(), "the writer of a practice's finalizes failed");
            self.finalizing.abandon(tenant.as_str());
        }
    }
}
