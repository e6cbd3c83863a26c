//! Cluster mode with real processes on loopback: the job as 3 processes of 1 worker writes,
//! file for file, what 1 process of 2 workers writes from the embedded log, over MSNBC slices
//! and the full day, and from Kafka (tansu). A process killed with SIGKILL mid-run stops the
//! others, which name it; restarted with 2 processes from the 3-process checkpoint, and under
//! `--local-processes`' own supervisor, the job still writes what an uninterrupted run writes.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Broker, clickpulse, jsonl_rows, newest_checkpoint, replay_msnbc, result_files,
    run_checkpointed, run_ok, summary,
};

/// Records per partition per batch over the full day: hundreds of batches, to kill between.
const CHUNK: &str = "5000";

fn write_hosts(dir: &Path, n: usize) -> PathBuf {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let text: String = listeners
        .iter()
        .map(|l| format!("{}\n", l.local_addr().unwrap()))
        .collect();
    let path = dir.join(format!("hosts-{n}-{}", rand_suffix()));
    std::fs::write(&path, text).unwrap();
    path
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A process of a cluster run: its child and where its stderr goes.
struct Member {
    child: Child,
    stderr: PathBuf,
    stdout: PathBuf,
}

impl Member {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts every process of `hosts` (`n` of them) with `make` giving each one's command.
fn start_members(dir: &Path, hosts: &Path, n: usize, make: impl Fn() -> Command) -> Vec<Member> {
    (0..n)
        .map(|i| {
            let tag = format!("{}-{i}-{}", n, rand_suffix());
            let stderr = dir.join(format!("stderr-{tag}"));
            let stdout = dir.join(format!("stdout-{tag}"));
            let child = make()
                .arg("--hosts")
                .arg(hosts)
                .args(["--process", &i.to_string(), "--workers", "1"])
                .stdout(std::fs::File::create(&stdout).unwrap())
                .stderr(std::fs::File::create(&stderr).unwrap())
                .spawn()
                .unwrap();
            Member {
                child,
                stderr,
                stdout,
            }
        })
        .collect()
}

/// Waits for every member to exit (a safety net of `limit`); returns their exit codes.
fn wait_all(members: &mut [Member], limit: Duration) -> Vec<Option<i32>> {
    let started = Instant::now();
    let mut codes = vec![None; members.len()];
    let mut done = vec![false; members.len()];
    while done.iter().any(|d| !d) {
        for (i, m) in members.iter_mut().enumerate() {
            if !done[i]
                && let Some(status) = m.child.try_wait().unwrap()
            {
                done[i] = true;
                codes[i] = status.code();
            }
        }
        if started.elapsed() > limit {
            let errs: Vec<String> = members.iter().map(Member::stderr).collect();
            panic!(
                "processes still running after {limit:?}:\n{}",
                errs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    codes
}

fn assert_same_results(expected: &Path, got: &Path) {
    let expected = result_files(expected);
    let got = result_files(got);
    assert!(!expected.is_empty(), "no reference files");
    let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(missing.is_empty(), "missing: {missing:?}");
    assert!(extra.is_empty(), "not in the reference: {extra:?}");
    for (file, bytes) in &expected {
        assert!(got[file] == *bytes, "{} differs", file.display());
    }
}

/// One process of 2 workers over `log`: the reference.
fn reference(log: &Path, out: &Path, chunk: &str) {
    run_ok(
        clickpulse()
            .args(["run", "--until-end", "--workers", "2", "--topic", "clicks"])
            .arg("--log")
            .arg(log)
            .arg("--output-dir")
            .arg(out)
            .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", chunk),
    );
}

#[test]
fn three_processes_write_what_one_process_writes_on_msnbc_slices() {
    let dir = tempfile::tempdir().unwrap();
    for limit in [20_000u64, 200_000] {
        let log = dir.path().join(format!("log-{limit}"));
        replay_msnbc(&log, Some(limit));
        let expected = dir.path().join(format!("one-{limit}"));
        reference(&log, &expected, "20000");
        let got = dir.path().join(format!("three-{limit}"));
        let hosts = write_hosts(dir.path(), 3);
        let mut members = start_members(dir.path(), &hosts, 3, || {
            let mut cmd = clickpulse();
            cmd.args(["run", "--until-end", "--json", "--topic", "clicks"])
                .arg("--log")
                .arg(&log)
                .arg("--output-dir")
                .arg(&got)
                .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", "20000");
            cmd
        });
        let codes = wait_all(&mut members, Duration::from_secs(600));
        assert!(
            codes.iter().all(|c| *c == Some(0)),
            "{codes:?}: {}",
            members[0].stderr()
        );
        assert_same_results(&expected, &got);
        let s = summary(&std::fs::read(&members[0].stdout).unwrap());
        assert_eq!(s["events"].as_u64(), Some(limit), "{s}");
        assert_eq!(s["processes"].as_u64(), Some(3), "{s}");
        assert!(s["exchange_bytes_sent"].as_u64() > Some(0), "{s}");
        // Only process 0 writes the summary (and the results).
        for m in &members[1..] {
            assert!(std::fs::read(&m.stdout).unwrap().is_empty());
        }
    }
}

/// The full MSNBC day as 3 processes, one of them killed with SIGKILL after the first
/// checkpoint: the others stop and name it; the job finishes with 2 processes from the
/// 3-process checkpoint; the results equal one uninterrupted process's. Then the same under
/// `--local-processes 3`, whose supervisor restarts the processes by itself.
#[test]
fn a_killed_process_stops_the_job_and_restarts_give_the_uninterrupted_results() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    replay_msnbc(&log, None);
    let expected = dir.path().join("reference");
    reference(&log, &expected, CHUNK);

    let ckpt = dir.path().join("checkpoints");
    let out = dir.path().join("results");
    let job = || {
        let mut cmd = run_checkpointed(&ckpt);
        cmd.args(["--until-end", "--json", "--topic", "clicks"])
            .args(["--checkpoint-interval", "5"])
            .arg("--log")
            .arg(&log)
            .arg("--output-dir")
            .arg(&out)
            .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", CHUNK);
        cmd
    };
    let hosts = write_hosts(dir.path(), 3);
    let mut members = start_members(dir.path(), &hosts, 3, job);
    let checkpoint = wait_for_checkpoint(&ckpt, &mut members);
    members[1].child.kill().unwrap(); // SIGKILL
    let codes = wait_all(&mut members, Duration::from_secs(120));
    assert!(
        codes[0] != Some(0) && codes[2] != Some(0),
        "the others went on: {codes:?}"
    );
    for i in [0, 2] {
        let err = members[i].stderr();
        assert!(err.contains("lost process 1"), "process {i} said: {err}");
    }
    drop(members);

    // Two processes now, from the three processes' checkpoint.
    let hosts = write_hosts(dir.path(), 2);
    let mut members = start_members(dir.path(), &hosts, 2, job);
    let codes = wait_all(&mut members, Duration::from_secs(1200));
    assert_eq!(codes, vec![Some(0); 2], "{}", members[0].stderr());
    let s = summary(&std::fs::read(&members[0].stdout).unwrap());
    assert!(s["resumed_from_batch"].as_u64() >= Some(checkpoint), "{s}");
    assert_eq!(s["processes"].as_u64(), Some(2), "{s}");
    assert_same_results(&expected, &out);

    // Under the supervisor of --local-processes: kill one of its processes; it restarts all.
    let ckpt = dir.path().join("checkpoints-local");
    let out = dir.path().join("results-local");
    let mut supervisor = run_checkpointed(&ckpt)
        .args(["--until-end", "--json", "--topic", "clicks"])
        .args(["--checkpoint-interval", "5", "--local-processes", "3"])
        .args(["--workers", "1"])
        .arg("--log")
        .arg(&log)
        .arg("--output-dir")
        .arg(&out)
        .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", CHUNK)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while newest_checkpoint(&ckpt).is_none() {
        assert!(
            supervisor.try_wait().unwrap().is_none(),
            "ended before a checkpoint"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let children = children_of(supervisor.id());
    assert_eq!(children.len(), 3, "{children:?}");
    let killed = Command::new("kill")
        .args(["-KILL", &children[2].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = supervisor.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("restarting every process"), "{stderr}");
    let s = summary(&output.stdout);
    assert!(s["resumed_from_batch"].as_u64().is_some(), "{s}");
    assert_same_results(&expected, &out);
}

/// Waits for the first checkpoint of a running cluster (failing if every member ended first).
fn wait_for_checkpoint(ckpt: &Path, members: &mut [Member]) -> u64 {
    let started = Instant::now();
    loop {
        if let Some((batch, _)) = newest_checkpoint(ckpt) {
            return batch;
        }
        for m in members.iter_mut() {
            if let Some(status) = m.child.try_wait().unwrap() {
                panic!(
                    "a process ended ({status}) before a checkpoint: {}",
                    m.stderr()
                );
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The process ids of `pid`'s children, oldest first (Linux /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let mut pids: Vec<u32> = text
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// From Kafka: 4 partitions spread over 3 processes' workers write the files 1 process of 2
/// workers writes.
#[test]
fn three_processes_read_kafka_like_one() {
    let Some(broker) = Broker::start("three_processes_read_kafka_like_one") else {
        return;
    };
    let url = format!("{}/clicks", broker.url());
    run_ok(
        clickpulse()
            .args([
                "replay",
                "--partitions",
                "4",
                "--limit",
                "100000",
                "--input",
            ])
            .arg(clickpulse_events::msnbc::default_msnbc_path())
            .args(["--to", &url]),
    );
    let dir = tempfile::tempdir().unwrap();
    let expected = dir.path().join("one");
    run_ok(
        clickpulse()
            .args([
                "run",
                "--until-end",
                "--workers",
                "2",
                "--input-kafka",
                &url,
            ])
            .arg("--output-dir")
            .arg(&expected)
            .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", "10000"),
    );
    let got = dir.path().join("three");
    let out = run_ok(
        clickpulse()
            .args(["run", "--until-end", "--json", "--input-kafka", &url])
            .args(["--local-processes", "3", "--workers", "1"])
            .arg("--output-dir")
            .arg(&got)
            .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", "10000"),
    );
    let s = summary(&out.stdout);
    assert_eq!(s["events"].as_u64(), Some(100_000), "{s}");
    assert_eq!(s["processes"].as_u64(), Some(3), "{s}");
    // In until-end mode a batch takes its whole chunk of every partition, however the fetches
    // go, so the runs cut the same batches and write the same files.
    assert_same_results(&expected, &got);
    assert!(!jsonl_rows(&expected, "page_views").is_empty());
}

/// `GET /api/job` and `/metrics` on process 0 show every process and worker of a running
/// cluster; `clickpulse stop` stops them all, and every process exits 0.
#[test]
fn process_0_reports_every_process_and_stop_stops_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    replay_msnbc(&log, Some(50_000));
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut supervisor = run_checkpointed(&dir.path().join("checkpoints"))
        .args([
            "--topic",
            "clicks",
            "--local-processes",
            "3",
            "--workers",
            "1",
        ])
        .args([
            "--batch-interval",
            "200ms",
            "--serve",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--log")
        .arg(&log)
        .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", "1000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        let out = clickpulse()
            .args(["status", "--url", &url])
            .output()
            .unwrap();
        if out.status.success() {
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let processes = s["processes"].as_array().cloned().unwrap_or_default();
            if processes.len() == 3 && processes.iter().all(|p| p["events"].as_u64() > Some(0)) {
                break s;
            }
        }
        assert!(supervisor.try_wait().unwrap().is_none(), "the job ended");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no report of 3 processes"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for (i, p) in status["processes"].as_array().unwrap().iter().enumerate() {
        assert_eq!(p["process"].as_u64(), Some(i as u64), "{status}");
        assert_eq!(
            p["workers"][0]["worker"].as_u64(),
            Some(i as u64),
            "{status}"
        );
        assert!(p["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    // Every partition, on the worker that reads it, with its end and lag: the ends add up to
    // the events in the log, and the next offsets plus the lags too.
    let partitions: Vec<&serde_json::Value> = status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["workers"].as_array().unwrap())
        .flat_map(|w| w["partitions"].as_object().unwrap().values())
        .collect();
    assert_eq!(partitions.len(), 4, "{status}");
    let sum = |key: &str| -> u64 { partitions.iter().map(|p| p[key].as_u64().unwrap()).sum() };
    assert_eq!(sum("end"), 50_000, "{status}");
    assert_eq!(sum("next") + sum("lag"), 50_000, "{status}");
    // Every process's workers and traffic, as the reports of the next batches arrive.
    let wanted: Vec<String> = (0..3)
        .flat_map(|p| {
            [
                format!(r#"clickpulse_worker_events_in_total{{process="{p}",worker="{p}"}}"#),
                format!(r#"clickpulse_exchange_sent_bytes{{process="{p}"}}"#),
                format!(r#"clickpulse_partition_lag{{source="clicks",partition="{p}"}}"#),
            ]
        })
        .collect();
    let started = Instant::now();
    loop {
        let metrics = http_get(port, "/metrics");
        let missing: Vec<&String> = wanted.iter().filter(|w| !metrics.contains(*w)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{missing:?} missing from\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    run_ok(clickpulse().args(["stop", "--url", &url]));
    let output = supervisor.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A plain HTTP/1.1 GET on 127.0.0.1:`port`; the body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(text)
}

/// Killing the supervisor of `--local-processes` never leaves its processes running: each gets
/// a SIGTERM, finishes its batch, checkpoints and exits.
#[test]
fn the_processes_stop_when_their_supervisor_dies() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    replay_msnbc(&log, Some(50_000));
    let ckpt = dir.path().join("checkpoints");
    let mut supervisor = run_checkpointed(&ckpt)
        .args([
            "--topic",
            "clicks",
            "--local-processes",
            "2",
            "--workers",
            "1",
        ])
        .args(["--batch-interval", "200ms", "--checkpoint-interval", "1000"])
        .arg("--log")
        .arg(&log)
        .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", "1000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let children = loop {
        let c = children_of(supervisor.id());
        if c.len() == 2 {
            break c;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no processes");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Let them run a few batches.
    std::thread::sleep(Duration::from_secs(2));
    supervisor.kill().unwrap(); // SIGKILL
    supervisor.wait().unwrap();
    let started = Instant::now();
    while children
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(*pid))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the processes outlived their supervisor"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // They stopped gracefully: the stop's checkpoint is there (the interval alone gives none).
    assert!(
        newest_checkpoint(&ckpt).is_some(),
        "no checkpoint at the stop"
    );
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
