//! Pedant's shared "handles authentication headers correctly" suite (http.md §7.8,
//! items 144–176 except the skipped 149 and 175), run by [`run_suite`] against each
//! endpoint pedant includes it for: GET config/DONKEY (item 26), GET node_states and
//! node_states/some_node (item 38), POST jobs and GET job (item 58); plus GET jobs
//! (skipped in pedant) for good measure.
//!
//! Headers are manufactured as pedant's `manufacture_signed_headers` does: signing
//! description `version=1.0` by default, signature lines of 60 base64 characters.

mod common;
use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{TimeDelta, Utc};
use common::*;
use openssl::hash::{MessageDigest, hash};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Padding;
use openssl::sign::Signer;
use pushy_protocol::chef_auth::{format_timestamp, split_signature};
use serde_json::{Value, json};

const CCPK: &str = "1234567890123456789012345678901234567890";

/// One endpoint under test.
struct Target {
    method: &'static str,
    /// Path and query, as requested.
    url: String,
    body: String,
    /// A requestor for whom the plain request succeeds.
    success_user: &'static str,
    /// Extra request headers (not signed).
    extra: Vec<(&'static str, &'static str)>,
    /// The endpoint's success check.
    success: fn(&Reply) -> Result<(), String>,
}

/// The knobs of pedant's `manufacture_signed_headers`; `None` leaves a header out.
#[derive(Clone)]
struct Manufacture {
    sign: Option<String>,
    user_id: Option<String>,
    timestamp: Option<String>,
    /// `None`: the body's hash.
    hashed_body: Option<String>,
    /// Leave `X-Ops-Content-Hash` out.
    omit_hash: bool,
    method: String,
    path: String,
    string_to_sign: Option<String>,
    /// `None`: computed; `Some(None)`: no signature headers; `Some(Some(s))`: `s`.
    signature: Option<Option<String>>,
}

fn b64_digest(d: MessageDigest, data: &[u8]) -> String {
    STANDARD.encode(hash(d, data).unwrap())
}

impl Manufacture {
    fn new(t: &Target, who: &str) -> Manufacture {
        Manufacture {
            sign: Some("version=1.0".into()),
            user_id: Some(who.into()),
            timestamp: Some(format_timestamp(Utc::now())),
            hashed_body: None,
            omit_hash: false,
            method: t.method.into(),
            path: t.url.split('?').next().unwrap().into(),
            string_to_sign: None,
            signature: None,
        }
    }

    fn version13(&self) -> bool {
        self.sign
            .as_deref()
            .is_some_and(|s| s.contains("version=1.3"))
    }

    fn digest(&self) -> MessageDigest {
        if self.version13() {
            MessageDigest::sha256()
        } else {
            MessageDigest::sha1()
        }
    }

    /// The headers, in the Ruby signer's order.
    fn headers(&self, key: &PKey<Private>, body: &str) -> Vec<(String, String)> {
        let d = self.digest();
        let hashed_body = self
            .hashed_body
            .clone()
            .unwrap_or_else(|| b64_digest(d, body.as_bytes()));
        let ts = self.timestamp.clone().unwrap_or_default();
        let user = self.user_id.clone().unwrap_or_default();
        let method = self.method.to_ascii_uppercase();
        let string_to_sign = self.string_to_sign.clone().unwrap_or_else(|| {
            if self.version13() {
                format!(
                    "Method:{method}\nPath:{}\nX-Ops-Content-Hash:{hashed_body}\nX-Ops-Sign:version=1.3\nX-Ops-Timestamp:{ts}\nX-Ops-UserId:{user}\nX-Ops-Server-API-Version:0",
                    self.path
                )
            } else {
                format!(
                    "Method:{method}\nHashed Path:{}\nX-Ops-Content-Hash:{hashed_body}\nX-Ops-Timestamp:{ts}\nX-Ops-UserId:{user}",
                    b64_digest(d, self.path.as_bytes())
                )
            }
        });
        let signature = match &self.signature {
            Some(s) => s.clone(),
            None if self.version13() => {
                let mut signer = Signer::new(d, key).unwrap();
                signer.update(string_to_sign.as_bytes()).unwrap();
                Some(STANDARD.encode(signer.sign_to_vec().unwrap()))
            }
            None => {
                let rsa = key.rsa().unwrap();
                let mut out = vec![0; rsa.size() as usize];
                let n = rsa
                    .private_encrypt(string_to_sign.as_bytes(), &mut out, Padding::PKCS1)
                    .unwrap();
                out.truncate(n);
                Some(STANDARD.encode(out))
            }
        };
        let mut h = Vec::new();
        let mut push = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                h.push((k.to_owned(), v.clone()));
            }
        };
        push("X-Ops-Sign", &self.sign);
        push("X-Ops-Userid", &self.user_id);
        push("X-Ops-Timestamp", &self.timestamp);
        push(
            "X-Ops-Content-Hash",
            &(!self.omit_hash).then_some(hashed_body),
        );
        if let Some(sig) = signature {
            // Ruby's `Base64.encode64(..).split("\n")`: 60-character lines; nothing for "".
            for (i, line) in split_signature(&sig).into_iter().enumerate() {
                h.push((format!("X-Ops-Authorization-{}", i + 1), line));
            }
        }
        h
    }
}

