//! The daemon's HTTP API on port 8093: `GET /status` and `GET /`.
//!
//! Both answers are built from in-memory state only: the status table's snapshot (a short lock)
//! and the size index (a short read lock). No request walks the archive or waits for a job.
//!
//! The `/status` body (tens of KB for a full fleet) is rendered once per change, not once per
//! request: it is cached together with the two versions it is derived from, the status
//! table's ([`etho_daemon::StatusTable::version`]) and the size index's
//! ([`crate::sizes::SizeIndex::version`]). A request reads both versions (two short locks) and
//! serves the cached bytes while they match; otherwise it renders and stores a new body.
//! Concurrent renders after a change are harmless: each renders a correct body, and an older
//! one never replaces a newer one.
//! The wire shape is upstream's (reference §3.2, §3.3), with `synced` per device subtree and
//! `disk_usage_summary` the sum over devices.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use etho_daemon::Daemon;
use etho_model::status::DeviceStatus;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::Kind;
use crate::engine::RsyncEngine;
use crate::wire::{DiskUsageSummary, ServiceDocument, SyncedTree};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    daemon: Arc<Daemon>,
    engine: RsyncEngine,
    status_cache: Arc<Mutex<Option<CachedBody>>>,
}

/// A rendered `/status` body and the versions it was rendered from.
struct CachedBody {
    table_version: u64,
    sizes_version: u64,
    body: Bytes,
}

impl ApiState {
    /// State for [`router`].
    pub fn new(daemon: Arc<Daemon>, engine: RsyncEngine) -> ApiState {
        ApiState {
            daemon,
            engine,
            status_cache: Arc::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Option<CachedBody>> {
        // The guarded value is replaced in one assignment: a poisoned lock still holds a whole
        // (possibly older, hence re-rendered) entry.
        self.status_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current `GET /status` body: the cached one while neither the status table nor the
    /// size index changed since it was rendered, a fresh rendering otherwise.
    pub fn status_bytes(&self) -> Bytes {
        // The size version is read before any size (here and in the render below), so a change
        // racing with this request can only make a body newer than its key, never older.
        let sizes_version = self.engine.sizes().version();
        let table_version = self.daemon.status().version();
        if let Some(hit) = self
            .cache()
            .as_ref()
            .filter(|c| c.table_version == table_version && c.sizes_version == sizes_version)
        {
            return hit.body.clone();
        }
        // The snapshot and its version come from one lock, so the table part of the key is exact.
        let (table_version, snapshot) = self.daemon.status().versioned_snapshot();
        let body = Bytes::from(status_body(&snapshot, &self.engine));
        let mut cache = self.cache();
        let newer_cached = cache
            .as_ref()
            .is_some_and(|c| c.table_version >= table_version && c.sizes_version >= sizes_version);
        if !newer_cached {
            *cache = Some(CachedBody {
                table_version,
                sizes_version,
                body: body.clone(),
            });
        }
        body
    }
}

/// The router: `GET /status`, `GET /`.
pub fn router(daemon: Arc<Daemon>, engine: RsyncEngine) -> Router {
    Router::new()
        .route("/", get(service_get))
        .route("/status", get(status_get))
        .with_state(ApiState::new(daemon, engine))
}

async fn status_get(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.status_bytes(),
    )
}

async fn service_get(State(state): State<ApiState>) -> Response {
    let service = state.daemon.status().service();
    let c = state.engine.config();
    let root = |on: bool, dir: &std::path::Path| on.then(|| dir.to_string_lossy().into_owned());
    Json(ServiceDocument {
        status: "running",
        last_backup: &service.last_backup,
        service: state.daemon.engine_name(),
        started_at: service.started_at,
        cycle_number: service.cycle_number,
        last_cycle_start: service.last_cycle_start,
        last_cycle_end: service.last_cycle_end,
        active_jobs: state.daemon.live_jobs(),
        discovery: &service.discovery,
        results_dir: root(c.backup_results, &c.results_dir),
        videos_dir: root(c.backup_videos, &c.videos_dir),
        source: c.source.to_string(),
        last_rescan: state.engine.sizes().rescan_info(),
    })
    .into_response()
}

enum SyncedEntry<'a> {
    /// From the size index.
    Fresh(SyncedTree),
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
        let mut m = s.serialize_map(Some(14 + st.extra.len()))?;
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
        m.serialize_entry("last_success", &st.last_success)?;
        m.serialize_entry("last_success_started", &st.last_success_started)?;
        m.serialize_entry("failures", &st.failures)?;
        m.serialize_entry("interval_s", &st.interval_s)?;
        m.serialize_entry("newest_copied_at", &st.newest_copied_at)?;
        m.serialize_entry("experiment", &st.experiment)?;
        m.end()
    }
}

