//! One mirror job: the device's MariaDB `<NAME>_db` → one SQLite file per experiment.
//!
//! Sequence (fixes for upstream bugs in brackets):
//! 1. Connect (bounded, cancellable) and open a consistent-snapshot read-only transaction.
//! 2. Not ready yet (no `VAR_MAP` rows): stop with a warning, nothing written [A6].
//! 3. The target file comes from the device's own `METADATA.backup_filename`, validated against
//!    the device id and kept under the results directory [A3, B2].
//! 4. The local writer thread locks and opens the file and completes the schema [A7, A5].
//! 5. In the same snapshot: remote `MAX(id)` of every id-keyed table (a remote max below the
//!    local one for the same file is an error, never a silent skip [A3]), the remote row counts
//!    needed for verification, and the full content of keyless tables, made equal as multisets
//!    [A1, A2].
//! 6. Id-keyed tables: rows above the local max, up to the snapshot's max, streamed in chunks of
//!    `chunk_rows`. Each chunk is its own short remote transaction that re-checks the experiment's
//!    file name, so a device starting a new experiment is never mixed into this file and never
//!    waits long for our metadata lock [A3, C1].
//! 7. Commit, update the DAM dump, verify per table (row count and max id), measure
//!    `data_duplication` [A6, A8, A1].
//!
//! Cancellation is checked on every awaited step and in the writer between batches, so a
//! wall-clock timeout really stops the job [A7].
//!
//! Every decision of steps 5 to 7 (ranges, regressions, reused counts, chunk bounds, the verdict)
//! is a pure function of [`crate::plan`]; this module only does the I/O around them.
//!
//! Verification counts are kept between jobs per file (keyed by the file's size and mtime), so a
//! cycle with nothing new does not rescan millions of rows: it costs a connection, a few small
//! queries and reads of the keyless tables.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etho_model::device::DeviceInfo;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Params, Row};
use rusqlite::types::Value as Lite;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::MirrorConfig;
use crate::convert::{to_sqlite, value_size};
use crate::error::{ConnectFailure, Inconsistency, MirrorError, NotReady, TargetError};
use crate::local::{self, Cmd, Fingerprint, Prepared, WriterSetup, WriterSummary};
pub use crate::plan::TableReport;
use crate::plan::{
    completeness, id_bounds_sql, indexed_integers, keep_copyable, rows_behind, verify,
    verify_keyless, Chunks, CopyPlan, Counts, IdTable, Measured, TableCopy,
};
use crate::schema::{
    mysql_quote, plan_tables, CopyMode, RemoteColumn, RemoteTable, Skipped, TablePlan,
};
use crate::target::{plan_target, Target};

/// Rows per batch sent to the writer.
const BATCH_ROWS: usize = 2048;
/// Bytes per batch sent to the writer (a batch of snapshots stays small).
const BATCH_BYTES: usize = 1 << 20;
/// Batches in flight between the remote stream and the writer.
const CHANNEL_BATCHES: usize = 4;
/// Minimum time between two live progress reports.
const REPORT_EVERY: Duration = Duration::from_millis(200);

/// Live progress of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MirrorProgress {
    /// Table being copied.
    pub table: String,
    /// Rows copied so far in this job.
    pub rows_copied: u64,
    /// Rows this job has to copy (from id ranges; an upper bound).
    pub rows_total: u64,
    /// Bytes copied so far in this job.
    pub bytes_copied: u64,
    /// `rows_copied / rows_total`, in percent.
    pub percent: f64,
    /// Mirror file, relative to the results directory.
    pub target_file: String,
}

/// What a finished job did and verified.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MirrorReport {
    /// The device database, `<NAME>_db`.
    pub db_name: String,
    /// The experiment file name (from the device's METADATA).
    pub backup_filename: String,
    /// Absolute path of the mirror.
    pub path: PathBuf,
    /// Path relative to the results directory.
    pub relative_path: PathBuf,
    /// Per table.
    pub tables: BTreeMap<String, TableReport>,
    /// Rows copied into id-keyed tables.
    pub rows_copied: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// Tables not mirrored, with the reason.
    pub skipped: Vec<Skipped>,
    /// Verification failures (empty when the mirror equals the device).
    pub mismatches: Vec<String>,
    /// The mirror's METADATA or VAR_MAP holds duplicate rows.
    pub data_duplication: bool,
    /// Mirror rows / device rows over all tables, in percent.
    pub percent: f64,
    /// Mirror file size.
    pub file_size: u64,
    /// Lines appended to the DAM dump.
    pub dam_lines: u64,
    /// The mirror's newest tracked frame, epoch seconds (`None` without ROI rows).
    pub newest_frame_at: Option<f64>,
    /// Rows the device had beyond the mirror when the job ended ([`crate::plan::rows_behind`]);
    /// `None` when the device could not be asked.
    pub rows_behind: Option<u64>,
    /// Wall-clock time of the job.
    pub duration: Duration,
}

