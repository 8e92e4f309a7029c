//! Getting the data back, end to end: a simulated lab (real mariadbd, real rsync daemons) backed up
//! by both daemons, served by the node's `/archive`, read the way labs read it.
//!
//! - While a MariaDB device writes fast, its mirror database is downloaded again and again; every
//!   copy passes `integrity_check`.
//! - Once the data is at rest: the listing equals the files on disk, every downloaded database
//!   holds the same rows as the archive copy, a `Range` returns the right bytes, each experiment's
//!   zip holds exactly its files, `index.txt` matches the archive (and is written to the results
//!   folder with `--write-index`), and ethoscopy (when `ETHOSCOPY_PYTHON` names a Python with it,
//!   as `scripts/test` arranges) loads the files it fetched over HTTP.
//!
//! A second test sends traversal attempts to a node running under `strace` and checks that each
//! gets a 404, that nothing outside the roots is opened, and that every open below a root carries
//! `O_NOFOLLOW`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use etho_sim::{DbKind, Fleet, FleetConfig, MariaDbTarget, Rates, Role};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A name the archive lists: not hidden, not a SQLite companion or the mirror's lock.
fn listable(name: &str) -> bool {
    !name.starts_with('.')
        && !["-wal", "-shm", "-journal", ".lock", ".part"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// `results/<id>/<name>/<date>/<file>` → size, for every listable regular file four levels deep.
fn on_disk(results: &Path, videos: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (kind, root) in [("results", results), ("videos", videos)] {
        for (rel, bytes) in files_below(root) {
            let parts: Vec<_> = rel.iter().collect();
            if parts.len() == 4 && listable(&parts[3].to_string_lossy()) {
                out.insert(format!("{kind}/{}", rel.display()), bytes.len() as u64);
            }
        }
    }
    out
}

/// Every page of `/archive?<query>`: `root/path` → the file's JSON.
async fn listing(lab: &mut Lab, query: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut next = Some(format!("/archive?{query}"));
    while let Some(path) = next {
        let doc = lab.get(&path).await;
        assert!(doc["devices"].is_array(), "{path}: {doc}");
        for d in doc["devices"].as_array().unwrap() {
            for x in d["experiments"].as_array().unwrap() {
                for f in x["files"].as_array().unwrap() {
                    let key = format!(
                        "{}/{}/{}",
                        f["root"].as_str().unwrap(),
                        x["path"].as_str().unwrap(),
                        f["name"].as_str().unwrap()
                    );
                    out.insert(key, f.clone());
                }
            }
        }
        next = doc["next"].as_str().map(String::from);
    }
    out
}

/// Waits for two publications of the index after now (a whole scan and analysis).
async fn fresh_index(lab: &mut Lab) {
    let first = lab.get("/archive").await["version"].as_u64().unwrap_or(0);
    lab.wait_for(
        "a fresh archive index",
        "/archive",
        Duration::from_secs(30),
        |d| d["version"].as_u64().unwrap_or(0) >= first + 3,
    )
    .await;
}

async fn download(client: &reqwest::Client, url: &str) -> Vec<u8> {
    let r = client.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.bytes().await.unwrap().to_vec()
}

fn integrity(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// scopr's `last_point_db`: the last row's `t` of every ROI table, the largest.
fn last_point(path: &Path) -> Option<i64> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let rois: Vec<i64> = conn
        .prepare("SELECT roi_idx FROM ROI_MAP")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rois.iter()
        .filter_map(|r| {
            conn.query_row(
                &format!("SELECT t FROM ROI_{r} ORDER BY id DESC LIMIT 1"),
                [],
                |row| row.get::<_, i64>(0),
            )
            .ok()
        })
        .max()
}

fn lab_fleet(root: &Path) -> FleetConfig {
    let roles = [
        Role::Tracker(DbKind::MariaDb),
        Role::Tracker(DbKind::Sqlite),
        Role::Recorder,
    ];
    let devices = always_running(&roles, 75, 3, "archive");
    FleetConfig {
        devices,
        data_dir: root.join("fleet"),
        http_port: 0,
        rsync_port: 0,
        rsync: true,
        mariadb: MariaDbTarget::Auto,
        rates: Rates {
            rois: 10,
            fps: 25.0,
            snapshot_every: Duration::from_secs(1),
            snapshot_bytes: 20_000,
            video_chunk_every: Duration::from_millis(700),
            video_chunk_bytes: 64 * 1024,
            flush_every: Duration::from_millis(200),
            ..Rates::default()
        },
        mdns: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_of_a_simulated_lab_can_be_browsed_and_restored() {
    if !etho_sim::mariadbd_installed() || !rsync_installed() {
        panic!("the archive test needs mariadb-server and rsync installed");
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
    let fleet = Fleet::start(lab_fleet(root)).await.unwrap();
    let maria = fleet.mariadb().unwrap().clone();
    let (node_port, mysql_port, rsync_port) = (free_port(), free_port(), free_port());
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
        s("--state-dir"),
        root.join("state/node").display().to_string(),
        s("--poll-interval"),
        s("0.5"),
        s("-r"),
        results.display().to_string(),
        s("-v"),
        videos.display().to_string(),
        s("--archive-scan-interval"),
        s("0.5"),
        s("--archive-verify-interval"),
        s("1"),
        s("--write-index"),
    ];
    for d in fleet.device_addresses() {
        node_args.push(s("--device"));
        node_args.push(d);
    }
    let daemon = |name: &str, port: u16| {
        let mut args = vec![
            s(name),
            s("-p"),
            port.to_string(),
            s("-i"),
            node_addr.clone(),
            s("-r"),
            results.display().to_string(),
            s("--interval"),
            s("2"),
            s("--state-dir"),
            root.join(format!("state/{name}")).display().to_string(),
        ];
        if name == "mysql-backup" {
            args.extend([s("--mysql-port"), maria.port.to_string()]);
        } else {
            args.extend([
                s("-v"),
                videos.display().to_string(),
                s("--source"),
                fleet.rsync_source_template().unwrap(),
            ]);
        }
        args
    };
    let procs = vec![
        Proc::spawn("node", &node_args, &logs),
        Proc::spawn("mysql-backup", &daemon("mysql-backup", mysql_port), &logs),
        Proc::spawn("rsync-backup", &daemon("rsync-backup", rsync_port), &logs),
    ];
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut lab = Lab {
        client: client.clone(),
        node: format!("http://{node_addr}"),
        procs,
    };
    let devs: Vec<_> = fleet.devices().to_vec();
    let maria_dev = &devs[0];
    let maria_id = maria_dev.id().to_string();

    // 1. While the MariaDB device writes, its mirror file is downloaded again and again.
    let listed = lab
        .wait_for(
            "the mirror database in the archive listing",
            &format!("/archive?device={maria_id}"),
            Duration::from_secs(90),
            |d| {
                d["devices"][0]["experiments"][0]["files"]
                    .as_array()
                    .is_some_and(|files| {
                        files.iter().any(|f| {
                            f["database"]["source"] == "mysql_mirror"
                                && f["database"]["rows_total"].as_u64().unwrap_or(0) > 0
                        })
                    })
            },
        )
        .await;
    let mirror_url = listed["devices"][0]["experiments"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["database"]["source"] == "mysql_mirror")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let live_until = Instant::now() + Duration::from_secs(8);
    let mut sizes = BTreeSet::new();
    let mut downloads = 0;
    while Instant::now() < live_until || sizes.len() < 2 {
        let bytes = download(&client, &format!("{}{mirror_url}", lab.node)).await;
        let path = root.join(format!("live-{downloads}.db"));
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            integrity(&path),
            "ok",
            "download {downloads} of the live mirror"
        );
        sizes.insert(bytes.len());
        downloads += 1;
        assert!(
            Instant::now() < live_until + Duration::from_secs(60),
            "the mirror never grew"
        );
    }
    assert!(downloads >= 5, "{downloads} downloads");

    // 2. Data at rest, then a full cycle of both daemons and a fresh index.
    fleet.hold_all(true);
    fleet.wait_at_rest(Duration::from_secs(30)).await.unwrap();
    let rest = etho_model::now_epoch() + 1;
    let ids: Vec<String> = devs.iter().map(|d| d.id().to_string()).collect();
    lab.wait_for(
        "a full cycle of both daemons after the data came to rest",
        "/backup/status",
        Duration::from_secs(90),
        |st| {
            ran_since(st, &ids[0], "mysql_backup", rest)
                && ids.iter().all(|id| ran_since(st, id, "rsync_backup", rest))
        },
    )
    .await;
    fresh_index(&mut lab).await;

    // 3. The listing is the archive.
    let files = listing(&mut lab, "").await;
    let sizes: BTreeMap<String, u64> = files
        .iter()
        .map(|(k, f)| (k.clone(), f["size"].as_u64().unwrap()))
        .collect();
    assert_eq!(sizes, on_disk(&results, &videos));
    assert!(
        files.keys().any(|k| k.ends_with(".h264")),
        "videos are listed"
    );
    let dbs: Vec<(&String, &Value)> = files.iter().filter(|(k, _)| k.ends_with(".db")).collect();
    assert_eq!(
        dbs.len(),
        2,
        "one mirror and one rsync copy: {:?}",
        files.keys()
    );

    // 4. Downloaded databases hold the archive's rows; rsync copies are byte for byte.
    for (key, f) in &dbs {
        let disk = root.join("backup").join(key);
        let bytes = download(
            &client,
            &format!("{}{}", lab.node, f["url"].as_str().unwrap()),
        )
        .await;
        let copy = root.join("downloaded.db");
        std::fs::write(&copy, &bytes).unwrap();
        assert_eq!(integrity(&copy), "ok", "{key}");
        assert_eq!(
            sqlite_tables(&copy),
            sqlite_tables(&disk),
            "{key}: rows differ"
        );
        let facts = &f["database"];
        if facts["source"] == "rsync" {
            assert!(
                bytes == std::fs::read(&disk).unwrap(),
                "{key}: bytes differ"
            );
        }
        let rows: u64 = sqlite_tables(&disk)
            .iter()
            .filter(|(t, _)| t.starts_with("ROI_") && t[4..].bytes().all(|b| b.is_ascii_digit()))
            .map(|(_, (_, rows))| rows.len() as u64)
            .sum();
        assert_eq!(facts["rows_total"], rows, "{key}: listed rows");
        assert_eq!(facts["last_point"], last_point(&disk).unwrap(), "{key}");
        assert_eq!(facts["verified"]["ok"], true, "{key}");
    }

    // 5. A range of a video chunk.
    let (video, vfile) = files.iter().find(|(k, _)| k.ends_with(".h264")).unwrap();
    let source = std::fs::read(root.join("backup").join(video)).unwrap();
    let r = client
        .get(format!("{}{}", lab.node, vfile["url"].as_str().unwrap()))
        .header("range", "bytes=100-4195")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-type"], "video/h264");
    assert_eq!(r.bytes().await.unwrap(), source[100..4196]);

    // 6. Each experiment's zip holds exactly its files.
    let experiments: BTreeSet<String> = files
        .keys()
        .map(|k| {
            k.split_once('/')
                .unwrap()
                .1
                .rsplit_once('/')
                .unwrap()
                .0
                .to_string()
        })
        .collect();
    for exp in &experiments {
        let bytes = download(&client, &format!("{}/archive/{exp}.zip", lab.node)).await;
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut names = BTreeSet::new();
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).unwrap();
            let name = entry.name().unwrap().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            let key = ["results", "videos"]
                .iter()
                .map(|r| format!("{r}/{name}"))
                .find(|k| files.contains_key(k))
                .unwrap_or_else(|| panic!("{name} is in the zip but not in the archive"));
            let disk = root.join("backup").join(&key);
            if name.ends_with(".db") {
                let copy = root.join("zipped.db");
                std::fs::write(&copy, &data).unwrap();
                assert_eq!(sqlite_tables(&copy), sqlite_tables(&disk), "{name}");
            } else {
                assert!(data == std::fs::read(&disk).unwrap(), "{name} differs");
            }
            names.insert(key.split_once('/').unwrap().1.to_string());
        }
        let want: BTreeSet<String> = files
            .keys()
            .filter_map(|k| k.split_once('/').map(|x| x.1))
            .filter(|p| p.starts_with(&format!("{exp}/")))
            .map(String::from)
            .collect();
        assert_eq!(names, want, "{exp}.zip");
    }

    // 7. index.txt: every results database and its last point, also written to the folder.
    let served =
        String::from_utf8(download(&client, &format!("{}/archive/index.txt", lab.node)).await)
            .unwrap();
    let want: String = dbs
        .iter()
        .map(|(k, _)| {
            let path = k.strip_prefix("results/").unwrap();
            let last = last_point(&results.join(path)).unwrap();
            format!("\"{path}\",{last}\n")
        })
        .collect();
    assert_eq!(served, want);
    assert_eq!(
        std::fs::read_to_string(results.join("index.txt")).unwrap(),
        served
    );

    // 8. ethoscopy loads what it fetched over HTTP.
    match std::env::var("ETHOSCOPY_PYTHON") {
        Ok(python) if !python.is_empty() => {
            let out_dir = root.join("ethoscopy");
            let out = Command::new(&python)
                .arg(repo_root().join("tests/ethoscopy/load_archive.py"))
                .arg(&lab.node)
                .arg(&out_dir)
                .env("NO_PROXY", "127.0.0.1")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ethoscopy failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let summary: Value =
                serde_json::from_slice(out.stdout.lines_last().as_bytes()).unwrap();
            assert_eq!(summary["databases"], dbs.len() as u64, "{summary}");
            assert!(summary["rows"].as_u64().unwrap() > 100, "{summary}");
        }
        _ => eprintln!(
            "ETHOSCOPY_PYTHON is not set: the ethoscopy check was not run (scripts/test sets it)"
        ),
    }

    drop(lab);
    fleet.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "the archive test took {:?}",
        started.elapsed()
    );
}

