//! Validating the body of `POST /organizations/ORG/pushy/jobs` (http.md §1.4.2): the
//! original's checks in its order with its messages, plus the fixes of §8.1 items 3–4
//! (malformed JSON and non-integer numbers are 400s, not 500s) and §8.3 item 22
//! (`user` over 32 characters is refused, duplicate nodes are merged).

use std::collections::HashSet;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::controls::{self, ControlError, Controls};

/// Largest job file payload, bytes (decoded for `base64:`).
pub const MAX_FILE_SIZE: usize = 100_000;
/// `job_options.job_user` is `character(32)`.
const MAX_USER_LEN: usize = 32;

/// Why a job body was refused; the text is the spec's message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Not JSON at all.
    #[error("invalid JSON")]
    InvalidJson,
    /// `command` missing or not a string.
    #[error("invalid command supplied")]
    Command,
    /// `nodes` missing, not an array of strings, or empty.
    #[error("at least one node must be supplied")]
    Nodes,
    /// `run_timeout` not a non-negative integer.
    #[error("invalid type supplied for run_timeout (expected a number)")]
    RunTimeout,
    /// `quorum` not a non-negative integer.
    #[error("invalid type supplied for quorum (expected a number)")]
    Quorum,
    /// `capture_output` not a boolean.
    #[error("invalid type supplied for capture_output (expected a boolean)")]
    Capture,
    /// Wrong type for `user`, `dir`, `env`, `file`, or not an object at all.
    #[error("an unknown validation error has occurred")]
    Unknown,
    /// A key outside the nine known ones.
    #[error("invalid key supplied")]
    UnknownKey,
    /// `env` names a variable twice.
    #[error("invalid environment value (duplicate key)")]
    DuplicateEnv,
    /// `file` has neither prefix.
    #[error("invalid file contents (expected 'base64:...' or 'raw:...')")]
    FilePrefix,
    /// `file` is `base64:` followed by something that does not decode.
    #[error("invalid file contents (couldn't decode base64 string)")]
    FileBase64,
    /// The file payload is over 100,000 bytes.
    #[error("invalid file size (must be <= 100000 bytes)")]
    FileSize,
    /// One of our operators' controls is invalid (issue 15).
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// A valid job request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    /// The command.
    pub command: String,
    /// Node names, duplicates removed, in request order.
    pub nodes: Vec<String>,
    /// Seconds, if given.
    pub run_timeout: Option<u32>,
    /// Minimum committed nodes, if given.
    pub quorum: Option<u32>,
    /// OS user.
    pub user: Option<String>,
    /// Working directory.
    pub dir: Option<String>,
    /// Environment, as the compact JSON text of the posted object.
    pub env: Option<String>,
    /// The prefixed file string, as posted.
    pub file: Option<String>,
    /// Capture stdout/stderr.
    pub capture_output: bool,
    /// Rate control, any N, success threshold (all absent in an original body).
    pub controls: Controls,
}

const KEYS: [&str; 9] = [
    "command",
    "nodes",
    "run_timeout",
    "quorum",
    "user",
    "dir",
    "env",
    "file",
    "capture_output",
];

/// Validates a job body.
///
/// # Errors
/// The first failing check, in the original's order.
pub fn parse(body: &[u8]) -> Result<JobSpec, SpecError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| SpecError::InvalidJson)?;
    let Value::Object(obj) = value else {
        return Err(SpecError::Unknown);
    };
    let command = match obj.get("command") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(SpecError::Command),
    };
    let nodes = match obj.get("nodes") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(SpecError::Nodes))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(SpecError::Nodes),
    };
    let run_timeout = count(obj.get("run_timeout"), SpecError::RunTimeout)?;
    let quorum = count(obj.get("quorum"), SpecError::Quorum)?;
    let user = string(obj.get("user"))?;
    let dir = string(obj.get("dir"))?;
    let env = match obj.get("env") {
        None => None,
        Some(Value::Object(m)) if m.values().all(Value::is_string) => Some(m),
        Some(_) => return Err(SpecError::Unknown),
    };
    let file = string(obj.get("file"))?;
    let capture_output = match obj.get("capture_output") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(SpecError::Capture),
    };
    if obj
        .keys()
        .any(|k| !KEYS.contains(&k.as_str()) && !controls::KEYS.contains(&k.as_str()))
    {
        return Err(SpecError::UnknownKey);
    }
    if nodes.is_empty() {
        return Err(SpecError::Nodes);
    }
    if env.is_some() && env_has_duplicates(body) {
        return Err(SpecError::DuplicateEnv);
    }
    if let Some(f) = &file {
        check_file(f)?;
    }
    if user
        .as_ref()
        .is_some_and(|u| u.chars().count() > MAX_USER_LEN)
    {
        return Err(SpecError::Unknown);
    }
    let mut seen = HashSet::new();
    let nodes: Vec<String> = nodes
        .into_iter()
        .filter(|n| seen.insert(n.clone()))
        .collect();
    let controls = Controls::parse(&obj, nodes.len(), quorum.is_some())?;
    Ok(JobSpec {
        command,
        nodes,
        run_timeout,
        quorum,
        user,
        dir,
        env: env.map(|m| Value::Object(m.clone()).to_string()),
        file,
        capture_output,
        controls,
    })
}