/// Verified counts of one mirror file, valid while the file keeps this fingerprint.
#[derive(Debug, Clone)]
struct FileCache {
    fingerprint: Fingerprint,
    tables: HashMap<String, Counts>,
}

/// The mirror engine: configuration plus verification counts remembered between jobs.
#[derive(Debug)]
pub struct Mirror {
    config: MirrorConfig,
    cache: Mutex<HashMap<PathBuf, FileCache>>,
}

/// One job with a fresh engine (no remembered counts). See [`Mirror::run`].
pub async fn mirror_device(
    config: &MirrorConfig,
    device: &DeviceInfo,
    cancel: &CancellationToken,
    progress: &(dyn Fn(&MirrorProgress) + Send + Sync),
) -> Result<MirrorReport, MirrorError> {
    Mirror::new(config.clone())
        .run(device, cancel, progress)
        .await
}

/// "Table doesn't exist" (ER_NO_SUCH_TABLE).
fn is_missing_table(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1146)
}

/// The experiment's file name from the distinct `METADATA.backup_filename` values (`None`: no
/// METADATA table). Exactly one value names the file; anything else leaves it unknown.
fn experiment_file(db: &str, names: Option<Vec<String>>) -> Result<String, MirrorError> {
    let Some(names) = names else {
        return Err(TargetError::NoMetadata { db: db.to_string() }.into());
    };
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(TargetError::NoFileName { db: db.to_string() }.into()),
        many => Err(TargetError::ManyFileNames {
            db: db.to_string(),
            count: many.len(),
            first: many.iter().take(3).cloned().collect(),
        }
        .into()),
    }
}

/// Groups `information_schema` rows into tables: `kinds` are `(TABLE_NAME, TABLE_TYPE)`, `rows`
/// are `(TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, COLUMN_KEY)` ordered by table then position. Only
/// base tables are kept (views are not data).
fn group_columns(
    kinds: Vec<(String, String)>,
    rows: Vec<(String, String, String, String)>,
) -> Vec<RemoteTable> {
    let base: HashSet<String> = kinds
        .into_iter()
        .filter(|(_, kind)| kind == "BASE TABLE")
        .map(|(name, _)| name)
        .collect();
    let mut tables: Vec<RemoteTable> = Vec::new();
    for (table, column, column_type, key) in rows.into_iter().filter(|r| base.contains(&r.0)) {
        if tables.last().map(|t| &t.name) != Some(&table) {
            tables.push(RemoteTable {
                name: table,
                columns: Vec::new(),
            });
        }
        if let Some(t) = tables.last_mut() {
            t.columns.push(RemoteColumn {
                name: column,
                column_type,
                primary: key == "PRI",
            });
        }
    }
    tables
}

/// The device's MariaDB connection, with its address for messages.
struct Remote {
    conn: Conn,
    addr: String,
}

