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
    /// Daemon-specific top-level fields (`data_duplication` for MySQL, `metadata` for rsync).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
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
            r#"{"name":"ETHOSCOPE_001","status":"running","started":0,"ended":0,"processing":false,"count":0,"synced":{},"progress":{},"data_duplication":false}"#
        );
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
