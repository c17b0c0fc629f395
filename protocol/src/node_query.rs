//! Node searches where no Chef Server answers them: the embedded server's local key
//! directory, whose clients are an organization's nodes, answers `*:*` (every node) and
//! `name:GLOB` (`*` any run of characters, `?` one). The CLI's `--search` with a local
//! directory and the dashboard's start form on the embedded server both ask this.

use wildmatch::WildMatch;

/// A query the local directory can answer.
#[derive(Clone, Debug)]
pub struct NameQuery(WildMatch);

/// A query only a Chef Server's search can answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the local key directory answers only `*:*` and `name:GLOB` queries, not {0:?}")]
pub struct UnsupportedQuery(pub String);

impl NameQuery {
    /// Reads `*:*`, `*` or `name:GLOB`.
    ///
    /// # Errors
    /// Any other query, and a glob that is empty or holds white space (a Chef query
    /// with more than one clause).
    pub fn parse(query: &str) -> Result<NameQuery, UnsupportedQuery> {
        let q = query.trim();
        let glob = if q == "*:*" || q == "*" {
            "*"
        } else if let Some(glob) = q.strip_prefix("name:") {
            glob
        } else {
            return Err(UnsupportedQuery(query.to_owned()));
        };
        if glob.is_empty() || glob.contains(char::is_whitespace) {
            return Err(UnsupportedQuery(query.to_owned()));
        }
        Ok(NameQuery(WildMatch::new(glob)))
    }

    /// Whether node `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        self.0.matches(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(query: &str, name: &str) -> bool {
        NameQuery::parse(query).unwrap().matches(name)
    }

    #[test]
    fn globs_on_the_name() {
        assert!(matches("*:*", "anything"));
        assert!(matches(" * ", "anything"));
        assert!(matches("name:web*", "web01"));
        assert!(matches("name:w?b*1", "web01"));
        assert!(matches("name:*-b", "agent-b"));
        assert!(matches("name:a*b*c", "aXbYbZc"));
        assert!(!matches("name:web*", "db01"));
        assert!(!matches("name:web?", "web"));
        assert!(!matches("name:web", "web01"));
    }

    #[test]
    fn other_queries_need_a_chef_server() {
        for q in ["role:web", "name:", "name:a OR name:b", "", "platform:*"] {
            assert_eq!(
                NameQuery::parse(q).unwrap_err(),
                UnsupportedQuery(q.to_owned())
            );
        }
    }
}
