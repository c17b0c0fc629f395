//! What instances tell each other over the bus (`pushy_bus` rows, JSON).

use pushy_protocol::message::ServerMessage;
use serde::{Deserialize, Serialize};

use crate::events::Recorded;
use crate::nodes::news::NodeNews;

/// One bus message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum BusMessage {
    /// A job's owner routes its nodes' news to itself (to every instance; again, from a
    /// new owner, after a takeover).
    Watch {
        /// The owner.
        from: String,
        /// The job.
        job: String,
        /// Its organization's GUID.
        org: String,
        /// Its nodes.
        nodes: Vec<String>,
    },
    /// The job is over: its nodes' news is no longer routed.
    Unwatch {
        /// The owner.
        from: String,
        /// The job.
        job: String,
    },
    /// A message for nodes held by the target instance (the same message for each: the
    /// outbox joins a job's commands into one row).
    ToNode {
        /// The organization's GUID.
        org: String,
        /// The nodes.
        nodes: Vec<String>,
        /// The message.
        message: ServerMessage,
    },
    /// Reset a node held by the target instance after its job.
    Rehab {
        /// The organization's GUID.
        org: String,
        /// The node.
        node: String,
    },
    /// News of a node held by `from` for the job the target instance owns.
    News {
        /// The instance holding the node.
        from: String,
        /// The job.
        job: String,
        /// The organization's GUID.
        org: String,
        /// The news.
        news: NodeNews,
    },
    /// A node fetched its config from another instance and was sent to the target: admit
    /// its Curve key, and learn its organization's name.
    Admit {
        /// The organization's name, as the node's messages give it.
        org_name: String,
        /// The organization's GUID.
        org: String,
        /// The node.
        node: String,
        /// Its Curve public key, Z85 (absent without Curve).
        ccpk: Option<String>,
        /// How long the key stays admitted, seconds.
        ttl: u64,
    },
    /// A user asked another instance to abort the job the target owns.
    Abort {
        /// The job.
        job: String,
    },
    /// Changes to the node states `from` holds (to every instance's [`Mirror`]).
    ///
    /// [`Mirror`]: super::mirror::Mirror
    Presence {
        /// The holder.
        from: String,
        /// `(organization GUID, node, available)`; `None`: the node left `from`.
        changes: Vec<super::mirror::Change>,
    },
    /// A running node's output, for every instance's feeds of the job (issue 15 §2).
    Output {
        /// The organization's GUID.
        org: String,
        /// The job.
        job: String,
        /// The chunk.
        output: crate::events::Output,
        /// When the job's owner relayed it, microseconds since the epoch.
        at: i64,
    },
    /// Job events, for every instance's feeds, in order (the outbox joins a job's
    /// consecutive events into one row).
    Events {
        /// The organization's GUID.
        org: String,
        /// The job.
        job: String,
        /// The events.
        events: Vec<Timed>,
    },
}

/// An event with the time its job's owner created it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timed {
    /// The event.
    pub event: Recorded,
    /// Microseconds since the epoch.
    pub at: i64,
}

/// How many events one bus row may carry: the org copy of the row's `i`-th event is
/// numbered `id * ORG_NUMBERS + i`, so numbers stay unique and in bus order.
pub const ORG_NUMBERS: u64 = 10_000;
