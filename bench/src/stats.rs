//! The run's counters: shard threads and the fetcher bump atomics; once a second the
//! main thread takes a [`Snapshot`], prints a progress line and rewrites the status file
//! (atomically: a temporary file renamed over it, so a reader never sees half a file).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

use crate::node::Reason;

/// Shared counters. Gauges (`configured`, `connected`) go up and down; the rest only up.
#[derive(Debug, Default)]
pub struct Stats {
    /// Nodes holding a config with open sockets.
    pub configured: AtomicI64,
    /// Nodes whose command channel delivered a message (CURVE handshake done, the
    /// server knows them).
    pub connected: AtomicI64,
    /// Successful config fetches.
    pub fetches: AtomicU64,
    /// Failed config fetches (each retried with backoff).
    pub fetch_errors: AtomicU64,
    /// Total and worst config fetch latency, in microseconds (successes only).
    pub fetch_micros_total: AtomicU64,
    /// See `fetch_micros_total`.
    pub fetch_micros_max: AtomicU64,
    /// Total and worst time from opening a node's sockets to the server's first
    /// message on them, in microseconds.
    pub proven_micros_total: AtomicU64,
    /// See `proven_micros_total`.
    pub proven_micros_max: AtomicU64,
    /// Channels proven (the divisor of `proven_micros_total`).
    pub proven_count: AtomicU64,
    /// The longest shard pass (timers, sockets, answers; poll wait excluded), in
    /// microseconds: past a second or so the generator, not the server, is the bottleneck.
    pub pass_micros_max: AtomicU64,
    /// Sockets that could not be made or connected.
    pub socket_errors: AtomicU64,
    /// Heartbeats sent to the server.
    pub heartbeats_sent: AtomicU64,
    /// Server heartbeats delivered to nodes.
    pub server_heartbeats: AtomicU64,
    /// Answers to `commit`.
    pub commits_acked: AtomicU64,
    /// See `commits_acked`.
    pub commits_nacked: AtomicU64,
    /// Answers to `run`.
    pub runs_acked: AtomicU64,
    /// See `runs_acked`.
    pub runs_nacked: AtomicU64,
    /// Completions sent.
    pub succeeded: AtomicU64,
    /// See `succeeded`.
    pub failed: AtomicU64,
    /// `aborted` answers.
    pub aborts_answered: AtomicU64,
    /// Reconfigures, by [`Reason`] (indexed like `Reason::ALL`).
    pub reconnects: [AtomicU64; Reason::ALL.len()],
    /// Server messages dropped: garbage, bad signature, stale timestamp.
    pub rejected: AtomicU64,
    /// Sends libzmq refused.
    pub send_failures: AtomicU64,
    /// The latest fetch error, for the operator.
    pub last_fetch_error: Mutex<Option<String>>,
}

