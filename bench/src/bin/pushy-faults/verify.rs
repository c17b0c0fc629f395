//! The verdict: every job the server has (and every job that answered 201) against what
//! the marker command really did on each node.
//!
//! - **LOST**: a job that answered 201 and that the server does not have; or a command
//!   that ran for a job the server does not have.
//! - **WEDGED**: a job not terminal at the end (the end comes well after the last fault:
//!   voting timeout + run timeout + a margin).
//! - **WRONG**, per node, because our agent keeps a finished job's result until the server
//!   acknowledges it and delivers it again after a restart:
//!   - `succeeded`/`failed` that contradicts the marker's exit code, or with no finished
//!     command behind it;
//!   - a command that finished but is recorded as anything other than its true result
//!     (`crashed`, `timed_out`, `aborted`, …): "finished but recorded X";
//!   - a command that started although the node is recorded as never having run it
//!     (`unavailable`, `nacked`, `was_ready`);
//!   - a command that ran more than once for one job;
//!   - a node still `new`/`ready`/`running` in a finished job.
//!
//! Acceptable, and counted apart: a command killed mid-run (abort, run timeout) recorded
//! `crashed`/`timed_out`/`aborted`; a node recorded `crashed`, `unavailable`, `nacked` or
//! `was_ready` whose command never started.

use std::collections::{BTreeMap, BTreeSet};

use pushy_protocol::job::{JobStatus, NodeStatus};

use crate::api::JobView;
use crate::markers::Run;

/// Everything known at the end.
pub struct Final {
    /// Jobs that answered 201.
    pub acked: BTreeSet<String>,
    /// Every job the server has, as read one by one.
    pub views: BTreeMap<String, JobView>,
    /// Jobs that answered 201 and that neither the list nor a GET shows.
    pub missing: BTreeSet<String>,
    pub runs: BTreeMap<(String, String), Run>,
}

/// Which count a finding goes into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    Lost,
    Wedged,
    Wrong,
}

/// One thing that is not as it should be.
#[derive(Clone, Debug)]
pub struct Finding {
    pub problem: Problem,
    pub job: String,
    pub node: Option<String>,
    /// What the server recorded.
    pub recorded: String,
    /// What the marker says.
    pub truth: String,
    pub why: String,
}

/// The counts of one run.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub jobs_acked: usize,
    pub jobs_in_server: usize,
    /// Jobs in the server whose POST did not answer 201 (no answer, or a 5xx).
    pub jobs_unacked: usize,
    pub lost: usize,
    pub wedged: usize,
    pub wrong: usize,
    pub job_statuses: BTreeMap<String, usize>,
    pub node_statuses: BTreeMap<String, usize>,
    /// Nodes whose command finished but which are recorded otherwise, by recorded status.
    pub finished_but_recorded: BTreeMap<String, usize>,
    /// Commands killed mid-run, by recorded status (acceptable).
    pub killed_runs: BTreeMap<String, usize>,
    /// Nodes recorded `crashed` whose command never started (acceptable).
    pub crashed_never_ran: usize,
    /// Commands that ran, in all.
    pub commands_run: usize,
}

pub fn check(f: &Final) -> (Tally, Vec<Finding>) {
    let mut t = Tally {
        jobs_acked: f.acked.len(),
        jobs_in_server: f.views.len(),
        jobs_unacked: f.views.keys().filter(|id| !f.acked.contains(*id)).count(),
        commands_run: f.runs.values().map(|r| r.starts as usize).sum(),
        ..Tally::default()
    };
    let mut out = Vec::new();
    for id in &f.missing {
        out.push(Finding {
            problem: Problem::Lost,
            job: id.clone(),
            node: None,
            recorded: "404".to_owned(),
            truth: ran_on(f, id),
            why: "answered 201, then the server has no such job".to_owned(),
        });
    }
    let mut foreign: BTreeSet<&String> = BTreeSet::new();
    for (job, node) in f.runs.keys() {
        if !f.views.contains_key(job) && !f.missing.contains(job) && foreign.insert(job) {
            out.push(Finding {
                problem: Problem::Lost,
                job: job.clone(),
                node: None,
                recorded: "404".to_owned(),
                truth: ran_on(f, job),
                why: format!("a command ran for it (on {node}) but the server has no such job"),
            });
        }
    }
    for (id, view) in &f.views {
        *t.job_statuses.entry(view.status.clone()).or_default() += 1;
        let job_terminal = JobStatus::from_wire_name(&view.status).is_some_and(|s| s.is_terminal());
        if !job_terminal {
            out.push(Finding {
                problem: Problem::Wedged,
                job: id.clone(),
                node: None,
                recorded: format!("{} {:?}", view.status, view.nodes),
                truth: ran_on(f, id),
                why: "not terminal well past voting + run timeout after the last fault".to_owned(),
            });
        }
        for (node, recorded) in &view.nodes {
            *t.node_statuses.entry(recorded.clone()).or_default() += 1;
            let run = f
                .runs
                .get(&(id.clone(), node.clone()))
                .cloned()
                .unwrap_or_default();
            if let Some(why) = judge_node(&mut t, job_terminal, recorded, &run) {
                out.push(Finding {
                    problem: Problem::Wrong,
                    job: id.clone(),
                    node: Some(node.clone()),
                    recorded: recorded.clone(),
                    truth: run.describe(),
                    why,
                });
            }
        }
        for ((job, node), run) in f.runs.range((id.clone(), String::new())..) {
            if job != id {
                break;
            }
            if !view.nodes.contains_key(node) {
                out.push(Finding {
                    problem: Problem::Wrong,
                    job: id.clone(),
                    node: Some(node.clone()),
                    recorded: "not a node of the job".to_owned(),
                    truth: run.describe(),
                    why: "the command ran on a node the job does not name".to_owned(),
                });
            }
        }
    }
    t.lost = out.iter().filter(|f| f.problem == Problem::Lost).count();
    t.wedged = out.iter().filter(|f| f.problem == Problem::Wedged).count();
    t.wrong = out.iter().filter(|f| f.problem == Problem::Wrong).count();
    out.sort_by(|a, b| (a.problem, &a.job, &a.node).cmp(&(b.problem, &b.job, &b.node)));
    (t, out)
}

