//! The per-node state machine (zmq.md §4.1–§4.3): one [`Node`] per (org GUID, node name)
//! that has talked to the server since it started.
//!
//! Pure: no I/O, no clock, no async. The registry task owns every `Node`, feeds it verified
//! and decoded inputs with an explicit `now`, applies the returned [`Effect`]s in order, and
//! calls [`Node::handle_timeout`] at [`Node::next_deadline`]. Framing, signatures and
//! timestamp skew were checked by the ZeroMQ thread; which jobs are live is looked up by the
//! registry and passed in as a [`JobLink`].
//!
//! Fixes: availability is derived from the state (http.md §8.5, zmq.md §4.4, §9.2 item 1),
//! and liveness starts at creation so a silent node is always reaped (zmq.md §3.4, §9.2
//! item 3).

use std::time::{Duration, Instant};

use super::liveness::{self, HeartbeatAverage};
use super::snapshot::Availability;

/// The client process's incarnation id, from the body of the message that created the node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Incarnation(pub String);

/// A ZeroMQ ROUTER identity: opaque bytes naming the node's current connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RoutingId(pub Vec<u8>);

/// Tuning for every node machine (zmq.md §8).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// How often `abort` is re-sent while in rehab (`rehab_timer`, default 1000 ms).
    pub rehab_timer: Duration,
    /// The decaying heartbeat average.
    pub liveness: liveness::Params,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            rehab_timer: Duration::from_millis(1000),
            liveness: liveness::Params::default(),
        }
    }
}

/// The machine's state as others see it (zmq.md §4.2; `post_init` is folded into
/// [`Node::new`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// `abort` sent, waiting for `aborted`: online, unavailable.
    Rehab,
    /// Reset and ready for a job: online, available.
    Idle,
    /// Gone ("shutdown"): the registry drops the machine; offline.
    Stopped,
}

impl State {
    /// `available` exactly when idle (zmq.md §4.4, fixed: derived, never a stale field).
    pub fn availability(self) -> Availability {
        match self {
            State::Idle => Availability::Available,
            State::Rehab | State::Stopped => Availability::Unavailable,
        }
    }
}

/// What the registry found for the job a message names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobLink {
    /// `job_id` is null (or `"null"`).
    None,
    /// `job_id` names a live job.
    Live,
    /// `job_id` is set (or invalid) but names no live job.
    NotLive,
}

/// A verified, decoded input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A `heartbeat` from the node.
    Heartbeat {
        /// The `incarnation_id` it carries.
        incarnation: Incarnation,
        /// Its `job_id`, resolved.
        job: JobLink,
    },
    /// An `aborted` from the node (the registry forwards it to its job, if any).
    Aborted,
    /// `ack_commit`, `nack_commit`, `ack_run`, `nack_run`, `succeeded` or `failed` (the
    /// registry forwards it to a live job).
    JobMessage {
        /// Its `job_id`, resolved.
        job: JobLink,
    },
    /// A job (or the job monitor) sends the node to rehab.
    DoRehab,
    /// A message that verified arrived from another identity; given before that message.
    NewRoutingId(RoutingId),
    /// The periodic liveness scan (every `detect_offline_nodes_interval` heartbeat intervals).
    LivenessScan,
}

/// The commands a node machine sends (HMAC-signed by the driver).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerCommand {
    /// Reset the node.
    Abort,
    /// "Your channel works", on a new routing identity (zmq.md §3.5).
    Ack,
}

/// Why the node went offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A heartbeat carried another client incarnation (zmq.md §4.3).
    IncarnationChanged,
    /// The decaying average fell below `down_threshold` (zmq.md §3.4).
    LivenessDead,
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send a command to this routing identity.
    Send {
        /// The node's connection at the time.
        to: RoutingId,
        /// What to send.
        command: ServerCommand,
    },
    /// The state changed between `Rehab` and `Idle`: republish availability and tell the
    /// watching jobs.
    Transition {
        /// Before.
        from: State,
        /// After.
        to: State,
    },
    /// The node is gone: tell watching jobs it is down and drop the machine. Always last.
    Stop(StopReason),
}

