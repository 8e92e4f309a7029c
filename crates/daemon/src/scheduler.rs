//! Backup cycles: discovery, eligibility, the worker limit, one job per device, timeouts.
//!
//! Upstream's loop waited for every job of a cycle in turn with a per-future 600 s timeout that
//! could not stop anything, so a hung job kept writing while the next cycle started a second one
//! on the same file. Here:
//! - a cycle starts every `interval` measured from the previous cycle's start, and does not wait
//!   for the previous cycle's jobs;
//! - a device with a live job (running or queued for a worker) is never queued again;
//! - at most `max_jobs` jobs run at once (a semaphore);
//! - each job has a wall-clock limit: its cancellation token is cancelled, the engine gets a short
//!   grace period to stop, then the task is aborted; the device stays busy until the task has
//!   really ended;
//! - a job that panics is reported as an error, and the loop goes on.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etho_model::device::{DeviceInfo, Ineligible};
use etho_model::status::{DeviceStatus, ProgressStatus};
use etho_model::{error_chain, now_epoch};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::discovery::{Discovered, DiscoveryError, NodeClient};
use crate::engine::{Engine, JobContext, JobOutcome};
use crate::history::HistoryStore;
use crate::metrics::DaemonMetrics;
use crate::status::{DiscoverySource, StatusTable};

/// Default time a cancelled job may take to stop before its task is aborted.
pub const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// Timing and concurrency of backup cycles.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Time between cycle starts (upstream: 300 s).
    pub interval: Duration,
    /// Jobs running at once (upstream: 4).
    pub max_jobs: usize,
    /// Wall-clock limit of one job (upstream: 600 s, never enforced). The scheduler alone
    /// enforces it; engines see it as [`JobContext::deadline`].
    pub job_timeout: Duration,
    /// How long a cancelled job may take to stop before its task is aborted.
    pub cancel_grace: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            interval: Duration::from_secs(300),
            max_jobs: 4,
            job_timeout: Duration::from_secs(600),
            cancel_grace: CANCEL_GRACE,
        }
    }
}

/// Everything a daemon needs besides its engine.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The node: `host`, `host:port` or an `http://` URL.
    pub node: String,
    /// Where `status.db` (and engine state) lives; `None` keeps status in memory only.
    pub state_dir: Option<PathBuf>,
    /// Cycle timing.
    pub scheduler: SchedulerConfig,
    /// Timeout of one `GET /devices`.
    pub discovery_timeout: Duration,
    /// Pause between the (up to 3) discovery attempts of one cycle.
    pub discovery_retry_delay: Duration,
}

impl DaemonConfig {
    /// A config with upstream's defaults for `node`.
    pub fn new(node: impl Into<String>) -> DaemonConfig {
        DaemonConfig {
            node: node.into(),
            state_dir: None,
            scheduler: SchedulerConfig::default(),
            discovery_timeout: Duration::from_secs(10),
            discovery_retry_delay: Duration::from_secs(2),
        }
    }
}

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CycleReport {
    /// Discovery error (with its causes), if the node could not be asked.
    pub discovery_error: Option<String>,
    /// Devices whose job this cycle ran, with the outcome word.
    pub jobs: Vec<(String, ProgressStatus)>,
    /// Devices skipped because a job for them was still live.
    pub busy: Vec<String>,
    /// Devices not attempted, with the reason.
    pub skipped: Vec<(String, Ineligible)>,
}

/// A backup daemon: one engine, its status table, and the cycle loop.
pub struct Daemon {
    engine: Arc<dyn Engine>,
    config: DaemonConfig,
    node: NodeClient,
    status: Arc<StatusTable>,
    live: Mutex<HashSet<String>>,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    metrics: Arc<DaemonMetrics>,
    history: HistoryStore,
}

/// Removes a device from the live set when the job's task is really over (even on panic).
struct LiveGuard<'a> {
    daemon: &'a Daemon,
    id: String,
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.daemon.live_set().remove(&self.id);
    }
}

