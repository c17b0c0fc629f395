//! Job and org event feeds kept in memory (http.md §3): the job machinery [`Events::emit`]s,
//! the SSE handlers subscribe with [`Events::job_stream`] and [`Events::org_stream`].
//!
//! [`Events`] is a cheap handle. The logs ([`log`], pure) sit behind one
//! `std::sync::Mutex`, held only for short sections and never across an `.await`; live
//! subscribers get events from `tokio::sync::broadcast` channels. An event is appended
//! and broadcast under the lock, and a subscriber reads its backlog and subscribes under
//! the lock, so every subscriber sees each event exactly once: in the backlog or live.

mod event;
pub mod log;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use futures::Stream;
use pushy_protocol::job::{JobId, OrgGuid};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use self::log::{JobLog, OrgLog, concat};

pub use self::event::{JobEvent, Output, RunStatus, StartInfo, VoteStatus};
pub use self::log::{render, sse_timestamp};

/// Capacity of each live channel (one per watched job, one per watched org). Sending
/// never waits: when a subscriber falls this far behind, the oldest events are
/// overwritten. A job subscriber then catches up from the job's log, which holds every
/// event (a 10 000-node job emits that many in one burst); an org subscriber's stream
/// ends instead of skipping events, and its client resumes with `Last-Event-ID`.
const CHANNEL_CAPACITY: usize = 1024;

/// How much live output (issue 15 §2) a running job keeps per node for feeds opened
/// later, in rendered bytes: the newest events that fit (at least the last one).
pub const OUTPUT_TAIL: usize = 8 * 1024;

/// The keepalive comment (§3.2): one line, a single newline.
pub const KEEPALIVE: &[u8] = b":keepalive\n";

/// Timing of the feeds (the `pushy` config section).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventsConfig {
    /// Silence after which a stream gets `:keepalive\n` (`keep_alive_time`).
    pub keep_alive: Duration,
    /// How long org events are retained (`org_feed_expiration`).
    pub org_feed_expiration: Duration,
    /// How long a finished job's events stay available (`wait_complete_time`).
    pub wait_complete_time: Duration,
}

/// An event as the logs take it: its name, its fields, whether it is copied to the org
/// feed (`start`, `job_complete`) and whether it ends the job's feed (`job_complete`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recorded {
    /// The SSE event name.
    pub name: String,
    /// Its data fields after `timestamp`.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Copied to the org feed.
    pub to_org: bool,
    /// The job's last event.
    pub completes: bool,
}

impl Recorded {
    /// `event` taken apart.
    pub fn of(event: &JobEvent) -> Recorded {
        Recorded {
            name: event.name().to_owned(),
            fields: event.fields(),
            to_org: matches!(event, JobEvent::Start(_) | JobEvent::JobComplete { .. }),
            completes: matches!(event, JobEvent::JobComplete { .. }),
        }
    }
}

/// Handle on the in-memory event feeds; clones share them.
#[derive(Clone)]
pub struct Events {
    shared: Arc<Shared>,
}

struct Shared {
    config: EventsConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Feeds kept in memory (§3.4): of jobs running, or finished less than
    /// `wait_complete_time` ago. Not a record of live jobs (that is `jobs::LiveJobs`).
    jobs: HashMap<JobId, JobEntry>,
    /// Finished jobs in finishing order, with the instant their log goes. Every access
    /// drops the due ones first, so the map never holds a job past its window.
    retiring: VecDeque<(Instant, JobId)>,
    /// Per organization: recent copies and the `org-N` counter (for the process's life).
    orgs: HashMap<OrgGuid, OrgEntry>,
}

struct JobEntry {
    log: JobLog,
    /// Live output per node, newest last, within [`OUTPUT_TAIL`] each; not in the log.
    tails: BTreeMap<String, OutputTail>,
    /// Created by the first subscriber, dropped when nobody listens or the job finishes
    /// (subscribers then read what is queued and see `Closed`).
    tx: Option<broadcast::Sender<Live>>,
    finished: bool,
}

