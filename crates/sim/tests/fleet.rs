//! A real fleet on loopback: HTTP API shapes and faults, live SQLite files, video chunks, the
//! rsync daemon, unplugging, and MariaDB experiments with rollover.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use etho_sim::config::{default_roles, DbKind, HOSTILE_ID, HOSTILE_NAME};
use etho_sim::experiment::Schedule;
use etho_sim::identity::fleet_identities;
use etho_sim::{DeviceSpec, Fault, Fleet, FleetConfig, MariaDbTarget, Rates, Role};
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn rates() -> Rates {
    Rates {
        rois: 3,
        fps: 10.0,
        snapshot_every: Duration::from_secs(1),
        snapshot_bytes: 2048,
        video_chunk_every: Duration::from_millis(300),
        video_chunk_bytes: 4096,
        flush_every: Duration::from_millis(100),
        ..Rates::default()
    }
}

fn specs(
    first_ip: Ipv4Addr,
    roles: &[Role],
    faults: &[Vec<Fault>],
    schedule: Schedule,
) -> Vec<DeviceSpec> {
    fleet_identities(roles.len() as u32, first_ip, 1, 42)
        .unwrap()
        .into_iter()
        .zip(roles)
        .zip(faults)
        .map(|((identity, role), faults)| DeviceSpec {
            identity,
            role: *role,
            faults: faults.clone(),
            schedule: schedule.clone(),
            user: "tester".into(),
            location: "Bench".into(),
        })
        .collect()
}

async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_json(url: &str) -> reqwest::Result<Value> {
    client().get(url).send().await?.json().await
}

