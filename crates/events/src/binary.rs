//! The compact binary encoding of a [`ClickEvent`]: the payload of a record in the embedded log.
//!
//! # Layout (version 1)
//!
//! | bytes | content |
//! |---|---|
//! | 1 | version tag, [`VERSION`] (= 1) |
//! | 1 | presence flags: bit 0 `tenant`, 1 `event_type`, 2 `referrer`, 3 `user_agent`, 4 `product`, 5 `category`, 6 `query`, 7 `properties` |
//! | varint | `ts_ms` |
//! | str | `visitor_id` |
//! | str | `url` |
//! | str … | each optional field whose flag is set, in flag order |
//! | varint, (str, str) … | if flag 7: the number of properties (≥ 1), then each key and value, keys in strictly increasing byte order |
//!
//! A *varint* is an unsigned LEB128 number of at most 10 bytes, in its shortest form; a *str*
//! is a varint byte length followed by that many bytes of UTF-8. Nothing follows the last field.
//!
//! The encoding is canonical: [`decode`] accepts exactly the bytes that [`encode`] produces,
//! so `encode(decode(b)?) == b` for every `b` that decodes. [`decode`] is total: it returns a
//! [`DecodeError`] for any other input and never panics or allocates more than the input's
//! length. A later version must take a new tag; a reader rejects tags it does not know.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::ClickEvent;
use crate::event::OPTIONAL_FIELDS;

/// The version tag this build writes, and the only one it reads.
pub const VERSION: u8 = 1;

/// The flag bit of `properties`; bits 0–6 are the optional fields in [`ClickEvent`] order.
const PROPERTIES_FLAG: u8 = 1 << 7;

/// A record payload that is not a valid encoding of a click event.
///
/// The log's checksum vouches for the bytes, so this means a writer of another version or a
/// bug, not a torn write: retrying cannot help; the record must be skipped or the reader
/// upgraded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload has no bytes at all.
    #[error("empty record")]
    Empty,
    /// The version tag is not one this build reads.
    #[error("unsupported record version {0} (this build reads version {VERSION})")]
    UnsupportedVersion(u8),
    /// The payload ends in the middle of a field.
    #[error("record ends inside {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// A varint is longer than 10 bytes, overflows `u64`, or is not in its shortest form.
    #[error("invalid varint in {field}")]
    InvalidVarint {
        /// The field being read.
        field: &'static str,
    },
    /// A string field is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        field: &'static str,
    },
    /// The properties flag is set but the number of properties is zero.
    #[error("properties flag set but the property count is 0")]
    EmptyProperties,
    /// Property keys are not in strictly increasing order (so one may be repeated).
    #[error("property keys are not in strictly increasing order")]
    UnsortedProperties,
    /// Bytes follow the last field.
    #[error("{count} bytes after the end of the record")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

/// Appends the encoding of `event` to `out`.
///
/// # Examples
/// ```
/// use clickpulse_events::{binary, ClickEvent};
/// let event = ClickEvent::page_view(938476800000, "v0", "/frontpage");
/// let mut buf = Vec::new();
/// binary::encode(&event, &mut buf);
/// assert_eq!(buf.len(), binary::encoded_len(&event));
/// assert_eq!(binary::decode(&buf)?, event);
/// # Ok::<(), binary::DecodeError>(())
/// ```
pub fn encode(event: &ClickEvent, out: &mut Vec<u8>) {
    out.reserve(encoded_len(event));
    let mut flags = 0u8;
    for (bit, field) in event.optional_fields().into_iter().enumerate() {
        if field.is_some() {
            flags |= 1 << bit;
        }
    }
    if !event.properties.is_empty() {
        flags |= PROPERTIES_FLAG;
    }
    out.push(VERSION);
    out.push(flags);
    put_varint(out, event.ts_ms);
    put_str(out, &event.visitor_id);
    put_str(out, &event.url);
    for value in event.optional_fields().into_iter().flatten() {
        put_str(out, value);
    }
    if !event.properties.is_empty() {
        put_varint(out, event.properties.len() as u64);
        for (key, value) in &event.properties {
            put_str(out, key);
            put_str(out, value);
        }
    }
}

/// Appends the encoding of a page view with no optional field — exactly what [`encode`]
/// appends for `ClickEvent::page_view(ts_ms, visitor_id, url)` — without building the event.
///
/// # Examples
/// ```
/// use clickpulse_events::{binary, ClickEvent};
/// let (mut a, mut b) = (Vec::new(), Vec::new());
/// binary::encode_page_view(938476800000, "v0", "/frontpage", &mut a);
/// binary::encode(&ClickEvent::page_view(938476800000, "v0", "/frontpage"), &mut b);
/// assert_eq!(a, b);
/// ```
pub fn encode_page_view(ts_ms: u64, visitor_id: &str, url: &str, out: &mut Vec<u8>) {
    out.reserve(2 + varint_len(ts_ms) + str_len(visitor_id) + str_len(url));
    out.push(VERSION);
    out.push(0);
    put_varint(out, ts_ms);
    put_str(out, visitor_id);
    put_str(out, url);
}

