//! The HTTP API (http.md §1): routes, the shared state they read, and the path clean-up
//! nginx-style clients need (`//` runs collapse, a trailing `/` is ignored).

mod config;
mod error;
mod extract;
mod feed;
mod jobs;
mod node_states;
mod pipeline;
pub mod server;
mod status;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::Uri;
use axum::routing::any;
use openssl::pkey::{PKey, Private};
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use pipeline::BodyError;
pub use server::BodyBudget;

use crate::channel::{ClientKeys, CurveIdentity, SessionKeys};
use crate::chef::ChefServer;
use crate::config::Config;
use crate::jobs::JobsHandle;
use crate::nodes::NodesHandle;
use crate::store::Store;

/// The server's own RSA key pair (`pushy_priv_key` / `pushy_pub_key`).
pub struct ServerKey {
    /// The private key (signs heartbeats and commands on the command channel).
    pub private: PKey<Private>,
    /// The public half as SPKI PEM, sent as the config's `public_key`.
    pub public_pem: String,
}

/// What every handler can reach: handles only, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Job persistence.
    pub store: Arc<dyn Store>,
    /// Organizations, principals and groups.
    pub chef: Arc<dyn ChefServer>,
    /// Job creation and abort.
    pub jobs: JobsHandle,
    /// Node liveness.
    pub nodes: NodesHandle,
    /// The server's RSA key pair.
    pub server_key: Arc<ServerKey>,
    /// The server's CurveZMQ key pair.
    pub curve: Arc<CurveIdentity>,
    /// Client Curve keys announced through `ccpk`.
    pub client_keys: ClientKeys,
    /// Per-node HMAC session keys.
    pub session_keys: SessionKeys,
    /// Job and org event feeds.
    pub events: crate::events::Events,
    /// The command channel's bound ports (advertised in node configs).
    pub ports: crate::BoundPorts,
    /// This process's incarnation id (a v4 UUID).
    pub incarnation: Arc<str>,
    /// Cancelled at shutdown; long streams end on it.
    pub shutdown: CancellationToken,
    /// Every job and registry task, so shutdown can wait for them.
    pub tracker: tokio_util::task::TaskTracker,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Bounds the request body bytes held in memory at once (`http_body_memory`).
    pub body_budget: BodyBudget,
}

/// The API's routes. Every path is registered for any method: each handler runs the
/// §1.2 pipeline itself, so 501/405 come before authentication as in the original.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/pushy/_status", any(status::status))
        .route(
            "/organizations/{org}/pushy/config/{node}",
            any(config::config),
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
        .route("/metrics", axum::routing::get(crate::metrics::serve))
        .fallback(|| async { ApiError::NotFound })
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
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
