//! [`Settings`]: the configuration reconfigure acts on, computed once from Chef Server's running
//! JSON, the user config and the `bootstrapped` sentinel (ops.md §1.3 load order), and [`load`],
//! which does exactly that under a [`Paths`] root.
//!
//! Serialized, `Settings` is the original's `node['pushy']` tree (`show-config` prints
//! `{"pushy": …}`; reconfigure writes it into `opscode-push-jobs-server-running.json`), with every
//! attribute resolved rather than only the user's overrides.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Value, json};

use crate::chef_server::{self, ChefServer, Host};
use crate::paths::Paths;
use crate::user_config::{self, Attributes, Daemon, OcChefPedant, Warning};

/// This host's part in Chef Server's topology (ops.md §1.3 "Topology handling").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Standalone (or any topology other than `tier`/`ha`): everything runs here.
    Standalone,
    /// Tier/HA backend: everything runs here.
    Backend,
    /// Tier/HA frontend: only the database step and the nginx files; no daemon, no bootstrap.
    Frontend,
}

/// The computed configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settings {
    /// Chef Server's `private_chef['topology']`.
    #[serde(skip)]
    pub topology: String,
    /// This host's role.
    #[serde(skip)]
    pub role: Role,
    /// The original's `is_data_master?`: standalone, or a tier backend. Only then does a config
    /// change restart the daemon (ops.md §2.3 step 11).
    #[serde(skip)]
    pub data_master: bool,
    /// `install_path`: /opt/opscode-push-jobs-server.
    pub install_path: PathBuf,
    /// `chef_base_path`: Chef Server's install path, /opt/opscode.
    pub chef_base_path: PathBuf,
    /// `bootstrap[…]`.
    pub bootstrap: BootstrapSettings,
    /// `opscode-pushy-server[…]`: the daemon.
    #[serde(rename = "opscode-pushy-server")]
    pub server: ServerSettings,
    /// `postgresql[…]`.
    pub postgresql: PostgresqlSettings,
    /// `oc-chef-pedant[…]`.
    #[serde(rename = "oc-chef-pedant")]
    pub oc_chef_pedant: OcChefPedant,
}

/// `bootstrap[…]`, resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootstrapSettings {
    /// Explicitly start the daemon and write the `bootstrapped` sentinel.
    pub enable: bool,
}

/// `opscode-pushy-server[…]`, resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerSettings {
    /// Configure and run the daemon on this host.
    pub enable: bool,
    /// Legacy DRBD-HA marker (`topology == 'ha'` on tier/HA).
    pub ha: bool,
    /// The push server's address: nginx upstream host, pedant target.
    pub vip: String,
    /// The host name clients are told to use for ZeroMQ.
    pub server_name_advertised: String,
    /// How many daemons run on this host (`crate::instances`); shown only when not 1, so
    /// that the running JSON of a single instance stays what it was.
    #[serde(skip_serializing_if = "is_one")]
    pub instances: u32,
    /// The cluster's `advertise_host`, when the user set one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_advertise_host: Option<String>,
    /// Days after which finished jobs are deleted (`job_retention_days`); shown only when
    /// set, so that the running JSON of a config without it stays what it was.
    #[serde(skip_serializing_if = "is_zero")]
    pub job_retention_days: u32,
    /// Everything else, as the user config says.
    #[serde(flatten)]
    pub daemon: Daemon,
}

/// `postgresql[…]`, resolved: placement from Chef Server, names from the user config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PostgresqlSettings {
    /// The database, `opscode_pushy`.
    pub database_name: String,
    /// OS user for local connections.
    pub username: String,
    /// The daemon's read-write role.
    pub sql_user: String,
    /// The read-only role.
    pub sql_ro_user: String,
    /// Chef Server's PostgreSQL host.
    pub vip: String,
    /// Chef Server's PostgreSQL port.
    pub port: u16,
    /// Chef Server's PostgreSQL superuser (its password is veil `postgresql/db_superuser_password`).
    pub db_superuser: String,
    /// Chef Server uses an external PostgreSQL (then our role is granted to the superuser,
    /// ops.md §4.2).
    #[serde(skip)]
    pub external: bool,
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Settings {
    /// `{"pushy": {…}}`, the shape `show-config` prints and the running JSON holds.
    pub fn to_pushy_json(&self) -> Value {
        json!({ "pushy": self })
    }
}

/// Either input could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Chef Server's running JSON, or the topology rules.
    #[error(transparent)]
    ChefServer(#[from] chef_server::Error),
    /// The user config.
    #[error(transparent)]
    UserConfig(#[from] user_config::Error),
}

/// Everything [`load`] read and computed.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The computed configuration.
    pub settings: Settings,
    /// What Chef Server says (user, nginx dir, install path, …).
    pub chef_server: ChefServer,
    /// The user config as typed, before Chef Server's values were applied.
    pub attributes: Attributes,
    /// Settings in the user config that have no effect.
    pub warnings: Vec<Warning>,
    /// The user config file read, if any.
    pub user_config: Option<PathBuf>,
    /// This host.
    pub host: Host,
}

