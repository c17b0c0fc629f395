//! The daemon's service, `opscode-pushy-server`, and the commands that act on it (ops.md §2.4:
//! unlike the original's, ours operate on the real service).
//!
//! The service definition is a systemd unit by default, or a runit service under Chef Server's
//! runsvdir when Chef Server's runit is there (`<chef>/sv` and `<chef>/embedded/bin/sv`), as
//! the original's was. Commands run only on the real system: with the root `/` and the tool
//! present (systemd actually running, `sv` installed). Under any other root each command is
//! recorded as what would run, so tests and staging see exactly what a real run would do and
//! nothing pretends a service was touched.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::paths::{self, Paths, RunitPaths};

/// The service name, for systemd and runit alike.
pub const NAME: &str = paths::SERVICE_NAME;

/// Which supervisor runs the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Manager {
    /// A systemd unit, `/etc/systemd/system/opscode-pushy-server.service`.
    Systemd,
    /// A runit service under Chef Server's runsvdir (`/opt/opscode/sv/opscode-pushy-server`).
    Runit {
        /// Where it lives, under the root.
        real: Box<RunitPaths>,
        /// The same paths as the real system names them (for commands and links).
        logical: Box<RunitPaths>,
    },
}

impl Manager {
    /// Runit when Chef Server's runit tree and `sv` exist under the root, else systemd.
    pub fn detect(paths: &Paths, chef_install_path: &Path) -> Manager {
        Manager::detect_named(paths, chef_install_path, NAME)
    }

    /// The same, with runit's paths for the service `name`.
    pub fn detect_named(paths: &Paths, chef_install_path: &Path, name: &str) -> Manager {
        let real = paths.runit_named(chef_install_path, name);
        let sv_root = real.sv_dir.parent().map(Path::to_path_buf);
        if real.sv_bin.is_file() && sv_root.is_some_and(|d| d.is_dir()) {
            Manager::Runit {
                real: Box::new(real),
                logical: Box::new(Paths::default().runit_named(chef_install_path, name)),
            }
        } else {
            Manager::Systemd
        }
    }

    /// `systemd` or `runit`.
    pub fn name(&self) -> &'static str {
        match self {
            Manager::Systemd => "systemd",
            Manager::Runit { .. } => "runit",
        }
    }
}

/// What happened to a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Execution {
    /// It ran; its exit code (`None`: killed by a signal).
    Ran {
        /// Exit code.
        code: Option<i32>,
    },
    /// Not run: the root is not `/`.
    WouldRun {
        /// The root.
        root: PathBuf,
    },
    /// Not run: the tool is not there (or systemd is not running); the operator must do it.
    Unavailable {
        /// Why.
        why: String,
    },
}

/// One command for the service or for Chef Server's nginx.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// The command line.
    pub argv: Vec<String>,
    /// What happened.
    pub execution: Execution,
}

impl Action {
    /// The command line as one string.
    pub fn command_line(&self) -> String {
        self.argv.join(" ")
    }

    /// The exit code to report: the command's, 0 when it was only recorded, 1 when it could
    /// not run.
    pub fn exit_code(&self) -> u8 {
        match self.execution {
            Execution::Ran { code: Some(c) } => u8::try_from(c).unwrap_or(1),
            Execution::Ran { code: None } => 1,
            Execution::WouldRun { .. } => 0,
            Execution::Unavailable { .. } => 1,
        }
    }

    /// It ran and exited 0.
    pub fn succeeded(&self) -> bool {
        self.execution == Execution::Ran { code: Some(0) }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = self.command_line();
        match &self.execution {
            Execution::Ran { code: Some(c) } => write!(f, "ran `{line}` (exit {c})"),
            Execution::Ran { code: None } => write!(f, "ran `{line}` (killed by a signal)"),
            Execution::WouldRun { root } => {
                write!(f, "would run `{line}` (root is {}, not /)", root.display())
            }
            Execution::Unavailable { why } => write!(f, "did not run `{line}`: {why}"),
        }
    }
}

