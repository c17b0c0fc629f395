//! Replacing a file all at once: a temporary file in the same directory, synced, then renamed over
//! the target. A reader sees the old file or the new one, never half of either, and a failure at
//! any step leaves the old file as it was and no temporary file behind.
//!
//! The secrets file is saved this way (ops.md §3.5 "Save"), and reconfigure uses it for every file
//! it renders, so a re-run that changes nothing rewrites nothing ([`Outcome::Unchanged`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, fchown};
use std::path::{Path, PathBuf};

/// Whether [`write()`] replaced the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The file already had these bytes, this mode and this owner; it was not touched.
    Unchanged,
    /// The file was created or replaced.
    Written,
}

/// Who should own the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Keep the uid/gid of the file being replaced; a new file belongs to whoever runs us.
    /// This is veil's rule when no user is configured (ops.md §3.5 "Save", step 3).
    KeepExisting,
    /// This uid and gid.
    Ids {
        /// Owner uid.
        uid: u32,
        /// Owner gid.
        gid: u32,
    },
}

/// A failed step of [`write()`], with the file it was for.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path} ({step}): {source}")]
pub struct Error {
    /// The target file.
    pub path: PathBuf,
    /// What was being done: "creating the directory", "creating a temporary file", …
    pub step: &'static str,
    /// The cause.
    #[source]
    pub source: io::Error,
}

/// Replaces `path` with `contents`, mode `mode`, owned per `owner`; creates missing parent
/// directories. Returns [`Outcome::Unchanged`] without touching anything when the file already
/// has exactly these bytes, mode and owner.
///
/// # Errors
/// Any failing step; the original file is then untouched and the temporary file removed.
pub fn write(path: &Path, contents: &[u8], mode: u32, owner: Owner) -> Result<Outcome, Error> {
    let fail = |step: &'static str| {
        move |source: io::Error| Error {
            path: path.to_path_buf(),
            step,
            source,
        }
    };
    let existing = match fs::metadata(path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail("reading the current file's metadata")(e)),
    };
    let wanted_ids = match (owner, &existing) {
        (Owner::Ids { uid, gid }, _) => Some((uid, gid)),
        (Owner::KeepExisting, Some(meta)) => Some((meta.uid(), meta.gid())),
        (Owner::KeepExisting, None) => None,
    };
    if let Some(meta) = &existing
        && meta.is_file()
        && meta.mode() & 0o7777 == mode
        && wanted_ids.is_none_or(|ids| ids == (meta.uid(), meta.gid()))
        && fs::read(path).is_ok_and(|current| current == contents)
    {
        return Ok(Outcome::Unchanged);
    }

    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(fail("creating the directory"))?;
    let temp = TempFile::create(&dir, path).map_err(fail("creating a temporary file"))?;
    let mut file = &temp.file;
    file.write_all(contents)
        .map_err(fail("writing the temporary file"))?;
    // The mode given to open() is filtered by the umask; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(fail("setting the mode"))?;
    if let Some((uid, gid)) = wanted_ids {
        let meta = file
            .metadata()
            .map_err(fail("reading the temporary file"))?;
        if (meta.uid(), meta.gid()) != (uid, gid) {
            fchown(file, Some(uid), Some(gid)).map_err(fail("setting the owner"))?;
        }
    }
    file.sync_all()
        .map_err(fail("syncing the temporary file"))?;
    fs::rename(&temp.path, path).map_err(fail("renaming the temporary file over it"))?;
    temp.disarm();
    // Make the rename itself durable. Failing here cannot undo it, and the file is in place.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(Outcome::Written)
}

/// A temporary file next to the target, removed on drop unless [`TempFile::disarm`]ed.
struct TempFile {
    path: PathBuf,
    file: File,
    armed: bool,
}

impl TempFile {
    fn create(dir: &Path, target: &Path) -> io::Result<TempFile> {
        let base = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".to_owned());
        let mut last = None;
        for _ in 0..8 {
            let mut nonce = [0u8; 6];
            openssl::rand::rand_bytes(&mut nonce).map_err(io::Error::other)?;
            let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
            let path = dir.join(format!(".{base}.{}.{hex}.tmp", std::process::id()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file,
                        armed: true,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free temporary file name")))
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the error that got us here is the one worth reporting.
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn creates_with_the_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/f.json");
        let out = write(&path, b"hello\n", 0o600, Owner::KeepExisting).unwrap();
        assert_eq!(out, Outcome::Written);
        assert_eq!(fs::read(&path).unwrap(), b"hello\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(names(path.parent().unwrap()), ["f.json"]);
    }

    #[test]
    fn same_bytes_mode_and_owner_is_unchanged_and_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"x", 0o644, Owner::KeepExisting).unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        let out = write(&path, b"x", 0o644, Owner::KeepExisting).unwrap();
        assert_eq!(out, Outcome::Unchanged);
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        // A different mode is a change.
        let out = write(&path, b"x", 0o600, Owner::KeepExisting).unwrap();
        assert_eq!(out, Outcome::Written);
        assert_ne!(fs::metadata(&path).unwrap().ino(), inode);
    }

    #[test]
    fn a_failed_rename_leaves_the_target_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory in the way: rename(2) over it fails.
        let path = dir.path().join("target");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), b"k").unwrap();
        let err = write(&path, b"new", 0o600, Owner::KeepExisting).unwrap_err();
        assert!(err.to_string().contains("target"), "{err}");
        assert_eq!(fs::read(path.join("keep")).unwrap(), b"k");
        assert_eq!(names(dir.path()), ["target"]);
    }
}
