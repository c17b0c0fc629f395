//! Issue 12 §2: a server restart loses nothing a node did. A resumed job reconciles each
//! node's first report: a node that lost its commit is asked again, one whose `run` was
//! lost is sent it again, one whose commit answer was lost is counted, one that comes
//! back idle without its result is `crashed` at once (not at the run timeout), and the
//! run timer counts from the persisted run start however often the server restarts.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::node::{Script, ScriptedNode};
use common::*;
use pushy_protocol::job::{JobId, JobStatus, NodeStatus, OrgGuid};
use pushy_server::store::{JobOptions, JobRecord, SqliteStore, Store};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// Fast heartbeats and liveness, but windows long enough that only the behaviour under
/// test can end a job within [`WAIT`].
fn fast(c: &mut pushy_server::config::Config) {
    c.pushy.heartbeat_interval = 100;
    c.pushy.decay_window = 4;
    c.pushy.down_threshold = 0.25;
    c.pushy.voting_timeout = 60;
    c.pushy.wait_complete_time = 1;
}

async fn harness() -> Harness {
    let h = Harness::with_file_store(fast).await;
    h.add_client("DONKEY");
    h
}

/// The test org's GUID, from the local key directory.
fn org_guid(h: &Harness) -> OrgGuid {
    let path = chef_dir(h.tmp.path())
        .join("orgs")
        .join(ORG)
        .join("org.json");
    let org: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    OrgGuid(org["guid"].as_str().unwrap().to_owned())
}

async fn job_body(h: &Harness, job: &str) -> serde_json::Value {
    h.call("GET", job, "", ADMIN_USER).await.json()
}

async fn database(h: &Harness) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", h.tmp.path().join("pushy.sqlite").display());
    sqlx::SqlitePool::connect(&url).await.unwrap()
}

/// Direct SQL on the stopped server's database (only what no API can do: make time pass).
async fn sql(h: &Harness, statement: &'static str) {
    let pool = database(h).await;
    sqlx::query(statement).execute(&pool).await.unwrap();
    pool.close().await;
}

