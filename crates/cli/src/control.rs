//! `clickpulse status` and `clickpulse stop`: the job control API of a running
//! `clickpulse run --serve` (`GET /api/job`, `POST /api/job/stop`), from the command line.
//!
//! The server accepts job control only from its own machine (a loopback address), so the client
//! is plain HTTP, goes to the server directly (never through an `HTTP_PROXY`, whose address
//! would not be loopback) and gives up after `--timeout`. It prints the server's JSON reply;
//! when the server cannot be reached or answers an error, it fails with a message saying which
//! and why (the command then exits non-zero).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

/// `clickpulse status` and `clickpulse stop`: which server to ask.
#[derive(Debug, Clone, Args)]
pub struct ControlArgs {
    /// The job's server: http://HOST:PORT, the address given to `clickpulse run --serve`
    /// (`http://` may be left out).
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
    url: String,
    /// Give up when the server has not answered within this time, e.g. 5s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// `clickpulse status`: prints the job's status (`GET /api/job`).
///
/// # Errors
/// When the server cannot be reached, runs no job, or answers anything but success.
pub fn status(args: ControlArgs) -> anyhow::Result<()> {
    print_reply(&request(&args, Action::Status)?)
}

/// `clickpulse stop`: asks the job to stop after its batch in progress (`POST /api/job/stop`)
/// and prints the reply; returns without waiting for the job to end.
///
/// # Errors
/// When the server cannot be reached, runs no job, refuses (a client on another machine) or
/// answers anything but success.
pub fn stop(args: ControlArgs) -> anyhow::Result<()> {
    print_reply(&request(&args, Action::Stop)?)
}

/// What to ask the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Status,
    Stop,
}

impl Action {
    fn path(self) -> &'static str {
        match self {
            Action::Status => "/api/job",
            Action::Stop => "/api/job/stop",
        }
    }
}

/// The server's reply to `action`: its JSON, or its text when it is not JSON.
fn request(args: &ControlArgs, action: Action) -> anyhow::Result<Value> {
    let url = format!("{}{}", base_url(&args.url)?, action.path());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        // Error statuses come back as responses, so that their JSON reason can be shown.
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(args.timeout))
        .build()
        .into();
    let sent = match action {
        Action::Status => agent.get(&url).call(),
        Action::Stop => agent.post(&url).send_empty(),
    };
    let mut response = sent.with_context(|| {
        format!("cannot reach the clickpulse server at {url} (is `clickpulse run --serve` running there?)")
    })?;
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading the reply of {url}"))?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        let reason = body["error"]
            .as_str()
            .map_or_else(|| body.to_string(), str::to_owned);
        bail!("{url} answered {status}: {reason}");
    }
    Ok(body)
}

/// `--url` as `http://HOST:PORT[/prefix]`, without a trailing slash.
fn base_url(given: &str) -> anyhow::Result<String> {
    let given = given.trim();
    let rest = match given.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            bail!("--url {given}: job control speaks plain http:// (it answers this machine only)")
        }
        Some((scheme, _)) => bail!("--url {given}: expected http://HOST:PORT, not {scheme}://"),
        None => given,
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.starts_with('/') {
        bail!("--url {given:?}: expected http://HOST:PORT");
    }
    Ok(format!("http://{rest}"))
}

fn print_reply(reply: &Value) -> anyhow::Result<()> {
    match reply {
        Value::String(text) => println!("{text}"),
        json => println!("{}", serde_json::to_string_pretty(json)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use clickpulse_server::{
        Hub, JobControl, MemoryAppender, Metrics, ServerConfig, ServerHandle, serve,
    };
    use serde_json::json;
    use tokio::sync::oneshot;

    use super::*;

    #[test]
    fn urls_are_plain_http_without_a_trailing_slash() {
        assert_eq!(
            base_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(base_url("localhost:9000").unwrap(), "http://localhost:9000");
        for refused in ["https://h:1", "ftp://h:1", "http://", ""] {
            assert!(base_url(refused).is_err(), "{refused:?} was accepted");
        }
    }

    #[derive(Default)]
    struct FakeJob {
        stops: AtomicUsize,
    }

    impl JobControl for FakeJob {
        fn status(&self) -> Value {
            json!({"state": "running", "batch": 42})
        }
        fn stop(&self) {
            self.stops.fetch_add(1, Ordering::SeqCst);
        }
        fn checkpoint(&self) {}
    }

    /// A server on 127.0.0.1:0 on its own runtime, with `job` attached when given.
    struct Server {
        runtime: tokio::runtime::Runtime,
        handle: Option<ServerHandle>,
        stop: Option<oneshot::Sender<()>>,
    }

    impl Server {
        fn start(job: Option<Arc<dyn JobControl>>) -> Self {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let metrics = Arc::new(Metrics::new());
            let config = ServerConfig {
                bind: "127.0.0.1:0".parse().unwrap(),
                ..ServerConfig::default()
            };
            let hub = Hub::new(config.hub_config(), Arc::clone(&metrics));
            if let Some(job) = job {
                hub.set_job_control(job);
            }
            let (stop, stopped) = oneshot::channel::<()>();
            let appender = Arc::new(MemoryAppender::new());
            let handle = runtime
                .block_on(serve(config, hub, metrics, appender, async {
                    let _ = stopped.await;
                }))
                .unwrap();
            Server {
                runtime,
                handle: Some(handle),
                stop: Some(stop),
            }
        }

        fn args(&self) -> ControlArgs {
            let addr = self.handle.as_ref().unwrap().local_addr();
            ControlArgs {
                url: format!("http://{addr}"),
                timeout: Duration::from_secs(60),
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.stop.take().unwrap().send(());
            let handle = self.handle.take().unwrap();
            let _ = self.runtime.block_on(handle.wait());
        }
    }

    #[test]
    fn status_and_stop_get_the_job_s_replies() {
        let job = Arc::new(FakeJob::default());
        let server = Server::start(Some(job.clone()));
        let args = server.args();
        assert_eq!(
            request(&args, Action::Status).unwrap(),
            json!({"state": "running", "batch": 42})
        );
        assert_eq!(job.stops.load(Ordering::SeqCst), 0);
        assert_eq!(
            request(&args, Action::Stop).unwrap(),
            json!({"stopping": true})
        );
        assert_eq!(job.stops.load(Ordering::SeqCst), 1);
        status(args.clone()).unwrap();
        stop(args).unwrap();
        assert_eq!(job.stops.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_server_without_a_job_is_an_error_with_the_server_s_reason() {
        let server = Server::start(None);
        let err = request(&server.args(), Action::Stop)
            .unwrap_err()
            .to_string();
        assert!(err.contains("404"), "{err}");
        assert!(err.contains("no job runs in this server"), "{err}");
        assert!(status(server.args()).is_err());
    }

    #[test]
    fn an_unreachable_server_is_an_error_that_says_so() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args = ControlArgs {
            url: format!("127.0.0.1:{port}"),
            timeout: Duration::from_secs(60),
        };
        let err = format!("{:#}", request(&args, Action::Status).unwrap_err());
        assert!(
            err.contains("cannot reach the clickpulse server at"),
            "{err}"
        );
        assert!(stop(args).is_err());
    }
}
