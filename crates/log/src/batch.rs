//! [`Batch`]: records encoded for one append.

use crate::format::{self, MAX_BATCH_PAYLOAD, RECORD_HEADER_LEN};
use crate::{Error, Result};

/// Records to append to a partition in one write, encoded as they are pushed.
///
/// Encoding happens on the caller's thread, outside any lock; an append then costs one header,
/// one `write(2)` and (with [`crate::Durability::EveryBatch`]) one fsync. Reuse a batch with
/// [`Batch::clear`] to keep its buffer.
///
/// # Examples
///
/// ```
/// let mut batch = clickpulse_log::Batch::new();
/// batch.push(1_700_000_000_000, b"visitor-1", b"/home")?;
/// batch.push(1_700_000_000_005, b"", b"/about")?;
/// assert_eq!(batch.len(), 2);
/// # Ok::<(), clickpulse_log::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Batch {
    payload: Vec<u8>,
    count: u32,
    max_timestamp: i64,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// An empty batch whose buffer holds `bytes` of encoded records without reallocating. Each
    /// record takes 16 bytes plus its key and value.
    pub fn with_capacity(bytes: usize) -> Self {
        Batch {
            payload: Vec::with_capacity(bytes),
            ..Batch::default()
        }
    }

    /// Adds a record: an event-time `timestamp` in milliseconds, a `key` (may be empty) and a
    /// `value`.
    ///
    /// # Errors
    ///
    /// [`Error::BatchTooLarge`] if the batch would exceed 64 MiB of encoded records (the batch
    /// is left unchanged).
    pub fn push(&mut self, timestamp: i64, key: &[u8], value: &[u8]) -> Result<()> {
        let record_len = RECORD_HEADER_LEN
            .saturating_add(key.len())
            .saturating_add(value.len());
        let new_len = self.payload.len().saturating_add(record_len);
        if new_len > MAX_BATCH_PAYLOAD {
            return Err(Error::BatchTooLarge {
                bytes: new_len,
                limit: MAX_BATCH_PAYLOAD,
            });
        }
        format::encode_record(&mut self.payload, timestamp, key, value);
        self.max_timestamp = if self.count == 0 {
            timestamp
        } else {
            self.max_timestamp.max(timestamp)
        };
        self.count += 1;
        Ok(())
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of encoded records (the batch takes 40 more bytes on disk).
    pub fn encoded_len(&self) -> usize {
        self.payload.len()
    }

    /// Removes all records, keeping the buffer.
    pub fn clear(&mut self) {
        self.payload.clear();
        self.count = 0;
        self.max_timestamp = 0;
    }

    pub(crate) fn payload(&self) -> &[u8] {
        &self.payload
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_tracks_count_size_and_max_timestamp() {
        let mut batch = Batch::new();
        batch.push(-5, b"", b"abc").expect("push");
        batch.push(-9, b"k", b"").expect("push");
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.encoded_len(), 2 * RECORD_HEADER_LEN + 4);
        assert_eq!(batch.max_timestamp(), -5);
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!(batch.encoded_len(), 0);
    }

    #[test]
    fn oversized_record_is_refused_and_batch_unchanged() {
        let mut batch = Batch::new();
        batch.push(1, b"", b"x").expect("push");
        let big = vec![0u8; MAX_BATCH_PAYLOAD];
        assert!(matches!(
            batch.push(2, b"", &big),
            Err(Error::BatchTooLarge { .. })
        ));
        assert_eq!(batch.len(), 1);
        assert_eq!(batch.encoded_len(), RECORD_HEADER_LEN + 1);
    }
}
