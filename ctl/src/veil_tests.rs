//! Tests for `veil`: the chef_secrets fixture, every input shape, saving (atomic, 0600, owner,
//! key/IV kept), an independent decryption with the `openssl` command-line tool, and failures.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use super::*;

/// chef/chef_secrets `test/json_secrets_file.json` (see `testdata/README.md`).
const FIXTURE: &str = include_str!("../testdata/veil-v2-sample.json");
/// Its documented `postgresql/db_superuser_password` (version 1, length 100).
const DB_SUPERUSER_PASSWORD: &str = "37f5c43dd8bab089821e5a49fe0ac17128c6d1878fe632e687889eaaea1980b51b3e3df755d2610cffe6896c1df9f23bdda3";

fn fixture_at(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("private-chef-secrets.json");
    fs::write(&path, FIXTURE).unwrap();
    path
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn file_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    hasher::to_hex(bytes)
}

fn running_as_root() -> bool {
    let probe = tempfile::NamedTempFile::new().unwrap();
    probe.as_file().metadata().unwrap().uid() == 0
}

#[test]
fn the_fixture_decrypts_to_its_documented_values() {
    let file = SecretsFile::parse(Path::new("sample.json"), FIXTURE.as_bytes()).unwrap();
    assert_eq!(file.format(), Format::V2);
    assert_eq!(
        file.get("postgresql", "db_superuser_password"),
        Some(DB_SUPERUSER_PASSWORD)
    );
    let pg = file
        .credential(&CredentialKey::grouped(
            "postgresql",
            "db_superuser_password",
        ))
        .unwrap();
    assert_eq!((pg.version, pg.length(), pg.frozen), (1, 100, false));
    assert_eq!(pg.group.as_deref(), Some("postgresql"));

    let single = file
        .credential(&CredentialKey::ungrouped("single_level_key"))
        .unwrap();
    assert_eq!(single.value, "single_level_test_value");
    assert_eq!(
        (single.version, single.length(), single.group.as_deref()),
        (0, 23, None)
    );
    // An ungrouped credential is not a group of that name, and vice versa.
    assert_eq!(file.get("single_level_key", "single_level_key"), None);
    assert!(!file.contains(&CredentialKey::ungrouped("postgresql")));
}

#[test]
fn pbkdf2_derivation_reproduces_the_fixture_password() {
    let file = SecretsFile::parse(Path::new("sample.json"), FIXTURE.as_bytes()).unwrap();
    let key = CredentialKey::grouped("postgresql", "db_superuser_password");
    assert_eq!(file.derive(&key, 1, 100).unwrap(), DB_SUPERUSER_PASSWORD);
    // Other versions and lengths give other (prefix-consistent) values.
    let v0 = file.derive(&key, 0, 128).unwrap();
    assert_eq!(v0.len(), 128);
    assert_ne!(&v0[..100], DB_SUPERUSER_PASSWORD);
    assert_eq!(
        file.derive(&key, 1, 20).unwrap(),
        &DB_SUPERUSER_PASSWORD[..20]
    );
    assert!(
        v0.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
}

#[test]
fn a_legacy_flat_file_is_read_as_version_zero_credentials() {
    let text = r#"{"redis_lb": {"password": "f1ad3e8b1e47bc81720742a2572b9ff"},
                   "rabbitmq": {"password": "f5031e56ae018a7b71ce153086fc88f", "actions_password": "92609a68d03b50afcc597d7"}}"#;
    let file = SecretsFile::parse(Path::new("legacy.json"), text.as_bytes()).unwrap();
    assert_eq!(file.format(), Format::LegacyFlat);
    let c = file
        .credential(&CredentialKey::grouped("redis_lb", "password"))
        .unwrap();
    assert_eq!(c.value, "f1ad3e8b1e47bc81720742a2572b9ff");
    assert_eq!((c.version, c.length(), c.frozen), (0, 31, false));
    assert_eq!(
        file.get("rabbitmq", "actions_password"),
        Some("92609a68d03b50afcc597d7")
    );
    let order: Vec<String> = file
        .credentials()
        .iter()
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(
        order,
        [
            "redis_lb.password",
            "rabbitmq.password",
            "rabbitmq.actions_password"
        ]
    );
    // The push ≤ 2.1 secrets file has this shape too.
    let push = r#"{"postgresql": {"sql_password": "aa", "sql_ro_password": "bb"}}"#;
    let file = SecretsFile::parse(Path::new("push.json"), push.as_bytes()).unwrap();
    assert_eq!(file.get("postgresql", "sql_ro_password"), Some("bb"));
}

