//! Jobs (zmq.md §5): creation from a validated request, one driver task per live job
//! ([`task`]) around the pure machine ([`machine`]), user aborts, and resuming unfinished
//! jobs after a restart.

mod cluster;
pub mod controls;
mod live;
pub mod machine;
mod spec;
mod task;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use pushy_protocol::job::{JobId, JobStatus, NodeStatus, OrgGuid};
use pushy_store::{self as store, JobOptions, JobRecord, Store};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::cluster::{Cluster, Feeds, Router};
use crate::metrics::Metrics;
use crate::nodes::news::NodeNews;
use controls::Controls;
pub use live::LiveJobs;
use machine::Job;
use task::{JobContext, TaskMsg, now_seconds};

pub use crate::events::{JobEvent, RunStatus, StartInfo, VoteStatus};
pub use spec::{JobSpec, MAX_FILE_SIZE, SpecError, parse as parse_spec};

/// Settings the job machinery needs (http.md §6.1).
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// `run_timeout` of jobs that give none, seconds.
    pub default_run_timeout: u32,
    /// Time allowed for commits.
    pub voting_timeout: Duration,
    /// How long a finished job's task lingers.
    pub wait_complete_time: Duration,
    /// `server_name`, sent in `commit`.
    pub server_name: String,
}

/// What the jobs are built on.
pub struct JobsParts {
    /// The record of live jobs, shared with the registry's job sink.
    pub live: LiveJobs,
    /// Job persistence.
    pub store: Arc<dyn Store>,
    /// The way to the job's nodes (the local registry, and other instances').
    pub registry: Router,
    /// Job and org event feeds (this process's, or every instance's).
    pub events: Feeds,
    /// The cluster this instance is part of, if any.
    pub cluster: Option<Cluster>,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// Every job task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Counters of created and finished jobs.
    pub metrics: Arc<Metrics>,
}

/// Starts, aborts and resumes jobs. Cheap to clone.
#[derive(Clone)]
pub struct JobsHandle {
    store: Arc<dyn Store>,
    registry: Router,
    events: Feeds,
    cluster: Option<Cluster>,
    config: Arc<JobsConfig>,
    live: LiveJobs,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    metrics: Arc<Metrics>,
}

/// What an abort request found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortOutcome {
    /// The job was stopped and is now `aborted`.
    Aborted(Box<JobRecord>),
    /// The job had already finished with this status.
    AlreadyFinished(JobStatus),
}

/// How long an abort request waits for the job task to record the abort.
const ABORT_WAIT: Duration = Duration::from_secs(10);

/// How long creating or resuming a job waits for its start to be recorded before handing
/// that to the job's task (which retries): a store that hangs must not hang the request.
const START_WAIT: Duration = Duration::from_secs(10);

/// A job id: the last 12 characters of the org GUID, then 20 random hex digits
/// (http.md §1.4.2 keeps the org suffix as a prefix).
pub fn new_job_id(org: &OrgGuid) -> JobId {
    let guid = org.as_str().to_ascii_lowercase();
    let mut prefix: String = guid.chars().filter(char::is_ascii_hexdigit).collect();
    if prefix.len() < 12 {
        prefix = format!("{prefix:0>12}");
    }
    let prefix = &prefix[prefix.len() - 12..];
    let mut random = [0u8; 10];
    openssl::rand::rand_bytes(&mut random).expect("OpenSSL random bytes");
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    JobId::parse(&format!("{prefix}{hex}")).expect("12 + 20 lowercase hex digits")
}

impl JobsHandle {
    /// Jobs over these parts.
    pub fn new(parts: JobsParts, config: JobsConfig) -> Self {
        let JobsParts {
            live,
            store,
            registry,
            events,
            cluster,
            shutdown,
            tracker,
            metrics,
        } = parts;
        JobsHandle {
            store,
            registry,
            events,
            cluster,
            config: Arc::new(config),
            live,
            shutdown,
            tracker,
            metrics,
        }
    }

