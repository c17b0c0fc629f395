//! A test harness: an in-process server over a temporary local Chef directory with the
//! pedant suite's actors (http.md §7 "How to read this list"), and signed requests.
#![allow(dead_code)]

pub mod agents;
pub mod node;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response};
use chrono::Utc;
use http_body_util::BodyExt as _;
use openssl::pkey::{PKey, Private};
use pushy_protocol::chef_auth::{ProtocolVersion, format_timestamp, sign_request};
use pushy_server::chef::{Group, local_admin};
use pushy_server::config::Config;
use pushy_server::store::{SqliteStore, Store};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

pub const ORG: &str = "pedant";
pub const OTHER_ORG: &str = "other";

/// The actors: (name, is_client).
pub const ADMIN_USER: &str = "admin_user";
pub const NORMAL_USER: &str = "normal_user";
pub const OUTSIDE_USER: &str = "outside_user";
pub const ADMIN_CLIENT: &str = "admin_client";
pub const NON_ADMIN_CLIENT: &str = "non_admin_client";
pub const BAD_CLIENT: &str = "bad_client";
pub const INVALID_USER: &str = "invalid";

pub struct Harness {
    pub tmp: tempfile::TempDir,
    pub state: pushy_server::http::AppState,
    pub token: CancellationToken,
}

pub fn chef_dir(tmp: &Path) -> PathBuf {
    tmp.join("chef")
}

fn key(tmp: &Path, name: &str) -> PathBuf {
    tmp.join(format!("{name}.pem"))
}

/// Builds the local directory with the pedant actors.
pub fn populate(tmp: &Path) {
    let dir = chef_dir(tmp);
    local_admin::create_org(&dir, ORG).unwrap();
    local_admin::create_org(&dir, OTHER_ORG).unwrap();
    local_admin::create_user(&dir, ORG, ADMIN_USER, true, &key(tmp, ADMIN_USER)).unwrap();
    local_admin::create_user(&dir, ORG, NORMAL_USER, false, &key(tmp, NORMAL_USER)).unwrap();
    local_admin::create_user(
        &dir,
        OTHER_ORG,
        OUTSIDE_USER,
        false,
        &key(tmp, OUTSIDE_USER),
    )
    .unwrap();
    local_admin::create_client(&dir, ORG, ADMIN_CLIENT, true, &key(tmp, ADMIN_CLIENT)).unwrap();
    local_admin::create_client(
        &dir,
        ORG,
        NON_ADMIN_CLIENT,
        false,
        &key(tmp, NON_ADMIN_CLIENT),
    )
    .unwrap();
    local_admin::create_client(&dir, ORG, BAD_CLIENT, false, &key(tmp, BAD_CLIENT)).unwrap();
    // bad_client signs with a key the server does not know.
    let wrong = openssl::rsa::Rsa::generate(2048)
        .unwrap()
        .private_key_to_pem()
        .unwrap();
    std::fs::write(key(tmp, BAD_CLIENT), wrong).unwrap();
    // invalid_user has a key but no principal.
    let k = openssl::rsa::Rsa::generate(2048)
        .unwrap()
        .private_key_to_pem()
        .unwrap();
    std::fs::write(key(tmp, INVALID_USER), k).unwrap();
}

