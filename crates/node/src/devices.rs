//! `GET /devices`: the device registry as backup daemons consume it.
//!
//! Placeholder: serves an empty map until the device registry lands here.

use axum::{routing::get, Json, Router};
use serde_json::{Map, Value};

use crate::AppState;

/// Routes of this module, merged into [`crate::app`].
pub fn router() -> Router<AppState> {
    Router::new().route("/devices", get(devices_list))
}

async fn devices_list() -> Json<Map<String, Value>> {
    Json(Map::new())
}
