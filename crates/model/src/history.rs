//! Run history: what each backup daemon keeps of its last jobs, and the node's merge of both.
//!
//! Only the last job of a device used to be kept, so a device that failed every night and
//! succeeded once in the morning looked fine. Each daemon now keeps the last
//! [`HISTORY_LIMIT`] runs per device and serves them as a [`DeviceHistory`]
//! (`GET /history/<device_id>`); the node merges both daemons' answers with
//! [`merge_histories`] (`GET /backup/history/<device_id>`).
//!
//! A run is `{start, end, outcome, message, bytes, rows, files, kind}`: unix seconds, one of
//! `success|warning|error`, the job's final message, what it copied (`rows` is null where the
//! engine does not count rows), and which backups it covered.

use serde::{Deserialize, Serialize};

use crate::kind::BackupKind;
use crate::status::ProgressStatus;

/// Runs kept per device by each daemon.
pub const HISTORY_LIMIT: usize = 200;

/// Longest message kept with a run, in bytes (longer ones are cut at a character boundary).
pub const MESSAGE_LIMIT: usize = 2048;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    /// Everything copied and checked.
    Success,
    /// Finished, with something to look at.
    Warning,
    /// Failed, timed out, crashed or was interrupted.
    Error,
}

impl RunOutcome {
    /// All outcomes, in severity order.
    pub const ALL: [RunOutcome; 3] = [RunOutcome::Success, RunOutcome::Warning, RunOutcome::Error];

    /// The wire word.
    pub const fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Success => "success",
            RunOutcome::Warning => "warning",
            RunOutcome::Error => "error",
        }
    }

    /// The outcome of a finished job's status word: anything but `success` and `warning`
    /// (including a job still marked `running`) is an error.
    pub fn of(status: &ProgressStatus) -> RunOutcome {
        match status {
            ProgressStatus::Success => RunOutcome::Success,
            ProgressStatus::Warning => RunOutcome::Warning,
            _ => RunOutcome::Error,
        }
    }

    /// Parses a wire word.
    pub fn parse(word: &str) -> Option<RunOutcome> {
        RunOutcome::ALL.into_iter().find(|o| o.as_str() == word)
    }
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finished job of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unix seconds when the job started.
    pub start: f64,
    /// Unix seconds when it ended (or was stopped).
    pub end: f64,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Its final message (at most [`MESSAGE_LIMIT`] bytes).
    pub message: String,
    /// Bytes copied.
    pub bytes: u64,
    /// Rows copied; `None` where the engine does not count rows.
    pub rows: Option<u64>,
    /// Files copied.
    pub files: u64,
    /// The backups the job covered (`["mysql"]`, `["results", "videos"]`, ...).
    #[serde(default)]
    pub kinds: Vec<BackupKind>,
}

/// `message` cut to at most [`MESSAGE_LIMIT`] bytes, at a character boundary, with `…` when cut.
pub fn bounded_message(message: &str) -> String {
    if message.len() <= MESSAGE_LIMIT {
        return message.to_string();
    }
    let mut end = MESSAGE_LIMIT - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// A daemon's `GET /history/<device_id>` answer: newest run first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceHistory {
    /// The device.
    pub device_id: String,
    /// Its runs, newest first, at most [`HISTORY_LIMIT`].
    pub runs: Vec<RunRecord>,
}

/// Which daemon a merged run came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HistorySource {
    /// The MySQL mirror daemon.
    #[serde(rename = "mysql_backup")]
    MysqlBackup,
    /// The rsync daemon.
    #[serde(rename = "rsync_backup")]
    RsyncBackup,
}

/// One run in the node's merged history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedRun {
    /// The run, as its daemon reported it.
    #[serde(flatten)]
    pub run: RunRecord,
    /// The daemon that ran it.
    pub source: HistorySource,
}

/// The node's `GET /backup/history/<device_id>` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedHistory {
    /// The device.
    pub device_id: String,
    /// Both daemons' runs, newest start first.
    pub runs: Vec<MergedRun>,
    /// Daemons whose history could not be read, with a short reason (`{"rsync_backup": "…"}`).
    pub unavailable: std::collections::BTreeMap<String, String>,
}

