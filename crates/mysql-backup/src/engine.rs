//! The mirror as an `etho_daemon::Engine`: eligibility, and a job's result as a status entry.
//!
//! `progress.status` uses the seed's words: `success` when every table was verified equal to the
//! device, `warning` when the experiment is not ready yet, a new experiment started mid-copy or a
//! table had to be skipped, `error` otherwise. The final progress carries the completeness
//! `percent`, rows and bytes copied and the target file; `synced.tracking_db` describes the
//! mirror; `data_duplication` is measured on the mirror after every job, and so are the health
//! facts: `newest_copied_at` and `experiment` (the mirror's newest frame and file), and
//! `rows_behind` (the device's max ids at the end of the job minus the mirror's, `null` before the
//! first finished job or when the device could not be asked).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use etho_daemon::{ArchiveBytes, Copied, Engine, JobContext, JobOutcome};
use etho_model::device::{DatabaseReport, DeviceInfo, Ineligible};
use etho_model::history::RunOutcome;
use etho_model::kind::BackupKind;
use etho_model::status::{round_tenths, CopiedExperiment, Progress, ProgressStatus};
use etho_model::{error_chain, now_epoch};
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::MirrorConfig;
use crate::error::MirrorError;
use crate::mirror::{Mirror, MirrorProgress, MirrorReport};
use crate::schema::Skipped;

/// The MySQL mirror engine (cheap to clone; clones share remembered verification counts).
#[derive(Debug, Clone)]
pub struct MysqlEngine {
    mirror: Arc<Mirror>,
    /// Each device's mirror file size after its last finished job (for the metrics; known
    /// from a device's first job after a start).
    file_sizes: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl MysqlEngine {
    /// An engine with `config`.
    pub fn new(config: MirrorConfig) -> MysqlEngine {
        MysqlEngine {
            mirror: Arc::new(Mirror::new(config)),
            file_sizes: Arc::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MirrorConfig {
        self.mirror.config()
    }

    /// The underlying mirror.
    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }
}

/// `progress` fields of a running job (after `status` and `message`), in wire order.
#[derive(Debug, Serialize)]
struct LiveExtra<'a> {
    percent: f64,
    rows_copied: u64,
    rows_total: u64,
    bytes_copied: u64,
    table: &'a str,
    target_file: &'a str,
}

/// `progress` fields of a finished job (after `status` and `message`), in wire order.
#[derive(Debug, Serialize)]
struct FinalExtra<'a> {
    percent: f64,
    rows_copied: u64,
    bytes_copied: u64,
    target_file: String,
    duration_s: f64,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    skipped_tables: &'a [Skipped],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    mismatches: &'a [String],
}

/// The entry's `synced`: what the mirror holds.
#[derive(Debug, Serialize)]
struct Synced<'a> {
    tracking_db: TrackingDb<'a>,
}

/// `synced.tracking_db`.
#[derive(Debug, Serialize)]
struct TrackingDb<'a> {
    backup_filename: &'a str,
    path: String,
    db_name: &'a str,
    size_bytes: u64,
    rows: u64,
    tables: BTreeMap<&'a str, TableCounts>,
    verified: bool,
    last_backup: i64,
}

/// One table of `synced.tracking_db.tables`.
#[derive(Debug, Serialize)]
struct TableCounts {
    rows: u64,
    remote_rows: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_id: Option<i64>,
}

