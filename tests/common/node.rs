//! A scripted node: speaks the real protocol (config fetch, CURVE, HMAC, heartbeats) on
//! real loopback sockets, built on the `protocol` crate, and answers commits and runs as
//! its script says. It runs on its own thread; ZeroMQ calls there are blocking.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use openssl::rsa::Padding;
use pushy_protocol::frame::{self, SignKey, VerifyKey};
use pushy_protocol::message::{ClientMessage, ClientMessageType, JobRef, ServerMessage};

use super::{Harness, ORG};

/// What the node does with a job.
#[derive(Clone, Debug)]
pub enum Script {
    /// Commit, run, exit 0 with this output.
    Succeed { stdout: String, stderr: String },
    /// Commit, run, exit 1.
    Fail,
    /// Refuse the commit.
    NackCommit,
    /// Never answer the commit.
    IgnoreCommit,
    /// Commit, then never acknowledge the run.
    IgnoreRun,
    /// Commit, acknowledge the run, never finish (until aborted).
    Hang,
    /// Commit, acknowledge the run, and succeed once [`ScriptedNode::release`] is called.
    Hold,
    /// Commit without answering (the answer is lost), then run and succeed.
    SilentCommit,
    /// Commit, never see the first `run` (it is lost), then run and succeed on the next.
    LoseFirstRun,
}

/// What the node saw, for assertions.
#[derive(Debug, Default)]
pub struct Seen {
    pub types: Vec<String>,
    pub commits: Vec<serde_json::Value>,
}

/// Where and how to connect: what a config fetch yields.
struct Connection {
    addr: String,
    server_curve: Vec<u8>,
    session_key: [u8; 32],
}

pub struct ScriptedNode {
    pub name: String,
    public_key: [u8; 32],
    reconnect: mpsc::Sender<Connection>,
    release: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Stop heartbeating and answering (a node that vanished).
    pub silent: Arc<AtomicBool>,
    pub seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ScriptedNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Fetches the node's config as client `name` and decrypts its session key.
async fn fetch_config(h: &Harness, name: &str, public_key: &[u8; 32]) -> (Connection, Duration) {
    let ccpk = zmq::z85_encode(public_key).unwrap();
    let path = format!(
        "/organizations/{ORG}/pushy/config/{name}?ccpk={}&version=2.0",
        urlencode(&ccpk)
    );
    let r = h.call("GET", &path, "", name).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let config = r.json();
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(config["encoded_session_key"]["key"].as_str().unwrap())
        .unwrap();
    let rsa = h.key(name).rsa().unwrap();
    let mut out = vec![0; rsa.size() as usize];
    let n = rsa
        .private_decrypt(&sealed, &mut out, Padding::PKCS1)
        .unwrap();
    let session_key: [u8; 32] = out[..n].try_into().unwrap();
    let server_curve = zmq::z85_decode(config["curve_public_key"].as_str().unwrap()).unwrap();
    let heartbeat = &config["push_jobs"]["heartbeat"];
    let addr = heartbeat["command_addr"].as_str().unwrap().to_owned();
    let interval = Duration::from_secs_f64(heartbeat["interval"].as_f64().unwrap());
    (
        Connection {
            addr,
            server_curve,
            session_key,
        },
        interval,
    )
}

impl ScriptedNode {
    /// Fetches the node's config as client `name` (which must exist in the org) and
    /// connects. Returns once the node is idle (it answered the server's first abort).
    pub async fn start(h: &Harness, name: &str, script: Script) -> ScriptedNode {
        let pair = zmq::CurveKeyPair::new().unwrap();
        let (conn, interval) = fetch_config(h, name, &pair.public_key).await;
        let stop = Arc::new(AtomicBool::new(false));
        let silent = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (reconnect_tx, reconnect_rx) = mpsc::channel();
        let public_key = pair.public_key;
        let runs_to_lose = u32::from(matches!(script, Script::LoseFirstRun));
        let node = NodeLoop {
            name: name.to_owned(),
            key: conn.session_key,
            script,
            interval,
            incarnation: uuid::Uuid::new_v4().to_string(),
            sequence: 0,
            job: None,
            running: None,
            started: false,
            runs_to_lose,
            stop: stop.clone(),
            silent: silent.clone(),
            release: release.clone(),
            seen: seen.clone(),
        };
        let thread = std::thread::spawn(move || node.run(conn, pair, ready_tx, reconnect_rx));
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the node became idle");
        ScriptedNode {
            name: name.to_owned(),
            public_key,
            reconnect: reconnect_tx,
            release,
            stop,
            silent,
            seen,
            thread: Some(thread),
        }
    }

