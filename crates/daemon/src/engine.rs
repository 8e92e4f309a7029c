//! The seam between the shared daemon runtime and a copy engine.
//!
//! An engine gets one validated device and a [`JobContext`], does its copy, and returns a
//! [`JobOutcome`]. The runtime owns everything around it: status lifecycle, timeouts,
//! cancellation, persistence. Engines must honour `ctx.cancel` promptly: check it between chunks
//! in blocking loops, race awaits against it, and kill child processes, because a timed-out job
//! that keeps writing is how upstream ended up with two writers on one file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etho_model::device::{DeviceInfo, Ineligible};
use etho_model::history::RunOutcome;
use etho_model::kind::BackupKind;
use etho_model::status::{CopiedExperiment, Progress, ProgressStatus};
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::status::StatusTable;

/// A copy engine (MySQL mirror, rsync pull).
pub trait Engine: Send + Sync + 'static {
    /// Short name for logs, e.g. `"mysql-backup"`.
    fn name(&self) -> &'static str;

    /// Engine-specific eligibility on top of [`DeviceInfo::backup_eligibility`]; `Err` says why
    /// not. Devices refused here are not attempted and get no status entry.
    fn accepts(&self, device: &DeviceInfo) -> Result<(), Ineligible>;

    /// Top-level fields of a fresh status entry (`{"data_duplication": false}`, `{"metadata": {}}`).
    fn default_extra(&self) -> Map<String, Value>;

    /// One backup job for one device.
    fn run(&self, device: DeviceInfo, ctx: JobContext) -> BoxFuture<'static, JobOutcome>;

    /// The kinds of backup a job for `device` covers. Runs the scheduler ends itself (timeout,
    /// crash, shutdown) are counted under these kinds.
    fn kinds(&self, _device: &DeviceInfo) -> Vec<BackupKind> {
        Vec::new()
    }

    /// Archive bytes per device and kind, from what the engine already keeps in memory (never a
    /// walk of the archive: this is read on every metrics scrape).
    fn archive_bytes(&self) -> Vec<ArchiveBytes> {
        Vec::new()
    }

    /// The archive root of each kind this engine writes (their filesystems' free space is
    /// sampled in the background for the metrics).
    fn archive_roots(&self) -> Vec<(BackupKind, PathBuf)> {
        Vec::new()
    }
}

/// The archive size of one device and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveBytes {
    /// The device.
    pub device_id: String,
    /// Which backup.
    pub kind: BackupKind,
    /// Bytes on the node.
    pub bytes: u64,
}

/// What one part of a job copied: one kind of backup, with its own outcome and duration (the
/// rsync engine copies results and videos in one job, each with its own rsync run).
#[derive(Debug, Clone, PartialEq)]
pub struct Copied {
    /// Which backup.
    pub kind: BackupKind,
    /// How this part ended.
    pub outcome: RunOutcome,
    /// How long it took.
    pub duration: Duration,
    /// Bytes copied.
    pub bytes: u64,
    /// Rows copied, where the engine counts rows.
    pub rows: Option<u64>,
    /// Files copied.
    pub files: u64,
}

/// The job timeout of a [`JobContext::detached`] context (upstream's 600 s).
pub const DETACHED_TIMEOUT: Duration = Duration::from_secs(600);

/// What a running job can see and do besides copying.
#[derive(Clone)]
pub struct JobContext {
    /// Cancelled when the job times out or the daemon shuts down.
    pub cancel: CancellationToken,
    deadline: Instant,
    device_id: String,
    status: Arc<StatusTable>,
}

impl JobContext {
    pub(crate) fn new(
        cancel: CancellationToken,
        deadline: Instant,
        device_id: String,
        status: Arc<StatusTable>,
    ) -> Self {
        JobContext {
            cancel,
            deadline,
            device_id,
            status,
        }
    }

