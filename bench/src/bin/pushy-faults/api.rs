//! The server's REST API as the harness uses it: Chef-signed requests (protocol 1.3, as
//! the CLI sends them) for creating jobs, reading one job, listing jobs and node states.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use pushy_protocol::chef_auth::ProtocolVersion;
use serde_json::Value;

/// A signed client for one org, as one user.
pub struct Api {
    /// For the unsigned liveness probe.
    http: reqwest::Client,
    /// Signs as the user with protocol 1.3, through `http`.
    chef: pushy_chef_http::Client,
    /// `http://127.0.0.1:PORT`.
    base: String,
    org: String,
}

/// What a job POST came back with.
pub enum PostOutcome {
    /// 201, with the new job's id.
    Created(String),
    /// The server answered something else (a 503 during a database outage).
    Refused(u16, String),
    /// No connection could be made: the server is down, so no job was created.
    Down,
    /// The request may have reached the server but no answer came (killed mid-request):
    /// a job may or may not exist.
    NoAnswer(String),
}

/// One job as `GET …/pushy/jobs/ID` shows it.
#[derive(Clone, Debug, Default)]
pub struct JobView {
    pub status: String,
    /// Node name to its status.
    pub nodes: BTreeMap<String, String>,
}

impl Api {
    /// A client signing as `user` with the private key in `key_file`.
    pub fn new(
        base: &str,
        org: &str,
        user: &str,
        key_file: &std::path::Path,
    ) -> anyhow::Result<Api> {
        let pem = std::fs::read_to_string(key_file)
            .with_context(|| format!("reading {}", key_file.display()))?;
        let key = pushy_protocol::keys::private_key_from_pem(&pem)
            .with_context(|| format!("reading {}", key_file.display()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        let chef = pushy_chef_http::Client::builder(
            reqwest::Url::parse(base).context("parsing the server URL")?,
            user,
            key,
            ProtocolVersion::V1_3,
        )
        .with_http(http.clone());
        Ok(Api {
            http,
            chef,
            base: base.to_owned(),
            org: org.to_owned(),
        })
    }

    fn org_path(&self, rest: &str) -> String {
        format!("/organizations/{}/pushy/{rest}", self.org)
    }

    /// One signed request; the status and body text.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &str,
    ) -> Result<(u16, String), pushy_chef_http::Error> {
        let url = reqwest::Url::parse(&format!("{}{path}", self.base))
            .expect("the base parsed in Api::new, and a path keeps it a URL");
        let mut request = self.chef.request(method, url);
        if !body.is_empty() {
            request = request.json(body.to_owned());
        }
        let reply = request.read().await?;
        Ok((reply.status.as_u16(), reply.text()))
    }

    /// `POST …/pushy/jobs`.
    pub async fn post_job(&self, body: &Value) -> PostOutcome {
        let path = self.org_path("jobs");
        match self
            .call(reqwest::Method::POST, &path, &body.to_string())
            .await
        {
            Ok((201, text)) => {
                let id = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["uri"].as_str().map(str::to_owned))
                    .and_then(|uri| uri.rsplit('/').next().map(str::to_owned));
                match id {
                    Some(id) if id.len() == 32 => PostOutcome::Created(id),
                    _ => PostOutcome::Refused(201, format!("201 without a job uri: {text}")),
                }
            }
            Ok((status, text)) => PostOutcome::Refused(status, text),
            Err(pushy_chef_http::Error::Transport(e)) if e.is_connect() => PostOutcome::Down,
            Err(e) => PostOutcome::NoAnswer(format!("{e:#}")),
        }
    }

    /// `GET …/pushy/jobs/ID`: `Ok(None)` on 404.
    pub async fn job(&self, id: &str) -> anyhow::Result<Option<JobView>> {
        let (status, text) = self
            .call(
                reqwest::Method::GET,
                &self.org_path(&format!("jobs/{id}")),
                "",
            )
            .await?;
        match status {
            200 => {}
            404 => return Ok(None),
            _ => anyhow::bail!("GET job {id}: {status} {text}"),
        }
        let v: Value = serde_json::from_str(&text).context("job body")?;
        let mut view = JobView {
            status: v["status"].as_str().unwrap_or("?").to_owned(),
            nodes: BTreeMap::new(),
        };
        if let Some(map) = v["nodes"].as_object() {
            for (status, names) in map {
                for name in names.as_array().into_iter().flatten() {
                    if let Some(name) = name.as_str() {
                        view.nodes.insert(name.to_owned(), status.clone());
                    }
                }
            }
        }
        Ok(Some(view))
    }

    /// `GET …/pushy/jobs`: every job of the org, id and status.
    pub async fn jobs(&self) -> anyhow::Result<Vec<(String, String)>> {
        let (status, text) = self
            .call(reqwest::Method::GET, &self.org_path("jobs"), "")
            .await?;
        anyhow::ensure!(status == 200, "GET jobs: {status} {text}");
        let v: Value = serde_json::from_str(&text).context("job list")?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| {
                Some((
                    j["id"].as_str()?.to_owned(),
                    j["status"].as_str().unwrap_or("?").to_owned(),
                ))
            })
            .collect())
    }

    /// `GET …/pushy/node_states`: node name to `availability`.
    pub async fn node_states(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let (status, text) = self
            .call(reqwest::Method::GET, &self.org_path("node_states"), "")
            .await?;
        anyhow::ensure!(status == 200, "GET node_states: {status} {text}");
        let v: Value = serde_json::from_str(&text).context("node states")?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| {
                Some((
                    n["node_name"].as_str()?.to_owned(),
                    n["availability"].as_str().unwrap_or("?").to_owned(),
                ))
            })
            .collect())
    }

    /// `GET /pushy/_status` (unsigned): whether the server answers.
    pub async fn alive(&self) -> bool {
        matches!(
            self.http
                .get(format!("{}/pushy/_status", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await,
            Ok(r) if r.status().is_success()
        )
    }
}
