//! `ObjectCheckpointStore` on S3-compatible storage: a real moto server (`moto_server`, from
//! PyPI's `moto[server]`) on a free port, started through `scripts/s3-server.sh`. Without
//! moto the test says it was skipped and why; under `CI=true` that is a failure.
//! `scripts/s3-server.sh install` installs moto.
#![allow(clippy::unwrap_used, reason = "test helpers")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clickpulse_checkpoint::ObjectCheckpointStore;
use clickpulse_engine::checkpoint::{CheckpointStore, StoreError};

const TEST: &str = "s3_moto";

/// moto's credentials are not checked; object_store only needs some to sign with.
const SETTINGS: &str = "region=us-east-1&allow_http=true\
                        &access_key_id=testing&secret_access_key=testing";

/// A running moto server, killed (its whole process group) on drop.
struct Moto {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/s3-server.sh")
}

impl Moto {
    /// Starts moto, or returns `None` (after saying why) when it is not installed and `CI` is
    /// not `true`.
    fn start() -> Option<Moto> {
        let found = Command::new("bash")
            .arg(script())
            .arg("path")
            .output()
            .expect("bash runs scripts/s3-server.sh");
        if !found.status.success() {
            let why = String::from_utf8_lossy(&found.stderr).trim().to_string();
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{TEST}: CI=true and {why}"
            );
            clickpulse_testkit::skipped(TEST, &why);
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("moto.log");
        let out = std::fs::File::create(&log).expect("moto log");
        let port = clickpulse_testkit::free_port();
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
        let mut moto = Moto {
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
    fn http(&self, method: &str, path: &str) -> std::io::Result<String> {
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
    fn create_bucket(&self, bucket: &str) {
        let status = self.http("PUT", &format!("/{bucket}")).unwrap();
        assert!(status.contains(" 200 "), "PUT /{bucket}: {status}");
    }

    /// The store location of `bucket/prefix` on this server.
    fn location(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "s3://{bucket}/{prefix}?endpoint=http://127.0.0.1:{}&{SETTINGS}",
            self.port
        )
    }

    fn open(&self, bucket: &str, prefix: &str) -> ObjectCheckpointStore {
        ObjectCheckpointStore::open(&self.location(bucket, prefix)).unwrap()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // The group's id is the script's pid (process_group(0)); the script execs moto.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn checkpoint_store_on_moto_s3() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("ckpt");

    for (name, check) in common::CHECKS {
        let store = moto.open("ckpt", &format!("checks/{name}"));
        assert_eq!(
            store.describe(),
            format!(
                "s3://ckpt/checks/{name} (endpoint http://127.0.0.1:{})",
                moto.port
            )
        );
        check(&store);
    }

    prefixes_keep_stores_apart(&moto);
    a_missing_bucket_is_an_io_error_naming_the_store(&moto);
}

fn prefixes_keep_stores_apart(moto: &Moto) {
    let a = moto.open("ckpt", "tenants/a");
    let b = moto.open("ckpt", "tenants/b");
    a.put("x", b"from a".to_vec()).unwrap();
    assert_eq!(b.list("").unwrap(), Vec::<String>::new());
    assert_eq!(b.get("x").unwrap(), None);
    let bucket = moto.open("ckpt", "");
    assert_eq!(bucket.list("tenants/").unwrap(), ["tenants/a/x"]);
    assert_eq!(
        bucket.get("tenants/a/x").unwrap().as_deref(),
        Some(&b"from a"[..])
    );
}

fn a_missing_bucket_is_an_io_error_naming_the_store(moto: &Moto) {
    let store = moto.open("no-such-bucket", "p");
    let err = store.put("x", b"x".to_vec()).unwrap_err();
    let StoreError::Io {
        store: name,
        operation,
        path,
        ..
    } = &err;
    assert!(name.starts_with("s3://no-such-bucket/p"), "{err}");
    assert_eq!((*operation, path.as_str()), ("put", "x"));
    assert!(
        std::error::Error::source(&err).is_some(),
        "no cause chained: {err}"
    );
}
