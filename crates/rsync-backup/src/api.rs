//! The daemon's HTTP API on port 8093: `GET /status` and `GET /`.
//!
//! Both answers are built from in-memory state only: the status table's snapshot (a short lock)
//! and the size index (a short read lock). No request walks the archive or waits for a job.
//! The wire shape is upstream's (reference §3.2, §3.3), with `synced` per device subtree and
//! `disk_usage_summary` the sum over devices.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use etho_daemon::Daemon;
use etho_model::size::format_bytes;
use etho_model::status::DeviceStatus;
use serde_json::{json, Map, Value};

use crate::config::Kind;
use crate::engine::RsyncEngine;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    daemon: Arc<Daemon>,
    engine: RsyncEngine,
}

/// The router: `GET /status`, `GET /`.
pub fn router(daemon: Arc<Daemon>, engine: RsyncEngine) -> Router {
    Router::new()
        .route("/", get(service_get))
        .route("/status", get(status_get))
        .with_state(ApiState { daemon, engine })
}

async fn status_get(State(state): State<ApiState>) -> Json<Value> {
    let snapshot = state.daemon.status().snapshot();
    Json(status_document(&snapshot, &state.engine))
}

async fn service_get(State(state): State<ApiState>) -> Json<Value> {
    let service = state.daemon.status().service();
    let c = state.engine.config();
    Json(json!({
        "status": "running",
        "last_backup": service.last_backup,
        "service": state.daemon.engine_name(),
        "started_at": service.started_at,
        "cycle_number": service.cycle_number,
        "last_cycle_start": service.last_cycle_start,
        "last_cycle_end": service.last_cycle_end,
        "active_jobs": state.daemon.live_jobs(),
        "discovery": service.discovery,
        "results_dir": c.backup_results.then(|| c.results_dir.to_string_lossy().into_owned()),
        "videos_dir": c.backup_videos.then(|| c.videos_dir.to_string_lossy().into_owned()),
        "source": c.source.to_string(),
        "last_rescan": state.engine.sizes().rescan_info(),
    }))
}

/// `{"devices": {...}, "disk_usage_summary": {...}}` from a status snapshot, with every device's
/// `synced` taken from the size index where it knows the tree (the persisted value otherwise).
pub fn status_document(snapshot: &BTreeMap<String, DeviceStatus>, engine: &RsyncEngine) -> Value {
    let mut devices = Map::new();
    let mut totals: BTreeMap<Kind, (u64, u64)> = BTreeMap::new();
    for (id, status) in snapshot {
        let mut entry = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
        let mut synced = status.synced.as_object().cloned().unwrap_or_default();
        for kind in Kind::ALL {
            if !engine.config().enabled(kind) {
                continue;
            }
            if let Some(size) = engine.sizes().get(kind, id) {
                if synced.contains_key(kind.as_str()) || size.files > 0 {
                    synced.insert(kind.as_str().into(), engine.tree_json(kind, id, size));
                }
            }
            if let Some(tree) = synced.get(kind.as_str()) {
                let t = totals.entry(kind).or_default();
                t.0 += tree.get("local_files").and_then(Value::as_u64).unwrap_or(0);
                t.1 += tree
                    .get("disk_usage_bytes")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
            }
        }
        if let Some(obj) = entry.as_object_mut() {
            obj.insert("synced".into(), Value::Object(synced));
        }
        devices.insert(id.clone(), entry);
    }
    let total = |files: u64, bytes: u64| json!({"total_files": files, "total_size_bytes": bytes, "total_size_human": format_bytes(bytes)});
    let (rf, rb) = totals.get(&Kind::Results).copied().unwrap_or_default();
    let (vf, vb) = totals.get(&Kind::Videos).copied().unwrap_or_default();
    json!({
        "devices": devices,
        "disk_usage_summary": {
            "results": total(rf, rb),
            "videos": total(vf, vb),
            "combined": total(rf + vf, rb + vb),
        }
    })
}
