//! Click events and their input formats: the one record type every clickpulse source produces
//! and every job consumes, and the ways it arrives.
//!
//! # Map of the crate
//!
//! | part | what it does |
//! |---|---|
//! | [`ClickEvent`] | one click: `ts_ms`, `visitor_id`, `url`, optional fields, free `properties` |
//! | [`Format`], [`LineFormat`] | the input formats by name (`tsv`, `csv`, `ndjson`, `msnbc`) |
//! | [`parse_line`] | one TSV, CSV or NDJSON line → event, or a [`LineError`] saying why not |
//! | [`LineParser`] | any [`BufRead`](std::io::BufRead) → one `Result` per line; a bad line never stops the stream |
//! | [`parse_slice`] | the same over bytes in memory, without copying lines |
//! | [`ParseError`] | a bad line's 1-based number, start offset and reason; or a failed read |
//! | [`msnbc`] | the UCI MSNBC file replayed by the canonical mapping, in canonical order |
//! | [`binary`] | the compact, versioned, canonical encoding of an event for log records |
//! | [`JsonRow`] | a result row as JSON text, serialised once and passed on unchanged |
//! | [`JsonRows`] | a batch's rows as one text |
//!
//! # Line formats
//!
//! - **TSV**: `visitor_id<TAB>url` or `ts_ms<TAB>visitor_id<TAB>url`, chosen per line by its
//!   field count; 2-field lines take [`ParseOptions::default_ts_ms`] (without it they are
//!   errors).
//! - **CSV**, as in the Spark PageViewsCount example: `ip,timestamp_ms,url,ip`; the visitor
//!   is the first ip, the last field is required but unused. RFC 4180 quoting is understood
//!   (`"a,b"`, `""` inside quotes).
//! - **NDJSON**: one JSON object per line. `ts_ms` (a non-negative integer), `visitor_id`
//!   and `url` (strings) are required; `tenant`, `event_type`, `referrer`, `user_agent`,
//!   `product`, `category`, `query` are optional strings (`null` = absent); `properties` is
//!   an optional object. **Any other field becomes a property** under its own name. A
//!   property value that is a string is kept; a number or boolean is kept as its JSON text
//!   (`9.5` → `"9.5"`); `null` drops it; an array or object is rejected, since properties are
//!   flat strings. On a name clash the entry inside `properties` wins. Wrong types,
//!   duplicate fields and non-objects are rejected with a message naming the field and the
//!   column.
//!
//! In every line format: `\r\n` ends a line like `\n`; blank lines (only spaces, tabs,
//! `\r`) are skipped but counted in line numbers; a UTF-8 byte-order mark at the start of
//! the input is ignored; `visitor_id` and `url` must not be empty; fields are not trimmed; a
//! line longer than [`ParseOptions::max_line_len`] (default 1 MiB) is an error and is never
//! held whole in memory.
//!
//! # Example
//!
//! Read a TSV stream, dead-letter its bad line, and store the events as log records:
//!
//! ```
//! use clickpulse_events::{binary, ClickEvent, LineFormat, LineParser};
//!
//! let input = "938476800000\tv0\t/frontpage\r\nv1\t/news\r\n\r\n938476800087\tv1\t\r\n";
//! let mut parser = LineParser::new(input.as_bytes(), LineFormat::Tsv)
//!     .with_default_ts_ms(938_476_800_050);
//! let mut records = Vec::new();
//! let mut dead_letters = Vec::new();
//! while let Some(result) = parser.next() {
//!     match result {
//!         Ok(event) => {
//!             let mut record = Vec::new();
//!             binary::encode(&event, &mut record);
//!             records.push(record);
//!         }
//!         Err(e) if e.is_fatal() => return Err(e.into()),
//!         Err(e) => dead_letters.push((e.to_string(), parser.last_line().to_vec())),
//!     }
//! }
//! assert_eq!(records.len(), 2);
//! assert_eq!(
//!     binary::decode(&records[1])?,
//!     ClickEvent::page_view(938_476_800_050, "v1", "/news")
//! );
//! assert_eq!(
//!     dead_letters,
//!     [(
//!         "line 4 (byte 40): empty url".to_owned(),
//!         b"938476800087\tv1\t\r".to_vec()
//!     )]
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(clippy::indexing_slicing)]
// Tests may index: a panic there is a failed test. The library itself is checked without this.
#![cfg_attr(test, allow(clippy::indexing_slicing))]

pub mod binary;
mod event;
mod format;
pub mod msnbc;
mod parse;
mod partition;
mod row;
mod rows;

pub use event::{ClickEvent, DEFAULT_EVENT_TYPE};
pub use format::{Format, LineFormat, UnknownFormat};
pub use parse::{
    LineError, LineParser, ParseError, ParseOptions, SliceParser, parse_line, parse_slice,
};
pub use partition::partition_for;
pub use row::{JsonObject, JsonRow};
pub use rows::JsonRows;
