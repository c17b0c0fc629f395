//! Client configuration (zmq.md §6.1): [`ClientConfig`], read once at startup by `main` from
//! the original's Chef-style Ruby file (`/etc/chef/push-jobs-client.rb`, …) or from a TOML file
//! with the same keys, then adjusted with the command line ([`Overrides`]).
//!
//! The Ruby file is *not* evaluated: `pushy_rbconf` parses it and `ruby.rs` reads the simple
//! form Mixlib::Config files use in practice — `setting value` / `setting(value)` /
//! `setting = value` lines whose values are literals (strings, numbers, `true`/`false`/`nil`,
//! symbols, constants such as `STDOUT`, `/regexps/flags`, arrays, hashes), comments, and the
//! two non-setting lines the push-jobs cookbook and Chef Automate's installer write
//! (`LC_ALL='en_US.UTF-8'` and `Mixlib::Log::Formatter.show_time = false`). Anything else —
//! method calls, `#{}` interpolation, conditionals, `ENV[...]`, `File.join` — is an
//! [`Error::Ruby`] naming the file, the line and what was not understood, rather than a
//! silently different configuration. Chef settings this client does not use are ignored
//! (logged at debug); unknown settings are ignored with a warning.
//!
//! Both forms fill the one [`ClientConfig`]: the TOML form through serde, the Ruby form
//! setting by setting (`ruby.rs`); `toml_form.rs` adds the whitelist, whose order and line
//! numbers serde's map does not keep.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

use crate::whitelist::{self, Lock, Whitelist};

mod ruby;
#[cfg(test)]
mod tests;
mod toml_form;

/// `file_dir` default: the 3.0.12+ command-line default (zmq.md §6.1; the library's own
/// `/tmp/pushy` was only ever effective through a CLI bug).
pub const DEFAULT_FILE_DIR: &str = "/tmp/chef-push";
/// `max_body_size` default (zmq.md §2.6, §8).
pub const DEFAULT_MAX_BODY_SIZE: usize = 63000;
/// Chef's `client_key` default.
pub const DEFAULT_CLIENT_KEY: &str = "/etc/chef/client.pem";
/// Chef's `file_cache_path` default for root, used to find chef-client's run lock.
pub const DEFAULT_FILE_CACHE_PATH: &str = "/var/chef/cache";

/// Where in a config file something went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The config file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// Why a configuration could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read (or is not UTF-8).
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The Ruby file uses something beyond the simple assignment form.
    #[error("{at}: {problem}")]
    Ruby {
        /// File and line.
        at: Location,
        /// What was not understood, for a person.
        problem: String,
    },
    /// The TOML file does not parse or has unknown keys.
    #[error("{}: {source}", path.display())]
    Toml {
        /// The config file.
        path: PathBuf,
        /// The parser's error (it carries the position).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A known setting has a value of the wrong kind.
    #[error("{at}: `{key}` {problem}")]
    Setting {
        /// File and line.
        at: Location,
        /// The setting.
        key: String,
        /// What is wrong with its value, for a person.
        problem: String,
    },
    /// A whitelist regexp key does not compile.
    #[error("{at}: whitelist key: {source}")]
    Whitelist {
        /// File and line.
        at: Location,
        /// The compile error.
        #[source]
        source: whitelist::Error,
    },
    /// `chef_server_url` was set neither in the file nor with `-S`.
    #[error("chef_server_url is not set (config file or -S)")]
    MissingServerUrl,
    /// `chef_server_url` has no `/organizations/ORG` (zmq.md §1.3).
    #[error("chef_server_url `{0}` must contain /organizations/ORG_NAME")]
    NoOrg(String),
    /// `node_name` unset and the host name unavailable.
    #[error("node_name is not set and the host name is unavailable: {0}")]
    Hostname(#[source] nix::Error),
}

/// The node agent's settings (zmq.md §6.1). Build with [`ClientConfig::from_file`] (or
/// [`ClientConfig::default`]), then [`ClientConfig::apply_overrides`]. The TOML form
/// deserializes straight into it (unset keys keep [`ClientConfig::unset`]'s values).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default = "ClientConfig::unset", deny_unknown_fields)]
pub struct ClientConfig {
    /// Must contain `/organizations/ORG` ([`ClientConfig::org`]); empty when unset.
    pub chef_server_url: String,
    /// Node and client name the config request is signed as; defaults to the host name
    /// (an empty name counts as unset).
    pub node_name: String,
    /// The node's RSA private key (PEM).
    pub client_key: PathBuf,
    /// Commands this node will run (zmq.md §6.5). In TOML it is read with its spans by
    /// `toml_form`, serde only checks it is there.
    #[serde(deserialize_with = "toml_form::whitelist_placeholder")]
    pub whitelist: Whitelist,
    /// Where job `file`s are written (zmq.md §6.6).
    pub file_dir: PathBuf,
    /// Fall back to a 1.x server without CURVE (zmq.md §6.8).
    pub allow_unencrypted: bool,
    /// Job env keys jobs may set as-is; `None` means all (zmq.md §6.6 step 2).
    pub allowed_overwritable_env_vars: Option<Vec<String>>,
    /// Outgoing body limit for stdout/stderr (zmq.md §2.6).
    pub max_body_size: usize,
    /// Chef's `lockfile`, the run lock of `:lock => true` entries.
    pub lockfile: Option<PathBuf>,
    /// Chef's `file_cache_path`, where the default run lock lives.
    pub file_cache_path: Option<PathBuf>,
    /// Chef's `verify_api_cert` as written. Chef also verifies when `ssl_verify_mode` is
    /// `:verify_peer` (its default): decide with [`ClientConfig::verify_tls`], not this alone.
    pub verify_api_cert: bool,
    /// `log_level` from the file (`-l` overrides in `main`).
    pub log_level: Option<String>,
    /// Chef's `ssl_verify_mode` (default `:verify_peer`); see [`ClientConfig::verify_tls`].
    pub ssl_verify_mode: SslVerifyMode,
    /// Chef's `trusted_certs_dir`: extra CA/self-signed certificates (PEM/CRT files) to trust
    /// for the Chef server, as `knife ssl fetch` writes them. `None` if not set.
    pub trusted_certs_dir: Option<PathBuf>,
}

/// Chef's `ssl_verify_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SslVerifyMode {
    /// `:verify_peer`, Chef's default since 12.0.
    #[default]
    VerifyPeer,
    /// `:verify_none`.
    VerifyNone,
}

