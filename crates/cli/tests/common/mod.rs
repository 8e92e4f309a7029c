//! What the binary's end-to-end tests share: child `etho-backup` processes, polling the node,
//! and comparing databases and trees.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etho_sim::experiment::Schedule;
use etho_sim::identity::fleet_identities;
use etho_sim::{DeviceSpec, Role};
use mysql_async::prelude::Queryable;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_etho-backup");

/// A child `etho-backup` process, killed when dropped; its output goes to a log file.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &'static str, args: &[String], logs: &Path) -> Proc {
        let log = logs.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            // This machine's /etc/etho-backup/etho-backup.toml (if the package is installed) is
            // not the test's.
            .env("ETHO_BACKUP_CONFIG", "none")
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Proc { name, child, log }
    }

    pub fn check_alive(&mut self) {
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

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn rsync_installed() -> bool {
    Command::new("rsync")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub struct Lab {
    pub client: reqwest::Client,
    pub node: String,
    pub procs: Vec<Proc>,
}

/// Where a simulated lab's node and daemons keep their files under a temporary `root`, their
/// ports, and their command lines (short polls, as the lab tests run them).
pub struct LabSetup {
    pub root: PathBuf,
    pub logs: PathBuf,
    pub results: PathBuf,
    pub videos: PathBuf,
    pub node_port: u16,
    pub mysql_port: u16,
    pub rsync_port: u16,
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

impl LabSetup {
    /// Creates `logs`, `backup/results` and `backup/videos` under `root` and picks free ports.
    pub fn new(root: &Path) -> LabSetup {
        let setup = LabSetup {
            root: root.to_path_buf(),
            logs: root.join("logs"),
            results: root.join("backup/results"),
            videos: root.join("backup/videos"),
            node_port: free_port(),
            mysql_port: free_port(),
            rsync_port: free_port(),
        };
        for d in [&setup.logs, &setup.results, &setup.videos] {
            std::fs::create_dir_all(d).unwrap();
        }
        setup
    }

    pub fn node_addr(&self) -> String {
        format!("127.0.0.1:{}", self.node_port)
    }

    fn state(&self, what: &str) -> String {
        self.root.join("state").join(what).display().to_string()
    }

    /// `etho-backup node` polling `devices` every 0.5 s, then `extra`.
    pub fn node_args(&self, devices: &[String], extra: &[&str]) -> Vec<String> {
        let mut args = strings(&["node", "--listen", &self.node_addr()]);
        args.extend(strings(&[
            "--mysql-backup-url",
            &format!("http://127.0.0.1:{}", self.mysql_port),
            "--rsync-backup-url",
            &format!("http://127.0.0.1:{}", self.rsync_port),
            "--daemon-timeout",
            "2",
            "--state-dir",
            &self.state("node"),
            "--poll-interval",
            "0.5",
            "--device-timeout",
            "1",
        ]));
        for d in devices {
            args.extend(strings(&["--device", d]));
        }
        args.extend(strings(extra));
        args
    }

    /// `etho-backup mysql-backup` against the lab's MariaDB on `maria_port`.
    pub fn mysql_args(&self, maria_port: u16, interval: &str) -> Vec<String> {
        strings(&[
            "mysql-backup",
            "-p",
            &self.mysql_port.to_string(),
            "-i",
            &self.node_addr(),
            "-r",
            &self.results.display().to_string(),
            "--interval",
            interval,
            "--mysql-port",
            &maria_port.to_string(),
            "--state-dir",
            &self.state("mysql"),
        ])
    }

    /// `etho-backup rsync-backup` pulling from `source`.
    pub fn rsync_args(&self, source: &str, interval: &str) -> Vec<String> {
        strings(&[
            "rsync-backup",
            "-p",
            &self.rsync_port.to_string(),
            "-i",
            &self.node_addr(),
            "-r",
            &self.results.display().to_string(),
            "-v",
            &self.videos.display().to_string(),
            "--source",
            source,
            "--interval",
            interval,
            "--state-dir",
            &self.state("rsync"),
        ])
    }

    /// The lab around `procs`, asking the node.
    pub fn lab(&self, procs: Vec<Proc>) -> Lab {
        Lab {
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            node: format!("http://{}", self.node_addr()),
            procs,
        }
    }
}

impl Lab {
    pub async fn get(&mut self, path: &str) -> Value {
        for p in &mut self.procs {
            p.check_alive();
        }
        match self.client.get(format!("{}{path}", self.node)).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// Polls `path` until `ok` holds, or fails with the last document after `timeout`.
    pub async fn wait_for(
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
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Bytes(Vec<u8>),
}

pub fn mysql_cell(v: mysql_async::Value) -> Cell {
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

pub fn sqlite_cell(v: rusqlite::types::ValueRef<'_>) -> Cell {
    use rusqlite::types::ValueRef as V;
    match v {
        V::Null => Cell::Null,
        V::Integer(i) => Cell::Int(i),
        V::Real(r) => Cell::Real(r),
        V::Text(t) => Cell::Bytes(t.to_vec()),
        V::Blob(b) => Cell::Bytes(b.to_vec()),
    }
}

pub fn sorted(mut rows: Vec<Vec<Cell>>) -> Vec<Vec<Cell>> {
    rows.sort_by(|a, b| a.partial_cmp(b).expect("no NaN in ethoscope data"));
    rows
}

/// Every table of `<db>`: column names and rows (sorted, so keyless tables compare as multisets).
pub async fn mariadb_tables(
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

pub fn sqlite_tables(path: &Path) -> BTreeMap<String, (Vec<String>, Vec<Vec<Cell>>)> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    tables_of(&conn)
}

/// Every table of an open database: column names and rows (sorted).
pub fn tables_of(conn: &rusqlite::Connection) -> BTreeMap<String, (Vec<String>, Vec<Vec<Cell>>)> {
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
pub fn assert_sqlite_copy(source: &Path, copy: &Path, name: &str) {
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

/// A device tree and its archived copy hold the same files: SQLite databases equal row by row
/// as single-file copies ([`assert_sqlite_copy`]), every other file byte for byte.
pub fn assert_tree_copied(source: &Path, copy: &Path, name: &str) {
    let (src, dst) = (files_below(source), files_below(copy));
    assert_eq!(
        src.keys().collect::<Vec<_>>(),
        dst.keys().collect::<Vec<_>>(),
        "{name}: files differ between {} and {}",
        source.display(),
        copy.display()
    );
    for (p, bytes) in &src {
        if bytes.starts_with(b"SQLite format 3\0") {
            assert_sqlite_copy(&source.join(p), &copy.join(p), name);
        } else {
            assert!(bytes == &dst[p], "{name}: {} differs", p.display());
        }
    }
}

/// Opens a closed database read-only without creating `-shm`/`-wal` next to it.
pub fn open_immutable(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        format!("file:{}?immutable=1", path.display()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap()
}

/// Every regular file below `root`, relative path → bytes.
pub fn files_below(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
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

pub fn side<'a>(status: &'a Value, id: &str, side: &str) -> &'a Value {
    &status["unified_devices"][id][side]
}

/// The side finished a run that started at or after `since` and is not running now.
pub fn ran_since(status: &Value, id: &str, which: &str, since: i64) -> bool {
    let s = side(status, id, which);
    s["processing"] == false && s["started"].as_i64().is_some_and(|t| t >= since)
}

/// Devices with `roles` that run all the time, on `127.<second>.<x>.10…` with `x` taken from the
/// process id, so tests running at the same time are unlikely to collide; `seed` picks their ids.
pub fn always_running(roles: &[Role], second: u8, seed: u64, user: &str) -> Vec<DeviceSpec> {
    let third = (std::process::id() % 200) as u8 + 20;
    let n = roles.len() as u32;
    fleet_identities(n, Ipv4Addr::new(127, second, third, 10), 1, seed)
        .unwrap()
        .into_iter()
        .zip(roles.iter().copied())
        .map(|(identity, role)| DeviceSpec {
            identity,
            role,
            faults: vec![],
            schedule: Schedule {
                start_delay: Duration::ZERO,
                run_for: None,
                pause_for: Duration::ZERO,
            },
            user: user.into(),
            location: "Bench".into(),
        })
        .collect()
}
