//! Waiting for a job: follow its event feed (http.md §3.4) instead of knife-push's polling
//! loop. The server replays the job's events from the start, streams new ones and ends
//! the response after `job_complete`; a job that finished long ago answers one `summary`
//! event. If the stream breaks early, the job is read once and the feed resumed from the
//! last event id (`Last-Event-ID`).
//!
//! A server restart is survived: while the server cannot be reached (connection refused,
//! or a proxy's 502/503/504) the wait retries with growing delays ([`Backoff`]) until the
//! deadline, or — without one — until the server has been unreachable for [`OUTAGE`].

use std::time::Duration;

use pushy_protocol::job::{JobId, JobStatus};
use tokio::time::{Instant, timeout, timeout_at};

use crate::api::{self, Client};
use crate::display::Display;
use crate::feed::{Parser, Progress};

/// The server sends a keepalive every 15 s; a silence this long means a dead connection.
const IDLE: Duration = Duration::from_secs(45);

/// Without a deadline, how long the server may stay unreachable before the wait fails.
pub const OUTAGE: Duration = Duration::from_secs(300);

/// Feed responses in a row that end before the job does, with the server answering,
/// before giving up (a server bug, not an outage).
const MAX_EARLY_ENDS: u32 = 10;

/// How the wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The job finished with this status.
    Finished(JobStatus),
    /// The deadline passed first.
    GaveUp,
}

/// Retry delays while the server is away: 250 ms doubling to 5 s; the outage ends at the
/// first answer. Pure: the caller passes `now`.
#[derive(Clone, Debug)]
pub struct Backoff {
    delay: Duration,
    since: Option<Instant>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(5);

    /// No failure yet.
    pub fn new() -> Backoff {
        Backoff {
            delay: Backoff::FIRST,
            since: None,
        }
    }

    /// The server answered: the next failure starts a new outage.
    pub fn reset(&mut self) {
        *self = Backoff::new();
    }

