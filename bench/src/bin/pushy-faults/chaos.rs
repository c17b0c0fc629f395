//! The fault scheduler: while jobs are being posted, it injects bursts of 1..=`--burst`
//! faults. Before each fault it waits a random gap and picks a moment (a trigger); the
//! fault is a SIGKILL of the server followed by a restart on the same data directory
//! after a short random pause, or a database outage of a fixed length through the proxy.
//! Between bursts it waits until every agent is available again. It stops once posting
//! is done, leaving the server up and the database reachable.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;
use rand::seq::IndexedRandom as _;

use crate::drive::Ctx;
use crate::procs::Server;
use crate::proxy::Proxy;

/// What kind of fault a run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultKind {
    /// SIGKILL the server, restart it.
    Kill,
    /// Cut the database (PostgreSQL only) for `--outage-secs`.
    Outage,
}

/// The moment a fault is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Trigger {
    /// 0–8 ms after a POST was sent: while the server creates the job.
    #[value(name = "during-post")]
    DuringPost,
    /// 0–200 ms after a POST answered 201: job just stored, commits out, votes coming.
    #[value(name = "after-201")]
    AfterPost,
    /// 0–1.5 s after a job was seen running: commands running, results on the way.
    Running,
    /// 0–100 ms after a marker command wrote its exit code: the result in transit.
    Completion,
    /// 0–1.5 s after the previous fault ended: jobs resuming, agents reconnecting.
    Recovery,
    /// (kills) 0–400 ms after a restart's spawn, before it answers: a kill during start-up.
    Startup,
    /// Any time within 3 s.
    Random,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trigger::DuringPost => "during-post",
            Trigger::AfterPost => "after-201",
            Trigger::Running => "running",
            Trigger::Completion => "completion",
            Trigger::Recovery => "recovery",
            Trigger::Startup => "startup",
            Trigger::Random => "random",
        })
    }
}

/// One injected fault, for `faults.log` and the report.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    /// Seconds since the run started.
    pub at: f64,
    pub trigger: Trigger,
    /// Whether the trigger's moment came (else the wait ran out and it fired anyway).
    pub on_cue: bool,
    pub what: String,
    /// For the last fault of a burst: seconds from its end until every agent was
    /// available again.
    pub all_back_secs: Option<f64>,
}

/// The longest wait for a trigger's moment.
const CUE_WAIT: Duration = Duration::from_secs(20);

/// Injects faults until posting is done; gives the server back, up.
///
/// # Errors
/// When the server does not come back after a restart (itself a finding).
pub async fn run(
    ctx: Arc<Ctx>,
    kind: FaultKind,
    mut server: Server,
    proxy: Option<Arc<Proxy>>,
    log: &mut Vec<FaultRecord>,
) -> (Server, anyhow::Result<()>) {
    let result = inject(&ctx, kind, &mut server, proxy.as_deref(), log).await;
    // Whatever happened, leave the world whole for the final check.
    if let Some(p) = &proxy {
        let _ = p.restore().await;
    }
    (server, result)
}

/// The longest calm between bursts: agents back off up to 30 s between config fetches.
const CALM_WAIT: Duration = Duration::from_secs(60);

async fn inject(
    ctx: &Arc<Ctx>,
    kind: FaultKind,
    server: &mut Server,
    proxy: Option<&Proxy>,
    log: &mut Vec<FaultRecord>,
) -> anyhow::Result<()> {
    loop {
        // Calm: every agent is back before a burst starts, so a node's result is never
        // kept away by a retry back-off longer than a job's run timeout.
        let calm = Instant::now();
        match wait_until(ctx, calm + CALM_WAIT, |s| {
            s.available.len() >= ctx.nodes.len()
        })
        .await
        {
            None => return Ok(()),
            Some(true) => {}
            Some(false) => eprintln!(
                "pushy-faults: t={:.1}s not every agent is back {} s after the last fault; going on",
                ctx.t(),
                CALM_WAIT.as_secs()
            ),
        }
        if let Some(last) = log.last_mut() {
            last.all_back_secs = Some(calm.elapsed().as_secs_f64());
        }
        let burst = rand::rng().random_range(1..=ctx.cfg.burst.max(1));
        for i in 0..burst {
            let trigger = pick(kind, i > 0, &ctx.cfg.moments);
            if !matches!(trigger, Trigger::Recovery | Trigger::Startup) {
                let gap = rand::rng().random_range(ctx.cfg.fault_gap());
                let until = Instant::now() + Duration::from_millis(gap);
                if wait_until(ctx, until, |_| false).await.is_none() {
                    return Ok(());
                }
            }
            let Some(on_cue) = cue(ctx, trigger).await else {
                return Ok(());
            };
            let at = ctx.t();
            let what = match kind {
                FaultKind::Kill => {
                    ctx.lock().available.clear();
                    kill_restart(ctx, server, trigger == Trigger::Startup).await?
                }
                FaultKind::Outage => {
                    let proxy = proxy.expect("outages run with a proxy");
                    outage(ctx, proxy).await?
                }
            };
            let record = FaultRecord {
                at,
                trigger,
                on_cue,
                what,
                all_back_secs: None,
            };
            eprintln!(
                "pushy-faults: t={:.1}s {} at {}{} ({} jobs created)",
                record.at,
                record.what,
                record.trigger,
                if record.on_cue {
                    ""
                } else {
                    " (no cue in 20 s)"
                },
                ctx.lock().posts.created
            );
            log.push(record);
        }
    }
}

