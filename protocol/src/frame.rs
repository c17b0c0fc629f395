//! The command channel's two-frame messages (zmq.md §2.1–2.3, §2.6): the header frame
//! `Version:2.0;SigningMethod:…;Signature:…`, HMAC-SHA256 and the original's RSA
//! signature, and the size limits. Sans-IO: bytes and keys in, verdicts out.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use openssl::hash::{MessageDigest, hash};
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Padding;
use sha2::Sha256;

/// Largest header frame the server accepts, bytes (hard-coded in the original).
pub const MAX_HEADER_SIZE: usize = 2048;

/// How a message body is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningMethod {
    /// HMAC-SHA256 with the node's 32-byte session key.
    HmacSha256,
    /// The original's RSA scheme: PKCS#1 v1.5 private-encrypt of base64(SHA-1(body)).
    Rsa2048Sha1,
}

impl SigningMethod {
    /// The name in the header frame.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningMethod::HmacSha256 => "hmac_sha256",
            SigningMethod::Rsa2048Sha1 => "rsa2048_sha1",
        }
    }
}

/// A parsed header frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// `1.0` or `2.0`.
    pub version: HeaderVersion,
    /// How the body is signed.
    pub method: SigningMethod,
    /// The base64 signature text, as received.
    pub signature: String,
}

/// The header format version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderVersion {
    /// Legacy; RSA only.
    V1,
    /// Every client since 1.0 and the 2.x/3.x server.
    V2,
}

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Header frame over [`MAX_HEADER_SIZE`].
    #[error("header frame too big")]
    HeaderTooBig,
    /// Body frame over the configured limit.
    #[error("body frame too big")]
    BodyTooBig,
    /// Header not ASCII, or `Version`/`SigningMethod`/`Signature` missing or unknown.
    #[error("bad header frame")]
    BadHeader,
    /// HMAC is only accepted with header version 2.0.
    #[error("hmac_sha256 needs header version 2.0")]
    HmacNeedsV2,
    /// The signature does not match the body.
    #[error("bad signature")]
    BadSignature,
}

impl Header {
    /// Parses a header frame: `;`-separated `Key:Value` clauses, unknown keys ignored,
    /// `SignedChecksum` accepted as the legacy name of `Signature`.
    ///
    /// # Errors
    /// [`FrameError::HeaderTooBig`], [`FrameError::BadHeader`], [`FrameError::HmacNeedsV2`].
    pub fn parse(frame: &[u8]) -> Result<Header, FrameError> {
        if frame.len() > MAX_HEADER_SIZE {
            return Err(FrameError::HeaderTooBig);
        }
        let text = std::str::from_utf8(frame).map_err(|_| FrameError::BadHeader)?;
        let (mut version, mut method, mut signature) = (None, None, None);
        for clause in text.split(';') {
            let Some((k, v)) = clause.split_once(':') else {
                continue;
            };
            match k {
                "Version" => version = Some(v),
                "SigningMethod" => method = Some(v),
                "Signature" | "SignedChecksum" => signature = Some(v),
                _ => {}
            }
        }
        let version = match version {
            Some("1.0") => HeaderVersion::V1,
            Some("2.0") => HeaderVersion::V2,
            _ => return Err(FrameError::BadHeader),
        };
        let method = match method {
            Some("hmac_sha256") => SigningMethod::HmacSha256,
            Some("rsa2048_sha1") => SigningMethod::Rsa2048Sha1,
            _ => return Err(FrameError::BadHeader),
        };
        if method == SigningMethod::HmacSha256 && version != HeaderVersion::V2 {
            return Err(FrameError::HmacNeedsV2);
        }
        let signature = signature.ok_or(FrameError::BadHeader)?.to_owned();
        Ok(Header {
            version,
            method,
            signature,
        })
    }

    /// The header frame text, in the order both sides emit it.
    pub fn render(&self) -> String {
        let v = match self.version {
            HeaderVersion::V1 => "1.0",
            HeaderVersion::V2 => "2.0",
        };
        format!(
            "Version:{v};SigningMethod:{};Signature:{}",
            self.method.as_str(),
            self.signature
        )
    }
}

