//! One test per row of zmq.md §5.4's tables, the lifecycle of §5.3, the typical event
//! sequences of http.md §3.3, and our abort and resume.

use std::time::{Duration, Instant};

use pushy_protocol::job::{JobId, JobStatus, NodeStatus};

use super::*;
use crate::jobs::{JobEvent, RunStatus, VoteStatus};

const RUN: Duration = Duration::from_secs(3600);
const VOTE: Duration = Duration::from_secs(60);

fn id() -> JobId {
    JobId::parse("aaaaaaaaaaaa25fd67fa8715fd547d3d").expect("valid id")
}

fn new_job(nodes: &[&str], quorum: u32) -> Job {
    let nodes = nodes.iter().map(|n| (*n).to_owned()).collect();
    Job::new(id(), nodes, quorum, RUN, VOTE)
}

/// A job voting since `t`, every node available.
fn voting(t: Instant, nodes: &[&str], quorum: u32) -> Job {
    let mut job = new_job(nodes, quorum);
    job.start(t, |_| true);
    job
}

/// Two nodes `a`, `b`, both committed: running since `t` with both `ready`.
fn running(t: Instant) -> Job {
    let mut job = voting(t, &["a", "b"], 2);
    job.handle(t, reply("a", Reply::AckCommit));
    job.handle(t, reply("b", Reply::AckCommit));
    assert_eq!(job.status(), JobStatus::Running);
    job
}

fn reply(node: &str, reply: Reply) -> Input {
    Input::Reply {
        node: node.into(),
        reply,
    }
}

fn down(node: &str) -> Input {
    Input::NodeDown { node: node.into() }
}

fn succeeded() -> Reply {
    Reply::Succeeded {
        stdout: Some("out".into()),
        stderr: Some("err".into()),
    }
}

fn failed() -> Reply {
    Reply::Failed {
        stdout: Some("out".into()),
        stderr: Some("err".into()),
    }
}

fn store(node: &str) -> Effect {
    Effect::StoreOutput {
        node: node.into(),
        stdout: "out".into(),
        stderr: "err".into(),
    }
}

fn persist(node: &str, status: NodeStatus) -> Effect {
    Effect::PersistNode {
        node: node.into(),
        status,
    }
}

fn send(node: &str, command: Command) -> Effect {
    Effect::Send {
        node: node.into(),
        command,
    }
}

fn rehab(node: &str) -> Effect {
    Effect::Rehab { node: node.into() }
}

fn rehab_event(node: &str) -> Effect {
    Effect::Emit(JobEvent::Rehab { node: node.into() })
}

fn vote(node: &str, status: VoteStatus) -> Effect {
    Effect::Emit(JobEvent::QuorumVote {
        node: node.into(),
        status,
    })
}

fn run_start(node: &str) -> Effect {
    Effect::Emit(JobEvent::RunStart { node: node.into() })
}

fn run_complete(node: &str, status: RunStatus) -> Effect {
    Effect::Emit(JobEvent::RunComplete {
        node: node.into(),
        status,
    })
}

fn quorum_succeeded() -> Effect {
    Effect::Emit(JobEvent::QuorumSucceeded)
}

fn finish(status: JobStatus) -> [Effect; 3] {
    [
        Effect::Emit(JobEvent::JobComplete { status }),
        Effect::PersistJob(status),
        Effect::Finished(status),
    ]
}

fn concat<const N: usize>(head: Vec<Effect>, tail: [Effect; N]) -> Vec<Effect> {
    let mut all = head;
    all.extend(tail);
    all
}

fn events(effects: &[Effect]) -> Vec<JobEvent> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Emit(ev) => Some(ev.clone()),
            _ => None,
        })
        .collect()
}

/// The "any other type" messages of the voting table.
fn other_than_votes() -> Vec<Reply> {
    vec![
        Reply::AckRun,
        Reply::NackRun,
        succeeded(),
        failed(),
        Reply::Aborted,
    ]
}

/// The "anything else" inputs of the running table.
fn other_than_run_replies() -> Vec<Input> {
    vec![
        down("a"),
        reply("a", Reply::AckCommit),
        reply("a", Reply::NackCommit),
        reply("a", Reply::Aborted),
    ]
}

// ---- §5.3 lifecycle: start ----

#[test]
fn start_persists_voting_sends_commit_to_all_and_arms_voting_timer() {
    let t = Instant::now();
    let mut job = new_job(&["a", "b"], 2);
    assert_eq!(job.status(), JobStatus::New);
    assert_eq!(job.next_deadline(), None);
    let fx = job.start(t, |_| true);
    assert_eq!(
        fx,
        vec![
            Effect::PersistJob(JobStatus::Voting),
            send("a", Command::Commit),
            send("b", Command::Commit),
        ]
    );
    assert_eq!(job.status(), JobStatus::Voting);
    assert_eq!(job.next_deadline(), Some(t + VOTE));
    assert!(job.start(t, |_| true).is_empty(), "start runs once");
}

#[test]
fn a_phase_begun_late_counts_its_timer_from_when_it_began() {
    let t = Instant::now();
    let late = t + Duration::from_secs(90);
    let mut job = voting(t, &["a", "b"], 2);
    job.phase_began(late);
    assert_eq!(job.next_deadline(), Some(late + VOTE));
    assert!(
        job.handle_timeout(t + VOTE).is_empty(),
        "the old window is gone"
    );

    let mut job = running(t);
    job.phase_began(late);
    assert_eq!(job.next_deadline(), Some(late + RUN));

    let mut job = new_job(&["a"], 1);
    job.phase_began(late);
    assert_eq!(job.next_deadline(), None, "no timer before the start");
}

#[test]
fn start_gives_unavailable_nodes_the_down_row_after_commit_to_all() {
    let t = Instant::now();
    let mut job = new_job(&["a", "b", "c"], 1);
    let fx = job.start(t, |n| n != "b");
    assert_eq!(
        fx,
        vec![
            Effect::PersistJob(JobStatus::Voting),
            send("a", Command::Commit),
            send("b", Command::Commit),
            send("c", Command::Commit),
            vote("b", VoteStatus::Down),
            persist("b", NodeStatus::Unavailable),
            rehab("b"),
            rehab_event("b"),
        ]
    );
    assert_eq!(job.status(), JobStatus::Voting);
}

#[test]
fn start_with_every_node_down_fails_the_quorum() {
    let t = Instant::now();
    let mut job = new_job(&["a", "b"], 1);
    let fx = job.start(t, |_| false);
    let expected = concat(
        vec![
            Effect::PersistJob(JobStatus::Voting),
            send("a", Command::Commit),
            send("b", Command::Commit),
            vote("a", VoteStatus::Down),
            persist("a", NodeStatus::Unavailable),
            rehab("a"),
            rehab_event("a"),
            vote("b", VoteStatus::Down),
            persist("b", NodeStatus::Unavailable),
            rehab("b"),
            rehab_event("b"),
        ],
        finish(JobStatus::QuorumFailed),
    );
    assert_eq!(fx, expected);
    assert_eq!(job.next_deadline(), None);
}

