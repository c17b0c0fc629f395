//! One client for Chef-signed HTTP requests (http.md §2.7) over reqwest. The server's
//! `request` tool and its Chef Server port, the CLI, the agent's config fetch, the ctl smoke
//! test and the fault harness all send through it.
//!
//! A [`Client`] is one principal (user or client), its private key and a signing protocol
//! version, a base URL and a reqwest connection pool. Each request is signed when it is
//! sent, its body hashed as the version requires, and carries the headers Chef's Ruby
//! clients send: `Accept`, `X-Chef-Version` and `X-Ops-Server-API-Version` when configured,
//! the `X-Ops-*` signature. What a status or a body means stays with each caller.
//!
//! A crate of its own, not a feature of `pushy-protocol`: that crate is sans-IO (bytes,
//! keys and times in, values out) and stays so.
#![warn(missing_docs)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use openssl::pkey::{PKey, Private};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use pushy_protocol::chef_auth::{self, ProtocolVersion, SignError, format_timestamp};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Url};

/// Every byte but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`): what a name
/// must be encoded with to be exactly one path segment or one query value.
pub const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` percent-encoded with [`COMPONENT`] (UTF-8 bytes, upper-case hex).
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key could not sign the request.
    #[error("signing the request")]
    Sign(#[from] SignError),
    /// No complete answer: connection, DNS, TLS, timeout, or the body broke off.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
}

/// A principal signing requests to one server.
#[derive(Clone, Debug)]
pub struct Client {
    http: Http,
    base: Url,
    name: String,
    key: PKey<Private>,
    version: ProtocolVersion,
    chef_version: Option<String>,
    server_api_version: Option<String>,
}

/// The reqwest client a [`Client`] sends through.
#[derive(Clone, Debug)]
enum Http {
    /// Built with the [`Client`] ([`Builder::build`], [`Builder::with_http`]).
    Ready(reqwest::Client),
    /// Built at the first [`RequestBuilder::send`] ([`Builder::build_lazy`]).
    Lazy(Arc<LazyHttp>),
}

/// A reqwest client not built yet, and the settings to build it with.
#[derive(Debug)]
struct LazyHttp {
    settings: HttpSettings,
    client: OnceLock<reqwest::Client>,
}

/// What [`Builder`] sets on the reqwest client. Kept as data, not as a
/// `reqwest::ClientBuilder`, so that a lazy client can be built when first needed and
/// built again if that failed.
#[derive(Clone, Debug, Default)]
struct HttpSettings {
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    accept_invalid_certs: bool,
    root_certificates: Vec<reqwest::Certificate>,
    user_agent: Option<String>,
    pool_max_idle_per_host: Option<usize>,
}

impl HttpSettings {
    fn build(&self) -> Result<reqwest::Client, reqwest::Error> {
        let mut http = reqwest::Client::builder();
        if let Some(t) = self.timeout {
            http = http.timeout(t);
        }
        if let Some(t) = self.connect_timeout {
            http = http.connect_timeout(t);
        }
        if self.accept_invalid_certs {
            http = http.tls_danger_accept_invalid_certs(true);
        }
        for cert in &self.root_certificates {
            http = http.add_root_certificate(cert.clone());
        }
        if let Some(agent) = &self.user_agent {
            http = http.user_agent(agent.clone());
        }
        if let Some(max) = self.pool_max_idle_per_host {
            http = http.pool_max_idle_per_host(max);
        }
        http.build()
    }
}

impl Http {
    /// The reqwest client, building a lazy one now if it is not built yet.
    fn client(&self) -> Result<&reqwest::Client, reqwest::Error> {
        match self {
            Http::Ready(client) => Ok(client),
            Http::Lazy(lazy) => {
                if let Some(client) = lazy.client.get() {
                    return Ok(client);
                }
                // Two first sends at once may both build; one client is kept, the other
                // dropped unused.
                let built = lazy.settings.build()?;
                Ok(lazy.client.get_or_init(|| built))
            }
        }
    }
}

/// Sets up a [`Client`]: what it sends besides the signature, and its connection pool.
#[must_use]
pub struct Builder {
    http: HttpSettings,
    base: Url,
    name: String,
    key: PKey<Private>,
    version: ProtocolVersion,
    chef_version: Option<String>,
    server_api_version: Option<String>,
}

/// A request signed and ready to send: everything [`RequestBuilder::send`] hands reqwest,
/// for a caller that sends it some other way ([`RequestBuilder::prepare`]).
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The method.
    pub method: Method,
    /// The URL.
    pub url: Url,
    /// The headers in the order they are sent: `Accept`, `X-Chef-Version`,
    /// `X-Ops-Server-API-Version` (when not signed), the `X-Ops-*` signature, the extra
    /// headers, then `Content-Type` when there is a body.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
    /// This request's own bound, instead of the client's.
    pub timeout: Option<Duration>,
}

impl Client {
    /// A client signing as `name` with `key` under protocol `version`; [`Client::url`] is
    /// relative to `base`.
    pub fn builder(
        base: Url,
        name: impl Into<String>,
        key: PKey<Private>,
        version: ProtocolVersion,
    ) -> Builder {
        Builder {
            http: HttpSettings::default(),
            base,
            name: name.into(),
            key,
            version,
            chef_version: None,
            server_api_version: None,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The base URL followed by `segments`, each one path segment (the url crate encodes
    /// `/`, `%`, `?`, `#`, spaces and controls). A base that cannot take a path
    /// (`mailto:`) comes back unchanged, and sending to it fails.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request; nothing is signed or sent before [`RequestBuilder::send`].
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder<'_> {
        RequestBuilder {
            client: self,
            method,
            url,
            body: None,
            accept: "application/json".to_owned(),
            headers: Vec::new(),
            timeout: None,
            signed: true,
        }
    }

    /// A GET.
    pub fn get(&self, url: Url) -> RequestBuilder<'_> {
        self.request(Method::GET, url)
    }

    /// A POST.
    pub fn post(&self, url: Url) -> RequestBuilder<'_> {
        self.request(Method::POST, url)
    }

    /// A PUT.
    pub fn put(&self, url: Url) -> RequestBuilder<'_> {
        self.request(Method::PUT, url)
    }

    /// The `X-Ops-*` headers signing `method` on `url`'s path with `body`, as of now (with
    /// `X-Ops-Server-API-Version` when protocol 1.3 signs it).
    ///
    /// # Errors
    /// When the key cannot sign.
    pub fn signed_headers(
        &self,
        method: &Method,
        url: &Url,
        body: &[u8],
    ) -> Result<Vec<(String, String)>, SignError> {
        let timestamp = format_timestamp(chrono::Utc::now());
        let request = chef_auth::Request {
            method: method.as_str(),
            path: url.path(),
            body,
            user_id: &self.name,
            timestamp: &timestamp,
            server_api_version: self.signed_api_version(),
        };
        chef_auth::sign_request(&self.key, self.version, &request)
    }

    /// Protocol 1.3 signs the API version; earlier versions send it as a plain header.
    fn signed_api_version(&self) -> Option<&str> {
        match self.version {
            ProtocolVersion::V1_3 => self.server_api_version.as_deref(),
            _ => None,
        }
    }
}