#[test]
fn a_v1_file_is_read_as_plaintext_and_saved_as_v2_with_a_new_cipher_and_hasher() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.json");
    let v1 = json!({"veil": {
        "type": "Veil::CredentialCollection::ChefSecretsFile",
        "version": 1,
        "hasher": {},
        "credentials": {
            "postgresql": {"db_superuser_password": {
                "type": "Veil::Credential", "name": "db_superuser_password",
                "group": "postgresql", "value": "abcdef", "version": 3, "length": 4, "frozen": true}},
            "lonely": {"type": "Veil::Credential", "name": "lonely", "value": "v"}
        }
    }});
    fs::write(&path, v1.to_string()).unwrap();
    let file = SecretsFile::load(&path).unwrap();
    assert_eq!(file.format(), Format::V1);
    // `length` cuts the value, as veil's `value[0...length]` does.
    let c = file
        .credential(&CredentialKey::grouped(
            "postgresql",
            "db_superuser_password",
        ))
        .unwrap();
    assert_eq!((c.value.as_str(), c.version, c.frozen), ("abcd", 3, true));
    assert_eq!(
        file.credential(&CredentialKey::ungrouped("lonely"))
            .unwrap()
            .value,
        "v"
    );
    // An empty hasher means a new PBKDF2 one.
    let Hasher::Pbkdf2 {
        secret,
        salt,
        iterations,
        digest,
    } = file.hasher().clone()
    else {
        panic!("expected PBKDF2");
    };
    assert_eq!(
        (secret.len(), salt.len(), iterations, digest),
        (1024, 256, 10_000, Digest::Sha512)
    );

    assert!(file.save().unwrap());
    let again = SecretsFile::load(&path).unwrap();
    assert_eq!(again.format(), Format::V2);
    assert_eq!(
        again.get("postgresql", "db_superuser_password"),
        Some("abcd")
    );
    assert_eq!(again.cipher_key_iv(), file.cipher_key_iv());
    assert_eq!(again.hasher(), file.hasher());
}

#[test]
fn a_missing_or_empty_file_is_a_new_collection_that_save_creates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opscode/private-chef-secrets.json");
    let mut file = SecretsFile::load(&path).unwrap();
    assert_eq!(file.format(), Format::New);
    assert!(file.credentials().is_empty());
    let key = CredentialKey::grouped("push-jobs-server", "sql_password");
    assert!(
        file.add(&key, NewValue::Derived { length: 50 }, false)
            .unwrap()
    );
    assert!(file.save().unwrap());
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);

    let doc = file_json(&path);
    let hasher = &doc["veil"]["hasher"];
    assert_eq!(hasher["type"], "Veil::Hasher::PBKDF2");
    assert_eq!(hasher["secret"].as_str().unwrap().len(), 1024);
    assert_eq!(hasher["salt"].as_str().unwrap().len(), 256);
    assert_eq!(hasher["iterations"], 10_000);
    assert_eq!(hasher["hash_function"], "OpenSSL::Digest::SHA512");

    fs::write(&path, b"").unwrap();
    assert_eq!(SecretsFile::load(&path).unwrap().format(), Format::New);
}

