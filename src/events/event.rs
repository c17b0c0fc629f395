//! The events a job emits (http.md §3.3, zmq.md §5.7): the job machine produces them,
//! the event feeds number, timestamp and serve them.

use serde_json::{Map, Value};

/// `quorum_vote.status` values (verbatim, including the original's misspelling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteStatus {
    /// The node committed.
    Success,
    /// The node refused.
    Failure,
    /// A second commit from a ready node.
    UnexpectedCommit,
    /// A ready node refused after committing (`lost_availibility`, sic).
    LostAvailability,
    /// The node was already terminal.
    ClientDiedWhileVoting,
    /// The node went offline (or was not available at job start).
    Down,
    /// No answer before the voting timeout.
    VotingTimeout,
}

impl VoteStatus {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            VoteStatus::Success => "success",
            VoteStatus::Failure => "failure",
            VoteStatus::UnexpectedCommit => "unexpected_commit",
            VoteStatus::LostAvailability => "lost_availibility",
            VoteStatus::ClientDiedWhileVoting => "client_died_while_voting",
            VoteStatus::Down => "down",
            VoteStatus::VotingTimeout => "voting_timeout",
        }
    }
}

/// `run_complete.status` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    /// Exit code 0.
    Success,
    /// Non-zero exit.
    Failure,
    /// Went down, misbehaved, or reported a result before acknowledging the run.
    Crashed,
    /// Refused the run.
    RunNacked,
    /// Refused after acknowledging.
    RunNackedWhileRunning,
    /// Already terminal.
    ClientDiedWhileRunning,
}

impl RunStatus {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::Failure => "failure",
            RunStatus::Crashed => "crashed",
            RunStatus::RunNacked => "run_nacked",
            RunStatus::RunNackedWhileRunning => "run_nacked_while_running",
            RunStatus::ClientDiedWhileRunning => "client_died_while_running",
        }
    }
}

/// The data of a `start` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartInfo {
    /// The command.
    pub command: String,
    /// Seconds.
    pub run_timeout: u32,
    /// Minimum committed nodes.
    pub quorum: u32,
    /// Number of nodes.
    pub node_count: usize,
    /// The requestor's name.
    pub user: String,
    /// The job's `user` option (`job_user` in events).
    pub job_user: Option<String>,
    /// Working directory.
    pub dir: Option<String>,
    /// Environment as its compact JSON text.
    pub env: Option<String>,
    /// Whether a file was given (its content never appears).
    pub file_specified: bool,
    /// Capture requested.
    pub capture: bool,
}

/// One job event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobEvent {
    /// The job was created.
    Start(StartInfo),
    /// A node's answer to the commit (or its absence).
    QuorumVote {
        /// The node.
        node: String,
        /// Its vote.
        status: VoteStatus,
    },
    /// Enough nodes committed; run messages sent.
    QuorumSucceeded,
    /// Rate control: a committed node waits for a slot before it is sent `run` (ours;
    /// only in jobs that set `max_concurrency`).
    RunWaiting {
        /// The node.
        node: String,
    },
    /// A node acknowledged the run.
    RunStart {
        /// The node.
        node: String,
    },
    /// A node finished (or failed while running).
    RunComplete {
        /// The node.
        node: String,
        /// How.
        status: RunStatus,
    },
    /// The job sent a node to rehab because of something the node did.
    Rehab {
        /// The node.
        node: String,
    },
    /// The job finished; its last event.
    JobComplete {
        /// `complete`, `quorum_failed`, `timed_out` or `aborted`.
        status: pushy_protocol::job::JobStatus,
    },
}

impl JobEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            JobEvent::Start(_) => "start",
            JobEvent::QuorumVote { .. } => "quorum_vote",
            JobEvent::QuorumSucceeded => "quorum_succeeded",
            JobEvent::RunWaiting { .. } => "run_waiting",
            JobEvent::RunStart { .. } => "run_start",
            JobEvent::RunComplete { .. } => "run_complete",
            JobEvent::Rehab { .. } => "rehab",
            JobEvent::JobComplete { .. } => "job_complete",
        }
    }

    /// The data fields after `timestamp`, in the original's order.
    pub fn fields(&self) -> Map<String, Value> {
        let mut m = Map::new();
        match self {
            JobEvent::Start(s) => {
                m.insert("command".into(), s.command.clone().into());
                m.insert("run_timeout".into(), s.run_timeout.into());
                m.insert("quorum".into(), s.quorum.into());
                m.insert("node_count".into(), s.node_count.into());
                m.insert("user".into(), s.user.clone().into());
                if let Some(u) = &s.job_user {
                    m.insert("job_user".into(), u.clone().into());
                }
                if let Some(d) = &s.dir {
                    m.insert("dir".into(), d.clone().into());
                }
                if let Some(env) = s
                    .env
                    .as_deref()
                    .and_then(|e| serde_json::from_str::<Value>(e).ok())
                {
                    m.insert("env".into(), env);
                }
                if s.file_specified {
                    m.insert("file_specified".into(), true.into());
                }
                m.insert("capture".into(), s.capture.into());
            }
            JobEvent::QuorumVote { node, status } => {
                m.insert("node".into(), node.clone().into());
                m.insert("status".into(), status.as_str().into());
            }
            JobEvent::QuorumSucceeded => {}
            JobEvent::RunStart { node }
            | JobEvent::RunWaiting { node }
            | JobEvent::Rehab { node } => {
                m.insert("node".into(), node.clone().into());
            }
            JobEvent::RunComplete { node, status } => {
                m.insert("node".into(), node.clone().into());
                m.insert("status".into(), status.as_str().into());
            }
            JobEvent::JobComplete { status } => {
                m.insert("status".into(), status.wire_name().into());
            }
        }
        m
    }
}

/// A chunk of a running node's output (issue 15 §2), relayed live: not a logged event.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Output {
    /// The node.
    pub node: String,
    /// New standard output, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// New standard error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// Bytes the node could not send since its previous chunk (rate and size bounds).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
