//! `-e/--ethoscope TARGETS`: back up the named devices once and exit.
//!
//! Targets are resolved through the node's device list (upstream guessed names and even database
//! names from IP addresses, reference bug A11): `7` or `007` is `ETHOSCOPE_007`, a 32-hex string is
//! a machine id, an IP address is a device address, anything else is a device name. Every target
//! is attempted even when an earlier one fails; the result is true only if all succeeded.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use etho_model::device::{is_valid_machine_id, DeviceInfo};
use etho_model::status::{DeviceStatus, ProgressStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::scheduler::Daemon;

/// One `-e` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `7` → `ETHOSCOPE_007`.
    Number(u32),
    /// A machine id.
    Id(String),
    /// A device address.
    Ip(IpAddr),
    /// A device name (matched case-insensitively).
    Name(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Number(n) => write!(f, "ETHOSCOPE_{n:03}"),
            Target::Id(s) | Target::Name(s) => f.write_str(s),
            Target::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Parses a comma-separated target list.
pub fn parse_targets(list: &str) -> Result<Vec<Target>, String> {
    let targets: Vec<Target> = list
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            if let Ok(n) = t.parse::<u32>() {
                Target::Number(n)
            } else if is_valid_machine_id(t) {
                Target::Id(t.to_string())
            } else if let Ok(ip) = t.parse::<IpAddr>() {
                Target::Ip(ip)
            } else {
                Target::Name(t.to_string())
            }
        })
        .collect();
    if targets.is_empty() {
        return Err(format!("no device named in {list:?}"));
    }
    Ok(targets)
}

/// Finds the device a target names.
pub fn resolve<'a>(target: &Target, devices: &'a [DeviceInfo]) -> Result<&'a DeviceInfo, String> {
    let found: Vec<&DeviceInfo> = devices
        .iter()
        .filter(|d| match target {
            Target::Number(n) => d.name.eq_ignore_ascii_case(&format!("ETHOSCOPE_{n:03}")),
            Target::Id(id) => &d.id == id,
            Target::Ip(ip) => &d.ip == ip,
            Target::Name(name) => d.name.eq_ignore_ascii_case(name),
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(format!("{target}: not in the node's device list")),
        many => Err(format!(
            "{target}: matches {} devices ({}); name it by id",
            many.len(),
            many.iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// True for outcomes that count as a good backup in one-shot mode.
pub fn is_good(status: &DeviceStatus) -> bool {
    matches!(
        status.progress.status,
        Some(ProgressStatus::Success | ProgressStatus::Warning)
    )
}

fn summary_line(device: &DeviceInfo, status: Option<&DeviceStatus>) -> String {
    match status {
        Some(st) => format!(
            "{} ({}): {} - {}",
            device.name,
            device.id,
            st.progress
                .status
                .as_ref()
                .map_or("unknown", |s| s.as_str()),
            st.progress.message.as_deref().unwrap_or("")
        ),
        None => format!(
            "{} ({}): a job for this device is already running",
            device.name, device.id
        ),
    }
}

impl Daemon {
    /// Backs up each target once. With `progress_bars`, shows one bar per device (for a
    /// terminal); otherwise prints plain lines. True only if every target succeeded.
    pub async fn run_once(self: &Arc<Self>, targets: &str, progress_bars: bool) -> bool {
        let targets = match parse_targets(targets) {
            Ok(t) => t,
            Err(err) => {
                eprintln!("{err}");
                return false;
            }
        };
        let found = match self.discover().await {
            Ok(found) => found,
            Err(err) => {
                eprintln!("cannot resolve targets: {err}");
                return false;
            }
        };
        let mut all_good = true;
        let mut chosen: Vec<DeviceInfo> = Vec::new();
        for target in &targets {
            match resolve(target, &found.devices) {
                Ok(device) => {
                    if let Some(reason) = self.ineligibility(device) {
                        eprintln!("{} ({}): not backed up: {reason}", device.name, device.id);
                        all_good = false;
                    } else if !chosen.iter().any(|d| d.id == device.id) {
                        chosen.push(device.clone());
                    }
                }
                Err(err) => {
                    eprintln!("{err}");
                    all_good = false;
                }
            }
        }
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos:>3}% {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let mut jobs = Vec::new();
        for device in chosen {
            let bar = if progress_bars {
                let bar = multi.add(ProgressBar::new(100));
                bar.set_style(style.clone());
                bar.set_prefix(device.name.clone());
                Some(bar)
            } else {
                println!("{} ({}): backup started", device.name, device.id);
                None
            };
            let daemon = Arc::clone(self);
            jobs.push(tokio::spawn(async move {
                let id = device.id.clone();
                let watcher = bar.clone().map(|bar| {
                    let daemon = Arc::clone(&daemon);
                    let id = id.clone();
                    tokio::spawn(async move {
                        loop {
                            if let Some(st) = daemon.status().get(&id) {
                                if let Some(p) =
                                    st.progress.extra.get("percent").and_then(|v| v.as_f64())
                                {
                                    bar.set_position(p.clamp(0.0, 100.0) as u64);
                                }
                                bar.set_message(st.progress.message.clone().unwrap_or_default());
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    })
                });
                let result = daemon.run_device(device.clone()).await;
                if let Some(w) = watcher {
                    w.abort();
                }
                let line = summary_line(&device, result.as_ref());
                match &bar {
                    Some(bar) => {
                        if result.as_ref().is_some_and(is_good) {
                            bar.set_position(100);
                        }
                        bar.finish_with_message(line.clone());
                    }
                    None => println!("{line}"),
                }
                result.as_ref().is_some_and(is_good)
            }));
        }
        for job in jobs {
            all_good &= job.await.unwrap_or(false);
        }
        self.status().flush().await;
        all_good
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dev(id: &str, name: &str, ip: &str) -> DeviceInfo {
        DeviceInfo::from_entry(
            id,
            &json!({"id": id, "name": name, "ip": ip, "status": "running"}),
        )
        .unwrap()
    }

    #[test]
    fn parses_and_resolves_targets() {
        let a = "0123456789abcdef0123456789abcdef";
        let b = "ffffffffffffffffffffffffffffffff";
        let devices = vec![
            dev(a, "ETHOSCOPE_007", "127.0.0.10"),
            dev(b, "ETHOSCOPE_012", "127.0.0.11"),
        ];
        let t = parse_targets(&format!(" 7,{b},127.0.0.10,ethoscope_012 ,,")).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(resolve(&t[0], &devices).unwrap().id, a);
        assert_eq!(resolve(&t[1], &devices).unwrap().id, b);
        assert_eq!(resolve(&t[2], &devices).unwrap().id, a);
        assert_eq!(resolve(&t[3], &devices).unwrap().id, b);
        assert!(resolve(&Target::Number(8), &devices)
            .unwrap_err()
            .contains("ETHOSCOPE_008"));
        assert!(parse_targets(" , ").is_err());
        let dup = vec![dev(a, "X", "127.0.0.10"), dev(b, "x", "127.0.0.11")];
        assert!(resolve(&Target::Name("X".into()), &dup)
            .unwrap_err()
            .contains("matches 2"));
    }
}
