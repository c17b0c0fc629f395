//! Operators' controls (issue 15) end to end: real agents on loopback, on both stores —
//! rate control with its `waiting` nodes and error limit, any N of the listed nodes, and
//! the success threshold's verdict.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::agents::{RestartRig, Rig, WAIT, fast, open_gate, rig_on};
use common::node::{Script, ScriptedNode};
use common::{ADMIN_USER, ORG, PgDb};
use pushy_server::store::{PostgresStore, SqliteStore, Store};
use serde_json::{Value, json};

async fn sqlite() -> Arc<dyn Store> {
    Arc::new(SqliteStore::in_memory().await.unwrap())
}

async fn postgres(db: &PgDb) -> Arc<dyn Store> {
    Arc::new(PostgresStore::connect(db.options(), 4).await.unwrap())
}

/// Polls the job until `check` holds for its document.
async fn wait_until(r: &Rig, job: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let body = r.h.call("GET", job, "", ADMIN_USER).await.json();
        if check(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "never {what}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(body: &Value, state: &str) -> usize {
    body["nodes"][state].as_array().map_or(0, Vec::len)
}

/// Four agents, `w1`..`w4`, all available.
async fn fleet(r: &Rig) -> Vec<common::agents::Agent> {
    let agents: Vec<_> = (1..=4)
        .map(|i| r.start_agent(&format!("w{i}"), ""))
        .collect();
    for i in 1..=4 {
        r.wait_available(&format!("w{i}")).await;
    }
    agents
}

async fn rate_control(store: Arc<dyn Store>) {
    let r = rig_on(store).await;
    let _agents = fleet(&r).await;
    let gate = r.h.tmp.path().join("gate");
    let body = json!({
        "command": format!("gate {}", gate.display()),
        "nodes": ["w1", "w2", "w3", "w4"],
        "max_concurrency": "50%",
        "success_threshold": 4,
    });
    let job = r.h.create_job(&body.to_string(), ADMIN_USER).await;
    // Two run; two wait for a slot, and the job document says so.
    let doc = wait_until(&r, &job, "two running", |b| count(b, "running") == 2).await;
    assert_eq!(doc["nodes"]["waiting"], json!(["w3", "w4"]), "{doc}");
    assert_eq!(doc["max_concurrency"], "50%");
    assert!(
        doc.get("verdict").is_none(),
        "no verdict while running: {doc}"
    );
    open_gate(&gate, 0);
    let doc = r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(count(&doc, "succeeded"), 4, "{doc}");
    assert_eq!(doc["verdict"], "success");
    let evs = r.h.job_feed(&job).await;
    let waiting: Vec<_> = evs
        .iter()
        .filter(|e| e.name == "run_waiting")
        .map(|e| e.data["node"].clone())
        .collect();
    assert_eq!(waiting, [json!("w3"), json!("w4")]);

    // One at a time, no error tolerated: the first failure skips the rest, honestly.
    let body = json!({
        "command": "fail",
        "nodes": ["w1", "w2", "w3", "w4"],
        "max_concurrency": 1,
        "max_errors": 0,
        "success_threshold": "50%",
    });
    let job = r.h.create_job(&body.to_string(), ADMIN_USER).await;
    let doc = r.h.wait_for_job(&job, "stopped", WAIT).await;
    assert_eq!(
        doc["nodes"],
        json!({"failed": ["w1"], "skipped": ["w2", "w3", "w4"]})
    );
    assert_eq!(doc["verdict"], "failure");
    // The skipped nodes were released: available for the next job.
    for n in ["w2", "w3", "w4"] {
        r.wait_available(n).await;
    }
}

async fn any_n(store: Arc<dyn Store>) {
    let r = rig_on(store).await;
    let _agents = fleet(&r).await;
    // w1 is busy with another job; `ghost` never connected.
    let gate = r.h.tmp.path().join("busy");
    let busy = json!({"command": format!("gate {}", gate.display()), "nodes": ["w1"]});
    let busy = r.h.create_job(&busy.to_string(), ADMIN_USER).await;
    wait_until(&r, &busy, "w1 running", |b| count(b, "running") == 1).await;
    let body = json!({
        "command": "hello",
        "nodes": ["ghost", "w1", "w2", "w3", "w4"],
        "run_on_any": 2,
    });
    let job = r.h.create_job(&body.to_string(), ADMIN_USER).await;
    let doc = r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(
        doc["nodes"],
        json!({
            "succeeded": ["w2", "w3"],
            "unavailable": ["ghost"],
            "nacked": ["w1"],
            "skipped": ["w4"],
        }),
        "{doc}"
    );
    assert_eq!(doc["run_on_any"], 2);
    open_gate(&gate, 0);
    r.h.wait_for_job(&busy, "complete", WAIT).await;

    // Fewer than N can run: quorum_failed.
    let body = json!({"command": "hello", "nodes": ["ghost", "w1"], "run_on_any": 2});
    let job = r.h.create_job(&body.to_string(), ADMIN_USER).await;
    let doc = r.h.wait_for_job(&job, "quorum_failed", WAIT).await;
    assert_eq!(count(&doc, "was_ready"), 1, "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_control_on_sqlite() {
    rate_control(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_control_on_postgres() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    rate_control(postgres(&db).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_n_on_sqlite() {
    any_n(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_n_on_postgres() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    any_n(postgres(&db).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_controls_are_400s_and_a_plain_job_shows_none() {
    let r = rig_on(sqlite().await).await;
    let path = format!("/organizations/{ORG}/pushy/jobs");
    for (body, msg) in [
        (
            json!({"command": "x", "nodes": ["a"], "max_concurrency": 0}),
            "invalid max_concurrency (expected a number of nodes, or a percentage such as \"10%\")",
        ),
        (
            json!({"command": "x", "nodes": ["a"], "run_on_any": 2}),
            "invalid run_on_any (more than the number of nodes)",
        ),
        (
            json!({"command": "x", "nodes": ["a"], "run_on_any": 1, "quorum": 1}),
            "quorum and run_on_any cannot be combined (run_on_any's quorum is its N)",
        ),
    ] {
        r.h.call("POST", &path, &body.to_string(), ADMIN_USER)
            .await
            .expect(400, json!({"error": msg}));
    }
    let job =
        r.h.create_job(r#"{"command":"x","nodes":["nobody"]}"#, ADMIN_USER)
            .await;
    let doc = r.h.wait_for_job(&job, "quorum_failed", WAIT).await;
    for key in [
        "max_concurrency",
        "run_on_any",
        "verdict",
        "success_threshold",
    ] {
        assert!(doc.get(key).is_none(), "{key} in a plain job: {doc}");
    }
}

/// A server restart mid-job resumes the window where it was: the nodes running before
/// finish, the waiting ones are started in turn, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_rate_control_where_it_was() {
    let mut rr = RestartRig::new(fast).await;
    let _agents = fleet(&rr.r).await;
    let gate = rr.r.h.tmp.path().join("gate");
    let body = json!({
        "command": format!("gate {}", gate.display()),
        "nodes": ["w1", "w2", "w3", "w4"],
        "max_concurrency": 2,
        "capture_output": true,
    });
    let job = rr.r.h.create_job(&body.to_string(), ADMIN_USER).await;
    wait_until(&rr.r, &job, "two running", |b| count(b, "running") == 2).await;
    rr.restart().await;
    let doc = rr.r.h.call("GET", &job, "", ADMIN_USER).await.json();
    assert_eq!(
        count(&doc, "waiting"),
        2,
        "still waiting after the restart: {doc}"
    );
    open_gate(&gate, 0);
    let doc = rr.r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(count(&doc, "succeeded"), 4, "{doc}");
    for n in ["w1", "w2", "w3", "w4"] {
        let out = rr.r.output(&job, n, "stdout").await;
        assert_eq!(out.text, "released\n", "{n} ran once");
    }
}

/// A mixed job: a node speaking the protocol as the Ruby client does (scripted, refusing
/// the commit, then holding its run) beside real agents; the controls are the server's
/// alone, so both kinds of node take part as in any job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_work_with_a_ruby_shaped_node_beside_our_agents() {
    let r = rig_on(sqlite().await).await;
    let _agents = fleet(&r).await;
    r.h.add_client("DONKEY");
    let donkey = ScriptedNode::start(&r.h, "DONKEY", Script::NackCommit).await;
    r.wait_available("DONKEY").await;
    let body = json!({"command": "hello", "nodes": ["DONKEY", "w1", "w2"], "run_on_any": 1});
    let job = r.h.create_job(&body.to_string(), ADMIN_USER).await;
    let doc = r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(
        doc["nodes"],
        json!({"succeeded": ["w1"], "nacked": ["DONKEY"], "skipped": ["w2"]}),
        "{doc}"
    );
    drop(donkey);
    r.h.add_client("FIONA");
    let fiona = ScriptedNode::start(&r.h, "FIONA", Script::Hold).await;
    r.wait_available("FIONA").await;
    let body = json!({"command": "hello", "nodes": ["FIONA", "w3", "w4"], "max_concurrency": 1});
    let job = r.h.create_job(&body.to_string(), ADMIN_USER).await;
    let doc = wait_until(&r, &job, "FIONA running", |b| count(b, "running") == 1).await;
    assert_eq!(doc["nodes"]["waiting"], json!(["w3", "w4"]), "{doc}");
    fiona.release();
    let doc = r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(count(&doc, "succeeded"), 3, "{doc}");
}