#[test]
fn write_then_read_round_trips_and_keeps_key_iv_and_hasher() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_at(dir.path());
    let before = file_json(&path);
    let mut file = SecretsFile::load(&path).unwrap();
    let pw = CredentialKey::grouped("push-jobs-server", "sql_password");
    let pem = CredentialKey::grouped("push-jobs-server", "pushy_priv_key");
    assert!(
        file.add(&pw, NewValue::Derived { length: 50 }, false)
            .unwrap()
    );
    assert!(
        file.add(
            &pem,
            NewValue::Given("-----BEGIN RSA PRIVATE KEY-----\nx\n".into()),
            true
        )
        .unwrap()
    );
    assert!(file.save().unwrap());

    let after = file_json(&path);
    for field in ["hasher", "cipher"] {
        assert_eq!(
            after["veil"][field], before["veil"][field],
            "{field} changed"
        );
    }
    assert_eq!(after["veil"]["version"], 2);
    assert_eq!(
        after["veil"]["type"],
        "Veil::CredentialCollection::ChefSecretsFile"
    );

    let read = SecretsFile::load(&path).unwrap();
    assert_eq!(read.format(), Format::V2);
    let derived = read.get("push-jobs-server", "sql_password").unwrap();
    assert_eq!(derived.len(), 50);
    assert_eq!(derived, &read.derive(&pw, 0, 128).unwrap()[..50]);
    assert!(read.credential(&pem).unwrap().frozen);
    assert_eq!(
        read.get("postgresql", "db_superuser_password"),
        Some(DB_SUPERUSER_PASSWORD)
    );
    assert_eq!(
        read.credential(&CredentialKey::ungrouped("single_level_key"))
            .unwrap()
            .value,
        "single_level_test_value"
    );
    // Same collection, same key and IV: the same bytes, and save leaves the file alone.
    assert_eq!(
        read.to_v2_json().unwrap(),
        fs::read_to_string(&path).unwrap()
    );
    let inode = fs::metadata(&path).unwrap().ino();
    assert!(!read.save().unwrap());
    assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
    assert_eq!(names_in(dir.path()), ["private-chef-secrets.json"]);
}

#[test]
fn a_file_we_write_decrypts_with_the_openssl_command_line_tool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.json");
    let mut file = SecretsFile::load(&path).unwrap();
    let key = CredentialKey::grouped("push-jobs-server", "sql_ro_password");
    file.add(&key, NewValue::Given("kneipenpathos".into()), false)
        .unwrap();
    file.add(
        &CredentialKey::ungrouped("solo"),
        NewValue::Given("s".into()),
        true,
    )
    .unwrap();
    file.save().unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(!text.contains("kneipenpathos"));

    // Take key, IV and ciphertext from the file as written, not from our structs.
    let doc: Value = serde_json::from_str(&text).unwrap();
    let b64 = |v: &Value| BASE64.decode(v.as_str().unwrap()).unwrap();
    let cipher_key = b64(&doc["veil"]["cipher"]["key"]);
    let iv = b64(&doc["veil"]["cipher"]["iv"]);
    assert_eq!((cipher_key.len(), iv.len()), (32, 16));
    let mut child = Command::new("openssl")
        .args(["enc", "-d", "-aes-256-cbc", "-a", "-A", "-K"])
        .arg(hex(&cipher_key))
        .arg("-iv")
        .arg(hex(&iv))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl command-line tool is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc["veil"]["credentials"].as_str().unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plain,
        json!({
            "push-jobs-server": {"sql_ro_password": {
                "type": "Veil::Credential", "name": "sql_ro_password", "group": "push-jobs-server",
                "value": "kneipenpathos", "version": 0, "length": 13, "frozen": false}},
            "solo": {"type": "Veil::Credential", "name": "solo", "group": null,
                     "value": "s", "version": 0, "length": 1, "frozen": true}
        })
    );
}

#[test]
fn save_makes_the_file_0600_and_keeps_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_at(dir.path());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let root = running_as_root();
    if root {
        std::os::unix::fs::chown(&path, Some(4321), Some(8765)).unwrap();
    }
    let before = fs::metadata(&path).unwrap();
    let mut file = SecretsFile::load(&path).unwrap();
    file.set(
        &CredentialKey::grouped("push-jobs-server", "sql_password"),
        NewValue::Given("x".into()),
        false,
    )
    .unwrap();
    assert!(file.save().unwrap());
    let after = fs::metadata(&path).unwrap();
    assert_eq!(after.mode() & 0o7777, 0o600);
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    if root {
        assert_eq!((after.uid(), after.gid()), (4321, 8765));
    }
    assert_eq!(names_in(dir.path()), ["private-chef-secrets.json"]);
}

