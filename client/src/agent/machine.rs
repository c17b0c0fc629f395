//! The agent's decisions as a pure state machine (zmq.md §3.2–3.6, §6.3–6.4, §6.9): what
//! a node says and does for every config, server message, job event and timer. The real
//! agent ([`super::Agent`]) and the load generator (`bench/`) both drive this one
//! machine, so the benchmark measures the agent users run.
//!
//! Pure: no sockets, no processes, no clock, no async. The driver feeds [`Input`]s with an
//! explicit `now`, calls [`Node::handle_timeout`] at [`Node::next_deadline`], and carries
//! out the [`Effect`]s in order: fetching the config, opening and closing the channel,
//! vetting and starting commands, and sending [`Outgoing`] messages (built by
//! [`Node::message`] when they leave). Verification, timestamps and JSON stay in the
//! driver and in `pushy_protocol`.
//!
//! The rules, as the agent has always had them:
//! - after a config, the kept result (if any) goes out first ([`crate::pending`]), then a
//!   heartbeat at once and every `interval`;
//! - more than `offline_threshold` heartbeat ticks without a server heartbeat: the server
//!   is offline, reconfigure now. (So the original's `online_threshold` has no role: a
//!   session never outlives losing the server, and each new one starts online.)
//! - a server heartbeat with another incarnation: reconfigure after a random splay of up to
//!   one interval, so a fleet does not stampede the restarted server;
//! - a CURVE channel on which nothing arrived [`Timings::command_silence`] after connecting:
//!   reconfigure (zmq.md §3.5);
//! - a refused send: reconfigure within a jittered minute, never later than already
//!   planned (fixes zmq.md §6.9's ever-postponed deadline); the config's lifetime likewise;
//! - one job at a time; the job lives in the machine, not the connection, so reconfiguring
//!   never touches it, and a result produced while disconnected is kept and sent first on
//!   the next connection;
//! - failed fetches are retried after the heartbeat interval, doubling up to
//!   [`Timings::fetch_retry_max`], except while a result waits for the server.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pushy_protocol::message::{
    ClientMessage, ClientMessageType, CommitOptions, JobRef, Received, ServerMessage,
};
use rand::rngs::SmallRng;
use rand::{Rng as _, RngCore};

pub use super::outgoing::Outgoing;
use crate::pending::PendingResult;
use crate::runner::live::LiveChunk;
use crate::runner::{self, Captured};

/// The agent's timings (zmq.md §3.5, §3.6, §8); the bench may shorten the splay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How long a new CURVE command channel may stay silent before the agent assumes the
    /// handshake failed and reconfigures (zmq.md §3.5).
    pub command_silence: Duration,
    /// Delay (jittered) before a reconfigure after a refused send (zmq.md §3.6).
    pub send_failure_reconfigure: Duration,
    /// Shortest delay between failed config fetches.
    pub fetch_retry_min: Duration,
    /// Longest delay between failed config fetches (the original always waits ~120 s).
    pub fetch_retry_max: Duration,
    /// Upper bound of the random wait before reconfiguring after a server restart;
    /// `None`: the heartbeat interval, as the original (zmq.md §3.3).
    pub splay: Option<Duration>,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            command_silence: Duration::from_secs(3),
            send_failure_reconfigure: Duration::from_secs(60),
            fetch_retry_min: Duration::from_secs(1),
            fetch_retry_max: Duration::from_secs(30),
            splay: None,
        }
    }
}

/// Who this node is on the wire (zmq.md §2.7.2 common fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Node name.
    pub node: String,
    /// The machine's host name.
    pub client: String,
    /// Organization name.
    pub org: String,
    /// This process's incarnation, kept across reconfigures.
    pub incarnation: String,
}

/// What the machine needs from a fetched config (zmq.md §1.3); keys stay with the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionParams {
    /// Heartbeat period.
    pub interval: Duration,
    /// Silent heartbeat ticks before the server is considered offline.
    pub offline_threshold: u32,
    /// How long the config is good for.
    pub lifetime: Duration,
    /// The incarnation of the server that answered.
    pub server_incarnation: String,
    /// The channel uses CURVE (a 1.x server's plain channel is never checked for silence).
    pub curve: bool,
    /// Largest message body to send (the smaller of the server's and the client's).
    pub max_body: usize,
}

