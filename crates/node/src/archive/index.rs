//! The archive index: what `GET /archive` and `GET /archive/index.txt` answer from, so that no
//! request ever walks the tree.
//!
//! A background task ([`super::ArchiveService::start`]) rebuilds it every scan interval:
//!
//! 1. [`scan`] walks both roots exactly four levels deep (`id/name/date/file`), without following
//!    symlinks, and `lstat`s every file. Facts already known about a database are carried over.
//! 2. The new listing is published at once (sizes and times are now current).
//! 3. [`analyse`] brings the databases up to date, cheapest first: the newest frame time of every
//!    database whose fingerprint changed (what `index.txt` needs), then row counts and a check,
//!    as [`plan_check`] decides, until the next scan is due. The result is published again.
//!
//! Checks (`plan_check`): a database is verified when it is first seen and whenever it changed,
//! with `quick_check` while it is still being written (at most once per verify interval) and a
//! full `integrity_check` once it has been at rest (unchanged for the rest age). Mirror files are
//! checked on a snapshot, rsync copies directly (see [`super::sqlite`]).

use std::collections::HashMap;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::fsx::{self, EntryKind, ExperimentDir, Fingerprint};
use super::names::{is_companion, ExperimentRef, FileRef, Name};
use super::sqlite::{self, CheckMethod, CheckResult, Contents, DbSource};

/// Which configured root a file lives under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Root {
    /// `folders.results.path`: databases and result files.
    Results,
    /// `folders.video.path`: video chunks.
    Videos,
}

/// The two roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// Results root.
    pub results: PathBuf,
    /// Videos root.
    pub videos: PathBuf,
}

impl Roots {
    /// The path of `root`.
    pub fn path(&self, root: Root) -> &Path {
        match root {
            Root::Results => &self.results,
            Root::Videos => &self.videos,
        }
    }
}

/// A verification of one version of a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// The version checked.
    pub fingerprint: Fingerprint,
    /// What it held.
    pub contents: Contents,
    /// The check and its answer.
    pub check: CheckResult,
    /// When (epoch seconds).
    pub at: i64,
    /// Checked on a snapshot (mirror files) rather than the file itself (rsync copies).
    pub on_snapshot: bool,
}

/// What is known about one database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbState {
    /// Who writes it.
    pub source: DbSource,
    /// Newest frame time and start, and the version they were read from.
    pub last: Option<(Fingerprint, Contents)>,
    /// The last full analysis (rows and check).
    pub verified: Option<Verified>,
    /// The last analysis failed to open or read the file.
    pub error: Option<String>,
}

/// One file of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Which root.
    pub root: Root,
    /// Where below it.
    pub file: FileRef,
    /// Its current version.
    pub fingerprint: Fingerprint,
    /// For `.db` files under the results root.
    pub db: Option<DbState>,
}

impl Entry {
    /// The newest frame time known: of the current version once it is read, of the previous one
    /// until then (a growing file's value only grows, and scopr needs a number, not `NA`).
    pub fn last_point(&self) -> Option<i64> {
        self.db.as_ref()?.last.as_ref()?.1.last_point
    }
}

/// Listing order: device, newest experiment first, name, results before videos, file name.
pub fn listing_order(a: &Entry, b: &Entry) -> std::cmp::Ordering {
    let (x, y) = (&a.file.experiment, &b.file.experiment);
    x.machine_id
        .cmp(&y.machine_id)
        .then_with(|| y.date.cmp(&x.date))
        .then_with(|| x.machine_name.cmp(&y.machine_name))
        .then_with(|| a.root.cmp(&b.root))
        .then_with(|| a.file.file.cmp(&b.file.file))
}

/// What a scan saw besides the files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScanStats {
    /// Entries ignored: not in the four-level layout, invalid names, symlinks, special files.
    pub skipped: u64,
    /// Directories that could not be read (first few messages in `problems`).
    pub unreadable: u64,
    /// A few of the problems, for the operator.
    pub problems: Vec<String>,
}

impl ScanStats {
    fn problem(&mut self, text: String) {
        self.unreadable += 1;
        if self.problems.len() < 20 {
            self.problems.push(text);
        }
    }
}

