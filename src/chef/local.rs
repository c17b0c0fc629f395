//! A Chef Server stand-in that reads a directory: the embedded default.
//!
//! Layout (README, "The local key directory"):
//! ```text
//! DIR/users/NAME/*.pem                  a user's public keys (all active)
//! DIR/orgs/ORG/org.json                 {"guid": "<32 hex>", "users": ["alice", ...]}
//! DIR/orgs/ORG/clients/NAME/*.pem       a client's public keys
//! DIR/orgs/ORG/groups/GROUP.json        {"users": [...], "clients": [...], "groups": [...]}
//! ```
//! Files are read on every request, so edits take effect at once without a restart. Parsed
//! public keys are reused while their file's size, mtime and inode are unchanged: OpenSSL 3
//! takes far longer to parse a PEM key than to verify a signature with it. Each lookup does
//! its file work in one blocking task rather than one per file.
//! The `local` subcommands of the server binary write this layout (see [`admin`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use openssl::pkey::{PKey, Public};
use pushy_protocol::job::OrgGuid;
use pushy_protocol::keys::public_key_from_pem;
use pushy_protocol::node_query::NameQuery;
use serde::{Deserialize, Serialize};

use super::port::{
    ChefServer, Error, Group, MAX_NAME_LEN, NodeSearch, Principal, PrincipalKind, PrincipalLookup,
};

/// `org.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct OrgFile {
    pub(crate) guid: String,
    #[serde(default)]
    pub(crate) users: Vec<String>,
}

/// The local directory implementation of [`ChefServer`].
#[derive(Clone, Debug)]
pub struct LocalChefServer {
    dir: PathBuf,
    keys: Arc<KeyCache>,
}

impl LocalChefServer {
    /// Serves the directory `dir` (it need not exist yet: then no org exists).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalChefServer {
            dir: dir.into(),
            keys: Arc::default(),
        }
    }

    /// The directory served.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `work` with the directory and key cache on the blocking pool.
    async fn blocking<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Path, &KeyCache) -> Result<T, Error> + Send + 'static,
    {
        let dir = self.dir.clone();
        let keys = self.keys.clone();
        tokio::task::spawn_blocking(move || work(&dir, &keys))
            .await
            .map_err(|e| Error::Upstream(format!("local directory lookup panicked: {e}")))?
    }
}

/// Names become path components: refuse anything that could leave the directory or
/// that no file name can hold (over [`MAX_NAME_LEN`] bytes). Such a name is simply
/// unknown.
fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
}

/// A group's file name, `GROUP.json`, when the group can have one.
fn group_file_name(group: &str) -> Option<String> {
    let file = format!("{group}.json");
    (is_safe_name(group) && file.len() <= MAX_NAME_LEN).then_some(file)
}

/// Errors that say the path cannot name an entry (too long, or a file where a directory
/// is expected): the entry does not exist, rather than the directory failing.
fn names_nothing(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound
            | std::io::ErrorKind::InvalidFilename
            | std::io::ErrorKind::NotADirectory
    )
}

/// A JSON file, `None` when it does not exist.
fn read_json_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Upstream(format!("{}: {e}", path.display()))),
        Err(e) if names_nothing(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn org_file(dir: &Path, org: &str) -> Result<Option<OrgFile>, Error> {
    if !is_safe_name(org) {
        return Ok(None);
    }
    read_json_file(&dir.join("orgs").join(org).join("org.json"))
}

/// What identifies a version of a key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: std::os::unix::fs::MetadataExt::ino(meta),
        }
    }
}

/// At most this many parsed keys are kept; past it the cache starts afresh (a crude bound
/// that keeps memory flat when thousands of nodes fetch their config once each).
const KEY_CACHE_CAPACITY: usize = 4096;

/// Parsed public keys by file.
#[derive(Debug, Default)]
struct KeyCache {
    map: Mutex<HashMap<PathBuf, (Stamp, PKey<Public>)>>,
}

impl KeyCache {
    fn lookup(&self, path: &Path, stamp: Stamp) -> Option<PKey<Public>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(path)
            .filter(|(s, _)| *s == stamp)
            .map(|(_, k)| k.clone())
    }

    fn store(&self, path: PathBuf, stamp: Stamp, key: PKey<Public>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= KEY_CACHE_CAPACITY && !map.contains_key(&path) {
            map.clear();
        }
        map.insert(path, (stamp, key));
    }
}

