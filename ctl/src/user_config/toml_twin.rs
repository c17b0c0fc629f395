//! The TOML twin of the `.rb` file: `[opscode_pushy_server]` holds
//! `opscode_pushy_server['…']`, `[opscode_pushy_server.log_rotation]` the nested keys, and so on
//! for the four namespaces. Values keep their line numbers for error messages.

use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{Error, NAMESPACES, Tree, Value, display_key};

/// Parses `text` (read from `path`) into a [`Tree`].
pub(super) fn parse(path: &Path, text: &str) -> Result<Tree, Error> {
    let doc = DeTable::parse(text).map_err(|e| Error::Toml {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let syntax = |offset: usize, message: String| {
        let line = line_of(offset);
        Error::Syntax {
            path: path.to_path_buf(),
            line,
            message,
            text: text.lines().nth(line - 1).unwrap_or("").trim().to_owned(),
        }
    };
    let mut tree = Tree::new(path);
    for (key, value) in doc.get_ref() {
        let name = key.get_ref().as_ref();
        if !NAMESPACES.contains(&name) {
            return Err(syntax(
                key.span().start,
                format!(
                    "`{name}` is not a setting namespace (expected one of {})",
                    NAMESPACES.join(", ")
                ),
            ));
        }
        let DeValue::Table(table) = value.get_ref() else {
            return Err(syntax(
                key.span().start,
                format!("`{name}` must be a table: [{name}]"),
            ));
        };
        let mut pending: Vec<(Vec<String>, &Spanned<DeValue<'_>>)> = table
            .iter()
            .rev()
            .map(|(k, v)| (vec![name.to_owned(), k.get_ref().to_string()], v))
            .collect();
        // Depth-first, in file order; each leaf keeps its own line.
        while let Some((path, inner)) = pending.pop() {
            if let DeValue::Table(sub) = inner.get_ref() {
                for (k, v) in sub.iter().rev() {
                    let mut child = path.clone();
                    child.push(k.get_ref().to_string());
                    pending.push((child, v));
                }
                continue;
            }
            let at = inner.span().start;
            let value = convert(inner).map_err(|m| syntax(at, m))?;
            tree.assign(path.clone(), value, Some(line_of(at)))
                .map_err(|m| syntax(at, format!("{}: {m}", display_key(&path))))?;
        }
    }
    Ok(tree)
}

fn convert(value: &Spanned<DeValue<'_>>) -> Result<Value, String> {
    Ok(match value.get_ref() {
        DeValue::String(s) => Value::Str(s.to_string()),
        DeValue::Integer(i) => Value::Int(
            i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| format!("integer {i} is out of range"))?,
        ),
        DeValue::Float(x) => Value::Float(
            x.as_str()
                .parse::<f64>()
                .map_err(|_| format!("float {x} is out of range"))?,
        ),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => return Err(format!("a date-time ({d}) is not a setting value")),
        DeValue::Array(items) => Value::Array(items.iter().map(convert).collect::<Result<_, _>>()?),
        DeValue::Table(table) => Value::Hash(
            table
                .iter()
                .map(|(k, v)| Ok((k.get_ref().to_string(), convert(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_tree_as_the_rb_form() {
        let toml = "\
[opscode_pushy_server]
heartbeat_interval = 5000
vip = \"push.example.com\"
down_threshold = 0.4
enable_graphite = true

[opscode_pushy_server.log_rotation]
num_to_keep = 3

[postgresql]
sql_user = \"pushy\"

[bootstrap]
enable = false
";
        let rb = "\
opscode_pushy_server['heartbeat_interval'] = 5000
opscode_pushy_server['vip'] = 'push.example.com'
opscode_pushy_server['down_threshold'] = 0.4
opscode_pushy_server['enable_graphite'] = true
opscode_pushy_server['log_rotation']['num_to_keep'] = 3
postgresql['sql_user'] = 'pushy'
bootstrap['enable'] = false
";
        let from_toml = parse(Path::new("c.toml"), toml).unwrap();
        let from_rb = super::super::rb::parse(Path::new("c.toml"), rb, None).unwrap();
        let strip = |t: &Tree| {
            let mut v: Vec<_> = t
                .settings
                .iter()
                .map(|s| (s.path.clone(), s.value.clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(strip(&from_toml), strip(&from_rb));
        assert_eq!(
            from_toml
                .get(&["opscode_pushy_server", "log_rotation", "num_to_keep"])
                .unwrap()
                .line,
            Some(8)
        );
        assert_eq!(
            from_toml.get(&["bootstrap", "enable"]).unwrap().line,
            Some(14)
        );
    }

    #[test]
    fn invalid_toml_and_foreign_sections_name_the_file() {
        let err = parse(Path::new("/etc/c.toml"), "[opscode_pushy_server\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/etc/c.toml: "), "{err}");
        let err = parse(Path::new("/etc/c.toml"), "\n[nginx]\nx = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/etc/c.toml:2: `nginx` is not a setting namespace"),
            "{err}"
        );
        let err = parse(Path::new("/etc/c.toml"), "postgresql = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`postgresql` must be a table"), "{err}");
        let err = parse(
            Path::new("/etc/c.toml"),
            "[postgresql]\nwhen = 1979-05-27\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/etc/c.toml:2: a date-time"), "{err}");
    }
}
