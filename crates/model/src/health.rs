//! A device's backup health: how much of its data exists only on the device, and what to do
//! about it (the `health` object of each `unified_devices` entry).
//!
//! The seed's `overall_status` answers "did the last jobs finish"; it stays as it is. Health
//! answers "if this device's SD card died now, what would we lose?". [`assess`] is a pure
//! function of what the node knows at one instant:
//!
//! - each daemon's entry for the device ([`SideFacts`], parsed from the foreign JSON by
//!   [`SideFacts::from_entry`]), the last one it sent when the daemon does not answer now
//!   ([`Side::down_since`]);
//! - what the node's polling saw of the device ([`Sighting`]): whether it answers and since when,
//!   the last status word it reported, the experiment it announces;
//! - the time and the [`Thresholds`].
//!
//! **Exposure** is the span of recent data that exists only on the device. While the device runs
//! an experiment (or does not answer, its last known state being a running experiment) it is
//! `now - newest_copied_at`, the newest frame of the node's copy; when the node's copy is of an
//! older experiment than the one the device announces, nothing of the current one is on the node
//! and the current one's start replaces `newest_copied_at`. Once the device has stopped, the span
//! no longer grows: it is the stop time minus `newest_copied_at`, and 0 once every expected backup
//! has succeeded in a job that started after the node saw the device stopped. Unknown (`None`)
//! without a copied frame to measure from, for a device with only videos, or when the node does
//! not know whether the device runs.
//!
//! **State**, the first rule that applies: `at_risk` (exposure above
//! [`Thresholds::at_risk_after`]), `stale` (an expected backup's daemon has had no success for
//! more than [`STALE_CYCLES`] of its intervals while the device answered), `lagging` (exposure
//! above the lag threshold, [`Thresholds::lag_warn_for`]), `idle` (stopped, everything on the
//! node), `safe`; `unknown` when no daemon has an entry for the device.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::device::DatabaseReport;
use crate::kind::BackupKind;
use crate::merge::Service;
use crate::status::{experiment_start, round_tenths, ProgressStatus};

/// The SQL for the `t` of the last row (largest `id`) of an ROI table of an ethoscope SQLite
/// file, given the table's quoted name: one lookup of the largest rowid and one by rowid, never a
/// scan (rows are written in time order, so it is the largest `t`). Both daemons read
/// `newest_copied_at` from their copies with it.
pub fn last_frame_sql(quoted_table: &str) -> String {
    format!("SELECT t FROM {quoted_table} WHERE id = (SELECT max(id) FROM {quoted_table})")
}

/// `health.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// More than [`Thresholds::at_risk_after`] of data exists only on the device.
    AtRisk,
    /// An expected backup has not succeeded for [`STALE_CYCLES`] intervals while it could have.
    Stale,
    /// Exposure above the lag threshold.
    Lagging,
    /// No experiment running, and everything is on the node.
    Idle,
    /// None of the above.
    Safe,
    /// No daemon knows the device.
    Unknown,
}

impl HealthState {
    /// The wire word.
    pub const fn as_str(self) -> &'static str {
        match self {
            HealthState::AtRisk => "at_risk",
            HealthState::Stale => "stale",
            HealthState::Lagging => "lagging",
            HealthState::Idle => "idle",
            HealthState::Safe => "safe",
            HealthState::Unknown => "unknown",
        }
    }
}

/// The `health` object of a unified device entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// The first rule that applies.
    pub state: HealthState,
    /// Seconds of recent data that exist only on the device (one decimal); `None` when unknown.
    pub exposure_s: Option<f64>,
    /// The newest frame the node's copy holds (epoch seconds), the oldest over the expected
    /// backups that hold frames.
    pub newest_copied_at: Option<f64>,
    /// The least recent `last_success` of the daemons of the expected backups (`None` when one
    /// of them never succeeded).
    pub last_success: Option<f64>,
    /// Which backups the device needs.
    pub expected: Vec<BackupKind>,
    /// Plain sentences a person acts on.
    pub reasons: Vec<String>,
}

