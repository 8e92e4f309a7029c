//! Per-device archive sizes, kept current without walking the archive on request.
//!
//! Upstream walked the *whole* archive once per device per cycle, under the lock that
//! `GET /status` needed, and reported the archive total as every device's size (reference §1.8,
//! §8.6, §8.20). Here:
//!
//! - each device's `results/<id>` and `videos/<id>` size is one entry of a [`SizeIndex`], read
//!   under a short read lock by `GET /status`;
//! - a job adjusts its device's entries by what it promoted ([`SizeDelta`]), so sizes are right
//!   the moment a job ends. The update is a guard ([`SizeUpdate`]): a job that never finishes it
//!   (aborted or panicking while it promotes) still ends it when the guard drops, and the tree is
//!   marked stale, so the next rescan measures it and the next job does not add a delta to a
//!   size it cannot trust;
//! - a periodic full rescan ([`scan_root`], parallel, stat-only on regular files) corrects any
//!   drift (files removed by hand, ...). A rescan never overwrites an entry a job changed while
//!   it was walking (each entry carries a version).
//!
//! The index as a whole also has a version, bumped by every change (job updates, rescans), so
//! `GET /status` can reuse its rendered body until either the index or the status table changes.
//!
//! Counted: regular files and their apparent size (`st_size`), as `find -type f` and `stat -c %s`
//! would; symlinks and directories are not files and have no size here.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use etho_model::device::is_valid_machine_id;
use rayon::prelude::*;
use serde::Serialize;

use crate::config::Kind;

/// Regular files and their bytes in one tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TreeSize {
    /// Number of regular files.
    pub files: u64,
    /// Sum of their `st_size`.
    pub bytes: u64,
}

impl std::ops::Add for TreeSize {
    type Output = TreeSize;
    fn add(self, o: TreeSize) -> TreeSize {
        TreeSize {
            files: self.files + o.files,
            bytes: self.bytes + o.bytes,
        }
    }
}

/// A signed change of a [`TreeSize`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeDelta {
    /// Change of the file count.
    pub files: i64,
    /// Change of the byte count.
    pub bytes: i64,
}

impl TreeSize {
    /// Applies a delta, saturating at zero.
    pub fn apply(self, d: SizeDelta) -> TreeSize {
        TreeSize {
            files: self.files.saturating_add_signed(d.files),
            bytes: self.bytes.saturating_add_signed(d.bytes),
        }
    }
}

/// Walks `dir` (never following symlinks), in parallel over subdirectories. Unreadable
/// subdirectories and entries that vanish mid-walk are skipped; only an unreadable `dir` itself
/// is an error.
pub fn walk_tree(dir: &Path) -> io::Result<TreeSize> {
    let entries = fs::read_dir(dir)?;
    let mut own = TreeSize::default();
    let mut subdirs: Vec<PathBuf> = Vec::new();
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            subdirs.push(entry.path());
        } else if ft.is_file() {
            // DirEntry::metadata is an fstatat relative to the open directory, no symlink follow.
            if let Ok(m) = entry.metadata() {
                own.files += 1;
                own.bytes += m.len();
            }
        }
    }
    let below = subdirs
        .par_iter()
        .map(|d| walk_tree(d).unwrap_or_default())
        .reduce(TreeSize::default, |a, b| a + b);
    Ok(own + below)
}

/// Sizes of every device directory (`<root>/<machine_id>`, real directories only) under `root`.
/// A missing root is empty.
pub fn scan_root(root: &Path) -> io::Result<BTreeMap<String, TreeSize>> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let devices: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            is_valid_machine_id(&name).then(|| (name, e.path()))
        })
        .collect();
    Ok(devices
        .into_par_iter()
        .map(|(id, path)| (id, walk_tree(&path).unwrap_or_default()))
        .collect())
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: TreeSize,
    /// Bumped by every job update; a rescan commits only if unchanged.
    version: u64,
    /// Jobs currently promoting into this tree.
    busy: u32,
    /// An update ended without its change (the job stopped mid-promotion): the size is a guess
    /// until the next rescan measures the tree.
    stale: bool,
}

impl Entry {
    const NEW: Entry = Entry {
        size: TreeSize { files: 0, bytes: 0 },
        version: 0,
        busy: 0,
        stale: false,
    };
}

/// When and how the last full rescan ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RescanInfo {
    /// Epoch seconds when it finished.
    pub finished_at: Option<i64>,
    /// How long it took, in seconds.
    pub duration_s: Option<f64>,
    /// Device trees it measured.
    pub trees: usize,
    /// Trees it left alone because a job changed them meanwhile.
    pub skipped_busy: usize,
    /// Errors reading the archive roots.
    pub errors: Vec<String>,
}

