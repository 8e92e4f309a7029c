//! The daemon's HTTP API on port 8090: `GET /status` and `GET /`.
//!
//! Both answers come from in-memory state (a short lock on the status table), so a request never
//! waits for a job or triggers discovery (upstream ran a full discovery under its global lock on
//! every `GET /`). No `Access-Control-Allow-Origin: *`: the node proxies these documents.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use etho_daemon::Daemon;
use etho_model::now_epoch;
use serde_json::{json, Value};

use crate::engine::MysqlEngine;

#[derive(Clone)]
struct ApiState {
    daemon: Arc<Daemon>,
    engine: MysqlEngine,
}

/// The router: `GET /status` (flat map device id → status entry) and `GET /` (service summary).
pub fn router(daemon: Arc<Daemon>, engine: MysqlEngine) -> Router {
    Router::new()
        .route("/", get(service_get))
        .route("/status", get(status_get))
        .with_state(ApiState { daemon, engine })
}

async fn status_get(State(state): State<ApiState>) -> Json<Value> {
    Json(serde_json::to_value(state.daemon.status().snapshot()).unwrap_or_else(|_| json!({})))
}

async fn service_get(State(state): State<ApiState>) -> Json<Value> {
    Json(service_document(&state.daemon, &state.engine))
}

/// The `GET /` document: upstream's sections (`device_discovery`, `backup_progress`,
/// `configuration`, `health_status`) with truthful values.
pub fn service_document(daemon: &Daemon, engine: &MysqlEngine) -> Value {
    let status = daemon.status();
    let service = status.service();
    let counts = status.outcome_counts();
    let tracked = status.snapshot().len();
    let d = &service.discovery;
    let c = engine.config();
    let s = &daemon.config().scheduler;
    json!({
        "status": "running",
        "service": daemon.engine_name(),
        "timestamp": now_epoch(),
        "started_at": service.started_at,
        "last_backup": service.last_backup,
        "device_discovery": {
            "discovery_source": d.source,
            "node_url": d.node_url,
            "last_discovery_time": d.last_time,
            "total_discovered": d.total_discovered,
            "active_eligible": d.eligible,
            "devices_with_status": tracked,
            "rejected": d.rejected,
            "skipped": d.skipped,
            "last_error": d.last_error,
        },
        "backup_progress": {
            "cycle_number": service.cycle_number,
            "last_cycle_start": service.last_cycle_start,
            "last_cycle_end": service.last_cycle_end,
            "active_backup_jobs": status.active_jobs(),
            "queued_or_running_jobs": daemon.live_jobs(),
            "total_devices_tracked": tracked,
        },
        "configuration": {
            "node_address": daemon.config().node,
            "results_dir": c.results_dir.display().to_string(),
            "state_dir": daemon.config().state_dir.as_ref().map(|p| p.display().to_string()),
            "mysql_port": c.mysql_port,
            "mysql_user": c.mysql_user,
            "max_threads": s.max_jobs,
            "backup_interval": s.interval.as_secs(),
            "job_timeout": s.job_timeout.as_secs(),
        },
        "health_status": {
            "device_status_counts": counts,
        },
    })
}
