//! `transform`: a function of each whole batch; `map_partitions`: of each worker's share of it.

use timely::dataflow::channels::pact::{Exchange, Pipeline};

use crate::dstream::{DStream, Data, batch_unary};
use crate::time::BatchId;

impl<'s, T: Data> DStream<'s, T> {
    /// Applies `f` to each whole batch (gathered on worker 0) — for logic that needs every record
    /// of a batch at once, such as a sort. `f` is also called for empty batches.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec![3, 1, 2]], |s| {
    ///     s.transform(|_batch, mut rows: Vec<i32>| {
    ///         rows.sort();
    ///         rows.into_iter().take(2).collect::<Vec<_>>()
    ///     })
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![1, 2]]);
    /// ```
    pub fn transform<U: Data>(
        &self,
        f: impl Fn(BatchId, Vec<T>) -> Vec<U> + 'static,
    ) -> DStream<'s, U> {
        let on_worker_zero = self.shared.worker == 0;
        let stream = batch_unary(
            &self.stream,
            Exchange::new(|_: &T| 0),
            "Transform",
            move |b, data, out| {
                if on_worker_zero {
                    out.extend(f(b, data));
                }
            },
        );
        self.derive(stream)
    }

    /// Applies `f`, on every worker, to that worker's records of each batch (its partition of the
    /// batch, as Spark's `mapPartitions`) — for work that is cheaper on a whole batch than per
    /// record and needs no other worker's records, such as sorting before a merge on one worker.
    /// `f` is called for every batch on every worker, also when the worker has no records.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// // The batch's records are split between the workers; every record is in one partition.
    /// let out = collect(2, vec![vec![3, 1, 2]], |s| {
    ///     s.map_partitions(|_batch, rows: Vec<i32>| vec![rows.iter().sum::<i32>()])
    /// })
    /// .unwrap();
    /// assert_eq!(out[0].iter().sum::<i32>(), 6);
    /// ```
    pub fn map_partitions<U: Data>(
        &self,
        f: impl Fn(BatchId, Vec<T>) -> Vec<U> + 'static,
    ) -> DStream<'s, U> {
        let stream = batch_unary(
            &self.stream,
            Pipeline,
            "MapPartitions",
            move |b, data, out| {
                out.extend(f(b, data));
            },
        );
        self.derive(stream)
    }
}
