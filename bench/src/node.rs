//! One simulated node: the real agent's machine (`pushy_client::agent::machine`, the one
//! `push-jobs-client` runs) with a pretend command in place of a process. No sockets, no
//! clock, no JSON: the shard driver (`shard.rs`) feeds it configs, verified server
//! messages and timeouts, each with an explicit `now`, and carries out the I/O
//! [`Effect`]s it returns (fetch, connect, disconnect, send).
//!
//! What the machine asks of a driver that is not I/O is answered here, from the run's
//! [`Behaviour`]: whether a command is accepted (`commit_fail_rate`), whether it succeeds
//! (`run_fail_rate`) and how long it "runs" (`run_delay`). Not simulated: whitelists,
//! users, directories, files, locks and output capture.

use std::time::Instant;

use chrono::{DateTime, Utc};
use pushy_client::agent::machine::{Finished, Identity, Node, Timings};
use pushy_protocol::message::ClientMessage;
use rand::RngCore;
use rand::rngs::SmallRng;

use crate::behaviour::{self, Behaviour};

pub use pushy_client::agent::machine::{Effect, Input, Outgoing, Reason, SessionParams};

/// What a node is given to decide with: the shared knobs and the shard's RNG.
pub struct Env<'a> {
    /// The run's behaviour.
    pub behaviour: &'a Behaviour,
    /// The shard's random source.
    pub rng: &'a mut dyn RngCore,
}

/// The pretend command of a running job.
struct Pretend {
    job_id: String,
    done_at: Instant,
    ok: bool,
}

/// One simulated node.
pub struct SimNode {
    node: Node,
    job: Option<Pretend>,
}

impl SimNode {
    /// A node about to fetch its first config. `incarnation` is its process id on the
    /// wire: one per simulated process, kept across reconfigures. Each simulated node is
    /// its own machine, so its host name is its name. `rng` seeds the machine's own
    /// random choices (splay, jitter).
    pub fn new(
        name: String,
        org: String,
        incarnation: String,
        behaviour: &Behaviour,
        rng: SmallRng,
    ) -> SimNode {
        let identity = Identity {
            client: name.clone(),
            node: name,
            org,
            incarnation,
        };
        let timings = Timings {
            splay: behaviour.splay,
            ..Timings::default()
        };
        SimNode {
            node: Node::new(identity, timings, behaviour::MAX_BODY, rng),
            job: None,
        }
    }

    /// The node name.
    pub fn name(&self) -> &str {
        self.node.name()
    }

    /// Whether its sockets are open.
    pub fn is_up(&self) -> bool {
        self.node.is_up()
    }

    /// Starts the node: its first fetch.
    pub fn start(&mut self) -> Vec<Effect> {
        self.node.start()
    }

    /// Feeds the machine one input; returns the I/O effects for the driver.
    pub fn handle(&mut self, now: Instant, input: Input, env: &mut Env<'_>) -> Vec<Effect> {
        let effects = self.node.handle(now, input);
        self.resolve(now, effects, env)
    }

    /// Timers: the machine's, and the pretend command's end.
    pub fn handle_timeout(&mut self, now: Instant, env: &mut Env<'_>) -> Vec<Effect> {
        let mut effects = self.node.handle_timeout(now);
        if self.job.as_ref().is_some_and(|j| j.done_at <= now)
            && let Some(job) = self.job.take()
        {
            effects.extend(self.node.handle(now, finished(job.job_id, job.ok)));
        }
        self.resolve(now, effects, env)
    }

    /// When [`SimNode::handle_timeout`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let job = self.job.as_ref().map(|j| j.done_at);
        match (self.node.next_deadline(), job) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The wire message for `out`, sent at `at` (the machine numbers it).
    pub fn message(&mut self, out: &Outgoing, at: DateTime<Utc>) -> ClientMessage {
        self.node.message(out, at)
    }

    /// Answers the machine's vet, start and abandon effects in place; the rest is I/O.
    fn resolve(&mut self, now: Instant, effects: Vec<Effect>, env: &mut Env<'_>) -> Vec<Effect> {
        let mut io = Vec::new();
        for effect in effects {
            let answer = match effect {
                Effect::Vet { job_id, .. } => {
                    let accepted = !behaviour::roll(env.behaviour.commit_fail_rate, env.rng);
                    self.node.handle(now, Input::Vetted { job_id, accepted })
                }
                Effect::Start { job_id, .. } => {
                    let ok = !behaviour::roll(env.behaviour.run_fail_rate, env.rng);
                    if env.behaviour.run_delay.is_zero() {
                        self.node.handle(now, finished(job_id, ok))
                    } else {
                        self.job = Some(Pretend {
                            job_id,
                            done_at: now + env.behaviour.run_delay,
                            ok,
                        });
                        Vec::new()
                    }
                }
                Effect::Abandon { job_id } => {
                    self.job.take_if(|j| j.job_id == job_id);
                    Vec::new()
                }
                other => {
                    io.push(other);
                    continue;
                }
            };
            io.extend(self.resolve(now, answer, env));
        }
        io
    }
}

fn finished(job_id: String, ok: bool) -> Input {
    Input::Finished(Finished {
        job_id,
        ok,
        output: None,
    })
}

/// The parameters of a fetched config, as the agent takes them.
pub fn session_params(config: &pushy_client::fetch::ServerConfig) -> SessionParams {
    pushy_client::agent::session_params(config, behaviour::MAX_BODY)
}

#[cfg(test)]
mod tests;
