//! Which error wins when several apply (http.md §1.2 pipeline order, §8.1 item 7, §8.4
//! item 31), path clean-up, content negotiation, the security fixes of §8.2 and §8.4
//! item 33, the config document's exact shape (§1.4.1) and a finished job's SSE feed
//! (§3, §8.6 items 42–43).

mod common;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use chrono::{TimeDelta, Utc};
use common::*;
use openssl::rsa::Padding;
use pushy_protocol::chef_auth::{ProtocolVersion, format_timestamp, sign_request};
use pushy_server::channel::decode_ccpk;
use serde_json::{Value, json};

const CCPK: &str = "1234567890123456789012345678901234567890";
const JOB: &str = r#"{"command":"sleep 1","nodes":["DONKEY"]}"#;
const WWW_AUTHENTICATE: &str = r#"X-Ops-Sign version="1.0" version="1.1""#;
const NO_SUCH_JOB: &str = "abcdefabcdef807f32d9572f8aafbd03";

fn jobs_url() -> String {
    format!("/organizations/{ORG}/pushy/jobs")
}

fn config_url(node: &str) -> String {
    format!("/organizations/{ORG}/pushy/config/{node}?ccpk={CCPK}")
}

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

fn unsigned(method: &str, path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("Host", "push.example.com")
        .body(body.into())
        .unwrap()
}

/// Signed by `who` at timestamp `ts` (protocol 1.0), for timestamp variations.
fn signed_at(h: &Harness, method: &str, path: &str, who: &str, ts: &str) -> Request<Body> {
    let req = pushy_protocol::chef_auth::Request {
        method,
        path,
        body: b"",
        user_id: who,
        timestamp: ts,
        server_api_version: None,
    };
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("Host", "push.example.com");
    for (k, v) in sign_request(&h.key(who), ProtocolVersion::V1_0, &req).unwrap() {
        b = b.header(k, v);
    }
    b.body(Body::empty()).unwrap()
}

fn missing_all() -> Value {
    json!({"error": ["missing required authentication header(s) 'X-Ops-UserId', 'X-Ops-Timestamp', 'X-Ops-Sign', 'X-Ops-Content-Hash'"]})
}

/// A JOB body padded with trailing whitespace (still valid JSON) to exactly `len` bytes.
fn padded_job(len: usize) -> String {
    format!("{JOB}{}", " ".repeat(len - JOB.len()))
}

// ---- Method before everything ---------------------------------------------------------

/// §1.2 steps 2–3: 405 (with `Allow`) and 501 come before authentication and before
/// the org is looked up; HEAD and OPTIONS are in no allowed list.
#[tokio::test]
async fn method_errors_come_before_authentication() {
    let h = Harness::new().await;
    let job = format!("{}/{NO_SUCH_JOB}", jobs_url());
    let cases: Vec<(&str, String, &str)> = vec![
        ("PUT", job.clone(), "GET"),
        ("DELETE", job.clone(), "GET"),
        ("POST", job.clone(), "GET"),
        ("PUT", jobs_url(), "POST, GET"),
        (
            "DELETE",
            "/organizations/bogus-org/pushy/jobs".into(),
            "POST, GET",
        ),
        ("HEAD", jobs_url(), "POST, GET"),
        ("HEAD", job.clone(), "GET"),
        ("HEAD", "/pushy/_status".into(), "GET"),
        (
            "OPTIONS",
            format!("/organizations/{ORG}/pushy/node_states"),
            "GET",
        ),
        ("HEAD", config_url("DONKEY"), "GET"),
        (
            "POST",
            format!("/organizations/{ORG}/pushy/job_status_feed/{NO_SUCH_JOB}"),
            "GET",
        ),
        ("PUT", format!("{job}/output/DONKEY/stdout"), "GET"),
    ];
    for (method, path, allow) in cases {
        let r = h.send(unsigned(method, &path, Body::empty())).await;
        assert_eq!(r.status, 405, "{method} {path}: {}", r.text);
        assert_eq!(header(&r, "allow"), Some(allow), "{method} {path}");
        if method != "HEAD" {
            assert!(r.json()["error"].is_array(), "{}", r.text);
        }
    }
    for method in ["PATCH", "PROPFIND"] {
        let r = h.send(unsigned(method, &job, Body::empty())).await;
        assert_eq!(r.status, 501, "{method}: {}", r.text);
    }
    // Unsigned GET: the header check.
    h.send(unsigned("GET", &job, Body::empty()))
        .await
        .expect(400, missing_all());
}

