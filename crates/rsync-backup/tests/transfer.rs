//! Engine jobs against a real `rsync --daemon` on loopback serving fixture device trees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;
use etho_daemon::Engine;
use etho_devicekit::rsyncd::{RsyncDaemon, RsyncdOptions};
use etho_model::status::ProgressStatus;
use etho_rsync_backup::Kind;
use serde_json::json;

fn msg(o: &etho_daemon::JobOutcome) -> String {
    o.progress.message.clone().unwrap_or_default()
}

/// A file rewritten with the same size within the same second as the last copy (the last write
/// to a live database, at rest) must be copied again: rsync's default quick check compares
/// mtimes only to the second.
#[tokio::test]
async fn same_size_rewrite_within_the_same_second_is_copied() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(21);
    let tree = populate(&data, &id, "ETHOSCOPE_021");
    let chunk = tree
        .videos()
        .join("ETHOSCOPE_021/2025-07-11_09-00-00/chunk.h264");
    let set_mtime = |nanos: u32| {
        let t = std::time::UNIX_EPOCH + Duration::new(1_752_224_400, nanos);
        fs::File::options()
            .write(true)
            .open(&chunk)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    write_file(&chunk, &bytes(1, 4096));
    set_mtime(100_000_000);
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let engine = engine(work.path(), &rsyncd.url());
    let dev = device(&id, "ETHOSCOPE_021", "127.0.0.1", true);
    let first = engine.backup(dev.clone(), ctx(&id)).await;
    assert_eq!(first.status(), ProgressStatus::Success, "{}", msg(&first));

    write_file(&chunk, &bytes(2, 4096));
    set_mtime(900_000_000);
    let second = engine.backup(dev.clone(), ctx(&id)).await;
    assert_eq!(second.status(), ProgressStatus::Success, "{}", msg(&second));
    let copy = work
        .path()
        .join("archive/videos")
        .join(&id)
        .join("ETHOSCOPE_021/2025-07-11_09-00-00/chunk.h264");
    assert!(
        fs::read(&copy).unwrap() == bytes(2, 4096),
        "the rewrite was not copied"
    );
    assert_mirror(
        &tree.videos(),
        &work.path().join("archive/videos").join(&id),
    );
}

#[tokio::test]
async fn pulls_byte_identical_trees_then_nothing_then_new_files() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(1);
    let tree = populate(&data, &id, "ETHOSCOPE_001");
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let engine = engine(work.path(), &rsyncd.url());
    let dev = device(&id, "ETHOSCOPE_001", "127.0.0.1", true);

    let first = engine.backup(dev.clone(), ctx(&id)).await;
    assert_eq!(first.status(), ProgressStatus::Success, "{}", msg(&first));
    let results = work.path().join("archive/results").join(&id);
    let videos = work.path().join("archive/videos").join(&id);
    assert_mirror(&tree.results(), &results);
    assert_mirror(&tree.videos(), &videos);
    // Exactly the device's own directories exist in the archive.
    assert_eq!(
        all_paths(&work.path().join("archive/results")).len(),
        all_paths(&results).len() + 1
    );
    assert_eq!(first.progress.extra["files_transferred"], json!(5));
    assert!(first.progress.extra["bytes_transferred"].as_u64().unwrap() > 450_000);
    // synced reports this device's subtree, counted like find/stat.
    let synced = first.synced.clone().unwrap();
    let (rf, rb) = find_count(&results);
    let (vf, vb) = find_count(&videos);
    assert_eq!(synced["results"]["local_files"], json!(rf));
    assert_eq!(synced["results"]["disk_usage_bytes"], json!(rb));
    assert_eq!(synced["videos"]["local_files"], json!(vf));
    assert_eq!(synced["videos"]["disk_usage_bytes"], json!(vb));
    assert_eq!(
        synced["videos"]["directory"],
        json!(videos.canonicalize().unwrap().to_string_lossy())
    );
    assert_eq!(
        synced["videos"]["disk_usage_human"],
        json!(etho_model::size::format_bytes(vb))
    );

    // Second run: nothing transferred, nothing touched.
    let before = listing(&work.path().join("archive"), &|_| false);
    let second = engine.backup(dev.clone(), ctx(&id)).await;
    assert_eq!(second.status(), ProgressStatus::Success, "{}", msg(&second));
    assert_eq!(second.progress.extra["files_transferred"], json!(0));
    assert!(
        msg(&second).contains("Results: no changes"),
        "{}",
        msg(&second)
    );
    assert!(
        msg(&second).contains("Videos: no changes"),
        "{}",
        msg(&second)
    );
    assert_eq!(listing(&work.path().join("archive"), &|_| false), before);

    // New files and a grown database are picked up; sizes follow without a rescan.
    write_file(
        &tree
            .videos()
            .join("ETHOSCOPE_001/2025-07-11_09-00-00/new.h264"),
        &bytes(9, 77_777),
    );
    make_db(&tree.db_path("2025-07-10_10-00-00"), 50);
    let third = engine.backup(dev.clone(), ctx(&id)).await;
    assert_eq!(third.status(), ProgressStatus::Success, "{}", msg(&third));
    assert_eq!(third.progress.extra["files_transferred"], json!(2));
    assert_mirror(&tree.results(), &results);
    assert_mirror(&tree.videos(), &videos);
    let (vf, vb) = find_count(&videos);
    assert_eq!(
        engine
            .sizes()
            .get(Kind::Videos, &id)
            .map(|s| (s.files, s.bytes)),
        Some((vf, vb))
    );
    let (rf, rb) = find_count(&results);
    assert_eq!(
        engine
            .sizes()
            .get(Kind::Results, &id)
            .map(|s| (s.files, s.bytes)),
        Some((rf, rb))
    );
    // Nothing of rsync's in the archive, and no leftovers in staging.
    assert!(temp_files(&work.path().join("archive")).is_empty());
    assert!(listing(&work.path().join("state/staging"), &|_| false)
        .values()
        .all(|n| *n == Node::Dir));
}

