//! `etho-backup node`: flags into [`etho_node::NodeConfig`], bind, serve until Ctrl-C/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use etho_model::health::Thresholds;
use etho_node::archive::{ArchiveConfig, Roots};
use etho_node::registry::DiscoveryConfig;
use etho_node::target::Target;
use etho_node::{AdminToken, AppState, NodeConfig, ServiceUrl};

/// Flags of `etho-backup node`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address and port to serve the dashboard and API on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:80")]
    pub listen: SocketAddr,

    /// Base URL of the MySQL backup daemon (its status is <URL>/status).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8090", value_parser = ServiceUrl::daemon)]
    pub mysql_backup_url: ServiceUrl,

    /// Base URL of the rsync backup daemon (its status is <URL>/status).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8093", value_parser = ServiceUrl::daemon)]
    pub rsync_backup_url: ServiceUrl,

    /// Longest wait for one daemon's complete status reply (connect + body); fractions allowed.
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = parse_seconds)]
    pub daemon_timeout: Duration,

    /// Directory for the node's persistent state.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/etho-backup/node")]
    pub state_dir: PathBuf,

    /// Debug logging (RUST_LOG, when set, wins).
    #[arg(short = 'D', long)]
    pub debug: bool,

    /// A device to poll, `HOST[:PORT]` (port 9000 by default). Repeatable; more can be added at
    /// run time with `POST /device/add`.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub device: Vec<String>,

    /// Also discover devices by mDNS (`_ethoscope._tcp.local.`); joins the multicast group on
    /// every network interface.
    #[arg(long)]
    pub mdns: bool,

    /// Take the device list from upstream's node (e.g. http://localhost/devices) instead of
    /// polling the devices a second time; each entry is validated and bounded like a device's
    /// own answer. --device, --mdns and POST /device/add are then not used.
    #[arg(long, value_name = "URL", value_parser = ServiceUrl::node, conflicts_with_all = ["device", "mdns"])]
    pub devices_from: Option<ServiceUrl>,

    /// Seconds between two polls of one device (or of --devices-from).
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub poll_interval: Duration,

    /// Longest wait for one device answer; fractions allowed.
    #[arg(long, value_name = "SECONDS", default_value = "3", value_parser = parse_seconds)]
    pub device_timeout: Duration,

    /// Forget addresses added by POST /device/add or mDNS (and devices known from earlier runs)
    /// that have not answered as an ethoscope for this long (--device addresses never expire).
    #[arg(long, value_name = "SECONDS", default_value = "604800", value_parser = parse_long_seconds)]
    pub forget_after: Duration,

    /// Requests that change the device registry (POST /device/add, DELETE /device/ADDRESS,
    /// POST /device/ID/confirm) must carry `Authorization: Bearer TOKEN`; confirming the address
    /// of a machine id in conflict needs it. Without it, those requests are only checked for
    /// coming from the node's own page (no foreign Origin or Referer).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "ETHO_BACKUP_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Configuration directory holding ethoscope.conf, read for the results and videos folders
    /// the archive is served from (read only, never rewritten).
    #[arg(short = 'c', long = "configuration", value_name = "DIR")]
    pub configuration: Option<PathBuf>,

    /// Results archive to serve (default: the config's folders.results.path).
    #[arg(short = 'r', long, value_name = "DIR")]
    pub results_dir: Option<PathBuf>,

    /// Videos archive to serve (default: the config's folders.video.path).
    #[arg(short = 'v', long, value_name = "DIR")]
    pub videos_dir: Option<PathBuf>,

    /// Do not serve the archive (/archive answers 404), for nodes that must not serve data.
    #[arg(long)]
    pub no_archive: bool,

    /// Also write scopr's index.txt atomically to <results>/index.txt after each scan that
    /// changed it (for labs that serve the results folder over FTP).
    #[arg(long, conflicts_with = "no_archive")]
    pub write_index: bool,

    /// Seconds between two scans of the archive (the listing and index.txt are at most this
    /// old plus one scan); fractions allowed.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_seconds)]
    pub archive_scan_interval: Duration,

    /// A database that keeps changing is re-verified at most this often.
    #[arg(long, value_name = "SECONDS", default_value = "600", value_parser = parse_seconds)]
    pub archive_verify_interval: Duration,

    /// A device whose newest data has existed only on the device for longer than this is
    /// `at_risk` (its `health` in /backup/status and the dashboard's "On the node" column).
    #[arg(long, value_name = "SECONDS", default_value = "3600", value_parser = parse_seconds)]
    pub at_risk_after: Duration,

    /// A device whose newest data has existed only on the device for longer than this is
    /// `lagging` (default: 3 times the slowest interval of the daemons it needs, at least 60 s).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub lag_warn: Option<Duration>,
}

