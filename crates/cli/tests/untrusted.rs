//! The node on a shared, untrusted LAN, against the real processes (`etho-backup node`,
//! `rsync-backup`, simulated devices with their rsync daemons, stub devices for answers the
//! simulator does not give) on loopback. One test per defect of the issue "untrusted devices and
//! a shared LAN"; each fails on the code before its fix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::routing::get;
use axum::{Json, Router};
use etho_sim::{Fleet, FleetConfig, MariaDbTarget, Rates, Role};
use serde_json::{json, Value};

mod common;
use common::*;

/// A running node (and more processes), the client and the node's URL.
fn lab(procs: Vec<Proc>, node_addr: &str) -> Lab {
    Lab {
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        node: format!("http://{node_addr}"),
        procs,
    }
}

fn s(v: &str) -> String {
    v.to_string()
}

/// `etho-backup node` on a free loopback port, polling `devices` every half second; extra
/// arguments after.
fn node(root: &Path, devices: &[String], rsync_url: &str, extra: &[&str]) -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        s("node"),
        s("--listen"),
        addr.clone(),
        s("--mysql-backup-url"),
        format!("http://127.0.0.1:{}", free_port()),
        s("--rsync-backup-url"),
        s(rsync_url),
        s("--state-dir"),
        root.join("state/node").display().to_string(),
        s("--poll-interval"),
        s("0.5"),
        s("--device-timeout"),
        s("2"),
        s("--no-archive"),
    ];
    for d in devices {
        args.push(s("--device"));
        args.push(d.clone());
    }
    args.extend(extra.iter().map(|e| e.to_string()));
    (Proc::spawn("node", &args, &root.join("logs")), addr)
}

/// `etho-backup rsync-backup` on `port`, every second, from `source`.
fn rsync_daemon(root: &Path, port: u16, node_addr: &str, source: &str) -> Proc {
    let args = vec![
        s("rsync-backup"),
        s("-p"),
        port.to_string(),
        s("-i"),
        s(node_addr),
        s("-r"),
        root.join("backup/results").display().to_string(),
        s("-v"),
        root.join("backup/videos").display().to_string(),
        s("--source"),
        s(source),
        s("--interval"),
        s("1"),
        s("--state-dir"),
        root.join("state/rsync").display().to_string(),
    ];
    Proc::spawn("rsync-backup", &args, &root.join("logs"))
}

fn dirs() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for d in ["logs", "backup/results", "backup/videos"] {
        std::fs::create_dir_all(tmp.path().join(d)).unwrap();
    }
    tmp
}

fn fleet_config(devices: Vec<etho_sim::DeviceSpec>, data: &Path, rsync_port: u16) -> FleetConfig {
    FleetConfig {
        devices,
        data_dir: data.to_path_buf(),
        http_port: 0,
        rsync_port,
        rsync: true,
        mariadb: MariaDbTarget::None,
        rates: Rates {
            rois: 2,
            video_chunk_every: Duration::from_millis(300),
            video_chunk_bytes: 16 * 1024,
            ..Rates::default()
        },
        mdns: false,
    }
}

