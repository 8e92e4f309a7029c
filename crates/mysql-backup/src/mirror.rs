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
//! Verification counts are kept between jobs per file (keyed by the file's size and mtime), so a
//! cycle with nothing new does not rescan millions of rows: it costs a connection, a few small
//! queries and reads of the keyless tables.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
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
use crate::error::MirrorError;
use crate::local::{self, Cmd, Fingerprint, KeylessResult, WriterSetup, WriterSummary};
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

/// One table after a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableReport {
    /// `"by_id"` or `"whole_table"`.
    pub mode: &'static str,
    /// Rows on the device (at the job's snapshot).
    pub remote_rows: u64,
    /// Rows in the mirror.
    pub local_rows: u64,
    /// Device `MAX(id)` (id-keyed tables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_max_id: Option<i64>,
    /// Mirror `MAX(id)` (id-keyed tables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_max_id: Option<i64>,
    /// Rows copied by this job (for keyless tables: rows written by a rewrite).
    pub copied: u64,
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
    /// Wall-clock time of the job.
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Counts {
    max: i64,
    remote: u64,
    local: u64,
}

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

struct Remote {
    conn: Conn,
    addr: String,
}

impl Remote {
    async fn drop_query(
        &mut self,
        cancel: &CancellationToken,
        what: &str,
        sql: &str,
    ) -> Result<(), MirrorError> {
        let addr = self.addr.clone();
        let conn = &mut self.conn;
        let fut = conn.query_drop(sql);
        Remote::guard_addr(&addr, cancel, what, fut).await
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
            r = fut => r.map_err(|e| MirrorError::Remote {
                addr: addr.to_string(),
                what: what.to_string(),
                reason: e.to_string(),
            }),
        }
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
        let base: std::collections::HashSet<String> = kinds
            .into_iter()
            .filter(|(_, kind)| kind == "BASE TABLE")
            .map(|(name, _)| name)
            .collect();
        let rows = rows.into_iter().filter(|r| base.contains(&r.0));
        let mut tables: Vec<RemoteTable> = Vec::new();
        for (table, column, column_type, key) in rows {
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
        Ok(tables)
    }

    /// The distinct non-NULL `METADATA.backup_filename` values; `None` when there is no METADATA
    /// table.
    async fn backup_filenames(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<String>>, MirrorError> {
        let values = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(MirrorError::Cancelled { rows_copied: 0 }),
            r = self.conn.query::<Option<String>, _>(
                "SELECT value FROM METADATA WHERE field = 'backup_filename'",
            ) => r,
        };
        let values = match values {
            Ok(v) => v,
            Err(e) if is_missing_table(&e) => return Ok(None),
            Err(e) => {
                return Err(MirrorError::Remote {
                    addr: self.addr.clone(),
                    what: "reading METADATA.backup_filename".into(),
                    reason: e.to_string(),
                })
            }
        };
        let mut names: Vec<String> = values.into_iter().flatten().collect();
        names.sort();
        names.dedup();
        Ok(Some(names))
    }

    /// `(index, value)` rows of a `UNION ALL` query built from validated identifiers.
    async fn indexed_values(
        &mut self,
        cancel: &CancellationToken,
        what: &str,
        sql: String,
    ) -> Result<HashMap<usize, Option<i64>>, MirrorError> {
        let addr = self.addr.clone();
        let rows: Vec<(u64, Option<i64>)> =
            Remote::guard_addr(&addr, cancel, what, self.conn.query(sql)).await?;
        Ok(rows.into_iter().map(|(i, v)| (i as usize, v)).collect())
    }
}

/// "Table doesn't exist" (ER_NO_SUCH_TABLE).
fn is_missing_table(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1146)
}

/// Where the writer thread is, seen from the async side.
struct WriterHandle {
    tx: Option<mpsc::Sender<Cmd>>,
    join: Option<tokio::task::JoinHandle<Result<WriterSummary, MirrorError>>>,
}

