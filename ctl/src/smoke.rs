//! `test`: a smoke test of the running server, in place of the original's oc-pushy-pedant run
//! (ops.md §2.2), which is not shipped.
//!
//! 1. `GET <url>/pushy/_status` answers 200 with `"status": "it's alive"`;
//! 2. with `--org ORG --client NAME --key FILE`: a config fetch signed as that client
//!    (`GET /organizations/ORG/pushy/config/NAME?ccpk=…`) answers 200 with a `config`
//!    document, as a node's agent would get it.
//!
//! `test [--smoke] [--url URL] [--org ORG --client NAME --key FILE]`; the URL defaults to
//! `http://127.0.0.1:<api_port>` from the computed settings.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use pushy_chef_http::encode_component;
use pushy_protocol::chef_auth::ProtocolVersion;
use serde_json::Value;

/// Who to fetch a config as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// Organization.
    pub org: String,
    /// Client (node) name.
    pub name: String,
    /// Its private key.
    pub key: PathBuf,
}

/// The parsed `test` arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmokeArgs {
    /// Base URL of the daemon's HTTP API.
    pub url: Option<String>,
    /// The signed config fetch, when asked for.
    pub client: Option<Client>,
}

impl SmokeArgs {
    /// Parses the words after `test`.
    ///
    /// # Errors
    /// An unknown option, a missing value, or only some of `--org`/`--client`/`--key`.
    pub fn parse(args: &[String]) -> anyhow::Result<SmokeArgs> {
        let (mut url, mut org, mut name, mut key) = (None, None, None, None);
        let mut words = args.iter();
        while let Some(word) = words.next() {
            let mut value = |opt: &str| {
                words
                    .next()
                    .cloned()
                    .with_context(|| format!("test: {opt} needs a value"))
            };
            match word.as_str() {
                "--smoke" => {}
                "--url" => url = Some(value("--url")?),
                "--org" => org = Some(value("--org")?),
                "--client" => name = Some(value("--client")?),
                "--key" => key = Some(PathBuf::from(value("--key")?)),
                other => bail!(
                    "test: unknown argument {other:?} (the pedant suite is not shipped; options: --url URL, --org ORG --client NAME --key FILE)"
                ),
            }
        }
        let client = match (org, name, key) {
            (Some(org), Some(name), Some(key)) => Some(Client { org, name, key }),
            (None, None, None) => None,
            _ => bail!("test: --org, --client and --key go together"),
        };
        Ok(SmokeArgs { url, client })
    }
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// `Ok(detail)` or `Err(why)`.
    pub outcome: Result<String, String>,
}

async fn status(http: &reqwest::Client, base: &str) -> Result<String, String> {
    let url = format!("{base}/pushy/_status");
    let resp = http
        .get(&url)
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let code = resp.status();
    let body: Value = resp
        .json()
        .await
        .map_err(|e| format!("GET {url}: {code}, not JSON: {e}"))?;
    if !code.is_success() || body["status"] != "it's alive" {
        return Err(format!("GET {url}: {code} {body}"));
    }
    Ok(format!(
        "it's alive (incarnation {}, {} node(s) heartbeating)",
        body["incarnation_id"].as_str().unwrap_or("?"),
        body["node_fsm_count"]
    ))
}

async fn config(http: &reqwest::Client, base: &str, client: &Client) -> Result<String, String> {
    let pem = std::fs::read_to_string(&client.key)
        .map_err(|e| format!("reading {}: {e}", client.key.display()))?;
    let key = pushy_protocol::keys::private_key_from_pem(&pem)
        .map_err(|e| format!("{}: {e}", client.key.display()))?;
    // A CurveZMQ public key is an X25519 one; only its Z85 text is sent.
    let curve = openssl::pkey::PKey::generate_x25519()
        .and_then(|k| k.raw_public_key())
        .map_err(|e| format!("making a Curve key: {e}"))?;
    let ccpk = z85::encode(curve);
    let path = format!(
        "/organizations/{}/pushy/config/{}",
        encode_component(&client.org),
        encode_component(&client.name)
    );
    let url = format!("{base}{path}?ccpk={}", encode_component(&ccpk));
    let url = reqwest::Url::parse(&url).map_err(|e| format!("GET {url}: {e}"))?;
    // Signed as the client with protocol 1.1, as a node's agent signs its config fetch.
    let chef = pushy_chef_http::Client::builder(
        url.clone(),
        client.name.as_str(),
        key,
        ProtocolVersion::V1_1,
    )
    .with_http(http.clone());
    let resp = chef.get(url.clone()).send().await.map_err(|e| match e {
        pushy_chef_http::Error::Sign(e) => format!("signing: {e}"),
        pushy_chef_http::Error::Transport(e) => format!("GET {url}: {e}"),
    })?;
    let code = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !code.is_success() || body["type"] != "config" {
        return Err(format!("GET {path}: {code} {text}"));
    }
    Ok(format!(
        "config for {} in {}: ZeroMQ at {}",
        client.name,
        client.org,
        body["push_jobs"]["heartbeat"]["command_addr"]
            .as_str()
            .unwrap_or("?")
    ))
}

/// Runs the checks against `base` (no trailing slash).
pub async fn run(base: &str, args: &SmokeArgs) -> Vec<Check> {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return vec![Check {
                name: "HTTP client".into(),
                outcome: Err(e.to_string()),
            }];
        }
    };
    let mut checks = vec![Check {
        name: "GET /pushy/_status".into(),
        outcome: status(&http, base).await,
    }];
    if let Some(client) = &args.client {
        checks.push(Check {
            name: format!("signed config fetch as {}", client.name),
            outcome: config(&http, base, client).await,
        });
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn arguments() {
        assert_eq!(
            SmokeArgs::parse(&words(&["--smoke"])).unwrap(),
            SmokeArgs::default()
        );
        let a = SmokeArgs::parse(&words(&[
            "--url",
            "http://h:1",
            "--org",
            "o",
            "--client",
            "n",
            "--key",
            "/k.pem",
        ]))
        .unwrap();
        assert_eq!(a.url.as_deref(), Some("http://h:1"));
        assert_eq!(a.client.unwrap().key, PathBuf::from("/k.pem"));
        assert!(SmokeArgs::parse(&words(&["--org", "o"])).is_err());
        assert!(SmokeArgs::parse(&words(&["--all"])).is_err());
    }
}
