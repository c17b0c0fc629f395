//! The Push Jobs server: a wire-compatible replacement for Chef Push Jobs' Erlang server.
//!
//! Data flows one way (DESIGN.md):
//! ```text
//!  HTTP (http/) ──► auth/ (Chef signature; authz via chef/) ──► jobs/, nodes/ ──► store/
//!  ZeroMQ (channel/) ──► nodes/ ──► jobs/                                └─► events (SSE)
//! ```
//! [`run`] takes a bound listener and a cancellation token, so tests run the same server
//! in-process on port 0 and stop it at will.

pub mod auth;
pub mod channel;
pub mod chef;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod events;
pub mod http;
pub mod jobs;
mod joining;
pub mod limits;
pub mod metrics;
pub mod nodes;
pub mod retention;
pub mod secrets;
/// The job store, from its own crate (`store/`) so that `push-jobs-server-ctl` can migrate
/// the database without the rest of the server.
pub use pushy_store as store;

use std::path::Path;
use std::sync::Arc;

use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer as _;

use crate::channel::{ClientKeys, CurveIdentity, SessionKeys};
use crate::chef::{ChefServer, LocalChefServer, RemoteChefServer, RemoteConfig};
use crate::config::{ChefMode, Config, DatabaseEngine};
pub use crate::http::BoundPorts;
use crate::http::{AppState, ServerKey};
use crate::jobs::{JobsHandle, LiveJobs};
use crate::metrics::Reading;
use crate::nodes::NodeSnapshot;
use crate::store::{PostgresStore, SqliteStore, Store};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed after it was opened (resuming unfinished jobs).
    #[error("reading the job store")]
    Store(#[from] store::Error),
    /// The configured store could not be opened or migrated.
    #[error("opening the job store ({location})")]
    OpenStore {
        /// Which database, where: engine, host, port, user or file; never a password.
        location: String,
        /// The cause.
        #[source]
        source: store::Error,
    },
    /// A key file or data directory could not be read, written or parsed.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// The Chef Server client could not be built.
    #[error("setting up the Chef Server client")]
    Chef(#[from] chef::Error),
    /// The command channel could not bind its sockets.
    #[error("starting the command channel")]
    Channel(#[from] channel::thread::Error),
    /// libzmq could not make Curve keys (built without CURVE?).
    #[error("libzmq cannot make CURVE keys (is libzmq built with libsodium?)")]
    Curve(#[source] zmq::Error),
    /// A socket or directory failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// `[cluster]` is enabled but the store is not PostgreSQL.
    #[error("cluster.enabled needs the PostgreSQL store")]
    ClusterStore,
    /// This instance could not renew its cluster membership for a whole lease and
    /// stopped, since other instances may have taken its jobs over.
    #[error("the cluster membership lapsed (the database was unreachable for a whole lease)")]
    MembershipLapsed,
}

/// Mode of the directories the server makes for its data: the store and the keys hold job
/// commands, environments, files, output and private keys.
#[cfg(unix)]
const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the SQLite database and its `-wal` and `-shm` files.
#[cfg(unix)]
const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents, accessible to the server's user only (0700). An
/// existing directory is left as it is (it may be shared, or chosen by an administrator),
/// with a warning when other users may enter it: the files the server keeps there are
/// 0600 whatever the directory's mode.
///
/// # Errors
/// [`Error::File`] naming the directory.
pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    match std::fs::metadata(dir) {
        Ok(meta) => {
            #[cfg(unix)]
            {
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path = %dir.display(),
                        mode = format!("{mode:04o}"),
                        "the data directory is open to other users; `chmod 700` it"
                    );
                }
            }
            #[cfg(not(unix))]
            let _ = meta;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, PRIVATE_DIR_MODE);
            builder.create(dir).map_err(|e| file_error(dir, e))
        }
        Err(e) => Err(file_error(dir, e)),
    }
}

