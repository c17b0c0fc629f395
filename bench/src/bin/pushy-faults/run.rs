//! One run, start to verdict: set up, start the server and agents, post jobs while faults
//! are injected, wait (bounded) for every job to end, read everything back, judge, report,
//! tear down.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::{Notify, watch};

use crate::api::Api;
use crate::chaos::{self, FaultKind};
use crate::drive::{self, Ctx, Shared};
use crate::markers::Markers;
use crate::procs::{Agents, Server};
use crate::proxy::{OutageMode, Proxy};
use crate::report::{self, RunFacts};
use crate::setup::{self, ADMIN, ORG, PgDb, StoreAt};
use crate::verify::{self, Final};
use crate::{Config, StoreKind};

/// Runs one variant; `Ok(true)` when it found nothing wrong and created every job.
///
/// # Errors
/// When the world cannot be set up (no PostgreSQL, binaries missing, a port taken).
pub async fn run(cfg: Config) -> anyhow::Result<bool> {
    let label = cfg.label.clone().unwrap_or_else(|| default_label(&cfg));
    let work = work_dir(cfg.work.as_deref())?;
    eprintln!("pushy-faults: {label}: work directory {}", work.display());
    let wall = Instant::now();
    let (db, proxy, store) = match cfg.store {
        StoreKind::Sqlite => (None, None, StoreAt::Sqlite),
        StoreKind::Postgres => {
            let db = PgDb::create(&cfg.pg_url).await?;
            let proxy = match cfg.faults {
                FaultKind::Outage => Some(Arc::new(
                    Proxy::start(&db.host_port, cfg.outage_mode).await?,
                )),
                FaultKind::Kill => None,
            };
            let (host, port) = match &proxy {
                Some(p) => ("127.0.0.1".to_owned(), p.port()),
                None => (db.host().to_owned(), db.port()),
            };
            let store = StoreAt::Postgres {
                host,
                port,
                user: db.user.clone(),
                name: db.name.clone(),
            };
            (Some(db), proxy, store)
        }
    };
    let result = run_in(&cfg, &label, &work, &store, proxy, wall).await;
    if let Some(db) = &db {
        if cfg.keep_db {
            eprintln!("pushy-faults: kept database {}", db.name);
        } else {
            db.drop_now().await;
        }
    }
    eprintln!(
        "pushy-faults: {label}: report {}",
        work.join("report.md").display()
    );
    result
}

fn default_label(cfg: &Config) -> String {
    let store = match cfg.store {
        StoreKind::Sqlite => "SQLite",
        StoreKind::Postgres => "PostgreSQL",
    };
    match cfg.faults {
        FaultKind::Kill => format!("{store}, server SIGKILLs"),
        FaultKind::Outage => format!(
            "{store}, {} s database outages ({})",
            cfg.outage_secs,
            match cfg.outage_mode {
                OutageMode::Refuse => "refused",
                OutageMode::Blackhole => "blackholed",
            }
        ),
    }
}

fn work_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match given {
        Some(d) => d.to_owned(),
        None => {
            let mut r = [0u8; 4];
            openssl::rand::rand_bytes(&mut r)?;
            let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
            std::env::temp_dir().join(format!("pushy-faults.{suffix}"))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.canonicalize()?)
}

