//! `GET .../node_states` and `.../node_states/NODE` (http.md §1.4.6–1.4.7).

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::extract::Segments;
use super::pipeline::{GET_JSON, admit};
use super::state::AppState;
use crate::auth::Rule;

/// Every tracked node of the org with its availability.
pub(super) async fn list(
    State(state): State<AppState>,
    Segments(org): Segments<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (ok, ()) = admit(&state, req, &GET_JSON, &org, Rule::Read, |_, _| Ok(())).await?;
    let body: Vec<_> = state
        .nodes
        .list(&ok.who.org_guid)
        .into_iter()
        .map(|(node, availability)| json!({"node_name": node, "availability": availability}))
        .collect();
    Ok(axum::Json(body).into_response())
}

/// One node: never 404; an unknown node is offline and unavailable.
pub(super) async fn named(
    State(state): State<AppState>,
    Segments((org, node)): Segments<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let (ok, ()) = admit(&state, req, &GET_JSON, &org, Rule::Read, |_, _| Ok(())).await?;
    let (status, availability) = state.nodes.state(&ok.who.org_guid, &node);
    Ok(
        axum::Json(json!({"node_name": node, "status": status, "availability": availability}))
            .into_response(),
    )
}
