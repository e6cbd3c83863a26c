//! A batch's rows as one text: every row's JSON back to back, and where each ends.

use std::fmt;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{self as ser, SerializeSeq, SerializeTuple};
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
/// Serialised with serde, the rows take one of two forms, chosen by the format:
/// - human-readable formats (serde_json): a sequence of JSON values written as they are
///   (checked, as with [`JsonRow`]); deserialising checks each value and keeps its text;
/// - binary formats (`is_human_readable()` false: bincode, which timely uses for records that
///   cross processes): a pair of the whole text, as one string, and the sequence of the rows'
///   lengths in bytes, as `u32`s. Neither side parses the rows: the sender's are JSON already.
///   The receiver checks only the structure, so that corrupt input is an error and never a
///   panic: the text is UTF-8 (as any string), every length is above zero, the lengths add up
///   to the text's, and every row ends on a character boundary. A row of 4 GiB or more cannot be
///   serialised this way.
///
/// Two batches of rows are equal when their rows' texts are.
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
        if !serializer.is_human_readable() {
            // Binary formats: the text as it is, and the rows' lengths.
            let mut pair = serializer.serialize_tuple(2)?;
            pair.serialize_element(self.text.as_str())?;
            pair.serialize_element(&Lengths(&self.ends))?;
            return pair.end();
        }
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for row in self.iter() {
            // As `JsonRow` does: serde hands over raw text only as a checked `RawValue`.
            let raw: &RawValue = serde_json::from_str(row).map_err(ser::Error::custom)?;
            seq.serialize_element(raw)?;
        }
        seq.end()
    }
}

/// The lengths of the rows that end at these ends, serialised as a sequence of `u32`s.
struct Lengths<'a>(&'a [usize]);

