//! Cross-process: the real `push-jobs` CLI against our server (in-process, on a real HTTP
//! port) with real `push-jobs-client` agents, configured the way a Chef user is: a
//! temporary `HOME` with `~/.chef/credentials` or `~/.chef/config.rb` (ops.md §7).
//! Every exit code of the table in `push-jobs --help` is asserted.

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::agents::*;
use common::*;
use serde_json::{Value, json};

/// The variables the CLI reads; cleared so the caller's environment cannot leak in.
const CLI_VARS: &[&str] = &[
    "CHEF_CONFIG",
    "CHEF_PROFILE",
    "CHEF_SERVER_URL",
    "CHEF_NODE_NAME",
    "CHEF_CLIENT_KEY",
    "KNIFE_HOME",
    "PUSH_JOBS_LOCAL_DIR",
];

fn cli_binary() -> PathBuf {
    workspace_binary("push-jobs")
}

/// What one CLI run printed and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn expect(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// The id from `Started.  Job ID: <id>`.
    fn job_id(&self) -> String {
        let line = self
            .stdout
            .lines()
            .chain(self.stderr.lines())
            .find_map(|l| l.strip_prefix("Started.  Job ID: "))
            .unwrap_or_else(|| panic!("no Started line: {self:#?}"));
        assert_eq!(line.len(), 32, "{line}");
        line.to_owned()
    }
}

