//! The registry: the one task that owns every node machine (zmq.md §4) and routes node
//! messages to live jobs. It reads verified messages from the ZeroMQ thread, commands
//! from job tasks, and its own timers (rehab resends, the liveness scan), and publishes
//! each node's availability to [`NodesHandle`] for HTTP to read.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use pushy_protocol::job::{JobId, OrgGuid};
use pushy_protocol::message::{ClientMessageType, JobRef, ServerMessage};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::machine::{self, Incarnation, JobLink, Node, RoutingId, ServerCommand, State};
use super::{Liveness, NodesHandle};
use crate::channel::thread::{ChannelHandle, Inbound, Outbound};
use crate::jobs::TaskMsg;
use crate::jobs::machine::{Input as JobInput, NodeReport, Reply};

/// What job tasks (and the jobs handle) ask of the registry.
pub enum Request {
    /// A job starts watching its nodes; the reply says which are available (idle) now.
    Watch {
        /// The job.
        job: JobId,
        /// Its organization.
        org: OrgGuid,
        /// Its nodes.
        nodes: Vec<String>,
        /// Where node messages and downs for this job go.
        inbox: mpsc::UnboundedSender<TaskMsg>,
        /// Availability of each node, in order.
        reply: oneshot::Sender<Vec<bool>>,
    },
    /// The job is over: its messages are no longer routed.
    Unwatch {
        /// The job.
        job: JobId,
    },
    /// Send a command to a node (dropped silently if the node is not connected, as the
    /// original drops messages to nodes without a machine).
    Send {
        /// The organization.
        org: OrgGuid,
        /// The node.
        node: String,
        /// The message.
        message: ServerMessage,
    },
    /// Reset a node (`do_rehab`).
    Rehab {
        /// The organization.
        org: OrgGuid,
        /// The node.
        node: String,
    },
    /// The ids of live jobs.
    LiveJobs(oneshot::Sender<Vec<JobId>>),
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
    /// Sends a request; false when the registry has stopped (server shutting down).
    pub async fn request(&self, r: Request) -> bool {
        self.tx.send(r).await.is_ok()
    }

