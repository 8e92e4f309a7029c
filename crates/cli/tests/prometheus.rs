//! A real Prometheus (Debian's `prometheus`) scraping a simulated lab: the node and both backup
//! daemons run as `etho-backup` processes, Prometheus runs on loopback with the shipped
//! `deploy/prometheus/prometheus.yml` (its targets pointed at this lab, a 1 s scrape interval)
//! and the shipped alert rules, and the test asks Prometheus' HTTP API until every simulated
//! device has its series, its exposure (`etho_backup_device_exposure_seconds`) among them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etho_sim::{DbKind, Fleet, FleetConfig, MariaDbTarget, Rates, Role};
use serde_json::Value;

mod common;
use common::*;

/// Debian's prometheus, killed when dropped.
struct Prometheus {
    child: Child,
    log: std::path::PathBuf,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped configuration with this lab's ports, a 1 s scrape and evaluation interval, and
/// the rules file beside it.
fn lab_config(dir: &Path, node: u16, mysql: u16, rsync: u16) -> std::path::PathBuf {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus");
    let shipped = std::fs::read_to_string(deploy.join("prometheus.yml")).unwrap();
    let config = shipped
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{node}"))
        .replace("127.0.0.1:8090", &format!("127.0.0.1:{mysql}"))
        .replace("127.0.0.1:8093", &format!("127.0.0.1:{rsync}"))
        .replace("scrape_interval: 30s", "scrape_interval: 1s")
        .replace("evaluation_interval: 30s", "evaluation_interval: 1s");
    assert_ne!(config, shipped, "the shipped targets were not found");
    std::fs::copy(
        deploy.join("etho-backup.rules.yml"),
        dir.join("etho-backup.rules.yml"),
    )
    .unwrap();
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    path
}

fn start_prometheus(dir: &Path, config: &Path) -> Prometheus {
    let port = free_port();
    let log = dir.join("prometheus.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("Debian's prometheus is needed (apt-get install prometheus): {e}")
        });
    Prometheus {
        child,
        log,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// The result vector of an instant query (empty while Prometheus is not ready).
async fn query(client: &reqwest::Client, prom: &Prometheus, promql: &str) -> Vec<Value> {
    let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", prom.url)).unwrap();
    url.query_pairs_mut().append_pair("query", promql);
    let resp = client.get(url).send().await;
    let Ok(resp) = resp else { return Vec::new() };
    let doc: Value = resp.json().await.unwrap_or(Value::Null);
    doc["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The `device_id` labels of a query's result.
fn device_ids(result: &[Value]) -> std::collections::BTreeSet<String> {
    result
        .iter()
        .filter_map(|s| s["metric"]["device_id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_lab_and_loads_the_rules() {
    if !etho_sim::mariadbd_installed() || !rsync_installed() {
        panic!("the Prometheus test needs mariadb-server and rsync installed");
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for d in ["logs", "backup/results", "backup/videos", "prometheus"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let roles = [
        Role::Tracker(DbKind::MariaDb),
        Role::Tracker(DbKind::Sqlite),
    ];
    let fleet = Fleet::start(FleetConfig {
        devices: always_running(&roles, 76, 11, "prom"),
        data_dir: root.join("fleet"),
        http_port: 0,
        rsync_port: 0,
        rsync: true,
        mariadb: MariaDbTarget::Auto,
        rates: Rates {
            rois: 2,
            fps: 5.0,
            snapshot_every: Duration::from_secs(2),
            snapshot_bytes: 10_000,
            video_chunk_every: Duration::from_secs(2),
            video_chunk_bytes: 16 * 1024,
            flush_every: Duration::from_millis(200),
            ..Rates::default()
        },
        mdns: false,
    })
    .await
    .unwrap();
    // The node and both daemons, as processes cycling every 2 s.
    let setup = LabSetup::new(root);
    let maria_port = fleet.mariadb().expect("the lab has MariaDB devices").port;
    let source = fleet.rsync_source_template().unwrap();
    let node_args = setup.node_args(&fleet.device_addresses(), &["--no-archive"]);
    let mut procs = vec![
        Proc::spawn("node", &node_args, &setup.logs),
        Proc::spawn(
            "mysql-backup",
            &setup.mysql_args(maria_port, "2"),
            &setup.logs,
        ),
        Proc::spawn("rsync-backup", &setup.rsync_args(&source, "2"), &setup.logs),
    ];
    let dir = root.join("prometheus");
    let config = lab_config(&dir, setup.node_port, setup.mysql_port, setup.rsync_port);
    let mut prom = start_prometheus(&dir, &config);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ids: std::collections::BTreeSet<String> =
        fleet.devices().iter().map(|d| d.id().to_string()).collect();

    // Every simulated device's series (its exposure from the node's health, its job flag from
    // the daemons), every target up, both daemons' runs counted.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for p in &mut procs {
            p.check_alive();
        }
        if let Ok(Some(status)) = prom.child.try_wait() {
            panic!(
                "prometheus exited ({status}):\n{}",
                std::fs::read_to_string(&prom.log).unwrap_or_default()
            );
        }
        let running = device_ids(&query(&client, &prom, "etho_backup_job_running").await);
        let exposed =
            device_ids(&query(&client, &prom, "etho_backup_device_exposure_seconds >= 0").await);
        let up = query(&client, &prom, "up == 1").await;
        let runs = query(
            &client,
            &prom,
            r#"sum by (kind) (etho_backup_runs_total{outcome=~"success|warning"})"#,
        )
        .await;
        let kinds: Vec<&str> = runs
            .iter()
            .filter(|r| r["value"][1].as_str().is_some_and(|v| v != "0"))
            .filter_map(|r| r["metric"]["kind"].as_str())
            .collect();
        let missing = format!(
            "exposure for {:?}; job_running for {:?}; {} of 3 targets up; finished runs by kind \
             {kinds:?}",
            ids.difference(&exposed).collect::<Vec<_>>(),
            ids.difference(&running).collect::<Vec<_>>(),
            up.len()
        );
        if exposed.is_superset(&ids)
            && running.is_superset(&ids)
            && up.len() == 3
            && kinds.contains(&"mysql")
            && kinds.contains(&"results")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus still misses {missing}\n{}",
            std::fs::read_to_string(&prom.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The node's own series and the shipped rules, loaded and evaluated without error.
    let devices = query(&client, &prom, "sum(etho_backup_devices)").await;
    assert_eq!(
        devices[0]["value"][1].as_str(),
        Some(ids.len().to_string().as_str()),
        "the node counts every device"
    );
    // Exactly one health state per device, and each device's MySQL or results copy succeeded.
    let states = query(
        &client,
        &prom,
        "sum by (device_id) (etho_backup_device_health) == 1",
    )
    .await;
    assert_eq!(device_ids(&states), ids, "one state per device");
    let succeeded = query(
        &client,
        &prom,
        r#"etho_backup_device_last_success_timestamp_seconds{kind=~"mysql|results"} > 1.7e9"#,
    )
    .await;
    assert_eq!(device_ids(&succeeded), ids, "a last success per device");
    let rules: Value = client
        .get(format!("{}/api/v1/rules", prom.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), 6, "{rules:#}");
    assert!(
        loaded.iter().all(|r| r["health"] != "err"),
        "a rule fails to evaluate: {rules:#}"
    );
}
