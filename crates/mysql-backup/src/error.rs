//! Why a mirror job did not complete.
//!
//! The engine branches on the cause: [`MirrorError::NotReady`] (no tracking row written yet) and
//! [`MirrorError::RolledOver`] (a new experiment started during the copy) are warnings, everything
//! else is an error. Messages name the device, database, table or file concerned; the underlying
//! driver, SQLite or I/O error is kept as the `source`, so a status message built with
//! `etho_model::error_chain` reads "what we did: what failed underneath".

use std::path::PathBuf;
use std::time::Duration;

/// Why an experiment database is not ready to be mirrored yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// `VAR_MAP` exists but has no rows.
    #[error("VAR_MAP is empty (no tracking data written yet)")]
    EmptyVarMap,
    /// There is no `VAR_MAP` table.
    #[error("it has no VAR_MAP table")]
    NoVarMap,
}

/// One id-keyed table whose device maximum is below the mirror's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regression {
    /// Table name.
    pub table: String,
    /// Device `MAX(id)` (0 for an empty table).
    pub device: i64,
    /// Mirror `MAX(id)`.
    pub mirror: i64,
}

/// The device's database changed in a way the mirror must not follow silently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Inconsistency {
    /// Rows the mirror holds are gone from the device, for the same experiment file.
    #[error(
        "the device's max id is below the mirror's for the same experiment file {file}: {}; nothing copied",
        .tables.iter().map(|r| format!("{} (device {}, mirror {})", r.table, r.device, r.mirror)).collect::<Vec<_>>().join(", ")
    )]
    MaxIdBelowMirror {
        /// The experiment file.
        file: String,
        /// Every table that went back.
        tables: Vec<Regression>,
    },
    /// A row came back with another number of columns than the table was listed with.
    #[error("{table}: the device returned {got} columns, expected {expected}")]
    ColumnCount {
        /// Table name.
        table: String,
        /// Columns received.
        got: usize,
        /// Columns listed.
        expected: usize,
    },
}