/// The stored `updated_at` of a job: while it runs, when it started running.
async fn run_start(h: &Harness, id: &str) -> String {
    let pool = database(h).await;
    let t: String = sqlx::query_scalar("SELECT updated_at FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_idle_without_its_result_is_crashed_at_once() {
    let mut h = harness().await;
    let d = ScriptedNode::start(&h, "DONKEY", Script::Hold).await;
    let job = h
        .create_job(r#"{"command":"sleep 5","nodes":["DONKEY"]}"#, ADMIN_USER)
        .await;
    h.wait_for_job(&job, "running", WAIT).await;
    h.stop().await;
    // The command finishes while the server is down; the result goes to a dead
    // connection and, as with the Ruby client, is gone.
    d.release();
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.start(fast).await;
    d.reconnect(&h).await;
    let body = h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"crashed": ["DONKEY"]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_run_is_sent_again_when_the_node_returns() {
    let mut h = harness().await;
    let d = ScriptedNode::start(&h, "DONKEY", Script::LoseFirstRun).await;
    let job = h
        .create_job(
            r#"{"command":"chef-client","nodes":["DONKEY"]}"#,
            ADMIN_USER,
        )
        .await;
    h.wait_for_job(&job, "running", WAIT).await;
    assert_eq!(
        job_body(&h, &job).await["nodes"],
        json!({"ready": ["DONKEY"]})
    );
    h.restart(fast).await;
    d.reconnect(&h).await;
    let body = h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"succeeded": ["DONKEY"]}));
    let runs = d
        .seen
        .lock()
        .unwrap()
        .types
        .iter()
        .filter(|t| *t == "run")
        .count();
    assert_eq!(runs, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_answer_counts_when_the_node_returns() {
    let mut h = harness().await;
    let d = ScriptedNode::start(&h, "DONKEY", Script::SilentCommit).await;
    let job = h
        .create_job(
            r#"{"command":"chef-client","nodes":["DONKEY"]}"#,
            ADMIN_USER,
        )
        .await;
    h.wait_for_job(&job, "voting", WAIT).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !d.saw("commit") {
        assert!(std::time::Instant::now() < deadline, "no commit arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.restart(fast).await;
    d.reconnect(&h).await;
    let body = h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"succeeded": ["DONKEY"]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_new_waits_for_its_nodes_to_come_back() {
    let mut h = harness().await;
    let d = ScriptedNode::start(
        &h,
        "DONKEY",
        Script::Succeed {
            stdout: "ok\n".into(),
            stderr: String::new(),
        },
    )
    .await;
    h.stop().await;
    // Killed right after the 201: the job row exists, nothing was sent.
    let org = org_guid(&h);
    let id = pushy_server::jobs::new_job_id(&org);
    let store = SqliteStore::open(&h.tmp.path().join("pushy.sqlite"))
        .await
        .unwrap();
    let now = Utc::now();
    store
        .create_job(&JobRecord {
            id: id.clone(),
            org_id: org,
            command: "chef-client".into(),
            quorum: 1,
            run_timeout: 3600,
            status: JobStatus::New,
            created_at: now,
            updated_at: now,
            requestor: None,
            options: JobOptions {
                user: None,
                dir: None,
                env: None,
                capture: false,
                file: None,
                controls: None,
            },
            nodes: vec![("DONKEY".into(), NodeStatus::New)],
        })
        .await
        .unwrap();
    drop(store);
    h.start(fast).await;
    // Not failed at once for want of nodes: still voting until the node is back.
    let job = format!("/organizations/{ORG}/pushy/jobs/{id}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(job_body(&h, &job).await["status"], "voting");
    d.reconnect(&h).await;
    let body = h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"succeeded": ["DONKEY"]}));
    let _ = JobId::parse(id.as_str()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_timer_survives_two_restarts() {
    let mut h = harness().await;
    let d = ScriptedNode::start(&h, "DONKEY", Script::Hang).await;
    let job = h
        .create_job(
            r#"{"command":"sleep 100","nodes":["DONKEY"],"run_timeout":3600}"#,
            ADMIN_USER,
        )
        .await;
    h.wait_for_job(&job, "running", WAIT).await;
    let id = job.rsplit('/').next().unwrap().to_owned();

    // First restart, after 40 minutes of the run (made to pass in the database).
    h.stop().await;
    sql(
        &h,
        "UPDATE jobs SET updated_at = datetime(updated_at, '-2400 seconds')",
    )
    .await;
    let started = run_start(&h, &id).await;
    h.start(fast).await;
    d.reconnect(&h).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = job_body(&h, &job).await;
    assert_eq!(body["status"], "running");
    assert_eq!(body["nodes"], json!({"running": ["DONKEY"]}));

    // Second restart, 21 minutes later: past the hour since the run started, so the job
    // times out at once instead of getting another hour.
    h.stop().await;
    assert_eq!(
        run_start(&h, &id).await,
        started,
        "a resume does not move the run start"
    );
    sql(
        &h,
        "UPDATE jobs SET updated_at = datetime(updated_at, '-1260 seconds')",
    )
    .await;
    h.start(fast).await;
    let body = h.wait_for_job(&job, "timed_out", WAIT).await;
    assert_eq!(body["nodes"], json!({"timed_out": ["DONKEY"]}));
}

/// A job the original left running (here a 1.x database adopted in place) cannot be
/// resumed: its nodes will never report to this server. It ends `crashed` at start-up,
/// with its unfinished nodes, instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_original_left_running_ends_crashed_at_start() {
    use sqlx::{Connection as _, Executor as _};
    let Some(db) = PgDb::create().await else {
        return;
    };
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    conn.execute(include_str!("fixtures/original_1x.sql"))
        .await
        .unwrap();
    conn.execute(
        "INSERT INTO jobs VALUES ('0123456789abcdef0123456789abcdef', \
           'feedfacefeedfacefeedfacefeedface', 'chef-client', 1, 3600, \
           '0123456789abcdef0123456789abcdef', '2013-10-14 12:00:00', '2013-10-14 12:01:40', 2);
         INSERT INTO job_nodes VALUES
           ('0123456789abcdef0123456789abcdef', 'feedfacefeedfacefeedfacefeedface', 'zeta', 2,
            '2013-10-14 12:00:00', '2013-10-14 12:01:39'),
           ('0123456789abcdef0123456789abcdef', 'feedfacefeedfacefeedfacefeedface', 'alpha', 3,
            '2013-10-14 12:00:00', '2013-10-14 12:01:40');",
    )
    .await
    .unwrap();
    conn.close().await.unwrap();

    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(
        pushy_server::store::PostgresStore::connect(db.options(), 2)
            .await
            .unwrap(),
    );
    let _h = Harness::with_store(store.clone(), fast).await;
    let org = OrgGuid("feedfacefeedfacefeedfacefeedface".into());
    let id = JobId::parse("0123456789abcdef0123456789abcdef").unwrap();
    let job = store.find_job(&org, &id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Crashed);
    let mut nodes = job.nodes.clone();
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        nodes,
        [
            ("alpha".to_owned(), NodeStatus::Succeeded),
            ("zeta".to_owned(), NodeStatus::Crashed)
        ]
    );
    assert!(store.incomplete_jobs().await.unwrap().is_empty());
}

/// A request dropped while its job is being created (the client gave up, say on a store
/// that hung) must not leave the job behind with nobody driving it: every job that exists
/// moves on from `new` (found by bench/faults with blackholed PostgreSQL outages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_create_request_leaves_no_job_stuck_new() {
    let h = harness().await;
    let org = org_guid(&h);
    let spec = br#"{"command":"chef-client","nodes":["DONKEY"]}"#;
    // Give up on each creation after a different short while, so some are dropped before
    // the insert, some after it, and some not at all.
    for micros in (0..400).step_by(5) {
        let create = h.state.jobs.create(
            &org,
            ADMIN_USER,
            pushy_server::jobs::parse_spec(spec).unwrap(),
        );
        let _ = tokio::time::timeout(Duration::from_micros(micros), create).await;
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let jobs = h.state.store.list_jobs(&org).await.unwrap();
        assert!(!jobs.is_empty());
        let stuck = jobs.iter().filter(|j| j.status == JobStatus::New).count();
        if stuck == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{stuck} of {} jobs stuck new",
            jobs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
