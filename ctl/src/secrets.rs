//! The secrets bootstrap every reconfigure runs (ops.md §3.3), on Chef Server's consolidated
//! secrets file through [`crate::veil`]: migrate the ≤ 2.1 secrets JSON and pem files (then
//! delete them), migrate the pivotal key, generate `sql_password` / `sql_ro_password`, and make
//! the RSA-2048 key pair. Existing entries always win; keys are never regenerated.
//!
//! The daemon gets these through a pipe named by `CHEF_SECRETS_FD` ([`daemon_secrets`],
//! `crate::launch`, ops.md §3.4).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use openssl::pkey::PKey;
use openssl::rsa::Rsa;

use crate::paths::Paths;
use crate::veil::{self, CredentialKey, NewValue, SecretsFile};

/// The push group in the secrets file (ops.md §0).
pub const GROUP: &str = "push-jobs-server";
/// Length of generated SQL passwords (veil `add(length: 50)`, ops.md §3.1).
pub const SQL_PASSWORD_LENGTH: usize = 50;
/// RSA modulus size of the push key pair (ops.md §3.1).
pub const RSA_BITS: u32 = 2048;

/// The bootstrap could not finish. Files are left as they were at the failing step: the legacy
/// files are only deleted after their contents were saved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The secrets file, or the legacy secrets JSON, could not be read, parsed or saved.
    #[error(transparent)]
    Veil(#[from] veil::Error),
    /// A legacy pem file or the pivotal key could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A migrated legacy file could not be deleted.
    #[error("cannot delete {path}: {source}")]
    Remove {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The stored private key is not an RSA private key.
    #[error("{key} in {path} is not an RSA private key: {source}")]
    BadKey {
        /// The secrets file.
        path: PathBuf,
        /// The credential.
        key: CredentialKey,
        /// OpenSSL's reason.
        #[source]
        source: openssl::error::ErrorStack,
    },
    /// Key generation or PEM encoding failed.
    #[error("generating the push key pair: {0}")]
    Crypto(#[source] openssl::error::ErrorStack),
}

/// What happened to the pivotal key (ops.md §3.3 step 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pivotal {
    /// `chef-server/superuser_key` was already stored.
    Stored,
    /// It was taken from `/etc/opscode/pivotal.pem`.
    Migrated,
    /// Neither in the store nor on disk. The original logs an error and carries on, leaving a
    /// service that cannot start; `reconfigure` stops with an error when the daemon runs on
    /// this host.
    Missing,
}

/// What the bootstrap did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The ≤ 2.1 secrets JSON was migrated.
    pub migrated_legacy: bool,
    /// Legacy files deleted after migration.
    pub removed: Vec<PathBuf>,
    /// The pivotal key.
    pub pivotal: Pivotal,
    /// Credentials added by this run, in order.
    pub added: Vec<CredentialKey>,
    /// Whether the secrets file was written (false when nothing changed).
    pub saved: bool,
}

/// The secrets the daemon is started with (the original's run script: `veil-env-helper --pack
/// -s push-jobs-server.pushy_priv_key -s push-jobs-server.pushy_pub_key
/// -s push-jobs-server.sql_password -s chef-server.superuser_key`, ops.md §3.4).
pub fn daemon_secrets() -> Vec<CredentialKey> {
    vec![
        CredentialKey::grouped(GROUP, "pushy_priv_key"),
        CredentialKey::grouped(GROUP, "pushy_pub_key"),
        CredentialKey::grouped(GROUP, "sql_password"),
        CredentialKey::grouped("chef-server", "superuser_key"),
    ]
}

