//! `etho-backup node`: flags into [`etho_node::NodeConfig`], bind, serve until Ctrl-C/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use etho_node::registry::DiscoveryConfig;
use etho_node::target::Target;
use etho_node::{AppState, NodeConfig, ServiceUrl};

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

    /// Seconds between two polls of one device.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub poll_interval: Duration,

    /// Longest wait for one device answer; fractions allowed.
    #[arg(long, value_name = "SECONDS", default_value = "3", value_parser = parse_seconds)]
    pub device_timeout: Duration,
}

impl Args {
    /// The library configuration these flags describe.
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
                ..DiscoveryConfig::default()
            },
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

/// Runs the node until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::logging::init(args.debug);
    for d in &args.device {
        Target::parse(d, true).map_err(|e| anyhow::anyhow!("--device {d:?}: {e}"))?;
    }
    let config = args.config();
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
    }
}
