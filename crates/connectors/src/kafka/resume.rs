//! Where a restarted [`KafkaSink`](super::KafkaSink) resumes: which rows of a batch its topics
//! already hold. Pure: [`resume_scan`](super::resume_scan) does the reading.
//!
//! # The rule
//! A row is identified by its stream, batch and index in the batch (headers `stream`, `batch`,
//! `row`), and its partition is a function of the row and these
//! ([`partition_of`](super::record::partition_of)), so a re-run of batch `b` sends each row to
//! the partition the first run sent it to. The sink
//! writes a batch and waits for the broker to acknowledge all of it before it takes the next
//! one, and an idempotent producer neither loses nor reorders records within a partition; so a
//! partition holds, for each stream, every row meant for it of every batch up to its newest
//! batch there, `t`, and a prefix of the rows of `t` itself (all of them unless the writer
//! stopped in the middle of `t`). Row `i` of batch `b` is therefore already in its partition
//! when `b < t`, or when `b == t` and row `i` was read back from that partition
//! ([`Tail::holds`]). Everything else is written. (This needs the job to stop at a failed write
//! rather than go on to later batches: a partition that holds batch `b + 1` is taken to hold
//! all of `b`.)
//!
//! # How much is read
//! A partition is read from some offset to its end ([`window_start`]): the last
//! [`TAIL_RECORDS`] records before the end the broker reports, then eight times more each time
//! that is not enough, down to the partition's start. It is enough when, for every stream of
//! the topic the sink knows of and every stream seen, a record of an older batch of the stream
//! comes before the first record of its newest batch ([`PartitionScan::anchored`]): then no
//! row of that batch lies before the part read. A stream the part read does not show at all
//! makes the whole partition be read (a topic shared by streams, one of which has not written
//! to the partition lately).

use std::collections::{BTreeSet, HashMap};

use super::record::RowPosition;

/// How many records before a partition's reported end a resume scan reads first.
pub(crate) const TAIL_RECORDS: i64 = 1024;

/// Which rows of its newest batch a partition holds, for one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RowsHeld {
    /// Every row of the batch meant for the partition: this sink wrote and flushed the batch,
    /// or the rows read back carry no `row` header to tell them apart.
    All,
    /// These rows, by their index in the batch, read back from the partition.
    Some(BTreeSet<u64>),
}

/// A stream's newest batch in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tail {
    /// The batch.
    pub batch: u64,
    /// Which of its rows the partition holds.
    pub rows: RowsHeld,
    /// The batch's `prev_batch` header.
    pub prev: Option<u64>,
}

impl Tail {
    /// A tail with the row of `position`.
    fn from_position(position: &RowPosition) -> Tail {
        let mut tail = Tail {
            batch: position.batch,
            rows: RowsHeld::Some(BTreeSet::new()),
            prev: position.prev_batch,
        };
        tail.add_row(position.row);
        tail
    }

    fn add_row(&mut self, row: Option<u64>) {
        match (&mut self.rows, row) {
            (RowsHeld::Some(rows), Some(row)) => {
                rows.insert(row);
            }
            (rows, None) => *rows = RowsHeld::All,
            (RowsHeld::All, Some(_)) => {}
        }
    }

    /// Whether the partition holds row `row` of batch `batch` (see the [module](self) docs).
    pub(crate) fn holds(&self, batch: u64, row: u64) -> bool {
        match batch.cmp(&self.batch) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => match &self.rows {
                RowsHeld::All => true,
                RowsHeld::Some(rows) => rows.contains(&row),
            },
        }
    }
}

/// What a topic holds, stream by stream and partition by partition: read when the sink first
/// writes to the topic, then kept up to date with every batch the sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicTails {
    partitions: u32,
    /// Per stream, per partition.
    tails: HashMap<String, Vec<Option<Tail>>>,
}

impl TopicTails {
    /// The tails of a topic with `partitions` partitions, from each partition's tails by stream
    /// (`by_partition[p]`; missing partitions hold nothing).
    pub(crate) fn new(partitions: u32, by_partition: Vec<HashMap<String, Tail>>) -> TopicTails {
        let slots = partitions as usize;
        let mut tails: HashMap<String, Vec<Option<Tail>>> = HashMap::new();
        for (p, streams) in by_partition.into_iter().enumerate().take(slots) {
            for (stream, tail) in streams {
                let row = tails.entry(stream).or_insert_with(|| vec![None; slots]);
                if let Some(slot) = row.get_mut(p) {
                    *slot = Some(tail);
                }
            }
        }
        TopicTails { partitions, tails }
    }

    /// The topic's partition count when it was read.
    pub(crate) fn partitions(&self) -> u32 {
        self.partitions
    }

    fn tail(&self, stream: &str, partition: i32) -> Option<&Tail> {
        let p = usize::try_from(partition).ok()?;
        self.tails.get(stream)?.get(p)?.as_ref()
    }