#[test]
fn quorum_zero_with_every_node_down_runs_then_completes_at_once() {
    let t = Instant::now();
    let mut job = new_job(&["a", "b"], 0);
    let fx = job.start(t, |_| false);
    let expected = concat(
        vec![
            Effect::PersistJob(JobStatus::Voting),
            send("a", Command::Commit),
            send("b", Command::Commit),
            vote("a", VoteStatus::Down),
            persist("a", NodeStatus::Unavailable),
            rehab("a"),
            rehab_event("a"),
            vote("b", VoteStatus::Down),
            persist("b", NodeStatus::Unavailable),
            rehab("b"),
            rehab_event("b"),
            quorum_succeeded(),
            Effect::PersistJob(JobStatus::Running),
        ],
        finish(JobStatus::Complete),
    );
    assert_eq!(fx, expected);
    assert_eq!(job.status(), JobStatus::Complete);
}

#[test]
fn job_without_nodes_and_quorum_zero_completes_at_start() {
    let t = Instant::now();
    let mut job = new_job(&[], 0);
    let fx = job.start(t, |_| true);
    let expected = concat(
        vec![
            Effect::PersistJob(JobStatus::Voting),
            quorum_succeeded(),
            Effect::PersistJob(JobStatus::Running),
        ],
        finish(JobStatus::Complete),
    );
    assert_eq!(fx, expected);
}

// ---- §5.3 steps 3–4: quorum ----

#[test]
fn quorum_reached_when_ready_count_meets_quorum_sends_run_to_ready_nodes() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b", "c"], 2);
    job.handle(t, reply("a", Reply::AckCommit));
    job.handle(t, reply("b", Reply::NackCommit));
    let later = t + Duration::from_secs(5);
    let fx = job.handle(later, reply("c", Reply::AckCommit));
    assert_eq!(
        fx,
        vec![
            persist("c", NodeStatus::Ready),
            vote("c", VoteStatus::Success),
            quorum_succeeded(),
            Effect::PersistJob(JobStatus::Running),
            send("a", Command::Run),
            send("c", Command::Run),
        ]
    );
    assert_eq!(job.status(), JobStatus::Running);
    assert_eq!(job.next_deadline(), Some(later + RUN));
}

#[test]
fn quorum_missed_by_one_marks_ready_nodes_was_ready_and_rehabs_without_events() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b", "c"], 3);
    job.handle(t, reply("a", Reply::AckCommit));
    job.handle(t, reply("b", Reply::NackCommit));
    let fx = job.handle(t, reply("c", Reply::AckCommit));
    let expected = concat(
        vec![
            persist("c", NodeStatus::Ready),
            vote("c", VoteStatus::Success),
            persist("a", NodeStatus::WasReady),
            rehab("a"),
            persist("c", NodeStatus::WasReady),
            rehab("c"),
        ],
        finish(JobStatus::QuorumFailed),
    );
    assert_eq!(fx, expected);
    assert_eq!(
        job.nodes(),
        &[
            ("a".to_owned(), NodeStatus::WasReady),
            ("b".to_owned(), NodeStatus::Nacked),
            ("c".to_owned(), NodeStatus::WasReady),
        ]
    );
}

#[test]
fn quorum_is_not_decided_while_a_node_is_new() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b"], 1);
    let fx = job.handle(t, reply("a", Reply::AckCommit));
    assert_eq!(
        fx,
        vec![
            persist("a", NodeStatus::Ready),
            vote("a", VoteStatus::Success)
        ]
    );
    assert_eq!(job.status(), JobStatus::Voting);
}

// ---- §5.4 "In voting": one test per cell ----

#[test]
fn voting_ack_commit_from_new_node_marks_ready_and_votes_success() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b"], 2);
    let fx = job.handle(t, reply("a", Reply::AckCommit));
    assert_eq!(
        fx,
        vec![
            persist("a", NodeStatus::Ready),
            vote("a", VoteStatus::Success)
        ]
    );
    assert_eq!(job.node_status("a"), Some(NodeStatus::Ready));
}

#[test]
fn voting_ack_commit_from_ready_node_votes_unexpected_commit() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b"], 2);
    job.handle(t, reply("a", Reply::AckCommit));
    let fx = job.handle(t, reply("a", Reply::AckCommit));
    assert_eq!(fx, vec![vote("a", VoteStatus::UnexpectedCommit)]);
    assert_eq!(job.node_status("a"), Some(NodeStatus::Ready));
}

#[test]
fn voting_ack_commit_from_terminal_node_rehabs_and_votes_client_died_while_voting() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b"], 2);
    job.handle(t, reply("b", Reply::NackCommit));
    let fx = job.handle(t, reply("b", Reply::AckCommit));
    assert_eq!(
        fx,
        vec![
            rehab("b"),
            rehab_event("b"),
            vote("b", VoteStatus::ClientDiedWhileVoting),
        ]
    );
    assert_eq!(job.node_status("b"), Some(NodeStatus::Nacked));
}

#[test]
fn voting_nack_commit_from_new_node_marks_nacked_without_rehab_and_votes_failure() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b"], 2);
    let fx = job.handle(t, reply("a", Reply::NackCommit));
    assert_eq!(
        fx,
        vec![
            persist("a", NodeStatus::Nacked),
            vote("a", VoteStatus::Failure)
        ]
    );
}

#[test]
fn voting_nack_commit_from_ready_node_marks_unavailable_rehabs_and_votes_lost_availibility() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b"], 2);
    job.handle(t, reply("a", Reply::AckCommit));
    let fx = job.handle(t, reply("a", Reply::NackCommit));
    assert_eq!(
        fx,
        vec![
            persist("a", NodeStatus::Unavailable),
            rehab("a"),
            rehab_event("a"),
            vote("a", VoteStatus::LostAvailability),
        ]
    );
}

#[test]
fn voting_nack_commit_from_terminal_node_rehabs_and_votes_client_died_while_voting() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b"], 2);
    job.handle(t, reply("b", Reply::NackCommit));
    let fx = job.handle(t, reply("b", Reply::NackCommit));
    assert_eq!(
        fx,
        vec![
            rehab("b"),
            rehab_event("b"),
            vote("b", VoteStatus::ClientDiedWhileVoting),
        ]
    );
    assert_eq!(job.node_status("b"), Some(NodeStatus::Nacked));
}

#[test]
fn voting_down_of_new_node_votes_down_first_then_marks_unavailable_and_rehabs() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b"], 2);
    let fx = job.handle(t, down("a"));
    assert_eq!(
        fx,
        vec![
            vote("a", VoteStatus::Down),
            persist("a", NodeStatus::Unavailable),
            rehab("a"),
            rehab_event("a"),
        ]
    );
}

