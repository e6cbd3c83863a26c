//! Durability on a local disk: what object_store's `LocalFileSystem` leaves out.
//!
//! `LocalFileSystem::put` writes `PATH#N`, renames it to `PATH` and fsyncs nothing. A crash after
//! that rename but before the kernel wrote the data can leave `PATH` empty or torn: the new name
//! can reach the disk before the new bytes. So a local put here is
//!
//! 1. object_store `put` of the bytes to `.clickpulse-staging/UNIQUE` (under the store's root);
//! 2. fsync of that staging file: its bytes are on disk;
//! 3. object_store `rename` of the staging file to the object's path (one `rename(2)`: a reader
//!    sees the whole old object, the whole new one, or none — also after a crash);
//! 4. fsync of the object's parent directory, and of every directory the rename had to create
//!    and the one holding it: the new name and any directory created for it are on disk (a
//!    directory that existed before needs no fsync for entries it already had).
//!
//! A crash between 1 and 3 leaves a file under `.clickpulse-staging/`; it is never listed, and
//! can be deleted while no process writes the store.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;

use crate::error::SyncError;

/// The directory under the store's root where puts stage their bytes.
pub(crate) const STAGING_DIR: &str = ".clickpulse-staging";

/// A store's local directory: the filesystem paths its objects live at, and unique staging
/// names.
#[derive(Debug)]
pub(crate) struct LocalDisk {
    files: Arc<LocalFileSystem>,
    /// Tells this store's staging names from another process's or another store's in the same
    /// directory: the process id and the time the store opened.
    nonce: String,
    next: AtomicU64,
}

impl LocalDisk {
    /// The disk behind `files`.
    pub(crate) fn new(files: Arc<LocalFileSystem>) -> Self {
        let opened = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            files,
            nonce: format!("{}-{opened:x}", std::process::id()),
            next: AtomicU64::new(0),
        }
    }

    /// A staging path no other put of any store uses.
    pub(crate) fn staging_path(&self) -> ObjectPath {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        ObjectPath::from_iter([STAGING_DIR.to_string(), format!("{}-{n}", self.nonce)])
    }

    /// The file `location` is stored in.
    pub(crate) fn file(&self, location: &ObjectPath) -> Result<PathBuf, object_store::Error> {
        self.files.path_to_filesystem(location)
    }
}

/// Fsyncs the file at `path`.
pub(crate) fn sync_file(path: &Path) -> Result<(), SyncError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| SyncError {
            path: path.to_path_buf(),
            source,
        })
}

/// Fsyncs the `levels` directories above `file`: its parent, its parent's parent, and so on.
/// An object path with `levels` segments reaches the store's root that way.
pub(crate) fn sync_parents(file: &Path, levels: usize) -> Result<(), SyncError> {
    file.ancestors()
        .skip(1)
        .take(levels)
        .try_for_each(sync_file)
}

/// Creates `dir` and its missing parents, and fsyncs the directory above each one created, so
/// that the new directories survive a crash.
pub(crate) fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    if dir.exists() && !dir.is_dir() {
        let why = "exists and is not a directory";
        return Err(std::io::Error::new(std::io::ErrorKind::NotADirectory, why));
    }
    let missing: Vec<&Path> = dir
        .ancestors()
        .filter(|d| !d.as_os_str().is_empty())
        .take_while(|d| !d.exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    for created in missing {
        let parent = created
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_dir_durably_creates_every_missing_level_and_accepts_an_existing_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/c");
        create_dir_durably(&dir).unwrap();
        assert!(dir.is_dir());
        create_dir_durably(&dir).unwrap();
    }

    #[test]
    fn create_dir_durably_refuses_a_file_in_the_way() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(create_dir_durably(&file.join("d")).is_err());
        let err = create_dir_durably(&file).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotADirectory);
    }

    #[test]
    fn staging_paths_are_unique_and_under_the_staging_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = LocalDisk::new(Arc::new(
            LocalFileSystem::new_with_prefix(tmp.path()).unwrap(),
        ));
        let (a, b) = (disk.staging_path(), disk.staging_path());
        assert_ne!(a, b);
        assert!(a.as_ref().starts_with(".clickpulse-staging/"), "{a}");
    }
}
