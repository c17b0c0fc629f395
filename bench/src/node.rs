//! One simulated node as a pure state machine: no sockets, no clock, no JSON. The shard
//! driver (`shard.rs`) feeds it fetched configs, verified server messages and timeouts,
//! each with an explicit `now`, and carries out the [`Effect`]s it returns.
//!
//! It follows the real agent (client/src/agent.rs, zmq.md §3.2–3.6, §6.3–6.4) wherever
//! the server can tell the difference:
//! - after a config, heartbeat at once and then every `interval`, reporting job state;
//! - count server heartbeats; after more than `offline_threshold` silent ticks stop
//!   heartbeating and reconfigure;
//! - a server heartbeat with another incarnation, a command channel silent for 3 s
//!   after connecting, a refused send, or the config lifetime each schedule a reconfigure
//!   (close sockets, fetch the config again, reconnect) — restarts and losses after a
//!   random splay, so a fleet does not stampede the server;
//! - one job at a time: `commit` → `ack_commit` (or `nack_commit` when busy or by the
//!   failure rate), `run` → `ack_run` then `succeeded`/`failed` after the run delay,
//!   `abort` → `aborted` with the job it had. The job survives reconfigures, as in the
//!   agent; a completion due while disconnected goes out on the next connection.
//!
//! Not simulated: whitelists, users, directories, files, locks and output capture (every
//! command is accepted and "runs" for the configured delay).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pushy_protocol::message::{ClientMessage, ClientMessageType, JobRef};
use rand::RngCore;

use crate::behaviour::{self, Behaviour};

/// What a node is given to decide with: the shared knobs and the shard's RNG.
pub struct Env<'a> {
    /// The run's behaviour.
    pub behaviour: &'a Behaviour,
    /// The shard's random source.
    pub rng: &'a mut dyn RngCore,
}

/// What a node needs from a config fetch (http.md §1.4.1); keys stay with the driver.
#[derive(Clone, Debug)]
pub struct SessionParams {
    /// Heartbeat period.
    pub interval: Duration,
    /// Silent heartbeat ticks before the server is considered offline.
    pub offline_threshold: u32,
    /// Server heartbeats needed to consider it online again.
    pub online_threshold: u32,
    /// How long the config is good for.
    pub lifetime: Duration,
    /// The incarnation of the server that answered.
    pub server_incarnation: String,
}

/// A verified, decoded server message (zmq.md §2.7.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMsg {
    /// A PUB heartbeat; the incarnation when it carried one.
    Heartbeat {
        /// `incarnation_id`.
        incarnation: Option<String>,
    },
    /// Vote on a job.
    Commit {
        /// `job_id`, when present.
        job_id: Option<String>,
    },
    /// Run the committed job.
    Run {
        /// `job_id`, when present.
        job_id: Option<String>,
    },
    /// Reset.
    Abort,
    /// "Your encrypted channel works".
    Ack,
    /// A type the client ignores.
    Other,
}

/// Why a node reconfigured (zmq.md §3.6).
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
}

impl Reason {
    /// Every reason, for reports.
    pub const ALL: [Reason; 5] = [
        Reason::ServerRestart,
        Reason::ServerOffline,
        Reason::SilentChannel,
        Reason::Lifetime,
        Reason::SendFailure,
    ];

    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ServerRestart => "server_restart",
            Reason::ServerOffline => "server_offline",
            Reason::SilentChannel => "silent_channel",
            Reason::Lifetime => "lifetime",
            Reason::SendFailure => "send_failure",
        }
    }
}

/// A message for the driver to build, sign and send on the DEALER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Its type.
    pub kind: ClientMessageType,
    /// The job it concerns (`null` on the wire when `None`).
    pub job_id: Option<String>,
    /// Heartbeats only: `idle`, `committed` or `running`.
    pub job_state: Option<&'static str>,
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Close this node's sockets: a reconfigure begins.
    Disconnect {
        /// Why.
        reason: Reason,
        /// Whether the closed channel had been proven (the driver keeps counts).
        proven: bool,
    },
    /// Ask for a config fetch.
    Fetch,
    /// Open the DEALER and SUB for the session just begun.
    Connect,
    /// The first message arrived on this DEALER: the CURVE handshake worked and the
    /// server answered, `after` the sockets were opened.
    Proven {
        /// Time from connecting to the first message.
        after: Duration,
    },
    /// Sign and send.
    Send(Reply),
}

enum Job {
    Idle,
    Committed {
        job_id: String,
    },
    Running {
        job_id: String,
        done_at: Instant,
        succeed: bool,
    },
}

impl Job {
    fn state(&self) -> &'static str {
        match self {
            Job::Idle => "idle",
            Job::Committed { .. } => "committed",
            Job::Running { .. } => "running",
        }
    }

    fn id(&self) -> Option<&str> {
        match self {
            Job::Idle => None,
            Job::Committed { job_id } | Job::Running { job_id, .. } => Some(job_id),
        }
    }
}

