//! Every path the ctl reads or writes, under one root prefix.
//!
//! The original hard-codes absolute paths (ops.md §1.1, §1.2, §1.4). Here each one is a method on
//! [`Paths`], which joins it under a root directory: `/` in production, a temporary directory in
//! tests (`--root DIR` or `PUSHY_CTL_ROOT`), so no test ever touches the real `/etc`. The
//! absolute ("logical") paths are also exported as constants, because they are what rendered files
//! and messages must name.
//!
//! Paths that the user config or Chef Server decide (the daemon's `dir` and `log_directory`,
//! Chef Server's install path and nginx dir) are passed in by the caller from
//! [`crate::settings::Settings`] / [`crate::chef_server::ChefServer`] and resolved with
//! [`Paths::resolve`].

use std::path::{Component, Path, PathBuf};

/// Install prefix of the add-on package (ops.md §0, §1.1).
pub const INSTALL_DIR: &str = "/opt/opscode-push-jobs-server";
/// The ctl as the service definitions start it (`… launch`); the package links it into
/// `/usr/bin` as well.
pub const CTL_BIN: &str = "/opt/opscode-push-jobs-server/bin/push-jobs-server-ctl";
/// The daemon, started by `push-jobs-server-ctl launch`.
pub const DAEMON_BIN: &str = "/opt/opscode-push-jobs-server/bin/opscode-pushy-server";
/// File name of the daemon's rendered TOML config, in the daemon directory.
pub const DAEMON_CONFIG_NAME: &str = "opscode-pushy-server.toml";
/// Config directory, root:root 0775 (ops.md §1.1).
pub const ETC_DIR: &str = "/etc/opscode-push-jobs-server";
/// The operator's config file in the original's Ruby form (ops.md §1.3).
pub const USER_CONFIG_RB: &str = "/etc/opscode-push-jobs-server/opscode-push-jobs-server.rb";
/// The same settings as TOML (our addition; same tree, see `user_config`).
pub const USER_CONFIG_TOML: &str = "/etc/opscode-push-jobs-server/opscode-push-jobs-server.toml";
/// Written last by reconfigure; postinst tests it for "install" vs "upgrade" (ops.md §1.1, §2.5).
pub const RUNNING_JSON: &str =
    "/etc/opscode-push-jobs-server/opscode-push-jobs-server-running.json";
/// Config for `ctl test` (ops.md §1.1).
pub const PEDANT_CONFIG: &str = "/etc/opscode-push-jobs-server/pedant_config.rb";
/// ≤ 2.1 secrets file, migrated then deleted (ops.md §3.2, §3.3).
pub const LEGACY_SECRETS_JSON: &str =
    "/etc/opscode-push-jobs-server/opscode-push-jobs-server-secrets.json";