/// Why the node reconfigures (zmq.md §3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A server heartbeat carried another incarnation.
    ServerRestart,
    /// Server heartbeats stopped.
    ServerOffline,
    /// Nothing arrived on the command channel after connecting.
    SilentChannel,
    /// The config's lifetime ran out.
    Lifetime,
    /// A send was refused (queue full or no connection).
    SendFailure,
    /// Asked to (SIGUSR1).
    Requested,
    /// The channel's thread ended.
    ChannelClosed,
}

impl Reason {
    /// Every reason, for reports.
    pub const ALL: [Reason; 7] = [
        Reason::ServerRestart,
        Reason::ServerOffline,
        Reason::SilentChannel,
        Reason::Lifetime,
        Reason::SendFailure,
        Reason::Requested,
        Reason::ChannelClosed,
    ];

    /// Its name in logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ServerRestart => "server_restart",
            Reason::ServerOffline => "server_offline",
            Reason::SilentChannel => "silent_channel",
            Reason::Lifetime => "lifetime",
            Reason::SendFailure => "send_failure",
            Reason::Requested => "requested",
            Reason::ChannelClosed => "channel_closed",
        }
    }
}

/// A finished command's report (the driver ran it, or the bench decided it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The job.
    pub job_id: String,
    /// Exit status 0.
    pub ok: bool,
    /// `(stdout, stderr)` when the job asked for its output.
    pub output: Option<(Captured, Captured)>,
}

/// A verified, decoded input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A config fetch succeeded (and the driver accepts its protocol).
    Configured(SessionParams),
    /// A config fetch failed, or the channel for a fetched config could not be opened.
    FetchFailed,
    /// A verified server message; `via_command` when it came on the DEALER.
    Server {
        /// What it says.
        received: Received,
        /// It came on the command channel (proves the channel works, zmq.md §3.5).
        via_command: bool,
    },
    /// The answer to [`Effect::Vet`].
    Vetted {
        /// The job.
        job_id: String,
        /// Whether the node can run it.
        accepted: bool,
    },
    /// The job's command ended, or could not start (`ok: false`, no output).
    Finished(Finished),
    /// The running job's output since its previous chunk (issue 15 §2), for a `run` that
    /// asked for `live_output` and a commit with `capture`.
    Output {
        /// The job.
        job_id: String,
        /// The text and the drop count.
        chunk: LiveChunk,
    },
    /// A message could not be queued or sent.
    SendFailed,
    /// Reconfigure now.
    Reconfigure(Reason),
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Fetch the config; answer [`Input::Configured`] or [`Input::FetchFailed`].
    Fetch,
    /// Open the channel for the config just given.
    Connect,
    /// Close the channel: a reconfigure begins (a [`Effect::Fetch`] follows).
    Disconnect {
        /// Why.
        reason: Reason,
        /// Whether a message had arrived on the closed command channel.
        proven: bool,
    },
    /// The first message arrived on this command channel, `after` it was opened.
    Proven {
        /// Time from connecting to the first message.
        after: Duration,
    },
    /// Build, sign and send.
    Send(Outgoing),
    /// Decide whether this node can run `command` (whitelist, user, directory, file,
    /// lock); answer [`Input::Vetted`].
    Vet {
        /// The job.
        job_id: String,
        /// The command string as the server sent it.
        command: String,
        /// The commit's options.
        options: CommitOptions,
    },
    /// Start the vetted job's command (`ack_run` has been sent); report its end with
    /// [`Input::Finished`].
    Start {
        /// The job.
        job_id: String,
        /// The server asked for the output while it runs (issue 15 §2): when the commit
        /// asked for capture, report it with [`Input::Output`].
        live_output: bool,
    },
    /// The job is abandoned: stop its command if it runs, release what it holds. The
    /// `aborted` that follows must mean stopped.
    Abandon {
        /// The job.
        job_id: String,
    },
}

/// The one job this node is on (zmq.md §6.4), with `Vetting` between a `commit` and the
/// driver's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Job {
    Idle,
    Vetting { job_id: String },
    Committed { job_id: String },
    Running { job_id: String },
}

