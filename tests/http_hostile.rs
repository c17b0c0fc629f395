//! Hostile or careless HTTP clients (issue 12 §4): slow heads and bodies, more
//! connections than the server will serve, bodies that would fill memory before their
//! signature is checked, made-up methods and paths inflating `/metrics`, names no file
//! can hold, and GETs with bodies. Real sockets on 127.0.0.1 where the socket matters.
//!
//! No assertion depends on timing: timeouts are configured short so the tests are quick,
//! and every wait on the server is bounded by a generous safety limit that only a broken
//! server reaches.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use chrono::Utc;
use common::*;
use pushy_protocol::chef_auth::{ProtocolVersion, format_timestamp, sign_request};
use pushy_server::config::Config;
use pushy_server::store::SqliteStore;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long a test waits for something the server must do; reaching it is a failure.
const SAFETY: Duration = Duration::from_secs(10);

const JOB: &str = r#"{"command":"sleep 1","nodes":["DONKEY"]}"#;

fn jobs_path() -> String {
    format!("/organizations/{ORG}/pushy/jobs")
}

fn node_states_path() -> String {
    format!("/organizations/{ORG}/pushy/node_states")
}

/// A harness whose API also listens on a real socket; returns it and the address.
async fn serve(tweak: impl FnOnce(&mut Config)) -> (Harness, String) {
    let store = Arc::new(SqliteStore::in_memory().await.unwrap());
    let h = Harness::with_store(store, tweak).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(pushy_server::run(h.state.clone(), listener));
    (h, addr)
}

