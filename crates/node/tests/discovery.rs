//! Discovery against a simulated fleet on loopback: statuses, hostile devices, unplugging,
//! `POST /device/add`, and the registry surviving a restart; and `--devices-from` against a stub
//! of upstream's node serving its recorded `/devices`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use etho_node::poller::Thresholds;
use etho_node::registry::DiscoveryConfig;
use etho_node::{AppState, NodeConfig};
use etho_sim::experiment::Schedule;
use etho_sim::identity::fleet_identities;
use etho_sim::{DbKind, DeviceSpec, Fault, Fleet, FleetConfig, MariaDbTarget, Rates, Role};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Node {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Node {
    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.done.await;
    }
}

async fn start_node(state_dir: &std::path::Path, devices: Vec<String>) -> Node {
    start_node_with(state_dir, devices, |_| {}).await
}

async fn start_node_with(
    state_dir: &std::path::Path,
    devices: Vec<String>,
    tweak: impl FnOnce(&mut NodeConfig),
) -> Node {
    let mut config = NodeConfig {
        state_dir: state_dir.to_path_buf(),
        discovery: DiscoveryConfig {
            devices,
            poll_interval: Duration::from_millis(200),
            device_timeout: Duration::from_millis(700),
            thresholds: Thresholds {
                refused_limit: 3,
                unreached_timeout: Duration::from_secs(5),
                busy_timeout: Duration::from_secs(600),
            },
            mdns: false,
            persist: true,
            ..DiscoveryConfig::default()
        },
        ..NodeConfig::default()
    };
    tweak(&mut config);
    let state = AppState::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(etho_node::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Node {
        base: format!("http://{addr}"),
        stop: Some(stop),
        done,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn get_map(url: &str) -> Map<String, Value> {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_for(
    what: &str,
    url: &str,
    mut ok: impl FnMut(&Map<String, Value>) -> bool,
) -> Map<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = get_map(url).await;
        if ok(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {m:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_of<'a>(m: &'a Map<String, Value>, id: &str) -> Option<&'a str> {
    m.get(id)?.get("status")?.as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_discovers_polls_and_flags_devices() {
    let data = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let faults = [
        vec![],
        vec![Fault::BadJson],
        vec![Fault::Busy],
        vec![Fault::HostileName],
        vec![Fault::Offline],
        vec![],
    ];
    let devices: Vec<DeviceSpec> =
        fleet_identities(faults.len() as u32, Ipv4Addr::new(127, 72, 0, 10), 1, 9)
            .unwrap()
            .into_iter()
            .zip(faults)
            .map(|(identity, faults)| DeviceSpec {
                identity,
                role: Role::Tracker(DbKind::Sqlite),
                faults,
                schedule: Schedule {
                    start_delay: Duration::ZERO,
                    run_for: None,
                    pause_for: Duration::ZERO,
                },
                user: "u".into(),
                location: "l".into(),
            })
            .collect();
    let fleet = Fleet::start(FleetConfig {
        devices,
        data_dir: data.path().to_path_buf(),
        http_port: 0,
        rsync_port: 0,
        rsync: false,
        mariadb: MariaDbTarget::None,
        rates: Rates {
            rois: 2,
            ..Rates::default()
        },
        mdns: false,
    })
    .await
    .unwrap();
    let ids: Vec<String> = fleet.devices().iter().map(|d| d.id().to_string()).collect();
    let addrs = fleet.device_addresses();
    // The last device is left for POST /device/add.
    let node = start_node(state.path(), addrs[..5].to_vec()).await;
    let devices_url = format!("{}/devices", node.base);

    let m = wait_for("statuses", &devices_url, |m| {
        status_of(m, &ids[0]) == Some("running")
    })
    .await;
    let good = &m[&ids[0]];
    assert_eq!(good["name"], "ETHOSCOPE_001");
    assert_eq!(good["ip"], "127.72.0.10");
    assert_eq!(good["port"], fleet.http_port());
    assert!(good["last_seen"].as_f64().unwrap() > 0.0);
    assert_eq!(good["result_writer_type"], "SQLiteResultWriter");
    assert!(good["databases"]["SQLite"].is_object());
    // Devices that never gave a usable /data answer, the hostile one and the one never seen are
    // not passed on.
    for id in &ids[1..=4] {
        assert!(!m.contains_key(id), "device {id} listed: {m:#?}");
    }
    let (valid, problems) = etho_model::device::parse_device_map(&Value::Object(m)).unwrap();
    assert_eq!(valid.len(), 1);
    assert!(problems.is_empty(), "{problems:?}");
    let pending = wait_for(
        "pending devices",
        &format!("{}/devices/pending", node.base),
        |p| {
            p.get(&addrs[1]).and_then(|e| e["status"].as_str()) == Some("busy")
                && p.get(&addrs[2]).and_then(|e| e["status"].as_str()) == Some("busy")
                && p.contains_key(&addrs[4])
        },
    )
    .await;
    assert_eq!(pending[&addrs[1]]["id"], ids[1].as_str());
    assert!(pending[&addrs[1]]["poll_error"]
        .as_str()
        .unwrap()
        .contains("invalid JSON"));
    let rejected = wait_for(
        "the hostile device",
        &format!("{}/devices/rejected", node.base),
        |r| !r.is_empty(),
    )
    .await;
    let entry = &rejected[&addrs[3]];
    assert_eq!(entry["id"], ids[3].as_str());
    assert!(entry["reason"].as_str().unwrap().contains("invalid name"));

    // A known device that stops answering /data is busy, then running again.
    fleet.devices()[0].set_busy(true);
    wait_for("busy", &devices_url, |m| {
        status_of(m, &ids[0]) == Some("busy")
    })
    .await;
    fleet.devices()[0].set_busy(false);
    wait_for("running again", &devices_url, |m| {
        status_of(m, &ids[0]) == Some("running")
    })
    .await;

    // Manual add, upstream's answer shape.
    let resp: Value = client()
        .post(format!("{}/device/add", node.base))
        .body(format!("{}, not-an-ip", addrs[5]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["added"], serde_json::json!([addrs[5]]));
    assert_eq!(resp["problems"], serde_json::json!(["not-an-ip"]));
    wait_for("the added device", &devices_url, |m| {
        status_of(m, &ids[5]) == Some("running")
    })
    .await;

    // Unplugged: unreached, then offline; the entry keeps its last answer.
    fleet.devices()[0].set_offline(true);
    wait_for("unreached", &devices_url, |m| {
        matches!(status_of(m, &ids[0]), Some("unreached") | Some("offline"))
    })
    .await;
    let m = wait_for("offline", &devices_url, |m| {
        status_of(m, &ids[0]) == Some("offline")
    })
    .await;
    assert_eq!(m[&ids[0]]["name"], "ETHOSCOPE_001");
    assert!(m[&ids[0]]["consecutive_errors"].as_u64().unwrap() >= 3);
    node.shutdown().await;

    // Restarted node: known devices are listed (offline) before anyone answers, then polled.
    let node = start_node(state.path(), vec![]).await;
    let m = get_map(&format!("{}/devices", node.base)).await;
    for id in [&ids[0], &ids[5]] {
        assert!(m.contains_key(id.as_str()), "{id} forgotten: {m:#?}");
    }
    assert_eq!(status_of(&m, &ids[0]), Some("offline"));
    wait_for(
        "polling after restart",
        &format!("{}/devices", node.base),
        |m| status_of(m, &ids[5]) == Some("running"),
    )
    .await;
    node.shutdown().await;
    fleet.stop().await;
}

/// A stub of upstream's node: `/devices` serves a recorded list, `/moved/devices` redirects to a
/// canary that counts what reaches it.
struct Upstream {
    base: String,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    moved_hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    canary_hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn upstream(fixture: &'static str) -> Upstream {
    use axum::routing::get;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let counter = |n: &Arc<AtomicUsize>| {
        let n = Arc::clone(n);
        move || {
            n.fetch_add(1, Ordering::SeqCst);
        }
    };
    let (hits, moved_hits, canary_hits) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let canary = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let canary_url = format!("http://{}/devices", canary.local_addr().unwrap());
    let count = counter(&canary_hits);
    let canary_app = axum::Router::new().fallback(move || {
        count();
        async { axum::Json(serde_json::json!({})) }
    });
    tokio::spawn(async move { axum::serve(canary, canary_app).await });
    let (count, count_moved) = (counter(&hits), counter(&moved_hits));
    let app = axum::Router::new()
        .route(
            "/devices",
            get(move || {
                count();
                async move { ([("content-type", "application/json")], fixture) }
            }),
        )
        .route(
            "/moved/devices",
            get(move || {
                count_moved();
                let to = canary_url.clone();
                async move { axum::response::Redirect::temporary(&to) }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Upstream {
        base,
        hits,
        moved_hits,
        canary_hits,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_come_from_upstreams_node() {
    use std::sync::atomic::Ordering;
    let recorded = include_str!("../../model/tests/fixtures/head-node-devices.json");
    let theirs: Map<String, Value> = serde_json::from_str(recorded).unwrap();
    let up = upstream(recorded).await;
    let state = tempfile::tempdir().unwrap();
    let from = etho_node::ServiceUrl::node(&format!("{}/devices", up.base)).unwrap();
    let node = start_node_with(state.path(), vec![], |c| {
        c.discovery.devices_from = Some(from);
        c.discovery.results_dir = Some("/ethoscope_data/results".into());
    })
    .await;
    let m = wait_for(
        "upstream's devices",
        &format!("{}/devices", node.base),
        |m| m.len() == theirs.len(),
    )
    .await;
    for (id, entry) in &theirs {
        let ours = &m[id];
        for key in ["name", "ip", "status", "backup_path"] {
            assert_eq!(ours[key], entry[key], "{id}: {key}");
        }
        assert_eq!(ours["port"], 9000);
        assert!(ours.get("ping").is_none() && ours.get("status_details").is_none());
    }
    let (valid, problems) = etho_model::device::parse_device_map(&Value::Object(m)).unwrap();
    assert_eq!((valid.len(), problems.len()), (theirs.len(), 0));
    // Nothing is polled or added by hand in this mode.
    let resp: Value = client()
        .post(format!("{}/device/add", node.base))
        .body("127.0.0.10")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        resp["messages"][0]
            .as_str()
            .unwrap()
            .contains("--devices-from"),
        "{resp}"
    );
    assert!(up.hits.load(Ordering::SeqCst) >= 1);
    node.shutdown().await;

    // An upstream that redirects is not followed: the canary never hears from the node.
    let moved = etho_node::ServiceUrl::node(&format!("{}/moved/devices", up.base)).unwrap();
    let node = start_node_with(state.path(), vec![], |c| {
        c.discovery.devices_from = Some(moved)
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while up.moved_hits.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the node stopped asking");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        up.canary_hits.load(Ordering::SeqCst),
        0,
        "a redirect was followed"
    );
    assert!(get_map(&format!("{}/devices", node.base)).await.is_empty());
    node.shutdown().await;
}