async fn run_in(
    cfg: &Config,
    label: &str,
    work: &Path,
    store: &StoreAt,
    proxy: Option<Arc<Proxy>>,
    wall: Instant,
) -> anyhow::Result<bool> {
    let scratch = setup::prepare(cfg, work, store)?;
    let api = Api::new(
        &scratch.base_url(),
        ORG,
        ADMIN,
        &scratch.data.join("alice.pem"),
    )?;
    let mut server = Server::new(&cfg.server_bin, &scratch.server_config, &scratch.logs);
    server.spawn()?;
    server.wait_up(&api, Duration::from_secs(60)).await?;
    let mut agents = Agents::start(&cfg.agent_bin, &scratch.agent_configs, &scratch.logs)?;
    let away = wait_available(&api, &scratch.nodes, Duration::from_secs(60)).await;
    anyhow::ensure!(
        away.is_empty(),
        "agents never became available: {away:?} (see {})",
        scratch.logs.display()
    );
    eprintln!(
        "pushy-faults: server and {} agents up; posting {} jobs",
        scratch.nodes.len(),
        cfg.jobs
    );

    let ctx = Arc::new(Ctx {
        shared: Mutex::new(Shared::new(Markers::new(&scratch.markers))),
        posted: Notify::new(),
        post_sent: Notify::new(),
        api,
        cfg: cfg.clone(),
        nodes: scratch.nodes.clone(),
        started: Instant::now(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let poller = tokio::spawn(drive::poll(ctx.clone(), stop_rx.clone()));
    let watcher = tokio::spawn(drive::watch_markers(ctx.clone(), stop_rx));
    let drain = Duration::from_secs(u64::from(cfg.voting_timeout + cfg.run_timeout) + 60);
    let post_deadline = (wall + Duration::from_secs(cfg.max_secs))
        .checked_sub(drain)
        .filter(|d| *d > Instant::now())
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
    let chaos_task = {
        let ctx = ctx.clone();
        let kind = cfg.faults;
        // The proxy must outlive the fault task: dropping it cuts the database for good.
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let mut log = Vec::new();
            let (server, result) = chaos::run(ctx, kind, server, proxy, &mut log).await;
            (server, result, log)
        })
    };
    let submitted = drive::submit(ctx.clone(), post_deadline).await;
    ctx.lock().posting_done = true;
    let (mut server, chaos_result, faults) = chaos_task.await.context("the fault task")?;
    let mut aborted = None;
    if let Err(e) = submitted {
        aborted = Some(format!("posting: {e:#}"));
    }
    if let Err(e) = chaos_result {
        // Most likely the server did not come back after a kill: one more try, so the
        // jobs can still be judged.
        eprintln!("pushy-faults: {e:#}; starting the server once more");
        aborted = Some(format!("faults: {e:#}"));
        server.kill9();
        server.spawn()?;
        if let Err(e) = server.wait_up(&ctx.api, Duration::from_secs(60)).await {
            agents.stop().await;
            return Err(e.context("the server does not come back; nothing can be judged"));
        }
    }
    eprintln!(
        "pushy-faults: t={:.1}s posting done ({} jobs created), {} faults; waiting for every job to end",
        ctx.t(),
        ctx.lock().posts.created,
        faults.len()
    );

    // Every job ends within voting + run timeout after the last fault, or it is wedged.
    let drain_deadline =
        Instant::now() + Duration::from_secs(u64::from(cfg.voting_timeout + cfg.run_timeout) + 30);
    loop {
        drive::adopt(&ctx).await;
        if ctx.lock().in_flight() == 0 || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Commands that still run (a node given up on, a kill in its grace period) end on
    // their own within the longest run, or with the agent's SIGKILL after 5 s.
    let quiet = Instant::now() + Duration::from_millis(cfg.max_run_ms) + Duration::from_secs(10);
    while !ctx.lock().markers.busy_nodes().is_empty() && Instant::now() < quiet {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = collect(&ctx).await;
    let nodes_unavailable = wait_available(&ctx.api, &scratch.nodes, Duration::from_secs(30)).await;
    let agents_exited = agents.exited();
    let _ = stop_tx.send(true);
    let _ = poller.await;
    let _ = watcher.await;
    agents.stop().await;
    server.stop().await;
    let last = last?;

    let (tally, findings) = verify::check(&last);
    let facts = {
        let s = ctx.lock();
        RunFacts {
            label: label.to_owned(),
            wall_secs: wall.elapsed().as_secs_f64(),
            posts: s.posts.clone(),
            refusal_samples: s.refusal_samples.clone(),
            faults,
            kills: server.kills,
            starts: server.starts,
            slowest_start_secs: server.slowest_start.as_secs_f64(),
            agents_exited,
            nodes_unavailable,
            aborted,
            target_jobs: cfg.jobs,
        }
    };
    let md = report::markdown(&facts, &tally, &findings, &scratch.logs);
    std::fs::write(work.join("report.md"), &md)?;
    let row = report::row(&facts, &tally);
    println!("{}\n{row}", report::TABLE_HEADER);
    for f in findings.iter().take(20) {
        println!(
            "  {:?} job {} node {}: recorded {}; marker: {}; {}",
            f.problem,
            f.job,
            f.node.as_deref().unwrap_or("—"),
            f.recorded,
            f.truth,
            f.why
        );
    }
    if findings.len() > 20 {
        println!("  … {} more findings in report.md", findings.len() - 20);
    }
    if let Some(why) = &facts.aborted {
        println!("  RUN ABORTED: {why}");
    }
    // A POST with no answer may have made a job; a refused one must not have.
    let refused_but_exist = tally
        .jobs_unacked
        .saturating_sub(facts.posts.no_answer as usize);
    if refused_but_exist > 0 {
        println!("  {refused_but_exist} job(s) exist although their POST was refused (5xx)");
    }
    if let Some(path) = &cfg.summary_file {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        if f.metadata()?.len() == 0 {
            writeln!(f, "{}", report::TABLE_HEADER)?;
        }
        writeln!(f, "{row}")?;
    }
    Ok(tally.lost + tally.wedged + tally.wrong == 0
        && refused_but_exist == 0
        && facts.aborted.is_none()
        && tally.jobs_acked >= cfg.jobs
        && facts.agents_exited.is_empty())
}

/// Waits until every node is `available`; returns those that are not by `limit`.
async fn wait_available(api: &Api, nodes: &[String], limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let states = api.node_states().await.unwrap_or_default();
        let away: Vec<String> = nodes
            .iter()
            .filter(|n| states.get(*n).map(String::as_str) != Some("available"))
            .cloned()
            .collect();
        if away.is_empty() || Instant::now() >= deadline {
            return away;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Reads back every job the server has and every job that answered 201, and the markers.
async fn collect(ctx: &Ctx) -> anyhow::Result<Final> {
    let mut list = None;
    for _ in 0..10 {
        match ctx.api.jobs().await {
            Ok(l) => {
                list = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    let list = list.context("the server would not list its jobs at the end")?;
    let acked: BTreeSet<String> = ctx
        .lock()
        .jobs
        .iter()
        .filter(|(_, j)| j.acked)
        .map(|(id, _)| id.clone())
        .collect();
    let ids: BTreeSet<String> = list
        .into_iter()
        .map(|(id, _)| id)
        .chain(acked.iter().cloned())
        .collect();
    let mut views = BTreeMap::new();
    let mut missing = BTreeSet::new();
    for id in ids {
        let mut answer = None;
        for _ in 0..10 {
            match ctx.api.job(&id).await {
                Ok(a) => {
                    answer = Some(a);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        match answer.with_context(|| format!("the server would not show job {id} at the end"))? {
            Some(view) => {
                views.insert(id, view);
            }
            None => {
                missing.insert(id);
            }
        }
    }
    let runs = {
        let mut s = ctx.lock();
        s.markers.refresh(true);
        s.markers.runs().clone()
    };
    Ok(Final {
        acked,
        views,
        missing,
        runs,
    })
}
