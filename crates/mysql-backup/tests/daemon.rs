#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The engine inside the shared daemon: status documents, node failures, hostile node answers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use etho_daemon::{Daemon, DaemonConfig};
use etho_model::status::ProgressStatus;
use etho_mysql_backup::{http, MysqlEngine};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

fn daemon(engine: &MysqlEngine, node: &StubNode, state: &std::path::Path) -> Arc<Daemon> {
    let mut c = DaemonConfig::new(node.url());
    c.state_dir = Some(state.to_path_buf());
    c.discovery_retry_delay = Duration::from_millis(10);
    c.discovery_timeout = Duration::from_secs(5);
    Daemon::new(Arc::new(engine.clone()), c).unwrap()
}

async fn get(router: axum::Router, path: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
    let resp = router
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_cycle_publishes_the_reference_status_shape_and_survives_restart() {
    let spec = spec();
    let (server, _exp) = start_with(spec.clone(), 200).await;
    let results = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    // One MariaDB device, one SQLite-only device (not ours), one not-ready device on a dead port.
    let sqlite_only = json!({"id": OTHER_ID, "name": "ETHOSCOPE_002", "ip": "127.0.0.1", "status": "running",
                             "databases": {"SQLite": {"x.db": {}}, "MariaDB": {}}});
    let node = StubNode::start(
        json!({ID: device_json(ID, NAME, &spec.backup_filename()), OTHER_ID: sqlite_only})
            .to_string(),
    )
    .await;
    let engine = MysqlEngine::new(config(&server, results.path()));
    let d = daemon(&engine, &node, state.path());
    let report = d.run_cycle().await;
    assert_eq!(report.jobs, vec![(ID.to_string(), ProgressStatus::Success)]);
    assert_eq!(report.skipped.len(), 1);
    assert!(report.skipped[0].1.to_string().contains("no MariaDB"));

    let (code, headers, status) = get(http::router(d.clone(), engine.clone()), "/status").await;
    assert_eq!(code, StatusCode::OK);
    assert!(headers.get("access-control-allow-origin").is_none());
    let entry = status[ID].as_object().unwrap();
    let keys: Vec<&str> = entry.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "name",
            "status",
            "started",
            "ended",
            "processing",
            "count",
            "synced",
            "progress",
            "data_duplication",
            "rows_behind",
            "last_success",
            "last_success_started",
            "failures",
            "interval_s",
            "newest_copied_at",
            "experiment"
        ]
    );
    assert_eq!(entry["name"], NAME);
    assert_eq!(entry["status"], "running");
    assert_eq!(entry["processing"], false);
    assert_eq!(entry["count"], 1);
    assert_eq!(entry["data_duplication"], false);
    assert!(entry["ended"].as_i64().unwrap() >= entry["started"].as_i64().unwrap());
    assert_eq!(entry["progress"]["status"], "success");
    assert_eq!(entry["progress"]["percent"], 100.0);
    let msg = entry["progress"]["message"].as_str().unwrap();
    assert!(msg.contains("Backup completed successfully"), "{msg}");
    let synced = &entry["synced"]["tracking_db"];
    assert_eq!(synced["backup_filename"], spec.backup_filename());
    assert_eq!(synced["tables"]["ROI_1"]["rows"], 200);
    assert!(synced["size_bytes"].as_u64().unwrap() > 0);
    assert!(
        status.get(OTHER_ID).is_none(),
        "devices never attempted get no entry"
    );
    // Health facts: the mirror's newest frame is the device's (nothing written since), nothing
    // is behind, and the success is dated.
    let truth = device_newest_frame(&server, &format!("{NAME}_db")).await;
    assert_eq!(entry["newest_copied_at"].as_f64(), Some(truth));
    assert!(truth > START as f64, "{truth}");
    assert_eq!(entry["experiment"], spec.backup_filename());
    assert_eq!(entry["rows_behind"], 0);
    assert_eq!(entry["last_success"], entry["ended"]);
    assert_eq!(entry["last_success_started"], entry["started"]);
    assert_eq!(entry["failures"], 0);
    assert_eq!(entry["interval_s"], 300.0);

    let (_, headers, service) = get(http::router(d.clone(), engine.clone()), "/").await;
    assert!(headers.get("access-control-allow-origin").is_none());
    assert_eq!(service["status"], "running");
    assert_eq!(service["backup_progress"]["cycle_number"], 1);
    assert_eq!(service["backup_progress"]["active_backup_jobs"], 0);
    assert_eq!(service["device_discovery"]["discovery_source"], "node");
    assert_eq!(service["device_discovery"]["total_discovered"], 2);
    assert!(service["device_discovery"]["last_discovery_time"]
        .as_i64()
        .is_some());
    assert_eq!(service["configuration"]["mysql_port"], server.port());
    assert_eq!(
        service["health_status"]["device_status_counts"]["success"],
        1
    );

    // The device changes name and status; the next cycle refreshes them, the count goes on, and a
    // restarted daemon keeps it.
    let mut moved = device_json(ID, NAME, &spec.backup_filename());
    moved["status"] = json!("stopped");
    node.set(json!({ID: moved}).to_string(), "application/json");
    d.run_cycle().await;
    d.status().flush().await;
    drop(d);
    let d = daemon(&engine, &node, state.path());
    let st = d.status().get(ID).unwrap();
    assert_eq!(st.count, 2);
    assert_eq!(st.status, "stopped");
    assert_eq!(st.progress.status, Some(ProgressStatus::Success));
    assert!(st
        .last_success
        .is_some_and(|t| t >= entry["ended"].as_i64().unwrap()));
    assert_eq!(st.newest_copied_at, Some(truth), "survives the restart");
}

