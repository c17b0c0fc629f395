//! `push-jobs-server-ctl launch` (hidden): what the service definition runs. The original's run
//! script did the same with `veil-env-helper --pack … -- chpst -u opscode …` (ops.md §3.4,
//! §6.1): as root, read the secrets file, put the daemon's secrets into `CHEF_SECRETS_DATA`,
//! become Chef Server's user, and exec the daemon. The secrets never touch the disk in clear,
//! and the daemon unsets the variable once read.
//!
//! `launch [--config FILE] [--user NAME]`: the config defaults to the default daemon
//! directory's `opscode-pushy-server.toml`, the user to Chef Server's (`opscode`). The user is
//! only switched to when running as root. Paths are taken under `--root`.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;

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

/// The command that starts the daemon: `<install>/bin/opscode-pushy-server --config FILE
/// serve`, with `CHEF_SECRETS_DATA`, `HOME` and, as root, the service user's ids.
///
/// # Errors
/// The secrets file cannot be read or lacks a secret the daemon needs; the user does not
/// exist.
pub fn command(paths: &Paths, args: &LaunchArgs) -> anyhow::Result<Command> {
    let secrets_path = paths.chef_secrets_file();
    if !secrets_path.exists() {
        bail!(
            "{} does not exist: run push-jobs-server-ctl reconfigure first",
            secrets_path.display()
        );
    }
    let store = SecretsFile::load(&secrets_path)?;
    let data = store.pack(&secrets::daemon_secrets())?;
    let config = paths.resolve(&args.config);
    let home = config
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| paths.root().to_path_buf());
    let mut cmd = Command::new(paths.resolve(paths::DAEMON_BIN));
    cmd.arg("--config")
        .arg(&config)
        .arg("serve")
        .env("CHEF_SECRETS_DATA", data)
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
    Ok(cmd)
}

/// Execs the daemon; returns only on failure.
///
/// # Errors
/// Whatever [`command`] refuses, or the exec failing.
pub fn launch(paths: &Paths, args: &[String]) -> anyhow::Result<u8> {
    let args = LaunchArgs::parse(args)?;
    let mut cmd = command(paths, &args)?;
    let program = cmd.get_program().to_owned();
    let err = cmd.exec();
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
