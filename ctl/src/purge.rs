//! `purge-jobs --older-than AGE [--dry-run] [--batch N] [--config FILE]` (issue 15 §5):
//! deletes, now, the jobs that finished more than AGE ago, with their nodes, options and
//! output, from the store the daemon's config names: PostgreSQL beside Chef Server, or
//! SQLite for a daemon configured by hand. The daemon does the same by itself every few
//! minutes when `opscode_pushy_server['job_retention_days']` is set; this command is for a
//! one-off clean-up, or a first large purge watched from a terminal.
//!
//! It deletes a batch at a time (one short transaction each, the store's
//! `delete_finished_jobs`) and pauses after each batch at least as long as the batch took,
//! so the running daemon's job writes go on between batches. Jobs that are not finished
//! (new, voting, running) are never touched, however old.
//!
//! The store is found as the daemon finds it: the config file (default: the daemon
//! directory's `opscode-pushy-server.toml`) gives the engine and where the database is; the
//! PostgreSQL password is the file's, else `push-jobs-server.sql_password` from the secrets
//! file, which the launcher hands the daemon. Like the daemon at start-up, connecting
//! applies any schema migration still pending.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::Utc;
use pushy_store::retention::{cutoff, sweep};
use pushy_store::{PgConnectOptions, PostgresStore, SqliteStore, Store};

use crate::paths::Paths;
use crate::secrets::GROUP;
use crate::veil::SecretsFile;

/// `purge-jobs --help`.
pub const USAGE: &str = "\
Usage: push-jobs-server-ctl purge-jobs --older-than AGE [--dry-run] [--batch N] [--config FILE]

Deletes the jobs that finished (complete, quorum_failed, aborted, timed_out, crashed) more
than AGE ago, with their nodes, options and output. Jobs still new, voting or running are
never deleted. Runs against the database the daemon's config names (PostgreSQL or SQLite),
a batch at a time, pausing between batches so that running jobs are not held up.

  --older-than AGE  a number and a unit, s, m (minutes), h, d or w: 90d, 12h, 2w; at least 1m
  --dry-run         count the jobs that would be deleted, and delete nothing
  --batch N         jobs deleted per transaction (default 100)
  --config FILE     the daemon's config (default: the daemon directory's
                    opscode-pushy-server.toml, as reconfigure writes it)

To delete old jobs continuously, set opscode_pushy_server['job_retention_days'] in
/etc/opscode-push-jobs-server/opscode-push-jobs-server.rb and reconfigure.
";

/// The shortest `--older-than`: a job's task, its event feed and the client that started
/// it all look at the job for a few seconds after it finished (the daemon's own minimum).
pub const MIN_AGE: Duration = Duration::from_secs(60);

/// Jobs per batch unless `--batch` says otherwise (the daemon's default too).
pub const DEFAULT_BATCH: u32 = 100;

/// The parsed arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeArgs {
    /// Jobs that finished longer ago than this go.
    pub older_than: Duration,
    /// Count only.
    pub dry_run: bool,
    /// Jobs per transaction.
    pub batch: u32,
    /// The daemon's config as the real system names it; `None`: the default.
    pub config: Option<PathBuf>,
}

impl PurgeArgs {
    /// Parses the words after `purge-jobs`; `None` when they ask for `--help`.
    ///
    /// # Errors
    /// An unknown word, a missing or bad value, or no `--older-than`.
    pub fn parse(args: &[String]) -> anyhow::Result<Option<PurgeArgs>> {
        let mut older_than = None;
        let mut parsed = PurgeArgs {
            older_than: Duration::ZERO,
            dry_run: false,
            batch: DEFAULT_BATCH,
            config: None,
        };
        let mut words = args.iter();
        while let Some(word) = words.next() {
            let (name, inline) = match word.split_once('=') {
                Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
                _ => (word.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| words.next().cloned())
                    .with_context(|| format!("purge-jobs: {name} needs a value"))
            };
            match name {
                "-h" | "--help" => return Ok(None),
                "--older-than" => {
                    let text = value()?;
                    let age = parse_age(&text)
                        .map_err(|why| anyhow::anyhow!("purge-jobs: --older-than {text}: {why}"))?;
                    older_than = Some(age);
                }
                "--dry-run" => parsed.dry_run = true,
                "--batch" => {
                    let text = value()?;
                    parsed.batch = match text.parse::<u32>() {
                        Ok(n) if n > 0 => n,
                        _ => bail!(
                            "purge-jobs: --batch {text}: must be a whole number of at least 1"
                        ),
                    };
                }
                "--config" => parsed.config = Some(value()?.into()),
                other => bail!(
                    "purge-jobs: unknown argument {other:?} (see push-jobs-server-ctl purge-jobs --help)"
                ),
            }
        }
        parsed.older_than = older_than.context(
            "purge-jobs needs --older-than AGE, e.g. --older-than 90d (see purge-jobs --help)",
        )?;
        Ok(Some(parsed))
    }
}

