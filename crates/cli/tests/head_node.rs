//! Our daemons behind upstream HEAD's node: a simulated lab whose `/devices` is served in HEAD's
//! shape (file names and writer types under `latest_cache`, `experimental_info.current` /
//! `.previous`), once as in HEAD's first seconds (no `databases` key yet) and once in steady
//! state. The stub stands for the other component (HEAD's node); devices, rsync daemons, MariaDB
//! and both daemons (as `etho-backup` processes, one-shot `-e`) are real.
//!
//! In the startup window the MariaDB tracker is mirrored (its writer type under `latest_cache`
//! says MariaDB), the SQLite tracker's results are pulled (its writer type says SQLite), and the
//! video recorder, whose databases nothing tells yet, gets its videos and a warning, never a
//! success. In steady state all three succeed. Every copy equals its source.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use etho_sim::{DbKind, Fleet, FleetConfig, MariaDbTarget, Rates, Role, SimDevice};
use mysql_async::prelude::Queryable;
use serde_json::{json, Map, Value};

mod common;

use common::{assert_tree_copied, files_below};

const BIN: &str = env!("CARGO_BIN_EXE_etho-backup");

/// One device as HEAD's node lists it, built from the device's own documents.
fn head_entry(dev: &SimDevice, with_databases: bool) -> Value {
    let Value::Object(mut info) = dev.info() else {
        panic!("device info is not an object")
    };
    let mut take = |k: &str| info.remove(k).unwrap_or(Value::Null);
    let latest_cache = json!({
        "backup_filename": take("backup_filename"),
        "cache_file": take("cache_file"),
        "result_writer_type": take("result_writer_type"),
        "sqlite_source_path": take("sqlite_source_path"),
    });
    let previous = json!({
        "backup_filename": take("previous_backup_filename"),
        "date_time": take("previous_date_time"),
        "location": take("previous_location"),
        "user": take("previous_user"),
    });
    let current = take("experimental_info");
    let ip = dev.spec().identity.ip.to_string();
    let mut e: Map<String, Value> = info;
    e.insert(
        "experimental_info".into(),
        json!({"current": current, "previous": previous}),
    );
    e.insert("latest_cache".into(), latest_cache);
    for (k, v) in [
        ("ip", json!(ip)),
        ("last_ip", json!(ip)),
        ("active", json!(1)),
        ("ping", json!(1)),
        ("skip_scanning", json!(false)),
        ("ssh_key_installed", json!(false)),
    ] {
        e.insert(k.into(), v);
    }
    if with_databases {
        e.insert("databases".into(), dev.databases());
    }
    Value::Object(e)
}