/// ≤ 2.1 private key, migrated then deleted (ops.md §3.3).
pub const LEGACY_PRIV_PEM: &str = "/etc/opscode-push-jobs-server/pushy_priv.pem";
/// ≤ 2.1 public key, migrated then deleted (ops.md §3.3).
pub const LEGACY_PUB_PEM: &str = "/etc/opscode-push-jobs-server/pushy_pub.pem";
/// Data directory, root:root 0755 (ops.md §1.1).
pub const DATA_DIR: &str = "/var/opt/opscode-push-jobs-server";
/// First-run sentinel; while it exists `bootstrap.enable` defaults to false (ops.md §1.1).
pub const BOOTSTRAPPED: &str = "/var/opt/opscode-push-jobs-server/bootstrapped";
/// omnibus-ctl's license-acceptance guard (ops.md §1.1, §2.3 step 0).
pub const LICENSE_ACCEPTED: &str = "/var/opt/opscode-push-jobs-server/.license.accepted";
/// omnibus-ctl's own log directory, which `cleanse` removes (ops.md §2.1, §2.2).
pub const OMNIBUS_LOG_DIR: &str = "/var/log/opscode-push-jobs-server";
/// The ctl link postinst makes (ops.md §1.1, §2.5).
pub const USR_BIN_CTL: &str = "/usr/bin/opscode-push-jobs-server-ctl";
/// Chef Server's consolidated credentials (ops.md §3.2).
pub const CHEF_SECRETS_FILE: &str = "/etc/opscode/private-chef-secrets.json";
/// The pivotal key on disk, migrated into the secrets file when absent there (ops.md §3.3).
pub const PIVOTAL_PEM: &str = "/etc/opscode/pivotal.pem";
/// Chef Server's computed configuration, written by `chef-server-ctl reconfigure` (ops.md §1.3).
pub const CHEF_SERVER_RUNNING_JSON: &str = "/etc/opscode/chef-server-running.json";
/// Chef Server's runsvdir systemd unit, re-asserted by `enterprise::runit` (ops.md §1.2).
pub const CHEF_RUNSVDIR_UNIT: &str = "/etc/systemd/system/private_chef-runsvdir-start.service";
/// Our systemd unit for the daemon (the default service definition; issue 6).
pub const SYSTEMD_UNIT: &str = "/etc/systemd/system/opscode-pushy-server.service";
/// logrotate's file for the daemon's log under systemd (runit's svlogd rotates it there).
pub const LOGROTATE_CONF: &str = "/etc/logrotate.d/opscode-pushy-server";
/// The runit / systemd service name of the daemon (ops.md §0).
pub const SERVICE_NAME: &str = "opscode-pushy-server";
/// Where `cleanse` backs the config directory up, before the `-<YYYY-MM-DDTHH:MM>` suffix
/// (ops.md §2.2).
pub const CLEANSE_BACKUP_PREFIX: &str = "/root/opscode-push-jobs-server-cleanse";

/// Resolves the ctl's paths under a root prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    root: PathBuf,
}

/// Chef Server's runit layout for our service. `enterprise::runit` derives all of it from
/// `private_chef['install_path']` (ops.md §1.2, §2.3 step 8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunitPaths {
    /// `<chef>/sv/opscode-pushy-server`: `run`, `log/run`, `supervise/`.
    pub sv_dir: PathBuf,
    /// `<chef>/service/opscode-pushy-server`: symlink to `sv_dir`, watched by runsvdir.
    pub service_link: PathBuf,
    /// `<chef>/init/opscode-pushy-server`: init-style link to `sv`.
    pub init_link: PathBuf,
    /// `<chef>/service`: runsvdir's directory (the original restarts nginx through it).
    pub service_dir: PathBuf,
    /// `<chef>/embedded/bin/sv`.
    pub sv_bin: PathBuf,
    /// `<chef>/embedded/bin/svlogd`.
    pub svlogd_bin: PathBuf,
    /// `<chef>/embedded/bin/chpst`.
    pub chpst_bin: PathBuf,
}

/// The daemon's own directories and files, from the user's `dir` and `log_directory`
/// (ops.md §1.1, §1.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonPaths {
    /// Daemon HOME and rendered config (`opscode_pushy_server['dir']`), opscode 0700.
    pub dir: PathBuf,
    /// The rendered daemon config, `<dir>/opscode-pushy-server.toml` (0644).
    pub config: PathBuf,
    /// `sys.config` in the original (not written: our daemon reads `config`).
    pub sys_config: PathBuf,
    /// `vm.args` in the original.
    pub vm_args: PathBuf,
    /// `opscode_pushy_server['log_directory']`, opscode 0700.
    pub log_dir: PathBuf,
    /// `<log>/sasl`, opscode 0700.
    pub sasl_log_dir: PathBuf,
    /// svlogd `config` (`s<bytes>`, `n<count>`), root 0644.
    pub svlogd_config: PathBuf,
}

