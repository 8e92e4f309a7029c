//! What `deploy/prometheus/` and `deploy/grafana/` ship, checked with Debian's promtool: the
//! alert rules and their unit tests, the scrape configuration, the golden metric lists, and the
//! Grafana dashboard's queries resolved against those lists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Runs promtool; fails loudly when it is missing (Debian's `prometheus` package has it).
fn promtool(args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is needed (apt-get install prometheus; scripts/test installs it): {e}")
        });
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn golden_files() -> Vec<PathBuf> {
    ["daemon.prom", "node.prom"]
        .iter()
        .map(|f| deploy().join("prometheus/golden").join(f))
        .collect()
}

/// Every series name the golden expositions define (histograms with their three series).
fn golden_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in golden_files() {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let (name, kind) = rest.split_once(' ').unwrap();
            names.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

/// The `etho_backup_*` names a PromQL expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("etho_backup_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "etho-backup.rules.yml"], None);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "etho-backup.rules.test.yml"], None);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every rule has a unit test.
    let rules = std::fs::read_to_string(deploy().join("prometheus/etho-backup.rules.yml")).unwrap();
    let tests =
        std::fs::read_to_string(deploy().join("prometheus/etho-backup.rules.test.yml")).unwrap();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tests.contains(&format!("alertname: {name}")),
                "{name} has no unit test"
            );
        }
    }
}

#[test]
fn the_shipped_prometheus_config_is_valid() {
    let out = promtool(&["check", "config", "prometheus.yml"], None);
    assert!(
        out.contains("is valid prometheus config file syntax"),
        "{out}"
    );
}

#[test]
fn golden_metric_lists_pass_promtool_check_metrics() {
    for file in golden_files() {
        let text = std::fs::read(&file).unwrap();
        assert!(!text.is_empty(), "{} is empty", file.display());
        let out = promtool(&["check", "metrics"], Some(&text));
        assert!(out.trim().is_empty(), "{}: {out}", file.display());
    }
}

#[test]
fn the_grafana_dashboard_names_only_golden_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/etho-backup.json")).unwrap(),
    )
    .unwrap();
    let golden = golden_names();
    let mut used = BTreeSet::new();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8, "{} panels", panels.len());
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} names no etho_backup metric");
            for name in names {
                assert!(
                    golden.contains(&name),
                    "panel {}: {name} is not in the golden metric lists",
                    panel["title"]
                );
                used.insert(name);
            }
        }
    }
    for needed in [
        "etho_backup_device_exposure_seconds",
        "etho_backup_device_health",
        "etho_backup_device_last_success_timestamp_seconds",
        "etho_backup_runs_total",
        "etho_backup_archive_bytes",
        "etho_backup_devices",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
}
