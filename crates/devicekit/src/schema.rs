//! The ethoscope result schema: table layouts with the firmware's exact MariaDB DDL and the
//! equivalent SQLite DDL.
//!
//! Layouts follow the device's `MySQLResultWriter` (and its SQLite twin): keyless `ROI_MAP`,
//! `VAR_MAP` and `METADATA`; `START_EVENTS`, `ROI_<n>`, `IMG_SNAPSHOTS`, `SENSORS` and
//! `CSV_DAM_ACTIVITY` keyed by an auto-increment integer `id`. An experiment's file name is
//! `YYYY-MM-DD_HH-MM-SS_<machine_id>.db` from its start time in UTC, stored in
//! `METADATA('backup_filename', …)`.

/// One column: name, MariaDB type as written in the firmware's DDL, SQLite type of the SQLite
/// writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    /// Column name.
    pub name: String,
    /// MariaDB type (`SMALLINT`, `CHAR(100)`, `LONGBLOB`, ...).
    pub mysql_type: String,
    /// SQLite type (`INTEGER`, `TEXT`, `REAL`, `BLOB`).
    pub sqlite_type: String,
}

fn col(name: &str, mysql_type: &str, sqlite_type: &str) -> ColumnDef {
    ColumnDef {
        name: name.to_string(),
        mysql_type: mysql_type.to_string(),
        sqlite_type: sqlite_type.to_string(),
    }
}

/// One table of the result database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    /// Table name.
    pub name: String,
    /// True when the table has the firmware's `id INT NOT NULL AUTO_INCREMENT PRIMARY KEY` first
    /// column (not listed in `columns`).
    pub has_id: bool,
    /// Data columns, in order, after `id` when `has_id`.
    pub columns: Vec<ColumnDef>,
}

impl TableDef {
    fn keyless(name: &str, columns: Vec<ColumnDef>) -> TableDef {
        TableDef {
            name: name.to_string(),
            has_id: false,
            columns,
        }
    }

    fn with_id(name: &str, columns: Vec<ColumnDef>) -> TableDef {
        TableDef {
            name: name.to_string(),
            has_id: true,
            columns,
        }
    }

    /// `CREATE TABLE` for MariaDB, as the firmware issues it (InnoDB).
    pub fn mysql_ddl(&self) -> String {
        let mut parts = Vec::new();
        if self.has_id {
            parts.push("id INT NOT NULL AUTO_INCREMENT PRIMARY KEY".to_string());
        }
        parts.extend(
            self.columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.mysql_type)),
        );
        format!(
            "CREATE TABLE {} ({}) ENGINE=InnoDB",
            self.name,
            parts.join(", ")
        )
    }

    /// `CREATE TABLE` for SQLite (the device's SQLite writer and the backup mirror agree on it).
    pub fn sqlite_ddl(&self) -> String {
        let mut parts = Vec::new();
        if self.has_id {
            parts.push("id INTEGER PRIMARY KEY".to_string());
        }
        parts.extend(
            self.columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.sqlite_type)),
        );
        format!("CREATE TABLE {} ({})", self.name, parts.join(", "))
    }

    /// Data column names (without `id`), comma-separated, for INSERT column lists.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `ROI_MAP (roi_idx, roi_value, x, y, w, h)`.
pub fn roi_map() -> TableDef {
    TableDef::keyless(
        "ROI_MAP",
        ["roi_idx", "roi_value", "x", "y", "w", "h"]
            .iter()
            .map(|n| col(n, "SMALLINT", "INTEGER"))
            .collect(),
    )
}

/// `VAR_MAP (var_name, sql_type, functional_type)`.
pub fn var_map() -> TableDef {
    TableDef::keyless(
        "VAR_MAP",
        ["var_name", "sql_type", "functional_type"]
            .iter()
            .map(|n| col(n, "CHAR(100)", "TEXT"))
            .collect(),
    )
}

/// `METADATA (field, value)`.
pub fn metadata() -> TableDef {
    TableDef::keyless(
        "METADATA",
        vec![
            col("field", "CHAR(100)", "TEXT"),
            col("value", "TEXT", "TEXT"),
        ],
    )
}

