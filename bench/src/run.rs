//! `pushy-load run`: raises the descriptor limit, makes one libzmq context, starts the
//! fetcher on a small tokio runtime and the shard threads, then reports once a second
//! until SIGINT/SIGTERM or `--duration`, and stops everything.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::behaviour::{self, Behaviour};
use crate::fetcher::{self, FetchSetup, Inbox};
use crate::inbound::RsaCheck;
use crate::plan::{self, SubMode};
use crate::shard::{self, ShardSetup};
use crate::stats::{Stats, Status};
use crate::{limits, zmq_ctx};

/// The descriptor limit asked for at start (`fs.nr_open`'s usual ceiling).
const WANTED_NOFILE: u64 = 1_048_576;

/// Arguments of `run`.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// The server's API, e.g. http://127.0.0.1:10003 (nodes use <URL>/organizations/ORG).
    #[arg(long)]
    pub url: String,
    /// Organization.
    #[arg(long)]
    pub org: String,
    /// Node name prefix, as given to `provision`.
    #[arg(long, default_value = "node")]
    pub prefix: String,
    /// Index of the first node (several processes can split a fleet).
    #[arg(long, default_value_t = 0)]
    pub first: u64,
    /// Number of nodes.
    #[arg(long)]
    pub count: u64,
    /// The shared private key written by `provision --key-out`.
    #[arg(long)]
    pub key: PathBuf,
    /// Shard threads driving the sockets.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// libzmq I/O threads.
    #[arg(long, default_value_t = 2)]
    pub io_threads: i32,
    /// Config fetches in flight at once.
    #[arg(long, default_value_t = 64)]
    pub fetch_concurrency: usize,
    /// Milliseconds between `ack_run` and the completion message.
    #[arg(long, default_value_t = 0)]
    pub run_delay_ms: u64,
    /// Lines per second each node's pretend command prints while it runs (for the run
    /// delay), streamed as live output when the server asks for it (issue 15 §2).
    #[arg(long, default_value_t = 0)]
    pub output_rate: u32,
    /// Share of commits refused with `nack_commit` (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = behaviour::parse_rate)]
    pub commit_fail_rate: f64,
    /// Share of runs ending `failed` (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = behaviour::parse_rate)]
    pub run_fail_rate: f64,
    /// Upper bound of the random wait before reconnecting after a server restart
    /// (default: the heartbeat interval from the config, as the real client).
    #[arg(long)]
    pub splay_ms: Option<u64>,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Rewrite this JSON file with the counters every second.
    #[arg(long)]
    pub status_file: Option<PathBuf>,
    /// No progress lines (the final summary is still printed).
    #[arg(long, short)]
    pub quiet: bool,
    /// How much of the server heartbeats' RSA signatures to verify.
    #[arg(long, value_enum, default_value_t = RsaCheck::Every)]
    pub verify_heartbeats: RsaCheck,
    /// Timer resolution in milliseconds: heartbeat and completion timers fire up to this
    /// late. Larger costs less generator CPU (each wake-up polls every socket).
    #[arg(long, default_value_t = 250)]
    pub tick_ms: u64,
    /// One heartbeat SUB per shard thread instead of one per node (halves sockets and
    /// descriptors on both sides; the server's PUB then fans out to few subscribers).
    #[arg(long)]
    pub shared_sub: bool,
    /// Comma-separated local addresses to spread ZeroMQ connections over (e.g.
    /// 127.0.0.2,127.0.0.3), past the ~28k connections one address can make to a port.
    #[arg(long, value_delimiter = ',')]
    pub source_addrs: Vec<String>,
}

