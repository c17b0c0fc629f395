//! Chef Server's consolidated credentials file, `/etc/opscode/private-chef-secrets.json`
//! ("veil", chef/chef_secrets 0.3.14; ops.md §3.5).
//!
//! [`SecretsFile`] reads every shape the spec lists (legacy flat, veil v1, veil v2 with
//! AES-256-CBC), looks credentials up, adds, sets and removes them, derives generated passwords
//! with veil's PBKDF2-SHA512 scheme, and saves as veil v2 atomically with mode 0600, keeping the
//! existing owner and the file's own cipher key, IV and hasher. The secrets bootstrap
//! (`crate::secrets`) and the daemon hand-off ([`SecretsFile::pack`], ops.md §3.4) are built on it.
//!
//! The "encryption" is obfuscation: key and IV sit beside the ciphertext (ops.md §3.5).

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use openssl::symm::{Cipher, encrypt};
use serde_json::{Map, Value, json};

use crate::atomic_file::{self, Outcome, Owner};

mod decode;
mod hasher;

pub use hasher::{Digest, Hasher};

/// `veil.type` of a veil file.
const FILE_TYPE: &str = "Veil::CredentialCollection::ChefSecretsFile";
/// `type` of a credential object.
const CREDENTIAL_TYPE: &str = "Veil::Credential";
const CIPHER_V1: &str = "Veil::Cipher::V1";
const CIPHER_V2: &str = "Veil::Cipher::V2";
const HASHER_PBKDF2: &str = "Veil::Hasher::PBKDF2";
const HASHER_BCRYPT: &str = "Veil::Hasher::BCrypt";
/// veil's `Hasher::DEFAULT_OPTIONS` iterations (the PBKDF2 class alone would say 100 000).
const DEFAULT_ITERATIONS: u32 = 10_000;
/// veil's `add` length when none is given.
pub const DEFAULT_LENGTH: usize = 128;
/// The version every save writes.
const CURRENT_VERSION: u64 = 2;

/// What went wrong with a secrets file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file exists but could not be read.
    #[error("cannot read secrets file {path}: {source}")]
    Read {
        /// The secrets file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not a secrets file in any format we know, or it does not decrypt.
    #[error("{path} is not a valid secrets file: {reason}")]
    Invalid {
        /// The secrets file.
        path: PathBuf,
        /// What is wrong, for a person.
        reason: String,
    },
    /// Saving failed; the file on disk is unchanged.
    #[error("cannot save secrets file: {0}")]
    Write(#[from] atomic_file::Error),
    /// A generated value was asked for, but the file's hasher is one we cannot compute.
    #[error(
        "{path}: cannot generate {key}: the file's hasher is {hasher}, only {HASHER_PBKDF2} is supported"
    )]
    UnsupportedHasher {
        /// The secrets file.
        path: PathBuf,
        /// The credential that needed a value.
        key: CredentialKey,
        /// The hasher's `type`.
        hasher: String,
    },
    /// A credential was added into a group whose name is taken by an ungrouped credential, or
    /// the other way round.
    #[error("{path}: cannot add {key}: the name {taken:?} is already used by a {kind}")]
    NameTaken {
        /// The secrets file.
        path: PathBuf,
        /// The credential being added.
        key: CredentialKey,
        /// The top-level name in the way.
        taken: String,
        /// "group" or "ungrouped credential".
        kind: &'static str,
    },
    /// A secret the daemon needs is not in the file (ops.md §3.4: the service must not start).
    #[error("secret {key} is missing from {path}")]
    Missing {
        /// The secrets file.
        path: PathBuf,
        /// The missing secret.
        key: CredentialKey,
    },
    /// OpenSSL failed (random bytes, encryption, PBKDF2).
    #[error("{path}: OpenSSL: {source}")]
    Crypto {
        /// The secrets file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: openssl::error::ErrorStack,
    },
}

/// Where a credential sits: `group/name`, or an ungrouped `name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CredentialKey {
    /// The group (`push-jobs-server`, `chef-server`, `postgresql`…), `None` when ungrouped.
    pub group: Option<String>,
    /// The credential's name within its group.
    pub name: String,
}

impl CredentialKey {
    /// `group/name`.
    pub fn grouped(group: &str, name: &str) -> Self {
        CredentialKey {
            group: Some(group.to_owned()),
            name: name.to_owned(),
        }
    }

