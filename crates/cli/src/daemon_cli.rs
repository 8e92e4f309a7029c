//! What `mysql-backup` and `rsync-backup` share on the command line: upstream's common flags
//! (`-i -c -D -e -p`, scheduling, `--listen`) and the run sequence (one-shot mode, or bind, serve
//! `GET /status` and cycle until Ctrl-C/SIGTERM, then flush the status table).

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use etho_daemon::{Daemon, SchedulerConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Flags both backup daemons take.
#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    /// Address of the status API: `ADDR` (with `--port`) or `ADDR:PORT`.
    #[arg(long, default_value = "127.0.0.1")]
    pub listen: String,

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

    /// One-shot: back up these devices now and exit (numbers like `7` for ETHOSCOPE_007, names,
    /// ids or IPs, comma-separated). Exits 0 only if every target succeeded (a warning, such as
    /// a database not ready yet or files that vanished during the copy, counts as success).
    #[arg(short = 'e', long = "ethoscope")]
    pub ethoscope: Option<String>,

    /// File mode creation mask (octal): the directories and files the daemon creates lose these
    /// bits, and so do the modes rsync copies from devices (group and world write, set-id and
    /// sticky bits are always off). 027: nothing for others; 022 lets others read (an FTP
    /// server that serves the archive, for instance).
    #[arg(long, value_name = "OCTAL", default_value = "027", value_parser = parse_umask)]
    pub umask: u32,

    /// Accepted for compatibility with upstream; no effect.
    #[arg(short = 's', long, hide = true)]
    pub safe: bool,
}

/// An octal mode mask, `000` to `777`.
fn parse_umask(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal mask from 000 to 777"))
}

impl CommonArgs {
    /// Makes `--umask` this process's umask (before anything is created).
    pub fn apply_umask(&self) {
        let mask = nix::sys::stat::Mode::from_bits_truncate(self.umask);
        nix::sys::stat::umask(mask);
    }

    /// The scheduler settings; the scheduler alone enforces `--job-timeout`.
    pub fn scheduler(&self) -> SchedulerConfig {
        SchedulerConfig {
            interval: Duration::from_secs(self.interval.max(1)),
            max_jobs: self.max_jobs.max(1),
            job_timeout: Duration::from_secs(self.job_timeout.max(1)),
            ..SchedulerConfig::default()
        }
    }
}

/// `ADDR:PORT`, or `ADDR` with the `--port` value.
pub fn listen_addr(listen: &str, port: u16) -> anyhow::Result<SocketAddr> {
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

/// How a backup daemon subcommand runs once its engine and daemon are built.
pub struct DaemonRun {
    /// The daemon.
    pub daemon: Arc<Daemon>,
    /// Its status API.
    pub router: axum::Router,
    /// Where the status API listens.
    pub listen: SocketAddr,
    /// Logged after binding, after "listening on http://ADDR; ".
    pub banner: String,
}

impl DaemonRun {
    /// `-e` mode when `targets` is set; otherwise serves and cycles until Ctrl-C/SIGTERM.
    /// `background` starts extra tasks that stop with the given token (awaited at the end).
    pub async fn run(
        self,
        targets: Option<&str>,
        background: impl FnOnce(CancellationToken) -> Vec<JoinHandle<()>>,
    ) -> anyhow::Result<ExitCode> {
        let DaemonRun {
            daemon,
            router,
            listen,
            banner,
        } = self;
        if let Some(targets) = targets {
            return Ok(run_once(&daemon, targets).await);
        }
        let listener = etho_daemon::server::bind(listen).await?;
        tracing::info!(
            "{} listening on http://{}; {banner}",
            daemon.engine_name(),
            listener.local_addr()?
        );
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            crate::logging::shutdown_signal().await;
            tracing::info!("shutting down");
            signal.cancel();
        });
        let tasks = background(shutdown.clone());
        let server = tokio::spawn(etho_daemon::serve(listener, router, shutdown.clone()));
        Arc::clone(&daemon).run(shutdown.clone()).await;
        shutdown.cancel();
        for task in tasks {
            let _ = task.await;
        }
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("status server: {e}"),
            Err(e) => tracing::error!("status server task: {e}"),
        }
        daemon.status().flush().await;
        Ok(ExitCode::SUCCESS)
    }
}

/// `-e` mode: backs the targets up once, showing progress; exit code 0 only if all were good.
async fn run_once(daemon: &Arc<Daemon>, targets: &str) -> ExitCode {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let display = tokio::spawn(crate::oneshot_ui::show(rx, std::io::stderr().is_terminal()));
    let result = daemon.run_once(targets, Some(tx)).await;
    // The sender is gone with `run_once`: the display drains the last events and ends.
    let _ = display.await;
    match result {
        Ok(report) if report.all_good() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(err) => {
            eprintln!("{}", crate::oneshot_ui::failure_line(&err));
            ExitCode::from(1)
        }
    }
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

    #[test]
    fn umask_values() {
        assert_eq!(parse_umask("027"), Ok(0o027));
        assert_eq!(parse_umask("22"), Ok(0o022));
        assert_eq!(parse_umask("0"), Ok(0));
        for bad in ["8", "1000", "-1", "u=rwx", ""] {
            assert!(parse_umask(bad).is_err(), "{bad}");
        }
    }
}
