//! The SQLite side of a mirror job: one dedicated thread that owns the file, its lock and the
//! open transaction, fed through a bounded channel.
//!
//! rusqlite is blocking, so it never runs on the async runtime. The remote side streams rows in
//! small batches over a bounded channel, so at most a few batches are in memory whatever the table
//! size. The thread:
//! - creates the experiment directory without following symlinks and takes an exclusive `flock` on
//!   `<file>.db.lock`, so two jobs (or two processes) never write one file;
//! - creates or completes the tables (adding columns the device gained, migrating a legacy table
//!   without its primary key);
//! - inserts id-keyed rows with one prepared statement per table and explicit column lists,
//!   committing every `commit_rows` rows / `commit_bytes` / `commit_interval`;
//! - makes keyless tables equal to the device's as a multiset: rows are staged in a temporary table
//!   and compared with `GROUP BY … EXCEPT` (NULL-safe), and only a table that differs is rewritten;
//! - on the final commit, brings the `CSV_DAM_ACTIVITY` `.txt` dump up to date and measures what
//!   the file holds.
//!
//! If the channel closes early (the job was aborted) or the job is cancelled, what was received is
//! committed (always a prefix of each table in id order) and the lock is released when the
//! thread really ends.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etho_model::health::last_frame_sql;
use nix::fcntl::{Flock, FlockArg, OFlag};
use rusqlite::types::Value as Lite;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::convert::value_size;
use crate::error::{LocalError, MirrorError};
use crate::schema::{sqlite_quote, CopyMode, TablePlan};
use crate::sidecar;
use crate::target::{check_regular_or_missing, create_dir_under};

/// Identity of the mirror file's content between jobs (size, mtime): when unchanged, counts
/// cached from the previous job are still true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    len: u64,
    mtime_ns: i128,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let m = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct WriterSetup {
    /// The results directory (configured).
    pub results_dir: PathBuf,
    /// The experiment directory, relative to `results_dir` (validated).
    pub relative_dir: PathBuf,
    /// The `.db` file name (validated).
    pub file_name: String,
    /// Commit limits.
    pub commit_rows: u64,
    /// Commit limits.
    pub commit_bytes: u64,
    /// Commit limits.
    pub commit_interval: Duration,
}

/// State of the local file before the job touched it.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Absolute path of the `.db`.
    pub db_path: PathBuf,
    /// Fingerprint before opening (None: the file did not exist).
    pub fingerprint_before: Option<Fingerprint>,
    /// Per plan (same order): local `MAX(id)` for id-keyed tables.
    pub local_max: Vec<Option<i64>>,
}

/// Result of syncing one keyless table.
#[derive(Debug, Clone, Copy)]
pub struct KeylessResult {
    /// Rows the device has.
    pub remote_rows: u64,
    /// Rows the mirror has now.
    pub local_rows: u64,
    /// The mirror table differed and was rewritten.
    pub rewritten: bool,
    /// The two are equal as multisets after the sync.
    pub equal: bool,
}

/// What the file holds at the end of the job.
#[derive(Debug, Clone)]
pub struct Finished {
    /// `MAX(id)` of the plans that were asked for (by plan index).
    pub local_max: HashMap<usize, Option<i64>>,
    /// `COUNT(*)` of the plans that were asked for (by plan index).
    pub local_count: HashMap<usize, u64>,
    /// METADATA or VAR_MAP hold duplicate rows.
    pub data_duplication: bool,
    /// File size in bytes.
    pub file_size: u64,
    /// Fingerprint after the last write.
    pub fingerprint_after: Option<Fingerprint>,
    /// Lines appended to the DAM dump.
    pub dam_lines: u64,
    /// The newest tracked frame the file holds (`METADATA.date_time` plus the last ROI row's
    /// `t`), epoch seconds; `None` without ROI rows.
    pub newest_frame_at: Option<f64>,
}

/// Messages from the remote side. Plans are named by their index in the list sent with
/// [`Cmd::Prepare`].
pub enum Cmd {
    /// Create or complete the tables; reply with the local state.
    Prepare {
        /// Every table to mirror.
        plans: Vec<TablePlan>,
        /// Gets the file's state before the job.
        reply: oneshot::Sender<Prepared>,
    },
    /// Following `Rows` go to this id-keyed plan (inserted).
    BeginById {
        /// Plan index.
        plan: usize,
    },
    /// Following `Rows` are the complete remote content of this keyless plan.
    BeginWhole {
        /// Plan index.
        plan: usize,
    },
    /// Rows for the current table.
    Rows {
        /// Values row after row, each row in plan column order.
        values: Vec<Lite>,
    },
    /// End of the current id-keyed table.
    EndById {
        /// Gets the rows inserted.
        reply: oneshot::Sender<u64>,
    },
    /// End of the current keyless table: compare, rewrite if needed.
    EndWhole {
        /// Gets the comparison.
        reply: oneshot::Sender<KeylessResult>,
    },
    /// Commit, update the DAM dump, measure, and stop.
    Finish {
        /// Plans whose `COUNT(*)` to measure.
        count_rows_of: Vec<usize>,
        /// Plans whose `MAX(id)` to measure.
        max_id_of: Vec<usize>,
        /// Gets what the file holds.
        reply: oneshot::Sender<Finished>,
    },
}

