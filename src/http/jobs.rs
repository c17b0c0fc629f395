//! The job routes (http.md §1.4.2–1.4.5): list, create, read one, read output, and our
//! abort route.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pushy_protocol::job::{JobId, NodeStatus};
use pushy_store::{JobRecord, OutputChannel};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::extract::{Segments, query_param};
use super::pipeline::{Endpoint, GET_JSON, admit, content_type_is};
use super::state::AppState;
use crate::auth::Rule;
use crate::jobs::controls::Controls;
use crate::jobs::{AbortOutcome, parse_spec};

const COLLECTION: Endpoint = Endpoint {
    methods: &[Method::POST, Method::GET],
    allow: "POST, GET",
    produces: "application/json",
};
const ABORT: Endpoint = Endpoint {
    methods: &[Method::POST],
    allow: "POST",
    produces: "application/json",
};
const OUTPUT: Endpoint = Endpoint {
    methods: &[Method::GET],
    allow: "GET",
    produces: "application/octet-stream",
};

/// `Tue, 04 Sep 2012 23:01:02 GMT`, from the stored UTC value (§8.1 item 9, fixed).
pub(super) fn rfc1123(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// The job summary of §1.4.3, keys in the original's order; `include_file` puts the file
/// itself in place of `file_specified`.
pub(super) fn summary(job: &JobRecord, include_file: bool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), job.id.as_str().into());
    m.insert("command".into(), job.command.clone().into());
    m.insert("status".into(), job.status.wire_name().into());
    m.insert("run_timeout".into(), job.run_timeout.into());
    m.insert("created_at".into(), rfc1123(job.created_at).into());
    m.insert("updated_at".into(), rfc1123(job.updated_at).into());
    let o = &job.options;
    if let Some(u) = &o.user {
        m.insert("user".into(), u.clone().into());
    }
    if let Some(d) = &o.dir {
        m.insert("dir".into(), d.clone().into());
    }
    if let Some(env) = &o.env {
        match serde_json::from_str::<Value>(env) {
            Ok(v) => {
                m.insert("env".into(), v);
            }
            Err(e) => tracing::error!(job_id = %job.id, error = %e, "stored env is not JSON"),
        }
    }
    if o.capture {
        m.insert("capture_output".into(), true.into());
    }
    match (&o.file, include_file) {
        (Some(f), true) => {
            m.insert("file".into(), f.clone().into());
        }
        (Some(_), false) => {
            m.insert("file_specified".into(), true.into());
        }
        (None, _) => {}
    }
    controls(job, &mut m);
    m
}

/// Operators' controls (issue 15), only for jobs posted with them: as posted, and once
/// the job is over, the success threshold's verdict. `list_jobs` reads no nodes, so the
/// verdict is on the job's own document only.
fn controls(job: &JobRecord, m: &mut Map<String, Value>) {
    let Some(stored) = job.options.controls.as_deref() else {
        return;
    };
    let controls = Controls::from_stored(Some(stored));
    m.extend(controls.to_json());
    if job.status.is_terminal() && !job.nodes.is_empty() {
        let succeeded = job
            .nodes
            .iter()
            .filter(|(_, s)| *s == NodeStatus::Succeeded)
            .count();
        if let Some(ok) = controls.verdict(job.nodes.len(), succeeded) {
            m.insert(
                "verdict".into(),
                if ok { "success" } else { "failure" }.into(),
            );
        }
    }
}

/// The named-job object of §1.4.4: `nodes` first, grouped by status in request order.
pub(super) fn named_job(job: &JobRecord, include_file: bool) -> Map<String, Value> {
    let mut by_status: Map<String, Value> = Map::new();
    for status in NodeStatus::ALL {
        let names: Vec<Value> = job
            .nodes
            .iter()
            .filter(|(_, s)| s == status)
            .map(|(n, _)| n.clone().into())
            .collect();
        if !names.is_empty() {
            by_status.insert(status.wire_name().into(), names.into());
        }
    }
    let mut m = Map::new();
    m.insert("nodes".into(), by_status.into());
    m.extend(summary(job, include_file));
    m
}

