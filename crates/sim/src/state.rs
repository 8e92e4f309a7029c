//! A device's observable state and the JSON documents it answers with.
//!
//! The shapes follow the device firmware (`device_server.py`): `GET /data/<id>` is the control
//! thread's `info` plus the server's additions, `GET /data/databases/<id>` lists the SQLite
//! experiment files and the most recent MariaDB experiment. Building them is pure (state and
//! clock in, JSON out), so the shapes are tested without a server.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::config::{DbKind, Role};
use crate::experiment::Experiment;

/// Version the simulated firmware reports (`version.id` is a git sha on a real device).
pub const FIRMWARE_VERSION: &str = concat!("etho-sim-", env!("CARGO_PKG_VERSION"));

/// The device's run status, as the firmware words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Idle.
    Stopped,
    /// Setting up an experiment.
    Initialising,
    /// Tracking.
    Running,
    /// Recording video.
    Recording,
    /// Finishing an experiment.
    Stopping,
}

impl RunStatus {
    /// The wire word.
    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Stopped => "stopped",
            RunStatus::Initialising => "initialising",
            RunStatus::Running => "running",
            RunStatus::Recording => "recording",
            RunStatus::Stopping => "stopping",
        }
    }
}

/// One SQLite experiment file a device holds.
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteFile {
    /// `<stamp>_<id>.db`.
    pub backup_filename: String,
    /// Path below the device's data root: `results/<id>/<NAME>/<stamp>/<file>`.
    pub rel_path: String,
    /// Experiment start, epoch seconds.
    pub date: f64,
    /// `tracking` while written, then `finalised`.
    pub db_status: &'static str,
    /// Rows per table.
    pub table_counts: BTreeMap<String, u64>,
    /// Size on disk, bytes (refreshed by the writer).
    pub filesize: u64,
}

/// Everything a device reports about itself that changes over time.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceState {
    /// Run status.
    pub status: RunStatus,
    /// Epoch seconds of the last start or stop.
    pub time: f64,
    /// Last error (a writer failure), shown as `error`.
    pub error: Option<String>,
    /// The experiment running now, or the last one.
    pub current: Option<Experiment>,
    /// The one before.
    pub previous: Option<Experiment>,
    /// Rows per table in the current experiment's database.
    pub table_counts: BTreeMap<String, u64>,
    /// Approximate size of the current database.
    pub db_size_bytes: u64,
    /// Epoch seconds of the last write.
    pub last_db_update: f64,
    /// `initializing`, `tracking`, `finalised`, `no_cache`.
    pub db_status: &'static str,
    /// SQLite experiment files, oldest first.
    pub sqlite_files: Vec<SqliteFile>,
    /// Video chunks written so far (all experiments).
    pub video_chunks: u64,
    /// Milliseconds since the start of the current experiment, at the last frame.
    pub last_time_stamp: u64,
}

impl Default for DeviceState {
    fn default() -> DeviceState {
        DeviceState {
            status: RunStatus::Stopped,
            time: 0.0,
            error: None,
            current: None,
            previous: None,
            table_counts: BTreeMap::new(),
            db_size_bytes: 0,
            last_db_update: 0.0,
            db_status: "no_cache",
            sqlite_files: Vec::new(),
            video_chunks: 0,
            last_time_stamp: 0,
        }
    }
}

/// What the JSON builders need to know about the device besides its state.
#[derive(Debug, Clone, Copy)]
pub struct Reported<'a> {
    /// Machine id.
    pub id: &'a str,
    /// The name the device reports (a hostile device lies here).
    pub name: &'a str,
    /// The device's real name, used for storage (`<NAME>_db`, folder names).
    pub storage_name: &'a str,
    /// Tracker kind or recorder.
    pub role: Role,
    /// MariaDB server version string, when the device has one.
    pub mariadb_version: Option<&'a str>,
}

fn experiment_info(e: &Experiment) -> Value {
    json!({
        "name": e.user,
        "location": e.location,
        "code": "",
        "sensor": "",
        "lights_on": "08:00",
        "lights_off": "20:00",
        "run_id": e.run_id,
    })
}

/// The device-side path of a file below the data root (a device's root is `/ethoscope_data`).
pub fn device_path(rel: &str) -> String {
    format!("/ethoscope_data/{rel}")
}

/// Results folder of an experiment, below the data root: `results/<id>/<NAME>/<stamp>`.
pub fn results_dir(id: &str, name: &str, e: &Experiment) -> String {
    format!("results/{id}/{name}/{}", e.stamp)
}

/// Videos folder of an experiment, below the data root: `videos/<id>/<NAME>/<stamp>`.
pub fn videos_dir(id: &str, name: &str, e: &Experiment) -> String {
    format!("videos/{id}/{name}/{}", e.stamp)
}

