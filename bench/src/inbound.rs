//! Checking what the server sends before a node sees it, as the real agent does
//! (client/src/channel.rs `check`, zmq.md §2.4): two frames, a header naming a signing
//! method, a signature over the exact body bytes (HMAC with the session key, or the
//! server's RSA key for heartbeats), a JSON body, a timestamp inside the skew window.
//! The body is decoded by `pushy_protocol` ([`ServerBody`]), as the agent decodes it.
//! Anything else is a [`Rejection`] that the driver counts and drops.

use std::time::Duration;

use chrono::{DateTime, Utc};
use openssl::pkey::{PKey, Public};
use pushy_protocol::frame::{self, Header, SigningMethod, VerifyKey};
use pushy_protocol::message::{BodyError, Received, ServerBody};

/// Largest body accepted from the server (the agent's limit).
const MAX_BODY: usize = 1 << 20;

/// How much of the server's RSA heartbeat signature to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RsaCheck {
    /// Verify every copy, as every real node does on its own machine (cheap: about
    /// 0.3% of a core per 2500 nodes at the default 10 s server heartbeat).
    Every,
    /// Verify a given (header, body) once per shard: every node of a shard receives the
    /// same bytes, so one verification stands for all of them.
    Once,
    /// Parse the header but skip the RSA verification.
    Off,
}

/// Why a message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not exactly two frames.
    #[error("not two frames")]
    Frames,
    /// The header frame does not parse.
    #[error("bad header")]
    Header,
    /// The signature does not match, or there is no key for its method.
    #[error("bad signature")]
    Signature,
    /// The body is not a JSON object with a string `type`.
    #[error("bad body")]
    Body,
    /// The timestamp is missing or outside the skew window.
    #[error("timestamp outside the window")]
    Skew,
}

/// The keys one message is checked with.
pub struct Keys<'a> {
    /// The node's session key; `None` on a SUB shared by several nodes (which only ever
    /// carries RSA-signed heartbeats).
    pub session: Option<&'a [u8; 32]>,
    /// The server's RSA key from the config.
    pub server: &'a PKey<Public>,
    /// The config's `max_message_skew`.
    pub max_skew: Duration,
}

/// The last RSA-verified message, for [`RsaCheck::Once`].
#[derive(Default)]
pub struct RsaCache {
    last: Option<(Vec<u8>, Vec<u8>, PKey<Public>)>,
}

impl RsaCache {
    fn verified(&mut self, header: &[u8], body: &[u8], key: &PKey<Public>) -> bool {
        if let Some((h, b, k)) = &self.last
            && h == header
            && b == body
            && k.public_eq(key)
        {
            return true;
        }
        let ok = frame::verify(header, body, MAX_BODY, VerifyKey::Rsa(key)).is_ok();
        if ok {
            self.last = Some((header.to_vec(), body.to_vec(), key.clone()));
        }
        ok
    }
}

