//! Cluster mode across test hosts: every process of the job in a network namespace of its own,
//! with its own IP address, the namespaces joined by veth pairs on a bridge, so the processes
//! talk over a real (virtual) network rather than loopback.
//!
//! - `clickpulse run --hosts FILE --process I` with three processes of one worker each, over the
//!   first 200,000 MSNBC events from the embedded log in several batches, writes on process 0
//!   exactly the result files (stream by stream, batch by batch, byte for byte) that one
//!   process of two workers writes; process 0's `--json` summary counts 3 processes, every
//!   event and bytes sent to the others; processes 1 and 2 write nothing on stdout and say what
//!   they did on stderr.
//! - When one host is down (its namespace's link down, its process never started), processes 0
//!   and 1 give up after `cluster.connect_timeout` and exit non-zero, process 0 naming the
//!   missing process and its address.
//!
//! The test hosts are made with iproute2's `ip` as root: a bridge, three namespaces and a veth
//! pair per namespace, all named after the test process's pid, on a 10.x.y.0/24 subnet derived
//! from it; a guard deletes them all when the test ends, failed or not. When they cannot be
//! made (not root, no `ip`, `ip netns add` or a later step refused), the test is skipped with a
//! `SKIPPED` line on the real stderr — unless `CI=true`, where that fails the test (as the
//! Kafka tests do without a broker).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{all_streams, clickpulse, replay_msnbc, result_files, run_ok, summary};

/// Events replayed into the log for the comparison.
const EVENTS: u64 = 200_000;
/// Records per partition per batch: several batches over the events.
const CHUNK: &str = "20000";
const CHUNK_VAR: &str = "CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION";
/// Every process listens on this port of its own address (each namespace has its own ports).
const PORT: u16 = 2101;
/// How many test hosts (and processes).
const HOSTS: usize = 3;
/// A safety net only: how long a cluster run may take before its processes are killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Test hosts: network namespaces on a bridge, deleted on drop. Only what was made is kept
/// here, so a set-up that fails half-way is cleaned up too.
struct TestHosts {
    ip: PathBuf,
    bridge: Option<String>,
    namespaces: Vec<String>,
    /// The veth ends in the root namespace (on the bridge).
    host_ends: Vec<String>,
    /// The veth ends inside the namespaces, by host.
    inner_ends: Vec<String>,
    addresses: Vec<Ipv4Addr>,
}

/// Tells test hosts of the same test process apart (the tests of this file run in parallel).
static SETS: AtomicU32 = AtomicU32::new(0);

