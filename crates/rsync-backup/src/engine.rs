//! The rsync engine: one job pulls a device's results and videos trees.
//!
//! A job, per tree (`results` only for devices reporting SQLite databases, then `videos`):
//!
//! 1. makes sure `<archive root>/<machine_id>` is a real directory (never a symlink: an older
//!    tool that merged every device's tree into one archive could have planted one);
//! 2. runs rsync from `<source>/<kind>/<machine_id>/` into a staging directory under the state
//!    dir, comparing against the archive copy and the database stubs ([`crate::command`]),
//!    streaming live progress;
//! 3. turns every database it brought (with its `-wal` / `-journal`) into a checked,
//!    self-contained copy, running short rsync re-reads of the databases not yet proven
//!    consistent ([`crate::live`]);
//! 4. promotes what was staged into the archive ([`crate::promote`]), records the database
//!    copies that got there, and adjusts the device's size entry by what changed
//!    ([`crate::sizes`]);
//! 5. turns rsync's exit code, stderr, the database step and the promotion report into a
//!    message; for the results tree, the records of the last good copies name the device's
//!    current or last experiment and its newest copied frame (`experiment`,
//!    `newest_copied_at`).
//!
//! The job's wall-clock limit is the scheduler's: it hands the job its deadline
//! ([`JobContext::deadline`]) and cancels the job there. Every rsync run is bounded by that
//! deadline too, so the whole rsync process group is killed on time even before the cancellation
//! is seen, and a dropped job kills its rsync as well.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etho_daemon::{Engine, JobContext, JobOutcome};
use etho_model::device::{
    is_valid_machine_id, DatabaseReport, DeviceInfo, Ineligible, WAITING_FOR_DATABASES,
};
use etho_model::error_chain;
use etho_model::size::format_bytes;
use etho_model::status::{CopiedExperiment, Progress, ProgressStatus};
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::command::{
    check_bwlimit, reread_args, rsync_args, ssh_command, CommandError, RereadPaths, TransferPaths,
};
use crate::config::{Kind, RsyncBackupConfig};
use crate::live::{Live, LivePaths, LiveReport, PassPlan};
use crate::parse::{
    classify_exit, disk_full, error_summary, exit_meaning, source_dir_missing, vanished_files,
    ExitClass, Itemized, TransferState,
};
use crate::promote::{promote, PromoteReport};
use crate::runner::{kill_strays, run_rsync, Limits, RunEnd, RunResult};
use crate::sizes::{rescan, walk_tree, RescanInfo, SizeChange, SizeIndex, TreeSize};
use crate::source::Transport;
use crate::wire::{fields, EntryExtra, FinalExtra, LiveExtra, Synced, SyncedTree, TreeFigures};