#[test]
fn voting_down_of_ready_node_votes_down_first_then_marks_unavailable_and_rehabs() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b"], 2);
    job.handle(t, reply("a", Reply::AckCommit));
    let fx = job.handle(t, down("a"));
    assert_eq!(
        fx,
        vec![
            vote("a", VoteStatus::Down),
            persist("a", NodeStatus::Unavailable),
            rehab("a"),
            rehab_event("a"),
        ]
    );
}

#[test]
fn voting_down_of_terminal_node_votes_down_first_then_rehabs() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b"], 2);
    job.handle(t, reply("b", Reply::NackCommit));
    let fx = job.handle(t, down("b"));
    assert_eq!(
        fx,
        vec![vote("b", VoteStatus::Down), rehab("b"), rehab_event("b")]
    );
    assert_eq!(job.node_status("b"), Some(NodeStatus::Nacked));
}

#[test]
fn voting_other_message_from_new_node_marks_unavailable_and_rehabs_without_vote() {
    for other in other_than_votes() {
        let t = Instant::now();
        let mut job = voting(t, &["a", "b"], 2);
        let fx = job.handle(t, reply("a", other.clone()));
        assert_eq!(
            fx,
            vec![
                persist("a", NodeStatus::Unavailable),
                rehab("a"),
                rehab_event("a"),
            ],
            "{other:?}"
        );
    }
}

#[test]
fn voting_other_message_from_ready_node_marks_unavailable_and_rehabs() {
    for other in other_than_votes() {
        let t = Instant::now();
        let mut job = voting(t, &["a", "b"], 2);
        job.handle(t, reply("a", Reply::AckCommit));
        let fx = job.handle(t, reply("a", other.clone()));
        assert_eq!(
            fx,
            vec![
                persist("a", NodeStatus::Unavailable),
                rehab("a"),
                rehab_event("a"),
            ],
            "{other:?}"
        );
    }
}

#[test]
fn voting_other_message_from_terminal_node_rehabs() {
    for other in other_than_votes() {
        let t = Instant::now();
        let mut job = voting(t, &["a", "b"], 2);
        job.handle(t, reply("b", Reply::NackCommit));
        let fx = job.handle(t, reply("b", other.clone()));
        assert_eq!(fx, vec![rehab("b"), rehab_event("b")], "{other:?}");
        assert_eq!(job.node_status("b"), Some(NodeStatus::Nacked));
    }
}

#[test]
fn voting_timer_votes_timeout_for_new_nodes_marks_them_unavailable_and_rehabs_quietly() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b", "c"], 1);
    job.handle(t, reply("a", Reply::AckCommit));
    assert!(
        job.handle_timeout(t + VOTE - Duration::from_millis(1))
            .is_empty()
    );
    assert_eq!(job.status(), JobStatus::Voting);
    let fx = job.handle_timeout(t + VOTE);
    assert_eq!(
        fx,
        vec![
            vote("b", VoteStatus::VotingTimeout),
            persist("b", NodeStatus::Unavailable),
            rehab("b"),
            vote("c", VoteStatus::VotingTimeout),
            persist("c", NodeStatus::Unavailable),
            rehab("c"),
            quorum_succeeded(),
            Effect::PersistJob(JobStatus::Running),
            send("a", Command::Run),
        ]
    );
    assert_eq!(job.next_deadline(), Some(t + VOTE + RUN));
}

// ---- §5.4 "In running": one test per cell ----

#[test]
fn running_ack_run_from_ready_node_emits_run_start_first_then_marks_running() {
    let t = Instant::now();
    let mut job = running(t);
    let fx = job.handle(t, reply("a", Reply::AckRun));
    assert_eq!(fx, vec![run_start("a"), persist("a", NodeStatus::Running)]);
}

#[test]
fn running_ack_run_from_running_node_changes_nothing() {
    let t = Instant::now();
    let mut job = running(t);
    job.handle(t, reply("a", Reply::AckRun));
    assert!(job.handle(t, reply("a", Reply::AckRun)).is_empty());
    assert_eq!(job.node_status("a"), Some(NodeStatus::Running));
}

#[test]
fn running_ack_run_from_terminal_node_emits_client_died_while_running_then_rehabs() {
    let t = Instant::now();
    let mut job = running(t);
    job.handle(t, reply("a", Reply::AckRun));
    job.handle(t, reply("a", succeeded()));
    let fx = job.handle(t, reply("a", Reply::AckRun));
    assert_eq!(
        fx,
        vec![
            run_complete("a", RunStatus::ClientDiedWhileRunning),
            rehab("a"),
            rehab_event("a"),
        ]
    );
    assert_eq!(job.node_status("a"), Some(NodeStatus::Succeeded));
}

#[test]
fn running_nack_run_from_ready_node_marks_failed_rehabs_and_reports_run_nacked() {
    let t = Instant::now();
    let mut job = running(t);
    let fx = job.handle(t, reply("a", Reply::NackRun));
    assert_eq!(
        fx,
        vec![
            persist("a", NodeStatus::Failed),
            rehab("a"),
            rehab_event("a"),
            run_complete("a", RunStatus::RunNacked),
        ]
    );
}

#[test]
fn running_nack_run_from_running_node_marks_failed_rehabs_and_reports_run_nacked_while_running() {
    let t = Instant::now();
    let mut job = running(t);
    job.handle(t, reply("a", Reply::AckRun));
    let fx = job.handle(t, reply("a", Reply::NackRun));
    assert_eq!(
        fx,
        vec![
            persist("a", NodeStatus::Failed),
            rehab("a"),
            rehab_event("a"),
            run_complete("a", RunStatus::RunNackedWhileRunning),
        ]
    );
}

#[test]
fn running_nack_run_from_terminal_node_rehabs_and_reports_client_died_while_running() {
    let t = Instant::now();
    let mut job = running(t);
    job.handle(t, reply("a", Reply::AckRun));
    job.handle(t, reply("a", failed()));
    let fx = job.handle(t, reply("a", Reply::NackRun));
    assert_eq!(
        fx,
        vec![
            rehab("a"),
            rehab_event("a"),
            run_complete("a", RunStatus::ClientDiedWhileRunning),
        ]
    );
    assert_eq!(job.node_status("a"), Some(NodeStatus::Failed));
}

#[test]
fn running_succeeded_from_ready_node_stores_output_marks_crashed_and_rehabs() {
    let t = Instant::now();
    let mut job = running(t);
    let fx = job.handle(t, reply("a", succeeded()));
    assert_eq!(
        fx,
        vec![
            store("a"),
            persist("a", NodeStatus::Crashed),
            rehab("a"),
            rehab_event("a"),
            run_complete("a", RunStatus::Crashed),
        ]
    );
}

