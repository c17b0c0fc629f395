//! The process's descriptor limit: thousands of sockets need far more than the usual
//! 1024. Raised once at start, before any socket exists.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// What raising the limit gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nofile {
    /// The limit asked for (soft and hard).
    pub requested: u64,
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit now in force.
    pub hard: u64,
}

/// Asks for `wanted` descriptors (soft and hard). Raising the hard limit needs
/// `CAP_SYS_RESOURCE` and stays under `fs.nr_open`; when refused, the soft limit is
/// raised to the hard one instead.
///
/// # Errors
/// When the limits cannot even be read or the soft limit not raised.
pub fn raise_nofile(wanted: u64) -> Result<Nofile, nix::Error> {
    if setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_err() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
        if soft < hard {
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        }
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(Nofile {
        requested: wanted,
        soft,
        hard,
    })
}
