//! Retention (issue 15 §5): deleting finished jobs older than `[retention]
//! finished_jobs_max_age`, with their nodes, options and output. The original kept every
//! job forever (http.md §5.5 item 9), and so does the default here.
//!
//! One task sweeps at start-up, then every `interval`. A sweep deletes a batch of jobs that
//! finished before its cutoff (one short transaction, [`Store::delete_finished_jobs`]),
//! pauses, and goes on until a batch comes back short. The pause after a batch is at least
//! as long as the batch took, so a sweep never holds the store more than half the time and
//! job writes go through between batches; on SQLite, whose one write lock a batch holds,
//! that is what keeps job traffic moving during a large first sweep.
//!
//! In a cluster every instance sweeps: a PostgreSQL batch skips the rows another
//! instance's batch has locked, so they share the work and never delete a job twice. That
//! costs one idle query per instance and interval, and needs no election.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RetentionConfig;
use crate::metrics::Metrics;
use crate::store::Store;
use pushy_store::retention::{cutoff, sweep};

/// What to delete and how often, from a `[retention]` section that enables it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How long after it finished a job is deleted.
    pub max_age: Duration,
    /// Jobs per batch (per transaction).
    pub batch: u32,
    /// Time between sweeps.
    pub interval: Duration,
}

impl Policy {
    /// The policy `config` asks for; `None` when it keeps every job.
    pub fn from_config(config: &RetentionConfig) -> Option<Policy> {
        config.enabled().then(|| Policy {
            max_age: Duration::from_secs(config.finished_jobs_max_age),
            batch: config.batch.max(1),
            interval: Duration::from_secs(config.interval.max(1)),
        })
    }
}

