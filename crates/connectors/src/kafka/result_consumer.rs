//! A result topic read back into [`ResultBatch`]es, for `clickpulse serve --from kafka://…`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clickpulse_events::JsonRow;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::client::{base_config, check_target, partition_count};
use super::error::{Error, Result};
use super::record::{RowRecord, read_record};
use crate::result::ResultBatch;

/// How often the consumer looks for partitions added to the topic.
const PARTITION_RECHECK: Duration = Duration::from_secs(10);
/// How long one poll blocks; also how quickly [`ResultConsumer::stop`] is noticed.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the topic's metadata may take, and the pause between attempts while it is missing.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a [`ResultConsumer`] starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// Every record the topic still holds.
    Beginning,
    /// Only records written after the consumer started.
    End,
    /// The last `n` records of each partition (a bounded history), then everything new.
    Recent(u64),
}

/// Reads one stream's result topic on a thread of its own and hands every batch to a callback,
/// until stopped.
///
/// Records are read as [`KafkaSink`](super::KafkaSink) writes them (see
/// [`record`](super::record)) and put together again into [`ResultBatch`]es: a batch is handed
/// over when all its `batch_rows` rows are in, with the rows in their original order, whatever
/// partitions they came through. Batches come in batch order: a complete batch waits for older
/// incomplete ones, and for the batch its `prev_batch` header names until that one has been
/// handed over. (Rows travel through several partitions, fetched independently, so a batch can be
/// complete before any row of the batch before it has been fetched.) A batch that, like every
/// older pending batch, gets no new row for the idle timeout (default 1 s) is handed over as it
/// is, with every older one — the first batch after a [`StartFrom::Recent`] start is usually
/// cut, and the first one read after any start may wait that long for a batch from before the
/// start. Rows of a batch older than one already handed over (a batch more than the idle timeout
/// late) are dropped with a warning. Records without `batch_rows` (other writers) are grouped by consecutive `batch` headers.
/// Records of other streams (their `stream` header differs) are skipped, so several streams may
/// share a topic; records that are not result rows are logged and skipped.
///
/// The consumer assigns itself every partition (no consumer group, nothing committed), waits for
/// a missing topic to appear, picks up partitions added later, and rides out broker restarts.
/// The callback runs on the consumer's thread: it must not block for long.
///
/// [`stop`](Self::stop) — or dropping the value — ends the thread and closes the consumer.
///
/// # Examples
/// ```no_run
/// use clickpulse_connectors::kafka::{ResultConsumer, StartFrom};
///
/// let consumer = ResultConsumer::start(
///     "127.0.0.1:9092",
///     "top_pages",
///     "clickpulse.top_pages",
///     StartFrom::Recent(100),
///     |batch| println!("batch {}: {} rows", batch.batch, batch.rows.len()),
/// )?;
/// // … when the last subscriber leaves:
/// consumer.stop();
/// # Ok::<(), clickpulse_connectors::kafka::Error>(())
/// ```
pub struct ResultConsumer {
    stream: String,
    topic: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ResultConsumer {
    /// Starts reading `topic` for `stream`'s batches from `from`, calling `callback` with each.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty broker list or an invalid topic; [`Error::Client`] when the
    /// client cannot be made. A missing topic or an unreachable broker is not an error: the
    /// consumer waits for them (and logs why).
    pub fn start(
        brokers: &str,
        stream: &str,
        topic: &str,
        from: StartFrom,
        callback: impl Fn(ResultBatch) + Send + 'static,
    ) -> Result<ResultConsumer> {
        ResultConsumer::start_with_idle_timeout(
            brokers,
            stream,
            topic,
            from,
            Duration::from_secs(1),
            callback,
        )
    }

    /// Like [`start`](Self::start), with the time after which an incomplete batch is handed
    /// over as it is.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with_idle_timeout(
        brokers: &str,
        stream: &str,
        topic: &str,
        from: StartFrom,
        idle_timeout: Duration,
        callback: impl Fn(ResultBatch) + Send + 'static,
    ) -> Result<ResultConsumer> {
        check_target(brokers, topic)?;
        let mut config = base_config(brokers, "clickpulse-serve");
        // librdkafka assigns partitions only with a group id; this one is never committed to,
        // nor joined (no subscription), so each consumer gets its own.
        let group = format!(
            "clickpulse-serve-{stream}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        config
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest");
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| Error::client("creating the result consumer", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut reader = Reader {
            consumer,
            topic: topic.to_string(),
            stream: stream.to_string(),
            from,
            assigned: 0,
            last_check: None,
            waiting_logged: false,
            assembler: Assembler::new(stream, idle_timeout),
            stop: Arc::clone(&stop),
        };
        let thread = std::thread::Builder::new()
            .name(format!("kafka-results-{stream}"))
            .spawn(move || reader.run(&callback))
            .map_err(|e| Error::Config {
                key: "thread".into(),
                reason: format!("cannot start the consumer thread: {e}"),
            })?;
        Ok(ResultConsumer {
            stream: stream.to_string(),
            topic: topic.to_string(),
            stop,
            thread: Some(thread),
        })
    }

    /// The stream whose batches are read.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Whether the consumer thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops reading and closes the consumer; returns when the thread has ended (within about
    /// a poll, 100 ms, plus the callback in progress). Batches still incomplete are dropped.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let panicked = self
            .thread
            .take()
            .map(JoinHandle::join)
            .is_some_and(|r| r.is_err());
        if panicked {
            tracing::error!(stream = %self.stream, "the result consumer's thread panicked");
        }
    }
}

impl Drop for ResultConsumer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl fmt::Debug for ResultConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultConsumer")
            .field("stream", &self.stream)
            .field("topic", &self.topic)
            .field("running", &self.is_running())
            .finish()
    }
}

