//! The real-agent rig: our server in-process on a real HTTP port and real
//! `push-jobs-client` processes on loopback (zmq.md §6). Shared by `tests/agent.rs` and
//! `tests/cli.rs`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use pushy_server::store::{SqliteStore, Store};

use super::{ADMIN_USER, Harness, ORG, Reply};

pub const WAIT: Duration = Duration::from_secs(30);

/// A binary of this workspace built next to the server (`CARGO_BIN_EXE_*` names only the
/// root package's binaries).
pub fn workspace_binary(name: &str) -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_opscode-pushy-server"));
    let path = server.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

pub fn client_binary() -> PathBuf {
    workspace_binary("push-jobs-client")
}

pub fn fast(c: &mut pushy_server::config::Config) {
    c.pushy.heartbeat_interval = 200;
    c.pushy.decay_window = 4;
    c.pushy.down_threshold = 0.25;
    c.pushy.voting_timeout = 5;
    c.pushy.wait_complete_time = 2;
}

/// A running agent process, killed on drop.
pub struct Agent {
    pub child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Rig {
    pub h: Harness,
    /// `http://127.0.0.1:PORT`, the server's HTTP API.
    pub base: String,
}

pub async fn rig() -> Rig {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let h = Harness::with_store(store, fast).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(pushy_server::run(h.state.clone(), listener));
    Rig { h, base }
}

pub const WHITELIST: &str = r#"
[whitelist]
"hello" = "echo hello; echo oops >&2"
"envdump" = "echo \"$A-$CHEF_PUSH_NODE_NAME-$CHEF_PUSH_JOB_ID\"; pwd; cat \"$CHEF_PUSH_JOB_FILE\""
"fail" = "exit 3"
"big" = "head -c 20000 /dev/zero | tr '\\000' a; echo END"
"/^sleep (\\d+)$/" = "sleep \\1"
"whoami" = "id -un"
"#;

impl Rig {
    pub fn start_agent(&self, name: &str, extra: &str) -> Agent {
        self.start_agent_toml(name, &format!("{extra}\n{WHITELIST}"))
    }

    /// An agent whose whitelist has only the table(s) given.
    pub fn start_agent_with_whitelist(&self, name: &str, whitelist: &str) -> Agent {
        self.start_agent_toml(name, whitelist)
    }

    pub fn start_agent_toml(&self, name: &str, extra: &str) -> Agent {
        self.h.add_client(name);
        let dir = self.h.tmp.path();
        let files = dir.join(format!("files-{name}"));
        let cfg = dir.join(format!("{name}.toml"));
        let toml = format!(
            "chef_server_url = \"{}/organizations/{ORG}\"\nnode_name = \"{name}\"\nclient_key = \"{}\"\nfile_dir = \"{}\"\n{extra}",
            self.base,
            self.h.key_path(name).display(),
            files.display(),
        );
        std::fs::write(&cfg, toml).unwrap();
        let child = Command::new(client_binary())
            .arg("-c")
            .arg(&cfg)
            .env(
                "RUST_LOG",
                std::env::var("PUSHY_TEST_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Agent { child }
    }

    pub async fn wait_available(&self, name: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = self
                .h
                .call(
                    "GET",
                    &format!("/organizations/{ORG}/pushy/node_states/{name}"),
                    "",
                    ADMIN_USER,
                )
                .await;
            if r.json()["availability"] == "available" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never became available: {}",
                r.text
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn output(&self, job: &str, node: &str, channel: &str) -> Reply {
        let path = format!("{job}/output/{node}/{channel}");
        let req = self
            .h
            .signed("GET", &path, "", ADMIN_USER)
            .header("accept", "application/octet-stream")
            .body(Body::empty())
            .unwrap();
        self.h.send(req).await
    }
}
