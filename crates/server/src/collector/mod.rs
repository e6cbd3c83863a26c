//! The HTTP collector: `POST /collect` and the `GET /p.gif` tracking pixel.
//!
//! A request's events are validated one by one (the rules are in `docs/protocol.md`), the good
//! ones are appended through a group-commit writer thread and the reply goes out only after the
//! append returned, so a `200`/`400` reply with `accepted: n` means those `n` events are as
//! durable as the [`EventAppender`] makes them. The collector never waits on a consumer of the
//! log.
//!
//! Appenders: [`LogAppender`] (the embedded log, the default) and [`MemoryAppender`] (tests,
//! demos); implement [`EventAppender`] for anything else.

mod appender;
mod body;
mod commit;
mod event;
mod log_appender;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, body::Bytes};
use clickpulse_events::ClickEvent;
use serde::Serialize;
use serde_json::{Map, Value};

pub use self::appender::{AppendError, EventAppender, MemoryAppender};
pub(crate) use self::commit::CommitQueue;
use self::event::{Defaults, to_event};
pub use self::log_appender::LogAppender;
use crate::error::AppError;
use crate::metrics::Metrics;

/// The cookie holding the visitor id the collector assigns.
pub const VISITOR_COOKIE: &str = "cp_vid";

/// How long the visitor cookie lives: one year.
const VISITOR_COOKIE_MAX_AGE_S: u64 = 365 * 24 * 3600;

/// A transparent 1×1 GIF.
const PIXEL_GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The collector's shared state.
#[derive(Debug)]
pub(crate) struct Collector {
    pub(crate) queue: CommitQueue,
    pub(crate) metrics: Arc<Metrics>,
    /// Most events per request.
    pub(crate) batch_limit: usize,
}

/// The reply to a collector request (also for the pixel, in the log only).
#[derive(Debug, Default, Serialize)]
pub struct CollectReply {
    /// Events appended.
    pub accepted: usize,
    /// Events refused, with the reason.
    pub rejected: Vec<Rejection>,
}

/// One refused event.
#[derive(Debug, Serialize)]
pub struct Rejection {
    /// 0-based position in the request: array index, or line number (blank lines count).
    pub index: usize,
    /// Why the event was refused.
    pub reason: String,
}

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFormat {
    /// One JSON object or an array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// The request's visitor id: the cookie's, or a new one to set.
#[derive(Debug)]
struct Visitor {
    id: String,
    is_new: bool,
}

/// `POST /collect`.
pub(crate) async fn collect(
    State(collector): State<Arc<Collector>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let outcome = collect_body(&collector, &headers, body).await;
    let (accepted, rejected) = match &outcome {
        Ok((reply, _)) => (reply.accepted, reply.rejected.len()),
        Err(_) => (0, 0),
    };
    collector
        .metrics
        .record_collect(accepted as u64, rejected as u64);
    let (reply, visitor) = outcome?;
    let status = if reply.rejected.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(with_cookie((status, Json(reply)).into_response(), &visitor))
}

async fn collect_body(
    collector: &Collector,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(CollectReply, Visitor), AppError> {
    let format = body_format(headers)?;
    let body = body.map_err(body_rejection)?;
    let visitor = visitor(headers);
    let defaults = Defaults {
        now_ms: now_ms(),
        visitor_id: &visitor.id,
    };
    let items = match format {
        BodyFormat::Json => body::read_json(&body, collector.batch_limit, &defaults)?,
        BodyFormat::Ndjson => body::read_ndjson(&body, collector.batch_limit, &defaults)?,
    };
    if items.is_empty() {
        return Err(AppError::BadRequest("the body holds no events".into()));
    }
    let mut reply = CollectReply::default();
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items {
        match item {
            Ok(e) => events.push(e),
            Err(reason) => reply.rejected.push(Rejection { index, reason }),
        }
    }
    let visitor = visitor_used(visitor, &events);
    reply.accepted = append(collector, events).await?;
    Ok((reply, visitor))
}

/// Appends `events` (if any); returns how many.
async fn append(collector: &Collector, events: Vec<ClickEvent>) -> Result<usize, AppError> {
    let n = events.len();
    if n > 0 {
        collector.queue.append(events).await?;
    }
    Ok(n)
}

/// `GET /p.gif?url=…&visitor_id=…`: query parameters are the event.
pub(crate) async fn pixel(
    State(collector): State<Arc<Collector>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let visitor = visitor(&headers);
    let defaults = Defaults {
        now_ms: now_ms(),
        visitor_id: &visitor.id,
    };
    let outcome = match to_event(pixel_object(params, &headers), &defaults) {
        Ok(event) => {
            let visitor = visitor_used(visitor, std::slice::from_ref(&event));
            append(&collector, vec![event])
                .await
                .map(|_| visitor)
                .map_err(|e| (e.status(), e.to_string()))
        }
        Err(reason) => Err((StatusCode::BAD_REQUEST, reason)),
    };
    let (accepted, rejected) = if outcome.is_ok() { (1, 0) } else { (0, 1) };
    collector.metrics.record_collect(accepted, rejected);
    match outcome {
        Ok(visitor) => with_cookie(gif(StatusCode::OK), &visitor),
        Err((status, reason)) => {
            let mut response = gif(status);
            if let Ok(value) = HeaderValue::from_str(&reason) {
                response.headers_mut().insert("x-clickpulse-error", value);
            }
            response
        }
    }
}

/// The pixel's query as a collector JSON object; the page's `Referer` is the default `url`
/// and its `User-Agent` the default `user_agent`.
fn pixel_object(params: Vec<(String, String)>, headers: &HeaderMap) -> Value {
    let mut object = Map::new();
    for (key, value) in params {
        let value = match (key.as_str(), value.parse::<u64>()) {
            ("ts_ms", Ok(ts)) => Value::from(ts),
            _ => Value::String(value),
        };
        object.insert(key, value);
    }
    for (field, name) in [("url", header::REFERER), ("user_agent", header::USER_AGENT)] {
        if object.contains_key(field) {
            continue;
        }
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            object.insert(field.into(), Value::String(value.into()));
        }
    }
    Value::Object(object)
}

/// The body framing named by `Content-Type`.
fn body_format(headers: &HeaderMap) -> Result<BodyFormat, AppError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Ok(BodyFormat::Json),
        "application/x-ndjson" | "application/ndjson" | "text/plain" => Ok(BodyFormat::Ndjson),
        _ => Err(AppError::UnsupportedMediaType(format!(
            "content type {content_type:?} is not accepted; use application/json, \
             application/x-ndjson or text/plain (NDJSON)"
        ))),
    }
}

