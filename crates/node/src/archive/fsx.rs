//! Read-only access below a root that never follows a symlink.
//!
//! Devices put files into the archive (through rsync), so the archive is untrusted: a symlink in it
//! could point anywhere on the node. Every path is therefore opened one component at a time with
//! `openat(dir, name, O_NOFOLLOW | …)` from a descriptor of the configured root, and every
//! component is a validated [`Name`] (no `/`, never `.` or `..`). A symlink at any level fails with
//! `ELOOP`/`ENOTDIR` instead of being followed; a FIFO or device node is opened non-blocking and
//! refused by its type. Nothing outside the roots can be reached, whatever the tree holds.
//!
//! Only the roots themselves are opened by path (they are the node's configuration, and may be a
//! symlink to another disk on purpose).
//!
//! SQLite opens files by path. For databases, [`ExperimentDir`] opens the directory as above and
//! also keeps its path below the *canonical* root (every symlink of the configured root resolved),
//! and SQLite is given that path with `SQLITE_OPEN_NOFOLLOW`, which makes SQLite refuse a symlink
//! in any component. So a link planted after the walk is refused by SQLite itself.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::dir::{Dir, Type};
use nix::fcntl::{open, openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

use super::names::{ExperimentRef, Name};

/// Flags every open below a root carries. `O_NOFOLLOW` is what keeps symlinks out; see
/// [`open_below`], the only function that opens a component.
const BELOW: OFlag = OFlag::O_NOFOLLOW
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY)
    .union(OFlag::O_NOCTTY);

/// Size, modification time and inode: what tells two versions of a file apart.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Fingerprint {
    /// Bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Inode number (a rename-promoted new version has a new one).
    pub ino: u64,
}

impl Fingerprint {
    /// From a `stat` result.
    pub fn of(st: &FileStat) -> Fingerprint {
        Fingerprint {
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime_ns: i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec),
            ino: st.st_ino,
        }
    }

    /// Modification time in whole seconds since the epoch.
    pub fn mtime(&self) -> i64 {
        i64::try_from(self.mtime_ns.div_euclid(1_000_000_000)).unwrap_or(0)
    }

    /// A strong entity tag for this version: `"<prefix>-<hex>"`.
    pub fn etag(&self, prefix: &str) -> String {
        format!(
            "\"{prefix}-{:x}-{:x}-{:x}\"",
            self.ino, self.size, self.mtime_ns
        )
    }
}

/// What kind of entry a directory holds, without following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A real directory.
    Dir,
    /// A regular file.
    File,
    /// Anything else (symlink, FIFO, socket, device): never used.
    Other,
}

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from(e)
}

/// Opens a configured root directory (following a symlink there: it is configuration).
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    open(
        path,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)
}

/// The one place a component below a root is opened: always `O_NOFOLLOW`, always one validated
/// component relative to an already opened directory.
fn open_below(dir: impl AsFd, name: &Name, extra: OFlag) -> io::Result<OwnedFd> {
    let flags = BELOW | extra;
    assert!(
        flags.contains(OFlag::O_NOFOLLOW) && !name.as_str().contains('/'),
        "archive opens never follow links and take one component"
    );
    openat(dir, name.as_str(), flags, Mode::empty()).map_err(errno)
}

/// Opens the real directory `name` in `dir`; a symlink there is refused.
pub fn open_dir(dir: impl AsFd, name: &Name) -> io::Result<OwnedFd> {
    open_below(dir, name, OFlag::O_DIRECTORY)
}

/// Opens `root/<components…>` as a directory, one component at a time.
pub fn open_dirs(root: &OwnedFd, components: &[&Name]) -> io::Result<OwnedFd> {
    let mut current = root.try_clone()?;
    for name in components {
        current = open_dir(&current, name)?;
    }
    Ok(current)
}

/// Opens the regular file `name` in `dir` for reading. A symlink, FIFO, socket or device is
/// refused (`O_NONBLOCK` so that opening a FIFO cannot hang).
pub fn open_file(dir: impl AsFd, name: &Name) -> io::Result<(File, Fingerprint)> {
    let fd = open_below(dir, name, OFlag::O_NONBLOCK)?;
    let st = fstat(&fd).map_err(errno)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((File::from(fd), Fingerprint::of(&st)))
}

/// `lstat` of `name` in `dir`: the entry's kind and fingerprint, never following a link.
pub fn stat(dir: impl AsFd, name: &str) -> io::Result<(EntryKind, Fingerprint)> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
    let kind = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFDIR => EntryKind::Dir,
        SFlag::S_IFREG => EntryKind::File,
        _ => EntryKind::Other,
    };
    Ok((kind, Fingerprint::of(&st)))
}

