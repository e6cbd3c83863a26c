//! The embedded log: clicks in (the default source) and clicks out (replay, the collector).
//!
//! Records hold one click each: the value is the click in the binary encoding of
//! [`clickpulse_events::binary`], the key is the visitor id, the timestamp is the click's event
//! time; the partition is [`clickpulse_events::partition_for`] of the visitor id, so a visitor's
//! clicks stay in order.

mod sink;
mod source;

pub use sink::{LogBatches, LogWriter};
pub use source::LogSource;
