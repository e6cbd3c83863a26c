//! The visitor-history table `segments` joins closed sessions with: loaded from CSV or
//! PostgreSQL, reloaded on a schedule, with a Bloom filter in front so that most sessions of
//! visitors without history skip the table lookup.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fastbloom::BloomFilter;
use rustc_hash::FxHashMap;
use smol_str::SmolStr;

use crate::config::{HistoryConfig, valid_table_name};

/// The segment of visitors the table does not know.
pub const UNKNOWN_SEGMENT: &str = "unknown";

/// A history-table failure.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The CSV file could not be read.
    #[error("history file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A CSV line is malformed.
    #[error("history file {path} line {line}: {reason}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// PostgreSQL refused the connection or the query.
    #[error("history table in PostgreSQL: {0}")]
    Postgres(String),
}

/// One visitor's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// Visits before today.
    pub lifetime_visits: u64,
    /// `new`, `casual`, `loyal`, `vip`, …
    pub segment: String,
}

/// One version of the table, as lookups read it.
struct Index {
    /// Which version: 0 for the first, one more for each reload.
    generation: u64,
    bloom: BloomFilter,
    segments: FxHashMap<Box<str>, SmolStr>,
}

impl Index {
    fn new(rows: HashMap<String, HistoryRow>, generation: u64) -> Self {
        let mut bloom = BloomFilter::with_false_pos(0.01).expected_items(rows.len().max(1));
        for k in rows.keys() {
            bloom.insert(k.as_str());
        }
        let segments = rows
            .into_iter()
            .map(|(visitor, row)| (visitor.into_boxed_str(), SmolStr::new(row.segment)))
            .collect();
        Index {
            generation,
            bloom,
            segments,
        }
    }

    /// The segment of `visitor_id`, counted in `counts`.
    fn segment_of(&self, visitor_id: &str, counts: &Counts) -> SmolStr {
        counts.lookups.fetch_add(1, Ordering::Relaxed);
        if !self.bloom.contains(visitor_id) {
            counts.skipped.fetch_add(1, Ordering::Relaxed);
            return SmolStr::new_static(UNKNOWN_SEGMENT);
        }
        self.segments
            .get(visitor_id)
            .cloned()
            .unwrap_or_else(|| SmolStr::new_static(UNKNOWN_SEGMENT))
    }
}

/// Lookups and Bloom-filter skips of one reader. Each reader counts in its own cache line, so
/// workers looking up at once never contend for one.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Counts {
    lookups: AtomicU64,
    skipped: AtomicU64,
}

impl Counts {
    fn add(&self, other: &Counts) {
        for (to, from) in [
            (&self.lookups, &other.lookups),
            (&self.skipped, &other.skipped),
        ] {
            to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// The table, shared by every worker; swapped whole on reload.
pub struct History {
    index: RwLock<Arc<Index>>,
    /// The current index's generation, read without the lock so that readers notice a reload.
    generation: AtomicU64,
    /// The counts of lookups made through [`History::segment_of`] and of dropped readers.
    own: Arc<Counts>,
    /// The counts of live readers.
    readers: Mutex<Vec<Arc<Counts>>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("visitors", &self.len())
            .field("lookups", &self.lookups())
            .field("skip_rate", &self.skip_rate())
            .finish()
    }
}

/// One worker's view of the [`History`]: looks up without taking the table's lock or touching
/// memory another worker writes, and picks up a reloaded table at its next lookup (until then,
/// a reader that looks nothing up keeps the old table alive).
pub struct HistoryReader {
    history: Arc<History>,
    index: Arc<Index>,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for HistoryReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryReader")
            .field("generation", &self.index.generation)
            .field("counts", &self.counts)
            .finish()
    }
}

impl HistoryReader {
    /// The segment of `visitor_id`, as [`History::segment_of`] gives it.
    pub fn segment_of(&mut self, visitor_id: &str) -> SmolStr {
        if self.history.generation.load(Ordering::Acquire) != self.index.generation {
            self.index = self.history.current();
        }
        self.index.segment_of(visitor_id, &self.counts)
    }
}

impl Drop for HistoryReader {
    fn drop(&mut self) {
        let mut readers = self.history.lock_readers();
        self.history.own.add(&self.counts);
        readers.retain(|c| !Arc::ptr_eq(c, &self.counts));
    }
}

impl History {
    /// A table holding `rows`.
    pub fn new(rows: HashMap<String, HistoryRow>) -> Self {
        History {
            index: RwLock::new(Arc::new(Index::new(rows, 0))),
            generation: AtomicU64::new(0),
            own: Arc::default(),
            readers: Mutex::default(),
        }
    }