/// Every `*.pem` in `dir`, sorted by file name, parsed (or reused from `cache`); `None`
/// when `dir` does not exist. Unreadable keys are skipped with a warning so one bad file
/// does not lock a principal out.
fn read_keys(dir: &Path, cache: &KeyCache) -> Result<Option<Vec<PKey<Public>>>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if names_nothing(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "pem") {
            files.push(path);
        }
    }
    files.sort();
    let mut keys = Vec::new();
    for path in files {
        let meta = std::fs::metadata(&path)?;
        let stamp = Stamp::of(&meta);
        if let Some(key) = cache.lookup(&path, stamp) {
            keys.push(key);
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        match public_key_from_pem(&text) {
            Ok(key) => {
                cache.store(path, stamp, key.clone());
                keys.push(key);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping unreadable public key")
            }
        }
    }
    Ok(Some(keys))
}

#[async_trait]
impl ChefServer for LocalChefServer {
    async fn org_guid(&self, org: &str) -> Result<Option<OrgGuid>, Error> {
        let org = org.to_owned();
        self.blocking(move |dir, _| Ok(org_file(dir, &org)?.map(|o| OrgGuid(o.guid))))
            .await
    }

    async fn principals(&self, org: &str, name: &str) -> Result<PrincipalLookup, Error> {
        let (org, name) = (org.to_owned(), name.to_owned());
        self.blocking(move |dir, cache| {
            let Some(org_file) = org_file(dir, &org)? else {
                return Ok(PrincipalLookup::OrgNotFound);
            };
            if !is_safe_name(&name) {
                return Ok(PrincipalLookup::PrincipalNotFound);
            }
            let mut found = Vec::new();
            // Users before clients, as Chef Server orders them.
            if let Some(keys) = read_keys(&dir.join("users").join(&name), cache)? {
                let org_member = org_file.users.contains(&name);
                found.extend(keys.into_iter().map(|public_key| Principal {
                    name: name.clone(),
                    kind: PrincipalKind::User,
                    public_key,
                    org_member,
                }));
            }
            let client_dir = dir.join("orgs").join(&org).join("clients").join(&name);
            if let Some(keys) = read_keys(&client_dir, cache)? {
                found.extend(keys.into_iter().map(|public_key| Principal {
                    name: name.clone(),
                    kind: PrincipalKind::Client,
                    public_key,
                    org_member: true,
                }));
            }
            if found.is_empty() {
                return Ok(PrincipalLookup::PrincipalNotFound);
            }
            Ok(PrincipalLookup::Found(found))
        })
        .await
    }

    async fn group(&self, org: &str, group: &str) -> Result<Option<Group>, Error> {
        let Some(file) = group_file_name(group).filter(|_| is_safe_name(org)) else {
            return Ok(None);
        };
        let path = self.dir.join("orgs").join(org).join("groups").join(file);
        self.blocking(move |_, _| read_json_file(&path)).await
    }

    /// The org's clients are its nodes; `*:*` and `name:GLOB` are the queries a directory
    /// can answer (as the CLI's `--search` with a local directory).
    async fn search_nodes(&self, org: &str, query: &str) -> Result<NodeSearch, Error> {
        let query = match NameQuery::parse(query) {
            Ok(q) => q,
            Err(e) => return Ok(NodeSearch::Refused(e.to_string())),
        };
        let org = org.to_owned();
        self.blocking(move |dir, _| {
            if !is_safe_name(&org) {
                return Ok(NodeSearch::Found(Vec::new()));
            }
            let entries = match std::fs::read_dir(dir.join("orgs").join(&org).join("clients")) {
                Ok(entries) => entries,
                Err(e) if names_nothing(&e) => return Ok(NodeSearch::Found(Vec::new())),
                Err(e) => return Err(e.into()),
            };
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry?;
                if !entry.path().is_dir() {
                    continue;
                }
                if let Some(name) = entry.file_name().to_str()
                    && query.matches(name)
                {
                    names.push(name.to_owned());
                }
            }
            Ok(NodeSearch::of(names))
        })
        .await
    }
}

/// Writing the local directory: what the `local` subcommands do. Synchronous: these run
/// from the command line, never inside the server.
pub mod admin {
    use std::fs;
    use std::io::Write as _;
    use std::path::Path;

    use openssl::rsa::Rsa;

    use super::{Group, OrgFile, is_safe_name};

