//! The agent's ZeroMQ thread (zmq.md §1.2): a SUB socket for server heartbeats and a
//! DEALER for the command channel (CURVE unless the server is 1.x), owned by one OS
//! thread. Received messages are verified (HMAC with the session key, or the server's
//! RSA signature), decoded (`pushy_protocol::message::ServerBody`) and timestamp-checked
//! before they reach the async side; sends are signed and never block.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;

use chrono::Utc;
use openssl::pkey::{PKey, Public};
use pushy_protocol::frame::{self, Header, SignKey, SigningMethod, VerifyKey};
use pushy_protocol::message::{Received, ServerBody};
use tokio::sync::mpsc;

/// A verified message from the server.
#[derive(Clone, Debug)]
pub struct FromServer {
    /// What it says.
    pub received: Received,
    /// It came on the DEALER (proves the command channel works, zmq.md §3.5).
    pub command_socket: bool,
}

/// How to connect.
pub struct Endpoints {
    /// Heartbeat PUB address.
    pub out_addr: String,
    /// Command ROUTER address.
    pub command_addr: String,
    /// `(server public key, client key pair)` for CURVE; `None` for a plain 1.x channel.
    pub curve: Option<([u8; 32], zmq::CurveKeyPair)>,
    /// HMAC key.
    pub session_key: [u8; 32],
    /// Verifies RSA-signed messages (heartbeats).
    pub server_key: PKey<Public>,
    /// Allowed timestamp skew.
    pub max_skew: Duration,
    /// Largest message accepted.
    pub max_body: usize,
}

/// Why the thread could not start.
#[derive(Debug, thiserror::Error)]
#[error("ZeroMQ: {context}: {source}")]
pub struct Error {
    context: String,
    #[source]
    source: zmq::Error,
}

fn zerr(context: &str) -> impl FnOnce(zmq::Error) -> Error + '_ {
    move |source| Error {
        context: context.to_owned(),
        source,
    }
}

/// A body for the thread to sign and send.
struct Outbound {
    body: Vec<u8>,
    /// Live output (issue 15 §2): best effort, so when libzmq refuses it the bytes are
    /// added to this count (reported by the job's next `output`) instead of counting as
    /// a send failure that reconfigures.
    droppable: Option<(Arc<AtomicU64>, u64)>,
}

