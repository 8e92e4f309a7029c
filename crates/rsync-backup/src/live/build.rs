//! Turns a consistent set of raw files (database, WAL, hot journal) into one self-contained
//! database file, in a private work directory under the state directory (never in the archive).
//!
//! SQLite does the work it does on the device after a crash: opened read-write next to its
//! `-wal`, it recovers the WAL; next to a hot `-journal`, it rolls the journal back. Then
//! `wal_checkpoint(TRUNCATE)` writes every committed frame into the file and
//! `journal_mode=DELETE` turns the header back to a rollback database, so the result opens
//! anywhere, also read-only (`mode=ro` on a read-only mount needs no `-shm`), and leaves no
//! companion files. A rollback database without a hot journal is not opened read-write at all:
//! its bytes stay the device's.
//!
//! The base is either the database read from the device, or the last good copy from the archive
//! (copied first: it is never written) when only the WAL grew; its header is switched back to
//! WAL (bytes 18–19 = 2) so SQLite reads it as the device's file. SQLite deletes a `-wal` next to
//! a database of zero pages, so a base shorter than one page is refused rather than silently
//! emptied.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use tokio_util::sync::CancellationToken;

use super::format::{parse_db_header, DbMode};

/// The name of the database inside a work directory.
const WORK_DB: &str = "copy.db";

/// Why no self-contained copy could be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// On which file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// SQLite refused a step.
    #[error("SQLite could not {what}: {source}")]
    Sqlite {
        /// Which step.
        what: &'static str,
        /// The error.
        #[source]
        source: rusqlite::Error,
    },
    /// The base is not a database SQLite can take (no header, or shorter than a page).
    #[error("the database file is not a complete SQLite database ({0})")]
    NotADatabase(String),
    /// The checkpoint did not write every frame.
    #[error("the checkpoint did not complete (busy {busy}, {done} of {log} frames)")]
    Checkpoint {
        /// SQLite's busy flag.
        busy: i64,
        /// Frames in the WAL.
        log: i64,
        /// Frames written back.
        done: i64,
    },
    /// A companion file survived (SQLite did not finish).
    #[error("{0} was left next to the copy")]
    Leftover(String),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { what, path, source }
}

fn sqlite_err(what: &'static str) -> impl FnOnce(rusqlite::Error) -> BuildError {
    move |source| BuildError::Sqlite { what, source }
}

/// The raw files of one consistent state.
#[derive(Debug, Clone)]
pub struct RawSet {
    /// The database pages: read from the device, or the last good copy.
    pub base: PathBuf,
    /// The base is the last good copy (a WAL-mode device file unchanged since).
    pub base_is_last_good: bool,
    /// The base is a file the engine received and may consume (moved into the work directory
    /// instead of copied, when it has a single link).
    pub base_disposable: bool,
    /// The WAL to recover, if it has a valid header.
    pub wal: Option<PathBuf>,
    /// A hot journal to roll back.
    pub journal: Option<PathBuf>,
}

/// A built copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The single-file database, inside the work directory.
    pub path: PathBuf,
    /// SQLite rewrote it (WAL recovered or journal rolled back), so its bytes differ from the
    /// device's file.
    pub converted: bool,
}

/// Builds the copy in `work` (emptied first). The raw files are never modified: the base is
/// moved in only when it is disposable and has a single link, copied otherwise.
pub fn build(work: &Path, raw: &RawSet, cancel: &CancellationToken) -> Result<Built, BuildError> {
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(work).map_err(io_err("cannot create", work))?;
    let db = work.join(WORK_DB);
    place_base(
        &raw.base,
        &db,
        raw.base_disposable && !raw.base_is_last_good,
    )?;
    let mode = check_base(&db)?;
    if raw.base_is_last_good && raw.wal.is_some() {
        set_wal_header(&db)?;
    }
    let wal_dst = work.join(format!("{WORK_DB}-wal"));
    let journal_dst = work.join(format!("{WORK_DB}-journal"));
    if let Some(wal) = &raw.wal {
        fs::copy(wal, &wal_dst).map_err(io_err("cannot copy", wal))?;
    }
    if let Some(journal) = &raw.journal {
        fs::copy(journal, &journal_dst).map_err(io_err("cannot copy", journal))?;
    }
    let converted = raw.wal.is_some() || raw.journal.is_some() || mode == DbMode::Wal;
    if converted {
        recover_and_convert(&db, cancel)?;
    }
    for leftover in [&wal_dst, &journal_dst, &work.join(format!("{WORK_DB}-shm"))] {
        if leftover.exists() {
            return Err(BuildError::Leftover(
                leftover
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ));
        }
    }
    Ok(Built {
        path: db,
        converted,
    })
}

