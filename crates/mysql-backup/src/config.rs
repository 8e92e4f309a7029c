//! Settings of the mirror engine (built by the binary from its flags).

use std::path::PathBuf;
use std::time::Duration;

/// Upstream's MariaDB port.
pub const DEFAULT_MYSQL_PORT: u16 = 3306;
/// The read-only account devices create for the node (upstream default since 2025-11).
pub const DEFAULT_MYSQL_USER: &str = "node";
/// Password of [`DEFAULT_MYSQL_USER`].
pub const DEFAULT_MYSQL_PASSWORD: &str = "node";

/// How to reach devices and where mirrors go.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// Root of the mirrors: `{results}/{machine_id}/{NAME}/{date_time}/{file}.db`.
    pub results_dir: PathBuf,
    /// MariaDB port on every device.
    pub mysql_port: u16,
    /// MariaDB account.
    pub mysql_user: String,
    /// Its password.
    pub mysql_password: String,
    /// Limit for establishing the MariaDB connection.
    pub connect_timeout: Duration,
    /// Rows read from the device per remote transaction (each re-checks the experiment's file name,
    /// and holds the device's metadata lock only for that long).
    pub chunk_rows: u64,
    /// Commit the local SQLite transaction after this many rows...
    pub commit_rows: u64,
    /// ... or this many bytes ...
    pub commit_bytes: u64,
    /// ... or this much time, whichever comes first. A crash loses at most this much work.
    pub commit_interval: Duration,
}

impl MirrorConfig {
    /// Upstream's defaults with the given results directory.
    pub fn new(results_dir: impl Into<PathBuf>) -> MirrorConfig {
        MirrorConfig {
            results_dir: results_dir.into(),
            mysql_port: DEFAULT_MYSQL_PORT,
            mysql_user: DEFAULT_MYSQL_USER.to_string(),
            mysql_password: DEFAULT_MYSQL_PASSWORD.to_string(),
            connect_timeout: Duration::from_secs(10),
            chunk_rows: 200_000,
            commit_rows: 500_000,
            commit_bytes: 256 << 20,
            commit_interval: Duration::from_secs(10),
        }
    }
}
