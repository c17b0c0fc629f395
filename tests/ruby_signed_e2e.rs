//! End to end over HTTP against the real server binary: requests signed by the real Ruby
//! signer (mixlib-authentication, protocols 1.0, 1.1 and 1.3) for a user and a client are
//! accepted on both stores, and each kind of bad request gets its documented answer.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The server binary, running until dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(config: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_opscode-pushy-server"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the server binary");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server printed its address");
    Server { child, base }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("protocol/tests/fixtures/chef_sign")
        .join(name)
}

/// Signs with the real Ruby signer; `timestamp` overrides "now".
fn ruby_sign(
    key: &Path,
    method: &str,
    path: &str,
    body: &str,
    user: &str,
    version: &str,
    timestamp: Option<&str>,
) -> Vec<(String, String)> {
    let mut req = json!({"key_path": key, "method": method, "path": path, "body": body, "user_id": user, "version": version});
    if let Some(t) = timestamp {
        req["timestamp"] = t.into();
    }
    let mut child = Command::new("ruby")
        .arg("-ropenssl")
        .arg(fixture("sign.rb"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ruby is needed for this test: apt-get install ruby ruby-mixlib-authentication (scripts/test does it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sign.rb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    headers
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap().to_owned()))
        .collect()
}

struct Reply {
    status: u16,
    www_authenticate: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn send(
    base: &str,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(String, String)],
) -> Reply {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut rb = client
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .header("Accept", "application/json");
    for (k, v) in headers {
        rb = rb.header(k, v);
    }
    if method == "POST" {
        rb = rb
            .header("Content-Type", "application/json")
            .body(body.to_owned());
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let www_authenticate = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    Reply {
        status,
        www_authenticate,
        body: resp.text().await.unwrap(),
    }
}

const JOB: &str =
    r#"{"command":"chef-client","nodes":["node1","node2"],"capture_output":true,"env":{"A":"1"}}"#;
const CCPK: &str = "1234567890123456789012345678901234567890";

async fn exercise(tmp: &Path, server: &Server) {
    let base = &server.base;
    let jobs = format!("/organizations/{ORG}/pushy/jobs");
    for version in ["1.0", "1.1", "1.3"] {
        for (who, kind) in [(ADMIN_USER, "user"), (ADMIN_CLIENT, "client")] {
            let key = tmp.join(format!("{who}.pem"));
            let ctx = format!("{version} {kind}");

            let h = ruby_sign(&key, "POST", &jobs, JOB, who, version, None);
            let r = send(base, "POST", &jobs, JOB, &h).await;
            assert_eq!(r.status, 201, "{ctx}: {}", r.body);
            let uri = r.json()["uri"].as_str().unwrap().to_owned();
            let job_path = uri.split_once(base.as_str()).unwrap().1.to_owned();

            let h = ruby_sign(&key, "GET", &job_path, "", who, version, None);
            let r = send(base, "GET", &job_path, "", &h).await;
            assert_eq!(r.status, 200, "{ctx}: {}", r.body);
            let job = r.json();
            assert_eq!(job["command"], "chef-client");
            assert_eq!(job["status"], "quorum_failed");
            assert_eq!(job["nodes"], json!({"unavailable": ["node1", "node2"]}));
            assert_eq!(job["env"], json!({"A": "1"}));
            assert_eq!(job["capture_output"], true);

            let states = format!("/organizations/{ORG}/pushy/node_states");
            let h = ruby_sign(&key, "GET", &states, "", who, version, None);
            assert_eq!(
                send(base, "GET", &states, "", &h).await.status,
                200,
                "{ctx}"
            );

            // A client fetches its own config; the query is not part of the signed path.
            let config = format!("/organizations/{ORG}/pushy/config/{who}?ccpk={CCPK}");
            let h = ruby_sign(&key, "GET", &config, "", who, version, None);
            let r = send(base, "GET", &config, "", &h).await;
            assert_eq!(r.status, 200, "{ctx}: {}", r.body);
            assert_eq!(r.json()["node"], who);
        }
    }
}

async fn bad_requests(tmp: &Path, server: &Server) {
    let base = &server.base;
    let jobs = format!("/organizations/{ORG}/pushy/jobs");
    let admin_key = tmp.join(format!("{ADMIN_USER}.pem"));

    // Wrong key: signed by admin_user's name with another principal's key.
    let h = ruby_sign(
        &tmp.join(format!("{NORMAL_USER}.pem")),
        "GET",
        &jobs,
        "",
        ADMIN_USER,
        "1.1",
        None,
    );
    let r = send(base, "GET", &jobs, "", &h).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"error": [format!("Invalid signature for user or client '{ADMIN_USER}'")]})
    );
    assert_eq!(
        r.www_authenticate.as_deref(),
        Some("X-Ops-Sign version=\"1.0\" version=\"1.1\"")
    );

    // Stale timestamp: an hour old.
    let old = (chrono::Utc::now() - chrono::TimeDelta::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let h = ruby_sign(&admin_key, "GET", &jobs, "", ADMIN_USER, "1.3", Some(&old));
    let r = send(base, "GET", &jobs, "", &h).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"error": [format!("Failed to authenticate as {ADMIN_USER}. Synchronize the clock on your host.")]})
    );

    // Missing headers.
    let h: Vec<_> = ruby_sign(&admin_key, "GET", &jobs, "", ADMIN_USER, "1.0", None)
        .into_iter()
        .filter(|(k, _)| k != "X-Ops-Timestamp" && k != "X-Ops-Sign")
        .collect();
    let r = send(base, "GET", &jobs, "", &h).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": ["missing required authentication header(s) 'X-Ops-Timestamp', 'X-Ops-Sign'"]})
    );

    // Unknown user.
    let h = ruby_sign(
        &tmp.join(format!("{INVALID_USER}.pem")),
        "GET",
        &jobs,
        "",
        INVALID_USER,
        "1.0",
        None,
    );
    let r = send(base, "GET", &jobs, "", &h).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), authn_invalid());

    // Non-member.
    let h = ruby_sign(
        &tmp.join(format!("{OUTSIDE_USER}.pem")),
        "GET",
        &jobs,
        "",
        OUTSIDE_USER,
        "1.0",
        None,
    );
    let r = send(base, "GET", &jobs, "", &h).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json(), notassoc());

    // Bad JSON.
    let h = ruby_sign(
        &admin_key,
        "POST",
        &jobs,
        "{not json",
        ADMIN_USER,
        "1.3",
        None,
    );
    let r = send(base, "POST", &jobs, "{not json", &h).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": "invalid JSON"}));

    // Oversize body.
    let big = format!(
        r#"{{"command":"x","nodes":["a"],"dir":"{}"}}"#,
        "d".repeat(1_000_000)
    );
    let h = ruby_sign(&admin_key, "POST", &jobs, &big, ADMIN_USER, "1.3", None);
    let r = send(base, "POST", &jobs, &big, &h).await;
    assert_eq!(r.status, 413);
    assert_eq!(
        r.json(),
        json!({"error": "JSON must be no more than 1000000 bytes."})
    );
}

