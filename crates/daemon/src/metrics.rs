//! `GET /metrics` of a backup daemon, in Prometheus' classic text format (version 0.0.4).
//!
//! Facilities that already run Prometheus alert on their other backups with exporters whose
//! metrics look alike (restic's `restic_backup_timestamp`, borg's `borg_last_backup_timestamp`);
//! these are the daemon's:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `etho_backup_runs_total` | `kind`, `outcome` | finished runs |
//! | `etho_backup_run_duration_seconds` | `kind` | histogram of run durations |
//! | `etho_backup_copied_bytes_total` | `kind` | bytes copied |
//! | `etho_backup_copied_files_total` | `kind` | files copied |
//! | `etho_backup_copied_rows_total` | | rows copied (the MySQL mirror) |
//! | `etho_backup_failed_runs_in_a_row` | `device_id`, `device_name` | the newest runs that failed, in a row |
//! | `etho_backup_job_running` | `device_id` | 1 while a job for the device runs |
//! | `etho_backup_archive_bytes` | `device_id`, `kind` | the device's data on the node |
//! | `etho_backup_archive_filesystem_avail_bytes` | `kind` | free space where the archive is |
//!
//! `kind` is `mysql`, `results` or `videos` ([`BackupKind`]); `outcome` is
//! `success|warning|error`. Labels are bounded: never a file name or a message.
//!
//! A scrape answers from memory: counters and gauges updated when jobs start and end, the
//! engine's in-memory archive sizes ([`Engine::archive_bytes`]), and free space sampled every
//! [`FS_SAMPLE_EVERY`] by a background task (a hung network filesystem delays the sample, never
//! the scrape). No lock a job holds for long is taken, and the archive is never walked.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etho_model::history::RunOutcome;
use etho_model::kind::BackupKind;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::engine::{Engine, JobOutcome};

/// The `Content-Type` of the classic text format.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How often the archive filesystems' free space is sampled.
pub const FS_SAMPLE_EVERY: Duration = Duration::from_secs(30);

/// Upper bounds of the run duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 11] = [
    0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabels {
    device_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamedDeviceLabels {
    device_id: String,
    device_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceKindLabels {
    device_id: String,
    kind: &'static str,
}

fn kind_labels(kind: BackupKind) -> KindLabels {
    KindLabels {
        kind: kind.as_str(),
    }
}

/// A backup daemon's metrics. Shared by the scheduler (updates) and `GET /metrics` (reads).
pub struct DaemonMetrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
    copied_bytes: Family<KindLabels, Counter>,
    copied_files: Family<KindLabels, Counter>,
    copied_rows: Counter,
    failing: Family<NamedDeviceLabels, Gauge>,
    running: Family<DeviceLabels, Gauge>,
    /// The name each device's `failing` series carries, to drop the old series on a rename.
    names: Mutex<HashMap<String, String>>,
    avail: Arc<Mutex<BTreeMap<BackupKind, u64>>>,
}

impl std::fmt::Debug for DaemonMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonMetrics").finish_non_exhaustive()
    }
}

/// Reads the engine's archive sizes and the sampled free space on every scrape.
struct ArchiveCollector {
    engine: Arc<dyn Engine>,
    avail: Arc<Mutex<BTreeMap<BackupKind, u64>>>,
}

impl std::fmt::Debug for ArchiveCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveCollector").finish_non_exhaustive()
    }
}

