//! How a result row travels as a Kafka record, both ways: [`KafkaSink`](super::KafkaSink) writes
//! it, [`ResultConsumer`](super::ResultConsumer) reads it back.
//!
//! | part | content |
//! |---|---|
//! | value | the row, as JSON, unchanged |
//! | key | from the row's key fields (see [`KeySpec`](super::KeySpec)), or none |
//! | header `stream` | the stream's name |
//! | header `batch` | the engine batch id, decimal |
//! | header `window_start_ms`, `window_end_ms` | the batch's window bounds, decimal; absent when the stream is not windowed |
//! | header `batch_rows` | how many rows the batch has for this stream, decimal |
//! | header `row` | the row's index in the batch, `0..batch_rows`, decimal |
//! | header `prev_batch` | the batch this sink wrote for the stream before this one, decimal; absent for its first |
//!
//! `batch_rows` and `row` let a reader tell when it has a whole batch, and restore the rows'
//! order even when they were spread over several partitions by their keys. `prev_batch` lets it
//! tell that an older batch is still on its way: rows of a batch can be fetched from one
//! partition before any row of the batch before it is fetched from another.

use clickpulse_events::JsonRow;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

use crate::result::ResultBatch;

/// The header holding the stream's name.
pub const STREAM_HEADER: &str = "stream";
/// The header holding the batch id.
pub const BATCH_HEADER: &str = "batch";
/// The header holding the window start (ms since the epoch), when there is one.
pub const WINDOW_START_HEADER: &str = "window_start_ms";
/// The header holding the window end (ms since the epoch), when there is one.
pub const WINDOW_END_HEADER: &str = "window_end_ms";
/// The header holding the number of rows in the batch.
pub const BATCH_ROWS_HEADER: &str = "batch_rows";
/// The header holding the row's index in its batch.
pub const ROW_HEADER: &str = "row";
/// The header holding the batch the writer wrote for the stream before this one.
pub const PREV_BATCH_HEADER: &str = "prev_batch";

/// The headers of row `row` of `batch`, which follows the stream's batch `prev`.
pub(crate) fn headers_for(batch: &ResultBatch, row: usize, prev: Option<u64>) -> OwnedHeaders {
    let batch_id = batch.batch.to_string();
    let start = batch.window_start_ms.map(|v| v.to_string());
    let end = batch.window_end_ms.map(|v| v.to_string());
    let rows = batch.rows.len().to_string();
    let row = row.to_string();
    let prev = prev.map(|b| b.to_string());
    let fields = [
        (STREAM_HEADER, Some(batch.stream.as_str())),
        (BATCH_HEADER, Some(batch_id.as_str())),
        (WINDOW_START_HEADER, start.as_deref()),
        (WINDOW_END_HEADER, end.as_deref()),
        (BATCH_ROWS_HEADER, Some(rows.as_str())),
        (ROW_HEADER, Some(row.as_str())),
        (PREV_BATCH_HEADER, prev.as_deref()),
    ];
    fields
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key, v)))
        .fold(
            OwnedHeaders::new_with_capacity(7),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            },
        )
}

/// One result row read back from a record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RowRecord {
    pub stream: Option<String>,
    pub batch: u64,
    pub window_start_ms: Option<u64>,
    pub window_end_ms: Option<u64>,
    pub batch_rows: Option<u64>,
    pub row: Option<u64>,
    pub prev_batch: Option<u64>,
    pub value: JsonRow,
}

/// Reads a row record.
///
/// # Errors
/// Why the record is not a result row: no value, a value that is not JSON, no `batch` header, a
/// header that is not a decimal number.
pub(crate) fn read_record(message: &impl Message) -> Result<RowRecord, String> {
    let value = message.payload().ok_or("record has no value")?;
    let value = JsonRow::from_slice(value).map_err(|e| format!("value is not JSON: {e}"))?;
    let mut record = RowRecord {
        stream: None,
        batch: 0,
        window_start_ms: None,
        window_end_ms: None,
        batch_rows: None,
        row: None,
        prev_batch: None,
        value,
    };
    let mut batch = None;
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            let Some(text) = header.value.map(String::from_utf8_lossy) else {
                continue;
            };
            let number = || {
                text.parse::<u64>()
                    .map_err(|_| format!("header `{}` is not a number: `{text}`", header.key))
            };
            match header.key {
                STREAM_HEADER => record.stream = Some(text.to_string()),
                BATCH_HEADER => batch = Some(number()?),
                WINDOW_START_HEADER => record.window_start_ms = Some(number()?),
                WINDOW_END_HEADER => record.window_end_ms = Some(number()?),
                BATCH_ROWS_HEADER => record.batch_rows = Some(number()?),
                ROW_HEADER => record.row = Some(number()?),
                PREV_BATCH_HEADER => record.prev_batch = Some(number()?),
                _ => {}
            }
        }
    }
    record.batch = batch.ok_or("record has no `batch` header")?;
    Ok(record)
}
