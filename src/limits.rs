//! The process's descriptor limit. Every connected node holds at least one descriptor
//! (its ROUTER connection, and its SUB connection when it has its own), so the usual soft
//! limit of 1024 caps a fleet at about 500 nodes: past it HTTP accepts fail with EMFILE,
//! config fetches answer 500 and libzmq's I/O thread spins. The soft limit is raised to
//! the hard one at start, which needs no privilege.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The descriptor limit after [`raise_nofile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nofile {
    /// The soft limit before.
    pub was: u64,
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit, the most the soft one can be raised to without privilege.
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
///
/// # Errors
/// When the limits cannot be read or set.
pub fn raise_nofile() -> Result<Nofile, nix::Error> {
    let (was, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if was < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(Nofile { was, soft, hard })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let (_, hard_before) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let got = raise_nofile().unwrap();
        assert_eq!(got.soft, got.hard);
        assert_eq!(got.hard, hard_before, "the hard limit is never changed");
        assert!(got.soft >= got.was);
    }
}
