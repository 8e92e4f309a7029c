//! The per-device status entry both backup daemons publish on `GET /status`.
//!
//! Wire shape (reference: MySQL daemon §6.1, rsync daemon §2.3), key order as upstream:
//! `{name, status, started, ended, processing, count, synced, progress, <extra>}` where the MySQL
//! daemon's extra is `data_duplication` and the rsync daemon's is `metadata`.
//!
//! `status` is the *device's* run status (refreshed every cycle, unlike upstream); the backup
//! outcome lives in `progress.status`, one of the seed's words: `running` while a job runs, then
//! `success`, `warning` or `error`. The node only counts `success` (and upstream's newer
//! `completed`) as OK.
//!
//! After the seed's fields and the daemon's extra come the facts the node's health view needs
//! (issue 10, additive): `last_success` and `last_success_started` (the newest job that ended
//! `success` or `warning`, persisted), `failures` (jobs ended `error` since then), `interval_s`
//! (the daemon's cycle interval), and what the copy holds: `newest_copied_at` (the newest
//! tracked frame of the device's current or last experiment in the node's copy, see
//! [`newest_frame_at`]) and `experiment` (that experiment's file name).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Outcome vocabulary of `progress.status`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProgressStatus {
    /// A job is running now.
    Running,
    /// The last job copied everything and verified it.
    Success,
    /// The last job finished but something needs attention (not ready yet, vanished files, a live
    /// database that failed its integrity check and was kept from the previous copy, ...).
    Warning,
    /// The last job failed.
    Error,
    /// Any other word a foreign daemon may send (`info`, `completed`, `initializing`, ...), kept.
    Other(String),
}

impl ProgressStatus {
    /// The wire word.
    pub fn as_str(&self) -> &str {
        match self {
            ProgressStatus::Running => "running",
            ProgressStatus::Success => "success",
            ProgressStatus::Warning => "warning",
            ProgressStatus::Error => "error",
            ProgressStatus::Other(s) => s,
        }
    }

    /// Parses a wire word; unknown words become [`ProgressStatus::Other`].
    pub fn parse(s: &str) -> ProgressStatus {
        match s {
            "running" => ProgressStatus::Running,
            "success" => ProgressStatus::Success,
            "warning" => ProgressStatus::Warning,
            "error" => ProgressStatus::Error,
            other => ProgressStatus::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for ProgressStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ProgressStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ProgressStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ProgressStatus::parse(&s))
    }
}

/// `seconds` rounded to a tenth, for `progress.duration_s`: the nearest multiple of 0.1, as the
/// double whose shortest form has at most one decimal (`0.1`, `1.4`, never
/// `0.13999999999999999`). Negative and non-finite inputs give 0.
pub fn round_tenths(seconds: f64) -> f64 {
    if !seconds.is_finite() || seconds <= 0.0 {
        return 0.0;
    }
    // `tenths` is an exact integer; one division by ten rounds correctly to the double nearest
    // `tenths / 10`, which is also the double the one-decimal literal parses to.
    let tenths = (seconds * 10.0).round();
    tenths / 10.0
}

/// `progress`: `{}` before the first job, then `{"status", "message", ...extra}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Outcome word; absent before the first job.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<ProgressStatus>,
    /// Human message.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<String>,
    /// Engine-specific live fields (percent, bytes, current file, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Progress {
    /// A progress with a status word and message and no extra fields.
    pub fn new(status: ProgressStatus, message: impl Into<String>) -> Progress {
        Progress {
            status: Some(status),
            message: Some(message.into()),
            extra: Map::new(),
        }
    }
}