/// `START_EVENTS (id, t, event)`.
pub fn start_events() -> TableDef {
    TableDef::with_id(
        "START_EVENTS",
        vec![
            col("t", "INT", "INTEGER"),
            col("event", "CHAR(100)", "TEXT"),
        ],
    )
}

/// The tracking variables of a ROI table after `id` and `t`, with their MariaDB types and the
/// functional type the firmware records in `VAR_MAP`.
pub const ROI_VARIABLES: [(&str, &str, &str); 8] = [
    ("x", "SMALLINT", "distance"),
    ("y", "SMALLINT", "distance"),
    ("w", "SMALLINT", "distance"),
    ("h", "SMALLINT", "distance"),
    ("phi", "SMALLINT", "angle"),
    ("xy_dist_log10x1000", "SMALLINT", "relative_distance_1e6"),
    ("is_inferred", "BOOLEAN", "bool"),
    ("has_interacted", "SMALLINT", "interaction"),
];

/// `ROI_<n> (id, t, x, y, w, h, phi, xy_dist_log10x1000, is_inferred, has_interacted)`.
pub fn roi_table(n: u32) -> TableDef {
    let mut columns = vec![col("t", "INT", "INTEGER")];
    columns.extend(
        ROI_VARIABLES
            .iter()
            .map(|(name, ty, _)| col(name, ty, "INTEGER")),
    );
    TableDef::with_id(&format!("ROI_{n}"), columns)
}

/// True for a tracking table name `ROI_<n>` (not `ROI_MAP`).
pub fn is_roi_table(name: &str) -> bool {
    name.strip_prefix("ROI_")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `IMG_SNAPSHOTS (id, t, img)`.
pub fn img_snapshots() -> TableDef {
    TableDef::with_id(
        "IMG_SNAPSHOTS",
        vec![col("t", "INT", "INTEGER"), col("img", "LONGBLOB", "BLOB")],
    )
}

/// `SENSORS (id, t, temperature, humidity, light, pressure)`.
pub fn sensors() -> TableDef {
    TableDef::with_id(
        "SENSORS",
        vec![
            col("t", "INT", "INTEGER"),
            col("temperature", "FLOAT", "REAL"),
            col("humidity", "FLOAT", "REAL"),
            col("light", "INT", "INTEGER"),
            col("pressure", "FLOAT", "REAL"),
        ],
    )
}

/// `CSV_DAM_ACTIVITY (id, date, time, ROI_1 … ROI_<n_rois>)`.
pub fn csv_dam_activity(n_rois: u32) -> TableDef {
    let mut columns = vec![
        col("date", "CHAR(100)", "TEXT"),
        col("time", "CHAR(100)", "TEXT"),
    ];
    columns.extend((1..=n_rois).map(|i| col(&format!("ROI_{i}"), "SMALLINT", "INTEGER")));
    TableDef::with_id("CSV_DAM_ACTIVITY", columns)
}

/// What one simulated experiment looks like. Everything generated from it is a pure function of
/// these fields (see [`crate::generator`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSpec {
    /// 32-hex machine id.
    pub machine_id: String,
    /// Device name, e.g. `ETHOSCOPE_001`; the database is `<name>_db`.
    pub machine_name: String,
    /// Experiment start, epoch seconds (UTC); gives the file name.
    pub start_time: i64,
    /// Number of regions of interest (ROI tables).
    pub n_rois: u32,
    /// Random seed.
    pub seed: u64,
    /// Simulated milliseconds between two tracking frames.
    pub frame_ms: i64,
    /// Write `IMG_SNAPSHOTS`, one JPEG-sized image every `snapshot_every_ms`.
    pub snapshots: bool,
    /// Simulated milliseconds between two snapshots (the firmware uses 300 000).
    pub snapshot_every_ms: i64,
    /// Approximate size of one snapshot in bytes.
    pub snapshot_bytes: usize,
    /// Write `SENSORS`, one reading every 120 s of simulated time.
    pub sensors: bool,
    /// Write `CSV_DAM_ACTIVITY`, one line every 60 s of simulated time.
    pub dam: bool,
    /// Which of the firmware's result writers records the experiment (`METADATA` names it).
    pub writer: ResultWriter,
}

/// The firmware's result writer classes, as `METADATA` records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResultWriter {
    /// `MySQLResultWriter`: the device's MariaDB.
    #[default]
    MySql,
    /// `SQLiteResultWriter`: one SQLite file per experiment under `/ethoscope_data/results`.
    Sqlite,
}

