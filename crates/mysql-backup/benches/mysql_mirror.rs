//! Benchmark of the MySQL mirror (run through `bench/mysql.sh`).
//!
//! For each size: a private mariadbd holding an ethoscope experiment (20 ROI tables × N rows plus
//! snapshots, sensors, DAM), then
//! - the baseline: a raw single-stream read of every table with `mariadb --quick` to /dev/null;
//! - the initial mirror by the real daemon binary in one-shot mode (`etho-backup mysql-backup -e`),
//!   under `/usr/bin/time -v` for its peak RSS;
//! - cycles with nothing new: the engine in-process, first job after a restart (full recount)
//!   and steady state (counts remembered), and the one-shot process end to end.
//!
//! Arguments: `--etho-backup PATH` (release binary), `--rows N[,N...]` rows per ROI table,
//! `--repeat K`. Prints a Markdown report on stdout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use etho_devicekit::mariadb::{MariaDb, MariaDbBuilder};
use etho_devicekit::schema::ExperimentSpec;
use etho_devicekit::writer_mariadb::MariaDbExperiment;
use etho_model::device::DeviceInfo;
use etho_mysql_backup::{Mirror, MirrorConfig};
use mysql_async::prelude::Queryable;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const ID: &str = "0123456789abcdef0123456789abcdef";
const NAME: &str = "ETHOSCOPE_001";

struct Args {
    etho_backup: PathBuf,
    rows: Vec<u64>,
    repeat: usize,
}

