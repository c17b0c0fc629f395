//! The dashboard's session cookie on a request (issue 16): which session it holds, and
//! whether a write carries the session's CSRF token. Shared by the request pipeline
//! (the dashboard's API routes) and the dashboard's own pages.

use axum::http::{HeaderMap, header};

use super::error::ApiError;
use super::state::AppState;
use crate::dashboard::Grant;

/// The cookie's name.
pub(crate) const COOKIE: &str = "pushy_dashboard";
/// The header a dashboard write must carry.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// Whether `path` is one of the dashboard's API routes, which take the session cookie
/// instead of a Chef signature: `/organizations/ORG/pushy/dashboard/api/…`.
pub(crate) fn is_dashboard_api(path: &str) -> bool {
    let mut segments = path.split('/').skip(3);
    segments.next() == Some("pushy")
        && segments.next() == Some("dashboard")
        && segments.next() == Some("api")
}

/// The session the request's cookie holds for `org`.
///
/// # Errors
/// 401 when there is none, or it is forged, expired or another organization's.
pub(crate) fn session_of(
    state: &AppState,
    headers: &HeaderMap,
    org: &str,
) -> Result<Grant, ApiError> {
    let cookie = cookie_value(headers).ok_or(ApiError::Session(None))?;
    state
        .dashboard
        .session(cookie, org, chrono::Utc::now().timestamp())
        .map_err(|r| ApiError::Session(Some(r)))
}

/// Whether the request carries the session's CSRF token.
pub(crate) fn csrf_ok(state: &AppState, headers: &HeaderMap, session: &Grant) -> bool {
    let expected = state.dashboard.csrf(session);
    headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        // Lengths first: `memcmp::eq` panics on unequal lengths.
        .is_some_and(|sent| {
            sent.len() == expected.len()
                && openssl::memcmp::eq(sent.as_bytes(), expected.as_bytes())
        })
}

fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_dashboards_api_paths_take_the_cookie() {
        assert!(is_dashboard_api(
            "/organizations/acme/pushy/dashboard/api/jobs"
        ));
        assert!(!is_dashboard_api("/organizations/acme/pushy/dashboard"));
        assert!(!is_dashboard_api("/organizations/acme/pushy/jobs"));
        assert!(!is_dashboard_api("/organizations/dashboard/pushy/api/x"));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; pushy_dashboard=tok.en; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h), Some("tok.en"));
        h.insert(header::COOKIE, "pushy_dashboardx=1".parse().unwrap());
        assert_eq!(cookie_value(&h), None);
    }
}
