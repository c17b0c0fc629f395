//! The driver of one job: the only loop that awaits on its behalf. It owns the pure
//! [`Job`] machine, feeds it node messages, timer expiries and aborts, and applies the
//! effects in order — persist before the send that depends on it, so after a restart the
//! database knows every command a node may be running.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use pushy_protocol::job::{JobId, JobStatus, NodeStatus, OrgGuid};
use pushy_protocol::message::{CommitOptions, ServerMessage};
use pushy_store::{self as store, Store};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::machine::{Command, Effect, Input, Job, Phase, Reply};
use crate::cluster::{Feeds, Router};
use crate::metrics::{JobLabels, Metrics};
use crate::nodes::news::NodeNews;
use crate::nodes::registry::Input as RegistryInput;

/// What a job task's inbox carries.
pub enum TaskMsg {
    /// News of one of the job's nodes, from the registry.
    Node(NodeNews),
    /// A user abort; answered once the job has finished.
    Abort(oneshot::Sender<()>),
}

/// Everything a job task needs besides its machine.
pub(crate) struct JobContext {
    pub id: JobId,
    pub org: OrgGuid,
    pub store: Arc<dyn Store>,
    pub registry: Router,
    pub events: Feeds,
    /// The `commit` sent to every node.
    pub commit: ServerMessage,
    pub wait_complete_time: Duration,
    pub shutdown: CancellationToken,
    /// Nodes whose output arrived cut to its tail.
    pub truncated: HashSet<String>,
    pub metrics: Arc<Metrics>,
    /// When this task started (the job's creation, or its resume after a restart).
    pub started: Instant,
}

impl JobContext {
    /// The commit message for a job.
    pub fn commit_message(
        id: &JobId,
        server: &str,
        command: &str,
        options: &store::JobOptions,
    ) -> ServerMessage {
        let env = options
            .env
            .as_deref()
            .and_then(|e| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(e).ok()
            })
            .map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            });
        ServerMessage::Commit {
            job_id: id.to_string(),
            server: server.to_owned(),
            command: command.to_owned(),
            options: CommitOptions {
                user: options.user.clone(),
                dir: options.dir.clone(),
                env,
                file: options.file.clone(),
                capture: options.capture,
            },
        }
    }

    /// Tells a node its result for this job is stored (or can no longer count), so it may
    /// forget it: `ack` with the job's id (ours; the Ruby client ignores every `ack`).
    async fn ack_result(&self, node: String) {
        self.registry
            .send(RegistryInput::Send {
                org: self.org.clone(),
                node,
                message: ServerMessage::ResultAck {
                    job_id: self.id.to_string(),
                },
            })
            .await;
    }

    /// Applies effects: first every store write among them (the status changes in one
    /// transaction, then the outputs), then the rest in order. Persisting earlier than
    /// listed keeps the rule that matters (a node's state is stored before the send that
    /// depends on it) and turns a burst of thousands of transitions into one commit. And
    /// since nothing leaves the process before every write succeeded, a failed `apply`
    /// may be retried whole: the writes are idempotent and nothing was sent twice.
    /// Returns the final status once the job finished.
    pub async fn apply(&mut self, effects: &[Effect]) -> Result<Option<JobStatus>, store::Error> {
        self.store_writes(effects).await?;
        Ok(self.deliver(effects).await)
    }

    /// The half of [`JobContext::apply`] after the store: sends, events, the finish.
    pub(crate) async fn deliver(&mut self, effects: &[Effect]) -> Option<JobStatus> {
        let mut finished = None;
        for effect in effects.iter().cloned() {
            match effect {
                Effect::PersistJob(_) | Effect::PersistNode { .. } | Effect::StoreOutput { .. } => {
                }
                Effect::Send { node, command } => {
                    let message = match command {
                        Command::Commit => self.commit.clone(),
                        Command::Run => ServerMessage::Run {
                            job_id: self.id.to_string(),
                            // Our agent then streams the output it captures (issue
                            // 15 §2); other clients ignore the key.
                            live_output: matches!(
                                &self.commit,
                                ServerMessage::Commit { options, .. } if options.capture
                            ),
                        },
                    };
                    self.registry
                        .send(RegistryInput::Send {
                            org: self.org.clone(),
                            node,
                            message,
                        })
                        .await;
                }
                Effect::Rehab { node } => {
                    self.registry
                        .send(RegistryInput::Rehab {
                            org: self.org.clone(),
                            node,
                        })
                        .await;
                }
                Effect::RelayOutput(output) => {
                    self.events.output(&self.org, &self.id, &output, Utc::now());
                }
                Effect::Emit(event) => {
                    tracing::debug!(event = event.name(), "job event");
                    self.events.emit(&self.org, &self.id, &event, Utc::now());
                }
                Effect::Finished(status) => {
                    tracing::info!(%status, "job finished");
                    self.metrics
                        .jobs_finished
                        .get_or_create(&JobLabels {
                            status: status.to_string(),
                        })
                        .inc();
                    self.metrics
                        .job_duration
                        .observe(self.started.elapsed().as_secs_f64());
                    finished = Some(status);
                }
            }
        }
        finished
    }
}