/// What the writer thread did in total.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriterSummary {
    /// Rows inserted into id-keyed tables (committed).
    pub rows_inserted: u64,
}

enum Current {
    None,
    ById { plan: usize, inserted: u64 },
    Whole { plan: usize, staged: u64 },
}

struct Writer {
    conn: Connection,
    db_path: PathBuf,
    txt_path: PathBuf,
    plans: Vec<TablePlan>,
    current: Current,
    in_tx: bool,
    since_commit_rows: u64,
    since_commit_bytes: u64,
    last_commit: Instant,
    setup: WriterSetup,
    committed_rows: u64,
    pending_rows: u64,
    cancel: CancellationToken,
    existing: Option<HashMap<String, Vec<(String, bool)>>>,
}

const STAGING: &str = "etho_incoming";
/// Bound parameters per INSERT (SQLite allows 32766).
const MAX_PARAMS: usize = 30_000;
/// Rows per multi-row INSERT.
const MAX_ROWS_PER_INSERT: usize = 64;

/// Spawns the writer thread. It ends when `Finish` is handled, on the first error, or when `rx`
/// closes; its result is the job's local outcome.
pub fn spawn(
    setup: WriterSetup,
    rx: mpsc::Receiver<Cmd>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<Result<WriterSummary, MirrorError>> {
    tokio::task::spawn_blocking(move || run(setup, rx, cancel))
}

fn run(
    setup: WriterSetup,
    mut rx: mpsc::Receiver<Cmd>,
    cancel: CancellationToken,
) -> Result<WriterSummary, MirrorError> {
    let files = Files::new(&setup)?;
    let _lock = files.lock()?;
    let fingerprint_before = fingerprint(&files.db);
    let conn = Connection::open_with_flags(
        &files.db,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| MirrorError::local(&files.db, e))?;
    let mut w = Writer::new(conn, files, setup, cancel);
    w.configure()?;
    // Read the existing layout now, while the remote side is still listing its tables.
    w.existing = Some(w.existing_columns()?);
    let result = w.serve(&mut rx, fingerprint_before);
    w.wind_up(result)
}

/// The files of one mirror, checked before anything is opened.
struct Files {
    db: PathBuf,
    txt: PathBuf,
    lock: PathBuf,
}

impl Files {
    /// Creates the experiment directory (no symlinks followed) and refuses any of the mirror's
    /// files, or SQLite's companions, that exists as something other than a regular file.
    fn new(setup: &WriterSetup) -> Result<Files, MirrorError> {
        let dir = create_dir_under(&setup.results_dir, &setup.relative_dir)?;
        let stem = setup
            .file_name
            .strip_suffix(".db")
            .unwrap_or(&setup.file_name);
        let files = Files {
            db: dir.join(&setup.file_name),
            txt: dir.join(format!("{stem}.txt")),
            lock: dir.join(format!("{}.lock", setup.file_name)),
        };
        for p in [&files.db, &files.txt, &files.lock] {
            check_regular_or_missing(p)?;
        }
        for suffix in ["-journal", "-wal", "-shm"] {
            check_regular_or_missing(&PathBuf::from(format!("{}{suffix}", files.db.display())))?;
        }
        Ok(files)
    }

    /// Takes the exclusive lock of `<file>.db.lock`, held until the returned value is dropped.
    fn lock(&self) -> Result<Flock<std::fs::File>, MirrorError> {
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(&self.lock)
            .map_err(|e| MirrorError::local(&self.lock, e))?;
        match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(l),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(MirrorError::Locked(self.db.clone())),
            Err((_, e)) => Err(MirrorError::local(&self.lock, LocalError::Lock(e))),
        }
    }
}

impl Writer {
    fn new(
        conn: Connection,
        files: Files,
        setup: WriterSetup,
        cancel: CancellationToken,
    ) -> Writer {
        Writer {
            conn,
            db_path: files.db,
            txt_path: files.txt,
            plans: Vec::new(),
            current: Current::None,
            in_tx: false,
            since_commit_rows: 0,
            since_commit_bytes: 0,
            last_commit: Instant::now(),
            setup,
            committed_rows: 0,
            pending_rows: 0,
            cancel,
            existing: None,
        }
    }

    /// Ends the job after [`Writer::serve`]: keeps what can be kept, then says how it went.
    fn wind_up(mut self, result: Result<bool, MirrorError>) -> Result<WriterSummary, MirrorError> {
        match &result {
            Ok(true) => {}
            Ok(false) => {
                // Cancelled or abandoned between commands: what was received is a prefix of
                // each table in id order, so keep it; the next job continues from there.
                let _ = self.commit();
            }
            Err(_) => {
                // A statement failed, possibly halfway through a table rewrite: drop the open
                // transaction (its id-keyed rows are copied again next time).
                let _ = self.rollback();
            }
        }
        if !matches!(result, Ok(true)) && self.plans.iter().any(|p| p.name == sidecar::DAM_TABLE) {
            let _ = sidecar::update(&self.conn, &self.txt_path);
        }
        let summary = WriterSummary {
            rows_inserted: self.committed_rows,
        };
        match result {
            Ok(true) => Ok(summary),
            Ok(false) if self.cancel.is_cancelled() => Err(MirrorError::Cancelled {
                rows_copied: summary.rows_inserted,
            }),
            Ok(false) => Err(MirrorError::Internal("the copy stopped before it finished")),
            Err(e) => Err(e),
        }
    }

