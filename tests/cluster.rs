//! Issue 14: several instances on one PostgreSQL database act as one Push Jobs service.
//! Instance A runs in-process (the test's harness: keys, org, signed calls); B and C are
//! real `opscode-pushy-server` processes on the same database, data directory and server
//! key, so a test can SIGKILL them. Agents are real `push-jobs-client` processes that
//! fetch their config from A, which sends each to the instance that should hold it.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use common::agents::{Agent, Rig, free_port, workspace_binary};
use common::*;
use pushy_server::config::Config;
use pushy_server::store::{PostgresStore, Store};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const WAIT: Duration = Duration::from_secs(40);

fn fast(c: &mut Config, db: &PgDb) {
    c.pushy.heartbeat_interval = 200;
    c.pushy.decay_window = 4;
    c.pushy.down_threshold = 0.25;
    c.pushy.voting_timeout = 10;
    c.pushy.wait_complete_time = 2;
    c.database.engine = pushy_server::config::DatabaseEngine::Postgresql;
    c.database.name = db.name.clone();
    c.cluster.enabled = true;
    c.cluster.tick = 200;
    c.cluster.lease = 3;
}

/// A server process of the cluster, killed on drop.
struct Instance {
    child: Child,
    port: u16,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    rig: Rig,
    db: PgDb,
    pool: sqlx::PgPool,
}

impl Cluster {
    async fn new() -> Option<Cluster> {
        let db = PgDb::create().await?;
        let store: Arc<dyn Store> =
            Arc::new(PostgresStore::connect(db.options(), 5).await.unwrap());
        let h = Harness::with_store(store, |c| fast(c, &db)).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a_port = listener.local_addr().unwrap().port();
        tokio::spawn(pushy_server::run(h.state.clone(), listener));
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        Some(Cluster {
            rig: Rig {
                h,
                base: format!("http://127.0.0.1:{a_port}"),
            },
            db,
            pool,
        })
    }

