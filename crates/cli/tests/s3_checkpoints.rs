//! Checkpoints on S3-compatible storage: a job whose `--checkpoint-dir` is an `s3://` URL on a
//! real moto server is killed after its first checkpoint there and restarted; its results equal
//! an uninterrupted run's, and `clickpulse state` reads the checkpoint from S3. Without moto the
//! test says it was skipped and why; under `CI=true` that is a failure
//! (`scripts/s3-server.sh install` installs moto).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clickpulse_testkit::S3Server;
use common::{clickpulse, newest_checkpoint, replay_msnbc, result_files, run_ok};
use serde_json::Value;

#[test]
fn a_job_resumes_from_its_checkpoint_on_s3() {
    let Some(s3) = S3Server::start("s3_checkpoints") else {
        return;
    };
    s3.create_bucket("ckpt");
    let location = s3.location("ckpt", "jobs/standard");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    replay_msnbc(&log, Some(300_000));
    let job = |out: &Path| {
        let mut cmd = clickpulse();
        cmd.args(["run", "--until-end", "--json", "--topic", "clicks", "--log"])
            .arg(&log)
            .arg("--output-dir")
            .arg(out)
            .env("CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION", "2000");
        cmd
    };
    let reference = dir.path().join("reference");
    run_ok(&mut job(&reference));

    let results = dir.path().join("results");
    let checkpointed = || {
        let mut cmd = job(&results);
        cmd.env_remove("CLICKPULSE__CHECKPOINT__ENABLED").args([
            "--checkpoint-dir",
            &location,
            "--checkpoint-interval",
            "5",
        ]);
        cmd
    };
    let mut child = checkpointed()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let first = loop {
        if let Some((b, _)) = newest_checkpoint(&location) {
            break b;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before a checkpoint"
        );
        assert!(
            Instant::now() < deadline,
            "no checkpoint on S3 after 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    child.wait().unwrap();
    let (resumed_at, _) = newest_checkpoint(&location).unwrap();
    assert!(resumed_at >= first);

    let out = run_ok(&mut checkpointed());
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        summary["resumed_from_batch"].as_u64(),
        Some(resumed_at),
        "{summary}"
    );
    assert_eq!(result_files(&results), result_files(&reference));

    // The inspector reads the checkpoint on S3 too.
    let listing = clickpulse()
        .args(["state", "--checkpoint-dir", &location])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("session_by_key"), "{listing}");
}
