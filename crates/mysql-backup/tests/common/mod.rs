//! Shared test helpers: a real mariadbd with an ethoscope experiment, device entries, an
//! independent row-by-row comparison of the device database with its mirror, and a stub node.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etho_devicekit::mariadb::MariaDb;
use etho_devicekit::schema::ExperimentSpec;
use etho_devicekit::writer_mariadb::MariaDbExperiment;
use etho_model::device::DeviceInfo;
use etho_mysql_backup::MirrorConfig;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use serde_json::{json, Value};

pub const ID: &str = "0123456789abcdef0123456789abcdef";
pub const OTHER_ID: &str = "fedcba9876543210fedcba9876543210";
pub const NAME: &str = "ETHOSCOPE_001";
pub const START: i64 = 1_752_141_600; // 2025-07-10 10:00:00 UTC

/// A small but complete experiment: 4 ROIs, snapshots every 20 s of simulated time.
pub fn spec() -> ExperimentSpec {
    let mut s = ExperimentSpec::new(ID, NAME, START);
    s.n_rois = 4;
    s.snapshot_every_ms = 20_000;
    s.snapshot_bytes = 20_000;
    s
}

/// A device entry as the node would list it, for a server on 127.0.0.1.
pub fn device_json(id: &str, name: &str, filename: &str) -> Value {
    json!({
        "id": id, "name": name, "ip": "127.0.0.1", "status": "running",
        "databases": {"MariaDB": {format!("{name}_db"): {"backup_filename": filename, "db_status": "tracking"}}, "SQLite": {}}
    })
}

pub fn device(id: &str, name: &str, filename: &str) -> DeviceInfo {
    DeviceInfo::from_entry(id, &device_json(id, name, filename)).unwrap()
}

pub fn config(server: &MariaDb, results: &Path) -> MirrorConfig {
    let mut c = MirrorConfig::new(results);
    c.mysql_port = server.port();
    c.connect_timeout = Duration::from_secs(5);
    c
}

pub async fn start_with(spec: ExperimentSpec, frames: u64) -> (MariaDb, MariaDbExperiment) {
    let server = MariaDb::start().await.unwrap();
    let mut exp = MariaDbExperiment::create(server.admin_opts(None), spec)
        .await
        .unwrap();
    if frames > 0 {
        exp.append_frames(frames).await.unwrap();
    }
    (server, exp)
}

pub fn mirror_path(results: &Path, spec: &ExperimentSpec) -> PathBuf {
    results
        .join(&spec.machine_id)
        .join(&spec.machine_name)
        .join(spec.date_time())
        .join(spec.backup_filename())
}

pub fn no_progress() -> impl Fn(&etho_mysql_backup::MirrorProgress) + Send + Sync {
    |_| {}
}

/// A value normalised independently of the code under test.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum N {
    Null,
    Int(i64),
    /// Floats compared at f32 precision (FLOAT columns).
    Real(u32),
    Bytes(Vec<u8>),
}

fn from_remote(v: mysql_async::Value) -> N {
    use mysql_async::Value::*;
    match v {
        NULL => N::Null,
        Int(i) => N::Int(i),
        UInt(u) => N::Int(u as i64),
        Float(f) => N::Real(f.to_bits()),
        Double(d) => N::Real((d as f32).to_bits()),
        Bytes(b) => N::Bytes(b),
        other => N::Bytes(format!("{other:?}").into_bytes()),
    }
}

fn from_local(v: rusqlite::types::Value) -> N {
    use rusqlite::types::Value::*;
    match v {
        Null => N::Null,
        Integer(i) => N::Int(i),
        Real(r) => N::Real((r as f32).to_bits()),
        Text(s) => N::Bytes(s.into_bytes()),
        Blob(b) => N::Bytes(b),
    }
}

pub async fn remote_rows(conn: &mut Conn, table: &str) -> Vec<Vec<N>> {
    let sql = format!("SELECT * FROM `{}`", table.replace('`', "``"));
    let mut result = conn.exec_iter(sql, ()).await.unwrap();
    let mut out = Vec::new();
    if let Some(mut stream) = result.stream::<Row>().await.unwrap() {
        while let Some(row) = stream.next().await {
            out.push(row.unwrap().unwrap().into_iter().map(from_remote).collect());
        }
    }
    out
}

