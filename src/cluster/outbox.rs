//! The outbox task: writes queued bus messages in order, in batches, retrying while the
//! database is away (a message is never dropped: a lost `run` or result would wedge a
//! job). Consecutive messages that say the same thing to the same instance are joined
//! into one row: a job's `commit` to ten thousand nodes held elsewhere is a row, not ten
//! thousand.

use std::time::Duration;

use pushy_store::cluster::{ClusterDb, Post};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::message::{BusMessage, ORG_NUMBERS};

/// Most messages written in one transaction.
const MAX_BATCH: usize = 5000;

/// A message waiting to be written.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    /// An instance id, or everyone.
    pub target: String,
    /// The job it concerns, if any.
    pub job_id: Option<String>,
    /// The message.
    pub message: BusMessage,
}

/// A message in the queue, and who waits for its commit.
pub struct Queued {
    /// The message.
    pub outgoing: Outgoing,
    /// Told once the message is committed.
    pub committed: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Drains `queue` into the bus until shutdown.
pub async fn run(
    db: ClusterDb,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    token: CancellationToken,
) {
    let mut batch = Vec::new();
    let mut waiting = Vec::new();
    loop {
        let first = tokio::select! {
            first = queue.recv() => match first {
                Some(q) => q,
                None => return,
            },
            () = token.cancelled() => return,
        };
        let mut next = Some(first);
        while let Some(q) = next.take() {
            batch.push(q.outgoing);
            waiting.extend(q.committed);
            if batch.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        let posts = encode(coalesce(std::mem::take(&mut batch)));
        let mut wait = Duration::from_millis(50);
        loop {
            match db.post(&posts).await {
                Ok(()) => {
                    for w in waiting.drain(..) {
                        let _ = w.send(());
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, messages = posts.len(), "cluster bus write failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = token.cancelled() => return,
                    }
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Joins each message into the previous one when both go to the same target about the
/// same job and say the same thing to more nodes (`ToNode`), or carry more events of
/// the same job (`Events`, at most [`ORG_NUMBERS`] to a row). Order is kept.
pub fn coalesce(batch: Vec<Outgoing>) -> Vec<Outgoing> {
    let mut out: Vec<Outgoing> = Vec::with_capacity(batch.len());
    for next in batch {
        if let Some(last) = out.last_mut()
            && last.target == next.target
            && last.job_id == next.job_id
            && join(&mut last.message, &next.message)
        {
            continue;
        }
        out.push(next);
    }
    out
}

/// Adds `next` to `last` if they join; whether they did.
fn join(last: &mut BusMessage, next: &BusMessage) -> bool {
    match (last, next) {
        (
            BusMessage::ToNode {
                org,
                nodes,
                message,
            },
            BusMessage::ToNode {
                org: next_org,
                nodes: next_nodes,
                message: next_message,
            },
        ) if org == next_org && message == next_message => {
            nodes.extend(next_nodes.iter().cloned());
            true
        }
        (
            BusMessage::Events { org, job, events },
            BusMessage::Events {
                org: next_org,
                job: next_job,
                events: next_events,
            },
        ) if org == next_org
            && job == next_job
            && events.len() + next_events.len() <= ORG_NUMBERS as usize =>
        {
            events.extend(next_events.iter().cloned());
            true
        }
        _ => false,
    }
}

fn encode(batch: Vec<Outgoing>) -> Vec<Post> {
    batch
        .into_iter()
        .map(|o| Post {
            target: o.target,
            job_id: o.job_id,
            body: serde_json::to_string(&o.message).expect("bus messages serialize"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use pushy_protocol::message::ServerMessage;

    use super::*;
    use crate::cluster::message::Timed;
    use crate::events::Recorded;

    fn to_node(target: &str, node: &str, job: &str) -> Outgoing {
        Outgoing {
            target: target.into(),
            job_id: None,
            message: BusMessage::ToNode {
                org: "o".into(),
                nodes: vec![node.into()],
                message: ServerMessage::Run {
                    job_id: job.into(),
                    live_output: false,
                },
            },
        }
    }

    fn event(job: &str, name: &str) -> Outgoing {
        Outgoing {
            target: "events".into(),
            job_id: Some(job.into()),
            message: BusMessage::Events {
                org: "o".into(),
                job: job.into(),
                events: vec![Timed {
                    event: Recorded {
                        name: name.into(),
                        fields: Default::default(),
                        to_org: false,
                        completes: false,
                    },
                    at: 0,
                }],
            },
        }
    }

    #[test]
    fn one_command_to_many_nodes_of_one_instance_is_one_row_and_order_is_kept() {
        let joined = coalesce(vec![
            to_node("a", "n1", "j"),
            to_node("a", "n2", "j"),
            to_node("b", "n3", "j"),
            to_node("a", "n4", "j"),
            to_node("a", "n5", "k"),
        ]);
        let nodes: Vec<(String, Vec<String>)> = joined
            .iter()
            .map(|o| match &o.message {
                BusMessage::ToNode { nodes, .. } => (o.target.clone(), nodes.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            nodes,
            [
                ("a".to_owned(), vec!["n1".to_owned(), "n2".to_owned()]),
                ("b".to_owned(), vec!["n3".to_owned()]),
                ("a".to_owned(), vec!["n4".to_owned()]),
                ("a".to_owned(), vec!["n5".to_owned()]),
            ]
        );
    }

    #[test]
    fn a_jobs_consecutive_events_share_a_row() {
        let joined = coalesce(vec![
            event("j", "start"),
            event("j", "quorum_vote"),
            event("k", "start"),
            event("j", "run_start"),
        ]);
        let sizes: Vec<usize> = joined
            .iter()
            .map(|o| match &o.message {
                BusMessage::Events { events, .. } => events.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, [2, 1, 1]);
    }
}
