//! What the agent's machine asks its driver to send: the kind of a message and what it
//! says, before identity, sequence and timestamp make it a wire message.

use pushy_protocol::message::ClientMessageType;

use crate::runner::live::LiveChunk;

/// A message for the driver to build ([`Node::message`](super::machine::Node::message)), sign and send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Its type.
    pub kind: ClientMessageType,
    /// The job it concerns (`null` on the wire when `None`).
    pub job_id: Option<String>,
    /// Heartbeats only: `idle`, `committed` or `running`.
    pub job_state: Option<&'static str>,
    /// Captured stdout, stderr and whether either was cut, for results with capture.
    pub output: Option<(String, String, bool)>,
    /// `output` messages only (issue 15 §2): the new text and what was dropped.
    pub live: Option<LiveChunk>,
}

impl Outgoing {
    pub(crate) fn reply(kind: ClientMessageType, job_id: Option<String>) -> Outgoing {
        Outgoing {
            kind,
            job_id,
            job_state: None,
            output: None,
            live: None,
        }
    }
}
