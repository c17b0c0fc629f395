//! The JSON bodies of the command channel (zmq.md §2.5, §2.7) as typed values, in both
//! directions, with the key order the originals emit.

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde_json::{Map, Value};

/// `Tue, 12 May 2020 02:30:37 GMT` (RFC 1123, UTC, one-second resolution).
pub fn format_http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Parses the three HTTP date forms the original server accepts: RFC 1123, RFC 850 and
/// asctime.
pub fn parse_http_date(s: &str) -> Option<DateTime<Utc>> {
    const FORMATS: [&str; 3] = [
        "%a, %d %b %Y %H:%M:%S GMT",
        "%A, %d-%b-%y %H:%M:%S GMT",
        "%a %b %e %H:%M:%S %Y",
    ];
    FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s.trim(), f).ok())
        .map(|t| t.and_utc())
}

/// Whether a message timestamp is within the server's window: strictly less than
/// `max_skew` away from `now`, either direction (zmq.md §2.5).
pub fn timestamp_acceptable(ts: DateTime<Utc>, now: DateTime<Utc>, max_skew: TimeDelta) -> bool {
    (now - ts).abs() < max_skew
}

/// A job option set carried by `commit` (http.md §4.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitOptions {
    /// OS user.
    pub user: Option<String>,
    /// Working directory.
    pub dir: Option<String>,
    /// Environment variables, in the order posted.
    pub env: Option<Vec<(String, String)>>,
    /// The prefixed file string.
    pub file: Option<String>,
    /// Capture stdout/stderr.
    pub capture: bool,
}

/// A message from the server.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ServerMessage {
    /// PUB heartbeat (RSA-signed).
    Heartbeat {
        /// The server machine's short host name.
        server: String,
        /// The server process's incarnation.
        incarnation_id: String,
    },
    /// Reset: sent when a node record is created and while the node is in rehab.
    Abort,
    /// "Your encrypted channel works": sent on a new routing identity.
    Ack,
    /// Ours: `ack` plus the `job_id` of a `succeeded`/`failed` the server has recorded (or
    /// cannot use), so the node may forget the result it keeps for redelivery. The Ruby
    /// client ignores every `ack`.
    ResultAck {
        /// The job the result was for.
        job_id: String,
    },
    /// Ask a node to commit to a job.
    Commit {
        /// The job id.
        job_id: String,
        /// `server_name` from the config.
        server: String,
        /// The command string (the node maps it through its whitelist).
        command: String,
        /// Options.
        options: CommitOptions,
    },
    /// Tell a committed node to run.
    Run {
        /// The job id.
        job_id: String,
        /// Ours (issue 15 §2): the server wants the job's output while it runs, as
        /// `output` messages, when the commit asked for capture. Sent as
        /// `"live_output": true` only when set, so a `run` without it is the original's
        /// byte for byte; the Ruby client ignores the key and sends its output at the end.
        live_output: bool,
    },
}

impl ServerMessage {
    /// The message's `type` as on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Heartbeat { .. } => "heartbeat",
            ServerMessage::Abort => "abort",
            ServerMessage::Ack | ServerMessage::ResultAck { .. } => "ack",
            ServerMessage::Commit { .. } => "commit",
            ServerMessage::Run { .. } => "run",
        }
    }

    /// The body, `sequence` then `timestamp` first as the original prepends them.
    pub fn to_body(&self, sequence: u64, at: DateTime<Utc>) -> Vec<u8> {
        let mut m = Map::new();
        m.insert("sequence".into(), sequence.into());
        m.insert("timestamp".into(), format_http_date(at).into());
        match self {
            ServerMessage::Heartbeat {
                server,
                incarnation_id,
            } => {
                m.insert("server".into(), server.clone().into());
                m.insert("type".into(), "heartbeat".into());
                m.insert("incarnation_id".into(), incarnation_id.clone().into());
            }
            ServerMessage::Abort => {
                m.insert("type".into(), "abort".into());
            }
            ServerMessage::Ack => {
                m.insert("type".into(), "ack".into());
            }
            ServerMessage::ResultAck { job_id } => {
                m.insert("type".into(), "ack".into());
                m.insert("job_id".into(), job_id.clone().into());
            }
            ServerMessage::Commit {
                job_id,
                server,
                command,
                options,
            } => {
                m.insert("type".into(), "commit".into());
                m.insert("job_id".into(), job_id.clone().into());
                m.insert("server".into(), server.clone().into());
                m.insert("command".into(), command.clone().into());
                if let Some(u) = &options.user {
                    m.insert("user".into(), u.clone().into());
                }
                if let Some(d) = &options.dir {
                    m.insert("dir".into(), d.clone().into());
                }
                if let Some(env) = &options.env {
                    let obj: Map<String, Value> = env
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone().into()))
                        .collect();
                    m.insert("env".into(), obj.into());
                }
                if let Some(f) = &options.file {
                    m.insert("file".into(), f.clone().into());
                }
                m.insert("capture".into(), options.capture.into());
            }
            ServerMessage::Run {
                job_id,
                live_output,
            } => {
                m.insert("type".into(), "run".into());
                m.insert("job_id".into(), job_id.clone().into());
                if *live_output {
                    m.insert("live_output".into(), true.into());
                }
            }
        }
        Value::Object(m).to_string().into_bytes()
    }
}

