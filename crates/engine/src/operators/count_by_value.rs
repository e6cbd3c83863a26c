//! `count_by_value`: how often each distinct record occurs in each batch.

use crate::dstream::{DStream, Key};

impl<'s, T: Key> DStream<'s, T> {
    /// Each distinct record of a batch with its number of occurrences.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec!['a', 'b', 'a']], |s| s.count_by_value()).unwrap();
    /// assert_eq!(out, vec![vec![('a', 2), ('b', 1)]]);
    /// ```
    pub fn count_by_value(&self) -> DStream<'s, (T, u64)> {
        self.map(|x| (x, 1u64)).reduce_by_key(|a, b| a + b)
    }
}
