//! Client configuration (zmq.md §6.1): [`ClientConfig`], read once at startup by `main` from
//! the original's Chef-style Ruby file (`/etc/chef/push-jobs-client.rb`, …) or from a TOML file
//! with the same keys, then adjusted with the command line ([`Overrides`]).
//!
//! The Ruby file is *not* evaluated. Only the simple form Mixlib::Config files use in practice
//! is read: `setting value` / `setting(value)` / `setting = value` lines whose values are
//! literals (strings, numbers, `true`/`false`/`nil`, symbols, constants such as `STDOUT`,
//! `/regexps/flags`, arrays, hashes), comments, and the two non-setting lines the push-jobs
//! cookbook writes (`LC_ALL='en_US.UTF-8'` and `Mixlib::Log::Formatter.show_time = false`).
//! Anything else — method calls, `#{}` interpolation, conditionals, `ENV[...]`, `File.join` —
//! is an [`Error::Ruby`] naming the file, the line and what was not understood, rather than a
//! silently different configuration. Chef settings this client does not use are ignored
//! (logged at debug); unknown settings are ignored with a warning.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

use crate::whitelist::{self, Entry, Key, Lock, Pattern, Whitelist};

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

/// The node agent's settings (zmq.md §6.1). Build with [`ClientConfig::load`] (or
/// [`ClientConfig::without_file`]), then [`ClientConfig::apply_overrides`].
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConfig {
    /// Must contain `/organizations/ORG` ([`ClientConfig::org`]); empty when unset.
    pub chef_server_url: String,
    /// Node and client name the config request is signed as; defaults to the host name.
    pub node_name: String,
    /// The node's RSA private key (PEM).
    pub client_key: PathBuf,
    /// Commands this node will run (zmq.md §6.5).
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
        Settings::default()
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
        let (settings, notes) = ruby::read(src, path)?;
        for note in notes {
            note.log(path);
        }
        settings.finish(hostname)
    }

    /// Parses the TOML form; `path` is only used in messages.
    ///
    /// # Errors
    /// [`Error::Toml`], [`Error::Setting`], [`Error::Whitelist`], [`Error::Hostname`].
    pub fn from_toml_str(src: &str, path: &Path) -> Result<Self, Error> {
        read_toml(src, path)?.finish(hostname)
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

/// What either file form set; `None` means "not set, use the default".
#[derive(Default)]
struct Settings {
    chef_server_url: Option<String>,
    node_name: Option<String>,
    client_key: Option<PathBuf>,
    whitelist: Option<Whitelist>,
    file_dir: Option<PathBuf>,
    allow_unencrypted: Option<bool>,
    allowed_overwritable_env_vars: Option<Vec<String>>,
    max_body_size: Option<usize>,
    lockfile: Option<PathBuf>,
    file_cache_path: Option<PathBuf>,
    verify_api_cert: Option<bool>,
    log_level: Option<String>,
    ssl_verify_mode: Option<SslVerifyMode>,
    trusted_certs_dir: Option<PathBuf>,
}

impl Settings {
    fn finish(
        self,
        default_node_name: impl FnOnce() -> Result<String, Error>,
    ) -> Result<ClientConfig, Error> {
        let node_name = match self.node_name {
            Some(name) => name,
            None => default_node_name()?,
        };
        Ok(ClientConfig {
            chef_server_url: self.chef_server_url.unwrap_or_default(),
            node_name,
            client_key: self.client_key.unwrap_or_else(|| DEFAULT_CLIENT_KEY.into()),
            whitelist: self.whitelist.unwrap_or_default(),
            file_dir: self.file_dir.unwrap_or_else(|| DEFAULT_FILE_DIR.into()),
            allow_unencrypted: self.allow_unencrypted.unwrap_or(false),
            allowed_overwritable_env_vars: self.allowed_overwritable_env_vars,
            max_body_size: self.max_body_size.unwrap_or(DEFAULT_MAX_BODY_SIZE),
            lockfile: self.lockfile,
            file_cache_path: self.file_cache_path,
            verify_api_cert: self.verify_api_cert.unwrap_or(false),
            log_level: self.log_level,
            ssl_verify_mode: self.ssl_verify_mode.unwrap_or_default(),
            trusted_certs_dir: self.trusted_certs_dir,
        })
    }
}

/// The TOML form: the same keys; `whitelist` is a table whose keys are commands or
/// `"/regexp/flags"` and whose values are a command line or `{ command_line, lock }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    chef_server_url: Option<String>,
    node_name: Option<String>,
    client_key: Option<PathBuf>,
    whitelist: Option<BTreeMap<String, toml::Spanned<toml::Value>>>,
    file_dir: Option<PathBuf>,
    allow_unencrypted: Option<bool>,
    allowed_overwritable_env_vars: Option<Vec<String>>,
    max_body_size: Option<usize>,
    lockfile: Option<PathBuf>,
    file_cache_path: Option<PathBuf>,
    verify_api_cert: Option<bool>,
    log_level: Option<String>,
    ssl_verify_mode: Option<SslVerifyMode>,
    trusted_certs_dir: Option<PathBuf>,
}

fn read_toml(src: &str, path: &Path) -> Result<Settings, Error> {
    let file: TomlFile = toml::from_str(src).map_err(|e| Error::Toml {
        path: path.to_owned(),
        source: Box::new(e),
    })?;
    let at = |offset: usize| Location {
        path: path.to_owned(),
        line: Some(src[..offset].matches('\n').count() + 1),
    };
    if file.max_body_size == Some(0) {
        return Err(Error::Setting {
            at: Location {
                path: path.to_owned(),
                line: None,
            },
            key: "max_body_size".into(),
            problem: "must be at least 1".into(),
        });
    }
    let whitelist = match file.whitelist {
        None => None,
        Some(table) => {
            // toml's map is sorted; regexp precedence needs the file's order back.
            let mut items: Vec<_> = table.into_iter().collect();
            items.sort_by_key(|(_, v)| v.span().start);
            let mut w = Whitelist::empty();
            for (name, value) in items {
                let here = at(value.span().start);
                let key = toml_key(&name).map_err(|source| Error::Whitelist {
                    at: here.clone(),
                    source,
                })?;
                let entry = toml_entry(value.into_inner()).map_err(|problem| Error::Setting {
                    at: here,
                    key: "whitelist".into(),
                    problem: format!("entry {name:?}: {problem}"),
                })?;
                w.insert(key, entry);
            }
            Some(w)
        }
    };
    Ok(Settings {
        chef_server_url: file.chef_server_url,
        node_name: file.node_name,
        client_key: file.client_key,
        whitelist,
        file_dir: file.file_dir,
        allow_unencrypted: file.allow_unencrypted,
        allowed_overwritable_env_vars: file.allowed_overwritable_env_vars,
        max_body_size: file.max_body_size,
        lockfile: file.lockfile,
        file_cache_path: file.file_cache_path,
        verify_api_cert: file.verify_api_cert,
        log_level: file.log_level,
        ssl_verify_mode: file.ssl_verify_mode,
        trusted_certs_dir: file.trusted_certs_dir,
    })
}

/// `"/source/flags"` (no unescaped `/` inside, flags from Ruby's set) is a regexp key; any
/// other string is an exact key. So an exact key such as `/bin/mix` cannot be written in TOML.
fn toml_key(name: &str) -> Result<Key, whitelist::Error> {
    let regexp = name.strip_prefix('/').and_then(|rest| {
        let close = unescaped_slash(rest)?;
        let flags = &rest[close + 1..];
        flags
            .chars()
            .all(|c| "imxounse".contains(c))
            .then(|| (&rest[..close], flags))
    });
    match regexp {
        Some((source, flags)) => Ok(Key::Regex(Pattern::new(
            &source.replace("\\/", "/"),
            flags,
        )?)),
        None => Ok(Key::Exact(name.to_owned())),
    }
}