/// Serves `app` on `ip` (a free port) until the test ends.
async fn serve_on(ip: Ipv4Addr, app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A loopback address block of this test process (127.<second>.<x>.0/24).
fn block(second: u8) -> impl Fn(u8) -> Ipv4Addr {
    let third = (std::process::id() % 200) as u8 + 20;
    move |last| Ipv4Addr::new(127, second, third, last)
}

/// `POST /device/add` with `body` (as a script sends it: no Origin, no Referer); the answer.
async fn add_devices(lab: &Lab, body: String) -> Value {
    lab.client
        .post(format!("{}/device/add", lab.node))
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn rsync_cycle(doc: &Value) -> u64 {
    doc["cycle_number"].as_u64().unwrap_or(0)
}

async fn rsync_service(client: &reqwest::Client, port: u16) -> Value {
    match client.get(format!("http://127.0.0.1:{port}/")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Defect 1: a second address answering with device A's machine id took A's `/devices` entry
/// over, and rsync replaced A's archived files with the impostor's. Now the id is in conflict,
/// nothing is copied under it, and A's archive stays byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_cannot_replace_a_devices_archive() {
    assert!(rsync_installed(), "this test needs rsync");
    let tmp = dirs();
    let root = tmp.path();
    let real = always_running(&[Role::Recorder], 81, 21, "u");
    let id = real[0].identity.id.clone();
    let a = Fleet::start(fleet_config(real.clone(), &root.join("fleet-a"), 0))
        .await
        .unwrap();
    let rsync_port = a.rsync_port().unwrap();
    let source = a.rsync_source_template().unwrap();
    let daemon_port = free_port();
    let (node_proc, node_addr) = node(
        root,
        &a.device_addresses(),
        &format!("http://127.0.0.1:{daemon_port}"),
        &[],
    );
    let daemon = rsync_daemon(root, daemon_port, &node_addr, &source);
    let mut lab = lab(vec![node_proc, daemon], &node_addr);

    // A records, then stops; its whole tree reaches the archive.
    lab.wait_for("A recording", "/devices", Duration::from_secs(30), |d| {
        d[&id]["status"] == "recording"
    })
    .await;
    a.hold_all(true);
    a.wait_at_rest(Duration::from_secs(30)).await.unwrap();
    let rest = etho_model::now_epoch() + 1;
    lab.wait_for(
        "a backup of A at rest",
        "/backup/status",
        Duration::from_secs(60),
        |st| ran_since(st, &id, "rsync_backup", rest),
    )
    .await;
    let archive = root.join("backup/videos").join(&id);
    let source_tree = a.devices()[0].root().join("videos").join(&id);
    assert_tree_copied(&source_tree, &archive, "A");
    let before = files_below(&archive);
    assert!(!before.is_empty());

    // The impostor: same id and name, another address, its own recordings.
    let mut fake = real.clone();
    fake[0].identity.ip = block(82)(10);
    let b = Fleet::start(fleet_config(fake, &root.join("fleet-b"), rsync_port))
        .await
        .unwrap();
    let added = add_devices(&lab, b.device_addresses()[0].clone()).await;
    assert_eq!(added["added"].as_array().unwrap().len(), 1, "{added}");
    let devices = lab
        .wait_for("the conflict", "/devices", Duration::from_secs(30), |d| {
            d[&id]["status"] == "conflict"
        })
        .await;
    assert_eq!(
        devices[&id]["ip"],
        a.devices()[0].spec().identity.ip.to_string()
    );
    let rejected = lab.get("/devices/rejected").await;
    for addr in [&a.device_addresses()[0], &b.device_addresses()[0]] {
        assert_eq!(rejected[addr]["status"], "conflict", "{rejected:#}");
    }
    // Several rsync cycles later, nothing came from the impostor.
    let client = lab.client.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first = None;
    loop {
        let doc = rsync_service(&client, daemon_port).await;
        let skipped = doc["discovery"]["skipped"][&id].as_str().unwrap_or("");
        if skipped.contains("conflict") {
            let start = *first.get_or_insert(rsync_cycle(&doc));
            if rsync_cycle(&doc) >= start + 3 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the rsync daemon never skipped the id: {doc:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        lab.get("/healthz").await;
    }
    assert_eq!(files_below(&archive), before, "A's archive changed");
    b.stop().await;
    a.stop().await;
}

/// A stub device whose `/data/<id>` pads a field to just under the node's 4 MiB answer cap.
async fn padded_device(ip: Ipv4Addr, n: u32) -> String {
    let id = format!("{:032x}", 0xbad0_0000u64 + u64::from(n));
    let name = format!("ETHOSCOPE_{:03}", 900 + n);
    let data = Arc::new(
        json!({"id": id, "name": name, "status": "running", "time": 1.0,
               "experimental_info": {"name": "x".repeat(3_900_000)}})
        .to_string(),
    );
    let id_doc = json!({"id": id});
    let app = Router::new()
        .route("/id", get(move || async move { Json(id_doc) }))
        .route(
            "/data/{id}",
            get(move |UrlPath(_): UrlPath<String>| {
                let data = Arc::clone(&data);
                async move { ([("content-type", "application/json")], data.to_string()) }
            }),
        );
    serve_on(ip, app).await.to_string()
}

/// Defect 2: nine devices padding `/data` made `/devices` 33.5 MiB, over the daemons' 32 MiB cap,
/// and nothing was backed up for any device. The normal device is backed up now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padded_devices_do_not_stop_the_others_backups() {
    assert!(rsync_installed(), "this test needs rsync");
    let tmp = dirs();
    let root = tmp.path();
    let fleet = Fleet::start(fleet_config(
        always_running(&[Role::Recorder], 83, 22, "u"),
        &root.join("fleet"),
        0,
    ))
    .await
    .unwrap();
    let id = fleet.devices()[0].id().to_string();
    let ip = block(84);
    let mut devices = fleet.device_addresses();
    for n in 0..9 {
        devices.push(padded_device(ip(10 + n as u8), n).await);
    }
    let daemon_port = free_port();
    let (node_proc, node_addr) = node(
        root,
        &devices,
        &format!("http://127.0.0.1:{daemon_port}"),
        &[],
    );
    let daemon = rsync_daemon(
        root,
        daemon_port,
        &node_addr,
        &fleet.rsync_source_template().unwrap(),
    );
    let mut lab = lab(vec![node_proc, daemon], &node_addr);
    let listed = lab
        .wait_for(
            "all ten devices",
            "/devices",
            Duration::from_secs(60),
            |d| d.as_object().is_some_and(|m| m.len() == 10),
        )
        .await;
    let size = serde_json::to_vec(&listed).unwrap().len();
    assert!(size < 64 * 1024, "/devices is {size} bytes");
    lab.wait_for(
        "a backup of the normal device",
        "/backup/status",
        Duration::from_secs(90),
        |st| side(st, &id, "rsync_backup")["count"].as_u64().unwrap_or(0) > 0,
    )
    .await;
    fleet.stop().await;
}

/// Defect 3: a device answering with a redirect made the node request any URL. The canary the
/// redirect points at gets no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_redirects_are_not_followed() {
    let tmp = dirs();
    let root = tmp.path();
    let canary_hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&canary_hits);
    let canary = serve_on(
        Ipv4Addr::LOCALHOST,
        Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Json(json!({"id": "0123456789abcdef0123456789abcdef"})) }
        }),
    )
    .await;
    let device_hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&device_hits);
    let to = format!("http://{canary}/internal/admin?delete=all");
    let device = serve_on(
        block(85)(10),
        Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let to = to.clone();
            async move { axum::response::Redirect::temporary(&to) }
        }),
    )
    .await;
    let (node_proc, node_addr) = node(root, &[device.to_string()], "http://127.0.0.1:1", &[]);
    let mut lab = lab(vec![node_proc], &node_addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while device_hits.load(Ordering::SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "the node did not poll the device"
        );
        lab.get("/healthz").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        canary_hits.load(Ordering::SeqCst),
        0,
        "a redirect was followed"
    );
    assert!(lab.get("/devices").await.as_object().unwrap().is_empty());
}

