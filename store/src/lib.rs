//! Persistence of jobs, their nodes, options and captured output (http.md §5), and of the
//! dashboard's used login URLs (shared by every instance of a cluster).
//!
//! One trait, two engines: PostgreSQL (production; adopts a database created by the
//! original's sqitch plan, 1.x or 2.x, and upgrades it in place) and SQLite (the embedded
//! default). Both keep the original's tables, columns and status codes. Queries are
//! built at run time so the build needs no database.

pub mod cluster;
#[cfg(any(test, feature = "test-support"))]
pub mod pg_proxy;
mod postgres;
pub mod retention;
mod rows;
mod sqlite;
#[cfg(test)]
mod tests;
mod tx;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pushy_protocol::job::{JobId, JobStatus, NodeStatus, OrgGuid};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
/// How to reach a PostgreSQL server, field by field (host, port, user, password, database):
/// what [`PostgresStore::connect`] takes.
pub use sqlx::postgres::PgConnectOptions;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database cannot be reached or cannot take work right now: a connection failed
    /// or was lost, no pooled connection came within the acquire timeout, PostgreSQL is
    /// shutting down or refusing connections, SQLite's disk is full or its file locked.
    /// Nothing was written (a transaction that met this was rolled back); the same call
    /// may succeed later. See [`Error::is_transient`].
    #[error("the job store is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database refused or could not run a statement, and trying again will not
    /// help.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row holds something this server cannot interpret (e.g. an unknown status code).
    #[error("corrupt row in {table}: {what}")]
    Corrupt {
        /// The table holding the row.
        table: &'static str,
        /// What was wrong with it.
        what: String,
    },
    /// A job with this id already exists.
    #[error("job {0} already exists")]
    DuplicateJob(JobId),
    /// The store did not answer within this long (a caller's bound, e.g. a connection
    /// that went silent): it may or may not have done the work. Transient.
    #[error("the job store did not answer within {0:?}")]
    TimedOut(std::time::Duration),
}

impl Error {
    /// Whether the same call may succeed if made again later, unchanged: true for
    /// [`Error::Unavailable`] and [`Error::TimedOut`] only. The HTTP API answers these 503 with `Retry-After`;
    /// a job task retries its write.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::TimedOut(_))
    }
}

/// Sorts a driver error into [`Error::Unavailable`] or [`Error::Database`].
impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            Error::Unavailable(e)
        } else {
            Error::Database(e)
        }
    }
}

/// Whether `e` says the database is away or overloaded rather than that the statement is
/// wrong. SQLite: busy or locked, out of memory, I/O error, disk full, cannot open the
/// file. PostgreSQL: connection exceptions (class 08), shutting down or starting up
/// (57P01–03), out of resources (53000–53300), serialization failure and deadlock (the
/// transaction was rolled back and can be run again).
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // The extended result code; its low byte is the primary code.
                const BUSY: i32 = 5;
                const LOCKED: i32 = 6;
                const NOMEM: i32 = 7;
                const IOERR: i32 = 10;
                const FULL: i32 = 13;
                const CANTOPEN: i32 = 14;
                code.parse::<i32>().is_ok_and(|c| {
                    matches!(c & 0xff, BUSY | LOCKED | NOMEM | IOERR | FULL | CANTOPEN)
                })
            } else {
                code.starts_with("08")
                    || matches!(
                        &*code,
                        "57P01"
                            | "57P02"
                            | "57P03"
                            | "53000"
                            | "53100"
                            | "53200"
                            | "53300"
                            | "40001"
                            | "40P01"
                    )
            }
        }
        _ => false,
    }
}

/// The options of a job (http.md §4.1, table `job_options`). All absent and `capture`
/// false means "no row".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobOptions {
    /// OS user to run the command as (`job_user`, at most 32 characters).
    pub user: Option<String>,
    /// Working directory.
    pub dir: Option<String>,
    /// Extra environment, stored as the compact JSON text of the posted object.
    pub env: Option<String>,
    /// Whether stdout/stderr are captured.
    pub capture: bool,
    /// The file, with its `raw:` / `base64:` prefix, exactly as posted.
    pub file: Option<String>,
    /// Operators' controls (issue 15) as the server's JSON; `None` for an original job.
    pub controls: Option<String>,
}

impl JobOptions {
    /// Whether a `job_options` row is written for these options (http.md §4.1).
    pub fn is_empty(&self) -> bool {
        self.user.is_none()
            && self.dir.is_none()
            && self.env.is_none()
            && !self.capture
            && self.file.is_none()
            && self.controls.is_none()
    }
}

/// A job as stored. `nodes` is empty when read by [`Store::list_jobs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecord {
    /// The job id.
    pub id: JobId,
    /// The GUID of the organization the job belongs to.
    pub org_id: OrgGuid,
    /// The command (normally a whitelist key on the nodes).
    pub command: String,
    /// Minimum number of nodes that must commit.
    pub quorum: i32,
    /// Seconds the command may run.
    pub run_timeout: i32,
    /// Current status.
    pub status: JobStatus,
    /// When the job was created (UTC, second precision).
    pub created_at: DateTime<Utc>,
    /// When the job entered its current status (UTC, second precision).
    pub updated_at: DateTime<Utc>,
    /// Who started it (ours, issue 16); `None` for jobs the original wrote.
    pub requestor: Option<String>,
    /// The job's options.
    pub options: JobOptions,
    /// Every node of the job with its status, in the order they were requested.
    pub nodes: Vec<(String, NodeStatus)>,
}

