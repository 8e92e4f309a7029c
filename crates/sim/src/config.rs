//! What a simulated fleet is made of, as plain configuration built by the binary or a test.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use etho_devicekit::writer_sqlite::SqliteJournal;

use crate::experiment::Schedule;
use crate::identity::Identity;

/// Where a tracking device stores its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// `MySQLResultWriter`: database `<NAME>_db` on the device's MariaDB, dropped and recreated for
    /// every experiment; backed up by the MySQL daemon.
    MariaDb,
    /// `SQLiteResultWriter`: one `.db` file per experiment under `results/`; backed up by rsync.
    Sqlite,
}

/// What a device does during its experiments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Tracks animals (status `running`) and writes results.
    Tracker(DbKind),
    /// Records video (status `recording`): chunk files under `videos/`, no result database.
    Recorder,
}

impl Role {
    /// Short word for logs and the fleet summary.
    pub fn label(&self) -> &'static str {
        match self {
            Role::Tracker(DbKind::MariaDb) => "mariadb",
            Role::Tracker(DbKind::Sqlite) => "sqlite",
            Role::Recorder => "video",
        }
    }
}

/// A misbehaviour, for tests and the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Never answers: HTTP and rsync are down (connections refused).
    Offline,
    /// Goes offline this long after the fleet started (and stays offline).
    OfflineAfter(Duration),
    /// Every HTTP answer is delayed this long.
    Slow(Duration),
    /// `/id` answers but `/data/...` never does, like a device stuck in a long operation.
    Busy,
    /// Reports a name that is not a plain name (path traversal and SQL in it).
    HostileName,
    /// `/id` reports something that is not a machine id.
    HostileId,
    /// `/data/<id>` answers truncated JSON.
    BadJson,
    /// This long into every experiment, an SQLite tracker's writer dies without closing its
    /// database, as in a power cut or a `kill -9`: nothing is checkpointed, the `-wal` stays next
    /// to the file, and the experiment stops with an error.
    KillWriter(Duration),
    /// The device's rsync daemon runs but refuses every client (`@ERROR: access denied`): every
    /// rsync backup of it fails, while it answers on HTTP and keeps writing.
    RsyncDenied,
}

/// The name a [`Fault::HostileName`] device reports.
pub const HOSTILE_NAME: &str = "../../ETHOSCOPE_666'; DROP DATABASE mysql; --";
/// The id a [`Fault::HostileId`] device reports.
pub const HOSTILE_ID: &str = "../../../../etc/passwd";

/// Why a `--fault` kind is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultParseError {
    /// A fault that takes a number was given none.
    #[error("fault {kind} needs :{what}")]
    MissingArgument {
        /// The fault.
        kind: String,
        /// What the number is (`SECONDS`, `MILLISECONDS`).
        what: &'static str,
    },
    /// The number is not finite and non-negative.
    #[error("fault {kind}: {arg:?} is not a non-negative number")]
    BadNumber {
        /// The fault.
        kind: String,
        /// What was given.
        arg: String,
    },
    /// A fault without argument was given one.
    #[error("fault {kind} takes no argument")]
    UnexpectedArgument {
        /// The fault.
        kind: String,
    },
    /// No such fault.
    #[error(
        "unknown fault {0:?} (offline, offline-after:SECS, slow:MS, busy, hostile-name, \
         hostile-id, bad-json, kill-writer:SECS, rsync-denied)"
    )]
    Unknown(String),
}

impl FromStr for Fault {
    type Err = FaultParseError;

    /// `offline`, `offline-after:SECS`, `slow:MILLIS`, `busy`, `hostile-name`, `hostile-id`,
    /// `bad-json`, `kill-writer:SECS`, `rsync-denied`.
    fn from_str(s: &str) -> Result<Fault, FaultParseError> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let number = |what: &'static str| -> Result<f64, FaultParseError> {
            let a = arg.ok_or_else(|| FaultParseError::MissingArgument {
                kind: kind.to_string(),
                what,
            })?;
            a.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| FaultParseError::BadNumber {
                    kind: kind.to_string(),
                    arg: a.to_string(),
                })
        };
        let no_arg = |f: Fault| match arg {
            None => Ok(f),
            Some(_) => Err(FaultParseError::UnexpectedArgument {
                kind: kind.to_string(),
            }),
        };
        let seconds = |v: f64| Duration::from_secs_f64(v);
        match kind {
            "offline" => no_arg(Fault::Offline),
            "offline-after" => Ok(Fault::OfflineAfter(seconds(number("SECONDS")?))),
            "slow" => Ok(Fault::Slow(seconds(number("MILLISECONDS")? / 1000.0))),
            "busy" => no_arg(Fault::Busy),
            "hostile-name" => no_arg(Fault::HostileName),
            "hostile-id" => no_arg(Fault::HostileId),
            "bad-json" => no_arg(Fault::BadJson),
            "kill-writer" => Ok(Fault::KillWriter(seconds(number("SECONDS")?))),
            "rsync-denied" => no_arg(Fault::RsyncDenied),
            _ => Err(FaultParseError::Unknown(kind.to_string())),
        }
    }
}

