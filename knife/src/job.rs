//! The job request `job start` sends (http.md §1.4.2) and the pieces of it users type:
//! the quorum (`N` or `N%`), the environment (a JSON object) and the file. Pure: no I/O.

use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pushy_protocol::job::JobId;
use serde_json::{Map, Value, json};

/// `--quorum`: how many nodes must agree to run the command (ops.md §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// Exactly this many nodes.
    Count(u64),
    /// This percentage of the target nodes, rounded up.
    Percent(u64),
}

impl FromStr for Quorum {
    type Err = String;

    /// `^(\d+)(%?)$`, as knife-push checks it; a percentage above 100 is refused (it could
    /// never be met).
    fn from_str(s: &str) -> Result<Quorum, String> {
        const MESSAGE: &str = "Invalid Format please enter integer or percent";
        let (digits, percent) = match s.strip_suffix('%') {
            Some(d) => (d, true),
            None => (s, false),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MESSAGE.to_owned());
        }
        let n: u64 = digits.parse().map_err(|_| MESSAGE.to_owned())?;
        if percent {
            if n > 100 {
                return Err(format!("{s} is more than 100%"));
            }
            Ok(Quorum::Percent(n))
        } else {
            Ok(Quorum::Count(n))
        }
    }
}

impl Quorum {
    /// The count sent to the server for `nodes` target nodes: a percentage becomes
    /// `ceil(pct / 100 × nodes)`, client-side, as knife-push does.
    pub fn for_nodes(self, nodes: usize) -> u64 {
        match self {
            Quorum::Count(n) => n,
            Quorum::Percent(p) => (p * nodes as u64).div_ceil(100),
        }
    }

    /// As the job controls (`--max-concurrency` and the like) send it: the server
    /// resolves a percentage itself, so it goes as `"N%"`.
    pub fn as_json(self) -> Value {
        match self {
            Quorum::Count(n) => json!(n),
            Quorum::Percent(p) => json!(format!("{p}%")),
        }
    }
}

/// `--with-env`: a JSON object whose values are strings. knife-push logged a parse error
/// and sent junk (ops.md §9); this is a usage error instead.
pub fn parse_env(s: &str) -> Result<Map<String, Value>, String> {
    let v: Value =
        serde_json::from_str(s).map_err(|e| format!("--with-env must be a JSON object: {e}"))?;
    let Value::Object(map) = v else {
        return Err("--with-env must be a JSON object, e.g. '{\"NAME\":\"value\"}'".to_owned());
    };
    if let Some((k, _)) = map.iter().find(|(_, v)| !v.is_string()) {
        return Err(format!("--with-env: the value of {k:?} must be a string"));
    }
    Ok(map)
}

/// The `file` value for `bytes`: always `base64:`, so any content (binary, invalid UTF-8)
/// reaches the node byte for byte (knife-push sent `raw:` and mangled binary files).
pub fn encode_file(bytes: &[u8]) -> String {
    format!("base64:{}", STANDARD.encode(bytes))
}

/// Everything `job start` sends.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobRequest {
    /// The command (a whitelist key, normally).
    pub command: String,
    /// Target nodes, without duplicates.
    pub nodes: Vec<String>,
    /// Nodes that must commit.
    pub quorum: u64,
    /// `capture_output`.
    pub capture: bool,
    /// `env`; knife-push always sends it, `{}` when not given.
    pub env: Map<String, Value>,
    /// `file`, already encoded.
    pub file: Option<String>,
    /// `dir`.
    pub dir: Option<String>,
    /// `user`.
    pub user: Option<String>,
    /// `run_timeout` in seconds.
    pub run_timeout: Option<u64>,
    /// Operators' controls (`max_concurrency`, `max_errors`, `run_on_any`,
    /// `success_threshold`), only those given; with `run_on_any` no `quorum` is sent.
    pub controls: Map<String, Value>,
}

impl JobRequest {
    /// The JSON body, with knife-push's keys: `command`, `nodes`, `quorum`,
    /// `capture_output` and `env` always; `file`, `dir`, `user`, `run_timeout` when given.
    pub fn body(&self) -> Value {
        let mut b = json!({
            "command": self.command,
            "nodes": self.nodes,
            "quorum": self.quorum,
            "capture_output": self.capture,
            "env": self.env,
        });
        let obj = b
            .as_object_mut()
            .expect("a json! object literal is an object");
        if let Some(f) = &self.file {
            obj.insert("file".into(), json!(f));
        }
        if let Some(d) = &self.dir {
            obj.insert("dir".into(), json!(d));
        }
        if let Some(u) = &self.user {
            obj.insert("user".into(), json!(u));
        }
        if let Some(t) = self.run_timeout {
            obj.insert("run_timeout".into(), json!(t));
        }
        if self.controls.contains_key("run_on_any") {
            obj.remove("quorum");
        }
        obj.extend(self.controls.clone());
        b
    }
}

