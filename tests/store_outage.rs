//! The store away (issue 12 §3): while PostgreSQL is unreachable or SQLite cannot take a
//! write, requests that need the store answer 503 with `Retry-After` and an error body of
//! the documented shape; once the store is back they succeed again, without a restart,
//! and nothing of the refused requests was kept.

mod common;
use std::sync::Arc;

use common::*;
use pushy_server::store::pg_proxy::{AtCommit, PgProxy};
use pushy_server::store::{PostgresStore, Store};
use serde_json::json;

const JOB: &str = r#"{"command":"sleep 1","nodes":["DONKEY"]}"#;

fn jobs_url() -> String {
    format!("/organizations/{ORG}/pushy/jobs")
}

fn expect_unavailable(r: &Reply) {
    assert_eq!(r.status, 503, "{}", r.text);
    let retry_after = r.headers.get("retry-after").and_then(|v| v.to_str().ok());
    assert_eq!(retry_after, Some("5"));
    assert_eq!(
        r.json(),
        json!({"error": ["the job store is unavailable; retry later"]})
    );
}

/// A server with fast heartbeats whose PostgreSQL is reached through a proxy the test can
/// cut.
async fn fast_harness_behind_proxy(db: &PgDb) -> (PgProxy, Harness) {
    let proxy = PgProxy::in_front_of(&db.url).await;
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(proxy.options(&db.url), 4)
            .await
            .unwrap(),
    );
    let h = Harness::with_store(store, |c| {
        c.pushy.heartbeat_interval = 100;
        c.pushy.voting_timeout = 2;
        c.pushy.decay_window = 4;
        c.pushy.down_threshold = 0.25;
        c.pushy.wait_complete_time = 1;
    })
    .await;
    (proxy, h)
}

fn job_count(r: &Reply) -> usize {
    assert_eq!(r.status, 200, "{}", r.text);
    r.json().as_array().expect("a list of jobs").len()
}

#[tokio::test]
async fn postgres_outage_answers_503_with_retry_after_then_recovers() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let proxy = PgProxy::in_front_of(&db.url).await;
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(proxy.options(&db.url), 4)
            .await
            .unwrap(),
    );
    let h = Harness::with_store(store, |_| {}).await;
    let job = h.create_job(JOB, ADMIN_USER).await;

    proxy.cut().await;
    expect_unavailable(&h.call("GET", &jobs_url(), "", ADMIN_USER).await);
    expect_unavailable(&h.call("GET", &job, "", ADMIN_USER).await);
    expect_unavailable(&h.call("POST", &jobs_url(), JOB, ADMIN_USER).await);
    // Errors that are not the store's are answered as ever.
    let r = h.call("GET", &jobs_url(), "", INVALID_USER).await;
    assert_eq!(r.status, 401, "{}", r.text);

    proxy.restore().await;
    let r = h.call("GET", &job, "", ADMIN_USER).await;
    assert_eq!(r.status, 200, "{}", r.text);
    h.create_job(JOB, ADMIN_USER).await;
    let r = h.call("GET", &jobs_url(), "", ADMIN_USER).await;
    assert_eq!(job_count(&r), 2, "the refused job was not kept");
    h.token.cancel();
}

#[tokio::test]
async fn sqlite_write_lock_held_answers_503_then_recovers() {
    let h = Harness::with_file_store(|_| {}).await;
    // Another process holds the write lock; the store's busy timeout (5 s) runs out.
    let mut other = {
        use sqlx::Connection as _;
        let options =
            sqlx::sqlite::SqliteConnectOptions::new().filename(h.tmp.path().join("pushy.sqlite"));
        sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap()
    };
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();

    expect_unavailable(&h.call("POST", &jobs_url(), JOB, ADMIN_USER).await);
    // Readers are not blocked, and see nothing of the refused job.
    let r = h.call("GET", &jobs_url(), "", ADMIN_USER).await;
    assert_eq!(job_count(&r), 0);

    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    h.create_job(JOB, ADMIN_USER).await;
    let r = h.call("GET", &jobs_url(), "", ADMIN_USER).await;
    assert_eq!(job_count(&r), 1);
    h.token.cancel();
}

/// The job side of an outage: a node finishes while PostgreSQL is away; the job's write
/// waits and is retried, and the job ends with the node's true result once the store is
/// back (it used to give up, write `crashed` best-effort and stop driving the job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlives_a_postgres_outage_with_its_true_result() {
    use common::node::{Script, ScriptedNode};
    let Some(db) = PgDb::create().await else {
        return;
    };
    let (proxy, h) = fast_harness_behind_proxy(&db).await;
    h.add_client("DONKEY");
    let d = ScriptedNode::start(&h, "DONKEY", Script::Hold).await;
    let job = h.create_job(JOB, ADMIN_USER).await;
    let wait = std::time::Duration::from_secs(30);
    h.wait_for_job(&job, "running", wait).await;

    proxy.cut().await;
    d.release();
    // Longer than the pool's acquire timeout, so the write fails at least once.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    expect_unavailable(&h.call("GET", &job, "", ADMIN_USER).await);
    proxy.restore().await;

    let body = h.wait_for_job(&job, "complete", wait).await;
    assert_eq!(body["nodes"], json!({"succeeded": ["DONKEY"]}));
    assert!(d.saw("ack"), "the result was acknowledged once stored");
}

