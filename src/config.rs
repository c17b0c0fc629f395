//! The daemon's configuration: one TOML file whose `[pushy]` keys are the original's
//! `sys.config` keys with their defaults (http.md §6, ops.md §6.3), plus sections for the
//! Chef Server, the database and the server's keys.
//!
//! Parsed once at start-up and validated into typed values; unknown keys and bad values
//! are errors, so a typo never silently falls back to a default.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pushy_store::PgConnectOptions;
use serde::Deserialize;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The cause, with line and column.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value parsed but makes no sense.
    #[error("{path}: {key}: {problem}")]
    Invalid {
        /// The file.
        path: String,
        /// The offending key, dotted.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the embedded default keeps its SQLite file, local Chef directory and keys.
    pub data_dir: PathBuf,
    /// The original's `pushy` application keys.
    pub pushy: PushyConfig,
    /// Where organizations, principals and groups come from.
    pub chef_server: ChefServerConfig,
    /// Where jobs are stored.
    pub database: DatabaseConfig,
    /// The server's own RSA key pair (`pushy_priv_key` / `pushy_pub_key`).
    pub keys: KeysConfig,
    /// Several instances on one PostgreSQL database (issue 14).
    pub cluster: ClusterConfig,
    /// Deleting old finished jobs (issue 15 §5); off unless configured.
    pub retention: RetentionConfig,
    /// Secrets handed over by `push-jobs-server-ctl` through `CHEF_SECRETS_DATA` (never
    /// in the file): they take the place of key files and the database password.
    #[serde(skip)]
    pub secrets: Option<crate::secrets::Secrets>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            pushy: PushyConfig::default(),
            chef_server: ChefServerConfig::default(),
            database: DatabaseConfig::default(),
            keys: KeysConfig::default(),
            cluster: ClusterConfig::default(),
            retention: RetentionConfig::default(),
            secrets: None,
        }
    }
}

/// The original's `pushy` (and `pushy_common`) keys, same names, same defaults
/// (http.md §6.1; omnibus defaults where the code has none).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushyConfig {
    /// HTTP listen address (the original's `WEBMACHINE_IP`).
    pub api_address: IpAddr,
    /// HTTP listen port.
    pub api_port: u16,
    /// Host name advertised to clients for ZeroMQ (config `host`, `out_addr`, `command_addr`).
    pub server_name: String,
    /// Bind prefix of both ZeroMQ sockets.
    pub zeromq_listen_address: String,
    /// ZeroMQ PUB port (server heartbeats).
    pub server_heartbeat_port: u16,
    /// ZeroMQ ROUTER port (command channel).
    pub command_port: u16,
    /// Server heartbeat period, milliseconds.
    pub heartbeat_interval: u64,
    /// Seconds before a client re-fetches its config.
    pub config_lifetime: u64,
    /// Largest ZeroMQ message body accepted, bytes.
    pub max_body_size: u64,
    /// Allowed ZeroMQ message timestamp skew, seconds (`pushy_common.max_time_skew`).
    pub max_time_skew: u64,
    /// Clients may only fetch the config of their own node name.
    pub validate_client_node_name: bool,
    /// Plain-text command channel; `ccpk` no longer required.
    pub disable_curve_encryption: bool,
    /// SSE keepalive period, seconds.
    pub keep_alive_time: u64,
    /// Org event feed retention, seconds.
    pub org_feed_expiration: u64,
    /// How long a finished job keeps its live event stream, seconds.
    pub wait_complete_time: u64,
    /// `run_timeout` of jobs that give none, seconds.
    pub default_running_timeout: u64,
    /// Time allowed for commits, seconds.
    pub voting_timeout: u64,
    /// Re-send interval of node resets, milliseconds.
    pub rehab_timer: u64,
    /// Heartbeat-ratio threshold below which a node is down.
    pub down_threshold: f64,
    /// Heartbeat averaging window, in heartbeat intervals.
    pub decay_window: u64,
    /// Offline scan period, in heartbeat intervals.
    pub detect_offline_nodes_interval: u64,
    /// ZeroMQ I/O threads. 2, not the original's 1: one thread carries every CURVE
    /// handshake and every node's traffic, and in a reconnect storm handshakes queued
    /// behind it past the client's 3-second check (bench/RESULTS.md).
    pub zmq_io_processes: u32,
    /// Largest HTTP request body, bytes (hard-coded 1,000,000 in the original).
    pub max_request_size: usize,
    /// Chef request-signature clock skew window, seconds (hard-coded 900 in the original).
    pub auth_skew: u64,
    /// Most HTTP connections served at once; past it new connections wait in the
    /// kernel's accept queue until one closes (not in the original).
    pub http_max_connections: usize,
    /// Milliseconds a connection has to deliver a complete request head (request line
    /// and headers), counted from the connection's opening or its previous response.
    pub http_header_timeout: u64,
    /// Milliseconds a request has to deliver its whole body once its head is in.
    pub http_body_timeout: u64,
    /// Bytes of request bodies held in memory at once across all connections, while
    /// they are read and before their signature is checked; a request that would
    /// exceed it answers 503.
    pub http_body_memory: usize,
}

