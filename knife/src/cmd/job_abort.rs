//! `job abort ID` (ours: `POST .../pushy/jobs/ID/abort`): stops a job that has not
//! finished; the nodes' commands are killed. A job that already finished is exit code 9.

use anyhow::Context as _;
use reqwest::Method;

use super::{Context, job_id};
use crate::exit::Exit;

/// `job abort`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job id (as `job start` prints it) or job URL
    pub id: String,
}

/// Runs `job abort`.
pub async fn run(ctx: &Context, a: Args) -> anyhow::Result<Exit> {
    let id = job_id(&a.id)?;
    let url = ctx.client.url(&format!("pushy/jobs/{id}/abort"));
    let resp = ctx
        .client
        .send(Method::POST, url.clone(), None, "application/json", None)
        .await
        .with_context(|| format!("aborting job {id}"))?;
    let text = resp.text().await.context("reading the aborted job")?;
    let job: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| crate::api::Error::Unexpected {
            url: url.to_string(),
            reason: format!("not JSON ({e})"),
        })?;
    ctx.say(&format!("Aborted.  Job ID: {id}"));
    ctx.print(&job);
    Ok(Exit::Success)
}
