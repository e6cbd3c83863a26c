//! `count`: the number of records in each batch.

use timely::dataflow::channels::pact::{Exchange, Pipeline};

use crate::dstream::{DStream, Data, batch_unary};

impl<'s, T: Data> DStream<'s, T> {
    /// One record per batch: how many records the batch holds (0 for an empty batch).
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec![7, 8, 9], vec![], vec![1]], |s| s.count()).unwrap();
    /// assert_eq!(out, vec![vec![3], vec![0], vec![1]]);
    /// ```
    pub fn count(&self) -> DStream<'s, u64> {
        let partial = batch_unary(
            &self.stream,
            Pipeline,
            "CountLocal",
            |_b, data: Vec<T>, out| {
                out.push(data.len() as u64);
            },
        );
        let total = batch_unary(
            &partial,
            Exchange::new(|_: &u64| 0),
            "Count",
            |_b, data: Vec<u64>, out| {
                if !data.is_empty() {
                    out.push(data.iter().sum());
                }
            },
        );
        self.derive(total)
    }
}