fn unescaped_slash(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '/' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn toml_entry(value: toml::Value) -> Result<Entry, String> {
    let table = match value {
        toml::Value::String(line) => return Ok(Entry::Line(line)),
        toml::Value::Table(table) => table,
        other => {
            return Err(format!(
                "expects a string or a table, found {}",
                other.type_str()
            ));
        }
    };
    let mut command_line = None;
    let mut lock = None;
    for (k, v) in table {
        match (k.as_str(), v) {
            ("command_line", toml::Value::String(s)) => command_line = Some(s),
            ("lock", toml::Value::Boolean(b)) => lock = b.then_some(Lock::ChefDefault),
            ("lock", toml::Value::String(p)) if !p.is_empty() => lock = Some(Lock::Path(p.into())),
            ("command_line" | "lock", v) => {
                return Err(format!("`{k}` has the wrong type ({})", v.type_str()));
            }
            _ => return Err(format!("unknown key `{k}` (expected command_line, lock)")),
        }
    }
    let command_line = command_line.ok_or("has no `command_line`")?;
    Ok(Entry::Hash { command_line, lock })
}

mod ruby {
    //! The Ruby-form reader: a lexer and a parser for literal-only Mixlib::Config files, and
    //! the mapping of settings onto [`Settings`].

    use std::path::Path;

    use super::{Error, Location, Settings, SslVerifyMode};
    use crate::whitelist::{Entry, Key, Lock, Pattern, Whitelist};

    /// Something the file did that is not an error: an ignored setting.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) struct Note {
        pub(super) line: usize,
        /// True for unknown settings (warn), false for known Chef ones (debug).
        pub(super) warn: bool,
        pub(super) message: String,
    }

    impl Note {
        pub(super) fn log(&self, path: &Path) {
            let file = path.display();
            if self.warn {
                tracing::warn!(%file, line = self.line, "{}", self.message);
            } else {
                tracing::debug!(%file, line = self.line, "{}", self.message);
            }
        }
    }

    /// Chef settings the push client does not use: ignored without a warning.
    const CHEF_KEYS: &[&str] = &[
        "log_location",
        "ssl_ca_path",
        "ssl_ca_file",
        "ssl_client_cert",
        "ssl_client_key",
        "validation_client_name",
        "validation_key",
        "validation_key_contents",
        "client_name",
        "client_key_contents",
        "http_proxy",
        "http_proxy_user",
        "http_proxy_pass",
        "https_proxy",
        "https_proxy_user",
        "https_proxy_pass",
        "ftp_proxy",
        "ftp_proxy_user",
        "ftp_proxy_pass",
        "no_proxy",
        "rest_timeout",
        "http_retry_count",
        "http_retry_delay",
        "interval",
        "splay",
        "json_attribs",
        "environment",
        "policy_name",
        "policy_group",
        "use_policyfile",
        "named_run_list",
        "pid_file",
        "cache_path",
        "cookbook_path",
        "checksum_path",
        "file_backup_path",
        "file_staging_uses_destdir",
        "syntax_check_cache_path",
        "data_bag_path",
        "role_path",
        "environment_path",
        "node_path",
        "chef_repo_path",
        "encrypted_data_bag_secret",
        "client_fork",
        "daemonize",
        "umask",
        "user",
        "group",
        "diff_disabled",
        "enable_reporting",
        "enable_reporting_url_fatals",
        "enable_selinux_file_permission_fixup",
        "verbose_logging",
        "force_logger",
        "force_formatter",
        "formatter",
        "color",
        "chef_license",
        "chef_guid",
        "local_mode",
        "chef_zero",
        "fips",
        "minimal_ohai",
        "authentication_protocol_version",
        "treat_deprecation_warnings_as_errors",
        "stream_execute_output",
        "show_download_progress",
        "rubygems_url",
        "log_rotation",
        "automatic_attribute_whitelist",
        "default_attribute_whitelist",
        "normal_attribute_whitelist",
        "override_attribute_whitelist",
        "allowed_automatic_attributes",
        "allowed_default_attributes",
        "allowed_normal_attributes",
        "allowed_override_attributes",
        "blocked_automatic_attributes",
        "blocked_default_attributes",
        "blocked_normal_attributes",
        "blocked_override_attributes",
    ];

    /// Ruby keywords and DSL methods that cannot start a setting line.
    const NOT_SETTINGS: &[&str] = &[
        "alias",
        "and",
        "begin",
        "break",
        "case",
        "class",
        "def",
        "defined?",
        "do",
        "else",
        "elsif",
        "end",
        "ensure",
        "for",
        "if",
        "in",
        "module",
        "next",
        "not",
        "or",
        "redo",
        "rescue",
        "retry",
        "return",
        "self",
        "super",
        "then",
        "undef",
        "unless",
        "until",
        "when",
        "while",
        "yield",
        "lambda",
        "proc",
        "loop",
        "require",
        "require_relative",
        "load",
        "include",
        "extend",
        "puts",
        "print",
        "p",
        "pp",
        "raise",
        "fail",
        "system",
        "exec",
        "eval",
        "instance_eval",
        "at_exit",
        "sleep",
        "exit",
        "abort",
        "config_context",
        "default",
        "configurable",
        "__FILE__",
        "__LINE__",
        "__dir__",
    ];

    /// A literal value.
    #[derive(Clone, Debug, PartialEq)]
    pub(super) enum Value {
        Nil,
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(String),
        Sym(String),
        Const(String),
        Regex {
            source: String,
            flags: String,
        },
        Array(Vec<Value>),
        /// Entries in order, each with its key's line.
        Hash(Vec<(Value, Value, usize)>),
    }

    impl Value {
        fn kind(&self) -> &'static str {
            match self {
                Value::Nil => "nil",
                Value::Bool(_) => "a boolean",
                Value::Int(_) => "an integer",
                Value::Float(_) => "a float",
                Value::Str(_) => "a string",
                Value::Sym(_) => "a symbol",
                Value::Const(_) => "a constant",
                Value::Regex { .. } => "a regexp",
                Value::Array(_) => "an array",
                Value::Hash(_) => "a hash",
            }
        }

        fn show(&self) -> String {
            match self {
                Value::Str(s) => format!("{s:?}"),
                Value::Sym(s) => format!(":{s}"),
                Value::Int(i) => i.to_string(),
                Value::Const(c) => c.clone(),
                Value::Regex { source, flags } => format!("/{source}/{flags}"),
                other => other.kind().to_owned(),
            }
        }
    }

    /// A parse failure: line and what was not understood.
    #[derive(Debug)]
    pub(super) struct Problem(pub(super) usize, pub(super) String);

    type Parsed<T> = Result<T, Problem>;

    pub(super) fn read(src: &str, path: &Path) -> Result<(Settings, Vec<Note>), Error> {
        let at = |line: usize| Location {
            path: path.to_owned(),
            line: Some(line),
        };
        let statements = parse(src).map_err(|Problem(line, problem)| Error::Ruby {
            at: at(line),
            problem,
        })?;
        let mut settings = Settings::default();
        let mut notes = Vec::new();
        for st in statements {
            match st {
                Statement::Setting { key, value, line } => {
                    assign(&mut settings, &key, value, line, &mut notes).map_err(|e| match e {
                        Invalid::Value(line, problem) => Error::Setting {
                            at: at(line),
                            key,
                            problem,
                        },
                        Invalid::Regex(line, source) => Error::Whitelist {
                            at: at(line),
                            source,
                        },
                    })?;
                }
                Statement::Ignored { line, what } => notes.push(Note {
                    line,
                    warn: false,
                    message: format!("ignored {what}"),
                }),
            }
        }
        Ok((settings, notes))
    }

    /// The statements of `src`, or the first problem in file order.
    fn parse(src: &str) -> Parsed<Vec<Statement>> {
        let (tokens, lex_problem) = Lexer::new(src).tokens();
        let parsed = Parser::new(tokens).file();
        match (parsed, lex_problem) {
            (Err(p), Some(l)) if p.0 < l.0 => Err(p),
            (_, Some(l)) => Err(l),
            (parsed, None) => parsed,
        }
    }

    enum Invalid {
        Value(usize, String),
        Regex(usize, crate::whitelist::Error),
    }

    fn assign(
        s: &mut Settings,
        key: &str,
        value: Value,
        line: usize,
        notes: &mut Vec<Note>,
    ) -> Result<(), Invalid> {
        let bad = |problem: String| Invalid::Value(line, problem);
        match key {
            "chef_server_url" => s.chef_server_url = string(value).map_err(bad)?,
            "node_name" => s.node_name = string(value).map_err(bad)?,
            "client_key" => s.client_key = string(value).map_err(bad)?.map(Into::into),
            "file_dir" => s.file_dir = string(value).map_err(bad)?.map(Into::into),
            "lockfile" => s.lockfile = string(value).map_err(bad)?.map(Into::into),
            "file_cache_path" => s.file_cache_path = string(value).map_err(bad)?.map(Into::into),
            "allow_unencrypted" => s.allow_unencrypted = boolean(value).map_err(bad)?,
            "verify_api_cert" => s.verify_api_cert = boolean(value).map_err(bad)?,
            "max_body_size" => s.max_body_size = size(value).map_err(bad)?,
            "log_level" => s.log_level = level(value).map_err(bad)?,
            "ssl_verify_mode" => s.ssl_verify_mode = verify_mode(value).map_err(bad)?,
            "trusted_certs_dir" => {
                s.trusted_certs_dir = string(value).map_err(bad)?.map(Into::into);
            }
            "allowed_overwritable_env_vars" => {
                s.allowed_overwritable_env_vars = strings(value).map_err(bad)?;
            }
            "whitelist" => s.whitelist = whitelist(value, line, notes)?,
            known if CHEF_KEYS.contains(&known) => notes.push(Note {
                line,
                warn: false,
                message: format!("ignored Chef setting `{known}` (not used by the push client)"),
            }),
            unknown => notes.push(Note {
                line,
                warn: true,
                message: format!("ignored unknown setting `{unknown}`"),
            }),
        }
        Ok(())
    }

    fn string(v: Value) -> Result<Option<String>, String> {
        match v {
            Value::Nil => Ok(None),
            Value::Str(s) => Ok(Some(s)),
            other => Err(format!("expects a string, found {}", other.kind())),
        }
    }

    fn boolean(v: Value) -> Result<Option<bool>, String> {
        match v {
            Value::Nil => Ok(None),
            Value::Bool(b) => Ok(Some(b)),
            other => Err(format!("expects true or false, found {}", other.kind())),
        }
    }

    fn size(v: Value) -> Result<Option<usize>, String> {
        match v {
            Value::Nil => Ok(None),
            Value::Int(i) if i >= 1 => usize::try_from(i)
                .map(Some)
                .map_err(|_| "is too large".to_owned()),
            Value::Int(_) => Err("must be at least 1".into()),
            other => Err(format!("expects an integer, found {}", other.kind())),
        }
    }

    fn level(v: Value) -> Result<Option<String>, String> {
        match v {
            Value::Nil => Ok(None),
            Value::Sym(s) | Value::Str(s) => Ok(Some(s)),
            other => Err(format!(
                "expects a symbol such as :info, found {}",
                other.kind()
            )),
        }
    }

    fn verify_mode(v: Value) -> Result<Option<SslVerifyMode>, String> {
        match v {
            Value::Nil => Ok(None),
            Value::Sym(s) if s == "verify_peer" => Ok(Some(SslVerifyMode::VerifyPeer)),
            Value::Sym(s) if s == "verify_none" => Ok(Some(SslVerifyMode::VerifyNone)),
            other => Err(format!(
                "expects :verify_peer or :verify_none, found {}",
                other.show()
            )),
        }
    }

    fn strings(v: Value) -> Result<Option<Vec<String>>, String> {
        match v {
            Value::Nil => Ok(None),
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::Str(s) => Ok(s),
                    other => Err(format!(
                        "expects an array of strings, found {}",
                        other.kind()
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            other => Err(format!(
                "expects an array of strings, found {}",
                other.kind()
            )),
        }
    }

    fn whitelist(
        v: Value,
        line: usize,
        notes: &mut Vec<Note>,
    ) -> Result<Option<Whitelist>, Invalid> {
        let items = match v {
            Value::Nil => return Ok(None),
            Value::Hash(items) => items,
            other => {
                return Err(Invalid::Value(
                    line,
                    format!("expects a hash, found {}", other.kind()),
                ));
            }
        };
        let mut w = Whitelist::empty();
        for (key, value, line) in items {
            let shown = key.show();
            let key = match key {
                Value::Str(s) => Key::Exact(s),
                Value::Regex { source, flags } => {
                    Key::Regex(Pattern::new(&source, &flags).map_err(|e| Invalid::Regex(line, e))?)
                }
                other => {
                    notes.push(Note {
                        line,
                        warn: true,
                        message: format!(
                            "ignored whitelist key {} ({}): only strings and regexps can match a command",
                            other.show(),
                            other.kind()
                        ),
                    });
                    continue;
                }
            };
            let entry = entry(value, line, notes)
                .map_err(|p| Invalid::Value(line, format!("entry {shown}: {p}")))?;
            w.insert(key, entry);
        }
        Ok(Some(w))
    }

    /// A whitelist value. Hash keys may be symbols (`:lock`, `lock:`) or strings (`"lock"`,
    /// what the cookbook's `to_hash.inspect` writes).
    fn entry(v: Value, line: usize, notes: &mut Vec<Note>) -> Result<Entry, String> {
        let items = match v {
            Value::Str(s) => return Ok(Entry::Line(s)),
            Value::Hash(items) => items,
            other => {
                return Err(format!(
                    "expects a string or a hash, found {}",
                    other.kind()
                ));
            }
        };
        let mut command_line = None;
        let mut lock = None;
        for (k, v, _) in items {
            let name = match &k {
                Value::Sym(s) | Value::Str(s) => s.as_str(),
                other => return Err(format!("unexpected key {}", other.show())),
            };
            match (name, v) {
                ("command_line", Value::Str(s)) => command_line = Some(s),
                ("lock", Value::Bool(true)) => lock = Some(Lock::ChefDefault),
                ("lock", Value::Bool(false) | Value::Nil) => lock = None,
                ("lock", Value::Str(p)) if !p.is_empty() => lock = Some(Lock::Path(p.into())),
                ("command_line", v) => {
                    return Err(format!(
                        ":command_line must be a string, found {}",
                        v.kind()
                    ));
                }
                ("lock", v) => {
                    return Err(format!(
                        ":lock must be true, false or a path, found {}",
                        v.show()
                    ));
                }
                (other, _) => notes.push(Note {
                    line,
                    warn: true,
                    message: format!("ignored whitelist entry key {other:?}"),
                }),
            }
        }
        let command_line = command_line.ok_or("hash has no :command_line")?;
        Ok(Entry::Hash { command_line, lock })
    }

    #[derive(Clone, Debug, PartialEq)]
    enum Tok {
        Ident(String),
        Const(String),
        /// `name:` or `"name":`, a symbol hash key.
        Label(String),
        Str(String),
        Sym(String),
        Int(i64),
        Float(f64),
        Regex {
            source: String,
            flags: String,
        },
        Words(Vec<String>),
        LBrace,
        RBrace,
        LParen,
        RParen,
        LBracket,
        RBracket,
        Comma,
        Arrow,
        Assign,
        Dot,
        Scope,
        Semi,
        Newline,
        Eof,
    }

    impl Tok {
        fn describe(&self) -> String {
            match self {
                Tok::Ident(s) => format!("`{s}`"),
                Tok::Const(s) => format!("`{s}`"),
                Tok::Label(s) => format!("`{s}:`"),
                Tok::Str(s) => format!("string {s:?}"),
                Tok::Sym(s) => format!("`:{s}`"),
                Tok::Int(i) => format!("`{i}`"),
                Tok::Float(f) => format!("`{f}`"),
                Tok::Regex { source, flags } => format!("`/{source}/{flags}`"),
                Tok::Words(_) => "`%w[...]`".into(),
                Tok::LBrace => "`{`".into(),
                Tok::RBrace => "`}`".into(),
                Tok::LParen => "`(`".into(),
                Tok::RParen => "`)`".into(),
                Tok::LBracket => "`[`".into(),
                Tok::RBracket => "`]`".into(),
                Tok::Comma => "`,`".into(),
                Tok::Arrow => "`=>`".into(),
                Tok::Assign => "`=`".into(),
                Tok::Dot => "`.` (a method call)".into(),
                Tok::Scope => "`::`".into(),
                Tok::Semi => "`;`".into(),
                Tok::Newline => "end of line".into(),
                Tok::Eof => "end of file".into(),
            }
        }
    }

    #[derive(Clone, Debug)]
    struct Token {
        tok: Tok,
        line: usize,
        /// Whitespace precedes it: `f [1]` is a call with an array, `f[1]` indexing.
        spaced: bool,
    }

    struct Lexer<'a> {
        src: &'a str,
        pos: usize,
        line: usize,
    }

    fn is_ident_start(c: char) -> bool {
        c.is_ascii_alphabetic() || c == '_'
    }

    fn is_ident_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_'
    }

    impl<'a> Lexer<'a> {
        fn new(src: &'a str) -> Self {
            Lexer {
                src,
                pos: 0,
                line: 1,
            }
        }

        fn rest(&self) -> &'a str {
            &self.src[self.pos..]
        }

        fn peek(&self) -> Option<char> {
            self.rest().chars().next()
        }

        fn peek2(&self) -> Option<char> {
            self.rest().chars().nth(1)
        }

        fn bump(&mut self) -> Option<char> {
            let c = self.peek()?;
            self.pos += c.len_utf8();
            if c == '\n' {
                self.line += 1;
            }
            Some(c)
        }

        fn at_line_start(&self) -> bool {
            self.pos == 0 || self.src[..self.pos].ends_with('\n')
        }

        fn skip_line(&mut self) {
            while self.peek().is_some_and(|c| c != '\n') {
                self.bump();
            }
        }

        /// The tokens, and the problem that stopped the lexer early, if any (the tokens then
        /// end there, so the parser can still report an earlier problem first).
        fn tokens(mut self) -> (Vec<Token>, Option<Problem>) {
            let mut out = Vec::new();
            match self.scan(&mut out) {
                Ok(()) => (out, None),
                Err(problem) => {
                    out.push(Token {
                        tok: Tok::Eof,
                        line: problem.0,
                        spaced: true,
                    });
                    (out, Some(problem))
                }
            }
        }

        fn scan(&mut self, out: &mut Vec<Token>) -> Parsed<()> {
            let mut spaced = true;
            loop {
                let line = self.line;
                let Some(c) = self.peek() else {
                    out.push(Token {
                        tok: Tok::Eof,
                        line,
                        spaced,
                    });
                    return Ok(());
                };
                let tok = match c {
                    ' ' | '\t' | '\r' => {
                        self.bump();
                        spaced = true;
                        continue;
                    }
                    '\\' if matches!(self.peek2(), Some('\n' | '\r')) => {
                        self.bump();
                        self.skip_line();
                        self.bump();
                        spaced = true;
                        continue;
                    }
                    '#' => {
                        self.skip_line();
                        continue;
                    }
                    '=' if self.at_line_start() && self.rest().starts_with("=begin") => {
                        self.block_comment(line)?;
                        continue;
                    }
                    '_' if self.at_line_start()
                        && self.rest().lines().next() == Some("__END__") =>
                    {
                        out.push(Token {
                            tok: Tok::Eof,
                            line,
                            spaced,
                        });
                        return Ok(());
                    }
                    '\n' => {
                        self.bump();
                        Tok::Newline
                    }
                    '\'' => self.label_or(|l| l.single_quoted().map(Tok::Str))?,
                    '"' => self.label_or(|l| l.double_quoted().map(Tok::Str))?,
                    '/' => {
                        self.bump();
                        self.regex('/', '/')?
                    }
                    '%' => self.percent()?,
                    ':' => self.colon()?,
                    '-' if self.peek2().is_some_and(|d| d.is_ascii_digit()) => self.number()?,
                    d if d.is_ascii_digit() => self.number()?,
                    c if is_ident_start(c) => self.word(),
                    '=' => {
                        self.bump();
                        match self.peek() {
                            Some('>') => {
                                self.bump();
                                Tok::Arrow
                            }
                            Some(c @ ('=' | '~')) => {
                                return Err(Problem(
                                    line,
                                    format!(
                                        "operator `={c}` is not supported (only literal values)"
                                    ),
                                ));
                            }
                            _ => Tok::Assign,
                        }
                    }
                    _ => {
                        self.bump();
                        match c {
                            '{' => Tok::LBrace,
                            '}' => Tok::RBrace,
                            '(' => Tok::LParen,
                            ')' => Tok::RParen,
                            '[' => Tok::LBracket,
                            ']' => Tok::RBracket,
                            ',' => Tok::Comma,
                            ';' => Tok::Semi,
                            '.' => Tok::Dot,
                            other => return Err(Problem(line, unexpected_char(other))),
                        }
                    }
                };
                out.push(Token { tok, line, spaced });
                spaced = false;
            }
        }

        fn block_comment(&mut self, line: usize) -> Parsed<()> {
            loop {
                self.skip_line();
                if self.bump().is_none() {
                    return Err(Problem(line, "`=begin` without `=end`".into()));
                }
                if self.rest().starts_with("=end") {
                    self.skip_line();
                    return Ok(());
                }
            }
        }

        /// A string, or a `"name":` hash label.
        fn label_or(&mut self, string: impl FnOnce(&mut Self) -> Parsed<Tok>) -> Parsed<Tok> {
            let tok = string(self)?;
            match tok {
                Tok::Str(s) if self.peek() == Some(':') && self.peek2() != Some(':') => {
                    self.bump();
                    Ok(Tok::Label(s))
                }
                tok => Ok(tok),
            }
        }

        fn word(&mut self) -> Tok {
            let start = self.pos;
            while self.peek().is_some_and(is_ident_char) {
                self.bump();
            }
            if matches!(self.peek(), Some('?' | '!')) && self.peek2() != Some('=') {
                self.bump();
            }
            let word = self.src[start..self.pos].to_owned();
            if self.peek() == Some(':') && self.peek2() != Some(':') && !word.ends_with(['?', '!'])
            {
                self.bump();
                return Tok::Label(word);
            }
            if word.starts_with(|c: char| c.is_ascii_uppercase()) {
                Tok::Const(word)
            } else {
                Tok::Ident(word)
            }
        }

        fn colon(&mut self) -> Parsed<Tok> {
            let line = self.line;
            self.bump();
            match self.peek() {
                Some(':') => {
                    self.bump();
                    Ok(Tok::Scope)
                }
                Some('"') => self.double_quoted().map(Tok::Sym),
                Some('\'') => self.single_quoted().map(Tok::Sym),
                Some(c) if is_ident_start(c) => match self.word() {
                    Tok::Ident(s) | Tok::Const(s) => Ok(Tok::Sym(s)),
                    // `:a:` is not Ruby; report it as such.
                    _ => Err(Problem(line, "malformed symbol".into())),
                },
                _ => Err(Problem(
                    line,
                    "a lone `:` is not supported (no ternaries or operator symbols)".into(),
                )),
            }
        }

        fn single_quoted(&mut self) -> Parsed<String> {
            let line = self.line;
            self.bump();
            let mut s = String::new();
            loop {
                match self.bump() {
                    None => return Err(Problem(line, "unterminated string".into())),
                    Some('\'') => return Ok(s),
                    Some('\\') => match self.bump() {
                        Some(c @ ('\\' | '\'')) => s.push(c),
                        Some(c) => {
                            s.push('\\');
                            s.push(c);
                        }
                        None => return Err(Problem(line, "unterminated string".into())),
                    },
                    Some(c) => s.push(c),
                }
            }
        }

        fn double_quoted(&mut self) -> Parsed<String> {
            let line = self.line;
            self.bump();
            let mut s = String::new();
            loop {
                match self.bump() {
                    None => return Err(Problem(line, "unterminated string".into())),
                    Some('"') => return Ok(s),
                    Some('\\') => self.escape(&mut s, line)?,
                    Some('#') if self.interpolates() => {
                        return Err(Problem(
                            self.line,
                            "string interpolation (`#{...}`) is not supported; write the value literally".into(),
                        ));
                    }
                    Some(c) => s.push(c),
                }
            }
        }

        /// After a `#` inside double quotes or a regexp: is this `#{`, `#@var` or `#$var`?
        fn interpolates(&self) -> bool {
            match self.peek() {
                Some('{') => true,
                Some('@') => self.peek2().is_some_and(|c| is_ident_start(c) || c == '@'),
                Some('$') => self
                    .peek2()
                    .is_some_and(|c| is_ident_start(c) || "!@&~0123456789".contains(c)),
                _ => false,
            }
        }

        fn escape(&mut self, s: &mut String, line: usize) -> Parsed<()> {
            let unterminated = || Problem(line, "unterminated string".into());
            let c = self.bump().ok_or_else(unterminated)?;
            let decoded = match c {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                's' => ' ',
                'e' => '\x1b',
                'a' => '\x07',
                'b' => '\x08',
                'f' => '\x0c',
                'v' => '\x0b',
                '\n' => return Ok(()),
                '0'..='7' => {
                    let mut n = c.to_digit(8).expect("octal digit");
                    for _ in 0..2 {
                        match self.peek().and_then(|d| d.to_digit(8)) {
                            Some(d) => {
                                self.bump();
                                n = n * 8 + d;
                            }
                            None => break,
                        }
                    }
                    char::from_u32(n).expect("at most 0o777")
                }
                'x' => {
                    let n = self.hex_digits(2);
                    let n = n.ok_or_else(|| Problem(line, "invalid `\\x` escape".into()))?;
                    char::from_u32(n).expect("at most 0xff")
                }
                'u' if self.peek() == Some('{') => {
                    self.bump();
                    loop {
                        while self.peek() == Some(' ') {
                            self.bump();
                        }
                        if self.peek() == Some('}') {
                            self.bump();
                            return Ok(());
                        }
                        let n = self.hex_digits(6).and_then(char::from_u32);
                        s.push(n.ok_or_else(|| Problem(line, "invalid `\\u{...}` escape".into()))?);
                    }
                }
                'u' => {
                    let start = self.pos;
                    let n = self.hex_digits(4).filter(|_| self.pos - start == 4);
                    n.and_then(char::from_u32)
                        .ok_or_else(|| Problem(line, "invalid `\\u` escape".into()))?
                }
                'c' | 'C' | 'M' => {
                    return Err(Problem(
                        line,
                        format!("control/meta escape `\\{c}` is not supported"),
                    ));
                }
                other => other,
            };
            s.push(decoded);
            Ok(())
        }

        fn hex_digits(&mut self, max: usize) -> Option<u32> {
            let mut n = None;
            for _ in 0..max {
                let Some(d) = self.peek().and_then(|c| c.to_digit(16)) else {
                    break;
                };
                self.bump();
                n = Some(n.unwrap_or(0) * 16 + d);
            }
            n
        }

        /// A regexp body after its opening delimiter; `\/` becomes `/`, other escapes stay.
        fn regex(&mut self, open: char, close: char) -> Parsed<Tok> {
            let line = self.line;
            let mut source = String::new();
            let mut depth = 0usize;
            loop {
                let c = self
                    .bump()
                    .ok_or_else(|| Problem(line, "unterminated regexp".into()))?;
                match c {
                    '\\' => {
                        let d = self
                            .bump()
                            .ok_or_else(|| Problem(line, "unterminated regexp".into()))?;
                        if d != '/' {
                            source.push('\\');
                        }
                        source.push(d);
                    }
                    '#' if self.interpolates() => {
                        return Err(Problem(
                            self.line,
                            "regexp interpolation (`#{...}`) is not supported".into(),
                        ));
                    }
                    c if c == close && depth == 0 => break,
                    c => {
                        if open != close && c == open {
                            depth += 1;
                        } else if open != close && c == close {
                            depth -= 1;
                        }
                        source.push(c);
                    }
                }
            }
            let start = self.pos;
            while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                self.bump();
            }
            let flags = self.src[start..self.pos].to_owned();
            if let Some(bad) = flags.chars().find(|c| !"imxounse".contains(*c)) {
                return Err(Problem(
                    line,
                    format!("unknown regexp flag `{bad}` in /{source}/{flags}"),
                ));
            }
            Ok(Tok::Regex { source, flags })
        }

        /// `%w[...]` word arrays and `%r{...}` regexps; other `%` literals are refused.
        fn percent(&mut self) -> Parsed<Tok> {
            let line = self.line;
            self.bump();
            let kind = self.bump();
            let open = self.bump();
            let close = match open {
                Some('(') => ')',
                Some('[') => ']',
                Some('{') => '}',
                Some('<') => '>',
                Some(c) if c.is_ascii_punctuation() => c,
                _ => return Err(Problem(line, "unsupported `%` literal".into())),
            };
            let open = open.expect("matched above");
            match kind {
                Some('r') => self.regex(open, close),
                Some('w') => {
                    let mut body = String::new();
                    loop {
                        match self.bump() {
                            None => return Err(Problem(line, "unterminated %w literal".into())),
                            Some(c) if c == close => break,
                            Some(c) => body.push(c),
                        }
                    }
                    Ok(Tok::Words(
                        body.split_whitespace().map(str::to_owned).collect(),
                    ))
                }
                _ => Err(Problem(
                    line,
                    "only the %w[...] and %r{...} `%` literals are supported".into(),
                )),
            }
        }

        fn number(&mut self) -> Parsed<Tok> {
            let line = self.line;
            let start = self.pos;
            let negative = self.peek() == Some('-');
            if negative {
                self.bump();
            }
            let radix = match (self.peek(), self.peek2().map(|c| c.to_ascii_lowercase())) {
                (Some('0'), Some('x')) => 16,
                (Some('0'), Some('b')) => 2,
                (Some('0'), Some('o')) => 8,
                (Some('0'), Some('d')) => 10,
                (Some('0'), Some('0'..='9' | '_')) => 8,
                _ => 0,
            };
            if radix != 0 {
                self.bump();
                if self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                    self.bump();
                }
            }
            let digits_start = self.pos;
            while self
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                self.bump();
            }
            let mut float = false;
            if radix == 0
                && self.peek() == Some('.')
                && self.peek2().is_some_and(|c| c.is_ascii_digit())
            {
                float = true;
                self.bump();
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '+' || c == '-')
                {
                    self.bump();
                }
            }
            let digits: String = self.src[digits_start..self.pos]
                .chars()
                .filter(|&c| c != '_')
                .collect();
            let invalid = || {
                Problem(
                    line,
                    format!("invalid number `{}`", &self.src[start..self.pos]),
                )
            };
            if float {
                let value: f64 = digits.parse().map_err(|_| invalid())?;
                return Ok(Tok::Float(if negative { -value } else { value }));
            }
            let value = i64::from_str_radix(&digits, if radix == 0 { 10 } else { radix })
                .map_err(|_| invalid())?;
            Ok(Tok::Int(if negative { -value } else { value }))
        }
    }

    fn unexpected_char(c: char) -> String {
        match c {
            '@' => "instance variables (`@...`) are not supported".into(),
            '$' => "global variables (`$...`) are not supported".into(),
            '`' => "backticks (shell commands) are not supported".into(),
            '<' => "heredocs and operators (`<`, `<<`) are not supported".into(),
            '|' => "blocks and operators (`|`) are not supported".into(),
            c if c.is_ascii_punctuation() => {
                format!("operator `{c}` is not supported (only literal values)")
            }
            c => format!("unexpected character {c:?}"),
        }
    }

    /// One line of the file.
    #[derive(Debug, PartialEq)]
    enum Statement {
        Setting {
            key: String,
            value: Value,
            line: usize,
        },
        /// A recognised non-setting line with no effect on this client.
        Ignored { line: usize, what: String },
    }

    struct Parser {
        toks: Vec<Token>,
        i: usize,
        /// Open brackets: newlines inside them do not end the statement.
        depth: usize,
    }

    impl Parser {
        fn new(toks: Vec<Token>) -> Self {
            Parser {
                toks,
                i: 0,
                depth: 0,
            }
        }

        fn peek(&self) -> &Token {
            &self.toks[self.i.min(self.toks.len() - 1)]
        }

        fn next(&mut self) -> Token {
            let t = self.peek().clone();
            if self.i < self.toks.len() - 1 {
                self.i += 1;
            }
            t
        }

        fn skip_newlines(&mut self) {
            while self.peek().tok == Tok::Newline {
                self.next();
            }
        }

        /// Skips newlines only inside brackets.
        fn gap(&mut self) {
            if self.depth > 0 {
                self.skip_newlines();
            }
        }

        fn expect(&mut self, want: &Tok, context: &str) -> Parsed<()> {
            let t = self.next();
            if t.tok == *want {
                Ok(())
            } else {
                Err(Problem(
                    t.line,
                    format!(
                        "expected {} {context}, found {}",
                        want.describe(),
                        t.tok.describe()
                    ),
                ))
            }
        }

        fn file(mut self) -> Parsed<Vec<Statement>> {
            let mut out = Vec::new();
            loop {
                let t = self.peek().clone();
                let st = match t.tok {
                    Tok::Newline | Tok::Semi => {
                        self.next();
                        continue;
                    }
                    Tok::Eof => return Ok(out),
                    Tok::Ident(name) => self.setting(name, t.line)?,
                    Tok::Const(_) => self.constant()?,
                    other => {
                        return Err(Problem(
                            t.line,
                            format!("expected a setting name, found {}", other.describe()),
                        ));
                    }
                };
                let what = match &st {
                    Statement::Setting { key, .. } => format!("the value of `{key}`"),
                    Statement::Ignored { what, .. } => what.clone(),
                };
                self.end_of_statement(&what)?;
                out.push(st);
            }
        }

        fn end_of_statement(&mut self, after: &str) -> Parsed<()> {
            let t = self.peek().clone();
            match &t.tok {
                Tok::Newline | Tok::Semi | Tok::Eof => Ok(()),
                Tok::Ident(k)
                    if ["if", "unless", "while", "until", "rescue"].contains(&k.as_str()) =>
                {
                    Err(Problem(
                        t.line,
                        format!("`{k}` modifiers are not supported (no conditionals)"),
                    ))
                }
                Tok::Comma => Err(Problem(
                    t.line,
                    format!("more than one argument after {after} is not supported"),
                )),
                other => Err(Problem(
                    t.line,
                    format!(
                        "unexpected {} after {after}; only `setting value` with a literal value is supported",
                        other.describe()
                    ),
                )),
            }
        }

        fn setting(&mut self, name: String, line: usize) -> Parsed<Statement> {
            if NOT_SETTINGS.contains(&name.as_str()) {
                return Err(Problem(
                    line,
                    format!(
                        "`{name}` is not supported: only `setting value` lines are read, not Ruby code"
                    ),
                ));
            }
            if name.ends_with(['?', '!']) {
                return Err(Problem(
                    line,
                    format!("method call `{name}` is not supported"),
                ));
            }
            self.next();
            let t = self.peek().clone();
            let value = match t.tok {
                Tok::Assign => {
                    self.next();
                    self.skip_newlines();
                    self.value()?
                }
                Tok::LParen => {
                    self.next();
                    self.depth += 1;
                    self.skip_newlines();
                    if self.peek().tok == Tok::RParen {
                        return Err(Problem(line, format!("`{name}()` has no value")));
                    }
                    let v = self.argument()?;
                    self.skip_newlines();
                    self.expect(&Tok::RParen, &format!("to close `{name}(`"))?;
                    self.depth -= 1;
                    v
                }
                Tok::LBracket if !t.spaced => {
                    return Err(Problem(
                        line,
                        format!("indexing `{name}[...]` is not supported"),
                    ));
                }
                Tok::Dot | Tok::Scope => {
                    return Err(Problem(
                        line,
                        format!("method call on `{name}` is not supported"),
                    ));
                }
                Tok::Newline | Tok::Semi | Tok::Eof => {
                    return Err(Problem(
                        line,
                        format!(
                            "`{name}` has no value (variables and bare method calls are not supported)"
                        ),
                    ));
                }
                _ => self.argument()?,
            };
            Ok(Statement::Setting {
                key: name,
                value,
                line,
            })
        }

        /// A call argument: a value, or a brace-less hash (`whitelist "a" => "b", ...`).
        fn argument(&mut self) -> Parsed<Value> {
            if matches!(self.peek().tok, Tok::Label(_)) {
                return self.bare_hash(None);
            }
            let v = self.value()?;
            self.gap();
            if self.peek().tok == Tok::Arrow {
                return self.bare_hash(Some(v));
            }
            Ok(v)
        }

        fn bare_hash(&mut self, first_key: Option<Value>) -> Parsed<Value> {
            let line = self.peek().line;
            let mut items = Vec::new();
            let mut first_key = first_key;
            loop {
                let item = match first_key.take() {
                    Some(key) => {
                        self.expect(&Tok::Arrow, "after a hash key")?;
                        self.skip_newlines();
                        (key, self.value()?, line)
                    }
                    None => self.hash_item()?,
                };
                items.push(item);
                self.gap();
                if self.peek().tok != Tok::Comma {
                    return Ok(Value::Hash(items));
                }
                self.next();
                self.skip_newlines();
                if self.peek().tok == Tok::RParen {
                    return Ok(Value::Hash(items));
                }
            }
        }

        fn hash_item(&mut self) -> Parsed<(Value, Value, usize)> {
            let t = self.peek().clone();
            if let Tok::Label(name) = t.tok {
                self.next();
                self.skip_newlines();
                return Ok((Value::Sym(name), self.value()?, t.line));
            }
            let key = self.value()?;
            self.gap();
            self.expect(&Tok::Arrow, "after a hash key")?;
            self.skip_newlines();
            Ok((key, self.value()?, t.line))
        }

        fn value(&mut self) -> Parsed<Value> {
            let t = self.next();
            Ok(match t.tok {
                Tok::Str(s) => Value::Str(s),
                Tok::Int(i) => Value::Int(i),
                Tok::Float(f) => Value::Float(f),
                Tok::Sym(s) => Value::Sym(s),
                Tok::Regex { source, flags } => Value::Regex { source, flags },
                Tok::Words(w) => Value::Array(w.into_iter().map(Value::Str).collect()),
                Tok::Ident(w) if w == "true" => Value::Bool(true),
                Tok::Ident(w) if w == "false" => Value::Bool(false),
                Tok::Ident(w) if w == "nil" => Value::Nil,
                Tok::Ident(w) => {
                    return Err(Problem(
                        t.line,
                        format!(
                            "`{w}` is a variable or method call; only literal values are supported"
                        ),
                    ));
                }
                Tok::Const(c) => Value::Const(self.const_path(c, t.line)?),
                Tok::LBrace => self
                    .delimited(&Tok::RBrace, t.line, |p| p.hash_item())
                    .map(Value::Hash)?,
                Tok::LBracket => self
                    .delimited(&Tok::RBracket, t.line, |p| p.value())
                    .map(Value::Array)?,
                other => {
                    return Err(Problem(
                        t.line,
                        format!("expected a value, found {}", other.describe()),
                    ));
                }
            })
        }

        /// Comma-separated items up to `close` (trailing comma allowed, newlines anywhere).
        fn delimited<T>(
            &mut self,
            close: &Tok,
            open_line: usize,
            mut item: impl FnMut(&mut Self) -> Parsed<T>,
        ) -> Parsed<Vec<T>> {
            self.depth += 1;
            let mut items = Vec::new();
            loop {
                self.skip_newlines();
                if self.peek().tok == *close {
                    self.next();
                    break;
                }
                items.push(item(self)?);
                self.skip_newlines();
                let t = self.next();
                match t.tok {
                    Tok::Comma => {}
                    ref tok if tok == close => break,
                    other => {
                        return Err(Problem(
                            t.line,
                            format!(
                                "expected `,` or {} (opened on line {open_line}), found {}",
                                close.describe(),
                                other.describe()
                            ),
                        ));
                    }
                }
            }
            self.depth -= 1;
            Ok(items)
        }

        /// `A::B::C` used as a value, e.g. `STDOUT`; calls and indexing are refused.
        fn const_path(&mut self, first: String, line: usize) -> Parsed<String> {
            let mut path = first;
            while self.peek().tok == Tok::Scope {
                self.next();
                match self.next().tok {
                    Tok::Const(c) => {
                        path.push_str("::");
                        path.push_str(&c);
                    }
                    other => {
                        return Err(Problem(
                            line,
                            format!(
                                "method call `{path}::{}` is not supported",
                                other.describe()
                            ),
                        ));
                    }
                }
            }
            let t = self.peek().clone();
            match t.tok {
                Tok::Dot => {
                    self.next();
                    let method = match self.next().tok {
                        Tok::Ident(m) | Tok::Const(m) => m,
                        _ => String::new(),
                    };
                    Err(Problem(
                        line,
                        format!(
                            "method call `{path}.{method}` is not supported; write the value literally"
                        ),
                    ))
                }
                Tok::LBracket if !t.spaced && path == "ENV" => Err(Problem(
                    line,
                    "`ENV[...]` (environment lookups) is not supported".into(),
                )),
                Tok::LBracket | Tok::LParen if !t.spaced => Err(Problem(
                    line,
                    format!(
                        "`{path}{}...` (indexing or a call) is not supported",
                        t.tok.describe().trim_matches('`')
                    ),
                )),
                _ => Ok(path),
            }
        }

        /// A line starting with a constant: `NAME = literal` (the cookbook's environment
        /// lines, which only define a Ruby constant) or `Mixlib::Log::Formatter.show_time =
        /// true|false`; nothing else.
        fn constant(&mut self) -> Parsed<Statement> {
            let t = self.next();
            let Tok::Const(first) = t.tok else {
                unreachable!("called on a constant")
            };
            let line = t.line;
            let mut path = first;
            while self.peek().tok == Tok::Scope {
                self.next();
                match self.next().tok {
                    Tok::Const(c) => {
                        path.push_str("::");
                        path.push_str(&c);
                    }
                    _ => return Err(Problem(line, format!("`{path}::...` is not supported"))),
                }
            }
            match self.peek().tok.clone() {
                Tok::Assign => {
                    self.next();
                    self.skip_newlines();
                    let v = self.value()?;
                    Ok(Statement::Ignored {
                        line,
                        what: format!("constant assignment `{path} = {}`", v.show()),
                    })
                }
                Tok::Dot => {
                    self.next();
                    let method = match self.next().tok {
                        Tok::Ident(m) => m,
                        other => other.describe(),
                    };
                    if path == "Mixlib::Log::Formatter"
                        && method == "show_time"
                        && self.peek().tok == Tok::Assign
                    {
                        self.next();
                        if let v @ Value::Bool(_) = self.value()? {
                            return Ok(Statement::Ignored {
                                line,
                                what: format!("`{path}.{method} = {v:?}`"),
                            });
                        }
                        return Err(Problem(
                            line,
                            format!("`{path}.{method}` expects true or false"),
                        ));
                    }
                    Err(Problem(
                        line,
                        format!("method call `{path}.{method}` is not supported"),
                    ))
                }
                Tok::LBracket if path == "ENV" => Err(Problem(
                    line,
                    "`ENV[...]` (environment variables) is not supported".into(),
                )),
                Tok::LBracket => Err(Problem(
                    line,
                    format!("`{path}[...]` is not supported; write `setting value` lines"),
                )),
                other => Err(Problem(
                    line,
                    format!("`{path}` followed by {} is not a setting", other.describe()),
                )),
            }
        }
    }

    #[cfg(test)]
    pub(super) fn statements(src: &str) -> Parsed<Vec<(String, Value)>> {
        Ok(parse(src)?
            .into_iter()
            .filter_map(|st| match st {
                Statement::Setting { key, value, .. } => Some((key, value)),
                Statement::Ignored { .. } => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::ruby::{Value, statements};
    use super::*;
    use crate::whitelist::Resolved;

    fn rb(src: &str) -> Result<ClientConfig, Error> {
        let (settings, _) = ruby::read(src, Path::new("/etc/chef/push-jobs-client.rb"))?;
        settings.finish(|| Ok("host.example".into()))
    }

    fn notes(src: &str) -> Vec<(usize, bool, String)> {
        let (_, notes) = ruby::read(src, Path::new("t.rb")).unwrap();
        notes
            .into_iter()
            .map(|n| (n.line, n.warn, n.message))
            .collect()
    }

    /// The Ruby error message for `src`, which must fail to parse.
    fn rb_err(src: &str) -> String {
        match rb(src) {
            Err(e @ (Error::Ruby { .. } | Error::Setting { .. } | Error::Whitelist { .. })) => {
                e.to_string()
            }
            other => panic!("expected a Ruby error for {src:?}, got {other:?}"),
        }
    }

    fn toml(src: &str) -> Result<ClientConfig, Error> {
        read_toml(src, Path::new("/etc/chef/push-jobs-client.toml"))?
            .finish(|| Ok("host.example".into()))
    }

    fn found(line: &str, lock: Option<Lock>) -> Option<Resolved> {
        Some(Resolved {
            command_line: line.into(),
            lock,
        })
    }

    /// What the push-jobs cookbook renders, plus the hand edits people make.
    const REALISTIC: &str = r#"# Generated by Chef
#
# Local modifications will be overwritten!

LC_ALL='en_US.UTF-8'

# Chef server connect options
chef_server_url   'https://chef.example.com/organizations/acme'
node_name         'web1.example.com'
client_key        '/etc/chef/client.pem'
trusted_certs_dir '/etc/chef/trusted_certs'
verify_api_cert   true
ssl_verify_mode   :verify_peer
allow_unencrypted false
log_level :info
log_location STDOUT
file_dir "/var/lib/push-jobs"   # job files
max_body_size 1_000_000
lockfile = "/var/chef/cache/chef-client-running.pid"
allowed_overwritable_env_vars ["PATH", 'HOME',
                               "LANG"]

# The whitelist comes from node['push_jobs']['whitelist']
whitelist({
  "chef-client" => {:command_line => "chef-client -l info", :lock => true},
  'uptime' => 'uptime',   # quick check
  /^restart (\w+)$/ => "systemctl restart \\1",
  %r{^deploy (?<app>[a-z]+) (\d+)$}i => {
    command_line: 'deploy.sh \k<app> \2',
    lock: "/var/run/deploy.lock",
  },
  "backup" => { "command_line" => "backup.sh", "lock" => false },
})

Mixlib::Log::Formatter.show_time = false
"#;

    #[test]
    fn reads_a_realistic_push_jobs_client_rb() {
        let c = rb(REALISTIC).unwrap();
        assert_eq!(
            c.chef_server_url,
            "https://chef.example.com/organizations/acme"
        );
        assert_eq!(c.node_name, "web1.example.com");
        assert_eq!(c.client_key, Path::new("/etc/chef/client.pem"));
        assert_eq!(
            c.trusted_certs_dir.as_deref(),
            Some(Path::new("/etc/chef/trusted_certs"))
        );
        assert!(c.verify_api_cert);
        assert_eq!(c.ssl_verify_mode, SslVerifyMode::VerifyPeer);
        assert!(!c.allow_unencrypted);
        assert_eq!(c.log_level.as_deref(), Some("info"));
        assert_eq!(c.file_dir, Path::new("/var/lib/push-jobs"));
        assert_eq!(c.max_body_size, 1_000_000);
        assert_eq!(
            c.lockfile.as_deref(),
            Some(Path::new("/var/chef/cache/chef-client-running.pid"))
        );
        assert_eq!(
            c.allowed_overwritable_env_vars,
            Some(vec!["PATH".into(), "HOME".into(), "LANG".into()])
        );
        assert_eq!(c.org().unwrap(), "acme");

        let w = &c.whitelist;
        assert_eq!(w.len(), 5);
        assert_eq!(
            w.lookup("chef-client"),
            found("chef-client -l info", Some(Lock::ChefDefault))
        );
        assert_eq!(w.lookup("uptime"), found("uptime", None));
        assert_eq!(
            w.lookup("restart nginx"),
            found("systemctl restart nginx", None)
        );
        assert_eq!(w.lookup("restart nginx; id"), None);
        assert_eq!(
            w.lookup("DEPLOY shop 42"),
            found(
                "deploy.sh shop 42",
                Some(Lock::Path("/var/run/deploy.lock".into()))
            )
        );
        assert_eq!(w.lookup("backup"), found("backup.sh", None));
        let keys: Vec<String> = w.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(
            keys,
            [
                "\"chef-client\"",
                "\"uptime\"",
                r"/^restart (\w+)$/",
                r"/^deploy (?<app>[a-z]+) (\d+)$/i",
                "\"backup\""
            ]
        );
    }

    #[test]
    fn realistic_file_ignores_chef_and_cookbook_lines_quietly() {
        let n = notes(REALISTIC);
        assert!(n.iter().all(|(_, warn, _)| !warn), "{n:?}");
        let ignored: Vec<usize> = n.iter().map(|(line, _, _)| *line).collect();
        assert_eq!(ignored, [5, 16, 35]); // LC_ALL, log_location, show_time
    }

    #[test]
    fn reads_the_cookbook_inspect_form() {
        let c = rb(concat!(
            "whitelist({\"chef-client\"=>{\"command_line\"=>\"chef-client\", \"lock\"=>true}, ",
            "\"apt\"=>\"apt-get update\"})\n"
        ))
        .unwrap();
        assert_eq!(
            c.whitelist.lookup("chef-client"),
            found("chef-client", Some(Lock::ChefDefault))
        );
        assert_eq!(c.whitelist.lookup("apt"), found("apt-get update", None));
    }

    #[test]
    fn whitelist_forms_block_bare_and_assignment() {
        let braces = rb("whitelist {\n  'a' => 'b',\n  'c' => 'd'\n}\n").unwrap();
        let bare = rb("whitelist 'a' => 'b',\n  'c' => 'd'\n").unwrap();
        let assigned = rb("whitelist = { 'a' => 'b', 'c' => 'd', }").unwrap();
        let labels = rb("whitelist(\n  a: 'b'\n)").unwrap();
        assert_eq!(braces.whitelist, bare.whitelist);
        assert_eq!(braces.whitelist, assigned.whitelist);
        assert_eq!(braces.whitelist.lookup("c"), found("d", None));
        // A Ruby 1.9 label key is a symbol, which never equals a command string.
        assert!(labels.whitelist.is_empty());
        assert!(rb("whitelist {}").unwrap().whitelist.is_empty());
        assert_eq!(rb("whitelist nil").unwrap().whitelist, Whitelist::default());
    }

    #[test]
    fn later_assignment_wins_and_duplicate_keys_keep_position() {
        let c =
            rb("node_name 'a'\nnode_name 'b'\nwhitelist({/x.*/ => '1', 'y' => '2', /x.*/ => '3'})")
                .unwrap();
        assert_eq!(c.node_name, "b");
        assert_eq!(c.whitelist.len(), 2);
        assert_eq!(c.whitelist.lookup("xx"), found("3", None));
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let c = rb("# nothing\n\n").unwrap();
        assert_eq!(c.chef_server_url, "");
        assert_eq!(c.node_name, "host.example");
        assert_eq!(c.client_key, Path::new(DEFAULT_CLIENT_KEY));
        assert_eq!(c.whitelist, Whitelist::default());
        assert_eq!(c.file_dir, Path::new("/tmp/chef-push"));
        assert!(!c.allow_unencrypted);
        assert_eq!(c.allowed_overwritable_env_vars, None);
        assert_eq!(c.max_body_size, 63000);
        assert_eq!(c.lockfile, None);
        assert_eq!(c.file_cache_path, None);
        assert!(!c.verify_api_cert);
        assert_eq!(c.ssl_verify_mode, SslVerifyMode::VerifyPeer);
        assert!(c.verify_tls());
        assert_eq!(c.log_level, None);
        let d = ClientConfig::default();
        assert_eq!(d.file_dir, c.file_dir);
        assert_eq!(d.whitelist, c.whitelist);
    }

    #[test]
    fn node_name_defaults_to_the_host_name() {
        let (settings, _) = ruby::read(
            "chef_server_url 'https://x/organizations/o'",
            Path::new("t.rb"),
        )
        .unwrap();
        let c = settings.finish(hostname).unwrap();
        assert_eq!(c.node_name, hostname().unwrap());
        assert!(!c.node_name.is_empty());
    }

    #[test]
    fn verify_tls_follows_chef() {
        assert!(rb("ssl_verify_mode :verify_peer").unwrap().verify_tls());
        assert!(!rb("ssl_verify_mode :verify_none").unwrap().verify_tls());
        assert!(
            rb("ssl_verify_mode :verify_none\nverify_api_cert true")
                .unwrap()
                .verify_tls()
        );
        assert!(rb_err("ssl_verify_mode 'verify_none'").contains(":verify_peer or :verify_none"));
    }

    #[test]
    fn unknown_settings_warn_and_known_chef_settings_do_not() {
        let n = notes("interval 1800\nsplay 30.5\nfrobnicate 'x'\nhttp_proxy 'http://p:3128'\n");
        assert_eq!(n.len(), 4);
        assert_eq!(n[2].0, 3);
        assert!(n[2].1);
        assert!(n[2].2.contains("`frobnicate`"));
        assert!(
            n.iter()
                .enumerate()
                .all(|(i, (_, warn, _))| *warn == (i == 2))
        );
    }

    #[test]
    fn whitelist_key_that_can_never_match_warns() {
        let src = "whitelist({:chef_client => 'chef-client', 1 => 'x', 'ok' => 'ok'})";
        let n = notes(src);
        assert_eq!(n.len(), 2);
        assert!(n[0].1 && n[0].2.contains(":chef_client"));
        assert_eq!(rb(src).unwrap().whitelist.len(), 1);
    }

    #[test]
    fn lexes_ruby_literals() {
        let st = statements(concat!(
            "a \"tab\\tq\\\"\\\\ \\#{x} \\u00e9\\u{41 42} \\x41\\101\\s\"\n",
            "b 'it\\'s \\\\ \\n'\n",
            "c 0644; d 0x1F; e -12; f 1_000; g 2.5; h nil; i :sym; j :\"q s\"\n",
            "k %w[x y\n z]\n",
            "l /a\\/b\\d/mix\n",
            "m Foo::BAR\n",
            "r %r{^a{2}/b$}x\n",
            "n \"multi\nline\"\n",
            "o [1,\n 2,\n]\n",
            "=begin\nanything ${at} all\n=end\n",
            "q \\\n  'continued'\n",
            "__END__\nthis is ignored(\n"
        ))
        .unwrap();
        let want = [
            ("a", Value::Str("tab\tq\"\\ #{x} éAB AA ".into())),
            ("b", Value::Str("it's \\ \\n".into())),
            ("c", Value::Int(0o644)),
            ("d", Value::Int(31)),
            ("e", Value::Int(-12)),
            ("f", Value::Int(1000)),
            ("g", Value::Float(2.5)),
            ("h", Value::Nil),
            ("i", Value::Sym("sym".into())),
            ("j", Value::Sym("q s".into())),
            (
                "k",
                Value::Array(vec![
                    Value::Str("x".into()),
                    Value::Str("y".into()),
                    Value::Str("z".into()),
                ]),
            ),
            (
                "l",
                Value::Regex {
                    source: "a/b\\d".into(),
                    flags: "mix".into(),
                },
            ),
            ("m", Value::Const("Foo::BAR".into())),
            (
                "r",
                Value::Regex {
                    source: "^a{2}/b$".into(),
                    flags: "x".into(),
                },
            ),
            ("n", Value::Str("multi\nline".into())),
            ("o", Value::Array(vec![Value::Int(1), Value::Int(2)])),
            ("q", Value::Str("continued".into())),
        ];
        assert_eq!(st.len(), want.len());
        for ((k, v), (wk, wv)) in st.iter().zip(want) {
            assert_eq!((k.as_str(), v), (wk, &wv));
        }
    }

    #[test]
    fn error_names_file_and_line() {
        let e =
            rb("node_name 'a'\n\nclient_key File.join('/etc/chef', 'client.pem')\n").unwrap_err();
        let Error::Ruby { at, problem } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(at.line, Some(3));
        assert!(problem.contains("File.join"), "{problem}");
        assert!(
            e.to_string()
                .starts_with("/etc/chef/push-jobs-client.rb:3: method call `File.join`")
        );
    }

    #[test]
    fn refuses_ruby_beyond_the_simple_form() {
        let cases: &[(&str, &str)] = &[
            (
                "current_dir = File.expand_path(File.dirname(__FILE__))",
                "method call `File.expand_path`",
            ),
            ("client_key \"#{current_dir}/client.pem\"", "interpolation"),
            ("node_name \"#@name\"", "interpolation"),
            ("whitelist({/a#{x}/ => 'y'})", "regexp interpolation"),
            ("client_key current_dir", "`current_dir` is a variable"),
            ("if true\n  node_name 'a'\nend", "`if` is not supported"),
            ("node_name 'a' if File.exist?('/x')", "`if` modifiers"),
            ("node_name 'a' unless false", "`unless` modifiers"),
            ("chef_server_url ENV['CHEF_URL']", "`ENV[...]`"),
            ("ENV['http_proxy'] = 'http://p'", "`ENV[...]`"),
            ("Chef::Config[:node_name] = 'a'", "`Chef::Config[...]`"),
            (
                "Chef::Config.from_file('/etc/chef/client.rb')",
                "method call `Chef::Config.from_file`",
            ),
            ("require 'chef/config'", "`require` is not supported"),
            ("node_name 'a'.upcase", "unexpected `.`"),
            ("node_name 'a' + 'b'", "operator `+`"),
            ("node_name `hostname`", "backticks"),
            ("node_name @name", "instance variables"),
            ("node_name $name", "global variables"),
            ("node_name <<~EOS\nx\nEOS", "heredocs"),
            ("whitelist { |w| w }", "blocks"),
            ("node_name 'a', 'b'", "more than one argument"),
            ("node_name", "has no value"),
            ("node_name()", "has no value"),
            ("knife[:editor] = 'vim'", "indexing `knife[...]`"),
            ("node_name 'unterminated", "unterminated string"),
            (
                "whitelist({'a' => 'b'",
                "expected `,` or `}` (opened on line 1)",
            ),
            ("whitelist({'a' 'b'})", "expected `=>` after a hash key"),
            ("whitelist({/a/q => 'b'})", "unknown regexp flag `q`"),
            ("log_level x ? :a : :b", "operator `?`"),
            ("node_name 'a' if\nnode_name 'b' + 'c'", "1: `if` modifiers"),
            ("node_name %q(a)", "only the %w[...] and %r{...}"),
            ("=begin\nnever closed", "`=begin` without `=end`"),
            ("node_name 'a' == 'b'", "operator `==`"),
            (
                "Mixlib::Log::Formatter.show_time = 'yes'",
                "expects true or false",
            ),
            ("def foo; end", "`def` is not supported"),
            ("file_dir 12abc", "invalid number"),
        ];
        for (src, want) in cases {
            let msg = rb_err(src);
            assert!(msg.contains(want), "{src:?}: {msg:?} lacks {want:?}");
            assert!(msg.starts_with("/etc/chef/push-jobs-client.rb:"), "{msg}");
        }
    }

    #[test]
    fn refuses_wrong_value_types() {
        let cases: &[(&str, &str)] = &[
            (
                "max_body_size '63000'",
                "`max_body_size` expects an integer, found a string",
            ),
            ("max_body_size 0", "must be at least 1"),
            ("allow_unencrypted 'yes'", "expects true or false"),
            ("node_name :web1", "expects a string, found a symbol"),
            ("allowed_overwritable_env_vars [:PATH]", "array of strings"),
            ("allowed_overwritable_env_vars 'PATH'", "array of strings"),
            (
                "whitelist ['chef-client']",
                "expects a hash, found an array",
            ),
            (
                "whitelist({'a' => 1})",
                "entry \"a\": expects a string or a hash, found an integer",
            ),
            (
                "whitelist({'a' => {:lock => true}})",
                "entry \"a\": hash has no :command_line",
            ),
            (
                "whitelist({'a' => {:command_line => :x}})",
                ":command_line must be a string",
            ),
            (
                "whitelist({'a' => {:command_line => 'x', :lock => 1}})",
                ":lock must be true, false or a path",
            ),
            (
                "whitelist({'a' => {:command_line => 'x', :lock => ''}})",
                ":lock must be true, false or a path",
            ),
            (
                "whitelist({\n\n /a(/ => 'x'})",
                "push-jobs-client.rb:3: whitelist key: invalid regular expression /a(/",
            ),
            ("whitelist({/(?>a)/ => 'x'})", "invalid regular expression"),
        ];
        for (src, want) in cases {
            let msg = rb_err(src);
            assert!(msg.contains(want), "{src:?}: {msg:?} lacks {want:?}");
        }
    }

    #[test]
    fn whitelist_lock_values() {
        let c = rb(concat!(
            "whitelist('a' => {:command_line => 'a', :lock => true},\n",
            "          'b' => {:command_line => 'b', :lock => '/run/b.lock'},\n",
            "          'c' => {:command_line => 'c', :lock => nil},\n",
            "          'd' => {:command_line => 'd', :lock => false, :note => 'x'})"
        ))
        .unwrap();
        let w = &c.whitelist;
        assert_eq!(w.lookup("a").unwrap().lock, Some(Lock::ChefDefault));
        assert_eq!(
            w.lookup("b").unwrap().lock,
            Some(Lock::Path("/run/b.lock".into()))
        );
        assert_eq!(w.lookup("c").unwrap().lock, None);
        assert_eq!(w.lookup("d").unwrap().lock, None);
    }

    #[test]
    fn lock_path_resolution() {
        let mut c = ClientConfig::default();
        assert_eq!(
            c.lock_path(&Lock::ChefDefault),
            Path::new("/var/chef/cache/chef-client-running.pid")
        );
        c.file_cache_path = Some("/srv/cache".into());
        assert_eq!(
            c.lock_path(&Lock::ChefDefault),
            Path::new("/srv/cache/chef-client-running.pid")
        );
        c.lockfile = Some("/run/chef.pid".into());
        assert_eq!(c.lock_path(&Lock::ChefDefault), Path::new("/run/chef.pid"));
        assert_eq!(c.lock_path(&Lock::Path("/x".into())), Path::new("/x"));
    }

    #[test]
    fn reads_the_toml_form() {
        let c = toml(
            r#"
chef_server_url = "https://chef.example.com/organizations/acme/"
node_name = "web1"
client_key = "/etc/chef/client.pem"
file_dir = "/var/lib/push"
allow_unencrypted = true
allowed_overwritable_env_vars = ["PATH"]
max_body_size = 100000
lockfile = "/run/chef.pid"
file_cache_path = "/var/chef/cache"
verify_api_cert = true
ssl_verify_mode = "verify_none"
trusted_certs_dir = "/etc/chef/trusted_certs"
log_level = "debug"

[whitelist]
"zz-first" = "first"
"/^restart (\\w+)$/" = "systemctl restart \\1"
"/^RESTART (.*)$/i" = "never reached for lowercase"
"chef-client" = { command_line = "chef-client", lock = true }
"/^deploy (\\w+)$/" = { command_line = "deploy.sh \\1", lock = "/run/deploy.lock" }
"backup" = { command_line = "backup.sh", lock = false }
"/opt/bin/tool" = "tool"
"#,
        )
        .unwrap();
        assert_eq!(c.org().unwrap(), "acme");
        assert_eq!(
            c.config_url(),
            "https://chef.example.com/organizations/acme/pushy/config/web1"
        );
        assert_eq!(c.node_name, "web1");
        assert!(c.allow_unencrypted);
        assert_eq!(c.allowed_overwritable_env_vars, Some(vec!["PATH".into()]));
        assert_eq!(c.max_body_size, 100000);
        assert_eq!(c.lockfile.as_deref(), Some(Path::new("/run/chef.pid")));
        assert_eq!(
            c.file_cache_path.as_deref(),
            Some(Path::new("/var/chef/cache"))
        );
        assert!(c.verify_api_cert && c.verify_tls());
        assert_eq!(c.ssl_verify_mode, SslVerifyMode::VerifyNone);
        assert_eq!(c.log_level.as_deref(), Some("debug"));
        let w = &c.whitelist;
        // File order, not the map's sorted order: the case-sensitive regexp comes first.
        let keys: Vec<String> = w.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(
            keys[..3],
            ["\"zz-first\"", r"/^restart (\w+)$/", "/^RESTART (.*)$/i"]
        );
        assert_eq!(
            w.lookup("restart nginx"),
            found("systemctl restart nginx", None)
        );
        assert_eq!(
            w.lookup("chef-client"),
            found("chef-client", Some(Lock::ChefDefault))
        );
        assert_eq!(
            w.lookup("deploy api"),
            found("deploy.sh api", Some(Lock::Path("/run/deploy.lock".into())))
        );
        assert_eq!(w.lookup("deploy api && id"), None);
        assert_eq!(w.lookup("backup"), found("backup.sh", None));
        assert_eq!(w.lookup("/opt/bin/tool"), found("tool", None));
    }

    #[test]
    fn toml_defaults_match_ruby_defaults() {
        assert_eq!(toml("").unwrap(), rb("").unwrap());
    }

    #[test]
    fn toml_errors() {
        let e = toml("whitelsit = {}").unwrap_err();
        assert!(matches!(e, Error::Toml { .. }), "{e:?}");
        assert!(e.to_string().contains("whitelsit"), "{e}");

        let e = toml("max_body_size = 0").unwrap_err();
        assert!(
            e.to_string().contains("`max_body_size` must be at least 1"),
            "{e}"
        );

        let src = "[whitelist]\nok = \"ok\"\n\"/a(/\" = \"x\"\n";
        let e = toml(src).unwrap_err();
        assert!(matches!(e, Error::Whitelist { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("/etc/chef/push-jobs-client.toml:3: whitelist key"),
            "{e}"
        );

        let cases = [
            (
                "[whitelist]\na = 1\n",
                "expects a string or a table, found integer",
            ),
            (
                "[whitelist]\na = { lock = true }\n",
                "has no `command_line`",
            ),
            (
                "[whitelist]\na = { command_line = \"a\", lok = true }\n",
                "unknown key `lok`",
            ),
            (
                "[whitelist]\na = { command_line = \"a\", lock = 1 }\n",
                "`lock` has the wrong type",
            ),
            (
                "[whitelist]\na = { command_line = \"a\", lock = \"\" }\n",
                "`lock` has the wrong type",
            ),
        ];
        for (src, want) in cases {
            let msg = toml(src).unwrap_err().to_string();
            assert!(msg.contains(want), "{src:?}: {msg:?} lacks {want:?}");
            assert!(msg.contains(".toml:2: `whitelist` entry \"a\""), "{msg}");
        }
    }

    #[test]
    fn toml_regexp_keys() {
        let key = |s: &str| toml_key(s).unwrap().to_string();
        assert_eq!(key("/^a b$/"), "/^a b$/");
        assert_eq!(key("/a\\/b/i"), "/a/b/i");
        assert_eq!(key("/opt/bin/tool"), "\"/opt/bin/tool\"");
        assert_eq!(key("/usr/bin/"), "\"/usr/bin/\"");
        assert_eq!(key("plain"), "\"plain\"");
    }

    #[test]
    fn org_extraction() {
        let org = |url: &str| {
            let c = ClientConfig {
                chef_server_url: url.into(),
                ..ClientConfig::default()
            };
            c.org()
        };
        assert_eq!(org("https://chef/organizations/acme").unwrap(), "acme");
        assert_eq!(org("https://chef/organizations/acme/").unwrap(), "acme");
        assert_eq!(org("https://chef/organizations//acme").unwrap(), "acme");
        assert_eq!(
            org("https://chef:443/organizations/acme/nodes").unwrap(),
            "acme"
        );
        assert_eq!(
            org("https://chef/organizations/").unwrap_err().to_string(),
            "chef_server_url `https://chef/organizations/` must contain /organizations/ORG_NAME"
        );
        assert!(matches!(org("https://chef/"), Err(Error::NoOrg(_))));
        assert!(matches!(
            org("https://chef/organization/acme"),
            Err(Error::NoOrg(_))
        ));
        assert!(matches!(org(""), Err(Error::MissingServerUrl)));
    }

    #[test]
    fn config_url_joins_with_one_slash() {
        let mut c = ClientConfig {
            chef_server_url: "https://chef/organizations/acme//".into(),
            node_name: "n1".into(),
            ..ClientConfig::default()
        };
        assert_eq!(
            c.config_url(),
            "https://chef/organizations/acme/pushy/config/n1"
        );
        c.chef_server_url = "https://chef/organizations/acme".into();
        assert_eq!(
            c.config_url(),
            "https://chef/organizations/acme/pushy/config/n1"
        );
    }

    #[test]
    fn overrides_win_over_the_file() {
        let mut c = rb(REALISTIC).unwrap();
        let before = c.clone();
        c.apply_overrides(Overrides::default());
        assert_eq!(c, before);
        c.apply_overrides(Overrides {
            node_name: Some("cli-node".into()),
            chef_server_url: Some("https://other/organizations/beta".into()),
            client_key: Some("/tmp/k.pem".into()),
            file_dir: Some("/tmp/files".into()),
            max_body_size: Some(5),
            allow_unencrypted: Some(true),
        });
        assert_eq!(c.node_name, "cli-node");
        assert_eq!(c.org().unwrap(), "beta");
        assert_eq!(c.client_key, Path::new("/tmp/k.pem"));
        assert_eq!(c.file_dir, Path::new("/tmp/files"));
        assert_eq!(c.max_body_size, 5);
        assert!(c.allow_unencrypted);
        assert_eq!(c.whitelist, before.whitelist);
    }

    #[test]
    fn from_file_picks_the_form_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let rb_path = dir.path().join("push-jobs-client.rb");
        std::fs::write(&rb_path, "node_name 'from-ruby'\n").unwrap();
        let toml_path = dir.path().join("push-jobs-client.toml");
        std::fs::write(&toml_path, "node_name = 'from-toml'\n").unwrap();
        assert_eq!(
            ClientConfig::from_file(&rb_path).unwrap().node_name,
            "from-ruby"
        );
        assert_eq!(
            ClientConfig::from_file(&toml_path).unwrap().node_name,
            "from-toml"
        );

        let missing = dir.path().join("nope.rb");
        let e = ClientConfig::from_file(&missing).unwrap_err();
        assert!(matches!(e, Error::Read { .. }));
        assert!(e.to_string().contains("nope.rb"));

        std::fs::write(&rb_path, "node_name 'a'\nnode_name b\n").unwrap();
        let e = ClientConfig::from_file(&rb_path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2: ", rb_path.display())), "{e}");
    }

    #[test]
    fn default_search_is_the_originals() {
        assert_eq!(
            ClientConfig::default_search(),
            [
                "/etc/chef/chef-push-client.rb",
                "/etc/chef/push-jobs-client.rb",
                "/etc/chef/client.rb"
            ]
        );
    }
}
