//! The request pipeline of http.md §1.2 for signed routes, as one function calling the
//! steps in the spec's order so which error wins is visible here: method (501, 405),
//! header pre-checks (400/401), body size (413), route-specific checks before
//! authentication (job validation, `ccpk`), authentication, authorization, content
//! negotiation (406).
//!
//! Reading the body is the one step a client controls the pace of, so it runs under
//! `http_body_timeout` (408) and, for the bodies it keeps, under the server-wide
//! [`BodyBudget`](super::BodyBudget) (503).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use chrono::{TimeDelta, Utc};
use futures::StreamExt as _;
use pushy_protocol::chef_auth::{ContentHasher, ProtocolVersion, SignedHeaders};

use super::error::{ApiError, BodyError};
use super::server::BodyHold;
use super::session_cookie::{csrf_ok, is_dashboard_api, session_of};
use super::state::AppState;
use crate::auth::{self, Requestor, Rule, SignedRequest};
use crate::dashboard::Grant;

/// What a route accepts and produces.
pub(crate) struct Endpoint {
    /// Allowed methods.
    pub methods: &'static [Method],
    /// The `Allow` header value for a 405.
    pub allow: &'static str,
    /// The single media type the route produces.
    pub produces: &'static str,
}

/// GET-only, JSON-producing routes.
pub(crate) const GET_JSON: Endpoint = Endpoint {
    methods: &[Method::GET],
    allow: "GET",
    produces: "application/json",
};

/// A request that passed every stage.
pub(crate) struct Admitted {
    /// The authenticated requestor.
    pub who: Requestor,
    /// The request head.
    pub parts: Parts,
    /// The dashboard session that stood for the signature (issue 16), if one did.
    pub session: Option<Grant>,
}

/// Step 2–3 of §1.2: 501 for methods outside HTTP's usual set, then 405 with `Allow`.
pub(crate) fn check_method(method: &Method, ep: &Endpoint) -> Result<(), ApiError> {
    const KNOWN: [Method; 8] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::TRACE,
        Method::CONNECT,
        Method::OPTIONS,
    ];
    if !KNOWN.contains(method) {
        return Err(ApiError::NotImplemented);
    }
    if !ep.methods.contains(method) {
        return Err(ApiError::MethodNotAllowed(ep.allow));
    }
    Ok(())
}

fn header_lookup<'a>(headers: &'a HeaderMap) -> impl Fn(&str) -> Option<&'a str> {
    // HeaderMap names are case-insensitive already; a value that is not text counts as
    // absent, like an empty one.
    move |name| headers.get(name).and_then(|v| v.to_str().ok())
}

/// Runs the pipeline for a signed route. `pre_auth` is the route's own check in the
/// malformed-request / early authentication stage (job body validation, `ccpk`). On the
/// dashboard's API routes the session cookie stands for the signature (issue 16); either
/// way the requestor is then authorized by the same rule.
///
/// # Errors
/// The first stage that refuses, as [`ApiError`].
pub(crate) async fn admit<T>(
    state: &AppState,
    req: Request,
    ep: &Endpoint,
    org: &str,
    rule: Rule<'_>,
    pre_auth: impl FnOnce(&Parts, &Bytes) -> Result<T, ApiError>,
) -> Result<(Admitted, T), ApiError> {
    let (parts, body) = req.into_parts();
    check_method(&parts.method, ep)?;
    let (who, session, checked, body) = if is_dashboard_api(parts.uri.path()) {
        let (who, session, checked, body) = by_session(state, &parts, body, org, pre_auth).await?;
        (who, Some(session), checked, body)
    } else {
        let (who, checked, body) = by_signature(state, &parts, body, org, pre_auth).await?;
        (who, None, checked, body)
    };
    auth::authorize(state.chef.as_ref(), &who, rule).await?;
    // The body (and its share of the budget) is no longer needed.
    drop(body);
    if !accepts(&parts.headers, ep.produces) {
        return Err(ApiError::NotAcceptable);
    }
    Ok((
        Admitted {
            who,
            parts,
            session,
        },
        checked,
    ))
}

/// Authentication by the Chef signature headers.
async fn by_signature<T>(
    state: &AppState,
    parts: &Parts,
    body: Body,
    org: &str,
    pre_auth: impl FnOnce(&Parts, &Bytes) -> Result<T, ApiError>,
) -> Result<(Requestor, T, ReceivedBody), ApiError> {
    let skew = TimeDelta::seconds(state.config.pushy.auth_skew as i64);
    let signed = SignedHeaders::check(header_lookup(&parts.headers), Utc::now(), skew)?;
    let body = read_body(state, parts, body, signed.version).await?;
    let checked = pre_auth(parts, &body.bytes)?;
    let who = auth::authenticate(
        state.chef.as_ref(),
        org,
        SignedRequest {
            headers: &signed,
            method: parts.method.as_str(),
            path: parts.uri.path(),
            body_hash: &body.hash,
        },
    )
    .await?;
    Ok((who, checked, body))
}