/// Walks both roots and returns every file in the four-level layout, carrying over what
/// `previous` knew about each database.
pub fn scan(roots: &Roots, previous: &[Entry]) -> (Vec<Entry>, ScanStats) {
    let known: HashMap<(Root, &FileRef), &Entry> =
        previous.iter().map(|e| ((e.root, &e.file), e)).collect();
    let mut stats = ScanStats::default();
    let mut entries = Vec::new();
    for root in [Root::Results, Root::Videos] {
        let path = roots.path(root);
        let fd = match fsx::open_root(path) {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                stats.problem(format!("{root:?} root: {e}"));
                continue;
            }
        };
        walk_root(root, &fd, &known, &mut entries, &mut stats);
    }
    entries.sort_by(listing_order);
    (entries, stats)
}

/// The valid subdirectories of `dir` for one level, opened.
fn subdirs(
    dir: &OwnedFd,
    valid: fn(&str) -> Option<Name>,
    shown: &str,
    stats: &mut ScanStats,
) -> Vec<(Name, OwnedFd)> {
    let names = match fsx::list(dir) {
        Ok(n) => n,
        Err(e) => {
            stats.problem(format!("{shown}: {e}"));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (name, kind) in names {
        match (kind, valid(&name)) {
            (EntryKind::Dir, Some(name)) => match fsx::open_dir(dir, &name) {
                Ok(fd) => out.push((name, fd)),
                Err(e) => stats.problem(format!("{shown}/{name}: {e}")),
            },
            _ => stats.skipped += 1,
        }
    }
    out
}

fn walk_root(
    root: Root,
    fd: &OwnedFd,
    known: &HashMap<(Root, &FileRef), &Entry>,
    entries: &mut Vec<Entry>,
    stats: &mut ScanStats,
) {
    let shown = format!("{root:?}").to_lowercase();
    for (id, id_fd) in subdirs(fd, Name::machine_id, &shown, stats) {
        for (name, name_fd) in subdirs(&id_fd, Name::machine_name, id.as_str(), stats) {
            let at = format!("{id}/{name}");
            for (date, date_fd) in subdirs(&name_fd, Name::date, &at, stats) {
                let experiment = ExperimentRef {
                    machine_id: id.clone(),
                    machine_name: name.clone(),
                    date,
                };
                walk_experiment(root, experiment, &date_fd, known, entries, stats);
            }
        }
    }
}

fn walk_experiment(
    root: Root,
    experiment: ExperimentRef,
    dir: &OwnedFd,
    known: &HashMap<(Root, &FileRef), &Entry>,
    entries: &mut Vec<Entry>,
    stats: &mut ScanStats,
) {
    let names = match fsx::list(dir) {
        Ok(n) => n,
        Err(e) => {
            stats.problem(format!("{}: {e}", experiment.path()));
            return;
        }
    };
    for (raw, kind) in names {
        let Some(name) = Name::file(&raw).filter(|_| kind == EntryKind::File) else {
            // Companions (`-wal`, `.lock`, …) are expected there, not worth reporting.
            if !is_companion(&raw) {
                stats.skipped += 1;
            }
            continue;
        };
        let Ok((EntryKind::File, fingerprint)) = fsx::stat(dir, name.as_str()) else {
            stats.skipped += 1;
            continue;
        };
        let file = FileRef {
            experiment: experiment.clone(),
            file: name,
        };
        let db = (root == Root::Results && file.file.as_str().ends_with(".db")).then(|| {
            let source = if fsx::has_mirror_lock(dir, &file.file) {
                DbSource::MysqlMirror
            } else {
                DbSource::Rsync
            };
            match known.get(&(root, &file)).and_then(|e| e.db.clone()) {
                Some(state) if state.source == source => state,
                _ => DbState {
                    source,
                    last: None,
                    verified: None,
                    error: None,
                },
            }
        });
        entries.push(Entry {
            root,
            file,
            fingerprint,
            db,
        });
    }
}

/// When databases are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckPolicy {
    /// A database that keeps changing is re-checked at most this often.
    pub verify_interval: Duration,
    /// A database unmodified for this long is at rest: it gets a full `integrity_check` once.
    pub rest_age: Duration,
}

/// Which check (if any) a database needs now. Pure: `now` and the file's mtime decide.
pub fn plan_check(
    fingerprint: Fingerprint,
    verified: Option<&Verified>,
    now: i64,
    policy: CheckPolicy,
) -> Option<CheckMethod> {
    let at_rest = now.saturating_sub(fingerprint.mtime()) >= secs(policy.rest_age);
    let full = if at_rest {
        CheckMethod::IntegrityCheck
    } else {
        CheckMethod::QuickCheck
    };
    match verified {
        None => Some(full),
        Some(v) if v.fingerprint == fingerprint => (at_rest
            && v.check.method == CheckMethod::QuickCheck)
            .then_some(CheckMethod::IntegrityCheck),
        Some(_) if at_rest => Some(CheckMethod::IntegrityCheck),
        Some(v) => (now.saturating_sub(v.at) >= secs(policy.verify_interval))
            .then_some(CheckMethod::QuickCheck),
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Opened experiment directories, reused within one analysis round.
struct Dirs<'a> {
    roots: &'a Roots,
    open: HashMap<(Root, ExperimentRef), ExperimentDir>,
}

impl Dirs<'_> {
    fn get(&mut self, root: Root, exp: &ExperimentRef) -> std::io::Result<&ExperimentDir> {
        let key = (root, exp.clone());
        if !self.open.contains_key(&key) {
            let dir = ExperimentDir::open(self.roots.path(root), exp)?;
            self.open.insert(key.clone(), dir);
        }
        Ok(&self.open[&key])
    }
}

/// Brings database facts up to date: newest frame times first (all of them), then checks as
/// [`plan_check`] asks, until `deadline` or `stop`. Snapshots for mirror checks go to `tmp`.
pub fn analyse(
    roots: &Roots,
    entries: &mut [Entry],
    policy: CheckPolicy,
    now: i64,
    deadline: Instant,
    tmp: &Path,
    stop: &AtomicBool,
) {
    let mut dirs = Dirs {
        roots,
        open: HashMap::new(),
    };
    for entry in entries.iter_mut() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(db) = entry.db.as_mut() else {
            continue;
        };
        if db
            .last
            .as_ref()
            .is_some_and(|(fp, _)| *fp == entry.fingerprint)
        {
            continue;
        }
        let result = dirs
            .get(entry.root, &entry.file.experiment)
            .map_err(|e| e.to_string())
            .and_then(|dir| {
                let _mirror = (db.source == DbSource::MysqlMirror).then(sqlite::mirror_guard);
                let conn =
                    sqlite::open(dir, &entry.file.file, db.source).map_err(|e| e.to_string())?;
                sqlite::last_point(&conn).map_err(|e| e.to_string())
            });
        match result {
            Ok(contents) => {
                db.last = Some((entry.fingerprint, contents));
                db.error = None;
            }
            Err(e) => db.error = Some(e),
        }
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    // Newest experiments first: what people look at, and what is still changing.
    order.sort_by_key(|&i| std::cmp::Reverse(entries[i].fingerprint.mtime_ns));
    for i in order {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return;
        }
        let entry = &mut entries[i];
        let Some(db) = entry.db.as_mut() else {
            continue;
        };
        let Some(method) = plan_check(entry.fingerprint, db.verified.as_ref(), now, policy) else {
            continue;
        };
        match dirs.get(entry.root, &entry.file.experiment) {
            Ok(dir) => match verify(dir, &entry.file.file, db.source, method, tmp) {
                Ok(v) => {
                    if v.fingerprint == entry.fingerprint {
                        db.last = Some((v.fingerprint, v.contents.clone()));
                    }
                    db.verified = Some(v);
                    db.error = None;
                }
                Err(e) => db.error = Some(e),
            },
            Err(e) => db.error = Some(e.to_string()),
        }
    }
}