impl TestHosts {
    /// Makes `n` test hosts, or returns `None` (after saying why) when they cannot be made and
    /// `CI` is not `true`.
    ///
    /// # Panics
    /// When they cannot be made under `CI=true`.
    fn create(test: &str, n: usize) -> Option<TestHosts> {
        match TestHosts::try_create(n) {
            Ok(hosts) => Some(hosts),
            Err(why) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{test}: CI=true and {why}");
                }
                clickpulse_testkit::skipped(test, &why);
                None
            }
        }
    }

    fn try_create(n: usize) -> Result<TestHosts, String> {
        let euid = rustix::process::geteuid().as_raw();
        if euid != 0 {
            return Err(format!(
                "not root (euid {euid}): network namespaces for the test hosts need root"
            ));
        }
        let ip = find_ip().ok_or("no `ip` (iproute2) in PATH, /usr/sbin or /sbin")?;
        let pid = std::process::id();
        let set = SETS.fetch_add(1, Ordering::SeqCst);
        // Interface names have at most 15 bytes: "cp" + pid (≤ 7 digits) + "-" + set + 3.
        let tag = format!("cp{pid}-{set}");
        assert!(
            tag.len() + 3 <= 15,
            "interface names from {tag} are too long"
        );
        // A subnet of its own per pid and set; nothing in the root namespace has an address on
        // it (the bridge has none), so it can only meet itself.
        let k = pid.wrapping_mul(4).wrapping_add(set);
        let (b, c) = (100 + ((k >> 8) % 100) as u8, (k % 256) as u8);
        let mut hosts = TestHosts {
            ip,
            bridge: None,
            namespaces: Vec::new(),
            host_ends: Vec::new(),
            inner_ends: Vec::new(),
            addresses: (0..n)
                .map(|i| Ipv4Addr::new(10, b, c, i as u8 + 1))
                .collect(),
        };
        // Leftovers of an earlier test process with this pid that was killed before its guard
        // ran (deleting the namespaces deletes their veth pairs).
        for i in 0..n {
            let _ = hosts.ip(&["netns", "del", &format!("{tag}-ns{i}")]);
        }
        let _ = hosts.ip(&["link", "del", &format!("{tag}br")]);

        for i in 0..n {
            let ns = format!("{tag}-ns{i}");
            hosts
                .ip(&["netns", "add", &ns])
                .map_err(|e| format!("cannot create network namespaces: {e}"))?;
            hosts.namespaces.push(ns);
        }
        let set_up = |hosts: &mut TestHosts| -> Result<(), String> {
            let bridge = format!("{tag}br");
            hosts.ip(&["link", "add", &bridge, "type", "bridge"])?;
            hosts.bridge = Some(bridge.clone());
            for i in 0..n {
                let ns = hosts.namespaces[i].clone();
                let (outer, inner) = (format!("{tag}h{i}"), format!("{tag}n{i}"));
                let address = format!("{}/24", hosts.addresses[i]);
                hosts.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
                hosts.ip(&[
                    "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                ])?;
                hosts.host_ends.push(outer.clone());
                hosts.ip(&["link", "set", &inner, "netns", &ns])?;
                hosts.inner_ends.push(inner.clone());
                hosts.ip(&["-n", &ns, "addr", "add", &address, "dev", &inner])?;
                hosts.ip(&["-n", &ns, "link", "set", &inner, "up"])?;
                hosts.ip(&["link", "set", &outer, "master", &bridge])?;
                hosts.ip(&["link", "set", &outer, "up"])?;
            }
            hosts.ip(&["link", "set", &bridge, "up"])
        };
        set_up(&mut hosts).map_err(|e| format!("cannot join the network namespaces: {e}"))?;
        Ok(hosts)
    }

    /// Runs `ip ARGS`; its stderr on failure.
    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new(&self.ip)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// `address:PORT` of every host, process 0 first.
    fn host_file(&self) -> String {
        self.addresses
            .iter()
            .map(|a| format!("{a}:{PORT}\n"))
            .collect()
    }

    /// Takes host `i` off the network: its link is down.
    fn take_down(&self, i: usize) {
        let (ns, inner) = (&self.namespaces[i], &self.inner_ends[i]);
        self.ip(&["-n", ns, "link", "set", inner, "down"])
            .unwrap_or_else(|e| panic!("taking host {i} down: {e}"));
    }

    /// `clickpulse` inside host `i`'s namespace, with the environment [`clickpulse()`] sets.
    fn clickpulse(&self, i: usize) -> Command {
        let base = clickpulse();
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", &self.namespaces[i]])
            .arg(base.get_program())
            .envs(base.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
        cmd
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth pair with an end in it; the rest goes after.
        for ns in &self.namespaces {
            if let Err(e) = self.ip(&["netns", "del", ns]) {
                eprintln!("cleaning up: {e}");
            }
        }
        for end in &self.host_ends {
            if self.ip(&["link", "show", end]).is_ok() {
                let _ = self.ip(&["link", "del", end]);
            }
        }
        if let Some(bridge) = &self.bridge
            && let Err(e) = self.ip(&["link", "del", bridge])
        {
            eprintln!("cleaning up: {e}");
        }
    }
}

/// iproute2's `ip`: from PATH, else where Debian puts it.
fn find_ip() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join("ip"))
        .find(|p| p.is_file())
}

/// The processes of a cluster run, each with its stdout and stderr in files; any still running
/// on drop are killed.
struct Processes {
    children: Vec<(usize, Child)>,
    dir: PathBuf,
}

