//! The on-disk format: batch framing, record encoding, and the pure checks on them.
//!
//! # Segment files
//!
//! A partition is a directory of segment files named by the offset of their first record,
//! zero-padded to 20 digits: `00000000000000000000.log`, `00000000000000123456.log`, … A segment
//! file is a plain concatenation of record batches with no file header, so an empty file is a
//! valid empty segment. Offsets are dense: the first batch of a segment starts at the offset in
//! its name, and every batch starts where the previous one ended.
//!
//! # Batch layout
//!
//! All integers are little-endian. A batch is a 40-byte header followed by its payload:
//!
//! | bytes  | field          | meaning                                                    |
//! |--------|----------------|------------------------------------------------------------|
//! | 0..4   | `magic`        | `b"CPLB"`                                                  |
//! | 4..8   | `header_crc`   | CRC32C of bytes 8..40 of the header                         |
//! | 8..12  | `payload_len`  | bytes of record data after the header (≤ 64 MiB)           |
//! | 12..16 | `record_count` | records in the batch (≥ 1)                                 |
//! | 16..24 | `base_offset`  | offset of the first record                                 |
//! | 24..32 | `max_timestamp`| largest record timestamp in the batch (i64 ms)             |
//! | 32..36 | `payload_crc`  | CRC32C of the payload                                      |
//! | 36..40 | `flags`        | reserved, must be 0                                        |
//!
//! The header has its own checksum so that a reader can tell "this header is valid, the payload
//! is still being written" from "these bytes are garbage" without trusting `payload_len`.
//!
//! # Record layout
//!
//! The payload is `record_count` records back to back, each:
//!
//! | bytes            | field       |
//! |------------------|-------------|
//! | 0..8             | `timestamp` (i64 ms) |
//! | 8..12            | `key_len` (u32)      |
//! | 12..16           | `value_len` (u32)    |
//! | 16..16+key_len   | key bytes            |
//! | …+value_len      | value bytes          |
//!
//! Record `i` of a batch has offset `base_offset + i`. The records must fill the payload exactly.
//!
//! # What counts as a valid batch
//!
//! [`check_batch`] decides, from bytes alone, whether the bytes at a position are a complete
//! valid batch, the start of a batch whose bytes are not all there yet, or a defect. Recovery
//! (see [`crate::recovery`]) truncates a segment at the first position that is not a valid batch.

use crate::Defect;

/// Bytes of a batch header.
pub const BATCH_HEADER_LEN: usize = 40;

/// Bytes of a record header (timestamp, key length, value length).
pub const RECORD_HEADER_LEN: usize = 16;

/// Largest payload of one batch: 64 MiB.
pub const MAX_BATCH_PAYLOAD: usize = 64 << 20;

/// The four bytes every batch starts with.
pub const BATCH_MAGIC: [u8; 4] = *b"CPLB";

/// The decoded header of a record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    /// Bytes of record data after the header.
    pub payload_len: u32,
    /// Number of records in the batch (≥ 1).
    pub record_count: u32,
    /// Offset of the first record.
    pub base_offset: u64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// CRC32C of the payload.
    pub payload_crc: u32,
}

impl BatchHeader {
    /// Bytes the whole batch (header and payload) occupies in the segment file.
    pub fn total_len(&self) -> u64 {
        BATCH_HEADER_LEN as u64 + u64::from(self.payload_len)
    }

    /// The offset after the last record of the batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    /// The header's bytes, checksum included.
    pub fn encode(&self) -> [u8; BATCH_HEADER_LEN] {
        let mut out = [0u8; BATCH_HEADER_LEN];
        let mut body = Put::new(&mut out);
        body.put(&BATCH_MAGIC);
        body.put(&[0; 4]); // header_crc, filled below
        body.put(&self.payload_len.to_le_bytes());
        body.put(&self.record_count.to_le_bytes());
        body.put(&self.base_offset.to_le_bytes());
        body.put(&self.max_timestamp.to_le_bytes());
        body.put(&self.payload_crc.to_le_bytes());
        body.put(&0u32.to_le_bytes()); // flags
        let crc = crc32c::crc32c(out.get(8..).unwrap_or_default());
        let mut crc_field = Put::new(out.get_mut(4..8).unwrap_or_default());
        crc_field.put(&crc.to_le_bytes());
        out
    }

