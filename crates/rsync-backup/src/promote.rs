//! Moving finished files from staging into the archive.
//!
//! rsync writes only into a staging tree under the state directory. Everything there is a
//! complete copy of some version of a device file (rsync renames a file into place only after
//! its checksum matched; interrupted files go to the partial dir), and every database there is a
//! checked, self-contained copy: [`crate::live`] replaced the raw files it received (upstream
//! shipped torn copies, and WAL databases without their newest rows). Promotion walks that tree
//! and:
//!
//! - never moves an SQLite companion (`-wal`, `-journal`, `-shm`): the archive only holds
//!   single-file databases;
//! - renames everything else over the archive path: same filesystem, so the archive only ever
//!   holds the old or the new complete file;
//! - never follows a symlink in the archive: an archive component that is a symlink where the
//!   device now has a directory is replaced by a real directory, so nothing is written through a
//!   link;
//! - falls back to copy-then-rename when the state dir is on another filesystem (reported, so
//!   the operator can move it);
//! - records per-file size changes, so archive sizes stay current without a rescan;
//! - never replaces a file the MySQL mirror owns. Both daemons write under
//!   `<results>/<machine_id>/`, and a device reporting both kinds of database could ship a file
//!   named like its MariaDB mirror; the mirror marks its files with a `<name>.db.lock` next to
//!   them, so `X.db` (with `X.db.lock`), its `X.txt` sidecar and the lock itself are left alone
//!   and reported.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use etho_model::error_chain;
use tokio_util::sync::CancellationToken;

use crate::live::check::{self, CheckFailure};
use crate::live::format::DB_MAGIC;
use crate::sizes::SizeDelta;

/// Suffix of the hidden temporary name used only by the cross-filesystem fallback.
pub const CROSS_DEVICE_TMP_SUFFIX: &str = ".etho-backup-tmp";

/// What a promotion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromoteReport {
    /// Regular files moved into the archive.
    pub files: u64,
    /// Symlinks moved into the archive.
    pub links: u64,
    /// Entries that could not be moved (conflicts, I/O errors), with the reason.
    pub errors: Vec<String>,
    /// Change of the archive's regular-file count and bytes.
    pub delta: SizeDelta,
    /// Files had to be copied because staging is on another filesystem.
    pub cross_device: bool,
    /// Stopped early because the job was cancelled; the rest is promoted next time.
    pub interrupted: bool,
}

/// True when `path` starts with the SQLite 3 header.
pub fn is_sqlite_file(path: &Path) -> bool {
    let mut head = [0u8; 16];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == DB_MAGIC)
}

/// Runs `PRAGMA quick_check` on a database file without modifying it or creating companions:
/// `Ok(())` when SQLite answers `ok`; otherwise its first complaints
/// ([`CheckFailure::Integrity`]), or why it could not read the file.
pub fn quick_check(path: &Path) -> Result<(), CheckFailure> {
    check::integrity(path, "quick_check", &CancellationToken::new())
}

