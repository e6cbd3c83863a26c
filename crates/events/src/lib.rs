//! Click events and their input formats.
#![deny(clippy::indexing_slicing)]
// Tests may index: a panic there is a failed test. The library itself is checked without this.
#![cfg_attr(test, allow(clippy::indexing_slicing))]

pub mod binary;
mod event;
mod format;
pub mod msnbc;
mod parse;

pub use event::{ClickEvent, DEFAULT_EVENT_TYPE};
pub use format::{Format, LineFormat, UnknownFormat};
pub use parse::{
    LineError, LineParser, ParseError, ParseOptions, SliceParser, parse_line, parse_slice,
};
