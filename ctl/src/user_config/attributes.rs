//! [`Attributes`]: the user config typed, every attribute of ops.md §1.3 with the cookbook's
//! default (`attributes/default.rb` of the original, 3.0.4).
//!
//! Attributes that reconfigure computes when the user leaves them unset — `vip`,
//! `server_name_advertised`, `enable`, `bootstrap['enable']`, `postgresql['db_superuser']` — are
//! `Option`s here: `None` means "not set by the user", which is what the original's `||=` tests.
//! `settings::compute` resolves them into `settings::Settings`.

use std::path::PathBuf;

use serde::Serialize;

use super::{Error, Setting, Tree, Value, Warning, display_key};

/// Everything the user config can say (ops.md §1.3), defaults filled in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attributes {
    /// `opscode_pushy_server[…]`: the daemon.
    pub opscode_pushy_server: PushyServer,
    /// `postgresql[…]`: the database.
    pub postgresql: Postgresql,
    /// `bootstrap[…]`.
    pub bootstrap: Bootstrap,
    /// `oc_chef_pedant[…]`: the `ctl test` suite.
    pub oc_chef_pedant: OcChefPedant,
}

/// `opscode_pushy_server[…]`.
#[derive(Clone, Debug, PartialEq)]
pub struct PushyServer {
    /// `enable`: run the daemon on this host. Default true; `None` lets tier/HA frontends turn it
    /// off (the original's `||= false`).
    pub enable: Option<bool>,
    /// `ha`: legacy DRBD-HA marker, default false; forced to `topology == 'ha'` on tier/HA.
    pub ha: bool,
    /// `vip`: the push server's address (nginx upstream, advertised name). `None`: computed from
    /// Chef Server (`lb.api_fqdn` standalone, `backend_vips.ipaddress` tier/HA). A user value
    /// wins (`||=` since 2.2.6).
    pub vip: Option<String>,
    /// `server_name_advertised`: the host name clients use for ZeroMQ. `None`: the `vip`.
    pub server_name_advertised: Option<String>,
    /// `instances` (ours): how many daemons run on this host, sharing Chef Server's
    /// PostgreSQL database as one cluster (`crate::instances`). Default 1: one daemon, no
    /// `[cluster]` section, everything as the original.
    pub instances: u32,
    /// `cluster_advertise_host` (ours): the host nodes use to reach these instances' ZeroMQ
    /// ports (the daemon's `cluster.advertise_host`). `None`: the advertised server name.
    pub cluster_advertise_host: Option<String>,
    /// `job_retention_days` (ours, issue 15 §5): finished jobs are deleted, with their nodes,
    /// options and output, this many days after they finished (the daemon's `[retention]`).
    /// Default 0: every job is kept, as the original did.
    pub job_retention_days: u32,
    /// Everything else: plain settings with fixed defaults.
    pub daemon: Daemon,
}

impl Default for PushyServer {
    fn default() -> Self {
        PushyServer {
            enable: None,
            ha: false,
            vip: None,
            server_name_advertised: None,
            instances: 1,
            cluster_advertise_host: None,
            job_retention_days: 0,
            daemon: Daemon::default(),
        }
    }
}

