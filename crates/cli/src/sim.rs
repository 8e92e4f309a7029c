//! `etho-backup sim`: a simulated ethoscope fleet on loopback addresses, until Ctrl-C/SIGTERM.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use etho_sim::config::{default_roles, DEFAULT_FIRST_IP, DEFAULT_HTTP_PORT, DEFAULT_RSYNC_PORT};
use etho_sim::experiment::Schedule;
use etho_sim::identity::fleet_identities;
use etho_sim::SqliteJournal;
use etho_sim::{
    mariadbd_installed, DbKind, DeviceSpec, Fault, Fleet, FleetConfig, MariaDbTarget, Rates, Role,
};

/// Flags of `etho-backup sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Number of devices.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub devices: u32,

    /// Address of the first device; the others follow (127.0.0.10, 127.0.0.11, ...).
    #[arg(long, value_name = "IP", default_value_t = DEFAULT_FIRST_IP)]
    pub first_ip: Ipv4Addr,

    /// Number of the first device (ETHOSCOPE_001).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub first_number: u32,

    /// Seed of the machine ids (same seed, same ids).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Device HTTP API port on every device address (0: a free one).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_HTTP_PORT)]
    pub http_port: u16,

    /// rsync daemon port on every device address (0: a free one).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_RSYNC_PORT)]
    pub rsync_port: u16,

    /// Do not serve the devices' data over rsync.
    #[arg(long)]
    pub no_rsync: bool,

    /// MariaDB for MariaDB devices: `auto` (start a private mariadbd), `none` (SQLite devices
    /// only), or `mysql://USER:PASSWORD@HOST:PORT` of a server listening on every device address.
    #[arg(long, value_name = "auto|none|URL", default_value = "auto")]
    pub mariadb: MariaDbTarget,

    /// Device roles in order, comma-separated (`mariadb`, `sqlite`, `video`); default: trackers
    /// alternating MariaDB and SQLite, and the last device a video recorder from 4 devices on.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub roles: Vec<String>,

    /// Root of all files (device trees, MariaDB data, rsync configuration). Default: a fresh
    /// temporary directory, removed on exit.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Length of an experiment in seconds (0: run until stopped).
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0)]
    pub experiment_length: f64,

    /// Pause between experiments in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub pause: f64,

    /// Delay between two devices' first experiments, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub stagger: f64,

    /// Regions of interest per tracker.
    #[arg(long, default_value_t = 10)]
    pub rois: u32,

    /// Tracking frames per second.
    #[arg(long, default_value_t = 2.0)]
    pub fps: f64,

    /// Seconds between two snapshot images.
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0)]
    pub snapshot_interval: f64,

    /// Seconds between two video chunks of a recorder.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub video_chunk_interval: f64,

    /// Size of a video chunk in KiB.
    #[arg(long, value_name = "KIB", default_value_t = 256)]
    pub video_chunk_kib: usize,

    /// Journal mode of SQLite trackers: `wal` (current firmware: synchronous=NORMAL, default
    /// autocheckpoint, one connection per experiment), `off` (seed-era firmware) or `delete`.
    #[arg(long, value_name = "wal|off|delete", default_value = "wal")]
    pub sqlite_journal: SqliteJournal,

    /// A misbehaving device: `N=KIND[:ARG]` with N the device number and KIND one of offline,
    /// offline-after:SECONDS, slow:MILLISECONDS, busy, hostile-name, hostile-id, bad-json,
    /// kill-writer:SECONDS (an SQLite tracker's writer dies that long into each experiment
    /// without closing its database, leaving its -wal as a power cut would), rsync-denied (its
    /// rsync daemon refuses every transfer). Repeatable.
    #[arg(long, value_name = "N=KIND[:ARG]")]
    pub fault: Vec<String>,

    /// Announce devices as _ethoscope._tcp.local. over mDNS (joins the multicast group on
    /// every network interface).
    #[arg(long)]
    pub mdns: bool,

    /// Debug logging.
    #[arg(short = 'D', long)]
    pub debug: bool,
}