/// The node's thresholds (`--at-risk-after`, `--lag-warn`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Exposure above this many seconds is `at_risk`.
    pub at_risk_after: f64,
    /// Exposure above this many seconds is `lagging`; `None`: [`Thresholds::lag_warn_for`]'s
    /// default.
    pub lag_warn: Option<f64>,
}

impl Default for Thresholds {
    /// One hour at risk, the lag threshold from the intervals.
    fn default() -> Thresholds {
        Thresholds {
            at_risk_after: 3600.0,
            lag_warn: None,
        }
    }
}

/// The default lag threshold is never below this many seconds.
pub const MIN_LAG_WARN: f64 = 60.0;
/// A backup is stale after this many of its daemon's intervals without a success.
pub const STALE_CYCLES: f64 = 3.0;
/// Longest daemon message quoted in a reason, in characters.
const MAX_QUOTE: usize = 300;

impl Thresholds {
    /// The lag threshold: the configured one, else [`STALE_CYCLES`] times the slowest of
    /// `intervals`, at least [`MIN_LAG_WARN`].
    pub fn lag_warn_for(&self, intervals: impl IntoIterator<Item = f64>) -> f64 {
        self.lag_warn.unwrap_or_else(|| {
            intervals
                .into_iter()
                .filter(|i| i.is_finite())
                .fold(MIN_LAG_WARN, |acc, i| acc.max(STALE_CYCLES * i))
        })
    }
}

/// What one daemon's entry for the device says, each field taken only when it has the expected
/// type (the entry is foreign input).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SideFacts {
    /// `last_success`.
    pub last_success: Option<f64>,
    /// `last_success_started`.
    pub last_success_started: Option<f64>,
    /// `failures`.
    pub failures: u64,
    /// `interval_s`.
    pub interval_s: Option<f64>,
    /// `newest_copied_at`.
    pub newest_copied_at: Option<f64>,
    /// `experiment`.
    pub experiment: Option<String>,
    /// `progress.status`.
    pub outcome: Option<ProgressStatus>,
    /// `progress.message`, shortened.
    pub message: Option<String>,
    /// `status`: the device's status when the daemon last heard of it.
    pub status: Option<String>,
    /// `synced.results` is there.
    pub has_results: bool,
    /// `synced.videos.local_files`.
    pub video_files: u64,
}

fn finite(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64).filter(|f| f.is_finite())
}