fn place_base(base: &Path, db: &Path, disposable: bool) -> Result<(), BuildError> {
    let meta = fs::symlink_metadata(base).map_err(io_err("cannot read", base))?;
    if !meta.is_file() {
        return Err(BuildError::NotADatabase("not a regular file".into()));
    }
    if disposable && meta.nlink() == 1 && fs::rename(base, db).is_ok() {
        return Ok(());
    }
    fs::copy(base, db).map_err(io_err("cannot copy", base))?;
    Ok(())
}

fn check_base(db: &Path) -> Result<DbMode, BuildError> {
    let mut head = [0u8; 100];
    let mut f = fs::File::open(db).map_err(io_err("cannot open", db))?;
    let len = f.metadata().map_err(io_err("cannot stat", db))?.len();
    if f.read_exact(&mut head).is_err() {
        return Err(BuildError::NotADatabase(format!("{len} bytes")));
    }
    let header = parse_db_header(&head)
        .ok_or_else(|| BuildError::NotADatabase("no valid SQLite header".into()))?;
    if len < u64::from(header.page_size) {
        return Err(BuildError::NotADatabase(format!(
            "{len} bytes, less than one {} byte page",
            header.page_size
        )));
    }
    Ok(header.mode)
}

/// Bytes 18–19 = 2: the file is read as a WAL database, like the device's.
fn set_wal_header(db: &Path) -> Result<(), BuildError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(db)
        .map_err(io_err("cannot open", db))?;
    f.seek(SeekFrom::Start(18))
        .and_then(|_| f.write_all(&[2, 2]))
        .map_err(io_err("cannot write the header of", db))
}

