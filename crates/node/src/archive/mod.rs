//! Getting the data back: browse the archive, download files and whole experiments, and serve the
//! `index.txt` that scopr's remote loading reads.
//!
//! A backup is only worth what can be restored from it. The node knows where both daemons write
//! (`folders.results.path` and `folders.video.path`), so it serves them, read-only:
//!
//! - `GET /archive` lists devices → experiments → files from an index kept current by a
//!   background scan ([`index`]), never by walking the tree for a request ([`listing`]);
//! - `GET /archive/<id>/<name>/<date>/<file>` downloads one file, always one consistent version,
//!   with `Range` and `ETag` ([`download`]);
//! - `GET /archive/<id>/<name>/<date>.zip` streams an experiment folder as a zip ([`zipper`]);
//! - `GET /archive/index.txt` is scopr's `path,last_point` index; with
//!   [`ArchiveConfig::write_index`] it is also written atomically to `<results>/index.txt` for
//!   labs that serve the folder over FTP (the only write this module ever makes, and only there).
//!
//! Safety: every URL is parsed into validated ids and names before anything is opened
//! ([`names`]); everything is opened below a root one component at a time with `O_NOFOLLOW`
//! ([`fsx`]); anything refused, absent or odd is a plain 404. Databases are read so that a
//! download started during a mirror write is still a consistent database ([`sqlite`]).
//!
//! What it does not do: write, delete or rename anything in the archive, or follow a link.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::AppState;

pub mod download;
pub mod fsx;
pub mod index;
pub mod listing;
pub mod names;
pub mod sqlite;
pub mod zipper;

pub use index::{Root, Roots};

/// How the archive is served.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// The results and videos roots (what the daemons write to).
    pub roots: Roots,
    /// Time between two scans of the archive (the index is at most this old, plus a scan).
    pub scan_interval: Duration,
    /// A database that keeps changing is re-verified at most this often.
    pub verify_interval: Duration,
    /// A database untouched for this long gets a full `integrity_check` once.
    pub rest_age: Duration,
    /// Also write `<results>/index.txt` (atomically) after each scan that changed it.
    pub write_index: bool,
    /// Private directory for database snapshots (emptied at start).
    pub tmp_dir: PathBuf,
    /// Snapshots taken at once (downloads and zips of mirror databases).
    pub max_snapshots: usize,
    /// Zips streamed at once; more get `503`.
    pub max_zips: usize,
}

impl ArchiveConfig {
    /// Defaults for the given roots, with snapshots in `<state_dir>/archive-tmp`: a scan every
    /// 60 s (backup cycles are 300 s), changing databases re-verified at most every 10 min.
    pub fn new(roots: Roots, state_dir: &std::path::Path) -> ArchiveConfig {
        ArchiveConfig {
            roots,
            scan_interval: Duration::from_secs(60),
            verify_interval: Duration::from_secs(600),
            rest_age: Duration::from_secs(300),
            write_index: false,
            tmp_dir: state_dir.join("archive-tmp"),
            max_snapshots: 2,
            max_zips: 4,
        }
    }
}

/// The archive's shared state: configuration, the published index, and the limits.
pub struct ArchiveService {
    config: ArchiveConfig,
    snapshot_tx: watch::Sender<Arc<index::Snapshot>>,
    snapshots: Arc<Semaphore>,
    zips: Arc<Semaphore>,
    /// Rendered listings of the current index version, by validated query (a dashboard asks the
    /// same few questions every few seconds; the answer only changes with the index).
    rendered: std::sync::Mutex<(u64, HashMap<String, bytes::Bytes>)>,
}

/// Listings kept per index version.
const RENDERED_MAX: usize = 64;

/// Stops the background scan when dropped.
pub struct ArchiveGuard {
    token: CancellationToken,
}

