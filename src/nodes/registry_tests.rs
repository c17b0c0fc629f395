//! The registry's rules, one test each, on an explicit clock and without sockets.

use std::time::{Duration, Instant};

use chrono::Utc;
use pushy_protocol::job::{JobId, OrgGuid};
use pushy_protocol::message::{ClientMessage, ClientMessageType, JobRef, ServerMessage};

use super::*;
use crate::nodes::liveness;

const BEAT: Duration = Duration::from_secs(10);

fn params() -> RegistryParams {
    RegistryParams {
        node: machine::Params {
            rehab_timer: Duration::from_secs(4),
            liveness: liveness::Params {
                heartbeat_interval: BEAT,
                decay_window: 4,
                down_threshold: 0.6,
            },
        },
        scan_interval: BEAT * 4,
    }
}

fn org() -> OrgGuid {
    OrgGuid("0123456789abcdef0123456789abcdef".to_owned())
}

fn job(n: u32) -> JobId {
    JobId::parse(&format!("{n:032x}")).expect("32 hex digits")
}

fn message(node: &str, kind: ClientMessageType, job: Option<&JobId>) -> ClientMessage {
    ClientMessage {
        node: node.to_owned(),
        client: format!("{node}.example"),
        protocol_version: Some("2.0".to_owned()),
        org: "acme".to_owned(),
        kind,
        sequence: 1,
        timestamp: Utc::now(),
        incarnation_id: format!("incarnation-of-{node}"),
        job_state: None,
        job_id: job.map_or(JobRef::None, |j| JobRef::Id(j.to_string())),
        stdout: None,
        stderr: None,
        output_truncated: false,
        dropped: 0,
    }
}

fn from(node: &str, m: ClientMessage) -> Input {
    Input::Message {
        org: org(),
        routing_id: format!("route-{node}").into_bytes(),
        message: m,
    }
}

fn heartbeat(node: &str, job: Option<&JobId>) -> Input {
    from(node, message(node, ClientMessageType::Heartbeat, job))
}

fn to_node(node: &str, message: ServerMessage) -> Effect {
    Effect::ToNode {
        routing_id: format!("route-{node}").into_bytes(),
        org: org(),
        node: node.to_owned(),
        message,
    }
}

/// A job's `abort` for `node`, as `Input::Send`.
fn abort_to(node: &str) -> Input {
    Input::Send {
        org: org(),
        node: node.to_owned(),
        message: ServerMessage::Abort,
    }
}

fn to_job(job: &JobId, news: NodeNews) -> Effect {
    Effect::ToJob {
        job: job.clone(),
        news,
    }
}

fn publish(node: &str, availability: Option<Availability>) -> Effect {
    Effect::Publish {
        org: org(),
        node: node.to_owned(),
        availability,
    }
}

fn watch(r: &mut Registry, now: Instant, job: &JobId, nodes: &[&str]) -> Vec<bool> {
    let fx = r.handle(
        now,
        Input::Watch {
            job: job.clone(),
            org: org(),
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
        },
    );
    match fx.as_slice() {
        [Effect::Watching { available, .. }] => available.clone(),
        other => panic!("expected one Watching, got {other:?}"),
    }
}

/// A registry with `node` online and idle (reset, then `aborted`).
fn with_idle(now: Instant, node: &str) -> Registry {
    let mut r = Registry::new(now, params());
    r.handle(now, heartbeat(node, None));
    r.handle(
        now,
        from(node, message(node, ClientMessageType::Aborted, None)),
    );
    r
}

#[test]
fn a_new_node_is_reset_and_published_unavailable_then_available() {
    let t = Instant::now();
    let mut r = Registry::new(t, params());
    let fx = r.handle(t, heartbeat("a", None));
    assert_eq!(
        fx,
        vec![
            publish("a", Some(Availability::Unavailable)),
            to_node("a", ServerMessage::Abort),
        ]
    );
    let fx = r.handle(t, from("a", message("a", ClientMessageType::Aborted, None)));
    assert_eq!(fx, vec![publish("a", Some(Availability::Available))]);
    assert_eq!(
        r.handle(t, abort_to("a")),
        vec![to_node("a", ServerMessage::Abort)],
        "online: commands reach it"
    );
}

