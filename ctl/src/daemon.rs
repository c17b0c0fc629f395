//! The daemon step of reconfigure (ops.md §2.3 step 11, §6): the daemon's directories, its
//! TOML configuration, its service definition, and a restart only when the configuration or
//! the service definition changed and this host is the data master.
//!
//! The configuration (`<dir>/opscode-pushy-server.toml`, 0644) holds no secret. The service
//! starts `push-jobs-server-ctl launch` as root, which reads the secrets file, hands
//! `push-jobs-server.{pushy_priv_key,pushy_pub_key,sql_password}` and
//! `chef-server.superuser_key` to the daemon in a pipe (`CHEF_SECRETS_FD`) and becomes Chef
//! Server's user before exec'ing it (`crate::launch`, ops.md §3.4), so no secret is written in clear.
//!
//! With `opscode_pushy_server['instances']` above 1 all of this is done once per instance
//! (`crate::instances`): its own directories, config (with `[cluster]`), service and restart.

use std::path::{Path, PathBuf};

use minijinja::context;

use crate::chef_server::ChefServer;
use crate::converge::{self, Converge, Own};
use crate::instances::{self, Cluster, Instance};
use crate::paths::{self, Paths};
use crate::service::{Action, Manager, Service};
use crate::settings::Settings;
use crate::templates;

/// What the step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `systemd` or `runit`.
    pub manager: &'static str,
    /// The TOML configuration was written.
    pub config_changed: bool,
    /// The unit (or runit `run` script) was written.
    pub service_changed: bool,
    /// Every path created or changed by this step.
    pub changed: Vec<PathBuf>,
    /// Commands for the service, in order (systemd reload and enable, restart or start).
    pub actions: Vec<Action>,
    /// The restart a change caused, if any (also in `actions`).
    pub restart: Option<Action>,
}

