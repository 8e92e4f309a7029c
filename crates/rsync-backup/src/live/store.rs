//! What the engine keeps about each live database between cycles, under the state directory.
//!
//! - **Records** (`live/<kind>/<machine_id>.json`): per database, how the device writes it, the
//!   WAL generation and journal the last good copy was built from, and that copy's per-table
//!   figures ([`Record`]).
//! - **Stubs** (`stubs/<kind>/<machine_id>/…`): the archive holds the *converted* database, whose
//!   size and mtime differ from the device's file, so rsync's quick check against the archive
//!   alone would pull every database every cycle, finished experiments too. A stub is a sparse
//!   file (no data blocks) with the device file's size, mtime and mode; rsync gets it as a second
//!   `--compare-dest` after the archive and skips a device file that still matches it, while the
//!   archive stays the delta basis of one that changed. The last raw `-wal` and `-journal` are
//!   kept there too, with mtime 0: never equal to the device's, so they are always read again,
//!   but serve as delta basis (only new frames cross the network).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::check::TableStats;
use super::decide::LastGood;
use super::format::{DbMode, WalSalts};

/// What the last good copy of one database was built from, and its figures.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// How the device writes it.
    pub mode: DbMode,
    /// The WAL generation included, if any.
    pub wal: Option<WalSalts>,
    /// A hot journal was rolled back to build it.
    pub hot_journal: bool,
    /// Per-table figures of the copy.
    pub tables: BTreeMap<String, TableStats>,
    /// The copy's `METADATA.date_time` (the experiment's start, epoch seconds as text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_time: Option<String>,
}

impl Record {
    /// The copy's newest tracked frame (epoch seconds): `date_time` plus the largest last `t`
    /// of its ROI tables. `None` without ROI rows (or for a record written before these figures
    /// were kept).
    pub fn newest_frame_at(&self) -> Option<f64> {
        let last_t = self
            .tables
            .iter()
            .filter(|(name, _)| etho_model::status::is_roi_table(name))
            .filter_map(|(_, t)| t.last_t)
            .max();
        etho_model::status::newest_frame_at(self.date_time.as_deref(), last_t)
    }

    /// When the experiment started, for ordering: `date_time`, else the file name's stamp.
    fn started(&self, rel: &str) -> Option<f64> {
        let parsed = self
            .date_time
            .as_deref()
            .and_then(|d| d.trim().parse::<f64>().ok());
        parsed
            .filter(|d| d.is_finite())
            .or_else(|| etho_model::status::experiment_start(file_name(rel)).map(|s| s as f64))
    }

    /// The facts the consistency rules need.
    pub fn last_good(&self) -> LastGood {
        LastGood {
            mode: self.mode,
            wal: self.wal,
            hot_journal: self.hot_journal,
        }
    }
}

/// Every record of one device tree, by path relative to the tree.
#[derive(Debug, Default)]
pub struct Records {
    path: PathBuf,
    map: BTreeMap<String, Record>,
    dirty: bool,
}

impl Records {
    /// Loads `path`; a missing file is empty, an unreadable one is logged and treated as empty
    /// (every database is then verified from scratch, which is safe).
    pub fn load(path: &Path) -> Records {
        let map = match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("ignoring unreadable {}: {e}", path.display());
                BTreeMap::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!("cannot read {}: {e}", path.display());
                BTreeMap::new()
            }
        };
        Records {
            path: path.to_path_buf(),
            map,
            dirty: false,
        }
    }

    /// The record of a database.
    pub fn get(&self, rel: &str) -> Option<&Record> {
        self.map.get(rel)
    }

    /// Every recorded database path.
    pub fn paths(&self) -> impl Iterator<Item = &String> {
        self.map.keys()
    }

    /// The device's current or last experiment as its last good copies describe it: the recorded
    /// database that started last (ties: the later path), with its newest frame.
    pub fn newest_experiment(&self) -> Option<etho_model::status::CopiedExperiment> {
        let (rel, record) = self.map.iter().max_by(|(ra, a), (rb, b)| {
            let (sa, sb) = (a.started(ra), b.started(rb));
            sa.partial_cmp(&sb)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| ra.cmp(rb))
        })?;
        Some(etho_model::status::CopiedExperiment {
            experiment: file_name(rel).to_string(),
            newest_copied_at: record.newest_frame_at(),
        })
    }

    /// Replaces a record.
    pub fn set(&mut self, rel: &str, record: Record) {
        self.map.insert(rel.to_string(), record);
        self.dirty = true;
    }

    /// Writes the records back (atomically) if anything changed.
    pub fn save(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&self.map).map_err(io::Error::other)?;
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, &self.path)?;
        self.dirty = false;
        Ok(())
    }
}

