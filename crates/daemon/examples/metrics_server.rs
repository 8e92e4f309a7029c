//! A backup daemon's `GET /metrics` with a full fleet's worth of series, for benchmarks.
//!
//! ```text
//! metrics_server 127.0.0.1:PORT DEVICES
//! ```
//!
//! Builds a [`Daemon`] around an engine that copies nothing but reports results and videos for
//! every device (and archive sizes for each), runs 5 jobs per device so every family holds its
//! series, then serves the daemon's `/metrics` and `/history/<id>` and, as the baseline, a
//! `/status` that is the MySQL daemon's (the status table's snapshot as JSON). Listens on
//! loopback only and exits by itself after `STUB_LIFETIME_SECS` (default 900).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etho_daemon::{ArchiveBytes, Copied, Daemon, DaemonConfig, Engine, JobContext, JobOutcome};
use etho_model::device::{DeviceInfo, Ineligible};
use etho_model::history::RunOutcome;
use etho_model::kind::BackupKind;
use futures::future::BoxFuture;
use serde_json::{json, Map, Value};

fn device_id(i: usize) -> String {
    format!("{:032x}", (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15)
}

struct Fleet {
    devices: usize,
}

impl Engine for Fleet {
    fn name(&self) -> &'static str {
        "bench"
    }
    fn accepts(&self, _: &DeviceInfo) -> Result<(), Ineligible> {
        Ok(())
    }
    fn default_extra(&self) -> Map<String, Value> {
        Map::new()
    }
    fn run(&self, device: DeviceInfo, _: JobContext) -> BoxFuture<'static, JobOutcome> {
        Box::pin(async move {
            let fails = device.name.ends_with('7');
            let part = |kind, bytes| Copied {
                kind,
                outcome: if fails {
                    RunOutcome::Error
                } else {
                    RunOutcome::Success
                },
                duration: Duration::from_millis(1200),
                bytes,
                rows: None,
                files: 3,
            };
            let parts = vec![
                part(BackupKind::Results, 4_000_000),
                part(BackupKind::Videos, 90_000_000),
            ];
            if fails {
                JobOutcome::error("rsync failed with code 255: Permission denied (publickey)")
                    .with_copied_parts(parts)
            } else {
                JobOutcome::success("Backup completed in 1.2s: Results: 3 files copied (3.8 MB)")
                    .with_copied_parts(parts)
            }
        })
    }
    fn kinds(&self, _: &DeviceInfo) -> Vec<BackupKind> {
        vec![BackupKind::Results, BackupKind::Videos]
    }
    fn archive_bytes(&self) -> Vec<ArchiveBytes> {
        (0..self.devices)
            .flat_map(|i| {
                [BackupKind::Results, BackupKind::Videos].map(|kind| ArchiveBytes {
                    device_id: device_id(i),
                    kind,
                    bytes: 1_000_000_000 + i as u64,
                })
            })
            .collect()
    }
    fn archive_roots(&self) -> Vec<(BackupKind, PathBuf)> {
        vec![
            (BackupKind::Results, std::env::temp_dir()),
            (BackupKind::Videos, std::env::temp_dir()),
        ]
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = args.get(1).expect("ADDR").parse().expect("ADDR:PORT");
    assert!(addr.ip().is_loopback(), "loopback only");
    let devices: usize = args.get(2).map_or(200, |n| n.parse().expect("DEVICES"));
    let daemon = Daemon::new(
        Arc::new(Fleet { devices }),
        DaemonConfig::new("127.0.0.1:9"),
    )
    .unwrap();
    for round in 0..5 {
        for i in 0..devices {
            let id = device_id(i);
            let entry = json!({"id": id, "name": format!("ETHOSCOPE_{:03}", i + 1),
                               "ip": "127.0.0.1", "status": "running"});
            let device = DeviceInfo::from_entry(&id, &entry).unwrap();
            daemon.run_device(device).await.unwrap();
        }
        eprintln!("round {round} done");
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    // The free-space sampler runs as in a daemon.
    tokio::spawn(etho_daemon::metrics::sample_filesystems(
        Arc::new(Fleet { devices }),
        Arc::clone(daemon.metrics()),
        shutdown.clone(),
    ));
    let status = Arc::clone(&daemon);
    let router = etho_daemon::observe::router(Arc::clone(&daemon)).route(
        "/status",
        axum::routing::get(move || {
            let status = Arc::clone(&status);
            async move { axum::Json(status.status().snapshot()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let lifetime = std::env::var("STUB_LIFETIME_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(lifetime)).await;
        std::process::exit(0);
    });
    eprintln!("serving on http://{addr}");
    etho_daemon::serve(listener, router, shutdown)
        .await
        .unwrap();
}