/// Server logs for a test run when `PUSHY_TEST_LOG` is set (e.g. `info` or `debug`).
pub fn init_logs() {
    if let Ok(filter) = std::env::var("PUSHY_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

pub fn config_for(tmp: &Path) -> Config {
    init_logs();
    let mut config = Config {
        data_dir: tmp.to_path_buf(),
        ..Config::default()
    };
    // Loopback and free ports: tests run in parallel.
    config.pushy.zeromq_listen_address = "tcp://127.0.0.1".into();
    config.pushy.server_heartbeat_port = 0;
    config.pushy.command_port = 0;
    config
}

impl Harness {
    /// A server on in-memory SQLite.
    pub async fn new() -> Harness {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        Harness::with_store(store, |_| {}).await
    }

    /// A server on `store`, with `tweak` applied to the config.
    pub async fn with_store(store: Arc<dyn Store>, tweak: impl FnOnce(&mut Config)) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        populate(tmp.path());
        let mut config = config_for(tmp.path());
        tweak(&mut config);
        let token = CancellationToken::new();
        let state = pushy_server::build_state_with(config, store, token.clone())
            .await
            .unwrap();
        Harness { tmp, state, token }
    }

    /// A server on a SQLite file in its temporary directory, so it can be restarted.
    pub async fn with_file_store(tweak: impl Fn(&mut Config)) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        populate(tmp.path());
        let state = Harness::boot(tmp.path(), &tweak).await;
        let token = state.shutdown.clone();
        Harness { tmp, state, token }
    }

    async fn boot(dir: &Path, tweak: &impl Fn(&mut Config)) -> pushy_server::http::AppState {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.join("pushy.sqlite")).await.unwrap());
        let mut config = config_for(dir);
        tweak(&mut config);
        pushy_server::build_state_with(config, store, CancellationToken::new())
            .await
            .unwrap()
    }

    /// Stops this server (its tasks end; jobs stay as stored) and starts a new one on the
    /// same directory and database, as a process restart does.
    pub async fn restart(&mut self, tweak: impl Fn(&mut Config)) {
        self.stop().await;
        self.start(tweak).await;
    }

    /// The first half of [`Harness::restart`]: the server's tasks end, its sockets close.
    pub async fn stop(&mut self) {
        self.token.cancel();
        self.state.tracker.close();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.state.tracker.wait(),
        )
        .await
        .expect("the old server's tasks stop");
    }

    /// The second half of [`Harness::restart`]: a new server on the same directory.
    pub async fn start(&mut self, tweak: impl Fn(&mut Config)) {
        self.state = Harness::boot(self.tmp.path(), &tweak).await;
        self.token = self.state.shutdown.clone();
    }

    pub fn key(&self, who: &str) -> PKey<Private> {
        let pem = std::fs::read_to_string(key(self.tmp.path(), who)).unwrap();
        pushy_protocol::keys::private_key_from_pem(&pem).unwrap()
    }

    /// Adds a client (a node) to the org, its key under the temporary directory.
    pub fn add_client(&self, name: &str) {
        local_admin::create_client(
            &chef_dir(self.tmp.path()),
            ORG,
            name,
            false,
            &key(self.tmp.path(), name),
        )
        .unwrap();
    }

    /// Polls a job until it has `status` (panics after `within`); returns its body.
    pub async fn wait_for_job(
        &self,
        path: &str,
        status: &str,
        within: std::time::Duration,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let r = self.call("GET", path, "", ADMIN_USER).await;
            let body = r.json();
            if body["status"] == status {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job never reached {status}: {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn key_path(&self, who: &str) -> PathBuf {
        key(self.tmp.path(), who)
    }

    pub fn set_group(&self, group: &str, users: &[&str], clients: &[&str], groups: &[&str]) {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        let g = Group {
            users: s(users),
            clients: s(clients),
            groups: s(groups),
        };
        local_admin::set_group(&chef_dir(self.tmp.path()), ORG, group, &g).unwrap();
    }

    pub fn delete_group(&self, group: &str) {
        local_admin::delete_group(&chef_dir(self.tmp.path()), ORG, group).unwrap();
    }

    /// A request signed by `who` (protocol 1.0, as pedant does by default).
    pub fn signed(
        &self,
        method: &str,
        path: &str,
        body: &str,
        who: &str,
    ) -> axum::http::request::Builder {
        self.signed_with(method, path, body, who, ProtocolVersion::V1_0)
    }

    pub fn signed_with(
        &self,
        method: &str,
        path: &str,
        body: &str,
        who: &str,
        version: ProtocolVersion,
    ) -> axum::http::request::Builder {
        let ts = format_timestamp(Utc::now());
        let req = pushy_protocol::chef_auth::Request {
            method,
            path,
            body: body.as_bytes(),
            user_id: who,
            timestamp: &ts,
            server_api_version: None,
        };
        let headers = sign_request(&self.key(who), version, &req).unwrap();
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "push.example.com");
        for (k, v) in headers {
            b = b.header(k, v);
        }
        if method == "POST" || method == "PUT" {
            b = b.header("Content-Type", "application/json");
        }
        b
    }

    /// Sends a request through the whole service (path clean-up included), no socket.
    pub async fn send(&self, req: Request<Body>) -> Reply {
        let svc = pushy_server::service(self.state.clone());
        let resp: Response<Body> = svc.oneshot(req).await.unwrap();
        let mut reply = Reply::read(resp).await;
        reply.ports = Some(self.state.ports);
        reply
    }

    /// Signs and sends.
    pub async fn call(&self, method: &str, path: &str, body: &str, who: &str) -> Reply {
        let req = self
            .signed(method, path, body, who)
            .body(Body::from(body.to_owned()))
            .unwrap();
        self.send(req).await
    }

    /// Posts the pedant job body as `who` and returns the job's path.
    pub async fn create_job(&self, body: &str, who: &str) -> String {
        let r = self
            .call(
                "POST",
                &format!("/organizations/{ORG}/pushy/jobs"),
                body,
                who,
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let uri = r.json()["uri"].as_str().unwrap().to_owned();
        uri.split_once("push.example.com").unwrap().1.to_owned()
    }
}

pub struct Reply {
    /// The command channel's bound ports of the server that answered (configs advertise
    /// them; tests bind port 0).
    pub ports: Option<pushy_server::BoundPorts>,
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub text: String,
}

impl Reply {
    pub async fn read(resp: Response<Body>) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            ports: None,
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Asserts status and the exact JSON body.
    pub fn expect(&self, status: u16, body: serde_json::Value) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.json(), body);
    }
}

