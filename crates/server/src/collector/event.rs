//! Turning a collected JSON object into a [`ClickEvent`].
//!
//! The rules follow the NDJSON line format of `clickpulse-events`, with the collector's two
//! defaults: a missing (or `null`) `ts_ms` is the server clock and a missing (or `null`)
//! `visitor_id` is the `cp_vid` cookie's id.
//!
//! - `url` (a non-empty string) is required; `visitor_id`, when given, must be a non-empty
//!   string; `ts_ms`, when given, a non-negative integer;
//! - `tenant`, `event_type`, `referrer`, `user_agent`, `product`, `category`, `query` are
//!   optional strings (`null` = absent);
//! - `properties` is an optional object (or `null`); any other top-level field is a property
//!   too. A string value is kept, a number or boolean becomes its JSON text, `null` drops the
//!   property, an array or object is rejected. An entry of `properties` wins over a top-level
//!   field of the same name.

use std::collections::BTreeMap;

use clickpulse_events::ClickEvent;
use serde_json::{Map, Value};

pub(crate) use crate::json::kind;

/// Values the request supplies to events that lack them.
#[derive(Debug)]
pub(crate) struct Defaults<'a> {
    /// The server clock, ms since the epoch.
    pub(crate) now_ms: u64,
    /// The visitor id of the request (cookie, or freshly generated).
    pub(crate) visitor_id: &'a str,
}

/// Builds the event from `value`, or says why it is not one.
pub(crate) fn to_event(value: Value, defaults: &Defaults<'_>) -> Result<ClickEvent, String> {
    let Value::Object(map) = value else {
        return Err(format!("expected a JSON object, found {}", kind(&value)));
    };
    let mut builder = EventBuilder::default();
    for (key, value) in map {
        builder.field(key.as_str(), value, || key.clone())?;
    }
    builder.finish(defaults)
}

/// An event assembled field by field, as an object is read.
#[derive(Debug, Default)]
pub(crate) struct EventBuilder {
    event: ClickEvent,
    ts: Option<u64>,
    visitor: Option<String>,
    url: Option<String>,
    /// The `properties` object, applied last so that its entries win.
    nested: Option<Map<String, Value>>,
}

impl EventBuilder {
    /// Takes one field of the object; `owned_key` gives the key as a `String` when it becomes
    /// a property name.
    pub(crate) fn field(
        &mut self,
        key: &str,
        value: Value,
        owned_key: impl FnOnce() -> String,
    ) -> Result<(), String> {
        let e = &mut self.event;
        match key {
            "ts_ms" => self.ts = ts_ms(value)?,
            "visitor_id" => self.visitor = non_empty_str(key, value)?,
            "url" => self.url = non_empty_str(key, value)?,
            "properties" => self.nested = properties_object(value)?,
            "tenant" => e.tenant = optional_str(key, value)?,
            "event_type" => e.event_type = optional_str(key, value)?,
            "referrer" => e.referrer = optional_str(key, value)?,
            "user_agent" => e.user_agent = optional_str(key, value)?,
            "product" => e.product = optional_str(key, value)?,
            "category" => e.category = optional_str(key, value)?,
            "query" => e.query = optional_str(key, value)?,
            _ => insert_property(&mut e.properties, owned_key(), value)?,
        }
        Ok(())
    }

    /// The event, with the defaults applied, or why it is not one.
    pub(crate) fn finish(self, defaults: &Defaults<'_>) -> Result<ClickEvent, String> {
        let mut event = self.event;
        for (key, value) in self.nested.unwrap_or_default() {
            event.properties.remove(&key);
            insert_property(&mut event.properties, key, value)?;
        }
        event.url = self.url.ok_or("missing field `url` (a non-empty string)")?;
        event.ts_ms = self.ts.unwrap_or(defaults.now_ms);
        event.visitor_id = self
            .visitor
            .unwrap_or_else(|| defaults.visitor_id.to_owned());
        Ok(event)
    }
}

fn ts_ms(value: Value) -> Result<Option<u64>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("`ts_ms` must be a non-negative integer, found {n}")),
        other => Err(format!(
            "`ts_ms` must be a non-negative integer, found {}",
            kind(&other)
        )),
    }
}

