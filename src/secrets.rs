//! Chef Server's consolidated credentials as the daemon receives them (ops.md §3.4): a
//! JSON object `{"group": {"name": "value"}}` written to the file descriptor named by
//! `CHEF_SECRETS_FD` (what `push-jobs-server-ctl launch` does: a pipe, as veil-env-helper's
//! `--use-file`), or in the environment variable `CHEF_SECRETS_DATA`. No secret is ever
//! written in clear to disk. The descriptor is read to its end and closed, so the secrets
//! are gone from the pipe; the variable is removed from the environment once read, as the
//! original's `chef_secrets_env` provider does, but `/proc/PID/environ` keeps the initial
//! environment for the process's life, which is why the ctl uses the descriptor.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read as _;
use std::os::fd::{FromRawFd as _, IntoRawFd as _, RawFd};

/// Why the secrets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data is not a JSON object of objects of strings.
    #[error("{origin} is not a JSON object of secret groups: {why}")]
    Malformed {
        /// Where the data came from.
        origin: &'static str,
        /// What was wrong.
        why: String,
    },
    /// `CHEF_SECRETS_FD` does not name a readable descriptor.
    #[error("reading secrets from CHEF_SECRETS_FD={fd}: {source}")]
    Fd {
        /// The descriptor.
        fd: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Secrets by group and name.
#[derive(Clone, Default)]
pub struct Secrets {
    groups: HashMap<String, HashMap<String, String>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values never reach a log.
        let names: Vec<String> = self
            .groups
            .iter()
            .flat_map(|(g, m)| m.keys().map(move |n| format!("{g}.{n}")))
            .collect();
        f.debug_struct("Secrets").field("names", &names).finish()
    }
}

impl Secrets {
    /// Parses the handed-over JSON.
    ///
    /// # Errors
    /// When it is not an object of objects of strings.
    pub fn parse(text: &str, origin: &'static str) -> Result<Secrets, Error> {
        let malformed = |why: String| Error::Malformed { origin, why };
        let value: serde_json::Value =
            serde_json::from_str(text.trim()).map_err(|e| malformed(e.to_string()))?;
        let obj = value
            .as_object()
            .ok_or_else(|| malformed("not an object".into()))?;
        let mut groups = HashMap::new();
        for (group, members) in obj {
            let members = members
                .as_object()
                .ok_or_else(|| malformed(format!("group {group:?} is not an object")))?;
            let mut m = HashMap::new();
            for (name, v) in members {
                let v = v
                    .as_str()
                    .ok_or_else(|| malformed(format!("{group}.{name} is not a string")))?;
                m.insert(name.clone(), v.to_owned());
            }
            groups.insert(group.clone(), m);
        }
        Ok(Secrets { groups })
    }

    /// Reads `CHEF_SECRETS_DATA` or `CHEF_SECRETS_FD` (then unsets it); `None` when
    /// neither is set.
    ///
    /// # Errors
    /// When the data is malformed or the descriptor unreadable.
    pub fn from_environment() -> Result<Option<Secrets>, Error> {
        if let Ok(data) = std::env::var("CHEF_SECRETS_DATA") {
            // SAFETY: called once at start-up, before any thread that reads the
            // environment is spawned.
            unsafe { std::env::remove_var("CHEF_SECRETS_DATA") };
            return Secrets::parse(&data, "CHEF_SECRETS_DATA").map(Some);
        }
        if let Ok(fd) = std::env::var("CHEF_SECRETS_FD") {
            // SAFETY: as above.
            unsafe { std::env::remove_var("CHEF_SECRETS_FD") };
            let text = read_descriptor(&fd).map_err(|source| Error::Fd { fd, source })?;
            return Secrets::parse(&text, "CHEF_SECRETS_FD").map(Some);
        }
        Ok(None)
    }

    /// One secret.
    pub fn get(&self, group: &str, name: &str) -> Option<&str> {
        self.groups.get(group)?.get(name).map(String::as_str)
    }
}

/// Reads the inherited descriptor `fd` to its end, then closes it (standard streams stay
/// open). It is read where it is, not reopened through `/proc/self/fd`: the ctl makes the
/// pipe as root and the daemon runs as Chef Server's user, who may not open a root-owned
/// pipe but may read the descriptor it was handed.
fn read_descriptor(fd: &str) -> std::io::Result<String> {
    let n: RawFd =
        fd.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a descriptor")
        })?;
    std::fs::read_link(format!("/proc/self/fd/{n}"))
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::NotFound, "not an open descriptor"))?;
    // SAFETY: `n` is open (checked just above, before any other thread exists), and
    // nothing else in the process owns it: it was inherited for this purpose only.
    let mut file = unsafe { File::from_raw_fd(n) };
    let mut text = String::new();
    let read = file.read_to_string(&mut text);
    if n <= 2 {
        // Leave stdin/stdout/stderr open: only the handed-over pipe is ours to close.
        let _ = file.into_raw_fd();
    }
    read.map(|_| text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_packed_form() {
        let s = Secrets::parse(
            r#"{"push-jobs-server":{"pushy_priv_key":"PEM","sql_password":"pw"},"chef-server":{"superuser_key":"K"}}"#,
            "test",
        )
        .unwrap();
        assert_eq!(s.get("push-jobs-server", "sql_password"), Some("pw"));
        assert_eq!(s.get("chef-server", "superuser_key"), Some("K"));
        assert_eq!(s.get("chef-server", "nope"), None);
        assert!(
            !format!("{s:?}").contains("pw"),
            "values never appear in Debug"
        );
    }

    #[test]
    fn malformed_data_is_an_error() {
        assert!(Secrets::parse("[]", "t").is_err());
        assert!(Secrets::parse(r#"{"g":"x"}"#, "t").is_err());
        assert!(Secrets::parse(r#"{"g":{"n":1}}"#, "t").is_err());
    }
}
