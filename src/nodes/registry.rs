//! The registry: every node machine (zmq.md §4) and which live job has which node, so
//! that node messages reach their jobs and job commands reach their nodes.
//!
//! Pure, as the job and node machines: its driver (`task.rs`) feeds it [`Input`]s with
//! `now` and applies the returned [`Effect`]s: to a node (over the ZeroMQ thread), to a
//! job (its task's inbox), or to the published snapshot HTTP reads. Its rules:
//! - a node's first message to this process decides adoption: a node still on one of its
//!   live jobs is adopted as it is, and every job of the node hears what the node reports
//!   (issue 12 §2); any other node is reset first, and its jobs hear it is back, idle,
//!   once the reset is done;
//! - a message naming a live job goes to that job as a [`Reply`]; a result for a job not
//!   live here is acknowledged at once, since nothing could record it later;
//! - a node that stops (offline, new incarnation) is down for every job that has it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use pushy_protocol::job::{JobId, OrgGuid};
use pushy_protocol::message::{ClientMessage, ClientMessageType, JobRef, ServerMessage};

use super::machine::{self, Incarnation, JobLink, Node, RoutingId, ServerCommand, State};
use super::news::{NodeNews, NodeReport, Reply};
use super::snapshot::Availability;

/// Timing of the registry.
#[derive(Clone, Copy, Debug)]
pub struct RegistryParams {
    /// Node machine tuning.
    pub node: machine::Params,
    /// How often every node's liveness is checked.
    pub scan_interval: Duration,
}

/// A node's key: its organization and name.
pub type NodeKey = (OrgGuid, String);

/// What the driver feeds the registry.
#[derive(Clone, Debug)]
pub enum Input {
    /// A verified message from a node, on the connection `routing_id`.
    Message {
        /// The node's organization.
        org: OrgGuid,
        /// The libzmq routing id of its connection.
        routing_id: Vec<u8>,
        /// The message.
        message: ClientMessage,
    },
    /// A job starts watching its nodes; answered by [`Effect::Watching`].
    Watch {
        /// The job.
        job: JobId,
        /// Its organization.
        org: OrgGuid,
        /// Its nodes.
        nodes: Vec<String>,
    },
    /// The job is over (or its task is gone): its nodes' messages are no longer routed.
    Unwatch {
        /// The job.
        job: JobId,
    },
    /// A job's command for a node; dropped if the node is not connected, as the original
    /// drops messages to nodes without a machine.
    Send {
        /// The organization.
        org: OrgGuid,
        /// The node.
        node: String,
        /// The message.
        message: ServerMessage,
    },
    /// Reset a node after its job (`do_rehab`).
    Rehab {
        /// The organization.
        org: OrgGuid,
        /// The node.
        node: String,
    },
    /// Time has passed: node timers that are due fire, and the liveness scan runs when
    /// its interval is up.
    Tick,
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send a message to a node over the command channel.
    ToNode {
        /// Its connection.
        routing_id: Vec<u8>,
        /// Its organization.
        org: OrgGuid,
        /// The node.
        node: String,
        /// The message.
        message: ServerMessage,
    },
    /// Tell a job about one of its nodes.
    ToJob {
        /// The job.
        job: JobId,
        /// The news.
        news: NodeNews,
    },
    /// Publish a node's state for HTTP: online with this availability, or offline.
    Publish {
        /// The organization.
        org: OrgGuid,
        /// The node.
        node: String,
        /// `None` when the node went offline.
        availability: Option<Availability>,
    },
    /// The answer to [`Input::Watch`]: whether each of the job's nodes is available
    /// (online and idle) now, in order.
    Watching {
        /// The job.
        job: JobId,
        /// One flag per node.
        available: Vec<bool>,
    },
}

struct WatchedJob {
    org: OrgGuid,
    nodes: HashSet<String>,
}

