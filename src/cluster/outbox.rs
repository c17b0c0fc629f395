//! The outbox task: writes queued bus messages in order, in batches, retrying while the
//! database is away (a message is never dropped: a lost `run` or result would wedge a
//! job).

use std::time::Duration;

use pushy_store::cluster::{ClusterDb, Post};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Most messages written in one transaction.
const MAX_BATCH: usize = 5000;

/// Drains `queue` into the bus until shutdown.
pub async fn run(
    db: ClusterDb,
    mut queue: mpsc::UnboundedReceiver<Post>,
    token: CancellationToken,
) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            first = queue.recv() => match first {
                Some(p) => batch.push(p),
                None => return,
            },
            () = token.cancelled() => return,
        }
        while batch.len() < MAX_BATCH {
            let Ok(p) = queue.try_recv() else { break };
            batch.push(p);
        }
        let mut wait = Duration::from_millis(50);
        loop {
            match db.post(&batch).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, messages = batch.len(), "cluster bus write failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = token.cancelled() => return,
                    }
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
        batch.clear();
    }
}