#[tokio::test]
async fn device_without_sqlite_gets_videos_only() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(2);
    let tree = populate(&data, &id, "ETHOSCOPE_002");
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let engine = engine(work.path(), &rsyncd.url());
    let dev = device(&id, "ETHOSCOPE_002", "127.0.0.1", false);
    assert_eq!(engine.kinds_for(&dev), vec![Kind::Videos]);
    let out = engine.backup(dev, ctx(&id)).await;
    assert_eq!(out.status(), ProgressStatus::Success, "{}", msg(&out));
    assert!(!work.path().join("archive/results").join(&id).exists());
    assert_mirror(
        &tree.videos(),
        &work.path().join("archive/videos").join(&id),
    );
    let synced = out.synced.unwrap();
    assert!(synced.get("results").is_none());
    assert!(synced.get("videos").is_some());

    // Results-only mode refuses such a device up front.
    let mut c = engine_config(work.path(), &rsyncd.url());
    c.backup_videos = false;
    let results_only = etho_rsync_backup::RsyncEngine::new(c).unwrap();
    assert!(results_only
        .accepts(&device(&id, "ETHOSCOPE_002", "127.0.0.1", false))
        .is_err());
}

#[tokio::test]
async fn hostile_tree_cannot_write_outside_its_own_directory() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(3);
    let other = machine_id(4);
    let tree = populate(&data, &id, "ETHOSCOPE_003");
    // The device also carries another device's folder (a cloned SD card) ...
    write_file(
        &data.join("results").join(&other).join("stolen.db"),
        b"not yours",
    );
    write_file(
        &data.join("videos").join(&other).join("x.h264"),
        b"not yours",
    );
    // ... nested copies of another id inside its own tree (harmless: they stay inside) ...
    write_file(&tree.videos().join(&other).join("inside.h264"), b"inside");
    // ... and symlinks out of its tree.
    std::os::unix::fs::symlink("/etc", tree.results().join("etc")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", tree.videos().join("passwd")).unwrap();
    std::os::unix::fs::symlink(
        format!("../../{other}"),
        tree.results().join("ETHOSCOPE_003/up"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "2025-07-10_10-00-00",
        tree.results().join("ETHOSCOPE_003/latest"),
    )
    .unwrap();

    // The archive already holds another device's data and a planted symlink pointing outside.
    let outside = work.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let archive = work.path().join("archive");
    write_file(
        &archive.join("results").join(&other).join("real.db"),
        b"other device data",
    );
    fs::create_dir_all(archive.join("videos").join(&id)).unwrap();
    std::os::unix::fs::symlink(
        &outside,
        archive.join("videos").join(&id).join("ETHOSCOPE_003"),
    )
    .unwrap();
    let other_before = listing(&archive.join("results").join(&other), &|_| false);

    let opts = RsyncdOptions {
        munge_symlinks: false, // serve the device's links as they are, as ssh would
        ..RsyncdOptions::default()
    };
    let rsyncd = RsyncDaemon::start_with(&data, opts).unwrap();
    let engine = engine(work.path(), &rsyncd.url());
    let out = engine
        .backup(device(&id, "ETHOSCOPE_003", "127.0.0.1", true), ctx(&id))
        .await;
    assert_ne!(out.status(), ProgressStatus::Error, "{}", msg(&out));
    assert!(
        msg(&out).contains("pointing outside the device's tree not copied"),
        "{}",
        msg(&out)
    );

    // Only this device's directories were written.
    let top: Vec<String> = fs::read_dir(archive.join("results"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(top, {
        let mut v = vec![id.clone(), other.clone()];
        v.sort();
        v
    });
    assert!(!archive.join("videos").join(&other).exists());
    assert_eq!(
        listing(&archive.join("results").join(&other), &|_| false),
        other_before
    );
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote through a planted symlink"
    );
    // No symlink in the archive leads out of the device's directory.
    for kind in ["results", "videos"] {
        let root = archive.join(kind).join(&id);
        for (rel, node) in listing(&root, &|_| false) {
            if let Node::Link(target) = node {
                let resolved = root.join(&rel).parent().unwrap().join(&target);
                let resolved = resolved.canonicalize().unwrap_or(resolved);
                assert!(
                    resolved.starts_with(root.canonicalize().unwrap()),
                    "{rel} -> {} escapes",
                    target.display()
                );
            }
        }
    }
    // The safe link inside the tree and the nested id folder were copied.
    assert!(fs::symlink_metadata(
        archive
            .join("results")
            .join(&id)
            .join("ETHOSCOPE_003/latest")
    )
    .unwrap()
    .file_type()
    .is_symlink());
    assert_eq!(
        fs::read(
            archive
                .join("videos")
                .join(&id)
                .join(&other)
                .join("inside.h264")
        )
        .unwrap(),
        b"inside"
    );
    // The planted symlink was replaced by a real directory holding the device's videos.
    assert!(
        fs::symlink_metadata(archive.join("videos").join(&id).join("ETHOSCOPE_003"))
            .unwrap()
            .is_dir()
    );
}

#[tokio::test]
async fn torn_database_never_replaces_a_good_copy() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(5);
    let tree = populate(&data, &id, "ETHOSCOPE_005");
    let db = tree.db_path("2025-07-10_10-00-00");
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let engine = engine(work.path(), &rsyncd.url());
    let dev = device(&id, "ETHOSCOPE_005", "127.0.0.1", true);
    let archived = work
        .path()
        .join("archive/results")
        .join(&id)
        .join(db.strip_prefix(tree.results()).unwrap());

    assert_eq!(
        engine.backup(dev.clone(), ctx(&id)).await.status(),
        ProgressStatus::Success
    );
    let good = fs::read(&archived).unwrap();

    // The device is mid-write: the file on disk is a torn mix of old and new pages.
    make_db(&db, 300);
    let mut torn = fs::read(&db).unwrap();
    for b in &mut torn[8192..8192 * 8] {
        *b ^= 0x5A;
    }
    fs::write(&db, &torn).unwrap();
    let out = engine.backup(dev.clone(), ctx(&id)).await;
    assert_eq!(out.status(), ProgressStatus::Warning, "{}", msg(&out));
    let name = db
        .strip_prefix(tree.results())
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        msg(&out).contains(&name),
        "the message names the file: {}",
        msg(&out)
    );
    assert!(msg(&out).contains("integrity check"), "{}", msg(&out));
    assert_eq!(fs::read(&archived).unwrap(), good, "good copy replaced");
    // The refused copy is kept for inspection under the state directory, not in the archive.
    let rejected = work
        .path()
        .join("state/rejected/results")
        .join(&id)
        .join(db.strip_prefix(tree.results()).unwrap());
    assert!(rejected.is_file(), "{}", rejected.display());
    assert!(
        msg(&out).contains(&rejected.display().to_string()),
        "{}",
        msg(&out)
    );
    assert!(temp_files(&work.path().join("archive")).is_empty());

    // The device finishes writing (the file is consistent again): the next cycle pulls it again
    // and replaces the copy.
    let fresh = work.path().join("fresh.db");
    make_db(&fresh, 320);
    fs::rename(&fresh, &db).unwrap();
    let out = engine.backup(dev.clone(), ctx(&id)).await;
    assert_eq!(out.status(), ProgressStatus::Success, "{}", msg(&out));
    assert_eq!(fs::read(&archived).unwrap(), fs::read(&db).unwrap());
}

