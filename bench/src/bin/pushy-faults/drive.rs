//! The job traffic: what the harness knows about every job (shared with the fault
//! scheduler), the submitter that POSTs jobs on free nodes with a bounded number in flight,
//! the poller that follows each unfinished job, and the marker watcher.
//!
//! A node is free when no unfinished job the harness knows holds it, no POST waiting for
//! its answer names it, and no marker command runs on it, so a commit is refused
//! (`nacked`) only when the server or agent lost track of something. A POST that got no
//! answer, or an error answer, may still have created a job: its nodes stay reserved
//! until the next full job list, which adopts any job the harness did not know.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pushy_protocol::job::JobStatus;
use rand::Rng as _;
use rand::seq::IndexedRandom as _;
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::Config;
use crate::api::{Api, JobView, PostOutcome};
use crate::markers::Markers;

/// One job the harness knows of.
#[derive(Clone, Debug)]
pub struct Tracked {
    pub nodes: Vec<String>,
    /// Its last status seen (`posted` until the first GET).
    pub status: String,
    /// Whether its POST answered 201 (else it was found in the job list).
    pub acked: bool,
    pub terminal: bool,
    /// Every job status seen, in order of first sight.
    pub seen: Vec<String>,
}

/// How the POSTs went.
#[derive(Clone, Debug, Default)]
pub struct PostCounts {
    pub attempts: u32,
    pub created: u32,
    /// Connection refused: the server was down; no job can exist.
    pub down: u32,
    /// Answered, but not 201: status to count.
    pub refused: BTreeMap<u16, u32>,
    /// Sent, but no answer came (killed mid-request).
    pub no_answer: u32,
}

/// What the submitter, poller, marker watcher and fault scheduler share.
pub struct Shared {
    pub jobs: BTreeMap<String, Tracked>,
    pub posts: PostCounts,
    /// First few non-201 answers, for the report.
    pub refusal_samples: Vec<String>,
    /// Nodes of POSTs with an unknown outcome, with when the POST was sent.
    suspect: Vec<(Instant, Vec<String>)>,
    /// Nodes of POSTs waiting for their answer, by a number per POST.
    posting: BTreeMap<u64, Vec<String>>,
    next_post: u64,
    pub markers: Markers,
    /// Set once every job is posted (or the time budget for posting ran out).
    pub posting_done: bool,
    /// Nodes the server last said are `available` (emptied when the server is killed).
    pub available: BTreeSet<String>,
}

impl Shared {
    pub fn new(markers: Markers) -> Shared {
        Shared {
            jobs: BTreeMap::new(),
            posts: PostCounts::default(),
            refusal_samples: Vec::new(),
            suspect: Vec::new(),
            posting: BTreeMap::new(),
            next_post: 0,
            markers,
            posting_done: false,
            available: BTreeSet::new(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.jobs.values().filter(|j| !j.terminal).count()
    }

    /// Whether some unfinished job was last seen `running`.
    pub fn any_running(&self) -> bool {
        self.jobs
            .values()
            .any(|j| !j.terminal && j.status == "running")
    }

    /// Nodes a new job may take: in no unfinished job, running no command, and (unless
    /// `any`) available by the server's account.
    fn free_nodes(&self, all: &[String], any: bool) -> Vec<String> {
        let mut busy: BTreeSet<String> = self.markers.busy_nodes();
        for j in self.jobs.values().filter(|j| !j.terminal) {
            busy.extend(j.nodes.iter().cloned());
        }
        for nodes in self
            .suspect
            .iter()
            .map(|(_, n)| n)
            .chain(self.posting.values())
        {
            busy.extend(nodes.iter().cloned());
        }
        all.iter()
            .filter(|n| !busy.contains(*n) && (any || self.available.contains(*n)))
            .cloned()
            .collect()
    }

    fn observe(&mut self, id: &str, view: &JobView) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        job.status = view.status.clone();
        if !job.seen.contains(&view.status) {
            job.seen.push(view.status.clone());
        }
        if job.nodes.is_empty() {
            job.nodes = view.nodes.keys().cloned().collect();
        }
        job.terminal = JobStatus::from_wire_name(&view.status).is_some_and(|s| s.is_terminal());
    }
}

/// The state, wake-ups for the fault scheduler, and the run's settings.
pub struct Ctx {
    pub shared: Mutex<Shared>,
    /// A POST just answered 201.
    pub posted: Notify,
    /// A POST is about to be sent.
    pub post_sent: Notify,
    pub api: Api,
    pub cfg: Config,
    pub nodes: Vec<String>,
    pub started: Instant,
}

impl Ctx {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("no task panics holding it")
    }

