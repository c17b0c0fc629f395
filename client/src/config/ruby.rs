//! The Ruby form of the client config: `pushy_rbconf` parses the file, and this module reads
//! its statements as literal-only Mixlib::Config settings into [`ClientConfig`]. Every
//! construct beyond that is refused here, in the client's words, naming the line.

use std::path::{Path, PathBuf};

use pushy_rbconf::{Expr, ExprKind, Found, ProblemKind, Stmt, StmtKind, Value};

use super::{ClientConfig, Error, Location, SslVerifyMode};
use crate::whitelist::{Entry, Key, Lock, Pattern, Whitelist};

/// Reads the Ruby form: the settings (node name still unset if the file has none) and the
/// notes about ignored lines.
///
/// # Errors
/// The first problem in file order: [`Error::Ruby`], [`Error::Setting`], [`Error::Whitelist`].
pub(super) fn read(src: &str, path: &Path) -> Result<(ClientConfig, Vec<Note>), Error> {
    let at = |line: usize| Location {
        path: path.to_owned(),
        line: Some(line),
    };
    let mut config = ClientConfig::unset();
    let mut notes = Vec::new();
    for st in pushy_rbconf::parse(src) {
        let (key, value, line) = match statement(st) {
            Ok(Read::Setting { key, value, line }) => (key, value, line),
            Ok(Read::Ignored { line, what }) => {
                notes.push(Note {
                    line,
                    warn: false,
                    message: format!("ignored {what}"),
                });
                continue;
            }
            Err((line, problem)) => {
                return Err(Error::Ruby {
                    at: at(line),
                    problem,
                });
            }
        };
        assign(&mut config, &key, value, line, &mut notes).map_err(|e| match e {
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
    Ok((config, notes))
}

/// What one statement means to the client.
enum Read {
    Setting {
        key: String,
        value: Value,
        line: usize,
    },
    /// A recognised non-setting line with no effect on this client.
    Ignored { line: usize, what: String },
}

/// A refusal: line and what was not understood.
type Refused = (usize, String);

fn statement(st: Stmt) -> Result<Read, Refused> {
    let line = st.line;
    match st.kind {
        StmtKind::Call { name, args, parens } => setting(name, args, parens, line),
        StmtKind::Assign { target, value } => assignment(target, value, line),
        StmtKind::Expr(e) => Err((line, not_a_setting(&e))),
        StmtKind::Block { keyword, .. } => Err((line, not_supported(&keyword))),
        StmtKind::Unparsed(p) => Err((
            p.line,
            match p.kind {
                ProblemKind::Syntax(message) => message,
                ProblemKind::Trailing { after, found } => trailing(&after, &found),
            },
        )),
    }
}

fn not_supported(name: &str) -> String {
    format!("`{name}` is not supported: only `setting value` lines are read, not Ruby code")
}

/// `name value`, `name(value)`.
fn setting(name: String, mut args: Vec<Expr>, parens: bool, line: usize) -> Result<Read, Refused> {
    if NOT_SETTINGS.contains(&name.as_str()) {
        return Err((line, not_supported(&name)));
    }
    if name.ends_with(['?', '!']) {
        return Err((line, format!("method call `{name}` is not supported")));
    }
    match args.len() {
        0 if parens => Err((line, format!("`{name}()` has no value"))),
        0 => Err((
            line,
            format!("`{name}` has no value (variables and bare method calls are not supported)"),
        )),
        1 => {
            let value = literal(&args.remove(0))?;
            Ok(Read::Setting {
                key: name,
                value,
                line,
            })
        }
        _ => Err((
            args[1].line,
            format!("more than one argument after the value of `{name}` is not supported"),
        )),
    }
}

/// `name = value`, `CONST = value`, `Mixlib::Log::Formatter.show_time = bool`; the rest is
/// refused.
fn assignment(target: Expr, value: Expr, line: usize) -> Result<Read, Refused> {
    match target.kind {
        ExprKind::Var(name) => setting(name, vec![value], false, line),
        ExprKind::Const(path) => {
            let v = literal(&value)?;
            Ok(Read::Ignored {
                line,
                what: format!("constant assignment `{path} = {}`", v.show()),
            })
        }
        ExprKind::Call {
            recv: Some(recv),
            method,
            ..
        } => {
            let path = recv.name();
            if path != "Mixlib::Log::Formatter" || method != "show_time" {
                return Err((
                    line,
                    format!("method call `{path}.{method}` is not supported"),
                ));
            }
            match literal(&value)? {
                v @ Value::Bool(_) => Ok(Read::Ignored {
                    line,
                    what: format!("`{path}.{method} = {v:?}`"),
                }),
                _ => Err((line, format!("`{path}.{method}` expects true or false"))),
            }
        }
        ExprKind::Index(recv, _) => Err((
            line,
            match &recv.kind {
                ExprKind::Const(c) if c == "ENV" => {
                    "`ENV[...]` (environment variables) is not supported".into()
                }
                ExprKind::Const(c) => {
                    format!("`{c}[...]` is not supported; write `setting value` lines")
                }
                _ => format!("indexing `{}[...]` is not supported", recv.name()),
            },
        )),
        _ => Err((line, format!("cannot assign to {}", target.describe()))),
    }
}

/// A statement that is an expression alone.
fn not_a_setting(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Call {
            recv: Some(recv),
            method,
            ..
        } if matches!(recv.kind, ExprKind::Const(_)) => {
            format!("method call `{}.{method}` is not supported", recv.name())
        }
        ExprKind::Index(recv, _) => match &recv.kind {
            ExprKind::Const(c) if c == "ENV" => {
                "`ENV[...]` (environment variables) is not supported".into()
            }
            ExprKind::Var(v) => format!("indexing `{v}[...]` is not supported"),
            _ => format!(
                "`{}[...]` is not supported; write `setting value` lines",
                recv.name()
            ),
        },
        ExprKind::Const(c) => format!("`{c}` followed by end of line is not a setting"),
        _ => format!("expected a setting name, found {}", e.describe()),
    }
}

/// What followed a complete statement.
fn trailing(after: &StmtKind, found: &Found) -> String {
    match found {
        Found::Modifier(k) => format!("`{k}` modifiers are not supported (no conditionals)"),
        Found::Operator(o) => format!("operator `{o}` is not supported (only literal values)"),
        Found::Token(t) => {
            let what = match after {
                StmtKind::Call { name, .. } => format!("the value of `{name}`"),
                _ => "the value".into(),
            };
            format!(
                "unexpected {t} after {what}; only `setting value` with a literal value is supported"
            )
        }
    }
}

/// The literal value of `e`, or why it is code.
fn literal(e: &Expr) -> Result<Value, Refused> {
    e.literal().map_err(|code| (code.line, not_literal(code)))
}

fn not_literal(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Interp(_) => {
            "string interpolation (`#{...}`) is not supported; write the value literally".into()
        }
        ExprKind::Var(w) => {
            format!("`{w}` is a variable or method call; only literal values are supported")
        }
        ExprKind::Call {
            recv: Some(recv),
            method,
            ..
        } => match &recv.kind {
            ExprKind::Const(path) => {
                format!("method call `{path}.{method}` is not supported; write the value literally")
            }
            _ => format!(
                "unexpected `.` (a method call) `.{method}` after the value; only literal values are supported"
            ),
        },
        ExprKind::Call { method, .. } => {
            format!("`{method}(...)` (a call) is not supported; write the value literally")
        }
        ExprKind::Index(recv, _) => match &recv.kind {
            ExprKind::Const(c) if c == "ENV" => {
                "`ENV[...]` (environment lookups) is not supported".into()
            }
            _ => format!(
                "`{}[...]` (indexing or a call) is not supported",
                recv.name()
            ),
        },
        ExprKind::Add(..) => "operator `+` is not supported (only literal values)".into(),
        ExprKind::Or(..) => "operator `||` is not supported (only literal values)".into(),
        _ => format!("{} is not a literal value", e.describe()),
    }
}

/// Something the file did that is not an error: an ignored setting.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Note {
    pub(crate) line: usize,
    /// True for unknown settings (warn), false for known Chef ones (debug).
    pub(crate) warn: bool,
    pub(crate) message: String,
}