/// An age written as a whole number and a unit: `90s`, `30m`, `12h`, `30d`, `2w`. A unit is
/// required: for a command that deletes, a bare number's unit would be a guess. At least
/// [`MIN_AGE`].
///
/// # Errors
/// What is wrong with it, for the user.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or("needs a unit: s, m, h, d or w (e.g. 30d)")?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| "must start with a whole number (e.g. 30d)")?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("unknown unit {unit:?}: use s, m, h, d or w")),
    };
    let secs = n.checked_mul(unit_secs).ok_or("is too long")?;
    let age = Duration::from_secs(secs);
    if age < MIN_AGE {
        return Err("must be at least 1m".to_owned());
    }
    Ok(age)
}

/// Where the jobs are, as the daemon's config says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file, as the real system names it.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgresql {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// User.
        user: String,
        /// Database.
        name: String,
        /// The config file's password; empty: the secrets file's, if any.
        password: String,
    },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "SQLite database {}", path.display()),
            Location::Postgresql {
                host,
                port,
                user,
                name,
                ..
            } => write!(f, "PostgreSQL database {name} at {host}:{port} as {user}"),
        }
    }
}

/// The store the daemon config `text` (the file `config`, as the real system names it)
/// uses, with the daemon's defaults for what it leaves out: SQLite at
/// `<data_dir>/pushy.sqlite`, PostgreSQL `opscode_pushy` on 127.0.0.1:5432. Relative paths
/// are the daemon's, whose working directory is its config's directory (`crate::launch`).
///
/// # Errors
/// Text that is not TOML, or a `[database]` value of the wrong type.
pub fn locate(text: &str, config: &Path) -> anyhow::Result<Location> {
    let table: toml::Table =
        toml::from_str(text).with_context(|| format!("reading {}", config.display()))?;
    let bad = |key: &str, expected: &str| {
        anyhow::anyhow!("{}: {key} must be {expected}", config.display())
    };
    let empty = toml::Table::new();
    let db = match table.get("database") {
        None => &empty,
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(bad("database", "a table")),
    };
    let string = |t: &toml::Table, key: &str, default: &str| match t.get(key) {
        None => Ok(default.to_owned()),
        Some(toml::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(bad(key, "a string")),
    };
    let home = config.parent().unwrap_or(Path::new("/"));
    match string(db, "engine", "sqlite")?.as_str() {
        "sqlite" => {
            let data_dir = home.join(string(&table, "data_dir", "data")?);
            let path = match db.get("sqlite_path") {
                None => data_dir.join("pushy.sqlite"),
                Some(toml::Value::String(p)) => home.join(p),
                Some(_) => return Err(bad("database.sqlite_path", "a string")),
            };
            Ok(Location::Sqlite(path))
        }
        "postgresql" => {
            let port = match db.get("port") {
                None => 5432,
                Some(toml::Value::Integer(p)) => {
                    u16::try_from(*p).map_err(|_| bad("database.port", "a port number"))?
                }
                Some(_) => return Err(bad("database.port", "a port number")),
            };
            Ok(Location::Postgresql {
                host: string(db, "host", "127.0.0.1")?,
                port,
                user: string(db, "user", "opscode_pushy")?,
                name: string(db, "name", "opscode_pushy")?,
                password: string(db, "password", "")?,
            })
        }
        other => Err(bad(
            "database.engine",
            &format!("\"sqlite\" or \"postgresql\", not {other:?}"),
        )),
    }
}

/// Opens the store at `location` (paths taken under `paths`' root).
async fn open(paths: &Paths, location: &Location) -> anyhow::Result<Box<dyn Store>> {
    match location {
        Location::Sqlite(path) => {
            let real = paths.resolve(path);
            if !real.exists() {
                bail!("there is no {location} (nothing to purge)");
            }
            let store = SqliteStore::open(&real)
                .await
                .with_context(|| format!("opening the {location}"))?;
            Ok(Box::new(store))
        }
        Location::Postgresql {
            host,
            port,
            user,
            name,
            password,
        } => {
            let mut options = PgConnectOptions::new_without_pgpass()
                .host(host)
                .port(*port)
                .username(user)
                .database(name)
                .application_name("push-jobs-server-ctl purge-jobs");
            let password = match password.as_str() {
                "" => secrets_password(paths)?,
                given => Some(given.to_owned()),
            };
            if let Some(password) = password {
                options = options.password(&password);
            }
            let store = PostgresStore::connect(options, 1)
                .await
                .with_context(|| format!("connecting to the {location}"))?;
            Ok(Box::new(store))
        }
    }
}

/// `push-jobs-server.sql_password` from the secrets file; `None` when there is no file.
fn secrets_password(paths: &Paths) -> anyhow::Result<Option<String>> {
    let file = paths.chef_secrets_file();
    if !file.exists() {
        return Ok(None);
    }
    let secrets = SecretsFile::load(&file)
        .with_context(|| format!("reading the database password from {}", file.display()))?;
    Ok(secrets.get(GROUP, "sql_password").map(str::to_owned))
}

/// Runs the command: the store named by the config at `args.config` (else
/// `default_config`), then a count (`--dry-run`) or the batches, with a line of progress
/// per batch and the total on `out`. Returns how many jobs were (or would be) deleted.
///
/// # Errors
/// The config cannot be read, the store cannot be opened, or a batch failed (the batches
/// before it stay deleted, and the message says how many).
pub async fn run(
    paths: &Paths,
    args: &PurgeArgs,
    default_config: &Path,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let config = args.config.as_deref().unwrap_or(default_config);
    let real = paths.resolve(config);
    let text = std::fs::read_to_string(&real).with_context(|| {
        format!(
            "reading the daemon's config {} (run push-jobs-server-ctl reconfigure first, or name it with --config)",
            real.display()
        )
    })?;
    let location = locate(&text, config)?;
    let store = open(paths, &location).await?;
    let cutoff = cutoff(Utc::now(), args.older_than);
    let before = cutoff.format("%Y-%m-%d %H:%M:%S UTC");
    if args.dry_run {
        let n = store
            .count_finished_jobs(cutoff)
            .await
            .with_context(|| format!("counting finished jobs in the {location}"))?;
        writeln!(
            out,
            "{n} jobs finished before {before} and would be deleted from the {location} (dry run: nothing was deleted)."
        )?;
        return Ok(n);
    }
    writeln!(
        out,
        "Deleting jobs that finished before {before} from the {location}, {} at a time.",
        args.batch
    )?;
    // The daemon's own paced loop; progress lines are best effort (a closed pipe must
    // not stop a purge half-way), the first write error is reported after it.
    let (mut so_far, mut written) = (0, Ok(()));
    let progress = |n: u64| {
        so_far += n;
        if n > 0 && written.is_ok() {
            written =
                writeln!(out, "  deleted {n} jobs ({so_far} so far)").and_then(|()| out.flush());
        }
    };
    let total = sweep(store.as_ref(), cutoff, args.batch, progress).await?;
    written?;
    writeln!(
        out,
        "Deleted {total} finished jobs with their nodes, options and output."
    )?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn ages_need_a_unit_and_at_least_a_minute() {
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_age("60s"), Ok(Duration::from_secs(60)));
        for bad in [
            "30",
            "d",
            "-1d",
            "1.5d",
            "30 days",
            "59s",
            "0d",
            "",
            "99999999999999999w",
        ] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arguments_need_an_age_and_refuse_unknown_words() {
        let a = PurgeArgs::parse(&words(&["--older-than", "30d"]))
            .unwrap()
            .unwrap();
        assert_eq!(
            a,
            PurgeArgs {
                older_than: Duration::from_secs(30 * 86_400),
                dry_run: false,
                batch: DEFAULT_BATCH,
                config: None,
            }
        );
        let a = PurgeArgs::parse(&words(&[
            "--dry-run",
            "--older-than=1w",
            "--batch",
            "7",
            "--config",
            "/x.toml",
        ]))
        .unwrap()
        .unwrap();
        assert!(a.dry_run);
        assert_eq!(a.batch, 7);
        assert_eq!(a.older_than, Duration::from_secs(7 * 86_400));
        assert_eq!(a.config.as_deref(), Some(Path::new("/x.toml")));
        assert_eq!(PurgeArgs::parse(&words(&["--help"])).unwrap(), None);
        for bad in [
            &[][..],
            &["--dry-run"][..],
            &["--older-than"][..],
            &["--older-than", "30"][..],
            &["--older-than", "30d", "--batch", "0"][..],
            &["--older-than", "30d", "--frob"][..],
        ] {
            assert!(PurgeArgs::parse(&words(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_store_is_found_as_the_daemon_finds_it() {
        let config = Path::new("/var/opt/push/opscode-pushy-server.toml");
        assert_eq!(
            locate("", config).unwrap(),
            Location::Sqlite("/var/opt/push/data/pushy.sqlite".into())
        );
        assert_eq!(
            locate("data_dir = \"/srv/d\"\n", config).unwrap(),
            Location::Sqlite("/srv/d/pushy.sqlite".into())
        );
        assert_eq!(
            locate("[database]\nsqlite_path = \"jobs.db\"\n", config).unwrap(),
            Location::Sqlite("/var/opt/push/jobs.db".into())
        );
        let pg = "[database]\nengine = \"postgresql\"\nhost = \"10.0.0.5\"\nport = 5433\nuser = \"u\"\nname = \"pushy\"\npool_size = 20\n";
        assert_eq!(
            locate(pg, config).unwrap(),
            Location::Postgresql {
                host: "10.0.0.5".into(),
                port: 5433,
                user: "u".into(),
                name: "pushy".into(),
                password: String::new(),
            }
        );
        assert_eq!(
            locate("[database]\nengine = \"postgresql\"\n", config)
                .unwrap()
                .to_string(),
            "PostgreSQL database opscode_pushy at 127.0.0.1:5432 as opscode_pushy"
        );
        for bad in [
            "[database]\nengine = \"mysql\"\n",
            "[database]\nengine = \"postgresql\"\nport = 70000\n",
            "database = 1\n",
            "not toml",
        ] {
            assert!(locate(bad, config).is_err(), "{bad}");
        }
    }
}
