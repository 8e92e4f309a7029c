//! A fast stand-in for a backup daemon's `GET /status`, or a static server, for benchmarks.
//!
//! ```text
//! stub_daemon mysql  127.0.0.1:PORT DEVICES   # flat {id: entry} map, like the MySQL daemon
//! stub_daemon rsync  127.0.0.1:PORT DEVICES   # {"devices": {...}, "disk_usage_summary": {...}}
//! stub_daemon static 127.0.0.1:PORT FILE      # FILE's bytes on every path (the ceiling)
//! ```
//!
//! The body is built once and served from shared bytes by the same stack as the node (axum on a
//! multi-threaded tokio runtime), so the stubs are never the bottleneck and the static mode
//! measures what the node's stack can do at best with the same reply. Listens on loopback only
//! and exits by itself after `STUB_LIFETIME_SECS` (default 900) in case nobody stops it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Map, Value};

fn device_id(i: usize) -> String {
    format!("{:032x}", (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15)
}

/// The health facts a daemon adds after the seed's fields (what the node's health, and so its
/// per-device metrics, are computed from): a copy 30 s behind, succeeded 10 s ago.
fn health_facts(entry: &mut Value, i: usize) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64().floor());
    let facts = json!({
        "last_success": now - 10.0, "last_success_started": now - 20.0, "failures": 0,
        "interval_s": 300.0, "newest_copied_at": now - 30.0,
        "experiment": format!("2025-07-10_10-00-00_{}.db", device_id(i)),
    });
    if let (Some(e), Some(f)) = (entry.as_object_mut(), facts.as_object()) {
        e.extend(f.clone());
    }
}

fn mysql_document(devices: usize) -> Value {
    let map: Map<String, Value> = (0..devices)
        .map(|i| {
            let mut entry = json!({
                "name": format!("ETHOSCOPE_{:03}", i + 1), "status": "running",
                "started": 1752137404, "ended": 1752137416, "processing": false, "count": 42,
                "synced": {"tracking_db": {"rows": 123456, "tables": 23}},
                "progress": {"status": if i % 3 == 0 { "warning" } else { "success" },
                             "message": format!("Backup completed successfully for device {} in 11.8s", device_id(i))},
                "data_duplication": false
            });
            health_facts(&mut entry, i);
            (device_id(i), entry)
        })
        .collect();
    Value::Object(map)
}

fn rsync_document(devices: usize) -> Value {
    let map: Map<String, Value> = (0..devices)
        .map(|i| {
            let mut entry = json!({
                "name": format!("ETHOSCOPE_{:03}", i + 1), "status": "running",
                "started": 1752137339, "ended": 1752137340, "processing": false, "count": 818,
                "synced": {
                    "results": {"local_files": 766, "directory": "/ethoscope_data/results",
                                "type": "results", "disk_usage_bytes": 287646297933_u64,
                                "disk_usage_human": "267.9 GB"},
                    "videos": {"local_files": 12529, "directory": "/ethoscope_data/videos",
                               "type": "videos", "disk_usage_bytes": 544649438682_u64,
                               "disk_usage_human": "507.2 GB"}
                },
                "progress": {"status": if i % 5 == 0 { "error" } else { "success" },
                             "message": "Unified backup completed successfully in 0.3s"},
                "metadata": {}
            });
            health_facts(&mut entry, i);
            (device_id(i), entry)
        })
        .collect();
    json!({
        "devices": map,
        "disk_usage_summary": {
            "results": {"total_files": 29119, "total_size_bytes": 11215763841541_u64,
                        "total_size_human": "10.2 TB"},
            "videos": {"total_files": 476102, "total_size_bytes": 20696678673241_u64,
                       "total_size_human": "18.8 TB"}
        }
    })
}

fn usage() -> ! {
    eprintln!(
        "usage: stub_daemon (mysql|rsync) ADDR:PORT DEVICES | stub_daemon static ADDR:PORT FILE"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, addr, param] = args.as_slice() else {
        usage()
    };
    let addr: SocketAddr = addr.parse().unwrap_or_else(|_| usage());
    if !addr.ip().is_loopback() {
        eprintln!("stub_daemon: refusing to listen on non-loopback {addr}");
        std::process::exit(2);
    }
    let body = match mode.as_str() {
        "mysql" | "rsync" => {
            let devices: usize = param.parse().unwrap_or_else(|_| usage());
            let doc = if mode == "mysql" {
                mysql_document(devices)
            } else {
                rsync_document(devices)
            };
            Bytes::from(serde_json::to_vec(&doc).expect("JSON values serialize"))
        }
        "static" => match std::fs::read(param) {
            Ok(bytes) => Bytes::from(bytes),
            Err(err) => {
                eprintln!("stub_daemon: cannot read {param}: {err}");
                std::process::exit(2);
            }
        },
        _ => usage(),
    };
    // Same headers as the node's reply, so the static ceiling sends the same bytes on the wire.
    let app = Router::new().fallback(move || {
        let body = body.clone();
        async move {
            (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                ],
                body,
            )
                .into_response()
        }
    });
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(err) => {
            eprintln!("stub_daemon: cannot listen on {addr}: {err}");
            std::process::exit(2);
        }
    };
    let lifetime = std::env::var("STUB_LIFETIME_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    if let Ok(local) = listener.local_addr() {
        println!("listening on {local}");
    }
    // The node's own serving stack, request timeout and body limit included.
    let serve = etho_http::serve(
        listener,
        app,
        etho_http::ServerLimits::default(),
        tokio::time::sleep(Duration::from_secs(lifetime)),
    );
    if let Err(err) = serve.await {
        eprintln!("stub_daemon: {err}");
        std::process::exit(1);
    }
}
