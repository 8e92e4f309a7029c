//! The mirror as an `etho_daemon::Engine`: eligibility, and a job's result as a status entry.
//!
//! `progress.status` uses the seed's words: `success` when every table was verified equal to the
//! device, `warning` when the experiment is not ready yet, a new experiment started mid-copy or a
//! table had to be skipped, `error` otherwise. The final progress carries the completeness
//! `percent`, rows and bytes copied and the target file; `synced.tracking_db` describes the
//! mirror; `data_duplication` is measured on the mirror after every job.

use std::sync::Arc;
use std::time::Instant;

use etho_daemon::{Engine, JobContext, JobOutcome};
use etho_model::device::{DatabaseReport, DeviceInfo, WAITING_FOR_DATABASES};
use etho_model::now_epoch;
use etho_model::status::{round_tenths, Progress, ProgressStatus};
use futures::future::BoxFuture;
use serde_json::{json, Map, Value};

use crate::config::MirrorConfig;
use crate::error::MirrorError;
use crate::mirror::{Mirror, MirrorProgress, MirrorReport};

/// The MySQL mirror engine (cheap to clone; clones share remembered verification counts).
#[derive(Debug, Clone)]
pub struct MysqlEngine {
    mirror: Arc<Mirror>,
}

impl MysqlEngine {
    /// An engine with `config`.
    pub fn new(config: MirrorConfig) -> MysqlEngine {
        MysqlEngine {
            mirror: Arc::new(Mirror::new(config)),
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
    let e = &mut progress.extra;
    e.insert("percent".into(), json!(round1(p.percent)));
    e.insert("rows_copied".into(), json!(p.rows_copied));
    e.insert("rows_total".into(), json!(p.rows_total));
    e.insert("bytes_copied".into(), json!(p.bytes_copied));
    e.insert("table".into(), json!(p.table));
    e.insert("target_file".into(), json!(p.target_file));
    progress
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The final status of a finished job.
pub fn outcome_of_report(device: &DeviceInfo, report: &MirrorReport) -> JobOutcome {
    let secs = report.duration.as_secs_f64();
    let verified = report.tables.len();
    let (status, message) = if !report.mismatches.is_empty() {
        (
            ProgressStatus::Error,
            format!(
                "Backup of device {} finished in {secs:.1}s but the mirror differs from the device: {}",
                device.id,
                report.mismatches.join("; ")
            ),
        )
    } else if !report.skipped.is_empty() {
        (
            ProgressStatus::Warning,
            format!(
                "Backup completed for device {} in {secs:.1}s ({} new rows, {verified} tables verified) but {} table(s) were skipped: {}",
                device.id,
                report.rows_copied,
                report.skipped.len(),
                report
                    .skipped
                    .iter()
                    .map(|s| format!("{:?} ({})", s.table, s.reason))
                    .collect::<Vec<_>>()
                    .join(", ")
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
    };
    let mut progress = Progress::new(status, message);
    let e = &mut progress.extra;
    e.insert("percent".into(), json!(round1(report.percent)));
    e.insert("rows_copied".into(), json!(report.rows_copied));
    e.insert("bytes_copied".into(), json!(report.bytes_copied));
    e.insert(
        "target_file".into(),
        json!(report.relative_path.display().to_string()),
    );
    e.insert("duration_s".into(), json!(round_tenths(secs)));
    if !report.skipped.is_empty() {
        e.insert(
            "skipped_tables".into(),
            json!(report
                .skipped
                .iter()
                .map(|s| json!({"table": s.table, "reason": s.reason}))
                .collect::<Vec<_>>()),
        );
    }
    if !report.mismatches.is_empty() {
        e.insert("mismatches".into(), json!(report.mismatches));
    }
    let tables: Map<String, Value> = report
        .tables
        .iter()
        .map(|(name, t)| {
            let mut v = json!({"rows": t.local_rows, "remote_rows": t.remote_rows});
            if let Some(max) = t.local_max_id {
                v["max_id"] = json!(max);
            }
            (name.clone(), v)
        })
        .collect();
    let synced = json!({
        "tracking_db": {
            "backup_filename": report.backup_filename,
            "path": report.relative_path.display().to_string(),
            "db_name": report.db_name,
            "size_bytes": report.file_size,
            "rows": report.tables.values().map(|t| t.local_rows).sum::<u64>(),
            "tables": tables,
            "verified": report.mismatches.is_empty(),
            "last_backup": now_epoch(),
        }
    });
    let mut extra = Map::new();
    extra.insert("data_duplication".into(), json!(report.data_duplication));
    JobOutcome {
        progress,
        synced: Some(synced),
        extra,
    }
}

/// The final status of a failed or refused job.
pub fn outcome_of_error(device: &DeviceInfo, err: &MirrorError, secs: f64) -> JobOutcome {
    if err.is_warning() {
        JobOutcome::warning(format!(
            "Backup of device {} postponed after {secs:.1}s: {err}",
            device.id
        ))
    } else {
        JobOutcome::error(format!(
            "Backup failed for device {} after {secs:.1}s: {err}",
            device.id
        ))
    }
}

impl Engine for MysqlEngine {
    fn name(&self) -> &'static str {
        "mysql-backup"
    }

    fn accepts(&self, device: &DeviceInfo) -> Result<(), String> {
        // An unknown list is not attempted either (connecting to a database that may not exist
        // is an error, not a backup); the reason says why, in `/status` and in `-e` mode.
        match device.mariadb_report() {
            DatabaseReport::Present => Ok(()),
            DatabaseReport::Absent => Err("the device reports no MariaDB database".into()),
            DatabaseReport::Unknown => Err(WAITING_FOR_DATABASES.into()),
        }
    }

    fn default_extra(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("data_duplication".into(), json!(false));
        m
    }

    fn run(&self, device: DeviceInfo, ctx: JobContext) -> BoxFuture<'static, JobOutcome> {
        let mirror = Arc::clone(&self.mirror);
        Box::pin(async move {
            let started = Instant::now();
            let report_ctx = ctx.clone();
            let report = move |p: &MirrorProgress| report_ctx.report(live_progress(p));
            match mirror.run(&device, &ctx.cancel, &report).await {
                Ok(report) => outcome_of_report(&device, &report),
                Err(err) => outcome_of_error(&device, &err, started.elapsed().as_secs_f64()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn device(extra: Value) -> DeviceInfo {
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
            duration: Duration::from_millis(140),
        };
        let o = outcome_of_report(&device(json!({})), &report);
        // The old rounding gave 0.13999999999999999 here.
        assert_eq!(o.progress.extra["duration_s"].to_string(), "0.1");
    }

    #[test]
    fn eligibility_follows_the_database_report() {
        let engine = MysqlEngine::new(MirrorConfig::new(PathBuf::from("/r")));
        let listed =
            device(json!({"databases": {"MariaDB": {"ETHOSCOPE_001_db": {}}, "SQLite": {}}}));
        assert_eq!(engine.accepts(&listed), Ok(()));
        // Upstream HEAD's node before the device's list arrived: the writer type decides.
        let head = device(
            json!({"latest_cache": {"result_writer_type": "MySQLResultWriter", "backup_filename": null}}),
        );
        assert_eq!(engine.accepts(&head), Ok(()));
        let sqlite = device(json!({"databases": {"MariaDB": {}, "SQLite": {"a.db": {}}}}));
        assert_eq!(
            engine.accepts(&sqlite),
            Err("the device reports no MariaDB database".to_string())
        );
        assert_eq!(
            engine.accepts(&device(
                json!({"latest_cache": {"result_writer_type": null}})
            )),
            Err("waiting for the device's database list".to_string())
        );
    }
}