/// Runs the fleet until stopped.
///
/// # Errors
/// When the key, the context, the runtime or a thread cannot be set up.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let nofile = limits::raise_nofile(WANTED_NOFILE).context("raising RLIMIT_NOFILE")?;
    eprintln!(
        "RLIMIT_NOFILE: asked for {}, have soft {} / hard {}",
        nofile.requested, nofile.soft, nofile.hard
    );
    let sub_mode = if args.shared_sub {
        SubMode::Shared
    } else {
        SubMode::PerNode
    };
    let ranges = plan::shard_ranges(args.first, args.count, args.threads);
    let sockets = plan::sockets_needed(args.count, ranges.len(), sub_mode);
    let fds = plan::descriptors_needed(sockets, args.fetch_concurrency);
    if fds > nofile.soft {
        eprintln!(
            "warning: {} nodes need about {fds} descriptors but the limit is {}; expect socket errors (try --shared-sub, or split the fleet over processes with --first/--count)",
            args.count, nofile.soft
        );
    }
    let pem = std::fs::read_to_string(&args.key)
        .with_context(|| format!("reading {}", args.key.display()))?;
    let key = pushy_protocol::keys::private_key_from_pem(&pem)
        .with_context(|| format!("reading {}", args.key.display()))?;
    let ctx = zmq_ctx::Context::new(i32::try_from(sockets).unwrap_or(i32::MAX), args.io_threads)
        .context("making the ZeroMQ context")?;

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // The fetcher's work is RSA (signing, decrypting the session key); two workers
        // keep a storm moving without starving the shards of CPU.
        .worker_threads(2)
        .thread_name("pushy-load-fetch")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.spawn(watch_signals(stop.clone()));

    let mut inboxes = Vec::new();
    let mut shard_ends = Vec::new();
    for (id, r) in ranges.iter().enumerate() {
        let (queue, answers) = std::sync::mpsc::sync_channel((r.end - r.start) as usize);
        let (bell, ringer) = shard::doorbell(&ctx, id).context("making a shard doorbell")?;
        inboxes.push(Inbox {
            queue,
            bell: Mutex::new(ringer),
        });
        shard_ends.push((answers, bell));
    }
    let fetches = fetcher::spawn(
        runtime.handle(),
        FetchSetup {
            chef_server_url: format!(
                "{}/organizations/{}",
                args.url.trim_end_matches('/'),
                args.org
            ),
            key: Arc::new(key),
            concurrency: args.fetch_concurrency,
        },
        args.count as usize,
        inboxes,
    )?;
    let behaviour = Behaviour {
        commit_fail_rate: args.commit_fail_rate,
        run_fail_rate: args.run_fail_rate,
        run_delay: Duration::from_millis(args.run_delay_ms),
        output_rate: args.output_rate,
        splay: args.splay_ms.map(Duration::from_millis),
    };
    let started = Instant::now();
    let mut threads = Vec::new();
    for (id, (nodes, (answers, bell))) in ranges.into_iter().zip(shard_ends).enumerate() {
        threads.push(shard::spawn(ShardSetup {
            id,
            nodes,
            prefix: args.prefix.clone(),
            org: args.org.clone(),
            behaviour: behaviour.clone(),
            rsa_check: args.verify_heartbeats,
            tick: Duration::from_millis(args.tick_ms.max(1)),
            sub_mode,
            sources: args.source_addrs.clone(),
            ctx: ctx.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            fetches: fetches.clone(),
            answers,
            bell,
        })?);
    }
    // Shards hold the only senders now; the fetcher ends when they stop.
    drop(fetches);

    let report = Reporter::new(&args, started);
    let deadline = args.duration.map(|s| started + Duration::from_secs(s));
    let status = report.watch(&stats, &stop, deadline);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        if t.join().is_err() {
            eprintln!("a shard thread panicked");
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    let last = report.finish(&stats, status);
    eprintln!("{}", last.progress_line());
    Ok(())
}

/// Sets `stop` on SIGINT or SIGTERM.
async fn watch_signals(stop: Arc<AtomicBool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        tracing::error!("cannot watch SIGTERM");
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stop.store(true, Ordering::Relaxed);
}

/// The once-a-second report: progress line, status file, first-all-connected times.
struct Reporter {
    started: Instant,
    nodes: u64,
    quiet: bool,
    status_file: Option<PathBuf>,
}

/// When the fleet first reached its marks.
#[derive(Default, Clone, Copy)]
struct Marks {
    all_configured: Option<f64>,
    all_connected: Option<f64>,
}

impl Reporter {
    fn new(args: &RunArgs, started: Instant) -> Reporter {
        Reporter {
            started,
            nodes: args.count,
            quiet: args.quiet,
            status_file: args.status_file.clone(),
        }
    }

    /// Reports every second until `stop` is set or `deadline` passes.
    fn watch(&self, stats: &Stats, stop: &AtomicBool, deadline: Option<Instant>) -> Marks {
        let mut marks = Marks::default();
        let mut next = self.started + Duration::from_secs(1);
        while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
            std::thread::sleep(Duration::from_millis(50));
            let status = self.status(stats, &mut marks, true);
            if Instant::now() < next {
                continue;
            }
            next += Duration::from_secs(1);
            if !self.quiet {
                eprintln!("{}", status.progress_line());
            }
            self.write(&status);
        }
        marks
    }

    fn finish(&self, stats: &Stats, mut marks: Marks) -> Status {
        let status = self.status(stats, &mut marks, false);
        self.write(&status);
        status
    }

    fn status(&self, stats: &Stats, marks: &mut Marks, running: bool) -> Status {
        let counts = stats.snapshot();
        let elapsed = self.started.elapsed().as_secs_f64();
        if counts.configured >= self.nodes && marks.all_configured.is_none() {
            marks.all_configured = Some(elapsed);
        }
        if counts.connected >= self.nodes && marks.all_connected.is_none() {
            marks.all_connected = Some(elapsed);
        }
        Status {
            running,
            elapsed_secs: elapsed,
            nodes: self.nodes,
            all_configured_after_secs: marks.all_configured,
            all_connected_after_secs: marks.all_connected,
            counts,
        }
    }

    fn write(&self, status: &Status) {
        if let Some(path) = &self.status_file
            && let Err(e) = status.write_to(path)
        {
            tracing::warn!(path = %path.display(), error = %e, "status file not written");
        }
    }
}
