//! Live SQLite result files: every committed row of a device's database, in a self-contained
//! copy, fresh while the device writes.
//!
//! Devices write their result databases in WAL mode (the newest rows only in `<db>-wal`), some
//! still with `journal_mode=OFF` or a rollback journal, and the node copies them while they are
//! written. rsync brings the database *with* its `-wal` and `-journal` into staging (never into
//! the archive; `-shm` is never copied: it is an index SQLite rebuilds). Then, per database:
//!
//! 1. [`decide`] tells from what was read whether the files are one consistent state of the
//!    device's database, or must be read again (the engine runs rsync again on just those files,
//!    with checksums, at most [`decide::MAX_PASSES`] reads per cycle), or are unchanged;
//! 2. [`build`] turns a consistent state into one self-contained rollback-journal file (WAL
//!    recovered and checkpointed, hot journal rolled back) in a private work directory;
//! 3. [`check`] verifies it (integrity, every table still there, no table shrank) against the
//!    last good copy's figures;
//! 4. the copy takes the raw database's place in staging, from where [`crate::promote`] renames
//!    it over the archive copy; a copy that fails a check goes to `rejected/` under the state
//!    directory instead (one per path), and the last good copy stays.
//!
//! Nothing runs on the device: rsync only reads. What is kept between cycles (the last good
//! copy's figures, stubs that let rsync skip unchanged databases) is in [`store`].

pub mod build;
pub mod check;
pub mod decide;
pub mod format;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::parse::Itemized;
use build::{Built, RawSet};
use check::CheckFailure;
use decide::{Base, DbView, JournalView, PassView, Unproven, Verdict};
use format::{journal_is_hot, parse_db_header, scan_wal, WalState};
use store::{below, same_bytes, DeviceAttrs, Record, Records};

/// Where one device tree's live databases are handled.
#[derive(Debug, Clone)]
pub struct LivePaths {
    /// The first pass's rsync destination (the tree's staging directory).
    pub staging: PathBuf,
    /// The device's archive directory.
    pub archive: PathBuf,
    /// Stubs and kept companions ([`store`]).
    pub stubs: PathBuf,
    /// Scratch space: re-read passes, their basis files, builds. Removed at the end.
    pub work: PathBuf,
    /// Copies that failed a check.
    pub rejected: PathBuf,
    /// The records file.
    pub records: PathBuf,
    /// Where the tree is below the re-read passes' transfer root (`results/<machine_id>/`):
    /// re-read lists and their destination and basis trees carry it.
    pub list_prefix: String,
}

/// How rsync itemized a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// `>f`: data received.
    Received,
    /// `cf`: copied from a `--compare-dest` file with the same content (quick check or checksum).
    Copied,
    /// `.f`: unchanged, not written.
    Unchanged,
}

fn seen(item: &Itemized) -> Option<Seen> {
    match item.changes.get(..2) {
        Some(">f") => Some(Seen::Received),
        Some("cf") => Some(Seen::Copied),
        Some(".f") => Some(Seen::Unchanged),
        _ => None,
    }
}

/// Names ending like SQLite's companions.
pub fn is_companion(name: &str) -> bool {
    name.ends_with("-wal") || name.ends_with("-journal") || name.ends_with("-shm")
}

/// The latest raw files read of one database.
#[derive(Debug, Clone, Default)]
struct RawFiles {
    db: Option<PathBuf>,
    wal: Option<PathBuf>,
    journal: Option<PathBuf>,
}

#[derive(Debug)]
struct DbSet {
    rel: String,
    record: Option<Record>,
    view: PassView,
    raw: RawFiles,
    verdict: Verdict,
    passes: u32,
}