impl Remote {
    /// Connects to `<device>:<port>/<db>`, bounded by the connect timeout and cancellable.
    async fn connect(
        config: &MirrorConfig,
        device: &DeviceInfo,
        db: &str,
        cancel: &CancellationToken,
    ) -> Result<Remote, MirrorError> {
        let addr = SocketAddr::new(device.ip, config.mysql_port).to_string();
        let opts = OptsBuilder::default()
            .ip_or_hostname(device.ip.to_string())
            .tcp_port(config.mysql_port)
            .user(Some(config.mysql_user.clone()))
            .pass(Some(config.mysql_password.clone()))
            .db_name(Some(db.to_string()))
            .prefer_socket(false)
            .stmt_cache_size(64);
        let failed = |source: ConnectFailure| MirrorError::Connect {
            addr: addr.clone(),
            db: db.to_string(),
            source,
        };
        let conn = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(MirrorError::Cancelled { rows_copied: 0 }),
            r = tokio::time::timeout(config.connect_timeout, Conn::new(opts)) => match r {
                Err(_) => return Err(failed(ConnectFailure::Timeout(config.connect_timeout))),
                Ok(Err(e)) => return Err(failed(e.into())),
                Ok(Ok(conn)) => conn,
            },
        };
        Ok(Remote { conn, addr })
    }

    fn error(addr: &str, what: &str, source: mysql_async::Error) -> MirrorError {
        MirrorError::Remote {
            addr: addr.to_string(),
            what: what.to_string(),
            source,
        }
    }

    async fn guard_addr<T>(
        addr: &str,
        cancel: &CancellationToken,
        what: &str,
        fut: impl Future<Output = mysql_async::Result<T>>,
    ) -> Result<T, MirrorError> {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(MirrorError::Cancelled { rows_copied: 0 }),
            r = fut => r.map_err(|e| Remote::error(addr, what, e)),
        }
    }

    async fn drop_query(
        &mut self,
        cancel: &CancellationToken,
        what: &str,
        sql: &str,
    ) -> Result<(), MirrorError> {
        let fut = self.conn.query_drop(sql);
        Remote::guard_addr(&self.addr, cancel, what, fut).await
    }

    async fn begin_snapshot(&mut self, cancel: &CancellationToken) -> Result<(), MirrorError> {
        self.drop_query(
            cancel,
            "starting a snapshot",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
        )
        .await
    }

    async fn commit(&mut self, cancel: &CancellationToken) -> Result<(), MirrorError> {
        self.drop_query(cancel, "ending a snapshot", "COMMIT").await
    }

    /// Not ready yet: the experiment has no VAR_MAP table or no rows in it.
    async fn check_ready(
        &mut self,
        db: &str,
        cancel: &CancellationToken,
    ) -> Result<(), MirrorError> {
        let vars = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(MirrorError::Cancelled { rows_copied: 0 }),
            r = self.conn.query_first::<u8, _>("SELECT EXISTS (SELECT 1 FROM VAR_MAP)") => r,
        };
        let not_ready = |reason| MirrorError::NotReady {
            db: db.to_string(),
            reason,
        };
        match vars {
            Ok(Some(1)) => Ok(()),
            Ok(_) => Err(not_ready(NotReady::EmptyVarMap)),
            Err(e) if is_missing_table(&e) => Err(not_ready(NotReady::NoVarMap)),
            Err(e) => Err(Remote::error(&self.addr, "checking VAR_MAP", e)),
        }
    }

    async fn tables(
        &mut self,
        cancel: &CancellationToken,
        db: &str,
    ) -> Result<Vec<RemoteTable>, MirrorError> {
        let addr = self.addr.clone();
        // Two plain queries with a constant schema name: MariaDB then reads only this database's
        // table definitions (joining COLUMNS with TABLES costs ten times more). The name is a
        // checked plain name; it is escaped anyway.
        let literal = format!("'{}'", db.replace('\\', "\\\\").replace('\'', "''"));
        let kinds: Vec<(String, String)> = Remote::guard_addr(
            &addr,
            cancel,
            "listing tables",
            self.conn.query(format!(
                "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = {literal}"
            )),
        )
        .await?;
        let rows: Vec<(String, String, String, String)> = Remote::guard_addr(
            &addr,
            cancel,
            "listing columns",
            self.conn.query(format!(
                "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, COLUMN_KEY \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {literal} \
                 ORDER BY TABLE_NAME, ORDINAL_POSITION"
            )),
        )
        .await?;
        Ok(group_columns(kinds, rows))
    }

    /// The distinct non-NULL `METADATA.backup_filename` values; `None` when there is no METADATA
    /// table.
    async fn backup_filenames(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<String>>, MirrorError> {
        // Raw rows: the driver's typed conversion panics on a value that is not UTF-8.
        let values = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(MirrorError::Cancelled { rows_copied: 0 }),
            r = self.conn.query::<Row, _>(
                "SELECT value FROM METADATA WHERE field = 'backup_filename'",
            ) => r,
        };
        let values = match values {
            Ok(v) => v,
            Err(e) if is_missing_table(&e) => return Ok(None),
            Err(e) => {
                return Err(Remote::error(
                    &self.addr,
                    "reading METADATA.backup_filename",
                    e,
                ))
            }
        };
        let mut names: Vec<String> = values
            .into_iter()
            .filter_map(|row| match row.unwrap().into_iter().next()? {
                mysql_async::Value::NULL => None,
                // Not UTF-8 (or not text): shown lossily, and refused as a file name later.
                mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                other => Some(format!("{other:?}")),
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(Some(names))
    }

    /// `(index, values...)` rows of a `UNION ALL` query built from validated identifiers, as
    /// integers by index. Read as raw values: the driver's typed conversion panics on a value
    /// that does not fit (an unsigned id above 2^63 in an `i64`).
    async fn indexed_integers(
        &mut self,
        cancel: &CancellationToken,
        what: &str,
        sql: String,
    ) -> Result<HashMap<usize, Result<Vec<Option<i128>>, String>>, MirrorError> {
        let rows: Vec<Row> =
            Remote::guard_addr(&self.addr, cancel, what, self.conn.query(sql)).await?;
        Ok(indexed_integers(
            rows.into_iter().map(Row::unwrap).collect(),
        ))
    }
}

/// Where the writer thread is, seen from the async side.
struct WriterHandle {
    tx: Option<mpsc::Sender<Cmd>>,
    join: Option<tokio::task::JoinHandle<Result<WriterSummary, MirrorError>>>,
}

impl WriterHandle {
    /// Starts the writer thread on `target`'s file.
    fn spawn(config: &MirrorConfig, target: &Target, cancel: &CancellationToken) -> WriterHandle {
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let join = local::spawn(
            WriterSetup {
                results_dir: config.results_dir.clone(),
                relative_dir: target.relative_dir.clone(),
                file_name: target.file_name.clone(),
                commit_rows: config.commit_rows,
                commit_bytes: config.commit_bytes,
                commit_interval: config.commit_interval,
            },
            rx,
            cancel.clone(),
        );
        WriterHandle {
            tx: Some(tx),
            join: Some(join),
        }
    }

    async fn failure(&mut self) -> MirrorError {
        self.tx = None;
        match self.join.take() {
            Some(join) => match join.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => MirrorError::Internal("the SQLite writer stopped early"),
                Err(e) => MirrorError::WriterCrashed(e),
            },
            None => MirrorError::Internal("the SQLite writer is gone"),
        }
    }

    async fn send(&mut self, cmd: Cmd) -> Result<(), MirrorError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(cmd).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.failure().await)
        }
    }

    async fn ask<T>(
        &mut self,
        make: impl FnOnce(oneshot::Sender<T>) -> Cmd,
    ) -> Result<T, MirrorError> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply)).await?;
        match answer.await {
            Ok(v) => Ok(v),
            Err(_) => Err(self.failure().await),
        }
    }

    /// Closes the channel and waits for the thread (and its file lock) to be gone.
    async fn close(&mut self) -> Result<WriterSummary, MirrorError> {
        self.tx = None;
        match self.join.take() {
            Some(join) => join.await.map_err(MirrorError::WriterCrashed)?,
            None => Ok(WriterSummary::default()),
        }
    }
}

