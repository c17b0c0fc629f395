//! The real-agent rig: our server in-process on a real HTTP port and real
//! `push-jobs-client` processes on loopback (zmq.md §6). Shared by `tests/agent.rs` and
//! `tests/cli.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use pushy_server::config::Config;
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
    rig_on(store).await
}

/// [`rig`] over the given store.
pub async fn rig_on(store: Arc<dyn Store>) -> Rig {
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
"seq" = "seq 200000"
"binary" = "printf '\\000\\001\\377\\nline2\\n'"
"ticks" = "for i in 1 2 3; do echo tick $i; sleep 0.4; done; echo bye >&2"
"/^hold (\\S+)$/" = "echo holding; while [ ! -e \\1 ]; do sleep 0.05; done; echo released"
"/^gate (\\S+)$/" = "while [ ! -e \\1 ]; do sleep 0.05; done; echo released; exit $(cat \\1)"
"#;

/// Lets a `gate PATH` job finish, exiting with `status`: the file appears whole (renamed
/// into place), so the command never reads it half-written.
pub fn open_gate(path: &Path, status: i32) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, status.to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Rig {
    pub fn start_agent(&self, name: &str, extra: &str) -> Agent {
        self.start_agent_toml(name, &format!("{extra}\n{WHITELIST}"))
    }

    /// An agent whose whitelist has only the table(s) given.
    pub fn start_agent_with_whitelist(&self, name: &str, whitelist: &str) -> Agent {
        self.start_agent_toml(name, whitelist)
    }

    pub fn start_agent_toml(&self, name: &str, extra: &str) -> Agent {
        self.spawn_agent(name, extra, None)
    }

    /// An agent (with [`WHITELIST`]) logging at `info` to a file the test can read.
    pub fn start_agent_logged(&self, name: &str) -> (Agent, AgentLog) {
        let log = AgentLog(self.h.tmp.path().join(format!("{name}.log")));
        let agent = self.spawn_agent(name, WHITELIST, Some(&log.0));
        (agent, log)
    }

    fn spawn_agent(&self, name: &str, extra: &str, log: Option<&Path>) -> Agent {
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
        let mut cmd = Command::new(client_binary());
        cmd.arg("-c").arg(&cfg).stdout(Stdio::null());
        match log {
            Some(path) => {
                cmd.env("RUST_LOG", "warn,pushy_client=info")
                    .stderr(std::fs::File::create(path).unwrap());
            }
            None => {
                cmd.env(
                    "RUST_LOG",
                    std::env::var("PUSHY_TEST_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stderr(Stdio::inherit());
            }
        }
        Agent {
            child: cmd.spawn().unwrap(),
        }
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

/// An agent's log file.
pub struct AgentLog(pub PathBuf);

impl AgentLog {
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }

    /// How many log lines carry `message` (tracing's `target: message fields` form).
    pub fn count(&self, message: &str) -> usize {
        let needle = format!(": {message}");
        self.text()
            .lines()
            .filter(|l| {
                l.split_once(&needle)
                    .is_some_and(|(_, rest)| rest.is_empty() || rest.starts_with(' '))
            })
            .count()
    }

    /// Waits until `message` has been logged `n` times.
    pub async fn wait_for(&self, message: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.count(message) < n {
            assert!(
                Instant::now() < deadline,
                "the agent never logged {message:?} {n} times:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

type Tweak = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// A rig whose server can be stopped and started again on the same ports, directory and
/// SQLite file, as a process restart does: jobs are rehydrated, agents reconnect.
pub struct RestartRig {
    pub r: Rig,
    addr: SocketAddr,
    tweak: Tweak,
    http: Option<tokio::task::JoinHandle<()>>,
}

impl RestartRig {
    pub async fn new(tweak: impl Fn(&mut Config) + Send + Sync + 'static) -> RestartRig {
        let (hb, cmd) = (free_port(), free_port());
        let tweak: Tweak = Arc::new(move |c: &mut Config| {
            tweak(c);
            c.pushy.server_heartbeat_port = hb;
            c.pushy.command_port = cmd;
        });
        let h = Harness::with_file_store(|c| tweak(c)).await;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut rig = RestartRig {
            r: Rig {
                h,
                base: format!("http://{addr}"),
            },
            addr,
            tweak,
            http: None,
        };
        rig.serve().await;
        rig
    }

    async fn serve(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let state = self.r.h.state.clone();
        self.http = Some(tokio::spawn(async move {
            let _ = pushy_server::run(state, listener).await;
        }));
    }

    /// Stops the server: its tasks end, its ports close, jobs stay as stored.
    pub async fn stop(&mut self) {
        self.r.h.token.cancel();
        self.r.h.state.tracker.close();
        tokio::time::timeout(WAIT, self.r.h.state.tracker.wait())
            .await
            .expect("the server's tasks stop");
        if let Some(http) = self.http.take() {
            tokio::time::timeout(WAIT, http)
                .await
                .expect("the HTTP server stops")
                .unwrap();
        }
    }

    /// Starts a new server process's worth of state on the same directory and ports.
    pub async fn start(&mut self) {
        let tweak = self.tweak.clone();
        self.r.h.state = Harness::boot(self.r.h.tmp.path(), &move |c: &mut Config| tweak(c)).await;
        self.r.h.token = self.r.h.state.shutdown.clone();
        self.serve().await;
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }
}