impl Note {
    pub(crate) fn log(&self, path: &Path) {
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

enum Invalid {
    Value(usize, String),
    Regex(usize, crate::whitelist::Error),
}

fn assign(
    s: &mut ClientConfig,
    key: &str,
    value: Value,
    line: usize,
    notes: &mut Vec<Note>,
) -> Result<(), Invalid> {
    let bad = |problem: String| Invalid::Value(line, problem);
    let d = ClientConfig::unset();
    match key {
        "chef_server_url" => {
            s.chef_server_url = string(value).map_err(bad)?.unwrap_or(d.chef_server_url)
        }
        "node_name" => s.node_name = string(value).map_err(bad)?.unwrap_or(d.node_name),
        "client_key" => s.client_key = path(value).map_err(bad)?.unwrap_or(d.client_key),
        "file_dir" => s.file_dir = path(value).map_err(bad)?.unwrap_or(d.file_dir),
        "lockfile" => s.lockfile = path(value).map_err(bad)?,
        "file_cache_path" => s.file_cache_path = path(value).map_err(bad)?,
        "allow_unencrypted" => {
            s.allow_unencrypted = boolean(value).map_err(bad)?.unwrap_or(d.allow_unencrypted);
        }
        "verify_api_cert" => {
            s.verify_api_cert = boolean(value).map_err(bad)?.unwrap_or(d.verify_api_cert);
        }
        "max_body_size" => s.max_body_size = size(value).map_err(bad)?.unwrap_or(d.max_body_size),
        "log_level" => s.log_level = level(value).map_err(bad)?,
        "ssl_verify_mode" => {
            s.ssl_verify_mode = verify_mode(value)
                .map_err(bad)?
                .unwrap_or(d.ssl_verify_mode);
        }
        "trusted_certs_dir" => {
            s.trusted_certs_dir = path(value).map_err(bad)?;
        }
        "allowed_overwritable_env_vars" => {
            s.allowed_overwritable_env_vars = strings(value).map_err(bad)?;
        }
        "whitelist" => s.whitelist = whitelist(value, line, notes)?.unwrap_or(d.whitelist),
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

fn path(v: Value) -> Result<Option<PathBuf>, String> {
    string(v).map(|s| s.map(Into::into))
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

fn whitelist(v: Value, line: usize, notes: &mut Vec<Note>) -> Result<Option<Whitelist>, Invalid> {
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
