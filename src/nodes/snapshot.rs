//! The node states HTTP and metrics read (http.md §1.4.6–1.4.7), as the registry
//! publishes them. Until a node has heartbeated it is simply absent: offline and
//! unavailable.

use std::collections::{HashMap, HashSet};
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
    inner: Arc<Mutex<Inner>>,
}

type Key = (OrgGuid, String);

#[derive(Debug, Default)]
struct Inner {
    nodes: HashMap<Key, Availability>,
    /// Nodes changed since the last [`NodeSnapshot::take_changes`], when tracked.
    changed: Option<HashSet<Key>>,
}

impl Inner {
    fn touch(&mut self, key: &Key) {
        if let Some(changed) = &mut self.changed {
            changed.insert(key.clone());
        }
    }
}

impl NodeSnapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        NodeSnapshot::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves a plain map behind, still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn map(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.lock()
    }

    /// Records a node as connected with this availability (by the registry).
    pub fn set(&self, org: &OrgGuid, node: &str, availability: Availability) {
        let key = (org.clone(), node.to_owned());
        let mut inner = self.lock();
        inner.touch(&key);
        inner.nodes.insert(key, availability);
    }

    /// Forgets a node: it went offline.
    pub fn remove(&self, org: &OrgGuid, node: &str) {
        let key = (org.clone(), node.to_owned());
        let mut inner = self.lock();
        inner.touch(&key);
        inner.nodes.remove(&key);
    }

    /// Starts keeping the set of nodes changed, for [`NodeSnapshot::take_changes`];
    /// every node known so far counts as changed.
    pub fn track_changes(&self) {
        let mut inner = self.lock();
        let all = inner.nodes.keys().cloned().collect();
        inner.changed = Some(all);
    }

    /// Each node changed since the last call (once tracking started) with its state
    /// now: its availability, `None` when offline. Several changes of one node between
    /// two calls come out as its last state.
    pub fn take_changes(&self) -> Vec<(OrgGuid, String, Option<Availability>)> {
        let mut inner = self.lock();
        let Some(changed) = inner.changed.as_mut() else {
            return Vec::new();
        };
        let keys = std::mem::take(changed);
        keys.into_iter()
            .map(|key| {
                let now = inner.nodes.get(&key).copied();
                (key.0, key.1, now)
            })
            .collect()
    }

    /// Whether the node is connected to this process.
    pub fn is_connected(&self, org: &OrgGuid, node: &str) -> bool {
        self.lock()
            .nodes
            .contains_key(&(org.clone(), node.to_owned()))
    }

    /// A node's presence and availability, computed from the live state (http.md §8.5
    /// item 39, fixed: the list and the named endpoint agree).
    pub fn state(&self, org: &OrgGuid, node: &str) -> (Presence, Availability) {
        match self.map().nodes.get(&(org.clone(), node.to_owned())) {
            None => (Presence::Offline, Availability::Unavailable),
            Some(a) => (Presence::Online, *a),
        }
    }

    /// Every connected node of an organization, sorted by name.
    pub fn list(&self, org: &OrgGuid) -> Vec<(String, Availability)> {
        let mut out: Vec<_> = self
            .map()
            .nodes
            .iter()
            .filter(|((o, _), _)| o == org)
            .map(|((_, n), a)| (n.clone(), *a))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Nodes connected (online), and of those the available ones.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.map();
        let map = &inner.nodes;
        let available = map
            .values()
            .filter(|a| **a == Availability::Available)
            .count();
        (map.len(), available)
    }
}