#[test]
fn running_succeeded_from_running_node_stores_output_and_marks_succeeded() {
    let t = Instant::now();
    let mut job = running(t);
    job.handle(t, reply("a", Reply::AckRun));
    let fx = job.handle(t, reply("a", succeeded()));
    assert_eq!(
        fx,
        vec![
            store("a"),
            persist("a", NodeStatus::Succeeded),
            run_complete("a", RunStatus::Success),
        ]
    );
}

#[test]
fn running_succeeded_from_terminal_node_stores_output_rehabs_and_reports_client_died() {
    let t = Instant::now();
    let mut job = running(t);
    job.handle(t, reply("a", Reply::AckRun));
    job.handle(t, down("a"));
    let fx = job.handle(t, reply("a", succeeded()));
    assert_eq!(
        fx,
        vec![
            store("a"),
            rehab("a"),
            rehab_event("a"),
            run_complete("a", RunStatus::ClientDiedWhileRunning),
        ]
    );
    assert_eq!(job.node_status("a"), Some(NodeStatus::Crashed));
}

#[test]
fn running_failed_from_ready_node_stores_output_marks_crashed_and_rehabs() {
    let t = Instant::now();
    let mut job = running(t);
    let fx = job.handle(t, reply("a", failed()));
    assert_eq!(
        fx,
        vec![
            store("a"),
            persist("a", NodeStatus::Crashed),
            rehab("a"),
            rehab_event("a"),
            run_complete("a", RunStatus::Crashed),
        ]
    );
}

#[test]
fn running_failed_from_running_node_stores_output_and_marks_failed() {
    let t = Instant::now();
    let mut job = running(t);
    job.handle(t, reply("a", Reply::AckRun));
    let fx = job.handle(t, reply("a", failed()));
    assert_eq!(
        fx,
        vec![
            store("a"),
            persist("a", NodeStatus::Failed),
            run_complete("a", RunStatus::Failure),
        ]
    );
}

#[test]
fn running_failed_from_terminal_node_stores_output_rehabs_and_reports_client_died() {
    let t = Instant::now();
    let mut job = running(t);
    job.handle(t, reply("a", Reply::AckRun));
    job.handle(t, down("a"));
    let fx = job.handle(t, reply("a", failed()));
    assert_eq!(
        fx,
        vec![
            store("a"),
            rehab("a"),
            rehab_event("a"),
            run_complete("a", RunStatus::ClientDiedWhileRunning),
        ]
    );
    assert_eq!(job.node_status("a"), Some(NodeStatus::Crashed));
}

#[test]
fn running_other_input_for_ready_node_marks_crashed_and_rehabs() {
    for other in other_than_run_replies() {
        let t = Instant::now();
        let mut job = running(t);
        let fx = job.handle(t, other.clone());
        assert_eq!(
            fx,
            vec![
                persist("a", NodeStatus::Crashed),
                rehab("a"),
                rehab_event("a"),
                run_complete("a", RunStatus::Crashed),
            ],
            "{other:?}"
        );
    }
}

#[test]
fn running_other_input_for_running_node_marks_crashed_and_rehabs() {
    for other in other_than_run_replies() {
        let t = Instant::now();
        let mut job = running(t);
        job.handle(t, reply("a", Reply::AckRun));
        let fx = job.handle(t, other.clone());
        assert_eq!(
            fx,
            vec![
                persist("a", NodeStatus::Crashed),
                rehab("a"),
                rehab_event("a"),
                run_complete("a", RunStatus::Crashed),
            ],
            "{other:?}"
        );
    }
}

#[test]
fn running_other_input_for_terminal_node_rehabs_and_reports_client_died_while_running() {
    for other in other_than_run_replies() {
        let t = Instant::now();
        let mut job = running(t);
        job.handle(t, reply("a", Reply::AckRun));
        job.handle(t, reply("a", succeeded()));
        let fx = job.handle(t, other.clone());
        assert_eq!(
            fx,
            vec![
                rehab("a"),
                rehab_event("a"),
                run_complete("a", RunStatus::ClientDiedWhileRunning),
            ],
            "{other:?}"
        );
        assert_eq!(job.node_status("a"), Some(NodeStatus::Succeeded));
    }
}

#[test]
fn run_timer_marks_ready_and_running_nodes_timed_out_rehabs_quietly_and_finishes_timed_out() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b", "c"], 3);
    for n in ["a", "b", "c"] {
        job.handle(t, reply(n, Reply::AckCommit));
    }
    job.handle(t, reply("a", Reply::AckRun));
    job.handle(t, reply("c", Reply::AckRun));
    job.handle(t, reply("c", succeeded()));
    assert!(
        job.handle_timeout(t + RUN - Duration::from_millis(1))
            .is_empty()
    );
    let fx = job.handle_timeout(t + RUN);
    let expected = concat(
        vec![
            persist("a", NodeStatus::TimedOut),
            rehab("a"),
            persist("b", NodeStatus::TimedOut),
            rehab("b"),
        ],
        finish(JobStatus::TimedOut),
    );
    assert_eq!(fx, expected);
    assert_eq!(job.node_status("c"), Some(NodeStatus::Succeeded));
    assert_eq!(job.next_deadline(), None);
}

#[test]
fn running_finishes_complete_when_no_node_is_ready_or_running() {
    let t = Instant::now();
    let mut job = running(t);
    job.handle(t, reply("a", Reply::NackRun));
    job.handle(t, reply("b", Reply::AckRun));
    let fx = job.handle(t, reply("b", failed()));
    let expected = concat(
        vec![
            store("b"),
            persist("b", NodeStatus::Failed),
            run_complete("b", RunStatus::Failure),
        ],
        finish(JobStatus::Complete),
    );
    assert_eq!(fx, expected);
}

// ---- "store output" needs both streams ----

#[test]
fn output_with_one_stream_only_is_not_stored() {
    let t = Instant::now();
    for (stdout, stderr) in [(Some("o"), None), (None, Some("e")), (None, None)] {
        let mut job = running(t);
        job.handle(t, reply("a", Reply::AckRun));
        let fx = job.handle(
            t,
            reply(
                "a",
                Reply::Succeeded {
                    stdout: stdout.map(Into::into),
                    stderr: stderr.map(Into::into),
                },
            ),
        );
        assert_eq!(
            fx,
            vec![
                persist("a", NodeStatus::Succeeded),
                run_complete("a", RunStatus::Success),
            ]
        );
    }
}

#[test]
fn output_sent_while_voting_is_not_stored() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b"], 2);
    let fx = job.handle(t, reply("a", succeeded()));
    assert!(!fx.iter().any(|e| matches!(e, Effect::StoreOutput { .. })));
}

// ---- http.md §3.3 typical sequences (one node, quorum 1) ----