/// The consumer thread's state.
struct Reader {
    consumer: BaseConsumer,
    topic: String,
    stream: String,
    from: StartFrom,
    assigned: u32,
    last_check: Option<Instant>,
    /// Whether "waiting for the topic" was logged at info level already.
    waiting_logged: bool,
    assembler: Assembler,
    stop: Arc<AtomicBool>,
}

impl Reader {
    fn run(&mut self, callback: &dyn Fn(ResultBatch)) {
        while !self.stop.load(Ordering::SeqCst) {
            self.check_partitions();
            if self.assigned == 0 {
                std::thread::sleep(POLL_TIMEOUT);
                continue;
            }
            self.poll_once(callback);
            for batch in self.assembler.flush_idle(Instant::now()) {
                callback(batch);
            }
        }
    }

    fn poll_once(&mut self, callback: &dyn Fn(ResultBatch)) {
        match self.consumer.poll(POLL_TIMEOUT) {
            None => {}
            Some(Ok(message)) => match read_record(&message) {
                Ok(record) => {
                    for batch in self.assembler.push(record, Instant::now()) {
                        callback(batch);
                    }
                }
                Err(reason) => {
                    tracing::warn!(topic = %self.topic, partition = rdkafka::Message::partition(&message),
                        offset = rdkafka::Message::offset(&message), %reason, "not a result row; skipped");
                }
            },
            Some(Err(e)) => {
                tracing::debug!(topic = %self.topic, error = %e, "result consumer: client error");
            }
        }
    }

    /// Assigns partitions the consumer does not read yet (all of them at first).
    fn check_partitions(&mut self) {
        let recheck = if self.assigned == 0 {
            METADATA_TIMEOUT.min(Duration::from_secs(1))
        } else {
            PARTITION_RECHECK
        };
        if self.last_check.is_some_and(|t| t.elapsed() < recheck) {
            return;
        }
        self.last_check = Some(Instant::now());
        let count = match partition_count(self.consumer.client(), &self.topic, METADATA_TIMEOUT) {
            Ok(n) => n,
            Err(e) if self.waiting_logged => {
                tracing::debug!(topic = %self.topic, error = %e, "still waiting for the result topic");
                return;
            }
            Err(e) => {
                tracing::info!(topic = %self.topic, stream = %self.stream, error = %e,
                    "waiting for the result topic");
                self.waiting_logged = true;
                return;
            }
        };
        if count <= self.assigned {
            return;
        }
        let first = self.assigned == 0;
        let offset = match (first, self.from) {
            (true, StartFrom::End) => Offset::End,
            (true, StartFrom::Recent(n)) => {
                Offset::OffsetTail(i64::try_from(n).unwrap_or(i64::MAX))
            }
            // Partitions added later are new: read them whole.
            (true, StartFrom::Beginning) | (false, _) => Offset::Beginning,
        };
        let mut list = TopicPartitionList::new();
        for p in self.assigned..count {
            let p = i32::try_from(p).unwrap_or(i32::MAX);
            if let Err(e) = list.add_partition_offset(&self.topic, p, offset) {
                tracing::error!(topic = %self.topic, partition = p, error = %e, "cannot assign");
                return;
            }
        }
        match self.consumer.incremental_assign(&list) {
            Ok(()) => self.assigned = count,
            Err(e) => tracing::error!(topic = %self.topic, error = %e, "cannot assign partitions"),
        }
    }
}

