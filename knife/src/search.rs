//! `--search QUERY`: node names from Chef Server's search API, or, for the embedded server
//! that has no search API, from its local key directory (README "The local key directory"),
//! where the org's clients are its nodes.
//!
//! Chef search: `GET {chef_server_url}/search/node?q=QUERY&start=S&rows=R`, signed, every
//! page read (knife-push used the first page only), the query percent-encoded exactly once
//! (knife-push could encode it twice), errors reported with the server's message.
//!
//! Local directory: the query is `*:*` (every client) or `name:GLOB` (`*` any run of
//! characters, `?` one character).

use std::path::{Path, PathBuf};

use serde_json::Value;

use pushy_protocol::node_query::{NameQuery, UnsupportedQuery};

use crate::api::{self, Client};

/// Rows asked for per page.
const PAGE: usize = 1000;

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The search request failed.
    #[error(transparent)]
    Api(api::Error),
    /// The server has no search API (our embedded server, or a wrong URL).
    #[error(
        "{url} has no search API (it is not a Chef Server); for the embedded server, point --local-dir (or local_chef_dir) at its local key directory"
    )]
    NoSearchApi {
        /// The search URL tried.
        url: String,
    },
    /// The local directory cannot answer this query.
    #[error(transparent)]
    UnsupportedQuery(#[from] UnsupportedQuery),
    /// The local directory cannot be read.
    #[error("reading {}: {source}", path.display())]
    LocalDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The node names `query` matches, sorted and without duplicates.
///
/// # Errors
/// See [`Error`].
pub async fn nodes(
    client: &Client,
    local_dir: Option<&Path>,
    org: &str,
    query: &str,
) -> Result<Vec<String>, Error> {
    let mut names = match local_dir {
        Some(dir) => local(dir, org, query)?,
        None => chef(client, query).await?,
    };
    names.sort();
    names.dedup();
    Ok(names)
}

async fn chef(client: &Client, query: &str) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    let mut start = 0usize;
    loop {
        let url = search_url(client.url("search/node"), query, start, PAGE);
        let page = match client.get_json(url.clone()).await {
            Ok(p) => p,
            Err(e) if e.status() == Some(404) => {
                return Err(Error::NoSearchApi {
                    url: client.url("search/node").to_string(),
                });
            }
            Err(e) => return Err(Error::Api(e)),
        };
        let (rows, total) = page_names(&page).ok_or_else(|| {
            Error::Api(api::Error::Unexpected {
                url: url.to_string(),
                reason: "not a search result (no rows)".to_owned(),
            })
        })?;
        names.extend(rows);
        // By the rows asked for: a page can come back short (the index still lists a
        // deleted node), and the next page starts where this one was meant to end.
        start += PAGE;
        if start >= total {
            return Ok(names);
        }
    }
}

/// The `rows[].name` of one search page, and the `total`.
fn page_names(page: &Value) -> Option<(Vec<String>, usize)> {
    let rows = page["rows"].as_array()?;
    let total = page["total"].as_u64().map_or(rows.len(), |t| t as usize);
    let names = rows
        .iter()
        .filter_map(|r| {
            r["name"]
                .as_str()
                .or_else(|| r["data"]["name"].as_str())
                .map(str::to_owned)
        })
        .collect();
    Some((names, total))
}

/// `base?q=QUERY&start=S&rows=R`, the query percent-encoded once (every byte but the
/// RFC 3986 unreserved ones).
pub fn search_url(mut base: reqwest::Url, query: &str, start: usize, rows: usize) -> reqwest::Url {
    base.set_query(Some(&format!(
        "q={}&start={start}&rows={rows}",
        pushy_chef_http::encode_component(query)
    )));
    base
}

/// Clients of `org` in the local key directory `dir` matching `query`.
fn local(dir: &Path, org: &str, query: &str) -> Result<Vec<String>, Error> {
    let query = NameQuery::parse(query)?;
    let clients = dir.join("orgs").join(org).join("clients");
    let entries = std::fs::read_dir(&clients).map_err(|source| Error::LocalDir {
        path: clients.clone(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::LocalDir {
            path: clients.clone(),
            source,
        })?;
        if !entry.path().is_dir() {
            continue;
        }
        if let Some(name) = entry.file_name().to_str()
            && query.matches(name)
        {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fixes_search_query_is_encoded_exactly_once() {
        let base = reqwest::Url::parse("https://chef/organizations/o/search/node").unwrap();
        let url = search_url(base, "name:web* AND role:x%y", 0, 1000);
        assert_eq!(
            url.as_str(),
            "https://chef/organizations/o/search/node?q=name%3Aweb%2A%20AND%20role%3Ax%25y&start=0&rows=1000"
        );
    }

    #[test]
    fn reads_rows_names_and_total() {
        let page = json!({"total": 3, "start": 0, "rows": [{"name": "a"}, {"name": "b"}]});
        assert_eq!(
            page_names(&page),
            Some((vec!["a".to_owned(), "b".to_owned()], 3))
        );
        assert_eq!(page_names(&json!({"error": "x"})), None);
    }

    #[test]
    fn the_local_directory_lists_the_orgs_clients() {
        let t = tempfile::tempdir().unwrap();
        for c in ["web01", "web02", "db01"] {
            std::fs::create_dir_all(t.path().join("orgs/acme/clients").join(c)).unwrap();
        }
        std::fs::write(t.path().join("orgs/acme/clients/stray.txt"), "").unwrap();
        let mut all = local(t.path(), "acme", "*:*").unwrap();
        all.sort();
        assert_eq!(all, vec!["db01", "web01", "web02"]);
        let mut web = local(t.path(), "acme", "name:web*").unwrap();
        web.sort();
        assert_eq!(web, vec!["web01", "web02"]);
        assert!(matches!(
            local(t.path(), "acme", "role:web"),
            Err(Error::UnsupportedQuery { .. })
        ));
        assert!(matches!(
            local(t.path(), "nope", "*:*"),
            Err(Error::LocalDir { .. })
        ));
    }
}
