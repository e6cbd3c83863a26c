//! A batch's rows as one text: every row's JSON back to back, and where each ends.

use std::fmt;

use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::row::{JsonObject, JsonRow};

/// The rows of a result batch, each a JSON object's text, kept in one buffer.
///
/// A batch has thousands of rows. As separate [`JsonRow`]s, each is an allocation where it is
/// written, a free wherever the batch is dropped (another thread: the sink's), and a pointer to
/// follow; here the whole batch is two allocations, and rows are copied from one batch to another
/// as slices of text.
///
/// Serialised with serde, the rows are a sequence of JSON values written as they are (checked,
/// as with [`JsonRow`]); deserialising checks each value and keeps its text. Two batches of rows
/// are equal when their rows' texts are.
///
/// # Examples
/// ```
/// use clickpulse_events::{JsonRow, JsonRows};
/// let mut rows = JsonRows::new();
/// rows.object(|o| {
///     o.str("url", "/news").u64("count", 3);
/// });
/// rows.push(r#"{"url":"/sports","count":1}"#).unwrap();
/// assert_eq!(rows.len(), 2);
/// assert_eq!(rows.get(0), Some(r#"{"url":"/news","count":3}"#));
/// let texts: Vec<&str> = rows.iter().collect();
/// assert_eq!(texts[1], r#"{"url":"/sports","count":1}"#);
/// assert_eq!(
///     serde_json::to_string(&rows).unwrap(),
///     r#"[{"url":"/news","count":3},{"url":"/sports","count":1}]"#
/// );
/// assert!(rows.push("{not json").is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct JsonRows {
    text: String,
    /// Where each row's text ends in `text` (and the next one starts).
    ends: Vec<usize>,
}

impl JsonRows {
    /// No rows.
    pub fn new() -> Self {
        JsonRows::default()
    }

    /// No rows yet, with room for `rows` rows of `bytes` bytes of text in all.
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        JsonRows {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(rows),
        }
    }

    /// Appends the object `fill` writes, field by field, in the order it writes them: the text
    /// `serde_json` gives a struct of those fields (see [`JsonRow::object`]).
    #[inline]
    pub fn object(&mut self, fill: impl FnOnce(&mut JsonObject<'_>)) {
        JsonObject::write(&mut self.text, fill);
        self.ends.push(self.text.len());
    }

    /// Appends `row`, after checking that it is JSON (surrounding whitespace is dropped).
    ///
    /// # Errors
    /// What `serde_json` reports for text that is not one JSON value.
    pub fn push(&mut self, row: &str) -> serde_json::Result<()> {
        let raw: &RawValue = serde_json::from_str(row)?;
        self.push_trusted(raw.get());
        Ok(())
    }

    /// Appends a row of another batch of rows (or of a [`JsonRow`]), which is JSON already.
    #[inline]
    fn push_trusted(&mut self, row: &str) {
        self.text.push_str(row);
        self.ends.push(self.text.len());
    }

    /// Appends row `i` of `other`; nothing when it has no such row.
    #[inline]
    pub fn push_from(&mut self, other: &JsonRows, i: usize) {
        if let Some(row) = other.get(i) {
            self.push_trusted(row);
        }
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of all the rows' texts.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Row `i`'s text.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = match i.checked_sub(1) {
            Some(before) => *self.ends.get(before)?,
            None => 0,
        };
        self.text.get(start..end)
    }

    /// The rows' texts, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }

    /// The rows, in `order` (indices into these rows; one that is out of range is skipped).
    pub fn reordered(&self, order: impl IntoIterator<Item = usize>) -> JsonRows {
        let mut out = JsonRows::with_capacity(self.len(), self.text.len());
        for i in order {
            out.push_from(self, i);
        }
        out
    }

    /// Each row as a [`JsonRow`] of its own.
    pub fn to_rows(&self) -> Vec<JsonRow> {
        self.iter().map(JsonRow::trusted).collect()
    }

    /// Each row parsed, for callers that look inside (tests).
    pub fn to_values(&self) -> Vec<serde_json::Value> {
        // Every row is JSON: written by `JsonObject` or checked when it was pushed.
        self.iter()
            .map(|row| serde_json::from_str(row).unwrap_or(serde_json::Value::Null))
            .collect()
    }
}

impl From<Vec<JsonRow>> for JsonRows {
    fn from(rows: Vec<JsonRow>) -> Self {
        rows.into_iter().collect()
    }
}

