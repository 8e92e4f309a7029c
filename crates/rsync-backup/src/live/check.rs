//! Checks a built copy must pass before it replaces the last good copy.
//!
//! - `PRAGMA integrity_check` up to [`INTEGRITY_CHECK_MAX_BYTES`], `quick_check` above. On an
//!   ethoscope database (rowid tables, no secondary index) both read every page and cost the same
//!   (a 200 MB file: 2.19 s vs 2.29 s on the development machine); integrity_check's extra work is
//!   cross-checking indexes, which grows faster than the file (1.8x quick_check on the same
//!   file with three indexes). Past 256 MiB the check runs on every cycle of a live device, so
//!   it is bounded to the linear one;
//! - every table of the last good copy is still there;
//! - per table, the row count and `max(id)` (tables with an `id` column) are not below the last
//!   good copy's: result tables only grow, so a smaller copy lost data.
//!
//! The last good copy's figures are kept in the state directory ([`TableStats`]), so the old
//! file is not re-read every cycle. The same pass notes what the node's health view needs: the
//! `t` of each ROI table's last row and `METADATA.date_time` ([`Inspection`]), two rowid lookups
//! and one small read beside the counts that read every page anyway.

use std::collections::BTreeMap;
use std::path::Path;

use etho_model::health::last_frame_sql;
use rusqlite::{Connection, OpenFlags};
use tokio_util::sync::CancellationToken;

/// Largest database checked with `integrity_check`; larger ones get `quick_check`.
pub const INTEGRITY_CHECK_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Row count and largest id of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableStats {
    /// `count(*)`.
    pub rows: u64,
    /// `max(id)`, for tables with an `id` column that hold rows.
    pub max_id: Option<i64>,
    /// ROI tables: the `t` (ms since the experiment started) of the row with the largest id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_t: Option<i64>,
}

/// What [`inspect`] found in a copy that passed its checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    /// Every table's figures.
    pub tables: BTreeMap<String, TableStats>,
    /// `METADATA.date_time` as the device wrote it (epoch seconds as text).
    pub date_time: Option<String>,
}

/// Why a copy was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum CheckFailure {
    /// The job was cancelled before or during the check.
    #[error("the check was cancelled")]
    Cancelled,
    /// SQLite could not open or read it.
    #[error("unreadable: {0}")]
    Unreadable(#[source] rusqlite::Error),
    /// The thread reading the table figures panicked.
    #[error("unreadable: table figures failed")]
    FiguresFailed,
    /// integrity_check / quick_check complained.
    #[error("failed the integrity check ({check}: {detail})")]
    Integrity {
        /// Which check.
        check: &'static str,
        /// Its first complaints.
        detail: String,
    },
    /// A table of the last good copy is missing.
    #[error("table {0} of the last good copy is missing")]
    MissingTable(String),
    /// A table has fewer rows than in the last good copy.
    #[error("table {table} has {now} rows, fewer than the {before} of the last good copy")]
    FewerRows {
        /// Table.
        table: String,
        /// Rows in the last good copy.
        before: u64,
        /// Rows now.
        now: u64,
    },
    /// A table's largest id went down.
    #[error(
        "table {table}'s largest id is {}, below the {before} of the last good copy",
        .now.map_or("none".to_string(), |v| v.to_string())
    )]
    LowerMaxId {
        /// Table.
        table: String,
        /// In the last good copy.
        before: i64,
        /// Now (`None`: no rows).
        now: Option<i64>,
    },
}

/// Compares a copy's figures with the last good copy's (pure).
pub fn compare(
    last: &BTreeMap<String, TableStats>,
    now: &BTreeMap<String, TableStats>,
) -> Result<(), CheckFailure> {
    for (table, before) in last {
        let Some(current) = now.get(table) else {
            return Err(CheckFailure::MissingTable(table.clone()));
        };
        if current.rows < before.rows {
            return Err(CheckFailure::FewerRows {
                table: table.clone(),
                before: before.rows,
                now: current.rows,
            });
        }
        if let Some(b) = before.max_id {
            if current.max_id.is_none_or(|n| n < b) {
                return Err(CheckFailure::LowerMaxId {
                    table: table.clone(),
                    before: b,
                    now: current.max_id,
                });
            }
        }
    }
    Ok(())
}