/// `text` cut to `max` characters, with `…` when cut.
pub fn shorten(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

impl SideFacts {
    /// Reads a daemon's device entry.
    pub fn from_entry(entry: &Map<String, Value>) -> SideFacts {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let progress = entry.get("progress");
        let synced = entry.get("synced");
        SideFacts {
            last_success: finite(entry.get("last_success")),
            last_success_started: finite(entry.get("last_success_started")),
            failures: entry.get("failures").and_then(Value::as_u64).unwrap_or(0),
            interval_s: finite(entry.get("interval_s")).filter(|i| *i > 0.0),
            newest_copied_at: finite(entry.get("newest_copied_at")),
            experiment: text(entry.get("experiment")),
            outcome: progress
                .and_then(|p| p.get("status"))
                .and_then(Value::as_str)
                .map(ProgressStatus::parse),
            message: progress
                .and_then(|p| p.get("message"))
                .and_then(Value::as_str)
                .map(|m| shorten(m, MAX_QUOTE)),
            status: text(entry.get("status")),
            has_results: synced.and_then(|s| s.get("results")).is_some(),
            video_files: synced
                .and_then(|s| s.get("videos"))
                .and_then(|v| v.get("local_files"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
        }
    }
}

/// One daemon, as the node sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Side {
    /// The daemon's entry for the device: from its latest answer, or its last known one while
    /// it does not answer.
    pub entry: Option<SideFacts>,
    /// `Some(t)`: the daemon has not answered since `t` (epoch seconds); `entry` is the last one
    /// it sent.
    pub down_since: Option<f64>,
    /// The daemon's interval when the device has no entry (any other entry's `interval_s`).
    pub interval_s: Option<f64>,
}

impl Side {
    fn interval(&self) -> Option<f64> {
        self.entry
            .as_ref()
            .and_then(|e| e.interval_s)
            .or(self.interval_s)
    }
}

/// Whether the node hears from the device now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Link {
    /// It answers, without interruption since `since`.
    Online {
        /// Epoch seconds.
        since: f64,
    },
    /// `/id` answers, `/data` does not, since `since`.
    Busy {
        /// Epoch seconds.
        since: f64,
    },
    /// No answer since `since`.
    Unreached {
        /// Epoch seconds.
        since: f64,
    },
    /// Given up on; last full answer at `last_seen`.
    Offline {
        /// Epoch seconds.
        last_seen: Option<f64>,
    },
}

/// What the node's polling knows about the device.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    /// Whether it answers now.
    pub link: Link,
    /// The last status word the device reported itself (kept while it does not answer).
    pub reported: Option<String>,
    /// When the node first saw the device running, or not running, as it does now.
    pub activity_since: Option<f64>,
    /// The device's own `time` (its last start or stop), epoch seconds.
    pub device_time: Option<f64>,
    /// The experiment file the device announces (current, else previous).
    pub experiment: Option<String>,
    /// Whether it reports a MariaDB database.
    pub mariadb: DatabaseReport,
    /// Whether it reports SQLite result files.
    pub sqlite: DatabaseReport,
    /// Why its machine id is in conflict (two addresses claim it), when it is: the daemons do
    /// not back up a conflicted id, so the reasons carry this sentence first.
    pub conflict: Option<String>,
}

/// Whether a status word means an experiment is producing data (`running`, `recording`,
/// `stopping`), is not (`stopped`, `initialising`, `streaming`, ...), or says nothing about it
/// (the node's own words `offline`, `unreached`, `busy`, and `unknown`, `not_available`, empty).
pub fn runs_experiment(word: &str) -> Option<bool> {
    match word {
        "running" | "recording" | "stopping" => Some(true),
        "" | "unknown" | "offline" | "unreached" | "busy" | "not_available" | "blacklisted"
        | "not_in_use" => None,
        _ => Some(false),
    }
}

/// Running or not, as far as the node knows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Activity {
    Running,
    Stopped {
        /// When it stopped, for the exposure: its own `time`, else when the node saw it stopped.
        at: Option<f64>,
        /// When the node first saw it stopped: a job started after this copied the last rows.
        seen: Option<f64>,
    },
    Unknown,
}

fn activity(device: Option<&Sighting>, mysql: &Side, rsync: &Side) -> Activity {
    if let Some(d) = device {
        return match d.reported.as_deref().and_then(runs_experiment) {
            Some(true) => Activity::Running,
            Some(false) => Activity::Stopped {
                at: d.device_time.filter(|t| *t > 0.0).or(d.activity_since),
                seen: d.activity_since,
            },
            None => Activity::Unknown,
        };
    }
    // The node does not know the device: the daemons' last word, without times.
    let word = [mysql, rsync]
        .iter()
        .filter_map(|s| s.entry.as_ref()?.status.as_deref())
        .find_map(runs_experiment);
    match word {
        Some(true) => Activity::Running,
        Some(false) => Activity::Stopped {
            at: None,
            seen: None,
        },
        None => Activity::Unknown,
    }
}