/// What live subscribers receive: an event's text, and whether it is in the job's log
/// (a subscriber that falls behind catches up from the log by count).
#[derive(Clone, Debug)]
struct Live {
    text: Bytes,
    logged: bool,
}

/// One node's recent live output events.
#[derive(Default)]
struct OutputTail {
    events: VecDeque<Bytes>,
    bytes: usize,
}

impl OutputTail {
    fn push(&mut self, text: Bytes) {
        self.bytes += text.len();
        self.events.push_back(text);
        while self.bytes > OUTPUT_TAIL && self.events.len() > 1 {
            if let Some(old) = self.events.pop_front() {
                self.bytes -= old.len();
            }
        }
    }
}

struct OrgEntry {
    log: OrgLog,
    /// Created by the first subscriber, dropped when nobody listens.
    tx: Option<broadcast::Sender<Live>>,
}

impl State {
    fn prune(&mut self, now: Instant) {
        while let Some((due, _)) = self.retiring.front()
            && *due <= now
        {
            if let Some((_, job)) = self.retiring.pop_front() {
                self.jobs.remove(&job);
            }
        }
    }
}

/// Broadcasts `text`, forgetting the channel when nobody is subscribed.
fn send(tx: &mut Option<broadcast::Sender<Live>>, text: Bytes, logged: bool) {
    if let Some(sender) = tx
        && sender.send(Live { text, logged }).is_err()
    {
        *tx = None;
    }
}

fn subscribe(tx: &mut Option<broadcast::Sender<Live>>) -> broadcast::Receiver<Live> {
    tx.get_or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
        .subscribe()
}