impl Paths {
    /// Paths under `root` (`/` for the real system).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Paths { root: root.into() }
    }

    /// The root prefix.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the absolute path `logical` really is under the root. Relative paths are taken as
    /// relative to `/`; `..` components cannot climb above the root.
    pub fn resolve(&self, logical: impl AsRef<Path>) -> PathBuf {
        let mut out = self.root.clone();
        for component in logical.as_ref().components() {
            match component {
                Component::Normal(part) => out.push(part),
                Component::ParentDir => {
                    if out != self.root {
                        out.pop();
                    }
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        out
    }

    /// `/opt/opscode-push-jobs-server`.
    pub fn install_dir(&self) -> PathBuf {
        self.resolve(INSTALL_DIR)
    }

    /// `<install>/LICENSE`: its presence turns on the license gate (ops.md §2.3 step 0).
    pub fn license_file(&self) -> PathBuf {
        self.install_dir().join("LICENSE")
    }

    /// `<install>/embedded/service/opscode-pushy-server`: the daemon's release directory, home of
    /// the `log`, `sys.config` and `vm.args` links (ops.md §1.1).
    pub fn release_dir(&self) -> PathBuf {
        self.install_dir()
            .join("embedded/service")
            .join(SERVICE_NAME)
    }

    /// `/usr/bin/opscode-push-jobs-server-ctl`.
    pub fn usr_bin_ctl(&self) -> PathBuf {
        self.resolve(USR_BIN_CTL)
    }

    /// `/etc/opscode-push-jobs-server`.
    pub fn etc_dir(&self) -> PathBuf {
        self.resolve(ETC_DIR)
    }

    /// `/etc/opscode-push-jobs-server/opscode-push-jobs-server.rb`.
    pub fn user_config_rb(&self) -> PathBuf {
        self.resolve(USER_CONFIG_RB)
    }

    /// `/etc/opscode-push-jobs-server/opscode-push-jobs-server.toml`.
    pub fn user_config_toml(&self) -> PathBuf {
        self.resolve(USER_CONFIG_TOML)
    }

    /// `/etc/opscode-push-jobs-server/opscode-push-jobs-server-running.json`.
    pub fn running_json(&self) -> PathBuf {
        self.resolve(RUNNING_JSON)
    }

    /// `/etc/opscode-push-jobs-server/pedant_config.rb`.
    pub fn pedant_config(&self) -> PathBuf {
        self.resolve(PEDANT_CONFIG)
    }

    /// `/etc/opscode-push-jobs-server/opscode-push-jobs-server-secrets.json` (≤ 2.1).
    pub fn legacy_secrets_json(&self) -> PathBuf {
        self.resolve(LEGACY_SECRETS_JSON)
    }

    /// `/etc/opscode-push-jobs-server/pushy_priv.pem` (≤ 2.1).
    pub fn legacy_priv_pem(&self) -> PathBuf {
        self.resolve(LEGACY_PRIV_PEM)
    }

    /// `/etc/opscode-push-jobs-server/pushy_pub.pem` (≤ 2.1).
    pub fn legacy_pub_pem(&self) -> PathBuf {
        self.resolve(LEGACY_PUB_PEM)
    }

    /// `/var/opt/opscode-push-jobs-server`.
    pub fn data_dir(&self) -> PathBuf {
        self.resolve(DATA_DIR)
    }

    /// `/var/opt/opscode-push-jobs-server/bootstrapped`.
    pub fn bootstrapped(&self) -> PathBuf {
        self.resolve(BOOTSTRAPPED)
    }

    /// `/var/opt/opscode-push-jobs-server/.license.accepted`.
    pub fn license_accepted(&self) -> PathBuf {
        self.resolve(LICENSE_ACCEPTED)
    }

    /// `/var/log/opscode-push-jobs-server`.
    pub fn omnibus_log_dir(&self) -> PathBuf {
        self.resolve(OMNIBUS_LOG_DIR)
    }

    /// `/etc/opscode/private-chef-secrets.json`.
    pub fn chef_secrets_file(&self) -> PathBuf {
        self.resolve(CHEF_SECRETS_FILE)
    }

    /// `/etc/opscode/pivotal.pem`.
    pub fn pivotal_pem(&self) -> PathBuf {
        self.resolve(PIVOTAL_PEM)
    }

    /// `/etc/opscode/chef-server-running.json`.
    pub fn chef_server_running_json(&self) -> PathBuf {
        self.resolve(CHEF_SERVER_RUNNING_JSON)
    }

    /// `/etc/systemd/system/private_chef-runsvdir-start.service`.
    pub fn chef_runsvdir_unit(&self) -> PathBuf {
        self.resolve(CHEF_RUNSVDIR_UNIT)
    }

    /// `/etc/systemd/system/opscode-pushy-server.service`.
    pub fn systemd_unit(&self) -> PathBuf {
        self.resolve(SYSTEMD_UNIT)
    }

    /// `/etc/systemd/system/<service>.service`: the unit of one instance
    /// (`crate::instances`); the first one's is [`Paths::systemd_unit`].
    pub fn systemd_unit_named(&self, service: &str) -> PathBuf {
        self.resolve(format!("/etc/systemd/system/{service}.service"))
    }

    /// `/etc/logrotate.d/opscode-pushy-server`.
    pub fn logrotate_conf(&self) -> PathBuf {
        self.resolve(LOGROTATE_CONF)
    }

    /// `/etc/logrotate.d/<service>`: one instance's; the first one's is
    /// [`Paths::logrotate_conf`].
    pub fn logrotate_conf_named(&self, service: &str) -> PathBuf {
        self.resolve(format!("/etc/logrotate.d/{service}"))
    }

    /// `/tmp/opt`, which `cleanse` and `uninstall` delete (ops.md §2.2).
    pub fn tmp_opt(&self) -> PathBuf {
        self.resolve("/tmp/opt")
    }

    /// `/root/opscode-push-jobs-server-cleanse-<stamp>`, `stamp` as `YYYY-MM-DDTHH:MM`.
    pub fn cleanse_backup(&self, stamp: &str) -> PathBuf {
        self.resolve(format!("{CLEANSE_BACKUP_PREFIX}-{stamp}"))
    }

    /// `<nginx dir>/etc/addon.d` (ops.md §1.2, §5); `nginx_dir` is Chef Server's
    /// `private_chef['nginx']['dir']`.
    pub fn nginx_addon_dir(&self, nginx_dir: &Path) -> PathBuf {
        self.resolve(nginx_dir).join("etc/addon.d")
    }

    /// `<addon.d>/10-push_jobs_upstreams.conf`.
    pub fn nginx_upstreams_conf(&self, nginx_dir: &Path) -> PathBuf {
        self.nginx_addon_dir(nginx_dir)
            .join("10-push_jobs_upstreams.conf")
    }

    /// `<addon.d>/10-push_jobs_external.conf`.
    pub fn nginx_external_conf(&self, nginx_dir: &Path) -> PathBuf {
        self.nginx_addon_dir(nginx_dir)
            .join("10-push_jobs_external.conf")
    }

    /// Chef Server's runit layout for our service, from `private_chef['install_path']`.
    pub fn runit(&self, chef_install_path: &Path) -> RunitPaths {
        self.runit_named(chef_install_path, SERVICE_NAME)
    }

    /// The same for the service `service` (one instance of `crate::instances`).
    pub fn runit_named(&self, chef_install_path: &Path, service: &str) -> RunitPaths {
        let base = self.resolve(chef_install_path);
        RunitPaths {
            sv_dir: base.join("sv").join(service),
            service_link: base.join("service").join(service),
            init_link: base.join("init").join(service),
            service_dir: base.join("service"),
            sv_bin: base.join("embedded/bin/sv"),
            svlogd_bin: base.join("embedded/bin/svlogd"),
            chpst_bin: base.join("embedded/bin/chpst"),
        }
    }

    /// The daemon's directories, from `opscode_pushy_server['dir']` and `['log_directory']`.
    pub fn daemon(&self, dir: &Path, log_directory: &Path) -> DaemonPaths {
        let dir = self.resolve(dir);
        let log_dir = self.resolve(log_directory);
        DaemonPaths {
            config: dir.join(DAEMON_CONFIG_NAME),
            sys_config: dir.join("sys.config"),
            vm_args: dir.join("vm.args"),
            sasl_log_dir: log_dir.join("sasl"),
            svlogd_config: log_dir.join("config"),
            dir,
            log_dir,
        }
    }
}

impl Default for Paths {
    /// The real system: root `/`.
    fn default() -> Self {
        Paths::new("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_root_leaves_paths_as_the_original_names_them() {
        let p = Paths::default();
        assert_eq!(p.chef_secrets_file(), Path::new(CHEF_SECRETS_FILE));
        assert_eq!(p.user_config_rb(), Path::new(USER_CONFIG_RB));
        assert_eq!(p.bootstrapped(), Path::new(BOOTSTRAPPED));
        assert_eq!(
            p.release_dir(),
            Path::new("/opt/opscode-push-jobs-server/embedded/service/opscode-pushy-server")
        );
    }

    #[test]
    fn every_path_lands_under_the_root() {
        let p = Paths::new("/tmp/r");
        let nginx = Path::new("/var/opt/opscode/nginx");
        let runit = p.runit(Path::new("/opt/opscode"));
        let daemon = p.daemon(
            Path::new("/var/opt/opscode-push-jobs-server/opscode-pushy-server"),
            Path::new("/var/log/opscode/opscode-pushy-server"),
        );
        let all = [
            p.install_dir(),
            p.license_file(),
            p.release_dir(),
            p.usr_bin_ctl(),
            p.etc_dir(),
            p.user_config_rb(),
            p.user_config_toml(),
            p.running_json(),
            p.pedant_config(),
            p.legacy_secrets_json(),
            p.legacy_priv_pem(),
            p.legacy_pub_pem(),
            p.data_dir(),
            p.bootstrapped(),
            p.license_accepted(),
            p.omnibus_log_dir(),
            p.chef_secrets_file(),
            p.pivotal_pem(),
            p.chef_server_running_json(),
            p.chef_runsvdir_unit(),
            p.systemd_unit(),
            p.tmp_opt(),
            p.cleanse_backup("2024-01-02T03:04"),
            p.nginx_upstreams_conf(nginx),
            p.nginx_external_conf(nginx),
            runit.sv_dir,
            runit.service_link,
            runit.init_link,
            runit.sv_bin,
            daemon.sys_config,
            daemon.svlogd_config,
            daemon.sasl_log_dir,
        ];
        for path in all {
            assert!(
                path.starts_with("/tmp/r/"),
                "{} escapes the root",
                path.display()
            );
        }
        assert_eq!(
            p.nginx_upstreams_conf(nginx),
            Path::new("/tmp/r/var/opt/opscode/nginx/etc/addon.d/10-push_jobs_upstreams.conf")
        );
        assert_eq!(
            p.runit(Path::new("/opt/opscode")).sv_dir,
            Path::new("/tmp/r/opt/opscode/sv/opscode-pushy-server")
        );
        assert_eq!(
            p.cleanse_backup("2024-01-02T03:04"),
            Path::new("/tmp/r/root/opscode-push-jobs-server-cleanse-2024-01-02T03:04")
        );
    }

    #[test]
    fn dot_dot_cannot_climb_out_of_the_root() {
        let p = Paths::new("/tmp/r");
        assert_eq!(
            p.resolve("/../../etc/passwd"),
            Path::new("/tmp/r/etc/passwd")
        );
        assert_eq!(p.resolve("/a/../b"), Path::new("/tmp/r/b"));
        assert_eq!(p.resolve("relative/x"), Path::new("/tmp/r/relative/x"));
    }
}
