//! A private `mariadbd`: its own data directory, loopback addresses only, a free port, the same
//! accounts as an ethoscope.
//!
//! Tests and the simulator need a real server (the backup daemon talks the MariaDB wire protocol
//! and relies on InnoDB snapshots), but must not touch the machine's own server or listen on a
//! public interface. [`MariaDbBuilder`] runs `mariadb-install-db` into a fresh directory and starts
//! `mariadbd --no-defaults` on it, bound only to the addresses given (127.0.0.1 by default; an
//! unspecified address such as 0.0.0.0 is refused). Readiness is checked by connecting, never by
//! waiting a fixed time.
//!
//! Accounts, as on a device: `node`@`%` with `SELECT` on `*.*` (what the backup daemon uses) and
//! `ethoscope`@`%` with all privileges (what the device's result writer uses). They are created by
//! an init file on every start, so grant tables are in force (`--skip-grant-tables` is never
//! used).
//!
//! [`MariaDb`] stops its server when dropped (kill and wait). It can also be killed on purpose
//! ([`MariaDb::kill`]) to test a server dying mid-copy, then started again on the same data
//! directory and port ([`MariaDb::restart`]).

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The read-only account the backup daemon uses (as on a device).
pub const NODE_USER: &str = "node";
/// Password of [`NODE_USER`].
pub const NODE_PASSWORD: &str = "node";
/// The read-write account the device's result writer uses.
pub const ADMIN_USER: &str = "ethoscope";
/// Password of [`ADMIN_USER`].
pub const ADMIN_PASSWORD: &str = "ethoscope";

const INIT_SQL: &str = "\
CREATE USER IF NOT EXISTS 'node'@'%' IDENTIFIED BY 'node';
GRANT SELECT ON *.* TO 'node'@'%';
CREATE USER IF NOT EXISTS 'ethoscope'@'%' IDENTIFIED BY 'ethoscope';
GRANT ALL PRIVILEGES ON *.* TO 'ethoscope'@'%' WITH GRANT OPTION;
";

/// How to start a [`MariaDb`].
#[derive(Debug, Clone)]
pub struct MariaDbBuilder {
    bind: Vec<IpAddr>,
    port: Option<u16>,
    datadir: Option<PathBuf>,
    server_binary: PathBuf,
    install_binary: PathBuf,
    extra_args: Vec<String>,
    startup_timeout: Duration,
}

impl Default for MariaDbBuilder {
    fn default() -> Self {
        MariaDbBuilder {
            bind: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            port: None,
            datadir: None,
            server_binary: find_binary("mariadbd", &["/usr/sbin/mariadbd", "/usr/bin/mariadbd"]),
            install_binary: find_binary("mariadb-install-db", &["/usr/bin/mariadb-install-db"]),
            extra_args: Vec::new(),
            startup_timeout: Duration::from_secs(60),
        }
    }
}

fn find_binary(name: &str, candidates: &[&str]) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

impl MariaDbBuilder {
    /// Defaults: bound to 127.0.0.1, a free port, a temporary data directory removed on drop.
    pub fn new() -> MariaDbBuilder {
        MariaDbBuilder::default()
    }

    /// Addresses to listen on (one or more; MariaDB ≥ 10.11 accepts a list). Unspecified
    /// addresses (0.0.0.0, ::) are refused by [`MariaDbBuilder::start`].
    pub fn bind_addresses(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> MariaDbBuilder {
        self.bind = addrs.into_iter().collect();
        self
    }

    /// A fixed port instead of a free one.
    pub fn port(mut self, port: u16) -> MariaDbBuilder {
        self.port = Some(port);
        self
    }

    /// A persistent data directory (initialised if empty, kept on drop) instead of a temporary one.
    pub fn datadir(mut self, dir: impl Into<PathBuf>) -> MariaDbBuilder {
        self.datadir = Some(dir.into());
        self
    }

    /// The `mariadbd` binary (default: `/usr/sbin/mariadbd`).
    pub fn server_binary(mut self, path: impl Into<PathBuf>) -> MariaDbBuilder {
        self.server_binary = path.into();
        self
    }

    /// One more `mariadbd` option, e.g. `--innodb-buffer-pool-size=512M`.
    pub fn arg(mut self, arg: impl Into<String>) -> MariaDbBuilder {
        self.extra_args.push(arg.into());
        self
    }

    /// How long to wait for the server to accept connections (default 60 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> MariaDbBuilder {
        self.startup_timeout = timeout;
        self
    }