/// The last component of a path relative to the tree.
fn file_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

/// `root/rel`, refusing anything but plain components in `rel`.
pub fn below(root: &Path, rel: &str) -> io::Result<PathBuf> {
    let rel = Path::new(rel);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing path {}", rel.display()),
        ));
    }
    Ok(root.join(rel))
}

/// Creates the parent directories of `path` (all of them ours, under the state directory).
pub fn make_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(p) => fs::create_dir_all(p),
        None => Ok(()),
    }
}

/// File attributes rsync compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAttrs {
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: SystemTime,
    /// Permission bits.
    pub mode: u32,
}

impl DeviceAttrs {
    /// The attributes of a file rsync wrote (which carries the device's).
    pub fn of(path: &Path) -> io::Result<DeviceAttrs> {
        let m = fs::metadata(path)?;
        Ok(DeviceAttrs {
            size: m.len(),
            mtime: m.modified()?,
            mode: m.permissions().mode() & 0o7777,
        })
    }

    /// Applies mtime and mode to `path`.
    pub fn apply_time_and_mode(&self, path: &Path) -> io::Result<()> {
        fs::set_permissions(path, fs::Permissions::from_mode(self.mode))?;
        fs::File::options()
            .write(true)
            .open(path)?
            .set_modified(self.mtime)
    }
}

