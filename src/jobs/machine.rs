//! One job's state machine (zmq.md §5.3 lifecycle, §5.4 per-node transitions, §5.7
//! events), plus our abort (DESIGN.md: "Abort exists").
//!
//! Pure: no I/O, no clock, no async. The job driver (one task per job) owns a [`Job`],
//! feeds it [`Input`]s with `now`, and applies the returned [`Effect`]s in order. Timers
//! are data: each phase carries its own deadline ([`Job::next_deadline`]), so leaving a
//! phase clears its timer and "a timer fired in a later state" cannot happen.
//!
//! The `start` event is not emitted here: the driver emits it (it knows the requestor)
//! before calling [`Job::start`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pushy_protocol::job::{JobId, JobStatus, NodeStatus};

use super::controls::Limits;
use crate::events::{JobEvent, RunStatus, VoteStatus};

pub use crate::nodes::news::{NodeReport, Reply};

/// What the driver feeds the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A node's message carrying this job's id.
    Reply {
        /// The node.
        node: String,
        /// Its message.
        reply: Reply,
    },
    /// The node's machine stopped (offline, or a new incarnation): zmq.md §4.5.
    NodeDown {
        /// The node.
        node: String,
    },
    /// A user asked to stop the job (ours; zmq.md §5.6 says the original has none).
    Abort,
    /// The node's first word to this server process (after a restart, or after it was
    /// offline), reconciled against the node's status in this job (ours: issue 12 §2).
    NodeBack {
        /// The node.
        node: String,
        /// What it says it is doing.
        report: NodeReport,
    },
    /// A chunk of a node's output while it runs (ours: issue 15 §2).
    Output(crate::events::Output),
}

/// A message the job sends a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `commit`: will you run this job?
    Commit,
    /// `run`: run it now.
    Run,
}

/// What the driver must do, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// UPDATE the job's status.
    PersistJob(JobStatus),
    /// UPDATE one `job_nodes` row.
    PersistNode {
        /// The node.
        node: String,
        /// Its new status.
        status: NodeStatus,
    },
    /// INSERT a `job_output` row. Only produced when both streams were sent: the
    /// original's columns are NOT NULL, so one stream alone stores nothing (zmq.md §5.4).
    StoreOutput {
        /// The node.
        node: String,
        /// Its standard output.
        stdout: String,
        /// Its standard error.
        stderr: String,
    },
    /// Send a message to the node.
    Send {
        /// The node.
        node: String,
        /// The message.
        command: Command,
    },
    /// Reset the node (node registry `do_rehab`, zmq.md §4.2).
    Rehab {
        /// The node.
        node: String,
    },
    /// Append an event to the job's feed.
    Emit(JobEvent),
    /// Relay a running node's output to the job's feed, unlogged (issue 15 §2).
    RelayOutput(crate::events::Output),
    /// The job is over: linger `wait_complete_time`, then exit (zmq.md §5.3 step 6).
    Finished(JobStatus),
}

/// Where the job is in its lifecycle (zmq.md §5.3), with that phase's timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Created, [`Job::start`] not called yet.
    New,
    /// Waiting for votes until `deadline` (the voting timer).
    Voting {
        /// When the voting timer fires.
        deadline: Instant,
    },
    /// Running until `deadline` (the run timer).
    Running {
        /// When the run timer fires.
        deadline: Instant,
    },
    /// Finished with this status; every further input is ignored.
    Done(JobStatus),
}

/// A node message reduced to what the transition tables look at; output is handled
/// before the row (zmq.md §5.4 "store output; …").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Msg {
    AckCommit,
    NackCommit,
    AckRun,
    NackRun,
    Succeeded,
    Failed,
    Aborted,
    Down,
}

/// The columns of zmq.md §5.4's table "In voting".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VotingColumn {
    New,
    Ready,
    Terminal,
}

/// The columns of zmq.md §5.4's table "In running".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunningColumn {
    Ready,
    Running,
    Terminal,
}

/// Far enough to never fire, used only if `now + timeout` does not fit in an `Instant`.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn deadline_after(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout).unwrap_or(now + CENTURY)
}

