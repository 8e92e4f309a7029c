//! `-e/--ethoscope TARGETS`: back up the named devices once and exit.
//!
//! Targets are resolved through the node's device list (upstream guessed names and even database
//! names from IP addresses, reference bug A11): `7` or `007` is `ETHOSCOPE_007`, a 32-hex string is
//! a machine id, an IP address is a device address, anything else is a device name. Every target
//! is attempted even when an earlier one fails.
//!
//! [`Daemon::run_once`] returns one [`TargetOutcome`] per target and, while it runs, sends
//! [`OneShotEvent`]s (job started, live progress, outcome) to an optional channel. It prints
//! nothing: the binary decides how to show them (progress bars on a terminal, lines otherwise).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use etho_model::device::{is_valid_machine_id, DeviceInfo, Ineligible};
use etho_model::status::{DeviceStatus, ProgressStatus};
use tokio::sync::mpsc::UnboundedSender;

use crate::discovery::DiscoveryError;
use crate::scheduler::Daemon;

/// How often live progress is sampled for [`OneShotEvent::Progress`].
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

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

/// Why a target list or a target could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The list names nothing (`""`, `" , "`).
    #[error("no device named in {0:?}")]
    Empty(String),
    /// No device in the node's list matches.
    #[error("{0}: not in the node's device list")]
    NotFound(Target),
    /// Several devices match (by name or address); their ids are listed.
    #[error("{target}: matches {} devices ({}); name it by id", ids.len(), ids.join(", "))]
    Ambiguous {
        /// The target.
        target: Target,
        /// Ids of every matching device.
        ids: Vec<String>,
    },
}

/// Parses a comma-separated target list.
pub fn parse_targets(list: &str) -> Result<Vec<Target>, TargetError> {
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
        return Err(TargetError::Empty(list.to_string()));
    }
    Ok(targets)
}

/// Finds the device a target names.
pub fn resolve<'a>(
    target: &Target,
    devices: &'a [DeviceInfo],
) -> Result<&'a DeviceInfo, TargetError> {
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
        [] => Err(TargetError::NotFound(target.clone())),
        many => Err(TargetError::Ambiguous {
            target: target.clone(),
            ids: many.iter().map(|d| d.id.clone()).collect(),
        }),
    }
}

/// True for outcomes that count as a good backup in one-shot mode.
pub fn is_good(status: &DeviceStatus) -> bool {
    matches!(
        status.progress.status,
        Some(ProgressStatus::Success | ProgressStatus::Warning)
    )
}

/// What became of one target.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetOutcome {
    /// The target names no single device.
    Unresolved(TargetError),
    /// The device is not backed up by this daemon.
    Ineligible {
        /// The device.
        device: DeviceInfo,
        /// Why.
        reason: Ineligible,
    },
    /// A job for the device was already running; nothing was started.
    Busy(DeviceInfo),
    /// The job ran; its final status entry.
    Finished {
        /// The device.
        device: DeviceInfo,
        /// The entry after the job.
        status: Box<DeviceStatus>,
    },
}

impl TargetOutcome {
    /// A finished job whose outcome counts as good ([`is_good`]).
    pub fn is_good(&self) -> bool {
        matches!(self, TargetOutcome::Finished { status, .. } if is_good(status))
    }
}

/// What one `run_once` did, one entry per resolved device or refused target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OneShotReport {
    /// Refused targets first, then finished jobs, each in target order (a device named twice
    /// appears once).
    pub outcomes: Vec<TargetOutcome>,
}

impl OneShotReport {
    /// True only if every target was backed up with a good outcome.
    pub fn all_good(&self) -> bool {
        self.outcomes.iter().all(TargetOutcome::is_good)
    }
}

