//! The pure event logs behind the SSE feeds (http.md §3.2–§3.5): numbering, timestamps,
//! the org copies, org retention and the `Last-Event-ID` replay rules. No clock, no I/O:
//! callers pass `now`.
//!
//! Every stored event is pre-rendered as its exact wire text, so a replay is
//! byte-identical to the original (§3.4).

use std::collections::VecDeque;

use axum::body::Bytes;
use chrono::{DateTime, SubsecRound as _, TimeDelta, Utc};
use pushy_protocol::job::JobId;
use serde_json::{Map, Value};

/// `2014-07-10 05:17:44.995958Z`: the SSE data timestamp (§3.2).
pub fn sse_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6fZ").to_string()
}

/// One event's wire text, always ending with a blank line (§8.6 item 42, fixed): the data
/// object starts with `timestamp`, then `job` when given (org copies), then `fields`.
pub fn render(
    name: &str,
    id: &str,
    at: DateTime<Utc>,
    job: Option<&JobId>,
    fields: &Map<String, Value>,
) -> String {
    let mut data = Map::new();
    data.insert("timestamp".into(), sse_timestamp(at).into());
    if let Some(job) = job {
        data.insert("job".into(), job.as_str().into());
    }
    data.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
    format!("event: {name}\nid: {id}\ndata: {}\n\n", Value::Object(data))
}

/// A live output event's wire text (issue 15 §2): `run_output`, no `id:` line, data
/// `timestamp`, `node`, then `stdout` / `stderr` / `dropped` when present.
pub fn render_output(output: &super::event::Output, at: DateTime<Utc>) -> String {
    let mut data = Map::new();
    data.insert(
        "timestamp".into(),
        sse_timestamp(at.trunc_subsecs(6)).into(),
    );
    data.insert("node".into(), output.node.clone().into());
    if let Some(out) = &output.stdout {
        data.insert("stdout".into(), out.clone().into());
    }
    if let Some(err) = &output.stderr {
        data.insert("stderr".into(), err.clone().into());
    }
    if output.dropped > 0 {
        data.insert("dropped".into(), output.dropped.into());
    }
    format!("event: run_output\ndata: {}\n\n", Value::Object(data))
}

/// One logged event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// `job-N`, `org-N` or `start_id`.
    pub id: String,
    /// Its timestamp, whole microseconds.
    pub at: DateTime<Utc>,
    /// The exact wire text, `event: …\nid: …\ndata: …\n\n`.
    pub text: Bytes,
}

/// Concatenates events into one chunk (the backlog is written as one, §3.2).
pub fn concat(events: &[Logged]) -> Bytes {
    match events {
        [] => Bytes::new(),
        [one] => one.text.clone(),
        many => {
            let mut out = Vec::with_capacity(many.iter().map(|e| e.text.len()).sum());
            for e in many {
                out.extend_from_slice(&e.text);
            }
            out.into()
        }
    }
}

/// The earliest timestamp allowed after `last`: `now` cut to microseconds (the wire
/// resolution), bumped to `last + 1µs` when that is not later (§8.6 item 46).
fn next_at(last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    let now = now.trunc_subsecs(6);
    match last {
        Some(last) if now <= last => last + TimeDelta::microseconds(1),
        _ => now,
    }
}

/// One job's events (`job-1`, `job-2`, …), with strictly increasing timestamps.
#[derive(Debug, Default)]
pub struct JobLog {
    events: Vec<Logged>,
}

impl JobLog {
    /// An empty log.
    pub fn new() -> JobLog {
        JobLog::default()
    }

    /// The timestamp an event created at `now` would get.
    pub fn next_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        next_at(self.events.last().map(|e| e.at), now)
    }

    /// Appends an event created at `now` (bumped past the previous event if needed).
    pub fn push(&mut self, name: &str, fields: &Map<String, Value>, now: DateTime<Utc>) -> &Logged {
        let at = self.next_at(now);
        let id = format!("job-{}", self.events.len() + 1);
        let text = render(name, &id, at, None, fields);
        self.events.push(Logged {
            id,
            at,
            text: text.into(),
        });
        self.events.last().expect("just pushed")
    }

    /// The events after the one whose id is `last_event_id`; all of them when the header
    /// is absent or names no event of this job (§3.4, §8.6 item 44).
    pub fn after(&self, last_event_id: Option<&str>) -> &[Logged] {
        &self.events[self.start_after(last_event_id)..]
    }

    /// The index of the first event [`JobLog::after`] returns.
    pub fn start_after(&self, last_event_id: Option<&str>) -> usize {
        last_event_id
            .and_then(|id| self.events.iter().position(|e| e.id == id))
            .map_or(0, |i| i + 1)
    }

    /// Every event, oldest first.
    pub fn events(&self) -> &[Logged] {
        &self.events
    }
}