/// Results that reached the server during an outage count before the run timer, even
/// when the outage outlasts it: the job was only waiting for its store (found by
/// bench/faults with 30 s outages, where the timer won a coin toss against results
/// already in the job's inbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_that_arrived_during_an_outage_beat_the_run_timer() {
    use common::node::{Script, ScriptedNode};
    let Some(db) = PgDb::create().await else {
        return;
    };
    let (proxy, h) = fast_harness_behind_proxy(&db).await;
    let names = ["DONKEY", "FIONA", "SHREK"];
    let mut nodes = Vec::new();
    for n in names {
        h.add_client(n);
        nodes.push(ScriptedNode::start(&h, n, Script::Hold).await);
    }
    let job = h
        .create_job(
            r#"{"command":"sleep 1","nodes":["DONKEY","FIONA","SHREK"],"run_timeout":3}"#,
            ADMIN_USER,
        )
        .await;
    let wait = std::time::Duration::from_secs(30);
    h.wait_for_job(&job, "running", wait).await;

    proxy.cut().await;
    for n in &nodes {
        n.release();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Past the 3 s run timeout, with every result in and none stored.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    proxy.restore().await;

    let body = h.wait_for_job(&job, "complete", wait).await;
    assert_eq!(
        body["nodes"],
        json!({"succeeded": ["DONKEY", "FIONA", "SHREK"]})
    );
}

/// The connection drops while the job's insert commits: PostgreSQL committed, the server
/// never heard. It reads the job back, finds it, answers 201 and runs it (it used to
/// answer 503 and leave a job nobody drives `new` until the next start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_commit_answer_was_lost_is_created_and_runs() {
    use common::node::{Script, ScriptedNode};
    let Some(db) = PgDb::create().await else {
        return;
    };
    let (proxy, h) = fast_harness_behind_proxy(&db).await;
    h.add_client("DONKEY");
    let _d = ScriptedNode::start(&h, "DONKEY", Script::Fail).await;
    proxy.at_next_commit(AtCommit::LoseReply);
    let job = h.create_job(JOB, ADMIN_USER).await;
    assert!(!proxy.commit_fault_pending(), "the insert met the fault");

    let body = h
        .wait_for_job(&job, "complete", std::time::Duration::from_secs(30))
        .await;
    assert_eq!(body["nodes"], json!({"failed": ["DONKEY"]}));
    let r = h.call("GET", &jobs_url(), "", ADMIN_USER).await;
    assert_eq!(job_count(&r), 1);
}

/// The store goes away right after a job's insert, so its start (`voting`, then the
/// commits) waits for the store. The voting window opens when the commits go out: the
/// node's vote still counts although the outage outlasted `voting_timeout` (the job used
/// to end `quorum_failed` with every node willing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_at_a_jobs_start_does_not_use_up_its_voting_window() {
    use common::node::{Script, ScriptedNode};
    let Some(db) = PgDb::create().await else {
        return;
    };
    let (proxy, h) = fast_harness_behind_proxy(&db).await;
    h.add_client("DONKEY");
    let d = ScriptedNode::start(&h, "DONKEY", Script::Fail).await;
    proxy.at_next_commit(AtCommit::Cut);
    let job = h.create_job(JOB, ADMIN_USER).await;
    // Past the 2 s voting window, with the start not recorded, so not sent.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert!(!d.saw("commit"), "the start waited for the store");
    proxy.restore().await;

    let body = h
        .wait_for_job(&job, "complete", std::time::Duration::from_secs(30))
        .await;
    assert_eq!(body["nodes"], json!({"failed": ["DONKEY"]}));
}

/// As above, but the store stays away longer than the server waits to find out (10 s): it
/// answers 503, and once the store is back deletes the job its insert did commit, so a
/// job exists only if its POST was answered 201.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_committed_unbeknown_is_refused_and_deleted_once_the_store_is_back() {
    use sqlx::Connection as _;
    let Some(db) = PgDb::create().await else {
        return;
    };
    let (proxy, h) = fast_harness_behind_proxy(&db).await;
    proxy.at_next_commit(AtCommit::LoseReplyAndCut);
    expect_unavailable(&h.call("POST", &jobs_url(), JOB, ADMIN_USER).await);

    let mut direct = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut jobs_on_disk = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(&mut direct)
            .await
            .unwrap()
    };
    assert_eq!(jobs_on_disk().await, 1, "the insert did commit");
    proxy.restore().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while jobs_on_disk().await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the refused job is still stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        job_count(&h.call("GET", &jobs_url(), "", ADMIN_USER).await),
        0
    );
}
