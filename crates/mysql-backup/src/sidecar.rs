//! The `CSV_DAM_ACTIVITY` text dump next to the mirror (`<file>.txt`, tab-separated, one line per
//! row, columns in table order, as upstream writes it).
//!
//! Upstream appended every row it fetched, so a crash or a deleted `.db` duplicated lines (bug A8).
//! Here the file is derived from the mirror after each commit: the id of its last complete line
//! says where to continue, a torn last line is cut off, and a file that is ahead of the database
//! (or unreadable) is rewritten from the database. Lines are never written twice.
//!
//! The results directory is shared with the rsync daemon, which copies device trees (and the
//! symlinks inside them) there, so neither the dump nor its temporary file is ever opened
//! through a symlink.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use crate::schema::sqlite_quote;

/// The DAM table name.
pub const DAM_TABLE: &str = "CSV_DAM_ACTIVITY";

/// One line of the dump, formatted like Python's `'\t'.join(str(v) for v in row)`.
pub fn dam_line(values: &[ValueRef<'_>]) -> String {
    let mut line = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            line.push('\t');
        }
        match v {
            ValueRef::Null => line.push_str("None"),
            ValueRef::Integer(n) => line.push_str(&n.to_string()),
            ValueRef::Real(r) => line.push_str(&format!("{r:?}")),
            ValueRef::Text(t) | ValueRef::Blob(t) => {
                // Keep one row per line whatever the content.
                let s = String::from_utf8_lossy(t);
                line.extend(s.chars().map(|c| {
                    if matches!(c, '\t' | '\n' | '\r') {
                        ' '
                    } else {
                        c
                    }
                }));
            }
        }
    }
    line.push('\n');
    line
}

/// What the existing dump holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DumpState {
    /// No usable file: write it whole.
    Rewrite,
    /// Keep the first `keep_len` bytes (complete lines); the last one has this id (None: empty).
    Continue { keep_len: u64, last_id: Option<i64> },
}

fn read_state(path: &Path, id_field: usize) -> io::Result<DumpState> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path);
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DumpState::Rewrite),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    // Read backwards until the last complete line is in view.
    let mut tail: Vec<u8> = Vec::new();
    let mut pos = len;
    let complete_end;
    loop {
        let step = pos.min(64 * 1024);
        pos -= step;
        f.seek(SeekFrom::Start(pos))?;
        let mut chunk = vec![0u8; step as usize];
        f.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        // The last newline ends the last complete line.
        if let Some(last_nl) = tail.iter().rposition(|&b| b == b'\n') {
            let before = &tail[..last_nl];
            if let Some(prev_nl) = before.iter().rposition(|&b| b == b'\n') {
                complete_end = Some((
                    pos + last_nl as u64 + 1,
                    tail[prev_nl + 1..last_nl].to_vec(),
                ));
                break;
            }
            if pos == 0 {
                complete_end = Some((last_nl as u64 + 1, before.to_vec()));
                break;
            }
        } else if pos == 0 {
            complete_end = None;
            break;
        }
        if tail.len() > 16 << 20 {
            // A "line" longer than 16 MiB is not ours.
            return Ok(DumpState::Rewrite);
        }
    }
    match complete_end {
        None => Ok(DumpState::Continue {
            keep_len: 0,
            last_id: None,
        }),
        Some((keep_len, line)) => {
            let text = String::from_utf8_lossy(&line);
            match text
                .split('\t')
                .nth(id_field)
                .and_then(|f| f.parse::<i64>().ok())
            {
                Some(id) => Ok(DumpState::Continue {
                    keep_len,
                    last_id: Some(id),
                }),
                None => Ok(DumpState::Rewrite),
            }
        }
    }
}

/// Why the dump could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// Reading the DAM table failed.
    #[error("reading {DAM_TABLE}")]
    Sqlite(#[from] rusqlite::Error),
    /// The DAM table has no `id` column, so there is no order to continue from.
    #[error("{DAM_TABLE} has no id column")]
    NoIdColumn,
    /// Reading or writing the dump (or its temporary file) failed.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> SidecarError + '_ {
    move |source| SidecarError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The DAM table's column names and the position of `id`.
fn dam_columns(conn: &Connection) -> Result<(Vec<String>, usize), SidecarError> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", sqlite_quote(DAM_TABLE)))?;
    let columns = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<Vec<_>, _>>()?;
    let id_field = columns
        .iter()
        .position(|c| c == "id")
        .ok_or(SidecarError::NoIdColumn)?;
    Ok((columns, id_field))
}

/// Brings `<txt_path>` in line with the mirror's `CSV_DAM_ACTIVITY` table (which must exist).
/// Returns the number of lines appended (or written, on a rewrite).
pub fn update(conn: &Connection, txt_path: &Path) -> Result<u64, SidecarError> {
    let (columns, id_field) = dam_columns(conn)?;
    let db_max: Option<i64> = conn.query_row(
        &format!("SELECT MAX(id) FROM {}", sqlite_quote(DAM_TABLE)),
        [],
        |r| r.get(0),
    )?;
    let state = read_state(txt_path, id_field).map_err(io_err(txt_path))?;
    // Nothing new and nothing to repair: leave the file alone (no write, no fsync).
    if let DumpState::Continue { keep_len, last_id } = state {
        let len = fs::metadata(txt_path).map_err(io_err(txt_path))?.len();
        if keep_len == len && last_id == db_max {
            return Ok(0);
        }
    }
    let (mut out, after, tmp) = open_for_update(txt_path, state, db_max)?;
    let written = append_rows(conn, &mut out, after, columns.len(), txt_path)?;
    out.sync_data().map_err(io_err(txt_path))?;
    if let Some(tmp) = tmp {
        fs::rename(&tmp, txt_path).map_err(io_err(txt_path))?;
    }
    Ok(written)
}

