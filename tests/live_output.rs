//! Live output (issue 15 §2) end to end: real agents stream a running command's output,
//! the server relays it on the job's feed as `run_output` (no id, not logged, a bounded
//! tail for late readers), and the stored output stays as it was.

mod common;

use std::sync::Arc;

use common::agents::{WAIT, open_gate, rig_on};
use common::node::{Script, ScriptedNode};
use common::{ADMIN_USER, FeedEvent, PgDb};
use pushy_server::store::{PostgresStore, SqliteStore, Store};
use serde_json::json;

fn streamed(events: &[FeedEvent], node: &str, key: &str) -> String {
    events
        .iter()
        .filter(|e| e.name == "run_output" && e.data["node"] == node)
        .filter_map(|e| e.data[key].as_str())
        .collect()
}

async fn streams_while_running(store: Arc<dyn Store>) {
    let r = rig_on(store).await;
    let _a = r.start_agent("live-a", "");
    r.wait_available("live-a").await;
    r.h.add_client("RUBY");
    let _ruby = ScriptedNode::start(
        &r.h,
        "RUBY",
        Script::Succeed {
            stdout: "at the end\n".into(),
            stderr: String::new(),
        },
    )
    .await;
    r.wait_available("RUBY").await;
    let body = json!({"command": "ticks", "nodes": ["live-a", "RUBY"], "capture_output": true});
    let job = r.h.create_job(&body.to_string(), ADMIN_USER).await;
    // Opened at once, the feed follows the job to its end: the output came while it ran.
    let events = r.h.job_feed(&job).await;
    let names: Vec<_> = events.iter().map(|e| e.name.as_str()).collect();
    let first_output = names
        .iter()
        .position(|n| *n == "run_output")
        .expect("output streamed");
    let done = events
        .iter()
        .position(|e| e.name == "run_complete" && e.data["node"] == "live-a")
        .unwrap();
    assert!(
        first_output < done,
        "streamed before the node finished: {names:?}"
    );
    assert_eq!(
        streamed(&events, "live-a", "stdout"),
        "tick 1\ntick 2\ntick 3\n"
    );
    assert_eq!(streamed(&events, "live-a", "stderr"), "bye\n");
    assert!(
        events.iter().all(|e| (e.name == "run_output") != e.has_id),
        "run_output has no id; every other event has one"
    );
    // The Ruby-shaped node was not asked to stream, and its output is stored as ever.
    assert_eq!(streamed(&events, "RUBY", "stdout"), "");
    let doc = r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(doc["nodes"], json!({"succeeded": ["live-a", "RUBY"]}));
    assert_eq!(
        r.output(&job, "live-a", "stdout").await.text,
        "tick 1\ntick 2\ntick 3\n"
    );
    assert_eq!(r.output(&job, "RUBY", "stdout").await.text, "at the end\n");
    // Once the job is over its feed replays the logged events only.
    let replay = r.h.job_feed(&job).await;
    assert!(replay.iter().all(|e| e.name != "run_output"));

    // Without capture nothing streams.
    let body = json!({"command": "ticks", "nodes": ["live-a"]});
    let job = r.h.create_job(&body.to_string(), ADMIN_USER).await;
    let events = r.h.job_feed(&job).await;
    assert!(events.iter().all(|e| e.name != "run_output"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_streams_while_running_on_sqlite() {
    streams_while_running(Arc::new(SqliteStore::in_memory().await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_streams_while_running_on_postgres() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let store = Arc::new(PostgresStore::connect(db.options(), 4).await.unwrap());
    streams_while_running(store).await;
}

/// A feed opened while the job runs starts with each node's recent output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reader_gets_the_recent_output_first() {
    let r = rig_on(Arc::new(SqliteStore::in_memory().await.unwrap())).await;
    let _a = r.start_agent("late-a", "");
    r.wait_available("late-a").await;
    let gate = r.h.tmp.path().join("gate");
    let body = json!({
        "command": format!("hold {}", gate.display()),
        "nodes": ["late-a"],
        "capture_output": true,
    });
    let job = r.h.create_job(&body.to_string(), ADMIN_USER).await;
    r.h.wait_for_job(&job, "running", WAIT).await;
    // "holding" was streamed before anyone read the feed.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let open_later = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        open_gate(&gate, 0);
    };
    let (events, ()) = tokio::join!(r.h.job_feed(&job), open_later);
    assert_eq!(streamed(&events, "late-a", "stdout"), "holding\nreleased\n");
}
