//! The agent's lifecycle rules (zmq.md §3.2–3.6, §6.3–6.4, §6.9, issue 12) on a virtual
//! clock, without sockets.

use std::time::{Duration, Instant};

use pushy_protocol::message::{ClientMessageType as T, JobRef};
use rand::SeedableRng as _;

use super::*;
use crate::runner::live::LiveChunk;

const SECOND: Duration = Duration::from_secs(1);
const INTERVAL: Duration = Duration::from_secs(10);

/// A node on a virtual clock.
struct Rig {
    node: Node,
    now: Instant,
}

fn params(incarnation: &str) -> SessionParams {
    SessionParams {
        interval: INTERVAL,
        offline_threshold: 3,
        lifetime: Duration::from_secs(3600),
        server_incarnation: incarnation.into(),
        curve: true,
        max_body: 63_000,
    }
}

fn identity() -> Identity {
    Identity {
        node: "node7".into(),
        client: "host7".into(),
        org: "acme".into(),
        incarnation: "inc-1".into(),
    }
}

impl Rig {
    fn new(timings: Timings) -> Rig {
        Rig {
            node: Node::new(identity(), timings, 63_000, SmallRng::seed_from_u64(42)),
            now: Instant::now(),
        }
    }

    /// A node that fetched, connected, sent its first heartbeat and got the server's
    /// first `abort` on the DEALER.
    fn connected(timings: Timings) -> Rig {
        let mut r = Rig::new(timings);
        assert_eq!(r.node.start(), vec![Effect::Fetch]);
        assert_eq!(r.config("srv-1"), vec![Effect::Connect]);
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
        self.node.handle(self.now, input)
    }

    fn config(&mut self, incarnation: &str) -> Vec<Effect> {
        self.input(Input::Configured(params(incarnation)))
    }

    fn command(&mut self, msg: ServerMessage) -> Vec<Effect> {
        self.received(Received::Message(msg), true)
    }

    fn received(&mut self, received: Received, via_command: bool) -> Vec<Effect> {
        self.input(Input::Server {
            received,
            via_command,
        })
    }

    fn server_heartbeat(&mut self, incarnation: &str) -> Vec<Effect> {
        let msg = ServerMessage::Heartbeat {
            server: "pushhost".into(),
            incarnation_id: incarnation.into(),
        };
        self.received(Received::Message(msg), false)
    }

    /// `commit`, answered by a driver that accepts (or refuses) every command.
    fn commit(&mut self, job_id: &str, accept: bool) -> Vec<Effect> {
        let mut effects = self.command(commit(job_id));
        if effects.iter().any(|e| matches!(e, Effect::Vet { .. })) {
            effects.extend(self.input(Input::Vetted {
                job_id: job_id.into(),
                accepted: accept,
            }));
        }
        effects
    }

    fn finish(&mut self, job_id: &str, ok: bool) -> Vec<Effect> {
        self.input(Input::Finished(Finished {
            job_id: job_id.into(),
            ok,
            output: None,
        }))
    }