impl Default for PushyConfig {
    fn default() -> Self {
        PushyConfig {
            api_address: IpAddr::from([0, 0, 0, 0]),
            api_port: 10003,
            server_name: "127.0.0.1".to_owned(),
            zeromq_listen_address: "tcp://*".to_owned(),
            server_heartbeat_port: 10000,
            command_port: 10002,
            heartbeat_interval: 10_000,
            config_lifetime: 3600,
            max_body_size: 65_536,
            max_time_skew: 300,
            validate_client_node_name: true,
            disable_curve_encryption: false,
            keep_alive_time: 15,
            org_feed_expiration: 60,
            wait_complete_time: 5,
            default_running_timeout: 3600,
            voting_timeout: 60,
            rehab_timer: 1000,
            down_threshold: 0.6,
            decay_window: 4,
            detect_offline_nodes_interval: 4,
            zmq_io_processes: 2,
            max_request_size: 1_000_000,
            auth_skew: 900,
            http_max_connections: 1024,
            http_header_timeout: 20_000,
            http_body_timeout: 30_000,
            http_body_memory: 64_000_000,
        }
    }
}

/// Which Chef Server answers for organizations, principals and groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChefMode {
    /// A directory of orgs, users, clients, keys and groups (the embedded default).
    Local,
    /// A real Chef Infra Server over HTTP.
    Remote,
}

/// The `[chef_server]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChefServerConfig {
    /// `local` or `remote`.
    pub mode: ChefMode,
    /// Local mode: the directory (default `<data_dir>/chef`).
    pub local_dir: Option<PathBuf>,
    /// Remote: base URL for org and group lookups, signed as the superuser
    /// (`pushy.erchef_root_url`).
    pub erchef_root_url: String,
    /// Remote: host of the unauthenticated principal lookups (`erchef.hostname`).
    pub erchef_hostname: String,
    /// Remote: port of the principal lookups (`erchef.port`).
    pub erchef_port: u16,
    /// Remote: `X-Chef-Version` sent upstream.
    pub chef_api_version: String,
    /// Remote: the superuser signing org and group lookups.
    pub superuser_name: String,
    /// Remote: the superuser's private key (`chef-server`/`superuser_key`).
    pub superuser_key: Option<PathBuf>,
    /// Remote: timeout of every call, seconds.
    pub timeout: u64,
    /// Remote: accept the Chef Server's self-signed certificate.
    pub ssl_verify: bool,
}

impl Default for ChefServerConfig {
    fn default() -> Self {
        ChefServerConfig {
            mode: ChefMode::Local,
            local_dir: None,
            erchef_root_url: "https://127.0.0.1".to_owned(),
            erchef_hostname: "localhost".to_owned(),
            erchef_port: 8000,
            chef_api_version: "11.1.0".to_owned(),
            superuser_name: "pivotal".to_owned(),
            superuser_key: None,
            timeout: 10,
            ssl_verify: false,
        }
    }
}

/// Which database engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseEngine {
    /// A file under the data directory (the embedded default).
    Sqlite,
    /// PostgreSQL, the production store (`opscode_pushy`).
    Postgresql,
}

/// The `[database]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite` or `postgresql`.
    pub engine: DatabaseEngine,
    /// SQLite file (default `<data_dir>/pushy.sqlite`).
    pub sqlite_path: Option<PathBuf>,
    /// PostgreSQL host.
    pub host: String,
    /// PostgreSQL port.
    pub port: u16,
    /// PostgreSQL user.
    pub user: String,
    /// PostgreSQL password (`push-jobs-server`/`sql_password`); empty for trust auth.
    pub password: String,
    /// PostgreSQL database (the original hard-codes `opscode_pushy`).
    pub name: String,
    /// Connection pool size (`db_pool_size`).
    pub pool_size: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            engine: DatabaseEngine::Sqlite,
            sqlite_path: None,
            host: "127.0.0.1".to_owned(),
            port: 5432,
            user: "opscode_pushy".to_owned(),
            password: String::new(),
            name: "opscode_pushy".to_owned(),
            pool_size: 20,
        }
    }
}