#[test]
fn sequence_normal() {
    let t = Instant::now();
    let mut job = voting(t, &["DONKEY"], 1);
    let mut fx = job.handle(t, reply("DONKEY", Reply::AckCommit));
    fx.extend(job.handle(t, reply("DONKEY", Reply::AckRun)));
    fx.extend(job.handle(t, reply("DONKEY", succeeded())));
    assert_eq!(
        events(&fx),
        vec![
            JobEvent::QuorumVote {
                node: "DONKEY".into(),
                status: VoteStatus::Success
            },
            JobEvent::QuorumSucceeded,
            JobEvent::RunStart {
                node: "DONKEY".into()
            },
            JobEvent::RunComplete {
                node: "DONKEY".into(),
                status: RunStatus::Success
            },
            JobEvent::JobComplete {
                status: JobStatus::Complete
            },
        ]
    );
    assert_eq!(fx.last(), Some(&Effect::Finished(JobStatus::Complete)));
}

#[test]
fn sequence_node_offline_at_creation() {
    let t = Instant::now();
    let mut job = new_job(&["DONKEY"], 1);
    let fx = job.start(t, |_| false);
    assert_eq!(
        events(&fx),
        vec![
            JobEvent::QuorumVote {
                node: "DONKEY".into(),
                status: VoteStatus::Down
            },
            JobEvent::Rehab {
                node: "DONKEY".into()
            },
            JobEvent::JobComplete {
                status: JobStatus::QuorumFailed
            },
        ]
    );
    assert_eq!(job.node_status("DONKEY"), Some(NodeStatus::Unavailable));
}

#[test]
fn sequence_node_refuses() {
    let t = Instant::now();
    let mut job = voting(t, &["DONKEY"], 1);
    let fx = job.handle(t, reply("DONKEY", Reply::NackCommit));
    assert_eq!(
        events(&fx),
        vec![
            JobEvent::QuorumVote {
                node: "DONKEY".into(),
                status: VoteStatus::Failure
            },
            JobEvent::JobComplete {
                status: JobStatus::QuorumFailed
            },
        ]
    );
    assert_eq!(job.node_status("DONKEY"), Some(NodeStatus::Nacked));
}

#[test]
fn sequence_no_answer() {
    let t = Instant::now();
    let mut job = voting(t, &["DONKEY"], 1);
    let fx = job.handle_timeout(t + VOTE);
    assert_eq!(
        events(&fx),
        vec![
            JobEvent::QuorumVote {
                node: "DONKEY".into(),
                status: VoteStatus::VotingTimeout
            },
            JobEvent::JobComplete {
                status: JobStatus::QuorumFailed
            },
        ]
    );
    assert_eq!(job.node_status("DONKEY"), Some(NodeStatus::Unavailable));
}

#[test]
fn sequence_run_never_acknowledged() {
    let t = Instant::now();
    let mut job = voting(t, &["DONKEY"], 1);
    let mut fx = job.handle(t, reply("DONKEY", Reply::AckCommit));
    fx.extend(job.handle_timeout(t + RUN));
    assert_eq!(
        events(&fx),
        vec![
            JobEvent::QuorumVote {
                node: "DONKEY".into(),
                status: VoteStatus::Success
            },
            JobEvent::QuorumSucceeded,
            JobEvent::JobComplete {
                status: JobStatus::TimedOut
            },
        ]
    );
    assert_eq!(job.node_status("DONKEY"), Some(NodeStatus::TimedOut));
}

#[test]
fn sequence_run_refused() {
    let t = Instant::now();
    let mut job = voting(t, &["DONKEY"], 1);
    let mut fx = job.handle(t, reply("DONKEY", Reply::AckCommit));
    fx.extend(job.handle(t, reply("DONKEY", Reply::NackRun)));
    assert_eq!(
        events(&fx),
        vec![
            JobEvent::QuorumVote {
                node: "DONKEY".into(),
                status: VoteStatus::Success
            },
            JobEvent::QuorumSucceeded,
            JobEvent::Rehab {
                node: "DONKEY".into()
            },
            JobEvent::RunComplete {
                node: "DONKEY".into(),
                status: RunStatus::RunNacked
            },
            JobEvent::JobComplete {
                status: JobStatus::Complete
            },
        ]
    );
}

// ---- our abort ----

#[test]
fn abort_while_voting_aborts_unfinished_nodes_then_finishes_aborted() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b", "c"], 3);
    job.handle(t, reply("a", Reply::AckCommit));
    job.handle(t, reply("b", Reply::NackCommit));
    let fx = job.handle(t, Input::Abort);
    let expected = concat(
        vec![
            persist("a", NodeStatus::Aborted),
            rehab("a"),
            persist("c", NodeStatus::Aborted),
            rehab("c"),
        ],
        finish(JobStatus::Aborted),
    );
    assert_eq!(fx, expected);
    assert_eq!(job.node_status("b"), Some(NodeStatus::Nacked));
    assert_eq!(job.next_deadline(), None);
}

#[test]
fn abort_while_running_aborts_unfinished_nodes_then_finishes_aborted() {
    let t = Instant::now();
    let mut job = voting(t, &["a", "b", "c"], 3);
    for n in ["a", "b", "c"] {
        job.handle(t, reply(n, Reply::AckCommit));
    }
    job.handle(t, reply("a", Reply::AckRun));
    job.handle(t, reply("c", Reply::AckRun));
    job.handle(t, reply("c", succeeded()));
    let fx = job.handle(t, Input::Abort);
    let expected = concat(
        vec![
            persist("a", NodeStatus::Aborted),
            rehab("a"),
            persist("b", NodeStatus::Aborted),
            rehab("b"),
        ],
        finish(JobStatus::Aborted),
    );
    assert_eq!(fx, expected);
    assert_eq!(job.status(), JobStatus::Aborted);
}

#[test]
fn abort_before_start_sends_nothing() {
    let t = Instant::now();
    let mut job = new_job(&["a"], 1);
    let fx = job.handle(t, Input::Abort);
    let expected = concat(
        vec![persist("a", NodeStatus::Aborted)],
        finish(JobStatus::Aborted),
    );
    assert_eq!(fx, expected);
}

// ---- after the finish, and timers of left phases ----

#[test]
fn inputs_after_finish_are_ignored() {
    let t = Instant::now();
    let mut job = voting(t, &["a"], 1);
    job.handle(t, reply("a", Reply::NackCommit));
    assert_eq!(job.status(), JobStatus::QuorumFailed);
    let inputs = [
        reply("a", Reply::AckCommit),
        reply("a", Reply::AckRun),
        reply("a", succeeded()),
        down("a"),
        Input::Abort,
    ];
    for input in inputs {
        assert!(job.handle(t, input).is_empty());
    }
    assert!(job.handle_timeout(t + RUN + VOTE).is_empty());
    assert!(job.start(t, |_| true).is_empty());
    assert_eq!(job.status(), JobStatus::QuorumFailed);
    assert_eq!(job.node_status("a"), Some(NodeStatus::Nacked));
}

