//! Chat alerts without Prometheus: `--alert-webhook URL` posts Slack/Mattermost incoming-webhook
//! messages (`{"text": …}`) when a device's backup goes bad, and "OK again" when it recovers.
//!
//! A lab notices a failed backup weeks later, when the data is gone; upstream's labs already get
//! device alerts in their chat. Here:
//!
//! - every [`AlertConfig::interval`] the node refreshes its unified status and classifies each
//!   device ([`AlertState::of`], pure): at risk or stale from its `health` (see
//!   [`etho_model::health`]), else failing when a daemon's last job of it failed, else OK;
//! - [`Alerter::observe`] (pure, table-tested) compares that with the last classification and
//!   yields one [`Transition`] per device whose state changed: nothing for a device that stays
//!   where it is, so every state change is told exactly once (deduplicated by construction);
//! - [`messages`] turns one round's transitions into messages: one per device, or a single
//!   digest when more than [`DIGEST_ABOVE`] devices changed at once (a daemon restart must not
//!   flood the channel);
//! - a sender task per webhook posts them in order, retrying with exponential backoff
//!   ([`AlertConfig::retries`]); its queue is bounded, so a receiver that is down only ever drops
//!   messages (logged), and the status endpoint never waits for it.
//!
//! The first round after a start reports devices that are already bad (once) and nothing for
//! the others; the state is not persisted across restarts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etho_model::health::HealthState;
use etho_model::merge::OverallStatus;
use reqwest::Url;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backup_status::BackupStatusService;
use crate::metrics::{DeviceSnapshot, StatusSnapshot};

/// More changes than this in one round are sent as one digest.
pub const DIGEST_ABOVE: usize = 5;

/// Lines listed in a digest (the rest are counted).
const DIGEST_LINES: usize = 20;

/// Reasons quoted per device in a message (the health's first ones are the decisive ones).
const REASONS: usize = 3;

/// Messages waiting per webhook; beyond this, new ones are dropped (and logged).
const QUEUE: usize = 64;

/// Webhook alerting, built by the binary from `--alert-webhook`.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Slack/Mattermost incoming-webhook URLs (http or https).
    pub webhooks: Vec<Url>,
    /// Time between two classifications of every device.
    pub interval: Duration,
    /// Bound on one POST (connect and answer).
    pub timeout: Duration,
    /// Attempts after the first for one message.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
}

impl AlertConfig {
    /// Defaults for these webhooks: a round every 30 s, 10 s per POST, 5 retries from 2 s.
    pub fn new(webhooks: Vec<Url>) -> AlertConfig {
        AlertConfig {
            webhooks,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            retries: 5,
            backoff: Duration::from_secs(2),
        }
    }
}

/// What an alert says about a device's backup, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertState {
    /// Recent data exists only on the device for longer than `--at-risk-after`.
    AtRisk,
    /// A backup the device needs has not succeeded for several cycles.
    Stale,
    /// The last backup failed.
    Failing,
    /// None of the above.
    Ok,
}

impl AlertState {
    /// The state of one device: its health's `at_risk` or `stale` first (data is only on the
    /// device), else `Failing` when a daemon's last job of it failed, else `Ok` (lagging, idle,
    /// safe and unknown health included).
    pub fn of(device: &DeviceSnapshot) -> AlertState {
        match device.health.as_ref().map(|h| h.state) {
            Some(HealthState::AtRisk) => AlertState::AtRisk,
            Some(HealthState::Stale) => AlertState::Stale,
            _ if device.overall == OverallStatus::Error => AlertState::Failing,
            _ => AlertState::Ok,
        }
    }

    /// Why a device is in `self`: the health's reasons for at risk and stale, the failed jobs'
    /// messages for failing, none for OK; at most [`REASONS`].
    pub fn reasons(self, device: &DeviceSnapshot) -> Vec<String> {
        let all = match (self, &device.health) {
            (AlertState::AtRisk | AlertState::Stale, Some(h)) => &h.reasons,
            (AlertState::Failing, _) => &device.reasons,
            _ => return Vec::new(),
        };
        all.iter().take(REASONS).cloned().collect()
    }