#[test]
fn add_keeps_existing_values_and_set_replaces_them() {
    let mut file = SecretsFile::parse(Path::new("s.json"), FIXTURE.as_bytes()).unwrap();
    let pg = CredentialKey::grouped("postgresql", "db_superuser_password");
    assert!(
        !file
            .add(&pg, NewValue::Given("other".into()), true)
            .unwrap()
    );
    assert_eq!(
        file.get("postgresql", "db_superuser_password"),
        Some(DB_SUPERUSER_PASSWORD)
    );

    file.set(&pg, NewValue::Given("other".into()), true)
        .unwrap();
    let c = file.credential(&pg).unwrap();
    assert_eq!((c.value.as_str(), c.version, c.frozen), ("other", 0, true));

    // A derived value is version 0 of the derivation, cut to the length asked for.
    let pw = CredentialKey::grouped("push-jobs-server", "sql_password");
    assert!(
        file.add(&pw, NewValue::Derived { length: 50 }, false)
            .unwrap()
    );
    assert_eq!(
        file.get("push-jobs-server", "sql_password").unwrap(),
        &file.derive(&pw, 0, 50).unwrap()
    );
    // The new group goes after the existing entries.
    let keys: Vec<String> = file
        .credentials()
        .iter()
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "postgresql.db_superuser_password",
            "single_level_key",
            "push-jobs-server.sql_password"
        ]
    );

    // A group and an ungrouped credential cannot share a name.
    let err = file
        .add(
            &CredentialKey::grouped("single_level_key", "x"),
            NewValue::Given("v".into()),
            false,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NameTaken {
                kind: "ungrouped credential",
                ..
            }
        ),
        "{err}"
    );
    let err = file
        .set(
            &CredentialKey::ungrouped("postgresql"),
            NewValue::Given("v".into()),
            false,
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::NameTaken { kind: "group", .. }),
        "{err}"
    );

    assert_eq!(file.remove(&pw).unwrap().name, "sql_password");
    assert!(!file.contains(&pw));
    assert!(file.remove(&pw).is_none());
    assert!(
        file.remove(&CredentialKey::ungrouped("single_level_key"))
            .is_some()
    );
    assert!(!file.contains(&CredentialKey::ungrouped("single_level_key")));
}

#[test]
fn pack_builds_chef_secrets_data_and_names_a_missing_secret() {
    let mut file =
        SecretsFile::parse(Path::new("/etc/opscode/s.json"), FIXTURE.as_bytes()).unwrap();
    for (group, name, value) in [
        ("push-jobs-server", "pushy_priv_key", "PRIV"),
        ("push-jobs-server", "pushy_pub_key", "PUB"),
        ("push-jobs-server", "sql_password", "pw"),
        ("chef-server", "superuser_key", "PIVOTAL"),
    ] {
        file.add(
            &CredentialKey::grouped(group, name),
            NewValue::Given(value.into()),
            true,
        )
        .unwrap();
    }
    let wanted = [
        CredentialKey::grouped("push-jobs-server", "pushy_priv_key"),
        CredentialKey::grouped("push-jobs-server", "pushy_pub_key"),
        CredentialKey::grouped("push-jobs-server", "sql_password"),
        CredentialKey::grouped("chef-server", "superuser_key"),
    ];
    let packed: Value = serde_json::from_str(&file.pack(&wanted).unwrap()).unwrap();
    assert_eq!(
        packed,
        json!({"push-jobs-server": {"pushy_priv_key": "PRIV", "pushy_pub_key": "PUB", "sql_password": "pw"},
               "chef-server": {"superuser_key": "PIVOTAL"}})
    );
    let packed: Value = serde_json::from_str(
        &file
            .pack(&[CredentialKey::ungrouped("single_level_key")])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        packed,
        json!({"single_level_key": "single_level_test_value"})
    );

    let err = file
        .pack(&[CredentialKey::grouped("push-jobs-server", "nope")])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "secret push-jobs-server.nope is missing from /etc/opscode/s.json"
    );
}