enum Link {
    /// A fetch is outstanding.
    Fetching,
    /// The last fetch failed; the next one at `retry_at`.
    Backoff { retry_at: Instant },
    /// Sockets open.
    Up(Session),
}

struct Session {
    params: SessionParams,
    connected_at: Instant,
    proven: bool,
    online: bool,
    offline_counter: u32,
    online_counter: u32,
    next_beat: Instant,
    /// The earliest reconfigure scheduled, and why; triggers only ever move it earlier.
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
}

/// One simulated node.
pub struct SimNode {
    name: String,
    org: String,
    incarnation: String,
    sequence: u64,
    job: Job,
    link: Link,
    fetch_failures: u32,
}

impl SimNode {
    /// A node about to fetch its first config. `incarnation` is its process id on the
    /// wire: one per simulated process, kept across reconfigures.
    pub fn new(name: String, org: String, incarnation: String) -> SimNode {
        SimNode {
            name,
            org,
            incarnation,
            sequence: 0,
            job: Job::Idle,
            link: Link::Fetching,
            fetch_failures: 0,
        }
    }

    /// The node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether its sockets are open.
    pub fn is_up(&self) -> bool {
        matches!(self.link, Link::Up(_))
    }

    /// Whether a message arrived on the current command channel.
    pub fn is_proven(&self) -> bool {
        matches!(&self.link, Link::Up(s) if s.proven)
    }

    /// Starts the node: its first fetch.
    pub fn start(&mut self) -> Vec<Effect> {
        self.link = Link::Fetching;
        vec![Effect::Fetch]
    }

    /// A fetch succeeded: open the channel and heartbeat at once.
    pub fn handle_config(
        &mut self,
        now: Instant,
        params: SessionParams,
        env: &mut Env<'_>,
    ) -> Vec<Effect> {
        self.fetch_failures = 0;
        let reconfigure_at = now + behaviour::jitter(params.lifetime, env.rng);
        self.link = Link::Up(Session {
            params,
            connected_at: now,
            proven: false,
            online: true,
            offline_counter: 0,
            online_counter: 0,
            next_beat: now,
            reconfigure_at,
            reconfigure_reason: Reason::Lifetime,
        });
        vec![Effect::Connect]
    }

    /// A fetch failed, or the sockets for a fetched config could not be opened: retry
    /// after a backoff.
    pub fn handle_fetch_failed(&mut self, now: Instant, env: &mut Env<'_>) {
        self.fetch_failures = self.fetch_failures.saturating_add(1);
        let wait = behaviour::backoff(self.fetch_failures, env.behaviour.fetch_retry_max, env.rng);
        self.link = Link::Backoff {
            retry_at: now + wait,
        };
    }

    /// A send was refused: reconfigure soon, never later than already planned (fixes
    /// the original's ever-postponed deadline, zmq.md §6.9).
    pub fn handle_send_failed(&mut self, now: Instant, env: &mut Env<'_>) {
        if let Link::Up(s) = &mut self.link {
            let at = now + behaviour::jitter(env.behaviour.send_failure_reconfigure, env.rng);
            s.reconfigure_by(at, Reason::SendFailure);
        }
    }

    /// A verified message from the server; `via_command` when it came on the DEALER.
    pub fn handle_message(
        &mut self,
        now: Instant,
        msg: ServerMsg,
        via_command: bool,
        env: &mut Env<'_>,
    ) -> Vec<Effect> {
        let Link::Up(session) = &mut self.link else {
            // Sockets are closed before a fetch; a late message has no session to join.
            return Vec::new();
        };
        let mut effects = Vec::new();
        if via_command && !session.proven {
            session.proven = true;
            effects.push(Effect::Proven {
                after: now.saturating_duration_since(session.connected_at),
            });
        }
        match msg {
            ServerMsg::Heartbeat { incarnation } => {
                Self::server_heartbeat(session, now, incarnation, env);
            }
            ServerMsg::Commit { job_id } => effects.push(self.commit(job_id, env)),
            ServerMsg::Run { job_id } => effects.extend(self.run(now, job_id, env)),
            ServerMsg::Abort => {
                let job_id = self.job.id().map(str::to_owned);
                self.job = Job::Idle;
                effects.push(reply(ClientMessageType::Aborted, job_id));
            }
            ServerMsg::Ack | ServerMsg::Other => {}
        }
        effects
    }

    /// zmq.md §3.2–3.3: a server heartbeat resets the silence counter; a new
    /// incarnation means the server restarted and every key changed.
    fn server_heartbeat(
        session: &mut Session,
        now: Instant,
        incarnation: Option<String>,
        env: &mut Env<'_>,
    ) {
        session.offline_counter = 0;
        if !session.online {
            session.online_counter += 1;
            if session.online_counter > session.params.online_threshold {
                session.online = true;
            }
        }
        if incarnation.is_some_and(|i| i != session.params.server_incarnation) {
            let bound = env.behaviour.splay.unwrap_or(session.params.interval);
            let at = now + behaviour::splay(bound, env.rng);
            session.reconfigure_by(at, Reason::ServerRestart);
        }
    }