/// How often live progress is published at most.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// A configuration the engine cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Both trees disabled.
    #[error("nothing to back up: both results and videos are disabled")]
    NothingEnabled,
    /// A command-line problem (bwlimit, unquotable path).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A directory that cannot be created or used (the message names it; the cause is the
    /// `source`, so `{:#}` and `error_chain` do not print it twice).
    #[error("{what} {}", .path.display())]
    Dir {
        /// Which directory.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The rsync backup engine. Cheap to clone; clones share the size index.
#[derive(Clone)]
pub struct RsyncEngine {
    inner: Arc<Inner>,
}

struct Inner {
    config: RsyncBackupConfig,
    sizes: Arc<SizeIndex>,
    /// The state dir is not on every archive root's filesystem (promotion copies instead of
    /// renaming).
    cross_device: bool,
}

fn dir_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EngineError {
    let path = path.to_path_buf();
    move |source| EngineError::Dir { what, path, source }
}

fn absolute(what: &'static str, path: &Path) -> Result<PathBuf, EngineError> {
    fs::create_dir_all(path).map_err(dir_error(what, path))?;
    fs::canonicalize(path).map_err(dir_error(what, path))
}

impl RsyncEngine {
    /// Checks the configuration, creates the archive roots and the state directories, and makes
    /// every directory path absolute (rsync resolves `--compare-dest` relative to the
    /// destination otherwise).
    pub fn new(mut config: RsyncBackupConfig) -> Result<RsyncEngine, EngineError> {
        if !config.backup_results && !config.backup_videos {
            return Err(EngineError::NothingEnabled);
        }
        if let Some(limit) = &config.bwlimit {
            check_bwlimit(limit)?;
        }
        etho_daemon::config::private_dir(&config.state_dir)
            .map_err(dir_error("state directory", &config.state_dir))?;
        config.state_dir = absolute("state directory", &config.state_dir)?;
        for sub in [
            "staging",
            "partial",
            "tmp",
            "stubs",
            "live",
            "live-work",
            "rejected",
        ] {
            let p = config.state_dir.join(sub);
            fs::create_dir_all(&p).map_err(dir_error("state directory", &p))?;
        }
        if config.backup_results {
            config.results_dir = absolute("results directory", &config.results_dir)?;
        }
        if config.backup_videos {
            config.videos_dir = absolute("videos directory", &config.videos_dir)?;
        }
        if config.source.transport() == Transport::Ssh {
            ssh_command(&config, None)?;
            if let Some(parent) = config.ssh.known_hosts.parent() {
                fs::create_dir_all(parent).map_err(dir_error("known hosts directory", parent))?;
            }
        }
        let state_dev = fs::metadata(&config.state_dir).map(|m| m.dev()).ok();
        let mut cross_device = false;
        for kind in Kind::ALL {
            if config.enabled(kind) {
                let dev = fs::metadata(config.archive_root(kind))
                    .map(|m| m.dev())
                    .ok();
                if dev != state_dev {
                    cross_device = true;
                    tracing::warn!(
                        "state directory {} is not on the filesystem of {}: finished files are \
                         copied into the archive instead of renamed; put the state directory on \
                         the archive's filesystem",
                        config.state_dir.display(),
                        config.archive_root(kind).display()
                    );
                }
            }
        }
        Ok(RsyncEngine {
            inner: Arc::new(Inner {
                config,
                sizes: Arc::new(SizeIndex::new()),
                cross_device,
            }),
        })
    }

    /// The effective configuration (absolute paths).
    pub fn config(&self) -> &RsyncBackupConfig {
        &self.inner.config
    }

    /// The shared size index.
    pub fn sizes(&self) -> &Arc<SizeIndex> {
        &self.inner.sizes
    }

    /// Whether the state directory is on another filesystem than the archive.
    pub fn cross_device(&self) -> bool {
        self.inner.cross_device
    }

    /// The trees a device gets: results for devices with SQLite databases, videos for all
    /// (each only if enabled).
    pub fn kinds_for(&self, device: &DeviceInfo) -> Vec<Kind> {
        let c = &self.inner.config;
        let mut kinds = Vec::new();
        if c.backup_results && device.has_sqlite() {
            kinds.push(Kind::Results);
        }
        if c.backup_videos {
            kinds.push(Kind::Videos);
        }
        kinds
    }

    /// Measures every device tree of the archive now (on a blocking thread) and updates the size
    /// index.
    pub async fn rescan(&self) -> RescanInfo {
        let inner = Arc::clone(&self.inner);
        let job = tokio::task::spawn_blocking(move || {
            let c = &inner.config;
            let roots: Vec<(Kind, &Path)> = Kind::ALL
                .into_iter()
                .filter(|k| c.enabled(*k))
                .map(|k| (k, c.archive_root(k)))
                .collect();
            rescan(&inner.sizes, &roots)
        });
        job.await.unwrap_or_else(|e| RescanInfo {
            errors: vec![format!("rescan task failed: {e}")],
            ..RescanInfo::default()
        })
    }

    /// Rescans now and then every `rescan_interval` until `shutdown`.
    pub fn spawn_rescan_loop(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            loop {
                let info = tokio::select! {
                    info = engine.rescan() => info,
                    _ = shutdown.cancelled() => return,
                };
                for e in &info.errors {
                    tracing::warn!("archive rescan: {e}");
                }
                tracing::info!(
                    "archive rescan: {} device trees in {:.3} s",
                    info.trees,
                    info.duration_s.unwrap_or(0.0)
                );
                tokio::select! {
                    _ = tokio::time::sleep(engine.inner.config.rescan_interval) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        })
    }

    /// `synced` for a device: one entry per tree the index knows, from `kinds` (and any other
    /// enabled tree the archive holds for it).
    pub fn synced_for(&self, id: &str, kinds: &[Kind]) -> Synced {
        let mut synced = Synced::default();
        for kind in Kind::ALL {
            if !self.inner.config.enabled(kind) {
                continue;
            }
            if let Some(size) = self.inner.sizes.get(kind, id) {
                if kinds.contains(&kind) || size.files > 0 {
                    *synced.tree_mut(kind) = Some(self.synced_tree(kind, id, size));
                }
            }
        }
        synced
    }

    /// The archive directory of one device tree, as shown in `synced`.
    pub fn tree_dir(&self, kind: Kind, id: &str) -> String {
        self.inner
            .config
            .archive_root(kind)
            .join(id)
            .to_string_lossy()
            .into_owned()
    }

    /// One device tree's entry in `synced`.
    pub fn synced_tree(&self, kind: Kind, id: &str, size: TreeSize) -> SyncedTree {
        SyncedTree {
            local_files: size.files,
            directory: self.tree_dir(kind, id),
            disk_usage_bytes: size.bytes,
            disk_usage_human: format_bytes(size.bytes),
        }
    }

    /// Backs up one device (what [`Engine::run`] runs).
    pub async fn backup(&self, device: DeviceInfo, ctx: JobContext) -> JobOutcome {
        let started = Instant::now();
        let config = &self.inner.config;
        if !is_valid_machine_id(&device.id) {
            // DeviceInfo validates ids already; this guards the paths below regardless.
            return JobOutcome::error(format!("refusing invalid machine id {:?}", device.id));
        }
        let kinds = self.kinds_for(&device);
        if kinds.is_empty() {
            return JobOutcome::warning(format!("No valid backup types for device {}", device.id));
        }
        // The scheduler's deadline; what it leaves of the job's time is what messages call the
        // job timeout.
        let timeout = ctx.deadline().saturating_duration_since(started);
        let mut trees = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let step = format!("{}/{}", i + 1, kinds.len());
            let outcome = self.sync_tree(&device, *kind, &step, &ctx, timeout).await;
            let stop = outcome.stopped;
            trees.push(outcome);
            if stop {
                break;
            }
        }
        let mut notes = Vec::new();
        if config.backup_results && !kinds.contains(&Kind::Results) {
            // Not knowing is not "nothing to copy": never a success (upstream HEAD's node shows
            // a new device without its database list for its first seconds).
            notes.push(match device.sqlite_report() {
                DatabaseReport::Unknown => {
                    (Level::Warning, format!("results: {WAITING_FOR_DATABASES}"))
                }
                _ => (
                    Level::Success,
                    "results skipped: the device reports no SQLite database".to_string(),
                ),
            });
        }
        // Nothing measured yet (e.g. the first job after a restart failed before the rescan
        // finished): keep the stored `synced` rather than blanking it.
        let synced = self.synced_for(&device.id, &kinds);
        let synced = (!synced.is_empty()).then(|| Value::Object(fields(&synced)));
        finish(&trees, notes, synced, started.elapsed())
    }

    fn state_path(&self, what: &str, kind: Kind, id: &str) -> PathBuf {
        self.inner
            .config
            .state_dir
            .join(what)
            .join(kind.as_str())
            .join(id)
    }

    fn transfer_paths(&self, device: &DeviceInfo, kind: Kind) -> TransferPaths {
        let config = &self.inner.config;
        let id = &device.id;
        TransferPaths {
            source: config.source.subtree(device, kind),
            transport: config.source.transport(),
            staging: self.state_path("staging", kind, id),
            archive: config.archive_root(kind).join(id),
            stubs: Some(self.state_path("stubs", kind, id)),
            itemize_unchanged: kind == Kind::Results,
            partial: self.state_path("partial", kind, id),
            temp: self.state_path("tmp", kind, id),
            host_key_alias: Some(id.clone()),
        }
    }

    fn live_paths(&self, paths: &TransferPaths, kind: Kind, id: &str) -> LivePaths {
        LivePaths {
            staging: paths.staging.clone(),
            archive: paths.archive.clone(),
            stubs: self.state_path("stubs", kind, id),
            work: self.state_path("live-work", kind, id),
            rejected: self.state_path("rejected", kind, id),
            list_prefix: format!("{}/{id}/", kind.as_str()),
            records: self
                .inner
                .config
                .state_dir
                .join("live")
                .join(kind.as_str())
                .join(format!("{id}.json")),
        }
    }

    async fn sync_tree(
        &self,
        device: &DeviceInfo,
        kind: Kind,
        step: &str,
        ctx: &JobContext,
        timeout: Duration,
    ) -> TreeOutcome {
        let id = device.id.clone();
        let paths = self.transfer_paths(device, kind);
        ctx.report(tree_progress(
            kind,
            step,
            format!("{} ({step}): starting transfer", kind.title()),
            &TransferState::default(),
        ));
        let (prep_paths, live_paths) = (paths.clone(), self.live_paths(&paths, kind, &id));
        let prepared = tokio::task::spawn_blocking(move || {
            prepare_dirs(&prep_paths)?;
            let _ = fs::remove_dir_all(&live_paths.work);
            Ok(Live::new(live_paths, kind == Kind::Results))
        })
        .await
        .unwrap_or_else(|source| {
            Err(TreeError::Task {
                what: "preparing directories",
                source,
            })
        });
        let live = match prepared {
            Ok(live) => live,
            Err(e) => return TreeOutcome::failed(kind, &e),
        };
        let run = match self.first_pass(&paths, &live, kind, step, ctx).await {
            Ok(run) if run.end == RunEnd::Cancelled => return TreeOutcome::cancelled(kind),
            Ok(run) => run,
            Err(e) => return TreeOutcome::failed(kind, &e),
        };
        let live = match self.live_step(device, live, &run, &paths, ctx).await {
            Ok(live) => live,
            Err(e) => return TreeOutcome::failed(kind, &e),
        };
        let (report, live_report, copied) = self.promote_tree(kind, &id, &paths, live, ctx).await;
        // The disk is full: what rsync kept of the file it was receiving would keep it full (and
        // starve the MySQL mirror on the same filesystem) until the next attempt.
        let disk_note = if disk_full(&run.stderr) {
            Some(self.free_partial(kind, &paths).await)
        } else {
            None
        };
        let unsafe_links = &run.state.unsafe_symlinks;
        if !unsafe_links.is_empty() {
            tracing::warn!(
                device = %id,
                "{}: symlinks pointing outside the device's tree were not copied: {}",
                kind.title(),
                list(unsafe_links, 10)
            );
        }
        let mut outcome = describe(kind, &id, timeout, run, report, &live_report);
        outcome.copied = copied.filter(|_| kind == Kind::Results);
        match disk_note {
            Some(note) => outcome.disk_full(note),
            None => outcome,
        }
    }

    /// After a full disk: removes rsync's partial and temporary files of this transfer (the
    /// archive's good copies and the whole files already staged are kept) and says how much space
    /// is left.
    async fn free_partial(&self, kind: Kind, paths: &TransferPaths) -> String {
        let root = self.inner.config.archive_root(kind).to_path_buf();
        let dirs = [paths.partial.clone(), paths.temp.clone()];
        let done = tokio::task::spawn_blocking(move || {
            let mut removed = 0u64;
            for dir in &dirs {
                removed += empty_dir(dir);
            }
            (removed, free_space(&root))
        })
        .await;
        let (removed, free) = done.unwrap_or((0, None));
        let free = match free {
            Some((avail, total)) => format!(
                "{} free of {} on {}",
                format_bytes(avail),
                format_bytes(total),
                self.inner.config.archive_root(kind).display()
            ),
            None => "free space unknown".to_string(),
        };
        format!(
            "the node's disk is full ({free}); the partial file ({}) was removed so the space \
             is not held until the next attempt",
            format_bytes(removed)
        )
    }

    /// The tree's rsync run, with live progress.
    async fn first_pass(
        &self,
        paths: &TransferPaths,
        live: &Live,
        kind: Kind,
        step: &str,
        ctx: &JobContext,
    ) -> Result<RunResult, TreeError> {
        let config = &self.inner.config;
        let args = rsync_args(config, paths)?;
        tracing::debug!("rsync {:?}", args);
        let keep = live.item_filter();
        let mut last_report = Instant::now() - REPORT_EVERY;
        let mut last_file: Option<String> = None;
        let on_update = |st: &TransferState| {
            let file_changed = st.current_file != last_file;
            if file_changed || last_report.elapsed() >= REPORT_EVERY {
                last_report = Instant::now();
                last_file = st.current_file.clone();
                ctx.report(tree_progress(kind, step, live_message(kind, step, st), st));
            }
        };
        self.run(&args, ctx, &keep, on_update).await
    }

    /// Runs rsync with `args` within the job's deadline and cancellation.
    async fn run(
        &self,
        args: &[std::ffi::OsString],
        ctx: &JobContext,
        keep: &(dyn Fn(&Itemized) -> bool + Send + Sync),
        on_update: impl FnMut(&TransferState),
    ) -> Result<RunResult, TreeError> {
        let config = &self.inner.config;
        let program = &config.rsync_program;
        let limits = Limits {
            deadline: ctx.deadline(),
            stall: Some(config.io_timeout),
        };
        run_rsync(program, args, limits, &ctx.cancel, keep, on_update)
            .await
            .map_err(|source| TreeError::Spawn {
                program: program.clone(),
                source,
            })
    }

    /// Decides for every database the first pass brought, re-reads the ones not proven
    /// consistent, and builds the self-contained copies (see [`crate::live`]).
    async fn live_step(
        &self,
        device: &DeviceInfo,
        live: Live,
        first: &RunResult,
        paths: &TransferPaths,
        ctx: &JobContext,
    ) -> Result<Live, TreeError> {
        let vanished = vanished_files(&first.stderr);
        let items = first.items.clone();
        let source_base = self.inner.config.source.base(device);
        let mut live = blocking(live, move |l| l.first_pass(&items, &vanished)).await?;
        // A device that stopped sending data would stall every re-read too.
        let stalled = matches!(first.end, RunEnd::Stalled(_));
        while !stalled && !ctx.cancel.is_cancelled() && Instant::now() < ctx.deadline() {
            let (l, plan) = blocking_with(live, |l| l.plan_reread()).await?;
            live = l;
            let Some(plan) = plan.map_err(TreeError::Reread)? else {
                break;
            };
            let run = self.reread(&source_base, paths, &plan, ctx).await?;
            if let Some(why) = reread_failure(&run) {
                tracing::warn!("re-read pass {} failed: {why}", plan.pass);
                live = blocking(live, move |l| l.reread_failed(why)).await?;
                break;
            }
            let vanished = vanished_files(&run.stderr);
            live = blocking(live, move |l| l.reread_pass(&plan, &run.items, &vanished)).await?;
        }
        let cancel = ctx.cancel.clone();
        blocking(live, move |l| l.build_all(&cancel)).await
    }

    /// One re-read pass: rsync of just the files `plan` lists.
    async fn reread(
        &self,
        source_base: &str,
        paths: &TransferPaths,
        plan: &PassPlan,
        ctx: &JobContext,
    ) -> Result<RunResult, TreeError> {
        let args = reread_args(
            &self.inner.config,
            &RereadPaths {
                source: source_base.to_string(),
                transport: paths.transport,
                list: plan.list.clone(),
                basis: plan.basis.clone(),
                dest: plan.dest.clone(),
                temp: paths.temp.clone(),
                host_key_alias: paths.host_key_alias.clone(),
            },
        )?;
        self.run(&args, ctx, &|_: &Itemized| true, |_| {}).await
    }

    /// Moves the staged files into the archive, records the database copies that got there, and
    /// adjusts the size index. Also returns the newest experiment the records describe.
    async fn promote_tree(
        &self,
        kind: Kind,
        id: &str,
        paths: &TransferPaths,
        mut live: Live,
        ctx: &JobContext,
    ) -> (PromoteReport, LiveReport, Option<CopiedExperiment>) {
        // Promote whatever is complete, whatever rsync's exit: staged files are whole copies.
        let sizes = &self.inner.sizes;
        let known = sizes.has(kind, id);
        // The update is finished on the blocking thread, once the files really moved: aborting
        // this job does not stop the promotion, and a panic in it drops the update unfinished.
        let update = sizes.begin_update(kind, id);
        let cancel = ctx.cancel.clone();
        let (staging, archive_dir) = (paths.staging.clone(), paths.archive.clone());
        let done = tokio::task::spawn_blocking(move || {
            let report = promote(&staging, &archive_dir, &|| cancel.is_cancelled());
            live.commit();
            update.finish(if known {
                SizeChange::Delta(report.delta)
            } else {
                SizeChange::Absolute(walk_tree(&archive_dir).unwrap_or_default())
            });
            (report, live.report().clone(), live.newest_experiment())
        })
        .await;
        done.unwrap_or_else(|e| {
            let r = PromoteReport {
                errors: vec![format!("promotion task failed: {e}")],
                ..PromoteReport::default()
            };
            (r, LiveReport::default(), None)
        })
    }
}

