//! `etho-backup demo`: a simulated lab on this machine — the fleet, the node and both backup
//! daemons, wired together on loopback — with a one-line summary whenever a backup finishes.
//!
//! The fleet runs in this process; the node and the daemons run as child processes of this same
//! binary (exactly what a lab runs), with their logs under `<data-dir>/logs`, supervised by
//! `etho-demo`. Ctrl-C stops everything it started.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use etho_demo::{Supervisor, Wiring};
use etho_sim::config::{DEFAULT_FIRST_IP, DEFAULT_HTTP_PORT, DEFAULT_RSYNC_PORT};
use etho_sim::{Fault, Fleet, MariaDbTarget};

/// Flags of `etho-backup demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of simulated devices.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub devices: u32,

    /// Root of every file the demo writes (devices, backups, state, logs). Default: a fresh
    /// temporary directory, removed on exit unless --keep-data.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Keep the temporary data directory on exit.
    #[arg(long)]
    pub keep_data: bool,

    /// Where the node serves the dashboard.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address of the first simulated device.
    #[arg(long, value_name = "IP", default_value_t = DEFAULT_FIRST_IP)]
    pub first_ip: Ipv4Addr,

    /// Device HTTP port (0: a free one).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_HTTP_PORT)]
    pub http_port: u16,

    /// Device rsync daemon port (0: a free one).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_RSYNC_PORT)]
    pub rsync_port: u16,

    /// `auto` (a private mariadbd when installed, else an SQLite-only fleet) or `none`.
    #[arg(long, value_name = "auto|none", default_value = "auto")]
    pub mariadb: MariaDbTarget,

    /// Seconds between two backup cycles of each daemon.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub interval: u64,

    /// Length of an experiment, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 180.0)]
    pub experiment_length: f64,

    /// Pause between experiments, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 20.0)]
    pub pause: f64,

    /// One device is unplugged this many seconds after the start (0: never).
    #[arg(long, value_name = "SECONDS", default_value_t = 75.0)]
    pub offline_after: f64,

    /// Debug logging, here and in the node and daemons.
    #[arg(short = 'D', long)]
    pub debug: bool,
}

/// A free TCP port on 127.0.0.1 (a moment ago).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn sim_args(args: &Args, mariadb: MariaDbTarget) -> crate::sim::Args {
    crate::sim::Args {
        devices: args.devices,
        first_ip: args.first_ip,
        first_number: 1,
        seed: 1,
        http_port: args.http_port,
        rsync_port: args.rsync_port,
        no_rsync: false,
        mariadb,
        roles: Vec::new(),
        data_dir: None,
        experiment_length: args.experiment_length,
        pause: args.pause,
        stagger: 3.0,
        rois: 10,
        fps: 2.0,
        snapshot_interval: 15.0,
        video_chunk_interval: 10.0,
        video_chunk_kib: 256,
        sqlite_journal: Default::default(),
        fault: Vec::new(),
        mdns: false,
        debug: args.debug,
    }
}

fn init_logging(debug: bool) {
    // The demo's own terminal shows the summaries; its library logs stay at warnings unless
    // asked for (the node and daemons log to their files).
    if debug || std::env::var_os("RUST_LOG").is_some() {
        crate::logging::init(debug);
    } else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_logging(args.debug);
    if !(args.experiment_length.is_finite() && args.experiment_length > 0.0) {
        bail!("--experiment-length must be a positive number of seconds");
    }
    let mariadb = match &args.mariadb {
        MariaDbTarget::Auto if !etho_sim::mariadbd_installed() => {
            println!(
                "mariadbd is not installed (apt-get install mariadb-server): running an \
                 SQLite-only fleet, so the MySQL backup daemon has nothing to do."
            );
            MariaDbTarget::None
        }
        MariaDbTarget::Url(_) => bail!("the demo starts its own MariaDB: use auto or none"),
        other => other.clone(),
    };
    let (root, temp) = crate::sim::data_dir_or_temp(args.data_dir.as_deref(), "etho-demo-")?;
    let logs = root.join("logs");
    let results = root.join("backup/results");
    let videos = root.join("backup/videos");
    for d in [&logs, &results, &videos] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }

    // The fleet: MariaDB and SQLite trackers, a video recorder, and one device that goes away.
    let mut config = sim_args(&args, mariadb.clone()).fleet_config(root.join("fleet"))?;
    let offline_device = (config.devices.len() >= 3 && args.offline_after > 0.0).then(|| {
        let i = config.devices.len() - 2;
        config.devices[i]
            .faults
            .push(Fault::OfflineAfter(Duration::from_secs_f64(
                args.offline_after,
            )));
        config.devices[i].identity.name.clone()
    });
    println!("starting {} simulated devices…", config.devices.len());
    let fleet = Fleet::start(config)
        .await
        .context("cannot start the simulated fleet")?;
    crate::sim::print_fleet(&fleet);
    if let Some(name) = &offline_device {
        println!(
            "  ({name} will be unplugged after {:.0} s)",
            args.offline_after
        );
    }

    let outcome = run_services(&args, &fleet, &root, &results, &videos).await;
    println!("stopping the simulated fleet");
    fleet.stop().await;
    match (&temp, args.keep_data) {
        (Some(t), true) => println!("data kept in {}", t.path().display()),
        (Some(_), false) => {}
        (None, _) => println!("data in {}", root.display()),
    }
    if let (Some(t), true) = (temp, args.keep_data) {
        let _ = t.keep();
    }
    outcome
}

