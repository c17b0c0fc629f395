//! `~/.chef/credentials`: TOML, one table per profile (Chef's "credentials file"):
//!
//! ```toml
//! [default]
//! client_name     = "alice"                  # or node_name
//! client_key      = "~/.chef/alice.pem"      # a path (relative to ~/.chef) or the PEM itself
//! chef_server_url = "https://chef.example.com/organizations/acme"
//!
//! [staging]
//! client_name     = "alice"
//! client_key      = "alice-staging.pem"
//! chef_server_url = "https://chef-staging.example.com/organizations/acme"
//! local_chef_dir  = "/var/opt/push-jobs/chef"   # ours: --search without a Chef Server
//! ```
//!
//! Keys this CLI does not use are ignored (the file is shared with knife and others).

use std::path::Path;

use super::{Error, KeySource, Settings};

/// The settings of `profile` in `src` (the contents of `path`); `Ok(None)` when the file
/// has no such profile.
pub fn parse(
    src: &str,
    path: &Path,
    profile: &str,
    home: Option<&Path>,
) -> Result<Option<Settings>, Error> {
    let doc: toml::Table = toml::from_str(src).map_err(|e| Error::Toml {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let Some(table) = doc.get(profile) else {
        return Ok(None);
    };
    let table = table.as_table().ok_or_else(|| Error::Toml {
        path: path.to_path_buf(),
        message: format!("profile [{profile}] is not a table"),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let string = |key: &str| -> Result<Option<String>, Error> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(Error::Toml {
                path: path.to_path_buf(),
                message: format!(
                    "[{profile}] {key} must be a string, not {}",
                    other.type_str()
                ),
            }),
        }
    };
    let node_name = match string("client_name")? {
        Some(n) => Some(n),
        None => string("node_name")?,
    };
    Ok(Some(Settings {
        node_name,
        client_key: string("client_key")?.map(|k| KeySource::from_setting(&k, dir, home)),
        chef_server_url: string("chef_server_url")?,
        local_chef_dir: string("local_chef_dir")?.map(|d| super::resolve_path(&d, dir, home)),
        sign_version: string("authentication_protocol_version")?,
    }))
}

/// The profile names in `src`, for the "no such profile" message.
pub fn profiles(src: &str) -> Vec<String> {
    toml::from_str::<toml::Table>(src)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const FILE: &str = r#"
[default]
client_name = "alice"
client_key = "alice.pem"
chef_server_url = "https://chef.example.com/organizations/acme"
knife = { editor = "vim" }

[work]
node_name = "bob"
client_key = """
-----BEGIN RSA PRIVATE KEY-----
MIIB
-----END RSA PRIVATE KEY-----
"""
chef_server_url = "http://127.0.0.1:10003/organizations/pedant"
local_chef_dir = "~/data/chef"
authentication_protocol_version = "1.1"
"#;

    fn read(profile: &str) -> Option<Settings> {
        parse(
            FILE,
            Path::new("/home/al/.chef/credentials"),
            profile,
            Some(Path::new("/home/al")),
        )
        .unwrap()
    }

    #[test]
    fn reads_the_default_profile() {
        let s = read("default").unwrap();
        assert_eq!(s.node_name.as_deref(), Some("alice"));
        assert_eq!(
            s.client_key,
            Some(KeySource::Path("/home/al/.chef/alice.pem".into()))
        );
        assert_eq!(
            s.chef_server_url.as_deref(),
            Some("https://chef.example.com/organizations/acme")
        );
        assert_eq!(s.local_chef_dir, None);
    }

    #[test]
    fn reads_another_profile_with_an_inline_key() {
        let s = read("work").unwrap();
        assert_eq!(s.node_name.as_deref(), Some("bob"));
        assert!(matches!(s.client_key, Some(KeySource::Pem(ref p)) if p.contains("MIIB")));
        assert_eq!(s.local_chef_dir, Some(PathBuf::from("/home/al/data/chef")));
        assert_eq!(s.sign_version.as_deref(), Some("1.1"));
    }

    #[test]
    fn a_missing_profile_is_none_and_bad_toml_names_the_file() {
        assert!(read("nope").is_none());
        let e = parse("[default\n", Path::new("/c/credentials"), "default", None).unwrap_err();
        assert!(e.to_string().contains("/c/credentials"), "{e}");
        let e = parse(
            "[default]\nclient_name = 3\n",
            Path::new("/c/credentials"),
            "default",
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("client_name must be a string"),
            "{e}"
        );
        assert_eq!(profiles(FILE), vec!["default", "work"]);
    }
}
