//! The agent (zmq.md §3.2–3.6, §6.2–6.4, §6.9): a thin driver around the pure
//! [`machine::Node`], which makes every decision. The driver owns what the machine must
//! not touch: the HTTP client that fetches the config, the ZeroMQ channel
//! ([`crate::channel`]), the job's process ([`crate::runner`]), chef-client's lock, the
//! clock and the signals. One task runs it: it waits for a server message, a finished
//! process (or a chunk of its live output), a signal or the machine's next deadline,
//! feeds that to the machine, and carries out the effects in order.

pub mod machine;
pub mod outgoing;

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use openssl::pkey::{PKey, Private};
use pushy_protocol::message::{ClientMessageType, CommitOptions};
use rand::SeedableRng as _;
use rand::rngs::SmallRng;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::channel::{self, ClientChannel, Endpoints, FromServer};
use crate::config::ClientConfig;
use crate::fetch::{self, ServerConfig};
use crate::runner::live::{Live, LiveChunk};
use crate::runner::{self, JobSpec, Outcome, RunnerConfig};
use crate::whitelist::Lock;
use machine::{Effect, Finished, Identity, Input, Node, Reason, SessionParams, Timings};

/// Age past which a leftover job file is removed, and how often to look (zmq.md §6.6).
const FILE_DIR_EXPIRY: Duration = Duration::from_secs(86_400);
/// How long an abort waits for the job's process group to be gone.
const ABORT_WAIT: Duration = Duration::from_secs(30);
/// How long stopping waits for the job's process group to be gone.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// What the machine needs from a fetched config; `client_max_body` is the client's own
/// message limit (the smaller of the two wins).
pub fn session_params(server: &ServerConfig, client_max_body: usize) -> SessionParams {
    SessionParams {
        interval: server.interval,
        offline_threshold: server.offline_threshold,
        lifetime: server.lifetime,
        server_incarnation: server.incarnation_id.clone(),
        curve: server.curve_server_key.is_some(),
        max_body: server
            .max_body_size
            .unwrap_or(client_max_body)
            .min(client_max_body),
    }
}

/// A finished process.
struct Done {
    job_id: String,
    outcome: Outcome,
    capture: bool,
}

/// What a job's process task tells the agent, in order: one queue for both, so the
/// result always follows the job's last `output` chunk.
enum FromJob {
    /// Output while it runs (issue 15 §2).
    Output { job_id: String, chunk: LiveChunk },
    /// It ended.
    Done(Done),
}

/// Room in the job queue. A chunk that finds it full is dropped and counted (live output
/// never waits); `Done` waits for room, which the agent's loop makes at once.
const JOB_QUEUE: usize = 8;

/// The job whose process runs.
struct RunningJob {
    job_id: String,
    /// Stops its process group.
    cancel: CancellationToken,
    /// Live output bytes lost on the way out (no connection, channel refused); the
    /// runner reports them in the job's next chunk.
    lost: Arc<AtomicU64>,
}

/// A vetted job, waiting for `run`.
struct Committed {
    job_id: String,
    spec: JobSpec,
    /// chef-client's lock, held from commit until the command starts.
    _lock: Option<nix::fcntl::Flock<File>>,
}

/// The open channel.
struct Connection {
    channel: ClientChannel,
    inbound: mpsc::Receiver<FromServer>,
    /// Send failures already reported to the machine.
    failures_seen: u64,
    /// Nothing sent on it yet: a result sent first is one kept across a reconnect.
    fresh: bool,
}

/// What woke the driver.
enum Wake {
    Input(Input),
    Timeout,
    Stop,
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
    node: Node,
    /// The latest config.
    server: Option<ServerConfig>,
    conn: Option<Connection>,
    runner: RunnerConfig,
    committed: Option<Committed>,
    /// The job whose process runs.
    running: Option<RunningJob>,
    /// The process task's reports (see [`FromJob`]).
    job_tx: mpsc::Sender<FromJob>,
    job_rx: mpsc::Receiver<FromJob>,
}

