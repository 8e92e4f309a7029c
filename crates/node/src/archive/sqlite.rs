//! Reading archived databases without ever seeing a half-written one, and without getting in the
//! way of the daemon that writes it.
//!
//! The archive holds two kinds of `.db`:
//!
//! - **rsync copies** ([`DbSource::Rsync`]). The rsync daemon promotes a verified copy by
//!   `rename`, so a file never changes in place: it is opened `immutable=1` (no locks, no `-wal`
//!   or `-shm` looked for or created, which also makes a copy that still carries a device's WAL
//!   header readable) and streamed as it is.
//! - **MySQL mirror files** ([`DbSource::Mirror`]), recognisable by the `<name>.db.lock` beside
//!   them. The mirror updates them in place, in transactions. They are read only through a
//!   *snapshot* ([`snapshot`]): under one read transaction the file is copied into a private
//!   temporary file, and everything (download, row counts, checks) reads that copy. The read
//!   transaction holds the mirror's commit back for as long as the copy takes (disk speed; the
//!   mirror waits up to its 10 s busy timeout), never for as long as a slow client downloads.
//!
//! [`last_point`] is the exception: a few `ORDER BY id DESC LIMIT 1` lookups under a read
//! transaction directly on the file, cheap enough to run on every scan.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::fsx::{self, ExperimentDir, Fingerprint};
use super::names::Name;

/// Who writes a database, and so how it must be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbSource {
    /// Copied by the rsync daemon and promoted by rename: never changes in place.
    Rsync,
    /// Written in place by the MySQL mirror (a `<name>.lock` beside it).
    MysqlMirror,
}

/// How a copy was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckMethod {
    /// `PRAGMA quick_check`: every page and record, not the index contents.
    QuickCheck,
    /// `PRAGMA integrity_check`: also that every index matches its table.
    IntegrityCheck,
}

/// What a database holds, read from one consistent version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Contents {
    /// `ROI_<n>` tables and their rows, by ROI number.
    pub rows: Vec<(String, u64)>,
    /// The newest frame time (`t`, ms since the experiment started) over the ROI tables.
    pub last_point: Option<i64>,
    /// The experiment's start (`METADATA.date_time`, epoch seconds).
    pub started_at: Option<i64>,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Which check.
    pub method: CheckMethod,
    /// SQLite answered `ok`.
    pub ok: bool,
    /// Its first complaints otherwise.
    pub message: Option<String>,
}

/// Errors reading a database, with the file's name (no paths: they reach clients).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused.
    #[error("{file}: {source}")]
    Sqlite {
        /// The file.
        file: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A filesystem error.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file was replaced while it was read; the next scan reads the new version.
    #[error("{0}: replaced while it was read")]
    Changed(String),
}

fn sqlite_err(name: &Name) -> impl Fn(rusqlite::Error) -> DbError + '_ {
    move |source| DbError::Sqlite {
        file: name.to_string(),
        source,
    }
}

/// `path` as the file part of an SQLite URI (`%`, `?` and `#` escaped).
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' | '?' | '#' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Opens a database in `dir` for reading, the way its [`DbSource`] requires, refusing a symlink
/// anywhere in its path.
pub fn open(dir: &ExperimentDir, name: &Name, source: DbSource) -> Result<Connection, DbError> {
    let path = uri_path(&dir.file_path(name));
    let uri = match source {
        DbSource::Rsync => format!("file:{path}?immutable=1"),
        DbSource::MysqlMirror => format!("file:{path}?mode=ro"),
    };
    let conn = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )
    .map_err(sqlite_err(name))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sqlite_err(name))?;
    Ok(conn)
}

/// Opens a private snapshot file (immutable: nobody else writes it).
pub fn open_snapshot(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    Ok(conn)
}

/// `ROI_<n>` table names, in ROI order.
fn roi_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'ROI_[0-9]*'",
    )?;
    let mut names: Vec<(u64, String)> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .filter_map(Result::ok)
        .filter_map(|name| {
            let n = name.strip_prefix("ROI_")?;
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| Some((n.parse().ok()?, name.clone())))?
        })
        .collect();
    names.sort();
    Ok(names.into_iter().map(|(_, name)| name).collect())
}

