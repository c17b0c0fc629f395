//! Which live instance should hold a node: rendezvous (highest random weight) hashing of
//! the node over the instances' ZeroMQ addresses. Every instance computes the same
//! answer from the same member list; when an instance joins or dies only the nodes it
//! wins or held move, and an instance restarted on the same address wins the same nodes.

use openssl::sha::Sha256;
use pushy_store::cluster::Instance;

/// The instance of `live` that should hold `org`'s `node`; `None` when `live` is empty.
pub fn holder<'a>(live: &'a [Instance], org: &str, node: &str) -> Option<&'a Instance> {
    live.iter().max_by_key(|i| (weight(i, org, node), &i.id))
}

fn weight(instance: &Instance, org: &str, node: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(instance.zmq_host.as_bytes());
    h.update(&instance.command_port.to_be_bytes());
    h.update(&[0]);
    h.update(org.as_bytes());
    h.update(&[0]);
    h.update(node.as_bytes());
    let digest = h.finish();
    u64::from_be_bytes(digest[..8].try_into().expect("8 of 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(port: u16) -> Instance {
        Instance {
            id: format!("i{port}"),
            zmq_host: "10.0.0.1".into(),
            heartbeat_port: port - 1,
            command_port: port,
            curve_public_key: String::new(),
            incarnation: String::new(),
            api_address: String::new(),
        }
    }

    #[test]
    fn nodes_spread_over_instances_and_only_a_dead_ones_move() {
        let three: Vec<Instance> = [10002, 11002, 12002].map(instance).to_vec();
        let nodes: Vec<String> = (0..3000).map(|i| format!("node{i}")).collect();
        let before: Vec<&str> = nodes
            .iter()
            .map(|n| holder(&three, "org", n).unwrap().id.as_str())
            .collect();
        for i in &three {
            let share = before.iter().filter(|h| **h == i.id).count();
            assert!((800..1200).contains(&share), "{} holds {share}", i.id);
        }
        let two = &three[..2];
        for (n, was) in nodes.iter().zip(&before) {
            let now = holder(two, "org", n).unwrap().id.as_str();
            if *was != "i12002" {
                assert_eq!(now, *was, "{n} moved although its instance lives");
            }
        }
        assert!(holder(&[], "org", "n").is_none());
    }
}