    /// A context not attached to any daemon, for engine tests: reports go to a private table
    /// that holds one entry for `device_id`, readable with [`JobContext::current_progress`]; the
    /// deadline is [`DETACHED_TIMEOUT`] from now (see [`JobContext::with_deadline`]).
    pub fn detached(device_id: &str) -> JobContext {
        let status = StatusTable::in_memory(Map::new());
        status.insert_placeholder(device_id);
        JobContext {
            cancel: CancellationToken::new(),
            deadline: Instant::now() + DETACHED_TIMEOUT,
            device_id: device_id.to_string(),
            status: Arc::new(status),
        }
    }

    /// The same context with another deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> JobContext {
        self.deadline = deadline;
        self
    }

    /// When the scheduler stops this job: at this instant it cancels [`JobContext::cancel`],
    /// then aborts the job after its grace period. An engine that runs a child process bounds
    /// it by this deadline, so the child is stopped even if the engine is not polled.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Publishes live progress; `progress.status` is forced to `running`.
    pub fn report(&self, mut progress: Progress) {
        progress.status = Some(ProgressStatus::Running);
        self.status.update_progress(&self.device_id, progress);
    }

    /// The latest progress published for this device (mainly for tests).
    pub fn current_progress(&self) -> Option<Progress> {
        self.status.get(&self.device_id).map(|s| s.progress)
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    /// Final progress: `success`, `warning` or `error`, a message, engine fields.
    pub progress: Progress,
    /// `Some` replaces the entry's `synced`; `None` keeps the previous value.
    pub synced: Option<Value>,
    /// Top-level fields to set on the entry (`data_duplication`, `metadata`).
    pub extra: Map<String, Value>,
    /// What the job copied, per kind of backup, as numbers (metrics and run history). Empty
    /// when the job ended before copying (the run is then counted under
    /// [`Engine::kinds`]).
    pub copied_parts: Vec<Copied>,
    /// `Some` replaces the entry's `experiment` and `newest_copied_at`; `None` keeps them (a
    /// failed job leaves the copy as the last one described it).
    pub copied: Option<CopiedExperiment>,
}

impl JobOutcome {
    fn with(status: ProgressStatus, message: impl Into<String>) -> JobOutcome {
        JobOutcome {
            progress: Progress::new(status, message),
            synced: None,
            extra: Map::new(),
            copied_parts: Vec::new(),
            copied: None,
        }
    }

    /// The same outcome with what the job copied.
    pub fn with_copied_parts(mut self, parts: Vec<Copied>) -> JobOutcome {
        self.copied_parts = parts;
        self
    }

    /// A successful job.
    pub fn success(message: impl Into<String>) -> JobOutcome {
        Self::with(ProgressStatus::Success, message)
    }

    /// A job that finished with something to look at.
    pub fn warning(message: impl Into<String>) -> JobOutcome {
        Self::with(ProgressStatus::Warning, message)
    }

    /// A failed job.
    pub fn error(message: impl Into<String>) -> JobOutcome {
        Self::with(ProgressStatus::Error, message)
    }

    /// The outcome word.
    pub fn status(&self) -> ProgressStatus {
        self.progress
            .status
            .clone()
            .unwrap_or(ProgressStatus::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_context_keeps_reports() {
        let ctx = JobContext::detached("0123456789abcdef0123456789abcdef");
        assert_eq!(ctx.current_progress(), Some(Progress::default()));
        assert!(ctx.deadline() > Instant::now() + DETACHED_TIMEOUT / 2);
        let soon = Instant::now() + Duration::from_secs(1);
        assert_eq!(ctx.clone().with_deadline(soon).deadline(), soon);
        ctx.report(Progress::new(ProgressStatus::Success, "half way"));
        let p = ctx.current_progress().unwrap();
        assert_eq!(
            p.status,
            Some(ProgressStatus::Running),
            "live progress is always running"
        );
        assert_eq!(p.message.as_deref(), Some("half way"));
    }
}
