//! `GET …/dashboard/api/search?q=QUERY` (issue 16): the node names a Chef search matches,
//! for the dashboard's start form, which shows them before the job is started by name —
//! as the CLI's `--search` resolves names before it posts. The original server had no
//! search: its knife plugin asked Chef Server itself, as the user. Here the server asks
//! (as the superuser, or its local directory), so only writers — who could start a job on
//! any of the org's nodes anyway — may search, and only names come back.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::extract::{Segments, query_param};
use super::pipeline::{GET_JSON, admit};
use super::state::AppState;
use crate::auth::Rule;
use crate::chef::NodeSearch;

/// Answers `{"nodes": [NAME, …]}`, sorted; a query the Chef Server (or the local
/// directory) cannot answer is a 400 saying why.
pub(super) async fn search(
    State(state): State<AppState>,
    Segments(org): Segments<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (ok, query) = admit(&state, req, &GET_JSON, &org, Rule::Write, |parts, _| {
        query_param(parts.uri.query(), "q")
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| ApiError::BadSearch("a search needs a query: ?q=QUERY".into()))
    })
    .await?;
    // A Chef Server that fails answers as during authentication: 502 when unreachable.
    let found = state
        .chef
        .search_nodes(&org, &query)
        .await
        .map_err(|e| ApiError::Auth(e.into()))?;
    match found {
        NodeSearch::Found(nodes) => {
            tracing::debug!(requestor = %ok.who.name, org, query, matched = nodes.len(), "node search");
            Ok(axum::Json(json!({ "nodes": nodes })).into_response())
        }
        NodeSearch::Refused(why) => Err(ApiError::BadSearch(why)),
    }
}
