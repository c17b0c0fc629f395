//! A shard thread: owns a contiguous range of simulated nodes and every socket they use,
//! and drives them with `zmq::poll` (libzmq sockets stay on the thread that made them).
//!
//! Each pass: take fetched configs from the fetcher's queue, fire due node timers, poll
//! every DEALER and SUB (waiting until the next timer, but at least one tick so a spread
//! of heartbeat timers does not turn into a busy loop), then read every readable
//! socket until it is empty. Received messages are checked (`inbound.rs`) before the
//! node (`node.rs`: the agent's machine) sees them; its effects are carried out here.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use chrono::Utc;
use openssl::pkey::{PKey, Public};
use pushy_client::fetch::ServerConfig;
use pushy_protocol::frame::{self, SignKey};
use pushy_protocol::message::{ClientMessageType, Received, ServerMessage};
use rand::SeedableRng as _;
use rand::rngs::SmallRng;
use tokio::sync::mpsc;

use crate::behaviour::Behaviour;
use crate::fetcher::{FetchRequest, FetchResult};
use crate::inbound::{self, Keys, RsaCache, RsaCheck};
use crate::node::{self, Effect, Env, Input, SimNode};
use crate::plan::{self, SubMode};
use crate::stats::{Stats, bump};
use crate::zmq_ctx::{self, Kind, Socket};

/// Longest poll wait (unless the tick is longer): how quickly the stop flag is noticed.
/// Fetched configs ring the doorbell and are taken at once.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// The agent's DEALER send queue (client/src/channel.rs `OUTBOUND_CAPACITY`).
const SEND_HWM: i32 = 64;

/// What a shard is given.
pub struct ShardSetup {
    /// Its number (answers from the fetcher are routed by it).
    pub id: usize,
    /// Global node indexes it simulates.
    pub nodes: Range<u64>,
    /// Node name prefix.
    pub prefix: String,
    /// Organization name.
    pub org: String,
    /// Shared behaviour.
    pub behaviour: Behaviour,
    /// How much of the server heartbeats' RSA signature to check.
    pub rsa_check: RsaCheck,
    /// Shortest poll wait while timers are pending: timers fire up to this late. Every
    /// pass polls every socket, so with thousands of nodes whose heartbeat timers are
    /// spread over the interval, this bounds the passes per second and with them the
    /// generator's CPU; messages from the server still wake the poll at once.
    pub tick: Duration,
    /// One SUB per node or one per shard.
    pub sub_mode: SubMode,
    /// Source addresses to spread connections over (empty: the kernel picks).
    pub sources: Vec<String>,
    /// The process's libzmq context.
    pub ctx: zmq_ctx::Context,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Set to end the run.
    pub stop: Arc<AtomicBool>,
    /// Where fetch requests go.
    pub fetches: mpsc::Sender<FetchRequest>,
    /// Where this shard's fetch answers arrive.
    pub answers: std_mpsc::Receiver<FetchResult>,
    /// Rung by the fetcher after each answer (the receiving end of [`doorbell`]).
    pub bell: Socket,
}

/// A doorbell for shard `id`: (the shard's end, the fetcher's end), inproc PAIRs
/// (zguide ch. 2, "Signaling Between Threads").
///
/// # Errors
/// When libzmq cannot make or wire the sockets.
pub fn doorbell(ctx: &zmq_ctx::Context, id: usize) -> Result<(Socket, Socket), zmq::Error> {
    let addr = format!("inproc://pushy-load-bell-{id}");
    let inner = ctx.socket(Kind::Pair)?;
    inner.bind(&addr)?;
    let outer = ctx.socket(Kind::Pair)?;
    outer.set_linger(0)?;
    outer.connect(&addr)?;
    Ok((inner, outer))
}

