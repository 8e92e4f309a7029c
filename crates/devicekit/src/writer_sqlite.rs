//! Writes an experiment into an SQLite file, as the device's SQLite result writer does.
//!
//! Same tables, same rows, same ids as [`crate::writer_mariadb`] for the same
//! [`ExperimentSpec`], so a simulated SQLite device and a simulated MariaDB device hold identical
//! data. Blocking (rusqlite): call it from a blocking thread in async code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};

use crate::generator::{Batch, Cell, ExperimentGenerator, TableRows};
use crate::schema::{self, ExperimentSpec};

const FRAMES_PER_CHUNK: u64 = 2_000;

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
    /// Creates `path` (replacing any existing file and its journal), creates the static tables and
    /// writes the start-of-experiment rows.
    pub fn create(
        path: impl AsRef<Path>,
        spec: ExperimentSpec,
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