/// One job: its nodes in request order and their statuses, its phase and timers.
#[derive(Clone, Debug)]
pub struct Job {
    id: JobId,
    quorum: u32,
    run_timeout: Duration,
    voting_timeout: Duration,
    nodes: Vec<(String, NodeStatus)>,
    /// Node name → position in `nodes` (first occurrence).
    index: HashMap<String, usize>,
    /// How many nodes are in each status, indexed by `NodeStatus::code()`, so the
    /// "finished?" checks after every row do not scan all nodes.
    counts: [usize; SLOTS],
    phase: Phase,
    /// Rate control and any N (issue 15); all `None` for an original job.
    limits: Limits,
    /// Any N: which nodes were asked to commit (the others wait their turn as `new`).
    asked: Vec<bool>,
    /// Rate control's error limit was passed and nodes were skipped: ends `stopped`.
    stopped: bool,
}

impl Job {
    /// A job not started yet; every node `new`. `run_timeout` and `voting_timeout` arm the
    /// run and voting timers when those phases begin.
    pub fn new(
        id: JobId,
        nodes: Vec<String>,
        quorum: u32,
        run_timeout: Duration,
        voting_timeout: Duration,
    ) -> Job {
        let nodes = nodes.into_iter().map(|n| (n, NodeStatus::New)).collect();
        Job::build(id, nodes, quorum, run_timeout, voting_timeout, Phase::New)
    }

