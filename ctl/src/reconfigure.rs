//! `reconfigure` (ops.md §2.3), step by step, each logged:
//!
//! 0. the license gate (`--accept-license`);
//! 1. the configuration: Chef Server's running JSON, the user config, the `bootstrapped`
//!    sentinel (errors name the file and line);
//! 2. directories: `/etc/opscode-push-jobs-server` (0775), `/var/opt/opscode-push-jobs-server`
//!    (0755);
//! 3. secrets: the bootstrap of ops.md §3.3 (migration of the ≤ 2.1 files, pivotal key,
//!    passwords, key pair); without a pivotal key the run stops here when the daemon runs on
//!    this host (the original logged an error and reported success);
//! 4. database: roles, database, grants, schema (ops.md §4.2);
//! 5. nginx: the add-on files, nginx restarted only when they changed (ops.md §5);
//! 6. daemon (when `opscode_pushy_server['enable']`): directories, config, service definition,
//!    restart only on change and only on the data master;
//! 7. bootstrap (when `bootstrap['enable']`): the `bootstrapped` sentinel;
//! 8. `opscode-push-jobs-server-running.json` (opscode:root 0600), last, so it exists only
//!    after a run that finished.
//!
//! Every file is replaced atomically and only when its bytes, mode or owner differ, so a second
//! run rewrites nothing and restarts nothing. A failure stops the run with a message naming the
//! file, line or host; files already converged stay (each is whole), the running JSON is not
//! written.
//!
//! The running JSON records the settings as they stand once the run is over (what
//! `show-config` prints from then on): after a first run wrote the sentinel, `bootstrap.enable`
//! is false there. That keeps the file identical from one run to the next.

use std::io::{self, BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::chef_server::{self, Host};
use crate::converge::{self, Converge, Own};
use crate::paths::{self, Paths};
use crate::service::Action;
use crate::settings::{self, Settings};
use crate::veil::SecretsFile;
use crate::{daemon, database, nginx, secrets};

/// The sentinel's text (the original's is a joke; ours says what it does).
pub const BOOTSTRAPPED_TEXT: &str = "The Push Jobs server on this host has been bootstrapped by push-jobs-server-ctl reconfigure.\nWhile this file exists, reconfigure does not start the service itself (bootstrap['enable'] defaults to false).\n";

/// The `run_list` the original's running JSON carries.
const RUN_LIST: &str = "recipe[opscode-pushy-server::default]";

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// This host's FQDN (default: `hostname --fqdn`).
    pub fqdn: Option<String>,
    /// `--accept-license` was given.
    pub accept_license: bool,
    /// Ask on the terminal when the license is not accepted yet (the CLI, with a TTY).
    pub interactive: bool,
}

/// What a run changed.
#[derive(Clone, Debug)]
pub struct Report {
    /// The license was accepted by this run.
    pub license_accepted: bool,
    /// Every file, directory and link created or changed, in order (secrets file included).
    pub changed: Vec<PathBuf>,
    /// The secrets bootstrap.
    pub secrets: secrets::Report,
    /// The database step.
    pub database: database::Report,
    /// The nginx step.
    pub nginx: nginx::Report,
    /// The daemon step; `None` when the daemon is not enabled on this host.
    pub daemon: Option<daemon::Report>,
    /// The `bootstrapped` sentinel was written by this run.
    pub bootstrapped: bool,
    /// The running JSON was (re)written.
    pub running_json_written: bool,
    /// The settings the run acted on.
    pub settings: Settings,
}

impl Report {
    /// Whether anything changed: a file, the database, a command.
    pub fn changed_anything(&self) -> bool {
        !self.changed.is_empty() || self.database.changed() || !self.actions().is_empty()
    }

    /// Every command for nginx and the service, in order.
    pub fn actions(&self) -> Vec<&Action> {
        let mut out: Vec<&Action> = self.nginx.restart.iter().collect();
        if let Some(d) = &self.daemon {
            out.extend(d.actions.iter());
        }
        out
    }

    /// The daemon restart this run caused, if any.
    pub fn restart(&self) -> Option<&Action> {
        self.daemon.as_ref().and_then(|d| d.restart.as_ref())
    }
}

/// The license gate (ops.md §2.3 step 0). Returns whether this run accepted it.
fn license(paths: &Paths, options: &Options, converge: &mut Converge) -> anyhow::Result<bool> {
    let license = paths.license_file();
    if !license.exists() || paths.license_accepted().exists() {
        return Ok(false);
    }
    if !options.accept_license {
        if !(options.interactive && io::stdin().is_terminal()) {
            bail!(
                "Please view and accept the software license agreement, or pass --accept-license."
            );
        }
        let text = std::fs::read_to_string(&license)
            .with_context(|| format!("reading {}", license.display()))?;
        let mut out = io::stdout().lock();
        writeln!(out, "{text}")?;
        write!(
            out,
            "Type 'yes' to accept the software license agreement, or anything else to cancel.\n> "
        )?;
        out.flush()?;
        let mut answer = String::new();
        io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            bail!("The license was not accepted; nothing was changed.");
        }
    }
    converge.file(
        &paths.license_accepted(),
        b"accepted with push-jobs-server-ctl reconfigure\n",
        0o644,
        Own::Root,
    )?;
    Ok(true)
}

