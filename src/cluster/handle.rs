//! The handle on this instance's part of the cluster: who it is, the live members, the
//! outbox, and what it has learnt of nodes' holders and jobs' owners.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use pushy_protocol::job::OrgGuid;
use pushy_store::cluster::{ClusterDb, EVERYONE, Instance, Presence};
use tokio::sync::{mpsc, watch};

use super::assign;
use super::message::BusMessage;
use super::mirror::{Change, Mirror};
use super::outbox::{Outgoing, Queued};

/// Timing of the cluster (the `[cluster]` section).
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Membership lease.
    pub lease: Duration,
    /// Renewal and re-read interval.
    pub tick: Duration,
    /// How long job events stay in the database after their job finished (for feeds
    /// opened on an instance that started later).
    pub keep_events: Duration,
}

/// Handle on this instance's part of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    me: Instance,
    db: ClusterDb,
    settings: Settings,
    live: RwLock<Vec<Instance>>,
    outbox: mpsc::UnboundedSender<Queued>,
    /// Which instance holds each node, as last heard (presence, or news from it).
    holders: Mutex<HashMap<(String, String), String>>,
    /// Every node's holder and availability, as last published.
    mirror: Mirror,
    /// The owner and organization of each job whose nodes this instance routes.
    owners: Mutex<HashMap<String, (String, String)>>,
    /// Bumped after each membership tick: the takeover loop wakes on it.
    ticks: watch::Sender<u64>,
    /// Set when this instance could not renew its membership for a whole lease: the
    /// others may have taken its jobs over, so it stopped.
    fenced: std::sync::atomic::AtomicBool,
}

