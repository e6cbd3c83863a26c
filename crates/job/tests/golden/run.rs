//! Runs the standard job (default configuration, demo history) over a list of events, in
//! until-end mode, and reads its rows back as typed rows.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clickpulse_connectors::files::JsonlSink;
use clickpulse_engine::{QueueSource, RunMode, RunSummary, StreamingContext};
use clickpulse_events::{ClickEvent, partition_for};
use clickpulse_job::config::DistinctCount;
use clickpulse_job::history::{History, demo_history};
use clickpulse_job::rows::{
    ActiveVisitorsRow, LateRow, PageViewRow, SegmentRow, SessionRow, TopPageRow, TrendingRow,
};
use clickpulse_job::{JobConfig, MemorySink, Outputs, StandardJob};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model;

/// Input partitions, as the embedded log has by default.
const PARTITIONS: u32 = 4;

/// Rows per stream and batch id, in the order the job wrote them.
pub type Batches = BTreeMap<(String, u64), Vec<Value>>;

/// One run of the job over some events.
pub struct Run<'a> {
    events: &'a [ClickEvent],
    chunk: usize,
    workers: usize,
    hll_precision: Option<u8>,
    page_views_window: Option<Duration>,
}

/// What a run emitted: the raw batches and every stream's rows, typed and sorted.
#[derive(Debug)]
pub struct Actual {
    pub summary: RunSummary,
    pub batches: Batches,
    pub page_views: Vec<PageViewRow>,
    pub page_views_30s: Vec<PageViewRow>,
    pub top_pages: Vec<TopPageRow>,
    pub sessions: Vec<SessionRow>,
    pub active_visitors: Vec<ActiveVisitorsRow>,
    pub segments: Vec<SegmentRow>,
    pub trending: Vec<TrendingRow>,
    pub late_rows: Vec<LateRow>,
}

impl<'a> Run<'a> {
    /// `events` partitioned by visitor over 4 partitions, each cut into engine batches of
    /// `chunk` events.
    pub fn new(events: &'a [ClickEvent], chunk: usize) -> Self {
        Run {
            events,
            chunk,
            workers: 1,
            hll_precision: None,
            page_views_window: None,
        }
    }

    /// `page_views`' window (default: the model's one second). The other streams do not depend
    /// on it, whether they are counted from its windows (when they fit) or from every view.
    pub fn page_views_window(mut self, window: Duration) -> Self {
        self.page_views_window = Some(window);
        self
    }

    /// Counts `active_visitors` with HyperLogLog sketches of `precision` (default: exactly).
    pub fn hll(mut self, precision: u8) -> Self {
        self.hll_precision = Some(precision);
        self
    }

    /// Worker threads (default 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Runs with a memory sink.
    pub fn memory(self) -> Actual {
        self.run(None)
    }

    /// Runs with a memory sink and a JSON Lines sink under `dir`.
    pub fn memory_and_files(self, dir: &Path) -> Actual {
        self.run(Some(dir))
    }

    fn source(&self) -> QueueSource<ClickEvent> {
        let mut parts: Vec<Vec<ClickEvent>> = vec![Vec::new(); PARTITIONS as usize];
        for e in self.events {
            parts[partition_for(&e.visitor_id, PARTITIONS) as usize].push(e.clone());
        }
        let batches = parts
            .into_iter()
            .map(|p| p.chunks(self.chunk).map(<[ClickEvent]>::to_vec).collect())
            .collect();
        QueueSource::partitioned("clicks", batches)
    }

    fn run(self, files: Option<&Path>) -> Actual {
        let mut config = JobConfig::default();
        assert_defaults_are_the_models(&config);
        if let Some(precision) = self.hll_precision {
            config.streams.active_visitors_count = DistinctCount::Hll;
            config.streams.active_visitors_hll_precision = precision;
        }
        if let Some(window) = self.page_views_window {
            config.streams.page_views_window = window;
        }
        let memory = MemorySink::new();
        let outputs = Outputs::new();
        outputs.add(Box::new(memory.clone()));
        if let Some(dir) = files {
            outputs.add(Box::new(JsonlSink::new(dir)));
        }
        let job = StandardJob {
            config,
            outputs,
            history: Arc::new(History::new(demo_history().collect())),
        };
        let source = self.source();
        let summary = StreamingContext::new(Duration::from_secs(1))
            .expect("1 s is a valid batch interval")
            .workers(self.workers)
            .expect("1 or 2 workers are valid")
            .mode(RunMode::UntilEnd)
            .run(move |j| job.build(j, &source))
            .expect("the standard job runs to the end of its input");
        Actual::read(summary, &memory)
    }
}

