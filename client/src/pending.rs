//! A finished job's result, kept until the server says it has it (issue 12).
//!
//! A `succeeded`/`failed` sent just before, during or after a server restart goes out on a
//! connection the new server process cannot read (new CURVE and session keys), and libzmq
//! drops it with the old socket. So the agent keeps its newest result here and sends it
//! again as the *first* message of every new connection, before any heartbeat: a server
//! that restarted adopts a node whose first message names a job it is still part of,
//! while a heartbeat saying "idle" first would mark the node crashed.
//!
//! The result is forgotten when the server acknowledges it (an `ack` carrying its
//! `job_id`), when the server has visibly moved on (a `commit` for another job, or an
//! `abort`, which resets the node and ends whatever job the server had it on), or after
//! [`RESULT_TTL`]. Against a server that never sends such an `ack` (the original), the
//! result is re-sent once on the next new connection, where it names a job that is over;
//! that server answers with an `abort`, which clears it. Nothing is ever re-sent on a timer.
//!
//! Pure: no sockets, no clock; the agent's machine passes `now` (STYLE.md §2.2).

use std::time::{Duration, Instant};

use crate::agent::outgoing::Outgoing;

/// How long a result is kept for redelivery: the server's default `run_timeout` (zmq.md
/// §8); past it the server has timed the job out and no longer takes a result for it.
pub const RESULT_TTL: Duration = Duration::from_secs(3600);

/// At most one result: the newest.
#[derive(Debug, Default)]
pub struct PendingResult {
    slot: Option<Held>,
}

#[derive(Debug)]
struct Held {
    job_id: String,
    message: Outgoing,
    produced: Instant,
}

impl PendingResult {
    /// Keeps `message` (a `succeeded`/`failed` naming a job) in place of any older one.
    /// A message without a job id is not kept: no server could acknowledge it.
    pub fn hold(&mut self, message: Outgoing, now: Instant) {
        self.slot = message.job_id.clone().map(|job_id| Held {
            job_id,
            message,
            produced: now,
        });
    }

    /// The job whose result is kept.
    pub fn job_id(&self) -> Option<&str> {
        self.slot.as_ref().map(|h| h.job_id.as_str())
    }

    /// An `ack` from the server: forgets the result when the `ack` names its job. The
    /// plain `ack` (no `job_id`, sent on a new connection) changes nothing. Returns
    /// whether the result was forgotten.
    pub fn handle_ack(&mut self, job_id: Option<&str>) -> bool {
        self.forget_if(|held| Some(held) == job_id)
    }

    /// A `commit`: the server offers a new job, so it has finished with ours.
    pub fn handle_commit(&mut self, job_id: Option<&str>) {
        self.forget_if(|held| Some(held) != job_id);
    }

    /// An `abort`: the server reset the node; whatever job it had us on is over for it.
    pub fn handle_abort(&mut self) {
        self.slot = None;
    }

    /// The result to send first on a new connection, if one is kept and not expired (an
    /// expired one is forgotten). It gets a fresh `sequence` and `timestamp` when it is
    /// built: the server refuses timestamps more than `max_message_skew` old.
    pub fn poll_resend(&mut self, now: Instant) -> Option<Outgoing> {
        if self
            .slot
            .as_ref()
            .is_some_and(|h| now.saturating_duration_since(h.produced) >= RESULT_TTL)
        {
            self.slot = None;
        }
        self.slot.as_ref().map(|h| h.message.clone())
    }

    fn forget_if(&mut self, matches: impl FnOnce(&str) -> bool) -> bool {
        let hit = self.slot.as_ref().is_some_and(|h| matches(&h.job_id));
        if hit {
            self.slot = None;
        }
        hit
    }
}

#[cfg(test)]
mod tests {
    use pushy_protocol::message::ClientMessageType;

    use super::*;

    fn result(job: &str) -> Outgoing {
        Outgoing {
            kind: ClientMessageType::Succeeded,
            job_id: Some(job.into()),
            job_state: None,
            output: Some(("out\n".into(), String::new(), false)),
            live: None,
        }
    }

    #[test]
    fn a_held_result_is_resent_on_every_new_connection_until_acknowledged() {
        let now = Instant::now();
        let mut p = PendingResult::default();
        assert_eq!(p.poll_resend(now), None);
        p.hold(result("j1"), now);
        assert_eq!(p.job_id(), Some("j1"));
        for later in [1, 60, 600] {
            let m = p
                .poll_resend(now + Duration::from_secs(later))
                .expect("kept");
            assert_eq!(m.job_id.as_deref(), Some("j1"));
            assert_eq!(m.output.map(|o| o.0).as_deref(), Some("out\n"));
        }
        assert!(p.handle_ack(Some("j1")));
        assert_eq!(p.poll_resend(now), None);
    }

    #[test]
    fn a_plain_ack_or_an_ack_for_another_job_keeps_the_result() {
        let now = Instant::now();
        let mut p = PendingResult::default();
        p.hold(result("j1"), now);
        assert!(!p.handle_ack(None));
        assert!(!p.handle_ack(Some("j0")));
        assert_eq!(p.job_id(), Some("j1"));
    }

    #[test]
    fn a_commit_for_another_job_forgets_the_result() {
        let now = Instant::now();
        let mut p = PendingResult::default();
        p.hold(result("j1"), now);
        p.handle_commit(Some("j1"));
        assert_eq!(p.job_id(), Some("j1"), "a repeated commit of the same job");
        p.handle_commit(Some("j2"));
        assert_eq!(p.poll_resend(now), None);
    }

    #[test]
    fn an_abort_forgets_the_result() {
        let now = Instant::now();
        let mut p = PendingResult::default();
        p.hold(result("j1"), now);
        p.handle_abort();
        assert_eq!(p.poll_resend(now), None);
    }

    #[test]
    fn only_the_newest_result_is_kept() {
        let now = Instant::now();
        let mut p = PendingResult::default();
        p.hold(result("j1"), now);
        p.hold(result("j2"), now);
        assert!(!p.handle_ack(Some("j1")));
        assert_eq!(p.job_id(), Some("j2"));
        let mut none = result("j3");
        none.job_id = None;
        p.hold(none, now);
        assert_eq!(p.job_id(), None);
    }

    #[test]
    fn a_result_older_than_the_ttl_is_dropped_not_resent() {
        let now = Instant::now();
        let mut p = PendingResult::default();
        p.hold(result("j1"), now);
        assert!(
            p.poll_resend(now + RESULT_TTL - Duration::from_secs(1))
                .is_some()
        );
        assert_eq!(p.poll_resend(now + RESULT_TTL), None);
        assert_eq!(p.job_id(), None);
    }
}
