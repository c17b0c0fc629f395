//! Reading RSA keys in the encodings Chef Server hands out (http.md §2.5).

use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::x509::X509;

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is none of the accepted PEM encodings, or holds no RSA key.
    #[error("not an RSA key in a PEM encoding this server reads")]
    Unreadable(#[source] openssl::error::ErrorStack),
}

/// Reads a public key from `-----BEGIN PUBLIC KEY-----` (SPKI),
/// `-----BEGIN RSA PUBLIC KEY-----` (PKCS#1) or `-----BEGIN CERTIFICATE-----` (X.509).
///
/// # Errors
/// When the text is none of these or does not hold an RSA key.
pub fn public_key_from_pem(pem: &str) -> Result<PKey<Public>, KeyError> {
    let bytes = pem.as_bytes();
    let key = if pem.contains("-----BEGIN CERTIFICATE-----") {
        X509::from_pem(bytes).and_then(|c| c.public_key())
    } else if pem.contains("-----BEGIN RSA PUBLIC KEY-----") {
        Rsa::public_key_from_pem_pkcs1(bytes).and_then(PKey::from_rsa)
    } else {
        // The RSA-specific reader first: OpenSSL 3's generic decoder costs ~300 µs a key
        // against ~4 µs, and the server reads a key for every signed request it cannot
        // serve from its cache (all of them in a reconnect storm after a restart).
        Rsa::public_key_from_pem(bytes)
            .and_then(PKey::from_rsa)
            .or_else(|_| PKey::public_key_from_pem(bytes))
    }
    .map_err(KeyError::Unreadable)?;
    key.rsa().map_err(KeyError::Unreadable)?;
    Ok(key)
}

/// Reads an RSA private key (PKCS#1 or PKCS#8 PEM), as `knife` and the client keep them.
///
/// # Errors
/// When the text is not a PEM RSA private key.
pub fn private_key_from_pem(pem: &str) -> Result<PKey<Private>, KeyError> {
    let key = PKey::private_key_from_pem(pem.as_bytes()).map_err(KeyError::Unreadable)?;
    key.rsa().map_err(KeyError::Unreadable)?;
    Ok(key)
}

/// The SPKI PEM of a key's public half, as Chef Server and the config endpoint show it.
pub fn public_pem(key: &PKey<Private>) -> String {
    // Serialising a key OpenSSL already holds cannot fail.
    let pem = key.public_key_to_pem().expect("public key to PEM");
    String::from_utf8(pem).expect("PEM is ASCII")
}
