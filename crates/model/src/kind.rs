//! The kinds of backup a device can need, the `kind` label of every metric.
//!
//! A device's data comes in up to three kinds, each copied by one daemon: its MariaDB
//! experiment database (`mysql`, by the MySQL mirror daemon), its SQLite result files
//! (`results`) and its videos (`videos`), both by the rsync daemon. Metrics, the run history and
//! the node's health speak of these three, so a facility can tell "videos keep failing" from
//! "the database mirror keeps failing".

use serde::{Deserialize, Serialize};

use crate::merge::Service;

/// One kind of backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// The MariaDB experiment database, mirrored into SQLite.
    Mysql,
    /// The SQLite result files, pulled with rsync.
    Results,
    /// The videos, pulled with rsync.
    Videos,
}

impl BackupKind {
    /// All kinds.
    pub const ALL: [BackupKind; 3] = [BackupKind::Mysql, BackupKind::Results, BackupKind::Videos];

    /// The wire word and label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            BackupKind::Mysql => "mysql",
            BackupKind::Results => "results",
            BackupKind::Videos => "videos",
        }
    }

    /// The daemon that makes this backup.
    pub const fn service(self) -> Service {
        match self {
            BackupKind::Mysql => Service::MysqlBackup,
            BackupKind::Results | BackupKind::Videos => Service::RsyncBackup,
        }
    }

    /// Whether it copies tracking data (the backups exposure is measured on).
    pub const fn holds_frames(self) -> bool {
        matches!(self, BackupKind::Mysql | BackupKind::Results)
    }
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_words() {
        for kind in BackupKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
            assert_eq!(kind.to_string(), kind.as_str());
        }
    }
}