/// Runs ops.md §3.3 on the secrets file under `paths`, in the original's order.
///
/// # Errors
/// [`Error`]; nothing is deleted unless its contents were saved first.
pub fn bootstrap(paths: &Paths) -> Result<Report, Error> {
    let mut store = SecretsFile::load(&paths.chef_secrets_file())?;
    let mut report = Report {
        migrated_legacy: false,
        removed: Vec::new(),
        pivotal: Pivotal::Missing,
        added: Vec::new(),
        saved: false,
    };

    // 2. Legacy migration, only if the ≤ 2.1 secrets JSON exists.
    let legacy = paths.legacy_secrets_json();
    if legacy.exists() {
        let old = SecretsFile::load(&legacy)?;
        for (key, credential) in old.credentials() {
            // The old group is flattened away; existing entries win.
            let target = CredentialKey::grouped(GROUP, &key.name);
            add(
                &mut store,
                &mut report,
                &target,
                NewValue::Given(credential.value.clone()),
                false,
            )?;
        }
        for (path, name) in [
            (paths.legacy_priv_pem(), "pushy_priv_key"),
            (paths.legacy_pub_pem(), "pushy_pub_key"),
        ] {
            if let Some(pem) = read_if_present(&path)? {
                add(
                    &mut store,
                    &mut report,
                    &CredentialKey::grouped(GROUP, name),
                    NewValue::Given(pem),
                    true,
                )?;
            }
        }
        report.saved |= store.save()?;
        for path in [paths.legacy_priv_pem(), paths.legacy_pub_pem(), legacy] {
            match fs::remove_file(&path) {
                Ok(()) => report.removed.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::Remove { path, source }),
            }
        }
        report.migrated_legacy = true;
    }

    // 3. The pivotal key.
    let superuser = CredentialKey::grouped("chef-server", "superuser_key");
    report.pivotal = if store.contains(&superuser) {
        Pivotal::Stored
    } else if let Some(pem) = read_if_present(&paths.pivotal_pem())? {
        add(
            &mut store,
            &mut report,
            &superuser,
            NewValue::Given(pem),
            true,
        )?;
        Pivotal::Migrated
    } else {
        // The caller decides: reconfigure refuses to go on when the daemon runs here.
        Pivotal::Missing
    };

    // 4. Passwords, derived from the file's hasher.
    for name in ["sql_password", "sql_ro_password"] {
        let key = CredentialKey::grouped(GROUP, name);
        let value = NewValue::Derived {
            length: SQL_PASSWORD_LENGTH,
        };
        add(&mut store, &mut report, &key, value, false)?;
    }

    // 5. The key pair: the stored private key if any, else a new one; the public key from it.
    let priv_key = CredentialKey::grouped(GROUP, "pushy_priv_key");
    let rsa = match store.credential(&priv_key) {
        Some(c) => PKey::private_key_from_pem(c.value.as_bytes())
            .and_then(|k| k.rsa())
            .map_err(|source| Error::BadKey {
                path: store.path().to_path_buf(),
                key: priv_key.clone(),
                source,
            })?,
        None => Rsa::generate(RSA_BITS).map_err(Error::Crypto)?,
    };
    let priv_pem = pem_text(rsa.private_key_to_pem())?;
    let pub_pem = pem_text(rsa.public_key_to_pem())?;
    add(
        &mut store,
        &mut report,
        &priv_key,
        NewValue::Given(priv_pem),
        true,
    )?;
    let pub_key = CredentialKey::grouped(GROUP, "pushy_pub_key");
    add(
        &mut store,
        &mut report,
        &pub_key,
        NewValue::Given(pub_pem),
        true,
    )?;

    report.saved |= store.save()?;
    Ok(report)
}

/// `store.add`, recording what was added.
fn add(
    store: &mut SecretsFile,
    report: &mut Report,
    key: &CredentialKey,
    value: NewValue,
    frozen: bool,
) -> Result<(), Error> {
    if store.add(key, value, frozen)? {
        tracing::info!(secret = %key, "added to the secrets file");
        report.added.push(key.clone());
    }
    Ok(())
}

fn pem_text(pem: Result<Vec<u8>, openssl::error::ErrorStack>) -> Result<String, Error> {
    let pem = pem.map_err(Error::Crypto)?;
    Ok(String::from_utf8(pem).expect("PEM is ASCII"))
}

