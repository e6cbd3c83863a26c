//! `clickpulse run --local-processes N`: the job as N processes on this machine over loopback,
//! under a supervisor. timely is fail-stop: when one process fails, the others stop too (naming
//! the lost one); the supervisor then starts them all again, and the job resumes from its latest
//! checkpoint. On several machines, a supervisor per process (systemd, a Kubernetes
//! StatefulSet) plays this part: docs/deploy.md.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clickpulse_job::JobConfig;

use crate::RunArgs;

/// Set in the environment of the processes a supervisor starts: its process id.
const SUPERVISOR_VAR: &str = "CLICKPULSE_SUPERVISOR_PID";

/// In a process started by `--local-processes`: asks for a SIGTERM (a graceful stop) when the
/// supervisor dies, so that killing the supervisor never leaves the job running unsupervised;
/// exits at once if it is already gone.
pub fn follow_supervisor() {
    let Some(supervisor) = std::env::var(SUPERVISOR_VAR)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    if let Err(e) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
    {
        tracing::warn!(error = %e, "cannot follow the supervisor's death");
    }
    if rustix::process::getppid().map(rustix::process::Pid::as_raw_nonzero)
        != std::num::NonZeroI32::new(supervisor)
    {
        tracing::error!("the supervisor that started this process is gone; exiting");
        std::process::exit(1);
    }
}

/// How long the others get to stop by themselves once one process failed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Runs the job as `config.cluster.local_processes` processes until it ends, restarting them all
/// after a failure (at most `cluster.max_restarts` times; only with checkpoints, since a restart
/// without them would repeat outputs).
pub fn supervise(args: &RunArgs, config: &JobConfig) -> anyhow::Result<()> {
    let n = config.cluster.local_processes;
    let dir = tempfile::Builder::new()
        .prefix("clickpulse-cluster-")
        .tempdir()
        .context("creating the host file's directory")?;
    let hosts = dir.path().join("hosts");
    let stop = Arc::new(AtomicBool::new(false));
    let asked = Arc::clone(&stop);
    crate::server::stop_on_signal_with(move || {
        eprintln!("stopping: every process finishes the batch in progress");
        asked.store(true, Ordering::SeqCst);
    });
    let mut restarts = 0;
    loop {
        let addresses = loopback_addresses(n)?;
        std::fs::write(&hosts, addresses.join("\n") + "\n")
            .with_context(|| format!("writing {}", hosts.display()))?;
        let mut children = Children(Vec::with_capacity(n));
        for (process, address) in addresses.iter().enumerate() {
            let child = Command::new(std::env::current_exe().context("finding this program")?)
                .arg("run")
                .args(child_args(args, &hosts, process, restarts == 0))
                .env(SUPERVISOR_VAR, std::process::id().to_string())
                .spawn()
                .with_context(|| format!("starting process {process}"))?;
            tracing::info!(process, pid = child.id(), %address, "process started");
            children.0.push(child);
        }
        match watch(&mut children, &stop)? {
            Outcome::Done => return Ok(()),
            Outcome::Failed { process, status } => {
                let why = format!("process {process} failed ({status})");
                if stop.load(Ordering::SeqCst) {
                    anyhow::bail!("{why} while the job was stopping");
                }
                if !config.checkpoint.enabled {
                    anyhow::bail!(
                        "{why}; not restarting: without checkpoints a restart would read the input from its beginning and repeat every output"
                    );
                }
                if restarts >= config.cluster.max_restarts {
                    anyhow::bail!(
                        "{why}; giving up after {restarts} restarts (cluster.max_restarts)"
                    );
                }
                restarts += 1;
                tracing::warn!(
                    restart = restarts,
                    of = config.cluster.max_restarts,
                    "{why}; restarting every process from the latest checkpoint"
                );
            }
        }
    }
}

/// The child processes; any still running when this is dropped are killed.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

enum Outcome {
    /// Every process exited 0.
    Done,
    /// The first process that exited otherwise (the others have exited too, or were killed).
    Failed { process: usize, status: ExitStatus },
}

