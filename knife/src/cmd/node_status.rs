//! `node status [NODE…]` (ops.md §7.6): `NAME<TAB>availability` per node. No arguments:
//! every node the server has state for. An argument containing `:` is a search (knife-push
//! called a helper that did not exist; here it goes through [`crate::search`]).

use anyhow::Context as _;
use serde_json::Value;

use super::Context;
use crate::exit::Exit;
use crate::search;

/// `node status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Node names, or searches (an argument with `:`, e.g. `name:web*`)
    #[arg(value_name = "NODE")]
    pub nodes: Vec<String>,
}

/// Runs `node status`.
pub async fn run(ctx: &Context, a: Args) -> anyhow::Result<Exit> {
    let states = if a.nodes.is_empty() {
        let mut list = ctx
            .client
            .get_json(ctx.client.url("pushy/node_states"))
            .await
            .context("listing node states")?;
        if let Some(items) = list.as_array_mut() {
            items.sort_by(|x, y| {
                x["node_name"]
                    .as_str()
                    .unwrap_or_default()
                    .cmp(y["node_name"].as_str().unwrap_or_default())
            });
        }
        list
    } else {
        let mut names = Vec::new();
        for arg in a.nodes {
            if arg.contains(':') {
                let found = search::nodes(
                    &ctx.client,
                    ctx.config.local_chef_dir.as_deref(),
                    &ctx.config.org,
                    &arg,
                )
                .await
                .with_context(|| format!("searching for nodes matching {arg:?}"))?;
                names.extend(found);
            } else {
                names.push(arg);
            }
        }
        let mut states = Vec::new();
        for name in crate::job::dedup(names) {
            let url = ctx.client.url_segments(&["pushy", "node_states", &name]);
            let state = ctx
                .client
                .get_json(url)
                .await
                .with_context(|| format!("reading the state of {name}"))?;
            states.push(state);
        }
        Value::Array(states)
    };
    if ctx.structured() {
        ctx.print(&states);
    } else {
        for s in states.as_array().into_iter().flatten() {
            println!(
                "{}\t{}",
                s["node_name"].as_str().unwrap_or_default(),
                s["availability"].as_str().unwrap_or("unavailable"),
            );
        }
    }
    Ok(Exit::Success)
}
