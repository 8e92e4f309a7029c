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

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etho_sim::experiment::Schedule;
use etho_sim::identity::fleet_identities;
use etho_sim::{DbKind, DeviceSpec, Fleet, FleetConfig, MariaDbTarget, Rates, Role};
use mysql_async::prelude::Queryable;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_etho-backup");

/// A child `etho-backup` process, killed when dropped; its output goes to a log file.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, args: &[String], logs: &Path) -> Proc {
        let log = logs.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Proc { name, child, log }
    }

    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "etho-backup {} exited ({status}):\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rsync_installed() -> bool {
    Command::new("rsync")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Lab {
    client: reqwest::Client,
    node: String,
    procs: Vec<Proc>,
}

impl Lab {
    async fn get(&mut self, path: &str) -> Value {
        for p in &mut self.procs {
            p.check_alive();
        }
        match self.client.get(format!("{}{path}", self.node)).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// Polls `path` until `ok` holds, or fails with the last document after `timeout`.
    async fn wait_for(
        &mut self,
        what: &str,
        path: &str,
        timeout: Duration,
        mut ok: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let doc = self.get(path).await;
            if ok(&doc) {
                return doc;
            }
            if Instant::now() >= deadline {
                let logs: String = self
                    .procs
                    .iter()
                    .map(|p| {
                        let text = std::fs::read_to_string(&p.log).unwrap_or_default();
                        let tail: Vec<&str> = text.lines().rev().take(15).collect();
                        format!(
                            "--- {} ---\n{}\n",
                            p.name,
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        )
                    })
                    .collect();
                panic!("timed out waiting for {what}; last {path}:\n{doc:#}\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A value as both databases can hold it: text and blobs compare as bytes.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Bytes(Vec<u8>),
}

fn mysql_cell(v: mysql_async::Value) -> Cell {
    use mysql_async::Value as V;
    match v {
        V::NULL => Cell::Null,
        V::Int(i) => Cell::Int(i),
        V::UInt(u) => Cell::Int(i64::try_from(u).unwrap()),
        // A FLOAT as MariaDB shows it (shortest decimal that reads back as the same f32), which
        // is what a client of the text protocol, like upstream's, receives.
        V::Float(f) => Cell::Real(f.to_string().parse().unwrap()),
        V::Double(d) => Cell::Real(d),
        V::Bytes(b) => Cell::Bytes(b),
        other => panic!("unexpected MariaDB value {other:?}"),
    }
}

fn sqlite_cell(v: rusqlite::types::ValueRef<'_>) -> Cell {
    use rusqlite::types::ValueRef as V;
    match v {
        V::Null => Cell::Null,
        V::Integer(i) => Cell::Int(i),
        V::Real(r) => Cell::Real(r),
        V::Text(t) => Cell::Bytes(t.to_vec()),
        V::Blob(b) => Cell::Bytes(b.to_vec()),
    }
}

fn sorted(mut rows: Vec<Vec<Cell>>) -> Vec<Vec<Cell>> {
    rows.sort_by(|a, b| a.partial_cmp(b).expect("no NaN in ethoscope data"));
    rows
}

/// Every table of `<db>`: column names and rows (sorted, so keyless tables compare as multisets).
async fn mariadb_tables(
    opts: &mysql_async::Opts,
    db: &str,
) -> BTreeMap<String, (Vec<String>, Vec<Vec<Cell>>)> {
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
        let cols: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (db, &t),
            )
            .await
            .unwrap();
        let rows: Vec<mysql_async::Row> = conn
            .exec(format!("SELECT * FROM `{db}`.`{t}`"), ())
            .await
            .unwrap();
        let rows = rows
            .into_iter()
            .map(|r| r.unwrap().into_iter().map(mysql_cell).collect())
            .collect();
        out.insert(t, (cols, sorted(rows)));
    }
    conn.disconnect().await.unwrap();
    out
}

fn sqlite_tables(path: &Path) -> BTreeMap<String, (Vec<String>, Vec<Vec<Cell>>)> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    tables_of(&conn)
}

/// Every table of an open database: column names and rows (sorted).
fn tables_of(conn: &rusqlite::Connection) -> BTreeMap<String, (Vec<String>, Vec<Vec<Cell>>)> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = BTreeMap::new();
    for t in names {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let cols: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
        let n = cols.len();
        let rows = stmt
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| sqlite_cell(r.get_ref(i).unwrap()))
                    .collect::<Vec<_>>())
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        out.insert(t, (cols, sorted(rows)));
    }
    out
}

/// A device's SQLite result file (written in WAL mode, closed) and its archived copy: the copy is
/// a single-file rollback-journal database that passes integrity_check and holds the same tables,
/// columns and rows.
fn assert_sqlite_copy(source: &Path, copy: &Path, name: &str) {
    let head = std::fs::read(source).unwrap();
    assert_eq!(
        (head[18], head[19]),
        (2, 2),
        "{name}: the device writes in WAL mode"
    );
    let head = std::fs::read(copy).unwrap();
    assert_eq!(
        (head[18], head[19]),
        (1, 1),
        "{name}: the copy is a single file"
    );
    let ok: String = open_immutable(copy)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{name}");
    let (want, got) = (
        tables_of(&open_immutable(source)),
        tables_of(&open_immutable(copy)),
    );
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{name}: tables differ"
    );
    for (table, (cols, rows)) in &want {
        let (ccols, crows) = &got[table];
        assert_eq!(cols, ccols, "{name}: columns of {table}");
        assert_eq!(rows.len(), crows.len(), "{name}: rows of {table}");
        if let Some((a, b)) = rows.iter().zip(crows).find(|(a, b)| a != b) {
            panic!("{name}: {table} differs from its source: {a:?} vs {b:?}");
        }
    }
    assert!(
        want["ROI_1"].1.len() > 10,
        "{name}: too little data to prove anything"
    );
}

