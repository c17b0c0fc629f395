//! How this instance joins a cluster (issue 14), for the composition root: membership
//! first (so the config endpoint can send nodes here), the tasks that keep it, and the
//! handling of what the other instances send over the bus.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pushy_protocol::job::{JobId, OrgGuid};
use pushy_protocol::message::ServerMessage;
use pushy_store::cluster::{ClusterDb, Instance};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::{ClientKeys, SessionKeys, decode_ccpk};
use crate::cluster::inbox::{self, Handler};
use crate::cluster::message::ORG_NUMBERS;
use crate::cluster::mirror::Change;
use crate::cluster::{BusMessage, Cluster, Settings};
use crate::events::Events;
use crate::jobs::{JobsHandle, LiveJobs};
use crate::nodes::news::{NodeNews, Reply};
use crate::nodes::registry::Input;
use crate::nodes::{JobSink, NodeSnapshot, RegistryHandle};

/// Joins: registers `me`, reads the members, and starts the membership, outbox and
/// presence tasks.
///
/// # Errors
/// When the database fails.
pub async fn join(
    db: ClusterDb,
    me: Instance,
    settings: Settings,
    snapshot: NodeSnapshot,
    token: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<Cluster, pushy_store::Error> {
    let membership = db.join(&me, settings.lease).await?;
    let live = db.live().await?;
    tracing::info!(instance = %me.id, members = live.len(), "joined the cluster");
    let (cluster, outbox) = Cluster::new(me, db.clone(), settings, live);
    tracker.spawn(crate::cluster::outbox_task(db, outbox, token.clone()));
    tracker.spawn(crate::cluster::membership::run(
        cluster.clone(),
        membership,
        token.clone(),
    ));
    tracker.spawn(crate::cluster::presence::run(
        cluster.clone(),
        snapshot,
        token.clone(),
    ));
    Ok(cluster)
}

/// Where the registry's news for a job goes: its task here, or over the bus to the
/// instance that owns it.
pub fn job_sink(live: LiveJobs, cluster: Option<Cluster>) -> JobSink {
    Arc::new(move |job, news| match live.try_deliver(job, news) {
        Ok(()) => true,
        Err(news) => {
            let Some(cluster) = &cluster else {
                return false;
            };
            let Some(owner) = cluster.owner_of(job.as_str()) else {
                return false;
            };
            let org = cluster.org_of(job.as_str()).unwrap_or_default();
            cluster.post(
                &owner,
                Some(job.as_str()),
                &BusMessage::News {
                    from: cluster.id().to_owned(),
                    job: job.to_string(),
                    org,
                    news,
                },
            );
            true
        }
    })
}

/// The parts the bus handler hands messages to.
pub struct Parts {
    /// This instance.
    pub cluster: Cluster,
    /// The local registry.
    pub registry: RegistryHandle,
    /// Live jobs here.
    pub live: LiveJobs,
    /// Jobs here (aborts).
    pub jobs: JobsHandle,
    /// This process's feeds.
    pub events: Events,
    /// Session keys (org names learned on admission).
    pub session_keys: SessionKeys,
    /// Admitted Curve keys.
    pub client_keys: ClientKeys,
}

/// Loads the job events kept in the database into this process's feeds, then starts the
/// inbox task from there, and the takeover loop.
///
/// # Errors
/// When the database fails.
pub async fn listen(
    parts: Parts,
    token: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), pushy_store::Error> {
    let db = parts.cluster.db().clone();
    let cursor = db.last_id().await?;
    // After the cursor: a change published meanwhile is read again from the bus, and
    // applying a change twice is harmless. This instance's own nodes are its own task's.
    let mut others: HashMap<String, Vec<Change>> = HashMap::new();
    for (org, p) in db.all_presence().await? {
        if p.instance != parts.cluster.id() {
            let change = (org, p.node, Some(p.available));
            others.entry(p.instance).or_default().push(change);
        }
    }
    for (instance, changes) in others {
        parts.cluster.note_presence(&instance, &changes);
    }
    for row in db.events(cursor).await? {
        if let Some(message) = inbox::decode(&row) {
            record_events(&parts.events, row.id, message);
        }
    }
    let cluster = parts.cluster.clone();
    let jobs = parts.jobs.clone();
    tracker.spawn(inbox::run(
        cluster.clone(),
        cursor,
        handler(Arc::new(parts)),
        token.clone(),
    ));
    let token = token.clone();
    tracker.spawn(async move {
        let mut ticks = cluster.ticks();
        loop {
            match jobs.take_over_orphans().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "took over jobs of instances that died"),
                Err(e) => tracing::warn!(error = %e, "taking over orphaned jobs failed; next tick retries"),
            }
            tokio::select! {
                r = ticks.changed() => if r.is_err() { return },
                () = token.cancelled() => return,
            }
        }
    });
    Ok(())
}

