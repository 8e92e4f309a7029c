//! A device polled the way upstream HEAD's node scanner polls it: `GET /data/` with the id it does
//! not know yet, a 404 that makes it fall back to `GET /id`, then `GET /data/<id>` and
//! `GET /data/databases/<id>`. A 200 on the empty id (an error document) kept HEAD's scanner on an
//! empty id forever, so it listed none of our simulated devices.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use etho_sim::config::DbKind;
use etho_sim::experiment::Schedule;
use etho_sim::identity::fleet_identities;
use etho_sim::{DeviceSpec, Fleet, FleetConfig, MariaDbTarget, Rates, Role};
use reqwest::StatusCode;
use serde_json::Value;

/// What HEAD's scanner learns from one device: its id, `/data/<id>` and `/data/databases/<id>`.
async fn scan_like_head(client: &reqwest::Client, base: &str) -> (String, Value, Value) {
    let mut id = String::new();
    let first = client
        .get(format!("{base}/data/{id}"))
        .send()
        .await
        .unwrap();
    if first.status() == StatusCode::NOT_FOUND {
        let v: Value = client
            .get(format!("{base}/id"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        id = v["id"].as_str().unwrap_or_default().to_string();
    }
    assert!(!id.is_empty(), "the scanner never learned the device's id");
    let get = |path: String| {
        let client = client.clone();
        async move {
            let r = client.get(path).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    let data = get(format!("{base}/data/{id}")).await;
    let databases = get(format!("{base}/data/databases/{id}")).await;
    (id, data, databases)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_ids_are_404_and_heads_scanner_falls_back_to_id() {
    let dir = tempfile::tempdir().unwrap();
    let devices = fleet_identities(2, Ipv4Addr::new(127, 72, 0, 10), 1, 7)
        .unwrap()
        .into_iter()
        .zip([Role::Tracker(DbKind::Sqlite), Role::Recorder])
        .map(|(identity, role)| DeviceSpec {
            identity,
            role,
            faults: vec![],
            schedule: Schedule {
                start_delay: Duration::ZERO,
                run_for: None,
                pause_for: Duration::ZERO,
            },
            user: "tester".into(),
            location: "Bench".into(),
        })
        .collect();
    let fleet = Fleet::start(FleetConfig {
        devices,
        data_dir: dir.path().to_path_buf(),
        http_port: 0,
        rsync_port: 0,
        rsync: false,
        mariadb: MariaDbTarget::None,
        rates: Rates::default(),
        mdns: false,
    })
    .await
    .unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for dev in fleet.devices() {
        let base = format!("http://{}", dev.http_addr());
        for empty in ["/data/", "/data/databases/"] {
            let r = client.get(format!("{base}{empty}")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{empty}");
        }
        let (id, data, databases) = scan_like_head(&client, &base).await;
        assert_eq!(id, dev.id());
        assert_eq!(data["id"], dev.id());
        assert_eq!(data["name"], dev.name());
        assert!(databases["SQLite"].is_object() && databases["MariaDB"].is_object());
        // Another device's id still gets the firmware's error document, with 200.
        let other = "ffffffffffffffffffffffffffffffff";
        let r = client
            .get(format!("{base}/data/{other}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("WrongMachineID"));
        // The device's server bounds request bodies like every server of the project.
        let r = client
            .post(format!("{base}/id"))
            .body(vec![b'x'; 100 * 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    fleet.stop().await;
}
