//! NDJSON: one JSON click-event object per line.
//!
//! The object has the fields of [`ClickEvent`]:
//! - `ts_ms` (a non-negative integer), `visitor_id` and `url` (non-empty strings) are required;
//! - `tenant`, `event_type`, `referrer`, `user_agent`, `product`, `category`, `query` are
//!   optional strings, `null` meaning absent;
//! - `properties` is an optional object (or `null`) of property values;
//! - any other field is a property too: it lands in `properties` under its own name.
//!
//! A property value (inside `properties` or at the top level) that is a string is kept as is; a
//! number or boolean is kept as its JSON text (`9.5` → `"9.5"`, `true` → `"true"`); `null`
//! drops the property; an array or object is rejected, since properties are flat strings.
//! When a top-level field and an entry of `properties` share a name, the entry of
//! `properties` wins. A field given twice, a known field of the wrong type, or a line that is
//! not one JSON object is rejected with a message that names the field and the column.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::LineError;
use crate::ClickEvent;
use crate::event::OPTIONAL_FIELDS;

/// Parses one NDJSON line (no terminator, not blank).
pub(super) fn parse(line: &[u8]) -> Result<ClickEvent, LineError> {
    let NdjsonEvent(event) = serde_json::from_slice(line).map_err(|e| LineError::Json {
        message: e.to_string(),
    })?;
    if event.visitor_id.is_empty() {
        return Err(LineError::EmptyField {
            field: "visitor_id",
        });
    }
    if event.url.is_empty() {
        return Err(LineError::EmptyField { field: "url" });
    }
    Ok(event)
}

/// A click event read by the NDJSON rules above (the derived `Deserialize` of [`ClickEvent`]
/// ignores unknown fields instead).
struct NdjsonEvent(ClickEvent);

impl<'de> Deserialize<'de> for NdjsonEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EventVisitor)
    }
}

/// A top-level key of the event object.
enum Key {
    TsMs,
    VisitorId,
    Url,
    /// One of [`OPTIONAL_FIELDS`], by index.
    Optional(usize),
    Properties,
    Other(String),
}