impl Events {
    /// Empty feeds with the given timing.
    pub fn new(config: EventsConfig) -> Events {
        Events {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The state, pruned of jobs whose window has passed. A panic while holding the
    /// lock cannot leave the logs half-updated in a harmful way, so poison is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.prune(Instant::now());
        state
    }

    fn org_expiration(&self) -> TimeDelta {
        TimeDelta::from_std(self.shared.config.org_feed_expiration).unwrap_or(TimeDelta::MAX)
    }

    /// Makes `job` live (its feed streams from now on) before its first event.
    pub fn begin_job(&self, _org: &OrgGuid, job: &JobId) {
        self.lock()
            .jobs
            .entry(job.clone())
            .or_insert_with(|| JobEntry {
                log: JobLog::new(),
                tails: BTreeMap::new(),
                tx: None,
                finished: false,
            });
    }

    /// Records `event` of `job` (in `org`) created at `now`: appends it to the job's log
    /// (`job-N`, timestamp strictly after the previous one), copies `start` and
    /// `job_complete` to the org's log with the same timestamp, and sends both to live
    /// subscribers. `job_complete` finishes the job: its streams end after that event
    /// and its log goes `wait_complete_time` later. Events after that are ignored.
    pub fn emit(&self, org: &OrgGuid, job: &JobId, event: &JobEvent, now: DateTime<Utc>) {
        self.record(org, job, &Recorded::of(event), now, None);
    }

    /// [`Events::emit`] of an event already taken apart (as another instance of a
    /// cluster publishes it); `org_number`, when given, numbers its org copy
    /// (`org-N`) instead of this process's counter, so every instance gives the copy
    /// the same id.
    pub fn record(
        &self,
        org: &OrgGuid,
        job: &JobId,
        event: &Recorded,
        now: DateTime<Utc>,
        org_number: Option<u64>,
    ) {
        let (name, fields, to_org) = (event.name.as_str(), &event.fields, event.to_org);
        let expiration = self.org_expiration();
        let mut guard = self.lock();
        let State {
            jobs,
            retiring,
            orgs,
        } = &mut *guard;
        let entry = jobs.entry(job.clone()).or_insert_with(|| JobEntry {
            log: JobLog::new(),
            tails: BTreeMap::new(),
            tx: None,
            finished: false,
        });
        if entry.finished {
            tracing::warn!(%job, event = name, "event after job_complete ignored");
            return;
        }
        let mut org_entry = to_org.then(|| {
            orgs.entry(org.clone()).or_insert_with(|| OrgEntry {
                log: OrgLog::new(expiration),
                tx: None,
            })
        });
        // A copied event must also come after the org's previous one (same timestamp).
        // Not when a cluster numbers the copies: the job's feed must be the same on every
        // instance, whatever org history each one has seen.
        let not_before = match &org_entry {
            Some(o) if org_number.is_none() => o.log.next_at(now),
            _ => now,
        };
        let logged = entry.log.push(name, fields, not_before);
        let (text, at) = (logged.text.clone(), logged.at);
        send(&mut entry.tx, text, true);
        if let Some(o) = org_entry.as_mut() {
            let copy = o
                .log
                .push(job, name, fields, at, now, org_number)
                .text
                .clone();
            send(&mut o.tx, copy, true);
        }
        if event.completes {
            entry.finished = true;
            entry.tails.clear();
            entry.tx = None;
            retiring.push_back((
                Instant::now() + self.shared.config.wait_complete_time,
                job.clone(),
            ));
        }
    }

    /// Relays a running job's live output (issue 15 §2) to its feed's subscribers as a
    /// `run_output` event without an id (so `Last-Event-ID` keeps naming logged events)
    /// and keeps the node's newest ones for feeds opened later. Not logged, not copied to
    /// the org feed; ignored once the job finished.
    pub fn output(&self, job: &JobId, output: &Output, now: DateTime<Utc>) {
        let mut state = self.lock();
        let Some(entry) = state.jobs.get_mut(job) else {
            return;
        };
        if entry.finished {
            return;
        }
        let text = Bytes::from(log::render_output(output, now));
        entry
            .tails
            .entry(output.node.clone())
            .or_default()
            .push(text.clone());
        send(&mut entry.tx, text, false);
    }

    /// Ends `job` without a `job_complete` (its task died): live streams end, and the
    /// log goes `wait_complete_time` later. Does nothing for a finished or unknown job.
    pub fn abandon_job(&self, job: &JobId) {
        let mut guard = self.lock();
        let State { jobs, retiring, .. } = &mut *guard;
        if let Some(entry) = jobs.get_mut(job)
            && !entry.finished
        {
            entry.finished = true;
            entry.tx = None;
            retiring.push_back((
                Instant::now() + self.shared.config.wait_complete_time,
                job.clone(),
            ));
        }
    }

    /// Whether `job`'s events are in memory (§3.4: running, or finished less than
    /// `wait_complete_time` ago).
    pub fn is_live(&self, job: &JobId) -> bool {
        self.lock().jobs.contains_key(job)
    }

    /// `job`'s feed (§3.4 cases 1–2), or `None` when the job is not live (the caller
    /// serves the `summary`). The backlog (events after `last_event_id`, all of them when
    /// absent or unknown) comes as one chunk, then each new event as its own chunk with
    /// keepalives in between; the stream ends after `job_complete`, at once if the job
    /// already finished, or when this subscriber falls too far behind.
    pub fn job_stream(
        &self,
        job: &JobId,
        last_event_id: Option<&str>,
    ) -> Option<impl Stream<Item = Bytes> + Send + 'static> {
        // The log only grows, so the index found here still marks the same event when
        // the backlog and subscription are taken together under the lock below.
        let start = self.lock().jobs.get(job)?.log.start_after(last_event_id);
        let (backlog, delivered, rx) = self.job_events_from(job, start, true)?;
        let catch_up = JobCatchUp {
            events: self.clone(),
            job: job.clone(),
            delivered,
        };
        Some(feed(
            backlog,
            rx,
            Some(catch_up),
            self.shared.config.keep_alive,
        ))
    }

    /// The events of `job` from index `from` on (then, `with_tails`, each node's recent
    /// live output), and a fresh subscription when it still runs, read together under
    /// the lock so none is missed or repeated. `None` once the job's log is gone.
    fn job_events_from(
        &self,
        job: &JobId,
        from: usize,
        with_tails: bool,
    ) -> Option<(Bytes, usize, Option<broadcast::Receiver<Live>>)> {
        let mut state = self.lock();
        let entry = state.jobs.get_mut(job)?;
        let events = entry.log.events();
        let mut missed = concat(events.get(from..).unwrap_or_default());
        if with_tails && !entry.tails.is_empty() {
            let mut all = missed.to_vec();
            for tail in entry.tails.values() {
                for text in &tail.events {
                    all.extend_from_slice(text);
                }
            }
            missed = all.into();
        }
        let delivered = events.len();
        let rx = (!entry.finished).then(|| subscribe(&mut entry.tx));
        Some((missed, delivered, rx))
    }

