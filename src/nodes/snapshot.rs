//! The node states HTTP and metrics read (http.md §1.4.6–1.4.7), as the registry
//! publishes them. Until a node has heartbeated it is simply absent: offline and
//! unavailable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pushy_protocol::job::OrgGuid;
use serde::Serialize;

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

/// The node states the registry publishes for HTTP and metrics to read: every connected
/// node and whether it is available. Cheap to clone; the map is only touched in short
/// sections without `.await`.
#[derive(Clone, Debug, Default)]
pub struct NodeSnapshot {
    nodes: Arc<Mutex<HashMap<(OrgGuid, String), Availability>>>,
}

impl NodeSnapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        NodeSnapshot::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(OrgGuid, String), Availability>> {
        // A panic while holding this lock leaves a plain map behind, still consistent.
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a node as connected with this availability (by the registry).
    pub fn set(&self, org: &OrgGuid, node: &str, availability: Availability) {
        self.map()
            .insert((org.clone(), node.to_owned()), availability);
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
            Some(a) => (Presence::Online, *a),
        }
    }

    /// Every connected node of an organization, sorted by name.
    pub fn list(&self, org: &OrgGuid) -> Vec<(String, Availability)> {
        let mut out: Vec<_> = self
            .map()
            .iter()
            .filter(|((o, _), _)| o == org)
            .map(|((_, n), a)| (n.clone(), *a))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Nodes connected (online), and of those the available ones.
    pub fn counts(&self) -> (usize, usize) {
        let map = self.map();
        let available = map
            .values()
            .filter(|a| **a == Availability::Available)
            .count();
        (map.len(), available)
    }
}