/// Adds one.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// Counts a reconfigure.
    pub fn reconnect(&self, reason: Reason) {
        let i = Reason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("ALL lists every reason");
        bump(&self.reconnects[i]);
    }

    /// Records a successful fetch that took `micros`.
    pub fn fetched(&self, micros: u64) {
        bump(&self.fetches);
        self.fetch_micros_total.fetch_add(micros, Ordering::Relaxed);
        self.fetch_micros_max.fetch_max(micros, Ordering::Relaxed);
    }

    /// Records a node's command channel proven `after` connecting.
    pub fn proven(&self, after: std::time::Duration) {
        self.connected.fetch_add(1, Ordering::Relaxed);
        bump(&self.proven_count);
        let micros = after.as_micros() as u64;
        self.proven_micros_total
            .fetch_add(micros, Ordering::Relaxed);
        self.proven_micros_max.fetch_max(micros, Ordering::Relaxed);
    }

    /// Records one shard pass's work time.
    pub fn pass(&self, took: std::time::Duration) {
        self.pass_micros_max
            .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records a failed fetch.
    pub fn fetch_failed(&self, error: String) {
        bump(&self.fetch_errors);
        *self
            .last_fetch_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let fetches = get(&self.fetches);
        Snapshot {
            configured: self.configured.load(Ordering::Relaxed).max(0) as u64,
            connected: self.connected.load(Ordering::Relaxed).max(0) as u64,
            fetches,
            fetch_errors: get(&self.fetch_errors),
            fetch_avg_ms: match fetches {
                0 => 0.0,
                n => get(&self.fetch_micros_total) as f64 / n as f64 / 1000.0,
            },
            fetch_max_ms: get(&self.fetch_micros_max) as f64 / 1000.0,
            first_answer_avg_ms: match get(&self.proven_count) {
                0 => 0.0,
                n => get(&self.proven_micros_total) as f64 / n as f64 / 1000.0,
            },
            first_answer_max_ms: get(&self.proven_micros_max) as f64 / 1000.0,
            shard_pass_max_ms: get(&self.pass_micros_max) as f64 / 1000.0,
            socket_errors: get(&self.socket_errors),
            heartbeats_sent: get(&self.heartbeats_sent),
            server_heartbeats: get(&self.server_heartbeats),
            commits_acked: get(&self.commits_acked),
            commits_nacked: get(&self.commits_nacked),
            runs_acked: get(&self.runs_acked),
            runs_nacked: get(&self.runs_nacked),
            succeeded: get(&self.succeeded),
            failed: get(&self.failed),
            aborts_answered: get(&self.aborts_answered),
            reconnects: self.reconnects.iter().map(get).sum(),
            reconnects_by_reason: Reason::ALL
                .iter()
                .zip(&self.reconnects)
                .map(|(r, c)| (r.as_str(), get(c)))
                .collect(),
            rejected: get(&self.rejected),
            send_failures: get(&self.send_failures),
            last_fetch_error: self
                .last_fetch_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// The counters at one moment (the status file's body, with [`Status`] around it).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// See [`Stats::configured`].
    pub configured: u64,
    /// See [`Stats::connected`].
    pub connected: u64,
    /// See [`Stats::fetches`].
    pub fetches: u64,
    /// See [`Stats::fetch_errors`].
    pub fetch_errors: u64,
    /// Mean latency of successful fetches.
    pub fetch_avg_ms: f64,
    /// Worst latency of a successful fetch.
    pub fetch_max_ms: f64,
    /// Mean time from opening a node's sockets to the server's first message.
    pub first_answer_avg_ms: f64,
    /// Worst such time.
    pub first_answer_max_ms: f64,
    /// See [`Stats::pass_micros_max`].
    pub shard_pass_max_ms: f64,
    /// See [`Stats::socket_errors`].
    pub socket_errors: u64,
    /// See [`Stats::heartbeats_sent`].
    pub heartbeats_sent: u64,
    /// See [`Stats::server_heartbeats`].
    pub server_heartbeats: u64,
    /// See [`Stats::commits_acked`].
    pub commits_acked: u64,
    /// See [`Stats::commits_nacked`].
    pub commits_nacked: u64,
    /// See [`Stats::runs_acked`].
    pub runs_acked: u64,
    /// See [`Stats::runs_nacked`].
    pub runs_nacked: u64,
    /// See [`Stats::succeeded`].
    pub succeeded: u64,
    /// See [`Stats::failed`].
    pub failed: u64,
    /// See [`Stats::aborts_answered`].
    pub aborts_answered: u64,
    /// All reconfigures.
    pub reconnects: u64,
    /// Reconfigures per reason.
    pub reconnects_by_reason: std::collections::BTreeMap<&'static str, u64>,
    /// See [`Stats::rejected`].
    pub rejected: u64,
    /// See [`Stats::send_failures`].
    pub send_failures: u64,
    /// See [`Stats::last_fetch_error`].
    pub last_fetch_error: Option<String>,
}

/// The status file: the run's shape and progress around a [`Snapshot`].
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// False once the generator is shutting down.
    pub running: bool,
    /// Seconds since the run started.
    pub elapsed_secs: f64,
    /// Nodes simulated by this process.
    pub nodes: u64,
    /// When every node first had a config and sockets, seconds from the start.
    pub all_configured_after_secs: Option<f64>,
    /// When every node's command channel first worked, seconds from the start.
    pub all_connected_after_secs: Option<f64>,
    /// The counters.
    #[serde(flatten)]
    pub counts: Snapshot,
}

impl Status {
    /// The one-line progress report.
    pub fn progress_line(&self) -> String {
        let c = &self.counts;
        format!(
            "[{:>6.1}s] configured {}/{} connected {} | hb {} srv-hb {} | commit {}/{} run {}/{} done {}/{} aborted {} | reconnects {} fetch-err {} rejected {} send-fail {}",
            self.elapsed_secs,
            c.configured,
            self.nodes,
            c.connected,
            c.heartbeats_sent,
            c.server_heartbeats,
            c.commits_acked,
            c.commits_nacked,
            c.runs_acked,
            c.runs_nacked,
            c.succeeded,
            c.failed,
            c.aborts_answered,
            c.reconnects,
            c.fetch_errors,
            c.rejected,
            c.send_failures,
        )
    }

    /// Rewrites `path` with this status, atomically.
    ///
    /// # Errors
    /// When the temporary file cannot be written or renamed.
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_reconnects_and_averages_fetches() {
        let s = Stats::default();
        s.reconnect(Reason::ServerRestart);
        s.reconnect(Reason::ServerRestart);
        s.reconnect(Reason::SilentChannel);
        s.fetched(1000);
        s.fetched(3000);
        s.fetch_failed("boom".into());
        s.connected.fetch_add(2, Ordering::Relaxed);
        s.connected.fetch_sub(1, Ordering::Relaxed);
        let snap = s.snapshot();
        assert_eq!(snap.reconnects, 3);
        assert_eq!(snap.reconnects_by_reason["server_restart"], 2);
        assert_eq!(snap.reconnects_by_reason["silent_channel"], 1);
        assert_eq!(snap.fetch_avg_ms, 2.0);
        assert_eq!(snap.fetch_max_ms, 3.0);
        assert_eq!(snap.fetch_errors, 1);
        assert_eq!(snap.last_fetch_error.as_deref(), Some("boom"));
        assert_eq!(snap.connected, 1);
    }

    #[test]
    fn status_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        let mut status = Status {
            running: true,
            elapsed_secs: 1.0,
            nodes: 20,
            all_configured_after_secs: None,
            all_connected_after_secs: None,
            counts: Snapshot::default(),
        };
        status.write_to(&path).unwrap();
        status.counts.connected = 20;
        status.write_to(&path).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["connected"], 20);
        assert_eq!(v["nodes"], 20);
        assert_eq!(v["running"], true);
        assert!(v["reconnects_by_reason"].is_object());
        assert!(!dir.path().join("status.json.tmp").exists());
    }
}
