//! The PostgreSQL store: the original's database (http.md §5), adopted and upgraded in
//! place.
//!
//! Ids are bound as text and cast to `bpchar` in the SQL: comparing a `character(32)`
//! column with a text parameter would cast the column instead, and the primary-key index
//! would go unused.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use pushy_protocol::job::{JobId, JobStatus, NodeStatus, OrgGuid};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Executor, Postgres, Row};

use super::rows::{self, EmbeddedMigration, JobRow};
use super::tx::Tx;
use super::{Error, IncompleteJob, JobRecord, OutputChannel, Store, StoredOutput};

/// The sqitch plan's five changes, re-runnable so they adopt a database it deployed, then
/// ours.
const MIGRATIONS: &[EmbeddedMigration] = &[
    (
        1,
        "job_status",
        include_str!("../migrations/postgres/0001_job_status.sql"),
    ),
    (
        2,
        "jobs",
        include_str!("../migrations/postgres/0002_jobs.sql"),
    ),
    (
        3,
        "job_nodes",
        include_str!("../migrations/postgres/0003_job_nodes.sql"),
    ),
    (
        4,
        "job_options",
        include_str!("../migrations/postgres/0004_job_options.sql"),
    ),
    (
        5,
        "job_output",
        include_str!("../migrations/postgres/0005_job_output.sql"),
    ),
    (
        6,
        "node position and org index",
        include_str!("../migrations/postgres/0006_node_position_and_org_index.sql"),
    ),
    (
        7,
        "output truncated flag",
        include_str!("../migrations/postgres/0007_output_truncated.sql"),
    ),
    (
        8,
        "cluster tables",
        include_str!("../migrations/postgres/0008_cluster.sql"),
    ),
    (
        9,
        "retention index",
        include_str!("../migrations/postgres/0009_retention.sql"),
    ),
    (
        10,
        "job controls",
        include_str!("../migrations/postgres/0010_job_controls.sql"),
    ),
    (
        11,
        "job requestor",
        include_str!("../migrations/postgres/0011_job_requestor.sql"),
    ),
    (
        12,
        "dashboard logins",
        include_str!("../migrations/postgres/0012_dashboard_logins.sql"),
    ),
];

/// How long a statement waits for a pooled connection before failing, so that an
/// exhausted pool or an unreachable server turns into an error instead of a hang. While
/// PostgreSQL refuses connections sqlx retries until this deadline, so it is how long a
/// request waits for its 503 during an outage; a healthy pool answers in milliseconds.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Jobs, nodes, options and output in a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database `options` name with a pool of at most `max_connections`,
    /// and brings its schema up to date.
    pub async fn connect(options: PgConnectOptions, max_connections: u32) -> Result<Self, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        rows::migrator(MIGRATIONS).run(&pool).await?;
        Ok(PostgresStore { pool })
    }

    /// The connection pool, for callers that need to run their own statements.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Reads a row selected with `select_jobs!`.
fn job_row(row: &PgRow) -> Result<JobRow, Error> {
    let time = |column: &str| -> Result<DateTime<Utc>, Error> {
        Ok(rows::from_stored_time(
            row.try_get::<NaiveDateTime, _>(column)?,
        ))
    };
    Ok(JobRow {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        command: row.try_get("command")?,
        quorum: row.try_get::<Option<i32>, _>("quorum")?.map(i64::from),
        run_timeout: row.try_get::<Option<i32>, _>("run_timeout")?.map(i64::from),
        status: row.try_get::<i32, _>("status")?.into(),
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        user: row.try_get("job_user")?,
        dir: row.try_get("dir")?,
        env: row.try_get("env")?,
        capture: row.try_get("capture")?,
        file: row.try_get("job_file")?,
        controls: row.try_get("controls")?,
        requestor: row.try_get("requestor")?,
    })
}