impl Args {
    /// The archive configuration: `None` with `--no-archive`; the folders come from the flags,
    /// else from ethoscope.conf.
    pub fn archive(&self) -> anyhow::Result<Option<ArchiveConfig>> {
        if self.no_archive {
            return Ok(None);
        }
        let folders = etho_daemon::config::load_folders(self.configuration.as_deref())?;
        let roots = Roots {
            results: self.results_dir.clone().unwrap_or(folders.results),
            videos: self.videos_dir.clone().unwrap_or(folders.videos),
        };
        let mut config = ArchiveConfig::new(roots, &self.state_dir);
        config.write_index = self.write_index;
        config.scan_interval = self.archive_scan_interval;
        config.verify_interval = self.archive_verify_interval;
        config.rest_age = config.rest_age.max(2 * self.archive_scan_interval);
        Ok(Some(config))
    }

    /// The results folder `/devices` entries' `backup_path` is computed from (upstream's rule):
    /// `-r`, else the config's `folders.results.path`.
    pub fn results_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.results_dir {
            Some(dir) => Ok(dir.clone()),
            None => Ok(etho_daemon::config::load_folders(self.configuration.as_deref())?.results),
        }
    }

    /// The library configuration these flags describe (without the archive and the results
    /// folder: see [`Args::archive`] and [`Args::results_dir`], which read a file).
    pub fn config(&self) -> NodeConfig {
        NodeConfig {
            mysql_backup_url: self.mysql_backup_url.clone(),
            rsync_backup_url: self.rsync_backup_url.clone(),
            daemon_timeout: self.daemon_timeout,
            state_dir: self.state_dir.clone(),
            discovery: DiscoveryConfig {
                devices: self.device.clone(),
                mdns: self.mdns,
                poll_interval: self.poll_interval,
                device_timeout: self.device_timeout,
                forget_after: self.forget_after,
                devices_from: self.devices_from.clone(),
                ..DiscoveryConfig::default()
            },
            health: Thresholds {
                at_risk_after: self.at_risk_after.as_secs_f64(),
                lag_warn: self.lag_warn.map(|d| d.as_secs_f64()),
            },
            admin_token: self.admin_token.clone().map(AdminToken),
            ..NodeConfig::default()
        }
    }
}

/// A positive, finite number of seconds (`2`, `0.5`), at most a day.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!(
            "{text:?}: expected more than 0 and at most 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A positive number of seconds, at most ten years (for expiry periods).
