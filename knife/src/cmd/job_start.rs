//! `job start COMMAND [NODES…]` (ops.md §7.2): create the job, print `Started.  Job ID: …`,
//! follow its event feed, print the final job as `job status` does, exit by its outcome.
//!
//! Fixed from knife-push: no fallback to the v1 body on a 400 (the server's message is
//! reported and nothing is re-sent without options); `--with-env` must be JSON; the file
//! goes as `base64:`; "in progress" counts nodes; exit 0 only when every node succeeded.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Map, Value, json};

use super::Context;
use crate::api;
use crate::display::Display;
use crate::exit::Exit;
use crate::feed::Progress;
use crate::job::{JobRequest, Quorum, dedup, encode_file, parse_env, parse_job_ref};
use crate::wait::{self, End};
use crate::{UsageError, search};

/// Time allowed past `--timeout` for voting and the final report.
const WAIT_GRACE: Duration = Duration::from_secs(30);

/// `job start`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The command: a whitelist key on the nodes (or the command line itself, when a
    /// node's whitelist allows it)
    pub command: String,
    /// Nodes to run it on
    #[arg(value_name = "NODES")]
    pub nodes: Vec<String>,
    /// Run on the nodes this search finds instead of NODES: Chef Server's node search, or
    /// with --local-dir `*:*` / `name:GLOB` over the local key directory's clients
    #[arg(short = 's', long, value_name = "QUERY", conflicts_with = "nodes")]
    pub search: Option<String>,
    /// Nodes that must agree to run the command: a count N, or N% of the nodes (rounded
    /// up)
    #[arg(short = 'q', long, value_name = "N|N%", default_value = "100%")]
    pub quorum: Quorum,
    /// Run timeout in seconds, enforced by the server (default there: 3600); this command
    /// also stops waiting 30 s after it (exit 4)
    #[arg(short = 't', long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Print the job id and exit without waiting
    #[arg(short = 'b', long)]
    pub nowait: bool,
    /// Environment for the command, a JSON object of strings: '{"NAME":"value"}'
    #[arg(long, value_name = "JSON", value_parser = parse_env)]
    pub with_env: Option<Map<String, Value>>,
    /// Working directory for the command on the nodes
    #[arg(long, value_name = "DIR")]
    pub in_dir: Option<String>,
    /// Run the command as this user on the nodes
    #[arg(long, value_name = "USER")]
    pub as_user: Option<String>,
    /// A file to deliver to the nodes ($CHEF_PUSH_JOB_FILE names it there); sent
    /// base64-encoded, at most 100000 bytes
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Capture the command's stdout and stderr (read them with `job output`)
    #[arg(long)]
    pub capture: bool,
    /// Print the command's output as it runs, each line prefixed with its node (`web01 |
    /// …`, stderr as `web01 ! …`; coloured on a terminal). Implies --capture; nodes
    /// running the Ruby client send their output only at the end
    #[arg(long, conflicts_with = "nowait")]
    pub stream: bool,
    /// Rate control: run the command on at most this many nodes at once (N, or N% of the
    /// nodes); the others wait for a slot (state `waiting`)
    #[arg(long, value_name = "N|N%")]
    pub max_concurrency: Option<Quorum>,
    /// Rate control: after more than this many failed nodes (N, or N% of the nodes), start
    /// no further node; those not started are `skipped` and the job ends `stopped`
    /// (exit 10). Needs --max-concurrency to hold nodes back
    #[arg(long, value_name = "N|N%")]
    pub max_errors: Option<Quorum>,
    /// Run on any N of the nodes: the server asks available nodes in order and moves on
    /// when one refuses or is busy or offline; `quorum_failed` only when fewer than N can
    /// run. Replaces --quorum
    #[arg(long, value_name = "N", conflicts_with = "quorum")]
    pub run_on_any: Option<u64>,
    /// How many nodes must succeed for the job to count as a success (N, or N% of the
    /// nodes); the job document's `verdict` and the exit code (0 or 1) follow it
    #[arg(long, value_name = "N|N%")]
    pub success_threshold: Option<Quorum>,
    /// Ignored (knife-push's polling period): progress comes from the server's event feed
    #[arg(long, value_name = "SECONDS", hide = true)]
    pub poll_interval: Option<f64>,
}