fn set(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    headers.push((name.to_owned(), value.to_owned()));
}

fn remove(headers: &mut Vec<(String, String)>, name: &str) {
    let before = headers.len();
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    assert_ne!(before, headers.len(), "no {name} to remove");
}

fn auth_lines(headers: &[(String, String)]) -> usize {
    headers
        .iter()
        .filter(|(k, _)| k.starts_with("X-Ops-Authorization-"))
        .count()
}

async fn send(h: &Harness, t: &Target, headers: &[(String, String)]) -> Reply {
    let mut b = Request::builder()
        .method(t.method)
        .uri(&t.url)
        .header("Host", "push.example.com");
    if t.method == "POST" {
        b = b.header("Content-Type", "application/json");
    }
    for (k, v) in &t.extra {
        b = b.header(*k, *v);
    }
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    h.send(b.body(Body::from(t.body.clone())).unwrap()).await
}

/// Request headers in sending order.
type Headers = Vec<(String, String)>;

/// What a case expects.
enum Expect {
    Success,
    Status(u16),
}

/// Runs the §7.8 suite against `t`; collects every mismatch and fails once with all.
async fn run_suite(h: &Harness, t: &Target) {
    let who = t.success_user;
    let key = h.key(who);
    let base = || Manufacture::new(t, who);
    let hours = |n: i64| format_timestamp(Utc::now() + TimeDelta::hours(n));
    let other_body_hash = b64_digest(MessageDigest::sha1(), b"{thisisnotevenjson}");

    let mut cases: Vec<(&str, Headers, Expect)> = Vec::new();
    let m = |desc: &'static str, f: &dyn Fn(&mut Manufacture), e: Expect| {
        let mut x = base();
        f(&mut x);
        (desc, x.headers(&key, &t.body), e)
    };

    // 144
    cases.push(m(
        "signing protocol 1.3",
        &|x| x.sign = Some("algorithm=sha256;version=1.3".into()),
        Expect::Success,
    ));
    // 145
    cases.push(m("everything correct", &|_| {}, Expect::Success));
    // 146–148
    cases.push(m(
        "missing X-Ops-Sign",
        &|x| x.sign = None,
        Expect::Status(400),
    ));
    cases.push(m(
        "unsupported X-Ops-Sign version",
        &|x| x.sign = Some("version=8.1".into()),
        Expect::Status(400),
    ));
    cases.push(m(
        "empty X-Ops-Sign",
        &|x| x.sign = Some(String::new()),
        Expect::Status(400),
    ));
    // 150
    cases.push(m(
        "nonexistent X-Ops-Userid",
        &|x| x.user_id = Some("nowaythisexists".into()),
        Expect::Status(401),
    ));
    // 151
    let mut hs = base().headers(&key, &t.body);
    set(&mut hs, "X-Ops-Userid", INVALID_USER);
    cases.push((
        "X-Ops-Userid replaced after signing (unknown)",
        hs,
        Expect::Status(401),
    ));
    let mut hs = base().headers(&key, &t.body);
    set(
        &mut hs,
        "X-Ops-Userid",
        if who == NORMAL_USER {
            ADMIN_USER
        } else {
            NORMAL_USER
        },
    );
    cases.push((
        "X-Ops-Userid replaced after signing (org member)",
        hs,
        Expect::Status(401),
    ));
    // 152–156
    cases.push(m(
        "missing X-Ops-Timestamp",
        &|x| x.timestamp = None,
        Expect::Status(400),
    ));
    cases.push(m(
        "empty X-Ops-Timestamp",
        &|x| x.timestamp = Some(String::new()),
        Expect::Status(400),
    ));
    cases.push(m(
        "malformed X-Ops-Timestamp",
        &|x| x.timestamp = Some("xxx".into()),
        Expect::Status(401),
    ));
    cases.push(m(
        "old X-Ops-Timestamp",
        &|x| x.timestamp = Some(hours(-1)),
        Expect::Status(401),
    ));
    cases.push(m(
        "future X-Ops-Timestamp",
        &|x| x.timestamp = Some(hours(1)),
        Expect::Status(401),
    ));
    // 157
    cases.push(m(
        "recent X-Ops-Timestamp",
        &|x| x.timestamp = Some(format_timestamp(Utc::now() - TimeDelta::seconds(30))),
        Expect::Success,
    ));
    // 158
    let mut hs = base().headers(&key, &t.body);
    set(
        &mut hs,
        "X-Ops-Timestamp",
        &format_timestamp(Utc::now() - TimeDelta::seconds(30)),
    );
    cases.push((
        "X-Ops-Timestamp changed after signing",
        hs,
        Expect::Status(401),
    ));
    // 159–160
    cases.push(m(
        "missing X-Ops-Content-Hash",
        &|x| x.omit_hash = true,
        Expect::Status(400),
    ));
    cases.push(m(
        "empty X-Ops-Content-Hash",
        &|x| x.hashed_body = Some(String::new()),
        Expect::Status(400),
    ));
    // 161–162
    cases.push(m(
        "malformed X-Ops-Content-Hash",
        &|x| x.hashed_body = Some("xxx".into()),
        Expect::Status(401),
    ));
    let ob = other_body_hash.clone();
    cases.push(m(
        "body does not match X-Ops-Content-Hash and signature",
        &move |x| x.hashed_body = Some(ob.clone()),
        Expect::Status(401),
    ));
    // 163
    let mut hs = base().headers(&key, &t.body);
    set(&mut hs, "X-Ops-Content-Hash", &other_body_hash);
    cases.push((
        "X-Ops-Content-Hash replaced after signing",
        hs,
        Expect::Status(401),
    ));
    // 164–166
    cases.push(m(
        "no X-Ops-Authorization headers",
        &|x| x.signature = Some(None),
        Expect::Status(401),
    ));
    cases.push(m(
        "malformed signature",
        &|x| x.signature = Some(Some("xxx".into())),
        Expect::Status(401),
    ));
    cases.push(m(
        "empty signature",
        &|x| x.signature = Some(Some(String::new())),
        Expect::Status(401),
    ));
    let mut hs = base().headers(&key, &t.body);
    set(&mut hs, "X-Ops-Authorization-1", "");
    hs.retain(|(k, _)| !k.starts_with("X-Ops-Authorization-") || k == "X-Ops-Authorization-1");
    cases.push(("empty X-Ops-Authorization-1 value", hs, Expect::Status(401)));
    // 167–169
    let full = base().headers(&key, &t.body);
    let lines = auth_lines(&full);
    assert!(
        lines >= 3,
        "a 2048-bit signature spans 6 lines, got {lines}"
    );
    for (desc, n) in [
        ("X-Ops-Authorization-1 removed", 1),
        ("X-Ops-Authorization-2 removed", 2),
        ("last X-Ops-Authorization line removed", lines),
    ] {
        let mut hs = full.clone();
        remove(&mut hs, &format!("X-Ops-Authorization-{n}"));
        cases.push((desc, hs, Expect::Status(401)));
    }
    // 170–173
    let other_method = if t.method == "GET" { "POST" } else { "GET" };
    cases.push(m(
        "different method in the signature",
        &move |x| x.method = other_method.into(),
        Expect::Status(401),
    ));
    cases.push(m(
        "different path in the signature",
        &|x| x.path = "/organizations/SomeoneElse/whatever".into(),
        Expect::Status(401),
    ));
    cases.push(m(
        "empty decoded signature",
        &|x| x.string_to_sign = Some(String::new()),
        Expect::Status(401),
    ));
    cases.push(m(
        "malformed decoded signature",
        &|x| x.string_to_sign = Some("XXX".into()),
        Expect::Status(401),
    ));
    // 174
    let other = base().headers(&key, r#"{ "noooo" => "kh11n" }"#);
    let mut hs: Vec<_> = full
        .iter()
        .filter(|(k, _)| !k.starts_with("X-Ops-Authorization-"))
        .cloned()
        .collect();
    hs.extend(
        other
            .into_iter()
            .filter(|(k, _)| k.starts_with("X-Ops-Authorization-")),
    );
    cases.push(("signature over a different body", hs, Expect::Status(401)));
    // Signed by another principal's key.
    let mut x = base();
    x.user_id = Some(who.into());
    let hs = x.headers(&h.key(INVALID_USER), &t.body);
    cases.push(("signed with another key", hs, Expect::Status(401)));

    let mut failures = Vec::new();
    for (desc, headers, expect) in cases {
        let r = send(h, t, &headers).await;
        let outcome = match expect {
            Expect::Success => (t.success)(&r),
            Expect::Status(s) if r.status == s => {
                // Every error is a JSON object with an `error` key.
                match serde_json::from_str::<Value>(&r.text) {
                    Ok(v) if v.get("error").is_some() => Ok(()),
                    _ => Err(format!("error body is not {{\"error\":..}}: {}", r.text)),
                }
            }
            Expect::Status(s) => Err(format!("want {s}, got {} {}", r.status, r.text)),
        };
        if let Err(e) = outcome {
            failures.push(format!("{} {}: {desc}: {e}", t.method, t.url));
        }
    }
    // 176: a plain request by the success user, as the harness signs it.
    let mut b = h.signed(t.method, &t.url, &t.body, who);
    for (k, v) in &t.extra {
        b = b.header(*k, *v);
    }
    let r = h.send(b.body(Body::from(t.body.clone())).unwrap()).await;
    if let Err(e) = (t.success)(&r) {
        failures.push(format!("{} {}: plain pedant request: {e}", t.method, t.url));
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn status_is(r: &Reply, s: u16) -> Result<Value, String> {
    if r.status != s {
        return Err(format!("want {s}, got {} {}", r.status, r.text));
    }
    serde_json::from_str(&r.text).map_err(|e| format!("not JSON ({e}): {}", r.text))
}

fn check(ok: bool, what: &str, body: &Value) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{what}: {body}"))
    }
}

