//! Who the CLI signs as and which server it talks to, from the places a Chef user already
//! keeps them (ops.md §7.1). Read once by `main` through [`load`]; nothing reads the
//! environment or these files later.
//!
//! Lowest to highest precedence:
//! 1. `~/.chef/credentials`, profile `--profile` / `CHEF_PROFILE` / `~/.chef/context` /
//!    `default` ([`credentials`]);
//! 2. the knife config file ([`ruby`]): `--config` / `CHEF_CONFIG`, else `config.rb` or
//!    `knife.rb` in `$KNIFE_HOME`, in a `.chef` directory in the working directory or a
//!    parent, or in `~/.chef` (knife's search order; the credentials are read first and
//!    the config file applied over them, as knife does);
//! 3. environment variables and flags (`CHEF_SERVER_URL`/`--server-url`,
//!    `CHEF_NODE_NAME`/`-u`, `CHEF_CLIENT_KEY`/`-k`, `PUSH_JOBS_LOCAL_DIR`/`--local-dir`,
//!    `--sign-version`), a flag winning over its variable.
//!
//! `~` is `$HOME`; relative key paths in a file are relative to that file's directory.

pub mod credentials;
pub mod ruby;

pub use pushy_rbconf::resolve_path;

use std::path::{Path, PathBuf};

use pushy_protocol::chef_auth::ProtocolVersion;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting no source gave.
    #[error("no {setting} configured: {hint}")]
    Missing {
        /// The setting's name in config.rb.
        setting: &'static str,
        /// Where it can be given.
        hint: &'static str,
    },
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A Ruby config line this reader does not understand.
    #[error("{}:{line}: {message}", path.display())]
    Ruby {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was not understood.
        message: String,
    },
    /// The credentials file is not the TOML we expect.
    #[error("{}: {message}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A profile was asked for by name and the credentials file lacks it.
    #[error("profile {profile:?} is not in {} (profiles there: {available})", path.display())]
    ProfileNotFound {
        /// The profile asked for.
        profile: String,
        /// The credentials file.
        path: PathBuf,
        /// The profiles it has, comma-separated.
        available: String,
    },
    /// `chef_server_url` is not `http(s)://HOST[:PORT]/organizations/ORG`.
    #[error("chef_server_url {url:?} is not usable: {reason}")]
    BadServerUrl {
        /// The value.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The private key is not a PEM RSA key.
    #[error("the client key {origin} is not a PEM private key")]
    BadKey {
        /// Its path, or "given inline".
        origin: String,
    },
    /// `--sign-version` / `authentication_protocol_version` is not one we sign with.
    #[error("signing protocol version {0:?} is not supported (use 1.3, 1.1 or 1.0)")]
    BadSignVersion(String),
}

/// Where the client key comes from: a file, or the PEM text itself (credentials files
/// may embed it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A PEM file.
    Path(PathBuf),
    /// The PEM text.
    Pem(String),
}

impl KeySource {
    /// A `client_key` value as written in a file in `dir`: PEM text if it looks like one,
    /// else a path (`~` expanded, relative to `dir`).
    pub fn from_setting(value: &str, dir: &Path, home: Option<&Path>) -> KeySource {
        if value.trim_start().starts_with("-----BEGIN") {
            KeySource::Pem(value.to_owned())
        } else {
            KeySource::Path(resolve_path(value, dir, home))
        }
    }

    /// Reads and parses the key.
    ///
    /// # Errors
    /// When the file cannot be read or holds no private key.
    pub fn load(&self) -> Result<openssl::pkey::PKey<openssl::pkey::Private>, Error> {
        let (pem, origin) = match self {
            KeySource::Path(p) => (
                std::fs::read_to_string(p).map_err(|source| Error::Io {
                    path: p.clone(),
                    source,
                })?,
                p.display().to_string(),
            ),
            KeySource::Pem(pem) => (pem.clone(), "given inline".to_owned()),
        };
        pushy_protocol::keys::private_key_from_pem(&pem).map_err(|_| Error::BadKey { origin })
    }
}

/// One source's settings; `None` means "this source does not say".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `node_name` / `client_name`: who requests are signed as.
    pub node_name: Option<String>,
    /// `client_key`.
    pub client_key: Option<KeySource>,
    /// `chef_server_url`, ending in `/organizations/ORG`.
    pub chef_server_url: Option<String>,
    /// The server's local key directory, for `--search` without a Chef Server.
    pub local_chef_dir: Option<PathBuf>,
    /// `authentication_protocol_version`.
    pub sign_version: Option<String>,
}