struct Progressor<'a> {
    progress: &'a (dyn Fn(&MirrorProgress) + Send + Sync),
    live: MirrorProgress,
    last_report: Instant,
}

impl Progressor<'_> {
    /// Counts a batch of copied rows and reports (at most every [`REPORT_EVERY`]).
    fn add(&mut self, rows: usize, bytes: usize) {
        self.live.rows_copied += rows as u64;
        self.live.bytes_copied += bytes as u64;
        self.report(false);
    }

    fn report(&mut self, force: bool) {
        if force || self.last_report.elapsed() >= REPORT_EVERY {
            self.live.percent = if self.live.rows_total == 0 {
                100.0
            } else {
                (self.live.rows_copied as f64 * 100.0 / self.live.rows_total as f64).min(100.0)
            };
            (self.progress)(&self.live);
            self.last_report = Instant::now();
        }
    }
}

/// Rows on their way to the writer, sent when [`BATCH_ROWS`] or [`BATCH_BYTES`] is reached.
struct Batch {
    values: Vec<Lite>,
    width: usize,
    rows: usize,
    bytes: usize,
}

impl Batch {
    fn new(width: usize) -> Batch {
        Batch {
            values: Vec::with_capacity(BATCH_ROWS * width),
            width,
            rows: 0,
            bytes: 0,
        }
    }

    /// Adds one row; returns the value of column `id_index` when it is an integer.
    fn push(
        &mut self,
        row: Row,
        plan: &TablePlan,
        id_index: Option<usize>,
    ) -> Result<Option<i64>, MirrorError> {
        let raw = row.unwrap_raw();
        if raw.len() != self.width {
            return Err(MirrorError::Inconsistent(Inconsistency::ColumnCount {
                table: plan.name.clone(),
                got: raw.len(),
                expected: self.width,
            }));
        }
        let start = self.values.len();
        self.values.extend(
            raw.into_iter()
                .zip(&plan.columns)
                .map(|(v, c)| to_sqlite(v.unwrap_or(mysql_async::Value::NULL), c)),
        );
        let values = &self.values[start..];
        self.bytes += values.iter().map(value_size).sum::<usize>();
        self.rows += 1;
        Ok(id_index.and_then(|i| match values[i] {
            Lite::Integer(id) => Some(id),
            _ => None,
        }))
    }

    fn full(&self) -> bool {
        self.rows >= BATCH_ROWS || self.bytes >= BATCH_BYTES
    }

    /// The batch's command, its row and byte counts, and an empty batch in its place.
    fn take(&mut self) -> (Cmd, usize, usize) {
        let values = std::mem::replace(
            &mut self.values,
            Vec::with_capacity(BATCH_ROWS * self.width),
        );
        let taken = (Cmd::Rows { values }, self.rows, self.bytes);
        self.rows = 0;
        self.bytes = 0;
        taken
    }
}