/// One device's entry in a daemon's `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// Device name, refreshed from discovery every cycle.
    pub name: String,
    /// Device run status, refreshed from discovery every cycle.
    pub status: String,
    /// Epoch seconds when the latest job started (0 before the first).
    pub started: i64,
    /// Epoch seconds when the latest job ended; 0 while running or before the first job; -1 when
    /// the job was killed (timeout, daemon restart), as upstream.
    pub ended: i64,
    /// True while a job runs.
    pub processing: bool,
    /// Number of jobs started for this device (persisted across restarts).
    pub count: u64,
    /// What the mirror holds (engine-specific object).
    #[serde(default = "empty_object")]
    pub synced: Value,
    /// Outcome or live progress of the latest job.
    #[serde(default)]
    pub progress: Progress,
    /// Daemon-specific top-level fields (`data_duplication` and `rows_behind` for MySQL,
    /// `metadata` for rsync).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Epoch seconds at the end of the newest job that ended `success` or `warning`.
    #[serde(default)]
    pub last_success: Option<i64>,
    /// Epoch seconds at the start of that job: a copy made after this instant is in it.
    #[serde(default)]
    pub last_success_started: Option<i64>,
    /// Jobs that ended `error` since the last success (or since the first job).
    #[serde(default)]
    pub failures: u64,
    /// The daemon's cycle interval in seconds (not persisted: always the running daemon's).
    #[serde(default)]
    pub interval_s: Option<f64>,
    /// The copy's newest tracked frame (epoch seconds), see [`newest_frame_at`].
    #[serde(default)]
    pub newest_copied_at: Option<f64>,
    /// The experiment file (`backup_filename`) `newest_copied_at` refers to.
    #[serde(default)]
    pub experiment: Option<String>,
}

/// What a finished job found in the node's copy of a device's current or last experiment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CopiedExperiment {
    /// The experiment's file name (`backup_filename`).
    pub experiment: String,
    /// Its newest tracked frame in the copy (epoch seconds); `None` without ROI rows.
    pub newest_copied_at: Option<f64>,
}

/// The wall-clock time of an experiment's newest frame: `METADATA.date_time` (epoch seconds,
/// written by the device as text such as `"1752141600.0"`) plus the largest ROI `t`
/// (milliseconds since the experiment started) divided by 1000. `None` when either is unknown
/// or not a finite number.
pub fn newest_frame_at(date_time: Option<&str>, last_t_ms: Option<i64>) -> Option<f64> {
    let start: f64 = date_time?.trim().parse().ok()?;
    let at = start + last_t_ms? as f64 / 1000.0;
    at.is_finite().then_some(at)
}

