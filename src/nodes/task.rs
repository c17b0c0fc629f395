//! The registry's driver: the one task that owns the [`Registry`] machine. It reads
//! verified messages from the ZeroMQ thread, requests from job tasks and its own timer,
//! feeds them to the machine, and applies its effects: messages to the ZeroMQ thread,
//! news to job inboxes, node states to the [`NodeSnapshot`] HTTP reads.

use std::sync::Arc;
use std::time::Instant;

use pushy_protocol::job::{JobId, OrgGuid};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::news::NodeNews;
use super::registry::{Effect, Input, Registry, RegistryParams};
use super::snapshot::NodeSnapshot;
use crate::channel::thread::{ChannelHandle, Inbound, Outbound};

/// Where jobs hear about their nodes: delivers one piece of news to a job, false when the
/// job has no task (any more). The layer above supplies it: it alone knows the live jobs.
pub type JobSink = Arc<dyn Fn(&JobId, NodeNews) -> bool + Send + Sync>;

/// What job tasks ask of the registry: one of its machine's inputs, and for a watch the
/// way its answer goes back.
struct Request {
    input: Input,
    reply: Option<oneshot::Sender<Vec<bool>>>,
}

/// Cheap handle to the registry task.
#[derive(Clone)]
pub struct RegistryHandle {
    tx: mpsc::Sender<Request>,
}

/// Queue depth of registry requests. Job tasks wait when it is full, which slows job
/// traffic down to what the registry can route rather than dropping commands.
const REQUEST_CAPACITY: usize = 4096;

impl RegistryHandle {
    /// Hands the registry an input (a command for a node, a rehab, an unwatch); false
    /// when the registry has stopped (server shutting down).
    pub async fn send(&self, input: Input) -> bool {
        self.tx.send(Request { input, reply: None }).await.is_ok()
    }

    /// Starts routing news of `nodes` to `job`; returns whether each node is available
    /// (online and idle) now, or `None` when the registry has stopped.
    pub async fn watch(&self, job: JobId, org: OrgGuid, nodes: Vec<String>) -> Option<Vec<bool>> {
        let (tx, rx) = oneshot::channel();
        let request = Request {
            input: Input::Watch { job, org, nodes },
            reply: Some(tx),
        };
        self.tx.send(request).await.ok()?;
        rx.await.ok()
    }
}

/// Starts the registry task. It ends when `token` is cancelled or the channel stops.
pub fn spawn(
    params: RegistryParams,
    snapshot: NodeSnapshot,
    jobs: JobSink,
    channel: ChannelHandle,
    inbound: mpsc::Receiver<Inbound>,
    token: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> RegistryHandle {
    let (tx, rx) = mpsc::channel(REQUEST_CAPACITY);
    let driver = Driver {
        registry: Registry::new(Instant::now(), params),
        jobs,
        snapshot,
        channel,
    };
    tracker.spawn(driver.run(inbound, rx, token));
    RegistryHandle { tx }
}

struct Driver {
    registry: Registry,
    jobs: JobSink,
    snapshot: NodeSnapshot,
    channel: ChannelHandle,
}

impl Driver {
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut requests: mpsc::Receiver<Request>,
        token: CancellationToken,
    ) {
        loop {
            let deadline = self.registry.next_deadline();
            tokio::select! {
                msg = inbound.recv() => match msg {
                    Some(m) => self.handle(Input::Message {
                        org: m.org,
                        routing_id: m.routing_id,
                        message: m.message,
                    }, None),
                    None => break,
                },
                req = requests.recv() => match req {
                    Some(r) => self.handle(r.input, r.reply),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline.into()) => self.handle(Input::Tick, None),
                _ = token.cancelled() => break,
            }
        }
        // Dropping the channel handle stops the ZeroMQ thread and closes its sockets.
        tracing::debug!("node registry stopped");
    }

    /// Feeds the machine and applies its effects; `reply` answers a watch.
    fn handle(&mut self, input: Input, mut reply: Option<oneshot::Sender<Vec<bool>>>) {
        let mut effects = self.registry.handle(Instant::now(), input);
        while !effects.is_empty() {
            let mut gone = Vec::new();
            for effect in effects {
                match effect {
                    Effect::ToNode {
                        routing_id,
                        org,
                        node,
                        message,
                    } => {
                        self.channel.send(Outbound::ToNode {
                            routing_id,
                            org,
                            node,
                            message,
                        });
                    }
                    Effect::ToJob { job, news } => {
                        // A job's inbox is unbounded on purpose: only the job's own nodes
                        // write to it, a few messages each, and a lost `ack_commit` or
                        // result would wedge the job.
                        if !(self.jobs)(&job, news) && !gone.contains(&job) {
                            // The task ended without unwatching (it panicked).
                            gone.push(job);
                        }
                    }
                    Effect::Publish {
                        org,
                        node,
                        availability,
                    } => match availability {
                        Some(a) => self.snapshot.set(&org, &node, a),
                        None => self.snapshot.remove(&org, &node),
                    },
                    Effect::Watching { available, .. } => {
                        if let Some(reply) = reply.take() {
                            // The job task waits for this; if it is gone nobody is told.
                            let _ = reply.send(available);
                        }
                    }
                }
            }
            effects = gone
                .into_iter()
                .flat_map(|job| self.registry.handle(Instant::now(), Input::Unwatch { job }))
                .collect();
        }
    }
}
