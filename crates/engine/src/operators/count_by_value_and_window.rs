//! `count_by_value_and_window`: how often each record occurred over a DStream window.

use std::time::Duration;

use crate::dstream::{DStream, Key};
use crate::error::Result;

impl<'s, T: Key> DStream<'s, T> {
    /// Each distinct record of the last `len` of batches with its count, every `slide`.
    /// Incremental (uses [`DStream::reduce_by_key_and_window_inv`]); records whose count falls to
    /// zero are dropped.
    ///
    /// # Errors
    /// As [`DStream::window`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec!['a'], vec!['a', 'b'], vec!['b']], |s| {
    ///     s.count_by_value_and_window(Duration::from_secs(2), Duration::from_secs(1)).unwrap()
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![('a', 1)], vec![('a', 2), ('b', 1)], vec![('a', 1), ('b', 2)]]);
    /// ```
    pub fn count_by_value_and_window(
        &self,
        len: Duration,
        slide: Duration,
    ) -> Result<DStream<'s, (T, u64)>> {
        self.map(|x| (x, 1u64)).reduce_by_key_and_window_inv(
            |a, b| a + b,
            |a, b| a - b,
            |c| *c > 0,
            len,
            slide,
        )
    }

    /// [`DStream::count_by_value_and_window`] without the inverse function: every window output
    /// recounts the whole window (O(window length)); for comparison in benchmarks.
    ///
    /// # Errors
    /// As [`DStream::window`].
    pub fn count_by_value_and_window_plain(
        &self,
        len: Duration,
        slide: Duration,
    ) -> Result<DStream<'s, (T, u64)>> {
        self.map(|x| (x, 1u64))
            .reduce_by_key_and_window(|a, b| a + b, len, slide)
    }
}