/// Why a shard could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libzmq has no CURVE support.
    #[error("making a CURVE key pair (is libzmq built with libsodium?)")]
    Curve(#[source] zmq::Error),
    /// The thread could not be spawned.
    #[error("spawning a shard thread")]
    Thread(#[source] std::io::Error),
}

/// Makes the shard's nodes (each with its own CURVE key pair, as each real agent has)
/// and starts its thread.
///
/// # Errors
/// See [`Error`].
pub fn spawn(setup: ShardSetup) -> Result<std::thread::JoinHandle<()>, Error> {
    let mut slots = Vec::with_capacity((setup.nodes.end - setup.nodes.start) as usize);
    let mut rng = SmallRng::from_os_rng();
    for index in setup.nodes.clone() {
        let curve = zmq::CurveKeyPair::new().map_err(Error::Curve)?;
        let ccpk = zmq::z85_encode(&curve.public_key).expect("32 bytes encode in Z85");
        let name = plan::node_name(&setup.prefix, index);
        let incarnation = uuid::Uuid::new_v4().to_string();
        slots.push(Slot {
            index,
            node: SimNode::new(
                name,
                setup.org.clone(),
                incarnation,
                &setup.behaviour,
                SmallRng::from_rng(&mut rng),
            ),
            curve,
            ccpk,
            config: None,
            conn: None,
        });
    }
    let mut shard = Shard {
        rng,
        cache: RsaCache::default(),
        shared_subs: ByAddr::default(),
        slots,
        setup,
    };
    std::thread::Builder::new()
        .name(format!("pushy-load-{}", shard.setup.id))
        .spawn(move || {
            let span = tracing::info_span!("shard", id = shard.setup.id);
            let _entered = span.enter();
            shard.run();
        })
        .map_err(Error::Thread)
}

struct Slot {
    /// Global index (picks the source address).
    index: u64,
    node: SimNode,
    curve: zmq::CurveKeyPair,
    ccpk: String,
    /// The latest fetched config: session key, server keys, addresses.
    config: Option<ServerConfig>,
    conn: Option<Conn>,
}

struct Conn {
    dealer: Socket,
    /// `None` in [`SubMode::Shared`].
    sub: Option<Socket>,
}

/// One of the shard's SUBs in [`SubMode::Shared`]: one per distinct heartbeat address
/// its nodes' configs name (several when a cluster spreads the nodes over instances),
/// with the keys of the latest config naming it.
struct SharedSub {
    socket: Socket,
    server_key: PKey<Public>,
    max_skew: Duration,
}

/// Values keyed by heartbeat address (the config's `out_addr`), in insertion order so
/// poll items can name them by index. A shard meets only as many addresses as there are
/// instances, so a vector is enough.
struct ByAddr<T> {
    entries: Vec<(String, T)>,
}

impl<T> Default for ByAddr<T> {
    fn default() -> Self {
        ByAddr {
            entries: Vec::new(),
        }
    }
}

impl<T> ByAddr<T> {
    fn get_mut(&mut self, addr: &str) -> Option<&mut T> {
        self.entries
            .iter_mut()
            .find(|(a, _)| a == addr)
            .map(|(_, v)| v)
    }

    /// Adds `value` for `addr` (which must not be there yet); returns its index.
    fn push(&mut self, addr: String, value: T) -> usize {
        debug_assert!(self.entries.iter().all(|(a, _)| *a != addr));
        self.entries.push((addr, value));
        self.entries.len() - 1
    }

    fn get(&self, index: usize) -> Option<(&str, &T)> {
        self.entries.get(index).map(|(a, v)| (a.as_str(), v))
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|(_, v)| v)
    }
}

/// The nodes a heartbeat read from the shared SUB of `addr` goes to: those up whose
/// config names `addr` as the heartbeat address. A node held by another instance must
/// not see this instance's heartbeats (another incarnation would make it reconnect).
fn recipients<'a>(
    addr: &str,
    nodes: impl IntoIterator<Item = (bool, Option<&'a str>)>,
) -> Vec<usize> {
    nodes
        .into_iter()
        .enumerate()
        .filter(|(_, (up, out))| *up && *out == Some(addr))
        .map(|(i, _)| i)
        .collect()
}