/// Opens a single-file database read-only without creating or reading companions.
pub fn open_immutable(path: &Path) -> rusqlite::Result<Connection> {
    let mut escaped = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' | '?' | '#' => escaped.push_str(&format!("%{:02X}", c as u32)),
            c => escaped.push(c),
        }
    }
    Connection::open_with_flags(
        format!("file:{escaped}?immutable=1"),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Runs the integrity check suited to the file's size and collects every table's figures. Both
/// read the whole file; they run on two threads (two read-only connections), so a cycle waits
/// for the longer one only. Both stop when `cancel` fires (a job that timed out does not keep
/// checking a large or hostile file in the background).
pub fn inspect(path: &Path, cancel: &CancellationToken) -> Result<Inspection, CheckFailure> {
    if cancel.is_cancelled() {
        return Err(CheckFailure::Cancelled);
    }
    // A file that cannot be stat'ed cannot be opened either: SQLite says why.
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let check = if size <= INTEGRITY_CHECK_MAX_BYTES {
        "integrity_check"
    } else {
        "quick_check"
    };
    let (checked, stats) = std::thread::scope(|scope| {
        let stats = scope.spawn(|| {
            open_immutable(path)
                .and_then(|c| {
                    let _stop = stop_on(&c, cancel);
                    table_stats(&c)
                })
                .map_err(CheckFailure::Unreadable)
        });
        let checked = integrity(path, check, cancel);
        let stats = stats.join().unwrap_or(Err(CheckFailure::FiguresFailed));
        (checked, stats)
    });
    if cancel.is_cancelled() {
        return Err(CheckFailure::Cancelled);
    }
    checked?;
    stats
}

/// Interrupts SQLite's work on a connection (SQLITE_INTERRUPT) once `cancel` fires, until
/// dropped. A watcher thread polls the token every 50 ms.
pub struct StopOn {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

/// Starts a [`StopOn`] for `conn`.
pub fn stop_on(conn: &Connection, cancel: &CancellationToken) -> StopOn {
    use std::sync::atomic::Ordering;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (handle, cancel, flag) = (conn.get_interrupt_handle(), cancel.clone(), done.clone());
    let watcher = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            if cancel.is_cancelled() {
                handle.interrupt();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    });
    StopOn {
        done,
        watcher: Some(watcher),
    }
}

impl Drop for StopOn {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

/// Runs `PRAGMA <check>(5)` (`integrity_check` or `quick_check`) on a single-file database
/// opened read-only ([`open_immutable`]); `cancel` interrupts it.
pub fn integrity(
    path: &Path,
    check: &'static str,
    cancel: &CancellationToken,
) -> Result<(), CheckFailure> {
    let conn = open_immutable(path).map_err(CheckFailure::Unreadable)?;
    let _stop = stop_on(&conn, cancel);
    let rows: Vec<String> = conn
        .prepare(&format!("PRAGMA {check}(5)"))
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(CheckFailure::Unreadable)?;
    if rows == ["ok"] {
        return Ok(());
    }
    Err(CheckFailure::Integrity {
        check,
        detail: if rows.is_empty() {
            "no answer".to_string()
        } else {
            rows.join("; ")
        },
    })
}

fn table_stats(conn: &Connection) -> rusqlite::Result<Inspection> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = BTreeMap::new();
    for name in names {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let columns = conn
            .prepare(&format!("PRAGMA table_info({quoted})"))?
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let has = |col: &str| columns.iter().any(|c| c.eq_ignore_ascii_case(col));
        let mut stats = if has("id") {
            conn.query_row(
                &format!("SELECT count(*), max(id) FROM {quoted}"),
                [],
                |r| {
                    Ok(TableStats {
                        rows: r.get::<_, i64>(0)?.max(0) as u64,
                        max_id: r.get::<_, Option<i64>>(1).unwrap_or(None),
                        last_t: None,
                    })
                },
            )?
        } else {
            conn.query_row(&format!("SELECT count(*) FROM {quoted}"), [], |r| {
                Ok(TableStats {
                    rows: r.get::<_, i64>(0)?.max(0) as u64,
                    max_id: None,
                    last_t: None,
                })
            })?
        };
        if stats.max_id.is_some() && has("t") && etho_model::status::is_roi_table(&name) {
            stats.last_t = conn
                .query_row(&last_frame_sql(&quoted), [], |r| r.get::<_, Option<f64>>(0))
                .map(|t| t.map(|t| t as i64))
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
        }
        out.insert(name, stats);
    }
    let date_time = if out.contains_key("METADATA") {
        conn.query_row(
            "SELECT CAST(value AS TEXT) FROM METADATA WHERE field = 'date_time' LIMIT 1",
            [],
            |r| r.get::<_, Option<String>>(0),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .unwrap_or(None)
    } else {
        None
    };
    Ok(Inspection {
        tables: out,
        date_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(rows: &[(&str, u64, Option<i64>)]) -> BTreeMap<String, TableStats> {
        rows.iter()
            .map(|(t, r, m)| {
                (
                    t.to_string(),
                    TableStats {
                        rows: *r,
                        max_id: *m,
                        last_t: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn comparison_table() {
        let last = stats(&[("ROI_1", 100, Some(100)), ("METADATA", 12, None)]);
        type Row = (
            &'static str,
            BTreeMap<String, TableStats>,
            Result<(), CheckFailure>,
        );
        let rows: Vec<Row> = vec![
            (
                "grown",
                stats(&[
                    ("ROI_1", 150, Some(150)),
                    ("METADATA", 13, None),
                    ("ROI_2", 1, Some(1)),
                ]),
                Ok(()),
            ),
            ("equal", last.clone(), Ok(())),
            (
                "table gone",
                stats(&[("ROI_1", 150, Some(150))]),
                Err(CheckFailure::MissingTable("METADATA".into())),
            ),
            (
                "rows lost",
                stats(&[("ROI_1", 99, Some(100)), ("METADATA", 12, None)]),
                Err(CheckFailure::FewerRows {
                    table: "ROI_1".into(),
                    before: 100,
                    now: 99,
                }),
            ),
            (
                "ids went back",
                stats(&[("ROI_1", 120, Some(90)), ("METADATA", 12, None)]),
                Err(CheckFailure::LowerMaxId {
                    table: "ROI_1".into(),
                    before: 100,
                    now: Some(90),
                }),
            ),
            (
                "emptied",
                stats(&[("ROI_1", 100, None), ("METADATA", 12, None)]),
                Err(CheckFailure::LowerMaxId {
                    table: "ROI_1".into(),
                    before: 100,
                    now: None,
                }),
            ),
        ];
        for (what, now, want) in rows {
            assert_eq!(compare(&last, &now), want, "{what}");
        }
        assert_eq!(compare(&BTreeMap::new(), &last), Ok(()), "first copy");
        let msg = CheckFailure::FewerRows {
            table: "ROI_1".into(),
            before: 100,
            now: 99,
        }
        .to_string();
        assert_eq!(
            msg,
            "table ROI_1 has 99 rows, fewer than the 100 of the last good copy"
        );
    }

    #[test]
    fn inspects_tables_and_refuses_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("odd ?#% name.db");
        let c = Connection::open(&p).unwrap();
        c.execute_batch(
            "CREATE TABLE ROI_1 (id INTEGER PRIMARY KEY, t INTEGER);
             CREATE TABLE \"we\"\"ird\" (field TEXT);
             CREATE TABLE empty (id INTEGER PRIMARY KEY);
             CREATE TABLE ROI_2 (id INTEGER PRIMARY KEY, t INTEGER);
             CREATE TABLE METADATA (field TEXT, value TEXT);
             INSERT INTO ROI_1 (t) VALUES (1), (2), (3);
             INSERT INTO \"we\"\"ird\" VALUES ('a');
             INSERT INTO METADATA VALUES ('date_time', '1752141600.0');",
        )
        .unwrap();
        drop(c);
        let never = CancellationToken::new();
        let got = inspect(&p, &never).unwrap();
        let mut want = stats(&[
            ("ROI_1", 3, Some(3)),
            ("we\"ird", 1, None),
            ("empty", 0, None),
            ("ROI_2", 0, None),
            ("METADATA", 1, None),
        ]);
        want.get_mut("ROI_1").unwrap().last_t = Some(3);
        assert_eq!(got.tables, want);
        assert_eq!(got.date_time.as_deref(), Some("1752141600.0"));
        // The last frame is a rowid lookup, not a scan.
        let plan: Vec<String> = open_immutable(&p)
            .unwrap()
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
        assert!(!dir.path().join("odd ?#% name.db-wal").exists());
        // Damage a b-tree page.
        let mut bytes = std::fs::read(&p).unwrap();
        for b in &mut bytes[4096 + 8..4096 + 40] {
            *b = 0xA5;
        }
        std::fs::write(&p, &bytes).unwrap();
        let cancelled = CancellationToken::new();
        cancelled.cancel();
        assert_eq!(inspect(&p, &cancelled), Err(CheckFailure::Cancelled));
        assert!(matches!(
            inspect(&p, &never),
            Err(CheckFailure::Integrity {
                check: "integrity_check",
                ..
            }) | Err(CheckFailure::Unreadable(_))
        ));
    }
}