fn write_config(tmp: &Path, database: &str) -> PathBuf {
    let path = tmp.join("server.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(
        f,
        "data_dir = {:?}\n[pushy]\nzeromq_listen_address = \"tcp://127.0.0.1\"\nserver_heartbeat_port = 0\ncommand_port = 0\n{database}",
        tmp.to_str().unwrap()
    )
    .unwrap();
    path
}

#[tokio::test]
async fn ruby_signed_requests_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    populate(tmp.path());
    let server = start_server(&write_config(tmp.path(), "[database]\nengine = \"sqlite\""));
    exercise(tmp.path(), &server).await;
    bad_requests(tmp.path(), &server).await;
}

#[tokio::test]
async fn ruby_signed_requests_on_postgresql() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let url = reqwest::Url::parse(&db.url).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    populate(tmp.path());
    let database = format!(
        "[database]\nengine = \"postgresql\"\nhost = {:?}\nport = {}\nuser = {:?}\npassword = {:?}\nname = {:?}\npool_size = 4",
        url.host_str().unwrap(),
        url.port().unwrap_or(5432),
        url.username(),
        url.password().unwrap_or(""),
        db.name
    );
    let server = start_server(&write_config(tmp.path(), &database));
    exercise(tmp.path(), &server).await;
    bad_requests(tmp.path(), &server).await;
}