/// Puts rows back together into batches. Pure: time is passed in.
#[derive(Debug)]
pub(crate) struct Assembler {
    stream: String,
    idle_timeout: Duration,
    pending: BTreeMap<u64, Pending>,
    /// The batch of the latest record without a `batch_rows` header.
    open_unsized: Option<u64>,
    /// The newest batch handed over.
    handed: Option<u64>,
    /// The last batch whose late rows were dropped (to warn once per batch).
    dropped: Option<u64>,
}

#[derive(Debug)]
struct Pending {
    window_start_ms: Option<u64>,
    window_end_ms: Option<u64>,
    expected: Option<u64>,
    /// The batch written before this one, from the `prev_batch` header.
    prev: Option<u64>,
    rows: Vec<(u64, JsonRow)>,
    updated: Instant,
}

impl Pending {
    fn complete(&self) -> bool {
        self.expected.is_some_and(|n| self.rows.len() as u64 >= n)
    }
}

impl Assembler {
    pub(crate) fn new(stream: &str, idle_timeout: Duration) -> Self {
        Assembler {
            stream: stream.to_string(),
            idle_timeout,
            pending: BTreeMap::new(),
            open_unsized: None,
            handed: None,
            dropped: None,
        }
    }

    /// Takes one row; returns the batches now ready, in batch order.
    pub(crate) fn push(&mut self, record: RowRecord, now: Instant) -> Vec<ResultBatch> {
        if record.stream.as_deref().is_some_and(|s| s != self.stream) {
            return Vec::new();
        }
        if self.handed.is_some_and(|h| record.batch <= h)
            && !self.pending.contains_key(&record.batch)
        {
            // A batch more than the idle timeout late: a later one has been handed over.
            if self.dropped != Some(record.batch) {
                self.dropped = Some(record.batch);
                tracing::warn!(
                    stream = %self.stream,
                    batch = record.batch,
                    handed = self.handed,
                    "rows of a batch older than one already handed over: dropped"
                );
            }
            return Vec::new();
        }
        let mut ready = Vec::new();
        if record.batch_rows.is_none() {
            // Without a row count a batch ends where the next one begins.
            if let Some(open) = self.open_unsized.filter(|&b| b != record.batch) {
                ready.extend(self.take(open));
            }
            self.open_unsized = Some(record.batch);
        }
        let entry = self.pending.entry(record.batch).or_insert_with(|| Pending {
            window_start_ms: record.window_start_ms,
            window_end_ms: record.window_end_ms,
            expected: record.batch_rows,
            prev: record.prev_batch,
            rows: Vec::new(),
            updated: now,
        });
        let index = record.row.unwrap_or(entry.rows.len() as u64);
        entry.rows.push((index, record.value));
        entry.updated = now;
        ready.extend(self.take_ready());
        ready
    }

    /// Hands over, in order, the complete batches that no older batch holds back: neither an
    /// incomplete one nor one named by `prev_batch` that has not been handed over yet.
    fn take_ready(&mut self) -> Vec<ResultBatch> {
        let mut ready = Vec::new();
        while let Some((&batch, pending)) = self.pending.first_key_value() {
            // An older pending batch would be first; one not seen yet is still on its way.
            let prev_on_its_way = pending
                .prev
                .is_some_and(|prev| self.handed.is_none_or(|h| h < prev));
            if !pending.complete() || prev_on_its_way {
                break;
            }
            ready.extend(self.take(batch));
        }
        ready
    }