/// A real writer commits to the database while rsync copies it slowly; whatever each cycle
/// produces, the archived copy always passes quick_check and is never corrupt.
#[tokio::test]
async fn database_written_during_the_copy_is_never_archived_corrupt() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(6);
    let tree = populate(&data, &id, "ETHOSCOPE_006");
    let db = tree.db_path("2025-07-10_10-00-00");
    make_db(&db, 1500); // ~1.6 MB
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let mut c = engine_config(work.path(), &rsyncd.url());
    c.backup_videos = false;
    c.bwlimit = Some("2000".into()); // ~2 MB/s: the copy takes most of a second
    let engine = etho_rsync_backup::RsyncEngine::new(c).unwrap();
    let dev = device(&id, "ETHOSCOPE_006", "127.0.0.1", true);
    let archived = work
        .path()
        .join("archive/results")
        .join(&id)
        .join(db.strip_prefix(tree.results()).unwrap());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Stops the writer even if an assertion below fails, before the temp dir goes away.
    struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _stop_guard = StopOnDrop(stop.clone());
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            let mut n = 0u64;
            // Rewrites random pages in place (the file hardly grows), a commit every few ms:
            // a copy taken meanwhile mixes pages of different versions.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let tx = conn.unchecked_transaction().unwrap();
                for _ in 0..20 {
                    tx.execute("UPDATE roi_1 SET blob = randomblob(1024) WHERE id = abs(random()) % 1500 + 1", [])
                        .unwrap();
                }
                tx.execute(
                    "INSERT INTO roi_1 (t, x, blob) VALUES (1, 2.0, randomblob(100))",
                    [],
                )
                .unwrap();
                tx.commit().unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(3)); // pacing the writer, not synchronisation
            }
            n
        })
    };
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let out = engine.backup(dev.clone(), ctx(&id)).await;
        assert_ne!(out.status(), ProgressStatus::Error, "{}", msg(&out));
        if archived.exists() {
            assert_eq!(etho_rsync_backup::promote::quick_check(&archived), Ok(()));
        }
        outcomes.push(out.status());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let commits = writer.join().unwrap();
    assert!(commits > 3, "the writer was not running during the copies");
    // Once the writer stops, the next cycle archives the final database exactly.
    let out = engine.backup(dev.clone(), ctx(&id)).await;
    assert_eq!(out.status(), ProgressStatus::Success, "{}", msg(&out));
    assert_eq!(fs::read(&archived).unwrap(), fs::read(&db).unwrap());
    assert!(temp_files(&work.path().join("archive")).is_empty());
    eprintln!("outcomes while writing: {outcomes:?}, writer commits: {commits}");
}