    fn tick(&mut self) -> Vec<Effect> {
        self.node.handle_timeout(self.now)
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
        options: CommitOptions::default(),
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
fn first_heartbeat_goes_out_at_once_then_every_interval() {
    let mut r = Rig::connected(Timings::default());
    let start = r.now;
    // Server heartbeats keep it online.
    let mut beats = 0;
    for i in 1..=5 {
        beats += sent(&r.run_until(start + INTERVAL * i), T::Heartbeat).len();
        r.server_heartbeat("srv-1");
    }
    assert_eq!(beats, 5);
}

#[test]
fn heartbeats_report_the_job() {
    let mut r = Rig::connected(Timings::default());
    r.commit("j1", true);
    r.now += INTERVAL;
    let beat = sent(&r.tick(), T::Heartbeat).remove(0);
    assert_eq!(beat.job_id, job("j1"));
    assert_eq!(beat.job_state, Some("committed"));
}

#[test]
fn commit_is_vetted_then_acked_and_run_starts_the_command() {
    let mut r = Rig::connected(Timings::default());
    let vet = r.command(commit("j1"));
    assert_eq!(
        vet,
        vec![Effect::Vet {
            job_id: "j1".into(),
            command: "chef-client".into(),
            options: CommitOptions::default()
        }]
    );
    let ack = r.input(Input::Vetted {
        job_id: "j1".into(),
        accepted: true,
    });
    assert_eq!(kinds(&ack), vec![T::AckCommit]);
    let started = r.command(run("j1"));
    assert_eq!(
        started,
        vec![
            send(T::AckRun, job("j1")),
            Effect::Start {
                job_id: "j1".into(),
                live_output: false,
            }
        ]
    );
    let done = r.finish("j1", true);
    assert_eq!(sent(&done, T::Succeeded)[0].job_id, job("j1"));
    // Idle again: the next commit is vetted.
    assert_eq!(kinds(&r.commit("j2", true)), vec![T::AckCommit]);
}

#[test]
fn a_refused_commit_is_nacked_and_leaves_the_node_idle() {
    let mut r = Rig::connected(Timings::default());
    let nack = r.commit("j1", false);
    assert_eq!(sent(&nack, T::NackCommit)[0].job_id, job("j1"));
    assert_eq!(kinds(&r.commit("j2", true)), vec![T::AckCommit]);
}

#[test]
fn a_failed_command_reports_failed() {
    let mut r = Rig::connected(Timings::default());
    r.commit("j1", true);
    r.command(run("j1"));
    assert_eq!(kinds(&r.finish("j1", false)), vec![T::Failed]);
}

#[test]
fn a_busy_node_nacks_a_second_commit() {
    let mut r = Rig::connected(Timings::default());
    r.commit("j1", true);
    let second = r.command(commit("j2"));
    assert_eq!(second, vec![send(T::NackCommit, job("j2"))]);
}

#[test]
fn incomplete_commits_and_runs_are_refused() {
    let mut r = Rig::connected(Timings::default());
    let nack = r.received(
        Received::IncompleteCommit {
            job_id: None,
            missing: "job_id",
        },
        true,
    );
    assert_eq!(nack, vec![send(T::NackCommit, None)]);
    // Fixes zmq.md §6.3: a commit without `command` is refused naming its job.
    let nack = r.received(
        Received::IncompleteCommit {
            job_id: job("j1"),
            missing: "command",
        },
        true,
    );
    assert_eq!(nack, vec![send(T::NackCommit, job("j1"))]);
    assert_eq!(
        r.received(Received::IncompleteRun, true),
        vec![send(T::NackRun, None)]
    );
}

#[test]
fn run_for_another_job_is_nacked() {
    let mut r = Rig::connected(Timings::default());
    assert_eq!(kinds(&r.command(run("j1"))), vec![T::NackRun]);
    r.commit("j1", true);
    let other = r.command(run("j2"));
    assert_eq!(other, vec![send(T::NackRun, job("j2"))]);
}

#[test]
fn abort_abandons_the_job_answers_with_it_and_drops_its_result() {
    let mut r = Rig::connected(Timings::default());
    r.commit("j1", true);
    r.command(run("j1"));
    let aborted = r.command(ServerMessage::Abort);
    assert_eq!(
        aborted,
        vec![
            Effect::Abandon {
                job_id: "j1".into()
            },
            send(T::Aborted, job("j1"))
        ]
    );
    // The killed command's end is not reported.
    assert!(r.finish("j1", false).is_empty());
    // And when idle, `aborted` carries null.
    assert_eq!(
        r.command(ServerMessage::Abort),
        vec![send(T::Aborted, None)]
    );
}

#[test]
fn abort_while_a_commit_is_vetted_releases_what_the_vetting_took() {
    let mut r = Rig::connected(Timings::default());
    r.command(commit("j1"));
    assert_eq!(
        r.command(ServerMessage::Abort),
        vec![send(T::Aborted, None)]
    );
    let late = r.input(Input::Vetted {
        job_id: "j1".into(),
        accepted: true,
    });
    assert_eq!(
        late,
        vec![Effect::Abandon {
            job_id: "j1".into()
        }]
    );
}

#[test]
fn only_the_first_command_message_proves_the_channel() {
    let mut r = Rig::connected(Timings::default());
    assert!(r.node.is_proven());
    let again = r.command(ServerMessage::Ack);
    assert!(again.is_empty());
}

#[test]
fn new_server_incarnation_reconfigures_within_the_splay() {
    let mut r = Rig::connected(Timings {
        splay: Some(2 * SECOND),
        ..Timings::default()
    });
    r.server_heartbeat("srv-1");
    assert!(r.node.next_deadline().unwrap() > r.now + 2 * SECOND);
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
    let mut r = Rig::connected(Timings::default());
    r.server_heartbeat("srv-2");
    let at = r.node.next_deadline().unwrap();
    assert!(at <= r.now + INTERVAL);
    let start = r.now;
    let effects = r.run_until(start + INTERVAL);
    assert!(effects.contains(&Effect::Fetch));
}

#[test]
fn a_heartbeat_without_incarnation_counts_but_reconfigures_nothing() {
    let mut r = Rig::connected(Timings::default());
    let start = r.now;
    for i in 1..=8 {
        let effects = r.run_until(start + INTERVAL * i);
        assert_eq!(kinds(&effects), vec![T::Heartbeat]);
        r.received(Received::HeartbeatWithoutIncarnation, false);
    }
    assert!(r.node.is_up());
}

#[test]
fn silent_server_stops_heartbeats_and_reconfigures_at_once() {
    let mut r = Rig::connected(Timings::default());
    let start = r.now;
    // No server heartbeats at all: the ticks at 0..30 s count up past the threshold (3,
    // checked before counting), the tick at 40 s finds 4 > 3 and gives up (zmq.md §3.2).
    let effects = r.run_until(start + 39 * SECOND);
    assert_eq!(sent(&effects, T::Heartbeat).len(), 3);
    assert!(r.node.is_up());
    let effects = r.run_until(start + 40 * SECOND);
    assert_eq!(
        effects,
        vec![
            Effect::Disconnect {
                reason: Reason::ServerOffline,
                proven: true
            },
            Effect::Fetch
        ]
    );
}

#[test]
fn one_server_heartbeat_resets_the_silence_count() {
    let mut r = Rig::connected(Timings::default());
    let start = r.now;
    // Four silent ticks (0..30 s), then one server heartbeat just before the fifth.
    r.run_until(start + 35 * SECOND);
    r.server_heartbeat("srv-1");
    let effects = r.run_until(start + 75 * SECOND);
    assert_eq!(kinds(&effects), vec![T::Heartbeat; 4]);
    assert!(r.node.is_up());
    let effects = r.run_until(start + 80 * SECOND);
    assert_eq!(
        effects[0],
        Effect::Disconnect {
            reason: Reason::ServerOffline,
            proven: true
        }
    );
}

#[test]
fn a_channel_silent_after_connecting_reconfigures_after_three_seconds() {
    let mut r = Rig::new(Timings::default());
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
fn a_plain_channel_is_never_called_silent() {
    let mut r = Rig::new(Timings::default());
    r.node.start();
    r.input(Input::Configured(SessionParams {
        curve: false,
        ..params("srv-1")
    }));
    let start = r.now;
    let effects = r.run_until(start + 5 * SECOND);
    assert_eq!(kinds(&effects), vec![T::Heartbeat]);
    assert!(r.node.is_up());
}

#[test]
fn a_refused_send_reconfigures_within_a_minute_and_never_later() {
    let mut r = Rig::connected(Timings::default());
    r.input(Input::SendFailed);
    let first = r.node.next_deadline();
    let start = r.now;
    let mut effects = Vec::new();
    for i in 1..=6 {
        r.server_heartbeat("srv-1");
        // Later failures do not postpone it (fixes zmq.md §6.9).
        r.input(Input::SendFailed);
        effects.extend(r.run_until(start + INTERVAL * i));
    }
    assert!(first.is_some());
    assert!(effects.contains(&Effect::Disconnect {
        reason: Reason::SendFailure,
        proven: true
    }));
}

#[test]
fn the_lifetime_reconfigures_within_its_jitter() {
    let mut r = Rig::connected(Timings::default());
    let start = r.now;
    let lifetime = Duration::from_secs(3600);
    let mut effects = Vec::new();
    let mut t = start;
    while t < start + lifetime && effects.is_empty() {
        t += INTERVAL;
        r.server_heartbeat("srv-1");
        effects = r
            .run_until(t)
            .into_iter()
            .filter(|e| !matches!(e, Effect::Send(_)))
            .collect();
    }
    assert!(t > start + lifetime.mul_f64(0.9), "{:?}", t - start);
    assert_eq!(
        effects,
        vec![
            Effect::Disconnect {
                reason: Reason::Lifetime,
                proven: true
            },
            Effect::Fetch
        ]
    );
}

#[test]
fn a_requested_reconfigure_is_immediate() {
    let mut r = Rig::connected(Timings::default());
    assert_eq!(
        r.input(Input::Reconfigure(Reason::Requested)),
        vec![
            Effect::Disconnect {
                reason: Reason::Requested,
                proven: true
            },
            Effect::Fetch
        ]
    );
    // Already fetching: nothing more to do.
    assert!(r.input(Input::Reconfigure(Reason::Requested)).is_empty());
}

#[test]
fn failed_fetches_wait_an_interval_then_back_off_unless_a_result_waits() {
    let mut r = Rig::new(Timings::default());
    r.node.start();
    // No config yet: the longest wait.
    r.input(Input::FetchFailed);
    let wait = r.node.next_deadline().unwrap() - r.now;
    assert!(wait <= 30 * SECOND && wait > 27 * SECOND, "{wait:?}");
    assert_eq!(r.run_until(r.now + 30 * SECOND), vec![Effect::Fetch]);
    // After a config: the interval, then doubling up to 30 s.
    r.config("srv-1");
    r.input(Input::Reconfigure(Reason::Requested));
    for nominal in [10, 20, 30, 30] {
        r.input(Input::FetchFailed);
        let at = r.node.next_deadline().unwrap();
        let wait = at - r.now;
        let nominal = Duration::from_secs(nominal);
        assert!(wait <= nominal && wait > nominal.mul_f64(0.9), "{wait:?}");
        assert_eq!(r.run_until(at), vec![Effect::Fetch]);
    }
}

#[test]
fn a_node_holding_a_result_keeps_retrying_at_the_first_delay() {
    let timings = Timings::default();
    let first = fetch_retry_delay(&timings, None, Some(SECOND), false);
    assert_eq!(first, SECOND);
    let mut d = first;
    for _ in 0..10 {
        d = fetch_retry_delay(&timings, Some(d), Some(SECOND), false);
    }
    assert_eq!(d, timings.fetch_retry_max);
    // A result the server has not acknowledged races the job's run timer.
    assert_eq!(
        fetch_retry_delay(&timings, Some(d), Some(SECOND), true),
        first
    );
    assert_eq!(
        fetch_retry_delay(&timings, None, Some(Duration::from_millis(10)), false),
        timings.fetch_retry_min
    );
}

#[test]
fn the_job_survives_a_reconfigure_and_its_result_goes_first_on_the_new_connection() {
    let mut r = Rig::connected(Timings {
        splay: Some(SECOND),
        ..Timings::default()
    });
    r.commit("j1", true);
    r.command(run("j1"));
    r.server_heartbeat("srv-2");
    let start = r.now;
    let effects = r.run_until(start + 2 * SECOND);
    assert!(effects.contains(&Effect::Fetch));
    // The command ends while the node has no channel: the result waits.
    assert!(r.finish("j1", true).is_empty());
    assert_eq!(r.node.pending_job(), Some("j1"));
    assert!(r.node.next_deadline().is_none());
    let connected = r.config("srv-2");
    assert_eq!(
        connected,
        vec![Effect::Connect, send(T::Succeeded, job("j1"))]
    );
    let beat = sent(&r.tick(), T::Heartbeat).remove(0);
    assert_eq!((beat.job_state, beat.job_id), (Some("idle"), None));
}

#[test]
fn a_result_is_resent_on_each_new_connection_until_acknowledged() {
    let mut r = Rig::connected(Timings::default());
    r.commit("j1", true);
    r.command(run("j1"));
    assert_eq!(kinds(&r.finish("j1", true)), vec![T::Succeeded]);
    // Lost with the old connection: sent again on the new one.
    r.input(Input::Reconfigure(Reason::Requested));
    assert_eq!(kinds(&r.config("srv-1")), vec![T::Succeeded]);
    // A plain `ack` (new routing identity) is not an acknowledgement of the result.
    r.command(ServerMessage::Ack);
    assert_eq!(r.node.pending_job(), Some("j1"));
    r.command(ServerMessage::ResultAck {
        job_id: "j1".into(),
    });
    assert_eq!(r.node.pending_job(), None);
    r.input(Input::Reconfigure(Reason::Requested));
    assert_eq!(r.config("srv-1"), vec![Effect::Connect]);
}

#[test]
fn a_commit_for_another_job_or_an_abort_forgets_the_result() {
    let mut r = Rig::connected(Timings::default());
    r.commit("j1", true);
    r.command(run("j1"));
    r.finish("j1", true);
    r.commit("j2", false);
    assert_eq!(r.node.pending_job(), None);
    r.commit("j3", true);
    r.command(run("j3"));
    r.finish("j3", true);
    r.command(ServerMessage::Abort);
    assert_eq!(r.node.pending_job(), None);
}

#[test]
fn messages_carry_identity_and_count_up() {
    let mut r = Rig::connected(Timings::default());
    let at = chrono::Utc::now();
    let beat = Outgoing {
        kind: T::Heartbeat,
        job_id: None,
        job_state: Some("idle"),
        output: None,
        live: None,
    };
    let a = r.node.message(&beat, at);
    let b = r.node.message(&beat, at);
    assert_eq!(
        (
            a.node.as_str(),
            a.client.as_str(),
            a.org.as_str(),
            a.incarnation_id.as_str()
        ),
        ("node7", "host7", "acme", "inc-1")
    );
    assert_eq!(a.job_id, JobRef::None);
    assert_eq!(a.protocol_version.as_deref(), Some("2.0"));
    assert_eq!(b.sequence, a.sequence + 1);
    let body: serde_json::Value = serde_json::from_slice(&a.to_body()).unwrap();
    assert_eq!(body["job_id"], serde_json::Value::Null);
    assert_eq!(body["job_state"], "idle");
}

fn finished_with(
    r: &mut Rig,
    out: Captured,
    err: Captured,
) -> pushy_protocol::message::ClientMessage {
    r.commit("0123456789abcdef0123456789abcdef", true);
    r.command(run("0123456789abcdef0123456789abcdef"));
    let effects = r.input(Input::Finished(Finished {
        job_id: "0123456789abcdef0123456789abcdef".into(),
        ok: true,
        output: Some((out, err)),
    }));
    let out = sent(&effects, T::Succeeded).remove(0);
    r.node.message(&out, chrono::Utc::now())
}

#[test]
fn fixes_large_output_fills_the_message_instead_of_vanishing() {
    let mut r = Rig::connected(Timings::default());
    let text: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    let out = Captured {
        text,
        truncated: false,
    };
    let err = Captured {
        text: "warning: \"quoted\"\n".into(),
        truncated: false,
    };
    let m = finished_with(&mut r, out, err);
    let len = m.to_body().len();
    assert!((62_950..=63_000).contains(&len), "{len}");
    assert!(m.stdout.as_deref().unwrap().ends_with("\n200000\n"));
    assert_eq!(m.stderr.as_deref(), Some("warning: \"quoted\"\n"));
    assert!(m.output_truncated);
}

#[test]
fn small_output_is_sent_whole() {
    let mut r = Rig::connected(Timings::default());
    let out = Captured {
        text: "\0\u{1}\u{FFFD}\nline2\n".into(),
        truncated: false,
    };
    let m = finished_with(&mut r, out.clone(), Captured::default());
    assert_eq!(m.stdout.as_deref(), Some(out.text.as_str()));
    assert_eq!(m.stderr.as_deref(), Some(""));
    assert!(!m.output_truncated);
}

fn live_chunk(stdout: &str, dropped: u64) -> Input {
    Input::Output {
        job_id: "j1".into(),
        chunk: LiveChunk {
            stdout: Some(stdout.into()),
            stderr: None,
            dropped,
        },
    }
}

#[test]
fn live_output_goes_out_only_while_the_job_runs() {
    let mut r = Rig::connected(Timings::default());
    r.commit("j1", true);
    let live_run = ServerMessage::Run {
        job_id: "j1".into(),
        live_output: true,
    };
    assert_eq!(
        r.command(live_run),
        vec![
            send(T::AckRun, job("j1")),
            Effect::Start {
                job_id: "j1".into(),
                live_output: true,
            }
        ]
    );
    let out = sent(&r.input(live_chunk("1\n", 7)), T::Output).remove(0);
    let m = r.node.message(&out, chrono::Utc::now());
    let body: serde_json::Value = serde_json::from_slice(&m.to_body()).unwrap();
    assert_eq!(body["type"], "output");
    assert_eq!(body["job_id"], "j1");
    assert_eq!(body["stdout"], "1\n");
    assert_eq!(body["dropped"], 7);
    assert_eq!(body["protocol_version"], "2.0");
    for absent in ["stderr", "output_truncated", "job_state"] {
        assert!(body.get(absent).is_none(), "{absent}: {body}");
    }
    // Another job's chunk says nothing.
    let mut other = live_chunk("x", 0);
    if let Input::Output { job_id, .. } = &mut other {
        *job_id = "j2".into();
    }
    assert_eq!(r.input(other), vec![]);
    // The result is the last word on the job: a late chunk is not sent.
    assert_eq!(kinds(&r.finish("j1", true)), vec![T::Succeeded]);
    assert_eq!(r.input(live_chunk("2\n", 0)), vec![]);
}

#[test]
fn no_live_output_after_an_abort() {
    let mut r = Rig::connected(Timings::default());
    r.commit("j1", true);
    r.command(run("j1"));
    assert_eq!(kinds(&r.input(live_chunk("1\n", 0))), vec![T::Output]);
    r.command(ServerMessage::Abort);
    assert_eq!(r.input(live_chunk("2\n", 0)), vec![]);
}

#[test]
fn jitter_stays_within_ten_percent_below() {
    let mut rng = SmallRng::seed_from_u64(3);
    for _ in 0..1000 {
        let d = jitter(INTERVAL, &mut rng);
        assert!(d <= INTERVAL && d > INTERVAL.mul_f64(0.9), "{d:?}");
    }
}