impl JobContext {
    /// The store half of [`JobContext::apply`].
    pub(crate) async fn store_writes(&self, effects: &[Effect]) -> Result<(), store::Error> {
        let (job, nodes) = status_changes(effects);
        if job.is_some() || !nodes.is_empty() {
            self.store
                .update_statuses(&self.org, &self.id, job, &nodes, now_seconds())
                .await?;
        }
        for effect in effects {
            let Effect::StoreOutput {
                node,
                stdout,
                stderr,
            } = effect
            else {
                continue;
            };
            // PostgreSQL text cannot hold NUL; both stores get the same replacement the agent
            // uses for bytes that are not UTF-8.
            let (stdout, stderr) = (without_nul(stdout), without_nul(stderr));
            match self
                .store
                .insert_output(
                    &self.id,
                    node,
                    &stdout,
                    &stderr,
                    self.truncated.contains(node),
                )
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(node, "output already stored for this node; kept the first");
                }
                Err(e) if e.is_transient() => return Err(e),
                // Output the store refuses for good must not cost the job its record.
                Err(e) => tracing::error!(node, error = %e, "output not stored"),
            }
        }
        Ok(())
    }

    /// [`JobContext::apply`], retried while the store is unavailable (issue 12 §3: an
    /// outage must never end a job's life or falsify its record). Waits back off from
    /// [`RETRY_FIRST`] to [`RETRY_MAX`]; the job's timers wait too, since nothing can be
    /// recorded meanwhile. A permanent error is returned at once, and so is the last
    /// error if the server stops while waiting (the job then stays as stored, for the next
    /// start to resume).
    pub(crate) async fn apply_retrying(
        &mut self,
        effects: Vec<Effect>,
    ) -> Result<Option<JobStatus>, store::Error> {
        let mut wait = RETRY_FIRST;
        let mut failures = 0u32;
        loop {
            let attempt = match tokio::time::timeout(WRITE_TIMEOUT, self.apply(&effects)).await {
                Ok(result) => result,
                // A connection gone silent (not refused) can hold a statement for as long
                // as TCP retransmits. Dropping the attempt drops its connection; the
                // writes are idempotent, so retrying one that did land changes nothing.
                Err(_) => Err(store::Error::TimedOut(WRITE_TIMEOUT)),
            };
            match attempt {
                Err(e) if e.is_transient() => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(error = %e, failures, "store unavailable; the job's writes wait for it");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.shutdown.cancelled() => return Err(e),
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
                other => {
                    if failures > 0 && other.is_ok() {
                        tracing::info!(failures, "store back; the job's writes went through");
                    }
                    return other;
                }
            }
        }
    }
}