    /// Starts another instance as a process and waits until it is a live member.
    async fn spawn(&self, name: &str) -> Instance {
        let dir = self.rig.h.tmp.path();
        let port = free_port();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "data_dir = {dir:?}\n\
                 [pushy]\nzeromq_listen_address = \"tcp://127.0.0.1\"\nserver_heartbeat_port = 0\n\
                 command_port = 0\nheartbeat_interval = 200\ndecay_window = 4\ndown_threshold = 0.25\n\
                 voting_timeout = 10\nwait_complete_time = 2\n\
                 [database]\nengine = \"postgresql\"\nuser = \"postgres\"\nname = {:?}\n\
                 [cluster]\nenabled = true\ntick = 200\nlease = 3\n",
                self.db.name
            ),
        )
        .unwrap();
        let before = self.members().await.len();
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(workspace_binary("opscode-pushy-server"))
            .args(["--config", config.to_str().unwrap(), "serve", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn,pushy_server=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let instance = Instance { child, port };
        self.wait(&format!("{name} to join"), || async {
            self.members().await.len() > before
        })
        .await;
        instance
    }

    /// The live members, as instance A sees them.
    async fn members(&self) -> Vec<String> {
        let r = self
            .rig
            .h
            .call("GET", "/pushy/_status", "", ADMIN_USER)
            .await;
        serde_json::from_value(r.json()["cluster"]["instances"].clone()).unwrap()
    }

    async fn wait<F, Fut>(&self, what: &str, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + WAIT;
        while !done().await {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn agent(&self, name: &str) -> Agent {
        self.rig.start_agent(name, "")
    }

    /// Which instance holds each node, as published.
    async fn holders(&self) -> Vec<(String, String)> {
        sqlx::query_as("SELECT node_name, instance_id FROM pushy_presence ORDER BY node_name")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    async fn wait_all_available(&self, nodes: &[String]) {
        self.wait("every node available", || async {
            let r = self
                .rig
                .h
                .call(
                    "GET",
                    &format!("/organizations/{ORG}/pushy/node_states"),
                    "",
                    ADMIN_USER,
                )
                .await;
            let states = r.json();
            nodes.iter().all(|n| {
                states
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["node_name"] == n.as_str() && s["availability"] == "available")
            })
        })
        .await;
    }

    /// A signed call to the instance on `port`, over a real socket.
    async fn call(&self, port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
        let raw = self.send_raw(port, method, path, body, None).await;
        split(&raw)
    }

    /// Reads the job's SSE feed from the instance on `port` until `job_complete`.
    async fn feed(&self, port: u16, job: &str, last_event_id: Option<&str>) -> String {
        let feed = job.replace("/pushy/jobs/", "/pushy/job_status_feed/");
        self.send_raw(port, "GET", &feed, "", last_event_id).await
    }

    async fn send_raw(
        &self,
        port: u16,
        method: &str,
        path: &str,
        body: &str,
        last_event_id: Option<&str>,
    ) -> String {
        let mut builder = self.rig.h.signed(method, path, body, ADMIN_USER);
        if path.contains("/job_status_feed/") {
            builder = builder.header("accept", "text/event-stream");
        }
        if let Some(id) = last_event_id {
            builder = builder.header("last-event-id", id);
        }
        let req = builder.body(Body::empty()).unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        for (k, v) in req.headers() {
            head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
        }
        head.push_str(&format!(
            "content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ));
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => {
                    out.extend_from_slice(&buf[..n]);
                    // A feed ends after `job_complete`; stop reading there.
                    if String::from_utf8_lossy(&out).contains("event: job_complete") {
                        break;
                    }
                }
                Ok(Err(e)) => panic!("reading from port {port}: {e}"),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Starts `command` on `nodes` through the instance on `port`; the job's path.
    async fn start_job(&self, port: u16, command: &str, nodes: &[String]) -> String {
        let (status, body) = self
            .call(
                port,
                "POST",
                &format!("/organizations/{ORG}/pushy/jobs"),
                &job_body(command, nodes),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        // Exactly `{"uri": …}`, as Chef Automate expects.
        assert_eq!(
            serde_json::from_str::<Value>(&body)
                .unwrap()
                .as_object()
                .unwrap()
                .len(),
            1
        );
        job_path(&body)
    }

    async fn job(&self, job: &str) -> Value {
        self.rig.h.call("GET", job, "", ADMIN_USER).await.json()
    }

    async fn wait_job(&self, job: &str, status: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let j = self.job(job).await;
            if j["status"] == status {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "job never reached {status}: {j}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn logs(&self) -> String {
        let dir = self.rig.h.tmp.path();
        ["b", "c", "d"]
            .iter()
            .map(|n| {
                let text =
                    std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
                format!("--- {n}.log\n{text}")
            })
            .collect()
    }
}

/// Status line and body of a raw HTTP/1.1 response (chunks joined).
fn split(raw: &str) -> (u16, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    if !chunked {
        return (status, body.to_owned());
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    (status, out)
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn job_body(command: &str, nodes: &[String]) -> String {
    json!({"command": command, "nodes": nodes, "run_timeout": 30, "capture_output": true})
        .to_string()
}

fn job_path(raw_body: &str) -> String {
    let v: Value = serde_json::from_str(raw_body).unwrap_or_else(|e| panic!("{e}: {raw_body}"));
    let uri = v["uri"].as_str().unwrap();
    uri[uri.find("/organizations").unwrap()..].to_owned()
}

/// A job over nodes held by all three instances, started on B, its feed followed on C
/// and its output read on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_over_three_instances_is_started_on_one_followed_on_another_read_on_the_third() {
    let Some(c) = Cluster::new().await else {
        return;
    };
    let b = c.spawn("b").await;
    let cc = c.spawn("c").await;
    assert_eq!(c.members().await.len(), 3);
    let nodes = names("n", 9);
    let _agents: Vec<Agent> = nodes.iter().map(|n| c.agent(n)).collect();
    c.wait_all_available(&nodes).await;
    let holders = c.holders().await;
    let mut spread: Vec<&String> = holders.iter().map(|(_, i)| i).collect();
    spread.sort();
    spread.dedup();
    assert!(spread.len() >= 2, "nodes all on one instance: {holders:?}");

    let job = c.start_job(b.port, "hello", &nodes).await;
    let feed = c.feed(cc.port, &job, None).await;
    assert!(feed.contains("event: start"), "{feed}");
    assert_eq!(feed.matches("event: run_complete").count(), 9, "{feed}");
    assert!(feed.contains("event: job_complete"), "{feed}");
    // Resumable anywhere: the same ids on every instance.
    let first_id = feed
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_owned();
    let rest = c.feed(b.port, &job, Some(&first_id)).await;
    assert!(!rest.contains("event: start"), "{rest}");
    assert!(rest.contains("event: job_complete"), "{rest}");

    let j = c.wait_job(&job, "complete").await;
    assert_eq!(j["nodes"]["succeeded"].as_array().unwrap().len(), 9, "{j}");
    for n in &nodes {
        let out = c.rig.output(&job, n, "stdout").await;
        assert_eq!(out.status, 200);
        assert_eq!(out.text, "hello\n");
    }
    // The same answers from B and C as from A.
    let (status, on_b) = c.call(b.port, "GET", &job, "").await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&on_b).unwrap(), j);
    let (_, states) = c
        .call(
            cc.port,
            "GET",
            &format!("/organizations/{ORG}/pushy/node_states"),
            "",
        )
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&states)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        9
    );

    // Aborting on C a job driven by B.
    let long = c.start_job(b.port, "sleep 20", &nodes).await;
    c.wait_job(&long, "running").await;
    let (status, body) = c.call(cc.port, "POST", &format!("{long}/abort"), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "aborted"
    );
    let j = c.wait_job(&long, "aborted").await;
    assert_eq!(
        j["nodes"]["aborted"].as_array().map(Vec::len),
        Some(9),
        "{j}"
    );
    c.wait_all_available(&nodes).await;
    drop(b);
}

/// The owner of a running job is SIGKILLed: a survivor takes the job over and completes
/// it with the nodes' true results; the nodes the dead instance held reappear on
/// survivors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_jobs_owner_mid_run_completes_the_job_on_a_survivor() {
    let Some(c) = Cluster::new().await else {
        return;
    };
    let mut b = c.spawn("b").await;
    let _cc = c.spawn("c").await;
    let nodes = names("k", 9);
    let _agents: Vec<Agent> = nodes.iter().map(|n| c.agent(n)).collect();
    c.wait_all_available(&nodes).await;
    let members = c.members().await;

    let job = c.start_job(b.port, "sleep 3", &nodes).await;
    c.wait_job(&job, "running").await;
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let j = c.wait_job(&job, "complete").await;
    assert_eq!(
        j["nodes"]["succeeded"].as_array().map(Vec::len),
        Some(9),
        "{j}\n{}",
        c.logs()
    );

    // B's nodes are held by A or C now, within the offline threshold and a config fetch.
    let survivors: Vec<String> = c.members().await;
    assert_eq!(survivors.len(), 2);
    let dead: Vec<&String> = members.iter().filter(|m| !survivors.contains(m)).collect();
    c.wait_all_available(&nodes).await;
    for (node, instance) in c.holders().await {
        assert!(
            !dead.contains(&&instance),
            "{node} still on the dead instance"
        );
    }
}

/// A new instance takes its share of the nodes that reconnect after it joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joining_instance_takes_a_share_of_reconnecting_nodes() {
    let Some(c) = Cluster::new().await else {
        return;
    };
    let _b = c.spawn("b").await;
    let nodes = names("j", 12);
    let agents: Vec<Agent> = nodes.iter().map(|n| c.agent(n)).collect();
    c.wait_all_available(&nodes).await;
    let d = c.spawn("d").await;
    let d_id = c
        .members()
        .await
        .into_iter()
        .last()
        .expect("the newest member comes last");
    drop(agents);
    let _agents: Vec<Agent> = nodes.iter().map(|n| c.agent(n)).collect();
    c.wait_all_available(&nodes).await;
    c.wait("the new instance to hold some nodes", || async {
        c.holders().await.iter().any(|(_, i)| *i == d_id)
    })
    .await;
    // Jobs still run on every node.
    let job = c.start_job(d.port, "hello", &nodes).await;
    let j = c.wait_job(&job, "complete").await;
    assert_eq!(j["nodes"]["succeeded"].as_array().unwrap().len(), 12, "{j}");
}

/// An instance cut off from the database for longer than its lease stops with an error
/// (its supervisor restarts it as a new member) instead of driving jobs the others may
/// have taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_that_cannot_renew_its_membership_stops() {
    use pushy_server::store::pg_proxy::PgProxy;
    let Some(db) = PgDb::create().await else {
        return;
    };
    let proxy = PgProxy::in_front_of(&db.url).await;
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(proxy.options(&db.url), 4)
            .await
            .unwrap(),
    );
    let h = Harness::with_store(store, |c| {
        fast(c, &db);
        c.cluster.lease = 1;
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = tokio::spawn(pushy_server::run(h.state.clone(), listener));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!server.is_finished());
    proxy.cut().await;
    let ended = tokio::time::timeout(WAIT, server)
        .await
        .expect("the instance stops")
        .unwrap();
    assert!(
        matches!(ended, Err(pushy_server::Error::MembershipLapsed)),
        "{ended:?}"
    );
}