/// Which captured stream to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputChannel {
    /// The command's standard output.
    Stdout,
    /// The command's standard error.
    Stderr,
}

/// One captured stream as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredOutput {
    /// The stream's text, byte for byte.
    pub text: String,
    /// The node kept only the tail of its output (rows written by the original: false).
    pub truncated: bool,
}

/// A job and node the server was in the middle of running when it stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncompleteJob {
    /// The job id.
    pub id: JobId,
    /// Its organization.
    pub org_id: OrgGuid,
    /// Its status when read.
    pub status: JobStatus,
    /// Whether this server wrote it: every node row carries its request position, which
    /// the original never kept. A job another server left running (a 1.x or 2.x original
    /// before an upgrade) has nodes that will never report to this one.
    pub ours: bool,
}

/// Everything the server persists. Implementations must be safe to share between tasks.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts the job (status `new`, `created_at = updated_at = job.created_at`,
    /// `last_updated_by` = the job id), one `job_nodes` row per node (status `new`, in
    /// order) and the options row if any, in one transaction (http.md §8.3 item 22 fixed).
    async fn create_job(&self, job: &JobRecord) -> Result<(), Error>;

    /// The job with its nodes, only if it belongs to `org` (http.md §8.2 item 17 fixed).
    async fn find_job(&self, org: &OrgGuid, id: &JobId) -> Result<Option<JobRecord>, Error>;

    /// Every job of `org`, oldest first, without nodes.
    async fn list_jobs(&self, org: &OrgGuid) -> Result<Vec<JobRecord>, Error>;

    /// The newest `limit` jobs of `org`, newest first, without nodes (the dashboard's
    /// list, polled every few seconds: an org's whole history is not read for it).
    async fn recent_jobs(&self, org: &OrgGuid, limit: u32) -> Result<Vec<JobRecord>, Error>;

    /// How many nodes of each of `jobs` (of `org`) are in each status, as
    /// `(job, status, count)`, without reading the nodes themselves (the dashboard's jobs
    /// view, issue 16).
    async fn node_counts(
        &self,
        org: &OrgGuid,
        jobs: &[JobId],
    ) -> Result<Vec<(JobId, NodeStatus, u64)>, Error>;

    /// Sets the job's status (when `job` is given; also `last_updated_by`, the job id) and
    /// several of its nodes' statuses, all with `updated_at = now`, in one transaction: a
    /// job task persists a burst of transitions at once instead of one commit each.
    /// `nodes` names each node once. An unknown job or node is not an error.
    async fn update_statuses(
        &self,
        org: &OrgGuid,
        id: &JobId,
        job: Option<JobStatus>,
        nodes: &[(String, NodeStatus)],
        now: DateTime<Utc>,
    ) -> Result<(), Error>;

    /// Stores a node's captured output; `truncated` when the node kept only its tail.
    /// Returns false (and changes nothing) when output for that node is already stored.
    async fn insert_output(
        &self,
        id: &JobId,
        node: &str,
        stdout: &str,
        stderr: &str,
        truncated: bool,
    ) -> Result<bool, Error>;

    /// One captured stream of a node, if stored, for a job of `org`.
    async fn fetch_output(
        &self,
        org: &OrgGuid,
        id: &JobId,
        node: &str,
        channel: OutputChannel,
    ) -> Result<Option<StoredOutput>, Error>;

    /// Jobs in `new`, `voting` or `running` (http.md §5.2 `find_incomplete_jobs`).
    async fn incomplete_jobs(&self) -> Result<Vec<IncompleteJob>, Error>;

    /// Deletes a job of `org` that never started (still `new`), with its nodes and
    /// options: one whose creation was answered with an error although its insert may
    /// have committed. Returns whether there was one.
    async fn delete_unstarted_job(&self, org: &OrgGuid, id: &JobId) -> Result<bool, Error>;

    /// Deletes up to `batch` finished jobs (a terminal status: complete, quorum_failed,
    /// aborted, timed_out, crashed) that entered that status before `cutoff`, oldest
    /// first, with their nodes, options and output (and, on PostgreSQL, the cluster's
    /// owner row), in one short transaction. Returns how many it deleted; fewer than
    /// `batch` means none is left (none that another caller is not deleting right now).
    /// A job in any other status is never touched, however old (issue 15 §5).
    async fn delete_finished_jobs(&self, cutoff: DateTime<Utc>, batch: u32) -> Result<u64, Error>;

    /// How many jobs [`Store::delete_finished_jobs`] would delete for `cutoff`, all batches
    /// together: what a dry run reports.
    async fn count_finished_jobs(&self, cutoff: DateTime<Utc>) -> Result<u64, Error>;

    /// Records that the dashboard login named `nonce` was traded for a session, until
    /// `expires_at`; returns true if this call did so, false if it was already recorded.
    /// The record is in the database, not in an instance, so a login URL works once in a
    /// whole cluster; the insert alone decides, so of two instances claiming at once
    /// exactly one wins. Also forgets the records whose expiry is before `now` (their
    /// logins are refused as expired anyway): the table only holds the last minutes'.
    /// Times are Unix seconds, as the dashboard's sealed logins carry them.
    async fn claim_login(&self, nonce: &str, expires_at: i64, now: i64) -> Result<bool, Error>;

    /// The PostgreSQL pool behind this store, if it is one: several server instances
    /// share it ([`cluster`]). SQLite is single-process and answers `None`.
    fn postgres_pool(&self) -> Option<sqlx::PgPool> {
        None
    }
}
