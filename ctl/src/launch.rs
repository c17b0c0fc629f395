//! `push-jobs-server-ctl launch` (hidden): what the service definition runs. The original's run
//! script did the same with `veil-env-helper --pack … -- chpst -u opscode …` (ops.md §3.4,
//! §6.1): as root, read the secrets file, hand the daemon its secrets, become Chef Server's
//! user, and exec the daemon. The secrets never touch the disk in clear.
//!
//! They are handed over in a pipe, as `veil-env-helper --use-file` does, not in
//! `CHEF_SECRETS_DATA` (the original's `--pack`): a process's initial environment stays
//! readable in `/proc/PID/environ` for its whole life, whatever it unsets. The packed JSON
//! and a newline are written into a pipe whose write end is then closed, and the daemon
//! inherits the read end, named by `CHEF_SECRETS_FD`; it reads to the end and closes it, so
//! the secrets are gone from the pipe too. The pipe is written whole before the exec (there
//! is no process left to write later), which is fine: the secrets are a few KiB and a pipe
//! holds 64 KiB by default; a bigger pack grows the pipe, and one that still does not fit
//! is an error, never a launcher blocked on its own pipe.
//!
//! `launch [--config FILE] [--user NAME]`: the config defaults to the default daemon
//! directory's `opscode-pushy-server.toml`, the user to Chef Server's (`opscode`). The user is
//! only switched to when running as root. Paths are taken under `--root`.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};

use anyhow::{Context as _, bail};

use crate::chef_server::ChefServer;
use crate::paths::{self, Paths};
use crate::secrets;
use crate::user_config::Daemon;
use crate::veil::SecretsFile;

/// The parsed `launch` arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchArgs {
    /// The daemon's config, as the real system names it.
    pub config: PathBuf,
    /// Who the daemon runs as (when we are root).
    pub user: Option<String>,
}

impl LaunchArgs {
    /// Parses `--config FILE` and `--user NAME`.
    ///
    /// # Errors
    /// An unknown word or a missing value.
    pub fn parse(args: &[String]) -> anyhow::Result<LaunchArgs> {
        let mut parsed = LaunchArgs {
            config: Daemon::default().dir.join(paths::DAEMON_CONFIG_NAME),
            user: None,
        };
        let mut words = args.iter();
        while let Some(word) = words.next() {
            let mut value = |name: &str| {
                words
                    .next()
                    .cloned()
                    .with_context(|| format!("launch: {name} needs a value"))
            };
            match word.as_str() {
                "--config" => parsed.config = value("--config")?.into(),
                "--user" => parsed.user = Some(value("--user")?),
                other => bail!(
                    "launch: unknown argument {other:?} (expected --config FILE, --user NAME)"
                ),
            }
        }
        Ok(parsed)
    }
}

/// The daemon's command and the pipe holding its secrets.
#[derive(Debug)]
pub struct Launch {
    /// `<install>/bin/opscode-pushy-server --config FILE serve`, with `CHEF_SECRETS_FD`,
    /// `HOME` and, as root, the service user's ids.
    pub command: Command,
    /// The read end of the pipe, inherited across exec: keep it open until then.
    pub secrets: OwnedFd,
}