/// The number of bytes [`encode`] appends for `event`.
pub fn encoded_len(event: &ClickEvent) -> usize {
    let optional: usize = event
        .optional_fields()
        .into_iter()
        .flatten()
        .map(|s| str_len(s))
        .sum();
    let properties = if event.properties.is_empty() {
        0
    } else {
        varint_len(event.properties.len() as u64)
            + event
                .properties
                .iter()
                .map(|(k, v)| str_len(k) + str_len(v))
                .sum::<usize>()
    };
    2 + varint_len(event.ts_ms)
        + str_len(&event.visitor_id)
        + str_len(&event.url)
        + optional
        + properties
}

/// Decodes a record payload written by [`encode`].
///
/// # Errors
/// A [`DecodeError`] saying what is wrong, for any input that [`encode`] could not have written.
pub fn decode(bytes: &[u8]) -> Result<ClickEvent, DecodeError> {
    decode_ref(bytes).map(|r| r.to_event())
}

/// A decoded record whose strings borrow from the payload, for readers that keep only some
/// fields (they copy what they keep instead of allocating every field). [`decode`] is
/// [`decode_ref`] followed by [`ClickEventRef::to_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickEventRef<'a> {
    /// Event time, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// Who clicked.
    pub visitor_id: &'a str,
    /// What was clicked.
    pub url: &'a str,
    /// The optional fields, in flag order: tenant, event_type, referrer, user_agent, product,
    /// category, query.
    pub optional: [Option<&'a str>; 7],
    /// The properties, keys in strictly increasing order (empty when there are none).
    pub properties: Vec<(&'a str, &'a str)>,
}

impl<'a> ClickEventRef<'a> {
    /// The event type, [`DEFAULT_EVENT_TYPE`](crate::DEFAULT_EVENT_TYPE) when absent.
    pub fn event_type(&self) -> &'a str {
        self.optional[1].unwrap_or(crate::DEFAULT_EVENT_TYPE)
    }

    /// The product (for `add_to_cart` and similar).
    pub fn product(&self) -> Option<&'a str> {
        self.optional[4]
    }

    /// The search query (for `search`).
    pub fn query(&self) -> Option<&'a str> {
        self.optional[6]
    }

    /// The owned event.
    pub fn to_event(&self) -> ClickEvent {
        let properties: BTreeMap<String, String> = self
            .properties
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ClickEvent::from_parts(
            self.ts_ms,
            self.visitor_id.to_owned(),
            self.url.to_owned(),
            self.optional.map(|o| o.map(str::to_owned)),
            properties,
        )
    }
}

/// Decodes a record payload written by [`encode`] without copying its strings.
///
/// # Errors
/// As [`decode`]: the same error for the same input.
///
/// # Examples
/// ```
/// use clickpulse_events::{binary, ClickEvent};
/// let mut buf = Vec::new();
/// binary::encode(&ClickEvent::page_view(5, "v1", "/news"), &mut buf);
/// let r = binary::decode_ref(&buf)?;
/// assert_eq!((r.visitor_id, r.url, r.event_type()), ("v1", "/news", "page_view"));
/// # Ok::<(), binary::DecodeError>(())
/// ```
pub fn decode_ref(bytes: &[u8]) -> Result<ClickEventRef<'_>, DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let mut input = Input { rest };
    let flags = input.byte("flags")?;
    let ts_ms = input.varint("ts_ms")?;
    let visitor_id = input.str("visitor_id")?;
    let url = input.str("url")?;
    let mut optional: [Option<&str>; 7] = [None; 7];
    // Only the fields present, in flag order (most records have none or one).
    let mut present = flags & !PROPERTIES_FLAG;
    while present != 0 {
        let bit = present.trailing_zeros() as usize;
        present &= present - 1;
        if let (Some(slot), Some(name)) = (optional.get_mut(bit), OPTIONAL_FIELDS.get(bit)) {
            *slot = Some(input.str(name)?);
        }
    }
    let properties = if flags & PROPERTIES_FLAG != 0 {
        input.properties()?
    } else {
        Vec::new()
    };
    match input.rest.len() {
        0 => Ok(ClickEventRef {
            ts_ms,
            visitor_id,
            url,
            optional,
            properties,
        }),
        count => Err(DecodeError::TrailingBytes { count }),
    }
}

