//! `GET /archive`: the index as JSON, filtered by device and date and paged at 500 files.
//!
//! Pure: a [`ListQuery`] and a [`Snapshot`] in, a serializable [`Listing`] out. A device filter by
//! machine id selects that device's range of the (sorted) index directly; a name or date filter
//! scans the selected range, which for 100 k files is well under a millisecond. Files are grouped
//! into devices, then experiments (newest first), then files; experiment totals cover the whole
//! experiment, not only the files on this page.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::index::{Entry, ExperimentTotals, Root, Snapshot};
use super::names::{is_valid_date, Name};
use super::sqlite::{CheckMethod, DbSource};

/// Files per page.
pub const PAGE_SIZE: usize = 500;

/// Query parameters as they arrive.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListParams {
    /// Machine id or device name.
    pub device: Option<String>,
    /// First experiment date, `YYYY-MM-DD`.
    pub from: Option<String>,
    /// Last experiment date, `YYYY-MM-DD` (inclusive).
    pub to: Option<String>,
    /// Page, from 1.
    pub page: Option<usize>,
}

/// A validated listing query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    device: Option<Name>,
    by_id: bool,
    from: Option<String>,
    to: Option<String>,
    /// `from` and `to` as `YYYYMMDD` (0 and `u32::MAX` when absent).
    days: (u32, u32),
    page: usize,
}

/// `YYYY-MM-DD` (validated) as the number `YYYYMMDD`.
pub fn day_key(day: &str) -> u32 {
    day.bytes()
        .filter(u8::is_ascii_digit)
        .fold(0, |n, b| n * 10 + u32::from(b - b'0'))
}

fn valid_day(text: &str) -> bool {
    is_valid_date(&format!("{text}_00-00-00"))
}

impl ListQuery {
    /// Validates the parameters; the error says which one is wrong.
    pub fn new(params: ListParams) -> Result<ListQuery, String> {
        let (device, by_id) = match params.device.as_deref().filter(|d| !d.is_empty()) {
            None => (None, false),
            Some(d) => match (Name::machine_id(d), Name::machine_name(d)) {
                (Some(id), _) => (Some(id), true),
                (None, Some(name)) => (Some(name), false),
                (None, None) => return Err("device: expected a machine id or a device name".into()),
            },
        };
        let day = |which: &str, v: Option<String>| match v.filter(|d| !d.is_empty()) {
            None => Ok(None),
            Some(d) if valid_day(&d) => Ok(Some(d)),
            Some(_) => Err(format!("{which}: expected a date YYYY-MM-DD")),
        };
        let page = params.page.unwrap_or(1);
        if page == 0 {
            return Err("page: pages count from 1".into());
        }
        let from = day("from", params.from)?;
        let to = day("to", params.to)?;
        let days = (
            from.as_deref().map_or(0, day_key),
            to.as_deref().map_or(u32::MAX, day_key),
        );
        Ok(ListQuery {
            device,
            by_id,
            from,
            to,
            days,
            page,
        })
    }

    /// Whether entries of the selected range must be tested one by one (a name or date filter);
    /// a machine id alone selects a range of the sorted index.
    fn filters_within_device(&self) -> bool {
        (self.device.is_some() && !self.by_id) || self.from.is_some() || self.to.is_some()
    }

    /// Whether entry `i` of `snapshot` matches, from its compact day and name keys (no string of
    /// the entry is touched: 100 k pointer chases would cost more than the whole answer).
    fn matches(&self, snapshot: &Snapshot, name: Option<u32>, i: usize) -> bool {
        let day = snapshot.days[i];
        (self.device.is_none() || self.by_id || Some(snapshot.name_ids[i]) == name)
            && (self.days.0..=self.days.1).contains(&day)
    }

    /// The page asked for.
    pub fn page(&self) -> usize {
        self.page
    }