impl Processes {
    /// Starts process `i` for each of `which` inside its host with `args`, `env` and `--hosts
    /// hosts --process i`; their outputs go to `dir`.
    fn start(
        hosts: &TestHosts,
        which: &[usize],
        host_file: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        dir: &Path,
    ) -> Processes {
        std::fs::create_dir_all(dir).unwrap();
        let mut processes = Processes {
            children: Vec::new(),
            dir: dir.to_path_buf(),
        };
        for &i in which {
            let mut cmd = hosts.clickpulse(i);
            cmd.arg("run")
                .arg("--hosts")
                .arg(host_file)
                .args(["--process", &i.to_string()])
                .args(args)
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(File::create(processes.stdout_path(i)).unwrap())
                .stderr(File::create(processes.stderr_path(i)).unwrap());
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
            processes.children.push((i, child));
        }
        processes
    }

    fn stdout_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("process-{i}.stdout"))
    }

    fn stderr_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("process-{i}.stderr"))
    }

    fn stdout(&self, i: usize) -> Vec<u8> {
        std::fs::read(self.stdout_path(i)).unwrap_or_default()
    }

    fn stderr(&self, i: usize) -> String {
        String::from_utf8_lossy(&std::fs::read(self.stderr_path(i)).unwrap_or_default())
            .into_owned()
    }

    /// Every process's stderr, for a failure message.
    fn stderrs(&self) -> String {
        self.children
            .iter()
            .map(|(i, _)| format!("--- process {i} stderr:\n{}", self.stderr(*i)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits for every process to exit; panics with their stderr (after killing those still
    /// running) when that takes longer than `timeout`.
    fn wait(&mut self, timeout: Duration) -> Vec<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut statuses: Vec<Option<ExitStatus>> = vec![None; self.children.len()];
        while statuses.iter().any(Option::is_none) {
            for (status, (_, child)) in statuses.iter_mut().zip(&mut self.children) {
                if status.is_none() {
                    *status = child.try_wait().unwrap();
                }
            }
            if Instant::now() >= deadline && statuses.iter().any(Option::is_none) {
                let running: Vec<usize> = self
                    .children
                    .iter()
                    .zip(&statuses)
                    .filter(|(_, s)| s.is_none())
                    .map(|((i, _), _)| *i)
                    .collect();
                self.kill();
                panic!(
                    "processes {running:?} still running after {timeout:?}; killed them\n{}",
                    self.stderrs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        statuses.into_iter().map(Option::unwrap).collect()
    }

    fn kill(&mut self) {
        for (_, child) in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn three_hosts_write_what_one_process_writes() {
    let test = "three_hosts_write_what_one_process_writes";
    let Some(hosts) = TestHosts::create(test, HOSTS) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    replay_msnbc(&log, Some(EVENTS));

    let reference = dir.path().join("reference");
    let out = run_ok(
        clickpulse()
            .args(["run", "--until-end", "--no-checkpoint", "--json"])
            .args(["--workers", "2", "--topic", "clicks", "--log"])
            .arg(&log)
            .arg("--output-dir")
            .arg(&reference)
            .env(CHUNK_VAR, CHUNK),
    );
    let one = summary(&out.stdout);
    assert_eq!(one["events"].as_u64(), Some(EVENTS), "{one}");
    assert!(one["batches"].as_u64().unwrap() > 1, "{one}");

    let host_file = dir.path().join("hosts");
    std::fs::write(&host_file, hosts.host_file()).unwrap();
    let results = dir.path().join("results");
    let (log_arg, results_arg) = (log.to_str().unwrap(), results.to_str().unwrap());
    let mut processes = Processes::start(
        &hosts,
        &[0, 1, 2],
        &host_file,
        &[
            "--workers",
            "1",
            "--until-end",
            "--no-checkpoint",
            "--json",
            "--topic",
            "clicks",
            "--log",
            log_arg,
            "--output-dir",
            results_arg,
        ],
        &[(CHUNK_VAR, CHUNK)],
        &dir.path().join("processes"),
    );
    let statuses = processes.wait(RUN_TIMEOUT);
    assert!(
        statuses.iter().all(ExitStatus::success),
        "exit statuses {statuses:?}\n{}",
        processes.stderrs()
    );

    let expected = result_files(&reference);
    let got = result_files(&results);
    assert!(!expected.is_empty(), "the reference run wrote nothing");
    let streams = |files: &BTreeMap<PathBuf, Vec<u8>>| {
        files
            .keys()
            .filter_map(|k| k.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<BTreeSet<_>>()
    };
    let expected_streams = streams(&expected);
    for stream in clickpulse_job::STREAMS {
        assert!(
            expected_streams.contains(stream),
            "the reference run wrote no {stream}: {expected_streams:?}"
        );
    }
    assert!(
        expected_streams
            .iter()
            .all(|s| all_streams().contains(&s.as_str())),
        "unknown streams in the reference: {expected_streams:?}"
    );
    assert_eq!(streams(&got), expected_streams, "streams written");
    let keys: BTreeSet<&PathBuf> = expected.keys().chain(got.keys()).collect();
    for file in keys {
        match (expected.get(file), got.get(file)) {
            (Some(e), Some(g)) if e == g => {}
            (Some(e), Some(g)) => panic!(
                "{} differs: {} bytes from one process, {} bytes from three\n\
                 one process:    {}\nthree processes: {}",
                file.display(),
                e.len(),
                g.len(),
                first_line(e),
                first_line(g)
            ),
            (Some(_), None) => panic!("{} missing from the cluster run", file.display()),
            (None, _) => panic!("{} not written by one process", file.display()),
        }
    }

    let stdout0 = processes.stdout(0);
    let three = summary(&stdout0);
    assert_eq!(three["processes"].as_u64(), Some(HOSTS as u64), "{three}");
    assert_eq!(three["events"].as_u64(), Some(EVENTS), "{three}");
    assert_eq!(three["batches"], one["batches"], "{three}\n{one}");
    let sent = three["exchange_bytes_sent"].as_u64();
    assert!(sent.is_some_and(|b| b > 0), "{three}");
    for i in 1..HOSTS {
        let stdout = processes.stdout(i);
        assert!(
            stdout.is_empty(),
            "process {i} printed on stdout: {}",
            String::from_utf8_lossy(&stdout)
        );
        let stderr = processes.stderr(i);
        assert!(
            stderr.contains(&format!("process {i}: done after")),
            "process {i} stderr: {stderr}"
        );
    }
    eprintln!("{three}\n{}", processes.stderrs());
}

/// The first line of a result file, for a failure message.
fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}

#[test]
fn a_host_that_is_down_is_named() {
    let test = "a_host_that_is_down_is_named";
    let Some(hosts) = TestHosts::create(test, HOSTS) else {
        return;
    };
    hosts.take_down(2);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    replay_msnbc(&log, Some(1000));
    let host_file = dir.path().join("hosts");
    std::fs::write(&host_file, hosts.host_file()).unwrap();
    let results = dir.path().join("results");
    let (log_arg, results_arg) = (log.to_str().unwrap(), results.to_str().unwrap());
    let mut processes = Processes::start(
        &hosts,
        &[0, 1],
        &host_file,
        &[
            "--workers",
            "1",
            "--until-end",
            "--no-checkpoint",
            "--topic",
            "clicks",
            "--log",
            log_arg,
            "--output-dir",
            results_arg,
        ],
        &[("CLICKPULSE__CLUSTER__CONNECT_TIMEOUT", "2s")],
        &dir.path().join("processes"),
    );
    let statuses = processes.wait(Duration::from_secs(30));
    assert!(
        statuses.iter().all(|s| !s.success()),
        "exit statuses {statuses:?}: both must fail\n{}",
        processes.stderrs()
    );
    let stderr = processes.stderr(0);
    let missing = format!("{}:{PORT}", hosts.addresses[2]);
    assert!(
        stderr.contains("process 2") && stderr.contains(&missing),
        "process 0 does not name process 2 at {missing}:\n{}",
        processes.stderrs()
    );
    eprintln!("{}", processes.stderrs());
}