    /// How a message says it.
    pub fn words(self) -> &'static str {
        match self {
            AlertState::AtRisk => "at risk: its newest data exists only on the device",
            AlertState::Stale => "stale: no successful backup for several cycles",
            AlertState::Failing => "failing: its last backup failed",
            AlertState::Ok => "OK",
        }
    }
}

/// One device's change of state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Machine id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The previous state (`Ok` for a device first seen in a bad state).
    pub from: AlertState,
    /// The new state.
    pub to: AlertState,
    /// Why, in sentences (may be empty).
    pub reasons: Vec<String>,
}

impl Transition {
    /// The one-line text of this change.
    pub fn line(&self) -> String {
        let mut line = if self.to == AlertState::Ok {
            format!("✅ {} OK again (was {})", self.name, short(self.from))
        } else {
            format!("⚠️ {} is {}", self.name, self.to.words())
        };
        if !self.reasons.is_empty() {
            line.push_str(": ");
            line.push_str(&self.reasons.join("; "));
        }
        line
    }
}

fn short(state: AlertState) -> &'static str {
    match state {
        AlertState::AtRisk => "at risk",
        AlertState::Stale => "stale",
        AlertState::Failing => "failing",
        AlertState::Ok => "OK",
    }
}

/// The last state of every device seen.
#[derive(Debug, Default)]
pub struct Alerter {
    states: BTreeMap<String, AlertState>,
}