    /// Why a change to the local directory failed.
    #[derive(Debug, thiserror::Error)]
    pub enum Error {
        /// A file could not be read or written.
        #[error("{path}: {source}")]
        Io {
            /// The file.
            path: String,
            /// The cause.
            #[source]
            source: std::io::Error,
        },
        /// A JSON file in the directory is malformed.
        #[error("{path}: {source}")]
        Json {
            /// The file.
            path: String,
            /// The cause.
            #[source]
            source: serde_json::Error,
        },
        /// The name cannot be used as a directory entry.
        #[error("invalid name {0:?}")]
        BadName(String),
        /// The organization does not exist.
        #[error("organization {0:?} does not exist (create it first)")]
        NoSuchOrg(String),
        /// Key generation failed.
        #[error("generating a key failed")]
        Crypto(#[from] openssl::error::ErrorStack),
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.display().to_string(),
            source,
        }
    }

    fn check(name: &str) -> Result<(), Error> {
        if is_safe_name(name) {
            Ok(())
        } else {
            Err(Error::BadName(name.to_owned()))
        }
    }

    fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, Error> {
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| Error::Json {
                path: path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(io(path)(e)),
        }
    }

    fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), Error> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        // Pretty JSON with a newline: these files are meant to be read and edited by hand.
        let mut text = serde_json::to_string_pretty(value).expect("serialising plain data");
        text.push('\n');
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, text).map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))
    }

    fn org_path(dir: &Path, org: &str) -> std::path::PathBuf {
        dir.join("orgs").join(org).join("org.json")
    }

    fn existing_org(dir: &Path, org: &str) -> Result<OrgFile, Error> {
        check(org)?;
        let path = org_path(dir, org);
        if !path.exists() {
            return Err(Error::NoSuchOrg(org.to_owned()));
        }
        read_json(&path)
    }

    /// Creates organization `org` with a random GUID and an empty `admins` group; returns
    /// the GUID. An existing organization is left as it is.
    pub fn create_org(dir: &Path, org: &str) -> Result<String, Error> {
        check(org)?;
        let path = org_path(dir, org);
        if path.exists() {
            return Ok(read_json::<OrgFile>(&path)?.guid);
        }
        let guid = uuid::Uuid::new_v4().simple().to_string();
        write_json(
            &path,
            &OrgFile {
                guid: guid.clone(),
                users: Vec::new(),
            },
        )?;
        write_json(
            &dir.join("orgs")
                .join(org)
                .join("groups")
                .join("admins.json"),
            &Group::default(),
        )?;
        Ok(guid)
    }

    /// Generates an RSA 2048 key pair: the public half goes to `key_dir/default.pem`, the
    /// private half (PKCS#1 PEM, mode 0600) to `private_out`.
    fn new_key(key_dir: &Path, private_out: &Path) -> Result<(), Error> {
        let rsa = Rsa::generate(2048)?;
        let private = rsa.private_key_to_pem()?;
        let public = openssl::pkey::PKey::from_rsa(rsa)?.public_key_to_pem()?;
        if let Some(parent) = private_out.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(private_out).map_err(io(private_out))?;
        f.write_all(&private).map_err(io(private_out))?;
        fs::create_dir_all(key_dir).map_err(io(key_dir))?;
        let pub_path = key_dir.join("default.pem");
        fs::write(&pub_path, public).map_err(io(&pub_path))
    }

    fn add_to_group(
        dir: &Path,
        org: &str,
        group: &str,
        user: Option<&str>,
        client: Option<&str>,
    ) -> Result<(), Error> {
        let path = dir
            .join("orgs")
            .join(org)
            .join("groups")
            .join(format!("{group}.json"));
        let mut g: Group = read_json(&path)?;
        if let Some(u) = user.filter(|u| !g.users.iter().any(|x| x == u)) {
            g.users.push(u.to_owned());
        }
        if let Some(c) = client.filter(|c| !g.clients.iter().any(|x| x == c)) {
            g.clients.push(c.to_owned());
        }
        write_json(&path, &g)
    }

    /// Creates user `name` (replacing its key if it exists), associates it with `org`,
    /// optionally as an admin, and writes its private key to `private_out`.
    pub fn create_user(
        dir: &Path,
        org: &str,
        name: &str,
        admin: bool,
        private_out: &Path,
    ) -> Result<(), Error> {
        check(name)?;
        let mut org_file = existing_org(dir, org)?;
        new_key(&dir.join("users").join(name), private_out)?;
        if !org_file.users.iter().any(|u| u == name) {
            org_file.users.push(name.to_owned());
            write_json(&org_path(dir, org), &org_file)?;
        }
        if admin {
            add_to_group(dir, org, "admins", Some(name), None)?;
        }
        Ok(())
    }

    /// Creates client `name` of `org` (replacing its key if it exists), optionally as an
    /// admin, and writes its private key to `private_out`.
    pub fn create_client(
        dir: &Path,
        org: &str,
        name: &str,
        admin: bool,
        private_out: &Path,
    ) -> Result<(), Error> {
        check(name)?;
        existing_org(dir, org)?;
        new_key(
            &dir.join("orgs").join(org).join("clients").join(name),
            private_out,
        )?;
        if admin {
            add_to_group(dir, org, "admins", None, Some(name))?;
        }
        Ok(())
    }

    /// Replaces group `group` of `org` with these members.
    pub fn set_group(dir: &Path, org: &str, group: &str, members: &Group) -> Result<(), Error> {
        check(group)?;
        existing_org(dir, org)?;
        write_json(
            &dir.join("orgs")
                .join(org)
                .join("groups")
                .join(format!("{group}.json")),
            members,
        )
    }

    /// Deletes group `group` of `org` (nothing happens if it does not exist).
    pub fn delete_group(dir: &Path, org: &str, group: &str) -> Result<(), Error> {
        check(group)?;
        let path = dir
            .join("orgs")
            .join(org)
            .join("groups")
            .join(format!("{group}.json"));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public_pem(p: &Principal) -> Vec<u8> {
        p.public_key.public_key_to_pem().unwrap()
    }

    #[tokio::test]
    async fn a_replaced_key_is_used_at_once_despite_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        admin::create_org(dir, "acme").unwrap();
        admin::create_user(dir, "acme", "alice", true, &dir.join("alice.pem")).unwrap();
        let chef = LocalChefServer::new(dir);
        let lookup = || async {
            match chef.principals("acme", "alice").await.unwrap() {
                PrincipalLookup::Found(p) => p.iter().map(public_pem).collect::<Vec<_>>(),
                other => panic!("{other:?}"),
            }
        };
        let first = lookup().await;
        assert_eq!(lookup().await, first, "the cached key is the same key");

        // Same length (RSA-2048 PEM), same inode: only the mtime and content differ.
        admin::create_user(dir, "acme", "alice", true, &dir.join("alice.pem")).unwrap();
        let second = lookup().await;
        assert_ne!(second, first, "the new key replaces the cached one");

        let extra = dir.join("users/alice/second.pem");
        std::fs::copy(dir.join("users/alice/default.pem"), &extra).unwrap();
        assert_eq!(lookup().await.len(), 2, "a key added beside it is seen");
        std::fs::remove_file(&extra).unwrap();
        assert_eq!(lookup().await, second, "a removed key is gone");
    }

    /// Names of 256 bytes and more, and names that would leave the directory, are unknown
    /// (never a failed lookup); 255 bytes is an ordinary name.
    #[tokio::test]
    async fn impossible_names_are_unknown() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("chef");
        admin::create_org(&dir, "acme").unwrap();
        admin::create_user(&dir, "acme", "alice", true, &tmp.path().join("a.pem")).unwrap();
        // Something outside the directory a traversal would reach.
        std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
        std::fs::write(tmp.path().join("outside/org.json"), r#"{"guid":"x"}"#).unwrap();
        let chef = LocalChefServer::new(&dir);
        for long in [256, 300, 5000] {
            let name = "a".repeat(long);
            assert_eq!(chef.org_guid(&name).await.unwrap(), None);
            let user = chef.principals("acme", &name).await.unwrap();
            assert!(
                matches!(user, PrincipalLookup::PrincipalNotFound),
                "{user:?}"
            );
            let org = chef.principals(&name, "alice").await.unwrap();
            assert!(matches!(org, PrincipalLookup::OrgNotFound), "{org:?}");
            assert_eq!(chef.group("acme", &name).await.unwrap(), None);
        }
        let name = "a".repeat(255);
        assert_eq!(chef.org_guid(&name).await.unwrap(), None);
        let user = chef.principals("acme", &name).await.unwrap();
        assert!(
            matches!(user, PrincipalLookup::PrincipalNotFound),
            "{user:?}"
        );
        for group in ["a".repeat(250), "a".repeat(251), "a".repeat(255)] {
            assert_eq!(chef.group("acme", &group).await.unwrap(), None);
        }
        for bad in [
            "..",
            ".",
            "",
            "../outside",
            "a/b",
            "a\\b",
            "a\0b",
            "../../outside",
        ] {
            assert_eq!(chef.org_guid(bad).await.unwrap(), None, "{bad:?}");
            let user = chef.principals("acme", bad).await.unwrap();
            assert!(
                matches!(user, PrincipalLookup::PrincipalNotFound),
                "{bad:?}"
            );
            assert_eq!(chef.group("acme", bad).await.unwrap(), None, "{bad:?}");
            assert_eq!(chef.group(bad, "admins").await.unwrap(), None, "{bad:?}");
        }
        // A file where a directory belongs is no principal, not a failed lookup.
        std::fs::write(dir.join("users/bob"), "not a directory").unwrap();
        let bob = chef.principals("acme", "bob").await.unwrap();
        assert!(matches!(bob, PrincipalLookup::PrincipalNotFound), "{bob:?}");
    }

    #[tokio::test]
    async fn search_lists_the_orgs_clients_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        admin::create_org(dir, "acme").unwrap();
        admin::create_org(dir, "other").unwrap();
        // Search reads names only: key directories without keys will do.
        for node in [
            "acme/clients/web02",
            "acme/clients/web01",
            "acme/clients/db01",
        ] {
            std::fs::create_dir_all(dir.join("orgs").join(node)).unwrap();
        }
        std::fs::create_dir_all(dir.join("orgs/other/clients/web99")).unwrap();
        std::fs::write(dir.join("orgs/acme/clients/stray.txt"), "").unwrap();
        let chef = LocalChefServer::new(dir);
        let names = |v: &[&str]| NodeSearch::Found(v.iter().map(|s| s.to_string()).collect());
        let search = |q: &'static str| chef.search_nodes("acme", q);
        assert_eq!(
            search("*:*").await.unwrap(),
            names(&["db01", "web01", "web02"])
        );
        assert_eq!(
            search("name:web*").await.unwrap(),
            names(&["web01", "web02"])
        );
        assert_eq!(search("name:nothing*").await.unwrap(), names(&[]));
        assert!(matches!(
            search("role:web").await.unwrap(),
            NodeSearch::Refused(why) if why.contains("name:GLOB")
        ));
        for org in ["nope", "..", "a/b"] {
            assert_eq!(chef.search_nodes(org, "*:*").await.unwrap(), names(&[]));
        }
    }

    #[tokio::test]
    async fn directory_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let guid = admin::create_org(dir, "acme").unwrap();
        admin::create_org(dir, "other").unwrap();
        admin::create_user(dir, "acme", "alice", true, &dir.join("alice.pem")).unwrap();
        admin::create_user(dir, "other", "olga", false, &dir.join("olga.pem")).unwrap();
        admin::create_client(dir, "acme", "node1", false, &dir.join("node1.pem")).unwrap();
        let chef = LocalChefServer::new(dir);

        assert_eq!(chef.org_guid("acme").await.unwrap(), Some(OrgGuid(guid)));
        assert_eq!(chef.org_guid("nope").await.unwrap(), None);
        assert_eq!(chef.org_guid("../acme").await.unwrap(), None);

        let PrincipalLookup::Found(p) = chef.principals("acme", "alice").await.unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.len(), p[0].kind, p[0].org_member),
            (1, PrincipalKind::User, true)
        );
        let PrincipalLookup::Found(p) = chef.principals("acme", "olga").await.unwrap() else {
            panic!()
        };
        assert!(!p[0].org_member, "a user of another org is not a member");
        let PrincipalLookup::Found(p) = chef.principals("acme", "node1").await.unwrap() else {
            panic!()
        };
        assert_eq!(p[0].kind, PrincipalKind::Client);
        assert!(matches!(
            chef.principals("other", "node1").await.unwrap(),
            PrincipalLookup::PrincipalNotFound
        ));
        assert!(matches!(
            chef.principals("nope", "alice").await.unwrap(),
            PrincipalLookup::OrgNotFound
        ));

        let admins = chef.group("acme", "admins").await.unwrap().unwrap();
        assert_eq!(admins.users, vec!["alice".to_owned()]);
        assert_eq!(chef.group("acme", "pushy_job_readers").await.unwrap(), None);
        let g = Group {
            users: vec![],
            clients: vec!["node1".into()],
            groups: vec!["admins".into()],
        };
        admin::set_group(dir, "acme", "pushy_job_readers", &g).unwrap();
        assert_eq!(
            chef.group("acme", "pushy_job_readers").await.unwrap(),
            Some(g)
        );
        admin::delete_group(dir, "acme", "pushy_job_readers").unwrap();
        assert_eq!(chef.group("acme", "pushy_job_readers").await.unwrap(), None);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("alice.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