/// The file to write and the id after which rows go into it: the dump itself cut to its last
/// complete line when it can be continued, else a fresh temporary file (returned too, to be
/// renamed over the dump once complete).
fn open_for_update(
    txt_path: &Path,
    state: DumpState,
    db_max: Option<i64>,
) -> Result<(File, i64, Option<PathBuf>), SidecarError> {
    match state {
        DumpState::Continue { keep_len, last_id }
            if last_id.unwrap_or(0) <= db_max.unwrap_or(0) =>
        {
            let mut f = OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(txt_path)
                .map_err(io_err(txt_path))?;
            f.set_len(keep_len).map_err(io_err(txt_path))?;
            f.seek(SeekFrom::End(0)).map_err(io_err(txt_path))?;
            Ok((f, last_id.unwrap_or(i64::MIN), None))
        }
        _ => {
            let tmp = PathBuf::from(format!("{}.tmp", txt_path.display()));
            // A leftover (or planted) entry is removed, not written through.
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&tmp)(e)),
                _ => {}
            }
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            Ok((f, i64::MIN, Some(tmp)))
        }
    }
}

/// Writes one line per DAM row with an id above `after`; returns the lines written.
fn append_rows(
    conn: &Connection,
    out: &mut File,
    after: i64,
    width: usize,
    txt_path: &Path,
) -> Result<u64, SidecarError> {
    let mut w = BufWriter::with_capacity(256 * 1024, out);
    let sql = format!(
        "SELECT * FROM {} WHERE id > ?1 ORDER BY id",
        sqlite_quote(DAM_TABLE)
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([after])?;
    let mut written = 0u64;
    while let Some(row) = rows.next()? {
        let vals = (0..width)
            .map(|i| row.get_ref(i))
            .collect::<Result<Vec<_>, _>>()?;
        w.write_all(dam_line(&vals).as_bytes())
            .map_err(io_err(txt_path))?;
        written += 1;
    }
    w.flush().map_err(io_err(txt_path))?;
    Ok(written)
}

/// Creates an empty dump if none exists (upstream always created it).
pub fn touch(txt_path: &Path) -> Result<(), SidecarError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(txt_path)
        .map(|_| ())
        .map_err(io_err(txt_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(rows: i64) -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE CSV_DAM_ACTIVITY (id INTEGER PRIMARY KEY, date TEXT, time TEXT, ROI_1 INTEGER)",
        )
        .unwrap();
        for i in 1..=rows {
            c.execute(
                "INSERT INTO CSV_DAM_ACTIVITY VALUES (?1, '10 Jul 2025', '10:01:00', ?2)",
                (i, i * 10),
            )
            .unwrap();
        }
        c
    }

    fn lines(p: &Path) -> Vec<String> {
        fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn line_format_matches_upstream() {
        let v = [
            ValueRef::Integer(1),
            ValueRef::Text(b"10 Jul 2025"),
            ValueRef::Null,
            ValueRef::Real(2.0),
            ValueRef::Text(b"a\tb"),
        ];
        assert_eq!(dam_line(&v), "1\t10 Jul 2025\tNone\t2.0\ta b\n");
    }

    #[test]
    fn appends_only_new_rows_and_repairs_torn_or_stale_files() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("x.txt");
        let c = db(3);
        assert_eq!(update(&c, &txt).unwrap(), 3);
        assert_eq!(update(&c, &txt).unwrap(), 0);
        assert_eq!(lines(&txt)[2], "3\t10 Jul 2025\t10:01:00\t30");

        // A crash mid-append leaves a torn line: it is cut and rewritten once.
        let mut f = OpenOptions::new().append(true).open(&txt).unwrap();
        f.write_all(b"4\t10 Jul").unwrap();
        drop(f);
        c.execute("INSERT INTO CSV_DAM_ACTIVITY VALUES (4, 'd', 't', 40)", [])
            .unwrap();
        assert_eq!(update(&c, &txt).unwrap(), 1);
        let l = lines(&txt);
        assert_eq!(l.len(), 4);
        assert_eq!(l[3], "4\td\tt\t40");

        // The dump is ahead of the database (the .db was replaced): rewritten from the database.
        let small = db(2);
        assert_eq!(update(&small, &txt).unwrap(), 2);
        assert_eq!(lines(&txt).len(), 2);

        // An empty existing file is continued from the start.
        fs::write(&txt, "").unwrap();
        assert_eq!(update(&small, &txt).unwrap(), 2);
        assert_eq!(lines(&txt).len(), 2);

        // A long file (several read chunks) resumes at its true last line.
        let big = db(20_000);
        assert_eq!(update(&big, &txt).unwrap(), 19_998);
        assert_eq!(update(&big, &txt).unwrap(), 0);
        assert_eq!(lines(&txt).len(), 20_000);
    }

    #[test]
    fn never_writes_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.db");
        fs::write(&victim, b"precious").unwrap();
        let txt = dir.path().join("x.txt");
        // A planted temporary name: the rewrite replaces the link and leaves its target alone.
        std::os::unix::fs::symlink(&victim, dir.path().join("x.txt.tmp")).unwrap();
        assert_eq!(update(&db(3), &txt).unwrap(), 3);
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(lines(&txt).len(), 3);
        // The dump itself a symlink: refused.
        fs::remove_file(&txt).unwrap();
        std::os::unix::fs::symlink(&victim, &txt).unwrap();
        assert!(update(&db(3), &txt).is_err());
        assert!(touch(&txt).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }
}