/// A re-read pass to run: rsync `--files-from=list` from the device's data directory into
/// `dest` with `--compare-dest=basis`.
#[derive(Debug, Clone)]
pub struct PassPlan {
    /// Pass number (2 and up).
    pub pass: u32,
    /// Destination directory.
    pub dest: PathBuf,
    /// Basis directory (the previous read of each file).
    pub basis: PathBuf,
    /// NUL-separated list of paths relative to the device's data directory.
    pub list: PathBuf,
    /// The tree inside `dest`.
    dest_tree: PathBuf,
    /// The tree inside `basis`.
    basis_tree: PathBuf,
    /// What rsync prints before a path relative to the tree.
    prefix: String,
    /// Every file is listed (and read) twice.
    double: bool,
}

/// A database copy left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Path relative to the tree.
    pub path: String,
    /// Why (for the status message).
    pub reason: String,
}

/// What the live step did for one tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveReport {
    /// Databases whose fresh copy was promoted.
    pub fresh: Vec<String>,
    /// Databases unchanged since their last good copy.
    pub unchanged: u64,
    /// Not consistent after every read allowed: the last good copy stays.
    pub held: Vec<Held>,
    /// Built but failed a check (kept under `rejected/`), or could not be built.
    pub rejected: Vec<Held>,
    /// Most reads any database needed.
    pub passes: u32,
    /// Problems with the engine's own files.
    pub errors: Vec<String>,
}

/// A built copy waiting in staging for promotion, and what to record once it is in place.
#[derive(Debug)]
struct Pending {
    rel: String,
    record: Record,
    attrs: (u64, std::time::SystemTime),
    stub: Option<DeviceAttrs>,
    wal: Option<PathBuf>,
    journal: Option<PathBuf>,
}

/// The live-database step of one tree; see the module docs. Blocking: call from a blocking
/// thread, between the async rsync runs.
#[derive(Debug)]
pub struct Live {
    paths: LivePaths,
    records: Records,
    sets: Vec<DbSet>,
    pass: u32,
    listing_complete: bool,
    pending: Vec<Pending>,
    report: LiveReport,
    /// Why the last re-read pass did not complete, if it did not.
    reread_error: Option<String>,
}

impl Live {
    /// Loads the tree's records. `listing_complete`: the first pass itemized unchanged files
    /// too (`-ii`), so a database it did not list is not on the device.
    pub fn new(paths: LivePaths, listing_complete: bool) -> Live {
        let records = Records::load(&paths.records);
        Live {
            paths,
            records,
            sets: Vec::new(),
            pass: 1,
            listing_complete,
            pending: Vec::new(),
            report: LiveReport::default(),
            reread_error: None,
        }
    }

    /// A re-read pass could not run or failed: the databases waiting for it are held with this
    /// reason.
    pub fn reread_failed(&mut self, error: String) {
        self.reread_error = Some(error);
    }