/// The daemon's settings that no topology rule touches (ops.md §1.3 table; names as in the file).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Daemon {
    /// `dir`: daemon HOME and rendered config.
    pub dir: PathBuf,
    /// `log_directory`.
    pub log_directory: PathBuf,
    /// `log_rotation[…]`: svlogd settings.
    pub log_rotation: LogRotation,
    /// `listen`: '127.0.0.1'; unused by the original (its API binds 0.0.0.0).
    pub listen: String,
    /// `db_pool_size`: SQL pool size, 20.
    pub db_pool_size: u32,
    /// `ibrowse_max_sessions`: HTTP client sessions per host (calls to erchef), 256.
    pub ibrowse_max_sessions: u32,
    /// `ibrowse_max_pipeline_size`: 1.
    pub ibrowse_max_pipeline_size: u32,
    /// `max_body_size`: largest ZeroMQ message body in bytes, 65536; also sent to clients.
    pub max_body_size: u64,
    /// `heartbeat_interval`: server heartbeat period in milliseconds, 10000.
    pub heartbeat_interval: u64,
    /// `zeromq_listen_address`: bind prefix of both ZeroMQ sockets, 'tcp://*'.
    pub zeromq_listen_address: String,
    /// `zmq_io_processes`: ZeroMQ I/O threads, 2 (the original: 1; see the README).
    pub zmq_io_processes: u32,
    /// `server_heartbeat_port`: ZeroMQ PUB port, 10000.
    pub server_heartbeat_port: u16,
    /// `command_port`: ZeroMQ ROUTER port, 10002.
    pub command_port: u16,
    /// `api_port`: HTTP port nginx proxies to, 10003.
    pub api_port: u16,
    /// `down_threshold`: heartbeat ratio under which a node is down, 0.6.
    pub down_threshold: f64,
    /// `decay_window`: heartbeat averaging window, 4.
    pub decay_window: u32,
    /// `detect_offline_nodes_interval`: scan period in heartbeat intervals, 4.
    pub detect_offline_nodes_interval: u32,
    /// `validate_client_node_name`: a client may only fetch its own node's config, true.
    pub validate_client_node_name: bool,
    /// `enable_graphite`: false.
    pub enable_graphite: bool,
    /// `graphite_host`: 'localhost'.
    pub graphite_host: String,
    /// `graphite_port`: 2003.
    pub graphite_port: u16,
    /// `chef_api_version`: `X-Chef-Version` on calls to erchef, '11.1.0'.
    pub chef_api_version: String,
    /// `keyring_dir`: /etc/opscode-push-jobs-server; used by 1.x–2.1 only (keys live in the
    /// secrets file since 2.2).
    pub keyring_dir: PathBuf,
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            dir: "/var/opt/opscode-push-jobs-server/opscode-pushy-server".into(),
            log_directory: "/var/log/opscode/opscode-pushy-server".into(),
            log_rotation: LogRotation::default(),
            listen: "127.0.0.1".into(),
            db_pool_size: 20,
            ibrowse_max_sessions: 256,
            ibrowse_max_pipeline_size: 1,
            max_body_size: 65536,
            heartbeat_interval: 10_000,
            zeromq_listen_address: "tcp://*".into(),
            zmq_io_processes: 2,
            server_heartbeat_port: 10000,
            command_port: 10002,
            api_port: 10003,
            down_threshold: 0.6,
            decay_window: 4,
            detect_offline_nodes_interval: 4,
            validate_client_node_name: true,
            enable_graphite: false,
            graphite_host: "localhost".into(),
            graphite_port: 2003,
            chef_api_version: "11.1.0".into(),
            keyring_dir: "/etc/opscode-push-jobs-server".into(),
        }
    }
}

/// `opscode_pushy_server['log_rotation'][…]`, rendered into svlogd's `config`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogRotation {
    /// `file_maxbytes` (svlogd `s`): 104857600.
    pub file_maxbytes: u64,
    /// `num_to_keep` (svlogd `n`): 10.
    pub num_to_keep: u32,
}

impl Default for LogRotation {
    fn default() -> Self {
        LogRotation {
            file_maxbytes: 104_857_600,
            num_to_keep: 10,
        }
    }
}

/// `postgresql[…]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Postgresql {
    /// `database_name`: 'opscode_pushy'.
    pub database_name: String,
    /// `username`: OS user for local connections, 'opscode-pgsql'.
    pub username: String,
    /// `sql_user`: the daemon's read-write role, 'opscode_pushy'.
    pub sql_user: String,
    /// `sql_ro_user`: the read-only role, 'opscode_pushy_ro'.
    pub sql_ro_user: String,
    /// `vip`: '127.0.0.1', always replaced by Chef Server's `postgresql.vip`.
    pub vip: String,
    /// `port`: 5432, always replaced by Chef Server's `postgresql.port`.
    pub port: u16,
    /// `db_superuser`: no default; always replaced by Chef Server's `postgresql.db_superuser`.
    pub db_superuser: Option<String>,
    /// `sql_password`: ≤ 2.1 only; the password lives in the secrets file since 2.2.
    pub sql_password: Option<String>,
    /// `sql_ro_password`: ≤ 2.1 only.
    pub sql_ro_password: Option<String>,
}

impl Default for Postgresql {
    fn default() -> Self {
        Postgresql {
            database_name: "opscode_pushy".into(),
            username: "opscode-pgsql".into(),
            sql_user: "opscode_pushy".into(),
            sql_ro_user: "opscode_pushy_ro".into(),
            vip: "127.0.0.1".into(),
            port: 5432,
            db_superuser: None,
            sql_password: None,
            sql_ro_password: None,
        }
    }
}