/// Reads and checks one consistent version of a database.
pub fn verify(
    dir: &ExperimentDir,
    name: &Name,
    source: DbSource,
    method: CheckMethod,
    tmp: &Path,
) -> Result<Verified, String> {
    let at = etho_model::now_epoch();
    match source {
        DbSource::Rsync => {
            let before = fsx::stat(&dir.fd, name.as_str())
                .map_err(|e| e.to_string())?
                .1;
            let conn = sqlite::open(dir, name, source).map_err(|e| e.to_string())?;
            let contents = sqlite::contents(&conn).map_err(|e| format!("{name}: {e}"))?;
            let check = sqlite::check(&conn, method).map_err(|e| format!("{name}: {e}"))?;
            drop(conn);
            let after = fsx::stat(&dir.fd, name.as_str())
                .map_err(|e| e.to_string())?
                .1;
            if before != after {
                return Err(format!("{name}: replaced while it was checked"));
            }
            Ok(Verified {
                fingerprint: before,
                contents,
                check,
                at,
                on_snapshot: false,
            })
        }
        DbSource::MysqlMirror => {
            let snap = tempfile::Builder::new()
                .prefix("check-")
                .suffix(".db")
                .tempfile_in(tmp)
                .map_err(|e| format!("snapshot file: {e}"))?;
            let fingerprint =
                sqlite::snapshot(dir, name, snap.path()).map_err(|e| e.to_string())?;
            let conn = sqlite::open_snapshot(snap.path()).map_err(|e| format!("{name}: {e}"))?;
            let contents = sqlite::contents(&conn).map_err(|e| format!("{name}: {e}"))?;
            let check = sqlite::check(&conn, method).map_err(|e| format!("{name}: {e}"))?;
            Ok(Verified {
                fingerprint,
                contents,
                check,
                at,
                on_snapshot: true,
            })
        }
    }
}

