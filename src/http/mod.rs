//! The HTTP API (http.md §1): routes, the shared state they read, and the path clean-up
//! nginx-style clients need (`//` runs collapse, a trailing `/` is ignored).

mod dashboard;
mod error;
mod extract;
mod feed;
mod jobs;
mod metrics;
mod node_config;
mod node_search;
mod node_states;
mod pipeline;
pub mod server;
mod session_cookie;
mod state;
mod status;

use axum::Router;
use axum::extract::Request;
use axum::http::Uri;
use axum::routing::any;

pub use error::{ApiError, BodyError};
pub use server::BodyBudget;
pub use state::{AppState, BoundPorts, ServerKey};

/// The API's routes. Every path is registered for any method: each handler runs the
/// §1.2 pipeline itself, so 501/405 come before authentication as in the original.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/pushy/_status", any(status::status))
        .route(
            "/organizations/{org}/pushy/config/{node}",
            any(node_config::config),
        )
        .route("/organizations/{org}/pushy/jobs", any(jobs::collection))
        .route("/organizations/{org}/pushy/jobs/{job}", any(jobs::named))
        .route(
            "/organizations/{org}/pushy/jobs/{job}/abort",
            any(jobs::abort),
        )
        .route(
            "/organizations/{org}/pushy/jobs/{job}/output/{node}/{channel}",
            any(jobs::output),
        )
        .route(
            "/organizations/{org}/pushy/node_states",
            any(node_states::list),
        )
        .route(
            "/organizations/{org}/pushy/node_states/{node}",
            any(node_states::named),
        )
        .route(
            "/organizations/{org}/pushy/job_status_feed",
            any(feed::org_feed),
        )
        .route(
            "/organizations/{org}/pushy/job_status_feed/{job}",
            any(feed::job_feed),
        )
        // The dashboard (issue 16): its login, page and assets, and the API's own
        // handlers again under `dashboard/api/`, where the session cookie stands for the
        // signature.
        .route(
            "/organizations/{org}/pushy/dashboard/logins",
            any(dashboard::logins),
        )
        // GET shows whom the link logs in; its form's POST logs in.
        .route(
            "/organizations/{org}/pushy/dashboard/login/{token}",
            any(dashboard::enter),
        )
        .route("/organizations/{org}/pushy/dashboard", any(dashboard::page))
        .route(
            "/organizations/{org}/pushy/dashboard/assets/{name}",
            any(dashboard::asset),
        )
        .route(
            "/organizations/{org}/pushy/dashboard/api/session",
            any(dashboard::session_info),
        )
        .route(
            "/organizations/{org}/pushy/dashboard/api/jobs",
            any(dashboard::jobs),
        )
        .route(
            "/organizations/{org}/pushy/dashboard/api/jobs/{job}",
            any(jobs::named),
        )
        .route(
            "/organizations/{org}/pushy/dashboard/api/jobs/{job}/abort",
            any(jobs::abort),
        )
        .route(
            "/organizations/{org}/pushy/dashboard/api/jobs/{job}/output/{node}/{channel}",
            any(jobs::output),
        )
        .route(
            "/organizations/{org}/pushy/dashboard/api/search",
            any(node_search::search),
        )
        .route(
            "/organizations/{org}/pushy/dashboard/api/node_states",
            any(node_states::list),
        )
        .route(
            "/organizations/{org}/pushy/dashboard/api/job_status_feed/{job}",
            any(feed::job_feed),
        )
        .route("/metrics", axum::routing::get(metrics::serve))
        .fallback(|| async { ApiError::NotFound })
        .layer(axum::middleware::from_fn(dashboard::api_headers))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// Collapses runs of `/` and drops a trailing `/` before routing (http.md §1.1, §8.7
/// item 52). The signature is unaffected: its canonical path collapses the same way.
pub fn normalize_path(mut req: Request) -> Request {
    let uri = req.uri();
    let path = uri.path();
    let needs = path.contains("//") || (path.len() > 1 && path.ends_with('/'));
    if needs {
        let clean = pushy_protocol::chef_auth::canonical_path(path);
        let rebuilt = match uri.query() {
            Some(q) => format!("{clean}?{q}"),
            None => clean,
        };
        if let Ok(pq) = rebuilt.parse() {
            let mut parts = uri.clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(u) = Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
        }
    }
    req
}
