//! The run history: the last [`HISTORY_LIMIT`] finished jobs of every device, in SQLite.
//!
//! The status table keeps only a device's last job, so a device that fails every night and
//! succeeds once in the morning looks fine there. Each finished job (including the ones the
//! scheduler stopped) is appended here as a [`RunRecord`], and older runs of that device beyond
//! the limit are deleted in the same transaction. The file is `history.db` beside `status.db`
//! in the state directory, so history survives restarts; without a state directory it lives in
//! an in-memory database.
//!
//! Every access runs on a blocking thread ([`tokio::task::spawn_blocking`]) and holds the one
//! connection only for one short statement or transaction; serving `GET /history/<id>` never
//! waits for a job.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use etho_model::history::{bounded_message, RunOutcome, RunRecord, HISTORY_LIMIT};
use etho_model::kind::BackupKind;

/// The run history of one daemon. Cheap to clone.
#[derive(Clone)]
pub struct HistoryStore {
    conn: Arc<Mutex<rusqlite::Connection>>,
}

impl std::fmt::Debug for HistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryStore").finish_non_exhaustive()
    }
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    outcome TEXT NOT NULL,
    message TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    rows INTEGER,
    files INTEGER NOT NULL,
    kinds TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_device ON runs (device_id, seq);";

impl HistoryStore {
    /// Opens (creating) `<state_dir>/history.db`.
    pub fn open(state_dir: &Path) -> anyhow::Result<HistoryStore> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let path = state_dir.join("history.db");
        let conn = rusqlite::Connection::open(&path)
            .and_then(prepare)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(HistoryStore::with(conn))
    }

    /// A history that is not persisted (tests, daemons without a state directory).
    pub fn in_memory() -> HistoryStore {
        let conn = rusqlite::Connection::open_in_memory()
            .and_then(prepare)
            .expect("an in-memory SQLite database always opens");
        HistoryStore::with(conn)
    }

    fn with(conn: rusqlite::Connection) -> HistoryStore {
        HistoryStore {
            conn: Arc::new(Mutex::new(conn)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, rusqlite::Connection> {
        // A statement that panicked left no transaction open (rusqlite rolls back on drop).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a run of `device_id` and keeps only its newest [`HISTORY_LIMIT`] runs (blocking).
    pub fn record_blocking(&self, device_id: &str, run: &RunRecord) -> rusqlite::Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO runs (device_id, start, end, outcome, message, bytes, rows, files, kinds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![
                device_id,
                run.start,
                run.end,
                run.outcome.as_str(),
                bounded_message(&run.message),
                clamp(run.bytes),
                run.rows.map(clamp),
                clamp(run.files),
                kinds_text(&run.kinds),
            ],
        )?;
        tx.execute(
            "DELETE FROM runs WHERE device_id = ?1 AND seq <= (
                 SELECT seq FROM runs WHERE device_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            rusqlite::params![device_id, HISTORY_LIMIT as i64],
        )?;
        tx.commit()
    }

    /// [`HistoryStore::record_blocking`] on a blocking thread; a failure is logged (a lost
    /// history line must not fail the backup it describes).
    pub async fn record(&self, device_id: &str, run: RunRecord) {
        let store = self.clone();
        let id = device_id.to_string();
        let done = tokio::task::spawn_blocking(move || store.record_blocking(&id, &run)).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!("cannot record the run of {device_id}: {err}"),
            Err(err) => tracing::error!("recording the run of {device_id} failed: {err}"),
        }
    }

    /// The runs of `device_id`, newest first (blocking).
    pub fn runs_blocking(&self, device_id: &str) -> rusqlite::Result<Vec<RunRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT start, end, outcome, message, bytes, rows, files, kinds FROM runs
             WHERE device_id = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(rusqlite::params![device_id, HISTORY_LIMIT as i64], |r| {
            let outcome: String = r.get(2)?;
            let kinds: String = r.get(7)?;
            Ok(RunRecord {
                start: r.get(0)?,
                end: r.get(1)?,
                outcome: RunOutcome::parse(&outcome).unwrap_or(RunOutcome::Error),
                message: r.get(3)?,
                bytes: unclamp(r.get(4)?),
                rows: r.get::<_, Option<i64>>(5)?.map(unclamp),
                files: unclamp(r.get(6)?),
                kinds: parse_kinds(&kinds),
            })
        })?;
        rows.collect()
    }

    /// [`HistoryStore::runs_blocking`] on a blocking thread.
    pub async fn runs(&self, device_id: &str) -> anyhow::Result<Vec<RunRecord>> {
        let store = self.clone();
        let id = device_id.to_string();
        tokio::task::spawn_blocking(move || store.runs_blocking(&id))
            .await
            .context("history task failed")?
            .context("cannot read the run history")
    }

    /// For every device with history: how many of its newest runs failed in a row (blocking;
    /// read once at startup to seed the metrics).
    pub fn failure_streaks_blocking(&self) -> rusqlite::Result<BTreeMap<String, u64>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT device_id, outcome FROM runs ORDER BY device_id, seq DESC")?;
        let mut rows = stmt.query([])?;
        let mut streaks = BTreeMap::new();
        let mut current: Option<(String, bool)> = None; // (device, streak still counting)
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let failed = row.get::<_, String>(1)? == RunOutcome::Error.as_str();
            let counting = match &current {
                Some((cur, counting)) if *cur == id => *counting,
                _ => {
                    streaks.insert(id.clone(), 0);
                    true
                }
            };
            let still = counting && failed;
            if still {
                *streaks.entry(id.clone()).or_insert(0) += 1;
            }
            current = Some((id, still));
        }
        Ok(streaks)
    }
}

