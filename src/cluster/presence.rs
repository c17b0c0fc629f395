//! The presence task: publishes which nodes this instance holds, and whether each is
//! available, every few hundred milliseconds (changes only): to `pushy_presence`, so
//! any instance can start jobs over the whole fleet, and to every instance's mirror
//! over the bus, so any instance answers node states from memory.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::handle::Cluster;
use super::message::BusMessage;
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
        let taken: Vec<_> = snapshot
            .take_changes()
            .into_iter()
            .map(|(org, node, availability)| {
                let available = availability.map(|a| a == Availability::Available);
                (org.as_str().to_owned(), node, available)
            })
            .collect();
        cluster.note_presence(cluster.id(), &taken);
        for (org, node, available) in taken {
            pending.insert((org, node), available);
        }
        if pending.is_empty() {
            continue;
        }
        let changes: Vec<(String, String, Option<bool>)> = pending
            .iter()
            .map(|((o, n), a)| (o.clone(), n.clone(), *a))
            .collect();
        match cluster.db().set_presence(cluster.id(), &changes).await {
            Ok(()) => {
                pending.clear();
                let from = cluster.id().to_owned();
                cluster.broadcast(None, &BusMessage::Presence { from, changes });
            }
            Err(e) => {
                tracing::warn!(error = %e, nodes = changes.len(), "cannot publish node states; retrying")
            }
        }
    }
}