    /// Decodes and validates a header from its first [`BATCH_HEADER_LEN`] bytes.
    fn decode(bytes: &[u8; BATCH_HEADER_LEN]) -> Result<Self, Defect> {
        if bytes.iter().all(|&b| b == 0) {
            return Err(Defect::ZeroFilled);
        }
        let mut le = Le(bytes);
        if le.array::<4>() != Some(BATCH_MAGIC) {
            return Err(Defect::BadMagic);
        }
        let stored_crc = le.u32();
        let rest = le.0;
        if stored_crc != Some(crc32c::crc32c(rest)) {
            return Err(Defect::HeaderChecksum);
        }
        let header = BatchHeader {
            payload_len: le.u32().unwrap_or_default(),
            record_count: le.u32().unwrap_or_default(),
            base_offset: le.u64().unwrap_or_default(),
            max_timestamp: le.u64().map(|v| v as i64).unwrap_or_default(),
            payload_crc: le.u32().unwrap_or_default(),
        };
        let flags = le.u32().unwrap_or_default();
        let payload_len = header.payload_len as usize;
        let min_payload = (header.record_count as usize).saturating_mul(RECORD_HEADER_LEN);
        if flags != 0
            || header.record_count == 0
            || payload_len > MAX_BATCH_PAYLOAD
            || payload_len < min_payload
        {
            return Err(Defect::BadHeader);
        }
        Ok(header)
    }
}

/// How much of a batch [`check_batch`] verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Only the header: enough to hop to the next batch.
    Header,
    /// Header, payload checksum and record framing.
    Full,
}

/// What the bytes at a batch position are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchCheck {
    /// A valid batch (with [`Verify::Header`], a valid header; the payload may extend beyond the
    /// bytes given).
    Valid(BatchHeader),
    /// The bytes given end before the batch does; at least `needed` bytes from the batch start are
    /// needed to decide. At the end of a file this is a torn batch.
    Incomplete {
        /// Bytes needed from the start of the batch.
        needed: usize,
    },
    /// Not a valid batch.
    Invalid(Defect),
}

/// Decides what the bytes at a batch position are. Pure: no I/O.
///
/// `bytes` starts at the batch position and holds everything available after it (possibly more
/// than one batch); `expected_offset` is the offset the batch must start at.
pub(crate) fn check_batch(bytes: &[u8], expected_offset: u64, verify: Verify) -> BatchCheck {
    let Some((head, rest)) = bytes.split_first_chunk::<BATCH_HEADER_LEN>() else {
        return BatchCheck::Incomplete {
            needed: BATCH_HEADER_LEN,
        };
    };
    let header = match BatchHeader::decode(head) {
        Ok(header) => header,
        Err(defect) => return BatchCheck::Invalid(defect),
    };
    if header.base_offset != expected_offset {
        return BatchCheck::Invalid(Defect::OffsetMismatch {
            expected: expected_offset,
            found: header.base_offset,
        });
    }
    if verify == Verify::Header {
        return BatchCheck::Valid(header);
    }
    let Some(payload) = rest.get(..header.payload_len as usize) else {
        return BatchCheck::Incomplete {
            needed: BATCH_HEADER_LEN + header.payload_len as usize,
        };
    };
    if crc32c::crc32c(payload) != header.payload_crc {
        return BatchCheck::Invalid(Defect::PayloadChecksum);
    }
    if !records_fit(payload, header.record_count) {
        return BatchCheck::Invalid(Defect::MalformedRecords);
    }
    BatchCheck::Valid(header)
}