fn varint_len(value: u64) -> usize {
    // Each byte carries 7 bits; zero still takes one byte.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn str_len(s: &str) -> usize {
    varint_len(s.len() as u64) + s.len()
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// `bytes` as a string, if they are UTF-8.
///
/// Visitor ids, urls and event types are short and nearly always ASCII. `str::from_utf8` walks a
/// short string byte by byte (about 70 instructions for ten bytes); `is_ascii` checks a word at
/// a time, and ASCII needs no further validation.
#[expect(
    unsafe_code,
    reason = "ASCII is valid UTF-8; the conversion happens only after `is_ascii` holds"
)]
fn utf8(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: every byte is below 0x80, and a sequence of ASCII bytes is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

/// The unread part of a payload.
struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let (&byte, rest) = self
            .rest
            .split_first()
            .ok_or(DecodeError::Truncated { field })?;
        self.rest = rest;
        Ok(byte)
    }

    fn varint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        // Nearly every string length is a single byte (event times take the loop).
        if let Some((&byte, rest)) = self.rest.split_first()
            && byte & 0x80 == 0
        {
            self.rest = rest;
            return Ok(u64::from(byte));
        }
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.byte(field)?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::InvalidVarint { field });
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                // A last byte of zero after the first adds nothing: not the shortest form.
                if byte == 0 && shift > 0 {
                    return Err(DecodeError::InvalidVarint { field });
                }
                return Ok(value);
            }
        }
        Err(DecodeError::InvalidVarint { field })
    }

    #[inline]
    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.varint(field)?;
        let (bytes, rest) = usize::try_from(len)
            .ok()
            .and_then(|len| self.rest.split_at_checked(len))
            .ok_or(DecodeError::Truncated { field })?;
        self.rest = rest;
        Ok(bytes)
    }

    #[inline]
    fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes(field)?;
        utf8(bytes).ok_or(DecodeError::InvalidUtf8 { field })
    }

    fn properties(&mut self) -> Result<Vec<(&'a str, &'a str)>, DecodeError> {
        let count = self.varint("properties")?;
        if count == 0 {
            return Err(DecodeError::EmptyProperties);
        }
        let mut properties = Vec::new();
        let mut previous: Option<&[u8]> = None;
        for _ in 0..count {
            let key = self.bytes("properties")?;
            if previous.is_some_and(|p| p >= key) {
                return Err(DecodeError::UnsortedProperties);
            }
            previous = Some(key);
            let key = utf8(key).ok_or(DecodeError::InvalidUtf8 {
                field: "properties",
            })?;
            let value = self.str("properties")?;
            properties.push((key, value));
        }
        Ok(properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_event() -> ClickEvent {
        let mut e = ClickEvent::page_view(u64::MAX, "visitor", "/a/b?c=d");
        e.tenant = Some("shop".into());
        e.event_type = Some("search".into());
        e.query = Some(String::new());
        e.properties.insert("b".into(), "2".into());
        e.properties.insert("a".into(), "1".into());
        e
    }

    fn encoded(e: &ClickEvent) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(e, &mut buf);
        buf
    }

    #[test]
    fn decode_ref_borrows_every_field_and_rejects_every_truncation() {
        let e = full_event();
        let bytes = encoded(&e);
        let r = decode_ref(&bytes).unwrap();
        assert_eq!((r.visitor_id, r.url), ("visitor", "/a/b?c=d"));
        assert_eq!(
            (r.event_type(), r.query(), r.product()),
            ("search", Some(""), None)
        );
        assert_eq!(r.properties, vec![("a", "1"), ("b", "2")]);
        assert_eq!(r.to_event(), e);
        for n in 0..bytes.len() {
            assert!(decode_ref(&bytes[..n]).is_err(), "{n} bytes");
        }
        let plain = encoded(&ClickEvent::page_view(1, "v", "/"));
        assert_eq!(decode_ref(&plain).unwrap().event_type(), "page_view");
    }

    #[test]
    fn page_view_layout_is_as_documented() {
        let bytes = encoded(&ClickEvent::page_view(300, "v1", "/x"));
        assert_eq!(bytes, [1, 0, 0xac, 0x02, 2, b'v', b'1', 2, b'/', b'x']);
    }

    #[test]
    fn encode_appends_and_len_is_exact() {
        let e = full_event();
        let mut buf = vec![0xee];
        encode(&e, &mut buf);
        assert_eq!(buf.len(), 1 + encoded_len(&e));
        assert_eq!(decode(&buf[1..]), Ok(e));
    }

    #[test]
    fn varint_len_matches_encoding() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX >> 1, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "{v}");
            assert_eq!(Input { rest: &buf }.varint("v"), Ok(v));
        }
    }

    #[test]
    fn empty_input_is_empty() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn unknown_version_is_rejected() {
        assert_eq!(decode(&[2, 0]), Err(DecodeError::UnsupportedVersion(2)));
        assert_eq!(decode(&[0]), Err(DecodeError::UnsupportedVersion(0)));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encoded(&full_event());
        for len in 1..bytes.len() {
            assert!(
                matches!(decode(&bytes[..len]), Err(DecodeError::Truncated { .. })),
                "prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encoded(&full_event());
        bytes.extend_from_slice(&[0, 0]);
        assert_eq!(decode(&bytes), Err(DecodeError::TrailingBytes { count: 2 }));
    }

    #[test]
    fn overlong_and_overflowing_varints_are_rejected() {
        let overlong = [1, 0, 0x80, 0x00, 0, 0];
        assert_eq!(
            decode(&overlong),
            Err(DecodeError::InvalidVarint { field: "ts_ms" })
        );
        let mut overflow = vec![1, 0];
        overflow.extend_from_slice(&[0xff; 9]);
        overflow.push(0x02);
        assert_eq!(
            decode(&overflow),
            Err(DecodeError::InvalidVarint { field: "ts_ms" })
        );
        let mut too_long = vec![1, 0];
        too_long.extend_from_slice(&[0x80; 10]);
        too_long.push(0x01);
        assert_eq!(
            decode(&too_long),
            Err(DecodeError::InvalidVarint { field: "ts_ms" })
        );
    }

    #[test]
    fn huge_length_is_truncated_not_allocated() {
        let mut bytes = vec![1, 0, 0];
        put_varint(&mut bytes, u64::MAX);
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::Truncated {
                field: "visitor_id"
            })
        );
    }

    #[test]
    fn invalid_utf8_names_the_field() {
        let bytes = [1, 0, 0, 1, b'v', 1, 0xff];
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::InvalidUtf8 { field: "url" })
        );
        let bytes = [1, 0x80, 0, 1, b'v', 1, b'/', 1, 1, 0xc3, 0];
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::InvalidUtf8 {
                field: "properties"
            })
        );
    }

    #[test]
    fn strings_are_accepted_exactly_when_they_are_utf8() {
        // ASCII of every length around a word, with another sequence at each place: non-ASCII
        // (valid, truncated or invalid) or the last ASCII byte.
        for len in 0..20 {
            let ascii = vec![b'a'; len];
            assert_eq!(utf8(&ascii), std::str::from_utf8(&ascii).ok());
            for at in 0..=len {
                for insert in [
                    &[0x80u8][..],
                    &[0xc3, 0xa9],
                    &[0xff],
                    &[0xe2, 0x82],
                    &[0x7f],
                ] {
                    let mut bytes = ascii.clone();
                    bytes.splice(at..at, insert.iter().copied());
                    assert_eq!(utf8(&bytes), std::str::from_utf8(&bytes).ok(), "{bytes:?}");
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_are_strings_exactly_when_utf8(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            text in ".{0,12}",
        ) {
            proptest::prop_assert_eq!(utf8(&bytes), std::str::from_utf8(&bytes).ok());
            proptest::prop_assert_eq!(utf8(text.as_bytes()), Some(text.as_str()));
        }
    }

    #[test]
    fn multi_byte_varints_and_lengths_decode() {
        // A time of 300 (two varint bytes) and a visitor of 130 bytes (a two-byte length).
        let visitor = "v".repeat(130);
        let e = ClickEvent::page_view(300, visitor.as_str(), "/");
        let bytes = encoded(&e);
        assert_eq!(decode(&bytes), Ok(e));
        // The same time with a redundant zero continuation is not the shortest form.
        let padded = [&[VERSION, 0, 0xac, 0x82, 0x00][..], &bytes[4..]].concat();
        assert_eq!(
            decode(&padded),
            Err(DecodeError::InvalidVarint { field: "ts_ms" })
        );
    }

    #[test]
    fn property_flag_with_zero_count_is_rejected() {
        let bytes = [1, 0x80, 0, 1, b'v', 1, b'/', 0];
        assert_eq!(decode(&bytes), Err(DecodeError::EmptyProperties));
    }

    #[test]
    fn unsorted_or_repeated_property_keys_are_rejected() {
        let head = [1, 0x80, 0, 1, b'v', 1, b'/', 2];
        let repeated = [&head[..], &[1, b'a', 0, 1, b'a', 0]].concat();
        assert_eq!(decode(&repeated), Err(DecodeError::UnsortedProperties));
        let unsorted = [&head[..], &[1, b'b', 0, 1, b'a', 0]].concat();
        assert_eq!(decode(&unsorted), Err(DecodeError::UnsortedProperties));
        let sorted = [&head[..], &[1, b'a', 0, 1, b'b', 0]].concat();
        assert_eq!(decode(&sorted).map(|e| e.properties.len()), Ok(2));
    }
}