    /// The job under operators' controls (issue 15): at most `window` nodes running at
    /// once, the rest `waiting`; past `errors_allowed` failures the waiting are
    /// `skipped`; with `wanted`, only that many nodes are asked at a time and the job runs
    /// on the first `wanted` that commit (`quorum` should then be `wanted`).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Job {
        self.limits = limits;
        self.stopped = self.over_error_limit() && self.count(NodeStatus::Skipped) > 0;
        self
    }

    /// Rehydrates a job after a server restart from its stored statuses. A `voting` job
    /// gets a fresh voting window from `now` (its nodes need it to come back); a `running`
    /// job keeps its run timer, which counts from the persisted run start, `running_for`
    /// ago, so restarts never extend it (and a job already past it times out at once);
    /// `new` jobs still need [`Job::start`]; terminal ones are [`Phase::Done`].
    ///
    /// The effects finish what the previous process may have left between persisting a
    /// node's status and the job's: a `voting` job with no `new` node decides its quorum,
    /// a `running` job with no `ready`/`running` node completes (zmq.md §5.3 steps 3, 5).
    /// Nodes are re-asked or sent `run` again as they come back ([`Input::NodeBack`]).
    /// An any-N job asks again the nodes it still needs.
    #[allow(clippy::too_many_arguments)]
    pub fn resume(
        id: JobId,
        nodes: Vec<(String, NodeStatus)>,
        quorum: u32,
        status: JobStatus,
        now: Instant,
        running_for: Duration,
        run_timeout: Duration,
        voting_timeout: Duration,
        limits: Limits,
    ) -> (Job, Vec<Effect>) {
        let phase = match status {
            JobStatus::New => Phase::New,
            JobStatus::Voting => Phase::Voting {
                deadline: deadline_after(now, voting_timeout),
            },
            JobStatus::Running => Phase::Running {
                deadline: deadline_after(now, run_timeout.saturating_sub(running_for)),
            },
            JobStatus::Complete
            | JobStatus::QuorumFailed
            | JobStatus::Aborted
            | JobStatus::TimedOut
            | JobStatus::Crashed
            | JobStatus::Stopped => Phase::Done(status),
        };
        let mut job =
            Job::build(id, nodes, quorum, run_timeout, voting_timeout, phase).with_limits(limits);
        let mut fx = Vec::new();
        job.check_voting_finished(now, &mut fx);
        // Rate control resumes its window where it was: free slots go to waiting nodes.
        if matches!(job.phase, Phase::Running { .. }) {
            job.refill_window(&mut fx);
        }
        job.check_running_finished(&mut fx);
        (job, fx)
    }

    fn build(
        id: JobId,
        nodes: Vec<(String, NodeStatus)>,
        quorum: u32,
        run_timeout: Duration,
        voting_timeout: Duration,
        phase: Phase,
    ) -> Job {
        let mut index = HashMap::with_capacity(nodes.len());
        let mut counts = [0; SLOTS];
        for (i, (name, status)) in nodes.iter().enumerate() {
            index.entry(name.clone()).or_insert(i);
            counts[status_slot(*status)] += 1;
        }
        Job {
            id,
            quorum,
            run_timeout,
            voting_timeout,
            nodes,
            index,
            counts,
            phase,
            limits: Limits::default(),
            asked: Vec::new(),
            stopped: false,
        }
    }

    /// Starts voting (zmq.md §5.3 steps 1–3): `voting`, `commit` to every node (even
    /// those known to be down), the voting timer; then each node for which `available`
    /// is false (not online and idle) gets the `down` row. Ignored unless the job is new.
    pub fn start(&mut self, now: Instant, available: impl Fn(&str) -> bool) -> Vec<Effect> {
        let mut fx = Vec::new();
        match self.phase {
            Phase::New => {}
            Phase::Voting { .. } | Phase::Running { .. } | Phase::Done(_) => return fx,
        }
        self.phase = Phase::Voting {
            deadline: deadline_after(now, self.voting_timeout),
        };
        fx.push(Effect::PersistJob(JobStatus::Voting));
        if self.limits.wanted.is_some() {
            // Any N: nodes known to be down are not asked; the first N of the others are.
            for i in 0..self.nodes.len() {
                if !available(&self.nodes[i].0) {
                    self.voting_row(i, Msg::Down, &mut fx);
                }
            }
            self.check_voting_finished(now, &mut fx);
            return fx;
        }
        for (node, _) in &self.nodes {
            fx.push(Effect::Send {
                node: node.clone(),
                command: Command::Commit,
            });
        }
        // Step 2 evaluates "voting finished" (only decisive for a job with no nodes); the
        // `down`s queued at step 1 are processed after it, each row re-evaluating.
        self.check_voting_finished(now, &mut fx);
        for i in 0..self.nodes.len() {
            if !available(&self.nodes[i].0) {
                self.node_input(now, i, Msg::Down, &mut fx);
            }
        }
        fx
    }

    /// Applies one input. Inputs before [`Job::start`], after the job finished, or about
    /// nodes not in the job are ignored.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Abort => self.abort(&mut fx),
            Input::NodeDown { node } => {
                if let Some(&i) = self.index.get(&node) {
                    self.node_input(now, i, Msg::Down, &mut fx);
                }
            }
            Input::Reply { node, reply } => {
                if let Some(&i) = self.index.get(&node) {
                    self.reply(now, i, reply, &mut fx);
                }
            }
            Input::NodeBack { node, report } => {
                if let Some(&i) = self.index.get(&node) {
                    self.node_back(now, i, report, &mut fx);
                }
            }
            Input::Output(output) => {
                // Only from a node this job runs: a late chunk of a finished node, or one
                // for a job that no longer runs, is dropped.
                let running = self.index.get(&output.node).is_some_and(|&i| {
                    matches!(self.nodes[i].1, NodeStatus::Running | NodeStatus::Ready)
                });
                if running && matches!(self.phase, Phase::Running { .. }) {
                    fx.push(Effect::RelayOutput(output));
                }
            }
        }
        fx
    }

    /// When [`Job::handle_timeout`] should next be called, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Voting { deadline } | Phase::Running { deadline } => Some(deadline),
            Phase::New | Phase::Done(_) => None,
        }
    }

    /// The effects that entered the current phase (its `voting` or `running` and the
    /// `commit`s or `run`s sent with it) were stored and sent at `now`, which is later
    /// than they were produced when the store was slow or away. The phase's timer counts
    /// from then: nodes cannot vote or run before they are asked, so an outage must not
    /// use up their window. (The stored run start is the time of that write too.)
    pub fn phase_began(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Voting { deadline } => *deadline = deadline_after(now, self.voting_timeout),
            Phase::Running { deadline } => *deadline = deadline_after(now, self.run_timeout),
            Phase::New | Phase::Done(_) => {}
        }
    }

    /// Fires the current phase's timer if `now` has reached it (zmq.md §5.4 rows "voting
    /// timer fires", "run timer fires"); otherwise nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        match self.phase {
            Phase::Voting { deadline } => {
                if now >= deadline {
                    self.voting_timeout(now, &mut fx);
                }
            }
            Phase::Running { deadline } => {
                if now >= deadline {
                    self.run_timeout(&mut fx);
                }
            }
            Phase::New | Phase::Done(_) => {}
        }
        fx
    }

    /// The job's status as stored.
    pub fn status(&self) -> JobStatus {
        match self.phase {
            Phase::New => JobStatus::New,
            Phase::Voting { .. } => JobStatus::Voting,
            Phase::Running { .. } => JobStatus::Running,
            Phase::Done(status) => status,
        }
    }

    /// The phase and its timer.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The job's id.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// One node's status, if the node is in the job.
    pub fn node_status(&self, node: &str) -> Option<NodeStatus> {
        self.index.get(node).map(|&i| self.nodes[i].1)
    }

    /// Every node with its status, in request order.
    pub fn nodes(&self) -> &[(String, NodeStatus)] {
        &self.nodes
    }

    fn reply(&mut self, now: Instant, i: usize, reply: Reply, fx: &mut Vec<Effect>) {
        let (msg, output) = match reply {
            Reply::AckCommit => (Msg::AckCommit, None),
            Reply::NackCommit => (Msg::NackCommit, None),
            Reply::AckRun => (Msg::AckRun, None),
            Reply::NackRun => (Msg::NackRun, None),
            Reply::Succeeded { stdout, stderr } => (Msg::Succeeded, Some((stdout, stderr))),
            Reply::Failed { stdout, stderr } => (Msg::Failed, Some((stdout, stderr))),
            Reply::Aborted => (Msg::Aborted, None),
        };
        // zmq.md §5.4 "In running", rows succeeded/failed: "store output" first, whatever
        // the node's column. The voting table stores nothing.
        if let (Phase::Running { .. }, Some((Some(stdout), Some(stderr)))) = (self.phase, output) {
            fx.push(Effect::StoreOutput {
                node: self.nodes[i].0.clone(),
                stdout,
                stderr,
            });
        }
        self.node_input(now, i, msg, fx);
    }

    /// Reconciles a returning node's own account with its status here (issue 12 §2): a
    /// node that lost this job's commit or run is asked again within the job's windows;
    /// one that no longer holds the job it was committed to or running can never deliver
    /// its result, so it is `down` at once (zmq.md §4.6, §5.4) rather than at the run
    /// timeout; one that reports running had its `run` and acknowledged it.
    fn node_back(&mut self, now: Instant, i: usize, report: NodeReport, fx: &mut Vec<Effect>) {
        use NodeReport as R;
        let send = |command| Effect::Send {
            node: self.nodes[i].0.clone(),
            command,
        };
        match self.phase {
            Phase::Voting { .. } => match (self.voting_column(i), report) {
                (VotingColumn::New, R::Idle | R::OtherJob) => {
                    if self.was_asked(i) {
                        fx.push(send(Command::Commit));
                    }
                }
                (VotingColumn::New, R::Committed | R::Running) => {
                    if let Some(asked) = self.asked.get_mut(i) {
                        *asked = true;
                    }
                    self.node_input(now, i, Msg::AckCommit, fx);
                }
                (VotingColumn::Ready, R::Idle | R::OtherJob) => {
                    self.node_input(now, i, Msg::Down, fx);
                }
                (VotingColumn::Ready, R::Committed | R::Running) | (VotingColumn::Terminal, _) => {}
            },
            Phase::Running { .. } => match (self.running_column(i), report) {
                // A waiting node keeps waiting for its slot.
                (RunningColumn::Ready, R::Committed) => {
                    if self.nodes[i].1 != NodeStatus::Waiting {
                        fx.push(send(Command::Run));
                    }
                }
                (RunningColumn::Ready, R::Running) => self.node_input(now, i, Msg::AckRun, fx),
                (RunningColumn::Ready | RunningColumn::Running, R::Idle | R::OtherJob) => {
                    self.node_input(now, i, Msg::Down, fx);
                }
                (RunningColumn::Running, R::Committed | R::Running)
                | (RunningColumn::Terminal, _) => {}
            },
            Phase::New | Phase::Done(_) => {}
        }
    }

    fn node_input(&mut self, now: Instant, i: usize, msg: Msg, fx: &mut Vec<Effect>) {
        match self.phase {
            Phase::Voting { .. } => {
                self.voting_row(i, msg, fx);
                self.check_voting_finished(now, fx);
            }
            Phase::Running { .. } => {
                self.running_row(i, msg, fx);
                self.refill_window(fx);
                self.check_running_finished(fx);
            }
            Phase::New | Phase::Done(_) => {}
        }
    }

    /// zmq.md §5.4, table "In voting": one arm per cell.
    fn voting_row(&mut self, i: usize, msg: Msg, fx: &mut Vec<Effect>) {
        use VoteStatus as V;
        match (self.voting_column(i), msg) {
            // ack_commit | →ready [success] | no change [unexpected_commit] | R [client_died…]
            (VotingColumn::New, Msg::AckCommit) => {
                self.set(i, NodeStatus::Ready, fx);
                self.vote(i, V::Success, fx);
            }
            (VotingColumn::Ready, Msg::AckCommit) => self.vote(i, V::UnexpectedCommit, fx),
            (VotingColumn::Terminal, Msg::AckCommit) => {
                self.rehab(i, fx);
                self.vote(i, V::ClientDiedWhileVoting, fx);
            }
            // nack_commit | →nacked, no rehab [failure] | →unavailable +R [lost_availibility]
            //             | R [client_died_while_voting]
            (VotingColumn::New, Msg::NackCommit) => {
                self.set(i, NodeStatus::Nacked, fx);
                self.vote(i, V::Failure, fx);
            }
            (VotingColumn::Ready, Msg::NackCommit) => {
                self.set_and_rehab(i, NodeStatus::Unavailable, fx);
                self.vote(i, V::LostAvailability, fx);
            }
            (VotingColumn::Terminal, Msg::NackCommit) => {
                self.rehab(i, fx);
                self.vote(i, V::ClientDiedWhileVoting, fx);
            }
            // down | [down first] →unavailable +R | [down first] →unavailable +R | [down first] R
            (VotingColumn::New | VotingColumn::Ready, Msg::Down) => {
                self.vote(i, V::Down, fx);
                self.set_and_rehab(i, NodeStatus::Unavailable, fx);
            }
            (VotingColumn::Terminal, Msg::Down) => {
                self.vote(i, V::Down, fx);
                self.rehab(i, fx);
            }
            // any other type | →unavailable +R, no quorum_vote | →unavailable +R | R
            (
                VotingColumn::New | VotingColumn::Ready,
                Msg::AckRun | Msg::NackRun | Msg::Succeeded | Msg::Failed | Msg::Aborted,
            ) => self.set_and_rehab(i, NodeStatus::Unavailable, fx),
            (
                VotingColumn::Terminal,
                Msg::AckRun | Msg::NackRun | Msg::Succeeded | Msg::Failed | Msg::Aborted,
            ) => self.rehab(i, fx),
        }
    }

    /// zmq.md §5.4, table "In running": one arm per cell.
    fn running_row(&mut self, i: usize, msg: Msg, fx: &mut Vec<Effect>) {
        use RunStatus as R;
        match (self.running_column(i), msg) {
            // ack_run | [run_start first] →running | no change | [client_died…] then R
            (RunningColumn::Ready, Msg::AckRun) => {
                let node = self.nodes[i].0.clone();
                fx.push(Effect::Emit(JobEvent::RunStart { node }));
                self.set(i, NodeStatus::Running, fx);
            }
            (RunningColumn::Running, Msg::AckRun) => {}
            (RunningColumn::Terminal, Msg::AckRun) => {
                self.run_complete(i, R::ClientDiedWhileRunning, fx);
                self.rehab(i, fx);
            }
            // nack_run | →failed +R [run_nacked] | →failed +R [run_nacked_while_running]
            //          | R [client_died_while_running]
            (RunningColumn::Ready, Msg::NackRun) => {
                self.set_and_rehab(i, NodeStatus::Failed, fx);
                self.run_complete(i, R::RunNacked, fx);
            }
            (RunningColumn::Running, Msg::NackRun) => {
                self.set_and_rehab(i, NodeStatus::Failed, fx);
                self.run_complete(i, R::RunNackedWhileRunning, fx);
            }
            (RunningColumn::Terminal, Msg::NackRun) => {
                self.rehab(i, fx);
                self.run_complete(i, R::ClientDiedWhileRunning, fx);
            }
            // succeeded / failed (output already stored) | →crashed +R [crashed]
            //   | →succeeded [success] / →failed [failure] | R [client_died_while_running]
            (RunningColumn::Ready, Msg::Succeeded | Msg::Failed) => {
                self.set_and_rehab(i, NodeStatus::Crashed, fx);
                self.run_complete(i, R::Crashed, fx);
            }
            (RunningColumn::Running, Msg::Succeeded) => {
                self.set(i, NodeStatus::Succeeded, fx);
                self.run_complete(i, R::Success, fx);
            }
            (RunningColumn::Running, Msg::Failed) => {
                self.set(i, NodeStatus::Failed, fx);
                self.run_complete(i, R::Failure, fx);
            }
            // Ours: a node that already delivered its result and sends one again (our
            // agent re-sends a result whose acknowledgement was lost) is not a client that
            // died; the driver acknowledges it again and nothing else happens.
            (RunningColumn::Terminal, Msg::Succeeded | Msg::Failed)
                if matches!(self.nodes[i].1, NodeStatus::Succeeded | NodeStatus::Failed) => {}
            (RunningColumn::Terminal, Msg::Succeeded | Msg::Failed) => {
                self.rehab(i, fx);
                self.run_complete(i, R::ClientDiedWhileRunning, fx);
            }
            // anything else | →crashed +R [crashed] | →crashed +R [crashed]
            //               | R [client_died_while_running]
            (
                RunningColumn::Ready | RunningColumn::Running,
                Msg::Down | Msg::AckCommit | Msg::NackCommit | Msg::Aborted,
            ) => {
                self.set_and_rehab(i, NodeStatus::Crashed, fx);
                self.run_complete(i, R::Crashed, fx);
            }
            (
                RunningColumn::Terminal,
                Msg::Down | Msg::AckCommit | Msg::NackCommit | Msg::Aborted,
            ) => {
                self.rehab(i, fx);
                self.run_complete(i, R::ClientDiedWhileRunning, fx);
            }
        }
    }

    fn voting_column(&self, i: usize) -> VotingColumn {
        match self.nodes[i].1 {
            NodeStatus::New => VotingColumn::New,
            // `running` cannot occur while voting; a stored row that says so counts as
            // committed.
            NodeStatus::Ready | NodeStatus::Running | NodeStatus::Waiting => VotingColumn::Ready,
            NodeStatus::Succeeded
            | NodeStatus::Failed
            | NodeStatus::Aborted
            | NodeStatus::Unavailable
            | NodeStatus::Nacked
            | NodeStatus::Faulty
            | NodeStatus::WasReady
            | NodeStatus::Crashed
            | NodeStatus::TimedOut
            | NodeStatus::Skipped => VotingColumn::Terminal,
        }
    }

    fn running_column(&self, i: usize) -> RunningColumn {
        match self.nodes[i].1 {
            // `new` cannot occur while running (voting ends when no node is new); a stored
            // row that says so counts as not yet running. A waiting node was committed and
            // not yet sent `run`: for every message, the same as a ready one.
            NodeStatus::New | NodeStatus::Ready | NodeStatus::Waiting => RunningColumn::Ready,
            NodeStatus::Running => RunningColumn::Running,
            NodeStatus::Succeeded
            | NodeStatus::Failed
            | NodeStatus::Aborted
            | NodeStatus::Unavailable
            | NodeStatus::Nacked
            | NodeStatus::Faulty
            | NodeStatus::WasReady
            | NodeStatus::Crashed
            | NodeStatus::TimedOut
            | NodeStatus::Skipped => RunningColumn::Terminal,
        }
    }

    /// zmq.md §5.3 step 3, "voting finished?": only once no node is `new`.
    fn check_voting_finished(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        match self.phase {
            Phase::Voting { .. } => {}
            Phase::New | Phase::Running { .. } | Phase::Done(_) => return,
        }
        if let Some(wanted) = self.limits.wanted {
            return self.check_any_voting_finished(now, wanted, fx);
        }
        if self.count(NodeStatus::New) > 0 {
            return;
        }
        let ready = self.count(NodeStatus::Ready);
        if u64::try_from(ready).unwrap_or(u64::MAX) >= u64::from(self.quorum) {
            fx.push(Effect::Emit(JobEvent::QuorumSucceeded));
            self.start_running(now, fx);
        } else {
            self.quorum_failed(fx);
        }
    }

    fn quorum_failed(&mut self, fx: &mut Vec<Effect>) {
        // Every ready node → was_ready + rehab, no rehab event (§5.7).
        for i in 0..self.nodes.len() {
            if self.nodes[i].1 == NodeStatus::Ready {
                self.set(i, NodeStatus::WasReady, fx);
                self.rehab_quietly(i, fx);
            }
        }
        self.finish(JobStatus::QuorumFailed, fx);
    }

    /// Any N's "voting finished?": N committed runs the job (nodes not needed are
    /// `skipped`); otherwise the next nodes are asked in place of those that cannot run,
    /// with a fresh voting window; with nobody left to ask and fewer than N committed,
    /// the quorum failed.
    fn check_any_voting_finished(&mut self, now: Instant, wanted: usize, fx: &mut Vec<Effect>) {
        if self.asked.len() != self.nodes.len() {
            self.asked = vec![false; self.nodes.len()];
        }
        let ready = self.count(NodeStatus::Ready);
        if ready >= wanted {
            let mut kept = 0;
            for i in 0..self.nodes.len() {
                match self.nodes[i].1 {
                    NodeStatus::Ready if kept < wanted => kept += 1,
                    NodeStatus::Ready => {
                        self.set(i, NodeStatus::Skipped, fx);
                        self.rehab_quietly(i, fx);
                    }
                    NodeStatus::New => {
                        self.set(i, NodeStatus::Skipped, fx);
                        if self.asked[i] {
                            self.rehab_quietly(i, fx);
                        }
                    }
                    _ => {}
                }
            }
            fx.push(Effect::Emit(JobEvent::QuorumSucceeded));
            self.start_running(now, fx);
            return;
        }
        let pending = (0..self.nodes.len())
            .filter(|&i| self.asked[i] && self.nodes[i].1 == NodeStatus::New)
            .count();
        let mut need = wanted - ready - pending.min(wanted - ready);
        let mut asked_any = false;
        for i in 0..self.nodes.len() {
            if need == 0 {
                break;
            }
            if !self.asked[i] && self.nodes[i].1 == NodeStatus::New {
                self.asked[i] = true;
                asked_any = true;
                need -= 1;
                fx.push(Effect::Send {
                    node: self.nodes[i].0.clone(),
                    command: Command::Commit,
                });
            }
        }
        if asked_any {
            self.phase = Phase::Voting {
                deadline: deadline_after(now, self.voting_timeout),
            };
        }
        if self.count(NodeStatus::New) == 0 {
            self.quorum_failed(fx);
        }
    }

    /// Whether node `i` was asked to commit (every node, except in an any-N job).
    fn was_asked(&self, i: usize) -> bool {
        self.limits.wanted.is_none() || self.asked.get(i).copied().unwrap_or(false)
    }

    /// Failed and crashed nodes are past `max_errors`.
    fn over_error_limit(&self) -> bool {
        let errors = self.count(NodeStatus::Failed) + self.count(NodeStatus::Crashed);
        self.limits
            .errors_allowed
            .is_some_and(|allowed| errors > allowed)
    }

    /// Rate control, after each node's row while running: past the error limit the
    /// waiting nodes are skipped (and released); otherwise free slots go to the next
    /// waiting nodes in request order.
    fn refill_window(&mut self, fx: &mut Vec<Effect>) {
        if self.count(NodeStatus::Waiting) == 0 {
            return;
        }
        if self.over_error_limit() {
            for i in 0..self.nodes.len() {
                if self.nodes[i].1 == NodeStatus::Waiting {
                    self.set(i, NodeStatus::Skipped, fx);
                    self.rehab_quietly(i, fx);
                }
            }
            self.stopped = true;
            return;
        }
        let Some(window) = self.limits.window else {
            return;
        };
        let busy = self.count(NodeStatus::Ready) + self.count(NodeStatus::Running);
        let mut free = window.saturating_sub(busy);
        for i in 0..self.nodes.len() {
            if free == 0 {
                break;
            }
            if self.nodes[i].1 == NodeStatus::Waiting {
                free -= 1;
                self.set(i, NodeStatus::Ready, fx);
                fx.push(Effect::Send {
                    node: self.nodes[i].0.clone(),
                    command: Command::Run,
                });
            }
        }
    }

    /// zmq.md §5.3 step 4.
    fn start_running(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        self.phase = Phase::Running {
            deadline: deadline_after(now, self.run_timeout),
        };
        fx.push(Effect::PersistJob(JobStatus::Running));
        let mut slots = self.limits.window.unwrap_or(usize::MAX);
        for i in 0..self.nodes.len() {
            if self.nodes[i].1 != NodeStatus::Ready {
                continue;
            }
            if slots > 0 {
                slots -= 1;
                fx.push(Effect::Send {
                    node: self.nodes[i].0.clone(),
                    command: Command::Run,
                });
            } else {
                self.set(i, NodeStatus::Waiting, fx);
                fx.push(Effect::Emit(JobEvent::RunWaiting {
                    node: self.nodes[i].0.clone(),
                }));
            }
        }
        self.check_running_finished(fx);
    }

    /// zmq.md §5.3 step 5, "running finished?": no node `ready` or `running`.
    fn check_running_finished(&mut self, fx: &mut Vec<Effect>) {
        match self.phase {
            Phase::Running { .. } => {}
            Phase::New | Phase::Voting { .. } | Phase::Done(_) => return,
        }
        if self.unfinished_while_running() == 0 {
            let status = if self.stopped {
                JobStatus::Stopped
            } else {
                JobStatus::Complete
            };
            self.finish(status, fx);
        }
    }

    /// Nodes still counted as busy while running (`new` only from inconsistent rows).
    fn unfinished_while_running(&self) -> usize {
        self.count(NodeStatus::New)
            + self.count(NodeStatus::Ready)
            + self.count(NodeStatus::Running)
            + self.count(NodeStatus::Waiting)
    }

    /// zmq.md §5.4 "voting timer fires": each `new` node gets [quorum_vote voting_timeout],
    /// then →unavailable + rehab without a rehab event; then "voting finished?".
    fn voting_timeout(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].1 == NodeStatus::New && self.was_asked(i) {
                self.vote(i, VoteStatus::VotingTimeout, fx);
                self.set(i, NodeStatus::Unavailable, fx);
                self.rehab_quietly(i, fx);
            }
        }
        self.check_voting_finished(now, fx);
    }

    /// zmq.md §5.4 "run timer fires": ready/running → timed_out + rehab, no events; then
    /// finish `timed_out`.
    fn run_timeout(&mut self, fx: &mut Vec<Effect>) {
        for i in 0..self.nodes.len() {
            match self.running_column(i) {
                RunningColumn::Ready | RunningColumn::Running => {
                    self.set(i, NodeStatus::TimedOut, fx);
                    self.rehab_quietly(i, fx);
                }
                RunningColumn::Terminal => {}
            }
        }
        self.finish(JobStatus::TimedOut, fx);
    }

    /// Our abort: every non-terminal node → `aborted`, then (once persisted) reset
    /// through rehab; no per-node events; finish `aborted`. Before start nothing was sent, so
    /// nothing needs stopping.
    fn abort(&mut self, fx: &mut Vec<Effect>) {
        let tell_nodes = match self.phase {
            Phase::New => false,
            Phase::Voting { .. } | Phase::Running { .. } => true,
            Phase::Done(_) => return,
        };
        for i in 0..self.nodes.len() {
            if !self.nodes[i].1.is_terminal() {
                self.set(i, NodeStatus::Aborted, fx);
                // Rehab rather than a bare abort: the registry keeps the node unavailable
                // and re-sends until the node confirms, as for a run timeout.
                if tell_nodes {
                    fx.push(Effect::Rehab {
                        node: self.nodes[i].0.clone(),
                    });
                }
            }
        }
        self.finish(JobStatus::Aborted, fx);
    }

    /// zmq.md §5.3 step 6: `job_complete`, UPDATE, then the driver lingers.
    fn finish(&mut self, status: JobStatus, fx: &mut Vec<Effect>) {
        self.phase = Phase::Done(status);
        fx.push(Effect::Emit(JobEvent::JobComplete { status }));
        fx.push(Effect::PersistJob(status));
        fx.push(Effect::Finished(status));
    }

    fn count(&self, status: NodeStatus) -> usize {
        self.counts[status_slot(status)]
    }

    /// "→X": a new status, persisted.
    fn set(&mut self, i: usize, status: NodeStatus, fx: &mut Vec<Effect>) {
        let old = std::mem::replace(&mut self.nodes[i].1, status);
        self.counts[status_slot(old)] -= 1;
        self.counts[status_slot(status)] += 1;
        fx.push(Effect::PersistNode {
            node: self.nodes[i].0.clone(),
            status,
        });
    }

    /// "→X +R".
    fn set_and_rehab(&mut self, i: usize, status: NodeStatus, fx: &mut Vec<Effect>) {
        self.set(i, status, fx);
        self.rehab(i, fx);
    }

    /// "R": rehab plus the `rehab` event.
    fn rehab(&self, i: usize, fx: &mut Vec<Effect>) {
        self.rehab_quietly(i, fx);
        fx.push(Effect::Emit(JobEvent::Rehab {
            node: self.nodes[i].0.clone(),
        }));
    }

    /// Rehab of the bulk transitions, which emit no `rehab` event (zmq.md §5.7).
    fn rehab_quietly(&self, i: usize, fx: &mut Vec<Effect>) {
        fx.push(Effect::Rehab {
            node: self.nodes[i].0.clone(),
        });
    }

    fn vote(&self, i: usize, status: VoteStatus, fx: &mut Vec<Effect>) {
        fx.push(Effect::Emit(JobEvent::QuorumVote {
            node: self.nodes[i].0.clone(),
            status,
        }));
    }

    fn run_complete(&self, i: usize, status: RunStatus, fx: &mut Vec<Effect>) {
        fx.push(Effect::Emit(JobEvent::RunComplete {
            node: self.nodes[i].0.clone(),
            status,
        }));
    }
}

/// One slot per node status in [`Job::counts`].
const SLOTS: usize = NodeStatus::ALL.len();

/// A status's slot in [`Job::counts`]: its database code, `0..SLOTS`.
fn status_slot(status: NodeStatus) -> usize {
    usize::try_from(status.code()).expect("node status codes are 0..=13")
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
