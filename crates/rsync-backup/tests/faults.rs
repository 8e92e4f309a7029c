//! Engine jobs against devices that misbehave at the system level: a device frozen mid-transfer,
//! a full archive disk, hostile file modes. Real rsync daemons on loopback; the disk-full test
//! mounts a tmpfs, so it needs root (CI runs as root) and fails, naming the reason, without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use etho_daemon::Engine;
use etho_devicekit::rsyncd::RsyncDaemon;
use etho_model::status::ProgressStatus;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

fn msg(o: &etho_daemon::JobOutcome) -> String {
    o.progress.message.clone().unwrap_or_default()
}

/// SIGCONTs (then the daemon's own drop kills) a stopped device, whatever the test's outcome.
struct Thaw(Pid);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = killpg(self.0, Signal::SIGCONT);
    }
}

/// Defect 7: a device frozen mid-transfer (SIGSTOP) was never timed out by `--io-timeout`: the
/// job held a worker until the job timeout. The progress watchdog ends it within the I/O timeout,
/// kills rsync's process group and says the device stopped sending data.
#[tokio::test]
async fn a_frozen_device_ends_the_job_within_the_io_timeout() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(41);
    let tree = populate(&data, &id, "ETHOSCOPE_041");
    write_file(
        &tree
            .videos()
            .join("ETHOSCOPE_041/2025-07-10_10-00-00/zz_big.h264"),
        &bytes(41, 8_000_000),
    );
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let io_timeout = Duration::from_secs(4);
    let mut c = engine_config(work.path(), &rsyncd.url());
    c.bwlimit = Some("500".into());
    c.io_timeout = io_timeout;
    c.backup_results = false;
    let engine = etho_rsync_backup::RsyncEngine::new(c).unwrap();
    let daemon = daemon_for(&engine);
    let dev = device(&id, "ETHOSCOPE_041", "127.0.0.1", true);
    let job = spawn_job(&daemon, &dev);
    wait_for(
        "the big file to be in flight",
        Duration::from_secs(30),
        || in_flight(&daemon, &id, "zz_big.h264", 500_000),
    )
    .await;
    let group = Pid::from_raw(rsyncd.pid().unwrap() as i32);
    killpg(group, Signal::SIGSTOP).unwrap();
    let _thaw = Thaw(group);
    let frozen = Instant::now();
    let st = tokio::time::timeout(io_timeout + Duration::from_secs(60), job)
        .await
        .expect("the job outlived the I/O timeout by a minute")
        .unwrap();
    let took = frozen.elapsed();
    let message = st.progress.message.clone().unwrap_or_default();
    eprintln!(
        "the job ended {took:?} after the device froze (--io-timeout {io_timeout:?}): {message}"
    );
    assert!(
        took <= io_timeout + Duration::from_secs(10),
        "the job ended {took:?} after the device froze: {message}"
    );
    assert_eq!(st.progress.status, Some(ProgressStatus::Error), "{message}");
    assert!(message.contains("device stopped sending data"), "{message}");
    let state = work.path().join("state");
    assert!(
        processes_with(&state.to_string_lossy()).is_empty(),
        "rsync processes survived"
    );
    assert!(temp_files(&work.path().join("archive")).is_empty());
}

/// A tmpfs of `mb` megabytes mounted at `dir`, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, mb: u32) -> Tmpfs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a tmpfs to fill a disk: run it as root (CI does)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs failed: {st}");
        Tmpfs(dir.to_path_buf())
    }

    /// Bytes available.
    fn free(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.0).unwrap();
        st.blocks_available() * st.fragment_size()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Defect 8: after ENOSPC rsync kept the partial file, so the full disk stayed full until the
