//! The rows several server instances share in one PostgreSQL database (issue 14):
//! membership, which instance drives each job, which instance holds each node, and the
//! message bus between instances. PostgreSQL is the source of truth and the only path
//! between instances; there is no other cluster protocol.
//!
//! An instance is alive while it holds its advisory lock (on a connection of its own,
//! released by PostgreSQL the moment the process dies, even by SIGKILL) and its lease
//! has not lapsed (a hung or cut-off instance whose connection lingers).

use std::time::Duration;

use pushy_protocol::job::JobStatus;
use sqlx::pool::PoolConnection;
/// A connection listening for notifications (the bus's wake-ups).
pub use sqlx::postgres::PgListener;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Row};

use pushy_protocol::job::OrgGuid;

use crate::{Error, IncompleteJob, rows};

/// The first key of every advisory lock this server takes ("push").
pub const LOCK_CLASS: i32 = 0x7075_7368;
/// The second key of the lock that orders writers of the bus.
const BUS_LOCK: i32 = 0;
/// The channel a bus writer notifies after each commit.
pub const BUS_CHANNEL: &str = "pushy_bus";
/// Bus target of messages for every instance.
pub const EVERYONE: &str = "*";
/// Bus target of job events (read by every instance; kept for late joiners' feeds).
pub const EVENTS: &str = "events";

/// The SQL condition "instance row `i` is alive": its lease runs and its advisory lock
/// (`$1` the lock class) is held in this database. A macro so statements stay
/// `&'static str`.
macro_rules! alive {
    () => {
        "(i.lease_until > now() AND EXISTS (SELECT 1 FROM pg_locks l \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND l.classid::bigint = $1 AND l.objid::bigint = i.lock_key))"
    };
}

/// A member as registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Unique per process start.
    pub id: String,
    /// Where its ZeroMQ sockets are reached (the config document's host).
    pub zmq_host: String,
    /// Its heartbeat (PUB) port.
    pub heartbeat_port: u16,
    /// Its command (ROUTER) port.
    pub command_port: u16,
    /// Its CurveZMQ public key, Z85.
    pub curve_public_key: String,
    /// Its incarnation id (the config document's `incarnation_id`).
    pub incarnation: String,
    /// Its HTTP API address, for operators.
    pub api_address: String,
}

/// One bus message as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusRow {
    /// Its position: ids grow in commit order.
    pub id: i64,
    /// An instance id, [`EVERYONE`] or [`EVENTS`].
    pub target: String,
    /// The job it concerns, when it is news for a job's owner or a job event.
    pub job_id: Option<String>,
    /// The message, as its writer encoded it.
    pub body: String,
}

/// A message to post.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Post {
    /// An instance id, [`EVERYONE`] or [`EVENTS`].
    pub target: String,
    /// The job it concerns, if any.
    pub job_id: Option<String>,
    /// The message.
    pub body: String,
}

/// A connected node as its holder published it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    /// The node.
    pub node: String,
    /// The instance holding its connection.
    pub instance: String,
    /// Online and idle.
    pub available: bool,
}

/// A job left without a live owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    /// The job, as [`crate::Store::incomplete_jobs`] gives it.
    pub job: IncompleteJob,
    /// Its owner when it had one.
    pub owner: Option<String>,
}

/// This instance's membership: the connection holding its lock. Dropping it (or the
/// process dying) ends the membership.
pub struct Membership {
    conn: PoolConnection<Postgres>,
    id: String,
}

impl Membership {
    /// Renews the lease for `lease` from now.
    ///
    /// # Errors
    /// When the lock's connection failed: the membership is over, and the instance must
    /// join again (under a new id) before driving anything.
    pub async fn renew(&mut self, lease: Duration) -> Result<(), Error> {
        sqlx::query(
            "UPDATE pushy_instances SET lease_until = now() + make_interval(secs => $2) \
             WHERE id = $1",
        )
        .bind(&self.id)
        .bind(lease.as_secs_f64())
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }
}

/// The shared rows, over the store's pool.
#[derive(Clone, Debug)]
pub struct ClusterDb {
    pool: PgPool,
}

impl ClusterDb {
    /// The cluster rows of the database behind `pool` (migrated by the store).
    pub fn new(pool: PgPool) -> Self {
        ClusterDb { pool }
    }

    /// A connection listening on [`BUS_CHANNEL`].
    ///
    /// # Errors
    /// When the database fails.
    pub async fn listener(&self) -> Result<PgListener, Error> {
        let mut l = PgListener::connect_with(&self.pool).await?;
        l.listen(BUS_CHANNEL).await?;
        Ok(l)
    }

