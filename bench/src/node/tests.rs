//! The simulated node against zmq.md's client rules, on a virtual clock.

use std::time::{Duration, Instant};

use pushy_protocol::message::{ClientMessageType as T, JobRef};
use rand::SeedableRng as _;
use rand::rngs::StdRng;

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
        online_threshold: 2,
        lifetime: Duration::from_secs(3600),
        server_incarnation: incarnation.into(),
    }
}

impl Rig {
    fn new(behaviour: Behaviour) -> Rig {
        Rig {
            node: SimNode::new("node7".into(), "acme".into(), "inc-1".into()),
            behaviour,
            rng: StdRng::seed_from_u64(42),
            now: Instant::now(),
        }
    }

    /// A node that fetched, connected, sent its first heartbeat and got the server's
    /// first `abort` on the DEALER.
    fn connected(behaviour: Behaviour) -> Rig {
        let mut r = Rig::new(behaviour);
        assert_eq!(r.node.start(), vec![Effect::Fetch]);
        assert_eq!(r.config("srv-1"), vec![Effect::Connect]);
        let first = r.tick();
        assert_eq!(kinds(&first), vec![T::Heartbeat]);
        r.now += Duration::from_millis(30);
        let answer = r.command(ServerMsg::Abort);
        assert_eq!(
            answer[0],
            Effect::Proven {
                after: Duration::from_millis(30)
            }
        );
        assert_eq!(kinds(&answer), vec![T::Aborted]);
        r
    }

    fn fetch_failed(&mut self) {
        let now = self.now;
        let mut env = Env {
            behaviour: &self.behaviour,
            rng: &mut self.rng,
        };
        self.node.handle_fetch_failed(now, &mut env);
    }

    fn send_failed(&mut self) {
        let now = self.now;
        let mut env = Env {
            behaviour: &self.behaviour,
            rng: &mut self.rng,
        };
        self.node.handle_send_failed(now, &mut env);
    }

    fn config(&mut self, incarnation: &str) -> Vec<Effect> {
        let now = self.now;
        let mut env = Env {
            behaviour: &self.behaviour,
            rng: &mut self.rng,
        };
        self.node.handle_config(now, params(incarnation), &mut env)
    }

    fn command(&mut self, msg: ServerMsg) -> Vec<Effect> {
        let now = self.now;
        let mut env = Env {
            behaviour: &self.behaviour,
            rng: &mut self.rng,
        };
        self.node.handle_message(now, msg, true, &mut env)
    }

    fn server_heartbeat(&mut self, incarnation: &str) -> Vec<Effect> {
        let now = self.now;
        let mut env = Env {
            behaviour: &self.behaviour,
            rng: &mut self.rng,
        };
        let msg = ServerMsg::Heartbeat {
            incarnation: Some(incarnation.into()),
        };
        self.node.handle_message(now, msg, false, &mut env)
    }

    fn tick(&mut self) -> Vec<Effect> {
        let now = self.now;
        let mut env = Env {
            behaviour: &self.behaviour,
            rng: &mut self.rng,
        };
        self.node.handle_timeout(now, &mut env)
    }

    /// Advances the clock to each deadline up to `until`, collecting effects.
    fn run_until(&mut self, until: Instant) -> Vec<Effect> {
        let mut all = Vec::new();
        while let Some(at) = self.node.next_deadline(&self.behaviour) {
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

fn kinds(effects: &[Effect]) -> Vec<T> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(r) => Some(r.kind),
            _ => None,
        })
        .collect()
}

