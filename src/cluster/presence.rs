//! The presence task: publishes which nodes this instance holds, and whether each is
//! available, to `pushy_presence` every few hundred milliseconds (changes only), so any
//! instance can answer node states and start jobs over the whole fleet.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::handle::Cluster;
use crate::nodes::{Availability, NodeSnapshot};

/// How often changes are written.
pub const INTERVAL: Duration = Duration::from_millis(200);

/// Runs until shutdown.
pub async fn run(cluster: Cluster, snapshot: NodeSnapshot, token: CancellationToken) {
    snapshot.track_changes();
    let mut pending: HashMap<(String, String), Option<bool>> = HashMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = token.cancelled() => return,
        }
        for (org, node, availability) in snapshot.take_changes() {
            pending.insert(
                (org.as_str().to_owned(), node),
                availability.map(|a| a == Availability::Available),
            );
        }
        if pending.is_empty() {
            continue;
        }
        let changes: Vec<(String, String, Option<bool>)> = pending
            .iter()
            .map(|((o, n), a)| (o.clone(), n.clone(), *a))
            .collect();
        match cluster.db().set_presence(cluster.id(), &changes).await {
            Ok(()) => pending.clear(),
            Err(e) => {
                tracing::warn!(error = %e, nodes = changes.len(), "cannot publish node states; retrying")
            }
        }
    }
}