impl From<Vec<serde_json::Value>> for JsonRows {
    fn from(values: Vec<serde_json::Value>) -> Self {
        values.iter().map(JsonRow::from).collect()
    }
}

impl FromIterator<JsonRow> for JsonRows {
    fn from_iter<I: IntoIterator<Item = JsonRow>>(rows: I) -> Self {
        let mut out = JsonRows::new();
        for row in rows {
            out.push_trusted(row.get());
        }
        out
    }
}

impl fmt::Debug for JsonRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for JsonRows {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for row in self.iter() {
            // As `JsonRow` does: serde hands over raw text only as a checked `RawValue`.
            let raw: &RawValue = serde_json::from_str(row).map_err(serde::ser::Error::custom)?;
            seq.serialize_element(raw)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for JsonRows {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Each value checked as JSON, then its text kept.
        let raw = Vec::<Box<RawValue>>::deserialize(deserializer)?;
        let bytes = raw.iter().map(|r| r.get().len()).sum();
        let mut rows = JsonRows::with_capacity(raw.len(), bytes);
        for row in &raw {
            rows.push_trusted(row.get());
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::JsonRows;
    use crate::JsonRow;

    proptest! {
        /// Rows written into one text read back as the same rows [`JsonRow`] writes one by one,
        /// reorder like a vector of them, and round-trip through serde.
        #[test]
        fn rows_are_what_json_row_writes_one_by_one(
            fields in prop::collection::vec(("\\PC{0,8}|[\"\\\\\u{1}é]{0,3}", any::<u64>(), any::<i64>()), 0..12),
            order in prop::collection::vec(0usize..14, 0..20),
        ) {
            let mut rows = JsonRows::new();
            let mut model = Vec::new();
            for (s, u, i) in &fields {
                let fill = |o: &mut crate::JsonObject<'_>| {
                    o.str("s", s).u64("u", *u).i64("i", *i);
                };
                rows.object(fill);
                model.push(JsonRow::object(fill));
            }
            prop_assert_eq!(rows.len(), model.len());
            prop_assert_eq!(rows.iter().collect::<Vec<_>>(), model.iter().map(JsonRow::get).collect::<Vec<_>>());
            for (i, row) in model.iter().enumerate() {
                prop_assert_eq!(rows.get(i), Some(row.get()));
            }
            prop_assert_eq!(rows.get(model.len()), None);
            prop_assert_eq!(&rows.to_rows(), &model);
            prop_assert_eq!(&JsonRows::from(model.clone()), &rows);
            // Values become rows of the text serde_json writes for them (keys in its order).
            let values = rows.to_values();
            let written: Vec<String> = values.iter().map(|v| serde_json::to_string(v).unwrap()).collect();
            let from_values = JsonRows::from(values);
            prop_assert_eq!(from_values.iter().collect::<Vec<_>>(), written);

            let reordered = rows.reordered(order.iter().copied());
            let expected: Vec<&str> = order.iter().filter_map(|&i| model.get(i)).map(JsonRow::get).collect();
            prop_assert_eq!(reordered.iter().collect::<Vec<_>>(), expected);

            let text = serde_json::to_string(&rows).unwrap();
            prop_assert_eq!(&text, &serde_json::to_string(&model).unwrap());
            let back: JsonRows = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, rows);
        }
    }

    #[test]
    fn pushed_rows_are_checked_and_trimmed() {
        let mut rows = JsonRows::with_capacity(2, 16);
        rows.push(" {\"a\":1} \n").unwrap();
        assert!(rows.push("{\"a\":").is_err());
        assert!(rows.push("").is_err());
        rows.push("[]").unwrap();
        assert_eq!(rows.iter().collect::<Vec<_>>(), ["{\"a\":1}", "[]"]);
        assert_eq!(rows.to_values(), vec![json!({"a": 1}), json!([])]);
        assert_eq!(rows.text_len(), 9);
        assert!(JsonRows::new().is_empty());
        assert_eq!(format!("{rows:?}"), r#"["{\"a\":1}", "[]"]"#);
        // An empty object is written as `{}`, and the next object gets no stray comma.
        let mut objects = JsonRows::new();
        objects.object(|_| {});
        objects.object(|o| {
            o.u64("n", 1);
        });
        assert_eq!(objects.iter().collect::<Vec<_>>(), ["{}", "{\"n\":1}"]);
    }
}
