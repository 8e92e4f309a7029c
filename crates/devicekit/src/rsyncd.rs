//! A private `rsync --daemon` serving one device's data directory, the way an ethoscope exposes
//! `/ethoscope_data` to the node.
//!
//! The simulated fleet serves every simulated device's tree with one of these (each on its own
//! 127.0.0.x address), and the rsync backup engine's tests and benchmarks pull from it with the
//! real rsync client. So this is a real daemon with a generated configuration, not a stub:
//!
//! - module [`MODULE`] (`ethoscope_data`), read only, `use chroot = no`, numeric ids, no reverse
//!   DNS lookups, loopback clients only;
//! - runs in the foreground (`--no-detach`) in its own process group, so stopping it also stops
//!   the per-connection children that are serving a transfer;
//! - ready when [`RsyncDaemon::start_with`] returns: the listening socket answered with the rsync
//!   greeting (no sleeping);
//! - stopped (SIGKILL to the group, then reaped) on drop, or on demand with
//!   [`RsyncDaemon::kill`] for fault tests, and started again on the same port with
//!   [`RsyncDaemon::restart`].

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Name of the module an ethoscope exports its data directory under.
pub const MODULE: &str = "ethoscope_data";

/// How to run the daemon. [`Default`] gives 127.0.0.1, a free port and module [`MODULE`].
#[derive(Debug, Clone)]
pub struct RsyncdOptions {
    /// Listening address; must be a loopback address (127.0.0.0/8).
    pub address: Ipv4Addr,
    /// Fixed port, or `None` to pick a free one.
    pub port: Option<u16>,
    /// Module name.
    pub module: String,
    /// rsync's own protection for `use chroot = no`: symlinks are served with a
    /// `/rsyncd-munged/` prefix. On by default (rsync's default). Tests that need the device's
    /// symlinks to reach the client unchanged (as they would over ssh) turn it off.
    pub munge_symlinks: bool,
    /// Directory for the generated config and the log file; `None` creates a temporary one that is
    /// removed with the daemon.
    pub run_dir: Option<PathBuf>,
    /// The `rsync` executable.
    pub rsync_binary: PathBuf,
    /// How long to wait for the daemon to answer before giving up.
    pub ready_timeout: Duration,
    /// Refuse every client of the module (`@ERROR: access denied`), like a device whose rsync
    /// access is broken: the daemon runs, every transfer fails.
    pub refuse_clients: bool,
}

impl Default for RsyncdOptions {
    fn default() -> Self {
        RsyncdOptions {
            address: Ipv4Addr::LOCALHOST,
            port: None,
            module: MODULE.to_string(),
            munge_symlinks: true,
            run_dir: None,
            rsync_binary: PathBuf::from("rsync"),
            ready_timeout: Duration::from_secs(10),
            refuse_clients: false,
        }
    }
}

/// A running `rsync --daemon`. Killed and reaped when dropped.
#[derive(Debug)]
pub struct RsyncDaemon {
    child: Option<Child>,
    addr: SocketAddr,
    root: PathBuf,
    options: RsyncdOptions,
    config_path: PathBuf,
    log_path: PathBuf,
    _run_dir: Option<tempfile::TempDir>,
}

impl RsyncDaemon {
    /// Serves `root` on 127.0.0.1 and a free port.
    pub fn start(root: &Path) -> anyhow::Result<RsyncDaemon> {
        Self::start_with(root, RsyncdOptions::default())
    }

