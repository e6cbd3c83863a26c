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
//!
//! The partition is chosen by the writer, not by the client, with [`partition_of`]: the same
//! row of the same batch goes to the same partition on every run, which is what lets a
//! restarted sink tell, partition by partition, which rows are already there (`stream`,
//! `batch` and `row` are the row's identity).

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

/// The partition, among `partitions`, of row `row` of batch `batch` whose key is `key`.
///
/// A keyed row goes by the CRC-32 of its key modulo the partition count: librdkafka's default
/// partitioner (`consistent_random`) does the same, so keyed rows land where they did when
/// librdkafka chose. A row without a key goes to `(batch + row) mod partitions` (round robin
/// that starts one partition further each batch), where librdkafka would pick a partition at
/// random: a re-run of a batch must put every row where the first run did. The rule depends on
/// the partition count: adding partitions to a result topic moves keys, so do it only when no
/// batch written before will be written again (see [`KafkaSink`](super::KafkaSink)).
///
/// # Examples
/// ```
/// use clickpulse_connectors::kafka::record::partition_of;
/// // The CRC-32 of "/news" is 0xB9240984.
/// assert_eq!(partition_of(Some("/news"), 7, 0, 4), (0xB924_0984_u32 % 4) as i32);
/// assert_eq!(partition_of(None, 7, 0, 4), 3);
/// assert_eq!(partition_of(None, 7, 1, 4), 0);
/// ```
pub fn partition_of(key: Option<&str>, batch: u64, row: usize, partitions: u32) -> i32 {
    let n = u64::from(partitions.max(1));
    let slot = match key {
        Some(key) => u64::from(crc32(key.as_bytes())) % n,
        None => batch.wrapping_add(row as u64) % n,
    };
    // `slot < partitions <= u32::MAX`; Kafka partition counts fit an `i32`.
    i32::try_from(slot).unwrap_or(0)
}

/// CRC-32 (IEEE 802.3, reflected, the zlib one), as librdkafka's `rd_crc32`.
fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| {
        let index = usize::from((crc as u8) ^ b);
        CRC32_TABLE.get(index).copied().unwrap_or(0) ^ (crc >> 8)
    })
}

/// The byte-wise lookup table of CRC-32's reflected polynomial `0xEDB88320`.
const CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// The header values every row of a batch shares, written as text once per batch.
pub(crate) struct BatchHeaders<'a> {
    stream: &'a str,
    batch: String,
    start: Option<String>,
    end: Option<String>,
    rows: String,
    prev: Option<String>,
}

impl<'a> BatchHeaders<'a> {
    /// The headers of `batch`, which follows the stream's batch `prev`.
    pub(crate) fn new(batch: &'a ResultBatch, prev: Option<u64>) -> Self {
        BatchHeaders {
            stream: &batch.stream,
            batch: batch.batch.to_string(),
            start: batch.window_start_ms.map(|v| v.to_string()),
            end: batch.window_end_ms.map(|v| v.to_string()),
            rows: batch.rows.len().to_string(),
            prev: prev.map(|b| b.to_string()),
        }
    }

    /// The headers of row `row`.
    pub(crate) fn row(&self, row: usize) -> OwnedHeaders {
        let row = row.to_string();
        let fields = [
            (STREAM_HEADER, Some(self.stream)),
            (BATCH_HEADER, Some(self.batch.as_str())),
            (WINDOW_START_HEADER, self.start.as_deref()),
            (WINDOW_END_HEADER, self.end.as_deref()),
            (BATCH_ROWS_HEADER, Some(self.rows.as_str())),
            (ROW_HEADER, Some(row.as_str())),
            (PREV_BATCH_HEADER, self.prev.as_deref()),
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
    let h = read_headers(message)?;
    Ok(RowRecord {
        stream: h.stream,
        batch: h.batch.ok_or("record has no `batch` header")?,
        window_start_ms: h.window_start_ms,
        window_end_ms: h.window_end_ms,
        batch_rows: h.batch_rows,
        row: h.row,
        prev_batch: h.prev_batch,
        value,
    })
}

/// Where a result row stands, from its headers alone: what a restarted sink needs to know which
/// rows a partition already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowPosition {
    /// The `stream` header.
    pub stream: String,
    /// The `batch` header.
    pub batch: u64,
    /// The `row` header, absent from records of other writers.
    pub row: Option<u64>,
    /// The `prev_batch` header.
    pub prev_batch: Option<u64>,
}

/// Reads a record's position without parsing its value; `None` for a record that is not a
/// result row (no `stream` or `batch` header, a header that is not a number).
pub(crate) fn read_position(message: &impl Message) -> Option<RowPosition> {
    let h = read_headers(message).ok()?;
    Some(RowPosition {
        stream: h.stream?,
        batch: h.batch?,
        row: h.row,
        prev_batch: h.prev_batch,
    })
}

/// A record's result headers, each when present.
#[derive(Debug, Default)]
struct RecordHeaders {
    stream: Option<String>,
    batch: Option<u64>,
    window_start_ms: Option<u64>,
    window_end_ms: Option<u64>,
    batch_rows: Option<u64>,
    row: Option<u64>,
    prev_batch: Option<u64>,
}

/// Reads the result headers of `message`; other headers are ignored.
///
/// # Errors
/// A result header whose value is not a decimal number.
fn read_headers(message: &impl Message) -> Result<RecordHeaders, String> {
    let mut h = RecordHeaders::default();
    let Some(headers) = message.headers() else {
        return Ok(h);
    };
    for header in headers.iter() {
        let Some(text) = header.value.map(String::from_utf8_lossy) else {
            continue;
        };
        let number = || {
            text.parse::<u64>()
                .map_err(|_| format!("header `{}` is not a number: `{text}`", header.key))
        };
        match header.key {
            STREAM_HEADER => h.stream = Some(text.to_string()),
            BATCH_HEADER => h.batch = Some(number()?),
            WINDOW_START_HEADER => h.window_start_ms = Some(number()?),
            WINDOW_END_HEADER => h.window_end_ms = Some(number()?),
            BATCH_ROWS_HEADER => h.batch_rows = Some(number()?),
            ROW_HEADER => h.row = Some(number()?),
            PREV_BATCH_HEADER => h.prev_batch = Some(number()?),
            _ => {}
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_standard_one() {
        // The check value of CRC-32/ISO-HDLC, and zlib's crc32 of "/news".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"/news"), 0xB924_0984);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn keyless_rows_go_round_robin_from_a_batch_dependent_start() {
        let spread: Vec<i32> = (0..5).map(|row| partition_of(None, 2, row, 3)).collect();
        assert_eq!(spread, [2, 0, 1, 2, 0]);
        assert_eq!(partition_of(None, u64::MAX, 1, 3), 0, "wraps, no overflow");
        assert_eq!(partition_of(Some("k"), 0, 0, 0), 0, "no partitions: 0");
    }

    #[test]
    fn keyed_rows_ignore_batch_and_row() {
        let p = partition_of(Some("/a"), 1, 0, 7);
        assert_eq!(partition_of(Some("/a"), 99, 5, 7), p);
        assert_eq!(p, (crc32(b"/a") % 7) as i32);
    }
}
