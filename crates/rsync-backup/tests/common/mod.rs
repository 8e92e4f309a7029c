//! Shared fixtures: device trees on disk, devices, engines, tree comparison, a stub node, sshd.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etho_daemon::JobContext;
use etho_model::device::DeviceInfo;
use etho_rsync_backup::{RsyncBackupConfig, RsyncEngine};
use serde_json::{json, Value};

/// Machine ids used by the tests (valid 32-hex).
pub fn machine_id(n: u8) -> String {
    format!("{:02x}", n).repeat(16)
}

/// A device entry as the node would list it.
pub fn device_entry(id: &str, name: &str, ip: &str, sqlite: bool) -> Value {
    let mut e = json!({"id": id, "name": name, "ip": ip, "status": "running"});
    if sqlite {
        e["databases"] = json!({"SQLite": {format!("{name}.db"): {"file_size": 1}}, "MariaDB": {}});
    } else {
        e["databases"] = json!({"SQLite": {}, "MariaDB": {format!("{name}_db"): {}}});
    }
    e
}

pub fn device(id: &str, name: &str, ip: &str, sqlite: bool) -> DeviceInfo {
    DeviceInfo::from_entry(id, &device_entry(id, name, ip, sqlite)).unwrap()
}

pub fn write_file(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Creates an SQLite database with `rows` rows of 1 KiB blobs (rollback journal mode).
pub fn make_db(path: &Path, rows: usize) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=DELETE; CREATE TABLE IF NOT EXISTS roi_1 (id INTEGER PRIMARY KEY, t INTEGER, x REAL, blob BLOB);",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..rows {
        tx.execute(
            "INSERT INTO roi_1 (t, x, blob) VALUES (?1, ?2, randomblob(1024))",
            (i as i64, i as f64 * 0.5),
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// Paths of an ethoscope-like data directory for one device.
pub struct DeviceTree {
    pub data: PathBuf,
    pub id: String,
    pub name: String,
}

impl DeviceTree {
    pub fn results(&self) -> PathBuf {
        self.data.join("results").join(&self.id)
    }
    pub fn videos(&self) -> PathBuf {
        self.data.join("videos").join(&self.id)
    }
    pub fn experiment_dir(&self, ts: &str) -> PathBuf {
        self.results().join(&self.name).join(ts)
    }
    pub fn db_path(&self, ts: &str) -> PathBuf {
        self.experiment_dir(ts).join(format!("{ts}_{}.db", self.id))
    }
}

/// Populates `data` like a device: a results database (+ a stale -wal/-shm/-journal that must
/// not be copied), a few video chunks, a hidden `.cache/` with a pickle.
pub fn populate(data: &Path, id: &str, name: &str) -> DeviceTree {
    let t = DeviceTree {
        data: data.to_path_buf(),
        id: id.to_string(),
        name: name.to_string(),
    };
    let ts = "2025-07-10_10-00-00";
    make_db(&t.db_path(ts), 200);
    write_file(
        &t.experiment_dir(ts).join(format!("{ts}_{id}.db-wal")),
        b"wal",
    );
    write_file(
        &t.experiment_dir(ts).join(format!("{ts}_{id}.db-shm")),
        b"shm",
    );
    write_file(
        &t.experiment_dir(ts).join(format!("{ts}_{id}.db-journal")),
        b"j",
    );
    write_file(&t.experiment_dir(ts).join("metadata.txt"), b"ROI: 20\n");
    let vdir = t.videos().join(name).join(ts);
    for i in 0..3 {
        write_file(
            &vdir.join(format!("{ts}_{id}__1280x960@25_{i:05}.h264")),
            &bytes(i, 150_000 + i as usize),
        );
    }
    write_file(
        &t.videos().join(".cache/video_cache_x.pkl"),
        b"cos\nsystem\n",
    );
    fs::set_permissions(
        vdir.join(format!("{ts}_{id}__1280x960@25_00000.h264")),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    t
}

/// What a tree holds, for comparison: relative path → description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File {
        data: Vec<u8>,
        mode: u32,
        mtime: i64,
    },
    Link(PathBuf),
}

/// Lists a tree (without following links). `skip` filters relative paths out.
pub fn listing(root: &Path, skip: &dyn Fn(&str) -> bool) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    fn walk(
        root: &Path,
        dir: &Path,
        skip: &dyn Fn(&str) -> bool,
        out: &mut BTreeMap<String, Node>,
    ) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if skip(&rel) {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.insert(rel, Node::Link(fs::read_link(&p).unwrap()));
            } else if m.is_dir() {
                out.insert(rel.clone(), Node::Dir);
                walk(root, &p, skip, out);
            } else {
                out.insert(
                    rel,
                    Node::File {
                        data: fs::read(&p).unwrap(),
                        mode: m.mode() & 0o7777,
                        mtime: m.mtime(),
                    },
                );
            }
        }
    }
    walk(root, root, skip, &mut out);
    out
}