    fn commit(&mut self, job_id: Option<String>, env: &mut Env<'_>) -> Effect {
        let Some(job_id) = job_id else {
            return reply(ClientMessageType::NackCommit, None);
        };
        let busy = !matches!(self.job, Job::Idle);
        if busy || behaviour::roll(env.behaviour.commit_fail_rate, env.rng) {
            return reply(ClientMessageType::NackCommit, Some(job_id));
        }
        self.job = Job::Committed {
            job_id: job_id.clone(),
        };
        reply(ClientMessageType::AckCommit, Some(job_id))
    }

    fn run(&mut self, now: Instant, job_id: Option<String>, env: &mut Env<'_>) -> Vec<Effect> {
        let committed =
            matches!(&self.job, Job::Committed { job_id: c } if Some(c) == job_id.as_ref());
        let (Some(job_id), true) = (&job_id, committed) else {
            return vec![reply(ClientMessageType::NackRun, job_id)];
        };
        let job_id = job_id.clone();
        let succeed = !behaviour::roll(env.behaviour.run_fail_rate, env.rng);
        let mut effects = vec![reply(ClientMessageType::AckRun, Some(job_id.clone()))];
        if env.behaviour.run_delay.is_zero() {
            self.job = Job::Idle;
            effects.push(reply(completion(succeed), Some(job_id)));
        } else {
            self.job = Job::Running {
                job_id,
                done_at: now + env.behaviour.run_delay,
                succeed,
            };
        }
        effects
    }

    /// Timers: retry a fetch, reconfigure, give up on a silent channel, heartbeat,
    /// finish a job.
    pub fn handle_timeout(&mut self, now: Instant, env: &mut Env<'_>) -> Vec<Effect> {
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
        let silent_since = session.connected_at + env.behaviour.command_silence;
        if !session.proven && now >= silent_since {
            session.reconfigure_by(now, Reason::SilentChannel);
        }
        if now >= session.reconfigure_at {
            let (reason, proven) = (session.reconfigure_reason, session.proven);
            self.link = Link::Fetching;
            return vec![Effect::Disconnect { reason, proven }, Effect::Fetch];
        }
        let mut effects = Vec::new();
        if now >= session.next_beat {
            session.next_beat = now + session.params.interval;
            if session.online {
                if session.offline_counter > session.params.offline_threshold {
                    session.online = false;
                    session.online_counter = 0;
                    let bound = env.behaviour.splay.unwrap_or(session.params.interval);
                    let at = now + behaviour::splay(bound, env.rng);
                    session.reconfigure_by(at, Reason::ServerOffline);
                } else {
                    session.offline_counter += 1;
                }
            }
            if session.online {
                effects.push(Effect::Send(Reply {
                    kind: ClientMessageType::Heartbeat,
                    job_id: self.job.id().map(str::to_owned),
                    job_state: Some(self.job.state()),
                }));
            }
        }
        if let Job::Running {
            job_id,
            done_at,
            succeed,
        } = &self.job
            && *done_at <= now
        {
            effects.push(reply(completion(*succeed), Some(job_id.clone())));
            self.job = Job::Idle;
        }
        effects
    }

    /// When [`SimNode::handle_timeout`] next has something to do.
    pub fn next_deadline(&self, behaviour: &Behaviour) -> Option<Instant> {
        match &self.link {
            Link::Fetching => None,
            Link::Backoff { retry_at } => Some(*retry_at),
            Link::Up(s) => {
                let mut at = s.reconfigure_at.min(s.next_beat);
                if !s.proven {
                    at = at.min(s.connected_at + behaviour.command_silence);
                }
                if let Job::Running { done_at, .. } = &self.job {
                    at = at.min(*done_at);
                }
                Some(at)
            }
        }
    }

    /// The wire message for `reply`, sent at `at` (zmq.md §2.7.2). Each call takes the
    /// next sequence number.
    pub fn message(&mut self, reply: &Reply, at: DateTime<Utc>) -> ClientMessage {
        self.sequence += 1;
        ClientMessage {
            node: self.name.clone(),
            // The machine's host name in the real agent; each simulated node is its own
            // machine.
            client: self.name.clone(),
            protocol_version: Some("2.0".into()),
            org: self.org.clone(),
            kind: reply.kind,
            sequence: self.sequence,
            timestamp: at,
            incarnation_id: self.incarnation.clone(),
            job_state: reply.job_state.map(str::to_owned),
            // Always present, `null` when idle (zmq.md §2.7.2).
            job_id: reply.job_id.clone().map_or(JobRef::None, JobRef::Id),
            stdout: None,
            stderr: None,
            output_truncated: false,
        }
    }
}

fn reply(kind: ClientMessageType, job_id: Option<String>) -> Effect {
    Effect::Send(Reply {
        kind,
        job_id,
        job_state: None,
    })
}

fn completion(succeed: bool) -> ClientMessageType {
    if succeed {
        ClientMessageType::Succeeded
    } else {
        ClientMessageType::Failed
    }
}

#[cfg(test)]
mod tests;