fn seconds(what: &str, v: f64) -> anyhow::Result<Duration> {
    if !(v.is_finite() && (0.0..=86_400.0 * 365.0).contains(&v)) {
        bail!("{what}: {v} is not a number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_role(s: &str) -> anyhow::Result<Role> {
    Ok(match s.trim() {
        "mariadb" | "mysql" => Role::Tracker(DbKind::MariaDb),
        "sqlite" => Role::Tracker(DbKind::Sqlite),
        "video" | "recorder" => Role::Recorder,
        other => bail!("unknown role {other:?} (mariadb, sqlite, video)"),
    })
}

/// Parses `--fault N=KIND[:ARG]`.
pub fn parse_fault(s: &str) -> anyhow::Result<(u32, Fault)> {
    let (n, kind) = s
        .split_once('=')
        .with_context(|| format!("--fault {s:?}: expected N=KIND[:ARG]"))?;
    let n: u32 = n
        .trim()
        .parse()
        .with_context(|| format!("--fault {s:?}: {n:?} is not a device number"))?;
    let fault = kind
        .trim()
        .parse::<Fault>()
        .map_err(|e| anyhow::anyhow!("--fault {s:?}: {e}"))?;
    Ok((n, fault))
}

impl Args {
    /// The fleet these flags describe, rooted at `data_dir`.
    pub fn fleet_config(&self, data_dir: PathBuf) -> anyhow::Result<FleetConfig> {
        let identities =
            fleet_identities(self.devices, self.first_ip, self.first_number, self.seed)?;
        let with_mariadb = self.mariadb != MariaDbTarget::None;
        let roles = if self.roles.is_empty() {
            default_roles(identities.len(), with_mariadb)
        } else {
            if self.roles.len() != identities.len() {
                bail!(
                    "--roles names {} roles for {} devices",
                    self.roles.len(),
                    identities.len()
                );
            }
            let roles = self
                .roles
                .iter()
                .map(|r| parse_role(r))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if !with_mariadb && roles.contains(&Role::Tracker(DbKind::MariaDb)) {
                bail!("--roles asks for MariaDB devices but --mariadb is none");
            }
            roles
        };
        let mut faults: Vec<Vec<Fault>> = vec![Vec::new(); identities.len()];
        for f in &self.fault {
            let (n, fault) = parse_fault(f)?;
            let idx = identities
                .iter()
                .position(|i| i.number == n)
                .with_context(|| format!("--fault {f:?}: there is no device {n}"))?;
            faults[idx].push(fault);
        }
        let run_for = if self.experiment_length == 0.0 {
            None
        } else {
            Some(seconds("--experiment-length", self.experiment_length)?)
        };
        let pause_for = seconds("--pause", self.pause)?;
        let stagger = seconds("--stagger", self.stagger)?;
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= 100.0) {
            bail!("--fps must be above 0 and at most 100");
        }
        let devices = identities
            .into_iter()
            .zip(roles)
            .zip(faults)
            .enumerate()
            .map(|(i, ((identity, role), faults))| DeviceSpec {
                identity,
                role,
                faults,
                schedule: Schedule {
                    start_delay: stagger * i as u32,
                    run_for,
                    pause_for,
                },
                user: ["alice", "bob", "carol"][i % 3].to_string(),
                location: format!("Incubator_{}", i / 4 + 1),
            })
            .collect();
        Ok(FleetConfig {
            devices,
            data_dir,
            http_port: self.http_port,
            rsync_port: self.rsync_port,
            rsync: !self.no_rsync,
            mariadb: self.mariadb.clone(),
            rates: Rates {
                rois: self.rois.clamp(1, 200),
                fps: self.fps,
                snapshot_every: seconds("--snapshot-interval", self.snapshot_interval)?
                    .max(Duration::from_millis(100)),
                video_chunk_every: seconds("--video-chunk-interval", self.video_chunk_interval)?
                    .max(Duration::from_millis(100)),
                video_chunk_bytes: self.video_chunk_kib.clamp(1, 1024 * 1024) * 1024,
                sqlite_journal: self.sqlite_journal,
                ..Rates::default()
            },
            mdns: self.mdns,
        })
    }
}

/// `dir` when given, else a fresh temporary directory named `<prefix>…`, returned with its
/// guard (the directory is removed when the guard is dropped).
pub fn data_dir_or_temp(
    dir: Option<&std::path::Path>,
    prefix: &str,
) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(d) => Ok((d.to_path_buf(), None)),
        None => {
            let t = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .context("cannot create a temporary data directory")?;
            Ok((t.path().to_path_buf(), Some(t)))
        }
    }
}

