//! `etho-backup demo`: a simulated lab on this machine — the fleet, the node and both backup
//! daemons, wired together on loopback — with a one-line summary whenever a backup finishes.
//!
//! The fleet runs in this process; the node and the daemons run as child processes of this same
//! binary (exactly what a lab runs), with their logs under `<data-dir>/logs`. Ctrl-C stops
//! everything it started.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use etho_sim::config::{DEFAULT_FIRST_IP, DEFAULT_HTTP_PORT, DEFAULT_RSYNC_PORT};
use etho_sim::{Fault, Fleet, MariaDbTarget};
use serde_json::Value;
use tokio::process::{Child, Command};

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

struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    async fn spawn(name: &'static str, args: &[String], logs: &Path) -> anyhow::Result<Proc> {
        let exe = std::env::current_exe().context("cannot find the etho-backup binary")?;
        let log = logs.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start etho-backup {name}"))?;
        Ok(Proc { name, child, log })
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop(mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?)
}

async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Waits until `url` answers, failing early if `proc` exits.
async fn wait_ready(client: &reqwest::Client, url: &str, proc: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = proc.exited() {
            bail!(
                "etho-backup {} exited ({status}):\n{}",
                proc.name,
                proc.log_tail()
            );
        }
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "etho-backup {} did not answer on {url} within 30 s",
                proc.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let client = client()?;
    let mysql_port = free_port()?;
    let rsync_port = free_port()?;
    let node_base = format!("http://{}", args.listen);
    let node_server = args.listen.to_string();
    let debug: Vec<String> = if args.debug {
        vec!["-D".into()]
    } else {
        vec![]
    };
    let s = |v: &str| v.to_string();

    let mut node_args = vec![
        s("node"),
        s("--listen"),
        args.listen.to_string(),
        s("--mysql-backup-url"),
        format!("http://127.0.0.1:{mysql_port}"),
        s("--rsync-backup-url"),
        format!("http://127.0.0.1:{rsync_port}"),
        s("--state-dir"),
        root.join("state/node").display().to_string(),
    ];
    for d in fleet.device_addresses() {
        node_args.push(s("--device"));
        node_args.push(d);
    }
    node_args.extend(debug.iter().cloned());
    let mut node = Proc::spawn("node", &node_args, &logs).await?;
    wait_ready(&client, &format!("{node_base}/healthz"), &mut node)
        .await
        .with_context(|| format!("the node cannot serve on {}", args.listen))?;

    let interval = args.interval.max(1).to_string();
    let mut procs = vec![node];
    if let Some(m) = fleet.mariadb() {
        let mut mysql_args = vec![
            s("mysql-backup"),
            s("-p"),
            mysql_port.to_string(),
            s("-i"),
            node_server.clone(),
            s("-r"),
            results.display().to_string(),
            s("--interval"),
            interval.clone(),
            s("--mysql-port"),
            m.port.to_string(),
            s("--state-dir"),
            root.join("state/mysql-backup").display().to_string(),
        ];
        mysql_args.extend(debug.iter().cloned());
        let mut p = Proc::spawn("mysql-backup", &mysql_args, &logs).await?;
        wait_ready(
            &client,
            &format!("http://127.0.0.1:{mysql_port}/status"),
            &mut p,
        )
        .await?;
        procs.push(p);
    }
    if let Some(source) = fleet.rsync_source_template() {
        let mut rsync_args = vec![
            s("rsync-backup"),
            s("-p"),
            rsync_port.to_string(),
            s("-i"),
            node_server.clone(),
            s("-r"),
            results.display().to_string(),
            s("-v"),
            videos.display().to_string(),
            s("--source"),
            source,
            s("--interval"),
            interval.clone(),
            s("--rescan-interval"),
            s("60"),
            s("--state-dir"),
            root.join("state/rsync-backup").display().to_string(),
        ];
        rsync_args.extend(debug.iter().cloned());
        let mut p = Proc::spawn("rsync-backup", &rsync_args, &logs).await?;
        wait_ready(
            &client,
            &format!("http://127.0.0.1:{rsync_port}/status"),
            &mut p,
        )
        .await?;
        procs.push(p);
    }

    println!();
    println!("dashboard:  {node_base}/");
    println!("devices:    {node_base}/devices");
    println!("backups:    {node_base}/backup/status");
    println!(
        "daemons:    http://127.0.0.1:{mysql_port}/status (mysql-backup), http://127.0.0.1:{rsync_port}/status (rsync-backup), every {interval} s"
    );
    println!(
        "archive:    {}",
        results.parent().unwrap_or(results).display()
    );
    println!("logs:       {}", logs.display());
    println!("Ctrl-C stops everything.");
    println!();

    let shutdown = crate::logging::shutdown_signal();
    tokio::pin!(shutdown);
    let mut watch = Watcher::default();
    let mut failed = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        for p in procs.iter_mut() {
            if let Some(status) = p.exited() {
                failed = Some(format!(
                    "etho-backup {} exited ({status}); last log lines:\n{}",
                    p.name,
                    p.log_tail()
                ));
            }
        }
        if failed.is_some() {
            break;
        }
        if let Ok(devices) = get_json(&client, &format!("{node_base}/devices")).await {
            for line in watch.devices(&devices) {
                println!("{line}");
            }
        }
        if let Ok(status) = get_json(&client, &format!("{node_base}/backup/status")).await {
            for line in watch.backups(&status) {
                println!("{line}");
            }
        }
    }
    println!("stopping the node and the backup daemons");
    for p in procs {
        p.stop(Duration::from_secs(15)).await;
    }
    match failed {
        Some(msg) => {
            eprintln!("{msg}");
            Ok(ExitCode::from(1))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// How often a device's unchanged-outcome backups are summarised again (new data arrives every
/// cycle while experiments run; one line per cycle per device would flood the terminal).
const QUIET_FOR: Duration = Duration::from_secs(60);

/// What was last printed for one device and side.
struct Printed {
    count: u64,
    outcome: String,
    at: Instant,
}

/// Turns successive `/devices` and `/backup/status` documents into one line per change.
#[derive(Default)]
struct Watcher {
    device_status: BTreeMap<String, String>,
    /// (device id, side) → the last finished run seen and when it was printed.
    runs: BTreeMap<(String, &'static str), Printed>,
}

fn clock() -> String {
    let secs = etho_model::now_epoch().rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn short(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

impl Watcher {
    fn devices(&mut self, doc: &Value) -> Vec<String> {
        let mut lines = Vec::new();
        let Some(map) = doc.as_object() else {
            return lines;
        };
        for (id, d) in map {
            let status = d["status"].as_str().unwrap_or("?").to_string();
            let name = d["name"].as_str().unwrap_or(id);
            let old = self.device_status.insert(id.clone(), status.clone());
            let notable = matches!(status.as_str(), "offline" | "unreached" | "busy")
                || matches!(old.as_deref(), Some("offline" | "unreached" | "busy"));
            match old {
                None => lines.push(format!(
                    "{} {name:<14} found at {} ({status})",
                    clock(),
                    d["ip"].as_str().unwrap_or("?")
                )),
                Some(o) if o != status && notable => {
                    lines.push(format!("{} {name:<14} is now {status} (was {o})", clock()))
                }
                _ => {}
            }
        }
        lines
    }

    fn backups(&mut self, doc: &Value) -> Vec<String> {
        let mut lines = Vec::new();
        let Some(devices) = doc["unified_devices"].as_object() else {
            return lines;
        };
        for (id, d) in devices {
            let name = d["name"].as_str().unwrap_or(id);
            for (side, label) in [("mysql_backup", "mysql"), ("rsync_backup", "rsync")] {
                let b = &d[side];
                if b["available"] != true || b["processing"] == true {
                    continue;
                }
                let count = b["count"].as_u64().unwrap_or(0);
                let outcome = b["progress"]["status"].as_str().unwrap_or("?");
                let key = (id.clone(), label);
                let news = match self.runs.get(&key) {
                    _ if count == 0 => false,
                    None => true,
                    Some(p) if p.count == count => false,
                    Some(p) => p.outcome != outcome || p.at.elapsed() >= QUIET_FOR,
                };
                if !news {
                    if let Some(p) = self.runs.get_mut(&key) {
                        p.count = count;
                    }
                    continue;
                }
                self.runs.insert(
                    key,
                    Printed {
                        count,
                        outcome: outcome.to_string(),
                        at: Instant::now(),
                    },
                );
                let message = b["progress"]["message"].as_str().unwrap_or("");
                let size = b["synced"]["results"]["disk_usage_human"]
                    .as_str()
                    .map(|s| format!(" [{s}]"))
                    .unwrap_or_default();
                lines.push(format!(
                    "{} {name:<14} {label:<5} {outcome:<7} #{count} {}{size}  (overall: {})",
                    clock(),
                    short(message, 90),
                    d["overall_status"].as_str().unwrap_or("?")
                ));
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn watcher_reports_changes_once() {
        let mut w = Watcher::default();
        let devs = json!({"a": {"name": "ETHOSCOPE_001", "status": "running", "ip": "127.0.0.10"}});
        assert_eq!(w.devices(&devs).len(), 1);
        assert!(w.devices(&devs).is_empty());
        let stopped = json!({"a": {"name": "ETHOSCOPE_001", "status": "stopped"}});
        assert!(
            w.devices(&stopped).is_empty(),
            "run status changes are not news"
        );
        let off = json!({"a": {"name": "ETHOSCOPE_001", "status": "offline"}});
        assert!(w.devices(&off)[0].contains("is now offline"));

        let status = |count: u64, processing: bool| {
            json!({"unified_devices": {"a": {"name": "ETHOSCOPE_001", "overall_status": "partial",
                "mysql_backup": {"available": false},
                "rsync_backup": {"available": true, "processing": processing, "count": count,
                    "progress": {"status": "success", "message": "done"},
                    "synced": {"results": {"disk_usage_human": "1.5 MB"}}}}}})
        };
        assert!(w.backups(&status(0, false)).is_empty());
        assert!(w.backups(&status(1, true)).is_empty());
        let lines = w.backups(&status(1, false));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].contains("rsync") && lines[0].contains("#1") && lines[0].contains("1.5 MB")
        );
        assert!(w.backups(&status(1, false)).is_empty());
        // Same outcome soon after: quiet. A different outcome: printed at once.
        assert!(w.backups(&status(2, false)).is_empty());
        let mut failed = status(3, false);
        failed["unified_devices"]["a"]["rsync_backup"]["progress"]["status"] = json!("error");
        assert_eq!(w.backups(&failed).len(), 1);
        assert!(w.backups(&failed).is_empty());
    }

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
