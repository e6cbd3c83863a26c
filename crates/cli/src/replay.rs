//! `clickpulse replay`: clicks from a file into the embedded log, paced or as fast as possible.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clickpulse_connectors::log::LogWriter;
use clickpulse_events::{ClickEvent, Format, LineParser, msnbc};
use indicatif::{ProgressBar, ProgressStyle};

/// How fast to replay.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as possible.
    Unlimited,
    /// A steady number of events per second.
    Rate(f64),
    /// The events' own clock sped up by this factor (60 = one hour of clicks per minute).
    Speed(f64),
}

/// What a replay did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReplaySummary {
    pub events: u64,
    pub bad_lines: u64,
    pub elapsed_s: f64,
    pub events_per_s: f64,
}

/// Replays events into `writer` at `pace`, calling `keep_going` between chunks.
pub struct Replayer<'a> {
    pub writer: &'a LogWriter,
    pub pace: Pace,
    pub chunk: usize,
    pub progress: Option<ProgressBar>,
}

impl Replayer<'_> {
    /// Sends every event of `events`; stops early when `stop()` says so.
    pub fn run(
        &self,
        events: impl Iterator<Item = ClickEvent>,
        mut stop: impl FnMut() -> bool,
    ) -> anyhow::Result<ReplaySummary> {
        let started = Instant::now();
        let mut first_ts: Option<u64> = None;
        let mut buf: Vec<ClickEvent> = Vec::with_capacity(self.chunk);
        let mut sent = 0u64;
        for e in events {
            let due = self.due(sent, e.ts_ms, &mut first_ts);
            // Flush before sleeping so that paced events reach the log on time.
            // Small gaps are not worth a sleep (or a tiny append): wait for 5 ms of backlog.
            if let Some(due) = due.filter(|d| *d > started.elapsed() + Duration::from_millis(5)) {
                self.flush(&mut buf, &mut sent)?;
                // Sleep in short steps so that a stop is seen promptly.
                while started.elapsed() < due && !stop() {
                    let wait = due.saturating_sub(started.elapsed());
                    std::thread::sleep(wait.min(Duration::from_millis(200)));
                }
                if stop() {
                    break;
                }
            }
            buf.push(e);
            if buf.len() >= self.chunk {
                self.flush(&mut buf, &mut sent)?;
                if stop() {
                    break;
                }
            }
        }
        self.flush(&mut buf, &mut sent)?;
        let elapsed = started.elapsed().as_secs_f64();
        Ok(ReplaySummary {
            events: sent,
            bad_lines: 0,
            elapsed_s: elapsed,
            events_per_s: sent as f64 / elapsed.max(1e-9),
        })
    }

    /// When event number `n` (with time `ts`) is due, relative to the start; `None` = now.
    fn due(&self, n: u64, ts: u64, first: &mut Option<u64>) -> Option<Duration> {
        match self.pace {
            Pace::Unlimited => None,
            Pace::Rate(r) => Some(Duration::from_secs_f64(n as f64 / r)),
            Pace::Speed(s) => {
                let base = *first.get_or_insert(ts);
                Some(Duration::from_secs_f64(
                    ts.saturating_sub(base) as f64 / 1000.0 / s,
                ))
            }
        }
    }

    fn flush(&self, buf: &mut Vec<ClickEvent>, sent: &mut u64) -> anyhow::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.writer.append(buf).context("appending to the log")?;
        *sent += buf.len() as u64;
        if let Some(p) = &self.progress {
            p.inc(buf.len() as u64);
        }
        buf.clear();
        Ok(())
    }
}

/// A progress bar for `total` events (a spinner when unknown).
pub fn progress_bar(total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let template = if total.is_some() {
        "{bar:40} {pos}/{len} events  {per_sec}  ETA {eta}"
    } else {
        "{spinner} {pos} events  {per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// The input file's events: the MSNBC stream in canonical order, or a line-format file whose
/// bad lines are counted and written to `dead_letters` with their position.
pub fn read_input(
    path: &Path,
    format: Format,
    dead_letters: &Path,
) -> anyhow::Result<(Box<dyn Iterator<Item = ClickEvent>>, Option<u64>, BadLines)> {
    if format == Format::Msnbc {
        let stream = msnbc::load(path).with_context(|| format!("reading {}", path.display()))?;
        let total = stream.len() as u64;
        let events: Vec<ClickEvent> = stream.iter().collect();
        return Ok((Box::new(events.into_iter()), Some(total), BadLines::none()));
    }
    let line_format = format
        .line_format()
        .context("this format is not line-based")?;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let parser = LineParser::new(std::io::BufReader::new(file), line_format);
    let bad = BadLines::new(dead_letters.to_path_buf());
    let sink = bad.clone();
    let events = parser.filter_map(move |r| match r {
        Ok(e) => Some(e),
        Err(e) => {
            sink.record(&e.to_string());
            None
        }
    });
    Ok((Box::new(events), None, bad))
}

/// Bad input lines: counted, logged with their position and appended to a dead-letter file.
#[derive(Clone)]
pub struct BadLines {
    inner: std::sync::Arc<std::sync::Mutex<(u64, Option<PathBuf>)>>,
}

impl BadLines {
    fn none() -> Self {
        BadLines {
            inner: std::sync::Arc::new(std::sync::Mutex::new((0, None))),
        }
    }

    fn new(path: PathBuf) -> Self {
        BadLines {
            inner: std::sync::Arc::new(std::sync::Mutex::new((0, Some(path)))),
        }
    }

    fn record(&self, error: &str) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.0 += 1;
        if guard.0 <= 10 {
            tracing::warn!(%error, "bad input line (kept in the dead-letter file)");
        }
        if let Some(path) = &guard.1 {
            let line = serde_json::json!({ "error": error });
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                tracing::error!(path = %path.display(), error = %e, "could not write the dead-letter file");
            }
        }
    }

    /// How many bad lines there were.
    pub fn count(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}
