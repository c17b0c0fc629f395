//! Serving the API on a TCP listener, with the limits a server facing careless or hostile
//! clients needs and `axum::serve` does not offer:
//!
//! * at most `http_max_connections` connections are served at once. The accept loop takes
//!   a slot before it accepts, so at the cap new connections wait in the kernel's accept
//!   queue, costing this process no descriptor, and are served as slots free up (rather
//!   than accepted and closed: a client that is merely early is served late, not refused).
//!   The cap is lowered to half the descriptor limit when that is smaller, so HTTP alone
//!   can never exhaust the descriptors the command channel and the store need;
//! * a connection has `http_header_timeout` to deliver a complete request head, counted
//!   from its opening or from its previous response (so it also bounds idle keep-alive
//!   connections), else it is closed; a head over [`MAX_HEAD_BYTES`] is a 431 (hyper's
//!   default, ~400 KB, let 1024 connections hold 400 MB of unfinished heads);
//! * bodies are read by the request pipeline under `http_body_timeout`, and the bytes of
//!   bodies held in memory at once are bounded by [`BodyBudget`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::metrics::Metrics;

/// The largest request head (request line and headers) read, bytes. A Chef-signed head
/// is about 1–2 KB, and Chef Server's nginx refuses header lines over 8 KB.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long shutdown waits for open connections to finish their current request.
const DRAIN: Duration = Duration::from_secs(10);
/// Pause after an accept error that is not the peer's (EMFILE, ENOBUFS…), so a full
/// descriptor table does not spin the loop; connections closing meanwhile free some.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// At most one "connection cap reached" warning per this period.
const CAP_WARNING_PERIOD: Duration = Duration::from_secs(60);

/// The connection limits of [`serve`].
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time to deliver a request head.
    pub header_timeout: Duration,
}

/// The connection cap in force: `configured`, or half the descriptor limit `nofile` when
/// that is lower (at least 1).
pub fn connection_cap(configured: usize, nofile: Option<u64>) -> usize {
    match nofile {
        Some(n) => configured.min(usize::try_from(n / 2).unwrap_or(usize::MAX).max(1)),
        None => configured,
    }
}

/// The process's soft descriptor limit, if it can be read.
pub fn nofile_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// Serves `service` over HTTP/1.1 on `listener` until `shutdown` is cancelled, then lets
/// open connections finish their current request (at most [`DRAIN`]).
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let cap = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(cap));
    let connections = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEAD_BYTES);
    let mut last_warning: Option<Instant> = None;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                metrics.http_connection_waits.inc();
                if last_warning.is_none_or(|t| t.elapsed() >= CAP_WARNING_PERIOD) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(
                        max_connections = cap,
                        "every HTTP connection slot is taken; new connections wait to be accepted"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break, // Never closed; nothing to serve without slots.
                    },
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if !is_peer_error(&e) {
                        tracing::error!(error = %e, "accepting an HTTP connection failed");
                        tokio::select! {
                            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                            () = shutdown.cancelled() => break,
                        }
                    }
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(
                service
                    .clone()
                    .map_request(|req: hyper::Request<Incoming>| req.map(Body::new)),
            ),
        );
        let open = OpenConnection::new(slot, metrics.clone());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let open = open;
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    open.metrics.read_timeout("header");
                }
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP connections were still open {DRAIN:?} after shutdown");
    }
}

/// Errors that concern one connection only: accepting simply goes on.
fn is_peer_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// A served connection: holds its slot and counts in the open-connections gauge.
struct OpenConnection {
    _slot: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl OpenConnection {
    fn new(slot: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.http_connections_open.inc();
        OpenConnection {
            _slot: slot,
            metrics,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.http_connections_open.dec();
    }
}

/// The bytes of request bodies that may be held in memory at once (`http_body_memory`).
///
/// Every body is unauthenticated while it arrives (the signature covers its hash), so
/// without a bound a client needs no key to make the server hold `max_request_size` per
/// connection. Bytes are taken as they arrive, not as `Content-Length` announces them,
/// so only bytes actually sent count; a request that would go over is refused with 503
/// at once rather than left waiting for others to finish.
#[derive(Clone, Debug)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl BodyBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize, metrics: Arc<Metrics>) -> Self {
        BodyBudget {
            bytes: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            metrics,
        }
    }

    /// An empty hold, to grow with [`BodyHold::take`].
    pub(crate) fn hold(&self) -> BodyHold {
        BodyHold {
            budget: self.clone(),
            permit: None,
            bytes: 0,
        }
    }
}

/// Bytes of one body taken from the [`BodyBudget`]; given back on drop.
pub(crate) struct BodyHold {
    budget: BodyBudget,
    permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl BodyHold {
    /// Takes `n` more bytes; `false` (counted) when the budget has not that many left.
    pub(crate) fn take(&mut self, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let Ok(n32) = u32::try_from(n) else {
            self.budget.metrics.http_body_memory_refusals.inc();
            return false;
        };
        match self.budget.bytes.clone().try_acquire_many_owned(n32) {
            Ok(more) => {
                match &mut self.permit {
                    Some(p) => p.merge(more),
                    None => self.permit = Some(more),
                }
                self.bytes += n;
                self.budget.metrics.http_body_bytes.inc_by(n as i64);
                true
            }
            Err(_) => {
                self.budget.metrics.http_body_memory_refusals.inc();
                false
            }
        }
    }
}

impl Drop for BodyHold {
    fn drop(&mut self) {
        self.budget
            .metrics
            .http_body_bytes
            .dec_by(self.bytes as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_half_the_descriptors_to_the_rest() {
        assert_eq!(connection_cap(1024, None), 1024);
        assert_eq!(connection_cap(1024, Some(512)), 256);
        assert_eq!(connection_cap(1024, Some(1_048_576)), 1024);
        assert_eq!(connection_cap(10, Some(1)), 1);
    }

    #[test]
    fn body_bytes_are_bounded_and_given_back() {
        let metrics = Arc::new(Metrics::new());
        let budget = BodyBudget::new(100, metrics.clone());
        let mut a = budget.hold();
        assert!(a.take(60));
        let mut b = budget.hold();
        assert!(b.take(40));
        assert!(!b.take(1), "the budget is spent");
        assert_eq!(metrics.http_body_bytes.get(), 100);
        assert_eq!(metrics.http_body_memory_refusals.get(), 1);
        drop(a);
        assert_eq!(metrics.http_body_bytes.get(), 40);
        assert!(b.take(60));
        drop(b);
        assert_eq!(metrics.http_body_bytes.get(), 0);
    }
}