fn parse_long_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds <= 10.0 * 365.0 * 86_400.0) {
        return Err(format!(
            "{text:?}: expected more than 0 seconds and at most ten years"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Runs the node until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::logging::init(args.debug);
    for d in &args.device {
        Target::parse(d, true).map_err(|e| anyhow::anyhow!("--device {d:?}: {e}"))?;
    }
    if args
        .admin_token
        .as_deref()
        .is_some_and(|t| t.trim().len() < 16)
    {
        anyhow::bail!("--admin-token must be at least 16 characters");
    }
    let mut config = args.config();
    config.archive = args.archive()?;
    config.discovery.results_dir = Some(args.results_dir()?);
    let state = AppState::new(config).context("cannot start the node")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|err| {
            let hint = match err.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    " (ports below 1024 need root or CAP_NET_BIND_SERVICE; try --listen 127.0.0.1:8080)"
                }
                std::io::ErrorKind::AddrInUse => " (another process already uses this port)",
                _ => "",
            };
            anyhow::anyhow!("cannot listen on {}: {err}{hint}", args.listen)
        })?;
    let local = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(
        "node listening on http://{local} (mysql-backup {}, rsync-backup {}, daemon timeout {:?})",
        args.mysql_backup_url,
        args.rsync_backup_url,
        args.daemon_timeout
    );
    match state.archive.as_ref().map(|a| a.config()) {
        Some(a) => tracing::info!(
            "serving the archive read-only: results {}, videos {}{}",
            a.roots.results.display(),
            a.roots.videos.display(),
            if a.write_index {
                ", writing index.txt"
            } else {
                ""
            }
        ),
        None => tracing::info!("archive serving is off (--no-archive)"),
    }
    etho_node::serve(listener, state, crate::logging::shutdown_signal())
        .await
        .context("node server failed")?;
    tracing::info!("node stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use etho_node::registry::DEFAULT_FORGET_AFTER;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        let argv = std::iter::once("node").chain(argv.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.args)
    }

    #[test]
    fn defaults_match_upstream() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.listen, "0.0.0.0:80".parse().unwrap());
        let config = args.config();
        assert_eq!(
            config.mysql_backup_url.endpoint().as_str(),
            "http://127.0.0.1:8090/status"
        );
        assert_eq!(
            config.rsync_backup_url.endpoint().as_str(),
            "http://127.0.0.1:8093/status"
        );
        assert_eq!(config.daemon_timeout, Duration::from_secs(2));
        assert!(!args.debug);
        assert_eq!(config.health, Thresholds::default());
    }

    #[test]
    fn health_thresholds() {
        let config = parse(&["--at-risk-after", "600", "--lag-warn", "30"])
            .unwrap()
            .config();
        assert_eq!(
            config.health,
            Thresholds {
                at_risk_after: 600.0,
                lag_warn: Some(30.0)
            }
        );
        assert!(parse(&["--lag-warn", "0"]).is_err());
    }

    #[test]
    fn flags_are_parsed() {
        let args = parse(&[
            "--listen",
            "127.0.0.1:8080",
            "--mysql-backup-url",
            "http://127.0.0.2:9000",
            "--rsync-backup-url",
            "127.0.0.3:9001",
            "--daemon-timeout",
            "0.25",
            "--state-dir",
            "/tmp/x",
            "-D",
        ])
        .unwrap();
        assert_eq!(args.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(args.daemon_timeout, Duration::from_millis(250));
        let config = args.config();
        assert_eq!(
            config.rsync_backup_url.endpoint().as_str(),
            "http://127.0.0.3:9001/status"
        );
        assert_eq!(config.state_dir, PathBuf::from("/tmp/x"));
        assert!(args.debug);
    }

    #[test]
    fn bad_values_are_refused() {
        for argv in [
            &["--daemon-timeout", "0"][..],
            &["--daemon-timeout", "-1"],
            &["--daemon-timeout", "NaN"],
            &["--daemon-timeout", "abc"],
            &["--listen", "localhost"],
            &["--mysql-backup-url", "https://x"],
        ] {
            assert!(parse(argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn archive_flags() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"{"folders": {"results": {"path": "/data/r"}, "video": {"path": "/data/v"}}}"#;
        std::fs::write(dir.path().join("ethoscope.conf"), text).unwrap();
        let conf = dir.path().to_str().unwrap();
        let a = parse(&["-c", conf]).unwrap().archive().unwrap().unwrap();
        assert_eq!(a.roots.results, PathBuf::from("/data/r"));
        assert_eq!(a.roots.videos, PathBuf::from("/data/v"));
        assert!(!a.write_index);
        assert_eq!(a.scan_interval, Duration::from_secs(60));
        let a = parse(&[
            "-c",
            conf,
            "-r",
            "/x/r",
            "--write-index",
            "--archive-scan-interval",
            "0.5",
        ])
        .unwrap()
        .archive()
        .unwrap()
        .unwrap();
        assert_eq!(a.roots.results, PathBuf::from("/x/r"));
        assert_eq!(a.roots.videos, PathBuf::from("/data/v"));
        assert!(a.write_index);
        assert_eq!(a.scan_interval, Duration::from_millis(500));
        assert!(parse(&["--no-archive"])
            .unwrap()
            .archive()
            .unwrap()
            .is_none());
        assert!(parse(&["--no-archive", "--write-index"]).is_err());
        let missing = dir.path().join("nope");
        assert!(parse(&["-c", missing.to_str().unwrap()])
            .unwrap()
            .archive()
            .is_err());
    }

    #[test]
    fn discovery_flags() {
        let args = parse(&[]).unwrap();
        let d = args.config().discovery;
        assert!(d.devices.is_empty() && !d.mdns);
        assert_eq!(d.poll_interval, Duration::from_secs(5));
        let args = parse(&[
            "--device",
            "127.0.0.10",
            "--device",
            "ethoscope007.local:9001",
            "--mdns",
            "--poll-interval",
            "1.5",
            "--device-timeout",
            "0.5",
        ])
        .unwrap();
        let d = args.config().discovery;
        assert_eq!(d.devices, ["127.0.0.10", "ethoscope007.local:9001"]);
        assert!(d.mdns);
        assert_eq!(d.poll_interval, Duration::from_millis(1500));
        assert_eq!(d.device_timeout, Duration::from_millis(500));
        assert!(parse(&["--poll-interval", "0"]).is_err());
        assert_eq!(d.forget_after, DEFAULT_FORGET_AFTER);
        let args = parse(&[
            "--forget-after",
            "60",
            "--admin-token",
            "0123456789abcdef0123",
            "--devices-from",
            "http://localhost/devices",
        ]);
        let config = args.unwrap().config();
        assert_eq!(config.discovery.forget_after, Duration::from_secs(60));
        assert_eq!(
            config.admin_token,
            Some(AdminToken("0123456789abcdef0123".into()))
        );
        assert_eq!(
            config.discovery.devices_from.unwrap().endpoint().as_str(),
            "http://localhost/devices"
        );
        assert!(parse(&[
            "--devices-from",
            "http://localhost",
            "--device",
            "127.0.0.1"
        ])
        .is_err());
        assert!(parse(&["--forget-after", "0"]).is_err());
    }
}
