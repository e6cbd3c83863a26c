//! Whole files written past the page cache.
//!
//! A result file is written once, fsynced at once and not read back by the writer, so copying it
//! into the page cache first buys nothing: on Linux the file sink opens its temporary files with
//! `O_DIRECT`, and the disk reads the text straight from the sink's buffer. Direct writes must
//! start at an aligned address and cover whole blocks, so the text is kept in a block-aligned
//! buffer, padded to a whole block for the write, and the file is cut back to the text's length
//! before the fsync. Where the file system refuses direct writes (`EINVAL`), the writer says so
//! once and writes through the page cache from then on.

use std::io;
use std::path::Path;

use aligned_vec::{AVec, ConstAlign};

/// What direct writes are aligned to: a page, a multiple of every common logical block size.
pub(crate) const BLOCK: usize = 4096;

/// Text in memory aligned to [`BLOCK`].
pub(crate) type BlockText = AVec<u8, ConstAlign<BLOCK>>;

/// An empty [`BlockText`].
pub(crate) fn block_text() -> BlockText {
    AVec::new(BLOCK)
}

/// How a [`FileWriter`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Past the page cache, falling back to `Buffered` where the file system refuses.
    Direct,
    /// Through the page cache.
    Buffered,
}

/// Replaces whole files atomically, past the page cache where it can.
#[derive(Debug, Clone)]
pub(crate) struct FileWriter {
    mode: WriteMode,
}

impl FileWriter {
    /// A writer that starts in `mode`.
    pub(crate) fn new(mode: WriteMode) -> FileWriter {
        FileWriter { mode }
    }

    /// How the next file will be written.
    #[cfg(test)]
    fn mode(&self) -> WriteMode {
        self.mode
    }

    /// Replaces `path` with `text` (temporary file, fsync, rename). `text` is padded while the
    /// file is written and holds exactly its old bytes again afterwards.
    ///
    /// # Errors
    /// Any I/O error; the target is then left untouched.
    pub(crate) fn write(&mut self, path: &Path, text: &mut BlockText) -> io::Result<()> {
        self.write_with(path, text, write_direct)
    }

    /// [`FileWriter::write`] with `direct` for the direct write.
    fn write_with(
        &mut self,
        path: &Path,
        text: &mut BlockText,
        direct: impl FnOnce(&Path, &mut BlockText) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.mode == WriteMode::Direct {
            match direct(path, text) {
                Err(e) if refused(&e) => {
                    tracing::info!(
                        path = %path.display(),
                        error = %e,
                        "direct writes refused here: writing through the page cache"
                    );
                    self.mode = WriteMode::Buffered;
                }
                done => return done,
            }
        }
        clickpulse_engine::write_file_atomically(path, text)
    }
}

/// Whether `e` is the file system refusing a direct write (rather than a real failure).
fn refused(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    {
        e.raw_os_error() == Some(libc::EINVAL)
    }
    #[cfg(not(target_os = "linux"))]
    {
        e.kind() == io::ErrorKind::Unsupported
    }
}

#[cfg(target_os = "linux")]
fn write_direct(path: &Path, text: &mut BlockText) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let len = text.len();
    // Whole blocks from an aligned address; the padding is cut off the file before the fsync.
    text.resize(len.next_multiple_of(BLOCK), b'\n');
    let written = clickpulse_engine::replace_file_atomically(path, |tmp| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(tmp)?;
        file.write_all(text)?;
        file.set_len(len as u64)?;
        Ok(file)
    });
    text.truncate(len);
    written
}

#[cfg(not(target_os = "linux"))]
fn write_direct(_path: &Path, _text: &mut BlockText) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "direct writes are only used on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(len: usize) -> BlockText {
        let mut text = block_text();
        text.extend_from_slice(
            &(0..len)
                .map(|i| b"abcdefghij\n"[i % 11])
                .collect::<Vec<u8>>(),
        );
        text
    }

    #[test]
    fn files_hold_exactly_the_text_around_block_boundaries_in_both_modes() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [WriteMode::Direct, WriteMode::Buffered] {
            let mut writer = FileWriter::new(mode);
            for len in [1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17, 0] {
                let path = dir.path().join(format!("{mode:?}/f-{len}.jsonl"));
                let mut text = text_of(len);
                let before = text.to_vec();
                writer.write(&path, &mut text).unwrap();
                assert_eq!(
                    text.as_slice(),
                    before.as_slice(),
                    "the buffer is given back"
                );
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    before,
                    "{mode:?}, {len} bytes"
                );
                // Rewriting a file with shorter text leaves no tail of the longer one.
                let mut short = text_of(len / 2);
                writer.write(&path, &mut short).unwrap();
                assert_eq!(std::fs::read(&path).unwrap(), short.to_vec());
            }
            if mode == WriteMode::Direct && writer.mode() != WriteMode::Direct {
                eprintln!(
                    "note: {} refuses direct writes; only the fallback ran",
                    dir.path().display()
                );
            }
            let names: Vec<_> = std::fs::read_dir(dir.path().join(format!("{mode:?}")))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(names.len(), 6, "no temporary file is left: {names:?}");
            assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        }
    }

    #[test]
    fn a_refused_direct_write_falls_back_to_the_page_cache_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.jsonl");
        let mut writer = FileWriter::new(WriteMode::Direct);
        let mut text = text_of(10);
        let mut tries = 0;
        let refuse = |_: &Path, _: &mut BlockText| {
            tries += 1;
            Err(refusal())
        };
        writer.write_with(&path, &mut text, refuse).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), text.to_vec());
        assert_eq!(writer.mode(), WriteMode::Buffered);
        // No more direct tries once refused.
        writer
            .write_with(&path, &mut text_of(20), |_, _| panic!("tried again"))
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), text_of(20).to_vec());
        assert_eq!(tries, 1);
    }

    /// What a file system that refuses direct writes answers.
    fn refusal() -> io::Error {
        #[cfg(target_os = "linux")]
        return io::Error::from_raw_os_error(libc::EINVAL);
        #[cfg(not(target_os = "linux"))]
        return io::Error::from(io::ErrorKind::Unsupported);
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_the_text_alone() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be: the temporary file cannot be created.
        std::fs::write(dir.path().join("blocked"), b"x").unwrap();
        let path = dir.path().join("blocked/f.jsonl");
        for mode in [WriteMode::Direct, WriteMode::Buffered] {
            let mut writer = FileWriter::new(mode);
            let mut text = text_of(5000);
            let before = text.to_vec();
            assert!(writer.write(&path, &mut text).is_err());
            assert_eq!(text.to_vec(), before);
            assert_eq!(writer.mode(), mode, "a real failure is not a refusal");
        }
    }
}
