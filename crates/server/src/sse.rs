//! `GET /sse/{stream}`: one stream as Server-Sent Events.
//!
//! Every event is `id: <batch>` plus `data: <the WebSocket batch message>`. A reconnecting
//! `EventSource` sends `Last-Event-ID: <last batch seen>` and resumes after it; `?from_batch=N`
//! resumes from `N` inclusive (the header wins when both are given). Same hub semantics as the
//! WebSocket: snapshot, exact resume or resync, conflation.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt, stream};
use serde::Deserialize;

use crate::error::AppError;
use crate::hub::Delivery;
use crate::metrics::ClientGuard;
use crate::server::LiveState;

/// Interval of the keep-alive comments that stop proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The query of `GET /sse/{stream}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SseQuery {
    from_batch: Option<u64>,
}

/// `GET /sse/{stream}`.
pub(crate) async fn handler(
    State(state): State<LiveState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    query: Result<Query<SseQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let Query(query) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let from_batch = resume_point(&headers, query.from_batch)?;
    if !state.hub.has_stream(&stream) {
        return Err(AppError::NotFound(format!("unknown stream {stream:?}")));
    }
    let sub = state.hub.subscription();
    sub.subscribe(std::slice::from_ref(&stream), from_batch)
        .map_err(|e| AppError::NotFound(e.to_string()))?;
    let guard = state.metrics.sse_client();
    let events = stream::unfold((sub, guard), |(sub, guard): (_, ClientGuard)| async move {
        let event = to_event(&sub.recv().await);
        Some((Ok(event), (sub, guard)))
    })
    .take_until(state.shutdown.wait());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// The first batch the client wants: after `Last-Event-ID`, else `from_batch`.
fn resume_point(headers: &HeaderMap, from_batch: Option<u64>) -> Result<Option<u64>, AppError> {
    let Some(last) = headers.get("last-event-id") else {
        return Ok(from_batch);
    };
    let last = last
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            AppError::BadRequest("Last-Event-ID must be a batch id (a non-negative integer)".into())
        })?;
    Ok(Some(last.saturating_add(1)))
}

fn to_event(delivery: &Delivery) -> Event {
    let json = delivery.to_json();
    // Hub messages are built from `String`s, so this never takes the lossy path.
    let data = String::from_utf8_lossy(&json);
    Event::default().id(delivery.batch.to_string()).data(data)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn last_event_id_wins_and_means_after() {
        let mut h = HeaderMap::new();
        assert_eq!(resume_point(&h, Some(3)), Ok(Some(3)));
        assert_eq!(resume_point(&h, None), Ok(None));
        h.insert("last-event-id", HeaderValue::from_static("41"));
        assert_eq!(resume_point(&h, Some(3)), Ok(Some(42)));
        h.insert("last-event-id", HeaderValue::from_static("x"));
        assert!(matches!(
            resume_point(&h, None),
            Err(AppError::BadRequest(_))
        ));
    }
}