/// Sends a batch to the writer (counting it as copied with `count_progress`).
async fn send_batch(
    writer: &mut WriterHandle,
    prog: &mut Progressor<'_>,
    batch: &mut Batch,
    count_progress: bool,
) -> Result<(), MirrorError> {
    let (cmd, rows, bytes) = batch.take();
    writer.send(cmd).await?;
    if count_progress {
        prog.add(rows, bytes);
    }
    Ok(())
}

/// One job's I/O: the device connection, the writer, cancellation and progress.
struct Copy<'a> {
    remote: Remote,
    writer: WriterHandle,
    cancel: &'a CancellationToken,
    prog: Progressor<'a>,
}

impl Copy<'_> {
    /// Streams the result of `sql` into the writer's current table. Returns rows and the last
    /// value of column `id_index`. With `count_progress`, rows count as copied in the progress.
    async fn stream(
        &mut self,
        plan: &TablePlan,
        sql: &str,
        params: Params,
        id_index: Option<usize>,
        count_progress: bool,
    ) -> Result<(u64, Option<i64>), MirrorError> {
        let cancel = self.cancel;
        let addr = self.remote.addr.clone();
        let what = format!("reading {}", plan.name);
        let (writer, prog) = (&mut self.writer, &mut self.prog);
        let mut result = Remote::guard_addr(
            &addr,
            cancel,
            &what,
            self.remote.conn.exec_iter(sql, params),
        )
        .await?;
        let stream = Remote::guard_addr(&addr, cancel, &what, result.stream::<Row>()).await?;
        let Some(mut stream) = stream else {
            return Ok((0, None));
        };
        let (mut rows, mut last_id) = (0u64, None);
        let mut batch = Batch::new(plan.columns.len());
        // One waiter for the whole stream: a fresh `cancelled()` per row would register and
        // unregister a waiter for every row.
        let mut cancelled = std::pin::pin!(cancel.cancelled());
        loop {
            let next = tokio::select! {
                biased;
                _ = &mut cancelled => return Err(MirrorError::Cancelled { rows_copied: 0 }),
                next = stream.next() => next,
            };
            let row = match next {
                None => break,
                Some(Err(e)) => return Err(Remote::error(&addr, &what, e)),
                Some(Ok(row)) => row,
            };
            if let Some(id) = batch.push(row, plan, id_index)? {
                last_id = Some(id);
            }
            rows += 1;
            if batch.full() {
                send_batch(writer, prog, &mut batch, count_progress).await?;
            }
        }
        drop(stream);
        if batch.rows > 0 {
            send_batch(writer, prog, &mut batch, count_progress).await?;
        }
        Ok((rows, last_id))
    }

    /// Starts a chunk's snapshot and checks the device still writes the same experiment file.
    async fn same_experiment(&mut self, file: &str) -> Result<(), MirrorError> {
        self.remote.begin_snapshot(self.cancel).await?;
        let now = self
            .remote
            .backup_filenames(self.cancel)
            .await?
            .unwrap_or_default();
        if now.as_slice() != [file] {
            let _ = self.remote.commit(self.cancel).await;
            return Err(MirrorError::RolledOver {
                file: file.to_string(),
                new_file: now.into_iter().next(),
            });
        }
        Ok(())
    }
}