    /// Initialises the data directory if needed, starts the server and waits until the `ethoscope`
    /// account can connect.
    pub async fn start(self) -> anyhow::Result<MariaDb> {
        if self.bind.is_empty() {
            bail!("mariadbd needs at least one bind address");
        }
        if let Some(bad) = self.bind.iter().find(|a| a.is_unspecified()) {
            bail!("refusing to bind mariadbd to the unspecified address {bad}: give specific (loopback) addresses");
        }
        let rundir = tempfile::Builder::new()
            .prefix("etho-mariadb-")
            .tempdir()
            .context("cannot create a run directory for mariadbd")?;
        let (datadir, temp_datadir) = match &self.datadir {
            Some(d) => (d.clone(), false),
            None => (rundir.path().join("data"), true),
        };
        // Its own tmpdir: mariadbd deletes every `#sql*` file in its tmpdir at startup, which
        // would break other servers' internal temporary tables if they shared /tmp. The same
        // holds for the bootstrap server `mariadb-install-db` runs, so it gets this tmpdir too.
        let tmpdir = rundir.path().join("tmp");
        fs::create_dir_all(&tmpdir)
            .with_context(|| format!("cannot create {}", tmpdir.display()))?;
        let needs_install = !datadir.join("mysql").is_dir();
        if needs_install {
            install_datadir(&self.install_binary, &datadir, &tmpdir)?;
        }
        let init_file = rundir.path().join("init.sql");
        fs::write(&init_file, INIT_SQL)
            .with_context(|| format!("cannot write {}", init_file.display()))?;

        let mut server = MariaDb {
            builder: self,
            rundir,
            datadir,
            temp_datadir,
            port: 0,
            child: None,
        };
        // A free port can be taken by someone else between our probe and mariadbd's bind: retry
        // with another one when the log says so (only when the caller did not fix the port).
        let mut attempts = 0;
        loop {
            attempts += 1;
            server.port = match server.builder.port {
                Some(p) => p,
                None => free_port(server.builder.bind[0])?,
            };
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(err) => {
                    let port_taken = server.log_tail().contains("Address already in use");
                    if port_taken && server.builder.port.is_none() && attempts < 5 {
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }
}

fn install_datadir(install_binary: &Path, datadir: &Path, tmpdir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(datadir)
        .with_context(|| format!("cannot create data directory {}", datadir.display()))?;
    let out = Command::new(install_binary)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .arg(format!("--user={}", current_user()))
        .arg("--auth-root-authentication-method=socket")
        .arg("--skip-test-db")
        // Passed through to the bootstrap mariadbd.
        .arg(format!("--tmpdir={}", tmpdir.display()))
        .env("TMPDIR", tmpdir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", install_binary.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            install_binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The name of the effective user, for `--user` (mariadbd refuses to run as root without it).
fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".to_string())
}

/// A port that was free on `addr` a moment ago.
pub fn free_port(addr: IpAddr) -> anyhow::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::new(addr, 0))
        .with_context(|| format!("cannot find a free port on {addr}"))?;
    Ok(listener.local_addr()?.port())
}

/// A running (or deliberately killed) private `mariadbd`. See the module docs.
#[derive(Debug)]
pub struct MariaDb {
    builder: MariaDbBuilder,
    rundir: tempfile::TempDir,
    datadir: PathBuf,
    temp_datadir: bool,
    port: u16,
    child: Option<Child>,
}

impl MariaDb {
    /// Starts a server with the defaults of [`MariaDbBuilder::new`].
    pub async fn start() -> anyhow::Result<MariaDb> {
        MariaDbBuilder::new().start().await
    }

    /// The TCP port the server listens on (kept across [`MariaDb::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The first bind address.
    pub fn ip(&self) -> IpAddr {
        self.builder.bind[0]
    }

    /// Every bind address.
    pub fn bind_addresses(&self) -> &[IpAddr] {
        &self.builder.bind
    }

    /// First bind address and port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.port)
    }

    /// The data directory.
    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// Path of the server's error log (useful in test failure messages).
    pub fn log_path(&self) -> PathBuf {
        self.rundir.path().join("mariadbd.err")
    }

    /// Process id of the running server, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Connection options for `user`/`password` on the first bind address, optionally selecting a
    /// database. TCP only (no switch to the Unix socket), as a remote node would connect.
    pub fn opts(&self, user: &str, password: &str, db: Option<&str>) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname(self.ip().to_string())
            .tcp_port(self.port)
            .user(Some(user))
            .pass(Some(password))
            .db_name(db)
            .prefer_socket(false)
            .into()
    }