/// What failed on the local SQLite side.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A statement failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// A statement failed while doing `what` (creating, altering, filling a table, ...).
    #[error("{what}")]
    Statement {
        /// What the statement was for, naming the table.
        what: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Taking the file lock failed.
    #[error("cannot lock the file")]
    Lock(#[source] nix::errno::Errno),
    /// The DAM `.txt` dump could not be brought up to date.
    #[error(transparent)]
    Sidecar(#[from] crate::sidecar::SidecarError),
    /// SQLite kept another journal mode than the rollback journal the archive needs.
    #[error("journal mode stays {0}, not delete")]
    JournalMode(String),
}

/// Why the connection to a device's MariaDB failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    /// The driver refused or failed.
    #[error(transparent)]
    Driver(#[from] mysql_async::Error),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// A failed or refused mirror job.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The experiment database exists but has no tracking data yet.
    #[error("database {db} is not ready yet: {reason}; will retry next cycle")]
    NotReady {
        /// `<NAME>_db`.
        db: String,
        /// What is missing.
        reason: NotReady,
    },
    /// The device gave a target that must not be written (bad file name, foreign machine id,
    /// unsafe name, a path leaving the results directory). Nothing was written.
    #[error("refused to write the mirror")]
    BadTarget(#[from] TargetError),
    /// Cannot reach or log in to the device's MariaDB.
    #[error("cannot connect to MariaDB at {addr} (database {db})")]
    Connect {
        /// `ip:port`.
        addr: String,
        /// `<NAME>_db`.
        db: String,
        /// The driver error or the timeout.
        #[source]
        source: ConnectFailure,
    },
    /// A query on the device failed (server died, table vanished, ...).
    #[error("MariaDB query failed on {addr} ({what})")]
    Remote {
        /// `ip:port`.
        addr: String,
        /// What we were doing.
        what: String,
        /// The driver error.
        #[source]
        source: mysql_async::Error,
    },
    /// The device started a new experiment (dropped and recreated its database) during the copy.
    /// What was copied is kept; the new experiment gets its own file next time.
    #[error(
        "the device started a new experiment ({}) while {file} was being copied; rows copied so far are kept, the rest is no longer on the device",
        .new_file.as_deref().unwrap_or("none")
    )]
    RolledOver {
        /// The file being copied.
        file: String,
        /// The device's file name now, if it has one.
        new_file: Option<String>,
    },
    /// The device's database changed under us in a way the mirror must not follow silently.
    #[error(transparent)]
    Inconsistent(Inconsistency),
    /// The local SQLite file could not be written.
    #[error("SQLite error on {path}")]
    Local {
        /// The mirror file (or its lock or dump).
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: LocalError,
    },
    /// Another job (this daemon or another process) is writing the same file.
    #[error("{0} is locked by another backup job")]
    Locked(PathBuf),
    /// The job was cancelled (timeout or shutdown); committed rows are kept.
    #[error("backup cancelled after copying {rows_copied} rows; committed rows are kept and the rest is copied next time")]
    Cancelled {
        /// Rows copied (and committed) before the cancel.
        rows_copied: u64,
    },
    /// The SQLite writer thread panicked or was lost.
    #[error("internal error: the SQLite writer failed")]
    WriterCrashed(#[source] tokio::task::JoinError),
    /// An internal invariant did not hold (a bug).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl MirrorError {
    /// True for outcomes reported as `warning` rather than `error`.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            MirrorError::NotReady { .. } | MirrorError::RolledOver { .. }
        )
    }

    /// A local failure on `path`.
    pub fn local(path: impl Into<PathBuf>, source: impl Into<LocalError>) -> MirrorError {
        MirrorError::Local {
            path: path.into(),
            source: source.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etho_model::error_chain;

    #[test]
    fn messages_name_the_object_and_keep_the_cause() {
        let err = MirrorError::Inconsistent(Inconsistency::MaxIdBelowMirror {
            file: "f.db".into(),
            tables: vec![
                Regression {
                    table: "ROI_1".into(),
                    device: 0,
                    mirror: 7,
                },
                Regression {
                    table: "ROI_2".into(),
                    device: 50,
                    mirror: 100,
                },
            ],
        });
        assert_eq!(
            err.to_string(),
            "the device's max id is below the mirror's for the same experiment file f.db: \
             ROI_1 (device 0, mirror 7), ROI_2 (device 50, mirror 100); nothing copied"
        );
        let err = MirrorError::local(
            "/r/x.db",
            LocalError::Statement {
                what: "creating ROI_1".into(),
                source: rusqlite::Error::InvalidQuery,
            },
        );
        assert_eq!(
            error_chain(&err),
            "SQLite error on /r/x.db: creating ROI_1: Query is not read-only"
        );
        let err = MirrorError::Connect {
            addr: "127.0.0.1:3306".into(),
            db: "ETHOSCOPE_001_db".into(),
            source: ConnectFailure::Timeout(Duration::from_secs(10)),
        };
        assert_eq!(
            error_chain(&err),
            "cannot connect to MariaDB at 127.0.0.1:3306 (database ETHOSCOPE_001_db): no answer within 10s"
        );
        let rolled = MirrorError::RolledOver {
            file: "a.db".into(),
            new_file: None,
        };
        assert!(rolled.is_warning());
        assert!(rolled
            .to_string()
            .contains("new experiment (none) while a.db"));
    }
}

/// Why a device-given experiment was not written: its names, or the place they lead to, are
/// not safe. Each refusal names what the device gave (shortened), so a lab can fix it.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The file name is not the firmware's `YYYY-MM-DD_HH-MM-SS_<machine id>.db`.
    #[error("backup_filename {0:?} does not match YYYY-MM-DD_HH-MM-SS_<32 hex machine id>.db")]
    FileName(String),
    /// The file name carries another machine's id.
    #[error("backup_filename {shown:?} names machine {named}, not this device ({machine_id})")]
    ForeignMachine {
        /// The file name, shortened.
        shown: String,
        /// The id in the file name.
        named: String,
        /// This device's id.
        machine_id: String,
    },
    /// The device name is not letters, digits, `_` and `-`.
    #[error("device name {0:?} is not a plain name (letters, digits, _ and -)")]
    DeviceName(String),
    /// The machine id is not a plain name.
    #[error("machine id {0:?} is not a plain name")]
    MachineId(String),
    /// A component of the relative target is `..`, a root or a prefix.
    #[error("path component {component} of {} is not a plain name", relative.display())]
    Component {
        /// The component, as Rust prints it.
        component: String,
        /// The relative target it is part of.
        relative: PathBuf,
    },
    /// Something other than a directory (a symlink too) is where a directory goes.
    #[error("{} exists and is not a directory (symlinks are not followed)", .0.display())]
    NotADirectory(PathBuf),
    /// A non-directory appeared where a directory was being created.
    #[error("{} appeared and is not a directory", .0.display())]
    AppearedNotADirectory(PathBuf),
    /// The directory resolves outside the results directory.
    #[error("{} resolves outside the results directory", .0.display())]
    Outside(PathBuf),
    /// Something other than a regular file is where the mirror goes.
    #[error("{} exists and is not a regular file", .0.display())]
    NotARegularFile(PathBuf),
    /// The file system refused a step.
    #[error("{what} {}", path.display())]
    Io {
        /// The step: `cannot create`, `cannot stat`, …
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The database has no METADATA table.
    #[error("{db} has no METADATA table, so the experiment file name is unknown")]
    NoMetadata {
        /// `<NAME>_db`.
        db: String,
    },
    /// METADATA names no file.
    #[error("{db} has no METADATA.backup_filename, so the experiment file name is unknown")]
    NoFileName {
        /// `<NAME>_db`.
        db: String,
    },
    /// METADATA names several files.
    #[error("{db} has {count} different METADATA.backup_filename values: {first:?}")]
    ManyFileNames {
        /// `<NAME>_db`.
        db: String,
        /// How many distinct values.
        count: usize,
        /// The first three.
        first: Vec<String>,
    },
}