#[tokio::test]
async fn job_timeout_kills_the_whole_process_group() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(11);
    let tree = populate(&data, &id, "ETHOSCOPE_011");
    write_file(&tree.videos().join("big.h264"), &bytes(11, 4_000_000));
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let mut c = engine_config(work.path(), &rsyncd.url());
    c.bwlimit = Some("500".into());
    let engine = etho_rsync_backup::RsyncEngine::new(c).unwrap();
    let started = Instant::now();
    // The scheduler's deadline, 2 s away; nothing cancels the job: the engine itself stops rsync.
    let job_ctx = ctx(&id).with_deadline(Instant::now() + Duration::from_secs(2));
    let out = engine
        .backup(device(&id, "ETHOSCOPE_011", "127.0.0.1", true), job_ctx)
        .await;
    let took = started.elapsed();
    assert_eq!(out.status(), ProgressStatus::Error, "{}", msg(&out));
    assert!(msg(&out).contains("timed out after 2 s"), "{}", msg(&out));
    assert!(took < Duration::from_secs(10), "{took:?}");
    let state = work.path().join("state");
    assert!(
        processes_with(&state.to_string_lossy()).is_empty(),
        "rsync processes survived"
    );
    assert!(temp_files(&work.path().join("archive")).is_empty());
}

