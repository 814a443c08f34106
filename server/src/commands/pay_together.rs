//! Payments of one invoice that arrive at the same moment are written together (group commit).
//!
//! Writers of one invoice queue in this process (`store::locks`), so a busy invoice (a family
//! paying one bill from several phones, a batch of card settlements) used to be paid one
//! transaction and one commit after the other. Instead, the payInvoice requests of an invoice
//! gather while its last transaction runs, and one task per busy invoice takes them all, decides
//! them one after the other in one transaction, each on the invoice as the ones before it left
//! it, and commits once; each request is answered after that commit, numbered as before.
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

/// The most payments written in one transaction: enough for every client of a busy invoice at
/// once, and a transaction that stays small next to the storage engine's memtable.
const TOGETHER_MAX: usize = 64;

/// A payInvoice waiting for its invoice's writer, with everything the writer needs to run it.
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
    /// Pays `invoice_key` with a new recorded payment, written together with the other payments
    /// of the invoice that are waiting (see the module's comment); answers once it committed and
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
        if self.paying.join(invoice_key, queued) {
            let (commands, invoice_key) = (self.clone(), invoice_key.to_owned());
            tokio::spawn(async move { commands.write_queued_payments(invoice_key).await });
        }
        let (outcome, written) = answered.await.map_err(|_| {
            AppError::internal("the payment's writer stopped before answering; send the same request again with the same idempotency key")
        })?;
        let claimed = outcome?;
        Ok(Applied::Done(self.store.number_new_payment(mutation.tenant, claimed.key(), written).await))
    }

    /// The writer of one invoice's queued payments: takes the invoice's turn, writes what waits,
    /// and goes on until nothing does.
    async fn write_queued_payments(&self, invoice_key: String) {
        let writing = std::panic::AssertUnwindSafe(async {
            loop {
                let turn = self.store.locks().lock(&record_lock("invoice", &invoice_key)).await;
                let queued = self.paying.take(&invoice_key, TOGETHER_MAX);
                if queued.is_empty() {
                    return;
                }
                self.write_together(queued).await;
                drop(turn);
            }
        });
        if writing.catch_unwind().await.is_err() {
            // The requests waiting get an error (their answers are dropped) and can send again.
            tracing::error!(invoice = %invoice_key, "the writer of an invoice's payments failed");
            self.paying.abandon(&invoice_key);
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
                let invoice = self.store.load_invoice(&tx, &payment.tenant, &payment.invoice_key).await?;
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