impl ResultWriter {
    /// `result_writer_type` as the firmware stores it (`_database_type` of the class).
    pub fn database_type(self) -> &'static str {
        match self {
            ResultWriter::MySql => "MySQL",
            ResultWriter::Sqlite => "SQLite3",
        }
    }

    /// The class's Python module path.
    pub fn class_path(self) -> &'static str {
        match self {
            ResultWriter::MySql => "ethoscope.io.mysql.MySQLResultWriter",
            ResultWriter::Sqlite => "ethoscope.io.sqlite.SQLiteResultWriter",
        }
    }
}

impl ExperimentSpec {
    /// A typical experiment: 20 ROIs, 5 frames per second, snapshots (~30 kB), sensors, DAM.
    pub fn new(
        machine_id: impl Into<String>,
        machine_name: impl Into<String>,
        start_time: i64,
    ) -> ExperimentSpec {
        ExperimentSpec {
            machine_id: machine_id.into(),
            machine_name: machine_name.into(),
            start_time,
            n_rois: 20,
            seed: 1,
            frame_ms: 200,
            snapshots: true,
            snapshot_every_ms: 300_000,
            snapshot_bytes: 30_000,
            sensors: true,
            dam: true,
            writer: ResultWriter::MySql,
        }
    }

    /// The MariaDB database name, `<NAME>_db`.
    pub fn db_name(&self) -> String {
        format!("{}_db", self.machine_name)
    }

    /// Start time as `YYYY-MM-DD_HH-MM-SS` in UTC (the firmware uses `utcfromtimestamp`).
    pub fn date_time(&self) -> String {
        format_date_time(self.start_time)
    }

    /// `YYYY-MM-DD_HH-MM-SS_<machine_id>.db`.
    pub fn backup_filename(&self) -> String {
        format!("{}_{}.db", self.date_time(), self.machine_id)
    }

    /// Every table this experiment ends up with, in creation order.
    pub fn tables(&self) -> Vec<TableDef> {
        let mut t = vec![roi_map(), var_map(), metadata(), start_events()];
        if self.snapshots {
            t.push(img_snapshots());
        }
        if self.sensors {
            t.push(sensors());
        }
        if self.dam {
            t.push(csv_dam_activity(self.n_rois));
        }
        t.extend((1..=self.n_rois).map(roi_table));
        t
    }

    /// The `METADATA` rows written at experiment start, including the firmware's
    /// `('sqlite_source_path', NULL)` for MySQL experiments.
    pub fn metadata_rows(&self) -> Vec<(String, Option<String>)> {
        let s = |v: &str| Some(v.to_string());
        vec![
            ("machine_id".into(), s(&self.machine_id)),
            ("machine_name".into(), s(&self.machine_name)),
            ("date_time".into(), Some(format!("{}.0", self.start_time))),
            ("frame_width".into(), s("1280")),
            ("frame_height".into(), s("960")),
            (
                "version".into(),
                s("c0ffee0000000000000000000000000000000000"),
            ),
            (
                "experimental_info".into(),
                Some(format!(
                    "{{'name': 'sim', 'location': 'Incubator 1', 'code': 'seed{}'}}",
                    self.seed
                )),
            ),
            ("selected_options".into(), Some(self.selected_options())),
            (
                "hardware_info".into(),
                s("{'partitions': [], 'kernel': 'sim'}"),
            ),
            (
                "reference_points".into(),
                s("[(0, 0), (1280, 0), (0, 960)]"),
            ),
            ("backup_filename".into(), Some(self.backup_filename())),
            ("result_writer_type".into(), s(self.writer.database_type())),
            ("sqlite_source_path".into(), self.sqlite_source_path()),
        ]
    }

    /// Where the device's SQLite writer keeps the file (`None` for MySQL experiments, whose
    /// firmware stores NULL).
    pub fn sqlite_source_path(&self) -> Option<String> {
        (self.writer == ResultWriter::Sqlite).then(|| {
            format!(
                "/ethoscope_data/results/{}/{}/{}/{}",
                self.machine_id,
                self.machine_name,
                self.date_time(),
                self.backup_filename()
            )
        })
    }

