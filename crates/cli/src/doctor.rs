//! `etho-backup doctor`: checks an installation the way the services will run it, and prints a
//! table with a fix for every failure.
//!
//! It reads the same merged settings the units' `ExecStart` lines get (`[mysql-backup]`,
//! `[rsync-backup]` of the configuration file, or their defaults), then checks: the file parses;
//! the results and videos folders exist, are writable and have space; the ssh key and the pinned
//! host keys; the node's `/devices`; per device, ssh in BatchMode and rsync on the device (or the
//! rsync daemon), the MariaDB login and the device's clock; and both daemons' `/status`. The
//! exit code is 1 when any check failed. Probes are thin; each check's verdict and wording is a
//! pure function of what the probe saw ([`Verdict`]), so the table is tested without a lab.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use etho_daemon::discovery::NodeClient;
use etho_model::device::{DatabaseReport, DeviceInfo};
use etho_model::size::format_bytes;
use etho_rsync_backup::source::Transport;
use etho_rsync_backup::RsyncBackupConfig;
use mysql_async::prelude::Queryable;

use crate::settings::{self, ConfigFile, ParseFailure};

/// Flags of `etho-backup doctor`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Longest wait for one network check, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub timeout: u64,

    /// Largest difference between a device's clock and this node's, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub max_clock_skew: u64,

    /// Least free space in the results and videos folders, in GiB.
    #[arg(long, value_name = "GIB", default_value_t = 5)]
    pub min_free_gib: u64,
}

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// Not applicable here.
    Skip,
    /// Works, but worth a look.
    Warn,
    /// Broken: the fix says what to do.
    Fail,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skip => "skip",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What was checked (`results dir`, `ETHOSCOPE_001 clock`).
    pub check: String,
    /// The outcome.
    pub status: Status,
    /// What was seen.
    pub detail: String,
    /// What to do, for warnings and failures.
    pub fix: Option<String>,
}

