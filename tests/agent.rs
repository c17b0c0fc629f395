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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server restarts while an agent runs a job: the agent sees the new incarnation,
/// reconfigures without touching its job, and the job's result completes the resumed job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_job_completes_the_job() {
    let (hb, cmd) = (free_port(), free_port());
    let fixed = move |c: &mut pushy_server::config::Config| {
        fast(c);
        c.pushy.server_heartbeat_port = hb;
        c.pushy.command_port = cmd;
    };
    let h = Harness::with_file_store(fixed).await;
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    drop(std_listener);
    let serve = |h: &Harness| {
        let state = h.state.clone();
        async move {
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            tokio::spawn(pushy_server::run(state, listener));
        }
    };
    serve(&h).await;
    let mut r = Rig {
        h,
        base: format!("http://{addr}"),
    };
    let _a = r.start_agent("agent-restart", "");
    r.wait_available("agent-restart").await;
    let job =
        r.h.create_job(
            r#"{"command":"sleep 3","nodes":["agent-restart"]}"#,
            ADMIN_USER,
        )
        .await;
    r.h.wait_for_job(&job, "running", WAIT).await;
    r.h.restart(fixed).await;
    serve(&r.h).await;
    let body = r.h.wait_for_job(&job, "complete", WAIT).await;
    assert_eq!(body["nodes"], json!({"succeeded": ["agent-restart"]}));
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
