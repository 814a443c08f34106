//! Commands: one place per money change, between `graphql` (which parses a request into a typed
//! command and shapes the answer) and the parts that do the work.
//!
//! Each command is load -> decide -> write: it loads the facts its rules need (`store`), decides
//! with a pure function of `ledger` (the effect, or the ErrorCode of the first rule broken), and
//! writes the effect (`store`) in one transaction that also reads the facts, so that a concurrent
//! change of any record the decision relied on makes the transaction conflict and run again.
//! Plugin calls go through `charging`, never inside a transaction. The idempotency key of the
//! request (X2) and its audit event (X3) are written by the store in the same transaction.
//!
//! Every change of the API is a command here, one file per subject (the practice's own records,
//! which have few rules, in practice.rs); so are the changes
//! Settle makes on its own (settling a charge or refund whose outcome arrives later, in
//! charges.rs and refunds.rs, driven by reconcile.rs). Every command passes the idempotency gate
//! and can be a dry-run (`Store::apply`).

pub mod allocations;
pub mod charges;
pub mod credit_notes;
mod events;
pub mod invoices;
pub mod methods;
mod pay_together;
pub mod payments;
pub mod practice;
pub mod reconcile;
pub mod refunds;

use crate::auth::TenantId;
use crate::charging::Charging;
use crate::store::Store;

/// What every command works with; cheap to clone.
#[derive(Clone)]
pub struct Commands {
    store: Store,
    charging: Charging,
    /// payInvoice requests waiting to be written together, per practice (pay_together.rs).
    paying: std::sync::Arc<crate::store::locks::Gathering<pay_together::QueuedPayment>>,
}

impl Commands {
    pub fn new(store: Store, charging: Charging) -> Commands {
        Commands { store, charging, paying: Default::default() }
    }

    /// Positions and publishes the ledger events the tenant's committed changes queued (E2), and
    /// numbers the payments they created, so that a command answers only once its own are;
    /// called after the change's in-process turns are released. (Without this call a task
    /// started at the commit does it moments later.)
    async fn publish(&self, tenant: &TenantId) {
        self.store.position_events(tenant).await
    }

    /// [`Commands::publish`] after a change that may have written a new payment: positioning its
    /// events then numbers it, and `number_payment` also collects the number this process was
    /// told to keep for it.
    async fn publish_and_number(&self, tenant: &TenantId, new_payment: Option<String>) {
        match new_payment {
            Some(payment) => drop(self.store.number_payment(tenant, payment).await),
            None => self.publish(tenant).await,
        }
    }
}

/// What the idempotency gate keeps for a request that pays an invoice: the key of the record it
/// answered with, or, for a charge, the attempt, whose state decides the answer.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum Claimed {
    Charge { charge: String },
    Record(String),
}

impl Claimed {
    /// The key the request answered with: its record's, or its charge attempt's.
    pub(crate) fn key(self) -> String {
        match self {
            Claimed::Charge { charge } => charge,
            Claimed::Record(key) => key,
        }
    }
}