impl Collector for ArchiveCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut sizes = self.engine.archive_bytes();
        sizes.sort_by(|a, b| (&a.device_id, a.kind).cmp(&(&b.device_id, b.kind)));
        let mut family = encoder.encode_descriptor(
            "etho_backup_archive",
            "Bytes of the device's backup of this kind on the node (from the daemon's size index; the MySQL mirror: its current file).",
            Some(&Unit::Bytes),
            MetricType::Gauge,
        )?;
        for s in &sizes {
            let labels = DeviceKindLabels {
                device_id: s.device_id.clone(),
                kind: s.kind.as_str(),
            };
            ConstGauge::new(s.bytes).encode(family.encode_family(&labels)?)?;
        }
        let avail: Vec<(BackupKind, u64)> =
            lock(&self.avail).iter().map(|(k, v)| (*k, *v)).collect();
        let mut family = encoder.encode_descriptor(
            "etho_backup_archive_filesystem_avail",
            "Bytes available to the daemon on the filesystem of this kind's archive root (sampled every 30 s).",
            Some(&Unit::Bytes),
            MetricType::Gauge,
        )?;
        for (kind, bytes) in avail {
            ConstGauge::new(bytes).encode(family.encode_family(&kind_labels(kind))?)?;
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a single assignment or insert: a poisoned lock still holds whole values.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DaemonMetrics {
    /// Metrics for a daemon running `engine`; `runs_total` starts at 0 for every kind the
    /// engine writes, so rates exist from the first scrape.
    pub fn new(engine: Arc<dyn Engine>) -> DaemonMetrics {
        let mut registry = Registry::default();
        let runs = Family::<RunLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
        );
        let copied_bytes = Family::<KindLabels, Counter>::default();
        let copied_files = Family::<KindLabels, Counter>::default();
        let copied_rows = Counter::default();
        let failing = Family::<NamedDeviceLabels, Gauge>::default();
        let running = Family::<DeviceLabels, Gauge>::default();
        let avail = Arc::new(Mutex::new(BTreeMap::new()));
        registry.register(
            "etho_backup_runs",
            "Finished backup runs, by kind of backup and outcome",
            runs.clone(),
        );
        registry.register_with_unit(
            "etho_backup_run_duration",
            "How long backup runs took, by kind of backup",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register_with_unit(
            "etho_backup_copied",
            "Bytes copied to the node, by kind of backup",
            Unit::Bytes,
            copied_bytes.clone(),
        );
        registry.register(
            "etho_backup_copied_files",
            "Files copied to the node, by kind of backup",
            copied_files.clone(),
        );
        registry.register(
            "etho_backup_copied_rows",
            "Database rows copied to the node",
            copied_rows.clone(),
        );
        registry.register(
            "etho_backup_failed_runs_in_a_row",
            "How many of the device's newest runs failed in a row (0 after a run that did not fail)",
            failing.clone(),
        );
        registry.register(
            "etho_backup_job_running",
            "1 while a backup job for the device runs, else 0",
            running.clone(),
        );
        let kinds: Vec<BackupKind> = engine.archive_roots().iter().map(|(k, _)| *k).collect();
        registry.register_collector(Box::new(ArchiveCollector {
            engine,
            avail: Arc::clone(&avail),
        }));
        let metrics = DaemonMetrics {
            registry,
            runs,
            duration,
            copied_bytes,
            copied_files,
            copied_rows,
            failing,
            running,
            names: Mutex::new(HashMap::new()),
            avail,
        };
        for kind in kinds {
            for outcome in RunOutcome::ALL {
                let _ = metrics.runs.get_or_create(&run_labels(kind, outcome));
            }
            let _ = metrics.copied_bytes.get_or_create(&kind_labels(kind));
            let _ = metrics.copied_files.get_or_create(&kind_labels(kind));
        }
        metrics
    }

    /// Seeds the per-device series after a restart: every known device (`id → name`) is not
    /// running, and carries the failure streak its history ends with.
    pub fn seed(&self, devices: &BTreeMap<String, String>, streaks: &BTreeMap<String, u64>) {
        for (id, name) in devices {
            self.running
                .get_or_create(&DeviceLabels {
                    device_id: id.clone(),
                })
                .set(0);
            self.set_failing(id, name, streaks.get(id).copied().unwrap_or(0));
        }
    }

    fn set_failing(&self, id: &str, name: &str, streak: u64) {
        let mut names = lock(&self.names);
        if let Some(old) = names.insert(id.to_string(), name.to_string()) {
            if old != name {
                self.failing.remove(&NamedDeviceLabels {
                    device_id: id.to_string(),
                    device_name: old,
                });
            }
        }
        self.failing
            .get_or_create(&NamedDeviceLabels {
                device_id: id.to_string(),
                device_name: name.to_string(),
            })
            .set(i64::try_from(streak).unwrap_or(i64::MAX));
    }

    fn streak(&self, id: &str) -> u64 {
        let names = lock(&self.names);
        names
            .get(id)
            .and_then(|name| {
                self.failing.get(&NamedDeviceLabels {
                    device_id: id.to_string(),
                    device_name: name.clone(),
                })
            })
            .map_or(0, |g| u64::try_from(g.get()).unwrap_or(0))
    }

    /// A job for `id` started.
    pub fn job_started(&self, id: &str) {
        self.running
            .get_or_create(&DeviceLabels {
                device_id: id.to_string(),
            })
            .set(1);
    }

    /// A job for `id` (named `name`) ended with `outcome` after `elapsed`. Each part of
    /// [`JobOutcome::copied`] is one run of its kind; a job that copied nothing counts as one run
    /// of each of `kinds` (what the engine planned for the device).
    pub fn job_finished(
        &self,
        id: &str,
        name: &str,
        kinds: &[BackupKind],
        outcome: &JobOutcome,
        elapsed: Duration,
    ) {
        let job = RunOutcome::of(&outcome.status());
        if outcome.copied_parts.is_empty() {
            for kind in kinds {
                self.runs.get_or_create(&run_labels(*kind, job)).inc();
                self.duration
                    .get_or_create(&kind_labels(*kind))
                    .observe(elapsed.as_secs_f64());
            }
        }
        for part in &outcome.copied_parts {
            let kind = kind_labels(part.kind);
            self.runs
                .get_or_create(&run_labels(part.kind, part.outcome))
                .inc();
            self.duration
                .get_or_create(&kind)
                .observe(part.duration.as_secs_f64());
            self.copied_bytes.get_or_create(&kind).inc_by(part.bytes);
            self.copied_files.get_or_create(&kind).inc_by(part.files);
            if let Some(rows) = part.rows {
                self.copied_rows.inc_by(rows);
            }
        }
        let streak = if job == RunOutcome::Error {
            self.streak(id).saturating_add(1)
        } else {
            0
        };
        self.set_failing(id, name, streak);
        self.running
            .get_or_create(&DeviceLabels {
                device_id: id.to_string(),
            })
            .set(0);
    }

    /// Replaces the sampled free space of the archive filesystems.
    pub fn set_filesystem_avail(&self, avail: BTreeMap<BackupKind, u64>) {
        *lock(&self.avail) = avail;
    }

    /// The whole exposition, in the classic text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(err) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            // Writing into a String cannot fail; keep serving whatever was written.
            tracing::error!("cannot encode the metrics: {err}");
        }
        out
    }
}

