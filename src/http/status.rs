//! `GET /pushy/_status` (http.md §1.4.0): unauthenticated liveness.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::pipeline::{GET_JSON, accepts, check_method};
use super::state::AppState;

/// The status document. `job_processes` lists no job ids: the original listed every
/// org's live jobs to anyone (http.md §8.2 items 17 and 20, fixed).
pub(super) async fn status(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    check_method(req.method(), &GET_JSON)?;
    if !accepts(req.headers(), GET_JSON.produces) {
        return Err(ApiError::NotAcceptable);
    }
    Ok(axum::Json(json!({
        "status": "it's alive",
        "incarnation_id": &*state.incarnation,
        "node_fsm_count": state.nodes.counts().0,
        "job_processes": [],
    }))
    .into_response())
}