    /// Registers `me`: takes a fresh lock key's advisory lock on a connection kept for
    /// the membership's life, then writes the row with a lease of `lease`.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn join(&self, me: &Instance, lease: Duration) -> Result<Membership, Error> {
        let mut conn = self.pool.acquire().await?;
        let key: i64 = sqlx::query_scalar("SELECT nextval('pushy_instance_lock_keys')")
            .fetch_one(&mut *conn)
            .await?;
        // Keys wrap within i32; a wrapped key's old holder is long dead (its row is gone).
        let key = (key % i64::from(i32::MAX)) as i32;
        sqlx::query("SELECT pg_advisory_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(key)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO pushy_instances (id, lock_key, zmq_host, heartbeat_port, command_port, \
             curve_public_key, incarnation, api_address, lease_until) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9)) \
             ON CONFLICT (lock_key) DO UPDATE SET id = EXCLUDED.id, zmq_host = EXCLUDED.zmq_host, \
             heartbeat_port = EXCLUDED.heartbeat_port, command_port = EXCLUDED.command_port, \
             curve_public_key = EXCLUDED.curve_public_key, incarnation = EXCLUDED.incarnation, \
             api_address = EXCLUDED.api_address, started_at = now(), lease_until = EXCLUDED.lease_until",
        )
        .bind(&me.id)
        .bind(key)
        .bind(&me.zmq_host)
        .bind(i32::from(me.heartbeat_port))
        .bind(i32::from(me.command_port))
        .bind(&me.curve_public_key)
        .bind(&me.incarnation)
        .bind(&me.api_address)
        .bind(lease.as_secs_f64())
        .execute(&mut *conn)
        .await?;
        Ok(Membership {
            conn,
            id: me.id.clone(),
        })
    }

    /// The live instances, oldest first: lease running and lock held.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn live(&self) -> Result<Vec<Instance>, Error> {
        sqlx::query(concat!(
            "SELECT i.id, i.zmq_host, i.heartbeat_port, i.command_port, i.curve_public_key, \
                 i.incarnation, i.api_address FROM pushy_instances i WHERE ",
            alive!(),
            " ORDER BY i.started_at, i.id"
        ))
        .bind(i64::from(LOCK_CLASS as u32))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(instance)
        .collect()
    }

    /// Deletes the rows of dead instances (judged here, not from a caller's view that
    /// may predate a member's joining), and the presence they published.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn forget_dead(&self) -> Result<(), Error> {
        sqlx::query(concat!(
            "DELETE FROM pushy_instances i WHERE NOT ",
            alive!()
        ))
        .bind(i64::from(LOCK_CLASS as u32))
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "DELETE FROM pushy_presence p WHERE NOT EXISTS \
             (SELECT 1 FROM pushy_instances i WHERE i.id = p.instance_id)",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Publishes node states held by `instance`: available or not, `None` when the node
    /// left it.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn set_presence(
        &self,
        instance: &str,
        changes: &[(String, String, Option<bool>)],
    ) -> Result<(), Error> {
        let (mut up_org, mut up_node, mut up_avail) = (Vec::new(), Vec::new(), Vec::new());
        let (mut gone_org, mut gone_node) = (Vec::new(), Vec::new());
        for (org, node, available) in changes {
            match available {
                Some(a) => {
                    up_org.push(org.as_str());
                    up_node.push(node.as_str());
                    up_avail.push(*a);
                }
                None => {
                    gone_org.push(org.as_str());
                    gone_node.push(node.as_str());
                }
            }
        }
        let mut tx = self.pool.begin().await?;
        if !gone_org.is_empty() {
            // Only this instance's row: the node may already be held by another.
            sqlx::query(
                "DELETE FROM pushy_presence p USING unnest($1::text[], $2::text[]) AS g(org, node) \
                 WHERE p.org_id = g.org AND p.node_name = g.node AND p.instance_id = $3",
            )
            .bind(&gone_org)
            .bind(&gone_node)
            .bind(instance)
            .execute(&mut *tx)
            .await?;
        }
        if !up_org.is_empty() {
            sqlx::query(
                "INSERT INTO pushy_presence (org_id, node_name, instance_id, available) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[]) \
                 ON CONFLICT (org_id, node_name) DO UPDATE SET instance_id = EXCLUDED.instance_id, \
                 available = EXCLUDED.available, updated_at = now()",
            )
            .bind(&up_org)
            .bind(&up_node)
            .bind(vec![instance; up_org.len()])
            .bind(&up_avail)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every published node state, as `(organization GUID, presence)`, whoever holds it
    /// (an instance loads them once, then follows the holders' broadcasts).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn all_presence(&self) -> Result<Vec<(String, Presence)>, Error> {
        let rows =
            sqlx::query("SELECT org_id, node_name, instance_id, available FROM pushy_presence")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("org_id")?,
                    Presence {
                        node: r.try_get("node_name")?,
                        instance: r.try_get("instance_id")?,
                        available: r.try_get("available")?,
                    },
                ))
            })
            .collect()
    }

    /// The connected nodes of `org` held by one of `live`, by name; only `nodes` when
    /// given.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn presence(
        &self,
        org: &str,
        nodes: Option<&[String]>,
        live: &[String],
    ) -> Result<Vec<Presence>, Error> {
        let rows = match nodes {
            Some(nodes) => {
                sqlx::query(
                    "SELECT node_name, instance_id, available FROM pushy_presence \
                     WHERE org_id = $1 AND node_name = ANY($2) AND instance_id = ANY($3)",
                )
                .bind(org)
                .bind(nodes)
                .bind(live)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT node_name, instance_id, available FROM pushy_presence \
                     WHERE org_id = $1 AND instance_id = ANY($2) ORDER BY node_name",
                )
                .bind(org)
                .bind(live)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(Presence {
                    node: r.try_get("node_name")?,
                    instance: r.try_get("instance_id")?,
                    available: r.try_get("available")?,
                })
            })
            .collect()
    }

    /// Records `instance` as the owner of `job` (before the job row is written).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn set_owner(&self, job: &str, instance: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO pushy_job_owners (job_id, instance_id) VALUES ($1, $2) \
             ON CONFLICT (job_id) DO UPDATE SET instance_id = EXCLUDED.instance_id",
        )
        .bind(job)
        .bind(instance)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The instance that owns `job`, if any.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn owner(&self, job: &str) -> Result<Option<String>, Error> {
        Ok(
            sqlx::query_scalar("SELECT instance_id FROM pushy_job_owners WHERE job_id = $1")
                .bind(job)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Unfinished jobs whose owner is not in `live` (or that never had one: written by a
    /// single instance before the cluster was enabled).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn orphans(&self, live: &[String]) -> Result<Vec<Orphan>, Error> {
        sqlx::query(
            "SELECT j.id, j.org_id, j.status, o.instance_id, NOT EXISTS (SELECT 1 FROM job_nodes n \
             WHERE n.job_id = j.id AND n.position IS NULL) AS ours FROM jobs j \
             LEFT JOIN pushy_job_owners o ON j.id = o.job_id::bpchar \
             WHERE j.status IN ($1, $2, $3) \
             AND (o.instance_id IS NULL OR o.instance_id <> ALL($4)) \
             ORDER BY j.created_at, j.id",
        )
        .bind(i32::from(JobStatus::New.code()))
        .bind(i32::from(JobStatus::Voting.code()))
        .bind(i32::from(JobStatus::Running.code()))
        .bind(live)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(Orphan {
                job: IncompleteJob {
                    id: rows::job_id("jobs", r.try_get("id")?)?,
                    org_id: OrgGuid(rows::unpad(r.try_get("org_id")?)),
                    status: rows::job_status(r.try_get::<i32, _>("status")?.into())?,
                    ours: r.try_get("ours")?,
                },
                owner: r.try_get("instance_id")?,
            })
        })
        .collect()
    }

    /// Makes `me` the owner of `job` if its owner is still `old`; whether it did. Of
    /// several survivors claiming at once, exactly one wins.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn claim(&self, job: &str, old: Option<&str>, me: &str) -> Result<bool, Error> {
        let done = match old {
            Some(old) => sqlx::query(
                "UPDATE pushy_job_owners SET instance_id = $3 WHERE job_id = $1 AND instance_id = $2",
            )
            .bind(job)
            .bind(old)
            .bind(me)
            .execute(&self.pool)
            .await?,
            None => sqlx::query(
                "INSERT INTO pushy_job_owners (job_id, instance_id) VALUES ($1, $2) \
                 ON CONFLICT (job_id) DO NOTHING",
            )
            .bind(job)
            .bind(me)
            .execute(&self.pool)
            .await?,
        };
        Ok(done.rows_affected() == 1)
    }

    /// Writes `posts` in one transaction under the bus lock (ids in commit order), and
    /// wakes the readers.
    ///
    /// # Errors
    /// When the database fails; nothing was posted then.
    pub async fn post(&self, posts: &[Post]) -> Result<(), Error> {
        if posts.is_empty() {
            return Ok(());
        }
        let targets: Vec<&str> = posts.iter().map(|p| p.target.as_str()).collect();
        let jobs: Vec<Option<&str>> = posts.iter().map(|p| p.job_id.as_deref()).collect();
        let bodies: Vec<&str> = posts.iter().map(|p| p.body.as_str()).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(BUS_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO pushy_bus (target, job_id, body) \
             SELECT t, j, b FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS p(t, j, b, n) \
             ORDER BY n",
        )
        .bind(&targets)
        .bind(&jobs)
        .bind(&bodies)
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(BUS_CHANNEL)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Messages for `me` (its own, [`EVERYONE`]'s and [`EVENTS`]) after id `after`, at
    /// most `limit`, in order.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn read(&self, me: &str, after: i64, limit: i64) -> Result<Vec<BusRow>, Error> {
        sqlx::query(
            "SELECT id, target, job_id, body FROM pushy_bus \
             WHERE id > $2 AND target IN ($1, $3, $4) ORDER BY id LIMIT $5",
        )
        .bind(me)
        .bind(after)
        .bind(EVERYONE)
        .bind(EVENTS)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(bus_row)
        .collect()
    }

    /// Deletes `me`'s own messages up to `upto`, once handled: what is left for a dead
    /// instance is exactly what it never handled ([`ClusterDb::take_unread`]).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn handled(&self, me: &str, upto: i64) -> Result<(), Error> {
        sqlx::query("DELETE FROM pushy_bus WHERE target = $1 AND id <= $2")
            .bind(me)
            .bind(upto)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The last id posted so far (0 when none).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn last_id(&self) -> Result<i64, Error> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(max(id), 0)::bigint FROM pushy_bus")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Every job event kept, in order (for an instance that starts while jobs run).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn events(&self, upto: i64) -> Result<Vec<BusRow>, Error> {
        sqlx::query(
            "SELECT id, target, job_id, body FROM pushy_bus WHERE target = $1 AND id <= $2 \
             ORDER BY id",
        )
        .bind(EVENTS)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(bus_row)
        .collect()
    }

    /// Takes (deletes and returns, in order) the news for jobs `me` owns that was sent
    /// to instances not in `live` and never read: what a dead owner missed, and what
    /// holders sent it before they learnt of the new owner. Only `job`'s when given.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn take_unread(
        &self,
        me: &str,
        live: &[String],
        job: Option<&str>,
    ) -> Result<Vec<BusRow>, Error> {
        let mut rows: Vec<BusRow> = sqlx::query(
            // The literal targets match the partial index `pushy_bus_news`.
            "DELETE FROM pushy_bus b USING pushy_job_owners o \
             WHERE b.job_id = o.job_id AND o.instance_id = $1 AND b.target <> ALL($2) \
             AND b.job_id IS NOT NULL AND b.target NOT IN ('*', 'events') \
             AND ($3::text IS NULL OR b.job_id = $3) \
             RETURNING b.id, b.target, b.job_id, b.body",
        )
        .bind(me)
        .bind(live)
        .bind(job)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(bus_row)
        .collect::<Result<_, _>>()?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Deletes messages read by now (older than `keep`), and events older than
    /// `keep_events` whose job has finished.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn prune(&self, keep: Duration, keep_events: Duration) -> Result<(), Error> {
        sqlx::query(
            "DELETE FROM pushy_bus WHERE target <> $1 AND created_at < now() - make_interval(secs => $2)",
        )
        .bind(EVENTS)
        .bind(keep.as_secs_f64())
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "DELETE FROM pushy_bus b WHERE target = $1 AND created_at < now() - make_interval(secs => $2) \
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = b.job_id::bpchar AND j.status IN ($3, $4, $5))",
        )
        .bind(EVENTS)
        .bind(keep_events.as_secs_f64())
        .bind(i32::from(JobStatus::New.code()))
        .bind(i32::from(JobStatus::Voting.code()))
        .bind(i32::from(JobStatus::Running.code()))
        .execute(&self.pool)
        .await?;
        sqlx::query(
            // Only of jobs that exist and finished: an owner row is written before its job.
            "DELETE FROM pushy_job_owners o WHERE EXISTS (SELECT 1 FROM jobs j \
             WHERE j.id = o.job_id::bpchar AND j.status NOT IN ($1, $2, $3))",
        )
        .bind(i32::from(JobStatus::New.code()))
        .bind(i32::from(JobStatus::Voting.code()))
        .bind(i32::from(JobStatus::Running.code()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn instance(r: &PgRow) -> Result<Instance, Error> {
    let port = |c: &str| -> Result<u16, Error> {
        u16::try_from(r.try_get::<i32, _>(c)?).map_err(|_| Error::Corrupt {
            table: "pushy_instances",
            what: format!("{c} out of range"),
        })
    };
    Ok(Instance {
        id: r.try_get("id")?,
        zmq_host: r.try_get("zmq_host")?,
        heartbeat_port: port("heartbeat_port")?,
        command_port: port("command_port")?,
        curve_public_key: r.try_get("curve_public_key")?,
        incarnation: r.try_get("incarnation")?,
        api_address: r.try_get("api_address")?,
    })
}

fn bus_row(r: &PgRow) -> Result<BusRow, Error> {
    Ok(BusRow {
        id: r.try_get("id")?,
        target: r.try_get("target")?,
        job_id: r.try_get("job_id")?,
        body: r.try_get("body")?,
    })
}