/// The fields of a serialisable struct, as a JSON object.
fn object_of(value: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Live progress as a status `progress` object.
pub fn live_progress(p: &MirrorProgress) -> Progress {
    let mut progress = Progress::new(
        ProgressStatus::Running,
        if p.table.is_empty() {
            format!("Mirroring to {}", p.target_file)
        } else {
            format!(
                "Copying {}: {} of {} new rows",
                p.table, p.rows_copied, p.rows_total
            )
        },
    );
    progress.extra = object_of(&LiveExtra {
        percent: round1(p.percent),
        rows_copied: p.rows_copied,
        rows_total: p.rows_total,
        bytes_copied: p.bytes_copied,
        table: &p.table,
        target_file: &p.target_file,
    });
    progress
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The outcome word and message of a finished job.
fn verdict(device: &DeviceInfo, report: &MirrorReport) -> (ProgressStatus, String) {
    let secs = report.duration.as_secs_f64();
    let verified = report.tables.len();
    if !report.mismatches.is_empty() {
        (
            ProgressStatus::Error,
            format!(
                "Backup of device {} finished in {secs:.1}s but the mirror differs from the device: {}",
                device.id,
                report.mismatches.join("; ")
            ),
        )
    } else if !report.skipped.is_empty() {
        let skipped: Vec<String> = report
            .skipped
            .iter()
            .map(|s| format!("{:?} ({})", s.table, s.reason))
            .collect();
        (
            ProgressStatus::Warning,
            format!(
                "Backup completed for device {} in {secs:.1}s ({} new rows, {verified} tables verified) but {} table(s) were skipped: {}",
                device.id,
                report.rows_copied,
                report.skipped.len(),
                skipped.join(", ")
            ),
        )
    } else {
        (
            ProgressStatus::Success,
            format!(
                "Backup completed successfully for device {} in {secs:.1}s: {} new rows, {verified} tables verified",
                device.id, report.rows_copied
            ),
        )
    }
}

/// The final status of a finished job.
pub fn outcome_of_report(device: &DeviceInfo, report: &MirrorReport) -> JobOutcome {
    outcome_at(device, report, now_epoch())
}

/// [`outcome_of_report`] at `now` (epoch seconds, the `synced.tracking_db.last_backup`).
fn outcome_at(device: &DeviceInfo, report: &MirrorReport, now: i64) -> JobOutcome {
    let (status, message) = verdict(device, report);
    let mut progress = Progress::new(status.clone(), message);
    let secs = report.duration.as_secs_f64();
    let path = report.relative_path.display().to_string();
    progress.extra = object_of(&FinalExtra {
        percent: round1(report.percent),
        rows_copied: report.rows_copied,
        bytes_copied: report.bytes_copied,
        target_file: path.clone(),
        // One decimal, exactly (`(secs * 10).round() / 10` printed float noise such as
        // 0.13999999999999999).
        duration_s: round_tenths(secs),
        skipped_tables: &report.skipped,
        mismatches: &report.mismatches,
    });
    let synced = Synced {
        tracking_db: TrackingDb {
            backup_filename: &report.backup_filename,
            path,
            db_name: &report.db_name,
            size_bytes: report.file_size,
            rows: report.tables.values().map(|t| t.local_rows).sum(),
            tables: report
                .tables
                .iter()
                .map(|(name, t)| {
                    let counts = TableCounts {
                        rows: t.local_rows,
                        remote_rows: t.remote_rows,
                        max_id: t.local_max_id,
                    };
                    (name.as_str(), counts)
                })
                .collect(),
            verified: report.mismatches.is_empty(),
            last_backup: now,
        },
    };
    let mut extra = Map::new();
    extra.insert(
        "data_duplication".into(),
        Value::Bool(report.data_duplication),
    );
    extra.insert("rows_behind".into(), Value::from(report.rows_behind));
    JobOutcome {
        progress,
        synced: Some(Value::Object(object_of(&synced))),
        extra,
        copied_parts: vec![Copied {
            kind: BackupKind::Mysql,
            outcome: RunOutcome::of(&status),
            duration: report.duration,
            bytes: report.bytes_copied,
            rows: Some(report.rows_copied),
            files: 0,
        }],
        copied: Some(CopiedExperiment {
            experiment: report.backup_filename.clone(),
            newest_copied_at: report.newest_frame_at,
        }),
    }
}

/// The final status of a failed or refused job; the message carries the error's causes.
/// `rows_behind` becomes unknown: the job did not measure it. The copy's `newest_copied_at` stays
/// as the last finished job left it (what it holds did not change).
pub fn outcome_of_error(device: &DeviceInfo, err: &MirrorError, secs: f64) -> JobOutcome {
    let text = error_chain(err);
    let mut outcome = if err.is_warning() {
        JobOutcome::warning(format!(
            "Backup of device {} postponed after {secs:.1}s: {text}",
            device.id
        ))
    } else {
        JobOutcome::error(format!(
            "Backup failed for device {} after {secs:.1}s: {text}",
            device.id
        ))
    };
    outcome.extra.insert("rows_behind".into(), Value::Null);
    outcome
}

impl Engine for MysqlEngine {
    fn name(&self) -> &'static str {
        "mysql-backup"
    }

    fn accepts(&self, device: &DeviceInfo) -> Result<(), Ineligible> {
        // An unknown list is not attempted either (connecting to a database that may not exist
        // is an error, not a backup); the reason says why, in `/status` and in `-e` mode.
        match device.mariadb_report() {
            DatabaseReport::Present => Ok(()),
            DatabaseReport::Absent => Err(Ineligible::NoMariaDb),
            DatabaseReport::Unknown => Err(Ineligible::WaitingForDatabases),
        }
    }

    fn default_extra(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("data_duplication".into(), Value::Bool(false));
        m.insert("rows_behind".into(), Value::Null);
        m
    }

    fn run(&self, device: DeviceInfo, ctx: JobContext) -> BoxFuture<'static, JobOutcome> {
        let mirror = Arc::clone(&self.mirror);
        let file_sizes = Arc::clone(&self.file_sizes);
        Box::pin(async move {
            let started = Instant::now();
            let report_ctx = ctx.clone();
            let report = move |p: &MirrorProgress| report_ctx.report(live_progress(p));
            match mirror.run(&device, &ctx.cancel, &report).await {
                Ok(report) => {
                    file_sizes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(device.id.clone(), report.file_size);
                    outcome_of_report(&device, &report)
                }
                Err(err) => outcome_of_error(&device, &err, started.elapsed().as_secs_f64()),
            }
        })
    }

    fn kinds(&self, _device: &DeviceInfo) -> Vec<BackupKind> {
        vec![BackupKind::Mysql]
    }

    fn archive_bytes(&self) -> Vec<ArchiveBytes> {
        let sizes = self.file_sizes.lock().unwrap_or_else(|p| p.into_inner());
        sizes
            .iter()
            .map(|(id, bytes)| ArchiveBytes {
                device_id: id.clone(),
                kind: BackupKind::Mysql,
                bytes: *bytes,
            })
            .collect()
    }

    fn archive_roots(&self) -> Vec<(BackupKind, PathBuf)> {
        vec![(BackupKind::Mysql, self.config().results_dir.clone())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::TableReport;
    use crate::schema::CopyMode;
    use serde_json::json;
    use std::path::PathBuf;
    use std::time::Duration;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn device() -> DeviceInfo {
        DeviceInfo::from_entry(
            ID,
            &serde_json::json!({"id": ID, "name": "ETHOSCOPE_001", "ip": "127.0.0.10"}),
        )
        .unwrap()
    }

    fn report() -> MirrorReport {
        let by_id = TableReport {
            mode: CopyMode::ById,
            remote_rows: 2200,
            local_rows: 2200,
            remote_max_id: Some(2200),
            local_max_id: Some(2200),
            copied: 700,
        };
        let keyless = TableReport {
            mode: CopyMode::WholeTable,
            remote_rows: 7,
            local_rows: 7,
            remote_max_id: None,
            local_max_id: None,
            copied: 0,
        };
        MirrorReport {
            db_name: "ETHOSCOPE_001_db".into(),
            backup_filename: format!("2025-07-10_10-00-00_{ID}.db"),
            path: PathBuf::from("/results/x.db"),
            relative_path: PathBuf::from(format!(
                "{ID}/ETHOSCOPE_001/2025-07-10_10-00-00/2025-07-10_10-00-00_{ID}.db"
            )),
            tables: [
                ("ROI_1".to_string(), by_id),
                ("VAR_MAP".to_string(), keyless),
            ]
            .into(),
            rows_copied: 700,
            bytes_copied: 56_000,
            skipped: Vec::new(),
            mismatches: Vec::new(),
            data_duplication: false,
            percent: 100.0,
            file_size: 409_600,
            dam_lines: 0,
            newest_frame_at: Some(1_752_141_612.5),
            rows_behind: Some(3),
            duration: Duration::from_millis(139),
        }
    }

    /// The wire text of a finished job's `progress` and `synced`, key order included (as the
    /// `json!` literals this replaced wrote them).
    #[test]
    fn finished_job_wire_shape() {
        let out = outcome_at(&device(), &report(), 1_752_137_404);
        assert_eq!(
            out.copied_parts,
            vec![etho_daemon::Copied {
                kind: BackupKind::Mysql,
                outcome: RunOutcome::Success,
                duration: Duration::from_millis(139),
                bytes: 56_000,
                rows: Some(700),
                files: 0,
            }],
            "the typed numbers for metrics and history"
        );
        let path = format!("{ID}/ETHOSCOPE_001/2025-07-10_10-00-00/2025-07-10_10-00-00_{ID}.db");
        assert_eq!(
            serde_json::to_string(&out.progress).unwrap(),
            format!(
                r#"{{"status":"success","message":"Backup completed successfully for device {ID} in 0.1s: 700 new rows, 2 tables verified","percent":100.0,"rows_copied":700,"bytes_copied":56000,"target_file":"{path}","duration_s":0.1}}"#
            )
        );
        assert_eq!(
            serde_json::to_string(&out.synced).unwrap(),
            format!(
                r#"{{"tracking_db":{{"backup_filename":"2025-07-10_10-00-00_{ID}.db","path":"{path}","db_name":"ETHOSCOPE_001_db","size_bytes":409600,"rows":2207,"tables":{{"ROI_1":{{"rows":2200,"remote_rows":2200,"max_id":2200}},"VAR_MAP":{{"rows":7,"remote_rows":7}}}},"verified":true,"last_backup":1752137404}}}}"#
            )
        );
        assert_eq!(
            serde_json::to_string(&out.extra).unwrap(),
            r#"{"data_duplication":false,"rows_behind":3}"#
        );
        assert_eq!(
            out.copied,
            Some(CopiedExperiment {
                experiment: format!("2025-07-10_10-00-00_{ID}.db"),
                newest_copied_at: Some(1_752_141_612.5)
            })
        );
    }

    #[test]
    fn skipped_and_mismatched_tables_on_the_wire() {
        let mut r = report();
        r.skipped.push(Skipped {
            table: "bad name".into(),
            reason: "not a plain name".into(),
        });
        let out = outcome_at(&device(), &r, 0);
        assert_eq!(out.status(), ProgressStatus::Warning);
        let text = serde_json::to_string(&out.progress).unwrap();
        assert!(
            text.ends_with(
                r#""duration_s":0.1,"skipped_tables":[{"table":"bad name","reason":"not a plain name"}]}"#
            ),
            "{text}"
        );
        r.mismatches
            .push("ROI_1: mirror has 1 rows up to id 1, device 2 rows up to id 2".into());
        let out = outcome_at(&device(), &r, 0);
        assert_eq!(out.status(), ProgressStatus::Error);
        let text = serde_json::to_string(&out.progress).unwrap();
        assert!(
            text.ends_with(r#""skipped_tables":[{"table":"bad name","reason":"not a plain name"}],"mismatches":["ROI_1: mirror has 1 rows up to id 1, device 2 rows up to id 2"]}"#),
            "{text}"
        );
        assert_eq!(out.synced.unwrap()["tracking_db"]["verified"], false);
    }

    #[test]
    fn live_progress_wire_shape() {
        let p = live_progress(&MirrorProgress {
            table: "ROI_1".into(),
            rows_copied: 100,
            rows_total: 300,
            bytes_copied: 8000,
            percent: 33.3333,
            target_file: "a/b.db".into(),
        });
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"status":"running","message":"Copying ROI_1: 100 of 300 new rows","percent":33.3,"rows_copied":100,"rows_total":300,"bytes_copied":8000,"table":"ROI_1","target_file":"a/b.db"}"#
        );
    }

    #[test]
    fn errors_keep_their_causes_in_the_message() {
        let err = MirrorError::NotReady {
            db: "ETHOSCOPE_001_db".into(),
            reason: crate::error::NotReady::EmptyVarMap,
        };
        let out = outcome_of_error(&device(), &err, 1.0);
        assert_eq!(out.status(), ProgressStatus::Warning);
        assert_eq!(out.extra["rows_behind"], Value::Null);
        assert_eq!(out.copied, None, "the copy's facts stay as they were");
        assert_eq!(
            out.progress.message.as_deref(),
            Some(
                "Backup of device 0123456789abcdef0123456789abcdef postponed after 1.0s: database \
                 ETHOSCOPE_001_db is not ready yet: VAR_MAP is empty (no tracking data written \
                 yet); will retry next cycle"
            )
        );
        let err = MirrorError::local(
            "/r/x.db",
            crate::error::LocalError::Io(std::io::Error::other("disk full")),
        );
        let out = outcome_of_error(&device(), &err, 2.0);
        assert_eq!(out.status(), ProgressStatus::Error);
        assert!(out
            .progress
            .message
            .unwrap()
            .ends_with("after 2.0s: SQLite error on /r/x.db: disk full"));
    }

    fn device_with(extra: Value) -> DeviceInfo {
        let mut entry =
            json!({"id": ID, "name": "ETHOSCOPE_001", "ip": "127.0.0.10", "status": "running"});
        if let (Some(e), Some(x)) = (entry.as_object_mut(), extra.as_object()) {
            e.extend(x.clone());
        }
        DeviceInfo::from_entry(ID, &entry).unwrap()
    }

    #[test]
    fn duration_has_one_decimal() {
        let report = MirrorReport {
            db_name: "ETHOSCOPE_001_db".into(),
            backup_filename: format!("2025-07-10_09-40-41_{ID}.db"),
            path: PathBuf::from("/r/x.db"),
            relative_path: PathBuf::from("x.db"),
            tables: Default::default(),
            rows_copied: 0,
            bytes_copied: 0,
            skipped: vec![],
            mismatches: vec![],
            data_duplication: false,
            percent: 100.0,
            file_size: 0,
            dam_lines: 0,
            newest_frame_at: None,
            rows_behind: None,
            duration: Duration::from_millis(140),
        };
        let o = outcome_of_report(&device_with(json!({})), &report);
        // The old rounding gave 0.13999999999999999 here.
        assert_eq!(o.progress.extra["duration_s"].to_string(), "0.1");
    }

    #[test]
    fn eligibility_follows_the_database_report() {
        let engine = MysqlEngine::new(MirrorConfig::new(PathBuf::from("/r")));
        let listed =
            device_with(json!({"databases": {"MariaDB": {"ETHOSCOPE_001_db": {}}, "SQLite": {}}}));
        assert_eq!(engine.accepts(&listed), Ok(()));
        // Upstream HEAD's node before the device's list arrived: the writer type decides.
        let head = device_with(
            json!({"latest_cache": {"result_writer_type": "MySQLResultWriter", "backup_filename": null}}),
        );
        assert_eq!(engine.accepts(&head), Ok(()));
        let sqlite = device_with(json!({"databases": {"MariaDB": {}, "SQLite": {"a.db": {}}}}));
        assert_eq!(engine.accepts(&sqlite), Err(Ineligible::NoMariaDb));
        assert_eq!(
            engine.accepts(&device_with(
                json!({"latest_cache": {"result_writer_type": null}})
            )),
            Err(Ineligible::WaitingForDatabases)
        );
    }
}