/// Runs commands on the real system only (root `/`), else records them.
#[derive(Clone, Debug)]
pub struct Runner {
    root: PathBuf,
    live: bool,
}

impl Runner {
    /// For the root of `paths`.
    pub fn new(paths: &Paths) -> Runner {
        Runner {
            root: paths.root().to_path_buf(),
            live: paths.root() == Path::new("/"),
        }
    }

    /// Whether commands really run (the root is `/`).
    pub fn live(&self) -> bool {
        self.live
    }

    /// Runs `argv` (stdio inherited) if the root is `/` and `available` says it can; retries
    /// up to `attempts` times, a second apart, while it fails.
    pub fn run(&self, argv: Vec<String>, available: Result<(), String>, attempts: u32) -> Action {
        if !self.live {
            let action = Action {
                argv,
                execution: Execution::WouldRun {
                    root: self.root.clone(),
                },
            };
            tracing::info!("{action}");
            return action;
        }
        if let Err(why) = available {
            let action = Action {
                argv,
                execution: Execution::Unavailable { why },
            };
            tracing::warn!("{action}");
            return action;
        }
        let mut execution = Execution::Unavailable {
            why: "not attempted".into(),
        };
        for attempt in 1..=attempts.max(1) {
            execution = match Command::new(&argv[0]).args(&argv[1..]).status() {
                Ok(status) => Execution::Ran {
                    code: status.code(),
                },
                Err(e) => Execution::Unavailable {
                    why: format!("cannot start {}: {e}", argv[0]),
                },
            };
            if execution == (Execution::Ran { code: Some(0) })
                || matches!(execution, Execution::Unavailable { .. })
                || attempt == attempts
            {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let action = Action { argv, execution };
        if action.succeeded() {
            tracing::info!("{action}");
        } else {
            tracing::warn!("{action}");
        }
        action
    }
}

/// What a service command asks for (omnibus-ctl's service commands, ops.md §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// `status`.
    Status,
    /// `start`.
    Start,
    /// `stop`.
    Stop,
    /// `restart`.
    Restart,
    /// `once`: start, do not restart when it stops.
    Once,
    /// `hup`.
    Hup,
    /// `term`.
    Term,
    /// `int`.
    Int,
    /// `kill`.
    Kill,
    /// `usr1`.
    Usr1,
    /// `usr2`.
    Usr2,
    /// `graceful-kill`: stop, then kill whatever is left.
    GracefulKill,
}

impl Verb {
    /// The verb for a command name.
    pub fn from_command(name: &str) -> Option<Verb> {
        Some(match name {
            "status" => Verb::Status,
            "start" => Verb::Start,
            "stop" => Verb::Stop,
            "restart" => Verb::Restart,
            "once" => Verb::Once,
            "hup" => Verb::Hup,
            "term" => Verb::Term,
            "int" => Verb::Int,
            "kill" => Verb::Kill,
            "usr1" => Verb::Usr1,
            "usr2" => Verb::Usr2,
            "graceful-kill" => Verb::GracefulKill,
            _ => return None,
        })
    }
}

/// The daemon's service on this host.
#[derive(Clone, Debug)]
pub struct Service {
    /// Its name: `opscode-pushy-server`, or `opscode-pushy-server-N` for a further instance
    /// (`crate::instances`).
    pub name: String,
    /// Its supervisor.
    pub manager: Manager,
    /// Runs or records commands.
    pub runner: Runner,
    /// The unit file, under the root.
    pub unit: PathBuf,
    /// logrotate's file for the daemon's log (systemd), under the root.
    pub logrotate: PathBuf,
}

impl Service {
    /// The service under `paths`, Chef Server installed at `chef_install_path`.
    pub fn new(paths: &Paths, chef_install_path: &Path) -> Service {
        Service::named(paths, chef_install_path, NAME)
    }