#[test]
fn watch_answers_which_nodes_are_idle_now() {
    let t = Instant::now();
    let mut r = with_idle(t, "a");
    r.handle(t, heartbeat("b", None)); // in rehab
    assert_eq!(
        watch(&mut r, t, &job(1), &["a", "b", "c"]),
        [true, false, false]
    );
}

#[test]
fn a_message_naming_a_live_job_reaches_that_job() {
    let t = Instant::now();
    let mut r = with_idle(t, "a");
    watch(&mut r, t, &job(1), &["a"]);
    let fx = r.handle(
        t,
        from(
            "a",
            message("a", ClientMessageType::AckCommit, Some(&job(1))),
        ),
    );
    assert_eq!(
        fx,
        vec![to_job(
            &job(1),
            NodeNews::Reply {
                node: "a".into(),
                reply: Reply::AckCommit
            }
        )]
    );
    let mut done = message("a", ClientMessageType::Succeeded, Some(&job(1)));
    done.stdout = Some("out".into());
    done.output_truncated = true;
    let fx = r.handle(t, from("a", done));
    assert_eq!(
        fx,
        vec![
            to_job(&job(1), NodeNews::OutputTruncated { node: "a".into() }),
            to_job(
                &job(1),
                NodeNews::Reply {
                    node: "a".into(),
                    reply: Reply::Succeeded {
                        stdout: Some("out".into()),
                        stderr: None
                    }
                }
            ),
        ]
    );
}

#[test]
fn a_result_for_a_job_not_live_here_is_acknowledged_at_once() {
    let t = Instant::now();
    let mut r = with_idle(t, "a");
    let fx = r.handle(
        t,
        from("a", message("a", ClientMessageType::Failed, Some(&job(9)))),
    );
    assert!(fx.contains(&to_node(
        "a",
        ServerMessage::ResultAck {
            job_id: job(9).to_string()
        }
    )));
    assert!(!fx.iter().any(|e| matches!(e, Effect::ToJob { .. })));
}

#[test]
fn a_node_back_on_a_live_job_is_adopted_and_its_jobs_hear_what_it_reports() {
    // After a restart: jobs resumed and watching before their nodes reconnect.
    let t = Instant::now();
    let mut r = Registry::new(t, params());
    watch(&mut r, t, &job(1), &["a"]);
    watch(&mut r, t, &job(2), &["a"]);
    let mut running = message("a", ClientMessageType::Heartbeat, Some(&job(1)));
    running.job_state = Some("running".into());
    let fx = r.handle(t, from("a", running));
    assert_eq!(
        fx,
        vec![
            to_job(
                &job(1),
                NodeNews::Back {
                    node: "a".into(),
                    report: NodeReport::Running
                }
            ),
            to_job(
                &job(2),
                NodeNews::Back {
                    node: "a".into(),
                    report: NodeReport::OtherJob
                }
            ),
            publish("a", Some(Availability::Available)),
            to_node("a", ServerMessage::Ack),
        ],
        "adopted without a reset"
    );
}

#[test]
fn a_committed_node_back_and_a_result_back_report_committed_and_running() {
    let t = Instant::now();
    let mut r = Registry::new(t, params());
    watch(&mut r, t, &job(1), &["a", "b"]);
    let fx = r.handle(t, heartbeat("a", Some(&job(1))));
    assert_eq!(
        fx[0],
        to_job(
            &job(1),
            NodeNews::Back {
                node: "a".into(),
                report: NodeReport::Committed
            }
        )
    );
    let fx = r.handle(
        t,
        from(
            "b",
            message("b", ClientMessageType::Succeeded, Some(&job(1))),
        ),
    );
    assert_eq!(
        fx[0],
        to_job(
            &job(1),
            NodeNews::Back {
                node: "b".into(),
                report: NodeReport::Running
            }
        )
    );
    assert!(
        fx.contains(&to_job(
            &job(1),
            NodeNews::Reply {
                node: "b".into(),
                reply: Reply::Succeeded {
                    stdout: None,
                    stderr: None
                }
            }
        )),
        "the result itself follows"
    );
}

