use std::sync::{Arc, Mutex, OnceLock};

use openssl::pkey::Public;
use openssl::rsa::Rsa;
use pushy_protocol::chef_auth::{DEFAULT_CLOCK_SKEW, SignedHeaders, verify_signature};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

fn key() -> &'static PKey<Private> {
    static KEY: OnceLock<PKey<Private>> = OnceLock::new();
    KEY.get_or_init(|| PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey"))
}

fn public() -> PKey<Public> {
    PKey::public_key_from_pem(&key().public_key_to_pem().expect("pem")).expect("public key")
}

/// A request as it arrived: method, target, lower-cased headers in order, body.
#[derive(Debug)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn get(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// Whether the signature verifies with the test key under `version`.
    fn verifies(&self, version: ProtocolVersion) -> bool {
        let Ok(signed) =
            SignedHeaders::check(|n| self.get(n), chrono::Utc::now(), DEFAULT_CLOCK_SKEW)
        else {
            return false;
        };
        signed.version == version
            && verify_signature(&signed, &self.method, self.path(), &self.body, &public())
    }
}

/// A one-connection-at-a-time HTTP/1.1 server answering 200 `{"ok":true}` and keeping
/// what it was sent.
async fn server() -> (Url, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base =
        Url::parse(&format!("http://{}/", listener.local_addr().expect("addr"))).expect("url");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                let n = socket.read(&mut buf).await.expect("read");
                assert!(n > 0, "connection closed mid-request");
                raw.extend_from_slice(&buf[..n]);
                if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i;
                }
            };
            let head = String::from_utf8(raw[..head_end].to_vec()).expect("utf-8 head");
            let mut lines = head.split("\r\n");
            let mut start = lines.next().unwrap_or_default().split(' ');
            let (method, target) = (
                start.next().unwrap_or_default(),
                start.next().unwrap_or_default(),
            );
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(": "))
                .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().expect("length"));
            let mut body = raw[head_end + 4..].to_vec();
            while body.len() < length {
                let n = socket.read(&mut buf).await.expect("read");
                body.extend_from_slice(&buf[..n]);
            }
            log.lock().expect("lock").push(Seen {
                method: method.to_owned(),
                target: target.to_owned(),
                headers,
                body,
            });
            let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Test: yes\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}";
            socket.write_all(answer.as_bytes()).await.expect("write");
        }
    });
    (base, seen)
}

fn last(seen: &Mutex<Vec<Seen>>) -> Seen {
    seen.lock().expect("lock").pop().expect("a request arrived")
}

#[tokio::test]
async fn get_signed_with_1_1_sends_chefs_headers() {
    let (base, seen) = server().await;
    let client = Client::builder(base, "pivotal", key().clone(), ProtocolVersion::V1_1)
        .chef_version("11.1.0")
        .server_api_version("1")
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let url = client.url(&["organizations", "acme", "groups", "a/b c"]);
    let reply = client.get(url).read().await.expect("reply");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), r#"{"ok":true}"#);
    assert_eq!(reply.header("X-Test"), Some("yes"));
    let got = last(&seen);
    assert_eq!(got.method, "GET");
    assert_eq!(got.target, "/organizations/acme/groups/a%2Fb%20c");
    assert_eq!(got.get("Accept"), Some("application/json"));
    assert_eq!(got.get("X-Chef-Version"), Some("11.1.0"));
    assert_eq!(got.get("X-Ops-Server-API-Version"), Some("1"));
    assert_eq!(got.get("X-Ops-Userid"), Some("pivotal"));
    assert_eq!(got.get("Content-Type"), None);
    assert!(got.verifies(ProtocolVersion::V1_1), "{got:?}");
}

#[tokio::test]
async fn post_signed_with_1_3_hashes_the_body_and_signs_the_api_version() {
    let (base, seen) = server().await;
    let client = Client::builder(base, "alice", key().clone(), ProtocolVersion::V1_3)
        .server_api_version("1")
        .build()
        .expect("client");
    let body = br#"{"command":"chef-client","nodes":["n1"]}"#;
    client
        .post(client.url(&["organizations", "acme", "pushy", "jobs"]))
        .json(body.to_vec())
        .read()
        .await
        .expect("reply");
    let got = last(&seen);
    assert_eq!(got.method, "POST");
    assert_eq!(got.body, body);
    assert_eq!(got.get("Content-Type"), Some("application/json"));
    assert_eq!(got.get("X-Chef-Version"), None);
    assert_eq!(got.get("X-Ops-Server-API-Version"), Some("1"));
    assert_eq!(
        got.headers
            .iter()
            .filter(|(n, _)| n == "x-ops-server-api-version")
            .count(),
        1
    );
    assert!(got.verifies(ProtocolVersion::V1_3), "{got:?}");
}