/// The running JSON's text: `{"pushy": …, "run_list": […]}`, pretty, with a newline.
pub fn running_json(settings: &Settings) -> String {
    let mut doc = settings.to_pushy_json();
    doc["run_list"] = json!([RUN_LIST]);
    let mut text = serde_json::to_string_pretty(&doc).expect("settings always serialize");
    text.push('\n');
    text
}

fn step(n: u32, what: &str) {
    tracing::info!("[{n}/8] {what}");
}

/// Runs reconfigure under `paths`.
///
/// # Errors
/// The first failing step, its message naming the file (and line) or the host at fault.
pub async fn reconfigure(paths: &Paths, options: &Options) -> anyhow::Result<Report> {
    let live = paths.root() == Path::new("/");
    if live && !nix::unistd::geteuid().is_root() {
        bail!("reconfigure changes system files and must be run as root");
    }

    step(0, "license");
    let mut gate = Converge::new(None);
    let license_accepted = license(paths, options, &mut gate)?;

    // 1. The configuration, before anything else is written.
    step(1, "reading Chef Server's configuration and the user config");
    let fqdn = match &options.fqdn {
        Some(f) => f.clone(),
        None => chef_server::local_fqdn().context("finding this host's FQDN (use --fqdn)")?,
    };
    let loaded = settings::load(paths, &fqdn)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let settings = &loaded.settings;
    let chef = &loaded.chef_server;
    let chef_ids = converge::user_ids(&chef.user);
    if chef_ids.is_none() && live {
        bail!(
            "Chef Server's user {} (private_chef['user']['username'] in {}) does not exist on this host",
            chef.user,
            chef.path.display()
        );
    }
    let mut converge = Converge::new(chef_ids);
    converge.changed = gate.changed;
    if let Some(note) = converge.owners_note() {
        tracing::warn!("{note}");
    }

    // 2. Directories.
    step(2, "directories");
    converge.dir(&paths.etc_dir(), 0o775, Own::Root)?;
    converge.dir(&paths.data_dir(), 0o755, Own::Root)?;

    // 3. Secrets.
    step(3, "secrets");
    let secrets_report = secrets::bootstrap(paths).context("secrets bootstrap")?;
    if secrets_report.saved {
        converge.changed.push(paths.chef_secrets_file());
    }
    for removed in &secrets_report.removed {
        tracing::info!(path = %removed.display(), "migrated into the secrets file and removed");
    }
    if secrets_report.pivotal == secrets::Pivotal::Missing {
        if settings.server.enable {
            bail!(
                "Could not find the pivotal key: {} holds no chef-server.superuser_key and {} does \
                 not exist. The daemon signs its calls to Chef Server with it and cannot start \
                 without it: run chef-server-ctl reconfigure on this host (or copy pivotal.pem \
                 from a Chef Server front end), then run this reconfigure again.",
                paths.chef_secrets_file().display(),
                paths.pivotal_pem().display()
            );
        }
        tracing::warn!(
            "no pivotal key (chef-server.superuser_key) yet; the daemon does not run on this host"
        );
    }
    let store = SecretsFile::load(&paths.chef_secrets_file())?;

    // 4. Database.
    step(4, "database");
    let (admin, target) = database::plan(settings, &store)?;
    let database_report = database::provision(&admin, &target)
        .await
        .context("database step")?;

    // 5. nginx.
    step(5, "nginx");
    let nginx_report =
        nginx::configure(paths, settings, chef, &mut converge).context("nginx step")?;

    // 6. The daemon.
    let daemon_report = if settings.server.enable {
        step(6, "daemon");
        Some(daemon::configure(paths, settings, chef, &mut converge).context("daemon step")?)
    } else {
        step(
            6,
            "daemon: not enabled on this host (opscode_pushy_server['enable'] is false)",
        );
        None
    };

    // 7. Bootstrap.
    let mut bootstrapped = false;
    if settings.bootstrap.enable {
        step(7, "bootstrap sentinel");
        bootstrapped = converge.file(
            &paths.bootstrapped(),
            BOOTSTRAPPED_TEXT.as_bytes(),
            0o600,
            Own::Root,
        )?;
    } else {
        step(7, "bootstrap: not enabled");
    }

    // 8. The running JSON, last: the settings as they stand now.
    step(8, paths::RUNNING_JSON);
    let host = Host {
        fqdn,
        bootstrapped: paths.bootstrapped().exists(),
    };
    let at_rest = settings::compute(&loaded.attributes, chef, &host)?;
    let running_json_written = converge.file(
        &paths.running_json(),
        running_json(&at_rest).as_bytes(),
        0o600,
        Own::ChefRoot,
    )?;

    Ok(Report {
        license_accepted,
        changed: converge.changed,
        secrets: secrets_report,
        database: database_report,
        nginx: nginx_report,
        daemon: daemon_report,
        bootstrapped,
        running_json_written,
        settings: at_rest,
    })
}
