//! The dashboard in a real browser (issue 16): Debian's headless chromium, driven through
//! chromedriver, against the server with real agents. The nodes view shows them
//! available, filters them and follows one that goes away; a job started from the page
//! on the nodes a search found shows them running, then reaches `complete` live; live
//! output appears while a job runs; abort works; a reader sees no start form or abort
//! button; a forged session is refused and an ended one stops the page.
//! Screenshots of the three views at 1280×800 go to `target/screenshots/` (not committed)
//! for a person to look at. `scripts/deps` installs chromium and chromium-driver.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::agents::{Rig, WAIT, open_gate, rig};
use common::{ADMIN_USER, NORMAL_USER, ORG};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Option<Driver> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            // CI installs them (scripts/deps): there a missing browser is a failure, not
            // a test that quietly passes.
            assert!(
                std::env::var_os("CI").is_none(),
                "{CHROMIUM} or {CHROMEDRIVER} missing in CI (scripts/deps installs them)"
            );
            eprintln!("SKIPPED: {CHROMIUM} or {CHROMEDRIVER} missing (scripts/deps installs them)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(Driver { child, url })
    }

    /// A fresh headless browser (its own profile: no cookies) with a 1280×800 window.
    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,800"],
            }),
        );
        let client = ClientBuilder::native()
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a chromium session");
        // The window's own bars take part of its height: size it so the page itself
        // (and so each screenshot) is 1280×800.
        let bars = client
            .execute("return window.outerHeight - window.innerHeight", vec![])
            .await
            .unwrap()
            .as_u64()
            .unwrap_or(0);
        client
            .set_window_size(1280, 800 + bars as u32)
            .await
            .unwrap();
        client
    }
}

/// Where screenshots go: `target/screenshots/` beside the test binaries.
fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shoot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    // A PNG's size is in its header (IHDR: width, height, big-endian, from byte 16).
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((size(16), size(20)), (1280, 800), "{name} screenshot size");
    std::fs::write(screenshots().join(format!("dashboard-{name}.png")), png).unwrap();
}

/// Opens a one-time login link for `who` (as `push-jobs dashboard` would print it).
async fn log_in(c: &Client, r: &Rig, who: &str) {
    let reply =
        r.h.call(
            "POST",
            &format!("/organizations/{ORG}/pushy/dashboard/logins"),
            "{}",
            who,
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let url = reply.json()["url"].as_str().unwrap().to_owned();
    let path = &url[url.find("/organizations/").unwrap()..];
    c.goto(&format!("{}{path}", r.base)).await.unwrap();
    // The link's page asks before it uses the one-time link (a link preview must not).
    wait_for(c, "#login-continue").await.click().await.unwrap();
    wait_for(c, "#view-nodes").await;
}

/// Waits until `css` matches an element (the page updates live, never by reloading).
async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} never appeared: {e}"))
}