#[test]
fn a_node_back_on_no_job_of_its_own_is_reset_and_its_jobs_hear_it_is_idle_once_reset() {
    let t = Instant::now();
    let mut r = Registry::new(t, params());
    watch(&mut r, t, &job(1), &["a"]);
    let fx = r.handle(t, heartbeat("a", None));
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::ToJob { .. })),
        "not before the reset is done: {fx:?}"
    );
    assert!(fx.contains(&to_node("a", ServerMessage::Abort)));
    let fx = r.handle(t, from("a", message("a", ClientMessageType::Aborted, None)));
    assert_eq!(
        fx,
        vec![
            publish("a", Some(Availability::Available)),
            to_job(
                &job(1),
                NodeNews::Back {
                    node: "a".into(),
                    report: NodeReport::Idle
                }
            ),
        ]
    );
}

#[test]
fn a_node_that_stops_is_down_for_every_job_that_has_it() {
    let t = Instant::now();
    let mut r = with_idle(t, "a");
    watch(&mut r, t, &job(1), &["a"]);
    watch(&mut r, t, &job(2), &["a", "b"]);
    watch(&mut r, t, &job(3), &["b"]);
    // A heartbeat from another incarnation stops the machine.
    let mut other = message("a", ClientMessageType::Heartbeat, None);
    other.incarnation_id = "a new process".into();
    let fx = r.handle(t, from("a", other));
    assert_eq!(
        fx,
        vec![
            publish("a", None),
            to_job(&job(1), NodeNews::Down { node: "a".into() }),
            to_job(&job(2), NodeNews::Down { node: "a".into() }),
        ]
    );
    assert!(
        r.handle(t, abort_to("a")).is_empty(),
        "offline: nothing reaches it"
    );
}

#[test]
fn a_silent_node_is_reaped_by_the_scan_and_its_jobs_hear_it() {
    let t = Instant::now();
    let mut r = with_idle(t, "a");
    watch(&mut r, t, &job(1), &["a"]);
    assert!(r.handle(t + BEAT, Input::Tick).is_empty(), "no scan yet");
    assert_eq!(r.next_deadline(), t + BEAT * 4);
    let fx = r.handle(t + BEAT * 4, Input::Tick);
    assert_eq!(
        fx,
        vec![
            publish("a", None),
            to_job(&job(1), NodeNews::Down { node: "a".into() }),
        ]
    );
}

#[test]
fn rehab_resends_abort_on_its_timer_until_aborted() {
    let t = Instant::now();
    let mut r = with_idle(t, "a");
    let fx = r.handle(
        t,
        Input::Rehab {
            org: org(),
            node: "a".into(),
        },
    );
    assert_eq!(
        fx,
        vec![
            to_node("a", ServerMessage::Abort),
            publish("a", Some(Availability::Unavailable)),
        ]
    );
    let resend = t + params().node.rehab_timer;
    assert_eq!(r.next_deadline(), resend);
    assert_eq!(
        r.handle(resend, Input::Tick),
        vec![to_node("a", ServerMessage::Abort)]
    );
}

