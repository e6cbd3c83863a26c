//! [`LogAppender`]: collected events into a topic of the embedded log.

use std::thread;

use clickpulse_events::{ClickEvent, binary, partition_for};
use clickpulse_log::{Batch, Error as LogError, Log, Topic};

use super::appender::{AppendError, EventAppender};

/// Appends events to a topic of the embedded log (`clickpulse-log`).
///
/// Each event becomes one record: timestamp = `ts_ms`, key = `visitor_id`, value = the event
/// in the `clickpulse_events::binary` encoding — the record format the connectors' log source
/// reads. The partition is [`clickpulse_events::partition_for`] of the visitor id (the rule
/// replay uses too), so one visitor's events stay in one partition, in the order they were
/// collected. The events of one call go out as one batch per partition; when several
/// partitions are involved their appends (and fsyncs) run in parallel.
///
/// Delivery is at least once: if one partition's append fails after another's succeeded,
/// the whole call fails and a client retry duplicates the events already stored.
///
/// # Examples
/// ```
/// use clickpulse_events::ClickEvent;
/// use clickpulse_log::{Durability, Log, LogOptions};
/// use clickpulse_server::collector::LogAppender;
/// use clickpulse_server::EventAppender;
///
/// let dir = tempfile::tempdir()?;
/// let log = Log::open(dir.path(), LogOptions::default().durability(Durability::EveryBatch))?;
/// let appender = LogAppender::open(&log, "clicks", 4)?;
/// appender.append(&[ClickEvent::page_view(1_000, "v1", "/news")])?;
/// let p = clickpulse_events::partition_for("v1", 4);
/// assert_eq!(appender.topic().end_offset(p)?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct LogAppender {
    topic: Topic,
}

impl LogAppender {
    /// Appends to `topic`.
    pub fn new(topic: Topic) -> Self {
        LogAppender { topic }
    }

    /// Opens topic `name` of `log`, creating it with `partitions` partitions if it does not
    /// exist.
    ///
    /// # Errors
    /// The log's error: e.g. [`LogError::PartitionCountMismatch`] when the topic exists with
    /// another partition count, [`LogError::Locked`] when another writer holds it.
    pub fn open(log: &Log, name: &str, partitions: u32) -> Result<Self, LogError> {
        let topic = match log.topic(name) {
            Ok(topic) => topic,
            Err(LogError::TopicNotFound(_)) => log.create_topic(name, partitions)?,
            Err(e) => return Err(e),
        };
        Ok(LogAppender::new(topic))
    }

    /// The topic appended to.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// One batch per partition (empty ones included).
    fn batches(&self, events: &[ClickEvent]) -> Result<Vec<Batch>, AppendError> {
        let partitions = self.topic.partitions().max(1);
        let mut batches = vec![Batch::new(); partitions as usize];
        let mut value = Vec::with_capacity(128);
        for event in events {
            value.clear();
            binary::encode(event, &mut value);
            let p = partition_for(&event.visitor_id, partitions) as usize;
            let ts = i64::try_from(event.ts_ms).unwrap_or(i64::MAX);
            let batch = batches
                .get_mut(p)
                .ok_or_else(|| AppendError::Rejected(format!("no partition {p}")))?;
            batch
                .push(ts, event.visitor_id.as_bytes(), &value)
                .map_err(to_append_error)?;
        }
        Ok(batches)
    }
}

impl EventAppender for LogAppender {
    fn append(&self, events: &[ClickEvent]) -> Result<(), AppendError> {
        let batches = self.batches(events)?;
        let mut work = batches
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .map(|(p, b)| (p as u32, b));
        let Some(first) = work.next() else {
            return Ok(());
        };
        let topic = &self.topic;
        let append = |(p, batch): (u32, &Batch)| topic.append(p, batch).map(|_| ());
        // Partitions are separate files: their writes and fsyncs can overlap.
        thread::scope(|scope| {
            let others: Vec<_> = work.map(|job| scope.spawn(move || append(job))).collect();
            let mut outcome = append(first).map_err(to_append_error);
            for handle in others {
                let result = handle
                    .join()
                    .map_err(|_| AppendError::Unavailable("a log append thread panicked".into()))
                    .and_then(|r| r.map_err(to_append_error));
                outcome = outcome.and(result);
            }
            outcome
        })
    }
}

fn to_append_error(e: LogError) -> AppendError {
    match e {
        LogError::BatchTooLarge { .. } | LogError::EmptyBatch => {
            AppendError::Rejected(e.to_string())
        }
        other => AppendError::Unavailable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use clickpulse_log::{Durability, LogOptions};

    use super::*;

    #[test]
    fn events_land_in_their_visitors_partition_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(
            dir.path(),
            LogOptions::default().durability(Durability::EveryBatch),
        )
        .expect("open");
        let appender = LogAppender::open(&log, "clicks", 3).expect("topic");
        let events: Vec<ClickEvent> = (0..60)
            .map(|i| ClickEvent::page_view(1000 + i, format!("v{}", i % 7), format!("/{i}")))
            .collect();
        appender.append(&events).expect("append");
        appender.append(&events[..5]).expect("append again");

        let mut total = 0;
        for p in 0..3 {
            let records = appender.topic().read(p, 0, 1000).expect("read");
            let decoded: Vec<ClickEvent> = records
                .iter()
                .map(|r| binary::decode(r.value).expect("decodes"))
                .collect();
            for (r, e) in records.iter().zip(&decoded) {
                assert_eq!(partition_for(&e.visitor_id, 3), p);
                assert_eq!(r.key, e.visitor_id.as_bytes());
                assert_eq!(r.timestamp, e.ts_ms as i64);
            }
            let expected: Vec<&ClickEvent> = events
                .iter()
                .chain(&events[..5])
                .filter(|e| partition_for(&e.visitor_id, 3) == p)
                .collect();
            assert_eq!(decoded.iter().collect::<Vec<_>>(), expected);
            total += decoded.len();
        }
        assert_eq!(total, 65);
    }

    #[test]
    fn reopening_uses_the_existing_topic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path(), LogOptions::default()).expect("open");
        let a = LogAppender::open(&log, "clicks", 2).expect("create");
        a.append(&[ClickEvent::page_view(1, "v", "/")])
            .expect("append");
        drop(a);
        let b = LogAppender::open(&log, "clicks", 2).expect("reopen");
        let p = partition_for("v", 2);
        assert_eq!(b.topic().end_offset(p).expect("offset"), 1);
    }
}
