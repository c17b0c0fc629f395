//! What both engines share: the migrator built from embedded SQL, and the conversions
//! between stored values and the row types, so both read rows the same way.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use pushy_protocol::job::{JobId, JobStatus, NodeStatus, OrgGuid};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::{Error, JobOptions, JobRecord};

/// One embedded migration: version, description, SQL.
pub(super) type EmbeddedMigration = (i64, &'static str, &'static str);

/// A migrator over migrations compiled into the binary. The `migrate!` macro would do this
/// but needs sqlx's `macros` feature, which the build leaves out.
pub(super) fn migrator(migrations: &[EmbeddedMigration]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// The stored form of a timestamp: UTC wall-clock time, whole seconds (http.md §5.4).
pub(super) fn to_stored_time(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc().trunc_subsecs(0)
}

/// A stored timestamp read back; truncated again because rows written by hand or by
/// other tools may carry fractions.
pub(super) fn from_stored_time(t: NaiveDateTime) -> DateTime<Utc> {
    t.trunc_subsecs(0).and_utc()
}

/// `character(n)` columns come back blank-padded; the original right-trims them on read.
pub(super) fn unpad(mut s: String) -> String {
    s.truncate(s.trim_end_matches(' ').len());
    s
}

/// A job id read from `table`.
pub(super) fn job_id(table: &'static str, s: String) -> Result<JobId, Error> {
    let s = unpad(s);
    JobId::parse(&s).ok_or_else(|| Error::Corrupt {
        table,
        what: format!("job id {s:?} is not 32 lowercase hex characters"),
    })
}

/// The codes of the statuses a job never leaves (`JobStatus::is_terminal`): the jobs
/// retention may delete.
pub(super) fn finished_codes() -> Vec<i32> {
    JobStatus::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| i32::from(s.code()))
        .collect()
}

/// A job status code read from `jobs.status`.
pub(super) fn job_status(code: i64) -> Result<JobStatus, Error> {
    i16::try_from(code)
        .ok()
        .and_then(JobStatus::from_code)
        .ok_or_else(|| Error::Corrupt {
            table: "jobs",
            what: format!("unknown job status {code}"),
        })
}

/// A node status code read from `job_nodes.status`.
pub(super) fn node_status(code: i64) -> Result<NodeStatus, Error> {
    i16::try_from(code)
        .ok()
        .and_then(NodeStatus::from_code)
        .ok_or_else(|| Error::Corrupt {
            table: "job_nodes",
            what: format!("unknown node status {code}"),
        })
}

/// A `jobs` row left-joined with its `job_options` row, as both engines select it.
pub(super) struct JobRow {
    pub id: String,
    pub org_id: String,
    pub command: String,
    pub quorum: Option<i64>,
    pub run_timeout: Option<i64>,
    pub status: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub user: Option<String>,
    pub dir: Option<String>,
    pub env: Option<String>,
    pub capture: Option<bool>,
    pub file: Option<String>,
    pub controls: Option<String>,
    pub requestor: Option<String>,
}

impl JobRow {
    /// The record, with `nodes` as read separately.
    pub(super) fn into_record(self, nodes: Vec<(String, NodeStatus)>) -> Result<JobRecord, Error> {
        // The columns are nullable but the original always wrote them; a NULL means the
        // row was not written by a Push Jobs server.
        let int = |value: Option<i64>, column: &str| {
            value
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(|| Error::Corrupt {
                    table: "jobs",
                    what: format!("{column} of job {} is {value:?}", self.id),
                })
        };
        let quorum = int(self.quorum, "quorum")?;
        let run_timeout = int(self.run_timeout, "run_timeout")?;
        Ok(JobRecord {
            id: job_id("jobs", self.id)?,
            org_id: OrgGuid(unpad(self.org_id)),
            command: self.command,
            quorum,
            run_timeout,
            status: job_status(self.status)?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            requestor: self.requestor,
            options: JobOptions {
                user: self.user.map(unpad),
                dir: self.dir.map(unpad),
                env: self.env,
                capture: self.capture.unwrap_or(false),
                file: self.file,
                controls: self.controls,
            },
            nodes,
        })
    }
}