fn recover_and_convert(db: &Path, cancel: &CancellationToken) -> Result<(), BuildError> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_err("open the copy"))?;
    let stop = super::check::stop_on(&conn, cancel);
    // No fsync of the copy: it is renamed over the archive copy like every file rsync writes,
    // which rsync does not fsync either (a checkpoint would otherwise flush the whole file).
    conn.execute_batch("PRAGMA synchronous=OFF")
        .map_err(sqlite_err("set synchronous=OFF"))?;
    // The first read recovers the WAL or rolls a hot journal back.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .map_err(sqlite_err("read the copy"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(sqlite_err("read the journal mode"))?;
    if mode.eq_ignore_ascii_case("wal") {
        let (busy, log, done): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(sqlite_err("checkpoint the WAL"))?;
        if busy != 0 || log != done {
            return Err(BuildError::Checkpoint { busy, log, done });
        }
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
        .map_err(sqlite_err("switch to journal_mode=DELETE"))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(BuildError::Sqlite {
            what: "switch to journal_mode=DELETE",
            source: rusqlite::Error::InvalidQuery,
        });
    }
    drop(stop);
    conn.close()
        .map_err(|(_, e)| e)
        .map_err(sqlite_err("close the copy"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(path: &Path) -> (i64, Option<i64>) {
        let c = super::super::check::open_immutable(path).unwrap();
        c.query_row("SELECT count(*), max(id) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
    }

    fn header(path: &Path) -> (u8, u8) {
        let b = fs::read(path).unwrap();
        (b[18], b[19])
    }

    fn device(dir: &Path) -> Connection {
        let c = Connection::open(dir.join("dev.db")).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
        )
        .unwrap();
        c
    }

    fn insert(c: &Connection, n: usize) {
        for _ in 0..n {
            c.execute("INSERT INTO t (v) VALUES (randomblob(300))", [])
                .unwrap();
        }
    }

    fn snapshot(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (db, wal) = (dir.join(name), dir.join(format!("{name}-wal")));
        fs::copy(dir.join("dev.db"), &db).unwrap();
        fs::copy(dir.join("dev.db-wal"), &wal).unwrap();
        (db, wal)
    }

    /// Tables that exist only in the WAL (a new experiment) come through.
    #[test]
    fn tables_only_in_the_wal() {
        let t = tempfile::tempdir().unwrap();
        let c = device(t.path());
        insert(&c, 10);
        assert_eq!(fs::metadata(t.path().join("dev.db")).unwrap().len(), 4096);
        let (db, wal) = snapshot(t.path(), "raw.db");
        let built = build(
            &t.path().join("work"),
            &RawSet {
                base: db,
                base_is_last_good: false,
                base_disposable: true,
                wal: Some(wal.clone()),
                journal: None,
            },
            &CancellationToken::new(),
        )
        .unwrap();
        assert!(built.converted);
        assert_eq!(rows(&built.path), (10, Some(10)));
        assert_eq!(header(&built.path), (1, 1));
        assert_eq!(fs::read_dir(t.path().join("work")).unwrap().count(), 1);
        assert!(wal.exists(), "the raw WAL is not consumed");
    }

    /// The last good copy plus a WAL of the same generation that grew: the frames already in
    /// the copy are applied again (idempotent), the new ones added, and the copy equals what a
    /// reader of the device sees.
    #[test]
    fn reapplying_a_grown_wal_to_the_last_good_copy() {
        let t = tempfile::tempdir().unwrap();
        let c = device(t.path());
        insert(&c, 300);
        c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .unwrap();
        insert(&c, 100);
        let (db, wal) = snapshot(t.path(), "raw1.db");
        let first = build(
            &t.path().join("w1"),
            &RawSet {
                base: db,
                base_is_last_good: false,
                base_disposable: true,
                wal: Some(wal),
                journal: None,
            },
            &CancellationToken::new(),
        )
        .unwrap();
        let archived = t.path().join("archived.db");
        fs::rename(&first.path, &archived).unwrap();
        assert_eq!(rows(&archived), (400, Some(400)));
        // The device writes on in the same generation; its database file is untouched.
        let db_before = fs::read(t.path().join("dev.db")).unwrap();
        insert(&c, 50);
        c.execute("DELETE FROM t WHERE id <= 10", []).unwrap();
        assert_eq!(fs::read(t.path().join("dev.db")).unwrap(), db_before);
        let (_, wal) = snapshot(t.path(), "raw2.db");
        let archived_bytes = fs::read(&archived).unwrap();
        let second = build(
            &t.path().join("w2"),
            &RawSet {
                base: archived.clone(),
                base_is_last_good: true,
                base_disposable: true,
                wal: Some(wal),
                journal: None,
            },
            &CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(
            fs::read(&archived).unwrap(),
            archived_bytes,
            "archive untouched"
        );
        let device_view: (i64, Option<i64>) = c
            .query_row("SELECT count(*), max(id) FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(rows(&second.path), device_view);
        assert_eq!(device_view, (440, Some(450)));
        let check: String = super::super::check::open_immutable(&second.path)
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    /// A crashed rollback writer's hot journal is rolled back; a database at rest is kept
    /// byte for byte; a base shorter than a page is refused.
    #[test]
    fn hot_journal_rollback_plain_copy_and_short_base() {
        let t = tempfile::tempdir().unwrap();
        let dev = t.path().join("rb.db");
        let c = Connection::open(&dev).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=DELETE; CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
        )
        .unwrap();
        insert(&c, 20);
        drop(c);
        let plain = build(
            &t.path().join("w0"),
            &RawSet {
                base: dev.clone(),
                base_is_last_good: false,
                base_disposable: false,
                wal: None,
                journal: None,
            },
            &CancellationToken::new(),
        )
        .unwrap();
        assert!(!plain.converted);
        assert_eq!(fs::read(&plain.path).unwrap(), fs::read(&dev).unwrap());

        // A transaction in flight: the journal holds the original pages, the file has some
        // new ones (what a crash mid-commit leaves).
        let before = fs::read(&dev).unwrap();
        let c = Connection::open(&dev).unwrap();
        c.execute_batch("PRAGMA cache_size=1; BEGIN; DELETE FROM t;")
            .unwrap();
        for _ in 0..5 {
            c.execute("INSERT INTO t (v) VALUES (randomblob(3000))", [])
                .unwrap();
        }
        let journal = t.path().join("rb.db-journal");
        let (torn, hot) = (t.path().join("torn.db"), t.path().join("torn.db-journal"));
        fs::copy(&dev, &torn).unwrap();
        fs::copy(&journal, &hot).unwrap();
        c.execute_batch("ROLLBACK").unwrap();
        assert_ne!(
            fs::read(&torn).unwrap(),
            before,
            "pages were written in place"
        );
        let rolled = build(
            &t.path().join("w1"),
            &RawSet {
                base: torn,
                base_is_last_good: false,
                base_disposable: true,
                wal: None,
                journal: Some(hot),
            },
            &CancellationToken::new(),
        )
        .unwrap();
        assert!(rolled.converted);
        assert_eq!(rows(&rolled.path), (20, Some(20)));

        let short = t.path().join("short.db");
        fs::write(&short, &before[..100]).unwrap();
        let err = build(
            &t.path().join("w2"),
            &RawSet {
                base: short,
                base_is_last_good: false,
                base_disposable: true,
                wal: None,
                journal: None,
            },
            &CancellationToken::new(),
        )
        .unwrap_err();
        assert!(matches!(err, BuildError::NotADatabase(_)), "{err}");
    }
}