/// Decides what a segment's unreadable tail is, given the check at the tail position and whether
/// the bytes given to the check reached the end of the file. Pure.
///
/// Returns `None` when more bytes of the file are needed to decide.
pub(crate) fn tail_defect(check: BatchCheck, bytes: &[u8], at_eof: bool) -> Option<Defect> {
    match check {
        BatchCheck::Valid(_) => None,
        BatchCheck::Invalid(defect) => Some(defect),
        BatchCheck::Incomplete { .. } if !at_eof => None,
        BatchCheck::Incomplete { .. } if bytes.len() < BATCH_HEADER_LEN => {
            if bytes.iter().all(|&b| b == 0) {
                Some(Defect::ZeroFilled)
            } else {
                Some(Defect::TruncatedHeader)
            }
        }
        BatchCheck::Incomplete { .. } => Some(Defect::TruncatedPayload),
    }
}

/// Whether `payload` is exactly `count` well-framed records.
fn records_fit(payload: &[u8], count: u32) -> bool {
    let mut records = RecordIter::new(payload, 0, count);
    records.by_ref().for_each(drop);
    records.remaining == 0 && records.rest.is_empty()
}

/// Appends one encoded record to `out`.
///
/// The caller guarantees that `key` and `value` are shorter than `u32::MAX` bytes.
pub(crate) fn encode_record(out: &mut Vec<u8>, timestamp: i64, key: &[u8], value: &[u8]) {
    out.reserve(RECORD_HEADER_LEN + key.len() + value.len());
    out.extend_from_slice(&timestamp.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// One record decoded from a payload, borrowing its key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawRecord<'a> {
    pub offset: u64,
    pub timestamp: i64,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// Iterates the records of a payload. Stops early (leaving `remaining > 0`) at malformed framing.
#[derive(Debug, Clone)]
pub(crate) struct RecordIter<'a> {
    rest: &'a [u8],
    next_offset: u64,
    remaining: u32,
}

impl<'a> RecordIter<'a> {
    pub fn new(payload: &'a [u8], base_offset: u64, count: u32) -> Self {
        RecordIter {
            rest: payload,
            next_offset: base_offset,
            remaining: count,
        }
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = RawRecord<'a>;

    fn next(&mut self) -> Option<RawRecord<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let (head, body) = self.rest.split_first_chunk::<RECORD_HEADER_LEN>()?;
        let mut le = Le(head);
        let timestamp = le.u64()? as i64;
        let key_len = le.u32()? as usize;
        let value_len = le.u32()? as usize;
        let (key, body) = body.split_at_checked(key_len)?;
        let (value, rest) = body.split_at_checked(value_len)?;
        let record = RawRecord {
            offset: self.next_offset,
            timestamp,
            key,
            value,
        };
        self.rest = rest;
        self.next_offset += 1;
        self.remaining -= 1;
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining as usize))
    }
}

/// A little-endian reader over a byte slice that never panics.
struct Le<'a>(&'a [u8]);

impl Le<'_> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

/// A writer into a fixed buffer that never panics; bytes that do not fit are dropped (callers
/// size the buffer exactly, so that never happens).
struct Put<'a>(&'a mut [u8]);