/// Which socket a poll item is.
#[derive(Clone, Copy)]
enum Source {
    Dealer(usize),
    Sub(usize),
    SharedSub(usize),
    Bell,
}

struct Shard {
    setup: ShardSetup,
    slots: Vec<Slot>,
    shared_subs: ByAddr<SharedSub>,
    rng: SmallRng,
    cache: RsaCache,
}

impl Shard {
    fn run(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let effects = self.slots[i].node.start();
            self.apply(i, effects, now);
        }
        while !self.setup.stop.load(Ordering::Relaxed) {
            let pass = Instant::now();
            self.take_answers();
            let next = self.fire_timers(Instant::now());
            let wait = next.map_or(self.setup.tick.max(MAX_WAIT), |at| {
                let tick = self.setup.tick;
                at.saturating_duration_since(Instant::now())
                    .clamp(tick, tick.max(MAX_WAIT))
            });
            let before_poll = Instant::now();
            let ready = self.poll(wait);
            let after_poll = Instant::now();
            for source in ready {
                self.receive(source);
            }
            // The pass's own work, the poll call excluded: how far this shard lags.
            self.setup
                .stats
                .pass((before_poll - pass) + after_poll.elapsed());
        }
        tracing::debug!("shard stopping");
    }

    fn take_answers(&mut self) {
        while let Ok(answer) = self.setup.answers.try_recv() {
            let now = Instant::now();
            let i = answer.slot;
            let mut env = Env {
                behaviour: &self.setup.behaviour,
                rng: &mut self.rng,
            };
            let slot = &mut self.slots[i];
            match answer.result {
                Ok(config) => {
                    self.setup.stats.fetched(answer.micros);
                    let params = node::session_params(&config);
                    slot.config = Some(config);
                    let effects = slot.node.handle(now, Input::Configured(params), &mut env);
                    self.apply(i, effects, now);
                }
                Err(e) => {
                    tracing::debug!(node = slot.node.name(), error = %e, "config fetch failed");
                    self.setup.stats.fetch_failed(e.to_string());
                    let effects = slot.node.handle(now, Input::FetchFailed, &mut env);
                    self.apply(i, effects, now);
                }
            }
        }
    }

    /// Runs every due timer; returns the earliest pending one.
    fn fire_timers(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for i in 0..self.slots.len() {
            let Some(mut at) = self.slots[i].node.next_deadline() else {
                continue;
            };
            if at <= now {
                let mut env = Env {
                    behaviour: &self.setup.behaviour,
                    rng: &mut self.rng,
                };
                let effects = self.slots[i].node.handle_timeout(now, &mut env);
                self.apply(i, effects, now);
                match self.slots[i].node.next_deadline() {
                    Some(later) => at = later,
                    None => continue,
                }
            }
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        next
    }

    /// Waits up to `wait` for readable sockets.
    fn poll(&self, wait: Duration) -> Vec<Source> {
        let capacity = self.slots.len() * 2 + self.shared_subs.entries.len() + 1;
        let mut items = Vec::with_capacity(capacity);
        let mut sources = Vec::with_capacity(capacity);
        items.push(self.setup.bell.as_poll_item(zmq::POLLIN));
        sources.push(Source::Bell);
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(conn) = &slot.conn {
                items.push(conn.dealer.as_poll_item(zmq::POLLIN));
                sources.push(Source::Dealer(i));
                if let Some(sub) = &conn.sub {
                    items.push(sub.as_poll_item(zmq::POLLIN));
                    sources.push(Source::Sub(i));
                }
            }
        }
        for (k, shared) in self.shared_subs.iter().enumerate() {
            items.push(shared.socket.as_poll_item(zmq::POLLIN));
            sources.push(Source::SharedSub(k));
        }
        // EINTR (a signal) just ends this pass early.
        if zmq::poll(&mut items, wait.as_millis() as i64).is_err() {
            return Vec::new();
        }
        items
            .iter()
            .zip(sources)
            .filter(|(item, _)| item.is_readable())
            .map(|(_, s)| s)
            .collect()
    }

    fn receive(&mut self, source: Source) {
        match source {
            Source::Dealer(i) => self.drain(i, true),
            Source::Sub(i) => self.drain(i, false),
            Source::SharedSub(k) => self.drain_shared(k),
            // The answers themselves are taken at the start of the next pass.
            Source::Bell => while self.setup.bell.recv_bytes(zmq::DONTWAIT).is_ok() {},
        }
    }

    /// Reads one node's socket until it is empty.
    fn drain(&mut self, i: usize, via_command: bool) {
        loop {
            let slot = &self.slots[i];
            let (Some(conn), Some(config)) = (&slot.conn, &slot.config) else {
                return;
            };
            let socket = match (via_command, &conn.sub) {
                (true, _) => &conn.dealer,
                (false, Some(sub)) => sub,
                (false, None) => return,
            };
            let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) else {
                return;
            };
            let keys = Keys {
                session: Some(&config.session_key),
                server: &config.server_key,
                max_skew: config.max_message_skew,
            };
            let checked = inbound::check(
                &frames,
                &keys,
                self.setup.rsa_check,
                &mut self.cache,
                Utc::now(),
            );
            match checked {
                Ok(msg) => self.deliver(i, msg, via_command),
                Err(why) => {
                    bump(&self.setup.stats.rejected);
                    tracing::debug!(node = slot.node.name(), %why, "dropped a server message");
                }
            }
        }
    }

    /// Reads the shard's SUB number `k`; each heartbeat goes to every node up whose
    /// config names that SUB's address.
    fn drain_shared(&mut self, k: usize) {
        loop {
            let Some((addr, shared)) = self.shared_subs.get(k) else {
                return;
            };
            let Ok(frames) = shared.socket.recv_multipart(zmq::DONTWAIT) else {
                return;
            };
            let keys = Keys {
                session: None,
                server: &shared.server_key,
                max_skew: shared.max_skew,
            };
            match inbound::check(
                &frames,
                &keys,
                self.setup.rsa_check,
                &mut self.cache,
                Utc::now(),
            ) {
                Ok(
                    msg @ (Received::Message(ServerMessage::Heartbeat { .. })
                    | Received::HeartbeatWithoutIncarnation),
                ) => {
                    let to = recipients(
                        addr,
                        self.slots.iter().map(|s| {
                            let out = s.config.as_ref().map(|c| c.out_addr.as_str());
                            (s.node.is_up(), out)
                        }),
                    );
                    for i in to {
                        self.deliver(i, msg.clone(), false);
                    }
                }
                Ok(_) => bump(&self.setup.stats.rejected),
                Err(why) => {
                    bump(&self.setup.stats.rejected);
                    tracing::debug!(%why, "dropped a message on the shared SUB");
                }
            }
        }
    }

    fn deliver(&mut self, i: usize, received: Received, via_command: bool) {
        if matches!(
            received,
            Received::Message(ServerMessage::Heartbeat { .. })
                | Received::HeartbeatWithoutIncarnation
        ) {
            bump(&self.setup.stats.server_heartbeats);
        }
        let now = Instant::now();
        let mut env = Env {
            behaviour: &self.setup.behaviour,
            rng: &mut self.rng,
        };
        let input = Input::Server {
            received,
            via_command,
        };
        let effects = self.slots[i].node.handle(now, input, &mut env);
        self.apply(i, effects, now);
    }

    /// Carries out a node's effects, in order.
    fn apply(&mut self, i: usize, effects: Vec<Effect>, now: Instant) {
        let stats = self.setup.stats.clone();
        for effect in effects {
            match effect {
                Effect::Fetch => self.request_fetch(i),
                Effect::Connect => self.connect(i, now),
                Effect::Disconnect { reason, proven } => {
                    if self.slots[i].conn.take().is_some() {
                        stats.configured.fetch_sub(1, Ordering::Relaxed);
                    }
                    if proven {
                        stats.connected.fetch_sub(1, Ordering::Relaxed);
                    }
                    stats.reconnect(reason);
                    tracing::debug!(
                        node = self.slots[i].node.name(),
                        reason = reason.as_str(),
                        "reconfiguring"
                    );
                }
                Effect::Proven { after } => stats.proven(after),
                Effect::Send(out) => self.send(i, &out, now),
                // Answered by the simulated node itself (node.rs).
                Effect::Vet { .. } | Effect::Start { .. } | Effect::Abandon { .. } => {}
            }
        }
    }

    fn request_fetch(&mut self, i: usize) {
        let slot = &self.slots[i];
        let req = FetchRequest {
            shard: self.setup.id,
            slot: i,
            node: slot.node.name().to_owned(),
            ccpk: slot.ccpk.clone(),
        };
        // Full cannot happen (the queue holds one request per node); closed means the
        // run is ending.
        if self.setup.fetches.try_send(req).is_err() {
            tracing::debug!(node = slot.node.name(), "fetch not queued: fetcher gone");
        }
    }

    fn connect(&mut self, i: usize, now: Instant) {
        let slot = &self.slots[i];
        let Some(config) = &slot.config else {
            return;
        };
        let opened = open(
            &self.setup.ctx,
            config,
            &slot.curve,
            self.setup.sub_mode,
            &plan::endpoint(&config.command_addr, &self.setup.sources, slot.index),
            &plan::endpoint(&config.out_addr, &self.setup.sources, slot.index),
        );
        match opened {
            Ok(conn) => {
                self.slots[i].conn = Some(conn);
                self.setup.stats.configured.fetch_add(1, Ordering::Relaxed);
                if self.setup.sub_mode == SubMode::Shared {
                    self.ensure_shared_sub(i);
                }
            }
            Err(e) => {
                bump(&self.setup.stats.socket_errors);
                tracing::warn!(node = slot.node.name(), error = %e, "opening sockets failed");
                let mut env = Env {
                    behaviour: &self.setup.behaviour,
                    rng: &mut self.rng,
                };
                let effects = self.slots[i].node.handle(now, Input::FetchFailed, &mut env);
                self.apply(i, effects, now);
            }
        }
    }

    /// Makes sure the shard has a SUB on the heartbeat address of slot `i`'s config (one
    /// per distinct address: with several instances the shard's nodes are spread over
    /// several heartbeat ports) and takes that config's keys to check its heartbeats.
    /// SUBs whose address no node uses any more (a dead instance) stay, and cost a
    /// reconnect attempt now and then.
    fn ensure_shared_sub(&mut self, i: usize) {
        let Some(config) = &self.slots[i].config else {
            return;
        };
        if let Some(shared) = self.shared_subs.get_mut(&config.out_addr) {
            shared.server_key = config.server_key.clone();
            shared.max_skew = config.max_message_skew;
            return;
        }
        let addr = plan::endpoint(&config.out_addr, &self.setup.sources, self.slots[i].index);
        match subscriber(&self.setup.ctx, &addr) {
            Ok(socket) => {
                let shared = SharedSub {
                    socket,
                    server_key: config.server_key.clone(),
                    max_skew: config.max_message_skew,
                };
                self.shared_subs.push(config.out_addr.clone(), shared);
            }
            Err(e) => {
                bump(&self.setup.stats.socket_errors);
                tracing::warn!(error = %e, "opening the shared SUB failed");
            }
        }
    }

    fn send(&mut self, i: usize, out: &node::Outgoing, now: Instant) {
        let slot = &mut self.slots[i];
        let (Some(conn), Some(config)) = (&slot.conn, &slot.config) else {
            return;
        };
        let body = slot.node.message(out, Utc::now()).to_body();
        let header = match frame::sign(&body, SignKey::Hmac(&config.session_key)) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "signing failed");
                return;
            }
        };
        let stats = &self.setup.stats;
        if conn
            .dealer
            .send_multipart([header.as_bytes(), &body], zmq::DONTWAIT)
            .is_err()
        {
            bump(&stats.send_failures);
            // Live output is droppable, as in the agent: a refused chunk is no failure.
            if out.kind == ClientMessageType::Output {
                return;
            }
            let mut env = Env {
                behaviour: &self.setup.behaviour,
                rng: &mut self.rng,
            };
            // Only a reconfigure deadline moves; nothing to carry out.
            let effects = slot.node.handle(now, Input::SendFailed, &mut env);
            debug_assert!(effects.is_empty());
            return;
        }
        let counter = match out.kind {
            ClientMessageType::Heartbeat => &stats.heartbeats_sent,
            ClientMessageType::AckCommit => &stats.commits_acked,
            ClientMessageType::NackCommit => &stats.commits_nacked,
            ClientMessageType::AckRun => &stats.runs_acked,
            ClientMessageType::NackRun => &stats.runs_nacked,
            ClientMessageType::Succeeded => &stats.succeeded,
            ClientMessageType::Failed => &stats.failed,
            ClientMessageType::Aborted => &stats.aborts_answered,
            // Live output (issue 15 §2, --output-rate) is not counted.
            ClientMessageType::Output => return,
        };
        bump(counter);
    }
}

