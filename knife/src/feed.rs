//! The per-job event feed (http.md §3): an incremental Server-Sent Events parser and the
//! job's progress as its events tell it. Pure: bytes in, events and counts out; the
//! network loop is [`crate::wait`].

use std::collections::BTreeMap;

use pushy_protocol::job::{JobStatus, NodeStatus};
use serde_json::Value;

/// One event: `event:`, `id:` and the (joined) `data:` lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The event name (`message` when the server sent none).
    pub name: String,
    /// The event id, if any.
    pub id: Option<String>,
    /// The data, lines joined with `\n`.
    pub data: String,
}

/// Splits a byte stream into events; keepalive comments are dropped.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    name: Option<String>,
    id: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if let Some(e) = self.line(&line) {
                out.push(e);
            }
        }
        out
    }

    /// The stream ended: an event still pending (the original server omits the final
    /// blank line, http.md §3.4) is complete.
    pub fn finish(&mut self) -> Option<Event> {
        if !self.buf.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
            let line = rest.trim_end_matches('\r').to_owned();
            if let Some(e) = self.line(&line) {
                return Some(e);
            }
        }
        self.dispatch()
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.name = Some(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<Event> {
        let name = self.name.take();
        let id = self.id.take();
        let data = self.data.take()?;
        Some(Event {
            name: name.unwrap_or_else(|| "message".to_owned()),
            id,
            data,
        })
    }
}

/// A node as the events describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// No vote yet.
    Waiting,
    /// Committed; not started.
    Committed,
    /// Committed, waiting for a slot under rate control.
    Queued,
    /// Never started: not needed (any N), or the error limit was passed.
    Skipped,
    /// Did not commit (refused, down, no answer).
    Refused,
    /// Running the command.
    Running,
    /// Exit code 0.
    Succeeded,
    /// Non-zero exit, crashed, refused the run, timed out, aborted.
    Failed,
}

impl NodeState {
    /// The state a node status in a job body stands for.
    fn from_status(s: NodeStatus) -> NodeState {
        match s {
            NodeStatus::New => NodeState::Waiting,
            NodeStatus::Ready => NodeState::Committed,
            NodeStatus::Waiting => NodeState::Queued,
            NodeStatus::Skipped => NodeState::Skipped,
            NodeStatus::Running => NodeState::Running,
            NodeStatus::Succeeded => NodeState::Succeeded,
            NodeStatus::Failed
            | NodeStatus::Crashed
            | NodeStatus::TimedOut
            | NodeStatus::Aborted => NodeState::Failed,
            NodeStatus::Nacked
            | NodeStatus::Unavailable
            | NodeStatus::WasReady
            | NodeStatus::Faulty => NodeState::Refused,
        }
    }
}

/// The phase of the job, for knife's state line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing heard yet.
    Initialized,
    /// Nodes are voting.
    Voting,
    /// Quorum reached; the command runs.
    Running,
    /// The job finished with this status.
    Finished(JobStatus),
}

/// Counts for the progress bar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Target nodes.
    pub total: usize,
    /// Nodes that committed (whatever happened after).
    pub voted: usize,
    /// Nodes that committed and have not finished: the "in progress" count.
    pub in_progress: usize,
    /// Nodes running the command now.
    pub running: usize,
    /// Nodes waiting for a slot (rate control).
    pub waiting: usize,
    /// Nodes that succeeded.
    pub done: usize,
    /// Nodes that refused, failed or crashed.
    pub failed: usize,
}

/// What the feed has said about one job so far.
#[derive(Clone, Debug)]
pub struct Progress {
    total: usize,
    nodes: BTreeMap<String, NodeState>,
    phase: Phase,
}

impl Progress {
    /// A job with `total` target nodes and no events yet.
    pub fn new(total: usize) -> Progress {
        Progress {
            total,
            nodes: BTreeMap::new(),
            phase: Phase::Initialized,
        }
    }

    /// The job's phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The final status, once the job finished.
    pub fn finished(&self) -> Option<JobStatus> {
        match self.phase {
            Phase::Finished(s) => Some(s),
            _ => None,
        }
    }

