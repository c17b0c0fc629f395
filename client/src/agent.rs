//! The agent's life (zmq.md §3.2–3.6, §6.2–6.4, §6.9): fetch the config, open the
//! channel, heartbeat, track the server's heartbeats, run one job at a time, and
//! reconfigure — single-flight, without touching a running job, on lifetime expiry, on a server
//! restart (incarnation change, with splay), on a silent command channel, on send
//! failures and on SIGUSR1. A job's result is kept until the server acknowledges it and
//! is sent first on every new connection ([`crate::pending`]), so a result produced
//! across a server restart is not lost. One task owns all of this state; the ZeroMQ
//! thread and the job's process are the only other actors.

use std::fs::File;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use openssl::pkey::{PKey, Private};
use pushy_protocol::message::{ClientMessage, ClientMessageType, JobRef};
use rand::Rng as _;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::channel::{self, ClientChannel, Endpoints, FromServer};
use crate::config::ClientConfig;
use crate::fetch::{self, ServerConfig};
use crate::pending::PendingResult;
use crate::runner::{self, Captured, JobSpec, Outcome, RunnerConfig};
use crate::whitelist::Lock;

/// How long the command channel may stay silent after connecting before the agent
/// assumes CURVE failed and reconfigures (zmq.md §3.5).
const COMMAND_SILENCE: Duration = Duration::from_secs(3);
/// Age past which a leftover job file is removed, and how often to look (zmq.md §6.6).
const FILE_DIR_EXPIRY: Duration = Duration::from_secs(86_400);
/// Longest delay between failed config fetches (the original always waits ~120 s).
/// Retries start at the heartbeat interval (at least [`FETCH_RETRY_MIN`]) and double up to
/// this, with jitter, so a node (and a result it holds) comes back soon after the server
/// does.
const FETCH_RETRY: Duration = Duration::from_secs(30);
/// Shortest delay between failed config fetches.
const FETCH_RETRY_MIN: Duration = Duration::from_secs(1);

/// The one job this node is on.
enum JobState {
    Idle,
    Committed {
        job_id: String,
        spec: JobSpec,
        /// chef-client's lock, held from commit until the command starts.
        _lock: Option<nix::fcntl::Flock<File>>,
    },
    Running {
        job_id: String,
        cancel: CancellationToken,
    },
}

impl JobState {
    fn name(&self) -> &'static str {
        match self {
            JobState::Idle => "idle",
            JobState::Committed { .. } => "committed",
            JobState::Running { .. } => "running",
        }
    }

    fn job_id(&self) -> Option<&str> {
        match self {
            JobState::Idle => None,
            JobState::Committed { job_id, .. } | JobState::Running { job_id, .. } => Some(job_id),
        }
    }
}

/// A finished process.
struct Done {
    job_id: String,
    outcome: Outcome,
    capture: bool,
}

/// The certificates in Chef's `trusted_certs_dir` (`*.crt`, `*.pem`), so a Chef Server
/// with a self-signed certificate can be verified rather than not checked.
fn trusted_certs(dir: Option<&std::path::Path>) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let Some(dir) = dir else {
        return Ok(Vec::new());
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut certs = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "crt" || e == "pem") {
            let pem =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            certs.push(
                reqwest::Certificate::from_pem(&pem)
                    .with_context(|| format!("reading {}", path.display()))?,
            );
        }
    }
    Ok(certs)
}

/// The agent.
pub struct Agent {
    cfg: ClientConfig,
    key: PKey<Private>,
    http: reqwest::Client,
    curve: zmq::CurveKeyPair,
    incarnation: String,
    hostname: String,
    sequence: u64,
    job: JobState,
    /// The last result sent, until the server acknowledges it.
    pending: PendingResult,
    /// The message size limit of the latest config (the client's own before the first).
    max_body: usize,
    /// The heartbeat interval of the latest config: the first config-fetch retry delay.
    interval: Option<Duration>,
    done_tx: mpsc::Sender<Done>,
    done_rx: mpsc::Receiver<Done>,
}

/// Why the session with the current config ended.
enum SessionEnd {
    Reconfigure,
    Stop,
}

fn jitter(d: Duration) -> Duration {
    // `d × (1 − U[0, 0.1))`, as the original spreads its reconfigures.
    d.mul_f64(1.0 - rand::rng().random_range(0.0..0.1))
}