/// Item 10's subset.
fn config_success(r: &Reply) -> Result<(), String> {
    let b = status_is(r, 200)?;
    check(b["type"] == "config", "type", &b)?;
    check(b["host"] == "127.0.0.1", "host", &b)?;
    check(b["node"] == "DONKEY", "node", &b)?;
    check(b["organization"] == ORG, "organization", &b)?;
    check(
        b["public_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("-----BEGIN PUBLIC KEY-----")),
        "public_key",
        &b,
    )?;
    let hb = r.expected_heartbeat();
    check(b["push_jobs"]["heartbeat"] == hb, "heartbeat", &b)?;
    check(
        b["encoded_session_key"]["method"] == "hmac_sha256",
        "session key method",
        &b,
    )?;
    check(
        b["encoded_session_key"]["key"].is_string(),
        "session key",
        &b,
    )?;
    check(
        b["lifetime"] == 3600 && b["max_message_skew"] == 300,
        "lifetime/skew",
        &b,
    )?;
    check(b["incarnation_id"].is_string(), "incarnation_id", &b)
}

fn node_list_success(r: &Reply) -> Result<(), String> {
    let b = status_is(r, 200)?;
    check(b == json!([]), "node list", &b)
}

fn node_named_success(r: &Reply) -> Result<(), String> {
    let b = status_is(r, 200)?;
    let want =
        json!({"availability": "unavailable", "node_name": "some_node", "status": "offline"});
    check(b == want, "node state", &b)
}

fn is_job_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Item 58: exact `{"uri": /^https:\/\/.*\/jobs\/[0-9a-f]{32}$/}`.
fn job_created_success(r: &Reply) -> Result<(), String> {
    let b = status_is(r, 201)?;
    let obj = b.as_object().ok_or("not an object")?;
    check(obj.len() == 1, "only uri", &b)?;
    let uri = b["uri"].as_str().unwrap_or_default();
    let ok = uri.starts_with("https://")
        && uri
            .rsplit_once("/jobs/")
            .is_some_and(|(_, id)| is_job_id(id));
    check(ok, "uri", &b)
}

fn parse_date(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        chrono::NaiveDateTime::parse_from_str(s, "%a, %d %b %Y %H:%M:%S GMT").is_ok()
    })
}