    /// Applies one event (http.md §3.3). Events with data we cannot read change nothing.
    pub fn handle(&mut self, e: &Event) {
        let Ok(data) = serde_json::from_str::<Value>(&e.data) else {
            return;
        };
        let node = data["node"].as_str().map(str::to_owned);
        let status = data["status"].as_str().unwrap_or_default();
        match (e.name.as_str(), node) {
            ("start", _) => {
                if let Some(n) = data["node_count"].as_u64() {
                    self.total = n as usize;
                }
                self.phase = Phase::Voting;
            }
            ("quorum_vote", Some(n)) => {
                let s = if status == "success" {
                    NodeState::Committed
                } else {
                    NodeState::Refused
                };
                self.nodes.insert(n, s);
            }
            ("quorum_succeeded", _) => self.phase = Phase::Running,
            ("run_waiting", Some(n)) => {
                self.nodes.insert(n, NodeState::Queued);
            }
            ("run_start", Some(n)) => {
                self.nodes.insert(n, NodeState::Running);
                self.phase = Phase::Running;
            }
            ("run_complete", Some(n)) => {
                let s = if status == "success" {
                    NodeState::Succeeded
                } else {
                    NodeState::Failed
                };
                self.nodes.insert(n, s);
            }
            ("job_complete", _) => {
                if let Some(s) = JobStatus::from_wire_name(status) {
                    self.phase = Phase::Finished(s);
                }
            }
            ("summary", _) => self.apply_job(&data),
            _ => {}
        }
    }

    /// Takes the state of a whole job body (the `summary` event, or a `GET` of the job).
    pub fn apply_job(&mut self, job: &Value) {
        if let Some(map) = job["nodes"].as_object() {
            self.nodes.clear();
            for (status, names) in map {
                let Some(s) = NodeStatus::from_wire_name(status) else {
                    continue;
                };
                for name in names.as_array().into_iter().flatten() {
                    if let Some(n) = name.as_str() {
                        self.nodes.insert(n.to_owned(), NodeState::from_status(s));
                    }
                }
            }
            self.total = self.total.max(self.nodes.len());
        }
        self.phase = match job["status"].as_str().and_then(JobStatus::from_wire_name) {
            Some(s) if s.is_terminal() => Phase::Finished(s),
            Some(JobStatus::Running) => Phase::Running,
            Some(JobStatus::Voting) => Phase::Voting,
            _ => self.phase,
        };
    }

