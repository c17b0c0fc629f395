//! The SQLite store, the embedded default: the PostgreSQL tables in SQLite's types.
//!
//! Timestamps are TEXT `YYYY-MM-DD HH:MM:SS` (UTC), formatted and parsed here rather than
//! by sqlx so that the stored form is fixed by this file, and sorts chronologically.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use pushy_protocol::job::{JobId, JobStatus, NodeStatus, OrgGuid};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Executor, Row, Sqlite};

use super::rows::{self, EmbeddedMigration, JobRow};
use super::tx::Tx;
use super::{Error, IncompleteJob, JobRecord, OutputChannel, Store, StoredOutput};

/// Nothing older to adopt: the schema, then our additions.
const MIGRATIONS: &[EmbeddedMigration] = &[
    (
        1,
        "schema",
        include_str!("../migrations/sqlite/0001_schema.sql"),
    ),
    (
        2,
        "output truncated flag",
        include_str!("../migrations/sqlite/0002_output_truncated.sql"),
    ),
    (
        3,
        "retention index",
        include_str!("../migrations/sqlite/0003_retention.sql"),
    ),
    (
        4,
        "job controls",
        include_str!("../migrations/sqlite/0004_job_controls.sql"),
    ),
    (
        5,
        "job requestor",
        include_str!("../migrations/sqlite/0005_job_requestor.sql"),
    ),
    (
        6,
        "dashboard logins",
        include_str!("../migrations/sqlite/0006_dashboard_logins.sql"),
    ),
];

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections to a database file. WAL lets readers run beside the one writer.
const MAX_CONNECTIONS: u32 = 4;

/// The stored timestamp format.
const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// `SELECT` of a job as [`job_row`] reads it, followed by the given conditions. A macro so
/// that the statement stays a `&'static str`.
macro_rules! select_jobs {
    ($($condition:literal),*) => {
        concat!(
            "SELECT j.id, j.org_id, j.command, j.quorum, j.run_timeout, j.status, \
             j.created_at, j.updated_at, j.requestor, o.job_user, o.dir, o.env, o.capture, o.job_file, o.controls \
             FROM jobs j LEFT JOIN job_options o ON o.job_id = j.id ",
            $($condition),*
        )
    };
}

/// Jobs, nodes, options and output in a SQLite database.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens the database file at `path`, creating it if missing, and brings its schema
    /// up to date.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable in WAL mode except for the last commits on power loss.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }

    /// A fresh database that lives as long as the store, for tests and trials.
    pub async fn in_memory() -> Result<Self, Error> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // Each connection to ":memory:" is its own database, gone when it closes: keep
        // exactly one, forever.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<Self, Error> {
        rows::migrator(MIGRATIONS).run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// The connection pool, for callers that need to run their own statements.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// A JSON array for `json_each`; serializing strings and numbers cannot fail.
fn json_array<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).expect("a JSON array of strings and numbers")
}

/// A timestamp as stored.
fn to_text(t: DateTime<Utc>) -> String {
    rows::to_stored_time(t).format(TIME_FORMAT).to_string()
}

/// A stored timestamp read back; fractions of a second are accepted and dropped.
fn from_text(table: &'static str, s: &str) -> Result<DateTime<Utc>, Error> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .map(rows::from_stored_time)
        .map_err(|_| Error::Corrupt {
            table,
            what: format!("timestamp {s:?}"),
        })
}

/// Reads a row selected with `select_jobs!`.
fn job_row(row: &SqliteRow) -> Result<JobRow, Error> {
    let time = |column: &str| from_text("jobs", row.try_get(column)?);
    Ok(JobRow {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        command: row.try_get("command")?,
        quorum: row.try_get("quorum")?,
        run_timeout: row.try_get("run_timeout")?,
        status: row.try_get("status")?,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        user: row.try_get("job_user")?,
        dir: row.try_get("dir")?,
        env: row.try_get("env")?,
        capture: row.try_get::<Option<i64>, _>("capture")?.map(|c| c != 0),
        file: row.try_get("job_file")?,
        controls: row.try_get("controls")?,
        requestor: row.try_get("requestor")?,
    })
}