    /// The service `name` (one instance of `crate::instances`).
    pub fn named(paths: &Paths, chef_install_path: &Path, name: &str) -> Service {
        Service {
            name: name.to_owned(),
            manager: Manager::detect_named(paths, chef_install_path, name),
            runner: Runner::new(paths),
            unit: paths.systemd_unit_named(name),
            logrotate: paths.logrotate_conf_named(name),
        }
    }

    /// Whether the service is defined (unit written, or runit service directory present).
    pub fn defined(&self) -> bool {
        match &self.manager {
            Manager::Systemd => self.unit.is_file(),
            Manager::Runit { real, .. } => real.sv_dir.join("run").is_file(),
        }
    }

    /// Whether it is enabled (systemd: defined; runit: linked into runsvdir's directory).
    pub fn enabled(&self) -> bool {
        match &self.manager {
            Manager::Systemd => self.defined(),
            Manager::Runit { real, .. } => real.service_link.is_symlink(),
        }
    }

    fn systemctl(&self, args: &[&str], attempts: u32) -> Action {
        let mut argv = vec!["systemctl".to_owned()];
        argv.extend(args.iter().map(|s| (*s).to_owned()));
        self.runner.run(argv, systemd_available(), attempts)
    }

    fn sv(&self, verb: &str, attempts: u32) -> Action {
        let Manager::Runit { real, logical } = &self.manager else {
            unreachable!("sv is only used with runit");
        };
        let argv = vec![
            logical.sv_bin.display().to_string(),
            verb.to_owned(),
            logical.service_link.display().to_string(),
        ];
        let available = if real.sv_bin.is_file() {
            Ok(())
        } else {
            Err(format!("{} does not exist", real.sv_bin.display()))
        };
        self.runner.run(argv, available, attempts)
    }

    /// Runs one service command.
    pub fn control(&self, verb: Verb) -> Action {
        match &self.manager {
            Manager::Systemd => {
                let name = self.name.as_str();
                let signal = |s: &str| format!("--signal={s}");
                match verb {
                    Verb::Status => self.systemctl(&["status", "--no-pager", name], 1),
                    Verb::Start | Verb::Once => self.systemctl(&["start", name], 1),
                    Verb::Stop | Verb::GracefulKill => self.systemctl(&["stop", name], 1),
                    Verb::Restart => self.systemctl(&["restart", name], 1),
                    Verb::Hup => self.systemctl(&["kill", &signal("SIGHUP"), name], 1),
                    Verb::Term => self.systemctl(&["kill", &signal("SIGTERM"), name], 1),
                    Verb::Int => self.systemctl(&["kill", &signal("SIGINT"), name], 1),
                    Verb::Kill => self.systemctl(&["kill", &signal("SIGKILL"), name], 1),
                    Verb::Usr1 => self.systemctl(&["kill", &signal("SIGUSR1"), name], 1),
                    Verb::Usr2 => self.systemctl(&["kill", &signal("SIGUSR2"), name], 1),
                }
            }
            Manager::Runit { .. } => {
                let word = match verb {
                    Verb::Status => "status",
                    Verb::Start => "start",
                    Verb::Stop => "stop",
                    Verb::Restart => "restart",
                    Verb::Once => "once",
                    Verb::Hup => "hup",
                    Verb::Term => "term",
                    Verb::Int => "interrupt",
                    Verb::Kill => "kill",
                    Verb::Usr1 => "1",
                    Verb::Usr2 => "2",
                    Verb::GracefulKill => "force-stop",
                };
                self.sv(word, 1)
            }
        }
    }

    /// Restart after a configuration change (runit: retried while runsv comes up, as the
    /// original's 20 attempts).
    pub fn restart_for_change(&self) -> Action {
        match &self.manager {
            Manager::Systemd => self.systemctl(&["restart", &self.name], 1),
            Manager::Runit { .. } => self.sv("restart", 20),
        }
    }

    /// Start (the bootstrap step), retried like the original's.
    pub fn start_for_bootstrap(&self) -> Action {
        match &self.manager {
            Manager::Systemd => self.systemctl(&["start", &self.name], 1),
            Manager::Runit { .. } => self.sv("start", 20),
        }
    }