    /// The URL of page `page` of this query (also its canonical form).
    pub fn link(&self, page: usize) -> String {
        let mut parts = Vec::new();
        if let Some(d) = &self.device {
            parts.push(format!("device={d}"));
        }
        if let Some(f) = &self.from {
            parts.push(format!("from={f}"));
        }
        if let Some(t) = &self.to {
            parts.push(format!("to={t}"));
        }
        parts.push(format!("page={page}"));
        format!("/archive?{}", parts.join("&"))
    }
}

/// The `GET /archive` document.
#[derive(Debug, Serialize)]
pub struct Listing<'a> {
    /// When the scan behind this answer started (epoch seconds).
    pub scanned_at: i64,
    /// Version of the index (it is published twice per scan: after the walk, then with the
    /// databases analysed).
    pub version: u64,
    /// How long that scan took.
    pub scan_seconds: f64,
    /// Entries the scan ignored (outside the layout, symlinks, special files).
    pub skipped: u64,
    /// Directories it could not read.
    pub unreadable: u64,
    /// Files matching the filter, on all pages.
    pub total_files: usize,
    /// This page.
    pub page: usize,
    /// Pages in all.
    pub pages: usize,
    /// Files per page.
    pub per_page: usize,
    /// The next page's URL, if any.
    pub next: Option<String>,
    /// This page's files, grouped.
    pub devices: Vec<DeviceOut<'a>>,
}

/// One device on a page.
#[derive(Debug, Serialize)]
pub struct DeviceOut<'a> {
    /// Its machine id.
    pub machine_id: &'a str,
    /// Its experiments on this page, newest first.
    pub experiments: Vec<ExperimentOut<'a>>,
}

/// One experiment on a page.
#[derive(Debug, Serialize)]
pub struct ExperimentOut<'a> {
    /// The device's name then.
    pub machine_name: &'a str,
    /// `YYYY-MM-DD_HH-MM-SS`.
    pub date: &'a str,
    /// `id/name/date`.
    pub path: String,
    /// Download of the whole folder.
    pub zip: String,
    /// Files in the experiment (both roots).
    pub files_total: u64,
    /// Bytes in the experiment.
    pub size: u64,
    /// ROI rows counted over its databases.
    pub rows: u64,
    /// Its files on this page.
    pub files: Vec<FileOut<'a>>,
}

/// One file.
#[derive(Debug, Serialize)]
pub struct FileOut<'a> {
    /// File name.
    pub name: &'a str,
    /// Root it is under.
    pub root: Root,
    /// Bytes.
    pub size: u64,
    /// Modification time, epoch seconds.
    pub mtime: i64,
    /// Download URL.
    pub url: String,
    /// Database facts, for `.db` files under the results root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DbOut<'a>>,
}

/// What is known about a database.
#[derive(Debug, Serialize)]
pub struct DbOut<'a> {
    /// Who writes it (how it is read and downloaded).
    pub source: DbSource,
    /// The newest frame time (`t`, ms since start) over the ROI tables.
    pub last_point: Option<i64>,
    /// The newest frame as a date (epoch seconds), when the start is known.
    pub last_frame_at: Option<i64>,
    /// Rows per ROI table, from the last verification.
    pub rows: Option<Map<String, Value>>,
    /// Their sum.
    pub rows_total: Option<u64>,
    /// The last verification.
    pub verified: Option<VerifiedOut<'a>>,
    /// Why the last attempt to read it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// When and how a database was last verified.
#[derive(Debug, Serialize)]
pub struct VerifiedOut<'a> {
    /// `quick_check` or `integrity_check`.
    pub method: CheckMethod,
    /// Epoch seconds.
    pub at: i64,
    /// SQLite said `ok`.
    pub ok: bool,
    /// Its complaints otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    /// `snapshot` (mirror files) or `file` (rsync copies).
    pub on: &'static str,
    /// The file has not changed since (false: a newer check is pending).
    pub current: bool,
}