impl Mirror {
    /// An engine with `config`.
    pub fn new(config: MirrorConfig) -> Mirror {
        Mirror {
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MirrorConfig {
        &self.config
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, FileCache>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counts remembered for the file, if it is as the last job left it.
    fn remembered(&self, prepared: &Prepared) -> Option<HashMap<String, Counts>> {
        self.cache()
            .get(&prepared.db_path)
            .filter(|c| Some(c.fingerprint) == prepared.fingerprint_before)
            .map(|c| c.tables.clone())
    }

    /// Remembers the verified counts of the file as it is now (forgets it when it cannot be
    /// fingerprinted).
    fn remember(
        &self,
        db_path: &Path,
        fingerprint: Option<Fingerprint>,
        tables: HashMap<String, Counts>,
    ) {
        let mut cache = self.cache();
        match fingerprint {
            Some(fingerprint) => {
                cache.insert(
                    db_path.to_path_buf(),
                    FileCache {
                        fingerprint,
                        tables,
                    },
                );
            }
            None => {
                cache.remove(db_path);
            }
        }
    }

    /// Mirrors `device`'s current experiment once. `progress` is called with live progress while
    /// rows are copied. The writer thread (and the file lock) are gone when this returns.
    pub async fn run(
        &self,
        device: &DeviceInfo,
        cancel: &CancellationToken,
        progress: &(dyn Fn(&MirrorProgress) + Send + Sync),
    ) -> Result<MirrorReport, MirrorError> {
        let started = Instant::now();
        let db = format!("{}_db", device.name);
        // Refuse unsafe names before anything reaches the device or the disk.
        plan_target(
            &format!("1970-01-01_00-00-00_{}.db", device.id),
            &device.id,
            &device.name,
        )?;
        let mut remote = Remote::connect(&self.config, device, &db, cancel).await?;
        remote.begin_snapshot(cancel).await?;
        remote.check_ready(&db, cancel).await?;
        let backup_filename = experiment_file(&db, remote.backup_filenames(cancel).await?)?;
        let target = plan_target(&backup_filename, &device.id, &device.name)?;
        if let Some(announced) = device.announced_mariadb_filename() {
            if announced != backup_filename {
                tracing::debug!(
                    "{}: node announces {announced:?}, the device's METADATA says {backup_filename:?}; using the device's",
                    device.name
                );
            }
        }
        let mut copy = Copy {
            remote,
            writer: WriterHandle::spawn(&self.config, &target, cancel),
            cancel,
            prog: Progressor {
                progress,
                live: MirrorProgress {
                    table: String::new(),
                    rows_copied: 0,
                    rows_total: 0,
                    bytes_copied: 0,
                    percent: 0.0,
                    target_file: target.relative_db().display().to_string(),
                },
                last_report: Instant::now(),
            },
        };
        // The writer opens and locks the file while the device lists its tables.
        let result = match copy.remote.tables(cancel, &db).await {
            Ok(tables) => {
                let (plans, skipped) = plan_tables(&tables);
                for s in &skipped {
                    tracing::warn!(
                        "{} ({db}): table {:?} skipped: {}",
                        device.name,
                        s.table,
                        s.reason
                    );
                }
                self.copy(&mut copy, &db, &target, plans, skipped).await
            }
            Err(e) => Err(e),
        };
        // Whatever happened, the writer commits what it safely can and releases the lock before
        // the job ends.
        let summary = copy.writer.close().await;
        match result {
            Ok(mut report) => {
                let _ = copy.remote.conn.disconnect().await;
                report.duration = started.elapsed();
                Ok(report)
            }
            Err(MirrorError::Cancelled { .. }) => Err(MirrorError::Cancelled {
                rows_copied: match summary {
                    Ok(s) => s.rows_inserted,
                    Err(MirrorError::Cancelled { rows_copied }) => rows_copied,
                    Err(_) => 0,
                },
            }),
            Err(e) => Err(e),
        }
    }

    /// Steps 5 to 7 of the module docs, in the snapshot opened by [`Mirror::run`].
    async fn copy(
        &self,
        copy: &mut Copy<'_>,
        db: &str,
        target: &Target,
        plans: Vec<TablePlan>,
        mut skipped: Vec<Skipped>,
    ) -> Result<MirrorReport, MirrorError> {
        let cancel = copy.cancel;
        let (plans, remote_max, out_of_range) = id_bounds(copy, plans).await?;
        for s in &out_of_range {
            tracing::warn!("{db}: table {:?} not copied: {}", s.table, s.reason);
        }
        skipped.extend(out_of_range);
        let (prepared, plan) = self.plan_copy(copy, &plans, &remote_max, target).await?;
        let (mut tables, mut mismatches) = sync_keyless(copy, &plans).await?;
        copy.remote.commit(cancel).await?;

        let copies = self.copy_new_rows(copy, &plans, &plan, target).await?;
        let max_id_of: Vec<usize> = copies
            .iter()
            .filter(|(_, c)| c.inserted > 0)
            .map(|(i, _)| *i)
            .collect();
        let count_rows_of = plan.tables_to_count();
        let finished = copy
            .writer
            .ask(|reply| Cmd::Finish {
                count_rows_of,
                max_id_of,
                reply,
            })
            .await?;
        let measured = Measured {
            local_count: finished.local_count,
            local_max: finished.local_max,
        };
        let verified = verify(&plan, &copies, &measured);
        self.remember(
            &prepared.db_path,
            finished.fingerprint_after,
            verified.remember,
        );
        tables.extend(verified.tables);
        mismatches.extend(verified.mismatches);
        let behind = behind(copy, &plans, &tables).await?;
        Ok(MirrorReport {
            db_name: db.to_string(),
            backup_filename: target.file_name.clone(),
            relative_path: target.relative_db(),
            path: prepared.db_path,
            percent: completeness(&tables),
            tables,
            rows_copied: copies.values().map(|c| c.inserted).sum(),
            bytes_copied: copy.prog.live.bytes_copied,
            skipped,
            mismatches,
            data_duplication: finished.data_duplication,
            file_size: finished.file_size,
            dam_lines: finished.dam_lines,
            newest_frame_at: finished.newest_frame_at,
            rows_behind: behind,
            duration: Duration::ZERO,
        })
    }

    /// Step 5's decisions: the writer prepares the file, the device gives the counts nothing
    /// remembered covers, and [`CopyPlan`] decides.
    async fn plan_copy(
        &self,
        copy: &mut Copy<'_>,
        plans: &[TablePlan],
        remote_max: &HashMap<usize, Option<i64>>,
        target: &Target,
    ) -> Result<(Prepared, CopyPlan), MirrorError> {
        let cancel = copy.cancel;
        let prepared = copy
            .writer
            .ask(|reply| Cmd::Prepare {
                plans: plans.to_vec(),
                reply,
            })
            .await?;
        let remembered = self.remembered(&prepared);
        let mut plan = CopyPlan::new(
            plans,
            &prepared.local_max,
            remote_max,
            remembered.as_ref(),
            &target.file_name,
        )
        .map_err(MirrorError::Inconsistent)?;
        if let Some(sql) = plan.count_sql() {
            let counts = copy
                .remote
                .indexed_integers(cancel, "counting rows", sql)
                .await?;
            plan.set_counts(&counts);
        }
        Ok((prepared, plan))
    }

    /// Step 6: every id-keyed table's new rows, reported as progress.
    async fn copy_new_rows(
        &self,
        copy: &mut Copy<'_>,
        plans: &[TablePlan],
        plan: &CopyPlan,
        target: &Target,
    ) -> Result<HashMap<usize, TableCopy>, MirrorError> {
        copy.prog.live.rows_total = plan.rows_total();
        copy.prog.report(true);
        let mut copies = HashMap::new();
        for t in plan.tables.iter().filter(|t| t.rows_to_copy() > 0) {
            copy.prog.live.table = t.name.clone();
            copy.prog.report(true);
            let done = self.copy_table(copy, &plans[t.index], t, target).await?;
            copies.insert(t.index, done);
        }
        copy.prog.live.table = String::new();
        copy.prog.report(true);
        Ok(copies)
    }

    /// One table's rows in `(mirror max, device max]`, chunk by chunk, each chunk in its own
    /// snapshot that first checks the experiment is still the same.
    async fn copy_table(
        &self,
        copy: &mut Copy<'_>,
        plan: &TablePlan,
        table: &IdTable,
        target: &Target,
    ) -> Result<TableCopy, MirrorError> {
        copy.writer
            .send(Cmd::BeginById { plan: table.index })
            .await?;
        let sql = format!(
            "SELECT {} FROM {} WHERE `id` > ? AND `id` <= ? ORDER BY `id` LIMIT ?",
            plan.mysql_columns(),
            mysql_quote(&plan.name)
        );
        let mut chunks = Chunks::new(table.from(), table.to(), self.config.chunk_rows);
        let mut streamed = 0;
        loop {
            copy.same_experiment(&target.file_name).await?;
            let (from, to, limit) = chunks.bounds();
            let params = Params::Positional(vec![from.into(), to.into(), limit.into()]);
            let (n, last) = copy
                .stream(plan, &sql, params, plan.id_index(), true)
                .await?;
            copy.remote.commit(copy.cancel).await?;
            streamed += n;
            if !chunks.advance(n, last) {
                break;
            }
        }
        let inserted = copy.writer.ask(|reply| Cmd::EndById { reply }).await?;
        Ok(TableCopy { streamed, inserted })
    }
}

/// Step 5, first: the device's `MIN(id)`/`MAX(id)` of every id-keyed table, and the tables the
/// copy by id can take ([`keep_copyable`]): the plans kept (re-indexed), their device max by new
/// index, and the tables left out with the reason.
async fn id_bounds(
    copy: &mut Copy<'_>,
    plans: Vec<TablePlan>,
) -> Result<(Vec<TablePlan>, HashMap<usize, Option<i64>>, Vec<Skipped>), MirrorError> {
    let bounds = match id_bounds_sql(&plans) {
        Some(sql) => {
            copy.remote
                .indexed_integers(copy.cancel, "reading id bounds", sql)
                .await?
        }
        None => HashMap::new(),
    };
    Ok(keep_copyable(plans, &bounds))
}

/// Step 7's `rows_behind`: the device's max ids now (outside any snapshot, so rows written during
/// the job count) against the mirror's. `None` when the device does not answer; cancellation
/// still ends the job.
async fn behind(
    copy: &mut Copy<'_>,
    plans: &[TablePlan],
    tables: &BTreeMap<String, TableReport>,
) -> Result<Option<u64>, MirrorError> {
    let Some(sql) = id_bounds_sql(plans) else {
        return Ok(Some(0));
    };
    match copy
        .remote
        .indexed_integers(copy.cancel, "reading id bounds after the copy", sql)
        .await
    {
        Ok(bounds) => {
            let remote: HashMap<usize, Option<i64>> = bounds
                .iter()
                .map(|(i, b)| (*i, crate::plan::id_bounds(b).ok().flatten()))
                .collect();
            Ok(Some(rows_behind(plans, &remote, tables)))
        }
        Err(e @ MirrorError::Cancelled { .. }) => Err(e),
        Err(e) => {
            tracing::debug!("rows behind unknown: {}", etho_model::error_chain(&e));
            Ok(None)
        }
    }
}

/// Step 5's keyless tables: each made equal to the snapshot as a multiset. Returns their
/// reports and mismatch lines.
async fn sync_keyless(
    copy: &mut Copy<'_>,
    plans: &[TablePlan],
) -> Result<(BTreeMap<String, TableReport>, Vec<String>), MirrorError> {
    let mut tables = BTreeMap::new();
    let mut mismatches = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        if plan.mode != CopyMode::WholeTable {
            continue;
        }
        copy.writer.send(Cmd::BeginWhole { plan: i }).await?;
        let sql = format!(
            "SELECT {} FROM {}",
            plan.mysql_columns(),
            mysql_quote(&plan.name)
        );
        copy.stream(plan, &sql, Params::Empty, None, false).await?;
        let result = copy.writer.ask(|reply| Cmd::EndWhole { reply }).await?;
        let (report, mismatch) = verify_keyless(&plan.name, &result);
        mismatches.extend(mismatch);
        tables.insert(plan.name.clone(), report);
    }
    Ok((tables, mismatches))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn the_experiment_file_needs_exactly_one_name() {
        let db = "ETHOSCOPE_001_db";
        assert_eq!(experiment_file(db, Some(vec![s("a.db")])).unwrap(), "a.db");
        for (names, needle) in [
            (None, "no METADATA table"),
            (Some(vec![]), "no METADATA.backup_filename"),
            (Some(vec![s("a.db"), s("b.db")]), "2 different"),
        ] {
            let err = experiment_file(db, names).unwrap_err();
            assert!(matches!(err, MirrorError::BadTarget(_)), "{err}");
            let text = etho_model::error_chain(&err);
            assert!(text.contains(needle), "{text}");
            assert!(text.contains(db), "{text}");
        }
    }

    #[test]
    fn information_schema_rows_become_base_tables() {
        let row = |t: &str, c: &str, ty: &str, k: &str| (s(t), s(c), s(ty), s(k));
        let tables = group_columns(
            vec![
                (s("ROI_1"), s("BASE TABLE")),
                (s("A_VIEW"), s("VIEW")),
                (s("VAR_MAP"), s("BASE TABLE")),
            ],
            vec![
                row("A_VIEW", "id", "int(11)", ""),
                row("ROI_1", "id", "int(11)", "PRI"),
                row("ROI_1", "x", "smallint(6)", ""),
                row("VAR_MAP", "var_name", "char(100)", ""),
                row("GONE", "id", "int(11)", "PRI"),
            ],
        );
        assert_eq!(
            tables,
            vec![
                RemoteTable {
                    name: s("ROI_1"),
                    columns: vec![
                        RemoteColumn {
                            name: s("id"),
                            column_type: s("int(11)"),
                            primary: true
                        },
                        RemoteColumn {
                            name: s("x"),
                            column_type: s("smallint(6)"),
                            primary: false
                        },
                    ],
                },
                RemoteTable {
                    name: s("VAR_MAP"),
                    columns: vec![RemoteColumn {
                        name: s("var_name"),
                        column_type: s("char(100)"),
                        primary: false
                    }],
                },
            ]
        );
    }

    #[test]
    fn progress_is_throttled_and_bounded() {
        let seen = Mutex::new(Vec::new());
        let record = |p: &MirrorProgress| seen.lock().unwrap().push((p.rows_copied, p.percent));
        let mut prog = Progressor {
            progress: &record,
            live: MirrorProgress {
                table: s("ROI_1"),
                rows_copied: 0,
                rows_total: 0,
                bytes_copied: 0,
                percent: 0.0,
                target_file: s("x.db"),
            },
            last_report: Instant::now(),
        };
        prog.report(true);
        prog.live.rows_total = 200;
        prog.add(50, 1000);
        prog.add(50, 1000);
        prog.report(true);
        prog.add(150, 3000);
        prog.report(true);
        assert_eq!(prog.live.bytes_copied, 5000);
        assert_eq!(
            *seen.lock().unwrap(),
            // Nothing to copy is complete; unforced reports inside REPORT_EVERY are dropped;
            // the estimate (an upper bound from id ranges) never shows more than 100 %.
            vec![(0, 100.0), (100, 50.0), (250, 100.0)]
        );
    }
}