/// True for a tracking table name `ROI_<n>` (not `ROI_MAP`): the tables whose `t` is a frame time.
pub fn is_roi_table(name: &str) -> bool {
    name.strip_prefix("ROI_")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The start of an experiment from its file name (`YYYY-MM-DD_HH-MM-SS_<machine_id>.db`, UTC),
/// in epoch seconds; `None` for any other name.
pub fn experiment_start(file_name: &str) -> Option<i64> {
    let stamp = file_name.get(..19)?;
    let b = stamp.as_bytes();
    let shape_ok = b.iter().enumerate().all(|(i, c)| match i {
        4 | 7 => *c == b'-',
        10 => *c == b'_',
        13 | 16 => *c == b'-',
        _ => c.is_ascii_digit(),
    });
    if !shape_ok {
        return None;
    }
    let num = |r: std::ops::Range<usize>| stamp[r].parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

impl DeviceStatus {
    /// A fresh entry for a device that has not been backed up yet.
    pub fn new(name: impl Into<String>, status: impl Into<String>) -> DeviceStatus {
        DeviceStatus {
            name: name.into(),
            status: status.into(),
            started: 0,
            ended: 0,
            processing: false,
            count: 0,
            synced: empty_object(),
            progress: Progress::default(),
            extra: Map::new(),
            last_success: None,
            last_success_started: None,
            failures: 0,
            interval_s: None,
            newest_copied_at: None,
            experiment: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_shape_and_key_order() {
        let mut s = DeviceStatus::new("ETHOSCOPE_001", "running");
        s.extra.insert("data_duplication".into(), json!(false));
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(
            text,
            r#"{"name":"ETHOSCOPE_001","status":"running","started":0,"ended":0,"processing":false,"count":0,"synced":{},"progress":{},"data_duplication":false,"last_success":null,"last_success_started":null,"failures":0,"interval_s":null,"newest_copied_at":null,"experiment":null}"#
        );
        // Health facts are typed fields, never swallowed by the flattened extra.
        let back: DeviceStatus = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        let older = r#"{"name":"A","status":"s","started":1,"ended":2,"processing":false,"count":1,"data_duplication":true}"#;
        let old: DeviceStatus = serde_json::from_str(older).unwrap();
        assert_eq!((old.last_success, old.failures), (None, 0));
        assert_eq!(old.extra.len(), 1);
    }

    #[test]
    fn newest_frame_is_the_start_plus_the_largest_t() {
        assert_eq!(
            newest_frame_at(Some("1752141600.0"), Some(12_345)),
            Some(1_752_141_612.345)
        );
        assert_eq!(
            newest_frame_at(Some(" 1752141600 "), Some(0)),
            Some(1_752_141_600.0)
        );
        for (dt, t) in [
            (None, Some(1)),
            (Some("1752141600"), None),
            (Some("yesterday"), Some(1)),
            (Some("inf"), Some(1)),
            (Some("NaN"), Some(1)),
        ] {
            assert_eq!(newest_frame_at(dt, t), None, "{dt:?} {t:?}");
        }
    }

    #[test]
    fn roi_tables() {
        assert!(is_roi_table("ROI_1") && is_roi_table("ROI_12"));
        for other in ["ROI_MAP", "ROI_", "ROI_1a", "roi_1", "XROI_1"] {
            assert!(!is_roi_table(other), "{other}");
        }
    }

    #[test]
    fn experiment_start_reads_the_utc_stamp_of_a_file_name() {
        let id = "0123456789abcdef0123456789abcdef";
        for (name, want) in [
            (format!("2025-07-10_10-00-00_{id}.db"), Some(1_752_141_600)),
            (format!("2000-02-29_00-00-00_{id}.db"), Some(951_782_400)),
            ("1970-01-01_00-00-00".to_string(), Some(0)),
            ("2100-02-28_23-59-59_x.db".to_string(), Some(4_107_542_399)),
            ("2025-13-10_10-00-00_x.db".to_string(), None),
            ("2025-07-10 10:00:00_x.db".to_string(), None),
            ("2025-07-1".to_string(), None),
            ("é025-07-10_10-00-00_x.db".to_string(), None),
        ] {
            assert_eq!(experiment_start(&name), want, "{name}");
        }
    }

    #[test]
    fn durations_serialize_with_one_decimal() {
        // Rounding to hundredths first and dividing again gave 0.13999999999999999.
        assert_eq!(
            json!(((0.14_f64 * 100.0).round() / 10.0) / 10.0).to_string(),
            "0.13999999999999999"
        );
        assert_eq!(json!(round_tenths(0.14)).to_string(), "0.1");
        assert_eq!(json!(round_tenths(1.36)).to_string(), "1.4");
        assert_eq!(json!(round_tenths(12.0)).to_string(), "12.0");
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(round_tenths(bad), 0.0);
        }
        for millis in 0..200_000u32 {
            let text = json!(round_tenths(f64::from(millis) / 1000.0)).to_string();
            let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
            assert!(decimals <= 1, "{millis} ms -> {text}");
        }
    }

    #[test]
    fn progress_round_trips_foreign_words_and_extra() {
        let v = json!({"status": "completed", "message": "ok", "backup_status": 100.0});
        let p: Progress = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(p.status, Some(ProgressStatus::Other("completed".into())));
        assert_eq!(serde_json::to_value(&p).unwrap(), v);
        let p = Progress::new(ProgressStatus::Success, "done");
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"status": "success", "message": "done"})
        );
    }
}
