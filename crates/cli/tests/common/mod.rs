//! Helpers for the CLI's end-to-end tests: a real Kafka-protocol broker (tansu, in memory, on a
//! free port) and running the `clickpulse` binary.
//!
//! [`Broker::start`] finds the `tansu` binary (`$TANSU`, then `~/.cargo/bin/tansu`, then `PATH`),
//! starts `tansu broker` on a free 127.0.0.1 port with `memory://` storage and waits until the
//! port answers; dropping the [`Broker`] kills it. Without a binary the test is skipped with a
//! message on the real stderr — unless `CI=true`, where a missing broker fails the test.
//! `scripts/kafka-broker.sh install` installs tansu (~20 min).
//!
//! The broker comes from `clickpulse-testkit`, shared with the connectors' Kafka tests.

#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

pub use clickpulse_testkit::{Broker, free_port};

/// The `clickpulse` binary with quiet logs and without checkpoints (which would otherwise go
/// to `clickpulse-data/` under the test's working directory and be resumed by the next test):
/// tests of checkpoints turn them back on with a directory of their own.
pub fn clickpulse() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clickpulse"));
    cmd.env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env("CLICKPULSE__CHECKPOINT__ENABLED", "false");
    cmd
}

/// `clickpulse run` with checkpoints in `dir` (further arguments follow).
pub fn run_checkpointed(dir: &Path) -> Command {
    let mut cmd = clickpulse();
    cmd.env_remove("CLICKPULSE__CHECKPOINT__ENABLED")
        .arg("run")
        .arg("--checkpoint-dir")
        .arg(dir);
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

/// Replays the first `limit` canonical MSNBC events (all of them without a limit) into the
/// embedded log at `log`, topic `clicks`.
pub fn replay_msnbc(log: &Path, limit: Option<u64>) {
    let mut cmd = clickpulse();
    cmd.args(["replay", "--topic", "clicks", "--input"])
        .arg(clickpulse_events::msnbc::default_msnbc_path())
        .arg("--log")
        .arg(log);
    if let Some(n) = limit {
        cmd.args(["--limit", &n.to_string()]);
    }
    run_ok(&mut cmd);
}

/// Every result file under `dir` (stream/batch file → bytes); temporary files of an
/// interrupted write are not results.
pub fn result_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let Ok(streams) = std::fs::read_dir(dir) else {
        return files;
    };
    for stream in streams.map(|e| e.unwrap().path()) {
        for file in std::fs::read_dir(&stream)
            .unwrap()
            .map(|e| e.unwrap().path())
        {
            if file.file_name().unwrap().to_string_lossy().starts_with('.') {
                continue;
            }
            let key = file.strip_prefix(dir).unwrap().to_path_buf();
            files.insert(key, std::fs::read(&file).unwrap());
        }
    }
    files
}

/// The newest checkpoint at `location` (a directory or an `s3://` URL): its batch and the sum
/// of the input offsets after it, from `clickpulse state --json`.
pub fn newest_checkpoint(location: impl AsRef<OsStr>) -> Option<(u64, u64)> {
    let out = clickpulse()
        .args(["state", "--json", "--checkpoint-dir"])
        .arg(location)
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let first: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
    let c = &first["checkpoint"];
    let offsets = c["positions"]
        .as_array()?
        .iter()
        .map(|p| p["next_offset"].as_u64().unwrap_or(0))
        .sum();
    Some((c["batch"].as_u64()?, offsets))
}

/// What a `run --json` printed last: its summary.
pub fn summary(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("summary `{line}`: {e}"))
}

/// Random moments for kills, from a seed printed at the start (`CLICKPULSE_CRASH_SEED=N`
/// repeats a run); xorshift64*.
pub struct Moments(u64);

impl Moments {
    /// The seed from `CLICKPULSE_CRASH_SEED`, or the clock; printed.
    pub fn seeded() -> Moments {
        let seed = std::env::var("CLICKPULSE_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                now.map_or(1, |d| d.as_nanos() as u64) | 1
            });
        eprintln!("kill moments seed: {seed} (CLICKPULSE_CRASH_SEED={seed} repeats them)");
        Moments(seed)
    }

    /// A number below `n`.
    pub fn next_below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// The streams the job writes: the standard seven and the two side streams.
pub fn all_streams() -> Vec<&'static str> {
    clickpulse_job::STREAMS
        .iter()
        .copied()
        .chain(["late_events", "dead_letters"])
        .collect()
}