/// Opens a closed database read-only without creating `-shm`/`-wal` next to it.
fn open_immutable(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        format!("file:{}?immutable=1", path.display()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap()
}

/// Every regular file below `root`, relative path → bytes.
fn files_below(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn side<'a>(status: &'a Value, id: &str, side: &str) -> &'a Value {
    &status["unified_devices"][id][side]
}

/// The side finished a run that started at or after `since` and is not running now.
fn ran_since(status: &Value, id: &str, which: &str, since: i64) -> bool {
    let s = side(status, id, which);
    s["processing"] == false && s["started"].as_i64().is_some_and(|t| t >= since)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_lab_is_backed_up_completely() {
    if !etho_sim::mariadbd_installed() || !rsync_installed() {
        panic!("the end-to-end test needs mariadb-server and rsync installed");
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let logs = root.join("logs");
    let results = root.join("backup/results");
    let videos = root.join("backup/videos");
    for d in [&logs, &results, &videos] {
        std::fs::create_dir_all(d).unwrap();
    }

    // The fleet: two MariaDB trackers, two SQLite trackers, one video recorder.
    let roles = [
        Role::Tracker(DbKind::MariaDb),
        Role::Tracker(DbKind::Sqlite),
        Role::Tracker(DbKind::MariaDb),
        Role::Tracker(DbKind::Sqlite),
        Role::Recorder,
    ];
    // A first address unlikely to collide with other tests running at the same time.
    let third = (std::process::id() % 200) as u8 + 20;
    let devices = fleet_identities(roles.len() as u32, Ipv4Addr::new(127, 74, third, 10), 1, 5)
        .unwrap()
        .into_iter()
        .zip(roles)
        .map(|(identity, role)| DeviceSpec {
            identity,
            role,
            faults: vec![],
            schedule: Schedule {
                start_delay: Duration::ZERO,
                run_for: None,
                pause_for: Duration::ZERO,
            },
            user: "e2e".into(),
            location: "Bench".into(),
        })
        .collect();
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
    let node_port = free_port();
    let mysql_port = free_port();
    let rsync_port = free_port();
    let node_addr = format!("127.0.0.1:{node_port}");
    let s = |v: &str| v.to_string();
    let mut node_args = vec![
        s("node"),
        s("--listen"),
        node_addr.clone(),
        s("--mysql-backup-url"),
        format!("http://127.0.0.1:{mysql_port}"),
        s("--rsync-backup-url"),
        format!("http://127.0.0.1:{rsync_port}"),
        s("--daemon-timeout"),
        s("2"),
        s("--state-dir"),
        root.join("state/node").display().to_string(),
        s("--poll-interval"),
        s("0.5"),
        s("--device-timeout"),
        s("1"),
    ];
    for d in fleet.device_addresses() {
        node_args.push(s("--device"));
        node_args.push(d);
    }
    let procs = vec![
        Proc::spawn("node", &node_args, &logs),
        Proc::spawn(
            "mysql-backup",
            &[
                s("mysql-backup"),
                s("-p"),
                mysql_port.to_string(),
                s("-i"),
                node_addr.clone(),
                s("-r"),
                results.display().to_string(),
                s("--interval"),
                s("2"),
                s("--mysql-port"),
                maria.port.to_string(),
                s("--state-dir"),
                root.join("state/mysql").display().to_string(),
            ],
            &logs,
        ),
        Proc::spawn(
            "rsync-backup",
            &[
                s("rsync-backup"),
                s("-p"),
                rsync_port.to_string(),
                s("-i"),
                node_addr.clone(),
                s("-r"),
                results.display().to_string(),
                s("-v"),
                videos.display().to_string(),
                s("--source"),
                fleet.rsync_source_template().unwrap(),
                s("--interval"),
                s("2"),
                s("--state-dir"),
                root.join("state/rsync").display().to_string(),
            ],
            &logs,
        ),
    ];
    let mut lab = Lab {
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
        node: format!("http://{node_addr}"),
        procs,
    };
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
            let src = files_below(&dev.root().join("results").join(id));
            let dst = files_below(&results.join(id));
            if dev.spec().role == Role::Tracker(DbKind::Sqlite) {
                assert_eq!(
                    src.len(),
                    1,
                    "{}: one experiment file, no -wal left",
                    dev.name()
                );
            }
            assert_eq!(
                src.keys().collect::<Vec<_>>(),
                dst.keys().collect::<Vec<_>>(),
                "{}: result files differ",
                dev.name()
            );
            for (p, bytes) in &src {
                if bytes.starts_with(b"SQLite format 3\0") {
                    assert_sqlite_copy(
                        &dev.root().join("results").join(id).join(p),
                        &results.join(id).join(p),
                        dev.name(),
                    );
                } else {
                    assert!(bytes == &dst[p], "{}: {} differs", dev.name(), p.display());
                }
            }
        }
        let src = files_below(&dev.root().join("videos").join(id));
        let dst = files_below(&videos.join(id));
        assert_eq!(
            src.keys().collect::<Vec<_>>(),
            dst.keys().collect::<Vec<_>>(),
            "{}: video files differ",
            dev.name()
        );
        for (p, bytes) in &src {
            assert!(bytes == &dst[p], "{}: {} differs", dev.name(), p.display());
        }
        if dev.spec().role == Role::Recorder {
            assert!(src.len() >= 2, "the recorder wrote {} chunks", src.len());
        }
    }

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
