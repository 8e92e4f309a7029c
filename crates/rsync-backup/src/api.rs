//! The daemon's HTTP API on port 8093: `GET /status` and `GET /`.
//!
//! Both answers are built from in-memory state only: the status table's snapshot (a short lock)
//! and the size index (a short read lock). No request walks the archive or waits for a job.
//! The wire shape is upstream's (reference §3.2, §3.3), with `synced` per device subtree and
//! `disk_usage_summary` the sum over devices.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use etho_daemon::Daemon;
use etho_model::size::format_bytes;
use etho_model::status::DeviceStatus;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Value};

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

async fn status_get(State(state): State<ApiState>) -> impl IntoResponse {
    let snapshot = state.daemon.status().snapshot();
    (
        [(header::CONTENT_TYPE, "application/json")],
        status_body(&snapshot, &state.engine),
    )
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

/// One device tree's `synced` entry.
#[derive(Serialize)]
struct TreeView {
    local_files: u64,
    directory: String,
    disk_usage_bytes: u64,
    disk_usage_human: String,
}

enum SyncedEntry<'a> {
    /// From the size index.
    Fresh(TreeView),
    /// As persisted by the last job (the index does not know the tree yet).
    Stored(&'a Value),
}

impl Serialize for SyncedEntry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SyncedEntry::Fresh(t) => t.serialize(s),
            SyncedEntry::Stored(v) => v.serialize(s),
        }
    }
}

/// A device entry: the status as stored, with `synced` from the size index.
struct DeviceView<'a> {
    status: &'a DeviceStatus,
    synced: Vec<(&'a str, SyncedEntry<'a>)>,
}

impl Serialize for DeviceView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Synced<'b, 'a>(&'b [(&'a str, SyncedEntry<'a>)]);
        impl Serialize for Synced<'_, '_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
        let st = self.status;
        let mut m = s.serialize_map(Some(8 + st.extra.len()))?;
        m.serialize_entry("name", &st.name)?;
        m.serialize_entry("status", &st.status)?;
        m.serialize_entry("started", &st.started)?;
        m.serialize_entry("ended", &st.ended)?;
        m.serialize_entry("processing", &st.processing)?;
        m.serialize_entry("count", &st.count)?;
        m.serialize_entry("synced", &Synced(&self.synced))?;
        m.serialize_entry("progress", &st.progress)?;
        for (k, v) in &st.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct Total {
    total_files: u64,
    total_size_bytes: u64,
    total_size_human: String,
}

impl Total {
    fn new(files: u64, bytes: u64) -> Total {
        Total {
            total_files: files,
            total_size_bytes: bytes,
            total_size_human: format_bytes(bytes),
        }
    }
}

#[derive(Serialize)]
struct Summary {
    results: Total,
    videos: Total,
    combined: Total,
}

#[derive(Serialize)]
struct StatusDoc<'a> {
    devices: BTreeMap<&'a str, DeviceView<'a>>,
    disk_usage_summary: Summary,
}

fn build<'a>(snapshot: &'a BTreeMap<String, DeviceStatus>, engine: &RsyncEngine) -> StatusDoc<'a> {
    let mut devices = BTreeMap::new();
    let mut totals = [(0u64, 0u64); 2];
    let stored_of = |st: &'a DeviceStatus, key: &str| st.synced.get(key);
    for (id, status) in snapshot {
        let mut synced: Vec<(&'a str, SyncedEntry<'a>)> = Vec::with_capacity(2);
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            let stored = stored_of(status, kind.as_str());
            let fresh = engine
                .config()
                .enabled(kind)
                .then(|| engine.sizes().get(kind, id))
                .flatten()
                .filter(|size| stored.is_some() || size.files > 0);
            let entry = match (fresh, stored) {
                (Some(size), _) => {
                    totals[i].0 += size.files;
                    totals[i].1 += size.bytes;
                    SyncedEntry::Fresh(TreeView {
                        local_files: size.files,
                        directory: engine.tree_dir(kind, id),
                        disk_usage_bytes: size.bytes,
                        disk_usage_human: format_bytes(size.bytes),
                    })
                }
                (None, Some(v)) => {
                    totals[i].0 += v.get("local_files").and_then(Value::as_u64).unwrap_or(0);
                    totals[i].1 += v
                        .get("disk_usage_bytes")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    SyncedEntry::Stored(v)
                }
                (None, None) => continue,
            };
            synced.push((kind.as_str(), entry));
        }
        // Keys a foreign or older writer put into `synced` are kept as they are.
        if let Some(obj) = status.synced.as_object() {
            for (k, v) in obj {
                if !Kind::ALL.iter().any(|kind| kind.as_str() == k) {
                    synced.push((k.as_str(), SyncedEntry::Stored(v)));
                }
            }
        }
        devices.insert(id.as_str(), DeviceView { status, synced });
    }
    let [(rf, rb), (vf, vb)] = totals;
    StatusDoc {
        devices,
        disk_usage_summary: Summary {
            results: Total::new(rf, rb),
            videos: Total::new(vf, vb),
            combined: Total::new(rf + vf, rb + vb),
        },
    }
}

/// The `GET /status` body: `{"devices": {...}, "disk_usage_summary": {...}}` from a status
/// snapshot, with every device's `synced` taken from the size index where it knows the tree (the
/// persisted value otherwise), serialized straight to bytes.
pub fn status_body(snapshot: &BTreeMap<String, DeviceStatus>, engine: &RsyncEngine) -> Vec<u8> {
    serde_json::to_vec(&build(snapshot, engine)).unwrap_or_else(|_| b"{}".to_vec())
}

/// [`status_body`] as a JSON value (tests, callers that post-process).
pub fn status_document(snapshot: &BTreeMap<String, DeviceStatus>, engine: &RsyncEngine) -> Value {
    serde_json::to_value(build(snapshot, engine)).unwrap_or_else(|_| json!({}))
}
