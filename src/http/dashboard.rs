//! The dashboard's routes (issue 16): the signed request that hands out a one-time login
//! URL, that URL (a page asking to confirm, whose form sets the session cookie), the page
//! and its assets. The page's data comes from the API's own handlers, mounted again under
//! `dashboard/api/` where the request pipeline takes the session cookie instead of a
//! signature (`session_cookie`); [`api_headers`] guards every answer there.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::extract::Segments;
use super::jobs::{base_url, forwarded_scheme};
use super::pipeline::{Endpoint, GET_JSON, admit, check_method};
use super::session_cookie::{COOKIE, is_dashboard_api, session_of};
use super::state::AppState;
use crate::auth::{self, Rule};
use crate::chef::PrincipalKind;
use crate::dashboard::{self, session};

const LOGINS: Endpoint = Endpoint {
    methods: &[Method::POST],
    allow: "POST",
    produces: "application/json",
};
const PAGE: Endpoint = Endpoint {
    methods: &[Method::GET],
    allow: "GET",
    produces: "text/html",
};
/// The login URL: GET shows what it logs in as, POST (its form) logs in.
const LOGIN: Endpoint = Endpoint {
    methods: &[Method::GET, Method::POST],
    allow: "GET, POST",
    produces: "text/html",
};

/// The dashboard's path for `org`.
fn base(org: &str) -> String {
    format!("/organizations/{org}/pushy/dashboard")
}

/// `POST …/dashboard/logins` (signed, any reader): a login URL for the requestor, good
/// once, for a minute. `push-jobs dashboard` calls it. Users only: a dashboard is for
/// people, and a client's key sits on a node, where nobody should get a browser session
/// with the node's rights out of it.
pub(super) async fn logins(
    State(state): State<AppState>,
    Segments(org): Segments<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (ok, ()) = admit(&state, req, &LOGINS, &org, Rule::Read, |_, _| Ok(())).await?;
    let who = &ok.who;
    if who.kind == PrincipalKind::Client {
        tracing::info!(requestor = %who.name, org, "dashboard login refused to a client");
        let why = format!(
            "'{}' signed as a client: the dashboard is for users; run `push-jobs dashboard` \
             with a user's name and key",
            who.name
        );
        return Ok((StatusCode::FORBIDDEN, axum::Json(json!({"error": [why]}))).into_response());
    }
    let now = chrono::Utc::now().timestamp();
    let token = state.dashboard.login(&who.name, who.kind, &org, now);
    let url = format!(
        "{}{}/login/{token}",
        base_url(&ok.parts.headers),
        base(&org)
    );
    tracing::info!(requestor = %who.name, org, "dashboard login link issued");
    let body = json!({"url": url, "expires_in": session::LOGIN_LIFETIME});
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// `…/dashboard/login/TOKEN`. A GET only shows whom the link logs in and a button; the
/// button's POST trades the one-time token for the session cookie and sends the browser
/// to the page. Two steps because a GET is not the user's intent: chat and mail link
/// previews fetch the link first and would use it up; and a link clicked in webmail is a
/// cross-site navigation, whose redirects stay cross-site, so the browser would withhold
/// the new `SameSite=Strict` cookie from the page it lands on. The POST comes from this
/// page, so the page it is sent to is a same-site navigation and gets the cookie.
pub(super) async fn enter(
    State(state): State<AppState>,
    Segments((org, token)): Segments<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    check_method(req.method(), &LOGIN)?;
    let refused = |status: StatusCode, refusal: &str| {
        tracing::info!(org, %refusal, "dashboard login link refused");
        refused_page(status, refusal)
    };
    if req.method() == Method::POST && cross_site(req.headers()) {
        return Ok(refused(
            StatusCode::FORBIDDEN,
            "the login was sent from another site: open the login link yourself and press \
             \"Open the dashboard\"",
        ));
    }
    let now = chrono::Utc::now().timestamp();
    let login = match state.dashboard.open_login(&token, &org, now) {
        Ok(login) => login,
        Err(r) => return Ok(refused(StatusCode::UNAUTHORIZED, &session_refusal(r))),
    };
    if req.method() == Method::GET {
        return Ok(confirm_page(login.user(), &org, &login_path(&org, &token)));
    }
    // Claimed in the store, which every instance of a cluster shares: the URL works once
    // whichever instance the browser reaches.
    let claimed = state
        .store
        .claim_login(login.nonce(), login.used_until(), now)
        .await?;
    if !claimed {
        let why = session_refusal(session::Refusal::Used);
        return Ok(refused(StatusCode::UNAUTHORIZED, &why));
    }
    let (cookie, grant) = state.dashboard.start_session(login, now);
    tracing::info!(user = %grant.user, org, "dashboard session started");
    // Secure whenever the browser came over TLS (Chef Server's nginx says so).
    let secure = forwarded_scheme(req.headers()).is_some_and(|s| s.eq_ignore_ascii_case("https"));
    let set_cookie = format!(
        "{COOKIE}={cookie}; Path={}; Max-Age={}; HttpOnly; SameSite=Strict{}",
        base(&org),
        session::SESSION_LIFETIME,
        if secure { "; Secure" } else { "" }
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, header_value(&base(&org))?);
    headers.insert(header::SET_COOKIE, header_value(&set_cookie)?);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

/// Whether a login's POST says it came from a page of another site (`Sec-Fetch-Site`),
/// e.g. a form another site submits to log the visitor in as the token's owner. A POST
/// without the header (an older browser, curl) is let through: the token in its URL is
/// itself the secret, which only the user it was issued to has seen.
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() != b"same-origin")
}