/// A string field that must not be empty when given; `null` means absent.
fn non_empty_str(key: &str, value: Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Err(format!("`{key}` must not be empty")),
        Value::String(s) => Ok(Some(s)),
        other => Err(format!("`{key}` must be a string, found {}", kind(&other))),
    }
}

fn optional_str(key: &str, value: Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(format!("`{key}` must be a string, found {}", kind(&other))),
    }
}

fn properties_object(value: Value) -> Result<Option<Map<String, Value>>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map)),
        other => Err(format!(
            "`properties` must be an object, found {}",
            kind(&other)
        )),
    }
}

fn insert_property(
    properties: &mut BTreeMap<String, String>,
    key: String,
    value: Value,
) -> Result<(), String> {
    let text = match value {
        Value::Null => return Ok(()),
        Value::String(s) => s,
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => {
            return Err(format!(
                "property `{key}` must be a string, number or boolean, found {}",
                kind(&other)
            ));
        }
    };
    properties.insert(key, text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DEFAULTS: Defaults<'static> = Defaults {
        now_ms: 1_700_000_000_000,
        visitor_id: "cookie-id",
    };

    #[test]
    fn full_event_is_kept() {
        let e = to_event(
            json!({"ts_ms": 5, "visitor_id": "v1", "url": "/a", "tenant": "shop",
                   "event_type": "search", "query": "shoes", "ab": "b",
                   "properties": {"price": 9.5, "new": true, "gone": null}}),
            &DEFAULTS,
        )
        .expect("valid");
        assert_eq!(
            (e.ts_ms, e.visitor_id.as_str(), e.url.as_str()),
            (5, "v1", "/a")
        );
        assert_eq!(e.tenant.as_deref(), Some("shop"));
        assert_eq!(e.event_type(), "search");
        assert_eq!(e.query.as_deref(), Some("shoes"));
        let props: Vec<_> = e
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(props, vec![("ab", "b"), ("new", "true"), ("price", "9.5")]);
    }

    #[test]
    fn missing_ts_and_visitor_take_the_defaults() {
        let e = to_event(json!({"url": "/a"}), &DEFAULTS).expect("valid");
        assert_eq!(e.ts_ms, DEFAULTS.now_ms);
        assert_eq!(e.visitor_id, "cookie-id");
        let e = to_event(
            json!({"url": "/a", "ts_ms": null, "visitor_id": null}),
            &DEFAULTS,
        )
        .expect("valid");
        assert_eq!(
            (e.ts_ms, e.visitor_id.as_str()),
            (DEFAULTS.now_ms, "cookie-id")
        );
        let e = to_event(json!({"url": "/a", "ts_ms": 0}), &DEFAULTS).expect("valid");
        assert_eq!(e.ts_ms, 0, "an explicit epoch is kept");
    }

    #[test]
    fn nested_properties_win_over_top_level_ones() {
        let e = to_event(
            json!({"url": "/", "k": "top", "properties": {"k": "nested"}}),
            &DEFAULTS,
        )
        .expect("valid");
        assert_eq!(e.properties.get("k").map(String::as_str), Some("nested"));
    }

    #[test]
    fn bad_events_are_rejected_with_the_field_named() {
        let cases = [
            (json!([1]), "expected a JSON object, found an array"),
            (json!({}), "missing field `url`"),
            (json!({"url": ""}), "`url` must not be empty"),
            (json!({"url": 3}), "`url` must be a string, found a number"),
            (
                json!({"url": "/", "visitor_id": ""}),
                "`visitor_id` must not be empty",
            ),
            (
                json!({"url": "/", "ts_ms": -1}),
                "`ts_ms` must be a non-negative integer",
            ),
            (
                json!({"url": "/", "ts_ms": "5"}),
                "`ts_ms` must be a non-negative integer",
            ),
            (
                json!({"url": "/", "tenant": 1}),
                "`tenant` must be a string",
            ),
            (
                json!({"url": "/", "properties": []}),
                "`properties` must be an object",
            ),
            (
                json!({"url": "/", "x": {"a": 1}}),
                "property `x` must be a string",
            ),
        ];
        for (value, reason) in cases {
            let err = to_event(value.clone(), &DEFAULTS).expect_err("invalid");
            assert!(err.contains(reason), "{value}: {err:?} lacks {reason:?}");
        }
    }
}
