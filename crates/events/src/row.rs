//! A result row as JSON text: serialised once, where it was computed, and then handed unchanged
//! to every output (files, Kafka records, WebSocket and SSE messages).

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// One row of a result stream: a JSON object with the stream's fields, kept as its text.
///
/// Serialised with serde, a row takes one of two forms, chosen by the format:
/// - human-readable formats (serde_json): the JSON value itself, its text written as is (not
///   re-encoded, but checked again, so hot paths write [`JsonRow::get`] straight into their
///   output); deserialising checks that the input is JSON and keeps its text;
/// - binary formats (`is_human_readable()` false: bincode, which timely uses for records that
///   cross processes): one string, the text. Neither side parses it: the sender's row is JSON
///   already, so the receiver only checks what the string type does (UTF-8) and that the text
///   is not empty.
///
/// Two rows are equal when their texts are.
///
/// # Examples
/// ```
/// use clickpulse_events::JsonRow;
/// #[derive(serde::Serialize)]
/// struct PageView<'a> { url: &'a str, count: u64 }
/// let row = JsonRow::new(&PageView { url: "/news", count: 3 }).unwrap();
/// assert_eq!(row.get(), r#"{"url":"/news","count":3}"#);
/// // The same text, written field by field without serde.
/// let fast = JsonRow::object(|o| {
///     o.str("url", "/news").u64("count", 3);
/// });
/// assert_eq!(fast, row);
/// let message = serde_json::to_string(&vec![row.clone(), row]).unwrap();
/// assert_eq!(message, r#"[{"url":"/news","count":3},{"url":"/news","count":3}]"#);
/// ```
#[derive(Clone)]
pub struct JsonRow(Box<str>);

/// The largest buffer [`JsonRow::object`] keeps for the next row.
const MAX_KEPT_OBJECT_TEXT: usize = 64 * 1024;

thread_local! {
    /// Where [`JsonRow::object`] writes a row before copying it out at its exact size. A call
    /// takes the buffer and puts it back, so a row built while another is being built (or while
    /// the thread ends) simply starts from an empty one.
    static OBJECT_TEXT: Cell<String> = const { Cell::new(String::new()) };
}

impl JsonRow {
    /// Serialises `value`.
    ///
    /// # Errors
    /// What `serde_json` reports for a value JSON cannot hold (a map with non-string keys).
    pub fn new(value: &impl Serialize) -> serde_json::Result<Self> {
        serde_json::to_string(value).map(|text| JsonRow(text.into_boxed_str()))
    }

    /// A JSON object written field by field by `fill`, in the order it writes them: the same
    /// text `serde_json` gives a struct with those fields, faster (no serde machinery, no
    /// escaping of names that need none, one allocation of the exact size).
    ///
    /// # Examples
    /// ```
    /// use clickpulse_events::JsonRow;
    /// let row = JsonRow::object(|o| {
    ///     o.u64("window_start_ms", 0).str("url", "/a \"b\"").i64("score", -2);
    /// });
    /// assert_eq!(row.get(), r#"{"window_start_ms":0,"url":"/a \"b\"","score":-2}"#);
    /// ```
    pub fn object(fill: impl FnOnce(&mut JsonObject<'_>)) -> Self {
        let mut text = OBJECT_TEXT.try_with(Cell::take).unwrap_or_default();
        text.clear();
        JsonObject::write(&mut text, fill);
        let row = JsonRow(Box::from(text.as_str()));
        // An unusually large row (a dead letter's raw record) does not pin its buffer.
        if text.capacity() <= MAX_KEPT_OBJECT_TEXT {
            // Fails only while the thread ends, when the buffer is not needed again.
            let _ = OBJECT_TEXT.try_with(|cell| cell.set(text));
        }
        row
    }

    /// Checks that `text` is one JSON value and keeps it (without surrounding whitespace).
    ///
    /// # Errors
    /// Where `text` stops being JSON.
    pub fn from_text(text: &str) -> serde_json::Result<Self> {
        let raw: &RawValue = serde_json::from_str(text)?;
        Ok(JsonRow(raw.get().into()))
    }

    /// Checks that `bytes` are one JSON value (UTF-8) and keeps them.
    ///
    /// # Errors
    /// Where `bytes` stop being JSON.
    pub fn from_slice(bytes: &[u8]) -> serde_json::Result<Self> {
        let raw: &RawValue = serde_json::from_slice(bytes)?;
        Ok(JsonRow(raw.get().into()))
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        &self.0
    }

    /// A row of text that is known to be JSON (written by [`JsonObject`] or checked before).
    pub(crate) fn trusted(text: &str) -> Self {
        JsonRow(text.into())
    }

    /// The row parsed, for callers that look inside (tests, keys of Kafka records).
    pub fn to_value(&self) -> serde_json::Value {
        // The text was checked, or written by serde_json or `object`, so it parses.
        serde_json::from_str(self.get()).unwrap_or(serde_json::Value::Null)
    }
}

/// The fields of an object [`JsonRow::object`] (or [`JsonRows::object`](crate::JsonRows::object))
/// is writing.
pub struct JsonObject<'a> {
    text: &'a mut String,
    /// Where the object's text starts in `text`.
    start: usize,
}