#[tokio::test]
async fn cancelled_job_stops_rsync_promptly() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(12);
    let tree = populate(&data, &id, "ETHOSCOPE_012");
    write_file(&tree.videos().join("big.h264"), &bytes(12, 4_000_000));
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let mut c = engine_config(work.path(), &rsyncd.url());
    c.bwlimit = Some("500".into());
    c.backup_results = false;
    let engine = etho_rsync_backup::RsyncEngine::new(c).unwrap();
    let job_ctx = ctx(&id);
    let job = tokio::spawn({
        let (engine, job_ctx) = (engine.clone(), job_ctx.clone());
        let dev = device(&id, "ETHOSCOPE_012", "127.0.0.1", true);
        async move { engine.backup(dev, job_ctx).await }
    });
    let state = work.path().join("state");
    wait_for("rsync to run", Duration::from_secs(20), || {
        !processes_with(&state.to_string_lossy()).is_empty()
    })
    .await;
    let started = Instant::now();
    job_ctx.cancel.cancel();
    let out = job.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status(), ProgressStatus::Error);
    assert!(msg(&out).contains("cancelled"), "{}", msg(&out));
    assert!(
        processes_with(&state.to_string_lossy()).is_empty(),
        "rsync survived cancellation"
    );

    // Dropping a job future mid-transfer kills rsync too.
    let job_ctx = ctx(&id);
    let job = tokio::spawn({
        let (engine, job_ctx) = (engine.clone(), job_ctx.clone());
        let dev = device(&id, "ETHOSCOPE_012", "127.0.0.1", true);
        async move { engine.backup(dev, job_ctx).await }
    });
    wait_for("rsync to run again", Duration::from_secs(20), || {
        !processes_with(&state.to_string_lossy()).is_empty()
    })
    .await;
    job.abort();
    let _ = job.await;
    wait_for("rsync to die with its job", Duration::from_secs(5), || {
        processes_with(&state.to_string_lossy()).is_empty()
    })
    .await;
}

fn status_msg(st: &etho_model::status::DeviceStatus) -> String {
    st.progress.message.clone().unwrap_or_default()
}

/// The device's rsync daemon is SIGKILLed mid-file; the archive holds no partial or temporary
/// file, and the next cycle completes the transfer from the partial data.
#[tokio::test]
async fn daemon_killed_mid_file_resumes_next_cycle() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(7);
    let tree = populate(&data, &id, "ETHOSCOPE_007");
    let big = tree
        .videos()
        .join("ETHOSCOPE_007/2025-07-10_10-00-00/zz_big.h264");
    write_file(&big, &bytes(77, 3_000_000));
    let mut rsyncd = RsyncDaemon::start(&data).unwrap();
    let mut c = engine_config(work.path(), &rsyncd.url());
    c.bwlimit = Some("500".into()); // a window of seconds to kill in
    let engine = etho_rsync_backup::RsyncEngine::new(c).unwrap();
    let daemon = daemon_for(&engine);
    let dev = device(&id, "ETHOSCOPE_007", "127.0.0.1", true);
    let job = spawn_job(&daemon, &dev);
    wait_for(
        "the big file to be in flight",
        Duration::from_secs(30),
        || in_flight(&daemon, &id, "zz_big.h264", 1_000_000),
    )
    .await;
    rsyncd.kill();
    let st = job.await.unwrap();
    assert_eq!(
        st.progress.status,
        Some(ProgressStatus::Error),
        "{}",
        status_msg(&st)
    );
    assert!(
        status_msg(&st).contains("rsync failed with code"),
        "{}",
        status_msg(&st)
    );
    let archive = work.path().join("archive");
    let archived_big = archive
        .join("videos")
        .join(&id)
        .join("ETHOSCOPE_007/2025-07-10_10-00-00/zz_big.h264");
    assert!(!archived_big.exists(), "a partial file reached the archive");
    assert!(
        temp_files(&archive).is_empty(),
        "{:?}",
        temp_files(&archive)
    );
    let partial = listing(&work.path().join("state/partial"), &|_| false);
    assert!(
        partial
            .values()
            .any(|n| matches!(n, Node::File { data, .. } if data.len() >= 500_000)),
        "rsync kept no partial data to resume from"
    );
    // Everything the archive holds is complete and identical to the device's copy.
    for (rel, node) in listing(&archive.join("videos").join(&id), &|_| false) {
        if let Node::File { data, .. } = node {
            assert_eq!(data, fs::read(tree.videos().join(&rel)).unwrap(), "{rel}");
        }
    }

    rsyncd.restart().unwrap();
    let st = daemon.run_device(dev.clone()).await.unwrap();
    assert_eq!(
        st.progress.status,
        Some(ProgressStatus::Success),
        "{}",
        status_msg(&st)
    );
    assert_mirror(&tree.videos(), &archive.join("videos").join(&id));
    assert_mirror(&tree.results(), &archive.join("results").join(&id));
    assert!(temp_files(&archive).is_empty());
    assert!(
        listing(&work.path().join("state/partial"), &|_| false)
            .values()
            .all(|n| *n == Node::Dir),
        "partial file not consumed"
    );
}

