//! Waiting for a job: follow its event feed (http.md §3.4) instead of knife-push's polling
//! loop. The server replays the job's events from the start, streams new ones and ends
//! the response after `job_complete`; a job that finished long ago answers one `summary`
//! event. If the stream breaks early, the job is read once and the feed resumed from the
//! last event id.

use std::time::Duration;

use pushy_protocol::job::{JobId, JobStatus};
use tokio::time::{Instant, timeout, timeout_at};

use crate::api::{self, Client};
use crate::display::Display;
use crate::feed::{Parser, Progress};

/// The server sends a keepalive every 15 s; a silence this long means a dead connection.
const IDLE: Duration = Duration::from_secs(45);

/// Reconnections in a row without any new event before giving up.
const MAX_RETRIES: u32 = 10;

/// How the wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The job finished with this status.
    Finished(JobStatus),
    /// The deadline passed first.
    GaveUp,
}

/// Follows job `id` until it finishes or `deadline` passes, updating `display`.
///
/// # Errors
/// An error status from the feed or the job (401, 403, 404, 5xx), or a connection that
/// keeps failing.
pub async fn follow(
    client: &Client,
    id: &JobId,
    progress: &mut Progress,
    display: &mut Display,
    deadline: Option<Instant>,
) -> Result<End, api::Error> {
    let feed_url = client.url(&format!("pushy/job_status_feed/{id}"));
    let job_url = client.url(&format!("pushy/jobs/{id}"));
    let mut last_id: Option<String> = None;
    let mut retries = 0;
    loop {
        let opened = bounded(
            deadline,
            client.open_stream(feed_url.clone(), last_id.as_deref()),
        );
        let resp = match opened.await {
            None => return Ok(End::GaveUp),
            Some(Ok(r)) => Some(r),
            Some(Err(e)) if e.status().is_some() => return Err(e),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "the event feed did not open");
                retries += 1;
                if retries > MAX_RETRIES {
                    return Err(e);
                }
                None
            }
        };
        if let Some(mut resp) = resp {
            let mut parser = Parser::default();
            loop {
                let chunk = match bounded(deadline, timeout(IDLE, resp.chunk())).await {
                    None => return Ok(End::GaveUp),
                    Some(Err(_) | Ok(Err(_)) | Ok(Ok(None))) => break,
                    Some(Ok(Ok(Some(bytes)))) => bytes,
                };
                for event in parser.push(&chunk) {
                    retries = 0;
                    if let Some(s) = seen(&event, progress, display, &mut last_id) {
                        return Ok(End::Finished(s));
                    }
                }
            }
            if let Some(event) = parser.finish()
                && let Some(s) = seen(&event, progress, display, &mut last_id)
            {
                return Ok(End::Finished(s));
            }
        }
        // The stream ended without the job's end: ask the job itself.
        let job = match bounded(deadline, client.get_json(job_url.clone())).await {
            None => return Ok(End::GaveUp),
            Some(j) => j?,
        };
        progress.apply_job(&job);
        if let Some(s) = progress.finished() {
            display.update(progress);
            return Ok(End::Finished(s));
        }
        retries += 1;
        if retries > MAX_RETRIES {
            return Err(api::Error::Unexpected {
                url: feed_url.to_string(),
                reason: "the event feed keeps ending before the job does".to_owned(),
            });
        }
        if bounded(deadline, tokio::time::sleep(Duration::from_secs(1)))
            .await
            .is_none()
        {
            return Ok(End::GaveUp);
        }
    }
}

/// `f`'s output, or `None` when `deadline` passes first.
async fn bounded<F: std::future::Future>(deadline: Option<Instant>, f: F) -> Option<F::Output> {
    match deadline {
        Some(d) => timeout_at(d, f).await.ok(),
        None => Some(f.await),
    }
}

/// Applies one event; the job's final status once it has one.
fn seen(
    event: &crate::feed::Event,
    progress: &mut Progress,
    display: &mut Display,
    last_id: &mut Option<String>,
) -> Option<JobStatus> {
    if event.id.is_some() {
        last_id.clone_from(&event.id);
    }
    progress.handle(event);
    display.update(progress);
    progress.finished()
}