#[derive(Serialize)]
struct StatusDoc<'a> {
    devices: BTreeMap<&'a str, DeviceView<'a>>,
    disk_usage_summary: DiskUsageSummary,
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
                    SyncedEntry::Fresh(engine.synced_tree(kind, id, size))
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
    let [results, videos] = totals;
    StatusDoc {
        devices,
        disk_usage_summary: DiskUsageSummary::new(results, videos),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RsyncBackupConfig;
    use crate::sizes::{SizeChange, TreeSize};
    use etho_daemon::{DaemonConfig, JobOutcome};
    use etho_model::device::DeviceInfo;

    const ID: &str = "42424242424242424242424242424242";

    fn state(work: &std::path::Path) -> ApiState {
        let engine = RsyncEngine::new(RsyncBackupConfig::new(
            &work.join("results"),
            &work.join("videos"),
            &work.join("state"),
        ))
        .unwrap();
        // Port 1 on loopback: nothing is asked of the node here.
        let daemon =
            Daemon::new(Arc::new(engine.clone()), DaemonConfig::new("127.0.0.1:1")).unwrap();
        ApiState::new(daemon, engine)
    }

    fn doc(body: &Bytes) -> Value {
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn status_body_is_reused_until_the_table_or_the_size_index_changes() {
        let work = tempfile::tempdir().unwrap();
        let st = state(work.path());
        let first = st.status_bytes();
        let again = st.status_bytes();
        assert_eq!(first, again);
        assert_eq!(
            first.as_ptr(),
            again.as_ptr(),
            "no change: the cached body itself"
        );
        assert_eq!(doc(&first)["devices"], json!({}));

        // A job starts and ends: the status table changes.
        let id = ID;
        let dev = DeviceInfo::from_entry(
            id,
            &json!({"id": id, "name": "ETHOSCOPE_042", "ip": "127.0.0.42", "status": "running"}),
        )
        .unwrap();
        st.daemon.status().start_job(&dev);
        let running = st.status_bytes();
        assert_ne!(running.as_ptr(), first.as_ptr());
        assert_eq!(doc(&running)["devices"][id]["processing"], json!(true));
        st.daemon
            .status()
            .finish_job(id, JobOutcome::success("done"), false);
        let ended = st.status_bytes();
        assert_eq!(doc(&ended)["devices"][id]["processing"], json!(false));
        assert_eq!(
            doc(&ended)["devices"][id]["progress"]["status"],
            json!("success")
        );
        assert_eq!(st.status_bytes().as_ptr(), ended.as_ptr());

        // Only the size index changes (a job's update, then a rescan finding the tree gone).
        let size = TreeSize {
            files: 3,
            bytes: 1234,
        };
        st.engine
            .sizes()
            .begin_update(Kind::Videos, id)
            .finish(SizeChange::Absolute(size));
        let sized = st.status_bytes();
        let d = doc(&sized);
        assert_eq!(
            d["devices"][id]["synced"]["videos"]["local_files"],
            json!(3)
        );
        assert_eq!(
            d["disk_usage_summary"]["videos"]["total_size_bytes"],
            json!(1234)
        );
        assert_eq!(st.status_bytes().as_ptr(), sized.as_ptr());
        let before = st.engine.sizes().versions();
        st.engine
            .sizes()
            .commit_rescan(Kind::Videos, &BTreeMap::new(), &before);
        let rescanned = doc(&st.status_bytes());
        // An empty tree the job did not report is not listed.
        assert_eq!(rescanned["devices"][id]["synced"], json!({}));
        assert_eq!(
            rescanned["disk_usage_summary"]["videos"]["total_files"],
            json!(0)
        );
    }
    /// The wire text of `GET /status`, key order included: a device whose videos the index
    /// knows, whose results only the stored `synced` has (with a key a foreign writer added), the
    /// health facts after the seed's fields (none known yet), and the summary over both.
    #[test]
    fn status_body_wire_shape() {
        let work = tempfile::tempdir().unwrap();
        let st = state(work.path());
        st.engine
            .sizes()
            .begin_update(Kind::Videos, ID)
            .finish(SizeChange::Absolute(TreeSize {
                files: 2,
                bytes: 3_145_728,
            }));
        let mut entry = DeviceStatus::new("ETHOSCOPE_042", "running");
        entry.synced = json!({
            "results": {"local_files": 4, "directory": "/old/results", "disk_usage_bytes": 4096, "disk_usage_human": "4.0 KB"},
            "other": {"x": 1},
        });
        entry.extra.insert("metadata".into(), json!({}));
        let snapshot: BTreeMap<String, DeviceStatus> = [(ID.to_string(), entry)].into();
        let body = String::from_utf8(status_body(&snapshot, &st.engine)).unwrap();
        let videos = st.engine.tree_dir(Kind::Videos, ID);
        assert_eq!(
            body,
            format!(
                r#"{{"devices":{{"{ID}":{{"name":"ETHOSCOPE_042","status":"running","started":0,"ended":0,"processing":false,"count":0,"synced":{{"results":{{"local_files":4,"directory":"/old/results","disk_usage_bytes":4096,"disk_usage_human":"4.0 KB"}},"videos":{{"local_files":2,"directory":"{videos}","disk_usage_bytes":3145728,"disk_usage_human":"3.0 MB"}},"other":{{"x":1}}}},"progress":{{}},"metadata":{{}},"last_success":null,"last_success_started":null,"failures":0,"interval_s":null,"newest_copied_at":null,"experiment":null}}}},"disk_usage_summary":{{"results":{{"total_files":4,"total_size_bytes":4096,"total_size_human":"4.0 KB"}},"videos":{{"total_files":2,"total_size_bytes":3145728,"total_size_human":"3.0 MB"}},"combined":{{"total_files":6,"total_size_bytes":3149824,"total_size_human":"3.0 MB"}}}}}}"#
            )
        );
    }

    #[tokio::test]
    async fn the_service_document_keeps_its_keys_and_order() {
        use tower::ServiceExt;
        let work = tempfile::tempdir().unwrap();
        let st = state(work.path());
        let app = router(st.daemon.clone(), st.engine.clone());
        let reply = app
            .oneshot(
                axum::http::Request::get("/")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(reply.status(), axum::http::StatusCode::OK);
        let body = http_body_util::BodyExt::collect(reply.into_body())
            .await
            .unwrap()
            .to_bytes();
        let doc: serde_json::Map<String, Value> = serde_json::from_slice(&body).unwrap();
        let keys: Vec<&str> = doc.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "status",
                "last_backup",
                "service",
                "started_at",
                "cycle_number",
                "last_cycle_start",
                "last_cycle_end",
                "active_jobs",
                "discovery",
                "results_dir",
                "videos_dir",
                "source",
                "last_rescan"
            ]
        );
        assert_eq!(doc["status"], "running");
        assert_eq!(doc["active_jobs"], 0);
        assert_eq!(
            doc["results_dir"],
            json!(work.path().join("results").to_string_lossy())
        );
        assert_eq!(
            doc["last_rescan"],
            json!({"finished_at": null, "duration_s": null, "trees": 0, "skipped_busy": 0, "errors": []})
        );
    }
}