impl Builder {
    /// Sends `X-Chef-Version: version` with every request.
    pub fn chef_version(mut self, version: impl Into<String>) -> Builder {
        self.chef_version = Some(version.into());
        self
    }

    /// Sends `X-Ops-Server-API-Version: version` with every request, signed under 1.3.
    pub fn server_api_version(mut self, version: impl Into<String>) -> Builder {
        self.server_api_version = Some(version.into());
        self
    }

    /// Bounds each request from connecting to the end of its body.
    pub fn timeout(mut self, timeout: Duration) -> Builder {
        self.http.timeout = Some(timeout);
        self
    }

    /// Bounds connecting.
    pub fn connect_timeout(mut self, timeout: Duration) -> Builder {
        self.http.connect_timeout = Some(timeout);
        self
    }

    /// Skips TLS certificate checks (Chef's `ssl_verify_mode :verify_none`).
    pub fn accept_invalid_certs(mut self, accept: bool) -> Builder {
        self.http.accept_invalid_certs = accept;
        self
    }

    /// Trusts `cert` besides the system's roots (Chef's `trusted_certs_dir`).
    pub fn root_certificate(mut self, cert: reqwest::Certificate) -> Builder {
        self.http.root_certificates.push(cert);
        self
    }

    /// Sends `User-Agent: agent` (reqwest sends none by default).
    pub fn user_agent(mut self, agent: &str) -> Builder {
        self.http.user_agent = Some(agent.to_owned());
        self
    }