impl Serialize for Lengths<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        let mut start = 0;
        for &end in self.0 {
            let len = u32::try_from(end.saturating_sub(start))
                .map_err(|_| ser::Error::custom("a row of 4 GiB or more"))?;
            seq.serialize_element(&len)?;
            start = end;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for JsonRows {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if !deserializer.is_human_readable() {
            return deserializer.deserialize_tuple(2, BinaryRows);
        }
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

/// Reads the binary form of [`JsonRows`]: the text, then the rows' lengths.
struct BinaryRows;

impl<'de> Visitor<'de> for BinaryRows {
    type Value = JsonRows;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the rows' text and their lengths")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonRows, A::Error> {
        let text: String = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let ends = seq
            .next_element_seed(Ends(&text))?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        Ok(JsonRows { text, ends })
    }
}

/// Reads the rows' lengths as where each row ends in this text, checking that they split it.
struct Ends<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for Ends<'_> {
    type Value = Vec<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<usize>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Ends<'_> {
    type Value = Vec<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the lengths of rows that split the text")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<usize>, A::Error> {
        let text = self.0;
        // Every row has a byte at least, so a claimed count above the text's length is corrupt:
        // it is not allocated for.
        let mut ends = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(text.len()));
        let mut end = 0usize;
        while let Some(len) = seq.next_element::<u32>()? {
            if len == 0 {
                return Err(de::Error::custom("a row of no bytes"));
            }
            end = usize::try_from(len)
                .ok()
                .and_then(|len| end.checked_add(len))
                .filter(|&end| end <= text.len())
                .ok_or_else(|| {
                    de::Error::custom(format_args!(
                        "row lengths beyond the text's {} bytes",
                        text.len()
                    ))
                })?;
            if !text.is_char_boundary(end) {
                return Err(de::Error::custom(format_args!(
                    "a row ending inside a character, at byte {end}"
                )));
            }
            ends.push(end);
        }
        if end != text.len() {
            return Err(de::Error::custom(format_args!(
                "row lengths adding up to {end} bytes of a text of {}",
                text.len()
            )));
        }
        Ok(ends)
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

        /// Through bincode (not human-readable) rows of any strings (escapes, control
        /// characters, multi-byte characters), any number of them (none included), are the
        /// text and the rows' lengths, and come back as the same rows, alone or in a vector.
        #[test]
        fn rows_round_trip_through_bincode_as_text_and_lengths(
            strings in prop::collection::vec("\\PC{0,12}|[\"\\\\\u{0}-\u{1f}aé€😀]{0,6}", 0..12),
            raw in prop::collection::vec(prop::sample::select(vec!["[]", "1", "\"é\"", "null", "{\"😀\":[\"\\n\"]}"]), 0..4),
        ) {
            let mut rows = JsonRows::new();
            for s in &strings {
                rows.object(|o| {
                    o.str("url", s).u64("count", s.len() as u64);
                });
            }
            for r in &raw {
                rows.push(r).unwrap();
            }
            let bytes = bincode::serialize(&rows).unwrap();
            // The text (a u64 length and its bytes), then the rows' count and a u32 per row.
            prop_assert_eq!(bytes.len(), 8 + rows.text_len() + 8 + 4 * rows.len());
            let text: String = rows.iter().collect();
            prop_assert_eq!(&bytes[8..8 + rows.text_len()], text.as_bytes());
            let back: JsonRows = bincode::deserialize(&bytes).unwrap();
            prop_assert_eq!(back.iter().collect::<Vec<_>>(), rows.iter().collect::<Vec<_>>());
            prop_assert_eq!(&back, &rows);

            let batches = vec![rows.clone(), JsonRows::new(), rows.clone()];
            let back: Vec<JsonRows> = bincode::deserialize(&bincode::serialize(&batches).unwrap()).unwrap();
            prop_assert_eq!(back, batches);

            // serde_json: still an array of the rows' JSON.
            let text = serde_json::to_string(&rows).unwrap();
            prop_assert_eq!(&text, &format!("[{}]", rows.iter().collect::<Vec<_>>().join(",")));
            let back: JsonRows = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, rows);
        }

        /// Bincode input with a byte replaced anywhere is an error or rows that split their text
        /// (never a panic); cut short anywhere, an error.
        #[test]
        fn corrupt_bincode_rows_never_panic(
            strings in prop::collection::vec("[aé€😀\"]{1,4}", 1..6),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut rows = JsonRows::new();
            for s in &strings {
                rows.object(|o| {
                    o.str("s", s);
                });
            }
            let whole = bincode::serialize(&rows).unwrap();
            let mut bytes = whole.clone();
            bytes[at.index(whole.len())] = byte;
            if let Ok(back) = bincode::deserialize::<JsonRows>(&bytes) {
                prop_assert_eq!(back.iter().map(str::len).sum::<usize>(), back.text_len());
                prop_assert!(back.iter().all(|row| !row.is_empty()));
            }
            let cut = cut.index(whole.len());
            prop_assert!(bincode::deserialize::<JsonRows>(&whole[..cut]).is_err());
        }
    }

    /// Bincode's form of the rows `text` split at `lengths`, whatever they are.
    fn encoded(text: &str, lengths: &[u32]) -> Vec<u8> {
        bincode::serialize(&(text, lengths)).unwrap()
    }

    #[test]
    fn bincode_rows_are_text_and_lengths() {
        let mut rows = JsonRows::new();
        rows.push("{\"u\":\"é\"}").unwrap();
        rows.push("[]").unwrap();
        assert_eq!(
            bincode::serialize(&rows).unwrap(),
            encoded("{\"u\":\"é\"}[]", &[10, 2])
        );
        let empty = bincode::serialize(&JsonRows::new()).unwrap();
        assert_eq!(empty, encoded("", &[]));
        assert_eq!(empty.len(), 16);
        assert!(bincode::deserialize::<JsonRows>(&empty).unwrap().is_empty());
        // serde_json's form is unchanged: an array of the rows.
        assert_eq!(serde_json::to_string(&rows).unwrap(), "[{\"u\":\"é\"},[]]");
        assert_eq!(serde_json::to_string(&JsonRows::new()).unwrap(), "[]");
    }

    #[test]
    fn corrupt_bincode_rows_are_errors() {
        let decode =
            |bytes: &[u8]| bincode::deserialize::<JsonRows>(bytes).map_err(|e| e.to_string());
        // The lengths exceed the text, overflow, fall short of it, or split a row of no bytes.
        for lengths in [
            &[3][..],
            &[1, 2],
            &[u32::MAX, u32::MAX],
            &[1],
            &[],
            &[0, 2],
            &[2, 0],
        ] {
            assert!(decode(&encoded("{}", lengths)).is_err(), "{lengths:?}");
        }
        // A boundary inside a multi-byte character (`é` is two bytes, `😀` four).
        let text = "\"é\"\"😀\"";
        for lengths in [[2, 8], [6, 4], [7, 3], [8, 2]] {
            assert!(decode(&encoded(text, &lengths)).is_err(), "{lengths:?}");
        }
        assert_eq!(
            decode(&encoded(text, &[2, 8])).unwrap_err(),
            "a row ending inside a character, at byte 2"
        );
        let back = decode(&encoded(text, &[4, 6])).unwrap();
        assert_eq!(back.iter().collect::<Vec<_>>(), ["\"é\"", "\"😀\""]);
        // A count of lengths far beyond the input is not allocated for.
        let mut huge = encoded("{}", &[2]);
        let count_at = 8 + 2;
        huge[count_at..count_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
        // The text is not UTF-8.
        let mut bad = encoded("\"é\"", &[4]);
        bad[8 + 2] = b'a';
        assert!(decode(&bad).is_err());
        // Cut anywhere.
        let whole = encoded(text, &[4, 6]);
        for cut in 0..whole.len() {
            assert!(decode(&whole[..cut]).is_err(), "cut at {cut}");
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