fn writer_type(role: Role) -> Value {
    match role {
        Role::Tracker(DbKind::MariaDb) => json!("MySQLResultWriter"),
        Role::Tracker(DbKind::Sqlite) => json!("SQLiteResultWriter"),
        Role::Recorder => Value::Null,
    }
}

/// `GET /data/<id>`: the device's info document.
pub fn info_json(dev: &Reported<'_>, st: &DeviceState, now: f64) -> Value {
    let running = matches!(st.status, RunStatus::Running | RunStatus::Recording);
    let db_name = format!("{}_db", dev.storage_name);
    let prev = st.previous.as_ref();
    json!({
        "status": st.status.as_str(),
        "time": st.time,
        "error": st.error,
        "log_file": "/tmp/ethoscope_log.txt",
        "dbg_img": "/tmp/ethoscope_dbg.png",
        "last_drawn_img": "/tmp/ethoscope_last_img.jpg",
        "db_name": db_name,
        "monitor_info": {
            "last_positions": {},
            "last_time_stamp": st.last_time_stamp,
            "fps": if running { 2.0 } else { 0.0 },
        },
        "experimental_info": match (&st.current, running) {
            (Some(e), true) => experiment_info(e),
            _ => json!({}),
        },
        "database_info": database_info(dev, st, &db_name),
        "id": dev.id,
        "name": dev.name,
        "version": {"id": FIRMWARE_VERSION, "date": "2026-01-01 00:00:00"},
        "used_space": "12",
        "backup_filename": st.current.as_ref().map(|e| e.backup_filename.clone()),
        "previous_date_time": prev.map(|e| e.started as f64),
        "previous_backup_filename": prev.map(|e| e.backup_filename.clone()),
        "previous_user": prev.map(|e| e.user.clone()),
        "previous_location": prev.map(|e| e.location.clone()),
        "result_writer_type": writer_type(dev.role),
        "sqlite_source_path": sqlite_source_path(dev, st),
        "cache_file": format!("/ethoscope_data/cache/cache_{}.json", dev.id),
        "interactor": {"name": "<class 'ethoscope.stimulators.stimulators.DefaultStimulator'>"},
        "CPU_temp": 47.2,
        "underpowered": false,
        "current_timestamp": now,
        "response_time": "0.01",
        "light_schedule": {"hardware": false, "active": false, "lights_on": "08:00",
                           "lights_off": "20:00", "led_on": false},
    })
}

/// The info document's `database_info`; a MariaDB device also names its database and server.
fn database_info(dev: &Reported<'_>, st: &DeviceState, db_name: &str) -> Value {
    let mut database_info = json!({
        "db_size_bytes": st.db_size_bytes,
        "table_counts": st.table_counts,
        "last_db_update": st.last_db_update,
        "db_status": st.db_status,
    });
    if let Role::Tracker(DbKind::MariaDb) = dev.role {
        database_info["db_name"] = json!(db_name);
        database_info["db_version"] = json!(dev.mariadb_version.unwrap_or("unknown"));
    }
    database_info
}

/// Where an SQLite tracker writes its current experiment, as the device names it.
fn sqlite_source_path(dev: &Reported<'_>, st: &DeviceState) -> Value {
    match (dev.role, &st.current) {
        (Role::Tracker(DbKind::Sqlite), Some(e)) => json!(device_path(&format!(
            "{}/{}",
            results_dir(dev.id, dev.storage_name, e),
            e.backup_filename
        ))),
        _ => Value::Null,
    }
}

/// `GET /data/databases/<id>`: SQLite files and the most recent MariaDB experiment.
pub fn databases_json(dev: &Reported<'_>, st: &DeviceState) -> Value {
    let mut sqlite = Map::new();
    for f in &st.sqlite_files {
        sqlite.insert(
            f.backup_filename.clone(),
            json!({
                "filesize": f.filesize,
                "backup_filename": f.backup_filename,
                "version": FIRMWARE_VERSION,
                "path": device_path(&f.rel_path),
                "date": f.date,
                "db_status": f.db_status,
                "table_counts": f.table_counts,
                "file_exists": true,
            }),
        );
    }
    let mut mariadb = Map::new();
    if let (Role::Tracker(DbKind::MariaDb), Some(e)) = (dev.role, &st.current) {
        mariadb.insert(
            format!("{}_db", dev.storage_name),
            json!({
                "table_counts": st.table_counts,
                "backup_filename": e.backup_filename,
                "version": dev.mariadb_version.unwrap_or("unknown"),
                "date": e.started as f64,
                "db_status": st.db_status,
                "db_size_bytes": st.db_size_bytes,
            }),
        );
    }
    json!({"SQLite": sqlite, "MariaDB": mariadb})
}

