//! The visitor-history table `segments` joins closed sessions with: loaded from CSV or
//! PostgreSQL, reloaded on a schedule, with a Bloom filter in front so that most sessions of
//! visitors without history skip the table lookup.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fastbloom::BloomFilter;

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

struct Index {
    bloom: BloomFilter,
    rows: HashMap<String, HistoryRow>,
}

impl Index {
    fn new(rows: HashMap<String, HistoryRow>) -> Self {
        let mut bloom = BloomFilter::with_false_pos(0.01).expected_items(rows.len().max(1));
        for k in rows.keys() {
            bloom.insert(k.as_str());
        }
        Index { bloom, rows }
    }
}

/// The table, shared by every worker; swapped whole on reload.
pub struct History {
    index: RwLock<Arc<Index>>,
    lookups: AtomicU64,
    skipped: AtomicU64,
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

impl History {
    /// A table holding `rows`.
    pub fn new(rows: HashMap<String, HistoryRow>) -> Self {
        History {
            index: RwLock::new(Arc::new(Index::new(rows))),
            lookups: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
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
    /// filter answers "certainly not there" for most unknown visitors without a lookup.
    pub fn segment_of(&self, visitor_id: &str) -> String {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let index = Arc::clone(&self.index.read().unwrap_or_else(|p| p.into_inner()));
        if !index.bloom.contains(visitor_id) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return UNKNOWN_SEGMENT.to_string();
        }
        index
            .rows
            .get(visitor_id)
            .map_or_else(|| UNKNOWN_SEGMENT.to_string(), |r| r.segment.clone())
    }

    /// Visitors in the table.
    pub fn len(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .rows
            .len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups asked for so far.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// The share of lookups the Bloom filter answered without touching the table.
    pub fn skip_rate(&self) -> f64 {
        let n = self.lookups();
        if n == 0 {
            0.0
        } else {
            self.skipped.load(Ordering::Relaxed) as f64 / n as f64
        }
    }

    /// Replaces the table.
    pub fn replace(&self, rows: HashMap<String, HistoryRow>) {
        let fresh = Arc::new(Index::new(rows));
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = fresh;
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