/// `text` with each metric's samples in a stable order (a family's series come out in hash
/// order): sorted by their labels without `le`, keeping a histogram's buckets, sum and count in
/// their order. For golden files.
pub fn normalized(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut block: Vec<&str> = Vec::new();
    let flush = |block: &mut Vec<&str>, out: &mut String| {
        block.sort_by_key(|line| series_key(line));
        for line in block.drain(..) {
            out.push_str(line);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut block, &mut out);
            out.push_str(line);
            out.push('\n');
        } else {
            block.push(line);
        }
    }
    flush(&mut block, &mut out);
    out
}

/// The labels of a sample line without its `le` label.
fn series_key(line: &str) -> String {
    let labels = line
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map_or("", |(labels, _)| labels);
    labels
        .split(',')
        .filter(|l| !l.starts_with("le="))
        .collect::<Vec<_>>()
        .join(",")
}

fn run_labels(kind: BackupKind, outcome: RunOutcome) -> RunLabels {
    RunLabels {
        kind: kind.as_str(),
        outcome: outcome.as_str(),
    }
}

/// Free bytes (for an unprivileged writer) on the filesystem of each root; roots that cannot be
/// measured are left out and logged at debug level.
pub fn filesystem_avail(roots: &[(BackupKind, PathBuf)]) -> BTreeMap<BackupKind, u64> {
    let mut out = BTreeMap::new();
    for (kind, root) in roots {
        match nix::sys::statvfs::statvfs(root.as_path()) {
            Ok(st) => {
                // fsblkcnt_t is 32 bits on some targets.
                #[allow(clippy::useless_conversion)]
                let avail = u64::from(st.blocks_available()).saturating_mul(st.fragment_size());
                out.insert(*kind, avail);
            }
            Err(err) => tracing::debug!("cannot measure free space at {}: {err}", root.display()),
        }
    }
    out
}

