//! `GET /devices` documents from the nodes a lab may run, read by the same rules both daemons use.
//!
//! - `july-node-devices.json`: the flat shape our node serves (and upstream's node served in
//!   July 2025): the device's own `/data/<id>` fields at the top level plus `databases`.
//! - `head-node-devices.json`: upstream HEAD's node in steady state (recorded): file names and
//!   writer types under `latest_cache`, `experimental_info.{current,previous}`.
//! - `head-node-devices-startup-window.json`: the same node a few seconds after the devices were
//!   added (recorded): no `databases` key yet.
//!
//! Each holds one MariaDB tracker (ETHOSCOPE_001), one SQLite tracker (ETHOSCOPE_002) and one
//! video recorder (ETHOSCOPE_003).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use etho_model::device::{parse_device_map, DatabaseReport, DeviceInfo};
use serde_json::Value;

use DatabaseReport::{Absent, Present, Unknown};

fn devices(fixture: &str) -> Vec<DeviceInfo> {
    let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let (mut devices, problems) = parse_device_map(&doc).unwrap();
    assert!(problems.is_empty(), "{fixture}: {problems:?}");
    assert_eq!(devices.len(), 3, "{fixture}");
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    devices
}

/// `(name, MariaDB report, SQLite report, announced file name)` per device, sorted by name.
fn table(fixture: &str) -> Vec<(String, DatabaseReport, DatabaseReport, Option<String>)> {
    devices(fixture)
        .iter()
        .map(|d| {
            assert!(d.backup_eligibility().is_ok(), "{fixture} {}", d.name);
            (
                d.name.clone(),
                d.mariadb_report(),
                d.sqlite_report(),
                d.announced_mariadb_filename().map(str::to_string),
            )
        })
        .collect()
}

fn row(
    name: &str,
    mariadb: DatabaseReport,
    sqlite: DatabaseReport,
    file: Option<&str>,
) -> (String, DatabaseReport, DatabaseReport, Option<String>) {
    (name.into(), mariadb, sqlite, file.map(str::to_string))
}

const F001: &str = "2026-11-30_19-12-17_400c6373839f11ec5edfc384f5d734e5.db";

#[test]
fn july_shape() {
    assert_eq!(
        table("july-node-devices.json"),
        [
            row("ETHOSCOPE_001", Present, Absent, Some(F001)),
            row(
                "ETHOSCOPE_002",
                Absent,
                Present,
                Some("2026-11-30_19-12-19_da34548b56e981c298a87a0c1a8f4993.db")
            ),
            row("ETHOSCOPE_003", Absent, Absent, None),
        ]
    );
}

#[test]
fn july_shape_without_database_list_falls_back_to_the_writer_type() {
    // Our node leaves `databases` out while a device's `/data/databases/<id>` fails.
    let mut list = devices("july-node-devices.json");
    for d in &mut list {
        d.raw.remove("databases");
    }
    let reports: Vec<_> = list
        .iter()
        .map(|d| (d.mariadb_report(), d.sqlite_report()))
        .collect();
    assert_eq!(
        reports,
        [(Present, Absent), (Absent, Present), (Unknown, Unknown)]
    );
}

#[test]
fn head_shape_steady_state() {
    assert_eq!(
        table("head-node-devices.json"),
        [
            row("ETHOSCOPE_001", Present, Absent, Some(F001)),
            row(
                "ETHOSCOPE_002",
                Absent,
                Present,
                Some("2026-11-30_19-12-19_da34548b56e981c298a87a0c1a8f4993.db")
            ),
            // The recorder: an empty list, no writer. Its `latest_cache` still names the file of
            // an experiment it never wrote to MariaDB; it is only a name, never a reason to copy.
            row(
                "ETHOSCOPE_003",
                Absent,
                Absent,
                Some("2026-11-30_19-12-21_9487b13291706b0c2d01fba48316f5e9.db")
            ),
        ]
    );
}

#[test]
fn head_shape_startup_window() {
    // No `databases` yet: the writer type under `latest_cache` tells the two trackers apart, and
    // the recorder (no writer, no list) is unknown, not "has nothing".
    assert_eq!(
        table("head-node-devices-startup-window.json"),
        [
            row(
                "ETHOSCOPE_001",
                Present,
                Absent,
                Some("2026-11-30_19-15-24_400c6373839f11ec5edfc384f5d734e5.db")
            ),
            row(
                "ETHOSCOPE_002",
                Absent,
                Present,
                Some("2026-11-30_19-15-26_da34548b56e981c298a87a0c1a8f4993.db")
            ),
            row("ETHOSCOPE_003", Unknown, Unknown, None),
        ]
    );
}

#[test]
fn previous_experiment_file_name_is_the_last_fallback() {
    let mut list = devices("head-node-devices-startup-window.json");
    let d = &mut list[2];
    d.raw["experimental_info"]["previous"]["backup_filename"] = "old.db".into();
    assert_eq!(d.announced_mariadb_filename(), Some("old.db"));
    d.raw
        .insert("previous_backup_filename".into(), "flat.db".into());
    assert_eq!(d.announced_mariadb_filename(), Some("flat.db"));
}
