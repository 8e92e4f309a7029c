//! How `-e/--ethoscope` shows its progress: one bar per device on a terminal, plain lines
//! otherwise. The daemon library reports through [`OneShotEvent`]s; only this module prints.

use std::collections::HashMap;

use etho_daemon::{OneShotEvent, TargetOutcome};
use etho_model::error_chain;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

/// The line printed when a target is done.
pub fn summary_line(outcome: &TargetOutcome) -> String {
    match outcome {
        TargetOutcome::Unresolved(err) => err.to_string(),
        TargetOutcome::Ineligible { device, reason } => {
            format!("{} ({}): not backed up: {reason}", device.name, device.id)
        }
        TargetOutcome::Busy(device) => format!(
            "{} ({}): a job for this device is already running",
            device.name, device.id
        ),
        TargetOutcome::Finished { device, status } => format!(
            "{} ({}): {} - {}",
            device.name,
            device.id,
            status
                .progress
                .status
                .as_ref()
                .map_or("unknown", |s| s.as_str()),
            status.progress.message.as_deref().unwrap_or("")
        ),
    }
}

/// Draws events until the channel closes. `bars`: progress bars (for a terminal).
pub async fn show(mut events: UnboundedReceiver<OneShotEvent>, bars: bool) {
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos:>3}% {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut shown: HashMap<String, ProgressBar> = HashMap::new();
    while let Some(event) = events.recv().await {
        match event {
            OneShotEvent::Started(device) if bars => {
                let bar = multi.add(ProgressBar::new(100));
                bar.set_style(style.clone());
                bar.set_prefix(device.name.clone());
                shown.insert(device.id, bar);
            }
            OneShotEvent::Started(device) => {
                println!("{} ({}): backup started", device.name, device.id);
            }
            OneShotEvent::Progress {
                id,
                percent,
                message,
            } => {
                if let Some(bar) = shown.get(&id) {
                    if let Some(p) = percent {
                        bar.set_position(p.clamp(0.0, 100.0) as u64);
                    }
                    bar.set_message(message);
                }
            }
            OneShotEvent::Done(outcome) => {
                let line = summary_line(&outcome);
                let bar = match &outcome {
                    TargetOutcome::Finished { device, .. } | TargetOutcome::Busy(device) => {
                        shown.remove(&device.id)
                    }
                    _ => None,
                };
                match bar {
                    Some(bar) => {
                        if outcome.is_good() {
                            bar.set_position(100);
                        }
                        bar.finish_with_message(line);
                    }
                    None if matches!(outcome, TargetOutcome::Finished { .. }) => {
                        println!("{line}")
                    }
                    None => eprintln!("{line}"),
                }
            }
        }
    }
}

/// The message for a run that could not start.
pub fn failure_line(err: &etho_daemon::oneshot::OneShotError) -> String {
    error_chain(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etho_daemon::oneshot::{Target, TargetError};
    use etho_model::device::{DeviceInfo, Ineligible};
    use etho_model::status::{DeviceStatus, Progress, ProgressStatus};
    use serde_json::json;

    fn device() -> DeviceInfo {
        let id = "0123456789abcdef0123456789abcdef";
        DeviceInfo::from_entry(
            id,
            &json!({"id": id, "name": "ETHOSCOPE_007", "ip": "127.0.0.10", "status": "running"}),
        )
        .unwrap()
    }

    #[test]
    fn summary_lines() {
        let d = device();
        let mut status = DeviceStatus::new("ETHOSCOPE_007", "running");
        status.progress = Progress::new(ProgressStatus::Success, "all copied");
        assert_eq!(
            summary_line(&TargetOutcome::Finished {
                device: d.clone(),
                status: Box::new(status)
            }),
            "ETHOSCOPE_007 (0123456789abcdef0123456789abcdef): success - all copied"
        );
        assert_eq!(
            summary_line(&TargetOutcome::Ineligible {
                device: d.clone(),
                reason: Ineligible::Status("offline".into())
            }),
            "ETHOSCOPE_007 (0123456789abcdef0123456789abcdef): not backed up: device status is offline"
        );
        assert!(summary_line(&TargetOutcome::Busy(d)).ends_with("already running"));
        assert_eq!(
            summary_line(&TargetOutcome::Unresolved(TargetError::NotFound(
                Target::Number(8)
            ))),
            "ETHOSCOPE_008: not in the node's device list"
        );
    }
}