/// A server body as a node reads it (zmq.md §6.3): as lenient as the Ruby client, which
/// still counts a heartbeat without `incarnation_id` and answers a `commit` or `run` that
/// lacks a field with a refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A complete message.
    Message(ServerMessage),
    /// A heartbeat without `incarnation_id`: it shows the server is alive but cannot tell
    /// a restart.
    HeartbeatWithoutIncarnation,
    /// A `commit` without `job_id` or `command`; the node refuses it with `nack_commit`
    /// naming `job_id` when there is one.
    IncompleteCommit {
        /// `job_id`, when it is a string.
        job_id: Option<String>,
        /// The field that is missing.
        missing: &'static str,
    },
    /// A `run` without `job_id`; the node refuses it with `nack_run`.
    IncompleteRun,
    /// A `type` nodes do not know (ignored).
    Unknown(String),
}

/// A verified server body, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerBody {
    /// When the server sent it (checked against the skew window by the receiver).
    pub timestamp: DateTime<Utc>,
    /// What it says.
    pub received: Received,
}

impl ServerBody {
    /// Whether it was sent within `max_skew` of `now`, either way: the original only
    /// refuses future-dated messages; old ones are replays and are refused too (zmq.md §2.5).
    pub fn within(&self, now: DateTime<Utc>, max_skew: TimeDelta) -> bool {
        (now - self.timestamp).abs() < max_skew
    }

    /// Decodes a server's body (after its signature was checked on the exact bytes).
    ///
    /// # Errors
    /// Not a JSON object, no parseable `timestamp`, or no string `type`.
    pub fn parse(body: &[u8]) -> Result<ServerBody, BodyError> {
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
            return Err(BodyError::NotJson);
        };
        let timestamp =
            parse_http_date(&text(&m, "timestamp")?).ok_or(BodyError::Field("timestamp"))?;
        let kind = text(&m, "type")?;
        let opt = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
        let received = match kind.as_str() {
            "heartbeat" => match opt("incarnation_id") {
                Some(incarnation_id) => Received::Message(ServerMessage::Heartbeat {
                    server: opt("server").unwrap_or_default(),
                    incarnation_id,
                }),
                None => Received::HeartbeatWithoutIncarnation,
            },
            "abort" => Received::Message(ServerMessage::Abort),
            "ack" => Received::Message(match opt("job_id") {
                Some(job_id) => ServerMessage::ResultAck { job_id },
                None => ServerMessage::Ack,
            }),
            "commit" => match (opt("job_id"), opt("command")) {
                (Some(job_id), Some(command)) => Received::Message(ServerMessage::Commit {
                    job_id,
                    server: opt("server").unwrap_or_default(),
                    command,
                    options: commit_options(&m),
                }),
                (job_id, _) => Received::IncompleteCommit {
                    missing: if job_id.is_none() {
                        "job_id"
                    } else {
                        "command"
                    },
                    job_id,
                },
            },
            "run" => match opt("job_id") {
                Some(job_id) => Received::Message(ServerMessage::Run {
                    job_id,
                    // Absent or not a bool: the original server's `run`.
                    live_output: m
                        .get("live_output")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                }),
                None => Received::IncompleteRun,
            },
            _ => Received::Unknown(kind),
        };
        Ok(ServerBody {
            timestamp,
            received,
        })
    }
}