impl<'a> Put<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Put(buf)
    }

    fn put(&mut self, bytes: &[u8]) {
        let buf = std::mem::take(&mut self.0);
        debug_assert!(buf.len() >= bytes.len(), "header field out of bounds");
        if let Some((head, tail)) = buf.split_at_mut_checked(bytes.len()) {
            head.copy_from_slice(bytes);
            self.0 = tail;
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index into known buffers")]
mod tests {
    use super::*;

    fn batch(base: u64, records: &[(i64, &[u8], &[u8])]) -> Vec<u8> {
        let mut payload = Vec::new();
        for (ts, key, value) in records {
            encode_record(&mut payload, *ts, key, value);
        }
        let header = BatchHeader {
            payload_len: payload.len() as u32,
            record_count: records.len() as u32,
            base_offset: base,
            max_timestamp: records.iter().map(|r| r.0).max().unwrap_or(i64::MIN),
            payload_crc: crc32c::crc32c(&payload),
        };
        let mut out = header.encode().to_vec();
        out.extend_from_slice(&payload);
        out
    }

    #[test]
    fn header_round_trips() {
        let header = BatchHeader {
            payload_len: 33,
            record_count: 2,
            base_offset: 7,
            max_timestamp: -5,
            payload_crc: 0xdead_beef,
        };
        assert_eq!(BatchHeader::decode(&header.encode()), Ok(header));
    }

    #[test]
    fn valid_batch_is_valid_and_iterates() {
        let bytes = batch(10, &[(1, b"k", b"hello"), (2, b"", b"world!")]);
        let BatchCheck::Valid(header) = check_batch(&bytes, 10, Verify::Full) else {
            panic!("expected a valid batch");
        };
        assert_eq!(header.next_offset(), 12);
        assert_eq!(header.total_len(), bytes.len() as u64);
        let payload = &bytes[BATCH_HEADER_LEN..];
        let records: Vec<_> = RecordIter::new(payload, 10, 2).collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].key, b"k");
        assert_eq!(records[1].value, b"world!");
        assert_eq!(records[1].offset, 11);
        assert_eq!(records[1].timestamp, 2);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = batch(0, &[(1, b"key", b"value"), (9, b"", b"v2")]);
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let check = check_batch(&damaged, 0, Verify::Full);
            assert!(
                matches!(
                    check,
                    BatchCheck::Invalid(_) | BatchCheck::Incomplete { .. }
                ),
                "bit {bit} flip not detected: {check:?}"
            );
        }
    }

    #[test]
    fn short_bytes_are_incomplete_not_invalid() {
        let bytes = batch(0, &[(1, b"key", b"value")]);
        for len in 0..bytes.len() {
            let check = check_batch(&bytes[..len], 0, Verify::Full);
            assert!(
                matches!(check, BatchCheck::Incomplete { .. }),
                "len {len}: {check:?}"
            );
        }
        assert!(matches!(
            check_batch(&bytes[..BATCH_HEADER_LEN], 0, Verify::Header),
            BatchCheck::Valid(_)
        ));
    }

    #[test]
    fn wrong_offset_is_a_mismatch() {
        let bytes = batch(5, &[(1, b"", b"x")]);
        assert_eq!(
            check_batch(&bytes, 6, Verify::Full),
            BatchCheck::Invalid(Defect::OffsetMismatch {
                expected: 6,
                found: 5
            })
        );
    }

    #[test]
    fn tail_defects_are_named() {
        let bytes = batch(0, &[(1, b"", b"x")]);
        let check = |b: &[u8]| check_batch(b, 0, Verify::Full);
        assert_eq!(
            tail_defect(check(&bytes[..10]), &bytes[..10], true),
            Some(Defect::TruncatedHeader)
        );
        assert_eq!(tail_defect(check(&bytes[..10]), &bytes[..10], false), None);
        let zeros = [0u8; 12];
        assert_eq!(
            tail_defect(check(&zeros), &zeros, true),
            Some(Defect::ZeroFilled)
        );
        let zeros = [0u8; 100];
        assert_eq!(
            tail_defect(check(&zeros), &zeros, true),
            Some(Defect::ZeroFilled)
        );
        let torn = &bytes[..bytes.len() - 1];
        assert_eq!(
            tail_defect(check(torn), torn, true),
            Some(Defect::TruncatedPayload)
        );
    }

    #[test]
    fn records_must_fill_the_payload_exactly() {
        let mut payload = Vec::new();
        encode_record(&mut payload, 1, b"a", b"b");
        assert!(records_fit(&payload, 1));
        assert!(!records_fit(&payload, 2));
        payload.push(0);
        assert!(!records_fit(&payload, 1));
    }
}
