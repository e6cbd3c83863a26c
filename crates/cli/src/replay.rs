//! `clickpulse replay`: clicks from a file into the embedded log or a Kafka topic, paced or as
//! fast as possible.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use clickpulse_connectors::kafka::{KafkaClickWriter, KafkaUrl, ensure_topic};
use clickpulse_connectors::log::LogWriter;
use clickpulse_events::{ClickEvent, Format, LineParser, msnbc};
use clickpulse_log::{Durability, Log, LogOptions};
use indicatif::{ProgressBar, ProgressStyle};

/// How long creating the Kafka topic and reading its metadata may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// `clickpulse replay`
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The input file.
    #[arg(long)]
    input: PathBuf,
    /// msnbc, tsv, csv or ndjson. Default: msnbc for *.seq / *.seq.gz, else from the extension.
    #[arg(long)]
    format: Option<Format>,
    /// Replay into Kafka instead of the embedded log: kafka://HOST:PORT/TOPIC (without a topic:
    /// --topic). The topic is created with --partitions partitions when missing.
    #[arg(long, value_name = "URL", value_parser = KafkaUrl::parse)]
    to: Option<KafkaUrl>,
    /// The embedded log directory (not with --to).
    #[arg(long, default_value = "clickpulse-data/log", conflicts_with = "to")]
    log: PathBuf,
    /// The topic (created with --partitions partitions when missing).
    #[arg(long, default_value = "clicks")]
    topic: String,
    /// Partitions of a new topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Replay only the first N events (of the MSNBC stream in its canonical order, or of the
    /// file's good lines).
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// A steady rate in events/s (default: as fast as possible).
    #[arg(long, conflicts_with = "speed")]
    rate: Option<f64>,
    /// Replay at the events' own clock sped up by this factor (60 = an hour of clicks a minute).
    #[arg(long)]
    speed: Option<f64>,
    /// When embedded-log appends are fsynced: none, batch (every append) or an interval such as
    /// 100ms (not with --to: the broker decides).
    #[arg(long, default_value = "batch", conflicts_with = "to")]
    durability: String,
    /// Where unparseable lines are kept (JSON Lines with their position).
    #[arg(long, default_value = "dead-letters.jsonl")]
    dead_letters: PathBuf,
}

/// Where a replay writes its clicks.
pub trait ClickWriter {
    /// Writes `events` after those written before. They may still be on their way when this
    /// returns: [`flush`](Self::flush) waits until they are stored.
    ///
    /// # Errors
    /// The log's or the broker's error, with what was being written to.
    fn write_clicks(&mut self, events: &[ClickEvent]) -> anyhow::Result<()>;

    /// Returns once every event written so far is stored.
    ///
    /// # Errors
    /// The log's or the broker's error, with what was being written to.
    fn flush(&mut self) -> anyhow::Result<()>;
}