impl DatabaseConfig {
    /// How to reach the PostgreSQL database, each setting given as it is: a password with
    /// `@`, `/` or `:` needs no escaping (there is no URL). The password is the configured
    /// one (or `PGPASSWORD`), never one looked up in `~/.pgpass`: the lookup would match
    /// the environment's default host and user, not these.
    pub fn postgres_options(&self) -> PgConnectOptions {
        let options = PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .database(&self.name);
        if self.password.is_empty() {
            options
        } else {
            options.password(&self.password)
        }
    }
}

/// The `[cluster]` section: this instance is one of several sharing one PostgreSQL
/// database. Every instance of a cluster must use the same database and the same server
/// key (`pushy_priv_key`), and be reachable by the nodes at `advertise_host`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Join the cluster (needs `database.engine = "postgresql"`).
    pub enabled: bool,
    /// The host nodes use to reach this instance's ZeroMQ ports (default:
    /// `pushy.server_name`).
    pub advertise_host: Option<String>,
    /// How long this instance's membership lasts without renewal, seconds. A killed
    /// process loses it at once (its database lock goes with its connection); the lease
    /// covers an instance that hangs or is cut off.
    pub lease: u64,
    /// How often the membership is renewed and the members re-read, milliseconds.
    pub tick: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            advertise_host: None,
            lease: 10,
            tick: 1000,
        }
    }
}

/// The `[retention]` section: finished jobs older than `finished_jobs_max_age` are deleted
/// with their nodes, options and output, a batch at a time, by a task of every instance
/// (`crate::retention`). The default keeps every job forever, as the original did.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Seconds after it finished (entered complete, quorum_failed, aborted, timed_out or
    /// crashed) that a job is deleted; 0 keeps every job.
    pub finished_jobs_max_age: u64,
    /// Jobs deleted per transaction. On SQLite a batch holds the one write lock while it
    /// runs, so job writes wait for it: small batches keep that wait short.
    pub batch: u32,
    /// Seconds between sweeps (the first runs at start-up).
    pub interval: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            finished_jobs_max_age: 0,
            batch: 100,
            interval: 600,
        }
    }
}

/// The shortest `finished_jobs_max_age` accepted: a job's task, its event feed and the
/// client that started it all look at the job for a few seconds after it finished.
pub const MIN_FINISHED_JOBS_MAX_AGE: u64 = 60;

impl RetentionConfig {
    /// Whether any job is ever deleted.
    pub fn enabled(&self) -> bool {
        self.finished_jobs_max_age > 0
    }
}

/// The `[keys]` section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// The server's RSA private key (default `<data_dir>/pushy_priv.pem`, generated on
    /// first start when missing).
    pub pushy_priv_key: Option<PathBuf>,
}

