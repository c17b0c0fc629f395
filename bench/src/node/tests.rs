//! The simulated node: the agent's machine (whose own rules are tested next to it, in
//! client/src/agent/machine/tests.rs) answered by the bench's behaviours, on a virtual
//! clock.

use std::time::{Duration, Instant};

use pushy_protocol::message::{ClientMessageType as T, Received, ServerMessage};
use rand::SeedableRng as _;
use rand::rngs::{SmallRng, StdRng};

use super::*;

const SECOND: Duration = Duration::from_secs(1);

/// A node and its world: behaviour, seeded RNG, virtual clock.
struct Rig {
    node: SimNode,
    behaviour: Behaviour,
    rng: StdRng,
    now: Instant,
}

fn params(incarnation: &str) -> SessionParams {
    SessionParams {
        interval: Duration::from_secs(10),
        offline_threshold: 3,
        lifetime: Duration::from_secs(3600),
        server_incarnation: incarnation.into(),
        curve: true,
        max_body: behaviour::MAX_BODY,
    }
}

impl Rig {
    /// A node that fetched, connected, sent its first heartbeat and got the server's
    /// first `abort` on the DEALER.
    fn connected(behaviour: Behaviour) -> Rig {
        let node = SimNode::new(
            "node7".into(),
            "acme".into(),
            "inc-1".into(),
            &behaviour,
            SmallRng::seed_from_u64(1),
        );
        let mut r = Rig {
            node,
            behaviour,
            rng: StdRng::seed_from_u64(42),
            now: Instant::now(),
        };
        assert_eq!(r.node.start(), vec![Effect::Fetch]);
        assert_eq!(
            r.input(Input::Configured(params("srv-1"))),
            vec![Effect::Connect]
        );
        assert_eq!(kinds(&r.tick()), vec![T::Heartbeat]);
        r.now += Duration::from_millis(30);
        let answer = r.command(ServerMessage::Abort);
        assert_eq!(
            answer[0],
            Effect::Proven {
                after: Duration::from_millis(30)
            }
        );
        assert_eq!(kinds(&answer), vec![T::Aborted]);
        r
    }

    fn input(&mut self, input: Input) -> Vec<Effect> {
        let mut env = Env {
            behaviour: &self.behaviour,
            rng: &mut self.rng,
        };
        self.node.handle(self.now, input, &mut env)
    }

    fn command(&mut self, msg: ServerMessage) -> Vec<Effect> {
        self.input(Input::Server {
            received: Received::Message(msg),
            via_command: true,
        })
    }

    fn tick(&mut self) -> Vec<Effect> {
        let mut env = Env {
            behaviour: &self.behaviour,
            rng: &mut self.rng,
        };
        self.node.handle_timeout(self.now, &mut env)
    }

    /// Advances the clock to each deadline up to `until`, collecting effects.
    fn run_until(&mut self, until: Instant) -> Vec<Effect> {
        let mut all = Vec::new();
        while let Some(at) = self.node.next_deadline() {
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            all.extend(self.tick());
        }
        self.now = until;
        all
    }
}

fn commit(job_id: &str) -> ServerMessage {
    ServerMessage::Commit {
        job_id: job_id.into(),
        server: "push.example.com".into(),
        command: "chef-client".into(),
        options: Default::default(),
    }
}

fn run(job_id: &str) -> ServerMessage {
    ServerMessage::Run {
        job_id: job_id.into(),
        live_output: false,
    }
}

fn kinds(effects: &[Effect]) -> Vec<T> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(r) => Some(r.kind),
            _ => None,
        })
        .collect()
}

fn sent(effects: &[Effect], kind: T) -> Vec<Outgoing> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(r) if r.kind == kind => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn job(id: &str) -> Option<String> {
    Some(id.to_owned())
}

#[test]
fn only_io_reaches_the_driver() {
    let mut r = Rig::connected(Behaviour {
        run_delay: SECOND,
        ..Behaviour::default()
    });
    let mut effects = r.command(commit("j1"));
    effects.extend(r.command(run("j1")));
    effects.extend(r.run_until(r.now + 2 * SECOND));
    effects.extend(r.command(ServerMessage::Abort));
    assert!(
        effects
            .iter()
            .all(|e| matches!(e, Effect::Send(_) | Effect::Proven { .. })),
        "{effects:?}"
    );
}

#[test]
fn commit_run_succeed_at_once_without_a_delay() {
    let mut r = Rig::connected(Behaviour::default());
    let commit = r.command(commit("j1"));
    assert_eq!(kinds(&commit), vec![T::AckCommit]);
    let run = r.command(run("j1"));
    assert_eq!(kinds(&run), vec![T::AckRun, T::Succeeded]);
    assert_eq!(sent(&run, T::Succeeded)[0].job_id, job("j1"));
    // Idle again: the next commit is accepted.
    let next = r.command(self::commit("j2"));
    assert_eq!(kinds(&next), vec![T::AckCommit]);
}

#[test]
fn run_delay_holds_the_completion() {
    let mut r = Rig::connected(Behaviour {
        run_delay: 5 * SECOND,
        ..Behaviour::default()
    });
    r.command(commit("j1"));
    assert_eq!(kinds(&r.command(run("j1"))), vec![T::AckRun]);
    let start = r.now;
    assert!(sent(&r.run_until(start + 4 * SECOND), T::Succeeded).is_empty());
    let done = sent(&r.run_until(start + 6 * SECOND), T::Succeeded);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].job_id, job("j1"));
}

#[test]
fn failure_rates_of_one_nack_every_commit_and_fail_every_run() {
    let mut r = Rig::connected(Behaviour {
        commit_fail_rate: 1.0,
        ..Behaviour::default()
    });
    let nack = r.command(commit("j1"));
    assert_eq!(sent(&nack, T::NackCommit)[0].job_id, job("j1"));

    let mut r = Rig::connected(Behaviour {
        run_fail_rate: 1.0,
        ..Behaviour::default()
    });
    r.command(commit("j1"));
    let run = r.command(run("j1"));
    assert_eq!(kinds(&run), vec![T::AckRun, T::Failed]);
}

#[test]
fn abort_answers_with_the_job_it_had_and_cancels_the_completion() {
    let mut r = Rig::connected(Behaviour {
        run_delay: 5 * SECOND,
        ..Behaviour::default()
    });
    r.command(commit("j1"));
    r.command(run("j1"));
    let aborted = r.command(ServerMessage::Abort);
    assert_eq!(sent(&aborted, T::Aborted)[0].job_id, job("j1"));
    let start = r.now;
    let later = r.run_until(start + 10 * SECOND);
    assert!(sent(&later, T::Succeeded).is_empty());
    // And when idle, `aborted` carries null.
    assert_eq!(
        sent(&r.command(ServerMessage::Abort), T::Aborted)[0].job_id,
        None
    );
}
