//! What every handler can reach: the server's parts, as cheap handles.

use std::sync::Arc;

use openssl::pkey::{PKey, Private};
use pushy_store::Store;
use tokio_util::sync::CancellationToken;

use super::server::BodyBudget;
use crate::channel::{ClientKeys, CurveIdentity, SessionKeys};
use crate::chef::ChefServer;
use crate::config::Config;
use crate::events::Events;
use crate::jobs::JobsHandle;
use crate::metrics::Metrics;
use crate::nodes::NodeSnapshot;

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
    pub nodes: NodeSnapshot,
    /// The server's RSA key pair.
    pub server_key: Arc<ServerKey>,
    /// The server's CurveZMQ key pair.
    pub curve: Arc<CurveIdentity>,
    /// Client Curve keys announced through `ccpk`.
    pub client_keys: ClientKeys,
    /// Per-node HMAC session keys.
    pub session_keys: SessionKeys,
    /// Job and org event feeds.
    pub events: Events,
    /// The command channel's bound ports (advertised in node configs).
    pub ports: BoundPorts,
    /// This process's incarnation id (a v4 UUID).
    pub incarnation: Arc<str>,
    /// Cancelled at shutdown; long streams end on it.
    pub shutdown: CancellationToken,
    /// Every job and registry task, so shutdown can wait for them.
    pub tracker: tokio_util::task::TaskTracker,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: Arc<Metrics>,
    /// Bounds the request body bytes held in memory at once (`http_body_memory`).
    pub body_budget: BodyBudget,
    /// Dashboard logins and sessions (issue 16).
    pub dashboard: Arc<crate::dashboard::Dashboard>,
    /// The cluster this instance is part of, if any (`[cluster]`).
    pub cluster: Option<crate::cluster::Cluster>,
}

/// The ports the command channel actually bound (differs from the config when it asks
/// for port 0).
#[derive(Clone, Copy, Debug)]
pub struct BoundPorts {
    /// Heartbeat PUB.
    pub heartbeat: u16,
    /// Command ROUTER.
    pub command: u16,
}
