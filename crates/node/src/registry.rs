//! The device registry: which devices the node knows, where they are and how they are doing.
//!
//! Devices come from three sources: `--device HOST[:PORT]` flags, `POST /device/add`, and mDNS
//! browsing of `_ethoscope._tcp.local.` ([`crate::mdns`]). Each target (`HOST:PORT`) gets its own
//! poll loop ([`crate::poller`]) every [`DiscoveryConfig::poll_interval`]; the registry keeps the
//! last checked answer and the status machine per target and builds the `GET /devices` map that
//! both backup daemons read.
//!
//! Known devices and added targets persist in SQLite (`devices.sqlite` under the node's state
//! directory), so after a restart every known device is listed (as `offline` until it answers)
//! and keeps being polled. Devices whose answers fail validation are *rejected*: listed on
//! `GET /devices/rejected` with the reason, never on `GET /devices`.
//!
//! Nothing here holds a lock across an `.await`; SQLite runs on the blocking pool.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use etho_http::ServiceUrl;

use crate::poller::{self, PollReport, PollState, Thresholds};

/// The device API port of an ethoscope (`device_server.py -p 9000`).
pub const DEVICE_PORT: u16 = 9000;

/// How the node finds and polls devices.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    /// `HOST[:PORT]` targets polled from the start (`--device`).
    pub devices: Vec<String>,
    /// Time between two polls of one device (upstream: 5 s).
    pub poll_interval: Duration,
    /// Bound on each request to a device (connect plus whole answer).
    pub device_timeout: Duration,
    /// When to report `offline`.
    pub thresholds: Thresholds,
    /// Browse `_ethoscope._tcp.local.` over mDNS. Off by default: the mDNS library joins the
    /// multicast group on every network interface.
    pub mdns: bool,
    /// Keep the registry in `<state_dir>/devices.sqlite`.
    pub persist: bool,
}

impl Default for DiscoveryConfig {
    fn default() -> DiscoveryConfig {
        DiscoveryConfig {
            devices: Vec::new(),
            poll_interval: Duration::from_secs(5),
            device_timeout: Duration::from_secs(3),
            thresholds: Thresholds::default(),
            mdns: false,
            persist: true,
        }
    }
}

/// Where a device's API is: a host (IP or name) and a port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// IP literal or host name.
    pub host: String,
    /// Device API port.
    pub port: u16,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn usable_ip(ip: IpAddr) -> Result<IpAddr, String> {
    if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        Err(format!("{ip} is not a device address"))
    } else {
        Ok(ip)
    }
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with(['-', '.'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

impl Target {
    /// An IP target.
    pub fn ip(ip: IpAddr, port: u16) -> Target {
        Target {
            host: ip.to_string(),
            port,
        }
    }

    /// Parses `HOST[:PORT]`, `IP`, `IP:PORT` or `[IPv6]:PORT`. Host names are allowed only when
    /// `allow_names` (flags may name `ethoscope007.local`; the HTTP endpoint takes IPs only).
    pub fn parse(input: &str, allow_names: bool) -> Result<Target, String> {
        let s = input.trim();
        if s.is_empty() {
            return Err("empty address".into());
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Target::ip(usable_ip(ip)?, DEVICE_PORT));
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            if sa.port() == 0 {
                return Err("port 0 is not a device port".into());
            }
            return Ok(Target::ip(usable_ip(sa.ip())?, sa.port()));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("invalid port {}", poller::shown(p)))?;
                (h, port)
            }
            None => (s, DEVICE_PORT),
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Target::ip(usable_ip(ip)?, port));
        }
        if !allow_names {
            return Err(format!("{} is not an IP address", poller::shown(s)));
        }
        if !is_host_name(host) {
            return Err(format!("{} is not a host name", poller::shown(host)));
        }
        Ok(Target {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Where a target came from (persisted, so restarts keep manual additions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `--device` flag.
    Flag,
    /// `POST /device/add`.
    Manual,
    /// mDNS.
    Mdns,
    /// Known from an earlier run.
    Known,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Manual => "manual",
            Source::Mdns => "mdns",
            Source::Known => "known",
        }
    }
}

