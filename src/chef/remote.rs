//! [`RemoteChefServer`]: the real Chef Infra Server over HTTP, asked the three questions
//! the original push server asks (http.md §1.2.1): A the org GUID and C a group, both
//! through the load balancer signed as the superuser with protocol 1.1 (§2.7); B a name's
//! public keys, unauthenticated and straight to erchef (§8.4 item 30). And one of ours:
//! a node search, for the dashboard's start form, signed like A and C.
//!
//! Owns one signing [`pushy_chef_http::Client`] (connection pool, timeouts) and two small
//! in-memory caches.
//! Built once at startup and shared as `Arc<dyn ChefServer>` by the auth pipeline.
//!
//! Deliberate differences from the original:
//! * ORG, NAME and GROUP are percent-encoded path segments (the original inserted them
//!   verbatim, so a name holding `/` or `?` could reach another resource). The segments
//!   `""`, `.`, `..` and names over 255 bytes are never sent; they cannot be Chef names, so
//!   they "do not exist".
//! * Org GUIDs are cached for 10 minutes rather than effectively forever, so an org
//!   deleted and recreated under the same name is noticed without a restart.
//! * Groups are cached for 5 seconds (the original did not cache them): authorization
//!   fetches the same few groups for every request, and a membership change still shows
//!   within seconds.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use openssl::pkey::{PKey, Private};
use pushy_chef_http::{Client, Reply, RequestBuilder, encode_component};
use pushy_protocol::chef_auth::ProtocolVersion;
use pushy_protocol::job::OrgGuid;
use pushy_protocol::keys::public_key_from_pem;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::port::{
    ChefServer, Error, Group, MAX_SEARCH_NODES, NodeSearch, Principal, PrincipalKind,
    PrincipalLookup,
};

/// How long a found org GUID is trusted. The original kept it ~3 years (http.md §1.2.1 A);
/// 10 minutes still spares the Chef Server nearly every lookup yet notices a recreated org.
const ORG_TTL: Duration = Duration::from_mins(10);
/// How long a group answer is trusted: short, so membership changes show quickly.
const GROUP_TTL: Duration = Duration::from_secs(5);
/// Entries per cache, as the original's org cache (http.md §1.2.1 A).
const CACHE_CAPACITY: usize = 10_000;
/// The `X-Ops-Server-API-Version` the original requests on every call.
const SERVER_API_VERSION: &str = "1";
/// The original's `User-Agent` on principal lookups (http.md §1.2.1 B).
const PRINCIPALS_USER_AGENT: &str = "opscode-pushy-server pushy pubkey";

/// Where and as whom to reach the Chef Server (http.md §6.1).
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// `pushy.erchef_root_url`, e.g. `https://chef.example.com`: the load balancer, used for
    /// org and group lookups.
    pub root_url: String,
    /// `http://{erchef.hostname}:{erchef.port}` (default `http://localhost:8000`): erchef
    /// itself, used for the unauthenticated principal lookups that bypass the LB.
    pub principals_url: String,
    /// `pushy.chef_api_version`, sent as `X-Chef-Version` (default `11.1.0`).
    pub chef_api_version: String,
    /// The superuser org and group lookups are signed as (`pivotal`).
    pub superuser_name: String,
    /// The superuser's private key.
    pub superuser_key: PKey<Private>,
    /// Connect and total timeout of every call, so a hung Chef Server fails the request
    /// with 502 instead of holding it open.
    pub timeout: Duration,
    /// Skip TLS certificate checks: Chef Server usually has a self-signed certificate.
    pub accept_invalid_certs: bool,
}

/// The Chef Infra Server over HTTP (http.md §1.2.1).
#[derive(Debug)]
pub struct RemoteChefServer {
    /// Signs as the superuser with protocol 1.1 and sends the original's `X-Chef-Version`
    /// and `X-Ops-Server-API-Version` (http.md §2.7); principal lookups go unsigned.
    client: Client,
    root_url: String,
    principals_url: String,
    /// Org name → GUID; only found orgs (a 404 is asked again next time).
    orgs: Mutex<TtlCache<String, OrgGuid>>,
    /// (org, group) → group or `None` for 404; 5xx answers are not cached.
    groups: Mutex<TtlCache<(String, String), Option<Group>>>,
}