impl Config {
    /// Reads and validates a config file.
    ///
    /// # Errors
    /// Unreadable file, bad TOML, unknown key, wrong type or impossible value.
    pub fn from_file(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors.
    ///
    /// # Errors
    /// Bad TOML, unknown key, wrong type or impossible value.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, Error> {
        let config: Config = toml::from_str(text).map_err(|source| Error::Parse {
            path: origin.to_owned(),
            source: Box::new(source),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), Error> {
        let invalid = |key: &'static str, problem: &str| Error::Invalid {
            path: origin.to_owned(),
            key,
            problem: problem.to_owned(),
        };
        let p = &self.pushy;
        if p.heartbeat_interval == 0 {
            return Err(invalid("pushy.heartbeat_interval", "must be at least 1 ms"));
        }
        if !(p.down_threshold > 0.0 && p.down_threshold < 1.0) {
            return Err(invalid("pushy.down_threshold", "must be between 0 and 1"));
        }
        if p.decay_window == 0 || p.detect_offline_nodes_interval == 0 {
            return Err(invalid(
                "pushy.decay_window",
                "decay_window and detect_offline_nodes_interval must be at least 1",
            ));
        }
        if p.keep_alive_time == 0 {
            return Err(invalid(
                "pushy.keep_alive_time",
                "must be at least 1 second",
            ));
        }
        if p.max_request_size == 0 {
            return Err(invalid("pushy.max_request_size", "must be at least 1 byte"));
        }
        if p.http_max_connections == 0 {
            return Err(invalid("pushy.http_max_connections", "must be at least 1"));
        }
        let c = &self.cluster;
        if c.enabled && self.database.engine != DatabaseEngine::Postgresql {
            return Err(invalid(
                "cluster.enabled",
                "needs database.engine = \"postgresql\" (the instances share its rows)",
            ));
        }
        if c.tick == 0 || c.lease.saturating_mul(1000) <= c.tick.saturating_mul(2) {
            return Err(invalid(
                "cluster.lease",
                "must be more than two ticks (cluster.tick), and tick at least 1 ms",
            ));
        }
        if p.http_header_timeout == 0 || p.http_body_timeout == 0 {
            return Err(invalid(
                "pushy.http_header_timeout",
                "http_header_timeout and http_body_timeout must be at least 1 ms",
            ));
        }
        if p.http_body_memory < p.max_request_size {
            return Err(invalid(
                "pushy.http_body_memory",
                "must be at least max_request_size (one largest body must fit)",
            ));
        }
        if p.server_name.is_empty() {
            return Err(invalid("pushy.server_name", "must not be empty"));
        }
        if p.zmq_io_processes == 0 {
            return Err(invalid("pushy.zmq_io_processes", "must be at least 1"));
        }
        if self.chef_server.mode == ChefMode::Remote {
            // The superuser key may also come from CHEF_SECRETS_DATA; that is checked at
            // start-up, when the secrets are known.
            if !self.chef_server.erchef_root_url.starts_with("http://")
                && !self.chef_server.erchef_root_url.starts_with("https://")
            {
                return Err(invalid(
                    "chef_server.erchef_root_url",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        let r = &self.retention;
        if r.enabled() && r.finished_jobs_max_age < MIN_FINISHED_JOBS_MAX_AGE {
            return Err(invalid(
                "retention.finished_jobs_max_age",
                "must be 0 (keep every job) or at least 60 seconds",
            ));
        }
        if r.batch == 0 {
            return Err(invalid("retention.batch", "must be at least 1"));
        }
        if r.interval == 0 {
            return Err(invalid("retention.interval", "must be at least 1 second"));
        }
        if self.database.pool_size == 0 {
            return Err(invalid("database.pool_size", "must be at least 1"));
        }
        Ok(())
    }

    /// The local Chef directory.
    pub fn local_chef_dir(&self) -> PathBuf {
        self.chef_server
            .local_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("chef"))
    }

    /// The SQLite file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.database
            .sqlite_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("pushy.sqlite"))
    }

    /// A secret handed over by the ctl, if any.
    pub fn secret(&self, group: &str, name: &str) -> Option<&str> {
        self.secrets.as_ref()?.get(group, name)
    }

    /// Takes the handed-over secrets: the database password when the file gives none.
    pub fn apply_secrets(&mut self, secrets: crate::secrets::Secrets) {
        if self.database.password.is_empty()
            && let Some(pw) = secrets.get("push-jobs-server", "sql_password")
        {
            self.database.password = pw.to_owned();
        }
        self.secrets = Some(secrets);
    }

    /// The server's private key file.
    pub fn pushy_priv_key(&self) -> PathBuf {
        self.keys
            .pushy_priv_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("pushy_priv.pem"))
    }

    /// Server heartbeat period.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.pushy.heartbeat_interval)
    }
}