impl Drop for ArchiveGuard {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl ArchiveService {
    /// Prepares the snapshot directory (removing what a previous run left there).
    pub fn new(config: ArchiveConfig) -> anyhow::Result<ArchiveService> {
        use anyhow::Context;
        crate::store::private_dir(&config.tmp_dir)
            .with_context(|| format!("cannot create {}", config.tmp_dir.display()))?;
        if let Ok(entries) = std::fs::read_dir(&config.tmp_dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let (snapshot_tx, _) = watch::channel(Arc::new(index::Snapshot::default()));
        Ok(ArchiveService {
            snapshots: Arc::new(Semaphore::new(config.max_snapshots.max(1))),
            zips: Arc::new(Semaphore::new(config.max_zips.max(1))),
            config,
            snapshot_tx,
            rendered: std::sync::Mutex::new((0, HashMap::new())),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ArchiveConfig {
        &self.config
    }

    /// The current index (empty until the first scan finished).
    pub fn snapshot(&self) -> Arc<index::Snapshot> {
        self.snapshot_tx.borrow().clone()
    }

    /// The index once the first scan has finished (waits up to `timeout`).
    pub async fn ready_snapshot(&self, timeout: Duration) -> Option<Arc<index::Snapshot>> {
        let mut rx = self.snapshot_tx.subscribe();
        let ready = tokio::time::timeout(timeout, rx.wait_for(|s| s.scanned_at > 0)).await;
        match ready {
            Ok(Ok(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// Starts the background scan; it runs until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> ArchiveGuard {
        let token = CancellationToken::new();
        let service = Arc::clone(self);
        let stop = token.clone();
        tokio::spawn(async move { service.scan_loop(stop).await });
        ArchiveGuard { token }
    }

    async fn scan_loop(self: Arc<Self>, token: CancellationToken) {
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_on_cancel = {
            let stop = Arc::clone(&stop);
            let token = token.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            })
        };
        let mut written_index: Option<bytes::Bytes> = None;
        loop {
            let started = Instant::now();
            let next = tokio::time::Instant::now() + self.config.scan_interval;
            let service = Arc::clone(&self);
            let stop_flag = Arc::clone(&stop);
            let round = tokio::task::spawn_blocking(move || service.scan_round(&stop_flag));
            match round.await {
                Ok(()) => {}
                Err(e) => tracing::error!("archive scan failed: {e}"),
            }
            tracing::debug!("archive scan round took {:?}", started.elapsed());
            if self.config.write_index {
                let text = self.snapshot().index_txt.clone();
                if written_index.as_ref() != Some(&text) {
                    let roots = self.config.roots.clone();
                    let body = text.clone();
                    let wrote =
                        tokio::task::spawn_blocking(move || write_index_file(&roots, &body)).await;
                    match wrote {
                        Ok(Ok(())) => written_index = Some(text),
                        Ok(Err(e)) => tracing::warn!("cannot write index.txt: {e}"),
                        Err(e) => tracing::warn!("cannot write index.txt: {e}"),
                    }
                }
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
            }
        }
    }

    /// One scan and analysis round (blocking): publishes after the scan and after the analysis.
    fn scan_round(&self, stop: &AtomicBool) {
        let scanned_at = etho_model::now_epoch();
        let started = Instant::now();
        let previous = self.snapshot();
        let (mut entries, stats) = index::scan(&self.config.roots, &previous.entries);
        let scan_duration = started.elapsed();
        self.publish(entries.clone(), scanned_at, scan_duration, stats.clone());
        let policy = index::CheckPolicy {
            verify_interval: self.config.verify_interval,
            rest_age: self.config.rest_age,
        };
        let deadline = Instant::now() + self.config.scan_interval;
        index::analyse(
            &self.config.roots,
            &mut entries,
            policy,
            etho_model::now_epoch(),
            deadline,
            &self.config.tmp_dir,
            stop,
        );
        self.publish(entries, scanned_at, scan_duration, stats);
    }

    fn publish(
        &self,
        entries: Vec<index::Entry>,
        scanned_at: i64,
        duration: Duration,
        stats: index::ScanStats,
    ) {
        let version = self.snapshot_tx.borrow().version + 1;
        let snapshot = index::Snapshot::new(entries, scanned_at.max(1), duration, stats, version);
        self.snapshot_tx.send_replace(Arc::new(snapshot));
    }
}

/// Writes `<results>/index.txt` through a temporary name and a rename, without following a link
/// at either name.
pub fn write_index_file(roots: &Roots, text: &[u8]) -> std::io::Result<()> {
    use nix::fcntl::{openat, renameat, OFlag};
    use nix::sys::stat::Mode;
    use std::io::Write;
    let root = fsx::open_root(&roots.results)?;
    let tmp = format!(".index.txt.{}.tmp", std::process::id());
    let _ = nix::unistd::unlinkat(&root, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    let fd = openat(
        &root,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(text)?;
    file.sync_all()?;
    renameat(&root, tmp.as_str(), &root, "index.txt")?;
    Ok(())
}

/// Routes of this module, merged into [`crate::app`] when the archive is on.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/archive", get(archive_list))
        .route("/archive/", get(archive_list))
        .route("/archive/{*rest}", get(archive_get))
}

/// How long a request waits for the first scan after the node started.
const FIRST_SCAN_WAIT: Duration = Duration::from_secs(20);

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn service(state: &AppState) -> Option<&Arc<ArchiveService>> {
    state.archive.as_ref()
}

async fn archive_list(
    State(state): State<AppState>,
    params: Result<Query<listing::ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(service) = service(&state) else {
        return not_found();
    };
    let query = match params
        .map_err(|e| e.body_text())
        .and_then(|Query(p)| listing::ListQuery::new(p))
    {
        Ok(q) => q,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": e})),
            )
                .into_response()
        }
    };
    let Some(snapshot) = service.ready_snapshot(FIRST_SCAN_WAIT).await else {
        return unavailable();
    };
    let key = query.link(query.page());
    let cached = {
        let rendered = service
            .rendered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (rendered.0 == snapshot.version)
            .then(|| rendered.1.get(&key).cloned())
            .flatten()
    };
    let body = match cached {
        Some(body) => body,
        None => {
            let body: bytes::Bytes = match serde_json::to_vec(&listing::list(&snapshot, &query)) {
                Ok(v) => v.into(),
                Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            };
            let mut rendered = service
                .rendered
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if rendered.0 != snapshot.version || rendered.1.len() >= RENDERED_MAX {
                *rendered = (snapshot.version, HashMap::new());
            }
            rendered.1.insert(key, body.clone());
            body
        }
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        "the archive index is not built yet\n",
    )
        .into_response()
}

async fn archive_get(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let Some(service) = service(&state).cloned() else {
        return not_found();
    };
    let raw = uri.path().strip_prefix("/archive/").unwrap_or("");
    let Some(request) = names::parse_request(raw) else {
        tracing::debug!("archive: refused {raw:?}");
        return not_found();
    };
    match request {
        names::ArchiveRequest::IndexTxt => index_txt(&service, &headers).await,
        names::ArchiveRequest::File(file) => file_get(&service, file, &headers).await,
        names::ArchiveRequest::Zip(exp) => zip_get(&service, exp).await,
    }
}

async fn index_txt(service: &ArchiveService, headers: &HeaderMap) -> Response {
    let Some(snapshot) = service.ready_snapshot(FIRST_SCAN_WAIT).await else {
        return unavailable();
    };
    let body = snapshot.index_txt.clone();
    let etag = {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        body.hash(&mut h);
        format!("\"i-{:x}\"", h.finish())
    };
    let tag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"i\""));
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| download::etag_matches(v, &etag));
    if not_modified {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::ETAG, tag),
        ],
        body,
    )
        .into_response()
}