#[tokio::test]
async fn put_signed_with_1_0_and_extra_headers() {
    let (base, seen) = server().await;
    let client = Client::builder(base, "node1", key().clone(), ProtocolVersion::V1_0)
        .user_agent("test/1")
        .build()
        .expect("client");
    let mut url = client.url(&["pushy", "x"]);
    url.query_pairs_mut().append_pair("q", "a b+c");
    client
        .put(url)
        .json(b"{}".to_vec())
        .accept("text/event-stream")
        .header("Last-Event-ID", "7")
        .read()
        .await
        .expect("reply");
    let got = last(&seen);
    assert_eq!(got.target, "/pushy/x?q=a+b%2Bc");
    assert_eq!(got.get("Accept"), Some("text/event-stream"));
    assert_eq!(got.get("Last-Event-ID"), Some("7"));
    assert_eq!(got.get("User-Agent"), Some("test/1"));
    assert_eq!(got.get("X-Ops-Server-API-Version"), None);
    assert!(got.verifies(ProtocolVersion::V1_0), "{got:?}");
}

#[tokio::test]
async fn unsigned_requests_carry_no_signature() {
    let (base, seen) = server().await;
    let client = Client::builder(base, "pivotal", key().clone(), ProtocolVersion::V1_3)
        .chef_version("11.1.0")
        .server_api_version("1")
        .build()
        .expect("client");
    client
        .get(client.url(&["_status"]))
        .unsigned()
        .read()
        .await
        .expect("reply");
    let got = last(&seen);
    assert_eq!(got.get("X-Ops-Userid"), None);
    assert_eq!(got.get("X-Ops-Sign"), None);
    assert_eq!(got.get("X-Chef-Version"), Some("11.1.0"));
    assert_eq!(got.get("X-Ops-Server-API-Version"), Some("1"));
}

#[tokio::test]
async fn a_closed_port_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base =
        Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
    drop(listener);
    let client = Client::builder(base.clone(), "a", key().clone(), ProtocolVersion::V1_1)
        .build()
        .expect("client");
    let err = client.get(base).send().await.expect_err("closed");
    assert!(
        matches!(&err, Error::Transport(e) if e.is_connect()),
        "{err:?}"
    );
}

#[test]
fn urls_append_segments_to_the_base_path() {
    let client = |base: &str| {
        Client::builder(
            Url::parse(base).expect("url"),
            "a",
            key().clone(),
            ProtocolVersion::V1_1,
        )
        .with_http(reqwest::Client::new())
    };
    assert_eq!(
        client("https://chef/organizations/o")
            .url(&["pushy", "jobs"])
            .as_str(),
        "https://chef/organizations/o/pushy/jobs"
    );
    assert_eq!(
        client("https://chef/organizations/o/")
            .url(&["n?#%"])
            .as_str(),
        "https://chef/organizations/o/n%3F%23%25"
    );
}

#[test]
fn components_keep_only_unreserved_characters() {
    assert_eq!(encode_component("node-1_a.b~c"), "node-1_a.b~c");
    assert_eq!(
        encode_component("a/b?c#d e+*:"),
        "a%2Fb%3Fc%23d%20e%2B%2A%3A"
    );
    assert_eq!(encode_component("é%"), "%C3%A9%25");
}

#[tokio::test]
async fn a_lazy_client_builds_its_pool_at_the_first_send_and_keeps_it() {
    let (base, seen) = server().await;
    let client = Client::builder(base, "alice", key().clone(), ProtocolVersion::V1_3)
        .user_agent("lazy/1")
        .build_lazy();
    let Http::Lazy(lazy) = &client.http else {
        panic!("build_lazy makes a lazy client");
    };
    // Signing alone builds nothing: a caller sending plain HTTP itself never pays for TLS.
    client.get(client.url(&["x"])).prepare().expect("signs");
    assert!(lazy.client.get().is_none(), "built before any send");
    for _ in 0..2 {
        client.get(client.url(&["x"])).read().await.expect("reply");
    }
    assert!(lazy.client.get().is_some(), "not kept after the first send");
    let got = last(&seen);
    assert_eq!(got.get("User-Agent"), Some("lazy/1"));
    assert!(got.verifies(ProtocolVersion::V1_3), "{got:?}");
}

#[tokio::test]
async fn prepare_gives_exactly_the_headers_send_sends() {
    let (base, seen) = server().await;
    let client = Client::builder(base, "alice", key().clone(), ProtocolVersion::V1_1)
        .chef_version("18.0.0")
        .server_api_version("1")
        .build()
        .expect("client");
    let request = || {
        client
            .post(client.url(&["pushy", "jobs"]))
            .json(r#"{"command":"x"}"#)
            .accept("text/plain")
            .header("Last-Event-ID", "7")
    };
    let prepared = request().prepare().expect("signs");
    request().read().await.expect("reply");
    let got = last(&seen);
    let names = |headers: &[(String, String)]| -> Vec<String> {
        headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .filter(|n| !matches!(n.as_str(), "host" | "content-length"))
            .collect()
    };
    assert_eq!(names(&prepared.headers), names(&got.headers));
    for (name, value) in &prepared.headers {
        // The signature carries its own time: only the others must match byte for byte.
        if !name.starts_with("X-Ops-Authorization")
            && name != "X-Ops-Timestamp"
            && name != "X-Ops-Content-Hash"
        {
            assert_eq!(got.get(name), Some(value.as_str()), "{name}");
        }
    }
    assert_eq!(prepared.body.as_deref(), Some(got.body.as_slice()));
    assert_eq!(prepared.method, Method::POST);
}
