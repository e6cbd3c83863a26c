//! The checkpoint commands as a user meets them: a changed job is refused naming what changed,
//! `--from-scratch` starts anew and keeps the old checkpoints, and `clickpulse state` lists and
//! prints what a checkpoint holds.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{clickpulse, replay_msnbc, run_checkpointed, run_ok};
use serde_json::Value;

fn lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn job_every(ckpt: &Path, log: &Path, interval: &str) -> std::process::Command {
    let mut cmd = run_checkpointed(ckpt);
    cmd.args(["--until-end", "--json", "--topic", "clicks"])
        .args(["--checkpoint-interval", interval])
        .arg("--log")
        .arg(log)
        .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", "2000");
    cmd
}

fn job(ckpt: &Path, log: &Path) -> std::process::Command {
    job_every(ckpt, log, "3")
}

#[test]
fn a_changed_job_is_refused_from_scratch_starts_anew_and_state_reads_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    replay_msnbc(&log, Some(100_000));
    let ckpt = dir.path().join("checkpoints");
    run_ok(&mut job(&ckpt, &log));

    // Another top-N is another job: refused, naming the setting and the way out.
    let refused = job(&ckpt, &log)
        .env("CLICKPULSE__STREAMS__TOP_N", "5")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("streams.top_n: checkpoint `10`, job `5`"),
        "{why}"
    );
    assert!(why.contains("--from-scratch"), "{why}");

    // --from-scratch: a new history beside the old one.
    let fresh = run_ok(
        job(&ckpt, &log)
            .env("CLICKPULSE__STREAMS__TOP_N", "5")
            .arg("--from-scratch"),
    );
    let summary = lines(&fresh.stdout).pop().unwrap();
    assert_eq!(summary["resumed_from_batch"], Value::Null, "{summary}");
    assert_eq!(summary["first_batch"], 0, "{summary}");
    assert_eq!(summary["events"], 100_000, "{summary}");
    assert!(
        ckpt.join("g0000/checkpoints").is_dir(),
        "the old history is kept"
    );
    assert!(ckpt.join("g0001/checkpoints").is_dir());

    // The inspector: the checkpoint, then one line per operator.
    let state = |args: &[&str]| {
        clickpulse()
            .arg("state")
            .arg("--checkpoint-dir")
            .arg(&ckpt)
            .args(args)
            .output()
            .unwrap()
    };
    let listing = lines(&state(&["--json"]).stdout);
    assert_eq!(
        listing[0]["checkpoint"]["fingerprint"]["streams.top_n"],
        "5"
    );
    let operators: Vec<&Value> = listing.iter().skip(1).collect();
    assert!(operators.iter().any(|o| o["operator"] == "session_by_key"));
    let busy = operators
        .iter()
        .find(|o| o["keys"].as_u64() > Some(0))
        .expect("an operator with state");
    let name = busy["operator"].as_str().unwrap();
    let entries = lines(&state(&["--operator", name]).stdout);
    assert_eq!(entries.len() as u64, busy["keys"].as_u64().unwrap());
    let key = match &entries[0]["entry"][0] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let one = lines(&state(&["--operator", name, "--key", &key]).stdout);
    assert!(!one.is_empty() && one.len() <= entries.len());
    assert!(one.iter().all(|e| e["entry"][0] == entries[0]["entry"][0]));
    let unknown = state(&["--operator", "nope"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains(name));
}

/// A restart whose logged batches the input no longer holds (the log was replaced by a shorter
/// one) stops with an error naming the partition and the offsets, instead of producing other
/// results under the same batch ids.
#[test]
fn a_restart_whose_input_lost_logged_batches_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    replay_msnbc(&log, Some(100_000));
    let ckpt = dir.path().join("checkpoints");
    // Checkpoints far apart: batches after the last one are only in the offset log.
    run_ok(&mut job_every(&ckpt, &log, "1000"));
    std::fs::remove_dir_all(&log).unwrap();
    replay_msnbc(&log, Some(1_000));
    let failed = job(&ckpt, &log).output().unwrap();
    assert!(!failed.status.success());
    let why = String::from_utf8_lossy(&failed.stderr);
    assert!(why.contains("but the input now ends at"), "{why}");
    assert!(why.contains("--from-scratch"), "{why}");
}
