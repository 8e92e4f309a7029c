//! The scheduler against a real HTTP node stub and a scripted engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etho_daemon::oneshot::OneShotError;
use etho_daemon::{
    Daemon, DaemonConfig, DiscoverySource, Engine, JobContext, JobOutcome, OneShotEvent,
    OneShotReport, SchedulerConfig, TargetOutcome,
};
use etho_model::device::{DeviceInfo, Ineligible};
use etho_model::status::{Progress, ProgressStatus};
use futures::future::BoxFuture;
use serde_json::{json, Map, Value};
use tokio::sync::Notify;

/// What the scripted engine does for a device name.
#[derive(Clone, Copy, Debug)]
enum Script {
    Succeed,
    /// Waits for `release`, then succeeds.
    Block,
    /// Waits until cancelled; records that it saw the cancellation.
    UntilCancelled,
    /// Ignores cancellation entirely.
    Hang,
    Panic,
}

#[derive(Default)]
struct Probe {
    running: AtomicUsize,
    peak: AtomicUsize,
    runs: AtomicUsize,
    saw_cancel: AtomicUsize,
    release: Notify,
}

struct ScriptEngine {
    scripts: HashMap<String, Script>,
    probe: Arc<Probe>,
}

impl Engine for ScriptEngine {
    fn name(&self) -> &'static str {
        "test-engine"
    }
    fn accepts(&self, device: &DeviceInfo) -> Result<(), Ineligible> {
        if device.name == "ETHOSCOPE_099" {
            Err(Ineligible::Engine("engine says no".into()))
        } else {
            Ok(())
        }
    }
    fn default_extra(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("metadata".into(), json!({}));
        m
    }
    fn run(&self, device: DeviceInfo, ctx: JobContext) -> BoxFuture<'static, JobOutcome> {
        let script = self
            .scripts
            .get(&device.name)
            .copied()
            .unwrap_or(Script::Succeed);
        let probe = Arc::clone(&self.probe);
        Box::pin(async move {
            let now = probe.running.fetch_add(1, Ordering::SeqCst) + 1;
            probe.peak.fetch_max(now, Ordering::SeqCst);
            probe.runs.fetch_add(1, Ordering::SeqCst);
            ctx.report(Progress::new(ProgressStatus::Success, "copying"));
            let out = match script {
                Script::Succeed => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let mut o = JobOutcome::success("done");
                    o.synced = Some(json!({"files": 1}));
                    o
                }
                Script::Block => {
                    probe.release.notified().await;
                    JobOutcome::success("released")
                }
                Script::UntilCancelled => {
                    ctx.cancel.cancelled().await;
                    probe.saw_cancel.fetch_add(1, Ordering::SeqCst);
                    JobOutcome::error("cancelled")
                }
                Script::Hang => std::future::pending().await,
                Script::Panic => panic!("engine exploded"),
            };
            probe.running.fetch_sub(1, Ordering::SeqCst);
            out
        })
    }
}

fn id(n: usize) -> String {
    format!("{n:032x}")
}

