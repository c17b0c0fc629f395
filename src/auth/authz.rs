//! The authorization rules (http.md §1.2.2) over Chef groups.

use std::collections::HashSet;

use crate::chef::{ChefServer, PrincipalKind};

use super::authn::{Error, Requestor};

/// The group whose members may read jobs and node states; absent means everyone may.
pub const READERS: &str = "pushy_job_readers";
/// The group whose members may start jobs; absent means the `admins` group decides.
pub const WRITERS: &str = "pushy_job_writers";
/// The fallback writers.
pub const ADMINS: &str = "admins";

/// Which rule an endpoint applies.
#[derive(Clone, Copy, Debug)]
pub enum Rule<'a> {
    /// Reading jobs, output, node states and feeds.
    Read,
    /// Starting (and aborting) jobs.
    Write,
    /// Fetching a node's config: clients only their own node (when validated), users
    /// the read rule.
    Config {
        /// The node named in the URL.
        node: &'a str,
        /// `validate_client_node_name`.
        validate_client_node_name: bool,
    },
}

/// Applies `rule` to `who`.
///
/// # Errors
/// [`Error::Forbidden`] or [`Error::ClientNodeMismatch`] when refused; Chef Server
/// failures as such.
pub async fn authorize(
    chef: &dyn ChefServer,
    who: &Requestor,
    rule: Rule<'_>,
) -> Result<(), Error> {
    match rule {
        Rule::Read => read_rule(chef, who).await,
        Rule::Write => {
            let allowed = match is_member(chef, who, WRITERS).await? {
                Some(m) => m,
                None => is_member(chef, who, ADMINS).await?.unwrap_or(false),
            };
            if allowed {
                Ok(())
            } else {
                Err(Error::Forbidden(who.name.clone()))
            }
        }
        Rule::Config {
            node,
            validate_client_node_name,
        } => match who.kind {
            // Clients are never checked against the readers group here (§8.4 item 35).
            PrincipalKind::Client if validate_client_node_name && who.name != node => {
                Err(Error::ClientNodeMismatch)
            }
            PrincipalKind::Client => Ok(()),
            PrincipalKind::User => read_rule(chef, who).await,
        },
    }
}

async fn read_rule(chef: &dyn ChefServer, who: &Requestor) -> Result<(), Error> {
    match is_member(chef, who, READERS).await? {
        None | Some(true) => Ok(()),
        Some(false) => Err(Error::Forbidden(who.name.clone())),
    }
}

/// Whether `who` is in `group` directly or through nested groups; `None` when the group
/// itself does not exist. Nested groups that do not exist are skipped, and each group is
/// visited once, so a cycle ends (http.md §8.4 item 33, fixed).
async fn is_member(
    chef: &dyn ChefServer,
    who: &Requestor,
    group: &str,
) -> Result<Option<bool>, Error> {
    let Some(top) = chef.group(&who.org, group).await? else {
        return Ok(None);
    };
    let mut visited: HashSet<String> = HashSet::from([group.to_owned()]);
    let mut pending = vec![top];
    while let Some(g) = pending.pop() {
        let names = match who.kind {
            PrincipalKind::User => &g.users,
            PrincipalKind::Client => &g.clients,
        };
        if names.contains(&who.name) {
            return Ok(Some(true));
        }
        // Depth-first in listed order, as the original recurses.
        for nested in g.groups.iter().rev() {
            if visited.insert(nested.clone())
                && let Some(n) = chef.group(&who.org, nested).await?
            {
                pending.push(n);
            }
        }
    }
    Ok(Some(false))
}