fn handler(parts: Arc<Parts>) -> Handler {
    Arc::new(move |id, message| {
        let parts = parts.clone();
        Box::pin(async move { handle(&parts, id, message).await })
    })
}

async fn handle(p: &Parts, id: i64, message: BusMessage) {
    let me = p.cluster.id();
    match message {
        BusMessage::Watch {
            from,
            job,
            org,
            nodes,
        } if from != me => {
            let Some(job) = JobId::parse(&job) else {
                return;
            };
            p.cluster.note_owner(job.as_str(), Some((&from, &org)));
            p.registry.watch(job, OrgGuid(org), nodes).await;
        }
        BusMessage::Unwatch { from, job } if from != me => {
            let Some(job) = JobId::parse(&job) else {
                return;
            };
            p.cluster.note_owner(job.as_str(), None);
            p.registry.send(Input::Unwatch { job }).await;
        }
        BusMessage::Watch { .. } | BusMessage::Unwatch { .. } => {}
        BusMessage::ToNode {
            org,
            nodes,
            message,
        } => {
            for node in nodes {
                p.registry
                    .send(Input::Send {
                        org: OrgGuid(org.clone()),
                        node,
                        message: message.clone(),
                    })
                    .await;
            }
        }
        BusMessage::Rehab { org, node } => {
            p.registry
                .send(Input::Rehab {
                    org: OrgGuid(org),
                    node,
                })
                .await;
        }
        BusMessage::News {
            from,
            job,
            org,
            news,
        } => {
            let Some(job_id) = JobId::parse(&job) else {
                return;
            };
            p.cluster.note_holder(&org, node_of(&news), &from);
            if let Err(news) = p.live.try_deliver(&job_id, news)
                && let NodeNews::Reply {
                    node,
                    reply: Reply::Succeeded { .. } | Reply::Failed { .. },
                } = news
            {
                // The job is no longer driven here: nothing will record the result, so
                // the node may forget it (as for a result of a job not live).
                p.cluster.post(
                    &from,
                    None,
                    &BusMessage::ToNode {
                        org,
                        nodes: vec![node],
                        message: ServerMessage::ResultAck { job_id: job },
                    },
                );
            }
        }
        BusMessage::Admit {
            org_name,
            org,
            node,
            ccpk,
            ttl,
        } => {
            p.session_keys
                .get_or_create(&org_name, &OrgGuid(org), &node);
            if let Some(key) = ccpk.as_deref().and_then(decode_ccpk) {
                p.client_keys
                    .allow(key, Instant::now(), Duration::from_secs(ttl));
            }
        }
        BusMessage::Presence { from, changes } if from != me => {
            p.cluster.note_presence(&from, &changes);
        }
        BusMessage::Presence { .. } => {}
        BusMessage::Output {
            job, output, at, ..
        } => {
            if let Some(job) = JobId::parse(&job) {
                p.events.output(&job, &output, micros(at));
            }
        }
        BusMessage::Abort { job } => {
            if let Some(job) = JobId::parse(&job) {
                p.jobs.abort_here(&job);
            }
        }
        events @ BusMessage::Events { .. } => record_events(&p.events, id, events),
    }
}

/// Records job events from bus row `id` in this process's feeds.
fn record_events(feeds: &Events, id: i64, message: BusMessage) {
    let BusMessage::Events { org, job, events } = message else {
        return;
    };
    let Some(job) = JobId::parse(&job) else {
        return;
    };
    let org = OrgGuid(org);
    for (i, timed) in events.into_iter().enumerate() {
        let number = id as u64 * ORG_NUMBERS + i as u64;
        feeds.record(&org, &job, &timed.event, micros(timed.at), Some(number));
    }
}

fn micros(at: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(at).unwrap_or_default()
}

fn node_of(news: &NodeNews) -> &str {
    match news {
        NodeNews::Reply { node, .. }
        | NodeNews::Down { node }
        | NodeNews::Back { node, .. }
        | NodeNews::OutputTruncated { node } => node,
        NodeNews::Output(output) => &output.node,
    }
}
