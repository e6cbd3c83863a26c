//! The job's compact view of a click: projected once per event, then shared by every stream.
//!
//! Strings are [`SmolStr`]s: up to 23 bytes (visitor ids, urls, products and queries usually are)
//! they live inline, so copying a click to the seven streams and into their state copies bytes
//! and touches no reference count shared between threads (which `Arc<str>` did on every copy and
//! drop). Longer strings are shared behind a reference count.

use clickpulse_events::ClickEvent;
use serde::{Deserialize, Serialize};
pub use smol_str::SmolStr;

/// What `trending` ranks a click by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TrendKind {
    /// A page view, by url.
    Page,
    /// An `add_to_cart`, by product.
    Product,
    /// A `search`, by query.
    Search,
}

impl TrendKind {
    /// The name in `trending` rows.
    pub fn name(self) -> &'static str {
        match self {
            TrendKind::Page => "page",
            TrendKind::Product => "product",
            TrendKind::Search => "search",
        }
    }
}

/// A click as the standard streams need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Click {
    /// Event time.
    pub ts_ms: u64,
    /// The visitor.
    pub visitor: SmolStr,
    /// The url.
    pub url: SmolStr,
    /// Whether it is a page view (counts for `page_views`).
    pub page_view: bool,
    /// What `trending` counts it as, if anything.
    pub trend: Option<(TrendKind, SmolStr)>,
}

impl Click {
    /// Projects `e`.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_events::ClickEvent;
    /// use clickpulse_job::click::{Click, TrendKind};
    /// let c = Click::of(ClickEvent::page_view(5, "v1", "/news"));
    /// assert_eq!((c.visitor.as_str(), c.url.as_str()), ("v1", "/news"));
    /// assert_eq!(c.trend.as_ref().map(|t| t.0), Some(TrendKind::Page));
    /// ```
    pub fn of(e: ClickEvent) -> Click {
        let url = SmolStr::new(&e.url);
        let page_view = e.event_type() == "page_view";
        let trend = match e.event_type() {
            "page_view" => Some((TrendKind::Page, url.clone())),
            "add_to_cart" => e
                .product
                .as_deref()
                .map(|p| (TrendKind::Product, SmolStr::new(p))),
            "search" => e
                .query
                .as_deref()
                .map(|q| (TrendKind::Search, SmolStr::new(q))),
            _ => None,
        };
        Click {
            ts_ms: e.ts_ms,
            visitor: SmolStr::new(&e.visitor_id),
            url,
            page_view,
            trend,
        }
    }
}
