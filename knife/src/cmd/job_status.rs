//! `job status [ID]` (ops.md §7.3): one job with its nodes by status; with no id, the job
//! list (as knife-push does).

use anyhow::Context as _;

use super::{Context, job_id};
use crate::exit::Exit;

/// `job status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job id (as `job start` prints it) or job URL; none lists every job
    pub id: Option<String>,
}

/// Runs `job status`.
pub async fn run(ctx: &Context, a: Args) -> anyhow::Result<Exit> {
    let Some(id) = a.id else {
        return super::job_list::run(ctx, super::job_list::Args {}).await;
    };
    let id = job_id(&id)?;
    let job = ctx
        .client
        .get_json(ctx.client.url(&format!("pushy/jobs/{id}")))
        .await
        .with_context(|| format!("reading job {id}"))?;
    ctx.print(&job);
    Ok(Exit::Success)
}
