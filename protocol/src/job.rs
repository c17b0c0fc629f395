//! Job and node vocabulary shared by the server, the node agent and the CLI: ids, statuses
//! with their wire names and database codes (http.md §5.3, zmq.md §5.2).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A job id: 32 lowercase hex characters (http.md §1.4.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// Accepts only the wire form, `^[0-9a-f]{32}$`; anything else names no job.
    pub fn parse(s: &str) -> Option<JobId> {
        let ok = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| JobId(s.to_owned()))
    }

    /// The id as it appears on the wire and in the database.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An organization's GUID as Chef Server reports it (32 hex characters); the `org_id`
/// column of every table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrgGuid(pub String);

impl OrgGuid {
    /// The GUID text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $code:literal => $wire:literal, terminal: $term:literal;)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[repr(i16)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $wire)] $variant = $code,)*
        }

        impl $name {
            /// Every status, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The integer stored in the database.
            pub fn code(self) -> i16 {
                self as i16
            }

            /// The status stored under `code`, if any.
            pub fn from_code(code: i16) -> Option<Self> {
                match code {
                    $($code => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// The name used in JSON bodies, events and the `job_status` table.
            pub fn wire_name(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)*
                }
            }

            /// The status whose wire name is `name`, if any.
            pub fn from_wire_name(name: &str) -> Option<Self> {
                match name {
                    $($wire => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// Whether nothing further happens to a job or node in this status.
            pub fn is_terminal(self) -> bool {
                match self {
                    $($name::$variant => $term,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.wire_name())
            }
        }
    };
}

status_enum! {
    /// A job's status (http.md §5.3, table `job_status`).
    JobStatus {
        /// Waiting for nodes to commit.
        Voting = 0 => "voting", terminal: false;
        /// Quorum reached, command running.
        Running = 1 => "running", terminal: false;
        /// Every node reached a terminal state.
        Complete = 2 => "complete", terminal: true;
        /// Too few nodes committed; the command was not run.
        QuorumFailed = 3 => "quorum_failed", terminal: true;
        /// Stopped on request (our abort route).
        Aborted = 4 => "aborted", terminal: true;
        /// Row just inserted.
        New = 5 => "new", terminal: false;
        /// `run_timeout` elapsed before every node finished.
        TimedOut = 6 => "timed_out", terminal: true;
        /// The job's driver died, or the server stopped while the job was unfinished.
        Crashed = 7 => "crashed", terminal: true;
        /// Rate control's error limit was passed: nodes not yet started were skipped
        /// (ours; only jobs that set `max_errors`).
        Stopped = 8 => "stopped", terminal: true;
    }
}

status_enum! {
    /// A node's status within one job (http.md §5.3, `job_nodes.status`).
    NodeStatus {
        /// Has not answered the commit request.
        New = 0 => "new", terminal: false;
        /// Committed, waiting to run.
        Ready = 1 => "ready", terminal: false;
        /// Acknowledged the run.
        Running = 2 => "running", terminal: false;
        /// Exit code 0.
        Succeeded = 3 => "succeeded", terminal: true;
        /// Non-zero exit code.
        Failed = 4 => "failed", terminal: true;
        /// Stopped on request.
        Aborted = 5 => "aborted", terminal: true;
        /// Offline before running, or no vote before the voting timeout.
        Unavailable = 6 => "unavailable", terminal: true;
        /// Refused to commit.
        Nacked = 7 => "nacked", terminal: true;
        /// Legacy code, never set.
        Faulty = 8 => "faulty", terminal: true;
        /// Had committed, but the quorum failed.
        WasReady = 9 => "was_ready", terminal: true;
        /// Went down or misbehaved after committing.
        Crashed = 10 => "crashed", terminal: true;
        /// Still ready or running when `run_timeout` elapsed.
        TimedOut = 11 => "timed_out", terminal: true;
        /// Committed, waiting for a slot under rate control (ours; only jobs that set
        /// `max_concurrency`).
        Waiting = 12 => "waiting", terminal: false;
        /// Never started: rate control's error limit was passed first, or a `run_on_any`
        /// job had its nodes already (ours).
        Skipped = 13 => "skipped", terminal: true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::from_code(s.code()), Some(*s));
            assert_eq!(JobStatus::from_wire_name(s.wire_name()), Some(*s));
        }
        for s in NodeStatus::ALL {
            assert_eq!(NodeStatus::from_code(s.code()), Some(*s));
        }
        assert_eq!(JobStatus::QuorumFailed.code(), 3);
        assert_eq!(NodeStatus::TimedOut.code(), 11);
        assert_eq!(
            serde_json::to_string(&NodeStatus::WasReady).unwrap(),
            "\"was_ready\""
        );
    }

    #[test]
    fn job_id_accepts_only_lowercase_hex_32() {
        assert!(JobId::parse("aaaaaaaaaaaa25fd67fa8715fd547d3d").is_some());
        assert!(JobId::parse("AAAAAAAAAAAA25FD67FA8715FD547D3D").is_none());
        assert!(JobId::parse("not_a_number").is_none());
        assert!(JobId::parse("name-does-not-exist").is_none());
    }
}
