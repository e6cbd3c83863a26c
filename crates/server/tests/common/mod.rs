//! A server on 127.0.0.1:0 with an in-memory appender, and small client helpers.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clickpulse_server::{
    EventAppender, Hub, MemoryAppender, Metrics, ServerConfig, ServerHandle, StreamUpdate, serve,
};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Guards against a hang only; no test asserts on how long anything takes.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    pub appender: Arc<MemoryAppender>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<ServerHandle>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(ServerConfig::default()).await
    }

    pub async fn start_with(config: ServerConfig) -> Self {
        let appender = Arc::new(MemoryAppender::new());
        Self::start_full(config, appender.clone(), appender).await
    }

    /// A server appending to `sink`; `appender` (the in-memory one) stays empty unless it is
    /// `sink`.
    pub async fn start_full(
        config: ServerConfig,
        sink: Arc<dyn EventAppender>,
        appender: Arc<MemoryAppender>,
    ) -> Self {
        let config = ServerConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            ..config
        };
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(config.hub_config(), metrics.clone());
        hub.register_stream("top_pages", vec!["url".into(), "count".into()]);
        hub.register_stream("page_views", vec!["url".into(), "count".into()]);
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = serve(config, hub.clone(), metrics.clone(), sink, async {
            let _ = stopped.await;
        })
        .await
        .expect("server starts");
        TestServer {
            addr: handle.local_addr(),
            hub,
            metrics,
            appender,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Publishes batch `batch` of `stream` with one row.
    pub fn publish(&self, stream: &str, batch: u64) {
        self.publish_rows(stream, batch, vec![json!({"url": "/", "count": batch})]);
    }

    pub fn publish_rows(&self, stream: &str, batch: u64, rows: Vec<Value>) {
        self.hub
            .publish(
                StreamUpdate::new(stream, batch, rows.into_iter().map(Into::into).collect())
                    .with_window(batch * 1000, batch * 1000 + 1000),
            )
            .expect("publish");
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(HANG_GUARD, handle.wait())
                .await
                .expect("server stops")
                .expect("clean shutdown");
        }
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn ws_connect(addr: SocketAddr) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("websocket connects");
    ws
}

/// A WebSocket client whose socket has a small receive buffer, so that the server's writes
/// stall soon once it stops reading.
pub async fn ws_connect_small_buffer(addr: SocketAddr) -> WebSocketStream<TcpStream> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(8 * 1024).expect("rcvbuf");
    let tcp = socket.connect(addr).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp)
        .await
        .expect("websocket handshake");
    ws
}

pub async fn ws_send<S>(ws: &mut WebSocketStream<S>, value: Value)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send");
}

/// The next JSON text message (skipping transport pings).
pub async fn ws_next<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(HANG_GUARD, ws.next())
            .await
            .expect("a message before the hang guard")
            .expect("stream open")
            .expect("no transport error");
        match msg {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON message"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Subscribes and waits for the `subscribed` acknowledgement.
pub async fn ws_subscribe<S>(ws: &mut WebSocketStream<S>, streams: &[&str], from_batch: Option<u64>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut req = json!({"op": "subscribe", "streams": streams});
    if let Some(from) = from_batch {
        req["from_batch"] = json!(from);
    }
    ws_send(ws, req).await;
    let ack = ws_next(ws).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
}

/// (batch, snapshot, resync, skipped) of a batch message.
pub fn flags(v: &Value) -> (u64, bool, bool, u64) {
    assert_eq!(v["type"], "batch", "{v}");
    (
        v["batch"].as_u64().expect("batch"),
        v["snapshot"].as_bool().expect("snapshot"),
        v["resync"].as_bool().expect("resync"),
        v["skipped"].as_u64().expect("skipped"),
    )
}

/// A minimal Server-Sent Events reader over a reqwest response.
pub struct SseReader {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

/// One SSE event: its `id:` and its `data:` parsed as JSON.
#[derive(Debug)]
pub struct SseEvent {
    pub id: Option<String>,
    pub data: Value,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        SseReader {
            body: Box::pin(response.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next event with data (comments such as keep-alives are skipped).
    pub async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim_start().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if !data.is_empty() {
                    let data = serde_json::from_str(&data).expect("JSON data");
                    return SseEvent { id, data };
                }
                continue;
            }
            let chunk = tokio::time::timeout(HANG_GUARD, self.body.next())
                .await
                .expect("an event before the hang guard")
                .expect("stream open")
                .expect("no transport error");
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }
}