/// A commit's options as sent (empty strings kept; the node decides what they mean).
/// Environment values that are not strings read as empty, as the agent always took them.
fn commit_options(m: &Map<String, Value>) -> CommitOptions {
    let opt = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
    CommitOptions {
        user: opt("user"),
        dir: opt("dir"),
        env: m.get("env").and_then(Value::as_object).map(|env| {
            env.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        }),
        file: opt("file"),
        capture: m.get("capture").and_then(Value::as_bool).unwrap_or(false),
    }
}

impl ServerMessage {
    /// Decodes a complete server message, the inverse of [`ServerMessage::to_body`]
    /// (what a node tolerates besides is [`ServerBody::parse`]).
    ///
    /// # Errors
    /// As [`ServerBody::parse`], plus a missing field or an unknown type.
    pub fn parse(body: &[u8]) -> Result<ServerMessage, BodyError> {
        match ServerBody::parse(body)?.received {
            Received::Message(m) => Ok(m),
            Received::HeartbeatWithoutIncarnation => Err(BodyError::Field("incarnation_id")),
            Received::IncompleteCommit { missing, .. } => Err(BodyError::Field(missing)),
            Received::IncompleteRun => Err(BodyError::Field("job_id")),
            Received::Unknown(_) => Err(BodyError::UnknownType),
        }
    }
}

/// What a client message says about its job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobRef {
    /// `null` or the string `"null"`: no job.
    None,
    /// A job id.
    Id(String),
    /// Missing, not a string, or over 64 bytes: matches no job (zmq.md §2.6).
    Invalid,
}

/// The kinds of client message (zmq.md §2.7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientMessageType {
    /// Periodic liveness.
    Heartbeat,
    /// Commit accepted.
    AckCommit,
    /// Commit refused.
    NackCommit,
    /// Run accepted and process started.
    AckRun,
    /// Run refused.
    NackRun,
    /// Exit status 0.
    Succeeded,
    /// Non-zero exit.
    Failed,
    /// Reset done.
    Aborted,
    /// Ours (issue 15 §2): the output a running job wrote since the previous `output`
    /// message, sent only when the `run` asked for `live_output`.
    Output,
}

impl ClientMessageType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientMessageType::Heartbeat => "heartbeat",
            ClientMessageType::AckCommit => "ack_commit",
            ClientMessageType::NackCommit => "nack_commit",
            ClientMessageType::AckRun => "ack_run",
            ClientMessageType::NackRun => "nack_run",
            ClientMessageType::Succeeded => "succeeded",
            ClientMessageType::Failed => "failed",
            ClientMessageType::Aborted => "aborted",
            ClientMessageType::Output => "output",
        }
    }

    /// The type named `s`, if it is one the server knows.
    pub fn from_wire(s: &str) -> Option<Self> {
        Some(match s {
            "heartbeat" => ClientMessageType::Heartbeat,
            "ack_commit" => ClientMessageType::AckCommit,
            "nack_commit" => ClientMessageType::NackCommit,
            "ack_run" => ClientMessageType::AckRun,
            "nack_run" => ClientMessageType::NackRun,
            "succeeded" => ClientMessageType::Succeeded,
            "failed" => ClientMessageType::Failed,
            "aborted" => ClientMessageType::Aborted,
            "output" => ClientMessageType::Output,
            _ => return None,
        })
    }
}

/// A message from a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientMessage {
    /// Node name.
    pub node: String,
    /// Machine host name.
    pub client: String,
    /// `"2.0"`; absent from 1.x clients.
    pub protocol_version: Option<String>,
    /// Organization name.
    pub org: String,
    /// Kind.
    pub kind: ClientMessageType,
    /// Per-socket counter (never checked).
    pub sequence: u64,
    /// When sent.
    pub timestamp: DateTime<Utc>,
    /// The client process's incarnation.
    pub incarnation_id: String,
    /// Heartbeats only: `idle`, `committed` or `running` (the server ignores it).
    pub job_state: Option<String>,
    /// The job concerned.
    pub job_id: JobRef,
    /// Captured stdout (completion messages with capture); for `output`, the text
    /// written since the previous `output` message, when there is any.
    pub stdout: Option<String>,
    /// Captured stderr (as `stdout`).
    pub stderr: Option<String>,
    /// Ours: the agent kept only the tail of the output because it did not fit
    /// `max_body_size` (the Ruby client drops both streams instead). Sent as
    /// `"output_truncated": true` only when set; other servers ignore unknown keys.
    pub output_truncated: bool,
    /// Ours, `output` only (issue 15 §2): bytes of output the agent did not send since
    /// the previous `output` message (rate or size bounds, or a full send queue). Sent as
    /// `"dropped": N` only when above 0.
    pub dropped: u64,
}