async fn file_get(
    service: &Arc<ArchiveService>,
    file: names::FileRef,
    headers: &HeaderMap,
) -> Response {
    // Only databases may need a snapshot; hold a permit while one is opened.
    let permit = if download::is_db(&file.file) {
        match Arc::clone(&service.snapshots).acquire_owned().await {
            Ok(p) => Some(p),
            Err(_) => return not_found(),
        }
    } else {
        None
    };
    let roots = service.config.roots.clone();
    let tmp = service.config.tmp_dir.clone();
    let target = file.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let opened = download::open(&roots, &target, &tmp);
        drop(permit);
        opened
    })
    .await;
    match opened {
        Ok(Ok(opened)) => download::respond(opened, &file.file, headers),
        Ok(Err(e)) if download::is_absent(&e) => not_found(),
        Ok(Err(e)) => {
            tracing::warn!("archive: cannot open {}: {e}", file.path());
            not_found()
        }
        Err(e) => {
            tracing::error!("archive: open task failed: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn zip_get(service: &Arc<ArchiveService>, exp: names::ExperimentRef) -> Response {
    let Ok(permit) = Arc::clone(&service.zips).try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "10")],
            "too many zip downloads at once\n",
        )
            .into_response();
    };
    let roots = service.config.roots.clone();
    let target = exp.clone();
    let members = match tokio::task::spawn_blocking(move || zipper::members(&roots, &target)).await
    {
        Ok(m) if !m.is_empty() => m,
        _ => return not_found(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let tmp = service.config.tmp_dir.clone();
    let snapshots = Arc::clone(&service.snapshots);
    let name = exp.path();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let errors = tx.clone();
        // A snapshot permit is held only while a mirror database is copied.
        let permit = || {
            runtime
                .block_on(Arc::clone(&snapshots).acquire_owned())
                .ok()
        };
        let out = zipper::ChannelWriter::new(tx);
        if let Err(e) = zipper::write(&exp, members, &tmp, &permit, out) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::warn!("archive: zip of {}: {e}", exp.path());
                let _ = errors.blocking_send(Err(e));
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let disposition = format!("attachment; filename=\"{}.zip\"", name.replace('/', "_"));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/zip"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition)
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