#[test]
fn voting_timer_cannot_fire_once_running() {
    let t = Instant::now();
    let later = t + Duration::from_secs(30);
    let mut job = voting(t, &["a"], 1);
    job.handle(later, reply("a", Reply::AckCommit));
    assert_eq!(job.next_deadline(), Some(later + RUN));
    assert!(job.handle_timeout(t + VOTE).is_empty());
    assert_eq!(job.status(), JobStatus::Running);
}

#[test]
fn inputs_for_unknown_nodes_are_ignored() {
    let t = Instant::now();
    let mut job = voting(t, &["a"], 1);
    assert!(job.handle(t, reply("zz", Reply::AckCommit)).is_empty());
    assert!(job.handle(t, down("zz")).is_empty());
    assert_eq!(job.node_status("zz"), None);
}

#[test]
fn inputs_before_start_are_ignored() {
    let t = Instant::now();
    let mut job = new_job(&["a"], 1);
    assert!(job.handle(t, reply("a", Reply::AckCommit)).is_empty());
    assert!(job.handle(t, down("a")).is_empty());
    assert!(job.handle_timeout(t + RUN + VOTE).is_empty());
    assert_eq!(job.node_status("a"), Some(NodeStatus::New));
}

// ---- resume after a restart ----

fn stored(nodes: &[(&str, NodeStatus)]) -> Vec<(String, NodeStatus)> {
    nodes.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect()
}

#[test]
fn resume_voting_job_rearms_voting_timer_from_now_and_keeps_counting() {
    let now = Instant::now();
    let nodes = stored(&[("a", NodeStatus::Ready), ("b", NodeStatus::New)]);
    let (mut job, fx) = Job::resume(
        id(),
        nodes,
        2,
        JobStatus::Voting,
        now,
        Duration::ZERO,
        RUN,
        VOTE,
        Limits::default(),
    );
    assert!(fx.is_empty());
    assert_eq!(job.next_deadline(), Some(now + VOTE));
    let fx = job.handle(now, reply("b", Reply::AckCommit));
    assert_eq!(
        fx,
        vec![
            persist("b", NodeStatus::Ready),
            vote("b", VoteStatus::Success),
            quorum_succeeded(),
            Effect::PersistJob(JobStatus::Running),
            send("a", Command::Run),
            send("b", Command::Run),
        ]
    );
}

#[test]
fn resume_running_job_rearms_run_timer_from_now() {
    let now = Instant::now();
    let nodes = stored(&[("a", NodeStatus::Running), ("b", NodeStatus::Ready)]);
    let (mut job, fx) = Job::resume(
        id(),
        nodes,
        2,
        JobStatus::Running,
        now,
        Duration::ZERO,
        RUN,
        VOTE,
        Limits::default(),
    );
    assert!(fx.is_empty());
    assert_eq!(
        job.phase(),
        Phase::Running {
            deadline: now + RUN
        }
    );
    let fx = job.handle(now, reply("a", succeeded()));
    assert_eq!(
        fx,
        vec![
            store("a"),
            persist("a", NodeStatus::Succeeded),
            run_complete("a", RunStatus::Success),
        ]
    );
}

#[test]
fn resume_voting_job_with_no_new_node_decides_the_quorum() {
    let now = Instant::now();
    let nodes = stored(&[("a", NodeStatus::Ready), ("b", NodeStatus::Nacked)]);
    let (job, fx) = Job::resume(
        id(),
        nodes,
        2,
        JobStatus::Voting,
        now,
        Duration::ZERO,
        RUN,
        VOTE,
        Limits::default(),
    );
    let expected = concat(
        vec![persist("a", NodeStatus::WasReady), rehab("a")],
        finish(JobStatus::QuorumFailed),
    );
    assert_eq!(fx, expected);
    assert_eq!(job.status(), JobStatus::QuorumFailed);
}

#[test]
fn resume_running_job_with_no_busy_node_completes() {
    let now = Instant::now();
    let nodes = stored(&[("a", NodeStatus::Succeeded), ("b", NodeStatus::Crashed)]);
    let (job, fx) = Job::resume(
        id(),
        nodes,
        2,
        JobStatus::Running,
        now,
        Duration::ZERO,
        RUN,
        VOTE,
        Limits::default(),
    );
    assert_eq!(fx, finish(JobStatus::Complete).to_vec());
    assert_eq!(job.status(), JobStatus::Complete);
}

#[test]
fn resume_finished_job_is_done_and_ignores_inputs() {
    let now = Instant::now();
    let nodes = stored(&[("a", NodeStatus::Succeeded)]);
    let (mut job, fx) = Job::resume(
        id(),
        nodes,
        1,
        JobStatus::Complete,
        now,
        Duration::ZERO,
        RUN,
        VOTE,
        Limits::default(),
    );
    assert!(fx.is_empty());
    assert_eq!(job.phase(), Phase::Done(JobStatus::Complete));
    assert_eq!(job.next_deadline(), None);
    assert!(job.handle(now, down("a")).is_empty());
}

#[test]
fn resume_new_job_waits_for_start() {
    let now = Instant::now();
    let nodes = stored(&[("a", NodeStatus::New)]);
    let (mut job, fx) = Job::resume(
        id(),
        nodes,
        1,
        JobStatus::New,
        now,
        Duration::ZERO,
        RUN,
        VOTE,
        Limits::default(),
    );
    assert!(fx.is_empty());
    assert_eq!(job.next_deadline(), None);
    assert_eq!(
        job.start(now, |_| true),
        vec![
            Effect::PersistJob(JobStatus::Voting),
            send("a", Command::Commit),
        ]
    );
}

#[test]
fn every_node_status_code_has_a_count_slot() {
    for s in NodeStatus::ALL {
        assert!(status_slot(*s) < SLOTS, "{s}");
    }
}

// Issue 12 §2: a node's first report to a new server process, reconciled.

fn back(node: &str, report: NodeReport) -> Input {
    Input::NodeBack {
        node: node.into(),
        report,
    }
}

#[test]
fn resume_running_job_keeps_the_persisted_run_start() {
    let now = Instant::now();
    let nodes = stored(&[("a", NodeStatus::Running)]);
    let ran = Duration::from_secs(1000);
    let (job, _) = Job::resume(
        id(),
        nodes.clone(),
        1,
        JobStatus::Running,
        now,
        ran,
        RUN,
        VOTE,
        Limits::default(),
    );
    assert_eq!(
        job.phase(),
        Phase::Running {
            deadline: now + (RUN - ran)
        },
        "restarts never extend the run timer"
    );
    // Past the timeout while the server was down: it fires at once.
    let (mut job, _) = Job::resume(
        id(),
        nodes,
        1,
        JobStatus::Running,
        now,
        RUN * 2,
        RUN,
        VOTE,
        Limits::default(),
    );
    assert_eq!(job.next_deadline(), Some(now));
    let fx = job.handle_timeout(now);
    assert_eq!(job.status(), JobStatus::TimedOut);
    assert!(fx.contains(&persist("a", NodeStatus::TimedOut)));
}