/// Cuts the database for `--outage-secs`; at a random moment inside the outage a probe
/// job is POSTed (creation must then fail cleanly, or succeed for good).
async fn outage(ctx: &Arc<Ctx>, proxy: &Proxy) -> anyhow::Result<String> {
    let length = Duration::from_secs(ctx.cfg.outage_secs);
    proxy.cut().await;
    let cut = Instant::now();
    let probe_after = length.mul_f64(rand::rng().random_range(0.0..1.0));
    tokio::time::sleep(probe_after).await;
    // Not awaited: against a frozen database the POST may wait for the outage's end.
    let probe = {
        let ctx = ctx.clone();
        tokio::spawn(async move { crate::drive::probe(&ctx).await })
    };
    tokio::time::sleep(length.saturating_sub(cut.elapsed())).await;
    proxy.restore().await?;
    probe.await??;
    Ok(format!(
        "database cut {} s (probe POST {:.1} s in)",
        ctx.cfg.outage_secs,
        probe_after.as_secs_f64()
    ))
}

/// The next trigger, among `allowed`. A burst opens with a moment of normal work; later
/// faults of a burst come, half the time, right after the previous one ended (for kills:
/// half of those during the next start-up).
fn pick(kind: FaultKind, in_burst: bool, allowed: &[Trigger]) -> Trigger {
    let mut rng = rand::rng();
    let ok = |t: &Trigger| allowed.contains(t);
    let follow: Vec<Trigger> = [Trigger::Startup, Trigger::Recovery]
        .into_iter()
        .filter(|t| ok(t) && (kind == FaultKind::Kill || *t != Trigger::Startup))
        .collect();
    let open: Vec<Trigger> = [
        Trigger::DuringPost,
        Trigger::AfterPost,
        Trigger::Running,
        Trigger::Completion,
        Trigger::Random,
    ]
    .into_iter()
    .filter(ok)
    .collect();
    let from = if (in_burst && rng.random_bool(0.5)) || open.is_empty() {
        &follow
    } else {
        &open
    };
    from.choose(&mut rng).copied().unwrap_or(Trigger::Random)
}

/// Waits for the trigger's moment plus its random delay. `Some(false)` when the moment did
/// not come within [`CUE_WAIT`]; `None` when posting finished meanwhile.
async fn cue(ctx: &Ctx, trigger: Trigger) -> Option<bool> {
    let deadline = Instant::now() + CUE_WAIT;
    let rng_ms = |max: u64| Duration::from_millis(rand::rng().random_range(0..=max));
    let on_cue = match trigger {
        Trigger::DuringPost | Trigger::AfterPost => {
            let notified = if trigger == Trigger::DuringPost {
                ctx.post_sent.notified()
            } else {
                ctx.posted.notified()
            };
            tokio::pin!(notified);
            let came = loop {
                tokio::select! {
                    _ = &mut notified => break true,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                if ctx.lock().posting_done {
                    return None;
                }
                if Instant::now() >= deadline {
                    break false;
                }
            };
            let delay = if trigger == Trigger::DuringPost {
                8
            } else {
                200
            };
            tokio::time::sleep(rng_ms(delay)).await;
            came
        }
        Trigger::Running => {
            let came = wait_until(ctx, deadline, |s| s.any_running()).await?;
            tokio::time::sleep(rng_ms(1500)).await;
            came
        }
        Trigger::Completion => {
            let before = ctx.lock().markers.done_events;
            let came = wait_until(ctx, deadline, |s| s.markers.done_events > before).await?;
            tokio::time::sleep(rng_ms(100)).await;
            came
        }
        Trigger::Recovery => {
            tokio::time::sleep(rng_ms(1500)).await;
            true
        }
        Trigger::Startup => true,
        Trigger::Random => {
            tokio::time::sleep(rng_ms(3000)).await;
            true
        }
    };
    if ctx.lock().posting_done {
        return None;
    }
    Some(on_cue)
}

/// Polls the shared state every 5 ms until `test` holds (`Some(true)`), the deadline
/// passes (`Some(false)`) or posting is done (`None`).
async fn wait_until(
    ctx: &Ctx,
    deadline: Instant,
    test: impl Fn(&crate::drive::Shared) -> bool,
) -> Option<bool> {
    loop {
        {
            let s = ctx.lock();
            if s.posting_done {
                return None;
            }
            if test(&s) {
                return Some(true);
            }
        }
        if Instant::now() >= deadline {
            return Some(false);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// SIGKILL, a random pause, restart; with `twice`, the restarted process is killed again
/// 0–400 ms after its spawn (during start-up and resume) and started once more.
async fn kill_restart(ctx: &Ctx, server: &mut Server, twice: bool) -> anyhow::Result<String> {
    server.kill9();
    let down = rand::rng().random_range(ctx.cfg.down_ms.clone());
    tokio::time::sleep(Duration::from_millis(down)).await;
    server.spawn()?;
    let mut what = format!("SIGKILL, down {down} ms");
    if twice {
        let after = rand::rng().random_range(0..=400);
        tokio::time::sleep(Duration::from_millis(after)).await;
        server.kill9();
        let down2 = rand::rng().random_range(ctx.cfg.down_ms.clone());
        tokio::time::sleep(Duration::from_millis(down2)).await;
        server.spawn()?;
        what = format!("{what}; SIGKILL again {after} ms after its spawn, down {down2} ms");
    }
    server.wait_up(&ctx.api, Duration::from_secs(60)).await?;
    Ok(what)
}
