//! Files: results as JSON Lines, one file per stream and batch.

mod direct;
mod sink;

pub use sink::JsonlSink;
