//! Starting and steering a whole simulated fleet.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use etho_devicekit::mariadb::{MariaDb, MariaDbBuilder, ADMIN_PASSWORD, ADMIN_USER};
use etho_devicekit::rsyncd::{RsyncDaemon, RsyncdOptions, MODULE};
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{DbKind, FleetConfig, MariaDbTarget, Role};
use crate::device::SimDevice;
use crate::driver::Driver;
use crate::state::RunStatus;

/// Where the backup side reaches a fleet's MariaDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MariaDbInfo {
    /// Port on every MariaDB device's address.
    pub port: u16,
    /// Server version.
    pub version: String,
    /// Whether the fleet started this server (`--mariadb auto`).
    pub private: bool,
}

/// One line of the fleet's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    /// `ETHOSCOPE_NNN`.
    pub name: String,
    /// Machine id.
    pub id: String,
    /// Loopback address.
    pub ip: Ipv4Addr,
    /// HTTP API address.
    pub http: SocketAddr,
    /// `mariadb`, `sqlite` or `video`.
    pub role: &'static str,
    /// `rsync://IP:PORT/ethoscope_data`, when served.
    pub rsync_url: Option<String>,
    /// Fault names, for display.
    pub faults: Vec<String>,
}

/// A running fleet. Dropping it stops everything (servers are killed); [`Fleet::stop`] stops
/// gracefully (experiments finished, files closed).
#[derive(Debug)]
pub struct Fleet {
    devices: Vec<Arc<SimDevice>>,
    tasks: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
    mariadb: Option<MariaDbInfo>,
    mariadb_server: Option<MariaDb>,
    admin_opts: Option<Opts>,
    rsync_port: Option<u16>,
    http_port: u16,
    data_dir: PathBuf,
    rsync: Arc<Mutex<BTreeMap<String, RsyncDaemon>>>,
    mdns: Option<crate::mdns::Announcer>,
}

