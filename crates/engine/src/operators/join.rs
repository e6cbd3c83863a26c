//! Joins of two keyed streams within each batch: inner, left, right and full outer.

use crate::dstream::{DStream, Data, Key};

impl<'s, K: Key, V: Data> DStream<'s, (K, V)> {
    /// Every pair of values with the same key in the same batch of both streams.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec![('a', 1), ('b', 2)]], |s| {
    ///     s.join(&s.filter(|kv| kv.0 == 'a').map_values(|v| v * 10))
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![('a', (1, 10))]]);
    /// ```
    pub fn join<W: Data>(&self, other: &DStream<'s, (K, W)>) -> DStream<'s, (K, (V, W))> {
        self.cogroup_with(other, "Join", |k, vs, ws, out| {
            for v in &vs {
                for w in &ws {
                    out.push((k.clone(), (v.clone(), w.clone())));
                }
            }
        })
    }

    /// Like [`DStream::join`], and every value of this stream without a partner paired with `None`.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(1, vec![vec![('a', 1), ('b', 2)]], |s| {
    ///     s.left_outer_join(&s.filter(|kv| kv.0 == 'a'))
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![('a', (1, Some(1))), ('b', (2, None))]]);
    /// ```
    pub fn left_outer_join<W: Data>(
        &self,
        other: &DStream<'s, (K, W)>,
    ) -> DStream<'s, (K, (V, Option<W>))> {
        self.cogroup_with(other, "LeftOuterJoin", |k, vs, ws, out| {
            for v in &vs {
                if ws.is_empty() {
                    out.push((k.clone(), (v.clone(), None)));
                }
                for w in &ws {
                    out.push((k.clone(), (v.clone(), Some(w.clone()))));
                }
            }
        })
    }

    /// Like [`DStream::join`], and every value of `other` without a partner paired with `None`.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(1, vec![vec![('a', 1), ('b', 2)]], |s| {
    ///     s.filter(|kv| kv.0 == 'a').right_outer_join(&s)
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![('a', (Some(1), 1)), ('b', (None, 2))]]);
    /// ```
    pub fn right_outer_join<W: Data>(
        &self,
        other: &DStream<'s, (K, W)>,
    ) -> DStream<'s, (K, (Option<V>, W))> {
        self.cogroup_with(other, "RightOuterJoin", |k, vs, ws, out| {
            for w in &ws {
                if vs.is_empty() {
                    out.push((k.clone(), (None, w.clone())));
                }
                for v in &vs {
                    out.push((k.clone(), (Some(v.clone()), w.clone())));
                }
            }
        })
    }

    /// Every pair with the same key, and every value without a partner on either side paired
    /// with `None`.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(1, vec![vec![('a', 1), ('b', 2)]], |s| {
    ///     s.filter(|kv| kv.0 == 'a').full_outer_join(&s.filter(|kv| kv.0 == 'b'))
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![('a', (Some(1), None)), ('b', (None, Some(2)))]]);
    /// ```
    pub fn full_outer_join<W: Data>(
        &self,
        other: &DStream<'s, (K, W)>,
    ) -> DStream<'s, (K, (Option<V>, Option<W>))> {
        self.cogroup_with(other, "FullOuterJoin", |k, vs, ws, out| {
            match (vs.is_empty(), ws.is_empty()) {
                (true, _) => out.extend(ws.into_iter().map(|w| (k.clone(), (None, Some(w))))),
                (_, true) => out.extend(vs.into_iter().map(|v| (k.clone(), (Some(v), None)))),
                _ => {
                    for v in &vs {
                        for w in &ws {
                            out.push((k.clone(), (Some(v.clone()), Some(w.clone()))));
                        }
                    }
                }
            }
        })
    }
}
