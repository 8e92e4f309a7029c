//! What the demo prints while it runs: one line per change, from the node's own documents.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Url;
use serde_json::Value;

use crate::supervisor::{Exited, Supervisor};

/// How often the node is asked.
pub const EVERY: Duration = Duration::from_secs(2);
/// Largest document read from the node.
const MAX_DOCUMENT: usize = 32 << 20;

/// How often a device's unchanged-outcome backups are summarised again (new data arrives every
/// cycle while experiments run; one line per cycle per device would flood the terminal).
const QUIET_FOR: Duration = Duration::from_secs(60);

/// What was last printed for one device and side.
struct Printed {
    count: u64,
    outcome: String,
    at: Instant,
}

/// Turns successive `/devices` and `/backup/status` documents into one line per change.
#[derive(Default)]
pub struct Watcher {
    device_status: BTreeMap<String, String>,
    /// (device id, side) → the last finished run seen and when it was printed.
    runs: BTreeMap<(String, &'static str), Printed>,
}

fn clock() -> String {
    let secs = etho_model::now_epoch().rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn short(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

impl Watcher {
    /// Lines for what changed in a `/devices` document.
    pub fn devices(&mut self, doc: &Value) -> Vec<String> {
        let mut lines = Vec::new();
        let Some(map) = doc.as_object() else {
            return lines;
        };
        for (id, d) in map {
            let status = d["status"].as_str().unwrap_or("?").to_string();
            let name = d["name"].as_str().unwrap_or(id);
            let old = self.device_status.insert(id.clone(), status.clone());
            let notable = matches!(status.as_str(), "offline" | "unreached" | "busy")
                || matches!(old.as_deref(), Some("offline" | "unreached" | "busy"));
            match old {
                None => lines.push(format!(
                    "{} {name:<14} found at {} ({status})",
                    clock(),
                    d["ip"].as_str().unwrap_or("?")
                )),
                Some(o) if o != status && notable => {
                    lines.push(format!("{} {name:<14} is now {status} (was {o})", clock()))
                }
                _ => {}
            }
        }
        lines
    }

    /// Lines for backups that finished since the last `/backup/status` document.
    pub fn backups(&mut self, doc: &Value) -> Vec<String> {
        let mut lines = Vec::new();
        let Some(devices) = doc["unified_devices"].as_object() else {
            return lines;
        };
        for (id, d) in devices {
            let name = d["name"].as_str().unwrap_or(id);
            for (side, label) in [("mysql_backup", "mysql"), ("rsync_backup", "rsync")] {
                let b = &d[side];
                if b["available"] != true || b["processing"] == true {
                    continue;
                }
                let count = b["count"].as_u64().unwrap_or(0);
                let outcome = b["progress"]["status"].as_str().unwrap_or("?");
                let key = (id.clone(), label);
                let news = match self.runs.get(&key) {
                    _ if count == 0 => false,
                    None => true,
                    Some(p) if p.count == count => false,
                    Some(p) => p.outcome != outcome || p.at.elapsed() >= QUIET_FOR,
                };
                if !news {
                    if let Some(p) = self.runs.get_mut(&key) {
                        p.count = count;
                    }
                    continue;
                }
                self.runs.insert(
                    key,
                    Printed {
                        count,
                        outcome: outcome.to_string(),
                        at: Instant::now(),
                    },
                );
                let message = b["progress"]["message"].as_str().unwrap_or("");
                let size = b["synced"]["results"]["disk_usage_human"]
                    .as_str()
                    .map(|s| format!(" [{s}]"))
                    .unwrap_or_default();
                lines.push(format!(
                    "{} {name:<14} {label:<5} {outcome:<7} #{count} {}{size}  (overall: {})",
                    clock(),
                    short(message, 90),
                    d["overall_status"].as_str().unwrap_or("?")
                ));
            }
        }
        lines
    }
}

/// Polls the node every [`EVERY`] and hands each summary line to `print`, until `shutdown`
/// resolves (`Ok`) or a service exits (`Err`, with its log's last lines).
pub async fn run(
    supervisor: &mut Supervisor,
    node_base: &str,
    shutdown: impl std::future::Future<Output = ()>,
    mut print: impl FnMut(String),
) -> Result<(), Exited> {
    let http = etho_http::client(Duration::from_secs(2)).ok();
    let url = |path: &str| Url::parse(&format!("{node_base}{path}")).ok();
    let (devices_url, status_url) = (url("/devices"), url("/backup/status"));
    let mut watcher = Watcher::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(EVERY) => {}
        }
        if let Some(exited) = supervisor.exited() {
            return Err(exited);
        }
        let (Some(http), Some(devices_url), Some(status_url)) = (&http, &devices_url, &status_url)
        else {
            continue;
        };
        let get =
            |url| etho_http::fetch_json::<Value>(http, url, MAX_DOCUMENT, Duration::from_secs(5));
        if let Ok(devices) = get(devices_url).await {
            watcher.devices(&devices).into_iter().for_each(&mut print);
        }
        if let Ok(status) = get(status_url).await {
            watcher.backups(&status).into_iter().for_each(&mut print);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn watcher_reports_changes_once() {
        let mut w = Watcher::default();
        let devs = json!({"a": {"name": "ETHOSCOPE_001", "status": "running", "ip": "127.0.0.10"}});
        assert_eq!(w.devices(&devs).len(), 1);
        assert!(w.devices(&devs).is_empty());
        let stopped = json!({"a": {"name": "ETHOSCOPE_001", "status": "stopped"}});
        assert!(
            w.devices(&stopped).is_empty(),
            "run status changes are not news"
        );
        let off = json!({"a": {"name": "ETHOSCOPE_001", "status": "offline"}});
        assert!(w.devices(&off)[0].contains("is now offline"));

        let status = |count: u64, processing: bool| {
            json!({"unified_devices": {"a": {"name": "ETHOSCOPE_001", "overall_status": "partial",
                "mysql_backup": {"available": false},
                "rsync_backup": {"available": true, "processing": processing, "count": count,
                    "progress": {"status": "success", "message": "done"},
                    "synced": {"results": {"disk_usage_human": "1.5 MB"}}}}}})
        };
        assert!(w.backups(&status(0, false)).is_empty());
        assert!(w.backups(&status(1, true)).is_empty());
        let lines = w.backups(&status(1, false));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].contains("rsync") && lines[0].contains("#1") && lines[0].contains("1.5 MB")
        );
        assert!(w.backups(&status(1, false)).is_empty());
        // Same outcome soon after: quiet. A different outcome: printed at once.
        assert!(w.backups(&status(2, false)).is_empty());
        let mut failed = status(3, false);
        failed["unified_devices"]["a"]["rsync_backup"]["progress"]["status"] = json!("error");
        assert_eq!(w.backups(&failed).len(), 1);
        assert!(w.backups(&failed).is_empty());
    }
}
