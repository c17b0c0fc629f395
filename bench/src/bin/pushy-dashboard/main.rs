//! `pushy-dashboard`: what the web dashboard costs a browser, and its server, with a big
//! fleet. `bench/dashboard` starts the server and a `pushy-load` fleet and runs this: it
//! drives headless chromium through chromedriver, logs in through a one-time link as a
//! person would, and prints one JSON object: how long until the nodes view lists every
//! node, the main-thread time of one refresh of each view (its poll: fetch, parse and
//! redraw; and the redraw alone), each view's API answer size, and the page's JS heap.
//! It can then keep the nodes view open (`--hold`) while the script samples the server.
//!
//! The timings are read inside the page (`performance.now()` around the page's own
//! `app.page.refresh()` / `render()`), so they leave out WebDriver's round trips.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Measures the dashboard in headless chromium.
#[derive(Parser, Debug)]
struct Args {
    /// A one-time login link (`POST …/pushy/dashboard/logins`).
    #[arg(long)]
    login_url: String,
    /// Nodes the fleet has: the nodes view is ready when it lists them all.
    #[arg(long)]
    nodes: usize,
    /// Jobs to start from the page (one node each, round robin) before the jobs view is
    /// measured.
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// Refreshes timed per view (the median is reported).
    #[arg(long, default_value_t = 10)]
    samples: usize,
    /// Seconds to keep the nodes view open (polling) at the end.
    #[arg(long, default_value_t = 0)]
    hold: u64,
    /// Created when the hold begins, so a script knows when to sample the server.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Longest wait for the page, seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    #[arg(long, default_value = "/usr/bin/chromium")]
    chromium: String,
    #[arg(long, default_value = "/usr/bin/chromedriver")]
    chromedriver: String,
}

/// chromedriver, killed on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _driver = Driver(
        Command::new(&args.chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", args.chromedriver))?,
    );
    let limit = Duration::from_secs(args.timeout);
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("chromedriver did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": args.chromium,
               "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1280,800",
                        "--enable-precise-memory-info"]}),
    );
    let c = ClientBuilder::native()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .context("a chromium session")?;
    c.update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
        Some(limit),
        Some(limit),
        None,
    ))
    .await?;
    let result = measure(&c, &args, limit).await;
    let _ = c.close().await;
    let report = result?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn measure(c: &Client, args: &Args, limit: Duration) -> anyhow::Result<Value> {
    c.goto(&args.login_url).await?;
    c.wait()
        .at_most(limit)
        .for_element(Locator::Id("login-continue"))
        .await?
        .click()
        .await?;
    // From the click: the page loads, asks for the session and the node list, draws it.
    let clicked = Instant::now();
    let rows = "document.querySelectorAll('#nodes-table tbody tr').length";
    wait_count(c, rows, args.nodes, limit).await?;
    let first_render_ms = clicked.elapsed().as_secs_f64() * 1000.0;
    let nodes = timings(c, "node_states", args.samples).await?;

    let posting = Instant::now();
    if args.jobs > 0 {
        start_jobs(c, args.jobs, args.nodes).await?;
    }
    let jobs_started_per_s = args.jobs as f64 / posting.elapsed().as_secs_f64();
    c.execute("location.hash = '#jobs'", vec![]).await?;
    let job_rows = "document.querySelectorAll('#jobs-table tbody tr').length";
    wait_count(c, job_rows, args.jobs.min(200), limit).await?;
    let jobs = timings(c, "jobs", args.samples).await?;
    let heap = c
        .execute("return performance.memory.usedJSHeapSize", vec![])
        .await?;

    c.execute("location.hash = '#nodes'", vec![]).await?;
    wait_count(c, rows, args.nodes, limit).await?;
    if args.hold > 0 {
        if let Some(f) = &args.ready_file {
            std::fs::write(f, "")?;
        }
        tokio::time::sleep(Duration::from_secs(args.hold)).await;
    }
    Ok(json!({
        "nodes": args.nodes,
        "jobs": args.jobs,
        "jobs_started_from_the_page_per_s": jobs_started_per_s.round(),
        "nodes_view_first_render_ms": first_render_ms.round(),
        "nodes_view": nodes,
        "jobs_view": jobs,
        "js_heap_mib": heap.as_f64().map(|b| (b / 1048576.0 * 10.0).round() / 10.0),
    }))
}

/// Polls `expr` (a number) in the page until it reaches `want`.
async fn wait_count(c: &Client, expr: &str, want: usize, limit: Duration) -> anyhow::Result<()> {
    let since = Instant::now();
    loop {
        let n = c.execute(&format!("return {expr}"), vec![]).await?;
        if n.as_u64().unwrap_or(0) >= want as u64 {
            return Ok(());
        }
        if since.elapsed() > limit {
            bail!("{expr} stayed at {n} of {want}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The view's refresh timed in the page `samples` times: the whole poll (fetch, parse,
/// redraw) and the redraw of an unchanged answer alone, median milliseconds; and the
/// answer's size.
async fn timings(c: &Client, path: &str, samples: usize) -> anyhow::Result<Value> {
    let script = r#"
        const [path, samples, done] = arguments;
        const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
        (async () => {
          const poll = [], redraw = [];
          let bytes = 0;
          for (let i = 0; i < samples; i++) {
            let t = performance.now();
            await app.page.refresh();
            poll.push(performance.now() - t);
            const answer = await fetch(`${BASE}/api/${path}`, { credentials: "same-origin" });
            const text = await answer.text();
            bytes = text.length;
            const data = JSON.parse(text);
            t = performance.now();
            app.page.render(data);
            redraw.push(performance.now() - t);
          }
          const tenth = (x) => Math.round(x * 10) / 10;
          done({ poll_ms: tenth(median(poll)), redraw_ms: tenth(median(redraw)), answer_kib: Math.round(bytes / 1024) });
        })().catch((e) => done({ error: String(e) }));
    "#;
    let out = c
        .execute_async(script, vec![json!(path), json!(samples)])
        .await?;
    if let Some(e) = out.get("error") {
        bail!("timing {path}: {e}");
    }
    Ok(out)
}

/// Starts `jobs` jobs through the page's own API (the session cookie and CSRF token).
async fn start_jobs(c: &Client, jobs: usize, nodes: usize) -> anyhow::Result<()> {
    let script = r#"
        const [jobs, nodes, done] = arguments;
        (async () => {
          for (let i = 0; i < jobs; i++) {
            await api("jobs", { method: "POST", body: { command: "chef-client", nodes: [`node${i % nodes}`] } });
          }
          done(null);
        })().catch((e) => done(String(e)));
    "#;
    let out = c
        .execute_async(script, vec![json!(jobs), json!(nodes)])
        .await?;
    if !out.is_null() {
        bail!("starting jobs: {out}");
    }
    Ok(())
}