    /// An ungrouped `name`.
    pub fn ungrouped(name: &str) -> Self {
        CredentialKey {
            group: None,
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for CredentialKey {
    /// `group.name` (veil-env-helper's spec form, ops.md §3.4) or `name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            Some(group) => write!(f, "{group}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One credential (veil's `Credential`, ops.md §3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The credential's `name` field.
    pub name: String,
    /// The `group` field. veil derives with it when rotating; `None` for ungrouped ones.
    pub group: Option<String>,
    /// The secret itself.
    pub value: String,
    /// Incremented by each rotation; derivation input.
    pub version: u64,
    /// Frozen credentials are never rotated (keys, operator-supplied values).
    pub frozen: bool,
}

impl Credential {
    /// The `length` veil stores: the value's length in characters.
    pub fn length(&self) -> usize {
        self.value.chars().count()
    }

    fn to_json(&self) -> Value {
        json!({
            "type": CREDENTIAL_TYPE,
            "name": self.name,
            "group": self.group,
            "value": self.value,
            "version": self.version,
            "length": self.length(),
            "frozen": self.frozen,
        })
    }
}

/// Which on-disk shape a file had when loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// No file, or an empty one: a new collection with a fresh hasher and cipher.
    New,
    /// `{"group": {"name": "plaintext"}}`, no `veil` key.
    LegacyFlat,
    /// A veil file with plaintext credentials (no `cipher`, or `Veil::Cipher::V1`).
    V1,
    /// A veil file whose credentials are AES-256-CBC encrypted with its own key and IV.
    V2,
}

/// A top-level entry of the credentials object.
#[derive(Clone, Debug)]
enum Entry {
    /// An ungrouped credential.
    Single(Credential),
    /// A group: credentials by name, in file order.
    Group(Vec<(String, Credential)>),
}

/// The secrets file, loaded.
#[derive(Clone, Debug)]
pub struct SecretsFile {
    path: PathBuf,
    format: Format,
    hasher: Hasher,
    key: [u8; 32],
    iv: [u8; 16],
    /// Top-level entries in file order (veil keeps insertion order; so do we, so that a re-save
    /// of an unchanged collection is byte-identical).
    entries: Vec<(String, Entry)>,
}

/// Where a new credential's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewValue {
    /// This value (keys, migrated passwords, operator-supplied values).
    Given(String),
    /// Derived from the file's hasher at version 0, `length` characters (veil `add(length:)`).
    Derived {
        /// Characters to keep (push uses 50; veil's default is [`DEFAULT_LENGTH`]).
        length: usize,
    },
}

impl SecretsFile {
    /// Loads `path`. A missing or empty file is a new, empty collection with a fresh hasher and
    /// cipher, created on [`SecretsFile::save`] (veil's behaviour, ops.md §3.3 step 1).
    ///
    /// # Errors
    /// [`Error::Read`] if the file cannot be read, [`Error::Invalid`] if it is not a secrets file
    /// in any known format or does not decrypt.
    pub fn load(path: &Path) -> Result<SecretsFile, Error> {
        match fs::read(path) {
            Ok(bytes) => SecretsFile::parse(path, &bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => SecretsFile::new(path),
            Err(source) => Err(Error::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// A new, empty collection that will be saved at `path`.
    ///
    /// # Errors
    /// [`Error::Crypto`] if no random bytes could be had.
    pub fn new(path: &Path) -> Result<SecretsFile, Error> {
        let crypto = crypto_error(path);
        let (key, iv) = random_cipher().map_err(&crypto)?;
        Ok(SecretsFile {
            path: path.to_path_buf(),
            format: Format::New,
            hasher: Hasher::generate().map_err(&crypto)?,
            key,
            iv,
            entries: Vec::new(),
        })
    }

    /// Parses the contents of a secrets file; `path` is where it came from and where
    /// [`SecretsFile::save`] will write.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `path` and what is wrong.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<SecretsFile, Error> {
        if bytes.is_empty() {
            return SecretsFile::new(path);
        }
        let invalid = |reason: String| Error::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let Value::Object(mut doc) = doc else {
            return Err(invalid("the top level is not a JSON object".into()));
        };
        match doc.remove("veil") {
            Some(Value::Object(veil)) => decode::parse_veil(path, veil),
            Some(_) => Err(invalid("\"veil\" is not an object".into())),
            None => decode::parse_legacy(path, doc),
        }
    }

    /// The file this collection is saved to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shape the file had when loaded.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The hasher used for generated values.
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// The AES-256 key and IV a save encrypts with: the file's own, or fresh ones if it had none.
    pub fn cipher_key_iv(&self) -> (&[u8; 32], &[u8; 16]) {
        (&self.key, &self.iv)
    }

    /// The value of `group/name`.
    pub fn get(&self, group: &str, name: &str) -> Option<&str> {
        self.credential(&CredentialKey::grouped(group, name))
            .map(|c| c.value.as_str())
    }

    /// The credential at `key`.
    pub fn credential(&self, key: &CredentialKey) -> Option<&Credential> {
        let entry = self.entry(key.group.as_deref().unwrap_or(&key.name))?;
        match (entry, &key.group) {
            (Entry::Single(c), None) => Some(c),
            (Entry::Group(members), Some(_)) => {
                members.iter().find(|(n, _)| *n == key.name).map(|(_, c)| c)
            }
            _ => None,
        }
    }

    /// Whether `key` exists.
    pub fn contains(&self, key: &CredentialKey) -> bool {
        self.credential(key).is_some()
    }

    /// Every credential, in file order, with where it sits.
    pub fn credentials(&self) -> Vec<(CredentialKey, &Credential)> {
        let mut out = Vec::new();
        for (top, entry) in &self.entries {
            match entry {
                Entry::Single(c) => out.push((CredentialKey::ungrouped(top), c)),
                Entry::Group(members) => {
                    for (name, c) in members {
                        out.push((CredentialKey::grouped(top, name), c));
                    }
                }
            }
        }
        out
    }

    /// veil's `add` without `force`: stores `key` unless it already exists, in which case nothing
    /// changes (existing values win; keys are never regenerated). Returns whether it was added.
    ///
    /// # Errors
    /// [`Error::UnsupportedHasher`] when a derived value is needed from a BCrypt hasher,
    /// [`Error::NameTaken`] when a group and an ungrouped credential would share a name,
    /// [`Error::Crypto`] if PBKDF2 fails.
    pub fn add(
        &mut self,
        key: &CredentialKey,
        value: NewValue,
        frozen: bool,
    ) -> Result<bool, Error> {
        if self.contains(key) {
            return Ok(false);
        }
        self.check_name_free(key)?;
        let value = self.new_value(key, value)?;
        self.insert(key, value, frozen);
        Ok(true)
    }

    /// veil's `add` with `force` (what `chef-server-ctl set-secret` does): stores `value` at
    /// `key`, replacing any existing credential, at version 0.
    ///
    /// # Errors
    /// As [`SecretsFile::add`].
    pub fn set(&mut self, key: &CredentialKey, value: NewValue, frozen: bool) -> Result<(), Error> {
        self.check_name_free(key)?;
        let value = self.new_value(key, value)?;
        self.insert(key, value, frozen);
        Ok(())
    }

    /// Removes `key`, returning it. An emptied group stays, as in veil.
    pub fn remove(&mut self, key: &CredentialKey) -> Option<Credential> {
        let top = key.group.as_deref().unwrap_or(&key.name);
        let index = self.entries.iter().position(|(n, _)| n == top)?;
        match (&mut self.entries[index].1, &key.group) {
            (Entry::Single(_), None) => match self.entries.remove(index).1 {
                Entry::Single(c) => Some(c),
                Entry::Group(_) => unreachable!("matched as Single just above"),
            },
            (Entry::Group(members), Some(_)) => {
                let at = members.iter().position(|(n, _)| *n == key.name)?;
                Some(members.remove(at).1)
            }
            _ => None,
        }
    }

    /// The value veil would generate for `key` at `version`, `length` characters long.
    ///
    /// # Errors
    /// [`Error::UnsupportedHasher`] for a BCrypt hasher, [`Error::Crypto`] if PBKDF2 fails.
    pub fn derive(
        &self,
        key: &CredentialKey,
        version: u64,
        length: usize,
    ) -> Result<String, Error> {
        match self
            .hasher
            .derive(key.group.as_deref(), &key.name, version, length)
        {
            Some(result) => result.map_err(crypto_error(&self.path)),
            None => Err(Error::UnsupportedHasher {
                path: self.path.clone(),
                key: key.clone(),
                hasher: self.hasher.kind().to_owned(),
            }),
        }
    }

    /// The `CHEF_SECRETS_DATA` JSON for `keys` (veil-env-helper `--pack`, ops.md §3.4):
    /// `{"group": {"name": value}}`, an ungrouped credential as `"name": value`.
    ///
    /// # Errors
    /// [`Error::Missing`] for the first key not in the file.
    pub fn pack(&self, keys: &[CredentialKey]) -> Result<String, Error> {
        let mut out = Map::new();
        for key in keys {
            let credential = self.credential(key).ok_or_else(|| Error::Missing {
                path: self.path.clone(),
                key: key.clone(),
            })?;
            let value = Value::String(credential.value.clone());
            match &key.group {
                None => {
                    out.insert(key.name.clone(), value);
                }
                Some(group) => {
                    let slot = out
                        .entry(group.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(members) = slot {
                        members.insert(key.name.clone(), value);
                    }
                }
            }
        }
        Ok(Value::Object(out).to_string())
    }

    /// The file as veil v2 would write it: pretty JSON and a newline, credentials encrypted with
    /// the collection's key and IV (so an unchanged collection always gives the same bytes).
    ///
    /// # Errors
    /// [`Error::Crypto`] if encryption fails.
    pub fn to_v2_json(&self) -> Result<String, Error> {
        let plaintext = Value::Object(self.credentials_json()).to_string();
        let ciphertext = encrypt(
            Cipher::aes_256_cbc(),
            &self.key,
            Some(&self.iv),
            plaintext.as_bytes(),
        )
        .map_err(crypto_error(&self.path))?;
        let doc = json!({
            "veil": {
                "type": FILE_TYPE,
                "version": CURRENT_VERSION,
                "hasher": self.hasher.to_json(),
                "cipher": {
                    "type": CIPHER_V2,
                    "key": BASE64.encode(self.key),
                    "iv": BASE64.encode(self.iv),
                },
                "credentials": BASE64.encode(ciphertext),
            }
        });
        let mut text = serde_json::to_string_pretty(&doc).expect("a JSON value always serializes");
        text.push('\n');
        Ok(text)
    }

    /// Writes the collection to its path as veil v2: atomically (temporary file in the same
    /// directory, then rename), mode 0600, keeping the current file's owner. Returns whether the
    /// file changed; an unchanged collection is not rewritten.
    ///
    /// # Errors
    /// [`Error::Write`] (the file on disk is then untouched), [`Error::Crypto`].
    pub fn save(&self) -> Result<bool, Error> {
        let text = self.to_v2_json()?;
        let outcome = atomic_file::write(&self.path, text.as_bytes(), 0o600, Owner::KeepExisting)?;
        Ok(outcome == Outcome::Written)
    }

    fn entry(&self, top: &str) -> Option<&Entry> {
        self.entries.iter().find(|(n, _)| n == top).map(|(_, e)| e)
    }

    fn check_name_free(&self, key: &CredentialKey) -> Result<(), Error> {
        let top = key.group.as_deref().unwrap_or(&key.name);
        let kind = match (self.entry(top), &key.group) {
            (Some(Entry::Single(_)), Some(_)) => "ungrouped credential",
            (Some(Entry::Group(_)), None) => "group",
            _ => return Ok(()),
        };
        Err(Error::NameTaken {
            path: self.path.clone(),
            key: key.clone(),
            taken: top.to_owned(),
            kind,
        })
    }

    fn new_value(&self, key: &CredentialKey, value: NewValue) -> Result<String, Error> {
        match value {
            NewValue::Given(v) => Ok(v),
            NewValue::Derived { length } => self.derive(key, 0, length),
        }
    }

    /// Stores a credential; the caller has checked that the name is free for its kind.
    fn insert(&mut self, key: &CredentialKey, value: String, frozen: bool) {
        let credential = Credential {
            name: key.name.clone(),
            group: key.group.clone(),
            value,
            version: 0,
            frozen,
        };
        match &key.group {
            None => match self.entries.iter_mut().find(|(n, _)| *n == key.name) {
                Some((_, slot)) => *slot = Entry::Single(credential),
                None => self
                    .entries
                    .push((key.name.clone(), Entry::Single(credential))),
            },
            Some(group) => {
                let index = match self.entries.iter().position(|(n, _)| n == group) {
                    Some(i) => i,
                    None => {
                        self.entries.push((group.clone(), Entry::Group(Vec::new())));
                        self.entries.len() - 1
                    }
                };
                if let Entry::Group(members) = &mut self.entries[index].1 {
                    match members.iter_mut().find(|(n, _)| *n == key.name) {
                        Some((_, slot)) => *slot = credential,
                        None => members.push((key.name.clone(), credential)),
                    }
                }
            }
        }
    }

    fn credentials_json(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for (top, entry) in &self.entries {
            let value = match entry {
                Entry::Single(c) => c.to_json(),
                Entry::Group(members) => Value::Object(
                    members
                        .iter()
                        .map(|(name, c)| (name.clone(), c.to_json()))
                        .collect(),
                ),
            };
            out.insert(top.clone(), value);
        }
        out
    }
}

fn random_cipher() -> Result<([u8; 32], [u8; 16]), openssl::error::ErrorStack> {
    let mut key = [0u8; 32];
    let mut iv = [0u8; 16];
    openssl::rand::rand_bytes(&mut key)?;
    openssl::rand::rand_bytes(&mut iv)?;
    Ok((key, iv))
}

fn crypto_error(path: &Path) -> impl Fn(openssl::error::ErrorStack) -> Error + '_ {
    move |source| Error::Crypto {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
#[path = "veil_tests.rs"]
mod tests;
