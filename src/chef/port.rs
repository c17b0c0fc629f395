//! The Chef Server port: what the server asks of Chef Infra Server (organizations,
//! principals with their public keys, groups), whichever implementation answers.

use async_trait::async_trait;
use openssl::pkey::{PKey, Public};
use pushy_protocol::job::OrgGuid;

/// The longest organization, user, client or group name that can exist, in bytes. Chef
/// Server's own rule for organization names stops at 255, and so does a file name (the
/// local directory makes names into file names). A longer name is answered as unknown
/// without asking: a lookup of it could only fail (`ENAMETOOLONG`, or an upstream that
/// refuses the URL), which used to surface as a 500.
pub const MAX_NAME_LEN: usize = 255;

/// Why a question to the Chef Server got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Chef Server could not be reached (the original's `conn_failed`): 502.
    #[error("could not connect to the Chef Server: {0}")]
    Unreachable(String),
    /// The Chef Server answered something this server cannot use: 500.
    #[error("unexpected answer from the Chef Server: {0}")]
    Upstream(String),
    /// Reading the local directory failed: 500.
    #[error("reading the local Chef directory failed")]
    Local(#[from] std::io::Error),
}

/// Whether a principal is a user or an API client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A person (global in Chef, associated with organizations).
    User,
    /// An API client of one organization (a node, usually).
    Client,
}

/// One usable key of a principal (Chef returns one entry per non-expired key).
#[derive(Clone, Debug)]
pub struct Principal {
    /// The principal's name.
    pub name: String,
    /// User or client; decides which member list of a group is consulted.
    pub kind: PrincipalKind,
    /// The public key.
    pub public_key: PKey<Public>,
    /// Whether the principal belongs to the organization asked about.
    pub org_member: bool,
}

/// What the Chef Server says about a name in an organization.
#[derive(Clone, Debug)]
pub enum PrincipalLookup {
    /// No such organization (404 `{"not_found":"org"}`).
    OrgNotFound,
    /// No such user or client (404 `{"not_found":"principal"}`).
    PrincipalNotFound,
    /// Every key entry, users before clients, in the Chef Server's order.
    Found(Vec<Principal>),
}

/// A Chef group's members (the fields of the group object the server uses).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Group {
    /// User names.
    #[serde(default)]
    pub users: Vec<String>,
    /// Client names.
    #[serde(default)]
    pub clients: Vec<String>,
    /// Nested group names.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The most node names a search may answer. The names go back into a job's POST, which
/// `max_request_size` bounds (1 MB by default): 10 000 names of up to ~95 bytes fit, more
/// would fail there after the search. It is also the largest job measured
/// (bench/RESULTS.md), and, at Chef Server's 1 000 rows a page, at most 10 requests to it.
/// A query matching more fails plainly ("narrow it") instead of paging on.
pub const MAX_SEARCH_NODES: usize = 10_000;

/// What a node search answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeSearch {
    /// The matching node names, sorted, without duplicates.
    Found(Vec<String>),
    /// The query cannot be answered (the Chef Server's own message, a query the local
    /// directory cannot read, a match past [`MAX_SEARCH_NODES`], or one the Chef Server
    /// took too long to page through): the asker's to fix.
    Refused(String),
}

impl NodeSearch {
    /// The answer for these matches: sorted, without duplicates, within
    /// [`MAX_SEARCH_NODES`].
    pub fn of(mut names: Vec<String>) -> NodeSearch {
        if names.len() > MAX_SEARCH_NODES {
            return NodeSearch::too_many();
        }
        names.sort_unstable();
        names.dedup();
        NodeSearch::Found(names)
    }

    /// A match past [`MAX_SEARCH_NODES`].
    pub fn too_many() -> NodeSearch {
        NodeSearch::Refused(format!(
            "the search matched more than {MAX_SEARCH_NODES} nodes; narrow it"
        ))
    }
}

/// The questions the push server asks the Chef Server.
#[async_trait]
pub trait ChefServer: Send + Sync + 'static {
    /// The organization's GUID, or `None` when it does not exist.
    async fn org_guid(&self, org: &str) -> Result<Option<OrgGuid>, Error>;

    /// The keys of user or client `name` as seen from `org`.
    async fn principals(&self, org: &str, name: &str) -> Result<PrincipalLookup, Error>;

    /// A group of `org`, or `None` when it does not exist.
    async fn group(&self, org: &str, group: &str) -> Result<Option<Group>, Error>;

    /// The names of `org`'s nodes that Chef search `query` matches (the dashboard's
    /// start form; the original server never searched, its knife plugin did).
    async fn search_nodes(&self, org: &str, query: &str) -> Result<NodeSearch, Error>;
}