    /// A failed statement on the mirror.
    fn err(&self, e: rusqlite::Error) -> MirrorError {
        MirrorError::local(&self.db_path, e)
    }

    /// A failed statement on the mirror, while doing `what`.
    fn failed(&self, what: String) -> impl FnOnce(rusqlite::Error) -> MirrorError + '_ {
        move |source| MirrorError::local(&self.db_path, LocalError::Statement { what, source })
    }

    fn configure(&mut self) -> Result<(), MirrorError> {
        self.conn
            .busy_timeout(Duration::from_secs(10))
            .map_err(|e| self.err(e))?;
        self.conn
            .execute_batch("PRAGMA cache_size = -8192;")
            .map_err(|e| self.err(e))?;
        // The archive only holds single-file databases: a mirror left in WAL mode (by an older
        // tool) is switched back, so no -wal/-shm appears next to it and a reader on a read-only
        // mount can open it. A no-op (no write) for a file already in DELETE mode.
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(MirrorError::local(
                &self.db_path,
                LocalError::JournalMode(mode),
            ));
        }
        self.conn.set_prepared_statement_cache_capacity(64);
        Ok(())
    }

    /// Handles commands. Ok(true) after `Finish`; Ok(false) when the channel closed or the job
    /// was cancelled.
    fn serve(
        &mut self,
        rx: &mut mpsc::Receiver<Cmd>,
        fingerprint_before: Option<Fingerprint>,
    ) -> Result<bool, MirrorError> {
        while let Some(cmd) = rx.blocking_recv() {
            if self.cancel.is_cancelled() {
                return Ok(false);
            }
            match cmd {
                Cmd::Prepare { plans, reply } => {
                    let local_max = self.prepare(plans)?;
                    let _ = reply.send(Prepared {
                        db_path: self.db_path.clone(),
                        fingerprint_before,
                        local_max,
                    });
                }
                Cmd::BeginById { plan } => {
                    self.begin()?;
                    self.current = Current::ById { plan, inserted: 0 };
                }
                Cmd::BeginWhole { plan } => {
                    self.begin()?;
                    self.current = Current::Whole { plan, staged: 0 };
                }
                Cmd::Rows { values } => self.rows(values)?,
                Cmd::EndById { reply } => {
                    let inserted = match self.current {
                        Current::ById { inserted, .. } => inserted,
                        _ => 0,
                    };
                    self.current = Current::None;
                    let _ = reply.send(inserted);
                }
                Cmd::EndWhole { reply } => {
                    let result = self.end_whole()?;
                    self.current = Current::None;
                    let _ = reply.send(result);
                }
                Cmd::Finish {
                    count_rows_of,
                    max_id_of,
                    reply,
                } => {
                    let finished = self.finish(&count_rows_of, &max_id_of)?;
                    let _ = reply.send(finished);
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn begin(&mut self) -> Result<(), MirrorError> {
        if !self.in_tx {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| self.err(e))?;
            self.in_tx = true;
            self.last_commit = Instant::now();
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), MirrorError> {
        if self.in_tx {
            self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))?;
            self.in_tx = false;
        }
        self.committed_rows += self.pending_rows;
        self.pending_rows = 0;
        self.since_commit_rows = 0;
        self.since_commit_bytes = 0;
        self.last_commit = Instant::now();
        Ok(())
    }

    fn rollback(&mut self) -> Result<(), MirrorError> {
        self.pending_rows = 0;
        if self.in_tx {
            self.in_tx = false;
            self.conn
                .execute_batch("ROLLBACK")
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Every existing table's columns as `(name, part of the primary key)`, in one query.
    fn existing_columns(&self) -> Result<HashMap<String, Vec<(String, bool)>>, MirrorError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT m.name, p.name, p.pk FROM sqlite_master m, pragma_table_info(m.name) p \
                 WHERE m.type = 'table' ORDER BY m.name, p.cid",
            )
            .map_err(|e| self.err(e))?;
        let mut out: HashMap<String, Vec<(String, bool)>> = HashMap::new();
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)? > 0,
                ))
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (table, col, pk) = row.map_err(|e| self.err(e))?;
            out.entry(table).or_default().push((col, pk));
        }
        Ok(out)
    }

    fn prepare(&mut self, plans: Vec<TablePlan>) -> Result<Vec<Option<i64>>, MirrorError> {
        self.plans = plans;
        let existing_tables = match self.existing.take() {
            Some(e) => e,
            None => self.existing_columns()?,
        };
        for i in 0..self.plans.len() {
            let plan = self.plans[i].clone();
            let existing = existing_tables.get(&plan.name).cloned().unwrap_or_default();
            if existing.is_empty() {
                self.begin()?;
                self.conn
                    .execute_batch(&plan.create_sql())
                    .map_err(self.failed(format!("creating {}", plan.name)))?;
            } else {
                for col in &plan.columns {
                    if !existing.iter().any(|(n, _)| n == &col.name) {
                        self.begin()?;
                        tracing::info!(
                            "{}: adding column {} the device gained",
                            plan.name,
                            col.name
                        );
                        self.conn
                            .execute_batch(&format!(
                                "ALTER TABLE {} ADD COLUMN {} {}",
                                sqlite_quote(&plan.name),
                                sqlite_quote(&col.name),
                                col.sql_type.as_str()
                            ))
                            .map_err(self.failed(format!("altering {}", plan.name)))?;
                    }
                }
                let local_pk: Vec<&String> = existing
                    .iter()
                    .filter(|(_, pk)| *pk)
                    .map(|(n, _)| n)
                    .collect();
                if plan.mode == CopyMode::ById && local_pk != vec![&"id".to_string()] {
                    self.migrate_to_primary_key(&plan)?;
                }
            }
        }
        // All staging tables at once: each schema change makes SQLite re-prepare statements.
        let staging: String = (0..self.plans.len())
            .filter(|&i| self.plans[i].mode == CopyMode::WholeTable)
            .map(|i| {
                format!(
                    "CREATE TEMP TABLE {STAGING}_{i} AS SELECT {} FROM main.{} WHERE 0;",
                    self.plans[i].sqlite_columns(),
                    sqlite_quote(&self.plans[i].name)
                )
            })
            .collect();
        self.conn
            .execute_batch(&staging)
            .map_err(self.failed("creating staging tables".into()))?;
        let by_id: Vec<usize> = (0..self.plans.len())
            .filter(|&i| self.plans[i].mode == CopyMode::ById)
            .collect();
        let maxes = self.max_ids(&by_id)?;
        Ok((0..self.plans.len())
            .map(|i| maxes.get(&i).copied().flatten())
            .collect())
    }

    /// `MAX(id)` of several plans in one query.
    fn max_ids(&self, plans: &[usize]) -> Result<HashMap<usize, Option<i64>>, MirrorError> {
        if plans.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = plans
            .iter()
            .map(|&i| {
                format!(
                    "SELECT {i}, MAX(id) FROM {}",
                    sqlite_quote(&self.plans[i].name)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)? as usize, r.get::<_, Option<i64>>(1)?))
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<HashMap<_, _>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// A mirror written by a version that did not keep the key: rebuild the table with it,
    /// dropping duplicate ids (upstream `_migrate_table_schema`, but in SQL, not in memory).
    fn migrate_to_primary_key(&mut self, plan: &TablePlan) -> Result<(), MirrorError> {
        self.begin()?;
        let tmp = format!("{}_etho_migrating", plan.name);
        let mut tmp_plan = plan.clone();
        tmp_plan.name = tmp.clone();
        let cols = plan.sqlite_columns();
        let before: i64 = self
            .conn
            .query_row(
                &format!("SELECT COUNT(*) FROM {}", sqlite_quote(&plan.name)),
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let sql = format!(
            "DROP TABLE IF EXISTS {t}; {create}; \
             INSERT OR IGNORE INTO {t} ({cols}) SELECT {cols} FROM {old} WHERE id IS NOT NULL ORDER BY id; \
             DROP TABLE {old}; ALTER TABLE {t} RENAME TO {old};",
            t = sqlite_quote(&tmp),
            create = tmp_plan.create_sql(),
            old = sqlite_quote(&plan.name),
        );
        self.conn
            .execute_batch(&sql)
            .map_err(self.failed(format!("adding the primary key to {}", plan.name)))?;
        let after: i64 = self
            .conn
            .query_row(
                &format!("SELECT COUNT(*) FROM {}", sqlite_quote(&plan.name)),
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        tracing::warn!(
            "{}: rebuilt with its primary key; {} duplicate rows dropped",
            plan.name,
            before - after
        );
        Ok(())
    }

    fn count(&self, table: &str) -> Result<u64, MirrorError> {
        self.conn
            .query_row(
                &format!("SELECT COUNT(*) FROM {}", sqlite_quote(table)),
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.err(e))
    }

    /// The staging table of a keyless plan: a temporary table with the mirror table's declared
    /// types, so staged values get the same affinity as stored ones.
    fn staging(plan: usize) -> String {
        format!("temp.{STAGING}_{plan}")
    }

    fn insert_sql(table: &str, plan: &TablePlan, rows: usize) -> String {
        let width = plan.columns.len();
        let tuples = (0..rows)
            .map(|r| {
                let params = (1..=width)
                    .map(|c| format!("?{}", r * width + c))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("({params})")
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {table} ({}) VALUES {tuples}",
            plan.sqlite_columns()
        )
    }

    fn rows(&mut self, values: Vec<Lite>) -> Result<(), MirrorError> {
        let (plan, table) = match self.current {
            Current::ById { plan, .. } => (plan, sqlite_quote(&self.plans[plan].name)),
            Current::Whole { plan, .. } => (plan, Self::staging(plan)),
            Current::None => return Err(MirrorError::Internal("rows without a table")),
        };
        let p = &self.plans[plan];
        let width = p.columns.len().max(1);
        if !values.chunks_exact(width).remainder().is_empty() {
            return Err(MirrorError::Internal(
                "a batch of values does not divide into rows",
            ));
        }
        let n = (values.len() / width) as u64;
        let bytes: u64 = values.iter().map(|v| value_size(v) as u64).sum();
        // Several rows per statement: SQLite opens its table cursor once per execution, which
        // is most of the per-row cost of single-row INSERTs.
        let per_stmt = (MAX_PARAMS / width).clamp(1, MAX_ROWS_PER_INSERT);
        let err = |source: rusqlite::Error| {
            let what = format!("inserting into {}", p.name);
            MirrorError::local(&self.db_path, LocalError::Statement { what, source })
        };
        let mut chunks = values.chunks_exact(width * per_stmt);
        {
            let mut stmt = self
                .conn
                .prepare_cached(&Self::insert_sql(&table, p, per_stmt))
                .map_err(err)?;
            for chunk in chunks.by_ref() {
                for (i, v) in chunk.iter().enumerate() {
                    stmt.raw_bind_parameter(i + 1, v).map_err(err)?;
                }
                stmt.raw_execute().map_err(err)?;
            }
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut stmt = self
                .conn
                .prepare_cached(&Self::insert_sql(&table, p, 1))
                .map_err(err)?;
            for row in rest.chunks_exact(width) {
                for (i, v) in row.iter().enumerate() {
                    stmt.raw_bind_parameter(i + 1, v).map_err(err)?;
                }
                stmt.raw_execute().map_err(err)?;
            }
        }
        match &mut self.current {
            Current::ById { inserted, .. } => {
                *inserted += n;
                self.pending_rows += n;
                self.since_commit_rows += n;
                self.since_commit_bytes += bytes;
                if self.since_commit_rows >= self.setup.commit_rows
                    || self.since_commit_bytes >= self.setup.commit_bytes
                    || self.last_commit.elapsed() >= self.setup.commit_interval
                {
                    self.commit()?;
                    self.begin()?;
                }
            }
            Current::Whole { staged, .. } => *staged += n,
            Current::None => {}
        }
        Ok(())
    }

    /// Multiset difference (both directions) between the mirror table and the staged rows.
    fn differs(&self, index: usize, plan: &TablePlan) -> Result<bool, MirrorError> {
        let cols = plan.sqlite_columns();
        let t = sqlite_quote(&plan.name);
        let s = Self::staging(index);
        let sql = format!(
            "SELECT EXISTS (SELECT {cols}, COUNT(*) FROM main.{t} GROUP BY {cols} \
                            EXCEPT SELECT {cols}, COUNT(*) FROM {s} GROUP BY {cols}) \
                 OR EXISTS (SELECT {cols}, COUNT(*) FROM {s} GROUP BY {cols} \
                            EXCEPT SELECT {cols}, COUNT(*) FROM main.{t} GROUP BY {cols})"
        );
        self.conn
            .query_row(&sql, [], |r| r.get::<_, bool>(0))
            .map_err(|e| self.err(e))
    }

    fn end_whole(&mut self) -> Result<KeylessResult, MirrorError> {
        let Current::Whole { plan, staged } = self.current else {
            return Err(MirrorError::Internal("end of a table never begun"));
        };
        let p = self.plans[plan].clone();
        let mut rewritten = false;
        if self.differs(plan, &p)? {
            let cols = p.sqlite_columns();
            let t = sqlite_quote(&p.name);
            let s = Self::staging(plan);
            self.conn
                .execute_batch(&format!(
                    "DELETE FROM main.{t}; INSERT INTO main.{t} ({cols}) SELECT {cols} FROM {s};"
                ))
                .map_err(self.failed(format!("rewriting {}", p.name)))?;
            rewritten = true;
        }
        let equal = !rewritten || !self.differs(plan, &p)?;
        let local_rows = self.count(&p.name)?;
        Ok(KeylessResult {
            remote_rows: staged,
            local_rows,
            rewritten,
            equal,
        })
    }

    fn duplicates(&self, table: &str) -> Result<bool, MirrorError> {
        if !self.plans.iter().any(|p| p.name == table) {
            return Ok(false);
        }
        let t = sqlite_quote(table);
        self.conn
            .query_row(
                &format!(
                    "SELECT (SELECT COUNT(*) FROM {t}) > (SELECT COUNT(*) FROM (SELECT DISTINCT * FROM {t}))"
                ),
                [],
                |r| r.get::<_, bool>(0),
            )
            .map_err(|e| self.err(e))
    }

    fn finish(&mut self, count: &[usize], max: &[usize]) -> Result<Finished, MirrorError> {
        self.commit()?;
        let has_dam = self.plans.iter().any(|p| p.name == sidecar::DAM_TABLE);
        let dam_lines = if has_dam {
            sidecar::update(&self.conn, &self.txt_path)
                .map_err(|e| MirrorError::local(&self.db_path, e))?
        } else {
            sidecar::touch(&self.txt_path).map_err(|e| MirrorError::local(&self.db_path, e))?;
            0
        };
        let local_max = self.max_ids(max)?;
        let mut local_count = HashMap::new();
        for &i in count {
            local_count.insert(i, self.count(&self.plans[i].name)?);
        }
        let data_duplication = self.duplicates("METADATA")? || self.duplicates("VAR_MAP")?;
        let file_size = std::fs::metadata(&self.db_path)
            .map(|m| m.len())
            .unwrap_or(0);
        let newest_frame_at = self.newest_frame_at()?;
        Ok(Finished {
            local_max,
            local_count,
            data_duplication,
            file_size,
            fingerprint_after: fingerprint(&self.db_path),
            dam_lines,
            newest_frame_at,
        })
    }

    /// The mirror's newest frame time (see [`Finished::newest_frame_at`]).
    fn newest_frame_at(&self) -> Result<Option<f64>, MirrorError> {
        let mut last_t: Option<i64> = None;
        for plan in &self.plans {
            let framed = plan.mode == CopyMode::ById
                && etho_model::status::is_roi_table(&plan.name)
                && plan.columns.iter().any(|c| c.name == "t")
                && plan.primary_key == ["id"];
            if !framed {
                continue;
            }
            let t: Option<i64> = self
                .conn
                .query_row(&last_frame_sql(&sqlite_quote(&plan.name)), [], |r| {
                    r.get::<_, Option<f64>>(0)
                })
                .map(|t| t.map(|t| t as i64))
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(self.err(e)),
                })?;
            last_t = last_t.max(t);
        }
        if !self.plans.iter().any(|p| p.name == "METADATA") {
            return Ok(None);
        }
        let date_time: Option<String> = self
            .conn
            .query_row(
                "SELECT CAST(value AS TEXT) FROM METADATA WHERE field = 'date_time' LIMIT 1",
                [],
                |r| r.get(0),
            )
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(self.err(e)),
            })?;
        Ok(etho_model::status::newest_frame_at(
            date_time.as_deref(),
            last_t,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{plan_tables, RemoteColumn, RemoteTable};

    const FILE: &str = "2025-07-10_10-00-00_0123456789abcdef0123456789abcdef.db";

    fn col(name: &str, ty: &str, primary: bool) -> RemoteColumn {
        RemoteColumn {
            name: name.into(),
            column_type: ty.into(),
            primary,
        }
    }

    /// ROI_1 (id-keyed) and VAR_MAP (keyless).
    fn plans() -> Vec<TablePlan> {
        let tables = [
            RemoteTable {
                name: "ROI_1".into(),
                columns: vec![col("id", "int(11)", true), col("x", "smallint(6)", false)],
            },
            RemoteTable {
                name: "VAR_MAP".into(),
                columns: vec![
                    col("var_name", "char(100)", false),
                    col("functional_type", "char(100)", false),
                ],
            },
        ];
        let (plans, skipped) = plan_tables(&tables);
        assert!(skipped.is_empty());
        plans
    }

    struct Job {
        tx: mpsc::Sender<Cmd>,
        join: tokio::task::JoinHandle<Result<WriterSummary, MirrorError>>,
        cancel: CancellationToken,
    }

    fn start(results: &Path) -> Job {
        let (tx, rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let setup = WriterSetup {
            results_dir: results.to_path_buf(),
            relative_dir: PathBuf::from(
                "0123456789abcdef0123456789abcdef/ETHOSCOPE_001/2025-07-10_10-00-00",
            ),
            file_name: FILE.into(),
            commit_rows: 1000,
            commit_bytes: 1 << 20,
            commit_interval: Duration::from_secs(60),
        };
        let join = spawn(setup, rx, cancel.clone());
        Job { tx, join, cancel }
    }

    impl Job {
        async fn send(&self, cmd: Cmd) {
            self.tx
                .send(cmd)
                .await
                .unwrap_or_else(|_| panic!("writer gone"));
        }

        async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> T {
            let (reply, answer) = oneshot::channel();
            self.send(make(reply)).await;
            answer.await.unwrap()
        }

        async fn prepare(&self) -> Prepared {
            self.ask(|reply| Cmd::Prepare {
                plans: plans(),
                reply,
            })
            .await
        }

        async fn rows(&self, plan: usize, by_id: bool, values: Vec<Lite>) {
            self.send(if by_id {
                Cmd::BeginById { plan }
            } else {
                Cmd::BeginWhole { plan }
            })
            .await;
            self.send(Cmd::Rows { values }).await;
        }
    }

    fn roi(ids: std::ops::RangeInclusive<i64>) -> Vec<Lite> {
        ids.flat_map(|i| [Lite::Integer(i), Lite::Integer(i * 10)])
            .collect()
    }

    fn vars(names: &[&str]) -> Vec<Lite> {
        names
            .iter()
            .flat_map(|n| [Lite::Text(n.to_string()), Lite::Text("distance".into())])
            .collect()
    }

    fn count(db: &Path, table: &str) -> i64 {
        Connection::open(db)
            .unwrap()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// The newest frame is `METADATA.date_time` plus the last ROI row's `t` / 1000, found by
    /// rowid lookups (no scan), and unknown without ROI rows.
    #[tokio::test]
    async fn finish_measures_the_newest_frame_without_a_scan() {
        let tables = [
            RemoteTable {
                name: "ROI_1".into(),
                columns: vec![col("id", "int(11)", true), col("t", "int(11)", false)],
            },
            RemoteTable {
                name: "ROI_2".into(),
                columns: vec![col("id", "int(11)", true), col("t", "int(11)", false)],
            },
            RemoteTable {
                name: "METADATA".into(),
                columns: vec![
                    col("field", "char(100)", false),
                    col("value", "text", false),
                ],
            },
        ];
        let (plans, _) = plan_tables(&tables);
        let dir = tempfile::tempdir().unwrap();
        let job = start(dir.path());
        let finish = |job: Job| async move {
            let finished = job
                .ask(|reply| Cmd::Finish {
                    count_rows_of: vec![],
                    max_id_of: vec![],
                    reply,
                })
                .await;
            job.join.await.unwrap().unwrap();
            finished.newest_frame_at
        };
        job.ask(|reply| Cmd::Prepare {
            plans: plans.clone(),
            reply,
        })
        .await;
        let meta = |v: &str| vec![Lite::Text("date_time".into()), Lite::Text(v.into())];
        job.rows(2, false, meta("1752141600.0")).await;
        job.ask(|reply| Cmd::EndWhole { reply }).await;
        assert_eq!(finish(job).await, None, "no ROI rows yet");

        let job = start(dir.path());
        job.ask(|reply| Cmd::Prepare {
            plans: plans.clone(),
            reply,
        })
        .await;
        let frames = |rows: &[(i64, i64)]| {
            rows.iter()
                .flat_map(|(id, t)| [Lite::Integer(*id), Lite::Integer(*t)])
                .collect()
        };
        job.rows(0, true, frames(&[(1, 500), (2, 1_000), (3, 61_250)]))
            .await;
        job.ask(|reply| Cmd::EndById { reply }).await;
        job.rows(1, true, frames(&[(1, 400), (2, 60_000)])).await;
        job.ask(|reply| Cmd::EndById { reply }).await;
        assert_eq!(finish(job).await, Some(1_752_141_661.25));

        let db = dir.path().join(format!(
            "0123456789abcdef0123456789abcdef/ETHOSCOPE_001/2025-07-10_10-00-00/{FILE}"
        ));
        let conn = Connection::open(&db).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                last_frame_sql("\"ROI_1\"")
            ))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|l| l.contains("USING INTEGER PRIMARY KEY")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|l| l.starts_with("SCAN")), "{plan:?}");
    }

    /// A first job creates the tables, inserts the id-keyed rows, makes the keyless table equal
    /// to the device's, and measures what it was asked to; a second job sees where to continue
    /// and leaves an equal keyless table alone.
    #[tokio::test]
    async fn jobs_insert_sync_measure_and_continue() {
        let dir = tempfile::tempdir().unwrap();
        let job = start(dir.path());
        let prepared = job.prepare().await;
        assert_eq!(prepared.local_max, vec![None, None]);
        assert_eq!(prepared.fingerprint_before, None, "a new file");
        job.rows(0, true, roi(1..=3)).await;
        assert_eq!(job.ask(|reply| Cmd::EndById { reply }).await, 3);
        job.rows(1, false, vars(&["x", "y"])).await;
        let keyless = job.ask(|reply| Cmd::EndWhole { reply }).await;
        assert_eq!(
            (
                keyless.remote_rows,
                keyless.local_rows,
                keyless.rewritten,
                keyless.equal
            ),
            (2, 2, true, true)
        );
        let finished = job
            .ask(|reply| Cmd::Finish {
                count_rows_of: vec![0],
                max_id_of: vec![0],
                reply,
            })
            .await;
        assert_eq!(finished.local_count, HashMap::from([(0, 3)]));
        assert_eq!(finished.local_max, HashMap::from([(0, Some(3))]));
        assert!(!finished.data_duplication);
        assert!(finished.file_size > 0);
        let summary = job.join.await.unwrap().unwrap();
        assert_eq!(summary.rows_inserted, 3);
        let db = prepared.db_path.clone();
        assert_eq!(count(&db, "ROI_1"), 3);
        assert!(db.with_extension("txt").exists(), "the DAM dump is created");

        let job = start(dir.path());
        let again = job.prepare().await;
        assert_eq!(again.local_max, vec![Some(3), None]);
        assert_eq!(
            again.fingerprint_before, finished.fingerprint_after,
            "file unchanged"
        );
        job.rows(1, false, vars(&["y", "x"])).await;
        let keyless = job.ask(|reply| Cmd::EndWhole { reply }).await;
        assert!(
            !keyless.rewritten && keyless.equal,
            "same multiset, untouched"
        );
        job.rows(0, true, roi(4..=5)).await;
        assert_eq!(job.ask(|reply| Cmd::EndById { reply }).await, 2);
        job.ask(|reply| Cmd::Finish {
            count_rows_of: vec![],
            max_id_of: vec![0],
            reply,
        })
        .await;
        job.join.await.unwrap().unwrap();
        assert_eq!(count(&db, "ROI_1"), 5);
    }

    /// Keyless tables are multisets: a duplicate row on the device is kept once per copy, and a
    /// table that changed on the device is rewritten whole by the next job.
    #[tokio::test]
    async fn keyless_tables_follow_the_device_as_multisets() {
        let dir = tempfile::tempdir().unwrap();
        for (names, rows, dup) in [(&["x", "x", "y"][..], 3, true), (&["x", "y"][..], 2, false)] {
            let job = start(dir.path());
            job.prepare().await;
            job.rows(1, false, vars(names)).await;
            let result = job.ask(|reply| Cmd::EndWhole { reply }).await;
            assert_eq!(
                (
                    result.remote_rows,
                    result.local_rows,
                    result.rewritten,
                    result.equal
                ),
                (rows, rows, true, true),
                "{names:?}"
            );
            let finished = job
                .ask(|reply| Cmd::Finish {
                    count_rows_of: vec![],
                    max_id_of: vec![],
                    reply,
                })
                .await;
            assert_eq!(finished.data_duplication, dup, "{names:?}");
            job.join.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_second_writer_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = start(dir.path());
        first.prepare().await; // the file is open and locked now
        let second = start(dir.path());
        drop(second.tx);
        let err = second.join.await.unwrap().unwrap_err();
        assert!(matches!(err, MirrorError::Locked(_)), "{err}");
        drop(first.tx);
        assert!(
            first.join.await.unwrap().is_err(),
            "abandoned, not finished"
        );
    }

    /// A cancelled or abandoned job keeps what it received (a prefix in id order), so the next
    /// job continues from there.
    #[tokio::test]
    async fn cancelled_and_abandoned_jobs_keep_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let job = start(dir.path());
        let prepared = job.prepare().await;
        job.rows(0, true, roi(1..=4)).await;
        // The reply says the rows are in (not yet committed): then the job is cancelled.
        assert_eq!(job.ask(|reply| Cmd::EndById { reply }).await, 4);
        job.cancel.cancel();
        job.send(Cmd::BeginById { plan: 0 }).await;
        let err = job.join.await.unwrap().unwrap_err();
        assert!(
            matches!(err, MirrorError::Cancelled { rows_copied: 4 }),
            "{err}"
        );
        assert_eq!(count(&prepared.db_path, "ROI_1"), 4);

        let job = start(dir.path());
        assert_eq!(job.prepare().await.local_max[0], Some(4));
        job.rows(0, true, roi(5..=7)).await;
        drop(job.tx);
        let err = job.join.await.unwrap().unwrap_err();
        assert!(matches!(err, MirrorError::Internal(_)), "{err}");
        assert_eq!(count(&prepared.db_path, "ROI_1"), 7);
    }

    /// A mirror written without the primary key (an older version) is rebuilt with it; duplicate
    /// ids are dropped.
    #[tokio::test]
    async fn a_legacy_table_gets_its_primary_key() {
        let dir = tempfile::tempdir().unwrap();
        let exp = dir
            .path()
            .join("0123456789abcdef0123456789abcdef/ETHOSCOPE_001/2025-07-10_10-00-00");
        std::fs::create_dir_all(&exp).unwrap();
        let conn = Connection::open(exp.join(FILE)).unwrap();
        conn.execute_batch(
            "CREATE TABLE ROI_1 (id INTEGER, x INTEGER);
             INSERT INTO ROI_1 VALUES (1, 10), (1, 10), (2, 20);",
        )
        .unwrap();
        drop(conn);
        let job = start(dir.path());
        let prepared = job.prepare().await;
        assert_eq!(prepared.local_max[0], Some(2));
        job.ask(|reply| Cmd::Finish {
            count_rows_of: vec![0],
            max_id_of: vec![],
            reply,
        })
        .await;
        job.join.await.unwrap().unwrap();
        assert_eq!(count(&prepared.db_path, "ROI_1"), 2);
        let pk: i64 = Connection::open(&prepared.db_path)
            .unwrap()
            .query_row(
                "SELECT pk FROM pragma_table_info('ROI_1') WHERE name = 'id'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(pk, 1);
    }

    /// Rows that do not divide into the table's columns are a bug on the remote side, refused
    /// before anything is written.
    #[tokio::test]
    async fn a_torn_batch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let job = start(dir.path());
        job.prepare().await;
        job.rows(0, true, vec![Lite::Integer(1)]).await;
        let err = job.join.await.unwrap().unwrap_err();
        assert!(matches!(err, MirrorError::Internal(_)), "{err}");
    }
}