fn login_path(org: &str, token: &str) -> String {
    format!("{}/login/{token}", base(org))
}

/// The page a login link shows: whom it logs in, where, and the button that does it (a
/// plain form: no script runs before the session exists).
fn confirm_page(user: &str, org: &str, action: &str) -> Response {
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>Push Jobs dashboard</title>\
         <h1>Push Jobs dashboard</h1>\
         <p id=login-as>Log in as <strong>{}</strong> to organization <strong>{}</strong>.</p>\
         <form method=\"post\" action=\"{}\">\
         <button id=\"login-continue\" type=\"submit\">Open the dashboard</button></form>\
         <p>The link works once. If you did not run <code>push-jobs dashboard</code> \
         yourself, close this page.</p>",
        html_escape(user),
        html_escape(org),
        html_escape(action)
    );
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    guard(response.headers_mut());
    response
}

/// `GET …/dashboard`: the page, for a valid session; otherwise how to get one.
pub(super) async fn page(
    State(state): State<AppState>,
    Segments(org): Segments<String>,
    req: Request,
) -> Result<Response, ApiError> {
    check_method(req.method(), &PAGE)?;
    if let Err(e) = session_of(&state, req.headers(), &org) {
        return Ok(refused_page(e.status(), &e.to_string()));
    }
    let html = dashboard::index(&org, &base(&org)).ok_or(ApiError::NotFound)?;
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    guard(response.headers_mut());
    Ok(response)
}

