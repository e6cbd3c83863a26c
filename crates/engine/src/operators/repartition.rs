//! `repartition`: spread records evenly over the workers.

use timely::dataflow::operators::Exchange as _;

use crate::dstream::{DStream, Data};

impl<'s, T: Data> DStream<'s, T> {
    /// Redistributes records round-robin over the workers (to spread a skewed source).
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec![3, 1, 2]], |s| s.repartition()).unwrap();
    /// assert_eq!(out, vec![vec![1, 2, 3]]);
    /// ```
    pub fn repartition(&self) -> DStream<'s, T> {
        let mut counter = 0u64;
        let stream = self.stream.clone().exchange(move |_| {
            counter = counter.wrapping_add(1);
            counter
        });
        self.derive(stream)
    }
}