/// Authentication by the dashboard's session cookie (the user proved who they are when
/// the session began); a write must also carry the session's CSRF token.
async fn by_session<T>(
    state: &AppState,
    parts: &Parts,
    body: Body,
    org: &str,
    pre_auth: impl FnOnce(&Parts, &Bytes) -> Result<T, ApiError>,
) -> Result<(Requestor, Grant, T, ReceivedBody), ApiError> {
    let session = session_of(state, &parts.headers, org)?;
    if parts.method != Method::GET && !csrf_ok(state, &parts.headers, &session) {
        return Err(ApiError::Csrf);
    }
    let body = read_body(state, parts, body, ProtocolVersion::V1_3).await?;
    let checked = pre_auth(parts, &body.bytes)?;
    let who =
        auth::session_requestor(state.chef.as_ref(), org, &session.user, session.principal).await?;
    Ok((who, session, checked, body))
}

/// A body as the rest of the pipeline needs it.
struct ReceivedBody {
    /// The bytes: POST and PUT only, empty otherwise.
    bytes: Bytes,
    /// Its `X-Ops-Content-Hash`, computed as it arrived.
    hash: String,
    /// Its share of the body budget, given back when the body is dropped.
    _hold: Option<BodyHold>,
}

/// Reads the body under `http_body_timeout`, hashing it for the signature as it arrives.
///
/// POST and PUT bodies are kept (the job route parses them): more than `max_request_size`
/// bytes is a 413 (http.md §1.2 step 4.2), said before reading anything when
/// `Content-Length` announces it, and every byte kept is taken from the body budget.
/// Other methods' bodies — no route reads one — are only hashed, never held, and have no
/// size limit, as in the original: the signature still covers them.
async fn read_body(
    state: &AppState,
    parts: &Parts,
    body: Body,
    version: ProtocolVersion,
) -> Result<ReceivedBody, ApiError> {
    let p = &state.config.pushy;
    let limit = p.max_request_size;
    let keep = parts.method == Method::POST || parts.method == Method::PUT;
    if keep && declared_length(&parts.headers).is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut hasher = ContentHasher::new(version);
        let mut hold = keep.then(|| state.body_budget.hold());
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| BodyError::Unreadable)?;
            hasher.update(&chunk);
            let Some(hold) = hold.as_mut() else {
                continue;
            };
            if len + chunk.len() > limit {
                return Err(ApiError::BodyTooLarge(limit));
            }
            if !hold.take(chunk.len()) {
                return Err(BodyError::Busy.into());
            }
            len += chunk.len();
            chunks.push(chunk);
        }
        let bytes = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().unwrap_or_default(),
            _ => Bytes::from(chunks.concat()),
        };
        Ok(ReceivedBody {
            bytes,
            hash: hasher.finish(),
            _hold: hold,
        })
    };
    match tokio::time::timeout(Duration::from_millis(p.http_body_timeout), read).await {
        Ok(received) => received,
        Err(_) => {
            state.metrics.read_timeout("body");
            Err(BodyError::TimedOut.into())
        }
    }
}

/// The `Content-Length` the client announced, if any and readable.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the `Accept` header admits `media` (absent means anything).
pub(crate) fn accepts(headers: &HeaderMap, media: &str) -> bool {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return true;
    }
    let (kind, _) = media.split_once('/').unwrap_or((media, ""));
    values.iter().flat_map(|v| v.split(',')).any(|range| {
        let mut params = range.split(';');
        let mr = params
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let refused = params.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        !refused && (mr == media || mr == "*/*" || mr == format!("{kind}/*"))
    })
}

/// Whether the request's `Content-Type` media type (parameters ignored) is `media`; a
/// missing header counts as `application/octet-stream` (http.md §1.2 step 8).
pub(crate) fn content_type_is(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(media))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(accept: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::ACCEPT, accept.parse().unwrap());
        m
    }

    #[test]
    fn accept_matching() {
        assert!(accepts(&HeaderMap::new(), "application/json"));
        assert!(accepts(&h("application/json"), "application/json"));
        assert!(accepts(&h("text/html, */*;q=0.1"), "application/json"));
        assert!(accepts(&h("application/*"), "application/octet-stream"));
        assert!(!accepts(&h("application/json"), "text/event-stream"));
        assert!(!accepts(&h("application/json"), "application/octet-stream"));
        assert!(!accepts(&h("application/json;q=0"), "application/json"));
    }
}
