//! The operator's config file, `/etc/opscode-push-jobs-server/opscode-push-jobs-server.rb`
//! (ops.md §1.3), and its TOML twin `opscode-push-jobs-server.toml`.
//!
//! The original evaluates the `.rb` file as Ruby. We read the attribute-assignment subset that
//! real files use — `opscode_pushy_server['heartbeat_interval'] = 5000`, nested keys, strings,
//! numbers, booleans, `nil`, symbols, arrays, hashes, `%w[]` and `node['…']` lookups — into a
//! [`Tree`] of settings, and turn anything else into an error naming `file:line` and the text not
//! understood, rather than guessing. The TOML twin (`[opscode_pushy_server]`,
//! `[opscode_pushy_server.log_rotation]`, …) fills the same tree. [`Attributes`] is that tree
//! typed, with every attribute of §1.3 and its default; unknown keys and keys the original
//! silently ignores come back as [`Warning`]s.
//!
//! Called by `settings::load` before `settings::compute` applies Chef Server's values.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::paths::Paths;

mod attributes;
mod rb;
mod toml_twin;

pub use attributes::{
    Attributes, Bootstrap, Daemon, LogRotation, OcChefPedant, Postgresql, PushyServer,
};

/// The four namespaces a config file may assign into (ops.md §1.3).
pub const NAMESPACES: [&str; 4] = [
    "opscode_pushy_server",
    "postgresql",
    "bootstrap",
    "oc_chef_pedant",
];

/// A config file that could not be used. Each variant names the file (and line, when known).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Text the reader does not understand.
    #[error("{}: {message}: `{text}`", Location::new(path, Some(*line)))]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What was expected.
        message: String,
        /// The offending source line, trimmed.
        text: String,
    },
    /// A TOML file that is not valid TOML.
    #[error("{path}: {message}")]
    Toml {
        /// The config file.
        path: PathBuf,
        /// The TOML parser's message (it includes line and column).
        message: String,
    },
    /// A known setting with a value of the wrong kind.
    #[error("{}: {key} must be {expected}, not {found}", Location::new(path, *line))]
    Type {
        /// The config file.
        path: PathBuf,
        /// Line of the assignment, when known.
        line: Option<usize>,
        /// The setting, in the file's syntax: `opscode_pushy_server['api_port']`.
        key: String,
        /// What it must be.
        expected: &'static str,
        /// What it was.
        found: String,
    },
    /// Both the `.rb` and the `.toml` file exist; which one wins would be a guess.
    #[error("both {rb} and {toml} exist; keep only one of them")]
    BothFiles {
        /// The Ruby-form file.
        rb: PathBuf,
        /// The TOML file.
        toml: PathBuf,
    },
}

/// Something in the config file that is accepted but has no effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The config file.
    pub path: PathBuf,
    /// Line of the setting, when known.
    pub line: Option<usize>,
    /// What is ignored, and why.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            Location::new(&self.path, self.line),
            self.message
        )
    }
}

/// `path:line`, or `path` alone.
struct Location<'a> {
    path: &'a Path,
    line: Option<usize>,
}

impl<'a> Location<'a> {
    fn new(path: &'a Path, line: Option<usize>) -> Self {
        Location { path, line }
    }
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// A value as written in the file.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `nil`: the same as not setting the key.
    Nil,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string or a symbol (Mash turns symbols into strings).
    Str(String),
    /// An array.
    Array(Vec<Value>),
    /// A hash; assigning one sets each of its keys (see [`Tree`]).
    Hash(Vec<(String, Value)>),
}

impl Value {
    /// How the value reads in an error message.
    fn describe(&self) -> String {
        match self {
            Value::Nil => "nil".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Str(s) => format!("{s:?}"),
            Value::Array(_) => "an array".into(),
            Value::Hash(_) => "a hash".into(),
        }
    }
}

/// One assigned setting: `path` is the namespace then the keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// `["opscode_pushy_server", "log_rotation", "num_to_keep"]`.
    pub path: Vec<String>,
    /// The value (never a [`Value::Hash`]: hashes are spread into their keys).
    pub value: Value,
    /// 1-based line of the assignment, when known.
    pub line: Option<usize>,
}