/// One event of a job's feed as a test reads it.
pub struct FeedEvent {
    /// The event name.
    pub name: String,
    /// Whether it carried an `id:` line.
    pub has_id: bool,
    /// Its data.
    pub data: serde_json::Value,
}

impl Harness {
    /// The job's feed (`job_status_feed/ID`, read until it ends: at once for a finished
    /// job, at `job_complete` for a running one), event by event.
    pub async fn job_feed(&self, job_path: &str) -> Vec<FeedEvent> {
        let id = job_path.rsplit('/').next().unwrap();
        let url = format!("/organizations/{ORG}/pushy/job_status_feed/{id}");
        let req = self
            .signed("GET", &url, "", ADMIN_USER)
            .header("accept", "text/event-stream")
            .body(Body::empty())
            .unwrap();
        let reply = self.send(req).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let mut out = Vec::new();
        let (mut name, mut has_id) = (String::new(), false);
        for line in reply.text.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                (name, has_id) = (n.to_owned(), false);
            } else if line.starts_with("id: ") {
                has_id = true;
            } else if let Some(d) = line.strip_prefix("data: ") {
                let data = serde_json::from_str(d).unwrap();
                out.push(FeedEvent {
                    name: name.clone(),
                    has_id,
                    data,
                });
            }
        }
        out
    }
}

pub fn authn_invalid() -> serde_json::Value {
    serde_json::json!({"error": ["Failed to authenticate as 'invalid'. Ensure that your node_name and client key are correct."]})
}

pub fn notassoc() -> serde_json::Value {
    serde_json::json!({"error": [format!("'{OUTSIDE_USER}' is not associated with organization '{ORG}'")]})
}

pub fn noaccess(who: &str) -> serde_json::Value {
    serde_json::json!({"error": [format!("User or client '{who}' does not have access to that action on this server.")]})
}

/// A throwaway PostgreSQL database on the local server, dropped on drop; `None` (with a
/// loud message) when no server is reachable.
pub struct PgDb {
    admin_url: String,
    pub name: String,
    pub url: String,
}

pub fn pg_admin_url() -> String {
    std::env::var("PUSHY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

impl PgDb {
    /// What a store connects with to reach this database.
    pub fn options(&self) -> pushy_server::store::PgConnectOptions {
        self.url.parse().expect("a PostgreSQL URL")
    }

    pub async fn create() -> Option<PgDb> {
        use sqlx::Connection as _;
        let admin_url = pg_admin_url();
        let mut conn = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => {
                // CI starts PostgreSQL (scripts/test): there a missing one is a failure.
                assert!(
                    std::env::var_os("CI").is_none(),
                    "PostgreSQL not reachable in CI"
                );
                eprintln!("SKIPPED: PostgreSQL not reachable at {admin_url}: {e}");
                return None;
            }
        };
        let mut r = [0u8; 6];
        openssl::rand::rand_bytes(&mut r).unwrap();
        let name = format!(
            "pushy_test_{}",
            r.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin_url.rsplit_once('/').unwrap().0;
        Some(PgDb {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // Drop runs outside any runtime guarantee; a short-lived thread with its own
        // runtime does the cleanup.
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection as _;
                if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut c)
                    .await;
                }
            });
        })
        .join();
    }
}

impl Reply {
    /// The `push_jobs.heartbeat` object a config from this server must carry.
    pub fn expected_heartbeat(&self) -> serde_json::Value {
        let p = self.ports.expect("a reply from the harness");
        serde_json::json!({
            "out_addr": format!("tcp://127.0.0.1:{}", p.heartbeat),
            "command_addr": format!("tcp://127.0.0.1:{}", p.command),
            "interval": 10.0,
            "offline_threshold": 3,
            "online_threshold": 2,
        })
    }
}