impl Job {
    /// The heartbeat's `job_state` and `job_id` (a job being vetted is not yet taken).
    fn report(&self) -> (&'static str, Option<&str>) {
        match self {
            Job::Idle | Job::Vetting { .. } => ("idle", None),
            Job::Committed { job_id } => ("committed", Some(job_id)),
            Job::Running { job_id } => ("running", Some(job_id)),
        }
    }
}

/// The connection, with its timers: leaving a state drops them.
#[derive(Clone, Debug)]
enum Link {
    /// A fetch is outstanding.
    Fetching,
    /// The last fetch failed; the next one at `retry_at`.
    Backoff { retry_at: Instant },
    /// The channel is open.
    Up(Session),
}

#[derive(Clone, Debug)]
struct Session {
    params: SessionParams,
    connected_at: Instant,
    proven: bool,
    offline_counter: u32,
    next_beat: Instant,
    /// The earliest reconfigure planned, and why; triggers only ever move it earlier.
    reconfigure_at: Instant,
    reconfigure_reason: Reason,
}

impl Session {
    fn reconfigure_by(&mut self, at: Instant, reason: Reason) {
        if at < self.reconfigure_at {
            self.reconfigure_at = at;
            self.reconfigure_reason = reason;
        }
    }

    fn silence_deadline(&self, timings: &Timings) -> Option<Instant> {
        (self.params.curve && !self.proven).then(|| self.connected_at + timings.command_silence)
    }
}

/// One node's side of the protocol.
#[derive(Debug)]
pub struct Node {
    identity: Identity,
    timings: Timings,
    rng: SmallRng,
    sequence: u64,
    job: Job,
    link: Link,
    /// The result sent last, until the server acknowledges it.
    pending: PendingResult,
    /// The latest config's heartbeat interval: the first fetch retry delay.
    interval: Option<Duration>,
    /// The latest config's body limit (kept for results produced while disconnected).
    max_body: usize,
    /// The delay before the fetch under way if the one before it failed.
    retry: Option<Duration>,
}

impl Node {
    /// A node about to fetch its first config; `max_body` is the client's own limit.
    /// Every random choice (splay, jitter) draws from `rng`, so tests seed it.
    pub fn new(identity: Identity, timings: Timings, max_body: usize, rng: SmallRng) -> Node {
        Node {
            identity,
            timings,
            rng,
            sequence: 0,
            job: Job::Idle,
            link: Link::Fetching,
            pending: PendingResult::default(),
            interval: None,
            max_body,
            retry: None,
        }
    }

    /// The node name.
    pub fn name(&self) -> &str {
        &self.identity.node
    }

    /// Whether the channel is open.
    pub fn is_up(&self) -> bool {
        matches!(self.link, Link::Up(_))
    }

    /// Whether a message arrived on the current command channel.
    pub fn is_proven(&self) -> bool {
        matches!(&self.link, Link::Up(s) if s.proven)
    }

    /// The job whose result is kept for the server, if any.
    #[cfg(test)]
    pub(crate) fn pending_job(&self) -> Option<&str> {
        self.pending.job_id()
    }

    /// Starts the node: its first fetch.
    pub fn start(&mut self) -> Vec<Effect> {
        self.link = Link::Fetching;
        vec![Effect::Fetch]
    }