/// Defect 4: any web page could add addresses with a `text/plain` simple POST. A foreign
/// `Origin` or `Referer` is refused; upstream's same-origin form still works; confirming an
/// address needs the admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_posts_are_refused_and_the_nodes_own_form_works() {
    let tmp = dirs();
    let root = tmp.path();
    let (node_proc, node_addr) = node(root, &[], "http://127.0.0.1:1", &[]);
    let mut lab = lab(vec![node_proc], &node_addr);
    lab.wait_for(
        "the node",
        "/devices",
        Duration::from_secs(30),
        Value::is_object,
    )
    .await;
    let ip = block(86);
    let post = |origin: Option<String>, referer: Option<String>, body: String, form: bool| {
        let mut req = lab
            .client
            .post(format!("{}/device/add", lab.node))
            .header(
                "content-type",
                if form {
                    "application/x-www-form-urlencoded"
                } else {
                    "text/plain"
                },
            )
            .body(body);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(r) = referer {
            req = req.header("referer", r);
        }
        req.send()
    };
    let evil = post(
        Some(s("http://evil.example")),
        None,
        format!("{}", ip(10)),
        false,
    )
    .await
    .unwrap();
    assert_eq!(evil.status(), 403);
    let evil = post(
        None,
        Some(s("http://evil.example/page")),
        format!("{}", ip(11)),
        false,
    )
    .await
    .unwrap();
    assert_eq!(evil.status(), 403);
    let own = post(
        Some(format!("http://{node_addr}")),
        Some(format!("http://{node_addr}/")),
        format!("ip={}", ip(12)),
        true,
    )
    .await
    .unwrap();
    assert_eq!(own.status(), 200);
    let own: Value = own.json().await.unwrap();
    assert_eq!(own["added"], json!([ip(12).to_string()]));
    let pending = lab.get("/devices/pending").await;
    let keys: Vec<&String> = pending.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [&format!("{}:9000", ip(12))],
        "only the same-origin post added"
    );
    // Without --admin-token the node cannot confirm addresses; DELETE works from its own page.
    let confirm = lab
        .client
        .post(format!(
            "{}/device/0123456789abcdef0123456789abcdef/confirm",
            lab.node
        ))
        .body(format!("address={}", ip(12)))
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.status(), 403);
    let deleted = lab
        .client
        .delete(format!("{}/device/{}:9000", lab.node, ip(12)))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert!(lab
        .get("/devices/pending")
        .await
        .as_object()
        .unwrap()
        .is_empty());
}