fn prepare(conn: rusqlite::Connection) -> rusqlite::Result<rusqlite::Connection> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unclamp(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn kinds_text(kinds: &[BackupKind]) -> String {
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_kinds(text: &str) -> Vec<BackupKind> {
    text.split(',')
        .filter_map(|w| BackupKind::ALL.into_iter().find(|k| k.as_str() == w))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";
    const OTHER: &str = "fedcba9876543210fedcba9876543210";

    fn run(i: u32, outcome: RunOutcome) -> RunRecord {
        RunRecord {
            start: f64::from(i) * 10.0,
            end: f64::from(i) * 10.0 + 2.5,
            outcome,
            message: format!("run {i}"),
            bytes: u64::from(i) * 100,
            rows: i.is_multiple_of(2).then_some(u64::from(i)),
            files: u64::from(i),
            kinds: vec![BackupKind::Results, BackupKind::Videos],
        }
    }

    #[test]
    fn history_survives_a_reopen_and_is_capped_per_device() {
        let dir = tempfile::tempdir().unwrap();
        {
            let h = HistoryStore::open(dir.path()).unwrap();
            for i in 0..250 {
                h.record_blocking(ID, &run(i, RunOutcome::Success)).unwrap();
            }
            h.record_blocking(OTHER, &run(1, RunOutcome::Error))
                .unwrap();
        }
        let h = HistoryStore::open(dir.path()).unwrap();
        let runs = h.runs_blocking(ID).unwrap();
        assert_eq!(runs.len(), HISTORY_LIMIT);
        assert_eq!(runs[0], run(249, RunOutcome::Success), "newest first");
        assert_eq!(runs[HISTORY_LIMIT - 1].message, "run 50", "oldest kept");
        assert_eq!(h.runs_blocking(OTHER).unwrap().len(), 1, "per device");
        assert!(h.runs_blocking("unknown").unwrap().is_empty());
        let rows: i64 = h
            .lock()
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 201, "older runs are deleted, not just hidden");
    }

    #[test]
    fn failure_streaks_count_the_newest_errors() {
        let h = HistoryStore::in_memory();
        for (i, o) in [
            RunOutcome::Error,
            RunOutcome::Success,
            RunOutcome::Error,
            RunOutcome::Warning,
            RunOutcome::Error,
            RunOutcome::Error,
        ]
        .into_iter()
        .enumerate()
        {
            h.record_blocking(ID, &run(i as u32, o)).unwrap();
        }
        h.record_blocking(OTHER, &run(0, RunOutcome::Error))
            .unwrap();
        h.record_blocking(OTHER, &run(1, RunOutcome::Success))
            .unwrap();
        let streaks = h.failure_streaks_blocking().unwrap();
        assert_eq!(streaks.get(ID), Some(&2));
        assert_eq!(streaks.get(OTHER), Some(&0));
    }

    #[test]
    fn long_messages_are_bounded() {
        let h = HistoryStore::in_memory();
        let mut r = run(1, RunOutcome::Error);
        r.message = "x".repeat(100_000);
        h.record_blocking(ID, &r).unwrap();
        let back = h.runs_blocking(ID).unwrap();
        assert!(back[0].message.len() <= etho_model::history::MESSAGE_LIMIT);
    }
}