/// The local rsync itself is SIGKILLed mid-file (as the OOM killer would).
#[tokio::test]
async fn local_rsync_killed_mid_file_leaves_no_temp_file_and_resumes() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(8);
    let tree = populate(&data, &id, "ETHOSCOPE_008");
    write_file(
        &tree.videos().join("ETHOSCOPE_008/zz_big.h264"),
        &bytes(88, 2_500_000),
    );
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let mut c = engine_config(work.path(), &rsyncd.url());
    c.bwlimit = Some("500".into()); // a window of seconds to kill in
    c.backup_results = false;
    let engine = etho_rsync_backup::RsyncEngine::new(c).unwrap();
    let daemon = daemon_for(&engine);
    let dev = device(&id, "ETHOSCOPE_008", "127.0.0.1", true);
    let job = spawn_job(&daemon, &dev);
    wait_for(
        "the big file to be in flight",
        Duration::from_secs(30),
        || in_flight(&daemon, &id, "zz_big.h264", 500_000),
    )
    .await;
    let staging = work.path().join("state/staging/videos").join(&id);
    let pids = processes_with(&staging.to_string_lossy());
    assert!(!pids.is_empty(), "no local rsync found");
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let st = job.await.unwrap();
    assert_eq!(
        st.progress.status,
        Some(ProgressStatus::Error),
        "{}",
        status_msg(&st)
    );
    let archive = work.path().join("archive");
    assert!(
        temp_files(&archive).is_empty(),
        "{:?}",
        temp_files(&archive)
    );
    assert!(!archive
        .join("videos")
        .join(&id)
        .join("ETHOSCOPE_008/zz_big.h264")
        .exists());

    let st = daemon.run_device(dev).await.unwrap();
    assert_eq!(
        st.progress.status,
        Some(ProgressStatus::Success),
        "{}",
        status_msg(&st)
    );
    assert_mirror(&tree.videos(), &archive.join("videos").join(&id));
    assert!(temp_files(&archive).is_empty());
    assert!(
        temp_files(&work.path().join("state/tmp")).is_empty(),
        "stale temp files kept"
    );
}

/// A file that disappears on the device during the transfer makes rsync exit 24: a warning,
/// and everything else is copied.
#[tokio::test]
async fn vanished_source_file_is_a_warning() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(9);
    let tree = populate(&data, &id, "ETHOSCOPE_009");
    let dir = tree.videos().join("ETHOSCOPE_009/2025-07-12_00-00-00");
    write_file(&dir.join("a_big.h264"), &bytes(5, 1_500_000));
    write_file(&dir.join("b_rotated.h264"), &bytes(6, 1000));
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let mut c = engine_config(work.path(), &rsyncd.url());
    c.bwlimit = Some("2000".into());
    c.backup_results = false;
    let engine = etho_rsync_backup::RsyncEngine::new(c).unwrap();
    let daemon = daemon_for(&engine);
    let dev = device(&id, "ETHOSCOPE_009", "127.0.0.1", true);
    let job = spawn_job(&daemon, &dev);
    wait_for("a_big.h264 in flight", Duration::from_secs(30), || {
        in_flight(&daemon, &id, "a_big.h264", 0)
    })
    .await;
    fs::remove_file(dir.join("b_rotated.h264")).unwrap();
    let st = job.await.unwrap();
    assert_eq!(
        st.progress.status,
        Some(ProgressStatus::Warning),
        "{}",
        status_msg(&st)
    );
    assert!(status_msg(&st).contains("vanished"), "{}", status_msg(&st));
    assert_mirror(
        &tree.videos(),
        &work.path().join("archive/videos").join(&id),
    );
}

