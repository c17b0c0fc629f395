//! Cross-process: our server (in-process, on real sockets) and real `push-jobs-client`
//! processes on loopback run jobs end to end (zmq.md §6).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::agents::*;
use common::*;
use serde_json::json;

fn processes_matching(pattern: &str) -> usize {
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(pattern)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_run_a_job_with_quorum_and_capture() {
    let r = rig().await;
    let _a = r.start_agent("agent-a", "");
    let _b = r.start_agent("agent-b", "");
    r.wait_available("agent-a").await;
    r.wait_available("agent-b").await;
    let job =
        r.h.create_job(
            r#"{"command":"hello","nodes":["agent-a","agent-b"],"quorum":2,"capture_output":true}"#,
            ADMIN_USER,
        )
        .await;
    let body = r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"succeeded": ["agent-a", "agent-b"]}));
    assert_eq!(r.output(&job, "agent-a", "stdout").await.text, "hello\n");
    assert_eq!(r.output(&job, "agent-b", "stderr").await.text, "oops\n");

    let job =
        r.h.create_job(r#"{"command":"fail","nodes":["agent-a"]}"#, ADMIN_USER)
            .await;
    let body = r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"failed": ["agent-a"]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_dir_and_file_reach_the_command() {
    let r = rig().await;
    let _a = r.start_agent("agent-env", "");
    r.wait_available("agent-env").await;
    let job = r
        .h
        .create_job(
            r#"{"command":"envdump","nodes":["agent-env"],"capture_output":true,"env":{"A":"x"},"dir":"/tmp","file":"base64:ZmlsZSBjb250ZW50"}"#,
            ADMIN_USER,
        )
        .await;
    let id = job.rsplit('/').next().unwrap().to_owned();
    r.h.wait_for_job(&job, "complete", WAIT).await;
    let out = r.output(&job, "agent-env", "stdout").await.text;
    assert_eq!(out, format!("x-agent-env-{id}\n/tmp\nfile content"));
    // The job file is removed once the job is done.
    let files = r.h.tmp.path().join("files-agent-env");
    let left: Vec<_> = std::fs::read_dir(&files)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_outside_the_whitelist_is_nacked() {
    let r = rig().await;
    let _a = r.start_agent("agent-wl", "");
    r.wait_available("agent-wl").await;
    for command in ["rm -rf /", "sleep 1; rm -rf /", "hello; id"] {
        let job =
            r.h.create_job(
                &json!({"command": command, "nodes": ["agent-wl"]}).to_string(),
                ADMIN_USER,
            )
            .await;
        let body = r.h.wait_for_job(&job, "quorum_failed", WAIT).await;
        assert_eq!(body["nodes"], json!({"nacked": ["agent-wl"]}), "{command}");
        r.wait_available("agent-wl").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_kills_the_command_and_leaves_no_process() {
    let r = rig().await;
    let _a = r.start_agent("agent-abort", "");
    r.wait_available("agent-abort").await;
    let job =
        r.h.create_job(
            r#"{"command":"sleep 617","nodes":["agent-abort"]}"#,
            ADMIN_USER,
        )
        .await;
    r.h.wait_for_job(&job, "running", WAIT).await;
    let deadline = Instant::now() + WAIT;
    while processes_matching("sleep 617") == 0 {
        assert!(Instant::now() < deadline, "the command never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp =
        r.h.call("POST", &format!("{job}/abort"), "", ADMIN_USER)
            .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let deadline = Instant::now() + WAIT;
    while processes_matching("sleep 617") > 0 {
        assert!(
            Instant::now() < deadline,
            "the aborted command is still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The node confirms the abort and takes the next job.
    r.wait_available("agent-abort").await;
    let job =
        r.h.create_job(r#"{"command":"hello","nodes":["agent-abort"]}"#, ADMIN_USER)
            .await;
    r.h.wait_for_job(&job, "complete", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_over_the_limit_keeps_its_tail() {
    let r = rig().await;
    let _a = r.start_agent("agent-big", "max_body_size = 8000");
    r.wait_available("agent-big").await;
    let job =
        r.h.create_job(
            r#"{"command":"big","nodes":["agent-big"],"capture_output":true}"#,
            ADMIN_USER,
        )
        .await;
    let body = r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"succeeded": ["agent-big"]}));
    let out = r.output(&job, "agent-big", "stdout").await;
    assert!(out.text.ends_with("aaaaEND\n"), "the tail is kept");
    assert!(
        out.text.len() < 8000 && out.text.len() > 4000,
        "{}",
        out.text.len()
    );
    assert_eq!(
        out.headers
            .get("x-push-output-truncated")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_leaves_its_node_crashed() {
    let r = rig().await;
    let mut a = r.start_agent("agent-kill", "");
    r.wait_available("agent-kill").await;
    let job =
        r.h.create_job(
            r#"{"command":"sleep 618","nodes":["agent-kill"]}"#,
            ADMIN_USER,
        )
        .await;
    r.h.wait_for_job(&job, "running", WAIT).await;
    // `Child::kill` is SIGKILL: the agent gets no chance to clean up.
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let body = r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"crashed": ["agent-kill"]}));
    // The orphaned command is this test's to clean up (the agent was killed with -9).
    let _ = Command::new("pkill").arg("-f").arg("sleep 618").status();
}

/// Starts a `gate` job on a logged agent and waits until it runs; returns the job's path
/// and the gate that ends it.
async fn gated_job(rr: &RestartRig, node: &str) -> (String, std::path::PathBuf) {
    let gate = rr.r.h.tmp.path().join(format!("gate-{node}"));
    let body = json!({
        "command": format!("gate {}", gate.display()),
        "nodes": [node],
        "capture_output": true,
    });
    let job = rr.r.h.create_job(&body.to_string(), ADMIN_USER).await;
    rr.r.h.wait_for_job(&job, "running", WAIT).await;
    (job, gate)
}

/// Issue 12, result after the reconnect: the server restarts while an agent runs a job;
/// the agent sees the new incarnation, reconfigures without touching its job, and its
/// result, sent on the new connection, completes the rehydrated job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_job_completes_the_job() {
    let mut rr = RestartRig::new(fast).await;
    let (_a, log) = rr.r.start_agent_logged("agent-restart");
    rr.r.wait_available("agent-restart").await;
    let (job, gate) = gated_job(&rr, "agent-restart").await;
    rr.restart().await;
    log.wait_for("connected", 2).await;
    open_gate(&gate, 0);
    let body = rr.r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(
        body["nodes"],
        json!({"succeeded": ["agent-restart"]}),
        "{}",
        log.text()
    );
    let out = rr.r.output(&job, "agent-restart", "stdout").await;
    assert_eq!(out.text, "released\n");
}

/// Issue 12, result while the server is down: the agent keeps the result and sends it
/// first on its new connection, so the job ends with the node's real exit status and
/// output instead of `crashed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixes_a_result_produced_while_the_server_is_down_completes_the_job() {
    let mut rr = RestartRig::new(fast).await;
    let (_a, log) = rr.r.start_agent_logged("agent-down");
    rr.r.wait_available("agent-down").await;
    let (job, gate) = gated_job(&rr, "agent-down").await;
    rr.stop().await;
    open_gate(&gate, 3);
    log.wait_for("job finished", 1).await;
    rr.start().await;
    let body = rr.r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(
        body["nodes"],
        json!({"failed": ["agent-down"]}),
        "{}",
        log.text()
    );
    let out = rr.r.output(&job, "agent-down", "stdout").await;
    assert_eq!(out.text, "released\n");
    // The node is usable afterwards.
    rr.r.wait_available("agent-down").await;
}

/// Issue 12, result during the reconnect splay: the command ends after the server came
/// back but before the agent reconnected, so the result first goes out on the old
/// connection, which the new server process cannot read. A longer heartbeat interval
/// makes that window (first server beat, then a splay of up to one interval) seconds wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixes_a_result_produced_before_the_agent_reconnects_completes_the_job() {
    let mut rr = RestartRig::new(|c| {
        fast(c);
        c.pushy.heartbeat_interval = 2000;
    })
    .await;
    let (_a, log) = rr.r.start_agent_logged("agent-splay");
    rr.r.wait_available("agent-splay").await;
    let (job, gate) = gated_job(&rr, "agent-splay").await;
    rr.restart().await;
    open_gate(&gate, 0);
    log.wait_for("job finished", 1).await;
    if log.count("connected") > 1 {
        // Not a failure: the agent was quick and this run checked a later result.
        eprintln!("the agent reconnected before the command ended");
    }
    let body = rr.r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(
        body["nodes"],
        json!({"succeeded": ["agent-splay"]}),
        "{}",
        log.text()
    );
    let out = rr.r.output(&job, "agent-splay", "stdout").await;
    assert_eq!(out.text, "released\n");
}

/// Issue 12 §5: output is fitted to the message after JSON escaping (a newline is two
/// bytes there), so `seq 200000` keeps its newest lines instead of arriving empty; binary
/// output keeps every line (invalid UTF-8 and NUL become U+FFFD, the rest is kept as
/// written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixes_output_keeps_the_newest_tail_and_every_binary_line() {
    let r = rig().await;
    let _a = r.start_agent("agent-out", "");
    r.wait_available("agent-out").await;
    let job =
        r.h.create_job(
            r#"{"command":"seq","nodes":["agent-out"],"capture_output":true}"#,
            ADMIN_USER,
        )
        .await;
    let body = r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"succeeded": ["agent-out"]}));
    let out = r.output(&job, "agent-out", "stdout").await;
    assert!(
        out.text.ends_with("\n199999\n200000\n"),
        "{}",
        out.text.len()
    );
    // The client's 63000-byte message, less the other fields and one escape per line.
    assert!(
        (50_000..63_000).contains(&out.text.len()),
        "{}",
        out.text.len()
    );
    assert_eq!(
        out.headers
            .get("x-push-output-truncated")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );

    r.wait_available("agent-out").await;
    let job =
        r.h.create_job(
            r#"{"command":"binary","nodes":["agent-out"],"capture_output":true}"#,
            ADMIN_USER,
        )
        .await;
    r.h.wait_for_job(&job, "complete", WAIT).await;
    let out = r.output(&job, "agent-out", "stdout").await;
    // NUL, which PostgreSQL text cannot hold, is stored as U+FFFD on both stores.
    assert_eq!(out.text, "\u{FFFD}\u{1}\u{FFFD}\nline2\n");
    assert_eq!(
        out.headers
            .get("x-push-output-truncated")
            .map(|v| v.to_str().unwrap()),
        Some("false")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_as_the_requested_user() {
    if !is_root() {
        eprintln!("SKIPPED: user switching needs root");
        return;
    }
    let r = rig().await;
    let _a = r.start_agent("agent-user", "");
    r.wait_available("agent-user").await;
    let job =
        r.h.create_job(
            r#"{"command":"whoami","nodes":["agent-user"],"user":"nobody","capture_output":true}"#,
            ADMIN_USER,
        )
        .await;
    r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(
        r.output(&job, "agent-user", "stdout").await.text,
        "nobody\n"
    );
    // A user that does not exist is refused at commit.
    let job =
        r.h.create_job(
            r#"{"command":"whoami","nodes":["agent-user"],"user":"no-such-user-here"}"#,
            ADMIN_USER,
        )
        .await;
    let body = r.h.wait_for_job(&job, "quorum_failed", WAIT).await;
    assert_eq!(body["nodes"], json!({"nacked": ["agent-user"]}));
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A `:lock` entry refuses the commit while chef-client's lock is held, runs once it is
/// free, and never truncates the lock file (zmq.md §6.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_entry_waits_for_chef_client_and_keeps_the_lock_file() {
    let r = rig().await;
    let lock = r.h.tmp.path().join("chef-client-running.pid");
    std::fs::write(&lock, "4242\n").unwrap();
    let extra = format!(
        "[whitelist.chef-client]\ncommand_line = \"true\"\nlock = \"{}\"\n",
        lock.display()
    );
    let _a = r.start_agent_with_whitelist("agent-lock", &extra);
    r.wait_available("agent-lock").await;
    let held = hold_lock(&lock);
    let job =
        r.h.create_job(
            r#"{"command":"chef-client","nodes":["agent-lock"]}"#,
            ADMIN_USER,
        )
        .await;
    let body = r.h.wait_for_job(&job, "quorum_failed", WAIT).await;
    assert_eq!(body["nodes"], json!({"nacked": ["agent-lock"]}));
    drop(held);
    r.wait_available("agent-lock").await;
    let job =
        r.h.create_job(
            r#"{"command":"chef-client","nodes":["agent-lock"]}"#,
            ADMIN_USER,
        )
        .await;
    let body = r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"succeeded": ["agent-lock"]}));
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), "4242\n");
}

/// Holds an exclusive flock on `path` until dropped, as a running chef-client does
/// (flock(1) keeps it while its child runs).
fn hold_lock(path: &std::path::Path) -> impl Drop {
    struct Held(std::process::Child);
    impl Drop for Held {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            // With -o the sleeping child never held the lock; it is only reaped here.
            let _ = Command::new("pkill")
                .arg("-x")
                .arg("-f")
                .arg("sleep 29")
                .status();
        }
    }
    // -o: the command does not inherit the lock, so killing flock releases it.
    let child = Command::new("flock")
        .arg("-o")
        .arg("-x")
        .arg(path)
        .arg("sleep")
        .arg("29")
        .spawn()
        .unwrap();
    let held = Held(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Command::new("flock")
        .arg("-n")
        .arg("-x")
        .arg(path)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "flock never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    held
}