/// Defect 4, continued: after about 2,000 junk addresses a real device could not be added, and
/// nothing ever removed them. 3,000 junk addresses later, a real device is still added and polled
/// within 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_addresses_cannot_lock_a_real_device_out() {
    let tmp = dirs();
    let root = tmp.path();
    let fleet = Fleet::start(FleetConfig {
        rsync: false,
        ..fleet_config(
            always_running(&[Role::Recorder], 87, 23, "u"),
            &root.join("fleet"),
            0,
        )
    })
    .await
    .unwrap();
    let id = fleet.devices()[0].id().to_string();
    let (node_proc, node_addr) = node(root, &[], "http://127.0.0.1:1", &[]);
    let mut lab = lab(vec![node_proc], &node_addr);
    lab.wait_for(
        "the node",
        "/devices",
        Duration::from_secs(30),
        Value::is_object,
    )
    .await;
    // Nothing listens on port 1 of 127.88.0.0/16.
    let junk: Vec<String> = (0..3000u32)
        .map(|i| format!("127.88.{}.{}:1", i / 250, i % 250 + 1))
        .collect();
    for chunk in junk.chunks(250) {
        let r = add_devices(&lab, chunk.join(",")).await;
        assert_eq!(
            r["added"].as_array().unwrap().len(),
            chunk.len(),
            "{}",
            r["messages"][0]
        );
    }
    let started = Instant::now();
    let r = add_devices(&lab, fleet.device_addresses()[0].clone()).await;
    assert_eq!(r["problems"], json!([]), "{r}");
    lab.wait_for(
        "the real device",
        "/devices",
        Duration::from_secs(60),
        |d| d[&id]["status"] == "recording",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(60));
    let pending = lab.get("/devices/pending").await;
    assert!(pending.as_object().unwrap().len() < 2048);
    fleet.stop().await;
}

/// Defect 6: with a hung daemon, every `/backup/status` waited the 2 s daemon timeout (the cache
/// lived 1 s and was stamped at the start of the fetch). The rsync daemon is a real process,
/// stopped with SIGSTOP; 10 concurrent clients get ≥ 95 % of their replies within 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_daemon_does_not_slow_backup_status() {
    let tmp = dirs();
    let root = tmp.path();
    let daemon_port = free_port();
    let (node_proc, node_addr) = node(root, &[], &format!("http://127.0.0.1:{daemon_port}"), &[]);
    let daemon = rsync_daemon(root, daemon_port, &node_addr, "rsync://{ip}:1/x");
    let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
    let mut lab = lab(vec![node_proc], &node_addr);
    let client = lab.client.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rsync_service(&client, daemon_port).await.is_null() {
        assert!(Instant::now() < deadline, "the rsync daemon never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // The first request may wait for the daemon timeout (2 s); the node keeps a reply after it.
    let first = lab.get("/backup/status").await;
    assert_eq!(
        first["rsync_backup"]["error"], "Rsync backup service unavailable",
        "{first}"
    );
    let url = format!("{}/backup/status", lab.node);
    let clients = (0..10).map(|_| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let mut times = Vec::new();
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                let t = Instant::now();
                let r = client.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                times.push(t.elapsed());
            }
            times
        })
    });
    let mut times = Vec::new();
    for c in clients {
        times.extend(c.await.unwrap());
    }
    let fast = times
        .iter()
        .filter(|t| **t <= Duration::from_millis(100))
        .count();
    assert!(
        fast * 100 >= times.len() * 95,
        "{fast} of {} replies within 100 ms",
        times.len()
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    drop(daemon);
}