/// Runs `job start`.
pub async fn run(ctx: &Context, a: Args) -> anyhow::Result<Exit> {
    let file = match &a.file {
        Some(path) => Some(encode_file(&std::fs::read(path).map_err(|e| {
            UsageError(format!("cannot read --file {}: {e}", path.display()))
        })?)),
        None => None,
    };
    let nodes = match &a.search {
        Some(q) => {
            let found = search::nodes(
                &ctx.client,
                ctx.config.local_chef_dir.as_deref(),
                &ctx.config.org,
                q,
            )
            .await
            .with_context(|| format!("searching for nodes matching {q:?}"))?;
            if found.is_empty() {
                return Err(UsageError(format!("No nodes match the search {q:?}.")).into());
            }
            found
        }
        None => dedup(a.nodes),
    };
    if nodes.is_empty() {
        return Err(UsageError(
            "No nodes to run job on. Specify nodes as arguments or use -s to specify a search query."
                .to_owned(),
        )
        .into());
    }
    let mut controls = Map::new();
    for (key, amount) in [
        ("max_concurrency", a.max_concurrency),
        ("max_errors", a.max_errors),
        ("success_threshold", a.success_threshold),
    ] {
        if let Some(amount) = amount {
            controls.insert(key.into(), amount.as_json());
        }
    }
    if let Some(n) = a.run_on_any {
        controls.insert("run_on_any".into(), json!(n));
    }
    let request = JobRequest {
        command: a.command,
        quorum: a.quorum.for_nodes(nodes.len()),
        nodes,
        capture: a.capture || a.stream,
        env: a.with_env.unwrap_or_default(),
        file,
        dir: a.in_dir,
        user: a.as_user,
        run_timeout: a.timeout,
        controls,
    };
    let created = ctx
        .client
        .post_json(ctx.client.url("pushy/jobs"), &request.body())
        .await
        .map_err(refused)?;
    let uri = created["uri"].as_str().unwrap_or_default();
    let id = parse_job_ref(uri).ok_or_else(|| api::Error::Unexpected {
        url: ctx.client.url("pushy/jobs").to_string(),
        reason: format!("no job URI in {created}"),
    })?;
    ctx.say(&format!("Started.  Job ID: {id}"));
    if a.nowait {
        if ctx.structured() {
            ctx.print(&json!({"id": id.as_str(), "uri": uri}));
        }
        return Ok(Exit::Success);
    }

    let deadline = a
        .timeout
        .map(|t| tokio::time::Instant::now() + Duration::from_secs(t) + WAIT_GRACE);
    let mut progress = Progress::new(request.nodes.len());
    let mut display = Display::new(
        request.nodes.len(),
        std::io::stderr().is_terminal(),
        ctx.structured(),
    );
    let mut live = a.stream.then(|| wait::Live {
        colour: wait::colour(ctx.structured()),
        ..wait::Live::default()
    });
    let end = wait::follow(
        &ctx.client,
        &id,
        &mut progress,
        &mut display,
        live.as_mut(),
        deadline,
    )
    .await;
    display.finish(&progress);
    let end = end.with_context(|| format!("following job {id}"))?;
    let job = ctx
        .client
        .get_json(ctx.client.url(&format!("pushy/jobs/{id}")))
        .await
        .with_context(|| format!("reading job {id}"))?;
    ctx.print(&job);
    if end == End::GaveUp {
        eprintln!(
            "ERROR: stopped waiting for job {id} ({} s after its --timeout); it is still {}. Follow it with `push-jobs job status {id}`.",
            WAIT_GRACE.as_secs(),
            job["status"].as_str().unwrap_or("unknown"),
        );
        return Ok(Exit::TimedOut);
    }
    Ok(Exit::for_job(&job))
}

/// A failed POST, explained. knife-push took any 400 as "a 1.x server", re-sent a v1 body
/// and silently dropped `--in-dir`, `--as-user` and `--capture` (ops.md §7.2 step 4); here
/// the server's message is the error.
fn refused(e: api::Error) -> anyhow::Error {
    let hint = match (e.status(), e.server_message()) {
        (Some(400), Some("invalid key supplied")) => {
            "the server refused the job: it does not accept one of the options sent (a Push Jobs 1.x server?); nothing was re-sent without them"
        }
        (Some(400), _) => "the server refused the job",
        _ => "starting the job",
    };
    anyhow::Error::new(e).context(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_a_refused_body_is_explained_and_never_resent() {
        let e = refused(api::Error::Status {
            method: "POST",
            url: "http://x/organizations/o/pushy/jobs".into(),
            status: 400,
            message: "invalid key supplied".into(),
        });
        let text = format!("{e:#}");
        assert!(text.contains("nothing was re-sent"), "{text}");
        assert!(text.ends_with("400: invalid key supplied"), "{text}");
        assert_eq!(Exit::for_error(&e), Exit::Usage);
        let e = refused(api::Error::Status {
            method: "POST",
            url: "u".into(),
            status: 403,
            message: String::new(),
        });
        assert_eq!(Exit::for_error(&e), Exit::Auth);
    }
}
