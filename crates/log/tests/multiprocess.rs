//! Tests that need more than one process. This binary has its own `main` (`harness = false`): run
//! normally it is the parent and runs the tests; with `CLICKPULSE_LOG_TEST_CHILD` set it is one
//! of the child processes the tests spawn.
//!
//! - `sigkilled_writers_lose_no_acknowledged_record`: a child appends continuously from three
//!   threads with `Durability::EveryBatch` and prints every acknowledged offset range; the parent
//!   SIGKILLs it at random moments, reopens, and checks that every acknowledged record is there,
//!   in order, byte-exact, that every batch present is whole, and that the log then opens
//!   cleanly. Further rounds use `Durability::None` and multi-megabyte batches so that kills land
//!   inside writes and recovery repairs torn tails. Meanwhile a read-only reader in the parent follows the child's writes and checks
//!   that it only ever sees whole, valid records, which must survive the crash.
//! - `second_writer_process_is_refused`: the topic writer lock holds across processes and is
//!   released when the holder dies.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use clickpulse_log::{Batch, Durability, Error, Log, LogOptions};

const CHILD_ENV: &str = "CLICKPULSE_LOG_TEST_CHILD";
const DIR_ENV: &str = "CLICKPULSE_LOG_TEST_DIR";
const ROUND_ENV: &str = "CLICKPULSE_LOG_TEST_ROUND";
const TOPIC: &str = "clicks";
const PARTITIONS: u32 = 2;
const WRITER_THREADS: u32 = 3;
/// Rounds with `Durability::EveryBatch` and batches of up to 400 small records.
const DURABLE_ROUNDS: u32 = 6;
/// Then rounds with `Durability::None` and multi-megabyte batches, so that a kill often lands
/// inside a `write(2)` and leaves a torn batch for recovery (acknowledged appends survive a
/// process crash under every durability setting).
const TORN_ROUNDS: u32 = 3;

fn main() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("writer") => child_writer(),
        Ok("hold-lock") => child_hold_lock(),
        Ok("try-write") => child_try_write(),
        Ok(other) => panic!("unknown child role {other:?}"),
        Err(_) => parent(),
    }
}

fn parent() {
    let tests: [(&str, fn()); 2] = [
        (
            "sigkilled_writers_lose_no_acknowledged_record",
            sigkilled_writers_lose_no_acknowledged_record,
        ),
        (
            "second_writer_process_is_refused",
            second_writer_process_is_refused,
        ),
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    for (name, test) in tests {
        if filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())) {
            println!("test {name} ...");
            test();
            println!("test {name} ... ok");
        }
    }
}

// ----- record contents ----------------------------------------------------------------------

/// FNV-1a, for deterministic contents without dependencies.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn is_torn_round(round: u32) -> bool {
    round >= DURABLE_ROUNDS
}

/// Records in batch `seq` of writer thread `thread` in `round`.
fn batch_len(round: u32, thread: u32, seq: u64) -> u64 {
    let max = if is_torn_round(round) { 24 } else { 400 };
    1 + fnv(format!("{round}:{thread}:{seq}").as_bytes()) % max
}

fn key(round: u32, thread: u32, seq: u64, i: u64) -> String {
    format!("{round}:{thread}:{seq}:{i}")
}