#[test]
fn commands_reach_connected_nodes_only_and_unwatched_jobs_hear_nothing() {
    let t = Instant::now();
    let mut r = with_idle(t, "a");
    assert_eq!(
        r.handle(t, abort_to("a")),
        vec![to_node("a", ServerMessage::Abort)]
    );
    assert!(r.handle(t, abort_to("ghost")).is_empty());

    watch(&mut r, t, &job(1), &["a"]);
    r.handle(t, Input::Unwatch { job: job(1) });
    let fx = r.handle(
        t,
        from(
            "a",
            message("a", ClientMessageType::AckCommit, Some(&job(1))),
        ),
    );
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::ToJob { .. })),
        "{fx:?}"
    );
}

fn back(node: &str, report: NodeReport) -> NodeNews {
    NodeNews::Back {
        node: node.into(),
        report,
    }
}

#[test]
fn a_job_watched_again_hears_each_held_nodes_next_report() {
    // A cluster's survivor took the job over: its new owner watches it again, and every
    // instance holding its nodes reconciles them as on a first message.
    let t = Instant::now();
    let mut r = with_idle(t, "a");
    r.handle(t, heartbeat("b", None));
    r.handle(t, from("b", message("b", ClientMessageType::Aborted, None)));
    r.handle(t, heartbeat("c", None));
    r.handle(t, from("c", message("c", ClientMessageType::Aborted, None)));
    watch(&mut r, t, &job(1), &["a", "b", "c", "gone"]);
    assert!(
        r.handle(t, heartbeat("a", Some(&job(1)))).is_empty(),
        "no report before the job is watched again"
    );
    watch(&mut r, t, &job(1), &["a", "b", "c", "gone"]);

    let mut running = message("a", ClientMessageType::Heartbeat, Some(&job(1)));
    running.job_state = Some("running".into());
    let fx = r.handle(t, from("a", running.clone()));
    assert_eq!(fx, vec![to_job(&job(1), back("a", NodeReport::Running))]);
    assert!(
        r.handle(t, from("a", running)).is_empty(),
        "one report per node"
    );
    // (A job not live here: the node is also reset, as always.)
    let fx = r.handle(t, heartbeat("b", Some(&job(2))));
    assert_eq!(fx[0], to_job(&job(1), back("b", NodeReport::OtherJob)));
    let fx = r.handle(t, heartbeat("c", None));
    assert_eq!(fx, vec![to_job(&job(1), back("c", NodeReport::Idle))]);
}

#[test]
fn a_node_whose_result_went_through_here_reports_that_it_ran_though_idle() {
    // Its result went to the job's previous owner (which died); the new owner reads it
    // from the bus, and the node's idle heartbeat must not count as a lost job.
    let t = Instant::now();
    let mut r = with_idle(t, "a");
    watch(&mut r, t, &job(1), &["a"]);
    r.handle(
        t,
        from(
            "a",
            message("a", ClientMessageType::Succeeded, Some(&job(1))),
        ),
    );
    watch(&mut r, t, &job(1), &["a"]);
    let fx = r.handle(t, heartbeat("a", None));
    assert_eq!(fx, vec![to_job(&job(1), back("a", NodeReport::Running))]);
}

#[test]
fn live_output_goes_to_its_live_job_and_changes_nothing_else() {
    let t = Instant::now();
    let mut r = with_idle(t, "a");
    watch(&mut r, t, &job(1), &["a"]);
    let mut out = message("a", ClientMessageType::Output, Some(&job(1)));
    out.stdout = Some("line\n".into());
    out.dropped = 3;
    let fx = r.handle(t, from("a", out.clone()));
    let output = crate::events::Output {
        node: "a".into(),
        stdout: Some("line\n".into()),
        stderr: None,
        dropped: 3,
    };
    assert_eq!(fx, vec![to_job(&job(1), NodeNews::Output(output))]);
    // For a job not live here, or from a node never heard of: dropped.
    let mut other = out.clone();
    other.job_id = JobRef::Id(job(2).to_string());
    assert!(r.handle(t, from("a", other)).is_empty());
    let stranger = message("z", ClientMessageType::Output, Some(&job(1)));
    assert!(r.handle(t, from("z", stranger)).is_empty());
}
