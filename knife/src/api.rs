//! Signed requests to the push server (and to Chef Server's search API), the way knife's
//! REST client makes them (ops.md §7.1): every path is under `chef_server_url`, each request
//! carries Chef's `X-Ops-*` headers for `node_name`/`client_key`. Error bodies
//! (`{"error": "..."}` or `{"error": ["..."]}`, http.md §1.3) become [`Error::Status`] with
//! the server's own message. Requests to a plain `http://` server go out through
//! [`crate::plain_http`], so a call never pays for TLS it does not use; reqwest (and its
//! TLS) is built only when an `https://` URL is first sent to.

use std::time::Duration;

use pushy_chef_http::RequestBuilder;
use reqwest::{Method, Url};
use serde_json::Value;

use crate::config::Config;
use crate::plain_http::PlainHttp;

/// The `X-Ops-Server-API-Version` we ask for (Chef Server API v1; the push server
/// ignores it).
const SERVER_API_VERSION: &str = "1";

/// Bounds every request except the event feed, whose body is open-ended.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Bounds connecting to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What we send as `User-Agent`.
const USER_AGENT: &str = concat!("push-jobs/", env!("CARGO_PKG_VERSION"));

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status.
    #[error("{method} {url}: {status}{}", message_suffix(message))]
    Status {
        /// The request method.
        method: &'static str,
        /// The request URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The server's message(s), joined; may be empty.
        message: String,
    },
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("{method} {url}: cannot reach the server: {source}")]
    Connection {
        /// The request method.
        method: &'static str,
        /// The request URL.
        url: String,
        /// The cause: a reqwest error, or a [`crate::plain_http::Error`].
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An answer we cannot use (not JSON, missing fields).
    #[error("{url}: unexpected answer: {reason}")]
    Unexpected {
        /// The request URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The key could not sign.
    #[error("signing the request: {0}")]
    Sign(#[from] pushy_protocol::chef_auth::SignError),
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl Error {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's message, when it answered with one.
    pub fn server_message(&self) -> Option<&str> {
        match self {
            Error::Status { message, .. } if !message.is_empty() => Some(message),
            _ => None,
        }
    }
}

/// The server's message from an error body: `{"error": "m"}`, `{"error": ["m", …]}`, or
/// the text itself when it is short and not JSON.
pub fn error_message(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => match &v["error"] {
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join("; "),
            Value::Null => String::new(),
            other => other.to_string(),
        },
        Err(_) if body.len() <= 200 => body.trim().to_owned(),
        Err(_) => String::new(),
    }
}

/// A signing HTTP client for one user and one organization.
pub struct Client {
    /// Signs as `node_name` with `sign_version`, sending `X-Chef-Version: 18.0.0` and
    /// API version 1 (signed under 1.3, a plain header under 1.0/1.1). Its reqwest client
    /// is built at its first send, which a plain-HTTP server never asks for.
    chef: pushy_chef_http::Client,
    /// Sends to `http://` URLs when the server is one and no proxy is set.
    plain: Option<PlainHttp>,
}

impl Client {
    /// A client for `config`, its key loaded; `env` tells whether a proxy is set.
    ///
    /// # Errors
    /// When the key cannot be read.
    pub fn new(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Client, crate::config::Error> {
        let key = config.client_key.load()?;
        let chef = pushy_chef_http::Client::builder(
            config.server_url.clone(),
            config.node_name.clone(),
            key,
            config.sign_version,
        )
        .chef_version("18.0.0")
        .server_api_version(SERVER_API_VERSION)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(USER_AGENT)
        .build_lazy();
        let plain = PlainHttp::for_base(&config.server_url, env, CONNECT_TIMEOUT, USER_AGENT);
        Ok(Client { chef, plain })
    }

    /// `chef_server_url` + `/` + `path` (path segments are joined literally; callers
    /// pass ids and names that are already URL-safe or use [`Client::url_segments`]).
    pub fn url(&self, path: &str) -> Url {
        let mut u = self.chef.base().clone();
        let joined = format!("{}/{}", u.path().trim_end_matches('/'), path);
        u.set_path(&joined);
        u
    }

    /// `chef_server_url` followed by each of `segments`, each percent-encoded once.
    pub fn url_segments(&self, segments: &[&str]) -> Url {
        self.chef.url(segments)
    }

    /// Sends and checks the status; the response is returned for the caller to read.
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        accept: &str,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, Error> {
        let name = method_name(&method);
        let mut request = self.chef.request(method, url.clone()).accept(accept);
        if let Some(body) = body {
            request = request.json(body.to_string());
        }
        if let Some(t) = timeout {
            request = request.timeout(t);
        }
        self.checked(request, name, &url).await
    }

    /// GET a JSON document.
    pub async fn get_json(&self, url: Url) -> Result<Value, Error> {
        let resp = self
            .send(
                Method::GET,
                url.clone(),
                None,
                "application/json",
                Some(REQUEST_TIMEOUT),
            )
            .await?;
        json_body(resp, "GET", &url).await
    }

    /// POST a JSON document and read the JSON answer.
    pub async fn post_json(&self, url: Url, body: &Value) -> Result<Value, Error> {
        let resp = self
            .send(
                Method::POST,
                url.clone(),
                Some(body),
                "application/json",
                Some(REQUEST_TIMEOUT),
            )
            .await?;
        json_body(resp, "POST", &url).await
    }

    /// GET raw bytes (job output) and the response headers.
    pub async fn get_bytes(
        &self,
        url: Url,
        accept: &str,
    ) -> Result<(reqwest::header::HeaderMap, Vec<u8>), Error> {
        let resp = self
            .send(
                Method::GET,
                url.clone(),
                None,
                accept,
                Some(REQUEST_TIMEOUT),
            )
            .await?;
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|source| Error::Connection {
            method: "GET",
            url: url.to_string(),
            source: source.into(),
        })?;
        Ok((headers, bytes.to_vec()))
    }

    /// Opens an event stream (no overall timeout: the caller bounds each read).
    pub async fn open_stream(
        &self,
        url: Url,
        last_event_id: Option<&str>,
    ) -> Result<reqwest::Response, Error> {
        let mut request = self.chef.get(url.clone()).accept("text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        self.checked(request, "GET", &url).await
    }

    /// Sends `request` (plain HTTP when it can); an error status becomes
    /// [`Error::Status`] with the server's message.
    async fn checked(
        &self,
        request: RequestBuilder<'_>,
        method: &'static str,
        url: &Url,
    ) -> Result<reqwest::Response, Error> {
        let connection = |source: Box<dyn std::error::Error + Send + Sync>| Error::Connection {
            method,
            url: url.to_string(),
            source,
        };
        let resp = match &self.plain {
            Some(plain) if plain.serves(url) => {
                let prepared = request.prepare()?;
                plain
                    .send(prepared)
                    .await
                    .map_err(|e| connection(e.into()))?
            }
            _ => request.send().await.map_err(|e| match e {
                pushy_chef_http::Error::Sign(e) => Error::Sign(e),
                pushy_chef_http::Error::Transport(source) => connection(source.into()),
            })?,
        };
        check_status(resp, method, url).await
    }
}

/// The response when its status is a success, else [`Error::Status`] with the server's
/// message.
async fn check_status(
    resp: reqwest::Response,
    method: &'static str,
    url: &Url,
) -> Result<reqwest::Response, Error> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    Err(Error::Status {
        method,
        url: url.to_string(),
        status: status.as_u16(),
        message: error_message(&text),
    })
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "request",
    }
}

async fn json_body(
    resp: reqwest::Response,
    method: &'static str,
    url: &Url,
) -> Result<Value, Error> {
    let text = resp.text().await.map_err(|source| Error::Connection {
        method,
        url: url.to_string(),
        source: source.into(),
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Unexpected {
        url: url.to_string(),
        reason: format!("not JSON ({e})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_from_both_body_shapes() {
        assert_eq!(
            error_message(r#"{"error":"invalid key supplied"}"#),
            "invalid key supplied"
        );
        assert_eq!(error_message(r#"{"error":["a","b"]}"#), "a; b");
        assert_eq!(error_message("Bad Gateway"), "Bad Gateway");
        assert_eq!(error_message("{}"), "");
    }

    #[test]
    fn status_errors_show_the_server_message() {
        let e = Error::Status {
            method: "POST",
            url: "http://x/organizations/o/pushy/jobs".into(),
            status: 400,
            message: "invalid key supplied".into(),
        };
        assert_eq!(
            e.to_string(),
            "POST http://x/organizations/o/pushy/jobs: 400: invalid key supplied"
        );
        assert_eq!(e.status(), Some(400));
    }
}
