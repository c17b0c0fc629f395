//! `job list` (ops.md §7.4): every job of the organization, without nodes.

use anyhow::Context as _;

use super::Context;
use crate::exit::Exit;

/// `job list` takes no arguments.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `job list`.
pub async fn run(ctx: &Context, _a: Args) -> anyhow::Result<Exit> {
    let jobs = ctx
        .client
        .get_json(ctx.client.url("pushy/jobs"))
        .await
        .context("listing jobs")?;
    ctx.print(&jobs);
    Ok(Exit::Success)
}
