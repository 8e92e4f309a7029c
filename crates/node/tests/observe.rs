//! The node's `GET /metrics` and `GET /backup/history/<id>` over real loopback sockets, against
//! stub daemons serving fixture `/status` and `/history/<id>` documents.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use etho_node::{NodeConfig, ServiceUrl};
use serde_json::{json, Value};

mod common;
use common::{refused_url, serve, start_node, Node};

const DEV_A: &str = "0043e1b367c544fb8adb6198eccf7805";
const DEV_B: &str = "11111111111111111111111111111111";

/// A stub daemon: `/status` answers `status`, `/history/<DEV_A>` answers `history`.
async fn stub(status: Value, history: Value) -> String {
    serve(
        Router::new()
            .route(
                "/status",
                get(move || {
                    let s = status.clone();
                    async move { axum::Json(s) }
                }),
            )
            .route(
                &format!("/history/{DEV_A}"),
                get(move || {
                    let h = history.clone();
                    async move { axum::Json(h) }
                }),
            ),
    )
    .await
}

async fn start(mysql: &str, rsync: &str) -> Node {
    start_node(NodeConfig {
        mysql_backup_url: ServiceUrl::daemon(mysql).unwrap(),
        rsync_backup_url: ServiceUrl::daemon(rsync).unwrap(),
        daemon_timeout: Duration::from_secs(2),
        status_cache_ttl: Duration::from_millis(200),
        ..NodeConfig::default()
    })
    .await
}

fn entry(name: &str, status: &str) -> Value {
    json!({"name": name, "status": "running", "progress": {"status": status, "message": "m"},
           "processing": false, "count": 1, "started": 1, "ended": 2, "synced": {}})
}

fn run(start: f64, outcome: &str, message: &str) -> Value {
    json!({"start": start, "end": start + 2.0, "outcome": outcome, "message": message,
           "bytes": 10, "rows": null, "files": 1, "kinds": ["results"]})
}

async fn get_text(url: &str) -> (u16, String, String) {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, resp.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_devices_and_daemons() {
    let mysql = stub(
        json!({DEV_A: entry("ETHOSCOPE_001", "success"), DEV_B: entry("ETHOSCOPE_002", "error")}),
        json!({}),
    )
    .await;
    let node = start(&mysql, &refused_url().await).await;
    let (status, ctype, text) = get_text(&format!("{}/metrics", node.base)).await;
    assert_eq!(status, 200);
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    for line in [
        r#"etho_backup_daemon_up{daemon="mysql_backup"} 1"#,
        r#"etho_backup_daemon_up{daemon="rsync_backup"} 0"#,
        r#"etho_backup_devices{status="partial"} 1"#,
        r#"etho_backup_devices{status="error"} 1"#,
        r#"etho_backup_devices{status="success"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
}

#[tokio::test]
async fn history_merges_both_daemons_and_names_a_missing_one() {
    let long = "x".repeat(10_000);
    let mysql = stub(
        json!({}),
        json!({"device_id": DEV_A, "runs": [run(300.0, "success", "mirror ok"), run(100.0, "error", &long)]}),
    )
    .await;
    let rsync = stub(
        json!({"devices": {}}),
        json!({"device_id": DEV_A, "runs": [run(200.0, "warning", "Videos: 1 vanished")]}),
    )
    .await;
    let node = start(&mysql, &rsync).await;
    let (status, _, body) = get_text(&format!("{}/backup/history/{DEV_A}", node.base)).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let order: Vec<(f64, &str)> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["start"].as_f64().unwrap(), r["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        order,
        vec![
            (300.0, "mysql_backup"),
            (200.0, "rsync_backup"),
            (100.0, "mysql_backup")
        ]
    );
    assert!(v["runs"][2]["message"].as_str().unwrap().len() <= 2048);
    assert_eq!(v["unavailable"], json!({}));

    // A device the daemons do not know: 404 from both stubs, named as such.
    let (status, _, body) = get_text(&format!("{}/backup/history/{DEV_B}", node.base)).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["runs"], json!([]));
    assert_eq!(
        v["unavailable"],
        json!({"mysql_backup": "HTTP 404 Not Found", "rsync_backup": "HTTP 404 Not Found"})
    );

    let node = start(&mysql, &refused_url().await).await;
    let (_, _, body) = get_text(&format!("{}/backup/history/{DEV_A}", node.base)).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["unavailable"],
        json!({"rsync_backup": "connection refused"})
    );

    for bad in [
        "nothex",
        "0043e1b367c544fb8adb6198eccf780%2F",
        "0043E1B367C544FB8ADB6198ECCF7805",
    ] {
        let (status, _, _) = get_text(&format!("{}/backup/history/{bad}", node.base)).await;
        assert_eq!(status, 400, "{bad}");
    }
}