/// A pipe holding `data` and a newline, its write end closed so that the reader meets the
/// end; returns the read end, without close-on-exec so that the daemon inherits it.
///
/// # Errors
/// The pipe cannot be made, or `data` does not fit in it.
pub fn secrets_pipe(data: &str) -> anyhow::Result<OwnedFd> {
    let (read, write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("making the pipe for the secrets")?;
    let text = format!("{data}\n");
    let capacity = fcntl(&write, FcntlArg::F_GETPIPE_SZ).context("sizing the secrets pipe")?;
    if text.len() > usize::try_from(capacity).unwrap_or(0) {
        let wanted = i32::try_from(text.len()).unwrap_or(i32::MAX);
        fcntl(&write, FcntlArg::F_SETPIPE_SZ(wanted)).with_context(|| {
            format!(
                "growing the secrets pipe to {} bytes (see /proc/sys/fs/pipe-max-size)",
                text.len()
            )
        })?;
    }
    // Non-blocking: secrets that still do not fit fail here instead of blocking for ever,
    // since nobody reads the pipe before the exec.
    fcntl(&write, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).context("setting up the secrets pipe")?;
    File::from(write)
        .write_all(text.as_bytes())
        .with_context(|| format!("writing {} bytes of secrets into a pipe", text.len()))?;
    fcntl(&read, FcntlArg::F_SETFD(FdFlag::empty())).context("setting up the secrets pipe")?;
    Ok(read)
}

/// The command that starts the daemon, with its secrets waiting in a pipe.
///
/// # Errors
/// The secrets file cannot be read or lacks a secret the daemon needs; the user does not
/// exist; the pipe cannot be made.
pub fn command(paths: &Paths, args: &LaunchArgs) -> anyhow::Result<Launch> {
    let secrets_path = paths.chef_secrets_file();
    if !secrets_path.exists() {
        bail!(
            "{} does not exist: run push-jobs-server-ctl reconfigure first",
            secrets_path.display()
        );
    }
    let store = SecretsFile::load(&secrets_path)?;
    let data = store.pack(&secrets::daemon_secrets())?;
    let secrets = secrets_pipe(&data)?;
    let config = paths.resolve(&args.config);
    let home = config
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| paths.root().to_path_buf());
    let mut cmd = Command::new(paths.resolve(paths::DAEMON_BIN));
    cmd.arg("--config")
        .arg(&config)
        .arg("serve")
        .env("CHEF_SECRETS_FD", secrets.as_raw_fd().to_string())
        // The daemon prefers the variable: one left in our environment must not win.
        .env_remove("CHEF_SECRETS_DATA")
        .env("HOME", &home)
        .current_dir(&home);
    if nix::unistd::geteuid().is_root() {
        let name = match &args.user {
            Some(name) => name.clone(),
            None => ChefServer::load(&paths.chef_server_running_json())
                .map(|c| c.user)
                .unwrap_or_else(|_| "opscode".to_owned()),
        };
        let user = nix::unistd::User::from_name(&name)
            .with_context(|| format!("looking up user {name}"))?
            .with_context(|| format!("user {name} does not exist: is Chef Server installed?"))?;
        // std drops the supplementary groups when root sets a uid (chpst -u does the same).
        cmd.uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .env("USER", &name)
            .env("LOGNAME", &name);
    }
    Ok(Launch {
        command: cmd,
        secrets,
    })
}

/// Execs the daemon; returns only on failure.
///
/// # Errors
/// Whatever [`command`] refuses, or the exec failing.
pub fn launch(paths: &Paths, args: &[String]) -> anyhow::Result<u8> {
    let args = LaunchArgs::parse(args)?;
    let Launch {
        command: mut cmd,
        secrets,
    } = command(paths, &args)?;
    let program = cmd.get_program().to_owned();
    let err = cmd.exec();
    drop(secrets);
    Err(err).with_context(|| format!("starting {}", PathBuf::from(program).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn arguments_have_defaults_and_unknown_ones_are_refused() {
        let a = LaunchArgs::parse(&[]).unwrap();
        assert_eq!(
            a.config,
            PathBuf::from(
                "/var/opt/opscode-push-jobs-server/opscode-pushy-server/opscode-pushy-server.toml"
            )
        );
        assert_eq!(a.user, None);
        let a = LaunchArgs::parse(&words(&["--config", "/x.toml", "--user", "u"])).unwrap();
        assert_eq!(
            (a.config, a.user),
            (PathBuf::from("/x.toml"), Some("u".into()))
        );
        assert!(LaunchArgs::parse(&words(&["--user"])).is_err());
        assert!(LaunchArgs::parse(&words(&["--frob"])).is_err());
    }

    #[test]
    fn a_missing_secrets_file_or_secret_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let args = LaunchArgs::parse(&[]).unwrap();
        let err = command(&paths, &args).unwrap_err().to_string();
        assert!(
            err.contains("private-chef-secrets.json does not exist"),
            "{err}"
        );
        // A secrets file without the pivotal key: the service must not start.
        crate::secrets::bootstrap(&paths).unwrap();
        let err = format!("{:#}", command(&paths, &args).unwrap_err());
        assert!(
            err.contains("chef-server.superuser_key is missing"),
            "{err}"
        );
    }
}