impl Default for ClientConfig {
    /// All defaults, as when no config file exists (the original then runs on the command
    /// line alone); `node_name` is the host name, or empty if that is unavailable.
    fn default() -> Self {
        ClientConfig::unset()
            .finish(|| Ok(hostname().unwrap_or_default()))
            .expect("the node name closure cannot fail")
    }
}

/// Command-line values that win over the file (zmq.md §6.1 "CLI"). `None` keeps the file's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `-N`.
    pub node_name: Option<String>,
    /// `-S`.
    pub chef_server_url: Option<String>,
    /// `-k`.
    pub client_key: Option<PathBuf>,
    /// `-d/--file_dir`.
    pub file_dir: Option<PathBuf>,
    /// `-M/--max-body-size`.
    pub max_body_size: Option<usize>,
    /// `--allow_unencrypted`.
    pub allow_unencrypted: Option<bool>,
}

static ORG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("/organizations/+([^/]+)").expect("constant pattern compiles"));

impl ClientConfig {
    /// The original's config search order when `-c` is not given (zmq.md §6.1).
    pub fn default_search() -> [&'static str; 3] {
        [
            "/etc/chef/chef-push-client.rb",
            "/etc/chef/push-jobs-client.rb",
            "/etc/chef/client.rb",
        ]
    }

    /// The first file of [`ClientConfig::default_search`] that exists; `None` means run on
    /// [`ClientConfig::default`] and the command line, as the original does.
    pub fn find_config_file() -> Option<PathBuf> {
        Self::default_search()
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    }