    /// Which itemized lines of the first pass the step needs (bounded: received files, companions
    /// and databases it knows).
    pub fn item_filter(&self) -> impl Fn(&Itemized) -> bool + Send + Sync + 'static {
        let known: BTreeSet<String> = self.records.paths().cloned().collect();
        move |item: &Itemized| match seen(item) {
            Some(Seen::Received | Seen::Copied) => true,
            Some(Seen::Unchanged) => is_companion(&item.name) || known.contains(&item.name),
            None => false,
        }
    }

    /// Reads what the first pass staged and decides for every database. `vanished`: the paths
    /// rsync reported as vanished.
    pub fn first_pass(&mut self, items: &[Itemized], vanished: &[String]) {
        let by_name: HashMap<&str, Seen> = items
            .iter()
            .filter_map(|i| seen(i).map(|s| (i.name.as_str(), s)))
            .collect();
        let mut candidates: BTreeSet<String> = self.records.paths().cloned().collect();
        for (name, _) in by_name.iter() {
            if let Some(base) = name
                .strip_suffix("-wal")
                .or_else(|| name.strip_suffix("-journal"))
            {
                candidates.insert(base.to_string());
            } else if !is_companion(name) {
                candidates.insert((*name).to_string());
            }
        }
        for rel in candidates {
            if let Some(set) = self.first_view(&rel, &by_name, vanished) {
                self.sets.push(set);
            }
        }
    }

    fn first_view(
        &self,
        rel: &str,
        by_name: &HashMap<&str, Seen>,
        vanished: &[String],
    ) -> Option<DbSet> {
        // A record without its archive copy (removed by hand) describes nothing to build on.
        let archived = below(&self.paths.archive, rel).ok()?;
        let record = self
            .records
            .get(rel)
            .cloned()
            .filter(|_| archived.is_file());
        let staged = below(&self.paths.staging, rel).ok()?;
        let staged_wal = below(&self.paths.staging, &format!("{rel}-wal")).ok()?;
        let staged_journal = below(&self.paths.staging, &format!("{rel}-journal")).ok()?;
        let kept_wal = below(&self.paths.stubs, &format!("{rel}-wal")).ok()?;
        let kept_journal = below(&self.paths.stubs, &format!("{rel}-journal")).ok()?;
        let db = if staged.is_file() {
            match read_mode(&staged) {
                Some(mode) => DbView::Received(mode),
                None if record.is_some() => DbView::NotADatabase,
                None => return None,
            }
        } else if by_name.get(rel) == Some(&Seen::Unchanged)
            || (!self.listing_complete && record.is_some())
        {
            DbView::Skipped
        } else if record.is_some() {
            DbView::Missing
        } else {
            return None;
        };
        let wal_file = pick(
            &staged_wal,
            &kept_wal,
            by_name.get(format!("{rel}-wal").as_str()),
        );
        let journal_file = pick(
            &staged_journal,
            &kept_journal,
            by_name.get(format!("{rel}-journal").as_str()),
        );
        let wal = wal_state(wal_file.as_deref());
        let journal = match &journal_file {
            Some(j) if head_is_hot(j) => JournalView::Hot {
                same: same_bytes(j, &kept_journal),
            },
            _ => JournalView::Cold,
        };
        let view = PassView {
            db,
            wal,
            wal_same_as_kept: wal_file
                .as_deref()
                .is_some_and(|w| same_bytes(w, &kept_wal)),
            journal,
            vanished: any_vanished(rel, vanished),
        };
        let verdict = decide::first_pass(&view, record.as_ref().map(Record::last_good).as_ref());
        Some(DbSet {
            rel: rel.to_string(),
            record,
            view,
            raw: RawFiles {
                db: staged.is_file().then_some(staged),
                wal: wal_file,
                journal: journal_file,
            },
            verdict,
            passes: 1,
        })
    }

    /// Prepares the next re-read pass, or `None` when no database needs one (or the pass budget
    /// is spent).
    ///
    /// Each file is listed twice, as `<prefix>./<rel>` (received as `<rel>`) and `<prefix><rel>`
    /// (received as `<prefix><rel>`), so one rsync run reads it twice, a few milliseconds apart
    /// for a small database: a database written every 0.2 s in place is then often caught
    /// unchanged between two reads, where two separate runs (process start, connection, file
    /// list) rarely do. Only one listing is used if a path of the tree itself starts with the
    /// prefix (the two forms could then name the same destination).
    pub fn plan_reread(&mut self) -> io::Result<Option<PassPlan>> {
        let rereads: Vec<&DbSet> = self
            .sets
            .iter()
            .filter(|s| matches!(s.verdict, Verdict::Reread(_)))
            .collect();
        if self.pass >= decide::MAX_PASSES || rereads.is_empty() {
            return Ok(None);
        }
        let pass = self.pass + 1;
        let dest = self.paths.work.join(format!("pass-{pass}"));
        let basis = self.paths.work.join(format!("basis-{pass}"));
        let prefix = self.paths.list_prefix.clone();
        let plan = PassPlan {
            pass,
            dest_tree: below(&dest, prefix.trim_end_matches('/'))?,
            basis_tree: below(&basis, prefix.trim_end_matches('/'))?,
            double: !rereads.iter().any(|s| s.rel.starts_with(prefix.as_str())),
            dest,
            basis,
            list: self.paths.work.join(format!("pass-{pass}.list")),
            prefix,
        };
        for dir in [&plan.dest, &plan.basis] {
            let _ = fs::remove_dir_all(dir);
            fs::create_dir_all(dir)?;
        }
        let mut list = Vec::new();
        for set in rereads {
            let fallback_db = below(&self.paths.archive, &set.rel)?;
            let files = [
                ("", set.raw.db.clone().or(Some(fallback_db))),
                ("-wal", set.raw.wal.clone()),
                ("-journal", set.raw.journal.clone()),
            ];
            for (suffix, src) in files {
                let rel = format!("{}{suffix}", set.rel);
                let mut forms = vec![(format!("{}{rel}", plan.prefix), &plan.basis_tree)];
                if plan.double {
                    forms.push((format!("{}./{rel}", plan.prefix), &plan.basis));
                }
                for (entry, basis_root) in forms {
                    list.extend_from_slice(entry.as_bytes());
                    list.push(0);
                    if let Some(src) = src.as_ref().filter(|p| p.is_file()) {
                        link_or_copy(src, &below(basis_root, &rel)?, !suffix.is_empty())?;
                    }
                }
            }
        }
        fs::File::create(&plan.list)?.write_all(&list)?;
        self.pass = pass;
        Ok(Some(plan))
    }

    /// Reads what a re-read pass brought and decides again for the databases it re-read: the
    /// second read of the pass against the first, else the first against the previous pass.
    pub fn reread_pass(&mut self, plan: &PassPlan, items: &[Itemized], vanished: &[String]) {
        let mut prefixed: HashMap<&str, Seen> = HashMap::new();
        let mut dotted: HashMap<&str, Seen> = HashMap::new();
        let mut order: HashMap<(bool, &str), usize> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            let Some(s) = seen(item) else { continue };
            match item.name.strip_prefix(plan.prefix.as_str()) {
                Some(name) => {
                    prefixed.insert(name, s);
                    order.entry((false, name)).or_insert(index);
                }
                None if plan.double => {
                    dotted.insert(item.name.as_str(), s);
                    order.entry((true, item.name.as_str())).or_insert(index);
                }
                None => {}
            }
        }
        let trees = [
            (&plan.dest_tree, &plan.basis_tree, &prefixed),
            (&plan.dest, &plan.basis, &dotted),
        ];
        for set in self
            .sets
            .iter_mut()
            .filter(|s| matches!(s.verdict, Verdict::Reread(_)))
        {
            let gone = any_vanished(&set.rel, vanished);
            let read = |tree: usize, previous: &RawFiles| {
                let (dest, basis, names) = trees[tree];
                let (mut view, raw) = later_view(dest, basis, &set.rel, previous, names);
                view.vanished = gone;
                (view, raw)
            };
            if !plan.double {
                let (view, raw) = read(0, &set.raw);
                set.verdict = decide::later_pass(plan.pass, &set.view, &view);
                (set.view, set.raw) = (view, raw);
            } else {
                // Which listing rsync sent first.
                let at = |dot: bool| order.get(&(dot, set.rel.as_str())).copied();
                let (first, second) = if at(true) < at(false) { (1, 0) } else { (0, 1) };
                let (first_view, first_raw) = read(first, &set.raw);
                let (second_view, second_raw) = read(second, &first_raw);
                let within = decide::later_pass(plan.pass, &first_view, &second_view);
                let across = decide::later_pass(plan.pass, &set.view, &first_view);
                if matches!(within, Verdict::Build(_)) || !matches!(across, Verdict::Build(_)) {
                    set.verdict = within;
                    (set.view, set.raw) = (second_view, second_raw);
                } else {
                    set.verdict = across;
                    (set.view, set.raw) = (first_view, first_raw);
                }
            }
            set.passes = plan.pass;
        }
    }

    /// Builds and checks every consistent database and puts the copies in staging in place of the
    /// raw files; removes the raw database files that were not made into a checked copy. The raw
    /// companions stay until [`Live::commit`] (promotion never moves companions). `cancel` is
    /// polled between databases and stops SQLite's work on one.
    pub fn build_all(&mut self, cancel: &CancellationToken) {
        let sets = std::mem::take(&mut self.sets);
        for set in &sets {
            self.report.passes = self.report.passes.max(set.passes);
            match set.verdict {
                Verdict::Build(base) if !cancel.is_cancelled() => self.build_one(set, base, cancel),
                Verdict::Build(_) => {}
                Verdict::Unchanged => self.report.unchanged += 1,
                Verdict::Missing => {}
                Verdict::Reread(why) => self.report.held.push(Held {
                    path: set.rel.clone(),
                    reason: match &self.reread_error {
                        Some(e) => {
                            format!("{}; the re-read failed: {e}", held_reason(why, set.passes))
                        }
                        None => held_reason(why, set.passes),
                    },
                }),
                Verdict::GiveUp(why) => self.report.held.push(Held {
                    path: set.rel.clone(),
                    reason: held_reason(why, set.passes),
                }),
            }
        }
        // A raw database that was not made into a checked copy must never reach the archive:
        // neither one of the sets, nor one rsync listed under a name the sets do not know (rsync
        // escapes unusual bytes in the names it prints).
        for set in &sets {
            let built = self.pending.iter().any(|p| p.rel == set.rel);
            if !built {
                if let Ok(p) = below(&self.paths.staging, &set.rel) {
                    let _ = fs::remove_file(p);
                }
            }
        }
        let built: BTreeSet<PathBuf> = self
            .pending
            .iter()
            .filter_map(|p| below(&self.paths.staging, &p.rel).ok())
            .collect();
        for stray in unchecked_databases(&self.paths.staging, &built) {
            let _ = fs::remove_file(&stray);
            self.report.held.push(Held {
                path: stray
                    .strip_prefix(&self.paths.staging)
                    .unwrap_or(&stray)
                    .to_string_lossy()
                    .into_owned(),
                reason: "its name could not be matched with rsync's listing".into(),
            });
        }
        self.sets = sets;
    }

    fn build_one(&mut self, set: &DbSet, base: Base, cancel: &CancellationToken) {
        match self.try_build(set, base, cancel) {
            Ok(pending) => self.pending.push(pending),
            Err(BuildOutcome::Rejected(why)) => self.report.rejected.push(Held {
                path: set.rel.clone(),
                reason: why,
            }),
            Err(BuildOutcome::Failed(why)) => self.report.rejected.push(Held {
                path: set.rel.clone(),
                reason: format!("could not be made self-contained: {why}"),
            }),
        }
    }

    fn try_build(
        &self,
        set: &DbSet,
        base: Base,
        cancel: &CancellationToken,
    ) -> Result<Pending, BuildOutcome> {
        let failed = |e: &dyn std::fmt::Display| BuildOutcome::Failed(e.to_string());
        let inputs = self.build_inputs(set, base)?;
        let work = self.paths.work.join("build");
        let started = std::time::Instant::now();
        let built = build::build(&work, &inputs.raw, cancel).map_err(|e| failed(&e))?;
        let build_time = started.elapsed();
        let inspection = self.verify(set, &built, cancel)?;
        tracing::debug!(
            "{}: built from {:?} in {:.3} s, checked in {:.3} s",
            set.rel,
            base,
            build_time.as_secs_f64(),
            (started.elapsed() - build_time).as_secs_f64()
        );
        let attrs = DeviceAttrs {
            size: 0,
            mtime: inputs.newest.unwrap_or_else(std::time::SystemTime::now),
            mode: inputs.mode,
        };
        let size = self
            .stage(&set.rel, &built, &attrs)
            .map_err(|e| failed(&e))?;
        let db_mode = match set.view.db {
            DbView::Received(m) | DbView::Same(m) => m,
            _ => set.record.as_ref().map_or(format::DbMode::Wal, |r| r.mode),
        };
        Ok(Pending {
            rel: set.rel.clone(),
            record: Record {
                mode: db_mode,
                wal: set.view.wal.salts(),
                hot_journal: inputs.raw.journal.is_some(),
                tables: inspection.tables,
                date_time: inspection.date_time,
            },
            attrs: (size, attrs.mtime),
            stub: inputs.stub,
            wal: set.raw.wal.clone(),
            journal: set.raw.journal.clone(),
        })
    }

    /// What a copy of `set` is built from (per `base`), and what it takes from the device's file:
    /// the stub of the file read, the mode, and the newest modification time of the files used.
    fn build_inputs(&self, set: &DbSet, base: Base) -> Result<BuildInputs, BuildOutcome> {
        let failed = |e: &dyn std::fmt::Display| BuildOutcome::Failed(e.to_string());
        let archived = below(&self.paths.archive, &set.rel).map_err(|e| failed(&e))?;
        let base_path = match base {
            Base::Read => set.raw.db.clone(),
            Base::LastGood => Some(archived.clone()),
        }
        .ok_or_else(|| BuildOutcome::Failed("no database file was read".into()))?;
        let stub = match base {
            Base::Read => Some(DeviceAttrs::of(&base_path).map_err(|e| failed(&e))?),
            Base::LastGood => None,
        };
        let perms_from = if base == Base::Read {
            &base_path
        } else {
            &archived
        };
        let mode = DeviceAttrs::of(perms_from).map_err(|e| failed(&e))?.mode;
        let wal = set.raw.wal.clone().filter(|_| set.view.wal.has_commits());
        let journal = set
            .raw
            .journal
            .clone()
            .filter(|_| matches!(set.view.journal, JournalView::Hot { .. }));
        let mut newest = stub.map(|s| s.mtime);
        for companion in [&wal, &journal].into_iter().flatten() {
            let t = fs::metadata(companion).and_then(|m| m.modified()).ok();
            newest = newest.max(t.filter(|t| *t > std::time::UNIX_EPOCH));
        }
        let raw = RawSet {
            base_disposable: base == Base::Read && !base_path.starts_with(&self.paths.archive),
            base: base_path,
            base_is_last_good: base == Base::LastGood,
            wal,
            journal,
        };
        Ok(BuildInputs {
            raw,
            stub,
            mode,
            newest,
        })
    }

    /// Puts a checked copy in staging in place of the raw database, with the device's time and
    /// mode; returns its size.
    fn stage(&self, rel: &str, built: &Built, attrs: &DeviceAttrs) -> io::Result<u64> {
        let staged = below(&self.paths.staging, rel)?;
        store::make_parent(&staged)?;
        fs::rename(&built.path, &staged)?;
        attrs.apply_time_and_mode(&staged)?;
        Ok(fs::metadata(&staged)?.len())
    }

    fn verify(
        &self,
        set: &DbSet,
        built: &Built,
        cancel: &CancellationToken,
    ) -> Result<check::Inspection, BuildOutcome> {
        let empty = BTreeMap::new();
        let last = set.record.as_ref().map_or(&empty, |r| &r.tables);
        match check::inspect(&built.path, cancel)
            .and_then(|i| check::compare(last, &i.tables).map(|()| i))
        {
            Ok(t) => Ok(t),
            Err(CheckFailure::Cancelled) => Err(BuildOutcome::Failed("cancelled".into())),
            Err(failure) => {
                let kept = self.reject(&set.rel, &built.path);
                Err(BuildOutcome::Rejected(rejected_reason(&failure, kept)))
            }
        }
    }

    /// Keeps a failed copy under `rejected/` (replacing an older one of the same path).
    fn reject(&self, rel: &str, path: &Path) -> Option<PathBuf> {
        let target = below(&self.paths.rejected, rel).ok()?;
        store::make_parent(&target).ok()?;
        fs::rename(path, &target).ok()?;
        Some(target)
    }

    /// After promotion: records the copies that reached the archive (their stubs, kept
    /// companions and figures) and writes the records. Removes the raw companions from staging
    /// and the scratch space.
    pub fn commit(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            let Ok(archived) = below(&self.paths.archive, &p.rel) else {
                continue;
            };
            let in_place = fs::metadata(&archived)
                .and_then(|m| Ok((m.len(), m.modified()?)))
                .is_ok_and(|a| a == p.attrs);
            if !in_place {
                continue;
            }
            let result = (|| -> io::Result<()> {
                if let Some(stub) = &p.stub {
                    store::write_db_stub(&below(&self.paths.stubs, &p.rel)?, stub)?;
                }
                let kept_wal = below(&self.paths.stubs, &format!("{}-wal", p.rel))?;
                if p.wal.as_deref() != Some(kept_wal.as_path()) {
                    store::keep_companion(&kept_wal, p.wal.as_deref())?;
                }
                let kept_journal = below(&self.paths.stubs, &format!("{}-journal", p.rel))?;
                if p.journal.as_deref() != Some(kept_journal.as_path()) {
                    store::keep_companion(&kept_journal, p.journal.as_deref())?;
                }
                Ok(())
            })();
            match result {
                Ok(()) => {
                    self.records.set(&p.rel, p.record);
                    self.report.fresh.push(p.rel);
                }
                Err(e) => self
                    .report
                    .errors
                    .push(format!("{}: cannot keep its state: {e}", p.rel)),
            }
        }
        // The raw companions were only needed to build and keep; promotion skipped them.
        remove_companions(&self.paths.staging);
        if let Err(e) = self.records.save() {
            self.report.errors.push(format!(
                "cannot write {}: {e}",
                self.paths.records.display()
            ));
        }
        let _ = fs::remove_dir_all(&self.paths.work);
    }

    /// What happened.
    pub fn report(&self) -> &LiveReport {
        &self.report
    }

    /// The device's current or last experiment and its newest frame, as the last good copies
    /// describe it (their recorded figures; no file is read).
    pub fn newest_experiment(&self) -> Option<etho_model::status::CopiedExperiment> {
        self.records.newest_experiment()
    }
}

