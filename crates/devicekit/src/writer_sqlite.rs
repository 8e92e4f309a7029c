//! Writes an experiment into an SQLite file, as the device's SQLite result writer does.
//!
//! Same tables, same rows, same ids as [`crate::writer_mariadb`] for the same
//! [`ExperimentSpec`], so a simulated SQLite device and a simulated MariaDB device hold identical
//! data. Blocking (rusqlite): call it from a blocking thread in async code.
//!
//! Like current firmware (since July 2025, `io/sqlite.py`), the default is `journal_mode=WAL`
//! with `synchronous=NORMAL`, SQLite's default autocheckpoint and one connection held for the
//! whole experiment: the newest committed rows live in `<db>-wal` until a checkpoint, and a clean
//! close checkpoints and removes it. [`SqliteJournal::Off`] writes like seed-era firmware, and
//! [`SqliteExperiment::abandon`] leaves the file as a power cut would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::fmt;
use std::str::FromStr;

use anyhow::Context;
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};

use crate::generator::{Batch, Cell, ExperimentGenerator, TableRows};
use crate::schema::{self, ExperimentSpec};

const FRAMES_PER_CHUNK: u64 = 2_000;

/// The journal mode a device writes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteJournal {
    /// `journal_mode=WAL`, `synchronous=NORMAL`: current firmware.
    #[default]
    Wal,
    /// `journal_mode=OFF`: seed-era firmware; pages are rewritten in place, no journal at all.
    Off,
    /// `journal_mode=DELETE`: SQLite's default rollback journal.
    Delete,
}

impl SqliteJournal {
    /// The pragmas set on the connection before anything is written.
    fn pragmas(self) -> &'static str {
        match self {
            SqliteJournal::Wal => {
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY;"
            }
            SqliteJournal::Off => "PRAGMA journal_mode=OFF; PRAGMA temp_store=MEMORY;",
            SqliteJournal::Delete => {
                "PRAGMA journal_mode=DELETE; PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY;"
            }
        }
    }

    /// `wal`, `off`, `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            SqliteJournal::Wal => "wal",
            SqliteJournal::Off => "off",
            SqliteJournal::Delete => "delete",
        }
    }
}