/// `GET …/dashboard/assets/NAME`: the page's script and style (nothing secret).
pub(super) async fn asset(
    Segments((_org, name)): Segments<(String, String)>,
    req: Request,
) -> Response {
    if let Err(e) = check_method(req.method(), &PAGE) {
        return e.into_response();
    }
    match dashboard::asset(&name) {
        Some((body, kind)) => (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response(),
        None => ApiError::NotFound.into_response(),
    }
}

/// `GET …/dashboard/api/session`: who the page is for, whether they may start and abort
/// jobs (writers), the token writes must carry, and when the session ends.
pub(super) async fn session_info(
    State(state): State<AppState>,
    Segments(org): Segments<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (ok, ()) = admit(&state, req, &GET_JSON, &org, Rule::Read, |_, _| Ok(())).await?;
    // Only the dashboard's API paths take a session, so this route always has one.
    let grant = ok.session.ok_or(ApiError::Session(None))?;
    let can_write = match auth::authorize(state.chef.as_ref(), &ok.who, Rule::Write).await {
        Ok(()) => true,
        Err(auth::Error::Forbidden(_)) => false,
        Err(e) => return Err(e.into()),
    };
    let expires = chrono::DateTime::from_timestamp(grant.expires, 0).unwrap_or_default();
    Ok(axum::Json(json!({
        "user": grant.user,
        "org": org,
        "can_write": can_write,
        "csrf": state.dashboard.csrf(&grant),
        "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
    .into_response())
}

/// How many jobs the dashboard's list shows, newest first.
const RECENT_JOBS: u32 = 200;

/// `…/dashboard/api/jobs`: a POST starts a job as the REST route does; a GET lists the
/// newest jobs as the REST list does, plus, for the dashboard only (the REST documents
/// keep the original's shape), who started each (`requestor`, absent for jobs the
/// original wrote) and how many of its nodes are in each state (`node_counts`).
pub(super) async fn jobs(
    state: State<AppState>,
    org: Segments<String>,
    req: Request,
) -> Result<Response, ApiError> {
    if req.method() != Method::GET {
        return super::jobs::collection(state, org, req).await;
    }
    let (State(state), Segments(org)) = (state, org);
    let (ok, ()) = admit(&state, req, &GET_JSON, &org, Rule::Read, |_, _| Ok(())).await?;
    let jobs = state
        .store
        .recent_jobs(&ok.who.org_guid, RECENT_JOBS)
        .await?;
    let ids: Vec<_> = jobs.iter().map(|j| j.id.clone()).collect();
    let mut counts: std::collections::HashMap<_, serde_json::Map<String, serde_json::Value>> =
        std::collections::HashMap::new();
    for (job, status, n) in state.store.node_counts(&ok.who.org_guid, &ids).await? {
        counts
            .entry(job)
            .or_default()
            .insert(status.wire_name().to_owned(), n.into());
    }
    let body: Vec<serde_json::Value> = jobs
        .iter()
        .map(|job| {
            let mut m = super::jobs::summary(job, false);
            if let Some(who) = &job.requestor {
                m.insert("requestor".into(), who.clone().into());
            }
            let n = counts.remove(&job.id).unwrap_or_default();
            m.insert("node_counts".into(), n.into());
            serde_json::Value::Object(m)
        })
        .collect();
    Ok(axum::Json(body).into_response())
}

/// What a browser without a valid session sees: the reason and the way in.
fn refused_page(status: StatusCode, why: &str) -> Response {
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>Push Jobs dashboard</title>\
         <h1>Push Jobs dashboard</h1><p id=session-expired>{}</p>\
         <p>Run <code>push-jobs dashboard</code> on your workstation for a new login link.</p>",
        html_escape(why)
    );
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    guard(response.headers_mut());
    response
}

/// A login refusal as the API words it (with how to get a new link).
fn session_refusal(refusal: session::Refusal) -> String {
    ApiError::Session(Some(refusal)).to_string()
}

/// Every answer under `…/dashboard/api/`, whichever handler or refusal made it: never
/// stored by the browser or a proxy (job output and node lists are the org's, and the
/// session may end), never sniffed into something else (node output is served as
/// `application/octet-stream` and must not render as HTML).
pub(super) async fn api_headers(req: Request, next: Next) -> Response {
    let api = is_dashboard_api(req.uri().path());
    let mut response = next.run(req).await;
    if api {
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    response
}

/// Headers every dashboard page carries: only its own scripts and styles, never in a
/// frame, never cached, no referrer (the login URL must not leak).
fn guard(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn header_value(s: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(s).map_err(|e| ApiError::Internal(e.to_string()))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
