//! Evaluating the expressions knife.rb-style files compute paths and names with: local
//! variables, settings read back by name, `__FILE__`, `__dir__`, `File.dirname`,
//! `File.join`, `File.expand_path`, `File.basename`, `ENV['X']`, `ENV.fetch`, `#{}`, `+`
//! and `||`. Anything else is an [`Error`] naming the construct. Tools whose files hold
//! literals only use [`Expr::literal`] instead.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use crate::tree::{Expr, ExprKind, Part, Value};

/// Why an expression could not be evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `ENV['NAME']` with `NAME` unset (`||` falls back past it, as `nil` in Ruby).
    #[error("ENV['{0}'] is not set")]
    EnvUnset(String),
    /// A name that is neither a variable assigned before nor a setting set before.
    #[error("{0} is not a variable this reader understood")]
    UnknownVariable(String),
    /// A construct this reader does not run: `method call \`foo\``, `operator \`+\``.
    #[error("{0} is not supported")]
    Unsupported(String),
    /// A supported construct used on values it cannot take.
    #[error("{0}")]
    Invalid(String),
}

/// What expressions are evaluated against.
pub struct Scope<'a> {
    /// The file being read: `__FILE__`, and the base of `__dir__`.
    pub file: &'a Path,
    /// `~` in `File.expand_path`.
    pub home: Option<&'a Path>,
    /// Answers `ENV['NAME']`.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    vars: HashMap<String, Value>,
}

impl<'a> Scope<'a> {
    /// A scope with no variables yet.
    pub fn new(
        file: &'a Path,
        home: Option<&'a Path>,
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Self {
        Scope {
            file,
            home,
            env,
            vars: HashMap::new(),
        }
    }

    /// The directory of the file.
    pub fn dir(&self) -> &'a Path {
        self.file.parent().unwrap_or(Path::new("."))
    }

    /// Binds `name` (a local variable, or a setting that later lines may read back).
    pub fn set(&mut self, name: &str, value: Value) {
        self.vars.insert(name.to_owned(), value);
    }

    /// Forgets `name`, so reading it is an error rather than a stale value.
    pub fn unset(&mut self, name: &str) {
        self.vars.remove(name);
    }