    /// When [`Node::handle_timeout`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.link {
            Link::Fetching => None,
            Link::Backoff { retry_at } => Some(*retry_at),
            Link::Up(s) => {
                let at = s.reconfigure_at.min(s.next_beat);
                Some(s.silence_deadline(&self.timings).map_or(at, |d| at.min(d)))
            }
        }
    }

    /// Processes one input.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Effect> {
        match input {
            Input::Configured(params) => self.configured(now, params),
            Input::FetchFailed => self.fetch_failed(now),
            Input::Server {
                received,
                via_command,
            } => self.server(now, received, via_command),
            Input::Vetted { job_id, accepted } => self.vetted(job_id, accepted),
            Input::Finished(done) => self.finished(now, done),
            Input::Output { job_id, chunk } => self.output(job_id, chunk),
            Input::SendFailed => {
                let at = now + jitter(self.timings.send_failure_reconfigure, &mut self.rng);
                if let Link::Up(s) = &mut self.link {
                    s.reconfigure_by(at, Reason::SendFailure);
                }
                Vec::new()
            }
            Input::Reconfigure(reason) => match &self.link {
                Link::Up(_) => self.reconfigure(reason),
                // Not connected: fetch now rather than at the end of the backoff.
                Link::Backoff { .. } => {
                    self.link = Link::Fetching;
                    vec![Effect::Fetch]
                }
                Link::Fetching => Vec::new(),
            },
        }
    }

    /// Timers: retry a fetch, reconfigure, give up on a silent channel, heartbeat.
    /// Calling it before a deadline does nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Effect> {
        let session = match &mut self.link {
            Link::Fetching => return Vec::new(),
            Link::Backoff { retry_at } => {
                if *retry_at > now {
                    return Vec::new();
                }
                self.link = Link::Fetching;
                return vec![Effect::Fetch];
            }
            Link::Up(s) => s,
        };
        if session
            .silence_deadline(&self.timings)
            .is_some_and(|at| now >= at)
        {
            return self.reconfigure(Reason::SilentChannel);
        }
        if now >= session.reconfigure_at {
            let reason = session.reconfigure_reason;
            return self.reconfigure(reason);
        }
        if now < session.next_beat {
            return Vec::new();
        }
        // zmq.md §3.2: the offline check comes before the count, then the heartbeat.
        session.next_beat = now + session.params.interval;
        if session.offline_counter > session.params.offline_threshold {
            return self.reconfigure(Reason::ServerOffline);
        }
        session.offline_counter += 1;
        let (state, job_id) = self.job.report();
        vec![Effect::Send(Outgoing {
            kind: ClientMessageType::Heartbeat,
            job_id: job_id.map(str::to_owned),
            job_state: Some(state),
            output: None,
            live: None,
        })]
    }

    /// The wire message for `out`, sent at `at` (zmq.md §2.7.2). Each call takes the next
    /// sequence number.
    pub fn message(&mut self, out: &Outgoing, at: DateTime<Utc>) -> ClientMessage {
        self.sequence += 1;
        wire(&self.identity, self.sequence, out, at)
    }

    /// A fetch succeeded: open the channel, send the kept result first (a restarted
    /// server adopts a node whose first message names a job it is still part of; an
    /// "idle" heartbeat first would mark it crashed), then heartbeat at once.
    fn configured(&mut self, now: Instant, params: SessionParams) -> Vec<Effect> {
        self.retry = None;
        self.interval = Some(params.interval);
        self.max_body = params.max_body;
        let reconfigure_at = now + jitter(params.lifetime, &mut self.rng);
        self.link = Link::Up(Session {
            params,
            connected_at: now,
            proven: false,
            offline_counter: 0,
            next_beat: now,
            reconfigure_at,
            reconfigure_reason: Reason::Lifetime,
        });
        let mut effects = vec![Effect::Connect];
        if let Some(out) = self.pending.poll_resend(now) {
            effects.push(Effect::Send(out));
        }
        effects
    }

    fn fetch_failed(&mut self, now: Instant) -> Vec<Effect> {
        let delay = fetch_retry_delay(
            &self.timings,
            self.retry,
            self.interval,
            self.pending.job_id().is_some(),
        );
        self.retry = Some(delay);
        self.link = Link::Backoff {
            retry_at: now + jitter(delay, &mut self.rng),
        };
        Vec::new()
    }

    fn reconfigure(&mut self, reason: Reason) -> Vec<Effect> {
        let proven = self.is_proven();
        self.link = Link::Fetching;
        vec![Effect::Disconnect { reason, proven }, Effect::Fetch]
    }

    fn server(&mut self, now: Instant, received: Received, via_command: bool) -> Vec<Effect> {
        let Link::Up(session) = &mut self.link else {
            // The channel is closed before a fetch; a late message has no session.
            return Vec::new();
        };
        let mut effects = Vec::new();
        if via_command && !session.proven {
            session.proven = true;
            effects.push(Effect::Proven {
                after: now.saturating_duration_since(session.connected_at),
            });
        }
        match received {
            Received::Message(ServerMessage::Heartbeat { incarnation_id, .. }) => {
                self.server_heartbeat(now, Some(incarnation_id));
            }
            Received::HeartbeatWithoutIncarnation => self.server_heartbeat(now, None),
            Received::Message(ServerMessage::Commit {
                job_id,
                command,
                options,
                ..
            }) => {
                self.pending.handle_commit(Some(&job_id));
                effects.push(self.commit(job_id, command, options));
            }
            Received::IncompleteCommit { job_id, .. } => {
                self.pending.handle_commit(job_id.as_deref());
                effects.push(send(ClientMessageType::NackCommit, job_id));
            }
            Received::Message(ServerMessage::Run {
                job_id,
                live_output,
            }) => effects.extend(self.run(job_id, live_output)),
            Received::IncompleteRun => effects.push(send(ClientMessageType::NackRun, None)),
            Received::Message(ServerMessage::Abort) => {
                self.pending.handle_abort();
                effects.extend(self.abort());
            }
            Received::Message(ServerMessage::ResultAck { job_id }) => {
                self.pending.handle_ack(Some(&job_id));
            }
            Received::Message(ServerMessage::Ack) | Received::Unknown(_) => {}
        }
        effects
    }

    /// zmq.md §3.2–3.3: a server heartbeat resets the silence counter; another
    /// incarnation means the server restarted and every key changed.
    fn server_heartbeat(&mut self, now: Instant, incarnation: Option<String>) {
        let Link::Up(session) = &mut self.link else {
            return;
        };
        session.offline_counter = 0;
        if incarnation.is_some_and(|i| i != session.params.server_incarnation) {
            let bound = self.timings.splay.unwrap_or(session.params.interval);
            let at = now + bound.mul_f64(self.rng.random_range(0.0..1.0));
            session.reconfigure_by(at, Reason::ServerRestart);
        }
    }

    /// zmq.md §6.4 commit: busy nodes refuse; an idle one asks the driver.
    fn commit(&mut self, job_id: String, command: String, options: CommitOptions) -> Effect {
        if self.job != Job::Idle {
            return send(ClientMessageType::NackCommit, Some(job_id));
        }
        self.job = Job::Vetting {
            job_id: job_id.clone(),
        };
        Effect::Vet {
            job_id,
            command,
            options,
        }
    }

    fn vetted(&mut self, job_id: String, accepted: bool) -> Vec<Effect> {
        if !matches!(&self.job, Job::Vetting { job_id: j } if *j == job_id) {
            // Aborted while being vetted: release whatever the vetting took.
            return vec![Effect::Abandon { job_id }];
        }
        if !accepted {
            self.job = Job::Idle;
            return vec![send(ClientMessageType::NackCommit, Some(job_id))];
        }
        self.job = Job::Committed {
            job_id: job_id.clone(),
        };
        vec![send(ClientMessageType::AckCommit, Some(job_id))]
    }

    /// zmq.md §6.4 run: only the committed job runs; `ack_run` goes before the start.
    fn run(&mut self, job_id: String, live_output: bool) -> Vec<Effect> {
        if !matches!(&self.job, Job::Committed { job_id: c } if *c == job_id) {
            return vec![send(ClientMessageType::NackRun, Some(job_id))];
        }
        self.job = Job::Running {
            job_id: job_id.clone(),
        };
        vec![
            send(ClientMessageType::AckRun, Some(job_id.clone())),
            Effect::Start {
                job_id,
                live_output,
            },
        ]
    }

    /// Issue 15 §2: a running job's output goes out as it comes, but only while the job
    /// is ours and running: none after its result (the result is the last word on a job)
    /// or its abort.
    fn output(&mut self, job_id: String, chunk: LiveChunk) -> Vec<Effect> {
        if !matches!(&self.job, Job::Running { job_id: j } if *j == job_id) {
            return Vec::new();
        }
        let mut out = Outgoing::reply(ClientMessageType::Output, Some(job_id));
        out.live = Some(chunk);
        vec![Effect::Send(out)]
    }

    /// zmq.md §6.4 abort: valid in every state; `aborted` names the job we had (a job
    /// still being vetted was not ours yet).
    fn abort(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        let had = match std::mem::replace(&mut self.job, Job::Idle) {
            Job::Idle => None,
            Job::Vetting { .. } => None,
            Job::Committed { job_id } | Job::Running { job_id } => {
                effects.push(Effect::Abandon {
                    job_id: job_id.clone(),
                });
                Some(job_id)
            }
        };
        effects.push(send(ClientMessageType::Aborted, had));
        effects
    }

    /// The command ended: report it if it is still our job (an aborted one was answered
    /// already), and keep the result until the server acknowledges it.
    fn finished(&mut self, now: Instant, done: Finished) -> Vec<Effect> {
        if !matches!(&self.job, Job::Running { job_id } if *job_id == done.job_id) {
            return Vec::new();
        }
        self.job = Job::Idle;
        let kind = if done.ok {
            ClientMessageType::Succeeded
        } else {
            ClientMessageType::Failed
        };
        let mut out = Outgoing::reply(kind, Some(done.job_id));
        if let Some((stdout, stderr)) = done.output {
            out.output = Some(self.fit_output(&out, stdout, stderr));
        }
        self.pending.hold(out.clone(), now);
        if self.is_up() {
            vec![Effect::Send(out)]
        } else {
            // Not connected: the result goes out first on the next connection.
            Vec::new()
        }
    }

    /// The newest output that fits, so the body stays within `max_body` bytes: the room
    /// left by everything else is measured on the message itself (with the largest
    /// sequence number and the truncation flag, which can only make it longer), and the
    /// output is measured JSON-escaped.
    fn fit_output(
        &self,
        out: &Outgoing,
        stdout: Captured,
        stderr: Captured,
    ) -> (String, String, bool) {
        // Every timestamp has the same length; the largest sequence number is the longest.
        let mut frame = wire(&self.identity, u64::MAX, out, DateTime::UNIX_EPOCH);
        frame.stdout = Some(String::new());
        frame.stderr = Some(String::new());
        frame.output_truncated = true;
        let budget = self.max_body.saturating_sub(frame.to_body().len());
        let (o, e) = runner::fit_output(stdout, stderr, budget);
        let truncated = o.truncated || e.truncated;
        (o.text, e.text, truncated)
    }
}

