//! Reading the three on-disk shapes of a secrets file (ops.md §3.5): veil v2 (encrypted),
//! veil v1 (plaintext credentials) and the legacy flat `{"group": {"name": "value"}}`.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use openssl::symm::{Cipher, decrypt};
use serde_json::{Map, Value};

use super::hasher::{Hasher, parse_hasher};
use super::{
    CIPHER_V1, CIPHER_V2, CREDENTIAL_TYPE, Credential, Entry, Error, FILE_TYPE, Format,
    SecretsFile, crypto_error, random_cipher,
};

/// A veil file: `{"veil": {"type", "version", "hasher", "cipher", "credentials"}}`.
pub(super) fn parse_veil(path: &Path, mut veil: Map<String, Value>) -> Result<SecretsFile, Error> {
    let invalid = |reason: String| Error::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let crypto = crypto_error(path);
    match veil.get("type") {
        Some(Value::String(t)) if t == FILE_TYPE => {}
        other => {
            return Err(invalid(format!(
                "veil.type is {}, expected {FILE_TYPE:?}",
                other.map_or("missing".to_owned(), Value::to_string)
            )));
        }
    }
    let hasher = parse_hasher(veil.remove("hasher")).map_err(&invalid)?;
    let hasher = match hasher {
        Some(h) => h,
        None => Hasher::generate().map_err(&crypto)?,
    };
    let cipher = parse_cipher(veil.remove("cipher")).map_err(&invalid)?;
    let (fresh_key, fresh_iv) = random_cipher().map_err(&crypto)?;
    let credentials = veil.remove("credentials").unwrap_or(Value::Null);
    let (format, key, iv, plaintext) = match cipher {
        CipherSpec::V1 => {
            let creds = match credentials {
                Value::Null => Map::new(),
                Value::Object(m) => m,
                _ => {
                    return Err(invalid(
                        "credentials are not a JSON object, and the file has no cipher".into(),
                    ));
                }
            };
            (Format::V1, fresh_key, fresh_iv, creds)
        }
        CipherSpec::V2 { key, iv } => {
            let key = key.unwrap_or(fresh_key);
            let iv = iv.unwrap_or(fresh_iv);
            let creds = match credentials {
                Value::Null => Map::new(),
                Value::String(text) => decrypt_credentials(&text, &key, &iv).map_err(&invalid)?,
                _ => return Err(invalid("veil.credentials is not a string".into())),
            };
            (Format::V2, key, iv, creds)
        }
    };
    Ok(SecretsFile {
        path: path.to_path_buf(),
        format,
        hasher,
        key,
        iv,
        entries: expand_credentials(plaintext).map_err(&invalid)?,
    })
}

/// `{"group": {"name": "plaintext"}}`. Each value becomes a credential at version 0, not frozen.
/// veil leaves `group` unset on these; we record the group they sit in, which is what a
/// credential added to that group has.
pub(super) fn parse_legacy(path: &Path, doc: Map<String, Value>) -> Result<SecretsFile, Error> {
    let mut file = SecretsFile::new(path)?;
    file.format = Format::LegacyFlat;
    for (top, entry) in doc {
        match entry {
            Value::Object(members) => {
                let mut group = Vec::new();
                for (name, value) in members {
                    let Value::String(value) = value else {
                        return Err(Error::Invalid {
                            path: path.to_path_buf(),
                            reason: format!("{top}.{name} is not a string"),
                        });
                    };
                    let credential = Credential {
                        name: name.clone(),
                        group: Some(top.clone()),
                        value,
                        version: 0,
                        frozen: false,
                    };
                    group.push((name, credential));
                }
                file.entries.push((top, Entry::Group(group)));
            }
            Value::String(value) => {
                let credential = Credential {
                    name: top.clone(),
                    group: None,
                    value,
                    version: 0,
                    frozen: false,
                };
                file.entries.push((top, Entry::Single(credential)));
            }
            _ => {
                return Err(Error::Invalid {
                    path: path.to_path_buf(),
                    reason: format!("{top} is neither a group of secrets nor a secret"),
                });
            }
        }
    }
    Ok(file)
}

enum CipherSpec {
    /// Plaintext credentials.
    V1,
    /// AES-256-CBC; a missing key or IV is generated, as veil does.
    V2 {
        key: Option<[u8; 32]>,
        iv: Option<[u8; 16]>,
    },
}