impl RemoteChefServer {
    /// Builds the HTTP client and checks the configuration.
    ///
    /// # Errors
    /// [`Error::Upstream`] when a URL does not parse, the superuser key is not RSA, or the
    /// TLS backend cannot be initialised.
    pub fn new(cfg: RemoteConfig) -> Result<Self, Error> {
        let parse = |what: &str, url: &str| {
            Url::parse(url).map_err(|e| Error::Upstream(format!("invalid {what} {url:?}: {e}")))
        };
        let root = parse("erchef_root_url", &cfg.root_url)?;
        parse("principals url", &cfg.principals_url)?;
        cfg.superuser_key.rsa().map_err(|_| {
            Error::Upstream(format!(
                "the key of {} is not an RSA key",
                cfg.superuser_name
            ))
        })?;
        let client = Client::builder(
            root,
            cfg.superuser_name,
            cfg.superuser_key,
            ProtocolVersion::V1_1,
        )
        .chef_version(cfg.chef_api_version)
        .server_api_version(SERVER_API_VERSION)
        .connect_timeout(cfg.timeout)
        .timeout(cfg.timeout)
        .accept_invalid_certs(cfg.accept_invalid_certs)
        .build()
        .map_err(|e| Error::Upstream(format!("building the HTTP client: {}", chain(&e))))?;
        Ok(RemoteChefServer {
            client,
            root_url: cfg.root_url.trim_end_matches('/').to_owned(),
            principals_url: cfg.principals_url.trim_end_matches('/').to_owned(),
            orgs: Mutex::new(TtlCache::new(ORG_TTL, CACHE_CAPACITY)),
            groups: Mutex::new(TtlCache::new(GROUP_TTL, CACHE_CAPACITY)),
        })
    }

    /// `{base}/organizations/ORG[/kind/NAME]` with every name percent-encoded, or `None`
    /// when a name cannot be a path segment at all.
    fn url(base: &str, org: &str, rest: Option<(&str, &str)>) -> Result<Option<Url>, Error> {
        let Some(org) = segment(org) else {
            return Ok(None);
        };
        let mut url = format!("{base}/organizations/{org}");
        if let Some((kind, name)) = rest {
            let Some(name) = segment(name) else {
                return Ok(None);
            };
            let _ = write!(url, "/{kind}/{name}"); // Writing to a String cannot fail.
        }
        Url::parse(&url)
            .map(Some)
            .map_err(|e| Error::Upstream(format!("invalid URL {url:?}: {e}")))
    }
}

#[async_trait]
impl ChefServer for RemoteChefServer {
    /// Call A (http.md §1.2.1): 200 → `guid`, 404 → `None`, anything else fails.
    async fn org_guid(&self, org: &str) -> Result<Option<OrgGuid>, Error> {
        #[derive(Deserialize)]
        struct Org {
            guid: String,
        }
        if let Some(guid) = lock(&self.orgs).get(org, Instant::now()) {
            return Ok(Some(guid));
        }
        let Some(url) = Self::url(&self.root_url, org, None)? else {
            return Ok(None);
        };
        let reply = send(self.client.get(url)).await?;
        match reply.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            status => return Err(reply.unexpected(status)),
        }
        let guid = OrgGuid(reply.json::<Org>("organization")?.guid);
        lock(&self.orgs).insert(org.to_owned(), guid.clone(), Instant::now());
        Ok(Some(guid))
    }

    /// Call B (http.md §1.2.1): every key entry, users first, members or not; never cached.
    async fn principals(&self, org: &str, name: &str) -> Result<PrincipalLookup, Error> {
        let Some(url) = Self::url(&self.principals_url, org, Some(("principals", name)))? else {
            return Ok(PrincipalLookup::PrincipalNotFound);
        };
        let request = self
            .client
            .get(url)
            .unsigned()
            .header("Content-Type", "application/json")
            .header("User-Agent", PRINCIPALS_USER_AGENT);
        let reply = send(request).await?;
        match reply.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return reply.not_found(),
            status => return Err(reply.unexpected(status)),
        }
        let entries = if reply.is_v1() {
            reply.json::<PrincipalsV1>("principals")?.principals
        } else {
            vec![reply.json::<PrincipalEntry>("principal")?]
        };
        let total = entries.len();
        let found: Vec<Principal> = entries
            .into_iter()
            .filter_map(|e| e.into_principal(org))
            .collect();
        if found.is_empty() && total > 0 {
            // Answering Found([]) would turn Chef's garbage into a 401 or 403 for the user.
            return Err(Error::Upstream(format!(
                "none of the {total} key entries of {name:?} in {org:?} is usable"
            )));
        }
        Ok(PrincipalLookup::Found(found))
    }

    /// Call C (http.md §1.2.1): 200 → the group, 404 → `None`, 5xx → an empty group, i.e.
    /// "not a member" (§8.4 item 34; not cached, it is likely transient); other statuses fail.
    async fn group(&self, org: &str, group: &str) -> Result<Option<Group>, Error> {
        let key = (org.to_owned(), group.to_owned());
        if let Some(answer) = lock(&self.groups).get(&key, Instant::now()) {
            return Ok(answer);
        }
        let Some(url) = Self::url(&self.root_url, org, Some(("groups", group)))? else {
            return Ok(None);
        };
        let reply = send(self.client.get(url)).await?;
        let answer = match reply.status {
            StatusCode::OK => Some(reply.json::<Group>("group")?),
            StatusCode::NOT_FOUND => None,
            status if status.is_server_error() => {
                tracing::warn!(org, group, %status, "Chef Server failed a group lookup; treating as not a member");
                return Ok(Some(Group::default()));
            }
            status => return Err(reply.unexpected(status)),
        };
        lock(&self.groups).insert(key, answer.clone(), Instant::now());
        Ok(answer)
    }

    /// Chef Server's partial search, `POST /organizations/ORG/search/node?q=…` with
    /// `{"name":["name"]}`: only names cross the wire, a page at a time, signed as the
    /// superuser through the load balancer. A 400 is the query's fault and says why; so is
    /// a search whose pages take more than [`SEARCH_DEADLINE`] in all.
    async fn search_nodes(&self, org: &str, query: &str) -> Result<NodeSearch, Error> {
        self.search_within(org, query, SEARCH_DEADLINE).await
    }
}