/// Binds the same port on every address: `port`, or (when 0) one free port shared by all.
async fn bind_all(ips: &[Ipv4Addr], port: u16) -> anyhow::Result<Vec<TcpListener>> {
    let attempts = if port == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let mut listeners = Vec::with_capacity(ips.len());
        let mut chosen = port;
        let mut failed = None;
        for ip in ips {
            match TcpListener::bind(SocketAddr::new(IpAddr::V4(*ip), chosen)).await {
                Ok(l) => {
                    if chosen == 0 {
                        chosen = l.local_addr()?.port();
                    }
                    listeners.push(l);
                }
                Err(e) => {
                    failed = Some(anyhow::anyhow!("cannot listen on {ip}:{chosen}: {e}"));
                    break;
                }
            }
        }
        match failed {
            None => return Ok(listeners),
            Some(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no address to listen on")))
}

/// A port free on every address a moment ago.
fn common_free_port(ips: &[Ipv4Addr]) -> anyhow::Result<u16> {
    for _ in 0..50 {
        let Some(first) = ips.first() else {
            bail!("no address");
        };
        let probe = std::net::TcpListener::bind((*first, 0))?;
        let port = probe.local_addr()?.port();
        let all_free = ips[1..]
            .iter()
            .all(|ip| std::net::TcpListener::bind((*ip, port)).is_ok());
        if all_free {
            return Ok(port);
        }
    }
    bail!("no port is free on all device addresses")
}

/// The fleet's MariaDB: none, a private `mariadbd` (`--mariadb auto`) or a server given by URL.
#[derive(Default)]
struct FleetMariaDb {
    admin_opts: Option<Opts>,
    info: Option<MariaDbInfo>,
    server: Option<MariaDb>,
}

impl FleetMariaDb {
    /// Starts or reaches the server when some device is a MariaDB tracker.
    async fn start(config: &FleetConfig, data_dir: &Path) -> anyhow::Result<FleetMariaDb> {
        let trackers = || {
            config
                .devices
                .iter()
                .filter(|d| d.role == Role::Tracker(DbKind::MariaDb))
        };
        if trackers().next().is_none() {
            return Ok(FleetMariaDb::default());
        }
        match &config.mariadb {
            MariaDbTarget::None => Ok(FleetMariaDb::default()),
            MariaDbTarget::Auto => {
                let server = MariaDbBuilder::new()
                    .bind_addresses(trackers().map(|d| IpAddr::V4(d.identity.ip)))
                    .datadir(data_dir.join("mariadb"))
                    .start()
                    .await
                    .context("cannot start the private mariadbd")?;
                let opts = server.admin_opts(None);
                let version = server_version(&opts).await.unwrap_or_default();
                Ok(FleetMariaDb {
                    info: Some(MariaDbInfo {
                        port: server.port(),
                        version,
                        private: true,
                    }),
                    admin_opts: Some(opts),
                    server: Some(server),
                })
            }
            MariaDbTarget::Url(url) => {
                let opts = Opts::from_url(url)
                    .map_err(|e| anyhow::anyhow!("invalid --mariadb URL: {e}"))?;
                let opts: Opts = OptsBuilder::from_opts(opts).prefer_socket(false).into();
                let version = server_version(&opts)
                    .await
                    .with_context(|| format!("cannot reach MariaDB at {url}"))?;
                Ok(FleetMariaDb {
                    info: Some(MariaDbInfo {
                        port: opts.tcp_port(),
                        version,
                        private: false,
                    }),
                    admin_opts: Some(opts),
                    server: None,
                })
            }
        }
    }
}

/// Creates each device's data root (`devices/<name>` with `results` and `videos`), in the
/// order of `config.devices`.
fn device_roots(config: &FleetConfig, data_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut roots = Vec::new();
    for d in &config.devices {
        let root = data_dir.join("devices").join(&d.identity.name);
        for sub in ["results", "videos"] {
            std::fs::create_dir_all(root.join(sub))
                .with_context(|| format!("cannot create {}", root.display()))?;
        }
        roots.push(root);
    }
    Ok(roots)
}

/// How a device's rsync daemon is started, first and after every restart (refusing every
/// client under the `rsync-denied` fault).
fn rsyncd_options(spec: &crate::config::DeviceSpec, port: u16, data_dir: &Path) -> RsyncdOptions {
    RsyncdOptions {
        address: spec.identity.ip,
        port: Some(port),
        run_dir: Some(data_dir.join("rsyncd").join(&spec.identity.name)),
        refuse_clients: spec.has_fault(crate::config::Fault::RsyncDenied),
        ..RsyncdOptions::default()
    }
}

/// One rsync daemon per device that is not configured offline, all on one port.
async fn start_rsync_daemons(
    config: &FleetConfig,
    roots: &[PathBuf],
    data_dir: &Path,
    port: u16,
) -> anyhow::Result<BTreeMap<String, RsyncDaemon>> {
    let mut started = BTreeMap::new();
    for (d, root) in config.devices.iter().zip(roots) {
        if d.has_fault(crate::config::Fault::Offline) {
            continue;
        }
        let options = rsyncd_options(d, port, data_dir);
        let root = root.clone();
        let daemon = tokio::task::spawn_blocking(move || RsyncDaemon::start_with(&root, options))
            .await?
            .with_context(|| format!("cannot start the rsync daemon of {}", d.identity.name))?;
        started.insert(d.identity.name.clone(), daemon);
    }
    Ok(started)
}

impl Fleet {
    /// Starts every device: MariaDB (if any), rsync daemons, HTTP APIs, experiment drivers,
    /// mDNS. Every device that is not configured offline answers when this returns.
    pub async fn start(config: FleetConfig) -> anyhow::Result<Fleet> {
        if config.devices.is_empty() {
            bail!("a fleet needs at least one device");
        }
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        let data_dir = std::fs::canonicalize(&config.data_dir)?;
        let shutdown = CancellationToken::new();

        // MariaDB first: trackers need it from their first experiment.
        let db = FleetMariaDb::start(&config, &data_dir).await?;
        let roots = device_roots(&config, &data_dir)?;
        let ips: Vec<Ipv4Addr> = config.devices.iter().map(|d| d.identity.ip).collect();
        let rsync = Arc::new(Mutex::new(BTreeMap::new()));
        let rsync_port = if config.rsync {
            let port = match config.rsync_port {
                0 => common_free_port(&ips)?,
                p => p,
            };
            let started = start_rsync_daemons(&config, &roots, &data_dir, port).await?;
            *rsync.lock().unwrap_or_else(|e| e.into_inner()) = started;
            Some(port)
        } else {
            None
        };

        // HTTP APIs: every address binds the same port.
        let listeners = bind_all(&ips, config.http_port).await?;
        let http_port = listeners
            .first()
            .map(|l| l.local_addr().map(|a| a.port()))
            .transpose()?
            .unwrap_or(config.http_port);

        let mut devices = Vec::new();
        let mut tasks = Vec::new();
        for ((spec, root), listener) in config.devices.iter().zip(roots).zip(listeners) {
            let is_mariadb = spec.role == Role::Tracker(DbKind::MariaDb);
            let version = db
                .info
                .as_ref()
                .filter(|_| is_mariadb)
                .map(|m| m.version.clone());
            let dev = Arc::new(SimDevice::new(
                spec.clone(),
                root,
                SocketAddr::new(IpAddr::V4(spec.identity.ip), http_port),
                version,
                shutdown.clone(),
            ));
            let first = (!dev.control().offline).then_some(listener);
            tasks.push(tokio::spawn(dev.clone().run_http(first)));
            let admin = db.admin_opts.clone().filter(|_| is_mariadb);
            tasks.push(tokio::spawn(
                Driver::new(dev.clone(), config.rates.clone(), admin).run(),
            ));
            if let Some(port) = rsync_port {
                let options = rsyncd_options(spec, port, &data_dir);
                tasks.push(tokio::spawn(follow_rsync(
                    dev.clone(),
                    rsync.clone(),
                    options,
                )));
            }
            devices.push(dev);
        }
        let mdns = if config.mdns {
            crate::mdns::Announcer::start(&devices, shutdown.clone())
        } else {
            None
        };
        Ok(Fleet {
            devices,
            tasks,
            shutdown,
            mariadb: db.info,
            mariadb_server: db.server,
            admin_opts: db.admin_opts,
            rsync_port,
            http_port,
            data_dir,
            rsync,
            mdns,
        })
    }

    /// The devices.
    pub fn devices(&self) -> &[Arc<SimDevice>] {
        &self.devices
    }

    /// A device by name (`ETHOSCOPE_003`), number (`3`) or id.
    pub fn device(&self, key: &str) -> Option<&Arc<SimDevice>> {
        let number = key.parse::<u32>().ok();
        self.devices
            .iter()
            .find(|d| d.name() == key || d.id() == key || Some(d.spec().identity.number) == number)
    }

    /// MariaDB details, when the fleet has MariaDB trackers.
    pub fn mariadb(&self) -> Option<&MariaDbInfo> {
        self.mariadb.as_ref()
    }

    /// Read-write connection options of the fleet's MariaDB (the devices' own account).
    pub fn mariadb_admin_opts(&self) -> Option<&Opts> {
        self.admin_opts.as_ref()
    }

    /// The account devices write with (`ethoscope`/`ethoscope` on a private server).
    pub fn mariadb_writer_account() -> (&'static str, &'static str) {
        (ADMIN_USER, ADMIN_PASSWORD)
    }

    /// rsync daemon port on every device address, when served.
    pub fn rsync_port(&self) -> Option<u16> {
        self.rsync_port
    }

    /// The source template the rsync backup daemon needs: `rsync://{ip}:PORT/ethoscope_data`.
    pub fn rsync_source_template(&self) -> Option<String> {
        self.rsync_port
            .map(|p| format!("rsync://{{ip}}:{p}/{MODULE}"))
    }

    /// Device HTTP port on every device address.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The fleet's root directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `IP:PORT` of every device, as `etho-backup node --device` takes them.
    pub fn device_addresses(&self) -> Vec<String> {
        self.devices
            .iter()
            .map(|d| d.http_addr().to_string())
            .collect()
    }

    /// One summary per device.
    pub fn summary(&self) -> Vec<DeviceSummary> {
        self.devices
            .iter()
            .map(|d| DeviceSummary {
                name: d.name().to_string(),
                id: d.id().to_string(),
                ip: d.spec().identity.ip,
                http: d.http_addr(),
                role: d.spec().role.label(),
                rsync_url: self
                    .rsync_port
                    .map(|p| format!("rsync://{}:{p}/{MODULE}", d.spec().identity.ip)),
                faults: d.spec().faults.iter().map(|f| format!("{f:?}")).collect(),
            })
            .collect()
    }

    /// Holds every device stopped (`true`: running experiments end, none start) or releases them.
    pub fn hold_all(&self, held: bool) {
        for d in &self.devices {
            d.set_held(held);
        }
    }

    /// Waits until no device is running an experiment (after [`Fleet::hold_all`]), so their data
    /// is at rest.
    pub async fn wait_at_rest(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let busy: Vec<&str> = self
                .devices
                .iter()
                .filter(|d| d.snapshot().status != RunStatus::Stopped)
                .map(|d| d.name())
                .collect();
            if busy.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "devices still running after {timeout:?}: {}",
                    busy.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops everything gracefully: experiments end, files close, servers stop.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        if let Some(m) = self.mdns.take() {
            m.stop();
        }
        let daemons = std::mem::take(&mut *self.rsync.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::task::spawn_blocking(move || drop(daemons)).await;
        if let Some(mut server) = self.mariadb_server.take() {
            if let Err(e) = server.stop(Duration::from_secs(20)).await {
                tracing::warn!("stopping mariadbd: {e:#}");
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn server_version(opts: &Opts) -> anyhow::Result<String> {
    let mut conn = mysql_async::Conn::new(opts.clone()).await?;
    let v: Option<String> = conn.query_first("SELECT VERSION()").await?;
    let _ = conn.disconnect().await;
    Ok(v.unwrap_or_default())
}

/// Stops a device's rsync daemon while it is offline and restarts it when it comes back.
async fn follow_rsync(
    dev: Arc<SimDevice>,
    rsync: Arc<Mutex<BTreeMap<String, RsyncDaemon>>>,
    options: RsyncdOptions,
) {
    let mut control = dev.subscribe();
    let mut was_offline = dev.control().offline;
    loop {
        tokio::select! {
            r = control.changed() => if r.is_err() { return },
            _ = dev.shutdown_token().cancelled() => return,
        }
        let offline = control.borrow_and_update().offline;
        if offline == was_offline {
            continue;
        }
        was_offline = offline;
        let name = dev.name().to_string();
        let rsync = rsync.clone();
        let root = dev.root().to_path_buf();
        let options = options.clone();
        let res = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut daemons = rsync.lock().unwrap_or_else(|e| e.into_inner());
            if offline {
                if let Some(d) = daemons.get_mut(&name) {
                    d.kill();
                }
            } else if let Some(d) = daemons.get_mut(&name) {
                d.restart()?;
            } else {
                daemons.insert(name, RsyncDaemon::start_with(&root, options)?);
            }
            Ok(())
        })
        .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(device = %dev.name(), "rsync daemon: {e:#}"),
            Err(e) => tracing::warn!(device = %dev.name(), "rsync daemon task: {e}"),
        }
    }
}