impl Settings {
    /// Overlays `higher` on `self`: whatever `higher` says wins.
    pub fn overlay(&mut self, higher: Settings) {
        if higher.node_name.is_some() {
            self.node_name = higher.node_name;
        }
        if higher.client_key.is_some() {
            self.client_key = higher.client_key;
        }
        if higher.chef_server_url.is_some() {
            self.chef_server_url = higher.chef_server_url;
        }
        if higher.local_chef_dir.is_some() {
            self.local_chef_dir = higher.local_chef_dir;
        }
        if higher.sign_version.is_some() {
            self.sign_version = higher.sign_version;
        }
    }
}

/// What the process was started with: the parts of the environment config depends on,
/// plus the flags (clap has already merged each flag with its variable).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$KNIFE_HOME`.
    pub knife_home: Option<PathBuf>,
    /// The working directory (knife looks for `.chef/` in it and its parents).
    pub cwd: Option<PathBuf>,
    /// `--config` / `CHEF_CONFIG`.
    pub config_file: Option<PathBuf>,
    /// `--profile` / `CHEF_PROFILE`.
    pub profile: Option<String>,
    /// Flags and their variables, the top layer.
    pub flags: Settings,
}

/// The settled configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Who requests are signed as.
    pub node_name: String,
    /// The private key.
    pub client_key: KeySource,
    /// `chef_server_url` without a trailing `/`.
    pub server_url: reqwest::Url,
    /// The organization named in the URL.
    pub org: String,
    /// The signing protocol.
    pub sign_version: ProtocolVersion,
    /// The server's local key directory, if configured.
    pub local_chef_dir: Option<PathBuf>,
    /// The files that were read, for `--verbose`-style diagnostics.
    pub files: Vec<PathBuf>,
}