    /// Reads `path`: TOML if it ends in `.toml`, else the Ruby form. Warnings about ignored
    /// settings go to `tracing`.
    ///
    /// # Errors
    /// [`Error::Read`], then any parse or value error of the file, or [`Error::Hostname`].
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let src = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        if path.extension().is_some_and(|e| e == "toml") {
            Self::from_toml_str(&src, path)
        } else {
            Self::from_ruby_str(&src, path)
        }
    }

    /// Parses the Ruby form; `path` is only used in messages.
    ///
    /// # Errors
    /// [`Error::Ruby`], [`Error::Setting`], [`Error::Whitelist`], [`Error::Hostname`].
    pub fn from_ruby_str(src: &str, path: &Path) -> Result<Self, Error> {
        let (config, notes) = ruby::read(src, path)?;
        for note in notes {
            note.log(path);
        }
        config.finish(hostname)
    }

    /// Parses the TOML form; `path` is only used in messages.
    ///
    /// # Errors
    /// [`Error::Toml`], [`Error::Setting`], [`Error::Whitelist`], [`Error::Hostname`].
    pub fn from_toml_str(src: &str, path: &Path) -> Result<Self, Error> {
        toml_form::read(src, path)?.finish(hostname)
    }

    /// Every setting at its default and `node_name` empty: what a file starts from.
    pub fn unset() -> Self {
        ClientConfig {
            chef_server_url: String::new(),
            node_name: String::new(),
            client_key: DEFAULT_CLIENT_KEY.into(),
            whitelist: Whitelist::default(),
            file_dir: DEFAULT_FILE_DIR.into(),
            allow_unencrypted: false,
            allowed_overwritable_env_vars: None,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            lockfile: None,
            file_cache_path: None,
            verify_api_cert: false,
            log_level: None,
            ssl_verify_mode: SslVerifyMode::default(),
            trusted_certs_dir: None,
        }
    }

    /// Fills an unset (empty) `node_name` from `default_node_name`.
    fn finish(
        mut self,
        default_node_name: impl FnOnce() -> Result<String, Error>,
    ) -> Result<Self, Error> {
        if self.node_name.is_empty() {
            self.node_name = default_node_name()?;
        }
        Ok(self)
    }

    /// Applies command-line values over the file's.
    pub fn apply_overrides(&mut self, o: Overrides) {
        if let Some(v) = o.node_name {
            self.node_name = v;
        }
        if let Some(v) = o.chef_server_url {
            self.chef_server_url = v;
        }
        if let Some(v) = o.client_key {
            self.client_key = v;
        }
        if let Some(v) = o.file_dir {
            self.file_dir = v;
        }
        if let Some(v) = o.max_body_size {
            self.max_body_size = v;
        }
        if let Some(v) = o.allow_unencrypted {
            self.allow_unencrypted = v;
        }
    }

    /// The org: the first `/organizations` + one or more slashes + non-slash characters in
    /// `chef_server_url` (zmq.md §1.3, §6.2 step 1).
    ///
    /// # Errors
    /// [`Error::MissingServerUrl`] or [`Error::NoOrg`]; the client must refuse to start.
    pub fn org(&self) -> Result<String, Error> {
        if self.chef_server_url.is_empty() {
            return Err(Error::MissingServerUrl);
        }
        ORG.captures(&self.chef_server_url)
            .and_then(|c| c.get(1))
            .map(|m| m.as_str().to_owned())
            .ok_or_else(|| Error::NoOrg(self.chef_server_url.clone()))
    }

    /// Whether to verify the Chef server's TLS certificate, as Chef decides it:
    /// `verify_api_cert` *or* `ssl_verify_mode :verify_peer` (the default). So verification
    /// is on unless the file says `ssl_verify_mode :verify_none` (and not `verify_api_cert
    /// true`).
    pub fn verify_tls(&self) -> bool {
        self.verify_api_cert || self.ssl_verify_mode == SslVerifyMode::VerifyPeer
    }

    /// `<chef_server_url>/pushy/config/<node_name>` (zmq.md §1.3) without the query; the
    /// caller appends `?ccpk=…&version=2.0`. Trailing slashes of the URL are dropped, as
    /// current Chef HTTP does when joining paths.
    pub fn config_url(&self) -> String {
        format!(
            "{}/pushy/config/{}",
            self.chef_server_url.trim_end_matches('/'),
            self.node_name
        )
    }

    /// The file a `:lock` entry locks (zmq.md §6.4): the entry's path, else `lockfile`, else
    /// `<file_cache_path>/chef-client-running.pid`.
    pub fn lock_path(&self, lock: &Lock) -> PathBuf {
        match lock {
            Lock::Path(p) => p.clone(),
            Lock::ChefDefault => self.lockfile.clone().unwrap_or_else(|| {
                self.file_cache_path
                    .as_deref()
                    .unwrap_or(Path::new(DEFAULT_FILE_CACHE_PATH))
                    .join("chef-client-running.pid")
            }),
        }
    }
}

fn hostname() -> Result<String, Error> {
    // `unistd::gethostname` needs nix's `hostname` feature; uname(2)'s nodename is the same.
    let uts = nix::sys::utsname::uname().map_err(Error::Hostname)?;
    Ok(uts.nodename().to_string_lossy().into_owned())
}
