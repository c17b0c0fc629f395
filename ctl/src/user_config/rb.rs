//! The `.rb` form: `pushy_rbconf` reads the file into statements, and this module walks them
//! into a [`Tree`] (ops.md §1.3). Only the attribute-assignment form real files use is
//! accepted:
//! ```text
//! NAMESPACE ('[' key ']')+ '=' value        key := 'string' | "string" | :symbol
//! value := string | symbol | number | true | false | nil | array | hash | %w[] | node['a']…
//! ```
//! Anything else is an error naming the line and quoting it: we never guess at Ruby we cannot
//! evaluate.

use std::path::Path;

use pushy_rbconf::{Expr, ExprKind, ProblemKind, Stmt, StmtKind};

use super::{Error, NAMESPACES, Tree, Value, display_key};

/// A failure: line and message; [`parse`] adds the path and the line's text.
struct Fail {
    line: usize,
    message: String,
}

fn fail<T>(line: usize, message: impl Into<String>) -> Result<T, Fail> {
    Err(Fail {
        line,
        message: message.into(),
    })
}

/// Parses `text` (read from `path`) into a [`Tree`]. `node` answers `node['…']` lookups.
pub(super) fn parse(
    path: &Path,
    text: &str,
    node: Option<&serde_json::Value>,
) -> Result<Tree, Error> {
    let to_error = |f: Fail| Error::Syntax {
        path: path.to_path_buf(),
        line: f.line,
        message: f.message,
        text: text
            .lines()
            .nth(f.line.saturating_sub(1))
            .unwrap_or("")
            .trim()
            .to_owned(),
    };
    let mut tree = Tree::new(path);
    for st in pushy_rbconf::parse(text) {
        statement(&mut tree, st, node).map_err(to_error)?;
    }
    Ok(tree)
}

fn not_a_namespace(name: &str) -> String {
    format!(
        "`{name}` is not a setting namespace (expected one of {})",
        NAMESPACES.join(", ")
    )
}

fn statement(tree: &mut Tree, st: Stmt, node: Option<&serde_json::Value>) -> Result<(), Fail> {
    let line = st.line;
    match st.kind {
        StmtKind::Assign { target, value } => {
            let path = setting_path(&target, "`=`")?;
            let value = convert(&value, node)?;
            tree.assign(path, value, Some(line))
                .or_else(|message| fail(line, message))
        }
        StmtKind::Expr(e) => {
            let path = setting_path(&e, "the end of the line")?;
            fail(
                line,
                format!(
                    "expected `=` after {}, found the end of the line",
                    display_key(&path)
                ),
            )
        }
        StmtKind::Call { name, .. } if NAMESPACES.contains(&name.as_str()) => {
            fail(line, format!("expected `[` after {name}, found a value"))
        }
        StmtKind::Call { name, .. } => fail(line, not_a_namespace(&name)),
        StmtKind::Block { keyword, .. } => fail(line, not_a_namespace(&keyword)),
        StmtKind::Unparsed(p) => match p.kind {
            ProblemKind::Syntax(message) => fail(p.line, message),
            ProblemKind::Trailing { after, found } => match *after {
                StmtKind::Assign { target, .. } => {
                    setting_path(&target, "`=`")?;
                    fail(
                        p.line,
                        format!("unexpected {} after the value", found.describe()),
                    )
                }
                StmtKind::Expr(e) => {
                    let path = setting_path(&e, &found.describe())?;
                    fail(
                        p.line,
                        format!(
                            "expected `=` after {}, found {}",
                            display_key(&path),
                            found.describe()
                        ),
                    )
                }
                StmtKind::Call { name, .. } => fail(line, not_a_namespace(&name)),
                _ => fail(p.line, format!("unexpected {}", found.describe())),
            },
        },
    }
}

/// `namespace['a'][:b]` → `["namespace", "a", "b"]`; `next` describes what followed, for
/// a bare namespace.
fn setting_path(e: &Expr, next: &str) -> Result<Vec<String>, Fail> {
    match &e.kind {
        ExprKind::Var(name) if NAMESPACES.contains(&name.as_str()) => {
            fail(e.line, format!("expected `[` after {name}, found {next}"))
        }
        ExprKind::Var(name) => fail(e.line, not_a_namespace(name)),
        ExprKind::Call {
            recv: Some(recv), ..
        } => match &recv.kind {
            ExprKind::Var(name) if NAMESPACES.contains(&name.as_str()) => {
                fail(e.line, format!("expected `[` after {name}, found `.`"))
            }
            _ => setting_path(recv, "`.`"),
        },
        ExprKind::Index(recv, key) => {
            let mut path = match &recv.kind {
                ExprKind::Var(name) if NAMESPACES.contains(&name.as_str()) => vec![name.clone()],
                _ => setting_path(recv, "`[`")?,
            };
            path.push(key_of(key)?);
            Ok(path)
        }
        _ => fail(
            e.line,
            format!("expected a setting, found {}", e.describe()),
        ),
    }
}