    /// Whether `partition` already holds row `row` of `stream`'s batch `batch`.
    pub(crate) fn holds(&self, stream: &str, partition: i32, batch: u64, row: u64) -> bool {
        self.tail(stream, partition)
            .is_some_and(|t| t.holds(batch, row))
    }

    /// The `prev_batch` header of the rows of `stream`'s batch `batch` already in the topic, or
    /// `None` when no partition's newest batch is `batch`.
    pub(crate) fn prev_of(&self, stream: &str, batch: u64) -> Option<Option<u64>> {
        self.stream_tails(stream)
            .find(|t| t.batch == batch)
            .map(|t| t.prev)
    }

    /// The newest batch of `stream` older than `batch` that the partitions' tails show.
    pub(crate) fn newest_before(&self, stream: &str, batch: u64) -> Option<u64> {
        self.stream_tails(stream)
            .map(|t| t.batch)
            .filter(|&b| b < batch)
            .max()
    }

    /// The newest batch of `stream` in the topic.
    pub(crate) fn newest(&self, stream: &str) -> Option<u64> {
        self.stream_tails(stream).map(|t| t.batch).max()
    }

    /// The streams the topic holds rows of.
    pub(crate) fn streams(&self) -> impl Iterator<Item = &str> {
        self.tails.keys().map(String::as_str)
    }

    fn stream_tails(&self, stream: &str) -> impl Iterator<Item = &Tail> {
        self.tails.get(stream).into_iter().flatten().flatten()
    }

    /// Notes that every row of `stream`'s batch `batch` (whose `prev_batch` is `prev`) is now
    /// in its partition; `partitions` are the partitions the batch's rows go to.
    pub(crate) fn record_written(
        &mut self,
        stream: &str,
        batch: u64,
        prev: Option<u64>,
        partitions: impl IntoIterator<Item = i32>,
    ) {
        let slots = self.partitions as usize;
        let row = self
            .tails
            .entry(stream.to_string())
            .or_insert_with(|| vec![None; slots]);
        for p in partitions {
            let Some(slot) = usize::try_from(p).ok().and_then(|p| row.get_mut(p)) else {
                continue;
            };
            if slot.as_ref().is_none_or(|t| t.batch <= batch) {
                *slot = Some(Tail {
                    batch,
                    rows: RowsHeld::All,
                    prev,
                });
            }
        }
    }
}

/// One partition's records read in offset order from some offset on: each stream's newest
/// batch, and whether its start was seen.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PartitionScan {
    /// Per stream: its newest batch, and whether a record of an older batch came before the
    /// batch's first record.
    streams: HashMap<String, (Tail, bool)>,
}

impl PartitionScan {
    /// Takes the next record's position.
    pub(crate) fn observe(&mut self, position: &RowPosition) {
        match self.streams.get_mut(&position.stream) {
            None => {
                let tail = Tail::from_position(position);
                self.streams.insert(position.stream.clone(), (tail, false));
            }
            Some((tail, anchored)) if position.batch > tail.batch => {
                *tail = Tail::from_position(position);
                *anchored = true;
            }
            Some((tail, _)) if position.batch == tail.batch => tail.add_row(position.row),
            // An older batch after a newer one: written again by a sink that did not resume.
            // The newer batch stays the newest.
            Some(_) => {}
        }
    }

    /// Whether every stream seen, and every one of `streams`, has its newest batch's start in
    /// what was read: a record of an older batch of the stream came before it.
    pub(crate) fn anchored(&self, streams: &[String]) -> bool {
        self.streams.values().all(|(_, anchored)| *anchored)
            && streams.iter().all(|s| self.streams.contains_key(s))
    }

    /// Each stream's newest batch.
    pub(crate) fn into_tails(self) -> HashMap<String, Tail> {
        self.streams
            .into_iter()
            .map(|(stream, (tail, _))| (stream, tail))
            .collect()
    }
}