    /// Hands over batches idle for the idle timeout (as they are), and what they held back. A
    /// batch is idle when neither it nor any older pending batch got a row for that long: a
    /// batch waiting for an older one that is still filling up waits with it.
    pub(crate) fn flush_idle(&mut self, now: Instant) -> Vec<ResultBatch> {
        let mut newest_idle = None;
        let mut latest: Option<Instant> = None;
        for (&b, p) in &self.pending {
            let since = latest.map_or(p.updated, |l| l.max(p.updated));
            latest = Some(since);
            if now.saturating_duration_since(since) < self.idle_timeout {
                break;
            }
            newest_idle = Some(b);
        }
        let Some(limit) = newest_idle else {
            return Vec::new();
        };
        let older: Vec<u64> = self.pending.range(..=limit).map(|(&b, _)| b).collect();
        let mut ready: Vec<ResultBatch> = older.into_iter().filter_map(|b| self.take(b)).collect();
        ready.extend(self.take_ready());
        ready
    }

    fn take(&mut self, batch: u64) -> Option<ResultBatch> {
        let mut pending = self.pending.remove(&batch)?;
        if self.open_unsized == Some(batch) {
            self.open_unsized = None;
        }
        self.handed = self.handed.max(Some(batch));
        pending.rows.sort_by_key(|(i, _)| *i);
        Some(ResultBatch {
            stream: self.stream.clone(),
            batch,
            window_start_ms: pending.window_start_ms,
            window_end_ms: pending.window_end_ms,
            rows: pending.rows.into_iter().map(|(_, v)| v).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(batch: u64, rows: Option<u64>, i: u64, url: &str) -> RowRecord {
        RowRecord {
            stream: Some("page_views".into()),
            batch,
            window_start_ms: Some(batch * 1000),
            window_end_ms: Some(batch * 1000 + 1000),
            batch_rows: rows,
            row: rows.map(|_| i),
            prev_batch: None,
            value: json!({ "url": url }).into(),
        }
    }

    /// `record`, written after batch `prev`.
    fn after(prev: u64, record: RowRecord) -> RowRecord {
        RowRecord {
            prev_batch: Some(prev),
            ..record
        }
    }

    fn batches(ready: &[ResultBatch]) -> Vec<(u64, Vec<String>)> {
        ready.iter().map(|b| (b.batch, urls(b))).collect()
    }

    fn owned(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn urls(b: &ResultBatch) -> Vec<String> {
        b.rows
            .to_values()
            .iter()
            .filter_map(|r| r["url"].as_str().map(String::from))
            .collect()
    }

    #[test]
    fn a_batch_is_ready_when_all_its_rows_are_in_and_in_row_order() {
        let t = Instant::now();
        let mut a = Assembler::new("page_views", Duration::from_secs(1));
        assert!(a.push(row(3, Some(3), 2, "/c"), t).is_empty());
        assert!(a.push(row(3, Some(3), 0, "/a"), t).is_empty());
        let ready = a.push(row(3, Some(3), 1, "/b"), t);
        assert_eq!(ready.len(), 1);
        assert_eq!(
            (ready[0].batch, urls(&ready[0])),
            (3, owned(&["/a", "/b", "/c"]))
        );
        assert_eq!(ready[0].window_start_ms, Some(3000));
        assert_eq!(ready[0].stream, "page_views");
    }

    #[test]
    fn batches_come_out_in_order_and_idle_ones_as_they_are() {
        let t = Instant::now();
        let mut a = Assembler::new("page_views", Duration::from_secs(1));
        assert!(a.push(row(1, Some(2), 0, "/a"), t).is_empty());
        // Batch 2 is complete but batch 1 is not: it waits.
        assert!(a.push(row(2, Some(1), 0, "/b"), t).is_empty());
        assert!(a.flush_idle(t + Duration::from_millis(500)).is_empty());
        let ready = a.flush_idle(t + Duration::from_secs(1));
        let got: Vec<(u64, Vec<String>)> = ready.iter().map(|b| (b.batch, urls(b))).collect();
        assert_eq!(got, vec![(1, owned(&["/a"])), (2, owned(&["/b"]))]);
    }

    #[test]
    fn a_batch_waits_for_the_one_before_it_even_before_any_of_its_rows_is_in() {
        let t = Instant::now();
        let mut a = Assembler::new("page_views", Duration::from_secs(1));
        // Batch 3 comes whole before anything of batch 1 (batch 2 had no rows): it waits.
        assert!(a.push(after(1, row(3, Some(1), 0, "/c")), t).is_empty());
        assert!(a.push(row(1, Some(2), 1, "/b"), t).is_empty());
        let ready = a.push(row(1, Some(2), 0, "/a"), t);
        assert_eq!(
            batches(&ready),
            vec![(1, owned(&["/a", "/b"])), (3, owned(&["/c"]))]
        );
        // A batch whose predecessor has been handed over goes at once.
        let ready = a.push(after(3, row(4, Some(1), 0, "/d")), t);
        assert_eq!(batches(&ready), vec![(4, owned(&["/d"]))]);
    }

    #[test]
    fn a_batch_whose_predecessor_never_comes_goes_when_idle() {
        let t = Instant::now();
        let mut a = Assembler::new("page_views", Duration::from_secs(1));
        // Read from the middle of the topic: batch 6 is before the start and never comes.
        assert!(a.push(after(6, row(7, Some(1), 0, "/g")), t).is_empty());
        assert!(a.push(after(7, row(8, Some(1), 0, "/h")), t).is_empty());
        assert!(a.flush_idle(t + Duration::from_millis(500)).is_empty());
        let ready = a.flush_idle(t + Duration::from_secs(1));
        assert_eq!(
            batches(&ready),
            vec![(7, owned(&["/g"])), (8, owned(&["/h"]))]
        );
        // From then on batches flow as they complete.
        let ready = a.push(after(8, row(9, Some(1), 0, "/i")), t);
        assert_eq!(batches(&ready), vec![(9, owned(&["/i"]))]);
    }

    #[test]
    fn a_batch_waiting_for_one_still_filling_up_waits_with_it() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut a = Assembler::new("page_views", Duration::from_secs(1));
        assert!(a.push(after(1, row(2, Some(1), 0, "/b")), t).is_empty());
        // Batch 1 starts arriving just before batch 2 has waited a second: neither is idle.
        assert!(a.push(row(1, Some(2), 0, "/a"), t + ms(900)).is_empty());
        assert!(a.flush_idle(t + ms(1500)).is_empty());
        let ready = a.push(row(1, Some(2), 1, "/a2"), t + ms(1600));
        assert_eq!(
            batches(&ready),
            vec![(1, owned(&["/a", "/a2"])), (2, owned(&["/b"]))]
        );
    }

    #[test]
    fn rows_of_a_batch_older_than_one_handed_over_are_dropped() {
        let t = Instant::now();
        let mut a = Assembler::new("page_views", Duration::from_secs(1));
        assert!(a.push(after(4, row(5, Some(1), 0, "/e")), t).is_empty());
        let ready = a.flush_idle(t + Duration::from_secs(1));
        assert_eq!(batches(&ready), vec![(5, owned(&["/e"]))]);
        // Batch 4 comes more than the idle timeout late, after batch 5 went: never handed over.
        assert!(a.push(row(4, Some(1), 0, "/d"), t).is_empty());
        assert!(a.flush_idle(t + Duration::from_secs(9)).is_empty());
        // Later batches still flow.
        let ready = a.push(after(5, row(6, Some(1), 0, "/f")), t);
        assert_eq!(batches(&ready), vec![(6, owned(&["/f"]))]);
    }

    #[test]
    fn rows_without_counts_group_by_consecutive_batch() {
        let t = Instant::now();
        let mut a = Assembler::new("page_views", Duration::from_secs(1));
        assert!(a.push(row(5, None, 0, "/a"), t).is_empty());
        assert!(a.push(row(5, None, 0, "/b"), t).is_empty());
        let ready = a.push(row(6, None, 0, "/c"), t);
        assert_eq!(ready.len(), 1);
        assert_eq!((ready[0].batch, urls(&ready[0])), (5, owned(&["/a", "/b"])));
        let rest = a.flush_idle(t + Duration::from_secs(2));
        assert_eq!((rest[0].batch, urls(&rest[0])), (6, owned(&["/c"])));
    }

    #[test]
    fn other_streams_are_skipped() {
        let t = Instant::now();
        let mut a = Assembler::new("page_views", Duration::from_secs(1));
        let mut other = row(1, Some(1), 0, "/x");
        other.stream = Some("top_pages".into());
        assert!(a.push(other, t).is_empty());
        assert!(a.flush_idle(t + Duration::from_secs(5)).is_empty());
    }
}