fn forever() -> Schedule {
    Schedule {
        start_delay: Duration::ZERO,
        run_for: None,
        pause_for: Duration::ZERO,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_fleet_api_faults_and_rsync() {
    let dir = tempfile::tempdir().unwrap();
    let roles = [
        Role::Tracker(DbKind::Sqlite),
        Role::Recorder,
        Role::Tracker(DbKind::Sqlite),
        Role::Tracker(DbKind::Sqlite),
        Role::Tracker(DbKind::Sqlite),
        Role::Tracker(DbKind::Sqlite),
    ];
    let faults = vec![
        vec![],
        vec![],
        vec![Fault::HostileName],
        vec![Fault::BadJson],
        vec![Fault::Busy],
        vec![Fault::HostileId, Fault::Slow(Duration::from_millis(300))],
    ];
    let fleet = Fleet::start(FleetConfig {
        devices: specs(Ipv4Addr::new(127, 71, 0, 10), &roles, &faults, forever()),
        data_dir: dir.path().to_path_buf(),
        http_port: 0,
        rsync_port: 0,
        rsync: true,
        mariadb: MariaDbTarget::None,
        rates: rates(),
        mdns: false,
    })
    .await
    .unwrap();
    let port = fleet.http_port();
    assert_ne!(port, 0);
    let base = |i: usize| format!("http://{}", fleet.devices()[i].http_addr());
    let d0 = &fleet.devices()[0];
    assert_eq!(d0.http_addr().ip().to_string(), "127.71.0.10");
    assert_eq!(
        fleet.devices()[1].http_addr().ip().to_string(),
        "127.71.0.11"
    );

    // /id and /data in upstream's shapes.
    let id = get_json(&format!("{}/id", base(0))).await.unwrap();
    assert_eq!(id["id"], d0.id());
    until("the first experiment", Duration::from_secs(10), || async {
        get_json(&format!("{}/data/{}", base(0), d0.id()))
            .await
            .unwrap()["status"]
            == "running"
    })
    .await;
    let data = get_json(&format!("{}/data/{}", base(0), d0.id()))
        .await
        .unwrap();
    assert_eq!(data["name"], "ETHOSCOPE_001");
    assert_eq!(data["id"], d0.id());
    assert_eq!(data["result_writer_type"], "SQLiteResultWriter");
    let file = data["backup_filename"].as_str().unwrap().to_string();
    assert!(file.ends_with(&format!("_{}.db", d0.id())), "{file}");
    // Wrong id: HTTP 200 with the firmware's traceback.
    let resp = client()
        .get(format!("{}/data/ffffffffffffffffffffffffffffffff", base(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("WrongMachineID"));

    // The SQLite file grows live, under the device's own tree, and is announced.
    let stamp = &file[..19];
    let rel = format!("results/{}/ETHOSCOPE_001/{stamp}/{file}", d0.id());
    let path = d0.root().join(&rel);
    until(
        "rows in the SQLite file",
        Duration::from_secs(10),
        || async {
            let dbs = get_json(&format!("{}/data/databases/{}", base(0), d0.id()))
                .await
                .unwrap();
            dbs["SQLite"][&file]["table_counts"]["ROI_1"]
                .as_u64()
                .unwrap_or(0)
                > 0
        },
    )
    .await;
    assert!(path.is_file(), "{}", path.display());
    let dbs = get_json(&format!("{}/data/databases/{}", base(0), d0.id()))
        .await
        .unwrap();
    assert_eq!(dbs["MariaDB"], serde_json::json!({}));
    assert_eq!(
        dbs["SQLite"][&file]["path"],
        format!("/ethoscope_data/{rel}")
    );

    // Faults.
    let d2 = &fleet.devices()[2];
    let hostile = get_json(&format!("{}/data/{}", base(2), d2.id()))
        .await
        .unwrap();
    assert_eq!(hostile["name"], HOSTILE_NAME);
    let d3 = &fleet.devices()[3];
    let text = client()
        .get(format!("{}/data/{}", base(3), d3.id()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "bad-json device sent valid JSON"
    );
    let d4 = &fleet.devices()[4];
    assert_eq!(
        get_json(&format!("{}/id", base(4))).await.unwrap()["id"],
        d4.id()
    );
    let hung = client()
        .get(format!("{}/data/{}", base(4), d4.id()))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(hung.is_err(), "busy device answered /data");
    let t = Instant::now();
    let lied = get_json(&format!("{}/id", base(5))).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "slow device answered fast"
    );
    assert_eq!(lied["id"], HOSTILE_ID);

    // The recorder writes video chunks.
    let d1 = &fleet.devices()[1];
    until("video chunks", Duration::from_secs(10), || async {
        d1.snapshot().video_chunks >= 2
    })
    .await;
    assert_eq!(
        get_json(&format!("{}/data/{}", base(1), d1.id()))
            .await
            .unwrap()["status"],
        "recording"
    );

    // The rsync daemon serves the device's own tree on its address.
    let rsync_url = format!(
        "rsync://127.71.0.10:{}/ethoscope_data/results/",
        fleet.rsync_port().unwrap()
    );
    let out = Command::new("rsync")
        .args(["-r", "--list-only", &rsync_url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&file));

    // Holding stops experiments; the file is then final and complete.
    fleet.hold_all(true);
    fleet.wait_at_rest(Duration::from_secs(10)).await.unwrap();
    let data = get_json(&format!("{}/data/{}", base(0), d0.id()))
        .await
        .unwrap();
    assert_eq!(data["status"], "stopped");
    let dbs = get_json(&format!("{}/data/databases/{}", base(0), d0.id()))
        .await
        .unwrap();
    assert_eq!(dbs["SQLite"][&file]["db_status"], "finalised");
    let reported = dbs["SQLite"][&file]["table_counts"]["ROI_1"]
        .as_u64()
        .unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM ROI_1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows as u64, reported);
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let stop: Option<String> = conn
        .query_row(
            "SELECT value FROM METADATA WHERE field = 'stop_date_time'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(stop.is_some());
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        dbs["SQLite"][&file]["filesize"].as_u64().unwrap()
    );

    // Unplugged: HTTP and rsync refuse connections; replugged: both answer again.
    d0.set_offline(true);
    until(
        "the device to go offline",
        Duration::from_secs(10),
        || async {
            client()
                .get(format!("{}/id", base(0)))
                .send()
                .await
                .is_err_and(|e| e.is_connect())
        },
    )
    .await;
    until("rsync to go down", Duration::from_secs(10), || async {
        !Command::new("rsync")
            .args(["--list-only", &rsync_url])
            .output()
            .unwrap()
            .status
            .success()
    })
    .await;
    d0.set_offline(false);
    until(
        "the device to come back",
        Duration::from_secs(10),
        || async { get_json(&format!("{}/id", base(0))).await.is_ok() },
    )
    .await;
    until("rsync to come back", Duration::from_secs(10), || async {
        Command::new("rsync")
            .args(["--list-only", &rsync_url])
            .output()
            .unwrap()
            .status
            .success()
    })
    .await;
    fleet.stop().await;
    assert_paths_inside(dir.path());
}

/// Nothing the fleet wrote is outside its data directory's expected folders.
fn assert_paths_inside(root: &Path) {
    for entry in std::fs::read_dir(root).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            ["devices", "rsyncd", "mariadb"].contains(&name.as_str()),
            "unexpected {name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_experiments_roll_over() {
    assert!(
        etho_sim::mariadbd_installed(),
        "this test needs mariadb-server installed (a skipped test would pass without proving anything)"
    );
    let dir = tempfile::tempdir().unwrap();
    let schedule = Schedule {
        start_delay: Duration::ZERO,
        run_for: Some(Duration::from_millis(2500)),
        pause_for: Duration::from_millis(500),
    };
    let roles = default_roles(2, true);
    assert_eq!(roles[0], Role::Tracker(DbKind::MariaDb));
    let fleet = Fleet::start(FleetConfig {
        devices: specs(
            Ipv4Addr::new(127, 71, 1, 10),
            &roles,
            &[vec![], vec![]],
            schedule,
        ),
        data_dir: dir.path().to_path_buf(),
        http_port: 0,
        rsync_port: 0,
        rsync: false,
        mariadb: MariaDbTarget::Auto,
        rates: rates(),
        mdns: false,
    })
    .await
    .unwrap();
    let maria = fleet.mariadb().unwrap().clone();
    assert!(maria.private);
    let d0 = fleet.devices()[0].clone();
    let url = |p: &str| format!("http://{}{p}", d0.http_addr());
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let v = get_json(&url(&format!("/data/databases/{}", d0.id())))
            .await
            .unwrap();
        let entry = &v["MariaDB"]["ETHOSCOPE_001_db"];
        if entry["table_counts"]["ROI_1"].as_u64().unwrap_or(0) > 0 {
            break entry["backup_filename"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no MariaDB experiment: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The database is reachable at the device's own address with the read-only account, and
    // names its experiment in METADATA.
    let node = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.71.1.10")
        .tcp_port(maria.port)
        .user(Some("node"))
        .pass(Some("node"))
        .db_name(Some("ETHOSCOPE_001_db"))
        .prefer_socket(false);
    let metadata_file = || async {
        use mysql_async::prelude::Queryable;
        let mut conn = mysql_async::Conn::new(node.clone()).await?;
        let v: Option<String> = conn
            .query_first("SELECT value FROM METADATA WHERE field = 'backup_filename'")
            .await?;
        conn.disconnect().await?;
        Ok::<_, mysql_async::Error>(v)
    };
    assert_eq!(
        metadata_file().await.unwrap().as_deref(),
        Some(first.as_str())
    );
    // A new experiment drops and recreates the database under a new file name.
    until("a rollover", Duration::from_secs(20), || async {
        matches!(metadata_file().await, Ok(Some(f)) if f != first)
    })
    .await;
    let second = metadata_file().await.unwrap().unwrap();
    assert!(second > first, "{second} should sort after {first}");
    let info = get_json(&url(&format!("/data/{}", d0.id()))).await.unwrap();
    assert_eq!(info["previous_backup_filename"], first.as_str());
    assert_eq!(info["result_writer_type"], "MySQLResultWriter");
    // The SQLite device of the same fleet never touches MariaDB.
    let d1 = &fleet.devices()[1];
    let dbs = get_json(&format!(
        "http://{}/data/databases/{}",
        d1.http_addr(),
        d1.id()
    ))
    .await
    .unwrap();
    assert_eq!(dbs["MariaDB"], serde_json::json!({}));
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_mariadb_server_by_url() {
    assert!(
        etho_sim::mariadbd_installed(),
        "this test needs mariadb-server installed (a skipped test would pass without proving anything)"
    );
    let ip = Ipv4Addr::new(127, 71, 2, 10);
    let server = etho_devicekit::mariadb::MariaDbBuilder::new()
        .bind_addresses([std::net::IpAddr::V4(ip)])
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let roles = [Role::Tracker(DbKind::MariaDb)];
    let fleet = Fleet::start(FleetConfig {
        devices: specs(ip, &roles, &[vec![]], forever()),
        data_dir: dir.path().to_path_buf(),
        http_port: 0,
        rsync_port: 0,
        rsync: false,
        mariadb: format!("mysql://ethoscope:ethoscope@{ip}:{}", server.port())
            .parse()
            .unwrap(),
        rates: rates(),
        mdns: false,
    })
    .await
    .unwrap();
    let info = fleet.mariadb().unwrap().clone();
    assert!(!info.private);
    assert_eq!(info.port, server.port());
    assert!(info.version.contains("MariaDB"), "{}", info.version);
    let d = fleet.devices()[0].clone();
    until(
        "rows in the external server",
        Duration::from_secs(20),
        || async {
            use mysql_async::prelude::Queryable;
            let Ok(mut conn) = server.admin_conn(Some("ETHOSCOPE_001_db")).await else {
                return false;
            };
            let n: Option<u64> = conn
                .query_first("SELECT COUNT(*) FROM ROI_1")
                .await
                .ok()
                .flatten();
            let _ = conn.disconnect().await;
            n.unwrap_or(0) > 0
        },
    )
    .await;
    assert_eq!(d.snapshot().status, etho_sim::state::RunStatus::Running);
    fleet.stop().await;
    // A bad URL is refused up front.
    assert!("mysql//x".parse::<MariaDbTarget>().is_err());
}

/// SQLite trackers write like current firmware (a WAL-mode file, its newest rows in the -wal);
/// the kill-writer fault leaves the file as a power cut does: the experiment stops with an
/// error, the -wal stays, and the rows in it are only found by recovering it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_sqlite_writer_leaves_its_wal() {
    let dir = tempfile::tempdir().unwrap();
    let roles = [Role::Tracker(DbKind::Sqlite)];
    let faults = vec![vec![Fault::KillWriter(Duration::from_millis(1500))]];
    let fleet = Fleet::start(FleetConfig {
        devices: specs(Ipv4Addr::new(127, 71, 3, 10), &roles, &faults, forever()),
        data_dir: dir.path().to_path_buf(),
        http_port: 0,
        rsync_port: 0,
        rsync: false,
        mariadb: MariaDbTarget::None,
        rates: rates(),
        mdns: false,
    })
    .await
    .unwrap();
    let d = &fleet.devices()[0];
    until(
        "the writer to be killed",
        Duration::from_secs(20),
        || async { d.snapshot().error.is_some() },
    )
    .await;
    let exp = d.snapshot().current.unwrap();
    let db = d.root().join(format!(
        "results/{}/{}/{}/{}",
        d.id(),
        d.name(),
        exp.stamp,
        exp.backup_filename
    ));
    let head = std::fs::read(&db).unwrap();
    assert_eq!((head[18], head[19]), (2, 2), "WAL mode");
    let wal = std::path::PathBuf::from(format!("{}-wal", db.display()));
    assert!(std::fs::metadata(&wal).unwrap().len() > 0, "the -wal stays");
    // Rows only a reader that recovers the WAL sees.
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(&db, copy.join("x.db")).unwrap();
    std::fs::copy(&wal, copy.join("x.db-wal")).unwrap();
    let recovered: i64 = rusqlite::Connection::open(copy.join("x.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM ROI_1", [], |r| r.get(0))
        .unwrap();
    assert!(recovered > 0);
    let file_only = rusqlite::Connection::open_with_flags(
        format!("file:{}?immutable=1", db.display()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap()
    .query_row("SELECT count(*) FROM ROI_1", [], |r| r.get::<_, i64>(0))
    .unwrap_or(0);
    assert!(
        file_only < recovered,
        "{file_only} rows without the WAL, {recovered} with it"
    );
    fleet.stop().await;
}
