//! The real processes under test: the server (`opscode-pushy-server serve`, restarted on
//! the same data directory after each SIGKILL, one log file per start) and the agents
//! (`push-jobs-client`, started once; they reconnect on their own).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::api::Api;

/// Log filter of the server: its job and node lines at debug, so a finding can be traced.
const SERVER_LOG: &str = "warn,pushy_server=debug,opscode_pushy_server=info";

/// The server process, across its restarts.
pub struct Server {
    bin: PathBuf,
    config: PathBuf,
    logs: PathBuf,
    child: Option<Child>,
    /// How many times it was started; start N logs to `server.N.log`.
    pub starts: u32,
    /// How many times it was SIGKILLed.
    pub kills: u32,
    /// Longest time from spawn to answering `_status`.
    pub slowest_start: Duration,
}

impl Server {
    pub fn new(bin: &Path, config: &Path, logs: &Path) -> Server {
        Server {
            bin: bin.to_owned(),
            config: config.to_owned(),
            logs: logs.to_owned(),
            child: None,
            starts: 0,
            kills: 0,
            slowest_start: Duration::ZERO,
        }
    }

    /// Spawns it; returns at once (see [`Server::wait_up`]).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log = self.logs.join(format!("server.{}.log", self.starts));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .arg("serve")
            .env("RUST_LOG", SERVER_LOG)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until it answers `GET /pushy/_status`.
    ///
    /// # Errors
    /// When it exits or does not answer within `limit`.
    pub async fn wait_up(&mut self, api: &Api, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if api.alive().await {
                self.slowest_start = self.slowest_start.max(started.elapsed());
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!(
                    "the server exited ({status}) at start {}; see server.{}.log",
                    self.starts,
                    self.starts
                );
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "the server did not answer within {limit:?} at start {}",
                self.starts
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.kills += 1;
        }
    }

    /// SIGTERM, then SIGKILL if it has not stopped within 15 s.
    pub async fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, Duration::from_secs(15)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The agents, one process per node.
pub struct Agents {
    children: Vec<(String, Child)>,
}

impl Agents {
    /// Starts `push-jobs-client -c CONFIG -l debug` for each `(node, config)`.
    pub fn start(bin: &Path, configs: &[(String, PathBuf)], logs: &Path) -> anyhow::Result<Agents> {
        let mut children = Vec::new();
        for (node, config) in configs {
            let log = logs.join(format!("agent-{node}.log"));
            let out = File::create(&log)?;
            let child = Command::new(bin)
                .arg("-c")
                .arg(config)
                .arg("-l")
                .arg("debug")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            children.push((node.clone(), child));
        }
        Ok(Agents { children })
    }

    /// Nodes whose agent process has exited (it never should).
    pub fn exited(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|(n, c)| (!matches!(c.try_wait(), Ok(None))).then(|| n.clone()))
            .collect()
    }

    /// SIGTERM to each (an agent kills its running command's process group), bounded.
    pub async fn stop(&mut self) {
        for (_, child) in self.children.drain(..) {
            terminate(child, Duration::from_secs(10)).await;
        }
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn terminate(mut child: Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}
