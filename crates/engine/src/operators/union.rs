//! `union`: the records of two streams, batch by batch.

use timely::dataflow::operators::Concat;

use crate::dstream::{DStream, Data};

impl<'s, T: Data> DStream<'s, T> {
    /// A stream whose batch `b` holds the records of batch `b` of both streams. Watermarks of
    /// both lineages are combined (the lower wins).
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(1, vec![vec![1, 2]], |s| s.union(&s.map(|x| x + 100))).unwrap();
    /// assert_eq!(out, vec![vec![1, 2, 101, 102]]);
    /// ```
    pub fn union(&self, other: &DStream<'s, T>) -> DStream<'s, T> {
        let mut out = self.derive(self.stream.clone().concat(other.stream.clone()));
        out.watermarks = match (&self.watermarks, &other.watermarks) {
            (Some(a), Some(b)) => Some(a.clone().concat(b.clone())),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        out
    }
}
