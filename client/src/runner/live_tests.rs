//! Live output from real commands (issue 15 §2): chunks arrive while the command runs,
//! within the bounds, before `wait` returns; the final capture is unchanged.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::live::{CHUNK, INTERVAL, Live, LiveChunk};
use super::{JobSpec, Outcome, RunnerConfig, escaped_size, start};

const LIMIT: Duration = Duration::from_secs(30);

/// What the sink saw, and when.
type Seen = Arc<Mutex<Vec<(Instant, LiveChunk)>>>;

fn spec(command_line: &str, capture: bool) -> JobSpec {
    JobSpec {
        job_id: "job-1".into(),
        node_name: "node1".into(),
        command_line: command_line.into(),
        capture,
        ..JobSpec::default()
    }
}

/// Runs `spec` streaming into a sink that takes chunks unless `refuse` says no to the
/// n-th (counting from 0).
async fn run_live(
    spec: JobSpec,
    refuse: impl Fn(usize) -> bool + Send + 'static,
) -> (Outcome, Vec<(Instant, LiveChunk)>) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RunnerConfig {
        file_dir: tmp.path().join("files"),
        ..RunnerConfig::default()
    };
    let seen: Seen = Arc::default();
    let sink_seen = seen.clone();
    let mut n = 0;
    let live = Live {
        sink: Box::new(move |chunk| {
            let taken = !refuse(n);
            n += 1;
            sink_seen.lock().unwrap().push((Instant::now(), chunk));
            taken
        }),
        lost: Arc::new(AtomicU64::new(0)),
    };
    let running = start(spec, &cfg)
        .await
        .expect("command starts")
        .with_live(live);
    let outcome = tokio::time::timeout(LIMIT, running.wait(CancellationToken::new()))
        .await
        .expect("command finishes");
    let seen = seen.lock().unwrap().clone();
    (outcome, seen)
}

fn stdout_of(chunks: &[(Instant, LiveChunk)]) -> String {
    chunks
        .iter()
        .filter_map(|(_, c)| c.stdout.as_deref())
        .collect()
}

/// No burst: chunks before the last keep the interval apart. The last goes at once by
/// design (the chunker's own tests pin both, with the clock in hand). The sink notes the
/// time a little after the chunker decided, and a loaded machine can stretch "a little",
/// so this only asks for half the interval: a chunker without the rate would send many
/// chunks within a few milliseconds here.
fn within_rate(chunks: &[(Instant, LiveChunk)]) -> bool {
    let before_last = &chunks[..chunks.len().saturating_sub(1)];
    before_last
        .windows(2)
        .all(|w| w[1].0 - w[0].0 >= INTERVAL / 2)
}

#[tokio::test]
async fn output_streams_while_the_command_runs() {
    let cmd = "for i in 1 2 3; do echo $i; sleep 0.5; done; echo oops >&2; sleep 0.5";
    let (outcome, chunks) = run_live(spec(cmd, true), |_| false).await;
    assert!(outcome.exit_ok);
    // The first line went out while the command slept, before the rest was written.
    assert!(chunks.len() >= 2, "{chunks:?}");
    assert_eq!(chunks[0].1.stdout.as_deref(), Some("1\n"));
    assert_eq!(stdout_of(&chunks), "1\n2\n3\n");
    let stderr: String = chunks
        .iter()
        .filter_map(|(_, c)| c.stderr.as_deref())
        .collect();
    assert_eq!(stderr, "oops\n");
    assert!(chunks.iter().all(|(_, c)| c.dropped == 0));
    assert!(within_rate(&chunks), "{chunks:?}");
    // The result still carries the whole capture.
    assert_eq!(outcome.stdout.unwrap().text, "1\n2\n3\n");
    assert_eq!(outcome.stderr.unwrap().text, "oops\n");
}

#[tokio::test]
async fn a_fast_command_stays_within_the_bounds_and_counts_what_it_dropped() {
    let total: usize = (1..=200_000).map(|i: u32| i.to_string().len() + 1).sum();
    let (outcome, chunks) = run_live(spec("seq 200000", true), |_| false).await;
    assert!(outcome.exit_ok);
    assert!(!chunks.is_empty());
    assert!(within_rate(&chunks), "{chunks:?}");
    let mut sent = 0;
    let mut dropped = 0;
    for (_, c) in &chunks {
        let text = c.stdout.as_deref().unwrap_or_default();
        assert!(escaped_size(text) <= CHUNK, "{}", text.len());
        sent += text.len() as u64;
        dropped += c.dropped;
    }
    assert!(sent > 0 && dropped > 0, "{sent} {dropped}");
    // Never more than was written. (Whether it all adds up depends on the rate letting
    // a last chunk go; the chunker's own tests pin the accounting.)
    assert!(
        sent + dropped <= total as u64,
        "{sent} + {dropped} of {total}"
    );
    // The result's tail is what it always was.
    assert!(outcome.stdout.unwrap().text.ends_with("\n199999\n200000\n"));
}

#[tokio::test]
async fn a_refused_chunk_is_counted_in_the_next_one() {
    let cmd = "echo one; sleep 0.4; echo two; sleep 0.4";
    let (_, chunks) = run_live(spec(cmd, true), |n| n == 0).await;
    assert_eq!(chunks[0].1.stdout.as_deref(), Some("one\n"));
    // The next chunk reports the loss, whether "two" is ready by then or not.
    assert_eq!(chunks[1].1.dropped, 4);
    assert_eq!(stdout_of(&chunks[1..]), "two\n");
    assert!(chunks[2..].iter().all(|(_, c)| c.dropped == 0));
}

#[tokio::test]
async fn nothing_streams_without_capture() {
    let (outcome, chunks) = run_live(spec("echo hello; sleep 0.3", false), |_| false).await;
    assert!(outcome.exit_ok && outcome.stdout.is_none());
    assert!(chunks.is_empty(), "{chunks:?}");
}