impl Daemon {
    /// Builds a daemon; opens the persisted status when `state_dir` is set.
    pub fn new(engine: Arc<dyn Engine>, config: DaemonConfig) -> anyhow::Result<Arc<Daemon>> {
        let extra = engine.default_extra();
        let status = match &config.state_dir {
            Some(dir) => StatusTable::open(dir, extra)?,
            None => StatusTable::in_memory(extra),
        };
        status.set_interval(config.scheduler.interval);
        let node = NodeClient::new(&config.node, config.discovery_timeout)?;
        status.update_service(|s| s.discovery.node_url = node.url().to_string());
        let slots = Arc::new(Semaphore::new(config.scheduler.max_jobs.max(1)));
        let history = match &config.state_dir {
            Some(dir) => HistoryStore::open(dir)?,
            None => HistoryStore::in_memory(),
        };
        let metrics = Arc::new(DaemonMetrics::new(Arc::clone(&engine)));
        let known = status
            .snapshot()
            .into_iter()
            .map(|(id, st)| (id, st.name))
            .collect();
        let streaks = history.failure_streaks_blocking().unwrap_or_else(|err| {
            tracing::warn!("cannot read the run history's failure streaks: {err}");
            Default::default()
        });
        metrics.seed(&known, &streaks);
        Ok(Arc::new(Daemon {
            engine,
            config,
            node,
            status: Arc::new(status),
            live: Mutex::new(HashSet::new()),
            slots,
            shutdown: CancellationToken::new(),
            metrics,
            history,
        }))
    }

    /// The daemon's metrics (`GET /metrics`).
    pub fn metrics(&self) -> &Arc<DaemonMetrics> {
        &self.metrics
    }

    /// The run history (`GET /history/<device_id>`).
    pub fn history(&self) -> &HistoryStore {
        &self.history
    }

    /// The status table.
    pub fn status(&self) -> &StatusTable {
        &self.status
    }