impl WriterHandle {
    async fn failure(&mut self) -> MirrorError {
        self.tx = None;
        match self.join.take() {
            Some(join) => match join.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => MirrorError::Internal("the SQLite writer stopped early".into()),
                Err(e) => MirrorError::Internal(format!("the SQLite writer failed: {e}")),
            },
            None => MirrorError::Internal("the SQLite writer is gone".into()),
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
            Some(join) => join
                .await
                .map_err(|e| MirrorError::Internal(format!("the SQLite writer failed: {e}")))?,
            None => Ok(WriterSummary::default()),
        }
    }
}

struct Copy<'a> {
    remote: Remote,
    writer: WriterHandle,
    cancel: &'a CancellationToken,
    prog: Progressor<'a>,
}

struct Progressor<'a> {
    progress: &'a (dyn Fn(&MirrorProgress) + Send + Sync),
    live: MirrorProgress,
    last_report: Instant,
}

impl Progressor<'_> {
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

impl Copy<'_> {
    /// Streams the result of `sql` into the writer's current table. Returns rows and the last
    /// value of column `id_index`.
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
        let writer = &mut self.writer;
        let prog = &mut self.prog;
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
        let mut rows = 0u64;
        let mut last_id = None;
        let width = plan.columns.len();
        let mut batch: Vec<Lite> = Vec::with_capacity(BATCH_ROWS * width);
        let mut batch_rows = 0usize;
        let mut batch_bytes = 0usize;
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
                Some(Err(e)) => {
                    return Err(MirrorError::Remote {
                        addr,
                        what,
                        reason: e.to_string(),
                    })
                }
                Some(Ok(row)) => row,
            };
            let raw = row.unwrap_raw();
            if raw.len() != width {
                return Err(MirrorError::Inconsistent(format!(
                    "{}: the device returned {} columns, expected {width}",
                    plan.name,
                    raw.len()
                )));
            }
            let start = batch.len();
            batch.extend(
                raw.into_iter()
                    .zip(&plan.columns)
                    .map(|(v, c)| to_sqlite(v.unwrap_or(mysql_async::Value::NULL), c)),
            );
            let values = &batch[start..];
            if let Some(i) = id_index {
                if let Lite::Integer(id) = values[i] {
                    last_id = Some(id);
                }
            }
            batch_bytes += values.iter().map(value_size).sum::<usize>();
            batch_rows += 1;
            rows += 1;
            if batch_rows >= BATCH_ROWS || batch_bytes >= BATCH_BYTES {
                writer
                    .send(Cmd::Rows(std::mem::replace(
                        &mut batch,
                        Vec::with_capacity(BATCH_ROWS * width),
                    )))
                    .await?;
                if count_progress {
                    prog.live.rows_copied += batch_rows as u64;
                    prog.live.bytes_copied += batch_bytes as u64;
                    prog.report(false);
                }
                batch_rows = 0;
                batch_bytes = 0;
            }
        }
        drop(stream);
        if batch_rows > 0 {
            writer.send(Cmd::Rows(batch)).await?;
            if count_progress {
                prog.live.rows_copied += batch_rows as u64;
                prog.live.bytes_copied += batch_bytes as u64;
                prog.report(false);
            }
        }
        Ok((rows, last_id))
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
        let addr = SocketAddr::new(device.ip, self.config.mysql_port);
        let opts = OptsBuilder::default()
            .ip_or_hostname(device.ip.to_string())
            .tcp_port(self.config.mysql_port)
            .user(Some(self.config.mysql_user.clone()))
            .pass(Some(self.config.mysql_password.clone()))
            .db_name(Some(db.clone()))
            .prefer_socket(false)
            .stmt_cache_size(64);
        let connect_err = |reason: String| MirrorError::Connect {
            addr: addr.to_string(),
            db: db.clone(),
            reason,
        };
        let conn = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(MirrorError::Cancelled { rows_copied: 0 }),
            r = tokio::time::timeout(self.config.connect_timeout, Conn::new(opts)) => match r {
                Err(_) => return Err(connect_err(format!("no answer within {:?}", self.config.connect_timeout))),
                Ok(Err(e)) => return Err(connect_err(e.to_string())),
                Ok(Ok(conn)) => conn,
            },
        };
        let mut remote = Remote {
            conn,
            addr: addr.to_string(),
        };
        remote.begin_snapshot(cancel).await?;
        // Not ready yet: the experiment has no VAR_MAP table or no rows in it.
        let vars = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(MirrorError::Cancelled { rows_copied: 0 }),
            r = remote.conn.query_first::<u8, _>("SELECT EXISTS (SELECT 1 FROM VAR_MAP)") => r,
        };
        match vars {
            Ok(Some(1)) => {}
            Ok(_) => {
                return Err(MirrorError::NotReady {
                    db,
                    reason: "VAR_MAP is empty (no tracking data written yet)".into(),
                })
            }
            Err(e) if is_missing_table(&e) => {
                return Err(MirrorError::NotReady {
                    db,
                    reason: "it has no VAR_MAP table".into(),
                })
            }
            Err(e) => {
                return Err(MirrorError::Remote {
                    addr: remote.addr.clone(),
                    what: "checking VAR_MAP".into(),
                    reason: e.to_string(),
                })
            }
        }
        let Some(names) = remote.backup_filenames(cancel).await? else {
            return Err(MirrorError::BadTarget(format!(
                "{db} has no METADATA table, so the experiment file name is unknown"
            )));
        };
        let backup_filename = match names.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(MirrorError::BadTarget(format!(
                    "{db} has no METADATA.backup_filename, so the experiment file name is unknown"
                )))
            }
            many => {
                return Err(MirrorError::BadTarget(format!(
                    "{db} has {} different METADATA.backup_filename values: {:?}",
                    many.len(),
                    many.iter().take(3).collect::<Vec<_>>()
                )))
            }
        };
        let target = plan_target(&backup_filename, &device.id, &device.name)?;
        if let Some(announced) = device.announced_mariadb_filename() {
            if announced != backup_filename {
                tracing::debug!(
                    "{}: node announces {announced:?}, the device's METADATA says {backup_filename:?}; using the device's",
                    device.name
                );
            }
        }

        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let join = local::spawn(
            WriterSetup {
                results_dir: self.config.results_dir.clone(),
                relative_dir: target.relative_dir.clone(),
                file_name: target.file_name.clone(),
                commit_rows: self.config.commit_rows,
                commit_bytes: self.config.commit_bytes,
                commit_interval: self.config.commit_interval,
            },
            rx,
            cancel.clone(),
        );
        let mut copy = Copy {
            remote,
            writer: WriterHandle {
                tx: Some(tx),
                join: Some(join),
            },
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

    async fn copy(
        &self,
        copy: &mut Copy<'_>,
        db: &str,
        target: &Target,
        plans: Vec<TablePlan>,
        skipped: Vec<Skipped>,
    ) -> Result<MirrorReport, MirrorError> {
        let cancel = copy.cancel;
        let prepared = copy
            .writer
            .ask(|reply| Cmd::Prepare(plans.clone(), reply))
            .await?;
        let id_plans: Vec<usize> = (0..plans.len())
            .filter(|&i| plans[i].mode == CopyMode::ById)
            .collect();

        // Remote MAX(id) of every id-keyed table, in the snapshot.
        let mut remote_max: HashMap<usize, Option<i64>> = HashMap::new();
        if !id_plans.is_empty() {
            let sql = id_plans
                .iter()
                .map(|&i| format!("SELECT {i}, MAX(`id`) FROM {}", mysql_quote(&plans[i].name)))
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            remote_max = copy
                .remote
                .indexed_values(cancel, "reading max ids", sql)
                .await?;
        }
        let mut regressions = Vec::new();
        for &i in &id_plans {
            let r = remote_max.get(&i).copied().flatten().unwrap_or(0);
            let l = prepared.local_max[i].unwrap_or(0);
            if r < l {
                regressions.push(format!("{} (device {r}, mirror {l})", plans[i].name));
            }
        }
        if !regressions.is_empty() {
            return Err(MirrorError::Inconsistent(format!(
                "the device's max id is below the mirror's for the same experiment file {}: {}; nothing copied",
                target.file_name,
                regressions.join(", ")
            )));
        }

        // Counts for verification: reuse the previous job's when the file is as we left it.
        let cached: Option<FileCache> = {
            let cache = self.cache();
            cache
                .get(&prepared.db_path)
                .filter(|c| Some(c.fingerprint) == prepared.fingerprint_before)
                .cloned()
        };
        // Per id plan: (device rows known up to the local max, local rows known). Rows above the
        // local max are counted as they stream in, so an initial mirror scans nothing twice.
        let mut base: HashMap<usize, (u64, Option<u64>)> = HashMap::new();
        let mut count_queries = Vec::new();
        for &i in &id_plans {
            let l = prepared.local_max[i];
            let hit = cached
                .as_ref()
                .and_then(|c| c.tables.get(&plans[i].name))
                .filter(|c| c.max == l.unwrap_or(0));
            match (hit, l) {
                (Some(c), _) => {
                    base.insert(i, (c.remote, Some(c.local)));
                }
                (None, None) => {
                    base.insert(i, (0, Some(0)));
                }
                (None, Some(l)) => {
                    base.insert(i, (0, None));
                    count_queries.push(format!(
                        "SELECT {i}, COUNT(*) FROM {} WHERE `id` <= {l}",
                        mysql_quote(&plans[i].name)
                    ));
                }
            }
        }
        if !count_queries.is_empty() {
            let below = copy
                .remote
                .indexed_values(cancel, "counting rows", count_queries.join(" UNION ALL "))
                .await?;
            for (i, n) in below {
                if let Some(b) = base.get_mut(&i) {
                    b.0 = n.unwrap_or(0).max(0) as u64;
                }
            }
        }

        // Keyless tables: equal to the snapshot as multisets.
        let mut tables = BTreeMap::new();
        let mut mismatches = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            if plan.mode != CopyMode::WholeTable {
                continue;
            }
            copy.writer.send(Cmd::BeginWhole(i)).await?;
            let sql = format!(
                "SELECT {} FROM {}",
                plan.mysql_columns(),
                mysql_quote(&plan.name)
            );
            copy.stream(plan, &sql, Params::Empty, None, false).await?;
            let result: KeylessResult = copy.writer.ask(Cmd::EndWhole).await?;
            if !result.equal || result.local_rows != result.remote_rows {
                mismatches.push(format!(
                    "{}: mirror has {} rows, device {}",
                    plan.name, result.local_rows, result.remote_rows
                ));
            }
            tables.insert(
                plan.name.clone(),
                TableReport {
                    mode: "whole_table",
                    remote_rows: result.remote_rows,
                    local_rows: result.local_rows,
                    remote_max_id: None,
                    local_max_id: None,
                    copied: if result.rewritten {
                        result.local_rows
                    } else {
                        0
                    },
                },
            );
        }
        copy.remote.commit(cancel).await?;

        // Id-keyed tables: new rows, in chunks, each chunk checking the experiment is the same.
        copy.prog.live.rows_total = id_plans
            .iter()
            .map(|&i| {
                let r = remote_max.get(&i).copied().flatten().unwrap_or(0);
                let l = prepared.local_max[i].unwrap_or(0);
                (r - l).max(0) as u64
            })
            .sum();
        copy.prog.report(true);
        let mut copied: HashMap<usize, u64> = HashMap::new();
        let mut streamed: HashMap<usize, u64> = HashMap::new();
        for &i in &id_plans {
            let plan = &plans[i];
            let r = remote_max.get(&i).copied().flatten().unwrap_or(0);
            let mut from = prepared.local_max[i].unwrap_or(0);
            if r <= from {
                continue;
            }
            copy.prog.live.table = plan.name.clone();
            copy.prog.report(true);
            copy.writer.send(Cmd::BeginById(i)).await?;
            let sql = format!(
                "SELECT {} FROM {} WHERE `id` > ? AND `id` <= ? ORDER BY `id` LIMIT ?",
                plan.mysql_columns(),
                mysql_quote(&plan.name)
            );
            let chunk = self.config.chunk_rows.max(1);
            loop {
                copy.remote.begin_snapshot(cancel).await?;
                let now = copy
                    .remote
                    .backup_filenames(cancel)
                    .await?
                    .unwrap_or_default();
                if now.as_slice() != [target.file_name.clone()] {
                    let _ = copy.remote.commit(cancel).await;
                    return Err(MirrorError::RolledOver(format!(
                        "the device started a new experiment ({}) while {} was being copied; \
                         rows copied so far are kept, the rest is no longer on the device",
                        now.first().map_or("none", String::as_str),
                        target.file_name
                    )));
                }
                let (n, last) = copy
                    .stream(
                        plan,
                        &sql,
                        Params::Positional(vec![from.into(), r.into(), chunk.into()]),
                        plan.id_index(),
                        true,
                    )
                    .await?;
                copy.remote.commit(cancel).await?;
                *streamed.entry(i).or_insert(0) += n;
                if let Some(last) = last {
                    from = last;
                }
                if n < chunk || from >= r {
                    break;
                }
            }
            let inserted = copy.writer.ask(Cmd::EndById).await?;
            copied.insert(i, inserted);
        }
        copy.prog.live.table = String::new();
        copy.prog.report(true);

        let full_counts: Vec<usize> = id_plans
            .iter()
            .copied()
            .filter(|i| base.get(i).is_none_or(|b| b.1.is_none()))
            .collect();
        let changed: Vec<usize> = copied
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(i, _)| *i)
            .collect();
        let finished = copy
            .writer
            .ask(|r| Cmd::Finish(full_counts, changed, r))
            .await?;

        // Verify and remember.
        let mut new_cache = HashMap::new();
        for &i in &id_plans {
            let plan = &plans[i];
            let r = remote_max.get(&i).copied().flatten();
            let (remote_known, local_known) = base.get(&i).copied().unwrap_or((0, None));
            let remote_rows = remote_known + streamed.get(&i).copied().unwrap_or(0);
            let n = copied.get(&i).copied().unwrap_or(0);
            let local_rows = finished
                .local_count
                .get(&i)
                .copied()
                .unwrap_or(local_known.unwrap_or(0) + n);
            let local_max = finished
                .local_max
                .get(&i)
                .copied()
                .unwrap_or(prepared.local_max[i]);
            if local_rows != remote_rows || local_max.unwrap_or(0) != r.unwrap_or(0) {
                mismatches.push(format!(
                    "{}: mirror has {local_rows} rows up to id {}, device {remote_rows} rows up to id {}",
                    plan.name,
                    local_max.unwrap_or(0),
                    r.unwrap_or(0)
                ));
            } else {
                new_cache.insert(
                    plan.name.clone(),
                    Counts {
                        max: r.unwrap_or(0),
                        remote: remote_rows,
                        local: local_rows,
                    },
                );
            }
            tables.insert(
                plan.name.clone(),
                TableReport {
                    mode: "by_id",
                    remote_rows,
                    local_rows,
                    remote_max_id: r,
                    local_max_id: local_max,
                    copied: n,
                },
            );
        }
        {
            let mut cache = self.cache();
            match finished.fingerprint_after {
                Some(fingerprint) => {
                    cache.insert(
                        prepared.db_path.clone(),
                        FileCache {
                            fingerprint,
                            tables: new_cache,
                        },
                    );
                }
                None => {
                    cache.remove(&prepared.db_path);
                }
            }
        }
        let remote_total: u64 = tables.values().map(|t| t.remote_rows).sum();
        let local_total: u64 = tables.values().map(|t| t.local_rows).sum();
        let percent = if remote_total == 0 {
            100.0
        } else {
            local_total as f64 * 100.0 / remote_total as f64
        };
        Ok(MirrorReport {
            db_name: db.to_string(),
            backup_filename: target.file_name.clone(),
            relative_path: target.relative_db(),
            path: prepared.db_path,
            tables,
            rows_copied: copied.values().sum(),
            bytes_copied: copy.prog.live.bytes_copied,
            skipped,
            mismatches,
            data_duplication: finished.data_duplication,
            percent,
            file_size: finished.file_size,
            dam_lines: finished.dam_lines,
            duration: Duration::ZERO,
        })
    }
}
