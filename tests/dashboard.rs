//! The dashboard's logins and its cookie-authorized API (issue 16): a signed request
//! hands out a one-time login URL, its visit sets an HttpOnly SameSite session cookie,
//! and the API answers that cookie exactly as it answers signatures (readers read,
//! writers write, with the session's CSRF token); forged, reused, foreign or missing
//! logins are refused, in a cluster too.

mod common;

use axum::body::Body;
use axum::http::Request;
use std::sync::Arc;

use common::{ADMIN_USER, Harness, NORMAL_USER, ORG, OTHER_ORG, PgDb, Reply, config_for};
use pushy_server::store::{PostgresStore, Store};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

fn base() -> String {
    format!("/organizations/{ORG}/pushy/dashboard")
}

/// A login URL's path for `who` (signed request, as `push-jobs dashboard` makes it).
async fn login_path(h: &Harness, who: &str) -> String {
    let r = h
        .call("POST", &format!("{}/logins", base()), "{}", who)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let body = r.json();
    assert_eq!(body["expires_in"], 60);
    let url = body["url"].as_str().unwrap();
    url.split_once("push.example.com").unwrap().1.to_owned()
}

async fn get(h: &Harness, path: &str, cookie: Option<&str>, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method("GET").uri(path);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("pushy_dashboard={c}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    h.send(req.body(Body::empty()).unwrap()).await
}

async fn post(h: &Harness, path: &str, cookie: &str, csrf: Option<&str>, body: &str) -> Reply {
    let mut req = Request::builder()
        .method("POST")
        .uri(path)
        .header("cookie", format!("pushy_dashboard={cookie}"))
        .header("content-type", "application/json");
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    h.send(req.body(Body::from(body.to_owned())).unwrap()).await
}

/// Logs `who` in: the session cookie's value.
async fn session(h: &Harness, who: &str) -> String {
    let path = login_path(h, who).await;
    let r = get(h, &path, None, &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    cookie_of(&r)
}

fn cookie_of(r: &Reply) -> String {
    let set = r.headers["set-cookie"].to_str().unwrap();
    set.split(';')
        .next()
        .unwrap()
        .strip_prefix("pushy_dashboard=")
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_login_url_works_once_and_sets_a_guarded_cookie() {
    let h = Harness::new().await;
    let path = login_path(&h, ADMIN_USER).await;
    let r = get(&h, &path, None, &[("x-forwarded-proto", "https")]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.headers["location"], base());
    let set = r.headers["set-cookie"].to_str().unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Secure", "Max-Age=28800"] {
        assert!(set.contains(part), "{part} missing: {set}");
    }
    assert!(set.contains(&format!("Path={}", base())), "{set}");
    // Used once: the second visit is refused, and says how to get a new one.
    let again = get(&h, &path, None, &[]).await;
    assert_eq!(again.status, 401);
    assert!(again.text.contains("already used"), "{}", again.text);
    assert!(again.text.contains("push-jobs dashboard"), "{}", again.text);
    // Over plain HTTP the cookie is not Secure (the browser would not send it back).
    let plain = get(&h, &login_path(&h, ADMIN_USER).await, None, &[]).await;
    assert!(
        !plain.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Secure")
    );
    // Only a signed request gets a login URL.
    let unsigned = Request::builder()
        .method("POST")
        .uri(format!("{}/logins", base()))
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(unsigned).await.status, 400);
}

#[tokio::test]
async fn the_page_and_api_answer_a_session_as_the_api_answers_a_signature() {
    let h = Harness::new().await;
    let cookie = session(&h, ADMIN_USER).await;
    let page = get(&h, &base(), Some(&cookie), &[]).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    let me = get(&h, &format!("{}/api/session", base()), Some(&cookie), &[]).await;
    assert_eq!(me.status, 200, "{}", me.text);
    let me = me.json();
    assert_eq!(
        (me["user"].as_str(), me["can_write"].as_bool()),
        (Some(ADMIN_USER), Some(true))
    );
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    let states = get(
        &h,
        &format!("{}/api/node_states", base()),
        Some(&cookie),
        &[],
    )
    .await;
    assert_eq!((states.status, states.json()), (200, json!([])));

    // Writes need the session's CSRF token.
    let jobs = format!("{}/api/jobs", base());
    let body = r#"{"command":"chef-client","nodes":["DONKEY"]}"#;
    let r = post(&h, &jobs, &cookie, None, body).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = post(&h, &jobs, &cookie, Some("not-the-token"), body).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = post(&h, &jobs, &cookie, Some(&csrf), body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["uri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    // The dashboard's list adds who started each job and its node counts.
    let list = get(&h, &jobs, Some(&cookie), &[]).await.json();
    let mine = list
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id.as_str())
        .unwrap();
    assert_eq!(mine["requestor"], ADMIN_USER);
    assert!(mine["node_counts"].is_object(), "{mine}");
    let job = get(&h, &format!("{jobs}/{id}"), Some(&cookie), &[]).await;
    assert_eq!(job.status, 200, "{}", job.text);
    assert_eq!(job.json()["command"], "chef-client");
    let r = post(&h, &format!("{jobs}/{id}/abort"), &cookie, Some(&csrf), "").await;
    assert!(matches!(r.status, 200 | 409), "{} {}", r.status, r.text);
}

#[tokio::test]
async fn a_reader_reads_but_cannot_start_or_abort() {
    let h = Harness::new().await;
    let cookie = session(&h, NORMAL_USER).await;
    let me = get(&h, &format!("{}/api/session", base()), Some(&cookie), &[])
        .await
        .json();
    assert_eq!(me["can_write"], false);
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    let jobs = format!("{}/api/jobs", base());
    assert_eq!(get(&h, &jobs, Some(&cookie), &[]).await.status, 200);
    let body = r#"{"command":"chef-client","nodes":["DONKEY"]}"#;
    let r = post(&h, &jobs, &cookie, Some(&csrf), body).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let job = h.create_job(body, ADMIN_USER).await;
    let id = job.rsplit('/').next().unwrap();
    let r = post(&h, &format!("{jobs}/{id}/abort"), &cookie, Some(&csrf), "").await;
    assert_eq!(r.status, 403, "{}", r.text);
}

#[tokio::test]
async fn forged_foreign_and_missing_sessions_are_refused() {
    let h = Harness::new().await;
    let cookie = session(&h, ADMIN_USER).await;
    let api = format!("{}/api/jobs", base());
    // No cookie: the API says how to log in; the page too.
    let r = get(&h, &api, None, &[]).await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["error"][0]
            .as_str()
            .unwrap()
            .contains("push-jobs dashboard")
    );
    let page = get(&h, &base(), None, &[]).await;
    assert_eq!(page.status, 401);
    assert!(page.text.contains("push-jobs dashboard"), "{}", page.text);
    // A forged cookie (edited, or sealed by another key) is refused.
    let (payload, mac) = cookie.split_once('.').unwrap();
    let forged = format!("{payload}x.{mac}");
    assert_eq!(get(&h, &api, Some(&forged), &[]).await.status, 401);
    assert_eq!(get(&h, &api, Some("a.b"), &[]).await.status, 401);
    let other = Harness::new().await;
    let foreign_key = session(&other, ADMIN_USER).await;
    assert_eq!(get(&h, &api, Some(&foreign_key), &[]).await.status, 401);
    // This org's session opens no other org's dashboard.
    let other_org = format!("/organizations/{OTHER_ORG}/pushy/dashboard/api/jobs");
    assert_eq!(get(&h, &other_org, Some(&cookie), &[]).await.status, 401);
    // The cookie is not a signature: the signed API ignores it.
    let signed_api = format!("/organizations/{ORG}/pushy/jobs");
    assert_eq!(get(&h, &signed_api, Some(&cookie), &[]).await.status, 400);
}

#[tokio::test]
async fn writers_search_node_names_readers_may_not() {
    let h = Harness::new().await;
    let search = |q: &str| format!("{}/api/search?q={q}", base());
    let cookie = session(&h, ADMIN_USER).await;
    // The embedded server's nodes are its local directory's clients.
    let r = get(&h, &search("name:*client"), Some(&cookie), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({"nodes": ["admin_client", "bad_client", "non_admin_client"]})
    );
    let r = get(&h, &search("name:non%5F*"), Some(&cookie), &[]).await;
    assert_eq!(r.json(), json!({"nodes": ["non_admin_client"]}));
    // A query only a Chef Server answers, and none at all: 400 saying why.
    let r = get(&h, &search("role%3Aweb"), Some(&cookie), &[]).await;
    assert_eq!(r.status, 400);
    assert!(r.text.contains("name:GLOB"), "{}", r.text);
    let r = get(&h, &format!("{}/api/search", base()), Some(&cookie), &[]).await;
    assert_eq!(r.status, 400, "{}", r.text);
    // Searching asks the Chef Server as the server itself: writers only, sessions only.
    let reader = session(&h, NORMAL_USER).await;
    let r = get(&h, &search("*:*"), Some(&reader), &[]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(get(&h, &search("*:*"), None, &[]).await.status, 401);
}

async fn visit(state: &pushy_server::http::AppState, path: &str) -> Reply {
    let req = Request::builder().uri(path).body(Body::empty()).unwrap();
    let resp = pushy_server::service(state.clone())
        .oneshot(req)
        .await
        .unwrap();
    Reply::read(resp).await
}

/// The record of used logins is in the database: a URL traded for a session on one
/// instance is refused by another on the same PostgreSQL database. Both run in-process
/// on one data directory (one server key, so each accepts the other's sealed logins).
#[tokio::test]
async fn a_login_url_used_on_one_instance_is_refused_on_another() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let store = || async {
        let store = PostgresStore::connect(db.options(), 2).await.unwrap();
        Arc::new(store) as Arc<dyn Store>
    };
    let a = Harness::with_store(store().await, |_| {}).await;
    let b_token = CancellationToken::new();
    let b =
        pushy_server::build_state_with(config_for(a.tmp.path()), store().await, b_token.clone())
            .await
            .unwrap();

    let r = a
        .call(
            "POST",
            &format!("/organizations/{ORG}/pushy/dashboard/logins"),
            "{}",
            ADMIN_USER,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let url = r.json()["url"].as_str().unwrap().to_owned();
    let path = url.split_once("push.example.com").unwrap().1;

    let first = visit(&b, path).await;
    assert_eq!(first.status, 303, "{}", first.text);
    let again = visit(&a.state, path).await;
    assert_eq!(again.status, 401, "{}", again.text);
    assert!(again.text.contains("already used"), "{}", again.text);

    b_token.cancel();
    a.token.cancel();
}
