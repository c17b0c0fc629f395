//! The ZeroMQ thread over real loopback sockets with CURVE.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use openssl::pkey::PKey;
use pushy_protocol::frame::{self, SignKey, VerifyKey};
use pushy_protocol::job::OrgGuid;
use pushy_protocol::message::{ClientMessage, ClientMessageType, JobRef, ServerMessage};
use tokio::sync::mpsc;

use super::keys::{ClientKeys, CurveIdentity, SessionKeys};
use super::thread::{ChannelConfig, ChannelHandle, Inbound, Outbound, spawn};

struct Rig {
    handle: ChannelHandle,
    inbound: mpsc::Receiver<Inbound>,
    session_keys: SessionKeys,
    client_keys: ClientKeys,
    server_public: String,
    server_key: PKey<openssl::pkey::Private>,
    org: OrgGuid,
}

fn rig(heartbeat: Duration) -> Rig {
    rig_with(heartbeat, true)
}

fn rig_with(heartbeat: Duration, with_curve: bool) -> Rig {
    let curve = CurveIdentity::generate().unwrap();
    let server_public = curve.public_z85.clone();
    let server_key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let (tx, rx) = mpsc::channel(64);
    let session_keys = SessionKeys::default();
    let client_keys = ClientKeys::default();
    let config = ChannelConfig {
        listen: "tcp://127.0.0.1".into(),
        heartbeat_port: 0,
        command_port: 0,
        heartbeat_interval: heartbeat,
        max_body_size: 65_536,
        max_time_skew: TimeDelta::seconds(300),
        curve: with_curve.then_some(curve),
        io_threads: 1,
        server_key: server_key.clone(),
        incarnation: "server-incarnation".into(),
        metrics: Default::default(),
    };
    let handle = spawn(config, session_keys.clone(), client_keys.clone(), tx).unwrap();
    Rig {
        handle,
        inbound: rx,
        session_keys,
        client_keys,
        server_public,
        server_key,
        org: OrgGuid("0123456789abcdef0123456789abcdef".into()),
    }
}

struct Node {
    dealer: zmq::Socket,
    _ctx: zmq::Context,
    key: [u8; 32],
}

impl Rig {
    /// A node that fetched its config (session key made, Curve key announced).
    fn node(&self, name: &str, announce: bool) -> Node {
        let ctx = zmq::Context::new();
        let pair = zmq::CurveKeyPair::new().unwrap();
        if announce {
            self.client_keys
                .allow(pair.public_key, Instant::now(), Duration::from_secs(3600));
        }
        let key = self.session_keys.get_or_create("acme", &self.org, name);
        let dealer = ctx.socket(zmq::DEALER).unwrap();
        dealer.set_linger(0).unwrap();
        dealer
            .set_curve_serverkey(&zmq::z85_decode(&self.server_public).unwrap())
            .unwrap();
        dealer.set_curve_publickey(&pair.public_key).unwrap();
        dealer.set_curve_secretkey(&pair.secret_key).unwrap();
        dealer.connect(&self.handle.command_endpoint).unwrap();
        Node {
            dealer,
            _ctx: ctx,
            key,
        }
    }

