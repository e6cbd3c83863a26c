//! [`Reader`]: a read position in one partition.

use crate::{Records, Result, Topic};

/// Reads one partition sequentially, remembering where it is.
///
/// # Examples
///
/// ```
/// use clickpulse_log::{Batch, Log, LogOptions};
///
/// let dir = tempfile::tempdir()?;
/// let log = Log::open(dir.path(), LogOptions::default())?;
/// let topic = log.create_topic("clicks", 1)?;
/// let mut batch = Batch::new();
/// for i in 0..5 {
///     batch.push(i, b"", format!("/page/{i}").as_bytes())?;
/// }
/// topic.append(0, &batch)?;
///
/// let mut reader = topic.reader(0, 0)?;
/// let mut seen = 0;
/// loop {
///     let records = reader.poll(2)?;
///     if records.is_empty() {
///         break; // caught up; poll again later for new records
///     }
///     seen += records.len();
/// }
/// assert_eq!((seen, reader.position()), (5, 5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Reader {
    topic: Topic,
    partition: u32,
    position: u64,
}

impl Reader {
    pub(crate) fn new(topic: Topic, partition: u32, position: u64) -> Self {
        Reader {
            topic,
            partition,
            position,
        }
    }

    /// Reads up to `max_records` records from the current position and moves past them. Returns
    /// no records when the reader has caught up with the end.
    ///
    /// # Errors
    ///
    /// As [`Topic::read`]; notably [`crate::Error::OffsetOutOfRange`] when retention has deleted
    /// the position (the error says the earliest offset; [`Reader::seek`] there to go on).
    pub fn poll(&mut self, max_records: usize) -> Result<Records> {
        self.moved_past(self.topic.read(self.partition, self.position, max_records))
    }

    /// Like [`Reader::poll`], but reads only what one read buffer holds ([`Topic::read_buffer`]).
    ///
    /// # Errors
    ///
    /// As [`Reader::poll`].
    pub fn poll_buffer(&mut self, max_records: usize) -> Result<Records> {
        self.moved_past(
            self.topic
                .read_buffer(self.partition, self.position, max_records),
        )
    }

    /// The records a read gave, with the position moved past them.
    fn moved_past(&mut self, read: Result<Records>) -> Result<Records> {
        let records = read?;
        self.position = records.next_offset();
        Ok(records)
    }

    /// The offset the next [`Reader::poll`] starts at.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Moves the reader to `offset`; the next poll checks that it is in range.
    pub fn seek(&mut self, offset: u64) {
        self.position = offset;
    }

    /// The partition read.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The topic read.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }
}