/// The backups the device needs: what the node's device entry says, else what the daemons hold.
pub fn expected(device: Option<&Sighting>, mysql: &Side, rsync: &Side) -> Vec<BackupKind> {
    let known = |report: Option<DatabaseReport>, held: bool| match report {
        Some(DatabaseReport::Present) => true,
        Some(DatabaseReport::Absent) => false,
        Some(DatabaseReport::Unknown) | None => held,
    };
    let mut out = Vec::new();
    if known(device.map(|d| d.mariadb), mysql.entry.is_some()) {
        out.push(BackupKind::Mysql);
    }
    let rs = rsync.entry.as_ref();
    if known(device.map(|d| d.sqlite), rs.is_some_and(|e| e.has_results)) {
        out.push(BackupKind::Results);
    }
    let recording = device.and_then(|d| d.reported.as_deref()) == Some("recording");
    if recording || rs.is_some_and(|e| e.video_files > 0) {
        out.push(BackupKind::Videos);
    }
    out
}

/// `12 s`, `47 min`, `3 h 05 min`, `2 d 4 h` (as the dashboard writes durations).
pub fn span(seconds: f64) -> String {
    let s = if seconds.is_finite() {
        seconds.max(0.0) as u64
    } else {
        0
    };
    let (m, h) = (s / 60, s / 3600);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{m} min"),
        3600..=86_399 => format!("{h} h {:02} min", m % 60),
        _ => format!("{} d {} h", h / 24, h % 24),
    }
}

/// Everything [`assess`] reads besides the two daemons.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The device's name, for reasons.
    pub name: &'a str,
    /// The node's polling view; `None` when the node does not know the device.
    pub device: Option<&'a Sighting>,
    /// Epoch seconds.
    pub now: f64,
    /// The thresholds.
    pub thresholds: &'a Thresholds,
}

fn side_of<'s>(backup: BackupKind, mysql: &'s Side, rsync: &'s Side) -> &'s Side {
    match backup.service() {
        Service::MysqlBackup => mysql,
        Service::RsyncBackup => rsync,
    }
}

/// The daemons of the expected backups, each once.
fn daemons<'s>(
    expected: &[BackupKind],
    mysql: &'s Side,
    rsync: &'s Side,
) -> Vec<(Service, &'s Side)> {
    let mut out: Vec<(Service, &Side)> = Vec::new();
    for b in expected {
        if !out.iter().any(|(s, _)| *s == b.service()) {
            out.push((b.service(), side_of(*b, mysql, rsync)));
        }
    }
    out
}

/// The oldest newest frame over the expected backups that hold frames, with its experiment.
fn copied(expected: &[BackupKind], mysql: &Side, rsync: &Side) -> (Option<f64>, Option<String>) {
    let mut best: Option<(f64, Option<String>)> = None;
    let mut experiment = None;
    for b in expected.iter().filter(|b| b.holds_frames()) {
        let Some(e) = side_of(*b, mysql, rsync).entry.as_ref() else {
            continue;
        };
        experiment = experiment.or_else(|| e.experiment.clone());
        if let Some(n) = e.newest_copied_at {
            if best.as_ref().is_none_or(|(b, _)| n < *b) {
                best = Some((n, e.experiment.clone()));
            }
        }
    }
    match best {
        Some((n, e)) => (Some(n), e.or(experiment)),
        None => (None, experiment),
    }
}

/// The instant up to which the node holds the device's frames, as far as exposure goes: the copy's
/// newest frame, or the start of the device's current experiment when the copy holds nothing of
/// it (an older experiment, or no frame yet).
fn held_until(
    newest: Option<f64>,
    copied_experiment: Option<&str>,
    device: Option<&Sighting>,
) -> Option<f64> {
    let announced = device.and_then(|d| d.experiment.as_deref());
    let current_start = announced.and_then(experiment_start).map(|s| s as f64);
    let copy_start = copied_experiment
        .and_then(experiment_start)
        .map(|s| s as f64);
    match (current_start, copy_start) {
        (Some(cur), Some(copy)) if copy < cur => Some(cur),
        (Some(cur), _) if newest.is_none() => Some(cur),
        _ => newest,
    }
}