/// Why `run_once` could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    /// The target list is empty.
    #[error(transparent)]
    Targets(#[from] TargetError),
    /// The node could not be asked, so no target can be resolved.
    #[error("cannot resolve targets")]
    Discovery(#[from] DiscoveryError),
}

/// Live news from `run_once`, for a progress display.
#[derive(Debug, Clone, PartialEq)]
pub enum OneShotEvent {
    /// A job for this device starts (refused targets come as [`OneShotEvent::Done`] first).
    Started(DeviceInfo),
    /// The job's live progress changed.
    Progress {
        /// Device id.
        id: String,
        /// `progress.percent`, when the engine reports one.
        percent: Option<f64>,
        /// `progress.message`.
        message: String,
    },
    /// A target's final outcome.
    Done(TargetOutcome),
}

impl Daemon {
    /// Backs up each target once; progress goes to `events` when given. Refused targets are
    /// reported, not fatal: every other target still runs.
    pub async fn run_once(
        self: &Arc<Self>,
        targets: &str,
        events: Option<UnboundedSender<OneShotEvent>>,
    ) -> Result<OneShotReport, OneShotError> {
        let targets = parse_targets(targets)?;
        let found = self.discover().await?;
        let send = |event: OneShotEvent| {
            if let Some(tx) = &events {
                let _ = tx.send(event);
            }
        };
        let mut report = OneShotReport::default();
        let mut chosen: Vec<DeviceInfo> = Vec::new();
        for target in &targets {
            let refused = match resolve(target, &found.devices) {
                Err(err) => TargetOutcome::Unresolved(err),
                Ok(device) => match self.ineligibility(device) {
                    Some(reason) => TargetOutcome::Ineligible {
                        device: device.clone(),
                        reason,
                    },
                    None => {
                        if !chosen.iter().any(|d| d.id == device.id) {
                            chosen.push(device.clone());
                        }
                        continue;
                    }
                },
            };
            send(OneShotEvent::Done(refused.clone()));
            report.outcomes.push(refused);
        }
        let jobs: Vec<_> = chosen
            .into_iter()
            .map(|device| {
                send(OneShotEvent::Started(device.clone()));
                tokio::spawn(Arc::clone(self).run_target(device, events.clone()))
            })
            .collect();
        for job in jobs {
            match job.await {
                Ok(outcome) => report.outcomes.push(outcome),
                Err(err) => tracing::error!("one-shot job task failed: {err}"),
            }
        }
        self.status().flush().await;
        Ok(report)
    }

    /// One device's job, with a watcher that relays its live progress.
    async fn run_target(
        self: Arc<Self>,
        device: DeviceInfo,
        events: Option<UnboundedSender<OneShotEvent>>,
    ) -> TargetOutcome {
        let watcher = events
            .clone()
            .map(|tx| tokio::spawn(Arc::clone(&self).relay_progress(device.id.clone(), tx)));
        let result = self.run_device(device.clone()).await;
        if let Some(w) = watcher {
            w.abort();
        }
        let outcome = match result {
            Some(status) => TargetOutcome::Finished {
                device,
                status: Box::new(status),
            },
            None => TargetOutcome::Busy(device),
        };
        if let Some(tx) = &events {
            let _ = tx.send(OneShotEvent::Done(outcome.clone()));
        }
        outcome
    }

    /// Sends the device's live progress whenever it changes, until aborted.
    async fn relay_progress(self: Arc<Self>, id: String, tx: UnboundedSender<OneShotEvent>) {
        let mut last = None;
        loop {
            if let Some(st) = self.status().get(&id) {
                let percent = st.progress.extra.get("percent").and_then(|v| v.as_f64());
                let message = st.progress.message.unwrap_or_default();
                let now = (percent, message);
                if last.as_ref() != Some(&now) {
                    let event = OneShotEvent::Progress {
                        id: id.clone(),
                        percent: now.0,
                        message: now.1.clone(),
                    };
                    if tx.send(event).is_err() {
                        return;
                    }
                    last = Some(now);
                }
            }
            tokio::time::sleep(PROGRESS_EVERY).await;
        }
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
            .to_string()
            .contains("ETHOSCOPE_008"));
        assert!(parse_targets(" , ").is_err());
        let dup = vec![dev(a, "X", "127.0.0.10"), dev(b, "x", "127.0.0.11")];
        assert!(resolve(&Target::Name("X".into()), &dup)
            .unwrap_err()
            .to_string()
            .contains("matches 2"));
    }
}