fn wire(identity: &Identity, sequence: u64, out: &Outgoing, at: DateTime<Utc>) -> ClientMessage {
    let (stdout, stderr, output_truncated, dropped) = match (&out.output, &out.live) {
        (Some((o, e, t)), _) => (Some(o.clone()), Some(e.clone()), *t, 0),
        (None, Some(live)) => (
            live.stdout.clone(),
            live.stderr.clone(),
            false,
            live.dropped,
        ),
        (None, None) => (None, None, false, 0),
    };
    ClientMessage {
        node: identity.node.clone(),
        client: identity.client.clone(),
        protocol_version: Some("2.0".into()),
        org: identity.org.clone(),
        kind: out.kind,
        sequence,
        timestamp: at,
        incarnation_id: identity.incarnation.clone(),
        job_state: out.job_state.map(str::to_owned),
        // Always present, `null` when idle (zmq.md §2.7.2).
        job_id: out.job_id.clone().map_or(JobRef::None, JobRef::Id),
        stdout,
        stderr,
        output_truncated,
        dropped,
    }
}

fn send(kind: ClientMessageType, job_id: Option<String>) -> Effect {
    Effect::Send(Outgoing::reply(kind, job_id))
}

/// `d × (1 − U[0, 0.1))`, as the original spreads its reconfigures.
fn jitter(d: Duration, rng: &mut dyn RngCore) -> Duration {
    d.mul_f64(1.0 - rng.random_range(0.0..0.1))
}

/// How long to wait before fetching the config again after a failure: the heartbeat
/// interval first (at least [`Timings::fetch_retry_min`]), then doubling up to
/// [`Timings::fetch_retry_max`], so a fleet does not hammer a server that is away. Except
/// while the node holds a result the server has not acknowledged: the job's run timer
/// counts on at the server, so that node keeps retrying at the first delay.
fn fetch_retry_delay(
    timings: &Timings,
    previous: Option<Duration>,
    interval: Option<Duration>,
    holding_result: bool,
) -> Duration {
    let first = interval
        .unwrap_or(timings.fetch_retry_max)
        .max(timings.fetch_retry_min);
    match previous {
        Some(d) if !holding_result => (d * 2).min(timings.fetch_retry_max),
        _ => first,
    }
}

#[cfg(test)]
mod tests;
