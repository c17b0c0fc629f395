//! The report: one Markdown table row per run (also appended to `--summary-file`), and
//! `report.md` in the work directory with the faults injected and every finding with the
//! server's log lines for its job (the server logs with `job_id` on every job line) and
//! the agent's lines for that node.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use crate::chaos::FaultRecord;
use crate::drive::PostCounts;
use crate::verify::{Finding, Tally};

/// What a run did besides the verdict.
pub struct RunFacts {
    pub label: String,
    pub wall_secs: f64,
    pub posts: PostCounts,
    pub refusal_samples: Vec<String>,
    pub faults: Vec<FaultRecord>,
    pub kills: u32,
    pub starts: u32,
    pub slowest_start_secs: f64,
    /// Agents whose process died, and nodes not available at the end.
    pub agents_exited: Vec<String>,
    pub nodes_unavailable: Vec<String>,
    /// Set when the run could not finish (e.g. the server did not come back).
    pub aborted: Option<String>,
    pub target_jobs: usize,
}

pub const TABLE_HEADER: &str = "| variant | jobs (201) | commands run | faults | server starts | lost | wedged | wrong | job statuses | node statuses | wall |\n|---|---|---|---|---|---|---|---|---|---|---|";

fn counts(map: &BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "—".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The run's table row.
pub fn row(facts: &RunFacts, t: &Tally) -> String {
    let faults = if facts.kills > 0 {
        format!("{} SIGKILLs", facts.kills)
    } else {
        format!("{} outages", facts.faults.len())
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} s |",
        facts.label,
        t.jobs_acked,
        t.commands_run,
        faults,
        facts.starts,
        t.lost,
        t.wedged,
        t.wrong,
        counts(&t.job_statuses),
        counts(&t.node_statuses),
        facts.wall_secs
    )
}

/// The whole report as Markdown.
pub fn markdown(facts: &RunFacts, t: &Tally, findings: &[Finding], logs: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# pushy-faults: {}\n", facts.label);
    if let Some(why) = &facts.aborted {
        let _ = writeln!(s, "**RUN ABORTED**: {why}\n");
    }
    let _ = writeln!(s, "{TABLE_HEADER}\n{}\n", row(facts, t));
    let p = &facts.posts;
    let _ = writeln!(
        s,
        "- jobs: {} answered 201 of {} wanted; {} in the server ({} of them from POSTs with no 201)",
        t.jobs_acked, facts.target_jobs, t.jobs_in_server, t.jobs_unacked
    );
    let _ = writeln!(
        s,
        "- POSTs: {} sent, {} created, {} refused connection (server down), {} without answer, refused {:?}",
        p.attempts, p.created, p.down, p.no_answer, p.refused
    );
    // A job whose POST got no answer may exist; one whose POST was refused must not.
    let refused_but_exist = t.jobs_unacked.saturating_sub(p.no_answer as usize);
    if refused_but_exist > 0 {
        let _ = writeln!(
            s,
            "- **{refused_but_exist} job(s) exist although their POST was refused** (jobs without a 201 beyond the POSTs that got no answer)"
        );
    }
    for sample in &facts.refusal_samples {
        let _ = writeln!(s, "  - {sample}");
    }
    let _ = writeln!(
        s,
        "- server: {} starts, {} SIGKILLs, slowest start to `_status` {:.1} s",
        facts.starts, facts.kills, facts.slowest_start_secs
    );
    let mut by_trigger: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for f in &facts.faults {
        let e = by_trigger.entry(f.trigger.to_string()).or_default();
        e.0 += 1;
        if f.on_cue {
            e.1 += 1;
        }
    }
    let _ = writeln!(
        s,
        "- faults by moment (count, on cue): {}",
        by_trigger
            .iter()
            .map(|(k, (n, c))| format!("{k} {n} ({c})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "- finished but recorded otherwise: {}; killed mid-run (acceptable): {}; crashed without running (acceptable): {}",
        counts(&t.finished_but_recorded),
        counts(&t.killed_runs),
        t.crashed_never_ran
    );
    let _ = writeln!(
        s,
        "- agents exited: {:?}; nodes not available at the end: {:?}",
        facts.agents_exited, facts.nodes_unavailable
    );
    let _ = writeln!(s, "- exercised (from the logs): {}", exercised(logs));
    let mut back: Vec<f64> = facts
        .faults
        .iter()
        .filter_map(|f| f.all_back_secs)
        .collect();
    back.sort_by(f64::total_cmp);
    if let (Some(median), Some(max)) = (back.get(back.len() / 2), back.last()) {
        let _ = writeln!(
            s,
            "- every agent available again after a burst: median {median:.1} s, slowest {max:.1} s"
        );
    }
    let _ = writeln!(s, "\n## Faults\n");
    for f in &facts.faults {
        let _ = writeln!(
            s,
            "- t={:.1}s at {}{}: {}{}",
            f.at,
            f.trigger,
            if f.on_cue { "" } else { " (no cue)" },
            f.what,
            f.all_back_secs
                .map(|b| format!("; every agent back {b:.1} s later"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(s, "\n## Findings ({})\n", findings.len());
    for (i, f) in findings.iter().enumerate() {
        let _ = writeln!(
            s,
            "### {:?}: job {} node {}\n\n- recorded: {}\n- marker: {}\n- why: {}\n",
            f.problem,
            f.job,
            f.node.as_deref().unwrap_or("—"),
            f.recorded,
            f.truth,
            f.why
        );
        if i < 30 {
            s.push_str(&excerpts(logs, &f.job, f.node.as_deref()));
        }
    }
    s
}

/// What the faults made the server and agents do, counted from their logs: resumed jobs,
/// results re-sent on a new connection, jobs whose writes waited for the store. A log
/// wording change shows here as 0.
fn exercised(logs: &Path) -> String {
    let mut resumes = 0;
    let mut resumed = BTreeSet::new();
    let mut waited = BTreeSet::new();
    let mut resent = 0;
    for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let job = line.split("job_id=").nth(1).map(|r| {
                r.trim_start_matches('"')
                    .chars()
                    .take(32)
                    .collect::<String>()
            });
            if name.starts_with("server.") {
                if line.contains("resumed an unfinished job") {
                    resumes += 1;
                    resumed.extend(job);
                } else if line.contains("store unavailable; the job's writes wait") {
                    waited.extend(job);
                }
            } else if line.contains("sending the job's result again") {
                resent += 1;
            }
        }
    }
    format!(
        "{resumes} job resumes after a restart ({} distinct jobs); {resent} results re-sent by \
         agents on a new connection; {} jobs whose writes waited for the store",
        resumed.len(),
        waited.len()
    )
}

/// The server's lines naming the job (each start's log in order), and the agent's for the
/// node.
fn excerpts(logs: &Path, job: &str, node: Option<&str>) -> String {
    let mut s = String::from("```text\n");
    let mut starts: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(logs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name
                .strip_prefix("server.")?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    starts.sort();
    let mut shown = 0;
    for (n, path) in starts {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(job)) {
            if shown < 80 {
                let _ = writeln!(s, "server.{n}: {line}");
            }
            shown += 1;
        }
    }
    if shown > 80 {
        let _ = writeln!(s, "… {} more server lines", shown - 80);
    }
    if let Some(node) = node {
        let text =
            std::fs::read_to_string(logs.join(format!("agent-{node}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(job)).collect();
        for line in lines.iter().take(40) {
            let _ = writeln!(s, "agent-{node}: {line}");
        }
    }
    s.push_str("```\n\n");
    s
}
