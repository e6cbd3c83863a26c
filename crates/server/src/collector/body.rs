//! Reading a request body into events without building a JSON tree per object.
//!
//! Each event object is read field by field into an [`EventBuilder`]; a field that breaks a
//! rule marks the event rejected, but the object (and, in an array, the rest of the array) is
//! still read to its end, so one bad event never hides the others.

use std::fmt;

use clickpulse_events::ClickEvent;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::event::{Defaults, EventBuilder};
use crate::error::AppError;

/// One item of a request: its index and the event or why it was rejected.
pub(crate) type Item = (usize, Result<ClickEvent, String>);

/// Reads an `application/json` body: one object or an array of objects.
///
/// # Errors
/// 400 when the body is not JSON or neither an object nor an array, 413 when it holds more than
/// `batch_limit` items.
pub(crate) fn read_json(
    body: &[u8],
    batch_limit: usize,
    defaults: &Defaults<'_>,
) -> Result<Vec<Item>, AppError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let items = de
        .deserialize_any(ItemsVisitor { defaults })
        .and_then(|items| de.end().map(|()| items))
        .map_err(|e| AppError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let items = items.map_err(AppError::BadRequest)?;
    check_count(items.len(), batch_limit)?;
    Ok(items.into_iter().enumerate().collect())
}

/// Reads an NDJSON body: one object per line; blank lines are skipped but keep their number.
///
/// # Errors
/// 413 when it holds more than `batch_limit` non-blank lines.
pub(crate) fn read_ndjson(
    body: &[u8],
    batch_limit: usize,
    defaults: &Defaults<'_>,
) -> Result<Vec<Item>, AppError> {
    let lines: Vec<(usize, &[u8])> = body
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .collect();
    check_count(lines.len(), batch_limit)?;
    Ok(lines
        .into_iter()
        .map(|(i, line)| (i, read_line(line, defaults)))
        .collect())
}

fn read_line(line: &[u8], defaults: &Defaults<'_>) -> Result<ClickEvent, String> {
    let mut de = serde_json::Deserializer::from_slice(line);
    EventSeed { defaults }
        .deserialize(&mut de)
        .and_then(|event| de.end().map(|()| event))
        .map_err(|e| format!("invalid JSON: {e}"))?
}

fn check_count(n: usize, batch_limit: usize) -> Result<(), AppError> {
    if n > batch_limit {
        return Err(AppError::PayloadTooLarge(format!(
            "{n} events in one request; the limit is {batch_limit}"
        )));
    }
    Ok(())
}

/// The top level of a JSON body: an array of events or one event. The outer `Err` is a
/// malformed body; the inner one a body of the wrong shape.
struct ItemsVisitor<'a> {
    defaults: &'a Defaults<'a>,
}

impl<'de> Visitor<'de> for ItemsVisitor<'_> {
    type Value = Result<Vec<Result<ClickEvent, String>>, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(16).min(4096));
        let seed = || EventSeed {
            defaults: self.defaults,
        };
        while let Some(item) = seq.next_element_seed(seed())? {
            items.push(item);
        }
        Ok(Ok(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let event = EventVisitor {
            defaults: self.defaults,
        }
        .visit_map(map)?;
        Ok(Ok(vec![event]))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(wrong_body("a boolean")))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(wrong_body("a number")))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(wrong_body("a number")))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(wrong_body("a number")))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(wrong_body("a string")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(wrong_body("null")))
    }
}

fn wrong_body(found: &str) -> String {
    format!("expected a JSON object or an array of objects, found {found}")
}

/// Reads one event; a rule broken by the value is an inner `Err`, not a parse error.
struct EventSeed<'a> {
    defaults: &'a Defaults<'a>,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = Result<ClickEvent, String>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(EventVisitor {
            defaults: self.defaults,
        })
    }
}

struct EventVisitor<'a> {
    defaults: &'a Defaults<'a>,
}

impl<'de> Visitor<'de> for EventVisitor<'_> {
    type Value = Result<ClickEvent, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut builder = EventBuilder::default();
        let mut broken = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if broken.is_some() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value: Value = map.next_value()?;
            if let Err(reason) = builder.field(key.as_str(), value, || key.to_string()) {
                broken = Some(reason);
            }
        }
        Ok(match broken {
            Some(reason) => Err(reason),
            None => builder.finish(self.defaults),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(not_object("an array")))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(not_object("a boolean")))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(not_object("a number")))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(not_object("a number")))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(not_object("a number")))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(not_object("a string")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(not_object("null")))
    }
}

fn not_object(found: &str) -> String {
    format!("expected a JSON object, found {found}")
}

/// An object key, borrowed from the body when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Key::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Key::Owned(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Key::Owned(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Defaults<'static> = Defaults {
        now_ms: 77,
        visitor_id: "cookie",
    };

    fn summary(items: &[Item]) -> Vec<(usize, Result<String, String>)> {
        items
            .iter()
            .map(|(i, r)| (*i, r.as_ref().map(|e| e.url.clone()).map_err(Clone::clone)))
            .collect()
    }

    #[test]
    fn a_bad_event_in_an_array_does_not_hide_the_others() {
        let body = br#"[{"url":"/a"}, {"url":"/b","ts_ms":"x","k":[1,{"deep":[]}]}, 3, [1,2], {"u\u0072l":"/c","p\"q":1}]"#;
        let items = read_json(body, 10, &DEFAULTS).expect("parses");
        let s = summary(&items);
        assert_eq!(s[0], (0, Ok("/a".into())));
        assert!(s[1].1.as_ref().is_err_and(|e| e.contains("ts_ms")), "{s:?}");
        assert_eq!(
            s[2],
            (2, Err("expected a JSON object, found a number".into()))
        );
        assert_eq!(
            s[3],
            (3, Err("expected a JSON object, found an array".into()))
        );
        assert_eq!(s[4], (4, Ok("/c".into())), "escaped keys work");
        let e = items[4].1.as_ref().expect("event");
        assert_eq!(e.properties.get("p\"q").map(String::as_str), Some("1"));
        assert_eq!((e.ts_ms, e.visitor_id.as_str()), (77, "cookie"));
    }

    #[test]
    fn json_body_shape_and_syntax_errors_are_400() {
        assert_eq!(
            read_json(br#"{"url":"/"}"#, 1, &DEFAULTS)
                .expect("object")
                .len(),
            1
        );
        for body in [&b"3"[..], b"\"s\"", b"null", b"{", b"[{}", b"{} {}", b""] {
            let r = read_json(body, 10, &DEFAULTS);
            assert!(
                matches!(r, Err(AppError::BadRequest(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn ndjson_lines_keep_their_line_numbers() {
        let items = read_ndjson(
            b"{\"url\":\"/a\"}\r\n\n  \n{bad\n{\"url\":\"/b\"} x\n{\"url\":\"/c\"}",
            10,
            &DEFAULTS,
        )
        .expect("split");
        let s: Vec<(usize, bool)> = items.iter().map(|(i, r)| (*i, r.is_ok())).collect();
        assert_eq!(s, vec![(0, true), (3, false), (4, false), (5, true)]);
    }

    #[test]
    fn too_many_events_is_413() {
        assert!(matches!(
            read_ndjson(b"{}\n{}\n{}", 2, &DEFAULTS),
            Err(AppError::PayloadTooLarge(_))
        ));
        assert!(matches!(
            read_json(b"[{},{},{}]", 2, &DEFAULTS),
            Err(AppError::PayloadTooLarge(_))
        ));
        assert_eq!(
            read_json(b"[{},{}]", 2, &DEFAULTS).map(|v| v.len()).ok(),
            Some(2)
        );
    }
}