/// Prints one line per device.
pub fn print_fleet(fleet: &Fleet) {
    if let Some(m) = fleet.mariadb() {
        println!(
            "MariaDB {} on port {} of every MariaDB device's address ({}, read-only user node/node)",
            m.version,
            m.port,
            if m.private { "private server" } else { "existing server" }
        );
    }
    for d in fleet.summary() {
        let faults = if d.faults.is_empty() {
            String::new()
        } else {
            format!("  faults: {}", d.faults.join(", "))
        };
        println!(
            "  {:<14} {:<7} http://{}  {}  {}{faults}",
            d.name,
            d.role,
            d.http,
            d.rsync_url.as_deref().unwrap_or("(no rsync)"),
            d.id,
        );
    }
}

/// Runs the fleet until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::logging::init(args.debug);
    if args.mariadb == MariaDbTarget::Auto && !mariadbd_installed() {
        bail!(
            "--mariadb auto needs mariadbd (apt-get install mariadb-server), or use --mariadb none"
        );
    }
    let (data_dir, _temp) = data_dir_or_temp(args.data_dir.as_deref(), "etho-sim-")?;
    let config = args.fleet_config(data_dir.clone())?;
    let fleet = Fleet::start(config).await?;
    println!(
        "simulated fleet of {} devices, data in {}",
        fleet.devices().len(),
        data_dir.display()
    );
    print_fleet(&fleet);
    let devices = fleet.device_addresses().join(" --device ");
    println!("node: etho-backup node --device {devices}");
    if let Some(source) = fleet.rsync_source_template() {
        println!("rsync-backup: etho-backup rsync-backup --source '{source}'");
    }
    if let Some(m) = fleet.mariadb() {
        println!(
            "mysql-backup: etho-backup mysql-backup --mysql-port {}",
            m.port
        );
    }
    crate::logging::shutdown_signal().await;
    println!("stopping the fleet");
    fleet.stop().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("sim").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn defaults() {
        let args = parse(&[]).unwrap();
        let c = args.fleet_config(PathBuf::from("/x")).unwrap();
        assert_eq!(c.devices.len(), 6);
        assert_eq!(c.http_port, 9000);
        assert_eq!(c.mariadb, MariaDbTarget::Auto);
        assert_eq!(c.devices[0].identity.ip, Ipv4Addr::new(127, 0, 0, 10));
        assert_eq!(c.devices[5].identity.name, "ETHOSCOPE_006");
        assert_eq!(c.devices[5].role, Role::Recorder);
        assert_eq!(c.devices[1].schedule.start_delay, Duration::from_secs(2));
        assert!(!c.mdns);
        assert_eq!(c.rates.sqlite_journal, SqliteJournal::Wal);
    }

    #[test]
    fn roles_and_faults() {
        let args = parse(&[
            "--devices",
            "3",
            "--mariadb",
            "none",
            "--roles",
            "sqlite,video,sqlite",
            "--fault",
            "2=slow:1500",
            "--fault",
            "3=offline-after:10",
            "--fault",
            "1=kill-writer:30",
            "--sqlite-journal",
            "off",
            "--experiment-length",
            "0",
        ])
        .unwrap();
        let c = args.fleet_config(PathBuf::from("/x")).unwrap();
        assert_eq!(c.devices[1].role, Role::Recorder);
        assert_eq!(
            c.devices[1].faults,
            vec![Fault::Slow(Duration::from_millis(1500))]
        );
        assert_eq!(c.devices[2].offline_after(), Some(Duration::from_secs(10)));
        assert_eq!(
            c.devices[0].kill_writer_after(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(c.rates.sqlite_journal, SqliteJournal::Off);
        assert_eq!(c.devices[0].schedule.run_for, None);
    }

    #[test]
    fn bad_flags_are_refused() {
        let cfg = |argv: &[&str]| {
            parse(argv).map_err(|e| e.to_string()).and_then(|a| {
                a.fleet_config(PathBuf::from("/x"))
                    .map_err(|e| e.to_string())
            })
        };
        for argv in [
            &["--devices", "0"][..],
            &["--first-ip", "10.0.0.1"],
            &["--mariadb", "localhost"],
            &["--fault", "9=offline"],
            &["--fault", "1=explode"],
            &["--fault", "offline"],
            &["--roles", "sqlite"],
            &["--mariadb", "none", "--devices", "1", "--roles", "mariadb"],
            &["--fps", "0"],
            &["--sqlite-journal", "truncate"],
            &["--pause", "-1"],
        ] {
            assert!(cfg(argv).is_err(), "{argv:?}");
        }
    }
}
