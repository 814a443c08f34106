//! payInvoice requests of a practice that arrive at the same moment are written together (group
//! commit).
//!
//! Each payment used to take its invoice's turn, its own transaction and its own commit, so the
//! payments of a busy invoice (a family paying one bill from several phones) queued one commit
//! after the other, and the payments of a busy front desk ran as many transactions side by side,
//! each checking its writes against the others' at commit. Instead, a practice's payInvoice
//! requests gather while its last group is written, and one task per practice takes them all,
//! takes the turns of their invoices, decides them one after the other in one transaction (each
//! on the invoice as the ones before it left it) and commits once; each request is answered
//! after that commit. The same transaction numbers the payments and gives the audit events their
//! places in the practice's chain and ledger order (store/numbering.rs, `PlacingTurn`), so no
//! second transaction follows. Measured in docs/performance.md (twenty-first and twenty-second
//! measures).
//!
//! X1 and X2 hold for each request alone ([`crate::store::Store::mutate_together`]): a refused
//! request writes nothing and keeps no other from being written, and each claims its own
//! idempotency key. A dry-run is not gathered: it runs alone and is cancelled.

use futures::FutureExt;
use tokio::sync::oneshot;

use super::payments::PayInvoice;
use super::{Claimed, Commands};
use crate::auth::TenantId;
use crate::error::{AppError, AppResult};
use crate::store::audit::{IdempotencyKey, Mutation};
use crate::store::locks::record_lock;
use crate::store::payments::{NewPayment, Written};
use crate::store::preview::Applied;
use crate::store::rows::{PaymentMethodRow, key_of};

/// The most payments written in one transaction: more than a practice's front desks and apps
/// send at once, and a transaction that stays small next to the storage engine's memtable.
const TOGETHER_MAX: usize = 64;

/// A payInvoice waiting for its practice's writer, with everything the writer needs to run it.
/// Owned: the writer is a task of its own, which finishes the write even when the request's
/// client has gone away, as a commit under way would.
pub(crate) struct QueuedPayment {
    tenant: TenantId,
    actor: String,
    request_id: String,
    operation: &'static str,
    idempotency: Option<IdempotencyKey>,
    invoice_key: String,
    method: PaymentMethodRow,
    request: PayInvoice,
    /// What the method's plugin gave for the payment's details, checked before.
    reference: Option<String>,
    answer: oneshot::Sender<(AppResult<Claimed>, Written)>,
}

impl QueuedPayment {
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
    /// Pays `invoice_key` with a new recorded payment, written together with the practice's
    /// other payments that are waiting (see the module's comment); answers once it committed and
    /// is numbered.
    pub(super) async fn pay_together(
        &self,
        mutation: &Mutation<'_>,
        invoice_key: &str,
        method: &PaymentMethodRow,
        request: &PayInvoice,
        reference: Option<String>,
    ) -> AppResult<Applied<NewPayment>> {
        let (answer, answered) = oneshot::channel();
        let queued = QueuedPayment {
            tenant: mutation.tenant.clone(),
            actor: mutation.actor.to_owned(),
            request_id: mutation.request_id.to_owned(),
            operation: mutation.operation,
            idempotency: mutation.idempotency.clone(),
            invoice_key: invoice_key.to_owned(),
            method: method.clone(),
            request: request.clone(),
            reference,
            answer,
        };
        // One writer per practice: the gathering key is the tenant.
        if self.paying.join(mutation.tenant.as_str(), queued) {
            let (commands, tenant) = (self.clone(), mutation.tenant.as_str().to_owned());
            tokio::spawn(async move { commands.write_queued_payments(tenant).await });
        }
        let (outcome, written) = answered.await.map_err(|_| {
            AppError::internal("the payment's writer stopped before answering; send the same request again with the same idempotency key")
        })?;
        let claimed = outcome?;
        Ok(Applied::Done(self.store.number_new_payment(mutation.tenant, claimed.key(), written).await))
    }

    /// The writer of a practice's queued payments: takes what waits and the turns of its
    /// invoices, writes it, and goes on until nothing waits.
    async fn write_queued_payments(&self, tenant: String) {
        let writing = std::panic::AssertUnwindSafe(async {
            loop {
                let queued = self.paying.take(&tenant, TOGETHER_MAX);
                if queued.is_empty() {
                    return;
                }
                let invoices: Vec<String> = queued.iter().map(|payment| record_lock("invoice", &payment.invoice_key)).collect();
                let turns = self.store.locks().lock_all(&invoices).await;
                self.write_together(queued).await;
                drop(turns);
            }
        });
        if writing.catch_unwind().await.is_err() {
            // The requests waiting get an error (their answers are dropped) and can send again.
            tracing::error!(%tenant, "the writer of a practice's payments failed");
            self.paying.abandon(&tenant);
        }
    }

    /// Writes `queued` in one transaction and answers each.
    async fn write_together(&self, queued: Vec<QueuedPayment>) {
        let mutations: Vec<Mutation<'_>> = queued.iter().map(QueuedPayment::mutation).collect();
        let written: Vec<Written> = queued.iter().map(|_| Written::default()).collect();
        let (queued_ref, mutations_ref, written_ref) = (&queued, &mutations, &written);
        let answers = self
            .store
            .mutate_together(&mutations, |tx, n| async move {
                let payment = &queued_ref[n];
                let group = queued_ref.iter().map(|payment| payment.invoice_key.as_str());
                let invoice = self.store.load_invoice_of_group(&tx, &payment.tenant, &payment.invoice_key, group).await?;
                let (row, entry) =
                    self.pay_in(&tx, &mutations_ref[n], &invoice, &payment.method, &payment.request, payment.reference.clone()).await?;
                written_ref[n].set(&row);
                Ok((Claimed::Record(key_of(&row.id)), entry))
            })
            .await;
        drop(mutations);
        for ((payment, answer), written) in queued.into_iter().zip(answers).zip(written) {
            // A request that went away no longer listens; its payment stands (X2 answers a retry).
            let _ = payment.answer.send((answer, written));
        }
    }
}
