//! `opscode_pushy_server['instances']` (ours): several daemons on this host, one cluster
//! sharing Chef Server's PostgreSQL database and the server key (the daemon's `[cluster]`
//! section), behind one nginx upstream that spreads the REST calls over them.
//!
//! ```ruby
//! opscode_pushy_server['instances'] = 3                 # default 1
//! opscode_pushy_server['cluster_advertise_host'] = 'push.example.com'   # optional
//! ```
//!
//! Instance 0 is the daemon as it always was: service `opscode-pushy-server`, its `dir` and
//! `log_directory`, and the configured ports. Instance N (1 ≤ N < instances) is service
//! `opscode-pushy-server-N`, directories `<dir>-N` and `<log_directory>-N`, and every port
//! (`api_port`, `server_heartbeat_port`, `command_port`) plus 100 × N: with the defaults,
//! 10003/10000/10002, then 10103/10100/10102, 10203/10200/10202, …. nginx's
//! `upstream opscode_pushy` lists every instance's API port; each daemon tells the nodes its
//! own ZeroMQ ports.
//!
//! With one instance (the default) nothing changes: no `[cluster]` section, and every file
//! reads as it did before this setting existed. With more, every daemon config gets
//! `[cluster] enabled = true` (and `advertise_host` when `cluster_advertise_host` is set), and
//! reconfigure refuses a configuration the cluster cannot run on: a database other than
//! PostgreSQL (the instances share its rows), a port of 0, or ports that collide or exceed
//! 65535.

use std::path::PathBuf;

use serde::Serialize;

use crate::paths;
use crate::settings::Settings;

/// The step between two instances' ports.
pub const PORT_STEP: u16 = 100;

/// One daemon on this host.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// 0 for the first.
    pub index: u32,
    /// Its service: `opscode-pushy-server`, `opscode-pushy-server-1`, ….
    pub service: String,
    /// The settings with this instance's `dir`, `log_directory` and ports.
    pub settings: Settings,
    /// Its `[cluster]` section; `None` with a single instance.
    pub cluster: Option<Cluster>,
}

/// What the `[cluster]` section of a daemon config says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cluster {
    /// How many instances this host runs (for the config's comment).
    pub instances: u32,
    /// `advertise_host`, when the user set `cluster_advertise_host`.
    pub advertise_host: Option<String>,
}

/// A configuration the instances cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// More than one instance on a database other than PostgreSQL.
    #[error(
        "opscode_pushy_server['instances'] = {instances} needs the PostgreSQL store: the instances of a cluster share its rows, but {file} uses database engine {engine:?}; set instances to 1 or use PostgreSQL"
    )]
    NotPostgresql {
        /// `instances`.
        instances: u32,
        /// The daemon config at fault.
        file: PathBuf,
        /// Its `[database] engine`.
        engine: String,
    },
    /// A port of 0 (bind any) with more than one instance: nginx could not reach them.
    #[error(
        "opscode_pushy_server['instances'] = {instances} needs fixed ports, but opscode_pushy_server['{key}'] is 0"
    )]
    PortZero {
        /// `instances`.
        instances: u32,
        /// The setting.
        key: &'static str,
    },
    /// A port beyond 65535, or two equal ports.
    #[error(
        "opscode_pushy_server['instances'] = {instances}: {problem} (instance N uses each port + {PORT_STEP} x N)"
    )]
    Ports {
        /// `instances`.
        instances: u32,
        /// What is wrong.
        problem: String,
    },
}

/// The service name of instance `index`.
pub fn service_name(index: u32) -> String {
    if index == 0 {
        paths::SERVICE_NAME.to_owned()
    } else {
        format!("{}-{index}", paths::SERVICE_NAME)
    }
}

fn suffixed(path: &std::path::Path, index: u32) -> PathBuf {
    if index == 0 {
        path.to_path_buf()
    } else {
        PathBuf::from(format!("{}-{index}", path.display()))
    }
}

/// Every instance this host runs, in order.
///
/// # Errors
/// [`Error::PortZero`], [`Error::Ports`] (only with more than one instance).
pub fn plan(settings: &Settings) -> Result<Vec<Instance>, Error> {
    let count = settings.server.instances.max(1);
    let base = &settings.server.daemon;
    let ports = [
        ("api_port", base.api_port),
        ("server_heartbeat_port", base.server_heartbeat_port),
        ("command_port", base.command_port),
    ];
    if count > 1
        && let Some((key, _)) = ports.iter().find(|(_, port)| *port == 0)
    {
        return Err(Error::PortZero {
            instances: count,
            key,
        });
    }
    let mut out = Vec::new();
    let mut taken: Vec<(u16, String)> = Vec::new();
    for index in 0..count {
        let shifted = |key: &str, port: u16| {
            u32::from(PORT_STEP)
                .checked_mul(index)
                .and_then(|offset| u16::try_from(u32::from(port) + offset).ok())
                .ok_or_else(|| Error::Ports {
                    instances: count,
                    problem: format!("instance {index}'s {key} would be beyond 65535"),
                })
        };
        let mut daemon = base.clone();
        daemon.api_port = shifted("api_port", base.api_port)?;
        daemon.server_heartbeat_port =
            shifted("server_heartbeat_port", base.server_heartbeat_port)?;
        daemon.command_port = shifted("command_port", base.command_port)?;
        daemon.dir = suffixed(&base.dir, index);
        daemon.log_directory = suffixed(&base.log_directory, index);
        if count > 1 {
            for (key, port) in [
                ("api_port", daemon.api_port),
                ("server_heartbeat_port", daemon.server_heartbeat_port),
                ("command_port", daemon.command_port),
            ] {
                let name = format!("instance {index}'s {key}");
                if let Some((_, other)) = taken.iter().find(|(p, _)| *p == port) {
                    return Err(Error::Ports {
                        instances: count,
                        problem: format!("{name} and {other} are both {port}"),
                    });
                }
                taken.push((port, name));
            }
        }
        let cluster = (count > 1).then(|| Cluster {
            instances: count,
            advertise_host: settings.server.cluster_advertise_host.clone(),
        });
        let mut settings = settings.clone();
        settings.server.daemon = daemon;
        out.push(Instance {
            index,
            service: service_name(index),
            settings,
            cluster,
        });
    }
    Ok(out)
}

/// With more than one instance, the rendered daemon config `text` (at `file`) must use the
/// PostgreSQL store: the daemon would refuse `[cluster]` on anything else, after the service
/// was already restarted. Checked on what is written, whatever produced it.
///
/// # Errors
/// [`Error::NotPostgresql`].
pub fn require_postgresql(instances: u32, file: &std::path::Path, text: &str) -> Result<(), Error> {
    if instances <= 1 {
        return Ok(());
    }
    let engine = toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| {
            t.get("database")
                .and_then(|d| d.get("engine"))
                .and_then(|e| e.as_str().map(str::to_owned))
        })
        // The daemon's default store is SQLite.
        .unwrap_or_else(|| "sqlite".to_owned());
    if engine == "postgresql" {
        Ok(())
    } else {
        Err(Error::NotPostgresql {
            instances,
            file: file.to_path_buf(),
            engine,
        })
    }
}