/// The default configuration file, with every key and its default, commented.
pub const DEFAULT_CONFIG: &str = include_str!("../templates/opscode-pushy-server.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_file_parses_to_the_defaults() {
        let c = Config::from_toml(DEFAULT_CONFIG, "default").unwrap();
        let d = PushyConfig::default();
        assert_eq!(c.pushy.api_port, d.api_port);
        assert_eq!(c.pushy.command_port, 10002);
        assert_eq!(c.pushy.server_heartbeat_port, 10000);
        assert_eq!(c.database.engine, DatabaseEngine::Sqlite);
        assert_eq!(c.chef_server.mode, ChefMode::Local);
        assert_eq!(c.pushy.http_max_connections, d.http_max_connections);
        assert_eq!(c.pushy.http_header_timeout, d.http_header_timeout);
        assert_eq!(c.pushy.http_body_timeout, d.http_body_timeout);
        assert_eq!(c.pushy.http_body_memory, d.http_body_memory);
    }

    #[test]
    fn empty_file_means_defaults() {
        let c = Config::from_toml("", "x").unwrap();
        assert_eq!(c.pushy.api_port, 10003);
        assert_eq!(c.pushy.heartbeat_interval, 10_000);
        assert!(c.pushy.validate_client_node_name);
        assert_eq!(c.sqlite_path(), PathBuf::from("data/pushy.sqlite"));
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = Config::from_toml("[pushy]\napi_prot = 1\n", "cfg.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("api_prot"), "{msg}");
        assert!(msg.starts_with("cfg.toml"), "{msg}");
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Config::from_toml("[pushy]\napi_port = \"x\"\n", "c").is_err());
        assert!(Config::from_toml("[pushy]\napi_port = 70000\n", "c").is_err());
        assert!(Config::from_toml("[pushy]\ndown_threshold = 2.0\n", "c").is_err());
        assert!(Config::from_toml("[database]\nengine = \"mysql\"\n", "c").is_err());
        for bad in [
            "http_max_connections = 0",
            "http_header_timeout = 0",
            "http_body_timeout = 0",
            "http_body_memory = 999999",
        ] {
            let e = Config::from_toml(&format!("[pushy]\n{bad}\n"), "c").unwrap_err();
            assert!(e.to_string().contains("pushy.http_"), "{bad}: {e}");
        }
        let e = Config::from_toml(
            "[chef_server]\nmode = \"remote\"\nerchef_root_url = \"ftp://x\"\n",
            "c",
        )
        .unwrap_err();
        assert!(e.to_string().contains("erchef_root_url"));
    }

    #[test]
    fn retention_keeps_everything_by_default_and_refuses_nonsense() {
        let c = Config::from_toml("", "x").unwrap();
        assert!(!c.retention.enabled());
        assert_eq!((c.retention.batch, c.retention.interval), (100, 600));
        let c = Config::from_toml(
            "[retention]\nfinished_jobs_max_age = 2592000\nbatch = 50\ninterval = 60\n",
            "x",
        )
        .unwrap();
        assert!(c.retention.enabled());
        assert_eq!(c.retention.finished_jobs_max_age, 30 * 86_400);
        assert_eq!(c.retention.batch, 50);
        for (bad, key) in [
            (
                "finished_jobs_max_age = 59",
                "retention.finished_jobs_max_age",
            ),
            ("batch = 0", "retention.batch"),
            ("interval = 0", "retention.interval"),
            ("max_age = 1", "max_age"),
            ("finished_jobs_max_age = \"30d\"", "finished_jobs_max_age"),
        ] {
            let e = Config::from_toml(&format!("[retention]\n{bad}\n"), "c").unwrap_err();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
    }

    /// The settings reach PostgreSQL as written, a password with `@` and `/` included (a
    /// connection URL needed them escaped): a stand-in server asks for the password in
    /// clear text and reads what the client sends.
    #[tokio::test]
    async fn postgres_credentials_reach_the_server_as_written() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        /// One message without a type byte: its length (itself included), then the body.
        async fn body(socket: &mut tokio::net::TcpStream) -> Vec<u8> {
            let len = socket.read_u32().await.unwrap() as usize;
            let mut body = vec![0; len - 4];
            socket.read_exact(&mut body).await.unwrap();
            body
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let d = DatabaseConfig {
            engine: DatabaseEngine::Postgresql,
            port: listener.local_addr().unwrap().port(),
            password: "p@ss/word".into(),
            ..DatabaseConfig::default()
        };
        let options = d.postgres_options();
        assert_eq!(options.get_host(), "127.0.0.1");
        assert_eq!(options.get_port(), d.port);
        assert_eq!(options.get_username(), "opscode_pushy");
        assert_eq!(options.get_database(), Some("opscode_pushy"));

        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut startup = body(&mut socket).await;
            // An SSLRequest (code 80877103) is declined; the startup message follows.
            if startup == 80_877_103_u32.to_be_bytes() {
                socket.write_all(b"N").await.unwrap();
                startup = body(&mut socket).await;
            }
            // AuthenticationCleartextPassword, then the client's PasswordMessage.
            socket
                .write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3])
                .await
                .unwrap();
            assert_eq!(socket.read_u8().await.unwrap(), b'p');
            (startup, body(&mut socket).await)
        });
        let connected = <sqlx::PgConnection as sqlx::Connection>::connect_with(&options).await;
        assert!(connected.is_err(), "the stand-in server lets no one in");
        let (startup, password) = server.await.unwrap();

        // The protocol version, then NUL-terminated names and values.
        let fields: Vec<&[u8]> = startup[4..].split(|b| *b == 0).collect();
        let setting = |name: &str| {
            let at = fields.iter().position(|f| *f == name.as_bytes());
            at.map(|i| String::from_utf8_lossy(fields[i + 1]).into_owned())
        };
        assert_eq!(setting("user").as_deref(), Some("opscode_pushy"));
        assert_eq!(setting("database").as_deref(), Some("opscode_pushy"));
        assert_eq!(password, b"p@ss/word\0");
    }
}