impl Alerter {
    /// Records this round's states and returns the changes, in device id order. A device seen
    /// for the first time counts as coming from `Ok`; a device that is no longer listed is
    /// forgotten without a message.
    pub fn observe(
        &mut self,
        devices: &[(DeviceSnapshot, AlertState, Vec<String>)],
    ) -> Vec<Transition> {
        let mut next = BTreeMap::new();
        let mut out = Vec::new();
        for (device, state, reasons) in devices {
            let from = self
                .states
                .get(&device.id)
                .copied()
                .unwrap_or(AlertState::Ok);
            if from != *state {
                out.push(Transition {
                    id: device.id.clone(),
                    name: device.name.clone(),
                    from,
                    to: *state,
                    reasons: reasons.clone(),
                });
            }
            next.insert(device.id.clone(), *state);
        }
        self.states = next;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

/// The messages of one round: one per transition, or one digest above [`DIGEST_ABOVE`].
pub fn messages(transitions: &[Transition]) -> Vec<String> {
    if transitions.len() <= DIGEST_ABOVE {
        return transitions.iter().map(Transition::line).collect();
    }
    let bad = transitions
        .iter()
        .filter(|t| t.to != AlertState::Ok)
        .count();
    let mut text = format!(
        "{} devices changed state: {} need attention, {} OK again",
        transitions.len(),
        bad,
        transitions.len() - bad
    );
    for t in transitions.iter().take(DIGEST_LINES) {
        text.push_str("\n• ");
        text.push_str(&t.line());
    }
    if transitions.len() > DIGEST_LINES {
        text.push_str(&format!(
            "\n… and {} more",
            transitions.len() - DIGEST_LINES
        ));
    }
    vec![text]
}

/// Each device of a snapshot with its state and reasons.
pub fn classify(snapshot: &StatusSnapshot) -> Vec<(DeviceSnapshot, AlertState, Vec<String>)> {
    snapshot
        .devices
        .iter()
        .map(|d| {
            let state = AlertState::of(d);
            (d.clone(), state, state.reasons(d))
        })
        .collect()
}

/// Posts `{"text": message}` to `url`, retrying with backoff; `Err` after the last attempt.
async fn post(
    client: &reqwest::Client,
    url: &Url,
    message: &str,
    config: &AlertConfig,
    stop: &CancellationToken,
) -> Result<(), String> {
    let body = serde_json::json!({ "text": message });
    let mut wait = config.backoff;
    let mut attempt = 0;
    loop {
        let sent = client
            .post(url.clone())
            .timeout(config.timeout)
            .json(&body)
            .send()
            .await;
        let error = match sent {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => format!("HTTP {}", resp.status()),
            Err(e) => etho_model::error_chain(&e),
        };
        if attempt >= config.retries {
            return Err(error);
        }
        attempt += 1;
        tracing::debug!(
            "alert webhook {}: {error}; retry {attempt} in {wait:?}",
            url.host_str().unwrap_or("")
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return Err("stopped".into()),
        }
        wait = wait.saturating_mul(2);
    }
}

/// Sends every queued message to one webhook, in order.
async fn sender(
    client: reqwest::Client,
    url: Url,
    config: Arc<AlertConfig>,
    mut queue: mpsc::Receiver<String>,
    stop: CancellationToken,
) {
    // Only the host goes to the log: a webhook URL's path is its secret.
    let host = url.host_str().unwrap_or("").to_string();
    loop {
        let message = tokio::select! {
            m = queue.recv() => match m { Some(m) => m, None => return },
            _ = stop.cancelled() => return,
        };
        if let Err(e) = post(&client, &url, &message, &config, &stop).await {
            tracing::warn!("alert webhook at {host}: message dropped after retries: {e}");
        }
    }
}

/// Starts the alert rounds and one sender per webhook; they stop with `stop`.
pub fn start(
    status: Arc<BackupStatusService>,
    config: AlertConfig,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    if config.webhooks.is_empty() {
        return Ok(());
    }
    let client = etho_http::client(config.timeout)
        .map_err(|e| anyhow::anyhow!("cannot build the webhook client: {e}"))?;
    let config = Arc::new(config);
    let mut queues = Vec::new();
    for url in &config.webhooks {
        let (tx, rx) = mpsc::channel(QUEUE);
        queues.push((url.host_str().unwrap_or("").to_string(), tx));
        tokio::spawn(sender(
            client.clone(),
            url.clone(),
            Arc::clone(&config),
            rx,
            stop.clone(),
        ));
    }
    let interval = config.interval;
    tokio::spawn(async move {
        let mut alerter = Alerter::default();
        loop {
            // A fresh status (bounded by the daemon timeout), then its snapshot.
            let _ = status.current().await;
            if let Some(snapshot) = status.snapshot().await {
                let round = alerter.observe(&classify(&snapshot));
                for message in messages(&round) {
                    for (host, queue) in &queues {
                        if queue.try_send(message.clone()).is_err() {
                            tracing::warn!("alert webhook at {host} is behind: message dropped");
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u32) -> DeviceSnapshot {
        DeviceSnapshot {
            id: format!("{n:032x}"),
            name: format!("ETHOSCOPE_{n:03}"),
            overall: OverallStatus::Success,
            reasons: vec!["MySQL backup failed: no route".into()],
            health: None,
        }
    }

    fn round(states: &[(u32, AlertState)]) -> Vec<(DeviceSnapshot, AlertState, Vec<String>)> {
        states
            .iter()
            .map(|(n, s)| (device(*n), *s, vec![format!("reason {n}")]))
            .collect()
    }

    fn changes(t: &[Transition]) -> Vec<(String, AlertState, AlertState)> {
        t.iter().map(|t| (t.name.clone(), t.from, t.to)).collect()
    }

    #[test]
    fn one_transition_per_state_change() {
        use AlertState::*;
        let mut a = Alerter::default();
        // First round: only the devices already bad are told.
        let t = a.observe(&round(&[(1, Ok), (2, Failing)]));
        assert_eq!(changes(&t), vec![("ETHOSCOPE_002".into(), Ok, Failing)]);
        // Same states: nothing, however often.
        for _ in 0..3 {
            assert!(a.observe(&round(&[(1, Ok), (2, Failing)])).is_empty());
        }
        // Worse, then recovered, then a new device.
        let t = a.observe(&round(&[(1, Stale), (2, AtRisk)]));
        assert_eq!(
            changes(&t),
            vec![
                ("ETHOSCOPE_001".into(), Ok, Stale),
                ("ETHOSCOPE_002".into(), Failing, AtRisk)
            ]
        );
        let t = a.observe(&round(&[(1, Ok), (2, AtRisk), (3, Ok)]));
        assert_eq!(changes(&t), vec![("ETHOSCOPE_001".into(), Stale, Ok)]);
        assert_eq!(
            t[0].line(),
            "✅ ETHOSCOPE_001 OK again (was stale): reason 1"
        );
        // A device that disappears is forgotten silently and starts afresh.
        assert!(a.observe(&round(&[(1, Ok)])).is_empty());
        let t = a.observe(&round(&[(1, Ok), (2, AtRisk)]));
        assert_eq!(changes(&t), vec![("ETHOSCOPE_002".into(), Ok, AtRisk)]);
        assert_eq!(
            t[0].line(),
            "⚠️ ETHOSCOPE_002 is at risk: its newest data exists only on the device: reason 2"
        );
    }

    #[test]
    fn more_than_five_changes_make_one_digest() {
        let mut a = Alerter::default();
        let five: Vec<(u32, AlertState)> = (1..=5).map(|n| (n, AlertState::Failing)).collect();
        let t = a.observe(&round(&five));
        assert_eq!(messages(&t).len(), 5, "five changes: five messages");
        let mut states: Vec<(u32, AlertState)> = (1..=5).map(|n| (n, AlertState::Ok)).collect();
        states.extend((6..=30).map(|n| (n, AlertState::Stale)));
        let t = a.observe(&round(&states));
        let m = messages(&t);
        assert_eq!(m.len(), 1, "30 changes: one digest");
        assert!(
            m[0].starts_with("30 devices changed state: 25 need attention, 5 OK again\n• "),
            "{}",
            m[0]
        );
        assert!(m[0].ends_with("… and 10 more"), "{}", m[0]);
        assert_eq!(m[0].matches('•').count(), DIGEST_LINES);
    }

    /// Every health state against a last job that failed or not: at risk and stale come from
    /// the health whatever the jobs say, failing only from a failed job, and everything else
    /// (lagging, idle, safe, unknown, not assessed) is OK.
    #[test]
    fn classification_table() {
        use crate::metrics::HealthSnapshot;
        use AlertState::*;
        let health = |state| {
            Some(HealthSnapshot {
                state,
                exposure_s: Some(1.0),
                last_success: Vec::new(),
                reasons: vec!["only on the device for 2 h".into(); 5],
            })
        };
        let table = [
            (Some(HealthState::AtRisk), OverallStatus::Success, AtRisk),
            (Some(HealthState::AtRisk), OverallStatus::Error, AtRisk),
            (Some(HealthState::Stale), OverallStatus::Partial, Stale),
            (Some(HealthState::Stale), OverallStatus::Error, Stale),
            (Some(HealthState::Lagging), OverallStatus::Error, Failing),
            (Some(HealthState::Lagging), OverallStatus::Success, Ok),
            (Some(HealthState::Idle), OverallStatus::Partial, Ok),
            (Some(HealthState::Safe), OverallStatus::Success, Ok),
            (Some(HealthState::Safe), OverallStatus::Error, Failing),
            (Some(HealthState::Unknown), OverallStatus::Unknown, Ok),
            (None, OverallStatus::Partial, Ok),
            (None, OverallStatus::Error, Failing),
        ];
        for (state, overall, want) in table {
            let d = DeviceSnapshot {
                overall,
                health: state.and_then(health),
                ..device(1)
            };
            assert_eq!(AlertState::of(&d), want, "{state:?} {overall:?}");
            let reasons = want.reasons(&d);
            match want {
                AtRisk | Stale => assert_eq!(reasons.len(), REASONS, "health reasons, capped"),
                Failing => assert_eq!(reasons, vec!["MySQL backup failed: no route".to_string()]),
                Ok => assert!(reasons.is_empty()),
            }
        }
    }
}
