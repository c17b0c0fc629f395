//! Canonical strings (http.md §2.3).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use openssl::hash::{Hasher, MessageDigest, hash};

use super::ProtocolVersion;

/// What the canonical string is built from.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// HTTP method, any case.
    pub method: &'a str,
    /// The request path as sent; a query string is ignored.
    pub path: &'a str,
    /// The raw body bytes.
    pub body: &'a [u8],
    /// The `X-Ops-UserId` value, verbatim.
    pub user_id: &'a str,
    /// The `X-Ops-Timestamp` value, verbatim.
    pub timestamp: &'a str,
    /// The `X-Ops-Server-API-Version` value, if the request carries one (1.3 only).
    pub server_api_version: Option<&'a str>,
}

/// The path as signed: no query string, runs of `/` collapsed, a trailing `/` dropped
/// unless the path is `/`.
pub fn canonical_path(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    out
}

fn b64_digest(digest: MessageDigest, data: &[u8]) -> String {
    // Hashing a byte slice with a built-in digest cannot fail short of a broken OpenSSL.
    let d = hash(digest, data).expect("openssl digest");
    STANDARD.encode(d)
}

/// `X-Ops-Content-Hash` of a body: base64 of its SHA-1 (1.0–1.2) or SHA-256 (1.3).
pub fn content_hash(version: ProtocolVersion, body: &[u8]) -> String {
    b64_digest(version.digest(), body)
}

/// [`content_hash`] computed piece by piece, for a body read as it arrives and never
/// held whole.
pub struct ContentHasher(Hasher);

impl ContentHasher {
    /// A hasher for `version`'s digest.
    pub fn new(version: ProtocolVersion) -> ContentHasher {
        // Creating and feeding a built-in digest cannot fail short of a broken OpenSSL.
        ContentHasher(Hasher::new(version.digest()).expect("openssl digest"))
    }

    /// Adds the next piece of the body.
    pub fn update(&mut self, piece: &[u8]) {
        self.0.update(piece).expect("openssl digest");
    }

    /// The `X-Ops-Content-Hash` value of everything added.
    pub fn finish(mut self) -> String {
        STANDARD.encode(self.0.finish().expect("openssl digest"))
    }
}

impl std::fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentHasher")
    }
}

/// The canonical string for `req` under `version`, or `None` when the request cannot
/// be canonicalised (a non-integer `X-Ops-Server-API-Version` under 1.3).
pub fn canonical_string(version: ProtocolVersion, req: &Request<'_>) -> Option<String> {
    canonical_string_hashed(version, req, &content_hash(version, req.body))
}

/// As [`canonical_string`], with the body's hash given (`req.body` is not read).
pub(super) fn canonical_string_hashed(
    version: ProtocolVersion,
    req: &Request<'_>,
    body_hash: &str,
) -> Option<String> {
    let method = req.method.to_ascii_uppercase();
    let path = canonical_path(req.path);
    match version {
        ProtocolVersion::V1_0 | ProtocolVersion::V1_1 | ProtocolVersion::V1_2 => {
            let user = if version == ProtocolVersion::V1_0 {
                req.user_id.to_owned()
            } else {
                b64_digest(MessageDigest::sha1(), req.user_id.as_bytes())
            };
            Some(format!(
                "Method:{method}\nHashed Path:{}\nX-Ops-Content-Hash:{body_hash}\nX-Ops-Timestamp:{}\nX-Ops-UserId:{user}",
                b64_digest(MessageDigest::sha1(), path.as_bytes()),
                req.timestamp,
            ))
        }
        ProtocolVersion::V1_3 => {
            let api_version: i64 = match req.server_api_version {
                None => 0,
                Some(v) => v.parse().ok()?,
            };
            Some(format!(
                "Method:{method}\nPath:{path}\nX-Ops-Content-Hash:{body_hash}\nX-Ops-Sign:version=1.3\nX-Ops-Timestamp:{}\nX-Ops-UserId:{}\nX-Ops-Server-API-Version:{api_version}",
                req.timestamp, req.user_id,
            ))
        }
    }
}
