//! DStream windows over batches: `window`, `count_by_window`, `reduce_by_window`.
//!
//! A window of length `L` batches sliding every `S` batches is emitted at every batch `b` with
//! `(b + 1) % S == 0` and holds batches `b + 1 - L ..= b` (fewer at the start of the stream).
//! Length and slide are given as durations and must be positive multiples of the batch interval.

use std::collections::VecDeque;
use std::time::Duration;

use timely::dataflow::channels::pact::Pipeline;

use crate::checkpoint::state::StateHandle;
use crate::dstream::{DStream, Data, batch_unary, route};
use crate::error::Result;
use crate::time::BatchId;

/// The batches a DStream window holds, oldest first.
pub(crate) type Kept<T> = VecDeque<(BatchId, Vec<T>)>;

/// Saves a window's batches after `batch`: every record with its batch, in the key group `hash`
/// gives it (its key's, for keyed windows, whose state must stay with the key).
pub(crate) fn save_kept<T: Data>(
    ckpt: &StateHandle,
    batch: BatchId,
    kept: &Kept<T>,
    mut hash: impl FnMut(&T) -> u64,
) {
    let entries = kept
        .iter()
        .flat_map(|(b, rows)| rows.iter().map(move |r| (b, r)))
        .map(|(b, r)| (hash(r), (*b, r)));
    ckpt.save(batch, &(), entries);
}

/// A window's batches from the checkpoint being restored (the records of the key groups this
/// worker owns), or nothing.
///
/// # Errors
/// [`EngineError::Recovery`](crate::EngineError::Recovery) when the saved state does not decode.
pub(crate) fn restore_kept<T: Data>(ckpt: &StateHandle) -> Result<Kept<T>> {
    let mut by_batch: std::collections::BTreeMap<BatchId, Vec<T>> = Default::default();
    if let Some((_, entries)) = ckpt.restore::<(), (BatchId, T)>()? {
        for (b, r) in entries {
            by_batch.entry(b).or_default().push(r);
        }
    }
    Ok(by_batch.into_iter().collect())
}

/// A window's length and slide in batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchWindow {
    pub len: u64,
    pub slide: u64,
}

impl BatchWindow {
    /// Whether a window is emitted at batch `b`.
    pub fn emits_at(&self, b: u64) -> bool {
        (b + 1).is_multiple_of(self.slide)
    }
}

impl<'s, T: Data> DStream<'s, T> {
    /// Validates `len` and `slide` against the batch interval.
    pub(crate) fn batch_window(&self, len: Duration, slide: Duration) -> Result<BatchWindow> {
        let clock = self.clock();
        Ok(BatchWindow {
            len: clock.batches_in("window length", len)?,
            slide: clock.batches_in("slide duration", slide)?,
        })
    }

    /// All records of the last `len` of batches, emitted every `slide`.
    ///
    /// # Errors
    /// [`EngineError::NotBatchMultiple`](crate::EngineError::NotBatchMultiple) naming the value
    /// when `len` or `slide` is not a positive multiple of the batch interval.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::testing::collect;
    /// // The test helper's batch interval is 1 s: a 2-batch window sliding every batch.
    /// let out = collect(1, vec![vec![1], vec![2], vec![3]], |s| {
    ///     s.window(Duration::from_secs(2), Duration::from_secs(1)).unwrap()
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![1], vec![1, 2], vec![2, 3]]);
    /// ```
    pub fn window(&self, len: Duration, slide: Duration) -> Result<DStream<'s, T>> {
        let w = self.batch_window(len, slide)?;
        let ckpt = self.shared.stateful("window");
        let mut kept: Kept<T> = restore_kept(&ckpt)?;
        let mut saved = 0u64;
        let stream = batch_unary(&self.stream, Pipeline, "Window", move |b, data, out| {
            kept.push_back((b, data));
            while kept.front().is_some_and(|(first, _)| first + w.len <= b) {
                kept.pop_front();
            }
            if w.emits_at(b) {
                for (_, rows) in &kept {
                    out.extend(rows.iter().cloned());
                }
            }
            if ckpt.due(b) {
                // Unkeyed records may restore on any worker: spread them evenly.
                save_kept(&ckpt, b, &kept, |_| {
                    saved += 1;
                    route(&saved)
                });
            }
        });
        let mut out = self.derive(stream);
        out.window_batches = Some(w.len);
        Ok(out)
    }

    /// The number of records in the last `len` of batches, every `slide`.
    ///
    /// # Errors
    /// As [`DStream::window`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec![1, 1], vec![2], vec![3, 3, 3]], |s| {
    ///     s.count_by_window(Duration::from_secs(2), Duration::from_secs(1)).unwrap()
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![2], vec![3], vec![4]]);
    /// ```
    pub fn count_by_window(&self, len: Duration, slide: Duration) -> Result<DStream<'s, u64>> {
        self.count().reduce_by_window(|a, b| a + b, len, slide)
    }

    /// The records of the last `len` of batches combined with `f` (associative and
    /// commutative), every `slide`.
    ///
    /// # Errors
    /// As [`DStream::window`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec![1, 2], vec![3], vec![4]], |s| {
    ///     s.reduce_by_window(|a, b| a.max(b), Duration::from_secs(2), Duration::from_secs(2)).unwrap()
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![], vec![3], vec![]]);
    /// ```
    pub fn reduce_by_window(
        &self,
        f: impl Fn(T, T) -> T + Clone + 'static,
        len: Duration,
        slide: Duration,
    ) -> Result<DStream<'s, T>> {
        let mut out = self.reduce(f.clone()).window(len, slide)?.reduce(f);
        out.window_batches = self.batch_window(len, slide).ok().map(|w| w.len);
        Ok(out)
    }
}