/// `base64(HMAC-SHA256(key, body))`: canonical padded base64, no whitespace.
pub fn hmac_signature(key: &[u8; 32], body: &[u8]) -> String {
    // RustCrypto rather than OpenSSL: OpenSSL 3 looks the algorithm up in its provider
    // tables for every new HMAC context, which cost more than the hash of a heartbeat.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any size");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The original's RSA signature of a body (zmq.md §2.3, "rsa2048_sha1").
///
/// # Errors
/// When the key is not RSA or too small.
pub fn rsa_signature(
    key: &PKey<Private>,
    body: &[u8],
) -> Result<String, openssl::error::ErrorStack> {
    let digest_text = STANDARD.encode(hash(MessageDigest::sha1(), body)?);
    let rsa = key.rsa()?;
    let mut out = vec![0; rsa.size() as usize];
    let n = rsa.private_encrypt(digest_text.as_bytes(), &mut out, Padding::PKCS1)?;
    out.truncate(n);
    Ok(STANDARD.encode(out))
}

/// The key a received message is checked with.
#[derive(Clone, Copy)]
pub enum VerifyKey<'a> {
    /// A node's session key.
    Hmac(&'a [u8; 32]),
    /// The server's public key (heartbeats, as a client checks them).
    Rsa(&'a PKey<Public>),
}

/// Checks a received message: sizes, header, then the signature over the exact body
/// bytes. HMAC compares the base64 texts in constant time (lengths first), as the
/// original server does.
///
/// # Errors
/// The first check that fails.
pub fn verify(
    header: &[u8],
    body: &[u8],
    max_body: usize,
    key: VerifyKey<'_>,
) -> Result<Header, FrameError> {
    if body.len() > max_body {
        return Err(FrameError::BodyTooBig);
    }
    let h = Header::parse(header)?;
    let ok = match (h.method, key) {
        (SigningMethod::HmacSha256, VerifyKey::Hmac(k)) => {
            let expected = hmac_signature(k, body);
            expected.len() == h.signature.len()
                && openssl::memcmp::eq(expected.as_bytes(), h.signature.as_bytes())
        }
        (SigningMethod::Rsa2048Sha1, VerifyKey::Rsa(k)) => rsa_verify(k, body, &h.signature),
        _ => false,
    };
    if ok {
        Ok(h)
    } else {
        Err(FrameError::BadSignature)
    }
}

fn rsa_verify(key: &PKey<Public>, body: &[u8], signature: &str) -> bool {
    let (Ok(sig), Ok(rsa), Ok(digest)) = (
        STANDARD.decode(signature),
        key.rsa(),
        hash(MessageDigest::sha1(), body),
    ) else {
        return false;
    };
    if sig.len() != rsa.size() as usize {
        return false;
    }
    let expected = STANDARD.encode(digest);
    let mut out = vec![0; rsa.size() as usize];
    match rsa.public_decrypt(&sig, &mut out, Padding::PKCS1) {
        Ok(n) => n == expected.len() && openssl::memcmp::eq(&out[..n], expected.as_bytes()),
        Err(_) => false,
    }
}

/// Signs `body` and returns the header frame to send with it.
///
/// # Errors
/// RSA signing failure.
pub fn sign(body: &[u8], key: SignKey<'_>) -> Result<String, openssl::error::ErrorStack> {
    let (method, signature) = match key {
        SignKey::Hmac(k) => (SigningMethod::HmacSha256, hmac_signature(k, body)),
        SignKey::Rsa(k) => (SigningMethod::Rsa2048Sha1, rsa_signature(k, body)?),
    };
    Ok(Header {
        version: HeaderVersion::V2,
        method,
        signature,
    }
    .render())
}

/// The key a message is signed with.
#[derive(Clone, Copy)]
pub enum SignKey<'a> {
    /// A node's session key (every command and every client message).
    Hmac(&'a [u8; 32]),
    /// The server's private key (heartbeats).
    Rsa(&'a PKey<Private>),
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8; 32] = b"01234567890123456789012345678901";
    const BODY: &[u8] = br#"{"type":"config","host":"localhost","lifetime":3600}"#;

    #[test]
    fn hmac_matches_the_spec_vector() {
        assert_eq!(
            hmac_signature(KEY, BODY),
            "3OX7zAxVgH8Z8YGWL6ZYBN4n+AIPGNTqbHTB0Og7GMI="
        );
        let header = sign(BODY, SignKey::Hmac(KEY)).unwrap();
        assert_eq!(
            header,
            "Version:2.0;SigningMethod:hmac_sha256;Signature:3OX7zAxVgH8Z8YGWL6ZYBN4n+AIPGNTqbHTB0Og7GMI="
        );
        assert!(verify(header.as_bytes(), BODY, 65536, VerifyKey::Hmac(KEY)).is_ok());
    }

    #[test]
    fn hmac_rejects_tampering_and_wrong_keys() {
        let header = sign(BODY, SignKey::Hmac(KEY)).unwrap();
        assert_eq!(
            verify(header.as_bytes(), b"{}", 65536, VerifyKey::Hmac(KEY)),
            Err(FrameError::BadSignature)
        );
        assert_eq!(
            verify(header.as_bytes(), BODY, 65536, VerifyKey::Hmac(&[0; 32])),
            Err(FrameError::BadSignature)
        );
        assert_eq!(
            verify(header.as_bytes(), BODY, 10, VerifyKey::Hmac(KEY)),
            Err(FrameError::BodyTooBig)
        );
        let v1 = header.replace("Version:2.0", "Version:1.0");
        assert_eq!(
            verify(v1.as_bytes(), BODY, 65536, VerifyKey::Hmac(KEY)),
            Err(FrameError::HmacNeedsV2)
        );
    }

    #[test]
    fn header_parsing() {
        assert_eq!(Header::parse(&[b'x'; 2049]), Err(FrameError::HeaderTooBig));
        assert_eq!(Header::parse(b"garbage"), Err(FrameError::BadHeader));
        assert_eq!(Header::parse(&[0xff, 0xfe]), Err(FrameError::BadHeader));
        assert_eq!(
            Header::parse(b"Version:3.0;SigningMethod:hmac_sha256;Signature:x"),
            Err(FrameError::BadHeader)
        );
        assert_eq!(
            Header::parse(b"SigningMethod:hmac_sha256;Signature:x"),
            Err(FrameError::BadHeader)
        );
        let legacy =
            Header::parse(b"Version:2.0;SigningMethod:rsa2048_sha1;SignedChecksum:abc;Extra:1")
                .unwrap();
        assert_eq!(legacy.signature, "abc");
        assert_eq!(legacy.method, SigningMethod::Rsa2048Sha1);
    }

    #[test]
    fn rsa_signature_is_raw_pkcs1_of_the_base64_sha1() {
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let private = PKey::from_rsa(rsa.clone()).unwrap();
        let public = PKey::public_key_from_pem(&private.public_key_to_pem().unwrap()).unwrap();
        let header = sign(BODY, SignKey::Rsa(&private)).unwrap();
        let h = verify(header.as_bytes(), BODY, 65536, VerifyKey::Rsa(&public)).unwrap();
        assert_eq!(h.signature.len(), 344);
        // What `openssl rsautl -verify` recovers: the 28-character base64 SHA-1 text.
        let sig = STANDARD.decode(&h.signature).unwrap();
        let mut out = vec![0; 256];
        let n = rsa.public_decrypt(&sig, &mut out, Padding::PKCS1).unwrap();
        let expected = STANDARD.encode(hash(MessageDigest::sha1(), BODY).unwrap());
        assert_eq!(&out[..n], expected.as_bytes());
        assert_eq!(
            verify(header.as_bytes(), b"{}", 65536, VerifyKey::Rsa(&public)),
            Err(FrameError::BadSignature)
        );
        // An RSA header cannot pass as HMAC, nor the reverse.
        assert_eq!(
            verify(header.as_bytes(), BODY, 65536, VerifyKey::Hmac(KEY)),
            Err(FrameError::BadSignature)
        );
    }
}