/// The value of the record with `key`: 20 to 79 bytes derived from the key; in torn-write rounds
/// 64 to 320 KiB (the key's hash, then filler that is cheap to produce).
fn value_of(key: &[u8]) -> Vec<u8> {
    let mut state = fnv(key);
    if is_torn_round(parse_key(key).0) {
        let len = (64 << 10) + (state % (256 << 10)) as usize;
        let mut value = vec![0xA5; len];
        value[..8].copy_from_slice(&state.to_le_bytes());
        return value;
    }
    let len = 20 + (state % 60) as usize;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// `(round, thread, seq, i)` from a key.
fn parse_key(key: &[u8]) -> (u32, u32, u64, u64) {
    let text = std::str::from_utf8(key).expect("utf-8 key");
    let parts: Vec<&str> = text.split(':').collect();
    let [round, thread, seq, i] = parts.as_slice() else {
        panic!("malformed key {text:?}");
    };
    (
        round.parse().expect("round"),
        thread.parse().expect("thread"),
        seq.parse().expect("seq"),
        i.parse().expect("i"),
    )
}

// ----- the writer child ---------------------------------------------------------------------

fn writer_options() -> LogOptions {
    LogOptions::default()
        .durability(Durability::EveryBatch)
        .segment_bytes(256 << 10)
}

fn torn_round_options() -> LogOptions {
    LogOptions::default()
        .durability(Durability::None)
        .segment_bytes(16 << 20)
}

/// Appends forever from several threads; prints `ack partition start end round thread seq`
/// after every acknowledged append.
fn child_writer() {
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("dir"));
    let round: u32 = std::env::var(ROUND_ENV)
        .expect("round")
        .parse()
        .expect("round");
    let options = if is_torn_round(round) {
        torn_round_options()
    } else {
        writer_options()
    };
    let log = Log::open(&dir, options).expect("open");
    let topic = log.create_topic(TOPIC, PARTITIONS).expect("topic");
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..WRITER_THREADS)
        .map(|thread| {
            let topic = topic.clone();
            let stdout = Arc::clone(&stdout);
            std::thread::spawn(move || {
                let partition = thread % PARTITIONS;
                let mut batch = Batch::new();
                for seq in 0.. {
                    batch.clear();
                    for i in 0..batch_len(round, thread, seq) {
                        let key = key(round, thread, seq, i);
                        batch
                            .push(seq as i64, key.as_bytes(), &value_of(key.as_bytes()))
                            .expect("push");
                    }
                    let range = topic.append(partition, &batch).expect("append");
                    let mut out = stdout.lock().expect("stdout");
                    writeln!(
                        out,
                        "ack {partition} {} {} {round} {thread} {seq}",
                        range.start, range.end
                    )
                    .expect("print");
                    out.flush().expect("flush");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer thread");
    }
}

// ----- the crash test -----------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Ack {
    partition: u32,
    start: u64,
    end: u64,
    round: u32,
    thread: u32,
    seq: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut fields = line.strip_prefix("ack ")?.split(' ');
    let mut next = || fields.next()?.parse::<u64>().ok();
    Some(Ack {
        partition: next()? as u32,
        start: next()?,
        end: next()?,
        round: next()? as u32,
        thread: next()? as u32,
        seq: next()?,
    })
}

/// xorshift64*: random kill moments without a dependency; the seed is printed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn spawn_child(role: &str, dir: &Path, round: u32) -> Child {
    Command::new(std::env::current_exe().expect("current exe"))
        .env(CHILD_ENV, role)
        .env(DIR_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child")
}

/// Collects the child's ack lines until it dies.
fn collect_acks(stdout: ChildStdout, acks: Arc<Mutex<Vec<Ack>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            // A SIGKILL can cut the last line short; an unparsable line was never complete.
            let Ok(line) = line else { break };
            if let Some(ack) = parse_ack(&line) {
                acks.lock().expect("acks").push(ack);
            }
        }
    })
}

/// What a read-only follower saw: per partition, offset → key.
type Seen = Vec<HashMap<u64, Vec<u8>>>;

