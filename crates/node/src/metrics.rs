//! The node's `GET /metrics`, in Prometheus' classic text format (version 0.0.4).
//!
//! The daemons export what their jobs did; the node exports what a person asks of the lab as a
//! whole: is each daemon answering, how many devices are in each state, and how much of each
//! device's data exists only on the device (its `health`, see [`etho_model::health`]).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `etho_backup_daemon_up` | `daemon` | 1 when the daemon's `/status` was usable at the last refresh |
//! | `etho_backup_devices` | `status` | devices by the seed's `overall_status` |
//! | `etho_backup_status_age_seconds` | | age of the status these numbers come from |
//! | `etho_backup_device_health` | `device_id`, `device_name`, `state` | 1 for the device's health state, 0 for the five others |
//! | `etho_backup_device_exposure_seconds` | `device_id`, `device_name` | seconds of data only on the device (absent when unknown) |
//! | `etho_backup_device_last_success_timestamp_seconds` | `device_id`, `device_name`, `kind` | end of the last successful job of each backup the device needs |
//!
//! Every number comes from a [`StatusSnapshot`] that the unified status refresh leaves behind
//! ([`crate::backup_status::BackupStatusService::snapshot`]): a scrape reads memory and never
//! waits for a daemon once the node has answered once, nor for a job, nor walks the archive.
//! A snapshot's exposition is encoded once, by its first scrape, and kept with it (with 200
//! devices it is some 2000 samples and 250 KB); each scrape only appends the status age.
//!
//! Labels stay bounded: a device whose id is not a machine id is left out of the snapshot (it
//! could never have come from `/devices`), and a name that is not a valid device name (at most
//! 64 characters of `[A-Za-z0-9_-]`) is replaced by the merge's fallback `DEVICE_<id prefix>`.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use etho_model::device::{is_valid_device_name, is_valid_machine_id};
use etho_model::health::HealthState;
use etho_model::kind::BackupKind;
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

/// The six health states, in a fixed order (the `state` label).
pub const HEALTH_STATES: [HealthState; 6] = [
    HealthState::AtRisk,
    HealthState::Stale,
    HealthState::Lagging,
    HealthState::Idle,
    HealthState::Safe,
    HealthState::Unknown,
];

/// One device as the metrics see it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSnapshot {
    /// Machine id (valid).
    pub id: String,
    /// Display name (valid, or `DEVICE_<id prefix>`).
    pub name: String,
    /// The seed's combined outcome.
    pub overall: OverallStatus,
    /// Why the device's backup needs attention, in sentences (for chat alerts).
    pub reasons: Vec<String>,
    /// Its health, when the node assessed it.
    pub health: Option<HealthSnapshot>,
}

/// The part of a device's `health` the metrics and alerts read.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSnapshot {
    /// The state.
    pub state: HealthState,
    /// Seconds of data only on the device, when known.
    pub exposure_s: Option<f64>,
    /// The last successful job's end, per backup the device needs (only those that succeeded).
    pub last_success: Vec<(BackupKind, f64)>,
    /// The health's reasons (for chat alerts).
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
    /// Its exposition without the age, encoded by the first scrape that reads it.
    pub exposition: OnceLock<String>,
}

impl StatusSnapshot {
    /// The snapshot of a unified reply; `last_success` gives each daemon's (MySQL, rsync)
    /// `last_success` of a device.
    pub fn of(
        status: &UnifiedStatus,
        up: [bool; 2],
        taken_at: Instant,
        last_success: impl Fn(&str) -> [Option<f64>; 2],
    ) -> StatusSnapshot {
        StatusSnapshot {
            taken_at,
            up,
            exposition: OnceLock::new(),
            devices: status
                .unified_devices
                .iter()
                .filter(|(id, _)| is_valid_machine_id(id))
                .map(|(id, d)| DeviceSnapshot {
                    id: id.clone(),
                    name: label_name(id, &d.name),
                    overall: d.overall_status,
                    reasons: failure_reasons(d),
                    health: d.health.as_ref().map(|h| {
                        let [mysql, rsync] = last_success(id);
                        HealthSnapshot {
                            state: h.state,
                            exposure_s: h.exposure_s.filter(|s| s.is_finite()),
                            last_success: h
                                .expected
                                .iter()
                                .filter_map(|b| {
                                    let at = match b.service() {
                                        etho_model::merge::Service::MysqlBackup => mysql,
                                        etho_model::merge::Service::RsyncBackup => rsync,
                                    };
                                    Some((*b, at.filter(|t| t.is_finite())?))
                                })
                                .collect(),
                            reasons: h.reasons.clone(),
                        }
                    }),
                })
                .collect(),
        }
    }
}