impl ClickWriter for LogWriter {
    /// Appends at once: a log append returns when the events are stored.
    fn write_clicks(&mut self, events: &[ClickEvent]) -> anyhow::Result<()> {
        self.append(events).context("appending to the log")?;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Kafka events sent but not yet known to be acknowledged, at most: waiting for the broker
/// after every chunk would cost a round trip and a linger each time (94k events/s into tansu
/// with 10,000-event chunks, against 650k with this).
const KAFKA_UNACKED_EVENTS: usize = 250_000;
/// The longest a Kafka delivery error may go unnoticed while a paced replay trickles.
const KAFKA_ACK_INTERVAL: Duration = Duration::from_secs(1);

/// A Kafka producer that waits for the broker's acknowledgements every
/// [`KAFKA_UNACKED_EVENTS`] events or [`KAFKA_ACK_INTERVAL`], whichever comes first, and on
/// [`flush`](ClickWriter::flush). Between those, events leave by themselves after the
/// producer's linger (20 ms), so paced events still reach the broker on time.
pub struct KafkaReplayWriter {
    writer: KafkaClickWriter,
    unacked: usize,
    last_ack: Instant,
}

impl KafkaReplayWriter {
    /// Wraps `writer`.
    pub fn new(writer: KafkaClickWriter) -> Self {
        KafkaReplayWriter {
            writer,
            unacked: 0,
            last_ack: Instant::now(),
        }
    }
}

impl ClickWriter for KafkaReplayWriter {
    fn write_clicks(&mut self, events: &[ClickEvent]) -> anyhow::Result<()> {
        for event in events {
            self.writer
                .send(event)
                .with_context(|| format!("writing to the Kafka topic `{}`", self.writer.topic()))?;
        }
        self.unacked += events.len();
        if self.unacked >= KAFKA_UNACKED_EVENTS || self.last_ack.elapsed() >= KAFKA_ACK_INTERVAL {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.unacked = 0;
        self.last_ack = Instant::now();
        self.writer
            .flush()
            .with_context(|| format!("writing to the Kafka topic `{}`", self.writer.topic()))?;
        Ok(())
    }
}

/// Parses `none`, `batch` or a duration.
fn parse_durability(s: &str) -> anyhow::Result<Durability> {
    match s {
        "none" => Ok(Durability::None),
        "batch" => Ok(Durability::EveryBatch),
        other => humantime::parse_duration(other)
            .map(Durability::Interval)
            .with_context(|| {
                format!("--durability `{other}`: expected none, batch or a duration like 100ms")
            }),
    }
}

/// The input's format: `given`, else guessed from the file name.
fn format_for(path: &Path, given: Option<Format>) -> anyhow::Result<Format> {
    if let Some(f) = given {
        return Ok(f);
    }
    let name = path.to_string_lossy();
    let guess = [
        (".seq.gz", Format::Msnbc),
        (".seq", Format::Msnbc),
        (".tsv", Format::Tsv),
        (".csv", Format::Csv),
        (".ndjson", Format::Ndjson),
        (".jsonl", Format::Ndjson),
    ];
    guess
        .iter()
        .find(|(ext, _)| name.ends_with(ext))
        .map(|(_, f)| *f)
        .with_context(|| {
            format!("cannot tell the format of {name}: pass --format msnbc|tsv|csv|ndjson")
        })
}

fn pace_of(rate: Option<f64>, speed: Option<f64>) -> anyhow::Result<Pace> {
    match (rate, speed) {
        (Some(r), _) if r > 0.0 => Ok(Pace::Rate(r)),
        (_, Some(s)) if s > 0.0 => Ok(Pace::Speed(s)),
        (None, None) => Ok(Pace::Unlimited),
        _ => anyhow::bail!("--rate and --speed must be positive"),
    }
}

/// Opens the destination: the embedded log's topic, or the Kafka topic (created when missing).
/// Returns the writer and a description for the summary.
fn open_destination(args: &ReplayArgs) -> anyhow::Result<(Box<dyn ClickWriter>, String)> {
    if let Some(url) = &args.to {
        let brokers = url.brokers();
        let topic = url.topic_or(&args.topic);
        ensure_topic(&brokers, topic, args.partitions, KAFKA_TIMEOUT)
            .with_context(|| format!("creating the topic `{topic}` on {brokers}"))?;
        let writer = KafkaClickWriter::builder(&brokers, topic)
            .metadata_timeout(KAFKA_TIMEOUT)
            .build()
            .with_context(|| format!("connecting to {brokers}"))?;
        let what = format!(
            "kafka://{brokers}/{topic} ({} partitions)",
            writer.partitions()
        );
        return Ok((Box::new(KafkaReplayWriter::new(writer)), what));
    }
    let durability = parse_durability(&args.durability)?;
    let log = Log::open(&args.log, LogOptions::default().durability(durability))
        .with_context(|| format!("opening the log at {}", args.log.display()))?;
    let topic = match log.topic(&args.topic) {
        Ok(t) => t,
        Err(_) => log.create_topic(&args.topic, args.partitions)?,
    };
    let what = format!("{}/{}", args.log.display(), args.topic);
    Ok((Box::new(LogWriter::new(topic)), what))
}

/// Runs `clickpulse replay`.
pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let format = format_for(&args.input, args.format)?;
    let pace = pace_of(args.rate, args.speed)?;
    let (mut writer, destination) = open_destination(&args)?;
    let limit = args.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let (events, total, bad) = read_input(&args.input, format, &args.dead_letters, limit)?;
    let progress = progress_bar(total);
    let mut replayer = Replayer {
        writer: writer.as_mut(),
        pace,
        chunk: 10_000,
        progress: Some(progress.clone()),
    };
    let mut summary = replayer.run(events, || false)?;
    progress.finish();
    summary.bad_lines = bad.count();
    println!(
        "replayed {} events into {destination} ({} bad lines{}) in {:.2} s: {:.0} events/s",
        summary.events,
        summary.bad_lines,
        if summary.bad_lines > 0 {
            format!(", kept in {}", args.dead_letters.display())
        } else {
            String::new()
        },
        summary.elapsed_s,
        summary.events_per_s
    );
    Ok(())
}

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

/// Replays events into `writer` at `pace`, asking `stop` between chunks.
pub struct Replayer<'a> {
    pub writer: &'a mut dyn ClickWriter,
    pub pace: Pace,
    pub chunk: usize,
    pub progress: Option<ProgressBar>,
}

impl Replayer<'_> {
    /// Writes every event of `events` and flushes the writer; stops early when `stop()` says
    /// so. The progress bar counts events handed to the writer.
    pub fn run(
        &mut self,
        events: impl Iterator<Item = ClickEvent>,
        mut stop: impl FnMut() -> bool,
    ) -> anyhow::Result<ReplaySummary> {
        let started = Instant::now();
        let mut first_ts: Option<u64> = None;
        let mut buf: Vec<ClickEvent> = Vec::with_capacity(self.chunk);
        let mut sent = 0u64;
        for e in events {
            let due = self.due(sent, e.ts_ms, &mut first_ts);
            // Write before sleeping so that paced events reach the log on time.
            // Small gaps are not worth a sleep (or a tiny append): wait for 5 ms of backlog.
            if let Some(due) = due.filter(|d| *d > started.elapsed() + Duration::from_millis(5)) {
                self.write_chunk(&mut buf, &mut sent)?;
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
                self.write_chunk(&mut buf, &mut sent)?;
                if stop() {
                    break;
                }
            }
        }
        self.write_chunk(&mut buf, &mut sent)?;
        self.writer.flush()?;
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

    fn write_chunk(&mut self, buf: &mut Vec<ClickEvent>, sent: &mut u64) -> anyhow::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.writer.write_clicks(buf)?;
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

/// The input file's events, the first `limit` when given: the MSNBC stream in canonical
/// order, or a line-format file whose bad lines are counted and written to `dead_letters` with
/// their position.
pub fn read_input(
    path: &Path,
    format: Format,
    dead_letters: &Path,
    limit: Option<usize>,
) -> anyhow::Result<(Box<dyn Iterator<Item = ClickEvent>>, Option<u64>, BadLines)> {
    let limit = limit.unwrap_or(usize::MAX);
    if format == Format::Msnbc {
        let stream = msnbc::load(path).with_context(|| format!("reading {}", path.display()))?;
        let events: Vec<ClickEvent> = stream.iter().take(limit).collect();
        let total = events.len() as u64;
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
    Ok((Box::new(events.take(limit)), None, bad))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps every chunk it is given; fails on the chunk numbered `fail_at`.
    #[derive(Default)]
    struct Chunks {
        chunks: Vec<Vec<ClickEvent>>,
        fail_at: Option<usize>,
        flushes: usize,
    }

    impl ClickWriter for Chunks {
        fn write_clicks(&mut self, events: &[ClickEvent]) -> anyhow::Result<()> {
            if self.fail_at == Some(self.chunks.len()) {
                anyhow::bail!("broker gone");
            }
            self.chunks.push(events.to_vec());
            Ok(())
        }

        fn flush(&mut self) -> anyhow::Result<()> {
            self.flushes += 1;
            Ok(())
        }
    }

    fn clicks(n: u64, step_ms: u64) -> Vec<ClickEvent> {
        (0..n)
            .map(|i| ClickEvent::page_view(1_000 + i * step_ms, format!("v{i}"), "/"))
            .collect()
    }

    fn replayer(writer: &mut Chunks, pace: Pace) -> Replayer<'_> {
        Replayer {
            writer,
            pace,
            chunk: 4,
            progress: None,
        }
    }

    #[test]
    fn every_event_is_written_in_order_in_chunks() {
        let mut writer = Chunks::default();
        let events = clicks(10, 1);
        let summary = replayer(&mut writer, Pace::Unlimited)
            .run(events.clone().into_iter(), || false)
            .unwrap();
        assert_eq!(summary.events, 10);
        let sizes: Vec<usize> = writer.chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(writer.chunks.concat(), events);
        assert_eq!(writer.flushes, 1, "flushed once, at the end");
    }

    #[test]
    fn a_stop_ends_the_replay_after_the_chunk_in_progress() {
        let mut writer = Chunks::default();
        let summary = replayer(&mut writer, Pace::Unlimited)
            .run(clicks(10, 1).into_iter(), || true)
            .unwrap();
        assert_eq!(summary.events, 4);
        assert_eq!(writer.flushes, 1, "what was written is flushed");
    }

    #[test]
    fn a_paced_replay_takes_the_events_own_time() {
        let mut writer = Chunks::default();
        // 3 events 100 ms apart at speed 2: the last is due 100 ms after the first.
        let summary = replayer(&mut writer, Pace::Speed(2.0))
            .run(clicks(3, 100).into_iter(), || false)
            .unwrap();
        assert_eq!(summary.events, 3);
        assert!(summary.elapsed_s >= 0.09, "{}", summary.elapsed_s);
        // Events due later than 5 ms are flushed apart, so each arrives on time.
        assert_eq!(writer.chunks.len(), 3);
    }

    #[test]
    fn a_write_error_stops_the_replay() {
        let mut writer = Chunks {
            fail_at: Some(1),
            ..Chunks::default()
        };
        let err = replayer(&mut writer, Pace::Unlimited)
            .run(clicks(10, 1).into_iter(), || false)
            .unwrap_err();
        assert!(err.to_string().contains("broker gone"), "{err}");
        assert_eq!(writer.chunks.len(), 1);
    }

    #[test]
    fn limits_and_formats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clicks.tsv");
        std::fs::write(&path, "1\tv1\t/a\nnot a click\n2\tv2\t/b\n3\tv3\t/c\n").unwrap();
        let format = format_for(&path, None).unwrap();
        let dead = dir.path().join("dead.jsonl");
        let (events, total, bad) = read_input(&path, format, &dead, Some(2)).unwrap();
        let urls: Vec<String> = events.map(|e| e.url).collect();
        assert_eq!(
            (urls, total, bad.count()),
            (vec!["/a".into(), "/b".into()], None, 1)
        );
        assert!(format_for(Path::new("clicks.txt"), None).is_err());
        assert!(pace_of(Some(0.0), None).is_err());
        assert!(matches!(pace_of(None, Some(60.0)), Ok(Pace::Speed(s)) if s == 60.0));
    }
}
