//! The request pipeline of http.md §1.2 for signed routes, as one function calling the
//! steps in the spec's order so which error wins is visible here: method (501, 405),
//! header pre-checks (400/401), body size (413), route-specific checks before
//! authentication (job validation, `ccpk`), authentication, authorization, content
//! negotiation (406).

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use chrono::{TimeDelta, Utc};
use pushy_protocol::chef_auth::SignedHeaders;

use super::AppState;
use super::error::ApiError;
use crate::auth::{self, Requestor, Rule, SignedRequest};

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
/// malformed-request / early authentication stage (job body validation, `ccpk`).
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
    let skew = TimeDelta::seconds(state.config.pushy.auth_skew as i64);
    let signed = SignedHeaders::check(header_lookup(&parts.headers), Utc::now(), skew)?;
    let limit = state.config.pushy.max_request_size;
    // Reading stops one past the limit, so an oversized body never sits in memory whole.
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::BodyTooLarge(limit))?;
    let checked = pre_auth(&parts, &body)?;
    let who = auth::authenticate(
        state.chef.as_ref(),
        org,
        SignedRequest {
            headers: &signed,
            method: parts.method.as_str(),
            path: parts.uri.path(),
            body: &body,
        },
    )
    .await?;
    auth::authorize(state.chef.as_ref(), &who, rule).await?;
    if !accepts(&parts.headers, ep.produces) {
        return Err(ApiError::NotAcceptable);
    }
    Ok((Admitted { who, parts }, checked))
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
