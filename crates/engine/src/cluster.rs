//! Cluster mode: the connections between the processes of a job.
//!
//! timely carries every exchange between processes over one TCP connection per pair of
//! processes. Its own set-up retries a missing peer forever and, once running, takes a lost
//! connection down with a panic that names no one. The engine therefore makes the connections
//! itself, with a deadline and a handshake that checks every process runs the same job with the
//! same number of workers, and hands them to timely's communication layer
//! ([`initialize_networking_from_sockets`]), which does everything else. Each connection is
//! wrapped to count its bytes and to note when and how it ended, so that a lost process is named
//! when the job stops (timely is fail-stop: a lost peer ends the computation everywhere; the layer
//! above restarts it from its checkpoint).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once, OnceLock};
use std::time::{Duration, Instant};

use timely::communication::Hooks;
use timely::communication::allocator::zero_copy::initialize::{
    CommsGuard, initialize_networking_from_sockets,
};
use timely::communication::allocator::zero_copy::stream::Stream;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};

use crate::error::{EngineError, Result};

/// The handshake's first bytes: "clickpulse cluster", version 1.
const MAGIC: u64 = 0x4350_434c_5553_0001;

/// How long the processes of a job wait for each other to start (default).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// One process's view of its peers: bytes sent, and the first connection that ended.
#[derive(Debug, Default)]
pub struct ClusterStats {
    addresses: Vec<String>,
    sent: AtomicU64,
    /// The first peer whose connection ended, and how.
    first_end: OnceLock<(usize, String)>,
}

impl ClusterStats {
    fn new(addresses: &[String]) -> Self {
        ClusterStats {
            addresses: addresses.to_vec(),
            ..ClusterStats::default()
        }
    }

    /// The address of process `process` in the host file.
    pub fn address(&self, process: usize) -> Option<&str> {
        self.addresses.get(process).map(String::as_str)
    }

    /// How many processes run the job.
    pub fn processes(&self) -> usize {
        self.addresses.len()
    }

    /// Bytes sent to all other processes so far.
    pub fn sent_bytes(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn note_end(&self, peer: usize, how: String) {
        // Only the first end counts: later ones are the other processes stopping after it.
        let _ = self.first_end.set((peer, how));
    }

    /// The first peer whose connection ended, if one did. Asked only when the computation broke
    /// off: processes end together, so the first connection to end is the lost one's (the
    /// others close theirs after it).
    pub(crate) fn lost_peer(&self) -> Option<EngineError> {
        self.first_end
            .get()
            .map(|(peer, how)| EngineError::PeerLost {
                process: *peer,
                address: self.addresses.get(*peer).cloned().unwrap_or_default(),
                cause: how.clone(),
            })
    }
}

/// A connection to one peer, as timely's communication threads use it: counts the bytes sent
/// and notes how it ended.
pub(crate) struct PeerStream {
    inner: TcpStream,
    peer: usize,
    stats: Arc<ClusterStats>,
}

impl Read for PeerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.stats
                    .note_end(self.peer, "the connection closed".to_string());
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted && e.kind() != io::ErrorKind::WouldBlock {
                    self.stats
                        .note_end(self.peer, format!("reading failed: {e}"));
                }
                Err(e)
            }
        }
    }
}

impl Write for PeerStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.inner.write(buf) {
            Ok(n) => {
                self.stats.sent.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted && e.kind() != io::ErrorKind::WouldBlock {
                    self.stats
                        .note_end(self.peer, format!("writing failed: {e}"));
                }
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Stream for PeerStream {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(PeerStream {
            inner: self.inner.try_clone()?,
            peer: self.peer,
            stats: Arc::clone(&self.stats),
        })
    }

    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.set_nonblocking(nonblocking)
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }
}

/// What every process tells every other when they connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hello {
    process: u64,
    processes: u64,
    workers: u64,
    job: u64,
}

impl Hello {
    fn write(&self, s: &mut TcpStream) -> io::Result<()> {
        let mut bytes = [0u8; 40];
        for (i, v) in [MAGIC, self.process, self.processes, self.workers, self.job]
            .iter()
            .enumerate()
        {
            bytes[i * 8..(i + 1) * 8].copy_from_slice(&v.to_le_bytes());
        }
        s.write_all(&bytes)
    }