/// `bootstrap[…]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bootstrap {
    /// `enable`: explicitly start the daemon and write the sentinel. `None`: true, unless the
    /// `bootstrapped` sentinel exists or this is a tier/HA frontend.
    pub enable: Option<bool>,
}

/// `oc_chef_pedant[…]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OcChefPedant {
    /// `dir`: /var/opt/opscode/oc-chef-pedant.
    pub dir: PathBuf,
    /// `log_directory`: /var/log/opscode/oc-chef-pedant.
    pub log_directory: PathBuf,
    /// `log_http_requests`: true.
    pub log_http_requests: bool,
}

impl Default for OcChefPedant {
    fn default() -> Self {
        OcChefPedant {
            dir: "/var/opt/opscode/oc-chef-pedant".into(),
            log_directory: "/var/log/opscode/oc-chef-pedant".into(),
            log_http_requests: true,
        }
    }
}

/// Settings that are accepted but change nothing here, and why (ops.md §1.3, §9 item 4): the
/// original ignored most of them silently; we warn like we do for unknown settings.
const IGNORED: &[(&[&str], &str)] = &[
    (
        &["postgresql", "vip"],
        "is always taken from Chef Server's postgresql['vip']",
    ),
    (
        &["postgresql", "port"],
        "is always taken from Chef Server's postgresql['port']",
    ),
    (
        &["postgresql", "db_superuser"],
        "is always taken from Chef Server's postgresql['db_superuser']",
    ),
    (
        &["postgresql", "sql_password"],
        "is not used: the password is kept in /etc/opscode/private-chef-secrets.json",
    ),
    (
        &["postgresql", "sql_ro_password"],
        "is not used: the password is kept in /etc/opscode/private-chef-secrets.json",
    ),
    (
        &["opscode_pushy_server", "keyring_dir"],
        "is not used: the keys are kept in /etc/opscode/private-chef-secrets.json",
    ),
    (
        &["opscode_pushy_server", "listen"],
        "is not used: the API listens on 0.0.0.0:api_port, as the original's did",
    ),
    (
        &["opscode_pushy_server", "ha"],
        "is not used: a legacy DRBD-HA marker the original ignored too",
    ),
    (
        &["opscode_pushy_server", "enable_graphite"],
        "is not used: there is no Graphite reporter; scrape GET /metrics on api_port instead",
    ),
    (
        &["opscode_pushy_server", "graphite_host"],
        "is not used: there is no Graphite reporter; scrape GET /metrics on api_port instead",
    ),
    (
        &["opscode_pushy_server", "graphite_port"],
        "is not used: there is no Graphite reporter; scrape GET /metrics on api_port instead",
    ),
    (
        &["opscode_pushy_server", "ibrowse_max_sessions"],
        "is not used: it sized the original's Erlang HTTP client",
    ),
    (
        &["opscode_pushy_server", "ibrowse_max_pipeline_size"],
        "is not used: it sized the original's Erlang HTTP client",
    ),
];

