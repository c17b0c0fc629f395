//! `cleanse` and `uninstall` (ops.md §2.2), doing what the original only pretended to: the
//! service is really stopped and its definition removed.
//!
//! Both stop the service, remove its definition (systemd unit, or the runit service under
//! Chef Server's tree), and back `/etc/opscode-push-jobs-server` up to
//! `/root/opscode-push-jobs-server-cleanse-<YYYY-MM-DDTHH:MM>`. `cleanse` then removes what
//! reconfigure made: the config directory, the data directory, the daemon's directory and
//! logs, omnibus-ctl's log directory, `/tmp/opt`, and the nginx add-on files (restarting
//! Chef Server's nginx). `uninstall` removes only `/tmp/opt` (data is preserved).
//!
//! Neither touches the database, its roles, or the secrets in Chef Server's secrets file:
//! those are Chef Server's to keep, and a later reconfigure finds and reuses them.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, chown, symlink};
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;

use crate::chef_server::{self, ChefServer};
use crate::paths::{self, Paths};
use crate::service::{self, Action, Manager, Service, Verb};
use crate::settings;
use crate::user_config::Daemon;

/// omnibus-ctl's warning before the wait.
pub const BANNER: &str = "This will delete *all* configuration, log, and variable data associated with this application.\n\n*** You have 60 seconds to hit CTRL-C ***\n\n";

/// What the command did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Where the config directory was copied (as the real system names it), if it existed.
    pub backup: Option<PathBuf>,
    /// Paths removed, under the root.
    pub removed: Vec<PathBuf>,
    /// Commands for the service and for nginx.
    pub actions: Vec<Action>,
}

/// Paths never removed, whatever the user config says the daemon's directories are.
const PROTECTED: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib64",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/var/lib",
    "/var/log",
    "/var/opt",
    "/etc/opscode",
    "/opt/opscode",
    "/var/opt/opscode",
    "/var/log/opscode",
];

/// Whether the logical path `p` may be removed recursively.
fn removable(p: &Path) -> bool {
    let normal = p
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    normal >= 2 && !PROTECTED.iter().any(|x| Path::new(x) == p)
}

/// The places reconfigure wrote to, from the settings when they can be computed, else the
/// defaults (a broken user config must not prevent a cleanse).
struct Layout {
    chef: ChefServer,
    daemon_dir: PathBuf,
    log_dir: PathBuf,
}

fn layout(paths: &Paths, fqdn: Option<&str>) -> Layout {
    let fqdn = fqdn
        .map(str::to_owned)
        .or_else(|| chef_server::local_fqdn().ok())
        .unwrap_or_else(|| "localhost".to_owned());
    match settings::load(paths, &fqdn) {
        Ok(loaded) => Layout {
            daemon_dir: loaded.settings.server.daemon.dir.clone(),
            log_dir: loaded.settings.server.daemon.log_directory.clone(),
            chef: loaded.chef_server,
        },
        Err(e) => {
            tracing::warn!("{e}; using the default locations");
            let defaults = Daemon::default();
            Layout {
                chef: chef_server_or_defaults(paths),
                daemon_dir: defaults.dir,
                log_dir: defaults.log_directory,
            }
        }
    }
}

/// Chef Server's running JSON, or Chef Server's defaults when it cannot be read.
pub fn chef_server_or_defaults(paths: &Paths) -> ChefServer {
    let path = paths.chef_server_running_json();
    ChefServer::load(&path).unwrap_or_else(|_| {
        ChefServer::from_json(&path, &serde_json::json!({"private_chef": {}}))
            .expect("an empty private_chef has every default")
    })
}

fn remove_path(path: &Path, report: &mut Report) -> anyhow::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    result.with_context(|| format!("removing {}", path.display()))?;
    tracing::info!(path = %path.display(), "removed");
    report.removed.push(path.to_path_buf());
    Ok(())
}

/// Copies `src` into `dst` (created), keeping modes, owners and links.
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    if meta.file_type().is_symlink() {
        symlink(fs::read_link(src)?, dst)?;
        return Ok(());
    }
    if meta.is_dir() {
        fs::create_dir_all(dst)?;
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else {
        fs::copy(src, dst)?;
    }
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    if nix::unistd::geteuid().is_root() {
        chown(dst, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(())
}

/// Stops the service and removes its definition.
fn remove_service(service: &Service, report: &mut Report) -> anyhow::Result<()> {
    if !service.defined() && !service.enabled() {
        tracing::info!("{} is not defined on this host", service::NAME);
        return Ok(());
    }
    report.actions.push(service.control(Verb::Stop));
    match &service.manager {
        Manager::Systemd => {
            report.actions.push(service.disable());
            remove_path(&service.unit, report)?;
            remove_path(&service.logrotate, report)?;
            report.actions.push(service.daemon_reload());
        }
        Manager::Runit { real, .. } => {
            // runsvdir stops supervising once the link is gone.
            remove_path(&real.service_link, report)?;
            remove_path(&real.init_link, report)?;
            remove_path(&real.sv_dir, report)?;
        }
    }
    Ok(())
}

/// `cleanse` (`remove_data`) or `uninstall`. `stamp` is `YYYY-MM-DDTHH:MM`.
///
/// # Errors
/// A path that cannot be backed up or removed.
pub fn run(
    paths: &Paths,
    fqdn: Option<&str>,
    remove_data: bool,
    stamp: &str,
) -> anyhow::Result<Report> {
    let layout = layout(paths, fqdn);
    let mut report = Report::default();
    let service = Service::new(paths, &layout.chef.install_path);

    remove_service(&service, &mut report)?;

    let etc = paths.etc_dir();
    if etc.is_dir() {
        let backup = paths.cleanse_backup(stamp);
        remove_path(&backup, &mut Report::default())?;
        copy_tree(&etc, &backup)
            .with_context(|| format!("backing {} up to {}", etc.display(), backup.display()))?;
        report.backup = Some(PathBuf::from(format!(
            "{}-{stamp}",
            paths::CLEANSE_BACKUP_PREFIX
        )));
    }

    remove_path(&paths.tmp_opt(), &mut report)?;
    if !remove_data {
        return Ok(report);
    }
    for logical in [
        Path::new(paths::ETC_DIR),
        Path::new(paths::DATA_DIR),
        &layout.daemon_dir,
        &layout.log_dir,
        Path::new(paths::OMNIBUS_LOG_DIR),
    ] {
        if removable(logical) {
            remove_path(&paths.resolve(logical), &mut report)?;
        } else {
            tracing::warn!(path = %logical.display(), "not removing a system directory");
        }
    }
    let mut nginx_removed = false;
    for file in crate::nginx::files(paths, &layout.chef.nginx.dir) {
        let before = report.removed.len();
        remove_path(&file, &mut report)?;
        nginx_removed |= report.removed.len() > before;
    }
    if nginx_removed {
        report.actions.push(service::restart_chef_nginx(
            paths,
            &layout.chef.install_path,
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_directories_are_never_removed() {
        for p in [
            "/",
            "/var",
            "/var/log",
            "/etc/opscode",
            "/var/log/opscode",
            "x",
        ] {
            assert!(!removable(Path::new(p)), "{p}");
        }
        for p in [
            "/etc/opscode-push-jobs-server",
            "/var/log/opscode/opscode-pushy-server",
            "/tmp/opt",
        ] {
            assert!(removable(Path::new(p)), "{p}");
        }
    }
}