/// A job's nodes in request order, unpositioned rows last by name (as in PostgreSQL).
async fn job_nodes<'e>(
    executor: impl Executor<'e, Database = Sqlite>,
    id: &JobId,
) -> Result<Vec<(String, NodeStatus)>, Error> {
    sqlx::query(
        "SELECT node_name, status FROM job_nodes WHERE job_id = $1 \
         ORDER BY position ASC NULLS LAST, node_name",
    )
    .bind(id.as_str())
    .fetch_all(executor)
    .await?
    .iter()
    .map(|row| {
        Ok((
            row.try_get("node_name")?,
            rows::node_status(row.try_get("status")?)?,
        ))
    })
    .collect()
}

/// The rows of a new job, inside the caller's transaction.
async fn insert_job(conn: &mut SqliteConnection, job: &JobRecord) -> Result<(), Error> {
    let now = to_text(job.created_at);
    let inserted = sqlx::query(
        "INSERT INTO jobs (id, org_id, command, quorum, status, run_timeout, \
         last_updated_by, created_at, updated_at, requestor) \
         VALUES ($1, $2, $3, $4, $5, $6, $1, $7, $7, $8)",
    )
    .bind(job.id.as_str())
    .bind(job.org_id.as_str())
    .bind(&job.command)
    .bind(job.quorum)
    .bind(i32::from(JobStatus::New.code()))
    .bind(job.run_timeout)
    .bind(&now)
    .bind(job.requestor.as_deref())
    .execute(&mut *conn)
    .await;
    match inserted {
        // The primary key is the only unique constraint of `jobs`.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(Error::DuplicateJob(job.id.clone()));
        }
        other => other?,
    };
    // Every node in one statement: the names go as a JSON array, and each element's
    // index is its position. A statement per node costs a round trip to the
    // connection's thread each, which dominated the creation of large jobs.
    let names: Vec<&str> = job.nodes.iter().map(|(n, _)| n.as_str()).collect();
    sqlx::query(
        "INSERT INTO job_nodes (job_id, org_id, node_name, status, created_at, \
         updated_at, position) \
         SELECT $1, $2, j.value, $4, $5, $5, j.key FROM json_each($3) AS j",
    )
    .bind(job.id.as_str())
    .bind(job.org_id.as_str())
    .bind(json_array(&names))
    .bind(i32::from(NodeStatus::New.code()))
    .bind(&now)
    .execute(&mut *conn)
    .await?;
    let o = &job.options;
    if !o.is_empty() {
        sqlx::query(
            "INSERT INTO job_options (job_id, job_user, dir, env, capture, job_file, controls) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(job.id.as_str())
        .bind(o.user.as_deref())
        .bind(o.dir.as_deref())
        .bind(o.env.as_deref())
        .bind(i64::from(o.capture))
        .bind(o.file.as_deref())
        .bind(o.controls.as_deref())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A job with its nodes, inside the caller's transaction.
async fn read_job(
    conn: &mut SqliteConnection,
    org: &OrgGuid,
    id: &JobId,
) -> Result<Option<JobRecord>, Error> {
    let row = sqlx::query(select_jobs!("WHERE j.id = $1 AND j.org_id = $2"))
        .bind(id.as_str())
        .bind(org.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let job = job_row(&row)?;
    let nodes = job_nodes(&mut *conn, id).await?;
    job.into_record(nodes).map(Some)
}

/// The status changes of [`Store::update_statuses`], inside the caller's transaction.
async fn set_statuses(
    conn: &mut SqliteConnection,
    org: &OrgGuid,
    id: &JobId,
    job: Option<JobStatus>,
    nodes: &[(String, NodeStatus)],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let now = to_text(now);
    // One statement per status rather than per node: a burst is mostly one status
    // (thousands of nodes → ready), and `IN (json_each)` lets SQLite seek the unique
    // (job_id, org_id, node_name) index once per name.
    let mut by_status: Vec<(NodeStatus, Vec<&str>)> = Vec::new();
    for (node, status) in nodes {
        match by_status.iter_mut().find(|(s, _)| s == status) {
            Some((_, names)) => names.push(node),
            None => by_status.push((*status, vec![node.as_str()])),
        }
    }
    for (status, names) in by_status {
        sqlx::query(
            "UPDATE job_nodes SET status = $3, updated_at = $4 \
             WHERE job_id = $1 AND org_id = $2 \
             AND node_name IN (SELECT value FROM json_each($5))",
        )
        .bind(id.as_str())
        .bind(org.as_str())
        .bind(i32::from(status.code()))
        .bind(&now)
        .bind(json_array(&names))
        .execute(&mut *conn)
        .await?;
    }
    if let Some(status) = job {
        sqlx::query(
            "UPDATE jobs SET status = $2, updated_at = $3, last_updated_by = $1 WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(i32::from(status.code()))
        .bind(&now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// One batch of [`Store::delete_finished_jobs`], inside the caller's transaction.
async fn delete_finished(
    conn: &mut SqliteConnection,
    cutoff: DateTime<Utc>,
    batch: u32,
) -> Result<u64, Error> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE status IN (SELECT value FROM json_each($1)) \
         AND updated_at < $2 ORDER BY updated_at, id LIMIT $3",
    )
    .bind(json_array(&rows::finished_codes()))
    .bind(to_text(cutoff))
    .bind(i64::from(batch))
    .fetch_all(&mut *conn)
    .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let ids = json_array(&ids);
    // Each table by name rather than through ON DELETE CASCADE, so that what goes does
    // not depend on the foreign keys being enforced on this connection.
    for sql in [
        "DELETE FROM job_output WHERE job_id IN (SELECT value FROM json_each($1))",
        "DELETE FROM job_options WHERE job_id IN (SELECT value FROM json_each($1))",
        "DELETE FROM job_nodes WHERE job_id IN (SELECT value FROM json_each($1))",
    ] {
        sqlx::query(sql).bind(&ids).execute(&mut *conn).await?;
    }
    let done = sqlx::query("DELETE FROM jobs WHERE id IN (SELECT value FROM json_each($1))")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_job(&self, job: &JobRecord) -> Result<(), Error> {
        // IMMEDIATE: the write lock at once (waiting up to the busy timeout), never the
        // upgrade of a read lock.
        let mut tx = Tx::begin(&self.pool, "BEGIN IMMEDIATE").await?;
        let result = insert_job(tx.conn(), job).await;
        tx.finish(result).await
    }

    async fn find_job(&self, org: &OrgGuid, id: &JobId) -> Result<Option<JobRecord>, Error> {
        // One read transaction: the job and its nodes come from the same snapshot, even
        // while a job task commits between the two statements.
        let mut tx = Tx::begin(&self.pool, "BEGIN").await?;
        let result = read_job(tx.conn(), org, id).await;
        tx.finish(result).await
    }

    async fn list_jobs(&self, org: &OrgGuid) -> Result<Vec<JobRecord>, Error> {
        sqlx::query(select_jobs!(
            "WHERE j.org_id = $1 ORDER BY j.created_at, j.id"
        ))
        .bind(org.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| job_row(row)?.into_record(Vec::new()))
        .collect()
    }

    async fn recent_jobs(&self, org: &OrgGuid, limit: u32) -> Result<Vec<JobRecord>, Error> {
        sqlx::query(select_jobs!(
            "WHERE j.org_id = $1 ORDER BY j.created_at DESC, j.id DESC LIMIT $2"
        ))
        .bind(org.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| job_row(row)?.into_record(Vec::new()))
        .collect()
    }

    async fn node_counts(
        &self,
        org: &OrgGuid,
        jobs: &[JobId],
    ) -> Result<Vec<(JobId, NodeStatus, u64)>, Error> {
        let ids = serde_json::to_string(&jobs.iter().map(JobId::as_str).collect::<Vec<_>>())
            .expect("ids serialize");
        let rows = sqlx::query(
            "SELECT job_id, status, count(*) AS n FROM job_nodes \
             WHERE org_id = $1 AND job_id IN (SELECT value FROM json_each($2)) \
             GROUP BY job_id, status",
        )
        .bind(org.as_str())
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    rows::job_id("job_nodes", r.try_get("job_id")?)?,
                    rows::node_status(r.try_get("status")?)?,
                    r.try_get::<i64, _>("n")?.max(0) as u64,
                ))
            })
            .collect()
    }

    async fn update_statuses(
        &self,
        org: &OrgGuid,
        id: &JobId,
        job: Option<JobStatus>,
        nodes: &[(String, NodeStatus)],
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let mut tx = Tx::begin(&self.pool, "BEGIN IMMEDIATE").await?;
        let result = set_statuses(tx.conn(), org, id, job, nodes, now).await;
        tx.finish(result).await
    }

    async fn insert_output(
        &self,
        id: &JobId,
        node: &str,
        stdout: &str,
        stderr: &str,
        truncated: bool,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "INSERT INTO job_output (job_id, node_name, stdout, stderr, truncated) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job_id, node_name) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(node)
        .bind(stdout)
        .bind(stderr)
        .bind(truncated)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn fetch_output(
        &self,
        org: &OrgGuid,
        id: &JobId,
        node: &str,
        channel: OutputChannel,
    ) -> Result<Option<StoredOutput>, Error> {
        let sql = match channel {
            OutputChannel::Stdout => {
                "SELECT o.stdout, o.truncated FROM job_output o JOIN jobs j ON j.id = o.job_id \
                 WHERE o.job_id = $1 AND o.node_name = $2 AND j.org_id = $3"
            }
            OutputChannel::Stderr => {
                "SELECT o.stderr, o.truncated FROM job_output o JOIN jobs j ON j.id = o.job_id \
                 WHERE o.job_id = $1 AND o.node_name = $2 AND j.org_id = $3"
            }
        };
        let row = sqlx::query(sql)
            .bind(id.as_str())
            .bind(node)
            .bind(org.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| -> Result<StoredOutput, Error> {
            let truncated: Option<bool> = row.try_get(1)?;
            Ok(StoredOutput {
                text: row.try_get(0)?,
                truncated: truncated.unwrap_or(false),
            })
        })
        .transpose()
    }

    async fn delete_unstarted_job(&self, org: &OrgGuid, id: &JobId) -> Result<bool, Error> {
        // One statement; the nodes and options go with it (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM jobs WHERE id = $1 AND org_id = $2 AND status = $3")
            .bind(id.as_str())
            .bind(org.as_str())
            .bind(i32::from(JobStatus::New.code()))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_finished_jobs(&self, cutoff: DateTime<Utc>, batch: u32) -> Result<u64, Error> {
        // IMMEDIATE: SQLite has one writer, so a batch holds the write lock for its whole
        // transaction and job writes wait behind it (up to the busy timeout). Keeping the
        // batch small is what keeps that wait short.
        let mut tx = Tx::begin(&self.pool, "BEGIN IMMEDIATE").await?;
        let result = delete_finished(tx.conn(), cutoff, batch).await;
        tx.finish(result).await
    }

    async fn count_finished_jobs(&self, cutoff: DateTime<Utc>) -> Result<u64, Error> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE status IN (SELECT value FROM json_each($1)) \
             AND updated_at < $2",
        )
        .bind(json_array(&rows::finished_codes()))
        .bind(to_text(cutoff))
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn claim_login(&self, nonce: &str, expires_at: i64, now: i64) -> Result<bool, Error> {
        // The purge first and on its own: if it fails nothing is claimed, and the same
        // visit can be tried again.
        sqlx::query("DELETE FROM pushy_dashboard_logins WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let done = sqlx::query(
            "INSERT INTO pushy_dashboard_logins (nonce, expires_at) VALUES ($1, $2) \
             ON CONFLICT (nonce) DO NOTHING",
        )
        .bind(nonce)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn incomplete_jobs(&self) -> Result<Vec<IncompleteJob>, Error> {
        sqlx::query(
            "SELECT id, org_id, status, NOT EXISTS (SELECT 1 FROM job_nodes n \
             WHERE n.job_id = jobs.id AND n.position IS NULL) AS ours \
             FROM jobs WHERE status IN ($1, $2, $3) ORDER BY created_at, id",
        )
        .bind(i32::from(JobStatus::New.code()))
        .bind(i32::from(JobStatus::Voting.code()))
        .bind(i32::from(JobStatus::Running.code()))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(IncompleteJob {
                id: rows::job_id("jobs", row.try_get("id")?)?,
                org_id: OrgGuid(rows::unpad(row.try_get("org_id")?)),
                status: rows::job_status(row.try_get("status")?)?,
                ours: row.try_get("ours")?,
            })
        })
        .collect()
    }
}