/// A hash key or index: a string or a symbol.
fn key_of(e: &Expr) -> Result<String, Fail> {
    match &e.kind {
        ExprKind::Str(s) | ExprKind::Sym(s) => Ok(s.clone()),
        _ => fail(
            e.line,
            format!("expected a quoted key or a :symbol, found {}", e.describe()),
        ),
    }
}

/// A value: literals (symbols become strings, as Mash keeps them) and `node[…]` lookups.
fn convert(e: &Expr, node: Option<&serde_json::Value>) -> Result<Value, Fail> {
    Ok(match &e.kind {
        ExprKind::Nil => Value::Nil,
        ExprKind::Bool(b) => Value::Bool(*b),
        ExprKind::Int(n) => Value::Int(*n),
        ExprKind::Float(x) => Value::Float(*x),
        ExprKind::Str(s) | ExprKind::Sym(s) => Value::Str(s.clone()),
        ExprKind::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| convert(i, node))
                .collect::<Result<_, _>>()?,
        ),
        ExprKind::Hash(items) => {
            let mut pairs: Vec<(String, Value)> = Vec::new();
            for (k, v) in items {
                let key = key_of(k).or_else(|_| {
                    fail(
                        k.line,
                        format!("expected a hash key, found {}", k.describe()),
                    )
                })?;
                let value = convert(v, node)?;
                pairs.retain(|(k, _)| *k != key);
                pairs.push((key, value));
            }
            Value::Hash(pairs)
        }
        ExprKind::Index(..) if root(e) == Some("node") => node_lookup(e, node)?,
        ExprKind::Var(name) if name == "node" => {
            return fail(
                e.line,
                "`node` must be indexed, as in node['private_chef']['api_fqdn']",
            );
        }
        ExprKind::Interp(_) => {
            return fail(e.line, "string interpolation (`#{…}`) is not supported");
        }
        ExprKind::Var(_) | ExprKind::Const(_) | ExprKind::Index(..) | ExprKind::Call { .. } => {
            return fail(
                e.line,
                format!(
                    "`{}` is not a value this reader understands",
                    root(e).unwrap_or("...")
                ),
            );
        }
        ExprKind::Regex { .. } | ExprKind::Add(..) | ExprKind::Or(..) => {
            return fail(
                e.line,
                format!(
                    "expected a value (string, number, true/false/nil, :symbol, array or hash), found {}",
                    e.describe()
                ),
            );
        }
    })
}

/// The variable or constant an index/call chain starts from.
fn root(e: &Expr) -> Option<&str> {
    match &e.kind {
        ExprKind::Var(n) | ExprKind::Const(n) => Some(n),
        ExprKind::Index(recv, _) => root(recv),
        ExprKind::Call { recv: Some(r), .. } => root(r),
        ExprKind::Call { method, .. } => Some(method),
        _ => None,
    }
}

/// `node['a']['b']`: Chef Server's attributes, as the original's file could read them.
fn node_lookup(e: &Expr, node: Option<&serde_json::Value>) -> Result<Value, Fail> {
    let mut keys = Vec::new();
    let mut at = e;
    while let ExprKind::Index(recv, key) = &at.kind {
        keys.push(key_of(key)?);
        at = recv;
    }
    if !matches!(&at.kind, ExprKind::Var(n) if n == "node") {
        return fail(
            e.line,
            "`node` must be indexed, as in node['private_chef']['api_fqdn']",
        );
    }
    keys.reverse();
    let Some(mut current) = node else {
        return fail(
            e.line,
            "node attributes are not available (no chef-server-running.json)",
        );
    };
    for (i, key) in keys.iter().enumerate() {
        match current.get(key) {
            Some(v) => current = v,
            // The last key missing is nil; a missing key in the middle is Ruby's NoMethodError.
            None if i + 1 == keys.len() && current.is_object() => return Ok(Value::Nil),
            None => {
                let so_far: String = keys[..=i].iter().map(|k| format!("['{k}']")).collect();
                return fail(
                    e.line,
                    format!("node{so_far} is not set in Chef Server's attributes"),
                );
            }
        }
    }
    Ok(from_json(current))
}

fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::Str(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        serde_json::Value::Object(m) => {
            Value::Hash(m.iter().map(|(k, v)| (k.clone(), from_json(v))).collect())
        }
    }
}

#[cfg(test)]
#[path = "rb_tests.rs"]
mod tests;