    /// Node counts. "In progress" counts *nodes* that committed and have not finished
    /// (knife-push counted distinct status names instead, ops.md §7.2 step 6).
    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            total: self.total,
            ..Counts::default()
        };
        for s in self.nodes.values() {
            match s {
                NodeState::Waiting => {}
                NodeState::Committed => {
                    c.voted += 1;
                    c.in_progress += 1;
                }
                NodeState::Running => {
                    c.voted += 1;
                    c.in_progress += 1;
                    c.running += 1;
                }
                NodeState::Queued => {
                    c.voted += 1;
                    c.in_progress += 1;
                    c.waiting += 1;
                }
                NodeState::Skipped => c.voted += 1,
                NodeState::Succeeded => {
                    c.voted += 1;
                    c.done += 1;
                }
                NodeState::Failed => {
                    c.voted += 1;
                    c.failed += 1;
                }
                NodeState::Refused => c.failed += 1,
            }
        }
        c
    }

    /// knife-push's state line: `Initialized.`, `Voting.`, `Running (k/n in progress) ...`,
    /// or the final status capitalised (`Complete.`, `Quorum_failed.`, `Timed_out.`).
    pub fn state_line(&self) -> String {
        match self.phase {
            Phase::Initialized => "Initialized.".to_owned(),
            Phase::Voting => "Voting.".to_owned(),
            Phase::Running => {
                let c = self.counts();
                if c.waiting > 0 {
                    format!(
                        "Running ({}/{} in progress, {} waiting) ...",
                        c.in_progress, c.total, c.waiting
                    )
                } else {
                    format!("Running ({}/{} in progress) ...", c.in_progress, c.total)
                }
            }
            Phase::Finished(s) => {
                let name = s.wire_name();
                let mut chars = name.chars();
                let first = chars.next().map(|c| c.to_ascii_uppercase());
                format!(
                    "{}{}.",
                    first.map(String::from).unwrap_or_default(),
                    chars.as_str()
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(name: &str, data: Value) -> Event {
        Event {
            name: name.into(),
            id: None,
            data: data.to_string(),
        }
    }

    #[test]
    fn parses_events_across_chunks_and_skips_keepalives() {
        let mut p = Parser::default();
        let mut events = p.push(b"event: start\nid: job-1\ndata: {\"a\":");
        assert!(events.is_empty());
        events.extend(p.push(b"1}\n\n:keepalive\nevent: job_complete\r\nid: job-2\r\n"));
        events.extend(p.push(b"data: {}\r\n\r\n"));
        assert_eq!(
            events,
            vec![
                Event {
                    name: "start".into(),
                    id: Some("job-1".into()),
                    data: "{\"a\":1}".into()
                },
                Event {
                    name: "job_complete".into(),
                    id: Some("job-2".into()),
                    data: "{}".into()
                },
            ]
        );
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn a_final_event_without_its_blank_line_is_kept() {
        let mut p = Parser::default();
        assert!(p.push(b"event: summary\nid: job-1\ndata: {}").is_empty());
        let e = p.finish().unwrap();
        assert_eq!((e.name.as_str(), e.data.as_str()), ("summary", "{}"));
    }

    #[test]
    fn rate_control_shows_waiting_nodes() {
        let mut p = Progress::new(3);
        p.handle(&ev("start", json!({"node_count": 3})));
        for n in ["a", "b", "c"] {
            p.handle(&ev("quorum_vote", json!({"node": n, "status": "success"})));
        }
        p.handle(&ev("quorum_succeeded", json!({})));
        p.handle(&ev("run_waiting", json!({"node": "b"})));
        p.handle(&ev("run_waiting", json!({"node": "c"})));
        p.handle(&ev("run_start", json!({"node": "a"})));
        let c = p.counts();
        assert_eq!((c.running, c.waiting, c.in_progress), (1, 2, 3));
        assert_eq!(p.state_line(), "Running (3/3 in progress, 2 waiting) ...");
        p.handle(&ev(
            "run_complete",
            json!({"node": "a", "status": "success"}),
        ));
        p.handle(&ev("run_start", json!({"node": "b"})));
        assert_eq!(p.counts().waiting, 1);
        p.apply_job(&json!({"status": "running", "nodes": {"waiting": ["c"], "skipped": []}}));
        assert_eq!(p.counts().waiting, 1);
    }

    #[test]
    fn follows_a_normal_job() {
        let mut p = Progress::new(0);
        assert_eq!(p.state_line(), "Initialized.");
        p.handle(&ev("start", json!({"node_count": 3})));
        assert_eq!(p.state_line(), "Voting.");
        p.handle(&ev(
            "quorum_vote",
            json!({"node": "a", "status": "success"}),
        ));
        p.handle(&ev(
            "quorum_vote",
            json!({"node": "b", "status": "success"}),
        ));
        p.handle(&ev("quorum_vote", json!({"node": "c", "status": "down"})));
        p.handle(&ev("quorum_succeeded", json!({})));
        assert_eq!(p.state_line(), "Running (2/3 in progress) ...");
        p.handle(&ev("run_start", json!({"node": "a"})));
        p.handle(&ev("run_start", json!({"node": "b"})));
        p.handle(&ev(
            "run_complete",
            json!({"node": "a", "status": "success"}),
        ));
        assert_eq!(
            p.counts(),
            Counts {
                total: 3,
                voted: 2,
                in_progress: 1,
                running: 1,
                waiting: 0,
                done: 1,
                failed: 1
            }
        );
        p.handle(&ev(
            "run_complete",
            json!({"node": "b", "status": "failure"}),
        ));
        p.handle(&ev("job_complete", json!({"status": "complete"})));
        assert_eq!(p.finished(), Some(JobStatus::Complete));
        assert_eq!(p.state_line(), "Complete.");
    }

    #[test]
    fn fixes_in_progress_counts_nodes_not_status_names() {
        // Three nodes all running: knife-push printed "1/3" (one distinct status name).
        let mut p = Progress::new(3);
        p.apply_job(&json!({"status": "running", "nodes": {"running": ["a", "b", "c"]}}));
        assert_eq!(p.state_line(), "Running (3/3 in progress) ...");
    }

    #[test]
    fn summary_and_terminal_names() {
        let mut p = Progress::new(2);
        p.handle(&ev(
            "summary",
            json!({"status": "quorum_failed", "nodes": {"nacked": ["a"], "was_ready": ["b"]}}),
        ));
        assert_eq!(p.finished(), Some(JobStatus::QuorumFailed));
        assert_eq!(p.state_line(), "Quorum_failed.");
        assert_eq!(p.counts().failed, 2);
        p.handle(&ev("job_complete", json!({"status": "timed_out"})));
        assert_eq!(p.state_line(), "Timed_out.");
        // Unreadable data changes nothing.
        p.handle(&Event {
            name: "start".into(),
            id: None,
            data: "{".into(),
        });
        assert_eq!(p.state_line(), "Timed_out.");
    }
}
