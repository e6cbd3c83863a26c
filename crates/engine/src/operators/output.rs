//! Output operations: `foreach_batch`, `print`, `save_as_text_files`. Every job needs at least
//! one; they are what makes batches run.

use std::fmt::Debug;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::probe::Probe;

use crate::dstream::{DStream, Data, batch_unary};
use crate::time::BatchId;

/// What an output operation knows about the batch it is handed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchInfo {
    /// The batch id.
    pub batch: BatchId,
    /// The batch's nominal start, ms since the epoch.
    pub batch_start_ms: u64,
    /// The batch's nominal end (exclusive), ms since the epoch.
    pub batch_end_ms: u64,
    /// For a DStream window: the processing-time range `[start, end)` it covers. Event-time
    /// windows are carried by the rows themselves.
    pub window: Option<(u64, u64)>,
    /// Rows handed to this output for the batch.
    pub rows: usize,
    /// Time since this worker started the batch.
    pub processing_time: Duration,
}

impl<'s, T: Data> DStream<'s, T> {
    /// Calls `f` once for every batch, on worker 0, with all of the batch's rows (also for empty
    /// batches). This is the general output operation: sinks are built on it.
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use clickpulse_engine::{QueueSource, RunMode, StreamingContext};
    ///
    /// let source = QueueSource::from_batches("n", vec![vec![1, 2], vec![3]]);
    /// let sums = Arc::new(Mutex::new(Vec::new()));
    /// let sink = Arc::clone(&sums);
    /// StreamingContext::new(Duration::from_millis(50)).unwrap()
    ///     .mode(RunMode::UntilEnd)
    ///     .run(move |job| {
    ///         let sink = Arc::clone(&sink);
    ///         job.source(&source)?.foreach_batch(move |info, rows: Vec<i32>| {
    ///             sink.lock().unwrap().push((info.batch, rows.iter().sum::<i32>()));
    ///         });
    ///         Ok(())
    ///     })
    ///     .unwrap();
    /// assert_eq!(*sums.lock().unwrap(), vec![(0, 3), (1, 3)]);
    /// ```
    pub fn foreach_batch(&self, f: impl FnMut(&BatchInfo, Vec<T>) + 'static) {
        self.foreach_batch_on(0, f);
    }

    /// Like [`DStream::foreach_batch`], on worker `worker` modulo the number of workers (of
    /// process 0, in a job of several processes: outputs run where the sinks are). A job
    /// with several outputs can spread them over the workers, so that gathering and writing
    /// every stream's batches does not all fall to worker 0. One stream's batches are still
    /// handed over by one worker, in batch order.
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use clickpulse_engine::{QueueSource, RunMode, StreamingContext};
    ///
    /// let source = QueueSource::from_batches("n", vec![vec![1, 2], vec![3]]);
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let sink = Arc::clone(&seen);
    /// StreamingContext::new(Duration::from_millis(50)).unwrap()
    ///     .workers(2).unwrap()
    ///     .mode(RunMode::UntilEnd)
    ///     .run(move |job| {
    ///         let sink = Arc::clone(&sink);
    ///         job.source(&source)?.foreach_batch_on(1, move |info, mut rows: Vec<i32>| {
    ///             rows.sort();
    ///             sink.lock().unwrap().push((info.batch, rows));
    ///         });
    ///         Ok(())
    ///     })
    ///     .unwrap();
    /// assert_eq!(*seen.lock().unwrap(), vec![(0, vec![1, 2]), (1, vec![3])]);
    /// ```
    pub fn foreach_batch_on(&self, worker: usize, mut f: impl FnMut(&BatchInfo, Vec<T>) + 'static) {
        self.try_foreach_batch_on(worker, "foreach_batch", move |info, rows| {
            f(info, rows);
            Ok(())
        });
    }

    /// Like [`DStream::foreach_batch_on`] for outputs that can fail: an error stops the job
    /// after the batches already under way, with [`EngineError::Output`](crate::EngineError::Output)
    /// naming `output` (a restart from the last checkpoint then writes the batches again).
    pub fn try_foreach_batch_on(
        &self,
        worker: usize,
        output: &'static str,
        mut f: impl FnMut(&BatchInfo, Vec<T>) -> Result<(), String> + 'static,
    ) {
        let clock = self.clock();
        let window = self.window_batches;
        let shared = std::rc::Rc::clone(&self.shared);
        // On process 0, whose workers are the first: the sinks and the hub run there.
        let target = worker
            % self
                .shared
                .output_workers
                .clamp(1, self.shared.peers.max(1));
        *self.shared.outputs.borrow_mut() += 1;
        batch_unary::<_, (), _, _>(
            &self.stream,
            Exchange::new(move |_: &T| target as u64),
            "ForeachBatch",
            move |b, rows, _out| {
                if shared.worker != target {
                    return;
                }
                let info = BatchInfo {
                    batch: b,
                    batch_start_ms: clock.batch_start_ms(b),
                    batch_end_ms: clock.batch_end_ms(b),
                    window: window.map(|len| {
                        (
                            clock.batch_start_ms((b + 1).saturating_sub(len)),
                            clock.batch_end_ms(b),
                        )
                    }),
                    rows: rows.len(),
                    processing_time: shared.batch_elapsed(b),
                };
                // Nothing of a batch leaves the process before the batch is in the offset log.
                let logged = shared.wal.as_ref().map_or(Ok(()), |w| w.wait_durable(b));
                if let Err(message) = logged.and_then(|()| f(&info, rows)) {
                    tracing::error!(output, batch = b, error = %message, "output failed; stopping the job");
                    let mut slot = shared.output_error.borrow_mut();
                    slot.get_or_insert(crate::EngineError::Output {
                        output: output.to_string(),
                        message,
                    });
                }
            },
        )
        .probe_with(&self.shared.probe);
    }

