//! veil's hashers: how generated credentials are derived (ops.md §3.5 "Credential
//! derivation"), and reading them from a file's `veil.hasher`.

use std::fmt;

use openssl::hash::MessageDigest;
use serde_json::{Map, Value, json};

use super::{DEFAULT_ITERATIONS, HASHER_BCRYPT, HASHER_PBKDF2};

/// A generated credential's hasher (ops.md §3.5 "Credential derivation").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hasher {
    /// `Veil::Hasher::PBKDF2`, the default.
    Pbkdf2 {
        /// Hex text; used as text, not decoded.
        secret: String,
        /// Hex text; used as text, not decoded.
        salt: String,
        /// PBKDF2 iterations.
        iterations: u32,
        /// The PRF digest (SHA512 in every file veil writes).
        digest: Digest,
    },
    /// `Veil::Hasher::BCrypt`: read and written back as it was, but we cannot derive with it.
    Bcrypt(Map<String, Value>),
}

/// PBKDF2's PRF digest, named in the file as `OpenSSL::Digest::<NAME>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digest {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512 (veil's default).
    Sha512,
}

impl Digest {
    fn from_name(name: &str) -> Option<Digest> {
        match name.strip_prefix("OpenSSL::Digest::").unwrap_or(name) {
            "SHA1" => Some(Digest::Sha1),
            "SHA256" => Some(Digest::Sha256),
            "SHA384" => Some(Digest::Sha384),
            "SHA512" => Some(Digest::Sha512),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Digest::Sha1 => "OpenSSL::Digest::SHA1",
            Digest::Sha256 => "OpenSSL::Digest::SHA256",
            Digest::Sha384 => "OpenSSL::Digest::SHA384",
            Digest::Sha512 => "OpenSSL::Digest::SHA512",
        }
    }

    fn message_digest(self) -> MessageDigest {
        match self {
            Digest::Sha1 => MessageDigest::sha1(),
            Digest::Sha256 => MessageDigest::sha256(),
            Digest::Sha384 => MessageDigest::sha384(),
            Digest::Sha512 => MessageDigest::sha512(),
        }
    }
}

impl Hasher {
    /// A new PBKDF2 hasher as veil makes one: 512 random bytes of secret and 128 of salt, both
    /// as lowercase hex, 10 000 iterations of HMAC-SHA512.
    pub(super) fn generate() -> Result<Hasher, openssl::error::ErrorStack> {
        Ok(Hasher::Pbkdf2 {
            secret: random_hex(512)?,
            salt: random_hex(128)?,
            iterations: DEFAULT_ITERATIONS,
            digest: Digest::Sha512,
        })
    }

    /// The `type` name written in the file.
    pub fn kind(&self) -> &str {
        match self {
            Hasher::Pbkdf2 { .. } => HASHER_PBKDF2,
            Hasher::Bcrypt(map) => map.get("type").and_then(Value::as_str).unwrap_or("BCrypt"),
        }
    }

    /// veil's derivation: PBKDF2-HMAC(secret ‖ group ‖ name ‖ version, salt as text,
    /// iterations, digest length), then lowercase hex of SHA-512 of that, cut to `length`
    /// characters. `None` for a hasher we cannot compute (BCrypt).
    pub fn derive(
        &self,
        group: Option<&str>,
        name: &str,
        version: u64,
        length: usize,
    ) -> Option<Result<String, openssl::error::ErrorStack>> {
        let Hasher::Pbkdf2 {
            secret,
            salt,
            iterations,
            digest,
        } = self
        else {
            return None;
        };
        let password = format!("{secret}{}{name}{version}", group.unwrap_or(""));
        let md = digest.message_digest();
        let mut dk = vec![0u8; md.size()];
        let derived = openssl::pkcs5::pbkdf2_hmac(
            password.as_bytes(),
            salt.as_bytes(),
            *iterations as usize,
            md,
            &mut dk,
        )
        .map(|()| {
            let mut hex = to_hex(&openssl::sha::sha512(&dk));
            hex.truncate(length);
            hex
        });
        Some(derived)
    }

    pub(super) fn to_json(&self) -> Value {
        match self {
            Hasher::Pbkdf2 {
                secret,
                salt,
                iterations,
                digest,
            } => json!({
                "type": HASHER_PBKDF2,
                "secret": secret,
                "salt": salt,
                "iterations": iterations,
                "hash_function": digest.name(),
            }),
            Hasher::Bcrypt(map) => Value::Object(map.clone()),
        }
    }
}

/// `None`: no hasher or an empty one (veil then makes a new one).
pub(super) fn parse_hasher(value: Option<Value>) -> Result<Option<Hasher>, String> {
    let map = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) if m.is_empty() => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(_) => return Err("veil.hasher is not an object".into()),
    };
    let kind = match map.get("type") {
        None => HASHER_PBKDF2,
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err("veil.hasher.type is not a string".into()),
    };
    match kind {
        HASHER_PBKDF2 | "PBKDF2" => {
            let text = |field: &str| match map.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("veil.hasher.{field} is not a string")),
            };
            let iterations = match map.get("iterations") {
                None | Some(Value::Null) => DEFAULT_ITERATIONS,
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n > 0)
                    .ok_or("veil.hasher.iterations is not a positive integer")?,
            };
            let digest = match text("hash_function")? {
                None => Digest::Sha512,
                Some(name) => Digest::from_name(&name).ok_or_else(|| {
                    format!("veil.hasher.hash_function {name:?} is not supported")
                })?,
            };
            let random = |bytes| random_hex(bytes).map_err(|e| e.to_string());
            Ok(Some(Hasher::Pbkdf2 {
                secret: text("secret")?.map_or_else(|| random(512), Ok)?,
                salt: text("salt")?.map_or_else(|| random(128), Ok)?,
                iterations,
                digest,
            }))
        }
        HASHER_BCRYPT | "BCrypt" => Ok(Some(Hasher::Bcrypt(map))),
        other => Err(format!("veil.hasher.type {other:?} is not a known hasher")),
    }
}

pub(super) fn random_hex(bytes: usize) -> Result<String, openssl::error::ErrorStack> {
    let mut buf = vec![0u8; bytes];
    openssl::rand::rand_bytes(&mut buf)?;
    Ok(to_hex(&buf))
}

pub(super) fn to_hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        write!(out, "{b:02x}").expect("writing to a String cannot fail");
    }
    out
}
