//! The reconciler: settles charges and refunds whose outcome was left unknown (a plugin timeout,
//! a crash between the call and the commit) by asking their plugin's status look-up, at start
//! and periodically; and numbers payments and positions ledger events a stop left without.

use std::time::Duration;

use chrono::Utc;
use settle_plugin::Operation;

use super::Commands;
use crate::auth::TenantId;
use crate::store::rows::key_of;

/// Who settles attempts found by the reconciler, in audit events.
const RECONCILER: &str = "settle-reconciler";

impl Commands {
    /// Settles every PENDING charge and refund older than `grace` whose plugin now knows the
    /// outcome. Returns how many it settled.
    pub async fn reconcile_once(&self, grace: Duration, first_run: bool) -> usize {
        let before = Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
        let mut settled = 0;
        // A newer release may have upgraded the schema under this process, which must then stop
        // writing the older form (docs/deployment.md, "Starting, and upgrading").
        if let Err(error) = self.store.check_schema_is_ours().await {
            tracing::warn!(%error, "reading the database's schema version failed");
        }
        // Payments and ledger events left without their number or position by a stop between
        // their commit and their numbering (looked for at start), or by a failed numbering.
        if let Err(error) = self.store.number_and_position_leftovers(first_run).await {
            tracing::warn!(%error, "numbering payments or positioning ledger events failed");
        }
        match self.store.pending_charges(before, 100).await {
            Ok(attempts) => {
                for attempt in attempts {
                    let Some(tenant) = TenantId::parse(&attempt.tenant) else { continue };
                    let method = self.store.payment_method(&tenant, &attempt.method).await.ok().flatten();
                    let status = self.charging.status(&attempt.plugin, &attempt.tenant, &attempt.idempotency_key, Operation::Charge, method.as_ref());
                    let Some(settlement) = status.await else { continue };
                    match self.settle_charge(&tenant, &attempt.idempotency_key, settlement, RECONCILER).await {
                        Ok(_) => settled += 1,
                        Err(error) => tracing::warn!(%error, "reconciling a charge failed"),
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "listing pending charges failed"),
        }
        match self.store.pending_refunds(before, 100).await {
            Ok(refunds) => {
                for refund in refunds {
                    let Some(tenant) = TenantId::parse(&refund.tenant) else { continue };
                    let Some(plugin) = refund.plugin.clone() else { continue };
                    let key = key_of(&refund.id);
                    let payment = self.store.payment(&tenant, &refund.payment).await.ok().flatten();
                    let method = match &payment {
                        Some(p) => self.store.payment_method(&tenant, &p.doc.method).await.ok().flatten(),
                        None => None,
                    };
                    let Some(settlement) = self.charging.status(&plugin, &refund.tenant, &key, Operation::Refund, method.as_ref()).await else {
                        continue;
                    };
                    match self.settle_refund(&tenant, &key, settlement, RECONCILER).await {
                        Ok(_) => settled += 1,
                        Err(error) => tracing::warn!(%error, "reconciling a refund failed"),
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "listing pending refunds failed"),
        }
        settled
    }

    /// Runs the reconciler now and then every `interval` until `stop` is told to stop (or
    /// dropped); a run under way is finished first, so a stop never cuts a settlement short.
    pub fn spawn_reconciler(self, interval: Duration, grace: Duration, mut stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut first_run = true;
            while !*stop.borrow() {
                let settled = self.reconcile_once(grace, first_run).await;
                first_run = false;
                if settled > 0 {
                    tracing::info!(settled, "reconciler settled pending charges and refunds");
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    // Told to stop, or the sender is gone: either way no further run.
                    changed = stop.changed() => if changed.is_err() { break },
                }
            }
        })
    }
}
