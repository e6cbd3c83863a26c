//! # clickpulse-engine
//!
//! A micro-batch streaming engine with the DStream programming model, executed on
//! [timely dataflow](https://docs.rs/timely). A stream is a sequence of batches; every batch is a
//! small deterministic job whose id is the timely timestamp, and a batch is complete when the
//! dataflow's frontier passes it. Ordinary jobs need no timely types.
//!
//! | part | what it is |
//! |---|---|
//! | [`StreamingContext`] | batch interval, workers, run mode; runs a job function on every worker |
//! | [`Job`] | what the job function receives: creates DStreams from sources |
//! | [`DStream`] | the stream; its operators live one per module in [`operators`] and [`event_time`] |
//! | [`source`] | the partitioned, offset-addressed source trait and the in-memory [`QueueSource`] |
//! | [`watermark`] | how event time progresses: per-partition maxima, idleness, end of input |
//! | [`listener`] | batch submitted / completed events for metrics and dashboards |
//! | [`metrics`] | late events, dead letters, state sizes |
//! | [`testing`] | run a job over in-memory batches and collect its output |
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use clickpulse_engine::{QueueSource, RunMode, StreamingContext};
//!
//! // Page views per url, per batch, on two workers.
//! let urls = |us: &[&str]| us.iter().map(|u| u.to_string()).collect::<Vec<_>>();
//! let clicks = QueueSource::from_batches("clicks", vec![
//!     urls(&["/news", "/sports", "/news"]),
//!     urls(&["/weather"]),
//! ]);
//! let results = Arc::new(Mutex::new(Vec::new()));
//! let sink = Arc::clone(&results);
//! let summary = StreamingContext::new(Duration::from_millis(100))?
//!     .workers(2)?
//!     .mode(RunMode::UntilEnd)
//!     .run(move |job| {
//!         let sink = Arc::clone(&sink);
//!         job.source(&clicks)?
//!             .count_by_value()
//!             .foreach_batch(move |info, mut rows| {
//!                 rows.sort();
//!                 sink.lock().unwrap().push((info.batch, rows));
//!             });
//!         Ok(())
//!     })?;
//! assert_eq!(summary.input_rows, 4);
//! let results = results.lock().unwrap();
//! assert_eq!(results[0], (0, vec![("/news".to_string(), 2), ("/sports".to_string(), 1)]));
//! assert_eq!(results[1], (1, vec![("/weather".to_string(), 1)]));
//! # Ok::<(), clickpulse_engine::EngineError>(())
//! ```

pub mod checkpoint;
pub mod cluster;
mod context;
mod dstream;
mod error;
pub mod event_time;
mod job;
pub mod listener;
pub mod metrics;
pub mod operators;
pub mod source;
pub mod testing;
mod time;
pub mod watermark;

pub use context::{
    Cluster, DEFAULT_KEY_GROUPS, RunMode, RunSummary, ShutdownHandle, StreamingContext,
};
pub use dstream::{DStream, Data, Key, route};
pub use error::{EngineError, RecoveryError, Result};
pub use event_time::{EventTimeOutput, Session};
pub use job::Job;
pub use operators::map_with_state::State;
pub use operators::output::{
    BatchInfo, replace_file_atomically, write_file_atomically, write_json_lines_atomically,
};
pub use source::{EventTime, QueueSource};
pub use time::{BatchClock, BatchId, Window, Windows};
