//! Verifying a request's signature against one public key (http.md §2.4).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Padding;
use openssl::sign::Verifier;

use super::canonical::canonical_string_hashed;
use super::{ProtocolVersion, Request, SignedHeaders, content_hash};

/// Whether `headers` carry a valid signature by `key` over this method, path and body.
/// Every failure (bad base64, wrong length, mismatch, wrong key type) is just `false`.
pub fn verify_signature(
    headers: &SignedHeaders,
    method: &str,
    path: &str,
    body: &[u8],
    key: &PKey<Public>,
) -> bool {
    verify_signature_hashed(
        headers,
        method,
        path,
        &content_hash(headers.version, body),
        key,
    )
}

/// As [`verify_signature`] for a body the caller hashed itself with
/// [`ContentHasher`](super::ContentHasher) under `headers.version` (a body streamed,
/// never held whole): `body_hash` is that hash, not the header's claim.
pub fn verify_signature_hashed(
    headers: &SignedHeaders,
    method: &str,
    path: &str,
    body_hash: &str,
    key: &PKey<Public>,
) -> bool {
    let req = Request {
        method,
        path,
        body: b"",
        user_id: &headers.user_id,
        timestamp: &headers.timestamp,
        server_api_version: headers.server_api_version.as_deref(),
    };
    let Some(canonical) = canonical_string_hashed(headers.version, &req, body_hash) else {
        return false;
    };
    let Ok(signature) = STANDARD.decode(headers.signature.as_bytes()) else {
        return false;
    };
    if signature.is_empty() {
        return false;
    }
    match headers.version {
        ProtocolVersion::V1_0 | ProtocolVersion::V1_1 => {
            // The canonical string carries the computed body hash; 1.0/1.1 also require
            // the header to match it (chef_authn does the same).
            if !ct_eq(body_hash.as_bytes(), headers.content_hash.as_bytes()) {
                return false;
            }
            let Ok(rsa) = key.rsa() else { return false };
            if signature.len() != rsa.size() as usize {
                return false;
            }
            let mut out = vec![0; rsa.size() as usize];
            match rsa.public_decrypt(&signature, &mut out, Padding::PKCS1) {
                Ok(n) => ct_eq(&out[..n], canonical.as_bytes()),
                Err(_) => false,
            }
        }
        ProtocolVersion::V1_2 | ProtocolVersion::V1_3 => {
            let Ok(mut verifier) = Verifier::new(headers.version.digest(), key) else {
                return false;
            };
            verifier.update(canonical.as_bytes()).is_ok()
                && verifier.verify(&signature).unwrap_or(false)
        }
    }
}

/// Constant-time equality; `openssl::memcmp::eq` panics on unequal lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}