/// Opens a node's DEALER (CURVE unless the server is 1.x) and, per node, its SUB, with
/// the agent's options (client/src/channel.rs).
fn open(
    ctx: &zmq_ctx::Context,
    config: &ServerConfig,
    curve: &zmq::CurveKeyPair,
    mode: SubMode,
    command_addr: &str,
    out_addr: &str,
) -> Result<Conn, zmq::Error> {
    let dealer = ctx.socket(Kind::Dealer)?;
    dealer.set_linger(0)?;
    dealer.set_sndhwm(SEND_HWM)?;
    if let Some(server) = &config.curve_server_key {
        dealer.set_curve_serverkey(server)?;
        dealer.set_curve_publickey(&curve.public_key)?;
        dealer.set_curve_secretkey(&curve.secret_key)?;
    }
    dealer.connect(command_addr)?;
    let sub = match mode {
        SubMode::PerNode => Some(subscriber(ctx, out_addr)?),
        SubMode::Shared => None,
    };
    Ok(Conn { dealer, sub })
}

fn subscriber(ctx: &zmq_ctx::Context, addr: &str) -> Result<Socket, zmq::Error> {
    let sub = ctx.socket(Kind::Sub)?;
    sub.set_linger(0)?;
    sub.set_subscribe(b"")?;
    sub.connect(addr)?;
    Ok(sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_heartbeat_address() {
        let mut subs = ByAddr::default();
        assert!(subs.get_mut("tcp://127.0.0.1:20000").is_none());
        assert_eq!(subs.push("tcp://127.0.0.1:20000".to_owned(), 1), 0);
        assert_eq!(subs.push("tcp://127.0.0.1:20100".to_owned(), 2), 1);
        *subs.get_mut("tcp://127.0.0.1:20000").unwrap() += 10;
        assert_eq!(subs.get(0), Some(("tcp://127.0.0.1:20000", &11)));
        assert_eq!(subs.get(1), Some(("tcp://127.0.0.1:20100", &2)));
        assert_eq!(subs.get(2), None);
        assert_eq!(subs.iter().copied().collect::<Vec<_>>(), vec![11, 2]);
    }

    #[test]
    fn a_heartbeat_goes_only_to_the_nodes_of_its_instance() {
        let a = "tcp://127.0.0.1:20000";
        let b = "tcp://127.0.0.1:20100";
        let nodes = [
            (true, Some(a)),
            (true, Some(b)),
            (false, Some(a)),
            (true, None),
            (true, Some(a)),
        ];
        assert_eq!(recipients(a, nodes), vec![0, 4]);
        assert_eq!(recipients(b, nodes), vec![1]);
        assert!(recipients("tcp://127.0.0.1:20200", nodes).is_empty());
    }
}