fn parse_cipher(value: Option<Value>) -> Result<CipherSpec, String> {
    let map = match value {
        None | Some(Value::Null) => return Ok(CipherSpec::V1),
        Some(Value::Object(m)) if m.is_empty() => return Ok(CipherSpec::V1),
        Some(Value::Object(m)) => m,
        Some(_) => return Err("veil.cipher is not an object".into()),
    };
    match map.get("type").and_then(Value::as_str) {
        Some(CIPHER_V1 | "V1") => Ok(CipherSpec::V1),
        Some(CIPHER_V2 | "V2") => Ok(CipherSpec::V2 {
            key: decode_fixed::<32>(&map, "key")?,
            iv: decode_fixed::<16>(&map, "iv")?,
        }),
        Some(other) => Err(format!("veil.cipher.type {other:?} is not a known cipher")),
        None => Err("veil.cipher has no type".into()),
    }
}

/// A strict base64 field that must decode to exactly `N` bytes.
fn decode_fixed<const N: usize>(
    map: &Map<String, Value>,
    field: &str,
) -> Result<Option<[u8; N]>, String> {
    let text = match map.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s,
        Some(_) => return Err(format!("veil.cipher.{field} is not a string")),
    };
    let bytes = BASE64
        .decode(text)
        .map_err(|e| format!("veil.cipher.{field} is not base64: {e}"))?;
    let len = bytes.len();
    bytes
        .try_into()
        .map(Some)
        .map_err(|_| format!("veil.cipher.{field} is {len} bytes, expected {N}"))
}

fn decrypt_credentials(
    text: &str,
    key: &[u8; 32],
    iv: &[u8; 16],
) -> Result<Map<String, Value>, String> {
    let ciphertext = BASE64
        .decode(text)
        .map_err(|e| format!("veil.credentials is not base64: {e}"))?;
    let plaintext = decrypt(Cipher::aes_256_cbc(), key, Some(iv), &ciphertext).map_err(|_| {
        "veil.credentials does not decrypt with the file's cipher key and IV".to_owned()
    })?;
    match serde_json::from_slice(&plaintext) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the decrypted credentials are not a JSON object".into()),
        Err(e) => Err(format!("the decrypted credentials are not JSON: {e}")),
    }
}

/// The credentials object: a top-level entry whose `type` is `Veil::Credential` is an ungrouped
/// credential; any other object is a group of credentials.
fn expand_credentials(creds: Map<String, Value>) -> Result<Vec<(String, Entry)>, String> {
    let mut entries = Vec::with_capacity(creds.len());
    for (top, entry) in creds {
        let Value::Object(map) = entry else {
            return Err(format!("credentials.{top} is not an object"));
        };
        if map.get("type").and_then(Value::as_str) == Some(CREDENTIAL_TYPE) {
            let credential = parse_credential(&top, None, map)?;
            entries.push((top, Entry::Single(credential)));
        } else {
            let mut members = Vec::with_capacity(map.len());
            for (name, object) in map {
                let Value::Object(object) = object else {
                    return Err(format!("credentials.{top}.{name} is not an object"));
                };
                let credential = parse_credential(&name, Some(&top), object)?;
                members.push((name, credential));
            }
            entries.push((top, Entry::Group(members)));
        }
    }
    Ok(entries)
}

/// One credential object. `value` is required; `length` cuts it (veil's `value[0...length]`);
/// `version` defaults to 0, `frozen` to false, `name` to its key, `group` to the group it sits in.
fn parse_credential(
    key: &str,
    group: Option<&str>,
    map: Map<String, Value>,
) -> Result<Credential, String> {
    let at = match group {
        Some(g) => format!("credentials.{g}.{key}"),
        None => format!("credentials.{key}"),
    };
    let mut value = match map.get("value") {
        Some(Value::String(v)) => v.clone(),
        Some(_) => return Err(format!("{at}.value is not a string")),
        None => return Err(format!("{at} has no value")),
    };
    match map.get("length") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let length = v
                .as_u64()
                .ok_or_else(|| format!("{at}.length is not a non-negative integer"))?;
            if let Some((cut, _)) = value.char_indices().nth(length as usize) {
                value.truncate(cut);
            }
        }
    }
    let version = match map.get("version") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("{at}.version is not a non-negative integer"))?,
    };
    let frozen = match map.get("frozen") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(format!("{at}.frozen is not a boolean")),
    };
    let name = match map.get("name") {
        Some(Value::String(n)) => n.clone(),
        _ => key.to_owned(),
    };
    let group = match map.get("group") {
        Some(Value::String(g)) => Some(g.clone()),
        Some(Value::Null) => None,
        _ => group.map(str::to_owned),
    };
    Ok(Credential {
        name,
        group,
        value,
        version,
        frozen,
    })
}