/// The `device_name` label: the device's name when valid, else the merge's fallback.
fn label_name(id: &str, name: &str) -> String {
    if is_valid_device_name(name) {
        name.to_string()
    } else {
        format!("DEVICE_{}", &id[..8])
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

/// Encodes one snapshot, but its age (a fresh registry per snapshot: the numbers are the
/// snapshot's, nothing accumulates on the node).
#[derive(Debug)]
struct SnapshotCollector {
    snapshot: Arc<StatusSnapshot>,
}

impl Collector for SnapshotCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_snapshot(&self.snapshot, encoder)
    }
}

/// Encodes the age of the snapshot at a scrape.
#[derive(Debug)]
struct AgeCollector {
    age: f64,
}

impl Collector for AgeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let age = encoder.encode_descriptor(
            "etho_backup_status_age",
            "Age of the unified status the node's metrics come from.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.age).encode(age)
    }
}

fn encode_snapshot(
    snap: &StatusSnapshot,
    mut encoder: DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    {
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
    }
    encode_health(&mut encoder, &snap.devices)
}

/// The three per-device health families.
fn encode_health(
    encoder: &mut DescriptorEncoder,
    devices: &[DeviceSnapshot],
) -> Result<(), std::fmt::Error> {
    let assessed = || {
        devices
            .iter()
            .filter_map(|d| Some((d.id.as_str(), d.name.as_str(), d.health.as_ref()?)))
    };
    let mut family = encoder.encode_descriptor(
        "etho_backup_device_health",
        "1 for the device's backup health state (at_risk, stale, lagging, idle, safe, unknown), 0 for the others.",
        None,
        MetricType::Gauge,
    )?;
    for (id, name, health) in assessed() {
        for state in HEALTH_STATES {
            let labels = [
                ("device_id", id),
                ("device_name", name),
                ("state", state.as_str()),
            ];
            let value = i64::from(health.state == state);
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "etho_backup_device_exposure",
        "Seconds of the device's recent data that exist only on the device.",
        Some(&Unit::Seconds),
        MetricType::Gauge,
    )?;
    for (id, name, health) in assessed() {
        if let Some(exposure) = health.exposure_s {
            let labels = [("device_id", id), ("device_name", name)];
            ConstGauge::new(exposure).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "etho_backup_device_last_success_timestamp",
        "End of the last successful backup job of the device, per kind it needs (unix time).",
        Some(&Unit::Seconds),
        MetricType::Gauge,
    )?;
    for (id, name, health) in assessed() {
        for (backup, at) in &health.last_success {
            let labels = [
                ("device_id", id),
                ("device_name", name),
                ("kind", backup.as_str()),
            ];
            ConstGauge::new(*at).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// The text of one collector's families.
fn encode(collector: Box<dyn Collector>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(collector);
    let mut out = String::new();
    if let Err(err) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        tracing::error!("cannot encode the metrics: {err}");
    }
    out
}

/// The exposition of a snapshot at `now` (no snapshot yet: an empty exposition): the
/// snapshot's families, encoded once per snapshot, then its age.
pub fn render(snapshot: Option<Arc<StatusSnapshot>>, now: Instant) -> String {
    let Some(snap) = snapshot else {
        return String::new();
    };
    let body = snap.exposition.get_or_init(|| {
        encode(Box::new(SnapshotCollector {
            snapshot: Arc::clone(&snap),
        }))
    });
    let age = now.saturating_duration_since(snap.taken_at).as_secs_f64();
    let mut out = String::with_capacity(body.len() + 256);
    out.push_str(body);
    out.push_str(&encode(Box::new(AgeCollector { age })));
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

    /// A fixed snapshot with one device in each overall status but `unknown`, rsync down, 2.5 s
    /// old: device 1 safe (MySQL and results succeeded), 2 at risk (its results never
    /// succeeded), 3 stale with its exposure unknown, 4 not assessed.
    pub(crate) fn sample() -> (Arc<StatusSnapshot>, Instant) {
        let taken_at = Instant::now();
        let device = |n: u32, overall, health| DeviceSnapshot {
            id: format!("{n:032x}"),
            name: format!("ETHOSCOPE_{n:03}"),
            overall,
            reasons: Vec::new(),
            health,
        };
        let health = |state, exposure_s, last_success: &[(BackupKind, f64)]| {
            Some(HealthSnapshot {
                state,
                exposure_s,
                last_success: last_success.to_vec(),
                reasons: Vec::new(),
            })
        };
        let snap = StatusSnapshot {
            taken_at,
            up: [true, false],
            exposition: OnceLock::new(),
            devices: vec![
                device(
                    1,
                    OverallStatus::Success,
                    health(
                        HealthState::Safe,
                        Some(12.5),
                        &[
                            (BackupKind::Mysql, 1_752_137_416.0),
                            (BackupKind::Results, 1_752_137_340.5),
                        ],
                    ),
                ),
                device(
                    2,
                    OverallStatus::Partial,
                    health(
                        HealthState::AtRisk,
                        Some(7200.0),
                        &[(BackupKind::Mysql, 1_752_130_000.0)],
                    ),
                ),
                device(
                    3,
                    OverallStatus::Partial,
                    health(HealthState::Stale, None, &[]),
                ),
                device(4, OverallStatus::Error, None),
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

    /// The snapshot's families are encoded once; every scrape still gets its own age.
    #[test]
    fn the_exposition_is_kept_and_the_age_is_fresh() {
        let (snap, now) = sample();
        let first = render(Some(Arc::clone(&snap)), now);
        assert!(
            snap.exposition.get().is_some(),
            "kept after the first scrape"
        );
        let later = render(Some(Arc::clone(&snap)), now + Duration::from_secs(1));
        let cut = first.find("# HELP etho_backup_status_age").unwrap();
        assert_eq!(later[..cut], first[..cut]);
        assert!(
            first.ends_with("etho_backup_status_age_seconds 2.5\n"),
            "{first}"
        );
        assert!(
            later.ends_with("etho_backup_status_age_seconds 3.5\n"),
            "{later}"
        );
    }

    /// One sample per state per assessed device (1 for its state), the exposure only where it
    /// is known, a timestamp per backup that succeeded.
    #[test]
    fn health_exposure_and_last_success() {
        let (snap, now) = sample();
        let text = render(Some(snap), now);
        let d1 = r#"device_id="00000000000000000000000000000001",device_name="ETHOSCOPE_001""#;
        let d2 = r#"device_id="00000000000000000000000000000002",device_name="ETHOSCOPE_002""#;
        for line in [
            format!(r#"etho_backup_device_health{{{d1},state="safe"}} 1"#),
            format!(r#"etho_backup_device_health{{{d1},state="at_risk"}} 0"#),
            format!(r#"etho_backup_device_health{{{d2},state="at_risk"}} 1"#),
            format!("etho_backup_device_exposure_seconds{{{d2}}} 7200.0"),
            format!(
                r#"etho_backup_device_last_success_timestamp_seconds{{{d1},kind="results"}} 1752137340.5"#
            ),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        let count = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(count("etho_backup_device_health{"), 3 * HEALTH_STATES.len());
        assert_eq!(
            count("etho_backup_device_health{") - 3 * 5,
            3,
            "one 1 per device"
        );
        assert_eq!(count("etho_backup_device_exposure_seconds{"), 2);
        assert_eq!(
            count("etho_backup_device_last_success_timestamp_seconds{"),
            3
        );
        assert!(!text.contains("00000000000000000000000000000004"));
    }

    /// Only machine ids become `device_id` labels, and only valid names `device_name` ones; the
    /// per-kind timestamps follow the backups the device needs, from the daemon that makes each.
    #[test]
    fn snapshot_bounds_its_labels() {
        use etho_model::merge::{unify, DaemonDocument, ServiceReport};
        let good = "0123456789abcdef0123456789abcdef";
        let hostile = format!("ETHO\"}} 1\nevil{}", "x".repeat(100));
        let doc = serde_json::json!({
            good: {"name": hostile, "status": "running", "progress": {"status": "success"}},
            "../../etc/passwd": {"name": "ETHOSCOPE_009", "status": "running"},
        });
        let mysql =
            ServiceReport::Available(DaemonDocument::from_map(doc.as_object().unwrap().clone()));
        let mut unified = unify(&mysql, &ServiceReport::Unavailable);
        for d in unified.values_mut() {
            d.health = Some(etho_model::health::Health {
                state: HealthState::Safe,
                exposure_s: Some(f64::NAN),
                newest_copied_at: None,
                last_success: None,
                expected: vec![BackupKind::Mysql, BackupKind::Results, BackupKind::Videos],
                reasons: Vec::new(),
            });
        }
        let status = UnifiedStatus {
            mysql_backup: serde_json::value::to_raw_value(&serde_json::json!({})).unwrap(),
            rsync_backup: serde_json::value::to_raw_value(&serde_json::json!({})).unwrap(),
            unified_devices: unified,
        };
        let snap = StatusSnapshot::of(&status, [true, false], Instant::now(), |id| {
            assert_eq!(id, good);
            [Some(100.0), None]
        });
        assert_eq!(snap.devices.len(), 1, "the path-like id is left out");
        let d = &snap.devices[0];
        assert_eq!((d.id.as_str(), d.name.as_str()), (good, "DEVICE_01234567"));
        let h = d.health.as_ref().unwrap();
        assert_eq!(h.exposure_s, None, "a non-finite exposure is not exported");
        assert_eq!(h.last_success, vec![(BackupKind::Mysql, 100.0)]);
    }
}