    /// `org`'s feed (§3.5): no backlog without `last_event_id`; the retained events after
    /// a retained id; otherwise `start_of_history` and every retained event. Then live
    /// `start`/`job_complete` copies with keepalives; it never ends on its own (only when
    /// this subscriber falls too far behind).
    pub fn org_stream(
        &self,
        org: &OrgGuid,
        last_event_id: Option<&str>,
    ) -> impl Stream<Item = Bytes> + Send + 'static {
        let expiration = self.org_expiration();
        let now = Utc::now();
        let (backlog, rx) = {
            let mut state = self.lock();
            let entry = state.orgs.entry(org.clone()).or_insert_with(|| OrgEntry {
                log: OrgLog::new(expiration),
                tx: None,
            });
            let backlog = entry.log.backlog(last_event_id, now);
            (backlog, subscribe(&mut entry.tx))
        };
        feed(
            backlog.to_bytes(),
            Some(rx),
            None,
            self.shared.config.keep_alive,
        )
    }
}

/// Where a job subscriber that fell behind picks up again: how many of the job's events
/// it has been given.
struct JobCatchUp {
    events: Events,
    job: JobId,
    delivered: usize,
}

/// The backlog chunk (if any), then live events until the channel closes, with a
/// keepalive after `keep_alive` of silence (the timer restarts after every write). A
/// subscriber that falls behind catches up with `catch_up` when it has one (job feeds)
/// and is ended otherwise.
fn feed(
    backlog: Bytes,
    rx: Option<broadcast::Receiver<Live>>,
    catch_up: Option<JobCatchUp>,
    keep_alive: Duration,
) -> impl Stream<Item = Bytes> + Send + 'static {
    use futures::StreamExt as _;
    let first = futures::stream::iter((!backlog.is_empty()).then_some(backlog));
    let live = futures::stream::unfold((rx, catch_up), move |(rx, mut catch_up)| async move {
        let mut rx = rx?;
        loop {
            match tokio::time::timeout(keep_alive, rx.recv()).await {
                Err(_silence) => {
                    return Some((Bytes::from_static(KEEPALIVE), (Some(rx), catch_up)));
                }
                Ok(Ok(Live { text, logged })) => {
                    if logged && let Some(c) = catch_up.as_mut() {
                        c.delivered += 1;
                    }
                    return Some((text, (Some(rx), catch_up)));
                }
                Ok(Err(RecvError::Closed)) => return None,
                Ok(Err(RecvError::Lagged(missed))) => {
                    let Some(mut c) = catch_up else {
                        tracing::info!(
                            missed,
                            "event feed subscriber fell behind; ending its stream"
                        );
                        return None;
                    };
                    let (backlog, delivered, next) =
                        c.events.job_events_from(&c.job, c.delivered, false)?;
                    tracing::debug!(job_id = %c.job, from = c.delivered, "event feed subscriber caught up from the log");
                    c.delivered = delivered;
                    match next {
                        Some(next) if backlog.is_empty() => {
                            rx = next;
                            catch_up = Some(c);
                        }
                        next => return Some((backlog, (next, Some(c)))),
                    }
                }
            }
        }
    });
    first.chain(live)
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use futures::StreamExt as _;
    use pushy_protocol::job::JobStatus;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use super::{StartInfo, VoteStatus};

    const KEEP_ALIVE: Duration = Duration::from_secs(15);
    const WAIT: Duration = Duration::from_secs(5);

    fn events() -> Events {
        Events::new(EventsConfig {
            keep_alive: KEEP_ALIVE,
            org_feed_expiration: Duration::from_secs(60),
            wait_complete_time: WAIT,
        })
    }

    fn org() -> OrgGuid {
        OrgGuid("0123456789abcdef0123456789abcdef".into())
    }

    fn job(n: u8) -> JobId {
        JobId::parse(&format!("{n:032x}")).unwrap()
    }

    fn start() -> JobEvent {
        JobEvent::Start(StartInfo {
            command: "chef-client".into(),
            run_timeout: 3600,
            quorum: 1,
            node_count: 1,
            user: "alice".into(),
            job_user: None,
            dir: None,
            env: None,
            file_specified: false,
            capture: false,
        })
    }

    fn vote(node: &str) -> JobEvent {
        JobEvent::QuorumVote {
            node: node.into(),
            status: VoteStatus::Success,
        }
    }

    fn complete() -> JobEvent {
        JobEvent::JobComplete {
            status: JobStatus::Complete,
        }
    }

    /// A whole job, emitted in one go at one clock reading.
    fn run_job(ev: &Events, j: &JobId) {
        let now = Utc::now();
        ev.begin_job(&org(), j);
        for e in [
            start(),
            vote("a"),
            vote("b"),
            JobEvent::QuorumSucceeded,
            complete(),
        ] {
            ev.emit(&org(), j, &e, now);
        }
    }

    async fn collect(s: impl Stream<Item = Bytes>) -> Vec<Bytes> {
        s.collect().await
    }

    fn output(node: &str, text: &str) -> Output {
        Output {
            node: node.into(),
            stdout: Some(text.into()),
            stderr: None,
            dropped: 0,
        }
    }

    /// Live output (issue 15 §2): live subscribers get it as `run_output` without an id;
    /// a feed opened later gets the log, then each node's bounded tail; none of it is
    /// logged, so `Last-Event-ID` and the catch-up count still name logged events only.
    #[tokio::test]
    async fn live_output_is_relayed_and_only_its_tail_is_kept() {
        let ev = events();
        let j = job(7);
        let now = Utc::now();
        ev.begin_job(&org(), &j);
        ev.emit(&org(), &j, &start(), now);
        let mut live = pin!(ev.job_stream(&j, None).unwrap());
        live.next().await.unwrap();
        ev.output(&j, &output("a", "line 1\n"), now);
        let got = String::from_utf8(live.next().await.unwrap().to_vec()).unwrap();
        assert!(got.starts_with("event: run_output\ndata: {"), "{got}");
        assert!(got.contains(r#""node":"a","stdout":"line 1\n"}"#), "{got}");
        assert!(!got.contains("\nid: "), "{got}");
        // Far more than a tail's worth: only the newest is kept for later readers.
        let chunk = "x".repeat(1000);
        for i in 0..100 {
            ev.output(&j, &output("b", &format!("{i} {chunk}")), now);
        }
        ev.emit(&org(), &j, &vote("a"), now);
        let late = pin!(ev.job_stream(&j, Some("job-1")).unwrap());
        let first = String::from_utf8(late.take(1).collect::<Vec<_>>().await[0].to_vec()).unwrap();
        assert!(
            first.starts_with("event: quorum_vote\nid: job-2\n"),
            "{first}"
        );
        assert!(first.contains("99 x"), "the newest output is in the tail");
        assert!(!first.contains("\"0 x"), "the oldest is not");
        assert!(first.len() < 2 * OUTPUT_TAIL + 1000, "{}", first.len());
        // Once the job is over, output is no longer relayed or kept.
        ev.emit(&org(), &j, &complete(), now);
        ev.output(&j, &output("a", "late\n"), now);
        let after = collect(ev.job_stream(&j, None).unwrap()).await.concat();
        assert!(!String::from_utf8_lossy(&after).contains("run_output"));
    }

    /// Instances of a cluster record the same events (with the owner's timestamps and the
    /// bus's numbers for org copies): their feeds are byte for byte the same, so a client
    /// resumes on any of them. One of them had an earlier org event the other missed.
    #[tokio::test]
    async fn the_same_records_make_the_same_feeds_on_every_instance() {
        let (a, b) = (events(), events());
        let t0 = Utc::now();
        a.record(&org(), &job(9), &Recorded::of(&start()), t0, Some(10_000));
        let recorded = [start(), vote("a"), JobEvent::QuorumSucceeded, complete()];
        for ev in [&a, &b] {
            for (i, e) in recorded.iter().enumerate() {
                let at = t0 + TimeDelta::milliseconds(i as i64);
                ev.record(
                    &org(),
                    &job(1),
                    &Recorded::of(e),
                    at,
                    Some(20_000 + i as u64),
                );
            }
        }
        let feed_a = collect(a.job_stream(&job(1), None).unwrap()).await;
        let feed_b = collect(b.job_stream(&job(1), None).unwrap()).await;
        assert_eq!(feed_a, feed_b);
        let org_a = a.lock().orgs[&org()].log.retained().last().cloned();
        let org_b = b.lock().orgs[&org()].log.retained().last().cloned();
        assert_eq!(org_a, org_b);
        assert_eq!(org_a.unwrap().id, "org-20003");
    }

    fn joined(chunks: &[Bytes]) -> String {
        chunks
            .iter()
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect()
    }

    /// `(name, id, data)` of every event in `text` (keepalives skipped).
    fn parse(text: &str) -> Vec<(String, String, String)> {
        text.split("\n\n")
            .filter(|block| !block.is_empty())
            .map(|block| {
                let lines: Vec<&str> = block.lines().filter(|l| !l.starts_with(':')).collect();
                assert_eq!(lines.len(), 3, "{block:?}");
                let field = |i: usize, key: &str| {
                    lines[i]
                        .strip_prefix(key)
                        .unwrap_or_else(|| panic!("{block:?}"))
                        .to_owned()
                };
                (field(0, "event: "), field(1, "id: "), field(2, "data: "))
            })
            .collect()
    }

    fn timestamp(data: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        v["timestamp"].as_str().unwrap().to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn keepalive_after_silence_and_the_timer_restarts_after_each_write() {
        let ev = events();
        let mut s = pin!(ev.org_stream(&org(), None));
        let t0 = Instant::now();
        assert_eq!(s.next().await.unwrap(), KEEPALIVE);
        assert_eq!(t0.elapsed(), KEEP_ALIVE);
        let emitter = ev.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            emitter.emit(&org(), &job(1), &start(), Utc::now());
        });
        let e = s.next().await.unwrap();
        assert!(e.starts_with(b"event: start\nid: org-1\n"), "{e:?}");
        assert_eq!(t0.elapsed(), Duration::from_secs(25));
        assert_eq!(s.next().await.unwrap(), KEEPALIVE);
        assert_eq!(t0.elapsed(), Duration::from_secs(40));
    }

    #[tokio::test(start_paused = true)]
    async fn job_stream_ends_after_job_complete_and_the_log_goes_after_the_window() {
        let ev = events();
        let j = job(1);
        assert!(ev.job_stream(&j, None).is_none());
        ev.begin_job(&org(), &j);
        assert!(ev.is_live(&j));
        ev.emit(&org(), &j, &start(), Utc::now());
        let s = ev.job_stream(&j, None).unwrap();
        let emitter = ev.clone();
        let jj = j.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(20)).await;
            emitter.emit(&org(), &jj, &vote("a"), Utc::now());
            emitter.emit(&org(), &jj, &complete(), Utc::now());
            // Ignored: the job is finished.
            emitter.emit(&org(), &jj, &vote("b"), Utc::now());
        });
        let chunks = collect(s).await;
        assert_eq!(chunks.len(), 4, "{chunks:?}");
        assert!(chunks[0].starts_with(b"event: start\nid: job-1\n"));
        assert_eq!(chunks[1], KEEPALIVE);
        assert!(chunks[2].starts_with(b"event: quorum_vote\nid: job-2\n"));
        assert!(chunks[3].starts_with(b"event: job_complete\nid: job-3\n"));
        assert!(chunks.iter().all(|c| c.ends_with(b"\n")));
        assert!(chunks[3].ends_with(b"\n\n"));

        // Finished but within the window: the backlog as one chunk, then the end.
        tokio::time::sleep(WAIT - Duration::from_millis(1)).await;
        assert!(ev.is_live(&j));
        let chunks = collect(ev.job_stream(&j, Some("job-1")).unwrap()).await;
        assert_eq!(chunks.len(), 1);
        let events = parse(&joined(&chunks));
        let ids: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(ids, ["job-2", "job-3"]);
        assert!(chunks[0].ends_with(b"\n\n"));
        // Nothing after the last event: an empty body.
        assert!(
            collect(ev.job_stream(&j, Some("job-3")).unwrap())
                .await
                .is_empty()
        );

        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!ev.is_live(&j));
        assert!(ev.job_stream(&j, None).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_job_streams_end() {
        let ev = events();
        let j = job(1);
        ev.begin_job(&org(), &j);
        ev.emit(&org(), &j, &start(), Utc::now());
        let s = ev.job_stream(&j, None).unwrap();
        ev.abandon_job(&j);
        let chunks = collect(s).await;
        assert_eq!(parse(&joined(&chunks)).len(), 1);
        tokio::time::sleep(WAIT).await;
        assert!(!ev.is_live(&j));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_subscribers_get_identical_events() {
        let ev = events();
        let j = job(1);
        ev.begin_job(&org(), &j);
        let a = ev.job_stream(&j, None).unwrap();
        ev.emit(&org(), &j, &start(), Utc::now());
        let b = ev.job_stream(&j, None).unwrap();
        let emitter = ev.clone();
        let jj = j.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                emitter.emit(&org(), &jj, &vote(&format!("n{i}")), Utc::now());
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            emitter.emit(&org(), &jj, &complete(), Utc::now());
        });
        let (a, b) = tokio::join!(collect(a), collect(b));
        let (a, b) = (joined(&a), joined(&b));
        assert_eq!(a, b);
        let events = parse(&a);
        assert_eq!(events.len(), 52);
        // The replay after the fact is the same bytes.
        let replay = joined(&collect(ev.job_stream(&j, None).unwrap()).await);
        assert_eq!(replay, a);
        // Ids unique, timestamps strictly increasing although the clock barely moved.
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.1, format!("job-{}", i + 1));
        }
        let stamps: Vec<String> = events.iter().map(|e| timestamp(&e.2)).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn resuming_yields_exactly_the_later_events_byte_for_byte() {
        let ev = events();
        let j = job(1);
        ev.begin_job(&org(), &j);
        ev.emit(&org(), &j, &start(), Utc::now());
        ev.emit(&org(), &j, &vote("a"), Utc::now());
        ev.emit(&org(), &j, &vote("b"), Utc::now());
        // A client that saw job-1..job-2 resumes while the job still runs.
        let resumed = ev.job_stream(&j, Some("job-2")).unwrap();
        ev.emit(&org(), &j, &JobEvent::QuorumSucceeded, Utc::now());
        ev.emit(&org(), &j, &complete(), Utc::now());
        let full = joined(&collect(ev.job_stream(&j, None).unwrap()).await);
        let new = joined(&collect(resumed).await);
        let ids: Vec<String> = parse(&new).into_iter().map(|e| e.1).collect();
        assert_eq!(ids, ["job-3", "job-4", "job-5"]);
        let cut = full.find("event: quorum_vote\nid: job-3\n").unwrap();
        let old = &full[..cut];
        assert_eq!(format!("{old}{new}"), full);
        // Unknown id: everything again.
        let again = joined(&collect(ev.job_stream(&j, Some("job-99")).unwrap()).await);
        assert_eq!(again, full);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_job_subscriber_catches_up_from_the_log() {
        let ev = events();
        let j = job(1);
        ev.begin_job(&org(), &j);
        let mut s = pin!(ev.job_stream(&j, None).unwrap());
        let now = Utc::now();
        let burst = CHANNEL_CAPACITY + 10;
        ev.emit(&org(), &j, &vote("a"), now);
        // One event read live, then a burst larger than the channel.
        let first = s.next().await.unwrap();
        for _ in 1..burst {
            ev.emit(&org(), &j, &vote("a"), now);
        }
        let caught_up = s.next().await.unwrap();
        // Live again after catching up, then the end.
        ev.emit(&org(), &j, &vote("b"), now);
        ev.emit(&org(), &j, &complete(), now);
        let rest = collect(s).await;
        let mut all = vec![first, caught_up];
        all.extend(rest);
        let ids: Vec<String> = parse(&joined(&all)).into_iter().map(|e| e.1).collect();
        let want: Vec<String> = (1..=burst + 2).map(|i| format!("job-{i}")).collect();
        assert_eq!(ids, want, "every event once, in order");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_org_subscriber_is_ended_not_skipped() {
        let ev = events();
        let s = ev.org_stream(&org(), None);
        // Two org copies (start, job_complete) per job.
        for n in 0..=CHANNEL_CAPACITY / 2 {
            run_job(&ev, &JobId::parse(&format!("{n:032x}")).unwrap());
        }
        // The stream ends with nothing: the client resumes by id.
        assert!(collect(s).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn org_feed_carries_start_and_job_complete_copies() {
        let ev = events();
        let mut live = pin!(ev.org_stream(&org(), None));
        let (j1, j2) = (job(1), job(2));
        run_job(&ev, &j1);
        run_job(&ev, &j2);
        let mut got = String::new();
        for _ in 0..4 {
            got.push_str(std::str::from_utf8(&live.next().await.unwrap()).unwrap());
        }
        let events = parse(&got);
        let summary: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.0.as_str(), e.1.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("start", "org-1"),
                ("job_complete", "org-2"),
                ("start", "org-3"),
                ("job_complete", "org-4"),
            ]
        );
        // Same timestamp and data as the job event, with `job` after `timestamp`.
        let job_events = parse(&joined(&collect(ev.job_stream(&j1, None).unwrap()).await));
        let job_start = &job_events[0].2;
        let expected = job_start.replacen(
            "\",\"command\"",
            &format!("\",\"job\":\"{j1}\",\"command\""),
            1,
        );
        assert_eq!(events[0].2, expected);
        assert!(
            events[3]
                .2
                .ends_with(&format!("\"job\":\"{j2}\",\"status\":\"complete\"}}"))
        );
        let stamps: Vec<String> = events.iter().map(|e| timestamp(&e.2)).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");

        // Resume rules.
        let after = joined(&collect(ev.org_stream(&org(), Some("org-2")).take(1)).await);
        let ids: Vec<String> = parse(&after).into_iter().map(|e| e.1).collect();
        assert_eq!(ids, ["org-3", "org-4"]);
        assert_eq!(after, got[got.find("event: start\nid: org-3").unwrap()..]);
        let unknown = joined(&collect(ev.org_stream(&org(), Some("org-99")).take(1)).await);
        let ids: Vec<String> = parse(&unknown).into_iter().map(|e| e.1).collect();
        assert_eq!(ids, ["start_id", "org-1", "org-2", "org-3", "org-4"]);
        assert!(unknown.ends_with(&got));
        // No Last-Event-ID: nothing but keepalives until something happens.
        let fresh = collect(ev.org_stream(&org(), None).take(1)).await;
        assert_eq!(fresh, [Bytes::from_static(KEEPALIVE)]);
        // Other orgs see nothing.
        let other = OrgGuid("ffffffffffffffffffffffffffffffff".into());
        let fresh = collect(ev.org_stream(&other, Some("org-1")).take(2)).await;
        assert!(fresh[0].starts_with(b"event: start_of_history\nid: start_id\n"));
        assert_eq!(fresh[1], KEEPALIVE);
    }

    #[tokio::test(start_paused = true)]
    async fn streams_end_on_shutdown() {
        let ev = events();
        let token = CancellationToken::new();
        let s = ev
            .org_stream(&org(), None)
            .take_until(token.clone().cancelled_owned());
        let stopper = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(20)).await;
            stopper.cancel();
        });
        assert_eq!(collect(s).await, [Bytes::from_static(KEEPALIVE)]);
    }
}
