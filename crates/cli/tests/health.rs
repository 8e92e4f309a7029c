//! Truthful health on a simulated lab (real mariadbd, real rsync daemons) with the node and both
//! backup daemons running as `etho-backup` processes.
//!
//! Four devices: a MariaDB tracker (`MYSQL`), two SQLite trackers (`SQLITE`, `UNPLUGGED`) and an
//! SQLite tracker whose rsync daemon refuses every transfer (`DENIED`). The MySQL daemon cycles
//! every 20 s, the rsync daemon every 5 s; the node runs with `--lag-warn 30 --at-risk-after 50`.
//! One run checks, in order:
//!
//! 1. `DENIED` becomes `stale` once three rsync intervals pass without a success, and its reason
//!    quotes rsync's error;
//! 2. for 60 s the MySQL daemon is stopped and `UNPLUGGED` is unplugged: `MYSQL`'s exposure grows
//!    by at least 55 s and its state becomes `lagging`; `UNPLUGGED`'s exposure keeps growing until
//!    it is `at_risk`, with a reason naming it;
//! 3. the restarted MySQL daemon still has `MYSQL`'s `last_success`, and `MYSQL` is `safe` again
//!    within two intervals;
//! 4. `SQLITE` is `safe` while it runs and `idle` once its experiment has ended and is on the node,
//!    its `overall_status` `partial` as the seed says whenever no job is running.
//!
//! At every sample, a device whose backups run reports an exposure within one interval plus one
//! poll plus 5 s of the truth read from its own database (now minus its newest frame), and never
//! below it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use etho_sim::{DbKind, Fault, Fleet, FleetConfig, MariaDbTarget, Rates, Role, SimDevice};
use mysql_async::prelude::Queryable;
use serde_json::Value;

mod common;
use common::*;

const MYSQL: usize = 0;
const SQLITE: usize = 1;
const UNPLUGGED: usize = 2;
const DENIED: usize = 3;
const MYSQL_INTERVAL: f64 = 20.0;
const RSYNC_INTERVAL: f64 = 5.0;
/// The node's --poll-interval (LabSetup::node_args).
const POLL: f64 = 0.5;
const LAG_WARN: f64 = 30.0;
const AT_RISK: f64 = 50.0;
const ROIS: u32 = 2;

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The device's newest frame, from its own database: `METADATA.date_time` plus its largest ROI `t`.
async fn device_newest(fleet: &Fleet, dev: &SimDevice) -> Option<f64> {
    match dev.spec().role {
        Role::Tracker(DbKind::MariaDb) => {
            let opts = fleet.mariadb_admin_opts()?.clone();
            let db = format!("{}_db", dev.name());
            let opts = mysql_async::OptsBuilder::from_opts(opts).db_name(Some(db));
            let mut conn = mysql_async::Conn::new(opts).await.ok()?;
            let start: Option<String> = conn
                .query_first("SELECT value FROM METADATA WHERE field = 'date_time'")
                .await
                .ok()?;
            let mut last: Option<i64> = None;
            for n in 1..=ROIS {
                let t: Option<Option<i64>> = conn
                    .query_first(format!("SELECT MAX(t) FROM ROI_{n}"))
                    .await
                    .ok()?;
                last = last.max(t.flatten());
            }
            let _ = conn.disconnect().await;
            Some(start?.parse::<f64>().ok()? + last? as f64 / 1000.0)
        }
        _ => {
            let exp = dev.snapshot().current?;
            let path: PathBuf = dev
                .root()
                .join("results")
                .join(dev.id())
                .join(dev.name())
                .join(&exp.stamp)
                .join(&exp.backup_filename);
            let conn = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .ok()?;
            conn.busy_timeout(Duration::from_secs(5)).ok()?;
            let start: String = conn
                .query_row(
                    "SELECT value FROM METADATA WHERE field = 'date_time'",
                    [],
                    |r| r.get(0),
                )
                .ok()?;
            let mut last: Option<i64> = None;
            for n in 1..=ROIS {
                let t: Option<i64> = conn
                    .query_row(&format!("SELECT MAX(t) FROM ROI_{n}"), [], |r| r.get(0))
                    .ok()?;
                last = last.max(t);
            }
            Some(start.parse::<f64>().ok()? + last? as f64 / 1000.0)
        }
    }
}

struct Health {
    state: String,
    exposure: Option<f64>,
    reasons: Vec<String>,
    overall: String,
    rsync_processing: bool,
}