fn without_nul(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Longest one attempt at a job's writes may take before it counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// First and longest wait between retries of a job's writes while the store is away.
pub(crate) const RETRY_FIRST: Duration = Duration::from_millis(100);
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(5);

/// The job's last status and each node's last status among `effects`, nodes in the order
/// of their first change: within one transaction only the final value is ever seen.
fn status_changes(effects: &[Effect]) -> (Option<JobStatus>, Vec<(String, NodeStatus)>) {
    let mut job = None;
    let mut nodes: Vec<(String, NodeStatus)> = Vec::new();
    let mut slot: HashMap<&str, usize> = HashMap::new();
    for effect in effects {
        match effect {
            Effect::PersistJob(status) => job = Some(*status),
            Effect::PersistNode { node, status } => match slot.get(node.as_str()) {
                Some(&i) => nodes[i].1 = *status,
                None => {
                    slot.insert(node, nodes.len());
                    nodes.push((node.clone(), *status));
                }
            },
            _ => {}
        }
    }
    (job, nodes)
}

/// Now, to the second, as the store keeps times.
pub(crate) fn now_seconds() -> chrono::DateTime<Utc> {
    let now = Utc::now();
    chrono::Timelike::with_nanosecond(&now, 0).unwrap_or(now)
}

/// Runs a job until it finishes, then unwatches its nodes: first applies `initial` (the
/// effects of starting or resuming it, which the job's creator did not wait for), then
/// drives the machine. On shutdown it stops without touching the job's stored state, so
/// a restart can resume it.
pub(crate) async fn run(
    mut ctx: JobContext,
    mut job: Job,
    mut inbox: mpsc::UnboundedReceiver<TaskMsg>,
    initial: Vec<Effect>,
) {
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    // Nodes whose result is in the batch being applied: acknowledged once it is stored.
    let mut results: Vec<String> = Vec::new();
    let mut finished = false;
    let mut pending = Some(initial);
    while !finished {
        let deadline = job.next_deadline();
        let effects = if let Some(initial) = pending.take() {
            initial
        } else if matches!(job.phase(), Phase::Done(_)) {
            break;
        } else {
            tokio::select! {
            // In this order: what already reached the job counts before its timer, even
            // when the job was held up past the deadline (a store outage, retried above):
            // a node's result that arrived in time must not be recorded `timed_out`.
            biased;
            msg = inbox.recv() => match msg {
                Some(msg) => {
                    let mut effects = Vec::new();
                    receive(&mut ctx, &mut job, msg, &mut waiters, &mut effects, &mut results);
                    // Take whatever else already waits, so a burst (thousands of nodes
                    // answering one commit) is handled and persisted as one batch.
                    let mut taken = 1;
                    while taken < MAX_BATCH && !matches!(job.phase(), Phase::Done(_)) {
                        let Ok(msg) = inbox.try_recv() else { break };
                        receive(&mut ctx, &mut job, msg, &mut waiters, &mut effects, &mut results);
                        taken += 1;
                    }
                    effects
                }
                None => break,
            },
            _ = sleep_until(deadline) => job.handle_timeout(Instant::now()),
            _ = ctx.shutdown.cancelled() => {
                tracing::info!("server stopping; job left for the next start to resume");
                ctx.registry.send(RegistryInput::Unwatch { job: ctx.id.clone() }).await;
                return;
            }
            }
        };
        let begins = begins_phase(&job, &effects);
        let applied = ctx.apply_retrying(effects).await;
        if applied.is_ok() {
            if begins {
                job.phase_began(Instant::now());
            }
            for node in results.drain(..) {
                ctx.ack_result(node).await;
            }
        }
        match applied {
            Ok(Some(_)) => finished = true,
            Ok(None) => {}
            Err(e) if e.is_transient() => {
                // Only while stopping: what was not stored was not sent either, so the
                // stored job is consistent and the next start resumes it.
                tracing::info!(error = %e, "server stopping during a store outage; job left for the next start to resume");
                ctx.registry
                    .send(RegistryInput::Unwatch {
                        job: ctx.id.clone(),
                    })
                    .await;
                return;
            }
            Err(e) => {
                crash(&ctx, &job, &e).await;
                finished = true;
            }
        }
    }
    ctx.registry
        .send(RegistryInput::Unwatch {
            job: ctx.id.clone(),
        })
        .await;
    for w in waiters {
        // The aborting request may have given up waiting; nothing to do then.
        let _ = w.send(());
    }
    linger(&ctx, inbox).await;
}

/// The store refused a write for good: the job cannot keep its record straight. Marks it
/// crashed (best effort) and resets its nodes, as the original's job monitor.
async fn crash(ctx: &JobContext, job: &Job, e: &store::Error) {
    tracing::error!(error = %e, "store failed; job crashed");
    let _ = ctx
        .store
        .update_statuses(
            &ctx.org,
            &ctx.id,
            Some(JobStatus::Crashed),
            &[],
            now_seconds(),
        )
        .await;
    for (node, _) in job.nodes() {
        ctx.registry
            .send(RegistryInput::Rehab {
                org: ctx.org.clone(),
                node: node.clone(),
            })
            .await;
    }
    ctx.events.abandon_job(&ctx.id);
}

/// A finished job's task stays `wait_complete_time` longer, so late aborts get their
/// answer and late results their acknowledgement.
async fn linger(ctx: &JobContext, mut inbox: mpsc::UnboundedReceiver<TaskMsg>) {
    let linger = tokio::time::sleep(ctx.wait_complete_time);
    tokio::pin!(linger);
    loop {
        tokio::select! {
            _ = &mut linger => break,
            msg = inbox.recv() => match msg {
                Some(TaskMsg::Abort(done)) => { let _ = done.send(()); }
                Some(TaskMsg::Node(news)) => {
                    // Too late to count, but the node may stop keeping it.
                    if let Some(node) = result_of(&news) {
                        ctx.ack_result(node.to_owned()).await;
                    }
                }
                None => break,
            },
        }
    }
}

/// Whether `effects` enter the job's current phase (a timed one), so its timer should
/// count from when they are applied: see [`Job::phase_began`].
pub(crate) fn begins_phase(job: &Job, effects: &[Effect]) -> bool {
    let status = job.status();
    matches!(status, JobStatus::Voting | JobStatus::Running)
        && effects.contains(&Effect::PersistJob(status))
}

/// Most inbox messages handled before their effects are applied.
const MAX_BATCH: usize = 4096;

/// The node whose `succeeded`/`failed` this is.
fn result_of(news: &NodeNews) -> Option<&str> {
    match news {
        NodeNews::Reply {
            node,
            reply: Reply::Succeeded { .. } | Reply::Failed { .. },
        } => Some(node),
        _ => None,
    }
}

/// Feeds one inbox message to the machine, adding its effects to `effects` and the node
/// of a result to `results`.
fn receive(
    ctx: &mut JobContext,
    job: &mut Job,
    msg: TaskMsg,
    waiters: &mut Vec<oneshot::Sender<()>>,
    effects: &mut Vec<Effect>,
    results: &mut Vec<String>,
) {
    let input = match msg {
        TaskMsg::Abort(done) => {
            waiters.push(done);
            Input::Abort
        }
        TaskMsg::Node(news) => {
            tracing::debug!(?news, "node news");
            if let Some(node) = result_of(&news) {
                results.push(node.to_owned());
            }
            match news {
                NodeNews::Reply { node, reply } => Input::Reply { node, reply },
                NodeNews::Down { node } => Input::NodeDown { node },
                NodeNews::Back { node, report } => Input::NodeBack { node, report },
                NodeNews::OutputTruncated { node } => {
                    ctx.truncated.insert(node);
                    return;
                }
                NodeNews::Output(output) => Input::Output(output),
            }
        }
    };
    effects.extend(job.handle(Instant::now(), input));
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
