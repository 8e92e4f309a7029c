//! `GET /metrics` and `GET /history/<id>` of a daemon driven through real jobs, and what of them
//! survives a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use etho_daemon::{Copied, Daemon, DaemonConfig, Engine, JobContext, JobOutcome};
use etho_model::device::{DeviceInfo, Ineligible};
use etho_model::history::{DeviceHistory, RunOutcome};
use etho_model::kind::BackupKind;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use tokio::sync::Notify;
use tower::ServiceExt;

/// Succeeds for ETHOSCOPE_001 (results and videos copied), fails for any other name, and waits
/// for `release` first when the device is ETHOSCOPE_007.
struct Scripted {
    release: Arc<Notify>,
}

impl Engine for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn accepts(&self, _: &DeviceInfo) -> Result<(), Ineligible> {
        Ok(())
    }
    fn default_extra(&self) -> Map<String, Value> {
        Map::new()
    }
    fn run(&self, device: DeviceInfo, _ctx: JobContext) -> BoxFuture<'static, JobOutcome> {
        let release = Arc::clone(&self.release);
        Box::pin(async move {
            if device.name == "ETHOSCOPE_007" {
                release.notified().await;
            }
            if device.name != "ETHOSCOPE_001" {
                return JobOutcome::error("Permission denied (publickey)");
            }
            let part = |kind, bytes| Copied {
                kind,
                outcome: RunOutcome::Success,
                duration: Duration::from_millis(1500),
                bytes,
                rows: None,
                files: 2,
            };
            JobOutcome::success("copied").with_copied_parts(vec![
                part(BackupKind::Results, 100),
                part(BackupKind::Videos, 900),
            ])
        })
    }
    fn kinds(&self, _: &DeviceInfo) -> Vec<BackupKind> {
        vec![BackupKind::Results, BackupKind::Videos]
    }
}

fn device(n: u32, name: &str) -> DeviceInfo {
    let id = format!("{n:032x}");
    DeviceInfo::from_entry(
        &id,
        &json!({"id": id, "name": name, "ip": "127.0.0.1", "status": "running"}),
    )
    .unwrap()
}

fn daemon(state: Option<&std::path::Path>) -> (Arc<Daemon>, Arc<Notify>) {
    let release = Arc::new(Notify::new());
    let mut config = DaemonConfig::new("127.0.0.1:9");
    config.state_dir = state.map(|p| p.to_path_buf());
    let engine = Scripted {
        release: Arc::clone(&release),
    };
    (Daemon::new(Arc::new(engine), config).unwrap(), release)
}

async fn get(d: &Arc<Daemon>, uri: &str) -> (StatusCode, Option<String>, String) {
    let resp = etho_daemon::observe::router(Arc::clone(d))
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8(body.to_vec()).unwrap())
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_follow_jobs_and_history_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, bad) = (device(1, "ETHOSCOPE_001"), device(2, "ETHOSCOPE_002"));
    {
        let (d, _) = daemon(Some(dir.path()));
        d.run_device(ok.clone()).await.unwrap();
        for _ in 0..3 {
            d.run_device(bad.clone()).await.unwrap();
        }
        let (status, ctype, text) = get(&d, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            ctype.as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let runs = |kind: &str, outcome: &str| {
            sample(
                &text,
                &format!(r#"etho_backup_runs_total{{kind="{kind}",outcome="{outcome}"}}"#),
            )
        };
        assert_eq!(runs("results", "success"), Some(1.0));
        assert_eq!(runs("videos", "success"), Some(1.0));
        assert_eq!(
            runs("videos", "error"),
            Some(3.0),
            "a failed job counts under the engine's kinds"
        );
        assert_eq!(
            sample(&text, r#"etho_backup_copied_bytes_total{kind="videos"}"#),
            Some(900.0)
        );
        let streak = format!(
            r#"etho_backup_failed_runs_in_a_row{{device_id="{}",device_name="ETHOSCOPE_002"}}"#,
            bad.id
        );
        assert_eq!(sample(&text, &streak), Some(3.0));

        let (status, ctype, body) = get(&d, &format!("/history/{}", bad.id)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype.as_deref(), Some("application/json"));
        let h: DeviceHistory = serde_json::from_str(&body).unwrap();
        assert_eq!(h.runs.len(), 3);
        assert!(h.runs.iter().all(|r| r.outcome == RunOutcome::Error
            && r.message == "Permission denied (publickey)"
            && r.end >= r.start
            && r.start > 1.7e9));
        assert!(h.runs[0].start >= h.runs[2].start, "newest first");
        d.status().flush().await;
    }
    let (d, _) = daemon(Some(dir.path()));
    let (_, _, body) = get(&d, &format!("/history/{}", ok.id)).await;
    let h: DeviceHistory = serde_json::from_str(&body).unwrap();
    assert_eq!(h.runs.len(), 1, "history survives a restart");
    assert_eq!(h.runs[0].bytes, 1000);
    assert_eq!(h.runs[0].files, 4);
    assert_eq!(h.runs[0].rows, None);
    assert_eq!(
        h.runs[0].kinds,
        vec![BackupKind::Results, BackupKind::Videos]
    );
    let (_, _, text) = get(&d, "/metrics").await;
    let streak = format!(
        r#"etho_backup_failed_runs_in_a_row{{device_id="{}",device_name="ETHOSCOPE_002"}}"#,
        bad.id
    );
    assert_eq!(
        sample(&text, &streak),
        Some(3.0),
        "the failure streak is read back from the history"
    );
}

#[tokio::test]
async fn a_running_job_shows_and_bad_ids_are_refused() {
    let (d, release) = daemon(None);
    let slow = device(7, "ETHOSCOPE_007");
    let series = format!(r#"etho_backup_job_running{{device_id="{}"}}"#, slow.id);
    let job = tokio::spawn({
        let d = Arc::clone(&d);
        let slow = slow.clone();
        async move { d.run_device(slow).await }
    });
    // Wait (bounded) until the job is marked running, then scrape while it runs.
    let mut seen = None;
    for _ in 0..200 {
        let (_, _, text) = get(&d, "/metrics").await;
        seen = sample(&text, &series);
        if seen == Some(1.0) {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, Some(1.0), "job_running is 1 while the job runs");
    release.notify_one();
    job.await.unwrap().unwrap();
    let (_, _, text) = get(&d, "/metrics").await;
    assert_eq!(sample(&text, &series), Some(0.0));

    for bad in [
        "nothex",
        "..%2F..%2Fetc",
        "0123456789ABCDEF0123456789ABCDEF",
    ] {
        let (status, _, _) = get(&d, &format!("/history/{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (status, _, body) = get(&d, &format!("/history/{:032x}", 99)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["runs"],
        json!([])
    );
}
