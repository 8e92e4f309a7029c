//! `/archive` against a real node on loopback and a real archive tree: listing against the files
//! on disk (paged), downloads (types, ranges, entity tags), zips against the files, `index.txt`,
//! `--write-index`, `--no-archive`, and a mirror database downloaded while a writer changes it in
//! place. (The archive written by the real daemons is exercised in the binary's tests.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etho_node::archive::{ArchiveConfig, Roots};
use etho_node::{AppState, NodeConfig, ServiceUrl};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

struct Node {
    base: String,
    client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Node {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    async fn bytes(&self, path: &str) -> Vec<u8> {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        r.bytes().await.unwrap().to_vec()
    }

    /// Waits until a whole scan and analysis happened after this call, and returns that listing.
    async fn fresh(&self) -> Value {
        let first = self.json("/archive").await["version"].as_u64().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let doc = self.json("/archive").await;
            if doc["version"].as_u64().unwrap() >= first + 3 {
                return doc;
            }
            assert!(Instant::now() < deadline, "no new scan: {doc}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn start(state_dir: &Path, archive: Option<ArchiveConfig>) -> Node {
    let config = NodeConfig {
        state_dir: state_dir.to_path_buf(),
        mysql_backup_url: ServiceUrl::daemon("http://127.0.0.1:9").unwrap(),
        rsync_backup_url: ServiceUrl::daemon("http://127.0.0.1:9").unwrap(),
        archive,
        ..NodeConfig::default()
    };
    let state = AppState::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(etho_node::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Node {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        _stop: stop,
    }
}

fn archive_config(root: &Path) -> ArchiveConfig {
    let mut c = ArchiveConfig::new(
        Roots {
            results: root.join("results"),
            videos: root.join("videos"),
        },
        &root.join("state"),
    );
    c.scan_interval = Duration::from_millis(300);
    c
}

/// An ethoscope-shaped result database: METADATA, ROI_MAP and `rois` ROI tables.
fn make_db(path: &Path, rois: u32, rows: i64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "BEGIN;
         CREATE TABLE METADATA (field TEXT, value TEXT);
         INSERT INTO METADATA VALUES ('date_time', '1752141600');
         CREATE TABLE ROI_MAP (roi_idx INTEGER, roi_value INTEGER, x INTEGER, y INTEGER, w INTEGER, h INTEGER);",
    )
    .unwrap();
    for roi in 1..=rois {
        conn.execute_batch(&format!(
            "CREATE TABLE ROI_{roi} (id INTEGER PRIMARY KEY, t INTEGER, x SMALLINT, y SMALLINT);
             INSERT INTO ROI_MAP VALUES ({roi}, {roi}, 0, 0, 10, 10);"
        ))
        .unwrap();
        let mut stmt = conn
            .prepare(&format!(
                "INSERT INTO ROI_{roi} (t, x, y) VALUES (?1, 1, 2)"
            ))
            .unwrap();
        for i in 1..=rows {
            stmt.execute([i * 1000 + i64::from(roi)]).unwrap();
        }
    }
    conn.execute_batch("COMMIT").unwrap();
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn exp_dir(root: &Path, kind: &str, id: &str, name: &str, date: &str) -> PathBuf {
    root.join(kind).join(id).join(name).join(date)
}

/// A small archive: two devices, three experiments, databases, text, videos, one experiment with
/// 600 files (more than a page), and things that must not be listed.
fn build_archive(root: &Path) {
    let a1 = exp_dir(root, "results", A, "ETHOSCOPE_001", "2025-07-10_10-00-00");
    make_db(&a1.join(format!("2025-07-10_10-00-00_{A}.db")), 3, 50);
    write(&a1.join("metadata.txt"), b"ROI: 3\n");
    let v1 = exp_dir(root, "videos", A, "ETHOSCOPE_001", "2025-07-10_10-00-00");
    write(
        &v1.join("2025-07-10_10-00-00_a__1280x960@25_00000.h264"),
        &pattern(300_000, 1),
    );
    write(&v1.join("clip.mp4"), &pattern(5_000, 2));
    let a2 = exp_dir(root, "results", A, "ETHOSCOPE_001", "2025-07-12_09-00-00");
    make_db(&a2.join(format!("2025-07-12_09-00-00_{A}.db")), 2, 20);
    let b1 = exp_dir(root, "results", B, "ETHOSCOPE_002", "2025-07-11_08-00-00");
    for i in 0..600 {
        write(
            &b1.join(format!("part_{i:04}.txt")),
            format!("{i}\n").as_bytes(),
        );
    }
    // Never listed: companions, hidden files, wrong layout, a symlink, a FIFO, a bad name.
    write(&a1.join(format!("2025-07-10_10-00-00_{A}.db-wal")), b"wal");
    write(&a1.join(".hidden"), b"h");
    write(&root.join("results").join(A).join("stray.txt"), b"s");
    write(
        &root.join("results/not-an-id/ETHOSCOPE_001/2025-07-10_10-00-00/x.txt"),
        b"x",
    );
    write(&root.join("outside/secret.txt"), b"secret");
    std::os::unix::fs::symlink(root.join("outside/secret.txt"), a1.join("link.txt")).unwrap();
    nix::unistd::mkfifo(&a1.join("fifo.txt"), nix::sys::stat::Mode::S_IRWXU).unwrap();
}

/// What the listing should show: every regular file four levels deep with valid names.
fn files_on_disk(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for kind in ["results", "videos"] {
        let base = root.join(kind);
        let Ok(ids) = std::fs::read_dir(&base) else {
            continue;
        };
        for id in ids.flatten() {
            let id_name = id.file_name().into_string().unwrap();
            if id_name.len() != 32 || !id.file_type().unwrap().is_dir() {
                continue;
            }
            for name in std::fs::read_dir(id.path()).unwrap().flatten() {
                if !name.file_type().unwrap().is_dir() {
                    continue;
                }
                for date in std::fs::read_dir(name.path()).unwrap().flatten() {
                    for file in std::fs::read_dir(date.path()).unwrap().flatten() {
                        let f = file.file_name().into_string().unwrap();
                        let ft = file.file_type().unwrap();
                        if !ft.is_file() || f.starts_with('.') || f.ends_with("-wal") {
                            continue;
                        }
                        let rel = file
                            .path()
                            .strip_prefix(&base)
                            .unwrap()
                            .display()
                            .to_string();
                        out.insert(rel, file.metadata().unwrap().len());
                    }
                }
            }
        }
    }
    out
}

/// Every file of every page of `/archive?<query>`: path → size.
async fn listed(node: &Node, query: &str) -> (BTreeMap<String, u64>, Vec<Value>) {
    let mut out = BTreeMap::new();
    let mut pages = Vec::new();
    let mut next = Some(format!("/archive?{query}"));
    while let Some(path) = next {
        let doc = node.json(&path).await;
        for d in doc["devices"].as_array().unwrap() {
            for x in d["experiments"].as_array().unwrap() {
                for f in x["files"].as_array().unwrap() {
                    let p = format!(
                        "{}/{}",
                        x["path"].as_str().unwrap(),
                        f["name"].as_str().unwrap()
                    );
                    assert_eq!(f["url"], format!("/archive/{p}"));
                    assert!(out.insert(p, f["size"].as_u64().unwrap()).is_none());
                }
            }
        }
        next = doc["next"].as_str().map(String::from);
        pages.push(doc);
    }
    (out, pages)
}

/// Every table of a database image, as text rows (sorted).
fn db_contents(image: &[u8]) -> BTreeMap<String, Vec<String>> {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), image).unwrap();
    let conn = rusqlite::Connection::open(tmp.path()).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables
        .into_iter()
        .map(|t| {
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
            let n = stmt.column_count();
            let mut rows = stmt
                .query_map([], |r| {
                    Ok((0..n)
                        .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                        .collect::<Vec<_>>()
                        .join("|"))
                })
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            rows.sort();
            (t, rows)
        })
        .collect()
}

#[tokio::test]
async fn listing_matches_the_files_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    build_archive(tmp.path());
    let node = start(&tmp.path().join("state"), Some(archive_config(tmp.path()))).await;
    let doc = node.fresh().await;
    assert!(doc["skipped"].as_u64().unwrap() >= 4, "{}", doc["skipped"]);

    let (files, pages) = listed(&node, "").await;
    assert_eq!(files, files_on_disk(tmp.path()));
    assert_eq!(files.len(), 605);
    assert_eq!(pages.len(), 2, "605 files are two pages of 500");
    assert_eq!(pages[0]["total_files"], 605);

    let (by_device, _) = listed(&node, &format!("device={A}")).await;
    assert_eq!(by_device.len(), 5);
    assert!(by_device.keys().all(|k| k.starts_with(A)));
    let (by_name, _) = listed(&node, "device=ETHOSCOPE_002").await;
    assert_eq!(by_name.len(), 600);
    let (by_date, _) = listed(&node, "from=2025-07-11&to=2025-07-11").await;
    assert_eq!(by_date.len(), 600);
    assert_eq!(node.get("/archive?from=July").await.status(), 400);

    // Database facts: rows per ROI table, the newest frame, the verification.
    let exp = &pages[0]["devices"][0]["experiments"];
    let newest = &exp[0];
    assert_eq!(
        newest["date"], "2025-07-12_09-00-00",
        "newest experiment first"
    );
    let db = &exp[1]["files"][0];
    assert_eq!(db["name"], format!("2025-07-10_10-00-00_{A}.db"));
    let facts = &db["database"];
    assert_eq!(facts["source"], "rsync");
    assert_eq!(
        facts["rows"],
        serde_json::json!({"ROI_1": 50, "ROI_2": 50, "ROI_3": 50})
    );
    assert_eq!(facts["rows_total"], 150);
    assert_eq!(facts["last_point"], 50 * 1000 + 3);
    assert_eq!(facts["last_frame_at"], 1_752_141_600 + 50);
    assert_eq!(facts["verified"]["ok"], true);
    assert_eq!(facts["verified"]["on"], "file");
    assert_eq!(facts["verified"]["current"], true);
    assert_eq!(exp[1]["rows"], 150);
    assert_eq!(exp[1]["files_total"], 4);

    // index.txt: every results database with its last point.
    let index = String::from_utf8(node.bytes("/archive/index.txt").await).unwrap();
    assert_eq!(
        index,
        format!(
            "\"{A}/ETHOSCOPE_001/2025-07-10_10-00-00/2025-07-10_10-00-00_{A}.db\",50003\n\
             \"{A}/ETHOSCOPE_001/2025-07-12_09-00-00/2025-07-12_09-00-00_{A}.db\",20002\n"
        )
    );

    // A new file shows up within a scan or two.
    let late = exp_dir(
        tmp.path(),
        "results",
        B,
        "ETHOSCOPE_002",
        "2025-07-13_08-00-00",
    );
    write(&late.join("late.txt"), b"late");
    node.fresh().await;
    let (files, _) = listed(&node, "device=ETHOSCOPE_002&from=2025-07-13").await;
    assert_eq!(files.len(), 1);
}

#[tokio::test]
async fn downloads_have_types_ranges_and_entity_tags() {
    let tmp = tempfile::tempdir().unwrap();
    build_archive(tmp.path());
    let node = start(&tmp.path().join("state"), Some(archive_config(tmp.path()))).await;
    let base = format!("/archive/{A}/ETHOSCOPE_001/2025-07-10_10-00-00");
    let a1 = exp_dir(
        tmp.path(),
        "results",
        A,
        "ETHOSCOPE_001",
        "2025-07-10_10-00-00",
    );
    let v1 = exp_dir(
        tmp.path(),
        "videos",
        A,
        "ETHOSCOPE_001",
        "2025-07-10_10-00-00",
    );
    let video = "2025-07-10_10-00-00_a__1280x960@25_00000.h264";
    for (file, disk, content_type) in [
        (
            format!("2025-07-10_10-00-00_{A}.db"),
            &a1,
            "application/vnd.sqlite3",
        ),
        ("metadata.txt".to_string(), &a1, "text/plain; charset=utf-8"),
        (video.to_string(), &v1, "video/h264"),
        ("clip.mp4".to_string(), &v1, "video/mp4"),
    ] {
        let r = node.get(&format!("{base}/{file}")).await;
        assert_eq!(r.status(), 200, "{file}");
        assert_eq!(r.headers()["content-type"], content_type, "{file}");
        assert_eq!(r.headers()["accept-ranges"], "bytes");
        let bytes = r.bytes().await.unwrap();
        assert!(
            bytes == std::fs::read(disk.join(&file)).unwrap(),
            "{file} differs"
        );
    }
    // Percent-encoded names are the same file.
    let encoded = video.replace('@', "%40");
    assert_eq!(node.get(&format!("{base}/{encoded}")).await.status(), 200);

    let url = format!("{}{base}/{video}", node.base);
    let source = std::fs::read(v1.join(video)).unwrap();
    let ranged = |range: &'static str| node.client.get(&url).header("range", range).send();
    let r = ranged("bytes=1000-1999").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/300000");
    assert_eq!(r.bytes().await.unwrap(), source[1000..2000]);
    let r = ranged("bytes=-100").await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), source[300_000 - 100..]);
    let r = ranged("bytes=299990-").await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), source[299_990..]);
    let r = ranged("bytes=300000-").await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */300000");

    let etag = node.get(&format!("{base}/{video}")).await.headers()["etag"].clone();
    let r = node
        .client
        .get(&url)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert!(r.bytes().await.unwrap().is_empty());
    // A new version (promoted by rename, as the rsync daemon does) has a new tag.
    write(&v1.join("new.tmp"), &pattern(300_000, 9));
    std::fs::rename(v1.join("new.tmp"), v1.join(video)).unwrap();
    let r = node
        .client
        .get(&url)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["etag"], etag);
    // If-Range with the old tag: the whole new version, not a mix.
    let r = node
        .client
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), pattern(300_000, 9));

    for missing in ["nope.txt", "link.txt", "fifo.txt", ".hidden"] {
        assert_eq!(
            node.get(&format!("{base}/{missing}")).await.status(),
            404,
            "{missing}"
        );
    }
}