    /// Seconds since the run started, for logs.
    pub fn t(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// POSTs jobs until `cfg.jobs` were created or `deadline` passes.
///
/// # Errors
/// When the server refuses a job for a reason a retry cannot fix (400, 401, 403): the
/// harness itself is wrong.
pub async fn submit(ctx: Arc<Ctx>, deadline: Instant) -> anyhow::Result<()> {
    // Whether the next job may take nodes the server does not count available: drawn once
    // per job, so waiting for available nodes does not give offline jobs extra draws.
    let mut any = None;
    loop {
        let nodes = {
            let mut s = ctx.lock();
            if s.posts.created as usize >= ctx.cfg.jobs || Instant::now() >= deadline {
                s.posting_done = true;
                return Ok(());
            }
            let mut rng = rand::rng();
            let any =
                *any.get_or_insert_with(|| rng.random_range(0..100) < ctx.cfg.offline_percent);
            let free = s.free_nodes(&ctx.nodes, any);
            if s.in_flight() >= ctx.cfg.in_flight || free.is_empty() {
                None
            } else {
                let k = rng.random_range(1..=free.len());
                let mut pick: Vec<String> = free.choose_multiple(&mut rng, k).cloned().collect();
                pick.sort();
                Some(pick)
            }
        };
        let Some(nodes) = nodes else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        any = None;
        let pause = post(&ctx, nodes).await?;
        tokio::time::sleep(pause).await;
    }
}

/// A job on one free node, whatever the limit on jobs in flight: the probe the fault
/// scheduler sends during an outage. None when no node is free.
pub async fn probe(ctx: &Ctx) -> anyhow::Result<()> {
    let node = {
        let s = ctx.lock();
        s.free_nodes(&ctx.nodes, true)
            .choose(&mut rand::rng())
            .cloned()
    };
    match node {
        Some(node) => post(ctx, vec![node]).await.map(|_| ()),
        None => Ok(()),
    }
}

/// POSTs one job on `nodes` and records what came back; returns how long to wait before
/// the next POST.
async fn post(ctx: &Ctx, nodes: Vec<String>) -> anyhow::Result<Duration> {
    let body = json!({
        "command": format!("fault {} {}", ctx.cfg.max_run_ms, ctx.cfg.fail_percent),
        "nodes": nodes,
        "run_timeout": ctx.cfg.run_timeout,
    });
    let ticket = {
        let mut s = ctx.lock();
        s.posts.attempts += 1;
        s.next_post += 1;
        let ticket = s.next_post;
        s.posting.insert(ticket, nodes.clone());
        ticket
    };
    let sent = Instant::now();
    ctx.post_sent.notify_waiters();
    let outcome = ctx.api.post_job(&body).await;
    let mut s = ctx.lock();
    s.posting.remove(&ticket);
    let t = ctx.t();
    Ok(match outcome {
        PostOutcome::Created(id) => {
            s.posts.created += 1;
            s.jobs.insert(
                id,
                Tracked {
                    nodes,
                    status: "posted".to_owned(),
                    acked: true,
                    terminal: false,
                    seen: Vec::new(),
                },
            );
            ctx.posted.notify_waiters();
            Duration::ZERO
        }
        PostOutcome::Down => {
            s.posts.down += 1;
            Duration::from_millis(200)
        }
        PostOutcome::Refused(status, text) => {
            if matches!(status, 400 | 401 | 403 | 404 | 413 | 415) {
                anyhow::bail!("the server refused a job for good: {status} {text}");
            }
            *s.posts.refused.entry(status).or_default() += 1;
            if s.refusal_samples.len() < 5 {
                s.refusal_samples
                    .push(format!("t={t:.1}s {status} {}", text.trim()));
            }
            s.suspect.push((sent, nodes));
            Duration::from_millis(500)
        }
        PostOutcome::NoAnswer(error) => {
            s.posts.no_answer += 1;
            if s.refusal_samples.len() < 5 {
                s.refusal_samples
                    .push(format!("t={t:.1}s no answer: {error}"));
            }
            s.suspect.push((sent, nodes));
            Duration::from_millis(200)
        }
    })
}

/// Follows every unfinished job (a GET each per pass) and, every few passes, lists all
/// jobs to adopt ones the harness did not know. Runs until `stop` turns true.
pub async fn poll(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mut pass = 0u64;
    loop {
        let open: Vec<String> = {
            let s = ctx.lock();
            s.jobs
                .iter()
                .filter(|(_, j)| !j.terminal)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in open {
            if let Ok(Some(view)) = ctx.api.job(&id).await {
                ctx.lock().observe(&id, &view);
            }
        }
        if let Ok(states) = ctx.api.node_states().await {
            ctx.lock().available = states
                .into_iter()
                .filter(|(_, a)| a == "available")
                .map(|(n, _)| n)
                .collect();
        }
        if pass.is_multiple_of(8) {
            adopt(&ctx).await;
        }
        pass += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Lists every job; tracks the ones not known yet and releases the suspect nodes of
/// POSTs sent before the list was asked for (any job they made is in it).
pub async fn adopt(ctx: &Ctx) -> bool {
    let asked = Instant::now();
    let Ok(list) = ctx.api.jobs().await else {
        return false;
    };
    let new: Vec<String> = {
        let mut s = ctx.lock();
        s.suspect.retain(|(sent, _)| *sent >= asked);
        list.into_iter()
            .filter(|(id, _)| !s.jobs.contains_key(id))
            .map(|(id, _)| id)
            .collect()
    };
    for id in new {
        ctx.lock().jobs.insert(
            id.clone(),
            Tracked {
                nodes: Vec::new(),
                status: "unknown".to_owned(),
                acked: false,
                terminal: false,
                seen: Vec::new(),
            },
        );
        if let Ok(Some(view)) = ctx.api.job(&id).await {
            ctx.lock().observe(&id, &view);
        }
    }
    true
}

/// Re-reads the marker directory every 20 ms (a full scan every second) until `stop`
/// turns true.
pub async fn watch_markers(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mut pass = 0u64;
    loop {
        ctx.lock().markers.refresh(pass.is_multiple_of(50));
        pass += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