/// Value of the metric line that starts with `series` (exactly, up to the value).
fn metric(h: &Harness, series: &str) -> Option<f64> {
    h.state.metrics.render().lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Polls until `series` reads `want` (bounded by [`SAFETY`]).
async fn wait_for_metric(h: &Harness, series: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + SAFETY;
    while metric(h, series) != Some(want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never reached {want} (now {:?})",
            metric(h, series)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The head of a request as raw HTTP/1.1 text, signed by `who` over `body`.
fn signed_head(h: &Harness, method: &str, path: &str, body: &str, who: &str) -> String {
    let req = h.signed(method, path, body, who).body(()).unwrap();
    raw_head(&req, body.len())
}

fn raw_head<T>(req: &Request<T>, content_length: usize) -> String {
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method(), req.uri());
    for (k, v) in req.headers() {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    head.push_str(&format!(
        "Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
    ));
    head
}

/// Reads until the server closes; the status code of what came, `None` for nothing.
async fn read_reply(stream: &mut TcpStream) -> (Option<u16>, String) {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(SAFETY, stream.read_to_end(&mut buf))
        .await
        .expect("the server answers or closes");
    // A reset after the answer is fine: what was read still counts.
    let _ = read;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|s| s.parse().ok());
    (status, text)
}

#[tokio::test]
async fn a_request_head_that_does_not_arrive_in_time_closes_the_connection() {
    let (h, addr) = serve(|c| c.pushy.http_header_timeout = 200).await;
    // Half a request line, half a head, and nothing at all.
    let partial = [
        "GET /pushy/_st",
        "GET /pushy/_status HTTP/1.1\r\nHost: x\r\n",
        "",
    ];
    let mut streams = Vec::new();
    for bytes in partial {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(bytes.as_bytes()).await.unwrap();
        streams.push(s);
    }
    for s in &mut streams {
        let (status, text) = read_reply(s).await;
        assert_eq!(status, None, "closed without an answer: {text}");
    }
    wait_for_metric(&h, "pushy_http_read_timeouts_total{phase=\"header\"}", 3.0).await;
    wait_for_metric(&h, "pushy_http_connections_open", 0.0).await;

    // A client that keeps up is served as usual.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /pushy/_status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_reply(&mut s).await.0, Some(200));
}

#[tokio::test]
async fn an_oversize_request_head_is_431() {
    let (_h, addr) = serve(|_| {}).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let filler = "x".repeat(100_000);
    let head = format!("GET /pushy/_status HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n\r\n");
    // The server may stop reading before the whole head is written; closing with bytes
    // unread resets the connection, which can discard the 431 before it is read. Either
    // way the head is refused (hyper's default limit, ~400 KB, served it: 200).
    let _ = s.write_all(head.as_bytes()).await;
    let (status, text) = read_reply(&mut s).await;
    assert!(matches!(status, Some(431) | None), "{text}");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    let (h, addr) = serve(|c| c.pushy.http_body_timeout = 200).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let head = signed_head(&h, "POST", &jobs_path(), JOB, ADMIN_USER);
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&JOB.as_bytes()[..10]).await.unwrap();
    let (status, text) = read_reply(&mut s).await;
    assert_eq!(status, Some(408), "{text}");
    assert!(
        text.ends_with(r#"{"error":["Request body not received in time"]}"#),
        "{text}"
    );
    assert_eq!(
        metric(&h, "pushy_http_read_timeouts_total{phase=\"body\"}"),
        Some(1.0)
    );

    // The whole body in time is a job.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let head = signed_head(&h, "POST", &jobs_path(), JOB, ADMIN_USER);
    s.write_all(format!("{head}{JOB}").as_bytes())
        .await
        .unwrap();
    let (status, text) = read_reply(&mut s).await;
    assert_eq!(status, Some(201), "{text}");
}

#[tokio::test]
async fn connections_past_the_cap_wait_for_a_free_slot() {
    let (h, addr) = serve(|c| c.pushy.http_max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /pushy/_status HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    wait_for_metric(&h, "pushy_http_connections_open", 2.0).await;

    // A third connection is not served while both slots are taken...
    let mut third = TcpStream::connect(&addr).await.unwrap();
    third
        .write_all(b"GET /pushy/_status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
    assert!(early.is_err(), "answered past the cap: {early:?}");
    assert!(metric(&h, "pushy_http_connection_waits_total").unwrap() >= 1.0);
    assert_eq!(metric(&h, "pushy_http_connections_open"), Some(2.0));

    // ...and is served as soon as one frees.
    drop(held.pop());
    let (status, text) = read_reply(&mut third).await;
    assert_eq!(status, Some(200), "{text}");
}

#[tokio::test]
async fn bodies_in_flight_share_a_bounded_amount_of_memory() {
    let (h, addr) = serve(|c| {
        c.pushy.max_request_size = 100_000;
        c.pushy.http_body_memory = 100_000;
    })
    .await;
    // An unknown principal starts a near-limit body and stalls.
    let filler = "x".repeat(99_990);
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    let head = signed_head(&h, "POST", &jobs_path(), &"x".repeat(100_000), INVALID_USER);
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(filler.as_bytes()).await.unwrap();
    wait_for_metric(&h, "pushy_http_body_bytes", 99_990.0).await;

    // The budget is spent: a legitimate job is refused at once, not buffered.
    let r = h.call("POST", &jobs_path(), JOB, ADMIN_USER).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": ["Too many request bodies in progress; retry later"]})
    );
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(
        metric(&h, "pushy_http_body_memory_refusals_total"),
        Some(1.0)
    );

    // Once the stalled body is gone, so is its share.
    drop(stalled);
    wait_for_metric(&h, "pushy_http_body_bytes", 0.0).await;
    let r = h.call("POST", &jobs_path(), JOB, ADMIN_USER).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn an_announced_oversize_body_is_413_before_it_is_sent() {
    let (h, addr) = serve(|_| {}).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let big = "x".repeat(1_000_001);
    // Only the head goes out: the answer must not wait for the body.
    let head = signed_head(&h, "POST", &jobs_path(), &big, ADMIN_USER);
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, text) = read_reply(&mut s).await;
    assert_eq!(status, Some(413), "{text}");
    assert!(
        text.ends_with(r#"{"error":"JSON must be no more than 1000000 bytes."}"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_get_with_a_large_body_is_not_413() {
    let h = Harness::new().await;
    let big = "x".repeat(2_000_000);
    // http.md §1.2 step 4.2: the size limit is for POST and PUT. The signature still
    // covers the body, as in the original.
    let r = h.call("GET", &node_states_path(), &big, ADMIN_USER).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        h.state.metrics.http_body_bytes.get(),
        0,
        "a GET's body is never held"
    );
    let signed_empty = h
        .signed("GET", &node_states_path(), "", ADMIN_USER)
        .body(Body::from(big))
        .unwrap();
    let r = h.send(signed_empty).await;
    assert_eq!(r.status, 401, "{}", r.text);
    // POST keeps its limit.
    let r = h
        .call("POST", &jobs_path(), &"x".repeat(1_000_001), ADMIN_USER)
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
}

#[tokio::test]
async fn made_up_methods_and_paths_do_not_grow_the_metrics() {
    let h = Harness::new().await;
    let before = h.state.metrics.render().len();
    for i in 0..200 {
        let method = format!("M{i:04}");
        for path in ["/pushy/_status".to_owned(), format!("/made/up/{i}")] {
            let req = Request::builder()
                .method(method.as_str())
                .uri(&path)
                .body(Body::empty())
                .unwrap();
            h.send(req).await;
        }
    }
    let text = h.state.metrics.render();
    assert!(!text.contains("M0001"), "a method became a label");
    assert!(!text.contains("/made/up"), "a path became a label");
    let mut series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("pushy_http_requests_total{"))
        .collect();
    series.sort_unstable();
    assert_eq!(
        series,
        [
            "pushy_http_requests_total{route=\"/pushy/_status\",method=\"other\",status=\"501\"} 200",
            "pushy_http_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"} 200",
        ],
    );
    assert!(text.len() < before + 8192, "{} -> {}", before, text.len());

    // Standard methods keep their own label.
    h.call("GET", &node_states_path(), "", ADMIN_USER).await;
    let text = h.state.metrics.render();
    assert!(
        text.contains("pushy_http_requests_total{route=\"/organizations/{org}/pushy/node_states\",method=\"GET\",status=\"200\"} 1"),
        "{text}"
    );
}

/// A request signed with `key_of`'s key but naming `user_id` as the requestor.
fn signed_as(h: &Harness, path: &str, user_id: &str, key_of: &str) -> Request<Body> {
    let ts = format_timestamp(Utc::now());
    let req = pushy_protocol::chef_auth::Request {
        method: "GET",
        path,
        body: b"",
        user_id,
        timestamp: &ts,
        server_api_version: None,
    };
    let mut b = Request::builder().method("GET").uri(path);
    for (k, v) in sign_request(&h.key(key_of), ProtocolVersion::V1_1, &req).unwrap() {
        b = b.header(k, v);
    }
    b.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn names_no_file_can_hold_are_unknown_not_500() {
    let h = Harness::new().await;
    for len in [255, 256, 1000] {
        let org = "o".repeat(len);
        let path = format!("/organizations/{org}/pushy/node_states");
        let r = h.send(signed_as(&h, &path, ADMIN_USER, ADMIN_USER)).await;
        r.expect(
            404,
            serde_json::json!({"error": [format!("organization '{org}' does not exist.")]}),
        );

        let user = "u".repeat(len);
        let r = h
            .send(signed_as(&h, &node_states_path(), &user, INVALID_USER))
            .await;
        r.expect(
            401,
            serde_json::json!({"error": [format!("Failed to authenticate as '{user}'. Ensure that your node_name and client key are correct.")]}),
        );
        assert!(r.headers.contains_key("www-authenticate"));
    }
}

#[tokio::test]
async fn names_cannot_leave_the_key_directory() {
    let h = Harness::new().await;
    // Percent-encoded in the path, these decode to `..`, `a/b` and a NUL.
    for org in ["%2E%2E", "..%2Fpedant", "pedant%00", "%2E"] {
        let path = format!("/organizations/{org}/pushy/node_states");
        let r = h.send(signed_as(&h, &path, ADMIN_USER, ADMIN_USER)).await;
        assert_eq!(r.status, 404, "{org}: {}", r.text);
    }
    for user in [
        "..",
        "../users/admin_user",
        "admin_user/../admin_user",
        "..\\admin_user",
        "../pedant/clients/admin_client",
    ] {
        let r = h
            .send(signed_as(&h, &node_states_path(), user, ADMIN_USER))
            .await;
        assert_eq!(r.status, 401, "{user}: {}", r.text);
    }
}