/// What the node knows about one target.
#[derive(Debug, Clone)]
struct Entry {
    ip: Option<IpAddr>,
    id: Option<String>,
    name: Option<String>,
    device_status: String,
    fields: Map<String, Value>,
    databases: Option<Map<String, Value>>,
    poll: PollState,
    poll_error: Option<String>,
    rejected: Option<String>,
    /// Status and last_seen as last written to SQLite.
    persisted: Option<(String, Option<f64>)>,
}

impl Entry {
    fn new() -> Entry {
        Entry {
            ip: None,
            id: None,
            name: None,
            device_status: String::new(),
            fields: Map::new(),
            databases: None,
            poll: PollState::default(),
            poll_error: None,
            rejected: None,
            persisted: None,
        }
    }

    fn status(&self) -> &str {
        self.poll.status(&self.device_status)
    }

    fn device_json(&self, target: &Target) -> Option<(String, Value)> {
        let id = self.id.as_ref()?;
        let name = self.name.as_ref()?;
        if self.rejected.is_some() {
            return None;
        }
        let mut obj = self.fields.clone();
        obj.insert("id".into(), json!(id));
        obj.insert("name".into(), json!(name));
        if let Some(db) = &self.databases {
            obj.insert("databases".into(), Value::Object(db.clone()));
        }
        let ip = self
            .ip
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| target.host.clone());
        obj.insert("ip".into(), json!(ip));
        obj.insert("port".into(), json!(target.port));
        obj.insert("status".into(), json!(self.status()));
        obj.insert("last_seen".into(), json!(self.poll.last_seen));
        obj.insert(
            "consecutive_errors".into(),
            json!(self.poll.consecutive_errors),
        );
        obj.insert("poll_error".into(), json!(self.poll_error));
        Some((id.clone(), Value::Object(obj)))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Current time as fractional epoch seconds.
pub fn now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The node's device registry. See the module docs.
#[derive(Debug)]
pub struct DeviceRegistry {
    config: DiscoveryConfig,
    db_path: Option<PathBuf>,
    entries: Mutex<BTreeMap<Target, Entry>>,
    store: Arc<Mutex<Store>>,
    new_targets: mpsc::UnboundedSender<(Target, Source)>,
    new_targets_rx: Mutex<Option<mpsc::UnboundedReceiver<(Target, Source)>>>,
    client: reqwest::Client,
}

/// Stops discovery when dropped.
#[derive(Debug)]
pub struct DiscoveryGuard {
    token: CancellationToken,
}

impl DiscoveryGuard {
    /// Stops discovery now.
    pub fn stop(&self) {
        self.token.cancel();
    }
}

impl Drop for DiscoveryGuard {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Answer of `POST /device/add`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AddResult {
    /// Accepted addresses (as given, trimmed).
    pub added: Vec<String>,
    /// Refused entries (as given, trimmed).
    pub problems: Vec<String>,
    /// Why each refused entry was refused.
    pub messages: Vec<String>,
}

/// Most addresses one `POST /device/add` may carry.
pub const MAX_ADD: usize = 256;

/// Most addresses the registry holds and polls. `POST /device/add` and mDNS announcements come
/// from the network; without a bound, a client could make the node keep (and poll forever)
/// any number of addresses. A lab has dozens of devices.
pub const MAX_TARGETS: usize = 2048;

impl DeviceRegistry {
    /// A registry with nothing loaded yet; `state_dir` holds `devices.sqlite` when persistence is
    /// on. Opening the database and polling begin with [`DeviceRegistry::start`].
    pub fn new(config: DiscoveryConfig, state_dir: &Path) -> anyhow::Result<DeviceRegistry> {
        let client = etho_http::client(config.device_timeout)?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(DeviceRegistry {
            db_path: config.persist.then(|| state_dir.join("devices.sqlite")),
            config,
            entries: Mutex::new(BTreeMap::new()),
            store: Arc::new(Mutex::new(Store::Closed)),
            new_targets: tx,
            new_targets_rx: Mutex::new(Some(rx)),
            client,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DiscoveryConfig {
        &self.config
    }

    /// The `GET /devices` map: every known, valid device keyed by id, with its own fields plus
    /// `ip`, `port`, `status`, `last_seen`, `consecutive_errors` and `poll_error`. When one id
    /// answers on two targets (an address change), the most recently seen one wins.
    pub fn devices(&self) -> Map<String, Value> {
        let entries = lock(&self.entries);
        let mut best: BTreeMap<String, (f64, Value)> = BTreeMap::new();
        for (target, entry) in entries.iter() {
            let Some((id, doc)) = entry.device_json(target) else {
                continue;
            };
            let seen = entry.poll.last_seen.unwrap_or(f64::MIN);
            match best.get(&id) {
                Some((s, _)) if *s >= seen => {}
                _ => {
                    best.insert(id, (seen, doc));
                }
            }
        }
        best.into_iter().map(|(id, (_, doc))| (id, doc)).collect()
    }

    /// Targets whose device was rejected, keyed by `HOST:PORT`, with the reason.
    pub fn rejected(&self) -> Map<String, Value> {
        let entries = lock(&self.entries);
        entries
            .iter()
            .filter_map(|(target, e)| {
                let reason = e.rejected.as_ref()?;
                Some((
                    target.to_string(),
                    json!({
                        "ip": e.ip.map(|ip| ip.to_string()).unwrap_or_else(|| target.host.clone()),
                        "port": target.port,
                        "id": e.id,
                        "status": "rejected",
                        "reason": reason,
                        "last_seen": e.poll.last_seen,
                    }),
                ))
            })
            .collect()
    }

    /// Targets that never gave a complete identity (unreachable since added, or busy before
    /// their first `/data` answer), keyed by `HOST:PORT`. Not on `GET /devices`: without a
    /// name, a backup daemon could not use them.
    pub fn pending(&self) -> Map<String, Value> {
        let entries = lock(&self.entries);
        entries
            .iter()
            .filter(|(_, e)| (e.id.is_none() || e.name.is_none()) && e.rejected.is_none())
            .map(|(target, e)| {
                (
                    target.to_string(),
                    json!({"id": e.id, "status": e.status(), "poll_error": e.poll_error}),
                )
            })
            .collect()
    }

    /// Adds a target to poll (no effect when already known). Refused once the registry holds
    /// [`MAX_TARGETS`] addresses.
    pub fn add_target(&self, target: Target, source: Source) -> Result<(), String> {
        {
            let mut entries = lock(&self.entries);
            if entries.contains_key(&target) {
                return Ok(());
            }
            if entries.len() >= MAX_TARGETS {
                return Err(format!(
                    "the node already polls {MAX_TARGETS} addresses, the most it keeps"
                ));
            }
            entries.insert(target.clone(), Entry::new());
        }
        tracing::info!(target = %target, source = source.as_str(), "new device address");
        let _ = self.new_targets.send((target, source));
        Ok(())
    }

    /// `POST /device/add`: a comma-separated (or whitespace-separated) list of IPs, each
    /// optionally with `:PORT`.
    pub fn add_list(&self, list: &str) -> AddResult {
        let mut result = AddResult {
            added: Vec::new(),
            problems: Vec::new(),
            messages: Vec::new(),
        };
        let items: Vec<&str> = list
            .split(|c: char| c == ',' || c.is_whitespace())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() {
            result.messages.push("no address given".into());
        }
        for (i, item) in items.into_iter().enumerate() {
            let shown: String = item.chars().take(80).collect();
            if i >= MAX_ADD {
                result.problems.push(shown.clone());
                result.messages.push(format!(
                    "{shown}: more than {MAX_ADD} addresses in one request"
                ));
                continue;
            }
            match Target::parse(item, false).and_then(|t| self.add_target(t, Source::Manual)) {
                Ok(()) => result.added.push(shown),
                Err(e) => {
                    result.messages.push(format!("{shown}: {e}"));
                    result.problems.push(shown);
                }
            }
        }
        result
    }

    /// Opens (or creates) the registry database, loads known devices and targets, adds the
    /// configured ones and starts polling. Polling stops when the guard is dropped.
    pub fn start(self: &Arc<Self>) -> DiscoveryGuard {
        let token = CancellationToken::new();
        // An existing registry is loaded now; a new one is created on the first write, so a
        // node that never sees a device leaves no file behind.
        if let Some(path) = self.db_path.as_ref().filter(|p| p.exists()) {
            match open_store(path).and_then(|conn| {
                let (known, targets) = load_store(&conn)?;
                Ok((conn, known, targets))
            }) {
                Ok((conn, known, targets)) => {
                    *lock(&self.store) = Store::Open(conn);
                    let mut entries = lock(&self.entries);
                    for k in known {
                        let e = entries.entry(k.target.clone()).or_insert_with(Entry::new);
                        e.id = Some(k.id);
                        e.name = Some(k.name);
                        e.ip = k.ip.parse().ok();
                        e.poll = PollState::remembered(k.last_seen);
                        e.persisted = Some(("offline".into(), k.last_seen));
                        let _ = self.new_targets.send((k.target, Source::Known));
                    }
                    for t in targets {
                        if !entries.contains_key(&t) {
                            entries.insert(t.clone(), Entry::new());
                            let _ = self.new_targets.send((t, Source::Known));
                        }
                    }
                }
                Err(err) => {
                    tracing::error!(
                        "device registry {} unavailable, keeping devices in memory only: {err:#}",
                        path.display()
                    );
                    *lock(&self.store) = Store::Failed;
                }
            }
        }
        for d in &self.config.devices {
            match Target::parse(d, true) {
                Ok(t) => {
                    if let Err(e) = self.add_target(t, Source::Flag) {
                        tracing::error!("ignoring device {}: {e}", poller::shown(d));
                    }
                }
                Err(e) => tracing::error!("ignoring device {}: {e}", poller::shown(d)),
            }
        }
        let rx = lock(&self.new_targets_rx).take();
        match rx {
            Some(rx) => {
                tokio::spawn(self.clone().supervise(rx, token.clone()));
            }
            None => tracing::warn!("device discovery was already started"),
        }
        if self.config.mdns {
            crate::mdns::spawn_browser(self.clone(), token.clone());
        }
        DiscoveryGuard { token }
    }

    async fn supervise(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<(Target, Source)>,
        token: CancellationToken,
    ) {
        let mut polling: HashSet<Target> = HashSet::new();
        loop {
            let next = tokio::select! {
                n = rx.recv() => n,
                _ = token.cancelled() => None,
            };
            let Some((target, source)) = next else { break };
            if matches!(source, Source::Manual | Source::Mdns) {
                self.persist_target(&target, source).await;
            }
            if polling.insert(target.clone()) {
                tokio::spawn(self.clone().poll_loop(target, token.clone()));
            }
        }
    }

    async fn poll_loop(self: Arc<Self>, target: Target, token: CancellationToken) {
        loop {
            let report = self.poll_once(&target).await;
            let (delay, write) = self.apply(&target, report.0, report.1, now_f64());
            if let Some(w) = write {
                self.persist_device(w).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = token.cancelled() => return,
            }
        }
    }

    async fn poll_once(&self, target: &Target) -> (Option<IpAddr>, PollReport) {
        let ip = match target.host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => {
                let lookup = tokio::time::timeout(
                    self.config.device_timeout,
                    tokio::net::lookup_host((target.host.as_str(), target.port)),
                )
                .await;
                match lookup {
                    Ok(Ok(mut addrs)) => match addrs.next() {
                        Some(a) => a.ip(),
                        None => {
                            return (
                                None,
                                PollReport::Unreachable {
                                    refused: false,
                                    error: format!("{} has no address", target.host),
                                },
                            )
                        }
                    },
                    Ok(Err(e)) => {
                        return (
                            None,
                            PollReport::Unreachable {
                                refused: false,
                                error: format!("cannot resolve {}: {e}", target.host),
                            },
                        )
                    }
                    Err(_) => {
                        return (
                            None,
                            PollReport::Unreachable {
                                refused: false,
                                error: format!("cannot resolve {} in time", target.host),
                            },
                        )
                    }
                }
            }
        };
        let base = ServiceUrl::device(ip, target.port);
        (
            Some(ip),
            poller::poll_device(&self.client, &base, self.config.device_timeout).await,
        )
    }

    /// Applies one poll's report at `now`; returns the delay before the next poll and the row
    /// to persist, if anything worth persisting changed.
    fn apply(
        &self,
        target: &Target,
        ip: Option<IpAddr>,
        report: PollReport,
        now: f64,
    ) -> (Duration, Option<DeviceRow>) {
        let mut entries = lock(&self.entries);
        let entry = entries.entry(target.clone()).or_insert_with(Entry::new);
        let before = entry.status().to_string();
        let outcome = report.outcome();
        if ip.is_some() {
            entry.ip = ip;
        }
        match report {
            PollReport::Answered {
                id,
                data,
                databases,
            } => {
                if entry.rejected.take().is_some() {
                    tracing::info!(target = %target, "device answers validly again");
                }
                if entry.id.as_deref().is_some_and(|old| old != id) {
                    tracing::warn!(target = %target, old = ?entry.id, new = %id,
                        "another device answers at this address");
                }
                entry.id = Some(id);
                entry.name = Some(data.name);
                entry.device_status = data.status;
                entry.fields = data.fields;
                entry.databases = databases;
                entry.poll_error = None;
            }
            PollReport::IdOnly { id, error } => {
                if entry.id.as_deref() != Some(id.as_str()) {
                    // Another (or a new) device: nothing of the old one applies.
                    entry.name = None;
                    entry.fields.clear();
                    entry.databases = None;
                }
                entry.id = Some(id);
                entry.poll_error = Some(error);
            }
            PollReport::Rejected { id, reason } => {
                let reason = reason.to_string();
                if entry.rejected.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(target = %target, "device rejected: {reason}");
                }
                if id.is_some() {
                    entry.id = id;
                }
                entry.rejected = Some(reason);
                entry.poll_error = None;
            }
            PollReport::Unreachable { error, .. } => {
                entry.poll_error = Some(error);
            }
        }
        entry.poll = entry.poll.next(outcome, now, &self.config.thresholds);
        let after = entry.status().to_string();
        if before != after {
            match (&entry.name, &entry.poll_error) {
                (Some(name), Some(err)) if after != "running" && after != "stopped" => {
                    tracing::info!(target = %target, device = %name, "{before} → {after} ({err})")
                }
                (Some(name), _) => {
                    tracing::info!(target = %target, device = %name, "{before} → {after}")
                }
                (None, _) => tracing::debug!(target = %target, "{before} → {after}"),
            }
        }
        let delay = entry.poll.next_poll_in(self.config.poll_interval);
        let write = match (&entry.id, &entry.name, &entry.rejected) {
            (Some(id), Some(name), None) => {
                let stale = match &entry.persisted {
                    None => true,
                    Some((status, seen)) => {
                        status != &after
                            || match (seen, entry.poll.last_seen) {
                                (Some(a), Some(b)) => b - a >= 60.0,
                                (None, Some(_)) => true,
                                _ => false,
                            }
                    }
                };
                stale.then(|| {
                    entry.persisted = Some((after.clone(), entry.poll.last_seen));
                    DeviceRow {
                        id: id.clone(),
                        name: name.clone(),
                        target: target.clone(),
                        ip: entry
                            .ip
                            .map(|i| i.to_string())
                            .unwrap_or_else(|| target.host.clone()),
                        last_seen: entry.poll.last_seen,
                        status: after,
                        now,
                    }
                })
            }
            _ => None,
        };
        (delay, write)
    }

    async fn persist_device(&self, row: DeviceRow) {
        let store = self.store.clone();
        let path = self.db_path.clone();
        let res = tokio::task::spawn_blocking(move || -> rusqlite::Result<()> {
            let mut guard = lock(&store);
            let Some(conn) = guard.get(path.as_deref()) else {
                return Ok(());
            };
            conn.execute(
                "INSERT INTO devices (id, name, host, ip, port, first_seen, last_seen, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(id) DO UPDATE SET name = excluded.name, host = excluded.host,
                   ip = excluded.ip, port = excluded.port,
                   last_seen = COALESCE(excluded.last_seen, devices.last_seen),
                   status = excluded.status",
                params![
                    row.id,
                    row.name,
                    row.target.host,
                    row.ip,
                    row.target.port,
                    row.now,
                    row.last_seen,
                    row.status
                ],
            )?;
            Ok(())
        })
        .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("cannot save device registry: {e}"),
            Err(e) => tracing::error!("device registry writer failed: {e}"),
        }
    }

