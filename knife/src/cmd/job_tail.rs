//! `job tail ID` (ours, issue 15 §2): follow a job that is already running and print its
//! nodes' output as it arrives, prefixed with each node, as `job start --stream` does;
//! exits as `job start` would for the job's outcome.

use std::io::IsTerminal as _;

use anyhow::Context as _;

use super::{Context, job_id};
use crate::display::Display;
use crate::exit::Exit;
use crate::feed::Progress;
use crate::wait::{self, Live};

/// `job tail`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job id (as `job start` prints it) or job URL
    pub id: String,
}

/// Runs `job tail`.
pub async fn run(ctx: &Context, a: Args) -> anyhow::Result<Exit> {
    let id = job_id(&a.id)?;
    let job_url = ctx.client.url(&format!("pushy/jobs/{id}"));
    // The job's size for the progress display, and a 404 for an unknown id up front.
    let job = ctx
        .client
        .get_json(job_url.clone())
        .await
        .with_context(|| format!("reading job {id}"))?;
    let mut progress = Progress::new(0);
    progress.apply_job(&job);
    let total = progress.counts().total;
    let mut display = Display::new(total, std::io::stderr().is_terminal(), ctx.structured());
    let mut live = Live {
        colour: wait::colour(ctx.structured()),
        ..Live::default()
    };
    // A finished job has no live output left to show: its captured output is `job
    // output`'s. Either way the job as it ended decides the exit code.
    if progress.finished().is_none() {
        wait::follow(
            &ctx.client,
            &id,
            &mut progress,
            &mut display,
            Some(&mut live),
            None,
        )
        .await
        .with_context(|| format!("following job {id}"))?;
    }
    display.finish(&progress);
    let job = ctx
        .client
        .get_json(job_url)
        .await
        .with_context(|| format!("reading job {id}"))?;
    if ctx.structured() {
        ctx.print(&job);
    }
    Ok(Exit::for_job(&job))
}