fn db_out(e: &Entry) -> Option<DbOut<'_>> {
    let db = e.db.as_ref()?;
    let last = db.last.as_ref().map(|(_, c)| c);
    let last_point = last.and_then(|c| c.last_point);
    let started = last.and_then(|c| c.started_at);
    let verified = db.verified.as_ref();
    Some(DbOut {
        source: db.source,
        last_point,
        last_frame_at: started.zip(last_point).map(|(s, t)| s + t / 1000),
        rows: verified.map(|v| {
            v.contents
                .rows
                .iter()
                .map(|(table, n)| (table.clone(), Value::from(*n)))
                .collect()
        }),
        rows_total: verified.map(|v| v.contents.rows.iter().map(|(_, n)| n).sum()),
        verified: verified.map(|v| VerifiedOut {
            method: v.check.method,
            at: v.at,
            ok: v.check.ok,
            message: v.check.message.as_deref(),
            on: if v.on_snapshot { "snapshot" } else { "file" },
            current: v.fingerprint == e.fingerprint,
        }),
        error: db.error.as_deref(),
    })
}

fn file_out(e: &Entry) -> FileOut<'_> {
    FileOut {
        name: e.file.file.as_str(),
        root: e.root,
        size: e.fingerprint.size,
        mtime: e.fingerprint.mtime(),
        url: format!("/archive/{}", e.file.path()),
        database: db_out(e),
    }
}

