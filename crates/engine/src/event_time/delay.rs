//! `delay_watermark`: event time of a derived stream that lags its source's.

use std::time::Duration;

use timely::dataflow::operators::vec::Map;

use crate::dstream::{DStream, Data};
use crate::error::Result;
use crate::watermark::WatermarkReport;

impl<'s, T: Data> DStream<'s, T> {
    /// The same stream, with its watermark held back by `delay`. Use it when a derived stream's
    /// event time lags the source's by a known bound: closed sessions, for example, are emitted
    /// once the watermark passes their last click plus the gap, so windows over their last click
    /// need the watermark minus the gap to see every session.
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`](crate::EngineError::InvalidConfig) (`event_time`) when the
    /// stream has no event time.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::testing::collect_event_time;
    /// use clickpulse_engine::{Window, Windows};
    /// // An event at 1_500 arrives in batch 1, after the watermark reached 1_600 (batch 0's max):
    /// // late for [1000, 2000) normally, on time with a 1 s delay.
    /// let parts = vec![vec![vec![('a', 1_600u64)], vec![('a', 1_500)]]];
    /// let out = collect_event_time(1, parts, |e: &(char, u64)| e.1, |s| {
    ///     let w = Windows::tumbling(Duration::from_secs(1)).unwrap();
    ///     s.delay_watermark(Duration::from_secs(1)).unwrap()
    ///         .map(|e| (e.0, e)).count_by_key_in_window(w, |e| e.1).unwrap().output
    /// })
    /// .unwrap();
    /// assert_eq!(out.concat(), vec![('a', Window { start_ms: 1000, end_ms: 2000 }, 2)]);
    /// ```
    pub fn delay_watermark(&self, delay: Duration) -> Result<DStream<'s, T>> {
        let wm = self.require_watermarks("delay_watermark")?;
        let d = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let delayed = wm.map(move |r| match r {
            WatermarkReport::Active(t) => WatermarkReport::Active(t.saturating_sub(d)),
            WatermarkReport::Idle(t) => WatermarkReport::Idle(t.saturating_sub(d)),
            other => other,
        });
        let mut out = self.clone();
        out.watermarks = Some(delayed);
        Ok(out)
    }
}
