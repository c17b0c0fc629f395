//! Bringing files, directories and links to a wanted state, touching only what differs, and
//! remembering what changed: the primitive under every reconfigure step, so that a second run
//! rewrites nothing (ops.md §2.3 "Idempotence").
//!
//! Ownership follows ops.md §1.1: `root`, Chef Server's service user (`opscode`), or
//! `opscode:root`. The ctl changes owners only when it runs as root; when Chef Server's user
//! does not exist (a staging root on a machine without Chef Server) files keep the owner they
//! get, and [`Converge::owners_note`] says so once.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, symlink};
use std::path::{Path, PathBuf};

use crate::atomic_file::{self, Outcome};

/// Who should own a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Own {
    /// root:root.
    Root,
    /// Chef Server's user and its primary group (`opscode`).
    Chef,
    /// Chef Server's user, group root (`opscode:root`, the running JSON).
    ChefRoot,
}

/// A path that could not be brought to its state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing a file.
    #[error(transparent)]
    Write(#[from] atomic_file::Error),
    /// A directory or link operation.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Applies wanted states and records what changed.
#[derive(Debug)]
pub struct Converge {
    /// Running as root: owners can be set.
    can_chown: bool,
    /// Chef Server's user's uid and primary gid, when it exists.
    chef_ids: Option<(u32, u32)>,
    /// Paths created or changed, in order.
    pub changed: Vec<PathBuf>,
}

impl Converge {
    /// `chef_ids`: Chef Server's user's uid and gid, if it exists on this host.
    pub fn new(chef_ids: Option<(u32, u32)>) -> Converge {
        Converge {
            can_chown: nix::unistd::geteuid().is_root(),
            chef_ids,
            changed: Vec::new(),
        }
    }

    /// Why owners are not set as ops.md §1.1 says, if they are not.
    pub fn owners_note(&self) -> Option<&'static str> {
        if !self.can_chown {
            Some("not running as root: files keep the owner they are created with")
        } else if self.chef_ids.is_none() {
            Some("Chef Server's user does not exist here: its files are left owned by root")
        } else {
            None
        }
    }

    fn ids(&self, own: Own) -> Option<(u32, u32)> {
        if !self.can_chown {
            return None;
        }
        match own {
            Own::Root => Some((0, 0)),
            Own::Chef => self.chef_ids,
            Own::ChefRoot => self.chef_ids.map(|(uid, _)| (uid, 0)),
        }
    }

    /// `path` holds exactly `contents`, with `mode` and owner `own` (written atomically, and
    /// only if something differs). Returns whether it was written.
    ///
    /// # Errors
    /// [`Error::Write`]; the old file is then untouched.
    pub fn file(
        &mut self,
        path: &Path,
        contents: &[u8],
        mode: u32,
        own: Own,
    ) -> Result<bool, Error> {
        let owner = match self.ids(own) {
            Some((uid, gid)) => atomic_file::Owner::Ids { uid, gid },
            None => atomic_file::Owner::KeepExisting,
        };
        let outcome = atomic_file::write(path, contents, mode, owner)?;
        if outcome == Outcome::Written {
            tracing::info!(path = %path.display(), "written");
            self.changed.push(path.to_path_buf());
        }
        Ok(outcome == Outcome::Written)
    }

    /// `path` is a directory with `mode` and owner `own`; missing parents are created (0755,
    /// as `mkdir -p` would). Returns whether anything changed.
    ///
    /// # Errors
    /// [`Error::Io`] naming the directory.
    pub fn dir(&mut self, path: &Path, mode: u32, own: Own) -> Result<bool, Error> {
        let mut changed = false;
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Error::Io {
                    what: "create the directory",
                    path: path.to_path_buf(),
                    source: io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "something other than a directory is in the way",
                    ),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(path).map_err(io_error("create the directory", path))?;
                changed = true;
            }
            Err(e) => return Err(io_error("inspect", path)(e)),
        }
        let meta = fs::metadata(path).map_err(io_error("inspect", path))?;
        if meta.mode() & 0o7777 != mode {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(io_error("set the mode of", path))?;
            changed = true;
        }
        if let Some((uid, gid)) = self.ids(own)
            && (meta.uid(), meta.gid()) != (uid, gid)
        {
            chown(path, Some(uid), Some(gid)).map_err(io_error("set the owner of", path))?;
            changed = true;
        }
        if changed {
            tracing::info!(path = %path.display(), mode = format!("{mode:04o}"), "directory");
            self.changed.push(path.to_path_buf());
        }
        Ok(changed)
    }

    /// `link` is a symbolic link to `target` (replaced atomically when it points elsewhere).
    /// Returns whether it changed.
    ///
    /// # Errors
    /// [`Error::Io`]; a directory in the way is an error, not removed.
    pub fn symlink(&mut self, link: &Path, target: &Path) -> Result<bool, Error> {
        match fs::symlink_metadata(link) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if fs::read_link(link).map_err(io_error("read the link", link))? == target {
                    return Ok(false);
                }
            }
            Ok(meta) if meta.is_dir() => {
                return Err(Error::Io {
                    what: "create the link",
                    path: link.to_path_buf(),
                    source: io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "a directory is in the way",
                    ),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("inspect", link)(e)),
        }
        let parent = link.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(io_error("create the directory", parent))?;
        let name = link
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = parent.join(format!(".{name}.{}.link.tmp", std::process::id()));
        let _ = fs::remove_file(&temp);
        symlink(target, &temp).map_err(io_error("create the link", link))?;
        if let Err(e) = fs::rename(&temp, link) {
            let _ = fs::remove_file(&temp);
            return Err(io_error("create the link", link)(e));
        }
        tracing::info!(link = %link.display(), target = %target.display(), "link");
        self.changed.push(link.to_path_buf());
        Ok(true)
    }
}

/// Chef Server's user's uid and primary gid, if the user exists.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Some((user.uid.as_raw(), user.gid.as_raw())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_application_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Converge::new(None);
        let d = dir.path().join("a/b");
        assert!(c.dir(&d, 0o700, Own::Chef).unwrap());
        assert!(c.file(&d.join("f"), b"x", 0o644, Own::Root).unwrap());
        assert!(c.symlink(&dir.path().join("l"), Path::new("/x/y")).unwrap());
        let mut again = Converge::new(None);
        assert!(!again.dir(&d, 0o700, Own::Chef).unwrap());
        assert!(!again.file(&d.join("f"), b"x", 0o644, Own::Root).unwrap());
        assert!(
            !again
                .symlink(&dir.path().join("l"), Path::new("/x/y"))
                .unwrap()
        );
        assert!(again.changed.is_empty());
        // A changed mode or target is a change.
        assert!(again.dir(&d, 0o750, Own::Chef).unwrap());
        assert!(
            again
                .symlink(&dir.path().join("l"), Path::new("/z"))
                .unwrap()
        );
        assert_eq!(
            fs::read_link(dir.path().join("l")).unwrap(),
            Path::new("/z")
        );
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o7777, 0o750);
    }

    #[test]
    fn a_file_in_the_way_of_a_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, "x").unwrap();
        let err = Converge::new(None).dir(&p, 0o755, Own::Root).unwrap_err();
        assert!(err.to_string().contains(&p.display().to_string()), "{err}");
    }
}