/// What rsync must not copy.
pub fn excluded(rel: &str) -> bool {
    rel.ends_with("-wal")
        || rel.ends_with("-shm")
        || rel.ends_with("-journal")
        || rel == ".cache"
        || rel.starts_with(".cache/")
        || rel.contains("/.cache")
}

/// The mode a device file gets in the archive with the daemon's umask: chmod's
/// `ugo-st,go-w,<umask bits>-,u+rwX`, computed here independently of the engine.
pub fn archived_mode(source: u32, umask: u32) -> u32 {
    let mut mode = source & 0o777 & !(umask | 0o022);
    mode |= 0o600;
    if source & 0o111 != 0 {
        mode |= 0o100;
    }
    mode
}

/// [`listing`] of a device tree as the archive must hold it: modes as [`archived_mode`] with the
/// default umask.
pub fn archived_listing(source: &Path) -> BTreeMap<String, Node> {
    listing(source, &excluded)
        .into_iter()
        .map(|(k, n)| match n {
            Node::File { data, mode, mtime } => (
                k,
                Node::File {
                    data,
                    mode: archived_mode(mode, etho_rsync_backup::config::DEFAULT_UMASK),
                    mtime,
                },
            ),
            other => (k, other),
        })
        .collect()
}

/// Asserts `archive` is byte-identical (contents, mtimes, symlinks, directories; modes as the
/// default umask leaves them) to `source` minus the excluded files.
pub fn assert_mirror(source: &Path, archive: &Path) {
    let want = archived_listing(source);
    let got = listing(archive, &|_| false);
    let want_keys: Vec<_> = want.keys().collect();
    let got_keys: Vec<_> = got.keys().collect();
    assert_eq!(
        got_keys,
        want_keys,
        "file sets differ for {}",
        archive.display()
    );
    for (k, w) in &want {
        assert!(got[k] == *w, "{k} differs in {}", archive.display());
    }
}

