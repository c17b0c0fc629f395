//! Chef Server's consolidated credentials as the daemon receives them (ops.md §3.4): a
//! JSON object `{"group": {"name": "value"}}` in the environment variable
//! `CHEF_SECRETS_DATA`, or written to the file descriptor named by `CHEF_SECRETS_FD`.
//! `push-jobs-server-ctl` starts the daemon that way, so no secret is ever written in
//! clear to disk. The variable is removed from the environment once read, as the
//! original's `chef_secrets_env` provider does.

use std::collections::HashMap;
use std::io::Read as _;

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

    /// Reads `CHEF_SECRETS_DATA` (then unsets it) or `CHEF_SECRETS_FD`; `None` when
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
            let n: i32 = fd.parse().map_err(|_| Error::Fd {
                fd: fd.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a number"),
            })?;
            let mut text = String::new();
            let path = format!("/proc/self/fd/{n}");
            std::fs::File::open(&path)
                .and_then(|mut f| f.read_to_string(&mut text))
                .map_err(|source| Error::Fd {
                    fd: fd.clone(),
                    source,
                })?;
            return Secrets::parse(&text, "CHEF_SECRETS_FD").map(Some);
        }
        Ok(None)
    }

    /// One secret.
    pub fn get(&self, group: &str, name: &str) -> Option<&str> {
        self.groups.get(group)?.get(name).map(String::as_str)
    }
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