    fn read(s: &mut TcpStream) -> io::Result<Option<Hello>> {
        let mut bytes = [0u8; 40];
        s.read_exact(&mut bytes)?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i * 8..(i + 1) * 8]);
            u64::from_le_bytes(w)
        };
        if word(0) != MAGIC {
            return Ok(None);
        }
        Ok(Some(Hello {
            process: word(1),
            processes: word(2),
            workers: word(3),
            job: word(4),
        }))
    }

    /// Why `peer` cannot run with this process, if it cannot.
    fn mismatch(&self, peer: &Hello, address: &str) -> Option<String> {
        let who = format!("process {} ({address})", peer.process);
        if peer.processes != self.processes {
            Some(format!(
                "{who} has a host file of {} processes, this process one of {}: every process needs the same host file",
                peer.processes, self.processes
            ))
        } else if peer.workers != self.workers {
            Some(format!(
                "{who} runs {} workers, this process {}: every process needs the same --workers",
                peer.workers, self.workers
            ))
        } else if peer.job != self.job {
            Some(format!(
                "{who} runs a different job (its job file differs): every process needs the same job file"
            ))
        } else {
            None
        }
    }
}

/// The connections of this process to every other, ready for timely, and their statistics.
pub(crate) struct Connected {
    pub builders: Vec<AllocatorBuilder>,
    pub guard: CommsGuard,
    pub stats: Arc<ClusterStats>,
}

/// Connects this process (`process` of `addresses`) to every other within `timeout`: it listens
/// on its own address, connects to every lower-numbered process and accepts every higher-numbered
/// one, as timely does, and checks that all run `workers` workers and the same `job`.
pub(crate) fn connect(
    addresses: &[String],
    process: usize,
    workers: usize,
    job: u64,
    timeout: Duration,
) -> Result<Connected> {
    let stats = Arc::new(ClusterStats::new(addresses));
    let me = Hello {
        process: process as u64,
        processes: addresses.len() as u64,
        workers: workers as u64,
        job,
    };
    let deadline = Instant::now() + timeout;
    let start_err = |message: String| EngineError::ClusterStart { process, message };
    let own = &addresses[process];
    let listener = bind(own).map_err(|e| start_err(format!("cannot listen on {own}: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| start_err(e.to_string()))?;
    let mut sockets: Vec<Option<TcpStream>> = (0..addresses.len()).map(|_| None).collect();
    for (peer, address) in addresses.iter().enumerate().take(process) {
        let mut stream = connect_until(address, deadline).map_err(|e| {
            start_err(format!(
                "process {peer} at {address} could not be reached within {}: {e}",
                humanize(timeout)
            ))
        })?;
        stream
            .set_read_timeout(Some(remaining(deadline)))
            .map_err(|e| start_err(e.to_string()))?;
        me.write(&mut stream)
            .and_then(|()| Hello::read(&mut stream))
            .map_err(|e| start_err(format!("handshake with process {peer} at {address}: {e}")))
            .and_then(|hello| match hello {
                None => Err(start_err(format!(
                    "{address} (process {peer}) is not a clickpulse process of this job"
                ))),
                Some(h) if h.process != peer as u64 => Err(start_err(format!(
                    "{address} answered as process {}, the host file says process {peer}",
                    h.process
                ))),
                Some(h) => match me.mismatch(&h, address) {
                    Some(why) => Err(start_err(why)),
                    None => Ok(()),
                },
            })?;
        sockets[peer] = Some(stream);
    }
    while sockets.iter().skip(process + 1).any(Option::is_none) {
        match listener.accept() {
            Ok((mut stream, from)) => {
                stream
                    .set_nonblocking(false)
                    .and_then(|()| stream.set_read_timeout(Some(remaining(deadline))))
                    .map_err(|e| start_err(e.to_string()))?;
                let hello = match Hello::read(&mut stream) {
                    Ok(Some(h)) => h,
                    // Not one of ours (a port scan, a health check): ignore it.
                    Ok(None) | Err(_) => {
                        tracing::warn!(%from, "a connection that is not a clickpulse process; ignored");
                        continue;
                    }
                };
                let peer = usize::try_from(hello.process).unwrap_or(usize::MAX);
                let address = addresses.get(peer).map_or("?", String::as_str);
                if peer <= process || peer >= addresses.len() || sockets[peer].is_some() {
                    return Err(start_err(format!(
                        "{from} says it is process {peer}, which this process does not expect"
                    )));
                }
                // Answer first, so that both sides can name a mismatch.
                me.write(&mut stream).map_err(|e| {
                    start_err(format!("handshake with process {peer} at {address}: {e}"))
                })?;
                if let Some(why) = me.mismatch(&hello, address) {
                    return Err(start_err(why));
                }
                sockets[peer] = Some(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<String> = (process + 1..addresses.len())
                        .filter(|p| sockets[*p].is_none())
                        .map(|p| format!("process {p} ({})", addresses[p]))
                        .collect();
                    return Err(start_err(format!(
                        "{} did not connect within {}",
                        missing.join(", "),
                        humanize(timeout)
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(start_err(format!("accepting on {own}: {e}"))),
        }
    }
    let streams: Vec<Option<PeerStream>> = sockets
        .into_iter()
        .enumerate()
        .map(|(peer, s)| {
            s.map(|inner| {
                let _ = inner.set_read_timeout(None);
                let _ = inner.set_nodelay(true);
                keep_alive(&inner);
                PeerStream {
                    inner,
                    peer,
                    stats: Arc::clone(&stats),
                }
            })
        })
        .collect();
    quiet_communication_panics();
    let hooks = Hooks::default();
    let local =
        ProcessBuilder::new_typed_vector(workers, hooks.refill.clone(), hooks.spill.clone());
    let (builders, guard) =
        initialize_networking_from_sockets(local, streams, process, workers, hooks)
            .map_err(|e| start_err(format!("starting the communication threads: {e}")))?;
    tracing::info!(
        process,
        processes = addresses.len(),
        workers,
        "connected to every process of the job"
    );
    Ok(Connected {
        builders: builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
        guard,
        stats,
    })
}

fn bind(address: &str) -> io::Result<TcpListener> {
    let mut last = io::Error::new(
        io::ErrorKind::InvalidInput,
        "the address resolves to nothing",
    );
    for a in address.to_socket_addrs()? {
        match TcpListener::bind(a) {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn connect_until(address: &str, deadline: Instant) -> io::Result<TcpStream> {
    loop {
        let attempt = address.to_socket_addrs().and_then(|mut addrs| {
            let a = addrs.next().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the address resolves to nothing",
                )
            })?;
            TcpStream::connect_timeout(&a, remaining(deadline).min(Duration::from_secs(2)))
        });
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10))
}

fn humanize(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// A peer whose machine vanishes (no close, no reset) is noticed within about 10 s.
fn keep_alive(s: &TcpStream) {
    let sock = socket2::SockRef::from(s);
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(3))
        .with_interval(Duration::from_secs(1))
        .with_retries(4);
    if let Err(e) = sock.set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "TCP keepalive not set");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = sock.set_tcp_user_timeout(Some(Duration::from_secs(10))) {
        tracing::debug!(error = %e, "TCP user timeout not set");
    }
}

/// timely's communication threads and the workers behind them end a computation whose peer is
/// lost with panics ("timely communication error", "MergeQueue poisoned"). The engine reports the
/// lost peer by name instead; those panics' default messages (and backtraces) are left out.
fn quiet_communication_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if is_communication_panic(text) {
                tracing::debug!(panic = text, "communication ended");
                return;
            }
            previous(info);
        }));
    });
}

