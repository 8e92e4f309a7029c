//! Writes an experiment into MariaDB the way the device's `MySQLResultWriter` does.
//!
//! [`MariaDbExperiment::create`] drops and recreates `<NAME>_db` (the firmware does the same for
//! every new experiment, so calling it again is a rollover), creates the static tables and writes
//! `METADATA`, `ROI_MAP` and `START_EVENTS`. Until the first frames are appended `VAR_MAP` is empty,
//! which the backup daemon reports as "not ready". [`MariaDbExperiment::append_frames`] then adds
//! tracking data with multi-row `INSERT`s, one transaction per chunk, so millions of rows load in
//! seconds.

use std::collections::BTreeMap;

use anyhow::Context;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use crate::generator::{Batch, Cell, ExperimentGenerator, TableRows};
use crate::schema::{self, ExperimentSpec};

/// Frames generated and written per transaction.
const FRAMES_PER_CHUNK: u64 = 2_000;
/// Flush a multi-row INSERT once its text reaches this size (well under `max_allowed_packet`).
const MAX_STATEMENT_BYTES: usize = 4 << 20;

/// A MariaDB experiment database being written. See the module docs.
pub struct MariaDbExperiment {
    conn: Conn,
    generator: ExperimentGenerator,
    db: String,
}

impl std::fmt::Debug for MariaDbExperiment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDbExperiment")
            .field("db", &self.db)
            .field("frames", &self.generator.frames())
            .finish()
    }
}

/// Quotes an identifier with backticks (doubling any backtick inside).
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Appends `cell` to `sql` as a MariaDB literal.
fn push_literal(sql: &mut String, cell: &Cell) {
    use std::fmt::Write;
    match cell {
        Cell::Null => sql.push_str("NULL"),
        Cell::Int(i) => {
            let _ = write!(sql, "{i}");
        }
        Cell::Real(r) => {
            let _ = write!(sql, "{r:?}");
        }
        Cell::Text(s) => {
            sql.push('\'');
            for ch in s.chars() {
                match ch {
                    '\'' => sql.push_str("''"),
                    '\\' => sql.push_str("\\\\"),
                    '\0' => sql.push_str("\\0"),
                    c => sql.push(c),
                }
            }
            sql.push('\'');
        }
        Cell::Blob(b) => {
            sql.push_str("X'");
            for byte in b {
                let _ = write!(sql, "{byte:02X}");
            }
            sql.push('\'');
        }
    }
}

/// Multi-row `INSERT` statements (split by size) for `rows` into `table (columns)`.
pub fn insert_statements(table: &str, columns: &[&str], rows: &[Vec<Cell>]) -> Vec<String> {
    let head = format!(
        "INSERT INTO {} ({}) VALUES ",
        quote_ident(table),
        columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut out = Vec::new();
    let mut sql = String::new();
    for row in rows {
        if sql.is_empty() {
            sql.push_str(&head);
        } else {
            sql.push(',');
        }
        sql.push('(');
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            push_literal(&mut sql, cell);
        }
        sql.push(')');
        if sql.len() >= MAX_STATEMENT_BYTES {
            out.push(std::mem::take(&mut sql));
        }
    }
    if !sql.is_empty() {
        out.push(sql);
    }
    out
}

impl MariaDbExperiment {
    /// Drops and recreates `<NAME>_db` on the server `opts` points to (an account allowed to
    /// create databases), creates the static tables and writes the start-of-experiment rows.
    pub async fn create(opts: Opts, spec: ExperimentSpec) -> anyhow::Result<MariaDbExperiment> {
        let server = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
        let opts: Opts = OptsBuilder::from_opts(opts).db_name(None::<String>).into();
        let conn = Conn::new(opts)
            .await
            .with_context(|| format!("cannot connect to MariaDB at {server}"))?;
        let mut exp = MariaDbExperiment {
            conn,
            db: spec.db_name(),
            generator: ExperimentGenerator::new(spec),
        };
        exp.recreate().await?;
        Ok(exp)
    }

    async fn recreate(&mut self) -> anyhow::Result<()> {
        let db = quote_ident(&self.db);
        let spec = self.generator.spec().clone();
        self.conn
            .query_drop(format!("DROP DATABASE IF EXISTS {db}"))
            .await?;
        self.conn
            .query_drop(format!("CREATE DATABASE {db}"))
            .await?;
        self.conn.query_drop(format!("USE {db}")).await?;
        for table in spec
            .tables()
            .iter()
            .filter(|t| !schema::is_roi_table(&t.name))
        {
            self.conn.query_drop(table.mysql_ddl()).await?;
        }
        for rows in self.generator.initial_rows() {
            self.insert(&rows).await?;
        }
        Ok(())
    }