impl Agent {
    /// Reads the client key and prepares the agent.
    ///
    /// # Errors
    /// When the key cannot be read or the org cannot be found in `chef_server_url`.
    pub fn new(cfg: ClientConfig) -> anyhow::Result<Agent> {
        cfg.org().map_err(|e| anyhow::anyhow!("{e}"))?;
        let pem = std::fs::read_to_string(&cfg.client_key)
            .with_context(|| format!("reading {}", cfg.client_key.display()))?;
        let key = pushy_protocol::keys::private_key_from_pem(&pem)
            .with_context(|| format!("reading {}", cfg.client_key.display()))?;
        // No pooled connections: a config fetch after a server restart must reach the new
        // process, not a keep-alive connection to the one that is shutting down.
        let mut http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(fetch::REST_TIMEOUT)
            .tls_danger_accept_invalid_certs(!cfg.verify_tls());
        for cert in trusted_certs(cfg.trusted_certs_dir.as_deref())? {
            http = http.add_root_certificate(cert);
        }
        let http = http.build()?;
        let (done_tx, done_rx) = mpsc::channel(4);
        Ok(Agent {
            key,
            http,
            curve: zmq::CurveKeyPair::new().context("libzmq cannot make CURVE keys")?,
            incarnation: uuid::Uuid::new_v4().to_string(),
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| cfg.node_name.clone()),
            sequence: 0,
            job: JobState::Idle,
            pending: PendingResult::default(),
            max_body: cfg.max_body_size,
            interval: None,
            done_tx,
            done_rx,
            cfg,
        })
    }

    /// Runs until `stop` is cancelled. `reconfigure` receives a value on SIGUSR1.
    ///
    /// # Errors
    /// When the server is a 1.x server and `allow_unencrypted` is not set.
    pub async fn run(
        mut self,
        stop: CancellationToken,
        mut reconfigure: mpsc::Receiver<()>,
    ) -> anyhow::Result<()> {
        let ccpk = zmq::z85_encode(&self.curve.public_key).context("encoding the CURVE key")?;
        // Job files are deleted after each job; this catches any left by a crash.
        let file_dir = self.cfg.file_dir.clone();
        let cleaner_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                match runner::clean_file_dir(&file_dir, FILE_DIR_EXPIRY).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(removed = n, dir = %file_dir.display(), "removed stale job files")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, dir = %file_dir.display(), "cleaning the job file directory failed")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(FILE_DIR_EXPIRY) => {}
                    _ = cleaner_stop.cancelled() => break,
                }
            }
        });
        let mut retry: Option<Duration> = None;
        loop {
            let server = match fetch::fetch(
                &self.http,
                &self.cfg.chef_server_url,
                &self.cfg.node_name,
                &self.key,
                &ccpk,
            )
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    let delay =
                        fetch_retry_delay(retry, self.interval, self.pending.job_id().is_some());
                    retry = Some(delay);
                    let wait = jitter(delay);
                    tracing::warn!(error = %e, retry_in = ?wait, "config fetch failed");
                    if self.wait_offline(Instant::now() + wait, &stop).await {
                        continue;
                    }
                    break;
                }
            };
            retry = None;
            self.interval = Some(server.interval);
            if server.curve_server_key.is_none() && !self.cfg.allow_unencrypted {
                anyhow::bail!(
                    "No key returned from server; server may be using 1.x protocol. The config flag 'allow_unencrypted' disables encryption and allows use of 1.x server. Use with caution!"
                );
            }
            match self.session(&server, &stop, &mut reconfigure).await? {
                SessionEnd::Reconfigure => continue,
                SessionEnd::Stop => break,
            }
        }
        if let JobState::Running { cancel, .. } = &self.job {
            // Leave no orphans: the job's process group is killed on the way out.
            cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), self.done_rx.recv()).await;
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// Waits until `until` without a connection; a job that finishes meanwhile has its
    /// result kept for the next one. False when the agent is stopping.
    async fn wait_offline(&mut self, until: Instant, stop: &CancellationToken) -> bool {
        loop {
            tokio::select! {
                _ = sleep_until(until) => return true,
                _ = stop.cancelled() => return false,
                Some(done) = self.done_rx.recv() => self.finish(None, done),
            }
        }
    }

    async fn session(
        &mut self,
        server: &ServerConfig,
        stop: &CancellationToken,
        reconfigure: &mut mpsc::Receiver<()>,
    ) -> anyhow::Result<SessionEnd> {
        let (tx, mut inbound) = mpsc::channel(256);
        let max_body = server
            .max_body_size
            .unwrap_or(self.cfg.max_body_size)
            .min(self.cfg.max_body_size);
        let endpoints = Endpoints {
            out_addr: server.out_addr.clone(),
            command_addr: server.command_addr.clone(),
            curve: server.curve_server_key.map(|k| {
                (
                    k,
                    zmq::CurveKeyPair {
                        public_key: self.curve.public_key,
                        secret_key: self.curve.secret_key,
                    },
                )
            }),
            session_key: server.session_key,
            server_key: server.server_key.clone(),
            max_skew: server.max_message_skew,
            max_body: 1 << 20,
        };
        let curve = endpoints.curve.is_some();
        let chan = channel::spawn(endpoints, tx).context("opening the command channel")?;
        tracing::info!(command = %server.command_addr, heartbeat = %server.out_addr, curve, "connected");
        self.max_body = max_body;
        // Before any heartbeat: a restarted server adopts a node whose first message names
        // a job it is still part of (an "idle" heartbeat first would mark it crashed).
        self.resend_pending(&chan);
        let runner_cfg = RunnerConfig {
            file_dir: self.cfg.file_dir.clone(),
            allowed_overwritable_env_vars: self.cfg.allowed_overwritable_env_vars.clone(),
            // The raw bytes kept per stream; `finish` fits the message exactly.
            max_output: max_body,
            kill_grace: Duration::from_secs(5),
        };

        let started = Instant::now();
        let mut command_seen = false;
        let mut online = true;
        let mut offline_counter = 0u32;
        let mut online_counter = 0u32;
        let mut next_beat = Instant::now();
        let mut reconfigure_at = Instant::now() + jitter(server.lifetime);
        let mut want_reconfigure = false;
        let mut failures_seen = 0u64;
        loop {
            // The job lives in the agent, not in the connection, so reconfiguring never
            // interrupts it; its result goes out on the new connection.
            if want_reconfigure {
                return Ok(SessionEnd::Reconfigure);
            }
            let silence_check = (curve && !command_seen).then_some(started + COMMAND_SILENCE);
            tokio::select! {
                _ = stop.cancelled() => return Ok(SessionEnd::Stop),
                Some(()) = reconfigure.recv() => {
                    tracing::info!("reconfigure requested");
                    want_reconfigure = true;
                }
                msg = inbound.recv() => {
                    let Some(FromServer { body, command_socket }) = msg else {
                        tracing::warn!("command channel closed");
                        return Ok(SessionEnd::Reconfigure);
                    };
                    command_seen |= command_socket;
                    if body["type"] == "heartbeat" {
                        offline_counter = 0;
                        if !online {
                            online_counter += 1;
                            if online_counter > server.online_threshold {
                                online = true;
                                tracing::info!("server back online");
                            }
                        }
                        if body["incarnation_id"].as_str().is_some_and(|i| i != server.incarnation_id) && !want_reconfigure {
                            // A restarted server: reconfigure after a random splay so a
                            // fleet does not stampede it.
                            let splay = server.interval.mul_f64(rand::rng().random_range(0.0..1.0));
                            tracing::info!(?splay, "server restarted; reconfiguring");
                            reconfigure_at = reconfigure_at.min(Instant::now() + splay);
                        }
                    } else {
                        self.dispatch(&chan, &body, &runner_cfg).await;
                    }
                }
                Some(done) = self.done_rx.recv() => self.finish(Some(&chan), done),
                _ = sleep_until(next_beat) => {
                    next_beat = Instant::now() + server.interval;
                    if online {
                        if offline_counter > server.offline_threshold {
                            online = false;
                            online_counter = 0;
                            tracing::warn!("no server heartbeats; considering the server offline");
                            want_reconfigure = true;
                        } else {
                            offline_counter += 1;
                        }
                    }
                    if online {
                        let m = self.message(ClientMessageType::Heartbeat);
                        self.send(&chan, m);
                    }
                    let failures = chan.send_failures.load(std::sync::atomic::Ordering::Relaxed);
                    if failures > failures_seen {
                        failures_seen = failures;
                        // Only ever earlier: repeated failures must not postpone it (§6.9 bug).
                        reconfigure_at = reconfigure_at.min(Instant::now() + jitter(Duration::from_secs(60)));
                    }
                }
                _ = sleep_until(reconfigure_at) => {
                    want_reconfigure = true;
                    reconfigure_at = Instant::now() + Duration::from_secs(5);
                }
                _ = sleep_until(silence_check.unwrap_or(started + Duration::from_secs(86_400 * 365))), if silence_check.is_some() => {
                    tracing::warn!("no messages on the command port; possible encryption problem; reconfiguring");
                    command_seen = true;
                    want_reconfigure = true;
                }
            }
        }
    }

    fn message(&mut self, kind: ClientMessageType) -> ClientMessage {
        self.sequence += 1;
        ClientMessage {
            node: self.cfg.node_name.clone(),
            client: self.hostname.clone(),
            protocol_version: Some("2.0".into()),
            org: self.cfg.org().unwrap_or_default(),
            kind,
            sequence: self.sequence,
            timestamp: Utc::now(),
            incarnation_id: self.incarnation.clone(),
            job_state: (kind == ClientMessageType::Heartbeat).then(|| self.job.name().to_owned()),
            // `job_id` is always present, `null` when idle (zmq.md §2.7.2).
            job_id: self
                .job
                .job_id()
                .map_or(JobRef::None, |j| JobRef::Id(j.to_owned())),
            stdout: None,
            stderr: None,
            output_truncated: false,
        }
    }

    fn reply(&mut self, kind: ClientMessageType, job_id: Option<&str>) -> ClientMessage {
        let mut m = self.message(kind);
        m.job_id = job_id.map_or(JobRef::None, |j| JobRef::Id(j.to_owned()));
        m
    }

    fn send(&self, chan: &ClientChannel, m: ClientMessage) {
        if !chan.send(m.to_body()) {
            tracing::warn!(
                kind = m.kind.as_str(),
                "could not queue a message to the server"
            );
        }
    }

    async fn dispatch(&mut self, chan: &ClientChannel, body: &Value, runner_cfg: &RunnerConfig) {
        let job_id = body["job_id"].as_str().map(str::to_owned);
        match body["type"].as_str().unwrap_or_default() {
            "commit" => {
                self.pending.handle_commit(job_id.as_deref());
                self.commit(chan, body, job_id).await;
            }
            "run" => self.start_run(chan, job_id, runner_cfg).await,
            "abort" => {
                self.pending.handle_abort();
                self.abort(chan).await;
            }
            "ack" => {
                if self.pending.handle_ack(job_id.as_deref()) {
                    tracing::debug!(job_id, "the server has the job's result");
                }
            }
            other => tracing::debug!(kind = other, "ignored a server message"),
        }
    }

    /// Sends the kept result, if any, with a fresh sequence and timestamp.
    fn resend_pending(&mut self, chan: &ClientChannel) {
        let Some(mut m) = self.pending.poll_resend(Instant::now().into_std()) else {
            return;
        };
        self.sequence += 1;
        m.sequence = self.sequence;
        m.timestamp = Utc::now();
        tracing::info!(
            job_id = self.pending.job_id(),
            kind = m.kind.as_str(),
            "sending the job's result again on the new connection"
        );
        self.send(chan, m);
    }

    /// Sends a job's result (when connected) and keeps it until the server has it.
    fn send_result(&mut self, chan: Option<&ClientChannel>, m: ClientMessage) {
        self.pending.hold(m.clone(), Instant::now().into_std());
        match chan {
            Some(chan) => self.send(chan, m),
            None => tracing::info!(
                job_id = self.pending.job_id(),
                "not connected; the result goes out on the next connection"
            ),
        }
    }

    async fn commit(&mut self, chan: &ClientChannel, body: &Value, job_id: Option<String>) {
        let (Some(job_id), Some(command)) = (job_id, body["command"].as_str()) else {
            let m = self.reply(ClientMessageType::NackCommit, body["job_id"].as_str());
            return self.send(chan, m);
        };
        let nack = |me: &mut Self, why: &str| {
            tracing::info!(job_id, command, why, "refused a commit");
            let m = me.reply(ClientMessageType::NackCommit, Some(&job_id));
            me.send(chan, m);
        };
        if !matches!(self.job, JobState::Idle) {
            return nack(self, "busy with another job");
        }
        let Some(resolved) = self.cfg.whitelist.lookup(command) else {
            return nack(self, "not in the whitelist");
        };
        let env = body["env"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let spec = JobSpec {
            job_id: job_id.clone(),
            node_name: self.cfg.node_name.clone(),
            command_line: resolved.command_line.clone(),
            user: body["user"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            dir: body["dir"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(Into::into),
            env,
            file: body["file"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            capture: body["capture"].as_bool().unwrap_or(false),
        };
        if let Err(refusal) = runner::check_commit(&spec).await {
            return nack(self, &refusal.to_string());
        }
        let lock = match &resolved.lock {
            None => None,
            Some(l) => match self.take_lock(l) {
                Ok(f) => Some(f),
                Err(why) => return nack(self, &why),
            },
        };
        tracing::info!(job_id, command, "committed");
        self.job = JobState::Committed {
            job_id: job_id.clone(),
            spec,
            _lock: lock,
        };
        let m = self.reply(ClientMessageType::AckCommit, Some(&job_id));
        self.send(chan, m);
    }

    /// Takes chef-client's run lock without truncating it (fixes the original, which
    /// truncated the file and then never answered, zmq.md §6.4).
    fn take_lock(&self, lock: &Lock) -> Result<nix::fcntl::Flock<File>, String> {
        let path = self.cfg.lock_path(lock);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("opening lock {}: {e}", path.display()))?;
        // Released when dropped: when the command starts or the job is abandoned.
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| format!("chef-client is running (lock {} held)", path.display()))
    }

    async fn start_run(
        &mut self,
        chan: &ClientChannel,
        job_id: Option<String>,
        runner_cfg: &RunnerConfig,
    ) {
        let spec = match std::mem::replace(&mut self.job, JobState::Idle) {
            JobState::Committed {
                job_id: committed,
                spec,
                ..
            } if Some(&committed) == job_id.as_ref() => spec,
            other => {
                self.job = other;
                let m = self.reply(ClientMessageType::NackRun, job_id.as_deref());
                return self.send(chan, m);
            }
        };
        let job_id = spec.job_id.clone();
        let capture = spec.capture;
        let cancel = CancellationToken::new();
        self.job = JobState::Running {
            job_id: job_id.clone(),
            cancel: cancel.clone(),
        };
        let ack = self.reply(ClientMessageType::AckRun, Some(&job_id));
        self.send(chan, ack);
        match runner::start(spec, runner_cfg).await {
            Ok(running) => {
                tracing::info!(job_id, pid = running.pid(), "running");
                let done = self.done_tx.clone();
                tokio::spawn(async move {
                    let outcome = running.wait(cancel).await;
                    // The agent may have stopped; then nobody needs the result.
                    let _ = done
                        .send(Done {
                            job_id,
                            outcome,
                            capture,
                        })
                        .await;
                });
            }
            Err(e) => {
                // Fixes the original, which stayed `running` forever here (zmq.md §6.6).
                tracing::warn!(job_id, error = %e, "the command could not be started");
                self.job = JobState::Idle;
                let m = self.reply(ClientMessageType::Failed, Some(&job_id));
                self.send_result(Some(chan), m);
            }
        }
    }

    fn finish(&mut self, chan: Option<&ClientChannel>, done: Done) {
        let current =
            matches!(&self.job, JobState::Running { job_id, .. } if *job_id == done.job_id);
        if !current {
            // Aborted meanwhile: `aborted` was already sent.
            return;
        }
        self.job = JobState::Idle;
        let kind = if done.outcome.exit_ok {
            ClientMessageType::Succeeded
        } else {
            ClientMessageType::Failed
        };
        let mut m = self.reply(kind, Some(&done.job_id));
        if done.capture {
            let out = done.outcome.stdout.unwrap_or_default();
            let err = done.outcome.stderr.unwrap_or_default();
            attach_output(&mut m, out, err, self.max_body);
        }
        tracing::info!(job_id = done.job_id, ok = done.outcome.exit_ok, status = ?done.outcome.status, "job finished");
        self.send_result(chan, m);
    }

    async fn abort(&mut self, chan: &ClientChannel) {
        let job_id = self.job.job_id().map(str::to_owned);
        if let JobState::Running { cancel, .. } = std::mem::replace(&mut self.job, JobState::Idle) {
            // Kill the process group and wait for it, so "aborted" means stopped.
            cancel.cancel();
            if let Ok(Some(done)) =
                tokio::time::timeout(Duration::from_secs(30), self.done_rx.recv()).await
            {
                tracing::info!(job_id = done.job_id, "job aborted; its processes are gone");
            }
        }
        let m = self.reply(ClientMessageType::Aborted, job_id.as_deref());
        self.send(chan, m);
    }
}

/// How long to wait before fetching the config again after a failure: the heartbeat
/// interval first (at least [`FETCH_RETRY_MIN`]), then doubling up to [`FETCH_RETRY`], so
/// a fleet does not hammer a server that is away. Except while the agent holds a result
/// the server has not acknowledged: the job's run timer counts on at the server, so that
/// node keeps retrying at the first delay (only such nodes do).
fn fetch_retry_delay(
    previous: Option<Duration>,
    interval: Option<Duration>,
    holding_result: bool,
) -> Duration {
    let first = interval.unwrap_or(FETCH_RETRY).max(FETCH_RETRY_MIN);
    match previous {
        Some(d) if !holding_result => (d * 2).min(FETCH_RETRY),
        _ => first,
    }
}

/// Puts the newest output that fits into `m`, so the body stays within `max_body` bytes:
/// the room left by everything else is measured on the message itself (with the largest
/// sequence number and the truncation flag, which can only make it longer), and the
/// output is measured JSON-escaped.
fn attach_output(m: &mut ClientMessage, out: Captured, err: Captured, max_body: usize) {
    let mut frame = m.clone();
    frame.sequence = u64::MAX;
    frame.stdout = Some(String::new());
    frame.stderr = Some(String::new());
    frame.output_truncated = true;
    let budget = max_body.saturating_sub(frame.to_body().len());
    let (out, err) = runner::fit_output(out, err, budget);
    m.output_truncated = out.truncated || err.truncated;
    m.stdout = Some(out.text);
    m.stderr = Some(err.text);
}

#[cfg(test)]
mod tests {
    use pushy_protocol::message::JobRef;

    use super::*;

    #[test]
    fn config_retries_back_off_unless_a_result_waits() {
        let second = Duration::from_secs(1);
        let first = fetch_retry_delay(None, Some(second), false);
        assert_eq!(first, second.max(FETCH_RETRY_MIN));
        let mut d = first;
        for _ in 0..10 {
            d = fetch_retry_delay(Some(d), Some(second), false);
        }
        assert_eq!(d, FETCH_RETRY);
        // A result the server has not acknowledged races the job's run timer.
        assert_eq!(
            fetch_retry_delay(Some(FETCH_RETRY), Some(second), true),
            first
        );
        assert_eq!(fetch_retry_delay(None, None, false), FETCH_RETRY);
    }

    fn succeeded() -> ClientMessage {
        ClientMessage {
            node: "node-1".into(),
            client: "host".into(),
            protocol_version: Some("2.0".into()),
            org: "org".into(),
            kind: ClientMessageType::Succeeded,
            sequence: 12,
            timestamp: Utc::now(),
            incarnation_id: uuid::Uuid::new_v4().to_string(),
            job_state: None,
            job_id: JobRef::Id("0123456789abcdef0123456789abcdef".into()),
            stdout: None,
            stderr: None,
            output_truncated: false,
        }
    }

    #[test]
    fn fixes_large_output_fills_the_message_instead_of_vanishing() {
        let text: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
        let out = Captured {
            text,
            truncated: false,
        };
        let err = Captured {
            text: "warning: \"quoted\"\n".into(),
            truncated: false,
        };
        let mut m = succeeded();
        attach_output(&mut m, out, err, 63_000);
        let len = m.to_body().len();
        assert!((62_950..=63_000).contains(&len), "{len}");
        assert!(m.stdout.as_deref().unwrap().ends_with("\n200000\n"));
        assert_eq!(m.stderr.as_deref(), Some("warning: \"quoted\"\n"));
        assert!(m.output_truncated);
    }

    #[test]
    fn small_output_is_sent_whole() {
        let mut m = succeeded();
        let out = Captured {
            text: "\0\u{1}\u{FFFD}\nline2\n".into(),
            truncated: false,
        };
        attach_output(&mut m, out.clone(), Captured::default(), 63_000);
        assert_eq!(m.stdout.as_deref(), Some(out.text.as_str()));
        assert_eq!(m.stderr.as_deref(), Some(""));
        assert!(!m.output_truncated);
    }
}
