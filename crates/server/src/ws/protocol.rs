//! The WebSocket protocol's control messages (see `docs/protocol.md`).
//!
//! Batch messages are built by the hub; this module parses what clients send and builds the
//! small replies.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::json::kind;

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// `{"op":"subscribe","streams":[…],"from_batch":N}`; `from_batch` optional.
    Subscribe {
        /// Stream names.
        streams: Vec<String>,
        /// The first batch id wanted (inclusive), for resuming.
        from_batch: Option<u64>,
    },
    /// `{"op":"unsubscribe","streams":[…]}`.
    Unsubscribe {
        /// Stream names.
        streams: Vec<String>,
    },
    /// `{"op":"ping"}`, answered by `{"type":"pong"}`.
    Ping,
}

/// Parses one client message.
///
/// # Errors
/// The reason to send back in an `error` message: not JSON, not an object, a missing or
/// unknown `op`, or a field of the wrong type.
///
/// # Examples
/// ```
/// use clickpulse_server::ws::{ClientOp, parse_op};
/// let op = parse_op(r#"{"op":"subscribe","streams":["top_pages"],"from_batch":42}"#);
/// assert_eq!(op, Ok(ClientOp::Subscribe { streams: vec!["top_pages".into()], from_batch: Some(42) }));
/// assert!(parse_op(r#"{"op":"dance"}"#).is_err());
/// ```
pub fn parse_op(text: &str) -> Result<ClientOp, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err(format!("expected a JSON object, found {}", kind(&value)));
    };
    let op = match map.remove("op") {
        Some(Value::String(op)) => op,
        Some(other) => return Err(format!("`op` must be a string, found {}", kind(&other))),
        None => return Err("missing field `op`".into()),
    };
    match op.as_str() {
        "subscribe" => Ok(ClientOp::Subscribe {
            streams: streams(map.remove("streams"))?,
            from_batch: from_batch(map.remove("from_batch"))?,
        }),
        "unsubscribe" => Ok(ClientOp::Unsubscribe {
            streams: streams(map.remove("streams"))?,
        }),
        "ping" => Ok(ClientOp::Ping),
        other => Err(format!(
            "unknown op {other:?}; expected subscribe, unsubscribe or ping"
        )),
    }
}

fn streams(value: Option<Value>) -> Result<Vec<String>, String> {
    let Some(Value::Array(items)) = value else {
        return Err("`streams` must be an array of stream names".into());
    };
    if items.is_empty() {
        return Err("`streams` must name at least one stream".into());
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::String(s) => Ok(s),
            other => Err(format!(
                "`streams` must hold strings, found {}",
                kind(&other)
            )),
        })
        .collect()
}

fn from_batch(value: Option<Value>) -> Result<Option<u64>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_u64() => Ok(n.as_u64()),
        Some(other) => Err(format!(
            "`from_batch` must be a non-negative integer, found {other}"
        )),
    }
}

/// `{"type":"subscribed","streams":[…],"from_batch":N|null}`.
pub(crate) fn subscribed(streams: &[String], from_batch: Option<u64>) -> Bytes {
    reply(json!({"type": "subscribed", "streams": streams, "from_batch": from_batch}))
}

/// `{"type":"unsubscribed","streams":[…]}`.
pub(crate) fn unsubscribed(streams: &[String]) -> Bytes {
    reply(json!({"type": "unsubscribed", "streams": streams}))
}

/// `{"type":"pong"}`.
pub(crate) fn pong() -> Bytes {
    Bytes::from_static(br#"{"type":"pong"}"#)
}

/// `{"type":"error","reason":…}`.
pub(crate) fn error(reason: &str) -> Bytes {
    reply(json!({"type": "error", "reason": reason}))
}

fn reply(value: Value) -> Bytes {
    Bytes::from(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ops_parse() {
        assert_eq!(parse_op(r#"{"op":"ping"}"#), Ok(ClientOp::Ping));
        assert_eq!(
            parse_op(r#"{"op":"subscribe","streams":["a","b"]}"#),
            Ok(ClientOp::Subscribe {
                streams: vec!["a".into(), "b".into()],
                from_batch: None
            })
        );
        assert_eq!(
            parse_op(r#"{"op":"subscribe","streams":["a"],"from_batch":null}"#),
            Ok(ClientOp::Subscribe {
                streams: vec!["a".into()],
                from_batch: None
            })
        );
        assert_eq!(
            parse_op(r#"{"op":"unsubscribe","streams":["a"]}"#),
            Ok(ClientOp::Unsubscribe {
                streams: vec!["a".into()]
            })
        );
    }

    #[test]
    fn invalid_ops_say_why() {
        let cases = [
            ("{", "invalid JSON"),
            ("[1]", "expected a JSON object"),
            (r#"{"streams":["a"]}"#, "missing field `op`"),
            (r#"{"op":1}"#, "`op` must be a string"),
            (r#"{"op":"dance"}"#, "unknown op \"dance\""),
            (r#"{"op":"subscribe"}"#, "`streams` must be an array"),
            (r#"{"op":"subscribe","streams":[]}"#, "at least one stream"),
            (r#"{"op":"subscribe","streams":[1]}"#, "must hold strings"),
            (
                r#"{"op":"subscribe","streams":["a"],"from_batch":-1}"#,
                "`from_batch` must be a non-negative integer",
            ),
            (
                r#"{"op":"subscribe","streams":["a"],"from_batch":"3"}"#,
                "`from_batch` must be a non-negative integer",
            ),
        ];
        for (text, reason) in cases {
            let err = parse_op(text).expect_err(text);
            assert!(err.contains(reason), "{text}: {err:?} lacks {reason:?}");
        }
    }

    #[test]
    fn replies_are_json() {
        let v: Value = serde_json::from_slice(&error("no \"such\" stream")).expect("json");
        assert_eq!(v, json!({"type": "error", "reason": "no \"such\" stream"}));
        let v: Value = serde_json::from_slice(&pong()).expect("json");
        assert_eq!(v, json!({"type": "pong"}));
    }
}