    /// Creates and starts a job; returns once it is persisted and its commits are sent,
    /// as the original does before answering 201.
    ///
    /// # Errors
    /// When the store fails; job creation itself is one transaction.
    pub async fn create(
        &self,
        org: &OrgGuid,
        requestor: &str,
        spec: JobSpec,
    ) -> Result<JobId, store::Error> {
        let id = new_job_id(org);
        let span = tracing::info_span!("job", job_id = %id, org = %org);
        // From the insert on, creation runs to its end even if the request is dropped (the
        // client gave up, e.g. while the store hung): a job row without its task would
        // stay `new` until the next restart.
        let this = self.clone();
        let (org, requestor) = (org.clone(), requestor.to_owned());
        let creating = tokio::spawn(
            async move { this.create_inner(id, &org, &requestor, spec).await }.instrument(span),
        );
        match creating.await {
            Ok(result) => result,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    async fn create_inner(
        &self,
        id: JobId,
        org: &OrgGuid,
        requestor: &str,
        spec: JobSpec,
    ) -> Result<JobId, store::Error> {
        let now = now_seconds();
        // Any N's quorum is its N: the job runs once N nodes committed.
        let quorum = spec
            .controls
            .run_on_any
            .or(spec.quorum)
            .unwrap_or(spec.nodes.len() as u32);
        let run_timeout = spec.run_timeout.unwrap_or(self.config.default_run_timeout);
        let record = JobRecord {
            id: id.clone(),
            org_id: org.clone(),
            command: spec.command,
            quorum: quorum as i32,
            run_timeout: run_timeout as i32,
            status: JobStatus::New,
            created_at: now,
            updated_at: now,
            requestor: Some(requestor.to_owned()),
            options: JobOptions {
                user: spec.user,
                dir: spec.dir,
                env: spec.env,
                capture: spec.capture_output,
                file: spec.file,
                controls: spec.controls.stored(),
            },
            nodes: spec
                .nodes
                .iter()
                .map(|n| (n.clone(), NodeStatus::New))
                .collect(),
        };
        if let Some(cluster) = &self.cluster {
            // Before the job row: a job never exists without its owner.
            cluster.db().set_owner(id.as_str(), cluster.id()).await?;
        }
        if let Err(e) = self.store.create_job(&record).await {
            // A connection lost during COMMIT leaves it unknown whether the job exists: if
            // it does, it must be started (answering 503 would leave it `new` for good).
            if !e.is_transient() {
                return Err(e);
            }
            match self.exists_after_all(org, &id).await {
                Some(true) => {
                    tracing::info!(
                        "job row committed although the store reported {e}; starting it"
                    );
                }
                Some(false) => return Err(e),
                None => {
                    // Still unknown, and the client is told it failed: make that true
                    // once the store is back.
                    self.delete_if_committed(org.clone(), id);
                    return Err(e);
                }
            }
        }
        tracing::info!(requestor, nodes = spec.nodes.len(), quorum, "job created");
        self.metrics.jobs_created.inc();
        self.events.begin_job(org, &id);
        let start = StartInfo {
            command: record.command.clone(),
            run_timeout,
            quorum,
            node_count: spec.nodes.len(),
            user: requestor.to_owned(),
            job_user: record.options.user.clone(),
            dir: record.options.dir.clone(),
            env: record.options.env.clone(),
            file_specified: record.options.file.is_some(),
            capture: record.options.capture,
        };
        self.events
            .emit(org, &id, &JobEvent::Start(start), Utc::now());

        let mut job = Job::new(
            id.clone(),
            spec.nodes.clone(),
            quorum,
            Duration::from_secs(run_timeout.into()),
            self.config.voting_timeout,
        )
        .with_limits(spec.controls.limits(spec.nodes.len()));
        let (ctx, inbox) = self.context(&id, org, &record);
        let available = self.watch(&id, org, spec.nodes.clone()).await;
        let effects = job.start(Instant::now(), |n| available.contains(n));
        // The job exists durably from here on, whatever happens to its start.
        self.start_task(ctx, job, inbox, effects).await;
        Ok(id)
    }

    /// Whether a job whose insert failed transiently exists after all, asking the store
    /// again for up to [`START_WAIT`]; `None` when the store stays away that long.
    async fn exists_after_all(&self, org: &OrgGuid, id: &JobId) -> Option<bool> {
        let deadline = Instant::now() + START_WAIT;
        let mut wait = Duration::from_millis(100);
        loop {
            match self.store.find_job(org, id).await {
                Ok(found) => return Some(found.is_some()),
                Err(_) if Instant::now() + wait < deadline => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(_) => return None,
            }
        }
    }

    /// Deletes the job, in the background once the store is back, if its insert did
    /// commit although its creation was answered with an error: a job exists only if its
    /// POST was answered 201. (It was never started, so no node heard of it. Should the
    /// server stop first, the next start resumes the job instead.)
    fn delete_if_committed(&self, org: OrgGuid, id: JobId) {
        let store = self.store.clone();
        let shutdown = self.shutdown.clone();
        let span = tracing::info_span!("job", job_id = %id, org = %org);
        self.tracker.spawn(
            async move {
                let mut wait = task::RETRY_FIRST;
                loop {
                    match store.delete_unstarted_job(&org, &id).await {
                        Ok(true) => {
                            tracing::info!("deleted the job whose creation was answered with an error although its row was committed");
                            return;
                        }
                        Ok(false) => return,
                        Err(e) if e.is_transient() => {}
                        Err(e) => {
                            tracing::error!(error = %e, "could not delete a job whose creation failed");
                            return;
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = shutdown.cancelled() => return,
                    }
                    wait = (wait * 2).min(task::RETRY_MAX);
                }
            }
            .instrument(span),
        );
    }

    fn context(
        &self,
        id: &JobId,
        org: &OrgGuid,
        record: &JobRecord,
    ) -> (JobContext, mpsc::UnboundedReceiver<TaskMsg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.live.insert(id.clone(), tx);
        let ctx = JobContext {
            id: id.clone(),
            org: org.clone(),
            store: self.store.clone(),
            registry: self.registry.clone(),
            events: self.events.clone(),
            commit: JobContext::commit_message(
                id,
                &self.config.server_name,
                &record.command,
                &record.options,
            ),
            wait_complete_time: self.config.wait_complete_time,
            shutdown: self.shutdown.clone(),
            truncated: Default::default(),
            metrics: self.metrics.clone(),
            started: Instant::now(),
        };
        (ctx, rx)
    }

    /// Registers the job's nodes with the registry; returns those available (idle) now.
    async fn watch(&self, id: &JobId, org: &OrgGuid, nodes: Vec<String>) -> HashSet<String> {
        let flags = self
            .registry
            .watch(id.clone(), org.clone(), nodes.clone())
            .await
            .unwrap_or_default();
        nodes
            .into_iter()
            .zip(flags)
            .filter(|(_, up)| *up)
            .map(|(n, _)| n)
            .collect()
    }

    /// Applies a job's first effects here (waiting at most [`START_WAIT`] for the store), so the caller's next read sees them (a GET right
    /// after the 201 shows the start), then spawns its task. If the store fails, nothing
    /// was sent (stores come first in [`JobContext::apply`]), so the task is handed the
    /// same effects to apply again, retrying while the store is away.
    async fn start_task(
        &self,
        mut ctx: JobContext,
        mut job: Job,
        inbox: mpsc::UnboundedReceiver<TaskMsg>,
        effects: Vec<machine::Effect>,
    ) {
        let initial = match tokio::time::timeout(START_WAIT, ctx.store_writes(&effects)).await {
            Ok(Ok(())) => {
                ctx.deliver(&effects).await;
                if task::begins_phase(&job, &effects) {
                    job.phase_began(Instant::now());
                }
                Vec::new()
            }
            Ok(Err(e)) => {
                tracing::warn!(job_id = %ctx.id, error = %e, "recording the job's start failed; its task retries");
                effects
            }
            Err(_) => {
                tracing::warn!(job_id = %ctx.id, "recording the job's start took over {START_WAIT:?}; its task retries");
                effects
            }
        };
        self.spawn(ctx, job, inbox, initial);
    }

    fn spawn(
        &self,
        ctx: JobContext,
        job: Job,
        inbox: mpsc::UnboundedReceiver<TaskMsg>,
        initial: Vec<machine::Effect>,
    ) {
        let live = self.live.clone();
        let id = ctx.id.clone();
        let span = tracing::info_span!("job", job_id = %ctx.id, org = %ctx.org);
        self.tracker.spawn(
            async move {
                task::run(ctx, job, inbox, initial).await;
                live.remove(&id);
            }
            .instrument(span),
        );
    }

    /// Aborts a job that has not finished: its unfinished nodes are reset and marked
    /// `aborted`, and the job ends `aborted`.
    ///
    /// # Errors
    /// When the store fails. `Ok(None)` when there is no such job in the org.
    pub async fn abort(
        &self,
        org: &OrgGuid,
        id: &JobId,
    ) -> Result<Option<AbortOutcome>, store::Error> {
        let Some(job) = self.store.find_job(org, id).await? else {
            return Ok(None);
        };
        if job.status.is_terminal() {
            return Ok(Some(AbortOutcome::AlreadyFinished(job.status)));
        }
        let inbox = self.live.inbox(id);
        match inbox {
            Some(inbox) => {
                let (tx, rx) = oneshot::channel();
                if inbox.send(TaskMsg::Abort(tx)).is_ok() {
                    // The task answers once the abort is recorded; on timeout the store
                    // still tells the truth below.
                    let _ = tokio::time::timeout(ABORT_WAIT, rx).await;
                }
            }
            None if self.abort_elsewhere(org, id).await? => {}
            None => {
                // No task drives this job (its server stopped and it was never resumed):
                // record the abort directly, in one transaction.
                let nodes: Vec<(String, NodeStatus)> = job
                    .nodes
                    .iter()
                    .filter(|(_, status)| !status.is_terminal())
                    .map(|(node, _)| (node.clone(), NodeStatus::Aborted))
                    .collect();
                self.store
                    .update_statuses(org, id, Some(JobStatus::Aborted), &nodes, now_seconds())
                    .await?;
            }
        }
        tracing::info!(job_id = %id, org = %org, "job aborted");
        let job = self
            .store
            .find_job(org, id)
            .await?
            .expect("the job was just read");
        if job.status != JobStatus::Aborted && job.status.is_terminal() {
            return Ok(Some(AbortOutcome::AlreadyFinished(job.status)));
        }
        Ok(Some(AbortOutcome::Aborted(Box::new(job))))
    }

    /// At start-up: resumes every job a previous process left `new`, `voting` or
    /// `running`, instead of marking it `crashed` as the original does. Voting starts a
    /// fresh window (nodes need it to come back); the run timer counts from the persisted
    /// run start (the job row's `updated_at`, written when it became `running` and not
    /// again until it finishes), so restarts never extend it. Each node's first report is
    /// reconciled as it comes back ([`machine::Input::NodeBack`]): it is asked again, sent
    /// `run` again, or found unable to deliver and `crashed` at once; nodes that never
    /// return are resolved by the job's windows. Returns how many jobs were resumed.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn resume_unfinished(&self) -> Result<usize, store::Error> {
        let incomplete = self.store.incomplete_jobs().await?;
        let mut resumed = 0;
        for j in &incomplete {
            if !j.ours {
                self.crash_foreign(j).await?;
                continue;
            }
            if self.resume_one(j, Vec::new()).await? {
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// Resumes one unfinished job (see [`JobsHandle::resume_unfinished`]); false when it
    /// is gone.
    async fn resume_one(
        &self,
        j: &store::IncompleteJob,
        early: Vec<(JobId, NodeNews)>,
    ) -> Result<bool, store::Error> {
        let Some(record) = self.store.find_job(&j.org_id, &j.id).await? else {
            return Ok(false);
        };
        let run_timeout = Duration::from_secs(record.run_timeout.max(0) as u64);
        let nodes: Vec<String> = record.nodes.iter().map(|(n, _)| n.clone()).collect();
        let running_for = (Utc::now() - record.updated_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        let (mut job, effects) = Job::resume(
            record.id.clone(),
            record.nodes.clone(),
            record.quorum.max(0) as u32,
            record.status,
            Instant::now(),
            running_for,
            run_timeout,
            self.config.voting_timeout,
            Controls::from_stored(record.options.controls.as_deref()).limits(record.nodes.len()),
        );
        self.events.begin_job(&record.org_id, &record.id);
        let (ctx, inbox) = self.context(&record.id, &record.org_id, &record);
        for (_, news) in early {
            self.live.deliver(&record.id, news);
        }
        self.watch(&record.id, &record.org_id, nodes.clone()).await;
        let mut effects = effects;
        if record.status == JobStatus::New {
            // Right after a start no node has reconnected yet: none is taken for down.
            // Each is asked when it comes back, within the voting window.
            effects.extend(job.start(Instant::now(), |_| true));
        }
        tracing::info!(job_id = %record.id, org = %record.org_id, status = %record.status, "resumed an unfinished job");
        self.start_task(ctx, job, inbox, effects).await;
        Ok(true)
    }

    /// A job another server left unfinished (the original, before an upgrade) cannot be
    /// resumed: its nodes ran under that server and will never report to this one (1.x
    /// clients cannot even connect). It ends `crashed`, its unfinished nodes too, as the
    /// original itself does at start-up (zmq.md §5.5), instead of running forever.
    async fn crash_foreign(&self, j: &store::IncompleteJob) -> Result<(), store::Error> {
        let Some(record) = self.store.find_job(&j.org_id, &j.id).await? else {
            return Ok(());
        };
        let nodes: Vec<(String, NodeStatus)> = record
            .nodes
            .iter()
            .filter(|(_, status)| !status.is_terminal())
            .map(|(node, _)| (node.clone(), NodeStatus::Crashed))
            .collect();
        self.store
            .update_statuses(
                &j.org_id,
                &j.id,
                Some(JobStatus::Crashed),
                &nodes,
                now_seconds(),
            )
            .await?;
        tracing::warn!(job_id = %j.id, org = %j.org_id, status = %j.status, "unfinished job written by another server: crashed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_carry_the_org_suffix() {
        let org = OrgGuid("0123456789abcdef0123456789abcdef".into());
        let id = new_job_id(&org);
        assert!(id.as_str().starts_with("456789abcdef"));
        assert_ne!(new_job_id(&org), id);
    }
}
