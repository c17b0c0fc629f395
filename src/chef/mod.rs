//! The Chef Server port: organizations, principals (with their public keys), groups and
//! node search.
//!
//! Two implementations: [`RemoteChefServer`] speaks Chef Infra Server's HTTP API the way
//! the original push server does (http.md §1.2.1), [`LocalChefServer`] reads a directory
//! (the embedded default, the demo and tests). Nothing else in the server knows which
//! one runs.

mod local;
mod port;
mod remote;

pub use local::{LocalChefServer, admin as local_admin};
pub use port::{
    ChefServer, Error, Group, MAX_NAME_LEN, MAX_SEARCH_NODES, NodeSearch, Principal, PrincipalKind,
    PrincipalLookup,
};
pub use remote::{RemoteChefServer, RemoteConfig};