/// A node stub serving a fixed `/devices` body on 127.0.0.1.
async fn node_stub(body: Value) -> String {
    let body = Arc::new(Mutex::new(body));
    let app = axum::Router::new().route(
        "/devices",
        axum::routing::get(move || {
            let body = body.lock().unwrap().clone();
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr.to_string()
}

fn devices(specs: &[(usize, &str, &str)]) -> Value {
    let mut m = Map::new();
    for (n, name, status) in specs {
        m.insert(
            id(*n),
            json!({"id": id(*n), "name": name, "ip": "127.0.0.1", "status": status}),
        );
    }
    Value::Object(m)
}

fn daemon(
    node: String,
    scripts: &[(&str, Script)],
    sched: SchedulerConfig,
) -> (Arc<Daemon>, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    let engine = ScriptEngine {
        scripts: scripts.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
        probe: Arc::clone(&probe),
    };
    let mut config = DaemonConfig::new(node);
    config.scheduler = sched;
    // Generous: one test reads a 35 MB list, which a debug build on a loaded 2-core machine
    // has taken longer than 2 s to fetch and parse; no test here waits on a silent node.
    config.discovery_timeout = Duration::from_secs(30);
    config.discovery_retry_delay = Duration::from_millis(20);
    (Daemon::new(Arc::new(engine), config).unwrap(), probe)
}

fn sched(max_jobs: usize, timeout_ms: u64) -> SchedulerConfig {
    SchedulerConfig {
        interval: Duration::from_millis(200),
        max_jobs,
        job_timeout: Duration::from_millis(timeout_ms),
        cancel_grace: Duration::from_millis(300),
    }
}

#[tokio::test]
async fn worker_limit_is_respected_and_every_eligible_device_runs() {
    let specs: Vec<(usize, String)> = (1..=6).map(|n| (n, format!("ETHOSCOPE_{n:03}"))).collect();
    let spec_refs: Vec<(usize, &str, &str)> = specs
        .iter()
        .map(|(n, s)| (*n, s.as_str(), "running"))
        .collect();
    let node = node_stub(devices(&spec_refs)).await;
    let (d, probe) = daemon(node, &[], sched(2, 5000));
    let report = d.run_cycle().await;
    assert_eq!(report.jobs.len(), 6);
    assert!(report
        .jobs
        .iter()
        .all(|(_, s)| *s == ProgressStatus::Success));
    assert_eq!(
        probe.peak.load(Ordering::SeqCst),
        2,
        "at most 2 jobs at once"
    );
    let st = d.status().get(&id(3)).unwrap();
    assert_eq!(st.count, 1);
    assert!(!st.processing);
    assert!(st.ended > 0);
    assert_eq!(st.synced, json!({"files": 1}));
    assert_eq!(st.extra.get("metadata"), Some(&json!({})));
    assert_eq!(d.status().service().cycle_number, 1);
    assert!(!d.status().service().last_backup.is_empty());
}

#[tokio::test]
async fn ineligible_devices_are_not_attempted() {
    let node = node_stub(devices(&[
        (1, "ETHOSCOPE_001", "offline"),
        (2, "ETHOSCOPE_002", "unreached"),
        (3, "ETHOSCOPE_000", "running"),
        (4, "ETHOSCOPE_099", "running"),
        (5, "ETHOSCOPE_005", "stopped"),
    ]))
    .await;
    let (d, probe) = daemon(node, &[], sched(4, 5000));
    let report = d.run_cycle().await;
    assert_eq!(report.jobs, vec![(id(5), ProgressStatus::Success)]);
    assert_eq!(report.skipped.len(), 4);
    assert_eq!(probe.runs.load(Ordering::SeqCst), 1);
    assert!(
        d.status().get(&id(4)).is_none(),
        "refused devices get no entry"
    );
    let svc = d.status().service();
    assert_eq!(
        svc.discovery.skipped.get(&id(4)).map(String::as_str),
        Some("engine says no")
    );
}

/// The daemons skip a malformed entry and back up the rest, also from a node list larger than
/// the 32 MiB they used to accept (upstream's node relays padded answers whole), and a machine
/// id the node reports in conflict is not attempted.
#[tokio::test]
async fn malformed_entries_are_skipped_and_the_rest_is_backed_up() {
    let mut m = devices(&[
        (1, "ETHOSCOPE_001", "running"),
        (2, "ETHOSCOPE_002", "conflict"),
        (4, "ETHOSCOPE_004", "running"),
    ]);
    m[id(4)]["databases"] = json!("not an object");
    m["x"] = json!(5);
    m[id(3)] = json!({"id": id(3), "name": "ETHOSCOPE_003", "ip": "10.0.0.1; rm -rf /"});
    m[id(5)] = json!({"id": id(5), "name": "../etc", "ip": "127.0.0.1"});
    for n in 10..19 {
        m[id(n)] = json!({"id": id(n), "name": format!("ETHOSCOPE_{n:03}"), "ip": "127.0.0.1",
                          "status": "running", "padding": "x".repeat(3_900_000)});
    }
    assert!(serde_json::to_vec(&m).unwrap().len() > 32 * 1024 * 1024);
    let node = node_stub(m).await;
    let (d, _) = daemon(node, &[], sched(4, 5000));
    let report = d.run_cycle().await;
    assert_eq!(report.discovery_error, None);
    let ran: Vec<&String> = report.jobs.iter().map(|(i, _)| i).collect();
    assert_eq!(ran.len(), 11, "{ran:?}");
    assert!(ran.contains(&&id(1)) && ran.contains(&&id(4)));
    let skipped: Vec<(String, String)> = report
        .skipped
        .iter()
        .map(|(i, why)| (i.clone(), why.to_string()))
        .collect();
    assert_eq!(skipped, [(id(2), "device status is conflict".to_string())]);
    let rejected = d.status().service().discovery.rejected;
    assert_eq!(rejected.len(), 3, "{rejected:?}");
}

#[tokio::test]
async fn a_device_with_a_live_job_is_never_queued_twice() {
    let node = node_stub(devices(&[(1, "ETHOSCOPE_001", "running")])).await;
    let (d, probe) = daemon(node, &[("ETHOSCOPE_001", Script::Block)], sched(4, 10_000));
    let first = tokio::spawn({
        let d = Arc::clone(&d);
        async move { d.run_cycle().await }
    });
    // Wait until the first job is running.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while probe.running.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "job never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(d.status().get(&id(1)).unwrap().processing);
    assert_eq!(
        d.status().get(&id(1)).unwrap().progress.status,
        Some(ProgressStatus::Running)
    );
    let second = d.run_cycle().await;
    assert_eq!(second.busy, vec![id(1)]);
    assert!(second.jobs.is_empty());
    probe.release.notify_one();
    let first = first.await.unwrap();
    assert_eq!(first.jobs, vec![(id(1), ProgressStatus::Success)]);
    assert_eq!(probe.runs.load(Ordering::SeqCst), 1);
    assert_eq!(d.status().get(&id(1)).unwrap().count, 1);
}

#[tokio::test]
async fn timeout_cancels_the_job_and_marks_it_killed() {
    let node = node_stub(devices(&[
        (1, "ETHOSCOPE_001", "running"),
        (2, "ETHOSCOPE_002", "running"),
    ]))
    .await;
    let (d, probe) = daemon(
        node,
        &[
            ("ETHOSCOPE_001", Script::UntilCancelled),
            ("ETHOSCOPE_002", Script::Hang),
        ],
        sched(4, 300),
    );
    let started = std::time::Instant::now();
    let report = d.run_cycle().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timeout + grace bound the cycle"
    );
    assert_eq!(report.jobs.len(), 2);
    assert_eq!(
        probe.saw_cancel.load(Ordering::SeqCst),
        1,
        "the cooperative job saw its token cancelled"
    );
    for n in [1, 2] {
        let st = d.status().get(&id(n)).unwrap();
        assert_eq!(st.ended, -1);
        assert!(!st.processing);
        assert_eq!(st.progress.status, Some(ProgressStatus::Error));
        assert!(
            st.progress.message.unwrap().contains("timed out"),
            "device {n}"
        );
    }
    assert_eq!(d.live_jobs(), 0, "aborted tasks are gone");
}

#[tokio::test]
async fn a_panicking_job_is_an_error_and_the_daemon_goes_on() {
    let node = node_stub(devices(&[
        (1, "ETHOSCOPE_001", "running"),
        (2, "ETHOSCOPE_002", "running"),
    ]))
    .await;
    let (d, _probe) = daemon(node, &[("ETHOSCOPE_001", Script::Panic)], sched(4, 5000));
    let report = d.run_cycle().await;
    assert_eq!(report.jobs.len(), 2);
    let st = d.status().get(&id(1)).unwrap();
    assert_eq!(st.progress.status, Some(ProgressStatus::Error));
    assert!(st.progress.message.unwrap().contains("engine exploded"));
    assert_eq!(
        d.status().get(&id(2)).unwrap().progress.status,
        Some(ProgressStatus::Success)
    );
    assert_eq!(
        d.run_cycle().await.jobs.len(),
        2,
        "next cycle runs normally"
    );
}

#[tokio::test]
async fn node_errors_are_reported_not_fatal() {
    for (body, needle) in [
        (
            json!({"error": "Traceback (most recent call last): ..."}),
            "node reported an error",
        ),
        (json!([1, 2]), "array"),
    ] {
        let node = node_stub(body).await;
        let (d, probe) = daemon(node, &[], sched(4, 5000));
        let report = d.run_cycle().await;
        let err = report.discovery_error.expect("discovery must fail");
        assert!(err.contains(needle), "{err}");
        let svc = d.status().service();
        assert_eq!(svc.discovery.source, DiscoverySource::Failed);
        assert!(svc.discovery.last_error.unwrap().contains(needle));
        assert_eq!(probe.runs.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test]
async fn unreachable_node_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (d, _) = daemon(addr.to_string(), &[], sched(4, 5000));
    let err = d.discover().await.unwrap_err().to_string();
    assert!(err.contains("cannot reach the node"), "{err}");
}

#[tokio::test]
async fn run_loop_cycles_from_cycle_start_and_stops_on_shutdown() {
    let node = node_stub(devices(&[(1, "ETHOSCOPE_001", "running")])).await;
    let (d, probe) = daemon(node, &[], sched(4, 5000));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(Arc::clone(&d).run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while probe.runs.load(Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cycles did not repeat"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("loop stops")
        .unwrap();
    assert!(d.status().service().cycle_number >= 3);
}

#[tokio::test]
async fn one_shot_resolves_targets_and_reports_failure() {
    let node = node_stub(devices(&[
        (1, "ETHOSCOPE_001", "running"),
        (7, "ETHOSCOPE_007", "offline"),
    ]))
    .await;
    let (d, probe) = daemon(node, &[], sched(4, 5000));
    let good = |r: Result<OneShotReport, OneShotError>| r.is_ok_and(|r| r.all_good());
    assert!(good(d.run_once("1", None).await));
    assert_eq!(probe.runs.load(Ordering::SeqCst), 1);
    assert!(
        !good(d.run_once("1,7", None).await),
        "offline target fails the run"
    );
    assert!(
        !good(d.run_once("ETHOSCOPE_042,ETHOSCOPE_001", None).await),
        "unknown target fails, others still run"
    );
    assert_eq!(probe.runs.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn one_shot_reports_each_target_and_streams_progress() {
    let node = node_stub(devices(&[
        (1, "ETHOSCOPE_001", "running"),
        (7, "ETHOSCOPE_007", "offline"),
    ]))
    .await;
    let (d, _probe) = daemon(node, &[], sched(4, 5000));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let report = d.run_once("7,1,ETHOSCOPE_042", Some(tx)).await.unwrap();
    assert!(!report.all_good());
    match &report.outcomes[..] {
        [TargetOutcome::Ineligible { device, reason }, TargetOutcome::Unresolved(unknown), TargetOutcome::Finished {
            device: done,
            status,
        }] => {
            assert_eq!(device.id, id(7));
            assert_eq!(*reason, Ineligible::Status("offline".into()));
            assert!(unknown.to_string().contains("ETHOSCOPE_042"), "{unknown}");
            assert_eq!(done.id, id(1));
            assert_eq!(status.progress.status, Some(ProgressStatus::Success));
        }
        other => panic!("unexpected outcomes {other:?}"),
    }
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, OneShotEvent::Started(dev) if dev.id == id(1))),
        "{events:?}"
    );
    let done: Vec<&TargetOutcome> = events
        .iter()
        .filter_map(|e| match e {
            OneShotEvent::Done(outcome) => Some(outcome),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 3, "every outcome is also sent as an event");
    assert!(matches!(done.last(), Some(TargetOutcome::Finished { .. })));
    // An empty target list is an error, not an empty success.
    assert!(matches!(
        d.run_once(" , ", None).await,
        Err(OneShotError::Targets(_))
    ));
}

#[tokio::test]
async fn jobs_see_the_scheduler_deadline() {
    let node = node_stub(devices(&[(1, "ETHOSCOPE_001", "running")])).await;
    let seen = Arc::new(Mutex::new(None));
    struct DeadlineEngine(Arc<Mutex<Option<std::time::Instant>>>);
    impl Engine for DeadlineEngine {
        fn name(&self) -> &'static str {
            "deadline-engine"
        }
        fn accepts(&self, _: &DeviceInfo) -> Result<(), Ineligible> {
            Ok(())
        }
        fn default_extra(&self) -> Map<String, Value> {
            Map::new()
        }
        fn run(&self, _: DeviceInfo, ctx: JobContext) -> BoxFuture<'static, JobOutcome> {
            *self.0.lock().unwrap() = Some(ctx.deadline());
            Box::pin(async { JobOutcome::success("ok") })
        }
    }
    let mut config = DaemonConfig::new(node);
    config.scheduler = sched(4, 7000);
    let d = Daemon::new(Arc::new(DeadlineEngine(Arc::clone(&seen))), config).unwrap();
    let before = std::time::Instant::now();
    d.run_cycle().await;
    let deadline = seen.lock().unwrap().expect("the job ran");
    let after = std::time::Instant::now();
    assert!(deadline >= before + Duration::from_millis(7000));
    assert!(deadline <= after + Duration::from_millis(7000));
}
