//! A TCP proxy on loopback that a test can cut and restore, to play a database outage:
//! put it between a store and PostgreSQL, then [`PgProxy::cut`] drops every connection
//! through it and refuses new ones (as a stopped server does), and [`PgProxy::restore`]
//! forwards again on the same port.
//!
//! ```ignore
//! let proxy = PgProxy::in_front_of(&db.url).await;   // or PgProxy::start("127.0.0.1:5432")
//! let store = PostgresStore::connect(&proxy.url(&db.url), 4).await?;
//! proxy.cut().await;      // the store's requests now fail with Error::Unavailable
//! proxy.restore().await;  // and succeed again, same pool
//! ```
//!
//! Used by integration tests (`mod common;` then `common::pg_proxy::PgProxy`) and by the
//! store's unit tests, which include this file by path.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A cuttable TCP proxy to one upstream address. Dropping it cuts it.
pub struct PgProxy {
    addr: SocketAddr,
    upstream: String,
    /// The accept loop, while forwarding.
    listener: Mutex<Option<JoinHandle<()>>>,
    /// One task per proxied connection; aborting it closes both its sockets.
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl PgProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`
    /// (`host:port`).
    pub async fn start(upstream: &str) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let proxy = PgProxy {
            addr: listener.local_addr().expect("bound address"),
            upstream: upstream.to_owned(),
            listener: Mutex::new(None),
            conns: Arc::default(),
        };
        proxy.serve(listener);
        proxy
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
        self.addr
    }

    /// `url` (`postgres://user@host:port/db?…`) with its host and port replaced by the
    /// proxy's.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let user = authority
            .rsplit_once('@')
            .map(|(user, _)| format!("{user}@"));
        format!("{scheme}://{}{}{path}", user.unwrap_or_default(), self.addr)
    }

    /// Drops every connection through the proxy and closes its listening socket, so new
    /// connections are refused. Returns once both are done.
    pub async fn cut(&self) {
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

    /// Listens again on the same port and forwards new connections. Does nothing when
    /// not cut.
    pub async fn restore(&self) {
        if self.listener.lock().unwrap().is_some() {
            return;
        }
        // The port was ours a moment ago; SO_REUSEADDR (set by tokio) lets it be bound
        // again at once.
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind the proxy's port");
        self.serve(listener);
    }

    /// How many proxied connections are open.
    pub fn open_connections(&self) -> usize {
        let mut conns = self.conns.lock().unwrap();
        conns.retain(|task| !task.is_finished());
        conns.len()
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        let conns = self.conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    // Out of descriptors or the like: let it pass rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut conns = conns.lock().unwrap();
                conns.retain(|task| !task.is_finished());
                conns.push(task);
            }
        });
        *self.listener.lock().unwrap() = Some(task);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        if let Some(task) = self.listener.lock().unwrap().take() {
            task.abort();
        }
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}