    /// `str()` of the tracking control thread's option dict (`control/tracking.py`
    /// `_option_dict`), as the firmware stores it in `METADATA.selected_options`: every key a
    /// device writes, in the firmware's order, with classes printed as Python reprs. Analysis
    /// code (ethoscopy's `load_ethoscope_metadata`) strips `<`, `>` and `class `, evaluates it
    /// and reads `["interactor"]`.
    pub fn selected_options(&self) -> String {
        let class = |path: &str| format!("<class '{path}'>");
        let entry = |classes: &[&str], kwargs: &str| {
            let possible: Vec<String> = classes.iter().map(|c| class(c)).collect();
            format!(
                "{{'possible_classes': [{}], 'class': {}, 'kwargs': {kwargs}}}",
                possible.join(", "),
                class(classes[0])
            )
        };
        let experimental_info = format!(
            "{{'name': 'sim', 'location': 'Incubator 1', 'code': 'seed{}', 'sensor': ''}}",
            self.seed
        );
        let writers = match self.writer {
            ResultWriter::Sqlite => [ResultWriter::Sqlite, ResultWriter::MySql],
            ResultWriter::MySql => [ResultWriter::MySql, ResultWriter::Sqlite],
        };
        let mut entries = vec![(
            "experimental_info",
            entry(
                &["ethoscope.control.tracking.ExperimentalInformation"],
                &experimental_info,
            ),
        )];
        entries.extend(
            OPTION_CLASSES
                .iter()
                .map(|(key, classes)| (*key, entry(classes, "{}"))),
        );
        entries.push((
            "result_writer",
            entry(&[writers[0].class_path(), writers[1].class_path()], "{}"),
        ));
        let items: Vec<String> = entries
            .iter()
            .map(|(key, value)| format!("('{key}', {value})"))
            .collect();
        format!("OrderedDict([{}])", items.join(", "))
    }
}

/// The option dict's entries between `experimental_info` and `result_writer`, in the
/// firmware's order: each key with its possible classes, the default first.
const OPTION_CLASSES: [(&str, &[&str]); 5] = [
    (
        "interactor",
        &[
            "ethoscope.stimulators.stimulators.DefaultStimulator",
            "ethoscope.stimulators.sleep_depriver_stimulators.SleepDepStimulator",
            "ethoscope.stimulators.sleep_depriver_stimulators.MiddleCrossingStimulator",
        ],
    ),
    (
        "roi_builder",
        &[
            "ethoscope.roi_builders.file_based_roi_builder.FileBasedROIBuilder",
            "ethoscope.roi_builders.target_roi_builder.TargetGridROIBuilder",
        ],
    ),
    (
        "tracker",
        &["ethoscope.trackers.adaptive_bg_tracker.AdaptiveBGModel"],
    ),
    (
        "drawer",
        &[
            "ethoscope.drawers.drawers.DefaultDrawer",
            "ethoscope.drawers.drawers.NullDrawer",
        ],
    ),
    (
        "camera",
        &[
            "ethoscope.hardware.input.cameras.OurPiCameraAsync",
            "ethoscope.hardware.input.cameras.MovieVirtualCamera",
            "ethoscope.hardware.input.cameras.V4L2Camera",
        ],
    ),
];

/// A UTC calendar time, split into fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// Year.
    pub year: i64,
    /// Month, 1 to 12.
    pub month: u32,
    /// Day of month, 1 to 31.
    pub day: u32,
    /// Hour, 0 to 23.
    pub hour: u32,
    /// Minute.
    pub minute: u32,
    /// Second.
    pub second: u32,
}

impl UtcTime {
    /// Splits an epoch second (proleptic Gregorian calendar, Howard Hinnant's `civil_from_days`).
    pub fn from_epoch(epoch: i64) -> UtcTime {
        let days = epoch.div_euclid(86_400);
        let secs = epoch.rem_euclid(86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcTime {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
        }
    }

    /// English three-letter month name (`Jul`), as the firmware's DAM table writes it.
    pub fn month_abbrev(&self) -> &'static str {
        const NAMES: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        NAMES[(self.month.clamp(1, 12) - 1) as usize]
    }
}

