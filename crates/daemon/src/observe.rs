//! The routes every backup daemon serves besides its engine's own `GET /status` and `GET /`:
//!
//! - `GET /metrics`: [`crate::metrics`], in the classic Prometheus text format;
//! - `GET /history/<device_id>`: the device's last runs ([`crate::history`]), newest first, as
//!   an [`etho_model::history::DeviceHistory`]. An id that is not a machine id is a 400; a
//!   device without history has an empty list.
//!
//! The binary merges [`router`] into each engine's router.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use etho_model::device::is_valid_machine_id;
use etho_model::history::DeviceHistory;

use crate::metrics::CONTENT_TYPE;
use crate::Daemon;

/// `GET /metrics` and `GET /history/{device_id}` for `daemon`.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_get))
        .route("/history/{device_id}", get(history_get))
        .with_state(daemon)
}

async fn metrics_get(State(daemon): State<Arc<Daemon>>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        daemon.metrics().render(),
    )
        .into_response()
}

async fn history_get(State(daemon): State<Arc<Daemon>>, Path(device_id): Path<String>) -> Response {
    if !is_valid_machine_id(&device_id) {
        return (StatusCode::BAD_REQUEST, "not a machine id\n").into_response();
    }
    match daemon.history().runs(&device_id).await {
        Ok(runs) => Json(DeviceHistory { device_id, runs }).into_response(),
        Err(err) => {
            tracing::error!("GET /history/{device_id}: {err:#}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}