    /// Evaluates `e`.
    ///
    /// # Errors
    /// [`Error`] for what this reader does not run or cannot compute.
    pub fn eval(&self, e: &Expr) -> Result<Value, Error> {
        Ok(match &e.kind {
            ExprKind::Interp(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Part::Lit(s) => out.push_str(s),
                        Part::Code(code) => out.push_str(&to_s(&self.eval(code)?)?),
                    }
                }
                Value::Str(out)
            }
            ExprKind::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.eval(i))
                    .collect::<Result<_, _>>()?,
            ),
            ExprKind::Hash(items) => Value::Hash(
                items
                    .iter()
                    .map(|(k, v)| Ok((self.eval(k)?, self.eval(v)?, k.line)))
                    .collect::<Result<_, Error>>()?,
            ),
            ExprKind::Var(name) => self.var(name)?,
            ExprKind::Index(recv, key) => match &recv.kind {
                ExprKind::Const(c) if c == "ENV" => {
                    let name = self.string(key)?;
                    Value::Str((self.env)(&name).ok_or(Error::EnvUnset(name))?)
                }
                _ => return Err(Error::Unsupported(format!("indexing {}", e.describe()))),
            },
            ExprKind::Call { recv, method, args } => self.call(e, recv.as_deref(), method, args)?,
            ExprKind::Add(a, b) => match (self.eval(a)?, self.eval(b)?) {
                (Value::Str(a), Value::Str(b)) => Value::Str(a + &b),
                (Value::Int(a), Value::Int(b)) => Value::Int(a.wrapping_add(b)),
                (Value::Array(mut a), Value::Array(b)) => {
                    a.extend(b);
                    Value::Array(a)
                }
                (a, b) => {
                    return Err(Error::Invalid(format!(
                        "cannot add {} and {}",
                        a.kind(),
                        b.kind()
                    )));
                }
            },
            ExprKind::Or(a, b) => match self.eval(a) {
                Ok(v) if v.truthy() => v,
                Ok(_) | Err(Error::EnvUnset(_)) => self.eval(b)?,
                Err(other) => return Err(other),
            },
            _ => e
                .literal()
                .expect("every other kind is a literal without code"),
        })
    }

    /// Evaluates `e` to a string (symbols and numbers as Ruby's `to_s`).
    ///
    /// # Errors
    /// [`Error`], or [`Error::Invalid`] for a value that is no string.
    pub fn string(&self, e: &Expr) -> Result<String, Error> {
        to_s(&self.eval(e)?)
    }

    fn var(&self, name: &str) -> Result<Value, Error> {
        match name {
            "__FILE__" => Ok(Value::Str(self.file.display().to_string())),
            "__dir__" => Ok(Value::Str(self.dir().display().to_string())),
            _ => self
                .vars
                .get(name)
                .cloned()
                .ok_or_else(|| Error::UnknownVariable(name.to_owned())),
        }
    }

    fn call(
        &self,
        e: &Expr,
        recv: Option<&Expr>,
        method: &str,
        args: &[Expr],
    ) -> Result<Value, Error> {
        let receiver = match recv.map(|r| &r.kind) {
            Some(ExprKind::Const(c)) => c.as_str(),
            _ => return Err(Error::Unsupported(e.describe())),
        };
        let strings = || {
            args.iter()
                .map(|a| self.string(a))
                .collect::<Result<Vec<_>, _>>()
        };
        let path = match (receiver, method) {
            ("File", "dirname") => {
                let [p] = &strings()?[..] else {
                    return Err(Error::Invalid("File.dirname takes one path".into()));
                };
                Path::new(p)
                    .parent()
                    .map(|d| d.display().to_string())
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| ".".to_owned())
            }
            ("File", "basename") => {
                let parts = strings()?;
                let p = parts
                    .first()
                    .ok_or(Error::Invalid("File.basename needs a path".into()))?;
                let base = Path::new(p)
                    .file_name()
                    .map(|b| b.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match parts.get(1) {
                    Some(suffix) => base
                        .strip_suffix(suffix.as_str())
                        .map(str::to_owned)
                        .unwrap_or(base),
                    None => base,
                }
            }
            ("File", "join") => join(&strings()?),
            ("File", "expand_path") => {
                let parts = strings()?;
                let first = parts
                    .first()
                    .ok_or(Error::Invalid("File.expand_path needs a path".into()))?;
                let base = match parts.get(1) {
                    Some(b) => PathBuf::from(b),
                    None => std::env::current_dir().map_err(|e| Error::Invalid(e.to_string()))?,
                };
                normalize(&resolve_path(first, &base, self.home))
                    .display()
                    .to_string()
            }
            ("ENV", "fetch") => {
                let parts = strings()?;
                let name = parts
                    .first()
                    .ok_or(Error::Invalid("ENV.fetch needs a name".into()))?;
                return (self.env)(name)
                    .or_else(|| parts.get(1).cloned())
                    .map(Value::Str)
                    .ok_or_else(|| Error::EnvUnset(name.clone()));
            }
            _ => return Err(Error::Unsupported(e.describe())),
        };
        Ok(Value::Str(path))
    }
}

/// Ruby's `to_s` for the values that have an obvious one.
fn to_s(v: &Value) -> Result<String, Error> {
    match v {
        Value::Str(s) | Value::Sym(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Nil => Ok(String::new()),
        other => Err(Error::Invalid(format!(
            "expected a string, found {}",
            other.kind()
        ))),
    }
}

/// Ruby's `File.join`: one `/` between parts, whatever they start or end with.
fn join(parts: &[String]) -> String {
    let mut joined = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            joined.push_str(part);
        } else {
            joined = format!(
                "{}/{}",
                joined.trim_end_matches('/'),
                part.trim_start_matches('/')
            );
        }
    }
    joined
}

/// `~/x` → `$HOME/x`; a relative path → under `dir`; an absolute one unchanged.
pub fn resolve_path(value: &str, dir: &Path, home: Option<&Path>) -> PathBuf {
    if let (Some(rest), Some(home)) = (value.strip_prefix("~/"), home) {
        return home.join(rest);
    }
    if value == "~"
        && let Some(home) = home
    {
        return home.to_path_buf();
    }
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Removes `.` and resolves `..` lexically, as `File.expand_path` does.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