/// Why a re-read pass did not complete (its databases are then held), or `None`: rsync's exit
/// 0, or 24 (a file vanished, which the live step itself looks at).
fn reread_failure(run: &RunResult) -> Option<String> {
    match run.end {
        RunEnd::Exited(0 | 24) => None,
        RunEnd::Exited(code) => Some(format!(
            "rsync code {code} ({}): {}",
            exit_meaning(code),
            error_summary(&run.stderr)
        )),
        RunEnd::Stalled(after) => Some(format!(
            "the device stopped sending data (nothing for {} s)",
            seconds(after)
        )),
        other => Some(format!("{other:?}")),
    }
}

/// Why a tree's step failed before rsync's outcome could be judged. The message is the error
/// with its causes ([`error_chain`]).
#[derive(Debug, thiserror::Error)]
enum TreeError {
    /// A directory of the transfer could not be created.
    #[error("cannot create {}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The device's archive directory is a symlink (an older tool could have planted one).
    #[error("refusing to write through symlink {}: replace it by a directory", .0.display())]
    SymlinkArchive(PathBuf),
    /// The device's archive directory is a file.
    #[error("{} exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A blocking step panicked or was cancelled.
    #[error("{what} failed")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The files of a re-read pass could not be prepared.
    #[error("cannot prepare a re-read")]
    Reread(#[source] std::io::Error),
    /// The rsync command line could not be built.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// rsync could not be started.
    #[error("cannot run {}", .program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `f` on `live` on a blocking thread and hands `live` back.
async fn blocking(
    live: Live,
    f: impl FnOnce(&mut Live) + Send + 'static,
) -> Result<Live, TreeError> {
    blocking_with(live, f).await.map(|(l, ())| l)
}

async fn blocking_with<T: Send + 'static>(
    mut live: Live,
    f: impl FnOnce(&mut Live) -> T + Send + 'static,
) -> Result<(Live, T), TreeError> {
    tokio::task::spawn_blocking(move || {
        let out = f(&mut live);
        (live, out)
    })
    .await
    .map_err(|source| TreeError::Task {
        what: "database step",
        source,
    })
}

fn prepare_dirs(paths: &TransferPaths) -> Result<(), TreeError> {
    let create = |dir: &Path| {
        fs::create_dir_all(dir).map_err(|source| TreeError::Create {
            path: dir.to_path_buf(),
            source,
        })
    };
    if let Some(root) = paths.archive.parent() {
        create(root)?;
    }
    match fs::symlink_metadata(&paths.archive) {
        Ok(m) if m.is_dir() => {}
        Ok(m) if m.file_type().is_symlink() => {
            return Err(TreeError::SymlinkArchive(paths.archive.clone()))
        }
        Ok(_) => return Err(TreeError::NotADirectory(paths.archive.clone())),
        Err(_) => create(&paths.archive)?,
    }
    for dir in [&paths.staging, &paths.partial] {
        create(dir)?;
    }
    // An rsync orphaned by a SIGKILLed daemon must not keep writing next to the new one.
    let mut dest = paths.staging.as_os_str().to_owned();
    dest.push("/");
    kill_strays(&dest);
    // rsync's temporary files of a killed run are useless (the data went to the partial dir if
    // rsync had the chance); start clean.
    let _ = fs::remove_dir_all(&paths.temp);
    create(&paths.temp)
}

/// Removes everything below `dir` (kept itself); returns the bytes of the files removed.
fn empty_dir(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => {
                removed += walk_tree(&path).map(|t| t.bytes).unwrap_or(0);
                let _ = fs::remove_dir_all(&path);
            }
            _ => {
                removed += e.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = fs::remove_file(&path);
            }
        }
    }
    removed
}

