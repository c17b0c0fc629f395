//! Pedant `integration/jobs_spec.rb` (http.md §7.4 items 39–57 and 59; item 58, the
//! auth-header suite, is in `pedant_auth_headers.rs`), plus this build's decisions on
//! jobs: validation messages of §1.4.2, 415 after authentication, the admins fallback,
//! list order, `include_file`, duplicate nodes, quorum 0 and the abort route.
//!
//! No node is connected in this build, so every job ends `quorum_failed` at once (its
//! nodes `unavailable`), and a quorum of 0 ends `complete`.

mod common;
use axum::body::Body;
use chrono::NaiveDateTime;
use common::*;
use serde_json::{Value, json};

/// The pedant job body.
const JOB: &str = r#"{"command":"sleep 1","nodes":["DONKEY"]}"#;

fn jobs_url() -> String {
    format!("/organizations/{ORG}/pushy/jobs")
}

/// As pedant writes it.
fn jobs_url_slash() -> String {
    format!("/organizations/{ORG}/pushy/jobs/")
}

fn is_job_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap()
}

/// RFC 1123, `Tue, 04 Sep 2012 23:01:02 GMT`.
fn parse_date(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%a, %d %b %Y %H:%M:%S GMT")
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn sorted_keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

/// A 201 whose body is exactly `{"uri": <base>/organizations/pedant/pushy/jobs/<id>}` and
/// whose `Location` is the same; returns the uri.
fn check_created(r: &Reply, base: &str) -> String {
    assert_eq!(r.status, 201, "{}", r.text);
    let b = r.json();
    assert_eq!(sorted_keys(&b), ["uri"], "{}", r.text);
    let uri = b["uri"].as_str().unwrap().to_owned();
    let prefix = format!("{base}/organizations/{ORG}/pushy/jobs/");
    let id = uri
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{uri} does not start with {prefix}"));
    assert!(is_job_id(id), "{uri}");
    assert_eq!(
        r.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(uri.as_str())
    );
    uri
}

fn path_of(uri: &str) -> String {
    uri.split_once("push.example.com").unwrap().1.to_owned()
}

/// Item 56's exact GET body.
fn check_job(r: &Reply, command: &str, nodes: Value, run_timeout: u64, status: &str) {
    assert_eq!(r.status, 200, "{}", r.text);
    let b = r.json();
    assert_eq!(
        sorted_keys(&b),
        [
            "command",
            "created_at",
            "id",
            "nodes",
            "run_timeout",
            "status",
            "updated_at"
        ],
        "{}",
        r.text
    );
    assert_eq!(b["command"], command);
    assert_eq!(b["nodes"], nodes);
    assert!(is_job_id(b["id"].as_str().unwrap()));
    assert_eq!(b["run_timeout"], run_timeout);
    assert_eq!(b["status"], status);
    let created = parse_date(b["created_at"].as_str().unwrap());
    let updated = parse_date(b["updated_at"].as_str().unwrap());
    assert!(updated >= created, "{}", r.text);
}

fn assert_405(r: &Reply, allow: &str) {
    assert_eq!(r.status, 405, "{}", r.text);
    assert_eq!(
        r.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some(allow)
    );
}

fn pedant_groups(h: &Harness) {
    for g in ["pushy_job_readers", "pushy_job_writers"] {
        h.set_group(g, &[NORMAL_USER, OUTSIDE_USER], &[NON_ADMIN_CLIENT], &[]);
    }
}

fn bad_sig(who: &str) -> Value {
    json!({"error": [format!("Invalid signature for user or client '{who}'")]})
}

// ---- HTTP verbs -----------------------------------------------------------------------

/// Item 39.
#[tokio::test]
async fn jobs_collection_put_delete_are_405() {
    let h = Harness::new().await;
    for method in ["PUT", "DELETE"] {
        for url in [jobs_url_slash(), jobs_url()] {
            assert_405(&h.call(method, &url, "", ADMIN_USER).await, "POST, GET");
        }
    }
}

/// Item 40.
#[tokio::test]
async fn existing_job_put_post_delete_are_405() {
    let h = Harness::new().await;
    let job = h.create_job(JOB, ADMIN_USER).await;
    for method in ["PUT", "POST", "DELETE"] {
        assert_405(&h.call(method, &job, JOB, ADMIN_USER).await, "GET");
    }
}

/// Item 41.
#[tokio::test]
async fn nonexistent_job_get_is_404_and_put_post_delete_are_405() {
    let h = Harness::new().await;
    let url = format!("{}/name-does-not-exist", jobs_url());
    let r = h.call("GET", &url, "", ADMIN_USER).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(r.json()["error"].is_array(), "{}", r.text);
    for method in ["PUT", "POST", "DELETE"] {
        assert_405(&h.call(method, &url, "", ADMIN_USER).await, "GET");
    }
}

// ---- Access control, no pushy_job groups ----------------------------------------------

/// Item 42.
#[tokio::test]
async fn jobs_list_no_groups_members_are_200() {
    let h = Harness::new().await;
    for who in [ADMIN_USER, NORMAL_USER, NON_ADMIN_CLIENT] {
        h.call("GET", &jobs_url_slash(), "", who)
            .await
            .expect(200, json!([]));
    }
}

/// Item 43.
#[tokio::test]
async fn jobs_list_invalid_outside_bad_client_are_refused() {
    let h = Harness::new().await;
    let url = jobs_url_slash();
    h.call("GET", &url, "", INVALID_USER)
        .await
        .expect(401, authn_invalid());
    h.call("GET", &url, "", OUTSIDE_USER)
        .await
        .expect(403, notassoc());
    h.call("GET", &url, "", BAD_CLIENT)
        .await
        .expect(401, bad_sig(BAD_CLIENT));
}

/// Item 44.
#[tokio::test]
async fn jobs_post_admin_user_is_201() {
    let h = Harness::new().await;
    let r = h.call("POST", &jobs_url_slash(), JOB, ADMIN_USER).await;
    check_created(&r, "http://push.example.com");
}

/// Items 45–46: without a writers group only `admins` may start jobs.
#[tokio::test]
async fn jobs_post_non_admins_are_403_noaccess() {
    let h = Harness::new().await;
    for who in [NORMAL_USER, NON_ADMIN_CLIENT] {
        h.call("POST", &jobs_url_slash(), JOB, who)
            .await
            .expect(403, noaccess(who));
    }
    // admin_client is in admins.
    let r = h.call("POST", &jobs_url_slash(), JOB, ADMIN_CLIENT).await;
    check_created(&r, "http://push.example.com");
}

/// Item 47.
#[tokio::test]
async fn jobs_post_invalid_outside_bad_client_are_refused() {
    let h = Harness::new().await;
    let url = jobs_url_slash();
    h.call("POST", &url, JOB, INVALID_USER)
        .await
        .expect(401, authn_invalid());
    h.call("POST", &url, JOB, OUTSIDE_USER)
        .await
        .expect(403, notassoc());
    h.call("POST", &url, JOB, BAD_CLIENT)
        .await
        .expect(401, bad_sig(BAD_CLIENT));
    h.call("GET", &url, "", ADMIN_USER)
        .await
        .expect(200, json!([]));
}

/// Item 48.
#[tokio::test]
async fn job_get_no_groups_members_are_200() {
    let h = Harness::new().await;
    let job = h.create_job(JOB, ADMIN_USER).await;
    for who in [ADMIN_USER, NORMAL_USER, NON_ADMIN_CLIENT] {
        let r = h.call("GET", &job, "", who).await;
        check_job(
            &r,
            "sleep 1",
            json!({"unavailable": ["DONKEY"]}),
            3600,
            "quorum_failed",
        );
    }
}

/// Item 49.
#[tokio::test]
async fn job_get_invalid_outside_bad_client_are_refused() {
    let h = Harness::new().await;
    let job = h.create_job(JOB, ADMIN_USER).await;
    h.call("GET", &job, "", INVALID_USER)
        .await
        .expect(401, authn_invalid());
    h.call("GET", &job, "", OUTSIDE_USER)
        .await
        .expect(403, notassoc());
    h.call("GET", &job, "", BAD_CLIENT)
        .await
        .expect(401, bad_sig(BAD_CLIENT));
}

/// Item 50 (and §7.6 item 141: a well-formed id that does not exist).
#[tokio::test]
async fn job_get_not_a_number_is_404() {
    let h = Harness::new().await;
    for who in [ADMIN_USER, NORMAL_USER] {
        for id in ["not_a_number", "abcdefabcdef807f32d9572f8aafbd03"] {
            let r = h
                .call("GET", &format!("{}/{id}", jobs_url()), "", who)
                .await;
            assert_eq!(r.status, 404, "{who} {id}: {}", r.text);
        }
    }
}

// ---- Access control with pushy_job_readers / pushy_job_writers ------------------------

/// Item 51.
#[tokio::test]
async fn jobs_list_with_groups() {
    let h = Harness::new().await;
    pedant_groups(&h);
    let url = jobs_url_slash();
    h.call("GET", &url, "", NORMAL_USER)
        .await
        .expect(200, json!([]));
    h.call("GET", &url, "", ADMIN_USER)
        .await
        .expect(403, noaccess(ADMIN_USER));
    h.call("GET", &url, "", NON_ADMIN_CLIENT)
        .await
        .expect(200, json!([]));
    h.call("GET", &url, "", ADMIN_CLIENT)
        .await
        .expect(403, noaccess(ADMIN_CLIENT));
    h.call("GET", &url, "", OUTSIDE_USER)
        .await
        .expect(403, notassoc());
}

/// Item 52: the writers group exists, so org admins get no fallback.
#[tokio::test]
async fn jobs_post_with_groups() {
    let h = Harness::new().await;
    pedant_groups(&h);
    let url = jobs_url_slash();
    check_created(
        &h.call("POST", &url, JOB, NORMAL_USER).await,
        "http://push.example.com",
    );
    h.call("POST", &url, JOB, ADMIN_USER)
        .await
        .expect(403, noaccess(ADMIN_USER));
    check_created(
        &h.call("POST", &url, JOB, NON_ADMIN_CLIENT).await,
        "http://push.example.com",
    );
    h.call("POST", &url, JOB, ADMIN_CLIENT)
        .await
        .expect(403, noaccess(ADMIN_CLIENT));
    h.call("POST", &url, JOB, OUTSIDE_USER)
        .await
        .expect(403, notassoc());
}

/// Item 53 (jobs created by normal_user).
#[tokio::test]
async fn job_get_with_groups() {
    let h = Harness::new().await;
    pedant_groups(&h);
    let job = h.create_job(JOB, NORMAL_USER).await;
    let unavailable = json!({"unavailable": ["DONKEY"]});
    check_job(
        &h.call("GET", &job, "", NORMAL_USER).await,
        "sleep 1",
        unavailable.clone(),
        3600,
        "quorum_failed",
    );
    h.call("GET", &job, "", ADMIN_USER)
        .await
        .expect(403, noaccess(ADMIN_USER));
    check_job(
        &h.call("GET", &job, "", NON_ADMIN_CLIENT).await,
        "sleep 1",
        unavailable,
        3600,
        "quorum_failed",
    );
    h.call("GET", &job, "", ADMIN_CLIENT)
        .await
        .expect(403, noaccess(ADMIN_CLIENT));
    h.call("GET", &job, "", OUTSIDE_USER)
        .await
        .expect(403, notassoc());
}

/// Item 54.
#[tokio::test]
async fn jobs_with_nested_groups() {
    let h = Harness::new().await;
    h.set_group("pushy_job_readers", &[], &[], &["nested_pushy_job_readers"]);
    h.set_group("pushy_job_writers", &[], &[], &["nested_pushy_job_writers"]);
    for g in ["nested_pushy_job_readers", "nested_pushy_job_writers"] {
        h.set_group(g, &[NORMAL_USER], &[NON_ADMIN_CLIENT], &[]);
    }
    for (member, outsider) in [(NORMAL_USER, ADMIN_USER), (NON_ADMIN_CLIENT, ADMIN_CLIENT)] {
        let r = h.call("GET", &jobs_url_slash(), "", member).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let job = h.create_job(JOB, member).await;
        let r = h.call("GET", &job, "", member).await;
        check_job(
            &r,
            "sleep 1",
            json!({"unavailable": ["DONKEY"]}),
            3600,
            "quorum_failed",
        );

        h.call("GET", &jobs_url_slash(), "", outsider)
            .await
            .expect(403, noaccess(outsider));
        h.call("POST", &jobs_url_slash(), JOB, outsider)
            .await
            .expect(403, noaccess(outsider));
        h.call("GET", &job, "", outsider)
            .await
            .expect(403, noaccess(outsider));
    }
}

// ---- Request errors -------------------------------------------------------------------

/// Item 55.
#[tokio::test]
async fn jobs_bogus_org_is_404() {
    let h = Harness::new().await;
    let job = h.create_job(JOB, ADMIN_USER).await;
    let body = json!({"error": ["organization 'bogus-org' does not exist."]});
    let bogus_job = job.replace(
        &format!("/organizations/{ORG}/"),
        "/organizations/bogus-org/",
    );
    h.call("GET", "/organizations/bogus-org/pushy/jobs", "", ADMIN_USER)
        .await
        .expect(404, body.clone());
    h.call("GET", &bogus_job, "", ADMIN_USER)
        .await
        .expect(404, body.clone());
    h.call(
        "POST",
        "/organizations/bogus-org/pushy/jobs",
        JOB,
        ADMIN_USER,
    )
    .await
    .expect(404, body);
}

/// Item 56: each POST variation is 201 `{"uri"}`; the job then reads back exactly.
#[tokio::test]
async fn jobs_post_variations_succeed_and_read_back() {
    let h = Harness::new().await;
    let default =
        json!({"command": "sleep 1", "nodes": ["DONKEY"], "quorum": 1, "run_timeout": 3600});
    // (key, value or None to omit, expected command, expected nodes, expected run_timeout)
    let cases: Vec<(&str, Option<Value>, &str, Value, u64)> = vec![
        (
            "command",
            Some(json!("")),
            "",
            json!({"unavailable": ["DONKEY"]}),
            3600,
        ),
        (
            "command",
            Some(json!("sleep 2")),
            "sleep 2",
            json!({"unavailable": ["DONKEY"]}),
            3600,
        ),
        (
            "nodes",
            Some(json!(["DONKEY"])),
            "sleep 1",
            json!({"unavailable": ["DONKEY"]}),
            3600,
        ),
        (
            "nodes",
            Some(json!(["DONKEY", "FIONA"])),
            "sleep 1",
            json!({"unavailable": ["DONKEY", "FIONA"]}),
            3600,
        ),
        (
            "quorum",
            None,
            "sleep 1",
            json!({"unavailable": ["DONKEY"]}),
            3600,
        ),
        (
            "quorum",
            Some(json!(1)),
            "sleep 1",
            json!({"unavailable": ["DONKEY"]}),
            3600,
        ),
        (
            "quorum",
            Some(json!(999)),
            "sleep 1",
            json!({"unavailable": ["DONKEY"]}),
            3600,
        ),
        (
            "run_timeout",
            None,
            "sleep 1",
            json!({"unavailable": ["DONKEY"]}),
            3600,
        ),
        (
            "run_timeout",
            Some(json!(0)),
            "sleep 1",
            json!({"unavailable": ["DONKEY"]}),
            0,
        ),
        (
            "run_timeout",
            Some(json!(3600)),
            "sleep 1",
            json!({"unavailable": ["DONKEY"]}),
            3600,
        ),
    ];
    for (key, value, command, nodes, run_timeout) in cases {
        let mut body = default.clone();
        match &value {
            Some(v) => body[key] = v.clone(),
            None => {
                body.as_object_mut().unwrap().remove(key);
            }
        }
        let r = h
            .call("POST", &jobs_url_slash(), &body.to_string(), ADMIN_USER)
            .await;
        let uri = check_created(&r, "http://push.example.com");
        let got = h.call("GET", &path_of(&uri), "", ADMIN_USER).await;
        check_job(&got, command, nodes.clone(), run_timeout, "quorum_failed");
        assert!(
            got.json().get("quorum").is_none(),
            "{key}={value:?}: {}",
            got.text
        );
        // The exact text keeps the request's node order.
        if nodes["unavailable"].as_array().unwrap().len() == 2 {
            assert!(
                got.text
                    .contains(r#""nodes":{"unavailable":["DONKEY","FIONA"]}"#),
                "{}",
                got.text
            );
        }
        assert_eq!(last_segment(&uri), got.json()["id"], "{key}={value:?}");
    }
}

/// Item 56's uri regex `^https://.*/jobs/[0-9a-f]{32}$` holds behind nginx, which sends
/// `X-Forwarded-Proto`; the `Host` port is dropped only when it is 80 or 443 (§1.4.2).
#[tokio::test]
async fn jobs_post_uri_follows_forwarded_proto_and_host() {
    let h = Harness::new().await;
    let cases = [
        (
            Some("https"),
            "push.example.com",
            "https://push.example.com",
        ),
        (
            Some("https"),
            "push.example.com:443",
            "https://push.example.com",
        ),
        (None, "push.example.com:80", "http://push.example.com"),
        (None, "localhost:10003", "http://localhost:10003"),
    ];
    for (proto, host, base) in cases {
        let mut b = h.signed("POST", &jobs_url_slash(), JOB, ADMIN_USER);
        let headers = b.headers_mut().unwrap();
        headers.insert("host", host.parse().unwrap());
        if let Some(p) = proto {
            headers.insert("x-forwarded-proto", p.parse().unwrap());
        }
        let r = h.send(b.body(Body::from(JOB)).unwrap()).await;
        check_created(&r, base);
    }
}

/// Item 57 (no assertion in pedant): every listed body is a 400 with the §1.4.2 message.
#[tokio::test]
async fn jobs_post_invalid_bodies_are_400_with_message() {
    let h = Harness::new().await;
    let default =
        json!({"command": "sleep 1", "nodes": ["DONKEY"], "quorum": 1, "run_timeout": 3600});
    let bad = |vs: &[Value]| vs.iter().map(|v| Some(v.clone())).collect::<Vec<_>>();
    let with_missing = |mut v: Vec<Option<Value>>| {
        v.insert(0, None);
        v
    };
    let cases: Vec<(&str, Vec<Option<Value>>, &str)> = vec![
        (
            "command",
            with_missing(bad(&[
                json!([]),
                json!({}),
                json!(0),
                json!(false),
                json!(null),
            ])),
            "invalid command supplied",
        ),
        (
            "nodes",
            with_missing(bad(&[
                json!(""),
                json!("DONKEY"),
                json!([]),
                json!(["DONKEY", "FIONA", false]),
                json!(["DONKEY", "FIONA", null]),
                json!(["DONKEY", "FIONA", {}]),
                json!({}),
                json!(0),
                json!(false),
                json!(null),
            ])),
            "at least one node must be supplied",
        ),
        (
            "quorum",
            bad(&[
                json!(""),
                json!("1"),
                json!([]),
                json!({}),
                json!(false),
                json!(null),
            ]),
            "invalid type supplied for quorum (expected a number)",
        ),
        (
            "run_timeout",
            bad(&[
                json!(""),
                json!("1"),
                json!([]),
                json!({}),
                json!(false),
                json!(null),
            ]),
            "invalid type supplied for run_timeout (expected a number)",
        ),
        (
            "foo",
            bad(&[json!(null), json!(""), json!("bar"), json!(0)]),
            "invalid key supplied",
        ),
    ];
    let mut failures = Vec::new();
    for (key, values, message) in cases {
        for value in values {
            let mut body = default.clone();
            match &value {
                Some(v) => body[key] = v.clone(),
                None => {
                    body.as_object_mut().unwrap().remove(key);
                }
            }
            let r = h
                .call("POST", &jobs_url_slash(), &body.to_string(), ADMIN_USER)
                .await;
            let want = json!({ "error": message });
            if r.status != 400 || serde_json::from_str::<Value>(&r.text).ok() != Some(want.clone())
            {
                failures.push(format!(
                    "{body}: got {} {}, want 400 {want}",
                    r.status, r.text
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    h.call("GET", &jobs_url(), "", ADMIN_USER)
        .await
        .expect(200, json!([]));
}

/// The rest of §1.4.2's validation: optional keys, files, order of checks, and the
/// §8.1 items 3–4 fixes (invalid JSON and non-integral numbers are 400s).
#[tokio::test]
async fn jobs_post_validation_messages_of_1_4_2() {
    let h = Harness::new().await;
    let unknown = "an unknown validation error has occurred";
    let big_raw = format!("raw:{}", "x".repeat(100_001));
    let big_b64 = {
        use base64::Engine as _;
        format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(vec![0u8; 100_001])
        )
    };
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "invalid JSON"),
        ("".into(), "invalid JSON"),
        ("[]".into(), unknown),
        (r#""sleep""#.into(), unknown),
        (r#"{"command":"x","nodes":["A"],"user":1}"#.into(), unknown),
        (
            r#"{"command":"x","nodes":["A"],"user":null}"#.into(),
            unknown,
        ),
        (r#"{"command":"x","nodes":["A"],"dir":[]}"#.into(), unknown),
        (
            r#"{"command":"x","nodes":["A"],"env":"A=1"}"#.into(),
            unknown,
        ),
        (
            r#"{"command":"x","nodes":["A"],"env":{"A":1}}"#.into(),
            unknown,
        ),
        (r#"{"command":"x","nodes":["A"],"file":5}"#.into(), unknown),
        (
            format!(
                r#"{{"command":"x","nodes":["A"],"user":"{}"}}"#,
                "u".repeat(33)
            ),
            unknown,
        ),
        (
            r#"{"command":"x","nodes":["A"],"capture_output":"true"}"#.into(),
            "invalid type supplied for capture_output (expected a boolean)",
        ),
        (
            r#"{"command":"x","nodes":["A"],"capture_output":null}"#.into(),
            "invalid type supplied for capture_output (expected a boolean)",
        ),
        (
            r#"{"command":"x","nodes":["A"],"quorum":1.5}"#.into(),
            "invalid type supplied for quorum (expected a number)",
        ),
        (
            r#"{"command":"x","nodes":["A"],"quorum":-1}"#.into(),
            "invalid type supplied for quorum (expected a number)",
        ),
        (
            r#"{"command":"x","nodes":["A"],"run_timeout":2.5}"#.into(),
            "invalid type supplied for run_timeout (expected a number)",
        ),
        (
            r#"{"command":"x","nodes":["A"],"run_timeout":-5}"#.into(),
            "invalid type supplied for run_timeout (expected a number)",
        ),
        (
            r#"{"command":"x","nodes":["A"],"env":{"A":"1","A":"2"}}"#.into(),
            "invalid environment value (duplicate key)",
        ),
        (
            r#"{"command":"x","nodes":["A"],"file":"foo"}"#.into(),
            "invalid file contents (expected 'base64:...' or 'raw:...')",
        ),
        (
            r#"{"command":"x","nodes":["A"],"file":"base64:!!!"}"#.into(),
            "invalid file contents (couldn't decode base64 string)",
        ),
        (
            format!(r#"{{"command":"x","nodes":["A"],"file":"{big_raw}"}}"#),
            "invalid file size (must be <= 100000 bytes)",
        ),
        (
            format!(r#"{{"command":"x","nodes":["A"],"file":"{big_b64}"}}"#),
            "invalid file size (must be <= 100000 bytes)",
        ),
        // The first failing check wins, in the spec's order.
        (
            r#"{"command":0,"nodes":0,"quorum":""}"#.into(),
            "invalid command supplied",
        ),
        (
            r#"{"command":"x","nodes":0,"quorum":""}"#.into(),
            "at least one node must be supplied",
        ),
        (
            r#"{"command":"x","nodes":["A"],"run_timeout":"","quorum":""}"#.into(),
            "invalid type supplied for run_timeout (expected a number)",
        ),
        (
            r#"{"command":"x","nodes":["A"],"quorum":"","foo":1}"#.into(),
            "invalid type supplied for quorum (expected a number)",
        ),
        (
            r#"{"command":"x","nodes":[],"foo":1}"#.into(),
            "invalid key supplied",
        ),
        (
            r#"{"command":"x","nodes":[],"file":"foo"}"#.into(),
            "at least one node must be supplied",
        ),
    ];
    let mut failures = Vec::new();
    for (body, message) in cases {
        let r = h.call("POST", &jobs_url(), &body, ADMIN_USER).await;
        let want = json!({ "error": message });
        if r.status != 400 || serde_json::from_str::<Value>(&r.text).ok() != Some(want.clone()) {
            let shown: String = body.chars().take(120).collect();
            failures.push(format!(
                "{shown}: got {} {}, want 400 {want}",
                r.status, r.text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    h.call("GET", &jobs_url(), "", ADMIN_USER)
        .await
        .expect(200, json!([]));
}

/// What knife-push always sends (§8.1 item 16b) and the bounds that are still valid.
#[tokio::test]
async fn jobs_post_accepts_knife_push_body_and_bounds() {
    let h = Harness::new().await;
    let exactly = format!("raw:{}", "x".repeat(100_000));
    let bodies = [
        r#"{"command":"chef-client","nodes":["DONKEY"],"quorum":1,"run_timeout":300,"capture_output":false,"env":{}}"#.to_owned(),
        r#"{"command":"x","nodes":[""],"quorum":0,"run_timeout":0}"#.to_owned(),
        format!(r#"{{"command":"x","nodes":["A"],"user":"{}"}}"#, "u".repeat(32)),
        format!(r#"{{"command":"x","nodes":["A"],"file":"{exactly}"}}"#),
        r#"{"command":"x","nodes":["A"],"file":"base64:dGVzdA=="}"#.to_owned(),
    ];
    for body in bodies {
        let r = h.call("POST", &jobs_url(), &body, ADMIN_USER).await;
        assert_eq!(
            r.status,
            201,
            "{}: {}",
            &body[..body.len().min(100)],
            r.text
        );
    }
}

/// Item 59: dates parse and `updated_at >= created_at`, in the job and in the list.
#[tokio::test]
async fn job_dates_are_rfc1123_and_ordered() {
    let h = Harness::new().await;
    let job = h.create_job(JOB, ADMIN_USER).await;
    let r = h.call("GET", &job, "", ADMIN_USER).await;
    check_job(
        &r,
        "sleep 1",
        json!({"unavailable": ["DONKEY"]}),
        3600,
        "quorum_failed",
    );
    let b = r.json();
    assert!(b["created_at"].as_str().unwrap().ends_with(" GMT"));
    let list = h.call("GET", &jobs_url(), "", ADMIN_USER).await.json();
    assert_eq!(list[0]["created_at"], b["created_at"]);
    assert_eq!(list[0]["updated_at"], b["updated_at"]);
}

// ---- This build's decisions -----------------------------------------------------------

/// Quorum 0 runs on no node and completes at once.
#[tokio::test]
async fn job_with_quorum_zero_is_complete() {
    let h = Harness::new().await;
    let job = h
        .create_job(
            r#"{"command":"sleep 1","nodes":["DONKEY","FIONA"],"quorum":0}"#,
            ADMIN_USER,
        )
        .await;
    let r = h.call("GET", &job, "", ADMIN_USER).await;
    check_job(
        &r,
        "sleep 1",
        json!({"unavailable": ["DONKEY", "FIONA"]}),
        3600,
        "complete",
    );
}

/// §8.3 item 22: duplicate node names are merged, keeping the first position.
#[tokio::test]
async fn job_duplicate_nodes_are_merged() {
    let h = Harness::new().await;
    let job = h
        .create_job(
            r#"{"command":"x","nodes":["FIONA","DONKEY","FIONA","DONKEY"]}"#,
            ADMIN_USER,
        )
        .await;
    let r = h.call("GET", &job, "", ADMIN_USER).await;
    check_job(
        &r,
        "x",
        json!({"unavailable": ["FIONA", "DONKEY"]}),
        3600,
        "quorum_failed",
    );
}

/// `pushy_job_writers` absent and `admins` absent too: 403 with the NOACCESS JSON.
#[tokio::test]
async fn jobs_post_without_admins_group_is_403_noaccess() {
    let h = Harness::new().await;
    h.delete_group("admins");
    for who in [ADMIN_USER, ADMIN_CLIENT, NORMAL_USER] {
        h.call("POST", &jobs_url(), JOB, who)
            .await
            .expect(403, noaccess(who));
    }
    // Reading is unaffected.
    h.call("GET", &jobs_url(), "", ADMIN_USER)
        .await
        .expect(200, json!([]));
}

/// §1.2 step 8: Content-Type is checked after authentication and authorization; no job
/// is created by a 415.
#[tokio::test]
async fn jobs_post_wrong_content_type_is_415_after_auth() {
    let h = Harness::new().await;
    let send = |who: &'static str, ct: Option<&'static str>| {
        let mut b = h.signed("POST", &jobs_url(), JOB, who);
        let headers = b.headers_mut().unwrap();
        headers.remove("content-type");
        if let Some(ct) = ct {
            headers.insert("content-type", ct.parse().unwrap());
        }
        h.send(b.body(Body::from(JOB)).unwrap())
    };
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let r = send(ADMIN_USER, ct).await;
        assert_eq!(r.status, 415, "{ct:?}: {}", r.text);
        assert!(r.json()["error"].is_array(), "{}", r.text);
        send(INVALID_USER, ct).await.expect(401, authn_invalid());
        send(NORMAL_USER, ct)
            .await
            .expect(403, noaccess(NORMAL_USER));
        send(OUTSIDE_USER, ct).await.expect(403, notassoc());
    }
    h.call("GET", &jobs_url(), "", ADMIN_USER)
        .await
        .expect(200, json!([]));
    // Parameters are ignored, the media type is case-insensitive.
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        check_created(&send(ADMIN_USER, Some(ct)).await, "http://push.example.com");
    }
}

/// §1.4.3: the list is ordered by `created_at` and holds summaries (no `nodes`, no
/// `quorum`; options only when given; `file_specified`, never the file).
#[tokio::test]
async fn jobs_list_is_ordered_by_creation_with_summaries() {
    let h = Harness::new().await;
    let mut ids = Vec::new();
    let bodies = [
        r#"{"command":"first","nodes":["DONKEY"],"quorum":0}"#,
        r#"{"command":"second","nodes":["DONKEY"],"user":"daemon","dir":"/tmp","env":{"E1":"a","E2":"b"},"capture_output":true,"file":"raw:foo"}"#,
        r#"{"command":"third","nodes":["DONKEY"],"env":{},"capture_output":false,"run_timeout":5}"#,
    ];
    for (i, body) in bodies.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
        ids.push(last_segment(&h.create_job(body, ADMIN_USER).await).to_owned());
    }
    let r = h.call("GET", &jobs_url(), "", NORMAL_USER).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let list = r.json();
    let list = list.as_array().unwrap();
    let got: Vec<&str> = list.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids);
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let base = [
        "id",
        "command",
        "status",
        "run_timeout",
        "created_at",
        "updated_at",
    ];
    assert_eq!(keys(&list[0]), base);
    assert_eq!(list[0]["status"], "complete");
    assert_eq!(list[0]["run_timeout"], 3600);
    let mut second = base.to_vec();
    second.extend(["user", "dir", "env", "capture_output", "file_specified"]);
    assert_eq!(keys(&list[1]), second);
    assert_eq!(list[1]["user"], "daemon");
    assert_eq!(list[1]["dir"], "/tmp");
    assert_eq!(list[1]["env"], json!({"E1": "a", "E2": "b"}));
    assert_eq!(list[1]["capture_output"], true);
    assert_eq!(list[1]["file_specified"], true);
    let mut third = base.to_vec();
    third.push("env");
    assert_eq!(keys(&list[2]), third);
    assert_eq!(list[2]["env"], json!({}));
    assert_eq!(list[2]["run_timeout"], 5);
    assert_eq!(list[2]["status"], "quorum_failed");
}

/// §1.4.4: `nodes` first; `?include_file=true` (exactly) gives `file` instead of
/// `file_specified`.
#[tokio::test]
async fn job_include_file_true_returns_the_file() {
    let h = Harness::new().await;
    let job = h
        .create_job(
            r#"{"command":"x","nodes":["DONKEY"],"file":"raw:foo"}"#,
            ADMIN_USER,
        )
        .await;
    let r = h.call("GET", &job, "", ADMIN_USER).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let b = r.json();
    assert_eq!(
        b.as_object().unwrap().keys().next().map(String::as_str),
        Some("nodes")
    );
    assert_eq!(b["file_specified"], true);
    assert!(b.get("file").is_none());
    for q in [
        "include_file=false",
        "include_file=TRUE",
        "include_file=1",
        "include_file",
    ] {
        let b = h
            .call("GET", &format!("{job}?{q}"), "", ADMIN_USER)
            .await
            .json();
        assert_eq!(b["file_specified"], true, "{q}");
        assert!(b.get("file").is_none(), "{q}");
    }
    let b = h
        .call("GET", &format!("{job}?include_file=true"), "", ADMIN_USER)
        .await
        .json();
    assert_eq!(b["file"], "raw:foo");
    assert!(b.get("file_specified").is_none());
    // Without a file neither key appears.
    let plain = h.create_job(JOB, ADMIN_USER).await;
    let b = h
        .call("GET", &format!("{plain}?include_file=true"), "", ADMIN_USER)
        .await
        .json();
    assert!(
        b.get("file").is_none() && b.get("file_specified").is_none(),
        "{b}"
    );
}

/// The abort route (not in the original): writers only; a finished job is a 409, an
/// unknown id 404, GET 405.
#[tokio::test]
async fn job_abort_route() {
    let h = Harness::new().await;
    let job = h.create_job(JOB, ADMIN_USER).await;
    let id = last_segment(&job).to_owned();
    let abort = format!("{job}/abort");
    let r = h.call("POST", &abort, "", ADMIN_USER).await;
    r.expect(
        409,
        json!({"error": format!("job {id} already finished: quorum_failed")}),
    );
    let done = h
        .create_job(
            r#"{"command":"x","nodes":["DONKEY"],"quorum":0}"#,
            ADMIN_USER,
        )
        .await;
    let r = h
        .call("POST", &format!("{done}/abort"), "", ADMIN_USER)
        .await;
    r.expect(
        409,
        json!({"error": format!("job {} already finished: complete", last_segment(&done))}),
    );
    for missing in ["abcdefabcdef807f32d9572f8aafbd03", "not_a_number"] {
        let r = h
            .call(
                "POST",
                &format!("{}/{missing}/abort", jobs_url()),
                "",
                ADMIN_USER,
            )
            .await;
        assert_eq!(r.status, 404, "{missing}: {}", r.text);
    }
    for method in ["GET", "PUT", "DELETE"] {
        assert_405(&h.call(method, &abort, "", ADMIN_USER).await, "POST");
    }
    h.call("POST", &abort, "", NORMAL_USER)
        .await
        .expect(403, noaccess(NORMAL_USER));
    h.call("POST", &abort, "", INVALID_USER)
        .await
        .expect(401, authn_invalid());
    h.call("POST", &abort, "", OUTSIDE_USER)
        .await
        .expect(403, notassoc());
    // The job is unchanged.
    let r = h.call("GET", &job, "", ADMIN_USER).await;
    check_job(
        &r,
        "sleep 1",
        json!({"unavailable": ["DONKEY"]}),
        3600,
        "quorum_failed",
    );
}