    /// systemd only: reload units, then enable ours.
    pub fn reload_and_enable(&self) -> Vec<Action> {
        vec![
            self.systemctl(&["daemon-reload"], 1),
            self.systemctl(&["enable", &self.name], 1),
        ]
    }

    /// systemd only: disable ours (cleanse, uninstall).
    pub fn disable(&self) -> Action {
        self.systemctl(&["disable", &self.name], 1)
    }

    /// systemd only: reload units after ours was removed.
    pub fn daemon_reload(&self) -> Action {
        self.systemctl(&["daemon-reload"], 1)
    }
}

/// systemd can be asked: it is running (sd_booted's test) and `systemctl` is installed.
fn systemd_available() -> Result<(), String> {
    if !Path::new("/run/systemd/system").is_dir() {
        return Err("systemd is not running on this host".into());
    }
    if find_in_path("systemctl").is_none() {
        return Err("systemctl is not installed".into());
    }
    Ok(())
}

/// `name` in `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Chef Server's `chef-server-ctl restart nginx`, after the add-on files changed (ops.md §5):
/// run when `<chef>/bin/chef-server-ctl` exists under the root (and the root is `/`).
pub fn restart_chef_nginx(paths: &Paths, chef_install_path: &Path) -> Action {
    let logical = chef_install_path.join("bin/chef-server-ctl");
    let real = paths.resolve(&logical);
    let argv = vec![
        logical.display().to_string(),
        "restart".to_owned(),
        "nginx".to_owned(),
    ];
    let runner = Runner::new(paths);
    if !real.is_file() {
        // Not even a dry run makes sense: tell the operator.
        let action = Action {
            argv,
            execution: Execution::Unavailable {
                why: format!(
                    "{} does not exist: restart Chef Server's nginx yourself",
                    real.display()
                ),
            },
        };
        tracing::warn!("{action}");
        return action;
    }
    runner.run(argv, Ok(()), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_a_temporary_root_commands_are_recorded_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let service = Service::new(&paths, Path::new("/opt/opscode"));
        assert_eq!(service.manager, Manager::Systemd);
        let action = service.control(Verb::Restart);
        assert_eq!(
            action.argv,
            ["systemctl", "restart", "opscode-pushy-server"]
        );
        assert!(matches!(action.execution, Execution::WouldRun { .. }));
        assert_eq!(action.exit_code(), 0);
        assert!(
            action
                .to_string()
                .starts_with("would run `systemctl restart")
        );
    }

    #[test]
    fn chef_servers_runit_is_used_when_present() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let sv = dir.path().join("opt/opscode/embedded/bin/sv");
        std::fs::create_dir_all(sv.parent().unwrap()).unwrap();
        std::fs::create_dir_all(dir.path().join("opt/opscode/sv")).unwrap();
        std::fs::write(&sv, "").unwrap();
        let service = Service::new(&paths, Path::new("/opt/opscode"));
        assert_eq!(service.manager.name(), "runit");
        let action = service.control(Verb::Int);
        assert_eq!(
            action.argv,
            [
                "/opt/opscode/embedded/bin/sv",
                "interrupt",
                "/opt/opscode/service/opscode-pushy-server"
            ]
        );
    }

    #[test]
    fn nginx_restart_without_chef_server_ctl_is_left_to_the_operator() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let action = restart_chef_nginx(&paths, Path::new("/opt/opscode"));
        assert!(matches!(action.execution, Execution::Unavailable { .. }));
        let ctl = dir.path().join("opt/opscode/bin/chef-server-ctl");
        std::fs::create_dir_all(ctl.parent().unwrap()).unwrap();
        std::fs::write(&ctl, "").unwrap();
        let action = restart_chef_nginx(&paths, Path::new("/opt/opscode"));
        assert!(matches!(action.execution, Execution::WouldRun { .. }));
        assert_eq!(
            action.command_line(),
            "/opt/opscode/bin/chef-server-ctl restart nginx"
        );
    }
}