/// The newest `t` of one ROI table: its last row by id (what scopr's `last_point_db` reads; equal
/// to `MAX(t)` for rows written in time order), or `MAX(t)` for a table without an `id`.
fn table_last_t(conn: &Connection, table: &str) -> rusqlite::Result<Option<i64>> {
    let by_id = conn.query_row(
        &format!("SELECT t FROM \"{table}\" ORDER BY id DESC LIMIT 1"),
        [],
        |r| r.get::<_, Option<f64>>(0),
    );
    let t = match by_id {
        Ok(t) => t,
        Err(rusqlite::Error::QueryReturnedNoRows) => None,
        Err(_) => conn.query_row(&format!("SELECT MAX(t) FROM \"{table}\""), [], |r| {
            r.get::<_, Option<f64>>(0)
        })?,
    };
    Ok(t.map(|t| t as i64))
}

fn started_at(conn: &Connection) -> Option<i64> {
    let value: String = conn
        .query_row(
            "SELECT CAST(value AS TEXT) FROM METADATA WHERE field = 'date_time' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .ok()?;
    value.trim().parse::<f64>().ok().map(|v| v as i64)
}

/// The newest frame time and the experiment start, under one read transaction.
pub fn last_point(conn: &Connection) -> rusqlite::Result<Contents> {
    let tx = conn.unchecked_transaction()?;
    let mut last = None;
    for table in roi_tables(&tx)? {
        last = last.max(table_last_t(&tx, &table)?);
    }
    let contents = Contents {
        rows: Vec::new(),
        last_point: last,
        started_at: started_at(&tx),
    };
    tx.finish()?;
    Ok(contents)
}

/// Rows per ROI table, the newest frame time and the start, under one read transaction.
pub fn contents(conn: &Connection) -> rusqlite::Result<Contents> {
    let tx = conn.unchecked_transaction()?;
    let mut rows = Vec::new();
    let mut last = None;
    for table in roi_tables(&tx)? {
        let n: i64 = tx.query_row(&format!("SELECT COUNT(*) FROM \"{table}\""), [], |r| {
            r.get(0)
        })?;
        last = last.max(table_last_t(&tx, &table)?);
        rows.push((table, u64::try_from(n).unwrap_or(0)));
    }
    let contents = Contents {
        rows,
        last_point: last,
        started_at: started_at(&tx),
    };
    tx.finish()?;
    Ok(contents)
}

/// Runs `quick_check` or `integrity_check`.
pub fn check(conn: &Connection, method: CheckMethod) -> rusqlite::Result<CheckResult> {
    let pragma = match method {
        CheckMethod::QuickCheck => "PRAGMA quick_check(5)",
        CheckMethod::IntegrityCheck => "PRAGMA integrity_check(5)",
    };
    let mut stmt = conn.prepare(pragma)?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>();
    Ok(match lines {
        Ok(lines) if lines.len() == 1 && lines[0] == "ok" => CheckResult {
            method,
            ok: true,
            message: None,
        },
        Ok(lines) => CheckResult {
            method,
            ok: false,
            message: Some(lines.join("; ")),
        },
        // A file damaged badly enough that the check itself fails is a failed check.
        Err(e) => CheckResult {
            method,
            ok: false,
            message: Some(e.to_string()),
        },
    })
}

/// Held while this process has a mirror database open in any way.
///
/// SQLite's locks are POSIX record locks, which belong to the process and the inode: closing *any*
/// descriptor of the file drops them all, including the read lock another connection of this
/// process relies on. The raw copy in [`snapshot`] closes such a descriptor, so everything that
/// reads a mirror file in place takes this lock first.
static MIRROR_FILES: Mutex<()> = Mutex::new(());

/// Serializes in-place reads of mirror databases (see [`MIRROR_FILES`]).
pub fn mirror_guard() -> MutexGuard<'static, ()> {
    MIRROR_FILES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Copies the mirror database `name` in `dir` into `dest` (a new, private file), consistently,
/// while the mirror may be writing it. Returns the source's fingerprint, taken inside the read
/// transaction, so it names exactly the version copied.
///
/// In a rollback-journal database (what the mirror writes) a writer needs an exclusive lock to
/// touch the file, so under a read transaction the file's bytes are one committed state: they are
/// copied as they are (`copy_file_range`, at disk speed, the copy byte-identical to the file). A
/// WAL database (not written by the mirror, but possible) is copied with the online backup API.
pub fn snapshot(dir: &ExperimentDir, name: &Name, dest: &Path) -> Result<Fingerprint, DbError> {
    let _only_us = mirror_guard();
    let src = open(dir, name, DbSource::MysqlMirror)?;
    let err = sqlite_err(name);
    let io_err = |source| DbError::Io {
        file: name.to_string(),
        source,
    };
    let wal = src
        .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
        .map_err(&err)?
        .eq_ignore_ascii_case("wal");
    // The read transaction starts with the first read and lasts until COMMIT.
    src.execute_batch("BEGIN DEFERRED; SELECT COUNT(*) FROM sqlite_master;")
        .map_err(&err)?;
    let fingerprint = fsx::stat(&dir.fd, name.as_str())
        .map(|(_, fp)| fp)
        .map_err(io_err)?;
    if wal {
        backup(&src, dest).map_err(&err)?;
    } else {
        let (mut file, opened) = fsx::open_file(&dir.fd, name).map_err(io_err)?;
        if opened != fingerprint {
            return Err(DbError::Changed(name.to_string()));
        }
        // `dest` is a private temporary file (the caller usually created it empty).
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(dest)
            .map_err(io_err)?;
        let copied = std::io::copy(&mut file, &mut out).map_err(io_err)?;
        if copied != fingerprint.size {
            return Err(DbError::Changed(name.to_string()));
        }
    }
    src.execute_batch("COMMIT").map_err(&err)?;
    Ok(fingerprint)
}

/// Copies every page of `src` (inside its open read transaction) into a new database at `dest`.
fn backup(src: &Connection, dest: &Path) -> rusqlite::Result<()> {
    let mut dst = Connection::open(dest)?;
    // A private scratch copy: no journal, no fsync (a crash leaves it to the cleanup at start).
    dst.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
    {
        let backup = rusqlite::backup::Backup::new(src, &mut dst)?;
        while backup.step(-1)? != rusqlite::backup::StepResult::Done {
            // Busy or locked: another connection of this process holds the file; try again.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    dst.close().map_err(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_db(path: &Path, rois: u32, rows: i64) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "BEGIN; CREATE TABLE METADATA (field TEXT, value TEXT);
             INSERT INTO METADATA VALUES ('date_time', '1752141600');
             CREATE TABLE ROI_MAP (roi_idx INTEGER, w INTEGER, h INTEGER);",
        )
        .unwrap();
        for roi in 1..=rois {
            conn.execute_batch(&format!(
                "CREATE TABLE ROI_{roi} (id INTEGER PRIMARY KEY, t INTEGER, x REAL);"
            ))
            .unwrap();
            for i in 1..=rows {
                conn.execute(
                    &format!("INSERT INTO ROI_{roi} (id, t, x) VALUES (?1, ?2, 0.5)"),
                    (i, i * 100 + i64::from(roi)),
                )
                .unwrap();
            }
        }
        conn.execute_batch("COMMIT").unwrap();
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";
    const DATE: &str = "2025-07-10_10-00-00";

    fn experiment(root: &Path) -> ExperimentDir {
        let exp = crate::archive::names::ExperimentRef::parse(ID, "ETHOSCOPE_001", DATE).unwrap();
        std::fs::create_dir_all(root.join(exp.path())).unwrap();
        ExperimentDir::open(root, &exp).unwrap()
    }

    #[test]
    fn contents_checks_and_snapshots() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = experiment(tmp.path());
        make_db(&dir.file_path(&Name::file("x.db").unwrap()), 3, 10);
        std::fs::write(dir.path.join("x.db.lock"), b"").unwrap();
        let name = Name::file("x.db").unwrap();
        assert!(fsx::has_mirror_lock(&dir.fd, &name));

        let conn = open(&dir, &name, DbSource::Rsync).unwrap();
        let c = contents(&conn).unwrap();
        assert_eq!(
            c.rows,
            [
                ("ROI_1".into(), 10),
                ("ROI_2".into(), 10),
                ("ROI_3".into(), 10)
            ]
        );
        assert_eq!(c.last_point, Some(1003));
        assert_eq!(c.started_at, Some(1_752_141_600));
        assert_eq!(last_point(&conn).unwrap().last_point, Some(1003));
        assert!(check(&conn, CheckMethod::IntegrityCheck).unwrap().ok);
        let mirror = open(&dir, &name, DbSource::MysqlMirror).unwrap();
        assert_eq!(last_point(&mirror).unwrap().last_point, Some(1003));

        let snap = tmp.path().join("snap.db");
        let fp = snapshot(&dir, &name, &snap).unwrap();
        assert_eq!(fp, fsx::stat(&dir.fd, "x.db").unwrap().1);
        let copy = open_snapshot(&snap).unwrap();
        assert_eq!(contents(&copy).unwrap(), c);
        // Two snapshots of one version are the same bytes, so ranges of either fit together.
        let snap2 = tmp.path().join("snap2.db");
        snapshot(&dir, &name, &snap2).unwrap();
        assert_eq!(
            std::fs::read(&snap).unwrap(),
            std::fs::read(&snap2).unwrap()
        );
    }

    #[test]
    fn snapshots_copy_rollback_files_byte_for_byte_and_wal_files_page_by_page() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = experiment(tmp.path());
        let plain = Name::file("plain.db").unwrap();
        make_db(&dir.file_path(&plain), 2, 50);
        let snap = tmp.path().join("plain-snap.db");
        snapshot(&dir, &plain, &snap).unwrap();
        assert_eq!(
            std::fs::read(&snap).unwrap(),
            std::fs::read(dir.file_path(&plain)).unwrap()
        );

        let wal = Name::file("wal.db").unwrap();
        make_db(&dir.file_path(&wal), 2, 50);
        let writer = Connection::open(dir.file_path(&wal)).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; INSERT INTO ROI_1 (t, x) VALUES (999999, 1);",
            )
            .unwrap();
        let snap = tmp.path().join("wal-snap.db");
        snapshot(&dir, &wal, &snap).unwrap();
        let c = contents(&open_snapshot(&snap).unwrap()).unwrap();
        assert_eq!(
            c.rows[0],
            ("ROI_1".to_string(), 51),
            "the row still in the -wal is in the copy"
        );
        assert_eq!(c.last_point, Some(999_999));
    }

    #[test]
    fn a_symlinked_database_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = experiment(tmp.path());
        make_db(&tmp.path().join("outside.db"), 1, 1);
        std::os::unix::fs::symlink(tmp.path().join("outside.db"), dir.path.join("x.db")).unwrap();
        for source in [DbSource::Rsync, DbSource::MysqlMirror] {
            let Err(DbError::Sqlite { source: e, .. }) =
                open(&dir, &Name::file("x.db").unwrap(), source)
                    .and_then(|c| last_point(&c).map_err(sqlite_err(&Name::file("x.db").unwrap())))
            else {
                panic!("{source:?}: a symlink was opened");
            };
            assert_eq!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::CannotOpen),
                "{e}"
            );
        }
    }

    #[test]
    fn a_damaged_file_fails_its_check() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = experiment(tmp.path());
        let path = dir.path.join("bad.db");
        make_db(&path, 2, 2000);
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        for b in &mut bytes[len / 2..len / 2 + 4096] {
            *b = 0x5a;
        }
        std::fs::write(&path, bytes).unwrap();
        let conn = open(&dir, &Name::file("bad.db").unwrap(), DbSource::Rsync).unwrap();
        let result = check(&conn, CheckMethod::QuickCheck).unwrap();
        assert!(!result.ok, "{result:?}");
        assert!(result.message.is_some());
    }
}
