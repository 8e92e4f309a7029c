//! End to end: a simulated lab (real mariadbd, real rsync daemons) with the node and both backup
//! daemons running as `etho-backup` processes, exactly as a lab runs them.
//!
//! While devices run, backups must happen and the node must see every device with its status.
//! Once experiments are held (data at rest), the next backup cycle must make every MariaDB
//! device's mirror and every SQLite device's result file (written in WAL mode, copied as a
//! single-file database) equal its source row by row, and every other file and video chunk equal
//! its source byte for byte; `/backup/status` must show MariaDB devices `success` and
//! the others `partial`. Then a device is unplugged: the node reports it `offline` and its last
//! backup stays as it was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use etho_sim::{DbKind, Fleet, FleetConfig, MariaDbTarget, Rates, Role};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_lab_is_backed_up_completely() {
    if !etho_sim::mariadbd_installed() || !rsync_installed() {
        panic!("the end-to-end test needs mariadb-server and rsync installed");
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let setup = LabSetup::new(root);
    let (logs, results, videos) = (&setup.logs, &setup.results, &setup.videos);

    // The fleet: two MariaDB trackers, two SQLite trackers, one video recorder.
    let roles = [
        Role::Tracker(DbKind::MariaDb),
        Role::Tracker(DbKind::Sqlite),
        Role::Tracker(DbKind::MariaDb),
        Role::Tracker(DbKind::Sqlite),
        Role::Recorder,
    ];
    let devices = always_running(&roles, 74, 5, "e2e");
    let fleet = Fleet::start(FleetConfig {
        devices,
        data_dir: root.join("fleet"),
        http_port: 0,
        rsync_port: 0,
        rsync: true,
        mariadb: MariaDbTarget::Auto,
        rates: Rates {
            rois: 4,
            fps: 10.0,
            snapshot_every: Duration::from_secs(1),
            snapshot_bytes: 20_000,
            video_chunk_every: Duration::from_millis(700),
            video_chunk_bytes: 64 * 1024,
            flush_every: Duration::from_millis(200),
            ..Rates::default()
        },
        mdns: false,
    })
    .await
    .unwrap();
    let maria = fleet.mariadb().unwrap().clone();

    // The node and both daemons, as separate processes with short intervals.
    let source = fleet.rsync_source_template().unwrap();
    let procs = vec![
        Proc::spawn(
            "node",
            &setup.node_args(&fleet.device_addresses(), &[]),
            logs,
        ),
        Proc::spawn("mysql-backup", &setup.mysql_args(maria.port, "2"), logs),
        Proc::spawn("rsync-backup", &setup.rsync_args(&source, "2"), logs),
    ];
    let mut lab = setup.lab(procs);
    let devs: Vec<_> = fleet.devices().to_vec();
    let ids: Vec<String> = devs.iter().map(|d| d.id().to_string()).collect();
    let is_mariadb = |i: usize| devs[i].spec().role == Role::Tracker(DbKind::MariaDb);

    // 1. The node lists every device with the status the device reports.
    let listed = lab
        .wait_for(
            "every device running",
            "/devices",
            Duration::from_secs(60),
            |d| {
                ids.iter().enumerate().all(|(i, id)| {
                    let want = if devs[i].spec().role == Role::Recorder {
                        "recording"
                    } else {
                        "running"
                    };
                    d[id]["status"] == want
                })
            },
        )
        .await;
    for (i, d) in devs.iter().enumerate() {
        assert_eq!(listed[&ids[i]]["name"], d.name());
        assert_eq!(listed[&ids[i]]["ip"], d.spec().identity.ip.to_string());
    }

    // 2. Backups happen while devices run.
    lab.wait_for(
        "live backups",
        "/backup/status",
        Duration::from_secs(60),
        |st| {
            (0..ids.len()).all(|i| {
                let rsync_ok = side(st, &ids[i], "rsync_backup")["count"]
                    .as_u64()
                    .unwrap_or(0)
                    > 0;
                let mysql_ok = !is_mariadb(i)
                    || side(st, &ids[i], "mysql_backup")["progress"]["status"] == "success";
                rsync_ok && mysql_ok
            })
        },
    )
    .await;

    // 3. Data at rest: experiments stop, files close, databases get their stop time.
    fleet.hold_all(true);
    fleet.wait_at_rest(Duration::from_secs(30)).await.unwrap();
    let rest = etho_model::now_epoch() + 1;
    let status = lab
        .wait_for(
            "a full cycle of both daemons after the data came to rest",
            "/backup/status",
            Duration::from_secs(60),
            |st| {
                (0..ids.len()).all(|i| {
                    let dev = &st["unified_devices"][&ids[i]];
                    if is_mariadb(i) {
                        ran_since(st, &ids[i], "mysql_backup", rest)
                            && ran_since(st, &ids[i], "rsync_backup", rest)
                            && dev["overall_status"] == "success"
                    } else {
                        ran_since(st, &ids[i], "rsync_backup", rest)
                            && dev["overall_status"] == "partial"
                    }
                })
            },
        )
        .await;
    for (i, id) in ids.iter().enumerate() {
        let want = if is_mariadb(i) { "success" } else { "partial" };
        assert_eq!(
            status["unified_devices"][id]["overall_status"], want,
            "{id}"
        );
    }

    // 4. Mirrors equal sources.
    let admin = fleet.mariadb_admin_opts().unwrap().clone();
    for (i, dev) in devs.iter().enumerate() {
        let id = dev.id();
        if is_mariadb(i) {
            let exp = dev.snapshot().current.unwrap();
            let mirror = results
                .join(id)
                .join(dev.name())
                .join(&exp.stamp)
                .join(&exp.backup_filename);
            assert!(mirror.is_file(), "no mirror {}", mirror.display());
            let source = mariadb_tables(&admin, &format!("{}_db", dev.name())).await;
            let copy = sqlite_tables(&mirror);
            assert_eq!(
                source.keys().collect::<Vec<_>>(),
                copy.keys().collect::<Vec<_>>(),
                "{}: tables differ",
                dev.name()
            );
            for (table, (cols, rows)) in &source {
                let (ccols, crows) = &copy[table];
                assert_eq!(cols, ccols, "{}: columns of {table}", dev.name());
                assert_eq!(rows.len(), crows.len(), "{}: rows of {table}", dev.name());
                if let Some((a, b)) = rows.iter().zip(crows).find(|(a, b)| a != b) {
                    panic!(
                        "{}: {table} differs from its source: {a:?} vs {b:?}",
                        dev.name()
                    );
                }
            }
            assert!(
                source["ROI_1"].1.len() > 10,
                "too little data to prove anything"
            );
            assert!(source["IMG_SNAPSHOTS"].1.len() > 1);
        } else {
            let source = dev.root().join("results").join(id);
            if dev.spec().role == Role::Tracker(DbKind::Sqlite) {
                assert_eq!(
                    files_below(&source).len(),
                    1,
                    "{}: one experiment file, no -wal left",
                    dev.name()
                );
            }
            assert_tree_copied(&source, &results.join(id), dev.name());
        }
        let device_videos = dev.root().join("videos").join(id);
        assert_tree_copied(&device_videos, &videos.join(id), dev.name());
        if dev.spec().role == Role::Recorder {
            let chunks = files_below(&device_videos).len();
            assert!(chunks >= 2, "the recorder wrote {chunks} chunks");
        }
    }

    // Both daemons run with the default --umask 027: nothing they wrote is for others, and
    // their state directories are private.
    assert_private(root, &[results, videos]);

    // 5. Unplug a MariaDB device: reported offline, its backup stays intact while the others
    //    keep being backed up.
    let gone = 2;
    assert!(is_mariadb(gone));
    let gone_id = ids[gone].clone();
    let before_results = files_below(&results.join(&gone_id));
    let before_videos = files_below(&videos.join(&gone_id));
    assert!(!before_results.is_empty());
    devs[gone].set_offline(true);
    lab.wait_for(
        "the unplugged device offline",
        "/devices",
        Duration::from_secs(30),
        |d| d[&gone_id]["status"] == "offline",
    )
    .await;
    let offline_at = etho_model::now_epoch() + 1;
    let status = lab
        .wait_for(
            "another cycle with the device offline",
            "/backup/status",
            Duration::from_secs(60),
            |st| {
                ran_since(st, &ids[0], "mysql_backup", offline_at)
                    && ran_since(st, &ids[1], "rsync_backup", offline_at)
            },
        )
        .await;
    assert_eq!(
        status["unified_devices"][&gone_id]["name"],
        devs[gone].name(),
        "the offline device is still listed with its last backup"
    );
    assert_eq!(files_below(&results.join(&gone_id)), before_results);
    assert_eq!(files_below(&videos.join(&gone_id)), before_videos);
    let exp = devs[gone].snapshot().current.unwrap();
    let mirror = results
        .join(&gone_id)
        .join(devs[gone].name())
        .join(&exp.stamp)
        .join(&exp.backup_filename);
    assert_eq!(
        sqlite_tables(&mirror),
        mariadb_tables(&admin, &format!("{}_db", devs[gone].name())).await
    );

    drop(lab);
    fleet.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(180),
        "the end-to-end test took {:?}",
        started.elapsed()
    );
}

/// No file or directory below `archives` has a permission bit for others, and the daemons' state
/// directories are 0700.
fn assert_private(root: &std::path::Path, archives: &[&std::path::Path]) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().permissions().mode();
    for state in ["state/mysql", "state/rsync", "state/node"] {
        assert_eq!(mode(&root.join(state)) & 0o777, 0o700, "{state}");
    }
    let mut stack: Vec<std::path::PathBuf> = archives.iter().map(|p| p.to_path_buf()).collect();
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let m = mode(&e.path());
            assert_eq!(
                m & 0o7027,
                0,
                "{} has mode {:o}",
                e.path().display(),
                m & 0o7777
            );
            checked += 1;
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(checked > 10, "only {checked} archive entries");
}
