//! The daemon's HTTP API on port 8090: `GET /status` and `GET /`.
//!
//! Both answers come from in-memory state (a short lock on the status table), so a request never
//! waits for a job or triggers discovery (upstream ran a full discovery under its global lock on
//! every `GET /`). No `Access-Control-Allow-Origin: *`: the node proxies these documents.

use std::sync::Arc;

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use etho_daemon::{Daemon, DiscoverySource};
use etho_model::now_epoch;
use etho_model::status::DeviceStatus;
use serde::Serialize;
use serde_json::Value;

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

async fn status_get(State(state): State<ApiState>) -> Json<BTreeMap<String, DeviceStatus>> {
    Json(state.daemon.status().snapshot())
}

async fn service_get(State(state): State<ApiState>) -> Json<Value> {
    Json(service_document(&state.daemon, &state.engine))
}

/// `GET /`, upstream's sections with truthful values; field order is the wire order.
#[derive(Debug, Serialize)]
struct ServiceDocument<'a> {
    status: &'static str,
    service: &'static str,
    timestamp: i64,
    started_at: i64,
    last_backup: &'a str,
    device_discovery: DeviceDiscovery<'a>,
    backup_progress: BackupProgress,
    configuration: Configuration<'a>,
    health_status: HealthStatus,
}

#[derive(Debug, Serialize)]
struct DeviceDiscovery<'a> {
    discovery_source: DiscoverySource,
    node_url: &'a str,
    last_discovery_time: Option<i64>,
    total_discovered: usize,
    active_eligible: usize,
    devices_with_status: usize,
    rejected: &'a [String],
    skipped: &'a BTreeMap<String, String>,
    last_error: &'a Option<String>,
}

#[derive(Debug, Serialize)]
struct BackupProgress {
    cycle_number: u64,
    last_cycle_start: Option<i64>,
    last_cycle_end: Option<i64>,
    active_backup_jobs: usize,
    queued_or_running_jobs: usize,
    total_devices_tracked: usize,
}

#[derive(Debug, Serialize)]
struct Configuration<'a> {
    node_address: &'a str,
    results_dir: String,
    state_dir: Option<String>,
    mysql_port: u16,
    mysql_user: &'a str,
    max_threads: usize,
    backup_interval: u64,
    job_timeout: u64,
}

#[derive(Debug, Serialize)]
struct HealthStatus {
    device_status_counts: BTreeMap<String, usize>,
}

/// The `GET /` document: upstream's sections (`device_discovery`, `backup_progress`,
/// `configuration`, `health_status`) with truthful values.
pub fn service_document(daemon: &Daemon, engine: &MysqlEngine) -> Value {
    let status = daemon.status();
    let service = status.service();
    let tracked = status.snapshot().len();
    let d = &service.discovery;
    let c = engine.config();
    let s = &daemon.config().scheduler;
    let doc = ServiceDocument {
        status: "running",
        service: daemon.engine_name(),
        timestamp: now_epoch(),
        started_at: service.started_at,
        last_backup: &service.last_backup,
        device_discovery: DeviceDiscovery {
            discovery_source: d.source,
            node_url: &d.node_url,
            last_discovery_time: d.last_time,
            total_discovered: d.total_discovered,
            active_eligible: d.eligible,
            devices_with_status: tracked,
            rejected: &d.rejected,
            skipped: &d.skipped,
            last_error: &d.last_error,
        },
        backup_progress: BackupProgress {
            cycle_number: service.cycle_number,
            last_cycle_start: service.last_cycle_start,
            last_cycle_end: service.last_cycle_end,
            active_backup_jobs: status.active_jobs(),
            queued_or_running_jobs: daemon.live_jobs(),
            total_devices_tracked: tracked,
        },
        configuration: Configuration {
            node_address: &daemon.config().node,
            results_dir: c.results_dir.display().to_string(),
            state_dir: daemon
                .config()
                .state_dir
                .as_ref()
                .map(|p| p.display().to_string()),
            mysql_port: c.mysql_port,
            mysql_user: &c.mysql_user,
            max_threads: s.max_jobs,
            backup_interval: s.interval.as_secs(),
            job_timeout: s.job_timeout.as_secs(),
        },
        health_status: HealthStatus {
            device_status_counts: status.outcome_counts(),
        },
    };
    serde_json::to_value(doc).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etho_daemon::DaemonConfig;

    /// The sections and their keys, in upstream's order.
    #[test]
    fn service_document_shape() {
        let engine = MysqlEngine::new(crate::MirrorConfig::new("/results"));
        let daemon =
            Daemon::new(Arc::new(engine.clone()), DaemonConfig::new("127.0.0.1:1")).unwrap();
        let doc = service_document(&daemon, &engine);
        let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
        assert_eq!(
            keys(&doc),
            [
                "status",
                "service",
                "timestamp",
                "started_at",
                "last_backup",
                "device_discovery",
                "backup_progress",
                "configuration",
                "health_status"
            ]
        );
        assert_eq!(
            keys(&doc["device_discovery"]),
            [
                "discovery_source",
                "node_url",
                "last_discovery_time",
                "total_discovered",
                "active_eligible",
                "devices_with_status",
                "rejected",
                "skipped",
                "last_error"
            ]
        );
        assert_eq!(doc["device_discovery"]["discovery_source"], "unknown");
        assert_eq!(
            doc["device_discovery"]["node_url"],
            "http://127.0.0.1:1/devices"
        );
        assert_eq!(
            keys(&doc["backup_progress"]),
            [
                "cycle_number",
                "last_cycle_start",
                "last_cycle_end",
                "active_backup_jobs",
                "queued_or_running_jobs",
                "total_devices_tracked"
            ]
        );
        assert_eq!(
            serde_json::to_string(&doc["configuration"]).unwrap(),
            r#"{"node_address":"127.0.0.1:1","results_dir":"/results","state_dir":null,"mysql_port":3306,"mysql_user":"node","max_threads":4,"backup_interval":300,"job_timeout":600}"#
        );
        assert_eq!(
            serde_json::to_string(&doc["health_status"]).unwrap(),
            r#"{"device_status_counts":{"error":0,"never":0,"processing":0,"success":0,"warning":0}}"#
        );
    }
}