impl Cluster {
    /// The handle for `me`, with `live` as the members known at start, and the queue its
    /// outbox task drains.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(
        me: Instance,
        db: ClusterDb,
        settings: Settings,
        live: Vec<Instance>,
    ) -> (Cluster, mpsc::UnboundedReceiver<Queued>) {
        let (outbox, rx) = mpsc::unbounded_channel();
        let cluster = Cluster {
            inner: Arc::new(Inner {
                me,
                db,
                settings,
                live: RwLock::new(live),
                outbox,
                holders: Mutex::default(),
                mirror: Mirror::default(),
                owners: Mutex::default(),
                ticks: watch::channel(0).0,
                fenced: Default::default(),
            }),
        };
        (cluster, rx)
    }

    /// This instance.
    pub fn me(&self) -> &Instance {
        &self.inner.me
    }

    /// This instance's id.
    pub fn id(&self) -> &str {
        &self.inner.me.id
    }

    /// The shared rows.
    pub fn db(&self) -> &ClusterDb {
        &self.inner.db
    }

    /// The cluster's timing.
    pub fn settings(&self) -> Settings {
        self.inner.settings
    }

    /// The live members as of the last tick, this one included.
    pub fn live(&self) -> Vec<Instance> {
        let mut live = self
            .inner
            .live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !live.iter().any(|i| i.id == self.inner.me.id) {
            live.push(self.inner.me.clone());
        }
        live
    }

    /// The ids of [`Cluster::live`].
    pub fn live_ids(&self) -> Vec<String> {
        self.live().into_iter().map(|i| i.id).collect()
    }

    pub(crate) fn set_live(&self, live: Vec<Instance>) {
        *self.inner.live.write().unwrap_or_else(|p| p.into_inner()) = live;
        self.inner.ticks.send_modify(|n| *n += 1);
    }

    /// Whether this instance stopped because its membership lapsed.
    pub fn fenced(&self) -> bool {
        self.inner.fenced.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn fence(&self) {
        self.inner
            .fenced
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Wakes after every membership tick.
    pub fn ticks(&self) -> watch::Receiver<u64> {
        self.inner.ticks.subscribe()
    }

    /// The instance that should hold `org`'s `node` now.
    pub fn holder_for(&self, org: &OrgGuid, node: &str) -> Instance {
        let live = self.live();
        assign::holder(&live, org.as_str(), node)
            .cloned()
            .unwrap_or_else(|| self.inner.me.clone())
    }

    /// Queues `message` for `target` (an instance id, or everyone). Never waits: the
    /// outbox task writes in order, retrying while the database is away.
    pub fn post(&self, target: &str, job: Option<&str>, message: &BusMessage) {
        self.queue(target, job, message, None);
    }

    /// [`Cluster::post`], then waits (at most `wait`) until the message is committed, so
    /// its target is being woken; whether it was.
    pub async fn post_and_wait(
        &self,
        target: &str,
        job: Option<&str>,
        message: &BusMessage,
        wait: Duration,
    ) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue(target, job, message, Some(tx));
        matches!(tokio::time::timeout(wait, rx).await, Ok(Ok(())))
    }

    fn queue(
        &self,
        target: &str,
        job: Option<&str>,
        message: &BusMessage,
        committed: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        let outgoing = Outgoing {
            target: target.to_owned(),
            job_id: job.map(str::to_owned),
            message: message.clone(),
        };
        let _ = self.inner.outbox.send(Queued {
            outgoing,
            committed,
        });
    }

    /// Queues `message` for every instance.
    pub fn broadcast(&self, job: Option<&str>, message: &BusMessage) {
        self.post(EVERYONE, job, message);
    }

    /// The instance last known to hold the node, if another one.
    pub fn holder(&self, org: &OrgGuid, node: &str) -> Option<String> {
        let holders = self.inner.holders.lock().unwrap_or_else(|p| p.into_inner());
        holders
            .get(&(org.as_str().to_owned(), node.to_owned()))
            .filter(|i| **i != self.inner.me.id)
            .cloned()
    }

    /// Records that `instance` holds the node.
    pub fn note_holder(&self, org: &str, node: &str, instance: &str) {
        let mut holders = self.inner.holders.lock().unwrap_or_else(|p| p.into_inner());
        holders.insert((org.to_owned(), node.to_owned()), instance.to_owned());
    }

    /// The owner of a job whose nodes this instance routes.
    pub fn owner_of(&self, job: &str) -> Option<String> {
        let owners = self.inner.owners.lock().unwrap_or_else(|p| p.into_inner());
        owners.get(job).map(|(owner, _)| owner.clone())
    }

    /// The organization of a job whose nodes this instance routes.
    pub fn org_of(&self, job: &str) -> Option<String> {
        let owners = self.inner.owners.lock().unwrap_or_else(|p| p.into_inner());
        owners.get(job).map(|(_, org)| org.clone())
    }

    /// Records a job's owner and organization (`Some((owner, org))`), or forgets it.
    pub fn note_owner(&self, job: &str, owner: Option<(&str, &str)>) {
        let mut owners = self.inner.owners.lock().unwrap_or_else(|p| p.into_inner());
        match owner {
            Some((o, org)) => owners.insert(job.to_owned(), (o.to_owned(), org.to_owned())),
            None => owners.remove(job),
        };
    }

    /// The connected nodes of `org` over the whole cluster (only `nodes` when given), as
    /// their holders last published them; remembers who holds each.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn presence(
        &self,
        org: &OrgGuid,
        nodes: Option<&[String]>,
    ) -> Result<Vec<Presence>, pushy_store::Error> {
        let found = self
            .inner
            .db
            .presence(org.as_str(), nodes, &self.live_ids())
            .await?;
        for p in &found {
            self.note_holder(org.as_str(), &p.node, &p.instance);
        }
        Ok(found)
    }

    /// Records `instance`'s published node state changes.
    pub fn note_presence(&self, instance: &str, changes: &[Change]) {
        self.inner.mirror.apply(instance, changes);
    }

    /// [`Cluster::presence`] as this instance last heard it, without a query: what
    /// `node_states` answers.
    pub fn known_presence(&self, org: &OrgGuid, nodes: Option<&[String]>) -> Vec<Presence> {
        self.inner
            .mirror
            .presence(org.as_str(), nodes, &self.live_ids())
    }
}
