//! The advisory writer lock of a topic: `flock(2)` on a lock file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// An exclusive `flock(2)` on a file, held until dropped.
///
/// `flock` locks belong to the open file description, so a second open of the same file in the
/// same process conflicts too: two [`crate::Log`]s in one process cannot both write a topic.
/// Advisory only, and not reliable on network file systems.
#[derive(Debug)]
pub(crate) struct WriterLock {
    _file: File,
}

/// Outcome of [`WriterLock::try_acquire`].
pub(crate) enum Acquired {
    /// The lock is ours.
    Locked(WriterLock),
    /// Someone else holds it; the text says who, as recorded in the file.
    HeldBy(String),
}

impl WriterLock {
    /// Takes the lock on `path` (creating the file) without waiting, and records our process id
    /// in it for the error message of the next one who tries.
    pub fn try_acquire(path: &Path) -> io::Result<Acquired> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if !try_flock(&file)? {
            let mut holder = String::new();
            // Best effort: the holder may be rewriting the file right now.
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "held by another process".to_owned(),
                text => text.to_owned(),
            };
            return Ok(Acquired::HeldBy(holder));
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "held by pid {}", std::process::id())?;
        Ok(Acquired::Locked(WriterLock { _file: file }))
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: true if locked, false if another description holds it.
fn try_flock(file: &File) -> io::Result<bool> {
    #[expect(
        unsafe_code,
        reason = "flock(2) has no safe wrapper before Rust 1.89 (File::try_lock); the fd is valid \
                  for the call because `file` is borrowed"
    )]
    // SAFETY: `flock` takes a plain integer fd and flags and touches no memory of ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// The lock file of a topic directory.
pub(crate) fn lock_path(topic_dir: &Path) -> PathBuf {
    topic_dir.join("writer.lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = lock_path(dir.path());
        let first = WriterLock::try_acquire(&path).expect("lock");
        assert!(matches!(first, Acquired::Locked(_)));
        match WriterLock::try_acquire(&path).expect("lock") {
            Acquired::HeldBy(holder) => {
                assert!(holder.contains(&std::process::id().to_string()), "{holder}");
            }
            Acquired::Locked(_) => panic!("second lock acquired"),
        }
        drop(first);
        assert!(matches!(
            WriterLock::try_acquire(&path).expect("lock"),
            Acquired::Locked(_)
        ));
    }
}