/// One page of the listing.
pub fn list<'a>(snapshot: &'a Snapshot, query: &ListQuery) -> Listing<'a> {
    let range = match (&query.device, query.by_id) {
        (Some(id), true) => snapshot.devices.get(id.as_str()).cloned().unwrap_or(0..0),
        _ => 0..snapshot.entries.len(),
    };
    let first = (query.page - 1).saturating_mul(PAGE_SIZE);
    // Without a name or date filter the page is a slice; otherwise one pass finds the matches.
    let (total, page): (usize, Vec<&Entry>) = if query.filters_within_device() {
        let name = query
            .device
            .as_ref()
            .and_then(|d| snapshot.names.get(d.as_str()).copied());
        let matching: Vec<usize> = range
            .filter(|&i| query.matches(snapshot, name, i))
            .collect();
        let page = matching
            .iter()
            .skip(first)
            .take(PAGE_SIZE)
            .map(|&i| &snapshot.entries[i])
            .collect();
        (matching.len(), page)
    } else {
        let in_range = &snapshot.entries[range];
        let page = in_range.iter().skip(first).take(PAGE_SIZE).collect();
        (in_range.len(), page)
    };
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let mut devices: Vec<DeviceOut<'a>> = Vec::new();
    let empty = ExperimentTotals::default();
    for e in page {
        let exp = &e.file.experiment;
        if devices
            .last()
            .is_none_or(|d| d.machine_id != exp.machine_id.as_str())
        {
            devices.push(DeviceOut {
                machine_id: exp.machine_id.as_str(),
                experiments: Vec::new(),
            });
        }
        let Some(device) = devices.last_mut() else {
            continue;
        };
        let same = device.experiments.last().is_some_and(|x| {
            x.date == exp.date.as_str() && x.machine_name == exp.machine_name.as_str()
        });
        if !same {
            let totals = snapshot.experiments.get(exp).unwrap_or(&empty);
            device.experiments.push(ExperimentOut {
                machine_name: exp.machine_name.as_str(),
                date: exp.date.as_str(),
                path: exp.path(),
                zip: format!("/archive/{}.zip", exp.path()),
                files_total: totals.files,
                size: totals.bytes,
                rows: totals.rows,
                files: Vec::new(),
            });
        }
        if let Some(x) = device.experiments.last_mut() {
            x.files.push(file_out(e));
        }
    }
    Listing {
        scanned_at: snapshot.scanned_at,
        version: snapshot.version,
        scan_seconds: snapshot.scan_duration.as_secs_f64(),
        skipped: snapshot.stats.skipped,
        unreadable: snapshot.stats.unreadable,
        total_files: total,
        page: query.page,
        pages,
        per_page: PAGE_SIZE,
        next: (query.page < pages).then(|| query.link(query.page + 1)),
        devices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::fsx::Fingerprint;
    use crate::archive::names::{ExperimentRef, FileRef};
    use std::time::Duration;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn entry(id: &str, name: &str, date: &str, file: &str) -> Entry {
        Entry {
            root: Root::Results,
            file: FileRef {
                experiment: ExperimentRef::parse(id, name, date).unwrap(),
                file: Name::file(file).unwrap(),
            },
            fingerprint: Fingerprint {
                size: 100,
                mtime_ns: 1_000_000_000,
                ino: 1,
            },
            db: None,
        }
    }

    fn snapshot(n_per_day: usize) -> Snapshot {
        let mut entries = Vec::new();
        for (id, name) in [(A, "ETHOSCOPE_001"), (B, "ETHOSCOPE_002")] {
            for day in ["2025-07-10", "2025-07-11", "2025-07-12"] {
                for i in 0..n_per_day {
                    entries.push(entry(
                        id,
                        name,
                        &format!("{day}_10-00-00"),
                        &format!("f{i:04}.txt"),
                    ));
                }
            }
        }
        entries.sort_by(crate::archive::index::listing_order);
        Snapshot::new(entries, 5, Duration::ZERO, Default::default(), 1)
    }

    fn query(device: Option<&str>, from: Option<&str>, to: Option<&str>, page: usize) -> ListQuery {
        ListQuery::new(ListParams {
            device: device.map(String::from),
            from: from.map(String::from),
            to: to.map(String::from),
            page: Some(page),
        })
        .unwrap()
    }

    #[test]
    fn filters_and_pages() {
        let snap = snapshot(300);
        let all = list(&snap, &query(None, None, None, 1));
        assert_eq!((all.total_files, all.pages), (1800, 4));
        assert_eq!(all.next.as_deref(), Some("/archive?page=2"));
        let files: usize = all
            .devices
            .iter()
            .flat_map(|d| &d.experiments)
            .map(|x| x.files.len())
            .sum();
        assert_eq!(files, PAGE_SIZE);
        let last = list(&snap, &query(None, None, None, 4));
        assert_eq!(last.next, None);
        let files: usize = last
            .devices
            .iter()
            .flat_map(|d| &d.experiments)
            .map(|x| x.files.len())
            .sum();
        assert_eq!(files, 1800 - 3 * PAGE_SIZE);

        let by_id = list(&snap, &query(Some(B), None, None, 1));
        assert_eq!(by_id.total_files, 900);
        assert!(by_id.devices.iter().all(|d| d.machine_id == B));
        let by_name = list(
            &snap,
            &query(Some("ETHOSCOPE_001"), Some("2025-07-11"), None, 1),
        );
        assert_eq!(by_name.total_files, 600);
        assert_eq!(by_name.devices.len(), 1);
        let dates: Vec<&str> = by_name.devices[0]
            .experiments
            .iter()
            .map(|x| x.date)
            .collect();
        assert_eq!(
            dates,
            ["2025-07-12_10-00-00", "2025-07-11_10-00-00"],
            "newest first"
        );
        assert_eq!(by_name.devices[0].experiments[0].files_total, 300);
        assert_eq!(
            by_name.next.as_deref(),
            Some("/archive?device=ETHOSCOPE_001&from=2025-07-11&page=2")
        );
        let one_day = list(
            &snap,
            &query(None, Some("2025-07-10"), Some("2025-07-10"), 1),
        );
        assert_eq!(one_day.total_files, 600);
        let none = list(
            &snap,
            &query(Some("cccccccccccccccccccccccccccccccc"), None, None, 1),
        );
        assert_eq!(
            (none.total_files, none.pages, none.devices.len()),
            (0, 1, 0)
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        for (params, which) in [
            (
                ListParams {
                    device: Some("../x".into()),
                    ..Default::default()
                },
                "device",
            ),
            (
                ListParams {
                    from: Some("2025-7-1".into()),
                    ..Default::default()
                },
                "from",
            ),
            (
                ListParams {
                    to: Some("yesterday".into()),
                    ..Default::default()
                },
                "to",
            ),
            (
                ListParams {
                    page: Some(0),
                    ..Default::default()
                },
                "page",
            ),
        ] {
            let err = ListQuery::new(params).unwrap_err();
            assert!(err.starts_with(which), "{err}");
        }
    }
}