/// The offset a partition with records from `low` to about `hint` (the end the broker reports)
/// is read from in scan round `round` (0, 1, …): [`TAIL_RECORDS`] records before `hint`, eight
/// times more each round, never before `low`.
pub(crate) fn window_start(low: i64, hint: i64, round: u32) -> i64 {
    let back = 8i64
        .checked_pow(round)
        .and_then(|f| f.checked_mul(TAIL_RECORDS))
        .unwrap_or(i64::MAX);
    hint.saturating_sub(back).max(low)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(stream: &str, batch: u64, row: u64) -> RowPosition {
        RowPosition {
            stream: stream.into(),
            batch,
            row: Some(row),
            prev_batch: batch.checked_sub(1),
        }
    }

    fn scan(records: &[RowPosition]) -> PartitionScan {
        let mut scan = PartitionScan::default();
        for r in records {
            scan.observe(r);
        }
        scan
    }

    fn topic(partitions: Vec<&[RowPosition]>) -> TopicTails {
        let n = u32::try_from(partitions.len()).unwrap_or(0);
        TopicTails::new(
            n,
            partitions
                .into_iter()
                .map(|p| scan(p).into_tails())
                .collect(),
        )
    }

    #[test]
    fn a_partition_holds_older_batches_and_the_rows_read_of_its_newest() {
        // Partition 0 holds batches 3 and 4 whole and rows 0 and 2 of batch 5 (the writer
        // stopped in the middle of batch 5); partition 1 holds batch 3 only.
        let t = topic(vec![
            &[
                at("pv", 3, 1),
                at("pv", 4, 0),
                at("pv", 5, 0),
                at("pv", 5, 2),
            ],
            &[at("pv", 3, 0)],
        ]);
        assert!(t.holds("pv", 0, 4, 7), "an older batch: held");
        assert!(t.holds("pv", 0, 5, 0) && t.holds("pv", 0, 5, 2));
        assert!(
            !t.holds("pv", 0, 5, 4),
            "a row of the newest batch not read back"
        );
        assert!(!t.holds("pv", 0, 6, 0), "a newer batch");
        assert!(t.holds("pv", 1, 3, 0));
        assert!(
            !t.holds("pv", 1, 4, 1),
            "partition 1 never got batch 4's rows"
        );
        assert!(!t.holds("other", 0, 1, 0), "another stream");
        assert!(!t.holds("pv", 2, 1, 0), "no such partition");
        assert_eq!(t.newest("pv"), Some(5));
    }

    #[test]
    fn rows_without_a_row_header_count_as_the_whole_batch() {
        let mut headerless = at("pv", 5, 0);
        headerless.row = None;
        let t = topic(vec![&[at("pv", 5, 1), headerless]]);
        assert!(t.holds("pv", 0, 5, 9));
    }

    #[test]
    fn the_prev_header_of_a_partly_written_batch_is_reused() {
        let mut first = at("pv", 7, 0);
        first.prev_batch = Some(4);
        let t = topic(vec![&[at("pv", 4, 0), first], &[at("pv", 2, 0)]]);
        assert_eq!(t.prev_of("pv", 7), Some(Some(4)));
        assert_eq!(t.prev_of("pv", 8), None);
        assert_eq!(t.newest_before("pv", 8), Some(7));
        assert_eq!(t.newest_before("pv", 7), Some(2), "partition 1's newest");
        assert_eq!(t.newest_before("pv", 2), None);
    }

    #[test]
    fn a_written_batch_is_held_whole_and_older_ones_do_not_move_tails_back() {
        let mut t = topic(vec![&[at("pv", 5, 0)], &[]]);
        t.record_written("pv", 5, Some(4), [0, 1]);
        assert!(t.holds("pv", 0, 5, 3) && t.holds("pv", 1, 5, 3));
        t.record_written("pv", 2, None, [0]);
        assert_eq!(t.newest("pv"), Some(5));
        assert!(!t.holds("pv", 0, 6, 0));
        t.record_written("new", 1, None, [1, 9]);
        assert!(t.holds("new", 1, 1, 0) && !t.holds("new", 0, 1, 0));
    }

    #[test]
    fn a_read_is_enough_once_every_stream_s_newest_batch_starts_inside_it() {
        let streams = vec!["pv".to_string()];
        // Started in the middle of batch 5: rows of it may lie before.
        assert!(!scan(&[at("pv", 5, 3), at("pv", 5, 4)]).anchored(&streams));
        assert!(scan(&[at("pv", 4, 9), at("pv", 5, 0)]).anchored(&streams));
        // A stream of the topic that the part read does not show: read further back.
        assert!(!scan(&[at("tp", 1, 0), at("tp", 2, 0)]).anchored(&streams));
        // Every stream seen must be anchored, not only the ones asked for.
        assert!(!scan(&[at("pv", 4, 0), at("pv", 5, 0), at("tp", 2, 0)]).anchored(&streams));
        // Older batches after newer ones (a sink that did not resume) leave the newest alone.
        let s = scan(&[at("pv", 4, 0), at("pv", 5, 0), at("pv", 3, 0)]);
        assert!(s.anchored(&streams));
        assert_eq!(s.into_tails()["pv"].batch, 5);
    }

    #[test]
    fn windows_grow_eightfold_down_to_the_start() {
        assert_eq!(window_start(0, 10_000, 0), 10_000 - TAIL_RECORDS);
        assert_eq!(window_start(0, 10_000, 1), 10_000 - 8 * TAIL_RECORDS);
        assert_eq!(window_start(0, 10_000, 2), 0);
        assert_eq!(window_start(500, 600, 0), 500);
        assert_eq!(window_start(0, 10, 40), 0, "no overflow");
    }
}
