//! The job's compact view of a click: projected once per event, then shared by every stream.
//!
//! Strings are [`HashedStr`]s: [`SmolStr`]s, which up to 23 bytes (visitor ids, urls, products
//! and queries usually are) live inline, so copying a click to the seven streams and into their
//! state copies bytes and touches no reference count shared between threads (which `Arc<str>` did
//! on every copy and drop), each with its hash, computed once here for every table and exchange
//! the string is a key of later.

use clickpulse_engine::source::{DeadLetter, PartitionedSource};
use clickpulse_engine::{DStream, Data, EngineError, EventTime, Job};
use clickpulse_events::ClickEvent;
use clickpulse_events::binary::{self, ClickEventRef, DecodeError};
use serde::{Deserialize, Serialize};
pub use smol_str::SmolStr;

use crate::hashed::HashedStr;

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
    pub visitor: HashedStr,
    /// The url.
    pub url: HashedStr,
    /// Whether it is a page view (counts for `page_views`).
    pub page_view: bool,
    /// What `trending` counts it as, if anything. A page view's is `(TrendKind::Page, url)`, and
    /// only a page view's is of that kind: the standard job counts trending pages from
    /// `page_views` when it can (see [`StandardJob`](crate::StandardJob)), and builds clicks
    /// with [`Click::of`] or [`Click::decode`], which keep to this.
    pub trend: Option<(TrendKind, HashedStr)>,
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
        Click::project(
            e.ts_ms,
            &e.visitor_id,
            &e.url,
            e.event_type(),
            e.product.as_deref(),
            e.query.as_deref(),
        )
    }

    /// Projects a borrowed record (see [`Click::decode`]).
    pub fn of_ref(e: &ClickEventRef<'_>) -> Click {
        Click::project(
            e.ts_ms,
            e.visitor_id,
            e.url,
            e.event_type(),
            e.product(),
            e.query(),
        )
    }

    /// Decodes a record of the embedded log straight into a click, copying only the fields it
    /// keeps (for [`LogSource::decoding`](clickpulse_connectors::log::LogSource::decoding)).
    ///
    /// # Errors
    /// What [`binary::decode`] reports for the same bytes.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_events::{binary, ClickEvent};
    /// use clickpulse_job::click::Click;
    /// let event = ClickEvent::page_view(5, "v1", "/news");
    /// let mut buf = Vec::new();
    /// binary::encode(&event, &mut buf);
    /// assert_eq!(Click::decode(&buf)?, Click::of(event));
    /// # Ok::<(), binary::DecodeError>(())
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Click, DecodeError> {
        binary::decode_ref(bytes).map(|e| Click::of_ref(&e))
    }

    fn project(
        ts_ms: u64,
        visitor: &str,
        url: &str,
        event_type: &str,
        product: Option<&str>,
        query: Option<&str>,
    ) -> Click {
        let url = HashedStr::new(url);
        let trend = match event_type {
            "page_view" => Some((TrendKind::Page, url.clone())),
            "add_to_cart" => product.map(|p| (TrendKind::Product, HashedStr::new(p))),
            "search" => query.map(|q| (TrendKind::Search, HashedStr::new(q))),
            _ => None,
        };
        Click {
            ts_ms,
            visitor: HashedStr::new(visitor),
            url,
            page_view: event_type == "page_view",
            trend,
        }
    }
}

/// The clicks a source gives and its dead letters.
pub type ClickStreams<'s> = (DStream<'s, Click>, DStream<'s, DeadLetter>);

/// What the standard job can read: whole events (projected as they are read) or clicks.
pub trait IntoClick: Data {
    /// The click.
    fn into_click(self) -> Click;

    /// Reads `source` in `job` as clicks: each record projected with
    /// [`into_click`](IntoClick::into_click) as it is read.
    ///
    /// # Errors
    /// As [`Job::source_with_dead_letters`].
    fn read_clicks<'s, S>(
        job: &mut Job<'s>,
        source: &S,
        event_time: EventTime<Click>,
    ) -> Result<ClickStreams<'s>, EngineError>
    where
        S: PartitionedSource<Item = Self> + Clone,
    {
        let clicks = source.clone().map_items(Self::into_click);
        job.source_with_dead_letters(&clicks, Some(event_time))
    }
}

impl IntoClick for ClickEvent {
    fn into_click(self) -> Click {
        Click::of(self)
    }
}

impl IntoClick for Click {
    fn into_click(self) -> Click {
        self
    }

    /// Reads the clicks as they are: an identity projection would still copy every click once.
    fn read_clicks<'s, S>(
        job: &mut Job<'s>,
        source: &S,
        event_time: EventTime<Click>,
    ) -> Result<ClickStreams<'s>, EngineError>
    where
        S: PartitionedSource<Item = Click> + Clone,
    {
        job.source_with_dead_letters(source, Some(event_time))
    }
}