    /// The configuration.
    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }

    /// The engine's name.
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// Devices with a live job (running or waiting for a worker).
    pub fn live_jobs(&self) -> usize {
        self.live_set().len()
    }

    fn live_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cancels every running job and stops new ones.
    pub fn shut_down(&self) {
        self.shutdown.cancel();
    }

    /// Asks the node for devices (up to 3 attempts, fewer if the daemon shuts down), recording
    /// the result in the service info. `Err` is the last attempt's error.
    pub async fn discover(&self) -> Result<Discovered, DiscoveryError> {
        let mut attempts = 0;
        let err = loop {
            match self.node.fetch().await {
                Ok(found) => {
                    self.record_discovery(&found);
                    return Ok(found);
                }
                Err(err) => {
                    tracing::warn!("device discovery failed: {}", error_chain(&err));
                    attempts += 1;
                    if attempts == 3 {
                        break err;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.discovery_retry_delay) => {}
                        _ = self.shutdown.cancelled() => break err,
                    }
                }
            }
        };
        let text = error_chain(&err);
        self.status.update_service(|s| {
            s.discovery.source = DiscoverySource::Failed;
            s.discovery.last_time = Some(now_epoch());
            s.discovery.last_error = Some(text);
        });
        Err(err)
    }

    fn record_discovery(&self, found: &Discovered) {
        for r in &found.rejected {
            tracing::warn!("node device entry rejected: {r}");
        }
        let (n, rejected) = (found.devices.len(), found.rejected.clone());
        self.status.update_service(|s| {
            s.discovery.source = DiscoverySource::Node;
            s.discovery.last_time = Some(now_epoch());
            s.discovery.total_discovered = n;
            s.discovery.rejected = rejected;
            s.discovery.last_error = None;
        });
    }

    /// Why this daemon would not back `device` up, if it would not.
    pub fn ineligibility(&self, device: &DeviceInfo) -> Option<Ineligible> {
        device
            .backup_eligibility()
            .and_then(|()| self.engine.accepts(device))
            .err()
    }

    /// Runs one cycle and waits for the jobs it started.
    pub async fn run_cycle(self: &Arc<Self>) -> CycleReport {
        let started = now_epoch();
        self.status.update_service(|s| {
            s.cycle_number += 1;
            s.last_cycle_start = Some(started);
        });
        let mut report = CycleReport::default();
        let found = match self.discover().await {
            Ok(found) => found,
            Err(err) => {
                report.discovery_error = Some(error_chain(&err));
                return report;
            }
        };
        let mut jobs = Vec::new();
        let mut skipped = std::collections::BTreeMap::new();
        for device in found.devices {
            self.status.refresh_device(&device);
            if let Some(reason) = self.ineligibility(&device) {
                tracing::debug!("{} ({}) not attempted: {reason}", device.name, device.id);
                skipped.insert(device.id.clone(), reason.to_string());
                report.skipped.push((device.id.clone(), reason));
                continue;
            }
            let id = device.id.clone();
            if !self.live_set().insert(id.clone()) {
                tracing::info!(
                    "{} ({id}) still has a job from an earlier cycle; not queued again",
                    device.name
                );
                report.busy.push(id);
                continue;
            }
            let daemon = Arc::clone(self);
            jobs.push(tokio::spawn(async move {
                let guard = LiveGuard {
                    daemon: &daemon,
                    id: id.clone(),
                };
                let outcome = daemon.run_job(device).await;
                drop(guard);
                (id, outcome)
            }));
        }
        let eligible = jobs.len() + report.busy.len();
        self.status.update_service(|s| {
            s.discovery.eligible = eligible;
            s.discovery.skipped = skipped;
        });
        for job in jobs {
            match job.await {
                Ok((id, status)) => report.jobs.push((id, status)),
                Err(err) => tracing::error!("backup job task failed: {err}"),
            }
        }
        let ended = now_epoch();
        let local = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
        self.status.update_service(|s| {
            s.last_cycle_end = Some(ended);
            s.last_backup = local;
        });
        report
    }

    /// Runs one job for `device` through the whole status lifecycle, honouring the worker limit,
    /// the timeout and shutdown. The caller must hold the device's live-set entry.
    async fn run_job(&self, device: DeviceInfo) -> ProgressStatus {
        let Ok(_permit) = Arc::clone(&self.slots).acquire_owned().await else {
            return ProgressStatus::Error;
        };
        if self.shutdown.is_cancelled() {
            return ProgressStatus::Error;
        }
        let id = device.id.clone();
        let name = device.name.clone();
        self.status.start_job(&device);
        self.metrics.job_started(&id);
        let kinds = self.engine.kinds(&device);
        let (start, started) = (now_epoch_f64(), Instant::now());
        tracing::info!("{} backup of {name} ({id}) started", self.engine.name());
        let cancel = self.shutdown.child_token();
        let timeout = self.config.scheduler.job_timeout;
        let deadline = Instant::now() + timeout;
        let ctx = JobContext::new(
            cancel.clone(),
            deadline,
            id.clone(),
            Arc::clone(&self.status),
        );
        let mut task = tokio::spawn(self.engine.run(device, ctx));
        let grace = self.config.scheduler.cancel_grace;
        let (outcome, killed) = tokio::select! {
            joined = &mut task => (joined_outcome(joined), false),
            _ = tokio::time::sleep_until(deadline.into()) => {
                stop_task(&cancel, &mut task, grace).await;
                (JobOutcome::error(format!("Backup timed out after {} seconds", timeout.as_secs_f64())), true)
            }
            _ = self.shutdown.cancelled() => {
                stop_task(&cancel, &mut task, grace).await;
                (JobOutcome::error("Backup interrupted: the daemon is shutting down"), true)
            }
        };
        let word = outcome.status();
        let message = outcome.progress.message.clone().unwrap_or_default();
        match word {
            ProgressStatus::Success => tracing::info!("{name} ({id}): {message}"),
            ProgressStatus::Warning => tracing::warn!("{name} ({id}): {message}"),
            _ => tracing::error!("{name} ({id}): {message}"),
        }
        self.metrics
            .job_finished(&id, &name, &kinds, &outcome, started.elapsed());
        let run = run_record(&outcome, &kinds, start, now_epoch_f64());
        self.status.finish_job(&id, outcome, killed);
        self.history.record(&id, run).await;
        word
    }

    /// Runs one job for `device` now (one-shot mode and tests). Returns `None` when a job for
    /// the device is already live.
    pub async fn run_device(self: &Arc<Self>, device: DeviceInfo) -> Option<DeviceStatus> {
        let id = device.id.clone();
        if !self.live_set().insert(id.clone()) {
            return None;
        }
        let guard = LiveGuard {
            daemon: self,
            id: id.clone(),
        };
        self.run_job(device).await;
        drop(guard);
        self.status.get(&id)
    }

    /// The daemon loop: a cycle every `interval` from cycle start until `shutdown`; then cancels
    /// running jobs and waits for them to stop.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let interval = self.config.scheduler.interval;
        let mut cycles = tokio::task::JoinSet::new();
        let sampler = tokio::spawn(crate::metrics::sample_filesystems(
            Arc::clone(&self.engine),
            Arc::clone(&self.metrics),
            shutdown.clone(),
        ));
        loop {
            let next = tokio::time::Instant::now() + interval;
            let daemon = Arc::clone(&self);
            cycles.spawn(async move {
                let report = daemon.run_cycle().await;
                if let Some(err) = report.discovery_error {
                    tracing::warn!("cycle skipped: {err}");
                }
            });
            // Reap finished cycles; a panicking cycle is logged and the loop goes on.
            while let Some(res) = cycles.try_join_next() {
                if let Err(err) = res {
                    tracing::error!("backup cycle failed: {err}");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        self.shut_down();
        let _ = tokio::time::timeout(self.config.scheduler.cancel_grace * 2, async {
            while cycles.join_next().await.is_some() {}
        })
        .await;
        sampler.abort();
        self.status.flush().await;
    }
}

/// Unix seconds now, to the millisecond (run history).
fn now_epoch_f64() -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    (now * 1000.0).round() / 1000.0
}