/// `YYYY-MM-DD_HH-MM-SS` of an epoch second, UTC.
pub fn format_date_time(epoch: i64) -> String {
    let t = UtcTime::from_epoch(epoch);
    format!(
        "{:04}-{:02}-{:02}_{:02}-{:02}-{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_ddl() {
        assert_eq!(
            roi_table(3).mysql_ddl(),
            "CREATE TABLE ROI_3 (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, t INT, x SMALLINT, y SMALLINT, w SMALLINT, h SMALLINT, phi SMALLINT, xy_dist_log10x1000 SMALLINT, is_inferred BOOLEAN, has_interacted SMALLINT) ENGINE=InnoDB"
        );
        assert_eq!(
            metadata().sqlite_ddl(),
            "CREATE TABLE METADATA (field TEXT, value TEXT)"
        );
        assert_eq!(
            csv_dam_activity(2).sqlite_ddl(),
            "CREATE TABLE CSV_DAM_ACTIVITY (id INTEGER PRIMARY KEY, date TEXT, time TEXT, ROI_1 INTEGER, ROI_2 INTEGER)"
        );
    }

    #[test]
    fn file_name_is_utc() {
        let spec = ExperimentSpec::new("0123456789abcdef0123456789abcdef", "ETHOSCOPE_001", 0);
        assert_eq!(
            spec.backup_filename(),
            "1970-01-01_00-00-00_0123456789abcdef0123456789abcdef.db"
        );
        assert_eq!(format_date_time(1_752_141_600), "2025-07-10_10-00-00");
        assert_eq!(format_date_time(951_782_400), "2000-02-29_00-00-00");
        assert_eq!(format_date_time(4_107_542_399), "2100-02-28_23-59-59");
        assert_eq!(format_date_time(-1), "1969-12-31_23-59-59");
        assert_eq!(UtcTime::from_epoch(1_752_141_600).month_abbrev(), "Jul");
        let meta = spec.metadata_rows();
        assert!(meta.contains(&("sqlite_source_path".to_string(), None)));
        assert_eq!(spec.tables().len(), 7 + 20);
        assert!(is_roi_table("ROI_12") && !is_roi_table("ROI_MAP") && !is_roi_table("ROI_"));
    }

    #[test]
    fn selected_options_has_every_firmware_key() {
        let mut spec = ExperimentSpec::new("0123456789abcdef0123456789abcdef", "ETHOSCOPE_001", 0);
        spec.writer = ResultWriter::Sqlite;
        let opts = spec.selected_options();
        let mut at = 0;
        for key in [
            "experimental_info",
            "interactor",
            "roi_builder",
            "tracker",
            "drawer",
            "camera",
            "result_writer",
        ] {
            let found = opts[at..]
                .find(&format!("('{key}', {{'possible_classes': ["))
                .unwrap_or_else(|| panic!("{key} missing or out of order in {opts}"));
            at += found;
        }
        assert!(opts.starts_with("OrderedDict([('experimental_info'"));
        assert!(opts.contains("'class': <class 'ethoscope.io.sqlite.SQLiteResultWriter'>"));
        let meta = spec.metadata_rows();
        assert!(meta.contains(&("result_writer_type".to_string(), Some("SQLite3".into()))));
        assert!(meta.contains(&(
            "sqlite_source_path".to_string(),
            Some(format!(
                "/ethoscope_data/results/{0}/ETHOSCOPE_001/1970-01-01_00-00-00/1970-01-01_00-00-00_{0}.db",
                spec.machine_id
            ))
        )));
    }

    /// ethoscopy's `load_ethoscope_metadata` (3.0.0, `src/ethoscopy/load.py`) reads the field
    /// with Python's `eval` after stripping `<`, `>` and `class `, then takes `["interactor"]`,
    /// pops its `kwargs` and reads its `class`. The same steps, in Python.
    #[test]
    fn selected_options_loads_like_ethoscopy_does() {
        let spec = ExperimentSpec::new("0123456789abcdef0123456789abcdef", "ETHOSCOPE_001", 0);
        let script = r#"
import sys
from collections import OrderedDict
raw = sys.stdin.read()
d = eval(raw.replace("<", "").replace(">", "").replace("class ", ""))["interactor"]
kw = d.pop("kwargs")
kw["class"] = d["class"]
assert kw == {"class": "ethoscope.stimulators.stimulators.DefaultStimulator"}, kw
print("ok")
"#;
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is needed (scripts/test installs it)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(spec.selected_options().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout == b"ok\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
