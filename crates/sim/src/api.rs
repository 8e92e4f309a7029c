//! The device HTTP API (`device_server.py` on port 9000): `GET /id`, `GET /data/<id>`,
//! `GET /data/databases/<id>`, with the device's faults applied.
//!
//! `GET /data/` and `GET /data/databases/` (an empty id) are not routes, so they answer 404 as on
//! a real device, where bottle's `/data/<id>` does not match an empty id. Upstream HEAD's node
//! scanner relies on that 404 to fall back to `GET /id`; a 200 there kept its id empty forever.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::config::{Fault, HOSTILE_ID};
use crate::device::SimDevice;
use crate::state;

/// The device's routes.
pub fn router(device: Arc<SimDevice>) -> Router {
    Router::new()
        .route("/id", get(id_get))
        .route("/data/{id}", get(data_get))
        .route("/data/databases/{id}", get(databases_get))
        .with_state(device)
}

async fn id_get(State(dev): State<Arc<SimDevice>>) -> Response {
    dev.answer_delay().await;
    let id = if dev.spec().has_fault(Fault::HostileId) {
        HOSTILE_ID
    } else {
        dev.id()
    };
    Json(json!({"id": id})).into_response()
}

async fn data_get(State(dev): State<Arc<SimDevice>>, Path(id): Path<String>) -> Response {
    dev.answer_delay().await;
    if id != dev.id() {
        return Json(state::wrong_id_json(&id)).into_response();
    }
    if dev.control().busy {
        dev.hang().await;
    }
    let info = dev.info();
    if dev.spec().has_fault(Fault::BadJson) {
        let text = info.to_string();
        let cut: String = text.chars().take(text.len() / 2).collect();
        return ([(header::CONTENT_TYPE, "application/json")], cut).into_response();
    }
    Json(info).into_response()
}

async fn databases_get(State(dev): State<Arc<SimDevice>>, Path(id): Path<String>) -> Response {
    dev.answer_delay().await;
    if id != dev.id() {
        return Json(state::wrong_id_json(&id)).into_response();
    }
    if dev.control().busy {
        dev.hang().await;
    }
    Json(dev.databases()).into_response()
}
