//! Crash recovery with real processes and real kills: `clickpulse run --until-end` over the full
//! MSNBC day from the embedded log, in small batches, is killed with SIGKILL at 20 or more random
//! moments and restarted each time. The result files must then equal an uninterrupted run's,
//! stream by stream and batch by batch, and every restart must have resumed from a checkpoint
//! and read only the input after it.
//!
//! The random moments come from a seed printed at the start; `CLICKPULSE_CRASH_SEED=N` repeats
//! a run.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clickpulse_events::msnbc;
use common::{
    Moments, clickpulse, newest_checkpoint, replay_msnbc, result_files, run_checkpointed, run_ok,
    summary,
};

/// Kills that must land while the job runs.
const KILLS: usize = 20;
/// Records per partition per batch: hundreds of batches over the day.
const CHUNK: &str = "5000";

#[test]
fn killed_runs_resume_and_write_what_an_uninterrupted_run_writes() {
    let mut moments = Moments::seeded();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    replay_msnbc(&log, None);
    let total = msnbc::EVENTS as u64;

    let reference = dir.path().join("reference");
    let started = Instant::now();
    let out = run_ok(
        clickpulse()
            .args(["run", "--until-end", "--json", "--topic", "clicks", "--log"])
            .arg(&log)
            .arg("--output-dir")
            .arg(&reference)
            .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", CHUNK),
    );
    let whole = started.elapsed();
    let batches = summary(&out.stdout)["batches"].as_u64().unwrap();
    assert!(batches >= 200, "{batches} batches: too few to kill between");

    let ckpt = dir.path().join("checkpoints");
    let results = dir.path().join("results");
    let job = || {
        let mut cmd = run_checkpointed(&ckpt);
        cmd.args(["--until-end", "--json", "--topic", "clicks", "--log"])
            .arg(&log)
            .arg("--output-dir")
            .arg(&results)
            .args(["--checkpoint-interval", "7"])
            .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", CHUNK);
        cmd
    };
    let mut kills = 0;
    let mut attempts = 0;
    let mut resumed_runs = 0;
    while kills < KILLS {
        attempts += 1;
        assert!(
            attempts <= 4 * KILLS,
            "only {kills} kills landed in {attempts} runs"
        );
        let before = newest_checkpoint(&ckpt);
        let mut child = job()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Every run gets a random share of the work around a KILLS-th of it (after its start-up,
        // restore and re-run of the logged batches), so the kills spread over the whole day.
        let share = whole.as_millis() as u64 / KILLS as u64;
        let at = Duration::from_millis(share / 2 + moments.next_below(2 * share));
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let status = child.wait().unwrap();
        if let Some((batch, _)) = before {
            resumed_runs += 1;
            // A restart never goes back before a checkpoint it found.
            let after = newest_checkpoint(&ckpt).map(|c| c.0);
            assert!(after >= Some(batch), "checkpoint {batch} lost: {after:?}");
        }
        eprintln!(
            "run {attempts}: killed after {at:?} ({status}), checkpoint before it {before:?}"
        );
    }
    assert!(
        resumed_runs >= KILLS / 2,
        "only {resumed_runs} runs resumed"
    );

    // The last run goes to the end, from the newest checkpoint, reading only what follows it.
    let (checkpoint, offsets) = newest_checkpoint(&ckpt).expect("a checkpoint after the kills");
    let out = run_ok(&mut job());
    let last = summary(&out.stdout);
    assert_eq!(
        last["resumed_from_batch"].as_u64(),
        Some(checkpoint),
        "{last}"
    );
    assert_eq!(last["first_batch"].as_u64(), Some(checkpoint + 1), "{last}");
    assert_eq!(last["events"].as_u64(), Some(total - offsets), "{last}");

    let expected = result_files(&reference);
    let got = result_files(&results);
    assert!(expected.len() > 1000, "{} reference files", expected.len());
    let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(missing.is_empty(), "missing after the kills: {missing:?}");
    assert!(extra.is_empty(), "not in the uninterrupted run: {extra:?}");
    for (file, bytes) in &expected {
        assert!(got[file] == *bytes, "{} differs", file.display());
    }
}

/// Waits until `ckpt` holds a checkpoint newer than `after` (or the child ended); returns it.
fn wait_for_checkpoint(
    ckpt: &Path,
    after: Option<u64>,
    child: &mut std::process::Child,
) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if let Some((b, _)) = newest_checkpoint(ckpt)
            && Some(b) > after
        {
            return Some(b);
        }
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no checkpoint after {after:?} within 5 minutes");
}