    /// Starts a new experiment on the same server: drops the database and recreates it (ids start
    /// again at 1, `backup_filename` changes with the start time).
    pub async fn rollover(&mut self, spec: ExperimentSpec) -> anyhow::Result<()> {
        self.db = spec.db_name();
        self.generator = ExperimentGenerator::new(spec);
        self.recreate().await
    }

    /// The experiment being written.
    pub fn spec(&self) -> &ExperimentSpec {
        self.generator.spec()
    }

    /// The database name, `<NAME>_db`.
    pub fn db_name(&self) -> &str {
        &self.db
    }

    /// The generator (frames written so far, simulated time).
    pub fn generator(&self) -> &ExperimentGenerator {
        &self.generator
    }

    /// The writer's connection (with the experiment database selected), for ad-hoc statements.
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// Appends `frames` tracking frames (rows for every ROI plus the periodic tables). Returns the
    /// number of rows written.
    pub async fn append_frames(&mut self, frames: u64) -> anyhow::Result<u64> {
        let mut written = 0;
        let mut left = frames;
        while left > 0 {
            let n = left.min(FRAMES_PER_CHUNK);
            left -= n;
            let batch = self.generator.next_frames(n);
            written += self.write_batch(&batch).await?;
        }
        Ok(written)
    }

    async fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<u64> {
        for table in &batch.new_roi_tables {
            self.conn.query_drop(table.mysql_ddl()).await?;
        }
        self.conn.query_drop("START TRANSACTION").await?;
        if let Some(var_map) = &batch.var_map {
            self.conn.query_drop("DELETE FROM VAR_MAP").await?;
            self.insert(&TableRows {
                table: schema::var_map(),
                rows: var_map.clone(),
            })
            .await?;
        }
        for rows in &batch.tables {
            self.insert(rows).await?;
        }
        self.conn.query_drop("COMMIT").await?;
        Ok(batch.row_count() as u64)
    }

    async fn insert(&mut self, rows: &TableRows) -> anyhow::Result<()> {
        let columns: Vec<&str> = rows.table.columns.iter().map(|c| c.name.as_str()).collect();
        for sql in insert_statements(&rows.table.name, &columns, &rows.rows) {
            self.conn
                .query_drop(sql)
                .await
                .with_context(|| format!("cannot insert into {}", rows.table.name))?;
        }
        Ok(())
    }

    /// Ends the experiment as the firmware does: `METADATA('stop_date_time', <epoch>)`.
    pub async fn finish(&mut self, stop_time: i64) -> anyhow::Result<()> {
        self.conn
            .exec_drop(
                "INSERT INTO METADATA (field, value) VALUES ('stop_date_time', ?)",
                (stop_time.to_string(),),
            )
            .await?;
        Ok(())
    }

    /// `COUNT(*)` of every table of the experiment database.
    pub async fn table_counts(&mut self) -> anyhow::Result<BTreeMap<String, u64>> {
        let tables: Vec<String> = self
            .conn
            .exec(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
                (self.db.clone(),),
            )
            .await?;
        let mut counts = BTreeMap::new();
        for t in tables {
            let n: Option<u64> = self
                .conn
                .query_first(format!("SELECT COUNT(*) FROM {}", quote_ident(&t)))
                .await?;
            counts.insert(t, n.unwrap_or(0));
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_escaped() {
        let stmts = insert_statements(
            "A`B",
            &["x", "y"],
            &[
                vec![Cell::Text("it's \\ ok".into()), Cell::Null],
                vec![Cell::Blob(vec![0, 255]), Cell::Real(1.0)],
            ],
        );
        assert_eq!(
            stmts,
            vec!["INSERT INTO `A``B` (`x`, `y`) VALUES ('it''s \\\\ ok',NULL),(X'00FF',1.0)"]
        );
    }

    #[test]
    fn large_inserts_are_split() {
        // Hex doubles the size: five rows of 0.4 × the limit give statements of 3 and 2 rows.
        let rows: Vec<Vec<Cell>> = (0..5)
            .map(|_| vec![Cell::Blob(vec![7; MAX_STATEMENT_BYTES / 5])])
            .collect();
        let stmts = insert_statements("T", &["b"], &rows);
        assert_eq!(stmts.len(), 2);
    }
}