impl RemoteChefServer {
    /// [`ChefServer::search_nodes`], every page within `deadline`. Each request has the
    /// client's own timeout, but the pages of one search follow each other: without an
    /// overall bound, a slow Chef Server would hold the dashboard's request for as many
    /// timeouts as there are pages. Past it the search is refused rather than failed: the
    /// Chef Server did answer, only not a query this big this fast, so narrowing it is the
    /// remedy (a 400 saying so), not the 502 of a Chef Server that cannot be reached.
    async fn search_within(
        &self,
        org: &str,
        query: &str,
        deadline: Duration,
    ) -> Result<NodeSearch, Error> {
        match tokio::time::timeout(deadline, self.search_pages(org, query)).await {
            Ok(answer) => answer,
            Err(_) => {
                tracing::warn!(org, query, ?deadline, "Chef Server node search timed out");
                Ok(NodeSearch::Refused(format!(
                    "the Chef Server did not finish the search within {} s; narrow it",
                    deadline.as_secs()
                )))
            }
        }
    }

    /// Every page of a partial search, up to [`MAX_SEARCH_NODES`] names.
    async fn search_pages(&self, org: &str, query: &str) -> Result<NodeSearch, Error> {
        let Some(base) = Self::url(&self.root_url, org, Some(("search", "node")))? else {
            return Ok(NodeSearch::Found(Vec::new()));
        };
        let mut names = Vec::new();
        let mut start = 0;
        loop {
            let mut url = base.clone();
            // Sorted by id, as Chef's own clients page, so pages neither skip nor repeat.
            url.set_query(Some(&format!(
                "q={}&sort=X_CHEF_id_CHEF_X%20asc&start={start}&rows={SEARCH_PAGE}",
                encode_component(query)
            )));
            let reply = send(self.client.post(url).json(NAME_ONLY)).await?;
            match reply.status {
                StatusCode::OK => {}
                StatusCode::BAD_REQUEST => return Ok(NodeSearch::Refused(reply.message())),
                status => return Err(reply.unexpected(status)),
            }
            let page = reply.json::<SearchPage>("search result")?;
            // Said on the first page rather than after reading every page up to the limit.
            if page.total > MAX_SEARCH_NODES {
                return Ok(NodeSearch::too_many());
            }
            names.extend(page.rows.into_iter().filter_map(|row| row.data.name));
            if names.len() > MAX_SEARCH_NODES {
                return Ok(NodeSearch::too_many());
            }
            // By the rows asked for, not those returned: a page can come back short (the
            // index still lists a deleted node, whose row the server leaves out), and the
            // next page starts where this one was meant to end, as Chef's own clients page.
            start += SEARCH_PAGE;
            if start >= page.total {
                return Ok(NodeSearch::of(names));
            }
        }
    }
}

/// How long all the pages of one node search may take together.
const SEARCH_DEADLINE: Duration = Duration::from_secs(30);
/// Rows asked for per search page: Chef Server's own default.
const SEARCH_PAGE: usize = 1000;
/// The partial search body: each row is just `{"name": …}`.
const NAME_ONLY: &str = r#"{"name":["name"]}"#;

/// A partial search page.
#[derive(Deserialize)]
struct SearchPage {
    total: usize,
    rows: Vec<SearchRow>,
}

#[derive(Deserialize)]
struct SearchRow {
    #[serde(default)]
    data: SearchData,
}

#[derive(Default, Deserialize)]
struct SearchData {
    name: Option<String>,
}

/// One principal entry as erchef sends it (http.md §1.2.1 B).
#[derive(Deserialize)]
struct PrincipalEntry {
    name: String,
    public_key: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    org_member: bool,
}

/// The v1 body: `{"principals":[P, ...]}`.
#[derive(Deserialize)]
struct PrincipalsV1 {
    principals: Vec<PrincipalEntry>,
}

impl PrincipalEntry {
    /// The usable principal, or `None` (logged) for an unknown type or unreadable key.
    fn into_principal(self, org: &str) -> Option<Principal> {
        let kind = match self.kind.as_str() {
            "user" => PrincipalKind::User,
            "client" => PrincipalKind::Client,
            other => {
                tracing::warn!(org, name = %self.name, kind = other, "Chef Server sent a principal of unknown type; skipping it");
                return None;
            }
        };
        match public_key_from_pem(&self.public_key) {
            Ok(public_key) => Some(Principal {
                name: self.name,
                kind,
                public_key,
                org_member: self.org_member,
            }),
            Err(e) => {
                tracing::warn!(org, name = %self.name, error = %e, "Chef Server sent an unreadable public key; skipping it");
                None
            }
        }
    }
}

