//! The click event: the one record type every source produces and every job consumes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The names of the optional string fields, in the order [`ClickEvent::optional_fields`] and
/// [`ClickEvent::from_parts`] use (the binary codec's flag bits follow it too).
pub(crate) const OPTIONAL_FIELDS: [&str; 7] = [
    "tenant",
    "event_type",
    "referrer",
    "user_agent",
    "product",
    "category",
    "query",
];

/// The event type a click has when its input does not say (`"page_view"`).
pub const DEFAULT_EVENT_TYPE: &str = "page_view";

/// One click: a visitor touched a url at a moment of event time.
///
/// `ts_ms`, `visitor_id` and `url` are always present; everything else is optional and is
/// omitted from JSON when absent. `properties` holds free string key/value pairs (kept as
/// strings so that the event serialises with every serde format, including the binary one the
/// engine uses between processes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ClickEvent {
    /// Event time, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// Who clicked (a cookie id, a user id, or the MSNBC `v{i}` id).
    pub visitor_id: String,
    /// What was clicked: a path such as `/news`.
    pub url: String,
    /// The site (tenant) the click belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `page_view`, `add_to_cart`, `search`, …; absent means [`DEFAULT_EVENT_TYPE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The referring url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// The browser's user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The product concerned (for `add_to_cart` and similar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// The category concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The search query (for `search`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Free key/value pairs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

impl ClickEvent {
    /// A page view of `url` by `visitor_id` at `ts_ms`, with no optional fields.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_events::ClickEvent;
    /// let e = ClickEvent::page_view(938476800000, "v1", "/news");
    /// assert_eq!(e.event_type(), "page_view");
    /// ```
    pub fn page_view(ts_ms: u64, visitor_id: impl Into<String>, url: impl Into<String>) -> Self {
        ClickEvent {
            ts_ms,
            visitor_id: visitor_id.into(),
            url: url.into(),
            ..ClickEvent::default()
        }
    }

    /// The optional string fields, in [`OPTIONAL_FIELDS`] order.
    pub(crate) fn optional_fields(&self) -> [&Option<String>; 7] {
        [
            &self.tenant,
            &self.event_type,
            &self.referrer,
            &self.user_agent,
            &self.product,
            &self.category,
            &self.query,
        ]
    }

    /// An event from its required fields, the optional ones in [`OPTIONAL_FIELDS`] order, and
    /// its properties.
    pub(crate) fn from_parts(
        ts_ms: u64,
        visitor_id: String,
        url: String,
        optional: [Option<String>; 7],
        properties: BTreeMap<String, String>,
    ) -> Self {
        let [
            tenant,
            event_type,
            referrer,
            user_agent,
            product,
            category,
            query,
        ] = optional;
        ClickEvent {
            ts_ms,
            visitor_id,
            url,
            tenant,
            event_type,
            referrer,
            user_agent,
            product,
            category,
            query,
            properties,
        }
    }

    /// The event type, [`DEFAULT_EVENT_TYPE`] when the input gave none.
    pub fn event_type(&self) -> &str {
        self.event_type.as_deref().unwrap_or(DEFAULT_EVENT_TYPE)
    }
}