#[test]
fn a_running_node_back_idle_can_no_longer_deliver_and_crashes_at_once() {
    let now = Instant::now();
    for status in [NodeStatus::Running, NodeStatus::Ready] {
        for report in [NodeReport::Idle, NodeReport::OtherJob] {
            let nodes = stored(&[("a", status), ("b", NodeStatus::Succeeded)]);
            let (mut job, _) = Job::resume(
                id(),
                nodes,
                2,
                JobStatus::Running,
                now,
                Duration::ZERO,
                RUN,
                VOTE,
                Limits::default(),
            );
            let fx = job.handle(now, back("a", report));
            assert!(
                fx.contains(&persist("a", NodeStatus::Crashed)),
                "{status} {report:?}: {fx:?}"
            );
            assert_eq!(job.status(), JobStatus::Complete, "{status} {report:?}");
        }
    }
}

#[test]
fn a_ready_node_back_committed_is_sent_run_again() {
    let now = Instant::now();
    let nodes = stored(&[("a", NodeStatus::Ready)]);
    let (mut job, _) = Job::resume(
        id(),
        nodes,
        1,
        JobStatus::Running,
        now,
        Duration::ZERO,
        RUN,
        VOTE,
        Limits::default(),
    );
    assert_eq!(
        job.handle(now, back("a", NodeReport::Committed)),
        vec![send("a", Command::Run)]
    );
    // Its ack_run then counts as usual.
    let fx = job.handle(now, reply("a", Reply::AckRun));
    assert!(fx.contains(&persist("a", NodeStatus::Running)));
}

#[test]
fn a_ready_node_back_running_had_its_run() {
    let now = Instant::now();
    let nodes = stored(&[("a", NodeStatus::Ready)]);
    let (mut job, _) = Job::resume(
        id(),
        nodes,
        1,
        JobStatus::Running,
        now,
        Duration::ZERO,
        RUN,
        VOTE,
        Limits::default(),
    );
    let fx = job.handle(now, back("a", NodeReport::Running));
    assert!(fx.contains(&persist("a", NodeStatus::Running)), "{fx:?}");
    // A running node that says it still runs the job is left alone.
    assert!(job.handle(now, back("a", NodeReport::Running)).is_empty());
    assert!(job.handle(now, back("a", NodeReport::Committed)).is_empty());
}

#[test]
fn a_voting_node_back_is_asked_again_or_counted() {
    let now = Instant::now();
    let nodes = stored(&[
        ("a", NodeStatus::New),
        ("b", NodeStatus::New),
        ("c", NodeStatus::Ready),
    ]);
    let (mut job, _) = Job::resume(
        id(),
        nodes,
        2,
        JobStatus::Voting,
        now,
        Duration::ZERO,
        RUN,
        VOTE,
        Limits::default(),
    );
    // Lost its commit: asked again.
    assert_eq!(
        job.handle(now, back("a", NodeReport::Idle)),
        vec![send("a", Command::Commit)]
    );
    assert_eq!(
        job.handle(now, back("a", NodeReport::OtherJob)),
        vec![send("a", Command::Commit)]
    );
    // Committed, its ack lost: counted as the ack.
    let fx = job.handle(now, back("b", NodeReport::Committed));
    assert_eq!(
        fx[..2],
        [
            persist("b", NodeStatus::Ready),
            vote("b", VoteStatus::Success)
        ]
    );
    // Ready here but idle there: its commit is gone.
    let fx = job.handle(now, back("c", NodeReport::Idle));
    assert!(
        fx.contains(&persist("c", NodeStatus::Unavailable)),
        "{fx:?}"
    );
    // Terminal nodes and finished jobs ignore reports.
    assert!(job.handle(now, back("c", NodeReport::Committed)).is_empty());
}

/// Ours: our agent re-sends a result whose acknowledgement was lost; the node already
/// delivered one, so nothing changes (the store keeps the first output).
#[test]
fn a_result_delivered_again_changes_nothing() {
    let t = Instant::now();
    let mut job = running(t);
    job.handle(t, reply("a", Reply::AckRun));
    job.handle(t, reply("a", failed()));
    for again in [failed(), succeeded()] {
        assert_eq!(job.handle(t, reply("a", again)), vec![store("a")]);
        assert_eq!(job.node_status("a"), Some(NodeStatus::Failed));
    }
}

// Operators' controls (issue 15): rate control, error limit, any N.

fn limits(window: Option<usize>, errors_allowed: Option<usize>, wanted: Option<usize>) -> Limits {
    Limits {
        window,
        errors_allowed,
        wanted,
    }
}

fn statuses(job: &Job) -> Vec<(&str, NodeStatus)> {
    job.nodes().iter().map(|(n, s)| (n.as_str(), *s)).collect()
}

fn sent_run(fx: &[Effect]) -> Vec<&str> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send {
                node,
                command: Command::Run,
            } => Some(node.as_str()),
            _ => None,
        })
        .collect()
}

/// Nodes `a`..`e` all committed under `limits`: running since `t`.
fn controlled(t: Instant, limits: Limits) -> (Job, Vec<Effect>) {
    let mut job = new_job(&["a", "b", "c", "d", "e"], 5).with_limits(limits);
    job.start(t, |_| true);
    let mut fx = Vec::new();
    for n in ["a", "b", "c", "d", "e"] {
        fx = job.handle(t, reply(n, Reply::AckCommit));
    }
    assert_eq!(job.status(), JobStatus::Running);
    (job, fx)
}

#[test]
fn a_window_runs_that_many_nodes_and_the_rest_wait_for_slots_in_order() {
    let t = Instant::now();
    let (mut job, fx) = controlled(t, limits(Some(2), None, None));
    assert_eq!(sent_run(&fx), ["a", "b"]);
    assert!(fx.contains(&persist("c", NodeStatus::Waiting)));
    assert!(fx.contains(&Effect::Emit(JobEvent::RunWaiting { node: "e".into() })));
    job.handle(t, reply("a", Reply::AckRun));
    let fx = job.handle(t, reply("a", succeeded()));
    // a's slot goes to c, the first waiting node: ready again, then `run`.
    assert_eq!(sent_run(&fx), ["c"]);
    assert!(fx.contains(&persist("c", NodeStatus::Ready)));
    // A failure frees its slot too.
    job.handle(t, reply("b", Reply::AckRun));
    let fx = job.handle(t, reply("b", failed()));
    assert_eq!(sent_run(&fx), ["d"]);
    for n in ["c", "d"] {
        job.handle(t, reply(n, Reply::AckRun));
        job.handle(t, reply(n, succeeded()));
    }
    job.handle(t, reply("e", Reply::AckRun));
    let fx = job.handle(t, reply("e", succeeded()));
    assert!(fx.ends_with(&finish(JobStatus::Complete)));
}

