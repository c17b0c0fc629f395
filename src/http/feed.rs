//! The Server-Sent Event feeds (http.md §3). A job's feed answers with its `summary`
//! event (§3.4 case 3); the org feed stays open with keepalives and, when the client
//! resumes from an id this process never issued, starts with `start_of_history`
//! (§3.5). Live job events are added by the job machinery.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use pushy_protocol::job::JobId;
use serde_json::{Map, Value};

use super::extract::Segments;
use super::jobs::named_job;
use super::pipeline::{Endpoint, admit};
use super::{ApiError, AppState};
use crate::auth::Rule;

const FEED: Endpoint = Endpoint {
    methods: &[Method::GET],
    allow: "GET",
    produces: "text/event-stream",
};

/// `2014-07-10 05:17:44.995958Z`: the SSE data timestamp (§3.2).
pub(super) fn sse_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6fZ").to_string()
}

/// One event, always ending with a blank line (§8.6 item 42, fixed).
pub(super) fn event(name: &str, id: &str, at: DateTime<Utc>, fields: Map<String, Value>) -> String {
    let mut data = Map::new();
    data.insert("timestamp".into(), sse_timestamp(at).into());
    data.extend(fields);
    format!("event: {name}\nid: {id}\ndata: {}\n\n", Value::Object(data))
}

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
    let record = state
        .store
        .find_job(&ok.who.org_guid, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    // The summary reuses id job-1 and ignores Last-Event-ID (§8.6 item 43).
    let text = event("summary", "job-1", Utc::now(), named_job(&record, false));
    Ok(sse_headers(Body::from(text)))
}

/// `GET .../job_status_feed`: stays open until the client leaves or the server stops.
pub(super) async fn org_feed(
    State(state): State<AppState>,
    Segments(org): Segments<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (ok, ()) = admit(&state, req, &FEED, &org, Rule::Read, |_, _| Ok(())).await?;
    let pushy = &state.config.pushy;
    let mut backlog = String::new();
    if last_event_id(&ok.parts.headers).is_some() {
        // No org event is retained by this process, so any id is unknown here.
        let horizon = Utc::now() - chrono::TimeDelta::seconds(pushy.org_feed_expiration as i64);
        backlog = event("start_of_history", "start_id", horizon, Map::new());
    }
    let keepalive = Duration::from_secs(pushy.keep_alive_time);
    let ticks = futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(keepalive).await;
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from_static(b":keepalive\n")),
            (),
        ))
    });
    let first = futures::stream::iter((!backlog.is_empty()).then(|| Ok(Bytes::from(backlog))));
    let stream = first
        .chain(ticks)
        .take_until(state.shutdown.clone().cancelled_owned());
    Ok(sse_headers(Body::from_stream(stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_has_a_space_and_six_fraction_digits() {
        let t = DateTime::parse_from_rfc3339("2014-07-10T05:17:44.995958Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(sse_timestamp(t), "2014-07-10 05:17:44.995958Z");
        let e = event("start_of_history", "start_id", t, Map::new());
        assert_eq!(
            e,
            "event: start_of_history\nid: start_id\ndata: {\"timestamp\":\"2014-07-10 05:17:44.995958Z\"}\n\n"
        );
    }
}
