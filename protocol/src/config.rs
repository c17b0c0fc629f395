//! The node config document, `GET /organizations/ORG/pushy/config/NODE` (zmq.md §1.3,
//! http.md §1.4.1): the server builds it, the agent reads it. Fields are declared in the
//! order the original emits them.
//!
//! Reading is as lenient as the Ruby client: the fields it ignores may be missing, and a
//! missing or non-numeric number takes its default (the accessors below). Numbers are kept
//! as JSON numbers so the server writes them exactly as the original does (`"interval":
//! 10.0`, `"lifetime": 3600`).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Number, Value};

/// The document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// Always `"config"` (ignored by nodes).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The server's `server_name` (ignored by nodes).
    #[serde(default)]
    pub host: String,
    /// Where and how often to heartbeat.
    pub push_jobs: PushJobs,
    /// The node name from the URL (ignored by nodes).
    #[serde(default)]
    pub node: String,
    /// The organization name from the URL (ignored by nodes).
    #[serde(default)]
    pub organization: String,
    /// The server's RSA public key (PEM): verifies its heartbeats.
    pub public_key: String,
    /// The server's CURVE public key (Z85); absent from a 1.x server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve_public_key: Option<String>,
    /// The node's HMAC session key, sealed to the requestor's RSA key.
    pub encoded_session_key: EncodedSessionKey,
    /// Seconds before the node must fetch the config again.
    #[serde(
        default,
        deserialize_with = "number",
        skip_serializing_if = "Option::is_none"
    )]
    pub lifetime: Option<Number>,
    /// Allowed message timestamp skew, seconds.
    #[serde(
        default,
        deserialize_with = "number",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_message_skew: Option<Number>,
    /// Largest message body the server accepts.
    #[serde(
        default,
        deserialize_with = "number",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_body_size: Option<Number>,
    /// The server process's incarnation.
    pub incarnation_id: String,
}

/// `push_jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushJobs {
    /// `push_jobs.heartbeat`.
    pub heartbeat: HeartbeatConfig,
}

/// `push_jobs.heartbeat`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatConfig {
    /// The heartbeat PUB address, `tcp://HOST:PORT`.
    pub out_addr: String,
    /// The command ROUTER address.
    pub command_addr: String,
    /// Heartbeat period, seconds (a float on the wire).
    #[serde(
        default,
        deserialize_with = "number",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Number>,
    /// Silent heartbeat ticks before the node considers the server offline.
    #[serde(
        default,
        deserialize_with = "number",
        skip_serializing_if = "Option::is_none"
    )]
    pub offline_threshold: Option<Number>,
    /// Server heartbeats before the node considers it online again.
    #[serde(
        default,
        deserialize_with = "number",
        skip_serializing_if = "Option::is_none"
    )]
    pub online_threshold: Option<Number>,
}

/// `encoded_session_key`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncodedSessionKey {
    /// `"hmac_sha256"`.
    #[serde(default)]
    pub method: String,
    /// Base64 of the session key, RSA-encrypted (PKCS#1 v1.5) to the requestor's key.
    pub key: String,
}

/// A number, or `None` when the value is anything else.
fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Number>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => Some(n),
        _ => None,
    })
}

impl HeartbeatConfig {
    /// The heartbeat period in seconds (default 10).
    pub fn interval_secs(&self) -> f64 {
        self.interval
            .as_ref()
            .and_then(Number::as_f64)
            .unwrap_or(10.0)
    }

    /// `offline_threshold` (default 3).
    pub fn offline_threshold(&self) -> u32 {
        count(self.offline_threshold.as_ref(), 3)
    }
}

impl NodeConfig {
    /// The config's lifetime in seconds (default 3600).
    pub fn lifetime_secs(&self) -> f64 {
        self.lifetime
            .as_ref()
            .and_then(Number::as_f64)
            .unwrap_or(3600.0)
    }

    /// The allowed timestamp skew in seconds (default 300).
    pub fn max_message_skew_secs(&self) -> f64 {
        self.max_message_skew
            .as_ref()
            .and_then(Number::as_f64)
            .unwrap_or(300.0)
    }

    /// The server's body limit, when it says one.
    pub fn max_body_size(&self) -> Option<u64> {
        self.max_body_size.as_ref().and_then(Number::as_u64)
    }
}

fn count(n: Option<&Number>, default: u32) -> u32 {
    n.and_then(Number::as_u64).map_or(default, |n| n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// zmq.md §1.3's example, as the original emits it.
    const SPEC: &str = r#"{"type":"config","host":"push.example.com","push_jobs":{"heartbeat":{"out_addr":"tcp://push.example.com:10000","command_addr":"tcp://push.example.com:10002","interval":10.0,"offline_threshold":3,"online_threshold":2}},"node":"web1","organization":"acme","public_key":"-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n\n","curve_public_key":"0123456789012345678901234567890123456789","encoded_session_key":{"method":"hmac_sha256","key":"c2VhbGVk"},"lifetime":3600,"max_message_skew":300,"max_body_size":65536,"incarnation_id":"8a6e0804-2bd0-4672-b79d-d97027f9def4"}"#;

    #[test]
    fn the_spec_document_round_trips_byte_for_byte() {
        let c: NodeConfig = serde_json::from_str(SPEC).unwrap();
        assert_eq!(c.push_jobs.heartbeat.interval_secs(), 10.0);
        assert_eq!(c.push_jobs.heartbeat.offline_threshold(), 3);
        assert_eq!(c.push_jobs.heartbeat.online_threshold, Some(2.into()));
        assert_eq!(c.lifetime_secs(), 3600.0);
        assert_eq!(c.max_message_skew_secs(), 300.0);
        assert_eq!(c.max_body_size(), Some(65536));
        assert_eq!(serde_json::to_string(&c).unwrap(), SPEC);
    }

    #[test]
    fn what_nodes_ignore_may_be_missing_and_numbers_default() {
        let c: NodeConfig = serde_json::from_str(
            r#"{"push_jobs":{"heartbeat":{"out_addr":"tcp://h:1","command_addr":"tcp://h:2","interval":"soon"}},
                "public_key":"pem","encoded_session_key":{"key":"k"},"lifetime":null,"incarnation_id":"i"}"#,
        )
        .unwrap();
        assert_eq!(c.push_jobs.heartbeat.interval_secs(), 10.0);
        assert_eq!(c.push_jobs.heartbeat.offline_threshold(), 3);
        assert_eq!(c.lifetime_secs(), 3600.0);
        assert_eq!(c.max_message_skew_secs(), 300.0);
        assert_eq!(c.max_body_size(), None);
        assert_eq!(c.curve_public_key, None);
        assert!(
            serde_json::from_str::<NodeConfig>(r#"{"public_key":"pem","incarnation_id":"i"}"#)
                .is_err()
        );
    }
}
