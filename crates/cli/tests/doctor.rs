//! `etho-backup doctor` against a simulated lab: real devices (HTTP API, rsync daemons, MariaDB),
//! the node and the MySQL daemon as `etho-backup` processes. One device's clock is an hour
//! ahead, another's MariaDB database is gone, the videos folder is missing and the rsync daemon
//! is not running: each is a failed row with its fix, everything else passes, exit code 1. A
//! broken configuration file is a failed row too, and the rest of the table still comes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use etho_sim::{DbKind, Fleet, FleetConfig, MariaDbTarget, Rates, Role};
use mysql_async::prelude::Queryable;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_etho-backup");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[String], log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(BIN)
            .arg("--config")
            .arg("none")
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    )
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_until(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn doctor(config: &Path) -> Output {
    let config = config.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(["doctor", "--timeout", "5"])
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// The table line of `check`, whitespace-normalised: `check | RESULT | detail`.
fn row(table: &str, check: &str) -> String {
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("{check}  ")))
        .unwrap_or_else(|| panic!("no row {check:?} in\n{table}"));
    let rest = line[check.len()..].trim_start();
    let (result, detail) = rest.split_once(' ').unwrap_or((rest, ""));
    format!("{check} | {result} | {}", detail.trim_start())
}

/// The fix printed under `check`'s row.
fn fix_of(table: &str, check: &str) -> String {
    let mut lines = table.lines();
    lines
        .find(|l| l.starts_with(&format!("{check}  ")))
        .unwrap();
    lines
        .next()
        .and_then(|l| l.trim_start().strip_prefix("fix: "))
        .unwrap_or_else(|| panic!("no fix under {check:?} in\n{table}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_finds_each_failure_in_a_simulated_lab() {
    assert!(
        etho_sim::mariadbd_installed(),
        "this test needs mariadb-server installed"
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let roles = [
        Role::Tracker(DbKind::MariaDb),
        Role::Tracker(DbKind::Sqlite),
        Role::Tracker(DbKind::MariaDb),
    ];
    let devices = common::always_running(&roles, 78, 11, "doctor");
    let fleet = Fleet::start(FleetConfig {
        devices,
        data_dir: root.join("fleet"),
        http_port: 0,
        rsync_port: 0,
        rsync: true,
        mariadb: MariaDbTarget::Auto,
        rates: Rates::default(),
        mdns: false,
    })
    .await
    .unwrap();
    let devs = fleet.devices().to_vec();
    wait_until("experiments", async || {
        devs.iter().all(|d| d.snapshot().current.is_some())
    })
    .await;
    fleet.hold_all(true);
    fleet.wait_at_rest(Duration::from_secs(30)).await.unwrap();
    // ETHOSCOPE_002's clock is an hour ahead; ETHOSCOPE_003's experiment database is gone.
    devs[1].set_clock_offset(3600.0);
    let admin = fleet.mariadb_admin_opts().unwrap().clone();
    let mut conn = mysql_async::Conn::new(admin).await.unwrap();
    conn.query_drop(format!("DROP DATABASE `{}_db`", devs[2].name()))
        .await
        .unwrap();
    conn.disconnect().await.unwrap();

    let maria = fleet.mariadb().unwrap().clone();
    let (node_port, mysql_port, rsync_port) = (free_port(), free_port(), free_port());
    let node = format!("127.0.0.1:{node_port}");
    let s = |v: &str| v.to_string();
    let mut node_args = vec![
        s("node"),
        s("--listen"),
        node.clone(),
        s("--state-dir"),
        root.join("state/node").display().to_string(),
        s("--poll-interval"),
        s("0.5"),
    ];
    for a in fleet.device_addresses() {
        node_args.extend([s("--device"), a]);
    }
    let results = root.join("archive/results");
    std::fs::create_dir_all(&results).unwrap();
    let _node = spawn(&node_args, &root.join("node.log"));
    let _mysql = spawn(
        &[
            s("mysql-backup"),
            s("-p"),
            mysql_port.to_string(),
            s("-i"),
            node.clone(),
            s("-r"),
            results.display().to_string(),
            s("--mysql-port"),
            maria.port.to_string(),
            s("--state-dir"),
            root.join("state/mysql").display().to_string(),
        ],
        &root.join("mysql.log"),
    );
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    wait_until(
        "the node listing every device with its databases",
        async || {
            let Ok(r) = client.get(format!("http://{node}/devices")).send().await else {
                return false;
            };
            let doc: serde_json::Value = r.json().await.unwrap_or_default();
            devs.iter().all(|d| doc[d.id()]["databases"].is_object())
        },
    )
    .await;
    wait_until("the MySQL daemon's /status", async || {
        client
            .get(format!("http://127.0.0.1:{mysql_port}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    let videos = root.join("archive/videos-missing");
    let config = root.join("etho-backup.toml");
    let settings = format!(
        "[mysql-backup]\nserver = \"{node}\"\nresults-dir = \"{r}\"\nport = {mysql_port}\nmysql-port = {mp}\n\n\
         [rsync-backup]\nserver = \"{node}\"\nresults-dir = \"{r}\"\nvideos-dir = \"{v}\"\nport = {rsync_port}\nsource = \"{src}\"\n\n\
         [doctor]\nmin-free-gib = 0\n",
        r = results.display(),
        v = videos.display(),
        mp = maria.port,
        src = fleet.rsync_source_template().unwrap(),
    );
    std::fs::write(&config, &settings).unwrap();
    let out = doctor(&config).await;
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ip = |i: usize| devs[i].spec().identity.ip;
    let mp = maria.port;
    let (n1, n2, n3) = (devs[0].name(), devs[1].name(), devs[2].name());
    for (check, want) in [
        (
            "config",
            format!("config | ok | {} parses", config.display()),
        ),
        (
            "node /devices",
            format!("node /devices | ok | http://{node}/devices: 3 devices"),
        ),
        (
            &format!("{n1} MariaDB"),
            format!(
                "{n1} MariaDB | ok | node@{}:{mp} ({n1}_db): login works",
                ip(0)
            ),
        ),
        (
            &format!("{n2} MariaDB"),
            format!("{n2} MariaDB | skip | the device reports no MariaDB database"),
        ),
        (
            &format!("{n2} clock"),
            format!("{n2} clock | FAIL | 3600.0 s ahead of this node (more than 30 s)"),
        ),
        (
            "videos dir",
            format!("videos dir | FAIL | {} does not exist", videos.display()),
        ),
        (
            "mysql-backup /status",
            format!("mysql-backup /status | ok | http://127.0.0.1:{mysql_port}/status answers"),
        ),
    ] {
        assert_eq!(row(&table, check), want, "\n{table}");
    }
    for (i, d) in devs.iter().enumerate() {
        let r = row(&table, &format!("{} rsync", d.name()));
        assert!(
            r.contains(" | ok | rsync://") && r.ends_with("/ethoscope_data/ answers"),
            "{r}"
        );
        if i != 1 {
            assert!(row(&table, &format!("{} clock", d.name())).contains(" | ok | "));
        }
    }
    let maria3 = row(&table, &format!("{n3} MariaDB"));
    assert!(
        maria3.starts_with(&format!(
            "{n3} MariaDB | FAIL | node@{}:{mp} ({n3}_db): ",
            ip(2)
        )) && maria3.contains("Unknown database"),
        "{maria3}"
    );
    assert!(row(&table, "rsync-backup /status").starts_with(&format!(
        "rsync-backup /status | FAIL | http://127.0.0.1:{rsync_port}/status: "
    )));
    assert_eq!(
        fix_of(&table, &format!("{n2} clock")),
        "enable NTP on the device and on this node: timedatectl set-ntp true"
    );
    assert!(fix_of(&table, &format!("{n3} MariaDB"))
        .starts_with("on the device: CREATE USER 'node'@'%'"));
    assert_eq!(
        fix_of(&table, "rsync-backup /status"),
        "systemctl start etho-backup-rsync; journalctl -u etho-backup-rsync says why it stopped"
    );
    assert!(fix_of(&table, "videos dir").starts_with(&format!("mkdir -p {}", videos.display())));
    assert!(table.ends_with("4 failed, 0 warnings\n"), "{table}");

    // Once the videos folder exists, that row passes.
    std::fs::create_dir_all(&videos).unwrap();
    let table = String::from_utf8_lossy(&doctor(&config).await.stdout).into_owned();
    assert!(
        row(&table, "videos dir").starts_with("videos dir | ok | "),
        "{table}"
    );
    assert!(table.ends_with("3 failed, 0 warnings\n"), "{table}");

    // A broken file: its own failed row, naming file, line and key, and the rest still checked.
    std::fs::write(
        &config,
        format!("{settings}\n[doctor]\ntimeout = \"soon\"\n"),
    )
    .unwrap();
    let out = doctor(&config).await;
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1));
    let broken = row(&table, "config");
    assert!(
        broken.starts_with(&format!("config | FAIL | {}:", config.display())),
        "{broken}"
    );
    assert!(table.contains("\nnode /devices  "), "{table}");
    fleet.stop().await;
}