#[tokio::test]
async fn unreachable_host_fails_within_the_connect_timeout() {
    let work = tempfile::tempdir().unwrap();
    let id = machine_id(10);
    let dev = device(&id, "ETHOSCOPE_010", "127.0.0.1", true);

    // Nothing listening: refused at once, with rsync's own words, for both trees.
    let port = closed_port();
    let engine = engine(
        work.path(),
        &format!("rsync://{{ip}}:{port}/ethoscope_data"),
    );
    let started = Instant::now();
    let out = engine.backup(dev.clone(), ctx(&id)).await;
    assert_eq!(out.status(), ProgressStatus::Error);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(msg(&out).contains("Connection refused"), "{}", msg(&out));
    assert!(
        msg(&out).contains("Results") && msg(&out).contains("Videos"),
        "{}",
        msg(&out)
    );

    // Connection attempts dropped (an unreachable device): the 3 s connect timeout ends each
    // tree's attempt, long before the I/O timeout (30 s).
    let hole = Blackhole::new();
    let engine = common::engine(
        work.path(),
        &format!("rsync://{{ip}}:{}/ethoscope_data", hole.port),
    );
    let started = Instant::now();
    let out = engine.backup(dev.clone(), ctx(&id)).await;
    let took = started.elapsed();
    assert_eq!(out.status(), ProgressStatus::Error, "{}", msg(&out));
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(12),
        "{took:?}"
    );
    assert!(msg(&out).contains("code 35"), "{}", msg(&out));
}

#[tokio::test]
async fn live_progress_shows_percent_bytes_speed_and_file() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(13);
    let tree = populate(&data, &id, "ETHOSCOPE_013");
    write_file(
        &tree.videos().join("ETHOSCOPE_013/big.h264"),
        &bytes(13, 1_500_000),
    );
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let mut c = engine_config(work.path(), &rsyncd.url());
    c.bwlimit = Some("1500".into());
    c.backup_results = false;
    let engine = etho_rsync_backup::RsyncEngine::new(c).unwrap();
    let daemon = daemon_for(&engine);
    let dev = device(&id, "ETHOSCOPE_013", "127.0.0.1", true);
    let job = spawn_job(&daemon, &dev);
    let mut seen = None;
    wait_for(
        "a mid-transfer progress report",
        Duration::from_secs(30),
        || {
            if let Some(p) = live_progress(&daemon, &id) {
                let pct = p
                    .extra
                    .get("percent")
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0);
                if pct > 0.0
                    && pct < 100.0
                    && p.extra.get("current_file").is_some_and(|f| f.is_string())
                {
                    seen = Some(p);
                    return true;
                }
            }
            false
        },
    )
    .await;
    let p = seen.unwrap();
    assert_eq!(p.status, Some(ProgressStatus::Running));
    assert_eq!(p.extra["phase"], json!("videos"));
    assert!(p.extra["bytes_transferred"].as_u64().unwrap() > 0);
    assert!(p.extra["speed"].as_str().unwrap().ends_with("/s"));
    assert!(p.extra["files_transferred"].as_u64().is_some());
    let m = p.message.unwrap();
    assert!(
        m.starts_with("Videos (1/1): ") && m.contains('%') && m.contains("current: "),
        "{m}"
    );
    let st = job.await.unwrap();
    assert_eq!(
        st.progress.status,
        Some(ProgressStatus::Success),
        "{}",
        status_msg(&st)
    );
    assert_eq!(st.progress.extra["files_transferred"], json!(4));
}

/// A device that has not recorded any video yet has no `videos/<id>/`: that is not a failure.
#[tokio::test]
async fn device_without_a_videos_tree_yet_succeeds() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(14);
    let tree = populate(&data, &id, "ETHOSCOPE_014");
    fs::remove_dir_all(tree.videos()).unwrap();
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let engine = engine(work.path(), &rsyncd.url());
    let out = engine
        .backup(device(&id, "ETHOSCOPE_014", "127.0.0.1", true), ctx(&id))
        .await;
    assert_eq!(out.status(), ProgressStatus::Success, "{}", msg(&out));
    assert!(
        msg(&out).contains(&format!("the device has no videos/{id}/ directory")),
        "{}",
        msg(&out)
    );
    assert_mirror(
        &tree.results(),
        &work.path().join("archive/results").join(&id),
    );
}