/// A job's nodes in request order; rows written by the original have no position and
/// follow, by name.
async fn job_nodes<'e>(
    executor: impl Executor<'e, Database = Postgres>,
    id: &JobId,
) -> Result<Vec<(String, NodeStatus)>, Error> {
    sqlx::query(
        "SELECT node_name, status FROM job_nodes WHERE job_id = $1::bpchar \
         ORDER BY position ASC NULLS LAST, node_name",
    )
    .bind(id.as_str())
    .fetch_all(executor)
    .await?
    .iter()
    .map(|row| {
        let status = rows::node_status(row.try_get::<i32, _>("status")?.into())?;
        Ok((row.try_get("node_name")?, status))
    })
    .collect()
}

/// The rows of a new job, inside the caller's transaction.
async fn insert_job(conn: &mut PgConnection, job: &JobRecord) -> Result<(), Error> {
    let now = rows::to_stored_time(job.created_at);
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
    .bind(now)
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
    // Every node in one statement (a round trip per node dominated large jobs); the
    // array's ordinality is the position, from 0.
    let names: Vec<&str> = job.nodes.iter().map(|(n, _)| n.as_str()).collect();
    sqlx::query(
        "INSERT INTO job_nodes (job_id, org_id, node_name, status, created_at, \
         updated_at, position) \
         SELECT $1, $2, u.name, $4, $5, $5, u.n - 1 \
         FROM UNNEST($3::text[]) WITH ORDINALITY AS u(name, n)",
    )
    .bind(job.id.as_str())
    .bind(job.org_id.as_str())
    .bind(names)
    .bind(i32::from(NodeStatus::New.code()))
    .bind(now)
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
        .bind(o.capture)
        .bind(o.file.as_deref())
        .bind(o.controls.as_deref())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A job with its nodes, inside the caller's transaction.
async fn read_job(
    conn: &mut PgConnection,
    org: &OrgGuid,
    id: &JobId,
) -> Result<Option<JobRecord>, Error> {
    let row = sqlx::query(select_jobs!(
        "WHERE j.id = $1::bpchar AND j.org_id = $2::bpchar"
    ))
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
    conn: &mut PgConnection,
    org: &OrgGuid,
    id: &JobId,
    job: Option<JobStatus>,
    nodes: &[(String, NodeStatus)],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let now = rows::to_stored_time(now);
    if !nodes.is_empty() {
        // One statement for the whole burst: a round trip per node would cost more
        // than the update itself.
        let names: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
        let codes: Vec<i32> = nodes.iter().map(|(_, s)| i32::from(s.code())).collect();
        sqlx::query(
            "UPDATE job_nodes AS n SET status = u.status, updated_at = $3 \
             FROM UNNEST($4::text[], $5::integer[]) AS u(node_name, status) \
             WHERE n.job_id = $1::bpchar AND n.org_id = $2::bpchar \
             AND n.node_name = u.node_name",
        )
        .bind(id.as_str())
        .bind(org.as_str())
        .bind(now)
        .bind(names)
        .bind(codes)
        .execute(&mut *conn)
        .await?;
    }
    if let Some(status) = job {
        sqlx::query(
            "UPDATE jobs SET status = $2, updated_at = $3, last_updated_by = $1 \
             WHERE id = $1::bpchar",
        )
        .bind(id.as_str())
        .bind(i32::from(status.code()))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// One batch of [`Store::delete_finished_jobs`], inside the caller's transaction.
async fn delete_finished(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    batch: u32,
) -> Result<u64, Error> {
    // FOR UPDATE: a job cannot change under the delete (its status is checked again on
    // the row as locked). SKIP LOCKED: rows another sweeper (another instance of a
    // cluster) holds are left to it, and one a writer holds waits for the next sweep,
    // so neither side ever waits on the other.
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE status = ANY($1) AND updated_at < $2 \
         ORDER BY updated_at, id LIMIT $3 FOR UPDATE SKIP LOCKED",
    )
    .bind(rows::finished_codes())
    .bind(rows::to_stored_time(cutoff))
    .bind(i64::from(batch))
    .fetch_all(&mut *conn)
    .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    // Each table by name rather than through ON DELETE CASCADE: a database adopted from
    // the original keeps whatever foreign keys it was given.
    for sql in [
        "DELETE FROM job_output WHERE job_id = ANY($1::bpchar[])",
        "DELETE FROM job_options WHERE job_id = ANY($1::bpchar[])",
        "DELETE FROM job_nodes WHERE job_id = ANY($1::bpchar[])",
        // The cluster's owner row (store::cluster), if the job still has one: nothing
        // else would delete it once its job is gone.
        "DELETE FROM pushy_job_owners WHERE job_id = ANY($1::text[])",
    ] {
        sqlx::query(sql).bind(&ids).execute(&mut *conn).await?;
    }
    let done = sqlx::query("DELETE FROM jobs WHERE id = ANY($1::bpchar[])")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

#[async_trait]
impl Store for PostgresStore {
    fn postgres_pool(&self) -> Option<PgPool> {
        Some(self.pool.clone())
    }

    async fn create_job(&self, job: &JobRecord) -> Result<(), Error> {
        let mut tx = Tx::begin(&self.pool, "BEGIN").await?;
        let result = insert_job(tx.conn(), job).await;
        tx.finish(result).await
    }

    async fn find_job(&self, org: &OrgGuid, id: &JobId) -> Result<Option<JobRecord>, Error> {
        // One snapshot for the job and its nodes: under READ COMMITTED each statement
        // would see what a job task commits between them.
        let mut tx = Tx::begin(
            &self.pool,
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        )
        .await?;
        let result = read_job(tx.conn(), org, id).await;
        tx.finish(result).await
    }

    async fn list_jobs(&self, org: &OrgGuid) -> Result<Vec<JobRecord>, Error> {
        sqlx::query(select_jobs!(
            "WHERE j.org_id = $1::bpchar ORDER BY j.created_at, j.id"
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
            "WHERE j.org_id = $1::bpchar ORDER BY j.created_at DESC, j.id DESC LIMIT $2"
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
        let ids: Vec<&str> = jobs.iter().map(JobId::as_str).collect();
        let rows = sqlx::query(
            "SELECT job_id, status, count(*) AS n FROM job_nodes \
             WHERE org_id = $1::bpchar AND job_id = ANY($2::bpchar[]) GROUP BY job_id, status",
        )
        .bind(org.as_str())
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    rows::job_id("job_nodes", rows::unpad(r.try_get("job_id")?))?,
                    rows::node_status(r.try_get::<i32, _>("status")?.into())?,
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
        let mut tx = Tx::begin(&self.pool, "BEGIN").await?;
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
        // ON CONFLICT instead of catching the unique violation: nothing logged server-side.
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
                 WHERE o.job_id = $1::bpchar AND o.node_name = $2 AND j.org_id = $3::bpchar"
            }
            OutputChannel::Stderr => {
                "SELECT o.stderr, o.truncated FROM job_output o JOIN jobs j ON j.id = o.job_id \
                 WHERE o.job_id = $1::bpchar AND o.node_name = $2 AND j.org_id = $3::bpchar"
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
        let done = sqlx::query(
            "DELETE FROM jobs WHERE id = $1::bpchar AND org_id = $2::bpchar AND status = $3",
        )
        .bind(id.as_str())
        .bind(org.as_str())
        .bind(i32::from(JobStatus::New.code()))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_finished_jobs(&self, cutoff: DateTime<Utc>, batch: u32) -> Result<u64, Error> {
        let mut tx = Tx::begin(&self.pool, "BEGIN").await?;
        let result = delete_finished(tx.conn(), cutoff, batch).await;
        tx.finish(result).await
    }

    async fn count_finished_jobs(&self, cutoff: DateTime<Utc>) -> Result<u64, Error> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE status = ANY($1) AND updated_at < $2",
        )
        .bind(rows::finished_codes())
        .bind(rows::to_stored_time(cutoff))
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
        // Of two instances inserting the same nonce at once, the second waits for the
        // first to commit and then does nothing: exactly one sees a row inserted.
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
                status: rows::job_status(row.try_get::<i32, _>("status")?.into())?,
                ours: row.try_get("ours")?,
            })
        })
        .collect()
    }
}
