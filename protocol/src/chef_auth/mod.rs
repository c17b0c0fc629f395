//! Chef's signed-header request authentication (http.md §2): canonical strings, signing
//! (what mixlib-authentication does) and verification (what chef_authn does), protocol
//! versions 1.0, 1.1, 1.2 and 1.3.
//!
//! Sans-IO: callers hand in header values, the request's method, path and body bytes, a
//! key and the current time; nothing here touches a socket or a clock.

mod canonical;
mod headers;
mod sign;
mod verify;

pub use canonical::{ContentHasher, Request, canonical_path, canonical_string, content_hash};
pub use headers::{DEFAULT_CLOCK_SKEW, HeaderError, SignedHeaders, parse_timestamp};
pub use sign::{SignError, format_timestamp, sign_request};
pub use verify::{verify_signature, verify_signature_hashed};

use openssl::hash::MessageDigest;

/// A version of the signing protocol, from the `X-Ops-Sign` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// SHA-1, raw user id, RSA private-key "encrypt" of the canonical string.
    V1_0,
    /// As 1.0 with the user id hashed (base64 SHA-1).
    V1_1,
    /// As 1.1 but an RSASSA-PKCS1-v1_5/SHA-1 signature. Accepted, never produced by Ruby.
    V1_2,
    /// SHA-256, RSASSA-PKCS1-v1_5, `X-Ops-Server-API-Version` in the canonical string.
    V1_3,
}

impl ProtocolVersion {
    /// Parses an `X-Ops-Sign` value such as `algorithm=sha1;version=1.0;` (http.md §2.2
    /// step 4): pieces that are not exactly `key=value` are ignored, nothing is trimmed,
    /// `version` is required and `algorithm`, when given, must match the version.
    pub fn from_sign_header(value: &str) -> Option<ProtocolVersion> {
        let mut version = None;
        let mut algorithm = None;
        for piece in value.split(';') {
            let mut kv = piece.split('=');
            let (Some(k), Some(v), None) = (kv.next(), kv.next(), kv.next()) else {
                continue;
            };
            match k {
                "version" => version = Some(v),
                "algorithm" => algorithm = Some(v),
                _ => {}
            }
        }
        let parsed = match version? {
            "1.0" => ProtocolVersion::V1_0,
            "1.1" => ProtocolVersion::V1_1,
            "1.2" => ProtocolVersion::V1_2,
            "1.3" => ProtocolVersion::V1_3,
            _ => return None,
        };
        match algorithm {
            None => Some(parsed),
            Some(a) if a == parsed.algorithm() => Some(parsed),
            Some(_) => None,
        }
    }

    /// The `algorithm=` name this version uses.
    pub fn algorithm(self) -> &'static str {
        match self {
            ProtocolVersion::V1_3 => "sha256",
            _ => "sha1",
        }
    }

    /// The version number as written in `X-Ops-Sign`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolVersion::V1_0 => "1.0",
            ProtocolVersion::V1_1 => "1.1",
            ProtocolVersion::V1_2 => "1.2",
            ProtocolVersion::V1_3 => "1.3",
        }
    }

    /// The `X-Ops-Sign` value the Ruby signer sends for this version.
    pub fn sign_header(self) -> String {
        format!("algorithm={};version={};", self.algorithm(), self.as_str())
    }

    fn digest(self) -> MessageDigest {
        match self {
            ProtocolVersion::V1_3 => MessageDigest::sha256(),
            _ => MessageDigest::sha1(),
        }
    }
}

/// Width of one `X-Ops-Authorization-N` header value: the Ruby signer base64-encodes
/// with a line break every 60 characters and sends each line as one header.
pub const AUTHORIZATION_LINE: usize = 60;

/// Splits a base64 signature into the values of `X-Ops-Authorization-1`, `-2`, ….
pub fn split_signature(signature_b64: &str) -> Vec<String> {
    signature_b64
        .as_bytes()
        .chunks(AUTHORIZATION_LINE)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

#[cfg(test)]
mod tests;
