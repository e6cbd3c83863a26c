//! `reduce`: all records of a batch combined into one.

use timely::dataflow::channels::pact::{Exchange, Pipeline};

use crate::dstream::{DStream, Data, batch_unary};

impl<'s, T: Data> DStream<'s, T> {
    /// One record per non-empty batch: its records combined with `f` (associative and
    /// commutative). Combined on each worker first, then on worker 0.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec![1, 2, 3], vec![], vec![10]], |s| s.reduce(|a, b| a + b)).unwrap();
    /// assert_eq!(out, vec![vec![6], vec![], vec![10]]);
    /// ```
    pub fn reduce(&self, f: impl Fn(T, T) -> T + Clone + 'static) -> DStream<'s, T> {
        let g = f.clone();
        let local = batch_unary(
            &self.stream,
            Pipeline,
            "ReduceLocal",
            move |_b, data: Vec<T>, out| {
                out.extend(data.into_iter().reduce(&g));
            },
        );
        let total = batch_unary(
            &local,
            Exchange::new(|_: &T| 0),
            "Reduce",
            move |_b, data: Vec<T>, out| {
                out.extend(data.into_iter().reduce(&f));
            },
        );
        self.derive(total)
    }
}
