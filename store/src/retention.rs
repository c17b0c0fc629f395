//! Deleting old finished jobs in paced batches (issue 15 §5): the one loop the daemon's
//! `[retention]` task and `push-jobs-server-ctl purge-jobs` both run. Each batch is one
//! short transaction ([`Store::delete_finished_jobs`]); the pause after it is at least as
//! long as the batch took, so a sweep never holds the store more than half the time.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;

use crate::{Error, Store};

/// The shortest pause between two batches of a sweep.
const MIN_PAUSE: Duration = Duration::from_millis(100);

/// The cutoff of a sweep starting at `now`: jobs that finished before it are deleted. An
/// age beyond the calendar's range deletes nothing.
pub fn cutoff(now: DateTime<Utc>, max_age: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(max_age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// How long to wait after a batch that took `took` before the next one.
pub fn pause_after(took: Duration) -> Duration {
    took.max(MIN_PAUSE)
}

/// A sweep that stopped on a store error, after deleting `deleted` jobs.
#[derive(Debug, thiserror::Error)]
#[error("deleting finished jobs failed after {deleted} were deleted")]
pub struct SweepError {
    /// Jobs deleted by the batches before the failure.
    pub deleted: u64,
    /// The store's error.
    #[source]
    pub source: Error,
}

/// Deletes every job that finished before `cutoff`, `batch` at a time, pausing between
/// batches ([`pause_after`]); `on_batch` hears each batch's count. Returns the total.
///
/// # Errors
/// [`SweepError`] on the first store error, with what was deleted before it.
pub async fn sweep(
    store: &dyn Store,
    cutoff: DateTime<Utc>,
    batch: u32,
    mut on_batch: impl FnMut(u64),
) -> Result<u64, SweepError> {
    let mut deleted = 0;
    loop {
        let started = Instant::now();
        let n = store
            .delete_finished_jobs(cutoff, batch)
            .await
            .map_err(|source| SweepError { deleted, source })?;
        deleted += n;
        on_batch(n);
        if n < u64::from(batch) {
            return Ok(deleted);
        }
        tokio::time::sleep(pause_after(started.elapsed())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_now_minus_the_age_and_never_overflows() {
        let now = DateTime::parse_from_rfc3339("2026-01-31T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            cutoff(now, Duration::from_secs(30 * 86_400)),
            DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
                .unwrap()
                .with_timezone(&Utc)
        );
        assert_eq!(cutoff(now, Duration::MAX), DateTime::<Utc>::MIN_UTC);
    }

    #[test]
    fn a_batch_is_followed_by_a_pause_at_least_as_long() {
        assert_eq!(pause_after(Duration::ZERO), MIN_PAUSE);
        assert_eq!(pause_after(Duration::from_secs(2)), Duration::from_secs(2));
    }
}
