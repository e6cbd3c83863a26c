//! `GET /ws`: the WebSocket endpoint.
//!
//! The protocol logic lives in [`run_session`], generic over the transport; this module only
//! adapts an axum [`WebSocket`] to it.

mod protocol;
mod session;

use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt, future};

pub use self::protocol::{ClientOp, parse_op};
pub use self::session::{ClientFrame, SessionEnd, run_session};
use crate::server::LiveState;

/// Largest message a client may send; requests are tiny.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// `GET /ws`: upgrades and runs a session until the client leaves or the server stops.
pub(crate) async fn handler(State(state): State<LiveState>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| client(state, socket))
}

async fn client(state: LiveState, socket: WebSocket) {
    let _gauge = state.metrics.ws_client();
    let (sink, stream) = socket.split();
    let tx = sink.with(|text: Bytes| future::ready(to_message(text)));
    let rx = stream.map(to_frame);
    let end = run_session(&state.hub, tx, rx, state.shutdown.wait()).await;
    tracing::debug!(?end, "websocket session ended");
}

/// Wraps hub/protocol JSON (always UTF-8) as a text message.
fn to_message(text: Bytes) -> Result<Message, axum::Error> {
    Utf8Bytes::try_from(text)
        .map(Message::Text)
        .map_err(axum::Error::new)
}

fn to_frame(msg: Result<Message, axum::Error>) -> ClientFrame {
    match msg {
        Ok(Message::Text(text)) => ClientFrame::Text(text.as_str().to_owned()),
        Ok(Message::Binary(_)) => ClientFrame::Binary,
        Ok(Message::Ping(_) | Message::Pong(_)) => ClientFrame::Control,
        Ok(Message::Close(_)) | Err(_) => ClientFrame::Close,
    }
}