/// Every setting a file assigns, in file order; a later assignment replaces an earlier one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tree {
    /// The file the settings came from.
    pub path: PathBuf,
    /// The settings.
    pub settings: Vec<Setting>,
}

impl Tree {
    /// An empty tree for `path`.
    pub fn new(path: &Path) -> Tree {
        Tree {
            path: path.to_path_buf(),
            settings: Vec::new(),
        }
    }

    /// The setting at exactly `path`.
    pub fn get(&self, path: &[&str]) -> Option<&Setting> {
        self.settings.iter().find(|s| s.path == path)
    }

    /// Assigns `value` at `path`, replacing whatever was at or below it. A hash assigns each of
    /// its keys below `path` (Mash semantics: `x['a'] = {'b' => 1}` then `x['a']['c'] = 2` holds
    /// both). Assigning below a key that holds a plain value is refused: the caller reports it.
    fn assign(
        &mut self,
        path: Vec<String>,
        value: Value,
        line: Option<usize>,
    ) -> Result<(), String> {
        if let Some(blocker) = self
            .settings
            .iter()
            .find(|s| s.path.len() < path.len() && path.starts_with(&s.path))
        {
            return Err(format!(
                "{} holds {}, not a hash",
                display_key(&blocker.path),
                blocker.value.describe()
            ));
        }
        self.settings.retain(|s| !s.path.starts_with(&path));
        match value {
            Value::Hash(pairs) => {
                for (key, inner) in pairs {
                    let mut child = path.clone();
                    child.push(key);
                    self.assign(child, inner, line)?;
                }
            }
            value => self.settings.push(Setting { path, value, line }),
        }
        Ok(())
    }
}

/// A setting's path in the `.rb` syntax: `opscode_pushy_server['log_rotation']['num_to_keep']`.
pub fn display_key<S: AsRef<str>>(path: &[S]) -> String {
    let mut out = String::new();
    for (i, part) in path.iter().enumerate() {
        if i == 0 {
            out.push_str(part.as_ref());
        } else {
            out.push_str(&format!("['{}']", part.as_ref()));
        }
    }
    out
}

/// The user config, typed, and what in it has no effect.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// Every attribute, defaults filled in.
    pub attributes: Attributes,
    /// Unknown or ignored settings.
    pub warnings: Vec<Warning>,
    /// The file read, if there was one.
    pub source: Option<PathBuf>,
}

/// Reads the user config under `paths`: the `.rb` file or the `.toml` twin, whichever exists
/// (neither: all defaults; both: [`Error::BothFiles`]). `node` is what `node['…']` lookups in
/// the `.rb` file see: Chef Server's attributes (`chef_server::ChefServer::node_view`).
///
/// # Errors
/// [`Error`], naming the file and line.
pub fn load(paths: &Paths, node: Option<&serde_json::Value>) -> Result<Loaded, Error> {
    let rb = paths.user_config_rb();
    let toml = paths.user_config_toml();
    let rb_text = read_if_present(&rb)?;
    let toml_text = read_if_present(&toml)?;
    let tree = match (rb_text, toml_text) {
        (Some(_), Some(_)) => return Err(Error::BothFiles { rb, toml }),
        (Some(text), None) => parse_rb(&rb, &text, node)?,
        (None, Some(text)) => parse_toml(&toml, &text)?,
        (None, None) => {
            return Ok(Loaded {
                attributes: Attributes::default(),
                warnings: Vec::new(),
                source: None,
            });
        }
    };
    let (attributes, warnings) = Attributes::from_tree(&tree)?;
    Ok(Loaded {
        attributes,
        warnings,
        source: Some(tree.path),
    })
}

/// Parses the `.rb` form. `node` answers `node['…']` lookups; without it they are errors.
///
/// # Errors
/// [`Error::Syntax`] naming `path:line` and the text not understood.
pub fn parse_rb(path: &Path, text: &str, node: Option<&serde_json::Value>) -> Result<Tree, Error> {
    rb::parse(path, text, node)
}