/// Item 58: exact job body.
fn job_get_success(r: &Reply) -> Result<(), String> {
    let b = status_is(r, 200)?;
    let mut keys: Vec<&str> = b
        .as_object()
        .ok_or("not an object")?
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    check(
        keys == [
            "command",
            "created_at",
            "id",
            "nodes",
            "run_timeout",
            "status",
            "updated_at",
        ],
        "keys",
        &b,
    )?;
    check(b["command"] == "sleep 1", "command", &b)?;
    check(b["id"].as_str().is_some_and(is_job_id), "id", &b)?;
    check(
        b["nodes"] == json!({"unavailable": ["DONKEY"]}),
        "nodes",
        &b,
    )?;
    check(b["run_timeout"] == 3600, "run_timeout", &b)?;
    check(b["status"] == "quorum_failed", "status", &b)?;
    check(
        parse_date(&b["created_at"]) && parse_date(&b["updated_at"]),
        "dates",
        &b,
    )
}

fn job_list_success(r: &Reply) -> Result<(), String> {
    let b = status_is(r, 200)?;
    check(b.as_array().is_some_and(|a| a.len() == 1), "one job", &b)
}

/// Item 26.
#[tokio::test]
async fn auth_headers_suite_get_config() {
    let h = Harness::new().await;
    let t = Target {
        method: "GET",
        url: format!("/organizations/{ORG}/pushy/config/DONKEY?ccpk={CCPK}"),
        body: String::new(),
        success_user: ADMIN_USER,
        extra: vec![],
        success: config_success,
    };
    run_suite(&h, &t).await;
}

