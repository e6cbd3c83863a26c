//! `clickpulse replay`: clicks from a file into the embedded log or a Kafka topic, paced or as
//! fast as possible, in bounded memory.
//!
//! A reading thread decodes the file (and, for MSNBC, puts the clicks in canonical order) a
//! chunk at a time; the calling thread encodes and writes them. At most a few chunks are in
//! flight, so memory does not grow with the file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use clickpulse_connectors::kafka::{KafkaClickWriter, KafkaUrl, ValueFormat, ensure_topic};
use clickpulse_connectors::log::{LogBatches, LogWriter};
use clickpulse_events::msnbc::{self, MsnbcClick, MsnbcFile};
use clickpulse_events::{ClickEvent, Format, LineParser};
use clickpulse_log::{Durability, Log, LogOptions};
use indicatif::{ProgressBar, ProgressStyle};

/// How long creating the Kafka topic and reading its metadata may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);
/// The default durability's group commit: at least every 100 ms and every 8 MiB.
const GROUP_COMMIT: Durability = Durability::Group {
    interval: Duration::from_millis(100),
    bytes: 8 << 20,
};
/// Clicks the reading thread hands over at once, and chunks it may have in flight.
const READ_CHUNK: usize = 8_192;
const READ_AHEAD_CHUNKS: usize = 2;

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
    /// Record values written to Kafka (with --to): json (what users' producers write) or
    /// binary (clickpulse's binary click encoding: fewer bytes, cheaper to decode; `run
    /// --input-kafka` reads both). Default: json.
    #[arg(long, value_parser = clap::value_parser!(ValueFormat))]
    value_format: Option<ValueFormat>,
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
    /// When embedded-log appends are fsynced: group (one group commit every 8 MiB across
    /// partitions or 100 ms, and at the end), batch (every append), none (never), or an
    /// interval such as 100ms (in the background). With group, batch and an interval, every
    /// event of a replay that ends successfully is on stable storage. Not with --to: the broker
    /// decides.
    #[arg(long, default_value = "group", conflicts_with = "to")]
    durability: String,
    /// Where unparseable lines are kept (JSON Lines with their position).
    #[arg(long, default_value = "dead-letters.jsonl")]
    dead_letters: PathBuf,
    /// Print the summary as one JSON object (events, wall and append times, fsyncs, peak
    /// memory) instead of a sentence.
    #[arg(long)]
    json: bool,
}

/// Something replayed: a click, whole or compact, with its event time (for pacing).
pub trait Timed {
    /// The event time, ms since the Unix epoch.
    fn ts_ms(&self) -> u64;
}

impl Timed for ClickEvent {
    fn ts_ms(&self) -> u64 {
        self.ts_ms
    }
}

impl Timed for MsnbcClick {
    fn ts_ms(&self) -> u64 {
        MsnbcClick::ts_ms(self)
    }
}

/// Where a replay writes its clicks.
pub trait ClickWriter<T = ClickEvent> {
    /// Writes `clicks` after those written before. They may still be on their way when this
    /// returns: [`flush`](Self::flush) waits until they are stored.
    ///
    /// # Errors
    /// The log's or the broker's error, with what was being written to.
    fn write_clicks(&mut self, clicks: &[T]) -> anyhow::Result<()>;

    /// Returns once every click written so far is stored.
    ///
    /// # Errors
    /// The log's or the broker's error, with what was being written to.
    fn flush(&mut self) -> anyhow::Result<()>;
}

/// The embedded log as a replay's destination: clicks are encoded into reused per-partition
/// batches, MSNBC clicks without building events, and [`flush`](ClickWriter::flush) syncs the
/// topic when the durability promises stable storage.
pub struct LogReplayWriter {
    writer: LogWriter,
    batches: LogBatches,
    sync_on_flush: bool,
    /// The MSNBC file whose compact clicks are written (for their urls).
    msnbc: Option<MsnbcFile>,
    visitor: String,
}

impl LogReplayWriter {
    /// Writes into `writer`'s topic; `sync_on_flush`: whether a flush fsyncs.
    pub fn new(writer: LogWriter, sync_on_flush: bool) -> Self {
        LogReplayWriter {
            batches: writer.batches(),
            writer,
            sync_on_flush,
            msnbc: None,
            visitor: String::with_capacity(16),
        }
    }

    /// Writes the compact clicks of `file`.
    pub fn with_msnbc(mut self, file: MsnbcFile) -> Self {
        self.msnbc = Some(file);
        self
    }

    fn append(&mut self) -> anyhow::Result<()> {
        self.writer
            .append_batches(&mut self.batches)
            .context("appending to the log")?;
        Ok(())
    }
}