/// A run killed with 2 workers restores with 1 worker, which is killed too, and then with 4: the
/// results equal an uninterrupted 2-worker run's.
#[test]
fn a_checkpoint_restores_with_other_worker_counts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    replay_msnbc(&log, Some(600_000));
    let run = |cmd: &mut std::process::Command, out: &Path, workers: &str| {
        cmd.args(["--until-end", "--json", "--topic", "clicks", "--log"])
            .arg(&log)
            .arg("--output-dir")
            .arg(out)
            .args(["--workers", workers])
            .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", "2000");
    };
    let reference = dir.path().join("reference");
    let mut cmd = clickpulse();
    cmd.arg("run");
    run(&mut cmd, &reference, "2");
    run_ok(&mut cmd);

    let ckpt = dir.path().join("checkpoints");
    let results = dir.path().join("results");
    let mut seen = None;
    for workers in ["2", "1"] {
        let mut cmd = run_checkpointed(&ckpt);
        cmd.args(["--checkpoint-interval", "5"]);
        run(&mut cmd, &results, workers);
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Killed once it has written a checkpoint of its own.
        seen = wait_for_checkpoint(&ckpt, seen, &mut child).or(seen);
        let _ = child.kill();
        child.wait().unwrap();
    }
    let checkpoint = seen.expect("the killed runs wrote checkpoints");
    let mut cmd = run_checkpointed(&ckpt);
    run(&mut cmd, &results, "4");
    let last = summary(&run_ok(&mut cmd).stdout);
    assert!(
        last["resumed_from_batch"].as_u64() >= Some(checkpoint),
        "{last}"
    );
    assert_eq!(result_files(&results), result_files(&reference));
}

/// SIGTERM finishes the batch in progress, checkpoints it, flushes the sinks and exits 0; the
/// next start resumes right after that batch.
#[test]
fn sigterm_checkpoints_the_last_batch_and_the_next_start_resumes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    replay_msnbc(&log, Some(200_000));
    let ckpt = dir.path().join("checkpoints");
    let results = dir.path().join("results");
    let start = || {
        let mut cmd = run_checkpointed(&ckpt);
        // Continuous: it would run for ever; checkpoints far apart, so the last one is the stop's.
        cmd.args([
            "--json",
            "--topic",
            "clicks",
            "--batch-interval",
            "100ms",
            "--log",
        ])
        .arg(&log)
        .arg("--output-dir")
        .arg(&results)
        .args(["--checkpoint-interval", "1h"])
        .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", "5000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        cmd.spawn().unwrap()
    };
    let mut previous_last: Option<u64> = None;
    for round in 0..2 {
        let child = start();
        std::thread::sleep(Duration::from_secs(4));
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "SIGTERM not sent");
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "round {round}: {}", out.status);
        let s = summary(&out.stdout);
        let first = s["first_batch"].as_u64().unwrap();
        let last = first + s["batches"].as_u64().unwrap() - 1;
        assert_eq!(
            s["resumed_from_batch"].as_u64(),
            previous_last,
            "round {round}: {s}"
        );
        assert_eq!(
            first,
            previous_last.map_or(0, |b| b + 1),
            "round {round}: {s}"
        );
        let (checkpoint, _) = newest_checkpoint(&ckpt).expect("a checkpoint at the stop");
        assert_eq!(
            checkpoint, last,
            "round {round}: the stop's batch is checkpointed"
        );
        previous_last = Some(last);
    }
    // Both rounds' results are there, each batch written once.
    let files = result_files(&results);
    assert!(!files.is_empty());
    assert!(files.keys().all(|f| f.to_string_lossy().contains("batch-")));
}
