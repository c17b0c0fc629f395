//! What a job's task talks to: the [`Router`] takes its commands to its nodes wherever
//! they are held, the [`Feeds`] take its events to every instance's feeds. On a single
//! instance both are the local registry and feeds, unchanged.

use chrono::{DateTime, Utc};
use pushy_protocol::job::{JobId, OrgGuid};
use pushy_store::cluster::EVENTS;

use super::handle::Cluster;
use super::message::{BusMessage, Timed};
use crate::events::{Events, JobEvent, Output, Recorded};
use crate::nodes::NodeSnapshot;
use crate::nodes::RegistryHandle;
use crate::nodes::registry::Input;

/// Routes a job's registry requests: to the local registry for nodes held here, over the
/// bus to the instance holding the node otherwise.
#[derive(Clone)]
pub struct Router {
    registry: RegistryHandle,
    snapshot: NodeSnapshot,
    cluster: Option<Cluster>,
}

impl Router {
    /// A router over the local registry, and the cluster when there is one.
    pub fn new(registry: RegistryHandle, snapshot: NodeSnapshot, cluster: Option<Cluster>) -> Self {
        Router {
            registry,
            snapshot,
            cluster,
        }
    }

    /// Hands `input` on; false when the local registry has stopped. A command for a
    /// node no instance is known to hold goes to every instance.
    pub async fn send(&self, input: Input) -> bool {
        let Some(cluster) = &self.cluster else {
            return self.registry.send(input).await;
        };
        match input {
            Input::Send { org, node, message } if !self.snapshot.is_connected(&org, &node) => {
                let to = cluster.holder(&org, &node);
                let m = BusMessage::ToNode {
                    org: org.as_str().to_owned(),
                    nodes: vec![node],
                    message,
                };
                post_to_holder(cluster, to, &m);
                true
            }
            Input::Rehab { org, node } if !self.snapshot.is_connected(&org, &node) => {
                let to = cluster.holder(&org, &node);
                let m = BusMessage::Rehab {
                    org: org.as_str().to_owned(),
                    node,
                };
                post_to_holder(cluster, to, &m);
                true
            }
            Input::Unwatch { job } => {
                let m = BusMessage::Unwatch {
                    from: cluster.id().to_owned(),
                    job: job.to_string(),
                };
                cluster.broadcast(None, &m);
                self.registry.send(Input::Unwatch { job }).await
            }
            other => self.registry.send(other).await,
        }
    }

    /// Starts routing news of `nodes` to `job` (owned here) from every instance; returns
    /// whether each node is available now (held here and idle, or published available by
    /// its holder), or `None` when the local registry has stopped.
    pub async fn watch(&self, job: JobId, org: OrgGuid, nodes: Vec<String>) -> Option<Vec<bool>> {
        let mut available = self
            .registry
            .watch(job.clone(), org.clone(), nodes.clone())
            .await?;
        let Some(cluster) = &self.cluster else {
            return Some(available);
        };
        cluster.note_owner(job.as_str(), Some((cluster.id(), org.as_str())));
        cluster.broadcast(
            None,
            &BusMessage::Watch {
                from: cluster.id().to_owned(),
                job: job.to_string(),
                org: org.as_str().to_owned(),
                nodes: nodes.clone(),
            },
        );
        match cluster.presence(&org, Some(&nodes)).await {
            Ok(found) => {
                let elsewhere: std::collections::HashMap<&str, bool> = found
                    .iter()
                    .filter(|p| p.instance != cluster.id())
                    .map(|p| (p.node.as_str(), p.available))
                    .collect();
                for (flag, node) in available.iter_mut().zip(&nodes) {
                    *flag = *flag || elsewhere.get(node.as_str()).copied().unwrap_or(false);
                }
            }
            Err(e) => {
                // Not knowing is not a reason to count a node out: every node is asked,
                // and those that do not answer are settled by the voting window.
                tracing::warn!(job_id = %job, error = %e, "cannot read node states of other instances; every node is asked");
                available.iter_mut().for_each(|flag| *flag = true);
            }
        }
        Some(available)
    }
}

/// Posts a command to the instance holding its node or, when none is known (its holder's
/// state not read yet, or the node offline), to every instance: only the one holding the
/// node acts on it, as a single instance drops messages to nodes it does not hold.
fn post_to_holder(cluster: &Cluster, holder: Option<String>, message: &BusMessage) {
    match holder {
        Some(to) => cluster.post(&to, None, message),
        None => cluster.broadcast(None, message),
    }
}

/// Where a job's events go: this process's feeds, or, in a cluster, the bus, from which
/// every instance (this one included) records them in the same order with the same ids.
#[derive(Clone)]
pub struct Feeds {
    events: Events,
    cluster: Option<Cluster>,
}

impl Feeds {
    /// Feeds over the local logs, and the cluster when there is one.
    pub fn new(events: Events, cluster: Option<Cluster>) -> Self {
        Feeds { events, cluster }
    }

    /// Makes the job's feed live here before its first event.
    pub fn begin_job(&self, org: &OrgGuid, job: &JobId) {
        self.events.begin_job(org, job);
    }

    /// Emits `event` of `job`, created at `now`.
    pub fn emit(&self, org: &OrgGuid, job: &JobId, event: &JobEvent, now: DateTime<Utc>) {
        match &self.cluster {
            None => self.events.emit(org, job, event, now),
            Some(cluster) => cluster.post(
                EVENTS,
                Some(job.as_str()),
                &BusMessage::Events {
                    org: org.as_str().to_owned(),
                    job: job.to_string(),
                    events: vec![Timed {
                        event: Recorded::of(event),
                        at: now.timestamp_micros(),
                    }],
                },
            ),
        }
    }

    /// Relays a running node's output (issue 15 §2): to this process's feeds, or in a
    /// cluster to every instance's, over the bus (not kept there for late joiners).
    pub fn output(&self, org: &OrgGuid, job: &JobId, output: &Output, now: DateTime<Utc>) {
        match &self.cluster {
            None => self.events.output(job, output, now),
            Some(cluster) => cluster.broadcast(
                Some(job.as_str()),
                &BusMessage::Output {
                    org: org.as_str().to_owned(),
                    job: job.to_string(),
                    output: output.clone(),
                    at: now.timestamp_micros(),
                },
            ),
        }
    }

    /// Ends the job's feed here without `job_complete` (its task died).
    pub fn abandon_job(&self, job: &JobId) {
        self.events.abandon_job(job);
    }
}