/// Merges both daemons' histories of one device, newest start first (ties: the later end
/// first, then MySQL before rsync). A side that could not be read is `Err(reason)` and is listed
/// in `unavailable`; the other side is still shown.
pub fn merge_histories(
    device_id: &str,
    mysql: Result<Vec<RunRecord>, String>,
    rsync: Result<Vec<RunRecord>, String>,
) -> MergedHistory {
    let mut runs = Vec::new();
    let mut unavailable = std::collections::BTreeMap::new();
    for (source, side) in [
        (HistorySource::MysqlBackup, mysql),
        (HistorySource::RsyncBackup, rsync),
    ] {
        match side {
            Ok(list) => runs.extend(list.into_iter().map(|run| MergedRun { run, source })),
            Err(reason) => {
                let key = match source {
                    HistorySource::MysqlBackup => "mysql_backup",
                    HistorySource::RsyncBackup => "rsync_backup",
                };
                unavailable.insert(key.to_string(), reason);
            }
        }
    }
    runs.sort_by(|a, b| {
        b.run
            .start
            .total_cmp(&a.run.start)
            .then(b.run.end.total_cmp(&a.run.end))
            .then((a.source as u8).cmp(&(b.source as u8)))
    });
    MergedHistory {
        device_id: device_id.to_string(),
        runs,
        unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(start: f64, end: f64, outcome: RunOutcome) -> RunRecord {
        RunRecord {
            start,
            end,
            outcome,
            message: format!("{outcome} at {start}"),
            bytes: 10,
            rows: None,
            files: 1,
            kinds: vec![BackupKind::Results],
        }
    }

    #[test]
    fn outcome_of_status_words() {
        for (status, outcome) in [
            (ProgressStatus::Success, RunOutcome::Success),
            (ProgressStatus::Warning, RunOutcome::Warning),
            (ProgressStatus::Error, RunOutcome::Error),
            (ProgressStatus::Running, RunOutcome::Error),
            (ProgressStatus::Other("completed".into()), RunOutcome::Error),
        ] {
            assert_eq!(RunOutcome::of(&status), outcome, "{status}");
        }
        for o in RunOutcome::ALL {
            assert_eq!(RunOutcome::parse(o.as_str()), Some(o));
            assert_eq!(serde_json::to_value(o).unwrap(), json!(o.as_str()));
        }
        assert_eq!(RunOutcome::parse("running"), None);
    }

    #[test]
    fn a_run_on_the_wire() {
        let r = RunRecord {
            rows: Some(700),
            kinds: vec![BackupKind::Mysql],
            ..run(1.5, 3.0, RunOutcome::Success)
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"start": 1.5, "end": 3.0, "outcome": "success", "message": "success at 1.5",
                   "bytes": 10, "rows": 700, "files": 1, "kinds": ["mysql"]})
        );
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let short = "ok";
        assert_eq!(bounded_message(short), "ok");
        let long = "é".repeat(MESSAGE_LIMIT);
        let cut = bounded_message(&long);
        assert!(cut.len() <= MESSAGE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("éé"));
    }

    #[test]
    fn merge_interleaves_newest_first_and_keeps_a_readable_side() {
        let m = vec![
            run(300.0, 310.0, RunOutcome::Success),
            run(100.0, 110.0, RunOutcome::Error),
        ];
        let r = vec![
            run(300.0, 320.0, RunOutcome::Warning),
            run(200.0, 201.0, RunOutcome::Success),
        ];
        let merged = merge_histories("id", Ok(m.clone()), Ok(r));
        let order: Vec<(f64, HistorySource)> = merged
            .runs
            .iter()
            .map(|x| (x.run.start, x.source))
            .collect();
        assert_eq!(
            order,
            vec![
                (300.0, HistorySource::RsyncBackup), // same start, later end first
                (300.0, HistorySource::MysqlBackup),
                (200.0, HistorySource::RsyncBackup),
                (100.0, HistorySource::MysqlBackup),
            ]
        );
        assert!(merged.unavailable.is_empty());

        let half = merge_histories("id", Ok(m), Err("connection refused".into()));
        assert_eq!(half.runs.len(), 2);
        assert_eq!(
            serde_json::to_value(&half).unwrap()["unavailable"],
            json!({"rsync_backup": "connection refused"})
        );
        let first = serde_json::to_value(&half.runs[0]).unwrap();
        assert_eq!(first["source"], json!("mysql_backup"));
        assert_eq!(first["outcome"], json!("success"));
    }
}
