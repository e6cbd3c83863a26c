//! # clickpulse-job
//!
//! The standard clickstream job: seven streams over event time, from a TOML job file.
//!
//! | stream | definition |
//! |---|---|
//! | `page_views` | page views per url per tumbling window (default 1 s) |
//! | `page_views_30s` | page views per url over a 30 s window sliding every 5 s |
//! | `top_pages` | the top N (default 10) urls of each `page_views_30s` window, by count desc then url asc |
//! | `sessions` | per visitor, a session ends after 30 min without a click; emitted when it closes |
//! | `active_visitors` | exact unique visitors per tumbling window (default 1 min) |
//! | `segments` | closed sessions joined with the visitor-history table, per segment and window of their last click: sessions, clicks (`unknown` for visitors without history) |
//! | `trending` | per kind (`page`, `product`, `search`), the items whose count in the window rose most against the window before (score = count − previous count, rising items only, top N) |
//!
//! Besides these, `late_events` (clicks a stream refused as late) and `dead_letters` (records
//! that did not decode) are written to the same outputs.
//!
//! | part | what it is |
//! |---|---|
//! | [`JobConfig`] | the job file: defaults → TOML → `CLICKPULSE__SECTION__KEY` env vars |
//! | [`StandardJob`] | builds the streams on an engine [`Job`](clickpulse_engine::Job) |
//! | [`rows`] | the rows, with exactly the output field names |
//! | [`history`] | the visitor-history table (CSV / PostgreSQL / demo), Bloom filter, reloads |
//! | [`Outputs`] | the result sinks the job writes to |

pub mod click;
pub mod config;
pub mod hashed;
pub mod history;
mod outputs;
pub mod rows;
mod standard;

pub use config::{ConfigError, JobConfig};
pub use outputs::{MemorySink, Outputs};
pub use standard::{STREAMS, SessionStats, StandardJob, stream_fields};
