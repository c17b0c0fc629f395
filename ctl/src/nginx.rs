//! The nginx step of reconfigure (ops.md §5, §2.3 step 10): the two add-on files in Chef
//! Server's `<nginx dir>/etc/addon.d/` (root:root 0644), and a restart of Chef Server's nginx
//! only when either changed.
//!
//! - `10-push_jobs_upstreams.conf`: `upstream opscode_pushy { server <vip>:<api_port>; }`,
//!   one `server` line per instance (`crate::instances`), so nginx spreads the calls over them.
//! - `10-push_jobs_external.conf`: the unauthenticated `/pushy/_status` location (JSON) and
//!   the `/organizations/<org>/pushy` API, both proxied to `opscode_pushy` with the request
//!   URI unchanged.

use std::path::{Path, PathBuf};

use minijinja::context;

use crate::chef_server::ChefServer;
use crate::converge::{self, Converge, Own};
use crate::instances::{self, Instance};
use crate::paths::Paths;
use crate::service::{self, Action};
use crate::settings::Settings;
use crate::templates;

/// What the step did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The add-on files written (empty when both were already right).
    pub changed: Vec<PathBuf>,
    /// The nginx restart, when a file changed.
    pub restart: Option<Action>,
}

/// Why the step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Rendering a template.
    #[error("rendering {file}: {source}")]
    Render {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: minijinja::Error,
    },
    /// Writing a file.
    #[error(transparent)]
    Write(#[from] converge::Error),
    /// `opscode_pushy_server['instances']` cannot be set up.
    #[error(transparent)]
    Instances(#[from] instances::Error),
}

/// `host:port` for nginx's `server` line; an IPv6 address is bracketed.
pub fn upstream(vip: &str, port: u16) -> String {
    if vip.contains(':') && !vip.starts_with('[') {
        format!("[{vip}]:{port}")
    } else {
        format!("{vip}:{port}")
    }
}

/// The two files' contents: `(upstreams, external)`.
///
/// # Errors
/// A template that cannot render.
pub fn render(
    settings: &Settings,
    instances: &[Instance],
) -> Result<(String, String), minijinja::Error> {
    let vip = &settings.server.vip;
    let upstreams: Vec<String> = instances
        .iter()
        .map(|i| upstream(vip, i.settings.server.daemon.api_port))
        .collect();
    let upstreams = templates::render(
        templates::NGINX_UPSTREAMS,
        context! { upstreams => upstreams },
    )?;
    let external = templates::render(templates::NGINX_EXTERNAL, context! {})?;
    Ok((upstreams, external))
}

/// The add-on files for Chef Server's nginx dir, under the root.
pub fn files(paths: &Paths, nginx_dir: &Path) -> [PathBuf; 2] {
    [
        paths.nginx_upstreams_conf(nginx_dir),
        paths.nginx_external_conf(nginx_dir),
    ]
}

/// Writes both files; restarts Chef Server's nginx if either changed.
///
/// # Errors
/// [`Error`], naming the file.
pub fn configure(
    paths: &Paths,
    settings: &Settings,
    chef: &ChefServer,
    converge: &mut Converge,
) -> Result<Report, Error> {
    let instances = instances::plan(settings)?;
    let (upstreams, external) = render(settings, &instances).map_err(|source| Error::Render {
        file: paths.nginx_upstreams_conf(&chef.nginx.dir),
        source,
    })?;
    let [upstreams_path, external_path] = files(paths, &chef.nginx.dir);
    let mut report = Report::default();
    for (path, text) in [(upstreams_path, upstreams), (external_path, external)] {
        if converge.file(&path, text.as_bytes(), 0o644, Own::Root)? {
            report.changed.push(path);
        }
    }
    if !report.changed.is_empty() {
        report.restart = Some(service::restart_chef_nginx(paths, &chef.install_path));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_upstreams_are_bracketed() {
        assert_eq!(
            upstream("chef.example.com", 10003),
            "chef.example.com:10003"
        );
        assert_eq!(upstream("fd00::1", 10003), "[fd00::1]:10003");
        assert_eq!(upstream("[fd00::1]", 10003), "[fd00::1]:10003");
    }
}
