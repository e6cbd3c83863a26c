//! An S3-compatible server for tests: moto (`moto_server`, from PyPI's `moto[server]`) on a free
//! port, started through `scripts/s3-server.sh`; killed (its whole process group) on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// moto's credentials are not checked; object_store only needs some to sign with.
pub const S3_SETTINGS: &str = "region=us-east-1&allow_http=true\
                        &access_key_id=testing&secret_access_key=testing";

/// A running moto server, killed (its whole process group) on drop.
pub struct S3Server {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/s3-server.sh")
}

impl S3Server {
    /// Starts moto, or returns `None` (after saying why) when it is not installed and `CI` is
    /// not `true`.
    pub fn start(test: &str) -> Option<S3Server> {
        let found = Command::new("bash")
            .arg(script())
            .arg("path")
            .output()
            .expect("bash runs scripts/s3-server.sh");
        if !found.status.success() {
            let why = String::from_utf8_lossy(&found.stderr).trim().to_string();
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: CI=true and {why}"
            );
            crate::skipped(test, &why);
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("moto.log");
        let out = std::fs::File::create(&log).expect("moto log");
        let port = crate::free_port();
        let child = Command::new("bash")
            .arg(script())
            .args(["start", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("moto log"))
            .stderr(out)
            // Its own group, so that drop kills whatever the script and moto started.
            .process_group(0)
            .spawn()
            .expect("scripts/s3-server.sh start");
        let mut moto = S3Server {
            child,
            port,
            log,
            _dir: dir,
        };
        moto.wait_until_it_answers();
        Some(moto)
    }

    fn wait_until_it_answers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.http("GET", "/").is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("moto exited with {status}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "moto did not answer: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a bodiless request; returns the response's status line.
    pub fn http(&self, method: &str, path: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response.lines().next().unwrap_or_default().to_string())
    }

    /// Creates `bucket` (moto takes an unsigned `PUT /bucket`).
    pub fn create_bucket(&self, bucket: &str) {
        let status = self
            .http("PUT", &format!("/{bucket}"))
            .expect("moto answers a bucket PUT");
        assert!(status.contains(" 200 "), "PUT /{bucket}: {status}");
    }

    /// The store location of `bucket/prefix` on this server.
    pub fn location(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "s3://{bucket}/{prefix}?endpoint=http://127.0.0.1:{}&{S3_SETTINGS}",
            self.port
        )
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // The group's id is the script's pid (process_group(0)); the script execs moto.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