impl ClickWriter for LogReplayWriter {
    fn write_clicks(&mut self, events: &[ClickEvent]) -> anyhow::Result<()> {
        for e in events {
            self.batches.push(e).context("appending to the log")?;
        }
        self.append()
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.sync_on_flush {
            self.writer.topic().sync().context("syncing the log")?;
        }
        Ok(())
    }
}

impl ClickWriter<MsnbcClick> for LogReplayWriter {
    fn write_clicks(&mut self, clicks: &[MsnbcClick]) -> anyhow::Result<()> {
        let file = self
            .msnbc
            .as_ref()
            .context("no MSNBC file to take urls from")?;
        for c in clicks {
            c.write_visitor_id(&mut self.visitor);
            let url = file.url(c.category_id()).unwrap_or_default();
            self.batches
                .push_page_view(c.ts_ms(), &self.visitor, url)
                .context("appending to the log")?;
        }
        self.append()
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        ClickWriter::<ClickEvent>::flush(self)
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
    /// The MSNBC file whose compact clicks are written (for their urls).
    msnbc: Option<MsnbcFile>,
}

impl KafkaReplayWriter {
    /// Wraps `writer`.
    pub fn new(writer: KafkaClickWriter) -> Self {
        KafkaReplayWriter {
            writer,
            unacked: 0,
            last_ack: Instant::now(),
            msnbc: None,
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
            ClickWriter::<ClickEvent>::flush(self)?;
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

impl ClickWriter<MsnbcClick> for KafkaReplayWriter {
    fn write_clicks(&mut self, clicks: &[MsnbcClick]) -> anyhow::Result<()> {
        let file = self
            .msnbc
            .as_ref()
            .context("no MSNBC file to take urls from")?;
        let events: Vec<ClickEvent> = clicks.iter().map(|c| file.event(c)).collect();
        ClickWriter::<ClickEvent>::write_clicks(self, &events)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        ClickWriter::<ClickEvent>::flush(self)
    }
}

/// Parses `group`, `none`, `batch` or a duration.
fn parse_durability(s: &str) -> anyhow::Result<Durability> {
    match s {
        "group" => Ok(GROUP_COMMIT),
        "none" => Ok(Durability::None),
        "batch" => Ok(Durability::EveryBatch),
        other => humantime::parse_duration(other)
            .ok()
            .filter(|d| !d.is_zero())
            .map(Durability::Interval)
            .with_context(|| {
                format!(
                    "--durability `{other}`: expected group, batch, none or a positive duration like 100ms"
                )
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

/// A replay's destination.
enum Destination {
    Log(LogReplayWriter, Log),
    Kafka(KafkaReplayWriter),
}

/// Opens the destination: the embedded log's topic, or the Kafka topic (created when missing).
/// Returns it and a description for the summary.
fn open_destination(args: &ReplayArgs) -> anyhow::Result<(Destination, String)> {
    if let Some(url) = &args.to {
        let brokers = url.brokers();
        let topic = url.topic_or(&args.topic);
        ensure_topic(&brokers, topic, args.partitions, KAFKA_TIMEOUT)
            .with_context(|| format!("creating the topic `{topic}` on {brokers}"))?;
        let writer = KafkaClickWriter::builder(&brokers, topic)
            .metadata_timeout(KAFKA_TIMEOUT)
            .value_format(args.value_format.unwrap_or_default())
            .build()
            .with_context(|| format!("connecting to {brokers}"))?;
        let what = format!(
            "kafka://{brokers}/{topic} ({} partitions)",
            writer.partitions()
        );
        return Ok((Destination::Kafka(KafkaReplayWriter::new(writer)), what));
    }
    if args.value_format.is_some() {
        anyhow::bail!("--value-format applies to Kafka only: use it with --to kafka://…");
    }
    let durability = parse_durability(&args.durability)?;
    let log = Log::open(&args.log, LogOptions::default().durability(durability))
        .with_context(|| format!("opening the log at {}", args.log.display()))?;
    let topic = match log.topic(&args.topic) {
        Ok(t) => t,
        Err(_) => log.create_topic(&args.topic, args.partitions)?,
    };
    let what = format!("{}/{}", args.log.display(), args.topic);
    let sync_on_flush = durability != Durability::None;
    let writer = LogReplayWriter::new(LogWriter::new(topic), sync_on_flush);
    Ok((Destination::Log(writer, log), what))
}

/// Runs `clickpulse replay`.
pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let format = format_for(&args.input, args.format)?;
    let pace = pace_of(args.rate, args.speed)?;
    let (mut destination, what) = open_destination(&args)?;
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut summary = if format == Format::Msnbc {
        let file = msnbc::scan(&args.input)
            .with_context(|| format!("reading {}", args.input.display()))?;
        let total = file.len().min(limit);
        let clicks = file
            .clicks()
            .with_context(|| format!("reading {}", args.input.display()))?
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|c| c.context("reading the MSNBC file"));
        let clicks = ReadAhead::start(clicks)?;
        match &mut destination {
            Destination::Log(writer, _) => {
                writer.msnbc = Some(file);
                replay(writer, clicks, pace, Some(total))?
            }
            Destination::Kafka(writer) => {
                writer.msnbc = Some(file);
                replay(writer, clicks, pace, Some(total))?
            }
        }
    } else {
        let (events, bad) = read_lines(&args.input, format, &args.dead_letters)?;
        let events = events.take(usize::try_from(limit).unwrap_or(usize::MAX));
        let events = ReadAhead::start(events.map(Ok))?;
        let mut summary = match &mut destination {
            Destination::Log(writer, _) => replay(writer, events, pace, None)?,
            Destination::Kafka(writer) => replay(writer, events, pace, None)?,
        };
        summary.bad_lines = bad.count();
        summary
    };
    summary.wall_s = started.elapsed().as_secs_f64();
    summary.events_per_s = summary.events as f64 / summary.wall_s.max(1e-9);
    if let Destination::Log(_, log) = &destination {
        summary.fsyncs = Some(log.fsyncs());
    }
    summary.peak_rss_bytes = crate::glue::peak_rss_bytes();
    summary.peak_alloc_bytes = crate::alloc::peak_committed_bytes();
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
    println!(
        "replayed {} events into {what} ({} bad lines{}) in {:.2} s: {:.0} events/s \
         (appends alone {:.0} events/s{})",
        summary.events,
        summary.bad_lines,
        if summary.bad_lines > 0 {
            format!(", kept in {}", args.dead_letters.display())
        } else {
            String::new()
        },
        summary.wall_s,
        summary.events_per_s,
        summary.write_events_per_s,
        summary
            .fsyncs
            .map(|n| format!(", {n} fsyncs"))
            .unwrap_or_default(),
    );
    Ok(())
}

/// Replays `clicks` into `writer` with a progress bar; the read error, if reading failed.
fn replay<T: Timed + Send + 'static>(
    writer: &mut dyn ClickWriter<T>,
    mut clicks: ReadAhead<T>,
    pace: Pace,
    total: Option<u64>,
) -> anyhow::Result<ReplaySummary> {
    let progress = progress_bar(total);
    let mut replayer = Replayer {
        writer,
        pace,
        chunk: 10_000,
        progress: Some(progress.clone()),
    };
    let summary = replayer.run(&mut clicks, || false);
    progress.finish();
    // A read error explains a write error that followed it, so it goes first.
    clicks.finish()?;
    summary
}

/// Items read on a thread of their own, [`READ_CHUNK`] at a time, at most
/// [`READ_AHEAD_CHUNKS`] ahead of their consumer. Iterating yields them until the input ends
/// or fails; [`finish`](Self::finish) tells which.
pub struct ReadAhead<T> {
    chunks: Option<mpsc::Receiver<anyhow::Result<Vec<T>>>>,
    current: std::vec::IntoIter<T>,
    error: Option<anyhow::Error>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> ReadAhead<T> {
    /// Starts reading `items` on a new thread.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(
        items: impl Iterator<Item = anyhow::Result<T>> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(READ_AHEAD_CHUNKS);
        let thread = std::thread::Builder::new()
            .name("replay-read".into())
            .spawn(move || read_chunks(items, &tx))
            .context("starting the reading thread")?;
        Ok(ReadAhead {
            chunks: Some(rx),
            current: Vec::new().into_iter(),
            error: None,
            thread: Some(thread),
        })
    }

    /// Stops reading; the read error, if there was one.
    ///
    /// # Errors
    /// What reading failed with.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.stop();
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn stop(&mut self) {
        // Dropping the receiver makes the thread's next send fail: it ends.
        self.chunks = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            self.error
                .get_or_insert_with(|| anyhow::anyhow!("the reading thread panicked"));
        }
    }
}

impl<T> Drop for ReadAhead<T> {
    fn drop(&mut self) {
        self.chunks = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_chunks<T>(
    items: impl Iterator<Item = anyhow::Result<T>>,
    tx: &mpsc::SyncSender<anyhow::Result<Vec<T>>>,
) {
    let mut chunk = Vec::with_capacity(READ_CHUNK);
    for item in items {
        match item {
            Ok(item) => chunk.push(item),
            Err(e) => {
                let _ = tx.send(Ok(chunk)).and_then(|()| tx.send(Err(e)));
                return;
            }
        }
        if chunk.len() == READ_CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(READ_CHUNK));
            if tx.send(Ok(full)).is_err() {
                return;
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(Ok(chunk));
    }
}

impl<T> Iterator for ReadAhead<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            match self.chunks.as_ref()?.recv() {
                Ok(Ok(chunk)) => self.current = chunk.into_iter(),
                Ok(Err(e)) => {
                    self.error = Some(e);
                    self.chunks = None;
                    return None;
                }
                Err(mpsc::RecvError) => {
                    self.chunks = None;
                    return None;
                }
            }
        }
    }
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
    /// Events written.
    pub events: u64,
    /// Input lines that were not clicks (kept in the dead-letter file).
    pub bad_lines: u64,
    /// The whole replay, from opening the input to the last flush.
    pub wall_s: f64,
    /// `events / wall_s`.
    pub events_per_s: f64,
    /// Time spent writing (encoding, appending, flushing), reading excluded.
    pub write_s: f64,
    /// `events / write_s`: the destination's rate.
    pub write_events_per_s: f64,
    /// fsyncs of the embedded log's segment files (none for Kafka).
    pub fsyncs: Option<u64>,
    /// Peak resident set size of the process (Linux `VmHWM`).
    pub peak_rss_bytes: Option<u64>,
    /// Peak memory the allocator had committed.
    pub peak_alloc_bytes: Option<u64>,
}

/// Replays events into `writer` at `pace`, asking `stop` between chunks.
pub struct Replayer<'a, T = ClickEvent> {
    pub writer: &'a mut dyn ClickWriter<T>,
    pub pace: Pace,
    pub chunk: usize,
    pub progress: Option<ProgressBar>,
}

impl<T: Timed> Replayer<'_, T> {
    /// Writes every event of `events` and flushes the writer; stops early when `stop()` says
    /// so. The progress bar counts events handed to the writer.
    pub fn run(
        &mut self,
        events: impl Iterator<Item = T>,
        mut stop: impl FnMut() -> bool,
    ) -> anyhow::Result<ReplaySummary> {
        let started = Instant::now();
        let mut first_ts: Option<u64> = None;
        let mut buf: Vec<T> = Vec::with_capacity(self.chunk);
        let mut sent = 0u64;
        let mut writing = Duration::ZERO;
        for e in events {
            let due = self.due(sent + buf.len() as u64, e.ts_ms(), &mut first_ts);
            // Write before sleeping so that paced events reach the log on time.
            // Small gaps are not worth a sleep (or a tiny append): wait for 5 ms of backlog.
            if let Some(due) = due.filter(|d| *d > started.elapsed() + Duration::from_millis(5)) {
                self.write_chunk(&mut buf, &mut sent, &mut writing)?;
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
                self.write_chunk(&mut buf, &mut sent, &mut writing)?;
                if stop() {
                    break;
                }
            }
        }
        self.write_chunk(&mut buf, &mut sent, &mut writing)?;
        let flushing = Instant::now();
        self.writer.flush()?;
        writing += flushing.elapsed();
        let elapsed = started.elapsed().as_secs_f64();
        let write_s = writing.as_secs_f64();
        Ok(ReplaySummary {
            events: sent,
            wall_s: elapsed,
            events_per_s: sent as f64 / elapsed.max(1e-9),
            write_s,
            write_events_per_s: sent as f64 / write_s.max(1e-9),
            ..ReplaySummary::default()
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

    fn write_chunk(
        &mut self,
        buf: &mut Vec<T>,
        sent: &mut u64,
        writing: &mut Duration,
    ) -> anyhow::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        self.writer.write_clicks(buf)?;
        *writing += started.elapsed();
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

/// The events of a line-format file (TSV, CSV, NDJSON), read as they are iterated; bad lines
/// are counted and written to `dead_letters` with their position.
pub fn read_lines(
    path: &Path,
    format: Format,
    dead_letters: &Path,
) -> anyhow::Result<(impl Iterator<Item = ClickEvent> + Send + 'static, BadLines)> {
    let line_format = format
        .line_format()
        .context("this format is not line-based")?;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let parser = LineParser::new(
        std::io::BufReader::with_capacity(1 << 16, file),
        line_format,
    );
    let bad = BadLines::new(dead_letters.to_path_buf());
    let sink = bad.clone();
    let events = parser.filter_map(move |r| match r {
        Ok(e) => Some(e),
        Err(e) => {
            sink.record(&e.to_string());
            None
        }
    });
    Ok((events, bad))
}

/// Bad input lines: counted, logged with their position and appended to a dead-letter file.
#[derive(Clone)]
pub struct BadLines {
    inner: std::sync::Arc<std::sync::Mutex<(u64, Option<PathBuf>)>>,
}

impl BadLines {
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
        assert!(summary.wall_s >= 0.09, "{}", summary.wall_s);
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
    fn read_ahead_hands_over_every_item_in_order_then_the_error() {
        let items = (0..20_000u64)
            .map(Ok)
            .chain(std::iter::once(Err(anyhow::anyhow!("disk gone"))))
            .chain((0..5).map(Ok));
        let mut ahead = ReadAhead::start(items).unwrap();
        let got: Vec<u64> = ahead.by_ref().collect();
        assert_eq!(got, (0..20_000).collect::<Vec<_>>());
        let err = ahead.finish().unwrap_err();
        assert!(err.to_string().contains("disk gone"), "{err}");
        // Stopping early ends the reading thread (finish joins it).
        let mut endless = ReadAhead::start((0u64..).map(Ok)).unwrap();
        assert_eq!(endless.next(), Some(0));
        endless.finish().unwrap();
    }

    #[test]
    fn msnbc_clicks_reach_the_log_as_the_events_they_stand_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("visits.seq");
        std::fs::write(
            &path,
            "% c\n\nfrontpage news\n\n% Sequences:\n\n1 2 2\n2\n1 1\n",
        )
        .unwrap();
        let file = msnbc::scan(&path).unwrap();
        let clicks: Vec<MsnbcClick> = file.clicks().unwrap().map(Result::unwrap).collect();
        let events: Vec<ClickEvent> = clicks.iter().map(|c| file.event(c)).collect();
        let log = |name: &str| {
            let log = Log::open(dir.path().join(name), LogOptions::default()).unwrap();
            let topic = log.create_topic("clicks", 2).unwrap();
            let mut writer = LogReplayWriter::new(LogWriter::new(topic.clone()), true);
            writer.msnbc = Some(file.clone());
            (topic, writer)
        };
        let (compact, mut writer) = log("compact");
        ClickWriter::<MsnbcClick>::write_clicks(&mut writer, &clicks).unwrap();
        ClickWriter::<MsnbcClick>::flush(&mut writer).unwrap();
        let (whole, mut writer) = log("whole");
        ClickWriter::<ClickEvent>::write_clicks(&mut writer, &events).unwrap();
        for p in 0..2 {
            let a = compact.read(p, 0, 100).unwrap();
            let b = whole.read(p, 0, 100).unwrap();
            let records = |r: &clickpulse_log::Records| {
                r.iter()
                    .map(|r| (r.timestamp, r.key.to_vec(), r.value.to_vec()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(records(&a), records(&b), "partition {p}");
        }
        assert_eq!(
            (0..2).map(|p| compact.end_offset(p).unwrap()).sum::<u64>(),
            6
        );
    }

    #[test]
    fn durabilities() {
        assert_eq!(parse_durability("group").unwrap(), GROUP_COMMIT);
        assert_eq!(parse_durability("batch").unwrap(), Durability::EveryBatch);
        assert_eq!(parse_durability("none").unwrap(), Durability::None);
        assert_eq!(
            parse_durability("250ms").unwrap(),
            Durability::Interval(Duration::from_millis(250))
        );
        for bad in ["0s", "sometimes"] {
            let err = parse_durability(bad).unwrap_err().to_string();
            assert!(err.contains("--durability"), "{err}");
        }
    }

    #[test]
    fn limits_and_formats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clicks.tsv");
        std::fs::write(&path, "1\tv1\t/a\nnot a click\n2\tv2\t/b\n3\tv3\t/c\n").unwrap();
        let format = format_for(&path, None).unwrap();
        let dead = dir.path().join("dead.jsonl");
        let (events, bad) = read_lines(&path, format, &dead).unwrap();
        let urls: Vec<String> = events.take(2).map(|e| e.url).collect();
        assert_eq!((urls, bad.count()), (vec!["/a".into(), "/b".into()], 1));
        assert!(format_for(Path::new("clicks.txt"), None).is_err());
        assert!(pace_of(Some(0.0), None).is_err());
        assert!(matches!(pace_of(None, Some(60.0)), Ok(Pace::Speed(s)) if s == 60.0));
    }
}