impl fmt::Display for SqliteJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A journal mode name that is not `wal`, `off` or `delete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownJournal(pub String);

impl fmt::Display for UnknownJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown SQLite journal mode {:?} (wal, off, delete)",
            self.0
        )
    }
}

impl std::error::Error for UnknownJournal {}

impl FromStr for SqliteJournal {
    type Err = UnknownJournal;

    fn from_str(s: &str) -> Result<SqliteJournal, UnknownJournal> {
        match s.to_ascii_lowercase().as_str() {
            "wal" => Ok(SqliteJournal::Wal),
            "off" => Ok(SqliteJournal::Off),
            "delete" => Ok(SqliteJournal::Delete),
            _ => Err(UnknownJournal(s.to_string())),
        }
    }
}

/// An SQLite experiment file being written. See the module docs.
#[derive(Debug)]
pub struct SqliteExperiment {
    conn: Connection,
    path: PathBuf,
    generator: ExperimentGenerator,
}

fn to_value(cell: &Cell) -> Value {
    match cell {
        Cell::Null => Value::Null,
        Cell::Int(i) => Value::Integer(*i),
        Cell::Real(r) => Value::Real(*r),
        Cell::Text(s) => Value::Text(s.clone()),
        Cell::Blob(b) => Value::Blob(b.clone()),
    }
}

impl SqliteExperiment {
    /// Creates `path` in WAL mode like current firmware; see [`SqliteExperiment::create_with`].
    pub fn create(
        path: impl AsRef<Path>,
        spec: ExperimentSpec,
    ) -> anyhow::Result<SqliteExperiment> {
        SqliteExperiment::create_with(path, spec, SqliteJournal::Wal)
    }

    /// Creates `path` (replacing any existing file and its companions) with `journal`, creates
    /// the static tables and writes the start-of-experiment rows.
    pub fn create_with(
        path: impl AsRef<Path>,
        spec: ExperimentSpec,
        journal: SqliteJournal,
    ) -> anyhow::Result<SqliteExperiment> {
        let path = path.as_ref().to_path_buf();
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", path.display()));
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
            }
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let conn = Connection::open(&path)
            .with_context(|| format!("cannot create SQLite file {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute_batch(journal.pragmas())
            .with_context(|| format!("cannot set journal mode {journal} on {}", path.display()))?;
        let generator = ExperimentGenerator::new(spec.clone());
        let mut exp = SqliteExperiment {
            conn,
            path,
            generator,
        };
        let tx = exp.conn.transaction()?;
        for table in spec
            .tables()
            .iter()
            .filter(|t| !schema::is_roi_table(&t.name))
        {
            tx.execute(&table.sqlite_ddl(), [])?;
        }
        for rows in exp.generator.initial_rows() {
            insert(&tx, &rows)?;
        }
        tx.commit()?;
        Ok(exp)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The experiment being written.
    pub fn spec(&self) -> &ExperimentSpec {
        self.generator.spec()
    }

    /// The generator (frames written so far, simulated time).
    pub fn generator(&self) -> &ExperimentGenerator {
        &self.generator
    }

    /// The connection, for ad-hoc statements.
    pub fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Appends `frames` tracking frames. Returns the number of rows written.
    pub fn append_frames(&mut self, frames: u64) -> anyhow::Result<u64> {
        let mut written = 0;
        let mut left = frames;
        while left > 0 {
            let n = left.min(FRAMES_PER_CHUNK);
            left -= n;
            let batch = self.generator.next_frames(n);
            written += self.write_batch(&batch)?;
        }
        Ok(written)
    }

    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<u64> {
        let tx = self.conn.transaction()?;
        for table in &batch.new_roi_tables {
            tx.execute(&table.sqlite_ddl(), [])?;
        }
        if let Some(var_map) = &batch.var_map {
            tx.execute("DELETE FROM VAR_MAP", [])?;
            insert(
                &tx,
                &TableRows {
                    table: schema::var_map(),
                    rows: var_map.clone(),
                },
            )?;
        }
        for rows in &batch.tables {
            insert(&tx, rows)?;
        }
        tx.commit()?;
        Ok(batch.row_count() as u64)
    }

    /// Ends the experiment: `METADATA('stop_date_time', <epoch>)`.
    pub fn finish(&mut self, stop_time: i64) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO METADATA (field, value) VALUES ('stop_date_time', ?1)",
            [stop_time.to_string()],
        )?;
        Ok(())
    }

    /// Ends the writer the way a power cut or a `kill -9` does: the connection is never closed,
    /// so nothing is checkpointed and a WAL-mode file keeps its `-wal` (and `-shm`) next to it.
    /// The file descriptors stay open until the process exits, as a frozen writer's would.
    pub fn abandon(self) {
        std::mem::forget(self.conn);
    }

    /// `COUNT(*)` of every table.
    pub fn table_counts(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut stmt = self.conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?;
        let names: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut counts = BTreeMap::new();
        for name in names {
            let n: i64 = self.conn.query_row(
                &format!("SELECT COUNT(*) FROM \"{}\"", name.replace('"', "\"\"")),
                [],
                |r| r.get(0),
            )?;
            counts.insert(name, n.max(0) as u64);
        }
        Ok(counts)
    }
}

fn insert(conn: &Connection, rows: &TableRows) -> anyhow::Result<()> {
    let cols = &rows.table.columns;
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        rows.table.name,
        rows.table.column_list(),
        vec!["?"; cols.len()].join(", ")
    );
    let mut stmt = conn
        .prepare_cached(&sql)
        .with_context(|| format!("cannot prepare insert into {}", rows.table.name))?;
    for row in &rows.rows {
        stmt.execute(params_from_iter(row.iter().map(to_value)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_mode(path: &Path) -> (u8, u8) {
        let head = std::fs::read(path).unwrap();
        (head[18], head[19])
    }

    #[test]
    fn journal_modes_like_the_firmware() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |n: u32| {
            let mut s = ExperimentSpec::new("0123456789abcdef0123456789abcdef", "ETHOSCOPE_001", 0);
            s.n_rois = n;
            s
        };
        // WAL: the newest rows are in the -wal while the writer is open; a clean close
        // checkpoints and removes it.
        let wal = dir.path().join("wal.db");
        let mut exp = SqliteExperiment::create(&wal, spec(2)).unwrap();
        exp.append_frames(50).unwrap();
        assert_eq!(header_mode(&wal), (2, 2));
        assert!(PathBuf::from(format!("{}-wal", wal.display())).exists());
        let mode: String = exp
            .conn()
            .query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))
            .map(|v| v.to_string())
            .unwrap();
        assert_eq!(mode, "1", "synchronous=NORMAL");
        drop(exp);
        assert!(!PathBuf::from(format!("{}-wal", wal.display())).exists());
        // Abandoned: the -wal stays behind with the newest rows.
        let cut = dir.path().join("cut.db");
        let mut exp = SqliteExperiment::create(&cut, spec(1)).unwrap();
        exp.append_frames(20).unwrap();
        exp.abandon();
        let wal_file = PathBuf::from(format!("{}-wal", cut.display()));
        assert!(std::fs::metadata(&wal_file).unwrap().len() > 0);
        // OFF and DELETE: rollback-journal headers, no -wal.
        for (journal, name) in [
            (SqliteJournal::Off, "off.db"),
            (SqliteJournal::Delete, "del.db"),
        ] {
            let p = dir.path().join(name);
            let mut exp = SqliteExperiment::create_with(&p, spec(1), journal).unwrap();
            exp.append_frames(10).unwrap();
            let mode: String = exp
                .conn()
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, journal.as_str());
            assert_eq!(header_mode(&p), (1, 1));
            assert!(!PathBuf::from(format!("{}-wal", p.display())).exists());
        }
        assert_eq!("WAL".parse(), Ok(SqliteJournal::Wal));
        assert!("truncate".parse::<SqliteJournal>().is_err());
    }

    #[test]
    fn writes_an_experiment() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = ExperimentSpec::new("0123456789abcdef0123456789abcdef", "ETHOSCOPE_001", 0);
        spec.n_rois = 2;
        let path = dir.path().join(spec.backup_filename());
        let mut exp = SqliteExperiment::create(&path, spec).unwrap();
        assert_eq!(exp.table_counts().unwrap()["VAR_MAP"], 0);
        exp.append_frames(3000).unwrap();
        let counts = exp.table_counts().unwrap();
        assert_eq!(counts["ROI_1"], 3000);
        assert_eq!(counts["ROI_2"], 3000);
        assert_eq!(counts["VAR_MAP"], 8);
        assert_eq!(counts["METADATA"], 13);
        let nulls: i64 = exp
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM METADATA WHERE value IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(nulls, 1);
    }
}