/// Space available to us and total size of the filesystem holding `path`.
fn free_space(path: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let block = st.fragment_size();
    Some((
        st.blocks_available().saturating_mul(block),
        st.blocks().saturating_mul(block),
    ))
}

/// A running job's `progress` while it copies one tree.
fn tree_progress(kind: Kind, step: &str, message: String, st: &TransferState) -> Progress {
    Progress {
        status: Some(ProgressStatus::Running),
        message: Some(message),
        extra: fields(&LiveExtra::new(kind, step, st)),
    }
}

fn live_message(kind: Kind, step: &str, st: &TransferState) -> String {
    let mut msg = format!(
        "{} ({step}): {}% - {}",
        kind.title(),
        st.percent,
        format_bytes(st.bytes_transferred)
    );
    if !st.speed.is_empty() {
        msg.push_str(&format!(" at {}", st.speed));
    }
    msg.push_str(&format!(", {} files", st.files_transferred));
    if let Some(f) = &st.current_file {
        msg.push_str(&format!(", current: {f}"));
    }
    msg
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Success,
    Warning,
    Error,
}

impl Level {
    /// The status word of a tree in `progress.trees`.
    fn word(self) -> &'static str {
        match self {
            Level::Success => "success",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

#[derive(Debug, Clone)]
struct TreeOutcome {
    kind: Kind,
    level: Level,
    message: String,
    files: u64,
    bytes: u64,
    /// Cancelled or timed out: the job stops here.
    stopped: bool,
    /// Results tree: the newest experiment its copies hold.
    copied: Option<CopiedExperiment>,
}

impl TreeOutcome {
    fn error(kind: Kind, message: String) -> TreeOutcome {
        TreeOutcome {
            kind,
            level: Level::Error,
            message,
            files: 0,
            bytes: 0,
            stopped: false,
            copied: None,
        }
    }

    fn failed(kind: Kind, error: &TreeError) -> TreeOutcome {
        TreeOutcome::error(kind, error_chain(error))
    }

    /// The node's disk filled up: an error whatever rsync's exit said, with `note` (the space
    /// left, the partial file removed), and the job stops (the next tree would fill it again).
    fn disk_full(self, note: String) -> TreeOutcome {
        TreeOutcome {
            level: Level::Error,
            message: format!("{}; {note}", self.message),
            stopped: true,
            ..self
        }
    }

    /// The job was cancelled during the tree's first pass: the job stops here.
    fn cancelled(kind: Kind) -> TreeOutcome {
        TreeOutcome {
            stopped: true,
            ..TreeOutcome::error(kind, "cancelled; the transfer resumes next cycle".into())
        }
    }
}

fn list(items: &[String], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        s.push_str(&format!(" and {} more", items.len() - max));
    }
    s
}

/// What rsync's end means for the tree: level, message, whether the job stops.
fn describe_end(
    kind: Kind,
    id: &str,
    timeout: Duration,
    run: &RunResult,
) -> (Level, Option<String>, bool) {
    match run.end {
        RunEnd::Exited(code) => match classify_exit(code) {
            ExitClass::Success => (Level::Success, None, false),
            ExitClass::Vanished => (
                Level::Warning,
                Some("some source files vanished during transfer (rsync code 24); everything else was copied".into()),
                false,
            ),
            ExitClass::Failed(_) if source_dir_missing(&run.stderr, kind.as_str(), id) => {
                let level = if kind == Kind::Results {
                    Level::Warning
                } else {
                    Level::Success
                };
                let msg = format!("the device has no {}/{id}/ directory", kind.as_str());
                (level, Some(msg), false)
            }
            ExitClass::Failed(code) => {
                let why = error_summary(&run.stderr);
                let msg = format!(
                    "rsync failed with code {code} ({}){}",
                    exit_meaning(code),
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {why}")
                    }
                );
                (Level::Error, Some(msg), false)
            }
        },
        RunEnd::Signalled(sig) => (
            Level::Error,
            Some(format!(
                "rsync was killed by signal {sig}; the transfer resumes next cycle"
            )),
            false,
        ),
        RunEnd::TimedOut => (
            Level::Error,
            Some(format!(
                "timed out after {} s (job timeout); rsync was stopped and the transfer resumes next cycle",
                seconds(timeout)
            )),
            true,
        ),
        RunEnd::Stalled(after) => (
            Level::Error,
            Some(format!(
                "device stopped sending data: nothing received for {} s (--io-timeout); rsync was \
                 stopped and the transfer resumes next cycle",
                seconds(after)
            )),
            true,
        ),
        RunEnd::Cancelled => (Level::Error, Some("cancelled".into()), true),
    }
}

