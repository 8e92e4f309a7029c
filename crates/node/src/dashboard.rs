//! `GET /`: the node's dashboard.
//!
//! Placeholder page until the dashboard lands here.

use axum::{response::Html, routing::get, Router};

use crate::AppState;

/// Routes of this module, merged into [`crate::app`].
pub fn router() -> Router<AppState> {
    Router::new().route("/", get(dashboard_index))
}

async fn dashboard_index() -> Html<&'static str> {
    Html("<!doctype html><title>etho-backup node</title><p>Backup status: <a href=\"/backup/status\">/backup/status</a></p>")
}
