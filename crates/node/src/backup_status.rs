//! `GET /backup/status` (being written).

use axum::{routing::get, Json, Router};
use serde_json::{json, Value};

use crate::{AppState, NodeConfig};

/// Base URL of a backup daemon (`http://HOST:PORT[/prefix]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonUrl(String);

impl DaemonUrl {
    /// Parses a base URL.
    pub fn parse(s: &str) -> Result<DaemonUrl, String> {
        Ok(DaemonUrl(s.to_string()))
    }
}

/// Fetches, merges and caches the unified status.
#[derive(Debug)]
pub struct BackupStatusService {}

impl BackupStatusService {
    /// Builds the service.
    pub fn new(_config: &NodeConfig) -> anyhow::Result<BackupStatusService> {
        Ok(BackupStatusService {})
    }
}

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/backup/status", get(backup_status_get))
}

async fn backup_status_get() -> Json<Value> {
    Json(json!({
        "mysql_backup": {"error": "MySQL backup service unavailable", "service": "mysql_backup"},
        "rsync_backup": {"error": "Rsync backup service unavailable", "service": "rsync_backup"},
        "unified_devices": {}
    }))
}
