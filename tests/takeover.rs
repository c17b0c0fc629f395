//! Issue 12 §1: nobody but a node's own client may speak for the node. A plain org
//! member (or an admin, or another client when `validate_client_node_name` is off) who
//! reads NODE's config gets a document of the same shape, but its session key signs
//! nothing and its `ccpk` is not admitted to the command channel, so it receives none of
//! NODE's commands and cannot report NODE's results.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use common::node::{Script, ScriptedNode};
use common::*;
use openssl::rsa::Padding;
use pushy_protocol::frame::{self, SignKey};
use pushy_protocol::message::{ClientMessage, ClientMessageType, JobRef};
use pushy_server::store::{SqliteStore, Store};

const NODE: &str = "DONKEY";

fn fast(c: &mut pushy_server::config::Config) {
    c.pushy.heartbeat_interval = 100;
    c.pushy.decay_window = 4;
    c.pushy.down_threshold = 0.25;
    c.pushy.voting_timeout = 2;
    c.pushy.wait_complete_time = 1;
}

async fn harness(tweak: impl FnOnce(&mut pushy_server::config::Config)) -> Harness {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let h = Harness::with_store(store, |c| {
        fast(c);
        tweak(c);
    })
    .await;
    h.add_client(NODE);
    h
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What an attacker holds after fetching NODE's config as `who` with its own Curve key.
struct Stolen {
    pair: zmq::CurveKeyPair,
    session_key: Vec<u8>,
    command_addr: String,
    server_curve: Vec<u8>,
    config: serde_json::Value,
}

async fn fetch_as(h: &Harness, who: &str) -> Stolen {
    let pair = zmq::CurveKeyPair::new().unwrap();
    let ccpk = zmq::z85_encode(&pair.public_key).unwrap();
    let ccpk = urlencode(&ccpk);
    let path = format!("/organizations/{ORG}/pushy/config/{NODE}?ccpk={ccpk}&version=2.0");
    let r = h.call("GET", &path, "", who).await;
    assert_eq!(r.status, 200, "{who} may read the config: {}", r.text);
    let config = r.json();
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(config["encoded_session_key"]["key"].as_str().unwrap())
        .unwrap();
    let rsa = h.key(who).rsa().unwrap();
    let mut out = vec![0; rsa.size() as usize];
    let n = rsa
        .private_decrypt(&sealed, &mut out, Padding::PKCS1)
        .unwrap();
    out.truncate(n);
    Stolen {
        session_key: out,
        command_addr: config["push_jobs"]["heartbeat"]["command_addr"]
            .as_str()
            .unwrap()
            .to_owned(),
        server_curve: zmq::z85_decode(config["curve_public_key"].as_str().unwrap()).unwrap(),
        pair,
        config,
    }
}

fn message(kind: ClientMessageType, job: Option<&str>, sequence: u64) -> ClientMessage {
    ClientMessage {
        node: NODE.into(),
        client: NODE.into(),
        protocol_version: Some("2.0".into()),
        org: ORG.into(),
        kind,
        sequence,
        timestamp: Utc::now(),
        incarnation_id: "impostor".into(),
        job_state: (kind == ClientMessageType::Heartbeat).then(|| "idle".to_owned()),
        job_id: job.map_or(JobRef::None, |j| JobRef::Id(j.to_owned())),
        stdout: Some("forged".into()),
        stderr: Some(String::new()),
        output_truncated: false,
        dropped: 0,
    }
}

/// Connects with the stolen material, sends `messages` as NODE for `for_how_long`, and
/// returns every frame set the server sent back.
fn impersonate(
    stolen: &Stolen,
    messages: Vec<ClientMessage>,
    for_how_long: Duration,
) -> Vec<Vec<Vec<u8>>> {
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_linger(0).unwrap();
    dealer.set_curve_serverkey(&stolen.server_curve).unwrap();
    dealer.set_curve_publickey(&stolen.pair.public_key).unwrap();
    dealer.set_curve_secretkey(&stolen.pair.secret_key).unwrap();
    dealer.connect(&stolen.command_addr).unwrap();
    for m in &messages {
        let body = m.to_body();
        let header = frame::sign(
            &body,
            SignKey::Hmac(stolen.session_key.as_slice().try_into().unwrap()),
        )
        .unwrap();
        // DONTWAIT: a refused handshake leaves nothing to send to; that is the point.
        let _ = dealer.send_multipart([header.as_bytes(), &body], zmq::DONTWAIT);
    }
    let mut got = Vec::new();
    let until = Instant::now() + for_how_long;
    while Instant::now() < until {
        if dealer.poll(zmq::POLLIN, 50).unwrap() > 0 {
            got.push(dealer.recv_multipart(0).unwrap());
        }
    }
    got
}

fn shape(v: &serde_json::Value) -> Vec<String> {
    let mut keys = Vec::new();
    fn walk(prefix: &str, v: &serde_json::Value, keys: &mut Vec<String>) {
        if let Some(o) = v.as_object() {
            for (k, v) in o {
                let p = format!("{prefix}/{k}");
                keys.push(p.clone());
                walk(&p, v, keys);
            }
        }
    }
    walk("", v, &mut keys);
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_reading_a_nodes_config_cannot_act_as_the_node() {
    let h = harness(|_| {}).await;
    let node = ScriptedNode::start(
        &h,
        NODE,
        Script::Succeed {
            stdout: "real".into(),
            stderr: String::new(),
        },
    )
    .await;
    let own = fetch_as(&h, NODE).await;
    let stolen = fetch_as(&h, NORMAL_USER).await;

    // Same document shape (pedant reads it), but the key is not the node's.
    assert_eq!(shape(&stolen.config), shape(&own.config));
    assert_eq!(stolen.session_key.len(), 32);
    assert_ne!(stolen.session_key, own.session_key, "no key for a user");
    assert_ne!(
        fetch_as(&h, NORMAL_USER).await.session_key,
        stolen.session_key,
        "a decoy is new every time"
    );
    // The member's Curve key is not on the allow-list; the node's own is.
    assert!(
        !h.state
            .client_keys
            .is_allowed(&stolen.pair.public_key, Instant::now())
    );
    assert!(
        h.state
            .client_keys
            .is_allowed(&own.pair.public_key, Instant::now())
    );

    // The member connects and says it is NODE, idle: nothing comes back, not even the
    // `abort` a new connection of a real node gets.
    let attempt = {
        let hb = message(ClientMessageType::Heartbeat, None, 1);
        let s = Stolen { ..stolen };
        tokio::task::spawn_blocking(move || {
            let got = impersonate(&s, vec![hb], Duration::from_millis(800));
            (s, got)
        })
    };
    // Meanwhile a job runs on NODE: the real node gets it and its result stands.
    let job = h
        .create_job(
            r#"{"command":"chef-client","nodes":["DONKEY"]}"#,
            ADMIN_USER,
        )
        .await;
    let (stolen, got) = attempt.await.unwrap();
    assert!(got.is_empty(), "the impostor heard {} messages", got.len());
    let body = h
        .wait_for_job(&job, "complete", Duration::from_secs(20))
        .await;
    assert_eq!(body["nodes"]["succeeded"], serde_json::json!([NODE]));
    assert!(node.saw("commit") && node.saw("run"));

    // A forged result for that job, sent as NODE, changes nothing.
    let id = job.rsplit('/').next().unwrap().to_owned();
    let forged = vec![
        message(ClientMessageType::Succeeded, Some(&id), 2),
        message(ClientMessageType::Failed, Some(&id), 3),
    ];
    let got = tokio::task::spawn_blocking(move || {
        impersonate(&stolen, forged, Duration::from_millis(500))
    })
    .await
    .unwrap();
    assert!(got.is_empty());
    let out = h
        .call(
            "GET",
            &format!("/organizations/{ORG}/pushy/jobs/{id}/output/{NODE}/stdout"),
            "",
            ADMIN_USER,
        )
        .await;
    assert_ne!(out.text, "forged");
    let body = h.call("GET", &job, "", ADMIN_USER).await.json();
    assert_eq!(body["nodes"]["succeeded"], serde_json::json!([NODE]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_and_other_clients_get_no_node_key_either() {
    // With the name check off, any client of the org may read any node's config (the
    // original's §8.2 item 21); it still gets no key for a node it is not.
    let h = harness(|c| c.pushy.validate_client_node_name = false).await;
    let own = fetch_as(&h, NODE).await;
    for who in [ADMIN_USER, NON_ADMIN_CLIENT, ADMIN_CLIENT] {
        let stolen = fetch_as(&h, who).await;
        assert_ne!(stolen.session_key, own.session_key, "{who}");
        assert!(
            !h.state
                .client_keys
                .is_allowed(&stolen.pair.public_key, Instant::now()),
            "{who}"
        );
    }
    // The node's own client still gets the same key each time within the process.
    assert_eq!(fetch_as(&h, NODE).await.session_key, own.session_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ccpk_outside_z85_is_bad_ccpk_and_never_admitted() {
    let h = harness(|_| {}).await;
    for bad in [
        "123456789012345678901234567890123456789~",
        "#####67890123456789012345678901234567890",
        "12345678901234567890123456789012345678 ,",
    ] {
        let path = format!(
            "/organizations/{ORG}/pushy/config/{NODE}?ccpk={}",
            urlencode(bad)
        );
        let r = h.call("GET", &path, "", NODE).await;
        r.expect(401, serde_json::json!({"error": ["Bad ccpk"]}));
    }
}
