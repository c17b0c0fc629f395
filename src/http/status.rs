//! `GET /pushy/_status` (http.md §1.4.0): unauthenticated liveness.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::pipeline::{GET_JSON, accepts, check_method};
use super::state::AppState;

/// The status document. `job_processes` lists no job ids: the original listed every
/// org's live jobs to anyone (http.md §8.2 items 17 and 20, fixed). An instance of a
/// cluster adds `instance` (its id) and `cluster.instances` (the live members' ids);
/// `node_fsm_count` counts the nodes this instance holds.
pub(super) async fn status(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    check_method(req.method(), &GET_JSON)?;
    if !accepts(req.headers(), GET_JSON.produces) {
        return Err(ApiError::NotAcceptable);
    }
    let mut body = json!({
        "status": "it's alive",
        "incarnation_id": &*state.incarnation,
        "node_fsm_count": state.nodes.counts().0,
        "job_processes": [],
    });
    // Only in a cluster (issue 14): which instance answered, and the live members.
    if let Some(cluster) = &state.cluster {
        body["instance"] = cluster.id().into();
        body["cluster"] = json!({ "instances": cluster.live_ids() });
    }
    Ok(axum::Json(body).into_response())
}
