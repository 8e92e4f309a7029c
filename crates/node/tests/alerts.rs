//! Chat alerts end to end: the node (on loopback) watches a stub daemon whose documents the test
//! changes, and posts to a local webhook receiver (on loopback) that records every message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use etho_node::alerts::AlertConfig;
use etho_node::{NodeConfig, ServiceUrl};
use serde_json::{json, Value};
use tokio::net::TcpListener;

mod common;
use common::{serve, start_node, Node};

fn id(n: u32) -> String {
    format!("{n:032x}")
}

fn entry(n: u32, outcome: &str) -> Value {
    json!({"name": format!("ETHOSCOPE_{n:03}"), "status": "running",
           "progress": {"status": outcome, "message": format!("rsync failed with code 255 on {n}")},
           "processing": false, "count": 1, "started": 1, "ended": 2, "synced": {}})
}

/// A stub daemon whose `/status` the test sets; counts requests.
#[derive(Clone)]
struct Daemon {
    doc: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

impl Daemon {
    /// Device `n` running and backed up successfully, its copy's newest frame `behind` seconds
    /// old (the health's exposure, as the node polls no device here).
    fn set_behind(&self, n: u32, behind: f64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let mut e = entry(n, "success");
        e["newest_copied_at"] = json!(now - behind);
        e["last_success"] = json!(now - 1.0);
        e["interval_s"] = json!(300.0);
        *self.doc.lock().unwrap() = json!({ id(n): e });
    }