impl JsonObject<'_> {
    /// Appends to `text` the object `fill` writes.
    #[inline(always)]
    pub(crate) fn write(text: &mut String, fill: impl FnOnce(&mut JsonObject<'_>)) {
        let start = text.len();
        text.push('{');
        fill(&mut JsonObject { text, start });
        text.push('}');
    }

    /// Writes `"name":` (after a comma unless it is the first field).
    ///
    /// Inlined with the field methods and [`push_json_str`] into each row's writer, where names
    /// are literals: the escape check of a literal then folds away and its copy is a few stores,
    /// where a call per name had cost about 130 instructions.
    #[inline(always)]
    fn name(&mut self, name: &str) {
        if self.text.len() > self.start + 1 {
            self.text.push(',');
        }
        push_json_str(self.text, name);
        self.text.push(':');
    }

    /// A field with an unsigned number.
    #[inline(always)]
    pub fn u64(&mut self, name: &str, value: u64) -> &mut Self {
        self.name(name);
        self.text.push_str(itoa::Buffer::new().format(value));
        self
    }

    /// A field with a signed number.
    #[inline(always)]
    pub fn i64(&mut self, name: &str, value: i64) -> &mut Self {
        self.name(name);
        self.text.push_str(itoa::Buffer::new().format(value));
        self
    }

    /// A field with a string, escaped as JSON requires.
    #[inline(always)]
    pub fn str(&mut self, name: &str, value: &str) -> &mut Self {
        self.name(name);
        push_json_str(self.text, value);
        self
    }
}

