//! The dashboard's logins and its cookie-authorized API (issue 16): a signed request by a
//! user hands out a one-time login URL, whose page's form (a POST) sets an HttpOnly
//! SameSite session cookie, and the API answers that cookie exactly as it answers
//! signatures (readers read, writers write, with the session's CSRF token); forged,
//! reused, expired, foreign or missing logins are refused, in a cluster too, and a client
//! never passes for the user of the same name.

mod common;

use axum::body::Body;
use axum::http::Request;
use std::sync::Arc;

use common::{ADMIN_USER, Harness, NORMAL_USER, ORG, OTHER_ORG, PgDb, Reply, chef_dir, config_for};
use pushy_server::chef::{PrincipalKind, local_admin};
use pushy_server::dashboard::session::SESSION_LIFETIME;
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

/// Sends a login URL's form: a POST from its own page (`Sec-Fetch-Site: same-origin`, as
/// a browser says it), plus `headers`.
async fn enter(h: &Harness, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder()
        .method("POST")
        .uri(path)
        .header("sec-fetch-site", "same-origin");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    h.send(req.body(Body::empty()).unwrap()).await
}

/// Logs `who` in as a browser does, the page then its button: the session cookie's value.
async fn session(h: &Harness, who: &str) -> String {
    let path = login_path(h, who).await;
    let page = get(h, &path, None, &[]).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("id=\"login-continue\""), "{}", page.text);
    let r = enter(h, &path, &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    cookie_of(&r)
}

/// A session cookie for `who` (of `kind`) sealed by the server's own dashboard key,
/// started at `at` (Unix seconds): for sessions no login URL hands out.
fn sealed_session(h: &Harness, who: &str, kind: PrincipalKind, at: i64) -> String {
    let d = &h.state.dashboard;
    let login = d.open_login(&d.login(who, kind, ORG, at), ORG, at).unwrap();
    d.start_session(login, at).0
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
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
    // A GET (a browser, or a chat's link preview) only shows whom it logs in, and a form
    // posting to the same URL; it uses nothing up.
    for _ in 0..2 {
        let page = get(&h, &path, None, &[]).await;
        assert_eq!(page.status, 200, "{}", page.text);
        assert!(page.text.contains(ADMIN_USER), "{}", page.text);
        assert!(page.text.contains(ORG), "{}", page.text);
        assert!(
            page.text
                .contains(&format!("<form method=\"post\" action=\"{path}\">")),
            "{}",
            page.text
        );
        assert!(
            page.text
                .contains("<button id=\"login-continue\" type=\"submit\">")
        );
        assert_guarded(&page);
        assert!(!page.headers.contains_key("set-cookie"));
    }
    let r = enter(&h, &path, &[("x-forwarded-proto", "https")]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.headers["location"], base());
    let set = r.headers["set-cookie"].to_str().unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Secure", "Max-Age=28800"] {
        assert!(set.contains(part), "{part} missing: {set}");
    }
    assert!(set.contains(&format!("Path={}", base())), "{set}");
    // Used once: the second POST is refused, and says how to get a new one.
    let again = enter(&h, &path, &[]).await;
    assert_eq!(again.status, 401);
    assert!(again.text.contains("already used"), "{}", again.text);
    assert!(again.text.contains("push-jobs dashboard"), "{}", again.text);
    // Over plain HTTP the cookie is not Secure (the browser would not send it back).
    let plain = enter(&h, &login_path(&h, ADMIN_USER).await, &[]).await;
    assert!(
        !plain.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Secure")
    );
    // A forged link shows the refused page, to GET and POST alike; other methods are 405.
    let forged = format!("{}/login/a.b", base());
    for r in [
        get(&h, &forged, None, &[]).await,
        enter(&h, &forged, &[]).await,
    ] {
        assert_eq!(r.status, 401, "{}", r.text);
        assert!(r.text.contains("push-jobs dashboard"), "{}", r.text);
        assert_guarded(&r);
    }
    let put = Request::builder()
        .method("PUT")
        .uri(login_path(&h, ADMIN_USER).await)
        .body(Body::empty())
        .unwrap();
    let put = h.send(put).await;
    assert_eq!(put.status, 405, "{}", put.text);
    assert_eq!(put.headers["allow"], "GET, POST");
    // Only a signed request gets a login URL.
    let unsigned = Request::builder()
        .method("POST")
        .uri(format!("{}/logins", base()))
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(unsigned).await.status, 400);
}

/// Another site's page cannot submit the login form (to log its visitor in as someone
/// else): the browser says where the POST came from, and the token survives.
#[tokio::test]
async fn a_login_posted_from_another_site_is_refused_and_not_used_up() {
    let h = Harness::new().await;
    let path = login_path(&h, ADMIN_USER).await;
    for site in ["cross-site", "same-site", "none"] {
        let mut req = Request::builder()
            .method("POST")
            .uri(&path)
            .header("sec-fetch-site", site);
        req = req.header("content-type", "application/x-www-form-urlencoded");
        let r = h.send(req.body(Body::empty()).unwrap()).await;
        assert_eq!(r.status, 403, "{site}: {}", r.text);
        assert!(r.text.contains("another site"), "{}", r.text);
        assert!(!r.headers.contains_key("set-cookie"));
        assert_guarded(&r);
    }
    // A browser that does not send the header is let through (the token is the secret).
    let r = h
        .send(
            Request::builder()
                .method("POST")
                .uri(&path)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text);
}

/// The headers of every dashboard page (the login's included).
fn assert_guarded(r: &Reply) {
    let csp = r.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert_eq!(r.headers["x-frame-options"], "DENY");
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["referrer-policy"], "no-referrer");
}