fn body_rejection(rejection: BytesRejection) -> AppError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge(rejection.body_text())
    } else {
        AppError::BadRequest(rejection.body_text())
    }
}

/// The visitor id from the `cp_vid` cookie, or a new random one.
fn visitor(headers: &HeaderMap) -> Visitor {
    let from_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == VISITOR_COOKIE && is_cookie_id(value));
    match from_cookie {
        Some((_, id)) => Visitor {
            id: id.to_owned(),
            is_new: false,
        },
        None => Visitor {
            id: uuid::Uuid::new_v4().simple().to_string(),
            is_new: true,
        },
    }
}

/// Whether `value` looks like an id we could have set (and is safe to echo in a header).
fn is_cookie_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Keeps `is_new` only when some event actually carries the new id.
fn visitor_used(visitor: Visitor, events: &[ClickEvent]) -> Visitor {
    let is_new = visitor.is_new && events.iter().any(|e| e.visitor_id == visitor.id);
    Visitor { is_new, ..visitor }
}

/// Adds `Set-Cookie: cp_vid=…` when the request got a new visitor id.
fn with_cookie(mut response: Response, visitor: &Visitor) -> Response {
    if visitor.is_new {
        let cookie = format!(
            "{VISITOR_COOKIE}={}; Path=/; Max-Age={VISITOR_COOKIE_MAX_AGE_S}; SameSite=Lax; HttpOnly",
            visitor.id
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// The pixel response: a 1×1 GIF that no cache keeps.
fn gif(status: StatusCode) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "image/gif"),
        (
            header::CACHE_CONTROL,
            "no-cache, no-store, must-revalidate, max-age=0",
        ),
        (header::PRAGMA, "no-cache"),
        (header::EXPIRES, "0"),
    ];
    (status, headers, Bytes::from_static(&PIXEL_GIF)).into_response()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(name.clone(), HeaderValue::from_str(value).expect("header"));
        }
        h
    }

    #[test]
    fn content_types_map_to_formats() {
        let ct = |v: &str| body_format(&headers(&[(header::CONTENT_TYPE, v)]));
        assert_eq!(ct("application/json").ok(), Some(BodyFormat::Json));
        assert_eq!(
            ct("Application/JSON; charset=utf-8").ok(),
            Some(BodyFormat::Json)
        );
        assert_eq!(ct("application/x-ndjson").ok(), Some(BodyFormat::Ndjson));
        assert_eq!(ct("text/plain").ok(), Some(BodyFormat::Ndjson));
        assert!(matches!(
            ct("text/csv"),
            Err(AppError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            body_format(&HeaderMap::new()),
            Err(AppError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn visitor_comes_from_the_cookie_or_is_new() {
        let v = visitor(&headers(&[(header::COOKIE, "a=b; cp_vid=abc-123; c=d")]));
        assert_eq!((v.id.as_str(), v.is_new), ("abc-123", false));
        let v = visitor(&headers(&[(header::COOKIE, "cp_vid=bad value!")]));
        assert!(v.is_new);
        assert_eq!(v.id.len(), 32);
        let other = visitor(&HeaderMap::new());
        assert_ne!(v.id, other.id);
    }

    #[test]
    fn pixel_query_becomes_an_event_object() {
        let h = headers(&[
            (header::REFERER, "https://shop/p/1"),
            (header::USER_AGENT, "ua"),
        ]);
        let obj = pixel_object(
            vec![
                ("ts_ms".into(), "42".into()),
                ("color".into(), "red".into()),
            ],
            &h,
        );
        assert_eq!(
            obj,
            serde_json::json!({"ts_ms": 42, "color": "red", "url": "https://shop/p/1", "user_agent": "ua"})
        );
    }

    #[test]
    fn pixel_gif_is_a_gif() {
        assert!(PIXEL_GIF.starts_with(b"GIF89a"));
        assert_eq!(PIXEL_GIF.last(), Some(&0x3b));
    }
}