/// The model hard-codes the job's documented defaults; a changed default must show here.
fn assert_defaults_are_the_models(config: &JobConfig) {
    let s = &config.streams;
    let ms = |d: Duration| u64::try_from(d.as_millis()).expect("small duration");
    assert_eq!(
        (
            ms(s.page_views_window),
            ms(s.page_views_30s_window),
            ms(s.page_views_30s_slide),
            s.top_n,
            ms(s.session_gap),
            ms(s.active_visitors_window),
            ms(s.segments_window),
            ms(s.trending_window),
            s.trending_top,
        ),
        (
            model::PAGE_VIEWS_MS,
            model::SLIDING_SIZE_MS,
            model::SLIDING_SLIDE_MS,
            model::TOP_N,
            model::SESSION_GAP_MS,
            model::ACTIVE_MS,
            model::SEGMENTS_MS,
            model::TRENDING_MS,
            model::TRENDING_TOP,
        ),
        "the job's default streams configuration is not the one the model computes"
    );
    assert_eq!(config.input.allowed_lateness, Duration::ZERO);
    assert!(config.history.csv.is_none() && config.history.postgres.is_none());
}

impl Actual {
    fn read(summary: RunSummary, memory: &MemorySink) -> Actual {
        let mut batches = Batches::new();
        for b in memory.batches() {
            assert!(
                !b.rows.is_empty(),
                "{} batch {} has no rows",
                b.stream,
                b.batch
            );
            let previous = batches.insert((b.stream.clone(), b.batch), b.rows.to_values());
            assert!(
                previous.is_none(),
                "{} batch {} written twice",
                b.stream,
                b.batch
            );
        }
        Actual {
            page_views: typed(&batches, "page_views"),
            page_views_30s: typed(&batches, "page_views_30s"),
            top_pages: typed(&batches, "top_pages"),
            sessions: typed(&batches, "sessions"),
            active_visitors: typed(&batches, "active_visitors"),
            segments: typed(&batches, "segments"),
            trending: typed(&batches, "trending"),
            late_rows: typed(&batches, "late_events"),
            summary,
            batches,
        }
    }
}

/// Every row of `stream` over all batches, deserialised and sorted.
fn typed<R: DeserializeOwned + Ord>(batches: &Batches, stream: &str) -> Vec<R> {
    let mut rows: Vec<R> = batches
        .iter()
        .filter(|((s, _), _)| s == stream)
        .flat_map(|(_, rows)| rows)
        .map(|v| {
            serde_json::from_value(v.clone())
                .unwrap_or_else(|e| panic!("{stream} row {v} does not deserialise: {e}"))
        })
        .collect();
    rows.sort();
    rows
}

/// Asserts two sorted row lists are equal; on a difference, names the first rows missing and
/// unexpected instead of printing both lists.
pub fn assert_same_rows<R: Ord + Debug>(what: &str, expected: &[R], actual: &[R]) {
    if expected == actual {
        return;
    }
    let mut diff: BTreeMap<&R, i64> = BTreeMap::new();
    for r in expected {
        *diff.entry(r).or_default() += 1;
    }
    for r in actual {
        *diff.entry(r).or_default() -= 1;
    }
    let missing: Vec<_> = diff.iter().filter(|(_, n)| **n > 0).collect();
    let unexpected: Vec<_> = diff.iter().filter(|(_, n)| **n < 0).collect();
    panic!(
        "{what}: expected {} rows, got {}; {} missing, {} unexpected (count = surplus)\n\
         first missing: {:#?}\nfirst unexpected: {:#?}",
        expected.len(),
        actual.len(),
        missing.len(),
        unexpected.len(),
        &missing[..missing.len().min(8)],
        &unexpected[..unexpected.len().min(8)],
    );
}

/// Reads `<dir>/<stream>/batch-<12 digits>.jsonl` files back into batches, checking that every
/// line carries its file's batch id in a `batch` field (removed from the returned rows).
pub fn read_jsonl_dir(dir: &Path) -> Batches {
    let mut batches = Batches::new();
    for stream_dir in std::fs::read_dir(dir).expect("output directory is readable") {
        let stream_dir = stream_dir.expect("directory entry").path();
        assert!(
            stream_dir.is_dir(),
            "{} is not a stream directory",
            stream_dir.display()
        );
        let stream = file_name(&stream_dir);
        for file in std::fs::read_dir(&stream_dir).expect("stream directory is readable") {
            let path = file.expect("directory entry").path();
            let name = file_name(&path);
            let batch: u64 = name
                .strip_prefix("batch-")
                .and_then(|n| n.strip_suffix(".jsonl"))
                .filter(|n| n.len() == 12)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{stream}/{name} is not batch-<12 digits>.jsonl"));
            let text = std::fs::read_to_string(&path).expect("batch file is readable");
            let rows = text
                .lines()
                .map(|line| without_batch(line, batch, &path))
                .collect();
            batches.insert((stream.clone(), batch), rows);
        }
    }
    batches
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

/// The row of `line` without its `batch` field, which must equal `batch`.
fn without_batch(line: &str, batch: u64, path: &Path) -> Value {
    let mut row: Value = serde_json::from_str(line).expect("every line is a JSON value");
    let object = row.as_object_mut().expect("every line is a JSON object");
    let found = object.remove("batch");
    assert_eq!(
        found,
        Some(Value::from(batch)),
        "{}: line {line} does not carry batch {batch}",
        path.display()
    );
    row
}