trait LastLine {
    fn lines_last(&self) -> String;
}

impl LastLine for Vec<u8> {
    fn lines_last(&self) -> String {
        String::from_utf8_lossy(self)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string()
    }
}

/// Sends `target` as the raw request line (no client normalises it) and returns the status.
fn raw_status(addr: &str, target: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer to {target}: {reply:?}"))
}

fn strace_works() -> bool {
    Command::new("strace")
        .args(["-qq", "-e", "trace=openat", "-o", "/dev/null", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn traversal_attempts_get_404_and_nothing_outside_the_roots_is_opened() {
    const ID: &str = "0123456789abcdef0123456789abcdef";
    const LINK_ID: &str = "fedcba9876543210fedcba9876543210";
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let results = root.join("results");
    let videos = root.join("videos");
    let outside = root.join("outside-canary");
    let exp = results.join(ID).join("ETHOSCOPE_001/2025-07-10_10-00-00");
    std::fs::create_dir_all(&exp).unwrap();
    std::fs::create_dir_all(videos.join(ID)).unwrap();
    std::fs::create_dir_all(outside.join("ETHOSCOPE_001/2025-07-10_10-00-00")).unwrap();
    std::fs::write(exp.join("metadata.txt"), b"inside\n").unwrap();
    std::fs::write(outside.join("secret.txt"), b"secret\n").unwrap();
    std::fs::write(
        outside.join("ETHOSCOPE_001/2025-07-10_10-00-00/secret.txt"),
        b"secret\n",
    )
    .unwrap();
    let conn = rusqlite::Connection::open(outside.join("secret.db")).unwrap();
    conn.execute_batch("CREATE TABLE ROI_MAP (roi_idx INTEGER);")
        .unwrap();
    drop(conn);
    // Planted links, at every level of the layout.
    let link = |target: PathBuf, at: PathBuf| std::os::unix::fs::symlink(target, at).unwrap();
    link(outside.join("secret.txt"), exp.join("link.txt"));
    link(outside.join("secret.db"), exp.join("link.db"));
    std::fs::write(exp.join("link.db.lock"), b"").unwrap();
    link(outside.clone(), results.join(LINK_ID));
    link(
        outside.join("ETHOSCOPE_001"),
        results.join(ID).join("ETHOSCOPE_002"),
    );
    link(
        outside.join("ETHOSCOPE_001/2025-07-10_10-00-00"),
        results.join(ID).join("ETHOSCOPE_001/2025-07-11_10-00-00"),
    );
    nix::unistd::mkfifo(&exp.join("fifo.txt"), nix::sys::stat::Mode::S_IRWXU).unwrap();

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let trace = root.join("strace.log");
    let traced = strace_works();
    let node_args = [
        "node",
        "--listen",
        &addr,
        "--state-dir",
        &root.join("state").display().to_string(),
        "--mysql-backup-url",
        "http://127.0.0.1:9",
        "--rsync-backup-url",
        "http://127.0.0.1:9",
        "-r",
        &results.display().to_string(),
        "-v",
        &videos.display().to_string(),
        "--archive-scan-interval",
        "0.2",
    ]
    .map(String::from);
    let mut command = if traced {
        let mut c = Command::new("strace");
        c.args([
            "-f",
            "-qq",
            "-e",
            "trace=openat,open,openat2,readlink,readlinkat",
            "-o",
        ])
        .arg(&trace)
        .arg(BIN);
        c
    } else {
        eprintln!("strace is not usable here: checking the answers only");
        Command::new(BIN)
    };
    let child = command
        .args(&node_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child, Option<i32>);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Some(pid) = self.1 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut guard = Kill(child, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "the node did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    if traced {
        // The traced node's pid: the first field of strace's first line.
        let log = std::fs::read_to_string(&trace).unwrap();
        guard.1 = log.split_whitespace().next().and_then(|p| p.parse().ok());
    }
    // The listing is built (and shows none of the links).
    let deadline = Instant::now() + Duration::from_secs(30);
    let listing = loop {
        let mut s = TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET /archive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        if reply.contains("metadata.txt") {
            break reply;
        }
        assert!(Instant::now() < deadline, "no listing: {reply}");
        std::thread::sleep(Duration::from_millis(50));
    };
    for name in [
        "link.txt",
        "link.db",
        "fifo.txt",
        LINK_ID,
        "ETHOSCOPE_002",
        "2025-07-11",
    ] {
        assert!(!listing.contains(name), "{name} is listed:\n{listing}");
    }

    let ok = format!("/archive/{ID}/ETHOSCOPE_001/2025-07-10_10-00-00/metadata.txt");
    assert_eq!(raw_status(&addr, &ok), 200, "the real file is served");
    let e = format!("{ID}/ETHOSCOPE_001/2025-07-10_10-00-00");
    let attempts = [
        "/archive/../../../etc/passwd".to_string(),
        "/archive/%2e%2e/%2e%2e/%2e%2e/etc/passwd".to_string(),
        "/archive/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd".to_string(),
        format!("/archive/{e}/..%2f..%2f..%2f..%2foutside-canary%2fsecret.txt"),
        format!("/archive/{e}/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2foutside-canary%2fsecret.txt"),
        format!("/archive/{e}/../../../../outside-canary/secret.txt"),
        format!("/archive/{e}/a%2fb"),
        format!("/archive/{e}/secret.txt%00.txt"),
        format!("/archive/{e}/%00"),
        format!("/archive/{e}/%5c..%5c..%5csecret.txt"),
        format!("/archive/{e}/.%2e/.%2e/secret.txt"),
        "/archive//etc/passwd".to_string(),
        "/archive/%2fetc%2fpasswd".to_string(),
        format!("/archive/{}", outside.join("secret.txt").display()),
        format!("/archive/{e}/link.txt"),
        format!("/archive/{e}/link.db"),
        format!("/archive/{e}/fifo.txt"),
        format!("/archive/{LINK_ID}/ETHOSCOPE_001/2025-07-10_10-00-00/secret.txt"),
        format!("/archive/{ID}/ETHOSCOPE_002/2025-07-10_10-00-00/secret.txt"),
        format!("/archive/{ID}/ETHOSCOPE_001/2025-07-11_10-00-00/secret.txt"),
        format!("/archive/{ID}/ETHOSCOPE_001/2025-07-11_10-00-00.zip"),
        format!("/archive/{LINK_ID}/ETHOSCOPE_001/2025-07-10_10-00-00.zip"),
        format!("/archive/{ID}/ETHOSCOPE_001/..%2f..%2f..%2foutside-canary.zip"),
        "/archive/index.txt/../../etc/passwd".to_string(),
        format!("http://{addr}/archive/../../etc/passwd"),
    ];
    assert!(attempts.len() >= 20);
    for target in &attempts {
        assert_eq!(raw_status(&addr, target), 404, "{target}");
    }
    // The zip of the real experiment leaves the links out.
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET /archive/{e}.zip HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("metadata.txt"));
    for name in ["link.txt", "link.db", "fifo.txt", "secret"] {
        assert!(!text.contains(name), "the zip holds {name}");
    }

    if traced {
        drop(guard);
        let log = std::fs::read_to_string(&trace).unwrap();
        assert!(
            log.contains("link.txt") && log.contains("ELOOP"),
            "the trace shows no refused link:\n{}",
            &log[..log.len().min(3000)]
        );
        // Nothing outside the roots was opened, or even had its link read.
        let outside_lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("outside-canary") || l.contains("secret"))
            .collect();
        assert!(outside_lines.is_empty(), "{outside_lines:#?}");
        // Every open relative to a directory descriptor carries O_NOFOLLOW.
        let relative: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.split_once("openat(")
                    .is_some_and(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .collect();
        assert!(relative.len() > 10, "{}", relative.len());
        let without: Vec<&&str> = relative
            .iter()
            .filter(|l| !l.contains("O_NOFOLLOW"))
            .collect();
        assert!(without.is_empty(), "{without:#?}");
    }
}