/// Makes sure the SQLite database at `path` and the `-wal`/`-shm` files SQLite keeps beside
/// it are readable by the server's user only: the database is created 0600 before SQLite
/// opens it (SQLite would make it 0644, and gives its `-wal` and `-shm` files the
/// database's mode), and files an earlier version left more open are tightened.
#[cfg(unix)]
fn private_sqlite_files(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
        .map_err(|e| file_error(path, e))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        let meta = match std::fs::metadata(file) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(file_error(file, e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))
                .map_err(|e| file_error(file, e))?;
            tracing::warn!(
                path = %file.display(),
                was = format!("{mode:04o}"),
                "the database file was open to other users; made it 0600"
            );
        }
    }
    Ok(())
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// Reads the server's private key, generating and saving one (mode 0600) when the file
/// does not exist yet: the embedded default needs no setup step.
pub fn load_or_create_server_key(path: &Path) -> Result<PKey<Private>, Error> {
    match std::fs::read_to_string(path) {
        Ok(pem) => {
            pushy_protocol::keys::private_key_from_pem(&pem).map_err(|e| file_error(path, e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let rsa = Rsa::generate(2048).map_err(|e| file_error(path, e))?;
            let pem = rsa.private_key_to_pem().map_err(|e| file_error(path, e))?;
            if let Some(dir) = path.parent() {
                create_private_dir(dir)?;
            }
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            std::io::Write::write_all(
                &mut opts.open(path).map_err(|e| file_error(path, e))?,
                &pem,
            )?;
            tracing::info!(path = %path.display(), "generated the server key pair");
            PKey::from_rsa(rsa).map_err(|e| file_error(path, e))
        }
        Err(e) => Err(file_error(path, e)),
    }
}

/// Opens the configured store. SQLite: the data directory is created 0700 and the
/// database files are kept 0600 ([`create_private_dir`]).
///
/// # Errors
/// [`Error::OpenStore`] naming the database and where it is (never the password).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, Error> {
    let db = &config.database;
    Ok(match db.engine {
        DatabaseEngine::Sqlite => {
            let path = config.sqlite_path();
            if let Some(dir) = path.parent() {
                create_private_dir(dir)?;
            }
            #[cfg(unix)]
            private_sqlite_files(&path)?;
            let store = SqliteStore::open(&path)
                .await
                .map_err(|source| Error::OpenStore {
                    location: format!("SQLite file {}", path.display()),
                    source,
                })?;
            Arc::new(store)
        }
        DatabaseEngine::Postgresql => {
            let store = PostgresStore::connect(db.postgres_options(), db.pool_size)
                .await
                .map_err(|source| Error::OpenStore {
                    location: format!(
                        "PostgreSQL database {} on {}:{} as user {}",
                        db.name, db.host, db.port, db.user
                    ),
                    source,
                })?;
            Arc::new(store)
        }
    })
}

/// Builds the configured Chef Server port.
pub fn chef_server(config: &Config) -> Result<Arc<dyn ChefServer>, Error> {
    let c = &config.chef_server;
    Ok(match c.mode {
        ChefMode::Local => Arc::new(LocalChefServer::new(config.local_chef_dir())),
        ChefMode::Remote => {
            // The handed-over secret wins: the key file is usually root-only while the
            // daemon runs as Chef Server's user.
            let (pem, origin) = match (
                config.secret("chef-server", "superuser_key"),
                &c.superuser_key,
            ) {
                (Some(pem), _) => (
                    pem.to_owned(),
                    "the handed-over secret chef-server.superuser_key".to_owned(),
                ),
                (None, Some(path)) => (
                    std::fs::read_to_string(path).map_err(|e| file_error(path, e))?,
                    path.display().to_string(),
                ),
                (None, None) => {
                    return Err(Error::File {
                        path: "chef_server.superuser_key".into(),
                        why: "required when mode = \"remote\" (or hand it over in CHEF_SECRETS_FD)"
                            .into(),
                    });
                }
            };
            let key =
                pushy_protocol::keys::private_key_from_pem(&pem).map_err(|e| Error::File {
                    path: origin,
                    why: e.to_string(),
                })?;
            Arc::new(RemoteChefServer::new(RemoteConfig {
                root_url: c.erchef_root_url.clone(),
                principals_url: format!("http://{}:{}", c.erchef_hostname, c.erchef_port),
                chef_api_version: c.chef_api_version.clone(),
                superuser_name: c.superuser_name.clone(),
                superuser_key: key,
                timeout: std::time::Duration::from_secs(c.timeout),
                accept_invalid_certs: !c.ssl_verify,
            })?)
        }
    })
}

/// Assembles the server's state from a validated config: store, Chef Server port, keys,
/// and start-up recovery of jobs a previous process left unfinished.
///
/// # Errors
/// Whatever prevents start-up, with the file or component named.
pub async fn build_state(config: Config, shutdown: CancellationToken) -> Result<AppState, Error> {
    let store = open_store(&config).await?;
    build_state_with(config, store, shutdown).await
}

/// As [`build_state`] with a store the caller opened (tests pick SQLite or PostgreSQL).
/// Starts the command channel (its ZeroMQ thread) and the node registry, then resumes
/// jobs a previous process left unfinished.
///
/// # Errors
/// Whatever prevents start-up.
pub async fn build_state_with(
    config: Config,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<AppState, Error> {
    let chef = chef_server(&config)?;
    let private = match config.secret("push-jobs-server", "pushy_priv_key") {
        Some(pem) => pushy_protocol::keys::private_key_from_pem(pem).map_err(|e| Error::File {
            path: "the handed-over secret push-jobs-server.pushy_priv_key".into(),
            why: e.to_string(),
        })?,
        None => load_or_create_server_key(&config.pushy_priv_key())?,
    };
    let public_pem = pushy_protocol::keys::public_pem(&private);
    let curve = CurveIdentity::generate().map_err(Error::Curve)?;
    let incarnation: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    let p = &config.pushy;
    let cluster_db = match (config.cluster.enabled, store.postgres_pool()) {
        (false, _) => None,
        (true, Some(pool)) => Some(store::cluster::ClusterDb::new(pool)),
        (true, None) => return Err(Error::ClusterStore),
    };
    let session_keys = match cluster_db {
        // Every instance must give a node the same session key.
        Some(_) => SessionKeys::derived(cluster_secret(&private)?),
        None => SessionKeys::default(),
    };
    let client_keys = ClientKeys::default();
    let metrics = Arc::new(metrics::Metrics::new());
    // Inbound depth: when the async side falls behind, the ZeroMQ thread waits here and
    // libzmq's high-water marks push back on the nodes.
    let (inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(4096);
    let channel = channel::thread::spawn(
        channel::thread::ChannelConfig {
            listen: p.zeromq_listen_address.clone(),
            heartbeat_port: p.server_heartbeat_port,
            command_port: p.command_port,
            heartbeat_interval: config.heartbeat_interval(),
            max_body_size: usize::try_from(p.max_body_size).unwrap_or(usize::MAX),
            max_time_skew: chrono::TimeDelta::seconds(p.max_time_skew as i64),
            curve: (!p.disable_curve_encryption).then(|| curve.clone()),
            io_threads: p.zmq_io_processes as i32,
            server_key: private.clone(),
            incarnation: incarnation.to_string(),
            metrics: metrics.clone(),
        },
        session_keys.clone(),
        client_keys.clone(),
        inbound_tx,
    )?;
    let ports = BoundPorts {
        heartbeat: endpoint_port(&channel.heartbeat_endpoint).unwrap_or(p.server_heartbeat_port),
        command: endpoint_port(&channel.command_endpoint).unwrap_or(p.command_port),
    };
    let drops = channel.drops.clone();
    let tracker = tokio_util::task::TaskTracker::new();
    let nodes = NodeSnapshot::new();
    let live = LiveJobs::new();
    let cluster = match cluster_db {
        None => None,
        Some(db) => {
            let c = &config.cluster;
            let me = store::cluster::Instance {
                id: uuid::Uuid::new_v4().to_string(),
                zmq_host: c
                    .advertise_host
                    .clone()
                    .unwrap_or_else(|| p.server_name.clone()),
                heartbeat_port: ports.heartbeat,
                command_port: ports.command,
                curve_public_key: curve.public_z85.clone(),
                incarnation: incarnation.to_string(),
                api_address: format!("{}:{}", p.api_address, p.api_port),
            };
            let settings = cluster::Settings {
                lease: std::time::Duration::from_secs(c.lease),
                tick: std::time::Duration::from_millis(c.tick),
                keep_events: std::time::Duration::from_secs(
                    p.org_feed_expiration.max(p.wait_complete_time) + 60,
                ),
            };
            Some(joining::join(db, me, settings, nodes.clone(), &shutdown, &tracker).await?)
        }
    };
    let registry = nodes::spawn(
        nodes::registry::RegistryParams {
            node: nodes::machine::Params {
                rehab_timer: std::time::Duration::from_millis(p.rehab_timer),
                liveness: nodes::liveness::Params {
                    heartbeat_interval: config.heartbeat_interval(),
                    decay_window: p.decay_window,
                    down_threshold: p.down_threshold,
                },
            },
            scan_interval: config.heartbeat_interval() * p.detect_offline_nodes_interval as u32,
        },
        nodes.clone(),
        joining::job_sink(live.clone(), cluster.clone()),
        channel,
        inbound_rx,
        shutdown.clone(),
        &tracker,
    );
    let events = crate::events::Events::new(crate::events::EventsConfig {
        keep_alive: std::time::Duration::from_secs(p.keep_alive_time),
        org_feed_expiration: std::time::Duration::from_secs(p.org_feed_expiration),
        wait_complete_time: std::time::Duration::from_secs(p.wait_complete_time),
    });
    let jobs = JobsHandle::new(
        jobs::JobsParts {
            live: live.clone(),
            store: store.clone(),
            registry: cluster::Router::new(registry.clone(), nodes.clone(), cluster.clone()),
            events: cluster::Feeds::new(events.clone(), cluster.clone()),
            cluster: cluster.clone(),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            metrics: metrics.clone(),
        },
        jobs::JobsConfig {
            default_run_timeout: u32::try_from(p.default_running_timeout).unwrap_or(u32::MAX),
            voting_timeout: std::time::Duration::from_secs(p.voting_timeout),
            wait_complete_time: std::time::Duration::from_secs(p.wait_complete_time),
            server_name: p.server_name.clone(),
        },
    );

    read_on_scrape(&metrics, &drops, &nodes, &live);
    match &cluster {
        None => {
            let resumed = jobs.resume_unfinished().await?;
            if resumed > 0 {
                tracing::info!(
                    jobs = resumed,
                    "resumed jobs left unfinished by the last stop"
                );
            }
        }
        Some(cluster) => {
            read_cluster_on_scrape(&metrics, cluster);
            // Unfinished jobs are resumed by whichever live instance claims them first.
            joining::listen(
                joining::Parts {
                    cluster: cluster.clone(),
                    registry,
                    live: live.clone(),
                    jobs: jobs.clone(),
                    events: events.clone(),
                    session_keys: session_keys.clone(),
                    client_keys: client_keys.clone(),
                },
                &shutdown,
                &tracker,
            )
            .await?;
        }
    }
    let body_budget = http::BodyBudget::new(config.pushy.http_body_memory, metrics.clone());
    let dashboard = Arc::new(dashboard::Dashboard::new(derived_secret(
        &private,
        b"push jobs dashboard sessions\0",
    )?));
    Ok(AppState {
        config: Arc::new(config),
        store,
        chef,
        jobs,
        nodes,
        server_key: Arc::new(ServerKey {
            private,
            public_pem,
        }),
        curve: Arc::new(curve),
        client_keys,
        session_keys,
        events,
        ports,
        incarnation,
        shutdown,
        tracker,
        metrics,
        body_budget,
        dashboard,
        cluster,
    })
}

/// The secret cluster session keys are derived from: a digest of the server's private
/// key, which every instance of a cluster shares and nothing else holds.
fn cluster_secret(private: &PKey<Private>) -> Result<[u8; 32], Error> {
    derived_secret(private, b"push jobs cluster session keys\0")
}

/// A secret for one purpose (`label`), derived from the server's private key: every
/// instance of a cluster derives the same one.
fn derived_secret(private: &PKey<Private>, label: &[u8]) -> Result<[u8; 32], Error> {
    let der = private.private_key_to_der().map_err(|e| Error::File {
        path: "the server key".into(),
        why: e.to_string(),
    })?;
    let mut h = openssl::sha::Sha256::new();
    h.update(label);
    h.update(&der);
    Ok(h.finish())
}

/// What `/metrics` reads of the cluster: live members, and this instance's id.
fn read_cluster_on_scrape(metrics: &metrics::Metrics, cluster: &cluster::Cluster) {
    let c = cluster.clone();
    metrics.read_on_scrape(Reading::Gauge {
        name: "cluster_instances",
        help: "Live instances of the cluster this instance belongs to",
        read: Box::new(move || c.live().len() as i64),
    });
    // One string for the process's life: the reading's labels are `&'static str`.
    let id: &'static str = Box::leak(cluster.id().to_owned().into_boxed_str());
    metrics.read_on_scrape(Reading::Counters {
        name: "cluster_instance",
        help: "This instance's id in its cluster (always 1)",
        label: "instance",
        read: Box::new(move || vec![(id, 1)]),
    });
}

fn endpoint_port(endpoint: &str) -> Option<u16> {
    endpoint.rsplit(':').next()?.parse().ok()
}

/// The whole HTTP service: path clean-up, then the router.
pub fn service(
    state: AppState,
) -> impl tower::Service<
    axum::extract::Request,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let trace = tower_http::trace::TraceLayer::new_for_http();
    let router = http::router(state).layer(trace);
    tower::util::MapRequestLayer::new(http::normalize_path).layer(router)
}

/// Serves the API on `listener` until `state.shutdown` is cancelled, under the
/// connection limits of the config (`http_max_connections`, `http_header_timeout`; see
/// [`http::server`]).
///
/// # Errors
/// [`Error::MembershipLapsed`] when this instance of a cluster stopped because it could
/// not renew its membership. Accept errors are logged and retried.
pub async fn run(state: AppState, listener: TcpListener) -> Result<(), Error> {
    let token = state.shutdown.clone();
    let tracker = state.tracker.clone();
    let metrics = state.metrics.clone();
    let p = &state.config.pushy;
    let max_connections =
        http::server::connection_cap(p.http_max_connections, http::server::nofile_limit());
    if max_connections < p.http_max_connections {
        tracing::warn!(
            configured = p.http_max_connections,
            max_connections,
            "http_max_connections lowered to half the descriptor limit"
        );
    }
    let limits = http::server::ConnectionLimits {
        max_connections,
        header_timeout: std::time::Duration::from_millis(p.http_header_timeout),
    };
    let cluster = state.cluster.clone();
    let svc = service(state);
    http::server::serve(listener, svc, limits, token, metrics).await;
    // Job tasks and the registry end on the same token; the drain is bounded.
    tracker.close();
    if tokio::time::timeout(std::time::Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 10 s");
    }
    if cluster.is_some_and(|c| c.fenced()) {
        return Err(Error::MembershipLapsed);
    }
    Ok(())
}

/// Registers what `/metrics` reads at each scrape: node counts, live jobs, and the command
/// channel's drop counters.
fn read_on_scrape(
    metrics: &metrics::Metrics,
    drops: &Arc<channel::thread::Drops>,
    nodes: &NodeSnapshot,
    live: &LiveJobs,
) {
    let n = nodes.clone();
    metrics.read_on_scrape(Reading::Gauge {
        name: "nodes_online",
        help: "Nodes heartbeating on the command channel",
        read: Box::new(move || n.counts().0 as i64),
    });
    let n = nodes.clone();
    metrics.read_on_scrape(Reading::Gauge {
        name: "nodes_available",
        help: "Online nodes idle and able to take a job",
        read: Box::new(move || n.counts().1 as i64),
    });
    let live = live.clone();
    metrics.read_on_scrape(Reading::Gauge {
        name: "jobs_active",
        help: "Jobs voting or running in this process",
        read: Box::new(move || live.count() as i64),
    });
    let d = drops.clone();
    metrics.read_on_scrape(Reading::Counters {
        name: "zmq_messages_dropped",
        help: "Inbound command-channel messages and handshakes refused, by reason",
        label: "reason",
        read: Box::new(move || d.by_reason()),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ops.md §3.4: the Chef superuser key handed over in CHEF_SECRETS_DATA is used in
    /// remote mode, ahead of a key file the daemon's user may not be able to read.
    #[test]
    fn remote_chef_server_takes_the_superuser_key_from_the_secrets() {
        let pem =
            String::from_utf8(Rsa::generate(2048).unwrap().private_key_to_pem().unwrap()).unwrap();
        let data = serde_json::json!({"chef-server": {"superuser_key": pem}}).to_string();
        let mut config = Config::from_toml(
            "[chef_server]\nmode = \"remote\"\nsuperuser_key = \"/nonexistent/pivotal.pem\"\n",
            "test",
        )
        .unwrap();
        assert!(
            chef_server(&config).is_err(),
            "the file alone is unreadable"
        );
        config.apply_secrets(secrets::Secrets::parse(&data, "test").unwrap());
        assert!(chef_server(&config).is_ok());
    }
}
