//! The engine's configuration, built by the binary from its flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::source::SourceTemplate;

/// One of the two trees a device exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `results/<machine_id>/`: SQLite result databases (and their companions).
    Results,
    /// `videos/<machine_id>/`: recorded videos.
    Videos,
}

impl Kind {
    /// Both kinds, in the order a job copies them.
    pub const ALL: [Kind; 2] = [Kind::Results, Kind::Videos];

    /// `"results"` / `"videos"`: the path component and the `synced` key.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Results => "results",
            Kind::Videos => "videos",
        }
    }

    /// `"Results"` / `"Videos"`, for messages.
    pub fn title(self) -> &'static str {
        match self {
            Kind::Results => "Results",
            Kind::Videos => "Videos",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How rsync reaches devices over ssh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfig {
    /// Private key (`-i`); upstream's fixed `/etc/ethoscope/keys/id_rsa`.
    pub key: PathBuf,
    /// Pinned host keys (`UserKnownHostsFile`), learned on first contact
    /// (`StrictHostKeyChecking=accept-new`).
    pub known_hosts: PathBuf,
    /// Port (`-p`), when devices do not listen on 22.
    pub port: Option<u16>,
    /// The ssh executable rsync runs.
    pub program: String,
}

/// Default private key path, shared with the node's key installer.
pub const DEFAULT_SSH_KEY: &str = "/etc/ethoscope/keys/id_rsa";

/// Everything the rsync engine needs.
#[derive(Debug, Clone)]
pub struct RsyncBackupConfig {
    /// Archive root for results: each device gets `<results_dir>/<machine_id>/`.
    pub results_dir: PathBuf,
    /// Archive root for videos: each device gets `<videos_dir>/<machine_id>/`.
    pub videos_dir: PathBuf,
    /// Copy results trees (devices with SQLite databases only).
    pub backup_results: bool,
    /// Copy videos trees.
    pub backup_videos: bool,
    /// Where a device's data directory is.
    pub source: SourceTemplate,
    /// ssh settings (ssh sources only).
    pub ssh: SshConfig,
    /// `--bwlimit` value passed to rsync (e.g. `5000`, `10M`).
    pub bwlimit: Option<String>,
    /// rsync's I/O inactivity timeout (`--timeout`).
    pub io_timeout: Duration,
    /// Connection timeout (ssh `ConnectTimeout`, rsync `--contimeout`).
    pub connect_timeout: Duration,
    /// Engine state: staging, partial and temporary files (never inside the archive). Should be on
    /// the archive's filesystem so finished files are moved in by rename.
    pub state_dir: PathBuf,
    /// Time between full rescans of the archive sizes.
    pub rescan_interval: Duration,
    /// The rsync executable.
    pub rsync_program: PathBuf,
    /// The daemon's umask, also applied to the modes rsync copies from devices (with group and
    /// world write always off).
    pub umask: u32,
}

/// Default umask of the daemons: nothing for others, no group write.
pub const DEFAULT_UMASK: u32 = 0o027;

impl RsyncBackupConfig {
    /// A config with upstream's defaults for the given archive and state directories:
    /// both trees, ssh source `ethoscope@{ip}:/ethoscope_data`, known hosts under the state dir.
    pub fn new(results_dir: &Path, videos_dir: &Path, state_dir: &Path) -> RsyncBackupConfig {
        RsyncBackupConfig {
            results_dir: results_dir.to_path_buf(),
            videos_dir: videos_dir.to_path_buf(),
            backup_results: true,
            backup_videos: true,
            source: SourceTemplate::default(),
            ssh: SshConfig {
                key: PathBuf::from(DEFAULT_SSH_KEY),
                known_hosts: state_dir.join("known_hosts"),
                port: None,
                program: "ssh".to_string(),
            },
            bwlimit: None,
            io_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            state_dir: state_dir.to_path_buf(),
            rescan_interval: Duration::from_secs(3600),
            rsync_program: PathBuf::from("rsync"),
            umask: DEFAULT_UMASK,
        }
    }

    /// The archive root of a kind.
    pub fn archive_root(&self, kind: Kind) -> &Path {
        match kind {
            Kind::Results => &self.results_dir,
            Kind::Videos => &self.videos_dir,
        }
    }

    /// Whether a kind is copied at all.
    pub fn enabled(&self, kind: Kind) -> bool {
        match kind {
            Kind::Results => self.backup_results,
            Kind::Videos => self.backup_videos,
        }
    }
}