/// How fast devices produce data, and how SQLite trackers write it. Upstream intervals are
/// minutes; the simulator defaults to seconds so a demo shows every table filling within a
/// minute.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// Regions of interest per tracker (tables `ROI_1..ROI_n`).
    pub rois: u32,
    /// Rows per ROI per second.
    pub fps: f64,
    /// One `IMG_SNAPSHOTS` row this often (upstream: 300 s).
    pub snapshot_every: Duration,
    /// Size of each snapshot blob (a real q50 JPEG is 20-60 kB).
    pub snapshot_bytes: usize,
    /// One `SENSORS` row this often (upstream: 120 s).
    pub sensor_every: Duration,
    /// One `CSV_DAM_ACTIVITY` row this often (upstream: 60 s).
    pub dam_every: Duration,
    /// A new video chunk file this often while recording.
    pub video_chunk_every: Duration,
    /// Size of each video chunk.
    pub video_chunk_bytes: usize,
    /// How often the writers flush what accumulated (one transaction per flush).
    pub flush_every: Duration,
    /// SQLite trackers' journal mode: WAL like current firmware (default), OFF like seed-era
    /// firmware, or DELETE.
    pub sqlite_journal: SqliteJournal,
}

impl Default for Rates {
    fn default() -> Rates {
        Rates {
            rois: 10,
            fps: 2.0,
            snapshot_every: Duration::from_secs(15),
            snapshot_bytes: 32 * 1024,
            sensor_every: Duration::from_secs(5),
            dam_every: Duration::from_secs(10),
            video_chunk_every: Duration::from_secs(10),
            video_chunk_bytes: 256 * 1024,
            flush_every: Duration::from_millis(500),
            sqlite_journal: SqliteJournal::Wal,
        }
    }
}

/// One device of the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    /// Id, name, address.
    pub identity: Identity,
    /// Tracker (MariaDB or SQLite) or video recorder.
    pub role: Role,
    /// Misbehaviours.
    pub faults: Vec<Fault>,
    /// When experiments start and stop.
    pub schedule: Schedule,
    /// `experimental_info.name`.
    pub user: String,
    /// `experimental_info.location`.
    pub location: String,
}

impl DeviceSpec {
    /// Whether the device has `fault` (ignoring arguments of the same kind).
    pub fn has_fault(&self, fault: Fault) -> bool {
        self.faults.contains(&fault)
    }

    /// The slow-answer delay, if any.
    pub fn slow_delay(&self) -> Option<Duration> {
        self.faults.iter().find_map(|f| match f {
            Fault::Slow(d) => Some(*d),
            _ => None,
        })
    }

    /// How long into each experiment the SQLite writer is killed, if ever.
    pub fn kill_writer_after(&self) -> Option<Duration> {
        self.faults.iter().find_map(|f| match f {
            Fault::KillWriter(d) => Some(*d),
            _ => None,
        })
    }

    /// When the device goes offline by itself, if ever.
    pub fn offline_after(&self) -> Option<Duration> {
        self.faults.iter().find_map(|f| match f {
            Fault::OfflineAfter(d) => Some(*d),
            _ => None,
        })
    }
}

/// Whether a `mariadbd` binary is installed (the usual Debian places, then `PATH`), i.e. whether
/// [`MariaDbTarget::Auto`] can start a private server.
pub fn mariadbd_installed() -> bool {
    [
        "/usr/sbin/mariadbd",
        "/usr/bin/mariadbd",
        "/usr/local/sbin/mariadbd",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).is_file())
        || std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("mariadbd").is_file()))
}

/// How tracking devices reach MariaDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MariaDbTarget {
    /// No MariaDB: every tracker is an SQLite tracker.
    None,
    /// Start a private `mariadbd` (temporary data directory under the fleet's data dir),
    /// listening on every device's address.
    Auto,
    /// Use an existing server. Devices write through this URL
    /// (`mysql://user:password@host:port`); the backup side reaches it at each device's address
    /// on the same port, so the server must listen on those addresses.
    Url(String),
}

/// `--mariadb` is not `auto`, `none` or a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--mariadb must be auto, none or a mysql:// URL, not {0:?}")]
pub struct MariaDbTargetError(String);

impl FromStr for MariaDbTarget {
    type Err = MariaDbTargetError;

