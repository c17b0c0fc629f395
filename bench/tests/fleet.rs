//! End to end: 20 simulated nodes provisioned into a temporary data directory, our real
//! server binary, `pushy-load run`, and a job over all of them that must complete with
//! every node `succeeded`. No timing assertions; the timeouts only keep a broken run
//! from hanging.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ORG: &str = "bench";
const NODES: u64 = 20;
const WAIT: Duration = Duration::from_secs(90);

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn load_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pushy-load"))
}

/// Builds the server binary (another package of the workspace, so Cargo does not build
/// it for this test) and returns its path next to ours.
fn server_binary() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--bin", "opscode-pushy-server"])
        .current_dir(workspace)
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building opscode-pushy-server failed");
    let path = load_binary().with_file_name("opscode-pushy-server");
    assert!(path.exists(), "{} is missing", path.display());
    path
}

fn check(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Rig {
    server_bin: PathBuf,
    tmp: tempfile::TempDir,
    base: String,
}

impl Rig {
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A signed request as the admin user; the parsed body.
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let mut cmd = Command::new(&self.server_bin);
        cmd.args(["request", method, &format!("{}{path}", self.base)])
            .args(["-u", "alice", "-k"])
            .arg(self.path("alice.pem"));
        if let Some(b) = body {
            cmd.args(["-d", &b.to_string()]);
        }
        serde_json::from_str(&check(&mut cmd)).expect("a JSON answer")
    }

    /// Polls `probe` until it returns something, or fails with the server's log.
    fn wait_for<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = probe() {
                return v;
            }
            if Instant::now() > deadline {
                let log = |f| std::fs::read_to_string(self.path(f)).unwrap_or_default();
                panic!(
                    "timed out waiting for {what}\n--- server log ---\n{}\n--- pushy-load ---\n{}",
                    log("server.log"),
                    log("load.log")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn node_names() -> Vec<String> {
    (0..NODES).map(|i| format!("node{i}")).collect()
}

#[test]
fn twenty_simulated_nodes_connect_and_all_succeed_a_job() {
    let server_bin = server_binary();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[pushy]\nzeromq_listen_address = \"tcp://127.0.0.1\"\nserver_heartbeat_port = 0\ncommand_port = 0\nheartbeat_interval = 1000\n",
            tmp.path()
        ),
    )
    .unwrap();
    let server = |args: &[&str]| {
        let mut c = Command::new(&server_bin);
        c.arg("--config").arg(&config).args(args);
        c
    };
    check(&mut server(&["local", "org-create", ORG]));
    check(
        server(&["local", "user-create", ORG, "alice", "--admin", "--key-out"])
            .arg(tmp.path().join("alice.pem")),
    );
    check(
        Command::new(load_binary())
            .args(["provision", "--org", ORG, "--prefix", "node", "--count"])
            .arg(NODES.to_string())
            .arg("--chef-dir")
            .arg(tmp.path().join("chef"))
            .arg("--key-out")
            .arg(tmp.path().join("nodes.pem")),
    );

    let mut child = server(&["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.path().join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _server = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();

    let status_file = tmp.path().join("status.json");
    let _load = Running(
        Command::new(load_binary())
            .args(["run", "--url", &base, "--org", ORG, "--prefix", "node"])
            .args([
                "--count",
                &NODES.to_string(),
                "--duration",
                "600",
                "--quiet",
            ])
            .arg("--key")
            .arg(tmp.path().join("nodes.pem"))
            .arg("--status-file")
            .arg(&status_file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("load.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let rig = Rig {
        server_bin: server_bin.clone(),
        tmp,
        base,
    };

    // Online (listed) and available, every one of them.
    rig.wait_for("all nodes online and available", || {
        let states = rig.request(
            "GET",
            &format!("/organizations/{ORG}/pushy/node_states"),
            None,
        );
        let available = states
            .as_array()?
            .iter()
            .filter(|n| n["availability"] == "available")
            .count();
        (available == NODES as usize).then_some(())
    });

    let created = rig.request(
        "POST",
        &format!("/organizations/{ORG}/pushy/jobs"),
        Some(&json!({"command": "chef-client", "nodes": node_names()})),
    );
    let uri = created["uri"].as_str().expect("the job's uri");
    let job_id = uri.rsplit('/').next().unwrap().to_owned();
    let job = rig.wait_for("the job to complete", || {
        let job = rig.request(
            "GET",
            &format!("/organizations/{ORG}/pushy/jobs/{job_id}"),
            None,
        );
        (job["status"] == "complete").then_some(job)
    });
    let mut succeeded: Vec<String> = job["nodes"]["succeeded"]
        .as_array()
        .unwrap_or_else(|| panic!("no succeeded nodes: {job}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    succeeded.sort();
    let mut all = node_names();
    all.sort();
    assert_eq!(succeeded, all, "{job}");
    assert_eq!(job["nodes"].as_object().unwrap().len(), 1, "{job}");

    // The generator's own account agrees.
    let status = rig.wait_for("the status file to count the runs", || {
        let v: Value = serde_json::from_slice(&std::fs::read(&status_file).ok()?).ok()?;
        (v["succeeded"] == NODES).then_some(v)
    });
    assert_eq!(status["connected"], NODES);
    assert_eq!(status["commits_acked"], NODES);
    assert_eq!(status["runs_acked"], NODES);
    assert_eq!(status["rejected"], 0);
}
