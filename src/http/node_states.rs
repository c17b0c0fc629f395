//! `GET .../node_states` and `.../node_states/NODE` (http.md §1.4.6–1.4.7).

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::extract::Segments;
use super::pipeline::{GET_JSON, admit};
use super::state::AppState;
use crate::auth::Rule;
use crate::nodes::{Availability, Presence};

/// In a cluster, node states come from what each node's holder published, as this
/// instance's mirror holds it (no database query per request).
fn availability(available: bool) -> Availability {
    if available {
        Availability::Available
    } else {
        Availability::Unavailable
    }
}

/// Every tracked node of the org with its availability.
pub(super) async fn list(
    State(state): State<AppState>,
    Segments(org): Segments<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (ok, ()) = admit(&state, req, &GET_JSON, &org, Rule::Read, |_, _| Ok(())).await?;
    let nodes = match &state.cluster {
        None => state.nodes.list(&ok.who.org_guid),
        Some(cluster) => cluster
            .known_presence(&ok.who.org_guid, None)
            .into_iter()
            .map(|p| (p.node, availability(p.available)))
            .collect(),
    };
    let body: Vec<_> = nodes
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
    let (status, availability) = match &state.cluster {
        None => state.nodes.state(&ok.who.org_guid, &node),
        Some(cluster) => {
            let found = cluster.known_presence(&ok.who.org_guid, Some(std::slice::from_ref(&node)));
            match found.first() {
                Some(p) => (Presence::Online, availability(p.available)),
                None => (Presence::Offline, Availability::Unavailable),
            }
        }
    };
    Ok(
        axum::Json(json!({"node_name": node, "status": status, "availability": availability}))
            .into_response(),
    )
}
