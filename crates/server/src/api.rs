//! `GET /api/streams` and `GET /metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;
use crate::hub::StreamInfo;
use crate::metrics::METRICS_CONTENT_TYPE;
use crate::server::LiveState;

/// `GET /api/streams`: every registered stream with its fields, latest batch and subscribers.
pub(crate) async fn streams(State(state): State<LiveState>) -> Json<Vec<StreamInfo>> {
    Json(state.hub.streams())
}

/// `GET /metrics`: the OpenMetrics text exposition.
pub(crate) async fn metrics(State(state): State<LiveState>) -> Result<Response, AppError> {
    let text = state
        .metrics
        .encode()
        .map_err(|e| AppError::Internal(format!("cannot encode metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response())
}