/// The state with its timer: leaving `Rehab` drops the deadline, so a stale timer cannot fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Rehab { resend_at: Instant },
    Idle,
    Stopped,
}

/// One node's connection state.
#[derive(Clone, Debug)]
pub struct Node {
    phase: Phase,
    incarnation: Incarnation,
    routing_id: RoutingId,
    liveness: HeartbeatAverage,
    rehab_timer: Duration,
}

impl Node {
    /// Creates the machine for a node whose first message came from `routing_id` carrying
    /// `incarnation` (zmq.md §4.2 row "(created)"): sends `abort`, arms the rehab timer and
    /// starts the liveness record. The driver then feeds the creating message to
    /// [`Node::handle`].
    pub fn new(
        now: Instant,
        params: Params,
        incarnation: Incarnation,
        routing_id: RoutingId,
    ) -> (Node, Vec<Effect>) {
        let node = Node {
            phase: Phase::Rehab {
                resend_at: now + params.rehab_timer,
            },
            incarnation,
            routing_id,
            liveness: HeartbeatAverage::new(now, params.liveness),
            rehab_timer: params.rehab_timer,
        };
        let effects = vec![node.send(ServerCommand::Abort)];
        (node, effects)
    }

    /// Creates the machine for a node whose first message names a live job it is part
    /// of: after a server restart, the node kept running a resumed job. Resetting it
    /// would throw its work away, so it starts idle and is only sent `ack`, which is
    /// also the "your encrypted channel works" signal (zmq.md §3.5). If the job no
    /// longer wants the node, the job sends it to rehab as usual.
    pub fn adopt(
        now: Instant,
        params: Params,
        incarnation: Incarnation,
        routing_id: RoutingId,
    ) -> (Node, Vec<Effect>) {
        let node = Node {
            phase: Phase::Idle,
            incarnation,
            routing_id,
            liveness: HeartbeatAverage::new(now, params.liveness),
            rehab_timer: params.rehab_timer,
        };
        let effects = vec![node.send(ServerCommand::Ack)];
        (node, effects)
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Rehab { .. } => State::Rehab,
            Phase::Idle => State::Idle,
            Phase::Stopped => State::Stopped,
        }
    }

    /// The client incarnation this machine belongs to.
    pub fn incarnation(&self) -> &Incarnation {
        &self.incarnation
    }

    /// Where commands for this node go now.
    pub fn routing_id(&self) -> &RoutingId {
        &self.routing_id
    }

    /// When [`Node::handle_timeout`] must next be called: the rehab resend, if in rehab.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Rehab { resend_at } => Some(resend_at),
            Phase::Idle | Phase::Stopped => None,
        }
    }

    /// Processes one input (zmq.md §4.2 table and "Processing of each verified message").
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Effect> {
        match input {
            Input::Heartbeat { incarnation, job } => self.handle_heartbeat(now, incarnation, job),
            Input::Aborted => self.handle_aborted(),
            Input::JobMessage { job } => match job {
                JobLink::Live => Vec::new(),
                JobLink::None | JobLink::NotLive => self.do_rehab(now),
            },
            Input::DoRehab => self.do_rehab(now),
            Input::NewRoutingId(id) => self.handle_new_routing_id(id),
            Input::LivenessScan => self.handle_liveness_scan(now),
        }
    }

    /// The rehab timer (zmq.md §4.2 row "rehab / rehab timer fires"): re-send `abort` and
    /// re-arm. Calling it before the deadline does nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Effect> {
        match self.phase {
            Phase::Rehab { resend_at } if now >= resend_at => {
                self.phase = Phase::Rehab {
                    resend_at: now + self.rehab_timer,
                };
                vec![self.send(ServerCommand::Abort)]
            }
            Phase::Rehab { .. } | Phase::Idle | Phase::Stopped => Vec::new(),
        }
    }

    /// A non-live job first sends the node to rehab, then the incarnation check, then the
    /// liveness count, in the original's order.
    fn handle_heartbeat(
        &mut self,
        now: Instant,
        incarnation: Incarnation,
        job: JobLink,
    ) -> Vec<Effect> {
        if self.phase == Phase::Stopped {
            return Vec::new();
        }
        let mut effects = match job {
            JobLink::NotLive => self.do_rehab(now),
            JobLink::None | JobLink::Live => Vec::new(),
        };
        if incarnation != self.incarnation {
            effects.push(self.stop(StopReason::IncarnationChanged));
        } else if !self.liveness.heartbeat(now) {
            effects.push(self.stop(StopReason::LivenessDead));
        }
        effects
    }

    fn handle_aborted(&mut self) -> Vec<Effect> {
        match self.phase {
            Phase::Rehab { .. } => {
                self.phase = Phase::Idle;
                vec![Effect::Transition {
                    from: State::Rehab,
                    to: State::Idle,
                }]
            }
            Phase::Idle | Phase::Stopped => Vec::new(),
        }
    }

    /// `do_rehab`: only acts when idle; in rehab the reset is already under way.
    fn do_rehab(&mut self, now: Instant) -> Vec<Effect> {
        match self.phase {
            Phase::Idle => {
                self.phase = Phase::Rehab {
                    resend_at: now + self.rehab_timer,
                };
                vec![
                    self.send(ServerCommand::Abort),
                    Effect::Transition {
                        from: State::Idle,
                        to: State::Rehab,
                    },
                ]
            }
            Phase::Rehab { .. } | Phase::Stopped => Vec::new(),
        }
    }

    /// zmq.md §4.3: re-map to the new identity and `ack` it; the state is unchanged.
    fn handle_new_routing_id(&mut self, id: RoutingId) -> Vec<Effect> {
        match self.phase {
            Phase::Rehab { .. } | Phase::Idle if id != self.routing_id => {
                self.routing_id = id;
                vec![self.send(ServerCommand::Ack)]
            }
            Phase::Rehab { .. } | Phase::Idle | Phase::Stopped => Vec::new(),
        }
    }

    fn handle_liveness_scan(&mut self, now: Instant) -> Vec<Effect> {
        match self.phase {
            Phase::Rehab { .. } | Phase::Idle if !self.liveness.is_alive(now) => {
                vec![self.stop(StopReason::LivenessDead)]
            }
            Phase::Rehab { .. } | Phase::Idle | Phase::Stopped => Vec::new(),
        }
    }

    fn send(&self, command: ServerCommand) -> Effect {
        Effect::Send {
            to: self.routing_id.clone(),
            command,
        }
    }

    fn stop(&mut self, reason: StopReason) -> Effect {
        self.phase = Phase::Stopped;
        Effect::Stop(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REHAB: Duration = Duration::from_millis(1000);
    const BEAT: Duration = Duration::from_secs(10);

    fn inc(s: &str) -> Incarnation {
        Incarnation(s.to_owned())
    }

    fn rid(b: &[u8]) -> RoutingId {
        RoutingId(b.to_vec())
    }

    fn send(to: &[u8], command: ServerCommand) -> Effect {
        Effect::Send {
            to: rid(to),
            command,
        }
    }

    fn heartbeat(job: JobLink) -> Input {
        Input::Heartbeat {
            incarnation: inc("i1"),
            job,
        }
    }

    fn new_node(t0: Instant) -> Node {
        let (node, effects) = Node::new(t0, Params::default(), inc("i1"), rid(b"a"));
        assert_eq!(effects, vec![send(b"a", ServerCommand::Abort)]);
        node
    }

    fn idle_node(t0: Instant) -> Node {
        let mut node = new_node(t0);
        node.handle(t0, Input::Aborted);
        assert_eq!(node.state(), State::Idle);
        node
    }

    #[test]
    fn defaults_are_spec_values() {
        let p = Params::default();
        assert_eq!(p.rehab_timer, REHAB);
        assert_eq!(p.liveness, liveness::Params::default());
    }

    #[test]
    fn created_sends_abort_and_arms_rehab_timer() {
        let t0 = Instant::now();
        let node = new_node(t0);
        assert_eq!(node.state(), State::Rehab);
        assert_eq!(node.state().availability(), Availability::Unavailable);
        assert_eq!(node.next_deadline(), Some(t0 + REHAB));
        assert_eq!(node.incarnation(), &inc("i1"));
        assert_eq!(node.routing_id(), &rid(b"a"));
    }

    #[test]
    fn creating_heartbeat_is_processed_after_abort() {
        let t0 = Instant::now();
        let mut node = new_node(t0);
        assert_eq!(node.handle(t0, heartbeat(JobLink::None)), vec![]);
        assert_eq!(node.state(), State::Rehab);
    }

    #[test]
    fn rehab_aborted_cancels_timer_and_goes_idle_available() {
        let t0 = Instant::now();
        let mut node = new_node(t0);
        let effects = node.handle(t0, Input::Aborted);
        assert_eq!(
            effects,
            vec![Effect::Transition {
                from: State::Rehab,
                to: State::Idle
            }]
        );
        assert_eq!(node.state(), State::Idle);
        assert_eq!(node.state().availability(), Availability::Available);
        assert_eq!(node.next_deadline(), None);
        assert_eq!(node.handle_timeout(t0 + REHAB), vec![]);
    }

    #[test]
    fn rehab_timer_fires_resends_abort_and_rearms() {
        let t0 = Instant::now();
        let mut node = new_node(t0);
        assert_eq!(node.handle_timeout(t0 + REHAB / 2), vec![], "too early");
        for k in 1..=5 {
            let at = t0 + REHAB * k;
            assert_eq!(node.next_deadline(), Some(at));
            assert_eq!(
                node.handle_timeout(at),
                vec![send(b"a", ServerCommand::Abort)]
            );
            assert_eq!(node.state(), State::Rehab);
        }
        assert_eq!(node.next_deadline(), Some(t0 + REHAB * 6));
    }

    #[test]
    fn rehab_late_timer_rearms_from_now() {
        let t0 = Instant::now();
        let mut node = new_node(t0);
        let late = t0 + REHAB * 3;
        assert_eq!(node.handle_timeout(late).len(), 1);
        assert_eq!(node.next_deadline(), Some(late + REHAB));
    }

    #[test]
    fn rehab_do_rehab_and_anything_else_ignored() {
        let t0 = Instant::now();
        let mut node = new_node(t0);
        assert_eq!(node.handle(t0, Input::DoRehab), vec![]);
        assert_eq!(
            node.handle(
                t0,
                Input::JobMessage {
                    job: JobLink::NotLive
                }
            ),
            vec![]
        );
        assert_eq!(
            node.handle(t0, Input::JobMessage { job: JobLink::Live }),
            vec![]
        );
        assert_eq!(node.handle(t0, heartbeat(JobLink::NotLive)), vec![]);
        assert_eq!(node.state(), State::Rehab);
        assert_eq!(node.next_deadline(), Some(t0 + REHAB), "timer not re-armed");
    }

    #[test]
    fn idle_do_rehab_sends_abort_and_arms_rehab_timer() {
        let t0 = Instant::now();
        let mut node = idle_node(t0);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            node.handle(t1, Input::DoRehab),
            vec![
                send(b"a", ServerCommand::Abort),
                Effect::Transition {
                    from: State::Idle,
                    to: State::Rehab
                }
            ]
        );
        assert_eq!(node.state(), State::Rehab);
        assert_eq!(node.next_deadline(), Some(t1 + REHAB));
    }

    #[test]
    fn idle_aborted_does_nothing() {
        let t0 = Instant::now();
        let mut node = idle_node(t0);
        assert_eq!(node.handle(t0, Input::Aborted), vec![]);
        assert_eq!(node.state(), State::Idle);
        assert_eq!(node.next_deadline(), None);
    }

    #[test]
    fn any_heartbeat_with_changed_incarnation_stops() {
        let t0 = Instant::now();
        for mut node in [new_node(t0), idle_node(t0)] {
            let effects = node.handle(
                t0,
                Input::Heartbeat {
                    incarnation: inc("i2"),
                    job: JobLink::None,
                },
            );
            assert_eq!(effects, vec![Effect::Stop(StopReason::IncarnationChanged)]);
            assert_eq!(node.state(), State::Stopped);
            assert_eq!(node.state().availability(), Availability::Unavailable);
            assert_eq!(node.next_deadline(), None);
        }
    }

    #[test]
    fn any_heartbeat_when_liveness_dead_stops() {
        let t0 = Instant::now();
        for mut node in [new_node(t0), idle_node(t0)] {
            assert_eq!(node.handle(t0, heartbeat(JobLink::None)), vec![]);
            let effects = node.handle(t0 + BEAT * 6, heartbeat(JobLink::None));
            assert_eq!(effects, vec![Effect::Stop(StopReason::LivenessDead)]);
            assert_eq!(node.state(), State::Stopped);
        }
    }

    #[test]
    fn any_liveness_scan_dead_stops() {
        let t0 = Instant::now();
        for mut node in [new_node(t0), idle_node(t0)] {
            assert_eq!(node.handle(t0, heartbeat(JobLink::None)), vec![]);
            assert_eq!(node.handle(t0 + BEAT * 2, Input::LivenessScan), vec![]);
            assert_eq!(
                node.handle(t0 + BEAT * 4, Input::LivenessScan),
                vec![Effect::Stop(StopReason::LivenessDead)]
            );
            assert_eq!(node.state(), State::Stopped);
        }
    }

    #[test]
    fn steady_heartbeats_survive_every_scan() {
        let t0 = Instant::now();
        let mut node = idle_node(t0);
        for k in 0..100 {
            let at = t0 + BEAT * k;
            assert_eq!(node.handle(at, heartbeat(JobLink::None)), vec![]);
            assert_eq!(node.handle(at + BEAT / 2, Input::LivenessScan), vec![]);
        }
        assert_eq!(node.state(), State::Idle);
    }

    #[test]
    fn heartbeat_with_non_live_job_rehabs() {
        let t0 = Instant::now();
        let mut node = idle_node(t0);
        assert_eq!(node.handle(t0, heartbeat(JobLink::Live)), vec![]);
        assert_eq!(node.state(), State::Idle);
        assert_eq!(
            node.handle(t0, heartbeat(JobLink::NotLive)),
            vec![
                send(b"a", ServerCommand::Abort),
                Effect::Transition {
                    from: State::Idle,
                    to: State::Rehab
                }
            ]
        );
        assert_eq!(node.state(), State::Rehab);
    }

    #[test]
    fn heartbeat_with_non_live_job_and_new_incarnation_rehabs_then_stops() {
        let t0 = Instant::now();
        let mut node = idle_node(t0);
        let effects = node.handle(
            t0,
            Input::Heartbeat {
                incarnation: inc("i2"),
                job: JobLink::NotLive,
            },
        );
        assert_eq!(effects.len(), 3);
        assert_eq!(effects[0], send(b"a", ServerCommand::Abort));
        assert_eq!(effects[2], Effect::Stop(StopReason::IncarnationChanged));
    }

    #[test]
    fn job_message_for_non_live_job_rehabs() {
        let t0 = Instant::now();
        for job in [JobLink::NotLive, JobLink::None] {
            let mut node = idle_node(t0);
            assert_eq!(node.handle(t0, Input::JobMessage { job }).len(), 2);
            assert_eq!(node.state(), State::Rehab);
        }
        let mut node = idle_node(t0);
        assert_eq!(
            node.handle(t0, Input::JobMessage { job: JobLink::Live }),
            vec![]
        );
        assert_eq!(node.state(), State::Idle);
    }

    #[test]
    fn reconnect_sends_ack_to_new_id_and_keeps_state() {
        let t0 = Instant::now();
        let mut node = idle_node(t0);
        assert_eq!(
            node.handle(t0, Input::NewRoutingId(rid(b"b"))),
            vec![send(b"b", ServerCommand::Ack)]
        );
        assert_eq!(node.routing_id(), &rid(b"b"));
        assert_eq!(node.state(), State::Idle);
        assert_eq!(
            node.handle(t0, Input::NewRoutingId(rid(b"b"))),
            vec![],
            "same id"
        );
        assert_eq!(
            node.handle(t0, Input::DoRehab)[0],
            send(b"b", ServerCommand::Abort)
        );
    }

    #[test]
    fn reconnect_in_rehab_acks_and_later_aborts_go_to_new_id() {
        let t0 = Instant::now();
        let mut node = new_node(t0);
        assert_eq!(
            node.handle(t0, Input::NewRoutingId(rid(b"b"))),
            vec![send(b"b", ServerCommand::Ack)]
        );
        assert_eq!(node.state(), State::Rehab);
        assert_eq!(
            node.handle_timeout(t0 + REHAB),
            vec![send(b"b", ServerCommand::Abort)]
        );
    }

    #[test]
    fn client_restart_acks_then_first_heartbeat_stops() {
        // zmq.md §4.3: new identity → ack; its heartbeat carries a new incarnation → stop.
        let t0 = Instant::now();
        let mut node = idle_node(t0);
        assert_eq!(node.handle(t0, Input::NewRoutingId(rid(b"c"))).len(), 1);
        let effects = node.handle(
            t0,
            Input::Heartbeat {
                incarnation: inc("i2"),
                job: JobLink::None,
            },
        );
        assert_eq!(effects, vec![Effect::Stop(StopReason::IncarnationChanged)]);
    }

    #[test]
    fn fixes_availability_follows_state_after_returning_to_rehab() {
        // zmq.md §4.4 / §9.2 item 1: the original kept reporting `available` here.
        let t0 = Instant::now();
        let mut node = idle_node(t0);
        assert_eq!(node.state().availability(), Availability::Available);
        node.handle(t0, Input::DoRehab);
        assert_eq!(node.state().availability(), Availability::Unavailable);
        node.handle(t0, Input::Aborted);
        assert_eq!(node.state().availability(), Availability::Available);
    }

    #[test]
    fn fixes_node_never_sending_aborted_stays_unavailable_but_is_reaped_when_silent() {
        // zmq.md §3.4 / §9.2 item 3: no heartbeat ever, so the original never reaped it.
        let t0 = Instant::now();
        let mut node = new_node(t0);
        let mut aborts = 0;
        let mut now = t0;
        while let Some(deadline) = node.next_deadline() {
            if deadline >= t0 + BEAT * 3 {
                break;
            }
            now = deadline;
            aborts += node.handle_timeout(now).len();
            assert_eq!(node.state().availability(), Availability::Unavailable);
        }
        assert_eq!(aborts, 29);
        assert_eq!(node.handle(now, Input::LivenessScan), vec![]);
        assert_eq!(
            node.handle(t0 + BEAT * 3, Input::LivenessScan),
            vec![Effect::Stop(StopReason::LivenessDead)]
        );
        assert_eq!(node.next_deadline(), None);
    }

    #[test]
    fn stopped_node_ignores_everything() {
        let t0 = Instant::now();
        let mut node = new_node(t0);
        node.handle(
            t0,
            Input::Heartbeat {
                incarnation: inc("i2"),
                job: JobLink::None,
            },
        );
        assert_eq!(node.state(), State::Stopped);
        let inputs = [
            heartbeat(JobLink::NotLive),
            Input::Aborted,
            Input::JobMessage {
                job: JobLink::NotLive,
            },
            Input::DoRehab,
            Input::NewRoutingId(rid(b"z")),
            Input::LivenessScan,
        ];
        for input in inputs {
            assert_eq!(node.handle(t0 + BEAT * 10, input), vec![]);
        }
        assert_eq!(node.handle_timeout(t0 + BEAT * 10), vec![]);
        assert_eq!(node.state(), State::Stopped);
    }
}