// ---- Malformed stage ------------------------------------------------------------------

/// §1.2 step 4: missing headers (400) win over an oversize body (413).
#[tokio::test]
async fn missing_headers_with_oversize_body_is_400() {
    let h = Harness::new().await;
    let big = padded_job(1_000_001);
    h.send(unsigned("POST", &jobs_url(), big.clone()))
        .await
        .expect(400, missing_all());
    // Only the missing ones are named, in the fixed order.
    let req = Request::builder()
        .method("POST")
        .uri(jobs_url())
        .header("X-Ops-Userid", ADMIN_USER)
        .header("X-Ops-Sign", "version=1.0")
        .header("X-Ops-Timestamp", "")
        .body(Body::from(big))
        .unwrap();
    let r = h.send(req).await;
    r.expect(400, json!({"error": ["missing required authentication header(s) 'X-Ops-Timestamp', 'X-Ops-Content-Hash'"]}));
}

/// §1.3.3: more than 1,000,000 bytes is 413 (string-shaped body) before validation and
/// authentication; exactly 1,000,000 is accepted.
#[tokio::test]
async fn oversize_body_is_413_and_exactly_the_limit_is_accepted() {
    let h = Harness::new().await;
    let too_big = json!({"error": "JSON must be no more than 1000000 bytes."});
    let big = padded_job(1_000_001);
    h.call("POST", &jobs_url(), &big, ADMIN_USER)
        .await
        .expect(413, too_big.clone());
    h.call("POST", &jobs_url(), &big, INVALID_USER)
        .await
        .expect(413, too_big.clone());
    let garbage = "x".repeat(1_000_001);
    h.call("POST", &jobs_url(), &garbage, ADMIN_USER)
        .await
        .expect(413, too_big.clone());
    let file = format!(
        r#"{{"command":"x","nodes":["DONKEY"],"file":"raw:{}"}}"#,
        "X".repeat(1_000_000)
    );
    h.call("POST", &jobs_url(), &file, ADMIN_USER)
        .await
        .expect(413, too_big);
    // A PUT with a big body is still a 405 first.
    let r = h
        .call(
            "PUT",
            &format!("{}/{NO_SUCH_JOB}", jobs_url()),
            &big,
            ADMIN_USER,
        )
        .await;
    assert_eq!(r.status, 405, "{}", r.text);

    let exact = padded_job(1_000_000);
    assert_eq!(exact.len(), 1_000_000);
    let r = h.call("POST", &jobs_url(), &exact, ADMIN_USER).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// §8.1 item 6: job validation is in the malformed stage, before the signature.
#[tokio::test]
async fn invalid_job_body_is_400_before_authentication() {
    let h = Harness::new().await;
    for who in [
        ADMIN_USER,
        INVALID_USER,
        BAD_CLIENT,
        OUTSIDE_USER,
        NORMAL_USER,
    ] {
        let r = h.call("POST", &jobs_url(), "not json", who).await;
        r.expect(400, json!({"error": "invalid JSON"}));
        let r = h.call("POST", &jobs_url(), r#"{"nodes":["A"]}"#, who).await;
        r.expect(400, json!({"error": "invalid command supplied"}));
    }
}

/// §1.3.1: timestamp errors are 401s raised as halts, without `WWW-Authenticate`.
#[tokio::test]
async fn bad_timestamp_is_401_without_www_authenticate() {
    let h = Harness::new().await;
    let url = format!("/organizations/{ORG}/pushy/node_states");
    let bad = json!({"error": ["bad header(s) 'X-Ops-Timestamp'"]});
    let now = Utc::now();
    for ts in [
        "xxx",
        "2020-05-12T02:30:37.5Z",
        "2020-05-12T02:30:37+00:00",
        "2020-13-12T02:30:37Z",
    ] {
        let r = h.send(signed_at(&h, "GET", &url, ADMIN_USER, ts)).await;
        r.expect(401, bad.clone());
        assert_eq!(header(&r, "www-authenticate"), None, "{ts}");
    }
    let skew = json!({"error": ["Failed to authenticate as admin_user. Synchronize the clock on your host."]});
    for delta in [
        TimeDelta::hours(-1),
        TimeDelta::hours(1),
        TimeDelta::seconds(-905),
    ] {
        let ts = format_timestamp(now + delta);
        let r = h.send(signed_at(&h, "GET", &url, ADMIN_USER, &ts)).await;
        r.expect(401, skew.clone());
        assert_eq!(header(&r, "www-authenticate"), None, "{ts}");
    }
    // §2.2 step 2: no `Z` is fine; −30 s is within the window.
    let ts = now.format("%Y-%m-%dT%H:%M:%S").to_string();
    h.send(signed_at(&h, "GET", &url, ADMIN_USER, &ts))
        .await
        .expect(200, json!([]));
    let ts = format_timestamp(now - TimeDelta::seconds(30));
    h.send(signed_at(&h, "GET", &url, ADMIN_USER, &ts))
        .await
        .expect(200, json!([]));
}

/// §1.3.1: unsupported signing descriptions are 400s.
#[tokio::test]
async fn unsupported_sign_version_is_400() {
    let h = Harness::new().await;
    let url = format!("/organizations/{ORG}/pushy/node_states");
    for sign in [
        "version=8.1",
        "algorithm=sha1; version=1.0",
        "algorithm=sha1;version=1.3",
        "algorithm=sha256;version=1.0",
        "algorithm=sha1",
    ] {
        let mut b = h.signed("GET", &url, "", ADMIN_USER);
        b.headers_mut()
            .unwrap()
            .insert("x-ops-sign", sign.parse().unwrap());
        let r = h.send(b.body(Body::empty()).unwrap()).await;
        r.expect(
            400,
            json!({"error": ["Unsupported authentication protocol version"]}),
        );
    }
    // Every version the server accepts verifies.
    for v in [
        ProtocolVersion::V1_0,
        ProtocolVersion::V1_1,
        ProtocolVersion::V1_2,
        ProtocolVersion::V1_3,
    ] {
        let b = h.signed_with("GET", &url, "", ADMIN_USER, v);
        h.send(b.body(Body::empty()).unwrap())
            .await
            .expect(200, json!([]));
    }
}

// ---- Authentication stage -------------------------------------------------------------

/// §1.3.2: authentication-stage 401s carry `WWW-Authenticate`.
#[tokio::test]
async fn bad_signature_is_401_with_www_authenticate() {
    let h = Harness::new().await;
    let url = format!("/organizations/{ORG}/pushy/node_states");
    let r = h.call("GET", &url, "", BAD_CLIENT).await;
    r.expect(
        401,
        json!({"error": ["Invalid signature for user or client 'bad_client'"]}),
    );
    assert_eq!(header(&r, "www-authenticate"), Some(WWW_AUTHENTICATE));
    let r = h.call("GET", &url, "", INVALID_USER).await;
    r.expect(401, authn_invalid());
    assert_eq!(header(&r, "www-authenticate"), Some(WWW_AUTHENTICATE));
    // A good request has none.
    let r = h.call("GET", &url, "", ADMIN_USER).await;
    assert_eq!(header(&r, "www-authenticate"), None);
}

/// §1.3.2: an unknown org is a 404 with a message, before the principal is looked up.
#[tokio::test]
async fn unknown_org_is_404_with_message() {
    let h = Harness::new().await;
    let body = json!({"error": ["organization 'bogus-org' does not exist."]});
    let urls = [
        "/organizations/bogus-org/pushy/jobs".to_owned(),
        format!("/organizations/bogus-org/pushy/jobs/{NO_SUCH_JOB}"),
        "/organizations/bogus-org/pushy/node_states".to_owned(),
        format!("/organizations/bogus-org/pushy/config/DONKEY?ccpk={CCPK}"),
        format!("/organizations/bogus-org/pushy/job_status_feed/{NO_SUCH_JOB}"),
    ];
    for url in &urls {
        for who in [ADMIN_USER, INVALID_USER, OUTSIDE_USER] {
            let r = h.call("GET", url, "", who).await;
            r.expect(404, body.clone());
            assert_eq!(
                header(&r, "content-type"),
                Some("application/json"),
                "{url}"
            );
        }
    }
    h.call(
        "POST",
        "/organizations/bogus-org/pushy/jobs",
        JOB,
        ADMIN_USER,
    )
    .await
    .expect(404, body);
}

/// §8.4 item 31: membership is checked before the signature.
#[tokio::test]
async fn outside_user_with_bad_signature_is_403() {
    let h = Harness::new().await;
    let url = format!("/organizations/{ORG}/pushy/node_states");
    let mut b = h.signed("GET", &url, "", OUTSIDE_USER);
    b.headers_mut()
        .unwrap()
        .insert("x-ops-authorization-1", "xxxx".parse().unwrap());
    h.send(b.body(Body::empty()).unwrap())
        .await
        .expect(403, notassoc());
    // Signed with another key altogether.
    let mut b = h.signed("GET", &url, "", INVALID_USER);
    b.headers_mut()
        .unwrap()
        .insert("x-ops-userid", OUTSIDE_USER.parse().unwrap());
    h.send(b.body(Body::empty()).unwrap())
        .await
        .expect(403, notassoc());
}

// ---- Authorization, negotiation, existence --------------------------------------------

/// §8.1 item 7: authorization (403) before content negotiation (406) before existence
/// (404).
#[tokio::test]
async fn non_reader_gets_403_not_404_for_a_nonexistent_job() {
    let h = Harness::new().await;
    h.set_group("pushy_job_readers", &[NORMAL_USER], &[], &[]);
    let url = format!("{}/{NO_SUCH_JOB}", jobs_url());
    h.call("GET", &url, "", ADMIN_USER)
        .await
        .expect(403, noaccess(ADMIN_USER));
    let r = h.call("GET", &url, "", NORMAL_USER).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let html = |who| {
        let mut b = h.signed("GET", &url, "", who);
        b.headers_mut()
            .unwrap()
            .insert("accept", "text/html".parse().unwrap());
        h.send(b.body(Body::empty()).unwrap())
    };
    html(ADMIN_USER).await.expect(403, noaccess(ADMIN_USER));
    let r = html(NORMAL_USER).await;
    assert_eq!(r.status, 406, "{}", r.text);
    // The same order for output and feeds.
    let feed = format!("/organizations/{ORG}/pushy/job_status_feed/{NO_SUCH_JOB}");
    let out = format!("{url}/output/DONKEY/stdout");
    for u in [feed, out] {
        h.call("GET", &u, "", ADMIN_USER)
            .await
            .expect(403, noaccess(ADMIN_USER));
        let r = h.call("GET", &u, "", NORMAL_USER).await;
        assert_eq!(r.status, 404, "{u}: {}", r.text);
    }
}

/// §1.2 step 7: a missing `Accept` is acceptable; one that admits nothing JSON is 406.
#[tokio::test]
async fn job_get_with_wrong_accept_is_406() {
    let h = Harness::new().await;
    let job = h.create_job(JOB, ADMIN_USER).await;
    let get = |accept: Option<&'static str>| {
        let mut b = h.signed("GET", &job, "", ADMIN_USER);
        if let Some(a) = accept {
            b.headers_mut()
                .unwrap()
                .insert("accept", a.parse().unwrap());
        }
        h.send(b.body(Body::empty()).unwrap())
    };
    for accept in [
        Some("text/html"),
        Some("application/octet-stream"),
        Some("application/json;q=0"),
        Some("text/event-stream"),
    ] {
        let r = get(accept).await;
        assert_eq!(r.status, 406, "{accept:?}: {}", r.text);
        assert!(r.json()["error"].is_array(), "{}", r.text);
    }
    for accept in [
        None,
        Some("application/json"),
        Some("*/*"),
        Some("application/*"),
        Some("text/html, application/json;q=0.5"),
    ] {
        let r = get(accept).await;
        assert_eq!(r.status, 200, "{accept:?}: {}", r.text);
        assert_eq!(header(&r, "content-type"), Some("application/json"));
    }
    let r = h
        .send(
            Request::builder()
                .uri("/pushy/_status")
                .header("accept", "text/html")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 406, "{}", r.text);
}

/// §1.1: only `stdout` and `stderr` are output routes; §1.4.5 negotiation.
#[tokio::test]
async fn output_route_other_channel_is_404() {
    let h = Harness::new().await;
    let job = h
        .create_job(
            r#"{"command":"x","nodes":["DONKEY"],"capture_output":true}"#,
            ADMIN_USER,
        )
        .await;
    for channel in ["stdlog", "STDOUT", "both"] {
        let r = h
            .call(
                "GET",
                &format!("{job}/output/DONKEY/{channel}"),
                "",
                ADMIN_USER,
            )
            .await;
        assert_eq!(r.status, 404, "{channel}: {}", r.text);
        let r = h
            .send(unsigned(
                "GET",
                &format!("{job}/output/DONKEY/{channel}"),
                Body::empty(),
            ))
            .await;
        assert_eq!(r.status, 404, "{channel} unsigned: {}", r.text);
    }
    let r = h
        .call(
            "GET",
            &format!("{job}/output/DONKEY/stdout/more"),
            "",
            ADMIN_USER,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    for channel in ["stdout", "stderr"] {
        let url = format!("{job}/output/DONKEY/{channel}");
        // Nothing was captured (no node ran): 404; JSON-only Accept: 406.
        let r = h.call("GET", &url, "", ADMIN_USER).await;
        assert_eq!(r.status, 404, "{}", r.text);
        let mut b = h.signed("GET", &url, "", ADMIN_USER);
        b.headers_mut()
            .unwrap()
            .insert("accept", "application/octet-stream".parse().unwrap());
        let r = h.send(b.body(Body::empty()).unwrap()).await;
        assert_eq!(r.status, 404, "{}", r.text);
        let mut b = h.signed("GET", &url, "", ADMIN_USER);
        b.headers_mut()
            .unwrap()
            .insert("accept", "application/json".parse().unwrap());
        let r = h.send(b.body(Body::empty()).unwrap()).await;
        assert_eq!(r.status, 406, "{}", r.text);
    }
}

/// §1.1 and §8.7 item 52: runs of `/` collapse and a trailing `/` is ignored.
#[tokio::test]
async fn repeated_and_trailing_slashes_are_tolerated() {
    let h = Harness::new().await;
    for path in ["//pushy/_status", "/pushy/_status/", "/pushy//_status"] {
        let r = h.send(unsigned("GET", path, Body::empty())).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(r.json()["status"], "it's alive");
    }
    let r = h
        .call(
            "POST",
            &format!("//organizations/{ORG}//pushy/jobs/"),
            JOB,
            ADMIN_USER,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let uri = r.json()["uri"].as_str().unwrap().to_owned();
    let path = uri
        .strip_prefix("http://push.example.com")
        .unwrap()
        .to_owned();
    assert!(
        path.starts_with(&format!("/organizations/{ORG}/pushy/jobs/")),
        "{uri}"
    );
    for p in [
        format!("/organizations/{ORG}/pushy/jobs/"),
        format!("//organizations//{ORG}/pushy/jobs"),
        format!("{path}/"),
        format!("/{path}"),
        format!("/organizations/{ORG}/pushy/node_states/"),
        format!("/organizations/{ORG}//pushy/node_states/some_node/"),
        format!("/organizations/{ORG}/pushy/config/DONKEY/?ccpk={CCPK}"),
    ] {
        let r = h.call("GET", &p, "", ADMIN_USER).await;
        assert_eq!(r.status, 200, "{p}: {}", r.text);
    }
}

/// Unrouted paths are 404 with a JSON body (§1.3.6 recommendation).
#[tokio::test]
async fn unknown_route_is_404_json() {
    let h = Harness::new().await;
    for path in [
        "/",
        "/pushy",
        "/organizations/pedant/pushy/nothing",
        "/organizations/pedant/pushy/jobs/a/b",
        "/Pushy/_status",
    ] {
        let r = h.call("GET", path, "", ADMIN_USER).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text);
        assert!(r.json()["error"].is_array(), "{path}: {}", r.text);
        assert_eq!(header(&r, "content-type"), Some("application/json"));
    }
}

// ---- Security fixes -------------------------------------------------------------------

/// §8.2 item 17: a job is only visible through its own organization.
#[tokio::test]
async fn job_of_another_org_is_404() {
    let h = Harness::new().await;
    let job = h
        .create_job(
            r#"{"command":"secret","nodes":["DONKEY"],"file":"raw:foo","capture_output":true}"#,
            ADMIN_USER,
        )
        .await;
    let id = job.rsplit('/').next().unwrap();
    let other = format!("/organizations/{OTHER_ORG}/pushy");
    for url in [
        format!("{other}/jobs/{id}"),
        format!("{other}/jobs/{id}?include_file=true"),
        format!("{other}/jobs/{id}/output/DONKEY/stdout"),
        format!("{other}/jobs/{id}/output/DONKEY/stderr"),
        format!("{other}/job_status_feed/{id}"),
    ] {
        let r = h.call("GET", &url, "", OUTSIDE_USER).await;
        assert_eq!(r.status, 404, "{url}: {}", r.text);
        assert!(
            !r.text.contains("secret") && !r.text.contains("raw:foo"),
            "{}",
            r.text
        );
    }
    h.call("GET", &format!("{other}/jobs"), "", OUTSIDE_USER)
        .await
        .expect(200, json!([]));
    // Still there for its own org.
    let r = h.call("GET", &job, "", ADMIN_USER).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = h
        .call(
            "GET",
            &format!("/organizations/{ORG}/pushy/job_status_feed/{id}"),
            "",
            ADMIN_USER,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// §8.2 item 18: `ccpk` joins the allow-list only after authentication and
/// authorization succeed.
#[tokio::test]
async fn config_ccpk_is_allowed_only_after_a_good_request() {
    let h = Harness::new().await;
    let key = decode_ccpk(CCPK).unwrap();
    let allowed = || h.state.client_keys.is_allowed(&key, Instant::now());
    let r = h.call("GET", &config_url(BAD_CLIENT), "", BAD_CLIENT).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(!allowed(), "registered after a bad signature");
    h.call("GET", &config_url("DONKEY"), "", INVALID_USER)
        .await
        .expect(401, authn_invalid());
    h.call("GET", &config_url(OUTSIDE_USER), "", OUTSIDE_USER)
        .await
        .expect(403, notassoc());
    let r = h
        .call("GET", &config_url("DONKEY"), "", NON_ADMIN_CLIENT)
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    h.set_group("pushy_job_readers", &[NORMAL_USER], &[], &[]);
    h.call("GET", &config_url("DONKEY"), "", ADMIN_USER)
        .await
        .expect(403, noaccess(ADMIN_USER));
    let mut b = h.signed("GET", &config_url("DONKEY"), "", NORMAL_USER);
    b.headers_mut()
        .unwrap()
        .insert("accept", "text/html".parse().unwrap());
    assert_eq!(h.send(b.body(Body::empty()).unwrap()).await.status, 406);
    assert!(!allowed(), "registered after a refused request");

    // A reader may read the config, but only the node's own client gets its key admitted
    // (issue 12 §1).
    let r = h.call("GET", &config_url("DONKEY"), "", NORMAL_USER).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!allowed(), "a user's key admitted for a node");
    let r = h
        .call("GET", &config_url(NON_ADMIN_CLIENT), "", NON_ADMIN_CLIENT)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        allowed(),
        "not registered after the node's own good request"
    );
}

/// §8.4 item 33: a group cycle terminates; membership deep inside still counts.
#[tokio::test]
async fn nested_group_cycle_terminates() {
    let h = Harness::new().await;
    h.set_group("pushy_job_readers", &[], &[], &["a"]);
    h.set_group("a", &[], &[], &["b", "missing"]);
    h.set_group(
        "b",
        &[NORMAL_USER],
        &[NON_ADMIN_CLIENT],
        &["a", "pushy_job_readers", "b"],
    );
    h.set_group("pushy_job_writers", &[], &[], &["pushy_job_writers", "a"]);
    let url = format!("/organizations/{ORG}/pushy/node_states");
    let run = async {
        h.call("GET", &url, "", ADMIN_USER)
            .await
            .expect(403, noaccess(ADMIN_USER));
        h.call("GET", &url, "", ADMIN_CLIENT)
            .await
            .expect(403, noaccess(ADMIN_CLIENT));
        h.call("GET", &url, "", NORMAL_USER)
            .await
            .expect(200, json!([]));
        h.call("GET", &url, "", NON_ADMIN_CLIENT)
            .await
            .expect(200, json!([]));
        h.call("POST", &jobs_url(), JOB, ADMIN_USER)
            .await
            .expect(403, noaccess(ADMIN_USER));
        let r = h.call("POST", &jobs_url(), JOB, NORMAL_USER).await;
        assert_eq!(r.status, 201, "{}", r.text);
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("group cycle did not terminate");
}

// ---- Response shapes ------------------------------------------------------------------

fn decrypt_session_key(h: &Harness, who: &str, b64: &str) -> Vec<u8> {
    use base64::Engine as _;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let rsa = h.key(who).rsa().unwrap();
    let mut out = vec![0; rsa.size() as usize];
    let n = rsa
        .private_decrypt(&sealed, &mut out, Padding::PKCS1)
        .unwrap();
    out.truncate(n);
    out
}

/// §1.4.1: keys and order, the PEM's trailing blank line, the session key sealed to
/// the requestor's key (same key per node on every request), the Curve key.
#[tokio::test]
async fn config_response_shape() {
    let h = Harness::new().await;
    let r = h.call("GET", &config_url("DONKEY"), "", ADMIN_USER).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    let b = r.json();
    let keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "type",
            "host",
            "push_jobs",
            "node",
            "organization",
            "public_key",
            "curve_public_key",
            "encoded_session_key",
            "lifetime",
            "max_message_skew",
            "max_body_size",
            "incarnation_id"
        ]
    );
    let hb: Vec<&str> = b["push_jobs"]["heartbeat"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        hb,
        [
            "out_addr",
            "command_addr",
            "interval",
            "offline_threshold",
            "online_threshold"
        ]
    );
    assert!(r.text.contains(r#""interval":10.0"#), "{}", r.text);
    assert_eq!(b["push_jobs"]["heartbeat"]["offline_threshold"], 3);
    assert_eq!(b["push_jobs"]["heartbeat"]["online_threshold"], 2);
    let esk: Vec<&str> = b["encoded_session_key"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(esk, ["method", "key"]);
    let pk = b["public_key"].as_str().unwrap();
    assert!(pk.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pk}");
    assert!(pk.ends_with("-----END PUBLIC KEY-----\n\n"), "{pk:?}");
    assert!(
        pk.lines()
            .filter(|l| !l.starts_with("-----") && !l.is_empty())
            .all(|l| l.len() <= 64)
    );
    let curve = b["curve_public_key"].as_str().unwrap();
    assert_eq!(curve.len(), 40);
    assert_eq!(curve, h.state.curve.public_z85);
    assert_eq!(b["lifetime"], 3600);
    assert_eq!(b["max_message_skew"], 300);
    assert_eq!(b["max_body_size"], 65536);
    assert_eq!(b["incarnation_id"], json!(&*h.state.incarnation));
    let key_text = b["encoded_session_key"]["key"].as_str().unwrap().to_owned();
    assert!(!key_text.contains('\n'));
    let session = decrypt_session_key(&h, ADMIN_USER, &key_text);
    assert_eq!(session.len(), 32);

    // Only the node's own client gets the node's key (issue 12 §1): a user reading the
    // config gets a decoy, new at every request.
    let again = h
        .call("GET", &config_url("DONKEY"), "", ADMIN_USER)
        .await
        .json();
    let again = decrypt_session_key(
        &h,
        ADMIN_USER,
        again["encoded_session_key"]["key"].as_str().unwrap(),
    );
    assert_eq!(again.len(), 32);
    assert_ne!(again, session);
    // A client gets its own node's key sealed to its key, the same at every request.
    let own = || async {
        let b = h
            .call("GET", &config_url(NON_ADMIN_CLIENT), "", NON_ADMIN_CLIENT)
            .await
            .json();
        decrypt_session_key(
            &h,
            NON_ADMIN_CLIENT,
            b["encoded_session_key"]["key"].as_str().unwrap(),
        )
    };
    let k = own().await;
    assert_eq!(k.len(), 32);
    assert_eq!(own().await, k);
    assert_ne!(k, session);
}

/// §3.3 "node offline at creation", read live within `wait_complete_time`: the whole
/// sequence, each event ending in a blank line, and a resume with `Last-Event-ID` gives
/// exactly the later events.
#[tokio::test]
async fn job_feed_of_a_just_finished_job_replays_its_events() {
    let h = Harness::new().await;
    let job = h.create_job(JOB, ADMIN_USER).await;
    let id = job.rsplit('/').next().unwrap().to_owned();
    let url = format!("/organizations/{ORG}/pushy/job_status_feed/{id}");
    let get = |last: Option<&'static str>| {
        let mut b = h.signed("GET", &url, "", ADMIN_USER);
        b = b.header("accept", "text/event-stream");
        if let Some(l) = last {
            b = b.header("last-event-id", l);
        }
        h.send(b.body(Body::empty()).unwrap())
    };
    let r = get(None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let names: Vec<&str> = r
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names, ["start", "quorum_vote", "rehab", "job_complete"]);
    assert!(
        r.text.contains(r#""node":"DONKEY","status":"down""#),
        "{}",
        r.text
    );
    assert!(r.text.contains(r#""status":"quorum_failed""#), "{}", r.text);
    assert!(r.text.ends_with("\n\n"));
    let resumed = get(Some("job-2")).await;
    let tail = r
        .text
        .split("event: ")
        .skip(3)
        .map(|e| format!("event: {e}"))
        .collect::<String>();
    assert_eq!(resumed.text, tail);
}

/// §3: a job's feed after it stopped being live is one `summary` event with id `job-1`,
/// ending in a blank line (§8.6 item 42 fixed), with the SSE headers; JSON-only Accept
/// is 406.
#[tokio::test]
async fn job_feed_of_finished_job_is_one_summary_event() {
    let store: std::sync::Arc<dyn pushy_server::store::Store> =
        std::sync::Arc::new(pushy_server::store::SqliteStore::in_memory().await.unwrap());
    let h = Harness::with_store(store, |c| c.pushy.wait_complete_time = 0).await;
    let job = h.create_job(JOB, ADMIN_USER).await;
    let id = job.rsplit('/').next().unwrap().to_owned();
    let url = format!("/organizations/{ORG}/pushy/job_status_feed/{id}");
    let get = |who: &'static str, accept: Option<&'static str>, last: Option<&'static str>| {
        let mut b = h.signed("GET", &url, "", who);
        let headers = b.headers_mut().unwrap();
        if let Some(a) = accept {
            headers.insert("accept", a.parse().unwrap());
        }
        if let Some(l) = last {
            headers.insert("last-event-id", l.parse().unwrap());
        }
        h.send(b.body(Body::empty()).unwrap())
    };
    for (accept, last) in [
        (Some("text/event-stream"), None),
        (None, None),
        (Some("text/event-stream"), Some("job-1")),
        (Some("text/event-stream"), Some("bleah")),
    ] {
        let r = get(ADMIN_USER, accept, last).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(header(&r, "content-type"), Some("text/event-stream"));
        assert_eq!(header(&r, "x-accel-buffering"), Some("no"));
        let rest = r
            .text
            .strip_prefix("event: summary\nid: job-1\ndata: ")
            .unwrap_or_else(|| panic!("{:?}", r.text));
        let data = rest
            .strip_suffix("\n\n")
            .unwrap_or_else(|| panic!("{:?}", r.text));
        assert!(!data.contains('\n'), "{:?}", r.text);
        assert_eq!(r.text.matches("event:").count(), 1);
        let d: Value = serde_json::from_str(data).unwrap();
        let keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys[0], "timestamp");
        let ts = d["timestamp"].as_str().unwrap();
        assert!(
            chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S%.6fZ").is_ok()
                && ts.len() == 27,
            "{ts}"
        );
        assert_eq!(d["id"], id.as_str());
        assert_eq!(d["command"], "sleep 1");
        assert_eq!(d["status"], "quorum_failed");
        assert_eq!(d["run_timeout"], 3600);
        assert_eq!(d["nodes"], json!({"unavailable": ["DONKEY"]}));
    }
    let r = get(ADMIN_USER, Some("application/json"), None).await;
    assert_eq!(r.status, 406, "{}", r.text);
    let r = get(INVALID_USER, Some("text/event-stream"), None).await;
    r.expect(401, authn_invalid());
    let r = h
        .call(
            "GET",
            &format!("/organizations/{ORG}/pushy/job_status_feed/nonexistent"),
            "",
            ADMIN_USER,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = h
        .call(
            "POST",
            &format!("/organizations/{ORG}/pushy/job_status_feed/nonexistent"),
            "",
            ADMIN_USER,
        )
        .await;
    assert_eq!(r.status, 405, "{}", r.text);
}