/// Reads with `read` every 100 ms until `done` holds for what it read (the page updates
/// live, never by reloading).
async fn wait_until<T: std::fmt::Debug>(
    what: &str,
    mut read: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = read().await;
        if done(&now) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the element's text contains `want`.
async fn wait_text(c: &Client, css: &str, want: &str) {
    let text = async || match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let what = format!("{css} never said {want:?}");
    wait_until(&what, text, |t| t.contains(want)).await;
}

async fn job_status(c: &Client) -> String {
    let el = c.find(Locator::Css("#job-status")).await.unwrap();
    el.attr("data-status").await.unwrap().unwrap_or_default()
}

async fn wait_status(c: &Client, want: &str) {
    let what = format!("job status never {want}");
    wait_until(&what, async || job_status(c).await, |s| s == want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_nodes_runs_and_aborts_jobs_in_a_real_browser() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let r = rig().await;
    let _a = r.start_agent("dash-a", "");
    let b = r.start_agent("dash-b", "");
    r.wait_available("dash-a").await;
    r.wait_available("dash-b").await;
    let c = driver.browser().await;
    log_in(&c, &r, ADMIN_USER).await;

    // Nodes view: both agents, available, updated without a reload.
    for n in ["dash-a", "dash-b"] {
        wait_for(
            &c,
            &format!("#nodes-table tr[data-node='{n}'][data-availability='available']"),
        )
        .await;
    }
    shoot(&c, "nodes").await;

    // Filters: by name, by availability.
    let shown = async |node: &str| {
        let css = format!("#nodes-table tr[data-node='{node}']");
        c.find(Locator::Css(&css))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    };
    let filter = c.find(Locator::Css("#node-filter")).await.unwrap();
    filter.send_keys("DASH-A").await.unwrap();
    assert!(shown("dash-a").await && !shown("dash-b").await);
    filter.clear().await.unwrap();
    // `clear` fires no input event: a key does.
    filter.send_keys(" ").await.unwrap();
    assert!(shown("dash-a").await && shown("dash-b").await);
    let by_state = c.find(Locator::Css("#node-state-filter")).await.unwrap();
    by_state.select_by_value("unavailable").await.unwrap();
    assert!(!shown("dash-a").await && !shown("dash-b").await);
    by_state.select_by_value("all").await.unwrap();
    assert!(shown("dash-a").await);

    // Start a job from the page: its view shows the nodes running, then, when the gate
    // opens, follows the job to `complete`, all without a reload.
    let start_gate = r.h.tmp.path().join("start-gate");
    c.find(Locator::Css("#start-command"))
        .await
        .unwrap()
        .send_keys(&format!("gate {}", start_gate.display()))
        .await
        .unwrap();
    // The nodes come from a search (the embedded server's is by name), seen before the
    // job starts: Enter in the search field adds the matches and starts nothing.
    c.find(Locator::Css("#start-search"))
        .await
        .unwrap()
        .send_keys("name:dash-*\u{E007}")
        .await
        .unwrap();
    wait_text(&c, "#start-search-result", "2 nodes matched name:dash-*").await;
    let picked = c
        .find(Locator::Css("#start-nodes"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(picked.as_deref(), Some("dash-a, dash-b"));
    // Enter searched and did not submit (a submit without nodes would say so here).
    assert!(
        !c.find(Locator::Css("#start-error"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    c.find(Locator::Css("#start-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, "#job-status").await;
    for n in ["dash-a", "dash-b"] {
        wait_for(
            &c,
            &format!("#job-nodes tr[data-node='{n}'][data-state='running']"),
        )
        .await;
    }
    wait_status(&c, "running").await;
    open_gate(&start_gate, 0);
    wait_status(&c, "complete").await;
    for n in ["dash-a", "dash-b"] {
        wait_for(
            &c,
            &format!("#job-nodes tr[data-node='{n}'][data-state='succeeded']"),
        )
        .await;
    }
    // The counts follow the rows (redrawn at most every 100 ms).
    wait_text(&c, "#job-counts", "2 succeeded").await;
    shoot(&c, "job").await;
    let url = c.current_url().await.unwrap();
    let job = url
        .fragment()
        .unwrap()
        .strip_prefix("job/")
        .unwrap()
        .to_owned();
    let doc =
        r.h.call(
            "GET",
            &format!("/organizations/{ORG}/pushy/jobs/{job}"),
            "",
            ADMIN_USER,
        )
        .await;
    assert_eq!(
        doc.json()["nodes"],
        json!({"succeeded": ["dash-a", "dash-b"]})
    );

    // Live output: a job that prints, then waits for a gate, shows its line in the job
    // view while it runs (our agents stream it; the page appends each `run_output` event).
    r.wait_available("dash-a").await;
    let hold = r.h.tmp.path().join("hold-gate");
    let body = json!({"command": format!("hold {}", hold.display()), "nodes": ["dash-a"],
                      "capture_output": true});
    let holding = r.h.create_job(&body.to_string(), ADMIN_USER).await;
    let holding_id = holding.rsplit('/').next().unwrap().to_owned();
    c.goto(&format!(
        "{}/organizations/{ORG}/pushy/dashboard#job/{holding_id}",
        r.base
    ))
    .await
    .unwrap();
    let panel = "#job-output [data-test='output-panel'][data-node='dash-a']";
    let deadline = Instant::now() + WAIT;
    let mut seen = String::new();
    while !seen.contains("holding") {
        assert!(
            Instant::now() < deadline,
            "no live output in the job view: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(p) = c.find(Locator::Css(panel)).await {
            seen = p.text().await.unwrap_or_default();
        }
    }
    assert_ne!(job_status(&c).await, "complete", "seen while the job ran");
    open_gate(&hold, 0);
    wait_text(&c, panel, "released").await;
    wait_status(&c, "complete").await;

    // Jobs view lists it.
    c.goto(&format!(
        "{}/organizations/{ORG}/pushy/dashboard#jobs",
        r.base
    ))
    .await
    .unwrap();
    let row = wait_for(&c, &format!("#jobs-table tr[data-job='{job}']")).await;
    let text = row.text().await.unwrap();
    assert!(text.contains(ADMIN_USER), "who started it: {text}");
    assert!(text.contains("2 succeeded"), "{text}");
    shoot(&c, "jobs").await;

    // Abort a job that waits on a gate.
    r.wait_available("dash-a").await;
    let gate = r.h.tmp.path().join("browser-gate");
    let body = json!({"command": format!("gate {}", gate.display()), "nodes": ["dash-a"]});
    let held = r.h.create_job(&body.to_string(), ADMIN_USER).await;
    let held_id = held.rsplit('/').next().unwrap().to_owned();
    r.h.wait_for_job(&held, "running", WAIT).await;
    c.goto(&format!(
        "{}/organizations/{ORG}/pushy/dashboard#job/{held_id}",
        r.base
    ))
    .await
    .unwrap();
    wait_status(&c, "running").await;
    wait_for(&c, "#abort-button:not([hidden])")
        .await
        .click()
        .await
        .unwrap();
    wait_for(&c, "#abort-confirm-yes")
        .await
        .click()
        .await
        .unwrap();
    wait_status(&c, "aborted").await;
    open_gate(&gate, 0);

    // A reader sees everything read-only: no start form, no abort button.
    let reader = driver.browser().await;
    log_in(&reader, &r, NORMAL_USER).await;
    wait_for(&reader, "#nodes-table tr[data-node='dash-b']").await;
    wait_for(&reader, "#read-only-badge:not([hidden])").await;
    assert!(
        reader.find(Locator::Css("#start-form")).await.is_err(),
        "a reader has no start form"
    );
    reader
        .goto(&format!(
            "{}/organizations/{ORG}/pushy/dashboard#job/{job}",
            r.base
        ))
        .await
        .unwrap();
    wait_status(&reader, "complete").await;
    assert!(
        reader.find(Locator::Css("#abort-button")).await.is_err(),
        "a reader has no abort"
    );
    reader.close().await.unwrap();

    // A forged session cookie: the page refuses it and says how to log in again.
    let forged = driver.browser().await;
    forged
        .goto(&format!("{}/pushy/_status", r.base))
        .await
        .unwrap();
    // A page of the same site plants it (a forged cookie needs no HttpOnly).
    forged
        .execute(
            "document.cookie = 'pushy_dashboard=forged.value; path=/'",
            vec![],
        )
        .await
        .unwrap();
    forged
        .goto(&format!("{}/organizations/{ORG}/pushy/dashboard", r.base))
        .await
        .unwrap();
    let text = wait_for(&forged, "#session-expired")
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("not a valid dashboard login"), "{text}");
    forged.close().await.unwrap();

    // The nodes view follows a node that goes away, without a reload.
    c.goto(&format!(
        "{}/organizations/{ORG}/pushy/dashboard#nodes",
        r.base
    ))
    .await
    .unwrap();
    wait_for(
        &c,
        "#nodes-table tr[data-node='dash-b'][data-availability='available']",
    )
    .await;
    drop(b);
    wait_for(
        &c,
        "#nodes-table tr[data-node='dash-b']:not([data-availability='available'])",
    )
    .await;
    wait_for(
        &c,
        "#nodes-table tr[data-node='dash-a'][data-availability='available']",
    )
    .await;

    // A session that ends (here: its cookie is gone) stops the page and says how to log
    // in again.
    c.delete_cookie("pushy_dashboard").await.unwrap();
    let text = wait_for(&c, "#session-expired:not([hidden])")
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("push-jobs dashboard"), "{text}");
    c.close().await.unwrap();
}
