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

/// Which stream a line of live output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a node's live output (issue 15 §2), or a note that some was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputLine {
    /// The node.
    pub node: String,
    /// Its stream.
    pub stream: Stream,
    /// The text, without its newline.
    pub text: String,
}

impl OutputLine {
    /// `web01 | text` for stdout, `web01 ! text` for stderr (as `salt` and `bolt --stream`
    /// prefix each line with its node); on a terminal the node is cyan and the stderr mark
    /// red.
    pub fn render(&self, colour: bool) -> String {
        let mark = match self.stream {
            Stream::Stdout => "|",
            Stream::Stderr => "!",
        };
        if colour {
            let mark = match self.stream {
                Stream::Stdout => mark.to_owned(),
                Stream::Stderr => format!("\x1b[31m{mark}\x1b[0m"),
            };
            format!("\x1b[36m{}\x1b[0m {mark} {}", self.node, self.text)
        } else {
            format!("{} {mark} {}", self.node, self.text)
        }
    }
}

/// Cuts `run_output` events into whole lines per node and stream; a line split across
/// events is held until its end arrives (or the job ends).
#[derive(Debug, Default)]
pub struct OutputLines {
    partial: BTreeMap<(String, Stream), String>,
}

impl OutputLines {
    /// The complete lines one `run_output` event's data adds, in order (stdout first);
    /// bytes the node dropped are reported as a line of their own on stderr.
    pub fn push(&mut self, data: &Value) -> Vec<OutputLine> {
        let Some(node) = data["node"].as_str() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, stream) in [("stdout", Stream::Stdout), ("stderr", Stream::Stderr)] {
            let Some(text) = data[key].as_str() else {
                continue;
            };
            let buf = self.partial.entry((node.to_owned(), stream)).or_default();
            buf.push_str(text);
            while let Some(nl) = buf.find('\n') {
                let line: String = buf.drain(..=nl).collect();
                out.push(OutputLine {
                    node: node.to_owned(),
                    stream,
                    text: line.trim_end_matches(['\n', '\r']).to_owned(),
                });
            }
        }
        if let Some(n) = data["dropped"].as_u64().filter(|n| *n > 0) {
            out.push(OutputLine {
                node: node.to_owned(),
                stream: Stream::Stderr,
                text: format!("[{n} bytes of output not sent live; `job output` has the tail]"),
            });
        }
        out
    }

    /// The unfinished lines, once the job is over.
    pub fn flush(&mut self) -> Vec<OutputLine> {
        std::mem::take(&mut self.partial)
            .into_iter()
            .filter(|(_, text)| !text.is_empty())
            .map(|((node, stream), text)| OutputLine { node, stream, text })
            .collect()
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
    fn live_output_is_cut_into_lines_per_node_and_stream() {
        let mut lines = OutputLines::default();
        let got = lines.push(&json!({"node": "web01", "stdout": "one\ntw", "stderr": "oops\n"}));
        let text: Vec<_> = got.iter().map(|l| l.render(false)).collect();
        assert_eq!(text, ["web01 | one", "web01 ! oops"]);
        let got = lines.push(&json!({"node": "web02", "stdout": "x"}));
        assert!(got.is_empty());
        let got = lines.push(&json!({"node": "web01", "stdout": "o\r\n", "dropped": 10}));
        let text: Vec<_> = got.iter().map(|l| l.render(false)).collect();
        assert_eq!(
            text,
            [
                "web01 | two",
                "web01 ! [10 bytes of output not sent live; `job output` has the tail]"
            ]
        );
        let rest: Vec<_> = lines.flush().iter().map(|l| l.render(false)).collect();
        assert_eq!(rest, ["web02 | x"]);
        let coloured = OutputLine {
            node: "n".into(),
            stream: Stream::Stderr,
            text: "t".into(),
        };
        assert_eq!(coloured.render(true), "\x1b[36mn\x1b[0m \x1b[31m!\x1b[0m t");
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