/// The names in `dir` with their kind (from `d_type`, or `lstat` where the filesystem does not
/// say), without `.` and `..`. Names that are not UTF-8 are skipped: no valid component has them.
pub fn list(dir: &OwnedFd) -> io::Result<Vec<(String, EntryKind)>> {
    let mut handle = Dir::from_fd(dir.try_clone()?).map_err(errno)?;
    let mut out = Vec::new();
    for entry in handle.iter() {
        let entry = entry.map_err(errno)?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let kind = match entry.file_type() {
            Some(Type::Directory) => EntryKind::Dir,
            Some(Type::File) => EntryKind::File,
            Some(_) => EntryKind::Other,
            None => stat(dir, name).map_or(EntryKind::Other, |(k, _)| k),
        };
        out.push((name.to_string(), kind));
    }
    Ok(out)
}

/// An experiment directory, opened without following links, and its path below the canonical
/// root (for SQLite, which opens by path).
#[derive(Debug)]
pub struct ExperimentDir {
    /// The directory.
    pub fd: OwnedFd,
    /// Its path: the root with every symlink resolved, then the validated components.
    pub path: PathBuf,
}

impl ExperimentDir {
    /// Opens `<root>/<id>/<name>/<date>`.
    pub fn open(root: &Path, experiment: &ExperimentRef) -> io::Result<ExperimentDir> {
        let canonical = std::fs::canonicalize(root)?;
        let root_fd = open_root(&canonical)?;
        let fd = open_dirs(&root_fd, &experiment.components())?;
        let path = experiment
            .components()
            .iter()
            .fold(canonical, |p, c| p.join(c.as_str()));
        Ok(ExperimentDir { fd, path })
    }

    /// The path of `name` in it. No component of it is a symlink unless someone replaced one
    /// since [`ExperimentDir::open`]; SQLite's `SQLITE_OPEN_NOFOLLOW` refuses it then.
    pub fn file_path(&self, name: &Name) -> PathBuf {
        self.path.join(name.as_str())
    }
}

/// Whether `dir` holds a regular file `<name>.lock`: the MySQL mirror's mark on a database it
/// updates in place.
pub fn has_mirror_lock(dir: impl AsFd, name: &Name) -> bool {
    matches!(
        stat(dir, &format!("{}.lock", name.as_str())),
        Ok((EntryKind::File, _))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn n(s: &str) -> Name {
        Name::file(s)
            .or_else(|| Name::machine_name(s))
            .expect("valid test name")
    }

    #[test]
    fn symlinks_are_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root_dir = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root_dir.join("real")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), b"secret").unwrap();
        std::fs::write(root_dir.join("real/inside.txt"), b"inside").unwrap();
        symlink(&outside, root_dir.join("linkdir")).unwrap();
        symlink(outside.join("secret.txt"), root_dir.join("real/link.txt")).unwrap();
        let root = open_root(&root_dir).unwrap();

        let real = open_dirs(&root, &[&n("real")]).unwrap();
        let (mut f, fp) = open_file(&real, &n("inside.txt")).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut f, &mut text).unwrap();
        assert_eq!((text.as_str(), fp.size), ("inside", 6));

        let err = open_dirs(&root, &[&n("linkdir")]).unwrap_err();
        // O_DIRECTORY | O_NOFOLLOW on a symlink: ENOTDIR (ELOOP on some kernels).
        assert!(
            matches!(
                err.raw_os_error(),
                Some(nix::libc::ELOOP | nix::libc::ENOTDIR)
            ),
            "{err}"
        );
        let err = open_file(&real, &n("link.txt")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::ELOOP), "{err}");

        let mut entries = list(&root).unwrap();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            entries,
            [
                ("linkdir".to_string(), EntryKind::Other),
                ("real".to_string(), EntryKind::Dir)
            ]
        );
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&tmp.path().join("pipe.h264"), Mode::S_IRWXU).unwrap();
        let root = open_root(tmp.path()).unwrap();
        let err = open_file(&root, &n("pipe.h264")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(stat(&root, "pipe.h264").unwrap().0, EntryKind::Other);
    }

    #[test]
    fn experiment_paths_are_canonical() {
        let tmp = tempfile::tempdir().unwrap();
        let exp = ExperimentRef::parse(
            "0123456789abcdef0123456789abcdef",
            "ETHOSCOPE_001",
            "2025-07-10_10-00-00",
        )
        .unwrap();
        let real = tmp.path().join("disk");
        std::fs::create_dir_all(real.join(exp.path())).unwrap();
        // A root that is itself a symlink (to another disk) is configuration, and allowed.
        symlink(&real, tmp.path().join("results")).unwrap();
        let dir = ExperimentDir::open(&tmp.path().join("results"), &exp).unwrap();
        let want = std::fs::canonicalize(&real).unwrap().join(exp.path());
        assert_eq!(dir.path, want);
        assert_eq!(dir.file_path(&n("x.db")), want.join("x.db"));
        // A symlink below the root is not.
        std::fs::remove_dir_all(real.join("0123456789abcdef0123456789abcdef")).unwrap();
        std::fs::create_dir_all(tmp.path().join("elsewhere").join(exp.path())).unwrap();
        symlink(
            tmp.path()
                .join("elsewhere/0123456789abcdef0123456789abcdef"),
            real.join("0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(ExperimentDir::open(&tmp.path().join("results"), &exp).is_err());
    }
}