/// The health of one device. See the module docs for the rules.
pub fn assess(mysql: &Side, rsync: &Side, ctx: &Context<'_>) -> Health {
    let expected = expected(ctx.device, mysql, rsync);
    let conflict = ctx.device.and_then(|d| d.conflict.clone());
    if mysql.entry.is_none() && rsync.entry.is_none() {
        let mut reasons: Vec<String> = conflict.into_iter().collect();
        reasons.push("no backup service has reported this device yet".into());
        return Health {
            state: HealthState::Unknown,
            exposure_s: None,
            newest_copied_at: None,
            last_success: None,
            expected,
            reasons,
        };
    }
    let now = ctx.now;
    let daemons = daemons(&expected, mysql, rsync);
    let (newest, copied_experiment) = copied(&expected, mysql, rsync);
    let frames_expected = expected.iter().any(|b| b.holds_frames());
    let held = if frames_expected {
        held_until(newest, copied_experiment.as_deref(), ctx.device)
    } else {
        None
    };
    let activity = activity(ctx.device, mysql, rsync);
    let complete = match activity {
        Activity::Stopped {
            seen: Some(seen), ..
        } => daemons.iter().all(|(_, s)| {
            s.entry
                .as_ref()
                .and_then(|e| e.last_success_started)
                .is_some_and(|t| t >= seen)
        }),
        _ => false,
    };
    let exposure = match activity {
        Activity::Running => held.map(|h| now - h),
        Activity::Stopped { .. } if complete => Some(0.0),
        Activity::Stopped { at, .. } => held.zip(at).map(|(h, at)| at - h),
        Activity::Unknown => None,
    }
    .map(|e| round_tenths(e.max(0.0)));
    let lag_warn = ctx
        .thresholds
        .lag_warn_for(daemons.iter().filter_map(|(_, s)| s.interval()));
    let stale = stale_daemons(&daemons, ctx);
    let over = |limit: f64| exposure.is_some_and(|e| e > limit);
    let state = if over(ctx.thresholds.at_risk_after) {
        HealthState::AtRisk
    } else if !stale.is_empty() {
        HealthState::Stale
    } else if over(lag_warn) {
        HealthState::Lagging
    } else if complete {
        HealthState::Idle
    } else {
        HealthState::Safe
    };
    let mut reasons: Vec<String> = conflict.into_iter().collect();
    link_reasons(&mut reasons, ctx, activity, exposure, lag_warn);
    for (service, side) in [(Service::MysqlBackup, mysql), (Service::RsyncBackup, rsync)] {
        let needed = daemons.iter().any(|(s, _)| *s == service);
        // A daemon the device does not need still gets its failure reported.
        if needed || side.entry.is_some() {
            let stale = stale.contains(&service);
            daemon_reasons(&mut reasons, service, side, needed, stale, ctx);
        }
    }
    Health {
        state,
        exposure_s: exposure,
        newest_copied_at: newest,
        last_success: last_success(&daemons, mysql, rsync),
        expected,
        reasons,
    }
}

/// The daemons that have not succeeded for [`STALE_CYCLES`] intervals while the device answered.
fn stale_daemons(daemons: &[(Service, &Side)], ctx: &Context<'_>) -> Vec<Service> {
    let Some(Link::Online { since }) = ctx.device.map(|d| d.link) else {
        return Vec::new();
    };
    daemons
        .iter()
        .filter(|(_, side)| {
            let Some(interval) = side.interval() else {
                return false;
            };
            let success = side.entry.as_ref().and_then(|e| e.last_success);
            let from = success.map_or(since, |s| s.max(since));
            ctx.now - from > STALE_CYCLES * interval
        })
        .map(|(s, _)| *s)
        .collect()
}

