//! The configuration file through the real binary: the file over the defaults, flags over the
//! file, and errors that name the file, the line and the key (and stop the service).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_etho-backup");

fn run(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("ETHO_BACKUP_CONFIG")
        .env_remove("ETHO_BACKUP_MYSQL_PASSWORD")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn file_then_flags_then_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etho-backup.toml");
    std::fs::write(
        &file,
        "# a lab's file\n[mysql-backup]\ninterval = 60\nresults-dir = \"/srv/results\"\n\n[node]\ndevice = [\"10.0.0.5\", \"10.0.0.6:9001\"]\nmdns = true\n",
    )
    .unwrap();

    // The file over the defaults, with its line for each value.
    let out = run(&file, &["config", "show", "mysql-backup", "node"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let f = file.display();
    for line in [
        format!("# Effective settings; file: {f}"),
        "[mysql-backup]".to_string(),
        "interval = 60".to_string(),
        format!("# {f}:3"),
        "results-dir = \"/srv/results\"".to_string(),
        format!("# {f}:4"),
        "max-jobs = 4".to_string(),
        "mysql-password = \"(hidden)\"".to_string(),
        "# ethoscope (not set)".to_string(),
        "device = [\"10.0.0.5\", \"10.0.0.6:9001\"]".to_string(),
        format!("# {f}:7"),
        "mdns = true".to_string(),
    ] {
        assert!(shown.contains(&line), "missing {line:?} in\n{shown}");
    }
    let max_jobs = shown.lines().find(|l| l.starts_with("max-jobs")).unwrap();
    assert!(max_jobs.ends_with("# default"), "{max_jobs}");
    // The secret is never printed, whatever its source.
    let out = Command::new(BIN)
        .args(["--config", "none", "config", "show", "mysql-backup"])
        .env("ETHO_BACKUP_MYSQL_PASSWORD", "s3cret")
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    assert!(!shown.contains("s3cret"), "{shown}");
    let secret = shown
        .lines()
        .find(|l| l.starts_with("mysql-password = \"(hidden)\""))
        .unwrap();
    assert!(
        secret.ends_with("# environment (ETHO_BACKUP_MYSQL_PASSWORD)"),
        "{secret}"
    );

    // Errors: unknown key, wrong type, value the flag refuses, unknown section, bad TOML. The
    // daemon refuses to start, naming file, line and key.
    for (body, want) in [
        (
            "[mysql-backup]\ninterval = 60\nintervall = 5\n",
            format!("etho-backup: {f}:3: mysql-backup.intervall: unknown key; [mysql-backup] takes port, results-dir, listen, server, configuration, debug, interval, max-jobs, job-timeout, ethoscope, umask, mysql-port, mysql-user, mysql-password, state-dir\n"),
        ),
        (
            "[mysql-backup]\n\ndebug = \"yes\"\n",
            format!("etho-backup: {f}:3: mysql-backup.debug: expected true or false, found a string\n"),
        ),
        (
            "[mysql-backup]\nmax-jobs = -2\n",
            format!("etho-backup: {f}:2: mysql-backup.max-jobs: invalid value '-2' for '--max-jobs <MAX_JOBS>': invalid digit found in string\n"),
        ),
        (
            "[mysql_backup]\ninterval = 5\n",
            format!("etho-backup: {f}:1: [mysql_backup]: unknown section; sections are node, mysql-backup, rsync-backup, sim, demo, doctor\n"),
        ),
        (
            "[node]\ndevice = [\"a\", {x = 1}]\n",
            format!("etho-backup: {f}:2: node.device: expected a list of strings or numbers, found a table in it\n"),
        ),
    ] {
        std::fs::write(&file, body).unwrap();
        let out = run(&file, &["mysql-backup", "--state-dir", "/nonexistent"]);
        assert_eq!(out.status.code(), Some(2), "{body}");
        assert_eq!(text(&out.stderr), want, "{body}");
        assert!(out.stdout.is_empty());
    }
    std::fs::write(&file, "[node\n").unwrap();
    let out = run(&file, &["node"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with(&format!("etho-backup: {f}:1: not valid TOML")),
        "{}",
        text(&out.stderr)
    );

    // A named file that does not exist is an error too; `none` reads no file.
    let out = run(&dir.path().join("missing.toml"), &["config", "show"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.toml: No such file"));
}

#[test]
fn flags_win_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etho-backup.toml");
    // The file sends the node to a port that is taken; the flag moves it to a free one and the
    // node starts; without the flag it fails on the file's port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    std::fs::write(
        &file,
        format!(
            "[node]\nlisten = \"127.0.0.1:{port}\"\nstate-dir = \"{}\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let out = run(&file, &["node"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        text(&out.stderr)
    );
    let out = run(&file, &["config", "show", "node"]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("listen = \"127.0.0.1:{port}\"")),
        "{shown}"
    );
    // With the flag, the config is the command line's (shown by `-e`-less `config show` is not
    // possible for flags, so the daemon's own banner says where it listens).
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free_port = free.local_addr().unwrap().port();
    drop(free);
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .args(["node", "--listen", &format!("127.0.0.1:{free_port}")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let banner = lines
        .find_map(|l| l.ok().filter(|l| l.contains("node listening on")))
        .expect("the node started");
    assert!(
        banner.contains(&format!("http://127.0.0.1:{free_port}")),
        "{banner}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
