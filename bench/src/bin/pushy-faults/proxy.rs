//! A TCP proxy on loopback between the server and PostgreSQL that plays a database
//! outage on demand. Two kinds of outage:
//!
//! - `refuse`: every proxied connection is closed and the port refuses new ones, as when
//!   PostgreSQL stops or restarts;
//! - `blackhole`: connections stay open but no byte moves either way, and new ones are
//!   accepted and stall too, as in a network partition; on restore everything held is
//!   delivered and forwarding resumes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How an outage looks to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutageMode {
    /// Connections closed, new ones refused.
    Refuse,
    /// Connections and new ones frozen.
    Blackhole,
}

/// A cuttable proxy to one upstream address.
pub struct Proxy {
    addr: SocketAddr,
    upstream: String,
    mode: OutageMode,
    /// True while cut (blackhole mode reads it in every pump).
    cut: watch::Sender<bool>,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// One task per proxied connection; aborting it closes both sockets.
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: &str, mode: OutageMode) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let proxy = Proxy {
            addr: listener.local_addr()?,
            upstream: upstream.to_owned(),
            mode,
            cut: watch::channel(false).0,
            listener: Mutex::new(None),
            conns: Arc::default(),
        };
        proxy.serve(listener);
        Ok(proxy)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Starts the outage.
    pub async fn cut(&self) {
        self.cut.send_replace(true);
        if self.mode == OutageMode::Blackhole {
            return;
        }
        let listener = self.listener.lock().expect("not poisoned").take();
        if let Some(task) = listener {
            task.abort();
            let _ = task.await;
        }
        let conns: Vec<_> = std::mem::take(&mut *self.conns.lock().expect("not poisoned"));
        for task in conns {
            task.abort();
            let _ = task.await;
        }
    }

    /// Ends the outage.
    pub async fn restore(&self) -> std::io::Result<()> {
        self.cut.send_replace(false);
        if self.mode == OutageMode::Blackhole
            || self.listener.lock().expect("not poisoned").is_some()
        {
            return Ok(());
        }
        // The port was ours a moment ago; tokio sets SO_REUSEADDR.
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        let conns = self.conns.clone();
        let cut = self.cut.subscribe();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let upstream = upstream.clone();
                let cut = cut.clone();
                let task = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        forward(client, server, cut).await;
                    }
                });
                let mut conns = conns.lock().expect("not poisoned");
                conns.retain(|t| !t.is_finished());
                conns.push(task);
            }
        });
        *self.listener.lock().expect("not poisoned") = Some(task);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.listener.lock().expect("not poisoned").take() {
            task.abort();
        }
        for task in self.conns.lock().expect("not poisoned").drain(..) {
            task.abort();
        }
    }
}

/// Copies both ways until either side closes; holds each chunk while `cut` is true.
async fn forward(client: TcpStream, server: TcpStream, cut: watch::Receiver<bool>) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::select! {
        _ = pump(cr, sw, cut.clone()) => {}
        _ = pump(sr, cw, cut) => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.wait_for(|c| !*c).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