    /// Keeps at most `max` idle connections per host (0: a new connection every time).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Builder {
        self.http.pool_max_idle_per_host = Some(max);
        self
    }

    /// The client with its own connection pool.
    ///
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn build(self) -> Result<Client, reqwest::Error> {
        let http = self.http.build()?;
        Ok(self.with_http(http))
    }

    /// The client, its connection pool built at the first [`RequestBuilder::send`]
    /// instead of now. Building one sets up TLS, which with native-tls reads the system's
    /// whole certificate bundle (tens of milliseconds of CPU) even for `http://` URLs; a
    /// short-lived caller that may only sign ([`RequestBuilder::prepare`]) and send plain
    /// HTTP its own way skips that cost. An error building it comes from that send, as
    /// [`Error::Transport`], and the next send tries again.
    pub fn build_lazy(self) -> Client {
        let lazy = LazyHttp {
            settings: self.http.clone(),
            client: OnceLock::new(),
        };
        self.into_client(Http::Lazy(Arc::new(lazy)))
    }

    /// The client sending through `http` (its pool, timeouts and TLS settings), for a
    /// caller that signs as many principals over one pool. The builder's own timeout,
    /// TLS and pool settings are not used.
    pub fn with_http(self, http: reqwest::Client) -> Client {
        self.into_client(Http::Ready(http))
    }

    fn into_client(self, http: Http) -> Client {
        Client {
            http,
            base: self.base,
            name: self.name,
            key: self.key,
            version: self.version,
            chef_version: self.chef_version,
            server_api_version: self.server_api_version,
        }
    }
}

/// One request being put together.
#[must_use]
pub struct RequestBuilder<'c> {
    client: &'c Client,
    method: Method,
    url: Url,
    body: Option<Vec<u8>>,
    accept: String,
    headers: Vec<(&'static str, String)>,
    timeout: Option<Duration>,
    signed: bool,
}

impl RequestBuilder<'_> {
    /// Sends `body` as `Content-Type: application/json` (and hashes it into the signature).
    pub fn json(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// `Accept` (default `application/json`).
    pub fn accept(mut self, accept: &str) -> Self {
        accept.clone_into(&mut self.accept);
        self
    }

    /// One more header, sent after the signature.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Bounds this request instead of the client's timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends no signature (requests the server answers for anyone), only the other headers.
    pub fn unsigned(mut self) -> Self {
        self.signed = false;
        self
    }

    /// Signs the request and returns it as it would be sent, for a caller that sends it
    /// itself. The client's own settings (user agent, timeouts, TLS) are not in it.
    ///
    /// # Errors
    /// When the key cannot sign.
    pub fn prepare(self) -> Result<Prepared, SignError> {
        let c = self.client;
        let body = self.body.as_deref().unwrap_or_default();
        let signature = if self.signed {
            c.signed_headers(&self.method, &self.url, body)?
        } else {
            Vec::new()
        };
        let mut headers = vec![("Accept".to_owned(), self.accept)];
        if let Some(v) = &c.chef_version {
            headers.push(("X-Chef-Version".to_owned(), v.clone()));
        }
        if let Some(v) = &c.server_api_version
            && (!self.signed || c.signed_api_version().is_none())
        {
            headers.push(("X-Ops-Server-API-Version".to_owned(), v.clone()));
        }
        headers.extend(signature);
        headers.extend(
            self.headers
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value)),
        );
        if self.body.is_some() {
            headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
        }
        Ok(Prepared {
            method: self.method,
            url: self.url,
            headers,
            body: self.body,
            timeout: self.timeout,
        })
    }

    /// Signs and sends; the response is the caller's to read (streams stay open).
    ///
    /// # Errors
    /// [`Error::Sign`] when the key cannot sign, [`Error::Transport`] when no answer came
    /// (or a lazily built client could not be built).
    pub async fn send(self) -> Result<reqwest::Response, Error> {
        let client = self.client;
        let prepared = self.prepare()?;
        let http = client.http.client()?;
        let mut request = http.request(prepared.method, prepared.url);
        for (name, value) in prepared.headers {
            request = request.header(name, value);
        }
        if let Some(timeout) = prepared.timeout {
            request = request.timeout(timeout);
        }
        if let Some(body) = prepared.body {
            request = request.body(body);
        }
        Ok(request.send().await?)
    }

    /// Sends and reads the whole answer, whatever its status.
    ///
    /// # Errors
    /// As [`RequestBuilder::send`], and when the body breaks off.
    pub async fn read(self) -> Result<Reply, Error> {
        let response = self.send().await?;
        let url = response.url().clone();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Reply {
            url,
            status,
            headers,
            body,
        })
    }
}

/// An answer read in full.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Where it came from (after redirects).
    pub url: Url,
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[cfg(test)]
mod tests;
