//! The TOML form of the client config: the same keys as the Ruby form, deserialized into
//! [`ClientConfig`]; `whitelist` is a table whose keys are commands or `"/regexp/flags"` and
//! whose values are a command line or `{ command_line, lock }`. The whitelist is read a
//! second time with spans, because regexp precedence needs the file's order and errors need
//! the entry's line.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer};

use super::{ClientConfig, Error, Location};
use crate::whitelist::{self, Entry, Key, Lock, Pattern, Whitelist};

/// The whitelist with spans.
#[derive(Deserialize)]
struct WhitelistSection {
    whitelist: Option<BTreeMap<String, toml::Spanned<toml::Value>>>,
}

/// `ClientConfig::whitelist` under serde: any table is accepted here and replaced by
/// [`read`]'s span-aware reading.
pub(super) fn whitelist_placeholder<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Whitelist, D::Error> {
    toml::Table::deserialize(d)?;
    Ok(Whitelist::empty())
}

/// Reads the TOML form; `path` is only used in messages.
pub(super) fn read(src: &str, path: &Path) -> Result<ClientConfig, Error> {
    let mut config: ClientConfig = toml::from_str(src).map_err(|e| Error::Toml {
        path: path.to_owned(),
        source: Box::new(e),
    })?;
    let at = |offset: usize| Location {
        path: path.to_owned(),
        line: Some(src[..offset].matches('\n').count() + 1),
    };
    if config.max_body_size == 0 {
        return Err(Error::Setting {
            at: Location {
                path: path.to_owned(),
                line: None,
            },
            key: "max_body_size".into(),
            problem: "must be at least 1".into(),
        });
    }
    let section: WhitelistSection = toml::from_str(src).map_err(|e| Error::Toml {
        path: path.to_owned(),
        source: Box::new(e),
    })?;
    if let Some(table) = section.whitelist {
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
        config.whitelist = w;
    }
    Ok(config)
}

/// `"/source/flags"` (no unescaped `/` inside, flags from Ruby's set) is a regexp key; any
/// other string is an exact key. So an exact key such as `/bin/mix` cannot be written in TOML.
pub(super) fn toml_key(name: &str) -> Result<Key, whitelist::Error> {
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