/// A duration in whole seconds, or tenths below one second.
fn seconds(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 1.0 {
        format!("{secs:.0}")
    } else {
        format!("{secs:.1}")
    }
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// Warnings about databases whose fresh copy was not used.
fn describe_live(live: &LiveReport) -> Vec<String> {
    let mut parts = Vec::new();
    let named = |items: &[crate::live::Held]| {
        let names: Vec<String> = items
            .iter()
            .map(|h| format!("{} ({})", h.path, h.reason))
            .collect();
        list(&names, 5)
    };
    if !live.rejected.is_empty() {
        let n = live.rejected.len();
        parts.push(format!(
            "{n} database cop{} failed a check and {} not used (the last good copy is kept; read again next cycle): {}",
            plural(n, "y", "ies"),
            plural(n, "was", "were"),
            named(&live.rejected)
        ));
    }
    if !live.held.is_empty() {
        let n = live.held.len();
        parts.push(format!(
            "{n} database{} could not be copied consistently (the last good cop{} kept; read again next cycle): {}",
            plural(n, "", "s"),
            plural(n, "y is", "ies are"),
            named(&live.held)
        ));
    }
    if !live.errors.is_empty() {
        parts.push(list(&live.errors, 3));
    }
    parts
}

/// Turns one tree's rsync run, database step and promotion into an outcome (pure).
fn describe(
    kind: Kind,
    id: &str,
    timeout: Duration,
    run: RunResult,
    report: PromoteReport,
    live: &LiveReport,
) -> TreeOutcome {
    let (end_level, end_msg, stopped) = describe_end(kind, id, timeout, &run);
    let warnings = describe_warnings(live, &report);
    let level = if warnings.is_empty() {
        end_level
    } else {
        end_level.max(Level::Warning)
    };
    let mut parts: Vec<String> = end_msg.into_iter().chain(warnings).collect();
    // Noted, not a warning: refusing them is the policy working.
    let unsafe_links = &run.state.unsafe_symlinks;
    if !unsafe_links.is_empty() {
        parts.push(format!(
            "{} symlink{} pointing outside the device's tree not copied ({})",
            unsafe_links.len(),
            plural(unsafe_links.len(), "", "s"),
            list(unsafe_links, 3)
        ));
    }
    if report.cross_device {
        parts.push("state directory on another filesystem: files were copied into place".into());
    }
    if report.interrupted {
        parts.push("promotion interrupted; the rest is moved next cycle".into());
    }
    let bytes: u64 = if report.files > 0 {
        run.state.bytes_transferred
    } else {
        0
    };
    let copied = match (report.files + report.links, level) {
        (0, Level::Success) => "no changes".to_string(),
        (0, _) => "no files copied".to_string(),
        _ => format!(
            "{} file{} copied ({})",
            report.files,
            plural(report.files as usize, "", "s"),
            format_bytes(bytes)
        ),
    };
    let title = kind.title();
    let message = if parts.is_empty() {
        format!("{title}: {copied}")
    } else {
        format!("{title}: {copied}; {}", parts.join("; "))
    };
    TreeOutcome {
        kind,
        level,
        message,
        files: report.files,
        bytes,
        stopped,
        copied: None,
    }
}

/// What makes a tree a warning besides rsync's end: databases not used, entries not promoted.
fn describe_warnings(live: &LiveReport, report: &PromoteReport) -> Vec<String> {
    let mut parts = describe_live(live);
    if !report.errors.is_empty() {
        let n = report.errors.len();
        parts.push(format!(
            "{n} entr{} not moved into the archive: {}",
            plural(n, "y", "ies"),
            list(&report.errors, 3)
        ));
    }
    parts
}

fn finish(
    trees: &[TreeOutcome],
    notes: Vec<(Level, String)>,
    synced: Option<Value>,
    elapsed: Duration,
) -> JobOutcome {
    let level = trees
        .iter()
        .map(|t| t.level)
        .chain(notes.iter().map(|(level, _)| *level))
        .max()
        .unwrap_or(Level::Success);
    let mut details: Vec<String> = trees.iter().map(|t| t.message.clone()).collect();
    details.extend(notes.into_iter().map(|(_, note)| note));
    let secs = elapsed.as_secs_f64();
    let body = details.join("; ");
    let mut outcome = match level {
        Level::Success => JobOutcome::success(format!("Backup completed in {secs:.1}s: {body}")),
        Level::Warning => JobOutcome::warning(format!(
            "Backup completed with warnings in {secs:.1}s: {body}"
        )),
        Level::Error => JobOutcome::error(format!("Backup failed after {secs:.1}s: {body}")),
    };
    outcome.progress.extra = fields(&FinalExtra {
        files_transferred: trees.iter().map(|t| t.files).sum(),
        bytes_transferred: trees.iter().map(|t| t.bytes).sum(),
        duration_s: (secs * 10.0).round() / 10.0,
        trees: trees
            .iter()
            .map(|t| {
                let figures = TreeFigures {
                    status: t.level.word(),
                    files_transferred: t.files,
                    bytes_transferred: t.bytes,
                };
                (t.kind.as_str(), figures)
            })
            .collect(),
    });
    outcome.synced = synced;
    outcome.copied = trees.iter().find_map(|t| t.copied.clone());
    outcome
}

impl Engine for RsyncEngine {
    fn name(&self) -> &'static str {
        "rsync-backup"
    }

    fn accepts(&self, device: &DeviceInfo) -> Result<(), Ineligible> {
        if self.kinds_for(device).is_empty() {
            if device.sqlite_report() == DatabaseReport::Unknown {
                return Err(Ineligible::WaitingForDatabases);
            }
            Err(Ineligible::Engine(format!(
                "Device {} does not have a SQLite database and only results are backed up",
                device.id
            )))
        } else {
            Ok(())
        }
    }

    fn default_extra(&self) -> Map<String, Value> {
        fields(&EntryExtra::default())
    }

    fn run(&self, device: DeviceInfo, ctx: JobContext) -> BoxFuture<'static, JobOutcome> {
        let engine = self.clone();
        Box::pin(async move { engine.backup(device, ctx).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Held;
    use serde_json::json;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    /// The scheduler's default job timeout.
    const TIMEOUT: Duration = Duration::from_secs(600);

    /// An engine with its archive roots and state under `work`.
    fn engine_in(work: &Path) -> RsyncEngine {
        RsyncEngine::new(RsyncBackupConfig::new(
            &work.join("results"),
            &work.join("videos"),
            &work.join("state"),
        ))
        .unwrap()
    }

    fn run(end: RunEnd, stderr: &[&str]) -> RunResult {
        RunResult {
            end,
            state: TransferState {
                bytes_transferred: 2048,
                ..TransferState::default()
            },
            stderr: stderr.iter().map(|s| s.to_string()).collect(),
            elapsed: Duration::from_secs(1),
            items: Vec::new(),
        }
    }

    fn copied(files: u64) -> PromoteReport {
        PromoteReport {
            files,
            ..PromoteReport::default()
        }
    }

    #[test]
    fn exit_codes_become_levels_and_messages() {
        let ok = describe(
            Kind::Results,
            ID,
            TIMEOUT,
            run(RunEnd::Exited(0), &[]),
            copied(2),
            &LiveReport::default(),
        );
        assert_eq!(ok.level, Level::Success);
        assert_eq!(ok.message, "Results: 2 files copied (2.0 KB)");

        let vanished = describe(
            Kind::Videos,
            ID,
            TIMEOUT,
            run(RunEnd::Exited(24), &[]),
            copied(1),
            &LiveReport::default(),
        );
        assert_eq!(vanished.level, Level::Warning);
        assert!(
            vanished.message.contains("vanished"),
            "{}",
            vanished.message
        );

        let failed = describe(
            Kind::Videos,
            ID,
            TIMEOUT,
            run(
                RunEnd::Exited(255),
                &[
                    "ssh: connect to host 10.0.0.5 port 22: Connection timed out",
                    "rsync: connection unexpectedly closed (0 bytes received so far) [Receiver]",
                    "rsync error: unexplained error (code 255) at io.c(232) [Receiver=3.5.0]",
                ],
            ),
            copied(0),
            &LiveReport::default(),
        );
        assert_eq!(failed.level, Level::Error);
        assert!(failed.message.starts_with(
            "Videos: no files copied; rsync failed with code 255 (ssh or connection failure): ssh: connect to host"
        ), "{}", failed.message);
        assert!(failed
            .message
            .ends_with("(code 255) at io.c(232) [Receiver=3.5.0]"));

        let timed_out = describe(
            Kind::Results,
            ID,
            TIMEOUT,
            run(RunEnd::TimedOut, &[]),
            copied(0),
            &LiveReport::default(),
        );
        assert_eq!(timed_out.level, Level::Error);
        assert!(timed_out.stopped);
        assert!(timed_out.message.contains("timed out after 600 s"));
    }

    #[test]
    fn missing_trees_rejected_dbs_and_unsafe_links() {
        let missing = [format!(
            "rsync: [sender] change_dir \"/videos/{ID}\" (in ethoscope_data) failed: No such file or directory (2)"
        )];
        let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
        let v = describe(
            Kind::Videos,
            ID,
            TIMEOUT,
            run(RunEnd::Exited(23), &missing),
            copied(0),
            &LiveReport::default(),
        );
        assert_eq!(v.level, Level::Success, "no videos yet is normal");
        let missing_r: Vec<String> = missing
            .iter()
            .map(|l| l.replace("videos", "results"))
            .collect();
        let missing_r: Vec<&str> = missing_r.iter().map(String::as_str).collect();
        let r = describe(
            Kind::Results,
            ID,
            TIMEOUT,
            run(RunEnd::Exited(23), &missing_r),
            copied(0),
            &LiveReport::default(),
        );
        assert_eq!(
            r.level,
            Level::Warning,
            "a SQLite device without results is odd"
        );

        let live = LiveReport {
            rejected: vec![Held {
                path: "E/ts/x.db".into(),
                reason: "failed the integrity check (integrity_check: malformed)".into(),
            }],
            held: vec![
                Held {
                    path: "E/ts/y.db".into(),
                    reason: "the database changed while it was copied (5 reads)".into(),
                },
                Held {
                    path: "E/ts/z.db".into(),
                    reason: "the WAL was checkpointed and reset while it was copied (5 reads)"
                        .into(),
                },
            ],
            ..LiveReport::default()
        };
        let mut rr = run(RunEnd::Exited(0), &[]);
        rr.state.unsafe_symlinks = vec!["etc".into()];
        let o = describe(Kind::Results, ID, TIMEOUT, rr, copied(1), &live);
        assert_eq!(o.level, Level::Warning);
        assert!(o.message.contains(
            "1 database copy failed a check and was not used (the last good copy is kept; read again next cycle): E/ts/x.db (failed the integrity check (integrity_check: malformed))"
        ), "{}", o.message);
        assert!(o.message.contains(
            "2 databases could not be copied consistently (the last good copies are kept; read again next cycle): E/ts/y.db (the database changed while it was copied (5 reads))"
        ), "{}", o.message);
        assert!(o
            .message
            .contains("1 symlink pointing outside the device's tree not copied (etc)"));
    }

    /// Symlinks out of the device's tree are refused by policy: noted, not a warning.
    #[test]
    fn refused_symlinks_alone_are_a_note() {
        let mut rr = run(RunEnd::Exited(0), &[]);
        rr.state.unsafe_symlinks = vec!["etc".into(), "shadow".into()];
        let o = describe(
            Kind::Results,
            ID,
            TIMEOUT,
            rr,
            copied(1),
            &LiveReport::default(),
        );
        assert_eq!(o.level, Level::Success, "{}", o.message);
        assert_eq!(
            o.message,
            "Results: 1 file copied (2.0 KB); 2 symlinks pointing outside the device's tree not copied (etc, shadow)"
        );
    }

    #[test]
    fn job_outcome_combines_trees() {
        let t = |kind, level, msg: &str| TreeOutcome {
            kind,
            level,
            message: msg.into(),
            files: 1,
            bytes: 10,
            stopped: false,
            copied: None,
        };
        let o = finish(
            &[
                t(Kind::Results, Level::Success, "Results: ok"),
                t(Kind::Videos, Level::Error, "Videos: bad"),
            ],
            vec![],
            None,
            Duration::from_millis(1500),
        );
        assert_eq!(o.status(), ProgressStatus::Error);
        assert_eq!(
            o.progress.message.as_deref(),
            Some("Backup failed after 1.5s: Results: ok; Videos: bad")
        );
        assert_eq!(o.progress.extra["files_transferred"], json!(2));
        assert_eq!(
            o.progress.extra["trees"]["videos"]["status"],
            json!("error")
        );
        assert_eq!(o.synced, None);

        // A device whose database list is not known yet: the videos went fine, but the job is
        // a warning, never a success that skipped the results.
        let o = finish(
            &[t(Kind::Videos, Level::Success, "Videos: no changes")],
            vec![(Level::Warning, format!("results: {WAITING_FOR_DATABASES}"))],
            None,
            Duration::from_millis(140),
        );
        assert_eq!(o.status(), ProgressStatus::Warning);
        assert_eq!(
            o.progress.message.as_deref(),
            Some("Backup completed with warnings in 0.1s: Videos: no changes; results: waiting for the device's database list")
        );
        assert_eq!(o.progress.extra["duration_s"].to_string(), "0.1");
    }
    /// The scheduler aborts a job that outlives its grace period, wherever it is. Aborted while
    /// it promotes, the job's size update still ends with what was moved (the promotion runs
    /// to its end on its blocking thread): the tree is not left busy, so rescans keep measuring
    /// it, and its size is what the archive holds.
    #[tokio::test]
    async fn a_job_aborted_mid_promotion_leaves_a_size_that_rescans_keep_true() {
        use futures::FutureExt;
        let work = tempfile::tempdir().unwrap();
        let engine = engine_in(work.path());
        let device = DeviceInfo::from_entry(
            ID,
            &json!({"id": ID, "name": "ETHOSCOPE_001", "ip": "127.0.0.1", "status": "running"}),
        )
        .unwrap();
        let kind = Kind::Videos;
        let paths = engine.transfer_paths(&device, kind);
        prepare_dirs(&paths).unwrap();
        for i in 0..300 {
            let file = paths.staging.join(format!("d{}/{i}.h264", i % 7));
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(&file, vec![7u8; i]).unwrap();
        }
        engine.rescan().await;
        assert!(engine.sizes().has(kind, ID));
        let live = Live::new(engine.live_paths(&paths, kind, ID), false);
        let ctx = JobContext::detached(ID);
        let job = engine.promote_tree(kind, ID, &paths, live, &ctx);
        // One poll starts the promotion; dropping the future is what aborting the task does.
        assert!(
            job.now_or_never().is_none(),
            "the promotion finished at once"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while engine.sizes().updating(kind, ID) {
            assert!(Instant::now() < deadline, "the tree stayed busy");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let on_disk = walk_tree(&paths.archive).unwrap();
        assert_eq!(on_disk.files, 300);
        assert_eq!(engine.sizes().get(kind, ID), Some(on_disk));
        let info = engine.rescan().await;
        assert_eq!(info.skipped_busy, 0);
        assert_eq!(engine.sizes().get(kind, ID), Some(on_disk));
    }
    /// The wire text of a running job's `progress`, key order included (as the `json!` literals
    /// it was first built with wrote it).
    #[test]
    fn live_progress_wire_shape() {
        let st = TransferState {
            files_transferred: 3,
            bytes_transferred: 1_572_864,
            percent: 42,
            speed: "1.00MB/s".into(),
            current_file: Some("ETHOSCOPE_001/2025-07-10_10-00-00/a.h264".into()),
            ..TransferState::default()
        };
        let p = tree_progress(
            Kind::Videos,
            "2/2",
            live_message(Kind::Videos, "2/2", &st),
            &st,
        );
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"status":"running","message":"Videos (2/2): 42% - 1.5 MB at 1.00MB/s, 3 files, current: ETHOSCOPE_001/2025-07-10_10-00-00/a.h264","phase":"videos","step":"2/2","percent":42.0,"bytes_transferred":1572864,"bytes_transferred_human":"1.5 MB","speed":"1.00MB/s","current_file":"ETHOSCOPE_001/2025-07-10_10-00-00/a.h264","files_transferred":3}"#
        );
        let start = tree_progress(
            Kind::Results,
            "1/2",
            "Results (1/2): starting transfer".into(),
            &TransferState::default(),
        );
        assert_eq!(
            serde_json::to_string(&start).unwrap(),
            r#"{"status":"running","message":"Results (1/2): starting transfer","phase":"results","step":"1/2","percent":0.0,"bytes_transferred":0,"bytes_transferred_human":"0 B","speed":"","current_file":null,"files_transferred":0}"#
        );
    }

    /// The wire text of a finished job's `progress` and `synced`, key order included.
    #[tokio::test]
    async fn finished_job_wire_shape() {
        let t = |kind, level, files, bytes| TreeOutcome {
            kind,
            level,
            message: format!("{kind}: ok"),
            files,
            bytes,
            stopped: false,
            copied: None,
        };
        let work = tempfile::tempdir().unwrap();
        let engine = engine_in(work.path());
        let videos = engine.inner.config.videos_dir.join(ID);
        fs::create_dir_all(&videos).unwrap();
        fs::write(videos.join("a.h264"), vec![0u8; 1536]).unwrap();
        engine.rescan().await;
        let synced = fields(&engine.synced_for(ID, &[Kind::Results, Kind::Videos]));
        let o = finish(
            &[
                t(Kind::Results, Level::Warning, 2, 20),
                t(Kind::Videos, Level::Success, 1, 1536),
            ],
            vec![],
            Some(Value::Object(synced)),
            Duration::from_millis(1234),
        );
        assert_eq!(
            serde_json::to_string(&o.progress).unwrap(),
            r#"{"status":"warning","message":"Backup completed with warnings in 1.2s: results: ok; videos: ok","files_transferred":3,"bytes_transferred":1556,"duration_s":1.2,"trees":{"results":{"status":"warning","files_transferred":2,"bytes_transferred":20},"videos":{"status":"success","files_transferred":1,"bytes_transferred":1536}}}"#
        );
        assert_eq!(
            serde_json::to_string(&o.synced).unwrap(),
            format!(
                r#"{{"videos":{{"local_files":1,"directory":"{}","disk_usage_bytes":1536,"disk_usage_human":"1.5 KB"}}}}"#,
                videos.display()
            )
        );
        assert_eq!(
            serde_json::to_string(&engine.default_extra()).unwrap(),
            r#"{"metadata":{}}"#
        );
    }
}