#[tokio::test]
async fn a_zip_holds_the_experiment_files() {
    let tmp = tempfile::tempdir().unwrap();
    build_archive(tmp.path());
    // The first database is a mirror file: its entry comes from a snapshot.
    let a1 = exp_dir(
        tmp.path(),
        "results",
        A,
        "ETHOSCOPE_001",
        "2025-07-10_10-00-00",
    );
    let db = format!("2025-07-10_10-00-00_{A}.db");
    write(&a1.join(format!("{db}.lock")), b"");
    let node = start(&tmp.path().join("state"), Some(archive_config(tmp.path()))).await;
    let r = node
        .get(&format!(
            "/archive/{A}/ETHOSCOPE_001/2025-07-10_10-00-00.zip"
        ))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let bytes = r.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut entries = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        entries.insert(f.name().unwrap().to_string(), data);
    }
    let prefix = format!("{A}/ETHOSCOPE_001/2025-07-10_10-00-00");
    let v1 = exp_dir(
        tmp.path(),
        "videos",
        A,
        "ETHOSCOPE_001",
        "2025-07-10_10-00-00",
    );
    let mut want = BTreeMap::new();
    for (dir, name) in [
        (&a1, db.as_str()),
        (&a1, "metadata.txt"),
        (&v1, "2025-07-10_10-00-00_a__1280x960@25_00000.h264"),
        (&v1, "clip.mp4"),
    ] {
        want.insert(
            format!("{prefix}/{name}"),
            std::fs::read(dir.join(name)).unwrap(),
        );
    }
    assert_eq!(
        entries.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (name, data) in &want {
        if name.ends_with(".db") {
            // A snapshot is a page copy, not a byte copy (its header differs): compare rows.
            assert_eq!(
                db_contents(&entries[name]),
                db_contents(data),
                "{name} differs"
            );
        } else {
            assert!(entries[name] == *data, "{name} differs");
        }
    }
    assert_eq!(
        node.get(&format!(
            "/archive/{A}/ETHOSCOPE_001/2025-07-09_10-00-00.zip"
        ))
        .await
        .status(),
        404
    );
    // Nothing is left in the snapshot directory (the index's own check may still be running).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("state/archive-tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn index_txt_is_written_atomically_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    build_archive(tmp.path());
    let mut config = archive_config(tmp.path());
    config.write_index = true;
    let node = start(&tmp.path().join("state"), Some(config)).await;
    let path = tmp.path().join("results/index.txt");
    let deadline = Instant::now() + Duration::from_secs(20);
    let served = loop {
        let served = node.bytes("/archive/index.txt").await;
        if std::fs::read(&path).is_ok_and(|w| w == served && w.ends_with(b",20002\n")) {
            break served;
        }
        assert!(Instant::now() < deadline, "index.txt not written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(String::from_utf8(served).unwrap().lines().count() == 2);
    let names: Vec<String> = std::fs::read_dir(tmp.path().join("results"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("index"))
        .collect();
    assert_eq!(names, ["index.txt"], "no temporary file left");
}

#[tokio::test]
async fn no_archive_means_no_archive() {
    let tmp = tempfile::tempdir().unwrap();
    build_archive(tmp.path());
    let node = start(&tmp.path().join("state"), None).await;
    for path in [
        "/archive".to_string(),
        "/archive/index.txt".to_string(),
        format!("/archive/{A}/ETHOSCOPE_001/2025-07-10_10-00-00/metadata.txt"),
        format!("/archive/{A}/ETHOSCOPE_001/2025-07-10_10-00-00.zip"),
    ] {
        assert_eq!(node.get(&path).await.status(), 404, "{path}");
    }
    assert_eq!(node.get("/healthz").await.status(), 200);
}

/// A mirror database (a `.db.lock` beside it) downloaded again and again while a writer keeps
/// changing it in place, the way the MySQL mirror does: every download is a whole database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_database_downloads_consistently_while_it_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = exp_dir(
        tmp.path(),
        "results",
        A,
        "ETHOSCOPE_001",
        "2025-07-10_10-00-00",
    );
    let db = format!("2025-07-10_10-00-00_{A}.db");
    make_db(&dir.join(&db), 10, 2000);
    write(&dir.join(format!("{db}.lock")), b"");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let path = dir.join(&db);
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut batches = 0u64;
            while !stop.load(Ordering::Relaxed) {
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                for roi in 1..=10 {
                    conn.execute_batch(&format!(
                        "INSERT INTO ROI_{roi} (t, x, y) SELECT t + 1000000, x, y FROM ROI_{roi} ORDER BY id DESC LIMIT 200;
                         UPDATE ROI_{roi} SET x = x + 1 WHERE id % 97 = {};",
                        batches % 97
                    ))
                    .unwrap();
                }
                conn.execute_batch("COMMIT").unwrap();
                batches += 1;
            }
            batches
        })
    };
    let node = start(&tmp.path().join("state"), Some(archive_config(tmp.path()))).await;
    let url = format!("/archive/{A}/ETHOSCOPE_001/2025-07-10_10-00-00/{db}");
    let mut rows = Vec::new();
    for i in 0..12 {
        let bytes = node.bytes(&url).await;
        let path = tmp.path().join(format!("download-{i}.db"));
        std::fs::write(&path, &bytes).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "download {i}");
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM ROI_1", [], |r| r.get(0))
            .unwrap();
        let m: i64 = conn
            .query_row("SELECT COUNT(*) FROM ROI_10", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            n, m,
            "download {i} holds one transaction's view of every table"
        );
        rows.push(n);
    }
    stop.store(true, Ordering::Relaxed);
    let batches = writer.join().unwrap();
    assert!(batches > 5, "the writer only committed {batches} times");
    assert!(rows.windows(2).all(|w| w[0] <= w[1]), "{rows:?}");
    assert!(
        rows.last() > rows.first(),
        "the database grew during the downloads: {rows:?}"
    );
}