    /// As a client does after a server restart: fetch the config again (new session key,
    /// new CURVE server key, maybe new ports) and reconnect, keeping the same process
    /// incarnation and whatever job it is running.
    pub async fn reconnect(&self, h: &Harness) {
        let (conn, _) = fetch_config(h, &self.name, &self.public_key).await;
        self.reconnect.send(conn).unwrap();
    }

    /// Lets a [`Script::Hold`] node finish its job.
    pub fn release(&self) {
        self.release.store(true, Ordering::Relaxed);
    }

    pub fn saw(&self, kind: &str) -> bool {
        self.seen.lock().unwrap().types.iter().any(|t| t == kind)
    }
}

struct NodeLoop {
    name: String,
    key: [u8; 32],
    script: Script,
    interval: Duration,
    incarnation: String,
    sequence: u64,
    /// The job committed to (reported in heartbeats).
    job: Option<String>,
    /// A held job waiting for release.
    running: Option<String>,
    /// Whether the committed job's command started (heartbeats say `running`, else
    /// `committed`).
    started: bool,
    /// Runs not seen yet by a [`Script::LoseFirstRun`] node.
    runs_to_lose: u32,
    stop: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
}

fn connect(ctx: &zmq::Context, conn: &Connection, pair: &zmq::CurveKeyPair) -> zmq::Socket {
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_linger(0).unwrap();
    dealer.set_curve_serverkey(&conn.server_curve).unwrap();
    dealer.set_curve_publickey(&pair.public_key).unwrap();
    dealer.set_curve_secretkey(&pair.secret_key).unwrap();
    dealer.connect(&conn.addr).unwrap();
    dealer
}

impl NodeLoop {
    fn message(&mut self, kind: ClientMessageType, job: Option<&str>) -> ClientMessage {
        self.sequence += 1;
        let state = match (&self.job, self.started) {
            (Some(_), true) => "running",
            (Some(_), false) => "committed",
            (None, _) => "idle",
        };
        ClientMessage {
            node: self.name.clone(),
            client: self.name.clone(),
            protocol_version: Some("2.0".into()),
            org: ORG.into(),
            kind,
            sequence: self.sequence,
            timestamp: Utc::now(),
            incarnation_id: self.incarnation.clone(),
            job_state: (kind == ClientMessageType::Heartbeat).then(|| state.to_owned()),
            job_id: job.map_or(JobRef::None, |j| JobRef::Id(j.to_owned())),
            stdout: None,
            stderr: None,
            output_truncated: false,
            dropped: 0,
        }
    }

    fn send(&self, dealer: &zmq::Socket, m: &ClientMessage) {
        let body = m.to_body();
        let header = frame::sign(&body, SignKey::Hmac(&self.key)).unwrap();
        dealer
            .send_multipart([header.as_bytes(), &body], 0)
            .unwrap();
    }

