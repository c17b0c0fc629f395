//! What the add-on takes from Chef Server: `/etc/opscode/chef-server-running.json`, written by
//! `chef-server-ctl reconfigure` (ops.md §1.3 load order, step 2), and [`compute`], the
//! original's `generate_config` (§1.3 "Topology handling", now `settings::compute`): Chef Server's PostgreSQL placement
//! over the user's, the topology-dependent `vip`, and what a tier/HA frontend runs.
//!
//! Only the `private_chef` subtree is read (the `runit` one is consumed by the original but
//! `enterprise::runit` overrides all of it from `private_chef['install_path']`, which
//! `paths::Paths::runit` does). Keys Chef Server always writes fall back to Chef Server's own
//! defaults when absent.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// Chef Server's configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The running JSON is absent: Chef Server has not been reconfigured on this host.
    #[error("{path} does not exist: run chef-server-ctl reconfigure first")]
    NotReconfigured {
        /// The running JSON.
        path: PathBuf,
    },
    /// The running JSON could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The running JSON.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The running JSON is not JSON, or has no `private_chef` object.
    #[error("{path} is not Chef Server's running configuration: {reason}")]
    Invalid {
        /// The running JSON.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key has a value of the wrong kind.
    #[error("{path}: {key} must be {expected}")]
    Field {
        /// The running JSON.
        path: PathBuf,
        /// `private_chef['postgresql']['port']`.
        key: String,
        /// What it must be.
        expected: &'static str,
    },
    /// Tier/HA topology, and this host is not in `private_chef['servers']`.
    #[error(
        "this host ({fqdn}) is not listed in private_chef['servers'] of {path}, so it has no role in the {topology} topology (is `hostname --fqdn` right?)"
    )]
    NotInServers {
        /// The running JSON.
        path: PathBuf,
        /// This host's FQDN.
        fqdn: String,
        /// `tier` or `ha`.
        topology: String,
    },
    /// Tier/HA topology, and this host's role is neither backend nor frontend. The message is
    /// the original's, word for word.
    #[error("I don't have a role for you!  Use 'backend' or 'frontend'.")]
    UnknownRole {
        /// This host's FQDN.
        fqdn: String,
        /// The role found, if any.
        role: Option<String>,
    },
    /// Tier/HA topology without `private_chef['backend_vips']['ipaddress']` and no user `vip`.
    #[error(
        "{path}: private_chef['backend_vips']['ipaddress'] is not set, and the {topology} topology needs it (or set opscode_pushy_server['vip'])"
    )]
    NoBackendVip {
        /// The running JSON.
        path: PathBuf,
        /// `tier` or `ha`.
        topology: String,
    },
    /// Standalone without `private_chef['lb']['api_fqdn']` (nor `api_fqdn`) and no user `vip`.
    #[error(
        "{path}: private_chef['lb']['api_fqdn'] is not set (or set opscode_pushy_server['vip'])"
    )]
    NoApiFqdn {
        /// The running JSON.
        path: PathBuf,
    },
}

/// What the add-on uses of Chef Server's running configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ChefServer {
    /// The file read.
    pub path: PathBuf,
    /// `private_chef['topology']`: `standalone` (default), `tier`, `ha`, …
    pub topology: String,
    /// `private_chef['servers']`: host FQDN → role (`backend`, `frontend`), in file order.
    pub servers: Vec<(String, Option<String>)>,
    /// `private_chef['backend_vips']['ipaddress']`: the push `vip` in tier/HA.
    pub backend_vip: Option<String>,
    /// `private_chef['api_fqdn']`.
    pub api_fqdn: Option<String>,
    /// `private_chef['lb']['api_fqdn']`: the push `vip` standalone, and erchef's root URL.
    pub lb_api_fqdn: Option<String>,
    /// `private_chef['postgresql']`.
    pub postgresql: ChefPostgresql,
    /// `private_chef['user']['username']`: the service user, `opscode`. Chef Server has no group
    /// setting; its services run with this user's primary group.
    pub user: String,
    /// `private_chef['install_path']`: `/opt/opscode`; its runit tree hosts our service.
    pub install_path: PathBuf,
    /// `private_chef['nginx']`.
    pub nginx: ChefNginx,
    /// `private_chef['default_orgname']`, for pedant.
    pub default_orgname: Option<String>,
    /// The `private_chef` and `runit` subtrees as read, for `node['…']` lookups in the user
    /// config (`ChefServer::node_view`).
    raw: Value,
}

/// `private_chef['postgresql']`: where the push database lives (ops.md §4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChefPostgresql {
    /// `vip`: '127.0.0.1'.
    pub vip: String,
    /// `port`: 5432.
    pub port: u16,
    /// `db_superuser`: 'opscode-pgsql'.
    pub db_superuser: String,
    /// `external`: an external PostgreSQL (reconfigure then grants our role to the superuser).
    pub external: bool,
}

/// `private_chef['nginx']`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChefNginx {
    /// `dir`: /var/opt/opscode/nginx; our add-on files go in `<dir>/etc/addon.d`.
    pub dir: PathBuf,
    /// `url`: the API URL pedant uses.
    pub url: Option<String>,
    /// `ssl_protocols`: space-separated TLS versions, for pedant.
    pub ssl_protocols: Option<String>,
}

/// This host, as the topology rules need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The FQDN (Ohai's `fqdn`), looked up in `private_chef['servers']`.
    pub fqdn: String,
    /// Whether the `bootstrapped` sentinel exists (then `bootstrap.enable` defaults to false).
    pub bootstrapped: bool,
}

