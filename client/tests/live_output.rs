//! The agent streams a job's output to a server that asks for it (issue 15 §2). The
//! server side is scripted here (a one-route HTTP config endpoint and a plain, 1.x-style
//! ROUTER), since our server ignores `output` messages until its relay lands: it commits
//! and runs jobs and records every message the real agent sends.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use pushy_client::agent::Agent;
use pushy_client::config::ClientConfig;
use pushy_protocol::frame::{self, SignKey};
use pushy_protocol::message::{
    ClientMessage, ClientMessageType as T, CommitOptions, JobRef, ServerMessage,
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

const WHITELIST: &str = r#"
[whitelist]
"count" = "for i in 1 2 3; do echo $i; sleep 0.4; done"
"seq" = "seq 200000"
"#;

/// The scripted server's side of the command channel.
struct FakeServer {
    _ctx: zmq::Context,
    router: zmq::Socket,
    _publisher: zmq::Socket,
    session_key: [u8; 32],
    /// The agent's DEALER, learnt from its first message.
    routing: Option<Vec<u8>>,
    sequence: u64,
}

impl FakeServer {
    fn bind() -> FakeServer {
        let ctx = zmq::Context::new();
        let router = ctx.socket(zmq::ROUTER).unwrap();
        router.set_linger(0).unwrap();
        router.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
        router.bind("tcp://127.0.0.1:*").unwrap();
        let publisher = ctx.socket(zmq::PUB).unwrap();
        publisher.set_linger(0).unwrap();
        publisher.bind("tcp://127.0.0.1:*").unwrap();
        FakeServer {
            _ctx: ctx,
            router,
            _publisher: publisher,
            session_key: rand::random(),
            routing: None,
            sequence: 0,
        }
    }

    fn endpoint(socket: &zmq::Socket) -> String {
        socket.get_last_endpoint().unwrap().unwrap()
    }

    /// The config document for a node whose public key is `node_key`: no CURVE key (a
    /// plain channel), a heartbeat interval longer than the test, so no reconfigure.
    fn config(&self, node_key: &PKey<Private>) -> String {
        let rsa = node_key.rsa().unwrap();
        let mut sealed = vec![0; rsa.size() as usize];
        let n = rsa
            .public_encrypt(&self.session_key, &mut sealed, Padding::PKCS1)
            .unwrap();
        let server_key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        serde_json::json!({
            "type": "config",
            "host": "fake",
            "push_jobs": {"heartbeat": {
                "out_addr": Self::endpoint(&self._publisher),
                "command_addr": Self::endpoint(&self.router),
                "interval": 300.0,
                "offline_threshold": 3,
                "online_threshold": 2
            }},
            "node": "node1",
            "organization": "acme",
            "public_key": pushy_protocol::keys::public_pem(&server_key),
            "encoded_session_key": {
                "method": "hmac_sha256",
                "key": base64::engine::general_purpose::STANDARD.encode(&sealed[..n])
            },
            "lifetime": 3600,
            "max_message_skew": 300,
            "incarnation_id": "fake-incarnation"
        })
        .to_string()
    }

    /// The next message from the agent, and when it arrived.
    fn recv(&mut self) -> (Instant, ClientMessage) {
        let frames = self.router.recv_multipart(0).expect("a message in time");
        let at = Instant::now();
        let [id, header, body] = <[Vec<u8>; 3]>::try_from(frames).unwrap();
        frame::verify(
            &header,
            &body,
            1 << 20,
            frame::VerifyKey::Hmac(&self.session_key),
        )
        .expect("signed with the session key");
        self.routing = Some(id);
        (at, ClientMessage::parse(&body).unwrap())
    }

    /// The next message that is not a heartbeat.
    fn recv_job_message(&mut self) -> (Instant, ClientMessage) {
        loop {
            let (at, m) = self.recv();
            if m.kind != T::Heartbeat {
                return (at, m);
            }
        }
    }

    fn send(&mut self, message: ServerMessage) {
        self.sequence += 1;
        let body = message.to_body(self.sequence, Utc::now());
        let header = frame::sign(&body, SignKey::Hmac(&self.session_key)).unwrap();
        let id = self.routing.clone().expect("the agent has spoken");
        self.router
            .send_multipart([id, header.into_bytes(), body], 0)
            .unwrap();
    }

    /// Commits and runs `command`; every message from `ack_run` to the result.
    fn job(
        &mut self,
        job_id: &str,
        command: &str,
        capture: bool,
        live_output: bool,
    ) -> Vec<(Instant, ClientMessage)> {
        self.send(ServerMessage::Commit {
            job_id: job_id.into(),
            server: "fake".into(),
            command: command.into(),
            options: CommitOptions {
                capture,
                ..CommitOptions::default()
            },
        });
        assert_eq!(self.recv_job_message().1.kind, T::AckCommit);
        self.send(ServerMessage::Run {
            job_id: job_id.into(),
            live_output,
        });
        let mut seen = Vec::new();
        loop {
            let (at, m) = self.recv_job_message();
            assert_eq!(m.job_id, JobRef::Id(job_id.into()), "{m:?}");
            let done = matches!(m.kind, T::Succeeded | T::Failed);
            seen.push((at, m));
            if done {
                assert_eq!(seen[0].1.kind, T::AckRun);
                return seen;
            }
        }
    }
}

/// Answers every request with `body` (the agent only asks for its config).
fn serve_config(listener: TcpListener, body: String) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut buf = [0; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
}

fn agent_config(dir: &Path, http: &str, key: &PKey<Private>) -> ClientConfig {
    let key_path = dir.join("node1.pem");
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let toml = format!(
        "chef_server_url = \"http://{http}/organizations/acme\"\nnode_name = \"node1\"\nclient_key = \"{}\"\nfile_dir = \"{}\"\nallow_unencrypted = true\n{WHITELIST}",
        key_path.display(),
        dir.join("files").display(),
    );
    ClientConfig::from_toml_str(&toml, &dir.join("client.toml")).unwrap()
}

fn outputs(seen: &[(Instant, ClientMessage)]) -> Vec<&ClientMessage> {
    seen.iter()
        .map(|(_, m)| m)
        .filter(|m| m.kind == T::Output)
        .collect()
}

/// Output messages come between `ack_run` and the result, numbered in order.
fn check_order(seen: &[(Instant, ClientMessage)]) {
    let kinds: Vec<T> = seen.iter().map(|(_, m)| m.kind).collect();
    assert!(
        kinds[1..kinds.len() - 1].iter().all(|k| *k == T::Output),
        "{kinds:?}"
    );
    assert!(seen.windows(2).all(|w| w[0].1.sequence < w[1].1.sequence));
}

fn streamed_stdout(seen: &[(Instant, ClientMessage)]) -> String {
    outputs(seen)
        .iter()
        .filter_map(|m| m.stdout.as_deref())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_streams_output_only_to_a_server_that_asks() {
    let tmp = tempfile::tempdir().unwrap();
    let node_key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut server = FakeServer::bind();
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_addr = http.local_addr().unwrap().to_string();
    serve_config(http, server.config(&node_key));
    let agent = Agent::new(agent_config(tmp.path(), &http_addr, &node_key)).unwrap();
    let stop = CancellationToken::new();
    let (_reconfigure, reconfigure_rx) = tokio::sync::mpsc::channel(1);
    let running = tokio::spawn(agent.run(stop.clone(), reconfigure_rx));

    let script = tokio::task::spawn_blocking(move || {
        // The agent's first heartbeat tells the server where it is.
        assert_eq!(server.recv().1.kind, T::Heartbeat);

        // A slow command: its lines arrive while it runs, then the result as always.
        let seen = server.job("job-count", "count", true, true);
        check_order(&seen);
        let live = outputs(&seen);
        assert!(live.len() >= 2, "{seen:?}");
        assert_eq!(live[0].stdout.as_deref(), Some("1\n"));
        assert!("1\n2\n3\n".starts_with(&streamed_stdout(&seen)));
        assert!(live.iter().all(|m| m.dropped == 0 && m.stderr.is_none()));
        let result = &seen.last().unwrap().1;
        assert_eq!(result.kind, T::Succeeded);
        assert_eq!(result.stdout.as_deref(), Some("1\n2\n3\n"));

        // A fast one: bounded chunks at a bounded rate, the rest counted as dropped.
        let seen = server.job("job-seq", "seq", true, true);
        check_order(&seen);
        let live = outputs(&seen);
        assert!(!live.is_empty());
        for m in &live {
            let text = serde_json::to_string(m.stdout.as_deref().unwrap_or_default()).unwrap();
            assert!(text.len() - 2 <= 8 * 1024, "{}", text.len());
        }
        assert!(live.iter().map(|m| m.dropped).sum::<u64>() > 0);
        // At most one chunk per 250 ms while it ran (arrival times, so one extra).
        let ran = seen.last().unwrap().0 - seen[0].0;
        let allowed = (ran.as_millis() / 250) as usize + 2;
        assert!(live.len() <= allowed, "{} chunks in {ran:?}", live.len());
        let result = &seen.last().unwrap().1;
        assert!(result.stdout.as_deref().unwrap().ends_with("\n200000\n"));
        assert!(result.output_truncated);

        // No live output unless the run asked for it and the commit captures.
        let seen = server.job("job-plain", "count", true, false);
        assert!(outputs(&seen).is_empty(), "{seen:?}");
        assert_eq!(seen.last().unwrap().1.stdout.as_deref(), Some("1\n2\n3\n"));
        let seen = server.job("job-uncaptured", "count", false, true);
        assert!(outputs(&seen).is_empty(), "{seen:?}");
        assert_eq!(seen.last().unwrap().1.stdout, None);
    });
    let outcome = tokio::time::timeout(Duration::from_secs(120), script).await;
    stop.cancel();
    let _ = running.await;
    outcome
        .expect("the script finishes")
        .expect("the script passes");
}