/// Samples the archive filesystems' free space now and every [`FS_SAMPLE_EVERY`] until
/// `shutdown`, each sample on a blocking thread.
pub async fn sample_filesystems(
    engine: Arc<dyn Engine>,
    metrics: Arc<DaemonMetrics>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let roots = engine.archive_roots();
    if roots.is_empty() {
        return;
    }
    loop {
        let roots = roots.clone();
        let sample = tokio::task::spawn_blocking(move || filesystem_avail(&roots));
        tokio::select! {
            sampled = sample => {
                if let Ok(avail) = sampled {
                    metrics.set_filesystem_avail(avail);
                }
            }
            _ = shutdown.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(FS_SAMPLE_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ArchiveBytes, Copied, JobContext};
    use etho_model::device::{DeviceInfo, Ineligible};
    use futures::future::BoxFuture;
    use serde_json::{Map, Value};

    /// An engine that only reports fixed archive facts.
    struct Fixed;

    impl Engine for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn accepts(&self, _: &DeviceInfo) -> Result<(), Ineligible> {
            Ok(())
        }
        fn default_extra(&self) -> Map<String, Value> {
            Map::new()
        }
        fn run(&self, _: DeviceInfo, _: JobContext) -> BoxFuture<'static, JobOutcome> {
            Box::pin(async { JobOutcome::success("") })
        }
        fn archive_bytes(&self) -> Vec<ArchiveBytes> {
            vec![
                ArchiveBytes {
                    device_id: ID2.into(),
                    kind: BackupKind::Videos,
                    bytes: 5_000_000,
                },
                ArchiveBytes {
                    device_id: ID1.into(),
                    kind: BackupKind::Results,
                    bytes: 1_234_567,
                },
            ]
        }
        fn archive_roots(&self) -> Vec<(BackupKind, PathBuf)> {
            vec![
                (BackupKind::Results, PathBuf::from("/")),
                (BackupKind::Videos, PathBuf::from("/")),
            ]
        }
    }

    const ID1: &str = "0123456789abcdef0123456789abcdef";
    const ID2: &str = "fedcba9876543210fedcba9876543210";

    fn part(kind: BackupKind, outcome: RunOutcome, secs: f64, bytes: u64) -> Copied {
        Copied {
            kind,
            outcome,
            duration: Duration::from_secs_f64(secs),
            bytes,
            rows: None,
            files: 3,
        }
    }

    /// Fixed data through every update path.
    fn sample() -> DaemonMetrics {
        let m = DaemonMetrics::new(Arc::new(Fixed));
        let known = [
            (ID1.to_string(), "ETHOSCOPE_001".to_string()),
            (ID2.to_string(), "ETHOSCOPE_002".to_string()),
        ]
        .into_iter()
        .collect();
        m.seed(&known, &[(ID2.to_string(), 4)].into_iter().collect());
        m.job_started(ID1);
        let ok = JobOutcome::success("ok").with_copied_parts(vec![
            part(BackupKind::Results, RunOutcome::Success, 2.5, 1000),
            part(BackupKind::Videos, RunOutcome::Warning, 40.0, 250_000),
        ]);
        m.job_finished(ID1, "ETHOSCOPE_001", &[], &ok, Duration::from_secs(43));
        m.job_started(ID2);
        let failed = JobOutcome::error("timed out");
        m.job_finished(
            ID2,
            "ETHOSCOPE_002",
            &[BackupKind::Results, BackupKind::Videos],
            &failed,
            Duration::from_secs(700),
        );
        m.job_started(ID2);
        m.set_filesystem_avail([(BackupKind::Results, 7_000_000_000)].into_iter().collect());
        m
    }

    fn golden_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/golden/daemon.prom")
    }

    /// The exposition of fixed data is exactly the checked-in golden file, which pins every
    /// name, type, help text and label (`UPDATE_GOLDEN=1` rewrites it after a deliberate
    /// change; promtool checks the file in the test suite).
    #[test]
    fn exposition_matches_the_golden_file() {
        let text = crate::metrics::normalized(&sample().render());
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(golden_path(), &text).unwrap();
        }
        let golden = std::fs::read_to_string(golden_path()).unwrap();
        assert_eq!(text, golden, "metrics changed; see the test's doc");
    }

    #[test]
    fn runs_failures_and_running_follow_the_jobs() {
        let m = sample();
        let text = m.render();
        for line in [
            r#"etho_backup_runs_total{kind="results",outcome="success"} 1"#,
            r#"etho_backup_runs_total{kind="videos",outcome="warning"} 1"#,
            r#"etho_backup_runs_total{kind="results",outcome="error"} 1"#,
            r#"etho_backup_runs_total{kind="videos",outcome="error"} 1"#,
            r#"etho_backup_copied_bytes_total{kind="videos"} 250000"#,
            r#"etho_backup_failed_runs_in_a_row{device_id="fedcba9876543210fedcba9876543210",device_name="ETHOSCOPE_002"} 5"#,
            r#"etho_backup_failed_runs_in_a_row{device_id="0123456789abcdef0123456789abcdef",device_name="ETHOSCOPE_001"} 0"#,
            r#"etho_backup_job_running{device_id="fedcba9876543210fedcba9876543210"} 1"#,
            r#"etho_backup_job_running{device_id="0123456789abcdef0123456789abcdef"} 0"#,
            r#"etho_backup_archive_bytes{device_id="0123456789abcdef0123456789abcdef",kind="results"} 1234567"#,
            r#"etho_backup_archive_filesystem_avail_bytes{kind="results"} 7000000000"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // A success resets the streak; a rename moves the series instead of duplicating it.
        m.job_finished(
            ID2,
            "ETHOSCOPE_102",
            &[BackupKind::Videos],
            &JobOutcome::success("ok"),
            Duration::from_secs(1),
        );
        let text = m.render();
        assert!(text.contains(r#"device_name="ETHOSCOPE_102"} 0"#), "{text}");
        assert!(!text.contains("ETHOSCOPE_002"), "{text}");
    }

    #[test]
    fn free_space_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let avail = filesystem_avail(&[
            (BackupKind::Results, dir.path().to_path_buf()),
            (BackupKind::Videos, dir.path().join("missing")),
        ]);
        assert!(avail[&BackupKind::Results] > 0);
        assert!(!avail.contains_key(&BackupKind::Videos));
    }
}