/// Computes the settings under `paths` for the host `fqdn`, in the original's load order:
/// Chef Server's running JSON (it must exist), the user config (whose `node['…']` lookups see
/// Chef Server's attributes), the `bootstrapped` sentinel, then [`compute`].
///
/// # Errors
/// [`Error`], naming the file (and line) at fault.
pub fn load(paths: &Paths, fqdn: &str) -> Result<Loaded, Error> {
    let chef_server = ChefServer::load(&paths.chef_server_running_json())?;
    let node = chef_server.node_view(fqdn);
    let user = user_config::load(paths, Some(&node))?;
    let host = Host {
        fqdn: fqdn.to_owned(),
        bootstrapped: paths.bootstrapped().exists(),
    };
    let settings = compute(&user.attributes, &chef_server, &host)?;
    Ok(Loaded {
        settings,
        chef_server,
        attributes: user.attributes,
        warnings: user.warnings,
        user_config: user.source,
        host,
    })
}

/// The original's `generate_config` plus the sentinel rule (ops.md §1.3, §2.3 steps 4–5):
///
/// - `postgresql` `vip`, `port` and `db_superuser` are always Chef Server's.
/// - topology `ha` or `tier`: `ha` = (topology is `ha`); `vip` = the user's, else
///   `backend_vips.ipaddress`; the host's role in `servers` decides: `backend` runs everything,
///   `frontend` turns `enable` and `bootstrap.enable` off unless the user set them, anything else
///   is the original's error.
/// - any other topology: `vip` = the user's, else `lb.api_fqdn` (else `api_fqdn`).
/// - `bootstrap.enable`: the user's, else false on a frontend, else false once `bootstrapped`
///   exists, else true. `server_name_advertised`: the user's, else `vip`.
///
/// # Errors
/// [`chef_server::Error::UnknownRole`], [`chef_server::Error::NotInServers`],
/// [`chef_server::Error::NoBackendVip`], [`chef_server::Error::NoApiFqdn`].
pub fn compute(
    attrs: &Attributes,
    chef: &ChefServer,
    host: &Host,
) -> Result<Settings, chef_server::Error> {
    let user = &attrs.opscode_pushy_server;
    let (role, ha, vip) = match chef.topology.as_str() {
        topology @ ("ha" | "tier") => {
            let role = match chef.role_of(&host.fqdn) {
                None => {
                    return Err(chef_server::Error::NotInServers {
                        path: chef.path.clone(),
                        fqdn: host.fqdn.clone(),
                        topology: topology.to_owned(),
                    });
                }
                Some(Some("backend")) => Role::Backend,
                Some(Some("frontend")) => Role::Frontend,
                Some(other) => {
                    return Err(chef_server::Error::UnknownRole {
                        fqdn: host.fqdn.clone(),
                        role: other.map(str::to_owned),
                    });
                }
            };
            let vip = user
                .vip
                .clone()
                .or_else(|| chef.backend_vip.clone())
                .ok_or_else(|| chef_server::Error::NoBackendVip {
                    path: chef.path.clone(),
                    topology: topology.to_owned(),
                })?;
            (role, topology == "ha", vip)
        }
        _ => {
            let vip = user
                .vip
                .clone()
                .or_else(|| chef.lb_api_fqdn.clone())
                .or_else(|| chef.api_fqdn.clone())
                .ok_or_else(|| chef_server::Error::NoApiFqdn {
                    path: chef.path.clone(),
                })?;
            (Role::Standalone, user.ha, vip)
        }
    };
    let frontend = role == Role::Frontend;
    let enable = user.enable.unwrap_or(!frontend);
    let bootstrap_enable = attrs
        .bootstrap
        .enable
        .unwrap_or(!frontend && !host.bootstrapped);
    let pg = &attrs.postgresql;
    Ok(Settings {
        topology: chef.topology.clone(),
        role,
        data_master: role == Role::Standalone || (role == Role::Backend && chef.topology == "tier"),
        install_path: crate::paths::INSTALL_DIR.into(),
        chef_base_path: chef.install_path.clone(),
        bootstrap: BootstrapSettings {
            enable: bootstrap_enable,
        },
        server: ServerSettings {
            enable,
            ha,
            server_name_advertised: user
                .server_name_advertised
                .clone()
                .unwrap_or_else(|| vip.clone()),
            vip,
            instances: user.instances,
            cluster_advertise_host: user.cluster_advertise_host.clone(),
            job_retention_days: user.job_retention_days,
            daemon: user.daemon.clone(),
        },
        postgresql: PostgresqlSettings {
            database_name: pg.database_name.clone(),
            username: pg.username.clone(),
            sql_user: pg.sql_user.clone(),
            sql_ro_user: pg.sql_ro_user.clone(),
            vip: chef.postgresql.vip.clone(),
            port: chef.postgresql.port,
            db_superuser: chef.postgresql.db_superuser.clone(),
            external: chef.postgresql.external,
        },
        oc_chef_pedant: attrs.oc_chef_pedant.clone(),
    })
}