    fn run(
        mut self,
        conn: Connection,
        pair: zmq::CurveKeyPair,
        ready: mpsc::Sender<()>,
        reconnect: mpsc::Receiver<Connection>,
    ) {
        let ctx = zmq::Context::new();
        let mut dealer = connect(&ctx, &conn, &pair);
        let mut next_beat = Instant::now();
        let mut ready = Some(ready);
        while !self.stop.load(Ordering::Relaxed) {
            if let Ok(conn) = reconnect.try_recv() {
                self.key = conn.session_key;
                dealer = connect(&ctx, &conn, &pair);
                next_beat = Instant::now();
            }
            if self.release.load(Ordering::Relaxed)
                && let Some(job) = self.running.take()
            {
                let done = self.message(ClientMessageType::Succeeded, Some(&job));
                self.job = None;
                self.send(&dealer, &done);
            }
            if Instant::now() >= next_beat && !self.silent.load(Ordering::Relaxed) {
                let job = self.job.clone();
                let m = self.message(ClientMessageType::Heartbeat, job.as_deref());
                self.send(&dealer, &m);
                next_beat = Instant::now() + self.interval;
            }
            if dealer.poll(zmq::POLLIN, 20).unwrap() == 0 {
                continue;
            }
            let frames = dealer.recv_multipart(0).unwrap();
            if frames.len() != 2
                || frame::verify(&frames[0], &frames[1], 1 << 20, VerifyKey::Hmac(&self.key))
                    .is_err()
            {
                continue;
            }
            // Decoded as nodes decode it; the raw body is kept for tests that read a
            // commit's fields as sent.
            let message = ServerMessage::parse(&frames[1]).expect("a server message");
            let body: serde_json::Value = serde_json::from_slice(&frames[1]).unwrap();
            self.seen
                .lock()
                .unwrap()
                .types
                .push(message.kind().to_owned());
            if self.silent.load(Ordering::Relaxed) {
                continue;
            }
            match message {
                ServerMessage::Abort => {
                    let job = self.job.take();
                    self.running = None;
                    self.started = false;
                    let m = self.message(ClientMessageType::Aborted, job.as_deref());
                    self.send(&dealer, &m);
                    if let Some(r) = ready.take() {
                        // Give the server a moment to process `aborted` before the test
                        // relies on the node being idle.
                        std::thread::sleep(Duration::from_millis(100));
                        let _ = r.send(());
                    }
                }
                ServerMessage::Commit { .. } => self.commit(&dealer, body),
                ServerMessage::Run { job_id, .. } => self.run_job(&dealer, job_id),
                _ => {}
            }
        }
    }

    fn commit(&mut self, dealer: &zmq::Socket, body: serde_json::Value) {
        self.seen.lock().unwrap().commits.push(body.clone());
        if matches!(self.script, Script::IgnoreCommit) {
            return;
        }
        let job = body["job_id"].as_str().unwrap().to_owned();
        let accept = self.job.is_none() && !matches!(self.script, Script::NackCommit);
        if accept {
            self.job = Some(job.clone());
            self.started = false;
            if matches!(self.script, Script::SilentCommit) {
                return;
            }
        }
        let kind = if accept {
            ClientMessageType::AckCommit
        } else {
            ClientMessageType::NackCommit
        };
        let m = self.message(kind, Some(&job));
        self.send(dealer, &m);
    }

    fn run_job(&mut self, dealer: &zmq::Socket, job: String) {
        if self.runs_to_lose > 0 {
            self.runs_to_lose -= 1;
            return;
        }
        self.started = true;
        let ack = |me: &mut Self| {
            let m = me.message(ClientMessageType::AckRun, Some(&job));
            me.send(dealer, &m);
        };
        match self.script.clone() {
            Script::IgnoreRun => {}
            Script::Hang => ack(self),
            Script::Hold => {
                ack(self);
                self.running = Some(job.clone());
            }
            Script::Succeed { .. } | Script::SilentCommit | Script::LoseFirstRun => {
                let (stdout, stderr) = match self.script.clone() {
                    Script::Succeed { stdout, stderr } => (stdout, stderr),
                    _ => ("done".to_owned(), String::new()),
                };
                ack(self);
                let mut done = self.message(ClientMessageType::Succeeded, Some(&job));
                done.stdout = Some(stdout);
                done.stderr = Some(stderr);
                self.job = None;
                self.send(dealer, &done);
            }
            Script::Fail => {
                ack(self);
                let done = self.message(ClientMessageType::Failed, Some(&job));
                self.job = None;
                self.send(dealer, &done);
            }
            Script::NackCommit | Script::IgnoreCommit => {
                let m = self.message(ClientMessageType::NackRun, Some(&job));
                self.send(dealer, &m);
            }
        }
    }
}