impl Agent {
    /// Reads the client key and prepares the agent.
    ///
    /// # Errors
    /// When the key cannot be read or the org cannot be found in `chef_server_url`.
    pub fn new(cfg: ClientConfig) -> anyhow::Result<Agent> {
        let org = cfg.org().map_err(|e| anyhow::anyhow!("{e}"))?;
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
        let identity = Identity {
            node: cfg.node_name.clone(),
            client: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| cfg.node_name.clone()),
            org,
            incarnation: uuid::Uuid::new_v4().to_string(),
        };
        let node = Node::new(
            identity,
            Timings::default(),
            cfg.max_body_size,
            SmallRng::from_os_rng(),
        );
        let runner = RunnerConfig {
            file_dir: cfg.file_dir.clone(),
            allowed_overwritable_env_vars: cfg.allowed_overwritable_env_vars.clone(),
            // The raw bytes kept per stream; the machine fits the message exactly.
            max_output: cfg.max_body_size,
            kill_grace: Duration::from_secs(5),
        };
        let (job_tx, job_rx) = mpsc::channel(JOB_QUEUE);
        Ok(Agent {
            key,
            http,
            curve: zmq::CurveKeyPair::new().context("libzmq cannot make CURVE keys")?,
            node,
            server: None,
            conn: None,
            runner,
            committed: None,
            running: None,
            job_tx,
            job_rx,
            cfg,
        })
    }

    /// Runs until `stop` is cancelled. `reconfigure` receives a value on SIGUSR1.
    ///
    /// # Errors
    /// When the server is a 1.x server and `allow_unencrypted` is not set, or the channel
    /// cannot be opened.
    pub async fn run(
        mut self,
        stop: CancellationToken,
        mut reconfigure: mpsc::Receiver<()>,
    ) -> anyhow::Result<()> {
        spawn_cleaner(self.cfg.file_dir.clone(), stop.clone());
        let mut effects: VecDeque<Effect> = self.node.start().into();
        loop {
            while let Some(effect) = effects.pop_front() {
                effects.extend(self.apply(effect).await?);
            }
            let deadline = self.node.next_deadline().map(Instant::from_std);
            let wake = tokio::select! {
                _ = stop.cancelled() => Wake::Stop,
                Some(()) = reconfigure.recv() => {
                    tracing::info!("reconfigure requested");
                    Wake::Input(Input::Reconfigure(Reason::Requested))
                }
                msg = inbound(&mut self.conn) => match msg {
                    Some(FromServer { received, command_socket }) => Wake::Input(Input::Server {
                        received,
                        via_command: command_socket,
                    }),
                    None => {
                        tracing::warn!("command channel closed");
                        Wake::Input(Input::Reconfigure(Reason::ChannelClosed))
                    }
                },
                Some(event) = self.job_rx.recv() => match event {
                    FromJob::Output { job_id, chunk } => Wake::Input(Input::Output { job_id, chunk }),
                    FromJob::Done(done) => match self.finished(done) {
                        Some(f) => Wake::Input(Input::Finished(f)),
                        None => continue,
                    },
                },
                _ = sleep_until_some(deadline) => Wake::Timeout,
            };
            let now = Instant::now().into_std();
            match wake {
                Wake::Stop => break,
                Wake::Input(input) => effects.extend(self.node.handle(now, input)),
                Wake::Timeout => {
                    if self.new_send_failures() {
                        effects.extend(self.node.handle(now, Input::SendFailed));
                    }
                    effects.extend(self.node.handle_timeout(now));
                }
            }
        }
        if let Some(job) = &self.running {
            // Leave no orphans: the job's process group is killed on the way out.
            job.cancel.cancel();
            let _ = tokio::time::timeout(STOP_WAIT, self.job_done()).await;
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// Carries out one effect; returns the machine's answer to what came of it.
    async fn apply(&mut self, effect: Effect) -> anyhow::Result<Vec<Effect>> {
        let now = || Instant::now().into_std();
        Ok(match effect {
            Effect::Fetch => {
                let input = self.fetch().await?;
                let failed = input == Input::FetchFailed;
                let effects = self.node.handle(now(), input);
                if failed && let Some(at) = self.node.next_deadline() {
                    tracing::info!(retry_in = ?at.saturating_duration_since(now()), "fetching the config again later");
                }
                effects
            }
            Effect::Connect => {
                self.connect()?;
                Vec::new()
            }
            Effect::Disconnect { reason, .. } => {
                match reason {
                    Reason::ServerOffline => {
                        tracing::warn!("no server heartbeats; considering the server offline")
                    }
                    Reason::SilentChannel => tracing::warn!(
                        "no messages on the command port; possible encryption problem"
                    ),
                    _ => {}
                }
                tracing::info!(reason = reason.as_str(), "reconfiguring");
                self.conn = None;
                Vec::new()
            }
            Effect::Proven { after } => {
                tracing::debug!(?after, "the command channel works");
                Vec::new()
            }
            Effect::Send(out) if out.kind == ClientMessageType::Output => {
                self.send_output(&out);
                Vec::new()
            }
            Effect::Send(out) => {
                if let Some(conn) = &mut self.conn {
                    let m = self.node.message(&out, Utc::now());
                    if std::mem::take(&mut conn.fresh)
                        && matches!(
                            m.kind,
                            ClientMessageType::Succeeded | ClientMessageType::Failed
                        )
                    {
                        // Operators and bench/faults read this line.
                        tracing::info!(
                            job_id = out.job_id.as_deref().unwrap_or_default(),
                            kind = m.kind.as_str(),
                            "sending the job's result again on the new connection"
                        );
                    }
                    if !conn.channel.send(m.to_body()) {
                        tracing::warn!(
                            kind = m.kind.as_str(),
                            "could not queue a message to the server"
                        );
                    }
                }
                Vec::new()
            }
            Effect::Vet {
                job_id,
                command,
                options,
            } => {
                let accepted = self.vet(&job_id, &command, options).await;
                self.node.handle(now(), Input::Vetted { job_id, accepted })
            }
            Effect::Start {
                job_id,
                live_output,
            } => match self.start(&job_id, live_output).await {
                Ok(()) => Vec::new(),
                Err(finished) => self.node.handle(now(), Input::Finished(finished)),
            },
            Effect::Abandon { job_id } => {
                self.abandon(&job_id).await;
                Vec::new()
            }
        })
    }

    /// Issue 15 §2: a live `output` message is best effort. It never waits and never
    /// counts as a send failure (heartbeats and results tell whether the channel works);
    /// one that cannot go out is counted in the job's next `dropped`.
    fn send_output(&mut self, out: &outgoing::Outgoing) {
        let Some(job) = self
            .running
            .as_ref()
            .filter(|j| out.job_id.as_deref() == Some(j.job_id.as_str()))
        else {
            return;
        };
        let lost = out.live.as_ref().map_or(0, LiveChunk::lost_bytes);
        let queued = self.conn.as_mut().is_some_and(|conn| {
            // Something went out on this connection: a result after it is not a resend.
            conn.fresh = false;
            let body = self.node.message(out, Utc::now()).to_body();
            conn.channel.send_droppable(body, job.lost.clone(), lost)
        });
        if !queued {
            tracing::debug!(job_id = job.job_id, "live output not sent");
            job.lost.fetch_add(lost, Ordering::Relaxed);
        }
    }

    /// Waits for the running job's process task to report its end (skipping output).
    async fn job_done(&mut self) -> Option<Done> {
        loop {
            match self.job_rx.recv().await? {
                FromJob::Output { .. } => {}
                FromJob::Done(done) => return Some(done),
            }
        }
    }

    /// Fetches the config; the machine decides when to try again.
    async fn fetch(&mut self) -> anyhow::Result<Input> {
        let ccpk = zmq::z85_encode(&self.curve.public_key).context("encoding the CURVE key")?;
        let fetched = fetch::fetch(
            &self.http,
            &self.cfg.chef_server_url,
            &self.cfg.node_name,
            &self.key,
            &ccpk,
        )
        .await;
        let server = match fetched {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "config fetch failed");
                return Ok(Input::FetchFailed);
            }
        };
        if server.curve_server_key.is_none() && !self.cfg.allow_unencrypted {
            anyhow::bail!(
                "No key returned from server; server may be using 1.x protocol. The config flag 'allow_unencrypted' disables encryption and allows use of 1.x server. Use with caution!"
            );
        }
        let params = session_params(&server, self.cfg.max_body_size);
        self.runner.max_output = params.max_body;
        self.server = Some(server);
        Ok(Input::Configured(params))
    }

    fn connect(&mut self) -> anyhow::Result<()> {
        let server = self
            .server
            .as_ref()
            .context("connecting without a config")?;
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
        let (tx, inbound) = mpsc::channel(256);
        let channel = channel::spawn(endpoints, tx).context("opening the command channel")?;
        tracing::info!(command = %server.command_addr, heartbeat = %server.out_addr, curve, "connected");
        self.conn = Some(Connection {
            channel,
            inbound,
            failures_seen: 0,
            fresh: true,
        });
        Ok(())
    }

    /// Whether the channel refused sends since last asked.
    fn new_send_failures(&mut self) -> bool {
        let Some(conn) = &mut self.conn else {
            return false;
        };
        let failures = conn
            .channel
            .send_failures
            .load(std::sync::atomic::Ordering::Relaxed);
        let new = failures > conn.failures_seen;
        conn.failures_seen = failures;
        new
    }

    /// Whether this node can run `command` (zmq.md §6.4–6.5): whitelisted, and its user,
    /// directory and file acceptable, and chef-client's lock free when the entry has one.
    async fn vet(&mut self, job_id: &str, command: &str, options: CommitOptions) -> bool {
        let refuse = |why: &str| {
            tracing::info!(job_id, command, why, "refused a commit");
            false
        };
        let Some(resolved) = self.cfg.whitelist.lookup(command) else {
            return refuse("not in the whitelist");
        };
        let spec = JobSpec {
            job_id: job_id.to_owned(),
            node_name: self.cfg.node_name.clone(),
            command_line: resolved.command_line.clone(),
            user: options.user.filter(|s| !s.is_empty()),
            dir: options.dir.filter(|s| !s.is_empty()).map(Into::into),
            env: options.env.unwrap_or_default(),
            file: options.file.filter(|s| !s.is_empty()),
            capture: options.capture,
        };
        if let Err(refusal) = runner::check_commit(&spec).await {
            return refuse(&refusal.to_string());
        }
        let lock = match &resolved.lock {
            None => None,
            Some(l) => match self.take_lock(l) {
                Ok(f) => Some(f),
                Err(why) => return refuse(&why),
            },
        };
        tracing::info!(job_id, command, "committed");
        self.committed = Some(Committed {
            job_id: job_id.to_owned(),
            spec,
            _lock: lock,
        });
        true
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

    /// Starts the committed job's command, streaming its output when the server asked for
    /// it and the commit asked for capture; the failure to report when it cannot start.
    async fn start(&mut self, job_id: &str, live_output: bool) -> Result<(), Finished> {
        let failed = || Finished {
            job_id: job_id.to_owned(),
            ok: false,
            output: None,
        };
        // Taking it releases chef-client's lock as the command starts.
        let Some(Committed { spec, .. }) = self.committed.take().filter(|c| c.job_id == job_id)
        else {
            tracing::warn!(job_id, "no vetted command to start");
            return Err(failed());
        };
        let capture = spec.capture;
        match runner::start(spec, &self.runner).await {
            Ok(running) => {
                tracing::info!(job_id, pid = running.pid(), live_output, "running");
                let cancel = CancellationToken::new();
                let lost = Arc::new(AtomicU64::new(0));
                self.running = Some(RunningJob {
                    job_id: job_id.to_owned(),
                    cancel: cancel.clone(),
                    lost: lost.clone(),
                });
                let running = if live_output && capture {
                    running.with_live(self.live(job_id, lost))
                } else {
                    running
                };
                let done = self.job_tx.clone();
                let job_id = job_id.to_owned();
                tokio::spawn(async move {
                    let outcome = running.wait(cancel).await;
                    // The agent may have stopped; then nobody needs the result.
                    let _ = done
                        .send(FromJob::Done(Done {
                            job_id,
                            outcome,
                            capture,
                        }))
                        .await;
                });
                Ok(())
            }
            Err(e) => {
                // Fixes the original, which stayed `running` forever here (zmq.md §6.6).
                tracing::warn!(job_id, error = %e, "the command could not be started");
                Err(failed())
            }
        }
    }

    /// Where the runner hands a job's chunks: the job queue, without waiting.
    fn live(&self, job_id: &str, lost: Arc<AtomicU64>) -> Live {
        let tx = self.job_tx.clone();
        let job_id = job_id.to_owned();
        Live {
            sink: Box::new(move |chunk| {
                tx.try_send(FromJob::Output {
                    job_id: job_id.clone(),
                    chunk,
                })
                .is_ok()
            }),
            lost,
        }
    }

    /// Stops the job's process group and waits for it, so "aborted" means stopped; a job
    /// not started yet just lets its lock go.
    async fn abandon(&mut self, job_id: &str) {
        if self.committed.as_ref().is_some_and(|c| c.job_id == job_id) {
            self.committed = None;
        }
        if let Some(job) = self.running.take_if(|j| j.job_id == job_id) {
            job.cancel.cancel();
            if let Ok(Some(done)) = tokio::time::timeout(ABORT_WAIT, self.job_done()).await {
                tracing::info!(job_id = done.job_id, "job aborted; its processes are gone");
            }
        }
    }

    /// A process ended: what to tell the machine, unless the job was abandoned.
    fn finished(&mut self, done: Done) -> Option<Finished> {
        self.running.take_if(|j| j.job_id == done.job_id)?;
        tracing::info!(job_id = done.job_id, ok = done.outcome.exit_ok, status = ?done.outcome.status, "job finished");
        let output = done.capture.then(|| {
            (
                done.outcome.stdout.unwrap_or_default(),
                done.outcome.stderr.unwrap_or_default(),
            )
        });
        Some(Finished {
            job_id: done.job_id,
            ok: done.outcome.exit_ok,
            output,
        })
    }
}

/// The next message from the server, or never when there is no channel.
async fn inbound(conn: &mut Option<Connection>) -> Option<FromServer> {
    match conn {
        Some(c) => c.inbound.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Job files are deleted after each job; this catches any left by a crash.
fn spawn_cleaner(file_dir: std::path::PathBuf, stop: CancellationToken) {
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
                _ = stop.cancelled() => break,
            }
        }
    });
}
