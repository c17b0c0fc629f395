//! Config fetches with bounded concurrency: shard threads queue requests; a task on the
//! tokio runtime takes them in order and runs at most `concurrency` at once, each the
//! real agent's signed `GET …/pushy/config/NODE?ccpk=…` (`pushy_client::fetch`, Chef
//! signing v1.1, session key decrypted with the node's RSA key). Results go back to the
//! requesting shard's queue, and its doorbell wakes the shard's poll.
//!
//! Queues are bounded by construction: a node has at most one fetch outstanding, so a
//! queue sized to the node count never fills.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openssl::pkey::{PKey, Private};
use pushy_client::fetch::{self, ServerConfig};
use tokio::sync::{Semaphore, mpsc};

use crate::zmq_ctx::Socket;

/// One node's request.
#[derive(Debug)]
pub struct FetchRequest {
    /// The shard to answer.
    pub shard: usize,
    /// The node's slot in that shard.
    pub slot: usize,
    /// The node (and client) name.
    pub node: String,
    /// The node's CURVE public key, Z85.
    pub ccpk: String,
}

/// The answer.
pub struct FetchResult {
    /// The node's slot.
    pub slot: usize,
    /// How long the request took.
    pub micros: u64,
    /// The config, or why not.
    pub result: Result<ServerConfig, fetch::Error>,
}

/// Where a shard's answers go.
pub struct Inbox {
    /// The answers.
    pub queue: std_mpsc::SyncSender<FetchResult>,
    /// The sending end of the shard's doorbell (an inproc PAIR; a socket is used by one
    /// thread at a time, hence the lock).
    pub bell: Mutex<Socket>,
}

impl Inbox {
    fn deliver(&self, answer: FetchResult) -> bool {
        // Full cannot happen (one outstanding fetch per node); disconnected means the
        // shard stopped.
        if self.queue.try_send(answer).is_err() {
            return false;
        }
        let bell = self.bell.lock().unwrap_or_else(|p| p.into_inner());
        // EAGAIN means a ring is already pending, which is all the shard needs.
        let _ = bell.send(&b""[..], zmq::DONTWAIT);
        true
    }
}

/// Where fetches go.
pub struct FetchSetup {
    /// The node's `chef_server_url`: `<url>/organizations/<org>`.
    pub chef_server_url: String,
    /// The RSA key every simulated node signs with.
    pub key: Arc<PKey<Private>>,
    /// Most fetches in flight at once.
    pub concurrency: usize,
}

/// Why the fetcher could not start.
#[derive(Debug, thiserror::Error)]
#[error("building the HTTP client")]
pub struct Error(#[source] reqwest::Error);

/// Starts the dispatcher on `runtime`; returns the queue shards send requests to.
/// `answers[i]` is shard `i`'s inbox. The dispatcher ends when every request sender is
/// dropped.
///
/// # Errors
/// When the HTTP client cannot be built.
pub fn spawn(
    runtime: &tokio::runtime::Handle,
    setup: FetchSetup,
    queue_capacity: usize,
    answers: Vec<Inbox>,
) -> Result<mpsc::Sender<FetchRequest>, Error> {
    // As the agent: no pooled connections, so every fetch is a fresh request the way a
    // fleet of separate machines would make it (and reaches a restarted server).
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(fetch::REST_TIMEOUT)
        .build()
        .map_err(Error)?;
    let (tx, mut rx) = mpsc::channel::<FetchRequest>(queue_capacity.max(1));
    let permits = Arc::new(Semaphore::new(setup.concurrency.max(1)));
    let setup = Arc::new(setup);
    let answers = Arc::new(answers);
    runtime.spawn(async move {
        while let Some(req) = rx.recv().await {
            // Taken before spawning, so at most `concurrency` tasks exist at a time.
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (http, setup, answers) = (http.clone(), setup.clone(), answers.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let result = fetch::fetch(
                    &http,
                    &setup.chef_server_url,
                    &req.node,
                    &setup.key,
                    &req.ccpk,
                )
                .await;
                drop(permit);
                let answer = FetchResult {
                    slot: req.slot,
                    micros: started.elapsed().as_micros() as u64,
                    result,
                };
                if !answers[req.shard].deliver(answer) {
                    tracing::debug!(node = req.node, "fetch answer dropped: shard gone");
                }
            });
        }
    });
    Ok(tx)
}