/// Why an archive directory could not be made a real directory.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveDirError {
    /// `rel` has a component other than a plain name (`..`, `/`).
    #[error("refusing odd path component in {}", .0.display())]
    OddComponent(PathBuf),
    /// A regular file (or other non-directory) stands where the device has a directory.
    #[error("{}: the archive holds a file where the device has a directory", .0.display())]
    FileInTheWay(PathBuf),
    /// A file operation failed.
    #[error("cannot {what} {}", .path.display())]
    Io {
        /// `create`, `inspect`, `replace symlink`.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Promotes everything under `staging` into `archive`. `cancelled` is polled between entries.
/// Staging directories that end up empty are removed. `archive` must exist and be a real
/// directory (the engine checks that before rsync runs).
pub fn promote(staging: &Path, archive: &Path, cancelled: &dyn Fn() -> bool) -> PromoteReport {
    let mut report = PromoteReport::default();
    promote_dir(staging, archive, Path::new(""), cancelled, &mut report);
    report
}

fn promote_dir(
    staging_root: &Path,
    archive_root: &Path,
    rel: &Path,
    cancelled: &dyn Fn() -> bool,
    report: &mut PromoteReport,
) {
    let dir = staging_root.join(rel);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(err) => {
            if err.kind() != io::ErrorKind::NotFound {
                report
                    .errors
                    .push(format!("cannot read staging dir {}: {err}", dir.display()));
            }
            return;
        }
    };
    let mut names: Vec<_> = entries.filter_map(Result::ok).collect();
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        if cancelled() {
            report.interrupted = true;
            return;
        }
        let rel_path = rel.join(entry.file_name());
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            promote_dir(staging_root, archive_root, &rel_path, cancelled, report);
            if report.interrupted {
                return;
            }
            let staged_dir = staging_root.join(&rel_path);
            match ensure_archive_dir(archive_root, &rel_path) {
                Ok(target) => copy_dir_attrs(&staged_dir, &target),
                Err(err) => report.errors.push(error_chain(&err)),
            }
            // Only succeeds when everything inside was promoted.
            let _ = fs::remove_dir(&staged_dir);
        } else if file_type.is_file() || file_type.is_symlink() {
            promote_entry(
                staging_root,
                archive_root,
                &rel_path,
                file_type.is_file(),
                report,
            );
        } else {
            // rsync without -D never creates these; drop anything odd.
            let _ = fs::remove_file(staging_root.join(&rel_path));
        }
    }
}

fn promote_entry(
    staging_root: &Path,
    archive_root: &Path,
    rel: &Path,
    is_file: bool,
    report: &mut PromoteReport,
) {
    let staged = staging_root.join(rel);
    let shown = rel.to_string_lossy().into_owned();
    if rel
        .file_name()
        .is_some_and(|n| crate::live::is_companion(&n.to_string_lossy()))
    {
        return;
    }
    let parent_rel = rel.parent().unwrap_or(Path::new(""));
    let parent = match ensure_archive_dir(archive_root, parent_rel) {
        Ok(p) => p,
        Err(err) => {
            report.errors.push(error_chain(&err));
            return;
        }
    };
    let Some(name) = rel.file_name() else {
        return;
    };
    let target = parent.join(name);
    if owned_by_mysql_mirror(&target) {
        let _ = fs::remove_file(&staged);
        report.errors.push(format!(
            "{shown}: not copied: the MySQL mirror owns this file (a .db.lock marks it)"
        ));
        return;
    }
    let old = fs::symlink_metadata(&target).ok();
    if old.as_ref().is_some_and(fs::Metadata::is_dir) {
        report.errors.push(format!(
            "{shown}: the archive holds a directory there; the device's {} was not copied over it",
            if is_file { "file" } else { "symlink" }
        ));
        return;
    }
    let new_size = if is_file {
        fs::symlink_metadata(&staged).map(|m| m.len()).unwrap_or(0)
    } else {
        0
    };
    let moved = match fs::rename(&staged, &target) {
        Ok(()) => Ok(()),
        Err(err) if err.raw_os_error() == Some(nix::libc::EXDEV) => {
            report.cross_device = true;
            copy_into_place(&staged, &target, is_file)
        }
        Err(err) => Err(err),
    };
    if let Err(err) = moved {
        report.errors.push(format!("{shown}: {err}"));
        return;
    }
    if let Some(old) = old.filter(fs::Metadata::is_file) {
        report.delta.files -= 1;
        report.delta.bytes -= i64::try_from(old.len()).unwrap_or(i64::MAX);
    }
    if is_file {
        report.files += 1;
        report.delta.files += 1;
        report.delta.bytes += i64::try_from(new_size).unwrap_or(i64::MAX);
    } else {
        report.links += 1;
    }
}

/// True for the files of a MySQL mirror in the archive: `X.db` next to `X.db.lock`, the `X.txt`
/// sidecar of such a file, and any `*.db.lock`.
fn owned_by_mysql_mirror(target: &Path) -> bool {
    let Some(name) = target.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let sibling = |n: String| fs::symlink_metadata(target.with_file_name(n)).is_ok();
    if name.ends_with(".db.lock") {
        return true;
    }
    if name.ends_with(".db") && sibling(format!("{name}.lock")) {
        return true;
    }
    name.strip_suffix(".txt")
        .is_some_and(|stem| sibling(format!("{stem}.db.lock")))
}

