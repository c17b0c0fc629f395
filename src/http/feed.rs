//! The Server-Sent Event feeds (http.md §3). A live job's feed streams its events from
//! [`crate::events::Events`] (§3.4 cases 1–2); any other job of the org answers with its
//! `summary` event (case 3). The org feed (§3.5) stays open with keepalives. Streams end
//! when the server shuts down (STYLE.md §2.5).

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures::{Stream, StreamExt as _};
use pushy_protocol::job::JobId;

use super::error::ApiError;
use super::extract::Segments;
use super::jobs::named_job;
use super::pipeline::{Endpoint, admit};
use super::state::AppState;
use crate::auth::Rule;
use crate::events::render;

const FEED: Endpoint = Endpoint {
    methods: &[Method::GET],
    allow: "GET",
    produces: "text/event-stream",
};

fn sse_headers(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}

/// A chunked body that also ends when the server shuts down.
fn streamed(state: &AppState, events: impl Stream<Item = Bytes> + Send + 'static) -> Response {
    let body = events
        .map(Ok::<_, Infallible>)
        .take_until(state.shutdown.clone().cancelled_owned());
    sse_headers(Body::from_stream(body))
}

fn last_event_id(headers: &HeaderMap) -> Option<&str> {
    headers.get("last-event-id").and_then(|v| v.to_str().ok())
}

/// `GET .../job_status_feed/JOBID`.
pub(super) async fn job_feed(
    State(state): State<AppState>,
    Segments((org, job)): Segments<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let (ok, ()) = admit(&state, req, &FEED, &org, Rule::Read, |_, _| Ok(())).await?;
    let id = JobId::parse(&job).ok_or(ApiError::NotFound)?;
    // Scoped to the org (§8 fixed): another org's job is unknown here, live or not.
    let record = state
        .store
        .find_job(&ok.who.org_guid, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if let Some(events) = state
        .events
        .job_stream(&id, last_event_id(&ok.parts.headers))
    {
        return Ok(streamed(&state, events));
    }
    // Not live: the summary reuses id job-1 and ignores Last-Event-ID (§8.6 item 43),
    // and ends with a blank line (item 42, fixed).
    let text = render(
        "summary",
        "job-1",
        Utc::now(),
        None,
        &named_job(&record, false),
    );
    Ok(sse_headers(Body::from(text)))
}

/// `GET .../job_status_feed`: stays open until the client leaves or the server stops.
pub(super) async fn org_feed(
    State(state): State<AppState>,
    Segments(org): Segments<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (ok, ()) = admit(&state, req, &FEED, &org, Rule::Read, |_, _| Ok(())).await?;
    let events = state
        .events
        .org_stream(&ok.who.org_guid, last_event_id(&ok.parts.headers));
    Ok(streamed(&state, events))
}
