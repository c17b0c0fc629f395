//! Jobs over the real command channel: scripted nodes speak the protocol over loopback
//! sockets with CURVE and HMAC (zmq.md), the server runs its registry and job tasks,
//! and the HTTP API and event feeds report what happened.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use common::node::{Script, ScriptedNode};
use common::*;
use pushy_server::store::{SqliteStore, Store};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// Fast heartbeats (100 ms, liveness scan every 400 ms), a short voting timeout and
/// linger, so failures show in seconds.
fn fast(c: &mut pushy_server::config::Config) {
    c.pushy.heartbeat_interval = 100;
    c.pushy.decay_window = 4;
    c.pushy.down_threshold = 0.25;
    c.pushy.voting_timeout = 2;
    c.pushy.wait_complete_time = 2;
}

async fn fast_harness() -> Harness {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let h = Harness::with_store(store, fast).await;
    for n in ["DONKEY", "FIONA"] {
        h.add_client(n);
    }
    h
}

async fn events(h: &Harness, job_path: &str) -> Vec<(String, serde_json::Value)> {
    h.job_feed(job_path)
        .await
        .into_iter()
        .map(|e| (e.name, e.data))
        .collect()
}

fn names(evs: &[(String, serde_json::Value)]) -> Vec<&str> {
    evs.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_two_nodes_run_and_their_output_is_stored() {
    let h = fast_harness().await;
    let donkey = ScriptedNode::start(
        &h,
        "DONKEY",
        Script::Succeed {
            stdout: "hello\n".into(),
            stderr: "".into(),
        },
    )
    .await;
    let _fiona = ScriptedNode::start(
        &h,
        "FIONA",
        Script::Succeed {
            stdout: "hi\n".into(),
            stderr: "warn\n".into(),
        },
    )
    .await;

    let r = h
        .call(
            "GET",
            &format!("/organizations/{ORG}/pushy/node_states/DONKEY"),
            "",
            ADMIN_USER,
        )
        .await;
    r.expect(
        200,
        json!({"node_name": "DONKEY", "status": "online", "availability": "available"}),
    );

    let job = h
        .create_job(r#"{"command":"echo","nodes":["DONKEY","FIONA"],"capture_output":true,"env":{"A":"1"}}"#, ADMIN_USER)
        .await;
    let body = h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"succeeded": ["DONKEY", "FIONA"]}));

    let out = |node: &'static str, ch: &'static str| {
        let path = format!("{job}/output/{node}/{ch}");
        let req = h
            .signed("GET", &path, "", ADMIN_USER)
            .header("accept", "application/octet-stream")
            .body(Body::empty())
            .unwrap();
        h.send(req)
    };
    assert_eq!(out("DONKEY", "stdout").await.text, "hello\n");
    assert_eq!(out("FIONA", "stderr").await.text, "warn\n");

    let commit = donkey.seen.lock().unwrap().commits[0].clone();
    assert_eq!(commit["command"], "echo");
    assert_eq!(commit["capture"], true);
    assert_eq!(commit["env"], json!({"A": "1"}));

    let evs = events(&h, &job).await;
    assert_eq!(evs.len(), 9, "{:?}", names(&evs));
    assert_eq!(evs[0].0, "start");
    assert_eq!(evs[0].1["node_count"], 2);
    assert_eq!(evs[3].0, "quorum_succeeded");
    assert_eq!(evs[8], ("job_complete".to_owned(), evs[8].1.clone()));
    assert_eq!(evs[8].1["status"], "complete");
    let timestamps: Vec<&str> = evs
        .iter()
        .map(|(_, d)| d["timestamp"].as_str().unwrap())
        .collect();
    assert!(timestamps.windows(2).all(|w| w[0] < w[1]), "{timestamps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_is_failed_and_the_job_still_completes() {
    let h = fast_harness().await;
    let _d = ScriptedNode::start(&h, "DONKEY", Script::Fail).await;
    let job = h
        .create_job(r#"{"command":"false","nodes":["DONKEY"]}"#, ADMIN_USER)
        .await;
    let body = h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"failed": ["DONKEY"]}));
    let evs = events(&h, &job).await;
    assert_eq!(
        names(&evs),
        [
            "start",
            "quorum_vote",
            "quorum_succeeded",
            "run_start",
            "run_complete",
            "job_complete"
        ]
    );
    assert_eq!(evs[4].1["status"], "failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_commit_fails_the_quorum() {
    let h = fast_harness().await;
    let _d = ScriptedNode::start(&h, "DONKEY", Script::NackCommit).await;
    let _f = ScriptedNode::start(
        &h,
        "FIONA",
        Script::Succeed {
            stdout: String::new(),
            stderr: String::new(),
        },
    )
    .await;
    let job = h
        .create_job(r#"{"command":"x","nodes":["DONKEY","FIONA"]}"#, ADMIN_USER)
        .await;
    let body = h.wait_for_job(&job, "quorum_failed", WAIT).await;
    assert_eq!(
        body["nodes"],
        json!({"nacked": ["DONKEY"], "was_ready": ["FIONA"]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_votes_times_out() {
    let h = fast_harness().await;
    let _d = ScriptedNode::start(&h, "DONKEY", Script::IgnoreCommit).await;
    let job = h
        .create_job(r#"{"command":"x","nodes":["DONKEY"]}"#, ADMIN_USER)
        .await;
    let body = h.wait_for_job(&job, "quorum_failed", WAIT).await;
    assert_eq!(body["nodes"], json!({"unavailable": ["DONKEY"]}));
    let evs = events(&h, &job).await;
    assert_eq!(names(&evs), ["start", "quorum_vote", "job_complete"]);
    assert_eq!(evs[1].1["status"], "voting_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_never_acknowledged_times_out() {
    let h = fast_harness().await;
    let _d = ScriptedNode::start(&h, "DONKEY", Script::IgnoreRun).await;
    let job = h
        .create_job(
            r#"{"command":"x","nodes":["DONKEY"],"run_timeout":1}"#,
            ADMIN_USER,
        )
        .await;
    let body = h.wait_for_job(&job, "timed_out", WAIT).await;
    assert_eq!(body["nodes"], json!({"timed_out": ["DONKEY"]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_stops_a_running_job_and_resets_its_nodes() {
    let h = fast_harness().await;
    let d = ScriptedNode::start(&h, "DONKEY", Script::Hang).await;
    let job = h
        .create_job(r#"{"command":"sleep 100","nodes":["DONKEY"]}"#, ADMIN_USER)
        .await;
    h.wait_for_job(&job, "running", WAIT).await;
    let aborts_before = d
        .seen
        .lock()
        .unwrap()
        .types
        .iter()
        .filter(|t| *t == "abort")
        .count();
    let r = h
        .call("POST", &format!("{job}/abort"), "", ADMIN_USER)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "aborted");
    assert_eq!(r.json()["nodes"], json!({"aborted": ["DONKEY"]}));
    let deadline = std::time::Instant::now() + WAIT;
    while d
        .seen
        .lock()
        .unwrap()
        .types
        .iter()
        .filter(|t| *t == "abort")
        .count()
        == aborts_before
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the node was never told to abort"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = h
        .call("POST", &format!("{job}/abort"), "", ADMIN_USER)
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_vanishes_mid_run_is_crashed_and_goes_offline() {
    let h = fast_harness().await;
    let d = ScriptedNode::start(&h, "DONKEY", Script::Hang).await;
    let job = h
        .create_job(r#"{"command":"sleep 100","nodes":["DONKEY"]}"#, ADMIN_USER)
        .await;
    h.wait_for_job(&job, "running", WAIT).await;
    d.silent.store(true, std::sync::atomic::Ordering::Relaxed);
    let body = h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"crashed": ["DONKEY"]}));
    let r = h
        .call(
            "GET",
            &format!("/organizations/{ORG}/pushy/node_states/DONKEY"),
            "",
            ADMIN_USER,
        )
        .await;
    r.expect(
        200,
        json!({"node_name": "DONKEY", "status": "offline", "availability": "unavailable"}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_restart_mid_run_crashes_its_node_and_the_new_process_is_reset() {
    let h = fast_harness().await;
    let first = ScriptedNode::start(&h, "DONKEY", Script::Hang).await;
    let job = h
        .create_job(r#"{"command":"sleep 100","nodes":["DONKEY"]}"#, ADMIN_USER)
        .await;
    h.wait_for_job(&job, "running", WAIT).await;
    drop(first);
    // A new process: new incarnation, new connection. Its first heartbeat ends the old
    // node record (the job sees it go down); the next one starts a fresh record, which
    // resets the new process with `abort` (zmq.md §4.3).
    let second = ScriptedNode::start(
        &h,
        "DONKEY",
        Script::Succeed {
            stdout: String::new(),
            stderr: String::new(),
        },
    )
    .await;
    let body = h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"crashed": ["DONKEY"]}));
    assert!(second.saw("abort"));
    // The new process takes the next job.
    let next = h
        .create_job(r#"{"command":"x","nodes":["DONKEY"]}"#, ADMIN_USER)
        .await;
    let body = h.wait_for_job(&next, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"succeeded": ["DONKEY"]}));
}

/// Both feeds read over a real socket with a real HTTP client, including a resume with
/// `Last-Event-ID`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_over_real_http_with_resume() {
    use pushy_protocol::chef_auth::{ProtocolVersion, Request, format_timestamp, sign_request};

    let h = fast_harness().await;
    let _d = ScriptedNode::start(
        &h,
        "DONKEY",
        Script::Succeed {
            stdout: String::new(),
            stderr: String::new(),
        },
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(pushy_server::run(h.state.clone(), listener));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let get = |path: String, last: Option<String>| {
        let ts = format_timestamp(chrono::Utc::now());
        let req = Request {
            method: "GET",
            path: &path,
            body: b"",
            user_id: ADMIN_USER,
            timestamp: &ts,
            server_api_version: None,
        };
        let mut rb = client
            .get(format!("{base}{path}"))
            .header("accept", "text/event-stream");
        for (k, v) in sign_request(&h.key(ADMIN_USER), ProtocolVersion::V1_3, &req).unwrap() {
            rb = rb.header(k, v);
        }
        if let Some(l) = last {
            rb = rb.header("last-event-id", l);
        }
        rb.send()
    };

    // The org feed, opened before the job exists, sees its start and job_complete.
    let org_feed = get(format!("/organizations/{ORG}/pushy/job_status_feed"), None)
        .await
        .unwrap();
    assert_eq!(org_feed.status(), 200);
    assert_eq!(org_feed.headers()["content-type"], "text/event-stream");
    let job = h
        .create_job(r#"{"command":"x","nodes":["DONKEY"]}"#, ADMIN_USER)
        .await;
    let id = job.rsplit('/').next().unwrap().to_owned();
    let mut org_feed = org_feed;
    let mut text = String::new();
    while !text.contains("event: job_complete") {
        let chunk = tokio::time::timeout(WAIT, org_feed.chunk())
            .await
            .expect("org events arrive")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.contains("event: start\nid: org-1\n"), "{text}");
    assert!(text.contains(&format!(r#""job":"{id}""#)), "{text}");

    // The job feed in full, then resumed after its second event.
    h.wait_for_job(&job, "complete", WAIT).await;
    let full = get(
        format!("/organizations/{ORG}/pushy/job_status_feed/{id}"),
        None,
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let events: Vec<&str> = full.split_inclusive("\n\n").collect();
    assert_eq!(events.len(), 6, "{full}");
    let resumed = get(
        format!("/organizations/{ORG}/pushy/job_status_feed/{id}"),
        Some("job-2".into()),
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert_eq!(resumed, events[2..].concat());
}

/// DESIGN.md: a restart does not kill in-flight jobs. The job is resumed from the store;
/// the node, still running it, fetches its config from the new server, reconnects with
/// the same process incarnation and reports the job: it is adopted without a reset and
/// its result completes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_run_keeps_the_job() {
    let mut h = Harness::with_file_store(fast).await;
    h.add_client("DONKEY");
    let d = ScriptedNode::start(&h, "DONKEY", Script::Hold).await;
    let job = h
        .create_job(r#"{"command":"sleep 5","nodes":["DONKEY"]}"#, ADMIN_USER)
        .await;
    h.wait_for_job(&job, "running", WAIT).await;
    h.restart(fast).await;
    h.wait_for_job(&job, "running", WAIT).await;
    let aborts_before = d
        .seen
        .lock()
        .unwrap()
        .types
        .iter()
        .filter(|t| *t == "abort")
        .count();
    d.reconnect(&h).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.release();
    let body = h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"succeeded": ["DONKEY"]}));
    let aborts_after = d
        .seen
        .lock()
        .unwrap()
        .types
        .iter()
        .filter(|t| *t == "abort")
        .count();
    assert_eq!(aborts_before, aborts_after, "the node was not reset");
    assert!(d.saw("ack"));
}

/// A node that does not come back after a restart is resolved by the resumed job's own
/// timer, not left running forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_with_a_lost_node_times_the_job_out() {
    let mut h = Harness::with_file_store(fast).await;
    h.add_client("DONKEY");
    let d = ScriptedNode::start(&h, "DONKEY", Script::Hang).await;
    let job = h
        .create_job(
            r#"{"command":"sleep 100","nodes":["DONKEY"],"run_timeout":2}"#,
            ADMIN_USER,
        )
        .await;
    h.wait_for_job(&job, "running", WAIT).await;
    drop(d);
    h.restart(fast).await;
    let body = h.wait_for_job(&job, "timed_out", WAIT).await;
    assert_eq!(body["nodes"], json!({"timed_out": ["DONKEY"]}));
}

/// The value of the sample `line_start` (name and labels, exactly) in a metrics scrape.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_nodes_messages_jobs_requests_and_refusals() {
    let h = fast_harness().await;
    let _donkey = ScriptedNode::start(
        &h,
        "DONKEY",
        Script::Succeed {
            stdout: "hello\n".into(),
            stderr: "".into(),
        },
    )
    .await;
    let job = h
        .create_job(r#"{"command":"echo","nodes":["DONKEY"]}"#, ADMIN_USER)
        .await;
    h.wait_for_job(&job, "complete", WAIT).await;

    // A peer without the server's CURVE handshake: ZAP refuses it, and that is counted.
    let ctx = zmq::Context::new();
    let intruder = ctx.socket(zmq::DEALER).unwrap();
    intruder.set_linger(0).unwrap();
    let keys = zmq::CurveKeyPair::new().unwrap();
    intruder
        .set_curve_serverkey(&zmq::z85_decode(&h.state.curve.public_z85).unwrap())
        .unwrap();
    intruder.set_curve_publickey(&keys.public_key).unwrap();
    intruder.set_curve_secretkey(&keys.secret_key).unwrap();
    intruder
        .connect(&format!("tcp://127.0.0.1:{}", h.state.ports.command))
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let req = axum::http::Request::get("/metrics")
            .body(Body::empty())
            .unwrap();
        let reply = h.send(req).await;
        assert_eq!(reply.status, 200);
        let text = reply.text;
        if sample(
            &text,
            "pushy_zmq_messages_dropped_total{reason=\"zap_refused\"}",
        )
        .is_some_and(|v| v >= 1.0)
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refused handshake was never counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    assert_eq!(sample(&text, "pushy_nodes_online"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "pushy_jobs_created_total"), Some(1.0));
    assert_eq!(
        sample(&text, "pushy_jobs_finished_total{status=\"complete\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "pushy_jobs_active").map(|v| v <= 1.0),
        Some(true)
    );
    for kind in ["heartbeat", "ack_commit", "ack_run", "succeeded"] {
        let line = format!("pushy_zmq_messages_received_total{{type=\"{kind}\"}}");
        assert!(
            sample(&text, &line).is_some_and(|v| v >= 1.0),
            "{line}\n{text}"
        );
    }
    for kind in ["commit", "run"] {
        let line = format!("pushy_zmq_messages_sent_total{{type=\"{kind}\"}}");
        assert_eq!(sample(&text, &line), Some(1.0), "{line}\n{text}");
    }
    assert_eq!(
        sample(
            &text,
            "pushy_zmq_messages_dropped_total{reason=\"bad_signature\"}"
        ),
        Some(0.0)
    );
    let created = "pushy_http_requests_total{route=\"/organizations/{org}/pushy/jobs\",method=\"POST\",status=\"201\"}";
    assert_eq!(sample(&text, created), Some(1.0), "{text}");
    assert!(
        text.contains("pushy_http_request_duration_seconds_bucket{le="),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
}

/// PostgreSQL text cannot hold NUL: output with one is stored with U+FFFD in its place
/// (as the agent does for bytes that are not UTF-8), and the job keeps its result rather
/// than failing on the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_with_nul_is_stored_on_postgresql() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(
        pushy_server::store::PostgresStore::connect(db.options(), 2)
            .await
            .unwrap(),
    );
    let h = Harness::with_store(store, fast).await;
    h.add_client("DONKEY");
    let _d = ScriptedNode::start(
        &h,
        "DONKEY",
        Script::Succeed {
            stdout: "before\0after\n".into(),
            stderr: "\0".into(),
        },
    )
    .await;
    let job = h
        .create_job(
            r#"{"command":"echo","nodes":["DONKEY"],"capture_output":true}"#,
            ADMIN_USER,
        )
        .await;
    let body = h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"succeeded": ["DONKEY"]}));
    let out = h
        .call(
            "GET",
            &format!("{job}/output/DONKEY/stdout"),
            "",
            ADMIN_USER,
        )
        .await;
    assert_eq!(out.status, 200, "{}", out.text);
    assert_eq!(out.text, "before\u{FFFD}after\n");
}