fn sent(effects: &[Effect], kind: T) -> Vec<Reply> {
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
fn first_heartbeat_goes_out_at_once_then_every_interval() {
    let mut r = Rig::connected(Behaviour::default());
    let start = r.now;
    // Server heartbeats keep it online.
    let mut beats = 0;
    for i in 1..=5 {
        beats += sent(&r.run_until(start + 10 * SECOND * i), T::Heartbeat).len();
        r.server_heartbeat("srv-1");
    }
    assert_eq!(beats, 5);
}

#[test]
fn heartbeats_report_the_job() {
    let mut r = Rig::connected(Behaviour::default());
    r.command(ServerMsg::Commit { job_id: job("j1") });
    r.now += 10 * SECOND;
    let beat = sent(&r.tick(), T::Heartbeat).remove(0);
    assert_eq!(beat.job_id, job("j1"));
    assert_eq!(beat.job_state, Some("committed"));
}

#[test]
fn commit_run_succeed_at_once_without_a_delay() {
    let mut r = Rig::connected(Behaviour::default());
    let commit = r.command(ServerMsg::Commit { job_id: job("j1") });
    assert_eq!(kinds(&commit), vec![T::AckCommit]);
    let run = r.command(ServerMsg::Run { job_id: job("j1") });
    assert_eq!(kinds(&run), vec![T::AckRun, T::Succeeded]);
    assert_eq!(sent(&run, T::Succeeded)[0].job_id, job("j1"));
    // Idle again: the next commit is accepted.
    let next = r.command(ServerMsg::Commit { job_id: job("j2") });
    assert_eq!(kinds(&next), vec![T::AckCommit]);
}

#[test]
fn run_delay_holds_the_completion() {
    let mut r = Rig::connected(Behaviour {
        run_delay: 5 * SECOND,
        ..Behaviour::default()
    });
    r.command(ServerMsg::Commit { job_id: job("j1") });
    assert_eq!(
        kinds(&r.command(ServerMsg::Run { job_id: job("j1") })),
        vec![T::AckRun]
    );
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
    let nack = r.command(ServerMsg::Commit { job_id: job("j1") });
    assert_eq!(sent(&nack, T::NackCommit)[0].job_id, job("j1"));

    let mut r = Rig::connected(Behaviour {
        run_fail_rate: 1.0,
        ..Behaviour::default()
    });
    r.command(ServerMsg::Commit { job_id: job("j1") });
    let run = r.command(ServerMsg::Run { job_id: job("j1") });
    assert_eq!(kinds(&run), vec![T::AckRun, T::Failed]);
}

#[test]
fn a_busy_node_nacks_a_second_commit() {
    let mut r = Rig::connected(Behaviour::default());
    r.command(ServerMsg::Commit { job_id: job("j1") });
    let second = r.command(ServerMsg::Commit { job_id: job("j2") });
    assert_eq!(sent(&second, T::NackCommit)[0].job_id, job("j2"));
}

#[test]
fn commit_without_a_job_id_is_nacked_with_null() {
    let mut r = Rig::connected(Behaviour::default());
    let nack = r.command(ServerMsg::Commit { job_id: None });
    assert_eq!(sent(&nack, T::NackCommit)[0].job_id, None);
}

#[test]
fn run_for_another_job_is_nacked() {
    let mut r = Rig::connected(Behaviour::default());
    assert_eq!(
        kinds(&r.command(ServerMsg::Run { job_id: job("j1") })),
        vec![T::NackRun]
    );
    r.command(ServerMsg::Commit { job_id: job("j1") });
    let other = r.command(ServerMsg::Run { job_id: job("j2") });
    assert_eq!(sent(&other, T::NackRun)[0].job_id, job("j2"));
}

#[test]
fn abort_answers_with_the_job_it_had_and_cancels_the_completion() {
    let mut r = Rig::connected(Behaviour {
        run_delay: 5 * SECOND,
        ..Behaviour::default()
    });
    r.command(ServerMsg::Commit { job_id: job("j1") });
    r.command(ServerMsg::Run { job_id: job("j1") });
    let aborted = r.command(ServerMsg::Abort);
    assert_eq!(sent(&aborted, T::Aborted)[0].job_id, job("j1"));
    let start = r.now;
    let later = r.run_until(start + 10 * SECOND);
    assert!(sent(&later, T::Succeeded).is_empty());
    // And when idle, `aborted` carries null.
    assert_eq!(
        sent(&r.command(ServerMsg::Abort), T::Aborted)[0].job_id,
        None
    );
}

#[test]
fn only_the_first_command_message_proves_the_channel() {
    let mut r = Rig::connected(Behaviour::default());
    assert!(r.node.is_proven());
    let again = r.command(ServerMsg::Ack);
    assert!(!again.iter().any(|e| matches!(e, Effect::Proven { .. })));
}

#[test]
fn new_server_incarnation_reconfigures_within_the_splay() {
    let mut r = Rig::connected(Behaviour {
        splay: Some(2 * SECOND),
        ..Behaviour::default()
    });
    r.server_heartbeat("srv-1");
    assert!(r.node.next_deadline(&r.behaviour).unwrap() > r.now + 2 * SECOND);
    r.server_heartbeat("srv-2");
    let start = r.now;
    let effects = r.run_until(start + 2 * SECOND);
    assert_eq!(
        &effects[..2],
        &[
            Effect::Disconnect {
                reason: Reason::ServerRestart,
                proven: true
            },
            Effect::Fetch
        ]
    );
    assert!(!r.node.is_up());
}

#[test]
fn splay_defaults_to_the_heartbeat_interval() {
    let mut r = Rig::connected(Behaviour::default());
    r.server_heartbeat("srv-2");
    let at = r.node.next_deadline(&r.behaviour).unwrap();
    assert!(at <= r.now + 10 * SECOND);
    let start = r.now;
    let effects = r.run_until(start + 10 * SECOND);
    assert!(effects.contains(&Effect::Fetch));
}

#[test]
fn silent_server_stops_heartbeats_and_reconfigures() {
    let mut r = Rig::connected(Behaviour {
        splay: Some(SECOND),
        ..Behaviour::default()
    });
    let start = r.now;
    // No server heartbeats at all: the ticks at 0..30 s count up past the threshold (3,
    // checked before counting), the tick at 40 s finds 4 > 3 and gives up (zmq.md §3.2).
    let effects = r.run_until(start + 39 * SECOND);
    assert_eq!(sent(&effects, T::Heartbeat).len(), 3);
    assert!(r.node.is_up());
    let effects = r.run_until(start + 42 * SECOND);
    assert!(sent(&effects, T::Heartbeat).is_empty());
    assert!(effects.contains(&Effect::Disconnect {
        reason: Reason::ServerOffline,
        proven: true
    }));
}

#[test]
fn a_channel_silent_after_connecting_reconfigures_after_three_seconds() {
    let mut r = Rig::new(Behaviour::default());
    r.node.start();
    r.config("srv-1");
    let start = r.now;
    let effects = r.run_until(start + 2 * SECOND);
    assert_eq!(kinds(&effects), vec![T::Heartbeat]);
    let effects = r.run_until(start + 3 * SECOND);
    assert_eq!(
        effects,
        vec![
            Effect::Disconnect {
                reason: Reason::SilentChannel,
                proven: false
            },
            Effect::Fetch
        ]
    );
}

#[test]
fn a_refused_send_reconfigures_within_a_minute() {
    let mut r = Rig::connected(Behaviour::default());
    r.send_failed();
    let start = r.now;
    let mut effects = Vec::new();
    for i in 1..=6 {
        r.server_heartbeat("srv-1");
        effects.extend(r.run_until(start + 10 * SECOND * i));
    }
    assert!(effects.contains(&Effect::Disconnect {
        reason: Reason::SendFailure,
        proven: true
    }));
}

#[test]
fn failed_fetches_back_off_then_retry() {
    let mut r = Rig::new(Behaviour::default());
    r.node.start();
    r.fetch_failed();
    let first = r.node.next_deadline(&r.behaviour).unwrap() - r.now;
    assert!(first <= SECOND);
    assert_eq!(r.run_until(r.now + SECOND), vec![Effect::Fetch]);
    r.fetch_failed();
    r.fetch_failed();
    let third = r.node.next_deadline(&r.behaviour).unwrap() - r.now;
    assert!(third > 3 * SECOND && third <= 4 * SECOND, "{third:?}");
}

#[test]
fn the_job_survives_a_reconfigure_and_finishes_on_the_new_connection() {
    let mut r = Rig::connected(Behaviour {
        run_delay: 5 * SECOND,
        splay: Some(SECOND),
        ..Behaviour::default()
    });
    r.command(ServerMsg::Commit { job_id: job("j1") });
    r.command(ServerMsg::Run { job_id: job("j1") });
    r.server_heartbeat("srv-2");
    let start = r.now;
    let effects = r.run_until(start + 2 * SECOND);
    assert!(effects.contains(&Effect::Fetch));
    // The completion comes due while the node has no sockets: it waits.
    r.now = start + 10 * SECOND;
    assert!(r.node.next_deadline(&r.behaviour).is_none());
    assert_eq!(r.config("srv-2"), vec![Effect::Connect]);
    let effects = r.tick();
    assert_eq!(kinds(&effects), vec![T::Heartbeat, T::Succeeded]);
    assert_eq!(sent(&effects, T::Heartbeat)[0].job_state, Some("running"));
}

#[test]
fn messages_carry_identity_and_count_up() {
    let mut r = Rig::connected(Behaviour::default());
    let at = chrono::Utc::now();
    let reply = Reply {
        kind: T::Heartbeat,
        job_id: None,
        job_state: Some("idle"),
    };
    let a = r.node.message(&reply, at);
    let b = r.node.message(&reply, at);
    assert_eq!(
        (a.node.as_str(), a.org.as_str(), a.incarnation_id.as_str()),
        ("node7", "acme", "inc-1")
    );
    assert_eq!(a.job_id, JobRef::None);
    assert_eq!(a.protocol_version.as_deref(), Some("2.0"));
    assert_eq!(b.sequence, a.sequence + 1);
    let body: serde_json::Value = serde_json::from_slice(&a.to_body()).unwrap();
    assert_eq!(body["job_id"], serde_json::Value::Null);
    assert_eq!(body["job_state"], "idle");
}
