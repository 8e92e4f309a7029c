//! `GET /backup/history/<device_id>`: both daemons' run histories of one device, merged.
//!
//! Each daemon keeps the last 200 runs of every device (`GET /history/<device_id>`); the node
//! asks both at once, with the same client, time bound and no-redirect rules as for
//! `/backup/status`, and merges them newest first ([`etho_model::history::merge_histories`]).
//! A daemon that cannot answer is named in `unavailable`; the other's runs are still shown. What
//! a daemon sends is bounded before it is relayed: at most 200 runs, messages cut to 2 KB.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use etho_model::device::is_valid_machine_id;
use etho_model::error_chain;
use etho_model::history::{
    bounded_message, merge_histories, DeviceHistory, RunRecord, HISTORY_LIMIT,
};

use crate::AppState;

/// Largest history body accepted from a daemon (200 runs with 2 KB messages fit many times).
const HISTORY_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Routes of this module, merged into [`crate::app`].
pub fn router() -> Router<AppState> {
    Router::new().route("/backup/history/{device_id}", get(backup_history_get))
}

async fn backup_history_get(
    State(state): State<AppState>,
    Path(device_id): Path<String>,
) -> Response {
    if !is_valid_machine_id(&device_id) {
        return (StatusCode::BAD_REQUEST, "not a machine id\n").into_response();
    }
    let (client, daemons, timeout) = state.backup_status.daemons();
    let fetch = |url: etho_http::ServiceUrl| {
        let url = url.join(&format!("history/{device_id}"));
        let client = client.clone();
        async move {
            etho_http::fetch_json::<DeviceHistory>(&client, &url, HISTORY_BODY_LIMIT, timeout)
                .await
                .map(|h| bounded_runs(h.runs))
                .map_err(|e| {
                    tracing::debug!("GET {url}: {}", error_chain(&e));
                    // The top-level text only ("connection refused", "HTTP 404"): no addresses.
                    e.to_string()
                })
        }
    };
    let [(_, mysql), (_, rsync)] = daemons;
    let (m, r) = tokio::join!(fetch(mysql.clone()), fetch(rsync.clone()));
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(merge_histories(&device_id, m, r)),
    )
        .into_response()
}

/// At most [`HISTORY_LIMIT`] runs, each message bounded.
fn bounded_runs(mut runs: Vec<RunRecord>) -> Vec<RunRecord> {
    runs.truncate(HISTORY_LIMIT);
    for run in &mut runs {
        run.message = bounded_message(&run.message);
    }
    runs
}