/// How a Chef Server answer (read in full: bodies here are small JSON objects) is read.
trait Answer {
    /// Whether erchef answered in API v1: its `X-Ops-Server-API-Version` header says
    /// `"response_version":"1"`; without the header the body is v0.
    fn is_v1(&self) -> bool;
    fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, Error>;
    /// A principal 404: which thing is missing is in the body's `not_found`.
    fn not_found(&self) -> Result<PrincipalLookup, Error>;
    fn unexpected(&self, status: StatusCode) -> Error;
    /// What an error answer says: `{"error": [..]}` or `{"error": ".."}` (bounded).
    fn message(&self) -> String;
}

impl Answer for Reply {
    fn is_v1(&self) -> bool {
        let Some(header) = self.header("X-Ops-Server-API-Version") else {
            return false;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(header) else {
            return false;
        };
        match &v["response_version"] {
            serde_json::Value::String(s) => s == "1",
            serde_json::Value::Number(n) => n.as_i64() == Some(1),
            _ => false,
        }
    }

    fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Upstream(format!("unreadable {what} from {}: {e}", self.url)))
    }

    fn not_found(&self) -> Result<PrincipalLookup, Error> {
        let body: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        match body["not_found"].as_str() {
            Some("org") => Ok(PrincipalLookup::OrgNotFound),
            Some("principal") => Ok(PrincipalLookup::PrincipalNotFound),
            _ => Err(self.unexpected(StatusCode::NOT_FOUND)),
        }
    }

    fn message(&self) -> String {
        let body: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        let text = match &body["error"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(list) => list
                .iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join("; "),
            _ => String::from_utf8_lossy(&self.body).into_owned(),
        };
        text.chars().take(200).collect()
    }

    fn unexpected(&self, status: StatusCode) -> Error {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(200).collect();
        Error::Upstream(format!("{} answered {status}: {body}", self.url))
    }
}

/// Sends a request and reads the whole response under the client's timeouts.
async fn send(request: RequestBuilder<'_>) -> Result<Reply, Error> {
    request.read().await.map_err(|e| match e {
        pushy_chef_http::Error::Transport(e) => transport(e),
        pushy_chef_http::Error::Sign(e) => {
            Error::Upstream(format!("signing as the superuser: {e}"))
        }
    })
}

/// Connection failures and timeouts are the original's `conn_failed` (502); the rest 500.
fn transport(e: reqwest::Error) -> Error {
    if e.is_connect() || e.is_timeout() {
        Error::Unreachable(chain(&e))
    } else {
        Error::Upstream(chain(&e))
    }
}

/// An error and its sources, since reqwest's own message hides the cause.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(out, ": {s}"); // Writing to a String cannot fail.
        source = s.source();
    }
    out
}

/// `name` as one percent-encoded path segment (only RFC 3986 unreserved bytes stay), or
/// `None` for `""`, `.` and `..`, which URL parsing would fold into a different path, and
/// for names longer than any Chef name ([`MAX_NAME_LEN`](super::port::MAX_NAME_LEN)), which
/// Chef Server or its proxy could only refuse.
fn segment(name: &str) -> Option<String> {
    if matches!(name, "" | "." | "..") || name.len() > super::port::MAX_NAME_LEN {
        return None;
    }
    Some(encode_component(name))
}

