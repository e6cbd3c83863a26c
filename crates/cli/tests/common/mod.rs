//! Helpers for the CLI's end-to-end tests: a real Kafka-protocol broker (tansu, in memory, on a
//! free port) and running the `clickpulse` binary.
//!
//! [`Broker::start`] finds the `tansu` binary (`$TANSU`, then `~/.cargo/bin/tansu`, then `PATH`),
//! starts `tansu broker` on a free 127.0.0.1 port with `memory://` storage and waits until the
//! port answers; dropping the [`Broker`] kills it. Without a binary the test is skipped with a
//! message on the real stderr — unless `CI=true`, where a missing broker fails the test.
//! `scripts/kafka-broker.sh install` installs tansu (~20 min).
//!
//! (A copy of the part of `crates/connectors/tests/kafka_common` these tests need: test code
//! is not shared between crates.)

#![allow(dead_code, clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running tansu broker, killed on drop.
pub struct Broker {
    port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The tansu binary, if one is installed.
fn find_tansu() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TANSU") {
        // An explicit choice: no fallback when it is not there.
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(p) = home.map(|h| h.join("bin/tansu")).filter(|p| p.is_file()) {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    })
}

/// Says that `test` was skipped and why, on the real stderr: the test harness captures
/// `eprintln!`, and a skip must be seen.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Broker {
    /// Starts a broker, or returns `None` (after saying why) when tansu is not installed and
    /// `CI` is not `true`.
    ///
    /// # Panics
    /// When tansu is missing under `CI=true`, or does not start.
    pub fn start(test: &str) -> Option<Broker> {
        let Some(binary) = find_tansu() else {
            let why = "no tansu binary ($TANSU, else ~/.cargo/bin/tansu or PATH); \
                       install one with scripts/kafka-broker.sh install (~20 min)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: CI=true and {why}");
            }
            skipped(test, why);
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("tansu.log");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let out = std::fs::File::create(&log).expect("broker log");
        let child = Command::new(&binary)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("tansu starts");
        let mut broker = Broker {
            port,
            child,
            log,
            _dir: dir,
        };
        broker.wait_until_it_answers();
        Some(broker)
    }

    fn wait_until_it_answers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tansu exited with {status}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not answer: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kafka://127.0.0.1:PORT`, as the CLI takes it.
    pub fn url(&self) -> String {
        format!("kafka://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, as librdkafka takes it.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the broker logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `clickpulse` binary with quiet logs.
pub fn clickpulse() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clickpulse"));
    cmd.env("RUST_LOG", "warn").env("NO_COLOR", "1");
    cmd
}

/// Runs `cmd` to its end; panics with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let output = cmd.output().expect("clickpulse starts");
    assert!(
        output.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Every row a `JsonlSink` wrote for `stream` under `dir`, in batch order, each with its
/// `batch` field.
pub fn jsonl_rows(dir: &Path, stream: &str) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(dir.join(stream)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `row` without its `batch` field.
pub fn without_batch(row: &serde_json::Value) -> serde_json::Value {
    let mut row = row.clone();
    if let Some(map) = row.as_object_mut() {
        map.remove("batch");
    }
    row
}

/// Rows without their `batch` field, sorted by their JSON text: what two runs that cut their
/// input into different batches must agree on.
pub fn batchless_sorted(rows: &[serde_json::Value]) -> Vec<String> {
    let mut texts: Vec<String> = rows.iter().map(|r| without_batch(r).to_string()).collect();
    texts.sort();
    texts
}

/// A child process killed (and waited for) on drop, so a failing test leaves nothing behind.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
