//! Jobs: creating them from a validated request, deciding their quorum, and the abort
//! and start-up recovery paths (http.md §5.5, zmq.md §5).
//!
//! Every node's availability comes from [`NodesHandle`]; a node that is not tracked as
//! available is `down` at creation and ends `unavailable` (http.md §5.5 step 1.4).

mod event;
mod spec;

use std::sync::Arc;

use chrono::{DateTime, Timelike, Utc};
use pushy_protocol::job::{JobId, JobStatus, NodeStatus, OrgGuid};
use tracing::Instrument as _;

use crate::nodes::NodesHandle;
use crate::store::{self, JobOptions, JobRecord, Store};

pub use event::{JobEvent, RunStatus, StartInfo, VoteStatus};
pub use spec::{JobSpec, MAX_FILE_SIZE, SpecError, parse as parse_spec};

/// The 32-zero `last_updated_by` the original writes when it cleans up at start-up.
pub const CLEANUP_UPDATER: &str = "00000000000000000000000000000000";

/// Starts, aborts and recovers jobs. Cheap to clone.
#[derive(Clone)]
pub struct JobsHandle {
    store: Arc<dyn Store>,
    nodes: NodesHandle,
    default_run_timeout: u32,
}

/// What an abort request found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortOutcome {
    /// The job was stopped and is now `aborted`.
    Aborted(Box<JobRecord>),
    /// The job had already finished with this status.
    AlreadyFinished(JobStatus),
}

fn now_seconds() -> DateTime<Utc> {
    let now = Utc::now();
    now.with_nanosecond(0).unwrap_or(now)
}

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
    /// Jobs over this store and node registry; `default_run_timeout` in seconds.
    pub fn new(store: Arc<dyn Store>, nodes: NodesHandle, default_run_timeout: u32) -> Self {
        JobsHandle {
            store,
            nodes,
            default_run_timeout,
        }
    }

    /// Creates and starts a job; returns once it is persisted and voting has begun, as
    /// the original does before answering 201.
    ///
    /// # Errors
    /// When the store fails; nothing is left half-written (one transaction).
    pub async fn create(
        &self,
        org: &OrgGuid,
        requestor: &str,
        spec: JobSpec,
    ) -> Result<JobId, store::Error> {
        let id = new_job_id(org);
        let span = tracing::info_span!("job", job_id = %id, org = %org);
        self.create_inner(id, org, requestor, spec)
            .instrument(span)
            .await
    }

    async fn create_inner(
        &self,
        id: JobId,
        org: &OrgGuid,
        requestor: &str,
        spec: JobSpec,
    ) -> Result<JobId, store::Error> {
        let now = now_seconds();
        let quorum = spec.quorum.unwrap_or(spec.nodes.len() as u32);
        let record = JobRecord {
            id: id.clone(),
            org_id: org.clone(),
            command: spec.command,
            quorum: quorum as i32,
            run_timeout: spec.run_timeout.unwrap_or(self.default_run_timeout) as i32,
            status: JobStatus::New,
            created_at: now,
            updated_at: now,
            options: JobOptions {
                user: spec.user,
                dir: spec.dir,
                env: spec.env,
                capture: spec.capture_output,
                file: spec.file,
            },
            nodes: spec
                .nodes
                .iter()
                .map(|n| (n.clone(), NodeStatus::New))
                .collect(),
        };
        self.store.create_job(&record).await?;
        tracing::info!(requestor, nodes = spec.nodes.len(), quorum, "job created");
        self.store
            .update_job_status(&id, JobStatus::Voting, now_seconds())
            .await?;

        // No command channel drives this registry yet, so no node can be asked to
        // commit: each is down at creation and ends `unavailable` (http.md §5.5 1.4).
        for node in &spec.nodes {
            let (presence, _) = self.nodes.state(org, node);
            self.store
                .update_job_node(org, &id, node, NodeStatus::Unavailable, now_seconds())
                .await?;
            tracing::debug!(node, ?presence, "node down at job start");
        }
        // Quorum check (§5.5 step 3) with no node ready: only a quorum of 0 runs, and
        // with no node ready or running it is complete at once.
        let status = if quorum == 0 {
            self.store
                .update_job_status(&id, JobStatus::Running, now_seconds())
                .await?;
            JobStatus::Complete
        } else {
            JobStatus::QuorumFailed
        };
        self.store
            .update_job_status(&id, status, now_seconds())
            .await?;
        tracing::info!(%status, "job finished");
        Ok(id)
    }

    /// Aborts a job that has not finished: the job becomes `aborted` and every node not
    /// yet in a terminal state becomes `aborted` too.
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
        let now = now_seconds();
        for (node, status) in &job.nodes {
            if !status.is_terminal() {
                self.store
                    .update_job_node(org, id, node, NodeStatus::Aborted, now)
                    .await?;
            }
        }
        self.store
            .update_job_status(id, JobStatus::Aborted, now)
            .await?;
        tracing::info!(job_id = %id, org = %org, "job aborted");
        let job = self
            .store
            .find_job(org, id)
            .await?
            .expect("the job was just read");
        Ok(Some(AbortOutcome::Aborted(Box::new(job))))
    }

    /// At start-up: jobs left `new`, `voting` or `running` by a previous process have no
    /// driver any more; mark them `crashed` and their running nodes `crashed`
    /// (http.md §5.5 step 8). Returns how many jobs were marked.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn recover(&self) -> Result<usize, store::Error> {
        let incomplete = self.store.incomplete_jobs().await?;
        let now = now_seconds();
        for job in &incomplete {
            if let Some(record) = self.store.find_job(&job.org_id, &job.id).await? {
                for (node, status) in &record.nodes {
                    if *status == NodeStatus::Running {
                        self.store
                            .update_job_node(&job.org_id, &job.id, node, NodeStatus::Crashed, now)
                            .await?;
                    }
                }
            }
            self.store
                .update_job_status(&job.id, JobStatus::Crashed, now)
                .await?;
            tracing::warn!(job_id = %job.id, org = %job.org_id, was = %job.status, "job interrupted by a restart marked crashed");
        }
        Ok(incomplete.len())
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
