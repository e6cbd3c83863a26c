//! One WebSocket client, independent of the transport: generic over a [`Sink`] of outgoing
//! JSON texts and a [`Stream`] of incoming [`ClientFrame`]s, so that it runs the same on an
//! axum socket and on in-memory channels in tests.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};

use super::protocol::{self, ClientOp, parse_op};
use crate::hub::{Hub, Subscription};

/// Most batch messages written before one flush: deliveries already waiting go out together.
const MAX_BURST: usize = 64;

/// How long a closing handshake may take at shutdown before the session gives up on it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A frame received from the client, stripped of transport details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// A text message: a JSON request.
    Text(String),
    /// A binary message (answered with an error: the protocol is JSON text).
    Binary,
    /// A transport-level ping or pong (ignored: the transport answers pings itself).
    Control,
    /// The client closed the connection, or reading failed.
    Close,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client closed the connection or its stream ended.
    ClientClosed,
    /// Writing to the client failed.
    SendFailed,
    /// The server is shutting down.
    Shutdown,
}

/// Runs one client session until the client leaves, a write fails or `shutdown` completes.
///
/// Requests are answered in order; batch messages of the client's subscriptions are written as
/// the hub offers them. A write that does not complete (a slow client) only holds up this
/// session: meanwhile the hub conflates this client's messages.
pub async fn run_session<Tx, Rx, Sd>(hub: &Hub, mut tx: Tx, mut rx: Rx, shutdown: Sd) -> SessionEnd
where
    Tx: Sink<Bytes> + Unpin,
    Rx: Stream<Item = ClientFrame> + Unpin,
    Sd: Future<Output = ()>,
{
    let sub = hub.subscription();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let outcome = tokio::select! {
            () = &mut shutdown => Err(SessionEnd::Shutdown),
            frame = rx.next() => match frame {
                Some(frame) => reply(&sub, frame).map(|r| r.map(Out::Reply)),
                None => Err(SessionEnd::ClientClosed),
            },
            delivery = sub.recv() => Ok(Some(Out::Batch(delivery.to_json()))),
        };
        let result = match outcome {
            Ok(Some(out)) => {
                tokio::select! {
                    () = &mut shutdown => Err(SessionEnd::Shutdown),
                    r = write(&mut tx, &sub, out) => r,
                }
            }
            Ok(None) => Ok(()),
            Err(end) => Err(end),
        };
        if let Err(end) = result {
            if end == SessionEnd::Shutdown {
                // Best effort: a client that does not read cannot hold up shutdown.
                let _ = tokio::time::timeout(CLOSE_GRACE, tx.close()).await;
            }
            return end;
        }
    }
}

/// Something to write to the client.
enum Out {
    /// A reply to a request.
    Reply(Bytes),
    /// A batch message, possibly followed by others already waiting.
    Batch(Bytes),
}

/// Writes `out` (and, for a batch, up to [`MAX_BURST`] waiting batches), then flushes.
async fn write<Tx>(tx: &mut Tx, sub: &Subscription, out: Out) -> Result<(), SessionEnd>
where
    Tx: Sink<Bytes> + Unpin,
{
    let failed = |_| SessionEnd::SendFailed;
    match out {
        Out::Reply(text) => tx.feed(text).await.map_err(failed)?,
        Out::Batch(text) => {
            tx.feed(text).await.map_err(failed)?;
            for _ in 1..MAX_BURST {
                let Some(next) = sub.try_recv() else { break };
                tx.feed(next.to_json()).await.map_err(failed)?;
            }
        }
    }
    tx.flush().await.map_err(failed)
}

/// The answer to one client frame; `Err` ends the session.
fn reply(sub: &Subscription, frame: ClientFrame) -> Result<Option<Bytes>, SessionEnd> {
    match frame {
        ClientFrame::Text(text) => Ok(Some(answer(sub, &text))),
        ClientFrame::Binary => Ok(Some(protocol::error(
            "binary messages are not supported; send JSON text",
        ))),
        ClientFrame::Control => Ok(None),
        ClientFrame::Close => Err(SessionEnd::ClientClosed),
    }
}

/// Executes one request and returns its reply.
fn answer(sub: &Subscription, text: &str) -> Bytes {
    match parse_op(text) {
        Ok(ClientOp::Subscribe {
            streams,
            from_batch,
        }) => match sub.subscribe(&streams, from_batch) {
            Ok(()) => protocol::subscribed(&streams, from_batch),
            Err(e) => protocol::error(&e.to_string()),
        },
        Ok(ClientOp::Unsubscribe { streams }) => {
            sub.unsubscribe(&streams);
            protocol::unsubscribed(&streams)
        }
        Ok(ClientOp::Ping) => protocol::pong(),
        Err(reason) => protocol::error(&reason),
    }
}

#[cfg(test)]
mod tests;
