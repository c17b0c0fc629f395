//! Every instance's copy of the whole cluster's node states, kept in memory so that
//! `node_states` GETs never query PostgreSQL: loaded from `pushy_presence` when the
//! instance joins, then kept current by the holders' presence broadcasts on the bus.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use pushy_store::cluster::Presence;

/// One change as the presence task publishes it: the node's organization GUID, its name,
/// and whether it is available (`None`: it left the publishing instance).
pub type Change = (String, String, Option<bool>);

/// Who holds each node and whether it is available, by organization and name.
#[derive(Default)]
pub struct Mirror {
    orgs: RwLock<HashMap<String, BTreeMap<String, Held>>>,
}

#[derive(Clone)]
struct Held {
    instance: String,
    available: bool,
}

impl Mirror {
    /// Applies `instance`'s changes. A departure only clears the node if `instance` still
    /// holds it here: the node's new holder may have been heard first.
    pub fn apply(&self, instance: &str, changes: &[Change]) {
        let mut orgs = self.orgs.write().unwrap_or_else(|p| p.into_inner());
        for (org, node, available) in changes {
            let nodes = orgs.entry(org.clone()).or_default();
            match available {
                Some(available) => {
                    nodes.insert(
                        node.clone(),
                        Held {
                            instance: instance.to_owned(),
                            available: *available,
                        },
                    );
                }
                None => {
                    if nodes.get(node).is_some_and(|h| h.instance == instance) {
                        nodes.remove(node);
                    }
                }
            }
        }
    }

    /// The connected nodes of `org` held by one of `live`, by name; only `nodes` when
    /// given (as `ClusterDb::presence` answers).
    pub fn presence(&self, org: &str, nodes: Option<&[String]>, live: &[String]) -> Vec<Presence> {
        let orgs = self.orgs.read().unwrap_or_else(|p| p.into_inner());
        let Some(held) = orgs.get(org) else {
            return Vec::new();
        };
        let found = |(node, h): (&String, &Held)| {
            live.contains(&h.instance).then(|| Presence {
                node: node.clone(),
                instance: h.instance.clone(),
                available: h.available,
            })
        };
        match nodes {
            Some(nodes) => nodes
                .iter()
                .filter_map(|n| held.get_key_value(n))
                .filter_map(found)
                .collect(),
            None => held.iter().filter_map(found).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(node: &str, available: Option<bool>) -> Change {
        ("org".into(), node.into(), available)
    }

    fn names(p: &[Presence]) -> Vec<(&str, &str, bool)> {
        p.iter()
            .map(|p| (p.node.as_str(), p.instance.as_str(), p.available))
            .collect()
    }

    #[test]
    fn a_node_that_moved_stays_with_its_new_holder_whichever_is_heard_first() {
        let live = ["a".to_owned(), "b".to_owned()];
        let m = Mirror::default();
        m.apply("a", &[change("n1", Some(true)), change("n2", Some(true))]);
        // n1 moves to b and b is heard before a's departure; n2 the other way round.
        m.apply("b", &[change("n1", Some(false))]);
        m.apply("a", &[change("n1", None), change("n2", None)]);
        m.apply("b", &[change("n2", Some(true))]);
        assert_eq!(
            names(&m.presence("org", None, &live)),
            [("n1", "b", false), ("n2", "b", true)]
        );
    }

    #[test]
    fn nodes_of_instances_no_longer_live_are_not_answered() {
        let m = Mirror::default();
        m.apply("a", &[change("n1", Some(true))]);
        m.apply("dead", &[change("n2", Some(true))]);
        let live = ["a".to_owned()];
        assert_eq!(names(&m.presence("org", None, &live)), [("n1", "a", true)]);
        let asked = ["n2".to_owned(), "n1".to_owned(), "n3".to_owned()];
        assert_eq!(
            names(&m.presence("org", Some(&asked), &live)),
            [("n1", "a", true)]
        );
        assert!(m.presence("other", None, &live).is_empty());
    }
}
