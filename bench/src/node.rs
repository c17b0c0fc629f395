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
use pushy_client::runner::live::{Bounds, Chunker, LiveChunk, Stream as LiveStream};

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
    /// Printing lines, streamed as the real agent streams them (issue 15 §2).
    output: Option<PretendOutput>,
}

/// A pretend command's output: `rate` lines a second since `started`, through the real
/// agent's chunker.
struct PretendOutput {
    started: Instant,
    rate: u32,
    printed: u64,
    chunker: Chunker,
    /// When it next prints and polls (the agent's runner ticks as often).
    next_tick: Instant,
}

/// How often a pretend command's output is looked at, as the agent's runner does.
const OUTPUT_TICK: std::time::Duration = std::time::Duration::from_millis(250);

impl PretendOutput {
    /// Prints the lines due by `now`; the chunk due then, if any.
    fn tick(&mut self, node: &str, now: Instant) -> Option<LiveChunk> {
        let due = (now.saturating_duration_since(self.started).as_secs_f64() * f64::from(self.rate))
            as u64;
        while self.printed < due {
            self.printed += 1;
            let line = format!("{node}: line {} of the pretend command\n", self.printed);
            self.chunker.push(LiveStream::Out, line.as_bytes());
        }
        self.next_tick = now + OUTPUT_TICK;
        self.chunker.poll(now)
    }
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
        let name = self.node.name().to_owned();
        if let Some(job) = self.job.as_mut()
            && let Some(out) = job.output.as_mut()
        {
            let chunk = if job.done_at <= now {
                out.tick(&name, job.done_at);
                out.chunker.finish(now)
            } else if out.next_tick <= now {
                out.tick(&name, now)
            } else {
                None
            };
            if let Some(chunk) = chunk {
                let job_id = job.job_id.clone();
                effects.extend(self.node.handle(now, Input::Output { job_id, chunk }));
            }
        }
        if self.job.as_ref().is_some_and(|j| j.done_at <= now)
            && let Some(job) = self.job.take()
        {
            effects.extend(self.node.handle(now, finished(job.job_id, job.ok)));
        }
        self.resolve(now, effects, env)
    }

    /// When [`SimNode::handle_timeout`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let job = self.job.as_ref().map(|j| {
            j.output
                .as_ref()
                .map_or(j.done_at, |o| o.next_tick.min(j.done_at))
        });
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
                Effect::Start {
                    job_id,
                    live_output,
                } => {
                    let ok = !behaviour::roll(env.behaviour.run_fail_rate, env.rng);
                    if env.behaviour.run_delay.is_zero() {
                        self.node.handle(now, finished(job_id, ok))
                    } else {
                        let output =
                            (live_output && env.behaviour.output_rate > 0).then(|| PretendOutput {
                                started: now,
                                rate: env.behaviour.output_rate,
                                printed: 0,
                                chunker: Chunker::new(Bounds::for_body(behaviour::MAX_BODY)),
                                next_tick: now + OUTPUT_TICK,
                            });
                        self.job = Some(Pretend {
                            job_id,
                            done_at: now + env.behaviour.run_delay,
                            ok,
                            output,
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