impl Attributes {
    /// Types `tree`, filling defaults. Returns the attributes and a warning for every setting
    /// that is unknown or has no effect.
    ///
    /// # Errors
    /// [`Error::Type`] for a known setting whose value has the wrong kind, naming file and line.
    pub fn from_tree(tree: &Tree) -> Result<(Attributes, Vec<Warning>), Error> {
        let mut r = Reader {
            tree,
            used: vec![false; tree.settings.len()],
        };
        let d = Daemon::default();
        let pg = Postgresql::default();
        let pedant = OcChefPedant::default();
        const S: &str = "opscode_pushy_server";
        r.require_hash(&[S, "log_rotation"])?;
        let daemon = Daemon {
            dir: r.abs_path(&[S, "dir"], d.dir)?,
            log_directory: r.abs_path(&[S, "log_directory"], d.log_directory)?,
            log_rotation: LogRotation {
                file_maxbytes: r.int(
                    &[S, "log_rotation", "file_maxbytes"],
                    d.log_rotation.file_maxbytes,
                )?,
                num_to_keep: r.int(
                    &[S, "log_rotation", "num_to_keep"],
                    d.log_rotation.num_to_keep,
                )?,
            },
            listen: r.string(&[S, "listen"], d.listen)?,
            db_pool_size: r.int(&[S, "db_pool_size"], d.db_pool_size)?,
            ibrowse_max_sessions: r.int(&[S, "ibrowse_max_sessions"], d.ibrowse_max_sessions)?,
            ibrowse_max_pipeline_size: r.int(
                &[S, "ibrowse_max_pipeline_size"],
                d.ibrowse_max_pipeline_size,
            )?,
            max_body_size: r.int(&[S, "max_body_size"], d.max_body_size)?,
            heartbeat_interval: r.int(&[S, "heartbeat_interval"], d.heartbeat_interval)?,
            zeromq_listen_address: r
                .string(&[S, "zeromq_listen_address"], d.zeromq_listen_address)?,
            zmq_io_processes: r.int(&[S, "zmq_io_processes"], d.zmq_io_processes)?,
            server_heartbeat_port: r.int(&[S, "server_heartbeat_port"], d.server_heartbeat_port)?,
            command_port: r.int(&[S, "command_port"], d.command_port)?,
            api_port: r.int(&[S, "api_port"], d.api_port)?,
            down_threshold: r.float(&[S, "down_threshold"], d.down_threshold)?,
            decay_window: r.int(&[S, "decay_window"], d.decay_window)?,
            detect_offline_nodes_interval: r.int(
                &[S, "detect_offline_nodes_interval"],
                d.detect_offline_nodes_interval,
            )?,
            validate_client_node_name: r.boolean(
                &[S, "validate_client_node_name"],
                d.validate_client_node_name,
            )?,
            enable_graphite: r.boolean(&[S, "enable_graphite"], d.enable_graphite)?,
            graphite_host: r.string(&[S, "graphite_host"], d.graphite_host)?,
            graphite_port: r.int(&[S, "graphite_port"], d.graphite_port)?,
            chef_api_version: r.string(&[S, "chef_api_version"], d.chef_api_version)?,
            keyring_dir: r.abs_path(&[S, "keyring_dir"], d.keyring_dir)?,
        };
        let attributes = Attributes {
            opscode_pushy_server: PushyServer {
                enable: r.opt_boolean(&[S, "enable"])?,
                ha: r.boolean(&[S, "ha"], false)?,
                vip: r.opt_string(&[S, "vip"])?,
                server_name_advertised: r.opt_string(&[S, "server_name_advertised"])?,
                instances: r.instances(&[S, "instances"])?,
                cluster_advertise_host: r.opt_string(&[S, "cluster_advertise_host"])?,
                job_retention_days: r.int(&[S, "job_retention_days"], 0)?,
                daemon,
            },
            postgresql: Postgresql {
                database_name: r.string(&["postgresql", "database_name"], pg.database_name)?,
                username: r.string(&["postgresql", "username"], pg.username)?,
                sql_user: r.string(&["postgresql", "sql_user"], pg.sql_user)?,
                sql_ro_user: r.string(&["postgresql", "sql_ro_user"], pg.sql_ro_user)?,
                vip: r.string(&["postgresql", "vip"], pg.vip)?,
                port: r.int(&["postgresql", "port"], pg.port)?,
                db_superuser: r.opt_string(&["postgresql", "db_superuser"])?,
                sql_password: r.opt_string(&["postgresql", "sql_password"])?,
                sql_ro_password: r.opt_string(&["postgresql", "sql_ro_password"])?,
            },
            bootstrap: Bootstrap {
                enable: r.opt_boolean(&["bootstrap", "enable"])?,
            },
            oc_chef_pedant: OcChefPedant {
                dir: r.abs_path(&["oc_chef_pedant", "dir"], pedant.dir)?,
                log_directory: r
                    .abs_path(&["oc_chef_pedant", "log_directory"], pedant.log_directory)?,
                log_http_requests: r.boolean(
                    &["oc_chef_pedant", "log_http_requests"],
                    pedant.log_http_requests,
                )?,
            },
        };
        Ok((attributes, r.warnings()))
    }
}

/// Reads typed values out of a [`Tree`], remembering which settings were used.
struct Reader<'a> {
    tree: &'a Tree,
    used: Vec<bool>,
}

