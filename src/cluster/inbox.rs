//! The inbox task: reads the bus rows for this instance (its own, everyone's, and job
//! events) in order, from a cursor, and hands each message to the composition root's
//! handler. It reads when PostgreSQL notifies a commit and at every tick, so a lost
//! notification (a dropped listening connection) only delays a message.

use std::sync::Arc;

use futures::future::BoxFuture;
use pushy_store::cluster::{BusRow, PgListener};
use tokio_util::sync::CancellationToken;

use super::handle::Cluster;
use super::message::BusMessage;

/// What the composition root does with each message: the row's id and the message.
pub type Handler = Arc<dyn Fn(i64, BusMessage) -> BoxFuture<'static, ()> + Send + Sync>;

/// Rows read per query.
const PAGE: i64 = 5000;

/// Decodes a row; a row this version cannot read is skipped with a warning.
pub fn decode(row: &BusRow) -> Option<BusMessage> {
    match serde_json::from_str(&row.body) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(id = row.id, error = %e, "unreadable cluster bus message skipped");
            None
        }
    }
}

/// Reads and handles messages after `cursor` until shutdown.
pub async fn run(cluster: Cluster, mut cursor: i64, handler: Handler, token: CancellationToken) {
    let db = cluster.db().clone();
    let tick = cluster.settings().tick;
    let mut listener = None;
    loop {
        if listener.is_none() {
            listener = listen(&db).await;
        }
        loop {
            match db.read(cluster.id(), cursor, PAGE).await {
                Ok(rows) => {
                    let full = rows.len() as i64 == PAGE;
                    let mine = rows.iter().any(|r| r.target == cluster.id());
                    for row in rows {
                        cursor = row.id;
                        if let Some(m) = decode(&row) {
                            handler(row.id, m).await;
                        }
                    }
                    if mine && let Err(e) = db.handled(cluster.id(), cursor).await {
                        // Kept rows are only read again if this instance dies first.
                        tracing::warn!(error = %e, "cannot delete handled cluster messages");
                    }
                    if !full {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the cluster bus failed; retrying");
                    break;
                }
            }
        }
        let wake = async {
            match listener.as_mut() {
                Some(l) => match tokio::time::timeout(tick, l.recv()).await {
                    Ok(Ok(_)) | Err(_) => true,
                    Ok(Err(_)) => false,
                },
                None => {
                    tokio::time::sleep(tick).await;
                    true
                }
            }
        };
        tokio::select! {
            ok = wake => if !ok { listener = None },
            () = token.cancelled() => return,
        }
    }
}

async fn listen(db: &pushy_store::cluster::ClusterDb) -> Option<PgListener> {
    match db.listener().await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen on the cluster bus; polling");
            None
        }
    }
}