fn command(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(cli_binary());
    c.args(args)
        .current_dir(home)
        .env("HOME", home)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in CLI_VARS {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Waits for a CLI process (killing it after 90 s) and collects its output.
fn finish(mut child: Child) -> Run {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("push-jobs did not finish: {:?}", err.join());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code().expect("exited, not killed"),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Runs `push-jobs ARGS` with `HOME=home` (off the async runtime, so the in-process
/// server keeps serving).
async fn cli_env(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let child = command(home, args, env).spawn().unwrap();
    tokio::task::spawn_blocking(move || finish(child))
        .await
        .unwrap()
}

async fn cli(home: &Path, args: &[&str]) -> Run {
    cli_env(home, args, &[]).await
}

/// A home whose `~/.chef/credentials` signs as `user` against the rig.
fn home_for(r: &Rig, user: &str) -> PathBuf {
    let home = r.h.tmp.path().join(format!("home-{user}"));
    std::fs::create_dir_all(home.join(".chef")).unwrap();
    std::fs::write(
        home.join(".chef/credentials"),
        format!(
            "[default]\nclient_name = \"{user}\"\nclient_key = \"{}\"\nchef_server_url = \"{}/organizations/{ORG}\"\n",
            r.h.key_path(user).display(),
            r.base
        ),
    )
    .unwrap();
    home
}

fn local_dir(r: &Rig) -> String {
    chef_dir(r.h.tmp.path()).display().to_string()
}

/// Polls the job (as the server sees it) until `pred` holds.
async fn wait_job(r: &Rig, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/organizations/{ORG}/pushy/jobs/{id}");
    let deadline = Instant::now() + WAIT;
    loop {
        let body = r.h.call("GET", &path, "", ADMIN_USER).await.json();
        if pred(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "job never got there: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn jobs_count(r: &Rig) -> usize {
    let path = format!("/organizations/{ORG}/pushy/jobs");
    let list = r.h.call("GET", &path, "", ADMIN_USER).await.json();
    list.as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_by_names_then_status_list_and_node_status() {
    let r = rig().await;
    let _a = r.start_agent("cli-a", "");
    let _b = r.start_agent("cli-b", "");
    r.wait_available("cli-a").await;
    r.wait_available("cli-b").await;
    let home = home_for(&r, ADMIN_USER);

    let run = cli(&home, &["job", "start", "hello", "cli-a", "cli-b"]).await;
    run.expect(0);
    let id = run.job_id();
    assert!(
        run.stdout
            .starts_with(&format!("Started.  Job ID: {id}\n.")),
        "{run:#?}"
    );
    assert!(run.stdout.contains("Complete.\n"), "{run:#?}");
    // The final job in knife's layout (ops.md §7.1).
    for piece in [
        "command:     hello\n",
        "env:\n",
        &format!("id:          {id}\n"),
        "nodes:\n  succeeded:\n    cli-a\n    cli-b\n",
        "run_timeout: 3600\n",
        "status:      complete\n",
    ] {
        assert!(run.stdout.contains(piece), "{piece:?} in {run:#?}");
    }

    let status = cli(&home, &["job", "status", &id]).await;
    status.expect(0);
    assert!(
        status.stdout.starts_with("command:     hello\n"),
        "{status:#?}"
    );
    assert!(status.stdout.contains("status:      complete\n"));
    let json = cli(&home, &["-F", "json", "job", "status", &id]).await;
    let job = json.expect(0).json();
    assert_eq!(job["nodes"], json!({"succeeded": ["cli-a", "cli-b"]}));
    assert_eq!(job["id"], id.as_str());

    let list = cli(&home, &["job", "list"]).await;
    list.expect(0);
    assert!(
        list.stdout.contains(&format!("id:          {id}\n")),
        "{list:#?}"
    );
    assert!(!list.stdout.contains("nodes:"), "{list:#?}");
    // knife-push: `job status` without an id lists the jobs.
    assert_eq!(
        cli(&home, &["job", "status"]).await.expect(0).stdout,
        list.stdout
    );
    let list = cli(&home, &["job", "list", "--format", "json"]).await;
    assert_eq!(list.expect(0).json()[0]["id"], id.as_str());

    r.wait_available("cli-a").await;
    r.wait_available("cli-b").await;
    let nodes = cli(&home, &["node", "status"]).await;
    assert_eq!(
        nodes.expect(0).stdout,
        "cli-a\tavailable\ncli-b\tavailable\n"
    );
    let nodes = cli(&home, &["node", "status", "cli-b", "never-seen"]).await;
    assert_eq!(
        nodes.expect(0).stdout,
        "cli-b\tavailable\nnever-seen\tunavailable\n"
    );
    let nodes = cli(&home, &["node", "status", "never-seen", "-F", "json"]).await;
    assert_eq!(
        nodes.expect(0).json(),
        json!([{"node_name": "never-seen", "status": "offline", "availability": "unavailable"}])
    );

    // Protocol 1.1 signing is selectable; 1.3 is the default.
    cli(&home, &["--sign-version", "1.1", "job", "list"])
        .await
        .expect(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_by_search_with_quorum_as_count_and_percent() {
    let r = rig().await;
    let _a = r.start_agent("srch-1", "");
    let _b = r.start_agent("srch-2", "");
    r.wait_available("srch-1").await;
    r.wait_available("srch-2").await;
    let home = home_for(&r, ADMIN_USER);
    let dir = local_dir(&r);
    let ready = || async {
        r.wait_available("srch-1").await;
        r.wait_available("srch-2").await;
    };

    // --search over the local key directory: the org's clients named srch-*.
    let run = cli(
        &home,
        &[
            "job",
            "start",
            "hello",
            "-s",
            "name:srch-*",
            "--local-dir",
            &dir,
            "-F",
            "json",
        ],
    )
    .await;
    let job = run.expect(0).json();
    assert_eq!(job["nodes"], json!({"succeeded": ["srch-1", "srch-2"]}));
    assert!(run.stderr.contains("Started.  Job ID: "), "{run:#?}");
    ready().await;

    // A third target that never connected: it is unavailable at once.
    let three = ["job", "start", "hello", "srch-1", "srch-2", "ghost"];
    let with = |q: &'static str| {
        let mut v = three.to_vec();
        v.extend(["-q", q]);
        v
    };
    // 60% of 3 rounds up to 2: the job runs, but not every node succeeded (knife-push
    // exited 0 here).
    let run = cli(&home, &with("60%")).await;
    run.expect(1);
    assert!(run.stdout.contains("Complete.\n"), "{run:#?}");
    assert!(run.stdout.contains("  unavailable: ghost\n"), "{run:#?}");
    ready().await;
    cli(&home, &with("2")).await.expect(1);
    ready().await;
    let run = cli(&home, &with("100%")).await;
    run.expect(3);
    assert!(run.stdout.contains("Quorum_failed.\n"), "{run:#?}");
    ready().await;
    cli(&home, &with("3")).await.expect(3);
    ready().await;

    // Search errors are reported, not swallowed.
    let run = cli(&home, &["job", "start", "hello", "-s", "name:srch-*"]).await;
    run.expect(2);
    assert!(run.stderr.contains("has no search API"), "{run:#?}");
    let run = cli(
        &home,
        &[
            "job",
            "start",
            "hello",
            "-s",
            "name:zzz*",
            "--local-dir",
            &dir,
        ],
    )
    .await;
    run.expect(2);
    let run = cli(
        &home,
        &[
            "job",
            "start",
            "hello",
            "-s",
            "role:web",
            "--local-dir",
            &dir,
        ],
    )
    .await;
    run.expect(2);
    assert!(run.stderr.contains("name:GLOB"), "{run:#?}");

    // node status takes searches too.
    let run = cli(
        &home,
        &["node", "status", "name:srch-*", "--local-dir", &dir],
    )
    .await;
    assert_eq!(
        run.expect(0).stdout,
        "srch-1\tavailable\nsrch-2\tavailable\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_then_output_with_env_dir_and_file() {
    let r = rig().await;
    let _a = r.start_agent("cap-a", "");
    r.wait_available("cap-a").await;
    let home = home_for(&r, ADMIN_USER);
    let file = home.join("payload.txt");
    std::fs::write(&file, "file content").unwrap();

    let run = cli(
        &home,
        &[
            "job",
            "start",
            "envdump",
            "cap-a",
            "--capture",
            "--with-env",
            r#"{"A":"x"}"#,
            "--in-dir",
            "/tmp",
            "--file",
            file.to_str().unwrap(),
        ],
    )
    .await;
    run.expect(0);
    let id = run.job_id();
    for piece in [
        "capture_output: true\n",
        "dir:            /tmp\n",
        "env:\n  A: x\n",
        "file_specified: true\n",
    ] {
        assert!(run.stdout.contains(piece), "{piece:?} in {run:#?}");
    }
    let out = cli(&home, &["job", "output", &id, "cap-a"]).await;
    assert_eq!(
        out.expect(0).stdout,
        format!("x-cap-a-{id}\n/tmp\nfile content")
    );

    r.wait_available("cap-a").await;
    let run = cli(&home, &["job", "start", "hello", "cap-a", "--capture"]).await;
    let id = run.expect(0).job_id();
    let err = cli(
        &home,
        &["job", "output", &id, "cap-a", "--channel", "stderr"],
    )
    .await;
    assert_eq!(err.expect(0).stdout, "oops\n");
    // Several nodes (knife-push printed only the first); a node without output is exit 7.
    let both = cli(&home, &["job", "output", &id, "cap-a", "nobody"]).await;
    both.expect(7);
    assert_eq!(both.stdout, "==> cap-a <==\nhello\n");
    assert!(
        both.stderr.contains("no stdout for node nobody"),
        "{both:#?}"
    );
    let json = cli(&home, &["-F", "json", "job", "output", &id, "cap-a"]).await;
    assert_eq!(
        json.expect(0).json(),
        json!({"cap-a": {"output": "hello\n", "truncated": false}})
    );
}

/// knife-push took any 400 as "a 1.x server" and re-sent a v1 body without `--in-dir`,
/// `--as-user` and `--capture` (ops.md §7.2 step 4). Here the server's message is reported
/// and nothing is re-sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixes_a_refused_job_body_is_reported_not_resent_as_v1() {
    let r = rig().await;
    let home = home_for(&r, ADMIN_USER);
    let big = home.join("big.bin");
    std::fs::write(&big, vec![b'x'; 100_001]).unwrap();
    let run = cli(
        &home,
        &[
            "job",
            "start",
            "hello",
            "some-node",
            "--capture",
            "--in-dir",
            "/tmp",
            "--file",
            big.to_str().unwrap(),
        ],
    )
    .await;
    run.expect(2);
    assert!(
        run.stderr.contains("the server refused the job"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("invalid file size"), "{run:#?}");
    assert!(!run.stderr.contains("Falling back"), "{run:#?}");
    assert!(!run.stdout.contains("Started."), "{run:#?}");
    assert_eq!(jobs_count(&r).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nowait_then_status_and_abort() {
    let r = rig().await;
    let _a = r.start_agent("ab-a", "");
    r.wait_available("ab-a").await;
    let home = home_for(&r, ADMIN_USER);

    let run = cli(&home, &["job", "start", "sleep 40", "ab-a", "--nowait"]).await;
    let id = run.expect(0).job_id();
    assert_eq!(run.stdout, format!("Started.  Job ID: {id}\n"));
    wait_job(&r, &id, |j| j["nodes"]["running"] == json!(["ab-a"])).await;
    let status = cli(&home, &["job", "status", &id]).await;
    assert!(
        status.expect(0).stdout.contains("status:      running\n"),
        "{status:#?}"
    );

    let abort = cli(&home, &["job", "abort", &id]).await;
    abort.expect(0);
    assert!(
        abort
            .stdout
            .starts_with(&format!("Aborted.  Job ID: {id}\n")),
        "{abort:#?}"
    );
    assert!(
        abort.stdout.contains("status:      aborted\n"),
        "{abort:#?}"
    );
    let again = cli(&home, &["job", "abort", &id]).await;
    again.expect(9);
    assert!(again.stderr.contains("already finished"), "{again:#?}");

    // A waiting `job start` whose job is aborted exits 5.
    r.wait_available("ab-a").await;
    let waiting = command(&home, &["job", "start", "sleep 41", "ab-a"], &[])
        .spawn()
        .unwrap();
    let waiting = tokio::task::spawn_blocking(move || finish(waiting));
    let path = format!("/organizations/{ORG}/pushy/jobs");
    let deadline = Instant::now() + WAIT;
    let id = loop {
        let list = r.h.call("GET", &path, "", ADMIN_USER).await.json();
        let running = list
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["command"] == "sleep 41" && j["status"] == "running");
        if let Some(j) = running {
            break j["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the job never ran: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cli(&home, &["job", "abort", &id]).await.expect(0);
    let run = waiting.await.unwrap();
    run.expect(5);
    assert!(run.stdout.contains("Aborted.\n"), "{run:#?}");
    assert_eq!(run.job_id(), id);

    // Unknown job: 7; not a job id at all: 2.
    cli(&home, &["job", "status", &"0".repeat(32)])
        .await
        .expect(7);
    cli(&home, &["job", "status", "not-a-job"]).await.expect(2);
}

/// Issue 12: a waiting `job start` rides out a server restart. Its feed ends and the
/// server refuses connections for a while; it retries with back-off, resumes the job's
/// feed with `Last-Event-ID`, and exits with the job's real result instead of 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixes_a_waiting_job_start_survives_a_server_restart() {
    let mut rr = RestartRig::new(fast).await;
    let (_a, log) = rr.r.start_agent_logged("cli-restart");
    rr.r.wait_available("cli-restart").await;
    let home = home_for(&rr.r, ADMIN_USER);
    let gate = rr.r.h.tmp.path().join("gate-cli");
    let command_line = format!("gate {}", gate.display());
    let waiting = command(&home, &["job", "start", &command_line, "cli-restart"], &[])
        .spawn()
        .unwrap();
    let waiting = tokio::task::spawn_blocking(move || finish(waiting));
    let path = format!("/organizations/{ORG}/pushy/jobs");
    let deadline = Instant::now() + WAIT;
    let id = loop {
        let list = rr.r.h.call("GET", &path, "", ADMIN_USER).await.json();
        let running = list
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["status"] == "running");
        if let Some(j) = running {
            break j["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the job never ran: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    rr.stop().await;
    // An outage the CLI has to ride out: its feed was closed by the stopping server, and
    // every request now meets a closed port.
    tokio::time::sleep(Duration::from_secs(1)).await;
    rr.start().await;
    log.wait_for("connected", 2).await;
    open_gate(&gate, 0);
    let run = waiting.await.unwrap();
    run.expect(0);
    assert_eq!(run.job_id(), id);
    assert!(run.stdout.contains("Complete.\n"), "{run:#?}");
    assert!(
        run.stdout.contains("  succeeded: cli-restart\n"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("the server is unreachable"), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_for_failures_timeouts_usage_auth_and_server_errors() {
    let r = rig().await;
    let _a = r.start_agent("ex-a", "");
    r.wait_available("ex-a").await;
    let home = home_for(&r, ADMIN_USER);

    // 1: the node failed (`exit 3`).
    let run = cli(&home, &["job", "start", "fail", "ex-a"]).await;
    run.expect(1);
    assert!(run.stdout.contains("  failed: ex-a\n"), "{run:#?}");
    // 3: not whitelisted, so the node refuses and the quorum fails.
    r.wait_available("ex-a").await;
    let run = cli(&home, &["job", "start", "rm -rf /", "ex-a"]).await;
    run.expect(3);
    assert!(run.stdout.contains("  nacked: ex-a\n"), "{run:#?}");
    // 4: the run timeout.
    r.wait_available("ex-a").await;
    let run = cli(
        &home,
        &["job", "start", "sleep 30", "ex-a", "--timeout", "1"],
    )
    .await;
    run.expect(4);
    assert!(run.stdout.contains("Timed_out.\n"), "{run:#?}");
    assert!(run.stdout.contains("run_timeout: 1\n"), "{run:#?}");

    // 2: usage errors, from clap and from the command.
    for (args, message) in [
        (vec!["job", "start"], "COMMAND"),
        (
            vec!["job", "start", "hello", "ex-a", "-q", "abc"],
            "Invalid Format please enter integer or percent",
        ),
        (
            vec!["job", "start", "hello", "ex-a", "--with-env", "A=1"],
            "JSON object",
        ),
        (vec!["job", "start", "hello"], "No nodes to run job on"),
        (
            vec!["job", "start", "hello", "ex-a", "--file", "/no/such/file"],
            "/no/such/file",
        ),
        (
            vec!["job", "output", "x", "ex-a", "--channel", "both"],
            "both",
        ),
        (vec!["job", "frobnicate"], "frobnicate"),
    ] {
        let run = cli(&home, &args).await;
        run.expect(2);
        assert!(run.stderr.contains(message), "{message:?} in {run:#?}");
    }

    // 6: a key the server does not know (401), and a user who may not start jobs (403).
    let wrong = home.join("wrong.pem");
    std::fs::write(
        &wrong,
        openssl::rsa::Rsa::generate(2048)
            .unwrap()
            .private_key_to_pem()
            .unwrap(),
    )
    .unwrap();
    let run = cli(&home, &["--key", wrong.to_str().unwrap(), "job", "list"]).await;
    run.expect(6);
    assert!(run.stderr.contains("401"), "{run:#?}");
    let normal = home_for(&r, NORMAL_USER);
    let run = cli(&normal, &["job", "start", "hello", "ex-a"]).await;
    run.expect(6);
    assert!(run.stderr.contains("403"), "{run:#?}");
    cli(&normal, &["job", "list"]).await.expect(0);

    // 8: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/organizations/{ORG}",
        closed.local_addr().unwrap()
    );
    drop(closed);
    let run = cli(&home, &["--server-url", &url, "job", "list"]).await;
    run.expect(8);
    assert!(run.stderr.contains("cannot reach the server"), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_from_credentials_profiles_context_and_environment() {
    let r = rig().await;
    let home = r.h.tmp.path().join("home-profiles");
    std::fs::create_dir_all(home.join(".chef")).unwrap();
    let url = format!("{}/organizations/{ORG}", r.base);
    let key = r.h.key_path(ADMIN_USER);
    // The default profile's key is not the user's; `work` is right, `inline` embeds it.
    let pem = std::fs::read_to_string(&key).unwrap();
    std::fs::write(
        home.join(".chef/credentials"),
        format!(
            "[default]\nclient_name = \"{ADMIN_USER}\"\nclient_key = \"{}\"\nchef_server_url = \"{url}\"\n\n\
             [work]\nclient_name = \"{ADMIN_USER}\"\nclient_key = \"{}\"\nchef_server_url = \"{url}\"\n\n\
             [inline]\nnode_name = \"{ADMIN_USER}\"\nclient_key = \"\"\"\n{pem}\"\"\"\nchef_server_url = \"{url}\"\n",
            r.h.key_path(BAD_CLIENT).display(),
            key.display(),
        ),
    )
    .unwrap();
    cli(&home, &["job", "list"]).await.expect(6);
    cli(&home, &["--profile", "work", "job", "list"])
        .await
        .expect(0);
    cli(&home, &["--profile", "inline", "job", "list"])
        .await
        .expect(0);
    cli_env(&home, &["job", "list"], &[("CHEF_PROFILE", "work")])
        .await
        .expect(0);
    let run = cli(&home, &["--profile", "nope", "job", "list"]).await;
    run.expect(2);
    assert!(run.stderr.contains("\"nope\""), "{run:#?}");
    assert!(run.stderr.contains("default, inline, work"), "{run:#?}");
    std::fs::write(home.join(".chef/context"), "work\n").unwrap();
    cli(&home, &["job", "list"]).await.expect(0);

    // Nothing configured: the missing setting is named.
    let empty = r.h.tmp.path().join("home-empty");
    std::fs::create_dir_all(&empty).unwrap();
    let run = cli(&empty, &["job", "list"]).await;
    run.expect(2);
    assert!(run.stderr.contains("no node_name configured"), "{run:#?}");
    let run = cli(&empty, &["job", "list", "-u", ADMIN_USER]).await;
    run.expect(2);
    assert!(run.stderr.contains("no client_key configured"), "{run:#?}");
    // The environment alone is enough.
    let key = key.display().to_string();
    let run = cli_env(
        &empty,
        &["job", "list"],
        &[
            ("CHEF_SERVER_URL", url.as_str()),
            ("CHEF_NODE_NAME", ADMIN_USER),
            ("CHEF_CLIENT_KEY", key.as_str()),
        ],
    )
    .await;
    run.expect(0);
    let run = cli(
        &empty,
        &[
            "job",
            "list",
            "-u",
            ADMIN_USER,
            "-k",
            &key,
            "--server-url",
            &r.base,
        ],
    )
    .await;
    run.expect(2);
    assert!(run.stderr.contains("/organizations/ORG"), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_from_config_rb_and_knife_rb() {
    let r = rig().await;
    let url = format!("{}/organizations/{ORG}", r.base);
    let home = r.h.tmp.path().join("home-rb");
    std::fs::create_dir_all(home.join(".chef")).unwrap();
    std::fs::copy(r.h.key_path(ADMIN_USER), home.join(".chef/admin.pem")).unwrap();
    std::fs::write(
        home.join(".chef/config.rb"),
        format!(
            "# written by hand\ncurrent_dir = File.dirname(__FILE__)\nlog_level       :info\nlog_location    STDOUT\n\
             node_name       \"{ADMIN_USER}\"\nclient_key      \"#{{current_dir}}/admin.pem\"\n\
             chef_server_url \"{url}\"\ncookbook_path   [\"#{{current_dir}}/../cookbooks\"]\n\
             local_chef_dir  '{}'\n",
            local_dir(&r)
        ),
    )
    .unwrap();
    cli(&home, &["job", "list"]).await.expect(0);
    // local_chef_dir from config.rb answers searches.
    let run = cli(&home, &["node", "status", "name:non_admin*"]).await;
    assert_eq!(run.expect(0).stdout, "non_admin_client\tunavailable\n");

    // knife.rb, the older name, is read the same way; --config names any file.
    let knife = r.h.tmp.path().join("home-knife");
    std::fs::create_dir_all(knife.join(".chef")).unwrap();
    let text = format!(
        "node_name '{ADMIN_USER}'\nclient_key '{}'\nchef_server_url '{url}'\n",
        r.h.key_path(ADMIN_USER).display()
    );
    std::fs::write(knife.join(".chef/knife.rb"), &text).unwrap();
    cli(&knife, &["job", "list"]).await.expect(0);
    let elsewhere = r.h.tmp.path().join("elsewhere.rb");
    std::fs::write(&elsewhere, &text).unwrap();
    let empty = r.h.tmp.path().join("home-none");
    std::fs::create_dir_all(&empty).unwrap();
    cli(&empty, &["-c", elsewhere.to_str().unwrap(), "job", "list"])
        .await
        .expect(0);

    // A value the reader cannot understand is an error naming file and line.
    std::fs::write(
        home.join(".chef/config.rb"),
        format!(
            "node_name '{ADMIN_USER}'\nchef_server_url '{url}'\nclient_key key_path_for('x')\n"
        ),
    )
    .unwrap();
    let run = cli(&home, &["job", "list"]).await;
    run.expect(2);
    assert!(run.stderr.contains(".chef/config.rb:3"), "{run:#?}");
}

/// Issue 15: the operators' controls from the command line, and their exit codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_control_any_n_and_success_threshold_set_the_exit_code() {
    let r = rig().await;
    let _a = r.start_agent("rc-1", "");
    let _b = r.start_agent("rc-2", "");
    let _c = r.start_agent("rc-3", "");
    let ready = || async {
        for n in ["rc-1", "rc-2", "rc-3"] {
            r.wait_available(n).await;
        }
    };
    ready().await;
    let home = home_for(&r, ADMIN_USER);
    let nodes = ["rc-1", "rc-2", "rc-3"];
    let start = |extra: &[&'static str], command: &'static str| {
        let mut v = vec!["job", "start", command];
        v.extend(nodes);
        v.extend(extra);
        v
    };

    // One at a time: every node runs in turn, and the waits show in the job.
    let run = cli(
        &home,
        &start(&["--max-concurrency", "1", "-F", "json"], "hello"),
    )
    .await;
    let job = run.expect(0).json();
    assert_eq!(job["nodes"], json!({"succeeded": nodes}));
    assert_eq!(job["max_concurrency"], 1);
    ready().await;
    // 10: the first failure stops the job; the others are skipped.
    let run = cli(
        &home,
        &start(&["--max-concurrency", "1", "--max-errors", "0"], "fail"),
    )
    .await;
    run.expect(10);
    assert!(run.stdout.contains("Stopped.\n"), "{run:#?}");
    assert!(run.stdout.contains("  skipped:"), "{run:#?}");
    ready().await;
    // A threshold the failures still meet is a success; one they miss is exit 1.
    cli(&home, &start(&["--success-threshold", "0"], "fail"))
        .await
        .expect(0);
    ready().await;
    cli(&home, &start(&["--success-threshold", "34%"], "fail"))
        .await
        .expect(1);
    ready().await;
    // Any one of them: exit 0 with one node run, the others skipped.
    let run = cli(&home, &start(&["--run-on-any", "1", "-F", "json"], "hello")).await;
    let job = run.expect(0).json();
    assert_eq!(
        job["nodes"],
        json!({"succeeded": ["rc-1"], "skipped": ["rc-2", "rc-3"]})
    );
    // --run-on-any replaces --quorum.
    cli(&home, &start(&["--run-on-any", "1", "-q", "1"], "hello"))
        .await
        .expect(2);
}

/// Issue 15 §2: `job start --stream` prints each line as it arrives, prefixed with its
/// node (stderr marked); `job tail` does the same for a job already running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_and_tail_print_live_output_by_node() {
    let r = rig().await;
    let _a = r.start_agent("st-a", "");
    r.wait_available("st-a").await;
    let home = home_for(&r, ADMIN_USER);
    let run = cli(&home, &["job", "start", "ticks", "st-a", "--stream"]).await;
    run.expect(0);
    for line in ["st-a | tick 1\n", "st-a | tick 3\n", "st-a ! bye\n"] {
        assert!(run.stdout.contains(line), "{line:?} missing: {run:#?}");
    }
    // Printed while the job ran: before the final report.
    let tick = run.stdout.find("st-a | tick 1").unwrap();
    assert!(tick < run.stdout.find("Complete.").unwrap(), "{run:#?}");
    assert!(!run.stdout.contains("\x1b["), "no colour off a terminal");
    r.wait_available("st-a").await;

    let gate = r.h.tmp.path().join("tail-gate");
    let run = cli(
        &home,
        &[
            "job",
            "start",
            &format!("hold {}", gate.display()),
            "st-a",
            "--capture",
            "--nowait",
        ],
    )
    .await;
    let id = run.expect(0).job_id();
    wait_job(&r, &id, |j| j["status"] == "running").await;
    let tail = command(&home, &["job", "tail", &id], &[]).spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    open_gate(&gate, 0);
    let run = tokio::task::spawn_blocking(move || finish(tail))
        .await
        .unwrap();
    run.expect(0);
    assert!(run.stdout.contains("st-a | holding\n"), "{run:#?}");
    assert!(run.stdout.contains("st-a | released\n"), "{run:#?}");
    // A job that does not exist is exit 7, as for `job status`.
    cli(&home, &["job", "tail", "0123456789abcdef0123456789abcdef"])
        .await
        .expect(7);
}

/// Issue 16: `push-jobs dashboard` prints a one-time login link that starts a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_prints_a_login_link_that_works_once() {
    let r = rig().await;
    let home = home_for(&r, ADMIN_USER);
    let run = cli(&home, &["dashboard"]).await;
    run.expect(0);
    let link = run.stdout.trim().to_owned();
    let path = format!("/organizations/{ORG}/pushy/dashboard/login/");
    let at = link
        .find(&path)
        .unwrap_or_else(|| panic!("no login link: {run:#?}"));
    assert!(run.stderr.contains("works once"), "{run:#?}");
    // Opening the link shows a button; its form's POST logs in, once.
    let visit = |method: &str| {
        axum::http::Request::builder()
            .method(method)
            .uri(&link[at..])
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let page = r.h.send(visit("GET")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("login-continue"), "{}", page.text);
    let first = r.h.send(visit("POST")).await;
    assert_eq!(first.status, 303, "{}", first.text);
    assert!(first.headers.contains_key("set-cookie"));
    assert_eq!(r.h.send(visit("POST")).await.status, 401);
}