/// Why the step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Chef Server's running JSON names no API host for `erchef_root_url`.
    #[error(
        "{path}: neither private_chef['lb']['api_fqdn'] nor private_chef['api_fqdn'] is set; the daemon needs it to reach Chef Server"
    )]
    NoApiFqdn {
        /// The running JSON.
        path: PathBuf,
    },
    /// Rendering a template.
    #[error("rendering {file}: {source}")]
    Render {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: minijinja::Error,
    },
    /// A file, directory or link.
    #[error(transparent)]
    Write(#[from] converge::Error),
    /// `opscode_pushy_server['instances']` cannot be set up.
    #[error(transparent)]
    Instances(#[from] instances::Error),
    /// A restart or start that ran and failed.
    #[error("{action}; fix the cause, then run `push-jobs-server-ctl restart`")]
    Service {
        /// The failed command.
        action: Action,
    },
}

/// The logical path of the daemon's config file.
pub fn config_path(settings: &Settings) -> PathBuf {
    settings.server.daemon.dir.join(paths::DAEMON_CONFIG_NAME)
}

/// `https://<private_chef['lb']['api_fqdn']>` (ops.md §6.3 `erchef_root_url`), falling back
/// to `api_fqdn`.
///
/// # Errors
/// [`Error::NoApiFqdn`] when neither is set.
pub fn erchef_root_url(chef: &ChefServer) -> Result<String, Error> {
    chef.lb_api_fqdn
        .as_deref()
        .or(chef.api_fqdn.as_deref())
        .map(|host| {
            if host.contains(':') && !host.starts_with('[') {
                format!("https://[{host}]")
            } else {
                format!("https://{host}")
            }
        })
        .ok_or_else(|| Error::NoApiFqdn {
            path: chef.path.clone(),
        })
}

/// `[retention] finished_jobs_max_age`, seconds, for `job_retention_days`; `None` (no
/// section, the daemon keeps every job) for 0.
pub fn retention_max_age(days: u32) -> Option<u64> {
    (days > 0).then(|| u64::from(days) * 86_400)
}

/// The daemon's TOML configuration; `cluster` is the `[cluster]` section of one of several
/// instances (`crate::instances`), `None` for a single daemon.
///
/// # Errors
/// [`Error::NoApiFqdn`], [`Error::Render`].
pub fn render_config(
    paths: &Paths,
    settings: &Settings,
    chef: &ChefServer,
    cluster: Option<&Cluster>,
) -> Result<String, Error> {
    let daemon = &settings.server.daemon;
    let user_config = if paths.user_config_toml().exists() && !paths.user_config_rb().exists() {
        paths::USER_CONFIG_TOML
    } else {
        paths::USER_CONFIG_RB
    };
    templates::render(
        templates::DAEMON_CONFIG,
        context! {
            user_config => user_config,
            chef_running_json => paths::CHEF_SERVER_RUNNING_JSON,
            secrets_file => paths::CHEF_SECRETS_FILE,
            data_dir => daemon.dir.display().to_string(),
            s => daemon,
            server_name => settings.server.server_name_advertised,
            erchef_root_url => erchef_root_url(chef)?,
            superuser_key_file => paths::PIVOTAL_PEM,
            pg => &settings.postgresql,
            cluster => cluster,
            retention_max_age => retention_max_age(settings.server.job_retention_days),
        },
    )
    .map_err(|source| Error::Render {
        file: config_path(settings),
        source,
    })
}

fn render_service(
    name: &str,
    service: &str,
    file: &Path,
    settings: &Settings,
    chef: &ChefServer,
    svlogd: &Path,
) -> Result<String, Error> {
    templates::render(
        name,
        context! {
            service => service,
            ctl_bin => paths::CTL_BIN,
            config => config_path(settings).display().to_string(),
            user => chef.user,
            log_dir => settings.server.daemon.log_directory.display().to_string(),
            svlogd => svlogd.display().to_string(),
        },
    )
    .map_err(|source| Error::Render {
        file: file.to_path_buf(),
        source,
    })
}

/// The systemd unit.
///
/// # Errors
/// [`Error::Render`].
pub fn render_unit(settings: &Settings, chef: &ChefServer) -> Result<String, Error> {
    render_unit_at(
        settings,
        chef,
        paths::SERVICE_NAME,
        Path::new(paths::SYSTEMD_UNIT),
    )
}

fn render_unit_at(
    settings: &Settings,
    chef: &ChefServer,
    service: &str,
    file: &Path,
) -> Result<String, Error> {
    render_service(
        templates::SYSTEMD_UNIT,
        service,
        file,
        settings,
        chef,
        Path::new("svlogd"),
    )
}

/// logrotate's file for the daemon's log under systemd: `log_rotation`'s size and count, as
/// svlogd applies them under runit. `log_directory` is the daemon's log directory as the
/// real system names it.
///
/// # Errors
/// [`Error::Render`] (a log directory logrotate cannot name).
pub fn render_logrotate(
    log_directory: &Path,
    rotation: &crate::user_config::LogRotation,
) -> Result<String, Error> {
    templates::render(
        templates::LOGROTATE,
        context! {
            log_file => log_directory.join("current").display().to_string(),
            rotation => rotation,
        },
    )
    .map_err(|source| Error::Render {
        file: PathBuf::from(paths::LOGROTATE_CONF),
        source,
    })
}

/// Runs the step: every instance of `crate::instances`, in order.
///
/// # Errors
/// [`Error`], naming the file or the failed command.
pub fn configure(
    paths: &Paths,
    settings: &Settings,
    chef: &ChefServer,
    converge: &mut Converge,
) -> Result<Report, Error> {
    let first_change = converge.changed.len();
    let planned = instances::plan(settings)?;
    let mut report = Report {
        manager: "systemd",
        config_changed: false,
        service_changed: false,
        changed: Vec::new(),
        actions: Vec::new(),
        restart: None,
    };
    for instance in &planned {
        let one = configure_instance(paths, instance, chef, converge)?;
        report.manager = one.manager;
        report.config_changed |= one.config_changed;
        report.service_changed |= one.service_changed;
        report.actions.extend(one.actions);
        if report.restart.is_none() {
            report.restart = one.restart;
        }
    }
    warn_about_surplus(paths, chef, planned.len());
    report.changed = converge.changed[first_change..].to_vec();
    Ok(report)
}

/// Services of instances beyond `count` left by an earlier reconfigure keep running outside
/// nginx's upstream: say so (they are not removed: that would stop them mid-job).
fn warn_about_surplus(paths: &Paths, chef: &ChefServer, count: usize) {
    let mut index = u32::try_from(count).unwrap_or(u32::MAX);
    loop {
        let name = instances::service_name(index);
        let service = Service::named(paths, &chef.install_path, &name);
        if !service.defined() && !service.enabled() {
            break;
        }
        tracing::warn!(
            "{name} is still defined but opscode_pushy_server['instances'] is {count}: nginx no longer sends it requests; stop it and remove its service definition"
        );
        index = index.saturating_add(1);
        if index == u32::MAX {
            break;
        }
    }
}

/// One instance: directories, config, service definition, restart.
fn configure_instance(
    paths: &Paths,
    instance: &Instance,
    chef: &ChefServer,
    converge: &mut Converge,
) -> Result<Report, Error> {
    let settings = &instance.settings;
    let daemon = &settings.server.daemon;
    let dirs = paths.daemon(&daemon.dir, &daemon.log_directory);
    let service = Service::named(paths, &chef.install_path, &instance.service);
    let first_change = converge.changed.len();

    let config = render_config(paths, settings, chef, instance.cluster.as_ref())?;
    instances::require_postgresql(settings.server.instances, &config_path(settings), &config)?;
    converge.dir(&dirs.dir, 0o700, Own::Chef)?;
    converge.dir(&dirs.log_dir, 0o700, Own::Chef)?;
    let config_changed = converge.file(&dirs.config, config.as_bytes(), 0o644, Own::Root)?;

    let service_changed = match &service.manager {
        Manager::Systemd => {
            let unit = render_unit_at(settings, chef, &service.name, &service.unit)?;
            // systemd appends the daemon's output to one file; logrotate keeps it to
            // log_rotation's size and count. A change here needs no restart.
            let logrotate = render_logrotate(&daemon.log_directory, &daemon.log_rotation)?;
            converge.file(&service.logrotate, logrotate.as_bytes(), 0o644, Own::Root)?;
            converge.file(&service.unit, unit.as_bytes(), 0o644, Own::Root)?
        }
        Manager::Runit { real, logical } => {
            let run_file = real.sv_dir.join("run");
            let run = render_service(
                templates::RUNIT_RUN,
                &service.name,
                &run_file,
                settings,
                chef,
                &logical.svlogd_bin,
            )?;
            let log_run_file = real.sv_dir.join("log/run");
            let log_run = render_service(
                templates::RUNIT_LOG_RUN,
                &service.name,
                &log_run_file,
                settings,
                chef,
                &logical.svlogd_bin,
            )?;
            let rotation = &daemon.log_rotation;
            let svlogd_config = format!("s{}\nn{}\n", rotation.file_maxbytes, rotation.num_to_keep);
            converge.dir(&real.sv_dir, 0o755, Own::Root)?;
            converge.dir(&real.sv_dir.join("log"), 0o755, Own::Root)?;
            let changed = converge.file(&run_file, run.as_bytes(), 0o755, Own::Root)?;
            converge.file(&log_run_file, log_run.as_bytes(), 0o755, Own::Root)?;
            converge.file(
                &dirs.svlogd_config,
                svlogd_config.as_bytes(),
                0o644,
                Own::Root,
            )?;
            converge.symlink(&real.init_link, &logical.sv_bin)?;
            // Linking it into runsvdir's directory is what enables (and first starts) it.
            converge.symlink(&real.service_link, &logical.sv_dir)? || changed
        }
    };

    let mut actions = Vec::new();
    if service_changed && service.manager == Manager::Systemd {
        actions.extend(service.reload_and_enable());
    }
    let mut restart = None;
    if config_changed || service_changed {
        if settings.data_master {
            let action = service.restart_for_change();
            restart = Some(action.clone());
            actions.push(action);
        } else {
            tracing::info!(
                topology = %settings.topology,
                "configuration changed; not restarting {}: this host is not the data master",
                service.name
            );
        }
    }
    if restart.is_none() && settings.bootstrap.enable {
        actions.push(service.start_for_bootstrap());
    }
    if let Some(failed) = actions
        .iter()
        .find(|a| matches!(a.execution, crate::service::Execution::Ran { .. }) && !a.succeeded())
    {
        return Err(Error::Service {
            action: failed.clone(),
        });
    }
    Ok(Report {
        manager: service.manager.name(),
        config_changed,
        service_changed,
        changed: converge.changed[first_change..].to_vec(),
        actions,
        restart,
    })
}
