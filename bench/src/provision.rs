//! `pushy-load provision`: registers the simulated nodes with the server's local key
//! directory (README, "The local key directory": `DIR/orgs/ORG/clients/NAME/*.pem`).
//!
//! Every node shares one RSA-2048 key pair — generating one per node would take minutes
//! at 50 000 nodes, and the server cannot tell. The private half goes to `--key-out`
//! (mode 0600; an existing file there is reused, so reruns keep the same key); each
//! node's directory gets the public half as `default.pem`. Idempotent: files that
//! already hold the right key are left alone, others are replaced atomically (written
//! beside, then renamed: the server reads these files on every request).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;

use crate::plan;

/// Arguments of `provision`.
#[derive(Clone, Debug, clap::Args)]
pub struct ProvisionArgs {
    /// The server's local key directory (`<data_dir>/chef`).
    #[arg(long)]
    pub chef_dir: PathBuf,
    /// Organization (must exist: `opscode-pushy-server local org-create ORG`).
    #[arg(long)]
    pub org: String,
    /// Node name prefix; nodes are PREFIX0, PREFIX1, …
    #[arg(long, default_value = "node")]
    pub prefix: String,
    /// Index of the first node.
    #[arg(long, default_value_t = 0)]
    pub first: u64,
    /// Number of nodes.
    #[arg(long)]
    pub count: u64,
    /// Where the shared private key goes (reused if it exists).
    #[arg(long)]
    pub key_out: PathBuf,
}

/// What provisioning did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// A new key pair was generated (else the one at `--key-out` was reused).
    pub key_generated: bool,
    /// Client keys written.
    pub written: u64,
    /// Client keys already in place.
    pub unchanged: u64,
}

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The org is not in the directory.
    #[error(
        "organization {org} not found ({path} is missing); create it with `opscode-pushy-server local org-create {org}`"
    )]
    NoOrg {
        /// The org.
        org: String,
        /// The file looked for.
        path: PathBuf,
    },
    /// A name would leave its directory.
    #[error("{0:?} cannot be part of a file name")]
    BadName(String),
    /// The existing key file does not hold an RSA private key.
    #[error("{path}: not an RSA private key")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: pushy_protocol::keys::KeyError,
    },
    /// Key generation or encoding failed.
    #[error("generating the key pair")]
    Crypto(#[from] openssl::error::ErrorStack),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(Error::BadName(name.to_owned()));
    }
    Ok(())
}

/// Writes the key pair and the client directories.
///
/// # Errors
/// See [`Error`].
pub fn provision(args: &ProvisionArgs) -> Result<Summary, Error> {
    check_name(&args.org)?;
    if !args.prefix.is_empty() {
        check_name(&args.prefix)?;
    }
    let org_dir = args.chef_dir.join("orgs").join(&args.org);
    let org_file = org_dir.join("org.json");
    if !org_file.is_file() {
        return Err(Error::NoOrg {
            org: args.org.clone(),
            path: org_file,
        });
    }
    let (key, key_generated) = shared_key(&args.key_out)?;
    let public = key.public_key_to_pem()?;
    let clients = org_dir.join("clients");
    let mut summary = Summary {
        key_generated,
        ..Summary::default()
    };
    for index in args.first..args.first + args.count {
        let dir = clients.join(plan::node_name(&args.prefix, index));
        let path = dir.join("default.pem");
        match std::fs::read(&path) {
            Ok(existing) if existing == public => {
                summary.unchanged += 1;
                continue;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            }
            Err(e) => return Err(io(&path)(e)),
        }
        // Not `*.pem` while half-written, so the server never reads a partial key.
        let tmp = dir.join("default.pem.tmp");
        std::fs::write(&tmp, &public).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        summary.written += 1;
    }
    Ok(summary)
}