/// Judges one node of a job: `Some(why)` when the record is wrong. Counts the acceptable
/// oddities into `t`.
fn judge_node(t: &mut Tally, job_terminal: bool, recorded: &str, run: &Run) -> Option<String> {
    let status = NodeStatus::from_wire_name(recorded)?;
    if run.starts > 1 {
        return Some(format!("the command ran {} times for one job", run.starts));
    }
    if !status.is_terminal() {
        // In an unfinished job this is part of a wedged job, reported there.
        return job_terminal.then(|| format!("the job finished but this node is still {recorded}"));
    }
    let finished = run.done.last().copied();
    match (status, finished) {
        (NodeStatus::Succeeded | NodeStatus::Failed, Some(code)) => {
            let truth = if code == 0 { "succeeded" } else { "failed" };
            (truth != recorded)
                .then(|| format!("recorded {recorded} but the command exited {code}"))
        }
        (NodeStatus::Succeeded | NodeStatus::Failed, None) => Some(format!(
            "recorded {recorded} but the command {}",
            if run.starts == 0 {
                "never ran"
            } else {
                "never finished"
            }
        )),
        (_, Some(code)) => {
            *t.finished_but_recorded
                .entry(recorded.to_owned())
                .or_default() += 1;
            Some(format!("finished (exit {code}) but recorded {recorded}"))
        }
        (NodeStatus::Unavailable | NodeStatus::Nacked | NodeStatus::WasReady, None)
            if run.starts > 0 =>
        {
            Some(format!(
                "the command started but the node is recorded {recorded} (never ran)"
            ))
        }
        (_, None) if run.starts > 0 => {
            if run.open() > 0 {
                return Some(format!(
                    "recorded {recorded} while the command was still running at the end"
                ));
            }
            *t.killed_runs.entry(recorded.to_owned()).or_default() += 1;
            None
        }
        (NodeStatus::Crashed, None) => {
            t.crashed_never_ran += 1;
            None
        }
        (_, None) => None,
    }
}

/// Where a job's command ran, for a finding: `node1: ran 1x, exit 0; node3: never ran`.
fn ran_on(f: &Final, job: &str) -> String {
    let parts: Vec<String> = f
        .runs
        .range((job.to_owned(), String::new())..)
        .take_while(|((j, _), _)| j == job)
        .map(|((_, node), run)| format!("{node}: {}", run.describe()))
        .collect();
    if parts.is_empty() {
        "no command ran".to_owned()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: &str, nodes: &[(&str, &str)]) -> JobView {
        JobView {
            status: status.to_owned(),
            nodes: nodes
                .iter()
                .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
                .collect(),
        }
    }

    fn world(views: &[(&str, JobView)], runs: &[(&str, &str, &str)]) -> Final {
        Final {
            acked: views.iter().map(|(id, _)| (*id).to_owned()).collect(),
            views: views
                .iter()
                .map(|(id, v)| ((*id).to_owned(), v.clone()))
                .collect(),
            missing: BTreeSet::new(),
            runs: runs
                .iter()
                .map(|(j, n, text)| (((*j).to_owned(), (*n).to_owned()), Run::parse(text)))
                .collect(),
        }
    }

    #[test]
    fn true_results_and_unrun_nodes_pass() {
        let f = world(
            &[(
                "a",
                view(
                    "complete",
                    &[("n1", "succeeded"), ("n2", "failed"), ("n3", "unavailable")],
                ),
            )],
            &[
                ("a", "n1", "start 1 0\ndone 0 1\n"),
                ("a", "n2", "start 1 0\ndone 1 1\n"),
            ],
        );
        let (t, findings) = check(&f);
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!((t.lost, t.wedged, t.wrong, t.commands_run), (0, 0, 0, 2));
    }

    #[test]
    fn contradictions_are_wrong() {
        let f = world(
            &[(
                "a",
                view(
                    "complete",
                    &[
                        ("n1", "succeeded"),
                        ("n2", "crashed"),
                        ("n3", "succeeded"),
                        ("n4", "unavailable"),
                        ("n5", "timed_out"),
                    ],
                ),
            )],
            &[
                ("a", "n1", "start 1 0\ndone 1 1\n"),
                ("a", "n2", "start 1 0\ndone 0 1\n"),
                ("a", "n4", "start 1 0\nkilled 1\n"),
                ("a", "n5", "start 1 0\nkilled 1\n"),
            ],
        );
        let (t, findings) = check(&f);
        let nodes: Vec<_> = findings.iter().filter_map(|f| f.node.as_deref()).collect();
        assert_eq!(nodes, ["n1", "n2", "n3", "n4"]);
        assert_eq!(t.wrong, 4);
        assert_eq!(t.finished_but_recorded.get("crashed"), Some(&1));
        assert_eq!(t.killed_runs.get("timed_out"), Some(&1));
    }

    #[test]
    fn missing_and_unfinished_jobs_are_lost_and_wedged() {
        let mut f = world(
            &[("a", view("running", &[("n1", "running")]))],
            &[("b", "n1", "start 1 0\ndone 0 1\n")],
        );
        f.acked.insert("c".to_owned());
        f.missing.insert("c".to_owned());
        let (t, _) = check(&f);
        assert_eq!((t.lost, t.wedged, t.wrong), (2, 1, 0));
    }
}