/// Follows both partitions read-only from offset 0 until `stop`, checking every record.
fn follow(dir: PathBuf, stop: Arc<AtomicBool>) -> JoinHandle<Seen> {
    std::thread::spawn(move || {
        let log = Log::open(&dir, writer_options().read_only(true)).expect("open read-only");
        let topic = loop {
            match log.topic(TOPIC) {
                Ok(topic) => break topic,
                Err(Error::TopicNotFound(_)) => std::thread::sleep(Duration::from_millis(2)),
                Err(err) => panic!("follower: {err}"),
            }
        };
        let mut readers: Vec<_> = (0..PARTITIONS)
            .map(|p| topic.reader(p, 0).expect("reader"))
            .collect();
        let mut seen: Seen = vec![HashMap::new(); PARTITIONS as usize];
        loop {
            let stopping = stop.load(Ordering::Acquire);
            let mut any = false;
            for (reader, seen) in readers.iter_mut().zip(&mut seen) {
                let records = reader.poll(2000).expect("follower read");
                for record in &records {
                    assert_eq!(
                        record.value,
                        value_of(record.key),
                        "follower saw a bad record"
                    );
                    seen.insert(record.offset, record.key.to_vec());
                }
                any |= !records.is_empty();
            }
            if stopping && !any {
                return seen;
            }
            if !any {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })
}

fn sigkilled_writers_lose_no_acknowledged_record() {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    println!("  seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acks = Vec::new();
    let mut seen: Seen = vec![HashMap::new(); PARTITIONS as usize];
    let mut recoveries = 0;
    for round in 0..DURABLE_ROUNDS + TORN_ROUNDS {
        let mut child = spawn_child("writer", dir.path(), round);
        let round_acks = Arc::new(Mutex::new(Vec::new()));
        let collector = collect_acks(
            child.stdout.take().expect("stdout"),
            Arc::clone(&round_acks),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let follower = follow(dir.path().to_path_buf(), Arc::clone(&stop));
        let deadline = Instant::now() + Duration::from_secs(60);
        while round_acks.lock().expect("acks").is_empty() {
            assert!(
                Instant::now() < deadline,
                "the writer child never acknowledged an append"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(20 + rng.below(300)));
        child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
        child.wait().expect("wait");
        collector.join().expect("collector");
        stop.store(true, Ordering::Release);
        for (all, round_seen) in seen.iter_mut().zip(follower.join().expect("follower")) {
            all.extend(round_seen);
        }
        let round_acks = std::mem::take(&mut *round_acks.lock().expect("acks"));
        println!("  round {round}: {} acknowledged appends", round_acks.len());
        acks.extend(round_acks);
        recoveries += verify_after_crash(dir.path(), &acks, &seen);
    }
    println!("  {recoveries} torn tail(s) recovered");
}

/// Reopens the log (recovering it), checks everything, then checks that it reopens cleanly.
/// Returns how many partitions recovery repaired.
fn verify_after_crash(dir: &Path, acks: &[Ack], seen: &Seen) -> usize {
    let log = Log::open(dir, writer_options()).expect("reopen after crash");
    let topic = log.topic(TOPIC).expect("topic");
    for report in topic.recovery() {
        println!("  recovery: {report}");
    }
    let recovered = topic.recovery().len();
    let partitions: Vec<Vec<(u64, Vec<u8>)>> = (0..PARTITIONS)
        .map(|p| {
            let mut reader = topic.reader(p, 0).expect("reader");
            let mut records = Vec::new();
            loop {
                let batch = reader.poll(5000).expect("read after recovery");
                if batch.is_empty() {
                    break;
                }
                for record in &batch {
                    assert_eq!(record.offset, records.len() as u64, "offsets are dense");
                    assert_eq!(record.value, value_of(record.key), "byte-exact value");
                    records.push((record.timestamp as u64, record.key.to_vec()));
                }
            }
            records
        })
        .collect();
    for records in &partitions {
        assert_whole_batches(records);
    }
    for ack in acks {
        let records = &partitions[ack.partition as usize];
        assert!(
            ack.end as usize <= records.len(),
            "acknowledged {ack:?} lost"
        );
        assert_eq!(
            ack.end - ack.start,
            batch_len(ack.round, ack.thread, ack.seq)
        );
        for (i, offset) in (ack.start..ack.end).enumerate() {
            let expected = key(ack.round, ack.thread, ack.seq, i as u64);
            assert_eq!(records[offset as usize].1, expected.as_bytes(), "{ack:?}");
        }
    }
    for (p, observed) in seen.iter().enumerate() {
        for (offset, key) in observed {
            let stored = partitions[p].get(*offset as usize).map(|r| &r.1);
            assert_eq!(
                stored,
                Some(key),
                "record seen by the follower at {p}/{offset} lost"
            );
        }
    }
    drop((topic, log));
    let log = Log::open(dir, writer_options()).expect("second reopen");
    let topic = log.topic(TOPIC).expect("topic");
    assert!(topic.recovery().is_empty(), "{:?}", topic.recovery());
    recovered
}

/// Every batch in the log is whole: consecutive keys of one batch count 0..batch_len.
fn assert_whole_batches(records: &[(u64, Vec<u8>)]) {
    let mut at = 0;
    while at < records.len() {
        let (round, thread, seq, i) = parse_key(&records[at].1);
        assert_eq!(i, 0, "a batch starts with record 0 at offset {at}");
        let len = batch_len(round, thread, seq) as usize;
        assert!(
            at + len <= records.len(),
            "batch {round}:{thread}:{seq} cut short"
        );
        for j in 0..len {
            let expected = key(round, thread, seq, j as u64);
            assert_eq!(records[at + j].1, expected.as_bytes());
            assert_eq!(records[at + j].0, seq, "timestamp");
        }
        at += len;
    }
}

// ----- the lock test ------------------------------------------------------------------------

/// Opens the topic for writing, says so, and holds it until killed or stdin closes.
fn child_hold_lock() {
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("dir"));
    let log = Log::open(&dir, LogOptions::default()).expect("open");
    let _topic = log.topic(TOPIC).expect("topic");
    println!("locked");
    std::io::stdout().flush().expect("flush");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// Tries to open the topic for writing; exit code 0 and the error text if refused.
fn child_try_write() {
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("dir"));
    let log = Log::open(&dir, LogOptions::default()).expect("open");
    match log.topic(TOPIC) {
        Err(err @ Error::Locked { .. }) => println!("refused: {err}"),
        Err(err) => {
            println!("unexpected error: {err}");
            std::process::exit(4);
        }
        Ok(_) => std::process::exit(3),
    }
}

fn second_writer_process_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogOptions::default()).expect("open");
    let topic = log.create_topic(TOPIC, 1).expect("topic");

    let output = Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD_ENV, "try-write")
        .env(DIR_ENV, dir.path())
        .output()
        .expect("run child");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child was not refused: {text}");
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    drop((topic, log));

    let mut holder = spawn_child("hold-lock", dir.path(), 0);
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert_eq!(line.trim(), "locked");
    let log = Log::open(dir.path(), LogOptions::default()).expect("open");
    match log.topic(TOPIC) {
        Err(Error::Locked { holder: who, .. }) => {
            assert!(who.contains(&format!("pid {}", holder.id())), "{who}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    holder.kill().expect("SIGKILL");
    holder.wait().expect("wait");
    log.topic(TOPIC).expect("the lock dies with its holder");
}
