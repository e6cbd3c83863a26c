//! # clickpulse-testkit
//!
//! Test support shared by clickpulse's crates (a dev-dependency only): a real Kafka-protocol
//! broker for integration tests.
//!
//! [`Broker::start`] finds the `tansu` binary (`$TANSU`, then `~/.cargo/bin/tansu`, then
//! `PATH`), starts `tansu broker` on a free 127.0.0.1 port with `memory://` storage and waits
//! until the port answers; dropping the [`Broker`] kills it. Without a binary the test is skipped
//! with a message on the real stderr ([`skipped`]) — unless `CI=true`, where a missing broker
//! fails the test. `scripts/kafka-broker.sh install` installs tansu (~20 min).
//!
//! [`Broker::start_behind_proxy`] puts a TCP proxy in front (clients only ever see the proxy's
//! port), which can cut every client off and let them back in: a broker restart as clients see
//! it, without the data loss of restarting a `memory://` broker.

mod s3;

pub use s3::{S3_SETTINGS, S3Server};

use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running tansu broker, killed on drop.
pub struct Broker {
    binary: PathBuf,
    /// The port tansu listens on.
    port: u16,
    /// The proxy clients go through, if any.
    proxy: Option<Proxy>,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A TCP proxy from a public port to the broker's, which can refuse clients for a while.
struct Proxy {
    port: u16,
    blocked: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let port = listener.local_addr().expect("proxy addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let proxy = Proxy {
            port,
            blocked: Arc::default(),
            open: Arc::default(),
            stop: Arc::default(),
        };
        let (blocked, open, stop) = (
            Arc::clone(&proxy.blocked),
            Arc::clone(&proxy.open),
            Arc::clone(&proxy.stop),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) if blocked.load(Ordering::SeqCst) => drop(client),
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(("127.0.0.1", target)) {
                            let mut open = open.lock().expect("proxy lock");
                            open.push(client.try_clone().expect("clone socket"));
                            open.push(server.try_clone().expect("clone socket"));
                            pipe(
                                client.try_clone().expect("clone socket"),
                                server.try_clone().expect("clone socket"),
                            );
                            pipe(server, client);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        proxy
    }

    /// Refuses new clients and cuts the open connections.
    fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        for s in self.open.lock().expect("proxy lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.block();
    }
}

/// Copies `from` into `to` on a thread of its own until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
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

/// A TCP port on 127.0.0.1 nothing listens on right now.
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
        let mut broker = Broker {
            log: dir.path().join("tansu.log"),
            binary,
            port: free_port(),
            proxy: None,
            child: None,
            _dir: dir,
        };
        broker.spawn();
        Some(broker)
    }

    /// Like [`Broker::start`], with clients going through a proxy.
    pub fn start_behind_proxy(test: &str) -> Option<Broker> {
        let mut broker = Broker::start(test)?;
        broker.kill();
        broker.proxy = Some(Proxy::start(broker.port));
        broker.spawn();
        Some(broker)
    }

    /// The port clients use: the proxy's, or the broker's own.
    fn public_port(&self) -> u16 {
        self.proxy.as_ref().map_or(self.port, |p| p.port)
    }

    fn spawn(&mut self) {
        let listen = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.public_port());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("broker log");
        let child = Command::new(&self.binary)
            .args(["broker", "--listener-url", &listen])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
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

    /// `127.0.0.1:PORT`, as librdkafka takes it.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.public_port())
    }

    /// Kills the broker (SIGKILL: no goodbye to clients). Memory storage: its data is gone.
    /// Behind a proxy, clients are cut off too and stay cut off until the broker is back.
    pub fn kill(&mut self) {
        if let Some(proxy) = &self.proxy {
            proxy.block();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Cuts every client off (open connections closed, new ones refused) while the broker keeps
    /// running with its data: to clients, the broker went down.
    pub fn cut_off(&self) {
        self.proxy.as_ref().expect("start_behind_proxy").block();
    }

    /// Lets clients in again after [`Broker::cut_off`]: to clients, the broker came back with
    /// its data, as a durable broker does after a restart.
    pub fn reconnect(&self) {
        self.proxy.as_ref().expect("start_behind_proxy").unblock();
    }

    /// Starts the broker again on the same port (empty: memory storage).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        if let Some(proxy) = &self.proxy {
            proxy.unblock();
        }
    }

    /// `kafka://127.0.0.1:PORT`, as the CLI takes it.
    pub fn url(&self) -> String {
        format!("kafka://{}", self.brokers())
    }

    /// What the broker logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