impl ChefServer {
    /// Reads the running JSON at `path`.
    ///
    /// # Errors
    /// [`Error::NotReconfigured`] if it is missing; [`Error::Read`], [`Error::Invalid`],
    /// [`Error::Field`] otherwise.
    pub fn load(path: &Path) -> Result<ChefServer, Error> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotReconfigured {
                    path: path.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(Error::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| Error::Invalid {
            path: path.to_path_buf(),
            reason: format!("not JSON: {e}"),
        })?;
        ChefServer::from_json(path, &doc)
    }

    /// Takes what the add-on needs from the parsed running JSON.
    ///
    /// # Errors
    /// [`Error::Invalid`] without a `private_chef` object, [`Error::Field`] for a wrong kind.
    pub fn from_json(path: &Path, doc: &Value) -> Result<ChefServer, Error> {
        let pc = match doc.get("private_chef") {
            Some(v @ Value::Object(_)) => v,
            _ => {
                return Err(Error::Invalid {
                    path: path.to_path_buf(),
                    reason: "it has no private_chef object".into(),
                });
            }
        };
        let f = Fields { path, pc };
        let servers = match pc.get("servers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(fqdn, entry)| {
                    let role = entry.get("role").and_then(Value::as_str).map(str::to_owned);
                    (fqdn.clone(), role)
                })
                .collect(),
            Some(_) => return Err(f.wrong(&["servers"], "an object")),
        };
        let port = match f.at(&["postgresql", "port"]) {
            None => 5432,
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| f.wrong(&["postgresql", "port"], "a port number"))?,
        };
        Ok(ChefServer {
            path: path.to_path_buf(),
            topology: f
                .string(&["topology"])?
                .unwrap_or_else(|| "standalone".into()),
            servers,
            backend_vip: f.string(&["backend_vips", "ipaddress"])?,
            api_fqdn: f.string(&["api_fqdn"])?,
            lb_api_fqdn: f.string(&["lb", "api_fqdn"])?,
            postgresql: ChefPostgresql {
                vip: f
                    .string(&["postgresql", "vip"])?
                    .unwrap_or_else(|| "127.0.0.1".into()),
                port,
                db_superuser: f
                    .string(&["postgresql", "db_superuser"])?
                    .unwrap_or_else(|| "opscode-pgsql".into()),
                external: f.boolean(&["postgresql", "external"])?.unwrap_or(false),
            },
            user: f
                .string(&["user", "username"])?
                .unwrap_or_else(|| "opscode".into()),
            install_path: f
                .string(&["install_path"])?
                .unwrap_or_else(|| "/opt/opscode".into())
                .into(),
            nginx: ChefNginx {
                dir: f
                    .string(&["nginx", "dir"])?
                    .unwrap_or_else(|| "/var/opt/opscode/nginx".into())
                    .into(),
                url: f.string(&["nginx", "url"])?,
                ssl_protocols: f.string(&["nginx", "ssl_protocols"])?,
            },
            default_orgname: f.string(&["default_orgname"])?,
            raw: json!({
                "private_chef": pc,
                "runit": doc.get("runit").cloned().unwrap_or(Value::Null),
            }),
        })
    }

    /// This host's role in `private_chef['servers']`: `None` if the host is not listed;
    /// `Some(None)` if listed without a role.
    pub fn role_of(&self, fqdn: &str) -> Option<Option<&str>> {
        self.servers
            .iter()
            .find(|(name, _)| name == fqdn)
            .map(|(_, role)| role.as_deref())
    }

    /// What `node` means to the user config: Chef Server's `private_chef` and `runit` trees,
    /// plus this host's `fqdn` and `hostname`, as the original's `node` had them.
    pub fn node_view(&self, fqdn: &str) -> Value {
        let mut view = self.raw.clone();
        let hostname = fqdn.split('.').next().unwrap_or(fqdn);
        view["fqdn"] = json!(fqdn);
        view["hostname"] = json!(hostname);
        view
    }
}

/// Typed access to `private_chef[…]`.
struct Fields<'a> {
    path: &'a Path,
    pc: &'a Value,
}

impl Fields<'_> {
    fn at(&self, keys: &[&str]) -> Option<&Value> {
        let mut v = self.pc;
        for key in keys {
            v = v.get(key)?;
        }
        (!v.is_null()).then_some(v)
    }

    fn wrong(&self, keys: &[&str], expected: &'static str) -> Error {
        let mut key = "private_chef".to_owned();
        for k in keys {
            key.push_str(&format!("['{k}']"));
        }
        Error::Field {
            path: self.path.to_path_buf(),
            key,
            expected,
        }
    }

    fn string(&self, keys: &[&str]) -> Result<Option<String>, Error> {
        match self.at(keys) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong(keys, "a string")),
        }
    }

    fn boolean(&self, keys: &[&str]) -> Result<Option<bool>, Error> {
        match self.at(keys) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong(keys, "true or false")),
        }
    }
}

/// This host's FQDN as Ohai finds it: `hostname --fqdn`, else the kernel's host name.
///
/// # Errors
/// When neither gives a name.
pub fn local_fqdn() -> io::Result<String> {
    if let Ok(out) = Command::new("hostname").arg("--fqdn").output()
        && out.status.success()
    {
        let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !name.is_empty() {
            return Ok(name);
        }
    }
    let name = fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_owned();
    if name.is_empty() {
        Err(io::Error::other("the host has no name"))
    } else {
        Ok(name)
    }
}

#[cfg(test)]
#[path = "chef_server_tests.rs"]
mod tests;