impl Key {
    fn from_name(name: &str) -> Key {
        match name {
            "ts_ms" => Key::TsMs,
            "visitor_id" => Key::VisitorId,
            "url" => Key::Url,
            "properties" => Key::Properties,
            other => match OPTIONAL_FIELDS.iter().position(|f| *f == other) {
                Some(index) => Key::Optional(index),
                None => Key::Other(other.to_owned()),
            },
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
                Ok(Key::from_name(name))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Any JSON value, with nested arrays and objects skipped rather than kept: the event rules
/// check the type themselves so that their messages can name the field.
enum Value {
    Str(String),
    UInt(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    Array,
    Object,
}

impl Value {
    /// "a string", "an array", …: the kind of value, for error messages.
    fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::UInt(_) => "a number",
            Value::Int(_) => "a negative number",
            Value::Float(_) => "a fractional number",
            Value::Bool(_) => "a boolean",
            Value::Null => "null",
            Value::Array => "an array",
            Value::Object => "an object",
        }
    }

    /// The property value this is: `Ok(None)` for null, `Err` with the kind for nested values.
    fn into_property(self) -> Result<Option<String>, &'static str> {
        match self {
            Value::Str(s) => Ok(Some(s)),
            Value::UInt(n) => Ok(Some(n.to_string())),
            Value::Int(n) => Ok(Some(n.to_string())),
            Value::Float(x) => Ok(Some(match serde_json::Number::from_f64(x) {
                Some(n) => n.to_string(),
                None => x.to_string(),
            })),
            Value::Bool(b) => Ok(Some(b.to_string())),
            Value::Null => Ok(None),
            nested @ (Value::Array | Value::Object) => Err(nested.kind()),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::UInt(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(match u64::try_from(v) {
            Ok(u) => Value::UInt(u),
            Err(_) => Value::Int(v),
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Object)
    }
}

/// The `properties` object (or `null`), read by the property rules.
struct Properties(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Properties {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PropertiesVisitor)
    }
}

struct PropertiesVisitor;

impl<'de> Visitor<'de> for PropertiesVisitor {
    type Value = Properties;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field `properties` to be an object or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Properties, E> {
        Ok(Properties(BTreeMap::new()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Properties, A::Error> {
        let mut properties = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value::<Value>()?;
            if properties.contains_key(&name) {
                return Err(de::Error::custom(format_args!(
                    "duplicate property `{name}`"
                )));
            }
            if let Some(text) = value.into_property().map_err(|kind| {
                de::Error::custom(format_args!(
                    "property `{name}` must be a string, number, boolean or null, found {kind}"
                ))
            })? {
                properties.insert(name, text);
            }
        }
        Ok(Properties(properties))
    }
}

/// The fields of an event object as they are read, before the required ones are checked.
#[derive(Default)]
struct Fields {
    ts_ms: Option<u64>,
    visitor_id: Option<String>,
    url: Option<String>,
    optional: [Option<String>; 7],
    /// Which optional fields appeared (even as null), to catch duplicates.
    optional_seen: [bool; 7],
    properties: Option<BTreeMap<String, String>>,
    /// Unknown top-level fields, turned into properties.
    extra: BTreeMap<String, String>,
}

impl Fields {
    fn into_event<E: de::Error>(self) -> Result<ClickEvent, E> {
        let mut properties = self.extra;
        properties.extend(self.properties.unwrap_or_default());
        Ok(ClickEvent::from_parts(
            self.ts_ms
                .ok_or_else(|| de::Error::missing_field("ts_ms"))?,
            self.visitor_id
                .ok_or_else(|| de::Error::missing_field("visitor_id"))?,
            self.url.ok_or_else(|| de::Error::missing_field("url"))?,
            self.optional,
            properties,
        ))
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = NdjsonEvent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with ts_ms, visitor_id and url")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NdjsonEvent, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            read_field(&mut map, key, &mut fields)?;
        }
        fields.into_event().map(NdjsonEvent)
    }
}

/// Reads the value of `key` into `fields`, checking its type and that it is not a duplicate.
fn read_field<'de, A: MapAccess<'de>>(
    map: &mut A,
    key: Key,
    fields: &mut Fields,
) -> Result<(), A::Error> {
    match key {
        Key::TsMs => {
            let ts_ms = timestamp(map.next_value()?)?;
            set_once(&mut fields.ts_ms, "ts_ms", ts_ms)
        }
        Key::VisitorId => {
            let text = required_string("visitor_id", map.next_value()?)?;
            set_once(&mut fields.visitor_id, "visitor_id", text)
        }
        Key::Url => {
            let text = required_string("url", map.next_value()?)?;
            set_once(&mut fields.url, "url", text)
        }
        Key::Optional(index) => read_optional(map, index, fields),
        Key::Properties => {
            let Properties(properties) = map.next_value()?;
            set_once(&mut fields.properties, "properties", properties)
        }
        Key::Other(name) => read_extra(map, name, fields),
    }
}

fn read_optional<'de, A: MapAccess<'de>>(
    map: &mut A,
    index: usize,
    fields: &mut Fields,
) -> Result<(), A::Error> {
    let name = OPTIONAL_FIELDS.get(index).copied().unwrap_or("?");
    let value = match map.next_value()? {
        Value::Null => None,
        Value::Str(s) => Some(s),
        other => return Err(wrong_type(name, "a string or null", &other)),
    };
    match (
        fields.optional_seen.get_mut(index),
        fields.optional.get_mut(index),
    ) {
        (Some(seen), Some(slot)) => {
            if *seen {
                return Err(de::Error::duplicate_field(name));
            }
            *seen = true;
            *slot = value;
            Ok(())
        }
        _ => Err(de::Error::custom("internal error: unknown optional field")),
    }
}

fn read_extra<'de, A: MapAccess<'de>>(
    map: &mut A,
    name: String,
    fields: &mut Fields,
) -> Result<(), A::Error> {
    let value = map.next_value::<Value>()?;
    if fields.extra.contains_key(&name) {
        return Err(de::Error::custom(format_args!("duplicate field `{name}`")));
    }
    let text = value.into_property().map_err(|kind| {
        de::Error::custom(format_args!(
            "unknown field `{name}` becomes a property and must be a string, number, boolean or null, found {kind}"
        ))
    })?;
    if let Some(text) = text {
        fields.extra.insert(name, text);
    }
    Ok(())
}

fn timestamp<E: de::Error>(value: Value) -> Result<u64, E> {
    match value {
        Value::UInt(ts) => Ok(ts),
        other => Err(wrong_type(
            "ts_ms",
            "a non-negative integer (ms since the Unix epoch)",
            &other,
        )),
    }
}

fn required_string<E: de::Error>(name: &'static str, value: Value) -> Result<String, E> {
    match value {
        Value::Str(s) => Ok(s),
        other => Err(wrong_type(name, "a string", &other)),
    }
}

fn wrong_type<E: de::Error>(name: &str, expected: &str, found: &Value) -> E {
    E::custom(format_args!(
        "field `{name}` must be {expected}, found {}",
        found.kind()
    ))
}

fn set_once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_error(line: &str) -> String {
        match parse(line.as_bytes()) {
            Err(LineError::Json { message }) => message,
            other => panic!("expected a JSON error for {line}, got {other:?}"),
        }
    }

    #[test]
    fn minimal_object_is_a_page_view() {
        let e = parse(br#"{"ts_ms":938476800000,"visitor_id":"v0","url":"/frontpage"}"#)
            .expect("valid line");
        assert_eq!(
            e,
            ClickEvent::page_view(938_476_800_000, "v0", "/frontpage")
        );
    }

    #[test]
    fn optional_fields_and_properties_are_read() {
        let e = parse(
            br#"{"url":"/cart","ts_ms":5,"visitor_id":"v","tenant":"shop","event_type":"add_to_cart",
                "referrer":null,"product":"p1","category":"c","query":"q","user_agent":"ua",
                "properties":{"price":"9.5"}}"#,
        )
        .expect("valid line");
        assert_eq!(e.tenant.as_deref(), Some("shop"));
        assert_eq!(e.event_type(), "add_to_cart");
        assert_eq!(e.referrer, None);
        assert_eq!(e.product.as_deref(), Some("p1"));
        assert_eq!(e.category.as_deref(), Some("c"));
        assert_eq!(e.query.as_deref(), Some("q"));
        assert_eq!(e.user_agent.as_deref(), Some("ua"));
        assert_eq!(e.properties.get("price").map(String::as_str), Some("9.5"));
    }

    #[test]
    fn unknown_scalars_become_properties_and_nulls_vanish() {
        let e = parse(
            br#"{"ts_ms":1,"visitor_id":"v","url":"/u","color":"red","qty":3,"delta":-2,
                "price":9.5,"new":true,"gone":null}"#,
        )
        .expect("valid line");
        let props: Vec<(&str, &str)> = e
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            props,
            [
                ("color", "red"),
                ("delta", "-2"),
                ("new", "true"),
                ("price", "9.5"),
                ("qty", "3")
            ]
        );
    }

    #[test]
    fn properties_entry_wins_over_top_level_field() {
        let e = parse(br#"{"a":"top","ts_ms":1,"visitor_id":"v","url":"/u","properties":{"a":"inner","n":1}}"#)
            .expect("valid line");
        assert_eq!(e.properties.get("a").map(String::as_str), Some("inner"));
        assert_eq!(e.properties.get("n").map(String::as_str), Some("1"));
    }

    #[test]
    fn serialised_events_read_back_equal() {
        let mut e = ClickEvent::page_view(7, "v\"1", "/é\n");
        e.query = Some("shoes".into());
        e.properties.insert("k".into(), "v".into());
        let line = serde_json::to_string(&e).expect("serialisable");
        assert_eq!(parse(line.as_bytes()), Ok(e));
    }

    #[test]
    fn missing_required_fields_are_named() {
        assert!(json_error(r#"{"visitor_id":"v","url":"/u"}"#).contains("missing field `ts_ms`"));
        assert!(json_error(r#"{"ts_ms":1,"url":"/u"}"#).contains("missing field `visitor_id`"));
        assert!(json_error(r#"{"ts_ms":1,"visitor_id":"v"}"#).contains("missing field `url`"));
    }

    #[test]
    fn wrong_types_of_known_fields_are_named_with_column() {
        let m = json_error(r#"{"ts_ms":"123","visitor_id":"v","url":"/u"}"#);
        assert!(
            m.contains("field `ts_ms` must be a non-negative integer")
                && m.contains("found a string"),
            "{m}"
        );
        assert!(m.contains("column"), "{m}");
        let m = json_error(r#"{"ts_ms":-1,"visitor_id":"v","url":"/u"}"#);
        assert!(m.contains("found a negative number"), "{m}");
        let m = json_error(r#"{"ts_ms":1.5,"visitor_id":"v","url":"/u"}"#);
        assert!(m.contains("found a fractional number"), "{m}");
        let m = json_error(r#"{"ts_ms":1,"visitor_id":7,"url":"/u"}"#);
        assert!(
            m.contains("field `visitor_id` must be a string, found a number"),
            "{m}"
        );
        let m = json_error(r#"{"ts_ms":1,"visitor_id":"v","url":null}"#);
        assert!(
            m.contains("field `url` must be a string, found null"),
            "{m}"
        );
        let m = json_error(r#"{"ts_ms":1,"visitor_id":"v","url":"/u","tenant":["a"]}"#);
        assert!(
            m.contains("field `tenant` must be a string or null, found an array"),
            "{m}"
        );
    }

    #[test]
    fn nested_property_values_are_rejected() {
        let m = json_error(r#"{"ts_ms":1,"visitor_id":"v","url":"/u","x":{"y":1}}"#);
        assert!(
            m.contains("unknown field `x`") && m.contains("found an object"),
            "{m}"
        );
        let m = json_error(r#"{"ts_ms":1,"visitor_id":"v","url":"/u","properties":{"y":[1]}}"#);
        assert!(
            m.contains("property `y`") && m.contains("found an array"),
            "{m}"
        );
        let m = json_error(r#"{"ts_ms":1,"visitor_id":"v","url":"/u","properties":"y"}"#);
        assert!(m.contains("`properties` to be an object or null"), "{m}");
    }

    #[test]
    fn duplicate_fields_are_rejected() {
        let m = json_error(r#"{"ts_ms":1,"ts_ms":2,"visitor_id":"v","url":"/u"}"#);
        assert!(m.contains("duplicate field `ts_ms`"), "{m}");
        let m = json_error(r#"{"ts_ms":1,"visitor_id":"v","url":"/u","tenant":null,"tenant":"t"}"#);
        assert!(m.contains("duplicate field `tenant`"), "{m}");
        let m = json_error(r#"{"ts_ms":1,"visitor_id":"v","url":"/u","x":1,"x":2}"#);
        assert!(m.contains("duplicate field `x`"), "{m}");
        let m =
            json_error(r#"{"ts_ms":1,"visitor_id":"v","url":"/u","properties":{"x":"1","x":"2"}}"#);
        assert!(m.contains("duplicate property `x`"), "{m}");
        let m = json_error(
            r#"{"ts_ms":1,"visitor_id":"v","url":"/u","properties":{},"properties":{}}"#,
        );
        assert!(m.contains("duplicate field `properties`"), "{m}");
    }

    #[test]
    fn non_objects_and_broken_json_are_rejected() {
        let m = json_error(r#"[1,2]"#);
        assert!(
            m.contains("a JSON object with ts_ms, visitor_id and url"),
            "{m}"
        );
        assert!(json_error("42").contains("expected a JSON object"));
        assert!(json_error(r#"{"ts_ms":1,"visitor_id":"v""#).contains("EOF"));
        assert!(json_error(r#"{"ts_ms":1,"visitor_id":"v","url":"/u"} x"#).contains("trailing"));
        assert!(matches!(
            parse(b"{\"ts_ms\":1,\"visitor_id\":\"\xff\",\"url\":\"/u\"}"),
            Err(LineError::Json { .. })
        ));
    }

    #[test]
    fn empty_required_strings_are_empty_fields() {
        assert_eq!(
            parse(br#"{"ts_ms":1,"visitor_id":"","url":"/u"}"#),
            Err(LineError::EmptyField {
                field: "visitor_id"
            })
        );
        assert_eq!(
            parse(br#"{"ts_ms":1,"visitor_id":"v","url":""}"#),
            Err(LineError::EmptyField { field: "url" })
        );
    }
}