    fn next_inbound(&mut self, within: Duration) -> Option<Inbound> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(m) = self.inbound.try_recv() {
                return Some(m);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

fn heartbeat(node: &str, at: chrono::DateTime<Utc>) -> ClientMessage {
    ClientMessage {
        node: node.into(),
        client: node.into(),
        protocol_version: Some("2.0".into()),
        org: "acme".into(),
        kind: ClientMessageType::Heartbeat,
        sequence: 1,
        timestamp: at,
        incarnation_id: "client-incarnation".into(),
        job_state: Some("idle".into()),
        job_id: JobRef::None,
        stdout: None,
        stderr: None,
        output_truncated: false,
        dropped: 0,
    }
}

impl Node {
    fn send(&self, msg: &ClientMessage) {
        let body = msg.to_body();
        let header = frame::sign(&body, SignKey::Hmac(&self.key)).unwrap();
        self.dealer
            .send_multipart([header.as_bytes(), &body], 0)
            .unwrap();
    }

    fn recv(&self, within: Duration) -> Option<Vec<Vec<u8>>> {
        if self
            .dealer
            .poll(zmq::POLLIN, within.as_millis() as i64)
            .unwrap()
            > 0
        {
            Some(self.dealer.recv_multipart(0).unwrap())
        } else {
            None
        }
    }
}

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn a_signed_heartbeat_over_curve_arrives_and_a_reply_reaches_the_node() {
    let mut r = rig(Duration::from_secs(60));
    let node = r.node("web1", true);
    node.send(&heartbeat("web1", Utc::now()));
    let got = r.next_inbound(WAIT).expect("the heartbeat arrives");
    assert_eq!(got.org, r.org);
    assert_eq!(got.message.node, "web1");
    assert_eq!(got.message.kind, ClientMessageType::Heartbeat);

    r.handle.send(Outbound::ToNode {
        routing_id: got.routing_id.clone(),
        org: r.org.clone(),
        node: "web1".into(),
        message: ServerMessage::Abort,
    });
    let frames = node.recv(WAIT).expect("the abort arrives");
    assert_eq!(frames.len(), 2);
    frame::verify(&frames[0], &frames[1], 65_536, VerifyKey::Hmac(&node.key))
        .expect("HMAC-signed with the session key");
    let body: serde_json::Value = serde_json::from_slice(&frames[1]).unwrap();
    assert_eq!(body["type"], "abort");
    assert_eq!(body["sequence"], 1);
}

#[test]
fn an_unannounced_curve_key_is_refused_by_zap() {
    let mut r = rig(Duration::from_secs(60));
    let node = r.node("web1", false);
    node.send(&heartbeat("web1", Utc::now()));
    assert!(r.next_inbound(Duration::from_millis(1500)).is_none());
    assert!(
        r.handle
            .drops
            .zap_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[test]
fn bad_messages_are_counted_and_dropped_and_the_channel_keeps_working() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut r = rig(Duration::from_secs(60));
    let node = r.node("web1", true);
    // One frame only.
    node.dealer.send(&b"garbage"[..], 0).unwrap();
    // Garbage header and body.
    node.dealer
        .send_multipart([&b"\xff\xfe"[..], b"not json"], 0)
        .unwrap();
    // Valid JSON, unknown node.
    let mut stranger = heartbeat("stranger", Utc::now());
    let body = stranger.to_body();
    let header = frame::sign(&body, SignKey::Hmac(&node.key)).unwrap();
    node.dealer
        .send_multipart([header.as_bytes(), &body], 0)
        .unwrap();
    // Bad signature.
    stranger.node = "web1".into();
    let body = stranger.to_body();
    let header = frame::sign(&body, SignKey::Hmac(&[0; 32])).unwrap();
    node.dealer
        .send_multipart([header.as_bytes(), &body], 0)
        .unwrap();
    // Stale timestamp, correctly signed.
    node.send(&heartbeat("web1", Utc::now() - TimeDelta::seconds(301)));
    // Oversized body.
    node.dealer
        .send_multipart([&b"Version:2.0"[..], &vec![b'x'; 70_000]], 0)
        .unwrap();
    // A replay of a good message: the first copy passes, the second is dropped.
    let good = heartbeat("web1", Utc::now());
    node.send(&good);
    node.send(&good);
    assert!(r.next_inbound(WAIT).is_some());
    // Then a good one (a new sequence number, as every real message has) still gets through.
    let mut next = heartbeat("web1", Utc::now());
    next.sequence = 2;
    node.send(&next);
    let got = r.next_inbound(WAIT).expect("the good message arrives");
    assert_eq!(got.message.node, "web1");
    let d = &r.handle.drops;
    assert_eq!(d.runt.load(Relaxed), 1);
    assert_eq!(d.malformed.load(Relaxed), 1);
    assert_eq!(d.unknown_node.load(Relaxed), 1);
    assert_eq!(d.bad_signature.load(Relaxed), 1);
    assert_eq!(d.skew.load(Relaxed), 1);
    assert_eq!(d.too_big.load(Relaxed), 1);
    assert_eq!(d.replay.load(Relaxed), 1);
}

#[test]
fn server_heartbeats_are_rsa_signed_on_pub() {
    let r = rig(Duration::from_millis(100));
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.connect(&r.handle.heartbeat_endpoint).unwrap();
    assert!(
        sub.poll(zmq::POLLIN, 5000).unwrap() > 0,
        "a heartbeat arrives"
    );
    let frames = sub.recv_multipart(0).unwrap();
    let public = PKey::public_key_from_pem(&r.server_key.public_key_to_pem().unwrap()).unwrap();
    frame::verify(&frames[0], &frames[1], 65_536, VerifyKey::Rsa(&public))
        .expect("RSA-signed with the server key");
    let body: serde_json::Value = serde_json::from_slice(&frames[1]).unwrap();
    assert_eq!(body["type"], "heartbeat");
    assert_eq!(body["incarnation_id"], "server-incarnation");
}

#[test]
fn disable_curve_encryption_runs_a_plain_channel() {
    let mut r = rig_with(Duration::from_secs(60), false);
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_linger(0).unwrap();
    dealer.connect(&r.handle.command_endpoint).unwrap();
    let key = r.session_keys.get_or_create("acme", &r.org, "web1");
    let node = Node {
        dealer,
        _ctx: ctx,
        key,
    };
    node.send(&heartbeat("web1", Utc::now()));
    let got = r.next_inbound(WAIT).expect("a plain message arrives");
    assert_eq!(got.message.node, "web1");
}

/// Issue 12 §5: a verified body re-sent under a header with a clause appended, reordered
/// or renamed still verifies, so it must still count as a replay.
#[test]
fn a_replay_under_a_rewritten_header_is_refused() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut r = rig(Duration::from_secs(60));
    let node = r.node("web1", true);
    let body = heartbeat("web1", Utc::now()).to_body();
    let header = frame::sign(&body, SignKey::Hmac(&node.key)).unwrap();
    let parsed = frame::Header::parse(header.as_bytes()).unwrap();
    let signature = parsed.signature.clone();
    let variants = [
        header.clone(),
        format!("{header};Extra:1"),
        format!("Signature:{signature};SigningMethod:hmac_sha256;Version:2.0"),
        format!("Version:2.0;SigningMethod:hmac_sha256;SignedChecksum:{signature}"),
    ];
    for h in &variants {
        node.dealer
            .send_multipart([h.as_bytes(), &body], 0)
            .unwrap();
    }
    assert!(r.next_inbound(WAIT).is_some(), "the first copy passes");
    // A new message afterwards marks the end of what the thread read.
    let mut next = heartbeat("web1", Utc::now());
    next.sequence = 2;
    node.send(&next);
    let got = r.next_inbound(WAIT).expect("the next message arrives");
    assert_eq!(got.message.sequence, 2, "a rewritten replay got through");
    assert_eq!(r.handle.drops.replay.load(Relaxed), 3);
}

/// Issue 12 §5: the async side sending to the thread while the thread has messages for
/// the async side must never wedge both. Nothing reads inbound while thousands of
/// commands are queued (more than any queue bound), then everything is delivered both
/// ways.
#[test]
fn a_flood_both_ways_never_wedges_the_channel() {
    const INBOUND: u64 = 3000;
    const OUTBOUND: usize = 10_000;
    let mut r = rig(Duration::from_secs(60));
    let node = r.node("web1", true);
    node.dealer.set_rcvhwm(0).unwrap();
    node.dealer.set_sndhwm(0).unwrap();
    let key = node.key;
    let org = r.org.clone();
    // The node floods the server; nobody reads the inbound channel yet.
    let flood = std::thread::spawn(move || {
        for seq in 1..=INBOUND {
            let mut m = heartbeat("web1", Utc::now());
            m.sequence = seq;
            let body = m.to_body();
            let header = frame::sign(&body, SignKey::Hmac(&key)).unwrap();
            node.dealer
                .send_multipart([header.as_bytes(), &body], 0)
                .unwrap();
        }
        node
    });
    // Learn the node's routing id from its first message.
    let first = r.next_inbound(WAIT).expect("the first message arrives");
    let routing_id = first.routing_id.clone();
    std::thread::sleep(Duration::from_millis(300));
    // Queue the commands from another thread, as tasks do; each send must return.
    let handle = std::sync::Arc::new(r.handle);
    let sender = {
        let handle = handle.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..OUTBOUND {
                assert!(handle.send(Outbound::ToNode {
                    routing_id: routing_id.clone(),
                    org: org.clone(),
                    node: "web1".into(),
                    message: ServerMessage::Ack,
                }));
            }
            let _ = done_tx.send(());
        });
        done_rx
    };
    sender
        .recv_timeout(Duration::from_secs(30))
        .expect("queuing commands waited on the thread: the channel is wedged");
    // Now drain inbound: every message the node sent arrives.
    let node = flood.join().unwrap();
    let mut received = 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received < INBOUND && Instant::now() < deadline {
        if r.inbound.try_recv().is_ok() {
            received += 1;
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(received, INBOUND);
    let mut delivered = 0;
    while delivered < OUTBOUND && node.recv(Duration::from_secs(10)).is_some() {
        delivered += 1;
    }
    assert_eq!(delivered, OUTBOUND);
}