/// Cross-filesystem fallback: copy under a hidden temporary name next to the target, then rename,
/// so the archive still never holds a half-written file under a real name.
fn copy_into_place(staged: &Path, target: &Path, is_file: bool) -> io::Result<()> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = target.with_file_name(format!(".{name}{CROSS_DEVICE_TMP_SUFFIX}"));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        if is_file {
            fs::copy(staged, &tmp)?;
            let meta = fs::metadata(staged)?;
            let f = fs::OpenOptions::new().write(true).open(&tmp)?;
            f.set_modified(meta.modified()?)?;
            f.sync_all()?;
        } else {
            std::os::unix::fs::symlink(fs::read_link(staged)?, &tmp)?;
        }
        fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    } else {
        let _ = fs::remove_file(staged);
    }
    result
}

/// Makes `archive_root/rel` a real directory, component by component, without following any
/// symlink below `archive_root`: a symlink (which can only have come from an older tool) is
/// replaced by a directory. A regular file in the way is an error (no data is deleted).
pub fn ensure_archive_dir(archive_root: &Path, rel: &Path) -> Result<PathBuf, ArchiveDirError> {
    let io_error = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| ArchiveDirError::Io { what, path, source }
    };
    let mut path = archive_root.to_path_buf();
    for comp in rel.components() {
        let Component::Normal(name) = comp else {
            return Err(ArchiveDirError::OddComponent(rel.to_path_buf()));
        };
        path.push(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                tracing::warn!(
                    "replacing symlink {} in the archive by a directory",
                    path.display()
                );
                fs::remove_file(&path)
                    .and_then(|()| fs::create_dir(&path))
                    .map_err(io_error("replace symlink", &path))?;
            }
            Ok(_) => return Err(ArchiveDirError::FileInTheWay(path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&path).map_err(io_error("create", &path))?;
            }
            Err(e) => return Err(io_error("inspect", &path)(e)),
        }
    }
    Ok(path)
}

