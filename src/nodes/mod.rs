//! What the server knows about each node's connection (zmq.md §4, http.md §1.4.6–1.4.7).
//!
//! The command channel (the ZeroMQ side) reports heartbeats here; HTTP and jobs read
//! snapshots. Until a node has heartbeated it is simply absent: offline and unavailable.

pub mod liveness;
pub mod machine;
pub mod registry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pushy_protocol::job::OrgGuid;
use serde::Serialize;

/// A node's liveness as the server tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Heartbeating and idle: may take a job.
    Available,
    /// Heartbeating but busy, just connected, or being reset after a job.
    Busy,
}

/// `available` / `unavailable` in the node-state bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// Online and idle.
    Available,
    /// Offline, busy, or resetting.
    Unavailable,
}

/// `online` / `offline` in the node-state body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// Tracked as connected.
    Online,
    /// Not tracked.
    Offline,
}

/// The registry of tracked nodes. Cheap to clone; the map is only touched in short
/// sections without `.await`.
#[derive(Clone, Debug, Default)]
pub struct NodesHandle {
    nodes: Arc<Mutex<HashMap<(OrgGuid, String), Liveness>>>,
}

impl NodesHandle {
    /// An empty registry.
    pub fn new() -> Self {
        NodesHandle::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(OrgGuid, String), Liveness>> {
        // A panic while holding this lock leaves a plain map behind, still consistent.
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a node as connected with this liveness (called by the command channel).
    pub fn set(&self, org: &OrgGuid, node: &str, liveness: Liveness) {
        self.map().insert((org.clone(), node.to_owned()), liveness);
    }

    /// Forgets a node: it went offline.
    pub fn remove(&self, org: &OrgGuid, node: &str) {
        self.map().remove(&(org.clone(), node.to_owned()));
    }

    /// A node's presence and availability, computed from the live state (http.md §8.5
    /// item 39, fixed: the list and the named endpoint agree).
    pub fn state(&self, org: &OrgGuid, node: &str) -> (Presence, Availability) {
        match self.map().get(&(org.clone(), node.to_owned())) {
            None => (Presence::Offline, Availability::Unavailable),
            Some(l) => (Presence::Online, availability(*l)),
        }
    }

    /// Every tracked node of an organization, sorted by name.
    pub fn list(&self, org: &OrgGuid) -> Vec<(String, Availability)> {
        let mut out: Vec<_> = self
            .map()
            .iter()
            .filter(|((o, _), _)| o == org)
            .map(|((_, n), l)| (n.clone(), availability(*l)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// How many nodes are tracked, all organizations (`node_fsm_count`).
    pub fn count(&self) -> usize {
        self.map().len()
    }

    /// Nodes tracked (online), and of those the available ones.
    pub fn counts(&self) -> (usize, usize) {
        let map = self.map();
        let available = map.values().filter(|l| **l == Liveness::Available).count();
        (map.len(), available)
    }
}

fn availability(l: Liveness) -> Availability {
    match l {
        Liveness::Available => Availability::Available,
        Liveness::Busy => Availability::Unavailable,
    }
}