#[test]
fn past_the_error_limit_waiting_nodes_are_skipped_and_the_job_ends_stopped() {
    let t = Instant::now();
    let (mut job, _) = controlled(t, limits(Some(2), Some(0), None));
    job.handle(t, reply("a", Reply::AckRun));
    let fx = job.handle(t, reply("a", failed()));
    assert!(sent_run(&fx).is_empty());
    for n in ["c", "d", "e"] {
        assert!(fx.contains(&persist(n, NodeStatus::Skipped)));
        assert!(fx.contains(&rehab(n)), "a skipped node is released: {n}");
    }
    // b, already running, finishes; then the job is over, honestly.
    job.handle(t, reply("b", Reply::AckRun));
    let fx = job.handle(t, reply("b", succeeded()));
    assert!(fx.ends_with(&finish(JobStatus::Stopped)));
    assert_eq!(
        statuses(&job),
        [
            ("a", NodeStatus::Failed),
            ("b", NodeStatus::Succeeded),
            ("c", NodeStatus::Skipped),
            ("d", NodeStatus::Skipped),
            ("e", NodeStatus::Skipped),
        ]
    );
}

#[test]
fn abort_and_run_timeout_reach_waiting_nodes_too() {
    let t = Instant::now();
    let (mut job, _) = controlled(t, limits(Some(1), None, None));
    let fx = job.handle(t, Input::Abort);
    for n in ["b", "c", "d", "e"] {
        assert!(fx.contains(&persist(n, NodeStatus::Aborted)));
        assert!(fx.contains(&rehab(n)));
    }
    let (mut job, _) = controlled(t, limits(Some(1), None, None));
    let fx = job.handle_timeout(t + RUN);
    assert!(fx.contains(&persist("e", NodeStatus::TimedOut)));
    assert!(fx.ends_with(&finish(JobStatus::TimedOut)));
}

#[test]
fn a_restart_resumes_the_window_where_it_was() {
    let t = Instant::now();
    let nodes = vec![
        ("a".to_owned(), NodeStatus::Succeeded),
        ("b".to_owned(), NodeStatus::Running),
        ("c".to_owned(), NodeStatus::Waiting),
        ("d".to_owned(), NodeStatus::Waiting),
    ];
    let (mut job, fx) = Job::resume(
        id(),
        nodes,
        4,
        JobStatus::Running,
        t,
        Duration::ZERO,
        RUN,
        VOTE,
        limits(Some(2), None, None),
    );
    // One slot was free (a finished before the restart): c takes it; d keeps waiting.
    assert_eq!(sent_run(&fx), ["c"]);
    // A waiting node that says it is still committed is not sent `run` early.
    let fx = job.handle(
        t,
        Input::NodeBack {
            node: "d".into(),
            report: NodeReport::Committed,
        },
    );
    assert!(fx.is_empty());
    assert_eq!(job.node_status("d"), Some(NodeStatus::Waiting));
}

#[test]
fn any_n_asks_n_nodes_and_moves_on_when_one_cannot_run() {
    let t = Instant::now();
    let mut job = new_job(&["a", "b", "c", "d"], 2).with_limits(limits(None, None, Some(2)));
    // b is offline: not asked; a and c are.
    let fx = job.start(t, |n| n != "b");
    let commits: Vec<_> = fx
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::Send {
                    command: Command::Commit,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(
        commits,
        [&send("a", Command::Commit), &send("c", Command::Commit)]
    );
    assert_eq!(job.node_status("b"), Some(NodeStatus::Unavailable));
    // a is busy with another job: d is asked in its place, with a fresh window.
    let later = t + Duration::from_secs(30);
    let fx = job.handle(later, reply("a", Reply::NackCommit));
    assert!(fx.contains(&send("d", Command::Commit)));
    assert_eq!(job.next_deadline(), Some(later + VOTE));
    job.handle(later, reply("c", Reply::AckCommit));
    let fx = job.handle(later, reply("d", Reply::AckCommit));
    assert_eq!(sent_run(&fx), ["c", "d"]);
    assert_eq!(job.status(), JobStatus::Running);
}

#[test]
fn any_n_fails_its_quorum_only_when_fewer_than_n_can_run() {
    let t = Instant::now();
    let mut job = new_job(&["a", "b", "c"], 2).with_limits(limits(None, None, Some(2)));
    job.start(t, |_| true);
    job.handle(t, reply("a", Reply::AckCommit));
    let fx = job.handle(t, reply("b", Reply::NackCommit));
    assert!(fx.contains(&send("c", Command::Commit)));
    assert_eq!(job.status(), JobStatus::Voting);
    // c never answers: voting times out with nobody left to ask.
    let fx = job.handle_timeout(t + VOTE);
    assert!(fx.contains(&vote("c", VoteStatus::VotingTimeout)));
    assert!(fx.contains(&persist("a", NodeStatus::WasReady)));
    assert!(fx.ends_with(&finish(JobStatus::QuorumFailed)));
}

#[test]
fn any_n_skips_the_nodes_it_did_not_need() {
    let t = Instant::now();
    let mut job = new_job(&["a", "b", "c"], 1).with_limits(limits(None, None, Some(1)));
    job.start(t, |_| true);
    let fx = job.handle(t, reply("a", Reply::AckCommit));
    assert_eq!(sent_run(&fx), ["a"]);
    assert!(fx.contains(&persist("b", NodeStatus::Skipped)));
    // b and c were never asked: nothing to release.
    assert!(!fx.contains(&rehab("b")));
    job.handle(t, reply("a", Reply::AckRun));
    let fx = job.handle(t, reply("a", succeeded()));
    assert!(fx.ends_with(&finish(JobStatus::Complete)));
}

#[test]
fn output_of_a_running_node_is_relayed_and_any_other_dropped() {
    let t = Instant::now();
    let mut job = running(t);
    let chunk = |node: &str| crate::events::Output {
        node: node.into(),
        stdout: Some("line\n".into()),
        stderr: None,
        dropped: 0,
    };
    job.handle(t, reply("a", Reply::AckRun));
    let fx = job.handle(t, Input::Output(chunk("a")));
    assert_eq!(fx, [Effect::RelayOutput(chunk("a"))]);
    assert!(job.handle(t, Input::Output(chunk("nobody"))).is_empty());
    job.handle(t, reply("a", succeeded()));
    assert!(
        job.handle(t, Input::Output(chunk("a"))).is_empty(),
        "a finished"
    );
}