/// Whether a worker's or communication thread's panic is timely's reaction to a lost peer.
pub(crate) fn is_communication_panic(text: &str) -> bool {
    text.contains("timely communication error")
        || text.contains("MergeQueue poisoned")
        || text.contains("Send thread panic")
        || text.contains("Recv thread panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    #[test]
    fn a_missing_process_is_named_after_the_deadline() {
        let addresses = vec![
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        ];
        let err = connect(&addresses, 0, 1, 7, Duration::from_millis(300))
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(text.contains("process 1"), "{text}");
        assert!(text.contains("did not connect"), "{text}");
    }

    #[test]
    fn processes_with_other_worker_counts_or_jobs_are_refused() {
        for (workers, job, expect) in [(2, 7, "workers"), (1, 8, "different job")] {
            let addresses = vec![
                format!("127.0.0.1:{}", free_port()),
                format!("127.0.0.1:{}", free_port()),
            ];
            let a = addresses.clone();
            let first =
                std::thread::spawn(move || connect(&a, 0, 1, 7, Duration::from_secs(5)).err());
            let second = connect(&addresses, 1, workers, job, Duration::from_secs(5))
                .err()
                .unwrap();
            assert!(second.to_string().contains(expect), "{second}");
            // Process 0 sees the refusal as a mismatch too, or a closed handshake.
            assert!(first.join().unwrap().is_some());
        }
    }
}
