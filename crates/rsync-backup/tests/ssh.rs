//! The production transport: rsync over ssh to a private sshd on a free loopback port, with a
//! generated host key and client key. Fails where `/usr/sbin/sshd` is not installed, as the
//! end-to-end test fails without mariadbd: a missing transport is not a pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use etho_model::status::ProgressStatus;
use etho_rsync_backup::{RsyncBackupConfig, RsyncEngine};

fn ssh_config(
    work: &std::path::Path,
    sshd: &TestSshd,
    data: &std::path::Path,
) -> RsyncBackupConfig {
    // The devices' `ethoscope` user does not exist here; log in as whoever runs the tests.
    let source = format!("{}@{{ip}}:{}", current_user(), data.display());
    let mut c = engine_config(work, &source);
    c.ssh.key = sshd.client_key.clone();
    c.ssh.port = Some(sshd.port);
    c.ssh.known_hosts = work.join("state/known_hosts");
    c
}

fn msg(o: &etho_daemon::JobOutcome) -> String {
    o.progress.message.clone().unwrap_or_default()
}

/// Whether `known_hosts` holds a key for `host`.
fn pinned(known_hosts: &std::path::Path, host: &str) -> bool {
    let found = std::process::Command::new("ssh-keygen")
        .arg("-F")
        .arg(host)
        .arg("-f")
        .arg(known_hosts)
        .output()
        .unwrap();
    found.status.success() && !found.stdout.is_empty()
}

fn host_key_refused(message: &str) -> bool {
    message.contains("Host key verification failed")
        || message.contains("HOST IDENTIFICATION HAS CHANGED")
}

/// Host keys are pinned per machine id (HostKeyAlias), not per address: a device whose address
/// changes keeps working with its key, and another machine answering with the device's id from
/// an address never seen before is refused (pinned per address, it was accepted as new).
#[tokio::test]
async fn host_keys_belong_to_the_machine_id_not_the_address() {
    let mut sshd = TestSshd::start();
    let work = tempfile::tempdir().unwrap();
    let id = machine_id(0x43);
    let tree = populate(&work.path().join("device"), &id, "ETHOSCOPE_043");
    let c = ssh_config(work.path(), &sshd, &tree.data);
    let known_hosts = c.ssh.known_hosts.clone();
    let engine = RsyncEngine::new(c).unwrap();
    let at = |ip: &str| device(&id, "ETHOSCOPE_043", ip, true);
    let out = engine.backup(at("127.0.0.1"), ctx(&id)).await;
    assert_eq!(out.status(), ProgressStatus::Success, "{}", msg(&out));
    assert!(pinned(&known_hosts, &id));
    assert!(!pinned(&known_hosts, &format!("[127.0.0.1]:{}", sshd.port)));
    // DHCP gave the device a new address: same key, nothing to confirm.
    write_file(
        &tree.videos().join("ETHOSCOPE_043/moved.h264"),
        b"after the move",
    );
    let out = engine.backup(at("127.0.0.2"), ctx(&id)).await;
    assert_eq!(out.status(), ProgressStatus::Success, "{}", msg(&out));
    let archive = work.path().join("archive");
    assert_mirror(&tree.videos(), &archive.join("videos").join(&id));
    // Another machine (another host key) claims the id from an address never seen.
    sshd.rotate_host_key();
    write_file(
        &tree.videos().join("ETHOSCOPE_043/impostor.h264"),
        b"from an impostor",
    );
    let before = listing(&archive, &|_| false);
    let out = engine.backup(at("127.0.0.3"), ctx(&id)).await;
    assert_eq!(out.status(), ProgressStatus::Error, "{}", msg(&out));
    assert!(host_key_refused(&msg(&out)), "{}", msg(&out));
    assert_eq!(listing(&archive, &|_| false), before);
}

#[tokio::test]
async fn ssh_pull_pins_the_host_key() {
    let mut sshd = TestSshd::start();
    let work = tempfile::tempdir().unwrap();
    let id = machine_id(0x41);
    let tree = populate(&work.path().join("device"), &id, "ETHOSCOPE_041");
    std::os::unix::fs::symlink("/etc/shadow", tree.results().join("shadow")).unwrap();
    let c = ssh_config(work.path(), &sshd, &tree.data);
    let known_hosts = c.ssh.known_hosts.clone();
    let engine = RsyncEngine::new(c).unwrap();
    let dev = device(&id, "ETHOSCOPE_041", "127.0.0.1", true);

    let out = engine.backup(dev.clone(), ctx(&id)).await;
    assert_eq!(out.status(), ProgressStatus::Success, "{}", msg(&out));
    let archive = work.path().join("archive");
    std::fs::remove_file(tree.results().join("shadow")).unwrap();
    assert_mirror(&tree.results(), &archive.join("results").join(&id));
    assert_mirror(&tree.videos(), &archive.join("videos").join(&id));
    // The host key was learned into our own known-hosts file, under the machine id.
    // (Debian hashes host names, so ask ssh-keygen.)
    assert!(
        pinned(&known_hosts, &id),
        "host key not pinned under the machine id"
    );

    let out = engine.backup(dev.clone(), ctx(&id)).await;
    assert_eq!(out.status(), ProgressStatus::Success, "{}", msg(&out));
    assert_eq!(
        out.progress.extra["files_transferred"],
        serde_json::json!(0)
    );

    // Someone else answers on the device's address: the pinned key refuses them and nothing in
    // the archive changes.
    sshd.rotate_host_key();
    write_file(
        &tree.videos().join("ETHOSCOPE_041/new.h264"),
        b"from an impostor",
    );
    let before = listing(&archive, &|_| false);
    let out = engine.backup(dev.clone(), ctx(&id)).await;
    assert_eq!(out.status(), ProgressStatus::Error, "{}", msg(&out));
    assert!(host_key_refused(&msg(&out)), "{}", msg(&out));
    assert_eq!(listing(&archive, &|_| false), before);
}

#[tokio::test]
async fn ssh_to_an_unreachable_host_fails_within_the_connect_timeout() {
    let work = tempfile::tempdir().unwrap();
    let id = machine_id(0x42);
    let hole = Blackhole::new();
    let mut c = engine_config(work.path(), "ethoscope@{ip}:/ethoscope_data");
    c.ssh.port = Some(hole.port);
    c.ssh.key = work.path().join("no_key");
    c.backup_results = false;
    let engine = RsyncEngine::new(c).unwrap();
    let started = Instant::now();
    let out = engine
        .backup(device(&id, "ETHOSCOPE_042", "127.0.0.1", true), ctx(&id))
        .await;
    let took = started.elapsed();
    assert_eq!(out.status(), ProgressStatus::Error, "{}", msg(&out));
    // ConnectTimeout is 3 s in these tests (10 s by default).
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
    // "Connection timed out", or "... during banner exchange" when the kernel still queued the
    // connection: either way ssh's own words, within ConnectTimeout.
    assert!(msg(&out).contains("timed out"), "{}", msg(&out));
    assert!(msg(&out).contains("ssh: "), "{}", msg(&out));
}
