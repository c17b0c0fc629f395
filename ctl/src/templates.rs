//! The files reconfigure renders, as minijinja templates (`ctl/templates/`, compiled into the
//! binary so the ctl never renders from a stale or missing copy on disk).
//!
//! Two filters keep the output well-formed whatever a setting holds: `toml` renders a value as
//! a TOML literal (strings quoted and escaped), `sh` quotes a word for `/bin/sh` and systemd
//! when it has anything but safe characters.

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};

/// `(name, source)` of every template.
const TEMPLATES: &[(&str, &str)] = &[
    (
        DAEMON_CONFIG,
        include_str!("../templates/opscode-pushy-server.toml.j2"),
    ),
    (
        SYSTEMD_UNIT,
        include_str!("../templates/opscode-pushy-server.service.j2"),
    ),
    (RUNIT_RUN, include_str!("../templates/sv-run.j2")),
    (RUNIT_LOG_RUN, include_str!("../templates/sv-log-run.j2")),
    (LOGROTATE, include_str!("../templates/logrotate.j2")),
    (
        NGINX_UPSTREAMS,
        include_str!("../templates/nginx-upstreams.conf.j2"),
    ),
    (
        NGINX_EXTERNAL,
        include_str!("../templates/nginx-external.conf.j2"),
    ),
];

/// The daemon's TOML configuration.
pub const DAEMON_CONFIG: &str = "opscode-pushy-server.toml.j2";
/// The systemd unit.
pub const SYSTEMD_UNIT: &str = "opscode-pushy-server.service.j2";
/// runit's `run`.
pub const RUNIT_RUN: &str = "sv-run.j2";
/// runit's `log/run`.
pub const RUNIT_LOG_RUN: &str = "sv-log-run.j2";
/// `/etc/logrotate.d/opscode-pushy-server` (systemd only).
pub const LOGROTATE: &str = "logrotate.j2";
/// nginx `10-push_jobs_upstreams.conf`.
pub const NGINX_UPSTREAMS: &str = "nginx-upstreams.conf.j2";
/// nginx `10-push_jobs_external.conf`.
pub const NGINX_EXTERNAL: &str = "nginx-external.conf.j2";

/// The environment with every template and filter.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.add_filter("toml", toml_literal);
    env.add_filter("sh", sh_word);
    env.add_filter("logrotate_path", logrotate_path);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("template {name} does not compile: {e:#}"));
    }
    env
}

/// Renders template `name` with `context`.
///
/// # Errors
/// A value the template cannot render (an undefined variable, a value TOML cannot hold).
pub fn render(name: &str, context: Value) -> Result<String, Error> {
    let env = environment();
    env.get_template(name)?.render(context)
}

/// `{{ path | logrotate_path }}`: a path as logrotate reads it, double-quoted. logrotate has
/// no escapes inside quotes, so a path holding `"`, `\` or a line break is refused.
fn logrotate_path(path: &str) -> Result<String, Error> {
    if path.contains(['"', '\\', '\n', '\r']) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{path:?} cannot be written in a logrotate file"),
        ));
    }
    Ok(format!("\"{path}\""))
}

/// `{{ v | toml }}`: `v` as a TOML literal.
fn toml_literal(value: Value) -> Result<String, Error> {
    if let Some(text) = value.as_str() {
        return Ok(toml_basic_string(text));
    }
    let converted = toml::Value::try_from(&value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("{value} cannot be written as TOML: {e}"),
        )
    })?;
    Ok(converted.to_string())
}

/// A one-line TOML basic string.
fn toml_basic_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `{{ v | sh }}`: `v` unchanged when it is made of safe characters, else single-quoted.
fn sh_word(value: String) -> String {
    let safe = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if safe {
        value
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        let env = environment();
        for (name, _) in TEMPLATES {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn the_toml_filter_quotes_and_escapes() {
        assert_eq!(
            toml_literal(Value::from("a \"b\"\n")).unwrap(),
            r#""a \"b\"\n""#
        );
        assert_eq!(toml_literal(Value::from(10003)).unwrap(), "10003");
        assert_eq!(toml_literal(Value::from(0.6)).unwrap(), "0.6");
        assert_eq!(toml_literal(Value::from(true)).unwrap(), "true");
        let odd = "C:\\x\u{1}\t";
        let parsed: toml::Table =
            toml::from_str(&format!("k = {}", toml_basic_string(odd))).unwrap();
        assert_eq!(parsed["k"].as_str(), Some(odd));
    }

    #[test]
    fn the_sh_filter_quotes_only_when_needed() {
        assert_eq!(sh_word("/var/opt/x.toml".into()), "/var/opt/x.toml");
        assert_eq!(sh_word("a b".into()), "'a b'");
        assert_eq!(sh_word("it's".into()), r"'it'\''s'");
    }
}
