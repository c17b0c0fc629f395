//! What the registry tells a job about the job's nodes: the vocabulary at the boundary
//! between `nodes/` and `jobs/`. It is defined here, below the jobs, so the registry
//! never needs to know what a job is made of; a job task turns each piece of news into
//! an input of its machine.

/// A node's message about one job, verified and decoded (zmq.md §2.7.2).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reply {
    /// The node committed.
    AckCommit,
    /// The node refused to commit.
    NackCommit,
    /// The node started the command.
    AckRun,
    /// The node refused to run.
    NackRun,
    /// The command exited 0.
    Succeeded {
        /// Captured standard output, if sent.
        stdout: Option<String>,
        /// Captured standard error, if sent.
        stderr: Option<String>,
    },
    /// The command exited non-zero.
    Failed {
        /// Captured standard output, if sent.
        stdout: Option<String>,
        /// Captured standard error, if sent.
        stderr: Option<String>,
    },
    /// The node abandoned the job.
    Aborted,
}

/// What a node returning to this server process says about one of its jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NodeReport {
    /// It holds no job (it was reset, or its Ruby client lost the result): whatever it
    /// had of this job is gone.
    Idle,
    /// It is committed to this job and waits for `run`.
    Committed,
    /// It runs (or has finished) this job's command.
    Running,
    /// It is busy with another job.
    OtherJob,
}

/// One piece of news about one node, for one of its jobs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NodeNews {
    /// The node sent a message carrying the job's id.
    Reply {
        /// The node.
        node: String,
        /// Its message.
        reply: Reply,
    },
    /// The node's machine stopped (offline, or a new incarnation): zmq.md §4.5.
    Down {
        /// The node.
        node: String,
    },
    /// The node's first word to this server process (after a restart, or after it was
    /// offline), to reconcile against the node's status in the job (issue 12 §2).
    Back {
        /// The node.
        node: String,
        /// What it says it is doing.
        report: NodeReport,
    },
    /// The node's next result carries output it had to cut to its tail (ours).
    OutputTruncated {
        /// The node.
        node: String,
    },
    /// Output the node's command wrote since its previous chunk, sent while it runs
    /// (issue 15 §2; our agent only, when the `run` asked for it).
    Output(crate::events::Output),
}