    /// A failure at `now`: the delay before the next try, or `None` once the outage has
    /// lasted `limit`.
    pub fn failed(&mut self, now: Instant, limit: Duration) -> Option<Duration> {
        let since = *self.since.get_or_insert(now);
        if now.saturating_duration_since(since) >= limit {
            return None;
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(Backoff::MAX);
        Some(delay)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Errors that a restarting server (or the proxy in front of it) gives: worth retrying.
fn transient(e: &api::Error) -> bool {
    match e {
        api::Error::Connection { .. } => true,
        api::Error::Status { status, .. } => matches!(status, 502..=504),
        api::Error::Unexpected { .. } | api::Error::Sign(_) => false,
    }
}

/// Follows job `id` until it finishes or `deadline` passes, updating `display`.
///
/// # Errors
/// An error status from the feed or the job (401, 403, 404, 500), a server unreachable
/// for [`OUTAGE`] when there is no deadline, or a feed that keeps ending early.
pub async fn follow(
    client: &Client,
    id: &JobId,
    progress: &mut Progress,
    display: &mut Display,
    mut live: Option<&mut Live>,
    deadline: Option<Instant>,
) -> Result<End, api::Error> {
    let end = follow_feed(client, id, progress, display, live.as_deref_mut(), deadline).await;
    if let Some(live) = live {
        for line in live.lines.flush() {
            display.output(&line.render(live.colour));
        }
    }
    end
}

/// Whether live output lines get colour: only on a terminal (stdout, or stderr when
/// stdout holds a document), and never with `NO_COLOR` set.
pub fn colour(structured: bool) -> bool {
    use std::io::IsTerminal as _;
    let terminal = if structured {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Live output to print while following (`--stream`, `job tail`).
#[derive(Debug, Default)]
pub struct Live {
    /// The lines so far.
    pub lines: crate::feed::OutputLines,
    /// Colour the node names and stderr marks.
    pub colour: bool,
}

async fn follow_feed(
    client: &Client,
    id: &JobId,
    progress: &mut Progress,
    display: &mut Display,
    mut live: Option<&mut Live>,
    deadline: Option<Instant>,
) -> Result<End, api::Error> {
    let feed_url = client.url(&format!("pushy/job_status_feed/{id}"));
    let job_url = client.url(&format!("pushy/jobs/{id}"));
    let mut last_id: Option<String> = None;
    let mut backoff = Backoff::new();
    // Whether this outage was reported (once per outage, not per retry).
    let mut reported = false;
    let mut early_ends = 0;
    loop {
        let opened = bounded(
            deadline,
            client.open_stream(feed_url.clone(), last_id.as_deref()),
        );
        let mut failure = None;
        match opened.await {
            None => return Ok(End::GaveUp),
            Some(Ok(mut resp)) => {
                backoff.reset();
                if reported {
                    tracing::warn!("the server answers again; following the job");
                    reported = false;
                }
                let mut parser = Parser::default();
                loop {
                    let chunk = match bounded(deadline, timeout(IDLE, resp.chunk())).await {
                        None => return Ok(End::GaveUp),
                        Some(Err(_) | Ok(Err(_)) | Ok(Ok(None))) => break,
                        Some(Ok(Ok(Some(bytes)))) => bytes,
                    };
                    for event in parser.push(&chunk) {
                        early_ends = 0;
                        let live = live.as_deref_mut();
                        if let Some(s) = seen(&event, progress, display, live, &mut last_id) {
                            return Ok(End::Finished(s));
                        }
                    }
                }
                if let Some(event) = parser.finish()
                    && let Some(s) =
                        seen(&event, progress, display, live.as_deref_mut(), &mut last_id)
                {
                    return Ok(End::Finished(s));
                }
            }
            Some(Err(e)) if transient(&e) => {
                tracing::debug!(error = %e, "the event feed did not open");
                failure = Some(e);
            }
            Some(Err(e)) => return Err(e),
        }
        if failure.is_none() {
            // The stream ended without the job's end: ask the job itself.
            match bounded(deadline, client.get_json(job_url.clone())).await {
                None => return Ok(End::GaveUp),
                Some(Ok(job)) => {
                    progress.apply_job(&job);
                    if let Some(s) = progress.finished() {
                        display.update(progress);
                        return Ok(End::Finished(s));
                    }
                    early_ends += 1;
                    if early_ends > MAX_EARLY_ENDS {
                        return Err(api::Error::Unexpected {
                            url: feed_url.to_string(),
                            reason: "the event feed keeps ending before the job does".to_owned(),
                        });
                    }
                }
                Some(Err(e)) if transient(&e) => failure = Some(e),
                Some(Err(e)) => return Err(e),
            }
        }
        // With a deadline, retrying stops when it passes (exit "timed out"); without one,
        // after a long outage.
        let limit = if deadline.is_some() {
            Duration::MAX
        } else {
            OUTAGE
        };
        let pause = match &failure {
            Some(_) => backoff.failed(Instant::now(), limit),
            None => Some(Duration::from_secs(1)),
        };
        let Some(pause) = pause else {
            return Err(failure.expect("only a failure ends the back-off"));
        };
        if let Some(e) = &failure {
            if reported {
                tracing::debug!(error = %e, retry_in = ?pause, "still unreachable");
            } else {
                tracing::warn!(error = %e, "the server is unreachable; waiting for it");
                reported = true;
            }
        }
        if bounded(deadline, tokio::time::sleep(pause)).await.is_none() {
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
    live: Option<&mut Live>,
    last_id: &mut Option<String>,
) -> Option<JobStatus> {
    if event.id.is_some() {
        last_id.clone_from(&event.id);
    }
    // Live output changes no state: printed when asked for, else skipped.
    if event.name == "run_output" {
        if let Some(live) = live
            && let Ok(data) = serde_json::from_str::<serde_json::Value>(&event.data)
        {
            for line in live.lines.push(&data) {
                display.output(&line.render(live.colour));
            }
        }
        return None;
    }
    progress.handle(event);
    display.update(progress);
    progress.finished()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_ends_after_the_outage_limit() {
        let t0 = Instant::now();
        let mut b = Backoff::new();
        let limit = Duration::from_secs(60);
        let delays: Vec<_> = (0..7)
            .map(|i| b.failed(t0 + Duration::from_secs(i), limit).unwrap())
            .collect();
        let ms = |d: &Duration| d.as_millis();
        assert_eq!(
            delays.iter().map(ms).collect::<Vec<_>>(),
            [250, 500, 1000, 2000, 4000, 5000, 5000]
        );
        assert_eq!(b.failed(t0 + limit, limit), None);
    }

    #[test]
    fn an_answer_starts_a_new_outage() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(60);
        let mut b = Backoff::new();
        b.failed(t0, limit).unwrap();
        b.failed(t0 + Duration::from_secs(59), limit).unwrap();
        b.reset();
        let later = t0 + Duration::from_secs(120);
        assert_eq!(b.failed(later, limit), Some(Duration::from_millis(250)));
        assert!(b.failed(later + Duration::from_secs(59), limit).is_some());
    }

    #[test]
    fn only_unreachable_servers_are_retried() {
        let status = |status| api::Error::Status {
            method: "GET",
            url: "u".into(),
            status,
            message: String::new(),
        };
        for code in [502, 503, 504] {
            assert!(transient(&status(code)), "{code}");
        }
        for code in [400, 401, 403, 404, 500] {
            assert!(!transient(&status(code)), "{code}");
        }
        assert!(!transient(&api::Error::Unexpected {
            url: "u".into(),
            reason: "not JSON".into()
        }));
    }
}
