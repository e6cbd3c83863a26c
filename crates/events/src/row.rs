//! A result row as JSON text: serialised once, where it was computed, and then handed unchanged
//! to every output (files, Kafka records, WebSocket and SSE messages).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// One row of a result stream: a JSON object with the stream's fields, kept as its text.
///
/// Serialising a `JsonRow` writes the text as is (it is not parsed or re-encoded); deserialising
/// one checks that the input is JSON and keeps its text. Two rows are equal when their texts are.
///
/// # Examples
/// ```
/// use clickpulse_events::JsonRow;
/// #[derive(serde::Serialize)]
/// struct PageView<'a> { url: &'a str, count: u64 }
/// let row = JsonRow::new(&PageView { url: "/news", count: 3 }).unwrap();
/// assert_eq!(row.get(), r#"{"url":"/news","count":3}"#);
/// let message = serde_json::to_string(&vec![row.clone(), row]).unwrap();
/// assert_eq!(message, r#"[{"url":"/news","count":3},{"url":"/news","count":3}]"#);
/// ```
#[derive(Clone)]
pub struct JsonRow(Box<RawValue>);

impl JsonRow {
    /// Serialises `value`.
    ///
    /// # Errors
    /// What `serde_json` reports for a value JSON cannot hold (a map with non-string keys).
    pub fn new(value: &impl Serialize) -> serde_json::Result<Self> {
        serde_json::value::to_raw_value(value).map(JsonRow)
    }

    /// Checks that `text` is one JSON value and keeps it.
    ///
    /// # Errors
    /// Where `text` stops being JSON.
    pub fn from_text(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text).map(JsonRow)
    }

    /// Checks that `bytes` are one JSON value (UTF-8) and keeps them.
    ///
    /// # Errors
    /// Where `bytes` stop being JSON.
    pub fn from_slice(bytes: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(bytes).map(JsonRow)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The row parsed, for callers that look inside (tests, keys of Kafka records).
    pub fn to_value(&self) -> serde_json::Value {
        // The text was checked or produced by serde_json, so it parses.
        serde_json::from_str(self.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl From<&serde_json::Value> for JsonRow {
    fn from(value: &serde_json::Value) -> Self {
        // A `Value` always serialises (its map keys are strings).
        JsonRow::new(value).unwrap_or_else(|_| JsonRow::from_text("null").expect("null is JSON"))
    }
}

impl From<serde_json::Value> for JsonRow {
    fn from(value: serde_json::Value) -> Self {
        JsonRow::from(&value)
    }
}

impl PartialEq for JsonRow {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for JsonRow {}

impl fmt::Debug for JsonRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl fmt::Display for JsonRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for JsonRow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonRow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(JsonRow)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keeps_text_and_round_trips_through_serde() {
        let row = JsonRow::from(json!({"b": 1, "a": "x"}));
        let text = serde_json::to_string(&row).unwrap();
        let back: JsonRow = serde_json::from_str(&text).unwrap();
        assert_eq!(back, row);
        assert_eq!(back.to_value(), json!({"a": "x", "b": 1}));
    }

    #[test]
    fn refuses_text_that_is_not_json() {
        assert!(JsonRow::from_text("{\"a\":").is_err());
        assert!(JsonRow::from_slice(b"\xff").is_err());
        assert!(JsonRow::from_text(" {\"a\":1} ").is_ok());
    }
}