/// Parses the TOML twin: one table per namespace, nested tables for nested keys.
///
/// # Errors
/// [`Error::Toml`] for invalid TOML, [`Error::Syntax`] for keys outside the four namespaces.
pub fn parse_toml(path: &Path, text: &str) -> Result<Tree, Error> {
    toml_twin::parse(path, text)
}

fn read_if_present(path: &Path) -> Result<Option<String>, Error> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_hash_assignment_spreads_into_keys_and_later_keys_add_to_it() {
        let mut t = Tree::new(Path::new("f"));
        let hash = Value::Hash(vec![
            ("num_to_keep".into(), Value::Int(5)),
            ("file_maxbytes".into(), Value::Int(9)),
        ]);
        t.assign(
            path(&["opscode_pushy_server", "log_rotation"]),
            hash,
            Some(1),
        )
        .unwrap();
        t.assign(
            path(&["opscode_pushy_server", "log_rotation", "num_to_keep"]),
            Value::Int(7),
            Some(2),
        )
        .unwrap();
        assert_eq!(
            t.get(&["opscode_pushy_server", "log_rotation", "num_to_keep"])
                .unwrap()
                .value,
            Value::Int(7)
        );
        assert_eq!(
            t.get(&["opscode_pushy_server", "log_rotation", "file_maxbytes"])
                .unwrap()
                .line,
            Some(1)
        );
        // A plain value replaces the whole subtree.
        t.assign(
            path(&["opscode_pushy_server", "log_rotation"]),
            s("x"),
            Some(3),
        )
        .unwrap();
        assert_eq!(t.settings.len(), 1);
        // …and cannot be indexed into.
        let err = t
            .assign(
                path(&["opscode_pushy_server", "log_rotation", "n"]),
                Value::Int(1),
                Some(4),
            )
            .unwrap_err();
        assert_eq!(
            err,
            "opscode_pushy_server['log_rotation'] holds \"x\", not a hash"
        );
    }

    #[test]
    fn keys_display_in_the_rb_syntax() {
        assert_eq!(display_key(&["postgresql"]), "postgresql");
        assert_eq!(
            display_key(&["opscode_pushy_server", "log_rotation", "num_to_keep"]),
            "opscode_pushy_server['log_rotation']['num_to_keep']"
        );
    }

    #[test]
    fn load_reads_whichever_file_exists_and_refuses_both() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(root.path());
        let loaded = load(&paths, None).unwrap();
        assert_eq!(loaded.attributes, Attributes::default());
        assert_eq!(loaded.source, None);

        fs::create_dir_all(paths.etc_dir()).unwrap();
        fs::write(
            paths.user_config_rb(),
            "opscode_pushy_server['heartbeat_interval'] = 5000\n",
        )
        .unwrap();
        let loaded = load(&paths, None).unwrap();
        assert_eq!(
            loaded
                .attributes
                .opscode_pushy_server
                .daemon
                .heartbeat_interval,
            5000
        );
        assert_eq!(
            loaded.source.as_deref(),
            Some(paths.user_config_rb().as_path())
        );

        fs::remove_file(paths.user_config_rb()).unwrap();
        fs::write(
            paths.user_config_toml(),
            "[opscode_pushy_server]\nheartbeat_interval = 7000\n",
        )
        .unwrap();
        let loaded = load(&paths, None).unwrap();
        assert_eq!(
            loaded
                .attributes
                .opscode_pushy_server
                .daemon
                .heartbeat_interval,
            7000
        );

        fs::write(paths.user_config_rb(), "").unwrap();
        let err = load(&paths, None).unwrap_err();
        assert!(matches!(err, Error::BothFiles { .. }), "{err}");
    }

    #[test]
    fn an_unreadable_config_is_an_error_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(root.path());
        fs::create_dir_all(paths.user_config_rb()).unwrap();
        let err = load(&paths, None).unwrap_err();
        assert!(matches!(err, Error::Read { .. }), "{err}");
        assert!(
            err.to_string().contains("opscode-push-jobs-server.rb"),
            "{err}"
        );
    }
}