/// The scheme the client used, as Chef Server's nginx says in `X-Forwarded-Proto`.
pub(super) fn forwarded_scheme(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// `scheme://host[:port]` for job URIs: `X-Forwarded-Proto` else `http`; the `Host`
/// header's port is dropped when it is 80 or 443 (§1.4.2).
pub(super) fn base_url(headers: &HeaderMap) -> String {
    let scheme = forwarded_scheme(headers).unwrap_or("http");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let host = match host.rsplit_once(':') {
        Some((h, "80" | "443")) => h,
        _ => host,
    };
    format!("{scheme}://{host}")
}

/// `GET` lists the org's jobs; `POST` creates one.
pub(super) async fn collection(
    State(state): State<AppState>,
    Segments(org): Segments<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let creating = req.method() == Method::POST;
    let rule = if creating { Rule::Write } else { Rule::Read };
    let (ok, spec) = admit(&state, req, &COLLECTION, &org, rule, |parts, body| {
        if parts.method == Method::POST {
            parse_spec(body).map(Some).map_err(ApiError::from)
        } else {
            Ok(None)
        }
    })
    .await?;
    let Some(spec) = spec else {
        let jobs = state.store.list_jobs(&ok.who.org_guid).await?;
        let body: Vec<Value> = jobs
            .iter()
            .map(|j| Value::Object(summary(j, false)))
            .collect();
        return Ok(axum::Json(body).into_response());
    };
    if !content_type_is(&ok.parts.headers, "application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let id = state
        .jobs
        .create(&ok.who.org_guid, &ok.who.name, spec)
        .await?;
    let uri = format!(
        "{}{}/{id}",
        base_url(&ok.parts.headers),
        ok.parts.uri.path()
    );
    let location = HeaderValue::from_str(&uri).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(serde_json::json!({ "uri": uri })),
    )
        .into_response())
}

/// One job with its node breakdown; 404 for another org's job (§8.2 item 17, fixed).
pub(super) async fn named(
    State(state): State<AppState>,
    Segments((org, job)): Segments<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let (ok, ()) = admit(&state, req, &GET_JSON, &org, Rule::Read, |_, _| Ok(())).await?;
    let id = JobId::parse(&job).ok_or(ApiError::NotFound)?;
    let record = state
        .store
        .find_job(&ok.who.org_guid, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let include_file = query_param(ok.parts.uri.query(), "include_file").as_deref() == Some("true");
    Ok(axum::Json(Value::Object(named_job(&record, include_file))).into_response())
}

/// Stops a job that has not finished (writers only). Not in the original.
pub(super) async fn abort(
    State(state): State<AppState>,
    Segments((org, job)): Segments<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let (ok, ()) = admit(&state, req, &ABORT, &org, Rule::Write, |_, _| Ok(())).await?;
    let id = JobId::parse(&job).ok_or(ApiError::NotFound)?;
    match state.jobs.abort(&ok.who.org_guid, &id).await? {
        None => Err(ApiError::NotFound),
        Some(AbortOutcome::AlreadyFinished(status)) => Err(ApiError::Conflict(format!(
            "job {id} already finished: {status}"
        ))),
        Some(AbortOutcome::Aborted(record)) => {
            Ok(axum::Json(Value::Object(named_job(&record, false))).into_response())
        }
    }
}

/// Captured stdout or stderr of one node, byte for byte.
pub(super) async fn output(
    State(state): State<AppState>,
    Segments((org, job, node, channel)): Segments<(String, String, String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    // Any other channel name is no route at all (§1.1).
    let channel = match channel.as_str() {
        "stdout" => OutputChannel::Stdout,
        "stderr" => OutputChannel::Stderr,
        _ => return Err(ApiError::NotFound),
    };
    let (ok, ()) = admit(&state, req, &OUTPUT, &org, Rule::Read, |_, _| Ok(())).await?;
    let id = JobId::parse(&job).ok_or(ApiError::NotFound)?;
    let text = state
        .store
        .fetch_output(&ok.who.org_guid, &id, &node, channel)
        .await?
        .ok_or(ApiError::NotFound)?;
    // Ours: the agent kept only the tail of this output (it did not fit a message).
    let truncated = if text.truncated { "true" } else { "false" };
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::HeaderName::from_static("x-push-output-truncated"),
                truncated,
            ),
        ],
        text.text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_uri_base() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "chef.example.com:443".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(base_url(&h), "https://chef.example.com");
        h.insert(header::HOST, "localhost:10003".parse().unwrap());
        h.remove("x-forwarded-proto");
        assert_eq!(base_url(&h), "http://localhost:10003");
    }
}