/// Checks and decodes one received message.
///
/// # Errors
/// The first check that fails.
pub fn check(
    frames: &[Vec<u8>],
    keys: &Keys<'_>,
    rsa: RsaCheck,
    cache: &mut RsaCache,
    now: DateTime<Utc>,
) -> Result<Received, Rejection> {
    let [header, body] = frames else {
        return Err(Rejection::Frames);
    };
    let method = Header::parse(header).map_err(|_| Rejection::Header)?.method;
    let ok = match (method, rsa) {
        (SigningMethod::HmacSha256, _) => keys
            .session
            .is_some_and(|k| frame::verify(header, body, MAX_BODY, VerifyKey::Hmac(k)).is_ok()),
        (SigningMethod::Rsa2048Sha1, RsaCheck::Every) => {
            frame::verify(header, body, MAX_BODY, VerifyKey::Rsa(keys.server)).is_ok()
        }
        (SigningMethod::Rsa2048Sha1, RsaCheck::Once) => cache.verified(header, body, keys.server),
        (SigningMethod::Rsa2048Sha1, RsaCheck::Off) => body.len() <= MAX_BODY,
    };
    if !ok {
        return Err(Rejection::Signature);
    }
    let body = ServerBody::parse(body).map_err(|e| match e {
        BodyError::Field("timestamp") => Rejection::Skew,
        _ => Rejection::Body,
    })?;
    let skew = chrono::TimeDelta::from_std(keys.max_skew).unwrap_or(chrono::TimeDelta::MAX);
    if !body.within(now, skew) {
        return Err(Rejection::Skew);
    }
    Ok(body.received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::Private;
    use pushy_protocol::frame::SignKey;
    use pushy_protocol::message::ServerMessage;

    const SESSION: [u8; 32] = [9; 32];

    fn server_key() -> (PKey<Private>, PKey<Public>) {
        let private = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let public = PKey::public_key_from_pem(&private.public_key_to_pem().unwrap()).unwrap();
        (private, public)
    }

    fn hmac(msg: &ServerMessage, at: DateTime<Utc>) -> Vec<Vec<u8>> {
        let body = msg.to_body(1, at);
        let header = frame::sign(&body, SignKey::Hmac(&SESSION)).unwrap();
        vec![header.into_bytes(), body]
    }

    fn check_with(
        frames: &[Vec<u8>],
        server: &PKey<Public>,
        rsa: RsaCheck,
    ) -> Result<Received, Rejection> {
        let keys = Keys {
            session: Some(&SESSION),
            server,
            max_skew: Duration::from_secs(300),
        };
        check(frames, &keys, rsa, &mut RsaCache::default(), Utc::now())
    }

    #[test]
    fn decodes_signed_commands() {
        let (_, public) = server_key();
        let commit = ServerMessage::Commit {
            job_id: "j1".into(),
            server: "s".into(),
            command: "chef-client".into(),
            options: Default::default(),
        };
        assert_eq!(
            check_with(&hmac(&commit, Utc::now()), &public, RsaCheck::Every),
            Ok(Received::Message(commit))
        );
        let run = ServerMessage::Run {
            job_id: "j1".into(),
            live_output: false,
        };
        assert_eq!(
            check_with(&hmac(&run, Utc::now()), &public, RsaCheck::Every),
            Ok(Received::Message(run))
        );
        assert_eq!(
            check_with(
                &hmac(&ServerMessage::Abort, Utc::now()),
                &public,
                RsaCheck::Every
            ),
            Ok(Received::Message(ServerMessage::Abort))
        );
    }

    #[test]
    fn garbage_and_wrong_signatures_are_rejected() {
        let (_, public) = server_key();
        let good = hmac(&ServerMessage::Ack, Utc::now());
        assert_eq!(
            check_with(&good[..1], &public, RsaCheck::Every),
            Err(Rejection::Frames)
        );
        let garbage = vec![b"nonsense".to_vec(), b"{}".to_vec()];
        assert_eq!(
            check_with(&garbage, &public, RsaCheck::Every),
            Err(Rejection::Header)
        );
        let tampered = vec![good[0].clone(), b"{\"type\":\"abort\"}".to_vec()];
        assert_eq!(
            check_with(&tampered, &public, RsaCheck::Every),
            Err(Rejection::Signature)
        );
        let keys = Keys {
            session: None,
            server: &public,
            max_skew: Duration::from_secs(300),
        };
        assert_eq!(
            check(
                &good,
                &keys,
                RsaCheck::Every,
                &mut RsaCache::default(),
                Utc::now()
            ),
            Err(Rejection::Signature),
            "a shared SUB has no session key"
        );
    }

    #[test]
    fn stale_messages_are_rejected() {
        let (_, public) = server_key();
        let old = hmac(
            &ServerMessage::Ack,
            Utc::now() - chrono::TimeDelta::seconds(301),
        );
        assert_eq!(
            check_with(&old, &public, RsaCheck::Every),
            Err(Rejection::Skew)
        );
    }

    #[test]
    fn heartbeats_verify_with_the_server_key_once_or_every_time() {
        let (private, public) = server_key();
        let (_, other) = server_key();
        let beat = ServerMessage::Heartbeat {
            server: "host".into(),
            incarnation_id: "inc-9".into(),
        };
        let body = beat.to_body(0, Utc::now());
        let header = frame::sign(&body, SignKey::Rsa(&private)).unwrap();
        let frames = vec![header.into_bytes(), body];
        let want = Ok(Received::Message(beat.clone()));
        assert_eq!(check_with(&frames, &public, RsaCheck::Every), want);
        assert_eq!(
            check_with(&frames, &other, RsaCheck::Every),
            Err(Rejection::Signature)
        );
        assert_eq!(check_with(&frames, &other, RsaCheck::Off), want);

        let mut cache = RsaCache::default();
        let keys = |server| Keys {
            session: None,
            server,
            max_skew: Duration::from_secs(300),
        };
        for _ in 0..3 {
            assert_eq!(
                check(
                    &frames,
                    &keys(&public),
                    RsaCheck::Once,
                    &mut cache,
                    Utc::now()
                ),
                want
            );
        }
        assert_eq!(
            check(
                &frames,
                &keys(&other),
                RsaCheck::Once,
                &mut cache,
                Utc::now()
            ),
            Err(Rejection::Signature),
            "the cache is per key"
        );
    }
}