/// Sizes and counts of one experiment (both roots), for the listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExperimentTotals {
    /// Files.
    pub files: u64,
    /// Bytes.
    pub bytes: u64,
    /// Rows of the ROI tables over its databases, where counted.
    pub rows: u64,
}

/// One published state of the index: immutable, shared by every request.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every file, in listing order.
    pub entries: Vec<Entry>,
    /// Each device's range in `entries`.
    pub devices: HashMap<String, Range<usize>>,
    /// Totals per experiment.
    pub experiments: HashMap<ExperimentRef, ExperimentTotals>,
    /// When the scan that produced it started (epoch seconds; 0: no scan yet).
    pub scanned_at: i64,
    /// How long the scan took.
    pub scan_duration: Duration,
    /// What the scan saw besides files.
    pub stats: ScanStats,
    /// `index.txt`, rendered.
    pub index_txt: bytes::Bytes,
    /// Publications so far (two per scan: after the walk, after the analysis).
    pub version: u64,
    /// Each entry's experiment day as `YYYYMMDD`, for filtering without touching the entries.
    pub days: Vec<u32>,
    /// Each entry's device name, as an index into the names seen (see `names`).
    pub name_ids: Vec<u32>,
    /// Device names → their index in `name_ids`.
    pub names: HashMap<String, u32>,
}

impl Snapshot {
    /// Builds the derived parts from `entries` (already in listing order).
    pub fn new(
        entries: Vec<Entry>,
        scanned_at: i64,
        scan_duration: Duration,
        stats: ScanStats,
        version: u64,
    ) -> Snapshot {
        let mut devices: HashMap<String, Range<usize>> = HashMap::new();
        let mut experiments: HashMap<ExperimentRef, ExperimentTotals> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            devices
                .entry(e.file.experiment.machine_id.to_string())
                .and_modify(|r| r.end = i + 1)
                .or_insert(i..i + 1);
            let t = experiments.entry(e.file.experiment.clone()).or_default();
            t.files += 1;
            t.bytes += e.fingerprint.size;
            t.rows +=
                e.db.as_ref()
                    .and_then(|d| d.verified.as_ref())
                    .map_or(0, |v| v.contents.rows.iter().map(|(_, n)| n).sum());
        }
        let index_txt = render_index_txt(&entries).into();
        let mut names: HashMap<String, u32> = HashMap::new();
        let name_ids = entries
            .iter()
            .map(|e| {
                let next = u32::try_from(names.len()).unwrap_or(u32::MAX);
                *names
                    .entry(e.file.experiment.machine_name.to_string())
                    .or_insert(next)
            })
            .collect();
        let days = entries
            .iter()
            .map(|e| super::listing::day_key(&e.file.experiment.date.as_str()[..10]))
            .collect();
        Snapshot {
            entries,
            devices,
            experiments,
            scanned_at,
            scan_duration,
            stats,
            index_txt,
            version,
            days,
            name_ids,
            names,
        }
    }
}