fn copy_dir_attrs(from: &Path, to: &Path) {
    if let Ok(meta) = fs::metadata(from) {
        let _ = fs::set_permissions(to, fs::Permissions::from_mode(meta.permissions().mode()));
        if let (Ok(mtime), Ok(dir)) = (meta.modified(), fs::File::open(to)) {
            let _ = dir.set_modified(mtime);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, data: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    fn make_db(path: &Path, rows: i64) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
            .unwrap();
        for i in 0..rows {
            c.execute("INSERT INTO t (v) VALUES (randomblob(500))", [])
                .unwrap();
            let _ = i;
        }
    }

    #[test]
    fn moves_files_and_links_and_counts_sizes() {
        let t = tempfile::tempdir().unwrap();
        let (st, ar) = (t.path().join("staging"), t.path().join("archive"));
        fs::create_dir_all(&ar).unwrap();
        write(&st.join("a/b/new.txt"), b"12345");
        write(&st.join("a/old.txt"), b"1234567890");
        write(&ar.join("a/old.txt"), b"123");
        std::os::unix::fs::symlink("b/new.txt", st.join("a/link")).unwrap();
        let r = promote(&st, &ar, &|| false);
        assert_eq!((r.files, r.links), (2, 1));
        assert_eq!(
            r.delta,
            SizeDelta {
                files: 1,
                bytes: 5 + 10 - 3
            }
        );
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(fs::read(ar.join("a/b/new.txt")).unwrap(), b"12345");
        assert_eq!(fs::read(ar.join("a/old.txt")).unwrap(), b"1234567890");
        assert_eq!(
            fs::read_link(ar.join("a/link")).unwrap(),
            Path::new("b/new.txt")
        );
        assert!(!st.exists() || fs::read_dir(&st).unwrap().next().is_none());
    }

    #[test]
    fn files_of_the_mysql_mirror_are_never_replaced() {
        let t = tempfile::tempdir().unwrap();
        let (st, ar) = (t.path().join("staging"), t.path().join("archive"));
        let dir = "ETHOSCOPE_001/2025-07-10_10-00-00";
        let db = "2025-07-10_10-00-00_0123456789abcdef0123456789abcdef";
        write(&ar.join(format!("{dir}/{db}.db")), b"mirror");
        write(&ar.join(format!("{dir}/{db}.txt")), b"dam");
        write(&ar.join(format!("{dir}/{db}.db.lock")), b"");
        write(&st.join(format!("{dir}/{db}.db")), b"device file");
        write(&st.join(format!("{dir}/{db}.txt")), b"device txt");
        write(&st.join(format!("{dir}/{db}.db.lock")), b"device lock");
        write(&st.join(format!("{dir}/other.txt")), b"plain");
        let r = promote(&st, &ar, &|| false);
        assert_eq!(r.errors.len(), 3, "{:?}", r.errors);
        assert!(r.errors.iter().all(|e| e.contains("MySQL mirror owns")));
        assert_eq!(
            fs::read(ar.join(format!("{dir}/{db}.db"))).unwrap(),
            b"mirror"
        );
        assert_eq!(
            fs::read(ar.join(format!("{dir}/{db}.txt"))).unwrap(),
            b"dam"
        );
        assert_eq!(
            fs::read(ar.join(format!("{dir}/{db}.db.lock"))).unwrap(),
            b""
        );
        assert_eq!(
            fs::read(ar.join(format!("{dir}/other.txt"))).unwrap(),
            b"plain"
        );
        assert_eq!(r.files, 1);
    }

    #[test]
    fn sqlite_companions_never_reach_the_archive() {
        let t = tempfile::tempdir().unwrap();
        let (st, ar) = (t.path().join("staging"), t.path().join("archive"));
        fs::create_dir_all(&ar).unwrap();
        make_db(&st.join("x/run.db"), 3);
        for c in ["-wal", "-journal", "-shm"] {
            write(&st.join(format!("x/run.db{c}")), b"companion");
        }
        let r = promote(&st, &ar, &|| false);
        assert_eq!(r.files, 1);
        assert!(ar.join("x/run.db").is_file());
        for c in ["-wal", "-journal", "-shm"] {
            assert!(!ar.join(format!("x/run.db{c}")).exists());
        }
    }

    #[test]
    fn never_writes_through_an_archive_symlink() {
        let t = tempfile::tempdir().unwrap();
        let (st, ar, outside) = (
            t.path().join("staging"),
            t.path().join("archive"),
            t.path().join("outside"),
        );
        fs::create_dir_all(&ar).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, ar.join("evil")).unwrap();
        write(&st.join("evil/payload"), b"x");
        let r = promote(&st, &ar, &|| false);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        assert!(fs::symlink_metadata(ar.join("evil")).unwrap().is_dir());
        assert!(ar.join("evil/payload").is_file());
    }

    #[test]
    fn conflicts_are_reported_not_deleted() {
        let t = tempfile::tempdir().unwrap();
        let (st, ar) = (t.path().join("staging"), t.path().join("archive"));
        write(&ar.join("d/keep.txt"), b"keep");
        write(&st.join("d"), b"now a file");
        let r = promote(&st, &ar, &|| false);
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert_eq!(fs::read(ar.join("d/keep.txt")).unwrap(), b"keep");
    }

    #[test]
    fn cancellation_stops_between_entries() {
        let t = tempfile::tempdir().unwrap();
        let (st, ar) = (t.path().join("staging"), t.path().join("archive"));
        fs::create_dir_all(&ar).unwrap();
        write(&st.join("a"), b"1");
        let r = promote(&st, &ar, &|| true);
        assert!(r.interrupted);
        assert!(st.join("a").exists());
    }

    #[test]
    fn sqlite_detection_and_uri_escaping() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("odd ?#% name.db");
        make_db(&db, 1);
        assert!(is_sqlite_file(&db));
        assert_eq!(quick_check(&db), Ok(()));
        let txt = t.path().join("plain.db");
        fs::write(&txt, b"not sqlite").unwrap();
        assert!(!is_sqlite_file(&txt));
    }
}