    /// Serves `root` as configured; returns once the daemon answers on its port.
    pub fn start_with(root: &Path, options: RsyncdOptions) -> anyhow::Result<RsyncDaemon> {
        if !options.address.is_loopback() {
            bail!(
                "rsync daemon address {} is not a loopback address",
                options.address
            );
        }
        let root = fs::canonicalize(root)
            .with_context(|| format!("rsync daemon root {}", root.display()))?;
        if !root.is_dir() {
            bail!("rsync daemon root {} is not a directory", root.display());
        }
        check_config_value("module name", &options.module)?;
        let (run_dir, temp) = match &options.run_dir {
            Some(dir) => {
                fs::create_dir_all(dir)
                    .with_context(|| format!("creating rsync daemon dir {}", dir.display()))?;
                (dir.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("etho-rsyncd-")
                    .tempdir()
                    .context("creating a temporary dir for the rsync daemon")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let config_path = run_dir.join("rsyncd.conf");
        let log_path = run_dir.join("rsyncd.log");
        fs::write(&config_path, render_config(&root, &log_path, &options)?)
            .with_context(|| format!("writing {}", config_path.display()))?;

        let mut daemon = RsyncDaemon {
            child: None,
            addr: SocketAddr::new(IpAddr::V4(options.address), options.port.unwrap_or(0)),
            root,
            options,
            config_path,
            log_path,
            _run_dir: temp,
        };
        daemon.launch()?;
        Ok(daemon)
    }

    /// Starts the process; with an automatic port, retries on a fresh port if another process
    /// took the one we picked before rsync could bind it.
    fn launch(&mut self) -> anyhow::Result<()> {
        let attempts = if self.options.port.is_none() && self.addr.port() == 0 {
            5
        } else {
            1
        };
        let mut last_err = None;
        for _ in 0..attempts {
            let port = match self.addr.port() {
                0 => free_port(self.options.address)?,
                p => p,
            };
            let addr = SocketAddr::new(IpAddr::V4(self.options.address), port);
            match self.spawn_and_wait(addr) {
                Ok(()) => {
                    self.addr = addr;
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("rsync daemon did not start")))
    }

    fn spawn_and_wait(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.options.rsync_binary);
        cmd.arg("--daemon")
            .arg("--no-detach")
            .arg(format!("--config={}", self.config_path.display()))
            .arg(format!("--address={}", addr.ip()))
            .arg(format!("--port={}", addr.port()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().with_context(|| {
            format!("starting {} --daemon", self.options.rsync_binary.display())
        })?;
        self.child = Some(child);
        let deadline = Instant::now() + self.options.ready_timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    bail!(
                        "rsync daemon on {addr} exited at start ({status}); log: {}",
                        self.log_tail()
                    );
                }
            }
            if greets(addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                bail!(
                    "rsync daemon on {addr} did not answer within {:?}; log: {}",
                    self.options.ready_timeout,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Address the daemon listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `rsync://ADDR:PORT/MODULE`, the source prefix a client uses.
    pub fn url(&self) -> String {
        format!(
            "rsync://{}:{}/{}",
            self.addr.ip(),
            self.addr.port(),
            self.options.module
        )
    }

    /// The directory served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The daemon's log file (connections, transfers, errors).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Process id of the listening daemon, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the daemon process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the daemon and every connection it is serving (SIGKILL to its process group) and
    /// reaps it. Used by fault tests to cut a transfer mid-file. Idempotent.
    pub fn kill(&mut self) {
        self.stop();
    }

    /// Starts the daemon again on the same address and port (after [`RsyncDaemon::kill`]).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let addr = self.addr;
        // The old listening socket may linger briefly; rsync sets SO_REUSEADDR, so a retry loop
        // within the ready timeout covers it.
        let deadline = Instant::now() + self.options.ready_timeout;
        loop {
            match self.spawn_and_wait(addr) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        if lines.is_empty() {
            "(empty)".to_string()
        } else {
            lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
        }
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// rsync's config format takes values up to the end of the line, so a newline would inject
/// settings; everything else is literal.
fn check_config_value(what: &str, value: &str) -> anyhow::Result<()> {
    if value.is_empty() || value.contains(['\n', '\r', '\0']) || value.trim() != value {
        bail!("unusable {what} for an rsync daemon config: {value:?}");
    }
    Ok(())
}

fn render_config(root: &Path, log: &Path, options: &RsyncdOptions) -> anyhow::Result<String> {
    let root_s = root
        .to_str()
        .with_context(|| format!("non-UTF-8 path {}", root.display()))?;
    let log_s = log
        .to_str()
        .with_context(|| format!("non-UTF-8 path {}", log.display()))?;
    check_config_value("data directory", root_s)?;
    check_config_value("log file", log_s)?;
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    let mut out = String::new();
    let w = &mut out;
    use std::fmt::Write as _;
    let _ = writeln!(w, "# generated by etho-devicekit");
    let _ = writeln!(w, "log file = {log_s}");
    let _ = writeln!(w, "use chroot = no");
    let _ = writeln!(w, "read only = yes");
    let _ = writeln!(w, "list = yes");
    let _ = writeln!(w, "numeric ids = yes");
    let _ = writeln!(w, "reverse lookup = no");
    let _ = writeln!(w, "hosts allow = 127.0.0.0/8 ::1");
    let _ = writeln!(
        w,
        "munge symlinks = {}",
        if options.munge_symlinks { "yes" } else { "no" }
    );
    // Run as whoever started us: as root, rsync would otherwise switch to `nobody`, who cannot
    // read a private temp dir.
    let _ = writeln!(w, "uid = {uid}");
    let _ = writeln!(w, "gid = {gid}");
    let _ = writeln!(w);
    let _ = writeln!(w, "[{}]", options.module);
    let _ = writeln!(w, "    path = {root_s}");
    let _ = writeln!(w, "    comment = ethoscope data");
    if options.refuse_clients {
        // The module's own allow list replaces the global one; nobody matches it.
        let _ = writeln!(w, "    hosts allow = 0.0.0.0/32");
        let _ = writeln!(w, "    hosts deny = *");
    }
    Ok(out)
}

/// A port that was free on `address` a moment ago.
fn free_port(address: Ipv4Addr) -> anyhow::Result<u16> {
    let listener = TcpListener::bind((address, 0))
        .with_context(|| format!("finding a free port on {address}"))?;
    Ok(listener.local_addr()?.port())
}

/// True when something on `addr` answers with the rsync daemon greeting.
fn greets(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    let ok = matches!(reader.read_line(&mut line), Ok(n) if n > 0) && line.starts_with("@RSYNCD:");
    // Say goodbye politely so the daemon's log shows no protocol error.
    let mut w = &stream;
    let _ = w.write_all(line.as_bytes());
    let _ = w.write_all(b"#list\n");
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_a_tree_and_stops_on_drop() {
        let data = tempfile::tempdir().unwrap();
        fs::create_dir_all(data.path().join("results/abc")).unwrap();
        fs::write(data.path().join("results/abc/f.txt"), b"hello").unwrap();
        let dest = tempfile::tempdir().unwrap();
        let daemon = RsyncDaemon::start(data.path()).unwrap();
        let addr = daemon.addr();
        assert!(addr.ip().is_loopback());
        let status = Command::new("rsync")
            .arg("-r")
            .arg(format!("{}/results/", daemon.url()))
            .arg(dest.path())
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            fs::read(dest.path().join("abc/f.txt")).unwrap(),
            b"hello".to_vec()
        );
        drop(daemon);
        assert!(
            TcpStream::connect(addr).is_err(),
            "daemon still listening after drop"
        );
    }

    /// `refuse_clients`: the daemon runs and greets, every transfer is refused with rsync's own
    /// words.
    #[test]
    fn a_refusing_daemon_denies_every_transfer() {
        let data = tempfile::tempdir().unwrap();
        fs::create_dir_all(data.path().join("results")).unwrap();
        let opts = RsyncdOptions {
            refuse_clients: true,
            ..RsyncdOptions::default()
        };
        let daemon = RsyncDaemon::start_with(data.path(), opts).unwrap();
        assert!(greets(daemon.addr()));
        let dest = tempfile::tempdir().unwrap();
        let out = Command::new("rsync")
            .arg("-r")
            .arg(format!("{}/results/", daemon.url()))
            .arg(dest.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(5), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("@ERROR: access denied"), "{stderr}");
    }

    #[test]
    fn kill_and_restart_on_the_same_port() {
        let data = tempfile::tempdir().unwrap();
        let opts = RsyncdOptions {
            address: Ipv4Addr::new(127, 0, 0, 7),
            ..RsyncdOptions::default()
        };
        let mut daemon = RsyncDaemon::start_with(data.path(), opts).unwrap();
        let addr = daemon.addr();
        assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)));
        assert!(daemon.is_running());
        daemon.kill();
        assert!(!daemon.is_running());
        assert!(!greets(addr));
        daemon.restart().unwrap();
        assert_eq!(daemon.addr(), addr);
        assert!(greets(addr));
    }

    #[test]
    fn refuses_non_loopback_and_injected_config() {
        let data = tempfile::tempdir().unwrap();
        let opts = RsyncdOptions {
            address: Ipv4Addr::new(10, 0, 0, 1),
            ..RsyncdOptions::default()
        };
        assert!(RsyncDaemon::start_with(data.path(), opts).is_err());
        let opts = RsyncdOptions {
            module: "x]\nread only = no".to_string(),
            ..RsyncdOptions::default()
        };
        assert!(RsyncDaemon::start_with(data.path(), opts).is_err());
    }
}