/// scopr's `index.txt`: one line per result database, `"<id>/<name>/<date>/<file>",<last_point>`,
/// as R's `write.table(sep=",", col.names=FALSE)` writes it (`NA` when unknown), sorted by path.
pub fn render_index_txt(entries: &[Entry]) -> String {
    let mut lines: Vec<String> = entries
        .iter()
        .filter(|e| e.root == Root::Results && e.db.is_some())
        .map(|e| {
            let last = e
                .last_point()
                .map_or_else(|| "NA".to_string(), |t| t.to_string());
            format!("\"{}\",{last}\n", e.file.path())
        })
        .collect();
    lines.sort();
    lines.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CheckPolicy = CheckPolicy {
        verify_interval: Duration::from_secs(600),
        rest_age: Duration::from_secs(120),
    };

    fn fp(mtime: i64, size: u64) -> Fingerprint {
        Fingerprint {
            size,
            mtime_ns: i128::from(mtime) * 1_000_000_000,
            ino: 7,
        }
    }

    fn verified(fingerprint: Fingerprint, method: CheckMethod, at: i64) -> Verified {
        Verified {
            fingerprint,
            contents: Contents::default(),
            check: CheckResult {
                method,
                ok: true,
                message: None,
            },
            at,
            on_snapshot: false,
        }
    }

    #[test]
    fn check_plan_table() {
        use CheckMethod::{IntegrityCheck as I, QuickCheck as Q};
        let now = 10_000;
        let busy = fp(now - 5, 100); // written 5 s ago
        let rest = fp(now - 500, 100); // untouched for 500 s
        let cases: &[(&str, Fingerprint, Option<Verified>, Option<CheckMethod>)] = &[
            ("new, still written", busy, None, Some(Q)),
            ("new, at rest", rest, None, Some(I)),
            (
                "quick-checked, still the same, not at rest",
                busy,
                Some(verified(busy, Q, now - 1)),
                None,
            ),
            (
                "quick-checked, now at rest",
                rest,
                Some(verified(rest, Q, now - 400)),
                Some(I),
            ),
            (
                "integrity-checked, unchanged",
                rest,
                Some(verified(rest, I, now - 400)),
                None,
            ),
            (
                "changed, checked recently",
                busy,
                Some(verified(fp(now - 60, 50), Q, now - 60)),
                None,
            ),
            (
                "changed, checked long ago",
                busy,
                Some(verified(fp(now - 700, 50), Q, now - 700)),
                Some(Q),
            ),
            (
                "changed, then came to rest",
                rest,
                Some(verified(fp(now - 900, 50), I, now - 900)),
                Some(I),
            ),
            (
                "changed after an integrity check",
                busy,
                Some(verified(fp(now - 60, 50), I, now - 60)),
                None,
            ),
        ];
        for (what, f, v, want) in cases {
            assert_eq!(plan_check(*f, v.as_ref(), now, POLICY), *want, "{what}");
        }
    }

    fn entry(root: Root, date: &str, file: &str, last: Option<i64>) -> Entry {
        let fingerprint = fp(1, 10);
        Entry {
            root,
            file: FileRef {
                experiment: ExperimentRef::parse(
                    "0123456789abcdef0123456789abcdef",
                    "ETHOSCOPE_001",
                    date,
                )
                .unwrap(),
                file: Name::file(file).unwrap(),
            },
            fingerprint,
            db: file.ends_with(".db").then(|| DbState {
                source: DbSource::Rsync,
                last: last.map(|t| {
                    (
                        fingerprint,
                        Contents {
                            last_point: Some(t),
                            ..Contents::default()
                        },
                    )
                }),
                verified: None,
                error: None,
            }),
        }
    }

    #[test]
    fn index_txt_is_what_scopr_reads() {
        let entries = [
            entry(Root::Results, "2025-07-11_10-00-00", "b.db", Some(7200)),
            entry(Root::Results, "2025-07-10_10-00-00", "a.db", None),
            entry(Root::Results, "2025-07-10_10-00-00", "a.txt", None),
            entry(Root::Videos, "2025-07-10_10-00-00", "v.h264", None),
        ];
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            render_index_txt(&entries),
            format!(
                "\"{id}/ETHOSCOPE_001/2025-07-10_10-00-00/a.db\",NA\n\
                 \"{id}/ETHOSCOPE_001/2025-07-11_10-00-00/b.db\",7200\n"
            )
        );
    }

    #[test]
    fn snapshot_groups_devices_and_experiments() {
        let mut entries = vec![
            entry(Root::Videos, "2025-07-10_10-00-00", "v.h264", None),
            entry(Root::Results, "2025-07-10_10-00-00", "a.db", None),
            entry(Root::Results, "2025-07-11_10-00-00", "b.db", None),
        ];
        entries.sort_by(listing_order);
        let order: Vec<&str> = entries.iter().map(|e| e.file.file.as_str()).collect();
        assert_eq!(order, ["b.db", "a.db", "v.h264"], "newest experiment first");
        let snap = Snapshot::new(entries, 1, Duration::ZERO, ScanStats::default(), 1);
        assert_eq!(snap.devices["0123456789abcdef0123456789abcdef"], 0..3);
        let exp = &snap.entries[1].file.experiment;
        assert_eq!(snap.experiments[exp].files, 2);
        assert_eq!(snap.experiments[exp].bytes, 20);
    }
}