/// The async side's handle; dropping it stops the thread and closes the sockets.
pub struct ClientChannel {
    outbound: std_mpsc::SyncSender<Option<Outbound>>,
    doorbell: Mutex<zmq::Socket>,
    /// Sends refused because the queue towards the server was full.
    pub send_failures: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClientChannel {
    /// Queues a body for signing and sending; false if the queue is full or the thread is
    /// gone (the caller treats both as a send failure).
    pub fn send(&self, body: Vec<u8>) -> bool {
        if !self.queue(Outbound {
            body,
            droppable: None,
        }) {
            self.send_failures.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Queues a live `output` body (issue 15 §2); false if it could not be queued. Never
    /// counts as a send failure: if libzmq refuses it later, `bytes` are added to `lost`.
    pub fn send_droppable(&self, body: Vec<u8>, lost: Arc<AtomicU64>, bytes: u64) -> bool {
        self.queue(Outbound {
            body,
            droppable: Some((lost, bytes)),
        })
    }

    fn queue(&self, message: Outbound) -> bool {
        if self.outbound.try_send(Some(message)).is_err() {
            return false;
        }
        let bell = self.doorbell.lock().unwrap_or_else(|p| p.into_inner());
        // EAGAIN means a ring is already pending.
        let _ = bell.send(&b""[..], zmq::DONTWAIT);
        true
    }
}

impl Drop for ClientChannel {
    fn drop(&mut self) {
        let _ = self.outbound.try_send(None);
        {
            let bell = self.doorbell.lock().unwrap_or_else(|p| p.into_inner());
            let _ = bell.send(&b""[..], zmq::DONTWAIT);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A small outbound queue: like the Ruby client's SNDHWM 3, a server that does not take
/// messages shows up as send failures quickly instead of as a growing backlog.
const OUTBOUND_CAPACITY: usize = 64;

/// Connects both sockets and starts the thread.
///
/// # Errors
/// When a socket cannot be made or connected.
pub fn spawn(ep: Endpoints, inbound: mpsc::Sender<FromServer>) -> Result<ClientChannel, Error> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).map_err(zerr("SUB socket"))?;
    sub.set_linger(0).map_err(zerr("SUB linger"))?;
    sub.set_subscribe(b"").map_err(zerr("subscribe"))?;
    sub.connect(&ep.out_addr).map_err(zerr("connecting SUB"))?;
    let dealer = ctx.socket(zmq::DEALER).map_err(zerr("DEALER socket"))?;
    dealer.set_linger(0).map_err(zerr("DEALER linger"))?;
    dealer
        .set_sndhwm(OUTBOUND_CAPACITY as i32)
        .map_err(zerr("DEALER hwm"))?;
    if let Some((server, pair)) = &ep.curve {
        dealer
            .set_curve_serverkey(server)
            .map_err(zerr("CURVE server key"))?;
        dealer
            .set_curve_publickey(&pair.public_key)
            .map_err(zerr("CURVE public key"))?;
        dealer
            .set_curve_secretkey(&pair.secret_key)
            .map_err(zerr("CURVE secret key"))?;
    }
    dealer
        .connect(&ep.command_addr)
        .map_err(zerr("connecting DEALER"))?;
    let bell_addr = format!(
        "inproc://pushy-client-doorbell-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let bell_in = ctx.socket(zmq::PAIR).map_err(zerr("doorbell"))?;
    bell_in.bind(&bell_addr).map_err(zerr("binding doorbell"))?;
    let bell_out = ctx.socket(zmq::PAIR).map_err(zerr("doorbell"))?;
    bell_out.set_linger(0).map_err(zerr("doorbell linger"))?;
    bell_out
        .connect(&bell_addr)
        .map_err(zerr("connecting doorbell"))?;
    let (tx, rx) = std_mpsc::sync_channel(OUTBOUND_CAPACITY);
    let send_failures = Arc::new(AtomicU64::new(0));
    let failures = send_failures.clone();
    let thread = std::thread::Builder::new()
        .name("push-client-zmq".into())
        .spawn(move || {
            let _ctx = ctx;
            run(&ep, &sub, &dealer, &bell_in, &rx, &inbound, &failures);
        })
        .map_err(|_| Error {
            context: "spawning the thread".into(),
            source: zmq::Error::EFAULT,
        })?;
    Ok(ClientChannel {
        outbound: tx,
        doorbell: Mutex::new(bell_out),
        send_failures,
        thread: Some(thread),
    })
}

fn run(
    ep: &Endpoints,
    sub: &zmq::Socket,
    dealer: &zmq::Socket,
    bell: &zmq::Socket,
    outbound: &std_mpsc::Receiver<Option<Outbound>>,
    inbound: &mpsc::Sender<FromServer>,
    failures: &AtomicU64,
) {
    loop {
        let (sub_ready, dealer_ready, bell_ready) = {
            let mut items = [
                sub.as_poll_item(zmq::POLLIN),
                dealer.as_poll_item(zmq::POLLIN),
                bell.as_poll_item(zmq::POLLIN),
            ];
            if zmq::poll(&mut items, 1000).is_err() {
                return;
            }
            (
                items[0].is_readable(),
                items[1].is_readable(),
                items[2].is_readable(),
            )
        };
        for (ready, sock, command_socket) in [(sub_ready, sub, false), (dealer_ready, dealer, true)]
        {
            if !ready {
                continue;
            }
            while let Ok(frames) = sock.recv_multipart(zmq::DONTWAIT) {
                if let Some(received) = check(ep, frames)
                    && inbound
                        .blocking_send(FromServer {
                            received,
                            command_socket,
                        })
                        .is_err()
                {
                    return;
                }
            }
        }
        if bell_ready {
            while bell.recv_bytes(zmq::DONTWAIT).is_ok() {}
        }
        loop {
            match outbound.try_recv() {
                Ok(Some(Outbound { body, droppable })) => {
                    let header = match frame::sign(&body, SignKey::Hmac(&ep.session_key)) {
                        Ok(h) => h,
                        Err(e) => {
                            tracing::error!(error = %e, "signing failed");
                            continue;
                        }
                    };
                    let sent = dealer
                        .send_multipart([header.as_bytes(), &body], zmq::DONTWAIT)
                        .is_ok();
                    if let (false, Some((lost, bytes))) = (sent, &droppable) {
                        lost.fetch_add(*bytes, Ordering::Relaxed);
                        tracing::debug!("live output not sent (queue full or no connection)");
                    } else if !sent {
                        failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            "message to the server not sent (queue full or no connection)"
                        );
                    }
                }
                Ok(None) | Err(std_mpsc::TryRecvError::Disconnected) => return,
                Err(std_mpsc::TryRecvError::Empty) => break,
            }
        }
    }
}

/// Verifies and decodes one received message; `None` (logged) when it fails.
fn check(ep: &Endpoints, frames: Vec<Vec<u8>>) -> Option<Received> {
    let Ok([header, body]) = <[Vec<u8>; 2]>::try_from(frames) else {
        tracing::debug!("dropped a message without exactly two frames");
        return None;
    };
    // The original client accepts either signing method on either socket.
    let key = match Header::parse(&header).ok()?.method {
        SigningMethod::HmacSha256 => VerifyKey::Hmac(&ep.session_key),
        SigningMethod::Rsa2048Sha1 => VerifyKey::Rsa(&ep.server_key),
    };
    if let Err(e) = frame::verify(&header, &body, ep.max_body, key) {
        tracing::warn!(error = %e, "dropped a server message that does not verify");
        return None;
    }
    let body = match ServerBody::parse(&body) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(error = %e, "dropped a server message that does not decode");
            return None;
        }
    };
    let skew = chrono::TimeDelta::from_std(ep.max_skew).unwrap_or(chrono::TimeDelta::seconds(300));
    if !body.within(Utc::now(), skew) {
        tracing::warn!("dropped a server message outside the timestamp window");
        return None;
    }
    Some(body.received)
}