/// Appends `s` as a JSON string, escaped exactly as `serde_json` escapes it: quote, backslash and
/// control characters; `\b \f \n \r \t` in their short forms, the others as `\u00XX`.
#[inline(always)]
fn push_json_str(out: &mut String, s: &str) {
    // Nearly every string needs no escape: find that out eight bytes at a time, then copy the
    // string whole, inline where the row is written.
    if needs_escape(s.as_bytes()) {
        push_escaped(out, s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push('"');
    out.push_str(s);
    out.push('"');
}

/// [`push_json_str`] for a string with bytes JSON escapes.
#[cold]
fn push_escaped(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every byte escaped is ASCII, so `i` and `i + 1` are character boundaries.
        out.push_str(s.get(start..i).unwrap_or_default());
        if short.is_empty() {
            // A control character: `\u00` and two hex digits.
            out.push_str("\\u00");
            out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            out.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

/// Whether a byte JSON strings escape: quote, backslash or a control character.
fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any byte of `s` is [`escaped`]. Looks at eight bytes at once: a word has a byte below
/// `n` (for `n` up to 128) exactly when `(x - n·0x01…01) & !x & 0x80…80` is not zero, and a byte
/// equal to `b` when `x ^ b·0x01…01` has a byte below 1. The last bytes are checked as the eight
/// that end `s`, overlapping the words before; strings shorter than a word byte by byte.
#[inline(always)]
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0;
    let word = |w: &[u8; 8]| {
        let x = u64::from_ne_bytes(*w);
        below(x, 0x20)
            || below(x ^ (ONES * u64::from(b'"')), 1)
            || below(x ^ (ONES * u64::from(b'\\')), 1)
    };
    let Some(last) = s.last_chunk::<8>() else {
        return s.iter().any(|&b| escaped(b));
    };
    let mut words = s.chunks_exact(8);
    words
        .by_ref()
        .any(|w| w.first_chunk::<8>().is_some_and(word))
        || word(last)
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
        if !serializer.is_human_readable() {
            // Binary formats: the text as one string, copied as it is.
            return serializer.serialize_str(self.get());
        }
        // serde has no way to hand over raw text but serde_json's `RawValue`, which can only be
        // had by checking the text (it is JSON: it was produced or checked when the row was made).
        let raw: &RawValue = serde_json::from_str(self.get()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonRow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if !deserializer.is_human_readable() {
            // Binary formats: the text the sender checked, kept without parsing it again (the
            // string is UTF-8, which `String` checks; a JSON text is never empty).
            let text = String::deserialize(deserializer)?;
            if text.is_empty() {
                return Err(serde::de::Error::invalid_length(0, &"a JSON text"));
            }
            return Ok(JsonRow(text.into_boxed_str()));
        }
        Box::<RawValue>::deserialize(deserializer).map(|raw| JsonRow(raw.into()))
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

    /// One byte of every kind at every position of strings up to three words long, among
    /// bytes that need no escape (ASCII or not): the check flags exactly the escaped ones.
    #[test]
    fn the_escape_check_finds_one_byte_anywhere() {
        for len in 1..=24 {
            for fill in [b'a', 0x21, 0x80, 0xff] {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut bytes = vec![fill; len];
                        bytes[at] = b;
                        assert_eq!(needs_escape(&bytes), escaped(b), "{bytes:?}");
                    }
                }
            }
        }
        assert!(!needs_escape(b""));
    }

    proptest::proptest! {
        /// The word-at-a-time check finds an escaped byte wherever it is, in strings of any
        /// length (shorter than a word, whole words, words and a tail), and nothing else.
        #[test]
        fn the_escape_check_agrees_with_the_byte_rule(
            bytes in proptest::collection::vec(
                proptest::sample::select(vec![
                    0u8, 0x01, 0x1f, 0x20, 0x21, b'"', b'#', b'[', b'\\', b']', b'a', 0x7f, 0x80,
                    0x9f, 0xa2, 0xdc, 0xff,
                ]),
                0..40,
            )
        ) {
            proptest::prop_assert_eq!(needs_escape(&bytes), bytes.iter().any(|&b| escaped(b)));
        }

        /// Objects written field by field are the text serde_json gives the same fields, for any
        /// strings (quotes, backslashes, control characters, non-ASCII) and numbers.
        #[test]
        fn objects_are_what_serde_json_writes(
            fields in proptest::collection::vec(
                ("\\PC{0,12}|[\"\\\\\u{0}-\u{1f}a\u{7f}é]{0,6}", proptest::prelude::any::<(u8, u64, i64)>()),
                0..6,
            )
        ) {
            // The model: serde_json's text of each name and value, joined.
            let mut model = Vec::new();
            let mut names = std::collections::HashSet::new();
            let row = JsonRow::object(|o| {
                for (name, (kind, u, i)) in &fields {
                    if !names.insert(name.clone()) {
                        continue; // a JSON object's names are distinct
                    }
                    let value = match kind % 3 {
                        0 => { o.u64(name, *u); serde_json::to_string(u) }
                        1 => { o.i64(name, *i); serde_json::to_string(i) }
                        _ => { o.str(name, name); serde_json::to_string(name) }
                    };
                    model.push(format!("{}:{}", serde_json::to_string(name).unwrap(), value.unwrap()));
                }
            });
            proptest::prop_assert_eq!(row.get(), format!("{{{}}}", model.join(",")));
            proptest::prop_assert!(row.to_value().is_object());
        }
    }

    #[test]
    fn objects_match_serde_field_for_field() {
        #[derive(serde::Serialize)]
        struct Row<'a> {
            a: u64,
            b: &'a str,
            c: i64,
        }
        for (b, c) in [("", 0), ("/x\"y\\z\n\u{1}é", -9_223_372_036_854_775_808)] {
            let fast = JsonRow::object(|o| {
                o.u64("a", u64::MAX).str("b", b).i64("c", c);
            });
            let serde = JsonRow::new(&Row { a: u64::MAX, b, c }).unwrap();
            assert_eq!(fast.get(), serde.get());
        }
        assert_eq!(JsonRow::object(|_| {}).get(), "{}");
        // A row built while another is being built gets a buffer of its own.
        let outer = JsonRow::object(|o| {
            let inner = JsonRow::object(|i| {
                i.u64("n", 1);
            });
            o.str("inner", inner.get());
        });
        assert_eq!(outer.to_value(), json!({"inner": "{\"n\":1}"}));
    }

    proptest::proptest! {
        /// Through bincode (not human-readable) a row is its text as one string, and comes back
        /// as the same row, alone or in a vector (as timely sends records); serde_json still
        /// writes the row's JSON itself.
        #[test]
        fn rows_round_trip_through_bincode_as_their_text(
            strings in proptest::collection::vec("\\PC{0,12}|[\"\\\\\u{0}-\u{1f}aé€😀]{0,6}", 0..5),
            n in proptest::prelude::any::<u64>(),
        ) {
            let row = JsonRow::object(|o| {
                for (i, s) in strings.iter().enumerate() {
                    o.str(&format!("s{i}"), s);
                }
                o.u64("n", n);
            });
            let bytes = bincode::serialize(&row).unwrap();
            // A u64 length, then the text as it is.
            proptest::prop_assert_eq!(bytes.len(), 8 + row.get().len());
            proptest::prop_assert_eq!(&bytes[8..], row.get().as_bytes());
            let back: JsonRow = bincode::deserialize(&bytes).unwrap();
            proptest::prop_assert_eq!(&back, &row);

            let rows = vec![row.clone(), JsonRow::from(serde_json::Value::from(strings.clone())), row.clone()];
            let back: Vec<JsonRow> = bincode::deserialize(&bincode::serialize(&rows).unwrap()).unwrap();
            proptest::prop_assert_eq!(&back, &rows);

            proptest::prop_assert_eq!(serde_json::to_string(&row).unwrap(), row.get());
            let back: JsonRow = serde_json::from_str(row.get()).unwrap();
            proptest::prop_assert_eq!(back, row);
        }
    }

    #[test]
    fn serde_json_writes_rows_as_json() {
        let rows = vec![
            JsonRow::from_text(r#"{"url":"/a \"é\" \n","count":1}"#).unwrap(),
            JsonRow::from_text("[1,2]").unwrap(),
        ];
        assert_eq!(
            serde_json::to_string(&rows).unwrap(),
            r#"[{"url":"/a \"é\" \n","count":1},[1,2]]"#
        );
        assert_eq!(
            serde_json::to_string_pretty(&json!({"row": rows[1]})).unwrap(),
            "{\n  \"row\": [\n    1,\n    2\n  ]\n}"
        );
        // serde_json's input is checked as JSON.
        assert!(serde_json::from_str::<JsonRow>("{\"a\":").is_err());
    }

    #[test]
    fn corrupt_bincode_rows_are_errors() {
        let row = JsonRow::from_text(r#"{"url":"/é"}"#).unwrap();
        let bytes = bincode::serialize(&row).unwrap();
        // Cut anywhere: an error, not a panic.
        for cut in 0..bytes.len() {
            assert!(
                bincode::deserialize::<JsonRow>(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // Not UTF-8 (the second byte of `é` replaced).
        let mut bad = bytes.clone();
        let at = 8 + row.get().find('é').unwrap() + 1;
        bad[at] = b'"';
        assert!(bincode::deserialize::<JsonRow>(&bad).is_err());
        // An empty text is no JSON.
        assert!(bincode::deserialize::<JsonRow>(&bincode::serialize("").unwrap()).is_err());
        // A length far beyond the input.
        let mut long = bytes;
        long[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(bincode::deserialize::<JsonRow>(&long).is_err());
    }

    #[test]
    fn refuses_text_that_is_not_json() {
        assert!(JsonRow::from_text("{\"a\":").is_err());
        assert!(JsonRow::from_slice(b"\xff").is_err());
        assert_eq!(
            JsonRow::from_text(" {\"a\":1} \n").unwrap().get(),
            "{\"a\":1}"
        );
    }
}
