//! The node's `GET /metrics`, in Prometheus' classic text format (version 0.0.4).
//!
//! The daemons export what their jobs did; the node exports what a person asks of the lab as a
//! whole: is each daemon answering, and how many devices are in each state.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `etho_backup_daemon_up` | `daemon` | 1 when the daemon's `/status` was usable at the last refresh |
//! | `etho_backup_devices` | `status` | devices by the seed's `overall_status` |
//! | `etho_backup_status_age_seconds` | | age of the status these numbers come from |
//!
//! Every number comes from a [`StatusSnapshot`] that the unified status refresh leaves behind
//! ([`crate::backup_status::BackupStatusService::snapshot`]): a scrape reads memory and never
//! waits for a daemon once the node has answered once.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use etho_model::merge::{OverallStatus, UnifiedDevice, UnifiedStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::AppState;

/// The `Content-Type` of the classic text format.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The daemons, by their key in the unified reply (the `daemon` label).
pub const DAEMONS: [&str; 2] = ["mysql_backup", "rsync_backup"];

/// The seed's four `overall_status` words, in a fixed order (the `status` label).
pub const OVERALL: [OverallStatus; 4] = [
    OverallStatus::Success,
    OverallStatus::Partial,
    OverallStatus::Error,
    OverallStatus::Unknown,
];

/// One device as the metrics see it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSnapshot {
    /// Machine id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The seed's combined outcome.
    pub overall: OverallStatus,
    /// Why the device's backup needs attention, in sentences (for chat alerts).
    pub reasons: Vec<String>,
}

/// What one unified status refresh leaves for the metrics: small, immutable, shared.
#[derive(Debug, Clone)]
pub struct StatusSnapshot {
    /// When the refresh that built it started.
    pub taken_at: Instant,
    /// Whether each daemon ([`DAEMONS`] order) answered with a usable document.
    pub up: [bool; 2],
    /// Every device of the unified view, by id.
    pub devices: Vec<DeviceSnapshot>,
}

impl StatusSnapshot {
    /// The snapshot of a unified reply.
    pub fn of(status: &UnifiedStatus, up: [bool; 2], taken_at: Instant) -> StatusSnapshot {
        StatusSnapshot {
            taken_at,
            up,
            devices: status
                .unified_devices
                .iter()
                .map(|(id, d)| DeviceSnapshot {
                    id: id.clone(),
                    name: d.name.clone(),
                    overall: d.overall_status,
                    reasons: failure_reasons(d),
                })
                .collect(),
        }
    }
}

/// Longest daemon message quoted in a reason.
const REASON_MESSAGE_LIMIT: usize = 300;

/// "MySQL backup failed: <message>" for each daemon whose last job of the device failed.
fn failure_reasons(device: &UnifiedDevice) -> Vec<String> {
    [
        ("MySQL backup", &device.mysql_backup),
        ("rsync backup", &device.rsync_backup),
    ]
    .into_iter()
    .filter(|(_, side)| side.progress.get("status").and_then(|s| s.as_str()) == Some("error"))
    .map(|(what, side)| {
        let message = side
            .progress
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("");
        let mut cut = REASON_MESSAGE_LIMIT.min(message.len());
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let ellipsis = if cut < message.len() { "…" } else { "" };
        format!("{what} failed: {}{ellipsis}", &message[..cut])
    })
    .collect()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DaemonLabels {
    daemon: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

/// Encodes one snapshot (a fresh registry per scrape: the numbers are the snapshot's, nothing
/// accumulates on the node).
#[derive(Debug)]
struct SnapshotCollector {
    snapshot: Option<Arc<StatusSnapshot>>,
    now: Instant,
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(snap) = &self.snapshot else {
            return Ok(());
        };
        let mut up = encoder.encode_descriptor(
            "etho_backup_daemon_up",
            "1 when the backup daemon's /status was usable at the node's last refresh, else 0.",
            None,
            MetricType::Gauge,
        )?;
        for (daemon, ok) in DAEMONS.into_iter().zip(snap.up) {
            ConstGauge::new(i64::from(ok)).encode(up.encode_family(&DaemonLabels { daemon })?)?;
        }
        let mut devices = encoder.encode_descriptor(
            "etho_backup_devices",
            "Devices by the seed's overall_status (success, partial, error, unknown).",
            None,
            MetricType::Gauge,
        )?;
        for status in OVERALL {
            let n = snap.devices.iter().filter(|d| d.overall == status).count();
            let labels = StatusLabels {
                status: status.as_str(),
            };
            ConstGauge::new(n as i64).encode(devices.encode_family(&labels)?)?;
        }
        let age = encoder.encode_descriptor(
            "etho_backup_status_age",
            "Age of the unified status the node's metrics come from.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        ConstGauge::new(
            self.now
                .saturating_duration_since(snap.taken_at)
                .as_secs_f64(),
        )
        .encode(age)?;
        Ok(())
    }
}

/// The exposition of a snapshot at `now` (no snapshot yet: an empty exposition).
pub fn render(snapshot: Option<Arc<StatusSnapshot>>, now: Instant) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector { snapshot, now }));
    let mut out = String::with_capacity(8 * 1024);
    if let Err(err) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        tracing::error!("cannot encode the metrics: {err}");
    }
    out
}

/// Routes of this module, merged into [`crate::app`].
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics_get))
}

async fn metrics_get(State(state): State<AppState>) -> Response {
    let snapshot = state.backup_status.snapshot().await;
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        render(snapshot, Instant::now()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A fixed snapshot with one device in each state but `unknown`, rsync down, 2.5 s old.
    pub(crate) fn sample() -> (Arc<StatusSnapshot>, Instant) {
        let taken_at = Instant::now();
        let device = |n: u32, overall| DeviceSnapshot {
            id: format!("{n:032x}"),
            name: format!("ETHOSCOPE_{n:03}"),
            overall,
            reasons: Vec::new(),
        };
        let snap = StatusSnapshot {
            taken_at,
            up: [true, false],
            devices: vec![
                device(1, OverallStatus::Success),
                device(2, OverallStatus::Partial),
                device(3, OverallStatus::Partial),
                device(4, OverallStatus::Error),
            ],
        };
        (Arc::new(snap), taken_at + Duration::from_millis(2500))
    }

    fn golden_path() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/prometheus/golden/node.prom")
    }

    /// The exposition of fixed data is exactly the checked-in golden file, which pins every
    /// name, type, help text and label (`UPDATE_GOLDEN=1` rewrites it after a deliberate
    /// change; promtool checks the file in the test suite).
    #[test]
    fn exposition_matches_the_golden_file() {
        let (snap, now) = sample();
        let text = render(Some(snap), now);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(golden_path(), &text).unwrap();
        }
        assert_eq!(text, std::fs::read_to_string(golden_path()).unwrap());
    }

    #[test]
    fn counts_and_reachability() {
        let (snap, now) = sample();
        let text = render(Some(snap), now);
        for line in [
            r#"etho_backup_daemon_up{daemon="mysql_backup"} 1"#,
            r#"etho_backup_daemon_up{daemon="rsync_backup"} 0"#,
            r#"etho_backup_devices{status="partial"} 2"#,
            r#"etho_backup_devices{status="unknown"} 0"#,
            "etho_backup_status_age_seconds 2.5",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert_eq!(render(None, now), "", "nothing known, nothing claimed");
    }
}