async fn run_services(
    args: &Args,
    fleet: &Fleet,
    root: &Path,
    results: &Path,
    videos: &Path,
) -> anyhow::Result<ExitCode> {
    let logs = root.join("logs");
    let wiring = Wiring {
        node_listen: args.listen,
        mysql_port: free_port()?,
        rsync_port: free_port()?,
        devices: fleet.device_addresses(),
        mariadb_port: fleet.mariadb().map(|m| m.port),
        rsync_source: fleet.rsync_source_template(),
        results: results.to_path_buf(),
        videos: videos.to_path_buf(),
        state: root.join("state"),
        interval: args.interval,
        debug: args.debug,
    };
    let exe = std::env::current_exe().context("cannot find the etho-backup binary")?;
    let mut supervisor = Supervisor::new(exe, logs.clone())?;
    for service in wiring.services() {
        let started = supervisor.start(&service).await;
        if let Err(err) = started {
            supervisor.stop_all(Duration::from_secs(15)).await;
            return Err(err).with_context(|| match service.name {
                "node" => format!("the node cannot serve on {}", args.listen),
                name => format!("etho-backup {name} did not start"),
            });
        }
    }
    print_addresses(&wiring, results, &logs);
    let outcome = etho_demo::watch::run(
        &mut supervisor,
        &wiring.node_base(),
        crate::logging::shutdown_signal(),
        |line| println!("{line}"),
    )
    .await;
    println!("stopping the node and the backup daemons");
    supervisor.stop_all(Duration::from_secs(15)).await;
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(exited) => {
            eprintln!("{exited}");
            Ok(ExitCode::from(1))
        }
    }
}

fn print_addresses(wiring: &Wiring, results: &Path, logs: &Path) {
    let node_base = wiring.node_base();
    let interval = wiring.interval.max(1);
    println!();
    println!("dashboard:  {node_base}/");
    println!("devices:    {node_base}/devices");
    println!("backups:    {node_base}/backup/status");
    println!(
        "daemons:    http://127.0.0.1:{}/status (mysql-backup), http://127.0.0.1:{}/status (rsync-backup), every {interval} s",
        wiring.mysql_port, wiring.rsync_port
    );
    println!(
        "archive:    {}",
        results.parent().unwrap_or(results).display()
    );
    println!("logs:       {}", logs.display());
    println!("Ctrl-C stops everything.");
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_fleet_is_mixed() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let args = Cli::try_parse_from(["demo"]).unwrap().args;
        assert_eq!(args.listen, "127.0.0.1:8080".parse().unwrap());
        let config = sim_args(&args, MariaDbTarget::Auto)
            .fleet_config(PathBuf::from("/x"))
            .unwrap();
        let labels: Vec<&str> = config.devices.iter().map(|d| d.role.label()).collect();
        assert_eq!(
            labels,
            ["mariadb", "sqlite", "mariadb", "sqlite", "mariadb", "video"]
        );
        let sqlite_only = sim_args(&args, MariaDbTarget::None)
            .fleet_config(PathBuf::from("/x"))
            .unwrap();
        assert!(sqlite_only
            .devices
            .iter()
            .all(|d| d.role.label() != "mariadb"));
    }
}
