//! Strategies shared by the property tests.

use std::collections::BTreeMap;

use clickpulse_events::ClickEvent;
use proptest::collection::btree_map;
use proptest::option;
use proptest::prelude::*;

/// Any text, weighted towards the characters that formats treat specially.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z0-9/\t,\"\r\n {}:\\\\é]{0,12}",]
}

/// Any click event: every optional field present or not, up to four properties.
pub fn event() -> impl Strategy<Value = ClickEvent> {
    let optional = (
        option::of(text()),
        option::of(text()),
        option::of(text()),
        option::of(text()),
        option::of(text()),
        option::of(text()),
        option::of(text()),
    );
    let properties = btree_map(text(), text(), 0..4);
    (any::<u64>(), text(), text(), optional, properties).prop_map(
        |(ts_ms, visitor_id, url, optional, properties): (
            u64,
            String,
            String,
            _,
            BTreeMap<String, String>,
        )| {
            let (tenant, event_type, referrer, user_agent, product, category, query) = optional;
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
        },
    )
}