/// Node names in order, each once.
pub fn dedup(nodes: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    nodes
        .into_iter()
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

/// The job id a user typed: the id itself, or a job URL (`…/pushy/jobs/ID`, as the server
/// returns it).
pub fn parse_job_ref(s: &str) -> Option<JobId> {
    let last = s.trim_end_matches('/').rsplit('/').next()?;
    JobId::parse(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_counts_and_percentages() {
        assert_eq!("3".parse(), Ok(Quorum::Count(3)));
        assert_eq!("0".parse(), Ok(Quorum::Count(0)));
        assert_eq!("50%".parse(), Ok(Quorum::Percent(50)));
        for bad in ["", "%", "abc", "-1", "1.5", "50 %", "x%", "101%"] {
            assert!(bad.parse::<Quorum>().is_err(), "{bad}");
        }
        assert_eq!(
            "abc".parse::<Quorum>(),
            Err("Invalid Format please enter integer or percent".to_owned())
        );
    }

    #[test]
    fn percent_quorum_rounds_up_over_the_target_nodes() {
        assert_eq!(Quorum::Percent(100).for_nodes(3), 3);
        assert_eq!(Quorum::Percent(60).for_nodes(3), 2);
        assert_eq!(Quorum::Percent(50).for_nodes(3), 2);
        assert_eq!(Quorum::Percent(34).for_nodes(3), 2);
        assert_eq!(Quorum::Percent(33).for_nodes(3), 1);
        assert_eq!(Quorum::Percent(1).for_nodes(1000), 10);
        assert_eq!(Quorum::Percent(0).for_nodes(5), 0);
        assert_eq!(Quorum::Count(7).for_nodes(2), 7);
    }

    #[test]
    fn fixes_with_env_that_is_not_json_is_refused() {
        assert!(parse_env("A=1").is_err());
        assert!(parse_env("[1]").is_err());
        assert!(parse_env(r#"{"A":1}"#).is_err());
        let m = parse_env(r#"{"A":"1","B":"two"}"#).unwrap();
        assert_eq!(m["B"], "two");
    }

    #[test]
    fn fixes_file_is_sent_base64_byte_for_byte() {
        assert_eq!(encode_file(b"file content"), "base64:ZmlsZSBjb250ZW50");
        assert_eq!(encode_file(&[0xff, 0x00]), "base64:/wA=");
    }

    #[test]
    fn the_body_has_knife_push_keys() {
        let r = JobRequest {
            command: "chef-client".into(),
            nodes: vec!["a".into(), "b".into()],
            quorum: 2,
            ..JobRequest::default()
        };
        assert_eq!(
            r.body().to_string(),
            r#"{"command":"chef-client","nodes":["a","b"],"quorum":2,"capture_output":false,"env":{}}"#
        );
        let r = JobRequest {
            capture: true,
            file: Some("base64:eA==".into()),
            dir: Some("/tmp".into()),
            user: Some("nobody".into()),
            run_timeout: Some(30),
            ..r
        };
        let b = r.body();
        assert_eq!(b["capture_output"], true);
        assert_eq!(b["file"], "base64:eA==");
        assert_eq!(b["dir"], "/tmp");
        assert_eq!(b["user"], "nobody");
        assert_eq!(b["run_timeout"], 30);
    }

    #[test]
    fn job_refs_and_dedup() {
        let id = "aaaaaaaaaaaa25fd67fa8715fd547d3d";
        assert_eq!(parse_job_ref(id).unwrap().as_str(), id);
        assert_eq!(
            parse_job_ref(&format!("https://x/organizations/o/pushy/jobs/{id}"))
                .unwrap()
                .as_str(),
            id
        );
        assert!(parse_job_ref("nope").is_none());
        assert_eq!(
            dedup(vec!["b".into(), "a".into(), "b".into()]),
            vec!["b".to_owned(), "a".to_owned()]
        );
    }
}