/// What an org feed starts with (§3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgBacklog {
    /// `start_of_history`, when the client resumed from an id not retained.
    pub start_of_history: Option<Logged>,
    /// Retained events to replay.
    pub events: Vec<Logged>,
}

impl OrgBacklog {
    /// The backlog as one chunk (empty when there is nothing to replay).
    pub fn to_bytes(&self) -> Bytes {
        match &self.start_of_history {
            None => concat(&self.events),
            Some(s) => {
                let mut all = Vec::with_capacity(self.events.len() + 1);
                all.push(s.clone());
                all.extend(self.events.iter().cloned());
                concat(&all)
            }
        }
    }
}

/// One organization's recent `start` and `job_complete` copies (`org-1`, `org-2`, …),
/// retained for `expiration`.
#[derive(Debug)]
pub struct OrgLog {
    events: VecDeque<Logged>,
    issued: u64,
    last_at: Option<DateTime<Utc>>,
    expiration: TimeDelta,
}

impl OrgLog {
    /// An empty log keeping events for `expiration` (`org_feed_expiration`).
    pub fn new(expiration: TimeDelta) -> OrgLog {
        OrgLog {
            events: VecDeque::new(),
            issued: 0,
            last_at: None,
            expiration,
        }
    }

    /// The earliest timestamp the next copy may have: a job event that will be copied
    /// here must be created no earlier, so both streams stay strictly increasing while
    /// the copy keeps the job event's timestamp.
    pub fn next_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        next_at(self.last_at, now)
    }

    /// The history horizon at `now`, cut to microseconds: events at or before it are gone.
    fn horizon(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        (now - self.expiration).trunc_subsecs(6)
    }

    /// Drops events older than the horizon (§3.5: on every add and read).
    pub fn expire(&mut self, now: DateTime<Utc>) {
        let horizon = self.horizon(now);
        while self.events.front().is_some_and(|e| e.at <= horizon) {
            self.events.pop_front();
        }
    }

    /// Copies job `job`'s event (name, timestamp `at`, fields) as the next `org-N`, with
    /// `job` right after `timestamp`. `at` should come from [`OrgLog::next_at`]; an
    /// earlier one is bumped to keep the stream strictly increasing. `number` is the N of
    /// `org-N` when the caller numbers copies (a cluster's shared sequence), otherwise
    /// the next of this log's own.
    pub fn push(
        &mut self,
        job: &JobId,
        name: &str,
        fields: &Map<String, Value>,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
        number: Option<u64>,
    ) -> &Logged {
        self.expire(now);
        let at = match self.last_at {
            Some(last) if at <= last => last + TimeDelta::microseconds(1),
            _ => at,
        };
        self.issued = number.unwrap_or(self.issued + 1);
        let id = format!("org-{}", self.issued);
        let text = render(name, &id, at, Some(job), fields);
        self.last_at = Some(at);
        self.events.push_back(Logged {
            id,
            at,
            text: text.into(),
        });
        self.events.back().expect("just pushed")
    }

    /// The backlog for a feed requested at `now` (§3.5): none without `Last-Event-ID`;
    /// the retained events after a retained id; otherwise `start_of_history` (timestamp
    /// now − expiration) and every retained event.
    pub fn backlog(&mut self, last_event_id: Option<&str>, now: DateTime<Utc>) -> OrgBacklog {
        self.expire(now);
        let Some(last) = last_event_id else {
            return OrgBacklog {
                start_of_history: None,
                events: Vec::new(),
            };
        };
        match self.events.iter().position(|e| e.id == last) {
            Some(i) => OrgBacklog {
                start_of_history: None,
                events: self.events.iter().skip(i + 1).cloned().collect(),
            },
            None => {
                let at = self.horizon(now);
                let id = "start_id";
                let text = render("start_of_history", id, at, None, &Map::new());
                OrgBacklog {
                    start_of_history: Some(Logged {
                        id: id.into(),
                        at,
                        text: text.into(),
                    }),
                    events: self.events.iter().cloned().collect(),
                }
            }
        }
    }

    /// The retained events, oldest first.
    pub fn retained(&self) -> impl Iterator<Item = &Logged> {
        self.events.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn job() -> JobId {
        JobId::parse("aaaaaaaaaaaa25fd67fa8715fd547d3d").unwrap()
    }

    fn fields(pairs: &[(&str, Value)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn text(e: &Logged) -> &str {
        std::str::from_utf8(&e.text).unwrap()
    }

    fn ids(events: &[Logged]) -> Vec<&str> {
        events.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn timestamp_has_a_space_and_six_fraction_digits() {
        let at = t("2014-07-10T05:17:44.995958Z");
        assert_eq!(sse_timestamp(at), "2014-07-10 05:17:44.995958Z");
        assert_eq!(
            sse_timestamp(t("2014-07-10T05:17:44Z")),
            "2014-07-10 05:17:44.000000Z"
        );
        assert_eq!(
            render("start_of_history", "start_id", at, None, &Map::new()),
            "event: start_of_history\nid: start_id\ndata: {\"timestamp\":\"2014-07-10 05:17:44.995958Z\"}\n\n"
        );
    }

    #[test]
    fn job_events_are_numbered_from_one_and_rendered_exactly() {
        let mut log = JobLog::new();
        let now = t("2014-07-10T05:17:44.995958Z");
        let e = log.push(
            "quorum_vote",
            &fields(&[("node", "DONKEY".into()), ("status", "success".into())]),
            now,
        );
        assert_eq!(
            text(e),
            "event: quorum_vote\nid: job-1\ndata: {\"timestamp\":\"2014-07-10 05:17:44.995958Z\",\"node\":\"DONKEY\",\"status\":\"success\"}\n\n"
        );
        let e = log.push("quorum_succeeded", &Map::new(), t("2014-07-10T05:17:45Z"));
        assert_eq!(e.id, "job-2");
        assert_eq!(ids(log.events()), ["job-1", "job-2"]);
    }

    #[test]
    fn job_timestamps_strictly_increase_even_when_the_clock_repeats_or_goes_back() {
        let mut log = JobLog::new();
        let now = t("2014-07-10T05:17:44.995958Z");
        log.push("start", &Map::new(), now);
        // Same instant, a sub-microsecond later one (same on the wire), and an earlier one.
        log.push("quorum_vote", &Map::new(), now);
        log.push(
            "quorum_vote",
            &Map::new(),
            now + TimeDelta::nanoseconds(500),
        );
        log.push("quorum_vote", &Map::new(), now - TimeDelta::seconds(1));
        let stamps: Vec<String> = log.events().iter().map(|e| sse_timestamp(e.at)).collect();
        assert_eq!(
            stamps,
            [
                "2014-07-10 05:17:44.995958Z",
                "2014-07-10 05:17:44.995959Z",
                "2014-07-10 05:17:44.995960Z",
                "2014-07-10 05:17:44.995961Z",
            ]
        );
        // A later clock reading is used as is (cut to microseconds).
        let e = log.push("rehab", &Map::new(), t("2014-07-10T05:17:46.123456789Z"));
        assert_eq!(sse_timestamp(e.at), "2014-07-10 05:17:46.123456Z");
        assert_eq!(e.at, t("2014-07-10T05:17:46.123456Z"));
    }

    #[test]
    fn job_replay_follows_last_event_id() {
        let mut log = JobLog::new();
        let now = t("2014-07-10T05:17:44Z");
        for name in ["start", "quorum_vote", "quorum_succeeded"] {
            log.push(name, &Map::new(), now);
        }
        assert_eq!(ids(log.after(None)), ["job-1", "job-2", "job-3"]);
        assert_eq!(ids(log.after(Some("job-1"))), ["job-2", "job-3"]);
        assert_eq!(ids(log.after(Some("job-3"))), Vec::<&str>::new());
        // Unknown ids replay everything (§8.6 item 44).
        assert_eq!(ids(log.after(Some("job-9"))), ["job-1", "job-2", "job-3"]);
        assert_eq!(ids(log.after(Some("org-1"))), ["job-1", "job-2", "job-3"]);
        assert_eq!(ids(log.after(Some(""))), ["job-1", "job-2", "job-3"]);
        assert_eq!(ids(JobLog::new().after(Some("job-1"))), Vec::<&str>::new());
    }

    #[test]
    fn concat_joins_wire_texts() {
        let mut log = JobLog::new();
        let now = t("2014-07-10T05:17:44Z");
        log.push("start", &Map::new(), now);
        log.push("quorum_succeeded", &Map::new(), now);
        let all = concat(log.events());
        assert_eq!(
            &all[..],
            [log.events()[0].text.clone(), log.events()[1].text.clone()]
                .concat()
                .as_slice()
        );
        assert!(concat(&[]).is_empty());
    }

    #[test]
    fn org_copies_insert_job_after_timestamp_and_keep_the_rest() {
        let mut jobs = JobLog::new();
        let mut org = OrgLog::new(TimeDelta::seconds(60));
        let now = t("2014-07-10T05:17:49.120034Z");
        let f = fields(&[("status", "complete".into())]);
        let at = jobs.push("job_complete", &f, org.next_at(now)).at;
        let e = org.push(&job(), "job_complete", &f, at, now, None);
        assert_eq!(
            text(e),
            "event: job_complete\nid: org-1\ndata: {\"timestamp\":\"2014-07-10 05:17:49.120034Z\",\"job\":\"aaaaaaaaaaaa25fd67fa8715fd547d3d\",\"status\":\"complete\"}\n\n"
        );
        assert_eq!(e.at, jobs.events()[0].at);
        let e = org.push(&job(), "start", &Map::new(), org.next_at(now), now, None);
        assert_eq!(e.id, "org-2");
    }

    #[test]
    fn org_timestamps_strictly_increase_across_jobs() {
        let mut org = OrgLog::new(TimeDelta::seconds(60));
        let now = t("2014-07-10T05:17:49Z");
        let (mut a, mut b) = (JobLog::new(), JobLog::new());
        let at1 = a.push("start", &Map::new(), org.next_at(now)).at;
        org.push(&job(), "start", &Map::new(), at1, now, None);
        let at2 = b.push("start", &Map::new(), org.next_at(now)).at;
        org.push(&job(), "start", &Map::new(), at2, now, None);
        assert!(at2 > at1);
        // A stale `at` is bumped rather than repeated.
        let e = org.push(&job(), "start", &Map::new(), at1, now, None);
        assert!(e.at > at2);
        let stamps: Vec<_> = org.retained().map(|e| e.at).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn org_backlog_without_last_event_id_is_empty() {
        let mut org = OrgLog::new(TimeDelta::seconds(60));
        let now = t("2014-07-10T05:17:49Z");
        org.push(&job(), "start", &Map::new(), now, now, None);
        let b = org.backlog(None, now);
        assert_eq!(b.start_of_history, None);
        assert!(b.events.is_empty());
        assert!(b.to_bytes().is_empty());
    }

    #[test]
    fn org_backlog_after_a_known_id() {
        let mut org = OrgLog::new(TimeDelta::seconds(60));
        let now = t("2014-07-10T05:17:49Z");
        for _ in 0..3 {
            let at = org.next_at(now);
            org.push(&job(), "start", &Map::new(), at, now, None);
        }
        let b = org.backlog(Some("org-1"), now);
        assert_eq!(b.start_of_history, None);
        assert_eq!(ids(&b.events), ["org-2", "org-3"]);
        let b = org.backlog(Some("org-3"), now);
        assert_eq!(b.start_of_history, None);
        assert!(b.events.is_empty());
    }

    #[test]
    fn org_backlog_after_an_unknown_id_starts_with_start_of_history() {
        let mut org = OrgLog::new(TimeDelta::seconds(60));
        let now = t("2014-07-10T05:17:49.5Z");
        // Empty list: just start_of_history at now − expiration.
        let b = org.backlog(Some("org-1"), now);
        assert_eq!(
            b.to_bytes(),
            "event: start_of_history\nid: start_id\ndata: {\"timestamp\":\"2014-07-10 05:16:49.500000Z\"}\n\n"
        );
        assert!(b.events.is_empty());
        for _ in 0..2 {
            let at = org.next_at(now);
            org.push(&job(), "start", &Map::new(), at, now, None);
        }
        for unknown in ["org-7", "job-1", "start_id"] {
            let b = org.backlog(Some(unknown), now);
            let soh = b.start_of_history.clone().unwrap();
            assert_eq!(soh.id, "start_id");
            assert_eq!(soh.at, t("2014-07-10T05:16:49.5Z"));
            assert_eq!(ids(&b.events), ["org-1", "org-2"]);
            let expected = [soh.text.clone(), concat(&b.events)].concat();
            assert_eq!(&b.to_bytes()[..], expected.as_slice());
        }
    }

    #[test]
    fn org_events_expire_on_read_and_on_add() {
        let mut org = OrgLog::new(TimeDelta::seconds(60));
        let t0 = t("2014-07-10T05:00:00Z");
        org.push(&job(), "start", &Map::new(), t0, t0, None);
        let t1 = t0 + TimeDelta::seconds(30);
        org.push(&job(), "job_complete", &Map::new(), t1, t1, None);
        // Exactly at the horizon the first event is gone (start_of_history keeps a
        // strictly earlier timestamp than every retained event).
        let b = org.backlog(Some("org-1"), t0 + TimeDelta::seconds(60));
        assert!(b.start_of_history.is_some());
        assert_eq!(ids(&b.events), ["org-2"]);
        // A known id that expired counts as unknown.
        let b = org.backlog(Some("org-1"), t0 + TimeDelta::seconds(61));
        assert!(b.start_of_history.unwrap().at < b.events[0].at);
        // Adding expires too, and ids keep counting.
        let t2 = t0 + TimeDelta::seconds(200);
        let e = org.push(&job(), "start", &Map::new(), t2, t2, None);
        assert_eq!(e.id, "org-3");
        assert_eq!(org.retained().count(), 1);
        // Reading alone empties an old list.
        let b = org.backlog(None, t2 + TimeDelta::seconds(61));
        assert!(b.events.is_empty());
        assert_eq!(org.retained().count(), 0);
    }
}
