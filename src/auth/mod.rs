//! Who is asking, and may they (http.md §1.2 steps 5–6): authentication against the keys
//! the Chef Server holds for the requestor ([`authenticate`]), then the read, write and
//! config rules of §1.2.2 with nested groups ([`authorize`]).

mod authn;
mod authz;

pub use authn::{Error, Requestor, SignedRequest, authenticate, session_requestor};
pub use authz::{Rule, authorize};