/// The history line of a finished job: totals over what it copied.
fn run_record(
    outcome: &JobOutcome,
    kinds: &[etho_model::kind::BackupKind],
    start: f64,
    end: f64,
) -> etho_model::history::RunRecord {
    let parts = &outcome.copied_parts;
    let rows = parts.iter().filter_map(|p| p.rows).reduce(|a, b| a + b);
    etho_model::history::RunRecord {
        start,
        end: end.max(start),
        outcome: etho_model::history::RunOutcome::of(&outcome.status()),
        message: outcome.progress.message.clone().unwrap_or_default(),
        bytes: parts.iter().map(|p| p.bytes).sum(),
        rows,
        files: parts.iter().map(|p| p.files).sum(),
        kinds: if parts.is_empty() {
            kinds.to_vec()
        } else {
            parts.iter().map(|p| p.kind).collect()
        },
    }
}

fn joined_outcome(joined: Result<JobOutcome, tokio::task::JoinError>) -> JobOutcome {
    match joined {
        Ok(outcome) => outcome,
        Err(err) if err.is_panic() => {
            let payload = err.into_panic();
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            JobOutcome::error(format!("Backup job crashed: {msg}"))
        }
        Err(_) => JobOutcome::error("Backup job was cancelled"),
    }
}

/// Cancels a job, gives it `grace` to return, then aborts it and waits for the task to be gone.
async fn stop_task(
    cancel: &CancellationToken,
    task: &mut tokio::task::JoinHandle<JobOutcome>,
    grace: Duration,
) {
    cancel.cancel();
    if tokio::time::timeout(grace, &mut *task).await.is_err() {
        task.abort();
        let _ = task.await;
    }
}