fn read_if_present(path: &Path) -> Result<Option<String>, Error> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../testdata/veil-v2-sample.json");

    fn root() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        (dir, paths)
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn a_first_run_creates_passwords_and_a_key_pair() {
        let (_dir, paths) = root();
        let report = bootstrap(&paths).unwrap();
        assert_eq!(report.pivotal, Pivotal::Missing);
        assert!(!report.migrated_legacy && report.saved);
        let added: Vec<String> = report.added.iter().map(ToString::to_string).collect();
        assert_eq!(
            added,
            [
                "push-jobs-server.sql_password",
                "push-jobs-server.sql_ro_password",
                "push-jobs-server.pushy_priv_key",
                "push-jobs-server.pushy_pub_key"
            ]
        );
        let store = SecretsFile::load(&paths.chef_secrets_file()).unwrap();
        for name in ["sql_password", "sql_ro_password"] {
            let c = store
                .credential(&CredentialKey::grouped(GROUP, name))
                .unwrap();
            assert_eq!(c.value.len(), 50);
            assert!(!c.frozen);
            assert_eq!(
                c.value,
                store
                    .derive(&CredentialKey::grouped(GROUP, name), 0, 50)
                    .unwrap()
            );
        }
        let priv_pem = store.get(GROUP, "pushy_priv_key").unwrap();
        let pub_pem = store.get(GROUP, "pushy_pub_key").unwrap();
        assert!(priv_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
        assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let rsa = Rsa::private_key_from_pem(priv_pem.as_bytes()).unwrap();
        assert_eq!(rsa.size() * 8, 2048);
        assert_eq!(rsa.public_key_to_pem().unwrap(), pub_pem.as_bytes());
        assert!(
            store
                .credential(&CredentialKey::grouped(GROUP, "pushy_priv_key"))
                .unwrap()
                .frozen
        );
        // The daemon's hand-off needs the pivotal key, which is missing here.
        assert!(store.pack(&daemon_secrets()).is_err());
    }

    #[test]
    fn a_second_run_changes_nothing() {
        let (_dir, paths) = root();
        write(&paths.pivotal_pem(), "PIVOTAL PEM\n");
        bootstrap(&paths).unwrap();
        let before = fs::read(paths.chef_secrets_file()).unwrap();
        let report = bootstrap(&paths).unwrap();
        assert_eq!(report.pivotal, Pivotal::Stored);
        assert!(report.added.is_empty() && !report.saved, "{report:?}");
        assert_eq!(fs::read(paths.chef_secrets_file()).unwrap(), before);
        let store = SecretsFile::load(&paths.chef_secrets_file()).unwrap();
        let packed: serde_json::Value =
            serde_json::from_str(&store.pack(&daemon_secrets()).unwrap()).unwrap();
        assert_eq!(packed["chef-server"]["superuser_key"], "PIVOTAL PEM\n");
    }

    #[test]
    fn an_upgrade_from_1x_migrates_then_deletes_the_legacy_files() {
        let (_dir, paths) = root();
        write(&paths.chef_secrets_file(), FIXTURE);
        let old_pw = "a".repeat(100);
        write(
            &paths.legacy_secrets_json(),
            &format!(
                r#"{{"postgresql": {{"sql_password": "{old_pw}", "sql_ro_password": "{}"}}}}"#,
                "b".repeat(100)
            ),
        );
        let rsa = Rsa::generate(2048).unwrap();
        let old_priv = String::from_utf8(rsa.private_key_to_pem().unwrap()).unwrap();
        let old_pub = String::from_utf8(rsa.public_key_to_pem().unwrap()).unwrap();
        write(&paths.legacy_priv_pem(), &old_priv);
        write(&paths.legacy_pub_pem(), &old_pub);
        write(&paths.pivotal_pem(), "PIVOTAL\n");

        let report = bootstrap(&paths).unwrap();
        assert!(report.migrated_legacy);
        assert_eq!(report.pivotal, Pivotal::Migrated);
        assert_eq!(report.removed.len(), 3);
        for path in [
            paths.legacy_secrets_json(),
            paths.legacy_priv_pem(),
            paths.legacy_pub_pem(),
        ] {
            assert!(!path.exists(), "{} still exists", path.display());
        }
        let store = SecretsFile::load(&paths.chef_secrets_file()).unwrap();
        assert_eq!(store.get(GROUP, "sql_password"), Some(old_pw.as_str()));
        assert_eq!(store.get(GROUP, "sql_ro_password").unwrap().len(), 100);
        assert_eq!(store.get(GROUP, "pushy_priv_key"), Some(old_priv.as_str()));
        assert_eq!(store.get(GROUP, "pushy_pub_key"), Some(old_pub.as_str()));
        assert_eq!(store.get("chef-server", "superuser_key"), Some("PIVOTAL\n"));
        // Chef Server's own entries and its cipher are untouched.
        assert!(store.get("postgresql", "db_superuser_password").is_some());
        let fixture = SecretsFile::parse(Path::new("f"), FIXTURE.as_bytes()).unwrap();
        assert_eq!(store.cipher_key_iv(), fixture.cipher_key_iv());
    }

    #[test]
    fn stored_values_win_over_legacy_ones() {
        let (_dir, paths) = root();
        let mut store = SecretsFile::load(&paths.chef_secrets_file()).unwrap();
        store
            .add(
                &CredentialKey::grouped(GROUP, "sql_password"),
                NewValue::Given("current".into()),
                false,
            )
            .unwrap();
        store.save().unwrap();
        write(
            &paths.legacy_secrets_json(),
            r#"{"postgresql": {"sql_password": "old"}}"#,
        );
        bootstrap(&paths).unwrap();
        let store = SecretsFile::load(&paths.chef_secrets_file()).unwrap();
        assert_eq!(store.get(GROUP, "sql_password"), Some("current"));
        assert!(!paths.legacy_secrets_json().exists());
    }

    #[test]
    fn a_corrupt_legacy_file_stops_before_anything_is_deleted_or_written() {
        let (_dir, paths) = root();
        write(&paths.chef_secrets_file(), FIXTURE);
        write(&paths.legacy_secrets_json(), "{broken");
        write(&paths.legacy_priv_pem(), "PEM");
        let err = bootstrap(&paths).unwrap_err().to_string();
        assert!(
            err.contains("opscode-push-jobs-server-secrets.json"),
            "{err}"
        );
        assert!(paths.legacy_secrets_json().exists() && paths.legacy_priv_pem().exists());
        assert_eq!(
            fs::read_to_string(paths.chef_secrets_file()).unwrap(),
            FIXTURE
        );
    }

    #[test]
    fn a_stored_private_key_that_is_not_rsa_is_an_error() {
        let (_dir, paths) = root();
        let mut store = SecretsFile::load(&paths.chef_secrets_file()).unwrap();
        store
            .add(
                &CredentialKey::grouped(GROUP, "pushy_priv_key"),
                NewValue::Given("garbage".into()),
                true,
            )
            .unwrap();
        store.save().unwrap();
        let err = bootstrap(&paths).unwrap_err();
        assert!(matches!(err, Error::BadKey { .. }), "{err}");
        assert!(
            err.to_string().contains("push-jobs-server.pushy_priv_key"),
            "{err}"
        );
    }
}