    /// Loads the table `config` names (the demo table when it names none).
    ///
    /// # Errors
    /// [`HistoryError`] when the file or database cannot be read.
    pub fn load(config: &HistoryConfig) -> Result<Self, HistoryError> {
        Ok(History::new(load_rows(config)?))
    }

    /// The segment of `visitor_id`, [`UNKNOWN_SEGMENT`] when the table has no entry. The Bloom
    /// filter answers "certainly not there" for most unknown visitors without a lookup. For
    /// lookups record by record, a [`HistoryReader`] per worker is cheaper.
    pub fn segment_of(&self, visitor_id: &str) -> SmolStr {
        self.current().segment_of(visitor_id, &self.own)
    }

    /// A reader for one worker's lookups; its counts join the table's.
    pub fn reader(self: &Arc<Self>) -> HistoryReader {
        let counts = Arc::<Counts>::default();
        self.lock_readers().push(Arc::clone(&counts));
        HistoryReader {
            history: Arc::clone(self),
            index: self.current(),
            counts,
        }
    }

    fn current(&self) -> Arc<Index> {
        Arc::clone(&self.index.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn lock_readers(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Counts>>> {
        self.readers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lookups and skips so far, every reader's included.
    fn counts(&self) -> Counts {
        let total = Counts::default();
        let readers = self.lock_readers();
        total.add(&self.own);
        readers.iter().for_each(|c| total.add(c));
        total
    }

    /// Visitors in the table.
    pub fn len(&self) -> usize {
        self.current().segments.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups asked for so far.
    pub fn lookups(&self) -> u64 {
        self.counts().lookups.into_inner()
    }

    /// The share of lookups the Bloom filter answered without touching the table.
    pub fn skip_rate(&self) -> f64 {
        let counts = self.counts();
        let n = counts.lookups.into_inner();
        if n == 0 {
            0.0
        } else {
            counts.skipped.into_inner() as f64 / n as f64
        }
    }

    /// Replaces the table.
    pub fn replace(&self, rows: HashMap<String, HistoryRow>) {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        let generation = index.generation + 1;
        *index = Arc::new(Index::new(rows, generation));
        // Readers compare this with their index's generation at every lookup.
        self.generation.store(generation, Ordering::Release);
    }

    /// Reloads the table every `config.reload` on a background thread until `self` is dropped
    /// everywhere else. A failed reload is logged and the old table kept.
    pub fn reload_every(self: &Arc<Self>, config: HistoryConfig) {
        if config.csv.is_none() && config.postgres.is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        let interval = config.reload.max(Duration::from_secs(1));
        let spawned = std::thread::Builder::new()
            .name("history-reload".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    let Some(history) = weak.upgrade() else { return };
                    match load_rows(&config) {
                        Ok(rows) => {
                            tracing::info!(visitors = rows.len(), "history table reloaded");
                            history.replace(rows);
                        }
                        Err(e) => tracing::warn!(error = %e, "history reload failed; keeping the old table"),
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the history reload thread");
        }
    }
}

fn load_rows(config: &HistoryConfig) -> Result<HashMap<String, HistoryRow>, HistoryError> {
    match (&config.csv, &config.postgres) {
        (Some(path), _) => read_csv(path),
        (None, Some(url)) => read_postgres(url, &config.table),
        (None, None) => Ok(demo_history().collect()),
    }
}

/// The demo table: for k = 0, 3, 6, … < 250000, visitor `v{k}` with lifetime_visits =
/// 1 + (k·7919) mod 50 and segment `["new","casual","loyal","vip"][k mod 4]`.
///
/// # Examples
/// ```
/// use clickpulse_job::history::demo_history;
/// let rows: Vec<_> = demo_history().take(2).collect();
/// assert_eq!(rows[0].0, "v0");
/// assert_eq!(rows[1].0, "v3");
/// assert_eq!(rows[1].1.segment, "vip");
/// assert_eq!(rows[1].1.lifetime_visits, 1 + (3 * 7919) % 50);
/// ```
pub fn demo_history() -> impl Iterator<Item = (String, HistoryRow)> {
    const SEGMENTS: [&str; 4] = ["new", "casual", "loyal", "vip"];
    (0u64..250_000).step_by(3).map(|k| {
        let row = HistoryRow {
            lifetime_visits: 1 + (k * 7919) % 50,
            segment: SEGMENTS[(k % 4) as usize].to_string(),
        };
        (format!("v{k}"), row)
    })
}

/// Writes the demo table as CSV (`visitor_id,lifetime_visits,segment`).
///
/// # Errors
/// The writer's I/O error.
pub fn write_demo_history_csv(mut out: impl Write) -> std::io::Result<()> {
    writeln!(out, "visitor_id,lifetime_visits,segment")?;
    for (visitor, row) in demo_history() {
        writeln!(out, "{visitor},{},{}", row.lifetime_visits, row.segment)?;
    }
    out.flush()
}

/// Reads a history CSV with header `visitor_id,lifetime_visits,segment`.
///
/// # Errors
/// [`HistoryError`] with the line of the first malformed row.
pub fn read_csv(path: &Path) -> Result<HashMap<String, HistoryRow>, HistoryError> {
    let io = |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut rows = HashMap::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        let csv_error = |reason: String| HistoryError::Csv {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        if i == 0 {
            if line.trim() != "visitor_id,lifetime_visits,segment" {
                return Err(csv_error(
                    "header must be `visitor_id,lifetime_visits,segment`".into(),
                ));
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [visitor, visits, segment] = fields.as_slice() else {
            return Err(csv_error(format!(
                "expected 3 fields, found {}",
                fields.len()
            )));
        };
        let lifetime_visits = visits
            .parse()
            .map_err(|_| csv_error(format!("lifetime_visits `{visits}` is not a whole number")))?;
        if visitor.is_empty() || segment.is_empty() {
            return Err(csv_error("visitor_id and segment must not be empty".into()));
        }
        rows.insert(
            visitor.to_string(),
            HistoryRow {
                lifetime_visits,
                segment: segment.to_string(),
            },
        );
    }
    Ok(rows)
}

/// Reads `table` (columns visitor_id text, lifetime_visits bigint, segment text) over `url`.
///
/// # Errors
/// [`HistoryError::Postgres`] when the connection or the query fails.
pub fn read_postgres(url: &str, table: &str) -> Result<HashMap<String, HistoryRow>, HistoryError> {
    if !valid_table_name(table) {
        return Err(HistoryError::Postgres(format!(
            "`{table}` is not a plain table name"
        )));
    }
    let pg = |e: postgres::Error| HistoryError::Postgres(e.to_string());
    let mut client = postgres::Client::connect(url, postgres::NoTls).map_err(pg)?;
    let query = format!("SELECT visitor_id, lifetime_visits::bigint, segment FROM {table}");
    let mut rows = HashMap::new();
    for row in client.query(query.as_str(), &[]).map_err(pg)? {
        let visitor: String = row.try_get(0).map_err(pg)?;
        let visits: i64 = row.try_get(1).map_err(pg)?;
        let segment: String = row.try_get(2).map_err(pg)?;
        let lifetime_visits = u64::try_from(visits).unwrap_or(0);
        rows.insert(
            visitor,
            HistoryRow {
                lifetime_visits,
                segment,
            },
        );
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_table_has_every_third_visitor_and_bloom_skips_the_rest() {
        let h = History::new(demo_history().collect());
        assert_eq!(h.len(), 83_334);
        assert_eq!(h.segment_of("v12"), "new");
        assert_eq!(h.segment_of("v6"), "loyal");
        for k in (1..3000).filter(|k| k % 3 != 0) {
            assert_eq!(h.segment_of(&format!("v{k}")), UNKNOWN_SEGMENT);
        }
        // 2 of 3000 lookups hit; nearly all misses are answered by the filter.
        assert!(h.skip_rate() > 0.95, "skip rate {}", h.skip_rate());
    }

    fn table(rows: &[(&str, &str)]) -> HashMap<String, HistoryRow> {
        rows.iter()
            .map(|(v, s)| {
                let row = HistoryRow {
                    lifetime_visits: 1,
                    segment: s.to_string(),
                };
                (v.to_string(), row)
            })
            .collect()
    }

    #[test]
    fn readers_see_reloads_and_their_counts_join_the_table_s_after_they_are_dropped() {
        let h = Arc::new(History::new(table(&[("v1", "vip")])));
        let mut a = h.reader();
        let mut b = h.reader();
        assert_eq!(a.segment_of("v1"), "vip");
        assert_eq!(b.segment_of("v2"), UNKNOWN_SEGMENT);
        h.replace(table(&[("v2", "new")]));
        // Both readers pick up the new table at their next lookup.
        assert_eq!(a.segment_of("v1"), UNKNOWN_SEGMENT);
        assert_eq!(b.segment_of("v2"), "new");
        assert_eq!(h.segment_of("v2"), "new");
        assert_eq!(h.lookups(), 5);
        drop(a);
        assert_eq!(h.lookups(), 5, "a dropped reader's lookups still count");
        h.replace(table(&[]));
        assert_eq!(b.segment_of("v2"), UNKNOWN_SEGMENT);
        assert_eq!(h.lookups(), 6);
        assert!(h.is_empty());
    }

    #[test]
    fn readers_on_several_threads_agree_with_the_table_and_count_every_lookup() {
        let h = Arc::new(History::new(demo_history().collect()));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let mut reader = h.reader();
                let model: HashMap<String, HistoryRow> = demo_history().collect();
                std::thread::spawn(move || {
                    for k in (t..30_000).step_by(4) {
                        let visitor = format!("v{k}");
                        let want = model.get(&visitor).map_or(UNKNOWN_SEGMENT, |r| &r.segment);
                        assert_eq!(reader.segment_of(&visitor), want, "{visitor}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.lookups(), 30_000);
        // A third of the visitors have history; the filter answers nearly all of the rest.
        let rate = h.skip_rate();
        assert!((0.6..0.67).contains(&rate), "skip rate {rate}");
    }

    #[test]
    fn csv_round_trip_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.csv");
        let mut buf = Vec::new();
        write_demo_history_csv(&mut buf).unwrap();
        std::fs::write(&path, &buf).unwrap();
        let rows = read_csv(&path).unwrap();
        assert_eq!(rows.len(), 83_334);
        assert_eq!(rows["v9"].segment, "casual");

        std::fs::write(&path, "visitor_id,lifetime_visits,segment\nv1,x,vip\n").unwrap();
        let err = read_csv(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("lifetime_visits"),
            "{err}"
        );
        std::fs::write(&path, "who,what\n").unwrap();
        assert!(read_csv(&path).unwrap_err().to_string().contains("header"));
    }

    #[test]
    fn postgres_rejects_unsafe_table_names_before_connecting() {
        let err = read_postgres("postgresql://nobody@127.0.0.1:1/x", "t; drop").unwrap_err();
        assert!(err.to_string().contains("plain table name"), "{err}");
    }
}