    /// Prints the first `n` rows of every batch to standard output under a header naming the
    /// batch, as DStream `print` does.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::{QueueSource, RunMode, StreamingContext};
    /// let source = QueueSource::from_batches("n", vec![vec![1, 2, 3]]);
    /// StreamingContext::new(Duration::from_millis(50)).unwrap()
    ///     .mode(RunMode::UntilEnd)
    ///     .run(move |job| {
    ///         job.source(&source)?.print(2);
    ///         Ok(())
    ///     })
    ///     .unwrap();
    /// ```
    pub fn print(&self, n: usize)
    where
        T: Debug,
    {
        self.foreach_batch(move |info, rows| {
            print!("{}", format_batch(info, &rows, n));
        });
    }

    /// Writes every batch to `{prefix}-{batch start ms}.{suffix}` (one JSON value per line),
    /// atomically: a temporary file in the same directory, fsynced, then renamed. Failures are
    /// logged and counted, never fatal to the stream.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::{QueueSource, RunMode, StreamingContext};
    /// let dir = tempfile::tempdir().unwrap();
    /// let prefix = dir.path().join("counts").to_string_lossy().into_owned();
    /// let source = QueueSource::from_batches("n", vec![vec![1, 2], vec![3]]);
    /// StreamingContext::new(Duration::from_millis(50)).unwrap()
    ///     .mode(RunMode::UntilEnd)
    ///     .run(move |job| {
    ///         job.source(&source)?.save_as_text_files(&prefix, "jsonl");
    ///         Ok(())
    ///     })
    ///     .unwrap();
    /// let files = std::fs::read_dir(dir.path()).unwrap().count();
    /// assert_eq!(files, 2);
    /// ```
    pub fn save_as_text_files(&self, prefix: &str, suffix: &str) {
        let prefix = prefix.to_string();
        let suffix = suffix.to_string();
        self.foreach_batch(move |info, rows| {
            let path = PathBuf::from(format!("{prefix}-{}.{suffix}", info.batch_start_ms));
            if let Err(e) = write_json_lines_atomically(&path, &rows) {
                tracing::error!(path = %path.display(), error = %e, "could not write batch file");
            }
        });
    }
}

/// The text `print` writes for one batch.
pub(crate) fn format_batch<T: Debug>(info: &BatchInfo, rows: &[T], n: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let rule = "-------------------------------------------";
    let _ = writeln!(
        s,
        "{rule}\nBatch {} (time {} ms)\n{rule}",
        info.batch, info.batch_start_ms
    );
    for r in rows.iter().take(n) {
        let _ = writeln!(s, "{r:?}");
    }
    if rows.len() > n {
        let _ = writeln!(s, "... ({} more)", rows.len() - n);
    }
    s.push('\n');
    s
}

/// Writes `rows` as JSON lines to `path` through a temporary file and a rename.
///
/// # Errors
/// Any I/O or serialisation error; the target is then left untouched.
pub fn write_json_lines_atomically<T: Serialize>(path: &Path, rows: &[T]) -> std::io::Result<()> {
    let mut text = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut text, r).map_err(std::io::Error::other)?;
        text.push(b'\n');
    }
    write_file_atomically(path, &text)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory (created when
/// needed), fsynced, then renamed over `path`. A reader sees the old file or the whole new one.
///
/// # Errors
/// Any I/O error; the target is then left untouched.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_file_atomically(path, |tmp| {
        let mut file = std::fs::File::create(tmp)?;
        file.write_all(bytes)?;
        Ok(file)
    })
}

/// Replaces `path` atomically with what `fill` writes: `fill` creates (or truncates) and fills
/// the temporary file it is given, in the same directory as `path` (created when needed); the
/// file it returns is fsynced, then renamed over `path`, and the directory is fsynced. For writers
/// that open the file their own way, such as past the page cache.
///
/// # Errors
/// Any I/O error, `fill`'s included; the target is then left untouched.
pub fn replace_file_atomically(
    path: &Path,
    fill: impl FnOnce(&Path) -> std::io::Result<std::fs::File>,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    fill(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    // The rename is durable only once the directory is: a crash must not bring the old file
    // (or none) back after the batch was reported written.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_format_names_the_batch_and_truncates() {
        let info = BatchInfo {
            batch: 7,
            batch_start_ms: 7000,
            batch_end_ms: 8000,
            window: None,
            rows: 3,
            processing_time: Duration::ZERO,
        };
        let text = format_batch(&info, &[1, 2, 3], 2);
        assert!(text.contains("Batch 7 (time 7000 ms)"), "{text}");
        assert!(text.contains("1\n2\n... (1 more)"), "{text}");
    }

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x-1.jsonl");
        write_json_lines_atomically(&path, &[("a", 1), ("b", 2)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "[\"a\",1]\n[\"b\",2]\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
