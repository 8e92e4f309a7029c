//! Why a mirror job did not complete.
//!
//! The engine branches on the cause: [`MirrorError::NotReady`] (no tracking row written yet) and
//! [`MirrorError::RolledOver`] (a new experiment started during the copy) are warnings, everything
//! else is an error. Messages name the device, database, table or file concerned.

use std::path::PathBuf;

/// A failed or refused mirror job.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The experiment database exists but has no tracking data yet (`VAR_MAP` is empty).
    #[error("database {db} is not ready yet: {reason}; will retry next cycle")]
    NotReady {
        /// `<NAME>_db`.
        db: String,
        /// What is missing.
        reason: String,
    },
    /// The device gave a target that must not be written (bad file name, foreign machine id,
    /// unsafe name, a path leaving the results directory). Nothing was written.
    #[error("refused to write the mirror: {0}")]
    BadTarget(String),
    /// Cannot reach or log in to the device's MariaDB.
    #[error("cannot connect to MariaDB at {addr} (database {db}): {reason}")]
    Connect {
        /// `ip:port`.
        addr: String,
        /// `<NAME>_db`.
        db: String,
        /// Driver message.
        reason: String,
    },
    /// A query on the device failed (server died, table vanished, ...).
    #[error("MariaDB query failed on {addr} ({what}): {reason}")]
    Remote {
        /// `ip:port`.
        addr: String,
        /// What we were doing.
        what: String,
        /// Driver message.
        reason: String,
    },
    /// The device started a new experiment (dropped and recreated its database) during the copy.
    /// What was copied is kept; the new experiment gets its own file next time.
    #[error("{0}")]
    RolledOver(String),
    /// The device's database changed under us in a way the mirror must not follow silently.
    #[error("{0}")]
    Inconsistent(String),
    /// The local SQLite file could not be written.
    #[error("SQLite error on {path}: {reason}")]
    Local {
        /// The mirror file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
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
    /// An internal failure (a worker thread died).
    #[error("internal error: {0}")]
    Internal(String),
}

impl MirrorError {
    /// True for outcomes reported as `warning` rather than `error`.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            MirrorError::NotReady { .. } | MirrorError::RolledOver(_)
        )
    }
}