/// Waits for the processes: all exit 0, or one fails and the others follow (or are killed after
/// [`STOP_GRACE`]). A stop request is passed on to every process as SIGTERM.
fn watch(children: &mut Children, stop: &AtomicBool) -> anyhow::Result<Outcome> {
    let mut exited: Vec<Option<ExitStatus>> = vec![None; children.0.len()];
    let mut failed: Option<(usize, ExitStatus, Instant)> = None;
    let mut forwarded = false;
    let mut killed = false;
    loop {
        for (i, c) in children.0.iter_mut().enumerate() {
            if exited[i].is_none()
                && let Some(status) = c.try_wait().context("waiting for a process")?
            {
                exited[i] = Some(status);
                if !status.success() && failed.is_none() {
                    tracing::warn!(process = i, %status, "process failed; the others stop with it");
                    failed = Some((i, status, Instant::now()));
                }
            }
        }
        if exited.iter().all(Option::is_some) {
            return Ok(match failed {
                Some((process, status, _)) => Outcome::Failed { process, status },
                None => Outcome::Done,
            });
        }
        if stop.load(Ordering::SeqCst) && !forwarded {
            forwarded = true;
            for c in &children.0 {
                terminate(c);
            }
        }
        if let Some((_, _, at)) = failed
            && at.elapsed() > STOP_GRACE
            && !killed
        {
            killed = true;
            for (i, c) in children.0.iter_mut().enumerate() {
                if exited[i].is_none() {
                    tracing::warn!(
                        process = i,
                        "still running {} s after another failed; killing it",
                        STOP_GRACE.as_secs()
                    );
                    let _ = c.kill();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks a process to stop gracefully (SIGTERM: it finishes the batch, checkpoints, exits 0).
fn terminate(child: &Child) {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid
        && let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::TERM)
    {
        tracing::warn!(pid = child.id(), error = %e, "could not pass the stop on");
    }
}

/// `n` free ports on 127.0.0.1 (held together while picked, so they differ).
fn loopback_addresses(n: usize) -> anyhow::Result<Vec<String>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free ports on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.to_string()))
        .collect()
}

/// The flags of process `process`: the supervisor's own, less `--local-processes`, plus the
/// host file and index. Only process 0 serves and prints the JSON summary (the hub and the sinks
/// are there); `--from-scratch` applies to the first start only, so restarts resume.
fn child_args(args: &RunArgs, hosts: &Path, process: usize, first: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            out.push(format!("--{name}"));
            out.push(v);
        }
    };
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    flag("config", path(&args.config));
    flag("log", path(&args.log));
    flag("topic", args.topic.clone());
    flag(
        "input-kafka",
        args.input_kafka.as_ref().map(ToString::to_string),
    );
    flag("output-dir", path(&args.output_dir));
    flag(
        "output-kafka",
        args.output_kafka.as_ref().map(ToString::to_string),
    );
    flag("workers", args.workers.map(|w| w.to_string()));
    flag(
        "batch-interval",
        args.batch_interval
            .map(|d| humantime::format_duration(d).to_string()),
    );
    flag(
        "serve",
        args.serve.filter(|_| process == 0).map(|a| a.to_string()),
    );
    flag("checkpoint-dir", args.checkpoint_dir.clone());
    flag("checkpoint-interval", args.checkpoint_interval.clone());
    flag("hosts", Some(hosts.display().to_string()));
    flag("process", Some(process.to_string()));
    let switches = [
        ("until-end", args.until_end),
        ("json", args.json && process == 0),
        ("from-scratch", args.from_scratch && first),
        ("no-checkpoint", args.no_checkpoint),
    ];
    for (name, on) in switches {
        if on {
            out.push(format!("--{name}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn run_args(line: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(std::iter::once("clickpulse").chain(line.iter().copied()))
            .expect("parses");
        match cli.command {
            Command::Run(a) => a,
            _ => panic!("not run"),
        }
    }

    #[test]
    fn children_get_the_flags_less_local_processes_and_only_process_0_serves() {
        let args = run_args(&[
            "run",
            "--local-processes",
            "3",
            "--workers",
            "1",
            "--until-end",
            "--json",
            "--from-scratch",
            "--serve",
            "127.0.0.1:8080",
            "--batch-interval",
            "500ms",
            "--output-dir",
            "out",
        ]);
        // The flags a child gets, parsed again as its `clickpulse run` parses them.
        let child = |process: usize, first: bool| {
            let flags = child_args(&args, Path::new("/tmp/h"), process, first);
            let line: Vec<&str> = std::iter::once("run")
                .chain(flags.iter().map(String::as_str))
                .collect();
            run_args(&line)
        };
        let again = child(0, true);
        assert_eq!(again.process, Some(0));
        assert_eq!(again.local_processes, None);
        assert!(again.json && again.from_scratch && again.until_end);
        assert_eq!(again.serve.map(|a| a.port()), Some(8080));
        assert_eq!(again.batch_interval, Some(Duration::from_millis(500)));
        let again = child(2, false);
        assert_eq!(again.process, Some(2));
        assert!(again.serve.is_none() && !again.json && !again.from_scratch);
        assert_eq!(again.output_dir.as_deref(), Some(Path::new("out")));
    }
}
