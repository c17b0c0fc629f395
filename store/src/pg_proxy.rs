//! A TCP proxy on loopback that a test can cut and restore, to play a database outage:
//! put it between a store and PostgreSQL, then [`PgProxy::cut`] drops every connection
//! through it and refuses new ones (as a stopped server does), and [`PgProxy::restore`]
//! forwards again on the same port. [`PgProxy::at_next_commit`] times a fault to the
//! moment a transaction commits.
//!
//! ```ignore
//! let proxy = PgProxy::in_front_of(&db.url).await;   // or PgProxy::start("127.0.0.1:5432")
//! let store = PostgresStore::connect(proxy.options(&db.url), 4).await?;
//! proxy.cut().await;      // the store's requests now fail with Error::Unavailable
//! proxy.restore().await;  // and succeed again, same pool
//! ```
//!
//! Built for the store's unit tests and, with the `test-support` feature, for the server's
//! integration tests (`tests/store_outage.rs`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What happens at the next COMMIT a client sends through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtCommit {
    /// PostgreSQL gets the COMMIT and commits; its answer is dropped and the client's
    /// connection closed, so the client cannot know whether its transaction landed.
    LoseReply,
    /// The COMMIT and its answer pass; then the proxy is cut, as if the database stopped
    /// right after.
    Cut,
    /// PostgreSQL commits, and the proxy is cut before its answer passes: the client
    /// cannot find out whether its transaction landed until the proxy is restored.
    LoseReplyAndCut,
}

/// A cuttable TCP proxy to one upstream address. Dropping it cuts it.
pub struct PgProxy {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    upstream: String,
    /// The accept loop, while forwarding.
    listener: Mutex<Option<JoinHandle<()>>>,
    /// One task per proxied connection; aborting it closes both its sockets.
    conns: Mutex<Vec<JoinHandle<()>>>,
    /// The fault armed for the next COMMIT, taken by the connection that sends it.
    at_commit: Mutex<Option<AtCommit>>,
}

/// The simple-query message sqlx sends to commit: `Q`, its length (4 + 7), `COMMIT\0`.
const COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

impl PgProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`
    /// (`host:port`).
    pub async fn start(upstream: &str) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let inner = Arc::new(Inner {
            addr: listener.local_addr().expect("bound address"),
            upstream: upstream.to_owned(),
            listener: Mutex::new(None),
            conns: Mutex::default(),
            at_commit: Mutex::new(None),
        });
        Inner::serve(&inner, listener);
        PgProxy { inner }
    }

    /// A proxy to the server `url` (`postgres://user@host[:port]/db`) names.
    pub async fn in_front_of(url: &str) -> PgProxy {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let authority = rest.split(['/', '?']).next().unwrap_or(rest);
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        if host.contains(':') {
            PgProxy::start(host).await
        } else {
            PgProxy::start(&format!("{host}:5432")).await
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The connect options of `url` (`postgres://user@host:port/db?…`) with its host and
    /// port replaced by the proxy's.
    pub fn options(&self, url: &str) -> PgConnectOptions {
        url.parse::<PgConnectOptions>()
            .expect("a PostgreSQL URL")
            .host(&self.inner.addr.ip().to_string())
            .port(self.inner.addr.port())
    }

    /// Drops every connection through the proxy and closes its listening socket, so new
    /// connections are refused. Returns once both are done.
    pub async fn cut(&self) {
        self.inner.cut().await;
    }

    /// Listens again on the same port and forwards new connections. Does nothing when
    /// not cut.
    pub async fn restore(&self) {
        if self.inner.listener.lock().unwrap().is_some() {
            return;
        }
        // The port was ours a moment ago; SO_REUSEADDR (set by tokio) lets it be bound
        // again at once.
        let listener = TcpListener::bind(self.inner.addr)
            .await
            .expect("rebind the proxy's port");
        Inner::serve(&self.inner, listener);
    }

    /// Arms `fault` for the next COMMIT any client sends (one COMMIT only).
    pub fn at_next_commit(&self, fault: AtCommit) {
        *self.inner.at_commit.lock().unwrap() = Some(fault);
    }

    /// Whether the armed fault has not happened yet.
    pub fn commit_fault_pending(&self) -> bool {
        self.inner.at_commit.lock().unwrap().is_some()
    }

    /// How many proxied connections are open.
    pub fn open_connections(&self) -> usize {
        let mut conns = self.inner.conns.lock().unwrap();
        conns.retain(|task| !task.is_finished());
        conns.len()
    }
}

impl Inner {
    async fn cut(&self) {
        let listener = self.listener.lock().unwrap().take();
        if let Some(task) = listener {
            task.abort();
            let _ = task.await;
        }
        let conns: Vec<_> = std::mem::take(&mut *self.conns.lock().unwrap());
        for task in conns {
            task.abort();
            let _ = task.await;
        }
    }

    fn serve(this: &Arc<Inner>, listener: TcpListener) {
        let inner = this.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    // Out of descriptors or the like: let it pass rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let conn = tokio::spawn(Inner::forward(inner.clone(), client));
                let mut conns = inner.conns.lock().unwrap();
                conns.retain(|task| !task.is_finished());
                conns.push(conn);
            }
        });
        *this.listener.lock().unwrap() = Some(task);
    }

    /// Pumps one connection both ways until either side closes, playing the armed COMMIT
    /// fault if this connection sends the next COMMIT.
    async fn forward(inner: Arc<Inner>, client: TcpStream) {
        let Ok(server) = TcpStream::connect(&inner.upstream).await else {
            return;
        };
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_server, mut to_server) = server.into_split();
        // The fault this connection took, once it sent the COMMIT it applies to.
        let taken: Arc<Mutex<Option<AtCommit>>> = Arc::default();
        let up = {
            let (inner, taken) = (inner.clone(), taken.clone());
            async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match from_client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let chunk = &buf[..n];
                    if chunk.windows(COMMIT.len()).any(|w| w == COMMIT)
                        && let Some(fault) = inner.at_commit.lock().unwrap().take()
                    {
                        *taken.lock().unwrap() = Some(fault);
                    }
                    if to_server.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            }
        };
        let down = async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match from_server.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let fault = *taken.lock().unwrap();
                match fault {
                    // The answer to the COMMIT goes nowhere; returning closes the client's
                    // side while the server's has its answer read.
                    Some(AtCommit::LoseReply) => return,
                    Some(fault @ (AtCommit::Cut | AtCommit::LoseReplyAndCut)) => {
                        if fault == AtCommit::Cut {
                            let _ = to_client.write_all(&buf[..n]).await;
                            let _ = to_client.flush().await;
                        }
                        // Cutting aborts this task too, so it runs on its own.
                        let inner = inner.clone();
                        tokio::spawn(async move { inner.cut().await });
                        return std::future::pending().await;
                    }
                    None => {
                        if to_client.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        // Either direction ending ends the connection: dropping both halves closes both
        // sockets.
        tokio::select! {
            () = up => {}
            () = down => {}
        }
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        if let Some(task) = self.inner.listener.lock().unwrap().take() {
            task.abort();
        }
        for task in self.inner.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}
