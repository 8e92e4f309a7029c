//! The daemon's own JSON: the engine's `progress` fields of a running and of a finished job, the
//! entry's `synced` and `metadata`, `GET /status`'s `disk_usage_summary`, and `GET /`.
//!
//! Each is a serialisable struct whose field order is the wire order, with upstream's key names
//! (the node and the dashboard read them), so a key cannot be misspelt in one place or change
//! order by accident. Golden tests in [`crate::engine`] and [`crate::api`] pin the exact text.

use std::collections::BTreeMap;

use etho_model::size::format_bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::Kind;
use crate::parse::TransferState;

/// The fields of a serialisable struct, as a JSON object (`progress.extra`, an entry's extra
/// fields). A struct always serialises to an object; anything else gives no fields.
pub fn fields(value: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// `progress` fields of a running job while it copies one tree (after `status` and `message`).
#[derive(Debug, Serialize)]
pub struct LiveExtra<'a> {
    /// The tree: `"results"` or `"videos"`.
    pub phase: &'static str,
    /// Which tree of how many, e.g. `"1/2"`.
    pub step: &'a str,
    /// rsync's overall percent.
    pub percent: f64,
    /// Bytes of file data received.
    pub bytes_transferred: u64,
    /// The same, for people.
    pub bytes_transferred_human: String,
    /// rsync's speed column (empty before its first progress line).
    pub speed: &'a str,
    /// The file being received (`null` before the first).
    pub current_file: Option<&'a str>,
    /// Regular files received.
    pub files_transferred: u64,
}

impl<'a> LiveExtra<'a> {
    /// The fields for tree `kind` (step `step`) from rsync's transfer state.
    pub fn new(kind: Kind, step: &'a str, st: &'a TransferState) -> LiveExtra<'a> {
        LiveExtra {
            phase: kind.as_str(),
            step,
            percent: f64::from(st.percent),
            bytes_transferred: st.bytes_transferred,
            bytes_transferred_human: format_bytes(st.bytes_transferred),
            speed: &st.speed,
            current_file: st.current_file.as_deref(),
            files_transferred: st.files_transferred,
        }
    }
}

/// `progress` fields of a finished job (after `status` and `message`).
#[derive(Debug, Serialize)]
pub struct FinalExtra {
    /// Files moved into the archive, over every tree.
    pub files_transferred: u64,
    /// Bytes rsync received for them.
    pub bytes_transferred: u64,
    /// The job's wall-clock time, one decimal.
    pub duration_s: f64,
    /// Per tree, by name (`results`, `videos`).
    pub trees: BTreeMap<&'static str, TreeFigures>,
}

/// One tree of [`FinalExtra::trees`].
#[derive(Debug, Serialize)]
pub struct TreeFigures {
    /// `"success"`, `"warning"` or `"error"`.
    pub status: &'static str,
    /// Files moved into the archive.
    pub files_transferred: u64,
    /// Bytes rsync received for them.
    pub bytes_transferred: u64,
}

/// An entry's `synced`: one object per tree the size index knows for the device.
#[derive(Debug, Default, Serialize)]
pub struct Synced {
    /// `results/<machine_id>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<SyncedTree>,
    /// `videos/<machine_id>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub videos: Option<SyncedTree>,
}

impl Synced {
    /// No tree known.
    pub fn is_empty(&self) -> bool {
        self.results.is_none() && self.videos.is_none()
    }

    /// The slot of a tree.
    pub fn tree_mut(&mut self, kind: Kind) -> &mut Option<SyncedTree> {
        match kind {
            Kind::Results => &mut self.results,
            Kind::Videos => &mut self.videos,
        }
    }
}

/// One device tree in `synced`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncedTree {
    /// Regular files.
    pub local_files: u64,
    /// The device's archive directory.
    pub directory: String,
    /// Their bytes (`st_size`).
    pub disk_usage_bytes: u64,
    /// The same, for people.
    pub disk_usage_human: String,
}

/// The entry fields the rsync daemon adds: upstream's `metadata`, always empty.
#[derive(Debug, Default, Serialize)]
pub struct EntryExtra {
    /// `{}`.
    pub metadata: Empty,
}

/// An empty JSON object.
#[derive(Debug, Default, Serialize)]
pub struct Empty {}

/// `GET /status`'s `disk_usage_summary`: sums over every device's trees.
#[derive(Debug, Serialize)]
pub struct DiskUsageSummary {
    /// Every `results/<machine_id>`.
    pub results: Total,
    /// Every `videos/<machine_id>`.
    pub videos: Total,
    /// Both.
    pub combined: Total,
}

/// One sum of [`DiskUsageSummary`].
#[derive(Debug, Serialize)]
pub struct Total {
    /// Regular files.
    pub total_files: u64,
    /// Their bytes.
    pub total_size_bytes: u64,
    /// The same, for people.
    pub total_size_human: String,
}

impl Total {
    /// `files` files of `bytes` bytes.
    pub fn new(files: u64, bytes: u64) -> Total {
        Total {
            total_files: files,
            total_size_bytes: bytes,
            total_size_human: format_bytes(bytes),
        }
    }
}

impl DiskUsageSummary {
    /// The summary of per-kind `(files, bytes)` sums.
    pub fn new((rf, rb): (u64, u64), (vf, vb): (u64, u64)) -> DiskUsageSummary {
        DiskUsageSummary {
            results: Total::new(rf, rb),
            videos: Total::new(vf, vb),
            combined: Total::new(rf + vf, rb + vb),
        }
    }
}

/// `GET /`: the service summary (upstream's keys, then the archive roots, the source template
/// and the last rescan).
#[derive(Debug, Serialize)]
pub struct ServiceDocument<'a> {
    /// Always `"running"`: a daemon that answers runs.
    pub status: &'static str,
    /// Newest job end, as text.
    pub last_backup: &'a str,
    /// The engine's name.
    pub service: &'a str,
    /// Epoch seconds the daemon started.
    pub started_at: i64,
    /// Cycles begun.
    pub cycle_number: u64,
    /// Epoch seconds the last cycle started.
    pub last_cycle_start: Option<i64>,
    /// Epoch seconds the last cycle ended.
    pub last_cycle_end: Option<i64>,
    /// Jobs running now.
    pub active_jobs: usize,
    /// How the last discovery went.
    pub discovery: &'a etho_daemon::status::DiscoveryInfo,
    /// The results archive root, when results are backed up.
    pub results_dir: Option<String>,
    /// The videos archive root, when videos are backed up.
    pub videos_dir: Option<String>,
    /// The source template (`rsync://{ip}:873/ethoscope_data`, `ssh://…`).
    pub source: String,
    /// When and how the last full rescan ran.
    pub last_rescan: crate::sizes::RescanInfo,
}