/// The size of every device tree, shared by jobs, the rescan loop and `GET /status`.
#[derive(Debug, Default)]
pub struct SizeIndex {
    inner: RwLock<IndexInner>,
}

#[derive(Debug, Default)]
struct IndexInner {
    entries: HashMap<(Kind, String), Entry>,
    rescan: RescanInfo,
    /// Bumped by every write lock taken, i.e. by every change (see [`SizeIndex::version`]).
    version: u64,
}

/// A versioned view used by a rescan to detect concurrent job updates.
#[derive(Debug, Clone)]
pub struct Versions(HashMap<(Kind, String), u64>);

impl SizeIndex {
    /// An empty index.
    pub fn new() -> SizeIndex {
        SizeIndex::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, IndexInner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Every change goes through here, so bumping the version here cannot miss one (a write
    /// that changes nothing bumps it too, which only costs a reader a re-render).
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, IndexInner> {
        let mut w = self.inner.write().unwrap_or_else(|p| p.into_inner());
        w.version = w.version.wrapping_add(1);
        w
    }

    /// The index's version: the same version means the same sizes, so a reader may reuse what
    /// it derived from the index while the version stays put. Read it *before* reading sizes:
    /// a change in between then only makes the derived value newer than its version.
    pub fn version(&self) -> u64 {
        self.read().version
    }

    /// The known size of a device tree.
    pub fn get(&self, kind: Kind, id: &str) -> Option<TreeSize> {
        self.read()
            .entries
            .get(&(kind, id.to_string()))
            .map(|e| e.size)
    }

    /// Sums over every known tree: `(results, videos)`.
    pub fn totals(&self) -> (TreeSize, TreeSize) {
        let r = self.read();
        let sum = |kind: Kind| {
            r.entries
                .iter()
                .filter(|((k, _), _)| *k == kind)
                .fold(TreeSize::default(), |acc, (_, e)| acc + e.size)
        };
        (sum(Kind::Results), sum(Kind::Videos))
    }

    /// Info about the last rescan.
    pub fn rescan_info(&self) -> RescanInfo {
        self.read().rescan.clone()
    }

    /// A job is about to change a tree: rescans in flight will not overwrite it until the
    /// returned guard is finished with the change, or dropped.
    pub fn begin_update(self: &Arc<Self>, kind: Kind, id: &str) -> SizeUpdate {
        let mut w = self.write();
        let e = w
            .entries
            .entry((kind, id.to_string()))
            .or_insert(Entry::NEW);
        e.version += 1;
        e.busy += 1;
        SizeUpdate {
            index: Arc::clone(self),
            kind,
            id: id.to_string(),
            change: None,
        }
    }

    /// Ends an update: applies `change`, or without one marks the tree stale.
    fn end_update(&self, kind: Kind, id: &str, change: Option<SizeChange>) {
        let mut w = self.write();
        let e = w.entries.entry((kind, id.to_string())).or_insert(Entry {
            busy: 1,
            ..Entry::NEW
        });
        match change {
            Some(SizeChange::Delta(d)) => e.size = e.size.apply(d),
            Some(SizeChange::Absolute(s)) => {
                e.size = s;
                e.stale = false;
            }
            None => e.stale = true,
        }
        e.version += 1;
        e.busy = e.busy.saturating_sub(1);
    }

    /// Whether a job is changing the tree now.
    pub fn updating(&self, kind: Kind, id: &str) -> bool {
        self.read()
            .entries
            .get(&(kind, id.to_string()))
            .is_some_and(|e| e.busy > 0)
    }

    /// Whether a tree has a measured size (from a rescan or a job) that a job's delta can be
    /// added to: not one an unfinished update left stale.
    pub fn has(&self, kind: Kind, id: &str) -> bool {
        self.read()
            .entries
            .get(&(kind, id.to_string()))
            .is_some_and(|e| !e.stale)
    }

    /// Snapshot of entry versions, taken before a rescan walks.
    pub fn versions(&self) -> Versions {
        Versions(
            self.read()
                .entries
                .iter()
                .map(|(k, e)| (k.clone(), e.version))
                .collect(),
        )
    }

    /// Commits a rescan of `kind`: sets every measured tree whose entry did not change since
    /// `before` and is not being updated; trees that disappeared from disk become zero.
    /// Returns how many trees were skipped because a job touched them.
    pub fn commit_rescan(
        &self,
        kind: Kind,
        measured: &BTreeMap<String, TreeSize>,
        before: &Versions,
    ) -> usize {
        let mut w = self.write();
        let mut skipped = 0;
        for (id, size) in measured {
            let key = (kind, id.clone());
            match w.entries.get_mut(&key) {
                Some(e) => {
                    if e.busy > 0 || before.0.get(&key) != Some(&e.version) {
                        skipped += 1;
                    } else {
                        e.size = *size;
                        e.stale = false;
                    }
                }
                None => {
                    if before.0.contains_key(&key) {
                        skipped += 1;
                    } else {
                        w.entries.insert(
                            key,
                            Entry {
                                size: *size,
                                ..Entry::NEW
                            },
                        );
                    }
                }
            }
        }
        for ((k, id), e) in w.entries.iter_mut() {
            if *k == kind
                && !measured.contains_key(id)
                && e.busy == 0
                && before.0.get(&(*k, id.clone())) == Some(&e.version)
            {
                e.size = TreeSize::default();
                e.stale = false;
            }
        }
        skipped
    }

    /// Records a finished rescan.
    pub fn set_rescan_info(&self, info: RescanInfo) {
        self.write().rescan = info;
    }
}

/// A job's update of one tree's size, from [`SizeIndex::begin_update`]. [`SizeUpdate::finish`]
/// applies the job's change; dropped unfinished (the job was aborted or panicked while it
/// promoted), it still ends the update, and marks the tree stale: the next rescan measures it
/// (a tree left busy would never be rescanned again), and until then jobs measure it instead of
/// adding their delta to a size that missed part of a promotion.
#[must_use = "the update ends when the guard is finished or dropped"]
#[derive(Debug)]
pub struct SizeUpdate {
    index: Arc<SizeIndex>,
    kind: Kind,
    id: String,
    change: Option<SizeChange>,
}

impl SizeUpdate {
    /// Applies the job's change and ends the update.
    pub fn finish(mut self, change: SizeChange) {
        self.change = Some(change);
    }
}

impl Drop for SizeUpdate {
    fn drop(&mut self) {
        self.index
            .end_update(self.kind, &self.id, self.change.take());
    }
}

/// How a job changes a tree's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeChange {
    /// Adjust the known size.
    Delta(SizeDelta),
    /// Replace it (first measurement).
    Absolute(TreeSize),
}

/// Rescans both archive roots (those enabled) and commits the result. Blocking: run it on a
/// blocking thread.
pub fn rescan(index: &SizeIndex, roots: &[(Kind, &Path)]) -> RescanInfo {
    let started = Instant::now();
    let mut info = RescanInfo::default();
    for &(kind, root) in roots {
        let before = index.versions();
        match scan_root(root) {
            Ok(measured) => {
                info.trees += measured.len();
                info.skipped_busy += index.commit_rescan(kind, &measured, &before);
            }
            Err(e) => info
                .errors
                .push(format!("cannot scan {}: {e}", root.display())),
        }
    }
    info.duration_s = Some(round_ms(started.elapsed()));
    info.finished_at = Some(etho_model::now_epoch());
    index.set_rescan_info(info.clone());
    info
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn write(path: &Path, n: usize) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, vec![7u8; n]).unwrap();
    }

    #[test]
    fn walks_per_device_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("results");
        write(&root.join(A).join("x/1.db"), 100);
        write(&root.join(A).join("x/y/2.db"), 50);
        write(&root.join(B).join("3.db"), 7);
        write(&root.join("not-a-device/4.db"), 1000);
        std::os::unix::fs::symlink("/etc", root.join(A).join("etc")).unwrap();
        std::os::unix::fs::symlink(root.join(B), root.join(A).join("b")).unwrap();
        std::os::unix::fs::symlink(root.join(B), root.join("cccccccccccccccccccccccccccccccc"))
            .unwrap();
        let m = scan_root(&root).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[A],
            TreeSize {
                files: 2,
                bytes: 150
            }
        );
        assert_eq!(m[B], TreeSize { files: 1, bytes: 7 });
        assert!(scan_root(&t.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn rescan_does_not_clobber_concurrent_job_updates() {
        let idx = Arc::new(SizeIndex::new());
        let before = idx.versions();
        // A job for A runs while the rescan walks.
        idx.begin_update(Kind::Results, A)
            .finish(SizeChange::Absolute(TreeSize {
                files: 3,
                bytes: 30,
            }));
        let measured: BTreeMap<String, TreeSize> = [
            (
                A.to_string(),
                TreeSize {
                    files: 2,
                    bytes: 20,
                },
            ),
            (B.to_string(), TreeSize { files: 1, bytes: 1 }),
        ]
        .into();
        assert_eq!(idx.commit_rescan(Kind::Results, &measured, &before), 1);
        assert_eq!(
            idx.get(Kind::Results, A),
            Some(TreeSize {
                files: 3,
                bytes: 30
            })
        );
        assert_eq!(
            idx.get(Kind::Results, B),
            Some(TreeSize { files: 1, bytes: 1 })
        );
        // The next rescan, with nothing running, wins; a vanished tree becomes zero.
        let before = idx.versions();
        let measured: BTreeMap<String, TreeSize> = [(
            A.to_string(),
            TreeSize {
                files: 5,
                bytes: 50,
            },
        )]
        .into();
        assert_eq!(idx.commit_rescan(Kind::Results, &measured, &before), 0);
        assert_eq!(
            idx.get(Kind::Results, A),
            Some(TreeSize {
                files: 5,
                bytes: 50
            })
        );
        assert_eq!(idx.get(Kind::Results, B), Some(TreeSize::default()));
        // Deltas apply on top and saturate.
        idx.begin_update(Kind::Results, A)
            .finish(SizeChange::Delta(SizeDelta {
                files: -10,
                bytes: 5,
            }));
        assert_eq!(
            idx.get(Kind::Results, A),
            Some(TreeSize {
                files: 0,
                bytes: 55
            })
        );
        assert_eq!(idx.get(Kind::Videos, A), None);
    }

    #[test]
    fn every_change_bumps_the_version_and_reads_do_not() {
        let idx = Arc::new(SizeIndex::new());
        let mut last = idx.version();
        let mut changed = |idx: &SizeIndex, what: &str| {
            let v = idx.version();
            assert!(v > last, "{what} must bump the version ({last} -> {v})");
            last = v;
        };
        let update = idx.begin_update(Kind::Videos, A);
        changed(&idx, "begin_update");
        update.finish(SizeChange::Delta(SizeDelta { files: 1, bytes: 9 }));
        changed(&idx, "end_update (job delta)");
        drop(idx.begin_update(Kind::Videos, A));
        changed(&idx, "an update dropped unfinished");
        let before = idx.versions();
        let measured: BTreeMap<String, TreeSize> =
            [(B.to_string(), TreeSize { files: 2, bytes: 4 })].into();
        idx.commit_rescan(Kind::Results, &measured, &before);
        changed(&idx, "commit_rescan");
        idx.set_rescan_info(RescanInfo::default());
        changed(&idx, "set_rescan_info");
        let v = idx.version();
        let _ = (
            idx.get(Kind::Videos, A),
            idx.totals(),
            idx.has(Kind::Results, B),
            idx.versions(),
        );
        let _ = idx.rescan_info();
        assert_eq!(idx.version(), v, "reads leave the version alone");
    }
    /// A job that stops mid-promotion (its task aborted or panicking) drops its update
    /// unfinished: the tree is no longer busy, so the next rescan measures it, and until then a
    /// job measures it rather than adding a delta to a size that missed part of a promotion.
    #[test]
    fn an_unfinished_update_leaves_the_tree_to_the_next_rescan() {
        let idx = Arc::new(SizeIndex::new());
        let size = |files, bytes| TreeSize { files, bytes };
        idx.begin_update(Kind::Results, A)
            .finish(SizeChange::Absolute(size(2, 20)));
        assert!(idx.has(Kind::Results, A));
        let before = idx.versions();
        let update = idx.begin_update(Kind::Results, A);
        assert!(idx.updating(Kind::Results, A));
        // A rescan that walked while the job promoted leaves the tree alone.
        let measured: BTreeMap<String, TreeSize> = [(A.to_string(), size(3, 25))].into();
        assert_eq!(idx.commit_rescan(Kind::Results, &measured, &before), 1);
        drop(update);
        assert!(
            !idx.updating(Kind::Results, A),
            "the tree stays busy for good"
        );
        assert!(
            !idx.has(Kind::Results, A),
            "a stale size is no base for a delta"
        );
        assert_eq!(
            idx.get(Kind::Results, A),
            Some(size(2, 20)),
            "shown until measured"
        );
        // The next rescan measures it.
        let before = idx.versions();
        let measured: BTreeMap<String, TreeSize> = [(A.to_string(), size(4, 41))].into();
        assert_eq!(idx.commit_rescan(Kind::Results, &measured, &before), 0);
        assert_eq!(idx.get(Kind::Results, A), Some(size(4, 41)));
        assert!(idx.has(Kind::Results, A));
        // A job's first measurement also clears the mark.
        drop(idx.begin_update(Kind::Videos, B));
        assert!(!idx.has(Kind::Videos, B));
        idx.begin_update(Kind::Videos, B)
            .finish(SizeChange::Absolute(size(1, 1)));
        assert!(idx.has(Kind::Videos, B));
    }
}
