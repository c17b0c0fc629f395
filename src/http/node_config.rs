//! `GET /organizations/ORG/pushy/config/NODE` (http.md §1.4.1): a node's bootstrap
//! config. The client's Curve key (`ccpk`) is checked before authentication but only
//! put on the allow-list after authentication and authorization succeed (§8.2 item 18,
//! fixed: an unauthenticated caller can no longer register keys).
//!
//! Only the node's own client (a client principal named NODE) gets NODE's session key and
//! has its `ccpk` admitted to the command channel (§8.2 items 19 and 21, fixed). Anyone
//! else the config rule lets in — readers, admins, another client when
//! `validate_client_node_name` is off — gets a document of the same shape whose
//! `encoded_session_key` seals a fresh random key that signs nothing, and their `ccpk` is
//! not admitted: reading a node's config no longer lets anyone speak as that node.

use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use openssl::rsa::Padding;
use pushy_protocol::config::{EncodedSessionKey, HeartbeatConfig, NodeConfig, PushJobs};
use serde_json::Number;

use super::error::ApiError;
use super::extract::Segments;
use super::extract::query_param;
use super::pipeline::{GET_JSON, admit};
use super::state::AppState;
use crate::auth::Rule;
use crate::channel::decode_ccpk;
use crate::chef::PrincipalKind;
use crate::cluster::BusMessage;

/// `offline_threshold` and `online_threshold` are constants of the protocol.
const OFFLINE_THRESHOLD: u32 = 3;
const ONLINE_THRESHOLD: u32 = 2;

/// Longest a config answer waits for the node's admission on another instance to be
/// committed.
const ADMIT_WAIT: Duration = Duration::from_secs(2);

/// The config document.
pub(super) async fn config(
    State(state): State<AppState>,
    Segments((org, node)): Segments<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let pushy = &state.config.pushy;
    let curve_required = !pushy.disable_curve_encryption;
    let rule = Rule::Config {
        node: &node,
        validate_client_node_name: pushy.validate_client_node_name,
    };
    let (ok, ccpk) = admit(&state, req, &GET_JSON, &org, rule, |parts, _| {
        if !curve_required {
            return Ok(None);
        }
        let text = query_param(parts.uri.query(), "ccpk").ok_or(ApiError::MissingCcpk)?;
        decode_ccpk(&text).map(Some).ok_or(ApiError::BadCcpk)
    })
    .await?;
    let own_node = ok.who.kind == PrincipalKind::Client && ok.who.name == node;
    // In a cluster the node goes to the instance that should hold it; that instance
    // admits its key (over the bus) and the document names its sockets.
    let holder = state
        .cluster
        .as_ref()
        .map(|c| (c.holder_for(&ok.who.org_guid, &node), c));
    let elsewhere = holder.as_ref().filter(|(h, c)| h.id != c.id());
    let session_key = if own_node {
        match (elsewhere, ccpk) {
            (Some((h, c)), ccpk) => {
                // Answered once the admission is committed (its holder is being woken),
                // so the node's handshake rarely beats its key there.
                let admit = BusMessage::Admit {
                    org_name: org.clone(),
                    org: ok.who.org_guid.as_str().to_owned(),
                    node: node.clone(),
                    ccpk: ccpk.and_then(|k| zmq::z85_encode(&k).ok()),
                    ttl: pushy.config_lifetime,
                };
                if !c.post_and_wait(&h.id, None, &admit, ADMIT_WAIT).await {
                    tracing::warn!(node, holder = %h.id, "the node's admission was not committed within {ADMIT_WAIT:?}; answering anyway");
                }
            }
            (None, Some(key)) => state.client_keys.allow(
                key,
                Instant::now(),
                Duration::from_secs(pushy.config_lifetime),
            ),
            (None, None) => {}
        }
        state
            .session_keys
            .get_or_create(&org, &ok.who.org_guid, &node)
    } else {
        tracing::debug!(requestor = %ok.who.name, node, "config for another principal's node: decoy session key, ccpk not admitted");
        decoy_session_key()
    };
    let rsa = ok
        .who
        .public_key
        .rsa()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut sealed = vec![0; rsa.size() as usize];
    let n = rsa
        .public_encrypt(&session_key, &mut sealed, Padding::PKCS1)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    sealed.truncate(n);

    let (host, heartbeat_port, command_port, curve_key, incarnation) = match &holder {
        Some((h, _)) => (
            h.zmq_host.clone(),
            h.heartbeat_port,
            h.command_port,
            h.curve_public_key.clone(),
            h.incarnation.clone(),
        ),
        None => (
            pushy.server_name.clone(),
            state.ports.heartbeat,
            state.ports.command,
            state.curve.public_z85.clone(),
            state.incarnation.to_string(),
        ),
    };
    let body = NodeConfig {
        kind: "config".to_owned(),
        host: host.clone(),
        push_jobs: PushJobs {
            heartbeat: HeartbeatConfig {
                out_addr: format!("tcp://{host}:{heartbeat_port}"),
                command_addr: format!("tcp://{host}:{command_port}"),
                interval: Number::from_f64(pushy.heartbeat_interval as f64 / 1000.0),
                offline_threshold: Some(OFFLINE_THRESHOLD.into()),
                online_threshold: Some(ONLINE_THRESHOLD.into()),
            },
        },
        node: node.to_owned(),
        organization: org.to_owned(),
        // The original emits a trailing blank line after the PEM.
        public_key: format!("{}\n", state.server_key.public_pem),
        curve_public_key: Some(curve_key),
        encoded_session_key: EncodedSessionKey {
            method: "hmac_sha256".to_owned(),
            key: base64::engine::general_purpose::STANDARD.encode(sealed),
        },
        lifetime: Some(pushy.config_lifetime.into()),
        max_message_skew: Some(pushy.max_time_skew.into()),
        max_body_size: Some(pushy.max_body_size.into()),
        incarnation_id: incarnation,
    };
    Ok(axum::Json(body).into_response())
}

/// A random key of a session key's size, kept nowhere, so it verifies no message.
fn decoy_session_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    openssl::rand::rand_bytes(&mut key).expect("OpenSSL random bytes");
    key
}