/// Item 38, list.
#[tokio::test]
async fn auth_headers_suite_get_node_states() {
    let h = Harness::new().await;
    let t = Target {
        method: "GET",
        url: format!("/organizations/{ORG}/pushy/node_states"),
        body: String::new(),
        success_user: ADMIN_USER,
        extra: vec![],
        success: node_list_success,
    };
    run_suite(&h, &t).await;
}

/// Item 38, named.
#[tokio::test]
async fn auth_headers_suite_get_node_state() {
    let h = Harness::new().await;
    let t = Target {
        method: "GET",
        url: format!("/organizations/{ORG}/pushy/node_states/some_node"),
        body: String::new(),
        success_user: ADMIN_USER,
        extra: vec![],
        success: node_named_success,
    };
    run_suite(&h, &t).await;
}

/// Item 58, POST jobs (behind nginx: `X-Forwarded-Proto: https`).
#[tokio::test]
async fn auth_headers_suite_post_jobs() {
    let h = Harness::new().await;
    let t = Target {
        method: "POST",
        url: format!("/organizations/{ORG}/pushy/jobs"),
        body: r#"{"command":"sleep 1","nodes":["DONKEY"]}"#.into(),
        success_user: ADMIN_USER,
        extra: vec![("X-Forwarded-Proto", "https")],
        success: job_created_success,
    };
    run_suite(&h, &t).await;
}

/// Item 58, GET job.
#[tokio::test]
async fn auth_headers_suite_get_job() {
    let h = Harness::new().await;
    let job = h
        .create_job(r#"{"command":"sleep 1","nodes":["DONKEY"]}"#, ADMIN_USER)
        .await;
    let t = Target {
        method: "GET",
        url: job,
        body: String::new(),
        success_user: ADMIN_USER,
        extra: vec![],
        success: job_get_success,
    };
    run_suite(&h, &t).await;
}

/// Item 58's skipped part: GET jobs.
#[tokio::test]
async fn auth_headers_suite_get_jobs() {
    let h = Harness::new().await;
    h.create_job(r#"{"command":"sleep 1","nodes":["DONKEY"]}"#, ADMIN_USER)
        .await;
    let t = Target {
        method: "GET",
        url: format!("/organizations/{ORG}/pushy/jobs"),
        body: String::new(),
        success_user: NORMAL_USER,
        extra: vec![],
        success: job_list_success,
    };
    run_suite(&h, &t).await;
}
