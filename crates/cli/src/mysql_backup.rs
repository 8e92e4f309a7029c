//! `etho-backup mysql-backup`: the MariaDB → SQLite mirror daemon (port 8090), or a one-shot
//! backup of chosen devices with `-e`.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use etho_daemon::{Daemon, DaemonConfig, SchedulerConfig};
use etho_mysql_backup::config::{DEFAULT_MYSQL_PASSWORD, DEFAULT_MYSQL_PORT, DEFAULT_MYSQL_USER};
use etho_mysql_backup::{http, MirrorConfig, MysqlEngine};
use tokio_util::sync::CancellationToken;

/// Default state directory (the persisted status table).
const DEFAULT_STATE_DIR: &str = "/var/lib/etho-backup/mysql-backup";

/// Flags of `etho-backup mysql-backup`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Port of the status API.
    #[arg(short = 'p', long, default_value_t = 8090)]
    pub port: u16,

    /// Address of the status API: `ADDR` (with `--port`) or `ADDR:PORT`.
    #[arg(long, default_value = "127.0.0.1")]
    pub listen: String,

    /// Where mirrors are written (default: the config's folders.results.path).
    #[arg(short = 'r', long)]
    pub results_dir: Option<PathBuf>,

    /// Node address for device discovery (`host`, `host:port` or an http URL).
    #[arg(short = 'i', long, default_value = "localhost")]
    pub server: String,

    /// Configuration directory holding ethoscope.conf (read only, never rewritten).
    #[arg(short = 'c', long = "configuration")]
    pub configuration: Option<PathBuf>,

    /// Debug logging.
    #[arg(short = 'D', long)]
    pub debug: bool,

    /// Seconds between backup cycle starts.
    #[arg(long, default_value_t = 300)]
    pub interval: u64,

    /// Devices backed up at once.
    #[arg(long, default_value_t = 4)]
    pub max_jobs: usize,

    /// Wall-clock limit of one device's job in seconds; the copy is stopped after it.
    #[arg(long, default_value_t = 600)]
    pub job_timeout: u64,

    /// MariaDB port on the devices.
    #[arg(long, default_value_t = DEFAULT_MYSQL_PORT)]
    pub mysql_port: u16,

    /// MariaDB account on the devices (read-only is enough).
    #[arg(long, default_value = DEFAULT_MYSQL_USER)]
    pub mysql_user: String,

    /// Its password (or set ETHO_BACKUP_MYSQL_PASSWORD to keep it off the command line).
    #[arg(long, env = "ETHO_BACKUP_MYSQL_PASSWORD", default_value = DEFAULT_MYSQL_PASSWORD, hide_env_values = true)]
    pub mysql_password: String,

    /// State directory: the persisted status table.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// One-shot: back up these devices now and exit (numbers like `7` for ETHOSCOPE_007, names,
    /// ids or IPs, comma-separated). Exits 0 only if every target succeeded.
    #[arg(short = 'e', long = "ethoscope")]
    pub ethoscope: Option<String>,

    /// Accepted for compatibility with upstream; no effect.
    #[arg(short = 's', long, hide = true)]
    pub safe: bool,
}

/// `ADDR:PORT`, or `ADDR` with the `--port` value (shared with `rsync-backup`).
pub(crate) fn listen_addr(listen: &str, port: u16) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let ip: IpAddr = listen
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .with_context(|| format!("--listen {listen:?} is neither ADDR nor ADDR:PORT"))?;
    Ok(SocketAddr::new(ip, port))
}

fn mirror_config(args: &Args) -> anyhow::Result<MirrorConfig> {
    let results = match &args.results_dir {
        Some(r) => r.clone(),
        None => etho_daemon::config::load_folders(args.configuration.as_deref())?.results,
    };
    let mut config = MirrorConfig::new(results);
    config.mysql_port = args.mysql_port;
    config.mysql_user = args.mysql_user.clone();
    config.mysql_password = args.mysql_password.clone();
    Ok(config)
}

/// Runs the subcommand.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::logging::init(args.debug);
    let engine = MysqlEngine::new(mirror_config(&args)?);
    let mut daemon_config = DaemonConfig::new(args.server.clone());
    daemon_config.state_dir = Some(args.state_dir.clone());
    daemon_config.scheduler = SchedulerConfig {
        interval: Duration::from_secs(args.interval.max(1)),
        max_jobs: args.max_jobs.max(1),
        job_timeout: Duration::from_secs(args.job_timeout.max(1)),
        ..SchedulerConfig::default()
    };
    let daemon = Daemon::new(Arc::new(engine.clone()), daemon_config)?;

    if let Some(targets) = &args.ethoscope {
        let ok = daemon
            .run_once(targets, std::io::stderr().is_terminal())
            .await;
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }

    let addr = listen_addr(&args.listen, args.port)?;
    let listener = etho_daemon::server::bind(addr).await?;
    tracing::info!(
        "mysql-backup listening on http://{}; mirrors in {}, devices from {}",
        listener.local_addr()?,
        engine.config().results_dir.display(),
        args.server
    );
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        crate::logging::shutdown_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    let server = tokio::spawn(etho_daemon::serve(
        listener,
        http::router(Arc::clone(&daemon), engine),
        shutdown.clone(),
    ));
    Arc::clone(&daemon).run(shutdown.clone()).await;
    shutdown.cancel();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("status server: {e}"),
        Err(e) => tracing::error!("status server task: {e}"),
    }
    daemon.status().flush().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(
            listen_addr("127.0.0.1", 8090).unwrap(),
            "127.0.0.1:8090".parse().unwrap()
        );
        assert_eq!(
            listen_addr("127.0.0.2:9000", 8090).unwrap(),
            "127.0.0.2:9000".parse().unwrap()
        );
        assert_eq!(listen_addr("::1", 1).unwrap(), "[::1]:1".parse().unwrap());
        assert!(listen_addr("localhost:80", 1).is_err());
    }
}
