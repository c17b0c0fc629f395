//! `job output ID NODE… [--channel stdout|stderr]` (ops.md §7.5): the captured output,
//! byte for byte. Several nodes are allowed (knife-push used only the first); each is
//! headed `==> NODE <==`. A node without output is reported and gives exit code 7.

use std::io::Write as _;

use anyhow::Context as _;
use clap::ValueEnum;
use serde_json::{Map, Value, json};

use super::{Context, job_id};
use crate::exit::Exit;

/// `job output`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job id (as `job start` prints it) or job URL
    pub id: String,
    /// Nodes whose output to print
    #[arg(required = true, value_name = "NODE")]
    pub nodes: Vec<String>,
    /// Which stream
    #[arg(long, value_enum, default_value_t = Channel::Stdout)]
    pub channel: Channel,
}

/// `--channel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Channel {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Channel::Stdout => "stdout",
            Channel::Stderr => "stderr",
        }
    }
}

/// Runs `job output`.
pub async fn run(ctx: &Context, a: Args) -> anyhow::Result<Exit> {
    let id = job_id(&a.id)?;
    let channel = a.channel.name();
    let several = a.nodes.len() > 1;
    let mut exit = Exit::Success;
    let mut collected = Map::new();
    for (i, node) in a.nodes.iter().enumerate() {
        let url = ctx
            .client
            .url_segments(&["pushy", "jobs", id.as_str(), "output", node, channel]);
        let (headers, bytes) = match ctx.client.get_bytes(url, "application/octet-stream").await {
            Ok(r) => r,
            Err(e) if e.status() == Some(404) => {
                eprintln!(
                    "ERROR: no {channel} for node {node} in job {id} (the job was not started with --capture, the node is not in it, or it has not finished)"
                );
                exit = Exit::NotFound;
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading the {channel} of {node}"));
            }
        };
        let truncated = headers
            .get("x-push-output-truncated")
            .is_some_and(|v| v.as_bytes() == b"true");
        if truncated {
            eprintln!(
                "WARNING: the {channel} of {node} was too large for one message; only its tail was kept"
            );
        }
        if ctx.structured() {
            collected.insert(
                node.clone(),
                json!({"output": String::from_utf8_lossy(&bytes), "truncated": truncated}),
            );
            continue;
        }
        let mut out = std::io::stdout().lock();
        if several {
            let sep = if i == 0 { "" } else { "\n" };
            writeln!(out, "{sep}==> {node} <==").context("writing to stdout")?;
        }
        out.write_all(&bytes).context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    if ctx.structured() {
        ctx.print(&Value::Object(collected));
    }
    Ok(exit)
}