    /// Connection options of the read-write `ethoscope` account.
    pub fn admin_opts(&self, db: Option<&str>) -> Opts {
        self.opts(ADMIN_USER, ADMIN_PASSWORD, db)
    }

    /// Connection options of the read-only `node` account.
    pub fn node_opts(&self, db: Option<&str>) -> Opts {
        self.opts(NODE_USER, NODE_PASSWORD, db)
    }

    /// A new connection as the `ethoscope` account.
    pub async fn admin_conn(&self, db: Option<&str>) -> anyhow::Result<Conn> {
        Conn::new(self.admin_opts(db))
            .await
            .with_context(|| format!("cannot connect to mariadbd at {}", self.addr()))
    }

    /// True while the server process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server with SIGKILL and reaps it: the data directory stays as a crash left it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                signal(&child, Signal::SIGKILL)?;
            }
            child.wait().context("cannot reap mariadbd")?;
        }
        Ok(())
    }

    /// Stops the server cleanly (SIGTERM, then SIGKILL after `timeout`).
    pub async fn stop(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if matches!(child.try_wait(), Ok(None)) {
            signal(&child, Signal::SIGTERM)?;
            let deadline = Instant::now() + timeout;
            loop {
                if child.try_wait()?.is_some() {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            signal(&child, Signal::SIGKILL)?;
        }
        child.wait().context("cannot reap mariadbd")?;
        Ok(())
    }

    /// Starts the server again on the same data directory and port (killing it first if it still
    /// runs), and waits until it accepts connections. InnoDB recovers whatever a kill left.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.spawn_and_wait().await
    }

    fn command(&self) -> Command {
        let run = self.rundir.path();
        let binds: Vec<String> = self.builder.bind.iter().map(IpAddr::to_string).collect();
        let mut cmd = Command::new(&self.builder.server_binary);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.datadir.display()))
            .arg(format!("--socket={}", run.join("mariadbd.sock").display()))
            .arg(format!("--pid-file={}", run.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", self.log_path().display()))
            .arg(format!("--init-file={}", run.join("init.sql").display()))
            .arg(format!("--tmpdir={}", run.join("tmp").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--bind-address={}", binds.join(",")))
            .arg(format!("--user={}", current_user()))
            .arg("--skip-name-resolve")
            .arg("--skip-log-bin")
            .arg("--performance-schema=OFF")
            .arg("--max-allowed-packet=64M")
            .arg("--max-connections=500")
            .arg("--innodb-flush-log-at-trx-commit=2")
            .arg("--innodb-doublewrite=0")
            .args(&self.builder.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let _ = fs::remove_file(self.log_path());
        let child = self.command().spawn().with_context(|| {
            format!(
                "cannot start {} (is mariadb-server installed?)",
                self.builder.server_binary.display()
            )
        })?;
        self.child = Some(child);
        let deadline = Instant::now() + self.builder.startup_timeout;
        let opts = self.admin_opts(None);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "mariadbd exited during startup ({status}): {}",
                        self.log_tail()
                    );
                }
            }
            // Another test's server may have won the race for the same free port: only a server
            // answering with our own socket path is ours.
            let socket = self.rundir.path().join("mariadbd.sock");
            let attempt = tokio::time::timeout(Duration::from_secs(2), async {
                let mut conn = Conn::new(opts.clone()).await?;
                let answer: Option<String> = conn.query_first("SELECT @@socket").await?;
                conn.disconnect().await?;
                Ok::<Option<String>, mysql_async::Error>(answer)
            })
            .await;
            if let Ok(Ok(Some(answer))) = attempt {
                if Path::new(&answer) == socket {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let tail = self.log_tail();
                self.kill()?;
                bail!(
                    "mariadbd on {} did not accept connections within {:?}: {tail}",
                    self.addr(),
                    self.builder.startup_timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of the server's error log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

fn signal(child: &Child, sig: Signal) -> anyhow::Result<()> {
    let pid = i32::try_from(child.id()).context("mariadbd pid out of range")?;
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e).context("cannot signal mariadbd"),
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            if self.temp_datadir {
                // The data goes away with the run directory: no need for a clean shutdown.
                let _ = signal(&child, Signal::SIGKILL);
            } else {
                let _ = signal(&child, Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(20);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = signal(&child, Signal::SIGKILL);
            }
        }
        let _ = child.wait();
    }
}
