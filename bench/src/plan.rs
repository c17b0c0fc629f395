//! The shape of a run, decided before any socket exists: node names, which shard thread
//! owns which nodes, how many sockets and descriptors that takes, and where each node
//! connects from. Pure functions.

use std::ops::Range;

/// The name of node number `index`: `prefix` then the decimal index, as `provision`
/// writes them.
pub fn node_name(prefix: &str, index: u64) -> String {
    format!("{prefix}{index}")
}

/// Splits nodes `first .. first + count` into `shards` contiguous ranges whose sizes
/// differ by at most one (the first ranges take the remainder). Empty ranges are
/// dropped, so there are never more shards than nodes.
pub fn shard_ranges(first: u64, count: u64, shards: usize) -> Vec<Range<u64>> {
    let shards = (shards.max(1) as u64).min(count.max(1));
    let (base, extra) = (count / shards, count % shards);
    let mut start = first;
    (0..shards)
        .map(|i| {
            let len = base + u64::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// How the nodes receive server heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubMode {
    /// One SUB per node, as real nodes have (the server's PUB fans out to every node).
    PerNode,
    /// One SUB per shard thread and heartbeat address (one address per server
    /// instance), its heartbeats delivered to the shard's nodes whose config names that
    /// address: half the sockets and descriptors on both sides.
    Shared,
}

/// libzmq sockets the run needs: a DEALER per node, SUBs per `mode`, and headroom.
pub fn sockets_needed(nodes: u64, shards: usize, mode: SubMode) -> u64 {
    let subs = match mode {
        SubMode::PerNode => nodes,
        SubMode::Shared => shards as u64,
    };
    nodes + subs + 64
}

/// File descriptors the run needs, roughly: every libzmq socket holds a mailbox
/// (an eventfd) and, once connected, a TCP connection; plus the process's own.
pub fn descriptors_needed(sockets: u64, fetch_concurrency: usize) -> u64 {
    sockets * 2 + fetch_concurrency as u64 + 256
}

/// The endpoint a node connects to: the config's address, or with a source address
/// `tcp://SOURCE:0;HOST:PORT` (libzmq's source-address syntax, zmq_tcp(7)). Spreading
/// nodes over several loopback sources lifts the ~28 000 connections one source
/// address can open to one server port (the ephemeral port range).
pub fn endpoint(addr: &str, sources: &[String], index: u64) -> String {
    if sources.is_empty() {
        return addr.to_owned();
    }
    let source = &sources[(index % sources.len() as u64) as usize];
    match addr.strip_prefix("tcp://") {
        Some(rest) => format!("tcp://{source}:0;{rest}"),
        None => addr.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_node_once_and_balance() {
        let r = shard_ranges(0, 10, 3);
        assert_eq!(r, vec![0..4, 4..7, 7..10]);
        let r = shard_ranges(5000, 5000, 2);
        assert_eq!(r, vec![5000..7500, 7500..10_000]);
        for (count, shards) in [(1, 4), (7, 7), (50_000, 3), (20, 2)] {
            let r = shard_ranges(0, count, shards);
            assert_eq!(r.iter().map(|r| r.end - r.start).sum::<u64>(), count);
            assert!(r.windows(2).all(|w| w[0].end == w[1].start));
            let sizes: Vec<u64> = r.iter().map(|r| r.end - r.start).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn never_more_shards_than_nodes() {
        assert_eq!(shard_ranges(0, 1, 4), vec![0..1]);
        assert_eq!(shard_ranges(0, 3, 0), vec![0..3]);
        assert!(shard_ranges(0, 0, 2).is_empty());
    }

    #[test]
    fn names_match_provisioning() {
        assert_eq!(node_name("node", 0), "node0");
        assert_eq!(node_name("web-", 1234), "web-1234");
    }

    #[test]
    fn socket_and_descriptor_budget() {
        assert_eq!(sockets_needed(1000, 2, SubMode::PerNode), 2064);
        assert_eq!(sockets_needed(1000, 2, SubMode::Shared), 1066);
        assert_eq!(descriptors_needed(1066, 64), 2132 + 64 + 256);
    }

    #[test]
    fn source_addresses_rotate() {
        let sources = vec!["127.0.0.2".to_owned(), "127.0.0.3".to_owned()];
        assert_eq!(
            endpoint("tcp://127.0.0.1:10002", &[], 5),
            "tcp://127.0.0.1:10002"
        );
        assert_eq!(
            endpoint("tcp://127.0.0.1:10002", &sources, 4),
            "tcp://127.0.0.2:0;127.0.0.1:10002"
        );
        assert_eq!(
            endpoint("tcp://127.0.0.1:10002", &sources, 5),
            "tcp://127.0.0.3:0;127.0.0.1:10002"
        );
    }
}
