//! The embedded log as an engine source.

use clickpulse_engine::Data;
use clickpulse_engine::source::{
    DeadLetter, PartitionId, PartitionReader, PartitionedSource, PollContext, Polled, ReadStatus,
    SourceError,
};
use clickpulse_events::binary::DecodeError;
use clickpulse_events::{ClickEvent, binary};
use clickpulse_log::{Reader, Records, Topic};

/// The most records a partition reader takes from the log at once. The engine polls a few
/// thousand at a time; reading ahead lets one read buffer serve several polls instead of being
/// read again, from the last index entry, for each of them. Each read takes what one buffer (the
/// log's `max_read_bytes`, 1 MiB by default) holds, so every byte read is used: a read of a fixed
/// 16,384 records filled about 70% of a buffer, and the rest was read again by the next read.
const READ_AHEAD: usize = 65_536;

/// Reads clicks from a topic of the embedded log. Each engine worker reads its share of the
/// partitions; records that do not decode become dead letters with their offset.
///
/// # Examples
/// ```
/// use clickpulse_connectors::log::{LogSource, LogWriter};
/// use clickpulse_engine::source::PartitionedSource;
/// use clickpulse_events::ClickEvent;
/// use clickpulse_log::{Log, LogOptions};
///
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogOptions::default()).unwrap();
/// let topic = log.create_topic("clicks", 2).unwrap();
/// LogWriter::new(topic.clone()).append(&[ClickEvent::page_view(1, "v1", "/news")]).unwrap();
/// let source = LogSource::new(topic);
/// assert_eq!(source.partitions().unwrap(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct LogSource<T = ClickEvent> {
    topic: Topic,
    name: String,
    decode: fn(&[u8]) -> Result<T, DecodeError>,
}

impl LogSource {
    /// A source of [`ClickEvent`]s over every partition of `topic`, named after it.
    pub fn new(topic: Topic) -> Self {
        LogSource::decoding(topic, binary::decode)
    }
}

impl<T> LogSource<T> {
    /// A source over every partition of `topic` that turns each record's payload into a `T` with
    /// `decode` (for example [`binary::decode_ref`] and a projection to the fields a job keeps,
    /// which copies only those). Records it rejects become dead letters.
    pub fn decoding(topic: Topic, decode: fn(&[u8]) -> Result<T, DecodeError>) -> Self {
        let name = topic.name().to_string();
        LogSource {
            topic,
            name,
            decode,
        }
    }
}

fn source_error(e: clickpulse_log::Error) -> SourceError {
    let error = if e.is_retryable() {
        SourceError::retryable(e.to_string())
    } else {
        SourceError::fatal(e.to_string())
    };
    error.with_cause(e)
}

impl<T: Data> PartitionedSource for LogSource<T> {
    type Item = T;

    fn name(&self) -> &str {
        &self.name
    }

    fn partitions(&self) -> Result<u32, SourceError> {
        Ok(self.topic.partitions())
    }

    fn open(
        &self,
        partition: PartitionId,
        from: Option<u64>,
    ) -> Result<Box<dyn PartitionReader<T>>, SourceError> {
        let start = match from {
            Some(offset) => offset,
            None => self.topic.start_offset(partition).map_err(source_error)?,
        };
        let reader = self.topic.reader(partition, start).map_err(source_error)?;
        Ok(Box::new(LogPartitionReader {
            end: None,
            reader,
            ahead: Records::default(),
            source: self.name.clone(),
            decode: self.decode,
        }))
    }
}

struct LogPartitionReader<T> {
    reader: Reader,
    /// The partition's end as last looked up, and when (a read-only log lists its files to
    /// find it: at most once a second).
    end: Option<(u64, std::time::Instant)>,
    /// Records read and not handed out yet; they end at the reader's position.
    ahead: Records,
    source: String,
    decode: fn(&[u8]) -> Result<T, DecodeError>,
}

impl<T> PartitionReader<T> for LogPartitionReader<T> {
    fn poll(&mut self, ctx: &PollContext, out: &mut Polled<T>) -> Result<ReadStatus, SourceError> {
        let mut got = 0;
        while got < ctx.max_records {
            if self.ahead.is_empty() {
                let want = READ_AHEAD.max(ctx.max_records - got);
                self.ahead = self.reader.poll_buffer(want).map_err(source_error)?;
                if self.ahead.is_empty() {
                    break;
                }
            }
            let take = (ctx.max_records - got).min(self.ahead.len());
            for record in self.ahead.iter().take(take) {
                match (self.decode)(record.value) {
                    Ok(event) => out.items.push(event),
                    Err(e) => out.dead_letters.push(DeadLetter {
                        source: self.source.clone(),
                        partition: self.reader.partition(),
                        offset: record.offset,
                        reason: e.to_string(),
                        raw: record.value.to_vec(),
                    }),
                }
            }
            self.ahead.advance(take);
            got += take;
        }
        Ok(if got == 0 || got < ctx.max_records {
            ReadStatus::CaughtUp
        } else {
            ReadStatus::More
        })
    }

    fn end(&mut self) -> Option<u64> {
        if let Some((end, at)) = self.end
            && at.elapsed() < std::time::Duration::from_secs(1)
        {
            return Some(end.max(self.position()));
        }
        let end = self
            .reader
            .topic()
            .end_offset(self.reader.partition())
            .ok()?;
        self.end = Some((end, std::time::Instant::now()));
        Some(end)
    }

    fn position(&self) -> u64 {
        // The first record not handed out yet.
        if self.ahead.is_empty() {
            self.reader.position()
        } else {
            self.ahead.first_offset()
        }
    }
}