impl Verdict {
    fn new(check: impl Into<String>, status: Status, detail: impl Into<String>) -> Verdict {
        Verdict {
            check: check.into(),
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Verdict {
        self.fix = Some(fix.into());
        self
    }
}

/// The table: one line per check, the fix indented under it.
pub fn render(verdicts: &[Verdict]) -> String {
    let width = verdicts
        .iter()
        .map(|v| v.check.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!("{:<width$}  {:<7}{}\n", "CHECK", "RESULT", "DETAIL");
    for v in verdicts {
        let _ = writeln!(
            out,
            "{:<width$}  {:<7}{}",
            v.check,
            v.status.word(),
            v.detail
        );
        if let Some(fix) = &v.fix {
            let _ = writeln!(out, "{:<width$}  {:<7}fix: {fix}", "", "");
        }
    }
    let failed = verdicts.iter().filter(|v| v.status == Status::Fail).count();
    let warned = verdicts.iter().filter(|v| v.status == Status::Warn).count();
    let _ = writeln!(
        out,
        "\n{} checks: {} failed, {} warnings",
        verdicts.len(),
        failed,
        warned
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Pure verdicts.

/// The configuration file.
pub fn config_verdict(path: &str, loaded: Option<&Path>, error: Option<&str>) -> Verdict {
    match (loaded, error) {
        (_, Some(err)) => Verdict::new("config", Status::Fail, err.to_string()).fix(format!(
            "correct the line named above in {path}; `etho-backup config show` prints what is in effect"
        )),
        (Some(p), None) => Verdict::new("config", Status::Ok, format!("{} parses", p.display())),
        (None, None) => Verdict::new(
            "config",
            Status::Ok,
            format!("{path} not present: defaults in effect"),
        ),
    }
}

/// What a probe of a folder saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirProbe {
    /// Missing.
    Missing,
    /// Exists but is not a directory.
    NotADirectory,
    /// A test file could not be created in it.
    NotWritable(String),
    /// Writable, with this many bytes free.
    Writable {
        /// Bytes available to unprivileged users.
        free: u64,
    },
}

/// A results or videos folder.
pub fn dir_verdict(what: &str, dir: &Path, probe: &DirProbe, min_free: u64) -> Verdict {
    let d = dir.display();
    match probe {
        DirProbe::Missing => Verdict::new(what, Status::Fail, format!("{d} does not exist")).fix(
            format!("mkdir -p {d} (or point `results-dir`/`videos-dir` at the existing archive)"),
        ),
        DirProbe::NotADirectory => {
            Verdict::new(what, Status::Fail, format!("{d} is not a directory"))
                .fix("point `results-dir`/`videos-dir` at a directory")
        }
        DirProbe::NotWritable(err) => {
            Verdict::new(what, Status::Fail, format!("{d} is not writable: {err}"))
                .fix(format!("chown -R etho-backup: {d}"))
        }
        DirProbe::Writable { free } if *free < min_free => Verdict::new(
            what,
            Status::Fail,
            format!("{d}: writable, only {} free", format_bytes(*free)),
        )
        .fix(format!(
            "free space on {d}'s filesystem (at least {} wanted)",
            format_bytes(min_free)
        )),
        DirProbe::Writable { free } => Verdict::new(
            what,
            Status::Ok,
            format!("{d}: writable, {} free", format_bytes(*free)),
        ),
    }
}

/// The ssh private key: present, and readable by its owner only.
pub fn key_verdict(key: &Path, mode: Option<u32>) -> Verdict {
    let k = key.display();
    match mode {
        None => Verdict::new("ssh key", Status::Fail, format!("{k} does not exist")).fix(format!(
            "ssh-keygen -t ed25519 -N '' -f {k}, then ssh-copy-id -i {k} ethoscope@<device> for each device"
        )),
        Some(m) if m & 0o077 != 0 => Verdict::new(
            "ssh key",
            Status::Fail,
            format!("{k} has mode {:04o}; ssh refuses a key others can read", m & 0o7777),
        )
        .fix(format!("chmod 600 {k}")),
        Some(m) => Verdict::new(
            "ssh key",
            Status::Ok,
            format!("{k}, mode {:04o}", m & 0o7777),
        ),
    }
}

/// The pinned host keys: `None` when the file does not exist yet.
pub fn known_hosts_verdict(path: &Path, entries: Option<usize>) -> Verdict {
    let p = path.display();
    match entries {
        None => Verdict::new(
            "known hosts",
            Status::Warn,
            format!("{p} does not exist yet: host keys are pinned at each device's first backup"),
        )
        .fix(format!("to pin them now: ssh-keyscan <device> >> {p}")),
        Some(n) => Verdict::new("known hosts", Status::Ok, format!("{p}: {n} pinned keys")),
    }
}

/// The node's `GET /devices`.
pub fn node_verdict(url: &str, result: &Result<(usize, usize), String>) -> Verdict {
    match result {
        Ok((n, rejected)) => Verdict::new(
            "node /devices",
            Status::Ok,
            format!("{url}: {n} devices{}", if *rejected > 0 { format!(", {rejected} entries rejected") } else { String::new() }),
        ),
        Err(e) => Verdict::new("node /devices", Status::Fail, format!("{url}: {e}")).fix(
            "start the node (etho-backup-node.service, or upstream's ethoscope_node.service), or set `server` in [mysql-backup] and [rsync-backup]",
        ),
    }
}

/// What one ssh call (`ssh … HOST command -v rsync`) returned: its exit code and stderr. Host
/// keys are pinned under the machine id (`pinned_as`), whatever the device's address.
pub fn ssh_verdicts(
    name: &str,
    host: &str,
    pinned_as: &str,
    code: Option<i32>,
    stderr: &str,
) -> Vec<Verdict> {
    let reason = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim();
    let ssh = format!("{name} ssh");
    let rsync = format!("{name} rsync");
    match code {
        Some(0) => vec![
            Verdict::new(ssh, Status::Ok, format!("{host}: BatchMode login works")),
            Verdict::new(rsync, Status::Ok, "rsync is installed on the device"),
        ],
        Some(255) | None => {
            let fix = if stderr.contains("IDENTIFICATION HAS CHANGED") {
                format!("the device's host key changed; if it was reinstalled, ssh-keygen -R {pinned_as} -f <known hosts> (if not, another machine answers with this device's id)")
            } else if stderr.contains("Permission denied") {
                format!("install the key on the device: ssh-copy-id -i <ssh key> {host}")
            } else {
                "check that the device is on and its sshd runs".to_string()
            };
            vec![
                Verdict::new(ssh, Status::Fail, format!("{host}: {reason}")).fix(fix),
                Verdict::new(rsync, Status::Skip, "not checked (no ssh)"),
            ]
        }
        Some(_) => vec![
            Verdict::new(ssh, Status::Ok, format!("{host}: BatchMode login works")),
            Verdict::new(rsync, Status::Fail, "rsync is not installed on the device")
                .fix("on the device: apt-get install rsync (or pacman -S rsync)"),
        ],
    }
}

/// An rsync daemon source (`rsync --list-only`).
pub fn rsync_daemon_verdict(name: &str, source: &str, result: &Result<(), String>) -> Verdict {
    let check = format!("{name} rsync");
    match result {
        Ok(()) => Verdict::new(check, Status::Ok, format!("{source} answers")),
        Err(e) => Verdict::new(check, Status::Fail, format!("{source}: {e}"))
            .fix("check the device's rsync daemon and the `source` setting of [rsync-backup]"),
    }
}

/// The MariaDB login (`None`: not a MariaDB device).
pub fn mariadb_verdict(
    name: &str,
    report: DatabaseReport,
    login: &str,
    result: Option<&Result<(), String>>,
) -> Verdict {
    let check = format!("{name} MariaDB");
    match (report, result) {
        (DatabaseReport::Absent, _) => {
            Verdict::new(check, Status::Skip, "the device reports no MariaDB database")
        }
        (DatabaseReport::Unknown, _) => Verdict::new(
            check,
            Status::Warn,
            "the node has not received the device's database list yet",
        )
        .fix("run doctor again in a minute"),
        (DatabaseReport::Present, Some(Ok(()))) | (DatabaseReport::Present, None) => {
            Verdict::new(check, Status::Ok, format!("{login}: login works"))
        }
        (DatabaseReport::Present, Some(Err(e))) => {
            Verdict::new(check, Status::Fail, format!("{login}: {e}")).fix(
                "on the device: CREATE USER 'node'@'%' IDENTIFIED BY 'node'; GRANT SELECT ON *.* TO 'node'@'%' (or set mysql-user/mysql-password in [mysql-backup])",
            )
        }
    }
}

/// The device's clock against this node's (`skew` = device − node, in seconds).
pub fn clock_verdict(name: &str, skew: &Result<f64, String>, max: f64) -> Verdict {
    let check = format!("{name} clock");
    match skew {
        Ok(s) if s.abs() <= max => {
            Verdict::new(check, Status::Ok, format!("{:+.1} s from this node", s))
        }
        Ok(s) => Verdict::new(
            check,
            Status::Fail,
            format!(
                "{:.1} s {} this node (more than {max:.0} s)",
                s.abs(),
                if *s > 0.0 { "ahead of" } else { "behind" }
            ),
        )
        .fix("enable NTP on the device and on this node: timedatectl set-ntp true"),
        Err(e) => Verdict::new(check, Status::Warn, format!("not measured: {e}")),
    }
}

/// A daemon's `GET /status`.
pub fn status_verdict(what: &str, unit: &str, url: &str, result: &Result<(), String>) -> Verdict {
    let check = format!("{what} /status");
    match result {
        Ok(()) => Verdict::new(check, Status::Ok, format!("{url} answers")),
        Err(e) => Verdict::new(check, Status::Fail, format!("{url}: {e}")).fix(format!(
            "systemctl start {unit}; journalctl -u {unit} says why it stopped"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Probes.

fn probe_dir(dir: &Path) -> DirProbe {
    match std::fs::metadata(dir) {
        Err(_) => return DirProbe::Missing,
        Ok(m) if !m.is_dir() => return DirProbe::NotADirectory,
        Ok(_) => {}
    }
    if let Err(e) = tempfile::Builder::new()
        .prefix(".etho-backup-doctor")
        .tempfile_in(dir)
    {
        return DirProbe::NotWritable(e.to_string());
    }
    let free = nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
        .unwrap_or(0);
    DirProbe::Writable { free }
}

fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(etho_http::client(timeout)?)
}

/// `GET url` answered 2xx with a JSON document of at most 16 MiB, within `timeout`.
async fn get_json(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let url = reqwest::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
    etho_http::fetch_json(client, &url, 16 << 20, timeout)
        .await
        .map_err(|e| etho_model::error_chain(&e))
}

async fn run_tool(program: &str, args: &[String], timeout: Duration) -> (Option<i32>, String) {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(timeout, child).await {
        Ok(Ok(out)) => (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Ok(Err(e)) => (None, format!("cannot run {program}: {e}")),
        Err(_) => (None, format!("no answer within {} s", timeout.as_secs())),
    }
}

/// `ssh … user@host command -v rsync`, with a throw-away copy of the pinned keys looked up under
/// the machine id as the daemon does (doctor learns no key; a changed key still fails).
async fn probe_ssh(
    config: &RsyncBackupConfig,
    host: &str,
    machine_id: &str,
    timeout: Duration,
) -> (Option<i32>, String) {
    let Ok(scratch) = tempfile::NamedTempFile::new() else {
        return (None, "cannot create a temporary known-hosts file".into());
    };
    let _ = std::fs::copy(&config.ssh.known_hosts, scratch.path());
    let mut args = Vec::new();
    if let Some(port) = config.ssh.port {
        args.extend(["-p".to_string(), port.to_string()]);
    }
    args.extend([
        "-i".to_string(),
        config.ssh.key.display().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        format!("ConnectTimeout={}", timeout.as_secs().max(1)),
        "-o".into(),
        "StrictHostKeyChecking=accept-new".into(),
        "-o".into(),
        format!("HostKeyAlias={machine_id}"),
        "-o".into(),
        format!("UserKnownHostsFile={}", scratch.path().display()),
        host.to_string(),
        "command -v rsync".into(),
    ]);
    run_tool(&config.ssh.program, &args, timeout + Duration::from_secs(2)).await
}

async fn probe_mariadb(
    ip: std::net::IpAddr,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    timeout: Duration,
) -> Result<(), String> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(ip.to_string())
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .db_name(Some(db))
        .prefer_socket(false);
    let attempt = async {
        let mut conn = mysql_async::Conn::new(opts)
            .await
            .map_err(|e| e.to_string())?;
        let one: Option<u8> = conn
            .query_first("SELECT 1")
            .await
            .map_err(|e| e.to_string())?;
        let _ = conn.disconnect().await;
        one.map(|_| ())
            .ok_or_else(|| "SELECT 1 returned nothing".to_string())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", timeout.as_secs())))
}

/// Device clock minus ours, from the device's own `/data/<id>` `current_timestamp`.
async fn probe_clock(
    client: &reqwest::Client,
    device: &DeviceInfo,
    timeout: Duration,
) -> Result<f64, String> {
    let port = device
        .raw
        .get("port")
        .and_then(serde_json::Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(9000);
    let url = format!(
        "http://{}/data/{}",
        SocketAddr::new(device.ip, port),
        device.id
    );
    let before = now_f64();
    let doc = get_json(client, &url, timeout).await?;
    let after = now_f64();
    let theirs = doc
        .get("current_timestamp")
        .and_then(serde_json::Value::as_f64)
        .ok_or("the device reports no current_timestamp")?;
    Ok(theirs - (before + after) / 2.0)
}

fn now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// Running it.

/// The settings a unit's `ExecStart` (no flags) would run a subcommand with.
fn unit_args<A: FromArgMatches>(config: Option<&str>, name: &str) -> anyhow::Result<A> {
    let cmd = crate::Cli::command();
    let parsed = match settings::settings_of(&cmd, config, name, &[]) {
        Ok(p) => p,
        Err(ParseFailure::Clap(e)) => anyhow::bail!("[{name}]: {e}"),
        Err(ParseFailure::Config(e)) => return Err(e),
    };
    let (_, sub) = parsed
        .matches
        .subcommand()
        .ok_or_else(|| anyhow::anyhow!("no {name} settings"))?;
    Ok(A::from_arg_matches(sub)?)
}

fn status_url(listen: &str, port: u16) -> String {
    match crate::daemon_cli::listen_addr(listen, port) {
        Ok(mut addr) => {
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}/status")
        }
        Err(_) => format!("http://{listen}/status"),
    }
}

/// Runs every check and prints the table.
pub async fn run(
    args: Args,
    config: Option<&str>,
    file: Option<ConfigFile>,
    config_error: Option<String>,
) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    // With a broken file the table still shows everything else, on defaults.
    let settings_source = if config_error.is_some() {
        Some("none")
    } else {
        config
    };
    let path = config.unwrap_or(settings::DEFAULT_PATH);
    let mut rows = vec![config_verdict(
        path,
        file.as_ref().map(ConfigFile::path),
        config_error.as_deref(),
    )];
    let mysql: crate::mysql_backup::Args = unit_args(settings_source, "mysql-backup")?;
    let rsync: crate::rsync_backup::Args = unit_args(settings_source, "rsync-backup")?;
    let engine = crate::rsync_backup::engine_config(&rsync)?;
    let min_free = args.min_free_gib.saturating_mul(1 << 30);
    let mirror = crate::mysql_backup::mirror_config(&mysql)?;
    rows.extend(local_rows(&engine, &mirror.results_dir, min_free));
    rows.extend(node_rows(&engine, &mysql, timeout, args.max_clock_skew as f64).await?);
    rows.extend(daemon_rows(&mysql, &rsync, timeout).await?);
    print!("{}", render(&rows));
    Ok(if rows.iter().any(|r| r.status == Status::Fail) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The node's own directories (free space, writable) and, with ssh, the key and pinned hosts.
fn local_rows(engine: &RsyncBackupConfig, mysql_results: &Path, min_free: u64) -> Vec<Verdict> {
    let mut rows = Vec::new();
    rows.push(dir_verdict(
        "results dir",
        &engine.results_dir,
        &probe_dir(&engine.results_dir),
        min_free,
    ));
    rows.push(dir_verdict(
        "videos dir",
        &engine.videos_dir,
        &probe_dir(&engine.videos_dir),
        min_free,
    ));
    if mysql_results != engine.results_dir {
        rows.push(dir_verdict(
            "mysql results dir",
            mysql_results,
            &probe_dir(mysql_results),
            min_free,
        ));
    }
    let ssh = engine.source.transport() == Transport::Ssh;
    if ssh {
        let mode = std::fs::metadata(&engine.ssh.key)
            .ok()
            .map(|m| m.permissions().mode());
        rows.push(key_verdict(&engine.ssh.key, mode));
        let pinned = std::fs::read_to_string(&engine.ssh.known_hosts)
            .ok()
            .map(|t| {
                t.lines()
                    .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                    .count()
            });
        rows.push(known_hosts_verdict(&engine.ssh.known_hosts, pinned));
    }
    rows
}

/// Whether the node answers `/devices`, then each device's rows.
async fn node_rows(
    engine: &RsyncBackupConfig,
    mysql: &crate::mysql_backup::Args,
    timeout: Duration,
    max_skew: f64,
) -> anyhow::Result<Vec<Verdict>> {
    let mut rows = Vec::new();
    let node = NodeClient::new(&mysql.common.server, timeout)?;
    let found = node.fetch().await;
    rows.push(node_verdict(
        node.url(),
        &found
            .as_ref()
            .map(|f| (f.devices.len(), f.rejected.len()))
            .map_err(|e| etho_model::error_chain(e)),
    ));
    if let Ok(found) = &found {
        let client = http_client(timeout)?;
        for device in &found.devices {
            rows.extend(device_rows(device, engine, mysql, &client, timeout, max_skew).await);
        }
    }
    Ok(rows)
}

/// Whether each backup daemon answers its `GET /status`.
async fn daemon_rows(
    mysql: &crate::mysql_backup::Args,
    rsync: &crate::rsync_backup::Args,
    timeout: Duration,
) -> anyhow::Result<Vec<Verdict>> {
    let mut rows = Vec::new();
    let client = http_client(timeout)?;
    for (what, unit, url) in [
        (
            "mysql-backup",
            "etho-backup-mysql",
            status_url(&mysql.common.listen, mysql.port),
        ),
        (
            "rsync-backup",
            "etho-backup-rsync",
            status_url(&rsync.common.listen, rsync.port),
        ),
    ] {
        let result = get_json(&client, &url, timeout).await.map(|_| ());
        rows.push(status_verdict(what, unit, &url, &result));
    }
    Ok(rows)
}

/// The per-device rows; devices the daemons would not attempt get one `skip` row.
async fn device_rows(
    device: &DeviceInfo,
    engine: &RsyncBackupConfig,
    mysql: &crate::mysql_backup::Args,
    client: &reqwest::Client,
    timeout: Duration,
    max_skew: f64,
) -> Vec<Verdict> {
    let name = device.name.as_str();
    if let Err(reason) = device.backup_eligibility() {
        return vec![Verdict::new(
            name,
            Status::Skip,
            format!("not backed up: {reason}"),
        )];
    }
    let mut rows = Vec::new();
    let source = engine.source.expand(device);
    match engine.source.transport() {
        Transport::Ssh => {
            let host = source.split(':').next().unwrap_or(&source).to_string();
            let (code, stderr) = probe_ssh(engine, &host, &device.id, timeout).await;
            rows.extend(ssh_verdicts(name, &host, &device.id, code, &stderr));
        }
        Transport::Daemon => {
            let list = format!("{}/", source.trim_end_matches('/'));
            let args = vec![
                "--list-only".to_string(),
                format!("--contimeout={}", timeout.as_secs().max(1)),
                list.clone(),
            ];
            let (code, stderr) = run_tool(
                &engine.rsync_program.display().to_string(),
                &args,
                timeout + Duration::from_secs(2),
            )
            .await;
            let result = match code {
                Some(0) => Ok(()),
                _ => Err(stderr
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("failed")
                    .trim()
                    .to_string()),
            };
            rows.push(rsync_daemon_verdict(name, &list, &result));
        }
        Transport::Local => {}
    }
    let report = device.mariadb_report();
    let db = format!("{}_db", device.name);
    let login = format!(
        "{}@{}:{} ({db})",
        mysql.mysql_user, device.ip, mysql.mysql_port
    );
    let result = if report == DatabaseReport::Present {
        Some(
            probe_mariadb(
                device.ip,
                mysql.mysql_port,
                &mysql.mysql_user,
                &mysql.mysql_password,
                &db,
                timeout,
            )
            .await,
        )
    } else {
        None
    };
    rows.push(mariadb_verdict(name, report, &login, result.as_ref()));
    rows.push(clock_verdict(
        name,
        &probe_clock(client, device, timeout).await,
        max_skew,
    ));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_wording() {
        let rows = vec![
            config_verdict(
                "/etc/etho-backup/etho-backup.toml",
                Some(Path::new("/etc/etho-backup/etho-backup.toml")),
                None,
            ),
            dir_verdict(
                "results dir",
                Path::new("/r"),
                &DirProbe::Writable { free: 3 << 40 },
                5 << 30,
            ),
            dir_verdict("videos dir", Path::new("/v"), &DirProbe::Missing, 5 << 30),
            key_verdict(Path::new("/k"), Some(0o100644)),
            clock_verdict("ETHOSCOPE_002", &Ok(-3600.04), 30.0),
        ];
        assert_eq!(
            render(&rows),
            "\
CHECK                RESULT DETAIL
config               ok     /etc/etho-backup/etho-backup.toml parses
results dir          ok     /r: writable, 3.0 TB free
videos dir           FAIL   /v does not exist
                            fix: mkdir -p /v (or point `results-dir`/`videos-dir` at the existing archive)
ssh key              FAIL   /k has mode 0644; ssh refuses a key others can read
                            fix: chmod 600 /k
ETHOSCOPE_002 clock  FAIL   3600.0 s behind this node (more than 30 s)
                            fix: enable NTP on the device and on this node: timedatectl set-ntp true

5 checks: 3 failed, 0 warnings
"
        );
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn one_failure_per_check() {
        let ssh = ssh_verdicts(
            "ETHOSCOPE_001",
            "ethoscope@10.0.0.5",
            ID,
            Some(255),
            "ethoscope@10.0.0.5: Permission denied (publickey).\n",
        );
        assert_eq!(ssh[0].status, Status::Fail);
        assert_eq!(
            ssh[0].detail,
            "ethoscope@10.0.0.5: ethoscope@10.0.0.5: Permission denied (publickey)."
        );
        assert_eq!(
            ssh[0].fix.as_deref(),
            Some("install the key on the device: ssh-copy-id -i <ssh key> ethoscope@10.0.0.5")
        );
        assert_eq!(ssh[1].status, Status::Skip);
        let changed = ssh_verdicts("E", "ethoscope@10.0.0.5", ID, Some(255), "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.\n");
        assert!(changed[0].fix.as_deref().unwrap().starts_with(
            "the device's host key changed; if it was reinstalled, ssh-keygen -R 0123456789abcdef0123456789abcdef"
        ));
        let no_rsync = ssh_verdicts("E", "ethoscope@10.0.0.5", ID, Some(1), "");
        assert_eq!(
            (no_rsync[0].status, no_rsync[1].status),
            (Status::Ok, Status::Fail)
        );
        assert_eq!(no_rsync[1].detail, "rsync is not installed on the device");
        let ok = ssh_verdicts("E", "h", ID, Some(0), "");
        assert!(ok.iter().all(|v| v.status == Status::Ok));

        let login = "node@10.0.0.5:3306 (ETHOSCOPE_001_db)";
        let failed = mariadb_verdict(
            "E",
            DatabaseReport::Present,
            login,
            Some(&Err("Access denied".into())),
        );
        assert_eq!(failed.status, Status::Fail);
        assert_eq!(
            failed.detail,
            "node@10.0.0.5:3306 (ETHOSCOPE_001_db): Access denied"
        );
        assert_eq!(
            mariadb_verdict("E", DatabaseReport::Absent, login, None).status,
            Status::Skip
        );
        assert_eq!(
            mariadb_verdict("E", DatabaseReport::Unknown, login, None).status,
            Status::Warn
        );

        assert_eq!(
            clock_verdict("E", &Ok(29.9), 30.0).detail,
            "+29.9 s from this node"
        );
        assert_eq!(
            clock_verdict("E", &Ok(31.0), 30.0).detail,
            "31.0 s ahead of this node (more than 30 s)"
        );
        assert_eq!(
            clock_verdict("E", &Err("x".into()), 30.0).status,
            Status::Warn
        );

        let node = node_verdict(
            "http://localhost/devices",
            &Err("connection refused".into()),
        );
        assert_eq!(node.detail, "http://localhost/devices: connection refused");
        assert_eq!(
            node_verdict("u", &Ok((3, 1))).detail,
            "u: 3 devices, 1 entries rejected"
        );

        let down = status_verdict(
            "rsync-backup",
            "etho-backup-rsync",
            "http://127.0.0.1:8093/status",
            &Err("connection refused".into()),
        );
        assert_eq!(down.fix.as_deref(), Some("systemctl start etho-backup-rsync; journalctl -u etho-backup-rsync says why it stopped"));
        let broken = config_verdict("/c.toml", None, Some("/c.toml:3: node.lisen: unknown key"));
        assert_eq!(broken.status, Status::Fail);
        assert_eq!(
            known_hosts_verdict(Path::new("/kh"), None).status,
            Status::Warn
        );
        assert_eq!(
            dir_verdict(
                "d",
                Path::new("/d"),
                &DirProbe::Writable { free: 1 << 30 },
                5 << 30
            )
            .detail,
            "/d: writable, only 1.0 GB free"
        );
        assert_eq!(
            dir_verdict(
                "d",
                Path::new("/d"),
                &DirProbe::NotWritable("Permission denied".into()),
                0
            )
            .fix
            .as_deref(),
            Some("chown -R etho-backup: /d")
        );
        assert_eq!(
            rsync_daemon_verdict(
                "E",
                "rsync://h/m/",
                &Err("@ERROR: Unknown module 'm'".into())
            )
            .status,
            Status::Fail
        );
    }
}