fn args() -> Args {
    let mut a = Args {
        etho_backup: PathBuf::from("target/release/etho-backup"),
        rows: vec![25_000, 100_000],
        repeat: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--etho-backup" => a.etho_backup = it.next().expect("path").into(),
            "--rows" => {
                a.rows = it
                    .next()
                    .expect("list")
                    .split(',')
                    .map(|s| s.parse().expect("number"))
                    .collect()
            }
            "--repeat" => a.repeat = it.next().expect("n").parse().expect("number"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct StubNode {
    url: String,
    stop: CancellationToken,
}

async fn stub_node(body: String) -> StubNode {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/devices",
        get(move || {
            let body = body.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await;
    });
    StubNode { url, stop }
}

/// Runs the one-shot daemon under /usr/bin/time -v: (wall seconds, peak RSS kB).
fn one_shot(bin: &Path, node: &str, port: u16, results: &Path, state: &Path) -> (f64, u64) {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(bin)
        .args(["mysql-backup", "-e", "1", "-i", node])
        .arg("--mysql-port")
        .arg(port.to_string())
        .arg("-r")
        .arg(results)
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run etho-backup under /usr/bin/time");
    let secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "one-shot backup failed: {stderr}");
    let rss = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("peak RSS in /usr/bin/time output");
    (secs, rss)
}

/// Raw single-stream read of `tables` to /dev/null with the mariadb client: seconds.
fn raw_read(server: &MariaDb, db: &str, tables: &[String]) -> f64 {
    let sql = tables
        .iter()
        .map(|t| format!("SELECT * FROM `{t}`;"))
        .collect::<String>();
    let started = Instant::now();
    let status = Command::new("mariadb")
        .args([
            "--quick",
            "--batch",
            "-h",
            "127.0.0.1",
            "-u",
            "node",
            "-pnode",
        ])
        .arg(format!("-P{}", server.port()))
        .arg(db)
        .arg("-e")
        .arg(sql)
        .stdout(Stdio::null())
        .status()
        .expect("run the mariadb client");
    assert!(status.success());
    started.elapsed().as_secs_f64()
}

async fn one_size(args: &Args, rows_per_roi: u64) {
    let server = MariaDbBuilder::new()
        .arg("--innodb-buffer-pool-size=1G")
        .start()
        .await
        .unwrap();
    let mut spec = ExperimentSpec::new(ID, NAME, 1_752_141_600);
    spec.n_rois = 20;
    spec.snapshot_every_ms = 60_000;
    let load = Instant::now();
    let mut exp = MariaDbExperiment::create(server.admin_opts(None), spec.clone())
        .await
        .unwrap();
    exp.append_frames(rows_per_roi).await.unwrap();
    let counts = exp.table_counts().await.unwrap();
    let total_rows: u64 = counts.values().sum();
    let tables: Vec<String> = counts.keys().cloned().collect();
    let snapshot_bytes: Option<u64> = exp
        .conn()
        .query_first("SELECT SUM(LENGTH(img)) FROM IMG_SNAPSHOTS")
        .await
        .unwrap();
    eprintln!(
        "loaded {total_rows} rows in {:.1}s",
        load.elapsed().as_secs_f64()
    );

    let node = stub_node(
        json!({ID: {"id": ID, "name": NAME, "ip": "127.0.0.1", "status": "running",
                    "databases": {"MariaDB": {spec.db_name(): {"backup_filename": spec.backup_filename()}}}}})
        .to_string(),
    )
    .await;

    // Warm the buffer pool, then alternate baseline and mirror runs.
    raw_read(&server, &spec.db_name(), &tables);
    let mut raw = Vec::new();
    let mut initial = Vec::new();
    let mut rss = Vec::new();
    let work = tempfile::tempdir().unwrap();
    let mut last_results = PathBuf::new();
    for i in 0..args.repeat {
        raw.push(raw_read(&server, &spec.db_name(), &tables));
        let results = work.path().join(format!("results{i}"));
        let state = work.path().join(format!("state{i}"));
        let (secs, kb) = one_shot(
            &args.etho_backup,
            &node.url,
            server.port(),
            &results,
            &state,
        );
        initial.push(secs);
        rss.push(kb as f64);
        last_results = results;
    }
    let raw_s = median(raw);
    let initial_s = median(initial);

    // Nothing new: the engine in-process, as the daemon runs it every cycle.
    let mut cfg = MirrorConfig::new(&last_results);
    cfg.mysql_port = server.port();
    let device = DeviceInfo::from_entry(
        ID,
        &json!({"id": ID, "name": NAME, "ip": "127.0.0.1", "status": "running",
                "databases": {"MariaDB": {spec.db_name(): {}}}}),
    )
    .unwrap();
    let mirror = Mirror::new(cfg);
    let cancel = CancellationToken::new();
    let t = Instant::now();
    let first = mirror.run(&device, &cancel, &|_| {}).await.unwrap();
    let cold_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(first.rows_copied, 0);
    assert!(first.mismatches.is_empty());
    let mut warm = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let r = mirror.run(&device, &cancel, &|_| {}).await.unwrap();
        warm.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.rows_copied, 0);
    }
    let state = work.path().join("state-nochange");
    let (proc_s, _) = one_shot(
        &args.etho_backup,
        &node.url,
        server.port(),
        &last_results,
        &state,
    );

    let raw_rate = total_rows as f64 / raw_s;
    let mirror_rate = total_rows as f64 / initial_s;
    println!(
        "### {} rows per ROI table ({total_rows} rows, {:.1} MB of snapshots)\n",
        rows_per_roi,
        snapshot_bytes.unwrap_or(0) as f64 / 1e6
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| raw read, `mariadb --quick` to /dev/null (median of {}) | {raw_s:.2} s = {raw_rate:.0} rows/s |", args.repeat);
    println!("| initial mirror, `etho-backup mysql-backup -e 1` (median of {}) | {initial_s:.2} s = {mirror_rate:.0} rows/s |", args.repeat);
    println!(
        "| **ratio mirror / raw read** | **{:.2}×** |",
        mirror_rate / raw_rate
    );
    println!(
        "| peak RSS of the one-shot process (max of {}) | {:.1} MB |",
        args.repeat,
        rss.iter().cloned().fold(0.0, f64::max) / 1024.0
    );
    println!("| no-change job, first after a restart (full recount) | {cold_ms:.1} ms |");
    println!(
        "| no-change job, steady state (median / p90 of 200) | {:.2} ms / {:.2} ms |",
        median(warm.clone()),
        percentile(warm, 0.9)
    );
    println!(
        "| no-change one-shot process end to end (start, discovery, job, exit) | {:.0} ms |\n",
        proc_s * 1000.0
    );
    node.stop.cancel();
    drop(server);
}

fn main() {
    let args = args();
    assert!(
        args.etho_backup.is_file(),
        "{} not found: build it with cargo build --release -p etho-backup",
        args.etho_backup.display()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for &rows in &args.rows {
            one_size(&args, rows).await;
        }
    });
}