/// Reads the files `sources` points at and settles the configuration.
///
/// # Errors
/// A file that exists but cannot be read or understood, a profile asked for by name that
/// does not exist, a missing or malformed setting.
pub fn load(sources: &Sources, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Error> {
    let home = sources.home.as_deref();
    let mut settings = Settings::default();
    let mut files = Vec::new();
    if let Some(layer) = read_credentials(sources, &mut files)? {
        settings.overlay(layer);
    }
    if let Some(path) = config_file(sources)? {
        let src = read(&path)?;
        settings.overlay(ruby::parse(&src, &path, home, env)?);
        files.push(path);
    }
    settings.overlay(sources.flags.clone());
    settle(settings, files)
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The chosen profile of `~/.chef/credentials`, if the file exists.
fn read_credentials(
    sources: &Sources,
    files: &mut Vec<PathBuf>,
) -> Result<Option<Settings>, Error> {
    let Some(home) = sources.home.as_deref() else {
        return Ok(None);
    };
    let chef = home.join(".chef");
    let path = chef.join("credentials");
    // knife's order: the flag or CHEF_PROFILE, then ~/.chef/context, then "default".
    let named = match &sources.profile {
        Some(p) => Some(p.clone()),
        None => std::fs::read_to_string(chef.join("context"))
            .ok()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty()),
    };
    if !path.exists() {
        return match named {
            Some(profile) => Err(Error::ProfileNotFound {
                profile,
                path,
                available: "none: the file does not exist".to_owned(),
            }),
            None => Ok(None),
        };
    }
    let src = read(&path)?;
    let profile = named.clone().unwrap_or_else(|| "default".to_owned());
    let found = credentials::parse(&src, &path, &profile, Some(home))?;
    files.push(path.clone());
    match (found, named) {
        (Some(s), _) => Ok(Some(s)),
        (None, None) => Ok(None),
        (None, Some(profile)) => Err(Error::ProfileNotFound {
            profile,
            available: credentials::profiles(&src).join(", "),
            path,
        }),
    }
}

/// The knife config file to read, if any.
fn config_file(sources: &Sources) -> Result<Option<PathBuf>, Error> {
    if let Some(path) = &sources.config_file {
        // The OS's own reason ("No such file or directory", "Permission denied").
        if let Err(source) = std::fs::metadata(path) {
            return Err(Error::Io {
                path: path.clone(),
                source,
            });
        }
        return Ok(Some(path.clone()));
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(k) = &sources.knife_home {
        dirs.push(k.clone());
    }
    if let Some(cwd) = &sources.cwd {
        dirs.extend(cwd.ancestors().map(|d| d.join(".chef")));
    }
    if let Some(home) = &sources.home {
        dirs.push(home.join(".chef"));
    }
    for dir in dirs {
        for name in ["config.rb", "knife.rb"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(Some(candidate));
            }
        }
    }
    Ok(None)
}

const NODE_NAME_HINT: &str = "set client_name in ~/.chef/credentials, node_name in ~/.chef/config.rb, CHEF_NODE_NAME, or --user";
const CLIENT_KEY_HINT: &str =
    "set client_key in ~/.chef/credentials or ~/.chef/config.rb, CHEF_CLIENT_KEY, or --key";
const SERVER_URL_HINT: &str = "set chef_server_url in ~/.chef/credentials or ~/.chef/config.rb, CHEF_SERVER_URL, or --server-url";

/// Checks the merged settings and fills in defaults.
pub fn settle(s: Settings, files: Vec<PathBuf>) -> Result<Config, Error> {
    let node_name = s
        .node_name
        .filter(|n| !n.is_empty())
        .ok_or(Error::Missing {
            setting: "node_name",
            hint: NODE_NAME_HINT,
        })?;
    let client_key = s.client_key.ok_or(Error::Missing {
        setting: "client_key",
        hint: CLIENT_KEY_HINT,
    })?;
    let url = s
        .chef_server_url
        .filter(|u| !u.is_empty())
        .ok_or(Error::Missing {
            setting: "chef_server_url",
            hint: SERVER_URL_HINT,
        })?;
    let (server_url, org) = parse_server_url(&url)?;
    let version_text = s.sign_version.unwrap_or_else(|| "1.3".to_owned());
    let sign_version = ProtocolVersion::from_sign_header(&format!("version={version_text}"))
        .filter(|v| *v != ProtocolVersion::V1_2)
        .ok_or(Error::BadSignVersion(version_text))?;
    Ok(Config {
        node_name,
        client_key,
        server_url,
        org,
        sign_version,
        local_chef_dir: s.local_chef_dir,
        files,
    })
}

/// `http(s)://HOST[:PORT][/PREFIX]/organizations/ORG[/]` → (URL without the trailing `/`,
/// ORG).
pub fn parse_server_url(url: &str) -> Result<(reqwest::Url, String), Error> {
    let bad = |reason| Error::BadServerUrl {
        url: url.to_owned(),
        reason,
    };
    let mut parsed = reqwest::Url::parse(url).map_err(|_| bad("not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("it must not have a query or fragment"));
    }
    let path = parsed.path().trim_end_matches('/').to_owned();
    let mut segments = path.rsplit('/');
    let org = segments.next().unwrap_or_default().to_owned();
    if segments.next() != Some("organizations") || org.is_empty() {
        return Err(bad("it must end in /organizations/ORG"));
    }
    parsed.set_path(&path);
    Ok((parsed, org))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str) -> Option<KeySource> {
        Some(KeySource::Path(p.into()))
    }

    fn complete() -> Settings {
        Settings {
            node_name: Some("alice".into()),
            client_key: key("/k.pem"),
            chef_server_url: Some("https://chef.example.com/organizations/acme/".into()),
            local_chef_dir: None,
            sign_version: None,
        }
    }

    #[test]
    fn settles_with_defaults() {
        let c = settle(complete(), vec![]).unwrap();
        assert_eq!(c.org, "acme");
        assert_eq!(
            c.server_url.as_str(),
            "https://chef.example.com/organizations/acme"
        );
        assert_eq!(c.sign_version, ProtocolVersion::V1_3);
    }

    #[test]
    fn a_missing_setting_is_named_with_where_to_set_it() {
        for (clear, name) in [(0, "node_name"), (1, "client_key"), (2, "chef_server_url")] {
            let mut s = complete();
            match clear {
                0 => s.node_name = None,
                1 => s.client_key = None,
                _ => s.chef_server_url = None,
            }
            let e = settle(s, vec![]).unwrap_err().to_string();
            assert!(e.starts_with(&format!("no {name} configured")), "{e}");
            assert!(e.contains("--"), "{e}");
        }
    }

    #[test]
    fn server_urls_must_name_an_org() {
        for bad in [
            "https://chef.example.com",
            "https://chef.example.com/organizations/",
            "ftp://x/organizations/a",
            "not a url",
            "https://x/organizations/a?x=1",
        ] {
            assert!(parse_server_url(bad).is_err(), "{bad}");
        }
        let (u, org) = parse_server_url("http://127.0.0.1:10003/organizations/pedant").unwrap();
        assert_eq!(org, "pedant");
        assert_eq!(u.as_str(), "http://127.0.0.1:10003/organizations/pedant");
        let (u, _) = parse_server_url("https://lb/chef/organizations/o").unwrap();
        assert_eq!(u.path(), "/chef/organizations/o");
    }

    #[test]
    fn sign_versions() {
        for (v, want) in [
            ("1.1", Some(ProtocolVersion::V1_1)),
            ("1.0", Some(ProtocolVersion::V1_0)),
            ("1.3", Some(ProtocolVersion::V1_3)),
            ("1.2", None),
            ("2", None),
        ] {
            let mut s = complete();
            s.sign_version = Some(v.into());
            assert_eq!(settle(s, vec![]).ok().map(|c| c.sign_version), want, "{v}");
        }
    }

    #[test]
    fn higher_layers_win_setting_by_setting() {
        let mut s = complete();
        s.overlay(Settings {
            node_name: Some("bob".into()),
            ..Settings::default()
        });
        assert_eq!(s.node_name.as_deref(), Some("bob"));
        assert_eq!(s.client_key, key("/k.pem"));
    }

    fn home_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join(".chef")).unwrap();
        for (name, text) in files {
            std::fs::write(t.path().join(".chef").join(name), text).unwrap();
        }
        t
    }

    fn sources(home: &Path) -> Sources {
        Sources {
            home: Some(home.to_path_buf()),
            cwd: Some(home.to_path_buf()),
            ..Sources::default()
        }
    }

    const CREDS: &str = "[default]\nclient_name = \"alice\"\nclient_key = \"alice.pem\"\nchef_server_url = \"http://a/organizations/one\"\n[two]\nclient_name = \"bob\"\nclient_key = \"/b.pem\"\nchef_server_url = \"http://b/organizations/two\"\n";

    #[test]
    fn load_reads_profiles_context_and_config_rb() {
        let none = |_: &str| None;
        let t = home_with(&[("credentials", CREDS)]);
        let c = load(&sources(t.path()), &none).unwrap();
        assert_eq!((c.node_name.as_str(), c.org.as_str()), ("alice", "one"));
        assert_eq!(
            c.client_key,
            KeySource::Path(t.path().join(".chef/alice.pem"))
        );
        let mut s = sources(t.path());
        s.profile = Some("two".into());
        assert_eq!(load(&s, &none).unwrap().node_name, "bob");
        s.profile = Some("three".into());
        let e = load(&s, &none).unwrap_err().to_string();
        assert!(e.contains("\"three\"") && e.contains("default, two"), "{e}");
        // ~/.chef/context picks the profile when none is named.
        std::fs::write(t.path().join(".chef/context"), "two\n").unwrap();
        assert_eq!(load(&sources(t.path()), &none).unwrap().node_name, "bob");
        // config.rb is applied over the credentials; flags over both.
        std::fs::write(t.path().join(".chef/config.rb"), "node_name 'carol'\n").unwrap();
        let mut s = sources(t.path());
        let c = load(&s, &none).unwrap();
        assert_eq!((c.node_name.as_str(), c.org.as_str()), ("carol", "two"));
        s.flags.node_name = Some("dave".into());
        assert_eq!(load(&s, &none).unwrap().node_name, "dave");
    }

    #[test]
    fn load_finds_knife_rb_and_honours_config_flag() {
        let none = |_: &str| None;
        let t = home_with(&[(
            "knife.rb",
            "node_name 'k'\nclient_key 'k.pem'\nchef_server_url 'http://k/organizations/k'\n",
        )]);
        let c = load(&sources(t.path()), &none).unwrap();
        assert_eq!(c.node_name, "k");
        assert_eq!(c.files, vec![t.path().join(".chef/knife.rb")]);
        let mut s = sources(t.path());
        s.config_file = Some(t.path().join("missing.rb"));
        assert!(matches!(load(&s, &none), Err(Error::Io { .. })));
        // Nothing at all: the first missing setting is named.
        let empty = tempfile::tempdir().unwrap();
        let e = load(&sources(empty.path()), &none).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Missing {
                    setting: "node_name",
                    ..
                }
            ),
            "{e}"
        );
    }
}
