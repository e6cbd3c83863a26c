//! Event-time operators: windows and sessions assigned by each event's own timestamp and closed
//! by the watermark (see [`watermark`](crate::watermark)).
//!
//! They need a stream whose source was created with
//! [`Job::source_with_event_time`](crate::Job::source_with_event_time). The rules, shared by
//! every operator here:
//!
//! - Windows are half-open `[start, end)`, aligned to multiples of the slide from the epoch.
//! - A window is emitted in the batch in which the watermark reaches its end (`end <= watermark`);
//!   a session when the watermark reaches its last click plus the gap.
//! - An event is checked against the watermark as it stood before its batch. It is **late** when
//!   the earliest window containing it has already closed (for sessions: when its timestamp is
//!   below the watermark). A late event is counted in no window; it goes to the `late` side
//!   stream and is counted in the engine's metrics — never silently dropped.
//! - Given the same input, in-order partitions give the same results for any number of workers
//!   and any batching.
//!
//! | module | operators |
//! |---|---|
//! | [`window_aggregate`] | `aggregate_by_key_in_window`, `count_by_key_in_window`, `reduce_by_key_in_window` |
//! | [`session`] | `session_by_key` |
//! | [`distinct`] | `distinct_count_in_window`, `approx_distinct_count_in_window` |
//! | `delay` | `delay_watermark` |

mod close_queue;
mod delay;
pub mod distinct;
mod pane_tables;
pub mod session;
pub mod window_aggregate;

pub use session::Session;
pub use window_aggregate::{Aggregator, Count, Reduce};

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;

use crate::dstream::{DStream, Data, Piece, batch_binary_eager};
use crate::error::{EngineError, Result};
use crate::time::{BatchId, Windows};
use crate::watermark::{WatermarkReport, WatermarkTracker};

/// An event-time operator's results and the events that came too late for them.
pub struct EventTimeOutput<'s, R: Data, L: Data> {
    /// The results, emitted as windows or sessions close.
    pub output: DStream<'s, R>,
    /// Events too late for their window or session.
    pub late: DStream<'s, L>,
}

/// Sends the events of a batch that are late for their earliest window (judged against the
/// watermark `before` the batch, per the rules above) to `out` as [`Routed::Late`], and hands each
/// on-time event with its timestamp to `on_time`. Returns how many were late.
pub(crate) fn route_late<K, V, R>(
    data: impl IntoIterator<Item = (K, V)>,
    windows: &Windows,
    ts: &impl Fn(&V) -> u64,
    before: u64,
    out: &mut Vec<Routed<R, (K, V)>>,
    mut on_time: impl FnMut(K, V, u64),
) -> u64 {
    let mut late = 0;
    for (k, v) in data {
        let t = ts(&v);
        // Every window that holds `t` ends after it: only events behind the watermark can be late.
        if t < before && windows.first_end(t) <= before {
            late += 1;
            out.push(Routed::Late((k, v)));
        } else {
            on_time(k, v, t);
        }
    }
    late
}

/// A record routed either to the results or to the late side stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Routed<R, L> {
    Out(R),
    Late(L),
}

impl<'s, T: Data> DStream<'s, T> {
    /// The watermark reports this stream's event time is measured by.
    pub(crate) fn require_watermarks(
        &self,
        op: &str,
    ) -> Result<StreamVec<'s, BatchId, WatermarkReport>> {
        self.watermarks
            .clone()
            .ok_or_else(|| EngineError::InvalidConfig {
                key: "event_time",
                reason: format!(
                    "`{op}` needs event time: create the source with Job::source_with_event_time"
                ),
            })
    }

    /// Splits a routed stream into its results and its late events, moving (not cloning) each
    /// record to its side.
    pub(crate) fn split_routed<R: Data, L: Data>(
        &self,
        routed: StreamVec<'s, BatchId, Routed<R, L>>,
    ) -> (StreamVec<'s, BatchId, R>, StreamVec<'s, BatchId, L>) {
        let (out, late) = self
            .derive(routed)
            .fan_out2(|r, out: &mut Vec<R>, late: &mut Vec<L>| match r {
                Routed::Out(x) => out.push(x),
                Routed::Late(x) => late.push(x),
            });
        (out.stream, late.stream)
    }
}

impl<'s, K: Data, V: Data> DStream<'s, (K, V)> {
    /// Stage 1 of the windowed operators, on the worker that read each event: events late for
    /// their earliest window go to the late stream (and the metrics); every other is folded into
    /// `state` with `fold(state, key, value, event time)`. When a batch ends, `flush` hands on what
    /// the state gathered for it. Returns the partials and the late events.
    ///
    /// # Errors
    /// As [`DStream::require_watermarks`], naming the operator `name`.
    pub(crate) fn pre_aggregate<S: 'static, P: Data>(
        &self,
        name: &str,
        windows: Windows,
        ts: impl Fn(&V) -> u64 + 'static,
        mut state: S,
        mut fold: impl FnMut(&mut S, K, V, u64) + 'static,
        mut flush: impl FnMut(&mut S, &mut dyn FnMut(P)) + 'static,
    ) -> Result<(StreamVec<'s, BatchId, P>, StreamVec<'s, BatchId, (K, V)>)> {
        let wm = self.require_watermarks(name)?;
        let metrics = Arc::clone(&self.shared.metrics);
        // Its state between batches is the watermark alone (`state` is flushed at every end).
        let ckpt = self.shared.stateful("pre_aggregate");
        let mut tracker = WatermarkTracker::restore(&ckpt)?;
        let routed = batch_binary_eager(
            &self.stream,
            &wm,
            Pipeline,
            Pipeline,
            name,
            move |b, piece, out| match piece {
                Piece::Data(data) => {
                    let before = tracker.current();
                    let late = route_late(data.drain(..), &windows, &ts, before, out, |k, v, t| {
                        fold(&mut state, k, v, t);
                    });
                    metrics.add_late(late);
                }
                Piece::End(reports) => {
                    flush(&mut state, &mut |p| out.push(Routed::Out(p)));
                    tracker.advance(&reports);
                    if ckpt.due(b) {
                        ckpt.save(b, &tracker, std::iter::empty::<(u64, ())>());
                    }
                }
            },
        );
        Ok(self.split_routed(routed))
    }
}