/// A non-negative integer that fits the database's `integer` columns.
fn count(v: Option<&Value>, err: SpecError) -> Result<Option<u32>, SpecError> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| i32::try_from(*n).is_ok())
            .map(Some)
            .ok_or(err),
        Some(_) => Err(err),
    }
}

fn string(v: Option<&Value>) -> Result<Option<String>, SpecError> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(SpecError::Unknown),
    }
}

fn check_file(file: &str) -> Result<(), SpecError> {
    let size = if let Some(raw) = file.strip_prefix("raw:") {
        raw.len()
    } else if let Some(b64) = file.strip_prefix("base64:") {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| SpecError::FileBase64)?
            .len()
    } else {
        return Err(SpecError::FilePrefix);
    };
    if size > MAX_FILE_SIZE {
        Err(SpecError::FileSize)
    } else {
        Ok(())
    }
}

/// Whether the `env` object in the JSON text names a key twice. A parsed `Value` keeps only
/// the last duplicate, so this walks the text again with a visitor that sees every key.
fn env_has_duplicates(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        env: DuplicateProbe,
    }
    struct DuplicateProbe(bool);
    impl<'de> Deserialize<'de> for DuplicateProbe {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = DuplicateProbe;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<DuplicateProbe, A::Error> {
                    let mut keys = HashSet::new();
                    let mut dup = false;
                    while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        dup |= !keys.insert(k);
                    }
                    Ok(DuplicateProbe(dup))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Probe>(body).is_ok_and(|p| p.env.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        parse(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn minimal_body() {
        let s = parse(br#"{"command":"sleep 1","nodes":["DONKEY"]}"#).unwrap();
        assert_eq!(s.command, "sleep 1");
        assert_eq!(s.nodes, vec!["DONKEY"]);
        assert_eq!(
            (s.quorum, s.run_timeout, s.capture_output),
            (None, None, false)
        );
    }

    #[test]
    fn knife_push_body_with_empty_env_and_false_capture_is_accepted() {
        let s = parse(br#"{"command":"x","nodes":["a"],"quorum":1,"run_timeout":0,"capture_output":false,"env":{}}"#).unwrap();
        assert_eq!(s.env.as_deref(), Some("{}"));
        assert_eq!((s.quorum, s.run_timeout), (Some(1), Some(0)));
    }

    #[test]
    fn pedant_item_57_bodies_are_400_with_the_right_message() {
        for c in [
            r#"{"nodes":["D"]}"#,
            r#"{"command":[],"nodes":["D"]}"#,
            r#"{"command":{},"nodes":["D"]}"#,
            r#"{"command":0,"nodes":["D"]}"#,
            r#"{"command":false,"nodes":["D"]}"#,
            r#"{"command":null,"nodes":["D"]}"#,
        ] {
            assert_eq!(err(c), "invalid command supplied", "{c}");
        }
        for n in [
            "",
            r#","nodes":"""#,
            r#","nodes":"DONKEY""#,
            r#","nodes":[]"#,
            r#","nodes":["DONKEY","FIONA",false]"#,
            r#","nodes":["DONKEY",null]"#,
            r#","nodes":["DONKEY",{}]"#,
            r#","nodes":{}"#,
            r#","nodes":0"#,
            r#","nodes":false"#,
            r#","nodes":null"#,
        ] {
            let body = format!(r#"{{"command":"x"{n}}}"#);
            assert_eq!(err(&body), "at least one node must be supplied", "{body}");
        }
        for v in [
            r#""""#,
            r#""1""#,
            "[]",
            "{}",
            "false",
            "null",
            "-1",
            "1.5",
            "1e3",
            "4294967296",
        ] {
            let q = format!(r#"{{"command":"x","nodes":["D"],"quorum":{v}}}"#);
            assert_eq!(
                err(&q),
                "invalid type supplied for quorum (expected a number)",
                "{q}"
            );
            let r = format!(r#"{{"command":"x","nodes":["D"],"run_timeout":{v}}}"#);
            assert_eq!(
                err(&r),
                "invalid type supplied for run_timeout (expected a number)",
                "{r}"
            );
        }
        for v in ["null", r#""""#, r#""bar""#, "0"] {
            let b = format!(r#"{{"command":"x","nodes":["D"],"foo":{v}}}"#);
            assert_eq!(err(&b), "invalid key supplied", "{b}");
        }
    }

    #[test]
    fn option_types() {
        for k in ["user", "dir", "file"] {
            assert_eq!(
                err(&format!(r#"{{"command":"x","nodes":["D"],"{k}":1}}"#)),
                "an unknown validation error has occurred"
            );
        }
        assert_eq!(
            err(r#"{"command":"x","nodes":["D"],"env":[]}"#),
            "an unknown validation error has occurred"
        );
        assert_eq!(
            err(r#"{"command":"x","nodes":["D"],"env":{"A":1}}"#),
            "an unknown validation error has occurred"
        );
        assert_eq!(
            err(r#"{"command":"x","nodes":["D"],"capture_output":"yes"}"#),
            "invalid type supplied for capture_output (expected a boolean)"
        );
        assert_eq!(err(r#"[1,2]"#), "an unknown validation error has occurred");
        assert_eq!(
            err(r#"{"command":"x","nodes":["D"],"user":"123456789012345678901234567890123"}"#),
            "an unknown validation error has occurred"
        );
    }

    #[test]
    fn type_errors_win_in_key_order() {
        assert_eq!(
            err(r#"{"command":1,"nodes":1}"#),
            "invalid command supplied"
        );
        assert_eq!(
            err(r#"{"command":"x","nodes":[],"foo":1}"#),
            "invalid key supplied"
        );
        assert_eq!(
            err(r#"{"command":"x","nodes":["D"],"quorum":"1","run_timeout":"1"}"#),
            "invalid type supplied for run_timeout (expected a number)"
        );
    }

    #[test]
    fn malformed_json_is_a_400_message_not_a_crash() {
        assert_eq!(err(""), "invalid JSON");
        assert_eq!(err("{"), "invalid JSON");
        assert_eq!(err("not json"), "invalid JSON");
    }

    #[test]
    fn env_duplicates() {
        assert_eq!(
            err(r#"{"command":"x","nodes":["D"],"env":{"A":"1","A":"2"}}"#),
            "invalid environment value (duplicate key)"
        );
        assert!(parse(br#"{"command":"x","nodes":["D"],"env":{"A":"1","B":"2"}}"#).is_ok());
    }

    #[test]
    fn files() {
        assert_eq!(
            err(r#"{"command":"x","nodes":["D"],"file":"foo"}"#),
            "invalid file contents (expected 'base64:...' or 'raw:...')"
        );
        assert_eq!(
            err(r#"{"command":"x","nodes":["D"],"file":"base64:bad$base64"}"#),
            "invalid file contents (couldn't decode base64 string)"
        );
        assert!(parse(br#"{"command":"x","nodes":["D"],"file":"raw:foo"}"#).is_ok());
        assert!(parse(br#"{"command":"x","nodes":["D"],"file":"base64:Zm9v"}"#).is_ok());
        let big = format!(
            r#"{{"command":"x","nodes":["D"],"file":"raw:{}"}}"#,
            "a".repeat(100_001)
        );
        assert_eq!(err(&big), "invalid file size (must be <= 100000 bytes)");
        let ok = format!(
            r#"{{"command":"x","nodes":["D"],"file":"raw:{}"}}"#,
            "a".repeat(100_000)
        );
        assert!(parse(ok.as_bytes()).is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 100_001]);
        assert_eq!(
            err(&format!(
                r#"{{"command":"x","nodes":["D"],"file":"base64:{b64}"}}"#
            )),
            "invalid file size (must be <= 100000 bytes)"
        );
    }

    #[test]
    fn fixes_duplicate_nodes_are_merged_not_a_500() {
        let s = parse(br#"{"command":"x","nodes":["B","A","B"]}"#).unwrap();
        assert_eq!(s.nodes, vec!["B", "A"]);
    }
}