/// HEAD's node, for `/devices` only; `startup` leaves `databases` out.
async fn start_head_node(
    fleet_devices: Vec<Arc<SimDevice>>,
    startup: Arc<AtomicBool>,
) -> SocketAddr {
    let app = Router::new().route(
        "/devices",
        get(move || {
            let devices = fleet_devices.clone();
            let startup = startup.clone();
            async move {
                let with = !startup.load(Ordering::SeqCst);
                let map: Map<String, Value> = devices
                    .iter()
                    .map(|d| (d.id().to_string(), head_entry(d, with)))
                    .collect();
                Json(Value::Object(map))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Runs a one-shot daemon; returns (exit success, stdout).
async fn one_shot(args: Vec<String>) -> (bool, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("--config")
            .arg("none")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.success(),
        format!("{stdout}\n--- stderr\n{stderr}"),
    )
}

/// The one-shot summary line of a device: `<name> (<id>): <status> - <message>`.
fn summary<'a>(out: &'a str, dev: &SimDevice) -> &'a str {
    let prefix = format!("{} ({}): ", dev.name(), dev.id());
    out.lines()
        .find(|l| l.starts_with(&prefix) && !l.ends_with("backup started"))
        .unwrap_or_else(|| panic!("no summary for {} in\n{out}", dev.name()))
}

async fn mariadb_counts(opts: &mysql_async::Opts, db: &str) -> BTreeMap<String, u64> {
    let mut conn = mysql_async::Conn::new(opts.clone()).await.unwrap();
    let tables: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
            (db,),
        )
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for t in tables {
        let n: Option<u64> = conn
            .query_first(format!("SELECT COUNT(*) FROM `{db}`.`{t}`"))
            .await
            .unwrap();
        out.insert(t, n.unwrap());
    }
    conn.disconnect().await.unwrap();
    out
}

fn sqlite_counts(path: &Path) -> BTreeMap<String, u64> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names
        .into_iter()
        .map(|t| {
            let n: i64 = conn
                .query_row(&format!("SELECT COUNT(*) FROM \"{t}\""), [], |r| r.get(0))
                .unwrap();
            (t, u64::try_from(n).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_back_up_behind_heads_node() {
    assert!(
        etho_sim::mariadbd_installed(),
        "this test needs mariadb-server installed"
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let roles = [
        Role::Tracker(DbKind::MariaDb),
        Role::Tracker(DbKind::Sqlite),
        Role::Recorder,
    ];
    let devices = common::always_running(&roles, 76, 9, "head");
    let fleet = Fleet::start(FleetConfig {
        devices,
        data_dir: root.join("fleet"),
        http_port: 0,
        rsync_port: 0,
        rsync: true,
        mariadb: MariaDbTarget::Auto,
        rates: Rates {
            rois: 3,
            fps: 10.0,
            snapshot_every: Duration::from_millis(500),
            video_chunk_every: Duration::from_millis(300),
            video_chunk_bytes: 16 * 1024,
            flush_every: Duration::from_millis(100),
            ..Rates::default()
        },
        mdns: false,
    })
    .await
    .unwrap();
    let devs: Vec<Arc<SimDevice>> = fleet.devices().to_vec();
    // Let each device write for a while, then bring the data to rest for exact comparisons.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !devs.iter().all(|d| d.snapshot().current.is_some()) {
        assert!(
            std::time::Instant::now() < deadline,
            "experiments did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet.hold_all(true);
    fleet.wait_at_rest(Duration::from_secs(30)).await.unwrap();

    let startup = Arc::new(AtomicBool::new(true));
    let node = start_head_node(devs.clone(), startup.clone()).await;
    let results = root.join("archive/results");
    let videos = root.join("archive/videos");
    let maria = fleet.mariadb().unwrap().clone();
    let targets = devs.iter().map(|d| d.id()).collect::<Vec<_>>().join(",");
    let s = |v: &str| v.to_string();
    let rsync_args = vec![
        s("rsync-backup"),
        s("-i"),
        node.to_string(),
        s("-r"),
        results.display().to_string(),
        s("-v"),
        videos.display().to_string(),
        s("--source"),
        fleet.rsync_source_template().unwrap(),
        s("--state-dir"),
        root.join("state/rsync").display().to_string(),
        s("-e"),
        targets.clone(),
    ];
    let mysql_args = |state: &str| {
        vec![
            s("mysql-backup"),
            s("-i"),
            node.to_string(),
            s("-r"),
            results.display().to_string(),
            s("--mysql-port"),
            maria.port.to_string(),
            s("--state-dir"),
            root.join(state).display().to_string(),
            s("-e"),
            devs[0].id().to_string(),
        ]
    };

    // 1. HEAD's first seconds: no `databases` anywhere.
    let (ok, out) = one_shot(rsync_args.clone()).await;
    assert!(ok, "rsync one-shot failed:\n{out}");
    let sqlite_line = summary(&out, &devs[1]);
    assert!(sqlite_line.contains(": success - "), "{sqlite_line}");
    assert!(!sqlite_line.contains("results skipped"), "{sqlite_line}");
    let recorder = summary(&out, &devs[2]);
    assert!(
        recorder.contains(": warning - ")
            && recorder.ends_with("results: waiting for the device's database list"),
        "{recorder}"
    );
    let (ok, out) = one_shot(mysql_args("state/mysql1")).await;
    assert!(ok, "mysql one-shot failed:\n{out}");
    assert!(summary(&out, &devs[0]).contains(": success - "), "{out}");

    // 2. Steady state: the same through `databases`.
    startup.store(false, Ordering::SeqCst);
    let (ok, out) = one_shot(rsync_args).await;
    assert!(ok, "rsync one-shot failed:\n{out}");
    for d in &devs[1..] {
        assert!(summary(&out, d).contains(": success - "), "{out}");
    }
    let (ok, out) = one_shot(mysql_args("state/mysql2")).await;
    assert!(ok, "mysql one-shot failed:\n{out}");
    assert!(summary(&out, &devs[0]).contains(": success - "), "{out}");

    // 3. Every copy equals its source.
    for d in &devs[1..] {
        let results_of = d.root().join("results").join(d.id());
        assert_tree_copied(&results_of, &results.join(d.id()), d.name());
        let videos_of = d.root().join("videos").join(d.id());
        assert_tree_copied(&videos_of, &videos.join(d.id()), d.name());
    }
    assert_eq!(
        files_below(&devs[1].root().join("results").join(devs[1].id())).len(),
        1,
        "one SQLite experiment file"
    );
    assert!(
        !files_below(&videos.join(devs[2].id())).is_empty(),
        "video chunks"
    );
    let exp = devs[0].snapshot().current.unwrap();
    let mirror = results
        .join(devs[0].id())
        .join(devs[0].name())
        .join(&exp.stamp)
        .join(&exp.backup_filename);
    let admin = fleet.mariadb_admin_opts().unwrap().clone();
    let source = mariadb_counts(&admin, &format!("{}_db", devs[0].name())).await;
    assert!(source["ROI_1"] > 5, "too little data to prove anything");
    assert_eq!(sqlite_counts(&mirror), source, "MariaDB mirror row counts");
    fleet.stop().await;
}
