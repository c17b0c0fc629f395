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
use pushy_protocol::message::{ClientMessage, ClientMessageType, JobRef};

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
}

/// What the node saw, for assertions.
#[derive(Debug, Default)]
pub struct Seen {
    pub types: Vec<String>,
    pub commits: Vec<serde_json::Value>,
}

pub struct ScriptedNode {
    pub name: String,
    stop: Arc<AtomicBool>,
    /// Stop heartbeating but keep the sockets (a node that vanished).
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

impl ScriptedNode {
    /// Fetches the node's config as client `name` (which must exist in the org) and
    /// connects. Returns once the node is idle (it answered the server's first abort).
    pub async fn start(h: &Harness, name: &str, script: Script) -> ScriptedNode {
        let pair = zmq::CurveKeyPair::new().unwrap();
        let ccpk = zmq::z85_encode(&pair.public_key).unwrap();
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
        let command_addr = config["push_jobs"]["heartbeat"]["command_addr"]
            .as_str()
            .unwrap()
            .to_owned();
        let interval = Duration::from_secs_f64(
            config["push_jobs"]["heartbeat"]["interval"]
                .as_f64()
                .unwrap(),
        );

        let stop = Arc::new(AtomicBool::new(false));
        let silent = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let node = NodeLoop {
            name: name.to_owned(),
            key: session_key,
            script,
            interval,
            incarnation: uuid::Uuid::new_v4().to_string(),
            sequence: 0,
            job: None,
            stop: stop.clone(),
            silent: silent.clone(),
            seen: seen.clone(),
        };
        let thread =
            std::thread::spawn(move || node.run(&command_addr, &server_curve, &pair, ready_tx));
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the node became idle");
        ScriptedNode {
            name: name.to_owned(),
            stop,
            silent,
            seen,
            thread: Some(thread),
        }
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
    job: Option<String>,
    stop: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
}

impl NodeLoop {
    fn message(&mut self, kind: ClientMessageType, job: Option<&str>) -> ClientMessage {
        self.sequence += 1;
        ClientMessage {
            node: self.name.clone(),
            client: self.name.clone(),
            protocol_version: Some("2.0".into()),
            org: ORG.into(),
            kind,
            sequence: self.sequence,
            timestamp: Utc::now(),
            incarnation_id: self.incarnation.clone(),
            job_state: (kind == ClientMessageType::Heartbeat).then(|| {
                if self.job.is_some() {
                    "running"
                } else {
                    "idle"
                }
                .to_owned()
            }),
            job_id: job.map_or(JobRef::None, |j| JobRef::Id(j.to_owned())),
            stdout: None,
            stderr: None,
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
        addr: &str,
        server_curve: &[u8],
        pair: &zmq::CurveKeyPair,
        ready: mpsc::Sender<()>,
    ) {
        let ctx = zmq::Context::new();
        let dealer = ctx.socket(zmq::DEALER).unwrap();
        dealer.set_linger(0).unwrap();
        dealer.set_curve_serverkey(server_curve).unwrap();
        dealer.set_curve_publickey(&pair.public_key).unwrap();
        dealer.set_curve_secretkey(&pair.secret_key).unwrap();
        dealer.connect(addr).unwrap();
        let mut next_beat = Instant::now();
        let mut ready = Some(ready);
        while !self.stop.load(Ordering::Relaxed) {
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
            let body: serde_json::Value = serde_json::from_slice(&frames[1]).unwrap();
            let kind = body["type"].as_str().unwrap_or_default().to_owned();
            self.seen.lock().unwrap().types.push(kind.clone());
            if self.silent.load(Ordering::Relaxed) {
                continue;
            }
            match kind.as_str() {
                "abort" => {
                    let job = self.job.take();
                    let m = self.message(ClientMessageType::Aborted, job.as_deref());
                    self.send(&dealer, &m);
                    if let Some(r) = ready.take() {
                        // Give the server a moment to process `aborted` before the test
                        // relies on the node being idle.
                        std::thread::sleep(Duration::from_millis(100));
                        let _ = r.send(());
                    }
                }
                "commit" if matches!(self.script, Script::IgnoreCommit) => {
                    self.seen.lock().unwrap().commits.push(body.clone());
                }
                "commit" => {
                    self.seen.lock().unwrap().commits.push(body.clone());
                    let job = body["job_id"].as_str().unwrap().to_owned();
                    let (kind, take) = match (&self.script, &self.job) {
                        (_, Some(_)) | (Script::NackCommit, None) => {
                            (ClientMessageType::NackCommit, false)
                        }
                        _ => (ClientMessageType::AckCommit, true),
                    };
                    if take {
                        self.job = Some(job.clone());
                    }
                    let m = self.message(kind, Some(&job));
                    self.send(&dealer, &m);
                }
                "run" => {
                    let job = body["job_id"].as_str().unwrap().to_owned();
                    match self.script.clone() {
                        Script::IgnoreRun => {}
                        Script::Hang => {
                            let m = self.message(ClientMessageType::AckRun, Some(&job));
                            self.send(&dealer, &m);
                        }
                        Script::Succeed { stdout, stderr } => {
                            let m = self.message(ClientMessageType::AckRun, Some(&job));
                            self.send(&dealer, &m);
                            let mut done = self.message(ClientMessageType::Succeeded, Some(&job));
                            done.stdout = Some(stdout);
                            done.stderr = Some(stderr);
                            self.job = None;
                            self.send(&dealer, &done);
                        }
                        Script::Fail => {
                            let m = self.message(ClientMessageType::AckRun, Some(&job));
                            self.send(&dealer, &m);
                            let done = self.message(ClientMessageType::Failed, Some(&job));
                            self.job = None;
                            self.send(&dealer, &done);
                        }
                        Script::NackCommit | Script::IgnoreCommit => {
                            let m = self.message(ClientMessageType::NackRun, Some(&job));
                            self.send(&dealer, &m);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