impl<'a> Reader<'a> {
    /// The setting at `path`, marked used; `None` if unset or `nil`.
    fn take(&mut self, path: &[&str]) -> Option<&'a Setting> {
        let tree = self.tree;
        let index = tree.settings.iter().position(|s| s.path == path)?;
        self.used[index] = true;
        let setting = &tree.settings[index];
        (setting.value != Value::Nil).then_some(setting)
    }

    fn type_error(&self, setting: &Setting, expected: &'static str) -> Error {
        Error::Type {
            path: self.tree.path.clone(),
            line: setting.line,
            key: display_key(&setting.path),
            expected,
            found: setting.value.describe(),
        }
    }

    /// Refuses a plain value where a hash of settings belongs (`log_rotation = 5`).
    fn require_hash(&mut self, path: &[&str]) -> Result<(), Error> {
        match self.take(path) {
            Some(setting) => Err(self.type_error(setting, "a hash")),
            None => Ok(()),
        }
    }

    /// An integer, written as a number or as a string of digits (the cookbook's own defaults are
    /// strings such as '10000').
    fn int<T: TryFrom<i64>>(&mut self, path: &[&str], default: T) -> Result<T, Error> {
        let Some(setting) = self.take(path) else {
            return Ok(default);
        };
        let n = match &setting.value {
            Value::Int(n) => Some(*n),
            Value::Str(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        n.and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| self.type_error(setting, integer_range::<T>()))
    }

    /// `instances`: an integer of at least 1 (default 1).
    fn instances(&mut self, path: &[&str]) -> Result<u32, Error> {
        let n: u32 = self.int(path, 1)?;
        if n == 0 {
            let setting = self.take(path).expect("a value was read");
            return Err(self.type_error(setting, "an integer of at least 1"));
        }
        Ok(n)
    }

    fn float(&mut self, path: &[&str], default: f64) -> Result<f64, Error> {
        let Some(setting) = self.take(path) else {
            return Ok(default);
        };
        match &setting.value {
            Value::Float(x) => Ok(*x),
            Value::Int(n) => Ok(*n as f64),
            Value::Str(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| self.type_error(setting, "a number")),
            _ => Err(self.type_error(setting, "a number")),
        }
    }

    fn opt_boolean(&mut self, path: &[&str]) -> Result<Option<bool>, Error> {
        let Some(setting) = self.take(path) else {
            return Ok(None);
        };
        match &setting.value {
            Value::Bool(b) => Ok(Some(*b)),
            Value::Str(s) if s == "true" => Ok(Some(true)),
            Value::Str(s) if s == "false" => Ok(Some(false)),
            _ => Err(self.type_error(setting, "true or false")),
        }
    }

    fn boolean(&mut self, path: &[&str], default: bool) -> Result<bool, Error> {
        Ok(self.opt_boolean(path)?.unwrap_or(default))
    }

    /// A string; numbers are taken as their text, as ERB would render them.
    fn opt_string(&mut self, path: &[&str]) -> Result<Option<String>, Error> {
        let Some(setting) = self.take(path) else {
            return Ok(None);
        };
        match &setting.value {
            Value::Str(s) => Ok(Some(s.clone())),
            Value::Int(n) => Ok(Some(n.to_string())),
            Value::Float(x) => Ok(Some(x.to_string())),
            _ => Err(self.type_error(setting, "a string")),
        }
    }

    fn string(&mut self, path: &[&str], default: String) -> Result<String, Error> {
        Ok(self.opt_string(path)?.unwrap_or(default))
    }

    fn abs_path(&mut self, path: &[&str], default: PathBuf) -> Result<PathBuf, Error> {
        let Some(setting) = self.take(path) else {
            return Ok(default);
        };
        match &setting.value {
            Value::Str(s) if s.starts_with('/') => Ok(PathBuf::from(s)),
            _ => Err(self.type_error(setting, "an absolute path")),
        }
    }

    /// A warning for each setting never read, and for each known one that has no effect.
    fn warnings(&self) -> Vec<Warning> {
        let mut out = Vec::new();
        for (setting, used) in self.tree.settings.iter().zip(&self.used) {
            let key = display_key(&setting.path);
            let message = if !used {
                format!("unknown setting {key} (ignored)")
            } else if let Some((_, why)) = IGNORED.iter().find(|(p, _)| setting.path == *p) {
                format!("{key} {why}; this setting is ignored")
            } else {
                continue;
            };
            out.push(Warning {
                path: self.tree.path.clone(),
                line: setting.line,
                message,
            });
        }
        out
    }
}

/// "an integer from MIN to MAX" for the target type, for error messages.
fn integer_range<T: TryFrom<i64>>() -> &'static str {
    let fits = |n: i64| T::try_from(n).is_ok();
    if fits(u32::MAX as i64 + 1) {
        "a non-negative integer"
    } else if fits(u16::MAX as i64 + 1) {
        "an integer from 0 to 4294967295"
    } else {
        "an integer from 0 to 65535"
    }
}

#[cfg(test)]
#[path = "attributes_tests.rs"]
mod tests;