/// The key at `path`, or a new one written there (mode 0600); true when new.
fn shared_key(path: &Path) -> Result<(PKey<Private>, bool), Error> {
    match std::fs::read_to_string(path) {
        Ok(pem) => {
            let key = pushy_protocol::keys::private_key_from_pem(&pem).map_err(|source| {
                Error::BadKey {
                    path: path.to_owned(),
                    source,
                }
            })?;
            return Ok((key, false));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path)(e)),
    }
    // Not smaller: Chef signing 1.0/1.1 RSA-"encrypts" the whole canonical request
    // (about 180 bytes), which does not fit a 1024-bit key.
    let rsa = Rsa::generate(2048)?;
    // PKCS#1, as `local client-create` and Chef Server hand client keys out.
    let pem = rsa.private_key_to_pem()?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(path).map_err(io(path))?;
    file.write_all(&pem).map_err(io(path))?;
    Ok((PKey::from_rsa(rsa)?, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn args(tmp: &Path, count: u64) -> ProvisionArgs {
        ProvisionArgs {
            chef_dir: tmp.join("chef"),
            org: "bench".into(),
            prefix: "node".into(),
            first: 0,
            count,
            key_out: tmp.join("keys/nodes.pem"),
        }
    }

    fn make_org(tmp: &Path) {
        let dir = tmp.join("chef/orgs/bench");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("org.json"),
            r#"{"guid":"00000000000000000000000000000001"}"#,
        )
        .unwrap();
    }

    #[test]
    fn writes_the_local_key_directory_layout() {
        let tmp = tempfile::tempdir().unwrap();
        make_org(tmp.path());
        let a = args(tmp.path(), 3);
        let summary = provision(&a).unwrap();
        assert_eq!(
            summary,
            Summary {
                key_generated: true,
                written: 3,
                unchanged: 0
            }
        );
        let mode = std::fs::metadata(&a.key_out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let private = pushy_protocol::keys::private_key_from_pem(
            &std::fs::read_to_string(&a.key_out).unwrap(),
        )
        .unwrap();
        for name in ["node0", "node1", "node2"] {
            let path = tmp
                .path()
                .join("chef/orgs/bench/clients")
                .join(name)
                .join("default.pem");
            let public =
                pushy_protocol::keys::public_key_from_pem(&std::fs::read_to_string(path).unwrap())
                    .unwrap();
            assert!(public.public_eq(&private), "{name} holds the shared key");
        }
        assert!(!tmp.path().join("chef/orgs/bench/clients/node3").exists());
        let leftovers = std::fs::read_dir(tmp.path().join("chef/orgs/bench/clients/node0"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn reruns_keep_the_key_and_touch_only_what_changed() {
        let tmp = tempfile::tempdir().unwrap();
        make_org(tmp.path());
        provision(&args(tmp.path(), 2)).unwrap();
        let key = std::fs::read(tmp.path().join("keys/nodes.pem")).unwrap();
        // node1 was given another key meanwhile; node2..4 are new.
        let stray = tmp.path().join("chef/orgs/bench/clients/node1/default.pem");
        std::fs::write(&stray, "other").unwrap();
        let summary = provision(&args(tmp.path(), 5)).unwrap();
        assert_eq!(
            summary,
            Summary {
                key_generated: false,
                written: 4,
                unchanged: 1
            }
        );
        assert_eq!(
            std::fs::read(tmp.path().join("keys/nodes.pem")).unwrap(),
            key
        );
        assert_ne!(std::fs::read_to_string(stray).unwrap(), "other");
    }

    #[test]
    fn an_offset_range_starts_at_first() {
        let tmp = tempfile::tempdir().unwrap();
        make_org(tmp.path());
        let a = ProvisionArgs {
            first: 10,
            ..args(tmp.path(), 2)
        };
        provision(&a).unwrap();
        let clients = tmp.path().join("chef/orgs/bench/clients");
        assert!(clients.join("node10/default.pem").exists());
        assert!(clients.join("node11/default.pem").exists());
        assert!(!clients.join("node0").exists());
    }

    #[test]
    fn refuses_a_missing_org_and_unsafe_names() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            provision(&args(tmp.path(), 1)),
            Err(Error::NoOrg { .. })
        ));
        make_org(tmp.path());
        let bad = ProvisionArgs {
            prefix: "../x".into(),
            ..args(tmp.path(), 1)
        };
        assert!(matches!(provision(&bad), Err(Error::BadName(_))));
    }
}