/// next attempt (and a MySQL mirror on it starved). The archive is a 60 MB tmpfs holding two
/// good videos when a 45 MB one arrives: the job fails saying the disk is full and how much is
/// free, the partial file is gone, the space is back, and the good copies are intact.
#[tokio::test]
async fn a_full_disk_keeps_the_good_copies_and_no_partial_file() {
    let work = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&work.path().join("disk"), 60);
    let data = work.path().join("device");
    let id = machine_id(42);
    let tree = populate(&data, &id, "ETHOSCOPE_042");
    let exp = tree.videos().join("ETHOSCOPE_042/2025-07-10_10-00-00");
    write_file(&exp.join("a_good.h264"), &bytes(421, 10_000_000));
    write_file(&exp.join("b_good.h264"), &bytes(422, 10_000_000));
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let c = engine_config(&disk.0, &rsyncd.url());
    let engine = etho_rsync_backup::RsyncEngine::new(c).unwrap();
    let dev = device(&id, "ETHOSCOPE_042", "127.0.0.1", true);
    let out = engine.backup(dev.clone(), ctx(&id)).await;
    assert_eq!(out.status(), ProgressStatus::Success, "{}", msg(&out));
    let archive = disk.0.join("archive/videos").join(&id);
    assert_mirror(&tree.videos(), &archive);
    let good = listing(&archive, &|_| false);

    write_file(&exp.join("c_big.h264"), &bytes(423, 45_000_000));
    let free_before = disk.free();
    let out = engine.backup(dev, ctx(&id)).await;
    let message = msg(&out);
    assert_eq!(out.status(), ProgressStatus::Error, "{message}");
    assert!(message.contains("disk is full"), "{message}");
    assert!(message.contains(" free of "), "{message}");
    let leftovers: Vec<String> = ["partial", "tmp", "staging"]
        .iter()
        .flat_map(|d| {
            listing(&disk.0.join("state").join(d), &|_| false)
                .into_iter()
                .filter(|(_, n)| *n != Node::Dir)
                .map(move |(p, _)| format!("{d}/{p}"))
        })
        .collect();
    assert!(leftovers.is_empty(), "left on the full disk: {leftovers:?}");
    assert!(
        disk.free() + 1_000_000 >= free_before,
        "the space did not come back: {} free, {} before",
        disk.free(),
        free_before
    );
    assert_eq!(
        listing(&archive, &|_| false),
        good,
        "the good copies changed"
    );
    assert!(!archive
        .join("ETHOSCOPE_042/2025-07-10_10-00-00/c_big.h264")
        .exists());
}

/// Defect 9: a world-writable mode on a device's file was kept in the archive. Files and
/// directories of any mode on the device arrive without group or world write, without set-id or
/// sticky bits, and with the daemon's umask (027: nothing for others).
#[tokio::test]
async fn device_modes_never_make_archive_files_writable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    // What `etho-backup rsync-backup` does at start with its default `--umask 027`.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("device");
    let id = machine_id(43);
    let tree = populate(&data, &id, "ETHOSCOPE_043");
    let exp = tree.videos().join("ETHOSCOPE_043/2025-07-10_10-00-00");
    let modes = [
        ("world.h264", 0o666),
        ("all.h264", 0o777),
        ("setuid.h264", 0o4755),
        ("setgid.h264", 0o2775),
        ("sticky.h264", 0o1666),
    ];
    for (name, mode) in modes {
        let f = exp.join(name);
        write_file(&f, name.as_bytes());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::set_permissions(&exp, std::fs::Permissions::from_mode(0o777)).unwrap();
    let db = tree.db_path("2025-07-10_10-00-00");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o666)).unwrap();
    let rsyncd = RsyncDaemon::start(&data).unwrap();
    let engine =
        etho_rsync_backup::RsyncEngine::new(engine_config(work.path(), &rsyncd.url())).unwrap();
    let out = engine
        .backup(device(&id, "ETHOSCOPE_043", "127.0.0.1", true), ctx(&id))
        .await;
    assert_eq!(out.status(), ProgressStatus::Success, "{}", msg(&out));
    let archive = work.path().join("archive");
    let mut seen = 0;
    let mut stack = vec![archive.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.file_type().is_symlink() {
                continue;
            }
            let mode = m.permissions().mode() & 0o7777;
            assert_eq!(mode & 0o7027, 0, "{} has mode {mode:o}", e.path().display());
            seen += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(seen > modes.len(), "{seen} entries checked");
    let archived = archive
        .join("videos")
        .join(&id)
        .join("ETHOSCOPE_043/2025-07-10_10-00-00");
    let mode_of = |name: &str| {
        std::fs::metadata(archived.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode_of("world.h264"), 0o640);
    assert_eq!(mode_of("all.h264"), 0o750);
    assert_eq!(mode_of("setuid.h264"), 0o750);
}

#[allow(dead_code)]
fn unused(_: &dyn Engine) {}