fn last_success(daemons: &[(Service, &Side)], mysql: &Side, rsync: &Side) -> Option<f64> {
    let of = |s: &Side| s.entry.as_ref().and_then(|e| e.last_success);
    if daemons.is_empty() {
        return of(mysql).into_iter().chain(of(rsync)).reduce(f64::max);
    }
    daemons
        .iter()
        .map(|(_, s)| of(s))
        .collect::<Option<Vec<f64>>>()?
        .into_iter()
        .reduce(f64::min)
}

/// What the device's link and the exposure call for.
fn link_reasons(
    reasons: &mut Vec<String>,
    ctx: &Context<'_>,
    activity: Activity,
    exposure: Option<f64>,
    lag_warn: f64,
) {
    let name = ctx.name;
    let now = ctx.now;
    let link = ctx.device.map(|d| d.link);
    let away = match link {
        Some(Link::Busy { since }) => Some(format!("busy for {}", span(now - since))),
        Some(Link::Unreached { since }) => Some(format!("unreachable for {}", span(now - since))),
        Some(Link::Offline {
            last_seen: Some(seen),
        }) => Some(format!("offline, last seen {} ago", span(now - seen))),
        Some(Link::Offline { last_seen: None }) => Some("offline".to_string()),
        Some(Link::Online { .. }) | None => None,
    };
    match exposure {
        Some(e) if e > lag_warn => {
            let mut text = format!("the newest {} of data exist only on {name}", span(e));
            if let Some(away) = &away {
                text.push_str(&format!(" ({away})"));
            }
            reasons.push(text);
        }
        _ => {
            if let (Some(away), Activity::Running) = (&away, activity) {
                reasons.push(format!(
                    "{name} is {away} while running an experiment: its new data cannot be copied"
                ));
            }
        }
    }
    if ctx.device.is_some() && exposure.is_none() && activity == Activity::Running {
        let frames = ctx.device.is_some_and(|d| {
            matches!(d.mariadb, DatabaseReport::Present)
                || matches!(d.sqlite, DatabaseReport::Present)
        });
        if frames {
            reasons.push(format!(
                "no tracked frame of {name}'s experiment is on the node yet"
            ));
        }
    }
}

/// What one daemon's state calls for; `needed`: the device expects a backup from it.
fn daemon_reasons(
    reasons: &mut Vec<String>,
    service: Service,
    side: &Side,
    needed: bool,
    stale: bool,
    ctx: &Context<'_>,
) {
    let daemon = match service {
        Service::MysqlBackup => "mysql-backup",
        Service::RsyncBackup => "rsync-backup",
    };
    let now = ctx.now;
    if let (Some(since), true) = (side.down_since, needed) {
        reasons.push(format!(
            "the {daemon} service has not answered for {}; its last report is shown",
            span(now - since)
        ));
    }
    let Some(entry) = side.entry.as_ref() else {
        reasons.push(format!("{daemon} has not backed {} up yet", ctx.name));
        return;
    };
    let failed = entry.outcome == Some(ProgressStatus::Error);
    let quote = entry
        .message
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    if failed {
        let times = match entry.failures {
            // A daemon without the count (an older or foreign one).
            0 => String::new(),
            1 => " once".to_string(),
            n => format!(" {n} times"),
        };
        let since = entry
            .last_success
            .map(|s| format!(" (last success {} ago)", span(now - s)))
            .unwrap_or_default();
        reasons.push(format!("{daemon} has failed{times}{since}{quote}"));
    } else if stale {
        // A success's message says nothing about why nothing newer succeeded.
        let quote = if entry.outcome == Some(ProgressStatus::Success) {
            String::new()
        } else {
            quote
        };
        match entry.last_success {
            Some(s) => reasons.push(format!(
                "{daemon} has not completed a backup for {}{quote}",
                span(now - s)
            )),
            None => reasons.push(format!(
                "{daemon} has not completed a backup of {} yet{quote}",
                ctx.name
            )),
        }
    }
}

#[cfg(test)]
mod tests;
