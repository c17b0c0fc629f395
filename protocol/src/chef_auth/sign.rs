//! Signing outgoing requests, as mixlib-authentication does (http.md §2.7).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Padding;
use openssl::sign::Signer;

use super::{ProtocolVersion, Request, canonical_string, content_hash, split_signature};

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key is not an RSA key, or OpenSSL refused the operation.
    #[error("signing failed")]
    Crypto(#[from] openssl::error::ErrorStack),
    /// The request has a non-integer `X-Ops-Server-API-Version`.
    #[error("X-Ops-Server-API-Version must be an integer")]
    BadApiVersion,
}

/// The `X-Ops-Timestamp` form of a time: `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Signs a request and returns the headers to send, in the order the Ruby signer emits
/// them: `X-Ops-Sign`, `X-Ops-Userid`, `X-Ops-Timestamp`, `X-Ops-Content-Hash`,
/// `X-Ops-Authorization-1..N` (plus `X-Ops-Server-API-Version` if the request has one).
/// `req.timestamp` should come from [`format_timestamp`].
///
/// # Errors
/// When the key cannot sign or the API version is not an integer.
pub fn sign_request(
    key: &PKey<Private>,
    version: ProtocolVersion,
    req: &Request<'_>,
) -> Result<Vec<(String, String)>, SignError> {
    let canonical = canonical_string(version, req).ok_or(SignError::BadApiVersion)?;
    let signature = match version {
        ProtocolVersion::V1_0 | ProtocolVersion::V1_1 => {
            // The 1.0/1.1 signature is a raw PKCS#1 type-1 "encryption" of the canonical
            // string itself, with no DigestInfo; Signer cannot express that.
            let rsa = key.rsa()?;
            let mut out = vec![0; rsa.size() as usize];
            let n = rsa.private_encrypt(canonical.as_bytes(), &mut out, Padding::PKCS1)?;
            out.truncate(n);
            out
        }
        ProtocolVersion::V1_2 | ProtocolVersion::V1_3 => {
            let mut signer = Signer::new(version.digest(), key)?;
            signer.update(canonical.as_bytes())?;
            signer.sign_to_vec()?
        }
    };
    let mut headers = vec![
        ("X-Ops-Sign".to_owned(), version.sign_header()),
        ("X-Ops-Userid".to_owned(), req.user_id.to_owned()),
        ("X-Ops-Timestamp".to_owned(), req.timestamp.to_owned()),
        (
            "X-Ops-Content-Hash".to_owned(),
            content_hash(version, req.body),
        ),
    ];
    for (i, line) in split_signature(&STANDARD.encode(signature))
        .into_iter()
        .enumerate()
    {
        headers.push((format!("X-Ops-Authorization-{}", i + 1), line));
    }
    if let Some(v) = req.server_api_version {
        headers.push(("X-Ops-Server-API-Version".to_owned(), v.to_owned()));
    }
    Ok(headers)
}
