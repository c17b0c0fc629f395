//! `pushy-faults`: a bounded fault-injection run against the real server binary and real
//! agents on loopback. It posts jobs whose command records what it really did (a marker
//! file per job and node), SIGKILLs and restarts the server at chosen moments (or cuts
//! its PostgreSQL connection for a fixed time), then checks every job against the markers
//! and reports lost, wedged and wrong jobs. `bench/faults` runs the standard variants;
//! bench/README.md explains the design and the verdict rules.
//!
//! ```text
//! run.rs ─ setup.rs (work dir, config, org/clients, agents' configs, PG database)
//!        ├ procs.rs (server, restarted after each kill; agents)      proxy.rs (outages)
//!        ├ drive.rs: submit (POST jobs) · poll (GET jobs) · watch_markers   ◀─ markers.rs
//!        ├ chaos.rs: gap → trigger → SIGKILL + restart, or database cut
//!        └ verify.rs (the verdict) → report.rs (table row, report.md)
//! ```

mod api;
mod chaos;
mod drive;
mod markers;
mod procs;
mod proxy;
mod report;
mod run;
mod setup;
mod verify;

use std::ops::RangeInclusive;
use std::path::PathBuf;

use clap::Parser;

/// Which store the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// Fault injection against the Push Jobs server: lost, wedged and wrong jobs.
#[derive(Parser, Clone, Debug)]
#[command(version, about)]
pub struct Config {
    /// The server's store.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub store: StoreKind,
    /// The faults: SIGKILLs of the server, or database outages (PostgreSQL only).
    #[arg(long, value_enum, default_value = "kill")]
    pub faults: chaos::FaultKind,
    /// Jobs to create (answered 201).
    #[arg(long, default_value_t = 100)]
    pub jobs: usize,
    /// Agents (nodes node1..nodeN).
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Unfinished jobs at most at once.
    #[arg(long, default_value_t = 3)]
    pub in_flight: usize,
    /// Percentage of jobs posted on free nodes whether or not the server counts them
    /// available (the rest wait for available nodes, so their commands run).
    #[arg(long, default_value_t = 10)]
    pub offline_percent: u32,
    /// The moments faults may be injected at (comma-separated; README.md lists them).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "during-post,after-201,running,completion,recovery,startup,random"
    )]
    pub moments: Vec<chaos::Trigger>,
    /// Most faults in a burst; between bursts every agent is back (available).
    #[arg(long, default_value_t = 3)]
    pub burst: u32,
    /// Length of each database outage, seconds.
    #[arg(long, default_value_t = 5)]
    pub outage_secs: u64,
    /// How an outage looks: connections closed and refused, or frozen.
    #[arg(long, value_enum, default_value = "refuse")]
    pub outage_mode: proxy::OutageMode,
    /// Random wait between the end of a fault and the next cue, milliseconds (A..B).
    /// Default: 500..4000 for kills; for outages a fifth of the outage to half of it (at
    /// least 1000..6000), so jobs flow between outages.
    #[arg(long, value_parser = range)]
    pub fault_gap_ms: Option<RangeInclusive<u64>>,
    /// Random pause between a SIGKILL and the restart, milliseconds (A..B).
    #[arg(long, default_value = "0..3000", value_parser = range)]
    pub down_ms: RangeInclusive<u64>,
    /// Longest run of the marker command, milliseconds (each run sleeps 0..this).
    #[arg(long, default_value_t = 3000)]
    pub max_run_ms: u64,
    /// Percentage of marker commands that exit 1.
    #[arg(long, default_value_t = 25)]
    pub fail_percent: u32,
    /// Each job's `run_timeout`, seconds.
    #[arg(long, default_value_t = 90)]
    pub run_timeout: u32,
    /// The server's `voting_timeout`, seconds.
    #[arg(long, default_value_t = 30)]
    pub voting_timeout: u32,
    /// The server's `heartbeat_interval`, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u32,
    /// Time budget for the whole run, seconds: posting stops early enough for the final
    /// wait (voting + run timeout + 60 s) to fit.
    #[arg(long, default_value_t = 900)]
    pub max_secs: u64,
    /// Work directory (default: a new /tmp/pushy-faults.XXXXXX). Kept afterwards.
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// The server binary.
    #[arg(long, default_value_os_t = beside_me("opscode-pushy-server"))]
    pub server_bin: PathBuf,
    /// The agent binary.
    #[arg(long, default_value_os_t = beside_me("push-jobs-client"))]
    pub agent_bin: PathBuf,
    /// PostgreSQL admin URL, for the throwaway database.
    #[arg(
        long,
        env = "PUSHY_TEST_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub pg_url: String,
    /// Keep the PostgreSQL database afterwards.
    #[arg(long)]
    pub keep_db: bool,
    /// Name of the run in the report (default: store and faults).
    #[arg(long)]
    pub label: Option<String>,
    /// Append the run's Markdown table row to this file.
    #[arg(long)]
    pub summary_file: Option<PathBuf>,
}

impl Config {
    /// The gap between faults, defaulted by kind.
    pub fn fault_gap(&self) -> RangeInclusive<u64> {
        if let Some(gap) = &self.fault_gap_ms {
            return gap.clone();
        }
        match self.faults {
            chaos::FaultKind::Kill => 500..=4000,
            chaos::FaultKind::Outage => {
                let ms = self.outage_secs * 1000;
                (ms / 5).max(1000)..=(ms / 2).max(6000)
            }
        }
    }
}

fn range(s: &str) -> Result<RangeInclusive<u64>, String> {
    let (a, b) = s.split_once("..").ok_or("expected A..B")?;
    let a: u64 = a.trim().parse().map_err(|e| format!("{a}: {e}"))?;
    let b: u64 = b.trim().parse().map_err(|e| format!("{b}: {e}"))?;
    if a > b {
        return Err(format!("{a} > {b}"));
    }
    Ok(a..=b)
}

/// Default binaries: beside this one (cargo puts every workspace binary in one directory).
fn beside_me(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| name.into())
}

fn main() -> std::process::ExitCode {
    let cfg = Config::parse();
    if cfg.faults == chaos::FaultKind::Outage && cfg.store != StoreKind::Postgres {
        eprintln!("pushy-faults: --faults outage needs --store postgres");
        return std::process::ExitCode::from(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match rt.block_on(run::run(cfg)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("pushy-faults: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
