//! The job's compact view of a click: projected once per event, then shared by every stream.
//!
//! Strings are interned per worker as `Arc<str>`, so the fan-out of one event to the seven
//! streams costs reference-count increments, not string copies.

use std::sync::Arc;

use clickpulse_events::ClickEvent;
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

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
    pub visitor: Arc<str>,
    /// The url.
    pub url: Arc<str>,
    /// Whether it is a page view (counts for `page_views`).
    pub page_view: bool,
    /// What `trending` counts it as, if anything.
    pub trend: Option<(TrendKind, Arc<str>)>,
}

/// Interns strings for one worker; forgets everything past `capacity` entries so that a long
/// run's memory stays bounded (later strings are then interned afresh).
#[derive(Debug)]
pub struct Interner {
    set: FxHashSet<Arc<str>>,
    capacity: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            set: FxHashSet::default(),
            capacity: 1 << 20,
        }
    }
}

impl Interner {
    /// The shared copy of `s`.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.set.get(s) {
            return Arc::clone(a);
        }
        if self.set.len() >= self.capacity {
            self.set.clear();
        }
        let a: Arc<str> = Arc::from(s);
        self.set.insert(Arc::clone(&a));
        a
    }

    /// Projects `e`.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_events::ClickEvent;
    /// use clickpulse_job::click::{Interner, TrendKind};
    /// let mut i = Interner::default();
    /// let a = i.click(ClickEvent::page_view(5, "v1", "/news"));
    /// let b = i.click(ClickEvent::page_view(6, "v2", "/news"));
    /// assert!(std::sync::Arc::ptr_eq(&a.url, &b.url));
    /// assert_eq!(a.trend.as_ref().map(|t| t.0), Some(TrendKind::Page));
    /// ```
    pub fn click(&mut self, e: ClickEvent) -> Click {
        let url = self.intern(&e.url);
        let trend = match e.event_type() {
            "page_view" => Some((TrendKind::Page, Arc::clone(&url))),
            "add_to_cart" => e
                .product
                .as_deref()
                .map(|p| (TrendKind::Product, self.intern(p))),
            "search" => e
                .query
                .as_deref()
                .map(|q| (TrendKind::Search, self.intern(q))),
            _ => None,
        };
        Click {
            ts_ms: e.ts_ms,
            visitor: self.intern(&e.visitor_id),
            url,
            page_view: e.event_type() == "page_view",
            trend,
        }
    }
}