/// Every node machine and every live job's nodes.
pub struct Registry {
    params: RegistryParams,
    nodes: HashMap<NodeKey, Node>,
    /// Node deadlines, earliest first. Entries are not removed when a deadline moves; a
    /// popped entry only fires if the node's current deadline has really passed, so no
    /// tick scans every node to find the next timer.
    timers: BinaryHeap<Reverse<(Instant, NodeKey)>>,
    next_scan: Instant,
    jobs: HashMap<JobId, WatchedJob>,
    /// The live jobs of each node, so a node's news reaches its jobs without scanning
    /// every job.
    jobs_by_node: HashMap<NodeKey, HashSet<JobId>>,
    /// Nodes reset on their return (their first message named no job they are part of)
    /// whose jobs hear of them once the reset is done: a job that re-asks a node before
    /// then could see its commit wiped by a repeated `abort`.
    returning: HashSet<NodeKey>,
    /// Nodes held here whose job was watched again (its owner changed: another instance
    /// took the job over): the node's next message is reconciled as a first message
    /// would be, so the new owner learns what each node is doing.
    awaiting: HashSet<(NodeKey, JobId)>,
    /// Nodes whose result for a watched job went through here. Asked for a report after
    /// a takeover, such a node is idle, but its result was forwarded (to the job's
    /// previous owner; the new one reads it): it reports that it ran, not that it lost
    /// the job.
    delivered: HashSet<(NodeKey, JobId)>,
}

impl Registry {
    /// An empty registry whose first liveness scan is one interval after `now`.
    pub fn new(now: Instant, params: RegistryParams) -> Registry {
        Registry {
            params,
            nodes: HashMap::new(),
            timers: BinaryHeap::new(),
            next_scan: now + params.scan_interval,
            jobs: HashMap::new(),
            jobs_by_node: HashMap::new(),
            returning: HashSet::new(),
            awaiting: HashSet::new(),
            delivered: HashSet::new(),
        }
    }

    /// When [`Input::Tick`] should next be fed: the earliest node timer or the next scan.
    pub fn next_deadline(&self) -> Instant {
        self.timers
            .peek()
            .map_or(self.next_scan, |Reverse((at, _))| (*at).min(self.next_scan))
    }