/// The device's own newest frame: `METADATA.date_time` plus the largest `t` of its ROI tables.
async fn device_newest_frame(server: &etho_devicekit::mariadb::MariaDb, db: &str) -> f64 {
    use mysql_async::prelude::Queryable;
    let mut conn = mysql_async::Conn::new(server.admin_opts(Some(db)))
        .await
        .unwrap();
    let start: String = conn
        .query_first("SELECT value FROM METADATA WHERE field = 'date_time'")
        .await
        .unwrap()
        .unwrap();
    let mut last = 0i64;
    for n in 1..=4 {
        let t: Option<i64> = conn
            .query_first(format!("SELECT MAX(t) FROM ROI_{n}"))
            .await
            .unwrap();
        last = last.max(t.unwrap_or(0));
    }
    conn.disconnect().await.unwrap();
    start.parse::<f64>().unwrap() + last as f64 / 1000.0
}

#[tokio::test]
async fn node_errors_and_hostile_entries_give_clear_status_and_write_nothing() {
    let results = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let node = StubNode::start("<html>not json</html>".into()).await;
    let engine = MysqlEngine::new(etho_mysql_backup::MirrorConfig::new(results.path()));
    let d = daemon(&engine, &node, state.path());

    let report = d.run_cycle().await;
    let err = report.discovery_error.unwrap();
    assert!(err.to_lowercase().contains("json"), "{err}");
    let (_, _, service) = get(http::router(d.clone(), engine.clone()), "/").await;
    assert_eq!(service["device_discovery"]["discovery_source"], "failed");
    assert!(service["device_discovery"]["last_error"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("json"));

    node.set(
        json!({"error": "Traceback (most recent call last): ..."}).to_string(),
        "application/json",
    );
    let report = d.run_cycle().await;
    assert!(report.discovery_error.unwrap().contains("Traceback"));

    // Hostile entries are rejected by discovery and never reach the engine.
    let mut hostile = device_json(ID, "../../../tmp/escape", "x");
    hostile["ip"] = json!("127.0.0.1");
    let mut wrong_key = device_json(ID, NAME, "x");
    wrong_key["id"] = json!(OTHER_ID);
    node.set(
        json!({ID: hostile, "ffffffffffffffffffffffffffffffff": wrong_key}).to_string(),
        "application/json",
    );
    let report = d.run_cycle().await;
    assert!(report.discovery_error.is_none());
    assert!(report.jobs.is_empty());
    let (_, _, service) = get(http::router(d.clone(), engine.clone()), "/").await;
    assert_eq!(
        service["device_discovery"]["rejected"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (_, _, status) = get(http::router(d.clone(), engine.clone()), "/status").await;
    assert_eq!(status, json!({}));
    assert!(files_under(results.path()).is_empty());
}

#[tokio::test]
async fn not_ready_and_refused_targets_show_in_status() {
    let spec = spec();
    let (server, mut exp) = start_with(spec.clone(), 0).await;
    let results = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let node =
        StubNode::start(json!({ID: device_json(ID, NAME, &spec.backup_filename())}).to_string())
            .await;
    let engine = MysqlEngine::new(config(&server, results.path()));
    let d = daemon(&engine, &node, state.path());
    d.run_cycle().await;
    let st = d.status().get(ID).unwrap();
    assert_eq!(st.progress.status, Some(ProgressStatus::Warning));
    assert!(st
        .progress
        .message
        .as_deref()
        .unwrap()
        .contains("not ready"));

    use mysql_async::prelude::Queryable;
    exp.append_frames(5).await.unwrap();
    exp.conn()
        .exec_drop(
            "UPDATE METADATA SET value = ? WHERE field = 'backup_filename'",
            (format!("{}_{OTHER_ID}.db", spec.date_time()),),
        )
        .await
        .unwrap();
    d.run_cycle().await;
    let st = d.status().get(ID).unwrap();
    assert_eq!(st.progress.status, Some(ProgressStatus::Error));
    let msg = st.progress.message.unwrap();
    assert!(msg.contains("refused") && msg.contains(OTHER_ID), "{msg}");
    assert_eq!(st.count, 2);
    assert!(files_under(results.path()).is_empty());
}

#[tokio::test]
async fn a_job_timeout_really_stops_the_copy() {
    let mut spec = spec();
    spec.n_rois = 2;
    let (server, _exp) = start_with(spec.clone(), 40_000).await;
    let results = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let node =
        StubNode::start(json!({ID: device_json(ID, NAME, &spec.backup_filename())}).to_string())
            .await;
    let mut cfg = config(&server, results.path());
    cfg.chunk_rows = 50; // many small remote transactions: slow enough to time out
    cfg.commit_rows = 500;
    let engine = MysqlEngine::new(cfg);
    let mut c = DaemonConfig::new(node.url());
    c.state_dir = Some(state.path().to_path_buf());
    c.scheduler.job_timeout = Duration::from_millis(300);
    c.scheduler.cancel_grace = Duration::from_secs(5);
    let d = Daemon::new(Arc::new(engine.clone()), c).unwrap();
    let started = std::time::Instant::now();
    d.run_cycle().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped within the grace period"
    );
    let st = d.status().get(ID).unwrap();
    assert_eq!(st.ended, -1);
    assert!(st.progress.message.unwrap().contains("timed out"));
    // Stopped means stopped: the file does not grow any more and its lock is free.
    let path = mirror_path(results.path(), &spec);
    let size = std::fs::metadata(&path).unwrap().len();
    let count = |p: &std::path::Path| -> i64 {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM ROI_2", [], |r| r.get(0))
            .unwrap()
    };
    let before = count(&path);
    assert!(before < 40_000);
    let lock = std::fs::File::options()
        .write(true)
        .open(format!("{}.lock", path.display()))
        .unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock);
    assert!(held.is_ok(), "the writer released the file");
    drop(held);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    assert_eq!(count(&path), before);
}