    async fn persist_target(&self, target: &Target, source: Source) {
        let store = self.store.clone();
        let path = self.db_path.clone();
        let target = target.clone();
        let res = tokio::task::spawn_blocking(move || -> rusqlite::Result<()> {
            let mut guard = lock(&store);
            let Some(conn) = guard.get(path.as_deref()) else {
                return Ok(());
            };
            conn.execute(
                "INSERT OR IGNORE INTO targets (host, port, source, added) VALUES (?1, ?2, ?3, ?4)",
                params![target.host, target.port, source.as_str(), now_f64()],
            )?;
            Ok(())
        })
        .await;
        if let Ok(Err(e)) = res {
            tracing::error!("cannot save device address: {e}");
        }
    }
}

#[derive(Debug)]
struct DeviceRow {
    id: String,
    name: String,
    target: Target,
    ip: String,
    last_seen: Option<f64>,
    status: String,
    now: f64,
}

struct KnownDevice {
    id: String,
    name: String,
    target: Target,
    ip: String,
    last_seen: Option<f64>,
}

/// The registry database: opened at start when it exists, else on the first write.
#[derive(Debug)]
enum Store {
    Closed,
    Open(Connection),
    Failed,
}

impl Store {
    fn get(&mut self, path: Option<&Path>) -> Option<&Connection> {
        if let (Store::Closed, Some(path)) = (&*self, path) {
            *self = match open_store(path) {
                Ok(conn) => Store::Open(conn),
                Err(err) => {
                    tracing::error!(
                        "device registry {} unavailable, keeping devices in memory only: {err:#}",
                        path.display()
                    );
                    Store::Failed
                }
            };
        }
        match self {
            Store::Open(conn) => Some(conn),
            _ => None,
        }
    }
}

fn open_store(path: &Path) -> anyhow::Result<Connection> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Rollback journal (SQLite's default), not WAL: one connection behind one lock does every
    // read and write, and writes are rare (a device's status change, or its last_seen once a
    // minute), so WAL's concurrent readers buy nothing; one file with no `-wal`/`-shm` companions
    // is simpler to back up and inspect.
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS devices (
             id TEXT PRIMARY KEY, name TEXT NOT NULL, host TEXT NOT NULL, ip TEXT NOT NULL,
             port INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL,
             status TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS targets (
             host TEXT NOT NULL, port INTEGER NOT NULL, source TEXT NOT NULL,
             added REAL NOT NULL, PRIMARY KEY (host, port));",
    )?;
    Ok(conn)
}

fn load_store(conn: &Connection) -> anyhow::Result<(Vec<KnownDevice>, Vec<Target>)> {
    let mut known = Vec::new();
    {
        let mut stmt =
            conn.prepare("SELECT id, name, host, ip, port, last_seen FROM devices ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<f64>>(5)?,
            ))
        })?;
        for row in rows {
            let (id, name, host, ip, port, last_seen) = row?;
            // The file is ours, but validate anyway: it ends up in /devices.
            let port = u16::try_from(port).ok().filter(|p| *p != 0);
            match (
                etho_model::device::is_valid_machine_id(&id)
                    && etho_model::device::is_valid_device_name(&name),
                port,
                Target::parse(&host, true),
            ) {
                (true, Some(port), Ok(t)) => known.push(KnownDevice {
                    id,
                    name,
                    target: Target { host: t.host, port },
                    ip,
                    last_seen,
                }),
                _ => tracing::warn!("ignoring invalid registry row for {}", poller::shown(&id)),
            }
        }
    }
    let mut targets = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT host, port FROM targets")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (host, port) = row?;
            match (
                Target::parse(&host, true),
                u16::try_from(port).ok().filter(|p| *p != 0),
            ) {
                (Ok(t), Some(port)) => targets.push(Target { host: t.host, port }),
                _ => tracing::warn!("ignoring invalid saved address {}", poller::shown(&host)),
            }
        }
    }
    Ok((known, targets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poller::{DeviceData, Rejection};

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_targets() {
        assert_eq!(
            Target::parse("127.0.0.10", false),
            Ok(Target::ip("127.0.0.10".parse().unwrap(), 9000))
        );
        assert_eq!(
            Target::parse(" 127.0.0.10:9001 ", false),
            Ok(Target::ip("127.0.0.10".parse().unwrap(), 9001))
        );
        assert_eq!(
            Target::parse("[::1]:9001", false).unwrap().to_string(),
            "[::1]:9001"
        );
        assert_eq!(
            Target::parse("Ethoscope007.local", true),
            Ok(Target {
                host: "ethoscope007.local".into(),
                port: 9000
            })
        );
        assert!(Target::parse("ethoscope007.local", false).is_err());
        for bad in [
            "",
            "0.0.0.0",
            "224.0.0.251",
            "255.255.255.255",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "host:port",
            "a b",
            "../etc",
            "-rf",
            "x;rm",
        ] {
            assert!(Target::parse(bad, true).is_err(), "{bad}");
        }
    }

    fn registry() -> DeviceRegistry {
        DeviceRegistry::new(
            DiscoveryConfig {
                persist: false,
                ..DiscoveryConfig::default()
            },
            Path::new("/nonexistent"),
        )
        .unwrap()
    }

    fn answered(status: &str) -> PollReport {
        let fields = json!({"id": ID, "name": "ETHOSCOPE_001", "status": status, "time": 1.0});
        PollReport::Answered {
            id: ID.into(),
            data: DeviceData {
                name: "ETHOSCOPE_001".into(),
                status: status.into(),
                fields: fields.as_object().unwrap().clone(),
            },
            databases: Some(
                json!({"SQLite": {}, "MariaDB": {}})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        }
    }

    #[test]
    fn add_list_answers_like_upstream() {
        let r = registry();
        let res = r.add_list("127.0.0.10, 127.0.0.11:9001,not-an-ip,,0.0.0.0");
        assert_eq!(res.added, vec!["127.0.0.10", "127.0.0.11:9001"]);
        assert_eq!(res.problems, vec!["not-an-ip", "0.0.0.0"]);
        assert_eq!(res.messages.len(), 2);
        // Unresolved targets are pending, not devices.
        assert!(r.devices().is_empty());
        assert_eq!(r.pending().len(), 2);
        let many = vec!["127.0.0.1"; MAX_ADD + 2].join(",");
        assert_eq!(r.add_list(&many).problems.len(), 2);
        assert!(r.add_list("").messages[0].contains("no address"));
    }

    #[test]
    fn registry_holds_at_most_max_targets() {
        let r = registry();
        let ports = (1..=u16::MAX).take(MAX_TARGETS);
        for port in ports {
            let t = Target::ip("127.0.0.10".parse().unwrap(), port);
            assert_eq!(r.add_target(t, Source::Manual), Ok(()));
        }
        assert_eq!(r.pending().len(), MAX_TARGETS);
        let res = r.add_list("127.0.0.11, 127.0.0.10:1");
        // A new address is refused; one already known is still "added" (nothing to do).
        assert_eq!(res.problems, vec!["127.0.0.11"]);
        assert_eq!(res.added, vec!["127.0.0.10:1"]);
        assert!(
            res.messages[0].contains("already polls"),
            "{:?}",
            res.messages
        );
        assert_eq!(r.pending().len(), MAX_TARGETS);
    }

    #[test]
    fn devices_map_shape_and_statuses() {
        let r = registry();
        let t = Target::parse("127.0.0.10", false).unwrap();
        r.add_target(t.clone(), Source::Flag).unwrap();
        let ip = Some("127.0.0.10".parse().unwrap());
        let (delay, write) = r.apply(&t, ip, answered("running"), 100.0);
        assert_eq!(delay, Duration::from_secs(5));
        assert!(write.is_some(), "a new device is persisted");
        let map = r.devices();
        let d = &map[ID];
        assert_eq!(d["name"], "ETHOSCOPE_001");
        assert_eq!(d["ip"], "127.0.0.10");
        assert_eq!(d["port"], 9000);
        assert_eq!(d["status"], "running");
        assert_eq!(d["last_seen"], 100.0);
        assert_eq!(d["time"], 1.0);
        assert_eq!(d["databases"]["MariaDB"], json!({}));
        // The daemons' parser accepts it.
        let (devs, problems) = etho_model::device::parse_device_map(&Value::Object(map)).unwrap();
        assert_eq!((devs.len(), problems.len()), (1, 0));

        // Same status a second later: nothing to persist.
        assert!(r.apply(&t, ip, answered("running"), 101.0).1.is_none());
        let refused = || PollReport::Unreachable {
            refused: true,
            error: "/id: connection refused".into(),
        };
        let (_, w) = r.apply(&t, ip, refused(), 105.0);
        assert_eq!(w.unwrap().status, "unreached");
        assert_eq!(r.devices()[ID]["status"], "unreached");
        assert_eq!(r.devices()[ID]["poll_error"], "/id: connection refused");
        r.apply(&t, ip, refused(), 110.0);
        let (delay, w) = r.apply(&t, ip, refused(), 115.0);
        assert_eq!(w.unwrap().status, "offline");
        assert_eq!(delay, Duration::from_secs(30));
        let d = &r.devices()[ID];
        assert_eq!(d["status"], "offline");
        // Last good answer kept, with when it was seen.
        assert_eq!(d["last_seen"], 101.0);
        assert_eq!(d["name"], "ETHOSCOPE_001");
        // Busy: /id answers, /data does not.
        r.apply(&t, ip, answered("stopped"), 120.0);
        r.apply(
            &t,
            ip,
            PollReport::IdOnly {
                id: ID.into(),
                error: "/data: no answer within 3s".into(),
            },
            125.0,
        );
        assert_eq!(r.devices()[ID]["status"], "busy");
    }

    #[test]
    fn hostile_devices_are_flagged_not_listed() {
        let r = registry();
        let t = Target::parse("127.0.0.66", false).unwrap();
        r.add_target(t.clone(), Source::Manual).unwrap();
        r.apply(&t, None, answered("running"), 1.0);
        assert_eq!(r.devices().len(), 1);
        let (_, w) = r.apply(
            &t,
            None,
            PollReport::Rejected {
                id: Some(ID.into()),
                reason: Rejection::BadName("\"../../x\"".into()),
            },
            2.0,
        );
        assert!(w.is_none());
        assert!(r.devices().is_empty());
        let rej = r.rejected();
        assert_eq!(rej["127.0.0.66:9000"]["status"], "rejected");
        assert!(rej["127.0.0.66:9000"]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid name"));
        // Becoming valid again lists it again.
        r.apply(&t, None, answered("running"), 3.0);
        assert_eq!(r.devices().len(), 1);
        assert!(r.rejected().is_empty());
    }

    #[test]
    fn one_id_on_two_addresses_shows_the_latest() {
        let r = registry();
        let a = Target::parse("127.0.0.10", false).unwrap();
        let b = Target::parse("127.0.0.20", false).unwrap();
        r.apply(
            &a,
            Some("127.0.0.10".parse().unwrap()),
            answered("running"),
            1.0,
        );
        r.apply(
            &b,
            Some("127.0.0.20".parse().unwrap()),
            answered("running"),
            2.0,
        );
        assert_eq!(r.devices()[ID]["ip"], "127.0.0.20");
        assert_eq!(r.devices().len(), 1);
    }

    #[tokio::test]
    async fn registry_persists_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let config = DiscoveryConfig {
            poll_interval: Duration::from_secs(3600),
            device_timeout: Duration::from_millis(200),
            ..DiscoveryConfig::default()
        };
        {
            let r = Arc::new(DeviceRegistry::new(config.clone(), dir.path()).unwrap());
            let guard = r.start();
            assert!(
                !dir.path().join("devices.sqlite").exists(),
                "no file before there is something to keep"
            );
            let t = Target::parse("127.0.0.10:1", false).unwrap();
            let (_, w) = r.apply(&t, None, answered("running"), 50.0);
            r.persist_device(w.unwrap()).await;
            r.add_list("127.0.0.11:1");
            // The manual target is saved by the supervisor: wait for it (bounded).
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let n: i64 = lock(&r.store)
                    .get(None)
                    .unwrap()
                    .query_row("SELECT COUNT(*) FROM targets", [], |row| row.get(0))
                    .unwrap();
                if n == 1 {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "target never saved");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            guard.stop();
        }
        let r = Arc::new(DeviceRegistry::new(config, dir.path()).unwrap());
        let _guard = r.start();
        let d = &r.devices()[ID];
        assert_eq!(d["status"], "offline");
        assert_eq!(d["name"], "ETHOSCOPE_001");
        assert_eq!(d["last_seen"], 50.0);
        assert_eq!(d["port"], 1);
        assert!(r.pending().contains_key("127.0.0.11:1"));
    }
}