/// State directory on another filesystem than the archive (tmpfs here): finished files cannot be
/// renamed in, so they are copied under a hidden name and renamed; the result is the same mirror
/// with no leftovers, and the message says so.
#[tokio::test]
async fn state_dir_on_another_filesystem_still_mirrors_cleanly() {
    use std::os::unix::fs::MetadataExt;
    let shm = std::path::Path::new("/dev/shm");
    let work = tempfile::tempdir().unwrap();
    if !shm.is_dir() || fs::metadata(shm).unwrap().dev() == fs::metadata(work.path()).unwrap().dev()
    {
        eprintln!("skipping: no second filesystem at /dev/shm");
        return;
    }
    let state = tempfile::tempdir_in(shm).unwrap();
    let data = work.path().join("device");
    let id = machine_id(15);
    let tree = populate(&data, &id, "ETHOSCOPE_015");
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let mut c = engine_config(work.path(), &rsyncd.url());
    c.state_dir = state.path().to_path_buf();
    let engine = etho_rsync_backup::RsyncEngine::new(c).unwrap();
    assert!(engine.cross_device());
    let dev = device(&id, "ETHOSCOPE_015", "127.0.0.1", true);
    let out = engine.backup(dev.clone(), ctx(&id)).await;
    assert_eq!(out.status(), ProgressStatus::Success, "{}", msg(&out));
    assert!(msg(&out).contains("another filesystem"), "{}", msg(&out));
    let archive = work.path().join("archive");
    assert_mirror(&tree.results(), &archive.join("results").join(&id));
    assert_mirror(&tree.videos(), &archive.join("videos").join(&id));
    assert!(
        temp_files(&archive).is_empty(),
        "{:?}",
        temp_files(&archive)
    );
    let out = engine.backup(dev, ctx(&id)).await;
    assert!(msg(&out).contains("Results: no changes"), "{}", msg(&out));
}

/// The backup daemon itself was SIGKILLed mid-file: its rsync (leading its own process group)
/// survives it and keeps writing into the staging area. The next job ends that orphan before it
/// starts its own transfer, and completes the mirror with no temporary file in the archive.
#[tokio::test]
async fn rsync_orphaned_by_a_killed_daemon_is_stopped_by_the_next_job() {
    use etho_rsync_backup::command::{rsync_args, TransferPaths};
    use std::os::unix::process::CommandExt;
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(16);
    let tree = populate(&data, &id, "ETHOSCOPE_016");
    write_file(
        &tree.videos().join("ETHOSCOPE_016/zz_big.h264"),
        &bytes(16, 2_500_000),
    );
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let mut c = engine_config(work.path(), &rsyncd.url());
    c.backup_results = false;
    let engine = etho_rsync_backup::RsyncEngine::new(c).unwrap();
    let dev = device(&id, "ETHOSCOPE_016", "127.0.0.1", true);

    // The predecessor's rsync: the engine's own command line for this tree, slowed down.
    let cfg = engine.config();
    let state = &cfg.state_dir;
    let paths = TransferPaths {
        source: cfg.source.subtree(&dev, Kind::Videos),
        transport: cfg.source.transport(),
        staging: state.join("staging/videos").join(&id),
        archive: cfg.archive_root(Kind::Videos).join(&id),
        stubs: Some(state.join("stubs/videos").join(&id)),
        itemize_unchanged: false,
        partial: state.join("partial/videos").join(&id),
        temp: state.join("tmp/videos").join(&id),
        host_key_alias: Some(id.clone()),
    };
    for d in [&paths.staging, &paths.partial, &paths.temp, &paths.archive] {
        fs::create_dir_all(d).unwrap();
    }
    let mut slow = cfg.clone();
    slow.bwlimit = Some("100".into());
    let mut orphan = std::process::Command::new(&cfg.rsync_program)
        .args(rsync_args(&slow, &paths).unwrap())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let temp = paths.temp.clone();
    wait_for("the orphan to be writing", Duration::from_secs(30), || {
        listing(&temp, &|_| false)
            .values()
            .any(|n| matches!(n, Node::File { data, .. } if !data.is_empty()))
    })
    .await;
    assert!(orphan.try_wait().unwrap().is_none());

    let out = engine.backup(dev, ctx(&id)).await;
    let mut gone = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if orphan.try_wait().unwrap().is_some() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !gone {
        let _ = orphan.kill();
        let _ = orphan.wait();
    }
    assert!(gone, "the orphaned rsync is still running");
    assert_eq!(out.status(), ProgressStatus::Success, "{}", msg(&out));
    let archive = work.path().join("archive");
    assert_mirror(&tree.videos(), &archive.join("videos").join(&id));
    assert!(
        temp_files(&archive).is_empty(),
        "{:?}",
        temp_files(&archive)
    );
}