    /// Applies one input.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Message {
                org,
                routing_id,
                message,
            } => self.message(now, org, RoutingId(routing_id), message, &mut fx),
            Input::Watch { job, org, nodes } => {
                let available = nodes
                    .iter()
                    .map(|n| {
                        self.nodes
                            .get(&(org.clone(), n.clone()))
                            .is_some_and(|m| m.state() == State::Idle)
                    })
                    .collect();
                let rewatch = self.jobs.contains_key(&job);
                for node in &nodes {
                    let key = (org.clone(), node.clone());
                    if rewatch && self.nodes.contains_key(&key) {
                        self.awaiting.insert((key.clone(), job.clone()));
                    }
                    self.jobs_by_node
                        .entry(key)
                        .or_default()
                        .insert(job.clone());
                }
                self.jobs.insert(
                    job.clone(),
                    WatchedJob {
                        org,
                        nodes: nodes.into_iter().collect(),
                    },
                );
                fx.push(Effect::Watching { job, available });
            }
            Input::Unwatch { job } => self.unwatch(&job),
            Input::Send { org, node, message } => {
                if let Some(n) = self.nodes.get(&(org.clone(), node.clone())) {
                    fx.push(Effect::ToNode {
                        routing_id: n.routing_id().0.clone(),
                        org,
                        node,
                        message,
                    });
                }
            }
            Input::Rehab { org, node } => {
                let key = (org, node);
                self.node_input(now, &key, machine::Input::DoRehab, &mut fx);
            }
            Input::Tick => {
                if now >= self.next_scan {
                    self.scan(now, &mut fx);
                    self.next_scan = now + self.params.scan_interval;
                }
                self.fire_timers(now, &mut fx);
            }
        }
        fx
    }

    fn unwatch(&mut self, job: &JobId) {
        let Some(w) = self.jobs.remove(job) else {
            return;
        };
        if !self.awaiting.is_empty() {
            self.awaiting.retain(|(_, j)| j != job);
        }
        if !self.delivered.is_empty() {
            self.delivered.retain(|(_, j)| j != job);
        }
        for node in w.nodes {
            let key = (w.org.clone(), node);
            if let Some(jobs) = self.jobs_by_node.get_mut(&key) {
                jobs.remove(job);
                if jobs.is_empty() {
                    self.jobs_by_node.remove(&key);
                }
            }
        }
    }

    /// The live jobs that have this node.
    fn jobs_of(&self, key: &NodeKey) -> Vec<JobId> {
        let mut jobs: Vec<JobId> = self
            .jobs_by_node
            .get(key)
            .map(|jobs| jobs.iter().cloned().collect())
            .unwrap_or_default();
        // A node is rarely in more than one job; the order only keeps effects stable.
        jobs.sort();
        jobs
    }

    /// Which job a message names, and how the node machine sees that.
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

    fn message(
        &mut self,
        now: Instant,
        org: OrgGuid,
        routing: RoutingId,
        m: ClientMessage,
        fx: &mut Vec<Effect>,
    ) {
        let key = (org, m.node.clone());
        if m.kind == ClientMessageType::Output {
            // Live output (issue 15 §2) changes nothing about the node: it only goes to
            // the job it names, if that job is live here and the node is known.
            if let (_, Some(job)) = self.job_link(&m.job_id)
                && self.nodes.contains_key(&key)
            {
                let output = crate::events::Output {
                    node: m.node,
                    stdout: m.stdout,
                    stderr: m.stderr,
                    dropped: m.dropped,
                };
                fx.push(Effect::ToJob {
                    job,
                    news: NodeNews::Output(output),
                });
            }
            return;
        }
        let (link, job) = self.job_link(&m.job_id);
        // The node machine's effects come last, after the job has heard the message: a
        // job sees a node's reply before the node's stop that the same message caused.
        let mut node_fx = match self.nodes.get_mut(&key) {
            Some(node) => node.handle(now, machine::Input::NewRoutingId(routing)),
            None => self.first_message(now, &key, routing, &m, job.as_ref(), fx),
        };
        let input = match m.kind {
            ClientMessageType::Heartbeat => machine::Input::Heartbeat {
                incarnation: Incarnation(m.incarnation_id.clone()),
                job: link,
            },
            ClientMessageType::Aborted => machine::Input::Aborted,
            _ => machine::Input::JobMessage { job: link },
        };
        if let Some(node) = self.nodes.get_mut(&key) {
            node_fx.extend(node.handle(now, input));
        }
        self.report_if_awaited(&key, &m, job.as_ref(), fx);
        self.job_news(&key, &m, job, fx);
        self.node_effects(&key, node_fx, fx);
        self.arm(&key);
    }

    /// What a node's message means for the job it names.
    fn job_news(
        &mut self,
        key: &NodeKey,
        m: &ClientMessage,
        job: Option<JobId>,
        fx: &mut Vec<Effect>,
    ) {
        if job.is_none()
            && let JobRef::Id(id) = &m.job_id
            && matches!(
                m.kind,
                ClientMessageType::Succeeded | ClientMessageType::Failed
            )
        {
            // A result for a job no longer running here (finished, or unknown to this
            // process): nothing will record it, and re-sending would not change that.
            fx.push(Effect::ToNode {
                routing_id: self
                    .nodes
                    .get(key)
                    .map_or_else(Vec::new, |n| n.routing_id().0.clone()),
                org: key.0.clone(),
                node: key.1.clone(),
                message: ServerMessage::ResultAck { job_id: id.clone() },
            });
        }
        let Some(job) = job else { return };
        if m.output_truncated {
            fx.push(Effect::ToJob {
                job: job.clone(),
                news: NodeNews::OutputTruncated {
                    node: key.1.clone(),
                },
            });
        }
        if let Some(reply) = reply(m) {
            if matches!(reply, Reply::Succeeded { .. } | Reply::Failed { .. }) {
                self.delivered.insert((key.clone(), job.clone()));
            }
            fx.push(Effect::ToJob {
                job,
                news: NodeNews::Reply {
                    node: key.1.clone(),
                    reply,
                },
            });
        }
    }

    /// A node's first message to this process: adopt it or reset it (see the module's
    /// rules), then publish it online. Returns the new machine's own effects.
    fn first_message(
        &mut self,
        now: Instant,
        key: &NodeKey,
        routing: RoutingId,
        m: &ClientMessage,
        named: Option<&JobId>,
        fx: &mut Vec<Effect>,
    ) -> Vec<machine::Effect> {
        let incarnation = Incarnation(m.incarnation_id.clone());
        let on_live_job = named
            .and_then(|j| self.jobs.get(j))
            .is_some_and(|w| w.org == key.0 && w.nodes.contains(&key.1));
        let (node, node_fx) = if on_live_job {
            tracing::info!(org = %key.0, node = %key.1, "node online, still on a live job: adopted without a reset");
            // Every job of the node hears what it says, so a job can re-send what the
            // previous server process may have lost, or learn at once that the node
            // can no longer deliver (issue 12 §2).
            let report = report_on_named_job(m);
            for id in self.jobs_of(key) {
                let report = if Some(&id) == named {
                    report
                } else {
                    Some(NodeReport::OtherJob)
                };
                if let Some(report) = report {
                    fx.push(Effect::ToJob {
                        job: id,
                        news: NodeNews::Back {
                            node: key.1.clone(),
                            report,
                        },
                    });
                }
            }
            Node::adopt(now, self.params.node, incarnation, routing)
        } else {
            // Debug, not info: a restart of a large fleet's server would log every node.
            tracing::debug!(org = %key.0, node = %key.1, "node online");
            // Reset first; its jobs hear that it is back, idle, when `aborted` arrives.
            if self.jobs_by_node.contains_key(key) {
                self.returning.insert(key.clone());
            }
            Node::new(now, self.params.node, incarnation, routing)
        };
        fx.push(Effect::Publish {
            org: key.0.clone(),
            node: key.1.clone(),
            availability: Some(node.state().availability()),
        });
        self.nodes.insert(key.clone(), node);
        node_fx
    }

    /// The node's report to each of its jobs that awaits one (see `awaiting`), from the
    /// message `m` that names `named` (a live job) or not.
    fn report_if_awaited(
        &mut self,
        key: &NodeKey,
        m: &ClientMessage,
        named: Option<&JobId>,
        fx: &mut Vec<Effect>,
    ) {
        if self.awaiting.is_empty() {
            return;
        }
        for id in self.jobs_of(key) {
            let entry = (key.clone(), id.clone());
            if !self.awaiting.contains(&entry) {
                continue;
            }
            let report = if Some(&id) == named {
                report_on_named_job(m)
            } else if self.delivered.contains(&entry) {
                Some(NodeReport::Running)
            } else if matches!(m.job_id, JobRef::None) {
                Some(NodeReport::Idle)
            } else {
                Some(NodeReport::OtherJob)
            };
            // An answer to commit or run goes to the job as it is; the next heartbeat
            // reports.
            if let Some(report) = report {
                self.awaiting.remove(&entry);
                fx.push(Effect::ToJob {
                    job: id,
                    news: NodeNews::Back {
                        node: key.1.clone(),
                        report,
                    },
                });
            }
        }
    }

    /// Feeds one node's machine, if the node is connected.
    fn node_input(
        &mut self,
        now: Instant,
        key: &NodeKey,
        input: machine::Input,
        fx: &mut Vec<Effect>,
    ) {
        let Some(node) = self.nodes.get_mut(key) else {
            return;
        };
        let node_fx = node.handle(now, input);
        self.node_effects(key, node_fx, fx);
        self.arm(key);
    }

    /// Records the node's next deadline, if it has one, in the timer heap.
    fn arm(&mut self, key: &NodeKey) {
        if let Some(at) = self.nodes.get(key).and_then(Node::next_deadline) {
            self.timers.push(Reverse((at, key.clone())));
        }
    }

    /// Turns a node machine's effects into the registry's.
    fn node_effects(&mut self, key: &NodeKey, node_fx: Vec<machine::Effect>, fx: &mut Vec<Effect>) {
        for effect in node_fx {
            match effect {
                machine::Effect::Send { to, command } => fx.push(Effect::ToNode {
                    routing_id: to.0,
                    org: key.0.clone(),
                    node: key.1.clone(),
                    message: match command {
                        ServerCommand::Abort => ServerMessage::Abort,
                        ServerCommand::Ack => ServerMessage::Ack,
                    },
                }),
                machine::Effect::Transition { to, .. } => {
                    fx.push(Effect::Publish {
                        org: key.0.clone(),
                        node: key.1.clone(),
                        availability: Some(to.availability()),
                    });
                    if to == State::Idle && self.returning.remove(key) {
                        for job in self.jobs_of(key) {
                            fx.push(Effect::ToJob {
                                job,
                                news: NodeNews::Back {
                                    node: key.1.clone(),
                                    report: NodeReport::Idle,
                                },
                            });
                        }
                    }
                }
                machine::Effect::Stop(reason) => {
                    tracing::info!(org = %key.0, node = %key.1, ?reason, "node offline");
                    self.nodes.remove(key);
                    self.returning.remove(key);
                    if !self.awaiting.is_empty() {
                        self.awaiting.retain(|(k, _)| k != key);
                    }
                    fx.push(Effect::Publish {
                        org: key.0.clone(),
                        node: key.1.clone(),
                        availability: None,
                    });
                    for job in self.jobs_of(key) {
                        fx.push(Effect::ToJob {
                            job,
                            news: NodeNews::Down {
                                node: key.1.clone(),
                            },
                        });
                    }
                }
            }
        }
    }

    fn fire_timers(&mut self, now: Instant, fx: &mut Vec<Effect>) {
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
            let Some(node) = self.nodes.get_mut(&key) else {
                continue;
            };
            if node.next_deadline().is_none_or(|d| d > now) {
                continue;
            }
            let node_fx = node.handle_timeout(now);
            self.node_effects(&key, node_fx, fx);
            self.arm(&key);
        }
    }

    fn scan(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let keys: Vec<NodeKey> = self.nodes.keys().cloned().collect();
        for key in keys {
            self.node_input(now, &key, machine::Input::LivenessScan, fx);
        }
    }
}