fn health(status: &Value, id: &str) -> Option<Health> {
    let dev = status["unified_devices"].get(id)?;
    let h = &dev["health"];
    Some(Health {
        state: h["state"].as_str()?.to_string(),
        exposure: h["exposure_s"].as_f64(),
        reasons: h["reasons"]
            .as_array()?
            .iter()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect(),
        overall: dev["overall_status"].as_str()?.to_string(),
        rsync_processing: dev["rsync_backup"]["processing"] == true,
    })
}

/// Checks one sample's exposure against the device's own newest frame: never below the truth
/// (the copy cannot be newer than the device), never above it by more than one interval, one
/// poll and 5 s. `read_at` is when the device was read, just after the reply.
fn check_accuracy(name: &str, exposure: f64, newest: f64, read_at: f64, interval: f64) -> f64 {
    let truth = read_at - newest;
    // The reply was computed up to ~1 s (its cache) before the device was read.
    assert!(
        exposure >= truth - 2.0,
        "{name}: exposure {exposure:.1} s is below the truth {truth:.1} s"
    );
    let bound = interval + POLL + 5.0;
    assert!(
        exposure <= truth + bound,
        "{name}: exposure {exposure:.1} s is more than {bound} s above the truth {truth:.1} s"
    );
    exposure - truth
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_lab() {
    if !etho_sim::mariadbd_installed() || !rsync_installed() {
        panic!("the health test needs mariadb-server and rsync installed");
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let setup = LabSetup::new(root);
    let logs = &setup.logs;
    let roles = [
        Role::Tracker(DbKind::MariaDb),
        Role::Tracker(DbKind::Sqlite),
        Role::Tracker(DbKind::Sqlite),
        Role::Tracker(DbKind::Sqlite),
    ];
    let mut devices = always_running(&roles, 75, 11, "health");
    devices[DENIED].faults.push(Fault::RsyncDenied);
    let fleet = Fleet::start(FleetConfig {
        devices,
        data_dir: root.join("fleet"),
        http_port: 0,
        rsync_port: 0,
        rsync: true,
        mariadb: MariaDbTarget::Auto,
        rates: Rates {
            rois: ROIS,
            fps: 5.0,
            snapshot_every: Duration::from_secs(5),
            snapshot_bytes: 2_000,
            flush_every: Duration::from_millis(200),
            ..Rates::default()
        },
        mdns: false,
    })
    .await
    .unwrap();
    let maria_port = fleet.mariadb().unwrap().port;

    let (lag_warn, at_risk) = (LAG_WARN.to_string(), AT_RISK.to_string());
    let node_args = setup.node_args(
        &fleet.device_addresses(),
        &[
            "--no-archive",
            "--lag-warn",
            &lag_warn,
            "--at-risk-after",
            &at_risk,
        ],
    );
    let mysql_interval = (MYSQL_INTERVAL as u64).to_string();
    let mysql_cmd = setup.mysql_args(maria_port, &mysql_interval);
    let source = fleet.rsync_source_template().unwrap();
    let rsync_cmd = setup.rsync_args(&source, &(RSYNC_INTERVAL as u64).to_string());
    let procs = vec![
        Proc::spawn("node", &node_args, logs),
        Proc::spawn("rsync-backup", &rsync_cmd, logs),
    ];
    let mut lab = setup.lab(procs);
    let devs: Vec<_> = fleet.devices().to_vec();
    let ids: Vec<String> = devs.iter().map(|d| d.id().to_string()).collect();
    let id = |i: usize| ids[i].as_str();
    // The MySQL daemon starts once the node lists the devices, so its first cycle copies.
    lab.wait_for(
        "the node to list every device running",
        "/devices",
        Duration::from_secs(30),
        |d| ids.iter().all(|i| d[i]["status"] == "running"),
    )
    .await;
    lab.procs
        .push(Proc::spawn("mysql-backup", &mysql_cmd, logs));

    // Every device backed up once with a known newest frame, except the refused one.
    lab.wait_for(
        "a first copy of every device",
        "/backup/status",
        Duration::from_secs(60),
        |st| {
            [MYSQL, SQLITE, UNPLUGGED].iter().all(|&i| {
                let h = &st["unified_devices"][id(i)]["health"];
                h["newest_copied_at"].is_number() && h["state"] == "safe"
            })
        },
    )
    .await;

    // 1. rsync keeps failing: stale after three intervals, the error quoted. Meanwhile, over a
    //    whole MySQL interval, both running devices' exposures are checked against the truth.
    let phase = Instant::now();
    let mut worst = [f64::MIN; 2];
    let st = loop {
        let st = lab.get("/backup/status").await;
        let read_at = now();
        for (k, (i, interval)) in [(MYSQL, MYSQL_INTERVAL), (SQLITE, RSYNC_INTERVAL)]
            .into_iter()
            .enumerate()
        {
            let h = health(&st, id(i)).unwrap();
            assert_eq!(h.state, "safe", "{}: {:?}", devs[i].name(), h.reasons);
            let newest = device_newest(&fleet, &devs[i]).await.unwrap();
            let d = check_accuracy(
                devs[i].name(),
                h.exposure.unwrap(),
                newest,
                read_at,
                interval,
            );
            worst[k] = worst[k].max(d);
        }
        let stale = health(&st, id(DENIED)).is_some_and(|h| h.state == "stale");
        if stale && phase.elapsed().as_secs_f64() > MYSQL_INTERVAL + 2.0 {
            break st;
        }
        assert!(
            phase.elapsed() < Duration::from_secs(40),
            "the refused device never became stale: {:?}",
            health(&st, id(DENIED)).map(|h| (h.state, h.reasons))
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!(
        "running: exposure minus truth at most {:.1} s (MariaDB) and {:.1} s (SQLite)",
        worst[0], worst[1]
    );
    let denied = health(&st, id(DENIED)).unwrap();
    assert!(
        denied
            .reasons
            .iter()
            .any(|r| r.starts_with("rsync-backup has failed") && r.contains("access denied")),
        "{:?}",
        denied.reasons
    );
    let failures = st["rsync_backup"]["devices"][id(DENIED)]["failures"]
        .as_u64()
        .unwrap();
    assert!(failures >= 3, "{failures} failures");

    // 2. The MySQL daemon stops for 60 s and a device is unplugged meanwhile.
    let before = lab.get("/backup/status").await;
    let mysql_entry = |st: &Value| st["mysql_backup"][id(MYSQL)].clone();
    let last_success = mysql_entry(&before)["last_success"].as_i64().unwrap();
    let count = mysql_entry(&before)["count"].as_u64().unwrap();
    let mysql_proc = lab.procs.pop().unwrap();
    assert_eq!(mysql_proc.name, "mysql-backup");
    drop(mysql_proc);
    devs[UNPLUGGED].set_offline(true);
    let stop = Instant::now();
    let mut first: [Option<f64>; 4] = [None; 4];
    let mut last: [Option<f64>; 4] = [None; 4];
    let mut seen_lagging = false;
    let mut unplugged_at_risk: Option<Health> = None;
    let mut samples = 0;
    let mut deviation = (f64::MAX, f64::MIN);
    let mut accurate = 0;
    while stop.elapsed() < Duration::from_secs(60) {
        let st = lab.get("/backup/status").await;
        let read_at = now();
        samples += 1;
        let m = health(&st, id(MYSQL)).unwrap();
        let u = health(&st, id(UNPLUGGED)).unwrap();
        let q = health(&st, id(SQLITE)).unwrap();
        seen_lagging |= m.state == "lagging";
        for (i, h) in [(MYSQL, &m), (UNPLUGGED, &u)] {
            let e = h.exposure.unwrap();
            // A job of the unplugged device that was under way may still land in its first
            // seconds; after that nothing can make its exposure shrink.
            let settled = i == MYSQL || stop.elapsed() > Duration::from_secs(10);
            if let (Some(prev), true) = (last[i], settled) {
                assert!(
                    e >= prev - 0.2,
                    "{}: exposure went from {prev} to {e}",
                    devs[i].name()
                );
            }
            if settled {
                first[i] = first[i].or(Some(e));
            }
            last[i] = Some(e);
        }
        if u.state == "at_risk" && unplugged_at_risk.is_none() {
            unplugged_at_risk = Some(u);
        }
        // The SQLite device is untouched by all this.
        assert_eq!(q.state, "safe", "{}: {:?}", devs[SQLITE].name(), q.reasons);
        if !q.rsync_processing {
            assert_eq!(q.overall, "partial");
        }
        if let Some(newest) = device_newest(&fleet, &devs[SQLITE]).await {
            let d = check_accuracy(
                devs[SQLITE].name(),
                q.exposure.unwrap(),
                newest,
                read_at,
                RSYNC_INTERVAL,
            );
            deviation = (deviation.0.min(d), deviation.1.max(d));
            accurate += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let grown = last[MYSQL].unwrap() - first[MYSQL].unwrap();
    assert!(
        grown >= 55.0,
        "exposure grew by {grown:.1} s in 60 s ({samples} samples)"
    );
    assert!(
        seen_lagging,
        "the device never showed lagging while its daemon was stopped"
    );
    let at_risk = unplugged_at_risk.expect("the unplugged device never became at_risk");
    let name = devs[UNPLUGGED].name();
    assert!(
        at_risk
            .reasons
            .iter()
            .any(|r| r.contains(&format!("exist only on {name} ("))
                && (r.contains("unreachable") || r.contains("offline"))),
        "{:?}",
        at_risk.reasons
    );
    eprintln!(
        "daemon stopped 60 s: exposure grew {grown:.1} s; {samples} samples; SQLite exposure minus truth in [{:.1}, {:.1}] s over {accurate} samples",
        deviation.0, deviation.1
    );
    assert!(
        accurate * 2 > samples,
        "the SQLite device's own newest frame was read at {accurate} of {samples} samples"
    );
    assert!(at_risk.exposure.unwrap() > AT_RISK);
    let kept_growing = last[UNPLUGGED].unwrap() - first[UNPLUGGED].unwrap();
    assert!(
        kept_growing >= 45.0,
        "the unplugged device's exposure grew by {kept_growing:.1} s in 50 s"
    );

    // 3. The MySQL daemon comes back with its last success, and the device is safe again.
    let restart = Instant::now();
    lab.procs
        .push(Proc::spawn("mysql-backup-2", &mysql_cmd, logs));
    let daemon = format!("http://127.0.0.1:{}/status", setup.mysql_port);
    let first_answer = loop {
        lab.procs.last_mut().unwrap().check_alive();
        if let Ok(r) = lab.client.get(&daemon).send().await {
            if let Ok(doc) = r.json::<Value>().await {
                break doc;
            }
        }
        assert!(
            restart.elapsed() < Duration::from_secs(20),
            "the restarted daemon never answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let entry = &first_answer[id(MYSQL)];
    let kept = entry["last_success"].as_i64();
    if entry["count"].as_u64() == Some(count) || entry["processing"] == true {
        // No job of the new process has finished: what it shows is what it loaded.
        assert_eq!(kept, Some(last_success), "{entry}");
    } else {
        assert!(kept.is_some_and(|t| t >= last_success), "{entry}");
    }
    eprintln!("restarted daemon's first answer: {entry}");
    lab.wait_for(
        "the MariaDB device safe again",
        "/backup/status",
        Duration::from_secs_f64(2.0 * MYSQL_INTERVAL),
        |st| health(st, id(MYSQL)).is_some_and(|h| h.state == "safe"),
    )
    .await;
    eprintln!(
        "safe again {:.1} s after the restart",
        restart.elapsed().as_secs_f64()
    );
    // From now on its exposure is as accurate as the SQLite device's.
    for _ in 0..5 {
        let st = lab.get("/backup/status").await;
        let read_at = now();
        let m = health(&st, id(MYSQL)).unwrap();
        assert_eq!(m.state, "safe", "{:?}", m.reasons);
        let newest = device_newest(&fleet, &devs[MYSQL]).await.unwrap();
        let d = check_accuracy(
            devs[MYSQL].name(),
            m.exposure.unwrap(),
            newest,
            read_at,
            MYSQL_INTERVAL,
        );
        eprintln!("MariaDB exposure minus truth: {d:.1} s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 4. The SQLite device's experiment ends: idle once the end is on the node, still partial.
    devs[SQLITE].set_held(true);
    let st = lab
        .wait_for(
            "the stopped SQLite device idle",
            "/backup/status",
            Duration::from_secs(30),
            |st| health(st, id(SQLITE)).is_some_and(|h| h.state == "idle" && !h.rsync_processing),
        )
        .await;
    let q = health(&st, id(SQLITE)).unwrap();
    assert_eq!((q.exposure, q.overall.as_str()), (Some(0.0), "partial"));
    eprintln!("whole test: {:.1} s", started.elapsed().as_secs_f64());

    drop(lab);
    fleet.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "the health test took {:?}",
        started.elapsed()
    );
}