/// Chef lets a user and a client of one org share a name, and authorizes them apart
/// (a group's `users` and `clients`): a client's key must never open a session with the
/// user's rights. Clients get no login at all, and a session names its principal's kind.
#[tokio::test]
async fn a_client_never_passes_for_the_user_of_its_name() {
    let h = Harness::new().await;
    let twin_key = h.tmp.path().join("twin-client.pem");
    local_admin::create_client(&chef_dir(h.tmp.path()), ORG, ADMIN_USER, false, &twin_key).unwrap();
    // Signed with the client's key: authenticated as the client, refused a login.
    let logins = format!("{}/logins", base());
    let r = h
        .send(signed_with_key(&logins, ADMIN_USER, &twin_key))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let why = r.json()["error"][0].as_str().unwrap().to_owned();
    assert!(why.contains("client") && why.contains("for users"), "{why}");
    // The user of that name still logs in, with its rights.
    let user = session(&h, ADMIN_USER).await;
    let me = format!("{}/api/session", base());
    let r = get(&h, &me, Some(&user), &[]).await.json();
    assert_eq!(r["can_write"], true);
    // A session sealed for the client (had one been handed out) is the client's: its
    // rights, not the admin user's.
    let client = sealed_session(&h, ADMIN_USER, PrincipalKind::Client, now());
    let r = get(&h, &me, Some(&client), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let csrf = r.json()["csrf"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["can_write"], false);
    let jobs = format!("{}/api/jobs", base());
    let body = r#"{"command":"chef-client","nodes":["DONKEY"]}"#;
    let r = post(&h, &jobs, &client, Some(&csrf), body).await;
    assert_eq!(r.status, 403, "{}", r.text);
    // A kind with no principal of that name behind it is nobody.
    let nobody = sealed_session(&h, NORMAL_USER, PrincipalKind::Client, now());
    assert_eq!(get(&h, &me, Some(&nobody), &[]).await.status, 401);
}

/// A request signed by the principal `who` with the private key at `key`.
fn signed_with_key(path: &str, who: &str, key: &std::path::Path) -> Request<Body> {
    let pem = std::fs::read_to_string(key).unwrap();
    let key = pushy_protocol::keys::private_key_from_pem(&pem).unwrap();
    let ts = pushy_protocol::chef_auth::format_timestamp(chrono::Utc::now());
    let body = "{}";
    let req = pushy_protocol::chef_auth::Request {
        method: "POST",
        path,
        body: body.as_bytes(),
        user_id: who,
        timestamp: &ts,
        server_api_version: None,
    };
    let headers = pushy_protocol::chef_auth::sign_request(
        &key,
        pushy_protocol::chef_auth::ProtocolVersion::V1_0,
        &req,
    )
    .unwrap();
    let mut b = Request::builder()
        .method("POST")
        .uri(path)
        .header("Host", "push.example.com")
        .header("Content-Type", "application/json");
    for (k, v) in headers {
        b = b.header(k, v);
    }
    b.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn the_page_and_api_answer_a_session_as_the_api_answers_a_signature() {
    let h = Harness::new().await;
    let cookie = session(&h, ADMIN_USER).await;
    let page = get(&h, &base(), Some(&cookie), &[]).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_guarded(&page);
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
    // An abort is a write too: the CSRF token, and POST only.
    let abort = format!("{jobs}/{id}/abort");
    let r = post(&h, &abort, &cookie, None, "").await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = get(&h, &abort, Some(&cookie), &[]).await;
    assert_eq!(r.status, 405, "{}", r.text);
    let r = post(&h, &abort, &cookie, Some(&csrf), "").await;
    assert!(matches!(r.status, 200 | 409), "{} {}", r.status, r.text);
}

/// Whatever answers under `dashboard/api/` (data, refusals, unknown paths) is neither
/// stored nor sniffed: node output is `application/octet-stream`.
#[tokio::test]
async fn every_api_answer_is_uncached_and_unsniffed() {
    let h = Harness::new().await;
    let cookie = session(&h, ADMIN_USER).await;
    let api = |p: &str| format!("{}/api/{p}", base());
    let answers = [
        get(&h, &api("session"), Some(&cookie), &[]).await,
        get(&h, &api("node_states"), Some(&cookie), &[]).await,
        get(&h, &api("jobs"), None, &[]).await,
        get(&h, &api("nothing/here"), Some(&cookie), &[]).await,
        post(&h, &api("jobs"), &cookie, None, "{}").await,
    ];
    let statuses: Vec<_> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 401, 404, 403]);
    for r in &answers {
        assert_eq!(r.headers["cache-control"], "no-store", "{}", r.status);
        assert_eq!(
            r.headers["x-content-type-options"], "nosniff",
            "{}",
            r.status
        );
    }
    // The signed API keeps its own headers.
    let signed = h
        .call(
            "GET",
            &format!("/organizations/{ORG}/pushy/node_states"),
            "",
            ADMIN_USER,
        )
        .await;
    assert_eq!(signed.status, 200);
    assert!(!signed.headers.contains_key("x-content-type-options"));
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
    // An expired session (sealed by this server, started longer ago than a session
    // lasts) is refused, saying so.
    let old = sealed_session(
        &h,
        ADMIN_USER,
        PrincipalKind::User,
        now() - SESSION_LIFETIME - 5,
    );
    let r = get(&h, &api, Some(&old), &[]).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("expired"), "{}", r.text);
    let fresh = sealed_session(&h, ADMIN_USER, PrincipalKind::User, now());
    assert_eq!(get(&h, &api, Some(&fresh), &[]).await.status, 200);
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

/// Sends a login URL's form to the instance `state`.
async fn visit(state: &pushy_server::http::AppState, path: &str) -> Reply {
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .body(Body::empty())
        .unwrap();
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