/// Why a body was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not a JSON object.
    #[error("body is not a JSON object")]
    NotJson,
    /// A required field is missing or of the wrong type.
    #[error("missing or invalid field {0}")]
    Field(&'static str),
    /// `type` is not one the receiver knows.
    #[error("unknown message type")]
    UnknownType,
}

fn text(m: &Map<String, Value>, k: &'static str) -> Result<String, BodyError> {
    m.get(k)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(BodyError::Field(k))
}

impl ClientMessage {
    /// Decodes a node's body (after its signature was checked on the exact bytes).
    ///
    /// # Errors
    /// Not JSON, a missing field, an unparseable timestamp or an unknown type.
    pub fn parse(body: &[u8]) -> Result<ClientMessage, BodyError> {
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
            return Err(BodyError::NotJson);
        };
        let kind =
            ClientMessageType::from_wire(&text(&m, "type")?).ok_or(BodyError::UnknownType)?;
        let timestamp =
            parse_http_date(&text(&m, "timestamp")?).ok_or(BodyError::Field("timestamp"))?;
        let job_id = match m.get("job_id") {
            Some(Value::Null) => JobRef::None,
            Some(Value::String(s)) if s == "null" => JobRef::None,
            Some(Value::String(s)) if s.len() <= 64 => JobRef::Id(s.clone()),
            _ => JobRef::Invalid,
        };
        Ok(ClientMessage {
            node: text(&m, "node")?,
            client: m
                .get("client")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            protocol_version: m
                .get("protocol_version")
                .and_then(Value::as_str)
                .map(str::to_owned),
            org: text(&m, "org")?,
            kind,
            sequence: m.get("sequence").and_then(Value::as_u64).unwrap_or(0),
            timestamp,
            incarnation_id: text(&m, "incarnation_id")?,
            job_state: m
                .get("job_state")
                .and_then(Value::as_str)
                .map(str::to_owned),
            job_id,
            stdout: m.get("stdout").and_then(Value::as_str).map(str::to_owned),
            stderr: m.get("stderr").and_then(Value::as_str).map(str::to_owned),
            output_truncated: m
                .get("output_truncated")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            dropped: m.get("dropped").and_then(Value::as_u64).unwrap_or(0),
        })
    }

    /// The body as the Ruby client orders it: `node`, `client`, `protocol_version`, `org`,
    /// `type`, `sequence`, `timestamp`, `incarnation_id`, (`job_state`), `job_id`, then
    /// `stdout`/`stderr` when present, then our `output_truncated` and `dropped` when set.
    pub fn to_body(&self) -> Vec<u8> {
        let mut m = Map::new();
        m.insert("node".into(), self.node.clone().into());
        m.insert("client".into(), self.client.clone().into());
        if let Some(v) = &self.protocol_version {
            m.insert("protocol_version".into(), v.clone().into());
        }
        m.insert("org".into(), self.org.clone().into());
        m.insert("type".into(), self.kind.as_str().into());
        m.insert("sequence".into(), self.sequence.into());
        m.insert("timestamp".into(), format_http_date(self.timestamp).into());
        m.insert("incarnation_id".into(), self.incarnation_id.clone().into());
        if let Some(s) = &self.job_state {
            m.insert("job_state".into(), s.clone().into());
        }
        let job = match &self.job_id {
            JobRef::Id(id) => Value::String(id.clone()),
            JobRef::None | JobRef::Invalid => Value::Null,
        };
        m.insert("job_id".into(), job);
        if let Some(s) = &self.stdout {
            m.insert("stdout".into(), s.clone().into());
        }
        if let Some(s) = &self.stderr {
            m.insert("stderr".into(), s.clone().into());
        }
        if self.output_truncated {
            m.insert("output_truncated".into(), true.into());
        }
        if self.dropped > 0 {
            m.insert("dropped".into(), self.dropped.into());
        }
        Value::Object(m).to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        parse_http_date("Tue, 12 May 2020 02:30:37 GMT").unwrap()
    }

    #[test]
    fn http_dates_in_the_three_forms() {
        assert_eq!(format_http_date(at()), "Tue, 12 May 2020 02:30:37 GMT");
        assert_eq!(
            parse_http_date("Tuesday, 12-May-20 02:30:37 GMT"),
            Some(at())
        );
        assert_eq!(parse_http_date("Tue May 12 02:30:37 2020"), Some(at()));
        assert_eq!(parse_http_date("2020-05-12T02:30:37Z"), None);
        let skew = TimeDelta::seconds(300);
        assert!(timestamp_acceptable(
            at(),
            at() + TimeDelta::seconds(299),
            skew
        ));
        assert!(!timestamp_acceptable(at(), at() + skew, skew));
        assert!(!timestamp_acceptable(at() + skew, at(), skew));
    }

    #[test]
    fn server_bodies_match_the_spec_literals() {
        let hb = ServerMessage::Heartbeat {
            server: "pushhost".into(),
            incarnation_id: "8a6e0804".into(),
        };
        assert_eq!(
            String::from_utf8(hb.to_body(42, at())).unwrap(),
            r#"{"sequence":42,"timestamp":"Tue, 12 May 2020 02:30:37 GMT","server":"pushhost","type":"heartbeat","incarnation_id":"8a6e0804"}"#
        );
        assert_eq!(
            String::from_utf8(ServerMessage::Abort.to_body(1, at())).unwrap(),
            r#"{"sequence":1,"timestamp":"Tue, 12 May 2020 02:30:37 GMT","type":"abort"}"#
        );
        assert_eq!(
            String::from_utf8(ServerMessage::Ack.to_body(7, at())).unwrap(),
            r#"{"sequence":7,"timestamp":"Tue, 12 May 2020 02:30:37 GMT","type":"ack"}"#
        );
        let result_ack = ServerMessage::ResultAck {
            job_id: "b8a4".into(),
        };
        assert_eq!(result_ack.kind(), "ack");
        assert_eq!(
            String::from_utf8(result_ack.to_body(8, at())).unwrap(),
            r#"{"sequence":8,"timestamp":"Tue, 12 May 2020 02:30:37 GMT","type":"ack","job_id":"b8a4"}"#
        );
        let commit = ServerMessage::Commit {
            job_id: "b8a4".into(),
            server: "push.example.com".into(),
            command: "chef-client".into(),
            options: CommitOptions {
                user: Some("deploy".into()),
                dir: Some("/srv/app".into()),
                env: Some(vec![("A".into(), "1".into())]),
                file: Some("base64:aGVsbG8=".into()),
                capture: false,
            },
        };
        assert_eq!(
            String::from_utf8(commit.to_body(3, at())).unwrap(),
            r#"{"sequence":3,"timestamp":"Tue, 12 May 2020 02:30:37 GMT","type":"commit","job_id":"b8a4","server":"push.example.com","command":"chef-client","user":"deploy","dir":"/srv/app","env":{"A":"1"},"file":"base64:aGVsbG8=","capture":false}"#
        );
        assert_eq!(
            String::from_utf8(
                ServerMessage::Run {
                    job_id: "b8a4".into(),
                    live_output: false,
                }
                .to_body(4, at())
            )
            .unwrap(),
            r#"{"sequence":4,"timestamp":"Tue, 12 May 2020 02:30:37 GMT","type":"run","job_id":"b8a4"}"#
        );
    }

    #[test]
    fn server_bodies_parse_back() {
        let all = [
            ServerMessage::Heartbeat {
                server: "pushhost".into(),
                incarnation_id: "8a6e0804".into(),
            },
            ServerMessage::Abort,
            ServerMessage::Ack,
            ServerMessage::ResultAck {
                job_id: "b8a4".into(),
            },
            ServerMessage::Commit {
                job_id: "b8a4".into(),
                server: "push.example.com".into(),
                command: "chef-client".into(),
                options: CommitOptions {
                    user: Some("deploy".into()),
                    dir: Some("/srv/app".into()),
                    env: Some(vec![("B".into(), "2".into()), ("A".into(), "1".into())]),
                    file: Some("raw:x".into()),
                    capture: true,
                },
            },
            ServerMessage::Run {
                job_id: "b8a4".into(),
                live_output: false,
            },
            ServerMessage::Run {
                job_id: "b8a4".into(),
                live_output: true,
            },
        ];
        for m in all {
            let body = m.to_body(3, at());
            assert_eq!(ServerMessage::parse(&body), Ok(m.clone()));
            assert_eq!(ServerBody::parse(&body).unwrap().timestamp, at());
        }
    }

    #[test]
    fn a_node_tolerates_what_the_ruby_client_tolerates() {
        let parse = |rest: &str| {
            let body =
                format!(r#"{{"sequence":1,"timestamp":"Tue, 12 May 2020 02:30:37 GMT"{rest}}}"#);
            ServerBody::parse(body.as_bytes()).map(|b| b.received)
        };
        assert_eq!(
            parse(r#","type":"heartbeat""#),
            Ok(Received::HeartbeatWithoutIncarnation)
        );
        assert_eq!(
            parse(r#","type":"commit","job_id":"j1""#),
            Ok(Received::IncompleteCommit {
                job_id: Some("j1".into()),
                missing: "command"
            })
        );
        assert_eq!(
            parse(r#","type":"commit","command":"x""#),
            Ok(Received::IncompleteCommit {
                job_id: None,
                missing: "job_id"
            })
        );
        assert_eq!(
            parse(r#","type":"run","job_id":7"#),
            Ok(Received::IncompleteRun)
        );
        assert_eq!(
            parse(r#","type":"prepare""#),
            Ok(Received::Unknown("prepare".into()))
        );
        let commit =
            parse(r#","type":"commit","job_id":"j","command":"c","env":{"A":1},"user":"""#);
        let Ok(Received::Message(ServerMessage::Commit {
            options, server, ..
        })) = commit
        else {
            panic!("{commit:?}");
        };
        assert_eq!(server, "");
        assert_eq!(options.user.as_deref(), Some(""));
        assert_eq!(options.env, Some(vec![("A".into(), String::new())]));
        assert!(!options.capture);
        assert_eq!(parse(""), Err(BodyError::Field("type")));
        assert_eq!(
            ServerBody::parse(br#"{"type":"abort"}"#),
            Err(BodyError::Field("timestamp"))
        );
        assert_eq!(ServerBody::parse(b"[]"), Err(BodyError::NotJson));
        assert_eq!(
            ServerMessage::parse(br#"{"timestamp":"Tue, 12 May 2020 02:30:37 GMT","type":"x"}"#),
            Err(BodyError::UnknownType)
        );
    }

    #[test]
    fn client_heartbeat_literal_round_trips() {
        let literal = r#"{"node":"web1","client":"web1","protocol_version":"2.0","org":"acme","type":"heartbeat","sequence":12,"timestamp":"Tue, 12 May 2020 02:30:40 GMT","incarnation_id":"0b0e","job_state":"idle","job_id":null}"#;
        let m = ClientMessage::parse(literal.as_bytes()).unwrap();
        assert_eq!(m.kind, ClientMessageType::Heartbeat);
        assert_eq!(m.job_id, JobRef::None);
        assert_eq!(m.org, "acme");
        assert_eq!(String::from_utf8(m.to_body()).unwrap(), literal);
    }

    #[test]
    fn client_job_ids() {
        let body = |job: &str| {
            format!(
                r#"{{"node":"n","org":"o","type":"ack_commit","timestamp":"Tue, 12 May 2020 02:30:40 GMT","incarnation_id":"i"{job}}}"#
            )
        };
        assert_eq!(
            ClientMessage::parse(body("").as_bytes()).unwrap().job_id,
            JobRef::Invalid
        );
        assert_eq!(
            ClientMessage::parse(body(r#","job_id":"null""#).as_bytes())
                .unwrap()
                .job_id,
            JobRef::None
        );
        assert_eq!(
            ClientMessage::parse(body(r#","job_id":"abc""#).as_bytes())
                .unwrap()
                .job_id,
            JobRef::Id("abc".into())
        );
        let long = format!(r#","job_id":"{}""#, "a".repeat(65));
        assert_eq!(
            ClientMessage::parse(body(&long).as_bytes()).unwrap().job_id,
            JobRef::Invalid
        );
        assert_eq!(
            ClientMessage::parse(body(r#","job_id":7"#).as_bytes())
                .unwrap()
                .job_id,
            JobRef::Invalid
        );
    }

    #[test]
    fn bad_client_bodies() {
        assert_eq!(ClientMessage::parse(b"not json"), Err(BodyError::NotJson));
        assert_eq!(ClientMessage::parse(b"[1]"), Err(BodyError::NotJson));
        assert_eq!(
            ClientMessage::parse(br#"{"type":"ready"}"#),
            Err(BodyError::UnknownType)
        );
        assert_eq!(
            ClientMessage::parse(br#"{"type":"heartbeat","timestamp":"yesterday"}"#),
            Err(BodyError::Field("timestamp"))
        );
        assert_eq!(
            ClientMessage::parse(br#"{"type":"heartbeat","timestamp":"Tue, 12 May 2020 02:30:40 GMT","org":"o","incarnation_id":"i"}"#),
            Err(BodyError::Field("node"))
        );
    }

    #[test]
    fn run_asks_for_live_output_only_when_set() {
        let run = |live_output| {
            let m = ServerMessage::Run {
                job_id: "b8a4".into(),
                live_output,
            };
            String::from_utf8(m.to_body(4, at())).unwrap()
        };
        // Without it, the original server's bytes.
        assert_eq!(
            run(false),
            r#"{"sequence":4,"timestamp":"Tue, 12 May 2020 02:30:37 GMT","type":"run","job_id":"b8a4"}"#
        );
        assert_eq!(
            run(true),
            r#"{"sequence":4,"timestamp":"Tue, 12 May 2020 02:30:37 GMT","type":"run","job_id":"b8a4","live_output":true}"#
        );
        let parse = |rest: &str| {
            let body = format!(
                r#"{{"sequence":1,"timestamp":"Tue, 12 May 2020 02:30:37 GMT","type":"run","job_id":"j"{rest}}}"#
            );
            match ServerMessage::parse(body.as_bytes()) {
                Ok(ServerMessage::Run { live_output, .. }) => live_output,
                other => panic!("{other:?}"),
            }
        };
        assert!(parse(r#","live_output":true"#));
        assert!(!parse(""));
        assert!(!parse(r#","live_output":false"#));
        assert!(!parse(r#","live_output":"true""#));
        assert!(!parse(r#","live_output":1"#));
    }

    #[test]
    fn output_messages_round_trip_with_dropped() {
        let literal = r#"{"node":"web1","client":"web1","protocol_version":"2.0","org":"acme","type":"output","sequence":13,"timestamp":"Tue, 12 May 2020 02:30:40 GMT","incarnation_id":"0b0e","job_id":"b8a4","stdout":"1\n2\n","stderr":"é\u0000","dropped":4096}"#;
        let m = ClientMessage::parse(literal.as_bytes()).unwrap();
        assert_eq!(m.kind, ClientMessageType::Output);
        assert_eq!(m.kind.as_str(), "output");
        assert_eq!(m.job_id, JobRef::Id("b8a4".into()));
        assert_eq!(m.stdout.as_deref(), Some("1\n2\n"));
        assert_eq!(m.stderr.as_deref(), Some("é\0"));
        assert_eq!(m.dropped, 4096);
        assert_eq!(String::from_utf8(m.to_body()).unwrap(), literal);

        // One stream, nothing dropped: no `stderr`, no `dropped`.
        let only_out = ClientMessage {
            stderr: None,
            dropped: 0,
            ..m
        };
        let body = String::from_utf8(only_out.to_body()).unwrap();
        assert!(
            body.ends_with(r#","job_id":"b8a4","stdout":"1\n2\n"}"#),
            "{body}"
        );
        assert_eq!(ClientMessage::parse(body.as_bytes()), Ok(only_out));
        // A `dropped` that is not a count reads as none.
        let odd = body.replace(r#""stdout""#, r#""dropped":-1,"stdout""#);
        assert_eq!(ClientMessage::parse(odd.as_bytes()).unwrap().dropped, 0);
    }
}
