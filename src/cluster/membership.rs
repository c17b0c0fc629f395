//! The membership task: renews this instance's lease, re-reads the live members every
//! tick (a member whose process died is gone at the next tick: its database lock went
//! with its connection), forgets dead members and their nodes, and prunes the bus.
//!
//! An instance that cannot renew for a whole lease may already count as dead, its jobs
//! taken over by others: it stops (the server exits with an error, and its supervisor
//! starts it again as a new member) rather than drive a job another instance drives.

use pushy_store::cluster::{Instance, Membership};
use tokio_util::sync::CancellationToken;

use super::handle::Cluster;

/// Ticks between two prunings of the bus.
const PRUNE_EVERY: u64 = 30;
/// How long a read bus message is kept.
const KEEP_MESSAGES: std::time::Duration = std::time::Duration::from_secs(600);

/// Runs until shutdown.
pub async fn run(cluster: Cluster, mut membership: Membership, token: CancellationToken) {
    let settings = cluster.settings();
    let db = cluster.db().clone();
    let mut known: Vec<String> = cluster.live_ids();
    let mut n: u64 = 0;
    let mut renewed = std::time::Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(settings.tick) => {}
            () = token.cancelled() => return,
        }
        n += 1;
        let renewal = match membership.renew(settings.lease).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "cluster membership renewal failed; joining again");
                db.join(cluster.me(), settings.lease)
                    .await
                    .map(|m| membership = m)
            }
        };
        match renewal {
            Ok(()) => renewed = std::time::Instant::now(),
            Err(e) if renewed.elapsed() >= settings.lease => {
                tracing::error!(error = %e, "cluster membership lapsed: stopping, so that no job has two drivers");
                cluster.fence();
                token.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the cluster membership");
                continue;
            }
        }
        let live: Vec<Instance> = match db.live().await {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's members");
                continue;
            }
        };
        let ids: Vec<String> = live.iter().map(|i| i.id.clone()).collect();
        for id in ids.iter().filter(|i| !known.contains(i)) {
            tracing::info!(instance = %id, "instance joined the cluster");
        }
        for id in known.iter().filter(|i| !ids.contains(i)) {
            tracing::warn!(instance = %id, "instance left the cluster");
        }
        known.clone_from(&ids);
        cluster.set_live(live);
        if let Err(e) = db.forget_dead().await {
            tracing::warn!(error = %e, "cannot forget dead members");
        }
        if n.is_multiple_of(PRUNE_EVERY)
            && let Err(e) = db.prune(KEEP_MESSAGES, settings.keep_events).await
        {
            tracing::warn!(error = %e, "cannot prune the cluster bus");
        }
    }
}