    /// Live job ids (empty if the registry is gone).
    pub async fn live_jobs(&self) -> Vec<JobId> {
        let (tx, rx) = oneshot::channel();
        if !self.request(Request::LiveJobs(tx)).await {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

/// Timing of the registry.
#[derive(Clone, Copy, Debug)]
pub struct RegistryParams {
    /// Node machine tuning.
    pub node: machine::Params,
    /// How often every node's liveness is checked.
    pub scan_interval: Duration,
}

struct WatchedJob {
    org: OrgGuid,
    nodes: HashSet<String>,
    inbox: mpsc::UnboundedSender<TaskMsg>,
}

/// A node's key in the registry.
type NodeKey = (OrgGuid, String);

struct Registry {
    params: RegistryParams,
    nodes: HashMap<NodeKey, Node>,
    /// Node deadlines, earliest first. Entries are not removed when a deadline moves; a
    /// popped entry only fires if the node's current deadline has really passed, so the
    /// loop never scans every node to find the next timer.
    timers: BinaryHeap<Reverse<(Instant, NodeKey)>>,
    jobs: HashMap<JobId, WatchedJob>,
    /// Nodes reset on their return (their first message named no job they are part of)
    /// whose jobs hear of them once the reset is done: a job that re-asks a node before
    /// then could see its commit wiped by a repeated `abort`.
    returning: HashSet<NodeKey>,
    snapshot: NodesHandle,
    channel: ChannelHandle,
}

/// Starts the registry task. It ends when `token` is cancelled or the channel stops.
pub fn spawn(
    params: RegistryParams,
    snapshot: NodesHandle,
    channel: ChannelHandle,
    inbound: mpsc::Receiver<Inbound>,
    token: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> RegistryHandle {
    let (tx, rx) = mpsc::channel(REQUEST_CAPACITY);
    let registry = Registry {
        params,
        nodes: HashMap::new(),
        timers: BinaryHeap::new(),
        jobs: HashMap::new(),
        returning: HashSet::new(),
        snapshot,
        channel,
    };
    tracker.spawn(registry.run(inbound, rx, token));
    RegistryHandle { tx }
}

impl Registry {
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut requests: mpsc::Receiver<Request>,
        token: CancellationToken,
    ) {
        let mut next_scan = Instant::now() + self.params.scan_interval;
        loop {
            let deadline = self
                .timers
                .peek()
                .map_or(next_scan, |Reverse((d, _))| (*d).min(next_scan));
            tokio::select! {
                msg = inbound.recv() => match msg {
                    Some(m) => self.handle_inbound(m),
                    None => break,
                },
                req = requests.recv() => match req {
                    Some(r) => self.handle_request(r),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    if now >= next_scan {
                        self.scan(now);
                        next_scan = now + self.params.scan_interval;
                    }
                    self.fire_timers(now);
                }
                _ = token.cancelled() => break,
            }
        }
        // Dropping the channel handle stops the ZeroMQ thread and closes its sockets.
        tracing::debug!("node registry stopped");
    }

    fn job_link(&self, job: &JobRef) -> (JobLink, Option<JobId>) {
        match job {
            JobRef::None => (JobLink::None, None),
            JobRef::Invalid => (JobLink::NotLive, None),
            JobRef::Id(s) => match JobId::parse(s).filter(|id| self.jobs.contains_key(id)) {
                Some(id) => (JobLink::Live, Some(id)),
                None => (JobLink::NotLive, None),
            },
        }
    }

    fn handle_inbound(&mut self, m: Inbound) {
        let now = Instant::now();
        let key = (m.org.clone(), m.message.node.clone());
        let span = tracing::debug_span!("node", org = %m.org, node = %m.message.node);
        let _entered = span.enter();
        let routing = RoutingId(m.routing_id);
        let mut effects = Vec::new();
        let (link, job) = self.job_link(&m.message.job_id);
        if !self.nodes.contains_key(&key) {
            let incarnation = Incarnation(m.message.incarnation_id.clone());
            let on_live_job = job
                .as_ref()
                .and_then(|j| self.jobs.get(j))
                .is_some_and(|w| w.org == key.0 && w.nodes.contains(&key.1));
            let (node, fx) = if on_live_job {
                tracing::info!("node online, still on a live job: adopted without a reset");
                // Every job of the node hears what it says, so a job can re-send what the
                // previous server process may have lost, or learn at once that the node
                // can no longer deliver (issue 12 §2).
                let report = match m.message.kind {
                    ClientMessageType::Heartbeat
                        if m.message.job_state.as_deref() == Some("running") =>
                    {
                        Some(NodeReport::Running)
                    }
                    ClientMessageType::Heartbeat => Some(NodeReport::Committed),
                    // A result had its `run` and acknowledged it; the acknowledgement may
                    // have been lost with the previous server process.
                    ClientMessageType::Succeeded | ClientMessageType::Failed => {
                        Some(NodeReport::Running)
                    }
                    // Answers to commit or run go through the job's table as they are.
                    _ => None,
                };
                let named = job.clone();
                for id in self.jobs_of(&key) {
                    let report = if Some(&id) == named.as_ref() {
                        report
                    } else {
                        Some(NodeReport::OtherJob)
                    };
                    if let Some(report) = report {
                        self.forward(
                            &id,
                            JobInput::NodeBack {
                                node: key.1.clone(),
                                report,
                            },
                        );
                    }
                }
                Node::adopt(now, self.params.node, incarnation, routing.clone())
            } else {
                // Debug, not info: a restart of a large fleet's server would log every node.
                tracing::debug!("node online");
                // Reset first; its jobs hear that it is back, idle, when `aborted` arrives.
                if !self.jobs_of(&key).is_empty() {
                    self.returning.insert(key.clone());
                }
                Node::new(now, self.params.node, incarnation, routing.clone())
            };
            let liveness = if node.state() == State::Idle {
                Liveness::Available
            } else {
                Liveness::Busy
            };
            self.nodes.insert(key.clone(), node);
            self.snapshot.set(&key.0, &key.1, liveness);
            effects.extend(fx);
        } else if let Some(node) = self.nodes.get_mut(&key) {
            effects.extend(node.handle(now, machine::Input::NewRoutingId(routing)));
        }
        let input = match m.message.kind {
            ClientMessageType::Heartbeat => machine::Input::Heartbeat {
                incarnation: Incarnation(m.message.incarnation_id.clone()),
                job: link,
            },
            ClientMessageType::Aborted => machine::Input::Aborted,
            _ => machine::Input::JobMessage { job: link },
        };
        if let Some(node) = self.nodes.get_mut(&key) {
            effects.extend(node.handle(now, input));
        }
        if job.is_none()
            && let JobRef::Id(id) = &m.message.job_id
            && matches!(
                m.message.kind,
                ClientMessageType::Succeeded | ClientMessageType::Failed
            )
        {
            // A result for a job no longer running here (finished, or unknown to this
            // process): nothing will record it, and re-sending would not change that.
            self.channel.send(Outbound::ToNode {
                routing_id: self
                    .nodes
                    .get(&key)
                    .map_or_else(Vec::new, |n| n.routing_id().0.clone()),
                org: key.0.clone(),
                node: key.1.clone(),
                message: ServerMessage::ResultAck { job_id: id.clone() },
            });
        }
        if let Some(job) = job {
            let reply = match m.message.kind {
                ClientMessageType::Heartbeat => None,
                ClientMessageType::AckCommit => Some(Reply::AckCommit),
                ClientMessageType::NackCommit => Some(Reply::NackCommit),
                ClientMessageType::AckRun => Some(Reply::AckRun),
                ClientMessageType::NackRun => Some(Reply::NackRun),
                ClientMessageType::Succeeded => Some(Reply::Succeeded {
                    stdout: m.message.stdout.clone(),
                    stderr: m.message.stderr.clone(),
                }),
                ClientMessageType::Failed => Some(Reply::Failed {
                    stdout: m.message.stdout.clone(),
                    stderr: m.message.stderr.clone(),
                }),
                ClientMessageType::Aborted => Some(Reply::Aborted),
            };
            if m.message.output_truncated {
                self.forward_msg(
                    &job,
                    TaskMsg::OutputTruncated {
                        node: key.1.clone(),
                    },
                );
            }
            if let Some(reply) = reply {
                self.forward(
                    &job,
                    JobInput::Reply {
                        node: key.1.clone(),
                        reply,
                    },
                );
            }
        }
        self.apply(&key, effects);
        self.arm(&key);
    }

    /// The live jobs that have this node, by id.
    fn jobs_of(&self, key: &NodeKey) -> Vec<JobId> {
        self.jobs
            .iter()
            .filter(|(_, w)| w.org == key.0 && w.nodes.contains(&key.1))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Records the node's next deadline, if it has one, in the timer heap.
    fn arm(&mut self, key: &NodeKey) {
        if let Some(at) = self.nodes.get(key).and_then(Node::next_deadline) {
            self.timers.push(Reverse((at, key.clone())));
        }
    }

    /// Hands a node's input to its job. A job's inbox is unbounded on purpose: only the
    /// job's own nodes write to it, a few messages each, and a lost `ack_commit` or result
    /// would wedge the job (a bounded inbox of 1024 lost messages on a 1000-node job,
    /// found by the load generator).
    fn forward(&mut self, job: &JobId, input: JobInput) {
        self.forward_msg(job, TaskMsg::Input(input));
    }

    fn forward_msg(&mut self, job: &JobId, msg: TaskMsg) {
        let Some(w) = self.jobs.get(job) else { return };
        // The task ended without unwatching (it panicked): stop routing to it.
        if w.inbox.send(msg).is_err() {
            self.jobs.remove(job);
        }
    }

    fn apply(&mut self, key: &(OrgGuid, String), effects: Vec<machine::Effect>) {
        for effect in effects {
            match effect {
                machine::Effect::Send { to, command } => {
                    let message = match command {
                        ServerCommand::Abort => ServerMessage::Abort,
                        ServerCommand::Ack => ServerMessage::Ack,
                    };
                    self.channel.send(Outbound::ToNode {
                        routing_id: to.0,
                        org: key.0.clone(),
                        node: key.1.clone(),
                        message,
                    });
                }
                machine::Effect::Transition { to, .. } => {
                    let liveness = if to == State::Idle {
                        Liveness::Available
                    } else {
                        Liveness::Busy
                    };
                    self.snapshot.set(&key.0, &key.1, liveness);
                    if to == State::Idle && self.returning.remove(key) {
                        for job in self.jobs_of(key) {
                            self.forward(
                                &job,
                                JobInput::NodeBack {
                                    node: key.1.clone(),
                                    report: NodeReport::Idle,
                                },
                            );
                        }
                    }
                }
                machine::Effect::Stop(reason) => {
                    tracing::info!(org = %key.0, node = %key.1, ?reason, "node offline");
                    self.nodes.remove(key);
                    self.returning.remove(key);
                    self.snapshot.remove(&key.0, &key.1);
                    for job in self.jobs_of(key) {
                        self.forward(
                            &job,
                            JobInput::NodeDown {
                                node: key.1.clone(),
                            },
                        );
                    }
                }
            }
        }
    }

    fn handle_request(&mut self, r: Request) {
        match r {
            Request::Watch {
                job,
                org,
                nodes,
                inbox,
                reply,
            } => {
                let available: Vec<bool> = nodes
                    .iter()
                    .map(|n| {
                        self.nodes
                            .get(&(org.clone(), n.clone()))
                            .is_some_and(|m| m.state() == State::Idle)
                    })
                    .collect();
                self.jobs.insert(
                    job,
                    WatchedJob {
                        org,
                        nodes: nodes.into_iter().collect(),
                        inbox,
                    },
                );
                // The job task waits for this; if it is gone there is nobody to tell.
                let _ = reply.send(available);
            }
            Request::Unwatch { job } => {
                self.jobs.remove(&job);
            }
            Request::Send { org, node, message } => {
                if let Some(n) = self.nodes.get(&(org.clone(), node.clone())) {
                    self.channel.send(Outbound::ToNode {
                        routing_id: n.routing_id().0.clone(),
                        org,
                        node,
                        message,
                    });
                }
            }
            Request::Rehab { org, node } => {
                let key = (org, node);
                if let Some(n) = self.nodes.get_mut(&key) {
                    let fx = n.handle(Instant::now(), machine::Input::DoRehab);
                    self.apply(&key, fx);
                    self.arm(&key);
                }
            }
            Request::LiveJobs(reply) => {
                let mut ids: Vec<JobId> = self.jobs.keys().cloned().collect();
                ids.sort();
                let _ = reply.send(ids);
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, key))) = self.timers.pop() {
                due.push(key);
            }
        }
        for key in due {
            // A stale entry (the node left rehab, or its deadline moved) fires nothing.
            let Some(n) = self.nodes.get_mut(&key) else {
                continue;
            };
            if n.next_deadline().is_none_or(|d| d > now) {
                continue;
            }
            let fx = n.handle_timeout(now);
            self.apply(&key, fx);
            self.arm(&key);
        }
    }

    fn scan(&mut self, now: Instant) {
        let keys: Vec<(OrgGuid, String)> = self.nodes.keys().cloned().collect();
        for key in keys {
            if let Some(n) = self.nodes.get_mut(&key) {
                let fx = n.handle(now, machine::Input::LivenessScan);
                self.apply(&key, fx);
                self.arm(&key);
            }
        }
    }
}