/// The firmware's answer to a request naming another machine id: HTTP 200 with a traceback.
pub fn wrong_id_json(asked: &str) -> Value {
    let asked: String = asked.chars().take(64).collect();
    json!({"error": format!(
        "Traceback (most recent call last):\n  File \"/opt/ethoscope-device/src/ethoscope/scripts/device_server.py\", line 66, in func_wrapper\n    return func(*args, **kwargs)\n  File \"/opt/ethoscope-device/src/ethoscope/scripts/device_server.py\", line 558, in info\n    raise WrongMachineID\nWrongMachineID: requested id {asked:?} is not this machine\n"
    )})
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn reported(role: Role) -> Reported<'static> {
        Reported {
            id: ID,
            name: "ETHOSCOPE_001",
            storage_name: "ETHOSCOPE_001",
            role,
            mariadb_version: Some("10.11.19-MariaDB"),
        }
    }

    fn running_state() -> DeviceState {
        let e = Experiment::new(1_752_140_441, ID, "alice", "Incubator_1");
        let mut st = DeviceState {
            status: RunStatus::Running,
            time: 1_752_140_441.0,
            current: Some(e.clone()),
            db_status: "tracking",
            ..DeviceState::default()
        };
        st.table_counts.insert("ROI_1".into(), 42);
        st.sqlite_files.push(SqliteFile {
            backup_filename: e.backup_filename.clone(),
            rel_path: format!(
                "{}/{}",
                results_dir(ID, "ETHOSCOPE_001", &e),
                e.backup_filename
            ),
            date: 1_752_140_441.0,
            db_status: "tracking",
            table_counts: st.table_counts.clone(),
            filesize: 4096,
        });
        st
    }

    #[test]
    fn info_has_upstream_fields() {
        let st = running_state();
        let v = info_json(&reported(Role::Tracker(DbKind::MariaDb)), &st, 5.0);
        for key in [
            "status",
            "time",
            "error",
            "db_name",
            "monitor_info",
            "experimental_info",
            "database_info",
            "id",
            "name",
            "version",
            "used_space",
            "backup_filename",
            "previous_backup_filename",
            "result_writer_type",
            "sqlite_source_path",
            "CPU_temp",
            "current_timestamp",
            "response_time",
            "light_schedule",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["status"], "running");
        assert_eq!(v["db_name"], "ETHOSCOPE_001_db");
        assert_eq!(v["backup_filename"], format!("2025-07-10_09-40-41_{ID}.db"));
        assert_eq!(v["experimental_info"]["name"], "alice");
        assert_eq!(v["database_info"]["table_counts"]["ROI_1"], 42);
        assert_eq!(v["result_writer_type"], "MySQLResultWriter");
        assert!(v["sqlite_source_path"].is_null());
        assert!(v["response_time"].is_string());
    }

    #[test]
    fn databases_by_kind() {
        let st = running_state();
        let m = databases_json(&reported(Role::Tracker(DbKind::MariaDb)), &st);
        let entry = &m["MariaDB"]["ETHOSCOPE_001_db"];
        assert_eq!(
            entry["backup_filename"],
            format!("2025-07-10_09-40-41_{ID}.db")
        );
        assert_eq!(entry["db_status"], "tracking");
        assert_eq!(entry["table_counts"]["ROI_1"], 42);

        let s = databases_json(&reported(Role::Tracker(DbKind::Sqlite)), &st);
        assert_eq!(s["MariaDB"], json!({}));
        let file = &s["SQLite"][format!("2025-07-10_09-40-41_{ID}.db")];
        assert_eq!(file["file_exists"], true);
        assert_eq!(
            file["path"],
            format!(
                "/ethoscope_data/results/{ID}/ETHOSCOPE_001/2025-07-10_09-40-41/2025-07-10_09-40-41_{ID}.db"
            )
        );
        let info = info_json(&reported(Role::Tracker(DbKind::Sqlite)), &st, 0.0);
        assert_eq!(info["sqlite_source_path"], file["path"]);
        assert_eq!(info["result_writer_type"], "SQLiteResultWriter");

        // Before any experiment, a MariaDB device announces no database: nothing to back up yet.
        let fresh = databases_json(
            &reported(Role::Tracker(DbKind::MariaDb)),
            &DeviceState::default(),
        );
        assert_eq!(fresh, json!({"SQLite": {}, "MariaDB": {}}));
    }

    #[test]
    fn stopped_device_keeps_its_last_experiment() {
        let mut st = running_state();
        st.status = RunStatus::Stopped;
        st.db_status = "finalised";
        let m = databases_json(&reported(Role::Tracker(DbKind::MariaDb)), &st);
        assert_eq!(m["MariaDB"]["ETHOSCOPE_001_db"]["db_status"], "finalised");
        let info = info_json(&reported(Role::Tracker(DbKind::MariaDb)), &st, 0.0);
        assert_eq!(info["experimental_info"], json!({}));
        assert_eq!(info["status"], "stopped");
    }

    #[test]
    fn wrong_id_is_an_error_document() {
        let v = wrong_id_json("ffff");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.starts_with("Traceback"));
        assert!(msg.contains("WrongMachineID"));
        assert_eq!(v.as_object().unwrap().len(), 1);
    }
}