/// Locks a cache. A panic elsewhere cannot leave a cache half-updated (each operation is a
/// single map call), so a poisoned lock is still good to use.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A bounded map whose entries expire `ttl` after insertion. Pure: callers pass `now`.
#[derive(Debug)]
struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<K, (Instant, V)>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    fn new(ttl: Duration, capacity: usize) -> Self {
        TtlCache {
            ttl,
            capacity,
            entries: HashMap::new(),
        }
    }

    /// The live value for `key`; an expired one is dropped.
    fn get<Q>(&mut self, key: &Q, now: Instant) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let (at, value) = self.entries.get(key)?;
        if now.saturating_duration_since(*at) < self.ttl {
            return Some(value.clone());
        }
        self.entries.remove(key);
        None
    }

    /// Stores `value`. When full, expired entries go first, then arbitrary ones down to 90%
    /// of capacity (any eviction is correct for a cache, and doing a batch keeps a full
    /// cache from scanning the map on every insert).
    fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
            let keep = self.capacity - self.capacity.div_ceil(10);
            if self.entries.len() > keep {
                let mut excess = self.entries.len() - keep;
                self.entries.retain(|_, _| {
                    if excess == 0 {
                        return true;
                    }
                    excess -= 1;
                    false
                });
            }
        }
        self.entries.insert(key, (now, value));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, OnceLock};

    use axum::Router;
    use axum::body::Body;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, Response, Uri};
    use openssl::pkey::Public;
    use openssl::rsa::Rsa;
    use pushy_protocol::chef_auth::{DEFAULT_CLOCK_SKEW, SignedHeaders, verify_signature};
    use pushy_protocol::keys::public_pem;
    use serde_json::json;

    use super::*;

    const GUID: &str = "0123456789abcdef0123456789abcdef";
    const V1_HEADER: &str =
        r#"{"min_version":"0","max_version":"1","request_version":"1","response_version":"1"}"#;

    /// Test keys, generated once: the superuser's and three principal keys.
    struct Keys {
        pivotal: PKey<Private>,
        other: [PKey<Private>; 3],
    }

    fn keys() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| {
            let gen_key = || PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
            Keys {
                pivotal: gen_key(),
                other: [gen_key(), gen_key(), gen_key()],
            }
        })
    }

    fn pem(i: usize) -> String {
        public_pem(&keys().other[i])
    }

    /// The fake Chef Server: remembers every raw path asked for.
    struct Fake {
        pivotal: PKey<Public>,
        seen: Mutex<Vec<String>>,
    }

    impl Fake {
        fn count(&self, path: &str) -> usize {
            lock(&self.seen).iter().filter(|p| *p == path).count()
        }
    }

    fn reply(status: u16, api_version: Option<&str>, body: serde_json::Value) -> Response<Body> {
        let mut builder = Response::builder()
            .status(status)
            .header("Content-Type", "application/json");
        if let Some(v) = api_version {
            builder = builder.header("X-Ops-Server-API-Version", v);
        }
        builder
            .body(Body::from(body.to_string()))
            .expect("response")
    }

    fn entry(name: &str, kind: &str, key: String, member: bool) -> serde_json::Value {
        json!({"name": name, "public_key": key, "type": kind,
               "authz_id": "fedcba9876543210fedcba9876543210", "org_member": member})
    }

    /// 401 unless the request is correctly signed by pivotal with protocol 1.1 and
    /// carries the extra headers of http.md §1.2.1 A.
    fn check_signed(
        fake: &Fake,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> bool {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let Ok(signed) = SignedHeaders::check(get, chrono::Utc::now(), DEFAULT_CLOCK_SKEW) else {
            return false;
        };
        signed.user_id == "pivotal"
            && signed.version == ProtocolVersion::V1_1
            && get("X-Ops-Server-API-Version") == Some("1")
            && get("X-Chef-Version") == Some("11.1.0")
            && get("Accept") == Some("application/json")
            && verify_signature(&signed, method.as_str(), uri.path(), body, &fake.pivotal)
    }

    /// Principal lookups are unauthenticated but carry the original's headers.
    fn check_principal_headers(headers: &HeaderMap) -> bool {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        get("X-Ops-Userid").is_none()
            && get("X-Chef-Version") == Some("11.1.0")
            && get("Accept") == Some("application/json")
            && get("Content-Type") == Some("application/json")
            && get("X-Ops-Server-API-Version") == Some("1")
            && get("User-Agent") == Some(PRINCIPALS_USER_AGENT)
    }

    async fn handle(
        State(fake): State<Arc<Fake>>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Response<Body> {
        let path = uri.path().to_owned();
        lock(&fake.seen).push(path.clone());
        if path.contains("/principals/") {
            if !check_principal_headers(&headers) {
                return reply(400, None, json!({"error": "bad principal headers"}));
            }
            return principal(&path).await;
        }
        if !check_signed(&fake, &method, &uri, &headers, &body) {
            return reply(
                401,
                None,
                json!({"error": ["Invalid signature for user or client 'pivotal'"]}),
            );
        }
        match path.as_str() {
            "/organizations/acme" => reply(
                200,
                None,
                json!({"name": "acme", "full_name": "Acme", "guid": GUID}),
            ),
            "/organizations/acme/groups/admins" => reply(
                200,
                None,
                json!({
                "actors": ["alice", "node1"], "users": ["alice"], "clients": ["node1"],
                "groups": ["ops", "pushy_job_writers"], "orgname": "acme", "name": "admins", "groupname": "admins"}),
            ),
            "/organizations/acme/groups/sparse" => reply(200, None, json!({"groupname": "sparse"})),
            "/organizations/acme/groups/flaky" => reply(500, None, json!({"error": "boom"})),
            "/organizations/acme/groups/forbidden" => reply(403, None, json!({"error": "no"})),
            "/organizations/acme/search/node"
                if uri.query().is_some_and(|q| q.contains("q=slow")) =>
            {
                tokio::time::sleep(Duration::from_secs(2)).await;
                search(&uri, &body)
            }
            "/organizations/acme/search/node" if method == Method::POST => search(&uri, &body),
            _ => reply(404, None, json!({"error": ["not found"]})),
        }
    }

    /// Partial search over `node0000`..`node2499`, names only; `q` is `*:*` or
    /// `name:PREFIX*`, anything else is a 400 as Chef Server words it.
    fn search(uri: &Uri, body: &[u8]) -> Response<Body> {
        if serde_json::from_slice::<serde_json::Value>(body).ok() != Some(json!({"name": ["name"]}))
        {
            return reply(400, None, json!({"error": ["not a partial search"]}));
        }
        let url = Url::parse(&format!("http://fake{uri}")).expect("url");
        let param = |key: &str| {
            url.query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let (q, start, rows) = (param("q"), param("start"), param("rows"));
        assert_eq!(param("sort"), "X_CHEF_id_CHEF_X asc");
        let prefix = match q.as_str() {
            "*:*" => "",
            q => match q.strip_prefix("name:").and_then(|g| g.strip_suffix('*')) {
                Some(prefix) => prefix,
                None => {
                    let why = format!("invalid search query: '{q}'");
                    return reply(400, None, json!({"error": [why]}));
                }
            },
        };
        let all: Vec<String> = (0..2500)
            .map(|i| format!("node{i:04}"))
            .filter(|n| n.starts_with(prefix))
            .collect();
        let (start, rows): (usize, usize) = (start.parse().unwrap(), rows.parse().unwrap());
        let page: Vec<_> = all
            .iter()
            .skip(start)
            .take(rows)
            .map(|n| json!({"url": format!("https://chef/organizations/acme/nodes/{n}"), "data": {"name": n}}))
            .collect();
        reply(
            200,
            None,
            json!({"total": all.len(), "start": start, "rows": page}),
        )
    }

    async fn principal(path: &str) -> Response<Body> {
        let Some(rest) = path.strip_prefix("/organizations/") else {
            return reply(404, None, json!({}));
        };
        let (org, name) = rest.split_once("/principals/").unwrap_or_default();
        if org != "acme" {
            return reply(
                404,
                None,
                json!({"error": "Cannot find org", "not_found": "org"}),
            );
        }
        let v1 = |entries: Vec<serde_json::Value>| {
            reply(200, Some(V1_HEADER), json!({"principals": entries}))
        };
        match name {
            "alice" => reply(200, None, entry("alice", "user", pem(0), true)),
            "a%2Fb" => reply(200, None, entry("a/b", "client", pem(1), true)),
            "both" => v1(vec![
                entry("both", "user", pem(0), true),
                entry(
                    "both",
                    "user",
                    "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n".into(),
                    true,
                ),
                entry("both", "user", pem(1), true),
                entry("both", "client", pem(2), true),
            ]),
            "outsider" => v1(vec![entry("outsider", "user", pem(2), false)]),
            "badkeys" => v1(vec![entry("badkeys", "client", "nonsense".into(), true)]),
            "weird404" => reply(404, None, json!({"error": "somewhere else"})),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                reply(200, None, entry("slow", "user", pem(0), true))
            }
            _ => reply(
                404,
                None,
                json!({"error": "Cannot find principal", "not_found": "principal"}),
            ),
        }
    }

    async fn start() -> (Arc<Fake>, String) {
        let fake = Arc::new(Fake {
            pivotal: PKey::public_key_from_pem(public_pem(&keys().pivotal).as_bytes())
                .expect("public key"),
            seen: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = Router::new().fallback(handle).with_state(Arc::clone(&fake));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, url)
    }

    fn config(url: &str, key: &PKey<Private>) -> RemoteConfig {
        RemoteConfig {
            root_url: format!("{url}/"),
            principals_url: url.to_owned(),
            chef_api_version: "11.1.0".into(),
            superuser_name: "pivotal".into(),
            superuser_key: key.clone(),
            timeout: Duration::from_secs(5),
            accept_invalid_certs: true,
        }
    }

    fn chef(url: &str) -> RemoteChefServer {
        RemoteChefServer::new(config(url, &keys().pivotal)).expect("client")
    }

    fn found(lookup: PrincipalLookup) -> Vec<(String, PrincipalKind, bool)> {
        let PrincipalLookup::Found(list) = lookup else {
            panic!("expected Found, got {lookup:?}");
        };
        list.into_iter()
            .map(|p| (p.name, p.kind, p.org_member))
            .collect()
    }

    fn same_key(p: &Principal, i: usize) -> bool {
        p.public_key.public_eq(&keys().other[i])
    }

    #[tokio::test]
    async fn search_reads_every_page_of_names() {
        let (fake, url) = start().await;
        let chef = chef(&url);
        let NodeSearch::Found(all) = chef.search_nodes("acme", "*:*").await.unwrap() else {
            panic!("a refusal");
        };
        assert_eq!(all.len(), 2500);
        assert_eq!(
            (all[0].as_str(), all[2499].as_str()),
            ("node0000", "node2499")
        );
        assert_eq!(fake.count("/organizations/acme/search/node"), 3);
        let found = chef.search_nodes("acme", "name:node249*").await.unwrap();
        let expected: Vec<String> = (2490..2500).map(|i| format!("node{i}")).collect();
        assert_eq!(found, NodeSearch::Found(expected));
        assert_eq!(
            chef.search_nodes("acme", "role:web AND x").await.unwrap(),
            NodeSearch::Refused("invalid search query: 'role:web AND x'".into())
        );
    }

    #[tokio::test]
    async fn a_search_slower_than_its_deadline_is_refused() {
        let (_fake, url) = start().await;
        let chef = chef(&url);
        let found = chef
            .search_within("acme", "slow", Duration::from_millis(200))
            .await
            .unwrap();
        let NodeSearch::Refused(why) = found else {
            panic!("expected a refusal, got {found:?}");
        };
        assert!(
            why.contains("did not finish") && why.contains("narrow it"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn org_guid_found_is_signed_and_cached() {
        let (fake, url) = start().await;
        let chef = chef(&url);
        for _ in 0..3 {
            let guid = chef.org_guid("acme").await.expect("lookup");
            assert_eq!(guid, Some(OrgGuid(GUID.into())));
        }
        assert_eq!(fake.count("/organizations/acme"), 1);
    }

    #[tokio::test]
    async fn org_guid_not_found_is_none_and_not_cached() {
        let (fake, url) = start().await;
        let chef = chef(&url);
        assert_eq!(chef.org_guid("ghost").await.expect("lookup"), None);
        assert_eq!(chef.org_guid("ghost").await.expect("lookup"), None);
        assert_eq!(fake.count("/organizations/ghost"), 2);
    }

    #[tokio::test]
    async fn wrong_superuser_key_is_refused_by_the_fake() {
        let (_fake, url) = start().await;
        let chef = RemoteChefServer::new(config(&url, &keys().other[0])).expect("client");
        let err = chef.org_guid("acme").await.expect_err("bad signature");
        assert!(
            matches!(&err, Error::Upstream(m) if m.contains("401")),
            "{err:?}"
        );
        let err = chef
            .group("acme", "admins")
            .await
            .expect_err("bad signature");
        assert!(
            matches!(&err, Error::Upstream(m) if m.contains("401")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn principals_v0_single_entry() {
        let (_fake, url) = start().await;
        let lookup = chef(&url)
            .principals("acme", "alice")
            .await
            .expect("lookup");
        let PrincipalLookup::Found(list) = lookup else {
            panic!("expected Found, got {lookup:?}");
        };
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, "alice");
        assert_eq!(list[0].kind, PrincipalKind::User);
        assert!(list[0].org_member);
        assert!(same_key(&list[0], 0));
    }

    #[tokio::test]
    async fn principals_v1_keeps_order_and_skips_bad_keys() {
        let (_fake, url) = start().await;
        let lookup = chef(&url).principals("acme", "both").await.expect("lookup");
        let PrincipalLookup::Found(list) = lookup else {
            panic!("expected Found, got {lookup:?}");
        };
        let shape: Vec<_> = list.iter().map(|p| (p.name.as_str(), p.kind)).collect();
        assert_eq!(
            shape,
            [
                ("both", PrincipalKind::User),
                ("both", PrincipalKind::User),
                ("both", PrincipalKind::Client)
            ]
        );
        assert!(same_key(&list[0], 0) && same_key(&list[1], 1) && same_key(&list[2], 2));
    }

    #[tokio::test]
    async fn principals_keeps_non_members() {
        let (_fake, url) = start().await;
        let lookup = chef(&url)
            .principals("acme", "outsider")
            .await
            .expect("lookup");
        assert_eq!(
            found(lookup),
            [("outsider".to_owned(), PrincipalKind::User, false)]
        );
    }

    #[tokio::test]
    async fn principals_not_found_variants() {
        let (_fake, url) = start().await;
        let chef = chef(&url);
        let org = chef.principals("ghost", "alice").await.expect("lookup");
        assert!(matches!(org, PrincipalLookup::OrgNotFound), "{org:?}");
        let name = chef.principals("acme", "nobody").await.expect("lookup");
        assert!(
            matches!(name, PrincipalLookup::PrincipalNotFound),
            "{name:?}"
        );
        let other = chef
            .principals("acme", "weird404")
            .await
            .expect_err("odd 404");
        assert!(matches!(other, Error::Upstream(_)), "{other:?}");
    }

    #[tokio::test]
    async fn principals_with_no_usable_key_is_upstream() {
        let (_fake, url) = start().await;
        let err = chef(&url)
            .principals("acme", "badkeys")
            .await
            .expect_err("no keys");
        assert!(matches!(err, Error::Upstream(_)), "{err:?}");
    }

    #[tokio::test]
    async fn fixes_names_are_percent_encoded_path_segments() {
        let (fake, url) = start().await;
        let chef = chef(&url);
        let lookup = chef.principals("acme", "a/b").await.expect("lookup");
        assert_eq!(
            found(lookup),
            [("a/b".to_owned(), PrincipalKind::Client, true)]
        );
        assert_eq!(fake.count("/organizations/acme/principals/a%2Fb"), 1);
        // Dot segments would be folded away by URL parsing: never sent, never exist.
        let dots = chef.principals("acme", "..").await.expect("lookup");
        assert!(
            matches!(dots, PrincipalLookup::PrincipalNotFound),
            "{dots:?}"
        );
        assert_eq!(chef.org_guid(".").await.expect("lookup"), None);
        assert_eq!(chef.group("acme", "..").await.expect("lookup"), None);
        assert_eq!(lock(&fake.seen).len(), 1);
    }

    /// A name no Chef name can be (over 255 bytes) is unknown without a lookup, which
    /// could only fail; 255 bytes is still asked.
    #[tokio::test]
    async fn names_too_long_for_chef_are_unknown_without_asking() {
        let (fake, url) = start().await;
        let chef = chef(&url);
        let long = "a".repeat(256);
        assert_eq!(chef.org_guid(&long).await.expect("lookup"), None);
        let user = chef.principals("acme", &long).await.expect("lookup");
        assert!(
            matches!(user, PrincipalLookup::PrincipalNotFound),
            "{user:?}"
        );
        let org = chef.principals(&long, "alice").await.expect("lookup");
        assert!(matches!(org, PrincipalLookup::PrincipalNotFound), "{org:?}");
        assert_eq!(chef.group("acme", &long).await.expect("lookup"), None);
        assert!(lock(&fake.seen).is_empty(), "{:?}", lock(&fake.seen));
        let most = "a".repeat(255);
        let user = chef.principals("acme", &most).await.expect("lookup");
        assert!(
            matches!(user, PrincipalLookup::PrincipalNotFound),
            "{user:?}"
        );
        assert_eq!(lock(&fake.seen).len(), 1);
    }

    #[tokio::test]
    async fn closed_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let chef = chef(&url);
        let err = chef.principals("acme", "alice").await.expect_err("closed");
        assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
        let err = chef.org_guid("acme").await.expect_err("closed");
        assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
        let err = chef.group("acme", "admins").await.expect_err("closed");
        assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn timeout_is_unreachable() {
        let (_fake, url) = start().await;
        let mut cfg = config(&url, &keys().pivotal);
        cfg.timeout = Duration::from_millis(200);
        let chef = RemoteChefServer::new(cfg).expect("client");
        let err = chef.principals("acme", "slow").await.expect_err("timeout");
        assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn group_found_with_nested_groups_is_cached() {
        let (fake, url) = start().await;
        let chef = chef(&url);
        let want = Group {
            users: vec!["alice".into()],
            clients: vec!["node1".into()],
            groups: vec!["ops".into(), "pushy_job_writers".into()],
        };
        assert_eq!(
            chef.group("acme", "admins").await.expect("lookup"),
            Some(want.clone())
        );
        assert_eq!(
            chef.group("acme", "admins").await.expect("lookup"),
            Some(want)
        );
        assert_eq!(fake.count("/organizations/acme/groups/admins"), 1);
        let sparse = chef.group("acme", "sparse").await.expect("lookup");
        assert_eq!(sparse, Some(Group::default()));
    }

    #[tokio::test]
    async fn group_missing_is_none() {
        let (_fake, url) = start().await;
        assert_eq!(
            chef(&url).group("acme", "missing").await.expect("lookup"),
            None
        );
    }

    #[tokio::test]
    async fn group_5xx_is_empty_and_not_cached() {
        let (fake, url) = start().await;
        let chef = chef(&url);
        for _ in 0..2 {
            let group = chef.group("acme", "flaky").await.expect("lookup");
            assert_eq!(group, Some(Group::default()));
        }
        assert_eq!(fake.count("/organizations/acme/groups/flaky"), 2);
    }

    #[tokio::test]
    async fn group_other_4xx_is_upstream() {
        let (_fake, url) = start().await;
        let err = chef(&url)
            .group("acme", "forbidden")
            .await
            .expect_err("403");
        assert!(matches!(err, Error::Upstream(_)), "{err:?}");
    }

    #[test]
    fn cache_entries_expire_after_ttl() {
        let t0 = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(5), 10);
        cache.insert("a".to_owned(), 1, t0);
        assert_eq!(cache.get("a", t0 + Duration::from_secs(4)), Some(1));
        assert_eq!(cache.get("a", t0 + Duration::from_secs(5)), None);
        assert!(cache.entries.is_empty());
    }

    #[test]
    fn cache_stays_within_capacity() {
        let t0 = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(60), 10);
        for i in 0..100 {
            cache.insert(i, i, t0);
            assert!(cache.entries.len() <= 10);
        }
        assert_eq!(cache.get(&99, t0), Some(99));
        // Expired entries are the first to go.
        let mut cache = TtlCache::new(Duration::from_secs(1), 2);
        cache.insert(1, 1, t0);
        cache.insert(2, 2, t0 + Duration::from_secs(2));
        cache.insert(3, 3, t0 + Duration::from_secs(2));
        assert_eq!(cache.get(&2, t0 + Duration::from_secs(2)), Some(2));
        assert_eq!(cache.get(&3, t0 + Duration::from_secs(2)), Some(3));
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("node-1_a.b~c").as_deref(), Some("node-1_a.b~c"));
        assert_eq!(segment("a/b?c#d e").as_deref(), Some("a%2Fb%3Fc%23d%20e"));
        assert_eq!(segment("é%").as_deref(), Some("%C3%A9%25"));
        assert_eq!(segment(".."), None);
        assert_eq!(segment("."), None);
        assert_eq!(segment(""), None);
        assert_eq!(segment(&"x".repeat(256)), None);
        assert_eq!(segment(&"x".repeat(255)), Some("x".repeat(255)));
    }
}