/// What a node says of the live job its message names: a heartbeat says whether it runs
/// the command or waits committed; a result had its `run` (its acknowledgement may have
/// been lost with the previous driver of the job). Answers to commit or run (`None`) go
/// through the job as they are.
fn report_on_named_job(m: &ClientMessage) -> Option<NodeReport> {
    match m.kind {
        ClientMessageType::Heartbeat if m.job_state.as_deref() == Some("running") => {
            Some(NodeReport::Running)
        }
        ClientMessageType::Heartbeat => Some(NodeReport::Committed),
        ClientMessageType::Succeeded | ClientMessageType::Failed => Some(NodeReport::Running),
        _ => None,
    }
}

/// The job's view of a node message that names it (`None` for a heartbeat).
fn reply(m: &ClientMessage) -> Option<Reply> {
    match m.kind {
        ClientMessageType::Heartbeat => None,
        ClientMessageType::AckCommit => Some(Reply::AckCommit),
        ClientMessageType::NackCommit => Some(Reply::NackCommit),
        ClientMessageType::AckRun => Some(Reply::AckRun),
        ClientMessageType::NackRun => Some(Reply::NackRun),
        ClientMessageType::Succeeded => Some(Reply::Succeeded {
            stdout: m.stdout.clone(),
            stderr: m.stderr.clone(),
        }),
        ClientMessageType::Failed => Some(Reply::Failed {
            stdout: m.stdout.clone(),
            stderr: m.stderr.clone(),
        }),
        ClientMessageType::Aborted => Some(Reply::Aborted),
        // Relayed before any of this (see `message`).
        ClientMessageType::Output => None,
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
