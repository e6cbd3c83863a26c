//! A published batch, serialised once and shared by every subscriber.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::{HubError, StreamUpdate};

/// The trailer of the common case: a live message that followed its predecessor directly.
const PLAIN_TRAILER: &str = r#","snapshot":false,"resync":false,"skipped":0}"#;

/// One batch of one stream as it goes on the wire.
///
/// The JSON is built once at publish time. The per-client flags (`snapshot`, `resync`,
/// `skipped`) come last in the object so that the common case (all flags off) is the shared
/// buffer itself and any other case is one copy of the shared prefix plus a new trailer.
#[derive(Debug)]
pub(crate) struct BatchMessage {
    /// The batch id.
    pub(crate) batch: u64,
    /// The complete message with all flags off.
    plain: Bytes,
    /// Length of the part of `plain` before the flags (everything up to the `rows` array).
    prefix_len: usize,
}

/// The fields every batch message carries, in wire order; `rows` follows them.
#[derive(Serialize)]
struct WireBatch<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    stream: &'a str,
    batch: u64,
    window_start_ms: Option<u64>,
    window_end_ms: Option<u64>,
}

impl BatchMessage {
    /// Serialises `update` into its wire form.
    pub(crate) fn encode(update: &StreamUpdate) -> Result<Arc<Self>, HubError> {
        let wire = WireBatch {
            kind: "batch",
            stream: &update.stream,
            batch: update.batch,
            window_start_ms: update.window_start_ms,
            window_end_ms: update.window_end_ms,
        };
        let rows: usize = update.rows.iter().map(|r| r.get().len() + 1).sum();
        let mut json = Vec::with_capacity(128 + rows + PLAIN_TRAILER.len());
        serde_json::to_writer(&mut json, &wire)?;
        // A serialised struct always ends with its closing brace: the rows go before it, as the
        // text they already are, and the flags after them.
        json.pop();
        json.extend_from_slice(br#","rows":["#);
        for (i, row) in update.rows.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            json.extend_from_slice(row.get().as_bytes());
        }
        json.push(b']');
        let prefix_len = json.len();
        json.extend_from_slice(PLAIN_TRAILER.as_bytes());
        Ok(Arc::new(BatchMessage {
            batch: update.batch,
            plain: Bytes::from(json),
            prefix_len,
        }))
    }

    /// The message without the per-client flags, `{"type":"batch",…,"rows":[…]}`: the form a
    /// hub snapshot keeps (see `snapshot.rs`), from which [`BatchMessage::encode`] gives back
    /// this message byte for byte.
    pub(crate) fn unflagged(&self) -> Vec<u8> {
        let mut json = Vec::with_capacity(self.prefix_len + 1);
        json.extend_from_slice(self.plain.get(..self.prefix_len).unwrap_or_default());
        json.push(b'}');
        json
    }

    /// The wire JSON with the given per-client flags.
    pub(crate) fn render(&self, snapshot: bool, resync: bool, skipped: u64) -> Bytes {
        if !snapshot && !resync && skipped == 0 {
            return self.plain.clone();
        }
        let trailer = format!(r#","snapshot":{snapshot},"resync":{resync},"skipped":{skipped}}}"#);
        let mut json = Vec::with_capacity(self.prefix_len + trailer.len());
        json.extend_from_slice(self.plain.get(..self.prefix_len).unwrap_or_default());
        json.extend_from_slice(trailer.as_bytes());
        Bytes::from(json)
    }
}

#[cfg(test)]
mod tests {
    use clickpulse_events::JsonRow;
    use serde_json::{Value, json};

    use super::*;

    fn update() -> StreamUpdate {
        StreamUpdate {
            stream: "top_pages".into(),
            batch: 7,
            window_start_ms: Some(1000),
            window_end_ms: None,
            rows: vec![json!({"url": "/a", "count": 3}).into()],
        }
    }

    fn parse(bytes: &Bytes) -> Value {
        serde_json::from_slice(bytes).expect("valid JSON")
    }

    #[test]
    fn plain_render_is_the_shared_buffer() {
        let msg = BatchMessage::encode(&update()).expect("encodes");
        let a = msg.render(false, false, 0);
        let b = msg.render(false, false, 0);
        assert_eq!(a.as_ptr(), b.as_ptr(), "no copy in the common case");
        assert_eq!(
            parse(&a),
            json!({"type": "batch", "stream": "top_pages", "batch": 7,
                   "window_start_ms": 1000, "window_end_ms": null,
                   "rows": [{"url": "/a", "count": 3}],
                   "snapshot": false, "resync": false, "skipped": 0})
        );
    }

    #[test]
    fn flags_are_spliced_into_valid_json() {
        let msg = BatchMessage::encode(&update()).expect("encodes");
        let v = parse(&msg.render(true, true, 4));
        assert_eq!(v["snapshot"], json!(true));
        assert_eq!(v["resync"], json!(true));
        assert_eq!(v["skipped"], json!(4));
        assert_eq!(v["rows"], json!([{"url": "/a", "count": 3}]));
        assert_eq!(v["batch"], json!(7));
    }

    /// The wire text byte for byte, with rows and without: the rows are copied in as they are.
    #[test]
    fn wire_text_is_exact() {
        let mut update = update();
        update
            .rows
            .push(JsonRow::from_text(r#"{"url":"/b \"q\"","count":1}"#).expect("JSON"));
        let msg = BatchMessage::encode(&update).expect("encodes");
        assert_eq!(
            std::str::from_utf8(&msg.render(false, false, 0)).expect("UTF-8"),
            concat!(
                r#"{"type":"batch","stream":"top_pages","batch":7,"window_start_ms":1000,"#,
                r#""window_end_ms":null,"rows":[{"count":3,"url":"/a"},{"url":"/b \"q\"","count":1}],"#,
                r#""snapshot":false,"resync":false,"skipped":0}"#
            )
        );
        update.rows.clear();
        let msg = BatchMessage::encode(&update).expect("encodes");
        assert_eq!(
            std::str::from_utf8(&msg.render(true, false, 2)).expect("UTF-8"),
            concat!(
                r#"{"type":"batch","stream":"top_pages","batch":7,"window_start_ms":1000,"#,
                r#""window_end_ms":null,"rows":[],"snapshot":true,"resync":false,"skipped":2}"#
            )
        );
    }
}