pub fn local_rows(db: &rusqlite::Connection, table: &str) -> Vec<Vec<N>> {
    let mut stmt = db
        .prepare(&format!("SELECT * FROM \"{}\"", table.replace('"', "\"\"")))
        .unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| r.get::<_, rusqlite::types::Value>(i))
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap()
    .map(|r| r.unwrap().into_iter().map(from_local).collect())
    .collect()
}

pub async fn remote_tables(conn: &mut Conn) -> Vec<String> {
    conn.query("SHOW TABLES").await.unwrap()
}

pub fn local_tables(db: &rusqlite::Connection) -> Vec<String> {
    let mut stmt = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// Asserts the mirror holds exactly the device's rows, table by table: id-keyed tables row by row
/// in id order, the others as multisets. `skip` lists remote tables expected to be absent.
/// Returns rows per table.
pub async fn assert_mirror_equals(
    server: &MariaDb,
    db_name: &str,
    path: &Path,
    skip: &[&str],
) -> BTreeMap<String, usize> {
    assert_mirror_equals_except(server, db_name, path, skip, &[]).await
}

/// [`assert_mirror_equals`], without comparing the tables in `elsewhere` (mirrored, but checked
/// value by value by the caller).
pub async fn assert_mirror_equals_except(
    server: &MariaDb,
    db_name: &str,
    path: &Path,
    skip: &[&str],
    elsewhere: &[&str],
) -> BTreeMap<String, usize> {
    let mut conn = Conn::new(server.node_opts(Some(db_name))).await.unwrap();
    let db = rusqlite::Connection::open(path).unwrap();
    let local = local_tables(&db);
    let mut counts = BTreeMap::new();
    for table in remote_tables(&mut conn).await {
        if skip.contains(&table.as_str()) {
            assert!(!local.contains(&table), "{table} must not be mirrored");
            continue;
        }
        assert!(local.contains(&table), "{table} missing from the mirror");
        if elsewhere.contains(&table.as_str()) {
            continue;
        }
        let mut r = remote_rows(&mut conn, &table).await;
        let mut l = local_rows(&db, &table);
        r.sort();
        l.sort();
        assert_eq!(r.len(), l.len(), "{table}: row counts differ");
        for (i, (a, b)) in r.iter().zip(&l).enumerate() {
            assert_eq!(a, b, "{table}: row {i} differs");
        }
        counts.insert(table, r.len());
    }
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    conn.disconnect().await.unwrap();
    counts
}

/// The DAM dump must have exactly one line per CSV_DAM_ACTIVITY row, in id order.
pub fn assert_dam_dump_matches(path: &Path) {
    let txt = path.with_extension("txt");
    let text = std::fs::read_to_string(&txt).unwrap();
    let db = rusqlite::Connection::open(path).unwrap();
    let ids: Vec<i64> = db
        .prepare("SELECT id FROM CSV_DAM_ACTIVITY ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let line_ids: Vec<i64> = text
        .lines()
        .map(|l| l.split('\t').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(line_ids, ids, "DAM dump lines vs rows");
    assert!(!ids.is_empty());
}

/// Every regular file under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A stub node: `GET /devices` answers `body` with `content_type`.
pub struct StubNode {
    pub addr: SocketAddr,
    body: std::sync::Arc<std::sync::Mutex<(String, &'static str)>>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl StubNode {
    pub async fn start(body: String) -> StubNode {
        use axum::routing::get;
        let shared = std::sync::Arc::new(std::sync::Mutex::new((body, "application/json")));
        let state = shared.clone();
        let app = axum::Router::new().route(
            "/devices",
            get(move || {
                let state = state.clone();
                async move {
                    let (body, ct) = state.lock().unwrap().clone();
                    ([(axum::http::header::CONTENT_TYPE, ct)], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
        StubNode {
            addr,
            body: shared,
            shutdown,
        }
    }

    pub fn set(&self, body: String, content_type: &'static str) {
        *self.body.lock().unwrap() = (body, content_type);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for StubNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
