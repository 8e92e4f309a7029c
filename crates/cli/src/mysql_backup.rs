//! `etho-backup mysql-backup`: the MariaDB → SQLite mirror daemon (port 8090), or a one-shot
//! backup of chosen devices with `-e`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use etho_daemon::{Daemon, DaemonConfig};
use etho_mysql_backup::config::{DEFAULT_MYSQL_PASSWORD, DEFAULT_MYSQL_PORT, DEFAULT_MYSQL_USER};
use etho_mysql_backup::{http, MirrorConfig, MysqlEngine};

use crate::daemon_cli::{listen_addr, CommonArgs, DaemonRun};

/// Default state directory (the persisted status table).
const DEFAULT_STATE_DIR: &str = "/var/lib/etho-backup/mysql-backup";

/// Flags of `etho-backup mysql-backup`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Port of the status API.
    #[arg(short = 'p', long, default_value_t = 8090)]
    pub port: u16,

    /// Where mirrors are written (default: the config's folders.results.path).
    #[arg(short = 'r', long)]
    pub results_dir: Option<PathBuf>,

    #[command(flatten)]
    pub common: CommonArgs,

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
}

pub(crate) fn mirror_config(args: &Args) -> anyhow::Result<MirrorConfig> {
    let results = match &args.results_dir {
        Some(r) => r.clone(),
        None => etho_daemon::config::load_folders(args.common.configuration.as_deref())?.results,
    };
    let mut config = MirrorConfig::new(results);
    config.mysql_port = args.mysql_port;
    config.mysql_user = args.mysql_user.clone();
    config.mysql_password = args.mysql_password.clone();
    Ok(config)
}

/// Runs the subcommand.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::logging::init(args.common.debug);
    args.common.apply_umask();
    let engine = MysqlEngine::new(mirror_config(&args)?);
    let mut daemon_config = DaemonConfig::new(args.common.server.clone());
    daemon_config.state_dir = Some(args.state_dir.clone());
    daemon_config.scheduler = args.common.scheduler();
    let daemon = Daemon::new(Arc::new(engine.clone()), daemon_config)?;
    let run = DaemonRun {
        router: http::router(Arc::clone(&daemon), engine.clone()),
        daemon,
        listen: listen_addr(&args.common.listen, args.port)?,
        banner: format!(
            "mirrors in {}, devices from {}",
            engine.config().results_dir.display(),
            args.common.server
        ),
    };
    run.run(args.common.ethoscope.as_deref(), |_| Vec::new())
        .await
}