/// Starts the retention task on `tracker` when `config` enables it; it ends when
/// `shutdown` is cancelled. Returns whether it started.
pub fn spawn(
    config: &RetentionConfig,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> bool {
    let Some(policy) = Policy::from_config(config) else {
        return false;
    };
    tracing::info!(
        max_age_s = policy.max_age.as_secs(),
        batch = policy.batch,
        interval_s = policy.interval.as_secs(),
        "deleting finished jobs older than max_age"
    );
    tracker.spawn(async move {
        tokio::select! {
            () = run(policy, &*store, &metrics) => {}
            () = shutdown.cancelled() => {}
        }
    });
    true
}

/// Sweeps now and then every `policy.interval`, for ever.
async fn run(policy: Policy, store: &dyn Store, metrics: &Metrics) {
    loop {
        let started = Instant::now();
        let cutoff = cutoff(Utc::now(), policy.max_age);
        let counted = |n: u64| {
            metrics.jobs_purged.inc_by(n);
        };
        match sweep(store, cutoff, policy.batch, counted).await {
            Ok(deleted) => tracing::info!(
                deleted,
                cutoff = %cutoff.format("%Y-%m-%d %H:%M:%S"),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "retention sweep"
            ),
            // Tried again at the next sweep; the batches before it stay deleted.
            Err(e) => tracing::warn!(
                deleted = e.deleted,
                error = %e.source,
                transient = e.source.is_transient(),
                "retention sweep failed; trying again at the next one"
            ),
        }
        tokio::time::sleep(policy.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::{DateTime, TimeDelta};
    use pushy_protocol::job::{JobId, JobStatus, NodeStatus, OrgGuid};
    use pushy_store::{self as store, JobOptions, JobRecord, PostgresStore, SqliteStore};

    use crate::config::Config;

    #[test]
    fn no_policy_unless_configured() {
        let c = Config::from_toml("", "x").unwrap();
        assert_eq!(Policy::from_config(&c.retention), None);
        let c = Config::from_toml("[retention]\nfinished_jobs_max_age = 3600\n", "x").unwrap();
        assert_eq!(
            Policy::from_config(&c.retention),
            Some(Policy {
                max_age: Duration::from_secs(3600),
                batch: 100,
                interval: Duration::from_secs(600),
            })
        );
    }

    fn job(n: u32, created_at: DateTime<Utc>) -> JobRecord {
        JobRecord {
            id: JobId::parse(&format!("{n:032x}")).unwrap(),
            org_id: OrgGuid("feedface".repeat(4)),
            command: "chef-client".to_owned(),
            quorum: 1,
            run_timeout: 3600,
            status: JobStatus::New,
            created_at,
            updated_at: created_at,
            requestor: None,
            options: JobOptions {
                capture: true,
                ..JobOptions::default()
            },
            nodes: vec![("n1".to_owned(), NodeStatus::New)],
        }
    }

    /// A server configured with `[retention]` deletes a job that finished two hours ago
    /// (max age one hour) with its output, and keeps one running for as long and one that
    /// finished ten minutes ago.
    async fn configured_task_deletes_old_finished_and_keeps_the_rest(store: Arc<dyn Store>) {
        let config = Config::from_toml(
            "[retention]\nfinished_jobs_max_age = 3600\nbatch = 1\ninterval = 1\n",
            "test",
        )
        .unwrap();
        let now = Utc::now();
        let hours_ago = now - TimeDelta::hours(2);
        let (old, running, recent) = (job(1, hours_ago), job(2, hours_ago), job(3, hours_ago));
        for (j, status, at) in [
            (&old, JobStatus::Complete, hours_ago),
            (&running, JobStatus::Running, hours_ago),
            (&recent, JobStatus::Complete, now - TimeDelta::minutes(10)),
        ] {
            store.create_job(j).await.unwrap();
            store
                .update_statuses(&j.org_id, &j.id, Some(status), &[], at)
                .await
                .unwrap();
            store
                .insert_output(&j.id, "n1", "out", "", false)
                .await
                .unwrap();
        }

        let metrics = Arc::new(Metrics::new());
        let (shutdown, tracker) = (CancellationToken::new(), TaskTracker::new());
        let started = spawn(
            &config.retention,
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
            &tracker,
        );
        assert!(started);
        let deadline = Instant::now() + Duration::from_secs(10);
        while store
            .find_job(&old.org_id, &old.id)
            .await
            .unwrap()
            .is_some()
        {
            assert!(
                Instant::now() < deadline,
                "the old finished job is still there"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A second sweep (interval 1 s) finds nothing more to delete.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("the task ends on shutdown");

        for kept in [&running, &recent] {
            assert!(
                store
                    .find_job(&kept.org_id, &kept.id)
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        let output = store
            .fetch_output(&old.org_id, &old.id, "n1", store::OutputChannel::Stdout)
            .await
            .unwrap();
        assert_eq!(output, None);
        let text = metrics.render();
        assert!(text.contains("pushy_jobs_purged_total 1\n"), "{text}");
    }

    #[tokio::test]
    async fn a_configured_server_purges_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("pushy.sqlite"))
            .await
            .unwrap();
        configured_task_deletes_old_finished_and_keeps_the_rest(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn a_configured_server_purges_on_postgresql() {
        use sqlx::{Connection as _, Executor as _};
        let admin_url = std::env::var("PUSHY_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(conn) => conn,
            Err(e) => {
                // CI starts PostgreSQL (scripts/test): there a missing one is a failure.
                assert!(
                    std::env::var_os("CI").is_none(),
                    "PostgreSQL not reachable in CI"
                );
                eprintln!("SKIPPED: PostgreSQL not reachable at {admin_url}: {e}");
                return;
            }
        };
        let name = format!("pushy_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
        let base = admin_url.rsplit_once('/').map_or(&*admin_url, |(b, _)| b);
        let options: store::PgConnectOptions = format!("{base}/{name}").parse().unwrap();
        let outcome = tokio::spawn(async move {
            let store = PostgresStore::connect(options, 4).await.unwrap();
            configured_task_deletes_old_finished_and_keeps_the_rest(Arc::new(store)).await;
        })
        .await;
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {name} WITH (FORCE)"
            )))
            .await
            .unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic.into_panic());
        }
    }
}
