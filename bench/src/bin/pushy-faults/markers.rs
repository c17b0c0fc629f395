//! The ground truth: what the marker command really did on each node. `fault.sh` (written
//! by [`write_script`]) appends one line per event to `MARKERS/<job_id>.<node>`:
//!
//! ```text
//! start <pid> <unix time>      the command began
//! done <exit code> <unix time> it finished and is about to exit with that code
//! killed <unix time>           it got SIGTERM/SIGINT/SIGHUP (abort, run timeout) first
//! ```
//!
//! A line is appended with one `write` of a few bytes (`O_APPEND`), so a reader sees whole
//! lines. The script ignores signals once it has written `done`, so its exit code is the
//! one the marker names.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Everything one (job, node) marker file says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Run {
    /// How many times the command started.
    pub starts: u32,
    /// Exit codes of the runs that finished.
    pub done: Vec<i32>,
    /// How many runs were killed by a signal before finishing.
    pub killed: u32,
}

impl Run {
    /// Runs that started and neither finished nor were killed (yet).
    pub fn open(&self) -> u32 {
        self.starts
            .saturating_sub(self.done.len() as u32 + self.killed)
    }

    /// Parses a marker file's text; unknown lines are ignored.
    pub fn parse(text: &str) -> Run {
        let mut run = Run::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("start") => run.starts += 1,
                Some("done") => {
                    if let Some(code) = words.next().and_then(|c| c.parse().ok()) {
                        run.done.push(code);
                    }
                }
                Some("killed") => run.killed += 1,
                _ => {}
            }
        }
        run
    }

    /// A short account for reports: `ran 1x, exit 0`, `ran 1x, killed`, `never ran`.
    pub fn describe(&self) -> String {
        if self.starts == 0 {
            return "never ran".to_owned();
        }
        let mut parts = vec![format!("ran {}x", self.starts)];
        for code in &self.done {
            parts.push(format!("exit {code}"));
        }
        for _ in 0..self.killed {
            parts.push("killed".to_owned());
        }
        if self.open() > 0 {
            parts.push(format!("{} still running", self.open()));
        }
        parts.join(", ")
    }
}

/// The marker directory, re-read incrementally: only files whose size changed are read
/// again, so it can be polled every few milliseconds.
pub struct Markers {
    dir: PathBuf,
    sizes: HashMap<PathBuf, u64>,
    /// Files whose every run ended: only a full refresh reads them again.
    closed: HashSet<PathBuf>,
    /// (job id, node) to its runs.
    runs: BTreeMap<(String, String), Run>,
    /// How many `done` lines have been seen in all: a change means a command just finished.
    pub done_events: u64,
}

impl Markers {
    pub fn new(dir: &Path) -> Markers {
        Markers {
            dir: dir.to_owned(),
            sizes: HashMap::new(),
            closed: HashSet::new(),
            runs: BTreeMap::new(),
            done_events: 0,
        }
    }

    /// Reads what changed since the last call; unless `full`, files whose runs all ended
    /// are not looked at (only a second run of the same job could change them).
    pub fn refresh(&mut self, full: bool) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !full && self.closed.contains(&path) {
                continue;
            }
            let Some((job, node)) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split_once('.'))
                .map(|(j, n)| (j.to_owned(), n.to_owned()))
            else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if self.sizes.get(&path) == Some(&meta.len()) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            // Count only whole lines: a reader can race a writer's append.
            let whole = text.rfind('\n').map_or("", |i| &text[..=i]);
            let run = Run::parse(whole);
            if run.starts > 0 && run.open() == 0 {
                self.closed.insert(path.clone());
            }
            self.sizes.insert(path, whole.len() as u64);
            let before = self
                .runs
                .get(&(job.clone(), node.clone()))
                .map_or(0, |r| r.done.len());
            self.done_events += run.done.len().saturating_sub(before) as u64;
            self.runs.insert((job, node), run);
        }
    }

    /// Nodes with a command still running.
    pub fn busy_nodes(&self) -> BTreeSet<String> {
        self.runs
            .iter()
            .filter(|(_, r)| r.open() > 0)
            .map(|((_, node), _)| node.clone())
            .collect()
    }

    /// Every (job, node) with a marker.
    pub fn runs(&self) -> &BTreeMap<(String, String), Run> {
        &self.runs
    }
}

/// Writes the marker command. Arguments: the marker directory, the longest run in
/// milliseconds, the percentage of runs that exit 1. It sleeps a random time up to the
/// longest run (in the background, so a signal interrupts `wait` at once), then records
/// its exit code and exits with it.
pub fn write_script(path: &Path) -> std::io::Result<()> {
    std::fs::write(
        path,
        r#"#!/usr/bin/env bash
# pushy-faults marker command: fault.sh MARKERS MAX_MS FAIL_PERCENT
# The agent sets CHEF_PUSH_JOB_ID and CHEF_PUSH_NODE_NAME.
m="$1/$CHEF_PUSH_JOB_ID.$CHEF_PUSH_NODE_NAME"
max=$2 fail=$3
echo "start $$ $(date +%s.%N)" >>"$m"
trap 'echo "killed $(date +%s.%N)" >>"$m"; exit 143' TERM INT HUP
ms=$(( (RANDOM * 32768 + RANDOM) % (max + 1) ))
sleep "$(( ms / 1000 )).$(printf %03d $(( ms % 1000 )))" &
wait $!
code=$(( RANDOM % 100 < fail ? 1 : 0 ))
# From here on the exit code is the one recorded.
trap '' TERM INT HUP
echo "done $code $(date +%s.%N)" >>"$m"
exit $code
"#,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runs() {
        let r = Run::parse("start 1 2\ndone 1 3\n");
        assert_eq!(r.starts, 1);
        assert_eq!(r.done, vec![1]);
        assert_eq!(r.open(), 0);
        assert_eq!(r.describe(), "ran 1x, exit 1");
        let r = Run::parse("start 1 2\nkilled 3\nstart 4 5\n");
        assert_eq!((r.starts, r.killed, r.open()), (2, 1, 1));
        assert_eq!(Run::parse("").describe(), "never ran");
    }
}