/// A hidden temporary name next to `path` (written, then renamed over it).
fn temp_beside(path: &Path) -> io::Result<PathBuf> {
    make_parent(path)?;
    let tmp = path.with_file_name(format!(
        ".{}.etho-tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let _ = fs::remove_file(&tmp);
    Ok(tmp)
}

/// Writes the sparse stub of a database at `path`.
pub fn write_db_stub(path: &Path, attrs: &DeviceAttrs) -> io::Result<()> {
    let tmp = temp_beside(path)?;
    let f = fs::File::create(&tmp)?;
    f.set_len(attrs.size)?;
    drop(f);
    attrs.apply_time_and_mode(&tmp)?;
    fs::rename(&tmp, path)
}

/// Keeps a raw companion read from the device (moved from `from`) as the next delta basis,
/// with mtime 0 so rsync always reads the device's again. `None` removes the kept one.
pub fn keep_companion(kept: &Path, from: Option<&Path>) -> io::Result<()> {
    match from {
        None => match fs::remove_file(kept) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Some(from) => {
            let tmp = temp_beside(kept)?;
            fs::copy(from, &tmp)?;
            fs::File::options()
                .write(true)
                .open(&tmp)?
                .set_modified(UNIX_EPOCH)?;
            fs::rename(&tmp, kept)
        }
    }
}

/// Whether two files hold the same bytes (false when either is missing).
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (Ok(fa), Ok(fb)) = (fs::File::open(a), fs::File::open(b)) else {
        return false;
    };
    match (fa.metadata(), fb.metadata()) {
        (Ok(ma), Ok(mb)) if ma.len() == mb.len() => {}
        _ => return false,
    }
    let (mut ra, mut rb) = (io::BufReader::new(fa), io::BufReader::new(fb));
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = match ra.read(&mut ba) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if n == 0 {
            return true;
        }
        if rb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn record(date_time: Option<&str>, last_t: &[(&str, Option<i64>)]) -> Record {
        Record {
            mode: DbMode::Wal,
            wal: None,
            hot_journal: false,
            tables: last_t
                .iter()
                .map(|(t, last)| {
                    let stats = TableStats {
                        rows: 1,
                        max_id: Some(1),
                        last_t: *last,
                    };
                    (t.to_string(), stats)
                })
                .collect(),
            date_time: date_time.map(str::to_string),
        }
    }

    #[test]
    fn the_newest_experiment_is_the_last_started() {
        let id = "0123456789abcdef0123456789abcdef";
        let mut r = Records::default();
        assert_eq!(r.newest_experiment(), None);
        let old = format!("{id}/ETHOSCOPE_002/2025-07-09_10-00-00/2025-07-09_10-00-00_{id}.db");
        let new = format!("{id}/ETHOSCOPE_002/2025-07-10_10-00-00/2025-07-10_10-00-00_{id}.db");
        r.set(
            &old,
            record(Some("1752055200.0"), &[("ROI_1", Some(86_000_000))]),
        );
        r.set(
            &new,
            record(
                Some("1752141600.0"),
                &[
                    ("ROI_1", Some(61_250)),
                    ("ROI_2", Some(60_000)),
                    ("START_EVENTS", Some(99_999_999)),
                ],
            ),
        );
        let newest = r.newest_experiment().unwrap();
        assert_eq!(newest.experiment, format!("2025-07-10_10-00-00_{id}.db"));
        assert_eq!(
            newest.newest_copied_at,
            Some(1_752_141_661.25),
            "ROI tables only"
        );
        // A new experiment without frames yet is still the current one, with nothing known.
        let newer = format!("{id}/ETHOSCOPE_002/2025-07-11_10-00-00/2025-07-11_10-00-00_{id}.db");
        r.set(&newer, record(Some("1752228000.0"), &[("ROI_1", None)]));
        let newest = r.newest_experiment().unwrap();
        assert_eq!(newest.experiment, format!("2025-07-11_10-00-00_{id}.db"));
        assert_eq!(newest.newest_copied_at, None);
        // Without METADATA.date_time the file name orders them.
        let mut r = Records::default();
        r.set(&new, record(None, &[]));
        r.set(&old, record(None, &[]));
        assert_eq!(
            r.newest_experiment().unwrap().experiment,
            format!("2025-07-10_10-00-00_{id}.db")
        );
    }

    #[test]
    fn records_round_trip_and_stubs_are_sparse() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("live/results/x.json");
        let mut r = Records::load(&path);
        assert!(r.get("a/b.db").is_none());
        let rec = Record {
            mode: DbMode::Wal,
            wal: Some(WalSalts { salt1: 3, salt2: 9 }),
            hot_journal: false,
            tables: [(
                "ROI_1".to_string(),
                TableStats {
                    rows: 5,
                    max_id: Some(5),
                    last_t: Some(2500),
                },
            )]
            .into(),
            date_time: Some("1752141600.0".into()),
        };
        r.set("a/b.db", rec.clone());
        r.save().unwrap();
        assert_eq!(Records::load(&path).get("a/b.db"), Some(&rec));
        // Records written before the health figures still load.
        let old = r#"{"a/b.db":{"mode":"wal","wal":null,"hot_journal":false,"tables":{"ROI_1":{"rows":5,"max_id":5}}}}"#;
        fs::write(&path, old).unwrap();
        let loaded = Records::load(&path);
        assert_eq!(loaded.get("a/b.db").unwrap().newest_frame_at(), None);
        fs::write(&path, b"{not json").unwrap();
        assert!(Records::load(&path).get("a/b.db").is_none());

        let stub = t.path().join("stubs/a/b.db");
        let attrs = DeviceAttrs {
            size: 200 * 1024 * 1024,
            mtime: UNIX_EPOCH + std::time::Duration::new(1_752_141_600, 123_456_789),
            mode: 0o640,
        };
        write_db_stub(&stub, &attrs).unwrap();
        let m = fs::metadata(&stub).unwrap();
        assert_eq!(DeviceAttrs::of(&stub).unwrap(), attrs);
        assert_eq!(m.blocks(), 0, "a stub takes no data blocks");
        assert!(below(t.path(), "../x").is_err());
        assert!(below(t.path(), "/etc").is_err());

        let raw = t.path().join("raw");
        fs::write(&raw, b"frames").unwrap();
        let kept = t.path().join("stubs/a/b.db-wal");
        keep_companion(&kept, Some(&raw)).unwrap();
        assert!(same_bytes(&kept, &raw));
        assert_eq!(fs::metadata(&kept).unwrap().modified().unwrap(), UNIX_EPOCH);
        keep_companion(&kept, None).unwrap();
        assert!(!kept.exists());
        keep_companion(&kept, None).unwrap();
    }
}