    fn set(&self, outcomes: &[(u32, &str)]) {
        let map: serde_json::Map<String, Value> = outcomes
            .iter()
            .map(|(n, o)| (id(*n), entry(*n, o)))
            .collect();
        *self.doc.lock().unwrap() = Value::Object(map);
    }
}

async fn daemon() -> (Daemon, String) {
    let d = Daemon {
        doc: Arc::new(Mutex::new(json!({}))),
        hits: Arc::new(AtomicUsize::new(0)),
    };
    let state = d.clone();
    let url = serve(Router::new().route(
        "/status",
        get(move || {
            let s = state.clone();
            async move {
                s.hits.fetch_add(1, Ordering::SeqCst);
                axum::Json(s.doc.lock().unwrap().clone())
            }
        }),
    ))
    .await;
    (d, url)
}

/// A webhook receiver: records the `text` of every delivered message; answers 500 to the first
/// `fail_first` requests.
#[derive(Clone, Default)]
struct Receiver {
    texts: Arc<Mutex<Vec<String>>>,
    attempts: Arc<AtomicUsize>,
    fail_first: usize,
}

impl Receiver {
    async fn start(self) -> (Receiver, String) {
        let r = self.clone();
        let url = serve(Router::new().route(
            "/hooks/secret",
            post(move |axum::Json(body): axum::Json<Value>| {
                let r = r.clone();
                async move {
                    if r.attempts.fetch_add(1, Ordering::SeqCst) < r.fail_first {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    r.texts
                        .lock()
                        .unwrap()
                        .push(body["text"].as_str().unwrap().to_string());
                    StatusCode::OK
                }
            }),
        ))
        .await;
        (self, format!("{url}/hooks/secret"))
    }

    fn texts(&self) -> Vec<String> {
        self.texts.lock().unwrap().clone()
    }
}

/// Polls `check` every 20 ms for up to 10 s.
async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn node(daemon_url: &str, webhooks: Vec<String>) -> Node {
    let mut alerts = AlertConfig::new(webhooks.iter().map(|u| u.parse().unwrap()).collect());
    alerts.interval = Duration::from_millis(100);
    alerts.backoff = Duration::from_millis(50);
    alerts.timeout = Duration::from_millis(500);
    alerts.retries = 3;
    start_node(NodeConfig {
        mysql_backup_url: ServiceUrl::daemon(daemon_url).unwrap(),
        rsync_backup_url: ServiceUrl::daemon(daemon_url).unwrap(),
        daemon_timeout: Duration::from_secs(1),
        status_cache_ttl: Duration::from_millis(50),
        alerts: Some(alerts),
        ..NodeConfig::default()
    })
    .await
}

/// Waits until the node has refreshed the daemon's status at least `rounds` more times.
async fn rounds(d: &Daemon, rounds: usize) {
    let start = d.hits.load(Ordering::SeqCst);
    wait_for("alert rounds", || {
        d.hits.load(Ordering::SeqCst) >= start + 2 * rounds
    })
    .await;
}

#[tokio::test]
async fn one_message_per_transition_ok_again_and_a_digest() {
    let (d, daemon_url) = daemon().await;
    d.set(&[(1, "success"), (2, "error")]);
    let (rx, hook) = Receiver::default().start().await;
    let _node = node(&daemon_url, vec![hook]).await;

    wait_for("the first alert", || !rx.texts().is_empty()).await;
    rounds(&d, 5).await;
    assert_eq!(
        rx.texts(),
        vec![
            "⚠️ ETHOSCOPE_002 is failing: its last backup failed: MySQL backup failed: rsync failed with code 255 on 2; rsync backup failed: rsync failed with code 255 on 2"
                .to_string()
        ],
        "exactly one message for one transition, however many rounds"
    );

    d.set(&[(1, "success"), (2, "success")]);
    wait_for("OK again", || rx.texts().len() == 2).await;
    rounds(&d, 5).await;
    let texts = rx.texts();
    assert_eq!(texts.len(), 2);
    assert_eq!(texts[1], "✅ ETHOSCOPE_002 OK again (was failing)");

    let many: Vec<(u32, &str)> = (1..=8).map(|n| (n, "error")).collect();
    d.set(&many);
    wait_for("the digest", || rx.texts().len() == 3).await;
    rounds(&d, 5).await;
    let texts = rx.texts();
    assert_eq!(texts.len(), 3, "8 changes at once: one digest");
    assert!(
        texts[2].starts_with("8 devices changed state: 8 need attention, 0 OK again\n• "),
        "{}",
        texts[2]
    );
}

/// Health: a device whose newest data has been only on it for 2 h (over the default 1 h) is
/// told once as at risk, with the health's reason, then once "OK again" when its copy caught up.
#[tokio::test]
async fn at_risk_from_the_health_then_ok_again() {
    let (d, daemon_url) = daemon().await;
    d.set_behind(7, 7200.0);
    let (rx, hook) = Receiver::default().start().await;
    let _node = node(&daemon_url, vec![hook]).await;
    wait_for("the at-risk alert", || !rx.texts().is_empty()).await;
    rounds(&d, 5).await;
    let texts = rx.texts();
    assert_eq!(texts.len(), 1, "one message for one transition: {texts:?}");
    assert!(
        texts[0].starts_with(
            "⚠️ ETHOSCOPE_007 is at risk: its newest data exists only on the device: "
        ),
        "{}",
        texts[0]
    );
    d.set_behind(7, 5.0);
    wait_for("OK again", || rx.texts().len() == 2).await;
    rounds(&d, 5).await;
    let texts = rx.texts();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert_eq!(texts[1], "✅ ETHOSCOPE_007 OK again (was at risk)");
}

#[tokio::test]
async fn a_failing_receiver_is_retried_with_backoff() {
    let (d, daemon_url) = daemon().await;
    d.set(&[(5, "error")]);
    let (rx, hook) = Receiver {
        fail_first: 2,
        ..Receiver::default()
    }
    .start()
    .await;
    let _node = node(&daemon_url, vec![hook]).await;
    wait_for("the retried alert", || rx.texts().len() == 1).await;
    rounds(&d, 5).await;
    assert_eq!(
        rx.attempts.load(Ordering::SeqCst),
        3,
        "two 500s, then delivered"
    );
    assert_eq!(rx.texts().len(), 1);
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_block_the_status() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang = format!("http://{}/hook", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    let (d, daemon_url) = daemon().await;
    d.set(&[(1, "error"), (2, "error")]);
    let node = node(&daemon_url, vec![hang]).await;
    wait_for("the webhook connection", || {
        accepted.load(Ordering::SeqCst) > 0
    })
    .await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..5 {
        let started = Instant::now();
        let resp = client
            .get(format!("{}/backup/status", node.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let doc: Value = resp.json().await.unwrap();
        assert_eq!(doc["unified_devices"].as_object().unwrap().len(), 2);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "/backup/status took {:?} while the webhook hangs",
            started.elapsed()
        );
    }
}
