//! `etho-backup rsync-backup`: the rsync results/videos daemon (port 8093), or a one-shot backup
//! of chosen devices with `-e`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use etho_daemon::{Daemon, DaemonConfig};
use etho_rsync_backup::config::DEFAULT_SSH_KEY;
use etho_rsync_backup::source::DEFAULT_SOURCE;
use etho_rsync_backup::{api, RsyncBackupConfig, RsyncEngine, SourceTemplate};

use crate::daemon_cli::{listen_addr, CommonArgs, DaemonRun};

/// Default state directory (status database, staging, known hosts). Keep it on the archive's
/// filesystem so finished files are renamed into place.
const DEFAULT_STATE_DIR: &str = "/var/lib/etho-backup/rsync-backup";

/// Flags of `etho-backup rsync-backup`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Port of the status API.
    #[arg(short = 'p', long, default_value_t = 8093)]
    pub port: u16,

    #[command(flatten)]
    pub common: CommonArgs,

    /// Results archive (default: the config's folders.results.path).
    #[arg(short = 'r', long)]
    pub results_dir: Option<PathBuf>,

    /// Videos archive (default: the config's folders.video.path).
    #[arg(short = 'v', long)]
    pub videos_dir: Option<PathBuf>,

    /// Back up results (SQLite) trees only.
    #[arg(long, conflicts_with = "videos_only")]
    pub results_only: bool,

    /// Back up videos trees only.
    #[arg(long)]
    pub videos_only: bool,

    /// Where a device's data directory is; `{ip}`, `{id}` and `{name}` are replaced. Also
    /// `rsync://HOST:PORT/MODULE` or `HOST::MODULE` for an rsync daemon, or a local path.
    #[arg(long, default_value = DEFAULT_SOURCE)]
    pub source: String,

    /// ssh private key.
    #[arg(long, default_value = DEFAULT_SSH_KEY)]
    pub ssh_key: PathBuf,

    /// ssh port of the devices (default: ssh's own, 22).
    #[arg(long)]
    pub ssh_port: Option<u16>,

    /// Pinned device host keys, learned on first contact (default: <state-dir>/known_hosts).
    #[arg(long)]
    pub known_hosts: Option<PathBuf>,

    /// Bandwidth limit passed to rsync (e.g. 5000 for KiB/s, or 10M).
    #[arg(long)]
    pub bwlimit: Option<String>,

    /// rsync's I/O inactivity timeout in seconds.
    #[arg(long, default_value_t = 300)]
    pub io_timeout: u64,

    /// Seconds between full rescans of the archive sizes.
    #[arg(long, default_value_t = 3600)]
    pub rescan_interval: u64,

    /// State directory: status database, staging and partial files, known hosts.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// Accepted for compatibility with upstream; no effect.
    #[arg(long, hide = true)]
    pub unified: bool,
}

pub(crate) fn engine_config(args: &Args) -> anyhow::Result<RsyncBackupConfig> {
    let folders = etho_daemon::config::load_folders(args.common.configuration.as_deref())?;
    let results = args.results_dir.clone().unwrap_or(folders.results);
    let videos = args.videos_dir.clone().unwrap_or(folders.videos);
    let source: SourceTemplate = args
        .source
        .parse()
        .with_context(|| format!("invalid --source {:?}", args.source))?;
    let mut config = RsyncBackupConfig::new(&results, &videos, &args.state_dir);
    config.backup_results = !args.videos_only;
    config.backup_videos = !args.results_only;
    config.source = source;
    config.ssh.key = args.ssh_key.clone();
    config.ssh.port = args.ssh_port;
    if let Some(kh) = &args.known_hosts {
        config.ssh.known_hosts = kh.clone();
    }
    config.bwlimit = args.bwlimit.clone();
    config.io_timeout = Duration::from_secs(args.io_timeout.max(1));
    config.rescan_interval = Duration::from_secs(args.rescan_interval.max(1));
    config.umask = args.common.umask;
    Ok(config)
}

/// Runs the subcommand.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::logging::init(args.common.debug);
    args.common.apply_umask();
    let engine = RsyncEngine::new(engine_config(&args)?)?;
    let mut daemon_config = DaemonConfig::new(args.common.server.clone());
    daemon_config.state_dir = Some(engine.config().state_dir.clone());
    daemon_config.scheduler = args.common.scheduler();
    let daemon = Daemon::new(Arc::new(engine.clone()), daemon_config)?;
    let shown = |on: bool, dir: &std::path::Path| {
        if on {
            dir.display().to_string()
        } else {
            "off".to_string()
        }
    };
    let run = DaemonRun {
        router: api::router(Arc::clone(&daemon), engine.clone()),
        daemon,
        listen: listen_addr(&args.common.listen, args.port)?,
        banner: format!(
            "results {}, videos {}",
            shown(engine.config().backup_results, &engine.config().results_dir),
            shown(engine.config().backup_videos, &engine.config().videos_dir),
        ),
    };
    run.run(args.common.ethoscope.as_deref(), |shutdown| {
        vec![engine.spawn_rescan_loop(shutdown)]
    })
    .await
}