/// Files and bytes as `find -type f` + `stat -c %s` report them.
pub fn find_count(dir: &Path) -> (u64, u64) {
    let out = Command::new("find")
        .arg(dir)
        .args(["-type", "f", "-printf", "%s\n"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let sizes: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
    (sizes.len() as u64, sizes.iter().sum())
}

/// Every path under `dir`, for "nothing else changed" checks.
pub fn all_paths(dir: &Path) -> Vec<String> {
    listing(dir, &|_| false).into_keys().collect()
}

/// An engine pulling from `source` into `<work>/archive/{results,videos}` with state in
/// `<work>/state`.
pub fn engine_config(work: &Path, source: &str) -> RsyncBackupConfig {
    let mut c = RsyncBackupConfig::new(
        &work.join("archive/results"),
        &work.join("archive/videos"),
        &work.join("state"),
    );
    c.source = source.parse().unwrap();
    c.connect_timeout = Duration::from_secs(3);
    c.io_timeout = Duration::from_secs(30);
    c
}

pub fn engine(work: &Path, source: &str) -> RsyncEngine {
    RsyncEngine::new(engine_config(work, source)).unwrap()
}

/// A job context as the scheduler gives it, with a 60 s deadline.
pub fn ctx(id: &str) -> JobContext {
    JobContext::detached(id).with_deadline(Instant::now() + Duration::from_secs(60))
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Regular files anywhere under `dir` whose names look like rsync or promotion temporaries.
pub fn temp_files(dir: &Path) -> Vec<String> {
    all_paths(dir)
        .into_iter()
        .filter(|p| {
            let name = p.rsplit('/').next().unwrap_or(p);
            // rsync's temp names are `.<name>.XXXXXX`.
            (name.starts_with('.') && name.len() > 8 && name.as_bytes()[name.len() - 7] == b'.')
                || name.contains("etho-backup-tmp")
                || name.contains("~tmp~")
        })
        .collect()
}

/// Pids of live processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim().chars().next();
        if state == Some('Z') {
            continue;
        }
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && pid != std::process::id() as i32 {
            pids.push(pid);
        }
    }
    pids
}

/// A port nothing listens on (bound and released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A throw-away node serving a fixed `/devices` map on loopback (the other component's
/// endpoint, stubbed).
pub async fn stub_node(devices: Value) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::{routing::get, Json, Router};
    let app = Router::new().route(
        "/devices",
        get(move || {
            let d = devices.clone();
            async move { Json(d) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, handle)
}

/// A private sshd on a free loopback port (on 127.0.0.1, .2 and .3, for devices that move)
/// accepting one generated client key, for the ssh pull tests. Killed on drop. The ssh transport is the production one, so a machine without sshd
/// fails these tests (as the end-to-end test fails without mariadbd) rather than passing them
/// silently; `scripts/test` installs openssh-server.
pub struct TestSshd {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub client_key: PathBuf,
}

pub const SSHD: &str = "/usr/sbin/sshd";

impl TestSshd {
    /// Starts one; panics when sshd is not installed or cannot run here.
    pub fn start() -> TestSshd {
        assert!(
            Path::new(SSHD).exists(),
            "the ssh transport tests need {SSHD} (apt-get install openssh-server)"
        );
        // sshd's privilege separation directory.
        if let Err(e) = fs::create_dir_all("/run/sshd") {
            panic!("the ssh transport tests need /run/sshd for sshd: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let keygen = |name: &str| {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.path().join(name))
                .status()
                .unwrap();
            assert!(st.success());
        };
        keygen("host_key");
        keygen("client_key");
        fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        for attempt in 0..5 {
            let port = closed_port();
            let config = dir.path().join("sshd_config");
            fs::write(
                &config,
                format!(
                    "ListenAddress 127.0.0.1:{port}\nListenAddress 127.0.0.2:{port}\n\
                     ListenAddress 127.0.0.3:{port}\nHostKey {d}/host_key\nPidFile none\nUsePAM no\n\
                     StrictModes no\nPermitRootLogin yes\nPubkeyAuthentication yes\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     AuthorizedKeysFile {d}/authorized_keys\nLogLevel ERROR\n",
                    d = dir.path().display()
                ),
            )
            .unwrap();
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if banner(port) {
                    return TestSshd {
                        child,
                        port,
                        client_key: dir.path().join("client_key"),
                        dir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            eprintln!("sshd attempt {attempt} on port {port} failed");
        }
        panic!("{SSHD} did not start on a loopback port (5 attempts)");
    }

    /// Replaces the host key (as a device re-flashed or impersonated would) and restarts.
    pub fn rotate_host_key(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        fs::remove_file(self.dir.path().join("host_key")).unwrap();
        fs::remove_file(self.dir.path().join("host_key.pub")).unwrap();
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(self.dir.path().join("host_key"))
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(self.dir.path().join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(2) {
                if banner(self.port) {
                    self.child = child;
                    return;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(Instant::now() < deadline, "sshd did not restart");
        }
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn banner(port: u16) -> bool {
    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("SSH-")
}

/// Name of the user running the tests (for `user@host` ssh sources).
pub fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".to_string())
}

/// A daemon around `engine` whose jobs the tests start directly (`run_device`), so progress is
/// observable through the real status table. Its node address is a closed port (no discovery).
pub fn daemon_for(engine: &RsyncEngine) -> std::sync::Arc<etho_daemon::Daemon> {
    let cfg = etho_daemon::DaemonConfig::new(format!("127.0.0.1:{}", closed_port()));
    etho_daemon::Daemon::new(std::sync::Arc::new(engine.clone()), cfg).unwrap()
}

/// Starts a job for `dev` on `daemon` in the background.
pub fn spawn_job(
    daemon: &std::sync::Arc<etho_daemon::Daemon>,
    dev: &DeviceInfo,
) -> tokio::task::JoinHandle<etho_model::status::DeviceStatus> {
    let (daemon, dev) = (std::sync::Arc::clone(daemon), dev.clone());
    tokio::spawn(async move { daemon.run_device(dev).await.expect("no other job live") })
}

/// The live progress of a device's job, if it reported any.
pub fn live_progress(
    daemon: &etho_daemon::Daemon,
    id: &str,
) -> Option<etho_model::status::Progress> {
    daemon
        .status()
        .get(id)
        .filter(|s| s.processing)
        .map(|s| s.progress)
}

/// True when the running job is inside a file whose name ends with `suffix` and at least
/// `min_bytes` were received.
pub fn in_flight(daemon: &etho_daemon::Daemon, id: &str, suffix: &str, min_bytes: u64) -> bool {
    live_progress(daemon, id).is_some_and(|p| {
        p.extra
            .get("current_file")
            .and_then(|v| v.as_str())
            .is_some_and(|f| f.ends_with(suffix))
            && p.extra
                .get("bytes_transferred")
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
                >= min_bytes
    })
}

/// A loopback port whose listen queue is full, so new connection attempts are silently dropped:
/// what an unreachable device looks like to a client. Kept alive while the value lives.
pub struct Blackhole {
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
    pub port: u16,
}

impl Blackhole {
    pub fn new() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // Shrink the accept queue to one entry (Linux lets listen() be called again).
        nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::new(0).unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        for _ in 0..3 {
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                queued.push(s);
            }
        }
        Blackhole {
            _listener: listener,
            _queued: queued,
            port: addr.port(),
        }
    }
}