enum BuildOutcome {
    Rejected(String),
    Failed(String),
}

/// What [`Live::build_inputs`] found.
struct BuildInputs {
    raw: RawSet,
    /// The device file's attributes, when the copy was built from a fresh read.
    stub: Option<DeviceAttrs>,
    mode: u32,
    newest: Option<std::time::SystemTime>,
}

fn rejected_reason(failure: &CheckFailure, kept: Option<PathBuf>) -> String {
    match kept {
        Some(p) => format!("{failure}; the copy is kept in {}", p.display()),
        None => failure.to_string(),
    }
}

fn held_reason(why: Unproven, passes: u32) -> String {
    format!(
        "{why} ({passes} read{})",
        if passes == 1 { "" } else { "s" }
    )
}

/// SQLite databases below `dir` other than `built` (never following links).
fn unchecked_databases(dir: &Path, built: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        let path = entry.path();
        if ft.is_dir() {
            out.extend(unchecked_databases(&path, built));
        } else if ft.is_file()
            && !built.contains(&path)
            && read_head(&path, 16).as_slice() == format::DB_MAGIC
        {
            out.push(path);
        }
    }
    out
}

/// Removes every file named like an SQLite companion below `dir` (never following links).
fn remove_companions(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            remove_companions(&entry.path());
        } else if is_companion(&entry.file_name().to_string_lossy()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The staged file if rsync wrote one, else the kept copy if rsync listed the device's as
/// unchanged, else nothing (the device has none).
fn pick(staged: &Path, kept: &Path, seen: Option<&Seen>) -> Option<PathBuf> {
    if staged.is_file() {
        Some(staged.to_path_buf())
    } else if seen == Some(&Seen::Unchanged) && kept.is_file() {
        Some(kept.to_path_buf())
    } else {
        None
    }
}

fn read_head(path: &Path, n: usize) -> Vec<u8> {
    let mut head = Vec::with_capacity(n);
    if let Ok(f) = fs::File::open(path) {
        let _ = f.take(n as u64).read_to_end(&mut head);
    }
    head
}

fn read_mode(path: &Path) -> Option<format::DbMode> {
    parse_db_header(&read_head(path, 100)).map(|h| h.mode)
}

fn head_is_hot(path: &Path) -> bool {
    journal_is_hot(&read_head(path, 8))
}

fn wal_state(path: Option<&Path>) -> WalState {
    match path.map(fs::File::open) {
        None => WalState::Absent,
        Some(Ok(f)) => scan_wal(io::BufReader::new(f)).unwrap_or(WalState::Empty),
        Some(Err(_)) => WalState::Absent,
    }
}

/// Hard-links `src` to `dst` (a basis file rsync only reads); companions are copied when a
/// link is impossible, databases are then left without basis.
fn link_or_copy(src: &Path, dst: &Path, copy_ok: bool) -> io::Result<()> {
    store::make_parent(dst)?;
    match fs::hard_link(src, dst) {
        Ok(()) => Ok(()),
        Err(_) if copy_ok => fs::copy(src, dst).map(drop),
        Err(_) => Ok(()),
    }
}

/// Whether rsync reported the database or one of its companions as vanished.
fn any_vanished(rel: &str, vanished: &[String]) -> bool {
    ["", "-wal", "-journal"].iter().any(|suffix| {
        let name = format!("{rel}{suffix}");
        let tail = format!("/{name}");
        vanished.iter().any(|v| v == &name || v.ends_with(&tail))
    })
}

/// What a re-read pass saw of one database, and the raw files it resolves to. "Same" is decided
/// here by comparing bytes with the previous read (or, for a database read for the first time,
/// with its basis, the archive copy).
fn later_view(
    dest: &Path,
    basis: &Path,
    rel: &str,
    previous: &RawFiles,
    by_name: &HashMap<&str, Seen>,
) -> (PassView, RawFiles) {
    let resolve = |suffix: &str| -> Option<PathBuf> {
        let name = format!("{rel}{suffix}");
        let file = match by_name.get(name.as_str())? {
            Seen::Received | Seen::Copied => below(dest, &name).ok(),
            Seen::Unchanged => below(basis, &name).ok(),
        };
        file.filter(|p| p.is_file())
    };
    let db_file = resolve("");
    let db = match &db_file {
        None if !by_name.contains_key(rel) => DbView::Missing,
        None => DbView::NotADatabase,
        Some(f) => match read_mode(f) {
            None => DbView::NotADatabase,
            Some(mode) => {
                let before = previous
                    .db
                    .clone()
                    .or_else(|| below(basis, rel).ok().filter(|b| b.is_file()));
                if before.is_some_and(|b| same_bytes(&b, f)) {
                    DbView::Same(mode)
                } else {
                    DbView::Received(mode)
                }
            }
        },
    };
    let wal_file = resolve("-wal");
    let journal_file = resolve("-journal");
    let journal = match &journal_file {
        Some(j) if head_is_hot(j) => JournalView::Hot {
            same: previous
                .journal
                .as_deref()
                .is_some_and(|p| same_bytes(p, j)),
        },
        _ => JournalView::Cold,
    };
    let view = PassView {
        db,
        wal: wal_state(wal_file.as_deref()),
        wal_same_as_kept: false,
        journal,
        vanished: false,
    };
    (
        view,
        RawFiles {
            db: db_file,
            wal: wal_file,
            journal: journal_file,
        },
    )
}
