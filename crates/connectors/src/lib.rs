//! # clickpulse-connectors
//!
//! Where clicks come from and where results go. Each connector lives in its own module
//! (`source` and/or `sink` inside), and every connector is listed once in [`CONNECTORS`].
//!
//! | connector | source | sink |
//! |---|---|---|
//! | [`log`] | [`log::LogSource`]: the embedded log as an engine source | [`log::LogWriter`]: clicks into the log |
//! | [`files`] | — | [`files::JsonlSink`]: one JSON Lines file per stream and batch |
//!
//! Results travel as [`ResultBatch`]es: one stream's rows of one batch, with the batch id and
//! window bounds every consumer needs to de-duplicate and resume. A [`ResultSink`] takes them;
//! [`BackgroundSink`] runs a slow one (files, with an fsync per file) on a thread of its own.

mod background;
pub mod files;
pub mod kafka;
pub mod log;
mod result;

pub use background::BackgroundSink;
pub use result::{ResultBatch, ResultSink, SinkError};

/// A connector's name and what it offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectorInfo {
    /// The name used in URLs and job files (`log`, `kafka`, …).
    pub name: &'static str,
    /// Whether it can be a job's input.
    pub source: bool,
    /// Whether it can take a job's results.
    pub sink: bool,
}

/// Every connector, in one list.
pub const CONNECTORS: &[ConnectorInfo] = &[
    ConnectorInfo {
        name: "log",
        source: true,
        sink: true,
    },
    ConnectorInfo {
        name: "files",
        source: false,
        sink: true,
    },
    ConnectorInfo {
        name: "kafka",
        source: true,
        sink: true,
    },
];
