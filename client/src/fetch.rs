//! Fetching the node's configuration from the push server (zmq.md §1.3): a Chef-signed
//! `GET <chef_server_url>/pushy/config/<node>?ccpk=<key>&version=2.0`, then decrypting the
//! session key with the node's private key.

use std::time::Duration;

use base64::Engine as _;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Padding;
use pushy_protocol::chef_auth::ProtocolVersion;
use pushy_protocol::config::NodeConfig;

/// The client's HTTP timeout (the original's `rest_timeout`).
pub const REST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server told the node.
#[derive(Clone)]
pub struct ServerConfig {
    /// Heartbeat PUB address.
    pub out_addr: String,
    /// Command ROUTER address.
    pub command_addr: String,
    /// Heartbeat period.
    pub interval: Duration,
    /// Missed server heartbeats before the server is considered offline.
    pub offline_threshold: u32,
    /// The server's RSA key (verifies its heartbeats).
    pub server_key: PKey<Public>,
    /// The server's CURVE key; `None` means a 1.x server.
    pub curve_server_key: Option<[u8; 32]>,
    /// The node's HMAC session key.
    pub session_key: [u8; 32],
    /// Seconds before the config must be fetched again.
    pub lifetime: Duration,
    /// Allowed message timestamp skew.
    pub max_message_skew: Duration,
    /// Largest message the server accepts.
    pub max_body_size: Option<usize>,
    /// The server process's incarnation.
    pub incarnation_id: String,
}

/// Why the config could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request failed or timed out.
    #[error("fetching {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("fetching {url}: HTTP {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The body, for the log.
        body: String,
    },
    /// The answer is not a config document this client understands.
    #[error("bad config document: {0}")]
    Document(String),
    /// Signing the request failed.
    #[error("signing the config request")]
    Sign(#[from] pushy_protocol::chef_auth::SignError),
}

fn doc_error(what: &str) -> Error {
    Error::Document(what.to_owned())
}

/// Fetches and decodes the config.
///
/// # Errors
/// Transport, status, signing or document errors.
pub async fn fetch(
    http: &reqwest::Client,
    chef_server_url: &str,
    node: &str,
    key: &PKey<Private>,
    ccpk_z85: &str,
) -> Result<ServerConfig, Error> {
    let base = chef_server_url.trim_end_matches('/');
    let base = reqwest::Url::parse(base)
        .map_err(|e| Error::Document(format!("bad URL {chef_server_url}: {e}")))?;
    // The agent's pool, timeouts and TLS settings; signed as the node with protocol 1.1.
    let chef = pushy_chef_http::Client::builder(base, node, key.clone(), ProtocolVersion::V1_1)
        .chef_version("12.0.0")
        .with_http(http.clone());
    let mut url = chef.url(&["pushy", "config", node]);
    url.query_pairs_mut()
        .append_pair("ccpk", ccpk_z85)
        .append_pair("version", "2.0");
    let reply = chef
        .get(url.clone())
        .timeout(REST_TIMEOUT)
        .read()
        .await
        .map_err(|e| match e {
            pushy_chef_http::Error::Sign(e) => Error::Sign(e),
            pushy_chef_http::Error::Transport(source) => Error::Http {
                url: url.to_string(),
                source,
            },
        })?;
    let text = reply.text();
    if !reply.status.is_success() {
        return Err(Error::Status {
            url: url.to_string(),
            status: reply.status.as_u16(),
            body: text.chars().take(500).collect(),
        });
    }
    parse(&text, key)
}

/// Decodes a config document (http.md §1.4.1, `pushy_protocol::config`) and unseals
/// the session key with the node's key.
///
/// # Errors
/// When a needed field is missing or malformed.
pub fn parse(text: &str, key: &PKey<Private>) -> Result<ServerConfig, Error> {
    let doc: NodeConfig = serde_json::from_str(text).map_err(|e| Error::Document(e.to_string()))?;
    let hb = &doc.push_jobs.heartbeat;
    let server_key = pushy_protocol::keys::public_key_from_pem(&doc.public_key)
        .map_err(|e| Error::Document(format!("public_key: {e}")))?;
    let curve_server_key = match &doc.curve_public_key {
        None => None,
        Some(z) => Some(
            zmq::z85_decode(z)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .ok_or_else(|| doc_error("curve_public_key"))?,
        ),
    };
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(&doc.encoded_session_key.key)
        .map_err(|_| doc_error("encoded_session_key"))?;
    let rsa = key.rsa().map_err(|_| doc_error("client key is not RSA"))?;
    let mut out = vec![0; rsa.size() as usize];
    let n = rsa
        .private_decrypt(&sealed, &mut out, Padding::PKCS1)
        .map_err(|_| doc_error("session key does not decrypt with the client key"))?;
    let session_key: [u8; 32] = out[..n]
        .try_into()
        .map_err(|_| doc_error("session key is not 32 bytes"))?;
    Ok(ServerConfig {
        out_addr: hb.out_addr.clone(),
        command_addr: hb.command_addr.clone(),
        interval: Duration::from_secs_f64(hb.interval_secs().max(0.01)),
        offline_threshold: hb.offline_threshold(),
        server_key,
        curve_server_key,
        session_key,
        lifetime: Duration::from_secs_f64(doc.lifetime_secs().max(1.0)),
        max_message_skew: Duration::from_secs_f64(doc.max_message_skew_secs().max(1.0)),
        max_body_size: doc.max_body_size().map(|n| n as usize),
        incarnation_id: doc.incarnation_id,
    })
}
