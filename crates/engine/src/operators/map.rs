//! Record-at-a-time transformations: `map`, `flat_map`, `filter`, `map_values`.

use timely::dataflow::operators::vec::{Filter, Map};

use crate::dstream::{DStream, Data};

impl<'s, T: Data> DStream<'s, T> {
    /// Applies `f` to every record.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(1, vec![vec![1, 2], vec![3]], |s| s.map(|x: i32| x * 10)).unwrap();
    /// assert_eq!(out, vec![vec![10, 20], vec![30]]);
    /// ```
    pub fn map<U: Data>(&self, f: impl FnMut(T) -> U + 'static) -> DStream<'s, U> {
        self.derive(self.stream.clone().map(f))
    }

    /// Applies `f` to every record and flattens the results.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(1, vec![vec![3, 1]], |s| s.flat_map(|n: u32| 0..n)).unwrap();
    /// assert_eq!(out, vec![vec![0, 0, 1, 2]]);
    /// ```
    pub fn flat_map<U: Data, I>(&self, f: impl FnMut(T) -> I + 'static) -> DStream<'s, U>
    where
        I: IntoIterator<Item = U>,
    {
        self.derive(self.stream.clone().flat_map(f))
    }

    /// Keeps the records for which `pred` is true.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec![1, 2, 3, 4]], |s| s.filter(|x: &i32| x % 2 == 0)).unwrap();
    /// assert_eq!(out, vec![vec![2, 4]]);
    /// ```
    pub fn filter(&self, pred: impl FnMut(&T) -> bool + 'static) -> DStream<'s, T> {
        let mut out = self.derive(self.stream.clone().filter(pred));
        out.window_batches = self.window_batches;
        out
    }
}

impl<'s, K: Data, V: Data> DStream<'s, (K, V)> {
    /// Applies `f` to the value of every key/value pair, keeping the key.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(1, vec![vec![('a', 1), ('b', 2)]], |s| s.map_values(|v: i32| v + 1)).unwrap();
    /// assert_eq!(out, vec![vec![('a', 2), ('b', 3)]]);
    /// ```
    pub fn map_values<U: Data>(&self, mut f: impl FnMut(V) -> U + 'static) -> DStream<'s, (K, U)> {
        self.map(move |(k, v)| (k, f(v)))
    }
}