#[test]
fn a_bcrypt_hasher_is_read_and_kept_but_cannot_derive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let hasher = json!({"type": "Veil::Hasher::BCrypt", "secret": "abc", "salt": "$2a$10$abcdefghijklmnopqrstuu"});
    let doc = json!({"veil": {"type": "Veil::CredentialCollection::ChefSecretsFile", "version": 1,
        "hasher": hasher, "credentials": {"g": {"n": {"type": "Veil::Credential", "name": "n", "group": "g", "value": "v"}}}}});
    fs::write(&path, doc.to_string()).unwrap();
    let mut file = SecretsFile::load(&path).unwrap();
    assert_eq!(file.get("g", "n"), Some("v"));
    let key = CredentialKey::grouped("push-jobs-server", "sql_password");
    let err = file
        .add(&key, NewValue::Derived { length: 50 }, false)
        .unwrap_err();
    assert!(matches!(err, Error::UnsupportedHasher { .. }), "{err}");
    assert!(err.to_string().contains("Veil::Hasher::BCrypt"), "{err}");
    file.add(&key, NewValue::Given("given".into()), false)
        .unwrap();
    file.save().unwrap();
    assert_eq!(file_json(&path)["veil"]["hasher"], hasher);
}

#[test]
fn invalid_files_are_errors_that_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("private-chef-secrets.json");
    let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
    let mut wrong_key = fixture.clone();
    wrong_key["veil"]["cipher"]["key"] = json!(BASE64.encode([7u8; 32]));
    let mut short_iv = fixture.clone();
    short_iv["veil"]["cipher"]["iv"] = json!(BASE64.encode([7u8; 8]));
    let mut truncated = fixture.clone();
    truncated["veil"]["credentials"] =
        json!(&fixture["veil"]["credentials"].as_str().unwrap()[..40]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not json",
            b"not a json chef secrets file".to_vec(),
            "not JSON",
        ),
        ("array", b"[1, 2]".to_vec(), "not a JSON object"),
        (
            "wrong key",
            wrong_key.to_string().into_bytes(),
            "does not decrypt",
        ),
        ("short iv", short_iv.to_string().into_bytes(), "expected 16"),
        (
            "truncated ciphertext",
            truncated.to_string().into_bytes(),
            "veil.credentials",
        ),
        (
            "foreign veil",
            br#"{"veil": {"type": "Something"}}"#.to_vec(),
            "veil.type",
        ),
        (
            "number in legacy",
            br#"{"postgresql": {"sql_password": 5}}"#.to_vec(),
            "postgresql.sql_password",
        ),
    ];
    for (what, bytes, needle) in cases {
        fs::write(&path, &bytes).unwrap();
        let err = SecretsFile::load(&path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Invalid { .. }), "{what}: {msg}");
        assert!(msg.contains(&path.display().to_string()), "{what}: {msg}");
        assert!(msg.contains(needle), "{what}: {msg}");
        assert_eq!(fs::read(&path).unwrap(), bytes, "{what}: file touched");
    }
}

#[test]
fn an_unreadable_file_is_a_read_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be cannot be read, even by root.
    let path = dir.path().join("private-chef-secrets.json");
    fs::create_dir(&path).unwrap();
    let err = SecretsFile::load(&path).unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

/// Loads, changes and saves `path`, expecting the save to fail with a message naming the file.
fn save_must_fail(path: &Path) {
    let mut file = SecretsFile::load(path).unwrap();
    file.set(
        &CredentialKey::grouped("push-jobs-server", "sql_password"),
        NewValue::Given("changed".into()),
        false,
    )
    .unwrap();
    let err = file.save().unwrap_err();
    assert!(matches!(err, Error::Write(_)), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

const CHILD_ENV: &str = "PUSHY_CTL_VEIL_READONLY_CHILD";

#[test]
fn a_save_into_a_read_only_directory_fails_and_leaves_the_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let secrets_dir = dir.path().join("opscode");
    fs::create_dir(&secrets_dir).unwrap();
    let path = fixture_at(&secrets_dir);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&secrets_dir, fs::Permissions::from_mode(0o555)).unwrap();

    if running_as_root() {
        // Root writes into read-only directories; run the save as `nobody` instead.
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "veil::tests::child_saves_into_a_read_only_directory",
            ])
            .args(["--ignored", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the unprivileged save did not fail as expected:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        save_must_fail(&path);
    }
    assert_eq!(fs::read_to_string(&path).unwrap(), FIXTURE);
    assert_eq!(names_in(&secrets_dir), ["private-chef-secrets.json"]);
    fs::set_permissions(&secrets_dir, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
#[ignore = "run as an unprivileged user by a_save_into_a_read_only_directory_fails_and_leaves_the_file_untouched"]
fn child_saves_into_a_read_only_directory() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        save_must_fail(Path::new(&path));
    }
}