    /// `auto`, `none`, or a `mysql://` URL.
    fn from_str(s: &str) -> Result<MariaDbTarget, MariaDbTargetError> {
        match s {
            "auto" => Ok(MariaDbTarget::Auto),
            "none" => Ok(MariaDbTarget::None),
            url if url.starts_with("mysql://") || url.starts_with("mariadb://") => Ok(
                MariaDbTarget::Url(url.replacen("mariadb://", "mysql://", 1)),
            ),
            other => Err(MariaDbTargetError(other.to_string())),
        }
    }
}

/// The whole fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The devices.
    pub devices: Vec<DeviceSpec>,
    /// Root of all files: `devices/<NAME>/` (each device's `/ethoscope_data`), the private
    /// MariaDB and the rsync daemons' configuration.
    pub data_dir: PathBuf,
    /// Device HTTP port on every device address (upstream 9000); 0 picks one free port shared by
    /// all devices.
    pub http_port: u16,
    /// rsync daemon port on every device address; 0 picks one free port shared by all devices.
    pub rsync_port: u16,
    /// Serve each device's data over `rsync --daemon` (needs the `rsync` binary).
    pub rsync: bool,
    /// MariaDB for MariaDB trackers.
    pub mariadb: MariaDbTarget,
    /// Data production rates.
    pub rates: Rates,
    /// Announce every device as `_ethoscope._tcp.local.` over mDNS (best effort).
    pub mdns: bool,
}

/// Default device HTTP port (upstream `device_server.py -p 9000`).
pub const DEFAULT_HTTP_PORT: u16 = 9000;
/// Default rsync daemon port of the simulated devices (873 would need root).
pub const DEFAULT_RSYNC_PORT: u16 = 8873;
/// Default first device address.
pub const DEFAULT_FIRST_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);

/// The default mix for a fleet of `count`: one video recorder once there are at least four
/// devices (the last one), and trackers alternating MariaDB and SQLite (all SQLite without
/// MariaDB).
pub fn default_roles(count: usize, with_mariadb: bool) -> Vec<Role> {
    (0..count)
        .map(|i| {
            if count >= 4 && i == count - 1 {
                Role::Recorder
            } else if with_mariadb && i % 2 == 0 {
                Role::Tracker(DbKind::MariaDb)
            } else {
                Role::Tracker(DbKind::Sqlite)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_faults() {
        assert_eq!("offline".parse(), Ok(Fault::Offline));
        assert_eq!(
            "offline-after:1.5".parse(),
            Ok(Fault::OfflineAfter(Duration::from_millis(1500)))
        );
        assert_eq!(
            "slow:250".parse(),
            Ok(Fault::Slow(Duration::from_millis(250)))
        );
        assert_eq!("hostile-name".parse(), Ok(Fault::HostileName));
        assert_eq!(
            "kill-writer:2.5".parse(),
            Ok(Fault::KillWriter(Duration::from_millis(2500)))
        );
        assert!("kill-writer".parse::<Fault>().is_err());
        assert_eq!("rsync-denied".parse(), Ok(Fault::RsyncDenied));
        assert!("rsync-denied:1".parse::<Fault>().is_err());
        assert!("slow".parse::<Fault>().is_err());
        assert!("slow:-1".parse::<Fault>().is_err());
        assert!("slow:NaN".parse::<Fault>().is_err());
        assert!("busy:3".parse::<Fault>().is_err());
        assert_eq!(
            "melt".parse::<Fault>(),
            Err(FaultParseError::Unknown("melt".into()))
        );
        assert!("melt"
            .parse::<Fault>()
            .unwrap_err()
            .to_string()
            .starts_with("unknown fault \"melt\" (offline,"));
        assert_eq!(
            "slow".parse::<Fault>().unwrap_err().to_string(),
            "fault slow needs :MILLISECONDS"
        );
    }

    #[test]
    fn parses_mariadb_targets() {
        assert_eq!("auto".parse(), Ok(MariaDbTarget::Auto));
        assert_eq!("none".parse(), Ok(MariaDbTarget::None));
        assert_eq!(
            "mariadb://root@127.0.0.1:3306".parse(),
            Ok(MariaDbTarget::Url("mysql://root@127.0.0.1:3306".into()))
        );
        assert!("localhost".parse::<MariaDbTarget>().is_err());
    }

    #[test]
    fn default_mix() {
        let r = default_roles(6, true);
        assert_eq!(
            r,
            vec![
                Role::Tracker(DbKind::MariaDb),
                Role::Tracker(DbKind::Sqlite),
                Role::Tracker(DbKind::MariaDb),
                Role::Tracker(DbKind::Sqlite),
                Role::Tracker(DbKind::MariaDb),
                Role::Recorder,
            ]
        );
        assert!(default_roles(6, false)
            .iter()
            .all(|r| *r != Role::Tracker(DbKind::MariaDb)));
        assert_eq!(default_roles(2, true).len(), 2);
        assert!(!default_roles(3, true).contains(&Role::Recorder));
    }
}
