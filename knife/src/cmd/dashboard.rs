//! `dashboard` (ours, issue 16): asks the server, with a signed request, for a one-time
//! login link to its web dashboard, and prints it (and opens it in the browser when
//! asked). The link works once, for a minute; the session it starts lasts eight hours.

use anyhow::Context as _;

use super::Context;
use crate::exit::Exit;

/// `dashboard`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also open the link in a browser ($BROWSER, else the desktop's default)
    #[arg(long)]
    pub open: bool,
}

/// Runs `dashboard`.
pub async fn run(ctx: &Context, a: Args) -> anyhow::Result<Exit> {
    let url = ctx.client.url("pushy/dashboard/logins");
    let answer = ctx
        .client
        .post_json(url, &serde_json::json!({}))
        .await
        .context("asking for a dashboard login link")?;
    let link = answer["url"].as_str().unwrap_or_default().to_owned();
    if link.is_empty() {
        anyhow::bail!("the server's answer has no login link: {answer}");
    }
    if ctx.structured() {
        ctx.print(&answer);
    } else {
        println!("{link}");
        eprintln!(
            "Open it within {} s; it works once.",
            answer["expires_in"].as_u64().unwrap_or(60)
        );
    }
    if a.open {
        // $BROWSER when set (as other CLIs honour it), else the desktop's own opener
        // (xdg-open and friends, `open` on macOS, the shell on Windows). The browser is
        // the user's own business: a failure to start it is reported, the link is
        // printed either way.
        let opened = match std::env::var("BROWSER") {
            Ok(browser) if !browser.is_empty() => open::with_detached(&link, browser),
            _ => open::that_detached(&link),
        };
        if let Err(e) = opened {
            eprintln!("could not open a browser: {e}");
        }
    }
    Ok(Exit::Success)
}
