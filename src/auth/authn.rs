//! Who is asking (http.md §1.2 step 5): the request's signature checked against the keys
//! the Chef Server holds for the requestor.

use openssl::pkey::{PKey, Public};
use pushy_protocol::chef_auth::{SignedHeaders, verify_signature_hashed};
use pushy_protocol::job::OrgGuid;

use crate::chef::{self, ChefServer, Principal, PrincipalKind, PrincipalLookup};

/// Why a request was refused in the authentication or authorization stage. The
/// messages are the spec's, verbatim (http.md §1.3.2, §1.2.2).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Chef Server knows no such organization.
    #[error("organization '{0}' does not exist.")]
    OrgNotFound(String),
    /// No user or client of that name.
    #[error(
        "Failed to authenticate as '{0}'. Ensure that your node_name and client key are correct."
    )]
    UnknownPrincipal(String),
    /// The principal exists but is not a member of the organization.
    #[error("'{0}' is not associated with organization '{1}'")]
    NotAssociated(String, String),
    /// No key of the principal verifies the signature.
    #[error("Invalid signature for user or client '{0}'")]
    BadSignature(String),
    /// Not in the group the action needs.
    #[error("User or client '{0}' does not have access to that action on this server.")]
    Forbidden(String),
    /// A client asked for another node's config.
    #[error("Client and node name must match")]
    ClientNodeMismatch,
    /// The Chef Server could not be asked.
    #[error("Failed to connect to erchef to get key: {0}")]
    ChefUnreachable(String),
    /// The Chef Server or the local directory failed otherwise.
    #[error("Chef Server lookup failed")]
    Chef(#[source] chef::Error),
}

impl From<chef::Error> for Error {
    fn from(e: chef::Error) -> Self {
        match e {
            chef::Error::Unreachable(why) => Error::ChefUnreachable(why),
            other => Error::Chef(other),
        }
    }
}

/// An authenticated requestor.
#[derive(Clone, Debug)]
pub struct Requestor {
    /// `X-Ops-UserId` as sent.
    pub name: String,
    /// User or client: the kind of the principal entry whose key verified.
    pub kind: PrincipalKind,
    /// The key that verified the request (the config endpoint encrypts to it).
    pub public_key: PKey<Public>,
    /// The organization's name as in the URL.
    pub org: String,
    /// The organization's GUID.
    pub org_guid: OrgGuid,
}

/// The requestor of a dashboard session (issue 16): `name`, a principal of kind `kind`,
/// proved itself with a signed request when the session began; it must still be a member
/// of `org` now. Matched by name and kind: a user and a client of `org` may share a name,
/// and authorization reads a group's users and clients apart, so taking the first entry
/// of that name (Chef lists users first) would let the client act as the user.
///
/// # Errors
/// As [`authenticate`] when the org or the principal is gone; no member of that name and
/// kind is [`Error::UnknownPrincipal`].
pub async fn session_requestor(
    chef: &dyn ChefServer,
    org: &str,
    name: &str,
    kind: PrincipalKind,
) -> Result<Requestor, Error> {
    let (org_guid, members) = members(chef, org, name).await?;
    let member = members
        .into_iter()
        .find(|p| p.kind == kind)
        .ok_or_else(|| Error::UnknownPrincipal(name.to_owned()))?;
    Ok(Requestor {
        name: name.to_owned(),
        kind: member.kind,
        public_key: member.public_key,
        org: org.to_owned(),
        org_guid,
    })
}

/// The org's GUID and `name`'s principal entries that are members of `org` (at least one).
///
/// # Errors
/// No such org or principal, or `name` is not a member.
async fn members(
    chef: &dyn ChefServer,
    org: &str,
    name: &str,
) -> Result<(OrgGuid, Vec<Principal>), Error> {
    let org_guid = chef
        .org_guid(org)
        .await?
        .ok_or_else(|| Error::OrgNotFound(org.to_owned()))?;
    let principals = match chef.principals(org, name).await? {
        PrincipalLookup::OrgNotFound => return Err(Error::OrgNotFound(org.to_owned())),
        PrincipalLookup::PrincipalNotFound => return Err(Error::UnknownPrincipal(name.into())),
        PrincipalLookup::Found(list) => list,
    };
    let members: Vec<_> = principals.into_iter().filter(|p| p.org_member).collect();
    if members.is_empty() {
        return Err(Error::NotAssociated(name.to_owned(), org.to_owned()));
    }
    Ok((org_guid, members))
}

/// What the signature covers.
#[derive(Clone, Copy, Debug)]
pub struct SignedRequest<'a> {
    /// Pre-checked authentication headers.
    pub headers: &'a SignedHeaders,
    /// HTTP method.
    pub method: &'a str,
    /// Path as received.
    pub path: &'a str,
    /// The body's `X-Ops-Content-Hash` as the server computed it from the bytes received
    /// (under the request's protocol version), not the header's claim.
    pub body_hash: &'a str,
}

/// Authenticates a request to `org` (http.md §1.2 step 5): org GUID, principal lookup,
/// membership (before the signature, §8.4 item 31), then each key in the Chef Server's
/// order until one verifies.
///
/// # Errors
/// The refusal, with the status the spec gives it.
pub async fn authenticate(
    chef: &dyn ChefServer,
    org: &str,
    req: SignedRequest<'_>,
) -> Result<Requestor, Error> {
    let name = &req.headers.user_id;
    let (org_guid, members) = members(chef, org, name).await?;
    let verified = members.into_iter().find(|p| {
        verify_signature_hashed(
            req.headers,
            req.method,
            req.path,
            req.body_hash,
            &p.public_key,
        )
    });
    match verified {
        Some(p) => Ok(Requestor {
            name: name.clone(),
            kind: p.kind,
            public_key: p.public_key,
            org: org.to_owned(),
            org_guid,
        }),
        None => {
            tracing::warn!(requestor = %name, org, "request signature did not verify");
            Err(Error::BadSignature(name.clone()))
        }
    }
}
